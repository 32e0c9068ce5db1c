//! Mapping attributes (memory type and stage-2 permissions) and their
//! encoding into / decoding from the attribute bits of a stage-2 leaf
//! descriptor.

use core::ops::{BitAnd, BitOr, BitOrAssign};

use crate::defs::desc;

/// Stage-2 memory type of a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MemType {
    /// Normal memory, Inner and Outer Write-Back Cacheable, Inner Shareable.
    Normal,
    /// Device-nGnRE (MMIO passed through to the guest).
    Device,
}

/// Stage-2 access permissions: a set of [`Perms::R`], [`Perms::W`], [`Perms::X`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Perms(u8);

impl Perms {
    /// No access (any access faults to EL2).
    pub const NONE: Perms = Perms(0);
    /// Read.
    pub const R: Perms = Perms(1 << 0);
    /// Write.
    pub const W: Perms = Perms(1 << 1);
    /// Execute (instruction fetch at EL1 and EL0).
    pub const X: Perms = Perms(1 << 2);
    /// Read + write.
    pub const RW: Perms = Perms(Self::R.0 | Self::W.0);
    /// Read + execute.
    pub const RX: Perms = Perms(Self::R.0 | Self::X.0);
    /// Read + write + execute.
    pub const RWX: Perms = Perms(Self::R.0 | Self::W.0 | Self::X.0);

    /// The raw bit set (R = bit 0, W = bit 1, X = bit 2).
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Builds a set from raw bits, dropping unknown ones.
    pub const fn from_bits_truncate(bits: u8) -> Perms {
        Perms(bits & Self::RWX.0)
    }

    /// Whether every permission in `other` is in `self`.
    pub const fn contains(self, other: Perms) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl BitOr for Perms {
    type Output = Perms;
    fn bitor(self, rhs: Perms) -> Perms {
        Perms(self.0 | rhs.0)
    }
}

impl BitOrAssign for Perms {
    fn bitor_assign(&mut self, rhs: Perms) {
        self.0 |= rhs.0;
    }
}

impl BitAnd for Perms {
    type Output = Perms;
    fn bitand(self, rhs: Perms) -> Perms {
        Perms(self.0 & rhs.0)
    }
}

/// Attributes of a stage-2 mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Attrs {
    /// Memory type.
    pub mem: MemType,
    /// Access permissions.
    pub perms: Perms,
}

impl Attrs {
    /// Normal write-back memory with `perms`.
    pub const fn normal(perms: Perms) -> Attrs {
        Attrs {
            mem: MemType::Normal,
            perms,
        }
    }

    /// Device-nGnRE memory with `perms`.
    pub const fn device(perms: Perms) -> Attrs {
        Attrs {
            mem: MemType::Device,
            perms,
        }
    }

    /// The attribute bits of a leaf descriptor (MemAttr, S2AP, SH, AF, XN);
    /// the caller adds the output address and the block/page type bits.
    pub const fn leaf_bits(self) -> u64 {
        let mut d = desc::AF;
        d |= match self.mem {
            MemType::Normal => (desc::MEMATTR_NORMAL_WB << desc::MEMATTR_SHIFT) | desc::SH_INNER,
            // Shareability is ignored for Device memory (always Outer Shareable).
            MemType::Device => desc::MEMATTR_DEVICE_NGNRE << desc::MEMATTR_SHIFT,
        };
        if self.perms.contains(Perms::R) {
            d |= desc::S2AP_READ;
        }
        if self.perms.contains(Perms::W) {
            d |= desc::S2AP_WRITE;
        }
        if !self.perms.contains(Perms::X) {
            d |= desc::XN_NONE_EXEC;
        }
        d
    }

    /// Decodes the attributes of a leaf descriptor. Any Device MemAttr decodes
    /// as [`MemType::Device`], any Normal one as [`MemType::Normal`].
    #[inline]
    pub const fn from_leaf(d: u64) -> Attrs {
        let memattr = (d & desc::MEMATTR_MASK) >> desc::MEMATTR_SHIFT;
        let mem = if memattr & desc::MEMATTR_OUTER_MASK == desc::MEMATTR_OUTER_DEVICE {
            MemType::Device
        } else {
            MemType::Normal
        };
        let mut p = 0;
        if d & desc::S2AP_READ != 0 {
            p |= Perms::R.0;
        }
        if d & desc::S2AP_WRITE != 0 {
            p |= Perms::W.0;
        }
        if d & desc::XN_EL1_BIT == 0 {
            p |= Perms::X.0;
        }
        Attrs {
            mem,
            perms: Perms(p),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perms_ops() {
        assert_eq!(Perms::R | Perms::W, Perms::RW);
        assert_eq!(Perms::RWX & Perms::RX, Perms::RX);
        assert!(Perms::RWX.contains(Perms::W));
        assert!(!Perms::RX.contains(Perms::W));
        assert!(Perms::NONE.is_empty());
        assert_eq!(Perms::from_bits_truncate(0xFF), Perms::RWX);
        let mut p = Perms::NONE;
        p |= Perms::X;
        assert_eq!(p.bits(), 0b100);
    }

    // Hand-derived from the Arm ARM stage-2 descriptor layout:
    // MemAttr[5:2], S2AP[7:6], SH[9:8], AF[10], XN[54:53].
    #[test]
    fn normal_rwx_bits() {
        // MemAttr 0b1111 -> 0x3C, S2AP 0b11 -> 0xC0, SH 0b11 -> 0x300, AF -> 0x400.
        assert_eq!(Attrs::normal(Perms::RWX).leaf_bits(), 0x7FC);
    }

    #[test]
    fn normal_ro_noexec_bits() {
        // 0x3C | S2AP 0b01 (0x40) | 0x300 | 0x400 | XN 0b10 (bit 54).
        assert_eq!(Attrs::normal(Perms::R).leaf_bits(), 0x0040_0000_0000_077C);
    }

    #[test]
    fn device_rw_bits() {
        // MemAttr 0b0001 -> 0x4, S2AP 0b11 -> 0xC0, SH 0, AF 0x400, XN bit 54.
        assert_eq!(Attrs::device(Perms::RW).leaf_bits(), 0x0040_0000_0000_04C4);
    }

    #[test]
    fn none_bits() {
        assert_eq!(
            Attrs::normal(Perms::NONE).leaf_bits(),
            0x0040_0000_0000_073C
        );
    }

    #[test]
    fn roundtrip_all() {
        for mem in [MemType::Normal, MemType::Device] {
            for bits in 0..8 {
                let a = Attrs {
                    mem,
                    perms: Perms::from_bits_truncate(bits),
                };
                assert_eq!(Attrs::from_leaf(a.leaf_bits()), a);
                // The OA and type bits do not disturb decoding.
                assert_eq!(Attrs::from_leaf(a.leaf_bits() | 0x0000_8000_4020_0003), a);
            }
        }
    }
}
