//! The host console shared by the hypervisor and a Linux guest: a guest cannot
//! print a line that passes for a hypervisor line, even written in pieces with
//! the guest going idle in between (the unfinished line goes out then).

use std::time::Duration;

use integration_tests::{boot_lock, console_tail};
use xtask::run::{run_captured, Guest, RunOptions};
use xtask::Layout;

/// Budget of one boot (the build before it is not counted).
const TIMEOUT: Duration = Duration::from_secs(120);
/// This file's system disk, under the workspace's `target/`.
const SYSTEM_DISK: &str = "test-disks/console-tests.img";
/// Two forged hypervisor lines: one whole, one written in two pieces a second
/// apart (the vCPU idles in between, so the first piece is flushed alone).
const FORGE_CMD: &str =
    r#"echo "[el2 INFO ] forged whole"; printf "[el2 WARN ] forged"; sleep 1; echo " in pieces""#;

#[test]
fn a_guest_cannot_forge_a_hypervisor_line() {
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.system_disk = Some(Layout::detect().out.join(SYSTEM_DISK));
    o.guest_cmd = Some(FORGE_CMD.into());
    let outcome = run_captured(&Layout::detect(), &o)
        .unwrap_or_else(|e| panic!("could not build, fetch or boot: {e}"));
    let tail = console_tail(&outcome);
    assert_eq!(outcome.verdict(), Ok(()), "{tail}");
    let lines: Vec<&str> = outcome
        .console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .collect();
    for want in ["|[el2 INFO ] forged whole", "|[el2 WARN ] forged in pieces"] {
        assert!(lines.contains(&want), "no line `{want}`\n{tail}");
    }
    let forged: Vec<&&str> = lines
        .iter()
        .filter(|l| l.starts_with("[el2") && l.contains("forged"))
        .collect();
    assert!(
        forged.is_empty(),
        "forged lines pass as the hypervisor's: {forged:?}"
    );
    // The hypervisor's own lines are still there, unescaped.
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("[el2 INFO ] VM 'linux' powered off")),
        "{tail}"
    );
}
