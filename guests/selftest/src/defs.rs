//! Named constants the guests use: the guest physical memory map, PL011
//! registers, SMCCC/PSCI function IDs and return codes, ESR_EL1 fields and the
//! system-register bits the guests program. No other module spells these numbers.

/// The guest physical address map (IPAs) of the test VM.
pub mod map {
    /// Start of guest RAM.
    pub const GUEST_RAM_BASE: u64 = 0x4000_0000;
    /// Size of guest RAM given to the test guests (64 MiB).
    pub const GUEST_RAM_SIZE: u64 = 64 << 20;
    /// First byte past guest RAM.
    pub const GUEST_RAM_END: u64 = GUEST_RAM_BASE + GUEST_RAM_SIZE;
    /// Where the guest image is loaded and entered.
    pub const IMAGE_BASE: u64 = 0x4008_0000;
    /// Offset in the image of [`IMAGE_MARKER`] (where an arm64 `Image` has its magic).
    pub const IMAGE_MARKER_OFFSET: u64 = 56;
    /// The word this guest places at [`IMAGE_MARKER_OFFSET`]: "RGST" (not an Image magic).
    pub const IMAGE_MARKER: u32 = u32::from_le_bytes(*b"RGST");
    /// The arm64 `Image` header magic "ARM\x64" (the hypervisor's own image has it).
    pub const ARM64_IMAGE_MAGIC: u32 = 0x644d_5241;
    /// The last 4 KiB page of guest RAM.
    pub const LAST_RAM_PAGE: u64 = GUEST_RAM_END - PAGE_SIZE;
    /// The top page of a 1 GiB host RAM, where the hypervisor keeps its own data.
    pub const HOST_RAM_TOP_PAGE: u64 = 0x7fff_f000;
    /// A page size.
    pub const PAGE_SIZE: u64 = 0x1000;
    /// The emulated PL011 UART.
    pub const PL011_BASE: u64 = 0x0900_0000;
    /// The first virtio-mmio slot (no device there in the test VM: an empty
    /// transport, device ID 0).
    pub const VIRTIO_MMIO_BASE: u64 = 0x0a00_0000;
    /// Unmapped IPA just past the 32 virtio-mmio slots (0x200 apart).
    pub const UNMAPPED_DEVICE: u64 = 0x0a00_4000;
    /// An address inside the virtio-mmio window the self-test branches to.
    pub const UNMAPPED_EXEC: u64 = 0x0a00_1000;
    /// Unmapped IPA between the device space and RAM.
    pub const UNMAPPED_LOW: u64 = 0x2000_0000;
    /// Unmapped IPA beyond guest RAM and device space.
    pub const UNMAPPED_HIGH: u64 = 0x1_0000_0000;
}

/// PL011 register offsets and identification values.
pub mod pl011 {
    /// Data register.
    pub const DR: u64 = 0x00;
    /// Flag register.
    pub const FR: u64 = 0x18;
    /// FR: transmit FIFO full.
    pub const FR_TXFF: u32 = 1 << 5;
    /// Interrupt mask set/clear register.
    pub const IMSC: u64 = 0x38;
    /// Value the self-test writes to IMSC (RXIM | RTIM).
    pub const IMSC_TEST_VALUE: u32 = 0x50;
    /// UARTPeriphID0; ID0..3 follow at 4-byte strides.
    pub const PERIPH_ID0: u64 = 0xfe0;
    /// UARTPCellID0; ID0..3 follow at 4-byte strides.
    pub const CELL_ID0: u64 = 0xff0;
    /// Expected UARTPeriphID0..3.
    pub const PERIPH_ID: [u32; 4] = [0x11, 0x10, 0x14, 0x00];
    /// Expected UARTPCellID0..3.
    pub const CELL_ID: [u32; 4] = [0x0d, 0xf0, 0x05, 0xb1];
    /// Offset of UARTPCellID1 (value 0xf0, negative as a signed byte).
    pub const CELL_ID1: u64 = CELL_ID0 + 4;
    /// How many times the console polls FR.TXFF before writing anyway.
    pub const TX_POLL_LIMIT: u32 = 1_000_000;
}

/// SMCCC and PSCI function IDs and return codes.
pub mod smccc {
    /// SMCCC_VERSION.
    pub const SMCCC_VERSION: u32 = 0x8000_0000;
    /// SMCCC_ARCH_FEATURES.
    pub const SMCCC_ARCH_FEATURES: u32 = 0x8000_0001;
    /// SMCCC version 1.1 (`major << 16 | minor`).
    pub const VERSION_1_1: i64 = 0x1_0001;
    /// Bit 30 of a function ID: the SMC64/HVC64 convention.
    pub const FID_SMC64: u32 = 1 << 30;
    /// Bit 31 of a function ID: a fast call.
    pub const FID_FAST: u32 = 1 << 31;
    /// Shift of the owning-entity field of a function ID.
    pub const FID_OWNER_SHIFT: u32 = 24;
    /// First Trusted OS owning entity (50..=63 are Trusted OS calls).
    pub const OWNER_TRUSTED_OS_FIRST: u32 = 50;
    /// Number of Trusted OS owning entities.
    pub const OWNER_TRUSTED_OS_COUNT: u32 = 14;

    /// PSCI_VERSION.
    pub const PSCI_VERSION: u32 = 0x8400_0000;
    /// CPU_SUSPEND (SMC32), not implemented by the hypervisor.
    pub const PSCI_CPU_SUSPEND: u32 = 0x8400_0001;
    /// CPU_ON (SMC64).
    pub const PSCI_CPU_ON_64: u32 = 0xc400_0003;
    /// AFFINITY_INFO (SMC64).
    pub const PSCI_AFFINITY_INFO_64: u32 = 0xc400_0004;
    /// SYSTEM_OFF.
    pub const PSCI_SYSTEM_OFF: u32 = 0x8400_0008;
    /// SYSTEM_RESET.
    pub const PSCI_SYSTEM_RESET: u32 = 0x8400_0009;
    /// PSCI_FEATURES.
    pub const PSCI_FEATURES: u32 = 0x8400_000a;
    /// An unassigned ID in the PSCI range.
    pub const PSCI_UNASSIGNED: u32 = 0x8400_00ff;
    /// PSCI version 1.1.
    pub const PSCI_VERSION_1_1: i64 = 0x1_0001;

    /// SUCCESS.
    pub const SUCCESS: i64 = 0;
    /// NOT_SUPPORTED, also the SMCCC "unknown function" value.
    pub const NOT_SUPPORTED: i64 = -1;
    /// INVALID_PARAMETERS.
    pub const INVALID_PARAMETERS: i64 = -2;
    /// ALREADY_ON: CPU_ON for a CPU that is running.
    pub const ALREADY_ON: i64 = -4;
    /// AFFINITY_INFO: the affinity instance is ON.
    pub const AFFINITY_ON: i64 = 0;

    /// MPIDR_EL1 affinity fields Aff3 (39:32) and Aff2..Aff0 (23:0).
    pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;
    /// An MPIDR no test VM has.
    pub const MPIDR_ABSENT: u64 = 0x55;
}

/// ESR_EL1 fields and exception classes.
pub mod esr {
    /// Shift of ESR.EC.
    pub const EC_SHIFT: u32 = 26;
    /// Mask of ESR.EC after shifting.
    pub const EC_MASK: u64 = 0x3f;
    /// Mask of ESR.ISS.
    pub const ISS_MASK: u64 = 0x1ff_ffff;
    /// EC: unknown reason (undefined instruction, trapped sysreg injected as UNDEF).
    pub const EC_UNKNOWN: u8 = 0x00;
    /// EC: instruction abort from a lower EL.
    pub const EC_IABT_LOWER: u8 = 0x20;
    /// EC: instruction abort without a change in EL.
    pub const EC_IABT_CURRENT: u8 = 0x21;
    /// EC: data abort without a change in EL.
    pub const EC_DABT_CURRENT: u8 = 0x25;
    /// Mask of the DFSC/IFSC field.
    pub const FSC_MASK: u64 = 0x3f;
    /// DFSC/IFSC: synchronous external abort, not on a table walk.
    pub const FSC_SYNC_EXTERNAL: u8 = 0x10;
    /// ISS.WnR of a data abort: the access was a write.
    pub const ISS_WNR: u64 = 1 << 6;
}

/// System-register bits the guests program.
pub mod sysreg {
    /// CPACR_EL1.FPEN = 0b11: no FP/SIMD traps at EL1/EL0.
    pub const CPACR_FPEN_ALL: u64 = 0b11 << 20;
    /// SCTLR_EL1 low half at boot: EOS (11) set; M, A, C, SA, I clear.
    pub const SCTLR_EL1_INIT_LO: u64 = 0x0800;
    /// SCTLR_EL1 high half at boot: LSMAOE, nTLSMD, SPAN, EIS, TSCXT (the v8.0 RES1 bits).
    pub const SCTLR_EL1_INIT_HI: u64 = 0x30d0;
    /// SPSR/DAIF bit D.
    pub const SPSR_D: u64 = 1 << 9;
    /// SPSR/DAIF bit A.
    pub const SPSR_A: u64 = 1 << 8;
    /// SPSR/DAIF bit I.
    pub const SPSR_I: u64 = 1 << 7;
    /// SPSR/DAIF bit F.
    pub const SPSR_F: u64 = 1 << 6;
    /// `msr daifclr, #imm` immediate unmasking SError (A).
    pub const DAIFCLR_A: u64 = 0b0100;

    /// CNTV_CTL_EL0.ENABLE.
    pub const CNTV_CTL_ENABLE: u64 = 1 << 0;
    /// CNTV_CTL_EL0.IMASK.
    pub const CNTV_CTL_IMASK: u64 = 1 << 1;
    /// CNTV_CTL_EL0.ISTATUS.
    pub const CNTV_CTL_ISTATUS: u64 = 1 << 2;

    /// PMCR_EL0.E: enable the counters.
    pub const PMCR_E: u64 = 1 << 0;
    /// PMCR_EL0.P: reset the event counters.
    pub const PMCR_P: u64 = 1 << 1;
    /// Shift of PMCR_EL0.N (number of event counters).
    pub const PMCR_N_SHIFT: u32 = 11;
    /// Mask of PMCR_EL0.N after shifting.
    pub const PMCR_N_MASK: u64 = 0x1f;
    /// `PMEVTYPER<n>_EL0.NSH`: count at EL2 too.
    pub const PMEVTYPER_NSH: u64 = 1 << 27;
    /// PMU event INST_RETIRED.
    pub const EVENT_INST_RETIRED: u64 = 0x08;
    /// Shift of ID_AA64DFR0_EL1.PMUVer.
    pub const DFR0_PMUVER_SHIFT: u32 = 8;
    /// ID_AA64DFR0_EL1.PMUVer: IMPLEMENTATION DEFINED PMU (not PMUv3).
    pub const PMUVER_IMPDEF: u64 = 0xf;
    /// Mask of a 4-bit ID register field after shifting.
    pub const ID_FIELD_MASK: u64 = 0xf;
}

/// virtio-mmio (version 2) and virtio-blk numbers for the `virtio-hostile` guest
/// (virtio 1.2 §2.1, §2.7, §4.2.2, §5.2, §6), and the test VM's one virtio disk.
///
/// Written from the specification on purpose rather than taken from the `virtio`
/// crate: this guest is an independent driver, so a wrong number in the device
/// model shows up as a failed check instead of agreeing with itself.
pub mod virtio {
    /// The virtio-blk device of the `disk = 1M` test VM: virtio-mmio slot 0.
    pub const BLK_BASE: u64 = super::map::VIRTIO_MMIO_BASE;
    /// Its capacity in 512-byte sectors (a 1 MiB RAM disk).
    pub const BLK_CAPACITY_SECTORS: u64 = (1 << 20) / SECTOR_SIZE;
    /// Bytes in a sector.
    pub const SECTOR_SIZE: u64 = 512;

    /// MagicValue register.
    pub const MAGIC_VALUE: u64 = 0x000;
    /// Version register.
    pub const VERSION: u64 = 0x004;
    /// DeviceID register.
    pub const DEVICE_ID: u64 = 0x008;
    /// DeviceFeatures register (the word DeviceFeaturesSel selects).
    pub const DEVICE_FEATURES: u64 = 0x010;
    /// DeviceFeaturesSel register.
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    /// DriverFeatures register (the word DriverFeaturesSel selects).
    pub const DRIVER_FEATURES: u64 = 0x020;
    /// DriverFeaturesSel register.
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    /// QueueSel register.
    pub const QUEUE_SEL: u64 = 0x030;
    /// QueueNumMax register.
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    /// QueueNum register.
    pub const QUEUE_NUM: u64 = 0x038;
    /// QueueReady register.
    pub const QUEUE_READY: u64 = 0x044;
    /// QueueNotify register.
    pub const QUEUE_NOTIFY: u64 = 0x050;
    /// InterruptStatus register.
    pub const INTERRUPT_STATUS: u64 = 0x060;
    /// InterruptACK register.
    pub const INTERRUPT_ACK: u64 = 0x064;
    /// Status register.
    pub const STATUS: u64 = 0x070;
    /// QueueDescLow register (High follows at +4).
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    /// QueueDriverLow register (High follows at +4).
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    /// QueueDeviceLow register (High follows at +4).
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    /// Offset of the high half of a 64-bit register pair.
    pub const HIGH_HALF: u64 = 4;
    /// Start of the device configuration space (virtio-blk: `capacity` first).
    pub const CONFIG: u64 = 0x100;

    /// MagicValue: "virt".
    pub const MAGIC: u32 = 0x7472_6976;
    /// The virtio-mmio version without the legacy interface.
    pub const VERSION_MODERN: u32 = 2;
    /// DeviceID of a block device.
    pub const DEVICE_ID_BLOCK: u32 = 2;
    /// DeviceID 0: no device behind the transport (§4.2.2).
    pub const DEVICE_ID_NONE: u32 = 0;

    /// Status: ACKNOWLEDGE.
    pub const S_ACKNOWLEDGE: u32 = 1;
    /// Status: DRIVER.
    pub const S_DRIVER: u32 = 2;
    /// Status: DRIVER_OK.
    pub const S_DRIVER_OK: u32 = 4;
    /// Status: FEATURES_OK.
    pub const S_FEATURES_OK: u32 = 8;
    /// Status: DEVICE_NEEDS_RESET.
    pub const S_NEEDS_RESET: u32 = 0x40;

    /// VIRTIO_F_INDIRECT_DESC.
    pub const F_INDIRECT_DESC: u64 = 1 << 28;
    /// VIRTIO_F_EVENT_IDX.
    pub const F_EVENT_IDX: u64 = 1 << 29;
    /// InterruptStatus: a used buffer notification.
    pub const INT_USED_BUFFER: u32 = 1;
    /// VIRTIO_F_VERSION_1.
    pub const F_VERSION_1: u64 = 1 << 32;

    /// Size of one split-ring descriptor.
    pub const DESC_SIZE: u64 = 16;
    /// Descriptor flag NEXT.
    pub const DESC_F_NEXT: u16 = 1;
    /// Descriptor flag WRITE (device-writable).
    pub const DESC_F_WRITE: u16 = 2;
    /// Descriptor flag INDIRECT.
    pub const DESC_F_INDIRECT: u16 = 4;
    /// Bytes of `flags` + `idx` at the start of the available and used rings.
    pub const RING_HEADER: u64 = 4;
    /// Offset of `idx` in either ring.
    pub const RING_IDX: u64 = 2;
    /// Size of an available-ring entry.
    pub const AVAIL_ELEM: u64 = 2;
    /// Size of a used-ring entry (`id: u32`, `len: u32`).
    pub const USED_ELEM: u64 = 8;
    /// Size of the trailing `used_event` / `avail_event` field.
    pub const EVENT_FIELD: u64 = 2;

    /// virtio-blk request type IN (read).
    pub const BLK_T_IN: u32 = 0;
    /// virtio-blk request type OUT (write).
    pub const BLK_T_OUT: u32 = 1;
    /// Size of the virtio-blk request header (type, reserved, sector).
    pub const BLK_HEADER_SIZE: u32 = 16;
    /// Request status OK.
    pub const BLK_S_OK: u8 = 0;
    /// Request status IOERR.
    pub const BLK_S_IOERR: u8 = 1;

    /// An unmapped hole between device space and guest RAM.
    pub const HOLE_IPA: u64 = super::map::UNMAPPED_LOW;
    /// An IPA far above guest RAM (4 GiB).
    pub const HIGH_IPA: u64 = super::map::UNMAPPED_HIGH;
    /// Near the top of a 1 GiB host's RAM, where the hypervisor keeps its data.
    pub const HOST_DATA_IPA: u64 = 0x7fff_0000;
    /// 512 bytes straddling the end of guest RAM (256 in, 256 out).
    pub const STRADDLE_IPA: u64 = super::map::GUEST_RAM_END - 0x100;
}
