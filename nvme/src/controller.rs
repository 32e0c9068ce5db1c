//! The controller: BAR0 registers, queues, command execution and the asynchronous
//! data path.
//!
//! A doorbell write validates the value, then runs the controller: commands are
//! fetched from submission queues, admin commands are answered at once (an
//! Asynchronous Event Request is held), I/O commands are validated (namespace,
//! LBA range, transfer size, PRPs) and become backend operations through bounce
//! buffers the controller owns. A command completes when its last backend
//! operation does, from [`Controller::poll`] (or inside the doorbell write only when
//! the backend itself completed synchronously). Completions wait in the controller
//! while their completion queue is full, so at most [`MAX_IN_FLIGHT`] commands are
//! held between fetch and posting, and a controller reset drops them: a backend
//! operation still running after the reset finds no command and only hands its
//! buffer back, so it can never write guest RAM.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;

use tock_registers::LocalRegisterCopy;
use vdev::{
    AccessSize, AsyncBlock, BlockError, BlockOp, Completion, DmaLimits, DmaSegment, GuestMemory,
    MmioError, Submit, SECTOR_SIZE,
};

use crate::defs::{
    admin, aer, entry, feature, identify, io, log_page, reg, Status, AQA, CAP, CC, CSTS, VS,
};
use crate::prp::{self, Segment};

/// How the controller raises interrupts: one MSI-X vector per completion queue (a PCI
/// function adapts this to its MSI-X table and pending bits).
pub trait Interrupts {
    /// Signals interrupt vector `vector`.
    fn signal(&mut self, vector: u16);
}

/// Size of BAR0: the registers and the doorbells of up to 1023 queue pairs at the
/// 4-byte stride.
pub const BAR0_SIZE: u64 = 0x4000;
/// Logical block size of the namespace.
pub const LBA_BYTES: u64 = SECTOR_SIZE;
/// Log2 of [`LBA_BYTES`].
const LBA_SHIFT: u32 = 9;
/// Memory page size range: 4 KiB .. 64 KiB (CAP.MPSMIN = 0, CAP.MPSMAX = 4).
const MPSMIN: u32 = 0;
const MPSMAX: u32 = 4;
const MIN_PAGE: u64 = 4096;
/// Maximum Data Transfer Size as a power of two of the minimum page size: 1 MiB,
/// so that a 1 MiB request is one command rather than eight (each command costs
/// the guest a doorbell exit and an interrupt). What a command may cost the
/// controller stays bounded: its PRP walk reads at most `1 MiB / page` entries
/// (three list pages at 4 KiB pages), its segment list holds at most as many runs
/// (4 KiB), and data copied through bounce buffers still moves in
/// [`CHUNK_BYTES`] pieces.
pub const MDTS: u8 = 8;
/// The longest transfer one command may carry (1 MiB).
pub const MAX_TRANSFER: u64 = MIN_PAGE << MDTS;
/// Most logical blocks one Write Zeroes may cover (its NLB field is 16 bits).
const MAX_WRITE_ZEROES_BLOCKS: u64 = 1 << 16;
/// Most commands held between fetch and the posting of their completion.
pub const MAX_IN_FLIGHT: usize = 128;
/// Bytes in one bounce buffer (the longest single backend operation).
pub const CHUNK_BYTES: usize = 128 << 10;
/// Most operations moving data straight to or from guest RAM at once.
pub const MAX_DMA_OPS: usize = 64;
/// Most bounce buffers lent to the backend at once.
pub const MAX_BUFFERS: usize = 16;
/// Largest queue (entries) CAP.MQES allows.
pub const MAX_QUEUE_ENTRIES: u32 = 4096;
/// Most I/O queue pairs a controller can have (doorbells must fit in [`BAR0_SIZE`]).
pub const MAX_IO_QUEUES: u16 = 1022;
/// Error Information log entries kept (ELPE + 1).
pub const ERROR_LOG_ENTRIES: usize = 16;
/// CAP.TO: 500 ms units the host waits for CSTS.RDY at most (the model is immediate).
const READY_TIMEOUT: u64 = 2;
/// Doorbell stride in bytes (CAP.DSTRD = 0).
const DOORBELL_STRIDE: u64 = 4;
/// The namespace's ID.
pub const NSID: u32 = 1;
/// NSID value meaning every namespace.
const NSID_ALL: u32 = 0xffff_ffff;
/// CC bits the host may set.
const CC_WRITABLE: u32 = 0x00ff_fff1;

/// The device's fixed identity and limits.
#[derive(Debug, Clone)]
pub struct Config {
    /// I/O submission/completion queue pairs (the VM's vCPUs), 1..=[`MAX_IO_QUEUES`].
    pub io_queues: u16,
    /// Interrupt vectors (MSI-X table entries), at least 1.
    pub vectors: u16,
    /// Entries in the largest queue the host may create (CAP.MQES + 1), 2..=4096.
    pub max_queue_entries: u32,
    /// PCI Vendor ID and Subsystem Vendor ID reported by Identify Controller.
    pub vendor_id: u16,
    pub subsystem_vendor_id: u16,
    /// Serial Number and Model Number (ASCII, space padded).
    pub serial: Vec<u8>,
    pub model: Vec<u8>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            io_queues: 1,
            vectors: 2,
            max_queue_entries: 1024,
            vendor_id: 0,
            subsystem_vendor_id: 0,
            serial: b"RAYOS-NVME-0".to_vec(),
            model: b"RayOS EL2 NVMe disk".to_vec(),
        }
    }
}

/// A submission queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Sq {
    pub base: u64,
    pub size: u16,
    pub head: u16,
    pub tail: u16,
    pub cqid: u16,
}

/// A completion entry waiting for room in its queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cqe {
    pub dw0: u32,
    pub sqid: u16,
    pub cid: u16,
    pub status: u16,
}

/// A completion queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cq {
    pub base: u64,
    pub size: u16,
    pub head: u16,
    pub tail: u16,
    pub phase: bool,
    pub ien: bool,
    pub iv: u16,
    pub pending: VecDeque<Cqe>,
}

impl Cq {
    fn full(&self) -> bool {
        (self.tail + 1) % self.size == self.head
    }
}

/// What an I/O command does with the backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    WriteZeroes,
    Flush,
}

/// An I/O command between fetch and completion.
struct Cmd {
    sqid: u16,
    cid: u16,
    /// The submission queue entry, saved so a restored controller can run it again.
    sqe: [u8; entry::SQE_BYTES],
    kind: Kind,
    offset: u64,
    len: u64,
    segs: Vec<Segment>,
    submitted: u64,
    outstanding: u32,
    status: Status,
    /// A flush follows the data (FUA, or the write cache is off).
    flush_after: bool,
    flush_started: bool,
}

impl Cmd {
    fn finished(&self) -> bool {
        self.outstanding == 0
            && self.submitted >= self.len
            && (!self.flush_after || self.flush_started || self.status != Status::SUCCESS)
            && (self.kind != Kind::Flush || self.flush_started)
    }
}

/// Whose backend operation a tag is.
#[derive(Clone, Copy)]
enum Owner {
    Cmd(u64),
    Shutdown,
}

/// One backend operation.
struct Piece {
    owner: Owner,
    /// Byte offset into the command's data.
    at: u64,
    /// The backend moves this piece's data straight to or from guest RAM
    /// (`submit_dma`): nothing to copy on completion, and a reset must wait for it.
    dma: bool,
}

/// Shutdown progress (CSTS.SHST).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shutdown {
    None,
    /// Waiting for commands to finish, then the flush.
    Draining,
    Flushing,
    Complete,
}

/// Current values of the features the model keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Features {
    pub arbitration: u32,
    pub power_management: u32,
    pub temperature_threshold: u32,
    pub error_recovery: u32,
    pub write_cache: bool,
    /// Number of Queues allocated (0's based SQ and CQ counts), once set.
    pub queues: Option<(u16, u16)>,
    pub coalescing: u32,
    pub write_atomicity: u32,
    pub async_event_config: u32,
    /// Coalescing Disable, per interrupt vector.
    pub coalescing_disabled: Vec<bool>,
}

impl Features {
    fn new(vectors: u16) -> Self {
        Features {
            arbitration: 0,
            power_management: 0,
            temperature_threshold: feature::DEFAULT_TEMPERATURE_THRESHOLD,
            error_recovery: 0,
            write_cache: true,
            queues: None,
            coalescing: 0,
            write_atomicity: 0,
            async_event_config: 0,
            coalescing_disabled: vec![false; usize::from(vectors)],
        }
    }
}

/// One Error Information log entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ErrorEntry {
    pub count: u64,
    pub sqid: u16,
    pub cid: u16,
    pub status: u16,
}

/// SMART / Health counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Smart {
    pub blocks_read: u64,
    pub blocks_written: u64,
    pub read_commands: u64,
    pub write_commands: u64,
}

/// An NVMe controller with one namespace over backend `B`.
pub struct Controller<B: AsyncBlock> {
    pub(crate) backend: B,
    pub(crate) cfg: Config,
    pub(crate) cc: u32,
    pub(crate) csts: u32,
    pub(crate) aqa: u32,
    pub(crate) asq: u64,
    pub(crate) acq: u64,
    pub(crate) intms: u32,
    /// Submission and completion queues by ID (0 is the admin queue).
    pub(crate) sqs: Vec<Option<Sq>>,
    pub(crate) cqs: Vec<Option<Cq>>,
    pub(crate) features: Features,
    /// Command IDs of outstanding Asynchronous Event Requests.
    pub(crate) aer_held: Vec<u16>,
    /// Events not reported yet (completion DW0 values).
    pub(crate) aer_pending: VecDeque<u32>,
    /// Error events are masked until the host reads the Error Information log.
    pub(crate) aer_error_masked: bool,
    pub(crate) errors: VecDeque<ErrorEntry>,
    pub(crate) error_count: u64,
    pub(crate) smart: Smart,
    shutdown: Shutdown,
    /// I/O commands held, by arrival number.
    cmds: BTreeMap<u64, Cmd>,
    next_cmd: u64,
    /// Commands of a restored state to run before fetching more: (SQ ID, entry).
    pub(crate) replay: VecDeque<(u16, [u8; entry::SQE_BYTES])>,
    /// Backend operations not completed yet, by tag (some orphaned by a reset).
    pieces: BTreeMap<u64, Piece>,
    next_tag: u64,
    /// Completions a synchronous backend returned from `submit`.
    done: VecDeque<Completion>,
    pool: Vec<Vec<u8>>,
    lent: usize,
    /// Operations started with `submit_dma` and not completed.
    dma_out: usize,
    /// Vectors with completions posted since the last signal.
    to_signal: Vec<u16>,
    scratch: Vec<Segment>,
    /// The guest RAM of the piece being submitted with `submit_dma`.
    dma_segs: Vec<DmaSegment>,
}

/// What an admin command came to.
enum Outcome {
    Done(Status, u32),
    /// An Asynchronous Event Request, held.
    Held,
}

fn dw(sqe: &[u8; entry::SQE_BYTES], at: usize) -> u32 {
    u32::from_le_bytes([sqe[at], sqe[at + 1], sqe[at + 2], sqe[at + 3]])
}

fn qw(sqe: &[u8; entry::SQE_BYTES], at: usize) -> u64 {
    u64::from(dw(sqe, at)) | u64::from(dw(sqe, at + 4)) << 32
}

fn cdw(sqe: &[u8; entry::SQE_BYTES], n: usize) -> u32 {
    dw(sqe, entry::CDW10 + (n - 10) * 4)
}

fn put(buf: &mut [u8], at: usize, bytes: &[u8]) {
    buf[at..at + bytes.len()].copy_from_slice(bytes);
}

/// `text` space-padded to `len` bytes.
fn ascii(buf: &mut [u8], at: usize, len: usize, text: &[u8]) {
    buf[at..at + len].fill(b' ');
    let n = text.len().min(len);
    buf[at..at + n].copy_from_slice(&text[..n]);
}

/// Whether `new` lies on the circular path from `from` to `to` (inclusive).
fn within(from: u16, to: u16, new: u16, size: u16) -> bool {
    let dist = |a: u16, b: u16| (b + size - a) % size;
    dist(from, new) <= dist(from, to)
}

impl<B: AsyncBlock> Controller<B> {
    /// A controller at reset over `backend`; `cfg`'s limits are clamped to what the
    /// model supports.
    pub fn new(backend: B, mut cfg: Config) -> Self {
        cfg.io_queues = cfg.io_queues.clamp(1, MAX_IO_QUEUES);
        cfg.vectors = cfg.vectors.max(1);
        cfg.max_queue_entries = cfg.max_queue_entries.clamp(2, MAX_QUEUE_ENTRIES);
        let queues = usize::from(cfg.io_queues) + 1;
        let vectors = cfg.vectors;
        Controller {
            backend,
            cfg,
            cc: 0,
            csts: 0,
            aqa: 0,
            asq: 0,
            acq: 0,
            intms: 0,
            sqs: vec![None; queues],
            cqs: vec![None; queues],
            features: Features::new(vectors),
            aer_held: Vec::new(),
            aer_pending: VecDeque::new(),
            aer_error_masked: false,
            errors: VecDeque::new(),
            error_count: 0,
            smart: Smart::default(),
            shutdown: Shutdown::None,
            cmds: BTreeMap::new(),
            next_cmd: 0,
            replay: VecDeque::new(),
            pieces: BTreeMap::new(),
            next_tag: 0,
            done: VecDeque::new(),
            pool: Vec::new(),
            lent: 0,
            dma_out: 0,
            to_signal: Vec::new(),
            scratch: Vec::new(),
            dma_segs: Vec::new(),
        }
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// I/O commands held (fetched, not completed).
    pub fn in_flight(&self) -> usize {
        self.cmds.len() + self.replay.len()
    }

    /// Backend operations not completed yet (including ones a reset orphaned).
    pub fn backend_ops(&self) -> usize {
        self.pieces.len()
    }

    /// Whether [`Self::poll`] has something to do.
    pub fn has_work(&self) -> bool {
        self.backend.has_completions() || !self.done.is_empty() || !self.replay.is_empty()
    }

    fn cap(&self) -> u64 {
        let mut cap = LocalRegisterCopy::<u64, CAP::Register>::new(0);
        cap.modify(
            CAP::MQES.val(u64::from(self.cfg.max_queue_entries - 1))
                + CAP::CQR::SET
                + CAP::TO.val(READY_TIMEOUT)
                + CAP::DSTRD.val(0)
                + CAP::CSS::Nvm
                + CAP::MPSMIN.val(u64::from(MPSMIN))
                + CAP::MPSMAX.val(u64::from(MPSMAX)),
        );
        cap.get()
    }

    fn cc_reg(&self) -> LocalRegisterCopy<u32, CC::Register> {
        LocalRegisterCopy::new(self.cc)
    }

    fn csts_reg(&mut self) -> LocalRegisterCopy<u32, CSTS::Register> {
        LocalRegisterCopy::new(self.csts)
    }

    fn ready(&self) -> bool {
        LocalRegisterCopy::<u32, CSTS::Register>::new(self.csts).is_set(CSTS::RDY)
            && !LocalRegisterCopy::<u32, CSTS::Register>::new(self.csts).is_set(CSTS::CFS)
    }

    /// Memory page size in bytes (CC.MPS).
    fn page(&self) -> u64 {
        MIN_PAGE << self.cc_reg().read(CC::MPS)
    }

    fn blocks(&self) -> u64 {
        self.backend.capacity() >> LBA_SHIFT
    }

    /// Handles a read of BAR0.
    pub fn read(&mut self, offset: u64, size: AccessSize) -> Result<u64, MmioError> {
        let bytes = size.bytes();
        if !offset.is_multiple_of(bytes) {
            return Err(MmioError::Unaligned { offset });
        }
        if bytes < 4 {
            return Err(MmioError::UnsupportedSize { offset, size });
        }
        let wide = |v: u64| -> Result<u64, MmioError> { Ok(v & size.mask()) };
        match offset {
            reg::CAP => wide(self.cap()),
            o if o == reg::CAP + 4 && bytes == 4 => Ok(self.cap() >> 32),
            reg::ASQ => wide(self.asq),
            o if o == reg::ASQ + 4 && bytes == 4 => Ok(self.asq >> 32),
            reg::ACQ => wide(self.acq),
            o if o == reg::ACQ + 4 && bytes == 4 => Ok(self.acq >> 32),
            _ if bytes != 4 => Err(MmioError::UnsupportedSize { offset, size }),
            reg::VS => {
                let mut vs = LocalRegisterCopy::<u32, VS::Register>::new(0);
                vs.modify(VS::MJR.val(1) + VS::MNR.val(4) + VS::TER.val(0));
                Ok(u64::from(vs.get()))
            }
            reg::INTMS | reg::INTMC => Ok(u64::from(self.intms)),
            reg::CC => Ok(u64::from(self.cc)),
            reg::CSTS => Ok(u64::from(self.csts)),
            reg::AQA => Ok(u64::from(self.aqa)),
            // NSSR, reserved registers and the doorbells read as zero.
            _ if offset < BAR0_SIZE => Ok(0),
            _ => Err(MmioError::NoRegister { offset }),
        }
    }

    /// Handles a write to BAR0; work it starts may touch guest memory and raise
    /// interrupts.
    pub fn write(
        &mut self,
        mem: &mut dyn GuestMemory,
        irq: &mut dyn Interrupts,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        let bytes = size.bytes();
        if !offset.is_multiple_of(bytes) {
            return Err(MmioError::Unaligned { offset });
        }
        if bytes < 4 {
            return Err(MmioError::UnsupportedSize { offset, size });
        }
        let value = value & size.mask();
        let enabled = self.cc_reg().is_set(CC::EN);
        match offset {
            reg::ASQ | reg::ACQ | 0x2c | 0x34 => {
                if enabled {
                    log::warn!("nvme: admin queue base written while enabled, ignored");
                    return Ok(());
                }
                let (reg64, shift) = match offset {
                    reg::ASQ => (&mut self.asq, 0),
                    reg::ACQ => (&mut self.acq, 0),
                    0x2c => (&mut self.asq, 32),
                    _ => (&mut self.acq, 32),
                };
                let keep = if bytes == 8 {
                    0
                } else {
                    !(u64::from(u32::MAX) << shift)
                };
                *reg64 = ((*reg64 & keep) | (value << shift)) & reg::QUEUE_BASE_MASK;
            }
            reg::CAP | 0x04 | reg::VS | reg::CSTS | reg::NSSR => {}
            _ if bytes != 4 => return Err(MmioError::UnsupportedSize { offset, size }),
            reg::INTMS => self.intms |= value as u32,
            reg::INTMC => self.intms &= !(value as u32),
            reg::CC => self.write_cc(mem, irq, value as u32),
            reg::AQA => {
                if enabled {
                    log::warn!("nvme: AQA written while enabled, ignored");
                } else {
                    let mut aqa = LocalRegisterCopy::<u32, AQA::Register>::new(0);
                    let v = LocalRegisterCopy::<u32, AQA::Register>::new(value as u32);
                    aqa.modify(AQA::ASQS.val(v.read(AQA::ASQS)) + AQA::ACQS.val(v.read(AQA::ACQS)));
                    self.aqa = aqa.get();
                }
            }
            o if (reg::DOORBELLS..BAR0_SIZE).contains(&o) => {
                self.doorbell(mem, irq, o - reg::DOORBELLS, value as u32)
            }
            _ if offset < BAR0_SIZE => {}
            _ => return Err(MmioError::NoRegister { offset }),
        }
        Ok(())
    }

    fn write_cc(&mut self, mem: &mut dyn GuestMemory, irq: &mut dyn Interrupts, value: u32) {
        let value = value & CC_WRITABLE;
        let new = LocalRegisterCopy::<u32, CC::Register>::new(value);
        let was = self.cc_reg().is_set(CC::EN);
        let shn_before = self.cc_reg().read(CC::SHN);
        match (was, new.is_set(CC::EN)) {
            (false, true) => {
                self.cc = value;
                self.enable(mem);
            }
            (true, false) => {
                self.reset_controller();
                self.cc = value;
            }
            (true, true) => {
                // Only the shutdown notification changes while enabled.
                let mut cc = self.cc_reg();
                cc.modify(CC::SHN.val(new.read(CC::SHN)));
                self.cc = cc.get();
            }
            (false, false) => self.cc = value,
        }
        if shn_before == 0 && new.read(CC::SHN) != 0 && self.shutdown == Shutdown::None {
            self.shutdown = Shutdown::Draining;
            self.set_shst(CSTS::SHST::Occurring);
        }
        self.pump(mem, irq);
    }

    fn set_shst(&mut self, v: tock_registers::fields::FieldValue<u32, CSTS::Register>) {
        let mut csts = self.csts_reg();
        csts.modify(v);
        self.csts = csts.get();
    }

    fn fatal(&mut self, why: &str) {
        log::warn!("nvme: controller fatal status: {why}");
        let mut csts = self.csts_reg();
        csts.modify(CSTS::CFS::SET);
        self.csts = csts.get();
    }

    /// CC.EN 0 → 1: checks the configuration and the admin queue, then sets RDY.
    fn enable(&mut self, mem: &mut dyn GuestMemory) {
        let cc = self.cc_reg();
        let aqa = LocalRegisterCopy::<u32, AQA::Register>::new(self.aqa);
        let (sqs, cqs) = (aqa.read(AQA::ASQS) + 1, aqa.read(AQA::ACQS) + 1);
        let mps = cc.read(CC::MPS);
        let why = if !(MPSMIN..=MPSMAX).contains(&mps) {
            Some("CC.MPS outside CAP.MPSMIN..MPSMAX")
        } else if cc.read(CC::CSS) != 0 {
            Some("CC.CSS selects a command set other than NVM")
        } else if cc.read(CC::AMS) != 0 {
            Some("CC.AMS selects an arbitration other than round robin")
        } else if sqs < 2 || cqs < 2 {
            Some("AQA admin queue of fewer than 2 entries")
        } else if !self.queue_in_ram(mem, self.asq, sqs, entry::SQE_BYTES)
            || !self.queue_in_ram(mem, self.acq, cqs, entry::CQE_BYTES)
        {
            Some("ASQ/ACQ not in guest RAM")
        } else {
            None
        };
        if let Some(why) = why {
            self.fatal(why);
            return;
        }
        self.sqs[0] = Some(Sq {
            base: self.asq,
            size: sqs as u16,
            head: 0,
            tail: 0,
            cqid: 0,
        });
        self.cqs[0] = Some(Cq {
            base: self.acq,
            size: cqs as u16,
            head: 0,
            tail: 0,
            phase: true,
            ien: true,
            iv: 0,
            pending: VecDeque::new(),
        });
        let mut csts = self.csts_reg();
        csts.modify(CSTS::RDY::SET);
        self.csts = csts.get();
    }

    /// Whether a queue of `n` entries of `bytes` at `base` is guest RAM (one byte per
    /// page and the last byte are probed).
    fn queue_in_ram(&self, mem: &dyn GuestMemory, base: u64, n: u32, bytes: usize) -> bool {
        let len = u64::from(n) * bytes as u64;
        let Some(end) = base.checked_add(len) else {
            return false;
        };
        let mut b = [0u8; 1];
        let mut at = base;
        while at < end {
            if mem.read(at, &mut b).is_err() {
                return false;
            }
            at += MIN_PAGE;
        }
        mem.read(end - 1, &mut b).is_ok()
    }

    /// Controller reset (CC.EN 1 → 0): queues deleted, held commands and events
    /// dropped, status cleared; the admin queue registers and features of the
    /// configuration registers stay. Backend operations still running are orphaned.
    fn reset_controller(&mut self) {
        for q in self.sqs.iter_mut() {
            *q = None;
        }
        for q in self.cqs.iter_mut() {
            *q = None;
        }
        self.cmds.clear();
        self.replay.clear();
        self.aer_held.clear();
        self.aer_pending.clear();
        self.aer_error_masked = false;
        self.shutdown = Shutdown::None;
        self.features = Features::new(self.cfg.vectors);
        self.to_signal.clear();
        self.csts = 0;
        // The guest may reuse the memory of its dropped commands at once: no
        // operation may still be writing it.
        if self.pieces.values().any(|p| p.dma) {
            self.backend.quiesce();
        }
        for p in self.pieces.values_mut() {
            if let Owner::Cmd(_) = p.owner {
                p.owner = Owner::Cmd(u64::MAX);
            }
        }
    }

    /// Platform reset: every register back to its reset value.
    pub fn reset(&mut self) {
        self.reset_controller();
        self.cc = 0;
        self.aqa = 0;
        self.asq = 0;
        self.acq = 0;
        self.intms = 0;
        self.errors.clear();
        self.error_count = 0;
        self.smart = Smart::default();
    }

    fn doorbell(&mut self, mem: &mut dyn GuestMemory, irq: &mut dyn Interrupts, off: u64, v: u32) {
        if !off.is_multiple_of(DOORBELL_STRIDE) {
            return;
        }
        if !self.ready() {
            log::warn!("nvme: doorbell write while the controller is not ready, ignored");
            return;
        }
        let index = off / DOORBELL_STRIDE;
        let qid = usize::try_from(index / 2).unwrap_or(usize::MAX);
        let completion = index % 2 == 1;
        let size = if completion {
            self.cqs.get(qid).and_then(|q| q.as_ref()).map(|q| q.size)
        } else {
            self.sqs.get(qid).and_then(|q| q.as_ref()).map(|q| q.size)
        };
        let Some(size) = size else {
            log::warn!(
                "nvme: doorbell of {} queue {qid}, which does not exist",
                if completion {
                    "completion"
                } else {
                    "submission"
                }
            );
            self.event(aer::INFO_INVALID_DOORBELL_REGISTER);
            self.pump(mem, irq);
            return;
        };
        let valid = u32::from(size) > v && {
            if completion {
                let cq = self.cqs[qid].as_ref().expect("checked above");
                within(cq.head, cq.tail, v as u16, size)
            } else {
                true
            }
        };
        if !valid {
            log::warn!("nvme: invalid doorbell value {v} for queue {qid} of {size} entries");
            self.event(aer::INFO_INVALID_DOORBELL_VALUE);
        } else if completion {
            if let Some(cq) = self.cqs[qid].as_mut() {
                cq.head = v as u16;
            }
        } else if let Some(sq) = self.sqs[qid].as_mut() {
            sq.tail = v as u16;
        }
        self.pump(mem, irq);
    }

    /// Queues an error-type asynchronous event (bounded; reported when a request is
    /// outstanding and error events are not masked).
    fn event(&mut self, info: u32) {
        let dw0 = aer::TYPE_ERROR | info << 8 | u32::from(log_page::ERROR_INFORMATION) << 16;
        if self.aer_pending.len() < aer::MAX_PENDING && !self.aer_pending.contains(&dw0) {
            self.aer_pending.push_back(dw0);
        }
    }

    /// Backend completions and held work: call when the backend's waker fires.
    pub fn poll(&mut self, mem: &mut dyn GuestMemory, irq: &mut dyn Interrupts) {
        self.pump(mem, irq);
    }

    /// Runs the controller until nothing moves: backend completions, queued
    /// completions, events, fetching, submitting; then signals the vectors of the
    /// queues that received entries.
    fn pump(&mut self, mem: &mut dyn GuestMemory, irq: &mut dyn Interrupts) {
        loop {
            let mut progress = self.drain(mem);
            progress |= self.report_events();
            progress |= self.post_all(mem);
            progress |= self.submit_ready(mem);
            progress |= self.advance_shutdown();
            progress |= self.fetch(mem);
            if !progress {
                break;
            }
        }
        for v in core::mem::take(&mut self.to_signal) {
            irq.signal(v);
        }
    }

    fn held(&self) -> usize {
        self.cmds.len()
            + self.replay.len()
            + self
                .cqs
                .iter()
                .flatten()
                .map(|q| q.pending.len())
                .sum::<usize>()
    }

    /// Fetches and starts commands, round robin over the submission queues.
    fn fetch(&mut self, mem: &mut dyn GuestMemory) -> bool {
        if !self.ready() || self.shutdown != Shutdown::None {
            return false;
        }
        let mut progress = false;
        while let Some((sqid, sqe)) = self.replay.pop_front() {
            self.execute(mem, sqid, sqe);
            progress = true;
        }
        loop {
            let mut any = false;
            for qid in 0..self.sqs.len() {
                if self.held() >= MAX_IN_FLIGHT || !self.ready() {
                    return progress;
                }
                let Some(sq) = self.sqs[qid].as_mut() else {
                    continue;
                };
                if sq.head == sq.tail {
                    continue;
                }
                let at = sq.base + u64::from(sq.head) * entry::SQE_BYTES as u64;
                sq.head = (sq.head + 1) % sq.size;
                let mut sqe = [0u8; entry::SQE_BYTES];
                if mem.read(at, &mut sqe).is_err() {
                    self.fatal("submission queue entry outside guest RAM");
                    return true;
                }
                self.execute(mem, qid as u16, sqe);
                any = true;
            }
            if !any {
                return progress;
            }
            progress = true;
        }
    }

    fn execute(&mut self, mem: &mut dyn GuestMemory, sqid: u16, sqe: [u8; entry::SQE_BYTES]) {
        let cdw0 = dw(&sqe, entry::CDW0);
        let cid = (cdw0 >> 16) as u16;
        let opcode = cdw0 as u8;
        let bad_field = (cdw0 >> entry::FUSE_SHIFT) & entry::FUSE_MASK != 0
            || (cdw0 >> entry::PSDT_SHIFT) & entry::PSDT_MASK != 0;
        if sqid == 0 {
            let outcome = if bad_field {
                log::warn!("nvme: admin command {opcode:#x} with fused or SGL bits");
                Outcome::Done(Status::INVALID_FIELD, 0)
            } else {
                self.admin(mem, &sqe)
            };
            if let Outcome::Done(status, dw0) = outcome {
                self.complete(sqid, cid, status, dw0);
            }
            return;
        }
        let started = if bad_field {
            log::warn!("nvme: I/O command {opcode:#x} with fused or SGL bits");
            Err(Status::INVALID_FIELD)
        } else {
            self.start_io(mem, sqid, &sqe)
        };
        if let Err(status) = started {
            self.complete(sqid, cid, status, 0);
        }
    }

    /// Queues a completion for the command `cid` of `sqid`.
    fn complete(&mut self, sqid: u16, cid: u16, status: Status, dw0: u32) {
        let Some(cqid) = self
            .sqs
            .get(usize::from(sqid))
            .and_then(|q| q.as_ref())
            .map(|q| q.cqid)
        else {
            return;
        };
        if status != Status::SUCCESS {
            self.error_count += 1;
            if self.errors.len() == ERROR_LOG_ENTRIES {
                self.errors.pop_back();
            }
            self.errors.push_front(ErrorEntry {
                count: self.error_count,
                sqid,
                cid,
                status: status.field(),
            });
        }
        if let Some(cq) = self.cqs[usize::from(cqid)].as_mut() {
            cq.pending.push_back(Cqe {
                dw0,
                sqid,
                cid,
                status: status.field(),
            });
        }
    }

    /// Posts waiting completions while their queues have room.
    fn post_all(&mut self, mem: &mut dyn GuestMemory) -> bool {
        let mut progress = false;
        for qid in 0..self.cqs.len() {
            while let Some(cq) = self.cqs[qid].as_mut() {
                if cq.full() {
                    break;
                }
                let Some(e) = cq.pending.pop_front() else {
                    break;
                };
                let sqhd = self.sqs[usize::from(e.sqid)].as_ref().map_or(0, |s| s.head);
                let mut bytes = [0u8; entry::CQE_BYTES];
                put(&mut bytes, 0, &e.dw0.to_le_bytes());
                put(
                    &mut bytes,
                    8,
                    &(u32::from(sqhd) | u32::from(e.sqid) << 16).to_le_bytes(),
                );
                let phase = if cq.phase { entry::PHASE } else { 0 };
                let dw3 = u32::from(e.cid) | phase | u32::from(e.status) << entry::STATUS_SHIFT;
                put(&mut bytes, 12, &dw3.to_le_bytes());
                let at = cq.base + u64::from(cq.tail) * entry::CQE_BYTES as u64;
                if mem.write(at, &bytes).is_err() {
                    self.fatal("completion queue outside guest RAM");
                    return true;
                }
                cq.tail = (cq.tail + 1) % cq.size;
                if cq.tail == 0 {
                    cq.phase = !cq.phase;
                }
                if cq.ien && !self.to_signal.contains(&cq.iv) {
                    self.to_signal.push(cq.iv);
                }
                progress = true;
            }
        }
        progress
    }

    /// Completes held Asynchronous Event Requests with pending events.
    fn report_events(&mut self) -> bool {
        let mut progress = false;
        while !self.aer_held.is_empty() && !self.aer_error_masked {
            let Some(dw0) = self.aer_pending.pop_front() else {
                break;
            };
            let cid = self.aer_held.remove(0);
            self.aer_error_masked = true;
            self.complete(0, cid, Status::SUCCESS, dw0);
            progress = true;
        }
        progress
    }

    fn advance_shutdown(&mut self) -> bool {
        match self.shutdown {
            Shutdown::Draining if self.cmds.is_empty() => {
                self.shutdown = Shutdown::Flushing;
                let tag = self.tag(Owner::Shutdown, 0);
                match self.backend.submit(tag, BlockOp::Flush, Vec::new()) {
                    Submit::Done(c) => self.done.push_back(c),
                    Submit::Queued => {}
                    Submit::Busy(_) => {
                        self.pieces.remove(&tag);
                        self.shutdown = Shutdown::Draining;
                        return false;
                    }
                }
                true
            }
            _ => false,
        }
    }

    fn tag(&mut self, owner: Owner, at: u64) -> u64 {
        let tag = self.next_tag;
        self.next_tag += 1;
        self.pieces.insert(
            tag,
            Piece {
                owner,
                at,
                dma: false,
            },
        );
        tag
    }

    /// Applies backend completions.
    fn drain(&mut self, mem: &mut dyn GuestMemory) -> bool {
        let mut progress = false;
        loop {
            let c = match self.done.pop_front() {
                Some(c) => c,
                None => match self.backend.poll() {
                    Some(c) => c,
                    None => return progress,
                },
            };
            progress = true;
            let Some(piece) = self.pieces.remove(&c.tag) else {
                log::warn!("nvme: backend completed unknown tag {}", c.tag);
                continue;
            };
            if piece.dma {
                self.dma_out = self.dma_out.saturating_sub(1);
            } else if c.buf.capacity() > 0 {
                self.lent = self.lent.saturating_sub(1);
            }
            self.finish_piece(mem, piece, c.result, &c.buf);
            if c.buf.capacity() >= CHUNK_BYTES.min(self.chunk()) && self.pool.len() < MAX_BUFFERS {
                self.pool.push(c.buf);
            }
        }
    }

    fn finish_piece(
        &mut self,
        mem: &mut dyn GuestMemory,
        piece: Piece,
        result: Result<(), BlockError>,
        data: &[u8],
    ) {
        let id = match piece.owner {
            Owner::Shutdown => {
                if self.shutdown == Shutdown::Flushing {
                    if let Err(e) = result {
                        log::warn!("nvme: flush at shutdown failed: {e:?}");
                    }
                    self.shutdown = Shutdown::Complete;
                    self.set_shst(CSTS::SHST::Complete);
                }
                return;
            }
            Owner::Cmd(id) => id,
        };
        let Some(cmd) = self.cmds.get_mut(&id) else {
            return;
        };
        cmd.outstanding -= 1;
        match result {
            Ok(()) if cmd.kind == Kind::Read && !piece.dma => {
                if prp::scatter(mem, &cmd.segs, piece.at, data).is_err()
                    && cmd.status == Status::SUCCESS
                {
                    log::warn!("nvme: read data PRP outside guest RAM");
                    cmd.status = Status::DATA_TRANSFER_ERROR;
                }
            }
            Ok(()) => {}
            Err(e) => {
                if cmd.status == Status::SUCCESS {
                    log::warn!("nvme: backend {:?} failed: {e:?}", cmd.kind);
                    cmd.status = match (e, cmd.kind) {
                        (BlockError::OutOfRange, _) => Status::LBA_OUT_OF_RANGE,
                        (BlockError::ReadOnly, _) => Status::NAMESPACE_WRITE_PROTECTED,
                        (BlockError::Io, Kind::Read) => Status::UNRECOVERED_READ_ERROR,
                        (BlockError::Io, _) => Status::WRITE_FAULT,
                    };
                }
            }
        }
        self.maybe_finish(id);
    }

    fn maybe_finish(&mut self, id: u64) {
        let Some(cmd) = self.cmds.get(&id) else {
            return;
        };
        if !cmd.finished() {
            return;
        }
        let cmd = self.cmds.remove(&id).expect("looked up above");
        if cmd.status == Status::SUCCESS {
            let blocks = cmd.len >> LBA_SHIFT;
            match cmd.kind {
                Kind::Read => {
                    self.smart.read_commands += 1;
                    self.smart.blocks_read += blocks;
                }
                Kind::Write => {
                    self.smart.write_commands += 1;
                    self.smart.blocks_written += blocks;
                }
                Kind::WriteZeroes | Kind::Flush => {}
            }
        }
        self.complete(cmd.sqid, cmd.cid, cmd.status, 0);
    }

    fn chunk(&self) -> usize {
        let max = self.backend.max_transfer().min(CHUNK_BYTES);
        (max / SECTOR_SIZE as usize).max(1) * SECTOR_SIZE as usize
    }

    /// Hands the backend the next pieces of held commands, in arrival order, while
    /// buffers are available.
    fn submit_ready(&mut self, mem: &mut dyn GuestMemory) -> bool {
        let mut progress = false;
        let ids: Vec<u64> = self
            .cmds
            .iter()
            .filter(|(_, c)| !c.finished() && (c.submitted < c.len || needs_flush(c)))
            .map(|(&id, _)| id)
            .collect();
        let chunk = self.chunk();
        let dma = self.backend.dma_limits();
        for id in ids {
            while let Some(cmd) = self.cmds.get(&id) {
                if cmd.status != Status::SUCCESS && cmd.submitted < cmd.len {
                    // A failed command sends nothing more.
                    let cmd = self.cmds.get_mut(&id).expect("present");
                    cmd.submitted = cmd.len;
                    cmd.flush_started = true;
                    self.maybe_finish(id);
                    progress = true;
                    break;
                }
                if cmd.submitted >= cmd.len {
                    if needs_flush(cmd) && cmd.outstanding == 0 {
                        let tag = self.tag(Owner::Cmd(id), cmd.len);
                        let cmd = self.cmds.get_mut(&id).expect("present");
                        match self.backend.submit(tag, BlockOp::Flush, Vec::new()) {
                            Submit::Done(c) => self.done.push_back(c),
                            Submit::Queued => {}
                            Submit::Busy(_) => {
                                self.pieces.remove(&tag);
                                return progress;
                            }
                        }
                        cmd.flush_started = true;
                        cmd.outstanding += 1;
                        progress = true;
                    }
                    break;
                }
                let dma = dma.filter(|_| matches!(cmd.kind, Kind::Read | Kind::Write));
                if let Some(lim) = dma {
                    if self.dma_out >= MAX_DMA_OPS {
                        return progress;
                    }
                    let (kind, at, offset) = (cmd.kind, cmd.submitted, cmd.offset + cmd.submitted);
                    let want = cmd.len - cmd.submitted;
                    match dma_segments(mem, &cmd.segs, at, want, lim, &mut self.dma_segs) {
                        DmaPlan::Segments(n) => {
                            let op = if kind == Kind::Read {
                                BlockOp::Read { offset }
                            } else {
                                BlockOp::Write { offset }
                            };
                            let tag = self.tag(Owner::Cmd(id), at);
                            if let Some(p) = self.pieces.get_mut(&tag) {
                                p.dma = true;
                            }
                            match self.backend.submit_dma(tag, op, &self.dma_segs) {
                                Submit::Done(c) => self.done.push_back(c),
                                Submit::Queued => {}
                                Submit::Busy(_) => {
                                    self.pieces.remove(&tag);
                                    return progress;
                                }
                            }
                            self.dma_out += 1;
                            let cmd = self.cmds.get_mut(&id).expect("present");
                            cmd.submitted += n;
                            cmd.outstanding += 1;
                            progress = true;
                            continue;
                        }
                        DmaPlan::NotRam => {
                            let cmd = self.cmds.get_mut(&id).expect("present");
                            log::warn!("nvme: data PRP outside guest RAM");
                            cmd.status = Status::DATA_TRANSFER_ERROR;
                            continue;
                        }
                        // Copied through a buffer below.
                        DmaPlan::Unavailable => {}
                    }
                }
                if self.lent >= MAX_BUFFERS {
                    return progress;
                }
                let (kind, at, n, offset) = {
                    let n = (cmd.len - cmd.submitted).min(chunk as u64) as usize;
                    (cmd.kind, cmd.submitted, n, cmd.offset + cmd.submitted)
                };
                let mut buf = self.pool.pop().unwrap_or_default();
                buf.clear();
                buf.resize(n, 0);
                let op = match kind {
                    Kind::Read => BlockOp::Read { offset },
                    Kind::Write => {
                        let cmd = self.cmds.get_mut(&id).expect("present");
                        if prp::gather(mem, &cmd.segs, at, &mut buf).is_err() {
                            log::warn!("nvme: write data PRP outside guest RAM");
                            cmd.status = Status::DATA_TRANSFER_ERROR;
                            self.pool.push(buf);
                            continue;
                        }
                        BlockOp::Write { offset }
                    }
                    Kind::WriteZeroes => BlockOp::Write { offset },
                    Kind::Flush => unreachable!("a flush has no data"),
                };
                let tag = self.tag(Owner::Cmd(id), at);
                match self.backend.submit(tag, op, buf) {
                    Submit::Done(c) => self.done.push_back(c),
                    Submit::Queued => {}
                    Submit::Busy(buf) => {
                        self.pieces.remove(&tag);
                        if buf.capacity() > 0 && self.pool.len() < MAX_BUFFERS {
                            self.pool.push(buf);
                        }
                        return progress;
                    }
                }
                self.lent += 1;
                let cmd = self.cmds.get_mut(&id).expect("present");
                cmd.submitted += n as u64;
                cmd.outstanding += 1;
                progress = true;
            }
        }
        progress
    }

    /// Validates an I/O command and holds it, or refuses it with a status.
    fn start_io(
        &mut self,
        mem: &mut dyn GuestMemory,
        sqid: u16,
        sqe: &[u8; entry::SQE_BYTES],
    ) -> Result<(), Status> {
        let cdw0 = dw(sqe, entry::CDW0);
        let opcode = cdw0 as u8;
        let cid = (cdw0 >> 16) as u16;
        let nsid = dw(sqe, entry::NSID);
        let ns_ok = nsid == NSID || (opcode == io::FLUSH && nsid == NSID_ALL);
        if !matches!(
            opcode,
            io::FLUSH | io::WRITE | io::READ | io::WRITE_ZEROES | io::DATASET_MANAGEMENT
        ) {
            log::warn!("nvme: unsupported I/O opcode {opcode:#x}");
            return Err(Status::INVALID_OPCODE);
        }
        if !ns_ok {
            log::warn!("nvme: I/O command {opcode:#x} for namespace {nsid:#x}");
            return Err(Status::INVALID_NAMESPACE);
        }
        let writes = matches!(
            opcode,
            io::WRITE | io::WRITE_ZEROES | io::DATASET_MANAGEMENT
        );
        if writes && self.backend.read_only() {
            log::warn!("nvme: write command {opcode:#x} to a read-only namespace");
            return Err(Status::NAMESPACE_WRITE_PROTECTED);
        }
        let slba = u64::from(cdw(sqe, 10)) | u64::from(cdw(sqe, 11)) << 32;
        let nlb = u64::from(cdw(sqe, 12) & io::NLB_MASK) + 1;
        let fua = cdw(sqe, 12) & io::FUA != 0;
        let (kind, offset, len, mut segs) = match opcode {
            io::FLUSH => (Kind::Flush, 0, 0, Vec::new()),
            io::READ | io::WRITE => {
                let len = nlb << LBA_SHIFT;
                if len > MAX_TRANSFER {
                    log::warn!("nvme: transfer of {len} bytes beyond MDTS");
                    return Err(Status::INVALID_FIELD);
                }
                let offset = self.lba_range(slba, nlb)?;
                let mut segs = core::mem::take(&mut self.scratch);
                let page = self.page();
                if let Err(s) = prp::resolve(
                    mem,
                    qw(sqe, entry::PRP1),
                    qw(sqe, entry::PRP2),
                    len,
                    page,
                    &mut segs,
                ) {
                    log::warn!("nvme: I/O command {opcode:#x} with bad PRPs: {s:?}");
                    self.scratch = segs;
                    return Err(s);
                }
                let kind = if opcode == io::READ {
                    Kind::Read
                } else {
                    Kind::Write
                };
                (kind, offset, len, segs)
            }
            io::WRITE_ZEROES => {
                debug_assert!(nlb <= MAX_WRITE_ZEROES_BLOCKS);
                let offset = self.lba_range(slba, nlb)?;
                (Kind::WriteZeroes, offset, nlb << LBA_SHIFT, Vec::new())
            }
            _ => {
                return self.dataset_management(mem, sqe).map(|()| {
                    self.complete(sqid, cid, Status::SUCCESS, 0);
                })
            }
        };
        let flush_after =
            kind != Kind::Read && kind != Kind::Flush && (fua || !self.features.write_cache);
        let id = self.next_cmd;
        self.next_cmd += 1;
        segs.shrink_to(segs.len().max(4));
        self.cmds.insert(
            id,
            Cmd {
                sqid,
                cid,
                sqe: *sqe,
                kind,
                offset,
                len,
                segs,
                submitted: 0,
                outstanding: 0,
                status: Status::SUCCESS,
                flush_after: flush_after || kind == Kind::Flush,
                flush_started: false,
            },
        );
        Ok(())
    }

    /// The byte offset of `nlb` blocks at `slba`, or LBA Out of Range.
    fn lba_range(&self, slba: u64, nlb: u64) -> Result<u64, Status> {
        match slba.checked_add(nlb) {
            Some(end) if end <= self.blocks() => Ok(slba << LBA_SHIFT),
            _ => {
                log::warn!("nvme: {nlb} blocks at LBA {slba} beyond the namespace");
                Err(Status::LBA_OUT_OF_RANGE)
            }
        }
    }

    /// Dataset Management: the ranges are validated; deallocation is a hint the model
    /// takes without changing data (Identify Namespace DLFEAT reports nothing about
    /// deallocated blocks' contents).
    fn dataset_management(
        &mut self,
        mem: &mut dyn GuestMemory,
        sqe: &[u8; entry::SQE_BYTES],
    ) -> Result<(), Status> {
        let nr = (cdw(sqe, 10) & io::DSM_NR_MASK) as usize + 1;
        if cdw(sqe, 11) & io::DSM_AD == 0 {
            return Ok(());
        }
        let len = nr * io::DSM_RANGE_BYTES;
        let mut raw = vec![0u8; len];
        self.read_prp(mem, sqe, &mut raw)?;
        for r in raw.chunks_exact(io::DSM_RANGE_BYTES) {
            let blocks = u64::from(u32::from_le_bytes([r[4], r[5], r[6], r[7]]));
            let slba = u64::from_le_bytes([r[8], r[9], r[10], r[11], r[12], r[13], r[14], r[15]]);
            self.lba_range(slba, blocks)?;
        }
        Ok(())
    }

    fn read_prp(
        &mut self,
        mem: &dyn GuestMemory,
        sqe: &[u8; entry::SQE_BYTES],
        buf: &mut [u8],
    ) -> Result<(), Status> {
        let mut segs = core::mem::take(&mut self.scratch);
        let r = prp::resolve(
            mem,
            qw(sqe, entry::PRP1),
            qw(sqe, entry::PRP2),
            buf.len() as u64,
            self.page(),
            &mut segs,
        )
        .and_then(|()| prp::gather(mem, &segs, 0, buf).map_err(|_| Status::DATA_TRANSFER_ERROR));
        self.scratch = segs;
        r
    }

    fn write_prp(
        &mut self,
        mem: &mut dyn GuestMemory,
        sqe: &[u8; entry::SQE_BYTES],
        data: &[u8],
    ) -> Result<(), Status> {
        let mut segs = core::mem::take(&mut self.scratch);
        let r = prp::resolve(
            mem,
            qw(sqe, entry::PRP1),
            qw(sqe, entry::PRP2),
            data.len() as u64,
            self.page(),
            &mut segs,
        )
        .and_then(|()| prp::scatter(mem, &segs, 0, data).map_err(|_| Status::DATA_TRANSFER_ERROR));
        self.scratch = segs;
        if let Err(s) = r {
            log::warn!("nvme: admin data PRPs refused: {s:?}");
        }
        r
    }

    fn admin(&mut self, mem: &mut dyn GuestMemory, sqe: &[u8; entry::SQE_BYTES]) -> Outcome {
        let opcode = dw(sqe, entry::CDW0) as u8;
        let cid = (dw(sqe, entry::CDW0) >> 16) as u16;
        let r = match opcode {
            admin::IDENTIFY => self.identify(mem, sqe).map(|()| 0),
            admin::CREATE_IO_CQ => self.create_cq(mem, sqe).map(|()| 0),
            admin::CREATE_IO_SQ => self.create_sq(mem, sqe).map(|()| 0),
            admin::DELETE_IO_SQ => self.delete_sq(sqe).map(|()| 0),
            admin::DELETE_IO_CQ => self.delete_cq(sqe).map(|()| 0),
            admin::GET_FEATURES => self.get_features(sqe),
            admin::SET_FEATURES => self.set_features(sqe),
            admin::GET_LOG_PAGE => self.get_log_page(mem, sqe).map(|()| 0),
            // Abort: the command is not aborted (DW0 bit 0), as the spec allows.
            admin::ABORT => Ok(1),
            admin::KEEP_ALIVE => Ok(0),
            admin::ASYNC_EVENT_REQUEST => {
                if self.aer_held.len() >= aer::LIMIT {
                    log::warn!("nvme: more than {} Asynchronous Event Requests", aer::LIMIT);
                    Err(Status::AER_LIMIT_EXCEEDED)
                } else {
                    self.aer_held.push(cid);
                    return Outcome::Held;
                }
            }
            _ => {
                log::warn!("nvme: unsupported admin opcode {opcode:#x}");
                Err(Status::INVALID_OPCODE)
            }
        };
        match r {
            Ok(dw0) => Outcome::Done(Status::SUCCESS, dw0),
            Err(s) => Outcome::Done(s, 0),
        }
    }

    fn identify(
        &mut self,
        mem: &mut dyn GuestMemory,
        sqe: &[u8; entry::SQE_BYTES],
    ) -> Result<(), Status> {
        let cns = cdw(sqe, 10) as u8;
        let nsid = dw(sqe, entry::NSID);
        let mut d = vec![0u8; identify::BYTES];
        match cns {
            identify::CNS_CONTROLLER => self.identify_controller(&mut d),
            identify::CNS_NAMESPACE => {
                if nsid != NSID {
                    log::warn!("nvme: Identify Namespace of namespace {nsid:#x}");
                    return Err(Status::INVALID_NAMESPACE);
                }
                let blocks = self.blocks().to_le_bytes();
                put(&mut d, identify::NSZE, &blocks);
                put(&mut d, identify::NCAP, &blocks);
                put(&mut d, identify::NUSE, &blocks);
                d[identify::NLBAF] = 0;
                d[identify::FLBAS] = 0;
                put(&mut d, identify::NGUID, &self.nguid());
                let lbaf = (LBA_SHIFT) << identify::LBADS_SHIFT;
                put(&mut d, identify::LBAF0, &lbaf.to_le_bytes());
            }
            identify::CNS_ACTIVE_NSID_LIST => {
                if nsid >= 0xffff_fffe {
                    return Err(Status::INVALID_NAMESPACE);
                }
                if nsid < NSID {
                    put(&mut d, 0, &NSID.to_le_bytes());
                }
            }
            identify::CNS_NS_ID_DESCRIPTORS => {
                if nsid != NSID {
                    return Err(Status::INVALID_NAMESPACE);
                }
                d[0] = identify::NIDT_NGUID;
                d[1] = identify::NIDL_NGUID;
                put(&mut d, 4, &self.nguid());
            }
            cns if identify::CNS_NVME2_IO_COMMAND_SETS.contains(&cns) => {
                log::debug!("nvme: Identify CNS {cns:#x} (NVMe 2.0) answered Invalid Field");
                return Err(Status::INVALID_FIELD);
            }
            _ => {
                log::warn!("nvme: Identify with unsupported CNS {cns:#x}");
                return Err(Status::INVALID_FIELD);
            }
        }
        self.write_prp(mem, sqe, &d)
    }

    /// A namespace GUID derived from the serial number (unique per VM disk when the
    /// serial is).
    fn nguid(&self) -> [u8; 16] {
        let mut g = *b"RayOSnvme\0\0\0\0\0\0\0";
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for &b in &self.cfg.serial {
            h = (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        g[8..].copy_from_slice(&h.to_le_bytes());
        g
    }

    fn identify_controller(&self, d: &mut [u8]) {
        put(d, identify::VID, &self.cfg.vendor_id.to_le_bytes());
        put(
            d,
            identify::SSVID,
            &self.cfg.subsystem_vendor_id.to_le_bytes(),
        );
        ascii(d, identify::SN, identify::SN_LEN, &self.cfg.serial);
        ascii(d, identify::MN, identify::MN_LEN, &self.cfg.model);
        ascii(d, identify::FR, identify::FR_LEN, b"1.0");
        d[identify::RAB] = 6;
        d[identify::MDTS] = MDTS;
        put(d, identify::CNTLID, &0u16.to_le_bytes());
        put(d, identify::VER, &0x0001_0400u32.to_le_bytes());
        put(d, identify::OAES, &0u32.to_le_bytes());
        d[identify::CNTRLTYPE] = identify::CNTRLTYPE_IO;
        d[identify::ACL] = 3;
        d[identify::AERL] = (aer::LIMIT - 1) as u8;
        // One firmware slot, read-only.
        d[identify::FRMW] = 0b11;
        d[identify::LPA] = identify::LPA_EXTENDED;
        d[identify::ELPE] = (ERROR_LOG_ENTRIES - 1) as u8;
        put(d, identify::WCTEMP, &0x157u16.to_le_bytes());
        put(d, identify::CCTEMP, &0x175u16.to_le_bytes());
        d[identify::SQES] = (entry::SQES_LOG2 << 4 | entry::SQES_LOG2) as u8;
        d[identify::CQES] = (entry::CQES_LOG2 << 4 | entry::CQES_LOG2) as u8;
        put(d, identify::MAXCMD, &(MAX_IN_FLIGHT as u16).to_le_bytes());
        put(d, identify::NN, &1u32.to_le_bytes());
        let oncs = identify::ONCS_DSM | identify::ONCS_WRITE_ZEROES;
        put(d, identify::ONCS, &oncs.to_le_bytes());
        d[identify::VWC] = 1;
        let mut nqn = Vec::from(&b"nqn.2026-01.org.rayos:nvme:"[..]);
        nqn.extend(self.cfg.serial.iter().take(200).copied());
        put(d, identify::SUBNQN, &nqn);
        // Power state 0: 25 W maximum (centiwatts).
        put(d, identify::PSD0, &2500u16.to_le_bytes());
    }

    fn qid_size(sqe: &[u8; entry::SQE_BYTES]) -> (u16, u32) {
        let c10 = cdw(sqe, 10);
        (c10 as u16, (c10 >> 16) + 1)
    }

    /// The I/O queue count the host may use (Number of Queues, or the configuration).
    fn allowed_queues(&self, completion: bool) -> u16 {
        match self.features.queues {
            Some((sq, cq)) => (if completion { cq } else { sq }) + 1,
            None => self.cfg.io_queues,
        }
    }

    fn check_new_queue(
        &self,
        mem: &dyn GuestMemory,
        sqe: &[u8; entry::SQE_BYTES],
        completion: bool,
    ) -> Result<(u16, u16, u64), Status> {
        let (qid, size) = Self::qid_size(sqe);
        let exists = if completion {
            self.cqs.get(usize::from(qid)).is_some_and(|q| q.is_some())
        } else {
            self.sqs.get(usize::from(qid)).is_some_and(|q| q.is_some())
        };
        if qid == 0 || qid > self.allowed_queues(completion) || exists {
            log::warn!("nvme: create queue with invalid or used ID {qid}");
            return Err(Status::INVALID_QUEUE_IDENTIFIER);
        }
        if size < 2 || size > self.cfg.max_queue_entries {
            log::warn!("nvme: create queue {qid} of {size} entries");
            return Err(Status::INVALID_QUEUE_SIZE);
        }
        let cc = self.cc_reg();
        let (es, want) = if completion {
            (cc.read(CC::IOCQES), entry::CQES_LOG2)
        } else {
            (cc.read(CC::IOSQES), entry::SQES_LOG2)
        };
        // Physically Contiguous (CDW11 bit 0) is required (CAP.CQR).
        if es != want || cdw(sqe, 11) & 1 == 0 {
            log::warn!("nvme: create queue {qid}: entry size or non-contiguous queue");
            return Err(Status::INVALID_FIELD);
        }
        let base = qw(sqe, entry::PRP1);
        let bytes = if completion {
            entry::CQE_BYTES
        } else {
            entry::SQE_BYTES
        };
        if base & (self.page() - 1) != 0 || !self.queue_in_ram(mem, base, size, bytes) {
            log::warn!("nvme: create queue {qid} at {base:#x}: unaligned or not guest RAM");
            return Err(Status::INVALID_FIELD);
        }
        Ok((qid, size as u16, base))
    }

    fn create_cq(
        &mut self,
        mem: &mut dyn GuestMemory,
        sqe: &[u8; entry::SQE_BYTES],
    ) -> Result<(), Status> {
        let (qid, size, base) = self.check_new_queue(mem, sqe, true)?;
        let c11 = cdw(sqe, 11);
        let iv = (c11 >> 16) as u16;
        if iv >= self.cfg.vectors {
            log::warn!("nvme: create completion queue {qid} with vector {iv}");
            return Err(Status::INVALID_INTERRUPT_VECTOR);
        }
        self.cqs[usize::from(qid)] = Some(Cq {
            base,
            size,
            head: 0,
            tail: 0,
            phase: true,
            ien: c11 & 2 != 0,
            iv,
            pending: VecDeque::new(),
        });
        Ok(())
    }

    fn create_sq(
        &mut self,
        mem: &mut dyn GuestMemory,
        sqe: &[u8; entry::SQE_BYTES],
    ) -> Result<(), Status> {
        let cqid = (cdw(sqe, 11) >> 16) as u16;
        let (qid, size, base) = self.check_new_queue(mem, sqe, false)?;
        if cqid == 0 || !self.cqs.get(usize::from(cqid)).is_some_and(|q| q.is_some()) {
            log::warn!("nvme: create submission queue {qid} on completion queue {cqid}");
            return Err(Status::COMPLETION_QUEUE_INVALID);
        }
        self.sqs[usize::from(qid)] = Some(Sq {
            base,
            size,
            head: 0,
            tail: 0,
            cqid,
        });
        Ok(())
    }

    fn delete_sq(&mut self, sqe: &[u8; entry::SQE_BYTES]) -> Result<(), Status> {
        let qid = cdw(sqe, 10) as u16;
        if qid == 0 || !self.sqs.get(usize::from(qid)).is_some_and(|q| q.is_some()) {
            log::warn!("nvme: delete of submission queue {qid}");
            return Err(Status::INVALID_QUEUE_IDENTIFIER);
        }
        // Its held commands are completed as aborted before the queue goes.
        let ids: Vec<u64> = self
            .cmds
            .iter()
            .filter(|(_, c)| c.sqid == qid)
            .map(|(&id, _)| id)
            .collect();
        // The host may reuse an aborted command's memory at once: none of its
        // operations may still be moving data there.
        let dma_live = self
            .pieces
            .values()
            .any(|p| p.dma && matches!(p.owner, Owner::Cmd(id) if ids.contains(&id)));
        if dma_live {
            self.backend.quiesce();
        }
        for id in ids {
            if let Some(cmd) = self.cmds.remove(&id) {
                self.complete(qid, cmd.cid, Status::ABORTED_SQ_DELETION, 0);
            }
        }
        self.replay.retain(|(s, _)| *s != qid);
        self.sqs[usize::from(qid)] = None;
        Ok(())
    }

    fn delete_cq(&mut self, sqe: &[u8; entry::SQE_BYTES]) -> Result<(), Status> {
        let qid = cdw(sqe, 10) as u16;
        if qid == 0 || !self.cqs.get(usize::from(qid)).is_some_and(|q| q.is_some()) {
            log::warn!("nvme: delete of completion queue {qid}");
            return Err(Status::INVALID_QUEUE_IDENTIFIER);
        }
        if self.sqs.iter().flatten().any(|s| s.cqid == qid) {
            log::warn!("nvme: delete of completion queue {qid} with submission queues on it");
            return Err(Status::INVALID_QUEUE_DELETION);
        }
        self.cqs[usize::from(qid)] = None;
        Ok(())
    }

    fn get_features(&mut self, sqe: &[u8; entry::SQE_BYTES]) -> Result<u32, Status> {
        let c10 = cdw(sqe, 10);
        let fid = c10 as u8;
        let sel = (c10 >> feature::SEL_SHIFT) & feature::SEL_MASK;
        let defaults = Features::new(self.cfg.vectors);
        let f = match sel {
            feature::SEL_CURRENT => &self.features,
            feature::SEL_DEFAULT | feature::SEL_SAVED => &defaults,
            feature::SEL_CAPABILITIES => {
                // Changeable, not saveable, not namespace specific.
                return if self.known_feature(fid) {
                    Ok(1 << 2)
                } else {
                    Err(Status::INVALID_FIELD)
                };
            }
            _ => return Err(Status::INVALID_FIELD),
        };
        let max = self.cfg.io_queues - 1;
        Ok(match fid {
            feature::ARBITRATION => f.arbitration,
            feature::POWER_MANAGEMENT => f.power_management,
            feature::TEMPERATURE_THRESHOLD => f.temperature_threshold,
            feature::ERROR_RECOVERY => f.error_recovery,
            feature::VOLATILE_WRITE_CACHE => u32::from(f.write_cache),
            feature::NUMBER_OF_QUEUES => {
                let (s, c) = f.queues.unwrap_or((max, max));
                u32::from(s) | u32::from(c) << 16
            }
            feature::INTERRUPT_COALESCING => f.coalescing,
            feature::INTERRUPT_VECTOR_CONFIG => {
                let iv = cdw(sqe, 11) as u16;
                let Some(&cd) = f.coalescing_disabled.get(usize::from(iv)) else {
                    return Err(Status::INVALID_FIELD);
                };
                u32::from(iv) | u32::from(cd) << 16
            }
            feature::WRITE_ATOMICITY => f.write_atomicity,
            feature::ASYNC_EVENT_CONFIG => f.async_event_config,
            _ => {
                log::warn!("nvme: Get Features of unsupported feature {fid:#x}");
                return Err(Status::INVALID_FIELD);
            }
        })
    }

    fn known_feature(&self, fid: u8) -> bool {
        matches!(
            fid,
            feature::ARBITRATION
                | feature::POWER_MANAGEMENT
                | feature::TEMPERATURE_THRESHOLD
                | feature::ERROR_RECOVERY
                | feature::VOLATILE_WRITE_CACHE
                | feature::NUMBER_OF_QUEUES
                | feature::INTERRUPT_COALESCING
                | feature::INTERRUPT_VECTOR_CONFIG
                | feature::WRITE_ATOMICITY
                | feature::ASYNC_EVENT_CONFIG
        )
    }

    fn set_features(&mut self, sqe: &[u8; entry::SQE_BYTES]) -> Result<u32, Status> {
        let c10 = cdw(sqe, 10);
        let fid = c10 as u8;
        let v = cdw(sqe, 11);
        if !self.known_feature(fid) {
            log::warn!("nvme: Set Features of unsupported feature {fid:#x}");
            return Err(Status::INVALID_FIELD);
        }
        if c10 & feature::SAVE != 0 {
            return Err(Status::FEATURE_NOT_SAVEABLE);
        }
        let f = &mut self.features;
        match fid {
            feature::ARBITRATION => f.arbitration = v,
            // Power state 0 is the only one (NPSS = 0); workload hint kept.
            feature::POWER_MANAGEMENT => {
                if v & 0x1f != 0 {
                    return Err(Status::INVALID_FIELD);
                }
                f.power_management = v;
            }
            feature::TEMPERATURE_THRESHOLD => f.temperature_threshold = v & 0x3f_ffff,
            feature::ERROR_RECOVERY => f.error_recovery = v & 0x1_ffff,
            feature::VOLATILE_WRITE_CACHE => f.write_cache = v & 1 != 0,
            feature::NUMBER_OF_QUEUES => {
                let (nsq, ncq) = (v as u16, (v >> 16) as u16);
                if nsq == u16::MAX || ncq == u16::MAX {
                    return Err(Status::INVALID_FIELD);
                }
                let io_created = self.sqs.iter().skip(1).any(Option::is_some)
                    || self.cqs.iter().skip(1).any(Option::is_some);
                if io_created {
                    log::warn!("nvme: Number of Queues set after I/O queues were created");
                    return Err(Status::COMMAND_SEQUENCE_ERROR);
                }
                let max = self.cfg.io_queues - 1;
                let got = (nsq.min(max), ncq.min(max));
                self.features.queues = Some(got);
                return Ok(u32::from(got.0) | u32::from(got.1) << 16);
            }
            feature::INTERRUPT_COALESCING => f.coalescing = v & 0xffff,
            feature::INTERRUPT_VECTOR_CONFIG => {
                let iv = v as u16;
                let Some(cd) = f.coalescing_disabled.get_mut(usize::from(iv)) else {
                    return Err(Status::INVALID_FIELD);
                };
                *cd = v & (1 << 16) != 0;
            }
            feature::WRITE_ATOMICITY => f.write_atomicity = v & 1,
            _ => f.async_event_config = v & feature::AEC_SUPPORTED,
        }
        Ok(0)
    }

    fn get_log_page(
        &mut self,
        mem: &mut dyn GuestMemory,
        sqe: &[u8; entry::SQE_BYTES],
    ) -> Result<(), Status> {
        let c10 = cdw(sqe, 10);
        let lid = c10 as u8;
        let numd = (u64::from(c10 >> 16) | u64::from(cdw(sqe, 11) & 0xffff) << 16) + 1;
        let len = numd * 4;
        let offset = u64::from(cdw(sqe, 12)) | u64::from(cdw(sqe, 13)) << 32;
        let page = match lid {
            log_page::ERROR_INFORMATION => {
                let mut p = vec![0u8; ERROR_LOG_ENTRIES * log_page::ERROR_ENTRY_BYTES];
                for (e, out) in self
                    .errors
                    .iter()
                    .zip(p.chunks_exact_mut(log_page::ERROR_ENTRY_BYTES))
                {
                    put(out, 0, &e.count.to_le_bytes());
                    put(out, 8, &e.sqid.to_le_bytes());
                    put(out, 10, &e.cid.to_le_bytes());
                    put(out, 12, &(e.status << 1).to_le_bytes());
                    put(out, 14, &0xffffu16.to_le_bytes());
                }
                p
            }
            log_page::SMART => {
                let mut p = vec![0u8; log_page::PAGE_BYTES];
                // Composite temperature 313 K, available spare 100 %, threshold 10 %.
                put(&mut p, 1, &313u16.to_le_bytes());
                p[3] = 100;
                p[4] = 10;
                let units = |blocks: u64| u128::from(blocks.div_ceil(1000));
                put(&mut p, 32, &units(self.smart.blocks_read).to_le_bytes());
                put(&mut p, 48, &units(self.smart.blocks_written).to_le_bytes());
                put(
                    &mut p,
                    64,
                    &u128::from(self.smart.read_commands).to_le_bytes(),
                );
                put(
                    &mut p,
                    80,
                    &u128::from(self.smart.write_commands).to_le_bytes(),
                );
                put(&mut p, 160, &u128::from(self.error_count).to_le_bytes());
                p
            }
            log_page::FIRMWARE_SLOT => {
                let mut p = vec![0u8; log_page::PAGE_BYTES];
                p[0] = 1;
                ascii(&mut p, 8, identify::FR_LEN, b"1.0");
                p
            }
            _ => {
                log::warn!("nvme: Get Log Page of unsupported log {lid:#x}");
                return Err(Status::INVALID_LOG_PAGE);
            }
        };
        if len > MAX_TRANSFER || offset % 4 != 0 || offset >= page.len() as u64 {
            log::warn!("nvme: Get Log Page {lid:#x}: {len} bytes at offset {offset}");
            return Err(Status::INVALID_FIELD);
        }
        let mut data = vec![0u8; len as usize];
        let from = &page[offset as usize..];
        let n = from.len().min(data.len());
        data[..n].copy_from_slice(&from[..n]);
        self.write_prp(mem, sqe, &data)?;
        if lid == log_page::ERROR_INFORMATION && c10 & log_page::RAE == 0 {
            self.aer_error_masked = false;
        }
        Ok(())
    }
}

fn needs_flush(c: &Cmd) -> bool {
    c.flush_after && !c.flush_started && c.status == Status::SUCCESS
}

// ---- save / restore -----------------------------------------------------------------

impl<B: AsyncBlock> vdev::SaveRestore for Controller<B> {
    const SAVE_ID: [u8; 4] = *b"NVME";
    const SAVE_VERSION: u32 = 1;

    fn save(&self) -> Vec<u8> {
        crate::save::save(self)
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), vdev::RestoreError> {
        let s = crate::save::parse(self, blob)?;
        self.reset();
        crate::save::apply(self, s);
        Ok(())
    }
}

impl<B: AsyncBlock> Controller<B> {
    /// Saved view of what a restore must bring back: held commands as their entries.
    pub(crate) fn held_entries(&self) -> Vec<(u16, [u8; entry::SQE_BYTES])> {
        self.cmds
            .values()
            .map(|c| (c.sqid, c.sqe))
            .chain(self.replay.iter().copied())
            .collect()
    }

    pub(crate) fn shutdown_state(&self) -> u8 {
        match self.shutdown {
            Shutdown::None => 0,
            Shutdown::Draining | Shutdown::Flushing => 1,
            Shutdown::Complete => 2,
        }
    }

    pub(crate) fn set_shutdown_state(&mut self, s: u8) {
        self.shutdown = match s {
            0 => Shutdown::None,
            1 => Shutdown::Draining,
            _ => Shutdown::Complete,
        };
    }
}

/// How a piece's data can travel.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum DmaPlan {
    /// The first this many bytes go straight to guest RAM, in the segments built.
    Segments(u64),
    /// Some byte is not guest RAM.
    NotRam,
    /// The memory offers no direct access (or the limits leave no whole sector):
    /// copy through a buffer.
    Unavailable,
}

/// Fills `out` with the DMA segments of up to `want` bytes of a transfer described
/// by `segs`, starting `skip` bytes in, within `lim`: a whole number of sectors.
pub(crate) fn dma_segments(
    mem: &mut dyn GuestMemory,
    segs: &[Segment],
    mut skip: u64,
    want: u64,
    lim: DmaLimits,
    out: &mut Vec<DmaSegment>,
) -> DmaPlan {
    out.clear();
    let budget = want.min(lim.max_bytes as u64);
    let max_seg = u64::from(lim.max_segment_bytes);
    let mut total = 0u64;
    'runs: for s in segs {
        if skip >= s.len {
            skip -= s.len;
            continue;
        }
        let (mut gpa, mut len) = (s.gpa + skip, s.len - skip);
        skip = 0;
        while len > 0 && total < budget {
            if out.len() == lim.max_segments || max_seg == 0 {
                break 'runs;
            }
            let n = len.min(max_seg).min(budget - total);
            match mem.dma_address(gpa, n as usize) {
                Ok(Some(addr)) => out.push(DmaSegment {
                    addr,
                    len: n as u32,
                }),
                Ok(None) => return DmaPlan::Unavailable,
                Err(_) => return DmaPlan::NotRam,
            }
            total += n;
            gpa += n;
            len -= n;
        }
        if total >= budget {
            break;
        }
    }
    // Whole sectors only: trim the tail.
    let mut excess = total % SECTOR_SIZE;
    while excess > 0 {
        let Some(last) = out.last_mut() else { break };
        let cut = excess.min(u64::from(last.len));
        last.len -= cut as u32;
        excess -= cut;
        total -= cut;
        if last.len == 0 {
            out.pop();
        }
    }
    if total == 0 {
        return DmaPlan::Unavailable;
    }
    DmaPlan::Segments(total)
}
