//! The free physical memory map the hypervisor hands out in large pieces (guest
//! RAM, RAM disks, staging buffers): the device tree's memory ranges minus
//! everything already in use — the hypervisor image (with its BSS, heap and stacks),
//! the DTB, the initrd the loader left, and reserved regions.

use alloc::vec::Vec;

use crate::discover::Range;

/// Free physical ranges, sorted, non-overlapping.
pub struct PhysMem {
    free: Vec<Range>,
}

impl PhysMem {
    /// Starts from `memory` and removes every `used` range.
    pub fn new(memory: &[Range], used: &[Range]) -> Self {
        let mut free: Vec<Range> = memory.to_vec();
        for u in used {
            free = free
                .into_iter()
                .flat_map(|f| {
                    let mut parts = Vec::new();
                    if !f.overlaps(u) {
                        parts.push(f);
                        return parts;
                    }
                    if f.base < u.base {
                        parts.push(Range {
                            base: f.base,
                            size: u.base - f.base,
                        });
                    }
                    if u.end() < f.end() {
                        parts.push(Range {
                            base: u.end(),
                            size: f.end() - u.end(),
                        });
                    }
                    parts
                })
                .collect();
        }
        free.sort_by_key(|r| r.base);
        Self { free }
    }

    /// Takes `size` bytes aligned to `align` (a power of two) from the highest free
    /// range that fits, so low memory stays free for firmware conventions. `None`
    /// when nothing fits, or for a zero size or an alignment that is not a power of two.
    pub fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        if size == 0 || !align.is_power_of_two() {
            return None;
        }
        for i in (0..self.free.len()).rev() {
            let r = self.free[i];
            if r.size < size {
                continue;
            }
            let base = (r.end() - size) & !(align - 1);
            if base < r.base {
                continue;
            }
            let tail = Range {
                base: base + size,
                size: r.end() - (base + size),
            };
            self.free[i] = Range {
                base: r.base,
                size: base - r.base,
            };
            if tail.size > 0 {
                self.free.insert(i + 1, tail);
            }
            self.free.retain(|r| r.size > 0);
            return Some(base);
        }
        None
    }

    /// Total free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.free.iter().map(|r| r.size).sum()
    }

    /// The largest free range's size: the most one [`PhysMem::alloc`] can take.
    pub fn largest_free(&self) -> u64 {
        self.free.iter().map(|r| r.size).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn r(base: u64, size: u64) -> Range {
        Range { base, size }
    }

    #[test]
    fn the_largest_free_range_is_what_one_allocation_can_take() {
        // An image near the top splits the RAM: 1 GiB with 16 MiB used 16 MiB
        // below its end leaves 992 + 16 MiB free in two pieces.
        let mut m = PhysMem::new(&[r(GIB, GIB)], &[r(2 * GIB - 32 * MIB, 16 * MIB)]);
        assert_eq!(m.free_bytes(), GIB - 16 * MIB);
        assert_eq!(m.largest_free(), GIB - 32 * MIB);
        assert_eq!(m.alloc(m.free_bytes(), MIB), None);
        let all = m.largest_free();
        assert_eq!(m.alloc(all, MIB), Some(GIB));
        assert_eq!(m.largest_free(), 16 * MIB);
        assert_eq!(PhysMem::new(&[], &[]).largest_free(), 0);
    }

    #[test]
    fn used_ranges_are_cut_out_and_allocation_comes_from_the_top() {
        let ram = [r(GIB, GIB)];
        let used = [
            r(GIB + 0x8_0000, 20 * MIB),
            r(GIB + GIB - MIB, MIB),
            r(0, 4096),
        ];
        let mut m = PhysMem::new(&ram, &used);
        assert_eq!(m.free_bytes(), GIB - 21 * MIB);
        // The top MiB is used, so the highest 2 MiB-aligned 64 MiB ends below it.
        assert_eq!(m.alloc(64 * MIB, 2 * MIB), Some(GIB + GIB - 66 * MIB));
        assert_eq!(m.free_bytes(), GIB - 85 * MIB);
        // Nothing handed out twice.
        let a = m.alloc(4096, 4096).unwrap();
        let b = m.alloc(4096, 4096).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn exhaustion_and_bad_requests_are_none() {
        let mut m = PhysMem::new(&[r(GIB, 4 * MIB)], &[r(GIB + MIB, MIB)]);
        assert_eq!(m.alloc(3 * MIB, 4096), None, "no 3 MiB hole");
        assert_eq!(m.alloc(2 * MIB, 4096), Some(GIB + 2 * MIB));
        assert_eq!(m.alloc(MIB, 4096), Some(GIB));
        assert_eq!(m.alloc(4096, 4096), None);
        assert_eq!(m.alloc(0, 4096), None);
        assert_eq!(m.alloc(4096, 3), None);
        assert_eq!(m.free_bytes(), 0);
    }
}
