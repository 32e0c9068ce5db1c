//! In-memory snapshots and rollback (`docs/monitor.md`): the Linux guest writes a
//! base block to its disk, the VM is snapshotted, the guest creates a file in RAM
//! (/tmp) and writes and syncs a new block to its disk, then the VM is rolled back:
//! the file is gone, the disk (read after dropping the page cache, so from the
//! device) holds the base block again, and the guest keeps running (a command
//! answers). Hostile cases: a duplicate tag, an unknown tag, rollback to a deleted
//! snapshot, a `--disk` snapshot — each an `error:` status line.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use integration_tests::{boot, boot_lock, console_tail, script};
use xtask::run::{Ending, Guest, RunOptions};
use xtask::Layout;

/// Budget of one boot (the build before it is not counted).
const TIMEOUT: Duration = Duration::from_secs(240);
/// This file's system disk, under the workspace's `target/`.
const SYSTEM_DISK: &str = "test-disks/snapshot-tests.img";

/// The monitor's status lines (`ok: …` / `error: …`), in order.
fn statuses(console: &str) -> Vec<&str> {
    let prefix = format!("{} ", monitor::LINE_PREFIX);
    console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .filter_map(|l| l.strip_prefix(prefix.as_str()))
        .filter(|s| s.starts_with("ok: ") || s.starts_with("error: "))
        .collect()
}

#[test]
fn rollback_undoes_a_file_in_ram_and_a_synced_disk_write_and_the_guest_runs_on() {
    let _boot = boot_lock();
    // Fresh per run, so a block left on the disk by an earlier run cannot pass.
    let nonce = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_millis()
        % 1_000_000_000;
    let (base, new) = (nonce * 2, nonce * 2 + 1);
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.smp = Some(2);
    o.mem = Some(256 << 20);
    o.system_disk = Some(Layout::detect().out.join(SYSTEM_DISK));
    // Markers are printed from shell arithmetic, so the echo of the typed command
    // never matches what an `expect` waits for.
    o.script = Some(script(
        "snapshot-rollback.script",
        &format!(
            "expect starting a shell\n\
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
             monitor vm snapshot linux t2 --disk\n\
             send echo still-$((5+6))\n\
             expect still-11\n\
             send exit\n\
             expect shell exited\n"
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
    assert_eq!(got.len(), 10, "{got:#?}\n{tail}");
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
    assert!(
        got[9].starts_with("error: vm snapshot linux t2 --disk: disk snapshots"),
        "{got:#?}"
    );
}
