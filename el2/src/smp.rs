//! Physical CPUs beyond the boot CPU: each vCPU of a VM has its own physical CPU,
//! started through the platform's PSCI CPU_ON when the guest starts that vCPU and
//! powered down with CPU_OFF when the guest stops it.

use arch::smccc::{func, ret};

use crate::power::firmware_call;

use crate::stacks::MAX_CPUS;

/// PSCI AFFINITY_INFO answer for a powered-off CPU.
const AFFINITY_OFF: u64 = arch::smccc::CpuPower::Off as u64;

extern "C" {
    fn secondary_entry();
}

/// What a physical CPU is started to do; passed as its PSCI CPU_ON context id,
/// whose low byte (the stack slot) the entry code reads before any Rust runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    /// Run vCPU `n` (on stack slot `n`), which the guest started with CPU_ON.
    RunVcpu(usize),
    /// Reset the VM and run its vCPU 0 (on stack slot 0).
    BootVm,
}

/// Context-id bit that marks [`Job::BootVm`].
const JOB_BOOT_VM: u64 = 1 << 8;
/// Context-id bits of the stack slot.
const JOB_SLOT_MASK: u64 = 0xff;

impl Job {
    /// The stack slot (and vCPU) of this job.
    pub fn slot(self) -> usize {
        match self {
            Job::RunVcpu(n) => n,
            Job::BootVm => 0,
        }
    }

    fn encode(self) -> u64 {
        match self {
            Job::RunVcpu(n) => n as u64,
            Job::BootVm => JOB_BOOT_VM,
        }
    }

    /// The job a context id names; `None` for one `encode` never makes.
    pub fn decode(v: u64) -> Option<Job> {
        let slot = (v & JOB_SLOT_MASK) as usize;
        match v & !JOB_SLOT_MASK {
            0 if slot < MAX_CPUS => Some(Job::RunVcpu(slot)),
            JOB_BOOT_VM if slot == 0 => Some(Job::BootVm),
            _ => None,
        }
    }
}

/// Starts physical CPU `mpidr` at the hypervisor's secondary entry to do `job`.
pub fn start_pcpu(mpidr: u64, job: Job) -> Result<(), i64> {
    if job.slot() >= MAX_CPUS {
        return Err(ret::INVALID_PARAMETERS);
    }
    let entry = secondary_entry as *const () as usize as u64;
    match firmware_call(u64::from(func::PSCI_CPU_ON_64), mpidr, entry, job.encode()) {
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
