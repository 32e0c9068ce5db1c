//! The Windows-shaped VM with its MSIs through the GICv3 ITS (`cargo xtask run
//! --profile windows --msi its`, which records `msi its` in the VM's record):
//! the ACPI tables describe the ITS (the MADT's GIC ITS structure) and the IORT
//! maps the root complex to it, and Linux on ACPI — booted the way Windows is,
//! firmware with Secure Boot, shim, GRUB, from the ESP on NVMe — takes the NVMe
//! controller's MSI-X vectors as LPIs of the ITS (its MSI domain in /proc/interrupts),
//! one I/O queue per vCPU, and its I/O completes through them.

use std::time::Duration;

use integration_tests::{boot, boot_lock, console_tail, console_value};
use registry::cli::FileDisk;
use registry::{DeviceModel, MsiController, Registry};
use xtask::linux_guest::parse_console;
use xtask::run::{Ending, Profile, RunOptions};
use xtask::Layout;

/// A boot through the signed chain under the hypervisor (firmware, shim, GRUB,
/// Linux) under TCG on a shared host.
const CHAIN_TIMEOUT: Duration = Duration::from_secs(900);

const GUEST_CMD: &str = r#"[ -e /proc/device-tree ] && echo devicetree=yes || echo devicetree=no
echo "class=$(cat /sys/bus/pci/devices/0000:00:01.0/class)"
dd if=/dev/nvme0n1 of=/dev/null bs=65536 count=64 iflag=direct 2>/dev/null && echo read=done
dmesg | grep -i -e 'ITS' -e 'IORT' -e GICv2m | sed 's/^/log: /'
grep nvme /proc/interrupts | sed 's/^/irq: /'
"#;

#[test]
fn a_windows_vm_with_the_its_takes_nvme_msix_as_lpis_through_acpi() {
    let _g = boot_lock();
    let disk = Layout::detect().out.join("test-windows-its.img");
    let o = RunOptions {
        profile: Profile::Windows,
        msi: Some(boards::devices::Msi::Its),
        system_disk: Some(disk.clone()),
        fresh: true,
        smp: Some(2),
        guest_cmd: Some(GUEST_CMD.into()),
        ..RunOptions::headless(Default::default(), CHAIN_TIMEOUT)
    };
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    let c = outcome.console.replace('\r', "");
    assert_eq!(parse_console(&c).cmd_exit, Some(0), "\n{tail}");
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    // The record says so, and that is where el2 took it from.
    {
        let mut fd = FileDisk::open(&disk, true).unwrap();
        let reg = Registry::open(&mut fd).unwrap();
        let vm = reg
            .vms()
            .iter()
            .find(|v| v.device_model == DeviceModel::Windows)
            .unwrap_or_else(|| panic!("no windows VM on {}", disk.display()));
        assert_eq!(vm.msi, MsiController::Its);
    }
    assert!(
        c.contains("gic-its@8080000"),
        "the hypervisor's bus has no ITS\n{tail}"
    );
    // Linux on ACPI, no device tree; it found the ITS from the MADT and no v2m
    // frame, and the NVMe function through the IORT's mapping.
    assert_eq!(console_value(&c, "devicetree"), Some("no"), "\n{tail}");
    assert_eq!(console_value(&c, "class"), Some("0x010802"), "\n{tail}");
    let log: Vec<&str> = c.lines().filter(|l| l.starts_with("log: ")).collect();
    eprintln!("{}", log.join("\n"));
    assert!(
        log.iter()
            .any(|l| l.contains("ITS") && l.contains("8080000")),
        "Linux found no ITS at 0x08080000 in the MADT\n{tail}"
    );
    assert!(
        !log.iter().any(|l| l.contains("GICv2m")),
        "Linux used a v2m frame\n{tail}"
    );
    let irqs: Vec<&str> = c.lines().filter(|l| l.starts_with("irq: ")).collect();
    eprintln!("{}", irqs.join("\n"));
    let queue = |q: &str| irqs.iter().find(|l| l.trim_end().ends_with(q)).copied();
    for q in ["nvme0q0", "nvme0q1", "nvme0q2"] {
        let line = queue(q).unwrap_or_else(|| panic!("no interrupt for {q}\n{tail}"));
        assert!(
            line.contains("ITS") && line.contains("MSI"),
            "{q} is not an MSI of the ITS: {line}\n{tail}"
        );
    }
    assert!(
        queue("nvme0q3").is_none(),
        "more I/O queues than vCPUs\n{tail}"
    );
    let count = |q: &str| -> u64 {
        queue(q)
            .unwrap()
            .split_whitespace()
            .skip(2)
            .map_while(|f| f.parse::<u64>().ok())
            .sum()
    };
    assert_eq!(console_value(&c, "read"), Some("done"), "\n{tail}");
    assert!(
        count("nvme0q1") + count("nvme0q2") > 0,
        "no I/O queue interrupt was taken\n{tail}"
    );
    let _ = std::fs::remove_file(&disk);
}
