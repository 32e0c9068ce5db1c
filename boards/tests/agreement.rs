//! Issue 14 item 5, every profile: the device tree generated from a VM's device
//! list (`boards::devices::device_list` → `guest_dt::device_tree`) and the MMIO
//! bus el2 builds from it (`boards::devices::bus_entries`, which `Vm::new`,
//! `firmware::attach` and `Vm::attach_pcie` insert models at) describe exactly
//! the list's entries: every window, SPI and trigger, and nothing else besides
//! the GIC, memory, CPUs and timer. (The ACPI tables of `uefi-acpi` are checked
//! against the same list in `acpi-gen/tests/tables.rs`.)

use boards::devices::{
    bus_entries, device_list, simple_framebuffer, virtio_slots, BusModel, DeviceKind, DeviceSpec,
    Irq, PcieWindow, Profile, Trigger, VmDevices,
};
use boards::guest;
use boards::guest_dt::{device_tree, Machine};
use fdt::node::FdtNode;
use fdt::Fdt;

const RAM_SIZE: u64 = 512 << 20;

/// `(base, size)`.
type Window = (u64, u64);

/// Big-endian cells of a property.
fn cells(b: &[u8]) -> Vec<u32> {
    b.chunks_exact(4)
        .map(|c| u32::from_be_bytes(c.try_into().unwrap()))
        .collect()
}

fn u64_at(c: &[u32], i: usize) -> u64 {
    (u64::from(c[i]) << 32) | u64::from(c[i + 1])
}

/// `reg` of a node under a parent with two address and two size cells.
fn reg2(n: &FdtNode) -> Vec<(u64, u64)> {
    n.property("reg").map_or(Vec::new(), |p| {
        cells(p.value)
            .chunks_exact(4)
            .map(|c| (u64_at(c, 0), u64_at(c, 2)))
            .collect()
    })
}

fn spec_of(irq: Irq) -> Vec<u32> {
    let flags = match irq.trigger {
        Trigger::Level => 4,
        Trigger::Edge => 1,
    };
    vec![0, irq.intid - guest::SPI_BASE, flags]
}

/// The windows and interrupts the tree describes, found by walking it (not by
/// looking the list's entries up): `(base, size)` with the interrupt specifier
/// of the node that gives it (empty if none).
fn described(fdt: &Fdt) -> (Vec<Window>, Vec<(Window, Vec<u32>)>) {
    let mut windows = Vec::new();
    let mut irqs = Vec::new();
    let root = fdt.find_node("/").unwrap();
    let mut nodes: Vec<FdtNode> = Vec::new();
    for n in root.children() {
        match n.name.split('@').next().unwrap() {
            // The machine, not devices of the list.
            "memory" | "cpus" | "timer" | "psci" | "chosen" | "apb-pclk" => {}
            // The GIC's own frames are the vGIC's; its children (the v2m frame) are
            // devices.
            "intc" => nodes.extend(n.children()),
            "reserved-memory" => nodes.extend(n.children()),
            // The SPI bus's one child is a chip select, not a window.
            "spi" => {
                let tpm = n.children().next().unwrap();
                assert_eq!(cells(tpm.property("reg").unwrap().value), [0]);
            }
            "platform-bus" => {
                let ranges = cells(n.property("ranges").unwrap().value);
                for c in n.children() {
                    let reg = cells(c.property("reg").unwrap().value);
                    let base = u64::from(reg[0]) - u64::from(ranges[0]) + u64_at(&ranges, 1);
                    windows.push((base, u64::from(reg[1])));
                }
            }
            "pcie" => {
                // ECAM in `reg`; the windows in `ranges` (3 PCI, 2 CPU, 2 size cells).
                windows.extend(reg2(&n));
                let r = cells(n.property("ranges").unwrap().value);
                for c in r.chunks_exact(7) {
                    windows.push((u64_at(c, 3), u64_at(c, 5)));
                }
                // interrupt-map: 4 child cells, phandle, 2 parent cells, 3 specifier.
                let map = cells(n.property("interrupt-map").unwrap().value);
                let mut spis: Vec<Vec<u32>> =
                    map.chunks_exact(10).map(|e| e[7..].to_vec()).collect();
                spis.sort();
                spis.dedup();
                irqs.push(((reg2(&n)[0]), spis.concat()));
            }
            "framebuffer" => {
                // The pixels: a prefix of the reserved region, checked below.
                let (base, size) = reg2(&n)[0];
                irqs.push(((base, size), vec![u32::MAX]));
            }
            _ => nodes.push(n),
        }
    }
    for n in nodes {
        for w in reg2(&n) {
            windows.push(w);
            if let Some(p) = n.property("interrupts") {
                irqs.push((w, cells(p.value)));
            }
        }
    }
    windows.sort_unstable();
    (windows, irqs)
}

fn machine(vcpus: usize) -> Machine<'static> {
    Machine {
        vcpus,
        ram_base: guest::RAM_BASE,
        ram_size: RAM_SIZE,
        bootargs: "console=ttyAMA0",
        initrd: None,
        rng_seed: None,
    }
}

/// VMs of both profiles: disks, entropy (TPM and virtio-rng), PCIe, framebuffer.
fn vms() -> Vec<(Profile, usize, bool, bool, bool)> {
    let mut v = Vec::new();
    for (disks, entropy) in [(0, false), (1, true), (3, true), (40, true)] {
        v.push((Profile::UefiAcpi, disks, entropy, false, false));
        for (pcie, fb) in [(false, false), (true, false), (false, true), (true, true)] {
            v.push((Profile::LinuxDt, disks, entropy, pcie, fb));
        }
    }
    v
}

fn list_of(profile: Profile, disks: usize, entropy: bool, pcie: bool, fb: bool) -> Vec<DeviceSpec> {
    let slots = virtio_slots(disks, entropy);
    let framebuffer = fb
        .then(|| simple_framebuffer("rayos.fb=simple", guest::RAM_BASE, RAM_SIZE))
        .flatten();
    assert_eq!(framebuffer.is_some(), fb);
    device_list(
        profile,
        &VmDevices {
            virtio_slots: &slots,
            tpm_spi_gpio: profile == Profile::LinuxDt && entropy,
            tpm_crb: profile == Profile::UefiAcpi && entropy,
            vars_bank_size: guest::FLASH_BANK_SIZE,
            pcie,
            // Both MSI controllers get described: the ITS for odd disk counts.
            msi: if disks % 2 == 1 {
                boards::devices::Msi::Its
            } else {
                boards::devices::Msi::V2m
            },
            framebuffer,
        },
    )
}

#[test]
fn the_device_tree_of_every_profile_describes_exactly_its_device_list() {
    for (profile, disks, entropy, pcie, fb) in vms() {
        let list = list_of(profile, disks, entropy, pcie, fb);
        let what = format!("{profile:?} disks={disks} entropy={entropy} pcie={pcie} fb={fb}");
        let dtb = device_tree(&machine(2), &list).unwrap_or_else(|e| panic!("{what}: {e}"));
        let fdt = Fdt::new(&dtb).unwrap();
        let (windows, irqs) = described(&fdt);
        let mut listed: Vec<(u64, u64)> = list.iter().map(|d| (d.base, d.size)).collect();
        listed.sort_unstable();
        assert_eq!(windows, listed, "{what}: DT windows vs the list");
        // Every interrupt the tree gives is its entry's, and every entry's is given.
        for ((base, size), spec) in &irqs {
            if spec == &[u32::MAX] {
                let d = list
                    .iter()
                    .find(|d| d.base == *base)
                    .unwrap_or_else(|| panic!("{what}: framebuffer at {base:#x} not listed"));
                let DeviceKind::SimpleFramebuffer { stride, height, .. } = d.kind else {
                    panic!("{what}: {d:?} is not the framebuffer");
                };
                assert_eq!(*size, u64::from(stride) * u64::from(height), "{what}");
                continue;
            }
            let d = list
                .iter()
                .find(|d| (d.base, d.size) == (*base, *size))
                .unwrap_or_else(|| panic!("{what}: {base:#x} has interrupts but no entry"));
            let irq = d
                .irq
                .unwrap_or_else(|| panic!("{what}: {d:?} has no interrupt"));
            let want = match d.kind {
                DeviceKind::Pcie {
                    window: PcieWindow::Ecam,
                } => (0..4)
                    .flat_map(|i| {
                        spec_of(Irq {
                            intid: irq.intid + i,
                            ..irq
                        })
                    })
                    .collect(),
                _ => spec_of(irq),
            };
            assert_eq!(spec, &want, "{what}: {d:?} interrupts");
        }
        for d in &list {
            let has_node_irq = irqs.iter().any(|(w, _)| *w == (d.base, d.size));
            // The v2m frame's SPIs are in its MSI_TYPER register, not the tree.
            let in_tree = d.irq.is_some() && !matches!(d.kind, DeviceKind::Gicv2m { .. });
            assert_eq!(has_node_irq, in_tree, "{what}: {d:?} interrupt in the DT");
        }
        // The console is the list's PL011.
        let chosen = fdt.find_node("/chosen").unwrap();
        let pl011 = list.iter().find(|d| d.kind == DeviceKind::Pl011).unwrap();
        assert_eq!(
            chosen.property("stdout-path").unwrap().as_str(),
            Some(format!("/pl011@{:x}", pl011.base).as_str())
        );
    }
}

#[test]
fn the_bus_of_every_profile_is_the_device_list_plus_empty_virtio_slots() {
    for (profile, disks, entropy, pcie, fb) in vms() {
        let list = list_of(profile, disks, entropy, pcie, fb);
        let what = format!("{profile:?} disks={disks} entropy={entropy} pcie={pcie} fb={fb}");
        let bus = bus_entries(&list);
        for (i, a) in bus.iter().enumerate() {
            for b in &bus[i + 1..] {
                assert!(a.base + a.size <= b.base, "{what}: {a:?} overlaps {b:?}");
            }
            let gic = [
                (guest::GICD_BASE, guest::GICD_SIZE),
                (guest::GICR_BASE, guest::GICR_REGION_SIZE),
            ];
            for (base, size) in gic {
                assert!(
                    a.base + a.size <= base || base + size <= a.base,
                    "{what}: {a:?}"
                );
            }
        }
        // Every trapped entry on the bus once, at its window, with its interrupt.
        for d in &list {
            let on_bus: Vec<_> = bus
                .iter()
                .filter(|e| e.model == BusModel::Device(d.kind))
                .collect();
            let trapped = !matches!(
                d.kind,
                DeviceKind::SimpleFramebuffer { .. } | DeviceKind::Flash { bank: 0 }
            );
            if trapped {
                assert_eq!(on_bus.len(), 1, "{what}: {d:?}");
                let e = on_bus[0];
                assert_eq!((e.base, e.size, e.irq), (d.base, d.size, d.irq), "{what}");
            } else {
                assert!(
                    on_bus.is_empty(),
                    "{what}: {d:?} is memory, not a bus device"
                );
            }
        }
        // The rest: an empty transport in exactly the free virtio slots.
        let taken: Vec<u64> = list
            .iter()
            .filter_map(|d| match d.kind {
                DeviceKind::VirtioMmio { slot, .. } => Some(slot),
                _ => None,
            })
            .collect();
        let empty: Vec<u64> = bus
            .iter()
            .filter_map(|e| match e.model {
                BusModel::EmptyVirtioSlot { slot } => {
                    assert_eq!(
                        (e.base, e.size),
                        (
                            guest::VIRTIO_MMIO_BASE + slot * guest::VIRTIO_MMIO_STRIDE,
                            guest::VIRTIO_MMIO_STRIDE
                        ),
                        "{what}"
                    );
                    Some(slot)
                }
                BusModel::Device(_) => None,
            })
            .collect();
        let free: Vec<u64> = (0..guest::VIRTIO_MMIO_SLOTS)
            .filter(|s| !taken.contains(s))
            .collect();
        assert_eq!(empty, free, "{what}");
    }
}

/// The tree follows the list, not constants of its own: an entry moved or
/// rewired in the list is moved or rewired in the tree.
#[test]
fn a_changed_entry_changes_the_tree() {
    let mut list = list_of(Profile::LinuxDt, 1, true, true, false);
    for d in &mut list {
        match d.kind {
            DeviceKind::Pl011 => d.base = 0x0905_0000,
            DeviceKind::VirtioMmio { slot: 0, .. } => {
                d.irq = Some(Irq {
                    intid: guest::SPI_BASE + 60,
                    trigger: Trigger::Level,
                })
            }
            DeviceKind::Pcie {
                window: PcieWindow::Ecam,
            } => {
                d.irq = Some(Irq {
                    intid: guest::SPI_BASE + 10,
                    trigger: Trigger::Level,
                })
            }
            _ => {}
        }
    }
    let dtb = device_tree(&machine(1), &list).unwrap();
    let fdt = Fdt::new(&dtb).unwrap();
    let pl011 = fdt.find_node("/pl011@9050000").expect("the PL011 moved");
    assert_eq!(reg2(&pl011), [(0x0905_0000, guest::PL011_SIZE)]);
    assert_eq!(
        fdt.find_node("/chosen")
            .unwrap()
            .property("stdout-path")
            .unwrap()
            .as_str(),
        Some("/pl011@9050000")
    );
    let v = fdt.find_node("/virtio_mmio@a000000").unwrap();
    assert_eq!(cells(v.property("interrupts").unwrap().value), [0, 60, 4]);
    let (_, irqs) = described(&fdt);
    let pcie = irqs
        .iter()
        .find(|(w, _)| w.0 == guest::PCIE_ECAM_BASE)
        .unwrap();
    assert_eq!(&pcie.1[..3], [0, 10, 4]);
}
