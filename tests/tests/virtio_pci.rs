//! virtio-blk over the virtio 1.2 PCI transport (`cargo xtask run --virtio-pci
//! SIZE`): Linux finds the root complex from the device tree, binds virtio_pci to
//! the function at 00:02.0 by its virtio vendor and device IDs (modern-only
//! 0x1af4:0x1042), takes the queue's interrupt as MSI-X through the GICv2m frame,
//! and data written to /dev/vda reads back the same. The device model is the one
//! virtio-mmio carries (`virtio::Blk`); only the transport differs.

use std::time::Duration;

use integration_tests::{boot_lock, console_tail};
use xtask::run::{run_captured, Guest, RunOptions};
use xtask::Layout;

const TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn linux_finds_virtio_blk_over_pci_with_msix_and_reads_back_what_it_wrote() {
    let _boot = boot_lock();
    let layout = Layout::detect();
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    // Beside the authority partition (the default configuration).
    o.authority = true;
    o.virtio_pci = Some(16 << 20);
    o.guest_cmd = Some(
        "d=/sys/bus/pci/devices/0000:00:02.0; \
         echo vendor=$(cat $d/vendor) device=$(cat $d/device) revision=$(cat $d/revision); \
         echo driver=$(basename $(readlink $d/driver)); \
         echo vda=$(readlink /sys/block/vda); \
         echo size=$(cat /sys/block/vda/size); \
         dd if=/dev/urandom of=/tmp/pat bs=4096 count=256 2>/dev/null; \
         dd if=/tmp/pat of=/dev/vda bs=4096 seek=100 conv=fsync 2>/dev/null; \
         echo 3 > /proc/sys/vm/drop_caches; \
         dd if=/dev/vda of=/tmp/back bs=4096 skip=100 count=256 2>/dev/null; \
         cmp /tmp/pat /tmp/back && echo readback=match || echo readback=differs; \
         grep virtio /proc/interrupts | sed 's/^/irq: /'"
            .into(),
    );
    let outcome = run_captured(&layout, &o).unwrap_or_else(|e| panic!("could not boot: {e}"));
    let tail = console_tail(&outcome);
    outcome.verdict().unwrap_or_else(|e| panic!("{e}\n{tail}"));
    let c = &outcome.console;
    assert!(
        c.contains("vendor=0x1af4 device=0x1042 revision=0x01"),
        "no modern virtio-blk function at 00:02.0\n{tail}"
    );
    assert!(
        c.contains("driver=virtio-pci"),
        "virtio_pci did not bind\n{tail}"
    );
    // /dev/vda sits under the PCI function, not under a virtio-mmio platform device.
    let vda = c
        .lines()
        .find_map(|l| l.strip_prefix("vda="))
        .unwrap_or_else(|| panic!("no vda line\n{tail}"));
    assert!(
        vda.contains("0000:00:02.0/virtio"),
        "/dev/vda is not the PCI function's disk: {vda}\n{tail}"
    );
    // 16 MiB in 512-byte sectors.
    assert!(c.contains("size=32768"), "wrong disk size\n{tail}");
    // The request queue has its own MSI-X vector, and the I/O took it.
    let irqs: Vec<&str> = c.lines().filter(|l| l.starts_with("irq: ")).collect();
    eprintln!("{}", irqs.join("\n"));
    let req = irqs
        .iter()
        .find(|l| l.contains("MSI") && l.trim_end().ends_with("-req.0"))
        .unwrap_or_else(|| panic!("no MSI-X vector for the request queue\n{tail}"));
    let taken: u64 = req
        .split_whitespace()
        .skip(2)
        .map_while(|f| f.parse::<u64>().ok())
        .sum();
    assert!(
        taken > 0,
        "the request queue's vector was never taken: {req}\n{tail}"
    );
    assert!(
        irqs.iter()
            .any(|l| l.contains("MSI") && l.trim_end().ends_with("-config")),
        "no MSI-X vector for configuration changes\n{tail}"
    );
    assert!(
        c.contains("readback=match"),
        "data read back differs\n{tail}"
    );
}
