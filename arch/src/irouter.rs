//! Routing a shared peripheral interrupt (SPI) to one physical CPU: the value of
//! GICD_IROUTER<n> (Arm GICv3/v4 architecture specification, "GICD_IROUTER<n>") that
//! sends the SPI to the PE with a given MPIDR_EL1.
//!
//! MPIDR_EL1 and GICD_IROUTER<n> share the positions of Aff0..Aff2 (bits 0..24) and
//! Aff3 (bits 32..40), but bit 31 differs: RES1 in MPIDR_EL1, the Interrupt Routing
//! Mode in GICD_IROUTER<n> (1 = to any participating PE). Copying an MPIDR_EL1 value
//! whole would therefore ask for "any PE", not the one named.

use tock_registers::{register_bitfields, LocalRegisterCopy};

register_bitfields! {u64,
    /// GICD_IROUTER<n>.
    pub GICD_IROUTER [
        /// Aff3 of the target PE.
        AFF3 OFFSET(32) NUMBITS(8) [],
        /// Interrupt Routing Mode: 0 = to the PE named by the affinity fields,
        /// 1 = to any participating PE.
        IRM OFFSET(31) NUMBITS(1) [
            Named = 0,
            Any = 1
        ],
        /// Aff2 of the target PE.
        AFF2 OFFSET(16) NUMBITS(8) [],
        /// Aff1 of the target PE.
        AFF1 OFFSET(8) NUMBITS(8) [],
        /// Aff0 of the target PE.
        AFF0 OFFSET(0) NUMBITS(8) []
    ]
}

register_bitfields! {u64,
    /// The affinity fields of MPIDR_EL1.
    MPIDR [
        AFF3 OFFSET(32) NUMBITS(8) [],
        AFF2 OFFSET(16) NUMBITS(8) [],
        AFF1 OFFSET(8) NUMBITS(8) [],
        AFF0 OFFSET(0) NUMBITS(8) []
    ]
}

/// The GICD_IROUTER<n> value routing an SPI to the one PE whose MPIDR_EL1 is `mpidr`
/// (only its affinity fields are used).
pub fn irouter_to(mpidr: u64) -> u64 {
    let m = LocalRegisterCopy::<u64, MPIDR::Register>::new(mpidr);
    let mut r = LocalRegisterCopy::<u64, GICD_IROUTER::Register>::new(0);
    r.modify(
        GICD_IROUTER::AFF3.val(m.read(MPIDR::AFF3))
            + GICD_IROUTER::AFF2.val(m.read(MPIDR::AFF2))
            + GICD_IROUTER::AFF1.val(m.read(MPIDR::AFF1))
            + GICD_IROUTER::AFF0.val(m.read(MPIDR::AFF0))
            + GICD_IROUTER::IRM::Named,
    );
    r.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_pe_of_a_real_mpidr_not_any_pe() {
        // MPIDR_EL1 of a uniprocessor-cluster CPU: RES1 bit 31, U (bit 30) and MT
        // (bit 24) set, affinity 0x12.0x34.0x56.0x78.
        let mpidr = 0x12_8000_0000 | 1 << 30 | 1 << 24 | 0x34_5678;
        let r = LocalRegisterCopy::<u64, GICD_IROUTER::Register>::new(irouter_to(mpidr));
        assert!(r.matches_all(GICD_IROUTER::IRM::Named));
        assert_eq!(irouter_to(mpidr), 0x12_0034_5678);
    }

    #[test]
    fn boot_and_secondary_cpus_of_qemu_virt() {
        // QEMU virt: MPIDR_EL1 = RES1 | CPU index in Aff0 (up to 8 per cluster).
        assert_eq!(irouter_to(0x8000_0000), 0);
        assert_eq!(irouter_to(0x8000_0001), 1);
        assert_eq!(irouter_to(0x8000_0100), 0x100);
    }
}
