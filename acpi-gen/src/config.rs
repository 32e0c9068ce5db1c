//! What the tables describe: one VM's processors, interrupt controller, timers and
//! devices, as plain data. [`PlatformConfig::validate`] refuses a configuration the
//! tables could not describe faithfully (so the generator never truncates a value).

use alloc::vec::Vec;

/// First GSIV of the shared peripheral interrupts (GIC INTID 32).
pub const SPI_BASE: u32 = 32;
/// First GSIV of the private peripheral interrupts (GIC INTID 16).
pub const PPI_BASE: u32 = 16;
/// One past the last SPI INTID a GICv3 can have (INTIDs 1020..1023 are special).
pub const SPI_LIMIT: u32 = 1020;
/// MPIDR bits the MADT's GICC MPIDR field may carry: Aff3 (39:32) and Aff2..Aff0
/// (23:0); bits 31:24 and 63:40 must be zero (ACPI 6.3, 5.2.12.14).
pub const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// Most processors or virtio-mmio devices: their DSDT names are a letter and three
/// hex digits.
pub const MAX_NAMED: usize = 0x1000;

/// How an interrupt line signals (GICv3 level-sensitive or edge-triggered; every
/// line here is active high).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Level,
    Edge,
}

/// How the MADT tells the OS where the redistributors are (ACPI 6.3, 5.2.12.14):
/// one GICR structure for the whole region — for redistributors that are always
/// powered, and then each GICC's GICR Base Address must be zero — or each GICC
/// naming its own redistributor and no GICR structure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redistributors {
    Region,
    PerGicc,
}

/// A guest-physical MMIO window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioRegion {
    pub base: u64,
    pub size: u64,
}

/// A device with one MMIO window and one SPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqDevice {
    pub region: MmioRegion,
    /// Global system interrupt vector (= GIC INTID).
    pub gsiv: u32,
    pub trigger: Trigger,
}

/// One megabyte of ECAM configuration space per bus (PCI Express Base 4.0, 7.2.2).
pub const ECAM_BUS_SIZE: u64 = 1 << 20;
/// Most buses one ECAM window (one MCFG allocation) covers.
pub const MAX_BUSES: u64 = 256;
/// Size of the PCI I/O space a root complex decodes (16-bit port numbers).
pub const PCI_IO_SPACE: u64 = 0x1_0000;
/// INTA..INTD.
pub const INTX_PINS: u32 = 4;
/// An ITS's control frame is 64 KiB aligned.
pub const ITS_ALIGN: u64 = 0x1_0000;

/// A GICv2m MSI frame: the page a function writes its MSI to, and the SPIs
/// (`spi_count` from GSIV `first_spi`) it raises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiFrame {
    pub base: u64,
    pub first_spi: u32,
    pub spi_count: u32,
}

/// A PCI Express root complex, segment 0, buses 0 up to what its ECAM window
/// covers: MCFG, the DSDT's `PNP0A08` host bridge, and (with a frame) the MADT's
/// GIC MSI Frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PcieConfig {
    /// ECAM: bus `n` at `base + n * ECAM_BUS_SIZE` (below 4 GiB: the DSDT
    /// reserves it with a 32-bit descriptor).
    pub ecam: MmioRegion,
    /// The 32-bit memory window (bus address = CPU address).
    pub mmio32: MmioRegion,
    /// Where the CPU reaches I/O ports 0..`pio.size`.
    pub pio: MmioRegion,
    /// GSIV of INTA at device 0; device `d` pin `p` raises `intx_first_gsiv + (d + p) % 4`.
    pub intx_first_gsiv: u32,
    pub msi_frame: Option<MsiFrame>,
    /// Base of the GICv3 ITS the root complex's MSIs go to (requester ID =
    /// DeviceID): the MADT's GIC ITS structure and the IORT.
    pub its_base: Option<u64>,
}

impl PcieConfig {
    /// The last bus the ECAM window covers.
    pub fn bus_end(&self) -> u8 {
        (self.ecam.size / ECAM_BUS_SIZE)
            .saturating_sub(1)
            .min(MAX_BUSES - 1) as u8
    }

    /// The INTx GSIV of `device`'s `pin` (0 = INTA), swizzled as on QEMU `virt`.
    pub fn intx_gsiv(&self, device: u32, pin: u32) -> u32 {
        self.intx_first_gsiv + (device + pin) % INTX_PINS
    }
}

/// The generic timer's interrupts as GSIVs (PPIs, level-sensitive, active high).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub secure_el1: u32,
    pub nonsecure_el1: u32,
    pub virtual_el1: u32,
    pub nonsecure_el2: u32,
}

/// The vCPU topology the PPTT describes: `sockets * clusters * cores * threads`
/// vCPUs, numbered in that order (thread fastest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    pub sockets: u32,
    pub clusters: u32,
    pub cores: u32,
    pub threads: u32,
}

impl Topology {
    /// One socket, one cluster, `vcpus` single-threaded cores.
    pub const fn flat(vcpus: u32) -> Self {
        Topology {
            sockets: 1,
            clusters: 1,
            cores: vcpus,
            threads: 1,
        }
    }

    /// The number of vCPUs, or `None` on overflow.
    pub fn vcpus(&self) -> Option<u32> {
        self.sockets
            .checked_mul(self.clusters)?
            .checked_mul(self.cores)?
            .checked_mul(self.threads)
    }
}

/// Everything the tables say about one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformConfig {
    /// OEM ID and OEM table ID of every table header.
    pub oem_id: [u8; 6],
    pub oem_table_id: [u8; 8],
    pub oem_revision: u32,
    /// The MPIDR (affinity fields) of each vCPU; vCPU `i` has ACPI processor UID `i`.
    pub mpidrs: Vec<u64>,
    pub topology: Topology,
    /// GICv3 distributor base.
    pub gicd_base: u64,
    /// Redistributor region: vCPU `i`'s redistributor at `gicr_base + i * gicr_stride`.
    pub gicr_base: u64,
    pub gicr_stride: u64,
    /// How the MADT describes the redistributors.
    pub redistributors: Redistributors,
    pub timers: Timers,
    /// The PL011 console (SPCR and DBG2 point at it).
    pub uart: IrqDevice,
    /// PL031 real-time clock.
    pub rtc: Option<IrqDevice>,
    /// TPM 2.0 command-response-buffer interface (locality 0 at `base`).
    pub tpm_crb: Option<MmioRegion>,
    /// virtio-mmio transports in slot order.
    pub virtio_mmio: Vec<IrqDevice>,
    /// The SPI of the Generic Event Device whose event is the power button.
    pub power_button_gsiv: Option<u32>,
    /// The PCI Express root complex, when the VM has one.
    pub pcie: Option<PcieConfig>,
}

/// Why a configuration cannot be described.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigError {
    NoVcpus,
    /// `sockets * clusters * cores * threads` differs from the number of MPIDRs.
    TopologyMismatch {
        topology: Option<u32>,
        vcpus: usize,
    },
    /// An MPIDR with bits outside the affinity fields, or a duplicate.
    BadMpidr {
        vcpu: usize,
        mpidr: u64,
    },
    /// A device window that a 32-bit AML memory descriptor cannot hold.
    RegionNot32Bit {
        base: u64,
        size: u64,
    },
    /// A device interrupt that is not an SPI.
    NotAnSpi {
        gsiv: u32,
    },
    /// A timer interrupt that is not a PPI.
    NotAPpi {
        gsiv: u32,
    },
    /// Two devices claiming the same interrupt.
    SharedInterrupt {
        gsiv: u32,
    },
    /// More vCPUs or virtio-mmio slots than [`MAX_NAMED`].
    TooManyDevices,
    /// A zero redistributor stride, or a region whose length overflows the GICR
    /// structure's 32-bit field or the address space.
    RedistributorRegion,
    /// An ECAM window that is not whole buses (1 to 256), an I/O window larger
    /// than the I/O space, or an MSI frame whose SPI range its 16-bit fields
    /// cannot carry.
    BadPcie,
}

impl PlatformConfig {
    /// Checks that every value fits the field that will carry it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.mpidrs.is_empty() {
            return Err(ConfigError::NoVcpus);
        }
        let topology = self.topology.vcpus();
        if topology != u32::try_from(self.mpidrs.len()).ok() {
            return Err(ConfigError::TopologyMismatch {
                topology,
                vcpus: self.mpidrs.len(),
            });
        }
        for (vcpu, &mpidr) in self.mpidrs.iter().enumerate() {
            let duplicate = self.mpidrs[..vcpu].contains(&mpidr);
            if mpidr & !MPIDR_AFFINITY_MASK != 0 || duplicate {
                return Err(ConfigError::BadMpidr { vcpu, mpidr });
            }
        }
        let gicr_len = self.gicr_stride.checked_mul(self.mpidrs.len() as u64);
        let gicr_fits = gicr_len.is_some_and(|len| {
            u32::try_from(len).is_ok() && self.gicr_base.checked_add(len).is_some()
        });
        if self.gicr_stride == 0 || !gicr_fits {
            return Err(ConfigError::RedistributorRegion);
        }
        let t = self.timers;
        for gsiv in [
            t.secure_el1,
            t.nonsecure_el1,
            t.virtual_el1,
            t.nonsecure_el2,
        ] {
            if !(PPI_BASE..SPI_BASE).contains(&gsiv) {
                return Err(ConfigError::NotAPpi { gsiv });
            }
        }
        if self.virtio_mmio.len() > MAX_NAMED || self.mpidrs.len() > MAX_NAMED {
            return Err(ConfigError::TooManyDevices);
        }
        let mut spis: Vec<u32> = Vec::new();
        let devices = [Some(self.uart), self.rtc]
            .into_iter()
            .flatten()
            .chain(self.virtio_mmio.iter().copied());
        for d in devices {
            check_region32(d.region)?;
            spis.push(d.gsiv);
        }
        if let Some(tpm) = self.tpm_crb {
            check_region32(tpm)?;
        }
        spis.extend(self.power_button_gsiv);
        if let Some(p) = &self.pcie {
            let buses = p.ecam.size / ECAM_BUS_SIZE;
            if !p.ecam.size.is_multiple_of(ECAM_BUS_SIZE)
                || !(1..=MAX_BUSES).contains(&buses)
                || p.ecam.base.checked_add(p.ecam.size).is_none()
                || p.pio.size > PCI_IO_SPACE
            {
                return Err(ConfigError::BadPcie);
            }
            check_region32(p.ecam)?;
            check_region32(p.mmio32)?;
            check_region32(p.pio)?;
            spis.extend((0..INTX_PINS).map(|pin| p.intx_first_gsiv + pin));
            if let Some(f) = &p.msi_frame {
                let end = f.first_spi.checked_add(f.spi_count);
                if f.spi_count == 0
                    || u16::try_from(f.first_spi).is_err()
                    || u16::try_from(f.spi_count).is_err()
                    || end.is_none_or(|e| e > SPI_LIMIT)
                {
                    return Err(ConfigError::BadPcie);
                }
                spis.extend(f.first_spi..f.first_spi + f.spi_count);
            }
            if p.its_base.is_some_and(|b| !b.is_multiple_of(ITS_ALIGN)) {
                return Err(ConfigError::BadPcie);
            }
        }
        for (i, &gsiv) in spis.iter().enumerate() {
            if !(SPI_BASE..SPI_LIMIT).contains(&gsiv) {
                return Err(ConfigError::NotAnSpi { gsiv });
            }
            if spis[..i].contains(&gsiv) {
                return Err(ConfigError::SharedInterrupt { gsiv });
            }
        }
        Ok(())
    }
}

fn check_region32(r: MmioRegion) -> Result<(), ConfigError> {
    let fits = r.base.checked_add(r.size).is_some_and(|end| end <= 1 << 32)
        && u32::try_from(r.size).is_ok()
        && r.size != 0;
    if fits {
        Ok(())
    } else {
        Err(ConfigError::RegionNot32Bit {
            base: r.base,
            size: r.size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::uefi_acpi;

    #[test]
    fn the_profile_validates_and_every_field_limit_is_enforced() {
        let good = uefi_acpi(4, None, &[0, 30, 31]);
        assert_eq!(good.validate(), Ok(()));

        let mut c = good.clone();
        c.topology = Topology::flat(3);
        assert!(matches!(
            c.validate(),
            Err(ConfigError::TopologyMismatch { .. })
        ));

        let mut c = good.clone();
        c.mpidrs[2] = c.mpidrs[1];
        assert_eq!(
            c.validate(),
            Err(ConfigError::BadMpidr { vcpu: 2, mpidr: 1 })
        );

        let mut c = good.clone();
        c.mpidrs[0] = 1 << 31; // RES1 bit of the register, not an affinity field
        assert!(matches!(
            c.validate(),
            Err(ConfigError::BadMpidr { vcpu: 0, .. })
        ));

        let mut c = good.clone();
        c.virtio_mmio[0].region.base = 0xffff_ff00;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::RegionNot32Bit { .. })
        ));

        let mut c = good.clone();
        c.power_button_gsiv = Some(c.uart.gsiv);
        assert_eq!(
            c.validate(),
            Err(ConfigError::SharedInterrupt { gsiv: c.uart.gsiv })
        );

        let mut c = good.clone();
        c.uart.gsiv = 27;
        assert_eq!(c.validate(), Err(ConfigError::NotAnSpi { gsiv: 27 }));

        let mut c = good.clone();
        c.timers.virtual_el1 = 40;
        assert_eq!(c.validate(), Err(ConfigError::NotAPpi { gsiv: 40 }));

        let mut c = good.clone();
        c.gicr_stride = 0;
        assert_eq!(c.validate(), Err(ConfigError::RedistributorRegion));
        c.gicr_stride = 1 << 31;
        assert_eq!(c.validate(), Err(ConfigError::RedistributorRegion));

        let mut c = good;
        c.mpidrs.clear();
        assert_eq!(c.validate(), Err(ConfigError::NoVcpus));
        assert!(crate::build(&c).is_err());
    }
}
