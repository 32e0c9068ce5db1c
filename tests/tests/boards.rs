//! Platform discovery on a machine whose firmware lists its CPUs out of the
//! hardware's order: QEMU `virt` given a device tree (`-dtb`) whose two cpu nodes
//! carry swapped MPIDRs (`boards/testdata/qemu-virt-gicv3-2cpu-swapped-mpidrs.dtb`).
//! The hypervisor must pair each CPU with the redistributor whose GICR_TYPER
//! affinity matches its MPIDR (the boot CPU, MPIDR 0, is the tree's second CPU but
//! owns the first redistributor); pairing by position enables the boot CPU's
//! timer and SGIs on the other CPU's redistributor and the guest hangs. QEMU's
//! `-dtb` blob also carries FDT_NOP tokens, which discovery must read through.

use std::time::Duration;

use integration_tests::{boot, boot_lock, console_tail};
use xtask::run::{Guest, RunOptions};
use xtask::Layout;

const TIMEOUT: Duration = Duration::from_secs(120);

#[test]
fn redistributors_follow_gicr_typer_affinity_not_firmware_order() {
    let _boot = boot_lock();
    let dtb = Layout::detect()
        .root
        .join("boards/testdata/qemu-virt-gicv3-2cpu-swapped-mpidrs.dtb");
    let mut o = RunOptions::headless(Guest::Selftest, TIMEOUT);
    o.smp = Some(2);
    o.qemu_args = vec!["-dtb".into(), dtb.to_string_lossy().into_owned()];
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    let c = &outcome.console;
    assert!(
        c.contains("platform: linux,dummy-virt (qemu-virt), 2 CPU(s) (boot CPU 0x0)"),
        "{tail}"
    );
    assert!(
        c.contains("GIC: redistributors matched to CPUs by GICR_TYPER affinity, not firmware order: [1, 0]"),
        "{tail}"
    );
    let report = outcome.selftest();
    assert!(report.failed.is_empty(), "{:?}\n{tail}", report.failed);
    assert!(outcome.verdict().is_ok(), "{:?}\n{tail}", outcome.verdict());
}
