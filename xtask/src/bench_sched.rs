//! `sched`: what time-sharing a physical CPU costs a CPU-bound guest. The Linux
//! guest runs one pinned shell loop per vCPU for a fixed span of its own time and
//! prints how many rounds each made, twice in the same run on a one-CPU host:
//! with one vCPU (the baseline: nothing to share) and with two vCPUs, which take
//! turns on the CPU in 10 ms slices. Both runs are under `-icount shift=0`: guest
//! time is the instructions the CPU retired, so the host's load does not move the
//! figures, and a CPU that never idles retires as many instructions per guest
//! second whatever runs on it. The headline `throughput_ratio` is the total rounds
//! shared over the rounds alone: 1.0 means the scheduler (its switches, its slice
//! timer) costs nothing.
//!
//! `input` (bench_input.rs) runs the same loops to measure the authority
//! partition's cost to the scheduler.

use std::time::Duration;

use crate::error::{tail_lines, Error};
use crate::run::{run_captured, Ending, Guest, RunOptions, CONSOLE_TAIL_LINES};
use crate::Layout;

/// vCPUs of the guest when they share the CPU.
pub const VCPUS: u32 = 2;
/// Guest time each loop runs, in centiseconds of the guest's uptime.
pub const LOOP_CS: u32 = 300;
/// Budget of one boot.
pub const TIMEOUT: Duration = Duration::from_secs(600);
/// The bench's own system disk, under the workspace's `target/`.
pub const SYSTEM_DISK: &str = "bench-sched-system.img";
/// Prefix of a loop's result line.
pub const PREFIX: &str = "sched-loop: ";

/// The guest command for `vcpus` vCPUs: one pinned loop per vCPU, started
/// together, each counting rounds of fixed shell work for [`LOOP_CS`] of guest
/// time.
pub fn guest_cmd(vcpus: u32) -> String {
    let mut cmd = format!(
        "L='cs() {{ read u _ < /proc/uptime; echo \"${{u%.*}}${{u#*.}}\"; }}; t0=$(cs); n=0; \
while [ $(( $(cs) - t0 )) -lt {LOOP_CS} ]; do i=0; while [ $i -lt 200 ]; do i=$((i+1)); done; n=$((n+1)); done; \
echo \"{PREFIX}cpu=$1 rounds=$n\"'\n"
    );
    for c in 0..vcpus {
        cmd.push_str(&format!("taskset -c {c} sh -c \"$L\" loop {c} & "));
    }
    cmd.push_str("wait\n");
    cmd
}

/// The rounds of every loop line in `console` (`vcpus` of them), by vCPU.
pub fn parse(console: &str, vcpus: u32) -> Result<Vec<(u32, u64)>, String> {
    let mut out = Vec::new();
    for l in console.lines().map(|l| l.trim_end_matches('\r')) {
        let Some(rest) = l.strip_prefix(PREFIX) else {
            continue;
        };
        let field = |k: &str| {
            rest.split_whitespace()
                .find_map(|f| f.strip_prefix(k)?.strip_prefix('='))
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| format!("bad loop line `{l}`"))
        };
        out.push((field("cpu")? as u32, field("rounds")?));
    }
    out.sort_unstable();
    if out.len() != vcpus as usize || out.iter().any(|&(_, n)| n == 0) {
        return Err(format!(
            "expected {vcpus} loop lines with rounds, got {out:?}"
        ));
    }
    Ok(out)
}

/// Boots the guest with `vcpus` vCPUs on `host_cpus` host CPUs (beside the
/// authority partition with `authority`) and returns its loops' rounds.
pub fn measure(
    layout: &Layout,
    vcpus: u32,
    host_cpus: u32,
    authority: bool,
) -> Result<Vec<(u32, u64)>, Error> {
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.smp = Some(vcpus);
    o.host_cpus = Some(host_cpus);
    o.authority = authority;
    o.icount = true;
    o.system_disk = Some(layout.out.join(SYSTEM_DISK));
    o.guest_cmd = Some(guest_cmd(vcpus));
    if authority {
        // Beside the partition the host outlives its last guest (until the
        // shell's `host shutdown`), so QEMU does not exit: the run ends with
        // the guest's command.
        let script = layout.out.join("bench-sched-authority.script");
        std::fs::write(&script, "expect rayos-guest: cmd exit -?[0-9]+\\r?\\n\n")
            .map_err(|e| Error::io(format!("write {}", script.display()), e))?;
        o.script = Some(script);
    }
    let outcome = run_captured(layout, &o)?;
    let result = match outcome.ending {
        Ending::Exited(Some(0)) => parse(&outcome.console, vcpus),
        Ending::ScriptDone => match crate::linux_guest::parse_console(&outcome.console).cmd_exit {
            Some(0) => parse(&outcome.console, vcpus),
            other => Err(format!("the guest's command ended {other:?}")),
        },
        other => Err(format!("QEMU ended {other:?}")),
    };
    result.map_err(|why| {
        eprintln!(
            "\n--- last {CONSOLE_TAIL_LINES} console lines ---\n{}\n---",
            tail_lines(&outcome.console, CONSOLE_TAIL_LINES)
        );
        Error::step(
            format!("bench ({vcpus} vCPUs on {host_cpus} CPUs, authority {authority})"),
            why,
        )
    })
}

/// `cargo xtask bench sched`.
pub fn run_sched(layout: &Layout) -> Result<String, Error> {
    let alone = measure(layout, 1, 1, false)?;
    let shared = measure(layout, VCPUS, 1, false)?;
    let total = |v: &[(u32, u64)]| v.iter().map(|&(_, n)| n).sum::<u64>();
    let (a, s) = (total(&alone), total(&shared));
    let ratio = s as f64 / a as f64;
    println!("one host CPU, {LOOP_CS} cs of guest time per loop, -icount shift=0");
    println!("  1 vCPU (nothing shared): rounds {alone:?}, total {a}");
    println!("  {VCPUS} vCPUs (time-shared): rounds per vCPU {shared:?}, total {s}");
    Ok(format!(
        "sched alone_rounds={a} shared_rounds={s} throughput_ratio={ratio:.3}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_lines_parse_and_short_results_are_refused() {
        let log = "x\r\nsched-loop: cpu=1 rounds=7\r\n[el2 INFO ] y\nsched-loop: cpu=0 rounds=9\n";
        assert_eq!(parse(log, 2).unwrap(), [(0, 9), (1, 7)]);
        assert_eq!(parse("sched-loop: cpu=0 rounds=9\n", 1).unwrap(), [(0, 9)]);
        assert!(parse("sched-loop: cpu=0 rounds=9\n", 2).is_err());
        assert!(parse(
            "sched-loop: cpu=0 rounds=0\nsched-loop: cpu=1 rounds=3\n",
            2
        )
        .is_err());
        assert!(parse(
            "sched-loop: cpu=0 rounds=x\nsched-loop: cpu=1 rounds=3\n",
            2
        )
        .is_err());
    }

    #[test]
    fn the_command_pins_one_loop_per_vcpu() {
        let c = guest_cmd(VCPUS);
        for cpu in 0..VCPUS {
            assert!(c.contains(&format!("taskset -c {cpu} sh -c \"$L\" loop {cpu}")));
        }
        assert!(c.contains(&format!("-lt {LOOP_CS} ]")));
    }
}
