//! The EL2 physical timer (CNTHP), which the hypervisor keeps for itself: it fires
//! when a vCPU's emulated EL1 physical timer reaches its deadline.

use crate::el1::write_sysreg;

/// CNTHP_CTL_EL2.ENABLE.
const CTL_ENABLE: u64 = 1 << 0;

/// Makes the EL2 timer fire at physical count `deadline`.
pub fn arm(deadline: u64) {
    write_sysreg!("CNTHP_CVAL_EL2", deadline);
    write_sysreg!("CNTHP_CTL_EL2", CTL_ENABLE);
}

/// Turns the EL2 timer off (its interrupt line drops).
pub fn disarm() {
    write_sysreg!("CNTHP_CTL_EL2", 0);
}
