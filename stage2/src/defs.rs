//! Architectural definitions, and the only place where raw bit positions live:
//! 4 KiB-granule geometry, the stage-2 block/page/table descriptor fields, the
//! VTCR_EL2 and VTTBR_EL2 fields we program, and the ID_AA64MMFR0_EL1 fields we
//! read. Names follow the Arm ARM (DDI 0487, chapter D8 "The AArch64 Virtual
//! Memory System Architecture" and the register descriptions in D23/D24).

/// Granule geometry for the 4 KiB translation granule.
pub mod granule {
    /// log2 of the granule (page) size.
    pub const PAGE_SHIFT: u32 = 12;
    /// The granule (page) size: 4 KiB.
    pub const PAGE_SIZE: u64 = 1 << PAGE_SHIFT;
    /// Descriptors in one translation table (one 4 KiB page of 8-byte entries).
    pub const TABLE_ENTRIES: usize = 512;
    /// log2 of [`TABLE_ENTRIES`]: input-address bits resolved per lookup level.
    pub const BITS_PER_LEVEL: u32 = 9;
    /// The final lookup level (page descriptors).
    pub const LAST_LEVEL: u8 = 3;
    /// The lowest level at which a block descriptor is permitted with the 4 KiB
    /// granule and 48-bit output addresses (level 1 = 1 GiB blocks).
    pub const MIN_BLOCK_LEVEL: u8 = 1;
    /// The latest initial lookup level usable without FEAT_TTST.
    pub const LATEST_START_LEVEL: u8 = 2;
    /// Maximum number of concatenated tables at the initial stage-2 lookup.
    pub const MAX_CONCAT: usize = 16;
    /// log2 of [`MAX_CONCAT`]: extra input bits concatenation can resolve.
    pub const MAX_CONCAT_BITS: u32 = 4;
    /// Smallest IPA size accepted: T0SZ may be at most 39 with the 4 KiB
    /// granule unless FEAT_TTST is implemented (we do not rely on it).
    pub const MIN_IPA_BITS: u32 = 25;
    /// Largest IPA / PA size without FEAT_LPA2 (52-bit) descriptors.
    pub const MAX_ADDR_BITS: u32 = 48;

    /// Input-address shift of the entries of a table at `level`
    /// (level 0: 39, level 1: 30, level 2: 21, level 3: 12).
    #[inline(always)]
    pub const fn level_shift(level: u8) -> u32 {
        PAGE_SHIFT + BITS_PER_LEVEL * (LAST_LEVEL - level) as u32
    }

    /// Bytes of input address covered by one descriptor at `level`
    /// (level 1: 1 GiB, level 2: 2 MiB, level 3: 4 KiB).
    #[inline(always)]
    pub const fn level_size(level: u8) -> u64 {
        1 << level_shift(level)
    }
}

/// Stage-2 translation table descriptor fields (VMSAv8-64 long descriptors,
/// 4 KiB granule, 48-bit output address, FEAT_S2FWB not used).
pub mod desc {
    /// Bit 0: the descriptor is valid.
    pub const VALID: u64 = 1 << 0;
    /// Bits `[1:0]`: descriptor type field.
    pub const TYPE_MASK: u64 = 0b11;
    /// Bits `[1:0]` = 0b01 at levels 1 and 2: block descriptor.
    pub const TYPE_BLOCK: u64 = 0b01;
    /// Bits `[1:0]` = 0b11 at levels 0 to 2: table descriptor.
    pub const TYPE_TABLE: u64 = 0b11;
    /// Bits `[1:0]` = 0b11 at level 3: page descriptor.
    pub const TYPE_PAGE: u64 = 0b11;

    /// Bits `[47:12]`: output address of a page / next-level table address.
    /// Blocks use the upper part of the same field (`[47:21]` or `[47:30]`).
    pub const OA_MASK: u64 = 0x0000_FFFF_FFFF_F000;

    /// `MemAttr[3:0]` lives in descriptor bits `[5:2]`.
    pub const MEMATTR_SHIFT: u32 = 2;
    /// Mask of MemAttr in the descriptor.
    pub const MEMATTR_MASK: u64 = 0b1111 << MEMATTR_SHIFT;
    /// `MemAttr[3:2]` = outer attribute; 0b00 means Device memory.
    pub const MEMATTR_OUTER_MASK: u64 = 0b1100;
    /// `MemAttr[3:2]` = 0b00: Device memory (`MemAttr[1:0]` selects the kind).
    pub const MEMATTR_OUTER_DEVICE: u64 = 0b0000;
    /// MemAttr = 0b1111: Normal, Outer Write-Back Cacheable, Inner Write-Back Cacheable.
    pub const MEMATTR_NORMAL_WB: u64 = 0b1111;
    /// MemAttr = 0b0001: Device-nGnRE.
    pub const MEMATTR_DEVICE_NGNRE: u64 = 0b0001;

    /// `S2AP[0]` (bit 6): stage-2 read access permitted.
    pub const S2AP_READ: u64 = 1 << 6;
    /// `S2AP[1]` (bit 7): stage-2 write access permitted.
    pub const S2AP_WRITE: u64 = 1 << 7;
    /// Both S2AP bits.
    pub const S2AP_MASK: u64 = S2AP_READ | S2AP_WRITE;

    /// `SH[1:0]` lives in bits `[9:8]`.
    pub const SH_SHIFT: u32 = 8;
    /// Mask of SH.
    pub const SH_MASK: u64 = 0b11 << SH_SHIFT;
    /// SH = 0b11: Inner Shareable.
    pub const SH_INNER: u64 = 0b11 << SH_SHIFT;

    /// Bit 10: Access Flag. Always set: we do not use access-flag faults.
    pub const AF: u64 = 1 << 10;

    /// Stage-2 `XN[1:0]` lives in bits `[54:53]`.
    pub const XN_SHIFT: u32 = 53;
    /// Mask of stage-2 XN.
    pub const XN_MASK: u64 = 0b11 << XN_SHIFT;
    /// XN = 0b10: not executable at EL1 or EL0 (valid with and without FEAT_XNX).
    pub const XN_NONE_EXEC: u64 = 0b10 << XN_SHIFT;
    /// `XN[1]` (bit 54): set means execution is never permitted at EL1 (or at all
    /// without FEAT_XNX).
    pub const XN_EL1_BIT: u64 = 0b10 << XN_SHIFT;

    /// Every attribute bit a leaf descriptor written by this crate may carry.
    pub const LEAF_ATTR_MASK: u64 = MEMATTR_MASK | S2AP_MASK | SH_MASK | AF | XN_MASK;
}

/// VTCR_EL2 fields (Virtualization Translation Control Register).
pub mod vtcr {
    /// T0SZ, bits `[5:0]`: IPA size is 2^(64 - T0SZ).
    pub const T0SZ_SHIFT: u32 = 0;
    /// T0SZ is counted down from this many address bits.
    pub const T0SZ_BASE: u32 = 64;
    /// SL0, bits `[7:6]`: starting level of the stage-2 walk.
    pub const SL0_SHIFT: u32 = 6;
    /// SL0 for the 4 KiB granule: start at level 2.
    pub const SL0_4K_LEVEL2: u64 = 0b00;
    /// SL0 for the 4 KiB granule: start at level 1.
    pub const SL0_4K_LEVEL1: u64 = 0b01;
    /// SL0 for the 4 KiB granule: start at level 0.
    pub const SL0_4K_LEVEL0: u64 = 0b10;
    /// IRGN0, bits `[9:8]`: inner cacheability of table walks.
    pub const IRGN0_SHIFT: u32 = 8;
    /// ORGN0, bits `[11:10]`: outer cacheability of table walks.
    pub const ORGN0_SHIFT: u32 = 10;
    /// IRGN0/ORGN0 = 0b01: Normal, Write-Back Read-Allocate Write-Allocate Cacheable.
    pub const RGN_WBWA: u64 = 0b01;
    /// SH0, bits `[13:12]`: shareability of table walks.
    pub const SH0_SHIFT: u32 = 12;
    /// SH0 = 0b11: Inner Shareable.
    pub const SH0_INNER: u64 = 0b11;
    /// TG0, bits `[15:14]`: granule size.
    pub const TG0_SHIFT: u32 = 14;
    /// TG0 = 0b00: 4 KiB granule.
    pub const TG0_4K: u64 = 0b00;
    /// PS, bits `[18:16]`: physical (output) address size, PARange encoding.
    pub const PS_SHIFT: u32 = 16;
    /// VS, bit 19: 16-bit VMID.
    pub const VS: u64 = 1 << 19;
    /// Bit 31 is RES1.
    pub const RES1: u64 = 1 << 31;
}

/// VTTBR_EL2 fields (Virtualization Translation Table Base Register).
pub mod vttbr {
    /// BADDR, bits `[47:1]` (bit 0 is CnP, left clear); the root is 4 KiB aligned
    /// (and aligned to the size of the concatenated root) so bits `[11:1]` are 0.
    pub const BADDR_MASK: u64 = 0x0000_FFFF_FFFF_FFFE;
    /// VMID, bits `[63:48]` (bits `[55:48]` when VTCR_EL2.VS is 0).
    pub const VMID_SHIFT: u32 = 48;
    /// Largest VMID with 8-bit VMIDs.
    pub const VMID8_MAX: u16 = 0xFF;
}

/// ID_AA64MMFR0_EL1 fields used to derive a [`crate::Layout`].
pub mod mmfr0 {
    /// PARange, bits `[3:0]`.
    pub const PARANGE_SHIFT: u32 = 0;
    /// Width mask of a 4-bit ID field.
    pub const FIELD_MASK: u64 = 0xF;
    /// VMIDBits, bits `[7:4]`.
    pub const VMIDBITS_SHIFT: u32 = 4;
    /// VMIDBits = 0b0010: 16-bit VMIDs supported.
    pub const VMIDBITS_16: u64 = 0b0010;

    /// PARange / VTCR_EL2.PS encodings and the address size each names.
    /// 0b0111 (56 bits) is FEAT_D128; all larger values are reserved.
    pub const PARANGE_BITS: [(u8, u32); 8] = [
        (0b0000, 32),
        (0b0001, 36),
        (0b0010, 40),
        (0b0011, 42),
        (0b0100, 44),
        (0b0101, 48),
        (0b0110, 52),
        (0b0111, 56),
    ];

    /// Address bits named by a PARange value, `None` for a reserved value.
    pub fn parange_bits(parange: u8) -> Option<u32> {
        PARANGE_BITS
            .iter()
            .find(|(enc, _)| *enc == parange)
            .map(|(_, bits)| *bits)
    }

    /// PARange / PS encoding naming exactly `bits`, if any.
    pub fn parange_encoding(bits: u32) -> Option<u8> {
        PARANGE_BITS
            .iter()
            .find(|(_, b)| *b == bits)
            .map(|(enc, _)| *enc)
    }
}
