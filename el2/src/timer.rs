//! The generic timer at EL2: waiting, on a guest's WFI, until its own timer would
//! fire, using the EL2 physical timer (CNTHP) so the physical CPU sleeps meanwhile.

use crate::el1::{read_sysreg, write_sysreg};

/// CNT*_CTL bits.
const CTL_ENABLE: u64 = 1 << 0;
const CTL_IMASK: u64 = 1 << 1;
const CTL_ISTATUS: u64 = 1 << 2;

/// The physical-count deadline of an EL1 timer with control `ctl` and compare value
/// `cval` (in its own count domain, `offset` below physical), if it can fire.
fn deadline(ctl: u64, cval: u64, offset: u64) -> Option<u64> {
    (ctl & CTL_ENABLE != 0 && ctl & CTL_IMASK == 0).then(|| cval.wrapping_add(offset))
}

/// Blocks until the earliest of the guest's enabled, unmasked EL1 timers (virtual and
/// physical) reaches its deadline. Returns at once if none is armed: WFI may
/// complete at any time, and no other wake-up source is virtualized yet.
pub fn wait_for_guest_timer() {
    let v = deadline(
        read_sysreg!("CNTV_CTL_EL0"),
        read_sysreg!("CNTV_CVAL_EL0"),
        read_sysreg!("CNTVOFF_EL2"),
    );
    let p = deadline(
        read_sysreg!("CNTP_CTL_EL0"),
        read_sysreg!("CNTP_CVAL_EL0"),
        0,
    );
    let Some(when) = [v, p].into_iter().flatten().min() else {
        return;
    };
    write_sysreg!("CNTHP_CVAL_EL2", when);
    write_sysreg!("CNTHP_CTL_EL2", CTL_ENABLE);
    // SAFETY: synchronises the timer programming before the counter is compared.
    unsafe { core::arch::asm!("isb") };
    while read_sysreg!("CNTPCT_EL0") < when {
        if read_sysreg!("CNTHP_CTL_EL2") & CTL_ISTATUS == 0 {
            // Interrupts are masked at EL2; WFI still wakes when the timer's PPI is
            // pending at the GIC.
            aarch64_cpu::asm::wfi();
        }
    }
    disarm();
}

/// Turns the EL2 physical timer off (its interrupt line drops).
pub fn disarm() {
    write_sysreg!("CNTHP_CTL_EL2", 0);
}
