//! `sched`: what time-sharing physical CPUs costs a CPU-bound guest. The Linux
//! guest (2 vCPUs) runs one pinned shell loop per vCPU for a fixed span of its
//! own time and prints how many rounds each made, twice in the same run: on a
//! host with one CPU per vCPU (the baseline: no vCPU ever waits for a CPU) and
//! on a host with one CPU (the two vCPUs share it in 10 ms slices). Both runs
//! are under `-icount shift=0`: guest time is the instructions the emulated
//! CPUs retired, so the host's load does not move the figures, and QEMU then
//! runs the emulated CPUs one at a time — the two-CPU host retires no more
//! instructions per guest second than the one-CPU host. The headline
//! `throughput_ratio` is the total rounds shared over the total rounds
//! dedicated: 1.0 means the scheduler (its switches, its slice timer, the
//! idle vCPU's WFI blocking) costs nothing.

use std::time::Duration;

use crate::error::{tail_lines, Error};
use crate::run::{run_captured, Ending, Guest, RunOptions, CONSOLE_TAIL_LINES};
use crate::Layout;

/// vCPUs of the guest.
pub const VCPUS: u32 = 2;
/// Guest time each loop runs, in centiseconds of the guest's uptime.
pub const LOOP_CS: u32 = 300;
/// Budget of one boot.
pub const TIMEOUT: Duration = Duration::from_secs(600);
/// The bench's own system disk, under the workspace's `target/`.
pub const SYSTEM_DISK: &str = "bench-sched-system.img";
/// Prefix of a loop's result line.
pub const PREFIX: &str = "sched-loop: ";

/// The guest command: one pinned loop per vCPU, started together, each counting
/// rounds of fixed shell work for [`LOOP_CS`] of guest time.
pub fn guest_cmd() -> String {
    let mut cmd = format!(
        "L='cs() {{ read u _ < /proc/uptime; echo \"${{u%.*}}${{u#*.}}\"; }}; t0=$(cs); n=0; \
while [ $(( $(cs) - t0 )) -lt {LOOP_CS} ]; do i=0; while [ $i -lt 200 ]; do i=$((i+1)); done; n=$((n+1)); done; \
echo \"{PREFIX}cpu=$1 rounds=$n\"'\n"
    );
    for c in 0..VCPUS {
        cmd.push_str(&format!("taskset -c {c} sh -c \"$L\" loop {c} & "));
    }
    cmd.push_str("wait\n");
    cmd
}

/// The rounds of every loop line in `console`, by vCPU.
pub fn parse(console: &str) -> Result<Vec<(u32, u64)>, String> {
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
    if out.len() != VCPUS as usize || out.iter().any(|&(_, n)| n == 0) {
        return Err(format!(
            "expected {VCPUS} loop lines with rounds, got {out:?}"
        ));
    }
    Ok(out)
}

/// Boots the guest on `host_cpus` CPUs and returns its loops' rounds.
fn measure(layout: &Layout, host_cpus: u32) -> Result<Vec<(u32, u64)>, Error> {
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.smp = Some(VCPUS);
    o.host_cpus = Some(host_cpus);
    o.icount = true;
    o.system_disk = Some(layout.out.join(SYSTEM_DISK));
    o.guest_cmd = Some(guest_cmd());
    let outcome = run_captured(layout, &o)?;
    let result = match outcome.ending {
        Ending::Exited(Some(0)) => parse(&outcome.console),
        other => Err(format!("QEMU ended {other:?}")),
    };
    result.map_err(|why| {
        eprintln!(
            "\n--- last {CONSOLE_TAIL_LINES} console lines ---\n{}\n---",
            tail_lines(&outcome.console, CONSOLE_TAIL_LINES)
        );
        Error::step(format!("bench sched ({host_cpus} host CPUs)"), why)
    })
}

/// `cargo xtask bench sched`.
pub fn run_sched(layout: &Layout) -> Result<String, Error> {
    let dedicated = measure(layout, VCPUS)?;
    let shared = measure(layout, 1)?;
    let total = |v: &[(u32, u64)]| v.iter().map(|&(_, n)| n).sum::<u64>();
    let (d, s) = (total(&dedicated), total(&shared));
    let ratio = s as f64 / d as f64;
    println!("{VCPUS} vCPUs, {LOOP_CS} cs of guest time per loop, -icount shift=0");
    println!("  {VCPUS} host CPUs (one per vCPU): rounds per vCPU {dedicated:?}, total {d}");
    println!("  1 host CPU (time-shared):    rounds per vCPU {shared:?}, total {s}");
    Ok(format!(
        "sched dedicated_rounds={d} shared_rounds={s} throughput_ratio={ratio:.3}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_lines_parse_and_short_results_are_refused() {
        let log = "x\r\nsched-loop: cpu=1 rounds=7\r\n[el2 INFO ] y\nsched-loop: cpu=0 rounds=9\n";
        assert_eq!(parse(log).unwrap(), [(0, 9), (1, 7)]);
        assert!(parse("sched-loop: cpu=0 rounds=9\n").is_err());
        assert!(parse("sched-loop: cpu=0 rounds=0\nsched-loop: cpu=1 rounds=3\n").is_err());
        assert!(parse("sched-loop: cpu=0 rounds=x\nsched-loop: cpu=1 rounds=3\n").is_err());
    }

    #[test]
    fn the_command_pins_one_loop_per_vcpu() {
        let c = guest_cmd();
        for cpu in 0..VCPUS {
            assert!(c.contains(&format!("taskset -c {cpu} sh -c \"$L\" loop {cpu}")));
        }
        assert!(c.contains(&format!("-lt {LOOP_CS} ]")));
    }
}
