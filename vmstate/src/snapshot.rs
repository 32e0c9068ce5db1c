//! In-memory snapshots: a copy of guest RAM ([`RamSnapshot`]: the populated
//! blocks, all-zero pages as the same [`ZeroMap`] a saved image uses) and the
//! copy-on-write log of the guest's disk ([`DiskCow`]: the first write to a
//! [`COW_GRANULE`] of the disk after a snapshot saves the granule's old contents;
//! a rollback writes them back). Both are bounded: every allocation is fallible
//! and counted against a byte budget, and running out is an error (a snapshot is
//! refused; a disk log that cannot grow marks its snapshot broken, so a rollback
//! to it is refused instead of restoring a disk that lost changes).

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::fmt;

use vdev::{BlockBackend, BlockError};

use crate::ram::{ZeroMap, PAGES_PER_BLOCK, PAGE_SIZE};
use crate::store::{RamImage, RamSink};

/// Bytes of the disk saved per copy-on-write entry (aligned).
pub const COW_GRANULE: u64 = 4096;

/// Why a snapshot or a rollback could not be made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SnapshotError {
    /// The copy needs `need` bytes more than `budget` allows (or the heap had).
    NoMemory { need: u64, budget: u64 },
    /// The disk log of this snapshot overflowed its budget: it cannot be rolled
    /// back to.
    Broken,
    /// Reading or writing the disk failed.
    Io(BlockError),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::NoMemory { need, budget } => write!(
                f,
                "not enough hypervisor memory: needs {} KiB, {} KiB available for snapshots",
                need >> 10,
                budget >> 10
            ),
            SnapshotError::Broken => f.write_str(
                "the guest changed more of its disk than the copy-on-write budget holds since this snapshot; it cannot be rolled back to",
            ),
            SnapshotError::Io(e) => write!(f, "system disk I/O: {e:?}"),
        }
    }
}

/// One populated block of RAM: its number, zero map and its non-zero pages in
/// order.
struct SavedBlock {
    block: u32,
    zero: ZeroMap,
    data: Vec<u8>,
}

/// A copy of guest RAM in hypervisor memory.
pub struct RamSnapshot {
    blocks: Vec<SavedBlock>,
    bytes: u64,
}

impl RamSnapshot {
    /// Copies every populated block of `ram`, refusing (before or during the copy)
    /// when it needs more than `budget` bytes or the heap has no room.
    pub fn capture(ram: &dyn RamImage, budget: u64) -> Result<Self, SnapshotError> {
        let mut maps = Vec::new();
        let mut need = 0u64;
        for b in 0..ram.blocks() {
            if let Some(bytes) = ram.block(b) {
                let zero = ZeroMap::of(bytes);
                need += (zero.data_pages() * PAGE_SIZE) as u64;
                maps.push((b, zero));
            }
        }
        need += (maps.len() * core::mem::size_of::<SavedBlock>()) as u64;
        let no_memory = SnapshotError::NoMemory { need, budget };
        if need > budget {
            return Err(no_memory);
        }
        let mut blocks = Vec::new();
        blocks
            .try_reserve_exact(maps.len())
            .map_err(|_| no_memory.clone())?;
        for (b, zero) in maps {
            let bytes = ram.block(b).unwrap_or(&[]);
            let mut data = Vec::new();
            data.try_reserve_exact(zero.data_pages() * PAGE_SIZE)
                .map_err(|_| no_memory.clone())?;
            for (p, page) in bytes.chunks(PAGE_SIZE).enumerate() {
                if !zero.is_zero(p) {
                    data.extend_from_slice(page);
                    // A short last page is padded to a whole one.
                    data.resize(data.len().next_multiple_of(PAGE_SIZE), 0);
                }
            }
            blocks.push(SavedBlock {
                block: b,
                zero,
                data,
            });
        }
        Ok(Self {
            blocks,
            bytes: need,
        })
    }

    /// Bytes of hypervisor memory this copy takes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Writes the copy into `sink` (which must start from RAM with no block
    /// populated: blocks not in the copy stay unpopulated and read as zero).
    pub fn restore(&self, sink: &mut dyn RamSink) {
        for s in &self.blocks {
            let mut pages = s.data.chunks_exact(PAGE_SIZE);
            for p in (0..PAGES_PER_BLOCK).filter(|&p| !s.zero.is_zero(p)) {
                if let Some(page) = pages.next() {
                    sink.write_page(s.block, p as u32, page);
                }
            }
            sink.end_block(s.block, &s.zero);
        }
    }
}

/// One snapshot's disk log: the old contents of each granule (by its byte
/// offset) first written after the snapshot.
#[derive(Default)]
struct CowLog {
    saved: BTreeMap<u64, Vec<u8>>,
    broken: bool,
}

/// The copy-on-write logs of every live snapshot, by snapshot id, within one
/// byte budget.
pub struct DiskCow {
    logs: BTreeMap<u64, CowLog>,
    bytes: u64,
    budget: u64,
}

impl DiskCow {
    pub fn new(budget: u64) -> Self {
        Self {
            logs: BTreeMap::new(),
            bytes: 0,
            budget,
        }
    }

    /// Starts a log for snapshot `id` (the disk now is its state).
    pub fn start(&mut self, id: u64) {
        self.logs.insert(id, CowLog::default());
    }

    /// Drops snapshot `id`'s log.
    pub fn drop_log(&mut self, id: u64) {
        if let Some(l) = self.logs.remove(&id) {
            self.bytes -= l.saved.values().map(|v| v.len() as u64).sum::<u64>();
        }
    }

    /// Bytes saved for snapshot `id`.
    pub fn bytes_of(&self, id: u64) -> u64 {
        self.logs
            .get(&id)
            .map_or(0, |l| l.saved.values().map(|v| v.len() as u64).sum())
    }

    /// Whether any snapshot is logging (writes need [`Self::before_write`]).
    pub fn active(&self) -> bool {
        !self.logs.is_empty()
    }

    /// Before the guest writes `len` bytes at byte `offset` of `disk` (an extent
    /// `[lo, hi)` of it): saves the old contents of each granule not yet saved by
    /// a live snapshot. A log that cannot grow is marked broken (and logged by the
    /// caller through the returned count); the write itself always goes ahead.
    /// Returns how many snapshots became broken.
    pub fn before_write(
        &mut self,
        disk: &mut dyn BlockBackend,
        (lo, hi): (u64, u64),
        offset: u64,
        len: u64,
    ) -> usize {
        if self.logs.is_empty() || len == 0 {
            return 0;
        }
        let mut broke = 0;
        let first = offset / COW_GRANULE * COW_GRANULE;
        let end = offset.saturating_add(len).min(hi);
        let mut g = first;
        while g < end {
            let start = g.max(lo);
            let stop = (g + COW_GRANULE).min(hi);
            g += COW_GRANULE;
            let wanting: Vec<u64> = self
                .logs
                .iter()
                .filter(|(_, l)| !l.broken && !l.saved.contains_key(&start))
                .map(|(&id, _)| id)
                .collect();
            if wanting.is_empty() {
                continue;
            }
            let n = (stop - start) as usize;
            let mut old = Vec::new();
            let fits = self.bytes + (n * wanting.len()) as u64 <= self.budget
                && old.try_reserve_exact(n).is_ok();
            let read = fits && {
                old.resize(n, 0);
                disk.read_at(start, &mut old).is_ok()
            };
            for id in wanting {
                let Some(l) = self.logs.get_mut(&id) else {
                    continue;
                };
                if !read {
                    l.broken = true;
                    broke += 1;
                    continue;
                }
                let mut copy = Vec::new();
                if copy.try_reserve_exact(n).is_err() {
                    l.broken = true;
                    broke += 1;
                    continue;
                }
                copy.extend_from_slice(&old);
                self.bytes += n as u64;
                l.saved.insert(start, copy);
            }
        }
        broke
    }

    /// Writes snapshot `id`'s saved granules back to `disk`, flushes, and empties
    /// its log (the disk is its state again). Every log taken after `id` (larger
    /// ids) is dropped: the disk no longer holds their state. Older logs stay
    /// valid (they hold contents from before `id`'s and were taken of every
    /// granule written since).
    pub fn rollback(&mut self, disk: &mut dyn BlockBackend, id: u64) -> Result<(), SnapshotError> {
        let log = self.logs.get(&id).ok_or(SnapshotError::Broken)?;
        if log.broken {
            return Err(SnapshotError::Broken);
        }
        for (&at, data) in &log.saved {
            disk.write_at(at, data).map_err(SnapshotError::Io)?;
        }
        disk.flush().map_err(SnapshotError::Io)?;
        let newer: Vec<u64> = self.logs.range(id..).map(|(&k, _)| k).collect();
        for k in newer {
            self.drop_log(k);
        }
        self.start(id);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ram::BLOCK_SIZE;
    use alloc::vec;

    struct Disk(Vec<u8>);
    impl BlockBackend for Disk {
        fn capacity(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_only(&self) -> bool {
            false
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
            let o = offset as usize;
            buf.copy_from_slice(self.0.get(o..o + buf.len()).ok_or(BlockError::OutOfRange)?);
            Ok(())
        }
        fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
            let o = offset as usize;
            self.0
                .get_mut(o..o + data.len())
                .ok_or(BlockError::OutOfRange)?
                .copy_from_slice(data);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), BlockError> {
            Ok(())
        }
    }

    fn write(cow: &mut DiskCow, d: &mut Disk, at: u64, data: &[u8]) -> usize {
        let hi = d.0.len() as u64;
        let n = cow.before_write(d, (0, hi), at, data.len() as u64);
        d.write_at(at, data).unwrap();
        n
    }

    #[test]
    fn rollback_restores_the_disk_as_it_was_at_the_snapshot() {
        let orig: Vec<u8> = (0..64 * 1024).map(|i| (i * 7) as u8).collect();
        let mut d = Disk(orig.clone());
        let mut cow = DiskCow::new(1 << 20);
        cow.start(1);
        write(&mut cow, &mut d, 512, &[0xaa; 512]);
        write(&mut cow, &mut d, 512, &[0xbb; 512]); // second write: already saved
        write(&mut cow, &mut d, 3 * 4096 + 4000, &[0xcc; 200]); // spans two granules
        assert_eq!(cow.bytes_of(1), 3 * COW_GRANULE);
        cow.start(2);
        let at2 = d.0.clone();
        write(&mut cow, &mut d, 40960, &[0xdd; 4096]);
        write(&mut cow, &mut d, 0, &[0xee; 8192]);
        cow.rollback(&mut d, 2).unwrap();
        assert_eq!(d.0, at2);
        cow.rollback(&mut d, 1).unwrap();
        assert_eq!(d.0, orig);
        // Rolling back to 1 dropped nothing older; 2 is gone.
        assert_eq!(cow.rollback(&mut d, 2), Err(SnapshotError::Broken));
        // And 1 keeps working after further writes.
        write(&mut cow, &mut d, 100 * 8, &[1; 8]);
        cow.rollback(&mut d, 1).unwrap();
        assert_eq!(d.0, orig);
    }

    #[test]
    fn a_log_over_budget_is_broken_and_refuses_rollback() {
        let mut d = Disk(vec![5; 32 * 1024]);
        let mut cow = DiskCow::new(COW_GRANULE);
        cow.start(1);
        assert_eq!(write(&mut cow, &mut d, 0, &[1; 4096]), 0);
        assert_eq!(write(&mut cow, &mut d, 8192, &[1; 4096]), 1);
        assert_eq!(cow.rollback(&mut d, 1), Err(SnapshotError::Broken));
        cow.drop_log(1);
        assert!(!cow.active());
    }

    #[test]
    fn granules_are_clipped_to_the_extent() {
        let mut d = Disk(vec![3; 16 * 1024]);
        let mut cow = DiskCow::new(1 << 20);
        cow.start(1);
        // Extent [1000, 9000): the first and last granules are partial.
        cow.before_write(&mut d, (1000, 9000), 1000, 8000);
        d.write_at(1000, &[9; 8000]).unwrap();
        assert_eq!(cow.bytes_of(1), 8000);
        cow.rollback(&mut d, 1).unwrap();
        assert_eq!(d.0, vec![3; 16 * 1024]);
    }

    struct Ram(Vec<Option<Vec<u8>>>);
    impl RamImage for Ram {
        fn blocks(&self) -> u32 {
            self.0.len() as u32
        }
        fn block(&self, b: u32) -> Option<&[u8]> {
            self.0[b as usize].as_deref()
        }
    }
    impl RamSink for Ram {
        fn write_page(&mut self, b: u32, page: u32, data: &[u8]) {
            let blk = self.0[b as usize].get_or_insert_with(|| vec![0xff; BLOCK_SIZE]);
            let at = page as usize * PAGE_SIZE;
            blk[at..at + PAGE_SIZE].copy_from_slice(data);
        }
        fn end_block(&mut self, b: u32, zero: &ZeroMap) {
            let blk = self.0[b as usize].get_or_insert_with(|| vec![0xff; BLOCK_SIZE]);
            for p in (0..PAGES_PER_BLOCK).filter(|&p| zero.is_zero(p)) {
                blk[p * PAGE_SIZE..(p + 1) * PAGE_SIZE].fill(0);
            }
        }
    }

    #[test]
    fn ram_round_trips_and_is_bounded() {
        let mut blk = vec![0u8; BLOCK_SIZE];
        blk[3 * PAGE_SIZE + 9] = 4;
        blk[BLOCK_SIZE - 1] = 8;
        let ram = Ram(vec![None, Some(blk.clone()), None]);
        let snap = RamSnapshot::capture(&ram, 1 << 20).unwrap();
        assert!(snap.bytes() >= 2 * PAGE_SIZE as u64 && snap.bytes() < 3 * PAGE_SIZE as u64);
        let mut back = Ram(vec![None, None, None]);
        snap.restore(&mut back);
        assert_eq!(back.0, ram.0);
        assert!(matches!(
            RamSnapshot::capture(&ram, PAGE_SIZE as u64),
            Err(SnapshotError::NoMemory { .. })
        ));
    }
}
