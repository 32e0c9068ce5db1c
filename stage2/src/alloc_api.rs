//! Where translation tables come from: the [`TableAllocator`] trait the
//! hypervisor implements over identity-mapped physical memory, and
//! [`SimAllocator`], a heap-backed implementation for host tests.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;

use crate::defs::granule::{PAGE_SIZE, TABLE_ENTRIES};

/// Frames for translation tables. In el2 this is identity-mapped physical
/// memory; in tests a map from address to table.
pub trait TableAllocator {
    /// `count` physically contiguous, zeroed 4 KiB tables, aligned to
    /// `count * 4 KiB` (`count` is a power of two, at most 16). Returns the
    /// physical address, or `None` when out of memory.
    fn alloc_tables(&mut self, count: usize) -> Option<u64>;

    /// Gives back tables obtained from `alloc_tables` (same `pa` and `count`).
    ///
    /// A table freed by `unmap` may still be cached by the table walkers of
    /// PEs that ran the VM: do not hand the frame out again (to anyone) until
    /// the [`crate::Flush`] returned by that operation has been performed.
    fn free_tables(&mut self, pa: u64, count: usize);

    /// The 512 descriptors of the table at `pa`.
    fn table(&mut self, pa: u64) -> &mut [u64; TABLE_ENTRIES];

    /// Break-before-make hook. Called when a *valid* descriptor covering
    /// `[ipa, ipa + size)` has just been written invalid and is about to be
    /// replaced by another valid one (a block split into a table, or a memory
    /// type change). A hypervisor updating the tables of a running VM does
    /// `DSB ISHST; TLBI IPAS2E1IS, ipa >> 12; DSB ISH` here (with the VM's
    /// VMID current). The default does nothing, which is correct when no vCPU
    /// of the VM runs until the returned [`crate::Flush`] has been performed.
    fn break_before_make(&mut self, ipa: u64, size: u64) {
        let _ = (ipa, size);
    }

    /// Publication barrier. Called after a new table has been filled (or
    /// obtained zeroed from `alloc_tables`) and before a table descriptor
    /// pointing at it is written, so a concurrent hardware walker never sees
    /// the link before the contents. el2 issues `DMB ISHST` here; the default
    /// does nothing (host tests, or no vCPU of the VM running).
    fn publish_barrier(&mut self) {}
}

/// A heap-backed [`TableAllocator`] for host tests: hands out fake physical
/// addresses from a bump pointer, tracks every live allocation and counts
/// misuse (double frees, accesses to unknown tables) instead of panicking.
#[derive(Debug)]
pub struct SimAllocator {
    tables: BTreeMap<u64, Box<[u64; TABLE_ENTRIES]>>,
    runs: BTreeMap<u64, usize>,
    next: u64,
    budget: Option<usize>,
    bad_ops: usize,
    bbm_calls: usize,
    scratch: Box<[u64; TABLE_ENTRIES]>,
}

impl SimAllocator {
    /// First fake physical address handed out.
    pub const BASE: u64 = 0x8000_0000;

    /// An allocator without a limit.
    pub fn new() -> SimAllocator {
        SimAllocator {
            tables: BTreeMap::new(),
            runs: BTreeMap::new(),
            next: Self::BASE,
            budget: None,
            bad_ops: 0,
            bbm_calls: 0,
            scratch: Box::new([0; TABLE_ENTRIES]),
        }
    }

    /// An allocator that fails once `tables` tables are live at once.
    pub fn with_budget(tables: usize) -> SimAllocator {
        SimAllocator {
            budget: Some(tables),
            ..SimAllocator::new()
        }
    }

    /// Tables currently allocated.
    pub fn live_tables(&self) -> usize {
        self.tables.len()
    }

    /// Frees of unknown runs and accesses to unallocated tables so far.
    pub fn bad_ops(&self) -> usize {
        self.bad_ops
    }

    /// Times [`TableAllocator::break_before_make`] was called.
    pub fn bbm_calls(&self) -> usize {
        self.bbm_calls
    }
}

impl Default for SimAllocator {
    fn default() -> Self {
        Self::new()
    }
}

impl TableAllocator for SimAllocator {
    fn alloc_tables(&mut self, count: usize) -> Option<u64> {
        if count == 0 || !count.is_power_of_two() {
            self.bad_ops += 1;
            return None;
        }
        if self
            .budget
            .is_some_and(|b| self.tables.len().saturating_add(count) > b)
        {
            return None;
        }
        let bytes = PAGE_SIZE * count as u64;
        let pa = self.next.checked_next_multiple_of(bytes)?;
        self.next = pa.checked_add(bytes)?;
        for i in 0..count as u64 {
            self.tables
                .insert(pa + i * PAGE_SIZE, Box::new([0; TABLE_ENTRIES]));
        }
        self.runs.insert(pa, count);
        Some(pa)
    }

    fn free_tables(&mut self, pa: u64, count: usize) {
        if self.runs.get(&pa) != Some(&count) {
            self.bad_ops += 1;
            return;
        }
        self.runs.remove(&pa);
        for i in 0..count as u64 {
            self.tables.remove(&(pa + i * PAGE_SIZE));
        }
    }

    fn table(&mut self, pa: u64) -> &mut [u64; TABLE_ENTRIES] {
        match self.tables.get_mut(&pa) {
            Some(t) => t,
            None => {
                self.bad_ops += 1;
                *self.scratch = [0; TABLE_ENTRIES];
                &mut self.scratch
            }
        }
    }

    fn break_before_make(&mut self, _ipa: u64, _size: u64) {
        self.bbm_calls += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_aligned_and_zeroed() {
        let mut a = SimAllocator::new();
        let one = a.alloc_tables(1).unwrap();
        let four = a.alloc_tables(4).unwrap();
        assert_eq!(four % (4 * PAGE_SIZE), 0);
        assert_ne!(one, four);
        assert!(a.table(four + 3 * PAGE_SIZE).iter().all(|&d| d == 0));
        a.table(one)[7] = 42;
        assert_eq!(a.table(one)[7], 42);
        assert_eq!(a.live_tables(), 5);
        a.free_tables(four, 4);
        a.free_tables(one, 1);
        assert_eq!(a.live_tables(), 0);
        assert_eq!(a.bad_ops(), 0);
    }

    #[test]
    fn misuse_is_counted() {
        let mut a = SimAllocator::new();
        let t = a.alloc_tables(2).unwrap();
        a.free_tables(t, 1);
        a.free_tables(0x1234_0000, 1);
        let _ = a.table(0x10);
        assert_eq!(a.alloc_tables(3), None);
        assert_eq!(a.bad_ops(), 4);
    }

    #[test]
    fn budget() {
        let mut a = SimAllocator::with_budget(3);
        assert!(a.alloc_tables(2).is_some());
        assert!(a.alloc_tables(2).is_none());
        assert!(a.alloc_tables(1).is_some());
        assert!(a.alloc_tables(1).is_none());
    }
}
