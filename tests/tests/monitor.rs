//! The hypervisor monitor on the Linux guest's console (`docs/monitor.md`):
//! `Ctrl-]` in and out, `vm list`, keystrokes kept from the guest while in the
//! monitor, hostile monitor input, `vm pause` / `vm resume` stopping every vCPU
//! without a jump in guest time, and `host shutdown` following the VM's policy.

use std::time::Duration;

use integration_tests::{boot, boot_lock, console_tail, script, statuses};
use xtask::run::{Ending, Guest, RunOptions};
use xtask::Layout;

/// Budget of one boot (the build before it is not counted).
const TIMEOUT: Duration = Duration::from_secs(180);
/// This file's system disk, under the workspace's `target/`.
const SYSTEM_DISK: &str = "test-disks/monitor-tests.img";
/// The system disk of the host-shutdown test, whose VM policy it changes.
const SHUTDOWN_DISK: &str = "test-disks/monitor-shutdown.img";

fn linux_options(smp: u32, disk: &str) -> RunOptions {
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.smp = Some(smp);
    o.mem = Some(256 << 20);
    o.system_disk = Some(Layout::detect().out.join(disk));
    o
}

#[test]
fn monitor_lists_the_vm_and_keeps_keystrokes_from_the_guest() {
    let _boot = boot_lock();
    let long = "x".repeat(10_000);
    let mut o = linux_options(1, SYSTEM_DISK);
    o.script = Some(script(
        "monitor-keys.script",
        &format!(
            "expect starting a shell\n\
             sleep 0.5\n\
             send echo before-$((1+1))\n\
             expect before-2\n\
             monitor vm list\n\
             # typed in the monitor and abandoned with Ctrl-]: the guest sees none of it\n\
             send \\x1decho leaked-$((6*7))\\x1d\n\
             # hostile monitor input: control bytes, an arrow key, then a real command\n\
             send \\x1d\\x02\\x03\\x04\\x00\\x1b[Avm pause nosuch\n\
             expect error: no VM named\n\
             send echo typed-in-monitor-$((3*3))\n\
             expect error: unknown command `echo`\n\
             send {long}\n\
             expect error: line longer than\n\
             send \\x1d\n\
             send echo after-$((2+3))\n\
             expect after-5\n\
             send exit\n\
             expect shell exited\n"
        ),
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let got = statuses(&outcome.console);
    assert_eq!(
        got,
        [
            "ok: 1 vm: linux vcpus=1 state=running",
            "error: no VM named 'nosuch' (see `vm list`)",
            "error: unknown command `echo` (try `help`)",
            &format!(
                "error: line longer than {} characters refused",
                monitor::LINE_MAX
            ),
        ],
        "\n{tail}"
    );
    // The shell would print these had it received the lines typed in the monitor.
    for leaked in ["leaked-42", "typed-in-monitor-9"] {
        assert!(
            !outcome.console.contains(leaked),
            "`{leaked}`: a line typed in the monitor reached the guest\n{tail}"
        );
    }
    assert!(
        !outcome.console.contains(&"x".repeat(monitor::LINE_MAX + 1)),
        "the overlong line was echoed past the limit\n{tail}"
    );
}

/// vCPUs of the pause test, each printing its own counter.
const PAUSE_VCPUS: u32 = 2;
/// Values each counter prints (one a second of guest time).
const TICKS: u32 = 14;
/// The counter value after which the VM is paused.
const PAUSE_AT: u32 = 3;
/// Seconds the host holds the VM paused.
const PAUSE_SECS: u64 = 8;

/// One counter per vCPU, pinned, one value a second with the guest's uptime:
/// vCPU 0 sleeps between values (idle in WFI), vCPU 1 spins on `/proc/uptime`
/// (never idle), so the pause must stop a vCPU in each state. Lines go to the
/// virtio console: one `echo` is one transmit buffer, so a pause cannot land in
/// the middle of a line.
fn counter_cmd() -> String {
    const SPIN: &str = "read u _ < /proc/uptime; t=$(( ${u%.*}${u#*.} + 100 )); c=0; \
while [ $c -lt $t ]; do read u _ < /proc/uptime; c=${u%.*}${u#*.}; done";
    let loops: Vec<String> = (0..PAUSE_VCPUS)
        .map(|c| {
            let wait = if c == 0 { "sleep 1" } else { SPIN };
            format!(
                "taskset -c {c} sh -c 'i=0; while [ $i -lt {TICKS} ]; do read u _ < /proc/uptime; \
echo \"tick cpu={c} n=$i up=$u end\" > /dev/hvc0; i=$((i+1)); {wait}; done' &"
            )
        })
        .collect();
    format!("{}\nwait\n", loops.join("\n"))
}

/// A counter line: vCPU, value, guest uptime in centiseconds, console line index.
#[derive(Debug, Clone, Copy)]
struct Tick {
    cpu: u32,
    n: u32,
    up_cs: u64,
    line: usize,
}

fn ticks(console: &str) -> Vec<Tick> {
    console
        .lines()
        .enumerate()
        .filter_map(|(line, l)| {
            // From the marker on: a line may follow a prompt or another line's rest.
            let l = l.trim_end_matches('\r');
            let rest = &l[l.find("tick cpu=")? + "tick cpu=".len()..];
            let rest = rest.strip_suffix(" end")?;
            let mut f = rest.split(' ');
            let cpu = f.next()?.parse().ok()?;
            let n = f.next()?.strip_prefix("n=")?.parse().ok()?;
            let (s, cs) = f.next()?.strip_prefix("up=")?.split_once('.')?;
            let up_cs = s.parse::<u64>().ok()? * 100 + cs.parse::<u64>().ok()?;
            Some(Tick {
                cpu,
                n,
                up_cs,
                line,
            })
        })
        .collect()
}

/// The console line index of the first monitor status line that is `status`.
fn status_line(console: &str, status: &str) -> Option<usize> {
    let want = format!("{} {status}", monitor::LINE_PREFIX);
    console
        .lines()
        .position(|l| l.trim_end_matches('\r') == want)
}

#[test]
fn pause_stops_every_vcpu_and_resume_continues_without_a_jump_in_guest_time() {
    let _boot = boot_lock();
    let mut o = linux_options(PAUSE_VCPUS, SYSTEM_DISK);
    o.guest_cmd = Some(counter_cmd());
    o.script = Some(script(
        "monitor-pause.script",
        &format!(
            "expect tick cpu=0 n={PAUSE_AT} \n\
             monitor vm pause linux\n\
             sleep {PAUSE_SECS}\n\
             monitor vm list\n\
             monitor vm pause linux\n\
             monitor vm resume linux\n\
             monitor vm resume linux\n\
             expect rayos-guest: cmd exit 0\n"
        ),
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.verdict(), Ok(()), "\n{tail}");
    let console = &outcome.console;
    assert_eq!(
        statuses(console),
        [
            "ok: vm linux paused (2 vCPUs stopped)",
            "ok: 1 vm: linux vcpus=2 state=paused",
            "error: vm linux is already paused",
            "ok: vm linux resumed",
            "error: vm linux is not paused (it is running)",
        ],
        "\n{tail}"
    );
    let paused = status_line(console, "ok: vm linux paused (2 vCPUs stopped)").unwrap();
    let resumed = status_line(console, "ok: vm linux resumed").unwrap();
    let all = ticks(console);
    // While paused no vCPU ran guest code: no counter moved.
    let during: Vec<&Tick> = all
        .iter()
        .filter(|t| t.line > paused && t.line < resumed)
        .collect();
    assert!(
        during.is_empty(),
        "counters ran while paused: {during:?}\n{tail}"
    );
    for cpu in 0..PAUSE_VCPUS {
        let mine: Vec<&Tick> = all.iter().filter(|t| t.cpu == cpu).collect();
        // Every value once, in order: the counter continued from the next value.
        let values: Vec<u32> = mine.iter().map(|t| t.n).collect();
        assert_eq!(values, (0..TICKS).collect::<Vec<_>>(), "vCPU {cpu}\n{tail}");
        let before = mine.iter().rfind(|t| t.line < paused).unwrap();
        let after = mine.iter().find(|t| t.line > resumed).unwrap();
        assert_eq!(after.n, before.n + 1, "vCPU {cpu}");
        // Guest time stood still while paused: across the pause the guest's clock
        // moved by its one-second sleep, not by the PAUSE_SECS the host held it
        // (without the CNTVOFF adjustment it moves by at least PAUSE_SECS, and the
        // overdue sleep ends at once).
        let gap = after.up_cs - before.up_cs;
        assert!(
            gap < PAUSE_SECS * 100,
            "vCPU {cpu}: the guest's uptime jumped by {gap} cs across the pause \
             ({before:?} -> {after:?})\n{tail}"
        );
    }
}

/// Sets `flag` (a `disk set-policy` flag) on the VM `linux` of `disk`.
fn set_policy(disk: &str, flag: &str) {
    let path = Layout::detect().out.join(disk);
    let args: Vec<String> = [
        "set-policy",
        path.to_str().unwrap(),
        "linux",
        &format!("--{flag}"),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    registry::cli::cli_main(&args).unwrap_or_else(|e| panic!("disk set-policy {flag}: {e}"));
}

#[test]
fn host_shutdown_follows_the_vm_policy() {
    let _boot = boot_lock();
    // A fresh disk: the VM's policy says suspend on host shutdown (the default):
    // the VM is suspended to the system disk, then the host powers off.
    let mut o = linux_options(1, SHUTDOWN_DISK);
    o.fresh = true;
    o.script = Some(script(
        "monitor-shutdown-suspend.script",
        "expect starting a shell\nmonitor host shutdown\n",
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    assert_eq!(
        statuses(&outcome.console),
        ["ok: host shutting down: suspended linux"],
        "\n{tail}"
    );

    // Policy: power off. The VM is powered off, then the host (QEMU exits 0)
    // while the guest's shell still waits for input.
    // (`--cold`: the image the first boot left is discarded, not resumed.)
    set_policy(SHUTDOWN_DISK, "no-suspend-on-host-shutdown");
    let mut o = linux_options(1, SHUTDOWN_DISK);
    o.cold = true;
    o.script = Some(script(
        "monitor-shutdown.script",
        "expect starting a shell\nmonitor host shutdown\n",
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    assert_eq!(
        statuses(&outcome.console),
        ["ok: host shutting down: powered off linux"],
        "\n{tail}"
    );
    assert!(
        outcome
            .console
            .contains("[el2 INFO ] VM 'linux' powered off (host shutdown)"),
        "\n{tail}"
    );
    assert!(
        !outcome.console.contains("shell exited"),
        "the guest powered itself off\n{tail}"
    );
}

/// A guest that never reads its UART (the bare-metal reset-loop guest, booted
/// from a bundle): typed input beyond the queue is dropped and counted, and
/// `Ctrl-]` still reaches the monitor; `host shutdown` powers off a VM without a
/// registry policy, then the host.
#[test]
fn the_monitor_is_reached_past_a_guest_that_reads_nothing() {
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::ResetLoop, TIMEOUT);
    let flood = "y".repeat(3 * monitor::input::GUEST_QUEUE);
    o.script = Some(script(
        "monitor-no-reader.script",
        &format!(
            "expect reset-loop: alive\n\
             send {flood}\n\
             expect console input: \\d+ byte\\(s\\) dropped\n\
             monitor vm list\n\
             monitor host shutdown\n"
        ),
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    assert_eq!(
        statuses(&outcome.console),
        [
            "ok: 1 vm: reset-loop vcpus=1 state=running",
            "ok: host shutting down: powered off reset-loop",
        ],
        "\n{tail}"
    );
}

/// A guest that takes its boot vCPU offline (PSCI CPU_OFF of vCPU 0, whose
/// physical CPU took the host UART's interrupt) still gets its console input, and
/// the monitor is still reached: the host console's interrupt moves to a physical
/// CPU that runs.
#[test]
fn console_and_monitor_work_while_the_boot_vcpu_is_offline() {
    let _boot = boot_lock();
    let mut o = linux_options(2, SYSTEM_DISK);
    o.script = Some(script(
        "monitor-cpu0-offline.script",
        "expect starting a shell\n\
         sleep 0.5\n\
         send echo 0 > /sys/devices/system/cpu/cpu0/online; echo online=$(cat /sys/devices/system/cpu/online)\n\
         expect online=1\n\
         send echo typed-$((2*3))\n\
         expect typed-6\n\
         monitor vm list\n\
         send echo 1 > /sys/devices/system/cpu/cpu0/online; echo back=$(cat /sys/devices/system/cpu/online)\n\
         expect back=0-1\n\
         send exit\n\
         expect shell exited\n",
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    assert_eq!(
        statuses(&outcome.console),
        ["ok: 1 vm: linux vcpus=2 state=running"],
        "\n{tail}"
    );
}
