//! `cargo xtask bench nvme`: sequential and 4 KiB random I/O inside the Linux guest
//! on `/dev/nvme0n1`, the hypervisor's NVMe controller over the VM's disk extent
//! on the system disk (`--nvme system`), against the same guest started directly
//! by QEMU with QEMU's own NVMe device on a raw image of the same size (the
//! baseline, measured in the same run).
//!
//! The guest times itself ([`GUEST_SCRIPT`]) with busybox only (the guest has no
//! fio): [`SEQ_PASSES`] O_DIRECT `dd bs=1M` passes over [`SEQ_MIB`] each way for
//! the sequential figures (one 128 MiB pass took 0.16..0.25 s, a few ticks of
//! `/proc/uptime`'s 10 ms: the figures came out quantized), and
//! one O_DIRECT `dd bs=4k count=1` per random I/O at offsets from a shell LCG —
//! one loop for queue depth 1, [`QUEUE_DEPTH`] loops in parallel for queue depth
//! 32. Each random I/O forks a `dd`, and that cost (the same guest kernel and TCG
//! on both sides) is inside the figures: the random ratios compare whole
//! per-I/O paths and understate a device-side difference. [`ROUNDS`] alternating
//! rounds (hypervisor, bare) are run from fresh images and the medians compared.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::bench_boot::median;
use crate::error::{tail_lines, Error};
use crate::linux_guest;
use crate::qemu::{describe_exit, BareLinuxConfig, QemuLine};
use crate::run::{prepare, Guest, NvmeDisk, RunOptions, CONSOLE_TAIL_LINES};
use crate::session::Session;
use crate::Layout;

/// Alternating (hypervisor, bare) rounds.
pub const ROUNDS: usize = 3;
/// MiB of each sequential pass.
pub const SEQ_MIB: u64 = 128;
/// Sequential passes each way (the guest script's `x4`).
pub const SEQ_PASSES: u64 = 4;
/// Random I/Os at queue depth 1, and in all at queue depth [`QUEUE_DEPTH`].
pub const RANDOM_IOS: u64 = 256;
/// Parallel random-I/O loops for the queue-depth-32 figures.
pub const QUEUE_DEPTH: u64 = 32;
/// The bench's own system disk, under the workspace's `target/`.
pub const BENCH_SYSTEM_DISK: &str = "bench-nvme-system.img";
/// The baseline's raw disk image, under the workspace's `target/`.
pub const BARE_DISK: &str = "bench-nvme-bare.img";
/// Size of both sides' namespace: the system-disk VM's guest disk.
pub const DISK_SIZE: u64 = crate::sysdisk::GUEST_DISK_SIZE;
/// Longest one run may take.
pub const TIMEOUT: Duration = Duration::from_secs(600);
/// Ratio targets (hypervisor / bare) of the issue: sequential and random.
pub const SEQ_TARGET: f64 = 0.9;
pub const RANDOM_TARGET: f64 = 0.8;
/// Prefix of the guest's result line.
pub const PREFIX: &str = "bench-nvme: ";
/// QEMU's NVMe controller serial number on the baseline.
const BARE_SERIAL: &str = "rayosbench";

/// The guest command: sequential write and read, random read at queue depth 1,
/// random read and write at queue depth 32, each bracketed by `/proc/uptime`.
pub const GUEST_SCRIPT: &str = "d=/dev/nvme0n1; n=128; k=256; q=32; y=/sys/block/nvme0n1; \
b=$(( $(cat $y/size) / 8 )); \
up() { cut -d' ' -f1 /proc/uptime; }; st() { set -- $(cat $y/stat); echo $1:$5; }; \
io() { s=$3; i=0; while [ $i -lt $2 ]; do s=$(( (s*1103515245+12345) % 2147483648 )); o=$(( s % b )); \
if [ $1 = r ]; then dd if=$d of=/dev/null bs=4k count=1 skip=$o iflag=direct 2>/dev/null || echo bench-nvme-error rread; \
else dd if=/dev/zero of=$d bs=4k count=1 seek=$o oflag=direct 2>/dev/null || echo bench-nvme-error rwrite; fi; i=$((i+1)); done; }; \
par() { j=0; while [ $j -lt $q ]; do io $1 $((k/q)) $((j*7919+$2)) & j=$((j+1)); done; wait; }; \
sw() { dd if=/dev/zero of=$d bs=1M count=$n oflag=direct conv=fsync 2>/dev/null || echo bench-nvme-error swrite; }; \
sr() { dd if=$d of=/dev/null bs=1M count=$n iflag=direct 2>/dev/null || echo bench-nvme-error sread; }; x4() { $1; $1; $1; $1; }; \
q0=$(st); t0=$(up); x4 sw; t1=$(up); q1=$(st); x4 sr; t2=$(up); q2=$(st); \
io r $k 1; t3=$(up); par r 3; t4=$(up); par w 5; t5=$(up); \
echo \"bench-nvme: seq_mib=$((n*4)) ios=$k t=$t0,$t1,$t2,$t3,$t4,$t5 rq=$q0,$q1,$q2\"";

/// One guest's figures: MiB/s sequential, I/Os per second random.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub seq_write: f64,
    pub seq_read: f64,
    pub rand_read_qd1: f64,
    pub rand_read_qd32: f64,
    pub rand_write_qd32: f64,
}

impl Sample {
    /// The figures in headline order, with their names.
    pub fn fields(&self) -> [(&'static str, f64); 5] {
        [
            ("seq_read", self.seq_read),
            ("seq_write", self.seq_write),
            ("rand_read_qd1", self.rand_read_qd1),
            ("rand_read_qd32", self.rand_read_qd32),
            ("rand_write_qd32", self.rand_write_qd32),
        ]
    }
}

/// Reads the guest's last `bench-nvme: seq_mib=…` line; refuses errors and
/// phases shorter than `/proc/uptime`'s resolution.
pub fn parse(console: &str) -> Result<Sample, String> {
    if let Some(l) = console.lines().find(|l| l.contains("bench-nvme-error")) {
        return Err(format!("dd failed in the guest: {}", l.trim_end()));
    }
    let line = console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(PREFIX))
        .rfind(|rest| rest.starts_with("seq_mib="))
        .ok_or("no `bench-nvme: seq_mib=…` line on the console")?;
    let field = |key: &str| -> Result<&str, String> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key).and_then(|r| r.strip_prefix('=')))
            .ok_or_else(|| format!("`bench-nvme:` line lacks {key}=: {line}"))
    };
    let count = |key: &str| -> Result<f64, String> {
        field(key)?
            .parse::<u64>()
            .ok()
            .filter(|n| *n > 0)
            .map(|n| n as f64)
            .ok_or_else(|| format!("`bench-nvme:` bad {key}= in {line}"))
    };
    let (mib, ios) = (count("seq_mib")?, count("ios")?);
    let t: Vec<f64> = field("t")?
        .split(',')
        .map(|v| v.parse::<f64>().ok().filter(|x| x.is_finite()))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("`bench-nvme:` t= is not a list of times: {line}"))?;
    let [t0, t1, t2, t3, t4, t5] = t[..] else {
        return Err(format!("`bench-nvme:` t= needs 6 times: {line}"));
    };
    let span = |a: f64, b: f64| -> Result<f64, String> {
        let s = b - a;
        if s < 0.02 {
            return Err(format!("implausible phase of {s:.3} s: {line}"));
        }
        Ok(s)
    };
    Ok(Sample {
        seq_write: mib / span(t0, t1)?,
        seq_read: mib / span(t1, t2)?,
        rand_read_qd1: ios / span(t2, t3)?,
        rand_read_qd32: ios / span(t3, t4)?,
        rand_write_qd32: ios / span(t4, t5)?,
    })
}

/// The I/O commands of the sequential passes, from the guest's `rq=` field (the
/// block layer's completed reads:writes of `/sys/block/nvme0n1/stat` before and
/// after each pass; each request is one NVMe command): (write commands of the
/// write pass, read commands of the read pass). Shows how a transfer limit
/// (MDTS) splits the 1 MiB requests.
pub fn seq_commands(console: &str) -> Option<(u64, u64)> {
    let line = console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(PREFIX))
        .rfind(|rest| rest.starts_with("seq_mib="))?;
    let rq = line
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix("rq="))?;
    let counts: Vec<(u64, u64)> = rq
        .split(',')
        .map(|p| {
            let (r, w) = p.split_once(':')?;
            Some((r.parse().ok()?, w.parse().ok()?))
        })
        .collect::<Option<_>>()?;
    let [(_, w0), (r1, w1), (r2, _)] = counts[..] else {
        return None;
    };
    Some((w1.checked_sub(w0)?, r2.checked_sub(r1)?))
}

/// Each figure's median over the samples.
pub fn medians(samples: &[Sample]) -> Option<Sample> {
    let m = |f: fn(&Sample) -> f64| median(&samples.iter().map(f).collect::<Vec<_>>());
    Some(Sample {
        seq_write: m(|s| s.seq_write)?,
        seq_read: m(|s| s.seq_read)?,
        rand_read_qd1: m(|s| s.rand_read_qd1)?,
        rand_read_qd32: m(|s| s.rand_read_qd32)?,
        rand_write_qd32: m(|s| s.rand_write_qd32)?,
    })
}

/// The headline: each figure's ratio hypervisor / bare.
pub fn headline(hyp: &Sample, bare: &Sample) -> String {
    let parts: Vec<String> = hyp
        .fields()
        .iter()
        .zip(bare.fields())
        .map(|((name, h), (_, b))| format!("{name}_ratio={:.2}", h / b))
        .collect();
    format!("nvme {}", parts.join(" "))
}

/// QEMU arguments giving the bare guest QEMU's own NVMe controller on `path`.
pub fn bare_nvme_args(path: &Path) -> Vec<String> {
    vec![
        "-drive".into(),
        format!(
            "file={},format=raw,if=none,id=d",
            path.display().to_string().replace(',', ",,")
        ),
        "-device".into(),
        format!("nvme,drive=d,serial={BARE_SERIAL}"),
    ]
}

/// Runs `cmd` to completion and reads the guest's figures.
fn measure(side: &str, cmd: std::process::Command) -> Result<Sample, Error> {
    let start = Instant::now();
    let mut s = Session::spawn(cmd, false, TIMEOUT)
        .map_err(|e| Error::step(format!("bench nvme: start QEMU ({side})"), e.to_string()))?;
    let code = s.wait_exit(Instant::now() + TIMEOUT);
    s.kill();
    let console = s.output().to_string();
    let fail = |why: String| {
        eprintln!(
            "\n--- {side}: last {CONSOLE_TAIL_LINES} console lines ---\n{}\n---",
            tail_lines(&console, CONSOLE_TAIL_LINES)
        );
        Error::step(format!("bench nvme ({side})"), why)
    };
    match code {
        Some(Some(0)) => {}
        Some(other) => return Err(fail(describe_exit(other))),
        None => return Err(fail(format!("timed out after {} s", TIMEOUT.as_secs()))),
    }
    if linux_guest::parse_console(&console).cmd_exit != Some(0) {
        return Err(fail("the guest command did not exit 0".into()));
    }
    let x = parse(&console).map_err(fail)?;
    let commands = seq_commands(&console).map_or_else(
        || String::from("commands unknown"),
        |(w, r)| format!("{w} write / {r} read commands"),
    );
    println!(
        "  {side:<10} seq write {:6.1} MiB/s, read {:6.1} MiB/s ({commands}); 4 KiB random read qd1 {:6.1}/s, qd32 {:6.1}/s, write qd32 {:6.1}/s ({:.0} s run)",
        x.seq_write,
        x.seq_read,
        x.rand_read_qd1,
        x.rand_read_qd32,
        x.rand_write_qd32,
        start.elapsed().as_secs_f64()
    );
    Ok(x)
}

/// A zero-filled sparse image of `size` bytes at `path` (recreated each round).
fn blank_image(path: &Path, size: u64) -> Result<(), Error> {
    let _ = std::fs::remove_file(path);
    let f = std::fs::File::create(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    f.set_len(size)
        .map_err(|e| Error::io(format!("size {}", path.display()), e))
}

/// `cargo xtask bench nvme`.
pub fn run_nvme(layout: &Layout) -> Result<String, Error> {
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.system_disk = Some(layout.out.join(BENCH_SYSTEM_DISK));
    o.fresh = true;
    o.nvme = Some(NvmeDisk::System);
    o.guest_cmd = Some(GUEST_SCRIPT.into());
    let prepared = prepare(layout, &o)?;
    let bare_img = layout.out.join(BARE_DISK);
    let bare = BareLinuxConfig {
        smp: prepared.vm.vcpus,
        mem: prepared.vm.mem,
        kernel: prepared.vm.kernel.clone(),
        initrd: prepared
            .vm
            .initrd
            .clone()
            .ok_or_else(|| Error::step("bench nvme", "the Linux guest has no initramfs"))?,
        append: prepared.vm.cmdline.clone(),
    };
    let mut bare_line: QemuLine = bare.line();
    bare_line.push(bare_nvme_args(&bare_img));
    eprintln!("xtask: bench nvme: hypervisor: {}", prepared.display());
    eprintln!("xtask: bench nvme: bare: {}", bare_line.display());
    println!(
        "bench nvme: /dev/nvme0n1 ({} MiB): {SEQ_PASSES} x {SEQ_MIB} MiB O_DIRECT sequential write and read, {RANDOM_IOS} 4 KiB random reads at qd1, {RANDOM_IOS} reads and writes at qd{QUEUE_DEPTH}; {ROUNDS} alternating rounds",
        DISK_SIZE >> 20
    );
    let (mut hyp, mut base) = (Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        let prepared = if round == 0 {
            prepared.clone()
        } else {
            prepare(layout, &o)?
        };
        hyp.push(measure("hypervisor", prepared.command())?);
        blank_image(&bare_img, DISK_SIZE)?;
        base.push(measure("bare", bare_line.command())?);
    }
    let (h, b) = medians(&hyp)
        .zip(medians(&base))
        .ok_or_else(|| Error::step("bench nvme", "no usable samples"))?;
    println!(
        "{:<16} {:>12} {:>12} {:>8}",
        "median", "hypervisor", "bare QEMU", "ratio"
    );
    for ((name, hv), (_, bv)) in h.fields().iter().zip(b.fields()) {
        let unit = if name.starts_with("seq") {
            "MiB/s"
        } else {
            "IOPS"
        };
        println!(
            "{:<16} {hv:>12.1} {bv:>12.1} {:>8.2}  {unit}",
            name,
            hv / bv
        );
        let target = if name.starts_with("seq") {
            SEQ_TARGET
        } else {
            RANDOM_TARGET
        };
        if hv / bv < target {
            println!(
                "note: {name} ratio {:.2} is below the target {target}",
                hv / bv
            );
        }
    }
    Ok(headline(&h, &b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINE: &str = "bench-nvme: seq_mib=128 ios=256 t=10.00,12.00,13.00,15.00,16.00,20.00";

    #[test]
    fn the_guest_line_parses_into_rates() {
        let log = format!("noise\r\n{LINE}\r\nrayos-guest: cmd exit 0\r\n");
        let s = parse(&log).unwrap();
        assert_eq!(
            s,
            Sample {
                seq_write: 64.0,
                seq_read: 128.0,
                rand_read_qd1: 128.0,
                rand_read_qd32: 256.0,
                rand_write_qd32: 64.0,
            }
        );
    }

    #[test]
    fn the_sequential_passes_command_counts_parse() {
        let log = format!("{LINE} rq=10:20,12:148,268:150\r\n");
        assert_eq!(seq_commands(&log), Some((128, 256)));
        assert_eq!(parse(&log).unwrap().seq_write, 64.0);
        assert_eq!(seq_commands(&format!("{LINE}\n")), None);
        assert_eq!(seq_commands(&format!("{LINE} rq=1:2,3:4\n")), None);
        assert_eq!(seq_commands(&format!("{LINE} rq=1:9,3:4,5:6\n")), None);
    }

    #[test]
    fn broken_lines_are_refused() {
        assert!(parse("nothing\n").is_err());
        assert!(parse(&format!("{LINE}\nbench-nvme-error rread\n"))
            .unwrap_err()
            .contains("dd failed"));
        for bad in [
            "bench-nvme: seq_mib=128 ios=256 t=1,2,3,4,5\n",
            "bench-nvme: seq_mib=128 ios=256 t=1,2,3,4,5,5\n",
            "bench-nvme: seq_mib=0 ios=256 t=1,2,3,4,5,6\n",
            "bench-nvme: seq_mib=128 t=1,2,3,4,5,6\n",
            "bench-nvme: seq_mib=128 ios=256 t=1,2,x,4,5,6\n",
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn the_headline_is_hypervisor_over_bare_medians() {
        let s = |x: f64| Sample {
            seq_write: x,
            seq_read: 2.0 * x,
            rand_read_qd1: 3.0 * x,
            rand_read_qd32: 4.0 * x,
            rand_write_qd32: 5.0 * x,
        };
        let h = medians(&[s(1.0), s(9.0), s(4.0)]).unwrap();
        assert_eq!(h, s(4.0));
        assert_eq!(
            headline(&h, &s(5.0)),
            "nvme seq_read_ratio=0.80 seq_write_ratio=0.80 rand_read_qd1_ratio=0.80 rand_read_qd32_ratio=0.80 rand_write_qd32_ratio=0.80"
        );
        assert!(medians(&[]).is_none());
    }

    #[test]
    fn the_guest_script_matches_the_constants_and_fits_the_command_line() {
        assert!(GUEST_SCRIPT.contains(&format!("n={SEQ_MIB}; k={RANDOM_IOS}; q={QUEUE_DEPTH};")));
        assert!(RANDOM_IOS.is_multiple_of(QUEUE_DEPTH));
        let x = format!("x4() {{{} }}", " $1;".repeat(SEQ_PASSES as usize));
        assert!(GUEST_SCRIPT.contains(&x), "{x}");
        assert!(GUEST_SCRIPT.contains(&format!("seq_mib=$((n*{SEQ_PASSES}))")));
        // The rest of the kernel command line (console, earlycon, rayos.*) is
        // under 300 characters of linux_guest::CMDLINE_MAX.
        assert!(linux_guest::guest_cmd_arg(GUEST_SCRIPT).len() < 1700);
        assert_eq!(
            bare_nvme_args(Path::new("/t/d.img")).join(" "),
            "-drive file=/t/d.img,format=raw,if=none,id=d -device nvme,drive=d,serial=rayosbench"
        );
    }
}
