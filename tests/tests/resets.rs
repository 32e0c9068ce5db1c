//! VM resets as a long-lived guest makes them: a reset storm must leave the
//! hypervisor exactly as it was (every reset used to leave a frame on the boot
//! CPU's stack until the stack overflowed), and a guest that takes its boot CPU
//! offline and online again must not reset the VM.

use std::time::Duration;

use integration_tests::{boot_lock, console_tail, script};
use xtask::run::{run_captured, Ending, Guest, RunOptions};
use xtask::Layout;

/// Resets in a row; each one is followed by a boot that proves the guest answers.
const RESETS: usize = 200;
/// Budget for all of them (a reset and boot take tens of milliseconds).
const TIMEOUT: Duration = Duration::from_secs(240);

#[test]
fn two_hundred_resets_in_a_row_leave_the_guest_answering() {
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::ResetLoop, TIMEOUT);
    // The first boot plus one after each reset, every one answering a hypercall.
    let expect = "expect reset-loop: alive \\(PSCI 0x10001\\)\n".repeat(RESETS + 1);
    o.script = Some(script("reset-loop.script", &expect));
    let outcome =
        run_captured(&Layout::detect(), &o).unwrap_or_else(|e| panic!("set-up failed: {e}"));
    let tail = console_tail(&outcome);
    assert_eq!(
        outcome.ending,
        Ending::ScriptDone,
        "the guest did not come back from {RESETS} resets in a row:\n{tail}"
    );
    let resets = outcome
        .console
        .lines()
        .filter(|l| l.starts_with("[el2 ") && l.contains("VM 'reset-loop': resetting"))
        .count();
    assert!(
        resets >= RESETS,
        "the hypervisor logged {resets} resets, expected at least {RESETS}:\n{tail}"
    );
    assert!(
        !outcome.console.contains("FAIL") && !outcome.console.contains("FATAL"),
        "a boot failed:\n{tail}"
    );
}
