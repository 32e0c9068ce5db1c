//! Suspend, resume and snapshots of a VM whose MSIs go through the GICv3 ITS
//! (`--nvme system --msi its`: the VM's system-disk extent as NVMe namespace 1 at
//! 00:01.0, its queue interrupts MSI-X translated by the ITS into LPIs). The ITS's
//! registers and translations (`VITS`) and the LPIs' state (the vGIC's LPI
//! section) go into the suspend image and snapshots.
//!
//! The Linux guest writes 256 KiB of random data to the namespace, keeps direct
//! (O_DIRECT) writes going in the background so commands and their MSIs are in
//! flight when the VM is paused, and prints a counter once a second with what it
//! reads back through the controller (page cache dropped) and how many interrupts
//! the I/O queues took through the ITS (their /proc/interrupts lines, whose chip
//! is the ITS's MSI domain).
//!
//! Every boot runs beside the authority partition; its shell takes the scripts'
//! `monitor` lines (the bundle's test types into the guest's console after
//! `attach linux`). Boot 1 suspends the VM (`monitor vm suspend linux`; the host
//! stays up for the partition, `monitor host shutdown` powers it off). Boot 2
//! (a host restart on the same system disk) resumes it: no kernel boot, the counter
//! goes on, the data reads back, and the ITS interrupt count keeps rising — the
//! restored ITS translates the controller's messages; then a disk snapshot is
//! taken and rolled back to, and the guest goes on the same way.
//!
//! A boot bundle's ITS VM (`--nvme 16M --msi its`, cold-booted) takes an
//! in-memory snapshot, reads its disk, rolls back, and its NVMe I/O completes
//! through the restored ITS.

use std::path::{Path, PathBuf};
use std::time::Duration;

use integration_tests::{boot, boot_lock, console_tail, console_value, script, statuses};
use registry::cli::FileDisk;
use registry::Registry;
use xtask::run::{Ending, Guest, NvmeDisk, RunOptions};
use xtask::Layout;

/// Budget of one boot (build and guest fetch not counted).
const TIMEOUT: Duration = Duration::from_secs(300);
/// Where the random data lives on the namespace (4 KiB blocks), and how much.
const DATA_BLOCK: u64 = 100;
const DATA_BLOCKS: u64 = 64;
/// Where the background writer writes (4 KiB blocks, away from the rest).
const BUSY_BLOCK: u64 = 1000;

/// The counter loop: data, background writer, one line a second.
fn counter_cmd() -> String {
    format!(
        r#"dd if=/dev/urandom of=/tmp/pat bs=4096 count={DATA_BLOCKS} 2>/dev/null
dd if=/tmp/pat of=/dev/nvme0n1 bs=4096 seek={DATA_BLOCK} conv=fsync 2>/dev/null && echo wrote=$(md5sum < /tmp/pat | cut -d' ' -f1)
grep nvme /proc/interrupts | sed 's/^/irq: /'
(while :; do dd if=/dev/urandom of=/dev/nvme0n1 bs=65536 seek={busy} count=4 oflag=direct 2>/dev/null; done) &
i=0; while :; do i=$((i+1)); sync; echo 3 > /proc/sys/vm/drop_caches
m=$(dd if=/dev/nvme0n1 bs=4096 skip={DATA_BLOCK} count={DATA_BLOCKS} 2>/dev/null | md5sum | cut -d' ' -f1)
t=0; while read n a b rest; do case "$rest" in ITS*nvme0q[1-9]*) t=$((t+a+b));; esac; done < /proc/interrupts
echo "count=$i up=$(cut -d' ' -f1 /proc/uptime) data=$m irqs=$t"
sleep 1; done"#,
        busy = BUSY_BLOCK * 4096 / 65536,
    )
}

/// One counter line.
#[derive(Debug, Clone, PartialEq)]
struct Tick {
    count: u64,
    uptime: f64,
    data: String,
    /// Interrupts the NVMe I/O queues took through the ITS so far.
    irqs: u64,
}

fn ticks(console: &str) -> Vec<Tick> {
    let re =
        regex::Regex::new(r"(?m)^count=(\d+) up=([\d.]+) data=([0-9a-f]*) irqs=(\d+)\r?$").unwrap();
    re.captures_iter(console)
        .map(|c| Tick {
            count: c[1].parse().unwrap(),
            uptime: c[2].parse().unwrap(),
            data: c[3].to_string(),
            irqs: c[4].parse().unwrap(),
        })
        .collect()
}

/// Each tick follows the one before, reads the same data, and the I/O it did since
/// was completed through ITS interrupts.
fn assert_going_on(t: &[Tick], data: &str, tail: &str) {
    for w in t.windows(2) {
        assert_eq!(w[1].count, w[0].count + 1, "{w:?}\n{tail}");
        assert!(
            w[1].irqs > w[0].irqs,
            "no ITS interrupt for the NVMe I/O queues between {w:?}\n{tail}"
        );
    }
    assert!(t.iter().all(|x| x.data == data), "the data changed\n{tail}");
}

/// The Linux kernel's boot banner.
fn booted_kernel(console: &str) -> bool {
    console.contains("Booting Linux on physical CPU") || console.contains("Linux version ")
}

/// A fresh directory for this test's system disk under `target/tmp/`.
fn scratch(test: &str) -> PathBuf {
    let dir = Layout::detect()
        .out
        .join("tmp")
        .join(format!("its-suspend-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A 2-vCPU Linux run from the system disk at `disk`, its guest disk behind NVMe
/// with MSIs through the ITS.
fn its_system(disk: &Path, script_text: (&str, String)) -> RunOptions {
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.smp = Some(2);
    // Leaves room for the snapshot pool in the host's RAM.
    o.mem = Some(256 << 20);
    o.nvme = Some(NvmeDisk::System);
    o.msi = Some(boards::devices::Msi::Its);
    o.system_disk = Some(disk.to_path_buf());
    o.guest_cmd = Some(counter_cmd());
    o.script = Some(script(script_text.0, &script_text.1));
    // Beside the authority partition (the default configuration): the
    // scripts' `monitor` lines go to its shell.
    o.authority = true;
    o
}

/// The VM's saved-state blob size as the registry records it.
fn saved_state_size(disk: &Path) -> u64 {
    let mut d = FileDisk::open(disk, true).unwrap();
    let reg = Registry::open(&mut d).expect("the registry opens");
    reg.vms()[0].saved_state.size
}

#[test]
fn an_its_vm_suspends_with_msis_in_flight_and_resumes_after_host_restart() {
    let _boot = boot_lock();
    let dir = scratch("nvme");
    let disk = dir.join("system-disk.img");

    // Boot 1: count to 3, suspend.
    let mut o = its_system(
        &disk,
        (
            "its-suspend-1.script",
            "expect (?m)^count=3 \nmonitor vm suspend linux\nmonitor host shutdown\n".into(),
        ),
    );
    o.fresh = true;
    let first = boot(&o);
    let tail1 = console_tail(&first);
    let got = statuses(&first.console);
    assert!(
        got.iter()
            .any(|s| s.starts_with("ok: vm linux suspended (")),
        "`vm suspend` did not suspend the ITS VM: {got:#?}\n{tail1}"
    );
    assert_eq!(
        first.exit_code(),
        Some(0),
        "QEMU did not power off\n{tail1}"
    );
    let wrote = console_value(&first.console, "wrote")
        .unwrap_or_else(|| panic!("boot 1 did not write its data\n{tail1}"))
        .to_string();
    // Every queue of the controller is an MSI of the ITS.
    let irqs: Vec<&str> = first
        .console
        .lines()
        .filter(|l| l.starts_with("irq: "))
        .collect();
    for q in ["nvme0q0", "nvme0q1", "nvme0q2"] {
        let line = irqs
            .iter()
            .find(|l| l.trim_end().ends_with(q))
            .unwrap_or_else(|| panic!("no interrupt for {q}\n{tail1}"));
        assert!(
            line.contains("ITS") && line.contains("MSI"),
            "{q} is not an ITS MSI: {line}\n{tail1}"
        );
    }
    let before = ticks(&first.console);
    let last = before
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("no counter\n{tail1}"));
    assert_going_on(&before, &wrote, &tail1);
    assert!(saved_state_size(&disk) > 0, "no saved state committed");

    // Boot 2 (host restart): resume, three ticks, a disk snapshot, two more
    // ticks, a rollback, three ticks after it.
    let want = last.count + 3;
    let second = boot(&its_system(
        &disk,
        (
            "its-suspend-2.script",
            format!(
                "expect (?m)^count={want} \n\
                 monitor vm snapshot linux s1 --disk\n\
                 expect (?m)^count={} \n\
                 monitor vm rollback linux s1\n\
                 expect (?m)^count=\\d+ \n\
                 expect (?m)^count=\\d+ \n\
                 expect (?m)^count=\\d+ \n",
                want + 2
            ),
        ),
    ));
    let tail2 = console_tail(&second);
    assert_eq!(second.verdict(), Ok(()), "boot 2\n{tail2}");
    assert!(
        second.console.contains("resumed from its saved state"),
        "the hypervisor did not resume\n{tail2}"
    );
    assert!(
        !booted_kernel(&second.console),
        "the kernel booted again after resume\n{tail2}"
    );
    assert_eq!(saved_state_size(&disk), 0, "the image was not consumed");
    let got = statuses(&second.console);
    assert!(
        got.len() == 2
            && got[0].starts_with("ok: vm linux snapshot 's1' taken")
            && got[1] == "ok: vm linux rolled back to snapshot 's1'",
        "{got:#?}\n{tail2}"
    );
    let (at_snapshot, after_rollback) = second
        .console
        .split_once("rolled back to snapshot 's1'")
        .unwrap();
    let resumed = ticks(at_snapshot);
    assert_eq!(
        resumed[0].count,
        last.count + 1,
        "{:?} after {last:?}\n{tail2}",
        resumed[0]
    );
    assert!(resumed[0].uptime > last.uptime, "uptime restarted\n{tail2}");
    // The interrupt counts live in guest RAM: they go on from the suspended ones,
    // and rise with every tick through the restored ITS.
    assert!(
        resumed[0].irqs > last.irqs,
        "{:?} after {last:?}\n{tail2}",
        resumed[0]
    );
    assert_going_on(&resumed, &wrote, &tail2);
    // After the rollback (the ITS restored from the snapshot) the same holds.
    let rolled = ticks(after_rollback);
    assert!(rolled.len() >= 3, "the counter stopped\n{tail2}");
    assert_going_on(&rolled, &wrote, &tail2);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bundle_its_vm_rolls_back_an_in_memory_snapshot_and_its_nvme_interrupts_go_on() {
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.smp = Some(2);
    o.mem = Some(256 << 20);
    o.nvme = Some(NvmeDisk::Ram(16 << 20));
    o.msi = Some(boards::devices::Msi::Its);
    o.authority = true;
    // Each line: 64 KiB written (not between snapshot and rollback: a bundle's RAM
    // disk has no log, so a written one refuses the rollback) and 64 KiB read past
    // the page cache, through the NVMe I/O queues' ITS interrupts, and their
    // interrupt count.
    let io = |tag: &str| {
        let write = if tag == "taken" {
            ""
        } else {
            "dd if=/dev/urandom of=/dev/nvme0n1 bs=65536 count=1 oflag=direct 2>/dev/null; "
        };
        format!(
            "send {write}dd if=/dev/nvme0n1 of=/dev/null bs=65536 count=1 iflag=direct 2>/dev/null; \
             t=0; while read n a b rest; do case \"$rest\" in ITS*nvme0q[1-9]*) t=$((t+a+b));; esac; done < /proc/interrupts; \
             echo {tag}=$t-$((2+2))\n\
             expect {tag}=\\d+-4\n"
        )
    };
    o.script = Some(script(
        "its-rollback.script",
        &format!(
            "expect starting a shell\n\
             attach linux\n\
             sleep 0.5\n\
             {}\
             monitor vm snapshot linux m1\n\
             {}\
             monitor vm rollback linux m1\n\
             {}\
             {}",
            io("before"),
            io("taken"),
            io("rolled"),
            io("again"),
        ),
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::ScriptDone, "\n{tail}");
    let got = statuses(&outcome.console);
    assert!(
        got.len() == 2
            && got[0].starts_with("ok: vm linux snapshot 'm1' taken")
            && got[1] == "ok: vm linux rolled back to snapshot 'm1'",
        "{got:#?}\n{tail}"
    );
    let value = |tag: &str| -> u64 {
        let re = regex::Regex::new(&format!(r"(?m)^{tag}=(\d+)-4\r?$")).unwrap();
        re.captures(&outcome.console)
            .unwrap_or_else(|| panic!("no {tag} line\n{tail}"))[1]
            .parse()
            .unwrap()
    };
    let (before, taken, rolled, again) = (
        value("before"),
        value("taken"),
        value("rolled"),
        value("again"),
    );
    assert!(before > 0 && taken > before, "{before} {taken}\n{tail}");
    // After the rollback the counts are the snapshot's (guest RAM) plus the I/O
    // done since, through the restored ITS.
    assert!(rolled > before, "{before} {taken} {rolled}\n{tail}");
    assert!(again > rolled, "{rolled} {again}\n{tail}");
}
