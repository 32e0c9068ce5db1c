//! The guest's TPM: a `vtpm` engine fed by this machine (entropy from
//! [`crate::entropy`], time from the generic counter), its NV image in memory (direct boot) or in the VM record's
//! `tpm_nv` extent of the system disk (a two-copy atomic `registry::AbStore`), and
//! its front end as the guest reaches it: the TIS register model over SPI, bit-banged
//! on the pins of an emulated PL061 GPIO controller at `boards::guest::PL061_BASE`
//! (Debian's arm64 kernel has `tpm_tis_spi` + `spi_gpio` but no MMIO `tpm_tis`).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use boards::guest;
use devices::{Pl061, SpiBitBang, SpiPins};
use registry::{AbError, AbStore, Extent};
use vdev::{MmioDevice, Shared, SharedBlock};
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

/// The guest's TPM: the device for the MMIO bus and a handle to reset it.
pub struct GuestTpm {
    chain: Shared<TpmChain>,
}

impl GuestTpm {
    /// The PL061 for the bus at [`guest::PL061_BASE`] (size [`guest::PL061_SIZE`]).
    pub fn device(&self) -> Box<dyn MmioDevice + Send> {
        Box::new(self.chain.clone())
    }

    /// The whole chain, for saving and restoring its state (PL061 → SPI → TIS →
    /// the engine's volatile state: PCRs, sessions, loaded objects).
    pub fn handle(&self) -> Shared<TpmChain> {
        self.chain.clone()
    }

    /// VM reset of the TPM behind the bus: any SPI transaction abandoned, the TIS
    /// back to its power-on state and the TPM given _TPM_Init (PCRs cleared,
    /// TPM2_Startup required again). The GPIO controller and the SPI bus in front
    /// of it are reset with the MMIO bus (`Vm::reset_devices`).
    pub fn reset(&self) {
        self.chain.0.lock().pins_mut().slave_mut().reset();
    }
}

/// Builds the guest TPM. `nv` is the system disk and the VM record's `tpm_nv`
/// extent (persistent TPM), or `None` for a TPM whose NV lives in memory.
/// `Ok(None)` when the machine has no entropy source: a TPM's seeds, nonces and
/// TPM2_GetRandom need real randomness, so the VM runs without one.
pub fn guest_tpm(nv: Option<TpmNvPlace>) -> Result<Option<GuestTpm>, String> {
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
                "TPM: {n} EK certificate(s) issued by the system disk's vTPM manufacturer CA (NV 0x01C00002 RSA 2048, 0x01C0000A ECC P-256)"
            ),
            Err(e) => log::warn!("TPM: EK certificates not issued: {e:?}"),
        }
    }
    let pins = SpiPins {
        sck: guest::TPM_SPI_SCK_PIN,
        mosi: guest::TPM_SPI_MOSI_PIN,
        miso: guest::TPM_SPI_MISO_PIN,
        cs: guest::TPM_SPI_CS_PIN,
    };
    let bus = SpiBitBang::new(pins, TisSpi::new(Tis::new(tpm, None)))
        .ok_or_else(|| String::from("invalid TPM SPI pin assignment"))?;
    let chain = Pl061::new(bus, Some(guest::SPI_BASE + guest::PL061_SPI));
    Ok(Some(GuestTpm {
        chain: Shared::new(chain),
    }))
}
