//! The EL2 control registers a guest runs under (HCR_EL2, MDCR_EL2, CPTR_EL2,
//! CNTHCTL_EL2) and the EL1 reset state, computed from what the CPU implements and
//! what the host allows this VM, as pure functions so every bit is host-tested.
//! `el2` reads the ID registers and writes the results.

use aarch64_cpu::registers::{CNTHCTL_EL2, HCR_EL2, ID_AA64DFR0_EL1, MDCR_EL2};
use tock_registers::LocalRegisterCopy;

use crate::regs::{CPTR_EL2, PMCR_EL0, SCTLR_EL1};

/// ID_AA64DFR0_EL1.PMUVer values (Arm ARM D24.2.59) the policy distinguishes.
pub mod pmuver {
    /// No PMU.
    pub const NONE: u64 = 0b0000;
    /// FEAT_PMUv3p1: MDCR_EL2.HPMD exists.
    pub const V3P1: u64 = 0b0100;
    /// FEAT_PMUv3p5: MDCR_EL2.HCCD exists.
    pub const V3P5: u64 = 0b0110;
    /// An IMPLEMENTATION DEFINED PMU, not PMUv3.
    pub const IMPDEF: u64 = 0b1111;
}

/// HCR_EL2 for a stage-2 guest: VM (stage 2 on), SWIO, FMO/IMO/AMO (interrupts and
/// SErrors to EL2), FB and BSU inner-shareable (broadcast maintenance), TWI (trap WFI
/// so an idle guest gives its CPU back), TSC (trap SMC: PSCI via SMC is emulated),
/// TID3 (sanitise feature IDs), TIDCP (IMPLEMENTATION DEFINED registers undefined),
/// TERR (RAS error-record registers trap: the guest is told it has no FEAT_RAS, so
/// they are undefined to it and never reach the physical error records), TEA
/// (synchronous external aborts come to EL2, which injects them back into the guest
/// after logging, instead of the guest learning of the hardware fault unseen),
/// RW (EL1 is AArch64), APK/API (pointer-auth instructions do not trap; the feature
/// is hidden from the ID registers). `trap_wfe` adds TWE: with more vCPUs than
/// physical CPUs a guest waiting in WFE for a lock whose holder is not running
/// gives its CPU to that holder (el2 yields on the trap); otherwise WFE stays a
/// local wait.
pub fn hcr_el2(trap_wfe: bool) -> u64 {
    use HCR_EL2 as H;
    let twe = if trap_wfe { H::TWE::SET } else { H::TWE::CLEAR };
    (twe + H::VM::Enable
        + H::SWIO::SET
        + H::FMO::EnableVirtualFIQ
        + H::IMO::EnableVirtualIRQ
        + H::AMO::SET
        + H::FB::SET
        + H::BSU::InnerShareable
        + H::TWI::SET
        + H::TSC::EnableTrapEl1SmcToEl2
        + H::TID3::SET
        + H::TIDCP::SET
        + H::TERR::SET
        + H::TEA::EnableTrapSyncExtAbortsToEl2
        + H::RW::EL1IsAarch64
        + H::APK::SET
        + H::API::SET)
        .value
}

/// CPTR_EL2 (HCR_EL2.E2H = 0) for a guest: FP/SIMD not trapped (TFP clear: the
/// guest's FP state stays live in the hardware); SVE (TZ), SME (TSM) and the
/// activity monitors (TAM) trapped, since those features are hidden from the
/// guest; the RES1 bits set.
pub fn cptr_el2() -> u64 {
    use CPTR_EL2 as C;
    (C::TAM::SET
        + C::TSM::SET
        + C::TZ::SET
        + C::RES1_13::SET
        + C::RES1_9::SET
        + C::RES1_7_0.val(C::RES1_7_0.mask))
    .value
}

/// CNTHCTL_EL2 (HCR_EL2.E2H = 0) for a guest: EL1 may read the physical counter
/// (EL1PCTEN); the EL1 physical timer's registers trap (EL1PCEN clear) and are
/// emulated (`crate::timer::EmulatedTimer`).
pub fn cnthctl_el2() -> u64 {
    CNTHCTL_EL2::EL1PCTEN::SET.value
}

/// PMCR_EL0.N, the number of event counters, from a PMCR_EL0 value.
pub fn pmcr_n(pmcr: u64) -> u64 {
    LocalRegisterCopy::<u64, PMCR_EL0::Register>::new(pmcr).read(PMCR_EL0::N)
}

/// SCTLR_EL1 at a vCPU's reset: MMU and caches off, the bits that are RES1 without
/// their features (or reset to 1 with them) set.
pub fn sctlr_el1_reset() -> u64 {
    use SCTLR_EL1 as S;
    (S::LSMAOE::SET + S::nTLSMD::SET + S::SPAN::SET + S::EIS::SET + S::TSCXT::SET + S::EOS::SET)
        .value
}

/// What the host lets a VM do with the PMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PmuPolicy {
    /// The guest's counters may count while EL2 runs. Only the exits benchmark gets
    /// this (a host-side choice in its boot bundle): otherwise a guest could time
    /// the hypervisor's (and the vTPM's RSA/ECC) work event by event.
    pub el2_counting: bool,
}

/// The PMU version the hardware reports.
fn pmu_version(dfr0: u64) -> u64 {
    LocalRegisterCopy::<u64, ID_AA64DFR0_EL1::Register>::new(dfr0).read(ID_AA64DFR0_EL1::PMUVer)
}

/// Whether MDCR_EL2.HPMD exists (FEAT_PMUv3p1), i.e. EL2 can stop guest event
/// counters counting at EL2.
fn has_hpmd(dfr0: u64) -> bool {
    let v = pmu_version(dfr0);
    v != pmuver::IMPDEF && v >= pmuver::V3P1
}

/// Whether MDCR_EL2.HCCD exists (FEAT_PMUv3p5): from PMUv3p5 on, HPMD no longer
/// stops the cycle counter at EL2 and HCCD must.
fn has_hccd(dfr0: u64) -> bool {
    let v = pmu_version(dfr0);
    v != pmuver::IMPDEF && v >= pmuver::V3P5
}

/// Whether the guest is given the PMU at all: it always is when it may count at
/// EL2; otherwise only if EL2 counting can be prohibited (HPMD). A PMUv3 without
/// FEAT_PMUv3p1 lets PMEVTYPER<n>_EL0.NSH (guest-controlled) count EL2, so such a
/// PMU is hidden from the guest (ID_AA64DFR0_EL1.PMUVer reads 0) and trapped.
pub fn guest_has_pmu(dfr0: u64, policy: PmuPolicy) -> bool {
    pmu_version(dfr0) != pmuver::NONE && (policy.el2_counting || has_hpmd(dfr0))
}

/// MDCR_EL2 for a guest, given PMCR_EL0.N (`pmcr_n` event counters), the hardware's
/// ID_AA64DFR0_EL1 and the VM's PMU policy:
/// - HPMN = N: every event counter belongs to the guest;
/// - TPMS, TTRF: SPE and trace-filter registers trap (those features are hidden);
/// - HPMD (FEAT_PMUv3p1) and HCCD (FEAT_PMUv3p5), unless the policy allows EL2
///   counting: the guest's counters stop while EL2 runs. Each is set only where the
///   CPU implements it (it is RES0 otherwise);
/// - TPM, TPMCR when the guest gets no PMU ([`guest_has_pmu`]): every PMU register
///   access traps and is undefined to the guest.
pub fn mdcr_el2(pmcr_n: u64, dfr0: u64, policy: PmuPolicy) -> u64 {
    use MDCR_EL2 as M;
    let hpmn = pmcr_n & M::HPMN.mask;
    let mut v = M::HPMN.val(hpmn) + M::TPMS::SET + M::TTRF::SET;
    if !policy.el2_counting {
        if has_hpmd(dfr0) {
            v += M::HPMD::SET;
        }
        if has_hccd(dfr0) {
            v += M::HCCD::SET;
        }
    }
    if !guest_has_pmu(dfr0, policy) {
        v += M::TPM::SET + M::TPMCR::SET;
    }
    v.value
}

#[cfg(test)]
mod tests {
    use super::*;

    const HPMD: u64 = 1 << 17;
    const HCCD: u64 = 1 << 23;
    const TPM: u64 = 1 << 6;
    const TPMCR: u64 = 1 << 5;
    const TPMS: u64 = 1 << 14;
    const TTRF: u64 = 1 << 19;
    const GUEST: PmuPolicy = PmuPolicy {
        el2_counting: false,
    };
    const BENCH: PmuPolicy = PmuPolicy { el2_counting: true };

    fn dfr0(pmuver: u64) -> u64 {
        // DebugVer 6 (Armv8), everything else zero.
        pmuver << 8 | 6
    }

    #[test]
    fn guests_never_count_at_el2() {
        // PMUv3p4 (QEMU's max CPU): HPMD, no HCCD (RES0 before PMUv3p5).
        assert_eq!(mdcr_el2(6, dfr0(5), GUEST), 6 | TPMS | TTRF | HPMD);
        // PMUv3p5 and later: HPMD and HCCD.
        for v in [6, 7, 8] {
            assert_eq!(mdcr_el2(6, dfr0(v), GUEST), 6 | TPMS | TTRF | HPMD | HCCD);
        }
        // PMUv3p1: HPMD only.
        assert_eq!(mdcr_el2(31, dfr0(4), GUEST), 31 | TPMS | TTRF | HPMD);
    }

    #[test]
    fn the_exits_benchmark_keeps_el2_counting() {
        for v in [1, 4, 5, 6, 8] {
            assert_eq!(mdcr_el2(6, dfr0(v), BENCH), 6 | TPMS | TTRF, "PMUVer {v}");
            assert!(guest_has_pmu(dfr0(v), BENCH));
        }
    }

    #[test]
    fn a_pmu_that_cannot_stop_at_el2_is_taken_away() {
        // PMUv3 (no HPMD) and an IMPLEMENTATION DEFINED PMU: trapped, no RES0 bits set.
        for v in [1, pmuver::IMPDEF] {
            assert!(!guest_has_pmu(dfr0(v), GUEST));
            assert_eq!(mdcr_el2(6, dfr0(v), GUEST), 6 | TPMS | TTRF | TPM | TPMCR);
        }
        assert!(!guest_has_pmu(dfr0(0), BENCH));
    }

    #[test]
    fn hpmn_takes_only_its_field() {
        assert_eq!(mdcr_el2(0xff, dfr0(4), GUEST) & 0x1f, 0x1f);
    }

    #[test]
    fn cptr_traps_sve_sme_amu_but_not_fp() {
        // The value el2 wrote before these registers were typed: TAM (30), RES1 13,
        // TSM (12), RES1 9, TZ (8), RES1 7:0.
        let v = cptr_el2();
        assert_eq!(
            v,
            (1 << 30) | (1 << 13) | (1 << 12) | (1 << 9) | (1 << 8) | 0xff
        );
        assert_eq!(v & (1 << 10), 0, "TFP: FP/SIMD must not trap");
        assert_eq!(v & (1 << 31), 0, "TCPAC");
    }

    #[test]
    fn cnthctl_lets_el1_read_the_counter_and_traps_its_timer() {
        assert_eq!(cnthctl_el2(), 1, "EL1PCTEN set, EL1PCEN (bit 1) clear");
    }

    #[test]
    fn pmcr_n_is_bits_15_to_11() {
        assert_eq!(pmcr_n(6 << 11 | 0x7ff), 6);
        assert_eq!(pmcr_n(u64::MAX), 31);
        assert_eq!(pmcr_n(0x41 << 24), 0);
    }

    #[test]
    fn sctlr_el1_reset_value() {
        assert_eq!(sctlr_el1_reset(), 0x30d0_0800);
        assert_eq!(sctlr_el1_reset() & 0b111, 0, "M, A, C clear");
    }

    #[test]
    fn hcr_traps_wfe_only_when_asked() {
        assert_ne!(hcr_el2(true) & (1 << 14), 0, "TWE");
        assert_eq!(hcr_el2(false) & (1 << 14), 0, "TWE");
        assert_ne!(hcr_el2(false) & (1 << 13), 0, "TWI");
    }

    #[test]
    fn hcr_traps_ras_records_and_routes_external_aborts() {
        let h = hcr_el2(false);
        assert_ne!(h & (1 << 36), 0, "TERR");
        assert_ne!(h & (1 << 37), 0, "TEA");
        assert_ne!(h & (1 << 31), 0, "RW");
        assert_ne!(h & 1, 0, "VM");
        assert_eq!(h & (1 << 46), 0, "FWB is not used");
    }
}
