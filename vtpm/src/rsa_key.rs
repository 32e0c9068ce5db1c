//! RSA key material for the modulus sizes libtpms implements (1024, 2048 and
//! 3072 bits): deterministic prime derivation from a byte stream,
//! reconstruction of a key from its modulus and first prime (the TPM's
//! sensitive area holds only the prime p), and the raw RSA operations the
//! padding schemes of [`crate::rsa_pad`] run on.
//!
//! Key generation (used for primaries with the KDFa stream of
//! `commands::object::KdfStream`, and for ordinary objects with the DRBG):
//! each prime is the first acceptable candidate of the stream. A candidate is
//! the next keyBits/16 bytes of the stream, big-endian, with its two top bits
//! set (so p·q has exactly keyBits bits) and its low bit set; it is accepted
//! when it passes trial division, 20 Miller-Rabin rounds and a Lucas test
//! (Baillie-PSW, deterministic for a given candidate), gcd(p − 1, e) = 1, and
//! (for q) |p − q| > 2^(keyBits/2 − 100) (FIPS 186-4 B.3.3). p is drawn first,
//! then q; the private part kept is p. The same stream therefore always
//! yields the same key; it is not bit-identical with the reference
//! implementation's (which runs the stream through its own sieve and DRBG).

use alloc::vec::Vec;
use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::subtle::ConstantTimeEq;
use crypto_bigint::{Limb, Uint, U64};
use num_bigint_dig::prime::probably_prime;
use num_bigint_dig::BigUint;
use num_integer::Integer;
use rsa::rand_core::{CryptoRng, RngCore};
use rsa::traits::{PrivateKeyParts, PublicKeyParts};
use rsa::{RsaPrivateKey, RsaPublicKey};

/// The modulus sizes implemented (TPMI_RSA_KEY_BITS; libtpms's RSA_1024,
/// RSA_2048 and RSA_3072).
pub const KEY_SIZES: [u16; 3] = [1024, 2048, 3072];
/// Bytes of the largest modulus (MAX_RSA_KEY_BYTES).
pub const MAX_RSA_BYTES: usize = 384;
/// Bytes of the largest prime (RSA_PRIVATE_SIZE: TPM2B_PRIVATE_KEY_RSA).
pub const MAX_PRIME_BYTES: usize = MAX_RSA_BYTES / 2;
/// The exponent an `exponent` field of 0 stands for.
pub const DEFAULT_EXPONENT: u32 = 65537;
/// Miller-Rabin rounds of the primality test.
const MR_ROUNDS: usize = 20;
/// FIPS 186-4 B.3.3: |p − q| must exceed 2^(nlen/2 − this).
const PQ_DIFF_MARGIN_BITS: usize = 100;
/// The leeway below half the modulus size a loaded prime may have (a
/// bound on what an external key may bring; generated primes are exactly
/// half).
const PRIME_SHORTFALL_BITS: usize = 8;

/// Is `bits` an implemented modulus size?
pub fn key_bits_ok(bits: u16) -> bool {
    KEY_SIZES.contains(&bits)
}

/// The public exponent of an `exponent` field (0 means 65537), if usable:
/// odd and at least 3.
pub fn exponent(e: u32) -> Option<u32> {
    let e = if e == 0 { DEFAULT_EXPONENT } else { e };
    (e >= 3 && e & 1 == 1).then_some(e)
}

fn candidate_prime(
    e: &BigUint,
    prime_bytes: usize,
    next: &mut dyn FnMut(usize) -> Vec<u8>,
    other: Option<&BigUint>,
) -> BigUint {
    let min_diff_bits = prime_bytes * 8 - PQ_DIFF_MARGIN_BITS;
    loop {
        let mut c = next(prime_bytes);
        if c.len() != prime_bytes {
            continue;
        }
        c[0] |= 0xC0;
        c[prime_bytes - 1] |= 1;
        let p = BigUint::from_bytes_be(&c);
        if let Some(o) = other {
            let diff = if &p > o { &p - o } else { o - &p };
            if diff.bits() <= min_diff_bits {
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

/// Generates a `bits`-bit key pair from the candidate stream `next` (see the
/// module doc). Returns (modulus, p), both big-endian (bits/8 and bits/16
/// bytes), or None for an unusable exponent or size.
pub fn generate(
    bits: u16,
    e: u32,
    next: &mut dyn FnMut(usize) -> Vec<u8>,
) -> Option<(Vec<u8>, Vec<u8>)> {
    if !key_bits_ok(bits) {
        return None;
    }
    let bytes = usize::from(bits) / 8;
    let e = BigUint::from(exponent(e)?);
    let p = candidate_prime(&e, bytes / 2, next, None);
    let q = candidate_prime(&e, bytes / 2, next, Some(&p));
    let n = &p * &q;
    Some((to_fixed(&n, bytes)?, to_fixed(&p, bytes / 2)?))
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

/// The public key of modulus `n` (of an implemented size, top bit set, odd)
/// and exponent field `e`.
pub fn public_key(n: &[u8], e: u32) -> Option<RsaPublicKey> {
    let len = n.len();
    if !KEY_SIZES.iter().any(|&b| usize::from(b) / 8 == len)
        || n[0] & 0x80 == 0
        || n[len - 1] & 1 == 0
    {
        return None;
    }
    let e = exponent(e)?;
    RsaPublicKey::new(BigUint::from_bytes_be(n), BigUint::from(e)).ok()
}

/// The private key of modulus `n` whose sensitive prime is `p`, if p is a
/// proper factor of n of about half its size (the binding check of
/// Load/LoadExternal/Import).
pub fn private_key(n: &[u8], e: u32, p: &[u8]) -> Option<RsaPrivateKey> {
    let pk = public_key(n, e)?;
    let half = n.len() / 2;
    if p.is_empty() || p.len() > half {
        return None;
    }
    let p = BigUint::from_bytes_be(p);
    let one = BigUint::from(1u32);
    if p <= one || p.bits() < half * 8 - PRIME_SHORTFALL_BITS {
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

/// m^e mod n over a block of the modulus's size; None if m ≥ n.
pub fn public_op(key: &RsaPublicKey, m: &[u8]) -> Option<Vec<u8>> {
    let m = BigUint::from_bytes_be(m);
    if &m >= key.n() {
        return None;
    }
    to_fixed(&rsa::hazmat::rsa_encrypt(key, &m).ok()?, key.size())
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

/// Limbs of a `bits`-bit integer.
const fn limbs(bits: usize) -> usize {
    bits / Limb::BITS
}

/// c^d mod n over a block of at most the modulus's size (a shorter block is
/// the same number), or None if c ≥ n or the result fails its check.
///
/// Constant-time (RUSTSEC-2023-0071, the Marvin attack on the `rsa` crate,
/// whose private operation uses variable-time `num-bigint-dig` arithmetic):
/// this runs on `crypto-bigint`'s fixed-width integers, one width per
/// modulus size (chosen by the public modulus length), whose Montgomery
/// multiplication, fixed-window exponentiation (over all bits of the
/// half-size CRT exponents, with constant-time table lookups), inversion and
/// reduction by a fixed modulus take time independent of the values. The
/// only variable-time steps depend on public values (the modulus size, the
/// bit length of p and q, and whether c < n). It keeps RSA blinding as a
/// second layer — c·rᵉ with a fresh r from `rng`, unblinded with r⁻¹ — and
/// checks mᵉ = c before releasing m (a fault would otherwise reveal a prime).
pub fn private_op(key: &RsaPrivateKey, c: &[u8], rng: &mut FillRng) -> Option<Vec<u8>> {
    match key.size() * 8 {
        1024 => private_op_sized::<{ limbs(1024) }, { limbs(512) }>(key, c, rng),
        2048 => private_op_sized::<{ limbs(2048) }, { limbs(1024) }>(key, c, rng),
        3072 => private_op_sized::<{ limbs(3072) }, { limbs(1536) }>(key, c, rng),
        _ => None,
    }
}

/// `x` as big-endian bytes (all of its width).
fn be_bytes<const N: usize>(x: &Uint<N>) -> Vec<u8> {
    x.as_words()
        .iter()
        .rev()
        .flat_map(|w| w.to_be_bytes())
        .collect()
}

/// [`private_op`] for a modulus of `L` limbs and primes of `H` = `L`/2 limbs.
fn private_op_sized<const L: usize, const H: usize>(
    key: &RsaPrivateKey,
    c: &[u8],
    rng: &mut FillRng,
) -> Option<Vec<u8>> {
    let bytes = L * Limb::BYTES;
    if c.len() > bytes {
        return None;
    }
    let mut block = alloc::vec![0u8; bytes - c.len()];
    block.extend_from_slice(c);
    let ct = CtKey::<L, H>::new(key)?;
    let c = Uint::<L>::from_be_slice(&block);
    if c >= ct.n {
        return None;
    }
    let n_params = DynResidueParams::new(&ct.n);
    let c_res = DynResidue::new(&c, n_params);
    // A blinding factor r, invertible mod n (all but a negligible fraction of
    // random values are).
    let (r, r_inv) = loop {
        let mut b = alloc::vec![0u8; bytes];
        rng.fill_bytes(&mut b);
        let r = DynResidue::new(&Uint::<L>::from_be_slice(&b).const_rem(&ct.n).0, n_params);
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
    Some(be_bytes(&m))
}

/// A private key as fixed-width integers for [`private_op`]: the modulus of
/// `L` limbs, the primes and CRT values of `H` limbs.
struct CtKey<const L: usize, const H: usize> {
    n: Uint<L>,
    e: U64,
    p: Uint<H>,
    q: Uint<H>,
    dp: Uint<H>,
    dq: Uint<H>,
    /// q⁻¹ mod p.
    qinv: Uint<H>,
}

impl<const L: usize, const H: usize> CtKey<L, H> {
    const BYTES: usize = L * Limb::BYTES;
    const HALF: usize = H * Limb::BYTES;

    fn new(key: &RsaPrivateKey) -> Option<Self> {
        let [p, q] = key.primes() else {
            return None;
        };
        if 2 * H != L {
            return None;
        }
        let half = |x: &BigUint| to_fixed(x, Self::HALF).map(|b| Uint::<H>::from_be_slice(&b));
        Some(Self {
            n: Uint::<L>::from_be_slice(&to_fixed(key.n(), Self::BYTES)?),
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
    fn crt(&self, x: &Uint<L>) -> Uint<L> {
        let b = be_bytes(x);
        let (hi, lo) = (
            Uint::<H>::from_be_slice(&b[..Self::HALF]),
            Uint::<H>::from_be_slice(&b[Self::HALF..]),
        );
        let exp = |m: &Uint<H>, d: &Uint<H>| {
            let params = DynResidueParams::new(m);
            let xr = Uint::<H>::const_rem_wide((lo, hi), m).0;
            (params, DynResidue::new(&xr, params).pow(d).retrieve())
        };
        let (pp, m1) = exp(&self.p, &self.dp);
        let (_, m2) = exp(&self.q, &self.dq);
        let m2p = DynResidue::new(&m2.const_rem(&self.p).0, pp);
        let h = ((DynResidue::new(&m1, pp) - m2p) * DynResidue::new(&self.qinv, pp)).retrieve();
        let (lo, hi) = h.mul_wide(&self.q);
        let mut wide = be_bytes(&hi);
        wide.extend_from_slice(&be_bytes(&lo));
        Uint::<L>::from_be_slice(&wide).wrapping_add(&m2.resize())
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
    fn generation_is_deterministic_and_round_trips_at_every_size() {
        for bits in KEY_SIZES {
            let bytes = usize::from(bits) / 8;
            let (n, p) = generate(bits, 0, &mut stream(b"a")).unwrap();
            let (n2, p2) = generate(bits, 0, &mut stream(b"a")).unwrap();
            assert_eq!((&n, &p), (&n2, &p2));
            assert_eq!((n.len(), p.len()), (bytes, bytes / 2));
            assert!(n[0] & 0x80 != 0);
            let key = private_key(&n, 0, &p).unwrap();
            let pk = public_key(&n, 0).unwrap();
            let mut m = alloc::vec![0u8; bytes];
            m[10] = 7;
            m[bytes - 1] = 3;
            let c = public_op(&pk, &m).unwrap();
            assert_eq!(c.len(), bytes);
            assert_ne!(c, m);
            let mut fill = |b: &mut [u8]| b.fill(0x5A);
            let back = private_op(&key, &c, &mut FillRng(&mut fill)).unwrap();
            assert_eq!(back, m, "{bits}");
            // The constant-time result equals the `rsa` crate's
            // (variable-time) reference for a value of every byte.
            let x: Vec<u8> = (0..bytes).map(|i| (i * 37 + 11) as u8 & 0x7F).collect();
            let reference = rsa::hazmat::rsa_decrypt_and_check(
                &key,
                None::<&mut FillRng>,
                &BigUint::from_bytes_be(&x),
            )
            .unwrap();
            assert_eq!(
                private_op(&key, &x, &mut FillRng(&mut fill)).unwrap(),
                to_fixed(&reference, bytes).unwrap()
            );
            // A different stream gives a different key; a wrong prime is unbound.
            let (n3, p3) = generate(bits, 0, &mut stream(b"b")).unwrap();
            assert_ne!(n3, n);
            assert!(private_key(&n, 0, &p3).is_none());
            assert!(public_op(&pk, &alloc::vec![0xFF; bytes]).is_none());
            assert!(
                private_op(&key, &alloc::vec![1; bytes + 1], &mut FillRng(&mut fill)).is_none()
            );
        }
        // Other sizes: no key, no public key.
        assert!(generate(1536, 0, &mut stream(b"a")).is_none());
        assert!(generate(4096, 0, &mut stream(b"a")).is_none());
        let (n, p) = generate(2048, 0, &mut stream(b"a")).unwrap();
        assert!(public_key(&n[1..], 0).is_none());
        // A prime of another key size does not bind.
        let (_, p1) = generate(1024, 0, &mut stream(b"a")).unwrap();
        assert!(private_key(&n, 0, &p1).is_none());
        assert!(private_key(&n, 0, &p).is_some());
    }

    #[test]
    fn exponent_rules() {
        assert_eq!(exponent(0), Some(65537));
        assert_eq!(exponent(3), Some(3));
        assert_eq!(exponent(4), None);
        assert_eq!(exponent(1), None);
        assert!(generate(2048, 2, &mut stream(b"x")).is_none());
    }
}
