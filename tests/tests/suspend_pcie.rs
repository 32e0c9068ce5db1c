//! Suspend, resume and snapshots of a VM whose disk is behind PCI Express
//! (`--nvme system`: the VM's system-disk extent as NVMe namespace 1 at 00:01.0,
//! its queue interrupts MSI-X through the GICv2m frame). The Linux guest writes
//! 256 KiB of random data to the namespace, keeps direct (O_DIRECT) writes going
//! in the background so commands are in flight when the VM is paused, and prints a
//! counter once a second with what it reads back from the namespace (page cache
//! dropped, so through the controller): the last counter block and the data's
//! checksum; then it writes the counter's block with a flush.
//!
//! Every boot runs beside the authority partition; its shell takes the scripts'
//! `monitor` lines. Boot 1 suspends the VM with `monitor vm suspend linux` (the
//! host stays up for the partition; `monitor host shutdown` powers it off). Boot
//! 2 (a host restart on the same system disk) resumes it: no kernel boot, the
//! counter goes on from the next value, the data and the last block written before
//! the suspend read back, each new block reads back the tick after; then a disk
//! snapshot (`--disk`: its image on the system disk) is taken and rolled back to
//! (the restored controller reads the namespace as the disk log put it back). Boot 3 (another host restart, a cold
//! boot: the image was consumed) reads the last block boot 2 confirmed, or a later
//! one, and the data.

use std::path::{Path, PathBuf};
use std::time::Duration;

use integration_tests::{boot, boot_lock, console_tail, console_value, script, statuses};
use registry::cli::FileDisk;
use registry::Registry;
use xtask::run::{Guest, NvmeDisk, RunOptions};
use xtask::Layout;

/// Budget of one boot (build and guest fetch not counted).
const TIMEOUT: Duration = Duration::from_secs(300);
/// Where the random data lives on the namespace (4 KiB blocks), and how much.
const DATA_BLOCK: u64 = 100;
const DATA_BLOCKS: u64 = 64;
/// Where the background writer writes (4 KiB blocks, away from the rest).
const BUSY_BLOCK: u64 = 1000;

/// Reads the counter block and the data's checksum through the controller.
const READ_BACK: &str = "echo 3 > /proc/sys/vm/drop_caches
d=$(dd if=/dev/nvme0n1 bs=512 count=1 2>/dev/null | tr -d '\\000' | head -n 1)
m=$(dd if=/dev/nvme0n1 bs=4096 skip=DATA count=BLOCKS 2>/dev/null | md5sum | cut -d' ' -f1)";

fn read_back() -> String {
    READ_BACK
        .replace("DATA", &DATA_BLOCK.to_string())
        .replace("BLOCKS", &DATA_BLOCKS.to_string())
}

/// Boots 1 and 2: the data, the background writer, the counter loop.
fn counter_cmd() -> String {
    format!(
        r#"dd if=/dev/urandom of=/tmp/pat bs=4096 count={DATA_BLOCKS} 2>/dev/null
dd if=/tmp/pat of=/dev/nvme0n1 bs=4096 seek={DATA_BLOCK} conv=fsync 2>/dev/null && echo wrote=$(md5sum < /tmp/pat | cut -d' ' -f1)
(while :; do dd if=/dev/urandom of=/dev/nvme0n1 bs=65536 seek={busy} count=4 oflag=direct 2>/dev/null; done) &
i=0; while :; do i=$((i+1)); sync; {read}
echo "count=$i up=$(cut -d' ' -f1 /proc/uptime) disk=$d data=$m"
printf 'c%s\n' $i | dd of=/dev/nvme0n1 bs=512 count=1 conv=sync,fsync 2>/dev/null; sleep 1; done"#,
        busy = BUSY_BLOCK * 4096 / 65536,
        read = read_back(),
    )
}

/// Boot 3: what the namespace holds.
fn check_cmd() -> String {
    format!("{}\necho \"first=$d data=$m\"", read_back())
}

/// One counter line.
#[derive(Debug, Clone, PartialEq)]
struct Tick {
    count: u64,
    uptime: f64,
    disk: String,
    data: String,
}

fn ticks(console: &str) -> Vec<Tick> {
    let re =
        regex::Regex::new(r"(?m)^count=(\d+) up=([\d.]+) disk=(\S*) data=([0-9a-f]*)\r?$").unwrap();
    re.captures_iter(console)
        .map(|c| Tick {
            count: c[1].parse().unwrap(),
            uptime: c[2].parse().unwrap(),
            disk: c[3].to_string(),
            data: c[4].to_string(),
        })
        .collect()
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
        .join(format!("suspend-pcie-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A 2-vCPU Linux run from the system disk at `disk`, its guest disk behind NVMe.
fn nvme_system(disk: &Path, cmd: String, script_text: Option<(&str, String)>) -> RunOptions {
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.smp = Some(2);
    // Leaves room for the snapshot pool in the host's RAM.
    o.mem = Some(256 << 20);
    o.nvme = Some(NvmeDisk::System);
    o.system_disk = Some(disk.to_path_buf());
    o.guest_cmd = Some(cmd);
    o.script = script_text.map(|(name, text)| script(name, &text));
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

/// Each tick reads back the block the tick before wrote, and the same data.
fn assert_consecutive(t: &[Tick], data: &str, tail: &str) {
    for w in t.windows(2) {
        assert_eq!(w[1].count, w[0].count + 1, "{w:?}\n{tail}");
        assert_eq!(w[1].disk, format!("c{}", w[0].count), "{w:?}\n{tail}");
    }
    assert!(t.iter().all(|x| x.data == data), "the data changed\n{tail}");
}

#[test]
fn an_nvme_vm_suspends_resumes_after_host_restart_and_keeps_its_namespace() {
    let _boot = boot_lock();
    let dir = scratch("nvme");
    let disk = dir.join("system-disk.img");

    // Boot 1: count to 3, suspend.
    let mut o = nvme_system(
        &disk,
        counter_cmd(),
        Some((
            "suspend-pcie-1.script",
            "expect (?m)^count=3 \nmonitor vm suspend linux\nmonitor host shutdown\n".into(),
        )),
    );
    o.fresh = true;
    let first = boot(&o);
    let tail1 = console_tail(&first);
    assert!(
        first.console.contains("as NVMe namespace 1"),
        "the hypervisor did not put disk 0 behind NVMe\n{tail1}"
    );
    let got = statuses(&first.console);
    assert!(
        got.iter()
            .any(|s| s.starts_with("ok: vm linux suspended (")),
        "`vm suspend` did not suspend the NVMe VM: {got:#?}\n{tail1}"
    );
    assert!(
        first
            .console
            .contains("no VM left to run; the host stays up for the authority partition"),
        "the host did not say it stays up for the partition after the suspend\n{tail1}"
    );
    assert_eq!(
        first.exit_code(),
        Some(0),
        "QEMU did not power off\n{tail1}"
    );
    let wrote = console_value(&first.console, "wrote")
        .unwrap_or_else(|| panic!("boot 1 did not write its data\n{tail1}"))
        .to_string();
    let before = ticks(&first.console);
    let last = before
        .last()
        .cloned()
        .unwrap_or_else(|| panic!("no counter\n{tail1}"));
    assert_consecutive(&before, &wrote, &tail1);
    assert!(saved_state_size(&disk) > 0, "no saved state committed");

    // Boot 2 (host restart): resume, three ticks, a disk snapshot, two more ticks,
    // a rollback, three ticks after it.
    let want = last.count + 3;
    let second = boot(&nvme_system(
        &disk,
        counter_cmd(),
        Some((
            "suspend-pcie-2.script",
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
        )),
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
            && got[0].starts_with("ok: vm linux snapshot 's1' taken (disk, ")
            && got[1] == "ok: vm linux rolled back to snapshot 's1'",
        "{got:#?}\n{tail2}"
    );
    let (at_snapshot, after_rollback) = second
        .console
        .split_once("rolled back to snapshot 's1'")
        .unwrap();
    let resumed = ticks(at_snapshot);
    // The next value, with the block written before the suspend and the data read
    // through the restored controller; every new block reads back.
    assert_eq!(
        resumed[0].count,
        last.count + 1,
        "{:?} after {last:?}\n{tail2}",
        resumed[0]
    );
    assert!(resumed[0].uptime > last.uptime, "uptime restarted\n{tail2}");
    assert_eq!(resumed[0].disk, format!("c{}", last.count), "\n{tail2}");
    assert_consecutive(&resumed, &wrote, &tail2);
    // After the rollback: back to a count no later than the snapshot's next, the
    // namespace as it was then (the block of the tick before), going on.
    let rolled = ticks(after_rollback);
    let taken = at_snapshot
        .split_once("snapshot 's1' taken")
        .map(|(_, after)| ticks(after))
        .unwrap_or_default();
    assert!(
        taken.len() >= 2,
        "no ticks between snapshot and rollback\n{tail2}"
    );
    assert!(rolled.len() >= 3, "the counter stopped\n{tail2}");
    assert!(
        rolled[0].count <= taken[0].count,
        "the counter did not go back: {:?} after {:?}\n{tail2}",
        rolled[0],
        taken.last()
    );
    assert_eq!(
        rolled[0].disk,
        format!("c{}", rolled[0].count - 1),
        "the namespace was not rolled back with RAM\n{tail2}"
    );
    assert_consecutive(&rolled, &wrote, &tail2);
    let confirmed = rolled.last().unwrap().count - 1;

    // Boot 3 (host restart, cold): what boot 2 wrote after the rollback is there.
    let third = boot(&nvme_system(&disk, check_cmd(), None));
    let tail3 = console_tail(&third);
    assert_eq!(third.verdict(), Ok(()), "boot 3\n{tail3}");
    assert!(
        booted_kernel(&third.console),
        "boot 3 was not cold\n{tail3}"
    );
    let first_block = console_value(&third.console, "first")
        .unwrap_or_else(|| panic!("boot 3 did not read\n{tail3}"));
    let (block, data) = first_block.split_once(" data=").unwrap();
    let n: u64 = block
        .strip_prefix('c')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("block 0 holds {block:?}\n{tail3}"));
    assert!(
        n >= confirmed,
        "block 0 holds c{n}, boot 2 confirmed c{confirmed}\n{tail3}"
    );
    assert_eq!(data, wrote, "the data changed\n{tail3}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A `--virtio-pci` VM boots from a bundle: `vm suspend` is refused (nowhere to
/// suspend to; the VM stays paused and is resumed), but an in-memory snapshot saves the virtio-PCI function with the
/// root complex, and after a rollback the guest reads its disk through the
/// restored function (the block written before the snapshot; a file made in RAM
/// after it is gone).
#[test]
fn a_virtio_pci_vm_refuses_suspend_and_rolls_back_through_the_restored_function() {
    let _boot = boot_lock();
    let nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        % 1_000_000_000;
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.smp = Some(2);
    // Leaves room for the snapshot pool in the host's RAM.
    o.mem = Some(256 << 20);
    o.virtio_pci = Some(16 << 20);
    o.authority = true;
    o.script = Some(script(
        "suspend-pcie-virtio.script",
        &format!(
            "expect starting a shell\n\
             attach linux\n\
             sleep 0.5\n\
             send printf 'vpci-%s\\n' $(({nonce}*3)) | dd of=/dev/vda bs=4096 seek=7 count=1 conv=sync,fsync 2>/dev/null; echo wrote-$((1+1))\n\
             expect wrote-2\n\
             monitor vm suspend linux\n\
             monitor vm resume linux\n\
             monitor vm snapshot linux p1\n\
             send echo later > /tmp/later; echo 3 > /proc/sys/vm/drop_caches; echo read1=$(dd if=/dev/vda bs=4096 skip=7 count=1 2>/dev/null | head -n 1) later=$(cat /tmp/later)-$((2+3))\n\
             expect later=later-5\n\
             monitor vm rollback linux p1\n\
             send echo 3 > /proc/sys/vm/drop_caches; echo read2=$(dd if=/dev/vda bs=4096 skip=7 count=1 2>/dev/null | head -n 1) later=$(cat /tmp/later 2>/dev/null || echo gone)-$((4+5))\n\
             expect later=gone-9\n\
             send exit\n\
             expect shell exited\n\
             expect no VM left to run; the host stays up\n\
             monitor host shutdown\n"
        ),
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.verdict(), Ok(()), "\n{tail}");
    let console = &outcome.console;
    let block = format!("vpci-{}", nonce * 3);
    assert!(
        console.contains(&format!("read1={block} later=later-5")),
        "the block did not read back before the rollback\n{tail}"
    );
    assert!(
        console.contains(&format!("read2={block} later=gone-9")),
        "after the rollback the disk did not read back through the function, or RAM kept the later file\n{tail}"
    );
    let got = statuses(console);
    assert_eq!(got.len(), 4, "{got:#?}\n{tail}");
    // Refused with the VM left paused, as every failed suspend leaves it.
    assert!(
        got[0].starts_with("error: ")
            && got[0].contains("boot bundle has nowhere to suspend to")
            && got[0].contains("nothing was committed"),
        "{got:#?}"
    );
    assert_eq!(got[1], "ok: vm linux resumed");
    assert!(
        got[2].starts_with("ok: vm linux snapshot 'p1' taken (memory, "),
        "{got:#?}\n{tail}"
    );
    assert_eq!(got[3], "ok: vm linux rolled back to snapshot 'p1'");
}
