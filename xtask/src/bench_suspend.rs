//! `cargo xtask bench suspend`: suspend and resume throughput of a Linux guest that
//! has touched [`FILL_MIB`] MiB (a tmpfs file of non-zero bytes), against raw
//! sequential `O_DIRECT` write and read of the same system disk measured in the same
//! run (the guest's `/dev/vda`, an extent of that disk), and the bytes a second
//! suspend writes [`SECOND_AFTER`] after resuming from the first, as a fraction of
//! the RAM the first one found touched.
//!
//! The hypervisor times its own suspend and resume and logs them (`VM '…' suspended:
//! N KiB image (B blocks touched, …) in M ms`, `VM '…': resumed from its saved state
//! (N KiB, …) in M ms`), each with where its time went (waiting for the disk,
//! checksums, …; printed here with the figures); the guest times its `dd` passes
//! with `/proc/uptime`.

use std::time::{Duration, Instant};

use regex::Regex;

use crate::error::{tail_lines, Error};
use crate::run::{prepare, Guest, RunOptions, CONSOLE_TAIL_LINES};
use crate::session::Session;
use crate::Layout;

/// MiB of RAM the guest fills before the first suspend.
pub const FILL_MIB: u64 = 512;
/// Guest RAM (room for the fill, the kernel and the page cache).
pub const GUEST_MEM: u64 = 1 << 30;
/// MiB of the raw baseline's passes (the whole guest disk).
pub const RAW_MIB: u64 = crate::sysdisk::GUEST_DISK_SIZE >> 20;
/// When the second suspend starts after the resume.
pub const SECOND_AFTER: Duration = Duration::from_secs(5);
/// Longest one step may take.
pub const TIMEOUT: Duration = Duration::from_secs(900);
/// The bench's own system disk, under the workspace's `target/`.
pub const BENCH_SYSTEM_DISK: &str = "bench-suspend-system.img";
/// The target ratio (suspend or resume / raw).
pub const RATIO_TARGET: f64 = 0.9;

/// The guest: raw write then read of `/dev/vda`, then the fill, then idle.
pub const GUEST_SCRIPT: &str = "d=/dev/vda; up() { cut -d' ' -f1 /proc/uptime; }; \
sync; echo 3 > /proc/sys/vm/drop_caches; \
t0=$(up); dd if=/dev/zero of=$d bs=1M count=256 oflag=direct conv=fsync 2>/dev/null || echo bench-suspend-error; t1=$(up); \
t2=$(up); dd if=$d of=/dev/null bs=1M count=256 iflag=direct 2>/dev/null || echo bench-suspend-error; t3=$(up); \
echo \"bench-suspend-raw: t0=$t0 t1=$t1 t2=$t2 t3=$t3\"; \
mkdir -p /m; mount -t tmpfs -o size=600m tmpfs /m; \
dd if=/dev/zero bs=1M count=512 2>/dev/null | tr '\\000' 'Z' > /m/f; echo bench-suspend-filled; \
while :; do sleep 1; done";

/// What the hypervisor logged for one suspend.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Suspended {
    pub kib: u64,
    pub blocks: u64,
    pub ms: u64,
}

/// Parses the hypervisor's suspend line.
pub fn parse_suspended(console: &str) -> Option<Suspended> {
    let re = Regex::new(
        r"suspended: (\d+) KiB written[^,]*, \d+ KiB image \((\d+) blocks touched, .*\) in (\d+) ms",
    )
    .ok()?;
    let c = re.captures_iter(console).last()?;
    Some(Suspended {
        kib: c[1].parse().ok()?,
        blocks: c[2].parse().ok()?,
        ms: c[3].parse().ok()?,
    })
}

/// Parses the hypervisor's resume line: (KiB, ms).
pub fn parse_resumed(console: &str) -> Option<(u64, u64)> {
    let re = Regex::new(r"resumed from its saved state \((\d+) KiB read, .*\) in (\d+) ms").ok()?;
    let c = re.captures(console)?;
    Some((c[1].parse().ok()?, c[2].parse().ok()?))
}

/// Parses the guest's raw line: (write seconds, read seconds).
pub fn parse_raw(console: &str) -> Option<(f64, f64)> {
    let re =
        Regex::new(r"bench-suspend-raw: t0=([\d.]+) t1=([\d.]+) t2=([\d.]+) t3=([\d.]+)").ok()?;
    let c = re.captures(console)?;
    let t: Vec<f64> = (1..=4).map(|i| c[i].parse().unwrap_or(f64::NAN)).collect();
    Some((t[1] - t[0], t[3] - t[2]))
}

/// MiB/s of `kib` KiB in `ms` milliseconds.
pub fn mibs(kib: u64, ms: u64) -> f64 {
    (kib as f64 / 1024.0) / (ms.max(1) as f64 / 1000.0)
}

fn fail(step: &str, s: &Session, why: &str) -> Error {
    eprintln!(
        "\n--- last {CONSOLE_TAIL_LINES} console lines ---\n{}\n---",
        tail_lines(s.output(), CONSOLE_TAIL_LINES)
    );
    Error::step(format!("bench suspend ({step})"), why.to_string())
}

/// Sends `host shutdown` to the monitor and waits for QEMU to exit.
fn host_shutdown(s: &mut Session, step: &str) -> Result<(), Error> {
    let escape = char::from(monitor::ESCAPE);
    s.send(&format!("{escape}host shutdown\n"))
        .map_err(|e| fail(step, s, &e.to_string()))?;
    if s.wait_exit(Instant::now() + TIMEOUT).is_none() {
        return Err(fail(step, s, "QEMU did not power off after host shutdown"));
    }
    Ok(())
}

pub fn run_suspend(layout: &Layout) -> Result<String, Error> {
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.system_disk = Some(layout.out.join(BENCH_SYSTEM_DISK));
    o.fresh = true;
    o.mem = Some(GUEST_MEM);
    o.smp = Some(1);
    o.guest_cmd = Some(GUEST_SCRIPT.into());
    let prepared = prepare(layout, &o)?;
    eprintln!("xtask: bench suspend: {}", prepared.display());
    let spawn = |step: &str| {
        Session::spawn(prepared.command(), false, TIMEOUT)
            .map_err(|e| Error::step(format!("bench suspend ({step}): start QEMU"), e.to_string()))
    };
    // 1. Raw baseline, fill, first suspend.
    let mut a = spawn("first boot")?;
    let filled = Regex::new(r"(?m)^bench-suspend-filled").expect("pattern");
    a.expect(&filled)
        .map_err(|e| fail("first boot", &a, &format!("{e:?}")))?;
    if a.output().contains("bench-suspend-error") {
        return Err(fail("raw", &a, "a raw dd pass failed"));
    }
    let (raw_w_s, raw_r_s) =
        parse_raw(a.output()).ok_or_else(|| fail("raw", &a, "no raw timing line"))?;
    host_shutdown(&mut a, "first suspend")?;
    let first =
        parse_suspended(a.output()).ok_or_else(|| fail("first suspend", &a, "no suspend line"))?;
    // 2. Resume, and a second suspend SECOND_AFTER later.
    let mut b = spawn("resume")?;
    let resumed_re = Regex::new(r"resumed from its saved state \(").expect("pattern");
    b.expect(&resumed_re)
        .map_err(|e| fail("resume", &b, &format!("{e:?}")))?;
    let _ = b.sleep(Duration::from_millis(100));
    let (res_kib, res_ms) =
        parse_resumed(b.output()).ok_or_else(|| fail("resume", &b, "no resume line"))?;
    let _ = b.sleep(SECOND_AFTER);
    host_shutdown(&mut b, "second suspend")?;
    let second = parse_suspended(b.output())
        .ok_or_else(|| fail("second suspend", &b, "no second suspend line"))?;

    for l in a.output().lines().chain(b.output().lines()) {
        if l.contains("' suspended: ") || l.contains("resumed from its saved state") {
            println!("  {}", l.trim_end());
        }
    }
    let raw_w = RAW_MIB as f64 / raw_w_s.max(0.01);
    let raw_r = RAW_MIB as f64 / raw_r_s.max(0.01);
    let sus = mibs(first.kib, first.ms);
    let res = mibs(res_kib, res_ms);
    let touched_kib = first.blocks * 2048;
    let fraction = second.kib as f64 / touched_kib.max(1) as f64;
    println!(
        "bench suspend: guest filled {FILL_MIB} MiB; first image {} MiB of {} MiB touched",
        first.kib >> 10,
        touched_kib >> 10
    );
    println!(
        "{:<8} {:>10} {:>14} {:>8}\n{:<8} {:>10.1} {:>14.1} {:>8.2}\n{:<8} {:>10.1} {:>14.1} {:>8.2}",
        "MiB/s",
        "suspend",
        "raw (dd vda)",
        "ratio",
        "write",
        sus,
        raw_w,
        sus / raw_w,
        "read",
        res,
        raw_r,
        res / raw_r
    );
    println!(
        "second suspend {} s after resume: {} MiB written = {fraction:.3} of touched RAM (stage-2 dirty logging: only pages written since the resume)",
        SECOND_AFTER.as_secs(),
        second.kib >> 10
    );
    for (what, r) in [("suspend", sus / raw_w), ("resume", res / raw_r)] {
        if r < RATIO_TARGET {
            println!("note: {what} ratio {r:.2} is below the target {RATIO_TARGET}");
        }
    }
    Ok(format!(
        "suspend suspend_ratio={:.2} resume_ratio={:.2} second_suspend_fraction={fraction:.3}",
        sus / raw_w,
        res / raw_r
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hypervisor_and_guest_lines_parse() {
        let c = "[el2 INFO ] VM 'linux' suspended: 1200 KiB written (incremental), 71000 KiB image (5 blocks touched, 1 rewritten, 15 pages with data, 1889 zero pages) in 8 ms (waiting for the disk 1 ms)\n\
                 [el2 INFO ] VM 'linux' suspended: 62090 KiB written, 71000 KiB image (34 blocks touched, 34 rewritten, 15519 pages with data, 1889 zero pages) in 822 ms (waiting for the disk 700 ms; capturing and draining 40 ms, sections, index, header, flushes and registry 30 ms, the rest zero pages and checksums)\n\
                 [el2 INFO ] VM 'linux': resumed from its saved state (62090 KiB read, 15519 pages with data) in 991 ms (RAM 900 ms of which waiting for the disk 800 ms and finishing blocks 10 ms, devices 9 ms); guest time continues at 1 ticks\n\
                 bench-suspend-raw: t0=10.50 t1=12.50 t2=12.51 t3=13.51\n";
        assert_eq!(
            parse_suspended(c),
            Some(Suspended {
                kib: 62090,
                blocks: 34,
                ms: 822
            })
        );
        assert_eq!(parse_resumed(c), Some((62090, 991)));
        let (w, r) = parse_raw(c).unwrap();
        assert!((w - 2.0).abs() < 1e-9 && (r - 1.0).abs() < 1e-9);
        assert!((mibs(2048, 1000) - 2.0).abs() < 1e-9);
        assert_eq!(parse_suspended("nothing"), None);
    }

    #[test]
    fn the_guest_script_fits_the_command_line() {
        assert!(crate::linux_guest::guest_cmd_arg(GUEST_SCRIPT).len() < 1400);
        assert!(GUEST_SCRIPT.contains(&format!("count={FILL_MIB}")));
    }
}
