//! A GICv3 Interrupt Translation Service (GICv3 §5.2, §6.3, registers §12.19) for
//! physical LPIs: the way a PCI function's MSI/MSI-X message (a write of an EventID
//! to GITS_TRANSLATER, tagged with the function's requester ID as DeviceID) becomes
//! an LPI pending on the vCPU of the event's collection.
//!
//! # Registers (two 64 KiB frames, QEMU `virt`'s layout)
//! - Control frame: GITS_CTLR (Enabled; Quiescent reads 1 while disabled: commands
//!   complete at once), GITS_IIDR, GITS_TYPER (Physical; ITT_entry_size 8 bytes;
//!   ID_bits 16 EventID bits; Devbits 16 DeviceID bits; PTA = 0, so a collection's
//!   target is a processor number; HCC = 0; CIL = 1 with CIDbits 8: ICIDs 0..=255;
//!   no virtual LPIs, no SEI), GITS_CBASER, GITS_CWRITER (Retry), GITS_CREADR
//!   (Stalled), GITS_BASER0 (device table, 8-byte entries), GITS_BASER1 (collection
//!   table, 8-byte entries), GITS_BASER2..7 (Type none, RAZ/WI), PIDR2 and CIDR0..3.
//!   64-bit registers take 32- and 64-bit accesses, the rest 32-bit ones.
//! - Translation frame: GITS_TRANSLATER at +0x1_0040, 16- or 32-bit writes. A PE's
//!   write carries no DeviceID and is ignored with a log line; messages come through
//!   [`SharedIts::message`].
//!
//! # What lives where
//! - **Guest memory**: the command queue (GITS_CBASER; read, never written) and the
//!   LPI configuration table (GICR_PROPBASER, read by the redistributors on
//!   MAPTI/MAPI, INV and INVALL, see `lpi`). The device table, the collection table
//!   and every ITT are guest memory the guest gives the ITS (GITS_BASER0/1, MAPD's
//!   ITT_addr): they are checked to lie inside guest RAM when a command uses them,
//!   and their entry counts bound DeviceIDs and ICIDs, but their contents are
//!   IMPLEMENTATION DEFINED and the ITS keeps its translations in hypervisor memory
//!   instead (the architecture lets an ITS cache them; software must not touch them
//!   while mapped), so a guest scribbling over them changes nothing.
//! - **Hypervisor memory**, bounded: at most [`limits::MAX_DEVICES`] mapped devices
//!   and [`limits::MAX_EVENTS`] mapped events in all (a MAPD or MAPTI beyond is a
//!   command error), one slot per ICID (256): a few tens of KiB at most. LPI pending
//!   state is the vGIC's (fixed size, see `lpi`).
//!
//! # Commands
//! MAPD, MAPC, MAPTI, MAPI, INT, CLEAR, DISCARD, INV, INVALL, SYNC, MOVI, MOVALL;
//! effects are immediate, so SYNC only checks its RDbase. Commands run when
//! GITS_CWRITER is written (or the ITS is enabled with work queued) and when
//! GITS_CREADR is read (a driver polls it until its commands are done), from
//! GITS_CREADR towards GITS_CWRITER, wrapping at the end of the queue, at most
//! [`limits::COMMANDS_PER_ACCESS`] per access, so a guest can neither make the ITS
//! loop nor keep a vCPU in it for long. A command error — an unknown or
//! virtual-LPI command, a DeviceID, EventID, ICID, pINTID or RDbase out of range, an
//! unmapped device or event, a table that is not valid or not in guest RAM, a
//! limit reached, a command that cannot be read — stalls the queue (GITS_TYPER.SEIS
//! = 0: no SError), as the architecture allows: GITS_CREADR keeps pointing at the
//! command and has Stalled set, the error is logged and counted
//! ([`Its::last_error`]). Writing GITS_CWRITER with Retry set tries the command
//! again; rewriting GITS_CBASER (with the ITS disabled) starts afresh.
//!
//! # Not modelled
//! Virtual LPIs (GICv4), Indirect (two-level) tables (GITS_BASER.Indirect is RAZ/WI),
//! GITS_TRANSLATER writes from a PE, the pending table (see `lpi`).
//!
//! # Saved state
//! `VITS` (see `save`): registers, devices, events and collections; the LPIs'
//! state is the vGIC's.

use alloc::collections::BTreeMap;
use alloc::sync::Arc;
use alloc::vec::Vec;

use arch::relax::TicketMutex as Mutex;
use tock_registers::{register_bitfields, LocalRegisterCopy};
use vdev::{AccessSize, GuestMemory, InterruptSink, MmioContext, MmioDevice, MmioError};

use crate::access::{read_part, write_part};
use crate::lpi::is_lpi;
use crate::mmio::SharedVgic;
use crate::regs::{id, iidr, intid};
use crate::vgic::Vgic;

/// Register offsets (from the ITS base).
pub mod reg {
    pub const CTLR: u64 = 0x0000;
    pub const IIDR: u64 = 0x0004;
    pub const TYPER: u64 = 0x0008;
    pub const CBASER: u64 = 0x0080;
    pub const CWRITER: u64 = 0x0088;
    pub const CREADR: u64 = 0x0090;
    pub const BASER: u64 = 0x0100;
    /// Number of GITS_BASER<n> registers.
    pub const BASER_COUNT: u64 = 8;
    /// The translation frame, 64 KiB after the control frame.
    pub const TRANSLATION_FRAME: u64 = 0x1_0000;
    pub const TRANSLATER: u64 = TRANSLATION_FRAME + 0x0040;
}

/// Size of both frames.
pub const FRAME_SIZE: u64 = 0x2_0000;

/// What the ITS implements and how much hypervisor memory it may take.
pub mod limits {
    /// DeviceID bits (GITS_TYPER.Devbits + 1): a PCI requester ID.
    pub const DEVICE_ID_BITS: u32 = 16;
    /// EventID bits (GITS_TYPER.ID_bits + 1).
    pub const EVENT_ID_BITS: u32 = 16;
    /// Collection ID bits (GITS_TYPER.CIDbits + 1, with CIL = 1).
    pub const COLLECTION_ID_BITS: u32 = 8;
    /// Bytes per ITT entry (GITS_TYPER.ITT_entry_size + 1).
    pub const ITT_ENTRY_SIZE: u64 = 8;
    /// Bytes per device and collection table entry (GITS_BASER.Entry_Size + 1).
    pub const TABLE_ENTRY_SIZE: u64 = 8;
    /// Devices mapped at once.
    pub const MAX_DEVICES: usize = 64;
    /// Events mapped at once, over every device.
    pub const MAX_EVENTS: usize = 4096;
    /// Bytes per command.
    pub const COMMAND_SIZE: u64 = 32;
    /// Commands run per register access (a GITS_CWRITER or GITS_CTLR write, or a
    /// GITS_CREADR read, which is how a driver waits for them): bounds the time a
    /// vCPU spends in the ITS (an INVALL reads up to [`MAX_EVENTS`] bytes).
    pub const COMMANDS_PER_ACCESS: u64 = 64;
    /// Bytes per command queue page (GITS_CBASER.Size counts 4 KiB pages).
    pub const QUEUE_PAGE: u64 = 4096;
}

register_bitfields! {u32,
    /// GITS_CTLR.
    pub GITS_CTLR [
        Enabled OFFSET(0) NUMBITS(1) [],
        Quiescent OFFSET(31) NUMBITS(1) []
    ]
}

register_bitfields! {u64,
    /// GITS_TYPER.
    pub GITS_TYPER [
        Physical OFFSET(0) NUMBITS(1) [],
        ITT_entry_size OFFSET(4) NUMBITS(4) [],
        ID_bits OFFSET(8) NUMBITS(5) [],
        Devbits OFFSET(13) NUMBITS(5) [],
        PTA OFFSET(19) NUMBITS(1) [],
        HCC OFFSET(24) NUMBITS(8) [],
        CIDbits OFFSET(32) NUMBITS(4) [],
        CIL OFFSET(36) NUMBITS(1) []
    ],
    /// GITS_CBASER.
    pub GITS_CBASER [
        Size OFFSET(0) NUMBITS(8) [],
        Shareability OFFSET(10) NUMBITS(2) [],
        Physical_Address OFFSET(12) NUMBITS(40) [],
        OuterCache OFFSET(53) NUMBITS(3) [],
        InnerCache OFFSET(59) NUMBITS(3) [],
        Valid OFFSET(63) NUMBITS(1) []
    ],
    /// GITS_CWRITER / GITS_CREADR.
    pub GITS_CQ [
        /// CWRITER.Retry / CREADR.Stalled.
        Flag OFFSET(0) NUMBITS(1) [],
        Offset OFFSET(5) NUMBITS(15) []
    ],
    /// GITS_BASER<n>.
    pub GITS_BASER [
        Size OFFSET(0) NUMBITS(8) [],
        Page_Size OFFSET(8) NUMBITS(2) [
            Size4K = 0,
            Size16K = 1,
            Size64K = 2
        ],
        Shareability OFFSET(10) NUMBITS(2) [],
        /// PA\[47:12\] (4 KiB pages); with 64 KiB pages bits \[15:12\] hold PA\[51:48\].
        Physical_Address OFFSET(12) NUMBITS(36) [],
        Entry_Size OFFSET(48) NUMBITS(5) [],
        OuterCache OFFSET(53) NUMBITS(3) [],
        Type OFFSET(56) NUMBITS(3) [
            None = 0,
            Devices = 1,
            Collections = 4
        ],
        InnerCache OFFSET(59) NUMBITS(3) [],
        Indirect OFFSET(62) NUMBITS(1) [],
        Valid OFFSET(63) NUMBITS(1) []
    ],
    /// Command doubleword 0.
    pub CMD0 [
        CommandType OFFSET(0) NUMBITS(8) [],
        DeviceID OFFSET(32) NUMBITS(32) []
    ],
    /// Command doubleword 1.
    pub CMD1 [
        /// MAPD: EventID bits minus one.
        Size OFFSET(0) NUMBITS(5) [],
        EventID OFFSET(0) NUMBITS(32) [],
        PINTID OFFSET(32) NUMBITS(32) []
    ],
    /// Command doubleword 2.
    pub CMD2 [
        ICID OFFSET(0) NUMBITS(16) [],
        /// MAPD: ITT_addr\[51:8\].
        ITT_addr OFFSET(8) NUMBITS(44) [],
        RDbase OFFSET(16) NUMBITS(36) [],
        V OFFSET(63) NUMBITS(1) []
    ],
    /// Command doubleword 3 (MOVALL).
    pub CMD3 [
        RDbase2 OFFSET(16) NUMBITS(36) []
    ]
}

/// Command opcodes (GICv3 §6.3).
pub mod opcode {
    pub const MOVI: u8 = 0x01;
    pub const INT: u8 = 0x03;
    pub const CLEAR: u8 = 0x04;
    pub const SYNC: u8 = 0x05;
    pub const MAPD: u8 = 0x08;
    pub const MAPC: u8 = 0x09;
    pub const MAPTI: u8 = 0x0A;
    pub const MAPI: u8 = 0x0B;
    pub const INV: u8 = 0x0C;
    pub const INVALL: u8 = 0x0D;
    pub const MOVALL: u8 = 0x0E;
    pub const DISCARD: u8 = 0x0F;
}

/// ITT_addr is 256-byte aligned.
const ITT_ALIGN_SHIFT: u32 = 8;

/// Why a command stalled the queue (or a message was dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItsError {
    /// An opcode this ITS does not implement (incl. every GICv4 command).
    UnknownCommand(u8),
    /// The command could not be read from guest memory at this address.
    QueueRead(u64),
    /// GITS_CWRITER points outside the queue.
    QueueOffset(u64),
    /// DeviceID beyond Devbits or the device table.
    DeviceOutOfRange(u32),
    /// The device (or collection) table is not valid or not inside guest RAM.
    Table(u8),
    /// MAPD Size beyond ID_bits.
    IttSize(u32),
    /// The ITT is not inside guest RAM.
    IttOutsideRam(u64),
    /// The DeviceID is not mapped.
    DeviceUnmapped(u32),
    /// EventID beyond the device's ITT.
    EventOutOfRange(u32, u32),
    /// No mapping for (DeviceID, EventID).
    EventUnmapped(u32, u32),
    /// ICID beyond CIDbits or the collection table.
    IcidOutOfRange(u32),
    /// The collection is not mapped.
    CollectionUnmapped(u32),
    /// pINTID is not an implemented LPI.
    LpiOutOfRange(u32),
    /// RDbase names no redistributor.
    RdbaseOutOfRange(u64),
    /// [`limits::MAX_DEVICES`] or [`limits::MAX_EVENTS`] reached.
    Limit,
    /// The ITS is disabled (a message to a disabled ITS is dropped).
    Disabled,
}

/// One event of a device: its LPI and collection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ite {
    lpi: u32,
    icid: u32,
}

/// A mapped device.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Device {
    /// EventID bits of its ITT (MAPD Size + 1).
    event_bits: u32,
    events: BTreeMap<u32, Ite>,
}

/// The ITS model (see the module documentation).
#[derive(Debug, Clone)]
pub struct Its {
    num_vcpus: usize,
    /// Guest RAM: (base, size) windows.
    ram: Vec<(u64, u64)>,
    enabled: bool,
    cbaser: u64,
    cwriter: u64,
    creadr: u64,
    stalled: bool,
    /// GITS_BASER0 (devices) and GITS_BASER1 (collections), writable fields.
    baser: [u64; 2],
    devices: BTreeMap<u32, Device>,
    /// ICID -> vCPU.
    collections: Vec<Option<usize>>,
    events: usize,
    errors: u64,
    last_error: Option<ItsError>,
}

fn typer() -> u64 {
    (GITS_TYPER::Physical::SET
        + GITS_TYPER::ITT_entry_size.val(limits::ITT_ENTRY_SIZE - 1)
        + GITS_TYPER::ID_bits.val(u64::from(limits::EVENT_ID_BITS) - 1)
        + GITS_TYPER::Devbits.val(u64::from(limits::DEVICE_ID_BITS) - 1)
        + GITS_TYPER::CIDbits.val(u64::from(limits::COLLECTION_ID_BITS) - 1)
        + GITS_TYPER::CIL::SET)
        .value
}

/// The fields of GITS_CBASER a guest may write.
fn cbaser_writable() -> u64 {
    GITS_CBASER::Size.mask << GITS_CBASER::Size.shift
        | GITS_CBASER::Shareability.mask << GITS_CBASER::Shareability.shift
        | GITS_CBASER::Physical_Address.mask << GITS_CBASER::Physical_Address.shift
        | GITS_CBASER::OuterCache.mask << GITS_CBASER::OuterCache.shift
        | GITS_CBASER::InnerCache.mask << GITS_CBASER::InnerCache.shift
        | GITS_CBASER::Valid.mask << GITS_CBASER::Valid.shift
}

/// The fields of GITS_BASER<n> a guest may write (Type, Entry_Size are read-only,
/// Indirect RAZ/WI).
fn baser_writable() -> u64 {
    GITS_BASER::Size.mask << GITS_BASER::Size.shift
        | GITS_BASER::Page_Size.mask << GITS_BASER::Page_Size.shift
        | GITS_BASER::Shareability.mask << GITS_BASER::Shareability.shift
        | GITS_BASER::Physical_Address.mask << GITS_BASER::Physical_Address.shift
        | GITS_BASER::OuterCache.mask << GITS_BASER::OuterCache.shift
        | GITS_BASER::InnerCache.mask << GITS_BASER::InnerCache.shift
        | GITS_BASER::Valid.mask << GITS_BASER::Valid.shift
}

/// A table a GITS_BASER describes: where, and how many entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Table {
    base: u64,
    entries: u64,
}

impl Table {
    fn of(baser: u64) -> Option<Table> {
        let b = LocalRegisterCopy::<u64, GITS_BASER::Register>::new(baser);
        if !b.is_set(GITS_BASER::Valid) {
            return None;
        }
        let field = b.read(GITS_BASER::Physical_Address) << GITS_BASER::Physical_Address.shift;
        let (page, base) = match b.read_as_enum(GITS_BASER::Page_Size) {
            Some(GITS_BASER::Page_Size::Value::Size4K) => (0x1000u64, field),
            Some(GITS_BASER::Page_Size::Value::Size16K) => (0x4000, field & !0x3FFF),
            // 64 KiB pages: field bits [15:12] are PA[51:48].
            _ => (0x1_0000, (field & !0xFFFF) | ((field & 0xF000) << 36)),
        };
        let pages = b.read(GITS_BASER::Size) + 1;
        Some(Table {
            base,
            entries: pages * page / limits::TABLE_ENTRY_SIZE,
        })
    }
}

impl Its {
    /// An ITS for a VM with `num_vcpus` vCPUs and guest RAM `ram` (base, size)
    /// windows, in its reset state (disabled, nothing mapped).
    pub fn new(num_vcpus: usize, ram: &[(u64, u64)]) -> Self {
        Self {
            num_vcpus,
            ram: ram.to_vec(),
            enabled: false,
            cbaser: 0,
            cwriter: 0,
            creadr: 0,
            stalled: false,
            baser: [0; 2],
            devices: BTreeMap::new(),
            collections: alloc::vec![None; 1 << limits::COLLECTION_ID_BITS],
            events: 0,
            errors: 0,
            last_error: None,
        }
    }

    /// Back to the reset state (a VM reset).
    pub fn reset(&mut self) {
        *self = Its::new(self.num_vcpus, &self.ram.clone());
    }

    /// Command errors (and dropped messages) so far.
    pub fn errors(&self) -> u64 {
        self.errors
    }

    /// The last command error or dropped message.
    pub fn last_error(&self) -> Option<ItsError> {
        self.last_error
    }

    /// GITS_CREADR.Stalled.
    pub fn stalled(&self) -> bool {
        self.stalled
    }

    fn in_ram(&self, base: u64, len: u64) -> bool {
        let Some(end) = base.checked_add(len) else {
            return false;
        };
        self.ram
            .iter()
            .any(|&(b, s)| base >= b && end <= b.saturating_add(s))
    }

    fn record(&mut self, e: ItsError) {
        self.errors += 1;
        self.last_error = Some(e);
    }

    /// Reads an ITS register (the control frame and the translation frame).
    pub fn read(&self, offset: u64, size: AccessSize) -> Result<u64, MmioError> {
        let word = offset & !7;
        let within = offset & 7;
        check_access(offset, size, word)?;
        Ok(match word {
            reg::CTLR if offset == reg::CTLR => {
                let mut v = LocalRegisterCopy::<u32, GITS_CTLR::Register>::new(0);
                v.modify(GITS_CTLR::Enabled.val(u32::from(self.enabled)));
                v.modify(GITS_CTLR::Quiescent.val(u32::from(!self.enabled)));
                u64::from(v.get())
            }
            reg::CTLR => u64::from(iidr::VALUE),
            reg::TYPER => read_part(typer(), within, size),
            reg::CBASER => read_part(self.cbaser, within, size),
            reg::CWRITER => read_part(self.cwriter, within, size),
            reg::CREADR => read_part(self.creadr | u64::from(self.stalled), within, size),
            b if (reg::BASER..reg::BASER + 8 * reg::BASER_COUNT).contains(&b) => {
                read_part(self.baser_value((b - reg::BASER) / 8), within, size)
            }
            _ if offset & !3 == id::PIDR2 => u64::from(id::PIDR2_GICV3),
            _ => match id::CIDR.iter().find(|(o, _)| *o == offset & !3) {
                Some((_, v)) => u64::from(*v),
                // GITS_TRANSLATER is write-only; the rest is reserved.
                None => 0,
            },
        })
    }

    fn baser_value(&self, n: u64) -> u64 {
        let ty = match n {
            0 => GITS_BASER::Type::Devices,
            1 => GITS_BASER::Type::Collections,
            _ => return 0,
        };
        let mut v = LocalRegisterCopy::<u64, GITS_BASER::Register>::new(self.baser[n as usize]);
        v.modify(ty + GITS_BASER::Entry_Size.val(limits::TABLE_ENTRY_SIZE - 1));
        v.get()
    }

    /// Writes an ITS register; commands run on GITS_CWRITER and GITS_CTLR writes.
    pub fn write(
        &mut self,
        offset: u64,
        size: AccessSize,
        value: u64,
        vgic: &mut Vgic,
        mem: &dyn GuestMemory,
    ) -> Result<(), MmioError> {
        let word = offset & !7;
        let within = offset & 7;
        check_access(offset, size, word)?;
        let value = value & size.mask();
        match word {
            reg::CTLR if offset == reg::CTLR => {
                let v = LocalRegisterCopy::<u32, GITS_CTLR::Register>::new(value as u32);
                self.enabled = v.is_set(GITS_CTLR::Enabled);
                self.process(vgic, mem);
            }
            reg::CBASER if self.enabled => {
                log::warn!("its: GITS_CBASER written while enabled; ignored");
            }
            reg::CBASER => {
                self.cbaser = write_part(self.cbaser, within, size, value) & cbaser_writable();
                self.creadr = 0;
                self.stalled = false;
            }
            reg::CWRITER => {
                let v = write_part(self.cwriter, within, size, value);
                let v = LocalRegisterCopy::<u64, GITS_CQ::Register>::new(v);
                self.cwriter = v.read(GITS_CQ::Offset) << GITS_CQ::Offset.shift;
                if v.is_set(GITS_CQ::Flag) && self.stalled {
                    self.stalled = false;
                }
                self.process(vgic, mem);
            }
            b if (reg::BASER..reg::BASER + 2 * 8).contains(&b) => {
                let n = ((b - reg::BASER) / 8) as usize;
                if self.enabled {
                    log::warn!("its: GITS_BASER{n} written while enabled; ignored");
                } else {
                    let v = write_part(self.baser[n], within, size, value) & baser_writable();
                    let mut v = LocalRegisterCopy::<u64, GITS_BASER::Register>::new(v);
                    if v.read_as_enum::<GITS_BASER::Page_Size::Value>(GITS_BASER::Page_Size)
                        .is_none()
                    {
                        // The reserved encoding reads back as the largest page size.
                        v.modify(GITS_BASER::Page_Size::Size64K);
                    }
                    self.baser[n] = v.get();
                }
            }
            _ if offset == reg::TRANSLATER => {
                log::warn!(
                    "its: GITS_TRANSLATER written by a vCPU (EventID {value:#x}): no DeviceID; ignored"
                );
            }
            reg::CTLR | reg::TYPER | reg::CREADR => {}
            b if (reg::BASER..reg::BASER + 8 * reg::BASER_COUNT).contains(&b) => {}
            _ => log::debug!("its: write to read-only or reserved offset {offset:#x} ignored"),
        }
        Ok(())
    }

    /// Runs more of the queued commands (what a GITS_CREADR read does before it
    /// answers).
    pub fn resume(&mut self, vgic: &mut Vgic, mem: &dyn GuestMemory) {
        self.process(vgic, mem);
    }

    /// Runs the queued commands, from GITS_CREADR towards GITS_CWRITER.
    fn process(&mut self, vgic: &mut Vgic, mem: &dyn GuestMemory) {
        let cb = LocalRegisterCopy::<u64, GITS_CBASER::Register>::new(self.cbaser);
        if !self.enabled || !cb.is_set(GITS_CBASER::Valid) || self.stalled {
            return;
        }
        let base = cb.read(GITS_CBASER::Physical_Address) << GITS_CBASER::Physical_Address.shift;
        let size = (cb.read(GITS_CBASER::Size) + 1) * limits::QUEUE_PAGE;
        if self.cwriter >= size || self.creadr >= size {
            self.stall(ItsError::QueueOffset(self.cwriter));
            return;
        }
        for _ in 0..limits::COMMANDS_PER_ACCESS {
            if self.creadr == self.cwriter {
                return;
            }
            let at = base.wrapping_add(self.creadr);
            let mut raw = [0u8; limits::COMMAND_SIZE as usize];
            if !self.in_ram(at, limits::COMMAND_SIZE) || mem.read(at, &mut raw).is_err() {
                self.stall(ItsError::QueueRead(at));
                return;
            }
            let dw: [u64; 4] = core::array::from_fn(|i| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&raw[8 * i..8 * i + 8]);
                u64::from_le_bytes(b)
            });
            if let Err(e) = self.execute(dw, vgic, mem) {
                self.stall(e);
                return;
            }
            self.creadr = (self.creadr + limits::COMMAND_SIZE) % size;
        }
    }

    fn stall(&mut self, e: ItsError) {
        log::warn!(
            "its: command error {e:?} at GITS_CREADR {:#x}: the command queue stalls",
            self.creadr
        );
        self.record(e);
        self.stalled = true;
    }

    fn device_table(&self) -> Result<Table, ItsError> {
        Table::of(self.baser[0])
            .filter(|t| self.in_ram(t.base, t.entries * limits::TABLE_ENTRY_SIZE))
            .ok_or(ItsError::Table(0))
    }

    fn check_icid(&self, icid: u32) -> Result<(), ItsError> {
        let t = Table::of(self.baser[1])
            .filter(|t| self.in_ram(t.base, t.entries * limits::TABLE_ENTRY_SIZE))
            .ok_or(ItsError::Table(1))?;
        if u64::from(icid) >= t.entries || icid as usize >= self.collections.len() {
            return Err(ItsError::IcidOutOfRange(icid));
        }
        Ok(())
    }

    fn collection(&self, icid: u32) -> Result<usize, ItsError> {
        self.check_icid(icid)?;
        self.collections[icid as usize].ok_or(ItsError::CollectionUnmapped(icid))
    }

    fn check_device(&self, dev: u32) -> Result<(), ItsError> {
        let t = self.device_table()?;
        if dev >> limits::DEVICE_ID_BITS != 0 || u64::from(dev) >= t.entries {
            return Err(ItsError::DeviceOutOfRange(dev));
        }
        Ok(())
    }

    /// The mapping of (`dev`, `event`).
    fn lookup(&self, dev: u32, event: u32) -> Result<Ite, ItsError> {
        let d = self
            .devices
            .get(&dev)
            .ok_or(ItsError::DeviceUnmapped(dev))?;
        if event >> d.event_bits != 0 {
            return Err(ItsError::EventOutOfRange(dev, event));
        }
        d.events
            .get(&event)
            .copied()
            .ok_or(ItsError::EventUnmapped(dev, event))
    }

    fn rdbase(&self, rd: u64) -> Result<usize, ItsError> {
        if rd < self.num_vcpus as u64 {
            Ok(rd as usize)
        } else {
            Err(ItsError::RdbaseOutOfRange(rd))
        }
    }

    fn execute(
        &mut self,
        dw: [u64; 4],
        vgic: &mut Vgic,
        mem: &dyn GuestMemory,
    ) -> Result<(), ItsError> {
        let d0 = LocalRegisterCopy::<u64, CMD0::Register>::new(dw[0]);
        let d1 = LocalRegisterCopy::<u64, CMD1::Register>::new(dw[1]);
        let d2 = LocalRegisterCopy::<u64, CMD2::Register>::new(dw[2]);
        let d3 = LocalRegisterCopy::<u64, CMD3::Register>::new(dw[3]);
        let dev = d0.read(CMD0::DeviceID) as u32;
        let event = d1.read(CMD1::EventID) as u32;
        let icid = d2.read(CMD2::ICID) as u32;
        match d0.read(CMD0::CommandType) as u8 {
            opcode::MAPD => {
                self.check_device(dev)?;
                let valid = d2.is_set(CMD2::V);
                let bits = d1.read(CMD1::Size) as u32 + 1;
                if valid {
                    // Checked before anything changes: a failed MAPD leaves the
                    // device as it was.
                    if bits > limits::EVENT_ID_BITS {
                        return Err(ItsError::IttSize(bits - 1));
                    }
                    let itt = d2.read(CMD2::ITT_addr) << ITT_ALIGN_SHIFT;
                    if !self.in_ram(itt, (1u64 << bits) * limits::ITT_ENTRY_SIZE) {
                        return Err(ItsError::IttOutsideRam(itt));
                    }
                    if !self.devices.contains_key(&dev) && self.devices.len() >= limits::MAX_DEVICES
                    {
                        return Err(ItsError::Limit);
                    }
                }
                if let Some(old) = self.devices.remove(&dev) {
                    self.events -= old.events.len();
                }
                if !valid {
                    return Ok(());
                }
                self.devices.insert(
                    dev,
                    Device {
                        event_bits: bits,
                        events: BTreeMap::new(),
                    },
                );
            }
            opcode::MAPC => {
                self.check_icid(icid)?;
                let target = if d2.is_set(CMD2::V) {
                    Some(self.rdbase(d2.read(CMD2::RDbase))?)
                } else {
                    None
                };
                self.collections[icid as usize] = target;
            }
            op @ (opcode::MAPTI | opcode::MAPI) => {
                self.check_device(dev)?;
                let lpi = if op == opcode::MAPTI {
                    d1.read(CMD1::PINTID) as u32
                } else {
                    event
                };
                let d = self
                    .devices
                    .get(&dev)
                    .ok_or(ItsError::DeviceUnmapped(dev))?;
                if event >> d.event_bits != 0 {
                    return Err(ItsError::EventOutOfRange(dev, event));
                }
                if !is_lpi(lpi) {
                    return Err(ItsError::LpiOutOfRange(lpi));
                }
                self.check_icid(icid)?;
                let fresh = !d.events.contains_key(&event);
                if fresh && self.events >= limits::MAX_EVENTS {
                    return Err(ItsError::Limit);
                }
                if let Some(d) = self.devices.get_mut(&dev) {
                    d.events.insert(event, Ite { lpi, icid });
                }
                self.events += usize::from(fresh);
                // The configuration table of the collection's redistributor (every
                // redistributor's, when it is not mapped yet: guests share one).
                let rd = self.collections[icid as usize].unwrap_or(0);
                let _ = vgic.refresh_lpi(lpi, rd, mem);
            }
            opcode::INT => {
                let ite = self.lookup(dev, event)?;
                let rd = self.collection(ite.icid)?;
                if let Err(e) = vgic.set_lpi_pending(ite.lpi, rd) {
                    log::debug!("its: INT of LPI {} dropped: {e:?}", ite.lpi);
                }
            }
            opcode::CLEAR => {
                let ite = self.lookup(dev, event)?;
                self.collection(ite.icid)?;
                let _ = vgic.clear_lpi_pending(ite.lpi);
            }
            opcode::DISCARD => {
                let ite = self.lookup(dev, event)?;
                let _ = vgic.clear_lpi_pending(ite.lpi);
                if let Some(d) = self.devices.get_mut(&dev) {
                    d.events.remove(&event);
                    self.events -= 1;
                }
            }
            opcode::INV => {
                let ite = self.lookup(dev, event)?;
                let rd = self.collection(ite.icid)?;
                let _ = vgic.refresh_lpi(ite.lpi, rd, mem);
            }
            opcode::INVALL => {
                let rd = self.collection(icid)?;
                for d in self.devices.values() {
                    for ite in d.events.values().filter(|i| i.icid == icid) {
                        let _ = vgic.refresh_lpi(ite.lpi, rd, mem);
                    }
                }
            }
            opcode::SYNC => {
                self.rdbase(d2.read(CMD2::RDbase))?;
            }
            opcode::MOVI => {
                let ite = self.lookup(dev, event)?;
                self.collection(ite.icid)?;
                let to = self.collection(icid)?;
                if let Some(i) = self
                    .devices
                    .get_mut(&dev)
                    .and_then(|d| d.events.get_mut(&event))
                {
                    i.icid = icid;
                }
                let _ = vgic.move_lpi(ite.lpi, to);
            }
            opcode::MOVALL => {
                let from = self.rdbase(d2.read(CMD2::RDbase))?;
                let to = self.rdbase(d3.read(CMD3::RDbase2))?;
                let _ = vgic.move_all_lpis(from, to);
            }
            op => return Err(ItsError::UnknownCommand(op)),
        }
        Ok(())
    }

    /// A message from device `dev` carrying EventID `event` (a write to
    /// GITS_TRANSLATER): the event's LPI becomes pending on its collection's vCPU
    /// through `irq`. A message the ITS cannot translate is dropped, logged and
    /// counted, as the architecture says.
    pub fn translate(
        &mut self,
        dev: u32,
        event: u32,
        irq: &mut dyn InterruptSink,
    ) -> Result<(), ItsError> {
        let r = if self.enabled {
            self.lookup(dev, event)
                .and_then(|ite| Ok((ite.lpi, self.collection(ite.icid)?)))
        } else {
            Err(ItsError::Disabled)
        };
        match r {
            Ok((lpi, rd)) => {
                irq.set_lpi_pending(lpi, rd);
                Ok(())
            }
            Err(e) => {
                log::warn!("its: message from DeviceID {dev:#x} EventID {event:#x} dropped: {e:?}");
                self.record(e);
                Err(e)
            }
        }
    }
}

/// Checks alignment and width: 64-bit registers (TYPER, CBASER, CWRITER, CREADR,
/// BASER<n>) take 32- and 64-bit accesses, GITS_TRANSLATER 16- and 32-bit ones,
/// everything else 32-bit ones.
fn check_access(offset: u64, size: AccessSize, word: u64) -> Result<(), MmioError> {
    if !offset.is_multiple_of(size.bytes()) {
        return Err(MmioError::Unaligned { offset });
    }
    let wide = matches!(word, reg::TYPER | reg::CBASER | reg::CWRITER | reg::CREADR)
        || (reg::BASER..reg::BASER + 8 * reg::BASER_COUNT).contains(&word);
    let ok = match size {
        AccessSize::Word => true,
        AccessSize::Double => wide,
        AccessSize::Half => offset == reg::TRANSLATER,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(MmioError::UnsupportedSize { offset, size })
    }
}

/// One VM's ITS, shared by the MMIO bus (its frames) and the root complex (its
/// messages); `Send + Sync`. Lock order: the ITS, then the vGIC.
#[derive(Clone)]
pub struct SharedIts {
    its: Arc<Mutex<Its>>,
    vgic: SharedVgic,
    base: u64,
}

impl SharedIts {
    /// An ITS at guest address `base` delivering into `vgic`, which gets LPI support.
    pub fn new(its: Its, vgic: SharedVgic, base: u64) -> Self {
        vgic.lock().enable_lpi_support();
        Self {
            its: Arc::new(Mutex::new(its)),
            vgic,
            base,
        }
    }

    /// Locks the model.
    pub fn lock(&self) -> spin::mutex::TicketMutexGuard<'_, Its> {
        self.its.lock()
    }

    /// A message from the PCI function with requester ID `requester` (the
    /// DeviceID): a DWORD write of `data` (the EventID) to `address`. Returns whether
    /// `address` is this ITS's GITS_TRANSLATER (the message reached it, translated
    /// or, if the ITS cannot translate it, dropped with a log line).
    pub fn message(
        &self,
        requester: u16,
        address: u64,
        data: u32,
        irq: &mut dyn InterruptSink,
    ) -> bool {
        if address != self.base + reg::TRANSLATER {
            return false;
        }
        let _ = self.its.lock().translate(u32::from(requester), data, irq);
        true
    }
}

impl MmioDevice for SharedIts {
    fn read(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        let mut its = self.its.lock();
        if offset & !7 == reg::CREADR {
            let mut vgic = self.vgic.lock();
            its.resume(&mut vgic, &*ctx.mem);
        }
        its.read(offset, size)
    }

    fn write(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        let mut its = self.its.lock();
        let mut vgic = self.vgic.lock();
        its.write(offset, size, value, &mut vgic, &*ctx.mem)
    }

    fn reset(&mut self, _irq: &mut dyn InterruptSink) {
        self.its.lock().reset();
    }
}

/// The INTID of the first LPI, for callers sizing LPI ranges.
pub const LPI_FIRST: u32 = intid::LPI_FIRST;

mod save;

#[cfg(test)]
mod tests;
