//! PMU counter 0 set up to count INST_RETIRED at EL0, EL1 and EL2.

use selftest_guest::defs::sysreg::*;
use selftest_guest::sysreg;

/// Programs and enables counter 0; fails when there is no PMUv3 or no event counter.
pub fn start_instruction_counter() -> Result<(), &'static str> {
    let pmuver = (sysreg::id_aa64dfr0_el1() >> DFR0_PMUVER_SHIFT) & ID_FIELD_MASK;
    if pmuver == 0 || pmuver == PMUVER_IMPDEF {
        return Err("no PMUv3 (ID_AA64DFR0_EL1.PMUVer)");
    }
    let pmcr = sysreg::pmcr_el0();
    if (pmcr >> PMCR_N_SHIFT) & PMCR_N_MASK == 0 {
        return Err("the PMU has no event counters (PMCR_EL0.N = 0)");
    }
    sysreg::set_pmcntenclr_el0(1);
    sysreg::set_pmevtyper0_el0(EVENT_INST_RETIRED | PMEVTYPER_NSH);
    sysreg::set_pmcr_el0(pmcr | PMCR_E | PMCR_P);
    sysreg::set_pmcntenset_el0(1);
    sysreg::isb();
    Ok(())
}
