//! Register offsets, bit fields, TRB types and completion codes, named as in the
//! eXtensible Host Controller Interface for USB specification, revision 1.1
//! (sections 5 and 6); USB request codes as in USB 2.0 chapter 9.

/// The MMIO layout of this controller (the register file starts at offset 0).
pub mod layout {
    /// Capability registers: CAPLENGTH says where the operational ones start.
    pub const CAP_LENGTH: u64 = 0x40;
    /// Operational registers.
    pub const OPER: u64 = CAP_LENGTH;
    /// Port register sets, `PORT_STRIDE` bytes each (operational base + 0x400).
    pub const PORTS: u64 = OPER + 0x400;
    pub const PORT_STRIDE: u64 = 0x10;
    /// Extended capabilities (two Supported Protocol capabilities).
    pub const XECP: u64 = 0x800;
    /// Runtime registers (RTSOFF).
    pub const RUNTIME: u64 = 0x1000;
    /// Interrupter register sets inside the runtime registers, 32 bytes each.
    pub const INTERRUPTERS: u64 = RUNTIME + 0x20;
    pub const INTERRUPTER_STRIDE: u64 = 0x20;
    /// Doorbell array (DBOFF), one 32-bit doorbell per slot (0: the command ring).
    pub const DOORBELLS: u64 = 0x2000;
    /// Bytes the register file occupies (doorbells for 256 slots included).
    pub const SIZE: u64 = 0x3000;
}

/// Capability register offsets (section 5.3).
pub mod cap {
    pub const CAPLENGTH: u64 = 0x00;
    pub const HCIVERSION: u64 = 0x02;
    pub const HCSPARAMS1: u64 = 0x04;
    pub const HCSPARAMS2: u64 = 0x08;
    pub const HCSPARAMS3: u64 = 0x0c;
    pub const HCCPARAMS1: u64 = 0x10;
    pub const DBOFF: u64 = 0x14;
    pub const RTSOFF: u64 = 0x18;
    pub const HCCPARAMS2: u64 = 0x1c;
    /// Interface version 1.1.0.
    pub const VERSION: u32 = 0x0110;
    /// HCCPARAMS1.AC64: 64-bit addressing.
    pub const AC64: u32 = 1 << 0;
    /// HCCPARAMS1.xECP shift (in 32-bit words from the base).
    pub const XECP_SHIFT: u32 = 16;
    /// HCSPARAMS2.ERST Max shift (the table holds up to 2^ERST Max entries).
    pub const ERST_MAX_SHIFT: u32 = 4;
}

/// Operational register offsets from [`layout::OPER`] (section 5.4).
pub mod op {
    pub const USBCMD: u64 = 0x00;
    pub const USBSTS: u64 = 0x04;
    pub const PAGESIZE: u64 = 0x08;
    pub const DNCTRL: u64 = 0x14;
    pub const CRCR: u64 = 0x18;
    pub const DCBAAP: u64 = 0x30;
    pub const CONFIG: u64 = 0x38;
}

/// USBCMD bits.
pub mod usbcmd {
    pub const RS: u32 = 1 << 0;
    pub const HCRST: u32 = 1 << 1;
    pub const INTE: u32 = 1 << 2;
    pub const HSEE: u32 = 1 << 3;
    pub const LHCRST: u32 = 1 << 7;
    pub const CSS: u32 = 1 << 8;
    pub const CRS: u32 = 1 << 9;
    pub const EWE: u32 = 1 << 10;
    /// The bits software may set and read back.
    pub const WRITABLE: u32 = RS | INTE | HSEE | EWE;
}

/// USBSTS bits.
pub mod usbsts {
    pub const HCH: u32 = 1 << 0;
    pub const HSE: u32 = 1 << 2;
    pub const EINT: u32 = 1 << 3;
    pub const PCD: u32 = 1 << 4;
    pub const SRE: u32 = 1 << 10;
    pub const CNR: u32 = 1 << 11;
    pub const HCE: u32 = 1 << 12;
    /// Write-1-to-clear bits.
    pub const RW1C: u32 = HSE | EINT | PCD | SRE;
}

/// CRCR bits.
pub mod crcr {
    pub const RCS: u64 = 1 << 0;
    pub const CS: u64 = 1 << 1;
    pub const CA: u64 = 1 << 2;
    pub const CRR: u64 = 1 << 3;
    pub const PTR_MASK: u64 = !0x3f;
}

/// PORTSC bits (section 5.4.8).
pub mod portsc {
    pub const CCS: u32 = 1 << 0;
    pub const PED: u32 = 1 << 1;
    pub const OCA: u32 = 1 << 3;
    pub const PR: u32 = 1 << 4;
    pub const PLS_SHIFT: u32 = 5;
    pub const PLS_MASK: u32 = 0xf << PLS_SHIFT;
    pub const PP: u32 = 1 << 9;
    pub const SPEED_SHIFT: u32 = 10;
    pub const PIC_MASK: u32 = 0x3 << 14;
    pub const LWS: u32 = 1 << 16;
    pub const CSC: u32 = 1 << 17;
    pub const PEC: u32 = 1 << 18;
    pub const WRC: u32 = 1 << 19;
    pub const OCC: u32 = 1 << 20;
    pub const PRC: u32 = 1 << 21;
    pub const PLC: u32 = 1 << 22;
    pub const CEC: u32 = 1 << 23;
    pub const CAS: u32 = 1 << 24;
    pub const WAKE_MASK: u32 = 0x7 << 25;
    pub const DR: u32 = 1 << 30;
    pub const WPR: u32 = 1 << 31;
    /// The change bits (write 1 to clear).
    pub const CHANGE: u32 = CSC | PEC | WRC | OCC | PRC | PLC | CEC;
    /// Port link states.
    pub const PLS_U0: u32 = 0;
    pub const PLS_U3: u32 = 3;
    pub const PLS_DISABLED: u32 = 4;
    pub const PLS_RX_DETECT: u32 = 5;
    pub const PLS_POLLING: u32 = 7;
    pub const PLS_RESUME: u32 = 15;
}

/// Interrupter register offsets (section 5.5.2) and bits.
pub mod intr {
    pub const IMAN: u64 = 0x00;
    pub const IMOD: u64 = 0x04;
    pub const ERSTSZ: u64 = 0x08;
    pub const ERSTBA: u64 = 0x10;
    pub const ERDP: u64 = 0x18;
    pub const IMAN_IP: u32 = 1 << 0;
    pub const IMAN_IE: u32 = 1 << 1;
    pub const ERDP_EHB: u64 = 1 << 3;
    pub const ERDP_PTR_MASK: u64 = !0xf;
    pub const ERSTBA_PTR_MASK: u64 = !0x3f;
}

/// TRB types (section 6.4.6).
pub mod trb_type {
    pub const NORMAL: u8 = 1;
    pub const SETUP_STAGE: u8 = 2;
    pub const DATA_STAGE: u8 = 3;
    pub const STATUS_STAGE: u8 = 4;
    pub const ISOCH: u8 = 5;
    pub const LINK: u8 = 6;
    pub const EVENT_DATA: u8 = 7;
    pub const NO_OP: u8 = 8;
    pub const ENABLE_SLOT: u8 = 9;
    pub const DISABLE_SLOT: u8 = 10;
    pub const ADDRESS_DEVICE: u8 = 11;
    pub const CONFIGURE_ENDPOINT: u8 = 12;
    pub const EVALUATE_CONTEXT: u8 = 13;
    pub const RESET_ENDPOINT: u8 = 14;
    pub const STOP_ENDPOINT: u8 = 15;
    pub const SET_TR_DEQUEUE: u8 = 16;
    pub const RESET_DEVICE: u8 = 17;
    pub const NO_OP_COMMAND: u8 = 23;
    pub const TRANSFER_EVENT: u8 = 32;
    pub const COMMAND_COMPLETION: u8 = 33;
    pub const PORT_STATUS_CHANGE: u8 = 34;
    pub const HOST_CONTROLLER: u8 = 37;
}

/// TRB control-word fields.
pub mod trb {
    pub const CYCLE: u32 = 1 << 0;
    /// Link TRB: Toggle Cycle.
    pub const TC: u32 = 1 << 1;
    /// Evaluate Next TRB (transfer TRBs).
    pub const ENT: u32 = 1 << 1;
    pub const ISP: u32 = 1 << 2;
    pub const CH: u32 = 1 << 4;
    pub const IOC: u32 = 1 << 5;
    pub const IDT: u32 = 1 << 6;
    /// Address Device: Block Set Address Request; Configure Endpoint: Deconfigure.
    pub const BSR: u32 = 1 << 9;
    pub const DC: u32 = 1 << 9;
    pub const TYPE_SHIFT: u32 = 10;
    pub const TYPE_MASK: u32 = 0x3f << TYPE_SHIFT;
    /// Data Stage TRB: direction IN.
    pub const DIR_IN: u32 = 1 << 16;
    /// Event TRBs: Event Data flag.
    pub const ED: u32 = 1 << 2;
    pub const EP_SHIFT: u32 = 16;
    pub const SLOT_SHIFT: u32 = 24;
    /// Transfer TRB status: TRB Transfer Length.
    pub const LENGTH_MASK: u32 = 0x1_ffff;
    /// Event status: the completion code's shift.
    pub const CC_SHIFT: u32 = 24;
    /// Bytes in a TRB.
    pub const SIZE: u64 = 16;
}

/// Completion codes (section 6.4.5).
pub mod cc {
    pub const SUCCESS: u8 = 1;
    pub const DATA_BUFFER: u8 = 2;
    pub const BABBLE: u8 = 3;
    pub const USB_TRANSACTION: u8 = 4;
    pub const TRB: u8 = 5;
    pub const STALL: u8 = 6;
    pub const RESOURCE: u8 = 7;
    pub const NO_SLOTS: u8 = 9;
    pub const SLOT_NOT_ENABLED: u8 = 11;
    pub const ENDPOINT_NOT_ENABLED: u8 = 12;
    pub const SHORT_PACKET: u8 = 13;
    pub const PARAMETER: u8 = 17;
    pub const CONTEXT_STATE: u8 = 19;
    pub const EVENT_RING_FULL: u8 = 21;
    pub const COMMAND_RING_STOPPED: u8 = 24;
    pub const COMMAND_ABORTED: u8 = 25;
    pub const STOPPED: u8 = 26;
}

/// Slot and endpoint context fields (section 6.2); 32-byte contexts (HCCPARAMS1.CSZ 0).
pub mod ctx {
    pub const SIZE: u64 = 32;
    /// Slot states.
    pub const SLOT_DISABLED: u32 = 0;
    pub const SLOT_DEFAULT: u32 = 1;
    pub const SLOT_ADDRESSED: u32 = 2;
    pub const SLOT_CONFIGURED: u32 = 3;
    /// Endpoint states.
    pub const EP_DISABLED: u32 = 0;
    pub const EP_RUNNING: u32 = 1;
    pub const EP_HALTED: u32 = 2;
    pub const EP_STOPPED: u32 = 3;
    pub const EP_ERROR: u32 = 4;
    /// Endpoint types.
    pub const EP_CONTROL: u32 = 4;
    pub const EP_BULK_OUT: u32 = 2;
    pub const EP_INT_OUT: u32 = 3;
    pub const EP_BULK_IN: u32 = 6;
    pub const EP_INT_IN: u32 = 7;
    /// Device Context Index of the default control endpoint.
    pub const DCI_EP0: usize = 1;
    /// Highest Device Context Index.
    pub const DCI_MAX: usize = 31;
}

/// Port speeds (Protocol Speed ID defaults, section 7.2.2.1.1).
pub mod speed {
    pub const FULL: u32 = 1;
    pub const LOW: u32 = 2;
    pub const HIGH: u32 = 3;
    pub const SUPER: u32 = 4;
}

/// USB 2.0 chapter 9 requests, descriptor types, and the HID 1.11 and mass-storage
/// bulk-only class requests.
pub mod usb {
    pub const DIR_IN: u8 = 0x80;
    pub const TYPE_MASK: u8 = 0x60;
    pub const TYPE_STANDARD: u8 = 0x00;
    pub const TYPE_CLASS: u8 = 0x20;
    pub const RECIPIENT_MASK: u8 = 0x1f;
    pub const RECIPIENT_DEVICE: u8 = 0;
    pub const RECIPIENT_INTERFACE: u8 = 1;
    pub const RECIPIENT_ENDPOINT: u8 = 2;

    pub const GET_STATUS: u8 = 0;
    pub const CLEAR_FEATURE: u8 = 1;
    pub const SET_FEATURE: u8 = 3;
    pub const SET_ADDRESS: u8 = 5;
    pub const GET_DESCRIPTOR: u8 = 6;
    pub const GET_CONFIGURATION: u8 = 8;
    pub const SET_CONFIGURATION: u8 = 9;
    pub const GET_INTERFACE: u8 = 10;
    pub const SET_INTERFACE: u8 = 11;
    pub const SET_SEL: u8 = 48;
    pub const SET_ISOCH_DELAY: u8 = 49;
    /// Feature selectors.
    pub const ENDPOINT_HALT: u16 = 0;
    pub const DEVICE_REMOTE_WAKEUP: u16 = 1;

    pub const DT_DEVICE: u8 = 1;
    pub const DT_CONFIG: u8 = 2;
    pub const DT_STRING: u8 = 3;
    pub const DT_INTERFACE: u8 = 4;
    pub const DT_ENDPOINT: u8 = 5;
    pub const DT_DEVICE_QUALIFIER: u8 = 6;
    pub const DT_BOS: u8 = 15;
    pub const DT_DEVICE_CAPABILITY: u8 = 16;
    pub const DT_HID: u8 = 0x21;
    pub const DT_HID_REPORT: u8 = 0x22;
    pub const DT_SS_ENDPOINT_COMPANION: u8 = 48;

    /// HID class requests.
    pub const HID_GET_REPORT: u8 = 0x01;
    pub const HID_GET_IDLE: u8 = 0x02;
    pub const HID_GET_PROTOCOL: u8 = 0x03;
    pub const HID_SET_REPORT: u8 = 0x09;
    pub const HID_SET_IDLE: u8 = 0x0a;
    pub const HID_SET_PROTOCOL: u8 = 0x0b;
    /// HID report types (high byte of wValue).
    pub const HID_REPORT_OUTPUT: u8 = 2;

    /// Mass storage bulk-only class requests.
    pub const BOT_GET_MAX_LUN: u8 = 0xfe;
    pub const BOT_RESET: u8 = 0xff;
}
