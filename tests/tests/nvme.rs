//! The NVMe disk behind PCI Express (`cargo xtask run --nvme SIZE`): Linux finds the
//! root complex from the device tree, enumerates the controller at 00:01.0 by class
//! code, takes its queue interrupts as MSI-X through the GICv2m frame, and data
//! written to /dev/nvme0n1 reads back the same.

use std::time::Duration;

use integration_tests::{boot_lock, console_tail};
use xtask::run::{run_captured, Guest, RunOptions};
use xtask::Layout;

const TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn linux_finds_nvme_with_msix_and_reads_back_what_it_wrote() {
    let _boot = boot_lock();
    let layout = Layout::detect();
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.smp = Some(2);
    o.nvme = Some(16 << 20);
    o.guest_cmd = Some(
        "echo class=$(cat /sys/bus/pci/devices/0000:00:01.0/class); \
         test -b /dev/nvme0n1 && echo found=nvme0n1; \
         echo size=$(cat /sys/block/nvme0n1/size); \
         dd if=/dev/urandom of=/tmp/pat bs=4096 count=256 2>/dev/null; \
         dd if=/tmp/pat of=/dev/nvme0n1 bs=4096 seek=100 conv=fsync 2>/dev/null; \
         echo 3 > /proc/sys/vm/drop_caches; \
         dd if=/dev/nvme0n1 of=/tmp/back bs=4096 skip=100 count=256 2>/dev/null; \
         cmp /tmp/pat /tmp/back && echo readback=match || echo readback=differs; \
         grep nvme /proc/interrupts | sed 's/^/irq: /'"
            .into(),
    );
    let outcome = run_captured(&layout, &o).unwrap_or_else(|e| panic!("could not boot: {e}"));
    let tail = console_tail(&outcome);
    outcome.verdict().unwrap_or_else(|e| panic!("{e}\n{tail}"));
    let c = &outcome.console;
    assert!(
        c.contains("class=0x010802"),
        "no NVMe function at 00:01.0\n{tail}"
    );
    assert!(c.contains("found=nvme0n1"), "no /dev/nvme0n1\n{tail}");
    // 16 MiB in 512-byte sectors.
    assert!(c.contains("size=32768"), "wrong namespace size\n{tail}");
    // The admin queue and one I/O queue per vCPU, each its own MSI vector.
    let irqs: Vec<&str> = c.lines().filter(|l| l.starts_with("irq: ")).collect();
    eprintln!("{}", irqs.join("\n"));
    for q in ["nvme0q0", "nvme0q1", "nvme0q2"] {
        let line = irqs
            .iter()
            .find(|l| l.trim_end().ends_with(q))
            .unwrap_or_else(|| panic!("no interrupt for {q}\n{tail}"));
        assert!(line.contains("MSI"), "{q} is not an MSI: {line}\n{tail}");
    }
    // The I/O completed through the I/O queues' vectors (counts per CPU, after
    // the IRQ number).
    let count = |q: &str| -> u64 {
        let line = irqs.iter().find(|l| l.trim_end().ends_with(q)).unwrap();
        line.split_whitespace()
            .skip(2)
            .map_while(|f| f.parse::<u64>().ok())
            .sum()
    };
    assert!(
        count("nvme0q1") + count("nvme0q2") > 0,
        "no I/O queue interrupt was taken\n{tail}"
    );
    assert!(
        c.contains("readback=match"),
        "data read back differs\n{tail}"
    );
}
