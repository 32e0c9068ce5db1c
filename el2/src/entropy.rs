//! Randomness for guests (the TPM's seeds and DRBG, virtio-rng). At boot [`init`]
//! picks the best real source the platform has (`arch::entropy::choose`: the CPU's
//! RNDR, else the firmware's SMCCC TRNG, else the boot loader's device-tree seed)
//! and instantiates a root HMAC-DRBG from it. Each consumer gets its own DRBG forked
//! from the root ([`source`], `vtpm::drbg::ForkedDrbg`), reseeded from the live
//! source (RNDRRS or TRNG_RND64) on every draw when there is one. With no source at
//! all, [`source`] returns `None` and the VM is built without a TPM and without
//! virtio-rng: nothing is made up from a counter.

use alloc::boxed::Box;
use core::arch::asm;

use aarch64_cpu::registers::{Readable, ID_AA64ISAR0_EL1};
use arch::entropy::{self as policy, Offer, Source, TrngError, TRNG_RND64_MAX_BITS};
use arch::relax::Mutex;
use arch::smccc::func;
use vtpm::drbg::{ForkedDrbg, HmacDrbg, LiveSource};
use vtpm::Entropy;

use crate::power::{firmware_call, firmware_call_regs};

/// RNDRRS attempts before a read is given up (the architecture allows transient
/// failure, reported through PSTATE.Z).
const RNDR_RETRIES: usize = 64;
/// TRNG_RND64 attempts while the firmware answers NO_ENTROPY.
const TRNG_RETRIES: usize = 16;
/// Bytes of live entropy drawn to seed the root DRBG (384 bits).
const SEED_BYTES: usize = 48;
/// The root DRBG's personalization string.
const ROOT_PERSONALIZATION: &[u8] = b"RayOS EL2 entropy root";

/// The root generator every consumer's DRBG is forked from, and the live source
/// that reseeds them (`None` until [`init`] found a source).
static ROOT: Mutex<Option<Root>> = Mutex::new(None);

struct Root {
    source: Source,
    drbg: HmacDrbg,
}

/// One RNDRRS read (a freshly reseeded RNDR); `None` if the hardware could not
/// deliver in time.
fn rndrrs() -> Option<u64> {
    for _ in 0..RNDR_RETRIES {
        let v: u64;
        let ok: u64;
        // SAFETY: RNDRRS (S3_3_C2_C4_1) is only read once ID_AA64ISAR0_EL1.RNDR said
        // it is implemented (the source is `Rndr` only then). It is not a plain
        // register read (so not `read_sysreg!`): each read reseeds the generator and
        // returns a new number, and it sets NZCV (Z = failure), which the `cset`
        // consumes (no `preserves_flags`); no memory is touched.
        unsafe {
            asm!(
                "mrs {v}, s3_3_c2_c4_1",
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

/// 192 bits from the firmware's TRNG.
fn trng_rnd64() -> Result<[u8; 24], TrngError> {
    let mut last = TrngError::NoEntropy;
    for _ in 0..TRNG_RETRIES {
        let regs = firmware_call_regs(u64::from(func::TRNG_RND64), TRNG_RND64_MAX_BITS, 0, 0)
            .ok_or(TrngError::NotSupported)?;
        match policy::trng_rnd64_bytes(regs) {
            Err(TrngError::NoEntropy) => last = TrngError::NoEntropy,
            other => return other,
        }
    }
    Err(last)
}

/// Fills `buf` from the live `source`; `false` if it did not deliver.
fn live_fill(source: Source, buf: &mut [u8]) -> bool {
    match source {
        Source::Rndr => {
            for chunk in buf.chunks_mut(8) {
                let Some(v) = rndrrs() else { return false };
                chunk.copy_from_slice(&v.to_le_bytes()[..chunk.len()]);
            }
            true
        }
        Source::SmcccTrng => {
            for chunk in buf.chunks_mut(24) {
                let Ok(v) = trng_rnd64() else { return false };
                chunk.copy_from_slice(&v[..chunk.len()]);
            }
            true
        }
        Source::DtSeed => false,
    }
}

/// What this platform offers, probing the TRNG only as DEN0098 allows.
fn offer(dt_seed_len: usize) -> Offer {
    let smccc_version = firmware_call(u64::from(func::SMCCC_VERSION), 0, 0, 0);
    let trng_version = policy::may_probe_trng(smccc_version)
        .then(|| firmware_call(u64::from(func::TRNG_VERSION), 0, 0, 0))
        .flatten();
    let trng_rnd64_features = trng_version.and_then(|_| {
        firmware_call(
            u64::from(func::TRNG_FEATURES),
            u64::from(func::TRNG_RND64),
            0,
            0,
        )
    });
    Offer {
        isar0: ID_AA64ISAR0_EL1.get(),
        smccc_version,
        trng_version,
        trng_rnd64_features,
        dt_seed_len,
    }
}

/// Chooses the entropy source and seeds the root generator; `dt_seed` (the device
/// tree's `/chosen` seed) is consumed: mixed in, then wiped. Logs the choice, or
/// that there is none.
pub fn init(dt_seed: &mut boards::discover::Seed) {
    let mut seed = [0u8; SEED_BYTES];
    let chosen = policy::choose_delivering(
        offer(dt_seed.0.len()),
        |source| live_fill(source, &mut seed),
        |source| {
            log::warn!(
                "entropy: {} did not deliver at boot; trying the next source",
                source.name()
            )
        },
    );
    let root = match chosen {
        Ok(Source::DtSeed) => Some(Root {
            source: Source::DtSeed,
            drbg: HmacDrbg::new(&dt_seed.0, ROOT_PERSONALIZATION),
        }),
        Ok(source) => {
            // The device tree's seed, if any, is mixed in as well.
            let mut drbg = HmacDrbg::new(&seed, ROOT_PERSONALIZATION);
            drbg.reseed(&dt_seed.0, &[]);
            Some(Root { source, drbg })
        }
        Err(none) => {
            log::warn!(
                "entropy: no source (no RNDR, no SMCCC TRNG, device-tree seed {} bytes of the {} needed): VMs get no TPM and no virtio-rng",
                none.dt_seed_len,
                policy::MIN_SEED_BYTES
            );
            None
        }
    };
    seed.fill(0);
    dt_seed.0.fill(0);
    dt_seed.0.clear();
    if let Some(r) = &root {
        log::info!("entropy: from {}", r.source.name());
    }
    *ROOT.lock() = root;
}

/// A consumer's own generator, forked from the root and reseeded from the live
/// source (if any) before every fill; `None` when the platform has no entropy
/// source.
pub fn source(personalization: &[u8]) -> Option<Box<dyn Entropy + Send>> {
    let mut root = ROOT.lock();
    let root = root.as_mut()?;
    let live = root.source.is_live().then(|| {
        let source = root.source;
        let fill: LiveSource = Box::new(move |buf: &mut [u8]| live_fill(source, buf));
        (source.name(), fill)
    });
    Some(Box::new(ForkedDrbg::fork(
        &mut root.drbg,
        personalization,
        live,
    )))
}

/// A consumer's source as a virtio-rng entropy source.
pub struct VirtioEntropy(pub Box<dyn Entropy + Send>);

impl virtio::EntropySource for VirtioEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), virtio::EntropyError> {
        self.0.fill(buf);
        Ok(())
    }
}
