//! `cargo xtask bench disk`: sequential write then read of [`DISK_MIB`] MiB inside
//! the Linux guest on its hypervisor-backed disk (`/dev/vda`, an extent of the
//! system disk served by the hypervisor's virtio-blk model), against the same
//! guest started directly by QEMU on QEMU's own virtio-blk (the baseline,
//! measured in the same run).
//!
//! Each direction moves the whole guest disk ([`PASS_MIB`]) [`DISK_PASSES`] times, so
//! a pass lasts seconds, not the few hundredths of a second where `/proc/uptime`'s
//! 10 ms resolution and host scheduling decided the ratio.
//!
//! The guest times itself ([`GUEST_SCRIPT`]): `dd … bs=1M` with
//! `oflag=direct`/`iflag=direct` (busybox supports them; if the kernel refuses,
//! the script falls back to `conv=fsync` plus `echo 3 > drop_caches` and says
//! `mode=cached`), with `/proc/uptime` read before and after each pass, and prints
//! one `bench-disk: …` line. [`DISK_ROUNDS`] alternating rounds (hypervisor,
//! bare, …) are run and the medians compared, so a change in host load hits both
//! sides alike; each round both sides start from a freshly created sparse image
//! (the system disk with its registry, the bare disk), so the host's file system
//! treats their writes alike.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::bench_boot::median;
use crate::error::{tail_lines, Error};
use crate::linux_guest;
use crate::qemu::{describe_exit, BareLinuxConfig, QemuLine};
use crate::run::{prepare, Guest, RunOptions, CONSOLE_TAIL_LINES};
use crate::session::Session;
use crate::Layout;

/// MiB one `dd` pass moves: the whole guest disk (the baseline's disk is as large).
pub const PASS_MIB: u64 = crate::sysdisk::GUEST_DISK_SIZE >> 20;
/// Passes per direction.
pub const DISK_PASSES: u64 = 4;
/// MiB written and then read per round.
pub const DISK_MIB: u64 = PASS_MIB * DISK_PASSES;
/// Alternating (hypervisor, bare) rounds.
pub const DISK_ROUNDS: usize = 5;
/// The bench's own system disk, under the workspace's `target/`.
pub const BENCH_SYSTEM_DISK: &str = "bench-disk-system.img";
/// The baseline's raw disk image, under the workspace's `target/`.
pub const BARE_DISK: &str = "bench-disk-bare.img";
/// Size of the baseline's disk (the hypervisor VM's disk is as large).
pub const BARE_DISK_SIZE: u64 = crate::sysdisk::GUEST_DISK_SIZE;
/// Longest one run may take.
pub const DISK_TIMEOUT: Duration = Duration::from_secs(300);
/// The throughput ratio (hypervisor / bare) the hypervisor aims for.
pub const DISK_RATIO_TARGET: f64 = 0.9;
/// Prefix of the guest's result line.
pub const DISK_PREFIX: &str = "bench-disk: ";

/// The guest command: probe `O_DIRECT`, then a timed write and a timed read of
/// [`DISK_PASSES`] passes of [`PASS_MIB`] MiB each on `/dev/vda`.
pub const GUEST_SCRIPT: &str = "d=/dev/vda; n=256; p=4; \
if dd if=/dev/zero of=$d bs=1M count=1 oflag=direct 2>/dev/null && dd if=$d of=/dev/null bs=1M count=1 iflag=direct 2>/dev/null; \
then mode=direct; w=oflag=direct; r=iflag=direct; else mode=cached; w=; r=; fi; \
up() { cut -d' ' -f1 /proc/uptime; }; \
sync; echo 3 > /proc/sys/vm/drop_caches; \
t0=$(up); i=0; while [ $i -lt $p ]; do dd if=/dev/zero of=$d bs=1M count=$n $w conv=fsync 2>/dev/null || echo bench-disk-error write; i=$((i+1)); done; t1=$(up); \
sync; echo 3 > /proc/sys/vm/drop_caches; \
t2=$(up); i=0; while [ $i -lt $p ]; do dd if=$d of=/dev/null bs=1M count=$n $r 2>/dev/null || echo bench-disk-error read; i=$((i+1)); done; t3=$(up); \
echo \"bench-disk: mode=$mode mib=$((n*p)) write_start=$t0 write_end=$t1 read_start=$t2 read_end=$t3\"";

/// One guest's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskSample {
    /// `direct` (O_DIRECT) or `cached` (fsync + dropped caches).
    pub mode: String,
    pub mib: u64,
    pub write_s: f64,
    pub read_s: f64,
}

impl DiskSample {
    pub fn write_mibs(&self) -> f64 {
        self.mib as f64 / self.write_s
    }
    pub fn read_mibs(&self) -> f64 {
        self.mib as f64 / self.read_s
    }
}

/// Reads the guest's last `bench-disk: mode=…` line; refuses errors and
/// implausible figures (a pass shorter than `/proc/uptime`'s 10 ms resolution).
pub fn parse_disk(console: &str) -> Result<DiskSample, String> {
    if let Some(l) = console.lines().find(|l| l.contains("bench-disk-error")) {
        return Err(format!("dd failed in the guest: {}", l.trim_end()));
    }
    let line = console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(DISK_PREFIX))
        .rfind(|rest| rest.starts_with("mode="))
        .ok_or("no `bench-disk: mode=…` line on the console")?;
    let field = |key: &str| -> Result<&str, String> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .ok_or_else(|| format!("`bench-disk:` line lacks {key}=: {line}"))
    };
    let num = |key: &str| -> Result<f64, String> {
        let v = field(key)?;
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite() && *x >= 0.0)
            .ok_or_else(|| format!("`bench-disk:` {key}={v} is not a time"))
    };
    let mib: u64 = field("mib")?
        .parse()
        .map_err(|_| format!("`bench-disk:` bad mib= in {line}"))?;
    let write_s = num("write_end")? - num("write_start")?;
    let read_s = num("read_end")? - num("read_start")?;
    if mib == 0 || write_s < 0.02 || read_s < 0.02 {
        return Err(format!(
            "implausible sample (mib={mib}, write {write_s:.2} s, read {read_s:.2} s): {line}"
        ));
    }
    Ok(DiskSample {
        mode: field("mode")?.to_string(),
        mib,
        write_s,
        read_s,
    })
}

/// The medians of both sides and their ratios.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiskSummary {
    pub hyp_write_mibs: f64,
    pub bare_write_mibs: f64,
    pub hyp_read_mibs: f64,
    pub bare_read_mibs: f64,
}

impl DiskSummary {
    pub fn write_ratio(&self) -> f64 {
        self.hyp_write_mibs / self.bare_write_mibs
    }
    pub fn read_ratio(&self) -> f64 {
        self.hyp_read_mibs / self.bare_read_mibs
    }

    /// The one headline line.
    pub fn headline(&self) -> String {
        format!(
            "disk hyp_write_mibs={:.1} bare_write_mibs={:.1} write_ratio={:.2} hyp_read_mibs={:.1} bare_read_mibs={:.1} read_ratio={:.2}",
            self.hyp_write_mibs,
            self.bare_write_mibs,
            self.write_ratio(),
            self.hyp_read_mibs,
            self.bare_read_mibs,
            self.read_ratio()
        )
    }
}

/// Medians of each side's throughputs.
pub fn summarize(hyp: &[DiskSample], bare: &[DiskSample]) -> Result<DiskSummary, String> {
    let m =
        |s: &[DiskSample], f: fn(&DiskSample) -> f64| median(&s.iter().map(f).collect::<Vec<_>>());
    match (
        m(hyp, DiskSample::write_mibs),
        m(bare, DiskSample::write_mibs),
        m(hyp, DiskSample::read_mibs),
        m(bare, DiskSample::read_mibs),
    ) {
        (Some(hw), Some(bw), Some(hr), Some(br)) if bw > 0.0 && br > 0.0 => Ok(DiskSummary {
            hyp_write_mibs: hw,
            bare_write_mibs: bw,
            hyp_read_mibs: hr,
            bare_read_mibs: br,
        }),
        _ => Err("no usable samples".into()),
    }
}

/// Runs `cmd` to completion (QEMU exits when the guest powers off) and reads
/// the guest's figures.
fn measure(side: &str, cmd: std::process::Command) -> Result<DiskSample, Error> {
    let start = Instant::now();
    let mut s = Session::spawn(cmd, false, DISK_TIMEOUT)
        .map_err(|e| Error::step(format!("bench disk: start QEMU ({side})"), e.to_string()))?;
    let code = s.wait_exit(Instant::now() + DISK_TIMEOUT);
    s.kill();
    let console = s.output().to_string();
    let fail = |why: String| {
        eprintln!(
            "\n--- {side}: last {CONSOLE_TAIL_LINES} console lines ---\n{}\n---",
            tail_lines(&console, CONSOLE_TAIL_LINES)
        );
        Error::step(format!("bench disk ({side})"), why)
    };
    match code {
        Some(Some(0)) => {}
        Some(other) => return Err(fail(describe_exit(other))),
        None => {
            return Err(fail(format!(
                "timed out after {} s",
                DISK_TIMEOUT.as_secs()
            )))
        }
    }
    if linux_guest::parse_console(&console).cmd_exit != Some(0) {
        return Err(fail("the guest command did not exit 0".into()));
    }
    let sample = parse_disk(&console).map_err(fail)?;
    println!(
        "  {side:<10} {:>4} MiB {}: write {:6.2} s = {:7.1} MiB/s, read {:6.2} s = {:7.1} MiB/s ({:.0} s run)",
        sample.mib,
        sample.mode,
        sample.write_s,
        sample.write_mibs(),
        sample.read_s,
        sample.read_mibs(),
        start.elapsed().as_secs_f64()
    );
    Ok(sample)
}

/// A zero-filled sparse image of `size` bytes at `path` (recreated each run).
fn blank_image(path: &Path, size: u64) -> Result<(), Error> {
    let _ = std::fs::remove_file(path);
    let f = std::fs::File::create(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    f.set_len(size)
        .map_err(|e| Error::io(format!("size {}", path.display()), e))
}

/// QEMU arguments giving the bare guest QEMU's own (modern) virtio-blk on `path`.
pub fn bare_disk_args(path: &Path) -> Vec<String> {
    vec![
        "-global".into(),
        "virtio-mmio.force-legacy=false".into(),
        "-drive".into(),
        format!(
            "file={},format=raw,if=none,id=d",
            path.display().to_string().replace(',', ",,")
        ),
        "-device".into(),
        "virtio-blk-device,drive=d".into(),
    ]
}

/// The bare-QEMU side of `bench disk`: `bare` with its own virtio-blk on `img`.
pub fn bare_line(bare: &BareLinuxConfig, img: &Path) -> QemuLine {
    let mut line = bare.line();
    line.push(bare_disk_args(img));
    line
}

/// `cargo xtask bench disk`.
pub fn run_disk(layout: &Layout) -> Result<String, Error> {
    let mut o = RunOptions::headless(Guest::Linux, DISK_TIMEOUT);
    o.system_disk = Some(layout.out.join(BENCH_SYSTEM_DISK));
    o.fresh = true;
    o.guest_cmd = Some(GUEST_SCRIPT.into());
    let prepared = prepare(layout, &o)?;
    let bare_img = layout.out.join(BARE_DISK);
    blank_image(&bare_img, BARE_DISK_SIZE)?;
    let bare = BareLinuxConfig {
        smp: prepared.vm.vcpus,
        mem: prepared.vm.mem,
        kernel: prepared.vm.kernel.clone(),
        initrd: prepared
            .vm
            .initrd
            .clone()
            .ok_or_else(|| Error::step("bench disk", "the Linux guest has no initramfs"))?,
        append: prepared.vm.cmdline.clone(),
    };
    let bare_line = bare_line(&bare, &bare_img);
    eprintln!("xtask: bench disk: hypervisor: {}", prepared.display());
    eprintln!("xtask: bench disk: bare: {}", bare_line.display());
    println!(
        "bench disk: {DISK_MIB} MiB sequential write then read on /dev/vda, {DISK_ROUNDS} alternating rounds"
    );
    let (mut hyp, mut base) = (Vec::new(), Vec::new());
    for round in 0..DISK_ROUNDS {
        // Both sides write to a freshly created (sparse) image each round, so the
        // host's page cache and file system treat them alike.
        let prepared = if round == 0 {
            prepared.clone()
        } else {
            prepare(layout, &o)?
        };
        hyp.push(measure("hypervisor", prepared.command())?);
        blank_image(&bare_img, BARE_DISK_SIZE)?;
        base.push(measure("bare", bare_line.command())?);
    }
    let modes: Vec<&str> = hyp.iter().chain(&base).map(|s| s.mode.as_str()).collect();
    if modes.iter().any(|m| *m != modes[0]) {
        return Err(Error::step(
            "bench disk",
            format!("the two sides measured differently (modes {modes:?})"),
        ));
    }
    let s = summarize(&hyp, &base).map_err(|e| Error::step("bench disk", e))?;
    println!(
        "{:<10} {:>12} {:>12} {:>8}\n{:<10} {:>12.1} {:>12.1} {:>8.2}\n{:<10} {:>12.1} {:>12.1} {:>8.2}",
        format!("{} MiB/s", modes[0]),
        "hypervisor",
        "bare QEMU",
        "ratio",
        "write",
        s.hyp_write_mibs,
        s.bare_write_mibs,
        s.write_ratio(),
        "read",
        s.hyp_read_mibs,
        s.bare_read_mibs,
        s.read_ratio()
    );
    for (what, r) in [("write", s.write_ratio()), ("read", s.read_ratio())] {
        if r < DISK_RATIO_TARGET {
            println!("note: {what} ratio {r:.2} is below the target {DISK_RATIO_TARGET}");
        }
    }
    Ok(s.headline())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "bench-disk: mode=direct mib=64 write_start=10.50 write_end=12.50 read_start=12.60 read_end=13.60";

    #[test]
    fn guest_line_parses_into_throughputs() {
        let log =
            format!("[el2 INFO ] VM 'linux' start #3\r\n{LINE}\r\nrayos-guest: cmd exit 0\r\n");
        let s = parse_disk(&log).unwrap();
        assert_eq!((s.mode.as_str(), s.mib), ("direct", 64));
        assert!((s.write_mibs() - 32.0).abs() < 1e-6);
        assert!((s.read_mibs() - 64.0).abs() < 1e-6);
    }

    #[test]
    fn broken_lines_are_refused() {
        assert!(parse_disk("nothing\n").is_err());
        assert!(parse_disk(&format!("{LINE}\nbench-disk-error write\n"))
            .unwrap_err()
            .contains("dd failed"));
        assert!(parse_disk(
            "bench-disk: mode=direct mib=64 write_start=1 write_end=1 read_start=1 read_end=2\n"
        )
        .is_err());
        assert!(parse_disk(
            "bench-disk: mode=direct mib=64 write_start=1 read_start=1 read_end=2\n"
        )
        .unwrap_err()
        .contains("write_end"));
        assert!(parse_disk(
            "bench-disk: mode=direct mib=x write_start=1 write_end=2 read_start=1 read_end=2\n"
        )
        .is_err());
    }

    #[test]
    fn ratios_are_hypervisor_over_bare_medians() {
        let s = |w: f64, r: f64| DiskSample {
            mode: "direct".into(),
            mib: 64,
            write_s: 64.0 / w,
            read_s: 64.0 / r,
        };
        let sum = summarize(
            &[s(40.0, 80.0), s(10.0, 90.0), s(30.0, 70.0)],
            &[s(50.0, 100.0)],
        )
        .unwrap();
        assert!((sum.hyp_write_mibs - 30.0).abs() < 1e-9);
        assert!((sum.write_ratio() - 0.6).abs() < 1e-9);
        assert!((sum.read_ratio() - 0.8).abs() < 1e-9);
        assert_eq!(
            sum.headline(),
            "disk hyp_write_mibs=30.0 bare_write_mibs=50.0 write_ratio=0.60 hyp_read_mibs=80.0 bare_read_mibs=100.0 read_ratio=0.80"
        );
        assert!(summarize(&[], &[s(1.0, 1.0)]).is_err());
    }

    #[test]
    fn the_guest_script_fits_the_command_line_and_names_its_size() {
        assert!(GUEST_SCRIPT.contains(&format!("n={PASS_MIB}; p={DISK_PASSES};")));
        assert_eq!(
            PASS_MIB << 20,
            BARE_DISK_SIZE,
            "a pass covers the disk, no more"
        );
        assert!(linux_guest::guest_cmd_arg(GUEST_SCRIPT).len() < 1400);
        let a = bare_disk_args(Path::new("/t/d.img")).join(" ");
        assert_eq!(a, "-global virtio-mmio.force-legacy=false -drive file=/t/d.img,format=raw,if=none,id=d -device virtio-blk-device,drive=d");
    }
}
