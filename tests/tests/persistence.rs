//! One VM for life, across host reboots and power cuts: the Linux guest boots
//! from a system disk (a fresh image under `target/tmp/`, never the developer's
//! `target/system-disk.img`), the hypervisor keeps its identity and counts its
//! starts with atomic registry commits, the guest's disk keeps what it wrote, and
//! killing QEMU at any moment never leaves a registry that does not open.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use integration_tests::{boot, boot_lock, console_tail};
use xtask::linux_guest::parse_console;
use xtask::run::{prepare, Guest, RunOptions};
use xtask::session::Session;
use xtask::sysdisk;
use xtask::Layout;

/// Budget of one complete boot (build and guest fetch not counted).
const TIMEOUT: Duration = Duration::from_secs(120);
/// Power cuts in the second test.
const CUTS: usize = 10;
/// Odd cuts: latest power cut after QEMU's spawn, past the hypervisor's start
/// commit and usually into the guest's disk writes (a boot to the guest's shell
/// takes ~4-6 s here, more on a loaded host).
const MAX_CUT: Duration = Duration::from_millis(6500);
/// Even cuts wait for the guest's `rayos-guest: ready` and cut within this much
/// after it, so the guest's writes are covered however slow the host is.
const MAX_CUT_AFTER_READY: Duration = Duration::from_millis(1500);

/// A fresh directory for this test's system disk under `target/tmp/`.
fn scratch(test: &str) -> PathBuf {
    let dir = Layout::detect()
        .out
        .join("tmp")
        .join(format!("persistence-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn linux_on(disk: &Path, cmd: &str) -> RunOptions {
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    // Beside the authority partition (the default configuration).
    o.authority = true;
    o.system_disk = Some(disk.to_path_buf());
    o.guest_cmd = Some(cmd.into());
    o
}

/// The UUID in the hypervisor's `VM '<name>' identity <uuid>` line.
fn identity(console: &str) -> Option<String> {
    console.lines().find_map(|l| {
        let (_, rest) = l.split_once("[el2 ")?;
        let (_, id) = rest.split_once("' identity ")?;
        Some(id.trim().to_string())
    })
}

/// N of the hypervisor's `VM '<name>' <uuid>: start #N` line.
fn start_number(console: &str) -> Option<u64> {
    console.lines().find_map(|l| {
        let (_, rest) = l.split_once("[el2 ")?;
        let (_, n) = rest.split_once(": start #")?;
        n.split_whitespace().next()?.parse().ok()
    })
}

#[test]
fn same_vm_across_host_reboots() {
    let _boot = boot_lock();
    let dir = scratch("reboots");
    let disk = dir.join("system-disk.img");
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let marker = format!("rayos-persist-{nonce:x}");

    // Boot 1: a raw write to the first sector of /dev/vda, flushed, then power off.
    let first = boot(&linux_on(
        &disk,
        &format!("printf '{marker}\\n' | dd of=/dev/vda bs=512 count=1 conv=sync,fsync && sync && echo wrote-marker"),
    ));
    let tail1 = console_tail(&first);
    assert_eq!(first.verdict(), Ok(()), "boot 1\n{tail1}");
    assert!(
        first
            .console
            .lines()
            .any(|l| l.trim_end() == "wrote-marker"),
        "boot 1 did not write\n{tail1}"
    );
    let id1 =
        identity(&first.console).unwrap_or_else(|| panic!("boot 1: no identity line\n{tail1}"));
    assert_eq!(start_number(&first.console), Some(1), "boot 1\n{tail1}");

    // Boot 2, same system disk: the same VM, its second start, the marker read back.
    let second = boot(&linux_on(
        &disk,
        "dd if=/dev/vda bs=512 count=1 2>/dev/null | head -n 1 | sed 's/^/read-back: /'",
    ));
    let tail2 = console_tail(&second);
    assert_eq!(second.verdict(), Ok(()), "boot 2\n{tail2}");
    assert_eq!(
        identity(&second.console).as_deref(),
        Some(id1.as_str()),
        "boot 2 has another identity\n{tail2}"
    );
    assert_eq!(start_number(&second.console), Some(2), "boot 2\n{tail2}");
    let want = format!("read-back: {marker}");
    assert!(
        second.console.lines().any(|l| l.trim_end() == want),
        "boot 2 did not read `{marker}` back from /dev/vda\n{tail2}"
    );

    // The host sees the same: one VM, that identity, two starts.
    let reg = sysdisk::inspect(&disk).unwrap();
    assert_eq!(reg.vms.len(), 1);
    assert_eq!(reg.vms[0].uuid.to_string(), id1);
    assert_eq!(reg.vms[0].starts, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// splitmix64: a small seeded generator, so a failing run can be repeated with
/// `PERSISTENCE_SEED=<seed>`.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, max: Duration) -> Duration {
        Duration::from_millis(self.next() % (max.as_millis() as u64 + 1))
    }
}

#[test]
fn power_cut_never_corrupts_the_registry() {
    let _boot = boot_lock();
    let started = Instant::now();
    let dir = scratch("power-cut");
    let disk = dir.join("system-disk.img");
    let seed = std::env::var("PERSISTENCE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("power-cut seed {seed} (repeat with PERSISTENCE_SEED={seed})");
    let mut rng = Rng(seed);

    // The guest rewrites /dev/vda for as long as it runs.
    let o = linux_on(
        &disk,
        "i=0; while :; do i=$((i+1)); dd if=/dev/zero of=/dev/vda bs=64k count=16 seek=$((i % 64)) conv=fsync 2>/dev/null; done",
    );
    let layout = Layout::detect();
    let prepared = prepare(&layout, &o).unwrap_or_else(|e| panic!("set-up failed: {e}"));
    let vm = prepared
        .system_disk
        .as_ref()
        .expect("a system-disk run")
        .vm_uuid;
    let mut last = sysdisk::inspect(&disk).unwrap();
    let mut kills = Vec::new();
    for cut in 1..=CUTS {
        let spawned = Instant::now();
        let mut qemu = Session::spawn(prepared.command(), false, TIMEOUT)
            .unwrap_or_else(|e| panic!("start QEMU: {e}"));
        let slept = if cut % 2 == 1 {
            qemu.sleep(rng.below(MAX_CUT))
        } else {
            let mut ready = Ok(());
            while ready.is_ok() && !parse_console(qemu.output()).ready_seen {
                ready = qemu.sleep(Duration::from_millis(20));
                if qemu.exit_code().is_some() {
                    break;
                }
            }
            ready.and_then(|()| qemu.sleep(rng.below(MAX_CUT_AFTER_READY)))
        };
        let exited_early = qemu.exit_code();
        qemu.kill();
        let at = spawned.elapsed();
        kills.push(at);
        let console = qemu.output().to_string();
        assert!(
            slept.is_ok() && exited_early.is_none(),
            "cut {cut}: QEMU ended before the power cut at {at:?} ({exited_early:?})\n{}",
            xtask::error::tail_lines(&console, 30)
        );
        let reg = sysdisk::inspect(&disk).unwrap_or_else(|e| {
            panic!(
                "cut {cut} at {at:?} (seed {seed}): the registry does not open: {e}\n{}",
                xtask::error::tail_lines(&console, 30)
            )
        });
        let rec = reg
            .vms
            .iter()
            .find(|v| v.uuid == vm)
            .unwrap_or_else(|| panic!("cut {cut}: the VM is gone: {reg:?}"));
        let logged = start_number(&console);
        let phase = if parse_console(&console).ready_seen {
            "guest writing /dev/vda"
        } else if logged.is_some() {
            "after the start commit, guest booting"
        } else {
            "before the start commit was logged"
        };
        println!(
            "cut {cut:2} at {:5} ms ({phase}): registry generation {}, starts {}{}",
            at.as_millis(),
            reg.generation,
            rec.starts,
            match logged {
                Some(n) => format!(", hypervisor had logged start #{n}"),
                None => String::new(),
            }
        );
        assert_eq!(reg.vms.len(), 1, "cut {cut}: {reg:?}");
        let before = last.vms[0].starts;
        // Either the start commit landed or it did not: never more than one step.
        assert!(
            rec.starts == before || rec.starts == before + 1,
            "cut {cut}: starts went from {before} to {}",
            rec.starts
        );
        assert!(reg.generation >= last.generation);
        // A logged start was committed (the log line follows the flush).
        if let Some(n) = logged {
            assert_eq!(
                rec.starts, n,
                "cut {cut}: logged start #{n} but the registry says {}",
                rec.starts
            );
        }
        last = reg;
    }
    println!(
        "power cuts at (ms after spawn): {:?}",
        kills.iter().map(Duration::as_millis).collect::<Vec<_>>()
    );

    // One clean boot: the same VM starts and the guest comes up.
    let clean = boot(&linux_on(&disk, "echo clean-boot"));
    let tail = console_tail(&clean);
    assert_eq!(clean.verdict(), Ok(()), "clean boot after the cuts\n{tail}");
    assert_eq!(clean.exit_code(), Some(0), "\n{tail}");
    assert_eq!(
        identity(&clean.console),
        Some(vm.to_string()),
        "clean boot: another identity\n{tail}"
    );
    assert!(
        parse_console(&clean.console).ready_seen,
        "no `rayos-guest: ready`\n{tail}"
    );
    let before = last.vms[0].starts;
    assert_eq!(start_number(&clean.console), Some(before + 1), "\n{tail}");
    assert_eq!(sysdisk::inspect(&disk).unwrap().vms[0].starts, before + 1);
    println!(
        "power-cut test: {CUTS} cuts and a clean boot in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_read_only_system_disk_still_boots_its_vm() {
    let _boot = boot_lock();
    let dir = scratch("read-only");
    let disk = dir.join("system-disk.img");
    // QEMU is spawned here without the run's script, so nothing would type
    // `host shutdown` into the partition's shell: the run ends with its guest.
    let o = RunOptions {
        authority: false,
        ..linux_on(&disk, "echo booted-read-only")
    };
    let prepared = prepare(&Layout::detect(), &o).unwrap_or_else(|e| panic!("set-up failed: {e}"));
    let before = sysdisk::inspect(&disk).unwrap();
    // The same boot with the image attached read-only.
    let line = sysdisk::qemu_line(&prepared.qemu, &disk).map_args(|a| {
        if a.starts_with("file=") && a.contains(&format!("id={}", sysdisk::DRIVE_ID)) {
            format!("{a},readonly=on")
        } else {
            a
        }
    });
    let args = line.args();
    assert!(args.iter().any(|a| a.ends_with(",readonly=on")), "{args:?}");
    let mut qemu = Session::spawn(line.command(), false, TIMEOUT)
        .unwrap_or_else(|e| panic!("start QEMU: {e}"));
    let code = qemu.wait_exit(Instant::now() + TIMEOUT);
    qemu.kill();
    let console = qemu.output();
    let tail = xtask::error::tail_lines(console, 40);
    assert_eq!(code, Some(Some(0)), "\n{tail}");
    assert!(
        console.contains("start #1 not recorded: the system disk is read-only"),
        "no read-only line\n{tail}"
    );
    assert_eq!(
        identity(console),
        Some(before.vms[0].uuid.to_string()),
        "\n{tail}"
    );
    assert_eq!(parse_console(console).cmd_exit, Some(0), "\n{tail}");
    assert!(
        console.lines().any(|l| l.trim_end() == "booted-read-only"),
        "\n{tail}"
    );
    // Nothing was written: the same generation, no start counted.
    assert_eq!(sysdisk::inspect(&disk).unwrap(), before);
    std::fs::remove_dir_all(&dir).unwrap();
}
