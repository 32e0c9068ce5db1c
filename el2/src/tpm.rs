//! The guest's TPM: a `vtpm` engine fed by this machine (entropy from
//! [`crate::entropy`], time from the generic counter), its NV image in memory (direct boot) or in the VM record's
//! `tpm_nv` extent of the system disk (a two-copy atomic `registry::AbStore`), and
//! its front end as the guest reaches it ([`Interface`]): for a kernel booted with a
//! device tree the TIS register model over SPI, bit-banged on the pins of an
//! emulated PL061 GPIO controller at `boards::guest::PL061_BASE` (Debian's arm64
//! kernel has `tpm_tis_spi` + `spi_gpio` but no MMIO `tpm_tis`); for a `uefi-acpi`
//! VM the CRB interface on the platform bus, which the firmware measures the boot
//! through and the OS drives with `tpm_crb` (Windows: `tpm.sys`).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use boards::guest;
use devices::{Pl061, SpiBitBang, SpiPins};
use registry::{AbError, AbStore, Extent};
use vdev::{MmioDevice, Shared, SharedBlock};
use vtpm::crb::Crb;
use vtpm::tis::Tis;
use vtpm::tis_spi::TisSpi;
use vtpm::{MemNvStore, NvError, NvStore, TimeSource, Tpm};

use crate::el1::read_sysreg;
use crate::sysdisk::SystemDisk;

/// Where a VM's TPM lives on the system disk: the disk, the record's `tpm_nv`
/// extent, and the disk's vTPM manufacturer CA that certifies its EKs.
pub type TpmNvPlace = (
    SharedBlock<SystemDisk>,
    Extent,
    Option<vtpm::ek::ManufacturerCa>,
);

/// The guest's PL061 → bit-banged SPI → TIS-over-SPI chain.
pub type TpmChain = Pl061<SpiBitBang<TisSpi>>;

/// Milliseconds of the generic counter.
struct CounterTime;

impl TimeSource for CounterTime {
    fn now_ms(&self) -> u64 {
        let freq = read_sysreg!("CNTFRQ_EL0").max(1);
        let ticks = read_sysreg!("CNTPCT_EL0");
        (u128::from(ticks) * 1000 / u128::from(freq)) as u64
    }
}

/// The NV image in the VM record's `tpm_nv` extent of the system disk.
struct DiskNv {
    disk: SharedBlock<SystemDisk>,
    store: AbStore,
}

fn nv_error(e: AbError) -> NvError {
    log::warn!("vtpm: NV store on the system disk: {e}");
    match e {
        AbError::Corrupt { .. } => NvError::Corrupt,
        AbError::Io(_) | AbError::TooLarge { .. } => NvError::Unavailable,
    }
}

impl NvStore for DiskNv {
    fn load(&mut self) -> Result<Option<Vec<u8>>, NvError> {
        self.store.load(&mut self.disk).map_err(nv_error)
    }
    fn store(&mut self, image: &[u8]) -> Result<(), NvError> {
        self.store.store(&mut self.disk, image).map_err(nv_error)
    }
}

/// How the guest reaches its TPM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interface {
    /// TIS over SPI bit-banged on a PL061 at [`guest::PL061_BASE`] (`linux-dt`).
    SpiGpio,
    /// The Command Response Buffer interface at guest-physical `base` (`uefi-acpi`:
    /// `boards::devices::TPM_CRB_BASE`, the device list's `TpmCrb` entry), polled.
    Crb { base: u64 },
}

// The CRB model's register window is the device list's.
const _: () = assert!(Crb::REGION_SIZE == boards::devices::TPM_CRB_SIZE);

/// The front end the guest drives, each owning the engine.
enum Front {
    SpiGpio(Shared<TpmChain>),
    Crb { base: u64, crb: Shared<Crb> },
}

/// The guest's TPM: the device for the MMIO bus and a handle to reset it.
pub struct GuestTpm {
    front: Front,
}

impl GuestTpm {
    /// The device for the bus: the PL061 at [`guest::PL061_BASE`] (size
    /// [`guest::PL061_SIZE`]), or the CRB at its base ([`Crb::REGION_SIZE`]).
    pub fn device(&self) -> Box<dyn MmioDevice + Send> {
        match &self.front {
            Front::SpiGpio(chain) => Box::new(chain.clone()),
            Front::Crb { crb, .. } => Box::new(crb.clone()),
        }
    }

    /// The interface the guest has.
    pub fn interface(&self) -> Interface {
        match &self.front {
            Front::SpiGpio(_) => Interface::SpiGpio,
            Front::Crb { base, .. } => Interface::Crb { base: *base },
        }
    }

    /// The front end with the engine behind it, for saving and restoring its state
    /// (PL061 → SPI → TIS, or the CRB, then the engine's volatile state: PCRs,
    /// sessions, loaded objects).
    pub fn saved(&self) -> Box<dyn crate::suspend::DeviceHandle> {
        match &self.front {
            Front::SpiGpio(chain) => Box::new(chain.clone()),
            Front::Crb { crb, .. } => Box::new(crb.clone()),
        }
    }

    /// VM reset of the TPM behind the bus. Over SPI: any SPI transaction
    /// abandoned, the TIS back to its power-on state and the TPM given _TPM_Init
    /// (PCRs cleared, TPM2_Startup required again); the GPIO controller and the SPI
    /// bus in front of it are reset with the MMIO bus (`Vm::reset_devices`). The CRB
    /// is itself the bus device: the bus reset gives it and its TPM all of that
    /// (`Crb::reset`), so nothing is done here — a second _TPM_Init would be
    /// harmless but is not what a platform reset does.
    pub fn reset(&self) {
        match &self.front {
            Front::SpiGpio(chain) => chain.0.lock().pins_mut().slave_mut().reset(),
            Front::Crb { .. } => {}
        }
    }
}

/// Builds the guest TPM with `interface`. `nv` is the system disk and the VM
/// record's `tpm_nv` extent (persistent TPM), or `None` for a TPM whose NV lives in
/// memory. `Ok(None)` when the machine has no entropy source: a TPM's seeds, nonces
/// and TPM2_GetRandom need real randomness, so the VM runs without one.
pub fn guest_tpm(nv: Option<TpmNvPlace>, interface: Interface) -> Result<Option<GuestTpm>, String> {
    let Some(entropy) = crate::entropy::source(b"RayOS vTPM") else {
        log::warn!(
            "no entropy source: the VM gets no TPM (a TPM's seeds and nonces need real randomness); its NV image, if any, is left untouched"
        );
        return Ok(None);
    };
    let (nv, ca) = match nv {
        Some((disk, extent, ca)) => (Some((disk, extent)), ca),
        None => (None, None),
    };
    let nv: Box<dyn NvStore + Send> = match nv {
        Some((disk, extent)) => {
            let store = AbStore::new(extent).ok_or_else(|| {
                format!(
                    "the TPM NV extent ({} bytes) is too small for two copies",
                    extent.len
                )
            })?;
            if vdev::BlockBackend::read_only(&disk) {
                // Nothing can be stored: keep whatever image the disk has in memory so
                // the TPM still works this boot, and say that its changes will not last.
                let mut disk = disk;
                let image = store
                    .load(&mut disk)
                    .map_err(|e| format!("the TPM's NV image cannot be read: {e}"))?;
                log::warn!(
                    "the system disk is read-only: the TPM runs on an in-memory copy of its NV image; its changes this boot will not persist"
                );
                Box::new(MemNvStore { image, writes: 0 })
            } else {
                Box::new(DiskNv { disk, store })
            }
        }
        None => Box::new(MemNvStore::default()),
    };
    let mut tpm = Tpm::new(entropy, Box::new(CounterTime), nv)
        .map_err(|e| format!("the TPM's NV image is refused: {e:?}"))?;
    if let Some(ca) = ca {
        // Certifies the EKs once (at manufacture); later boots find them in NV.
        match tpm.provision_ek_certificates(&ca) {
            Ok(0) => {}
            Ok(n) => log::info!(
                "TPM: {n} EK certificate(s) issued by the system disk's vTPM manufacturer CA (NV 0x01C00002 RSA 2048, 0x01C0000A ECC P-256, 0x01C00016 P-384, 0x01C00018 P-521, 0x01C0001C RSA 3072)"
            ),
            Err(e) => log::warn!("TPM: EK certificates not issued: {e:?}"),
        }
    }
    let base = match interface {
        Interface::Crb { base } => base,
        Interface::SpiGpio => return spi_gpio(tpm).map(Some),
    };
    // Polled: neither EDK2 nor Linux `tpm_crb` (start method 7) uses the CRB's
    // start interrupt, and the device list gives the TPM none.
    Ok(Some(GuestTpm {
        front: Front::Crb {
            base,
            crb: Shared::new(Crb::new(tpm, base, None)),
        },
    }))
}

/// The TIS-over-SPI chain on the PL061's pins.
fn spi_gpio(tpm: Tpm) -> Result<GuestTpm, String> {
    let pins = SpiPins {
        sck: guest::TPM_SPI_SCK_PIN,
        mosi: guest::TPM_SPI_MOSI_PIN,
        miso: guest::TPM_SPI_MISO_PIN,
        cs: guest::TPM_SPI_CS_PIN,
    };
    let bus = SpiBitBang::new(pins, TisSpi::new(Tis::new(tpm, None)))
        .ok_or_else(|| String::from("invalid TPM SPI pin assignment"))?;
    let chain = Pl061::new(bus, Some(guest::SPI_BASE + guest::PL061_SPI));
    Ok(GuestTpm {
        front: Front::SpiGpio(Shared::new(chain)),
    })
}
