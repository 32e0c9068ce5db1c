//! Guest time and timer interrupts across a pause and across a rollback
//! (issue 10: CNTVOFF is adjusted so guest virtual time continues without a jump
//! and without a burst of stale timer interrupts).
//!
//! The Linux guest prints a counter once a second with its uptime and its
//! architected-timer interrupt count (`/proc/interrupts`). The VM is paused for
//! [`PAUSE_SECS`] and resumed; later a snapshot is taken, the guest runs on for
//! a few seconds and is rolled back to it; then the same with a disk snapshot
//! (`--disk`). Across each event:
//! - the counter continues from the next value;
//! - the guest's clock moves by about its one-second sleep: across the pause by
//!   less than the time the host held it, across the rollback by less than the
//!   guest ran between the snapshot and the rollback (without the CNTVOFF
//!   adjustment it moves by at least those, and the overdue sleep ends at once);
//! - the timer interrupts counted across it are no more than the guest's tick
//!   gives in the guest time that passed: at most its busy rate (measured first:
//!   a second spinning, so the tick runs at HZ) plus the one overdue deadline (a
//!   burst of stale ticks comes on top of that).

use integration_tests::{boot, boot_lock, console_tail, script, status_position};
use xtask::run::{Guest, RunOptions};
use xtask::Layout;

/// Budget of one boot (the build before it is not counted).
const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(300);
/// This file's system disk, under the workspace's `target/`.
const SYSTEM_DISK: &str = "test-disks/resume-timer-tests.img";
/// Counter values the guest prints (one a second).
const TICKS: u32 = 22;
/// Seconds the host holds the VM paused.
const PAUSE_SECS: u64 = 6;

/// First the guest's busiest timer-interrupt rate: it spins on `/proc/uptime`
/// for a second (never idle, so its tick runs at HZ) and prints `busy cs=… irq=…
/// end`. Then the counter on vCPU 0: `tick n=N up=UPTIME irq=ARCH_TIMER_INTERRUPTS
/// end`, one `echo` to the virtio console per line (a pause cannot split a line).
fn counter_cmd() -> String {
    format!(
        "irq() {{ awk '/arch_timer/ {{ s = 0; for (k = 2; k <= NF && $k ~ /^[0-9]+$/; k++) s += $k; print s }}' /proc/interrupts; }}; \
read u0 _ < /proc/uptime; a0=$(irq); t=$(( ${{u0%.*}}${{u0#*.}} + 100 )); c=0; \
while [ $c -lt $t ]; do read u _ < /proc/uptime; c=${{u%.*}}${{u#*.}}; done; a1=$(irq); \
echo \"busy cs=$(( c - ${{u0%.*}}${{u0#*.}} )) irq=$((a1 - a0)) end\" > /dev/hvc0; \
i=0; while [ $i -lt {TICKS} ]; do read u _ < /proc/uptime; a=$(irq); \
echo \"tick n=$i up=$u irq=$a end\" > /dev/hvc0; i=$((i+1)); sleep 1; done\n"
    )
}

/// The busy second's length in centiseconds and its interrupt count.
fn busy(console: &str) -> Option<(u64, u64)> {
    console.lines().find_map(|l| {
        let rest = &l[l.find("busy cs=")? + "busy cs=".len()..];
        let (cs, rest) = rest.split_once(" irq=")?;
        let irq = rest.trim_end_matches('\r').strip_suffix(" end")?;
        Some((cs.parse().ok()?, irq.parse().ok()?))
    })
}

#[derive(Debug, Clone, Copy)]
struct Tick {
    n: u32,
    up_cs: u64,
    irq: u64,
    line: usize,
}

fn ticks(console: &str) -> Vec<Tick> {
    console
        .lines()
        .enumerate()
        .filter_map(|(line, l)| {
            let l = l.trim_end_matches('\r');
            let rest = &l[l.find("tick n=")? + "tick n=".len()..];
            let rest = rest.strip_suffix(" end")?;
            let mut f = rest.split(' ');
            let n = f.next()?.parse().ok()?;
            let (s, cs) = f.next()?.strip_prefix("up=")?.split_once('.')?;
            let up_cs = s.parse::<u64>().ok()? * 100 + cs.parse::<u64>().ok()?;
            let irq = f.next()?.strip_prefix("irq=")?.parse().ok()?;
            Some(Tick {
                n,
                up_cs,
                irq,
                line,
            })
        })
        .collect()
}

#[test]
fn no_time_jump_and_no_burst_of_timer_interrupts_after_a_pause_or_a_rollback() {
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    // Beside the authority partition (the default configuration): the
    // script's `monitor` lines go to its shell, and it powers the host off.
    o.authority = true;
    o.smp = Some(1);
    o.mem = Some(256 << 20);
    o.system_disk = Some(Layout::detect().out.join(SYSTEM_DISK));
    // Recreated: no disk snapshot of an earlier run is left on it.
    o.fresh = true;
    o.guest_cmd = Some(counter_cmd());
    o.script = Some(script(
        "resume-timer.script",
        &format!(
            "expect tick n=3 \n\
             monitor vm pause linux\n\
             sleep {PAUSE_SECS}\n\
             monitor vm resume linux\n\
             expect tick n=6 \n\
             monitor vm snapshot linux r1\n\
             expect tick n=10 \n\
             monitor vm rollback linux r1\n\
             expect tick n=9 \n\
             monitor vm snapshot linux d1 --disk\n\
             expect tick n=13 \n\
             monitor vm rollback linux d1\n\
             expect rayos-guest: cmd exit 0\n\
             expect no VM left to run; the host stays up\n\
             monitor host shutdown\n"
        ),
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.verdict(), Ok(()), "\n{tail}");
    let console = &outcome.console;
    let all = ticks(console);
    let at = |status: &str| {
        status_position(console, status).unwrap_or_else(|| panic!("no `{status}`\n{tail}"))
    };
    let paused = at("ok: vm linux paused (1 vCPU stopped)");
    let resumed = at("ok: vm linux resumed");
    let snapshot_line = |kind: &str, tag: &str| {
        let want = format!("ok: vm linux snapshot '{tag}' taken ({kind}, ");
        console
            .lines()
            .position(|l| l.contains(&want))
            .unwrap_or_else(|| panic!("no `{want}`\n{tail}"))
    };
    let last_before = |line: usize| *all.iter().rfind(|t| t.line < line).unwrap();
    let first_after = |line: usize| *all.iter().find(|t| t.line > line).unwrap();
    // The most timer interrupts the guest takes in `cs` centiseconds of its time:
    // its busy rate (the tick at HZ), plus the one overdue deadline and one for
    // a tick at each end of the interval.
    let (busy_cs, busy_irq) = busy(console).unwrap_or_else(|| panic!("no busy line\n{tail}"));
    assert!(
        busy_cs >= 100 && busy_irq > 0,
        "busy {busy_cs} cs, {busy_irq}\n{tail}"
    );
    let most = |cs: u64| (busy_irq * cs).div_ceil(busy_cs) + 3;

    // The pause.
    let (b, a) = (last_before(paused), first_after(resumed));
    assert_eq!(a.n, b.n + 1, "the counter after the pause\n{tail}");
    let gap = a.up_cs - b.up_cs;
    assert!(
        gap < PAUSE_SECS * 100,
        "the guest's uptime jumped by {gap} cs across a {PAUSE_SECS} s pause ({b:?} -> {a:?})\n{tail}"
    );
    assert!(
        a.irq - b.irq <= most(gap),
        "{} timer interrupts in {gap} cs of guest time across the pause, more than its tick \
         gives ({busy_irq} in {busy_cs} cs busy) ({b:?} -> {a:?})\n{tail}",
        a.irq - b.irq
    );

    // Each rollback: the guest continues from the snapshot, on the snapshot's time.
    for (kind, tag) in [("memory", "r1"), ("disk", "d1")] {
        let snapped = snapshot_line(kind, tag);
        let rolled = at(&format!("ok: vm linux rolled back to snapshot '{tag}'"));
        let s = last_before(snapped);
        let before_rollback = last_before(rolled);
        let r = first_after(rolled);
        assert!(
            before_rollback.n > s.n + 1,
            "{tag}: the guest did not run on after the snapshot\n{tail}"
        );
        assert_eq!(
            r.n,
            s.n + 1,
            "{tag}: after the rollback the counter is not the snapshot's\n{tail}"
        );
        let ran = before_rollback.up_cs - s.up_cs;
        let gap = r.up_cs - s.up_cs;
        assert!(
            gap < ran,
            "{tag}: after the rollback the guest's uptime is {gap} cs past the snapshot's last \
             tick, though the guest ran only {ran} cs after it ({s:?} .. {before_rollback:?} -> \
             {r:?})\n{tail}"
        );
        assert!(
            r.irq - s.irq <= most(gap),
            "{tag}: {} timer interrupts in {gap} cs of guest time across the rollback, more than \
             its tick gives ({busy_irq} in {busy_cs} cs busy) ({s:?} -> {r:?})\n{tail}",
            r.irq - s.irq
        );
    }
    // After the last one it counts on to the end, one value at a time.
    let rolled = at("ok: vm linux rolled back to snapshot 'd1'");
    let after: Vec<u32> = all
        .iter()
        .filter(|t| t.line > rolled)
        .map(|t| t.n)
        .collect();
    assert_eq!(
        after,
        (after[0]..TICKS).collect::<Vec<_>>(),
        "the counter after the last rollback\n{tail}"
    );
}
