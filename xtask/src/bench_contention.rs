//! `mmio-contention`: does one vCPU's disk I/O hold up another vCPU's access to a
//! different device? The `bench-contention` guest (2 vCPUs) runs as the autostart VM
//! of a fresh system disk, so its virtio-blk disk is an extent of the system disk
//! and its requests take a guest disk's real path (asynchronous, completed by the
//! host disk's interrupt). vCPU 0 times reads of its GIC redistributor with the
//! virtual counter while vCPU 1 is off (for reference), then over several rounds
//! alternately while vCPU 1 runs idle in the guest (the baseline) and while it
//! issues 64 KiB virtio-blk requests back to back (a busy phase lasts until 200
//! requests overlapped it, and has at least as many reads as an idle one). QEMU runs without `-icount` so
//! the two vCPUs run in parallel (MTTCG, one host thread each); the figures are
//! wall-clock and move with the host's load. The headline `ratio` compares the
//! typical read: busy-phase median latency over idle-phase median latency, the
//! median of the rounds (1.0: no interference). A lock vCPU 0 waits for or an
//! interrupt that stops it shifts that median; a host thread of the emulator's disk
//! taking a turn on a small host's CPUs mostly lands in the tail and the mean, which
//! are printed beside it (`mean_ratio`, `p99_ratio`, also medians of the rounds).

use std::time::{Duration, Instant};

use crate::bench_boot::median;
use crate::build::build_guests;
use crate::error::{tail_lines, Error};
use crate::qemu::describe_exit;
use crate::run::{prepare, Guest, RunOptions, CONSOLE_TAIL_LINES};
use crate::session::Session;
use crate::sysdisk::{self, DesiredVm};
use crate::Layout;

/// The guest binary.
pub const GUEST: &str = "bench-contention";
/// Prefix of the guest's result line.
pub const PREFIX: &str = "bench-contention: ";
/// Prefix of the guest's line for one round.
pub const ROUND_PREFIX: &str = "bench-contention-round: ";
/// Timeout of the run.
pub const TIMEOUT: Duration = Duration::from_secs(300);
/// The bench's own system disk, under the workspace's `target/` (recreated each run).
pub const SYSTEM_DISK: &str = "bench-contention-system.img";
/// The VM's (empty) initrd, under the workspace's `target/`.
pub const EMPTY_INITRD: &str = "bench-contention-initrd";
/// Size of the VM's guest disk on the system disk.
pub const GUEST_DISK_SIZE: u64 = 16 << 20;
/// The latency ratio (busy / idle) the hypervisor aims for.
pub const RATIO_TARGET: f64 = 1.2;

/// One round's figures: as many reads timed with vCPU 1 idle as with it doing I/O,
/// each phase's total and its single reads' median and 99th percentile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    pub idle_reads: u64,
    pub idle_ticks: u64,
    pub idle_p50: u64,
    pub idle_p99: u64,
    pub busy_reads: u64,
    pub busy_ticks: u64,
    pub busy_p50: u64,
    pub busy_p99: u64,
    /// Disk requests vCPU 1 completed while the busy phase was timed.
    pub requests: u64,
}

impl Round {
    /// Mean ticks per read with vCPU 1 running idle.
    pub fn idle_per_read(&self) -> f64 {
        self.idle_ticks as f64 / self.idle_reads as f64
    }
    /// Mean ticks per read with vCPU 1 doing disk I/O.
    pub fn busy_per_read(&self) -> f64 {
        self.busy_ticks as f64 / self.busy_reads as f64
    }
    /// The typical read: median latency busy over median latency idle.
    pub fn ratio(&self) -> f64 {
        self.busy_p50 as f64 / self.idle_p50 as f64
    }
    /// Mean latency busy over mean latency idle: includes every time vCPU 0's host
    /// thread was not running (on a small host, the emulator's disk threads take
    /// turns with it), which the median leaves out.
    pub fn mean_ratio(&self) -> f64 {
        self.busy_per_read() / self.idle_per_read()
    }
    /// 99th-percentile latency busy over idle: the slow reads.
    pub fn p99_ratio(&self) -> f64 {
        self.busy_p99 as f64 / self.idle_p99 as f64
    }
}

/// The figures the guest prints.
#[derive(Debug, Clone, PartialEq)]
pub struct ContentionSample {
    /// Ticks of `reads` reads with vCPU 1 off.
    pub off_ticks: u64,
    pub reads: u64,
    pub rounds: Vec<Round>,
}

impl ContentionSample {
    /// Ticks per read with vCPU 1 off.
    pub fn off_per_read(&self) -> f64 {
        self.off_ticks as f64 / self.reads as f64
    }
    fn median_of(&self, f: fn(&Round) -> f64) -> f64 {
        let v: Vec<f64> = self.rounds.iter().map(f).collect();
        median(&v).unwrap_or(f64::NAN)
    }
    /// Median over the rounds of the ticks per read with vCPU 1 idle.
    pub fn idle_per_read(&self) -> f64 {
        self.median_of(Round::idle_per_read)
    }
    /// Median over the rounds of the ticks per read with vCPU 1 doing disk I/O.
    pub fn busy_per_read(&self) -> f64 {
        self.median_of(Round::busy_per_read)
    }
    /// Median over the rounds of the disk requests a busy phase overlapped.
    pub fn requests(&self) -> f64 {
        self.median_of(|r| r.requests as f64)
    }
    /// Median of the rounds' ratios of median latencies (the headline).
    pub fn ratio(&self) -> f64 {
        self.median_of(Round::ratio)
    }
    /// Median of the rounds' ratios of mean latencies.
    pub fn mean_ratio(&self) -> f64 {
        self.median_of(Round::mean_ratio)
    }
    /// Median of the rounds' ratios of 99th-percentile latencies.
    pub fn p99_ratio(&self) -> f64 {
        self.median_of(Round::p99_ratio)
    }
    /// Smallest and largest round ratio.
    pub fn ratio_range(&self) -> (f64, f64) {
        let v = self.rounds.iter().map(Round::ratio);
        (
            v.clone().fold(f64::INFINITY, f64::min),
            v.fold(f64::NEG_INFINITY, f64::max),
        )
    }
}

/// `key=value` fields of a line, as numbers.
fn field(line: &str, key: &str) -> Result<u64, String> {
    let value = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
        .ok_or_else(|| format!("`bench-contention` line lacks {key}=: {line}"))?;
    value
        .parse()
        .map_err(|_| format!("`bench-contention` {key}={value} is not a number"))
}

/// Reads the guest's rounds and its closing `bench-contention: off_ticks=…` line.
pub fn parse(console: &str) -> Result<ContentionSample, String> {
    if let Some(l) = console
        .lines()
        .find(|l| l.contains("bench-contention: error"))
    {
        return Err(l.trim_end().to_string());
    }
    let line = console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(PREFIX))
        .rfind(|rest| rest.starts_with("off_ticks="))
        .ok_or("no `bench-contention: off_ticks=…` line on the console")?;
    let (off_ticks, reads, announced) = (
        field(line, "off_ticks")?,
        field(line, "reads")?,
        field(line, "rounds")?,
    );
    let mut rounds = Vec::new();
    for rest in console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(ROUND_PREFIX))
    {
        let r = Round {
            idle_reads: field(rest, "idle_reads")?,
            idle_ticks: field(rest, "idle_ticks")?,
            idle_p50: field(rest, "idle_p50")?,
            idle_p99: field(rest, "idle_p99")?,
            busy_reads: field(rest, "busy_reads")?,
            busy_ticks: field(rest, "busy_ticks")?,
            busy_p50: field(rest, "busy_p50")?,
            busy_p99: field(rest, "busy_p99")?,
            requests: field(rest, "requests")?,
        };
        if r.idle_reads == 0
            || r.idle_ticks == 0
            || r.busy_reads == 0
            || r.idle_p50 == 0
            || r.idle_p99 == 0
        {
            return Err(format!("implausible round: {rest}"));
        }
        if r.requests == 0 {
            return Err(format!(
                "vCPU 1 completed no disk request while the reads were timed: {rest}"
            ));
        }
        rounds.push(r);
    }
    if rounds.is_empty() || rounds.len() as u64 != announced || reads == 0 {
        return Err(format!(
            "{} round line(s), the guest announced {announced} (reads={reads})",
            rounds.len()
        ));
    }
    Ok(ContentionSample {
        off_ticks,
        reads,
        rounds,
    })
}

/// The table and the headline line for `s`.
pub fn report(s: &ContentionSample) -> (String, String) {
    let (lo, hi) = s.ratio_range();
    let mut table = format!(
        "bench mmio-contention (GICR reads of vCPU 0, virtual-counter ticks per read; {} rounds of {} reads per phase)\n{:<7} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>7} {:>6} {:>6}\n",
        s.rounds.len(),
        s.reads,
        "round",
        "idle p50",
        "busy p50",
        "idle p99",
        "busy p99",
        "idle avg",
        "busy avg",
        "requests",
        "ratio",
        "avg",
        "p99"
    );
    for (i, r) in s.rounds.iter().enumerate() {
        table += &format!(
            "{i:<7} {:>9} {:>9} {:>9} {:>9} {:>9.1} {:>9.1} {:>9} {:>7.2} {:>6.2} {:>6.2}\n",
            r.idle_p50,
            r.busy_p50,
            r.idle_p99,
            r.busy_p99,
            r.idle_per_read(),
            r.busy_per_read(),
            r.requests,
            r.ratio(),
            r.mean_ratio(),
            r.p99_ratio()
        );
    }
    table += &format!(
        "median: ratio of median latencies {:.2} (rounds {lo:.2}-{hi:.2}), of mean latencies {:.2}, of 99th percentiles {:.2}; {:.0} requests per busy phase; vCPU 1 off: {:.1} ticks per read",
        s.ratio(),
        s.mean_ratio(),
        s.p99_ratio(),
        s.requests(),
        s.off_per_read()
    );
    let headline = format!(
        "mmio-contention off_ticks_per_read={:.1} idle_ticks_per_read={:.1} busy_ticks_per_read={:.1} requests={:.0} rounds={} min_ratio={lo:.2} max_ratio={hi:.2} mean_ratio={:.2} p99_ratio={:.2} ratio={:.2}",
        s.off_per_read(),
        s.idle_per_read(),
        s.busy_per_read(),
        s.requests(),
        s.rounds.len(),
        s.mean_ratio(),
        s.p99_ratio(),
        s.ratio()
    );
    (table, headline)
}

/// `cargo xtask bench mmio-contention`: the guest runs as the autostart VM of a
/// fresh system disk, so vCPU 1's requests go the way a guest disk's do (an extent
/// of the system disk, completed by the host disk's interrupt).
pub fn run_contention(layout: &Layout) -> Result<String, Error> {
    build_guests(layout, false)?;
    let mut o = RunOptions::headless(Guest::VirtioHostile, TIMEOUT);
    o.kernel = Some(layout.guest_image(GUEST));
    o.smp = Some(2);
    let prepared = prepare(layout, &o)?;
    let initrd = layout.out.join(EMPTY_INITRD);
    std::fs::write(&initrd, []).map_err(|e| Error::io(format!("write {}", initrd.display()), e))?;
    let disk = layout.out.join(SYSTEM_DISK);
    let want = DesiredVm {
        name: GUEST.into(),
        vcpus: prepared.vm.vcpus,
        mem: prepared.vm.mem,
        cmdline: String::new(),
        kernel: prepared.vm.kernel.clone(),
        initrd,
        disk_size: GUEST_DISK_SIZE,
        device_model: registry::DeviceModel::LinuxDt,
        msi: registry::MsiController::V2m,
    };
    let created = sysdisk::ensure(&disk, true, &want)?;
    eprintln!("xtask: {}", created.describe(&want.name));
    let line = sysdisk::qemu_line(&prepared.qemu, &disk);
    eprintln!("xtask: bench mmio-contention: {}", line.display());
    let mut session = Session::spawn(line.command(), false, TIMEOUT)
        .map_err(|e| Error::step("bench mmio-contention: start QEMU", e.to_string()))?;
    let code = session.wait_exit(Instant::now() + TIMEOUT);
    session.kill();
    let console = session.output().to_string();
    let outcome = match code {
        Some(Some(0)) => parse(&console),
        Some(other) => Err(describe_exit(other)),
        None => Err(format!("timed out after {} s", TIMEOUT.as_secs())),
    };
    match outcome {
        Ok(sample) => {
            let (table, headline) = report(&sample);
            println!("{table}");
            if sample.ratio() > RATIO_TARGET {
                println!(
                    "note: ratio {:.2} is above the target {RATIO_TARGET}",
                    sample.ratio()
                );
            }
            Ok(headline)
        }
        Err(reason) => {
            eprintln!(
                "\n--- last {CONSOLE_TAIL_LINES} console lines ---\n{}\n---",
                tail_lines(&console, CONSOLE_TAIL_LINES)
            );
            Err(Error::step("bench mmio-contention", reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "[el2 INFO ] vm custom\r\n\
bench-contention-round: round=0 idle_reads=100 idle_ticks=200 idle_p50=2 idle_p99=10 busy_reads=100 busy_ticks=300 busy_p50=3 busy_p99=20 requests=7\r\n\
bench-contention-round: round=1 idle_reads=100 idle_ticks=400 idle_p50=4 idle_p99=10 busy_reads=100 busy_ticks=400 busy_p50=4 busy_p99=10 requests=9\r\n\
bench-contention-round: round=2 idle_reads=100 idle_ticks=200 idle_p50=2 idle_p99=10 busy_reads=100 busy_ticks=220 busy_p50=2 busy_p99=30 requests=8\r\n\
bench-contention: off_ticks=100 reads=100 rounds=3\r\n";

    #[test]
    fn the_rounds_parse_and_the_ratios_are_medians_over_rounds() {
        let s = parse(LOG).unwrap();
        assert_eq!((s.off_ticks, s.reads, s.rounds.len()), (100, 100, 3));
        assert_eq!(
            s.rounds[1],
            Round {
                idle_reads: 100,
                idle_ticks: 400,
                idle_p50: 4,
                idle_p99: 10,
                busy_reads: 100,
                busy_ticks: 400,
                busy_p50: 4,
                busy_p99: 10,
                requests: 9
            }
        );
        // Median-latency ratios 1.5, 1.0, 1.0; mean-latency ratios 1.5, 1.0, 1.1;
        // 99th-percentile ratios 2, 1, 3: each headline figure is the median of
        // the rounds', not a mean nor a ratio of medians.
        assert!((s.ratio() - 1.0).abs() < 1e-9);
        assert!((s.mean_ratio() - 1.1).abs() < 1e-9);
        assert!((s.p99_ratio() - 2.0).abs() < 1e-9);
        assert_eq!(s.ratio_range(), (1.0, 1.5));
        let (table, headline) = report(&s);
        assert_eq!(
            headline,
            "mmio-contention off_ticks_per_read=1.0 idle_ticks_per_read=2.0 busy_ticks_per_read=3.0 requests=8 rounds=3 min_ratio=1.00 max_ratio=1.50 mean_ratio=1.10 p99_ratio=2.00 ratio=1.00"
        );
        assert!(table.contains("median"));
    }

    #[test]
    fn broken_logs_are_refused() {
        assert!(parse("nothing\n").is_err());
        assert!(parse("bench-contention: error: CPU_ON failed\n")
            .unwrap_err()
            .contains("CPU_ON"));
        // A round missing.
        let short = LOG.replace("rounds=3", "rounds=4");
        assert!(parse(&short).unwrap_err().contains("announced 4"));
        // A busy phase that overlapped no request measures nothing.
        let idle = LOG.replace("requests=9", "requests=0");
        assert!(parse(&idle).unwrap_err().contains("no disk request"));
        let zero = LOG.replace("idle_ticks=400", "idle_ticks=0");
        assert!(parse(&zero).is_err());
        let missing = LOG.replace(" busy_ticks=300", "");
        assert!(parse(&missing).unwrap_err().contains("busy_ticks"));
        let no_median = LOG.replace(" busy_p50=3", "");
        assert!(parse(&no_median).unwrap_err().contains("busy_p50"));
    }
}
