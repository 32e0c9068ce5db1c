//! Boots Debian's arm64 Linux kernel with the busybox initramfs (fetched with
//! apt and cached in `target/guest-cache` by xtask) as a guest of the
//! hypervisor: SMP with timers and IPIs checked from `/proc/interrupts`, a
//! one-vCPU guest with less memory (all three beside the authority partition,
//! the default configuration), and an interactive shell driven by a script
//! (long input lines both through the partition's `attach` and with the guest
//! owning the console).

use std::time::Duration;

use integration_tests::procfs::{
    busy_loops, meminfo_kib, parse_interrupts, per_cpu_delta, processor_count, section, Interrupts,
};
use integration_tests::{boot, boot_lock, console_tail};
use xtask::linux_guest::parse_console;
use xtask::run::{Ending, Guest, RunOptions};
use xtask::Layout;

/// Budget of one boot (the build before it is not counted).
const TIMEOUT: Duration = Duration::from_secs(120);
/// This file's system disk, under the workspace's `target/`.
const SYSTEM_DISK: &str = "test-disks/linux-tests.img";

/// Guest command of the SMP test. `s NAME FILE` dumps `/proc/FILE` between
/// section markers. The 1 s sleep runs pinned on both vCPUs at once, so each
/// arms a timer and takes at least one timer interrupt in the window even if
/// otherwise idle (the kernel is tickless when idle). Then each vCPU runs a
/// pinned loop for 10 s of guest time: ~0.5 s of busy work (shell arithmetic),
/// a `taskset` to the *other* vCPU (a task migrated there and its exit waking
/// the parent back here: cross-CPU wake-ups, which Linux signals with IPIs —
/// a wake-up queued on the remote CPU arrives as a function-call IPI, a
/// preemption request as a rescheduling IPI), and `sleep 0.5`; each loop then reports its CPU (field 39 of
/// `/proc/self/stat`), its rounds and its start/end uptime in centiseconds.
const SMP_CMD: &str = r#"s() { echo "== $1 begin"; cat /proc/$2; echo "== $1 end"; }
s cpuinfo cpuinfo
s irq1 interrupts
taskset -c 0 sleep 1 & taskset -c 1 sleep 1 & wait
s irq2 interrupts
B='cs() { read u _ < /proc/uptime; echo "${u%.*}${u#*.}"; }
o=$((1-$1)); t0=$(cs); n=0
while [ $(( $(cs) - t0 )) -lt 1000 ]; do
 t=$(cs); while [ $(( $(cs) - t )) -lt 50 ]; do i=0; while [ $i -lt 300 ]; do i=$((i+1)); done; done
 taskset -c $o true; sleep 0.5; n=$((n+1))
done
echo "busy-loop: cpu=$1 ran_on=$(cut -d" " -f39 /proc/self/stat) rounds=$n start_cs=$t0 end_cs=$(cs)"'
taskset -c 0 sh -c "$B" busy 0 & taskset -c 1 sh -c "$B" busy 1 & wait
s irq3 interrupts
"#;

/// Guest time each busy loop must have run, in seconds (it stops at 10 s).
const BUSY_SECONDS: f64 = 10.0;
/// Busy/sleep rounds each loop must complete. A round is timed in guest time,
/// but its busy half checks the clock only between batches of shell work (a
/// subshell and 300 additions each), and the guest's clock runs with the
/// host's: a loaded host overshoots the half by up to a batch. Measured: 8
/// rounds on a quiet host, 3 at load average 4 (builds beside the test).
const MIN_BUSY_ROUNDS: u64 = 2;

/// Headless options for the Linux guest with `smp` vCPUs and `mem` bytes,
/// booting from this file's own system disk: runs elsewhere (which reconcile
/// and lock the default `target/system-disk.img`) cannot race with ours.
/// Beside the authority partition, as `cargo xtask run` boots it: its vCPU
/// shares the host's CPUs with the guest's, and the run ends by asking its
/// shell for `host shutdown` once the guest's command powered it off.
fn linux_options(smp: u32, mem: u64) -> RunOptions {
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.smp = Some(smp);
    o.mem = Some(mem);
    o.system_disk = Some(Layout::detect().out.join(SYSTEM_DISK));
    o.authority = true;
    o
}

/// [`linux_options`] without the partition: the guest owns the serial
/// console, for the tests that type into its shell.
fn console_options(smp: u32, mem: u64) -> RunOptions {
    RunOptions {
        authority: false,
        ..linux_options(smp, mem)
    }
}

/// Whether the hypervisor logged `vm`'s PSCI SYSTEM_OFF and its power-off.
fn hypervisor_logged_power_off(console: &str, vm: &str) -> bool {
    let el2 = || {
        console
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| l.starts_with("[el2 "))
    };
    el2().any(|l| l.contains(&format!("{vm}: PSCI SYSTEM_OFF from vCPU ")))
        && el2().any(|l| l.contains(&format!("VM '{vm}' powered off (exits: ")))
}

/// The `/proc/interrupts` snapshot in section `name`.
fn snapshot(console: &str, name: &str) -> Result<Interrupts, String> {
    let lines = section(console, name).map_err(|e| e.to_string())?;
    parse_interrupts(&lines).map_err(|e| format!("{name}: {e}"))
}

#[test]
fn smp2_boots_counts_timers_and_ipis() {
    let _boot = boot_lock();
    let mut o = linux_options(2, 512 << 20);
    o.guest_cmd = Some(SMP_CMD.into());
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    let console = &outcome.console;
    assert_eq!(outcome.verdict(), Ok(()), "\n{tail}");
    assert_eq!(
        outcome.ending,
        Ending::Exited(Some(0)),
        "QEMU must exit 0\n{tail}"
    );
    let guest = parse_console(console);
    assert!(
        guest.init_seen && guest.ready_seen,
        "init did not come up\n{tail}"
    );
    assert!(
        guest.modules_failed.is_empty(),
        "modules failed to load: {:?}\n{tail}",
        guest.modules_failed
    );

    // Two vCPUs: the second came up through PSCI CPU_ON.
    let cpuinfo = section(console, "cpuinfo").unwrap_or_else(|e| panic!("{e}\n{tail}"));
    let processors = processor_count(&cpuinfo);

    let snaps: Result<Vec<Interrupts>, String> = ["irq1", "irq2", "irq3"]
        .iter()
        .map(|n| snapshot(console, n))
        .collect();
    let [irq1, irq2, irq3]: [Interrupts; 3] = snaps
        .unwrap_or_else(|e| panic!("{e}\n{tail}"))
        .try_into()
        .unwrap();
    let figures = || -> Result<String, String> {
        let e = |e: integration_tests::procfs::ProcError| e.to_string();
        let timer_delta =
            per_cpu_delta(irq1.timer().map_err(e)?, irq2.timer().map_err(e)?).map_err(e)?;
        let ipi_busy = per_cpu_delta(&irq2.ipis_per_cpu(), &irq3.ipis_per_cpu()).map_err(e)?;
        Ok(format!(
            "processors={processors} cpus_in_tables={}/{}/{} timer_1s_delta={timer_delta:?} \
             ipis_total={:?} ipis_during_busy={ipi_busy:?} ipi_rows={:?} busy_loops={:?}",
            irq1.cpus,
            irq2.cpus,
            irq3.cpus,
            irq3.ipis_per_cpu(),
            irq3.ipi_rows_delivered(),
            busy_loops(console),
        ))
    };
    let figures = figures().unwrap_or_else(|e| panic!("{e}\n{tail}"));
    let why = |what: &str| format!("{what}\nfigures: {figures}\n{tail}");
    println!("smp2 figures: {figures}");

    assert_eq!(processors, 2, "{}", why("expected 2 processor entries"));
    for snap in [&irq1, &irq2, &irq3] {
        assert_eq!(snap.cpus, 2, "{}", why("/proc/interrupts must show 2 CPUs"));
    }

    // The timer interrupt (the virtual timer, PPI 27) reaches both vCPUs.
    let timer_delta = per_cpu_delta(irq1.timer().unwrap(), irq2.timer().unwrap()).unwrap();
    assert!(
        timer_delta.iter().all(|d| *d > 0),
        "{}",
        why("arch_timer counts must rise on both CPUs over the 1 s sleep")
    );

    // IPIs (SGIs through the virtual GIC) are delivered to both vCPUs, and
    // keep being delivered while the loops wake tasks across CPUs.
    let total = irq3.ipis_per_cpu();
    assert!(
        total.iter().sum::<u64>() > 0 && total.iter().all(|n| *n > 0),
        "{}",
        why("both CPUs must have received IPIs")
    );
    let busy_ipis = per_cpu_delta(&irq2.ipis_per_cpu(), &total).unwrap();
    assert!(
        busy_ipis.iter().all(|n| *n > 0),
        "{}",
        why("both CPUs must receive IPIs during the cross-CPU busy loops")
    );

    // Both pinned busy/sleep loops ran their 10 s, each on its own vCPU.
    let loops = busy_loops(console).unwrap_or_else(|e| panic!("{}", why(&e.to_string())));
    let mut cpus: Vec<u32> = loops.iter().map(|l| l.cpu).collect();
    cpus.sort_unstable();
    assert_eq!(cpus, [0, 1], "{}", why("one busy-loop report per vCPU"));
    for l in &loops {
        assert_eq!(
            l.ran_on,
            l.cpu,
            "{}",
            why("a pinned loop ran on another CPU")
        );
        assert!(
            l.elapsed_s() >= BUSY_SECONDS && l.rounds >= MIN_BUSY_ROUNDS,
            "{}",
            why("a busy loop stopped early")
        );
    }

    assert!(
        hypervisor_logged_power_off(console, "linux"),
        "{}",
        why("the hypervisor did not log the VM's power-off")
    );
}

#[test]
fn one_vcpu_256m_boots() {
    let _boot = boot_lock();
    let mut o = linux_options(1, 256 << 20);
    o.guest_cmd = Some(
        "s() { echo \"== $1 begin\"; cat /proc/$1; echo \"== $1 end\"; }\ns cpuinfo\ns meminfo\n"
            .into(),
    );
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.verdict(), Ok(()), "\n{tail}");
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let cpuinfo = section(&outcome.console, "cpuinfo").unwrap_or_else(|e| panic!("{e}\n{tail}"));
    let meminfo = section(&outcome.console, "meminfo").unwrap_or_else(|e| panic!("{e}\n{tail}"));
    let processors = processor_count(&cpuinfo);
    let mem_total_kib = meminfo_kib(&meminfo, "MemTotal");
    let figures = format!("processors={processors} MemTotal={mem_total_kib:?} KiB");
    println!("one-vCPU figures: {figures}");
    assert_eq!(processors, 1, "{figures}\n{tail}");
    let mib = mem_total_kib.unwrap_or_else(|| panic!("no MemTotal\n{tail}")) / 1024;
    assert!(
        (200..=256).contains(&mib),
        "MemTotal {mib} MiB is not in 200..=256 ({figures})\n{tail}"
    );
    assert!(
        hypervisor_logged_power_off(&outcome.console, "linux"),
        "the hypervisor did not log the VM's power-off\n{tail}"
    );
}

#[test]
fn linux_shell_is_driven_by_a_script() {
    let _boot = boot_lock();
    let dir = Layout::detect().out.join("test-scripts");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("linux-shell.script");
    std::fs::write(
        &script,
        "expect starting a shell\nsleep 0.5\nsend echo sum=$((40+2))\nexpect sum=42\nsend exit\nexpect shell exited\n",
    )
    .unwrap();
    let mut o = console_options(1, 256 << 20);
    o.script = Some(script);
    let outcome = boot(&o);
    assert_eq!(
        outcome.ending,
        Ending::Exited(Some(0)),
        "\n{}",
        console_tail(&outcome)
    );
    assert!(
        outcome.console.contains("Memory: "),
        "no kernel memory line\n{}",
        console_tail(&outcome)
    );
}

/// Console input longer than the guest UART's 32-byte receive FIFO arrives whole:
/// the hypervisor leaves the rest in the host UART until the guest has room.
/// Both ways a line reaches the guest: beside the authority partition (the
/// default) through its shell's `attach`, and with the guest owning the console.
#[test]
fn long_console_input_lines_arrive_whole() {
    let _boot = boot_lock();
    let dir = Layout::detect().out.join("test-scripts");
    std::fs::create_dir_all(&dir).unwrap();
    let line = "0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-tail";
    let typed = format!("send echo got-$((1+1))-{line}\nexpect got-2-{line}\nsend exit\n");
    for (name, o, script) in [
        (
            "beside the partition",
            linux_options(1, 256 << 20),
            format!(
                "expect rayos> \nexpect starting a shell\nsend attach linux\n\
                 expect attached to vm linux's console\nsleep 0.5\n{typed}\
                 expect no VM left to run\nsend \\x1d\nexpect detached from vm linux\n\
                 send host shutdown\nexpect powering off\n"
            ),
        ),
        (
            "owning the console",
            console_options(1, 256 << 20),
            format!("expect starting a shell\nsleep 0.5\n{typed}expect shell exited\n"),
        ),
    ] {
        let file = dir.join("linux-long-line.script");
        std::fs::write(&file, script).unwrap();
        let mut o = o;
        o.script = Some(file);
        let outcome = boot(&o);
        assert_eq!(
            outcome.ending,
            Ending::Exited(Some(0)),
            "{name}\n{}",
            console_tail(&outcome)
        );
    }
}

/// Guest command of the CPU 0 hot-plug test: take the boot CPU offline, note a
/// marker in RAM (a tmpfs file), bring CPU 0 back, and check both survived.
const CPU0_HOTPLUG_CMD: &str = r#"echo alive > /tmp/marker
echo 0 > /sys/devices/system/cpu/cpu0/online
echo "offline-now=$(cat /sys/devices/system/cpu/online)"
echo 1 > /sys/devices/system/cpu/cpu0/online
echo "online-now=$(cat /sys/devices/system/cpu/online)"
taskset -c 0 echo ran-on-cpu0
echo "marker=$(cat /tmp/marker)"
"#;

#[test]
fn cpu0_goes_offline_and_online_without_resetting_the_vm() {
    let _boot = boot_lock();
    let mut o = linux_options(2, 512 << 20);
    o.guest_cmd = Some(CPU0_HOTPLUG_CMD.into());
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    let console = &outcome.console;
    assert_eq!(outcome.verdict(), Ok(()), "\n{tail}");
    for needle in [
        "offline-now=1",
        "online-now=0-1",
        "ran-on-cpu0",
        "marker=alive",
    ] {
        assert!(
            console.contains(needle),
            "the guest did not print `{needle}`\n{tail}"
        );
    }
    let el2_resets = console
        .lines()
        .filter(|l| l.starts_with("[el2 ") && l.contains("resetting"))
        .count();
    assert_eq!(el2_resets, 0, "CPU_ON of vCPU 0 reset the VM\n{tail}");
    assert!(
        hypervisor_logged_power_off(console, "linux"),
        "the VM did not power off normally\n{tail}"
    );
}
