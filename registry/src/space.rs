//! Space on the data area: the consistency rules that span records (unique UUIDs and
//! names, every extent aligned and inside the data area, no two extents
//! overlapping) and first-fit allocation of new extents. Free space is not stored:
//! it is whatever the committed records do not use, so it cannot disagree with them.

use alloc::vec::Vec;

use crate::defs::MAX_VMS;
use crate::error::ConsistencyError;
use crate::record::{Extent, ExtentRole, VmRecord};
use crate::superblock::Superblock;
use crate::uuid::Uuid;

/// Checks a whole set of records against each other and the geometry.
pub fn check_layout(sb: &Superblock, vms: &[VmRecord]) -> Result<(), ConsistencyError> {
    if vms.len() > MAX_VMS {
        return Err(ConsistencyError::TooManyVms);
    }
    let data = sb.data_area();
    let data_end = data.start + data.len;
    let mut used: Vec<(Extent, Uuid, ExtentRole)> = Vec::new();
    for (i, vm) in vms.iter().enumerate() {
        vm.check()?;
        for other in &vms[..i] {
            if other.uuid == vm.uuid {
                return Err(ConsistencyError::DuplicateUuid(vm.uuid));
            }
            if other.name == vm.name {
                return Err(ConsistencyError::DuplicateName(vm.uuid));
            }
        }
        for (role, e) in vm.extents() {
            if !e.start.is_multiple_of(sb.alloc_unit) || !e.len.is_multiple_of(sb.alloc_unit) {
                return Err(ConsistencyError::Misaligned { vm: vm.uuid, role });
            }
            match e.end() {
                Some(end) if e.start >= data.start && end <= data_end => {}
                _ => return Err(ConsistencyError::OutOfBounds { vm: vm.uuid, role }),
            }
            used.push((e, vm.uuid, role));
        }
    }
    used.sort_by_key(|(e, _, _)| e.start);
    for pair in used.windows(2) {
        let (a, a_vm, a_role) = pair[0];
        let (b, b_vm, b_role) = pair[1];
        // Both ends were checked against the data area above, so no overflow.
        if a.start + a.len > b.start {
            return Err(ConsistencyError::Overlap {
                vm: a_vm,
                role: a_role,
                other_vm: b_vm,
                other_role: b_role,
            });
        }
    }
    Ok(())
}

/// Rounds `len` up to the allocation unit (`None` on overflow).
pub fn round_up(sb: &Superblock, len: u64) -> Option<u64> {
    len.checked_add(sb.alloc_unit - 1)
        .map(|l| l / sb.alloc_unit * sb.alloc_unit)
}

/// Every used extent (of `vms` and of `extra`), sorted by start.
fn used_sorted(vms: &[VmRecord], extra: &[Extent]) -> Vec<Extent> {
    let mut used: Vec<Extent> = vms
        .iter()
        .flat_map(|vm| vm.extents().into_iter().map(|(_, e)| e))
        .collect();
    used.extend(extra.iter().copied().filter(|e| !e.is_empty()));
    used.sort();
    used
}

/// The free runs of the data area, in address order.
pub fn free_runs(sb: &Superblock, vms: &[VmRecord], extra: &[Extent]) -> Vec<Extent> {
    let data = sb.data_area();
    let end = data.start + data.len;
    let mut runs = Vec::new();
    let mut cursor = data.start;
    for e in used_sorted(vms, extra) {
        if e.start > cursor {
            runs.push(Extent {
                start: cursor,
                len: e.start - cursor,
            });
        }
        cursor = cursor.max(e.start.saturating_add(e.len));
    }
    if end > cursor {
        runs.push(Extent {
            start: cursor,
            len: end - cursor,
        });
    }
    runs
}

/// First-fit: the lowest free extent of `len` bytes (rounded up to the allocation
/// unit), not overlapping any extent of `vms` or `extra`. `None` if `len` is 0 or no
/// free run is large enough.
pub fn allocate(sb: &Superblock, vms: &[VmRecord], extra: &[Extent], len: u64) -> Option<Extent> {
    let len = round_up(sb, len)?;
    if len == 0 {
        return None;
    }
    free_runs(sb, vms, extra)
        .into_iter()
        .find(|r| r.len >= len)
        .map(|r| Extent {
            start: r.start,
            len,
        })
}

/// The parts of `e` that no extent of `covers` overlaps, in address order.
pub fn subtract(e: Extent, covers: &[Extent]) -> Vec<Extent> {
    let Some(end) = e.end() else {
        return Vec::new();
    };
    let mut sorted: Vec<Extent> = covers.iter().copied().filter(|c| !c.is_empty()).collect();
    sorted.sort();
    let mut out = Vec::new();
    let mut cursor = e.start;
    for c in sorted {
        let c_end = c.end().unwrap_or(u64::MAX);
        if c_end <= cursor || c.start >= end {
            continue;
        }
        if c.start > cursor {
            out.push(Extent {
                start: cursor,
                len: c.start - cursor,
            });
        }
        cursor = cursor.max(c_end);
    }
    if end > cursor {
        out.push(Extent {
            start: cursor,
            len: end - cursor,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::sample;
    use crate::record::GuestDisk;
    use alloc::vec;

    fn sb() -> Superblock {
        Superblock::for_capacity(Uuid::from_random_bytes([3; 16]), 1 << 30).unwrap()
    }

    #[test]
    fn samples_are_consistent() {
        check_layout(&sb(), &[sample(0), sample(1), sample(2)]).unwrap();
    }

    #[test]
    fn duplicates_refused() {
        let mut b = sample(1);
        b.uuid = sample(0).uuid;
        assert_eq!(
            check_layout(&sb(), &[sample(0), b.clone()]),
            Err(ConsistencyError::DuplicateUuid(b.uuid))
        );
        let mut c = sample(1);
        c.name = sample(0).name;
        assert_eq!(
            check_layout(&sb(), &[sample(0), c.clone()]),
            Err(ConsistencyError::DuplicateName(c.uuid))
        );
    }

    #[test]
    fn overlap_misalignment_and_bounds_refused() {
        let mut b = sample(1);
        b.disks.push(GuestDisk {
            extent: sample(0).tpm_nv,
            read_only: false,
        });
        assert!(matches!(
            check_layout(&sb(), &[sample(0), b]),
            Err(ConsistencyError::Overlap { .. })
        ));
        let mut c = sample(1);
        c.tpm_nv.start += 512;
        assert!(matches!(
            check_layout(&sb(), &[c]),
            Err(ConsistencyError::Misaligned { .. })
        ));
        let mut d = sample(1);
        d.tpm_nv = Extent {
            start: sb().data_offset - 4096,
            len: 4096,
        };
        assert!(matches!(
            check_layout(&sb(), &[d]),
            Err(ConsistencyError::OutOfBounds { .. })
        ));
        let mut e = sample(1);
        e.tpm_nv = Extent {
            start: u64::MAX - 4095,
            len: 1 << 20,
        };
        assert!(matches!(
            check_layout(&sb(), &[e]),
            Err(ConsistencyError::OutOfBounds { .. })
        ));
        let mut f = sample(1);
        let area = sb().data_area();
        f.tpm_nv = Extent {
            start: area.start + area.len,
            len: 4096,
        };
        assert!(matches!(
            check_layout(&sb(), &[f]),
            Err(ConsistencyError::OutOfBounds { .. })
        ));
    }

    #[test]
    fn first_fit_uses_the_lowest_gap() {
        let s = sb();
        let start = s.data_offset;
        let a = Extent { start, len: 0x2000 };
        let b = Extent {
            start: start + 0x3000,
            len: 0x1000,
        };
        // A 1-byte request fits the 0x1000 hole between a and b.
        assert_eq!(
            allocate(&s, &[], &[a, b], 1),
            Some(Extent {
                start: start + 0x2000,
                len: 0x1000
            })
        );
        // A larger one goes after b.
        assert_eq!(
            allocate(&s, &[], &[a, b], 0x1001),
            Some(Extent {
                start: start + 0x4000,
                len: 0x2000
            })
        );
        assert_eq!(allocate(&s, &[], &[], 0), None);
        assert_eq!(allocate(&s, &[], &[], s.data_size + 1), None);
        assert_eq!(allocate(&s, &[], &[], s.data_size), Some(s.data_area()));
        assert_eq!(allocate(&s, &[], &[], u64::MAX), None);
    }

    #[test]
    fn subtract_leaves_the_uncovered_parts() {
        let e = Extent {
            start: 0x1000,
            len: 0x4000,
        };
        assert_eq!(subtract(e, &[]), vec![e]);
        assert_eq!(subtract(e, &[e]), vec![]);
        let mid = Extent {
            start: 0x2000,
            len: 0x1000,
        };
        assert_eq!(
            subtract(
                e,
                &[
                    mid,
                    Extent {
                        start: 0x9000,
                        len: 0x1000
                    }
                ]
            ),
            vec![
                Extent {
                    start: 0x1000,
                    len: 0x1000
                },
                Extent {
                    start: 0x3000,
                    len: 0x2000
                }
            ]
        );
        assert_eq!(
            subtract(
                e,
                &[Extent {
                    start: 0,
                    len: 0x3000
                }]
            ),
            vec![Extent {
                start: 0x3000,
                len: 0x2000
            }]
        );
    }

    #[test]
    fn free_runs_cover_what_is_unused() {
        let s = sb();
        let vms = vec![sample(0)];
        let used: u64 = vms[0].extents().iter().map(|(_, e)| e.len).sum();
        let free: u64 = free_runs(&s, &vms, &[]).iter().map(|r| r.len).sum();
        assert_eq!(free + used, s.data_size);
    }
}
