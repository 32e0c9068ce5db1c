//! The run machinery against a real QEMU and hypervisor: script `expect` steps
//! see the console, an unmet step is named, the timeout kills QEMU, and a
//! timed-out run says where each emulated CPU was.

use std::time::Duration;

use integration_tests::{boot_lock, console_tail, script};
use xtask::run::{run_captured, Ending, Guest, RunOptions};
use xtask::Layout;

#[test]
fn script_steps_follow_the_console_in_order() {
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::Selftest, Duration::from_secs(120));
    o.script = Some(script(
        "selftest-order.script",
        "# the hypervisor logs first, then the guest runs its checks\n\
         expect \\[el2 [A-Z]+ *\\] RayOS EL2\n\
         expect PASS hvc-roundtrip\n\
         expect (?m)^selftest: \\d+ passed, \\d+ failed\n",
    ));
    let outcome =
        run_captured(&Layout::detect(), &o).unwrap_or_else(|e| panic!("set-up failed: {e}"));
    assert!(
        matches!(outcome.ending, Ending::Exited(Some(0)) | Ending::ScriptDone),
        "script did not complete:\n{}",
        console_tail(&outcome)
    );
}

#[test]
fn an_unmet_expect_is_named_when_qemu_exits() {
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::Selftest, Duration::from_secs(120));
    o.script = Some(script(
        "selftest-unmet.script",
        "expect PASS hvc-roundtrip\n\nexpect this text never appears\n",
    ));
    let outcome =
        run_captured(&Layout::detect(), &o).unwrap_or_else(|e| panic!("set-up failed: {e}"));
    match &outcome.ending {
        Ending::StepUnmet {
            step,
            code: Some(0),
        } => assert_eq!(step, "line 3: `expect this text never appears`"),
        other => panic!(
            "expected the VM to power off before line 3 matched, got {other:?}\n{}",
            console_tail(&outcome)
        ),
    }
    assert!(outcome.verdict().unwrap_err().contains("line 3"));
}

#[test]
fn the_timeout_kills_a_stuck_qemu() {
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::Selftest, Duration::from_secs(3));
    // `-S`: QEMU starts with its CPUs stopped, so nothing ever runs.
    o.qemu_args = vec!["-S".into()];
    let outcome =
        run_captured(&Layout::detect(), &o).unwrap_or_else(|e| panic!("set-up failed: {e}"));
    assert_eq!(outcome.ending, Ending::TimedOut { waiting_for: None });
    assert!(
        outcome.elapsed < Duration::from_secs(30),
        "the boot took {:?}",
        outcome.elapsed
    );
    let why = outcome.verdict().unwrap_err();
    assert!(why.contains("timed out after 3 s"), "{why}");
    assert!(
        stopped_qemus().is_empty(),
        "QEMU still running: {:?}",
        stopped_qemus()
    );
}

#[test]
fn a_timed_out_run_reports_where_each_cpu_was() {
    let _boot = boot_lock();
    // The reset-loop guest resets its VM forever: the run never ends by itself.
    // Two physical CPUs for its one vCPU: one of them is always in the hypervisor.
    let mut o = RunOptions::headless(Guest::ResetLoop, Duration::from_secs(20));
    o.host_cpus = Some(2);
    o.script = Some(script(
        "reset-loop-forever.script",
        "expect reset-loop: alive\nexpect this text never appears\n",
    ));
    let outcome =
        run_captured(&Layout::detect(), &o).unwrap_or_else(|e| panic!("set-up failed: {e}"));
    let tail = console_tail(&outcome);
    assert!(
        matches!(outcome.ending, Ending::TimedOut { .. }),
        "the run did not time out:\n{tail}"
    );
    let report = outcome
        .cpus_at_timeout
        .as_deref()
        .unwrap_or_else(|| panic!("no CPU report after a timeout:\n{tail}"));
    assert!(tail.contains(report), "console_tail leaves the report out");
    let lines: Vec<&str> = report.lines().collect();
    assert_eq!(lines[0], xtask::hang::HEADER, "{report}");
    // `CPU n: ELxh pc 0x… (…)`, one per CPU.
    let cpu_line = |n: u32| {
        lines
            .iter()
            .position(|l| l.starts_with(&format!("CPU {n}: EL")))
            .unwrap_or_else(|| panic!("no line for CPU {n}:\n{report}\n{tail}"))
    };
    let hypervisor: Vec<usize> = [cpu_line(0), cpu_line(1)]
        .into_iter()
        .filter(|&i| lines[i].ends_with("(the hypervisor)"))
        .collect();
    assert!(
        !hypervisor.is_empty(),
        "neither CPU in the hypervisor:\n{report}"
    );
    // Its PC named from the hypervisor's symbols: `    0x… rayos_el2::…`.
    for i in hypervisor {
        let pc = lines[i]
            .split(" pc ")
            .nth(1)
            .and_then(|r| r.split(' ').next());
        let named = lines.get(i + 1).and_then(|l| l.trim().split_once(' '));
        assert!(
            matches!(named, Some((addr, name)) if Some(addr) == pc && name != "?"),
            "the hypervisor's PC is not named:\n{report}"
        );
    }
}

/// Command lines of running QEMUs started with `-S` and this workspace's bundle.
fn stopped_qemus() -> Vec<String> {
    let bundle = Layout::detect().bundle("selftest").display().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    procs
        .flatten()
        .filter_map(|p| std::fs::read(p.path().join("cmdline")).ok())
        .map(|c| {
            c.split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect::<Vec<_>>()
        })
        .filter(|args| {
            args.first()
                .is_some_and(|a| a.ends_with("qemu-system-aarch64"))
                && args.iter().any(|a| a == "-S")
                && args.contains(&bundle)
        })
        .map(|args| args.join(" "))
        .collect()
}
