//! Physical CPUs beyond the boot CPU: each vCPU of a VM has its own physical CPU,
//! started through the platform's PSCI CPU_ON when the guest starts that vCPU and
//! powered down with CPU_OFF when the guest stops it.

use arch::smccc::{func, ret};

use crate::power::firmware_call;

/// Physical CPUs the hypervisor has stacks for (see linker.ld MAX_CPUS).
pub const MAX_CPUS: usize = 8;
/// PSCI AFFINITY_INFO answer for a powered-off CPU.
const AFFINITY_OFF: u64 = 1;

extern "C" {
    fn secondary_entry();
}

/// Starts physical CPU `mpidr` at the hypervisor's secondary entry, to run slot `idx`.
pub fn start_pcpu(mpidr: u64, idx: usize) -> Result<(), i64> {
    if idx >= MAX_CPUS {
        return Err(ret::INVALID_PARAMETERS);
    }
    let entry = secondary_entry as *const () as usize as u64;
    match firmware_call(u64::from(func::PSCI_CPU_ON_64), mpidr, entry, idx as u64) {
        Some(0) => Ok(()),
        Some(r) => Err(r as i64),
        None => Err(ret::NOT_SUPPORTED),
    }
}

/// Powers the calling physical CPU down. Never returns.
pub fn stop_this_pcpu() -> ! {
    firmware_call(u64::from(func::PSCI_CPU_OFF), 0, 0, 0);
    log::error!("PSCI CPU_OFF returned; parking this CPU");
    loop {
        aarch64_cpu::asm::wfe();
    }
}

/// Waits until physical CPU `mpidr` is off, as the platform firmware reports it.
pub fn wait_pcpu_off(mpidr: u64) {
    while firmware_call(u64::from(func::PSCI_AFFINITY_INFO_64), mpidr, 0, 0) != Some(AFFINITY_OFF) {
        core::hint::spin_loop();
    }
}
