//! QEMU integration tests: they boot RayOS EL2 with real guests through the
//! `xtask` library (the same code `cargo xtask run` uses). This library holds
//! what the test files share; the tests are in `tests/*.rs`.
#![forbid(unsafe_code)]

pub mod procfs;

use std::sync::{Mutex, MutexGuard};

use xtask::run::{RunOutcome, CONSOLE_TAIL_LINES};

static BOOT: Mutex<()> = Mutex::new(());

/// Serialises QEMU boots within a test binary: they share build outputs and
/// bundles, and two emulated machines on a small host only slow each other
/// down. (Builds are additionally serialised across processes by xtask's
/// build lock.) A test that panicked while holding it does not block the rest.
pub fn boot_lock() -> MutexGuard<'static, ()> {
    BOOT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The console tail of `outcome`, framed for a failure message.
pub fn console_tail(outcome: &RunOutcome) -> String {
    format!(
        "--- last {CONSOLE_TAIL_LINES} console lines ({:?} after {:.1} s) ---\n{}\n---",
        outcome.ending,
        outcome.elapsed.as_secs_f64(),
        outcome.console_tail(CONSOLE_TAIL_LINES)
    )
}
