//! The system disk: the host's virtio-blk device behind a virtio-mmio transport, which
//! the hypervisor drives itself (with the `virtio-drivers` crate) to keep its VM
//! registry and guest disks on. This module owns finding that device among the
//! device tree's virtio-mmio slots, the identity-map DMA [`Hal`] the driver needs,
//! the request engine shared by every user of the disk, and two views of it: the
//! synchronous [`vdev::BlockBackend`] the registry and the TPM's NV store run on
//! ([`SystemDisk`]), and the asynchronous [`vdev::AsyncBlock`] a guest's virtio-blk
//! runs on ([`DiskExtent`]).
//!
//! Requests complete by interrupt: the device's SPI (from the device tree) is routed
//! to the boot CPU, then to whichever CPU last submitted a guest's request, whose
//! handler ([`service_interrupt`]) takes the finished
//! requests off the used ring, hands each to the inbox of whoever submitted it and
//! raises that user's [`vdev::WorkSignal`]; the guest's request then completes on the
//! CPU's way back to the guest. The handler locks only the engine and the inboxes.
//! Synchronous users wait for their own request, taking completions off the ring
//! themselves meanwhile (their CPU may be the one whose interrupts are masked), and
//! hold no lock a guest's completion needs while they wait.
//!
//! DMA: the hypervisor's identity map makes every RAM pointer its own physical
//! address, there is no IOMMU, and the virtio-mmio devices this runs on are
//! cache-coherent (`dma-coherent`; QEMU's always are), so buffers are handed to the
//! device in place. Every buffer the device may write is hypervisor heap memory that
//! travels with its request (a guest's data moves through its virtio-blk's bounce
//! buffers, never guest RAM), so a request still at the device when its guest resets
//! can only write a buffer nobody else uses.

use core::hint::spin_loop;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0, MPIDR_EL1};
use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::sync::Arc;
use alloc::vec::Vec;
use arch::relax::Mutex;
use vdev::{
    AsyncBlock, BlockBackend, BlockError, BlockOp, Completion, DmaLimits, DmaSegment, Submit,
    WorkSignal, SECTOR_SIZE,
};
use virtio::defs::{blk, features};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::mmio::{MmioError, MmioTransport, MmioVersion, VirtIOHeader};
use virtio_drivers::transport::{DeviceStatus, DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// Descriptors in the request queue (QEMU's virtio-blk offers 256). A request takes
/// one descriptor for its header, one per data segment and one for its status:
/// directly in the ring, or, when the device offers indirect descriptors (QEMU's
/// do), in a table of its own (one heap allocation per request) that takes one
/// descriptor of the ring. Without them one request of a guest's 1 MiB transfer
/// (256 pages: 254 segments and the frame) filled the whole ring, and the rest
/// waited for it to come back: two round trips to the host's disk per command.
const QUEUE_SIZE: usize = 256;
/// The virtio-blk request queue's index.
const REQUEST_QUEUE: u16 = 0;
/// Descriptors a request needs besides its data: header and status.
const FRAME_DESCRIPTORS: usize = 2;
/// Most data segments of one request.
const MAX_SEGMENTS: usize = QUEUE_SIZE - FRAME_DESCRIPTORS;
/// Most bytes one request moves straight from or to guest RAM.
const MAX_DMA_BYTES: usize = 4 << 20;
/// The features this driver uses when the device offers them (virtio 1.2 §5.2.3,
/// §6): anything else is declined.
const DRIVER_FEATURES: u64 = blk::F_SIZE_MAX
    | blk::F_SEG_MAX
    | blk::F_RO
    | blk::F_FLUSH
    | features::EVENT_IDX
    | features::INDIRECT_DESC
    | features::VERSION_1;
/// Config-space offset of the high half of `capacity` (read as two le32 halves: a
/// legacy virtio-mmio device takes config accesses of at most 32 bits).
const CFG_CAPACITY_HIGH: usize = blk::CFG_CAPACITY + 4;

/// Bytes per buffered request (the registry's and the TPM's, which move through
/// hypervisor buffers: one data segment each), unless the device's `size_max` is
/// lower. Per-request cost dominates under QEMU: 64 MiB sequential moved ~3x faster
/// with 1 MiB requests than with 64 KiB ones.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// A request still outstanding after this many seconds is logged (and waited for
/// further: the device owns the buffers until it returns them).
const STALL_WARN_SECS: u64 = 5;
/// Polls of the used ring before the CPU naps between polls instead.
const SPINS_BEFORE_NAP: u32 = 64;
/// How long one nap lasts, in microseconds: long enough to give the physical CPU
/// back (on an emulator, to the thread doing the disk I/O), short next to a request.
const NAP_US: u64 = 20;

/// Set while a [`SystemDisk`] owns a transport: the driver takes its virtio-mmio
/// registers exclusively, so a second probe must not build another transport over
/// the same device.
static CLAIMED: AtomicBool = AtomicBool::new(false);

/// The `virtio-drivers` platform layer for the EL2 identity map.
pub struct IdentityHal;

/// The heap layout of `pages` DMA pages, page-aligned; `None` for 0 or overflow.
fn dma_layout(pages: usize) -> Option<Layout> {
    if pages == 0 {
        return None;
    }
    Layout::from_size_align(pages.checked_mul(PAGE_SIZE)?, PAGE_SIZE).ok()
}

// SAFETY: `dma_alloc` returns zeroed, page-aligned heap memory that nothing else
// references until `dma_dealloc` returns it (the global allocator hands out disjoint
// blocks); the heap is identity-mapped RAM, so its pointer value is the physical
// address the device uses. `share` returns the buffer's own address for the same
// reason (heap buffers and guest RAM alike are identity-mapped), and the device is
// cache-coherent, so neither `share` nor `unshare` needs to copy or maintain caches.
// `mmio_phys_to_virt` is the identity (only the PCI transport calls it; this
// hypervisor uses virtio-mmio).
unsafe impl Hal for IdentityHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Some(layout) = dma_layout(pages) else {
            return (0, NonNull::dangling());
        };
        // SAFETY: `layout` has a non-zero size (pages > 0, checked by `dma_layout`).
        let ptr = unsafe { alloc_zeroed(layout) };
        match NonNull::new(ptr) {
            Some(p) => (ptr as PhysAddr, p),
            // virtio-drivers reports a 0 physical address as `Error::DmaError`.
            None => (0, NonNull::dangling()),
        }
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let Some(layout) = dma_layout(pages) else {
            return -1;
        };
        // SAFETY: the caller guarantees `vaddr`/`pages` come from a `dma_alloc` call
        // that succeeded, which allocated exactly `layout` from the global allocator.
        unsafe { dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as usize as *mut u8).unwrap_or(NonNull::dangling())
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr() as *mut u8 as usize as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

/// Why no system disk could be brought up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SysDiskError {
    /// No virtio-mmio transport holds a virtio-blk device.
    NotFound,
    /// A [`SystemDisk`] already owns the device (probe once).
    AlreadyClaimed,
    /// The virtio-blk device at `base` failed initialisation (and no later one
    /// succeeded).
    Init {
        base: u64,
        error: virtio_drivers::Error,
    },
    /// The device at `base` reports a capacity that does not fit in 64-bit bytes.
    BadCapacity { base: u64, sectors: u64 },
}

/// Finished requests of one user of the disk, waiting for it to collect them.
struct Inbox {
    done: Mutex<VecDeque<Completion>>,
    /// Raised when a completion arrives (a guest disk's VM work signal).
    waker: Mutex<Option<WorkSignal>>,
    /// Requests submitted and not delivered yet.
    pending: AtomicUsize,
}

impl Inbox {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            done: Mutex::new(VecDeque::new()),
            waker: Mutex::new(None),
            pending: AtomicUsize::new(0),
        })
    }

    fn deliver(&self, c: Completion) {
        self.done.lock().push_back(c);
        self.pending.fetch_sub(1, Ordering::AcqRel);
        if let Some(w) = &*self.waker.lock() {
            w.raise();
        }
    }

    fn take(&self, tag: u64) -> Option<Completion> {
        let mut done = self.done.lock();
        let i = done.iter().position(|c| c.tag == tag)?;
        done.remove(i)
    }
}

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush,
}

impl Kind {
    /// The request type in the header (virtio 1.2 §5.2.6).
    fn request_type(self) -> u32 {
        match self {
            Kind::Read => blk::T_IN,
            Kind::Write => blk::T_OUT,
            Kind::Flush => blk::T_FLUSH,
        }
    }
}

/// Byte ranges of the request header's `type` (le32) and `sector` (le64) fields
/// (virtio 1.2 §5.2.6; a reserved le32 lies between them).
const HEADER_TYPE: core::ops::Range<usize> = 0..4;
const HEADER_SECTOR: core::ops::Range<usize> = 8..blk::REQ_HEADER_SIZE;

/// The header of a `kind` request at `sector`.
fn request_header(kind: Kind, sector: u64) -> [u8; blk::REQ_HEADER_SIZE] {
    let mut h = [0; blk::REQ_HEADER_SIZE];
    h[HEADER_TYPE].copy_from_slice(&kind.request_type().to_le_bytes());
    h[HEADER_SECTOR].copy_from_slice(&sector.to_le_bytes());
    h
}

/// Where a request's data is.
enum Data {
    /// None (a flush).
    None,
    /// A hypervisor buffer (one segment).
    Buf(Vec<u8>),
    /// Guest RAM, segment by segment, which the device reads or writes directly.
    Guest(Vec<DmaSegment>),
}

/// A request's header and status byte, in memory that stays put while the device
/// holds the request (one per descriptor: never more requests than that).
#[repr(C)]
#[derive(Clone, Copy)]
struct Frame {
    header: [u8; blk::REQ_HEADER_SIZE],
    status: [u8; 1],
}

/// A request the device holds: its frame, and its data, which stays where it is
/// (a buffer's heap allocation does not move; guest RAM stays populated until the VM
/// resets, which waits for it) until it comes back.
struct InFlight {
    frame: u16,
    data: Data,
    kind: Kind,
    tag: u64,
    sector: u64,
    to: Arc<Inbox>,
    /// When it was submitted (`iostat`; 0 when not measured).
    t0: u64,
}

/// A request's buffers as the queue takes them: device-readable ones (`ins`) first,
/// then device-writable ones (`outs`); returns how many of each.
///
/// # Safety
///
/// Every [`Data::Guest`] segment must be guest RAM from `GuestMemory::dma_address`
/// (identity-mapped, populated, not freed while the request is at the device). The
/// slices made for them only carry their address and length to the queue, which
/// never reads or writes through them.
unsafe fn buffers<'a>(
    frame: &'a mut Frame,
    kind: Kind,
    data: &'a mut Data,
    ins: &mut [&'a [u8]; QUEUE_SIZE],
    outs: &mut [&'a mut [u8]; QUEUE_SIZE],
) -> (usize, usize) {
    let Frame { header, status } = frame;
    ins[0] = &header[..];
    let (mut ni, mut no) = (1, 0);
    match data {
        Data::None => {}
        Data::Buf(b) => {
            if kind == Kind::Write {
                ins[ni] = &b[..];
                ni += 1;
            } else {
                outs[no] = &mut b[..];
                no += 1;
            }
        }
        Data::Guest(segs) => {
            for s in segs.iter() {
                let p = s.addr as usize as *mut u8;
                if kind == Kind::Write {
                    // SAFETY: see the function's contract.
                    ins[ni] = unsafe { core::slice::from_raw_parts(p, s.len as usize) };
                    ni += 1;
                } else {
                    // SAFETY: see the function's contract.
                    outs[no] = unsafe { core::slice::from_raw_parts_mut(p, s.len as usize) };
                    no += 1;
                }
            }
        }
    }
    outs[no] = &mut status[..];
    (ni, no + 1)
}

/// The device and its requests in flight, shared by every user of the disk.
struct Engine {
    transport: MmioTransport<'static>,
    queue: VirtQueue<IdentityHal, QUEUE_SIZE>,
    /// Size in bytes.
    capacity: u64,
    read_only: bool,
    /// Whether VIRTIO_BLK_T_FLUSH is available (otherwise completed writes are
    /// already durable: the device has no volatile cache to flush).
    can_flush: bool,
    /// Most bytes per buffered request: a multiple of [`SECTOR_SIZE`], at most
    /// [`MAX_REQUEST_BYTES`].
    chunk: usize,
    /// What a request on guest RAM may carry.
    dma: DmaLimits,
    /// Whether requests take indirect descriptor tables.
    indirect: bool,
    /// Set once the device broke the virtqueue protocol; it has been reset and all
    /// further I/O fails with [`BlockError::Io`].
    failed: bool,
    /// Headers and status bytes, and the ones free.
    frames: Box<[Frame]>,
    free_frames: Vec<u16>,
    /// Requests at the device, by the token the driver gave them.
    slots: Vec<Option<InFlight>>,
    in_flight: usize,
    /// Segment lists of finished requests, for reuse.
    seg_pool: Vec<Vec<DmaSegment>>,
}

// SAFETY: (for `Send`) the engine is only reached through its mutex; the raw pointers
// inside the driver (the transport's register window, the queue's DMA pages) and the
// buffers of requests in flight are owned by it and used by one CPU at a time.
unsafe impl Send for Engine {}

/// The engine, for the interrupt handler.
static ENGINE: Mutex<Option<Arc<Mutex<Engine>>>> = Mutex::new(None);
/// The system disk's interrupt (an INTID), `u32::MAX` when it has none (then its
/// users poll).
static DISK_INTID: AtomicU32 = AtomicU32::new(u32::MAX);

/// Affinity (the MPIDR_EL1 affinity fields) of the CPU the disk's interrupt is
/// routed to; `u64::MAX` until a guest's request first routes it.
static ROUTED_TO: AtomicU64 = AtomicU64::new(u64::MAX);

/// Affinity of the CPU whose vCPU takes the guest's disk interrupt (`u64::MAX`:
/// unknown, the submitter's CPU takes it).
static CONSUMER: AtomicU64 = AtomicU64::new(u64::MAX);

/// Notes where the guest takes its disk completions: `affinity` is the CPU of the
/// one vCPU that completed work just interrupted, `None` when it interrupted several
/// (then the submitter's CPU takes the disk's interrupt). Guests route a disk's
/// interrupt to one vCPU (Linux: the first CPU) whichever vCPU submits, so routing
/// the host's interrupt there saves a cross-CPU wake-up per request.
pub fn completions_taken_on(affinity: Option<u64>) {
    CONSUMER.store(affinity.unwrap_or(u64::MAX), Ordering::Relaxed);
}

/// Routes the disk's interrupt to the CPU whose vCPU takes the guest's completion
/// interrupt (see [`completions_taken_on`]), or else to this CPU, unless it goes
/// there already: a guest's request then completes on the CPU of the vCPU that
/// handles it (running, or in WFI on that very CPU) rather than on another CPU that
/// must first be woken and then wake that vCPU's: under QEMU that detour tripled a
/// request's latency. Called with the engine locked, so concurrent submitters route
/// in turn.
fn route_interrupt_here() {
    let Some(id) = intid() else { return };
    let to = match CONSUMER.load(Ordering::Relaxed) {
        u64::MAX => MPIDR_EL1.get() & arch::smccc::MPIDR_AFFINITY_MASK,
        consumer => consumer,
    };
    if ROUTED_TO.swap(to, Ordering::AcqRel) != to {
        crate::gic::route_spi(id, to);
    }
}

/// The system disk's interrupt, if requests complete by interrupt.
pub fn intid() -> Option<u32> {
    let id = DISK_INTID.load(Ordering::Relaxed);
    (id != u32::MAX).then_some(id)
}

/// The system disk's interrupt handler: delivers every finished request to its user.
pub fn service_interrupt() {
    let engine = ENGINE.lock().clone();
    if let Some(e) = engine {
        e.lock().harvest();
    }
}

impl Engine {
    /// Checks a byte range against alignment and capacity (`max` bytes at most).
    fn check(&self, op: &str, offset: u64, len: usize, max: usize) -> Result<(), BlockError> {
        if self.failed {
            return Err(BlockError::Io);
        }
        let len = len as u64;
        if !offset.is_multiple_of(SECTOR_SIZE)
            || !len.is_multiple_of(SECTOR_SIZE)
            || len == 0
            || len > max as u64
        {
            log::warn!(
                "system disk: {op} of {len} bytes at byte {offset} is not a sector-aligned request of at most {max} bytes; refused"
            );
            return Err(BlockError::OutOfRange);
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.capacity => Ok(()),
            _ => {
                log::warn!(
                    "system disk: {op} of {len} bytes at byte {offset} runs past the end ({} bytes); refused",
                    self.capacity
                );
                Err(BlockError::OutOfRange)
            }
        }
    }

    /// Checks guest segments against the device's limits.
    fn check_segments(&self, segs: &[DmaSegment]) -> Result<usize, BlockError> {
        let ok = !segs.is_empty()
            && segs.len() <= self.dma.max_segments
            && segs
                .iter()
                .all(|s| s.len > 0 && s.len <= self.dma.max_segment_bytes);
        if !ok {
            log::warn!(
                "system disk: {} guest segments outside the device's limits ({:?}); refused",
                segs.len(),
                self.dma
            );
            return Err(BlockError::OutOfRange);
        }
        Ok(segs.iter().map(|s| s.len as usize).sum())
    }

    /// Hands back what a request that did not reach the device carried.
    fn unwind(&mut self, data: Data) -> Vec<u8> {
        match data {
            Data::Buf(b) => b,
            Data::Guest(segs) => {
                self.recycle(segs);
                Vec::new()
            }
            Data::None => Vec::new(),
        }
    }

    fn recycle(&mut self, mut segs: Vec<DmaSegment>) {
        if self.seg_pool.len() < QUEUE_SIZE {
            segs.clear();
            self.seg_pool.push(segs);
        }
    }

    /// Starts `op` for `to`, its data in `data` (`t0`: when a guest submitted it,
    /// for `iostat`; 0 otherwise).
    fn submit(&mut self, to: &Arc<Inbox>, tag: u64, op: BlockOp, data: Data, t0: u64) -> Submit {
        let done = |result, buf| Submit::Done(Completion { tag, result, buf });
        let (kind, offset) = match op {
            BlockOp::Flush if self.failed => return done(Err(BlockError::Io), self.unwind(data)),
            BlockOp::Flush if !self.can_flush => return done(Ok(()), self.unwind(data)),
            BlockOp::Flush => (Kind::Flush, 0),
            BlockOp::Read { offset } => (Kind::Read, offset),
            BlockOp::Write { offset } => (Kind::Write, offset),
        };
        if kind != Kind::Flush {
            let name = if kind == Kind::Write { "write" } else { "read" };
            let check = if kind == Kind::Write && self.read_only {
                log::warn!("system disk: write at byte {offset} to a read-only disk refused");
                Err(BlockError::ReadOnly)
            } else {
                match &data {
                    Data::Buf(b) => self.check(name, offset, b.len(), self.chunk),
                    Data::Guest(segs) => self
                        .check_segments(segs)
                        .and_then(|len| self.check(name, offset, len, self.dma.max_bytes)),
                    Data::None => Err(BlockError::OutOfRange),
                }
            };
            if let Err(e) = check {
                return done(Err(e), self.unwind(data));
            }
        }
        let Some(frame) = self.free_frames.pop() else {
            let buf = self.unwind(data);
            return Submit::Busy(buf);
        };
        let sector = offset / SECTOR_SIZE;
        let mut f = InFlight {
            frame,
            data,
            kind,
            tag,
            sector,
            to: to.clone(),
            t0,
        };
        let fr = &mut self.frames[usize::from(frame)];
        fr.header = request_header(kind, sector);
        fr.status = [u8::MAX];
        let mut ins: [&[u8]; QUEUE_SIZE] = [&[]; QUEUE_SIZE];
        let mut outs: [&mut [u8]; QUEUE_SIZE] = core::array::from_fn(|_| Default::default());
        // SAFETY: guest segments come from `DiskExtent::submit_dma`, whose caller got
        // them from `GuestMemory::dma_address`.
        let (ni, no) = unsafe { buffers(fr, kind, &mut f.data, &mut ins, &mut outs) };
        // SAFETY: the frame (a slot of a boxed slice that is never reallocated), the
        // buffer's heap allocation and the guest RAM stay where they are while the
        // request is at the device: `f` moves into `slots` (a move of the Vec, not of
        // what it points to), and none of them is used or freed until the device
        // returns the request (`harvest`) or has been reset (`fail`).
        let added = unsafe { self.queue.add(&ins[..ni], &mut outs[..no]) };
        match added {
            Ok(token) => match self.slots.get_mut(usize::from(token)) {
                Some(slot @ None) => {
                    *slot = Some(f);
                    self.in_flight += 1;
                    to.pending.fetch_add(1, Ordering::AcqRel);
                    if self.queue.should_notify() {
                        self.transport.notify(REQUEST_QUEUE);
                    }
                    Submit::Queued
                }
                _ => {
                    log::error!(
                        "system disk: the driver reused token {token} of a request in flight; resetting the device, the disk is now offline"
                    );
                    // `fail` resets the device before `f` (whose buffers it was
                    // given) is dropped.
                    self.fail();
                    let buf = self.unwind(f.data);
                    done(Err(BlockError::Io), buf)
                }
            },
            Err(virtio_drivers::Error::QueueFull) => {
                self.free_frames.push(frame);
                let buf = self.unwind(f.data);
                Submit::Busy(buf)
            }
            Err(e) => {
                log::error!("system disk: request at sector {sector} could not be queued: {e}");
                self.free_frames.push(frame);
                let buf = self.unwind(f.data);
                done(Err(BlockError::Io), buf)
            }
        }
    }

    /// Takes every finished request off the used ring and delivers it.
    fn harvest(&mut self) {
        if self.failed {
            return;
        }
        self.transport.ack_interrupt();
        while let Some(token) = self.queue.peek_used() {
            let Some(mut f) = self
                .slots
                .get_mut(usize::from(token))
                .and_then(Option::take)
            else {
                log::error!(
                    "system disk: device returned request {token}, which it was not given; resetting it, the disk is now offline"
                );
                self.fail();
                return;
            };
            self.in_flight -= 1;
            crate::iostat::harvested(f.t0);
            let fr = &mut self.frames[usize::from(f.frame)];
            let mut ins: [&[u8]; QUEUE_SIZE] = [&[]; QUEUE_SIZE];
            let mut outs: [&mut [u8]; QUEUE_SIZE] = core::array::from_fn(|_| Default::default());
            // SAFETY: the same frame and data the request was added with (kept in
            // its slot since); see `buffers`.
            let (ni, no) = unsafe { buffers(fr, f.kind, &mut f.data, &mut ins, &mut outs) };
            // SAFETY: exactly the buffers that were added under `token`.
            let popped = unsafe { self.queue.pop_used(token, &ins[..ni], &mut outs[..no]) };
            let status = self.frames[usize::from(f.frame)].status[0];
            self.free_frames.push(f.frame);
            let result = match popped {
                Ok(_) if status == blk::S_OK => Ok(()),
                other => {
                    log::error!(
                        "system disk: {:?} at sector {} failed: status {status}, {other:?}",
                        f.kind,
                        f.sector,
                    );
                    Err(BlockError::Io)
                }
            };
            let buf = self.unwind(core::mem::replace(&mut f.data, Data::None));
            f.to.deliver(Completion {
                tag: f.tag,
                result,
                buf,
            });
        }
    }

    /// Takes the device offline after a protocol violation: resetting it makes it
    /// drop every buffer it holds, so none can be written later; every request in
    /// flight then fails.
    fn fail(&mut self) {
        self.failed = true;
        // Writing 0 to Status is the architected device reset; the queue is not used
        // for I/O again (`failed`).
        self.transport.set_status(DeviceStatus::empty());
        self.in_flight = 0;
        let slots = core::mem::take(&mut self.slots);
        for f in slots.into_iter().flatten() {
            let buf = self.unwind(f.data);
            f.to.deliver(Completion {
                tag: f.tag,
                result: Err(BlockError::Io),
                buf,
            });
        }
    }
}

/// The host's virtio-blk disk the hypervisor keeps its registry and guest disks on,
/// as a synchronous [`BlockBackend`]: each call waits for its own requests.
pub struct SystemDisk {
    engine: Arc<Mutex<Engine>>,
    inbox: Arc<Inbox>,
    capacity: u64,
    read_only: bool,
    legacy: bool,
    chunk: usize,
    next_tag: u64,
    /// Data moves through here (the device writes only hypervisor buffers).
    bounce: Vec<u8>,
}

impl SystemDisk {
    /// Probes the virtio-mmio transports in order and takes the first block device
    /// (skipping DeviceID 0 slots), and routes its interrupt (if the device tree
    /// names one) to the boot CPU. Call once: the disk owns the transport's registers
    /// from then on. The transports must be identity-mapped as device memory.
    pub fn probe(transports: &[(boards::Range, Option<u32>)]) -> Result<SystemDisk, SysDiskError> {
        if CLAIMED.swap(true, Ordering::AcqRel) {
            return Err(SysDiskError::AlreadyClaimed);
        }
        let result = Self::probe_claimed(transports);
        if result.is_err() {
            CLAIMED.store(false, Ordering::Release);
        }
        result
    }

    fn probe_claimed(
        transports: &[(boards::Range, Option<u32>)],
    ) -> Result<SystemDisk, SysDiskError> {
        let mut first_error = None;
        for (range, irq) in transports {
            if range.size < virtio::defs::mmio::CONFIG || range.base == 0 {
                log::warn!(
                    "virtio-mmio slot {:#x}: window of {:#x} bytes is too small, skipped",
                    range.base,
                    range.size
                );
                continue;
            }
            let size = usize::try_from(range.size).unwrap_or(usize::MAX);
            let Some(header) = NonNull::new(range.base as usize as *mut VirtIOHeader) else {
                continue;
            };
            // SAFETY: `range` is a virtio-mmio register window from the device tree,
            // identity-mapped as device memory for the hypervisor's whole life, so it
            // is valid for 'static. No other transport over it exists: `CLAIMED`
            // makes this the only probe, and a transport built here for a slot that
            // is not taken is dropped before the next slot is looked at.
            let transport = match unsafe { MmioTransport::new(header, size) } {
                Ok(t) => t,
                Err(MmioError::InvalidDeviceID(_)) => continue, // empty slot
                Err(e) => {
                    log::debug!("virtio-mmio slot {:#x}: {e}", range.base);
                    continue;
                }
            };
            let kind = transport.device_type();
            if kind != DeviceType::Block {
                log::info!(
                    "virtio-mmio slot {:#x}: {kind:?} device, not a disk",
                    range.base
                );
                continue;
            }
            match Self::bring_up(range.base, transport) {
                Ok(engine) => return Ok(Self::finish(range.base, *irq, engine)),
                Err(e) => {
                    if let SysDiskError::Init { error, .. } = &e {
                        log::error!(
                            "virtio-blk at {:#x}: initialisation failed: {error}",
                            range.base
                        );
                    }
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or(SysDiskError::NotFound))
    }

    /// Initialises the device (virtio 1.2 §3.1.1): features, geometry from the
    /// configuration space, the request queue.
    fn bring_up(base: u64, mut transport: MmioTransport<'static>) -> Result<Engine, SysDiskError> {
        let init = |error| SysDiskError::Init { base, error };
        transport.set_status(DeviceStatus::empty());
        transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
        let offered = transport.read_device_features();
        let negotiated = offered & DRIVER_FEATURES;
        transport.write_driver_features(negotiated);
        let features_ok =
            DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK;
        transport.set_status(features_ok);
        if transport.version() == MmioVersion::Modern
            && !transport.get_status().contains(DeviceStatus::FEATURES_OK)
        {
            transport.set_status(DeviceStatus::FAILED);
            return Err(init(virtio_drivers::Error::Unsupported));
        }
        transport.set_guest_page_size(PAGE_SIZE as u32);
        let config = |offset| transport.read_config_space::<u32>(offset).map_err(init);
        let (low, high) = transport
            .read_consistent(|| {
                Ok((
                    transport.read_config_space::<u32>(blk::CFG_CAPACITY)?,
                    transport.read_config_space::<u32>(CFG_CAPACITY_HIGH)?,
                ))
            })
            .map_err(init)?;
        let sectors = u64::from(high) << 32 | u64::from(low);
        let Some(capacity) = sectors.checked_mul(SECTOR_SIZE) else {
            log::error!("virtio-blk at {base:#x}: capacity of {sectors} sectors is impossible");
            return Err(SysDiskError::BadCapacity { base, sectors });
        };
        let sector = SECTOR_SIZE as usize;
        let (mut chunk, mut max_segment_bytes) = (MAX_REQUEST_BYTES, u32::MAX);
        if negotiated & blk::F_SIZE_MAX != 0 {
            let size_max = config(blk::CFG_SIZE_MAX)?;
            max_segment_bytes = size_max.max(1);
            let limit = (size_max as usize / sector) * sector;
            if limit == 0 {
                log::warn!(
                    "virtio-blk at {base:#x}: size_max {size_max} is below one sector; using one sector per request"
                );
                chunk = sector;
            } else {
                chunk = chunk.min(limit);
            }
        }
        let mut max_segments = MAX_SEGMENTS;
        if negotiated & blk::F_SEG_MAX != 0 {
            let seg_max = config(blk::CFG_SEG_MAX)?;
            max_segments = max_segments.min((seg_max as usize).max(1));
        }
        let offered = transport.max_queue_size(REQUEST_QUEUE);
        if offered < QUEUE_SIZE as u32 {
            log::error!(
                "virtio-blk at {base:#x}: its queue holds {offered} descriptors, this driver needs {QUEUE_SIZE}"
            );
            transport.set_status(DeviceStatus::FAILED);
            return Err(init(virtio_drivers::Error::InvalidParam));
        }
        let queue = VirtQueue::<IdentityHal, QUEUE_SIZE>::new(
            &mut transport,
            REQUEST_QUEUE,
            negotiated & features::INDIRECT_DESC != 0,
            negotiated & features::EVENT_IDX != 0,
        )
        .map_err(init)?;
        transport.finish_init();
        Ok(Engine {
            transport,
            queue,
            capacity,
            read_only: negotiated & blk::F_RO != 0,
            can_flush: negotiated & blk::F_FLUSH != 0,
            chunk,
            dma: DmaLimits {
                max_segments,
                max_segment_bytes,
                max_bytes: MAX_DMA_BYTES,
            },
            indirect: negotiated & features::INDIRECT_DESC != 0,
            failed: false,
            frames: alloc::vec![
                Frame {
                    header: [0; blk::REQ_HEADER_SIZE],
                    status: [0],
                };
                QUEUE_SIZE
            ]
            .into_boxed_slice(),
            free_frames: (0..QUEUE_SIZE as u16).collect(),
            slots: (0..QUEUE_SIZE).map(|_| None).collect(),
            in_flight: 0,
            seg_pool: Vec::new(),
        })
    }

    fn finish(base: u64, irq: Option<u32>, engine: Engine) -> SystemDisk {
        let legacy = engine.transport.version() == MmioVersion::Legacy;
        let (capacity, read_only, chunk) = (engine.capacity, engine.read_only, engine.chunk);
        log::info!(
            "system disk: virtio-blk at {base:#x} ({} virtio-mmio), {} MiB ({} sectors), {}, flush {}, {} KiB per buffered request, guest data by DMA in up to {} segments of up to {} bytes, {QUEUE_SIZE} descriptors{}, {}",
            if legacy { "legacy" } else { "modern" },
            capacity >> 20,
            capacity / SECTOR_SIZE,
            if read_only { "read-only" } else { "read-write" },
            if engine.can_flush { "supported" } else { "not offered (write-through)" },
            chunk >> 10,
            engine.dma.max_segments,
            engine.dma.max_segment_bytes,
            if engine.indirect { " (requests in indirect tables)" } else { "" },
            match irq {
                Some(id) => alloc::format!("completion by interrupt {id}"),
                None => alloc::string::String::from("no interrupt: completions are polled"),
            }
        );
        let engine = Arc::new(Mutex::new(engine));
        *ENGINE.lock() = Some(engine.clone());
        if let Some(id) = irq {
            DISK_INTID.store(id, Ordering::Relaxed);
            crate::gic::enable_spi(id);
        }
        SystemDisk {
            engine,
            inbox: Inbox::new(),
            capacity,
            read_only,
            legacy,
            chunk,
            next_tag: 0,
            bounce: Vec::new(),
        }
    }

    /// Size in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether the transport is the legacy (version 1) virtio-mmio interface.
    pub fn is_legacy(&self) -> bool {
        self.legacy
    }

    /// `len` bytes at byte `start` of the disk as an asynchronous disk of its own
    /// (a guest's disk). The range is clipped to the disk.
    pub fn extent(&self, start: u64, len: u64, read_only: bool) -> DiskExtent {
        let start = start.min(self.capacity);
        DiskExtent {
            engine: self.engine.clone(),
            inbox: Inbox::new(),
            start,
            len: len.min(self.capacity - start),
            read_only: read_only || self.read_only,
            chunk: self.chunk,
            dma: self.engine.lock().dma,
        }
    }

    /// Runs one request (at most `self.chunk` bytes) and waits for it: the request
    /// goes to the device, and until it is back this CPU takes finished requests off
    /// the used ring itself (delivering other users' too), polling briefly and then
    /// napping on the EL2 timer so the I/O gets the physical CPU.
    fn run(&mut self, op: BlockOp, len: usize) -> Result<(), BlockError> {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        let mut buf = Vec::new();
        if op != BlockOp::Flush {
            buf = core::mem::take(&mut self.bounce);
            buf.resize(len, 0);
        }
        let mut waiter = Waiter::new(op);
        loop {
            let data = if op == BlockOp::Flush {
                Data::None
            } else {
                Data::Buf(buf)
            };
            let submitted = self.engine.lock().submit(&self.inbox, tag, op, data, 0);
            match submitted {
                Submit::Done(c) => {
                    self.bounce = c.buf;
                    return c.result;
                }
                Submit::Queued => break,
                Submit::Busy(b) => {
                    buf = b;
                    self.engine.lock().harvest();
                    waiter.pause();
                }
            }
        }
        loop {
            if let Some(c) = self.inbox.take(tag) {
                self.bounce = c.buf;
                return c.result;
            }
            self.engine.lock().harvest();
            if let Some(c) = self.inbox.take(tag) {
                self.bounce = c.buf;
                return c.result;
            }
            waiter.pause();
        }
    }
}

/// Spins, then naps, between looks at the used ring, logging if a request takes long.
struct Waiter {
    op: BlockOp,
    freq: u64,
    start: u64,
    next_warn: u64,
    nap_ticks: u64,
    spins: u32,
}

impl Waiter {
    fn new(op: BlockOp) -> Self {
        let freq = CNTFRQ_EL0.get().max(1);
        let start = CNTPCT_EL0.get();
        Self {
            op,
            freq,
            start,
            next_warn: start.wrapping_add(freq.saturating_mul(STALL_WARN_SECS)),
            nap_ticks: (freq * NAP_US / 1_000_000).max(1),
            spins: 0,
        }
    }

    fn pause(&mut self) {
        let now = CNTPCT_EL0.get();
        if now.wrapping_sub(self.next_warn) as i64 >= 0 {
            log::warn!(
                "system disk: {:?} outstanding for {} s",
                self.op,
                now.wrapping_sub(self.start) / self.freq
            );
            self.next_warn = now.wrapping_add(self.freq.saturating_mul(STALL_WARN_SECS));
        }
        if self.spins < SPINS_BEFORE_NAP {
            self.spins += 1;
            spin_loop();
        } else {
            crate::timer::nap(self.nap_ticks);
        }
    }
}

/// Requests a [`DmaQueue`] keeps at the device at once: enough to overlap the
/// CPU's checksumming with the transfers; more only adds emulator I/O threads that
/// compete with the vCPU for the host (32 made a resume 2.7x slower under QEMU).
const DMA_DEPTH: usize = 4;

/// Transfers straight between the disk and memory (the guest RAM a suspend or a
/// resume holds), several requests at the device at once: the tags still out
/// and the first error.
#[derive(Default)]
pub struct DmaQueue {
    pending: alloc::collections::BTreeSet<u64>,
    error: Option<BlockError>,
}

impl SystemDisk {
    /// Starts moving `len` bytes between host-physical `pa` and disk byte `offset`
    /// (`write`: memory to disk) in requests of at most the device's DMA limits,
    /// waiting only while [`DMA_DEPTH`] requests are out. Returns the tag of the
    /// last request, for [`SystemDisk::dma_wait`].
    ///
    /// # Safety
    ///
    /// `[pa, pa + len)` must be identity-mapped RAM that stays allocated and that
    /// nothing else writes (nor, for a read, reads) until `dma_wait` has seen the
    /// returned tag (or every tag) come back.
    pub unsafe fn dma_start(
        &mut self,
        q: &mut DmaQueue,
        write: bool,
        offset: u64,
        pa: u64,
        len: u64,
    ) -> Result<u64, BlockError> {
        let dma = self.engine.lock().dma;
        let piece_max = (dma.max_bytes as u64)
            .min(u64::from(dma.max_segment_bytes))
            .max(SECTOR_SIZE)
            / SECTOR_SIZE
            * SECTOR_SIZE;
        let mut done = 0u64;
        let mut tag = self.next_tag;
        while done < len {
            let n = (len - done).min(piece_max);
            let at = offset + done;
            let op = if write {
                BlockOp::Write { offset: at }
            } else {
                BlockOp::Read { offset: at }
            };
            let mut waiter = Waiter::new(op);
            loop {
                while q.pending.len() >= DMA_DEPTH {
                    self.dma_pump(q, &mut waiter);
                }
                tag = self.next_tag;
                self.next_tag = self.next_tag.wrapping_add(1);
                let submitted = {
                    let mut engine = self.engine.lock();
                    let mut list = engine.seg_pool.pop().unwrap_or_default();
                    list.push(DmaSegment {
                        addr: pa + done,
                        len: n as u32,
                    });
                    engine.submit(&self.inbox, tag, op, Data::Guest(list), 0)
                };
                match submitted {
                    Submit::Queued => {
                        q.pending.insert(tag);
                        break;
                    }
                    Submit::Busy(_) => self.dma_pump(q, &mut waiter),
                    Submit::Done(c) => return Err(c.result.err().unwrap_or(BlockError::Io)),
                }
            }
            done += n;
        }
        Ok(tag)
    }

    /// Starts a flush in `q` (waiting only while [`DMA_DEPTH`] requests are out):
    /// when it completes, every write that completed before it is durable
    /// (virtio 1.2 §5.2.6.1). Returns its tag, for [`SystemDisk::dma_wait`]; a
    /// device without VIRTIO_BLK_F_FLUSH has nothing to flush.
    pub fn dma_flush_start(&mut self, q: &mut DmaQueue) -> Result<u64, BlockError> {
        let mut waiter = Waiter::new(BlockOp::Flush);
        loop {
            while q.pending.len() >= DMA_DEPTH {
                self.dma_pump(q, &mut waiter);
            }
            let tag = self.next_tag;
            self.next_tag = self.next_tag.wrapping_add(1);
            let submitted =
                self.engine
                    .lock()
                    .submit(&self.inbox, tag, BlockOp::Flush, Data::None, 0);
            match submitted {
                Submit::Queued => {
                    q.pending.insert(tag);
                    return Ok(tag);
                }
                Submit::Busy(_) => self.dma_pump(q, &mut waiter),
                Submit::Done(c) => return c.result.map(|()| tag),
            }
        }
    }

    /// Waits until no request of `q` up to tag `upto` is out (`u64::MAX`: none at
    /// all); the first error any of them had.
    pub fn dma_wait(&mut self, q: &mut DmaQueue, upto: u64) -> Result<(), BlockError> {
        let mut waiter = Waiter::new(BlockOp::Flush);
        while q.pending.first().is_some_and(|&t| t <= upto) {
            self.dma_pump(q, &mut waiter);
        }
        match q.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Takes finished requests off the ring and out of the inbox; pauses if none.
    fn dma_pump(&mut self, q: &mut DmaQueue, waiter: &mut Waiter) {
        self.engine.lock().harvest();
        let mut got = false;
        self.inbox.done.lock().retain(|c| {
            if q.pending.remove(&c.tag) {
                got = true;
                if let Err(e) = c.result {
                    q.error.get_or_insert(e);
                }
                false
            } else {
                true
            }
        });
        if !got {
            waiter.pause();
        }
    }
}

impl BlockBackend for SystemDisk {
    fn capacity(&self) -> u64 {
        self.capacity
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    /// Unaligned offsets or lengths fail with [`BlockError::OutOfRange`].
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let mut at = offset;
        for piece in buf.chunks_mut(self.chunk) {
            self.run(BlockOp::Read { offset: at }, piece.len())?;
            piece.copy_from_slice(&self.bounce[..piece.len()]);
            at += piece.len() as u64;
        }
        Ok(())
    }

    /// Unaligned offsets or lengths fail with [`BlockError::OutOfRange`].
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        if self.read_only {
            log::warn!("system disk: write at byte {offset} to a read-only disk refused");
            return Err(BlockError::ReadOnly);
        }
        let mut at = offset;
        for piece in data.chunks(self.chunk) {
            self.bounce.clear();
            self.bounce.extend_from_slice(piece);
            self.run(BlockOp::Write { offset: at }, piece.len())?;
            at += piece.len() as u64;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        self.run(BlockOp::Flush, 0)
    }
}

/// A range of the system disk as a guest's asynchronous disk: requests go to the
/// device and return, and their completions arrive by interrupt in this disk's inbox
/// (raising the VM's work signal), or, with no interrupt, when polled.
pub struct DiskExtent {
    engine: Arc<Mutex<Engine>>,
    inbox: Arc<Inbox>,
    start: u64,
    len: u64,
    read_only: bool,
    chunk: usize,
    dma: DmaLimits,
}

impl DiskExtent {
    /// `op` of `len` bytes on this extent as an operation on the system disk, or why
    /// it is refused.
    fn place(&self, op: BlockOp, len: u64) -> Result<BlockOp, BlockError> {
        let (offset, write) = match op {
            BlockOp::Flush => return Ok(BlockOp::Flush),
            BlockOp::Read { offset } => (offset, false),
            BlockOp::Write { offset } => (offset, true),
        };
        let inside = offset.checked_add(len).is_some_and(|end| end <= self.len);
        if !inside {
            return Err(BlockError::OutOfRange);
        }
        if write && self.read_only {
            return Err(BlockError::ReadOnly);
        }
        let offset = self.start + offset;
        if write {
            // A live snapshot saves what this write overwrites, before it starts.
            crate::snapshot::before_guest_write(offset, len, (self.start, self.start + self.len));
        }
        Ok(if write {
            BlockOp::Write { offset }
        } else {
            BlockOp::Read { offset }
        })
    }

    /// Hands a placed operation to the engine, routing the disk's interrupt here.
    fn start(&mut self, tag: u64, op: BlockOp, data: Data) -> Submit {
        let t0 = match data {
            Data::Guest(_) => crate::iostat::submitting(),
            _ => 0,
        };
        let submitted = {
            let mut engine = self.engine.lock();
            route_interrupt_here();
            engine.submit(&self.inbox, tag, op, data, t0)
        };
        if intid().is_none() {
            // No interrupt will come: have the VM poll this disk until it is done.
            if let Some(w) = &*self.inbox.waker.lock() {
                w.raise();
            }
        }
        submitted
    }
}

impl AsyncBlock for DiskExtent {
    fn capacity(&self) -> u64 {
        self.len
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn max_transfer(&self) -> usize {
        self.chunk
    }

    fn submit(&mut self, tag: u64, op: BlockOp, buf: Vec<u8>) -> Submit {
        let len = buf.len() as u64;
        match self.place(op, len) {
            Ok(op) => {
                let data = if op == BlockOp::Flush {
                    Data::None
                } else {
                    Data::Buf(buf)
                };
                self.start(tag, op, data)
            }
            Err(e) => Submit::Done(Completion {
                tag,
                result: Err(e),
                buf,
            }),
        }
    }

    fn dma_limits(&self) -> Option<DmaLimits> {
        Some(self.dma)
    }

    /// The segments are guest RAM from `GuestMemory::dma_address`; the device
    /// reads or writes them directly.
    fn submit_dma(&mut self, tag: u64, op: BlockOp, segs: &[DmaSegment]) -> Submit {
        let len = segs.iter().map(|s| u64::from(s.len)).sum();
        match self.place(op, len) {
            Ok(op @ (BlockOp::Read { .. } | BlockOp::Write { .. })) => {
                let mut list = self.engine.lock().seg_pool.pop().unwrap_or_default();
                list.extend_from_slice(segs);
                self.start(tag, op, Data::Guest(list))
            }
            Ok(BlockOp::Flush) | Err(_) => Submit::Done(Completion {
                tag,
                result: Err(BlockError::OutOfRange),
                buf: Vec::new(),
            }),
        }
    }

    /// Waits (taking completions off the used ring itself, as the interrupt may be
    /// routed to a CPU that is not looking) until the device has returned every
    /// request of this disk.
    fn quiesce(&mut self) {
        let mut waiter = Waiter::new(BlockOp::Flush);
        while self.inbox.pending.load(Ordering::Acquire) > 0 {
            self.engine.lock().harvest();
            if self.inbox.pending.load(Ordering::Acquire) == 0 {
                break;
            }
            waiter.pause();
        }
    }

    fn poll(&mut self) -> Option<Completion> {
        if intid().is_none() && self.inbox.pending.load(Ordering::Acquire) > 0 {
            self.engine.lock().harvest();
        }
        self.inbox.done.lock().pop_front()
    }

    fn has_completions(&self) -> bool {
        !self.inbox.done.lock().is_empty()
            || (intid().is_none() && self.inbox.pending.load(Ordering::Acquire) > 0)
    }

    fn set_waker(&mut self, signal: WorkSignal) {
        *self.inbox.waker.lock() = Some(signal);
    }
}
