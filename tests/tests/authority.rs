//! The reference authority partition (`guests/authority`). Booted as an
//! ordinary guest, its boot code, PL011 console and `HVC #0` work and el2 refuses
//! it the authority ABI, as it must refuse every guest that is not the authority
//! partition. Booted as the partition (`--authority`), it runs the boot sequence
//! and the `rayos>` shell over the ABI (the shell's logic is host-tested in the
//! `authority` crate).

use std::time::Duration;

use integration_tests::{boot_lock, console_tail, script};
use xtask::build::build_guests;
use xtask::run::{run_captured, Ending, Guest, RunOptions};
use xtask::Layout;

const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn the_authority_image_booted_as_a_plain_guest_is_refused_the_abi() {
    let layout = Layout::detect();
    build_guests(&layout, true).unwrap_or_else(|e| panic!("building the guests failed: {e}"));
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::Selftest, TIMEOUT);
    o.kernel = Some(layout.guest_image("authority"));
    o.script = Some(script(
        "authority-refused.script",
        "expect RayOS authority partition\n\
         expect rayos: the hypervisor refused the authority ABI \\(NotSupported\\)\n",
    ));
    let outcome = run_captured(&layout, &o).unwrap_or_else(|e| panic!("set-up failed: {e}"));
    let tail = console_tail(&outcome);
    assert_eq!(
        outcome.ending,
        Ending::ScriptDone,
        "the partition did not report the refused ABI:\n{tail}"
    );
    assert!(
        !outcome.console.contains("rayos> "),
        "no shell may run without the ABI:\n{tail}"
    );
}

/// Budget of one boot of the guest beside the partition.
const PARTITION_TIMEOUT: Duration = Duration::from_secs(300);

/// The last `tick=N` the guest's counting loop printed.
fn last_tick(console: &str) -> Option<u64> {
    console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("tick="))
        .filter_map(|n| n.trim().parse().ok())
        .next_back()
}

/// `cargo xtask run --authority`: the partition runs beside the guest on its own
/// stage-2 and owns the serial console. Its boot sequence finds the system
/// disk's VM running and leaves it in the background (hidden, no input);
/// `present` shows it fullscreen and interactive, `leave` hides it again (its
/// policy keeps it running), every step through the authority ABI. `host
/// shutdown` typed at `rayos>` suspends the guest; the next host boot resumes the
/// same guest, which counts on from where it stopped, and the partition again
/// leaves it in the background.
#[test]
fn the_partition_boots_the_guest_hidden_presents_it_and_resumes_it_after_a_host_reboot() {
    let _boot = boot_lock();
    let layout = Layout::detect();
    let dir = layout
        .out
        .join("tmp")
        .join(format!("authority-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let run = |name: &str, text: &str, fresh: bool| {
        let mut o = RunOptions::headless(Guest::Linux, PARTITION_TIMEOUT);
        o.authority = true;
        o.system_disk = Some(dir.join("system-disk.img"));
        o.fresh = fresh;
        o.guest_cmd = Some("i=0; while true; do i=$((i+1)); echo tick=$i; sleep 1; done".into());
        o.script = Some(script(name, text));
        let outcome = run_captured(&layout, &o).unwrap_or_else(|e| panic!("set-up failed: {e}"));
        let tail = console_tail(&outcome);
        (outcome, tail)
    };

    let (first, tail) = run(
        "authority-boot-1.script",
        "expect authority partition: 32 MiB RAM\n\
         expect rayos: vm linux runs in the background \\(hidden, no input\\)\n\
         expect tick=3\n\
         send display status\n\
         expect ok: display .* vm linux hidden\n\
         send present linux\n\
         expect ok: vm linux presented fullscreen, interactive\n\
         send display status\n\
         expect ok: display .* vm linux live fullscreen\n\
         send leave linux\n\
         expect ok: vm linux hidden; it keeps running\n\
         send display status\n\
         expect ok: display .* vm linux hidden\n\
         expect tick=8\n\
         send host shutdown\n\
         expect powering off\n",
        true,
    );
    assert_eq!(
        first.ending,
        Ending::Exited(Some(0)),
        "the first host boot did not end in a clean power-off\n{tail}"
    );
    assert!(
        first.console.contains("suspended"),
        "host shutdown did not suspend the guest\n{tail}"
    );
    let before = last_tick(&first.console).expect("the guest counted");

    let (second, tail) = run(
        "authority-boot-2.script",
        "expect resumed from its saved state\n\
         expect rayos: vm linux runs in the background \\(hidden, no input\\)\n\
         expect tick=\n\
         sleep 3\n",
        false,
    );
    assert_eq!(second.ending, Ending::ScriptDone, "\n{tail}");
    let after_resume: Vec<u64> = second
        .console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("tick="))
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let first_after = *after_resume
        .first()
        .expect("the guest counts after the resume");
    assert!(
        first_after > before,
        "the guest started counting again ({first_after} after {before}): it was cold-booted, not resumed\n{tail}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The partition beside a 2-vCPU guest spinning on both vCPUs of a 2-CPU host,
/// under `-icount` (QEMU runs the CPUs in turn, guest time is instructions): the
/// partition, scheduled above the guest, still answers its console — `vm list`
/// and `display status` come back while both loops keep spinning (the loops
/// print their progress after the answers).
#[test]
fn the_partition_answers_while_the_guest_spins_on_every_cpu() {
    let _boot = boot_lock();
    let layout = Layout::detect();
    let mut o = RunOptions::headless(Guest::Linux, PARTITION_TIMEOUT);
    o.authority = true;
    o.icount = true;
    o.smp = Some(2);
    o.host_cpus = Some(2);
    o.system_disk = Some(layout.out.join("test-disks/authority-spin.img"));
    o.fresh = true;
    o.guest_cmd = Some(
        "S='n=0; while true; do i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; n=$((n+1)); echo spin$1=$n; done'\n\
         taskset -c 0 sh -c \"$S\" x 0 & taskset -c 1 sh -c \"$S\" x 1 & wait\n"
            .into(),
    );
    o.script = Some(script(
        "authority-spin.script",
        "expect rayos> \n\
         expect spin0=2\n\
         expect spin1=\n\
         send vm list\n\
         expect ok: 1 vm: linux vcpus=2 state=running\n\
         send display status\n\
         expect ok: display .* vm linux hidden\n\
         expect spin0=\n\
         expect spin1=\n",
    ));
    let outcome = run_captured(&layout, &o).unwrap_or_else(|e| panic!("set-up failed: {e}"));
    let tail = console_tail(&outcome);
    assert_eq!(
        outcome.ending,
        Ending::ScriptDone,
        "the partition did not answer under load\n{tail}"
    );
}
