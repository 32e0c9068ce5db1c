//! The flattened device tree a guest boots with.
//!
//! [`device_tree`] turns a [`Machine`] (vCPU count, RAM, command line, initrd) and
//! the VM's device list (`crate::devices::device_list`: the PL011, the virtio-mmio
//! transports, the TPM — on the platform bus, or on a bit-banged SPI bus over the
//! PL061 GPIO controller —, the firmware's flash, fw_cfg and PL031, PCIe with its
//! GICv2m frame, the simple framebuffer) into a DTB: one node per entry, its `reg`
//! and `interrupts` taken from the entry. [`linux_dt`] and [`firmware_dt`] do the
//! same from a [`GuestDtConfig`] spelled out by hand (tests, and callers without a
//! list). Node names and property encodings follow what QEMU's `virt` machine
//! generates (GICv3, no ITS, no EL2 for the guest), so a kernel sees the same
//! machine it would under QEMU. Machine and list are validated first; a bad one is
//! a [`DtError`], never a malformed blob.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use vm_fdt::FdtWriter;

use crate::devices::{DeviceKind, DeviceSpec, FramebufferSpec, Irq, Trigger};

use crate::guest::{
    GICD_BASE, GICD_SIZE, GICR_BASE, GICR_REGION_SIZE, GICR_STRIDE, HTIMER_INTID, PL011_BASE,
    PL011_SIZE, PL011_SPI, PL061_SIZE, PL061_SPI, PLATFORM_BUS_BASE, PLATFORM_BUS_SIZE, PPI_BASE,
    PTIMER_INTID, RAM_BASE, SPI_BASE, STIMER_INTID, TPM_SPI_CS_PIN, TPM_SPI_MISO_PIN,
    TPM_SPI_MOSI_PIN, TPM_SPI_SCK_PIN, VIRTIO_MMIO_BASE, VIRTIO_MMIO_SLOTS, VIRTIO_MMIO_STRIDE,
    VTIMER_INTID,
};

/// Device-tree encodings, phandles and sizes used by the generator.
pub mod defs {
    use crate::guest::{GICR_REGION_SIZE, GICR_STRIDE};

    /// Root `compatible` and `model`, as on QEMU `virt`.
    pub const MACHINE_COMPATIBLE: &str = "linux,dummy-virt";
    pub const MACHINE_MODEL: &str = "linux,dummy-virt";

    /// Phandles of the nodes other nodes refer to.
    pub const GIC_PHANDLE: u32 = 1;
    pub const APB_PCLK_PHANDLE: u32 = 2;
    pub const PL061_PHANDLE: u32 = 3;
    pub const V2M_PHANDLE: u32 = 4;
    pub const ITS_PHANDLE: u32 = 5;

    /// GPIO specifier flags (binding `gpio.txt`, cell 2).
    pub const GPIO_ACTIVE_HIGH: u32 = 0;
    pub const GPIO_ACTIVE_LOW: u32 = 1;
    /// `#gpio-cells` of the PL061: pin, flags.
    pub const PL061_GPIO_CELLS: u32 = 2;
    /// The SPI TPM: chip select 0 of the bit-banged bus, and the clock it claims
    /// (spi-gpio clocks as fast as its GPIO writes go regardless).
    pub const TPM_SPI_CHIP_SELECT: u32 = 0;
    pub const TPM_SPI_MAX_HZ: u32 = 1_000_000;
    /// The TCG TIS-over-SPI binding Linux `tpm_tis_spi` matches.
    pub const TPM_SPI_COMPATIBLE: &str = "tcg,tpm_tis-spi";

    /// GIC interrupt specifier, cell 0 (binding `arm,gic-v3`).
    pub const IRQ_TYPE_SPI: u32 = 0;
    pub const IRQ_TYPE_PPI: u32 = 1;
    /// GIC interrupt specifier, cell 2: trigger flags.
    pub const IRQ_EDGE_RISING: u32 = 1;
    pub const IRQ_LEVEL_HIGH: u32 = 4;
    /// `#interrupt-cells` of the GICv3 node.
    pub const GIC_INTERRUPT_CELLS: u32 = 3;
    /// Largest valid SPI INTID (1020..=1023 are special).
    pub const MAX_SPI_INTID: u32 = 1019;

    /// Most vCPUs one redistributor region can describe (123).
    pub const MAX_VCPUS: usize = (GICR_REGION_SIZE / GICR_STRIDE) as usize;

    /// PCI bus binding (IEEE 1275 PCI bus binding; `pci-host-ecam-generic`): three
    /// address cells, the first (`phys.hi`) giving the space, then bus, device,
    /// function in bits 23:8.
    pub const PCI_ADDRESS_CELLS: u32 = 3;
    pub const PCI_SPACE_IO: u32 = 0x0100_0000;
    pub const PCI_SPACE_MEM32: u32 = 0x0200_0000;
    /// `phys.hi` bit position of the device number.
    pub const PCI_DEVICE_SHIFT: u32 = 11;
    /// `interrupt-map-mask`: device number modulo 4 (the swizzle repeats), and the
    /// pin.
    pub const PCI_INTERRUPT_MAP_MASK: [u32; 4] = [3 << PCI_DEVICE_SHIFT, 0, 0, 7];
    /// Legacy interrupt pins INTA..INTD.
    pub const PCI_INTX_PINS: u32 = 4;
    /// ECAM bytes per bus.
    pub const PCI_ECAM_BUS_SIZE: u64 = 1 << 20;
    pub const PCIE_COMPATIBLE: &str = "pci-host-ecam-generic";
    pub const GICV2M_COMPATIBLE: &str = "arm,gic-v2m-frame";
    pub const GIC_ITS_COMPATIBLE: &str = "arm,gic-v3-its";
    /// `#msi-cells` of the ITS: one cell, the DeviceID.
    pub const ITS_MSI_CELLS: u32 = 1;
    /// `msi-map` length: every requester ID (bus, device, function) maps 1:1 to a
    /// DeviceID.
    pub const PCI_RID_COUNT: u32 = 0x1_0000;

    /// Register window of one virtio-mmio transport.
    pub const VIRTIO_MMIO_SIZE: u64 = 0x200;
    /// Register window of a TIS MMIO TPM (five localities of 4 KiB).
    pub const TPM_TIS_SIZE: u64 = 0x5000;
    /// The PL011 reference clock (`apb-pclk`).
    pub const APB_PCLK_HZ: u32 = 24_000_000;
    pub const APB_PCLK_NAME: &str = "clk24mhz";

    /// PSCI function IDs advertised for pre-0.2 clients (SMC64 where defined).
    pub const PSCI_CPU_SUSPEND: u32 = 0xc400_0001;
    pub const PSCI_CPU_OFF: u32 = 0x8400_0002;
    pub const PSCI_CPU_ON: u32 = 0xc400_0003;
    pub const PSCI_MIGRATE: u32 = 0xc400_0005;
}

use defs::*;

/// One virtio-mmio transport that exists in the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioSlot {
    /// Guest-physical base of its register window.
    pub base: u64,
    /// Its interrupt as a GIC INTID (an SPI).
    pub intid: u32,
}

/// What the guest's device tree describes.
#[derive(Debug, Clone, Copy)]
pub struct GuestDtConfig<'a> {
    /// Number of vCPUs; vCPU `i` has MPIDR Aff0 = `i` (`reg = <i>`).
    pub vcpus: usize,
    pub ram_base: u64,
    pub ram_size: u64,
    pub bootargs: &'a str,
    /// `(start, end)` of the initrd, guest-physical, end exclusive.
    pub initrd: Option<(u64, u64)>,
    /// The virtio-mmio transports that exist, in probe order.
    pub virtio_mmio: &'a [VirtioSlot],
    /// Base of a TIS MMIO TPM on the platform bus.
    pub tpm_tis: Option<u64>,
    /// Base of a PL061 GPIO controller (normally [`crate::guest::PL061_BASE`])
    /// whose pins carry a bit-banged SPI bus with a TIS-over-SPI TPM on chip
    /// select 0 — for kernels that have `tpm_tis_spi` but no `tpm_tis` (Debian's
    /// arm64 kernel).
    pub tpm_spi_gpio: Option<u64>,
    /// Value of `/chosen/rng-seed`.
    pub rng_seed: Option<[u8; 32]>,
}

/// Why no device tree was generated.
#[derive(Debug, PartialEq, Eq)]
pub enum DtError {
    /// `vcpus` is outside `1..=MAX_VCPUS`.
    VcpuCount(usize),
    /// `ram_size` is zero.
    EmptyRam,
    /// RAM starts inside the device space below [`RAM_BASE`].
    RamOverlapsDevices { base: u64 },
    /// `ram_base + ram_size` does not fit in 64 bits.
    RamOverflow,
    /// The initrd is empty or inverted.
    InitrdInvalid { start: u64, end: u64 },
    /// The initrd is not entirely inside RAM.
    InitrdOutsideRam { start: u64, end: u64 },
    /// A virtio-mmio base is not a slot of the virtio-mmio window.
    VirtioSlotInvalid { base: u64 },
    /// Two virtio-mmio transports share a slot.
    VirtioSlotDuplicate { base: u64 },
    /// A virtio-mmio interrupt is not an SPI.
    VirtioIntidInvalid { base: u64, intid: u32 },
    /// The TPM window is not inside the platform bus.
    TpmOutsidePlatformBus { base: u64 },
    /// The GPIO controller of the SPI TPM is unaligned, in RAM, or overlaps
    /// another device.
    GpioBaseInvalid { base: u64 },
    /// The command line contains a NUL byte.
    BootargsNul,
    /// The framebuffer is not inside RAM, or overlaps the initrd.
    FramebufferInvalid { base: u64 },
    /// A device-list entry the tree cannot describe: an interrupt that is not an
    /// SPI or missing where its binding needs one, a second entry of a device the
    /// VM has one of, or a root complex without all its windows.
    DeviceInvalid { base: u64 },
    /// The device list has no PL011 for `/chosen/stdout-path`.
    NoConsole,
    /// The FDT writer refused the tree.
    Writer(vm_fdt::Error),
}

impl fmt::Display for DtError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match self {
            Self::VcpuCount(n) => write!(f, "{n} vCPUs (must be 1..={MAX_VCPUS})"),
            Self::EmptyRam => write!(f, "guest RAM is empty"),
            Self::RamOverlapsDevices { base } => {
                write!(f, "guest RAM at {base:#x} overlaps device space")
            }
            Self::RamOverflow => write!(f, "guest RAM wraps the address space"),
            Self::InitrdInvalid { start, end } => {
                write!(f, "initrd [{start:#x}, {end:#x}) is empty or inverted")
            }
            Self::InitrdOutsideRam { start, end } => {
                write!(f, "initrd [{start:#x}, {end:#x}) is outside RAM")
            }
            Self::VirtioSlotInvalid { base } => write!(f, "no virtio-mmio slot at {base:#x}"),
            Self::VirtioSlotDuplicate { base } => {
                write!(f, "virtio-mmio slot {base:#x} given twice")
            }
            Self::VirtioIntidInvalid { base, intid } => {
                write!(f, "virtio-mmio {base:#x}: INTID {intid} is not an SPI")
            }
            Self::TpmOutsidePlatformBus { base } => {
                write!(f, "TPM at {base:#x} is outside the platform bus")
            }
            Self::GpioBaseInvalid { base } => {
                write!(
                    f,
                    "PL061 at {base:#x} is unaligned, in RAM or overlaps a device"
                )
            }
            Self::BootargsNul => write!(f, "bootargs contain NUL"),
            Self::FramebufferInvalid { base } => {
                write!(
                    f,
                    "framebuffer at {base:#x} not inside RAM or overlaps the initrd"
                )
            }
            Self::DeviceInvalid { base } => {
                write!(f, "the device at {base:#x} cannot be described")
            }
            Self::NoConsole => write!(f, "the device list has no PL011 console"),
            Self::Writer(e) => write!(f, "FDT writer: {e}"),
        }
    }
}

impl From<vm_fdt::Error> for DtError {
    fn from(e: vm_fdt::Error) -> Self {
        Self::Writer(e)
    }
}

fn validate_machine(m: &Machine) -> Result<(), DtError> {
    if !(1..=MAX_VCPUS).contains(&m.vcpus) {
        return Err(DtError::VcpuCount(m.vcpus));
    }
    if m.ram_size == 0 {
        return Err(DtError::EmptyRam);
    }
    if m.ram_base < RAM_BASE {
        return Err(DtError::RamOverlapsDevices { base: m.ram_base });
    }
    let ram_end = m
        .ram_base
        .checked_add(m.ram_size)
        .ok_or(DtError::RamOverflow)?;
    if let Some((start, end)) = m.initrd {
        if end <= start {
            return Err(DtError::InitrdInvalid { start, end });
        }
        if start < m.ram_base || end > ram_end {
            return Err(DtError::InitrdOutsideRam { start, end });
        }
    }
    if m.bootargs.contains('\0') {
        return Err(DtError::BootargsNul);
    }
    Ok(())
}

/// The device-list entries a tree can describe: virtio transports in their
/// slots with an SPI, the TPM inside the platform bus, the PL061 aligned and
/// clear of the other devices and RAM, the framebuffer in RAM, a console.
fn validate_devices(m: &Machine, list: &[DeviceSpec]) -> Result<(), DtError> {
    let window_end = VIRTIO_MMIO_BASE + VIRTIO_MMIO_SLOTS * VIRTIO_MMIO_STRIDE;
    let virtio: Vec<&DeviceSpec> = list
        .iter()
        .filter(|d| matches!(d.kind, DeviceKind::VirtioMmio { .. }))
        .collect();
    for (i, d) in virtio.iter().enumerate() {
        let in_window = (VIRTIO_MMIO_BASE..window_end).contains(&d.base)
            && (d.base - VIRTIO_MMIO_BASE).is_multiple_of(VIRTIO_MMIO_STRIDE)
            && d.size == VIRTIO_MMIO_SIZE;
        if !in_window {
            return Err(DtError::VirtioSlotInvalid { base: d.base });
        }
        if virtio[..i].iter().any(|s| s.base == d.base) {
            return Err(DtError::VirtioSlotDuplicate { base: d.base });
        }
        let intid = d.irq.map_or(0, |i| i.intid);
        if !(SPI_BASE..=MAX_SPI_INTID).contains(&intid) {
            return Err(DtError::VirtioIntidInvalid {
                base: d.base,
                intid,
            });
        }
    }
    for d in list {
        let base = d.base;
        match d.kind {
            DeviceKind::TpmCrb => {
                let fits = base >= PLATFORM_BUS_BASE
                    && base
                        .checked_add(d.size)
                        .is_some_and(|end| end <= PLATFORM_BUS_BASE + PLATFORM_BUS_SIZE);
                if !fits {
                    return Err(DtError::TpmOutsidePlatformBus { base });
                }
            }
            DeviceKind::Pl061Tpm => {
                let end = base.checked_add(d.size);
                let fixed = [
                    (GICD_BASE, GICD_SIZE),
                    (GICR_BASE, GICR_REGION_SIZE),
                    (PL011_BASE, PL011_SIZE),
                    (VIRTIO_MMIO_BASE, VIRTIO_MMIO_SLOTS * VIRTIO_MMIO_STRIDE),
                    (PLATFORM_BUS_BASE, PLATFORM_BUS_SIZE),
                ];
                let ok = d.size == PL061_SIZE
                    && base.is_multiple_of(PL061_SIZE)
                    && end.is_some_and(|end| {
                        end <= m.ram_base && fixed.iter().all(|&(b, s)| end <= b || b + s <= base)
                    });
                if !ok {
                    return Err(DtError::GpioBaseInvalid { base });
                }
            }
            _ => {}
        }
        // Whatever the node's binding asks for, an interrupt that is not an SPI
        // cannot be written as one.
        if let Some(irq) = d.irq {
            if !(SPI_BASE..=MAX_SPI_INTID).contains(&irq.intid) {
                return Err(DtError::DeviceInvalid { base });
            }
        }
        let needs_irq = matches!(
            d.kind,
            DeviceKind::Pl011 | DeviceKind::Pl031 | DeviceKind::Pl061Tpm
        );
        if needs_irq && d.irq.is_none() {
            return Err(DtError::DeviceInvalid { base });
        }
    }
    if let Some(fb) = crate::devices::framebuffer_of(list) {
        validate_framebuffer(m, &fb)?;
    }
    let has_pcie = list.iter().any(|d| {
        matches!(
            d.kind,
            DeviceKind::Pcie { .. } | DeviceKind::Gicv2m { .. } | DeviceKind::GicIts
        )
    });
    let pcie = crate::devices::pcie_of(list);
    if has_pcie && pcie.is_none() {
        return Err(DtError::DeviceInvalid { base: 0 });
    }
    // One MSI controller: the root complex's messages go to one place.
    let msi_controllers = list
        .iter()
        .filter(|d| matches!(d.kind, DeviceKind::Gicv2m { .. } | DeviceKind::GicIts))
        .count();
    if msi_controllers > 1 {
        return Err(DtError::DeviceInvalid { base: 0 });
    }
    if let Some(p) = pcie {
        // The bus-range cell and the interrupt map's SPIs.
        let buses = p.ecam.size / PCI_ECAM_BUS_SIZE;
        let intx_end = p.intx_first_intid.checked_add(PCI_INTX_PINS);
        if !(1..=256).contains(&buses) || intx_end.is_none_or(|e| e > MAX_SPI_INTID + 1) {
            return Err(DtError::DeviceInvalid { base: p.ecam.base });
        }
    }
    if !list.iter().any(|d| d.kind == DeviceKind::Pl011) {
        return Err(DtError::NoConsole);
    }
    // One node each: a second entry of these would not be described.
    for (i, d) in list.iter().enumerate() {
        let single = matches!(
            d.kind,
            DeviceKind::Pl011
                | DeviceKind::TpmCrb
                | DeviceKind::Pl061Tpm
                | DeviceKind::SimpleFramebuffer { .. }
                | DeviceKind::Pcie { .. }
                | DeviceKind::Gicv2m { .. }
                | DeviceKind::GicIts
                | DeviceKind::Flash { .. }
        );
        if single && list[..i].iter().any(|e| e.kind == d.kind) {
            return Err(DtError::DeviceInvalid { base: d.base });
        }
    }
    Ok(())
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| String::from(*s)).collect()
}

/// Splits a 64-bit value into the two cells of a `#address-cells = 2` entry.
fn cells64(v: u64) -> [u32; 2] {
    [(v >> 32) as u32, v as u32]
}

/// A `reg` entry with two address and two size cells.
fn reg64(base: u64, size: u64) -> [u64; 2] {
    [base, size]
}

/// A GICv3 interrupt specifier for an SPI given as INTID.
fn spi(intid: u32, flags: u32) -> [u32; 3] {
    [IRQ_TYPE_SPI, intid - SPI_BASE, flags]
}

/// A GICv3 interrupt specifier for a PPI given as INTID.
fn ppi(intid: u32, flags: u32) -> [u32; 3] {
    [IRQ_TYPE_PPI, intid - PPI_BASE, flags]
}

fn psci_node(w: &mut FdtWriter) -> Result<(), DtError> {
    let n = w.begin_node("psci")?;
    w.property_string_list(
        "compatible",
        strings(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]),
    )?;
    w.property_string("method", "hvc")?;
    w.property_u32("cpu_suspend", PSCI_CPU_SUSPEND)?;
    w.property_u32("cpu_off", PSCI_CPU_OFF)?;
    w.property_u32("cpu_on", PSCI_CPU_ON)?;
    w.property_u32("migrate", PSCI_MIGRATE)?;
    w.end_node(n)?;
    Ok(())
}
fn memory_node(w: &mut FdtWriter, m: &Machine) -> Result<(), DtError> {
    let n = w.begin_node(&format!("memory@{:x}", m.ram_base))?;
    w.property_string("device_type", "memory")?;
    w.property_array_u64("reg", &reg64(m.ram_base, m.ram_size))?;
    w.end_node(n)?;
    Ok(())
}

/// The framebuffer's RAM must be inside RAM, clear of the initrd, and hold its rows.
fn validate_framebuffer(m: &Machine, fb: &FramebufferSpec) -> Result<(), DtError> {
    let bad = DtError::FramebufferInvalid { base: fb.base };
    let end = fb
        .base
        .checked_add(fb.reserved)
        .ok_or(DtError::FramebufferInvalid { base: fb.base })?;
    let pixels = u64::from(fb.stride) * u64::from(fb.height);
    let row = u64::from(fb.width) * u64::from(crate::devices::SIMPLE_FB_BYTES_PER_PIXEL);
    if fb.base < m.ram_base
        || end > m.ram_base + m.ram_size
        || pixels > fb.reserved
        || u64::from(fb.stride) < row
        || fb.width == 0
        || fb.height == 0
    {
        return Err(bad);
    }
    if let Some((start, initrd_end)) = m.initrd {
        if start < end && initrd_end > fb.base {
            return Err(bad);
        }
    }
    Ok(())
}

/// `/reserved-memory` with the framebuffer's RAM (`no-map`: the kernel neither
/// uses nor maps it as RAM, so the driver may map it write-combined) and the
/// `simple-framebuffer` node (Linux's `simplefb`/`simpledrm` bind it).
fn framebuffer_nodes(w: &mut FdtWriter, fb: &FramebufferSpec) -> Result<(), DtError> {
    let rm = w.begin_node("reserved-memory")?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_null("ranges")?;
    let r = w.begin_node(&format!("framebuffer@{:x}", fb.base))?;
    w.property_array_u64("reg", &reg64(fb.base, fb.reserved))?;
    w.property_null("no-map")?;
    w.end_node(r)?;
    w.end_node(rm)?;
    let n = w.begin_node(&format!("framebuffer@{:x}", fb.base))?;
    w.property_string("compatible", "simple-framebuffer")?;
    let bytes = u64::from(fb.stride) * u64::from(fb.height);
    w.property_array_u64("reg", &reg64(fb.base, bytes))?;
    w.property_u32("width", fb.width)?;
    w.property_u32("height", fb.height)?;
    w.property_u32("stride", fb.stride)?;
    w.property_string("format", crate::devices::SIMPLE_FB_FORMAT)?;
    w.end_node(n)?;
    Ok(())
}

fn cpus_node(w: &mut FdtWriter, vcpus: usize) -> Result<(), DtError> {
    let cpus = w.begin_node("cpus")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    for i in 0..vcpus {
        let c = w.begin_node(&format!("cpu@{i:x}"))?;
        w.property_string("device_type", "cpu")?;
        w.property_string("compatible", "arm,armv8")?;
        // Bounded by MAX_VCPUS, so the Aff0 value fits a cell.
        w.property_u32("reg", i as u32)?;
        w.property_string("enable-method", "psci")?;
        w.end_node(c)?;
    }
    w.end_node(cpus)?;
    Ok(())
}

fn gic_node(
    w: &mut FdtWriter,
    vcpus: usize,
    msi: Option<&crate::devices::MsiSpec>,
) -> Result<(), DtError> {
    let n = w.begin_node(&format!("intc@{GICD_BASE:x}"))?;
    w.property_string("compatible", "arm,gic-v3")?;
    w.property_u32("#interrupt-cells", GIC_INTERRUPT_CELLS)?;
    w.property_null("interrupt-controller")?;
    // As QEMU: an (empty) identity bus for child frames such as an ITS.
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_null("ranges")?;
    let gicr_size = vcpus as u64 * GICR_STRIDE;
    debug_assert!(gicr_size <= GICR_REGION_SIZE);
    let mut reg = Vec::with_capacity(4);
    reg.extend_from_slice(&reg64(GICD_BASE, GICD_SIZE));
    reg.extend_from_slice(&reg64(GICR_BASE, gicr_size));
    w.property_array_u64("reg", &reg)?;
    w.property_u32("#redistributor-regions", 1)?;
    w.property_phandle(GIC_PHANDLE)?;
    if let Some(crate::devices::MsiSpec::Its(its)) = msi {
        // The ITS, a child on the GIC's identity bus; Linux's GICv3 driver probes
        // it when the distributor has LPIs (ours has, with an ITS).
        let f = w.begin_node(&format!("its@{:x}", its.base))?;
        w.property_string("compatible", GIC_ITS_COMPATIBLE)?;
        w.property_null("msi-controller")?;
        w.property_u32("#msi-cells", ITS_MSI_CELLS)?;
        w.property_array_u64("reg", &reg64(its.base, its.size))?;
        w.property_phandle(ITS_PHANDLE)?;
        w.end_node(f)?;
    }
    if let Some(crate::devices::MsiSpec::V2m(v2m)) = msi {
        // The MSI frame, a child on the GIC's identity bus; Linux's GICv3 driver
        // probes it when the distributor has no LPIs. MSI_TYPER gives the SPIs.
        let f = w.begin_node(&format!("v2m@{:x}", v2m.frame.base))?;
        w.property_string("compatible", GICV2M_COMPATIBLE)?;
        w.property_null("msi-controller")?;
        w.property_array_u64("reg", &reg64(v2m.frame.base, v2m.frame.size))?;
        w.property_phandle(V2M_PHANDLE)?;
        w.end_node(f)?;
    }
    w.end_node(n)?;
    Ok(())
}

/// The PCI Express root complex: a generic ECAM host with the I/O and 32-bit
/// memory windows, INTx swizzled onto four SPIs, MSIs to the v2m frame.
fn pcie_node(w: &mut FdtWriter, p: &crate::devices::PcieSpec) -> Result<(), DtError> {
    let n = w.begin_node(&format!("pcie@{:x}", p.mmio32.base))?;
    w.property_string("compatible", PCIE_COMPATIBLE)?;
    w.property_string("device_type", "pci")?;
    w.property_u32("#address-cells", PCI_ADDRESS_CELLS)?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("linux,pci-domain", 0)?;
    let buses = (p.ecam.size / PCI_ECAM_BUS_SIZE) as u32;
    w.property_array_u32("bus-range", &[0, buses - 1])?;
    w.property_null("dma-coherent")?;
    w.property_array_u64("reg", &reg64(p.ecam.base, p.ecam.size))?;
    // PCI address (3 cells), CPU address (2), size (2); I/O starts at port 0,
    // memory is identity-mapped.
    let mut ranges = Vec::with_capacity(14);
    for (space, pci_addr, win) in [
        (PCI_SPACE_IO, 0, p.pio),
        (PCI_SPACE_MEM32, p.mmio32.base, p.mmio32),
    ] {
        ranges.push(space);
        ranges.extend_from_slice(&cells64(pci_addr));
        ranges.extend_from_slice(&cells64(win.base));
        ranges.extend_from_slice(&cells64(win.size));
    }
    w.property_array_u32("ranges", &ranges)?;
    match p.msi {
        crate::devices::MsiSpec::V2m(_) => w.property_u32("msi-parent", V2M_PHANDLE)?,
        // Requester ID r is DeviceID r of the ITS (rid-base, ITS, msi-base, length).
        crate::devices::MsiSpec::Its(_) => {
            w.property_array_u32("msi-map", &[0, ITS_PHANDLE, 0, PCI_RID_COUNT])?
        }
    }
    w.property_u32("#interrupt-cells", 1)?;
    w.property_array_u32("interrupt-map-mask", &PCI_INTERRUPT_MAP_MASK)?;
    // Child unit address (3) + pin (1) -> GIC phandle, GIC unit address (2, zero),
    // GIC specifier (3): device d's pin p is SPI first + (d + p - 1) mod 4.
    let mut map = Vec::new();
    for dev in 0..PCI_INTX_PINS {
        for pin in 1..=PCI_INTX_PINS {
            let intid = p.intx_first_intid + (dev + pin - 1) % PCI_INTX_PINS;
            map.extend_from_slice(&[dev << PCI_DEVICE_SHIFT, 0, 0, pin, GIC_PHANDLE, 0, 0]);
            map.extend_from_slice(&spi(intid, IRQ_LEVEL_HIGH));
        }
    }
    w.property_array_u32("interrupt-map", &map)?;
    w.end_node(n)?;
    Ok(())
}

fn timer_node(w: &mut FdtWriter) -> Result<(), DtError> {
    let n = w.begin_node("timer")?;
    w.property_string_list(
        "compatible",
        strings(&["arm,armv8-timer", "arm,armv7-timer"]),
    )?;
    let mut irqs = Vec::with_capacity(12);
    for intid in [STIMER_INTID, PTIMER_INTID, VTIMER_INTID, HTIMER_INTID] {
        irqs.extend_from_slice(&ppi(intid, IRQ_LEVEL_HIGH));
    }
    w.property_array_u32("interrupts", &irqs)?;
    w.property_null("always-on")?;
    w.end_node(n)?;
    Ok(())
}

fn clock_node(w: &mut FdtWriter) -> Result<(), DtError> {
    let n = w.begin_node("apb-pclk")?;
    w.property_string("compatible", "fixed-clock")?;
    w.property_u32("#clock-cells", 0)?;
    w.property_u32("clock-frequency", APB_PCLK_HZ)?;
    w.property_string("clock-output-names", APB_PCLK_NAME)?;
    w.property_phandle(APB_PCLK_PHANDLE)?;
    w.end_node(n)?;
    Ok(())
}

/// The GIC interrupt specifier of a device-list interrupt (an SPI).
fn spi_of(irq: Irq) -> [u32; 3] {
    let flags = match irq.trigger {
        Trigger::Level => IRQ_LEVEL_HIGH,
        Trigger::Edge => IRQ_EDGE_RISING,
    };
    spi(irq.intid, flags)
}

fn pl011_path(base: u64) -> String {
    format!("/pl011@{base:x}")
}

fn pl011_node(w: &mut FdtWriter, d: &DeviceSpec, irq: Irq) -> Result<(), DtError> {
    let n = w.begin_node(&pl011_path(d.base)[1..])?;
    w.property_string_list("compatible", strings(&["arm,pl011", "arm,primecell"]))?;
    w.property_array_u64("reg", &reg64(d.base, d.size))?;
    w.property_array_u32("interrupts", &spi_of(irq))?;
    w.property_array_u32("clocks", &[APB_PCLK_PHANDLE, APB_PCLK_PHANDLE])?;
    w.property_string_list("clock-names", strings(&["uartclk", "apb_pclk"]))?;
    w.end_node(n)?;
    Ok(())
}

fn virtio_node(w: &mut FdtWriter, d: &DeviceSpec, irq: Irq) -> Result<(), DtError> {
    let n = w.begin_node(&format!("virtio_mmio@{:x}", d.base))?;
    w.property_string("compatible", "virtio,mmio")?;
    w.property_array_u64("reg", &reg64(d.base, d.size))?;
    w.property_array_u32("interrupts", &spi_of(irq))?;
    w.property_null("dma-coherent")?;
    w.end_node(n)?;
    Ok(())
}

/// The QEMU-style `platform-bus` node (one address and size cell, translated to
/// [`PLATFORM_BUS_BASE`]) holding the TPM `d` (CRB or TIS: the same
/// `tcg,tpm-tis-mmio` node; the interface ID register tells them apart).
fn platform_bus_node(w: &mut FdtWriter, d: &DeviceSpec) -> Result<(), DtError> {
    let bus = w.begin_node(&format!("platform-bus@{PLATFORM_BUS_BASE:x}"))?;
    w.property_string_list("compatible", strings(&["qemu,platform", "simple-bus"]))?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 1)?;
    // child address (1 cell), parent address (2 cells), size (1 cell); the window is
    // below 4 GiB so the single cells are exact.
    let [pb_hi, pb_lo] = cells64(PLATFORM_BUS_BASE);
    w.property_array_u32("ranges", &[0, pb_hi, pb_lo, PLATFORM_BUS_SIZE as u32])?;
    w.property_u32("interrupt-parent", GIC_PHANDLE)?;
    // Validated to lie inside the 32 MiB window, so offset and size fit a cell.
    let offset = (d.base - PLATFORM_BUS_BASE) as u32;
    let tpm = w.begin_node(&format!("tpm_tis@{offset:x}"))?;
    w.property_string("compatible", "tcg,tpm-tis-mmio")?;
    w.property_array_u32("reg", &[offset, d.size as u32])?;
    w.end_node(tpm)?;
    w.end_node(bus)?;
    Ok(())
}

/// The PL061 GPIO controller, as QEMU `virt` describes it.
fn pl061_node(w: &mut FdtWriter, d: &DeviceSpec, irq: Irq) -> Result<(), DtError> {
    let n = w.begin_node(&format!("pl061@{:x}", d.base))?;
    w.property_string_list("compatible", strings(&["arm,pl061", "arm,primecell"]))?;
    w.property_array_u64("reg", &reg64(d.base, d.size))?;
    w.property_array_u32("interrupts", &spi_of(irq))?;
    w.property_null("gpio-controller")?;
    w.property_u32("#gpio-cells", PL061_GPIO_CELLS)?;
    w.property_u32("clocks", APB_PCLK_PHANDLE)?;
    w.property_string("clock-names", "apb_pclk")?;
    w.property_phandle(PL061_PHANDLE)?;
    w.end_node(n)?;
    Ok(())
}

/// The bit-banged SPI bus on the PL061's pins (binding `spi-gpio`) with the TPM
/// (binding `tcg,tpm_tis-spi`) on chip select 0.
fn spi_gpio_tpm_node(w: &mut FdtWriter) -> Result<(), DtError> {
    let gpio = |pin: u8, flags: u32| [PL061_PHANDLE, u32::from(pin), flags];
    let n = w.begin_node("spi")?;
    w.property_string("compatible", "spi-gpio")?;
    w.property_u32("#address-cells", 1)?;
    w.property_u32("#size-cells", 0)?;
    w.property_array_u32("sck-gpios", &gpio(TPM_SPI_SCK_PIN, GPIO_ACTIVE_HIGH))?;
    w.property_array_u32("mosi-gpios", &gpio(TPM_SPI_MOSI_PIN, GPIO_ACTIVE_HIGH))?;
    w.property_array_u32("miso-gpios", &gpio(TPM_SPI_MISO_PIN, GPIO_ACTIVE_HIGH))?;
    w.property_array_u32("cs-gpios", &gpio(TPM_SPI_CS_PIN, GPIO_ACTIVE_LOW))?;
    w.property_u32("num-chipselects", 1)?;
    let tpm = w.begin_node(&format!("tpm@{TPM_SPI_CHIP_SELECT:x}"))?;
    w.property_string("compatible", TPM_SPI_COMPATIBLE)?;
    w.property_u32("reg", TPM_SPI_CHIP_SELECT)?;
    w.property_u32("spi-max-frequency", TPM_SPI_MAX_HZ)?;
    w.end_node(tpm)?;
    w.end_node(n)?;
    Ok(())
}

fn chosen_node(w: &mut FdtWriter, m: &Machine, console: u64) -> Result<(), DtError> {
    let n = w.begin_node("chosen")?;
    w.property_string("bootargs", m.bootargs)?;
    w.property_string("stdout-path", &pl011_path(console))?;
    if let Some((start, end)) = m.initrd {
        w.property_u64("linux,initrd-start", start)?;
        w.property_u64("linux,initrd-end", end)?;
    }
    if let Some(seed) = &m.rng_seed {
        w.property("rng-seed", seed)?;
    }
    w.end_node(n)?;
    Ok(())
}

/// The devices only a firmware guest (`uefi-acpi`) has in its device tree: the
/// flash banks and fw_cfg, which EDK2's ArmVirtQemu finds there, the PL031 its
/// real-time clock library drives, and the CRB TPM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirmwareDevices {
    /// `(base, size)` of the code bank and of the variable-store bank.
    pub flash: [(u64, u64); 2],
    /// Base of the fw_cfg registers.
    pub fw_cfg: u64,
    /// Base of the TPM's CRB window on the platform bus. Its node is the one EDK2's
    /// ArmVirtQemu looks for, `tcg,tpm-tis-mmio` (it translates the address through
    /// the platform bus's `ranges` and then tells CRB from TIS by the interface ID
    /// register); no OS reads this tree.
    pub tpm_crb: Option<u64>,
    /// `(base, size, INTID)` of the PL031, if the VM has one.
    pub rtc: Option<(u64, u64, u32)>,
}

// The firmware's TPM node gives the CRB window with the TIS node's size.
const _: () = assert!(crate::devices::TPM_CRB_SIZE == TPM_TIS_SIZE);

/// Register window of fw_cfg (data, selector, DMA address), as on QEMU `virt`.
pub use crate::devices::FW_CFG_SIZE;
impl FirmwareDevices {
    /// The flash banks and fw_cfg of a device list (`None` if it lacks one).
    pub fn from_devices(list: &[DeviceSpec]) -> Option<Self> {
        let find = |k: DeviceKind| list.iter().find(|d| d.kind == k);
        let bank = |b: u8| find(DeviceKind::Flash { bank: b }).map(|d| (d.base, d.size));
        Some(FirmwareDevices {
            flash: [bank(0)?, bank(1)?],
            fw_cfg: find(DeviceKind::FwCfg)?.base,
            tpm_crb: find(DeviceKind::TpmCrb).map(|d| d.base),
            rtc: find(DeviceKind::Pl031).and_then(|d| Some((d.base, d.size, d.irq?.intid))),
        })
    }

    /// The device-list entries these are.
    fn entries(&self) -> Vec<DeviceSpec> {
        let mut list = Vec::new();
        for (bank, (base, size)) in (0u8..).zip(self.flash) {
            list.push(entry(DeviceKind::Flash { bank }, base, size, None));
        }
        list.push(entry(DeviceKind::FwCfg, self.fw_cfg, FW_CFG_SIZE, None));
        if let Some((base, size, intid)) = self.rtc {
            list.push(entry(DeviceKind::Pl031, base, size, Some(level(intid))));
        }
        if let Some(base) = self.tpm_crb {
            list.push(entry(DeviceKind::TpmCrb, base, TPM_TIS_SIZE, None));
        }
        list
    }
}

fn entry(kind: DeviceKind, base: u64, size: u64, irq: Option<Irq>) -> DeviceSpec {
    DeviceSpec {
        kind,
        base,
        size,
        irq,
    }
}

fn level(intid: u32) -> Irq {
    Irq {
        intid,
        trigger: Trigger::Level,
    }
}

/// Bus width of a flash bank in bytes (two x16 devices).
pub const FLASH_BANK_WIDTH: u32 = 4;

/// One `cfi-flash` node with every bank of the list (in bank order), the
/// `qemu,fw-cfg-mmio` node and the PL031.
fn firmware_nodes(w: &mut FdtWriter, list: &[DeviceSpec]) -> Result<(), DtError> {
    let mut banks: Vec<(u8, u64, u64)> = list
        .iter()
        .filter_map(|d| match d.kind {
            DeviceKind::Flash { bank } => Some((bank, d.base, d.size)),
            _ => None,
        })
        .collect();
    banks.sort_unstable();
    if let Some(&(_, first, _)) = banks.first() {
        let n = w.begin_node(&format!("flash@{first:x}"))?;
        w.property_string("compatible", "cfi-flash")?;
        let reg: Vec<u64> = banks.iter().flat_map(|&(_, b, s)| [b, s]).collect();
        w.property_array_u64("reg", &reg)?;
        w.property_u32("bank-width", FLASH_BANK_WIDTH)?;
        w.end_node(n)?;
    }
    for d in list.iter().filter(|d| d.kind == DeviceKind::FwCfg) {
        let n = w.begin_node(&format!("fw-cfg@{:x}", d.base))?;
        w.property_string("compatible", "qemu,fw-cfg-mmio")?;
        w.property_array_u64("reg", &reg64(d.base, d.size))?;
        w.property_null("dma-coherent")?;
        w.end_node(n)?;
    }
    for d in list.iter().filter(|d| d.kind == DeviceKind::Pl031) {
        let n = w.begin_node(&format!("pl031@{:x}", d.base))?;
        w.property_string_list("compatible", strings(&["arm,pl031", "arm,primecell"]))?;
        w.property_array_u64("reg", &reg64(d.base, d.size))?;
        // Validated: a PL031 entry has its interrupt.
        if let Some(irq) = d.irq {
            w.property_array_u32("interrupts", &spi_of(irq))?;
        }
        w.property_u32("clocks", APB_PCLK_PHANDLE)?;
        w.property_string("clock-names", "apb_pclk")?;
        w.end_node(n)?;
    }
    Ok(())
}

/// The machine a device tree describes besides its devices.
#[derive(Debug, Clone, Copy)]
pub struct Machine<'a> {
    /// Number of vCPUs; vCPU `i` has MPIDR Aff0 = `i` (`reg = <i>`).
    pub vcpus: usize,
    pub ram_base: u64,
    pub ram_size: u64,
    pub bootargs: &'a str,
    /// `(start, end)` of the initrd, guest-physical, end exclusive.
    pub initrd: Option<(u64, u64)>,
    /// Value of `/chosen/rng-seed`.
    pub rng_seed: Option<[u8; 32]>,
}

/// Generates the DTB of machine `m` with the devices of `list`
/// (`crate::devices::device_list`): a node per entry, its `reg` and
/// `interrupts` from the entry's window and interrupt, after validating both.
/// Nodes come in the order QEMU `virt` writes them (which Linux's probe order
/// follows): framebuffer, firmware devices, platform bus, virtio-mmio transports
/// in list order, PL061 and its SPI bus, PCIe, PL011, GIC (with the v2m frame),
/// CPUs, timer, clock, `/chosen`.
pub fn device_tree(m: &Machine, list: &[DeviceSpec]) -> Result<Vec<u8>, DtError> {
    validate_machine(m)?;
    validate_devices(m, list)?;
    let kind = |k: DeviceKind| list.iter().filter(move |d| d.kind == k);
    let mut w = FdtWriter::new()?;
    let root = w.begin_node("")?;
    w.property_string("compatible", MACHINE_COMPATIBLE)?;
    w.property_string("model", MACHINE_MODEL)?;
    w.property_u32("#address-cells", 2)?;
    w.property_u32("#size-cells", 2)?;
    w.property_u32("interrupt-parent", GIC_PHANDLE)?;

    psci_node(&mut w)?;
    memory_node(&mut w, m)?;
    if let Some(fb) = crate::devices::framebuffer_of(list) {
        framebuffer_nodes(&mut w, &fb)?;
    }
    firmware_nodes(&mut w, list)?;
    if let Some(tpm) = kind(DeviceKind::TpmCrb).next() {
        platform_bus_node(&mut w, tpm)?;
    }
    for d in list {
        if let (DeviceKind::VirtioMmio { .. }, Some(irq)) = (d.kind, d.irq) {
            virtio_node(&mut w, d, irq)?;
        }
    }
    for d in kind(DeviceKind::Pl061Tpm) {
        if let Some(irq) = d.irq {
            pl061_node(&mut w, d, irq)?;
            spi_gpio_tpm_node(&mut w)?;
        }
    }
    let pcie = crate::devices::pcie_of(list);
    if let Some(p) = &pcie {
        pcie_node(&mut w, p)?;
    }
    let mut console = None;
    for d in kind(DeviceKind::Pl011) {
        if let Some(irq) = d.irq {
            pl011_node(&mut w, d, irq)?;
            console.get_or_insert(d.base);
        }
    }
    gic_node(&mut w, m.vcpus, pcie.as_ref().map(|p| &p.msi))?;
    cpus_node(&mut w, m.vcpus)?;
    timer_node(&mut w)?;
    clock_node(&mut w)?;
    chosen_node(&mut w, m, console.ok_or(DtError::NoConsole)?)?;

    w.end_node(root)?;
    Ok(w.finish()?)
}

/// Generates the DTB a Linux guest boots with, after validating `cfg`.
pub fn linux_dt(cfg: &GuestDtConfig) -> Result<Vec<u8>, DtError> {
    build_dt(cfg, None, &LinuxExtras::default())
}

/// What a `linux-dt` VM's device tree may have besides the base machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinuxExtras<'a> {
    /// The simple framebuffer (`crate::devices::simple_framebuffer`): a `no-map`
    /// region of reserved memory and a `simple-framebuffer` node on it.
    pub framebuffer: Option<&'a FramebufferSpec>,
    /// The PCI Express root complex and its GICv2m frame.
    pub pcie: Option<&'a crate::devices::PcieSpec>,
}

/// [`linux_dt`] with `extras`.
pub fn linux_dt_with(cfg: &GuestDtConfig, extras: &LinuxExtras) -> Result<Vec<u8>, DtError> {
    build_dt(cfg, None, extras)
}

/// Generates the DTB UEFI firmware finds at the start of guest RAM (as QEMU places
/// it for `-bios`): the Linux guest's machine plus the flash banks and fw_cfg of
/// `fw` (its TPM as the platform bus's `tcg,tpm-tis-mmio` node unless `cfg` already
/// has one). The firmware, not a kernel, reads it: `bootargs` is normally empty.
pub fn firmware_dt(cfg: &GuestDtConfig, fw: &FirmwareDevices) -> Result<Vec<u8>, DtError> {
    let cfg = GuestDtConfig {
        tpm_tis: cfg.tpm_tis.or(fw.tpm_crb),
        ..*cfg
    };
    let fw = FirmwareDevices {
        tpm_crb: None,
        ..*fw
    };
    build_dt(&cfg, Some(&fw), &LinuxExtras::default())
}

/// The device list a [`GuestDtConfig`] (with `fw` and `extras`) stands for, and
/// its machine: the PL011 of [`crate::guest`], its virtio transports in its
/// order, its TPM, the firmware's devices and the extras.
fn build_dt(
    cfg: &GuestDtConfig,
    fw: Option<&FirmwareDevices>,
    extras: &LinuxExtras,
) -> Result<Vec<u8>, DtError> {
    let m = Machine {
        vcpus: cfg.vcpus,
        ram_base: cfg.ram_base,
        ram_size: cfg.ram_size,
        bootargs: cfg.bootargs,
        initrd: cfg.initrd,
        rng_seed: cfg.rng_seed,
    };
    validate_machine(&m)?;
    let mut list = Vec::new();
    if let Some(fb) = extras.framebuffer {
        list.push(entry(
            DeviceKind::SimpleFramebuffer {
                width: fb.width,
                height: fb.height,
                stride: fb.stride,
            },
            fb.base,
            fb.reserved,
            None,
        ));
    }
    if let Some(fw) = fw {
        list.extend(fw.entries());
    }
    if let Some(base) = cfg.tpm_tis {
        list.push(entry(DeviceKind::TpmCrb, base, TPM_TIS_SIZE, None));
    }
    let window_end = VIRTIO_MMIO_BASE + VIRTIO_MMIO_SLOTS * VIRTIO_MMIO_STRIDE;
    for v in cfg.virtio_mmio {
        if !(VIRTIO_MMIO_BASE..window_end).contains(&v.base) {
            return Err(DtError::VirtioSlotInvalid { base: v.base });
        }
        let slot = (v.base - VIRTIO_MMIO_BASE) / VIRTIO_MMIO_STRIDE;
        let irq = Irq {
            intid: v.intid,
            trigger: Trigger::Edge,
        };
        let kind = DeviceKind::VirtioMmio {
            slot,
            device: crate::devices::virtio_device_in(slot),
        };
        list.push(entry(kind, v.base, VIRTIO_MMIO_SIZE, Some(irq)));
    }
    if let Some(base) = cfg.tpm_spi_gpio {
        let irq = level(SPI_BASE + PL061_SPI);
        list.push(entry(DeviceKind::Pl061Tpm, base, PL061_SIZE, Some(irq)));
    }
    if let Some(p) = extras.pcie {
        list.extend(crate::devices::pcie_entries(p));
    }
    let irq = level(SPI_BASE + PL011_SPI);
    list.push(entry(DeviceKind::Pl011, PL011_BASE, PL011_SIZE, Some(irq)));
    device_tree(&m, &list)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discover::{discover, PsciConduit, Range};
    use crate::guest::virtio_mmio_intid;
    use alloc::vec;
    use fdt::Fdt;

    /// QEMU `virt,gic-version=3,virtualization=on -smp 2 -m 1G`, dumped by QEMU.
    const QEMU_VIRT_DTB: &[u8] = include_bytes!("../testdata/qemu-virt-gicv3-2cpu.dtb");

    const MIB: u64 = 1 << 20;
    const SLOTS: [VirtioSlot; 2] = [
        VirtioSlot {
            base: VIRTIO_MMIO_BASE,
            intid: virtio_mmio_intid(0),
        },
        VirtioSlot {
            base: VIRTIO_MMIO_BASE + 3 * VIRTIO_MMIO_STRIDE,
            intid: virtio_mmio_intid(3),
        },
    ];

    fn config(vcpus: usize) -> GuestDtConfig<'static> {
        GuestDtConfig {
            vcpus,
            ram_base: RAM_BASE,
            ram_size: 512 * MIB,
            bootargs: "console=ttyAMA0 rayos.cmd=Zm9v",
            initrd: Some((0x4800_0000, 0x4812_3456)),
            virtio_mmio: &SLOTS,
            tpm_tis: None,
            tpm_spi_gpio: None,
            rng_seed: None,
        }
    }

    #[test]
    fn the_simple_framebuffer_is_reserved_ram_and_described() {
        let cfg = config(1);
        let fb = crate::devices::simple_framebuffer("rayos.fb=simple", cfg.ram_base, cfg.ram_size)
            .unwrap();
        let dtb = linux_dt_with(
            &cfg,
            &LinuxExtras {
                framebuffer: Some(&fb),
                ..Default::default()
            },
        )
        .unwrap();
        let fdt = Fdt::new(&dtb).unwrap();
        let node = fdt.find_compatible(&["simple-framebuffer"]).expect("node");
        let path = format!("/framebuffer@{:x}", fb.base);
        assert_eq!(node.name, &path[1..]);
        let c = |n| cells_of(&fdt, &path, n);
        assert_eq!(
            (c("width"), c("height"), c("stride")),
            (vec![640], vec![480], vec![2560])
        );
        assert_eq!(strs(&fdt, &path, "format"), ["x8r8g8b8"]);
        let reg = cells_of(&fdt, &path, "reg");
        let pair = |r: &[u32], i: usize| (u64::from(r[i]) << 32) | u64::from(r[i + 1]);
        assert_eq!((pair(&reg, 0), pair(&reg, 2)), (fb.base, 2560 * 480));
        let rpath = format!("/reserved-memory/framebuffer@{:x}", fb.base);
        let rreg = cells_of(&fdt, &rpath, "reg");
        assert_eq!((pair(&rreg, 0), pair(&rreg, 2)), (fb.base, fb.reserved));
        assert!(prop(&fdt, &rpath, "no-map").is_some());
        assert!(prop(&fdt, "/reserved-memory", "ranges").is_some());
        // Without it: neither node.
        let plain = linux_dt(&cfg).unwrap();
        let fdt = Fdt::new(&plain).unwrap();
        assert!(fdt.find_compatible(&["simple-framebuffer"]).is_none());
        assert!(fdt.find_node("/reserved-memory").is_none());
        // Outside RAM, over the initrd, or too small for its rows: refused.
        for bad in [
            FramebufferSpec {
                base: cfg.ram_base + cfg.ram_size - MIB,
                ..fb
            },
            FramebufferSpec {
                base: 0x4800_0000,
                ..fb
            },
            FramebufferSpec {
                reserved: 4096,
                ..fb
            },
            FramebufferSpec { stride: 100, ..fb },
            FramebufferSpec {
                base: u64::MAX - 4096,
                ..fb
            },
        ] {
            assert_eq!(
                linux_dt_with(
                    &cfg,
                    &LinuxExtras {
                        framebuffer: Some(&bad),
                        ..Default::default()
                    },
                ),
                Err(DtError::FramebufferInvalid { base: bad.base })
            );
        }
    }

    fn prop<'a>(fdt: &Fdt<'a>, path: &str, name: &str) -> Option<&'a [u8]> {
        Some(fdt.find_node(path)?.property(name)?.value)
    }

    fn cells(bytes: &[u8]) -> Vec<u32> {
        assert_eq!(bytes.len() % 4, 0, "property is not a cell array");
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    fn cells_of(fdt: &Fdt, path: &str, name: &str) -> Vec<u32> {
        cells(prop(fdt, path, name).unwrap_or_else(|| panic!("{path}:{name} missing")))
    }

    fn strs<'a>(fdt: &Fdt<'a>, path: &str, name: &str) -> Vec<&'a str> {
        let v = prop(fdt, path, name).unwrap_or_else(|| panic!("{path}:{name} missing"));
        let v = v.strip_suffix(&[0]).expect("string not NUL-terminated");
        v.split(|b| *b == 0)
            .map(|s| core::str::from_utf8(s).unwrap())
            .collect()
    }

    fn u64_of(fdt: &Fdt, path: &str, name: &str) -> u64 {
        let c = cells_of(fdt, path, name);
        assert_eq!(c.len(), 2, "{path}:{name} is not 64-bit");
        (u64::from(c[0]) << 32) | u64::from(c[1])
    }

    /// `reg` of a node under a 2-cell parent, as (base, size) pairs.
    fn reg2(fdt: &Fdt, path: &str) -> Vec<(u64, u64)> {
        cells_of(fdt, path, "reg")
            .chunks_exact(4)
            .map(|c| {
                (
                    (u64::from(c[0]) << 32) | u64::from(c[1]),
                    (u64::from(c[2]) << 32) | u64::from(c[3]),
                )
            })
            .collect()
    }

    fn be32_at(blob: &[u8], off: usize) -> u32 {
        u32::from_be_bytes(blob[off..off + 4].try_into().unwrap())
    }

    #[test]
    fn firmware_tree_adds_flash_fw_cfg_and_the_rtc_only() {
        use crate::guest::{
            FLASH0_BASE, FLASH1_BASE, FLASH_BANK_SIZE, FW_CFG_BASE, PL031_BASE, PL031_SIZE,
            PL031_SPI,
        };
        let fw = FirmwareDevices {
            flash: [(FLASH0_BASE, FLASH_BANK_SIZE), (FLASH1_BASE, 2 * MIB)],
            fw_cfg: FW_CFG_BASE,
            tpm_crb: None,
            rtc: Some((PL031_BASE, PL031_SIZE, SPI_BASE + PL031_SPI)),
        };
        let cfg = GuestDtConfig {
            bootargs: "",
            initrd: None,
            ..config(2)
        };
        let blob = firmware_dt(&cfg, &fw).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(strs(&fdt, "/flash@0", "compatible"), ["cfi-flash"]);
        assert_eq!(
            reg2(&fdt, "/flash@0"),
            [(0, 0x0400_0000), (0x0400_0000, 2 * MIB)]
        );
        assert_eq!(cells_of(&fdt, "/flash@0", "bank-width"), [4]);
        let fw_cfg = "/fw-cfg@9020000";
        assert_eq!(strs(&fdt, fw_cfg, "compatible"), ["qemu,fw-cfg-mmio"]);
        assert_eq!(reg2(&fdt, fw_cfg), [(0x0902_0000, 0x18)]);
        assert_eq!(prop(&fdt, fw_cfg, "dma-coherent"), Some(&[][..]));
        let rtc = "/pl031@9010000";
        assert_eq!(
            strs(&fdt, rtc, "compatible"),
            ["arm,pl031", "arm,primecell"]
        );
        assert_eq!(reg2(&fdt, rtc), [(0x0901_0000, 0x1000)]);
        assert_eq!(cells_of(&fdt, rtc, "interrupts"), [0, 2, 4]);
        // Everything else is the Linux tree's.
        let linux = linux_dt(&cfg).unwrap();
        let names = |b: &[u8]| -> Vec<String> {
            Fdt::new(b)
                .unwrap()
                .all_nodes()
                .map(|n| String::from(n.name))
                .collect()
        };
        let mut extra = names(&blob);
        for n in names(&linux) {
            let i = extra.iter().position(|e| *e == n).expect("node lost");
            extra.remove(i);
        }
        assert_eq!(extra, ["flash@0", "fw-cfg@9020000", "pl031@9010000"]);
    }

    /// The firmware's CRB TPM is the node EDK2's ArmVirtQemu looks for: a
    /// `tcg,tpm-tis-mmio` child of the platform bus whose one-cell `reg`, taken
    /// through the bus's `<child base, 2-cell parent base, size>` `ranges` as that
    /// firmware does (reg − child base + parent base), is the CRB window.
    #[test]
    fn firmware_tree_gives_edk2_the_crb_tpm_on_the_platform_bus() {
        use crate::devices::{TPM_CRB_BASE, TPM_CRB_SIZE};
        use crate::guest::{FLASH0_BASE, FLASH1_BASE, FLASH_BANK_SIZE, FW_CFG_BASE};
        let fw = FirmwareDevices {
            flash: [(FLASH0_BASE, FLASH_BANK_SIZE), (FLASH1_BASE, 2 * MIB)],
            fw_cfg: FW_CFG_BASE,
            tpm_crb: Some(TPM_CRB_BASE),
            rtc: None,
        };
        let blob = firmware_dt(&config(1), &fw).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let tpm = fdt.find_compatible(&["tcg,tpm-tis-mmio"]).unwrap();
        let reg = cells(tpm.property("reg").unwrap().value);
        let bus = fdt.find_node("/platform-bus@c000000").unwrap();
        let ranges = cells(bus.property("ranges").unwrap().value);
        // EDK2 accepts one translated range whose length is reg's plus two cells.
        assert_eq!(ranges.len(), reg.len() + 2);
        let parent = (u64::from(ranges[1]) << 32) | u64::from(ranges[2]);
        let base = u64::from(reg[0]) - u64::from(ranges[0]) + parent;
        assert_eq!((base, u64::from(reg[1])), (TPM_CRB_BASE, TPM_CRB_SIZE));
        assert_ne!(base, 0, "EDK2 takes a zero base for no TPM");
        // A TPM base off the platform bus is refused, as for the Linux tree.
        let off_bus = FirmwareDevices {
            tpm_crb: Some(PLATFORM_BUS_BASE - 0x1000),
            ..fw
        };
        assert!(matches!(
            firmware_dt(&config(1), &off_bus),
            Err(DtError::TpmOutsidePlatformBus { .. })
        ));
    }

    fn check_full_tree(vcpus: usize) {
        let blob = linux_dt(&config(vcpus)).unwrap();
        let fdt = Fdt::new(&blob).unwrap();

        // Root.
        assert_eq!(strs(&fdt, "/", "compatible"), ["linux,dummy-virt"]);
        assert_eq!(strs(&fdt, "/", "model"), ["linux,dummy-virt"]);
        assert_eq!(cells_of(&fdt, "/", "#address-cells"), [2]);
        assert_eq!(cells_of(&fdt, "/", "#size-cells"), [2]);
        assert_eq!(cells_of(&fdt, "/", "interrupt-parent"), [GIC_PHANDLE]);

        // Memory.
        assert_eq!(strs(&fdt, "/memory@40000000", "device_type"), ["memory"]);
        assert_eq!(reg2(&fdt, "/memory@40000000"), [(RAM_BASE, 512 * MIB)]);

        // CPUs.
        assert_eq!(cells_of(&fdt, "/cpus", "#address-cells"), [1]);
        assert_eq!(cells_of(&fdt, "/cpus", "#size-cells"), [0]);
        let cpus: Vec<_> = fdt.find_node("/cpus").unwrap().children().collect();
        assert_eq!(cpus.len(), vcpus);
        for (i, cpu) in cpus.iter().enumerate() {
            let path = format!("/cpus/cpu@{i:x}");
            assert_eq!(cpu.name, &path[6..]);
            assert_eq!(strs(&fdt, &path, "device_type"), ["cpu"]);
            assert_eq!(strs(&fdt, &path, "compatible"), ["arm,armv8"]);
            assert_eq!(cells_of(&fdt, &path, "reg"), [i as u32]);
            assert_eq!(strs(&fdt, &path, "enable-method"), ["psci"]);
        }

        // PSCI.
        assert_eq!(
            strs(&fdt, "/psci", "compatible"),
            ["arm,psci-1.0", "arm,psci-0.2", "arm,psci"]
        );
        assert_eq!(strs(&fdt, "/psci", "method"), ["hvc"]);
        assert_eq!(cells_of(&fdt, "/psci", "cpu_on"), [0xc400_0003]);
        assert_eq!(cells_of(&fdt, "/psci", "cpu_off"), [0x8400_0002]);
        assert_eq!(cells_of(&fdt, "/psci", "cpu_suspend"), [0xc400_0001]);
        assert_eq!(cells_of(&fdt, "/psci", "migrate"), [0xc400_0005]);

        // GIC.
        let gic = "/intc@8000000";
        assert_eq!(strs(&fdt, gic, "compatible"), ["arm,gic-v3"]);
        assert_eq!(cells_of(&fdt, gic, "#interrupt-cells"), [3]);
        assert_eq!(prop(&fdt, gic, "interrupt-controller"), Some(&[][..]));
        assert_eq!(
            reg2(&fdt, gic),
            [
                (0x0800_0000, 0x1_0000),
                (0x080a_0000, vcpus as u64 * 0x2_0000)
            ]
        );
        assert_eq!(cells_of(&fdt, gic, "#redistributor-regions"), [1]);
        assert_eq!(cells_of(&fdt, gic, "phandle"), [GIC_PHANDLE]);
        assert!(
            prop(&fdt, gic, "interrupts").is_none(),
            "no maintenance IRQ"
        );
        assert_eq!(fdt.find_node(gic).unwrap().children().count(), 0, "no ITS");
        assert!(fdt.find_compatible(&["arm,gic-v3-its"]).is_none());

        // Timer: secure phys PPI 13, phys PPI 14, virt PPI 11, hyp PPI 10, level-high.
        assert_eq!(strs(&fdt, "/timer", "compatible")[0], "arm,armv8-timer");
        assert_eq!(
            cells_of(&fdt, "/timer", "interrupts"),
            [1, 13, 4, 1, 14, 4, 1, 11, 4, 1, 10, 4]
        );
        assert_eq!(prop(&fdt, "/timer", "always-on"), Some(&[][..]));

        // Clock and UART.
        assert_eq!(strs(&fdt, "/apb-pclk", "compatible"), ["fixed-clock"]);
        assert_eq!(cells_of(&fdt, "/apb-pclk", "#clock-cells"), [0]);
        assert_eq!(cells_of(&fdt, "/apb-pclk", "clock-frequency"), [24_000_000]);
        assert_eq!(strs(&fdt, "/apb-pclk", "clock-output-names"), ["clk24mhz"]);
        let clk = cells_of(&fdt, "/apb-pclk", "phandle");
        assert_ne!(clk, [GIC_PHANDLE]);
        let uart = "/pl011@9000000";
        assert_eq!(
            strs(&fdt, uart, "compatible"),
            ["arm,pl011", "arm,primecell"]
        );
        assert_eq!(reg2(&fdt, uart), [(0x0900_0000, 0x1000)]);
        assert_eq!(cells_of(&fdt, uart, "interrupts"), [0, 1, 4]);
        assert_eq!(cells_of(&fdt, uart, "clocks"), [clk[0], clk[0]]);
        assert_eq!(strs(&fdt, uart, "clock-names"), ["uartclk", "apb_pclk"]);

        // Chosen.
        assert_eq!(
            strs(&fdt, "/chosen", "bootargs"),
            ["console=ttyAMA0 rayos.cmd=Zm9v"]
        );
        assert_eq!(strs(&fdt, "/chosen", "stdout-path"), ["/pl011@9000000"]);
        assert_eq!(u64_of(&fdt, "/chosen", "linux,initrd-start"), 0x4800_0000);
        assert_eq!(u64_of(&fdt, "/chosen", "linux,initrd-end"), 0x4812_3456);
        assert!(prop(&fdt, "/chosen", "rng-seed").is_none());
        assert_eq!(fdt.chosen().stdout().map(|n| n.name), Some("pl011@9000000"));

        // virtio-mmio: exactly the given slots, in order.
        let virtio: Vec<_> = fdt
            .all_nodes()
            .filter(|n| n.name.starts_with("virtio_mmio@"))
            .map(|n| n.name)
            .collect();
        assert_eq!(virtio, ["virtio_mmio@a000000", "virtio_mmio@a000600"]);
        for (path, base, spi) in [
            ("/virtio_mmio@a000000", 0x0a00_0000, 16),
            ("/virtio_mmio@a000600", 0x0a00_0600, 19),
        ] {
            assert_eq!(strs(&fdt, path, "compatible"), ["virtio,mmio"]);
            assert_eq!(reg2(&fdt, path), [(base, 0x200)]);
            assert_eq!(cells_of(&fdt, path, "interrupts"), [0, spi, 1]);
            assert_eq!(prop(&fdt, path, "dma-coherent"), Some(&[][..]));
        }

        // No TPM unless asked.
        assert!(fdt.find_compatible(&["tcg,tpm-tis-mmio"]).is_none());
    }

    #[test]
    fn one_vcpu_tree_has_every_node_and_property() {
        check_full_tree(1);
    }

    #[test]
    fn two_vcpu_tree_has_every_node_and_property() {
        check_full_tree(2);
    }

    #[test]
    fn gicr_region_and_cpu_nodes_follow_vcpus() {
        for vcpus in [1, 2, 3, 8, 16, 17, 64, MAX_VCPUS] {
            let blob = linux_dt(&config(vcpus)).unwrap();
            let fdt = Fdt::new(&blob).unwrap();
            assert_eq!(
                reg2(&fdt, "/intc@8000000")[1],
                (GICR_BASE, vcpus as u64 * GICR_STRIDE)
            );
            let regs: Vec<u32> = fdt
                .find_node("/cpus")
                .unwrap()
                .children()
                .map(|c| cells(c.property("reg").unwrap().value)[0])
                .collect();
            assert_eq!(regs, (0..vcpus as u32).collect::<Vec<_>>());
        }
        assert_eq!(MAX_VCPUS, 123);
        assert_eq!(
            reg2(
                &Fdt::new(&linux_dt(&config(MAX_VCPUS)).unwrap()).unwrap(),
                "/intc@8000000"
            )[1]
            .1,
            GICR_REGION_SIZE
        );
    }

    #[test]
    fn blob_is_a_valid_version_17_fdt() {
        let blob = linux_dt(&config(2)).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(be32_at(&blob, 0), 0xd00d_feed, "magic");
        assert_eq!(be32_at(&blob, 4) as usize, blob.len(), "totalsize");
        assert_eq!(fdt.total_size(), blob.len());
        assert_eq!(be32_at(&blob, 20), 17, "version");
        assert_eq!(be32_at(&blob, 24), 16, "last_comp_version");
        assert_eq!(be32_at(&blob, 28), 0, "boot_cpuid_phys");
        let (off_struct, off_strings) = (be32_at(&blob, 8), be32_at(&blob, 12));
        let (size_strings, size_struct) = (be32_at(&blob, 32), be32_at(&blob, 36));
        assert_eq!(off_struct + size_struct, off_strings);
        assert_eq!((off_strings + size_strings) as usize, blob.len());
        assert_eq!(fdt.memory_reservations().count(), 0);
        // Every phandle is unique.
        let mut phandles: Vec<u32> = fdt
            .all_nodes()
            .filter_map(|n| n.property("phandle"))
            .map(|p| cells(p.value)[0])
            .collect();
        let n = phandles.len();
        phandles.sort_unstable();
        phandles.dedup();
        assert_eq!((n, phandles.len()), (2, 2));
    }

    #[test]
    fn hypervisor_discovery_reads_back_the_guest_platform() {
        let blob = linux_dt(&config(2)).unwrap();
        let p = discover(&blob).unwrap();
        assert_eq!(p.board.map(|b| b.name), Some("qemu-virt"));
        assert_eq!(
            p.memory,
            [Range {
                base: RAM_BASE,
                size: 512 * MIB
            }]
        );
        assert_eq!(
            p.uart,
            Some(crate::Uart {
                kind: crate::UartKind::Pl011,
                regs: Range {
                    base: PL011_BASE,
                    size: PL011_SIZE
                },
                intid: Some(SPI_BASE + PL011_SPI)
            })
        );
        assert_eq!(
            p.gic.gicd,
            Range {
                base: GICD_BASE,
                size: GICD_SIZE
            }
        );
        assert_eq!(
            p.gic.gicr,
            [Range {
                base: GICR_BASE,
                size: 2 * GICR_STRIDE
            }]
        );
        assert_eq!(p.gic.maintenance_intid, None);
        assert_eq!(
            [
                p.timer.phys_secure,
                p.timer.phys_nonsecure,
                p.timer.virt,
                p.timer.hyp
            ],
            [STIMER_INTID, PTIMER_INTID, VTIMER_INTID, HTIMER_INTID]
        );
        assert_eq!(p.cpus, [0, 1]);
        assert_eq!(p.psci, Some(PsciConduit::Hvc));
        assert_eq!(
            p.initrd,
            Some(Range {
                base: 0x4800_0000,
                size: 0x12_3456
            })
        );
        assert_eq!(
            p.bootargs.as_deref(),
            Some("console=ttyAMA0 rayos.cmd=Zm9v")
        );
    }

    /// Node paths (depth-first) of a tree.
    fn paths(fdt: &Fdt) -> Vec<String> {
        fn walk(node: fdt::node::FdtNode, prefix: &str, out: &mut Vec<String>) {
            for child in node.children() {
                let path = format!("{prefix}/{}", child.name);
                out.push(path.clone());
                walk(child, &path, out);
            }
        }
        let mut out = vec![String::from("/")];
        walk(fdt.find_node("/").unwrap(), "", &mut out);
        out
    }

    #[test]
    fn structure_matches_qemu_virt() {
        // QEMU's own tree: 2 CPUs, GICv3, virtualization=on (so a maintenance IRQ and
        // "smc" PSCI), 1 GiB RAM, 32 virtio-mmio slots, an ITS.
        let qemu = Fdt::new(QEMU_VIRT_DTB).unwrap();
        let cfg = GuestDtConfig {
            virtio_mmio: &[VirtioSlot {
                base: VIRTIO_MMIO_BASE,
                intid: virtio_mmio_intid(0),
            }],
            ram_size: 1 << 30,
            ..config(2)
        };
        let blob = linux_dt(&cfg).unwrap();
        let ours = Fdt::new(&blob).unwrap();

        // Every node we generate is one QEMU has at the same path.
        let qemu_paths = paths(&qemu);
        for path in paths(&ours) {
            assert!(qemu_paths.contains(&path), "{path} not in QEMU's tree");
        }

        // Properties both trees have agree, except the deliberate differences.
        let differ = [
            ("/", "interrupt-parent"),     // phandle numbering
            ("/psci", "method"),           // EL2 present in the dump
            ("/intc@8000000", "reg"),      // GICR sized to the vCPUs
            ("/intc@8000000", "phandle"),  // phandle numbering
            ("/apb-pclk", "phandle"),      // phandle numbering
            ("/pl011@9000000", "clocks"),  // phandle numbering
            ("/chosen", "bootargs"),       // per VM
            ("/timer", "interrupts"),      // checked below
            ("/cpus/cpu@0", "compatible"), // -cpu cortex-a57 there
            ("/cpus/cpu@1", "compatible"), //
        ];
        let mut compared = 0;
        for path in paths(&ours) {
            let node = ours.find_node(&path).unwrap();
            let Some(qnode) = qemu.find_node(&path) else {
                continue;
            };
            for p in node.properties() {
                if differ.contains(&(path.as_str(), p.name)) {
                    continue;
                }
                if let Some(q) = qnode.property(p.name) {
                    assert_eq!(p.value, q.value, "{path}:{}", p.name);
                    compared += 1;
                }
            }
        }
        assert!(compared >= 40, "only {compared} properties compared");

        // Intended differences, each checked against QEMU.
        assert_eq!(strs(&qemu, "/psci", "method"), ["smc"]);
        assert_eq!(
            reg2(&qemu, "/intc@8000000"),
            [(GICD_BASE, GICD_SIZE), (GICR_BASE, GICR_REGION_SIZE)]
        );
        assert_eq!(
            cells_of(&qemu, "/timer", "interrupts"),
            cells_of(&ours, "/timer", "interrupts")
        );
        assert!(prop(&qemu, "/intc@8000000", "interrupts").is_some());
        let qclk = cells_of(&qemu, "/apb-pclk", "phandle")[0];
        assert_eq!(cells_of(&qemu, "/pl011@9000000", "clocks"), [qclk, qclk]);
    }

    #[test]
    fn tpm_sits_on_the_platform_bus_as_on_qemu() {
        for (base, name) in [
            (PLATFORM_BUS_BASE, "tpm_tis@0"),
            (PLATFORM_BUS_BASE + 0x1000, "tpm_tis@1000"),
        ] {
            let cfg = GuestDtConfig {
                tpm_tis: Some(base),
                ..config(1)
            };
            let blob = linux_dt(&cfg).unwrap();
            let fdt = Fdt::new(&blob).unwrap();
            let bus = "/platform-bus@c000000";
            assert_eq!(
                strs(&fdt, bus, "compatible"),
                ["qemu,platform", "simple-bus"]
            );
            assert_eq!(cells_of(&fdt, bus, "#address-cells"), [1]);
            assert_eq!(cells_of(&fdt, bus, "#size-cells"), [1]);
            assert_eq!(
                cells_of(&fdt, bus, "ranges"),
                [0, 0, 0x0c00_0000, 0x0200_0000]
            );
            assert_eq!(cells_of(&fdt, bus, "interrupt-parent"), [GIC_PHANDLE]);
            let tpm = fdt.find_compatible(&["tcg,tpm-tis-mmio"]).unwrap();
            assert_eq!(tpm.name, name);
            let off = (base - PLATFORM_BUS_BASE) as u32;
            assert_eq!(cells(tpm.property("reg").unwrap().value), [off, 0x5000]);
            // Translated through the bus, the window is where the device lives.
            let r = tpm.reg().unwrap().next().unwrap();
            assert_eq!(
                (base, r.size),
                (PLATFORM_BUS_BASE + r.starting_address as u64, Some(0x5000))
            );
        }
        // Without a TPM there is no platform bus node.
        let fdt_blob = linux_dt(&config(1)).unwrap();
        let fdt = Fdt::new(&fdt_blob).unwrap();
        assert!(fdt.find_node("/platform-bus@c000000").is_none());
    }

    #[test]
    fn spi_gpio_tpm_matches_qemu_pl061_and_the_spi_gpio_binding() {
        use crate::guest::PL061_BASE;
        let cfg = GuestDtConfig {
            tpm_spi_gpio: Some(PL061_BASE),
            ..config(1)
        };
        let blob = linux_dt(&cfg).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        let qemu = Fdt::new(QEMU_VIRT_DTB).unwrap();

        // The PL061 node is QEMU's, property for property (phandles aside).
        let path = "/pl061@9030000";
        let ours = fdt.find_node(path).unwrap();
        let theirs = qemu.find_node(path).unwrap();
        let mut names: Vec<&str> = ours.properties().map(|p| p.name).collect();
        let mut qnames: Vec<&str> = theirs.properties().map(|p| p.name).collect();
        names.sort_unstable();
        qnames.sort_unstable();
        assert_eq!(names, qnames);
        for p in ours.properties() {
            if !matches!(p.name, "phandle" | "clocks") {
                assert_eq!(
                    Some(p.value),
                    prop(&qemu, path, p.name),
                    "{path}:{}",
                    p.name
                );
            }
        }
        assert_eq!(cells_of(&fdt, path, "phandle"), [PL061_PHANDLE]);
        assert_eq!(
            cells_of(&fdt, path, "clocks"),
            cells_of(&fdt, "/apb-pclk", "phandle")
        );
        assert_eq!(cells_of(&fdt, path, "interrupts"), [0, 7, 4]);

        // The bus: four GPIOs on the PL061, chip select active low.
        let spi = "/spi";
        assert_eq!(strs(&fdt, spi, "compatible"), ["spi-gpio"]);
        assert_eq!(cells_of(&fdt, spi, "#address-cells"), [1]);
        assert_eq!(cells_of(&fdt, spi, "#size-cells"), [0]);
        assert_eq!(cells_of(&fdt, spi, "num-chipselects"), [1]);
        let pins = [
            ("sck-gpios", TPM_SPI_SCK_PIN, 0),
            ("mosi-gpios", TPM_SPI_MOSI_PIN, 0),
            ("miso-gpios", TPM_SPI_MISO_PIN, 0),
            ("cs-gpios", TPM_SPI_CS_PIN, 1),
        ];
        let mut used = Vec::new();
        for (name, pin, flags) in pins {
            assert_eq!(
                cells_of(&fdt, spi, name),
                [PL061_PHANDLE, u32::from(pin), flags],
                "{name}"
            );
            assert!(pin < 8);
            used.push(pin);
        }
        used.sort_unstable();
        used.dedup();
        assert_eq!(used.len(), 4, "pins are distinct");

        // The TPM on chip select 0.
        let tpm = fdt.find_compatible(&["tcg,tpm_tis-spi"]).unwrap();
        assert_eq!(tpm.name, "tpm@0");
        assert_eq!(cells_of(&fdt, "/spi/tpm@0", "reg"), [0]);
        assert_eq!(
            cells_of(&fdt, "/spi/tpm@0", "spi-max-frequency"),
            [1_000_000]
        );

        // Three unique phandles now.
        let mut ph: Vec<u32> = fdt
            .all_nodes()
            .filter_map(|n| n.property("phandle"))
            .map(|p| cells(p.value)[0])
            .collect();
        ph.sort_unstable();
        ph.dedup();
        assert_eq!(ph.len(), 3);

        // Without the option: neither node.
        let blob = linux_dt(&config(1)).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        assert!(fdt.find_node(path).is_none());
        assert!(fdt.find_compatible(&["spi-gpio"]).is_none());
    }

    #[test]
    fn optional_chosen_properties() {
        let seed: [u8; 32] = core::array::from_fn(|i| (i * 7 + 1) as u8);
        let cfg = GuestDtConfig {
            rng_seed: Some(seed),
            initrd: None,
            virtio_mmio: &[],
            ..config(1)
        };
        let blob = linux_dt(&cfg).unwrap();
        let fdt = Fdt::new(&blob).unwrap();
        assert_eq!(prop(&fdt, "/chosen", "rng-seed"), Some(&seed[..]));
        assert!(prop(&fdt, "/chosen", "linux,initrd-start").is_none());
        assert!(prop(&fdt, "/chosen", "linux,initrd-end").is_none());
        assert!(fdt.find_compatible(&["virtio,mmio"]).is_none());
    }

    #[test]
    fn invalid_configs_are_refused() {
        let base = config(2);
        let bad_slot = [VirtioSlot {
            base: VIRTIO_MMIO_BASE + 0x100,
            intid: 48,
        }];
        let past_window = [VirtioSlot {
            base: VIRTIO_MMIO_BASE + VIRTIO_MMIO_SLOTS * VIRTIO_MMIO_STRIDE,
            intid: 48,
        }];
        let dup = [SLOTS[0], SLOTS[1], SLOTS[0]];
        let ppi_slot = [VirtioSlot {
            base: VIRTIO_MMIO_BASE,
            intid: 27,
        }];
        let special_slot = [VirtioSlot {
            base: VIRTIO_MMIO_BASE,
            intid: 1020,
        }];
        let ram_end = RAM_BASE + 512 * MIB;
        let cases: Vec<(GuestDtConfig, DtError)> = vec![
            (GuestDtConfig { vcpus: 0, ..base }, DtError::VcpuCount(0)),
            (
                GuestDtConfig { vcpus: 124, ..base },
                DtError::VcpuCount(124),
            ),
            (
                GuestDtConfig {
                    ram_size: 0,
                    ..base
                },
                DtError::EmptyRam,
            ),
            (
                GuestDtConfig {
                    ram_base: PCIE_ECAM,
                    ..base
                },
                DtError::RamOverlapsDevices { base: PCIE_ECAM },
            ),
            (
                GuestDtConfig {
                    ram_base: u64::MAX - MIB,
                    initrd: None,
                    ..base
                },
                DtError::RamOverflow,
            ),
            (
                GuestDtConfig {
                    initrd: Some((0x4800_0000, 0x4800_0000)),
                    ..base
                },
                DtError::InitrdInvalid {
                    start: 0x4800_0000,
                    end: 0x4800_0000,
                },
            ),
            (
                GuestDtConfig {
                    initrd: Some((0x3fff_f000, 0x4000_1000)),
                    ..base
                },
                DtError::InitrdOutsideRam {
                    start: 0x3fff_f000,
                    end: 0x4000_1000,
                },
            ),
            (
                GuestDtConfig {
                    initrd: Some((ram_end - 0x1000, ram_end + 1)),
                    ..base
                },
                DtError::InitrdOutsideRam {
                    start: ram_end - 0x1000,
                    end: ram_end + 1,
                },
            ),
            (
                GuestDtConfig {
                    virtio_mmio: &bad_slot,
                    ..base
                },
                DtError::VirtioSlotInvalid {
                    base: VIRTIO_MMIO_BASE + 0x100,
                },
            ),
            (
                GuestDtConfig {
                    virtio_mmio: &past_window,
                    ..base
                },
                DtError::VirtioSlotInvalid {
                    base: past_window[0].base,
                },
            ),
            (
                GuestDtConfig {
                    virtio_mmio: &dup,
                    ..base
                },
                DtError::VirtioSlotDuplicate {
                    base: VIRTIO_MMIO_BASE,
                },
            ),
            (
                GuestDtConfig {
                    virtio_mmio: &ppi_slot,
                    ..base
                },
                DtError::VirtioIntidInvalid {
                    base: VIRTIO_MMIO_BASE,
                    intid: 27,
                },
            ),
            (
                GuestDtConfig {
                    virtio_mmio: &special_slot,
                    ..base
                },
                DtError::VirtioIntidInvalid {
                    base: VIRTIO_MMIO_BASE,
                    intid: 1020,
                },
            ),
            (
                GuestDtConfig {
                    tpm_tis: Some(PLATFORM_BUS_BASE - 0x1000),
                    ..base
                },
                DtError::TpmOutsidePlatformBus {
                    base: PLATFORM_BUS_BASE - 0x1000,
                },
            ),
            (
                GuestDtConfig {
                    tpm_tis: Some(PLATFORM_BUS_BASE + PLATFORM_BUS_SIZE - 0x4000),
                    ..base
                },
                DtError::TpmOutsidePlatformBus {
                    base: PLATFORM_BUS_BASE + PLATFORM_BUS_SIZE - 0x4000,
                },
            ),
            (
                GuestDtConfig {
                    tpm_tis: Some(u64::MAX - 0x1000),
                    ..base
                },
                DtError::TpmOutsidePlatformBus {
                    base: u64::MAX - 0x1000,
                },
            ),
            (
                GuestDtConfig {
                    bootargs: "quiet\0evil",
                    ..base
                },
                DtError::BootargsNul,
            ),
        ];
        let mut cases = cases;
        for bad in [
            crate::guest::PL061_BASE + 4,
            PL011_BASE,
            GICD_BASE + 0x1000,
            VIRTIO_MMIO_BASE,
            PLATFORM_BUS_BASE,
            RAM_BASE,
            RAM_BASE - 0x800,
            !0xfff,
        ] {
            cases.push((
                GuestDtConfig {
                    tpm_spi_gpio: Some(bad),
                    ..base
                },
                DtError::GpioBaseInvalid { base: bad },
            ));
        }
        for (cfg, err) in cases {
            assert_eq!(linux_dt(&cfg), Err(err));
        }
        // The edges of each range are accepted.
        let edge = [VirtioSlot {
            base: VIRTIO_MMIO_BASE + (VIRTIO_MMIO_SLOTS - 1) * VIRTIO_MMIO_STRIDE,
            intid: MAX_SPI_INTID,
        }];
        let ok = GuestDtConfig {
            initrd: Some((RAM_BASE, ram_end)),
            virtio_mmio: &edge,
            tpm_tis: Some(PLATFORM_BUS_BASE + PLATFORM_BUS_SIZE - TPM_TIS_SIZE),
            tpm_spi_gpio: Some(crate::guest::PL061_BASE),
            ..base
        };
        assert!(linux_dt(&ok).is_ok());
    }

    const PCIE_ECAM: u64 = crate::guest::PCIE_ECAM_BASE;

    #[test]
    fn pcie_root_complex_and_v2m_frame_as_qemu_describes_them() {
        let p = crate::devices::pcie();
        let blob = linux_dt_with(
            &config(2),
            &LinuxExtras {
                pcie: Some(&p),
                ..Default::default()
            },
        )
        .unwrap();
        let ours = Fdt::new(&blob).unwrap();
        let qemu = Fdt::new(QEMU_VIRT_DTB).unwrap();
        let node = "/pcie@10000000";
        // Properties QEMU's `virt` has with the same value.
        for name in [
            "compatible",
            "device_type",
            "#address-cells",
            "#size-cells",
            "#interrupt-cells",
            "interrupt-map-mask",
            "linux,pci-domain",
            "dma-coherent",
        ] {
            assert_eq!(prop(&ours, node, name), prop(&qemu, node, name), "{name}");
        }
        // The swizzle: QEMU's map with its GIC phandle, ours with ours.
        let qgic = cells_of(&qemu, "/intc@8000000", "phandle")[0];
        let qmap: Vec<u32> = cells_of(&qemu, node, "interrupt-map")
            .into_iter()
            .map(|c| if c == qgic { GIC_PHANDLE } else { c })
            .collect();
        assert_eq!(cells_of(&ours, node, "interrupt-map"), qmap);
        // The I/O and 32-bit memory ranges are QEMU's first two; no 64-bit window.
        let qranges = cells_of(&qemu, node, "ranges");
        assert_eq!(cells_of(&ours, node, "ranges"), qranges[..14]);
        // Low ECAM (QEMU's dump has the high one): 16 buses at 0x3f000000.
        assert_eq!(reg2(&ours, node), [(0x3f00_0000, 0x100_0000)]);
        assert_eq!(cells_of(&ours, node, "bus-range"), [0, 15]);
        // MSIs go to the v2m frame under the GIC.
        assert_eq!(cells_of(&ours, node, "msi-parent"), [V2M_PHANDLE]);
        let v2m = "/intc@8000000/v2m@8020000";
        assert_eq!(strs(&ours, v2m, "compatible"), ["arm,gic-v2m-frame"]);
        assert_eq!(prop(&ours, v2m, "msi-controller"), Some(&[][..]));
        assert_eq!(reg2(&ours, v2m), [(0x0802_0000, 0x1000)]);
        assert_eq!(cells_of(&ours, v2m, "phandle"), [V2M_PHANDLE]);
        // The tree without PCIe has neither.
        let plain = linux_dt(&config(2)).unwrap();
        let plain = Fdt::new(&plain).unwrap();
        assert!(plain.find_node(node).is_none());
        assert!(plain.find_node(v2m).is_none());
    }

    /// With the ITS as MSI controller: its node under the GIC as QEMU's `virt`
    /// has it, and the root complex's `msi-map` sends requester ID r to DeviceID r.
    #[test]
    fn pcie_with_the_its_as_qemu_describes_it() {
        let p = crate::devices::pcie_with(crate::devices::Msi::Its);
        let blob = linux_dt_with(
            &config(2),
            &LinuxExtras {
                pcie: Some(&p),
                ..Default::default()
            },
        )
        .unwrap();
        let ours = Fdt::new(&blob).unwrap();
        let qemu = Fdt::new(QEMU_VIRT_DTB).unwrap();
        let its = "/intc@8000000/its@8080000";
        for name in ["compatible", "#msi-cells", "msi-controller", "reg"] {
            assert_eq!(prop(&ours, its, name), prop(&qemu, its, name), "{name}");
        }
        assert_eq!(cells_of(&ours, its, "phandle"), [ITS_PHANDLE]);
        let node = "/pcie@10000000";
        let qits = cells_of(&qemu, its, "phandle")[0];
        let qmap: Vec<u32> = cells_of(&qemu, node, "msi-map")
            .into_iter()
            .map(|c| if c == qits { ITS_PHANDLE } else { c })
            .collect();
        assert_eq!(cells_of(&ours, node, "msi-map"), qmap);
        assert_eq!(qmap, [0, ITS_PHANDLE, 0, 0x1_0000]);
        assert!(prop(&ours, node, "msi-parent").is_none());
        assert!(ours.find_node("/intc@8000000/v2m@8020000").is_none());
        // Both MSI controllers in one list: refused.
        let mut list = crate::devices::device_list(
            crate::devices::Profile::LinuxDt,
            &crate::devices::VmDevices {
                pcie: true,
                virtio_slots: &[0],
                ..Default::default()
            },
        );
        list.extend(
            crate::devices::pcie_entries(&p)
                .into_iter()
                .filter(|d| d.kind == DeviceKind::GicIts),
        );
        let m = Machine {
            vcpus: 2,
            ram_base: RAM_BASE,
            ram_size: 512 * MIB,
            bootargs: "",
            initrd: None,
            rng_seed: None,
        };
        assert!(device_tree(&m, &list[..list.len() - 1]).is_ok());
        assert!(device_tree(&m, &list).is_err());
    }
}
