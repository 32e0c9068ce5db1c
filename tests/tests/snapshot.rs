//! In-memory snapshots and rollback (`docs/monitor.md`): the Linux guest writes a
//! base block to its disk, the VM is snapshotted, the guest creates a file in RAM
//! (/tmp) and writes and syncs a new block to its disk, then the VM is rolled back:
//! the file is gone, the disk (read after dropping the page cache, so from the
//! device) holds the base block again, and the guest keeps running (a command
//! answers). Hostile cases: a duplicate tag, an unknown tag, rollback to a deleted
//! snapshot — each an `error:` status line. These run beside the authority
//! partition, the default configuration: the scripts `attach linux` to type into
//! the guest, their `monitor` lines go to the partition's shell, and the host,
//! which outlives its guest there, ends with `monitor host shutdown`.
//!
//! Disk snapshots (`--disk`) across a host reboot: the guest writes a base block
//! and a file in RAM, a disk snapshot is taken, the guest overwrites the block and
//! QEMU exits; QEMU starts again on the same system disk (a cold boot: the file
//! is gone, the new block is on the disk), lists the snapshot and rolls back to
//! it: the guest is the first boot's again (same boot id, the file is back) and
//! its disk holds the base block. A second disk snapshot, whose disk copy had a
//! byte flipped on the host between the boots, is refused with nothing changed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use integration_tests::{boot, boot_lock, console_tail, script, statuses};
use registry::cli::FileDisk;
use registry::Registry;
use vdev::BlockBackend;
use xtask::run::{prepare, Ending, Guest, NvmeDisk, RunOptions};
use xtask::session::Session;
use xtask::Layout;

/// Budget of one boot (the build before it is not counted).
const TIMEOUT: Duration = Duration::from_secs(240);
/// This file's system disk, under the workspace's `target/`.
const SYSTEM_DISK: &str = "test-disks/snapshot-tests.img";
/// The disk-snapshot test's system disk (recreated by its first boot).
const DISK_SNAPSHOT_DISK: &str = "test-disks/snapshot-disk-tests.img";

/// A number fresh per run, so what an earlier run left on a disk cannot pass.
fn nonce() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        % 1_000_000_000
}

#[test]
fn rollback_undoes_a_file_in_ram_and_a_synced_disk_write_and_the_guest_runs_on() {
    let _boot = boot_lock();
    let nonce = nonce();
    let (base, new) = (nonce * 2, nonce * 2 + 1);
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.authority = true;
    o.smp = Some(2);
    o.mem = Some(256 << 20);
    o.system_disk = Some(Layout::detect().out.join(SYSTEM_DISK));
    // Markers are printed from shell arithmetic, so the echo of the typed command
    // never matches what an `expect` waits for.
    o.script = Some(script(
        "snapshot-rollback.script",
        &format!(
            "expect starting a shell\n\
             attach linux\n\
             sleep 0.5\n\
             send printf 'base-%s\\n' $(({nonce}*2)) | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null; sync; echo wrote-$((1+1))\n\
             expect wrote-2\n\
             monitor vm snapshot linux t1\n\
             monitor vm snapshot linux t1\n\
             send echo file-$((2+2)) > /tmp/snapfile; printf 'new-%s\\n' $(({nonce}*2+1)) | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null; sync; echo 3 > /proc/sys/vm/drop_caches; echo before=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -n 1) file=$(cat /tmp/snapfile)\n\
             expect file=file-4\n\
             monitor vm snapshots linux\n\
             monitor vm rollback linux t1\n\
             send echo alive-$((3+4))\n\
             expect alive-7\n\
             send echo 3 > /proc/sys/vm/drop_caches; echo after=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -n 1) file=$(cat /tmp/snapfile 2>/dev/null || echo gone-$((4+5)))\n\
             expect file=gone-9\n\
             send printf 'again-%s\\n' $(({nonce}*2+1)) | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null; sync; echo wrote-$((6+6))\n\
             expect wrote-12\n\
             monitor vm rollback linux t1\n\
             send echo 3 > /proc/sys/vm/drop_caches; echo second=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -n 1); echo done-$((7+7))\n\
             expect done-14\n\
             monitor vm rollback linux nosuch\n\
             monitor vm delete-snapshot linux t1\n\
             monitor vm rollback linux t1\n\
             monitor vm snapshots linux\n\
             send echo still-$((5+6))\n\
             expect still-11\n\
             send exit\n\
             expect shell exited\n\
             expect no VM left to run; the host stays up\n\
             monitor host shutdown\n"
        ),
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let console = &outcome.console;
    // Before the rollback: the new block is on the disk and the file exists.
    assert!(
        console.contains(&format!("before=new-{new} file=file-4")),
        "the guest's write did not reach its disk before the rollback\n{tail}"
    );
    // After: the disk holds the base block again, the file is gone.
    assert!(
        console.contains(&format!("after=base-{base} file=gone-9")),
        "after the rollback the disk or RAM still holds what the guest wrote\n{tail}"
    );
    // A second rollback to the same snapshot undoes a later write too (the
    // snapshot's disk log starts again after a rollback).
    assert!(
        console.contains(&format!("second=base-{base}\n"))
            || console.contains(&format!("second=base-{base}\r")),
        "the second rollback left the guest's later write on its disk\n{tail}"
    );
    let got = statuses(console);
    assert_eq!(got.len(), 9, "{got:#?}\n{tail}");
    assert!(
        got[0].starts_with("ok: vm linux snapshot 't1' taken (memory, "),
        "{got:#?}"
    );
    assert_eq!(got[1], "error: vm linux already has a snapshot 't1'");
    assert!(
        got[2].starts_with("ok: vm linux has 1 snapshot: t1 (memory, "),
        "{got:#?}"
    );
    assert_eq!(got[3], "ok: vm linux rolled back to snapshot 't1'");
    assert_eq!(got[4], "ok: vm linux rolled back to snapshot 't1'");
    assert_eq!(
        got[5],
        "error: vm linux has no snapshot 'nosuch' (see `vm snapshots linux`)"
    );
    assert_eq!(got[6], "ok: vm linux snapshot 't1' deleted");
    assert_eq!(
        got[7],
        "error: vm linux has no snapshot 't1' (see `vm snapshots linux`)"
    );
    assert_eq!(got[8], "ok: vm linux has no snapshots");
}

/// A PCI Express VM (`--nvme`: a boot bundle whose disk is an NVMe namespace on
/// a RAM disk behind the root complex, MSI-X through the GICv2m frame): the
/// guest writes a block to the namespace and a file to /tmp, the VM is
/// snapshotted (the root complex, the NVMe controller with its queue positions
/// and the v2m frame saved with everything else), the guest writes another file
/// and reads the block back, then the VM is rolled back: the later file is gone,
/// and the block still reads back from the namespace (page cache dropped, so
/// through the restored controller's queues and interrupts), and the guest runs
/// on. Then the guest writes to the namespace, which no log covers: a second
/// rollback is refused with nothing changed.
#[test]
fn an_nvme_vm_rolls_back_and_reads_its_namespace_through_the_restored_controller() {
    let _boot = boot_lock();
    let nonce = nonce();
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.authority = true;
    o.smp = Some(2);
    // Leaves room for the snapshot pool in the host's RAM.
    o.mem = Some(256 << 20);
    o.nvme = Some(NvmeDisk::Ram(16 << 20));
    o.script = Some(script(
        "snapshot-nvme.script",
        &format!(
            "expect starting a shell\n\
             attach linux\n\
             sleep 0.5\n\
             send printf 'nvme-%s\\n' $(({nonce}*3)) | dd of=/dev/nvme0n1 bs=4096 seek=7 count=1 conv=sync,fsync 2>/dev/null; echo kept > /tmp/keep; echo wrote-$((1+1))\n\
             expect wrote-2\n\
             monitor vm snapshot linux n1\n\
             send echo later > /tmp/later; echo 3 > /proc/sys/vm/drop_caches; echo read1=$(dd if=/dev/nvme0n1 bs=4096 skip=7 count=1 2>/dev/null | head -n 1) later=$(cat /tmp/later)-$((2+3))\n\
             expect later=later-5\n\
             monitor vm rollback linux n1\n\
             send echo 3 > /proc/sys/vm/drop_caches; echo read2=$(dd if=/dev/nvme0n1 bs=4096 skip=7 count=1 2>/dev/null | head -n 1) keep=$(cat /tmp/keep) later=$(cat /tmp/later 2>/dev/null || echo gone)-$((4+5))\n\
             expect later=gone-9\n\
             send printf 'x\\n' | dd of=/dev/nvme0n1 bs=4096 seek=8 count=1 conv=sync,fsync 2>/dev/null; echo wrote-$((6+6))\n\
             expect wrote-12\n\
             monitor vm rollback linux n1\n\
             send echo still-$((5+6))\n\
             expect still-11\n\
             send exit\n\
             expect shell exited\n\
             expect no VM left to run; the host stays up\n\
             monitor host shutdown\n"
        ),
    ));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let console = &outcome.console;
    let block = format!("nvme-{}", nonce * 3);
    assert!(
        console.contains(&format!("read1={block} later=later-5")),
        "the block did not read back before the rollback\n{tail}"
    );
    assert!(
        console.contains(&format!("read2={block} keep=kept later=gone-9")),
        "after the rollback the namespace did not read back through the controller, or RAM kept the later file\n{tail}"
    );
    let got = statuses(console);
    assert_eq!(got.len(), 3, "{got:#?}\n{tail}");
    assert!(
        got[0].starts_with("ok: vm linux snapshot 'n1' taken (memory, "),
        "{got:#?}\n{tail}"
    );
    assert_eq!(got[1], "ok: vm linux rolled back to snapshot 'n1'");
    assert!(
        got[2].starts_with("error: ")
            && got[2].contains("RAM disks")
            && got[2].contains("nothing was changed"),
        "a rollback after a write to the namespace was not refused: {got:#?}"
    );
}

/// The line the guest prints with `key=`, whole.
fn value(console: &str, key: &str) -> String {
    integration_tests::console_value(console, key)
        .unwrap_or_else(|| panic!("no `{key}=` line"))
        .to_string()
}

#[test]
fn a_disk_snapshot_survives_a_host_reboot_and_rolls_back_ram_and_disk() {
    let _boot = boot_lock();
    let n = nonce();
    let (base, new) = (n * 2, n * 2 + 1);
    let disk = Layout::detect().out.join(DISK_SNAPSHOT_DISK);
    let on_disk = |name: &str, text: String| {
        let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
        o.authority = true;
        o.smp = Some(2);
        o.mem = Some(256 << 20);
        o.system_disk = Some(disk.clone());
        o.script = Some(script(name, &text));
        o
    };
    // Boot 1: base block, a file in RAM, the snapshot, then a new block.
    let mut o = on_disk(
        "disk-snapshot-1.script",
        format!(
            "expect starting a shell\n\
             attach linux\n\
             sleep 0.5\n\
             send printf 'base-%s\\n' $(({n}*2)) | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null; printf 'early-%s\\n' $(({n}*2)) | dd of=/dev/vda bs=512 seek=64 count=1 conv=sync,fsync 2>/dev/null; sync; echo kept-$(({n}*2)) > /tmp/kept; echo boot1=$(cat /proc/sys/kernel/random/boot_id); echo wrote-$((1+1))\n\
             expect wrote-2\n\
             monitor vm snapshot linux d1 --disk\n\
             monitor vm snapshot linux d1 --disk\n\
             monitor vm snapshot linux d1\n\
             monitor vm snapshots linux\n\
             send printf 'new-%s\\n' $(({n}*2+1)) | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null; sync; echo wrote-$((2+2))\n\
             expect wrote-4\n\
             monitor vm snapshot linux d2 --disk\n\
             send exit\n\
             expect shell exited\n\
             expect no VM left to run; the host stays up\n\
             monitor host shutdown\n"
        ),
    );
    o.fresh = true;
    let first = boot(&o);
    let tail = console_tail(&first);
    assert_eq!(first.ending, Ending::Exited(Some(0)), "\n{tail}");
    let boot1 = value(&first.console, "boot1");
    let got = statuses(&first.console);
    assert_eq!(got.len(), 5, "{got:#?}\n{tail}");
    assert!(
        got[0].starts_with("ok: vm linux snapshot 'd1' taken (disk, "),
        "{got:#?}"
    );
    assert_eq!(got[1], "error: vm linux already has a snapshot 'd1'");
    assert_eq!(got[2], "error: vm linux already has a snapshot 'd1'");
    assert!(
        got[3].starts_with("ok: vm linux has 1 snapshot: d1 (disk, "),
        "{got:#?}"
    );
    assert!(
        got[4].starts_with("ok: vm linux snapshot 'd2' taken (disk, "),
        "{got:#?}"
    );
    // Between the boots, on the host: one flipped bit in d2's disk copy (its last
    // sector of guest data).
    {
        let mut d = FileDisk::open(&disk, false).expect("open the system disk");
        let reg = Registry::open(&mut d).expect("the registry opens");
        let copy = reg.vms()[0]
            .snapshots
            .iter()
            .find(|s| s.tag == "d2")
            .expect("d2 is recorded on the system disk")
            .disk;
        // A byte of d2's log header (the registry still records its CRC).
        let at = copy.extent.start;
        let mut sector = [0u8; 512];
        d.read_at(at, &mut sector).unwrap();
        sector[24] ^= 0x10; // the nonce: the header CRC fails
        d.write_at(at, &sector).unwrap();
        d.flush().unwrap();
    }
    // Boot 2 on the same system disk: a cold boot, then the rollback.
    let second = boot(&on_disk(
        "disk-snapshot-2.script",
        "expect starting a shell\n\
         attach linux\n\
         sleep 0.5\n\
         send echo 3 > /proc/sys/vm/drop_caches; echo before=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -n 1) kept=$(cat /tmp/kept 2>/dev/null || echo none-$((1+2)))\n\
         expect kept=none-3\n\
         send printf 'more-%s\\n' $((7*9)) | dd of=/dev/vda bs=512 seek=64 count=1 conv=sync,fsync 2>/dev/null; printf 'far-%s\\n' $((7*9)) | dd of=/dev/vda bs=512 seek=20000 count=1 conv=sync,fsync 2>/dev/null; printf 'again-%s\\n' $((7*9)) | dd of=/dev/vda bs=512 count=1 conv=sync,fsync 2>/dev/null; sync; echo 3 > /proc/sys/vm/drop_caches; echo more=$(dd if=/dev/vda bs=512 skip=64 count=1 2>/dev/null | head -n 1); echo more-done-$((8*8))\n\
         expect more-done-64\n\
         monitor vm snapshots linux\n\
         monitor vm rollback linux d2\n\
         send echo still-$((2+3))\n\
         expect still-5\n\
         monitor vm rollback linux d1\n\
         send echo 3 > /proc/sys/vm/drop_caches; echo after=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -n 1) kept=$(cat /tmp/kept) early=$(dd if=/dev/vda bs=512 skip=64 count=1 2>/dev/null | head -n 1) far=[$(dd if=/dev/vda bs=512 skip=20000 count=1 2>/dev/null | tr -d '\\\\000')]\n\
         expect (?m)^after=\n\
         send echo boot2=$(cat /proc/sys/kernel/random/boot_id); echo done-$((3+4))\n\
         expect done-7\n\
         monitor vm delete-snapshot linux d1\n\
         monitor vm snapshots linux\n\
         monitor vm rollback linux d1\n\
         send exit\n\
         expect shell exited\n\
         expect no VM left to run; the host stays up\n\
         monitor host shutdown\n"
            .into(),
    ));
    let tail = console_tail(&second);
    // The times the hypervisor logged (for the report; not asserted).
    for l in first.console.lines().chain(second.console.lines()) {
        if l.contains("taken on the system disk") || l.contains("rolled back to disk snapshot") {
            eprintln!("{}", l.trim_end());
        }
    }
    assert_eq!(second.ending, Ending::Exited(Some(0)), "\n{tail}");
    let console = &second.console;
    assert!(
        console.contains("Booting Linux on physical CPU"),
        "the second boot was not a cold boot\n{tail}"
    );
    assert_eq!(
        value(console, "before"),
        format!("new-{new} kept=none-3"),
        "the cold-booted guest does not see its last write\n{tail}"
    );
    assert_eq!(
        value(console, "more"),
        "more-63",
        "the write after the host reboot did not reach the guest disk\n{tail}"
    );
    assert_eq!(
        value(console, "after"),
        format!("base-{base} kept=kept-{base} early=early-{base} far=[]"),
        "after the rollback the disk or RAM is not the snapshot's (writes before and after the host reboot are undone, the earlier content intact)\n{tail}"
    );
    assert_eq!(
        value(console, "boot2"),
        boot1,
        "the guest after the rollback is not the first boot's kernel\n{tail}"
    );
    let got = statuses(console);
    assert_eq!(got.len(), 6, "{got:#?}\n{tail}");
    // d1's log holds the three granules first written since it: block 0 before
    // the reboot, blocks 64 and 20000 after it (block 0 again is not logged twice).
    assert!(
        got[0].starts_with("ok: vm linux has 2 snapshots: d1 (disk, ")
            && got[0].contains(", disk log 12 of ")
            && got[0].contains("), d2 (disk, ")
            && got[0].contains("; INVALID: disk log header checksum mismatch)"),
        "{got:#?}"
    );
    assert_eq!(
        got[1],
        "error: vm linux: the disk snapshot is refused: disk log header checksum mismatch; nothing was changed"
    );
    assert_eq!(got[2], "ok: vm linux rolled back to snapshot 'd1'");
    assert_eq!(got[3], "ok: vm linux snapshot 'd1' deleted");
    assert!(
        got[4].starts_with("ok: vm linux has 1 snapshot: d2 (disk, "),
        "{got:#?}"
    );
    assert_eq!(
        got[5],
        "error: vm linux has no snapshot 'd1' (see `vm snapshots linux`)"
    );
}

/// Cuts of the SIGKILL test (each a boot that is killed and a boot that rolls
/// back).
const KILLS: usize = 3;

fn kill_seed() -> u64 {
    let seed = std::env::var("SNAPSHOT_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed {seed} (repeat with SNAPSHOT_KILL_SEED={seed})");
    seed
}

/// The bytes of the VM's first guest disk in the system disk file.
fn guest_disk_bytes(disk: &std::path::Path) -> Vec<u8> {
    let mut d = FileDisk::open(disk, true).expect("open the system disk");
    let reg = Registry::open(&mut d).expect("the registry opens");
    let e = reg.vms()[0].disks[0].extent;
    let mut buf = vec![0u8; e.len as usize];
    d.read_at(e.start, &mut buf).expect("read the guest disk");
    buf
}

#[test]
fn qemu_killed_while_the_guest_writes_then_rollback_restores_exactly_or_refuses() {
    let _boot = boot_lock();
    let mut seed = kill_seed();
    let mut next = move || {
        seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let dir = Layout::detect()
        .out
        .join("tmp")
        .join(format!("snapshot-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("system-disk.img");
    let escape = char::from(monitor::ESCAPE);
    let shell = regex::Regex::new("starting a shell").unwrap();
    let status = xtask::run::monitor_status_regex();
    let first_write = regex::Regex::new(r"(?m)^wrote=1\r?$").unwrap();
    let (mut restored, mut refused) = (0, 0);
    for cut in 0..KILLS {
        let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
        o.mem = Some(256 << 20);
        o.system_disk = Some(disk.clone());
        o.fresh = cut == 0;
        let tag = format!("k{cut}");
        let prepared = prepare(&Layout::detect(), &o).unwrap_or_else(|e| panic!("set-up: {e}"));
        let mut qemu = Session::spawn(prepared.command(), false, TIMEOUT)
            .unwrap_or_else(|e| panic!("start QEMU: {e}"));
        qemu.expect(&shell)
            .unwrap_or_else(|e| panic!("cut {cut}: no shell ({e:?})\n{}", qemu.output()));
        std::thread::sleep(Duration::from_millis(500));
        qemu.send(&format!(
            "yes base{cut} | head -c 1048576 | dd of=/dev/vda bs=65536 conv=fsync 2>/dev/null; sync; echo based-$((40+{cut}))\n"
        ))
        .unwrap();
        qemu.expect(&regex::Regex::new(&format!("based-{}", 40 + cut)).unwrap())
            .unwrap_or_else(|e| panic!("cut {cut}: {e:?}\n{}", qemu.output()));
        qemu.send(&format!("{escape}vm snapshot linux {tag} --disk\n"))
            .unwrap();
        let got = qemu
            .expect_capture(&status)
            .unwrap_or_else(|e| panic!("cut {cut}: no status ({e:?})\n{}", qemu.output()));
        assert!(got.starts_with("ok: "), "cut {cut}: {got}");
        qemu.send(&escape.to_string()).unwrap();
        // The guest disk as the snapshot has it (the guest synced; el2 flushed).
        let at_snapshot = guest_disk_bytes(&disk);
        // The guest writes 64 KiB runs all over 16 MiB until QEMU is killed.
        qemu.send(
            "i=0; while :; do i=$((i+1)); yes w$i | head -c 65536 | dd of=/dev/vda bs=4096 seek=$(( (i*37) % 4080 )) conv=fsync 2>/dev/null; echo wrote=$i; done\n",
        )
        .unwrap();
        // Killed at a seeded moment after the first run reached the disk.
        qemu.expect(&first_write)
            .unwrap_or_else(|e| panic!("cut {cut}: no write ({e:?})\n{}", qemu.output()));
        let at = next() % 3000;
        let _ = qemu.sleep(Duration::from_millis(at));
        qemu.kill();
        let before_rollback = guest_disk_bytes(&disk);
        let changed = before_rollback != at_snapshot;
        // The next boot rolls back.
        let mut o2 = o.clone();
        o2.fresh = false;
        o2.script = Some(script(
            "snapshot-kill.script",
            &format!(
                "expect starting a shell\n\
                 sleep 0.5\n\
                 monitor vm rollback linux {tag}\n\
                 monitor vm delete-snapshot linux {tag}\n\
                 send exit\n\
                 expect shell exited\n"
            ),
        ));
        let second = boot(&o2);
        let tail = console_tail(&second);
        // (A slow power-off after the script may be cut short: the rollback
        // flushed the disk before its status line.)
        assert!(
            matches!(second.ending, Ending::Exited(Some(0)) | Ending::ScriptDone),
            "cut {cut}: {:?}\n{tail}",
            second.ending
        );
        let got = statuses(&second.console);
        let after = guest_disk_bytes(&disk);
        println!(
            "cut {cut}: killed {at} ms after the first write (guest disk changed: {changed}): {}",
            got[0]
        );
        if got[0] == format!("ok: vm linux rolled back to snapshot '{tag}'") {
            restored += 1;
            assert!(
                after == at_snapshot,
                "cut {cut}: the rollback did not restore the snapshot's guest disk"
            );
        } else {
            refused += 1;
            assert!(
                got[0].contains("nothing was changed"),
                "cut {cut}: {}",
                got[0]
            );
            assert!(
                after == before_rollback,
                "cut {cut}: a refused rollback changed the guest disk"
            );
        }
    }
    println!("{restored} rollbacks restored exactly, {refused} refused");
    std::fs::remove_dir_all(&dir).unwrap();
}
