//! Platform discovery on a machine whose firmware lists its CPUs out of the
//! hardware's order: QEMU `virt` given a device tree (`-dtb`) whose two cpu nodes
//! carry swapped MPIDRs (`boards/testdata/qemu-virt-gicv3-2cpu-swapped-mpidrs.dtb`).
//! The hypervisor must pair each CPU with the redistributor whose GICR_TYPER
//! affinity matches its MPIDR (the boot CPU, MPIDR 0, is the tree's second CPU but
//! owns the first redistributor); pairing by position enables the boot CPU's
//! timer and SGIs on the other CPU's redistributor and the guest hangs. QEMU's
//! `-dtb` blob also carries FDT_NOP tokens, which discovery must read through.
//! And the image is position-independent: it runs where the loader puts it.

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

/// Offset of `text_offset` in the arm64 Image header (Linux's booting.rst).
const TEXT_OFFSET_FIELD: std::ops::Range<usize> = 8..16;
/// Where QEMU puts the image by default: RAM base + the header's 0x80000.
const DEFAULT_IMAGE_ADDR: u64 = 0x4008_0000;
/// Another 2 MiB-aligned base (+ the same 512 KiB): 2 MiB higher.
const MOVED_TEXT_OFFSET: u64 = 0x28_0000;

#[test]
fn the_image_runs_where_the_loader_puts_it() {
    let _boot = boot_lock();
    let layout = Layout::detect();
    xtask::build::build_hypervisor(&layout, true).expect("build the hypervisor");
    let mut image = std::fs::read(layout.hypervisor_image()).expect("read the image");
    // The same image, its header asking the loader for another place: QEMU's
    // `-kernel` loads an arm64 Image at RAM base + text_offset.
    image[TEXT_OFFSET_FIELD].copy_from_slice(&MOVED_TEXT_OFFSET.to_le_bytes());
    let moved = layout.out.join("test-images/rayos-el2-moved.bin");
    std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
    std::fs::write(&moved, &image).unwrap();

    let mut o = RunOptions::headless(Guest::Selftest, TIMEOUT);
    o.smp = Some(2);
    // QEMU takes the last -kernel.
    o.qemu_args = vec!["-kernel".into(), moved.to_string_lossy().into_owned()];
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    let at = 0x4000_0000 + MOVED_TEXT_OFFSET;
    assert_ne!(at, DEFAULT_IMAGE_ADDR);
    assert!(
        outcome
            .console
            .contains(&format!("starting at EL2, image at {at:#x},")),
        "{tail}"
    );
    assert!(outcome.selftest().failed.is_empty(), "{tail}");
    assert!(outcome.verdict().is_ok(), "{:?}\n{tail}", outcome.verdict());
}
