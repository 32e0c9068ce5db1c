//! The shape of a VM's stage-2 tables: IPA size, start level, number of
//! concatenated root tables and output size, derived from
//! ID_AA64MMFR0_EL1, plus the matching VTCR_EL2 value.
//!
//! Choice (4 KiB granule, Arm ARM "Concatenated translation tables for the
//! initial stage 2 lookup"): start as late as possible, using up to 16
//! concatenated root tables, so every walk does the fewest lookups:
//!
//! | IPA bits | start level | root tables | SL0 |
//! |----------|-------------|-------------|-----|
//! | 25..=30  | 2           | 1           | 0b00 |
//! | 31..=34  | 2           | 2, 4, 8, 16 | 0b00 |
//! | 35..=39  | 1           | 1           | 0b01 |
//! | 40..=43  | 1           | 2, 4, 8, 16 | 0b01 |
//! | 44..=48  | 0           | 1           | 0b10 |

use crate::defs::{granule, mmfr0, vtcr};
use crate::Error;

/// Geometry of a VM's stage-2 translation (4 KiB granule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// IPA size in bits (VTCR_EL2.T0SZ = 64 - ipa_bits).
    pub ipa_bits: u32,
    /// Output (physical) address size in bits, one of the PARange sizes, at
    /// most 48 (VTCR_EL2.PS).
    pub pa_bits: u32,
    /// Level of the initial lookup (0, 1 or 2).
    pub start_level: u8,
    /// Number of concatenated 4 KiB root tables (1, 2, 4, 8 or 16).
    pub concat: usize,
    /// Whether VMIDs are 16 bits wide (VTCR_EL2.VS). [`Layout::from_parange`]
    /// leaves this false; [`Layout::from_mmfr0`] sets it when supported.
    pub vmid16: bool,
}

impl Layout {
    /// Derives the layout from ID_AA64MMFR0_EL1.PARange (the 4-bit field value)
    /// with the IPA size capped at `max_ipa_bits` (and at 48 bits). 8-bit VMIDs.
    pub fn from_parange(parange: u8, max_ipa_bits: u32) -> Result<Layout, Error> {
        let pa_bits = mmfr0::parange_bits(parange)
            .ok_or(Error::UnsupportedPaRange)?
            .min(granule::MAX_ADDR_BITS);
        let ipa_bits = pa_bits.min(max_ipa_bits);
        Self::for_sizes(ipa_bits, pa_bits)
    }

    /// Derives the layout from a whole ID_AA64MMFR0_EL1 value: PARange as in
    /// [`Layout::from_parange`], and 16-bit VMIDs if VMIDBits says so.
    pub fn from_mmfr0(mmfr0_value: u64, max_ipa_bits: u32) -> Result<Layout, Error> {
        let parange = (mmfr0_value >> mmfr0::PARANGE_SHIFT) & mmfr0::FIELD_MASK;
        let vmid_bits = (mmfr0_value >> mmfr0::VMIDBITS_SHIFT) & mmfr0::FIELD_MASK;
        // `parange` is a 4-bit field, so the narrowing cannot lose bits.
        Ok(Self::from_parange(parange as u8, max_ipa_bits)?
            .with_vmid16(vmid_bits == mmfr0::VMIDBITS_16))
    }

    /// The same layout with 16-bit VMIDs switched on or off.
    pub fn with_vmid16(mut self, vmid16: bool) -> Layout {
        self.vmid16 = vmid16;
        self
    }

    /// The layout for an IPA size and an output size (`pa_bits` must be a
    /// PARange size of at most 48, `ipa_bits <= pa_bits`).
    pub fn for_sizes(ipa_bits: u32, pa_bits: u32) -> Result<Layout, Error> {
        if mmfr0::parange_encoding(pa_bits).is_none() || pa_bits > granule::MAX_ADDR_BITS {
            return Err(Error::UnsupportedPaRange);
        }
        if ipa_bits < granule::MIN_IPA_BITS {
            return Err(Error::IpaTooSmall);
        }
        if ipa_bits > pa_bits {
            return Err(Error::InvalidLayout);
        }
        // Latest start level whose root, with at most 16 concatenated tables,
        // resolves every IPA bit above that level's entries.
        let mut start_level = granule::LATEST_START_LEVEL;
        while start_level > 0
            && ipa_bits
                > granule::level_shift(start_level)
                    + granule::BITS_PER_LEVEL
                    + granule::MAX_CONCAT_BITS
        {
            start_level -= 1;
        }
        let root_bits = granule::level_shift(start_level) + granule::BITS_PER_LEVEL;
        let concat = 1usize << ipa_bits.saturating_sub(root_bits);
        Ok(Layout {
            ipa_bits,
            pa_bits,
            start_level,
            concat,
            vmid16: false,
        })
    }

    /// Whether this layout is exactly what [`Layout::for_sizes`] derives.
    pub fn is_consistent(&self) -> bool {
        Self::for_sizes(self.ipa_bits, self.pa_bits)
            .is_ok_and(|l| l.with_vmid16(self.vmid16) == *self)
    }

    /// Bytes of IPA space (2^ipa_bits).
    #[inline]
    pub fn ipa_size(&self) -> u64 {
        1u64 << self.ipa_bits
    }

    /// Bytes of output address space (2^pa_bits).
    #[inline]
    pub fn pa_size(&self) -> u64 {
        1u64 << self.pa_bits
    }

    /// Descriptors in the (concatenated) root.
    #[inline]
    pub fn root_entries(&self) -> usize {
        self.concat * granule::TABLE_ENTRIES
    }

    /// The full VTCR_EL2 value for this layout: T0SZ, SL0, table walks
    /// Inner/Outer WBWA Inner Shareable, TG0 4 KiB, PS, VS and RES1 bit 31.
    /// HA/HD (hardware access/dirty flags) stay off.
    pub fn vtcr(&self, vmid16: bool) -> u64 {
        let t0sz = u64::from(vtcr::T0SZ_BASE - self.ipa_bits);
        let sl0 = match self.start_level {
            0 => vtcr::SL0_4K_LEVEL0,
            1 => vtcr::SL0_4K_LEVEL1,
            _ => vtcr::SL0_4K_LEVEL2,
        };
        let ps = u64::from(mmfr0::parange_encoding(self.pa_bits).unwrap_or(0));
        let mut v = vtcr::RES1
            | (t0sz << vtcr::T0SZ_SHIFT)
            | (sl0 << vtcr::SL0_SHIFT)
            | (vtcr::RGN_WBWA << vtcr::IRGN0_SHIFT)
            | (vtcr::RGN_WBWA << vtcr::ORGN0_SHIFT)
            | (vtcr::SH0_INNER << vtcr::SH0_SHIFT)
            | (vtcr::TG0_4K << vtcr::TG0_SHIFT)
            | (ps << vtcr::PS_SHIFT);
        if vmid16 {
            v |= vtcr::VS;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(parange: u8) -> Layout {
        Layout::from_parange(parange, 64).unwrap()
    }

    // Expected VTCR_EL2 values are hand-derived from the register layout:
    // RES1 0x8000_0000, SH0 IS 0x3000, ORGN0 WBWA 0x400, IRGN0 WBWA 0x100,
    // SL0 (4K: L2 0b00, L1 0b01 = 0x40, L0 0b10 = 0x80), PS << 16, T0SZ.
    #[test]
    fn parange_32() {
        let x = l(0b0000);
        assert_eq!(
            (x.ipa_bits, x.pa_bits, x.start_level, x.concat),
            (32, 32, 2, 4)
        );
        assert_eq!(x.vtcr(false), 0x8000_3520);
    }

    #[test]
    fn parange_36() {
        let x = l(0b0001);
        assert_eq!(
            (x.ipa_bits, x.pa_bits, x.start_level, x.concat),
            (36, 36, 1, 1)
        );
        assert_eq!(x.vtcr(false), 0x8001_355C);
    }

    #[test]
    fn parange_40() {
        let x = l(0b0010);
        assert_eq!(
            (x.ipa_bits, x.pa_bits, x.start_level, x.concat),
            (40, 40, 1, 2)
        );
        assert_eq!(x.vtcr(false), 0x8002_3558);
    }

    #[test]
    fn parange_42() {
        let x = l(0b0011);
        assert_eq!(
            (x.ipa_bits, x.pa_bits, x.start_level, x.concat),
            (42, 42, 1, 8)
        );
        assert_eq!(x.vtcr(false), 0x8003_3556);
    }

    #[test]
    fn parange_44() {
        let x = l(0b0100);
        assert_eq!(
            (x.ipa_bits, x.pa_bits, x.start_level, x.concat),
            (44, 44, 0, 1)
        );
        assert_eq!(x.vtcr(false), 0x8004_3594);
    }

    #[test]
    fn parange_48() {
        let x = l(0b0101);
        assert_eq!(
            (x.ipa_bits, x.pa_bits, x.start_level, x.concat),
            (48, 48, 0, 1)
        );
        assert_eq!(x.vtcr(false), 0x8005_3590);
        assert_eq!(x.vtcr(true), 0x800D_3590);
    }

    #[test]
    fn parange_52_and_56_cap_at_48() {
        assert_eq!(l(0b0110), l(0b0101));
        assert_eq!(l(0b0111), l(0b0101));
    }

    #[test]
    fn reserved_parange() {
        for p in 8..=15 {
            assert_eq!(Layout::from_parange(p, 48), Err(Error::UnsupportedPaRange));
        }
    }

    #[test]
    fn ipa_cap() {
        // 48-bit PA, IPA capped at 40: level 1 with 2 tables, PS still 48 bits.
        let x = Layout::from_parange(0b0101, 40).unwrap();
        assert_eq!(
            (x.ipa_bits, x.pa_bits, x.start_level, x.concat),
            (40, 48, 1, 2)
        );
        assert_eq!(x.vtcr(false), 0x8005_3558);
        // Concatenation boundaries.
        let c = |bits| {
            let x = Layout::from_parange(0b0101, bits).unwrap();
            (x.start_level, x.concat)
        };
        assert_eq!(c(25), (2, 1));
        assert_eq!(c(30), (2, 1));
        assert_eq!(c(31), (2, 2));
        assert_eq!(c(34), (2, 16));
        assert_eq!(c(35), (1, 1));
        assert_eq!(c(39), (1, 1));
        assert_eq!(c(43), (1, 16));
        assert_eq!(c(44), (0, 1));
        assert_eq!(Layout::from_parange(0b0101, 24), Err(Error::IpaTooSmall));
        assert_eq!(Layout::from_parange(0b0101, 0), Err(Error::IpaTooSmall));
    }

    #[test]
    fn every_layout_is_architecturally_consistent() {
        // Arm ARM AArch64.S2InconsistentSL: the IPA size must lie within
        // [levels*9 + 12 + 1, that + 8 + 4] for the start level.
        for bits in 25..=48 {
            let x = Layout::from_parange(0b0101, bits).unwrap();
            let levels = u32::from(3 - x.start_level);
            let min = levels * 9 + 12 + 1;
            assert!(bits >= min && bits <= min + 8 + 4, "{bits}");
            assert!(x.concat.is_power_of_two() && x.concat <= 16);
            // The root resolves exactly the IPA bits above the start level.
            let covered = x.root_entries() as u64 * granule::level_size(x.start_level);
            assert!(covered >= x.ipa_size() && (x.concat == 1 || covered == x.ipa_size()));
            assert!(x.is_consistent());
        }
    }

    #[test]
    fn from_mmfr0_reads_vmidbits() {
        let x = Layout::from_mmfr0(0x0000_0000_0000_0025, 48).unwrap();
        assert_eq!(x.pa_bits, 48);
        assert!(x.vmid16);
        let y = Layout::from_mmfr0(0x0000_0000_0000_0002, 48).unwrap();
        assert_eq!(y.pa_bits, 40);
        assert!(!y.vmid16);
    }

    #[test]
    fn inconsistent_layouts() {
        let mut x = l(0b0010);
        x.concat = 1;
        assert!(!x.is_consistent());
        assert_eq!(Layout::for_sizes(40, 38), Err(Error::UnsupportedPaRange));
        assert_eq!(Layout::for_sizes(44, 40), Err(Error::InvalidLayout));
    }
}
