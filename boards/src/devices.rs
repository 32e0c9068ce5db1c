//! One description of a VM's devices (docs/architecture.md, "Describing a VM's
//! devices once", step 1): [`device_list`] is where the MMIO windows and SPIs of a
//! profile's devices are chosen (from the constants of [`crate::guest`]); the
//! ACPI tables (`acpi_gen::PlatformConfig::from_devices`) are generated from it,
//! and host tests check that the device tree and the ACPI tables describe exactly
//! its entries. The device-tree generator and el2's bus still spell their devices
//! out; switching them to walk the list is the design's next step.

use alloc::vec::Vec;

use crate::guest;

/// The guest platforms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// A kernel booted with a device tree.
    LinuxDt,
    /// UEFI firmware in flash, ACPI tables through fw_cfg.
    UefiAcpi,
}

/// How an interrupt line signals (active high).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Level,
    Edge,
}

/// A device's interrupt: an SPI as a GIC INTID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Irq {
    pub intid: u32,
    pub trigger: Trigger,
}

/// What a device is (the models the hypervisor has).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceKind {
    /// The PL011 console.
    Pl011,
    /// The PL031 real-time clock (the host's time plus the VM's offset).
    Pl031,
    /// The PL061 GPIO controller carrying the TPM's bit-banged SPI bus.
    Pl061Tpm,
    /// A virtio-mmio transport in `slot` (only the slots with a device).
    VirtioMmio { slot: u64 },
    /// QEMU's fw_cfg.
    FwCfg,
    /// CFI flash bank 0 (firmware code, read-only) or 1 (variable store).
    Flash { bank: u8 },
}

/// One device: what it is, its MMIO window and its interrupt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceSpec {
    pub kind: DeviceKind,
    pub base: u64,
    pub size: u64,
    pub irq: Option<Irq>,
}

/// What varies between VMs of one profile.
#[derive(Debug, Clone, Copy)]
pub struct VmDevices<'a> {
    /// The virtio-mmio slots that hold a device.
    pub virtio_slots: &'a [u64],
    /// The TPM on the PL061's bit-banged SPI bus (`linux-dt` only).
    pub tpm_spi_gpio: bool,
    /// Size of the variable-store flash bank (`uefi-acpi`).
    pub vars_bank_size: u64,
}

/// fw_cfg's register window (data, selector, DMA address).
pub const FW_CFG_SIZE: u64 = 0x18;

/// The devices of a `profile` VM, in address order.
pub fn device_list(profile: Profile, vm: &VmDevices) -> Vec<DeviceSpec> {
    let mut list = Vec::new();
    if profile == Profile::UefiAcpi {
        list.push(DeviceSpec {
            kind: DeviceKind::Flash { bank: 0 },
            base: guest::FLASH0_BASE,
            size: guest::FLASH_BANK_SIZE,
            irq: None,
        });
        list.push(DeviceSpec {
            kind: DeviceKind::Flash { bank: 1 },
            base: guest::FLASH1_BASE,
            size: vm.vars_bank_size,
            irq: None,
        });
    }
    list.push(DeviceSpec {
        kind: DeviceKind::Pl011,
        base: guest::PL011_BASE,
        size: guest::PL011_SIZE,
        irq: Some(Irq {
            intid: guest::SPI_BASE + guest::PL011_SPI,
            trigger: Trigger::Level,
        }),
    });
    if profile == Profile::UefiAcpi {
        list.push(DeviceSpec {
            kind: DeviceKind::Pl031,
            base: guest::PL031_BASE,
            size: guest::PL031_SIZE,
            irq: Some(Irq {
                intid: guest::SPI_BASE + guest::PL031_SPI,
                trigger: Trigger::Level,
            }),
        });
        list.push(DeviceSpec {
            kind: DeviceKind::FwCfg,
            base: guest::FW_CFG_BASE,
            size: FW_CFG_SIZE,
            irq: None,
        });
    }
    if profile == Profile::LinuxDt && vm.tpm_spi_gpio {
        list.push(DeviceSpec {
            kind: DeviceKind::Pl061Tpm,
            base: guest::PL061_BASE,
            size: guest::PL061_SIZE,
            irq: Some(Irq {
                intid: guest::SPI_BASE + guest::PL061_SPI,
                trigger: Trigger::Level,
            }),
        });
    }
    let mut slots: Vec<u64> = vm
        .virtio_slots
        .iter()
        .copied()
        .filter(|&s| s < guest::VIRTIO_MMIO_SLOTS)
        .collect();
    slots.sort_unstable();
    slots.dedup();
    for slot in slots {
        list.push(DeviceSpec {
            kind: DeviceKind::VirtioMmio { slot },
            base: guest::VIRTIO_MMIO_BASE + slot * guest::VIRTIO_MMIO_STRIDE,
            size: guest::VIRTIO_MMIO_STRIDE,
            irq: Some(Irq {
                intid: guest::virtio_mmio_intid(slot),
                trigger: Trigger::Edge,
            }),
        });
    }
    list
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vm(slots: &[u64]) -> VmDevices<'_> {
        VmDevices {
            virtio_slots: slots,
            tpm_spi_gpio: true,
            vars_bank_size: 1 << 20,
        }
    }

    #[test]
    fn windows_do_not_overlap_and_interrupts_are_distinct() {
        for profile in [Profile::LinuxDt, Profile::UefiAcpi] {
            let list = device_list(profile, &vm(&[0, 3, 31, 29, 3, 40]));
            for (i, a) in list.iter().enumerate() {
                for b in &list[i + 1..] {
                    assert!(a.base + a.size <= b.base, "{a:?} overlaps {b:?}");
                    if let (Some(x), Some(y)) = (a.irq, b.irq) {
                        assert_ne!(x.intid, y.intid, "{a:?} and {b:?} share an SPI");
                    }
                }
            }
            let virtio: Vec<_> = list
                .iter()
                .filter_map(|d| match d.kind {
                    DeviceKind::VirtioMmio { slot } => Some(slot),
                    _ => None,
                })
                .collect();
            assert_eq!(
                virtio,
                [0, 3, 29, 31],
                "slots sorted, deduplicated, in range"
            );
        }
    }

    #[test]
    fn each_profile_has_its_own_devices() {
        let has = |p, k| device_list(p, &vm(&[])).iter().any(|d| d.kind == k);
        assert!(has(Profile::UefiAcpi, DeviceKind::FwCfg));
        assert!(has(Profile::UefiAcpi, DeviceKind::Flash { bank: 1 }));
        assert!(has(Profile::UefiAcpi, DeviceKind::Pl031));
        assert!(!has(Profile::LinuxDt, DeviceKind::Pl031));
        assert!(!has(Profile::UefiAcpi, DeviceKind::Pl061Tpm));
        assert!(!has(Profile::LinuxDt, DeviceKind::FwCfg));
        assert!(has(Profile::LinuxDt, DeviceKind::Pl061Tpm));
        assert!(has(Profile::LinuxDt, DeviceKind::Pl011));
    }
}
