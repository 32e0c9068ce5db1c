//! Boots the bare-metal self-test guest on the hypervisor under QEMU and checks
//! that every expected check ran and passed.

use std::time::Duration;

use integration_tests::{boot_lock, console_tail};
use xtask::run::{run_captured, Ending, Guest, RunOptions};
use xtask::Layout;

/// Every check the self-test guest must report (as `PASS <name>`).
const EXPECTED_CHECKS: &[&str] = &[
    "hvc-roundtrip",
    "psci-version",
    "psci-features",
    "smccc-unknown",
    "authority-range-refused",
    "smc-trapped",
    "psci-cpu-on-invalid",
    "psci-affinity-info",
    "mmio-pl011-id",
    "mmio-pl011-rw",
    "mmio-byte-and-sign",
    "mmio-bad-size",
    "mmio-no-syndrome",
    "virtio-empty-slot",
    "unmapped-ipa",
    "unmapped-exec",
    "hypervisor-memory",
    "undefined-sysreg",
    "id-sanitised",
    "fp-preserved",
    "wfi-wakeup",
    "ptimer-emulated",
    "vtimer-level-follows",
    "irq-six-sgis",
    "irq-active-overflow",
    "ras-trapped",
];

/// Boot budget (the build before it is not counted).
const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn selftest_guest_passes_every_check() {
    let _boot = boot_lock();
    let layout = Layout::detect();
    let outcome = run_captured(&layout, &RunOptions::headless(Guest::Selftest, TIMEOUT))
        .unwrap_or_else(|e| panic!("could not build or boot the self-test: {e}"));
    let tail = console_tail(&outcome);
    let report = outcome.selftest();

    let mut problems = Vec::new();
    if let Ending::TimedOut { .. } = outcome.ending {
        problems.push(format!("timed out after {} s", TIMEOUT.as_secs()));
    }
    for f in &report.failed {
        problems.push(format!("check `{}` failed: {}", f.name, f.detail));
    }
    let missing = report.missing(EXPECTED_CHECKS);
    if !missing.is_empty() {
        problems.push(format!("checks never reported: {}", missing.join(", ")));
    }
    match report.summary {
        None => problems.push("no `selftest: N passed, M failed` summary".into()),
        Some((passed, _)) if passed as usize != report.passed.len() => problems.push(format!(
            "summary says {passed} passed but {} PASS lines were printed",
            report.passed.len()
        )),
        Some(_) => {}
    }
    if let Err(why) = outcome.verdict() {
        problems.push(why);
    }
    assert!(
        problems.is_empty(),
        "self-test run failed:\n  {}\n{tail}",
        problems.join("\n  ")
    );
}
