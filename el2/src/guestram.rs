//! Guest RAM, populated on first touch: a VM's RAM is one physically contiguous
//! range, but each 2 MiB block is zeroed and mapped at stage 2 only when the guest
//! (or a device on its behalf, or the loader) first touches it. A VM therefore
//! starts without zeroing (and, on an emulator, without faulting in) all of its
//! memory, and still never sees a byte it did not write or that was not zero.
//!
//! A guest access to an unpopulated block takes a stage-2 translation fault; the
//! exit handler populates the block and lets the guest retry. Hypervisor accesses
//! (device DMA, kernel loading) populate through [`GuestMemory`]. A VM reset unmaps
//! every block again.
//!
//! Every byte EL2 writes here — a block's zeroing, the loader's and devices' writes —
//! is cleaned to the point of coherency before the block is mapped or the write
//! returns, and the instruction cache is invalidated before a vCPU enters after such
//! writes (`stage2::coherency`): a guest with its MMU off reads DRAM, not EL2's cache.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use arch::relax::Mutex;
use stage2::coherency::{Coherent, GuestRamAccess};
use stage2::dirty::DirtyBitmap;
use stage2::{Attrs, Flush, Layout, Perms, Stage2, TableAllocator};
use vdev::memory::range_offset;
use vdev::{GuestMemory, MemError};

use crate::el1::{read_sysreg, write_sysreg};

/// The unit of population (a stage-2 level-2 block).
pub const BLOCK: u64 = 2 << 20;
/// The unit of dirty logging (a stage-2 level-3 page).
pub const PAGE: u64 = 4096;
/// Pages in a block.
const BLOCK_PAGES: usize = (BLOCK / PAGE) as usize;
/// Above this many bytes a stage-2 flush invalidates the whole VMID instead of
/// page by page.
const FLUSH_BY_PAGE_MAX: u64 = BLOCK;

/// Stage-2 translation tables come from the hypervisor heap, identity-mapped.
pub struct HeapTables;

impl TableAllocator for HeapTables {
    fn alloc_tables(&mut self, count: usize) -> Option<u64> {
        let layout = core::alloc::Layout::from_size_align(4096 * count, 4096 * count).ok()?;
        // SAFETY: the layout has a non-zero size.
        let p = unsafe { alloc::alloc::alloc_zeroed(layout) };
        (!p.is_null()).then_some(p as u64)
    }
    fn free_tables(&mut self, pa: u64, count: usize) {
        let layout =
            core::alloc::Layout::from_size_align(4096 * count, 4096 * count).expect("table layout");
        // SAFETY: `pa` was returned by `alloc_tables` with this `count` (stage2's contract).
        unsafe { alloc::alloc::dealloc(pa as *mut u8, layout) };
    }
    fn table(&mut self, pa: u64) -> &mut [u64; 512] {
        // SAFETY: `pa` is a table this allocator handed out (stage2 only passes those);
        // heap memory is identity-mapped, so the physical address is the pointer.
        unsafe { &mut *(pa as *mut [u64; 512]) }
    }
}

/// One VM's RAM: where it is, which blocks are populated, and the stage-2 tables
/// that map them.
pub struct RamBacking {
    /// Guest-physical base and size.
    pub ipa: u64,
    pub size: u64,
    /// Host-physical base (identity-mapped in the hypervisor).
    pa: u64,
    ready: Vec<AtomicBool>,
    stage2: Mutex<Stage2>,
    vttbr: u64,
    vtcr: u64,
    ipa_bits: u32,
    /// Whether the instruction cache owes an invalidation for EL2's writes.
    coherent: Coherent,
    /// Dirty logging: while `tracking`, populated RAM is read-only at stage 2
    /// until a page's first write (the permission fault marks it and makes it
    /// writable), and EL2's own writes mark their pages.
    dirty: DirtyBitmap,
    tracking: AtomicBool,
    /// The image this RAM was resumed from, while dirty logging vouches that
    /// every change since shows in `dirty` (incremental suspend).
    base: Mutex<Option<vmstate::Base>>,
    /// A linear framebuffer's dirty log (`vgpu::linear`): its pages
    /// `fb_first..fb_end` are read-only at stage 2 after each take until written;
    /// the write fault marks them here (and in `dirty` while suspend logs). A
    /// separate bitmap, so the render loop's takes never clear suspend's marks.
    fb_dirty: DirtyBitmap,
    fb_first: AtomicUsize,
    fb_end: AtomicUsize,
}

crate::el1::typed_sysreg!(
    /// CTR_EL0, for DminLine: log2 of the smallest data-cache line in words.
    CtrEl0, "CTR_EL0", arch::regs::CTR_EL0::Register, r
);
/// Bytes in a word, the unit of CTR_EL0's line sizes.
const WORD: u64 = 4;

/// The hardware side of `stage2::coherency` for one VM's RAM: plain stores through
/// the identity map and the DC/IC maintenance instructions. Every address it is
/// given must lie in the VM's RAM.
struct Hw<'a>(&'a RamBacking);

impl Hw<'_> {
    /// Panics on a range outside this VM's RAM: callers pass only ranges already
    /// checked against it, so this is a hypervisor bug, never guest input.
    fn check(&self, pa: u64, len: u64) {
        let ok = pa >= self.0.pa
            && pa - self.0.pa <= self.0.size
            && len <= self.0.size - (pa - self.0.pa);
        assert!(ok, "guest RAM access {pa:#x}+{len:#x} outside the VM's RAM");
    }
}

/// The smallest data-cache line of this CPU in bytes (CTR_EL0.DminLine).
pub fn dcache_line() -> u64 {
    use tock_registers::interfaces::Readable;
    WORD << CtrEl0.read(arch::regs::CTR_EL0::DminLine)
}

impl GuestRamAccess for Hw<'_> {
    fn dcache_line(&self) -> u64 {
        dcache_line()
    }
    fn copy_in(&mut self, pa: u64, data: &[u8]) {
        self.check(pa, data.len() as u64);
        // SAFETY: `check` keeps the range inside this VM's RAM, identity-mapped host
        // memory taken from free physical memory for it alone.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), pa as *mut u8, data.len()) };
    }
    fn zero(&mut self, pa: u64, len: u64) {
        self.check(pa, len);
        // SAFETY: as in `copy_in`.
        unsafe { crate::accel::zero(pa as usize, len as usize) };
    }
    fn clean_invalidate_line(&mut self, pa: u64) {
        self.check(pa, 0);
        // SAFETY: cache maintenance by address on identity-mapped guest RAM; it
        // changes no data, only writes dirty lines back and drops them.
        unsafe {
            core::arch::asm!("dc civac, {a}", a = in(reg) pa, options(nostack, preserves_flags))
        };
    }
    fn barrier(&mut self) {
        // SAFETY: a barrier only orders and completes earlier memory operations.
        unsafe { core::arch::asm!("dsb ish", options(nostack, preserves_flags)) };
    }
    fn invalidate_icache(&mut self) {
        // SAFETY: invalidating instruction caches loses no data; the barriers make
        // later fetches on every CPU of the domain see memory as it now is.
        unsafe {
            core::arch::asm!(
                "ic ialluis",
                "dsb ish",
                "isb",
                options(nostack, preserves_flags)
            )
        };
    }
}

/// A handle to a VM's RAM (`Copy`: every vCPU and device holds one).
#[derive(Clone, Copy)]
pub struct GuestRam(&'static RamBacking);

impl GuestRam {
    /// Guest RAM of `size` bytes (a multiple of [`BLOCK`]) at guest-physical `ipa`,
    /// backed by host-physical `pa`, with empty stage-2 tables. Lives for the rest
    /// of the hypervisor's life.
    pub fn new(
        ipa: u64,
        pa: u64,
        size: u64,
        layout: Layout,
        vmid: u16,
    ) -> Result<Self, stage2::Error> {
        let stage2 = Stage2::new(&mut HeapTables, layout, vmid)?;
        let blocks = size.div_ceil(BLOCK) as usize;
        let backing = RamBacking {
            ipa,
            size,
            pa,
            ready: (0..blocks).map(|_| AtomicBool::new(false)).collect(),
            vttbr: stage2.vttbr(),
            vtcr: stage2.vtcr(),
            ipa_bits: layout.ipa_bits,
            stage2: Mutex::new(stage2),
            coherent: Coherent::new(),
            dirty: DirtyBitmap::new((size / PAGE) as usize),
            tracking: AtomicBool::new(false),
            base: Mutex::new(None),
            fb_dirty: DirtyBitmap::new((size / PAGE) as usize),
            fb_first: AtomicUsize::new(0),
            fb_end: AtomicUsize::new(0),
        };
        Ok(GuestRam(Box::leak(Box::new(backing))))
    }

    pub fn ipa(&self) -> u64 {
        self.0.ipa
    }
    pub fn size(&self) -> u64 {
        self.0.size
    }
    /// VTTBR_EL2 and VTCR_EL2 for this VM.
    pub fn vttbr(&self) -> u64 {
        self.0.vttbr
    }
    pub fn vtcr(&self) -> u64 {
        self.0.vtcr
    }
    /// The guest's IPA size in bits.
    pub fn ipa_bits(&self) -> u32 {
        self.0.ipa_bits
    }

    pub fn contains(&self, ipa: u64) -> bool {
        ipa >= self.0.ipa && ipa - self.0.ipa < self.0.size
    }

    /// Blocks populated so far (for the log).
    pub fn populated_bytes(&self) -> u64 {
        self.0
            .ready
            .iter()
            .filter(|r| r.load(Ordering::Relaxed))
            .count() as u64
            * BLOCK
    }

    /// Makes sure every block of `[gpa, gpa + len)` is populated; refuses ranges that
    /// are not all guest RAM.
    pub fn ensure(&self, gpa: u64, len: usize) -> Result<(), MemError> {
        let off = range_offset(self.0.ipa, self.0.size, gpa, len)? as u64;
        let first = (off / BLOCK) as usize;
        let last = ((off + len.max(1) as u64 - 1) / BLOCK) as usize;
        for b in first..=last {
            if !self.0.ready[b].load(Ordering::Acquire) {
                self.populate(b);
            }
        }
        Ok(())
    }

    fn populate(&self, block: usize) {
        let mut s2 = self.0.stage2.lock();
        if self.0.ready[block].load(Ordering::Acquire) {
            return;
        }
        let off = block as u64 * BLOCK;
        let len = BLOCK.min(self.0.size - off);
        // No guest access reaches the block yet (it is not mapped), and the stage-2
        // lock keeps other populators out. Zeroed and cleaned to the point of
        // coherency, then mapped.
        let cleaned = self.0.coherent.zero(&mut Hw(self.0), self.0.pa + off, len);
        if let Err(e) = s2.map_ram(&mut HeapTables, self.0.ipa + off, cleaned, Perms::RWX) {
            // The tables were built for exactly this RAM; failing here means the heap
            // is exhausted, which the hypervisor cannot recover from.
            panic!(
                "stage 2: cannot map guest RAM block at IPA {:#x}: {e:?}",
                self.0.ipa + off
            );
        }
        // SAFETY: makes the new descriptor visible to table walks before the guest
        // retries its access.
        unsafe { core::arch::asm!("dsb ishst") };
        self.0.ready[block].store(true, Ordering::Release);
        // A block populated while logging is new since the base: all of it.
        self.mark_written(self.0.ipa + off, len as usize);
    }

    /// Blocks of RAM ([`BLOCK`] each).
    pub fn blocks(&self) -> u32 {
        self.0.ready.len() as u32
    }

    /// Block `b`'s bytes if it was ever populated, for a suspend. No vCPU of the VM
    /// may run and no device may write guest RAM while the slice is in use (the
    /// suspend stops the vCPUs and drains the devices first).
    pub fn populated_block(&self, b: u32) -> Option<&'static [u8]> {
        let ready = self.0.ready.get(b as usize)?.load(Ordering::Acquire);
        if !ready {
            return None;
        }
        let off = u64::from(b) * BLOCK;
        let len = BLOCK.min(self.0.size - off);
        // SAFETY: a populated block is mapped guest RAM inside this VM's range,
        // identity-mapped host memory that lives for the hypervisor's life; the
        // caller guarantees nothing writes it while the slice is read.
        Some(unsafe { core::slice::from_raw_parts((self.0.pa + off) as *const u8, len as usize) })
    }

    /// A resume writes page data at byte `off` of block `b` before the block is
    /// guest RAM: plain stores, no cleaning (`finish_restored_block` cleans the
    /// block once and maps it). The block must not be populated: no vCPU runs yet
    /// and nothing else writes guest RAM during a resume. Out-of-range or populated
    /// blocks are ignored (the index was checked against the RAM size).
    pub fn restore_page(&self, b: u32, off: usize, data: &[u8]) {
        self.stop_dirty_log();
        let Some(ready) = self.0.ready.get(b as usize) else {
            return;
        };
        let base = u64::from(b) * BLOCK;
        let len = BLOCK.min(self.0.size - base);
        if ready.load(Ordering::Acquire) || off as u64 + data.len() as u64 > len {
            return;
        }
        Hw(self.0).copy_in(self.0.pa + base + off as u64, data);
    }

    /// Ends the restore of block `b`: zeroes its pages of `page` bytes for which
    /// `zero(p)` holds, cleans the block to the point of coherency once, and maps it.
    pub fn finish_restored_block(&self, b: u32, zero: impl Fn(usize) -> bool, page: usize) {
        self.finish_block(b, |c, hw, pa, len| {
            let pages = (len as usize).div_ceil(page);
            c.fill(hw, pa, len, |hw| {
                for p in (0..pages).filter(|&p| zero(p)) {
                    let at = (p * page) as u64;
                    hw.zero(pa + at, (page as u64).min(len - at));
                }
            })
        });
    }

    /// Ends the restore of block `b` whose other pages the system disk, a
    /// cache-coherent device (`sysdisk`), wrote by DMA, every transfer complete:
    /// zeroes its pages of `page` bytes for which `zero(p)` holds and maps it. With
    /// `clean_dma` the whole block is cleaned as [`GuestRam::finish_restored_block`]
    /// does; without, only the zeroed pages (`Coherent::zero_after_coherent_dma`:
    /// for a guest whose data accesses are cacheable, which sees the cache's clean
    /// copies of the DMA'd bytes as memory holds them).
    pub fn finish_dma_block(
        &self,
        b: u32,
        zero: impl Fn(usize) -> bool,
        page: usize,
        clean_dma: bool,
    ) {
        if clean_dma {
            return self.finish_restored_block(b, zero, page);
        }
        self.finish_block(b, |c, hw, pa, len| {
            let pages = (len as usize).div_ceil(page);
            let ranges = vmstate::ram::runs(|p| p < pages && zero(p))
                .into_iter()
                .map(|(p, n)| {
                    let at = (p * page) as u64;
                    (at, ((n * page) as u64).min(len - at))
                });
            c.zero_after_coherent_dma(hw, pa, len, ranges)
        });
    }

    /// Makes block `b` (not populated yet) guest RAM: `fill` writes whatever EL2
    /// writes and hands back the proof that the block is at the point of coherency.
    fn finish_block(
        &self,
        b: u32,
        fill: impl FnOnce(&Coherent, &mut Hw<'_>, u64, u64) -> stage2::coherency::Cleaned,
    ) {
        let Some(ready) = self.0.ready.get(b as usize) else {
            return;
        };
        let mut s2 = self.0.stage2.lock();
        if ready.load(Ordering::Acquire) {
            return;
        }
        let off = u64::from(b) * BLOCK;
        let len = BLOCK.min(self.0.size - off);
        let pa = self.0.pa + off;
        let cleaned = fill(&self.0.coherent, &mut Hw(self.0), pa, len);
        if let Err(e) = s2.map_ram(&mut HeapTables, self.0.ipa + off, cleaned, Perms::RWX) {
            panic!(
                "stage 2: cannot map guest RAM block at IPA {:#x}: {e:?}",
                self.0.ipa + off
            );
        }
        // SAFETY: makes the new descriptor visible to table walks before a vCPU runs.
        unsafe { core::arch::asm!("dsb ishst") };
        ready.store(true, Ordering::Release);
        // Restored pixels are new to the framebuffer's copy (and writable again).
        self.mark_fb(b as usize * BLOCK_PAGES, BLOCK_PAGES);
    }

    /// Maps host memory EL2 prepared (`cleaned`) at `ipa`, outside the VM's RAM
    /// (the firmware's flash banks), with `perms`.
    pub fn map_outside(
        &self,
        ipa: u64,
        cleaned: stage2::coherency::Cleaned,
        perms: Perms,
    ) -> Result<(), stage2::Error> {
        let (ram_start, ram_end) = (self.0.ipa, self.0.ipa + self.0.size);
        let end = ipa.saturating_add(cleaned.len());
        if ipa < ram_end && end > ram_start {
            return Err(stage2::Error::AlreadyMapped);
        }
        self.0
            .stage2
            .lock()
            .map_ram(&mut HeapTables, ipa, cleaned, perms)?;
        // SAFETY: makes the new descriptors visible to table walks before a vCPU
        // relies on them.
        unsafe { core::arch::asm!("dsb ishst") };
        Ok(())
    }

    /// Unmaps `[ipa, ipa + len)` mapped by [`GuestRam::map_outside`] and invalidates
    /// this VM's TLB entries, so the guest's next access there faults. Must run on a
    /// CPU whose VTTBR_EL2 is this VM's (a vCPU's exit, or the VM's reset).
    pub fn unmap_outside(&self, ipa: u64, len: u64) -> Result<(), stage2::Error> {
        let (ram_start, ram_end) = (self.0.ipa, self.0.ipa + self.0.size);
        if ipa < ram_end && ipa.saturating_add(len) > ram_start {
            return Err(stage2::Error::NotMapped);
        }
        // The whole VMID is invalidated below, not just what the Flush names.
        let _stale = self.0.stage2.lock().unmap(&mut HeapTables, ipa, len)?;
        // SAFETY: completes the descriptor writes, then invalidates this VMID's
        // stage-1+2 TLB entries on every CPU of the domain, so no vCPU keeps using
        // the removed mapping.
        unsafe { core::arch::asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb") };
        Ok(())
    }

    /// Unmaps every block (a VM reset): the next boot starts from zeroed memory again.
    /// No vCPU of the VM may be running.
    pub fn reset(&self) {
        self.stop_dirty_log();
        let mut s2 = self.0.stage2.lock();
        for (b, ready) in self.0.ready.iter().enumerate() {
            if ready.swap(false, Ordering::AcqRel) {
                let off = b as u64 * BLOCK;
                let len = BLOCK.min(self.0.size - off);
                let _ = s2.unmap(&mut HeapTables, self.0.ipa + off, len);
            }
        }
        write_sysreg!("VTTBR_EL2", self.0.vttbr);
        // SAFETY: invalidates this VMID's stage-1+2 TLB entries after the unmapping.
        unsafe { core::arch::asm!("dsb ishst", "isb", "tlbi vmalls12e1is", "dsb ish", "isb") };
    }

    /// Before a vCPU of this VM enters the guest: invalidates the instruction cache
    /// if EL2 wrote guest memory (a kernel load) since the last invalidation.
    pub fn before_entry(&self) {
        self.0.coherent.before_entry(&mut Hw(self.0));
    }

    /// Host-physical address and length of block `b` (populated or not), for a
    /// suspend's or a resume's DMA.
    pub fn block_pa(&self, b: u32) -> Option<(u64, usize)> {
        self.0.ready.get(b as usize)?;
        let off = u64::from(b) * BLOCK;
        Some((self.0.pa + off, BLOCK.min(self.0.size - off) as usize))
    }

    /// Whether block `b` is populated (guest RAM).
    pub fn is_populated(&self, b: u32) -> bool {
        self.0
            .ready
            .get(b as usize)
            .is_some_and(|r| r.load(Ordering::Acquire))
    }

    /// Block `b` while a resume fills it (not populated: no vCPU reaches it).
    /// Empty for a block out of range. The caller must not read it while a DMA
    /// into it is in flight.
    pub fn staged_block(&self, b: u32) -> &'static [u8] {
        let Some((pa, len)) = self.block_pa(b) else {
            return &[];
        };
        // SAFETY: the block lies inside this VM's RAM, identity-mapped host memory
        // that lives for the hypervisor's life; during a resume nothing but the
        // resume's own (completed) DMA writes it.
        unsafe { core::slice::from_raw_parts(pa as *const u8, len) }
    }

    /// Starts dirty logging with `base`, the image this RAM was just restored
    /// from: every populated block becomes read-only at stage 2 (no vCPU of the
    /// VM runs yet), the bitmap is cleared.
    pub fn start_dirty_log(&self, base: vmstate::Base) {
        let mut s2 = self.0.stage2.lock();
        let mut flush = Flush::NONE;
        for (b, ready) in self.0.ready.iter().enumerate() {
            if ready.load(Ordering::Acquire) {
                let off = b as u64 * BLOCK;
                let len = BLOCK.min(self.0.size - off);
                match s2.protect(
                    &mut HeapTables,
                    self.0.ipa + off,
                    len,
                    Attrs::normal(Perms::RX),
                ) {
                    Ok(f) => flush = flush.merge(f),
                    Err(e) => {
                        log::warn!(
                            "dirty logging: block {b} not write-protected ({e:?}); not started"
                        );
                        self.0.tracking.store(false, Ordering::Release);
                        *self.0.base.lock() = None;
                        drop(s2);
                        self.flush_stage2(Flush::NONE.merge(flush), true);
                        return;
                    }
                }
            }
        }
        self.0.dirty.clear_all();
        *self.0.base.lock() = Some(base);
        self.0.tracking.store(true, Ordering::Release);
        drop(s2);
        self.flush_stage2(flush, true);
    }

    /// Stops trusting the dirty log (RAM is being replaced or reset): the base is
    /// dropped. Pages still read-only at stage 2 become writable on their first
    /// write as before.
    pub fn stop_dirty_log(&self) {
        if self.0.tracking.swap(false, Ordering::AcqRel) {
            *self.0.base.lock() = None;
        }
    }

    /// Drops the base but keeps logging (a suspend attempt rewrote the extent).
    pub fn drop_base(&self) {
        *self.0.base.lock() = None;
    }

    /// The image RAM was resumed from, if every change since is logged.
    pub fn base(&self) -> Option<vmstate::Base> {
        if !self.0.tracking.load(Ordering::Acquire) {
            return None;
        }
        self.0.base.lock().clone()
    }

    /// Query and clear the pages of block `b` written since the last take (every
    /// page when not logging).
    pub fn take_dirty(&self, b: u32) -> vmstate::PageBits {
        if !self.0.tracking.load(Ordering::Acquire) {
            return vmstate::ALL_PAGES;
        }
        let mut bits = [0u64; BLOCK_PAGES / 64];
        self.0
            .dirty
            .take(b as usize * BLOCK_PAGES, BLOCK_PAGES, |p| {
                bits[p / 64] |= 1 << (p % 64)
            });
        bits
    }

    /// Marks EL2's or a device's write to `[gpa, gpa + len)` (already checked to
    /// be guest RAM).
    fn mark_written(&self, gpa: u64, len: usize) {
        if len == 0 {
            return;
        }
        let first = ((gpa - self.0.ipa) / PAGE) as usize;
        let last = ((gpa - self.0.ipa + len as u64 - 1) / PAGE) as usize;
        if self.0.tracking.load(Ordering::Acquire) {
            self.0.dirty.mark_range(first, last - first + 1);
        }
        self.mark_fb(first, last - first + 1);
    }

    /// Marks the framebuffer's pages among `count` pages from `first`.
    fn mark_fb(&self, first: usize, count: usize) {
        let fb_first = self.0.fb_first.load(Ordering::Acquire);
        let fb_end = self.0.fb_end.load(Ordering::Acquire);
        let start = first.max(fb_first);
        let end = first.saturating_add(count).min(fb_end);
        if start < end {
            self.0.fb_dirty.mark_range(start, end - start);
        }
    }

    /// Makes pages `pages` (numbered from the start of RAM, checked by the caller
    /// with `vgpu::FbGeometry::validate`) a linear framebuffer whose writes the
    /// render loop takes with [`GuestRam::take_framebuffer_dirty`]; all of them
    /// count as written (the first take reads everything and protects it). One
    /// framebuffer per VM: the previous one's pages stay writable after their next
    /// write.
    pub fn set_framebuffer(&self, pages: Range<usize>) {
        let end = pages.end.min(self.0.fb_dirty.pages());
        let first = pages.start.min(end);
        self.0.fb_end.store(0, Ordering::Release);
        self.0.fb_first.store(first, Ordering::Release);
        self.0.fb_end.store(end, Ordering::Release);
        self.0.fb_dirty.mark_range(first, end - first);
    }

    /// Query and clear the framebuffer's pages written since the last take, as
    /// runs of pages counted from its first page, and write-protects them again
    /// at stage 2 so the next write faults. A page written between the take and
    /// the protection is read by the caller after this returns, so no change is
    /// missed; pages of unpopulated blocks are left alone (populating marks them).
    /// Runs on any CPU: this VM's VTTBR_EL2 is loaded for the invalidation and the
    /// previous one restored.
    pub fn take_framebuffer_dirty(&self) -> Vec<Range<usize>> {
        let first = self.0.fb_first.load(Ordering::Acquire);
        let end = self.0.fb_end.load(Ordering::Acquire);
        if first >= end || !self.0.fb_dirty.any(first, end - first) {
            return Vec::new();
        }
        let mut flush = Flush::NONE;
        let runs = {
            let mut s2 = self.0.stage2.lock();
            let runs = self.0.fb_dirty.take_runs(first, end - first);
            for run in &runs {
                // Page by block: only populated blocks are mapped.
                let mut p = first + run.start;
                while p < first + run.end {
                    let block_end = (p / BLOCK_PAGES + 1) * BLOCK_PAGES;
                    let upto = block_end.min(first + run.end);
                    if self.is_populated((p / BLOCK_PAGES) as u32) {
                        match s2.protect(
                            &mut HeapTables,
                            self.0.ipa + p as u64 * PAGE,
                            (upto - p) as u64 * PAGE,
                            Attrs::normal(Perms::RX),
                        ) {
                            Ok(f) => flush = flush.merge(f),
                            Err(e) => log::warn!(
                                "framebuffer: pages at IPA {:#x} not write-protected: {e:?}",
                                self.0.ipa + p as u64 * PAGE
                            ),
                        }
                    }
                    p = upto;
                }
            }
            runs
        };
        self.flush_stage2(flush, true);
        runs
    }

    /// A stage-2 permission fault at `ipa`: if it is populated guest RAM (made
    /// read-only by dirty logging), marks its page written and makes the page
    /// writable again, and the guest retries. `false` for anything else.
    pub fn write_fault(&self, ipa: u64) -> bool {
        if !self.contains(ipa) || !self.is_populated(((ipa - self.0.ipa) / BLOCK) as u32) {
            return false;
        }
        let page = (ipa - self.0.ipa) / PAGE;
        let flush = {
            let mut s2 = self.0.stage2.lock();
            // Marked before the page becomes writable: a take after this sees it.
            if self.0.tracking.load(Ordering::Acquire) {
                self.0.dirty.mark(page as usize);
            }
            self.mark_fb(page as usize, 1);
            match s2.protect(
                &mut HeapTables,
                self.0.ipa + page * PAGE,
                PAGE,
                Attrs::normal(Perms::RWX),
            ) {
                Ok(f) => f,
                Err(e) => {
                    log::warn!("dirty logging: page at IPA {ipa:#x} not made writable: {e:?}");
                    return false;
                }
            }
        };
        self.flush_stage2(flush, false);
        true
    }

    /// Performs a [`Flush`] for this VM's VMID (`set_vttbr`: this CPU is not
    /// running the VM, load its VTTBR_EL2 first).
    fn flush_stage2(&self, flush: Flush, set_vttbr: bool) {
        let Some(r) = flush.range() else { return };
        let previous = set_vttbr.then(|| read_sysreg!("VTTBR_EL2"));
        if set_vttbr {
            write_sysreg!("VTTBR_EL2", self.0.vttbr);
            // SAFETY: makes the VTTBR_EL2 write take effect before the TLBIs.
            unsafe { core::arch::asm!("isb") };
        }
        self.invalidate(r);
        if let Some(v) = previous {
            // Back to whichever VM this CPU was running (the render loop flushes
            // on its way back into a guest).
            write_sysreg!("VTTBR_EL2", v);
            // SAFETY: makes the VTTBR_EL2 write take effect before the next entry.
            unsafe { core::arch::asm!("isb") };
        }
    }

    /// The TLB invalidations of a flush of IPAs `r` for the VMID in VTTBR_EL2.
    fn invalidate(&self, r: Range<u64>) {
        if r.end - r.start <= FLUSH_BY_PAGE_MAX {
            // SAFETY: orders the table updates before the invalidations.
            unsafe { core::arch::asm!("dsb ishst") };
            let mut a = r.start;
            while a < r.end {
                // SAFETY: invalidates stage-2 TLB entries of this VMID for one IPA
                // page; loses no data.
                unsafe { core::arch::asm!("tlbi ipas2e1is, {x}", x = in(reg) a >> 12) };
                a += PAGE;
            }
            // SAFETY: completes the stage-2 invalidations, then drops the combined
            // stage-1 entries built on them (the architected sequence).
            unsafe { core::arch::asm!("dsb ish", "tlbi vmalle1is", "dsb ish", "isb") };
        } else {
            // SAFETY: invalidates this VMID's stage-1+2 TLB entries after the update.
            unsafe { core::arch::asm!("dsb ishst", "tlbi vmalls12e1is", "dsb ish", "isb") };
        }
    }

    fn ptr(&self, gpa: u64, len: usize) -> Result<*mut u8, MemError> {
        self.ensure(gpa, len)?;
        Ok((self.0.pa + (gpa - self.0.ipa)) as *mut u8)
    }
}

impl GuestMemory for GuestRam {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let p = self.ptr(gpa, buf.len())?;
        // SAFETY: `ptr` checked that [gpa, gpa+len) is populated guest RAM, which is
        // identity-mapped host memory owned by this VM.
        unsafe { core::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let p = self.ptr(gpa, data.len())?;
        self.mark_written(gpa, data.len());
        self.0.coherent.write(&mut Hw(self.0), p as u64, data);
        Ok(())
    }
    /// The host-physical address (guest RAM is one physically contiguous, identity-
    /// mapped range), after populating every block of the range: a block a device
    /// writes is never zeroed afterwards by a first touch. Blocks stay populated
    /// until the VM resets, which waits for every device's DMA first.
    /// Dirty logging counts the range written (a device may write it).
    fn dma_address(&mut self, gpa: u64, len: usize) -> Result<Option<u64>, MemError> {
        let p = self.ptr(gpa, len)? as u64;
        self.mark_written(gpa, len);
        Ok(Some(p))
    }
}
