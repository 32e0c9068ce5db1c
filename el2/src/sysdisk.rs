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
use spin::Mutex;
use vdev::{
    AsyncBlock, BlockBackend, BlockError, BlockOp, Completion, Submit, WorkSignal, SECTOR_SIZE,
};
use virtio_drivers::device::blk::{BlkReq, BlkResp, VirtIOBlk};
use virtio_drivers::transport::mmio::{MmioError, MmioTransport, MmioVersion, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

/// Definitions from the virtio 1.2 specification this module relies on.
mod defs {
    /// VIRTIO_BLK_F_SIZE_MAX: `size_max` in config space bounds one data segment.
    pub const BLK_F_SIZE_MAX: u64 = 1 << 1;
    /// VIRTIO_BLK_F_RO: the device is read-only.
    pub const BLK_F_RO: u64 = 1 << 5;
    /// VIRTIO_BLK_F_FLUSH: the device accepts VIRTIO_BLK_T_FLUSH.
    pub const BLK_F_FLUSH: u64 = 1 << 9;
    /// Byte offset of `size_max` (le32) in the virtio-blk configuration space.
    pub const BLK_CFG_SIZE_MAX: usize = 8;
    /// Byte offset of the device-specific configuration space in a virtio-mmio
    /// transport: the smallest register window a usable transport can have.
    pub const MMIO_CONFIG_OFFSET: u64 = 0x100;
    /// Offset of the virtio-mmio `Status` register; writing 0 resets the device.
    pub const MMIO_STATUS: u64 = 0x070;
}

/// Bytes per virtio request. Each request carries one data segment (virtio-drivers
/// builds header + data + status chains), so only `size_max` (when the device offers
/// VIRTIO_BLK_F_SIZE_MAX) can lower this. Per-request cost dominates under QEMU:
/// 64 MiB sequential moved ~3x faster with 1 MiB requests than with 64 KiB ones.
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
// reason, and the device is cache-coherent, so neither `share` nor `unshare` needs to
// copy or maintain caches. `mmio_phys_to_virt` is the identity (only the PCI
// transport calls it; this hypervisor uses virtio-mmio).
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

/// A request the device holds: everything it may read or write stays here, on the
/// heap (boxes and the buffer's own allocation do not move), until it comes back.
struct InFlight {
    req: Box<BlkReq>,
    resp: Box<BlkResp>,
    buf: Vec<u8>,
    write: bool,
    tag: u64,
    sector: u64,
    to: Arc<Inbox>,
}

/// The device and its requests in flight, shared by every user of the disk.
struct Engine {
    blk: VirtIOBlk<IdentityHal, MmioTransport<'static>>,
    /// Physical base of the transport's registers.
    base: u64,
    /// Size in bytes.
    capacity: u64,
    read_only: bool,
    /// Whether VIRTIO_BLK_T_FLUSH is available (otherwise completed writes are
    /// already durable: the device has no volatile cache to flush).
    can_flush: bool,
    /// Most bytes per request: a multiple of [`SECTOR_SIZE`], at most
    /// [`MAX_REQUEST_BYTES`].
    chunk: usize,
    /// Set once the device broke the virtqueue protocol; it has been reset and all
    /// further I/O fails with [`BlockError::Io`].
    failed: bool,
    /// Requests at the device, by the token the driver gave them.
    slots: Vec<Option<InFlight>>,
    in_flight: usize,
    /// Flushes waiting for the requests before them to finish.
    flush_waiters: Vec<(Arc<Inbox>, u64)>,
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

/// Routes the disk's interrupt to this CPU unless it goes here already, so that a
/// guest's request completes on the CPU of the vCPU waiting for it (running, or in
/// WFI on that very CPU) rather than on another CPU that must first be woken and
/// then wake the guest's: under QEMU that detour tripled a request's latency.
/// Called with the engine locked, so concurrent submitters route in turn.
fn route_interrupt_here() {
    let Some(id) = intid() else { return };
    let me = MPIDR_EL1.get() & arch::smccc::MPIDR_AFFINITY_MASK;
    if ROUTED_TO.swap(me, Ordering::AcqRel) != me {
        crate::gic::route_spi(id, me);
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
    /// Checks a byte range against alignment and capacity.
    fn check(&self, op: &str, offset: u64, len: usize) -> Result<(), BlockError> {
        if self.failed {
            return Err(BlockError::Io);
        }
        let len = len as u64;
        if !offset.is_multiple_of(SECTOR_SIZE)
            || !len.is_multiple_of(SECTOR_SIZE)
            || len == 0
            || len > self.chunk as u64
        {
            log::warn!(
                "system disk: {op} of {len} bytes at byte {offset} is not a sector-aligned request of at most {} bytes; refused",
                self.chunk
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

    /// Starts `op` for `to`.
    fn submit(&mut self, to: &Arc<Inbox>, tag: u64, op: BlockOp, buf: Vec<u8>) -> Submit {
        let (offset, write) = match op {
            BlockOp::Flush => {
                let result = if self.failed {
                    Err(BlockError::Io)
                } else if !self.can_flush {
                    Ok(())
                } else if self.in_flight == 0 {
                    self.flush_now()
                } else {
                    to.pending.fetch_add(1, Ordering::AcqRel);
                    self.flush_waiters.push((to.clone(), tag));
                    return Submit::Queued;
                };
                return Submit::Done(Completion { tag, result, buf });
            }
            BlockOp::Read { offset } => (offset, false),
            BlockOp::Write { offset } => (offset, true),
        };
        let check = if write && self.read_only {
            log::warn!("system disk: write at byte {offset} to a read-only disk refused");
            Err(BlockError::ReadOnly)
        } else {
            self.check(if write { "write" } else { "read" }, offset, buf.len())
        };
        if let Err(e) = check {
            return Submit::Done(Completion {
                tag,
                result: Err(e),
                buf,
            });
        }
        let sector = offset / SECTOR_SIZE;
        let mut f = InFlight {
            req: Box::default(),
            resp: Box::default(),
            buf,
            write,
            tag,
            sector,
            to: to.clone(),
        };
        let block = sector as usize; // usize is 64-bit on aarch64
        let submitted = if write {
            // SAFETY: `req`, `resp` and the buffer's heap allocation stay where they
            // are while the request is at the device: they move into `slots` (a move
            // of the box or the Vec, not of what they point to) and are neither used
            // nor freed until the device returns the request (`harvest`) or has been
            // reset (`fail`).
            unsafe {
                self.blk
                    .write_blocks_nb(block, &mut f.req, &f.buf, &mut f.resp)
            }
        } else {
            // SAFETY: as above.
            unsafe {
                self.blk
                    .read_blocks_nb(block, &mut f.req, &mut f.buf, &mut f.resp)
            }
        };
        match submitted {
            Ok(token) => match self.slots.get_mut(usize::from(token)) {
                Some(slot @ None) => {
                    *slot = Some(f);
                    self.in_flight += 1;
                    to.pending.fetch_add(1, Ordering::AcqRel);
                    Submit::Queued
                }
                _ => {
                    log::error!(
                        "system disk: the driver reused token {token} of a request in flight; resetting the device, the disk is now offline"
                    );
                    // `fail` resets the device before `f` (whose buffers it was
                    // given) is dropped.
                    self.fail();
                    Submit::Done(Completion {
                        tag,
                        result: Err(BlockError::Io),
                        buf: core::mem::take(&mut f.buf),
                    })
                }
            },
            Err(virtio_drivers::Error::QueueFull) => Submit::Busy(f.buf),
            Err(e) => {
                log::error!("system disk: request at sector {sector} could not be queued: {e}");
                Submit::Done(Completion {
                    tag,
                    result: Err(BlockError::Io),
                    buf: f.buf,
                })
            }
        }
    }

    /// A blocking flush; only with nothing else at the device (the driver's flush
    /// expects its own request to be the next one back).
    fn flush_now(&mut self) -> Result<(), BlockError> {
        self.blk.flush().map_err(|e| {
            log::error!("system disk: flush failed: {e}");
            BlockError::Io
        })
    }

    /// Takes every finished request off the used ring and delivers it; then runs the
    /// flushes that were waiting for them.
    fn harvest(&mut self) {
        if self.failed {
            return;
        }
        self.blk.ack_interrupt();
        while let Some(token) = self.blk.peek_used() {
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
            let done = if f.write {
                // SAFETY: the same `req`, `buf` and `resp` that were queued under
                // `token` (kept in its slot since).
                unsafe {
                    self.blk
                        .complete_write_blocks(token, &f.req, &f.buf, &mut f.resp)
                }
            } else {
                // SAFETY: as above.
                unsafe {
                    self.blk
                        .complete_read_blocks(token, &f.req, &mut f.buf, &mut f.resp)
                }
            };
            let result = match done {
                Ok(()) => Ok(()),
                Err(e) => {
                    log::error!(
                        "system disk: {} at sector {} failed: {e} (status {:?})",
                        if f.write { "write" } else { "read" },
                        f.sector,
                        f.resp.status()
                    );
                    Err(BlockError::Io)
                }
            };
            f.to.deliver(Completion {
                tag: f.tag,
                result,
                buf: core::mem::take(&mut f.buf),
            });
        }
        if self.in_flight == 0 && !self.flush_waiters.is_empty() {
            let result = self.flush_now();
            for (to, tag) in core::mem::take(&mut self.flush_waiters) {
                to.deliver(Completion {
                    tag,
                    result,
                    buf: Vec::new(),
                });
            }
        }
    }

    /// Takes the device offline after a protocol violation: resetting it makes it
    /// drop every buffer it holds, so none can be written later; every request in
    /// flight then fails.
    fn fail(&mut self) {
        self.failed = true;
        let status = (self.base + defs::MMIO_STATUS) as usize as *mut u32;
        // SAFETY: `base` is this disk's own virtio-mmio register window (mapped as
        // device memory); writing 0 to Status is the architected device reset, and the
        // driver's own view of the transport is not used for I/O again (`failed`).
        unsafe { status.write_volatile(0) };
        self.in_flight = 0;
        let slots = core::mem::take(&mut self.slots);
        for f in slots.into_iter().flatten() {
            f.to.deliver(Completion {
                tag: f.tag,
                result: Err(BlockError::Io),
                buf: f.buf,
            });
        }
        for (to, tag) in core::mem::take(&mut self.flush_waiters) {
            to.deliver(Completion {
                tag,
                result: Err(BlockError::Io),
                buf: Vec::new(),
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
            if range.size < defs::MMIO_CONFIG_OFFSET || range.base == 0 {
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
            let mut transport = match unsafe { MmioTransport::new(header, size) } {
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
            match Self::bring_up(range.base, &mut transport) {
                Ok(geometry) => match VirtIOBlk::<IdentityHal, _>::new(transport) {
                    Ok(blk) => return Self::finish(range.base, *irq, blk, geometry),
                    Err(error) => {
                        log::error!(
                            "virtio-blk at {:#x}: initialisation failed: {error}",
                            range.base
                        );
                        first_error.get_or_insert(SysDiskError::Init {
                            base: range.base,
                            error,
                        });
                    }
                },
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        Err(first_error.unwrap_or(SysDiskError::NotFound))
    }

    /// Reads what the driver does not expose (offered features, `size_max`) before
    /// initialisation resets the device.
    fn bring_up(
        base: u64,
        transport: &mut MmioTransport<'static>,
    ) -> Result<Geometry, SysDiskError> {
        let features = transport.read_device_features();
        let mut chunk = MAX_REQUEST_BYTES;
        if features & defs::BLK_F_SIZE_MAX != 0 {
            match transport.read_config_space::<u32>(defs::BLK_CFG_SIZE_MAX) {
                Ok(size_max) => {
                    let limit = (size_max as usize / SECTOR_SIZE as usize) * SECTOR_SIZE as usize;
                    if limit == 0 {
                        log::warn!(
                            "virtio-blk at {base:#x}: size_max {size_max} is below one sector; using one sector per request"
                        );
                        chunk = SECTOR_SIZE as usize;
                    } else {
                        chunk = chunk.min(limit);
                    }
                }
                Err(error) => return Err(SysDiskError::Init { base, error }),
            }
        }
        Ok(Geometry {
            chunk,
            can_flush: features & defs::BLK_F_FLUSH != 0,
            offered_ro: features & defs::BLK_F_RO != 0,
            version: transport.version(),
        })
    }

    fn finish(
        base: u64,
        irq: Option<u32>,
        blk: VirtIOBlk<IdentityHal, MmioTransport<'static>>,
        g: Geometry,
    ) -> Result<SystemDisk, SysDiskError> {
        let sectors = blk.capacity();
        let Some(capacity) = sectors.checked_mul(SECTOR_SIZE) else {
            log::error!("virtio-blk at {base:#x}: capacity of {sectors} sectors is impossible");
            return Err(SysDiskError::BadCapacity { base, sectors });
        };
        let read_only = blk.readonly() || g.offered_ro;
        log::info!(
            "system disk: virtio-blk at {base:#x} ({} virtio-mmio), {} MiB ({sectors} sectors), {}, flush {}, {} KiB per request, {} requests in flight, {}",
            match g.version {
                MmioVersion::Legacy => "legacy",
                MmioVersion::Modern => "modern",
            },
            capacity >> 20,
            if read_only { "read-only" } else { "read-write" },
            if g.can_flush { "supported" } else { "not offered (write-through)" },
            g.chunk >> 10,
            blk.virt_queue_size(),
            match irq {
                Some(id) => alloc::format!("completion by interrupt {id}"),
                None => alloc::string::String::from("no interrupt: completions are polled"),
            }
        );
        let slots = (0..blk.virt_queue_size()).map(|_| None).collect();
        let engine = Arc::new(Mutex::new(Engine {
            blk,
            base,
            capacity,
            read_only,
            can_flush: g.can_flush,
            chunk: g.chunk,
            failed: false,
            slots,
            in_flight: 0,
            flush_waiters: Vec::new(),
        }));
        *ENGINE.lock() = Some(engine.clone());
        if let Some(id) = irq {
            DISK_INTID.store(id, Ordering::Relaxed);
            crate::gic::enable_spi(id);
        }
        Ok(SystemDisk {
            engine,
            inbox: Inbox::new(),
            capacity,
            read_only,
            legacy: g.version == MmioVersion::Legacy,
            chunk: g.chunk,
            next_tag: 0,
            bounce: Vec::new(),
        })
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
        }
    }

    /// Runs one request (at most `self.chunk` bytes) and waits for it: the request
    /// goes to the device, and until it is back this CPU takes finished requests off
    /// the used ring itself (delivering other users' too), polling briefly and then
    /// napping on the EL2 timer so the I/O gets the physical CPU.
    fn run(&mut self, op: BlockOp, len: usize) -> Result<(), BlockError> {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        let mut buf = core::mem::take(&mut self.bounce);
        buf.resize(len, 0);
        let mut waiter = Waiter::new(op);
        loop {
            let submitted = self.engine.lock().submit(&self.inbox, tag, op, buf);
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

/// What is learnt about a device before the driver initialises it.
struct Geometry {
    chunk: usize,
    can_flush: bool,
    offered_ro: bool,
    version: MmioVersion,
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
        let op = match op {
            BlockOp::Flush => BlockOp::Flush,
            BlockOp::Read { offset } | BlockOp::Write { offset } => {
                let write = matches!(op, BlockOp::Write { .. });
                let inside = offset
                    .checked_add(buf.len() as u64)
                    .is_some_and(|end| end <= self.len);
                let refused = if !inside {
                    Some(BlockError::OutOfRange)
                } else if write && self.read_only {
                    Some(BlockError::ReadOnly)
                } else {
                    None
                };
                if let Some(e) = refused {
                    return Submit::Done(Completion {
                        tag,
                        result: Err(e),
                        buf,
                    });
                }
                let offset = self.start + offset;
                if write {
                    BlockOp::Write { offset }
                } else {
                    BlockOp::Read { offset }
                }
            }
        };
        let submitted = {
            let mut engine = self.engine.lock();
            route_interrupt_here();
            engine.submit(&self.inbox, tag, op, buf)
        };
        if intid().is_none() {
            // No interrupt will come: have the VM poll this disk until it is done.
            if let Some(w) = &*self.inbox.waker.lock() {
                w.raise();
            }
        }
        submitted
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
