//! What a UEFI memory map leaves to the hypervisor once boot services have exited
//! (UEFI 2.10, 7.2 `EFI_BOOT_SERVICES.GetMemoryMap()` and `EFI_MEMORY_TYPE`).
//!
//! The hypervisor takes its RAM from the device tree's memory nodes; started as a
//! UEFI application it must also leave alone what the firmware keeps after
//! `ExitBootServices()`: runtime services' code and data, ACPI tables and NVS,
//! reserved and unusable memory, persistent memory. [`kept_ranges`] turns the map
//! into those ranges, merged, in a bounded list.

use crate::Range;

/// Size of a UEFI page (`EFI_PAGE_SIZE`): a descriptor counts these.
pub const EFI_PAGE_SIZE: u64 = 4096;

/// `EFI_MEMORY_TYPE` values (UEFI 2.10, Table 7.6).
pub mod memory_type {
    pub const RESERVED: u32 = 0;
    pub const LOADER_CODE: u32 = 1;
    pub const LOADER_DATA: u32 = 2;
    pub const BOOT_SERVICES_CODE: u32 = 3;
    pub const BOOT_SERVICES_DATA: u32 = 4;
    pub const RUNTIME_SERVICES_CODE: u32 = 5;
    pub const RUNTIME_SERVICES_DATA: u32 = 6;
    pub const CONVENTIONAL: u32 = 7;
    pub const UNUSABLE: u32 = 8;
    pub const ACPI_RECLAIM: u32 = 9;
    pub const ACPI_NVS: u32 = 10;
    pub const MMIO: u32 = 11;
    pub const MMIO_PORT_SPACE: u32 = 12;
    pub const PAL_CODE: u32 = 13;
    pub const PERSISTENT: u32 = 14;
}

/// Whether memory of type `ty` is free for the OS once boot services have exited
/// (the loader's own allocations included: the hypervisor names the ones it still
/// uses itself). Unknown and OEM/OS-loader-reserved types are kept.
pub fn free_after_exit(ty: u32) -> bool {
    use memory_type::*;
    matches!(
        ty,
        LOADER_CODE | LOADER_DATA | BOOT_SERVICES_CODE | BOOT_SERVICES_DATA | CONVENTIONAL
    )
}

/// One memory descriptor: (type, physical start, number of [`EFI_PAGE_SIZE`] pages).
pub type Descriptor = (u32, u64, u64);

/// Fills `out` with the ranges of `map` the firmware keeps ([`free_after_exit`] is
/// false), overlapping or adjacent ones merged; returns how many. When `out` is
/// full a further range is merged into the nearest one, which then also covers
/// the gap between them: the list may keep more memory than the firmware asks,
/// never less. Sizes that overflow the address space end at its top.
pub fn kept_ranges(map: impl IntoIterator<Item = Descriptor>, out: &mut [Range]) -> usize {
    let mut n = 0;
    for (ty, start, pages) in map {
        if free_after_exit(ty) || pages == 0 {
            continue;
        }
        let end = start.saturating_add(pages.saturating_mul(EFI_PAGE_SIZE));
        let touching = out[..n]
            .iter()
            .position(|r| start <= r.base.saturating_add(r.size) && r.base <= end);
        let slot = match touching {
            Some(i) => i,
            None if n < out.len() => {
                out[n] = Range {
                    base: start,
                    size: end - start,
                };
                n += 1;
                continue;
            }
            None => match nearest(&out[..n], start, end) {
                Some(i) => i,
                None => continue,
            },
        };
        let r = &mut out[slot];
        let (b, e) = (r.base.min(start), r.base.saturating_add(r.size).max(end));
        *r = Range {
            base: b,
            size: e - b,
        };
    }
    n
}

/// Whether memory of type `ty` is RAM (whoever owns it): what a device tree's
/// memory nodes would describe. MMIO, reserved and unusable memory are not.
pub fn is_ram(ty: u32) -> bool {
    use memory_type::*;
    free_after_exit(ty)
        || matches!(
            ty,
            RUNTIME_SERVICES_CODE | RUNTIME_SERVICES_DATA | ACPI_RECLAIM | ACPI_NVS | PERSISTENT
        )
}

/// The RAM of `map` ([`is_ram`]), sorted, touching ranges merged: the memory a
/// platform discovered from ACPI has (ACPI tables do not describe RAM).
pub fn ram_ranges(map: impl IntoIterator<Item = Descriptor>) -> alloc::vec::Vec<Range> {
    let mut ram: alloc::vec::Vec<Range> = map
        .into_iter()
        .filter(|&(ty, _, pages)| is_ram(ty) && pages != 0)
        .map(|(_, start, pages)| Range {
            base: start,
            size: start.saturating_add(pages.saturating_mul(EFI_PAGE_SIZE)) - start,
        })
        .collect();
    ram.sort_by_key(|r| r.base);
    let mut out: alloc::vec::Vec<Range> = alloc::vec::Vec::new();
    for r in ram {
        match out.last_mut() {
            Some(l) if r.base <= l.base + l.size => {
                let end = (l.base + l.size).max(r.base + r.size);
                l.size = end - l.base;
            }
            _ => out.push(r),
        }
    }
    out
}

/// The range of `rs` with the smallest gap to `[start, end)`.
fn nearest(rs: &[Range], start: u64, end: u64) -> Option<usize> {
    let gap = |r: &Range| {
        let r_end = r.base.saturating_add(r.size);
        if r_end <= start {
            start - r_end
        } else {
            r.base.saturating_sub(end)
        }
    };
    (0..rs.len()).min_by_key(|&i| gap(&rs[i]))
}

#[cfg(test)]
mod tests {
    use super::memory_type::*;
    use super::*;

    const P: u64 = EFI_PAGE_SIZE;

    fn r(base: u64, size: u64) -> Range {
        Range { base, size }
    }

    #[test]
    fn free_types_are_dropped_and_kept_ones_merged_when_they_touch() {
        let map = [
            (CONVENTIONAL, 0x4000_0000, 0x1000),
            (RUNTIME_SERVICES_CODE, 0x7f00_0000, 4),
            (RUNTIME_SERVICES_DATA, 0x7f00_4000, 2),
            (BOOT_SERVICES_DATA, 0x7f00_6000, 1),
            (ACPI_RECLAIM, 0x7f10_0000, 1),
            (LOADER_CODE, 0x7e00_0000, 512),
            (RESERVED, 0x7f00_5000, 3),    // overlaps the runtime data
            (0x7000_0001, 0x8000_0000, 1), // OEM type: kept
            (MMIO, 0x0400_0000, 0),        // empty: nothing
        ];
        let mut out = [Range::default(); 8];
        let n = kept_ranges(map, &mut out);
        assert_eq!(
            &out[..n],
            &[r(0x7f00_0000, 8 * P), r(0x7f10_0000, P), r(0x8000_0000, P)]
        );
    }

    #[test]
    fn a_full_list_grows_the_nearest_range_and_never_drops_one() {
        let map = [
            (RESERVED, 0x1000_0000, 1),
            (RESERVED, 0x2000_0000, 1),
            (ACPI_NVS, 0x2001_0000, 1), // nearest: the second
            (ACPI_NVS, 0x0fff_0000, 1), // nearest: the first
        ];
        let mut out = [Range::default(); 2];
        let n = kept_ranges(map, &mut out);
        assert_eq!(n, 2);
        assert_eq!(out[0], r(0x0fff_0000, 0x1_1000));
        assert_eq!(out[1], r(0x2000_0000, 0x1_1000));
        for (_, start, pages) in map {
            assert!(out
                .iter()
                .any(|k| k.base <= start && start + pages * P <= k.base + k.size));
        }
    }

    #[test]
    fn ram_is_every_ram_type_merged_in_address_order_without_mmio_or_reserved() {
        let map = [
            (RUNTIME_SERVICES_DATA, 0x7f00_0000, 0x100),
            (CONVENTIONAL, 0x4000_0000, 0x2_0000),
            (MMIO, 0x0400_0000, 0x10),
            (BOOT_SERVICES_DATA, 0x7000_0000, 0xf000),
            (ACPI_RECLAIM, 0x7f10_0000, 0xf00),
            (RESERVED, 0x8000_0000, 0x10),
        ];
        assert_eq!(
            ram_ranges(map),
            [r(0x4000_0000, 0x2000_0000), r(0x7000_0000, 0x1000_0000)]
        );
    }

    #[test]
    fn hostile_sizes_saturate_at_the_top_of_the_address_space() {
        let mut out = [Range::default(); 2];
        let n = kept_ranges([(RESERVED, u64::MAX - P, u64::MAX)], &mut out);
        assert_eq!(&out[..n], &[r(u64::MAX - P, P)]);
    }
}
