//! The EL2 physical timer (CNTHP), which the hypervisor keeps for itself: it fires
//! when a vCPU's emulated EL1 physical timer reaches its deadline.

use aarch64_cpu::registers::{CNTHP_CTL_EL2, CNTPCT_EL0};
use tock_registers::interfaces::{Readable, Writeable};

use crate::el1::typed_sysreg;

typed_sysreg!(
    /// CNTHP_CVAL_EL2, the EL2 physical timer's compare value (a whole 64-bit
    /// count, no fields; `aarch64-cpu` does not define it).
    CnthpCvalEl2, "CNTHP_CVAL_EL2", (), rw
);

/// Makes the EL2 timer fire at physical count `deadline`.
pub fn arm(deadline: u64) {
    CnthpCvalEl2.set(deadline);
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE::SET);
}

/// Turns the EL2 timer off (its interrupt line drops).
pub fn disarm() {
    CNTHP_CTL_EL2.set(0);
}

/// Sleeps this physical CPU for about `ticks` of the counter (or until any
/// interrupt is pending), borrowing the EL2 timer and putting back whatever deadline
/// it had (a guest timer deadline that passed meanwhile fires as soon as it is back).
pub fn nap(ticks: u64) {
    let (enabled, cval) = (
        CNTHP_CTL_EL2.read(CNTHP_CTL_EL2::ENABLE),
        CnthpCvalEl2.get(),
    );
    arm(CNTPCT_EL0.get().wrapping_add(ticks));
    // The timer write must be visible before the CPU waits on it.
    aarch64_cpu::asm::barrier::isb(aarch64_cpu::asm::barrier::SY);
    aarch64_cpu::asm::wfi();
    CnthpCvalEl2.set(cval);
    CNTHP_CTL_EL2.write(CNTHP_CTL_EL2::ENABLE.val(enabled));
}
