//! Test helpers: an in-memory asynchronous disk whose requests complete when the
//! test says so, and a host driver that brings the controller up and issues
//! commands the way Linux's `nvme` driver does (admin queue, Identify, Number of
//! Queues, I/O queue pairs, PRP lists).

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use vdev::{
    AccessSize, AsyncBlock, BlockError, BlockOp, Completion, DmaLimits, DmaSegment, GuestMemory,
    Submit, VecMemory,
};

use crate::controller::{Controller, Interrupts};
use crate::defs::{admin, entry, reg, CC};

/// A RAM disk behind [`AsyncBlock`]. With `hold` set, requests wait until
/// [`RamDisk::release`]; otherwise they complete inside `submit`.
pub struct RamDisk {
    pub data: Vec<u8>,
    pub read_only: bool,
    pub hold: bool,
    /// Most requests held at once; more are answered `Busy`.
    pub max_queued: usize,
    pub flushes: u32,
    /// The next request fails with this error.
    pub fail_next: Option<BlockError>,
    /// Takes `submit_dma` requests within these limits (they are always held:
    /// [`RamDisk::release_dma`] performs them on the guest memory given).
    pub dma: Option<DmaLimits>,
    /// Operations submitted with a buffer, and with guest segments.
    pub buffered_ops: u32,
    pub dma_ops: u32,
    /// Calls of `quiesce` (which fails the held DMA requests untouched).
    pub quiesces: u32,
    queued: VecDeque<(u64, BlockOp, Vec<u8>)>,
    queued_dma: VecDeque<(u64, BlockOp, Vec<DmaSegment>)>,
    done: VecDeque<Completion>,
}

impl RamDisk {
    pub fn new(bytes: usize) -> Self {
        RamDisk {
            data: vec![0; bytes],
            read_only: false,
            hold: false,
            max_queued: usize::MAX,
            flushes: 0,
            fail_next: None,
            dma: None,
            buffered_ops: 0,
            dma_ops: 0,
            quiesces: 0,
            queued: VecDeque::new(),
            queued_dma: VecDeque::new(),
            done: VecDeque::new(),
        }
    }

    /// Requests waiting for [`Self::release`] or [`Self::release_dma`].
    pub fn queued(&self) -> usize {
        self.queued.len() + self.queued_dma.len()
    }

    /// DMA requests waiting for [`Self::release_dma`].
    pub fn queued_dma(&self) -> usize {
        self.queued_dma.len()
    }

    /// Performs the `n` oldest held DMA requests on `mem` (the segments' addresses
    /// are guest physical: [`VecMemory::allow_dma`]).
    pub fn release_dma(&mut self, mem: &mut VecMemory, n: usize) {
        for _ in 0..n {
            let Some((tag, op, segs)) = self.queued_dma.pop_front() else {
                return;
            };
            let len: usize = segs.iter().map(|s| s.len as usize).sum();
            let mut buf = vec![0u8; len];
            if let BlockOp::Write { .. } = op {
                let mut at = 0;
                for s in &segs {
                    let n = s.len as usize;
                    mem.read(s.addr, &mut buf[at..at + n])
                        .expect("DMA segment in RAM");
                    at += n;
                }
            }
            let mut c = self.perform(tag, op, buf);
            if let (BlockOp::Read { .. }, Ok(())) = (op, &c.result) {
                let mut at = 0;
                for s in &segs {
                    let n = s.len as usize;
                    mem.write(s.addr, &c.buf[at..at + n])
                        .expect("DMA segment in RAM");
                    at += n;
                }
            }
            c.buf = Vec::new();
            self.done.push_back(c);
        }
    }

    fn perform(&mut self, tag: u64, op: BlockOp, mut buf: Vec<u8>) -> Completion {
        let result = if let Some(e) = self.fail_next.take() {
            Err(e)
        } else {
            match op {
                BlockOp::Read { offset } => match self.range(offset, buf.len()) {
                    Some(r) => {
                        buf.copy_from_slice(&self.data[r]);
                        Ok(())
                    }
                    None => Err(BlockError::OutOfRange),
                },
                BlockOp::Write { offset } if !self.read_only => {
                    match self.range(offset, buf.len()) {
                        Some(r) => {
                            self.data[r].copy_from_slice(&buf);
                            Ok(())
                        }
                        None => Err(BlockError::OutOfRange),
                    }
                }
                BlockOp::Write { .. } => Err(BlockError::ReadOnly),
                BlockOp::Flush => {
                    self.flushes += 1;
                    Ok(())
                }
            }
        };
        Completion { tag, result, buf }
    }

    fn range(&self, offset: u64, len: usize) -> Option<core::ops::Range<usize>> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.data.len()).then_some(start..end)
    }

    /// Completes the `n` oldest held requests (in order).
    pub fn release(&mut self, n: usize) {
        for _ in 0..n {
            let Some((tag, op, buf)) = self.queued.pop_front() else {
                return;
            };
            let c = self.perform(tag, op, buf);
            self.done.push_back(c);
        }
    }
}

impl AsyncBlock for RamDisk {
    fn capacity(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn submit(&mut self, tag: u64, op: BlockOp, buf: Vec<u8>) -> Submit {
        self.buffered_ops += 1;
        if !self.hold {
            return Submit::Done(self.perform(tag, op, buf));
        }
        if self.queued.len() >= self.max_queued {
            return Submit::Busy(buf);
        }
        self.queued.push_back((tag, op, buf));
        Submit::Queued
    }
    fn poll(&mut self) -> Option<Completion> {
        self.done.pop_front()
    }
    fn has_completions(&self) -> bool {
        !self.done.is_empty()
    }
    fn dma_limits(&self) -> Option<DmaLimits> {
        self.dma
    }
    fn submit_dma(&mut self, tag: u64, op: BlockOp, segs: &[DmaSegment]) -> Submit {
        let lim = self.dma.expect("submit_dma without DMA limits");
        let len: u64 = segs.iter().map(|s| u64::from(s.len)).sum();
        assert!(
            !segs.is_empty() && segs.len() <= lim.max_segments,
            "{segs:?}"
        );
        assert!(segs
            .iter()
            .all(|s| s.len > 0 && s.len <= lim.max_segment_bytes));
        assert!(
            len <= lim.max_bytes as u64 && len.is_multiple_of(vdev::SECTOR_SIZE),
            "{len}"
        );
        if self.queued() >= self.max_queued {
            return Submit::Busy(Vec::new());
        }
        self.dma_ops += 1;
        self.queued_dma.push_back((tag, op, segs.to_vec()));
        Submit::Queued
    }
    fn quiesce(&mut self) {
        self.quiesces += 1;
        while let Some((tag, _, _)) = self.queued_dma.pop_front() {
            self.done.push_back(Completion {
                tag,
                result: Err(BlockError::Io),
                buf: Vec::new(),
            });
        }
    }
}

/// Interrupt vectors signalled, in order.
#[derive(Default, Debug)]
pub struct Vectors(pub Vec<u16>);

impl Interrupts for Vectors {
    fn signal(&mut self, vector: u16) {
        self.0.push(vector);
    }
}

/// Guest physical address of the driver's RAM.
pub const RAM_BASE: u64 = 0x4000_0000;
/// Bytes of guest RAM.
pub const RAM_SIZE: usize = 4 << 20;
/// Host memory page size the driver uses (CC.MPS = 0).
pub const PAGE: u64 = 4096;
/// Admin queue entries.
pub const ADMIN_ENTRIES: u16 = 32;
/// Where the driver's queues live: queue `q`'s SQ at `QUEUES + q * 0x4000`, its CQ
/// one 8 KiB half later.
pub const QUEUES: u64 = RAM_BASE;
const QUEUE_STRIDE: u64 = 0x4000;
const CQ_OFFSET: u64 = 0x2000;
/// Bytes of a CQ area.
const CQ_BYTES: usize = 0x2000;
/// First byte of the area tests put data and PRP lists in.
pub const DATA: u64 = RAM_BASE + 0x10_0000;

/// A submission queue entry being built.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sqe {
    pub opcode: u8,
    pub flags: u8,
    pub nsid: u32,
    pub prp1: u64,
    pub prp2: u64,
    pub cdw: [u32; 6],
}

impl Sqe {
    pub fn new(opcode: u8) -> Self {
        Sqe {
            opcode,
            ..Sqe::default()
        }
    }
    pub fn nsid(mut self, nsid: u32) -> Self {
        self.nsid = nsid;
        self
    }
    pub fn prp(mut self, prp1: u64, prp2: u64) -> Self {
        self.prp1 = prp1;
        self.prp2 = prp2;
        self
    }
    /// Sets CDW`n` (10..=15).
    pub fn cdw(mut self, n: usize, v: u32) -> Self {
        self.cdw[n - 10] = v;
        self
    }
    /// The 64 bytes with command identifier `cid`.
    pub fn bytes(&self, cid: u16) -> [u8; entry::SQE_BYTES] {
        let mut b = [0u8; entry::SQE_BYTES];
        b[0] = self.opcode;
        b[1] = self.flags;
        b[2..4].copy_from_slice(&cid.to_le_bytes());
        b[4..8].copy_from_slice(&self.nsid.to_le_bytes());
        b[24..32].copy_from_slice(&self.prp1.to_le_bytes());
        b[32..40].copy_from_slice(&self.prp2.to_le_bytes());
        for (i, v) in self.cdw.iter().enumerate() {
            b[40 + i * 4..44 + i * 4].copy_from_slice(&v.to_le_bytes());
        }
        b
    }
}

/// A completion queue entry as the host reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cqe {
    pub dw0: u32,
    pub sqhd: u16,
    pub sqid: u16,
    pub cid: u16,
    /// Status Code Type and Status Code (DNR and the rest stripped).
    pub sct: u16,
    pub sc: u8,
}

impl Cqe {
    pub fn status(&self) -> crate::Status {
        crate::Status {
            sct: self.sct,
            sc: self.sc,
        }
    }
}

/// The host side of one queue pair.
#[derive(Debug, Clone, Copy)]
pub struct HostQueue {
    pub sq: u64,
    pub cq: u64,
    pub size: u16,
    pub tail: u16,
    pub head: u16,
    pub phase: bool,
}

/// A host driver over guest RAM and a controller.
pub struct Driver<B: AsyncBlock> {
    pub ctrl: Controller<B>,
    pub mem: VecMemory,
    pub irq: Vectors,
    pub queues: Vec<Option<HostQueue>>,
    next_cid: u16,
}

impl<B: AsyncBlock> Driver<B> {
    pub fn new(ctrl: Controller<B>) -> Self {
        let n = usize::from(ctrl.config().io_queues) + 1;
        Driver {
            ctrl,
            mem: VecMemory::new(RAM_BASE, RAM_SIZE),
            irq: Vectors::default(),
            queues: vec![None; n],
            next_cid: 0,
        }
    }

    pub fn write_reg(&mut self, offset: u64, size: AccessSize, value: u64) {
        self.ctrl
            .write(&mut self.mem, &mut self.irq, offset, size, value)
            .expect("register write refused");
    }

    pub fn read_reg(&mut self, offset: u64, size: AccessSize) -> u64 {
        self.ctrl.read(offset, size).expect("register read refused")
    }

    pub fn csts(&mut self) -> u32 {
        self.read_reg(reg::CSTS, AccessSize::Word) as u32
    }

    /// The host's queue addresses for queue `qid`.
    pub fn queue_area(qid: u16) -> (u64, u64) {
        let sq = QUEUES + u64::from(qid) * QUEUE_STRIDE;
        (sq, sq + CQ_OFFSET)
    }

    /// Linux's enable: AQA, ASQ, ACQ, then CC with EN, the entry sizes and the page
    /// size. Returns CSTS.
    pub fn enable(&mut self) -> u32 {
        let (sq, cq) = Self::queue_area(0);
        // Like Linux, the host clears a completion queue before handing it over.
        self.mem.write(cq, &[0; CQ_BYTES]).expect("CQ in RAM");
        let n = u32::from(ADMIN_ENTRIES - 1);
        self.write_reg(reg::AQA, AccessSize::Word, u64::from(n | n << 16));
        self.write_reg(reg::ASQ, AccessSize::Double, sq);
        self.write_reg(reg::ACQ, AccessSize::Double, cq);
        let cc = CC::EN::SET
            + CC::IOSQES.val(entry::SQES_LOG2)
            + CC::IOCQES.val(entry::CQES_LOG2)
            + CC::MPS.val(0);
        let mut v = tock_registers::LocalRegisterCopy::<u32, CC::Register>::new(0);
        v.modify(cc);
        self.write_reg(reg::CC, AccessSize::Word, u64::from(v.get()));
        self.queues[0] = Some(HostQueue {
            sq,
            cq,
            size: ADMIN_ENTRIES,
            tail: 0,
            head: 0,
            phase: true,
        });
        self.csts()
    }

    /// Clears CC.EN (a controller reset) and forgets the host queues.
    pub fn disable(&mut self) {
        let cc = self.read_reg(reg::CC, AccessSize::Word) & !1;
        self.write_reg(reg::CC, AccessSize::Word, cc);
        for q in self.queues.iter_mut() {
            *q = None;
        }
    }

    /// Writes queue `qid`'s SQ tail doorbell.
    pub fn ring_sq(&mut self, qid: u16, tail: u16) {
        let off = reg::DOORBELLS + u64::from(qid) * 8;
        self.write_reg(off, AccessSize::Word, u64::from(tail));
    }

    /// Writes queue `qid`'s CQ head doorbell.
    pub fn ring_cq(&mut self, qid: u16, head: u16) {
        let off = reg::DOORBELLS + u64::from(qid) * 8 + 4;
        self.write_reg(off, AccessSize::Word, u64::from(head));
    }

    /// Puts `sqe` on queue `qid` and rings its doorbell; returns the command ID.
    pub fn submit(&mut self, qid: u16, sqe: Sqe) -> u16 {
        let cid = self.queue_only(qid, sqe);
        let tail = self.queues[usize::from(qid)].expect("queue").tail;
        self.ring_sq(qid, tail);
        cid
    }

    /// Puts `sqe` on queue `qid` without ringing; returns the command ID.
    pub fn queue_only(&mut self, qid: u16, sqe: Sqe) -> u16 {
        let cid = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        let q = self.queues[usize::from(qid)].as_mut().expect("queue");
        let at = q.sq + u64::from(q.tail) * entry::SQE_BYTES as u64;
        q.tail = (q.tail + 1) % q.size;
        self.mem.write(at, &sqe.bytes(cid)).expect("SQ in RAM");
        cid
    }

    /// Completions posted on queue `qid`'s CQ since the last call (the head doorbell
    /// is rung when there were any).
    pub fn reap(&mut self, qid: u16) -> Vec<Cqe> {
        let mut out = Vec::new();
        let Some(q) = self.queues[usize::from(qid)].as_mut() else {
            return out;
        };
        loop {
            let at = q.cq + u64::from(q.head) * entry::CQE_BYTES as u64;
            let mut b = [0u8; entry::CQE_BYTES];
            self.mem.read(at, &mut b).expect("CQ in RAM");
            let dw3 = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
            if (dw3 & entry::PHASE != 0) != q.phase {
                break;
            }
            let status = (dw3 >> entry::STATUS_SHIFT) as u16;
            out.push(Cqe {
                dw0: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                sqhd: u16::from_le_bytes([b[8], b[9]]),
                sqid: u16::from_le_bytes([b[10], b[11]]),
                cid: dw3 as u16,
                sct: (status >> entry::SCT_SHIFT) & 0b111,
                sc: status as u8,
            });
            q.head = (q.head + 1) % q.size;
            if q.head == 0 {
                q.phase = !q.phase;
            }
        }
        if !out.is_empty() {
            let head = q.head;
            self.ring_cq(qid, head);
        }
        out
    }

    /// Polls the controller (backend completions).
    pub fn poll(&mut self) {
        self.ctrl.poll(&mut self.mem, &mut self.irq);
    }

    /// Submits `sqe` on queue `qid` and returns its completion, polling the
    /// controller until it comes (the backend must complete on its own).
    pub fn cmd(&mut self, qid: u16, sqe: Sqe) -> Cqe {
        let cid = self.submit(qid, sqe);
        for _ in 0..4 {
            if let Some(c) = self.reap(qid).into_iter().find(|c| c.cid == cid) {
                return c;
            }
            self.poll();
        }
        panic!("command {cid} on queue {qid} did not complete");
    }

    /// An admin command.
    pub fn admin(&mut self, sqe: Sqe) -> Cqe {
        self.cmd(0, sqe)
    }

    /// Creates I/O queue pair `qid` of `size` entries on vector `iv`, as Linux does
    /// (CQ first, then SQ). Returns the two completions.
    pub fn create_pair(&mut self, qid: u16, size: u16, iv: u16) -> (Cqe, Cqe) {
        let (sq, cq) = Self::queue_area(qid);
        self.mem.write(cq, &[0; CQ_BYTES]).expect("CQ in RAM");
        let c10 = u32::from(qid) | u32::from(size - 1) << 16;
        let a = self.admin(
            Sqe::new(admin::CREATE_IO_CQ)
                .prp(cq, 0)
                .cdw(10, c10)
                .cdw(11, u32::from(iv) << 16 | 0b11),
        );
        let b = self.admin(
            Sqe::new(admin::CREATE_IO_SQ)
                .prp(sq, 0)
                .cdw(10, c10)
                .cdw(11, u32::from(qid) << 16 | 1),
        );
        if a.status() == crate::Status::SUCCESS && b.status() == crate::Status::SUCCESS {
            self.queues[usize::from(qid)] = Some(HostQueue {
                sq,
                cq,
                size,
                tail: 0,
                head: 0,
                phase: true,
            });
        }
        (a, b)
    }
}
