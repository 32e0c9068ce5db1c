//! Pure helpers of the `virtio-hostile` guest: where the parts of a split
//! virtqueue of a given size sit ([`RingLayout`]), the byte patterns it fills
//! memory and disk sectors with ([`canary_byte`], [`pattern_byte`]), finding
//! what a device changed that it must not have ([`first_change`]), and picking a
//! feature bit the device did not offer ([`first_unoffered_bit`]).

use core::ops::Range;

use crate::defs::virtio as v;

/// Byte offsets (from the descriptor table) of a split virtqueue's three areas,
/// packed with their alignment: descriptors, then the available ring (2-byte
/// aligned), then the used ring (4-byte aligned).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingLayout {
    /// Queue size.
    pub size: u16,
    /// Offset of the available ring.
    pub avail: u64,
    /// Offset of the used ring.
    pub used: u64,
    /// Bytes from the descriptor table to the end of the used ring.
    pub total: u64,
}

impl RingLayout {
    /// The layout of a queue of `size` entries.
    pub const fn new(size: u16) -> Self {
        let n = size as u64;
        let avail = v::DESC_SIZE * n;
        let avail_end = avail + v::RING_HEADER + v::AVAIL_ELEM * n + v::EVENT_FIELD;
        let used = (avail_end + 3) & !3;
        let total = used + v::RING_HEADER + v::USED_ELEM * n + v::EVENT_FIELD;
        Self {
            size,
            avail,
            used,
            total,
        }
    }

    /// Offset of descriptor `i`.
    pub const fn desc(&self, i: u16) -> u64 {
        v::DESC_SIZE * i as u64
    }

    /// Offset of the available ring's entry for free-running index `idx`.
    pub const fn avail_slot(&self, idx: u16) -> u64 {
        self.avail + v::RING_HEADER + v::AVAIL_ELEM * (idx % self.size) as u64
    }

    /// Offset of the used ring's entry for free-running index `idx`.
    pub const fn used_slot(&self, idx: u16) -> u64 {
        self.used + v::RING_HEADER + v::USED_ELEM * (idx % self.size) as u64
    }

    /// The range the device may write when it completes requests: the used ring.
    pub const fn used_range(&self) -> Range<u64> {
        self.used..self.total
    }
}

/// The canary byte at offset `i` of a guarded area: varied, so a copy from
/// elsewhere or a shifted write shows.
pub fn canary_byte(i: usize) -> u8 {
    ((i as u32).wrapping_mul(0x9e37_79b9) >> 24) as u8 ^ 0xa5
}

/// Byte `i` of data pattern `seed` (what the guest writes to a sector): over a
/// sector, two different seeds differ in every byte, so a read that returns
/// stale data shows at once.
pub fn pattern_byte(seed: u8, i: usize) -> u8 {
    let x = (i as u32).wrapping_add(u32::from(seed) << 12);
    (x.wrapping_mul(0x0100_0193) >> 8) as u8 ^ seed ^ 0x3c
}

/// A byte a device changed that it must not have.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    /// Offset of the first changed byte.
    pub offset: usize,
    /// Its value before.
    pub was: u8,
    /// Its value now.
    pub now: u8,
    /// How many bytes changed outside `allowed` in all.
    pub count: usize,
}

/// Compares `len` bytes (`was(i)` before, `now(i)` after) and reports the first
/// change outside the `allowed` ranges, with the number of such changes.
pub fn first_change(
    len: usize,
    allowed: &[Range<usize>],
    was: impl Fn(usize) -> u8,
    now: impl Fn(usize) -> u8,
) -> Option<Change> {
    let mut first: Option<Change> = None;
    let mut count = 0;
    for i in 0..len {
        if allowed.iter().any(|r| r.contains(&i)) {
            continue;
        }
        let (a, b) = (was(i), now(i));
        if a != b {
            count += 1;
            first.get_or_insert(Change {
                offset: i,
                was: a,
                now: b,
                count: 0,
            });
        }
    }
    first.map(|c| Change { count, ..c })
}

/// The lowest of the 64 feature bits not in `offered`, if any.
pub fn first_unoffered_bit(offered: u64) -> Option<u32> {
    (0..64).find(|b| offered & (1u64 << b) == 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_layout_of_eight_entries() {
        let l = RingLayout::new(8);
        assert_eq!(l.avail, 128);
        // 128 + 4 + 16 + 2 = 150, rounded up to 152.
        assert_eq!(l.used, 152);
        assert_eq!(l.total, 152 + 4 + 64 + 2);
        assert_eq!(l.desc(3), 48);
        assert_eq!(l.avail_slot(9), 128 + 4 + 2);
        assert_eq!(l.used_slot(8), 156);
        assert_eq!(l.used_range(), 152..222);
    }

    #[test]
    fn patterns_differ_in_every_byte() {
        let sector = |seed: u8| -> [u8; 512] { core::array::from_fn(|i| pattern_byte(seed, i)) };
        let all: [[u8; 512]; 256] = core::array::from_fn(|s| sector(s as u8));
        for a in 0..256 {
            assert!(all[a].iter().filter(|&&x| x == all[a][0]).count() < 16);
            for b in a + 1..256 {
                let same = all[a].iter().zip(&all[b]).filter(|(x, y)| x == y).count();
                assert_eq!(same, 0, "seeds {a} and {b}");
            }
        }
        let c: [u8; 64] = core::array::from_fn(canary_byte);
        assert!(c.iter().filter(|&&x| x == c[0]).count() < 4);
    }

    #[test]
    fn first_change_skips_allowed_ranges_and_counts() {
        let before = [1u8, 2, 3, 4, 5, 6];
        let after = [1u8, 9, 3, 8, 5, 7];
        let c = first_change(6, &[], |i| before[i], |i| after[i]).unwrap();
        assert_eq!((c.offset, c.was, c.now, c.count), (1, 2, 9, 3));
        let c = first_change(
            6,
            core::slice::from_ref(&(0..2)),
            |i| before[i],
            |i| after[i],
        )
        .unwrap();
        assert_eq!((c.offset, c.count), (3, 2));
        assert_eq!(
            first_change(6, &[1..2, 3..6], |i| before[i], |i| after[i]),
            None
        );
    }

    #[test]
    fn unoffered_bit() {
        assert_eq!(first_unoffered_bit(0), Some(0));
        assert_eq!(first_unoffered_bit(0b1011), Some(2));
        assert_eq!(first_unoffered_bit(u64::MAX), None);
        assert_eq!(first_unoffered_bit(!(1 << 63)), Some(63));
    }
}
