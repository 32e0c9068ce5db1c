//! The EL2 physical timer (CNTHP), which the hypervisor keeps for itself: it fires
//! when a vCPU's emulated EL1 physical timer reaches its deadline.

use crate::el1::{read_sysreg, write_sysreg};

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

/// Sleeps this physical CPU for about `ticks` of the counter (or until any
/// interrupt is pending), borrowing the EL2 timer and putting back whatever deadline
/// it had (a guest timer deadline that passed meanwhile fires as soon as it is back).
pub fn nap(ticks: u64) {
    let (ctl, cval) = (
        read_sysreg!("CNTHP_CTL_EL2"),
        read_sysreg!("CNTHP_CVAL_EL2"),
    );
    arm(read_sysreg!("CNTPCT_EL0").wrapping_add(ticks));
    // SAFETY: the timer write must be visible before the CPU waits on it.
    unsafe { core::arch::asm!("isb") };
    aarch64_cpu::asm::wfi();
    write_sysreg!("CNTHP_CVAL_EL2", cval);
    write_sysreg!("CNTHP_CTL_EL2", ctl & CTL_ENABLE);
}
