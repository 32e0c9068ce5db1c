//! `mmio-contention`: does one vCPU's slow device access hold up another vCPU's
//! access to a different device? The `bench-contention` guest (2 vCPUs, a 1 MiB
//! RAM disk) times reads of vCPU 0's GIC redistributor with the virtual counter
//! while vCPU 1 is off (for reference), while it runs idle in the guest (the
//! baseline) and while it issues 64 KiB virtio-blk requests back to back, and
//! prints `bench-contention: off_ticks=… idle_reads=… idle_ticks=… busy_reads=… busy_ticks=… requests=… ratio=…`.
//! QEMU runs without `-icount` so the two vCPUs run in parallel (MTTCG, one host
//! thread each); the figures are wall-clock and move with the host's load, so
//! only their ratio is reported (1.0: no interference).

use std::time::Duration;

use crate::build::build_guests;
use crate::error::Error;
use crate::run::{run_captured, Guest, RunOptions, CONSOLE_TAIL_LINES};
use crate::Layout;

/// The guest binary.
pub const GUEST: &str = "bench-contention";
/// Prefix of the guest's result line.
pub const PREFIX: &str = "bench-contention: ";
/// Timeout of the run.
pub const TIMEOUT: Duration = Duration::from_secs(300);

/// The figures the guest prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentionSample {
    /// Ticks of `idle_reads` reads with vCPU 1 off.
    pub off_ticks: u64,
    pub idle_reads: u64,
    pub idle_ticks: u64,
    pub busy_reads: u64,
    pub busy_ticks: u64,
    /// Disk requests vCPU 1 completed while the busy phase was timed.
    pub requests: u64,
}

impl ContentionSample {
    /// Ticks per read with vCPU 1 off.
    pub fn off_per_read(&self) -> f64 {
        self.off_ticks as f64 / self.idle_reads as f64
    }
    /// Ticks per read with vCPU 1 running idle.
    pub fn idle_per_read(&self) -> f64 {
        self.idle_ticks as f64 / self.idle_reads as f64
    }
    /// Ticks per read with vCPU 1 doing disk I/O.
    pub fn busy_per_read(&self) -> f64 {
        self.busy_ticks as f64 / self.busy_reads as f64
    }
    /// Busy-phase latency over idle-phase latency.
    pub fn ratio(&self) -> f64 {
        self.busy_per_read() / self.idle_per_read()
    }
}

/// Reads the last `bench-contention: off_ticks=…` line of a console log.
pub fn parse(console: &str) -> Result<ContentionSample, String> {
    let line = console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(PREFIX))
        .rfind(|rest| rest.starts_with("off_ticks="))
        .ok_or("no `bench-contention: off_ticks=…` line on the console")?;
    let field = |key: &str| -> Result<u64, String> {
        let value = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .ok_or_else(|| format!("`bench-contention:` line lacks {key}=: {line}"))?;
        value
            .parse()
            .map_err(|_| format!("`bench-contention:` {key}={value} is not a number"))
    };
    let s = ContentionSample {
        off_ticks: field("off_ticks")?,
        idle_reads: field("idle_reads")?,
        idle_ticks: field("idle_ticks")?,
        busy_reads: field("busy_reads")?,
        busy_ticks: field("busy_ticks")?,
        requests: field("requests")?,
    };
    if s.idle_reads == 0 || s.idle_ticks == 0 || s.busy_reads == 0 {
        return Err(format!("implausible sample: {s:?}"));
    }
    if s.requests == 0 {
        return Err(format!(
            "vCPU 1 completed no disk request while the reads were timed: {s:?}"
        ));
    }
    Ok(s)
}

/// The table and the headline line for `s`.
pub fn report(s: &ContentionSample) -> (String, String) {
    let table = format!(
        "bench mmio-contention (GICR reads of vCPU 0, virtual-counter ticks per read)\n\
         {:<28} {:>10.1}\n{:<28} {:>10.1}  ({} reads)\n{:<28} {:>10.1}  ({} reads, {} disk requests)\n{:<28} {:>10.2}",
        "vCPU 1 off (reference)",
        s.off_per_read(),
        "vCPU 1 idle (baseline)",
        s.idle_per_read(),
        s.idle_reads,
        "vCPU 1 doing disk I/O",
        s.busy_per_read(),
        s.busy_reads,
        s.requests,
        "ratio busy / idle",
        s.ratio()
    );
    let headline = format!(
        "mmio-contention off_ticks_per_read={:.1} idle_ticks_per_read={:.1} busy_ticks_per_read={:.1} requests={} ratio={:.2}",
        s.off_per_read(),
        s.idle_per_read(),
        s.busy_per_read(),
        s.requests,
        s.ratio()
    );
    (table, headline)
}

/// `cargo xtask bench mmio-contention`.
pub fn run_contention(layout: &Layout) -> Result<String, Error> {
    build_guests(layout, false)?;
    // The virtio-hostile guest's VM (a 1 MiB RAM disk) with this guest's image.
    let mut o = RunOptions::headless(Guest::VirtioHostile, TIMEOUT);
    o.kernel = Some(layout.guest_image(GUEST));
    o.smp = Some(2);
    o.quiet = false;
    let outcome = run_captured(layout, &o)?;
    match outcome.verdict().and_then(|()| parse(&outcome.console)) {
        Ok(sample) => {
            let (table, headline) = report(&sample);
            println!("{table}");
            Ok(headline)
        }
        Err(reason) => {
            eprintln!(
                "\n--- last {CONSOLE_TAIL_LINES} console lines ---\n{}\n---",
                outcome.console_tail(CONSOLE_TAIL_LINES)
            );
            Err(Error::step("bench mmio-contention", reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_line_parses_and_gives_the_ratio() {
        let log = "[el2 INFO ] vm custom\r\nbench-contention: off_ticks=4000 idle_reads=4000 idle_ticks=8000 busy_reads=2000 busy_ticks=6000 requests=7 ratio=1.50\r\n";
        let s = parse(log).unwrap();
        assert_eq!(
            s,
            ContentionSample {
                off_ticks: 4000,
                idle_reads: 4000,
                idle_ticks: 8000,
                busy_reads: 2000,
                busy_ticks: 6000,
                requests: 7
            }
        );
        let (table, headline) = report(&s);
        assert_eq!(
            headline,
            "mmio-contention off_ticks_per_read=1.0 idle_ticks_per_read=2.0 busy_ticks_per_read=3.0 requests=7 ratio=1.50"
        );
        assert!(table.contains("disk I/O"));
    }

    #[test]
    fn broken_lines_are_refused() {
        assert!(parse("nothing\n").is_err());
        assert!(parse("bench-contention: error: CPU_ON failed\n").is_err());
        let line = |idle_ticks, busy_reads, requests| {
            format!("bench-contention: off_ticks=1 idle_reads=1 idle_ticks={idle_ticks} busy_reads={busy_reads} busy_ticks=3 requests={requests}\n")
        };
        assert!(parse(&line(2, 1, 1)).is_ok());
        assert!(parse(&line(0, 1, 1)).is_err());
        assert!(parse(&line(2, 0, 1)).is_err());
        assert!(parse(&line(2, 1, 0))
            .unwrap_err()
            .contains("no disk request"));
        assert!(parse(
            "bench-contention: off_ticks=1 idle_reads=1 idle_ticks=2 busy_reads=1 requests=1\n"
        )
        .unwrap_err()
        .contains("busy_ticks"));
    }
}
