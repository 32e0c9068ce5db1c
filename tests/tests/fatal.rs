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

/// W^X: the hypervisor's code is read-only at EL2; a store to it is a permission
/// fault (data abort from EL2, EC 0x25, DFSC 0b0011xx: ISS bits [5:2] = 0b0011).
#[test]
fn a_store_to_hypervisor_code_is_a_permission_fault() {
    let mut o = RunOptions::headless(Guest::Selftest, TIMEOUT);
    o.hypervisor_fault = Some(vmspec::HypervisorFault::WriteText);
    let (ending, console, tail) = run(o);
    assert_fatal(
        &ending,
        &console,
        &tail,
        &["[el2 FATAL] synchronous exception at EL2", "EC 0x25"],
    );
    let esr = fatal_esr(&console).unwrap_or_else(|| panic!("no ESR_EL2 in\n{tail}"));
    assert_eq!(
        esr >> 2 & 0xf,
        0b0011,
        "DFSC must be a permission fault: ESR {esr:#x}\n{tail}"
    );
    assert_ne!(
        esr & 1 << 6,
        0,
        "WnR: the fault is on a write: ESR {esr:#x}\n{tail}"
    );
    assert!(!console.contains("did not fault"), "{tail}");
}

/// W^X: writable memory is execute-never at EL2; a branch into it is an
/// instruction abort from EL2 (EC 0x21) with a permission fault.
#[test]
fn a_branch_into_writable_data_is_an_instruction_abort() {
    let mut o = RunOptions::headless(Guest::Selftest, TIMEOUT);
    o.hypervisor_fault = Some(vmspec::HypervisorFault::ExecuteData);
    let (ending, console, tail) = run(o);
    assert_fatal(
        &ending,
        &console,
        &tail,
        &["[el2 FATAL] synchronous exception at EL2", "EC 0x21"],
    );
    let esr = fatal_esr(&console).unwrap_or_else(|| panic!("no ESR_EL2 in\n{tail}"));
    assert_eq!(
        esr >> 2 & 0xf,
        0b0011,
        "IFSC must be a permission fault: ESR {esr:#x}\n{tail}"
    );
    assert!(!console.contains("did not fault"), "{tail}");
}

/// ESR_EL2 as the fatal line prints it.
fn fatal_esr(console: &str) -> Option<u64> {
    let hex = console.split("ESR_EL2=0x").nth(1)?;
    let end = hex.find(|c: char| !c.is_ascii_hexdigit())?;
    u64::from_str_radix(&hex[..end], 16).ok()
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
