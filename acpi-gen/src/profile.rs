//! The `uefi-acpi` profile's configuration from the guest platform map
//! (`boards::guest`, QEMU `virt`'s layout). Values the map does not define yet are
//! QEMU `virt`'s and named here.

use alloc::vec::Vec;

use boards::guest;

use crate::config::{
    IrqDevice, MmioRegion, MsiFrame, PcieConfig, PlatformConfig, Redistributors, Timers, Topology,
    Trigger,
};

/// PL031 window and SPI (QEMU `virt`: 0x0901_0000, SPI 2).
pub const PL031_SIZE: u64 = guest::PL031_SIZE;
pub const PL031_SPI: u32 = guest::PL031_SPI;
/// The power button's Generic Event Device SPI (QEMU `virt`: SPI 9).
pub const GED_SPI: u32 = 9;
/// The CRB TPM at the start of the platform bus; five 4 KiB locality pages.
pub use boards::devices::{TPM_CRB_BASE, TPM_CRB_SIZE};
/// Table header OEM identification.
pub const OEM_ID: [u8; 6] = *b"RAYOS ";
pub const OEM_TABLE_ID: [u8; 8] = *b"RAYOSEL2";

/// The MPIDR affinity the hypervisor gives vCPU `i` (Aff0 = i; el2's VMPIDR also
/// sets the RES1 bit 31, which the MADT leaves out).
pub fn vcpu_affinity(i: u32) -> u64 {
    u64::from(i)
}

/// The `uefi-acpi` platform with `vcpus` vCPUs in `topology` (flat when `None`) and
/// `virtio_slots` virtio-mmio transports.
pub fn uefi_acpi(vcpus: u32, topology: Option<Topology>, virtio_slots: &[u64]) -> PlatformConfig {
    let virtio_mmio = virtio_slots
        .iter()
        .map(|&n| IrqDevice {
            region: MmioRegion {
                base: guest::VIRTIO_MMIO_BASE + n * guest::VIRTIO_MMIO_STRIDE,
                size: guest::VIRTIO_MMIO_STRIDE,
            },
            gsiv: guest::virtio_mmio_intid(n),
            trigger: Trigger::Edge,
        })
        .collect();
    PlatformConfig {
        oem_id: OEM_ID,
        oem_table_id: OEM_TABLE_ID,
        oem_revision: 1,
        mpidrs: (0..vcpus).map(vcpu_affinity).collect::<Vec<_>>(),
        topology: topology.unwrap_or(Topology::flat(vcpus)),
        gicd_base: guest::GICD_BASE,
        gicr_base: guest::GICR_BASE,
        gicr_stride: guest::GICR_STRIDE,
        // The vGIC's redistributors are always powered: one GICR region, as QEMU
        // `virt` describes them.
        redistributors: Redistributors::Region,
        timers: Timers {
            secure_el1: guest::STIMER_INTID,
            nonsecure_el1: guest::PTIMER_INTID,
            virtual_el1: guest::VTIMER_INTID,
            nonsecure_el2: guest::HTIMER_INTID,
        },
        uart: IrqDevice {
            region: MmioRegion {
                base: guest::PL011_BASE,
                size: guest::PL011_SIZE,
            },
            gsiv: guest::SPI_BASE + guest::PL011_SPI,
            trigger: Trigger::Level,
        },
        rtc: Some(IrqDevice {
            region: MmioRegion {
                base: guest::PL031_BASE,
                size: PL031_SIZE,
            },
            gsiv: guest::SPI_BASE + PL031_SPI,
            trigger: Trigger::Level,
        }),
        tpm_crb: Some(MmioRegion {
            base: TPM_CRB_BASE,
            size: TPM_CRB_SIZE,
        }),
        virtio_mmio,
        power_button_gsiv: Some(guest::SPI_BASE + GED_SPI),
        pcie: None,
    }
}

/// The tables' view of a VM's root complex (`boards::devices::pcie`) and its
/// MSI controller: the GICv2m frame or the ITS.
pub fn pcie(spec: &boards::devices::PcieSpec) -> PcieConfig {
    let r = |w: boards::devices::Window| MmioRegion {
        base: w.base,
        size: w.size,
    };
    PcieConfig {
        ecam: r(spec.ecam),
        mmio32: r(spec.mmio32),
        pio: r(spec.pio),
        intx_first_gsiv: spec.intx_first_intid,
        msi_frame: spec.v2m().map(|v2m| MsiFrame {
            base: v2m.frame.base,
            first_spi: v2m.first_intid,
            spi_count: v2m.count,
        }),
        its_base: spec.its().map(|w| w.base),
    }
}

/// The `uefi-acpi` platform of a VM whose devices are `devices`
/// (`boards::devices::device_list`): the console, the RTC, the virtio-mmio
/// transports, the CRB TPM (`MSFT0101` in the DSDT and the TPM2 table, when the
/// list has one) and the PCI Express root complex with its GICv2m frame (MCFG,
/// the MADT's GIC MSI Frame, `PCI0` in the DSDT, when the list has one) come
/// from the list, and so would a power button once the list has
/// one (it does not yet: the tables then describe none). `None` if the list has no
/// PL011.
pub fn from_devices(
    vcpus: u32,
    topology: Option<Topology>,
    devices: &[boards::devices::DeviceSpec],
) -> Option<PlatformConfig> {
    use boards::devices::{DeviceKind, Trigger as DevTrigger};
    let irq_device = |d: &boards::devices::DeviceSpec| {
        let irq = d.irq?;
        Some(IrqDevice {
            region: MmioRegion {
                base: d.base,
                size: d.size,
            },
            gsiv: irq.intid,
            trigger: match irq.trigger {
                DevTrigger::Level => Trigger::Level,
                DevTrigger::Edge => Trigger::Edge,
            },
        })
    };
    let uart = devices
        .iter()
        .find(|d| d.kind == DeviceKind::Pl011)
        .and_then(irq_device)?;
    let rtc = devices
        .iter()
        .find(|d| d.kind == DeviceKind::Pl031)
        .and_then(irq_device);
    let virtio_mmio = devices
        .iter()
        .filter(|d| matches!(d.kind, DeviceKind::VirtioMmio { .. }))
        .filter_map(irq_device)
        .collect();
    let tpm_crb = devices
        .iter()
        .find(|d| d.kind == DeviceKind::TpmCrb)
        .map(|d| MmioRegion {
            base: d.base,
            size: d.size,
        });
    Some(PlatformConfig {
        uart,
        virtio_mmio,
        rtc,
        tpm_crb,
        power_button_gsiv: None,
        pcie: boards::devices::pcie_of(devices).map(|p| pcie(&p)),
        ..uefi_acpi(vcpus, topology, &[])
    })
}
