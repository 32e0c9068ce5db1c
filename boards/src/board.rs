//! The boards RayOS EL2 runs on, one `const` description each.
//!
//! A description is what the hypervisor knows about a board without asking its
//! firmware: the memory map, console UART, GIC, timer interrupts, PSCI conduit,
//! reserved regions and quirks. Discovery ([`crate::discover`] from a device tree,
//! [`crate::acpi`] from ACPI tables) is authoritative; the description fills in what
//! the firmware leaves out and is cross-checked against what it does say
//! ([`crate::crosscheck`]). The source of every figure is written beside it.

use crate::discover::{PsciConduit, Range, TimerIrqs};

/// How the hypervisor ends the machine's life on this board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerOff {
    /// PSCI SYSTEM_OFF through the platform firmware.
    Psci,
    /// Arm semihosting SYS_EXIT_EXTENDED, so an emulator reports the exit status
    /// (QEMU with `-semihosting`); PSCI SYSTEM_OFF is the fallback.
    SemihostingThenPsci,
}

/// What the firmware hands the hypervisor to describe the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Firmware {
    /// A flattened device tree (address in x0).
    DeviceTree,
    /// UEFI with ACPI tables (MADT, GTDT, SPCR, MCFG, FADT); no device tree.
    Acpi,
}

/// The console UART's programming model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UartKind {
    /// Arm PrimeCell PL011 (or an SBSA generic UART, its subset).
    Pl011,
    /// Qualcomm GENI serial engine configured as a UART (`qcom,geni-debug-uart`).
    QcomGeni,
}

/// The console UART.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Uart {
    pub kind: UartKind,
    pub regs: Range,
    /// Its interrupt as a GIC INTID, when known.
    pub intid: Option<u32>,
}

/// The GICv3 as a board wires it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GicLayout {
    pub gicd: Range,
    /// Redistributor regions.
    pub gicr: &'static [Range],
    /// Bytes from one CPU's redistributor to the next: 128 KiB (RD_base + SGI_base)
    /// on GICv3, 256 KiB where the frames of GICv4 virtual LPIs follow.
    pub gicr_stride: u64,
    /// ITS register frames.
    pub its: &'static [Range],
    /// INTID of the virtual CPU interface's maintenance interrupt.
    pub maintenance_intid: u32,
}

/// A PCIe ECAM window (PCI Firmware spec's MCFG allocation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ecam {
    pub base: u64,
    pub segment: u16,
    pub bus_start: u8,
    pub bus_end: u8,
}

/// What is unusual about a board, each with what the hypervisor does about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quirk {
    /// An emulator: exits report a status through semihosting.
    Emulator,
    /// The firmware's device tree leaves `/memory`'s size for the boot loader to
    /// fill; without it the description's DRAM window is used.
    MemorySizeFromBootLoader,
    /// EL2 is held by the vendor's hypervisor (Qualcomm Gunyah) until a Secure
    /// Launch hand-over frees it (the slbounce approach; `scripts/snapdragon-x-elite.sh`).
    El2HeldByVendorHypervisor,
    /// The console is not a PL011 but a Qualcomm GENI UART: el2 drives it with
    /// `geni_uart` (transmit polled, receive by interrupt) as the firmware left
    /// it configured (clocks, pins, baud rate, FIFO packing are not programmed),
    /// host-tested against a simulated engine, not yet on the board.
    ConsoleNotPl011,
    /// The ITS is present but the firmware's device tree marks it disabled.
    ItsDisabledByFirmware,
    /// No device tree: everything comes from ACPI and the UEFI memory map.
    AcpiOnly,
}

/// One supported board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Board {
    /// Short name used by scripts and logs.
    pub name: &'static str,
    /// Any of these root `compatible` strings identifies the board.
    pub compatible: &'static [&'static str],
    /// ACPI OEM ID and OEM table ID (as in the MADT header, trailing blanks
    /// ignored) that identify the board.
    pub acpi_oem: Option<(&'static str, &'static str)>,
    /// How the firmware describes the machine.
    pub firmware: Firmware,
    /// How to power off with an exit status.
    pub power_off: PowerOff,
    /// Whether the generic timer's EL2 physical timer and the GIC maintenance
    /// interrupt are wired as the device tree describes (false would need quirks).
    pub standard_irqs: bool,
    /// DRAM windows: discovered memory must lie inside them; the fallback when
    /// the firmware gives no memory map.
    pub memory: &'static [Range],
    /// Ranges the hypervisor must never hand out or touch.
    pub reserved: &'static [Range],
    pub uart: Uart,
    pub gic: GicLayout,
    pub timer: TimerIrqs,
    pub psci: PsciConduit,
    /// PCIe ECAM windows.
    pub pci_ecam: &'static [Ecam],
    /// Most CPUs the board has.
    pub max_cpus: usize,
    pub quirks: &'static [Quirk],
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

const fn r(base: u64, size: u64) -> Range {
    Range { base, size }
}

/// The architected generic-timer PPIs (Arm SBSA/BSA recommended INTIDs; every
/// board here uses them): secure EL1 physical 29, non-secure EL1 physical 30,
/// EL1 virtual 27, non-secure EL2 physical 26.
const SBSA_TIMER: TimerIrqs = TimerIrqs {
    phys_secure: 29,
    phys_nonsecure: 30,
    virt: 27,
    hyp: 26,
};
/// The GIC maintenance interrupt BSA recommends (PPI 9, INTID 25).
const SBSA_MAINTENANCE_INTID: u32 = 25;
/// A GICv3 distributor frame is 64 KiB (GICv3 architecture spec, GICD map).
const GICD_SIZE: u64 = 64 * KIB;
/// RD_base + SGI_base, 64 KiB each (GICv3 architecture spec, GICR map).
const GICV3_GICR_STRIDE: u64 = 128 * KIB;
/// A PL011's register block (PL011 TRM: 4 KiB).
const PL011_SIZE: u64 = 4 * KIB;

/// QEMU's `virt` machine with `virtualization=on,gic-version=3` (QEMU 7.2).
/// Figures: QEMU `hw/arm/virt.c` (`base_memmap`, `a15irqmap`), checked by the
/// host tests against the DTBs QEMU itself dumps (`boards/testdata`, 2 and 4
/// CPUs) and against its ACPI tables (`boards/testdata/qemu-virt-acpi`).
pub const QEMU_VIRT: Board = Board {
    name: "qemu-virt",
    compatible: &["linux,dummy-virt"],
    // QEMU's ACPI tables carry OEM ID "BOCHS" and OEM table ID "BXPC".
    acpi_oem: Some(("BOCHS", "BXPC")),
    firmware: Firmware::DeviceTree,
    power_off: PowerOff::SemihostingThenPsci,
    standard_irqs: true,
    // VIRT_MEM: RAM from 1 GiB, up to 255 GiB below the high memory map.
    memory: &[r(GIB, 255 * GIB)],
    reserved: &[],
    // VIRT_UART at 0x0900_0000, 4 KiB; a15irqmap[VIRT_UART] = SPI 1 → INTID 33.
    uart: Uart {
        kind: UartKind::Pl011,
        regs: r(0x0900_0000, PL011_SIZE),
        intid: Some(33),
    },
    gic: GicLayout {
        // VIRT_GIC_DIST 0x0800_0000, 64 KiB.
        gicd: r(0x0800_0000, GICD_SIZE),
        // VIRT_GIC_REDIST 0x080a_0000, 0xf6_0000 (123 redistributors).
        gicr: &[r(0x080a_0000, 0xf6_0000)],
        gicr_stride: GICV3_GICR_STRIDE,
        // VIRT_GIC_ITS 0x0808_0000, 128 KiB.
        its: &[r(0x0808_0000, 128 * KIB)],
        // ARCH_GIC_MAINT_IRQ: PPI 9.
        maintenance_intid: SBSA_MAINTENANCE_INTID,
    },
    // ARCH_TIMER_{S_EL1,NS_EL1,VIRT,NS_EL2}_IRQ = PPIs 13, 14, 11, 10.
    timer: SBSA_TIMER,
    // QEMU's built-in PSCI emulation is called with SMC once EL2 exists
    // (`virtualization=on`), HVC would trap to us.
    psci: PsciConduit::Smc,
    // VIRT_HIGH_PCIE_ECAM: 0x40_1000_0000, 256 buses, segment 0.
    pci_ecam: &[Ecam {
        base: 0x40_1000_0000,
        segment: 0,
        bus_start: 0,
        bus_end: 255,
    }],
    // GICv3 on virt: up to 512 CPUs (two redistributor regions); RayOS EL2 uses the first.
    max_cpus: 123,
    quirks: &[Quirk::Emulator],
};

/// Ampere Altra Developer Platform (AADP, "Altra Dev Kit"; Mt. Jade-class Altra
/// SoC, one socket). Its UEFI firmware (TF-A at EL3, EDK2 at EL2) hands over ACPI,
/// no device tree. Figures: the ACPI tables of an AADP (Altra Q32, 32 GiB) as
/// disassembled with `iasl` and published in the public repository
/// niyas-sait/acpi, directory `ampere_ava_2` (`apic.dsl`, `gtdt.dsl`,
/// `spcr.dsl`, `mcfg.dsl`, `srat.dsl`, `facp.dsl`).
pub const AMPERE_ALTRA: Board = Board {
    name: "ampere-altra",
    compatible: &[],
    // Every table header: OEM ID "Ampere", OEM table ID "Altra   ".
    acpi_oem: Some(("Ampere", "Altra")),
    firmware: Firmware::Acpi,
    power_off: PowerOff::Psci,
    standard_irqs: true,
    // SRAT memory affinity: 0x8830_0000 (1 MiB), 0x9000_0000 (1.75 GiB),
    // 0x800_0000_0000 (2 GiB), 0x801_0000_0000 (28 GiB on the 32 GiB kit; the
    // window is the socket's DRAM range, sized here for 512 GiB).
    memory: &[
        r(0x8830_0000, MIB),
        r(0x9000_0000, 0x7000_0000),
        r(0x800_0000_0000, 2 * GIB),
        r(0x801_0000_0000, 510 * GIB),
    ],
    // Firmware's own memory is reported by the UEFI memory map at hand-over;
    // nothing is fixed.
    reserved: &[],
    // SPCR: interface type 3 (PL011) at 0x1000_0260_0000, GSIV 0x62.
    uart: Uart {
        kind: UartKind::Pl011,
        regs: r(0x1000_0260_0000, PL011_SIZE),
        intid: Some(98),
    },
    gic: GicLayout {
        // MADT GICD: base 0x1001_0000_0000, GIC version 3.
        gicd: r(0x1001_0000_0000, GICD_SIZE),
        // MADT GICR: discovery range 0x1001_0014_0000, length 0x100_0000.
        gicr: &[r(0x1001_0014_0000, 0x100_0000)],
        // GICv3 (GIC version 3 in the MADT GICD entry, no GICv4 frames).
        gicr_stride: GICV3_GICR_STRIDE,
        // MADT GIC ITS entries 0..7: 0x1001_0004_0000 + n * 0x2_0000.
        its: &[
            r(0x1001_0004_0000, 128 * KIB),
            r(0x1001_0006_0000, 128 * KIB),
            r(0x1001_0008_0000, 128 * KIB),
            r(0x1001_000a_0000, 128 * KIB),
            r(0x1001_000c_0000, 128 * KIB),
            r(0x1001_000e_0000, 128 * KIB),
            r(0x1001_0010_0000, 128 * KIB),
            r(0x1001_0012_0000, 128 * KIB),
        ],
        // MADT GICC: VGIC maintenance interrupt 0x19.
        maintenance_intid: SBSA_MAINTENANCE_INTID,
    },
    // GTDT: secure EL1 0x1d, non-secure EL1 0x1e, virtual 0x1b, NS EL2 0x1a.
    timer: SBSA_TIMER,
    // FADT ARM boot flags 0x0001: PSCI compliant, HVC not required → SMC.
    psci: PsciConduit::Smc,
    // MCFG: segments 12, 13, 0, 2, 4, 5 (buses 0–255 each).
    pci_ecam: &[
        Ecam {
            base: 0x33ff_f000_0000,
            segment: 12,
            bus_start: 0,
            bus_end: 255,
        },
        Ecam {
            base: 0x37ff_f000_0000,
            segment: 13,
            bus_start: 0,
            bus_end: 255,
        },
        Ecam {
            base: 0x3fff_f000_0000,
            segment: 0,
            bus_start: 0,
            bus_end: 255,
        },
        Ecam {
            base: 0x23ff_f000_0000,
            segment: 2,
            bus_start: 0,
            bus_end: 255,
        },
        Ecam {
            base: 0x2bff_f000_0000,
            segment: 4,
            bus_start: 0,
            bus_end: 255,
        },
        Ecam {
            base: 0x2fff_f000_0000,
            segment: 5,
            bus_start: 0,
            bus_end: 255,
        },
    ],
    // Altra: up to 80 cores per socket (MPIDR Aff2 = core pair 0..=0x27, Aff1 = 0/1).
    max_cpus: 80,
    quirks: &[Quirk::AcpiOnly],
};

/// Snapdragon X Elite (X1E80100 / X1E001DE) boards: the Snapdragon Dev Kit for
/// Windows and the CRD. The boot loader hands over a device tree after the EL2
/// hand-over. Figures: Linux `arch/arm64/boot/dts/qcom/x1e80100.dtsi` as compiled
/// into Debian's linux-image-6.12.117+deb13-arm64 (`qcom/x1e80100-crd.dtb`,
/// committed as `boards/testdata/linux-6.12-x1e80100-crd.dtb`; the dev kit's own
/// `x1e001de-devkit.dts` includes the same SoC file but is newer than 6.12).
pub const SNAPDRAGON_X_ELITE: Board = Board {
    name: "snapdragon-x-elite",
    // Root compatible of every X1E board ("qcom,x1e80100") and the dev kit's SoC name.
    compatible: &["qcom,x1e001de", "qcom,x1e80100"],
    acpi_oem: None,
    firmware: Firmware::DeviceTree,
    power_off: PowerOff::Psci,
    standard_irqs: true,
    // memory@80000000 (size left 0 for the boot loader); the dtsi's reserved
    // regions reach up to smem@ffe00000 + 2 MiB, so at least the 2 GiB below
    // 4 GiB is DRAM. Above 4 GiB the boot loader's /memory is the only source.
    memory: &[r(0x8000_0000, 2 * GIB)],
    // reserved-memory (no-map) regions owned by firmware that must never be
    // touched: gunyah-hyp@80000000, hyp-elf-package@80800000, tz-stat@82700000,
    // xbl-sc@d8000000, qtee@d80e0000, ta@d8600000, tags@e1000000,
    // llcc-lpi@ff800000, smem@ffe00000.
    reserved: &[
        r(0x8000_0000, 8 * MIB),
        r(0x8080_0000, 2 * MIB),
        r(0x8270_0000, MIB),
        r(0xd800_0000, 256 * KIB),
        r(0xd80e_0000, 0x52_0000),
        r(0xd860_0000, 0x8a0_0000),
        r(0xe100_0000, 0x26a_0000),
        r(0xff80_0000, 6 * MIB),
        r(0xffe0_0000, 2 * MIB),
    ],
    // serial@894000 "qcom,geni-debug-uart", 16 KiB, SPI 0x32d → INTID 845
    // (aliases serial0 = stdout-path).
    uart: Uart {
        kind: UartKind::QcomGeni,
        regs: r(0x0089_4000, 16 * KIB),
        intid: Some(845),
    },
    gic: GicLayout {
        // interrupt-controller@17000000: GICD 0x1700_0000 (64 KiB).
        gicd: r(0x1700_0000, GICD_SIZE),
        // GICR 0x1708_0000, 0x30_0000: 12 CPUs × 256 KiB.
        gicr: &[r(0x1708_0000, 0x30_0000)],
        // redistributor-stride = 0x4_0000.
        gicr_stride: 256 * KIB,
        // msi-controller@17040000 (status "disabled"), 256 KiB.
        its: &[r(0x1704_0000, 256 * KIB)],
        // GIC node interrupts: PPI 9.
        maintenance_intid: SBSA_MAINTENANCE_INTID,
    },
    // timer: PPIs 13, 14, 11, 10 (level-low).
    timer: SBSA_TIMER,
    // psci: method = "smc".
    psci: PsciConduit::Smc,
    // PCIe controllers are Qualcomm-specific (not ECAM-generic); none described.
    pci_ecam: &[],
    // cpus: 12 Oryon cores, MPIDR 0x0–0x300, 0x10000–0x10300, 0x20000–0x20300.
    max_cpus: 12,
    quirks: &[
        Quirk::MemorySizeFromBootLoader,
        Quirk::El2HeldByVendorHypervisor,
        Quirk::ConsoleNotPl011,
        Quirk::ItsDisabledByFirmware,
    ],
};

/// Every board description, in lookup order.
pub const BOARDS: &[Board] = &[QEMU_VIRT, AMPERE_ALTRA, SNAPDRAGON_X_ELITE];

impl Board {
    /// The board whose compatible list matches one of `root_compatible`.
    pub fn identify<'a>(
        mut root_compatible: impl Iterator<Item = &'a str>,
    ) -> Option<&'static Board> {
        root_compatible.find_map(|c| BOARDS.iter().find(|b| b.compatible.contains(&c)))
    }

    /// The board whose ACPI OEM ID and OEM table ID match (blank-padded fields
    /// compared without their trailing blanks).
    pub fn identify_acpi(oem_id: &str, oem_table_id: &str) -> Option<&'static Board> {
        let (id, table) = (oem_id.trim_end(), oem_table_id.trim_end());
        BOARDS
            .iter()
            .find(|b| b.acpi_oem.is_some_and(|(i, t)| i == id && t == table))
    }

    /// The board called `name` (scripts and `cargo xtask build --board`).
    pub fn by_name(name: &str) -> Option<&'static Board> {
        BOARDS.iter().find(|b| b.name == name)
    }

    pub fn has_quirk(&self, quirk: Quirk) -> bool {
        self.quirks.contains(&quirk)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_found() {
        for (i, b) in BOARDS.iter().enumerate() {
            assert_eq!(Board::by_name(b.name), Some(b));
            assert!(BOARDS[i + 1..].iter().all(|o| o.name != b.name));
        }
        assert_eq!(Board::by_name("raspberry-pi"), None);
    }

    #[test]
    fn descriptions_are_self_consistent() {
        for b in BOARDS {
            // Every board is identifiable from what its firmware hands over.
            match b.firmware {
                Firmware::DeviceTree => assert!(!b.compatible.is_empty(), "{}", b.name),
                Firmware::Acpi => assert!(b.acpi_oem.is_some(), "{}", b.name),
            }
            assert!(!b.memory.is_empty(), "{}", b.name);
            // Reserved ranges lie in DRAM; MMIO does not.
            for res in b.reserved {
                assert!(b.memory.iter().any(|m| m.contains(res.base)), "{}", b.name);
            }
            for dev in [b.uart.regs, b.gic.gicd]
                .iter()
                .chain(b.gic.gicr)
                .chain(b.gic.its)
            {
                assert!(
                    b.memory.iter().all(|m| !m.overlaps(dev)),
                    "{}: {dev:?}",
                    b.name
                );
            }
            // The redistributor regions hold max_cpus frames of the stride.
            let frames: u64 = b.gic.gicr.iter().map(|g| g.size / b.gic.gicr_stride).sum();
            assert!(frames >= b.max_cpus as u64, "{}", b.name);
            // PPIs are 16..32.
            for p in [
                b.timer.phys_secure,
                b.timer.phys_nonsecure,
                b.timer.virt,
                b.timer.hyp,
                b.gic.maintenance_intid,
            ] {
                assert!((16..32).contains(&p), "{}", b.name);
            }
        }
    }

    #[test]
    fn identification() {
        assert_eq!(
            Board::identify(["qcom,x1e80100-crd", "qcom,x1e80100"].into_iter()).map(|b| b.name),
            Some("snapdragon-x-elite")
        );
        assert_eq!(
            Board::identify_acpi("Ampere", "Altra   ").map(|b| b.name),
            Some("ampere-altra")
        );
        assert_eq!(
            Board::identify_acpi("BOCHS ", "BXPC    ").map(|b| b.name),
            Some("qemu-virt")
        );
        assert_eq!(Board::identify_acpi("Ampere", "eMAG"), None);
    }
}
