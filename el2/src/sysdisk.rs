//! The system disk: the host's virtio-blk device behind a virtio-mmio transport, which
//! the hypervisor drives itself (with the `virtio-drivers` crate, polling, no
//! interrupts) to keep its VM registry and guest disks on. This module owns finding
//! that device among the device tree's virtio-mmio slots, the identity-map DMA
//! [`Hal`] the driver needs, and the byte-addressed [`vdev::BlockBackend`] view the
//! registry crate runs on.
//!
//! DMA: the hypervisor's identity map makes every RAM pointer its own physical
//! address, there is no IOMMU, and the virtio-mmio devices this runs on are
//! cache-coherent (`dma-coherent`; QEMU's always are), so buffers are handed to the
//! device in place: reads land straight in the caller's buffer, with no bounce copy
//! and no per-request allocation.

use core::hint::spin_loop;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use aarch64_cpu::registers::{Readable, CNTFRQ_EL0, CNTPCT_EL0};
use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use vdev::{BlockBackend, BlockError, SECTOR_SIZE};
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

/// The host's virtio-blk disk the hypervisor keeps its registry and guest disks on.
pub struct SystemDisk {
    blk: VirtIOBlk<IdentityHal, MmioTransport<'static>>,
    /// Physical base of the transport's registers.
    base: u64,
    version: MmioVersion,
    /// Size in bytes.
    capacity: u64,
    read_only: bool,
    /// Whether VIRTIO_BLK_T_FLUSH is available (otherwise completed writes are
    /// already durable: the device has no volatile cache to flush).
    can_flush: bool,
    /// Bytes per request: a multiple of [`SECTOR_SIZE`], at most [`MAX_REQUEST_BYTES`].
    chunk: usize,
    /// Set once the device broke the virtqueue protocol; it has been reset and all
    /// further I/O fails with [`BlockError::Io`].
    failed: bool,
}

/// The two transfer directions, borrowed for the duration of one request.
enum Xfer<'a> {
    Read(&'a mut [u8]),
    Write(&'a [u8]),
}

impl SystemDisk {
    /// Probes the virtio-mmio transports in order and takes the first block device
    /// (skipping DeviceID 0 slots). Call once: the disk owns the transport's
    /// registers until it is dropped. The transports must be identity-mapped as
    /// device memory.
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
        for (range, _irq) in transports {
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
                    Ok(blk) => return Self::finish(range.base, blk, geometry),
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
            "system disk: virtio-blk at {base:#x} ({} virtio-mmio), {} MiB ({sectors} sectors), {}, flush {}, {} KiB per request",
            match g.version {
                MmioVersion::Legacy => "legacy",
                MmioVersion::Modern => "modern",
            },
            capacity >> 20,
            if read_only { "read-only" } else { "read-write" },
            if g.can_flush { "supported" } else { "not offered (write-through)" },
            g.chunk >> 10
        );
        Ok(SystemDisk {
            blk,
            base,
            version: g.version,
            capacity,
            read_only,
            can_flush: g.can_flush,
            chunk: g.chunk,
            failed: false,
        })
    }

    /// Size in bytes.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Whether the transport is the legacy (version 1) virtio-mmio interface.
    pub fn is_legacy(&self) -> bool {
        self.version == MmioVersion::Legacy
    }

    /// Checks a byte range against alignment and capacity.
    fn check(&self, op: &str, offset: u64, len: usize) -> Result<(), BlockError> {
        if self.failed {
            return Err(BlockError::Io);
        }
        let len = len as u64;
        if !offset.is_multiple_of(SECTOR_SIZE) || !len.is_multiple_of(SECTOR_SIZE) {
            log::warn!(
                "system disk: {op} of {len} bytes at byte {offset} is not sector-aligned; refused"
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

    /// Runs one request (a non-empty whole number of sectors, at most `self.chunk`
    /// bytes) at `sector`, polling for its completion.
    fn transfer(&mut self, sector: u64, mut xfer: Xfer<'_>) -> Result<(), BlockError> {
        let sectors = match &xfer {
            Xfer::Read(b) => b.len(),
            Xfer::Write(b) => b.len(),
        } as u64
            / SECTOR_SIZE;
        let mut req = BlkReq::default();
        let mut resp = BlkResp::default();
        let block = sector as usize; // usize is 64-bit on aarch64
        let (op, submitted) = match &mut xfer {
            // SAFETY: `req`, `buf` and `resp` live until this function returns, and
            // this function does not return while the device may still use them: it
            // waits for the request to come back (or resets the device).
            Xfer::Read(buf) => ("read", unsafe {
                self.blk.read_blocks_nb(block, &mut req, buf, &mut resp)
            }),
            // SAFETY: as above.
            Xfer::Write(buf) => ("write", unsafe {
                self.blk.write_blocks_nb(block, &mut req, buf, &mut resp)
            }),
        };
        let token = match submitted {
            Ok(t) => t,
            Err(e) => {
                log::error!("system disk: {op} at sector {sector} could not be queued: {e}");
                return Err(BlockError::Io);
            }
        };
        self.wait(op, sector);
        let done = match xfer {
            // SAFETY: the same `req`, `buf` and `resp` that were queued under `token`.
            Xfer::Read(buf) => unsafe {
                self.blk.complete_read_blocks(token, &req, buf, &mut resp)
            },
            // SAFETY: as above.
            Xfer::Write(buf) => unsafe {
                self.blk.complete_write_blocks(token, &req, buf, &mut resp)
            },
        };
        match done {
            Ok(()) => Ok(()),
            Err(virtio_drivers::Error::WrongToken) => {
                log::error!(
                    "system disk: device returned a request it was not given ({op} at sector {sector}); resetting it, the disk is now offline"
                );
                self.fail();
                Err(BlockError::Io)
            }
            Err(e) => {
                log::error!(
                    "system disk: {op} of {sectors} sector(s) at sector {sector} failed: {e} (status {:?})",
                    resp.status()
                );
                Err(BlockError::Io)
            }
        }
    }

    /// Spins until the device returns a request, logging if it takes long.
    fn wait(&mut self, op: &str, sector: u64) {
        let freq = CNTFRQ_EL0.get().max(1);
        let start = CNTPCT_EL0.get();
        let mut next_warn = start.wrapping_add(freq.saturating_mul(STALL_WARN_SECS));
        let nap_ticks = (freq * NAP_US / 1_000_000).max(1);
        let mut spins = 0u32;
        while self.blk.peek_used().is_none() {
            let now = CNTPCT_EL0.get();
            if now.wrapping_sub(next_warn) as i64 >= 0 {
                log::warn!(
                    "system disk: {op} at sector {sector} outstanding for {} s",
                    now.wrapping_sub(start) / freq
                );
                next_warn = now.wrapping_add(freq.saturating_mul(STALL_WARN_SECS));
            }
            if spins < SPINS_BEFORE_NAP {
                spins += 1;
                spin_loop();
            } else {
                crate::timer::nap(nap_ticks);
            }
        }
    }

    /// Takes the device offline after a protocol violation: resetting it makes it
    /// drop every buffer it holds, so none of ours can be written later.
    fn fail(&mut self) {
        self.failed = true;
        let status = (self.base + defs::MMIO_STATUS) as usize as *mut u32;
        // SAFETY: `base` is this disk's own virtio-mmio register window (mapped as
        // device memory); writing 0 to Status is the architected device reset, and the
        // driver's own view of the transport is not used for I/O again (`failed`).
        unsafe { status.write_volatile(0) };
    }
}

impl Drop for SystemDisk {
    fn drop(&mut self) {
        // The transport (and with it the register window) is released with `blk`.
        CLAIMED.store(false, Ordering::Release);
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
        self.check("read", offset, buf.len())?;
        let chunk = self.chunk;
        let mut sector = offset / SECTOR_SIZE;
        for piece in buf.chunks_mut(chunk) {
            self.transfer(sector, Xfer::Read(piece))?;
            sector += piece.len() as u64 / SECTOR_SIZE;
        }
        Ok(())
    }

    /// Unaligned offsets or lengths fail with [`BlockError::OutOfRange`].
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        if self.read_only {
            log::warn!("system disk: write at byte {offset} to a read-only disk refused");
            return Err(BlockError::ReadOnly);
        }
        self.check("write", offset, data.len())?;
        let chunk = self.chunk;
        let mut sector = offset / SECTOR_SIZE;
        for piece in data.chunks(chunk) {
            self.transfer(sector, Xfer::Write(piece))?;
            sector += piece.len() as u64 / SECTOR_SIZE;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), BlockError> {
        if self.failed {
            return Err(BlockError::Io);
        }
        if !self.can_flush {
            return Ok(());
        }
        self.blk.flush().map_err(|e| {
            log::error!("system disk: flush failed: {e}");
            BlockError::Io
        })
    }
}
