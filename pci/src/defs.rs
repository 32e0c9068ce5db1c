//! Names and layouts from the PCI Local Bus Specification 3.0 (the type-0
//! configuration header, §6.1–6.2; Base Address Registers, §6.2.5; the capability
//! list, §6.7) and the PCI Express Base Specification 4.0 (ECAM, §7.2.2; the PCI
//! Express Capability, §7.5.3; MSI-X, §7.7.2; MSI, PCI 3.0 §6.8.1), plus the address map of QEMU's `virt`
//! board for the root complex (`hw/arm/virt.c`, `base_memmap` / `extended_memmap`).

use tock_registers::register_bitfields;

/// Size of one function's configuration space (PCI Express extended space).
pub const CONFIG_SPACE_SIZE: u64 = 0x1000;
/// Size of the conventional (PCI 3.0) part; extended capabilities would start here.
pub const CONFIG_HEADER_SIZE: usize = 0x100;

/// Type-0 header register offsets (§6.1).
pub mod reg {
    pub const VENDOR_ID: usize = 0x00;
    pub const DEVICE_ID: usize = 0x02;
    pub const COMMAND: usize = 0x04;
    pub const STATUS: usize = 0x06;
    pub const REVISION_ID: usize = 0x08;
    /// Programming interface, sub-class, base class (three bytes from here).
    pub const CLASS_PROG_IF: usize = 0x09;
    pub const CACHE_LINE_SIZE: usize = 0x0c;
    pub const HEADER_TYPE: usize = 0x0e;
    /// BAR0; BARn is at `BAR0 + 4 * n`.
    pub const BAR0: usize = 0x10;
    pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
    pub const SUBSYSTEM_ID: usize = 0x2e;
    pub const CAPABILITIES_POINTER: usize = 0x34;
    pub const INTERRUPT_LINE: usize = 0x3c;
    pub const INTERRUPT_PIN: usize = 0x3d;
}

/// Number of BARs of a type-0 header.
pub const BAR_COUNT: usize = 6;
/// Header Type of a single-function type-0 device.
pub const HEADER_TYPE_NORMAL: u8 = 0x00;

register_bitfields! {u16,
    /// Command register (§6.2.2).
    pub COMMAND [
        INTERRUPT_DISABLE OFFSET(10) NUMBITS(1) [],
        SERR_ENABLE OFFSET(8) NUMBITS(1) [],
        PARITY_ERROR_RESPONSE OFFSET(6) NUMBITS(1) [],
        BUS_MASTER_ENABLE OFFSET(2) NUMBITS(1) [],
        MEMORY_SPACE_ENABLE OFFSET(1) NUMBITS(1) [],
        IO_SPACE_ENABLE OFFSET(0) NUMBITS(1) []
    ],
    /// Status register (§6.2.3).
    pub STATUS [
        DETECTED_PARITY_ERROR OFFSET(15) NUMBITS(1) [],
        SIGNALED_SYSTEM_ERROR OFFSET(14) NUMBITS(1) [],
        RECEIVED_MASTER_ABORT OFFSET(13) NUMBITS(1) [],
        RECEIVED_TARGET_ABORT OFFSET(12) NUMBITS(1) [],
        SIGNALED_TARGET_ABORT OFFSET(11) NUMBITS(1) [],
        MASTER_DATA_PARITY_ERROR OFFSET(8) NUMBITS(1) [],
        CAPABILITIES_LIST OFFSET(4) NUMBITS(1) [],
        INTERRUPT_STATUS OFFSET(3) NUMBITS(1) []
    ],
    /// MSI-X Message Control (PCIe §7.7.2.2).
    pub MSIX_CONTROL [
        MSIX_ENABLE OFFSET(15) NUMBITS(1) [],
        FUNCTION_MASK OFFSET(14) NUMBITS(1) [],
        /// Table Size, N - 1.
        TABLE_SIZE OFFSET(0) NUMBITS(11) []
    ],
    /// MSI Message Control (PCI 3.0 §6.8.1.3).
    pub MSI_CONTROL [
        PER_VECTOR_MASKING_CAPABLE OFFSET(8) NUMBITS(1) [],
        ADDRESS_64BIT_CAPABLE OFFSET(7) NUMBITS(1) [],
        /// Log2 of the vectors software allocated (at most Multiple Message
        /// Capable).
        MULTIPLE_MESSAGE_ENABLE OFFSET(4) NUMBITS(3) [],
        /// Log2 of the vectors the function asks for.
        MULTIPLE_MESSAGE_CAPABLE OFFSET(1) NUMBITS(3) [],
        MSI_ENABLE OFFSET(0) NUMBITS(1) []
    ],
    /// PCI Express Capabilities register (PCIe §7.5.3.2).
    pub PCIE_CAPABILITIES [
        DEVICE_PORT_TYPE OFFSET(4) NUMBITS(4) [
            Endpoint = 0,
            RootComplexIntegratedEndpoint = 9
        ],
        VERSION OFFSET(0) NUMBITS(4) []
    ],
    /// Device Control register (PCIe §7.5.3.4).
    pub DEVICE_CONTROL [
        MAX_READ_REQUEST_SIZE OFFSET(12) NUMBITS(3) [],
        ENABLE_NO_SNOOP OFFSET(11) NUMBITS(1) [],
        MAX_PAYLOAD_SIZE OFFSET(5) NUMBITS(3) [],
        ENABLE_RELAXED_ORDERING OFFSET(4) NUMBITS(1) [],
        UNSUPPORTED_REQUEST_REPORTING OFFSET(3) NUMBITS(1) [],
        FATAL_ERROR_REPORTING OFFSET(2) NUMBITS(1) [],
        NON_FATAL_ERROR_REPORTING OFFSET(1) NUMBITS(1) [],
        CORRECTABLE_ERROR_REPORTING OFFSET(0) NUMBITS(1) []
    ]
}

register_bitfields! {u32,
    /// A memory Base Address Register (§6.2.5.1).
    pub BAR [
        /// Address bits; the bits below the BAR's size read as zero.
        ADDRESS OFFSET(4) NUMBITS(28) [],
        PREFETCHABLE OFFSET(3) NUMBITS(1) [],
        TYPE OFFSET(1) NUMBITS(2) [
            Bits32 = 0,
            Bits64 = 2
        ],
        /// 0: memory space, 1: I/O space.
        IO_SPACE OFFSET(0) NUMBITS(1) []
    ],
    /// MSI-X Table Offset / PBA Offset register (PCIe §7.7.2.3–4).
    pub MSIX_LOCATION [
        /// Offset into the BAR, in QWORD-aligned units (the low three bits are BIR).
        OFFSET OFFSET(3) NUMBITS(29) [],
        /// BAR Indicator Register: which BAR holds the structure.
        BIR OFFSET(0) NUMBITS(3) []
    ],
    /// Device Capabilities register (PCIe §7.5.3.3).
    pub DEVICE_CAPABILITIES [
        FUNCTION_LEVEL_RESET OFFSET(28) NUMBITS(1) [],
        ROLE_BASED_ERROR_REPORTING OFFSET(15) NUMBITS(1) [],
        /// 0: 128 bytes.
        MAX_PAYLOAD_SIZE_SUPPORTED OFFSET(0) NUMBITS(3) []
    ]
}

/// Capability IDs (PCI Code and ID Assignment, §2).
pub mod cap_id {
    pub const MSI: u8 = 0x05;
    pub const PCI_EXPRESS: u8 = 0x10;
    pub const MSIX: u8 = 0x11;
    pub const VENDOR_SPECIFIC: u8 = 0x09;
}

/// The PCI Express Capability structure of a version-2 Root Complex Integrated
/// Endpoint (PCIe §7.5.3): register offsets and its size.
pub mod pcie_cap {
    pub const CAPABILITIES: usize = 0x02;
    pub const DEVICE_CAPABILITIES: usize = 0x04;
    pub const DEVICE_CONTROL: usize = 0x08;
    pub const DEVICE_STATUS: usize = 0x0a;
    pub const DEVICE_CAPABILITIES_2: usize = 0x24;
    pub const DEVICE_CONTROL_2: usize = 0x28;
    /// Through Slot Status 2.
    pub const SIZE: usize = 0x3c;
    /// Device Status bits 3:0 (error detected) are RW1C.
    pub const DEVICE_STATUS_RW1C: u16 = 0x000f;
    /// Device Control 2: Completion Timeout Disable (4) and the value (3:0) are
    /// writable when supported; we support neither, so nothing is writable.
    pub const DEVICE_CONTROL_2_WRITABLE: u16 = 0;
    /// PCI Express Capability version 2.
    pub const VERSION: u16 = 2;
}

/// The MSI-X capability structure (PCIe §7.7.2): register offsets and size.
pub mod msix_cap {
    pub const MESSAGE_CONTROL: usize = 0x02;
    pub const TABLE: usize = 0x04;
    pub const PBA: usize = 0x08;
    pub const SIZE: usize = 0x0c;
    /// Bytes of one MSI-X table entry.
    pub const ENTRY_SIZE: u64 = 16;
    /// Entry offsets: Message Address, Message Upper Address, Message Data,
    /// Vector Control.
    pub const ENTRY_ADDRESS: u64 = 0x0;
    pub const ENTRY_UPPER_ADDRESS: u64 = 0x4;
    pub const ENTRY_DATA: u64 = 0x8;
    pub const ENTRY_VECTOR_CONTROL: u64 = 0xc;
    /// Vector Control bit 0: Mask Bit; the other bits are reserved.
    pub const VECTOR_MASKED: u32 = 1;
    /// Message Address bits 1:0 are reserved (DWORD-aligned messages).
    pub const ADDRESS_RESERVED: u32 = 0x3;
    /// Most vectors a function may have (Table Size is 11 bits).
    pub const MAX_VECTORS: u16 = 2048;
}

/// The MSI capability structure with a 64-bit Message Address and without
/// per-vector masking (PCI 3.0 §6.8.1): register offsets and size.
pub mod msi_cap {
    pub const MESSAGE_CONTROL: usize = 0x02;
    pub const ADDRESS: usize = 0x04;
    pub const UPPER_ADDRESS: usize = 0x08;
    pub const DATA: usize = 0x0c;
    pub const SIZE: usize = 0x0e;
    /// Message Address bits 1:0 are reserved (DWORD-aligned messages).
    pub const ADDRESS_RESERVED: u32 = 0x3;
    /// Most vectors, as a power of two: 32 (Multiple Message Capable 101b; the
    /// larger encodings are reserved).
    pub const MAX_LOG2_VECTORS: u8 = 5;
}

/// Class codes (PCI Code and ID Assignment, §1): base class, sub-class,
/// programming interface.
pub mod class {
    /// Bridge device, host bridge.
    pub const HOST_BRIDGE: [u8; 3] = [0x06, 0x00, 0x00];
    /// Mass storage, Non-Volatile Memory controller, NVM Express.
    pub const NVME: [u8; 3] = [0x01, 0x08, 0x02];
    /// Mass storage, other.
    pub const MASS_STORAGE_OTHER: [u8; 3] = [0x01, 0x80, 0x00];
    /// Simple communication controller, other.
    pub const COMMUNICATION_OTHER: [u8; 3] = [0x07, 0x80, 0x00];
    /// Device does not fit any defined class.
    pub const UNCLASSIFIED: [u8; 3] = [0xff, 0x00, 0x00];
}

/// Legacy interrupt pins, as the Interrupt Pin register holds them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum IntxPin {
    IntA = 1,
    IntB = 2,
    IntC = 3,
    IntD = 4,
}

/// Number of legacy interrupt pins.
pub const INTX_PINS: u32 = 4;

/// ECAM address decoding (PCIe §7.2.2): bus in bits 27:20, device 19:15,
/// function 14:12, register 11:0.
pub mod ecam {
    pub const BUS_SHIFT: u32 = 20;
    pub const DEVICE_SHIFT: u32 = 15;
    pub const FUNCTION_SHIFT: u32 = 12;
    pub const DEVICES_PER_BUS: u64 = 32;
    pub const FUNCTIONS_PER_DEVICE: u64 = 8;
    /// Bytes of ECAM per bus.
    pub const BUS_SIZE: u64 = 1 << BUS_SHIFT;
}

/// QEMU `virt`'s PCIe root complex addresses (`hw/arm/virt.c`): VIRT_PCIE_MMIO,
/// VIRT_PCIE_PIO, VIRT_PCIE_ECAM (low), VIRT_HIGH_PCIE_ECAM and VIRT_HIGH_PCIE_MMIO
/// (where `virt` puts them for guests with less than 256 GiB of RAM), and the first
/// of the four INTx SPIs (irqmap VIRT_PCIE).
pub mod virt {
    /// The 32-bit memory window.
    pub const MMIO_BASE: u64 = 0x1000_0000;
    pub const MMIO_SIZE: u64 = 0x2eff_0000;
    /// The I/O port window (no function here has an I/O BAR).
    pub const PIO_BASE: u64 = 0x3eff_0000;
    pub const PIO_SIZE: u64 = 0x1_0000;
    /// The low ECAM window: 16 buses.
    pub const ECAM_BASE: u64 = 0x3f00_0000;
    pub const ECAM_SIZE: u64 = 0x100_0000;
    /// The high ECAM window: 256 buses.
    pub const HIGH_ECAM_BASE: u64 = 0x40_1000_0000;
    pub const HIGH_ECAM_SIZE: u64 = 0x1000_0000;
    /// The 64-bit memory window.
    pub const HIGH_MMIO_BASE: u64 = 0x80_0000_0000;
    pub const HIGH_MMIO_SIZE: u64 = 0x80_0000_0000;
    /// INTA..INTD of slot 0 are SPIs 3..6.
    pub const INTX_FIRST_SPI: u32 = 3;
}
