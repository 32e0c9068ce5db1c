//! MSI delivery through the GICv3 ITS (`cargo xtask run --nvme SIZE --msi its`):
//! Linux finds the ITS under the GIC in the device tree, the distributor's LPIs,
//! and the NVMe controller at 00:01.0 (DeviceID 0x8 through the root complex's
//! `msi-map`) with its MSI-X vectors as LPIs, one I/O queue per vCPU; data written
//! to /dev/nvme0n1 reads back the same. Hostile ITS programming (garbage commands,
//! tables outside RAM, queue loops, unmapped devices and events) is covered by the
//! `vgic::its` host tests and the `gic_its` fuzz target; suspend and snapshots of
//! an ITS VM by `its_suspend.rs`.

use std::time::Duration;

use integration_tests::{boot_lock, console_tail};
use xtask::run::{run_captured, Guest, NvmeDisk, RunOptions};
use xtask::Layout;

const TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn linux_takes_nvme_msix_as_lpis_from_the_its() {
    let _boot = boot_lock();
    let layout = Layout::detect();
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.smp = Some(2);
    o.nvme = Some(NvmeDisk::Ram(16 << 20));
    o.msi = Some(boards::devices::Msi::Its);
    // Beside the authority partition (the default configuration).
    o.authority = true;
    o.guest_cmd = Some(
        "echo class=$(cat /sys/bus/pci/devices/0000:00:01.0/class); \
         test -b /dev/nvme0n1 && echo found=nvme0n1; \
         dd if=/dev/urandom of=/tmp/pat bs=4096 count=256 2>/dev/null; \
         dd if=/tmp/pat of=/dev/nvme0n1 bs=4096 seek=100 conv=fsync 2>/dev/null; \
         echo 3 > /proc/sys/vm/drop_caches; \
         dd if=/dev/nvme0n1 of=/tmp/back bs=4096 skip=100 count=256 2>/dev/null; \
         cmp /tmp/pat /tmp/back && echo readback=match || echo readback=differs; \
         dmesg | grep -i -e 'ITS' -e 'LPI' -e v2m | sed 's/^/log: /'; \
         grep nvme /proc/interrupts | sed 's/^/irq: /'"
            .into(),
    );
    let outcome = run_captured(&layout, &o).unwrap_or_else(|e| panic!("could not boot: {e}"));
    let tail = console_tail(&outcome);
    outcome.verdict().unwrap_or_else(|e| panic!("{e}\n{tail}"));
    let c = &outcome.console;
    let log: Vec<&str> = c.lines().filter(|l| l.starts_with("log: ")).collect();
    eprintln!("{}", log.join("\n"));
    // Linux's ITS driver found ours at virt's address, and no v2m frame.
    assert!(
        log.iter()
            .any(|l| l.contains("ITS") && l.contains("8080000")),
        "the guest found no ITS at 0x08080000\n{tail}"
    );
    assert!(
        !log.iter().any(|l| l.contains("GICv2m")),
        "the guest used a v2m frame\n{tail}"
    );
    assert!(
        c.contains("class=0x010802"),
        "no NVMe function at 00:01.0\n{tail}"
    );
    assert!(c.contains("found=nvme0n1"), "no /dev/nvme0n1\n{tail}");
    // The admin queue and one I/O queue per vCPU, each its own vector of the ITS.
    let irqs: Vec<&str> = c.lines().filter(|l| l.starts_with("irq: ")).collect();
    eprintln!("{}", irqs.join("\n"));
    for q in ["nvme0q0", "nvme0q1", "nvme0q2"] {
        let line = irqs
            .iter()
            .find(|l| l.trim_end().ends_with(q))
            .unwrap_or_else(|| panic!("no interrupt for {q}\n{tail}"));
        assert!(
            line.contains("ITS") && line.contains("MSI"),
            "{q} is not an ITS MSI: {line}\n{tail}"
        );
    }
    assert!(
        !irqs.iter().any(|l| l.trim_end().ends_with("nvme0q3")),
        "more I/O queues than vCPUs\n{tail}"
    );
    // The I/O completed through the I/O queues' LPIs (counts per CPU, after the
    // IRQ number).
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
