//! The pure half of the hypervisor's own EL2 identity map (`el2/src/mmu.rs`): the
//! descriptors it writes, from the kind of memory a region is, so the W^X rule is
//! host-tested here: only the hypervisor's code is executable, and its code and
//! read-only data cannot be written.

use tock_registers::fields::FieldValue;

use crate::regs::STAGE1_DESCRIPTOR as D;

/// MAIR_EL2 attribute index of Device-nGnRE (`el2` programs MAIR_EL2 to match).
pub const MAIR_DEVICE: u64 = 0;
/// MAIR_EL2 attribute index of Normal write-back memory.
pub const MAIR_NORMAL: u64 = 1;

/// Bytes a descriptor maps at level 1, 2 and 3 with the 4 KiB granule.
pub const L1_BLOCK: u64 = 1 << 30;
pub const L2_BLOCK: u64 = 1 << 21;
pub const PAGE: u64 = 1 << 12;
/// Descriptors in a table.
pub const ENTRIES: usize = 512;
/// Bits of virtual address the map covers (TCR_EL2.T0SZ = 64 - VA_BITS).
pub const VA_BITS: u32 = 48;

/// What a range of the identity map holds.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Region {
    /// The hypervisor's code: executable, read-only.
    Text,
    /// The hypervisor's read-only data: neither executable nor writable.
    ReadOnly,
    /// Every other byte of RAM (data, BSS, heap, stacks, guest RAM): writable,
    /// never executable.
    ReadWrite,
    /// Device registers: Device-nGnRE, writable, never executable.
    Device,
}

impl Region {
    fn attrs(self) -> FieldValue<u64, D::Register> {
        let normal = D::AttrIndx.val(MAIR_NORMAL) + D::SH::InnerShareable;
        let common = D::AF::SET + D::AP_RES1::SET + D::VALID::SET;
        common
            + match self {
                Region::Text => normal + D::AP_RO::SET,
                Region::ReadOnly => normal + D::AP_RO::SET + D::XN::SET,
                Region::ReadWrite => normal + D::XN::SET,
                Region::Device => D::AttrIndx.val(MAIR_DEVICE) + D::XN::SET,
            }
    }

    /// A level-1 or level-2 block descriptor mapping `addr` (aligned to the
    /// block) as this region.
    pub fn block(self, addr: u64) -> u64 {
        (self.attrs() + D::TYPE::Block + D::OUTPUT_ADDR.val(addr >> 12)).value
    }

    /// A level-3 page descriptor mapping the 4 KiB page `addr` as this region.
    pub fn page(self, addr: u64) -> u64 {
        (self.attrs() + D::TYPE::Table + D::OUTPUT_ADDR.val(addr >> 12)).value
    }
}

/// A table descriptor pointing at the next-level table at `addr`.
pub fn table(addr: u64) -> u64 {
    (D::VALID::SET + D::TYPE::Table + D::OUTPUT_ADDR.val(addr >> 12)).value
}

/// Whether a descriptor is valid.
pub fn is_valid(desc: u64) -> bool {
    desc & D::VALID::SET.value != 0
}

/// Whether a valid level-0..=2 descriptor points at a table (not a block).
pub fn is_table(desc: u64) -> bool {
    is_valid(desc) && desc & D::TYPE::Table.value != 0
}

/// The output (or next-table) address of a descriptor.
pub fn address(desc: u64) -> u64 {
    desc & (D::OUTPUT_ADDR.mask << D::OUTPUT_ADDR.shift)
}

/// The descriptor for one of the 512 equal parts of the block `desc` maps, each
/// `part_size` bytes (`PAGE` parts become level-3 page descriptors), with the
/// block's attributes: how a block is split to change part of it.
pub fn split(desc: u64, part: usize, part_size: u64) -> u64 {
    let attrs = desc & !(D::OUTPUT_ADDR.mask << D::OUTPUT_ADDR.shift) & !D::TYPE::Table.value;
    let kind = if part_size == PAGE {
        D::TYPE::Table.value
    } else {
        D::TYPE::Block.value
    };
    let base = address(desc) & !(part_size * ENTRIES as u64 - 1);
    (base + part as u64 * part_size) | attrs | kind
}

/// The table index of `addr` at `level` (0..=3).
pub fn index(addr: u64, level: u32) -> usize {
    (addr >> (12 + 9 * (3 - level))) as usize & (ENTRIES - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tock_registers::LocalRegisterCopy;

    const ALL: [Region; 4] = [
        Region::Text,
        Region::ReadOnly,
        Region::ReadWrite,
        Region::Device,
    ];

    fn read(v: u64) -> LocalRegisterCopy<u64, D::Register> {
        LocalRegisterCopy::new(v)
    }

    #[test]
    fn nothing_is_writable_and_executable() {
        for r in ALL {
            for d in [r.block(0x4000_0000), r.page(0x4008_1000)] {
                let d = read(d);
                assert!(
                    d.is_set(D::AP_RO) || d.is_set(D::XN),
                    "{r:?} is writable and executable"
                );
            }
        }
    }

    #[test]
    fn only_text_executes_and_text_and_rodata_are_read_only() {
        for r in ALL {
            let d = read(r.page(0x4008_0000));
            assert_eq!(!d.is_set(D::XN), r == Region::Text, "{r:?}");
            assert_eq!(
                d.is_set(D::AP_RO),
                matches!(r, Region::Text | Region::ReadOnly),
                "{r:?}"
            );
        }
    }

    #[test]
    fn exact_descriptors() {
        // Normal RAM block at 1 GiB: valid, block, AttrIndx 1, AP[1], SH inner,
        // AF, XN.
        assert_eq!(
            Region::ReadWrite.block(0x4000_0000),
            0x4000_0000 | 1 | 1 << 2 | 1 << 6 | 0b11 << 8 | 1 << 10 | 1 << 54
        );
        // A text page: page type (bits [1:0] = 0b11), read-only (AP[2]), executable.
        assert_eq!(
            Region::Text.page(0x4008_0000),
            0x4008_0000 | 0b11 | 1 << 2 | 1 << 6 | 1 << 7 | 0b11 << 8 | 1 << 10
        );
        // Device block: AttrIndx 0, not shareable-encoded, XN.
        assert_eq!(
            Region::Device.block(0x0800_0000 & !(L2_BLOCK - 1)),
            0x0800_0000 | 1 | 1 << 6 | 1 << 10 | 1 << 54
        );
        assert_eq!(table(0x4010_0000), 0x4010_0000 | 0b11);
    }

    #[test]
    fn split_keeps_attributes_and_addresses() {
        for r in ALL {
            let block = r.block(0x4020_0000);
            for part in [0, 1, 128, 511] {
                let page = split(block, part, PAGE);
                assert_eq!(page, r.page(0x4020_0000 + part as u64 * PAGE), "{r:?}");
            }
            let gib = r.block(0x8000_0000);
            assert_eq!(split(gib, 3, L2_BLOCK), r.block(0x8000_0000 + 3 * L2_BLOCK));
        }
        assert!(is_table(table(0x1000)));
        assert!(!is_table(Region::ReadWrite.block(0)));
        assert!(!is_valid(0));
        assert_eq!(address(Region::Text.page(0x4008_1000)), 0x4008_1000);
    }

    #[test]
    fn indices() {
        let a = 0x0000_8040_2030_1000u64;
        assert_eq!(index(a, 0), (a >> 39) as usize & 511);
        assert_eq!(index(a, 1), (a >> 30) as usize & 511);
        assert_eq!(index(a, 2), (a >> 21) as usize & 511);
        assert_eq!(index(a, 3), (a >> 12) as usize & 511);
    }
}
