//! Boots the hostile virtio guest: it hands the hypervisor's virtio-blk device
//! malformed queues and chains (loops, indices out of range, buffers outside guest
//! RAM or aimed at hypervisor memory, oversized lengths, nested indirect tables, bad
//! features) and checks each is refused with DEVICE_NEEDS_RESET or the architected
//! status, that no byte outside the buffers changed, and that the hypervisor is still
//! up afterwards.

use std::time::Duration;

use integration_tests::{boot_lock, console_tail};
use xtask::run::{run_captured, Ending, Guest, RunOptions, VIRTIO_HOSTILE_SUMMARY};
use xtask::selftest::parse_checks;
use xtask::Layout;

const EXPECTED_CHECKS: &[&str] = &[
    "virtio-probe",
    "virtio-good-io",
    "hostile-desc-loop",
    "hostile-index-out-of-range",
    "hostile-out-of-ram",
    "hostile-huge-length",
    "hostile-ring-outside-ram",
    "hostile-indirect-nested",
    "hostile-bad-features",
    "hostile-out-of-range-sector",
    "virtio-deferred-resumed",
    "hypervisor-alive",
];

const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn hostile_virtio_driver_is_refused_and_hypervisor_survives() {
    let _boot = boot_lock();
    let layout = Layout::detect();
    let outcome = run_captured(
        &layout,
        &RunOptions::headless(Guest::VirtioHostile, TIMEOUT),
    )
    .unwrap_or_else(|e| panic!("could not build or boot the hostile virtio guest: {e}"));
    let tail = console_tail(&outcome);
    let report = parse_checks(&outcome.console, VIRTIO_HOSTILE_SUMMARY);

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
    // Every hostile request must have been refused with a log line from the hypervisor.
    let refusals = outcome
        .console
        .lines()
        .filter(|l| l.starts_with("[el2 WARN"))
        .count();
    if refusals < 10 {
        problems.push(format!(
            "only {refusals} hypervisor warnings: hostile requests were not all refused visibly"
        ));
    }
    if let Err(e) = outcome.verdict() {
        problems.push(e);
    }
    assert!(problems.is_empty(), "{}\n{tail}", problems.join("\n"));
}
