//! Instruction-specific syndrome (ISS) layouts of ESR_EL2, one typed bitfield per
//! exception class we decode. Names follow the Arm ARM (D24.2.40, ESR_EL2).

use tock_registers::register_bitfields;

register_bitfields! {u64,
    /// ISS for data aborts (EC 0x24/0x25).
    pub ISS_DABT [
        /// Instruction syndrome valid: SAS, SSE, SRT, SF, AR hold valid information.
        ISV OFFSET(24) NUMBITS(1) [],
        /// Syndrome access size: log2 of the access width in bytes.
        SAS OFFSET(22) NUMBITS(2) [],
        /// Syndrome sign extend.
        SSE OFFSET(21) NUMBITS(1) [],
        /// Syndrome register transfer: the general-purpose register number.
        SRT OFFSET(16) NUMBITS(5) [],
        /// Sixty-four bit general-purpose register transfer.
        SF OFFSET(15) NUMBITS(1) [],
        /// Acquire/release semantics.
        AR OFFSET(14) NUMBITS(1) [],
        /// FAR not valid.
        FNV OFFSET(10) NUMBITS(1) [],
        /// External abort type.
        EA OFFSET(9) NUMBITS(1) [],
        /// Cache maintenance operation.
        CM OFFSET(8) NUMBITS(1) [],
        /// Stage-2 fault on a stage-1 translation table walk.
        S1PTW OFFSET(7) NUMBITS(1) [],
        /// Write not read.
        WNR OFFSET(6) NUMBITS(1) [],
        /// Data fault status code.
        DFSC OFFSET(0) NUMBITS(6) []
    ],
    /// ISS for instruction aborts (EC 0x20/0x21).
    pub ISS_IABT [
        FNV OFFSET(10) NUMBITS(1) [],
        EA OFFSET(9) NUMBITS(1) [],
        S1PTW OFFSET(7) NUMBITS(1) [],
        IFSC OFFSET(0) NUMBITS(6) []
    ],
    /// ISS for trapped MSR/MRS/system instructions (EC 0x18).
    pub ISS_SYSREG [
        OP0 OFFSET(20) NUMBITS(2) [],
        OP2 OFFSET(17) NUMBITS(3) [],
        OP1 OFFSET(14) NUMBITS(3) [],
        CRN OFFSET(10) NUMBITS(4) [],
        RT OFFSET(5) NUMBITS(5) [],
        CRM OFFSET(1) NUMBITS(4) [],
        /// 1 = read (MRS), 0 = write (MSR).
        DIRECTION OFFSET(0) NUMBITS(1) []
    ],
    /// ISS for trapped WFI/WFE/WFIT/WFET (EC 0x01).
    pub ISS_WFX [
        /// RN: the register holding a WFIT/WFET timeout (valid when RV is set).
        RN OFFSET(5) NUMBITS(5) [],
        /// RV: RN is valid (FEAT_WFxT).
        RV OFFSET(2) NUMBITS(1) [],
        /// 0 = WFI, 1 = WFE, 2 = WFIT, 3 = WFET.
        TI OFFSET(0) NUMBITS(2) []
    ],
    /// ISS for HVC and SMC (EC 0x16/0x17).
    pub ISS_CALL [
        IMM16 OFFSET(0) NUMBITS(16) []
    ],
    /// HPFAR_EL2: the faulting IPA of a stage-2 fault, bits [55:12].
    pub HPFAR [
        FIPA OFFSET(4) NUMBITS(44) []
    ]
}

/// Fault status code groups shared by DFSC and IFSC.
pub mod fsc {
    /// Translation fault, any level (0b0001LL).
    pub const TRANSLATION: u64 = 0b00_0100;
    /// Access flag fault, any level (0b0010LL).
    pub const ACCESS_FLAG: u64 = 0b00_1000;
    /// Permission fault, any level (0b0011LL).
    pub const PERMISSION: u64 = 0b00_1100;
    /// Mask selecting the group of a level-qualified code.
    pub const GROUP_MASK: u64 = 0b11_1100;
    /// Synchronous external abort, not on a translation table walk.
    pub const SYNC_EXTERNAL: u64 = 0b01_0000;
    /// Alignment fault.
    pub const ALIGNMENT: u64 = 0b10_0001;
}
