//! Boots Debian's arm64 Linux kernel with the busybox initramfs (fetched with
//! apt and cached in `target/guest-cache` by xtask) as a guest of the
//! hypervisor: a command run by init, and an interactive shell driven by a script.

use std::time::Duration;

use integration_tests::{boot_lock, console_tail};
use xtask::linux_guest::parse_console;
use xtask::run::{run_captured, Ending, Guest, RunOptions};
use xtask::Layout;

const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn linux_boots_smp_and_runs_a_command() {
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.guest_cmd = Some("echo cpus=$(grep -c ^processor /proc/cpuinfo)".into());
    let outcome = run_captured(&Layout::detect(), &o)
        .unwrap_or_else(|e| panic!("could not build, fetch or boot: {e}"));
    let tail = console_tail(&outcome);
    assert_eq!(outcome.verdict(), Ok(()), "\n{tail}");
    let guest = parse_console(&outcome.console);
    assert!(
        guest.init_seen && guest.ready_seen,
        "init did not come up\n{tail}"
    );
    assert!(
        guest.modules_failed.is_empty(),
        "modules failed to load: {:?}\n{tail}",
        guest.modules_failed
    );
    // The default is 2 vCPUs: the second one came up through PSCI CPU_ON.
    assert!(
        outcome.console.lines().any(|l| l.trim_end() == "cpus=2"),
        "expected 2 CPUs online\n{tail}"
    );
}

#[test]
fn linux_shell_is_driven_by_a_script() {
    let _boot = boot_lock();
    let dir = Layout::detect().out.join("test-scripts");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("linux-shell.script");
    std::fs::write(
        &script,
        "expect starting a shell\nsleep 0.5\nsend echo sum=$((40+2))\nexpect sum=42\nsend exit\nexpect shell exited\n",
    )
    .unwrap();
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.smp = Some(1);
    o.mem = Some(256 << 20);
    o.script = Some(script);
    let outcome = run_captured(&Layout::detect(), &o)
        .unwrap_or_else(|e| panic!("could not build, fetch or boot: {e}"));
    assert_eq!(
        outcome.ending,
        Ending::Exited(Some(0)),
        "\n{}",
        console_tail(&outcome)
    );
    assert!(
        outcome.console.contains("Memory: "),
        "no kernel memory line\n{}",
        console_tail(&outcome)
    );
}
