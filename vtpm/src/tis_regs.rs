//! Register offsets and bit fields of the TCG PC Client Platform TPM Profile (PTP)
//! interfaces: the FIFO (TIS) interface and the Command Response Buffer (CRB)
//! interface. One locality occupies one 4 KiB page of the MMIO region.

/// Size of one locality's register page and the number of localities.
pub const LOCALITY_PAGE: u64 = 0x1000;
pub const LOCALITIES: u8 = 5;
/// MMIO region size of either interface (five locality pages).
pub const REGION_SIZE: u64 = LOCALITY_PAGE * LOCALITIES as u64;

/// Vendor and device ID reported by both interfaces (the IDs QEMU's emulated TPMs
/// report, which guests' drivers accept without quirks).
pub const VENDOR_ID: u16 = 0x1014;
pub const DEVICE_ID: u16 = 0x0001;
pub const REVISION_ID: u8 = 0x01;

/// FIFO (TIS) interface registers.
pub mod fifo {
    pub const ACCESS: u64 = 0x00;
    pub const INT_ENABLE: u64 = 0x08;
    pub const INT_VECTOR: u64 = 0x0C;
    pub const INT_STATUS: u64 = 0x10;
    pub const INTF_CAPABILITY: u64 = 0x14;
    pub const STS: u64 = 0x18;
    pub const DATA_FIFO: u64 = 0x24;
    pub const INTERFACE_ID: u64 = 0x30;
    pub const XDATA_FIFO: u64 = 0x80;
    pub const DID_VID: u64 = 0xF00;
    pub const RID: u64 = 0xF04;

    /// TPM_ACCESS bits.
    pub const ACCESS_ESTABLISHMENT: u8 = 1 << 0;
    pub const ACCESS_REQUEST_USE: u8 = 1 << 1;
    pub const ACCESS_PENDING_REQUEST: u8 = 1 << 2;
    pub const ACCESS_SEIZE: u8 = 1 << 3;
    pub const ACCESS_BEEN_SEIZED: u8 = 1 << 4;
    pub const ACCESS_ACTIVE_LOCALITY: u8 = 1 << 5;
    pub const ACCESS_REG_VALID: u8 = 1 << 7;

    /// TPM_STS bits.
    pub const STS_RESPONSE_RETRY: u32 = 1 << 1;
    pub const STS_SELF_TEST_DONE: u32 = 1 << 2;
    pub const STS_EXPECT: u32 = 1 << 3;
    pub const STS_DATA_AVAIL: u32 = 1 << 4;
    pub const STS_GO: u32 = 1 << 5;
    pub const STS_COMMAND_READY: u32 = 1 << 6;
    pub const STS_VALID: u32 = 1 << 7;
    pub const STS_BURST_SHIFT: u32 = 8;
    pub const STS_COMMAND_CANCEL: u32 = 1 << 24;
    pub const STS_RESET_ESTABLISHMENT: u32 = 1 << 25;
    /// tpmFamily = 01b: TPM 2.0.
    pub const STS_FAMILY_TPM2: u32 = 1 << 26;

    /// TPM_INT_ENABLE / TPM_INT_STATUS bits.
    pub const INT_DATA_AVAIL: u32 = 1 << 0;
    pub const INT_STS_VALID: u32 = 1 << 1;
    pub const INT_LOCALITY_CHANGE: u32 = 1 << 2;
    pub const INT_COMMAND_READY: u32 = 1 << 7;
    pub const INT_SOURCES: u32 =
        INT_DATA_AVAIL | INT_STS_VALID | INT_LOCALITY_CHANGE | INT_COMMAND_READY;
    /// typePolarity field (bits 4:3) of TPM_INT_ENABLE.
    pub const INT_POLARITY_MASK: u32 = 3 << 3;
    pub const INT_GLOBAL_ENABLE: u32 = 1 << 31;

    /// TPM_INTF_CAPABILITY: the four interrupt sources, level-high interrupts,
    /// 64-byte transfers, interface version "FIFO for TPM 2.0".
    pub const INTF_CAPABILITY_VALUE: u32 = INT_SOURCES | (1 << 3) | (3 << 9) | (3 << 28);
    /// TPM_INTERFACE_ID: type FIFO, CapLocality, CapFIFO, selector FIFO, locked.
    pub const INTERFACE_ID_VALUE: u32 = (1 << 8) | (1 << 13) | (1 << 19);
}

/// CRB interface registers.
pub mod crb {
    pub const LOC_STATE: u64 = 0x00;
    pub const LOC_CTRL: u64 = 0x08;
    pub const LOC_STS: u64 = 0x0C;
    pub const INTF_ID_LO: u64 = 0x30;
    pub const INTF_ID_HI: u64 = 0x34;
    pub const CTRL_EXT_LO: u64 = 0x38;
    pub const CTRL_REQ: u64 = 0x40;
    pub const CTRL_STS: u64 = 0x44;
    pub const CTRL_CANCEL: u64 = 0x48;
    pub const CTRL_START: u64 = 0x4C;
    pub const INT_ENABLE: u64 = 0x50;
    pub const INT_STS: u64 = 0x54;
    pub const CTRL_CMD_SIZE: u64 = 0x58;
    pub const CTRL_CMD_LADDR: u64 = 0x5C;
    pub const CTRL_CMD_HADDR: u64 = 0x60;
    pub const CTRL_RSP_SIZE: u64 = 0x64;
    pub const CTRL_RSP_ADDR_LO: u64 = 0x68;
    pub const CTRL_RSP_ADDR_HI: u64 = 0x6C;
    /// The command/response buffer, in locality 0's page up to the page end.
    pub const DATA_BUFFER: u64 = 0x80;
    pub const DATA_BUFFER_SIZE: usize = (super::LOCALITY_PAGE - DATA_BUFFER) as usize;

    /// TPM_LOC_STATE bits.
    pub const LOC_STATE_ESTABLISHED: u32 = 1 << 0;
    pub const LOC_STATE_ASSIGNED: u32 = 1 << 1;
    pub const LOC_STATE_ACTIVE_SHIFT: u32 = 2;
    pub const LOC_STATE_REG_VALID: u32 = 1 << 7;
    /// TPM_LOC_CTRL bits.
    pub const LOC_CTRL_REQUEST: u32 = 1 << 0;
    pub const LOC_CTRL_RELINQUISH: u32 = 1 << 1;
    pub const LOC_CTRL_SEIZE: u32 = 1 << 2;
    /// TPM_LOC_STS bits.
    pub const LOC_STS_GRANTED: u32 = 1 << 0;
    pub const LOC_STS_BEEN_SEIZED: u32 = 1 << 1;
    /// TPM_CRB_CTRL_REQ bits.
    pub const REQ_CMD_READY: u32 = 1 << 0;
    pub const REQ_GO_IDLE: u32 = 1 << 1;
    /// TPM_CRB_CTRL_STS bits.
    pub const STS_ERROR: u32 = 1 << 0;
    pub const STS_IDLE: u32 = 1 << 1;
    /// TPM_CRB_INT_ENABLE/STS: start completed.
    pub const INT_START: u32 = 1 << 0;
    pub const INT_GLOBAL_ENABLE: u32 = 1 << 31;
    /// TPM_CRB_INTF_ID (low word): type CRB, version CRB, CapLocality,
    /// CapCRBIdleBypass, 64-byte transfers, CapCRB, selector CRB, locked, RID.
    pub const INTF_ID_LO_VALUE: u32 = 1
        | (1 << 4)
        | (1 << 8)
        | (1 << 9)
        | (3 << 11)
        | (1 << 14)
        | (1 << 17)
        | (1 << 19)
        | ((super::REVISION_ID as u32) << 24);
    /// TPM_CRB_INTF_ID (high word): VID and DID.
    pub const INTF_ID_HI_VALUE: u32 = super::VENDOR_ID as u32 | ((super::DEVICE_ID as u32) << 16);
}
