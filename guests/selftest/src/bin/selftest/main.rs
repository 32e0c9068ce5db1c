//! The self-test guest: runs each check of the hypervisor's exit handling,
//! prints one `PASS <name>` or `FAIL <name>: <detail>` line per check, then
//! `selftest: N passed, M failed`, and powers the VM off with PSCI SYSTEM_OFF.
//!
//! On the host this binary only prints that it must be built for
//! `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
mod cpu;
#[cfg(target_os = "none")]
mod irq;
#[cfg(target_os = "none")]
mod memory;
#[cfg(target_os = "none")]
mod mmio;
#[cfg(target_os = "none")]
mod psci;
#[cfg(target_os = "none")]
mod secure;
#[cfg(target_os = "none")]
mod timer;
#[cfg(target_os = "none")]
mod virtio;

#[cfg(target_os = "none")]
mod guest {
    use selftest_guest::harness::Harness;
    use selftest_guest::{outln, power, vectors};

    use crate::{cpu, irq, memory, mmio, psci, secure, timer};

    /// Unexpected exceptions after which the guest gives up and powers off.
    const UNEXPECTED_LIMIT: u32 = 1000;

    /// Entered from `_start` with a stack and a zeroed BSS.
    #[no_mangle]
    extern "C" fn guest_main() -> ! {
        vectors::install(UNEXPECTED_LIMIT);
        outln!("selftest-guest: starting");
        let mut h = Harness::default();

        let hypervisor = psci::hypervisor_answers();
        h.check("hvc-roundtrip", psci::hvc_roundtrip);
        h.check("psci-version", psci::psci_version);
        h.check("psci-features", psci::psci_features);
        h.check("smccc-unknown", psci::smccc_unknown);
        h.check("authority-range-refused", psci::authority_range_refused);
        h.check("smc-trapped", psci::smc_trapped);
        h.check("psci-cpu-on-invalid", psci::cpu_on_invalid);
        h.check("psci-affinity-info", psci::affinity_info);

        h.check("mmio-pl011-id", mmio::pl011_id);
        h.check("mmio-pl011-rw", mmio::pl011_rw);
        h.check("mmio-byte-and-sign", mmio::byte_and_sign);
        h.check("mmio-bad-size", mmio::bad_size);
        h.check("mmio-no-syndrome", mmio::no_syndrome);
        h.check("virtio-empty-slot", crate::virtio::empty_slot);

        h.check("unmapped-ipa", memory::unmapped_ipa);
        h.check("unmapped-exec", memory::unmapped_exec);
        h.check("hypervisor-memory", memory::hypervisor_memory);

        h.check("undefined-sysreg", cpu::undefined_sysreg);
        h.check("id-sanitised", cpu::id_sanitised);
        h.check("fp-preserved", cpu::fp_preserved);
        h.check("wfi-wakeup", |p| cpu::wfi_wakeup(hypervisor, p));
        h.check("ptimer-emulated", cpu::ptimer_emulated);
        h.check("vtimer-level-follows", timer::vtimer_level_follows);

        h.check("irq-six-sgis", irq::six_sgis);
        h.check("irq-active-overflow", irq::active_overflow);

        h.check("ras-trapped", secure::ras_trapped);

        let (passed, failed) = h.totals(vectors::unexpected_count());
        outln!("selftest: {passed} passed, {failed} failed");
        power::system_off()
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("selftest is a bare-metal guest: build it with --target aarch64-unknown-none");
}
