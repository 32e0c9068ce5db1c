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
    // Beside the authority partition, the default configuration (its shell
    // powers the host off once the guest's command ended).
    o.authority = true;
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

/// Reads of an address with no device, each refused with a warning.
const FLOOD: u64 = 200;
/// The flood, then (a second later, so the bucket holds a token again) one more
/// refused read elsewhere, which reports what the flood left suppressed.
fn flood_cmd() -> String {
    format!(
        "i=0; while [ $i -lt {FLOOD} ]; do devmem 0x0c000000 >/dev/null 2>&1; i=$((i+1)); done; \
sleep 1; devmem 0x0c001000 >/dev/null 2>&1; echo flood-done"
    )
}

#[test]
fn guest_provoked_warnings_are_rate_limited_and_counted() {
    use vdev::ratelimit::{LOG_BURST, LOG_LINES_PER_SEC, LOG_SUPPRESSED};
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    // Beside the authority partition, the default configuration (its shell
    // powers the host off once the guest's command ended).
    o.authority = true;
    o.system_disk = Some(Layout::detect().out.join(SYSTEM_DISK));
    o.guest_cmd = Some(flood_cmd());
    let outcome = run_captured(&Layout::detect(), &o)
        .unwrap_or_else(|e| panic!("could not build, fetch or boot: {e}"));
    let tail = console_tail(&outcome);
    assert_eq!(outcome.verdict(), Ok(()), "{tail}");
    let warns: Vec<&str> = outcome
        .console
        .lines()
        .filter(|l| l.starts_with("[el2 WARN") || l.starts_with("[el2 ERROR"))
        .collect();
    let refused = |ipa: &str| {
        warns
            .iter()
            .filter(|l| l.contains(&format!("read of IPA {ipa} ")))
            .count() as u64
    };
    let suppressed: Vec<u64> = warns
        .iter()
        .filter_map(|l| {
            let (_, rest) = l.split_once("] ")?;
            let (n, _) = rest.split_once(&format!(" {LOG_SUPPRESSED}"))?;
            n.parse().ok()
        })
        .collect();
    // Nothing is lost: every refusal of the flood was printed or counted (the
    // last refusal, after a pause, is printed and reports the rest).
    assert_eq!(refused("0xc001000"), 1, "{tail}");
    assert_eq!(
        refused("0xc000000") + suppressed.iter().sum::<u64>(),
        FLOOD,
        "printed {} and suppressed {suppressed:?}\n{tail}",
        refused("0xc000000")
    );
    // Never more than the burst plus the rate over the whole run (the run's
    // wall-clock time bounds the counter time the hypervisor saw).
    let limited = (warns.len() - suppressed.len()) as u64;
    let allowed = u64::from(LOG_BURST) + LOG_LINES_PER_SEC * (outcome.elapsed.as_secs() + 1);
    assert!(
        limited <= allowed,
        "{limited} warning lines in {:?}, at most {allowed} allowed\n{tail}",
        outcome.elapsed
    );
}
