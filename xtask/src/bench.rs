//! `cargo xtask bench NAME`: a registry of benchmarks. Each boots its guest,
//! reads the figures the guest prints, and reports costs against a baseline
//! measured in the same run (never bare absolute times), ending with one line
//! of `name=value` headline figures.
//!
//! `exits`: the `bench-exits` guest runs three loops of the same length under
//! `-icount shift=0` (instructions retired are then exact): an empty loop, a
//! loop with one HVC round trip, a loop with one MMIO read, and prints
//! `bench-exits: iterations=… empty_loop_insns=… hvc_loop_insns=… mmio_loop_insns=…`.

use std::time::Duration;

use crate::error::Error;
use crate::run::{run_captured, Guest, RunOptions, CONSOLE_TAIL_LINES};
use crate::Layout;

/// One benchmark.
#[derive(Debug)]
pub struct Bench {
    pub name: &'static str,
    pub about: &'static str,
    /// Runs it; returns the headline line.
    pub run: fn(&Layout) -> Result<String, Error>,
}

/// Every benchmark `cargo xtask bench` knows.
pub const BENCHES: &[Bench] = &[
    Bench {
        name: "exits",
        about: "instructions per HVC round trip and per trapped MMIO read, against an empty loop (bench-exits guest, -icount)",
        run: run_exits,
    },
    Bench {
        name: "mmio-contention",
        about: "GIC redistributor read latency of vCPU 0 while vCPU 1 does virtio-blk I/O, against vCPU 1 idle (bench-contention guest, 2 vCPUs, MTTCG)",
        run: crate::bench_contention::run_contention,
    },
    Bench {
        name: "boot",
        about: "Linux boot to init under the hypervisor against the same kernel started directly by QEMU (median of 5 pairs)",
        run: crate::bench_boot::run_boot,
    },
    Bench {
        name: "uefi",
        about: "Debian's AAVMF from QEMU start to its UEFI shell prompt under the hypervisor (uefi-acpi, boot bundle) against the same firmware on QEMU's own virt (median of 3 pairs)",
        run: crate::bench_uefi::run_uefi,
    },
    Bench {
        name: "disk",
        about: "1 GiB (4 passes over the 256 MiB disk) of O_DIRECT sequential write and read in the Linux guest on its hypervisor-backed disk against QEMU's own virtio-blk (median of 5 rounds, fresh images)",
        run: crate::bench_disk::run_disk,
    },
    Bench {
        name: "nvme",
        about: "O_DIRECT sequential (128 MiB) and 4 KiB random (qd1, qd32) read/write in the Linux guest on the hypervisor's NVMe over its system-disk extent (--nvme system) against QEMU's own NVMe to a bare guest (median of 3 rounds, fresh images)",
        run: crate::bench_nvme::run_nvme,
    },
    Bench {
        name: "sched",
        about: "total throughput of two pinned CPU-bound loops in a 2-vCPU Linux guest time-sharing a 1-CPU host against one loop in a 1-vCPU guest on it, -icount",
        run: crate::bench_sched::run_sched,
    },
    Bench {
        name: "input",
        about: "QMP pointer moves to the Linux guest's evdev through the hypervisor against QEMU's own virtio-tablet to a bare guest (guest-clock bracket, median of 3 alternating rounds of 20 moves each), and the authority partition's cost: two pinned CPU-bound loops in a 2-vCPU guest on a 2-CPU host with the partition beside it against without; all -icount",
        run: crate::bench_input::run_input,
    },
    Bench {
        name: "suspend",
        about: "suspend and resume MiB/s of a Linux guest that touched 512 MiB against raw O_DIRECT dd on the same system disk, and the bytes of a second suspend 5 s after resuming",
        run: crate::bench_suspend::run_suspend,
    },
    Bench {
        name: "tpm",
        about: "ops/s of GetRandom, PCR_Extend, CreatePrimary(ECC P-256), Sign(ECDSA P-256) and Hash(4 KiB): vtpm-sim (release) against swtpm, same Rust client, same run",
        run: crate::bench_tpm::run_tpm,
    },
    Bench {
        name: "compose",
        about: "compositor (release, host): 1920x1080 guest + cursor + overlay into 2560x1440, full frame, bilinear and 64x64 damage against a copy of the output frame",
        run: crate::bench_compose::run_compose,
    },
];

/// Finds a benchmark by name.
pub fn find(name: &str) -> Result<&'static Bench, Error> {
    BENCHES.iter().find(|b| b.name == name).ok_or_else(|| {
        let known: Vec<&str> = BENCHES.iter().map(|b| b.name).collect();
        Error::Usage(format!(
            "unknown bench `{name}` (known: {})",
            known.join(", ")
        ))
    })
}

/// The benchmark `cargo xtask bench NAME` names; without a name, a usage
/// error listing them.
pub fn find_or_list(name: Option<&str>) -> Result<&'static Bench, Error> {
    let Some(name) = name else {
        let list: Vec<String> = BENCHES
            .iter()
            .map(|b| format!("  {:<8} {}", b.name, b.about))
            .collect();
        return Err(Error::Usage(format!(
            "cargo xtask bench NAME\n{}",
            list.join("\n")
        )));
    };
    find(name)
}

/// `cargo xtask bench NAME`.
pub fn bench_cli(layout: &Layout, bench: &Bench) -> Result<(), Error> {
    let headline = (bench.run)(layout)?;
    println!("{headline}");
    Ok(())
}

/// Timeout of the exits benchmark run.
pub const EXITS_TIMEOUT: Duration = Duration::from_secs(300);
/// Prefix of the guest's result line.
pub const EXITS_PREFIX: &str = "bench-exits: ";

/// The raw figures `bench-exits` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitsSample {
    pub iterations: u64,
    pub empty_loop_insns: u64,
    pub hvc_loop_insns: u64,
    pub mmio_loop_insns: u64,
}

/// Per-iteration costs in instructions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExitsCosts {
    /// The empty loop's cost per iteration (the baseline).
    pub empty_loop: f64,
    /// One HVC round trip beyond the baseline.
    pub hvc_roundtrip: f64,
    /// One trapped MMIO read beyond the baseline.
    pub mmio_read: f64,
    /// `hvc_roundtrip / empty_loop`.
    pub hvc_vs_empty: f64,
}

/// Reads the last `bench-exits: iterations=…` line of a console log (the
/// guest's other `bench-exits:` lines and the hypervisor's `[el2 ` lines, which
/// may name the VM, are ignored).
pub fn parse_exits(console: &str) -> Result<ExitsSample, String> {
    let line = console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(EXITS_PREFIX))
        .rfind(|rest| {
            rest.split_whitespace()
                .any(|kv| kv.starts_with("iterations="))
        })
        .ok_or("no `bench-exits: iterations=…` line on the console")?;
    let field = |key: &str| -> Result<u64, String> {
        let value = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .ok_or_else(|| format!("`bench-exits:` line lacks {key}=: {line}"))?;
        value
            .parse()
            .map_err(|_| format!("`bench-exits:` {key}={value} is not a number"))
    };
    Ok(ExitsSample {
        iterations: field("iterations")?,
        empty_loop_insns: field("empty_loop_insns")?,
        hvc_loop_insns: field("hvc_loop_insns")?,
        mmio_loop_insns: field("mmio_loop_insns")?,
    })
}

/// Per-iteration costs relative to the empty loop; refuses implausible samples.
pub fn exits_costs(s: &ExitsSample) -> Result<ExitsCosts, String> {
    if s.iterations == 0 {
        return Err("iterations=0".into());
    }
    if s.empty_loop_insns == 0 {
        return Err("the empty loop counted 0 instructions: was QEMU run with -icount (PMU counts nothing without it)?".into());
    }
    if s.hvc_loop_insns < s.empty_loop_insns || s.mmio_loop_insns < s.empty_loop_insns {
        return Err(format!(
            "a loop with exits counted fewer instructions than the empty loop: {s:?}"
        ));
    }
    let n = s.iterations as f64;
    let empty_loop = s.empty_loop_insns as f64 / n;
    let hvc_roundtrip = (s.hvc_loop_insns - s.empty_loop_insns) as f64 / n;
    let mmio_read = (s.mmio_loop_insns - s.empty_loop_insns) as f64 / n;
    Ok(ExitsCosts {
        empty_loop,
        hvc_roundtrip,
        mmio_read,
        hvc_vs_empty: hvc_roundtrip / empty_loop,
    })
}

/// The table and the headline line for `c`.
pub fn exits_report(s: &ExitsSample, c: &ExitsCosts) -> (String, String) {
    let table = format!(
        "bench exits ({} iterations, instructions retired per iteration, baseline subtracted)\n\
         {:<16} {:>12}\n{:<16} {:>12.1}\n{:<16} {:>12.1}\n{:<16} {:>12.1}\n{:<16} {:>12.1}",
        s.iterations,
        "what",
        "insns",
        "empty loop",
        c.empty_loop,
        "hvc round trip",
        c.hvc_roundtrip,
        "mmio read",
        c.mmio_read,
        "hvc / empty",
        c.hvc_vs_empty
    );
    let headline = format!(
        "exits hvc_roundtrip_insns={:.1} mmio_read_insns={:.1} empty_loop_insns={:.1} hvc_vs_empty={:.1}",
        c.hvc_roundtrip, c.mmio_read, c.empty_loop, c.hvc_vs_empty
    );
    (table, headline)
}

fn run_exits(layout: &Layout) -> Result<String, Error> {
    let mut o = RunOptions::headless(Guest::BenchExits, EXITS_TIMEOUT);
    o.icount = true;
    o.quiet = false;
    let outcome = run_captured(layout, &o)?;
    let result = outcome
        .verdict()
        .and_then(|()| parse_exits(&outcome.console))
        .and_then(|s| Ok((s, exits_costs(&s)?)));
    match result {
        Ok((sample, costs)) => {
            let (table, headline) = exits_report(&sample, &costs);
            println!("{table}");
            Ok(headline)
        }
        Err(reason) => {
            eprintln!(
                "\n--- last {CONSOLE_TAIL_LINES} console lines ---\n{}\n---",
                outcome.console_tail(CONSOLE_TAIL_LINES)
            );
            Err(Error::step("bench exits", reason))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_benches_list_the_known_ones() {
        assert!(find("exits").is_ok());
        let e = find("gpu").unwrap_err().to_string();
        assert!(
            e.contains("unknown bench `gpu`") && e.contains("exits"),
            "{e}"
        );
    }

    #[test]
    fn exits_line_parses_and_costs_subtract_the_baseline() {
        let log = "[el2 INFO] vm bench-exits\r\nbench-exits: iterations=1000 empty_loop_insns=3000 hvc_loop_insns=126400 mmio_loop_insns=459700\r\n\
bench-exits: per_iter empty=3.00\r\n[el2 INFO ] bench-exits: PSCI SYSTEM_OFF from vCPU 0\r\n";
        let s = parse_exits(log).unwrap();
        assert_eq!(
            s,
            ExitsSample {
                iterations: 1000,
                empty_loop_insns: 3000,
                hvc_loop_insns: 126_400,
                mmio_loop_insns: 459_700
            }
        );
        let c = exits_costs(&s).unwrap();
        assert!((c.empty_loop - 3.0).abs() < 1e-9);
        assert!((c.hvc_roundtrip - 123.4).abs() < 1e-9);
        assert!((c.mmio_read - 456.7).abs() < 1e-9);
        let (table, headline) = exits_report(&s, &c);
        assert_eq!(headline, "exits hvc_roundtrip_insns=123.4 mmio_read_insns=456.7 empty_loop_insns=3.0 hvc_vs_empty=41.1");
        assert!(table.contains("hvc round trip") && table.contains("1000 iterations"));
    }

    #[test]
    fn broken_samples_are_refused() {
        assert!(parse_exits("nothing here\n").is_err());
        assert!(parse_exits("[el2 INFO ] bench-exits: iterations=1 empty_loop_insns=1 hvc_loop_insns=2 mmio_loop_insns=3\n").is_err());
        assert!(
            parse_exits("bench-exits: iterations=10 empty_loop_insns=1\n")
                .unwrap_err()
                .contains("hvc_loop_insns")
        );
        assert!(parse_exits(
            "bench-exits: iterations=x empty_loop_insns=1 hvc_loop_insns=2 mmio_loop_insns=3\n"
        )
        .is_err());
        let s = ExitsSample {
            iterations: 10,
            empty_loop_insns: 0,
            hvc_loop_insns: 5,
            mmio_loop_insns: 5,
        };
        assert!(exits_costs(&s).unwrap_err().contains("-icount"));
        let s = ExitsSample {
            iterations: 10,
            empty_loop_insns: 50,
            hvc_loop_insns: 5,
            mmio_loop_insns: 60,
        };
        assert!(exits_costs(&s).is_err());
        let s = ExitsSample {
            iterations: 0,
            empty_loop_insns: 50,
            hvc_loop_insns: 60,
            mmio_loop_insns: 60,
        };
        assert!(exits_costs(&s).is_err());
    }
}
