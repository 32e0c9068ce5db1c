//! Reading what a Linux guest printed from `/proc` out of a console log:
//! marked sections (`== NAME begin` … `== NAME end`), `/proc/interrupts`
//! tables, `/proc/cpuinfo` processor entries, `/proc/meminfo` fields, and the
//! `busy-loop:` lines of the SMP test's guest command.
//!
//! The console interleaves kernel messages (`[    1.23] …`) and hypervisor
//! lines (`[el2 …`) with the guest's output and ends lines with `\r\n`; both
//! are tolerated: lines starting with `[` are skipped inside sections.

use std::fmt;

/// Prefix of the line that opens a section: `== NAME begin`.
pub const SECTION_OPEN: &str = "== ";
/// Suffix of a section's opening line.
pub const SECTION_BEGIN: &str = " begin";
/// Suffix of a section's closing line.
pub const SECTION_END: &str = " end";
/// Prefix of the SMP test's busy-loop report lines.
pub const BUSY_PREFIX: &str = "busy-loop: ";
/// Description (last column) of the architected timer's `/proc/interrupts` row.
pub const ARCH_TIMER: &str = "arch_timer";
/// Row-name prefix of the inter-processor interrupt rows.
pub const IPI_ROW_PREFIX: &str = "IPI";

/// Why console text could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcError {
    /// No `== NAME begin` … `== NAME end` pair on the console.
    MissingSection(String),
    /// The `/proc/interrupts` header (`CPU0 CPU1 …`) is missing or malformed.
    BadHeader(String),
    /// A `/proc/interrupts` row has fewer per-CPU counts than the header has CPUs.
    ShortRow(String),
    /// A table has no row with this description or name.
    MissingRow(String),
    /// A `key=value` line lacks a key or has a non-numeric value.
    BadField { line: String, key: String },
    /// Two snapshots disagree on the CPU count.
    CpuCountChanged { before: usize, after: usize },
}

impl fmt::Display for ProcError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProcError::MissingSection(name) => write!(f, "no `== {name} begin/end` section"),
            ProcError::BadHeader(line) => write!(f, "bad /proc/interrupts header: {line:?}"),
            ProcError::ShortRow(line) => write!(f, "short /proc/interrupts row: {line:?}"),
            ProcError::MissingRow(what) => write!(f, "no /proc/interrupts row {what:?}"),
            ProcError::BadField { line, key } => write!(f, "no numeric {key}= in {line:?}"),
            ProcError::CpuCountChanged { before, after } => {
                write!(
                    f,
                    "CPU count changed between snapshots: {before} -> {after}"
                )
            }
        }
    }
}

/// The guest's lines between `== name begin` and the next `== name end` (the
/// first such section), `\r` stripped, kernel and hypervisor lines (starting
/// with `[`) left out.
pub fn section<'a>(console: &'a str, name: &str) -> Result<Vec<&'a str>, ProcError> {
    let open = format!("{SECTION_OPEN}{name}{SECTION_BEGIN}");
    let close = format!("{SECTION_OPEN}{name}{SECTION_END}");
    let mut lines = console.lines().map(|l| l.trim_end_matches('\r'));
    if !lines.any(|l| l == open) {
        return Err(ProcError::MissingSection(name.into()));
    }
    let mut body = Vec::new();
    for line in lines {
        if line == close {
            return Ok(body);
        }
        if !line.starts_with('[') {
            body.push(line);
        }
    }
    Err(ProcError::MissingSection(name.into()))
}

/// One `/proc/interrupts` row: `11:  444  420  GICv3 27 Level arch_timer`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IrqRow {
    /// The name before the colon (`11`, `IPI0`, `Err`).
    pub name: String,
    /// One count per CPU (rows such as `Err:` carry fewer; they are kept empty).
    pub counts: Vec<u64>,
    /// Everything after the counts (`GICv3  27 Level     arch_timer`).
    pub desc: String,
}

/// A `/proc/interrupts` snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interrupts {
    /// CPUs in the header.
    pub cpus: usize,
    pub rows: Vec<IrqRow>,
}

/// Parses a `/proc/interrupts` table (header line first; blank lines ignored).
pub fn parse_interrupts(lines: &[&str]) -> Result<Interrupts, ProcError> {
    let mut lines = lines.iter().copied().filter(|l| !l.trim().is_empty());
    let header = lines
        .next()
        .ok_or_else(|| ProcError::BadHeader(String::new()))?;
    let cpus = header.split_whitespace().count();
    let sequential = header
        .split_whitespace()
        .enumerate()
        .all(|(i, c)| c.strip_prefix("CPU").and_then(|n| n.parse().ok()) == Some(i));
    if cpus == 0 || !sequential {
        return Err(ProcError::BadHeader(header.into()));
    }
    let mut rows = Vec::new();
    for line in lines {
        let (name, rest) = line
            .split_once(':')
            .ok_or_else(|| ProcError::ShortRow(line.into()))?;
        let name = name.trim().to_string();
        let mut words = rest.split_whitespace().peekable();
        let mut counts = Vec::new();
        while counts.len() < cpus {
            match words.peek().and_then(|w| w.parse::<u64>().ok()) {
                Some(n) => {
                    counts.push(n);
                    words.next();
                }
                None => break,
            }
        }
        // `Err:`/`MIS:` carry one global count; every other row one per CPU.
        let global = matches!(name.as_str(), "Err" | "MIS");
        if counts.len() < cpus && !global {
            return Err(ProcError::ShortRow(line.into()));
        }
        if global {
            counts.clear();
        }
        rows.push(IrqRow {
            name,
            counts,
            desc: words.collect::<Vec<_>>().join(" "),
        });
    }
    Ok(Interrupts { cpus, rows })
}

impl Interrupts {
    /// Per-CPU counts of the row whose description ends with `desc`.
    pub fn counts_of(&self, desc: &str) -> Result<&[u64], ProcError> {
        self.rows
            .iter()
            .find(|r| r.desc.ends_with(desc) && r.counts.len() == self.cpus)
            .map(|r| r.counts.as_slice())
            .ok_or_else(|| ProcError::MissingRow(desc.into()))
    }

    /// The architected timer's per-CPU counts.
    pub fn timer(&self) -> Result<&[u64], ProcError> {
        self.counts_of(ARCH_TIMER)
    }

    /// IPIs received per CPU, summed over every `IPIn` row.
    pub fn ipis_per_cpu(&self) -> Vec<u64> {
        let mut sum = vec![0; self.cpus];
        for row in self
            .rows
            .iter()
            .filter(|r| r.name.starts_with(IPI_ROW_PREFIX))
        {
            for (s, c) in sum.iter_mut().zip(&row.counts) {
                *s += c;
            }
        }
        sum
    }

    /// `(IPI row description, per-CPU counts)` of every IPI row with a non-zero count.
    pub fn ipi_rows_delivered(&self) -> Vec<(&str, &[u64])> {
        self.rows
            .iter()
            .filter(|r| r.name.starts_with(IPI_ROW_PREFIX) && r.counts.iter().any(|c| *c > 0))
            .map(|r| (r.desc.as_str(), r.counts.as_slice()))
            .collect()
    }
}

/// `after - before` per CPU (saturating: counters never go backwards, and a
/// bogus decrease reads as no increase).
pub fn per_cpu_delta(before: &[u64], after: &[u64]) -> Result<Vec<u64>, ProcError> {
    if before.len() != after.len() {
        return Err(ProcError::CpuCountChanged {
            before: before.len(),
            after: after.len(),
        });
    }
    Ok(before
        .iter()
        .zip(after)
        .map(|(b, a)| a.saturating_sub(*b))
        .collect())
}

/// `processor : N` entries of a `/proc/cpuinfo` dump.
pub fn processor_count(cpuinfo: &[&str]) -> usize {
    cpuinfo
        .iter()
        .filter(|l| {
            l.split_once(':')
                .is_some_and(|(k, v)| k.trim() == "processor" && v.trim().parse::<u32>().is_ok())
        })
        .count()
}

/// A `/proc/meminfo` field in KiB (`MemTotal:  233000 kB` → 233000).
pub fn meminfo_kib(meminfo: &[&str], field: &str) -> Option<u64> {
    meminfo.iter().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() != field {
            return None;
        }
        let mut words = v.split_whitespace();
        let n = words.next()?.parse().ok()?;
        matches!(words.next(), Some("kB") | None).then_some(n)
    })
}

/// One `busy-loop: cpu=… ran_on=… rounds=… start_cs=… end_cs=…` report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusyLoop {
    /// The CPU the loop was pinned to.
    pub cpu: u32,
    /// The CPU its last command ran on (field 39 of `/proc/self/stat`).
    pub ran_on: u32,
    /// Busy/sleep rounds completed.
    pub rounds: u64,
    /// Guest uptime at the start and end, in centiseconds.
    pub start_cs: u64,
    pub end_cs: u64,
}

impl BusyLoop {
    /// Guest time the loop ran, in seconds.
    pub fn elapsed_s(&self) -> f64 {
        self.end_cs.saturating_sub(self.start_cs) as f64 / 100.0
    }
}

/// Every `busy-loop:` report on the console, in order.
pub fn busy_loops(console: &str) -> Result<Vec<BusyLoop>, ProcError> {
    console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter_map(|l| l.strip_prefix(BUSY_PREFIX))
        .map(|rest| {
            let field = |key: &str| -> Result<u64, ProcError> {
                rest.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| ProcError::BadField {
                        line: rest.into(),
                        key: key.into(),
                    })
            };
            let cpu_field = |key: &str| -> Result<u32, ProcError> {
                u32::try_from(field(key)?).map_err(|_| ProcError::BadField {
                    line: rest.into(),
                    key: key.into(),
                })
            };
            Ok(BusyLoop {
                cpu: cpu_field("cpu")?,
                ran_on: cpu_field("ran_on")?,
                rounds: field("rounds")?,
                start_cs: field("start_cs")?,
                end_cs: field("end_cs")?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SNAPSHOT: &str = "\
== irq1 begin\r
           CPU0       CPU1       \r
 11:        444        420     GICv3  27 Level     arch_timer\r
 13:          0          0     GICv3  33 Level     uart-pl011\r
[    3.1] random: crng init done\r
IPI0:        15         66       Rescheduling interrupts\r
IPI1:       164        123       Function call interrupts\r
IPI2:         0          0       CPU stop interrupts\r
Err:          0\r
== irq1 end\r
";

    #[test]
    fn interrupts_table_parses_with_kernel_lines_interleaved() {
        let lines = section(SNAPSHOT, "irq1").unwrap();
        let t = parse_interrupts(&lines).unwrap();
        assert_eq!(t.cpus, 2);
        assert_eq!(t.rows.len(), 6);
        assert_eq!(t.timer().unwrap(), [444, 420]);
        assert_eq!(t.counts_of("uart-pl011").unwrap(), [0, 0]);
        assert_eq!(t.ipis_per_cpu(), [179, 189]);
        let delivered = t.ipi_rows_delivered();
        assert_eq!(delivered.len(), 2);
        assert_eq!(delivered[0].0, "Rescheduling interrupts");
        let err = t.rows.iter().find(|r| r.name == "Err").unwrap();
        assert!(err.counts.is_empty());
        assert_eq!(
            t.counts_of("virtio0"),
            Err(ProcError::MissingRow("virtio0".into()))
        );
    }

    #[test]
    fn broken_tables_are_refused() {
        assert!(matches!(
            parse_interrupts(&["CPU0 CPU2", " 11: 1 2 x"]),
            Err(ProcError::BadHeader(_))
        ));
        assert!(matches!(
            parse_interrupts(&[]),
            Err(ProcError::BadHeader(_))
        ));
        assert!(matches!(
            parse_interrupts(&["CPU0 CPU1", " 11: 5 GICv3 27 Level arch_timer"]),
            Err(ProcError::ShortRow(_))
        ));
        assert!(matches!(
            parse_interrupts(&["CPU0", "garbage"]),
            Err(ProcError::ShortRow(_))
        ));
        let one = parse_interrupts(&["   CPU0", " 11: 7 GICv3 27 Level arch_timer"]).unwrap();
        assert_eq!((one.cpus, one.timer().unwrap()), (1, &[7][..]));
    }

    #[test]
    fn sections_need_both_markers_and_the_first_one_wins() {
        let log = "== a begin\nx\n== a end\n== a begin\ny\n== a end\n";
        assert_eq!(section(log, "a").unwrap(), ["x"]);
        assert_eq!(
            section("== a begin\nx\n", "a"),
            Err(ProcError::MissingSection("a".into()))
        );
        assert!(section(log, "b").is_err());
        // Only whole lines count as markers.
        assert!(section("echo == a begin\n== a end\n", "a").is_err());
    }

    #[test]
    fn deltas_are_per_cpu() {
        assert_eq!(per_cpu_delta(&[1, 5], &[4, 5]).unwrap(), [3, 0]);
        assert_eq!(per_cpu_delta(&[9], &[4]).unwrap(), [0]);
        assert_eq!(
            per_cpu_delta(&[1, 2], &[1]),
            Err(ProcError::CpuCountChanged {
                before: 2,
                after: 1
            })
        );
    }

    #[test]
    fn cpuinfo_and_meminfo_fields() {
        let cpuinfo = [
            "processor\t: 0",
            "BogoMIPS\t: 125.00",
            "",
            "processor\t: 1",
            "Features\t: fp processor",
            "model name: processor : 7",
        ];
        assert_eq!(processor_count(&cpuinfo), 2);
        let meminfo = [
            "MemTotal:         228512 kB",
            "MemFree:          200000 kB",
            "Bad: x kB",
        ];
        assert_eq!(meminfo_kib(&meminfo, "MemTotal"), Some(228_512));
        assert_eq!(meminfo_kib(&meminfo, "MemFree"), Some(200_000));
        assert_eq!(meminfo_kib(&meminfo, "Bad"), None);
        assert_eq!(meminfo_kib(&meminfo, "SwapTotal"), None);
    }

    #[test]
    fn busy_loop_reports_parse() {
        let log = "busy-loop: cpu=1 ran_on=1 rounds=13 start_cs=333 end_cs=1373\r\n\
[   9.0] x\nbusy-loop: cpu=0 ran_on=0 rounds=12 start_cs=332 end_cs=1381\n";
        let loops = busy_loops(log).unwrap();
        assert_eq!(loops.len(), 2);
        assert_eq!(
            loops[0],
            BusyLoop {
                cpu: 1,
                ran_on: 1,
                rounds: 13,
                start_cs: 333,
                end_cs: 1373
            }
        );
        assert!((loops[1].elapsed_s() - 10.49).abs() < 1e-9);
        assert!(matches!(
            busy_loops("busy-loop: cpu=0 ran_on=x rounds=1 start_cs=1 end_cs=2\n"),
            Err(ProcError::BadField { key, .. }) if key == "ran_on"
        ));
        assert!(busy_loops("busy-loop: cpu=0 rounds=1\n").is_err());
        assert_eq!(busy_loops("nothing\n").unwrap(), []);
    }
}
