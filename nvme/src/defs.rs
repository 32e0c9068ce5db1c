//! Names and layouts from the NVM Express Base Specification, revision 1.4: the
//! controller registers (§3.1) as `tock-registers` bitfields, queue entry layouts
//! (§4.2, §4.6), opcodes (§5, §6), status codes (§4.6.1.2), feature and log page
//! identifiers, and the Identify data structure offsets the model fills in.

use tock_registers::register_bitfields;

register_bitfields! {u64,
    /// CAP, Controller Capabilities (§3.1.1).
    pub CAP [
        /// Controller Memory Buffer Supported.
        CMBS OFFSET(57) NUMBITS(1) [],
        /// Persistent Memory Region Supported.
        PMRS OFFSET(56) NUMBITS(1) [],
        /// Memory Page Size Maximum: 2 ^ (12 + MPSMAX) bytes.
        MPSMAX OFFSET(52) NUMBITS(4) [],
        /// Memory Page Size Minimum: 2 ^ (12 + MPSMIN) bytes.
        MPSMIN OFFSET(48) NUMBITS(4) [],
        /// Boot Partition Support.
        BPS OFFSET(45) NUMBITS(1) [],
        /// Command Sets Supported; bit 0 (register bit 37) is the NVM command set.
        CSS OFFSET(37) NUMBITS(8) [
            Nvm = 1
        ],
        /// NVM Subsystem Reset Supported.
        NSSRS OFFSET(36) NUMBITS(1) [],
        /// Doorbell Stride: doorbells are 2 ^ (2 + DSTRD) bytes apart.
        DSTRD OFFSET(32) NUMBITS(4) [],
        /// Timeout: worst-case time to CSTS.RDY after CC.EN changes, in 500 ms units.
        TO OFFSET(24) NUMBITS(8) [],
        /// Arbitration Mechanism Supported (beyond round robin).
        AMS OFFSET(17) NUMBITS(2) [],
        /// Contiguous Queues Required.
        CQR OFFSET(16) NUMBITS(1) [],
        /// Maximum Queue Entries Supported, 0's based.
        MQES OFFSET(0) NUMBITS(16) []
    ]
}

register_bitfields! {u32,
    /// VS, Version (§3.1.2).
    pub VS [
        MJR OFFSET(16) NUMBITS(16) [],
        MNR OFFSET(8) NUMBITS(8) [],
        TER OFFSET(0) NUMBITS(8) []
    ],
    /// CC, Controller Configuration (§3.1.5).
    pub CC [
        /// I/O Completion Queue Entry Size, log2 bytes.
        IOCQES OFFSET(20) NUMBITS(4) [],
        /// I/O Submission Queue Entry Size, log2 bytes.
        IOSQES OFFSET(16) NUMBITS(4) [],
        /// Shutdown Notification.
        SHN OFFSET(14) NUMBITS(2) [
            None = 0,
            Normal = 1,
            Abrupt = 2
        ],
        /// Arbitration Mechanism Selected.
        AMS OFFSET(11) NUMBITS(3) [
            RoundRobin = 0
        ],
        /// Memory Page Size: 2 ^ (12 + MPS) bytes.
        MPS OFFSET(7) NUMBITS(4) [],
        /// I/O Command Set Selected.
        CSS OFFSET(4) NUMBITS(3) [
            Nvm = 0
        ],
        /// Enable.
        EN OFFSET(0) NUMBITS(1) []
    ],
    /// CSTS, Controller Status (§3.1.6).
    pub CSTS [
        /// Processing Paused.
        PP OFFSET(5) NUMBITS(1) [],
        /// NVM Subsystem Reset Occurred.
        NSSRO OFFSET(4) NUMBITS(1) [],
        /// Shutdown Status.
        SHST OFFSET(2) NUMBITS(2) [
            Normal = 0,
            Occurring = 1,
            Complete = 2
        ],
        /// Controller Fatal Status.
        CFS OFFSET(1) NUMBITS(1) [],
        /// Ready.
        RDY OFFSET(0) NUMBITS(1) []
    ],
    /// AQA, Admin Queue Attributes (§3.1.8).
    pub AQA [
        /// Admin Completion Queue Size, 0's based.
        ACQS OFFSET(16) NUMBITS(12) [],
        /// Admin Submission Queue Size, 0's based.
        ASQS OFFSET(0) NUMBITS(12) []
    ]
}

/// Register offsets in BAR0 (§3.1).
pub mod reg {
    pub const CAP: u64 = 0x00;
    pub const VS: u64 = 0x08;
    pub const INTMS: u64 = 0x0c;
    pub const INTMC: u64 = 0x10;
    pub const CC: u64 = 0x14;
    pub const CSTS: u64 = 0x1c;
    pub const NSSR: u64 = 0x20;
    pub const AQA: u64 = 0x24;
    pub const ASQ: u64 = 0x28;
    pub const ACQ: u64 = 0x30;
    /// First doorbell: SQ 0 Tail; SQ y Tail at `DOORBELLS + 2y * stride`, CQ y Head at
    /// `DOORBELLS + (2y + 1) * stride`.
    pub const DOORBELLS: u64 = 0x1000;
    /// ASQ/ACQ bits 11:0 are reserved (the queues are page aligned).
    pub const QUEUE_BASE_MASK: u64 = !0xfff;
}

/// Submission queue entry (§4.2) and completion queue entry (§4.6) layouts.
pub mod entry {
    /// Bytes in a submission queue entry (CC.IOSQES = 6).
    pub const SQE_BYTES: usize = 64;
    /// Bytes in a completion queue entry (CC.IOCQES = 4).
    pub const CQE_BYTES: usize = 16;
    pub const SQES_LOG2: u32 = 6;
    pub const CQES_LOG2: u32 = 4;
    /// Byte offsets of the SQE fields.
    pub const CDW0: usize = 0;
    pub const NSID: usize = 4;
    pub const PRP1: usize = 24;
    pub const PRP2: usize = 32;
    pub const CDW10: usize = 40;
    /// CDW0: PRP or SGL for Data Transfer (bits 15:14), Fused Operation (9:8).
    pub const PSDT_SHIFT: u32 = 14;
    pub const PSDT_MASK: u32 = 0b11;
    pub const FUSE_SHIFT: u32 = 8;
    pub const FUSE_MASK: u32 = 0b11;
    /// CQE DW3: Phase Tag, and the Status Field above it.
    pub const PHASE: u32 = 1 << 16;
    pub const STATUS_SHIFT: u32 = 17;
    /// Status Field: Status Code (bits 7:0), Status Code Type (10:8), Do Not Retry
    /// (bit 14), counted from the field's bit 0 (CQE DW3 bit 17).
    pub const SCT_SHIFT: u32 = 8;
    pub const DNR: u16 = 1 << 14;
}

/// Admin command opcodes (§5).
pub mod admin {
    pub const DELETE_IO_SQ: u8 = 0x00;
    pub const CREATE_IO_SQ: u8 = 0x01;
    pub const GET_LOG_PAGE: u8 = 0x02;
    pub const DELETE_IO_CQ: u8 = 0x04;
    pub const CREATE_IO_CQ: u8 = 0x05;
    pub const IDENTIFY: u8 = 0x06;
    pub const ABORT: u8 = 0x08;
    pub const SET_FEATURES: u8 = 0x09;
    pub const GET_FEATURES: u8 = 0x0a;
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0c;
    pub const KEEP_ALIVE: u8 = 0x18;
}

/// NVM command set I/O opcodes (§6).
pub mod io {
    pub const FLUSH: u8 = 0x00;
    pub const WRITE: u8 = 0x01;
    pub const READ: u8 = 0x02;
    pub const WRITE_ZEROES: u8 = 0x08;
    pub const DATASET_MANAGEMENT: u8 = 0x09;
    /// Read/Write CDW12: Number of Logical Blocks (0's based, bits 15:0), Force Unit
    /// Access (bit 30).
    pub const NLB_MASK: u32 = 0xffff;
    pub const FUA: u32 = 1 << 30;
    /// Dataset Management CDW10: Number of Ranges (0's based, bits 7:0); CDW11:
    /// Attribute – Deallocate (bit 2).
    pub const DSM_NR_MASK: u32 = 0xff;
    pub const DSM_AD: u32 = 1 << 2;
    /// Bytes in one Dataset Management range: context attributes (u32), length in
    /// logical blocks (u32), starting LBA (u64).
    pub const DSM_RANGE_BYTES: usize = 16;
}

/// Status Code Types (§4.6.1.2).
pub mod sct {
    pub const GENERIC: u16 = 0;
    pub const COMMAND_SPECIFIC: u16 = 1;
    pub const MEDIA: u16 = 2;
}

/// A completion status: Status Code Type and Status Code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status {
    pub sct: u16,
    pub sc: u8,
}

impl Status {
    const fn generic(sc: u8) -> Self {
        Status {
            sct: sct::GENERIC,
            sc,
        }
    }
    const fn specific(sc: u8) -> Self {
        Status {
            sct: sct::COMMAND_SPECIFIC,
            sc,
        }
    }

    pub const SUCCESS: Status = Status::generic(0x00);
    pub const INVALID_OPCODE: Status = Status::generic(0x01);
    pub const INVALID_FIELD: Status = Status::generic(0x02);
    pub const DATA_TRANSFER_ERROR: Status = Status::generic(0x04);
    pub const INTERNAL_ERROR: Status = Status::generic(0x06);
    pub const ABORTED_SQ_DELETION: Status = Status::generic(0x08);
    pub const INVALID_NAMESPACE: Status = Status::generic(0x0b);
    pub const COMMAND_SEQUENCE_ERROR: Status = Status::generic(0x0c);
    pub const PRP_OFFSET_INVALID: Status = Status::generic(0x13);
    pub const NAMESPACE_WRITE_PROTECTED: Status = Status::generic(0x20);
    pub const LBA_OUT_OF_RANGE: Status = Status::generic(0x80);

    pub const COMPLETION_QUEUE_INVALID: Status = Status::specific(0x00);
    pub const INVALID_QUEUE_IDENTIFIER: Status = Status::specific(0x01);
    pub const INVALID_QUEUE_SIZE: Status = Status::specific(0x02);
    pub const AER_LIMIT_EXCEEDED: Status = Status::specific(0x05);
    pub const INVALID_INTERRUPT_VECTOR: Status = Status::specific(0x08);
    pub const INVALID_LOG_PAGE: Status = Status::specific(0x09);
    pub const INVALID_QUEUE_DELETION: Status = Status::specific(0x0c);
    pub const FEATURE_NOT_SAVEABLE: Status = Status::specific(0x0d);

    pub const WRITE_FAULT: Status = Status {
        sct: sct::MEDIA,
        sc: 0x80,
    };
    pub const UNRECOVERED_READ_ERROR: Status = Status {
        sct: sct::MEDIA,
        sc: 0x81,
    };

    /// The 15-bit Status Field (DNR set on every error: retrying the same command
    /// gets the same answer).
    pub fn field(self) -> u16 {
        let dnr = if self == Status::SUCCESS {
            0
        } else {
            entry::DNR
        };
        (self.sct << entry::SCT_SHIFT) | u16::from(self.sc) | dnr
    }
}

/// Feature Identifiers (§5.21.1).
pub mod feature {
    pub const ARBITRATION: u8 = 0x01;
    pub const POWER_MANAGEMENT: u8 = 0x02;
    pub const TEMPERATURE_THRESHOLD: u8 = 0x04;
    pub const ERROR_RECOVERY: u8 = 0x05;
    pub const VOLATILE_WRITE_CACHE: u8 = 0x06;
    pub const NUMBER_OF_QUEUES: u8 = 0x07;
    pub const INTERRUPT_COALESCING: u8 = 0x08;
    pub const INTERRUPT_VECTOR_CONFIG: u8 = 0x09;
    pub const WRITE_ATOMICITY: u8 = 0x0a;
    pub const ASYNC_EVENT_CONFIG: u8 = 0x0b;
    /// Set Features CDW10 bit 31: Save.
    pub const SAVE: u32 = 1 << 31;
    /// Get Features CDW10 bits 10:8: Select (0 current, 1 default, 2 saved, 3
    /// supported capabilities).
    pub const SEL_SHIFT: u32 = 8;
    pub const SEL_MASK: u32 = 0b111;
    pub const SEL_CURRENT: u32 = 0;
    pub const SEL_DEFAULT: u32 = 1;
    pub const SEL_SAVED: u32 = 2;
    pub const SEL_CAPABILITIES: u32 = 3;
    /// Temperature threshold default: 0x157 K (70 °C), the over-temperature threshold.
    pub const DEFAULT_TEMPERATURE_THRESHOLD: u32 = 0x157;
    /// Async Event Configuration bits the model accepts: SMART critical warnings
    /// (7:0) and Namespace Attribute Notices (bit 8).
    pub const AEC_SUPPORTED: u32 = 0x1ff;
}

/// Log Page Identifiers (§5.14.1).
pub mod log_page {
    pub const ERROR_INFORMATION: u8 = 0x01;
    pub const SMART: u8 = 0x02;
    pub const FIRMWARE_SLOT: u8 = 0x03;
    /// Bytes in one Error Information log entry.
    pub const ERROR_ENTRY_BYTES: usize = 64;
    /// Bytes in the SMART / Health Information and Firmware Slot Information pages.
    pub const PAGE_BYTES: usize = 512;
    /// Get Log Page CDW10: Log Page Identifier (7:0), Retain Asynchronous Event (15),
    /// Number of Dwords Lower (31:16, 0's based with NUMDU); CDW11: NUMDU (15:0).
    pub const RAE: u32 = 1 << 15;
}

/// Asynchronous Event Request completion DW0 (§5.2): type (2:0), information
/// (15:8), associated log page (23:16).
pub mod aer {
    pub const TYPE_ERROR: u32 = 0;
    pub const INFO_INVALID_DOORBELL_REGISTER: u32 = 0x00;
    pub const INFO_INVALID_DOORBELL_VALUE: u32 = 0x01;
    /// The controller holds this many outstanding requests at most (AERL + 1).
    pub const LIMIT: usize = 4;
    /// Events held while no request is outstanding, at most.
    pub const MAX_PENDING: usize = 8;
}

/// Identify (§5.15): CNS values and data structure offsets.
pub mod identify {
    pub const CNS_NAMESPACE: u8 = 0x00;
    pub const CNS_CONTROLLER: u8 = 0x01;
    pub const CNS_ACTIVE_NSID_LIST: u8 = 0x02;
    pub const CNS_NS_ID_DESCRIPTORS: u8 = 0x03;
    /// CNS values NVMe 2.0 added for its I/O Command Sets (I/O Command Set specific
    /// Identify Namespace 05h and Identify Controller 06h, I/O Command Set specific
    /// Active Namespace ID list 07h, I/O Command Set Independent Identify Namespace
    /// 08h, Identify I/O Command Set data structure 1Ch). They are reserved in NVMe
    /// 1.4, the version this controller reports (VS 1.4, CAP.CSS with only the NVM
    /// Command Set bit, not "I/O Command Set Support"), so they get Invalid Field in
    /// Command; hosts that know NVMe 2.0 probe them on every start (Linux asks for
    /// 06h of any controller of 1.1 or later), so they are answered quietly.
    pub const CNS_NVME2_IO_COMMAND_SETS: [u8; 5] = [0x05, 0x06, 0x07, 0x08, 0x1c];
    /// Every Identify data structure is 4 KiB.
    pub const BYTES: usize = 4096;

    // Identify Controller.
    pub const VID: usize = 0;
    pub const SSVID: usize = 2;
    pub const SN: usize = 4;
    pub const SN_LEN: usize = 20;
    pub const MN: usize = 24;
    pub const MN_LEN: usize = 40;
    pub const FR: usize = 64;
    pub const FR_LEN: usize = 8;
    pub const RAB: usize = 72;
    pub const MDTS: usize = 77;
    pub const CNTLID: usize = 78;
    pub const VER: usize = 80;
    pub const OAES: usize = 92;
    pub const CNTRLTYPE: usize = 111;
    pub const ACL: usize = 258;
    pub const AERL: usize = 259;
    pub const FRMW: usize = 260;
    pub const LPA: usize = 261;
    pub const ELPE: usize = 262;
    pub const WCTEMP: usize = 266;
    pub const CCTEMP: usize = 268;
    pub const SQES: usize = 512;
    pub const CQES: usize = 513;
    pub const MAXCMD: usize = 514;
    pub const NN: usize = 516;
    pub const ONCS: usize = 520;
    pub const VWC: usize = 525;
    pub const SUBNQN: usize = 768;
    pub const PSD0: usize = 2048;
    /// ONCS: Dataset Management (bit 2) and Write Zeroes (bit 3) supported.
    pub const ONCS_DSM: u16 = 1 << 2;
    pub const ONCS_WRITE_ZEROES: u16 = 1 << 3;
    /// CNTRLTYPE: I/O controller.
    pub const CNTRLTYPE_IO: u8 = 1;
    /// LPA: Extended data for Get Log Page (NUMDU, offsets).
    pub const LPA_EXTENDED: u8 = 1 << 2;

    // Identify Namespace.
    pub const NSZE: usize = 0;
    pub const NCAP: usize = 8;
    pub const NUSE: usize = 16;
    pub const NLBAF: usize = 25;
    pub const FLBAS: usize = 26;
    pub const NGUID: usize = 104;
    pub const EUI64: usize = 120;
    pub const LBAF0: usize = 128;
    /// LBA Format 0: LBA Data Size (log2) in bits 23:16.
    pub const LBADS_SHIFT: u32 = 16;

    // Namespace Identification Descriptor: type NGUID, 16 bytes.
    pub const NIDT_NGUID: u8 = 2;
    pub const NIDL_NGUID: u8 = 16;
}
