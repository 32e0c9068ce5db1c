//! QEMU integration tests: they boot RayOS EL2 with real guests through the
//! `xtask` library (the same code `cargo xtask run` uses). This library holds
//! what the test files share; the tests are in `tests/*.rs`.
#![forbid(unsafe_code)]

pub mod procfs;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use xtask::run::{run_captured, RunOptions, RunOutcome, CONSOLE_TAIL_LINES};
use xtask::Layout;

static BOOT: Mutex<()> = Mutex::new(());

/// Serialises QEMU boots within a test binary: they share build outputs and
/// bundles, and two emulated machines on a small host only slow each other
/// down. (Builds are additionally serialised across processes by xtask's
/// build lock.) A test that panicked while holding it does not block the rest.
pub fn boot_lock() -> MutexGuard<'static, ()> {
    BOOT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The console tail of `outcome`, framed for a failure message; after a timeout,
/// where each emulated CPU was.
pub fn console_tail(outcome: &RunOutcome) -> String {
    let mut text = format!(
        "--- last {CONSOLE_TAIL_LINES} console lines ({:?} after {:.1} s) ---\n{}\n---",
        outcome.ending,
        outcome.elapsed.as_secs_f64(),
        outcome.console_tail(CONSOLE_TAIL_LINES)
    );
    if let Some(cpus) = &outcome.cpus_at_timeout {
        text.push_str(&format!("\n{cpus}\n---"));
    }
    text
}

/// Builds what `o` needs and boots it captured; set-up failures fail the test.
pub fn boot(o: &RunOptions) -> RunOutcome {
    run_captured(&Layout::detect(), o)
        .unwrap_or_else(|e| panic!("could not build, fetch, prepare the system disk or boot: {e}"))
}

/// The value after `key=` on the first console line that starts with it.
pub fn console_value<'a>(console: &'a str, key: &str) -> Option<&'a str> {
    console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// Writes a `--script` file named `name` under the workspace's target directory.
pub fn script(name: &str, text: &str) -> PathBuf {
    let dir = Layout::detect().out.join("test-scripts");
    std::fs::create_dir_all(&dir).expect("create target/test-scripts");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test script");
    path
}
