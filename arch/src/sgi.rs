//! Addressing one physical CPU with a GICv3 software-generated interrupt: the value
//! of ICC_SGI1R_EL1 (Arm GICv3/v4 architecture specification, "ICC_SGI1R_EL1") that
//! sends SGI `intid` to the PE with a given MPIDR_EL1 affinity.
//!
//! The register's TargetList has 16 bits, one per Aff0 value in a block of 16; the
//! range selector RS picks the block (RS = Aff0 / 16, bit Aff0 % 16). Without RS, a
//! CPU with Aff0 >= 16 (many-core parts such as Ampere Altra, 80 cores per socket)
//! could not be addressed. Targeting Aff0 >= 16 needs range-selector support
//! (ICC_CTLR_EL1.RSS = 1), which a GIC with such CPUs implements.

use aarch64_cpu::registers::MPIDR_EL1;
use tock_registers::{register_bitfields, LocalRegisterCopy};

register_bitfields! {u64,
    /// ICC_SGI1R_EL1 (also the layout of ICC_SGI0R_EL1 and ICC_ASGI1R_EL1).
    pub ICC_SGI1R [
        /// Aff3 of the target PEs.
        AFF3 OFFSET(48) NUMBITS(8) [],
        /// Range selector: TargetList bit n names Aff0 = RS * 16 + n.
        RS OFFSET(44) NUMBITS(4) [],
        /// Interrupt routing mode: 1 = every PE but this one (TargetList ignored).
        IRM OFFSET(40) NUMBITS(1) [],
        /// Aff2 of the target PEs.
        AFF2 OFFSET(32) NUMBITS(8) [],
        /// The SGI (0..=15).
        INTID OFFSET(24) NUMBITS(4) [],
        /// Aff1 of the target PEs.
        AFF1 OFFSET(16) NUMBITS(8) [],
        /// One bit per Aff0 value in the block RS selects.
        TARGET_LIST OFFSET(0) NUMBITS(16) []
    ]
}

/// Aff0 values one TargetList covers (the block size the range selector counts in).
pub const TARGETS_PER_RANGE: u64 = 16;

/// The ICC_SGI1R_EL1 value sending SGI `intid` (0..=15; higher bits are dropped by
/// the field) to
/// the one PE whose MPIDR_EL1 is `mpidr` (only its affinity fields are used).
pub fn sgi1r_to(intid: u8, mpidr: u64) -> u64 {
    let m = LocalRegisterCopy::<u64, MPIDR_EL1::Register>::new(mpidr);
    let aff0 = m.read(MPIDR_EL1::Aff0);
    let v = ICC_SGI1R::AFF3.val(m.read(MPIDR_EL1::Aff3))
        + ICC_SGI1R::AFF2.val(m.read(MPIDR_EL1::Aff2))
        + ICC_SGI1R::AFF1.val(m.read(MPIDR_EL1::Aff1))
        + ICC_SGI1R::RS.val(aff0 / TARGETS_PER_RANGE)
        + ICC_SGI1R::TARGET_LIST.val(1 << (aff0 % TARGETS_PER_RANGE))
        + ICC_SGI1R::INTID.val(u64::from(intid));
    v.value
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes a value back into (intid, aff3, aff2, aff1, rs, target list, irm).
    fn fields(v: u64) -> (u64, u64, u64, u64, u64, u64, bool) {
        let r = LocalRegisterCopy::<u64, ICC_SGI1R::Register>::new(v);
        (
            r.read(ICC_SGI1R::INTID),
            r.read(ICC_SGI1R::AFF3),
            r.read(ICC_SGI1R::AFF2),
            r.read(ICC_SGI1R::AFF1),
            r.read(ICC_SGI1R::RS),
            r.read(ICC_SGI1R::TARGET_LIST),
            r.is_set(ICC_SGI1R::IRM),
        )
    }

    #[test]
    fn aff0_picks_range_and_bit() {
        // (Aff0, RS, TargetList)
        for (aff0, rs, list) in [
            (0, 0, 1 << 0),
            (15, 0, 1 << 15),
            (16, 1, 1 << 0),
            (79, 4, 1 << 15),
            (80, 5, 1 << 0),
            (255, 15, 1 << 15),
        ] {
            assert_eq!(
                fields(sgi1r_to(3, aff0)),
                (3, 0, 0, 0, rs, list, false),
                "Aff0 {aff0}"
            );
        }
    }

    #[test]
    fn exact_values() {
        // SGI 0 to MPIDR 0: only TargetList bit 0.
        assert_eq!(sgi1r_to(0, 0), 1);
        // SGI 7 to Aff0 = 79 (RS 4, bit 15).
        assert_eq!(sgi1r_to(7, 79), 4 << 44 | 7 << 24 | 1 << 15);
        // SGI 1 to Aff3.Aff2.Aff1.Aff0 = 0x12.0x34.0x56.0x10 (RS 1, bit 0).
        let mpidr = 0x12 << 32 | 0x34 << 16 | 0x56 << 8 | 0x10;
        assert_eq!(
            sgi1r_to(1, mpidr),
            0x12 << 48 | 1 << 44 | 0x34 << 32 | 1 << 24 | 0x56 << 16 | 1
        );
    }

    #[test]
    fn higher_affinities_and_non_affinity_bits() {
        // MPIDR_EL1 bit 31 (RES1), U (30) and MT (24) must not leak into the value.
        let mpidr = 1 << 31 | 1 << 30 | 1 << 24 | 0xab << 32 | 0xcd << 16 | 0xef << 8 | 16;
        assert_eq!(
            fields(sgi1r_to(0, mpidr)),
            (0, 0xab, 0xcd, 0xef, 1, 1, false)
        );
        for aff in [1u64, 0x80, 0xff] {
            assert_eq!(fields(sgi1r_to(2, aff << 8)).3, aff, "Aff1 {aff:#x}");
            assert_eq!(fields(sgi1r_to(2, aff << 16)).2, aff, "Aff2 {aff:#x}");
            assert_eq!(fields(sgi1r_to(2, aff << 32)).1, aff, "Aff3 {aff:#x}");
        }
    }

    #[test]
    fn intid_is_four_bits() {
        assert_eq!(fields(sgi1r_to(15, 0)).0, 15);
        assert_eq!(fields(sgi1r_to(16, 0)).0, 0, "only 0..=15 exist");
    }
}
