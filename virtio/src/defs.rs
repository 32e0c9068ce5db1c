//! Every architected number this crate uses, named once: virtio-mmio register
//! offsets, device status bits, feature bits, split-virtqueue layout and flags, device
//! IDs, and the device-specific request codes and config layouts (virtio 1.2). Also
//! the crate's own limits, each with the reason for its value.

/// The virtio PCI transport (virtio 1.2 §4.1): identity, the vendor-specific
/// capability layout, and the register offsets of the common configuration.
pub mod pci {
    /// PCI Vendor ID of every virtio device.
    pub const VENDOR_ID: u16 = 0x1af4;
    /// Device ID of a modern-only device: this plus the virtio device ID.
    pub const DEVICE_ID_BASE: u16 = 0x1040;
    /// Revision ID of a non-transitional device (at least 1).
    pub const REVISION: u8 = 1;
    /// Subsystem Device ID of a non-transitional device (at least 0x40).
    pub const SUBSYSTEM_ID: u16 = 0x40;

    /// `cfg_type` of a virtio capability (§4.1.4).
    pub const CAP_COMMON_CFG: u8 = 1;
    pub const CAP_NOTIFY_CFG: u8 = 2;
    pub const CAP_ISR_CFG: u8 = 3;
    pub const CAP_DEVICE_CFG: u8 = 4;
    /// Field offsets of `struct virtio_pci_cap`: length, type, BAR, ID, offset
    /// in the BAR, length of the structure; the notify capability adds the
    /// multiplier.
    pub const CAP_LEN: usize = 2;
    pub const CAP_CFG_TYPE: usize = 3;
    pub const CAP_BAR: usize = 4;
    pub const CAP_ID: usize = 5;
    pub const CAP_OFFSET: usize = 8;
    pub const CAP_LENGTH: usize = 12;
    pub const CAP_NOTIFY_OFF_MULTIPLIER: usize = 16;
    /// Sizes of `struct virtio_pci_cap` and `struct virtio_pci_notify_cap`.
    pub const CAP_SIZE: usize = 16;
    pub const NOTIFY_CAP_SIZE: usize = 20;

    /// `struct virtio_pci_common_cfg` (§4.1.4.3) field offsets.
    pub mod common {
        pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
        pub const DEVICE_FEATURE: u64 = 0x04;
        pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
        pub const DRIVER_FEATURE: u64 = 0x0c;
        pub const CONFIG_MSIX_VECTOR: u64 = 0x10;
        pub const NUM_QUEUES: u64 = 0x12;
        pub const DEVICE_STATUS: u64 = 0x14;
        pub const CONFIG_GENERATION: u64 = 0x15;
        pub const QUEUE_SELECT: u64 = 0x16;
        pub const QUEUE_SIZE: u64 = 0x18;
        pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
        pub const QUEUE_ENABLE: u64 = 0x1c;
        pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
        pub const QUEUE_DESC: u64 = 0x20;
        pub const QUEUE_DRIVER: u64 = 0x28;
        pub const QUEUE_DEVICE: u64 = 0x30;
        pub const QUEUE_NOTIFY_DATA: u64 = 0x38;
        pub const QUEUE_RESET: u64 = 0x3a;
        /// Size of the structure (through `queue_reset`).
        pub const SIZE: u64 = 0x3c;
    }

    /// MSI-X vector "none" (§4.1.5.1.2).
    pub const NO_VECTOR: u16 = 0xffff;
    /// ISR status bits (§4.1.4.5).
    pub const ISR_QUEUE: u8 = 1 << 0;
    pub const ISR_CONFIG: u8 = 1 << 1;
}

/// virtio-mmio register offsets (virtio 1.2 §4.2.2, "modern" layout only).
pub mod mmio {
    /// "virt" in little-endian.
    pub const MAGIC_VALUE: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const SHM_SEL: u64 = 0x0ac;
    pub const SHM_LEN_LOW: u64 = 0x0b0;
    pub const SHM_LEN_HIGH: u64 = 0x0b4;
    pub const SHM_BASE_LOW: u64 = 0x0b8;
    pub const SHM_BASE_HIGH: u64 = 0x0bc;
    pub const QUEUE_RESET: u64 = 0x0c0;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    /// Start of the device-specific configuration space.
    pub const CONFIG: u64 = 0x100;
    /// Size of the MMIO window a transport occupies (one virtio-mmio slot).
    pub const WINDOW_SIZE: u64 = 0x200;

    /// Value of the MagicValue register: "virt".
    pub const MAGIC: u32 = 0x7472_6976;
    /// The only transport version offered: 2 (no legacy interface).
    pub const VERSION_MODERN: u32 = 2;
    /// Our VendorID: "RAYO" in little-endian.
    pub const VENDOR: u32 = 0x4f59_4152;
    /// SHMLen/SHMBase of a region that does not exist read as all ones.
    pub const SHM_NONE: u32 = u32::MAX;

    /// InterruptStatus bit: a used buffer notification.
    pub const INT_USED_BUFFER: u32 = 1 << 0;
    /// InterruptStatus bit: the configuration changed.
    pub const INT_CONFIG_CHANGE: u32 = 1 << 1;
}

/// Device status bits (virtio 1.2 §2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
    /// The bits the driver may set.
    pub const DRIVER_BITS: u32 = ACKNOWLEDGE | DRIVER | DRIVER_OK | FEATURES_OK | FAILED;
}

/// Device-independent feature bits (virtio 1.2 §6), as masks.
pub mod features {
    pub const INDIRECT_DESC: u64 = 1 << 28;
    pub const EVENT_IDX: u64 = 1 << 29;
    pub const VERSION_1: u64 = 1 << 32;
    pub const ACCESS_PLATFORM: u64 = 1 << 33;
    pub const RING_PACKED: u64 = 1 << 34;
    pub const RING_RESET: u64 = 1 << 40;
    /// What the transport and queue code implement for every device.
    pub const TRANSPORT: u64 = INDIRECT_DESC | EVENT_IDX | VERSION_1;
}

/// Split virtqueue layout (virtio 1.2 §2.7).
pub mod ring {
    /// Largest split queue size the specification allows.
    pub const MAX_QUEUE_SIZE: u16 = 32768;
    /// Size of one descriptor.
    pub const DESC_SIZE: u64 = 16;
    /// Alignment of the descriptor table.
    pub const DESC_ALIGN: u64 = 16;
    /// Alignment of the driver (available) ring.
    pub const AVAIL_ALIGN: u64 = 2;
    /// Alignment of the device (used) ring.
    pub const USED_ALIGN: u64 = 4;
    /// Bytes of flags + idx at the start of both rings.
    pub const RING_HEADER: u64 = 4;
    /// Size of one available-ring entry.
    pub const AVAIL_ELEM: u64 = 2;
    /// Size of one used-ring entry (id: u32, len: u32).
    pub const USED_ELEM: u64 = 8;
    /// Size of the trailing used_event / avail_event field.
    pub const EVENT_FIELD: u64 = 2;
    /// Offset of `idx` inside either ring.
    pub const IDX_OFFSET: u64 = 2;

    /// Descriptor flag: the chain continues at `next`.
    pub const DESC_F_NEXT: u16 = 1;
    /// Descriptor flag: the buffer is device-writable.
    pub const DESC_F_WRITE: u16 = 2;
    /// Descriptor flag: the buffer is a table of indirect descriptors.
    pub const DESC_F_INDIRECT: u16 = 4;

    /// Available ring flag: the driver does not want used-buffer interrupts.
    pub const AVAIL_F_NO_INTERRUPT: u16 = 1;
    /// Used ring flag: the device does not want notifications.
    pub const USED_F_NO_NOTIFY: u16 = 1;
}

/// Device IDs (virtio 1.2 §5).
pub mod device_id {
    pub const BLOCK: u32 = 2;
    pub const CONSOLE: u32 = 3;
    pub const ENTROPY: u32 = 4;
    pub const INPUT: u32 = 18;
}

/// virtio-blk (virtio 1.2 §5.2).
pub mod blk {
    pub const F_SIZE_MAX: u64 = 1 << 1;
    pub const F_SEG_MAX: u64 = 1 << 2;
    pub const F_RO: u64 = 1 << 5;
    pub const F_BLK_SIZE: u64 = 1 << 6;
    pub const F_FLUSH: u64 = 1 << 9;
    pub const F_WRITE_ZEROES: u64 = 1 << 14;

    pub const T_IN: u32 = 0;
    pub const T_OUT: u32 = 1;
    pub const T_FLUSH: u32 = 4;
    pub const T_GET_ID: u32 = 8;
    pub const T_WRITE_ZEROES: u32 = 13;

    pub const S_OK: u8 = 0;
    pub const S_IOERR: u8 = 1;
    pub const S_UNSUPP: u8 = 2;

    /// Size of the request header: type u32, reserved u32, sector u64.
    pub const REQ_HEADER_SIZE: usize = 16;
    /// Size of one discard / write-zeroes segment: sector u64, num_sectors u32, flags u32.
    pub const WZ_SEGMENT_SIZE: usize = 16;
    /// Write-zeroes segment flag: the device may unmap the range.
    pub const WZ_F_UNMAP: u32 = 1;
    /// Length of the GET_ID answer.
    pub const ID_BYTES: usize = 20;

    /// Config space offsets (`struct virtio_blk_config`).
    pub const CFG_CAPACITY: usize = 0;
    pub const CFG_SIZE_MAX: usize = 8;
    pub const CFG_SEG_MAX: usize = 12;
    pub const CFG_BLK_SIZE: usize = 20;
    pub const CFG_NUM_QUEUES: usize = 34;
    pub const CFG_MAX_WRITE_ZEROES_SECTORS: usize = 48;
    pub const CFG_MAX_WRITE_ZEROES_SEG: usize = 52;
    pub const CFG_WRITE_ZEROES_MAY_UNMAP: usize = 56;
    /// Bytes of config space exposed (through `write_zeroes_may_unmap` + padding).
    pub const CFG_SIZE: usize = 60;
}

/// virtio-console (virtio 1.2 §5.3).
pub mod console {
    pub const F_EMERG_WRITE: u64 = 1 << 2;
    /// Queue indices of port 0.
    pub const RECEIVEQ: u16 = 0;
    pub const TRANSMITQ: u16 = 1;
    /// Config space offsets (`struct virtio_console_config`).
    pub const CFG_COLS: usize = 0;
    pub const CFG_ROWS: usize = 2;
    pub const CFG_MAX_NR_PORTS: usize = 4;
    pub const CFG_EMERG_WR: usize = 8;
    pub const CFG_SIZE: usize = 12;
}

/// virtio-input (virtio 1.2 §5.8) and the evdev numbers its events and config carry
/// (the Linux input ABI, `input-event-codes.h`, which the specification adopts).
pub mod input {
    /// Queue indices.
    pub const EVENTQ: u16 = 0;
    pub const STATUSQ: u16 = 1;
    /// Config space offsets (`struct virtio_input_config`).
    pub const CFG_SELECT: usize = 0;
    pub const CFG_SUBSEL: usize = 1;
    pub const CFG_SIZE_FIELD: usize = 2;
    pub const CFG_UNION: usize = 8;
    /// Bytes of the union (string, bitmap, absinfo or devids).
    pub const CFG_UNION_SIZE: usize = 128;
    pub const CFG_SIZE: usize = CFG_UNION + CFG_UNION_SIZE;
    /// `select` values (`enum virtio_input_config_select`).
    pub const CFG_UNSET: u8 = 0x00;
    pub const CFG_ID_NAME: u8 = 0x01;
    pub const CFG_ID_SERIAL: u8 = 0x02;
    pub const CFG_ID_DEVIDS: u8 = 0x03;
    pub const CFG_PROP_BITS: u8 = 0x10;
    pub const CFG_EV_BITS: u8 = 0x11;
    pub const CFG_ABS_INFO: u8 = 0x12;
    /// Bytes of `struct virtio_input_absinfo` (min, max, fuzz, flat, res: le32).
    pub const ABSINFO_SIZE: u8 = 20;
    /// Bytes of `struct virtio_input_devids` (bustype, vendor, product, version: le16).
    pub const DEVIDS_SIZE: u8 = 8;
    /// Bytes of `struct virtio_input_event` (type: le16, code: le16, value: le32).
    pub const EVENT_SIZE: usize = 8;

    /// Event types.
    pub const EV_SYN: u16 = 0x00;
    pub const EV_KEY: u16 = 0x01;
    pub const EV_REL: u16 = 0x02;
    pub const EV_ABS: u16 = 0x03;
    pub const EV_LED: u16 = 0x11;
    pub const EV_REP: u16 = 0x14;
    /// EV_SYN code ending one report.
    pub const SYN_REPORT: u16 = 0;
    /// EV_REL codes.
    pub const REL_HWHEEL: u16 = 0x06;
    pub const REL_WHEEL: u16 = 0x08;
    /// EV_ABS codes.
    pub const ABS_X: u16 = 0x00;
    pub const ABS_Y: u16 = 0x01;
    /// EV_KEY codes of pointer buttons.
    pub const BTN_LEFT: u16 = 0x110;
    pub const BTN_RIGHT: u16 = 0x111;
    pub const BTN_MIDDLE: u16 = 0x112;
    pub const BTN_SIDE: u16 = 0x113;
    pub const BTN_EXTRA: u16 = 0x114;
    /// The keyboard key codes (KEY_ESC = 1 .. 255; 0 is KEY_RESERVED, 0x100 starts
    /// the buttons).
    pub const KEY_FIRST: u16 = 1;
    pub const KEY_LAST: u16 = 0xff;
    /// EV_LED codes (the ones a keyboard driver sets on the statusq).
    pub const LED_NUML: u16 = 0x00;
    pub const LED_CAPSL: u16 = 0x01;
    pub const LED_SCROLLL: u16 = 0x02;
    pub const LED_COMPOSE: u16 = 0x03;
    pub const LED_KANA: u16 = 0x04;
    /// EV_REP codes.
    pub const REP_DELAY: u16 = 0x00;
    pub const REP_PERIOD: u16 = 0x01;
    /// `bustype` of ID_DEVIDS: a virtual device.
    pub const BUS_VIRTUAL: u16 = 0x06;
}

/// Limits this crate sets itself, with the reasoning.
pub mod limits {
    /// Most bytes one descriptor chain may describe. Chains are processed in bounded
    /// chunks, so this bounds the time one request may take, not memory. virtio-blk
    /// advertises `size_max` × `seg_max` below this, so a conforming driver never
    /// reaches it.
    pub const MAX_CHAIN_BYTES: u64 = 64 << 20;
    /// Most entries an indirect descriptor table may hold (QEMU's bound, and more than
    /// Linux ever builds for our queue sizes).
    pub const MAX_INDIRECT_DESCRIPTORS: u32 = 1024;
    /// Size of the bounce buffer devices copy data through.
    pub const CHUNK_BYTES: usize = 16 << 10;
    /// virtio-blk's bounce buffer: one whole request of Linux's default size, so each
    /// guest request reaches the backend (and a disk behind it) as one large
    /// operation, not many small ones.
    pub const BLK_CHUNK_BYTES: usize = 1 << 20;
    /// Most chains one transport call pops before deferring the rest to `poll`: four
    /// full default-size rings, which no conforming driver outruns in one exit.
    pub const MAX_CHAINS_PER_RUN: u32 = 1024;
    /// Most chain bytes one transport call pops before deferring the rest to `poll`.
    pub const MAX_BYTES_PER_RUN: u64 = 256 << 20;
    /// Default queue size offered by the devices of this crate.
    pub const DEFAULT_QUEUE_SIZE: u16 = 256;
}
