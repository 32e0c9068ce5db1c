//! Physical memory the hypervisor hands out in large pieces (guest RAM): the
//! device tree's memory ranges minus everything already in use — the hypervisor
//! image (with its BSS, heap and stacks), the DTB, the initrd the loader left, and
//! reserved regions.

use alloc::vec::Vec;

use boards::Range;

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

    /// Takes `size` bytes aligned to `align` from the highest free range that fits,
    /// so low memory stays free for firmware conventions.
    pub fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
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
}
