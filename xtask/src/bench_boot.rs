//! `cargo xtask bench boot`: how much longer Debian's arm64 kernel takes to
//! reach the initramfs's init under the hypervisor than started directly by
//! QEMU (the baseline, measured in the same run).
//!
//! Both sides use the same kernel, initramfs and command line, the same CPU
//! model ([`TCG_CPU`]), [`BOOT_VCPUS`] vCPUs and [`BOOT_MEM`] of guest RAM; the
//! baseline runs on `virt` without virtualization ([`BARE_MACHINE`]). The
//! hypervisor side boots the product path: the hypervisor reads the VM's
//! kernel and initramfs from its system disk ([`BENCH_DISK`]) before the guest
//! starts, so that load is part of its time. A run is timed from spawning
//! QEMU to the first console line ending in [`INIT_MARKER`]; QEMU is then
//! killed. [`BOOT_PAIRS`] alternating pairs
//! (hypervisor, bare, hypervisor, bare, …) are run so a change in host load
//! hits both sides alike, and the medians are compared.

use std::process::Command;
use std::time::{Duration, Instant};

use regex::Regex;

use crate::error::{tail_lines, Error};
use crate::linux_guest::{ensure_linux_guest, INIT_MARKER};
use crate::qemu::{describe_exit, BareLinuxConfig, BARE_MACHINE, TCG_CPU};
use crate::run::{prepare, Guest, RunOptions, CONSOLE_TAIL_LINES};
use crate::session::{Session, WaitError};
use crate::Layout;

/// Alternating (hypervisor, bare) pairs measured.
pub const BOOT_PAIRS: usize = 5;
/// vCPUs of both sides (physical CPUs given to QEMU).
pub const BOOT_VCPUS: u32 = 2;
/// Guest RAM of both sides.
pub const BOOT_MEM: u64 = 512 << 20;
/// The bench's own system disk, under the workspace's `target/`.
pub const BENCH_DISK: &str = "bench-boot-disk.img";
/// Longest one boot to init may take.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);
/// The ratio the hypervisor aims for (hypervisor median / bare median).
pub const BOOT_RATIO_TARGET: f64 = 1.15;
/// The same measurement with Xen 4.17 as the hypervisor (dom0, same kernel,
/// this project's machines; see the design brief).
pub const XEN_REFERENCE_RATIO: f64 = 1.6;

/// Kernel banner both sides print first (through `earlycon`): marks kernel entry.
pub const KERNEL_BANNER: &str = "Booting Linux on physical CPU";

/// One boot, timed from spawning QEMU, in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootTimes {
    /// To the kernel banner ([`KERNEL_BANNER`]): firmware/hypervisor start-up.
    pub kernel_s: f64,
    /// To the init marker ([`INIT_MARKER`]): the figure compared.
    pub init_s: f64,
}

impl BootTimes {
    /// Time from the kernel banner to init.
    pub fn kernel_to_init_s(&self) -> f64 {
        self.init_s - self.kernel_s
    }
}

/// One measured pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootPair {
    pub hyp: BootTimes,
    pub bare: BootTimes,
}

/// Medians of a set of pairs and their ratio.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BootSummary {
    /// Spawn to init under the hypervisor.
    pub hyp_median_s: f64,
    /// Spawn to init on bare QEMU.
    pub bare_median_s: f64,
    /// `hyp_median_s / bare_median_s`: the headline.
    pub ratio: f64,
    /// Spawn to kernel banner, each side.
    pub hyp_kernel_median_s: f64,
    pub bare_kernel_median_s: f64,
    /// Kernel banner to init, each side (the guest's own boot).
    pub hyp_guest_median_s: f64,
    pub bare_guest_median_s: f64,
}

/// The median of `values` (the mean of the middle two for an even count);
/// `None` when empty or when a value is not finite.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() || values.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    })
}

/// Medians and ratio of `pairs`; refuses empty or implausible samples.
pub fn summarize(pairs: &[BootPair]) -> Result<BootSummary, String> {
    let bad = || format!("implausible boot times: {pairs:?}");
    let plausible = |t: &BootTimes| t.kernel_s >= 0.0 && t.init_s > 0.0 && t.init_s >= t.kernel_s;
    if pairs.is_empty()
        || !pairs
            .iter()
            .all(|p| plausible(&p.hyp) && plausible(&p.bare))
    {
        return Err(bad());
    }
    let med = |f: &dyn Fn(&BootPair) -> f64| {
        median(&pairs.iter().map(f).collect::<Vec<_>>()).ok_or_else(bad)
    };
    let hyp_median_s = med(&|p| p.hyp.init_s)?;
    let bare_median_s = med(&|p| p.bare.init_s)?;
    Ok(BootSummary {
        hyp_median_s,
        bare_median_s,
        ratio: hyp_median_s / bare_median_s,
        hyp_kernel_median_s: med(&|p| p.hyp.kernel_s)?,
        bare_kernel_median_s: med(&|p| p.bare.kernel_s)?,
        hyp_guest_median_s: med(&|p| p.hyp.kernel_to_init_s())?,
        bare_guest_median_s: med(&|p| p.bare.kernel_to_init_s())?,
    })
}

/// The table (pairs, medians, ratio against the target, and the split at the
/// kernel banner) and the headline line.
pub fn boot_report(pairs: &[BootPair], s: &BootSummary, load: &str) -> (String, String) {
    let mut table = format!(
        "bench boot (spawn to `{INIT_MARKER}`, {BOOT_VCPUS} vCPUs, {} MiB, -cpu {TCG_CPU}; \
         bare: -M {BARE_MACHINE}; host load avg {load})\n\
         {:<6} {:>10} {:>10} {:>10} {:>10} {:>7}\n",
        BOOT_MEM >> 20,
        "pair",
        "hyp kern s",
        "hyp init s",
        "bare kern",
        "bare init",
        "ratio"
    );
    for (i, p) in pairs.iter().enumerate() {
        table.push_str(&format!(
            "{:<6} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>7.3}\n",
            i + 1,
            p.hyp.kernel_s,
            p.hyp.init_s,
            p.bare.kernel_s,
            p.bare.init_s,
            p.hyp.init_s / p.bare.init_s
        ));
    }
    let verdict = if s.ratio <= BOOT_RATIO_TARGET {
        "within"
    } else {
        "above"
    };
    table.push_str(&format!(
        "{:<6} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>7.3}  ({verdict} the target {BOOT_RATIO_TARGET}; Xen 4.17 ~{XEN_REFERENCE_RATIO})\n\
         split (medians): spawn to kernel banner hyp {:.3} s vs bare {:.3} s; \
         kernel banner to init hyp {:.3} s vs bare {:.3} s (ratio {:.3})",
        "median",
        s.hyp_kernel_median_s,
        s.hyp_median_s,
        s.bare_kernel_median_s,
        s.bare_median_s,
        s.ratio,
        s.hyp_kernel_median_s,
        s.bare_kernel_median_s,
        s.hyp_guest_median_s,
        s.bare_guest_median_s,
        s.hyp_guest_median_s / s.bare_guest_median_s,
    ));
    let headline = format!(
        "boot hyp_median_s={:.3} bare_median_s={:.3} ratio={:.3}",
        s.hyp_median_s, s.bare_median_s, s.ratio
    );
    (table, headline)
}

/// Matches the first console line that ends in [`INIT_MARKER`].
pub fn init_marker_regex() -> Regex {
    Regex::new(&format!(r"(?m){}\r?$", regex::escape(INIT_MARKER)))
        .expect("the init marker makes a valid regex")
}

/// Matches the kernel banner.
pub fn kernel_banner_regex() -> Regex {
    Regex::new(&regex::escape(KERNEL_BANNER)).expect("the banner makes a valid regex")
}

/// Spawns `cmd` and times the kernel banner and then the init marker (the
/// first console line ending in it); QEMU is killed then. A failure carries
/// the console tail.
pub fn time_boot(
    cmd: Command,
    banner: &Regex,
    marker: &Regex,
    timeout: Duration,
) -> Result<BootTimes, String> {
    let start = Instant::now();
    let mut session =
        Session::spawn(cmd, false, timeout).map_err(|e| format!("cannot start QEMU: {e}"))?;
    let mut waited = session.expect(banner).map(|()| start.elapsed());
    let mut kernel = Duration::ZERO;
    if let Ok(t) = waited {
        kernel = t;
        waited = session.expect(marker).map(|()| start.elapsed());
    }
    session.kill();
    let why = match waited {
        Ok(init) => {
            return Ok(BootTimes {
                kernel_s: kernel.as_secs_f64(),
                init_s: init.as_secs_f64(),
            })
        }
        Err(WaitError::TimedOut) if kernel.is_zero() => {
            format!("no `{KERNEL_BANNER}` within {timeout:?}")
        }
        Err(WaitError::TimedOut) => format!("no `{INIT_MARKER}` within {timeout:?}"),
        Err(WaitError::Exited(code)) => format!("{} before `{INIT_MARKER}`", describe_exit(code)),
    };
    Err(format!(
        "{why}\n--- last {CONSOLE_TAIL_LINES} console lines ---\n{}\n---",
        tail_lines(session.output(), CONSOLE_TAIL_LINES)
    ))
}

/// The host's 1/5/15-minute load averages, for the report.
fn host_load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

/// `cargo xtask bench boot`.
pub fn run_boot(layout: &Layout) -> Result<String, Error> {
    let mut o = RunOptions::headless(Guest::Linux, BOOT_TIMEOUT);
    o.smp = Some(BOOT_VCPUS);
    o.mem = Some(BOOT_MEM);
    o.quiet = false;
    // A system disk of its own, so runs elsewhere in the tree (which reconcile
    // and lock the default one) cannot change the VM between pairs.
    o.system_disk = Some(layout.out.join(BENCH_DISK));
    let prepared = prepare(layout, &o)?;
    let guest =
        ensure_linux_guest(&layout.guest_cache()).map_err(|e| Error::step("linux guest", e))?;
    let bare = BareLinuxConfig {
        smp: prepared.vm.vcpus,
        mem: prepared.vm.mem,
        kernel: guest.kernel,
        initrd: guest.initramfs,
        append: prepared.vm.cmdline.clone(),
    };
    eprintln!("xtask: bench boot: hypervisor: {}", prepared.display());
    eprintln!("xtask: bench boot: bare:       {}", bare.display());
    let load_before = host_load();
    let (banner, marker) = (kernel_banner_regex(), init_marker_regex());
    let time = |side: &str, cmd: Command| {
        time_boot(cmd, &banner, &marker, BOOT_TIMEOUT)
            .map_err(|e| Error::step(format!("bench boot ({side})"), e))
    };
    let mut pairs = Vec::with_capacity(BOOT_PAIRS);
    for i in 1..=BOOT_PAIRS {
        let hyp = time("hypervisor", prepared.command())?;
        let bare = time("bare", bare.command())?;
        eprintln!(
            "xtask: bench boot: pair {i}/{BOOT_PAIRS}: hyp {:.3} s, bare {:.3} s",
            hyp.init_s, bare.init_s
        );
        pairs.push(BootPair { hyp, bare });
    }
    let summary = summarize(&pairs).map_err(|e| Error::step("bench boot", e))?;
    let load = format!("{load_before} -> {}", host_load());
    let (table, headline) = boot_report(&pairs, &summary, &load);
    println!("{table}");
    Ok(headline)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn times(kernel_s: f64, init_s: f64) -> BootTimes {
        BootTimes { kernel_s, init_s }
    }

    fn pair(hyp: (f64, f64), bare: (f64, f64)) -> BootPair {
        BootPair {
            hyp: times(hyp.0, hyp.1),
            bare: times(bare.0, bare.1),
        }
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[7.5]), Some(7.5));
        assert_eq!(median(&[]), None);
        assert_eq!(median(&[1.0, f64::NAN]), None);
    }

    #[test]
    fn summary_and_report() {
        let pairs = [
            pair((1.0, 6.0), (0.5, 5.0)),
            pair((1.5, 5.5), (0.25, 5.2)),
            pair((2.0, 9.0), (0.75, 4.0)),
        ];
        let s = summarize(&pairs).unwrap();
        assert_eq!((s.hyp_median_s, s.bare_median_s), (6.0, 5.0));
        assert!((s.ratio - 1.2).abs() < 1e-12);
        assert_eq!((s.hyp_kernel_median_s, s.bare_kernel_median_s), (1.5, 0.5));
        // Banner to init: hyp 5.0, 4.0, 7.0; bare 4.5, 4.95, 3.25.
        assert_eq!((s.hyp_guest_median_s, s.bare_guest_median_s), (5.0, 4.5));
        let (table, headline) = boot_report(&pairs, &s, "1.00 0.50 0.25");
        assert_eq!(
            headline,
            "boot hyp_median_s=6.000 bare_median_s=5.000 ratio=1.200"
        );
        assert!(table.contains("above the target 1.15"), "{table}");
        assert!(
            table.contains("kernel banner to init hyp 5.000 s vs bare 4.500 s (ratio 1.111)"),
            "{table}"
        );
        assert!(table.contains("1.00 0.50 0.25") && table.lines().count() == 2 + 3 + 2);
        let fast = [pair((0.1, 3.3), (0.1, 3.0))];
        let s = summarize(&fast).unwrap();
        assert!(boot_report(&fast, &s, "x").0.contains("within the target"));
    }

    #[test]
    fn broken_samples_are_refused() {
        assert!(summarize(&[]).is_err());
        assert!(summarize(&[pair((0.1, 1.0), (0.0, 0.0))]).is_err());
        assert!(summarize(&[pair((0.1, f64::INFINITY), (0.1, 1.0))]).is_err());
        assert!(
            summarize(&[pair((2.0, 1.0), (0.1, 1.0))]).is_err(),
            "init before the kernel"
        );
    }

    #[test]
    fn markers_match_only_what_they_should() {
        let re = init_marker_regex();
        assert!(re.is_match("[ 1.4] Run /init as init process\r\nrayos-guest: init\r\n"));
        assert!(re.is_match("rayos-guest: init"));
        assert!(!re.is_match("rayos-guest: initramfs unpacked\r\n"));
        assert!(!re.is_match("Kernel command line: console=ttyAMA0\n"));
        assert!(kernel_banner_regex().is_match(
            "[    0.000000] Booting Linux on physical CPU 0x0000000000 [0x000f0510]\r\n"
        ));
    }

    #[test]
    fn both_marks_are_timed_and_a_missing_one_is_an_error() {
        let (banner, marker) = (kernel_banner_regex(), init_marker_regex());
        let sh = |script: String| {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", &script]);
            cmd
        };
        let cmd = sh(format!(
            "sleep 0.1; echo '{KERNEL_BANNER} 0x0'; sleep 0.2; echo '{INIT_MARKER}'; sleep 30"
        ));
        let t = time_boot(cmd, &banner, &marker, Duration::from_secs(10)).unwrap();
        // Order, not durations: the host's clock and scheduler decide those.
        assert!(
            t.kernel_s > 0.0 && t.kernel_to_init_s() > 0.0 && t.init_s < 10.0,
            "{t:?}"
        );

        let cmd = sh(format!(
            "echo '{KERNEL_BANNER}'; echo no marker here; exit 3"
        ));
        let e = time_boot(cmd, &banner, &marker, Duration::from_secs(10)).unwrap_err();
        assert!(
            e.contains("status 3") && e.contains("no marker here"),
            "{e}"
        );

        let cmd = sh("echo silent; sleep 30".into());
        let e = time_boot(cmd, &banner, &marker, Duration::from_millis(300)).unwrap_err();
        assert!(e.contains(KERNEL_BANNER) && e.contains("silent"), "{e}");
    }
}
