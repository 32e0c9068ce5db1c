//! The TPM's random number generator: an HMAC-DRBG (NIST SP 800-90A, HMAC-SHA-256)
//! seeded and periodically reseeded from the [`Entropy`] source the hypervisor
//! supplies. TPM2_StirRandom mixes caller data in as additional input.

use crate::hash::HashAlg;
use alloc::boxed::Box;

/// A source of true randomness (e.g. the CPU's RNDR, or the host's getrandom).
pub trait Entropy {
    /// Fills `buf` with entropy.
    fn fill(&mut self, buf: &mut [u8]);
}

const OUTLEN: usize = 32;
/// Bytes of entropy drawn at instantiation and at each reseed.
const SEED_LEN: usize = 48;
/// Generate calls between reseeds.
const RESEED_INTERVAL: u32 = 1 << 14;

/// The HMAC-DRBG mechanism itself (SP 800-90A §10.1.2, HMAC-SHA-256, no
/// prediction resistance): instantiated from seed material, it generates output
/// and takes reseed material from whoever holds it. [`Drbg`] pairs it with an
/// [`Entropy`] source; the hypervisor also uses it on its own to stretch a seed the
/// boot loader handed over (the device tree's `/chosen/rng-seed`).
#[derive(Clone)]
pub struct HmacDrbg {
    k: [u8; OUTLEN],
    v: [u8; OUTLEN],
}

impl HmacDrbg {
    /// Instantiate: K = 0, V = 1, then Update(`seed_material` ‖ `personalization`).
    pub fn new(seed_material: &[u8], personalization: &[u8]) -> Self {
        let mut d = Self {
            k: [0; OUTLEN],
            v: [1; OUTLEN],
        };
        d.update(&[seed_material, personalization]);
        d
    }

    fn update(&mut self, data: &[&[u8]]) {
        let nonempty = data.iter().any(|p| !p.is_empty());
        for round in [0u8, 1] {
            if round == 1 && !nonempty {
                break;
            }
            let mut parts: [&[u8]; 5] = [&self.v, &[round], &[], &[], &[]];
            for (i, p) in data.iter().take(3).enumerate() {
                parts[2 + i] = p;
            }
            let k = HashAlg::Sha256.hmac(&self.k, &parts);
            self.k.copy_from_slice(k.as_bytes());
            let v = HashAlg::Sha256.hmac(&self.k, &[&self.v]);
            self.v.copy_from_slice(v.as_bytes());
        }
    }

    /// Reseed: Update(`entropy` ‖ `additional`).
    pub fn reseed(&mut self, entropy: &[u8], additional: &[u8]) {
        self.update(&[entropy, additional]);
    }

    /// Generate (without additional input): fills `out`, then updates the state so
    /// the output cannot be recomputed from it.
    pub fn generate(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(OUTLEN) {
            let v = HashAlg::Sha256.hmac(&self.k, &[&self.v]);
            self.v.copy_from_slice(v.as_bytes());
            chunk.copy_from_slice(&self.v[..chunk.len()]);
        }
        self.update(&[]);
    }
}

/// The TPM's DRBG: an [`HmacDrbg`] seeded and periodically reseeded from an
/// [`Entropy`] source.
pub struct Drbg {
    core: HmacDrbg,
    calls: u32,
    entropy: Box<dyn Entropy + Send>,
}

impl Drbg {
    /// Instantiates from `entropy` with a personalization string.
    pub fn new(mut entropy: Box<dyn Entropy + Send>, personalization: &[u8]) -> Self {
        let mut seed = [0u8; SEED_LEN];
        entropy.fill(&mut seed);
        Self {
            core: HmacDrbg::new(&seed, personalization),
            calls: 0,
            entropy,
        }
    }

    /// Draws fresh entropy and mixes it with `additional`.
    pub fn reseed(&mut self, additional: &[u8]) {
        let mut seed = [0u8; SEED_LEN];
        self.entropy.fill(&mut seed);
        self.core.reseed(&seed, additional);
        self.calls = 0;
    }

    /// Mixes caller-provided data into the state (TPM2_StirRandom).
    pub fn stir(&mut self, data: &[u8]) {
        self.core.update(&[data]);
    }

    /// Fills `out` with DRBG output.
    pub fn generate(&mut self, out: &mut [u8]) {
        if self.calls >= RESEED_INTERVAL {
            self.reseed(&[]);
        }
        self.core.generate(out);
        self.calls += 1;
    }
}

/// A live entropy source that may fail (RNDRRS, a firmware TRNG): fills the
/// buffer and returns `true`, or returns `false`.
pub type LiveSource = Box<dyn FnMut(&mut [u8]) -> bool + Send>;

/// One consumer's generator (the TPM's entropy, virtio-rng): an [`HmacDrbg`]
/// forked from a parent generator, reseeded from a live source before every fill
/// when there is one. It never fails: if the live source stops delivering it says
/// so once and goes on from its own state (seeded from real entropy at the fork).
pub struct ForkedDrbg {
    drbg: HmacDrbg,
    live: Option<(&'static str, LiveSource)>,
    warned: bool,
}

impl ForkedDrbg {
    /// Forks from `parent` (which moves on, so no two forks share a stream);
    /// `live` is the source's name for the log and the source.
    pub fn fork(
        parent: &mut HmacDrbg,
        personalization: &[u8],
        live: Option<(&'static str, LiveSource)>,
    ) -> Self {
        let mut seed = [0u8; SEED_LEN];
        parent.generate(&mut seed);
        Self {
            drbg: HmacDrbg::new(&seed, personalization),
            live,
            warned: false,
        }
    }
}

impl Entropy for ForkedDrbg {
    fn fill(&mut self, buf: &mut [u8]) {
        if let Some((name, live)) = &mut self.live {
            let mut fresh = [0u8; SEED_LEN];
            if live(&mut fresh) {
                self.drbg.reseed(&fresh, &[]);
            } else if !self.warned {
                log::warn!(
                    "entropy: {name} failed; continuing from the DRBG's state without reseeding"
                );
                self.warned = true;
            }
        }
        self.drbg.generate(buf);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic test entropy: a counter.
    pub struct CountingEntropy(pub u8);
    impl Entropy for CountingEntropy {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                *b = self.0;
                self.0 = self.0.wrapping_add(1);
            }
        }
    }

    #[test]
    fn same_seed_same_stream_and_stir_changes_it() {
        let mut a = Drbg::new(Box::new(CountingEntropy(0)), b"p");
        let mut b = Drbg::new(Box::new(CountingEntropy(0)), b"p");
        let (mut x, mut y) = ([0u8; 70], [0u8; 70]);
        a.generate(&mut x);
        b.generate(&mut y);
        assert_eq!(x, y);
        assert_ne!(x[..32], x[32..64]);
        b.stir(b"more");
        a.generate(&mut x);
        b.generate(&mut y);
        assert_ne!(x, y);
    }

    fn unhex(s: &str) -> alloc::vec::Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// SP 800-90A HMAC_DRBG (SHA-256) against an independent implementation of the
    /// same algorithm (Python's `hmac`): instantiate, generate twice, reseed with
    /// additional input, generate.
    #[test]
    fn hmac_drbg_matches_an_independent_implementation() {
        let seed: alloc::vec::Vec<u8> = (0u8..48).collect();
        let mut d = HmacDrbg::new(&seed, b"RayOS");
        let mut out = [0u8; 40];
        d.generate(&mut out);
        assert_eq!(
            out[..],
            unhex(
                "1b6e87eb2ffe694504063109be12337ec090af382e4fad117e7ea59a3bbbbe1808f0d68bdec8e29d"
            )
        );
        d.generate(&mut out);
        assert_eq!(
            out[..],
            unhex(
                "b3da6a44a00df1d72a0c7084cadf0e1739131551a88bea6ec5a1a9ac0dd5b8258f98fd20e8566285"
            )
        );
        let more: alloc::vec::Vec<u8> = (100u8..148).collect();
        d.reseed(&more, b"add");
        let mut out = [0u8; 16];
        d.generate(&mut out);
        assert_eq!(out[..], unhex("55c47fb52d423d9e93ad00cfa259a1bc"));
    }

    #[test]
    fn forks_differ_and_reseed_from_a_live_source_until_it_fails() {
        let mut parent = HmacDrbg::new(&[7; 48], b"root");
        let twin = parent.clone();
        let mut a = ForkedDrbg::fork(&mut parent, b"x", None);
        let mut b = ForkedDrbg::fork(&mut parent, b"x", None);
        let (mut x, mut y) = ([0u8; 32], [0u8; 32]);
        a.fill(&mut x);
        b.fill(&mut y);
        assert_ne!(x, y, "two forks share a stream");
        // Same parent state, same personalization: a fork whose live source fails
        // gives what a fork without one gives; one whose source works does not.
        let live = |ok: bool| -> Option<(&'static str, LiveSource)> {
            Some((
                "test",
                Box::new(move |b: &mut [u8]| {
                    b.fill(0x5a);
                    ok
                }),
            ))
        };
        let mut plain = ForkedDrbg::fork(&mut twin.clone(), b"x", None);
        let mut failing = ForkedDrbg::fork(&mut twin.clone(), b"x", live(false));
        let mut working = ForkedDrbg::fork(&mut twin.clone(), b"x", live(true));
        let (mut p, mut f, mut w) = ([0u8; 16], [0u8; 16], [0u8; 16]);
        plain.fill(&mut p);
        failing.fill(&mut f);
        working.fill(&mut w);
        assert_eq!(p, f);
        assert_ne!(p, w);
        assert_eq!(p[..], x[..16], "the twin parent forks like the first");
    }

    #[test]
    fn different_entropy_differs() {
        let mut a = Drbg::new(Box::new(CountingEntropy(0)), b"");
        let mut b = Drbg::new(Box::new(CountingEntropy(9)), b"");
        let (mut x, mut y) = ([0u8; 16], [0u8; 16]);
        a.generate(&mut x);
        b.generate(&mut y);
        assert_ne!(x, y);
    }
}
