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

use integration_tests::procfs::{meminfo_kib, processor_count, section};
use integration_tests::{boot, boot_lock, console_tail};
use xtask::efi::Boot;
use xtask::run::{Ending, Guest, NvmeDisk, RunOptions};
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

/// This file's system disk for the UEFI boots, under the workspace's `target/`.
const EFI_SYSTEM_DISK: &str = "test-disks/boards-efi.img";
/// Budget of a boot through the firmware (AAVMF under TCG, the UEFI Shell's
/// 5-second `startup.nsh` countdown, then Linux).
const EFI_TIMEOUT: Duration = Duration::from_secs(300);

/// The `--boot efi` options for the Linux guest running `cmd`.
fn efi_linux(cmd: &str) -> RunOptions {
    let mut o = RunOptions::headless(Guest::Linux, EFI_TIMEOUT);
    o.boot = Boot::Efi;
    o.smp = Some(2);
    o.system_disk = Some(Layout::detect().out.join(EFI_SYSTEM_DISK));
    o.guest_cmd = Some(cmd.into());
    o
}

/// The hex address after `prefix` on the console, up to the next `,`, `;` or space.
fn address_after(console: &str, prefix: &str) -> Option<u64> {
    let at = console.find(prefix)? + prefix.len();
    let hex = console[at..]
        .split([',', ';', ' ', '\r', '\n'])
        .next()?
        .strip_prefix("0x")?;
    u64::from_str_radix(hex, 16).ok()
}

/// `cargo xtask run --boot efi`: QEMU boots Debian's AAVMF at EL2, its UEFI Shell
/// runs `startup.nsh` from the ESP, which starts `rayos-el2.efi`; the application
/// takes the device tree and memory map from the firmware, exits boot services
/// and becomes the hypervisor, which boots the Linux guest from the system disk
/// with the checks of the `-kernel` path (tests/tests/linux.rs): both vCPUs, the
/// memory it was given, the guest command's status, the VM's power-off. The
/// firmware chose where the image runs: not QEMU's `-kernel` address.
#[test]
fn uefi_application_at_el2_boots_the_linux_guest() {
    let _boot = boot_lock();
    let o = efi_linux(
        "s() { echo \"== $1 begin\"; cat /proc/$1; echo \"== $1 end\"; }\ns cpuinfo\ns meminfo\n",
    );
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    let c = &outcome.console;
    assert_eq!(outcome.verdict(), Ok(()), "\n{tail}");
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");

    let loaded = address_after(c, "RayOS EL2 UEFI application at EL2: loaded at ")
        .unwrap_or_else(|| panic!("the UEFI application did not start\n{tail}"));
    let runs = address_after(c, "the hypervisor runs at ")
        .unwrap_or_else(|| panic!("no hand-over line\n{tail}"));
    let image = address_after(c, "starting at EL2, image at ")
        .unwrap_or_else(|| panic!("the hypervisor did not start\n{tail}"));
    println!("UEFI loaded the application at {loaded:#x}; the hypervisor runs at {image:#x}");
    assert_eq!(image, runs, "{tail}");
    assert_ne!(image, DEFAULT_IMAGE_ADDR, "{tail}");
    assert!(
        c.contains("started by UEFI: ") && c.contains("stay out of the memory pool"),
        "the firmware's kept memory was not taken into account\n{tail}"
    );
    assert!(
        c.contains("platform: linux,dummy-virt (qemu-virt), 2 CPU(s)"),
        "{tail}"
    );

    let cpuinfo = section(c, "cpuinfo").unwrap_or_else(|e| panic!("{e}\n{tail}"));
    let meminfo = section(c, "meminfo").unwrap_or_else(|e| panic!("{e}\n{tail}"));
    assert_eq!(processor_count(&cpuinfo), 2, "\n{tail}");
    let mib =
        meminfo_kib(&meminfo, "MemTotal").unwrap_or_else(|| panic!("no MemTotal\n{tail}")) / 1024;
    assert!((400..=512).contains(&mib), "MemTotal {mib} MiB\n{tail}");
    assert!(
        c.contains("linux: PSCI SYSTEM_OFF from vCPU ")
            && c.contains("VM 'linux' powered off (exits: "),
        "the hypervisor did not log the VM's power-off\n{tail}"
    );
}

/// With QEMU's ACPI tables on (its default), AAVMF hands over ACPI and no device
/// tree — as Ampere's firmware does. The application discovers the platform from
/// the MADT, GTDT, SPCR and FADT and the memory map, writes it as a device tree
/// for the hypervisor, and the self-test guest (its bundle on the ESP: ACPI
/// describes no virtio-mmio system disk) passes on two vCPUs.
#[test]
fn uefi_application_on_acpi_only_firmware_boots_from_the_tables() {
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::Selftest, EFI_TIMEOUT);
    o.boot = Boot::Efi;
    o.smp = Some(2);
    // QEMU merges -machine options: this turns the machine's ACPI back on.
    o.qemu_args = vec!["-machine".into(), "acpi=on".into()];
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    let c = &outcome.console;
    assert!(
        c.contains("the firmware hands over ACPI tables and no device tree; the platform they describe is written as a device tree at "),
        "the application did not take the ACPI path\n{tail}"
    );
    assert!(
        c.contains("platform: BOCHS BXPC (qemu-virt), 2 CPU(s) (boot CPU 0x0)"),
        "the platform was not discovered from QEMU's ACPI tables\n{tail}"
    );
    assert!(
        !c.contains("[el2 WARN ] board qemu-virt:"),
        "a figure disagrees\n{tail}"
    );
    let report = outcome.selftest();
    assert!(report.failed.is_empty(), "{:?}\n{tail}", report.failed);
    assert_eq!(outcome.verdict(), Ok(()), "\n{tail}");
}

/// `cargo xtask run --accel kvm` on this x86-64 test host (which has a /dev/kvm
/// of its own) refuses before building anything, in one line that names what is
/// missing (an Arm64 host) and what to use instead.
#[cfg(target_arch = "x86_64")]
#[test]
fn accel_kvm_refuses_an_x86_host_in_one_clear_line() {
    let o = xtask::run::parse_args(&["--accel".into(), "kvm".into(), "--headless".into()])
        .expect("the options parse");
    let err = xtask::run::run_captured(&Layout::detect(), &o)
        .map(|_| ())
        .expect_err("an x86 host cannot run --accel kvm");
    let line = err.to_string();
    println!("{line}");
    assert!(!line.contains('\n'), "{line}");
    assert!(
        line.contains("needs a host with KVM nested virtualization (FEAT_NV2); this host lacks: an Arm64 host (this one is x86_64"),
        "{line}"
    );
    assert!(line.ends_with("use --accel tcg"), "{line}");
}

/// A `--boot efi` run of a guest that needs a boot bundle: xtask puts the bundle
/// on the ESP, the application reads it through the firmware's file system
/// before exiting boot services and hands it over as a `-kernel` boot's initrd;
/// the self-test guest then passes on two vCPUs.
#[test]
fn uefi_application_boots_a_bundle_from_the_esp() {
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::Selftest, EFI_TIMEOUT);
    o.boot = Boot::Efi;
    o.smp = Some(2);
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert!(
        outcome
            .console
            .contains("RayOS EL2 UEFI application: boot bundle \\EFI\\rayos\\bundle.cpio ("),
        "the application did not read the bundle\n{tail}"
    );
    let report = outcome.selftest();
    assert!(report.failed.is_empty(), "{:?}\n{tail}", report.failed);
    assert_eq!(outcome.verdict(), Ok(()), "\n{tail}");
}

/// Guest command of the bus/device-tree test: every node under the root, the
/// GIC and the platform bus with its `reg` (and the PCIe node's `ranges`) as hex.
const DT_DUMP_CMD: &str = r#"for n in /proc/device-tree/*@* /proc/device-tree/*@*/*@*; do
 [ -f "$n/reg" ] || continue
 echo "dt ${n#/proc/device-tree/} reg=$(od -An -tx1 -v "$n/reg" | tr -d ' \n') ranges=$( [ -f "$n/ranges" ] && od -An -tx1 -v "$n/ranges" | tr -d ' \n')"
done
"#;

/// Big-endian 32-bit cells of a hex string.
fn hex_cells(hex: &str) -> Vec<u64> {
    hex.as_bytes()
        .chunks_exact(8)
        .map(|c| u64::from_str_radix(std::str::from_utf8(c).unwrap(), 16).unwrap())
        .collect()
}

/// Issue 14 item 5, on the machine: the MMIO bus the hypervisor built for a
/// `linux-dt` VM with every optional device (TPM, PCIe with NVMe, the simple
/// framebuffer) — its own log line of what is on the bus — and the device tree
/// the Linux guest booted with (read back from `/proc/device-tree`) describe the
/// same windows: every trapped device is a node with that `reg` (the PCIe
/// windows in the root complex's `ranges`, the platform bus's child translated),
/// every node with a window outside RAM is on the bus, the GIC node gives the
/// distributor and redistributor frames the vGIC serves.
#[test]
fn the_bus_the_hypervisor_built_is_the_device_tree_the_guest_booted_with() {
    let _boot = boot_lock();
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.smp = Some(2);
    o.nvme = Some(NvmeDisk::Ram(4 << 20));
    o.append = Some(format!("{} rayos.fb=simple", xtask::run::LINUX_CMDLINE));
    o.guest_cmd = Some(DT_DUMP_CMD.into());
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.verdict(), Ok(()), "\n{tail}");
    let c = &outcome.console;
    // `name@base+size` for each bus window, then how many virtio slots are empty.
    let line = c
        .lines()
        .find_map(|l| {
            l.split_once("VM 'linux': MMIO bus: ")
                .map(|(_, r)| r.trim_end())
        })
        .unwrap_or_else(|| panic!("the hypervisor did not log its bus\n{tail}"));
    let mut bus: Vec<(String, u64, u64)> = Vec::new();
    for w in line.split(' ').take_while(|w| w.contains('@')) {
        let (name, at) = w.split_once('@').unwrap();
        let (base, size) = at.split_once('+').unwrap();
        let hex = |s: &str| u64::from_str_radix(s, 16).unwrap();
        bus.push((name.into(), hex(base), hex(size)));
    }
    let names: Vec<&str> = bus.iter().map(|b| b.0.as_str()).collect();
    for want in [
        "pl011",
        "pl061-tpm",
        "virtio-gpu",
        "virtio-console",
        "gicv2m",
        "pcie",
    ] {
        assert!(names.contains(&want), "no {want} on the bus: {line}");
    }
    // The device tree as the guest saw it.
    let mut dt: Vec<(String, u64, u64)> = Vec::new();
    let mut pcie_ranges = Vec::new();
    let mut platform_ranges = Vec::new();
    for l in c.lines().filter_map(|l| l.trim_end().strip_prefix("dt ")) {
        let (path, rest) = l.split_once(" reg=").unwrap();
        let (reg, ranges) = rest.split_once(" ranges=").unwrap();
        let reg = hex_cells(reg);
        if path.starts_with("platform-bus@") {
            platform_ranges = hex_cells(ranges);
        }
        if path.starts_with("pcie@") {
            pcie_ranges = hex_cells(ranges);
        }
        let (parent, node) = path.rsplit_once('/').unwrap_or(("", path));
        match parent.split('@').next().unwrap() {
            // One address and one size cell, translated by the bus's `ranges`.
            "platform-bus" => dt.push((node.into(), reg[0], reg[1])),
            // The SPI TPM's chip select; reserved RAM.
            "spi" | "reserved-memory" => {}
            _ => {
                for p in reg.chunks_exact(4) {
                    dt.push((node.into(), (p[0] << 32) | p[1], (p[2] << 32) | p[3]));
                }
            }
        }
    }
    assert!(!dt.is_empty(), "the guest printed no device tree\n{tail}");
    println!("bus: {line}\nthe guest's device tree: {dt:x?}");
    for d in dt.iter_mut().filter(|d| d.0.starts_with("tpm")) {
        d.1 = d.1 - platform_ranges[0] + ((platform_ranges[1] << 32) | platform_ranges[2]);
    }
    for r in pcie_ranges.chunks_exact(7) {
        dt.push((
            "pcie-range".into(),
            (r[3] << 32) | r[4],
            (r[5] << 32) | r[6],
        ));
    }
    let ram = boards::guest::RAM_BASE;
    let on_bus = |base: u64, size: u64| bus.iter().any(|b| (b.1, b.2) == (base, size));
    for (node, base, size) in &dt {
        if *base >= ram || node.starts_with("memory") {
            continue;
        }
        assert!(
            on_bus(*base, *size),
            "DT node {node} [{base:#x}, +{size:#x}) is not on the bus: {line}\n{tail}"
        );
    }
    for (name, base, size) in &bus {
        assert!(
            dt.iter().any(|d| (d.1, d.2) == (*base, *size)),
            "bus window {name}@{base:#x}+{size:#x} is not in the guest's device tree\n{tail}"
        );
    }
    // The framebuffer is RAM, not MMIO: in the tree, not on the bus.
    assert!(
        dt.iter()
            .any(|d| d.0.starts_with("framebuffer@") && d.1 >= ram),
        "no simple framebuffer in the device tree\n{tail}"
    );
}
