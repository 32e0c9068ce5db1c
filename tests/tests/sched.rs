//! vCPUs time-sharing physical CPUs (el2 `smp`, the `sched` run queue): the
//! Debian Linux guest with more vCPUs than the emulated host has CPUs
//! (`--host-cpus`) brings every vCPU online through PSCI CPU_ON, runs a pinned
//! CPU-bound loop to completion on each (so every vCPU really executes, taking
//! turns on the shared CPUs: preemption by the EL2 timer's time slices), and
//! powers off cleanly (the vCPUs that went idle in WFI gave their CPU up and
//! were woken again for the power-off).

use std::time::Duration;

use integration_tests::procfs::{processor_count, section};
use integration_tests::{boot, boot_lock, console_tail};
use xtask::linux_guest::parse_console;
use xtask::run::{Ending, Guest, RunOptions};
use xtask::Layout;

/// Budget of one boot: a 1-CPU host runs two vCPUs, and the suite's other
/// QEMU runs share the machine.
const TIMEOUT: Duration = Duration::from_secs(300);
/// This file's system disk, under the workspace's `target/`.
const SYSTEM_DISK: &str = "test-disks/sched-tests.img";
/// Iterations of each vCPU's shell loop: a few seconds of guest CPU time.
const SPIN_ROUNDS: u32 = 20_000;

/// The guest command: how many CPUs Linux brought up, then one pinned loop per
/// vCPU, started together, each reporting the CPU it ran on (field 39 of
/// `/proc/self/stat`) when it finished.
fn guest_cmd(vcpus: u32) -> String {
    let mut cmd = String::from(
        "echo \"nproc=$(nproc)\"\necho '== cpuinfo begin'; cat /proc/cpuinfo; echo '== cpuinfo end'\n",
    );
    cmd.push_str(&format!(
        "S='i=0; while [ $i -lt {SPIN_ROUNDS} ]; do i=$((i+1)); done; echo \"spin-done cpu=$1 ran_on=$(cut -d\" \" -f39 /proc/self/stat) i=$i\"'\n"
    ));
    for c in 0..vcpus {
        cmd.push_str(&format!("taskset -c {c} sh -c \"$S\" spin {c} & "));
    }
    cmd.push_str("wait\necho spin-all-done\n");
    cmd
}

/// Boots `vcpus` vCPUs on `host_cpus` physical CPUs and checks every vCPU ran
/// its loop.
fn time_share(vcpus: u32, host_cpus: u32, icount: bool) {
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.smp = Some(vcpus);
    o.host_cpus = Some(host_cpus);
    o.icount = icount;
    o.mem = Some(512 << 20);
    o.system_disk = Some(Layout::detect().out.join(SYSTEM_DISK));
    o.guest_cmd = Some(guest_cmd(vcpus));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    let console = &outcome.console;
    assert_eq!(outcome.verdict(), Ok(()), "\n{tail}");
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let guest = parse_console(console);
    assert!(
        guest.init_seen && guest.ready_seen,
        "init did not come up\n{tail}"
    );

    let el2 = |needle: &str| {
        console
            .lines()
            .any(|l| l.starts_with("[el2 ") && l.contains(needle))
    };
    assert!(
        el2(&format!(
            "scheduler: {vcpus} vCPU(s) on {host_cpus} physical CPU(s)"
        )),
        "the hypervisor must schedule {vcpus} vCPUs on {host_cpus} CPUs\n{tail}"
    );

    let lines: Vec<&str> = console.lines().map(|l| l.trim_end_matches('\r')).collect();
    let nproc = lines
        .iter()
        .find_map(|l| l.strip_prefix("nproc="))
        .unwrap_or_else(|| panic!("no nproc line\n{tail}"));
    assert_eq!(
        nproc,
        vcpus.to_string(),
        "every vCPU must be online\n{tail}"
    );
    let cpuinfo = section(console, "cpuinfo").unwrap_or_else(|e| panic!("{e}\n{tail}"));
    assert_eq!(processor_count(&cpuinfo), vcpus as usize, "\n{tail}");

    let mut done: Vec<(u32, u32)> = lines
        .iter()
        .filter_map(|l| {
            let rest = l.strip_prefix("spin-done cpu=")?;
            let mut f = rest.split_whitespace();
            let cpu = f.next()?.parse().ok()?;
            let ran_on = f.next()?.strip_prefix("ran_on=")?.parse().ok()?;
            let i: u32 = f.next()?.strip_prefix("i=")?.parse().ok()?;
            (i == SPIN_ROUNDS).then_some((cpu, ran_on))
        })
        .collect();
    done.sort_unstable();
    let want: Vec<(u32, u32)> = (0..vcpus).map(|c| (c, c)).collect();
    assert_eq!(
        done, want,
        "each vCPU must finish its pinned loop on itself\n{tail}"
    );
    assert!(
        lines.contains(&"spin-all-done"),
        "the loops did not all end\n{tail}"
    );
    println!("sched {vcpus} vCPUs on {host_cpus} host CPUs: {done:?}");
}

#[test]
fn two_vcpus_share_one_host_cpu() {
    time_share(2, 1, false);
}

#[test]
fn four_vcpus_share_two_host_cpus() {
    time_share(4, 2, false);
}

/// Under `-icount` QEMU runs the emulated CPUs in turn in one thread, with
/// deterministic guest time: the timing the authority partition's scheduling is
/// measured in (issue 16). A vCPU per physical CPU, both busy.
#[test]
fn two_vcpus_on_two_host_cpus_under_icount() {
    time_share(2, 2, true);
}
