//! The early-boot diagnostic on the CPU models `cargo xtask run --cpu MODEL`
//! passes to QEMU: every boot prints the CPU's virtualization features, the GIC,
//! the timer frequency and the memory map before a guest starts; a CPU without
//! RNDR names the entropy source used instead; a CPU without LSE atomics gets
//! Windows guests refused with the reason; a machine without the GICv3 CPU
//! interface is refused with one clear line and the fatal status.

use std::time::Duration;

use integration_tests::{boot, boot_lock, console_tail};
use xtask::run::{Ending, Guest, RunOptions, RunOutcome};

const TIMEOUT: Duration = Duration::from_secs(120);
/// The status the hypervisor reports through semihosting when it refuses to run.
const FATAL_STATUS: i32 = 70;

fn run(cpu: Option<&str>, qemu_args: &[&str]) -> RunOutcome {
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::Selftest, TIMEOUT);
    if let Some(model) = cpu {
        // What `cargo xtask run --cpu MODEL` turns into.
        o.qemu_args = vec!["-cpu".into(), model.into()];
    }
    o.qemu_args.extend(qemu_args.iter().map(|s| s.to_string()));
    boot(&o)
}

/// The diagnostic's CPU line (`key=value` pairs).
fn cpu_line(console: &str) -> Option<&str> {
    console.lines().find_map(|l| {
        l.split_once("diagnostic: CPU ")
            .map(|(_, rest)| rest.trim_end())
    })
}

fn has(line: &str, pair: &str) -> bool {
    line.split_whitespace().any(|p| p == pair)
}

/// The diagnostic lines every boot prints, before the guest's first word.
fn assert_full_diagnostic(o: &RunOutcome, tail: &str) {
    let c = &o.console;
    let guest = c.find("selftest-guest").unwrap_or(c.len());
    for needle in [
        "diagnostic: CPU ",
        "diagnostic: Windows guests: ",
        "diagnostic: GIC v3 (CPU interface V3): GICD 0x8000000",
        "diagnostic: timer ",
        "diagnostic: memory 0x40000000..",
        "diagnostic: console Pl011 at 0x9000000",
    ] {
        let at = c
            .find(needle)
            .unwrap_or_else(|| panic!("no `{needle}`\n{tail}"));
        assert!(at < guest, "`{needle}` after the guest started\n{tail}");
    }
    // QEMU's own tree agrees with the qemu-virt description: no mismatch, no fallback.
    assert!(!c.contains("the firmware says"), "{tail}");
    assert!(!c.contains("the firmware does not describe"), "{tail}");
    assert!(
        o.verdict().is_ok(),
        "the self-test must still pass: {:?}\n{tail}",
        o.verdict()
    );
}

#[test]
fn max_reports_every_feature_and_allows_windows() {
    let o = run(None, &[]);
    let tail = console_tail(&o);
    let line = cpu_line(&o.console).unwrap_or_else(|| panic!("no CPU line\n{tail}"));
    for pair in [
        "EL2=yes",
        "VHE=yes",
        "VMID=16",
        "GIC-sysregs=v3",
        "LSE=yes",
        "RNDR=yes",
        "FWB=yes",
    ] {
        assert!(has(line, pair), "`{pair}` missing from `{line}`\n{tail}");
    }
    assert!(
        line.contains(" LRs=") && line.contains(" PA=4") || line.contains(" PA=52"),
        "{line}"
    );
    assert!(!line.contains("PAuth=no"), "{line}");
    assert!(
        o.console.contains("diagnostic: Windows guests: possible"),
        "{tail}"
    );
    assert!(
        o.console
            .contains("entropy: from the CPU's RNDR (FEAT_RNG)"),
        "{tail}"
    );
    assert_full_diagnostic(&o, &tail);
}

#[test]
fn neoverse_n1_has_no_rndr_and_names_its_entropy_source() {
    let o = run(Some("neoverse-n1"), &[]);
    let tail = console_tail(&o);
    let line = cpu_line(&o.console).unwrap_or_else(|| panic!("no CPU line\n{tail}"));
    for pair in [
        "VHE=yes", "VMID=16", "LSE=yes", "RNDR=no", "FWB=no", "PAuth=no",
    ] {
        assert!(has(line, pair), "`{pair}` missing from `{line}`\n{tail}");
    }
    assert!(
        o.console
            .contains("entropy: from the device tree's /chosen rng-seed"),
        "the entropy source used instead of RNDR must be named\n{tail}"
    );
    assert!(
        o.console.contains("diagnostic: Windows guests: possible"),
        "{tail}"
    );
    assert_full_diagnostic(&o, &tail);
}

#[test]
fn cortex_a57_has_no_lse_so_windows_guests_are_refused() {
    let o = run(Some("cortex-a57"), &[]);
    let tail = console_tail(&o);
    let line = cpu_line(&o.console).unwrap_or_else(|| panic!("no CPU line\n{tail}"));
    // Armv8.0: no VHE, 8-bit VMIDs, no LSE; QEMU gives it the GICv3 CPU
    // interface with gic-version=3, so the hypervisor runs.
    for pair in [
        "VHE=no",
        "VMID=8",
        "GIC-sysregs=v3",
        "LSE=no",
        "RNDR=no",
        "FWB=no",
        "PAuth=no",
    ] {
        assert!(has(line, pair), "`{pair}` missing from `{line}`\n{tail}");
    }
    assert!(
        o.console.contains(
            "diagnostic: Windows guests: refused: the CPU has no LSE atomics (FEAT_LSE, ID_AA64ISAR0_EL1.Atomic < 2), which Windows 11 on Arm requires"
        ),
        "{tail}"
    );
    assert_full_diagnostic(&o, &tail);
}

#[test]
fn a_cpu_without_the_gicv3_interface_is_refused_with_the_reason() {
    // A later -M merges into the first: the same machine with a GICv2, whose CPU
    // interface has no system registers (QEMU then reports ID_AA64PFR0_EL1.GIC = 0).
    let o = run(None, &["-M", "virt,virtualization=on,gic-version=2"]);
    let tail = console_tail(&o);
    assert!(
        matches!(o.ending, Ending::Exited(Some(FATAL_STATUS))),
        "expected the fatal status, got {:?}\n{tail}",
        o.ending
    );
    let line = cpu_line(&o.console).unwrap_or_else(|| panic!("no CPU line\n{tail}"));
    assert!(has(line, "GIC-sysregs=none"), "{line}");
    assert!(
        o.console.contains(
            "this CPU cannot run RayOS EL2: no GICv3 system-register CPU interface (ID_AA64PFR0_EL1.GIC = 0)"
        ),
        "{tail}"
    );
    assert!(
        !o.console.contains("selftest-guest"),
        "no guest may start\n{tail}"
    );
}
