//! A device tree for the hypervisor itself, written from a [`Platform`]
//! discovered elsewhere (ACPI): the UEFI application on firmware that hands over
//! ACPI tables and no device tree (Ampere's) discovers the platform with
//! [`crate::acpi::discover_acpi`] and hands el2 this tree, so everything after
//! the entry runs the one device-tree path. [`crate::discover`] reads it back to
//! the same platform (tested below on QEMU's own ACPI tables).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use vm_fdt::{Error, FdtWriter};

use crate::board::UartKind;
use crate::discover::{Platform, PsciConduit, Range};

/// Phandle of the GIC node.
const GIC_PHANDLE: u32 = 1;
/// GIC interrupt specifier types (the `arm,gic-v3` binding): SPI and PPI.
const GIC_SPI: u32 = 0;
const GIC_PPI: u32 = 1;
/// First INTID of SPIs and of PPIs.
const SPI_BASE: u32 = 32;
const PPI_BASE: u32 = 16;
/// Interrupt specifier flags: level-sensitive, active high.
const IRQ_LEVEL_HIGH: u32 = 4;

/// The three-cell GIC specifier of `intid` (a PPI or SPI).
fn irq(intid: u32) -> [u32; 3] {
    if intid >= SPI_BASE {
        [GIC_SPI, intid - SPI_BASE, IRQ_LEVEL_HIGH]
    } else {
        [GIC_PPI, intid.saturating_sub(PPI_BASE), IRQ_LEVEL_HIGH]
    }
}

fn reg(ranges: &[Range]) -> Vec<u64> {
    ranges.iter().flat_map(|r| [r.base, r.size]).collect()
}

/// The device tree of `p`: memory, CPUs by MPIDR, PSCI, the GIC (distributor,
/// redistributor regions, ITS frames, maintenance interrupt), the timer, the
/// console PL011 as `/chosen/stdout-path`, the reserved ranges, and the board's
/// `compatible` when it was recognised.
pub fn platform_dt(p: &Platform) -> Result<Vec<u8>, Error> {
    let mut w = FdtWriter::new()?;
    let root = w.begin_node("")?;
    let compatible: Vec<String> = match p.board {
        Some(b) => b.compatible.iter().map(|s| String::from(*s)).collect(),
        None => alloc::vec![String::from("rayos,acpi-platform")],
    };
    w.property_string_list("compatible", compatible)?;
    w.property_string("model", &p.model)?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("interrupt-parent", GIC_PHANDLE)?;

    for m in &p.memory {
        let n = w.begin_node(&format!("memory@{:x}", m.base))?;
        w.property_string("device_type", "memory")?;
        w.property_array_u64("reg", &[m.base, m.size])?;
        w.end_node(n)?;
    }
    if !p.reserved.is_empty() {
        let rm = w.begin_node("reserved-memory")?;
        w.property_u32("#address-cells", 2)?;
        w.property_u32("#size-cells", 2)?;
        w.property_null("ranges")?;
        for r in &p.reserved {
            let n = w.begin_node(&format!("reserved@{:x}", r.base))?;
            w.property_array_u64("reg", &[r.base, r.size])?;
            w.property_null("no-map")?;
            w.end_node(n)?;
        }
        w.end_node(rm)?;
    }

    let cpus = w.begin_node("cpus")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 0)?;
    for (i, mpidr) in p.cpus.iter().enumerate() {
        let n = w.begin_node(&format!("cpu@{i}"))?;
        w.property_string("device_type", "cpu")?;
        w.property_string("compatible", "arm,armv8")?;
        w.property_u64("reg", *mpidr)?;
        if p.psci.is_some() {
            w.property_string("enable-method", "psci")?;
        }
        w.end_node(n)?;
    }
    w.end_node(cpus)?;

    if let Some(conduit) = p.psci {
        let n = w.begin_node("psci")?;
        w.property_string_list(
            "compatible",
            alloc::vec![String::from("arm,psci-1.0"), String::from("arm,psci-0.2")],
        )?;
        w.property_string(
            "method",
            match conduit {
                PsciConduit::Smc => "smc",
                PsciConduit::Hvc => "hvc",
            },
        )?;
        w.end_node(n)?;
    }

    let gic = w.begin_node(&format!("interrupt-controller@{:x}", p.gic.gicd.base))?;
    w.property_string("compatible", "arm,gic-v3")?;
    w.property_null("interrupt-controller")?;
    w.property_u32("#interrupt-cells", 3)?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_null("ranges")?;
    w.property_u32("phandle", GIC_PHANDLE)?;
    let mut gic_regs = alloc::vec![p.gic.gicd];
    gic_regs.extend(p.gic.gicr.iter().copied());
    w.property_array_u64("reg", &reg(&gic_regs))?;
    w.property_u32("#redistributor-regions", p.gic.gicr.len() as u32)?;
    if let Some(stride) = p.gic.redistributor_stride {
        w.property_u64("redistributor-stride", stride)?;
    }
    if let Some(m) = p.gic.maintenance_intid {
        w.property_array_u32("interrupts", &irq(m))?;
    }
    for its in &p.gic.its {
        let n = w.begin_node(&format!("msi-controller@{:x}", its.base))?;
        w.property_string("compatible", "arm,gic-v3-its")?;
        w.property_null("msi-controller")?;
        w.property_array_u64("reg", &[its.base, its.size])?;
        w.end_node(n)?;
    }
    w.end_node(gic)?;

    let t = w.begin_node("timer")?;
    w.property_string("compatible", "arm,armv8-timer")?;
    let mut cells = Vec::new();
    for intid in [
        p.timer.phys_secure,
        p.timer.phys_nonsecure,
        p.timer.virt,
        p.timer.hyp,
    ] {
        cells.extend(irq(intid));
    }
    w.property_array_u32("interrupts", &cells)?;
    w.end_node(t)?;

    let mut stdout = None;
    if let Some(u) = p.uart.filter(|u| u.kind == UartKind::Pl011) {
        let name = format!("pl011@{:x}", u.regs.base);
        let n = w.begin_node(&name)?;
        w.property_string_list(
            "compatible",
            alloc::vec![String::from("arm,pl011"), String::from("arm,primecell")],
        )?;
        w.property_array_u64("reg", &[u.regs.base, u.regs.size])?;
        if let Some(i) = u.intid {
            w.property_array_u32("interrupts", &irq(i))?;
        }
        w.end_node(n)?;
        stdout = Some(format!("/{name}"));
    }

    let chosen = w.begin_node("chosen")?;
    if let Some(path) = stdout {
        w.property_string("stdout-path", &path)?;
    }
    if !p.seed.0.is_empty() {
        w.property("rng-seed", &p.seed.0)?;
    }
    w.end_node(chosen)?;

    w.end_node(root)?;
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acpi::discover_acpi;
    use crate::discover::discover;

    const QEMU_ACPI: [&[u8]; 5] = [
        include_bytes!("../testdata/qemu-virt-acpi/APIC"),
        include_bytes!("../testdata/qemu-virt-acpi/FACP"),
        include_bytes!("../testdata/qemu-virt-acpi/GTDT"),
        include_bytes!("../testdata/qemu-virt-acpi/MCFG"),
        include_bytes!("../testdata/qemu-virt-acpi/SPCR"),
    ];

    #[test]
    fn qemu_acpi_tables_become_a_tree_that_discovers_the_same_platform() {
        let ram = [Range {
            base: 0x4000_0000,
            size: 1 << 30,
        }];
        let acpi = discover_acpi(&QEMU_ACPI, &ram).unwrap();
        let dtb = platform_dt(&acpi).unwrap();
        let dt = discover(&dtb).unwrap();
        assert_eq!(dt.board, acpi.board);
        assert!(dt.board.is_some(), "the board's compatible identifies it");
        assert_eq!(dt.model, acpi.model);
        assert_eq!(dt.memory, acpi.memory);
        assert_eq!(dt.reserved, acpi.reserved);
        assert_eq!(dt.uart, acpi.uart);
        assert_eq!(dt.gic, acpi.gic);
        assert_eq!(dt.timer, acpi.timer);
        assert_eq!(dt.cpus, acpi.cpus);
        assert_eq!(dt.psci, acpi.psci);
        assert!(dt.fallbacks.is_empty(), "{:?}", dt.fallbacks);
    }

    #[test]
    fn ppis_and_spis_get_their_binding_cells() {
        assert_eq!(irq(25), [GIC_PPI, 9, IRQ_LEVEL_HIGH]);
        assert_eq!(irq(33), [GIC_SPI, 1, IRQ_LEVEL_HIGH]);
    }
}
