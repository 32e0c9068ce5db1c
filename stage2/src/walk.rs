//! Low-level walk helpers shared by every table operation: addressing a slot
//! in a (possibly concatenated) table, classifying descriptors, building
//! leaf/table descriptors, and the small reserve of pre-allocated tables that
//! makes block splitting all-or-nothing.

use crate::defs::{desc, granule};
use crate::{Error, TableAllocator};

/// A table in the walk: its address, its level and how many descriptors it
/// holds (512, or 512 x concat for the root).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Node {
    pub pa: u64,
    pub level: u8,
    pub entries: usize,
}

impl Node {
    /// A 512-entry table one level below `level`.
    #[inline(always)]
    pub fn child(pa: u64, level: u8) -> Node {
        Node {
            pa,
            level: level + 1,
            entries: granule::TABLE_ENTRIES,
        }
    }

    /// The 4 KiB table and the index within it of the descriptor for `ipa`.
    #[inline(always)]
    pub fn slot(self, ipa: u64) -> (u64, usize) {
        let idx = ((ipa >> granule::level_shift(self.level)) as usize) & (self.entries - 1);
        let table = self.pa + (idx / granule::TABLE_ENTRIES) as u64 * granule::PAGE_SIZE;
        (table, idx % granule::TABLE_ENTRIES)
    }
}

/// What a descriptor is, as the hardware walker would see it at `level`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Faults (invalid, or a type not permitted at this level).
    Invalid,
    /// Points at the next-level table at this address.
    Table(u64),
    /// A block (levels 1, 2) or page (level 3).
    Leaf,
}

/// Classifies descriptor `d` found at `level`.
#[inline(always)]
pub(crate) fn classify(d: u64, level: u8) -> Kind {
    if d & desc::VALID == 0 {
        return Kind::Invalid;
    }
    let ty = d & desc::TYPE_MASK;
    if level < granule::LAST_LEVEL {
        if ty == desc::TYPE_TABLE {
            Kind::Table(d & desc::OA_MASK)
        } else if level >= granule::MIN_BLOCK_LEVEL {
            Kind::Leaf
        } else {
            Kind::Invalid
        }
    } else if ty == desc::TYPE_PAGE {
        Kind::Leaf
    } else {
        Kind::Invalid
    }
}

/// Whether `x` is a multiple of `size`, a power of two.
#[inline(always)]
pub(crate) fn aligned(x: u64, size: u64) -> bool {
    x & (size - 1) == 0
}

/// A leaf descriptor at `level` for output address `oa` with attribute bits.
#[inline]
pub(crate) fn leaf(level: u8, oa: u64, attr_bits: u64) -> u64 {
    let ty = if level == granule::LAST_LEVEL {
        desc::TYPE_PAGE
    } else {
        desc::TYPE_BLOCK
    };
    (oa & desc::OA_MASK) | attr_bits | ty
}

/// A table descriptor pointing at `table`.
#[inline]
pub(crate) fn table_desc(table: u64) -> u64 {
    (table & desc::OA_MASK) | desc::TYPE_TABLE
}

/// Allocates `count` tables and checks the address the allocator returned.
pub(crate) fn alloc_tables<A: TableAllocator>(a: &mut A, count: usize) -> Result<u64, Error> {
    let pa = a.alloc_tables(count).ok_or(Error::OutOfMemory)?;
    let align = granule::PAGE_SIZE * count as u64;
    if pa & !desc::OA_MASK != 0 || !aligned(pa, align) || pa.checked_add(align).is_none() {
        a.free_tables(pa, count);
        return Err(Error::BadTableAddress);
    }
    Ok(pa)
}

/// Most tables two edge splits can need: a 1 GiB block split down to 4 KiB
/// pages at each end of a range.
const RESERVE_MAX: usize = 4;

/// Tables allocated before an update starts, so that the update cannot run
/// out of memory half-way.
#[derive(Debug, Default)]
pub(crate) struct Reserve {
    tables: [u64; RESERVE_MAX],
    len: usize,
    /// Tables `take` had to allocate because the reserve was empty.
    misses: usize,
}

impl Reserve {
    /// Allocates `count` tables (at most [`RESERVE_MAX`]); on failure gives
    /// back what it got and returns the error.
    pub fn fill<A: TableAllocator>(a: &mut A, count: usize) -> Result<Reserve, Error> {
        let mut r = Reserve::default();
        for _ in 0..count.min(RESERVE_MAX) {
            match alloc_tables(a, 1) {
                Ok(t) => {
                    r.tables[r.len] = t;
                    r.len += 1;
                }
                Err(e) => {
                    r.release(a);
                    return Err(e);
                }
            }
        }
        Ok(r)
    }

    /// A reserved table, or a freshly allocated one when the reserve is empty.
    pub fn take<A: TableAllocator>(&mut self, a: &mut A) -> Result<u64, Error> {
        if self.len == 0 {
            self.misses += 1;
            return alloc_tables(a, 1);
        }
        self.len -= 1;
        Ok(self.tables[self.len])
    }

    /// Whether every reserved table was used and none was missing.
    pub fn was_exact(&self) -> bool {
        self.len == 0 && self.misses == 0
    }

    /// Gives every unused table back.
    pub fn release<A: TableAllocator>(&mut self, a: &mut A) {
        while self.len > 0 {
            self.len -= 1;
            a.free_tables(self.tables[self.len], 1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Attrs, Perms};

    #[test]
    fn classify_levels() {
        let blk = leaf(2, 0x20_0000, Attrs::normal(Perms::RW).leaf_bits());
        assert_eq!(classify(blk, 2), Kind::Leaf);
        assert_eq!(classify(blk, 1), Kind::Leaf);
        // A block type at level 0 or 3 faults.
        assert_eq!(classify(blk, 0), Kind::Invalid);
        assert_eq!(classify(blk, 3), Kind::Invalid);
        let t = table_desc(0x1234_5000);
        assert_eq!(t, 0x1234_5003);
        assert_eq!(classify(t, 0), Kind::Table(0x1234_5000));
        assert_eq!(classify(t, 3), Kind::Leaf);
        assert_eq!(classify(0, 1), Kind::Invalid);
        assert_eq!(classify(0xFFFF_FFFF_FFFF_FFFE, 1), Kind::Invalid);
    }

    // Hand-derived full descriptors.
    #[test]
    fn leaf_encodings() {
        // Normal RWX page at 0x4000_0000: 0b11 | 0x3C | 0xC0 | 0x300 | 0x400.
        assert_eq!(
            leaf(3, 0x4000_0000, Attrs::normal(Perms::RWX).leaf_bits()),
            0x0000_0000_4000_07FF
        );
        // Device RW 2 MiB block at 0x0800_0000: 0b01 | 0x4 | 0xC0 | AF | XN[1].
        assert_eq!(
            leaf(2, 0x0800_0000, Attrs::device(Perms::RW).leaf_bits()),
            0x0040_0000_0800_04C5
        );
        // Normal RX 1 GiB block at 0x1_4000_0000.
        assert_eq!(
            leaf(1, 0x1_4000_0000, Attrs::normal(Perms::RX).leaf_bits()),
            0x0000_0001_4000_077D
        );
    }

    #[test]
    fn root_slots_span_concatenated_tables() {
        let root = Node {
            pa: 0x10_0000,
            level: 1,
            entries: 2 * granule::TABLE_ENTRIES,
        };
        assert_eq!(root.slot(0), (0x10_0000, 0));
        assert_eq!(root.slot(511 << 30), (0x10_0000, 511));
        assert_eq!(root.slot(512 << 30), (0x10_1000, 0));
        assert_eq!(root.slot((1023 << 30) | 0x3FFF_F000), (0x10_1000, 511));
        let l3 = Node::child(0x20_0000, 2);
        assert_eq!(l3.slot(0x1234_5678), (0x20_0000, 0x145));
    }
}
