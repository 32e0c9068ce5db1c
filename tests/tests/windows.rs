//! The Windows-shaped VM (issue 15, registry device model `windows`, `cargo
//! xtask run --profile windows`): Debian's AAVMF with Secure Boot finds the PCI
//! Express root complex in its device tree, enumerates the NVMe controller and
//! boots Debian's signed shim → GRUB → kernel from the ESP on the NVMe
//! namespace; Linux, booted through ACPI (MCFG, `PCI0`, the MADT's GIC MSI
//! frame), drives the controller with one I/O queue per vCPU on MSI-X vectors
//! of the GICv2m frame and finds the USB keyboard and tablet behind the xHCI;
//! what it writes to the namespace is there after a host reboot. VMs the model cannot serve yet are refused with one line.

use std::path::Path;
use std::time::Duration;

use integration_tests::{boot, boot_lock, console_tail, console_value};
use regex::Regex;
use registry::cli::FileDisk;
use registry::{DeviceModel, Registry};
use xtask::boot_chain::marker::{GRUB_WELCOME, SECURE_BOOT_ENABLED};
use xtask::linux_guest::parse_console;
use xtask::run::{Ending, Profile, RunOptions};
use xtask::Layout;

/// A boot through the signed chain under the hypervisor: firmware, shim, GRUB
/// reading a 30 MiB kernel through the NVMe model, Linux to the end of the
/// guest command, under TCG on a shared host.
const CHAIN_TIMEOUT: Duration = Duration::from_secs(900);

/// A start the hypervisor refuses before the firmware runs.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(300);

/// The guest command of both boots. It reports the platform, the PCI function
/// at 00:01.0, the block devices, the GICv2m frame and the NVMe interrupts;
/// then, 512 KiB before the namespace's end (past the ESP, before the backup
/// GPT), it reads a marker line: if a previous boot left one it prints
/// `kept=`, otherwise it writes a new one (flushed) and prints `wrote=`.
const GUEST_CMD: &str = r#"[ -e /proc/device-tree ] && echo devicetree=yes || echo devicetree=no
echo "nproc=$(nproc)"
echo "class=$(cat /sys/bus/pci/devices/0000:00:01.0/class)"
echo "blocks=$(ls /sys/block | tr '\n' ' ')"
dmesg | grep GICv2m | sed 's/^/v2m: /'
grep nvme /proc/interrupts | sed 's/^/irq: /'
i=0; while [ $(cat /sys/bus/usb/devices/*/product 2>/dev/null | grep -c 'RayOS USB') -lt 2 ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done
for u in /sys/bus/usb/devices/*; do [ -f $u/product ] && echo "usbdev: $(cat $u/product)"; done
off=$(( $(cat /sys/block/nvme0n1/size) / 8 - 128 ))
got=$(dd if=/dev/nvme0n1 bs=4096 skip=$off count=1 2>/dev/null | head -n 1 | tr -d '\000')
case "$got" in
rayos-keep-*) echo "kept=$got" ;;
*) echo "rayos-keep-$(cat /proc/sys/kernel/random/uuid)" > /tmp/mark
   dd if=/tmp/mark of=/dev/nvme0n1 bs=4096 seek=$off conv=fsync 2>/dev/null && echo "wrote=$(cat /tmp/mark)" ;;
esac
"#;

/// The firmware's boot manager starting an image from the NVMe namespace at
/// 00:01.0 (its device path: the host bridge, the function, the namespace).
const FROM_NVME: &str = r#"BdsDxe: (loading|starting) Boot[0-9A-F]{4} "[^"\r\n]*" from PciRoot\(0x0\)/Pci\(0x1,0x0\)/NVMe\(0x1"#;

/// Checks one chain boot of the Windows-shaped VM with `vcpus` vCPUs; returns
/// the console (without CRs) and its tail.
fn check_chain_boot(o: &RunOptions, vcpus: u32) -> (String, String) {
    let outcome = boot(o);
    let tail = console_tail(&outcome);
    let c = outcome.console.replace('\r', "");
    assert!(c.contains("UEFI firmware from flash at 0x0"), "\n{tail}");
    assert!(
        c.contains("as NVMe namespace 1"),
        "the hypervisor did not put disk 0 behind NVMe\n{tail}"
    );
    assert!(
        Regex::new(FROM_NVME).unwrap().is_match(&c),
        "the firmware did not boot from the NVMe namespace\n{tail}"
    );
    assert!(c.contains(GRUB_WELCOME), "shim did not start GRUB\n{tail}");
    assert!(
        c.contains(SECURE_BOOT_ENABLED),
        "the kernel did not log `{SECURE_BOOT_ENABLED}`\n{tail}"
    );
    assert_eq!(parse_console(&c).cmd_exit, Some(0), "\n{tail}");
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    // Linux on ACPI: no device tree; the function it enumerated from MCFG and
    // PCI0 is the NVMe controller (class 01/08/02), its only disk.
    assert_eq!(console_value(&c, "devicetree"), Some("no"), "\n{tail}");
    let want = vcpus.to_string();
    assert_eq!(console_value(&c, "nproc"), Some(want.as_str()), "\n{tail}");
    assert_eq!(console_value(&c, "class"), Some("0x010802"), "\n{tail}");
    let blocks = console_value(&c, "blocks").unwrap_or_default();
    assert!(
        blocks.split_whitespace().any(|b| b == "nvme0n1"),
        "blocks: {blocks}\n{tail}"
    );
    assert!(
        !blocks.split_whitespace().any(|b| b.starts_with("vd")),
        "a virtio-blk disk besides NVMe: {blocks}\n{tail}"
    );
    // The MSI frame from the MADT: the v2m frame's base and its 32 SPIs.
    assert!(
        c.lines().any(|l| l.starts_with("v2m: ")
            && l.contains("0x08020000")
            && l.contains("SPI[80:111]")),
        "Linux did not take the GICv2m frame from the MADT\n{tail}"
    );
    // The admin queue and one I/O queue per vCPU, each an MSI from the frame,
    // and no more.
    let irqs: Vec<&str> = c.lines().filter(|l| l.starts_with("irq: ")).collect();
    eprintln!("{}", irqs.join("\n"));
    // A kernel message may land inside a `/proc/interrupts` line on the shared
    // console (`… nvme0q1[    2.75] usb 1-1: …` while USB enumerates): a line's
    // own text ends where a kernel timestamp starts.
    let stamp = regex::Regex::new(r"\[\s*\d+\.\d+\]").expect("a valid pattern");
    let own = |l: &str| {
        stamp
            .find(l)
            .map_or(l, |m| &l[..m.start()])
            .trim_end()
            .to_string()
    };
    let queue = |q: &str| irqs.iter().find(|l| own(l).ends_with(q)).copied();
    for q in 0..=vcpus {
        let name = format!("nvme0q{q}");
        let line = queue(&name).unwrap_or_else(|| panic!("no interrupt for {name}\n{tail}"));
        assert!(line.contains("MSI"), "{name} is not an MSI: {line}\n{tail}");
    }
    let extra = format!("nvme0q{}", vcpus + 1);
    assert!(
        queue(&extra).is_none(),
        "more I/O queues than vCPUs\n{tail}"
    );
    let count = |q: u32| -> u64 {
        queue(&format!("nvme0q{q}"))
            .unwrap()
            .split_whitespace()
            .skip(2)
            .map_while(|f| f.parse::<u64>().ok())
            .sum()
    };
    assert!(
        (1..=vcpus).map(count).sum::<u64>() > 0,
        "no I/O queue interrupt was taken\n{tail}"
    );
    // The keyboard and tablet Windows has inbox drivers for: USB HID behind the
    // xHCI the firmware and Linux found on the root complex.
    for product in ["RayOS USB Keyboard", "RayOS USB Tablet"] {
        assert!(
            c.lines()
                .any(|l| l.starts_with("usbdev: ") && l.trim_end().ends_with(product)),
            "{product} not in /sys/bus/usb/devices\n{tail}"
        );
    }
    assert!(!c.contains("data abort injected"), "\n{tail}");
    (c, tail)
}

/// One Windows-shaped VM, two host starts (each chain boot costs about a
/// minute of TCG).
///
/// Start 1, `cargo xtask run --profile windows --smp 2` on a fresh system disk:
/// the chain boots from the ESP on NVMe with Secure Boot (see
/// [`check_chain_boot`]), and the guest writes a marker to the namespace. The
/// host finds the VM recorded as `windows` and the marker in the VM's disk
/// extent of the image.
///
/// Start 2, `cargo xtask run --profile windows --vm windows`: a new QEMU
/// process runs the VM as its record defines it (its boot disk is not written
/// again), boots the same chain from the same namespace, and reads the marker
/// back.
#[test]
fn windows_shaped_vm_boots_the_signed_chain_from_nvme_and_keeps_its_writes_across_a_host_reboot() {
    let _g = boot_lock();
    let layout = Layout::detect();
    let disk = layout.out.join("test-windows-shaped.img");
    let first = RunOptions {
        profile: Profile::Windows,
        system_disk: Some(disk.clone()),
        fresh: true,
        smp: Some(2),
        guest_cmd: Some(GUEST_CMD.into()),
        ..RunOptions::headless(Default::default(), CHAIN_TIMEOUT)
    };
    let (c1, tail1) = check_chain_boot(&first, 2);
    let wrote = console_value(&c1, "wrote")
        .unwrap_or_else(|| panic!("start 1 did not write its marker\n{tail1}"))
        .to_string();
    assert!(wrote.starts_with("rayos-keep-"), "{wrote}");

    // The host: the record is a windows VM, and the marker is in its disk
    // extent, 512 KiB before the extent's end.
    let (extent, name) = {
        let mut fd = FileDisk::open(&disk, true).unwrap();
        let reg = Registry::open(&mut fd).unwrap();
        let vm = reg
            .vms()
            .iter()
            .find(|v| v.device_model == DeviceModel::Windows)
            .unwrap_or_else(|| panic!("no windows VM on {}", disk.display()));
        assert_eq!(vm.disks.len(), 1);
        (vm.disks[0].extent, vm.name.clone())
    };
    assert_eq!(name, xtask::sysdisk::WINDOWS_VM_NAME);
    let at = extent.start + extent.len - (512 << 10);
    assert_eq!(
        read_at(&disk, at, wrote.len()),
        wrote.as_bytes(),
        "the marker is not in the VM's disk extent"
    );

    let second = RunOptions {
        profile: Profile::Windows,
        vm: Some(name),
        system_disk: Some(disk.clone()),
        ..RunOptions::headless(Default::default(), CHAIN_TIMEOUT)
    };
    let (c2, tail2) = check_chain_boot(&second, 2);
    assert!(
        c2.contains(": start #2"),
        "start 2 is not the same VM's second start\n{tail2}"
    );
    assert_eq!(
        console_value(&c2, "kept"),
        Some(wrote.as_str()),
        "start 2 did not read back the marker\n{tail2}"
    );
    let _ = std::fs::remove_file(&disk);
}

/// `len` bytes of the file `path` at `offset`.
fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    buf
}

/// A system disk at `path` with one `windows` VM named `name` (firmware boot
/// source; disk 0 writable, then `media` read-only disks) that autostarts. The
/// firmware code extent stays empty: every start here is refused before the
/// firmware is read.
fn windows_vm_disk(path: &Path, name: &str, media: usize) {
    use registry::{BootSpec, DiskSpec, Policy, Uuid, VmSpec};
    let _ = std::fs::remove_file(path);
    let p = path.to_string_lossy().into_owned();
    registry::cli::run(&["create".into(), p, "--size".into(), "64M".into()])
        .unwrap_or_else(|e| panic!("disk create: {e}"));
    let mut fd = FileDisk::open(path, false).unwrap();
    let mut reg = Registry::open(&mut fd).unwrap();
    let mut disks = vec![DiskSpec {
        size: 1 << 20,
        read_only: false,
    }];
    for _ in 0..media {
        disks.push(DiskSpec {
            size: 1 << 20,
            read_only: true,
        });
    }
    let spec = VmSpec {
        name: name.into(),
        vcpus: 1,
        memory_bytes: 256 << 20,
        device_model: DeviceModel::Windows,
        boot: BootSpec::Firmware {
            code_capacity: 1 << 20,
            vars_capacity: xtask::sysdisk::UEFI_VARS_EXTENT,
        },
        disks,
        tpm_nv_size: 0,
        policy: Policy {
            autostart: true,
            ..Policy::default()
        },
    };
    reg.add_vm(&mut fd, Uuid::from_random_bytes([0x5a; 16]), &spec)
        .unwrap_or_else(|e| panic!("add the windows VM: {e}"));
}

/// Runs the VM `name` of `disk` (`--profile windows --vm NAME`, with
/// `qemu_args`) and requires the hypervisor to refuse it with the one line
/// `why` before any firmware runs.
fn assert_refused(disk: &Path, name: &str, qemu_args: &[&str], why: &str) {
    let o = RunOptions {
        profile: Profile::Windows,
        vm: Some(name.into()),
        system_disk: Some(disk.to_path_buf()),
        qemu_args: qemu_args.iter().map(|a| a.to_string()).collect(),
        ..RunOptions::headless(Default::default(), REFUSAL_TIMEOUT)
    };
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    let c = outcome.console.replace('\r', "");
    let line = format!("VM '{name}' (device model windows): refused: {why}");
    assert_eq!(
        c.lines().filter(|l| l.contains(&line)).count(),
        1,
        "no one-line refusal `{line}`\n{tail}"
    );
    assert!(!c.contains("UEFI firmware from flash"), "\n{tail}");
    assert!(
        !c.contains(": start #"),
        "a refused start was counted\n{tail}"
    );
    assert!(
        matches!(outcome.ending, Ending::Exited(Some(s)) if s != 0),
        "the hypervisor did not stop with an error: {:?}\n{tail}",
        outcome.ending
    );
}

/// A `windows` VM with two read-only disks (install media: one is USB mass
/// storage, tests/windows_install.rs; there is one storage port) is refused at
/// start, not started without the second; on a CPU without LSE atomics (QEMU's Cortex-A57,
/// Armv8.0) every `windows` VM is refused.
#[test]
fn windows_vms_the_hypervisor_cannot_serve_are_refused_with_one_line() {
    let _g = boot_lock();
    let layout = Layout::detect();
    let disk = layout.out.join("test-windows-refused.img");
    windows_vm_disk(&disk, "win-media", 2);
    assert_refused(
        &disk,
        "win-media",
        &[],
        "its disk 2 is a second read-only disk (install media)",
    );
    windows_vm_disk(&disk, "win-a57", 0);
    assert_refused(
        &disk,
        "win-a57",
        &["-cpu", "cortex-a57"],
        "the CPU has no LSE atomics",
    );
    let _ = std::fs::remove_file(&disk);
}

/// The same Windows-shaped VM with its disk as virtio-blk over virtio-PCI
/// (`--disk-bus virtio-pci`) instead of NVMe: the firmware boots the signed
/// chain from the ESP on the virtio-PCI function at 00:02.0 (EDK2's
/// Virtio10Dxe and VirtioBlkDxe), and Linux on ACPI finds `/dev/vda` behind
/// that function with its queue on an MSI of the v2m frame, and no NVMe.
#[test]
fn windows_shaped_vm_boots_from_its_disk_as_virtio_blk_over_virtio_pci() {
    let _g = boot_lock();
    let disk = Layout::detect().out.join("test-windows-virtio-pci.img");
    let o = RunOptions {
        profile: Profile::Windows,
        disk_bus: xtask::run::DiskBus::VirtioPci,
        system_disk: Some(disk.clone()),
        fresh: true,
        guest_cmd: Some(
            r#"[ -e /proc/device-tree ] && echo devicetree=yes || echo devicetree=no
echo "blocks=$(ls /sys/block | tr '\n' ' ')"
echo "vda=$(readlink /sys/block/vda)"
echo "class=$(cat /sys/bus/pci/devices/0000:00:02.0/vendor):$(cat /sys/bus/pci/devices/0000:00:02.0/device)"
grep virtio /proc/interrupts | sed 's/^/irq: /'
"#
            .into(),
        ),
        ..RunOptions::headless(Default::default(), CHAIN_TIMEOUT)
    };
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    let c = outcome.console.replace('\r', "");
    assert!(
        c.contains("as virtio-blk over virtio-PCI (PCIe 00:02.0)"),
        "the hypervisor did not put disk 0 behind virtio-PCI\n{tail}"
    );
    let from_virtio_pci =
        Regex::new(r#"BdsDxe: (loading|starting) Boot[0-9A-F]{4} "[^"\r\n]*" from PciRoot\(0x0\)/Pci\(0x2,0x0\)"#)
            .unwrap();
    assert!(
        from_virtio_pci.is_match(&c),
        "the firmware did not boot from the virtio-PCI disk\n{tail}"
    );
    assert!(c.contains(GRUB_WELCOME), "shim did not start GRUB\n{tail}");
    assert!(c.contains(SECURE_BOOT_ENABLED), "\n{tail}");
    assert_eq!(parse_console(&c).cmd_exit, Some(0), "\n{tail}");
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    assert_eq!(console_value(&c, "devicetree"), Some("no"), "\n{tail}");
    assert_eq!(
        console_value(&c, "class"),
        Some("0x1af4:0x1042"),
        "\n{tail}"
    );
    let blocks = console_value(&c, "blocks").unwrap_or_default();
    assert!(
        !blocks.split_whitespace().any(|b| b.starts_with("nvme")),
        "an NVMe disk besides virtio-blk: {blocks}\n{tail}"
    );
    let vda = console_value(&c, "vda").unwrap_or_default();
    assert!(vda.contains("/0000:00:02.0/"), "vda: {vda}\n{tail}");
    let irqs: Vec<&str> = c.lines().filter(|l| l.starts_with("irq: ")).collect();
    assert!(
        irqs.iter()
            .any(|l| l.contains("MSI") && l.trim_end().ends_with("-req.0")),
        "no virtio-blk request queue MSI: {irqs:?}\n{tail}"
    );
    assert!(!c.contains("data abort injected"), "\n{tail}");
    let _ = std::fs::remove_file(&disk);
}

/// A 1-vCPU Windows-shaped VM: the firmware's NVMe driver creates two I/O queues
/// whatever the vCPU count, so the controller offers at least two (with one, the
/// firmware's second Create I/O Queue was refused and it found no boot disk);
/// Linux then uses one I/O queue, as it has one CPU.
#[test]
fn a_one_vcpu_windows_shaped_vm_boots_from_nvme() {
    let _g = boot_lock();
    let disk = Layout::detect().out.join("test-windows-one-vcpu.img");
    let o = RunOptions {
        profile: Profile::Windows,
        system_disk: Some(disk.clone()),
        fresh: true,
        smp: Some(1),
        guest_cmd: Some(GUEST_CMD.into()),
        ..RunOptions::headless(Default::default(), CHAIN_TIMEOUT)
    };
    check_chain_boot(&o, 1);
    let _ = std::fs::remove_file(&disk);
}
