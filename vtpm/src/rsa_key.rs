//! RSA-2048 key material: deterministic prime derivation from a byte stream,
//! reconstruction of a key from its modulus and first prime (the TPM's
//! sensitive area holds only the prime p), and the raw RSA operations the
//! padding schemes of [`crate::rsa_pad`] run on.
//!
//! Key generation (used for primaries with the KDFa stream of
//! `commands::object::KdfStream`, and for ordinary objects with the DRBG):
//! each prime is the first acceptable candidate of the stream. A candidate is
//! the next 128 bytes of the stream, big-endian, with its two top bits set
//! (so p·q has exactly 2048 bits) and its low bit set; it is accepted when it
//! passes trial division, 20 Miller-Rabin rounds and a Lucas test
//! (Baillie-PSW, deterministic for a given candidate), gcd(p − 1, e) = 1, and
//! (for q) |p − q| > 2^(1024−100) (FIPS 186-4 B.3.3). p is drawn first, then
//! q; the private part kept is p. The same stream therefore always yields the
//! same key; it is not bit-identical with the reference implementation's
//! (which runs the stream through its own sieve and DRBG).

use alloc::vec::Vec;
use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::subtle::ConstantTimeEq;
use crypto_bigint::{Encoding, U1024, U2048, U64};
use num_bigint_dig::prime::probably_prime;
use num_bigint_dig::BigUint;
use num_integer::Integer;
use rsa::rand_core::{CryptoRng, RngCore};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{RsaPrivateKey, RsaPublicKey};

/// Modulus size (TPMI_RSA_KEY_BITS: only 2048 is implemented).
pub const RSA_BITS: u16 = 2048;
/// Modulus bytes (MAX_RSA_KEY_BYTES).
pub const RSA_BYTES: usize = 256;
/// Bytes of each prime.
pub const PRIME_BYTES: usize = RSA_BYTES / 2;
/// The exponent an `exponent` field of 0 stands for.
pub const DEFAULT_EXPONENT: u32 = 65537;
/// Miller-Rabin rounds of the primality test.
const MR_ROUNDS: usize = 20;
/// Minimum bit length of |p − q| (FIPS 186-4 B.3.3: nlen/2 − 100).
const MIN_PQ_DIFF_BITS: usize = 1024 - 100;

/// The public exponent of an `exponent` field (0 means 65537), if usable:
/// odd and at least 3.
pub fn exponent(e: u32) -> Option<u32> {
    let e = if e == 0 { DEFAULT_EXPONENT } else { e };
    (e >= 3 && e & 1 == 1).then_some(e)
}

fn candidate_prime(
    e: &BigUint,
    next: &mut dyn FnMut(usize) -> Vec<u8>,
    other: Option<&BigUint>,
) -> BigUint {
    loop {
        let mut c = next(PRIME_BYTES);
        if c.len() != PRIME_BYTES {
            continue;
        }
        c[0] |= 0xC0;
        c[PRIME_BYTES - 1] |= 1;
        let p = BigUint::from_bytes_be(&c);
        if let Some(o) = other {
            let diff = if &p > o { &p - o } else { o - &p };
            if diff.bits() <= MIN_PQ_DIFF_BITS {
                continue;
            }
        }
        if !probably_prime(&p, MR_ROUNDS) {
            continue;
        }
        let one = BigUint::from(1u32);
        if (&p - &one).gcd(e) != one {
            continue;
        }
        return p;
    }
}

/// Generates a key pair from the candidate stream `next` (see the module
/// doc). Returns (modulus, p), both big-endian (256 and 128 bytes), or None
/// for an unusable exponent.
pub fn generate(e: u32, next: &mut dyn FnMut(usize) -> Vec<u8>) -> Option<(Vec<u8>, Vec<u8>)> {
    let e = BigUint::from(exponent(e)?);
    let p = candidate_prime(&e, next, None);
    let q = candidate_prime(&e, next, Some(&p));
    let n = &p * &q;
    Some((to_fixed(&n, RSA_BYTES)?, to_fixed(&p, PRIME_BYTES)?))
}

/// `x` as exactly `len` big-endian bytes, if it fits.
pub fn to_fixed(x: &BigUint, len: usize) -> Option<Vec<u8>> {
    let b = x.to_bytes_be();
    if b.len() > len {
        return None;
    }
    let mut out = alloc::vec![0u8; len - b.len()];
    out.extend_from_slice(&b);
    Some(out)
}

/// The public key of modulus `n` (256 bytes, top bit set) and exponent field `e`.
pub fn public_key(n: &[u8], e: u32) -> Option<RsaPublicKey> {
    if n.len() != RSA_BYTES || n[0] & 0x80 == 0 || n[RSA_BYTES - 1] & 1 == 0 {
        return None;
    }
    let e = exponent(e)?;
    RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from(e)).ok()
}

/// The private key of modulus `n` whose sensitive prime is `p`, if p is a
/// proper factor of n (the binding check of Load/LoadExternal).
pub fn private_key(n: &[u8], e: u32, p: &[u8]) -> Option<RsaPrivateKey> {
    let pk = public_key(n, e)?;
    if p.is_empty() || p.len() > PRIME_BYTES {
        return None;
    }
    let p = BigUint::from_bytes_be(p);
    let one = BigUint::from(1u32);
    if p <= one || p.bits() < 1024 - 8 {
        return None;
    }
    let (q, rem) = pk.n().div_rem(&p);
    if rem != BigUint::from(0u32) || q <= one {
        return None;
    }
    let mut key = RsaPrivateKey::from_p_q(p, q, pk.e().clone()).ok()?;
    key.precompute().ok()?;
    Some(key)
}

/// m^e mod n over a 256-byte block; None if m ≥ n.
pub fn public_op(key: &RsaPublicKey, m: &[u8]) -> Option<Vec<u8>> {
    let m = BigUint::from_bytes_be(m);
    if &m >= key.n() {
        return None;
    }
    to_fixed(&rsa::hazmat::rsa_encrypt(key, &m).ok()?, RSA_BYTES)
}

/// A random source for RSA blinding from a fill function (the TPM's DRBG).
pub struct FillRng<'a>(pub &'a mut dyn FnMut(&mut [u8]));

impl RngCore for FillRng<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        (self.0)(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        (self.0)(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        (self.0)(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rsa::rand_core::Error> {
        (self.0)(dest);
        Ok(())
    }
}

impl CryptoRng for FillRng<'_> {}

/// c^d mod n over a block of at most 256 bytes (a shorter block is the same
/// number), or None if c ≥ n or the result fails its check.
///
/// Constant-time (RUSTSEC-2023-0071, the Marvin attack on the `rsa` crate,
/// whose private operation uses variable-time `num-bigint-dig` arithmetic):
/// this runs on `crypto-bigint`'s fixed-width integers, whose Montgomery
/// multiplication, fixed-window exponentiation (over all 1024 bits of the
/// CRT exponents, with constant-time table lookups), inversion and reduction
/// by a fixed modulus take time independent of the values. The only
/// variable-time steps depend on public values (the bit length of p and q,
/// always 1024, and whether c < n). It keeps RSA blinding as a second layer —
/// c·rᵉ with a fresh r from `rng`, unblinded with r⁻¹ — and checks mᵉ = c
/// before releasing m (a fault would otherwise reveal a prime).
pub fn private_op(key: &RsaPrivateKey, c: &[u8], rng: &mut FillRng) -> Option<Vec<u8>> {
    if c.len() > RSA_BYTES {
        return None;
    }
    let mut block = alloc::vec![0u8; RSA_BYTES - c.len()];
    block.extend_from_slice(c);
    let ct = CtKey::new(key)?;
    let c = U2048::from_be_slice(&block);
    if c >= ct.n {
        return None;
    }
    let n_params = DynResidueParams::new(&ct.n);
    let c_res = DynResidue::new(&c, n_params);
    // A blinding factor r, invertible mod n (all but a negligible fraction of
    // random values are).
    let (r, r_inv) = loop {
        let mut b = [0u8; RSA_BYTES];
        rng.fill_bytes(&mut b);
        let r = DynResidue::new(&U2048::from_be_slice(&b).const_rem(&ct.n).0, n_params);
        let (inv, ok) = r.invert();
        if bool::from(ok) {
            break (r, inv);
        }
    };
    let blinded = (c_res * r.pow(&ct.e)).retrieve();
    let m = (DynResidue::new(&ct.crt(&blinded), n_params) * r_inv).retrieve();
    // Check: mᵉ = c (mod n).
    let back = DynResidue::new(&m, n_params).pow(&ct.e).retrieve();
    if !bool::from(back.ct_eq(&c)) {
        return None;
    }
    Some(m.to_be_bytes().to_vec())
}

/// A private key as fixed-width integers for [`private_op`].
struct CtKey {
    n: U2048,
    e: U64,
    p: U1024,
    q: U1024,
    dp: U1024,
    dq: U1024,
    /// q⁻¹ mod p.
    qinv: U1024,
}

impl CtKey {
    fn new(key: &RsaPrivateKey) -> Option<Self> {
        let [p, q] = key.primes() else {
            return None;
        };
        let half = |x: &BigUint| to_fixed(x, PRIME_BYTES).map(|b| U1024::from_be_slice(&b));
        Some(Self {
            n: U2048::from_be_slice(&to_fixed(key.n(), RSA_BYTES)?),
            e: U64::from_be_slice(&to_fixed(key.e(), 8)?),
            p: half(p)?,
            q: half(q)?,
            dp: half(key.dp()?)?,
            dq: half(key.dq()?)?,
            qinv: half(&key.crt_coefficient()?)?,
        })
    }

    /// x^d mod n by the CRT (Garner): m1 = x^dP mod p, m2 = x^dQ mod q,
    /// m = m2 + q·(q⁻¹·(m1 − m2) mod p).
    fn crt(&self, x: &U2048) -> U2048 {
        let b = x.to_be_bytes();
        let (hi, lo) = (
            U1024::from_be_slice(&b[..PRIME_BYTES]),
            U1024::from_be_slice(&b[PRIME_BYTES..]),
        );
        let exp = |m: &U1024, d: &U1024| {
            let params = DynResidueParams::new(m);
            let xr = U1024::const_rem_wide((lo, hi), m).0;
            (params, DynResidue::new(&xr, params).pow(d).retrieve())
        };
        let (pp, m1) = exp(&self.p, &self.dp);
        let (_, m2) = exp(&self.q, &self.dq);
        let m2p = DynResidue::new(&m2.const_rem(&self.p).0, pp);
        let h = ((DynResidue::new(&m1, pp) - m2p) * DynResidue::new(&self.qinv, pp)).retrieve();
        let (lo, hi) = h.mul_wide(&self.q);
        let mut wide = [0u8; RSA_BYTES];
        wide[..PRIME_BYTES].copy_from_slice(&hi.to_be_bytes());
        wide[PRIME_BYTES..].copy_from_slice(&lo.to_be_bytes());
        U2048::from_be_slice(&wide).wrapping_add(&m2.resize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hash::HashAlg;

    /// A deterministic candidate stream for tests.
    pub(crate) fn stream(tag: &'static [u8]) -> impl FnMut(usize) -> Vec<u8> {
        let mut i = 0u32;
        move |n| {
            let mut out = Vec::new();
            while out.len() < n {
                i += 1;
                out.extend_from_slice(HashAlg::Sha256.digest(&[&i.to_be_bytes(), tag]).as_bytes());
            }
            out.truncate(n);
            out
        }
    }

    #[test]
    fn generation_is_deterministic_and_round_trips() {
        let (n, p) = generate(0, &mut stream(b"a")).unwrap();
        let (n2, p2) = generate(0, &mut stream(b"a")).unwrap();
        assert_eq!((&n, &p), (&n2, &p2));
        assert_eq!(n.len(), RSA_BYTES);
        assert!(n[0] & 0x80 != 0);
        let key = private_key(&n, 0, &p).unwrap();
        let pk = public_key(&n, 0).unwrap();
        let mut m = alloc::vec![0u8; RSA_BYTES];
        m[10] = 7;
        m[255] = 3;
        let c = public_op(&pk, &m).unwrap();
        assert_ne!(c, m);
        let mut fill = |b: &mut [u8]| b.fill(0x5A);
        let back = private_op(&key, &c, &mut FillRng(&mut fill)).unwrap();
        assert_eq!(back, m);
        // A different stream gives a different key; a wrong prime is unbound.
        let (n3, p3) = generate(0, &mut stream(b"b")).unwrap();
        assert_ne!(n3, n);
        assert!(private_key(&n, 0, &p3).is_none());
        assert!(public_op(&pk, &[0xFF; RSA_BYTES]).is_none());
    }

    #[test]
    fn exponent_rules() {
        assert_eq!(exponent(0), Some(65537));
        assert_eq!(exponent(3), Some(3));
        assert_eq!(exponent(4), None);
        assert_eq!(exponent(1), None);
        assert!(generate(2, &mut stream(b"x")).is_none());
    }
}
