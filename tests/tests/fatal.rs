//! The hypervisor's own failure paths: entered at the wrong exception level, a data
//! abort at EL2 and a Rust panic each print their cause (with ESR/FAR/ELR and a
//! frame-pointer backtrace where it applies) and power the machine off with the
//! failing status 70.

use std::time::Duration;

use integration_tests::{boot_lock, console_tail};
use xtask::run::{run_captured, Ending, Guest, RunOptions};
use xtask::Layout;

const TIMEOUT: Duration = Duration::from_secs(60);
/// The status the hypervisor reports through semihosting when it dies.
const FATAL_STATUS: i32 = 70;

fn run(opts: RunOptions) -> (Ending, String, String) {
    let _boot = boot_lock();
    let outcome = run_captured(&Layout::detect(), &opts)
        .unwrap_or_else(|e| panic!("could not build or boot: {e}"));
    let tail = console_tail(&outcome);
    (outcome.ending.clone(), outcome.console.clone(), tail)
}

fn assert_fatal(ending: &Ending, console: &str, tail: &str, must_contain: &[&str]) {
    assert!(
        matches!(ending, Ending::Exited(Some(FATAL_STATUS))),
        "QEMU should exit with the hypervisor's fatal status {FATAL_STATUS}, got {ending:?}\n{tail}"
    );
    for needle in must_contain {
        assert!(console.contains(needle), "console lacks `{needle}`\n{tail}");
    }
}

#[test]
fn data_abort_at_el2_is_reported_with_registers_and_backtrace() {
    let mut o = RunOptions::headless(Guest::Selftest, TIMEOUT);
    o.hypervisor_fault = Some(vmspec::HypervisorFault::DataAbort);
    let (ending, console, tail) = run(o);
    assert_fatal(
        &ending,
        &console,
        &tail,
        &[
            "[el2 FATAL] synchronous exception at EL2",
            "EC 0x25",
            "FAR_EL2=0x7f0000000000",
            "ELR_EL2=",
            "backtrace:",
            "  #0 ",
        ],
    );
    assert!(
        !console.contains("selftest-guest: starting"),
        "the guest must not run after a hypervisor fault\n{tail}"
    );
}

#[test]
fn stack_overflow_hits_the_guard_page_and_is_reported() {
    let mut o = RunOptions::headless(Guest::Selftest, TIMEOUT);
    o.hypervisor_fault = Some(vmspec::HypervisorFault::StackOverflow);
    let (ending, console, tail) = run(o);
    assert_fatal(
        &ending,
        &console,
        &tail,
        &[
            "[el2 FATAL] stack overflow (a guard page was touched): synchronous exception at EL2",
            "EC 0x25",
            "backtrace:",
            "  #0 ",
        ],
    );
}

#[test]
fn panic_is_reported_with_message_and_backtrace() {
    let mut o = RunOptions::headless(Guest::Selftest, TIMEOUT);
    o.hypervisor_fault = Some(vmspec::HypervisorFault::Panic);
    let (ending, console, tail) = run(o);
    assert_fatal(
        &ending,
        &console,
        &tail,
        &[
            "[el2 FATAL] panic:",
            "deliberate panic requested by the boot bundle",
            "backtrace:",
            "  #0 ",
        ],
    );
}

#[test]
fn entry_at_el1_is_refused_in_one_line() {
    let mut o = RunOptions::headless(Guest::Selftest, TIMEOUT);
    o.qemu_args = vec!["-machine".into(), "virtualization=off".into()];
    let (ending, console, tail) = run(o);
    assert_fatal(
        &ending,
        &console,
        &tail,
        &["[el2 FATAL] RayOS EL2 was entered at EL1, not EL2"],
    );
}
