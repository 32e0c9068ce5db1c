//! The NVMe disk behind PCI Express (`cargo xtask run --nvme SIZE`): Linux finds the
//! root complex from the device tree, enumerates the controller at 00:01.0 by class
//! code, takes its queue interrupts as MSI-X through the GICv2m frame, and data
//! written to /dev/nvme0n1 reads back the same. With `--nvme system` the namespace
//! is the VM's disk extent on the system disk (asynchronous I/O): what the guest
//! writes lands in that extent and survives a host reboot.

use std::time::Duration;

use integration_tests::{boot, boot_lock, console_tail, console_value};
use registry::cli::FileDisk;
use registry::{DeviceModel, Registry};
use xtask::run::{run_captured, Guest, NvmeDisk, RunOptions};
use xtask::Layout;

const TIMEOUT: Duration = Duration::from_secs(300);

#[test]
fn linux_finds_nvme_with_msix_and_reads_back_what_it_wrote() {
    let _boot = boot_lock();
    let layout = Layout::detect();
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.smp = Some(2);
    o.nvme = Some(NvmeDisk::Ram(16 << 20));
    // Beside the authority partition (the default configuration).
    o.authority = true;
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

/// Where in the namespace the persistence test writes (4 KiB blocks), and how many.
const SEEK_BLOCKS: u64 = 100;
const PATTERN_BLOCKS: u64 = 64;

/// A Linux run from the system disk at `disk` with its guest disk behind NVMe.
fn nvme_system(disk: &std::path::Path, cmd: &str) -> RunOptions {
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.smp = Some(2);
    o.nvme = Some(NvmeDisk::System);
    // Beside the authority partition (the default configuration).
    o.authority = true;
    o.system_disk = Some(disk.to_path_buf());
    o.guest_cmd = Some(cmd.into());
    o
}

#[test]
fn nvme_on_the_system_disk_keeps_what_the_guest_wrote_across_a_host_reboot() {
    let _boot = boot_lock();
    let dir = Layout::detect()
        .out
        .join("tmp")
        .join(format!("nvme-system-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let disk = dir.join("system-disk.img");

    // Boot 1 (a new system disk): the VM's only disk is the NVMe namespace (no
    // /dev/vda); random data goes to it with a flush, and its checksum is printed.
    let first = boot(&nvme_system(
        &disk,
        &format!(
            "echo class=$(cat /sys/bus/pci/devices/0000:00:01.0/class); \
             test -b /dev/vda && echo vda=present || echo vda=absent; \
             echo size=$(cat /sys/block/nvme0n1/size); \
             dd if=/dev/urandom of=/tmp/pat bs=4096 count={PATTERN_BLOCKS} 2>/dev/null; \
             dd if=/tmp/pat of=/dev/nvme0n1 bs=4096 seek={SEEK_BLOCKS} conv=fsync 2>/dev/null \
             && echo wrote=$(md5sum < /tmp/pat | cut -d' ' -f1)"
        ),
    ));
    let tail1 = console_tail(&first);
    assert_eq!(first.verdict(), Ok(()), "boot 1\n{tail1}");
    let c1 = &first.console;
    assert_eq!(
        console_value(c1, "class"),
        Some("0x010802"),
        "no NVMe function at 00:01.0\n{tail1}"
    );
    assert!(
        c1.contains("as NVMe namespace 1"),
        "the hypervisor did not put disk 0 behind NVMe\n{tail1}"
    );
    assert_eq!(console_value(c1, "vda"), Some("absent"), "{tail1}");
    // The default VM's 256 MiB guest disk, in 512-byte sectors.
    let sectors = xtask::sysdisk::GUEST_DISK_SIZE / 512;
    assert_eq!(
        console_value(c1, "size"),
        Some(sectors.to_string().as_str()),
        "{tail1}"
    );
    let wrote = console_value(c1, "wrote")
        .unwrap_or_else(|| panic!("boot 1 did not write\n{tail1}"))
        .to_string();

    // The host: the record says linux-dt-nvme, and the bytes are in the VM's disk
    // extent of the system-disk image.
    let mut fd = FileDisk::open(&disk, true).unwrap();
    let reg = Registry::open(&mut fd).unwrap();
    let vm = &reg.vms()[0];
    assert_eq!(vm.device_model, DeviceModel::LinuxDtNvme);
    let extent = vm.disks[0].extent;
    drop(fd);
    let image = std::fs::read(&disk).unwrap();
    let at = (extent.start + SEEK_BLOCKS * 4096) as usize;
    let in_extent = &image[at..at + (PATTERN_BLOCKS * 4096) as usize];
    assert!(
        in_extent.iter().any(|b| *b != 0),
        "the extent holds no data where the guest wrote"
    );
    drop(image);

    // Boot 2 (a host reboot, same system disk): the same bytes read back.
    let second = boot(&nvme_system(
        &disk,
        &format!(
            "dd if=/dev/nvme0n1 bs=4096 skip={SEEK_BLOCKS} count={PATTERN_BLOCKS} 2>/dev/null \
             | md5sum | cut -d' ' -f1 | sed 's/^/read=/'"
        ),
    ));
    let tail2 = console_tail(&second);
    assert_eq!(second.verdict(), Ok(()), "boot 2\n{tail2}");
    assert!(
        second.console.contains(": start #2"),
        "boot 2 is not the same VM's second start\n{tail2}"
    );
    assert_eq!(
        console_value(&second.console, "read"),
        Some(wrote.as_str()),
        "boot 2 read back other data\n{tail2}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
