//! Ending the guest: PSCI SYSTEM_OFF, and what to do if it returns.

use crate::defs::smccc::PSCI_SYSTEM_OFF;
use crate::smccc::{call, Conduit};

/// Asks the hypervisor to power the VM off. If the call returns, prints
/// `FAIL system-off: returned …` and spins.
pub fn system_off() -> ! {
    let r = call(Conduit::Hvc, PSCI_SYSTEM_OFF, [0; 3]);
    crate::outln!("FAIL system-off: returned {:#x}", r[0]);
    loop {
        core::hint::spin_loop();
    }
}
