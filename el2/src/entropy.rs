//! Randomness for guests (the TPM's DRBG seed, virtio-rng): the CPU's RNDR
//! instruction (FEAT_RNG) when it has one, otherwise a counter-seeded generator with a
//! logged warning.

use alloc::boxed::Box;
use core::arch::asm;

use vtpm::Entropy;

use crate::el1::read_sysreg;

/// ID_AA64ISAR0_EL1.RNDR, bits [63:60]: 1 = RNDR and RNDRRS are implemented.
const ISAR0_RNDR_SHIFT: u64 = 60;
const ISAR0_RNDR_MASK: u64 = 0xf;
/// RNDR attempts before a read is given up (the architecture allows transient
/// failure, reported through PSTATE.Z).
const RNDR_RETRIES: usize = 64;

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
                log::warn!("RNDR keeps failing; using the counter-seeded generator");
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
pub fn source() -> Box<dyn Entropy + Send> {
    if has_rndr() {
        Box::new(RndrEntropy {
            fallback: CounterEntropy::new(),
        })
    } else {
        log::warn!(
            "this CPU has no RNDR (FEAT_RNG): guest entropy (TPM DRBG, virtio-rng) comes from the counter only"
        );
        Box::new(CounterEntropy::new())
    }
}

/// The same source as a virtio-rng entropy source.
pub struct VirtioEntropy(pub Box<dyn Entropy + Send>);

impl virtio::EntropySource for VirtioEntropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), virtio::EntropyError> {
        self.0.fill(buf);
        Ok(())
    }
}
