//! Cache coherency of guest RAM that the hypervisor writes on a guest's behalf.
//!
//! EL2 writes guest RAM through its cacheable identity map: zeroing a block before
//! it is first mapped, loading the kernel, initrd and device tree, and device DMA.
//! A guest whose MMU is off (every guest starts that way; the self-test guest never
//! turns it on) reads memory as Non-cacheable, straight from DRAM, and would see what
//! was there before — stale data, or another owner's — while EL2's writes still sit
//! in the data cache. Instruction fetches can likewise hit stale lines of the
//! instruction cache.
//!
//! The rule, built into the types here:
//! - every byte EL2 writes for a guest goes through [`Coherent::zero`] or
//!   [`Coherent::write`], which clean *and invalidate* it to the point of coherency
//!   (DC CIVAC by line, then DSB) before returning — so data reaches DRAM before the
//!   guest can run again, and no clean line lingers for a later Non-cacheable guest
//!   write to be shadowed by;
//! - guest RAM is mapped at stage 2 with [`crate::Stage2::map_ram`], which takes a
//!   [`Cleaned`] — a proof only [`Coherent::zero`] hands out — for exactly the range
//!   it maps;
//! - a block a cache-coherent device filled by DMA (a resume) may instead go
//!   through [`Coherent::zero_after_coherent_dma`], which cleans only what EL2
//!   zeroed: the device's bytes are already at the point of coherency; its caller
//!   decides that the guest needs no more (one whose data accesses are cacheable);
//! - any such write leaves the instruction cache owing an invalidation, which
//!   [`Coherent::before_entry`] pays (IC IALLUIS, DSB, ISB) before a vCPU is entered
//!   after a boot load. Code a device DMAs into a running guest is the guest's own
//!   instruction-cache business, as with real DMA.
//!
//! FEAT_S2FWB (HCR_EL2.FWB) would make stage 2 force the guest's accesses
//! cacheable and the data-side cleaning unnecessary; it is not used, so this one rule
//! holds on every CPU.
//!
//! The maintenance instructions themselves are `el2`'s, behind [`GuestRamAccess`].

use core::sync::atomic::{AtomicBool, Ordering};

/// The memory accesses and cache maintenance EL2 performs on guest RAM
/// (host-physical addresses, identity-mapped).
pub trait GuestRamAccess {
    /// The smallest data-cache line in bytes (4 << CTR_EL0.DminLine); a power of two.
    fn dcache_line(&self) -> u64;
    /// Writes `data` at `pa` through the cacheable map.
    fn copy_in(&mut self, pa: u64, data: &[u8]);
    /// Writes `len` zero bytes at `pa` through the cacheable map.
    fn zero(&mut self, pa: u64, len: u64);
    /// DC CIVAC of the line holding `pa`: clean and invalidate to the point of coherency.
    fn clean_invalidate_line(&mut self, pa: u64);
    /// DSB ISH: waits for the maintenance issued so far to complete.
    fn barrier(&mut self);
    /// IC IALLUIS, DSB ISH, ISB: invalidate every instruction cache of the
    /// inner-shareable domain.
    fn invalidate_icache(&mut self);
}

/// Proof that `[pa, pa + len)` was cleaned to the point of coherency after EL2 last
/// wrote it. Only this module makes one.
#[must_use = "guest RAM is mapped with the proof that it was cleaned"]
#[derive(Debug, PartialEq, Eq)]
pub struct Cleaned {
    pa: u64,
    len: u64,
}

impl Cleaned {
    /// The host-physical start of the cleaned range.
    pub fn pa(&self) -> u64 {
        self.pa
    }
    /// Its length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }
    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The coherency state of one VM's RAM: whether the instruction cache may hold
/// lines older than EL2's last write.
#[derive(Debug, Default)]
pub struct Coherent {
    icache_stale: AtomicBool,
}

impl Coherent {
    /// Nothing written yet.
    pub const fn new() -> Self {
        Self {
            icache_stale: AtomicBool::new(false),
        }
    }

    /// Zeroes `[pa, pa + len)` and cleans it; the proof maps it.
    pub fn zero<M: GuestRamAccess>(&self, m: &mut M, pa: u64, len: u64) -> Cleaned {
        m.zero(pa, len);
        self.cleaned(m, pa, len)
    }

    /// Fills `[pa, pa + len)` with `fill` (which must write every byte of it, through
    /// `m`'s `copy_in` and `zero`) and cleans it once; the proof maps it. For a block
    /// EL2 writes whole before the guest can reach it (a resume): one clean instead
    /// of one for the zeroing and one per write.
    pub fn fill<M: GuestRamAccess>(
        &self,
        m: &mut M,
        pa: u64,
        len: u64,
        fill: impl FnOnce(&mut M),
    ) -> Cleaned {
        fill(m);
        self.cleaned(m, pa, len)
    }

    /// Ends `[pa, pa + len)` after a cache-coherent device filled it by DMA (every
    /// transfer complete), except the ranges `zero` names (`(offset, len)` from
    /// `pa`, inside the range), which are zeroed here: only those are cleaned. A
    /// coherent device's writes are visible at the point of coherency and leave no
    /// cache holding an older copy (Arm ARM B2.3, "coherent" observers), so a guest
    /// reading its bytes Non-cacheable reads them; lines the CPU has read since stay
    /// in the cache, clean and equal to memory. The caller judges whether that is
    /// enough: it is for a guest that accesses this RAM cacheable (a Non-cacheable
    /// write followed by a cacheable read of the same line is its own business, as
    /// on hardware, Arm ARM B2.15 "mismatched memory attributes"); a guest with its
    /// data accesses Non-cacheable gets [`Coherent::zero`]/[`Coherent::fill`]'s
    /// whole clean. The instruction cache owes an invalidation either way.
    pub fn zero_after_coherent_dma<M: GuestRamAccess>(
        &self,
        m: &mut M,
        pa: u64,
        len: u64,
        zero: impl IntoIterator<Item = (u64, u64)>,
    ) -> Cleaned {
        for (off, n) in zero {
            let n = n.min(len.saturating_sub(off));
            if n > 0 {
                m.zero(pa + off, n);
                Self::clean_lines(m, pa + off, n);
            }
        }
        m.barrier();
        self.icache_stale.store(true, Ordering::Release);
        Cleaned { pa, len }
    }

    /// Writes `data` at `pa` and cleans it.
    pub fn write<M: GuestRamAccess>(&self, m: &mut M, pa: u64, data: &[u8]) {
        m.copy_in(pa, data);
        let _ = self.cleaned(m, pa, data.len() as u64);
    }

    /// Before a vCPU enters the guest: invalidates the instruction cache if EL2
    /// wrote guest memory since the last invalidation.
    pub fn before_entry<M: GuestRamAccess>(&self, m: &mut M) {
        if self.icache_stale.swap(false, Ordering::AcqRel) {
            m.invalidate_icache();
        }
    }

    /// Whether an instruction-cache invalidation is owed.
    pub fn icache_stale(&self) -> bool {
        self.icache_stale.load(Ordering::Acquire)
    }

    /// DC CIVAC of every line of `[pa, pa + len)`, without the barrier.
    fn clean_lines<M: GuestRamAccess>(m: &mut M, pa: u64, len: u64) {
        let line = m.dcache_line().max(1);
        let mut a = pa & !(line - 1);
        while a < pa + len {
            m.clean_invalidate_line(a);
            a += line;
        }
    }

    fn cleaned<M: GuestRamAccess>(&self, m: &mut M, pa: u64, len: u64) -> Cleaned {
        if len > 0 {
            Self::clean_lines(m, pa, len);
            m.barrier();
            self.icache_stale.store(true, Ordering::Release);
        }
        Cleaned { pa, len }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Perms, SimAllocator, Stage2};
    use alloc::collections::BTreeMap;
    use alloc::vec;
    use alloc::vec::Vec;

    const LINE: u64 = 64;
    /// What DRAM held before: the previous owner's data.
    const OLD: u8 = 0xa5;

    /// A write-back data cache and an instruction cache in front of DRAM, with
    /// maintenance that takes effect only at the next barrier.
    struct Model {
        dram: Vec<u8>,
        dcache: BTreeMap<u64, Vec<u8>>,
        icache: BTreeMap<u64, Vec<u8>>,
        pending: Vec<u64>,
        icache_invalidations: usize,
    }

    impl Model {
        fn new(size: usize) -> Self {
            Self {
                dram: vec![OLD; size],
                dcache: BTreeMap::new(),
                icache: BTreeMap::new(),
                pending: Vec::new(),
                icache_invalidations: 0,
            }
        }
        fn line_of(&mut self, pa: u64) -> &mut Vec<u8> {
            let base = pa & !(LINE - 1);
            let dram = &self.dram;
            self.dcache
                .entry(base)
                .or_insert_with(|| dram[base as usize..(base + LINE) as usize].to_vec())
        }
        fn store(&mut self, pa: u64, b: u8) {
            let off = (pa % LINE) as usize;
            self.line_of(pa)[off] = b;
        }
        /// What a guest with its MMU off (Non-cacheable) reads: DRAM.
        fn nc_read(&self, pa: u64, len: usize) -> &[u8] {
            &self.dram[pa as usize..pa as usize + len]
        }
        /// An instruction fetch: hits the instruction cache, else fills it from DRAM.
        fn fetch(&mut self, pa: u64) -> u8 {
            let base = pa & !(LINE - 1);
            let dram = &self.dram;
            self.icache
                .entry(base)
                .or_insert_with(|| dram[base as usize..(base + LINE) as usize].to_vec())
                [(pa % LINE) as usize]
        }
    }

    impl GuestRamAccess for Model {
        fn dcache_line(&self) -> u64 {
            LINE
        }
        fn copy_in(&mut self, pa: u64, data: &[u8]) {
            for (i, b) in data.iter().enumerate() {
                self.store(pa + i as u64, *b);
            }
        }
        fn zero(&mut self, pa: u64, len: u64) {
            for i in 0..len {
                self.store(pa + i, 0);
            }
        }
        fn clean_invalidate_line(&mut self, pa: u64) {
            assert_eq!(pa % LINE, 0, "maintenance by line address");
            self.pending.push(pa);
        }
        fn barrier(&mut self) {
            for base in core::mem::take(&mut self.pending) {
                if let Some(line) = self.dcache.remove(&base) {
                    self.dram[base as usize..(base + LINE) as usize].copy_from_slice(&line);
                }
            }
        }
        fn invalidate_icache(&mut self) {
            self.icache.clear();
            self.icache_invalidations += 1;
        }
    }

    #[test]
    fn zeroed_block_reaches_dram_before_it_is_mapped() {
        let mut m = Model::new(0x4000);
        let c = Coherent::new();
        let proof = c.zero(&mut m, 0x1000, 0x2000);
        assert_eq!(
            proof,
            Cleaned {
                pa: 0x1000,
                len: 0x2000
            }
        );
        assert!(m.nc_read(0x1000, 0x2000).iter().all(|b| *b == 0));
        assert_eq!(m.nc_read(0xfff, 1), [OLD], "outside the range untouched");
        assert_eq!(m.nc_read(0x3000, 1), [OLD]);
        assert!(m.dcache.is_empty(), "no line left to shadow guest writes");

        let mut frames = SimAllocator::new();
        let layout = crate::Layout::from_parange(0b0010, 48).unwrap();
        let mut s2 = Stage2::new(&mut frames, layout, 1).unwrap();
        let size = m.dram.len() as u64;
        let proof = c.zero(&mut m, 0, size);
        s2.map_ram(&mut frames, 0x4000_0000, proof, Perms::RWX)
            .unwrap();
        assert_eq!(s2.translate(&mut frames, 0x4000_1234).unwrap().pa, 0x1234);
    }

    #[test]
    fn unaligned_writes_are_cleaned_on_every_line_they_touch() {
        let mut m = Model::new(0x1000);
        let c = Coherent::new();
        let data: Vec<u8> = (0..150u8).collect();
        // Starts mid-line and ends mid-line three lines later.
        c.write(&mut m, 0x13, &data);
        assert_eq!(m.nc_read(0x13, data.len()), &data[..]);
        assert_eq!(m.nc_read(0x12, 1), [OLD]);
        assert_eq!(m.nc_read(0x13 + 150, 1), [OLD]);
        assert!(m.dcache.is_empty());
        // An empty write cleans nothing and owes nothing.
        let c2 = Coherent::new();
        c2.write(&mut m, 0x200, &[]);
        assert!(!c2.icache_stale());
    }

    #[test]
    fn loaded_code_is_fetched_fresh_after_before_entry() {
        let mut m = Model::new(0x1000);
        let c = Coherent::new();
        // A previous boot ran code here: the instruction cache holds it.
        assert_eq!(m.fetch(0x100), OLD);
        c.write(&mut m, 0x100, &[0xd5; 8]);
        assert!(c.icache_stale(), "the write leaves an invalidation owed");
        assert_eq!(m.fetch(0x100), OLD, "still stale before entry");
        c.before_entry(&mut m);
        assert!(!c.icache_stale());
        assert_eq!(m.fetch(0x100), 0xd5);
        // Nothing written since: no further invalidation.
        c.before_entry(&mut m);
        assert_eq!(m.icache_invalidations, 1);
    }

    #[test]
    fn after_coherent_dma_only_the_zeroed_pages_are_cleaned_and_all_reads_agree() {
        let mut m = Model::new(3 * 4096);
        let c = Coherent::new();
        // EL2 had written page 0 earlier (a dirty line), and read page 2: a clean
        // line of what DRAM held.
        m.store(0, 0x11);
        let _ = m.line_of(2 * 4096);
        // A coherent device writes pages 0 and 2: DRAM takes the data and no cache
        // keeps an older copy.
        for p in [0u64, 2] {
            m.dram[(p * 4096) as usize..((p + 1) * 4096) as usize].fill(7);
            m.dcache.retain(|&l, _| l / 4096 != p);
        }
        // The CPU checksums them (cacheable reads fill clean lines).
        let _ = m.line_of(0);
        let _ = m.line_of(2 * 4096 + 64);
        let cleaned = c.zero_after_coherent_dma(&mut m, 0, 3 * 4096, [(4096, 4096)]);
        assert_eq!((cleaned.pa(), cleaned.len()), (0, 3 * 4096));
        assert!(m.nc_read(0, 4096).iter().all(|&b| b == 7));
        assert!(
            m.nc_read(4096, 4096).iter().all(|&b| b == 0),
            "zeros cleaned"
        );
        assert!(m.nc_read(2 * 4096, 4096).iter().all(|&b| b == 7));
        assert!(
            m.dcache.values().flatten().all(|&b| b == 7),
            "the lines left are clean copies of the DMA'd data"
        );
        assert!(c.icache_stale());
    }

    #[test]
    fn a_filled_block_reaches_dram_whole_after_one_clean() {
        let mut m = Model::new(8192);
        let c = Coherent::new();
        // A resume: page 0 written with data, page 1 zeroed, then one clean.
        let cleaned = c.fill(&mut m, 0, 8192, |m| {
            m.copy_in(0, &[7u8; 4096]);
            m.zero(4096, 4096);
        });
        assert_eq!((cleaned.pa(), cleaned.len()), (0, 8192));
        assert!(m.nc_read(0, 4096).iter().all(|&b| b == 7));
        assert!(m.nc_read(4096, 4096).iter().all(|&b| b == 0));
        assert!(m.dcache.is_empty(), "every line cleaned");
        assert!(
            c.icache_stale(),
            "an instruction-cache invalidation is owed"
        );
    }
}
