//! The guest's TPM: a `vtpm` engine fed by this CPU (entropy from RNDR, time from
//! the generic counter), its NV image in memory (direct boot) or in the VM record's
//! `tpm_nv` extent of the system disk (a two-copy atomic `registry::AbStore`), and
//! its front end as the guest reaches it: the TIS register model over SPI, bit-banged
//! on the pins of an emulated PL061 GPIO controller at `boards::guest::PL061_BASE`
//! (Debian's arm64 kernel has `tpm_tis_spi` + `spi_gpio` but no MMIO `tpm_tis`).

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::arch::asm;

use boards::guest;
use devices::{Pl061, SpiBitBang, SpiPins};
use registry::{AbError, AbStore, Extent};
use vdev::{MmioDevice, Shared, SharedBlock};
use vtpm::tis::Tis;
use vtpm::tis_spi::TisSpi;
use vtpm::{Entropy, MemNvStore, NvError, NvStore, TimeSource, Tpm};

use crate::el1::read_sysreg;
use crate::sysdisk::SystemDisk;

/// ID_AA64ISAR0_EL1.RNDR, bits [63:60]: 1 = RNDR and RNDRRS are implemented.
const ISAR0_RNDR_SHIFT: u64 = 60;
const ISAR0_RNDR_MASK: u64 = 0xf;
/// RNDR attempts before a read is given up (the architecture allows transient
/// failure, reported through PSTATE.Z).
const RNDR_RETRIES: usize = 64;

/// The guest's PL061 → bit-banged SPI → TIS-over-SPI chain.
pub type TpmChain = Pl061<SpiBitBang<TisSpi>>;

/// Whether this CPU implements FEAT_RNG.
fn has_rndr() -> bool {
    let isar0 = read_sysreg!("ID_AA64ISAR0_EL1");
    (isar0 >> ISAR0_RNDR_SHIFT) & ISAR0_RNDR_MASK >= 1
}

/// One RNDR read; `None` if the hardware could not deliver in time.
fn rndr() -> Option<u64> {
    for _ in 0..RNDR_RETRIES {
        let v: u64;
        let ok: u64;
        // SAFETY: RNDR (S3_3_C2_C4_0) is only read when ID_AA64ISAR0_EL1 says it is
        // implemented; it reads a random number and sets NZCV (Z = failure), which
        // the `cset` consumes; no memory is touched.
        unsafe {
            asm!(
                "mrs {v}, s3_3_c2_c4_0",
                "cset {ok}, ne",
                v = out(reg) v,
                ok = out(reg) ok,
                options(nomem, nostack)
            )
        };
        if ok != 0 {
            return Some(v);
        }
    }
    None
}

/// Entropy from the CPU's RNDR; falls back to the counter-seeded generator for a
/// read that keeps failing.
struct RndrEntropy {
    fallback: CounterEntropy,
}

impl Entropy for RndrEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = rndr().unwrap_or_else(|| {
                log::warn!("vtpm: RNDR keeps failing; using the counter-seeded generator");
                self.fallback.next()
            });
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// Without FEAT_RNG: a splitmix64 stream re-seeded with the physical counter on
/// every draw. Weak (the counter is guessable); used only with a logged warning.
struct CounterEntropy {
    state: u64,
}

impl CounterEntropy {
    fn new() -> Self {
        Self {
            state: read_sysreg!("CNTPCT_EL0"),
        }
    }

    fn next(&mut self) -> u64 {
        self.state = self
            .state
            .wrapping_add(0x9e37_79b9_7f4a_7c15)
            .wrapping_add(read_sysreg!("CNTPCT_EL0"));
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl Entropy for CounterEntropy {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next();
            chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
        }
    }
}

/// The best entropy source this CPU has.
fn entropy() -> Box<dyn Entropy + Send> {
    if has_rndr() {
        Box::new(RndrEntropy {
            fallback: CounterEntropy::new(),
        })
    } else {
        log::warn!(
            "vtpm: this CPU has no RNDR (FEAT_RNG); the guest TPM's DRBG is seeded from the counter only"
        );
        Box::new(CounterEntropy::new())
    }
}

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

    /// VM reset: the GPIO controller and the bus return to reset and the TPM gets
    /// _TPM_Init (PCRs cleared, TPM2_Startup required again).
    pub fn reset(&self) {
        let mut g = self.chain.0.lock();
        g.reset();
        let bus = g.pins_mut();
        bus.reset();
        bus.slave_mut().reset();
    }
}

/// Builds the guest TPM. `nv` is the system disk and the VM record's `tpm_nv`
/// extent (persistent TPM), or `None` for a TPM whose NV lives in memory.
pub fn guest_tpm(nv: Option<(SharedBlock<SystemDisk>, Extent)>) -> Result<GuestTpm, String> {
    let nv: Box<dyn NvStore + Send> = match nv {
        Some((disk, extent)) => {
            let store = AbStore::new(extent).ok_or_else(|| {
                format!(
                    "the TPM NV extent ({} bytes) is too small for two copies",
                    extent.len
                )
            })?;
            Box::new(DiskNv { disk, store })
        }
        None => Box::new(MemNvStore::default()),
    };
    let tpm = Tpm::new(entropy(), Box::new(CounterTime), nv)
        .map_err(|e| format!("the TPM's NV image is refused: {e:?}"))?;
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
        chain: Shared::new(chain),
    })
}
