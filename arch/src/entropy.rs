//! Where the hypervisor's randomness comes from (the guests' TPM seeds and DRBG,
//! virtio-rng), decided once at boot from what the platform offers, best first:
//!
//! 1. the CPU's RNDR (FEAT_RNG, ID_AA64ISAR0_EL1.RNDR ≥ 1);
//! 2. the firmware's SMCCC TRNG (Arm DEN0098: SMCCC ≥ 1.1, TRNG_VERSION ≥ 1.0 and
//!    TRNG_FEATURES(TRNG_RND64) implemented);
//! 3. a seed the boot loader left in the device tree (`/chosen/rng-seed`, with
//!    `kaslr-seed`), if it holds at least [`MIN_SEED_BYTES`]: it seeds a DRBG once.
//!
//! Without any of them there is no source: the hypervisor then gives a VM neither a
//! TPM nor virtio-rng rather than invent randomness from a counter.

use aarch64_cpu::registers::ID_AA64ISAR0_EL1;
use tock_registers::LocalRegisterCopy;

use crate::smccc::SMCCC_VERSION_1_1;

/// Fewest bytes of device-tree seed the hypervisor will stretch (256 bits).
pub const MIN_SEED_BYTES: usize = 32;
/// TRNG interface 1.0, the first (DEN0098): major in bits [30:16], minor [15:0].
pub const TRNG_VERSION_1_0: u64 = 0x1_0000;
/// Most bits one TRNG_RND64 call returns (in x1..x3).
pub const TRNG_RND64_MAX_BITS: u64 = 192;

/// TRNG return codes (DEN0098 §2.1), as signed 32-bit values in x0.
pub mod trng_ret {
    pub const SUCCESS: i64 = 0;
    pub const NOT_SUPPORTED: i64 = -1;
    pub const INVALID_PARAMETERS: i64 = -2;
    pub const NO_ENTROPY: i64 = -3;
}

/// The source chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// RNDR/RNDRRS instructions.
    Rndr,
    /// The firmware's SMCCC TRNG_RND64.
    SmcccTrng,
    /// The device tree's seed, stretched by a DRBG.
    DtSeed,
}

impl Source {
    /// A short name for log lines.
    pub fn name(self) -> &'static str {
        match self {
            Source::Rndr => "the CPU's RNDR (FEAT_RNG)",
            Source::SmcccTrng => "the firmware's SMCCC TRNG",
            Source::DtSeed => "the device tree's /chosen rng-seed, stretched by an HMAC-DRBG",
        }
    }

    /// Whether the source can be read again after boot (a seed cannot).
    pub fn is_live(self) -> bool {
        !matches!(self, Source::DtSeed)
    }
}

/// What the platform offers, as read by `el2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Offer {
    /// ID_AA64ISAR0_EL1 of this CPU.
    pub isar0: u64,
    /// x0 of SMCCC_VERSION, `None` without a firmware conduit.
    pub smccc_version: Option<u64>,
    /// x0 of TRNG_VERSION, `None` if it was not (or may not be) called.
    pub trng_version: Option<u64>,
    /// x0 of TRNG_FEATURES(TRNG_RND64), `None` if it was not called.
    pub trng_rnd64_features: Option<u64>,
    /// Bytes of device-tree seed available.
    pub dt_seed_len: usize,
}

/// Why there is no source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoSource {
    /// Bytes of device-tree seed there were (fewer than [`MIN_SEED_BYTES`]).
    pub dt_seed_len: usize,
}

/// Does ID_AA64ISAR0_EL1 say RNDR and RNDRRS are implemented?
pub fn has_rndr(isar0: u64) -> bool {
    LocalRegisterCopy::<u64, ID_AA64ISAR0_EL1::Register>::new(isar0).read(ID_AA64ISAR0_EL1::RNDR)
        >= 1
}

/// A return value in x0 as the signed 32-bit code SMCCC defines.
fn as_code(x0: u64) -> i64 {
    i64::from(x0 as u32 as i32)
}

/// May TRNG_VERSION be called (SMCCC 1.1 or later answered SMCCC_VERSION)?
pub fn may_probe_trng(smccc_version: Option<u64>) -> bool {
    smccc_version.is_some_and(|v| as_code(v) >= 0 && v >= SMCCC_VERSION_1_1)
}

/// Is a TRNG 1.x with TRNG_RND64 there?
pub fn trng_usable(offer: &Offer) -> bool {
    may_probe_trng(offer.smccc_version)
        && offer
            .trng_version
            .is_some_and(|v| as_code(v) >= 0 && v >= TRNG_VERSION_1_0)
        && offer
            .trng_rnd64_features
            .is_some_and(|f| as_code(f) >= trng_ret::SUCCESS)
}

/// The best source the platform offers.
pub fn choose(offer: &Offer) -> Result<Source, NoSource> {
    if has_rndr(offer.isar0) {
        Ok(Source::Rndr)
    } else if trng_usable(offer) {
        Ok(Source::SmcccTrng)
    } else if offer.dt_seed_len >= MIN_SEED_BYTES {
        Ok(Source::DtSeed)
    } else {
        Err(NoSource {
            dt_seed_len: offer.dt_seed_len,
        })
    }
}

/// The best source that actually delivers: a live source (RNDR, TRNG) is tried
/// with `delivers`; one that fails is reported through `failed` and passed over
/// for the next.
pub fn choose_delivering(
    mut offer: Offer,
    mut delivers: impl FnMut(Source) -> bool,
    mut failed: impl FnMut(Source),
) -> Result<Source, NoSource> {
    loop {
        let source = choose(&offer)?;
        if !source.is_live() || delivers(source) {
            return Ok(source);
        }
        failed(source);
        match source {
            Source::Rndr => offer.isar0 = 0,
            Source::SmcccTrng | Source::DtSeed => offer.trng_version = None,
        }
    }
}

/// Why a TRNG_RND64 call gave no entropy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrngError {
    NotSupported,
    InvalidParameters,
    /// Temporarily out of entropy; the caller may retry.
    NoEntropy,
    /// A code DEN0098 does not define.
    Unknown(i64),
}

/// The entropy of a TRNG_RND64 call for [`TRNG_RND64_MAX_BITS`] bits: `regs` is
/// x0..x3 as returned; the 192 bits are x1 (most significant) ‖ x2 ‖ x3 (least),
/// given little-endian from the least significant end.
pub fn trng_rnd64_bytes(regs: [u64; 4]) -> Result<[u8; 24], TrngError> {
    match as_code(regs[0]) {
        trng_ret::SUCCESS => {
            let mut out = [0u8; 24];
            for (chunk, r) in out.chunks_exact_mut(8).zip([regs[3], regs[2], regs[1]]) {
                chunk.copy_from_slice(&r.to_le_bytes());
            }
            Ok(out)
        }
        trng_ret::NOT_SUPPORTED => Err(TrngError::NotSupported),
        trng_ret::INVALID_PARAMETERS => Err(TrngError::InvalidParameters),
        trng_ret::NO_ENTROPY => Err(TrngError::NoEntropy),
        other => Err(TrngError::Unknown(other)),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec;

    /// ID_AA64ISAR0_EL1 with RNDR = 1 (bits [63:60]).
    const ISAR0_WITH_RNDR: u64 = 1 << 60;
    /// Cortex-A72's ID_AA64ISAR0_EL1 (AES, SHA1, SHA2, CRC32; no RNDR).
    const ISAR0_CORTEX_A72: u64 = 0x0001_1120;
    /// -1 as firmware returns it in x0 (a 32-bit code, sign-extended or not).
    const NOT_SUPPORTED_X0: u64 = 0xffff_ffff_ffff_ffff;

    fn trng() -> Offer {
        Offer {
            isar0: ISAR0_CORTEX_A72,
            smccc_version: Some(SMCCC_VERSION_1_1),
            trng_version: Some(TRNG_VERSION_1_0),
            trng_rnd64_features: Some(0),
            dt_seed_len: 0,
        }
    }

    #[test]
    fn rndr_wins_over_everything() {
        let o = Offer {
            isar0: ISAR0_WITH_RNDR | ISAR0_CORTEX_A72,
            dt_seed_len: 64,
            ..trng()
        };
        assert_eq!(choose(&o), Ok(Source::Rndr));
        assert!(!has_rndr(ISAR0_CORTEX_A72));
        // RNDR field values above 1 still mean "implemented".
        assert!(has_rndr(2 << 60));
    }

    #[test]
    fn trng_is_next_and_needs_smccc_1_1_version_1_0_and_rnd64() {
        assert_eq!(choose(&trng()), Ok(Source::SmcccTrng));
        let seed = 32;
        let cases = [
            Offer {
                smccc_version: None,
                ..trng()
            },
            Offer {
                smccc_version: Some(0x1_0000),
                ..trng()
            },
            Offer {
                smccc_version: Some(NOT_SUPPORTED_X0),
                ..trng()
            },
            Offer {
                trng_version: Some(NOT_SUPPORTED_X0),
                ..trng()
            },
            // QEMU's firmware-less PSCI answers -1 as a 32-bit value.
            Offer {
                trng_version: Some(0xffff_ffff),
                ..trng()
            },
            Offer {
                trng_version: Some(0x0_0001),
                ..trng()
            },
            Offer {
                trng_rnd64_features: Some(NOT_SUPPORTED_X0),
                ..trng()
            },
            Offer {
                trng_rnd64_features: None,
                ..trng()
            },
        ];
        for o in cases {
            assert!(!trng_usable(&o), "{o:?}");
            assert_eq!(
                choose(&Offer {
                    dt_seed_len: seed,
                    ..o
                }),
                Ok(Source::DtSeed)
            );
        }
    }

    #[test]
    fn a_short_or_missing_seed_is_no_source() {
        let none = Offer {
            isar0: ISAR0_CORTEX_A72,
            ..Offer::default()
        };
        assert_eq!(choose(&none), Err(NoSource { dt_seed_len: 0 }));
        // QEMU's kaslr-seed alone is 8 bytes: not enough.
        let short = Offer {
            dt_seed_len: MIN_SEED_BYTES - 1,
            ..none
        };
        assert_eq!(
            choose(&short),
            Err(NoSource {
                dt_seed_len: MIN_SEED_BYTES - 1
            })
        );
        assert_eq!(
            choose(&Offer {
                dt_seed_len: MIN_SEED_BYTES,
                ..none
            }),
            Ok(Source::DtSeed)
        );
        assert!(!Source::DtSeed.is_live() && Source::Rndr.is_live());
    }

    #[test]
    fn a_live_source_that_does_not_deliver_is_passed_over() {
        let all = Offer {
            isar0: ISAR0_WITH_RNDR,
            dt_seed_len: MIN_SEED_BYTES,
            ..trng()
        };
        let run = |offer: Offer, working: &[Source]| {
            let mut tried = std::vec::Vec::new();
            let mut failed = std::vec::Vec::new();
            let r = choose_delivering(
                offer,
                |s| {
                    tried.push(s);
                    working.contains(&s)
                },
                |s| failed.push(s),
            );
            (r, tried, failed)
        };
        let (r, tried, failed) = run(all, &[Source::Rndr]);
        assert_eq!(
            (r, tried, failed),
            (Ok(Source::Rndr), vec![Source::Rndr], vec![])
        );
        let (r, _, failed) = run(all, &[Source::SmcccTrng]);
        assert_eq!((r, failed), (Ok(Source::SmcccTrng), vec![Source::Rndr]));
        // The seed is not live: it is taken without a trial.
        let (r, tried, failed) = run(all, &[]);
        assert_eq!(r, Ok(Source::DtSeed));
        assert_eq!(tried, [Source::Rndr, Source::SmcccTrng]);
        assert_eq!(failed, tried);
        let no_seed = Offer {
            dt_seed_len: 8,
            ..all
        };
        assert_eq!(run(no_seed, &[]).0, Err(NoSource { dt_seed_len: 8 }));
    }

    #[test]
    fn rnd64_results() {
        let ok = trng_rnd64_bytes([0, 0x1111, 0x2222, 0x0807_0605_0403_0201]).unwrap();
        assert_eq!(ok[..8], [1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(ok[8..10], [0x22, 0x22]);
        assert_eq!(ok[16..18], [0x11, 0x11]);
        assert_eq!(
            trng_rnd64_bytes([NOT_SUPPORTED_X0, 0, 0, 0]),
            Err(TrngError::NotSupported)
        );
        assert_eq!(
            trng_rnd64_bytes([0xffff_fffd, 0, 0, 0]),
            Err(TrngError::NoEntropy)
        );
        assert_eq!(
            trng_rnd64_bytes([0xffff_fffe, 0, 0, 0]),
            Err(TrngError::InvalidParameters)
        );
        assert_eq!(trng_rnd64_bytes([7, 0, 0, 0]), Err(TrngError::Unknown(7)));
    }
}
