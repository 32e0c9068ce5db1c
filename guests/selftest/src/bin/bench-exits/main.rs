//! The exit-cost benchmark guest. Under QEMU `-icount shift=0` the PMU event
//! INST_RETIRED counts exactly, so the instructions the hypervisor spends on an
//! exit are a deterministic number. The guest counts (PMU counter 0, EL2
//! included) three loops of 10 000 iterations that differ in one
//! instruction: a `nop` (baseline), a null `hvc #0` (SMCCC_VERSION) and a 32-bit
//! read of PL011 FR (an MMIO exit), prints the totals, the per-iteration figures
//! and the per-exit cost over the baseline, then powers off.
//!
//! On the host this binary only prints that it must be built for
//! `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod loops;
#[cfg(target_os = "none")]
mod pmu;

#[cfg(target_os = "none")]
mod guest {
    use selftest_guest::defs::smccc::{SMCCC_VERSION, VERSION_1_1};
    use selftest_guest::fixed::PerIter;
    use selftest_guest::smccc::{call, ret, Conduit};
    use selftest_guest::{outln, power, vectors};

    use crate::loops::{self, Loop};
    use crate::pmu;

    /// Iterations of each loop.
    pub const ITERATIONS: u64 = 10_000;

    /// Entered from `_start` with a stack and a zeroed BSS.
    #[no_mangle]
    extern "C" fn guest_main() -> ! {
        vectors::install(u32::MAX);
        if let Err(why) = pmu::start_instruction_counter() {
            outln!("bench-exits: error: {why}");
            power::system_off();
        }
        let version = ret(SMCCC_VERSION, call(Conduit::Hvc, SMCCC_VERSION, [0; 3])[0]);
        if version != VERSION_1_1 {
            outln!("bench-exits: error: SMCCC_VERSION via hvc returned {version:#x}: the hvc loop measures no hypervisor");
        }
        let mut totals = [0u64; 3];
        for (slot, which) in totals.iter_mut().zip(Loop::ALL) {
            let before = vectors::unexpected_count();
            *slot = loops::count(which, ITERATIONS);
            let unexpected = vectors::unexpected_count().wrapping_sub(before);
            if unexpected != 0 {
                outln!(
                    "bench-exits: error: {unexpected} unexpected exceptions in the {} loop",
                    which.name()
                );
            }
        }
        let [empty, hvc, mmio] = totals;
        if empty == 0 {
            outln!("bench-exits: error: PMU counted nothing");
            power::system_off();
        }
        let n = ITERATIONS;
        outln!("bench-exits: iterations={n} empty_loop_insns={empty} hvc_loop_insns={hvc} mmio_loop_insns={mmio}");
        outln!(
            "bench-exits: per_iter empty={} hvc={} mmio={}",
            PerIter::new(empty, n),
            PerIter::new(hvc, n),
            PerIter::new(mmio, n)
        );
        outln!(
            "bench-exits: per_exit hvc={} mmio={}",
            PerIter::new(hvc.saturating_sub(empty), n),
            PerIter::new(mmio.saturating_sub(empty), n)
        );
        power::system_off()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("bench-exits is a bare-metal guest: build it with --target aarch64-unknown-none");
}
