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

/// HMAC-DRBG state.
pub struct Drbg {
    k: [u8; OUTLEN],
    v: [u8; OUTLEN],
    calls: u32,
    entropy: Box<dyn Entropy + Send>,
}

impl Drbg {
    /// Instantiates from `entropy` with a personalization string.
    pub fn new(entropy: Box<dyn Entropy + Send>, personalization: &[u8]) -> Self {
        let mut d = Self {
            k: [0; OUTLEN],
            v: [1; OUTLEN],
            calls: 0,
            entropy,
        };
        d.reseed(personalization);
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

    /// Draws fresh entropy and mixes it with `additional`.
    pub fn reseed(&mut self, additional: &[u8]) {
        let mut seed = [0u8; SEED_LEN];
        self.entropy.fill(&mut seed);
        self.update(&[&seed, additional]);
        self.calls = 0;
    }

    /// Mixes caller-provided data into the state (TPM2_StirRandom).
    pub fn stir(&mut self, data: &[u8]) {
        self.update(&[data]);
    }

    /// Fills `out` with DRBG output.
    pub fn generate(&mut self, out: &mut [u8]) {
        if self.calls >= RESEED_INTERVAL {
            self.reseed(&[]);
        }
        for chunk in out.chunks_mut(OUTLEN) {
            let v = HashAlg::Sha256.hmac(&self.k, &[&self.v]);
            self.v.copy_from_slice(v.as_bytes());
            chunk.copy_from_slice(&self.v[..chunk.len()]);
        }
        self.update(&[]);
        self.calls += 1;
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
