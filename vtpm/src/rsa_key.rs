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
//! when it has no odd prime factor below [`SIEVE_BOUND`], gcd(p − 1, e) = 1,
//! (for q) |p − q| > 2^(keyBits/2 − 100) (FIPS 186-4 B.3.3), and it passes
//! seven Miller-Rabin rounds with pseudorandom bases (`MR_ROUNDS`, which says
//! why seven), one with base 2 and a Lucas test
//! (`num_bigint_dig::prime::probably_prime`: Baillie-PSW, its bases seeded
//! from the candidate, so deterministic for a given candidate). p is drawn
//! first, then q; the private part kept is p. The same stream therefore always
//! yields the same key; it is not bit-identical with the reference
//! implementation's (which runs the stream through its own sieve and DRBG).
//!
//! The checks run cheapest first; as the accepted candidate is the first that
//! passes all of them, their order does not change which one it is. The sieve
//! takes most composites out before any modular exponentiation: the 1899 odd
//! primes below 2^14 are grouped into batches of consecutive primes whose
//! product m fits a u64; for each batch the candidate's remainder modulo
//! d = m·2^s (s setting d's top bit) is one 2-by-1 division per 64-bit word by
//! a precomputed reciprocal (Möller and Granlund, "Improved division by
//! invariant integers"), and each prime of the batch, dividing d, divides the
//! candidate exactly when it divides that remainder, which one multiplication
//! by the prime's inverse modulo 2^64 decides (Granlund and Montgomery). The
//! tables are computed at compile time. gcd(p − 1, e) comes from the
//! candidate's remainder modulo e the same way, before any big integer is
//! built. Trial division rejects only composites, so the accepted candidate is
//! the one the primality test alone accepts — unless that test accepted a
//! composite with a factor below 2^14, a Baillie-PSW pseudoprime, of which none
//! is known. The keys of the tests' streams are those of the search without
//! the sieve and with 20 rounds
//! (`sieve_and_rounds_keep_the_keys_of_the_plain_search`).
//!
//! Measured with `cargo run --release -p vtpm --example rsa_keygen 6 BITS`
//! (host x86-64, six seeds; instructions by callgrind, reproducible): an
//! RSA 2048 key drew 418 candidates on average, of which 113 reached
//! Miller-Rabin before the sieve (`probably_prime` trial-divides only by the
//! primes up to 53) and 51 with it; modular exponentiations (`modpow` calls,
//! squarings included) 281 → 123, instructions 1.66 G → 0.80 G (2.1×). RSA
//! 3072: 1164 candidates, 317 → 133 reaching Miller-Rabin, 689 → 290
//! exponentiations, 11.2 G → 4.8 G instructions (2.3×). The sieve's own cost
//! is about 1 % of the total; the bound was chosen on the same runs (four
//! seeds of each size: 2^12 21.8 G, 2^13 20.6 G, 2^14 19.6 G, 2^15 18.9 G,
//! 2^16 18.1 G instructions, against 44.8 G before and 24.7 G for the sieve to
//! 2^13 with 20 rounds) as the point past which the gain (4 % per doubling)
//! buys tables of 74 and 139 KiB (39 KiB at 2^14), whose loads cost more
//! under TCG than on the host.

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
/// Miller-Rabin rounds with pseudorandom bases of the primality test (besides
/// its round with base 2 and its Lucas test). Seven is the most any row of
/// FIPS 186-4 Table C.3 asks of p and q for an error probability of 2^−100
/// (7 rounds for 512-bit primes, 4 for 1024-bit, 3 for 1536-bit), and more
/// than FIPS 186-5 Table B.1 asks at each size's security strength (5 rounds
/// for 1024-bit primes at 2^−112, 4 for 1536-bit at 2^−128) — all counted for
/// Miller-Rabin alone, without the Lucas test that makes this Baillie-PSW.
/// For a prime the count changes nothing (every round passes); it saves 13
/// exponentiations per accepted prime over the 20 rounds this had. Fewer rounds
/// could only accept a composite that the base-2 round, the Lucas test and the
/// first seven rounds all pass — a Baillie-PSW pseudoprime, of which none is
/// known — and the keys of every stream tested are those of 20 rounds
/// (`sieve_and_rounds_keep_the_keys_of_the_plain_search`).
const MR_ROUNDS: usize = 7;
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

/// Odd primes below this bound divide candidates out before the primality
/// test (the sieve; see the module doc).
pub const SIEVE_BOUND: usize = 1 << 14;

/// The odd primes below [`SIEVE_BOUND`], ascending, by the sieve of
/// Eratosthenes, and how many there are (with N = 0: only how many).
const fn odd_primes<const N: usize>() -> (usize, [u64; N]) {
    let mut composite = [false; SIEVE_BOUND];
    let mut out = [0u64; N];
    let (mut n, mut count) = (3, 0);
    while n < SIEVE_BOUND {
        if !composite[n] {
            if count < N {
                out[count] = n as u64;
            }
            count += 1;
            let mut k = n * n;
            while k < SIEVE_BOUND {
                composite[k] = true;
                k += 2 * n;
            }
        }
        n += 2;
    }
    (count, out)
}

const PRIME_COUNT: usize = odd_primes::<0>().0;
/// The odd primes below [`SIEVE_BOUND`], from which the tables below are built.
const PRIMES: [u64; PRIME_COUNT] = odd_primes::<PRIME_COUNT>().1;

/// A divisibility test by one odd prime p: x is a multiple of p exactly when
/// x·inv mod 2^64 ≤ lim, with inv = p⁻¹ mod 2^64 and lim = ⌊(2^64 − 1)/p⌋
/// (multiplication by inv permutes the u64s and maps the multiples k·p,
/// k ≤ lim, onto 0..=lim).
#[derive(Clone, Copy)]
struct SmallPrime {
    inv: u64,
    lim: u64,
}

impl SmallPrime {
    const fn new(p: u64) -> Self {
        // Newton's iteration: p·p ≡ 1 (mod 8), and each step doubles the
        // correct low bits (3 → 6 → 12 → 24 → 48 → 96).
        let mut inv = p;
        let mut i = 0;
        while i < 5 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(p.wrapping_mul(inv)));
            i += 1;
        }
        Self {
            inv,
            lim: u64::MAX / p,
        }
    }

    /// Does p divide `x`?
    fn divides(&self, x: u64) -> bool {
        x.wrapping_mul(self.inv) <= self.lim
    }
}

/// A divisor d < 2^64 with its top bit set and its reciprocal
/// v = ⌊(2^128 − 1)/d⌋ − 2^64, for remainders by 2-by-1 limb division
/// (Möller and Granlund, "Improved division by invariant integers",
/// algorithm 4).
#[derive(Clone, Copy)]
struct Divisor {
    d: u64,
    v: u64,
}

impl Divisor {
    /// m·2^s for the s that sets the top bit (every factor of m divides it).
    const fn normalised(m: u64) -> Self {
        let d = m << m.leading_zeros();
        Self {
            d,
            // The quotient lies in [2^64, 2^65): dropping its top bit
            // subtracts 2^64.
            v: (u128::MAX / d as u128) as u64,
        }
    }

    /// (u1·2^64 + u0) mod d, for u1 < d.
    fn rem(&self, u1: u64, u0: u64) -> u64 {
        let q = (u128::from(self.v) * u128::from(u1))
            .wrapping_add((u128::from(u1) << 64) | u128::from(u0));
        let q1 = ((q >> 64) as u64).wrapping_add(1);
        let q0 = q as u64;
        let mut r = u0.wrapping_sub(q1.wrapping_mul(self.d));
        if r > q0 {
            r = r.wrapping_add(self.d);
        }
        if r >= self.d {
            r -= self.d;
        }
        r
    }

    /// The remainder modulo d of the integer whose 64-bit words, most
    /// significant first, are `words`.
    fn rem_words(&self, words: &[u64]) -> u64 {
        words.iter().fold(0, |r, &w| self.rem(r, w))
    }
}

/// One batch of the sieve: consecutive primes of [`PRIMES`] up to index
/// `end` (exclusive; from the previous batch's end), whose product m fits a
/// u64, and m normalised.
#[derive(Clone, Copy)]
struct Batch {
    div: Divisor,
    end: usize,
}

/// The batches of [`PRIMES`], and how many there are (with N = 0: only how
/// many).
const fn batches<const N: usize>() -> (usize, [Batch; N]) {
    let empty = Batch {
        div: Divisor { d: 0, v: 0 },
        end: 0,
    };
    let mut out = [empty; N];
    let (mut i, mut count, mut m) = (0, 0, 1u64);
    loop {
        let product = if i < PRIME_COUNT {
            m.checked_mul(PRIMES[i])
        } else {
            None
        };
        if let Some(product) = product {
            m = product;
            i += 1;
            continue;
        }
        // PRIMES[i] does not fit (or none is left): the batch ends before it.
        if count < N {
            out[count] = Batch {
                div: Divisor::normalised(m),
                end: i,
            };
        }
        count += 1;
        if i == PRIME_COUNT {
            return (count, out);
        }
        m = 1;
    }
}

const BATCH_COUNT: usize = batches::<0>().0;
/// The sieve's batches, in the order of [`PRIMES`].
static BATCHES: [Batch; BATCH_COUNT] = batches::<BATCH_COUNT>().1;
/// The divisibility tests of [`PRIMES`], index for index.
static SMALL_PRIMES: [SmallPrime; PRIME_COUNT] = {
    let mut out = [SmallPrime { inv: 0, lim: 0 }; PRIME_COUNT];
    let mut i = 0;
    while i < PRIME_COUNT {
        out[i] = SmallPrime::new(PRIMES[i]);
        i += 1;
    }
    out
};

/// Has the integer of 64-bit words `words` (most significant first) an odd
/// prime factor below [`SIEVE_BOUND`]?
fn has_small_factor(words: &[u64]) -> bool {
    let mut start = 0;
    for batch in &BATCHES {
        let r = batch.div.rem_words(words);
        if SMALL_PRIMES[start..batch.end].iter().any(|p| p.divides(r)) {
            return true;
        }
        start = batch.end;
    }
    false
}

/// The big-endian bytes `b` as 64-bit words, most significant first.
fn be_words(b: &[u8]) -> Vec<u64> {
    let word = |c: &[u8]| c.iter().fold(0u64, |w, &x| (w << 8) | u64::from(x));
    let head = b.len() % 8;
    let mut out = Vec::with_capacity(b.len().div_ceil(8));
    if head != 0 {
        out.push(word(&b[..head]));
    }
    out.extend(b[head..].chunks_exact(8).map(word));
    out
}

/// The greatest common divisor of `a` and `b` (Euclid).
fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn candidate_prime(
    e: u32,
    prime_bytes: usize,
    next: &mut dyn FnMut(usize) -> Vec<u8>,
    other: Option<&BigUint>,
) -> BigUint {
    let min_diff_bits = prime_bytes * 8 - PQ_DIFF_MARGIN_BITS;
    let e = u64::from(e);
    let e_div = Divisor::normalised(e);
    loop {
        let mut c = next(prime_bytes);
        if c.len() != prime_bytes {
            continue;
        }
        c[0] |= 0xC0;
        c[prime_bytes - 1] |= 1;
        let words = be_words(&c);
        // The candidate exceeds the bound, so a small factor makes it composite.
        if has_small_factor(&words) {
            continue;
        }
        // gcd(p − 1, e) = gcd((p − 1) mod e, e), from p mod e·2^s.
        let p_mod_e = e_div.rem_words(&words) % e;
        if gcd((p_mod_e + e - 1) % e, e) != 1 {
            continue;
        }
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
    let e = exponent(e)?;
    let p = candidate_prime(e, bytes / 2, next, None);
    let q = candidate_prime(e, bytes / 2, next, Some(&p));
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

    /// The plain prime search this module had before the sieve: each
    /// candidate straight to `probably_prime` with 20 rounds, then the gcd.
    fn reference_prime(
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
            if !probably_prime(&p, 20) {
                continue;
            }
            let one = BigUint::from(1u32);
            if (&p - &one).gcd(e) != one {
                continue;
            }
            return p;
        }
    }

    /// [`generate`] by [`reference_prime`].
    fn reference_generate(
        bits: u16,
        e: u32,
        next: &mut dyn FnMut(usize) -> Vec<u8>,
    ) -> (Vec<u8>, Vec<u8>) {
        let bytes = usize::from(bits) / 8;
        let e = BigUint::from(exponent(e).unwrap());
        let p = reference_prime(&e, bytes / 2, next, None);
        let q = reference_prime(&e, bytes / 2, next, Some(&p));
        (
            to_fixed(&(&p * &q), bytes).unwrap(),
            to_fixed(&p, bytes / 2).unwrap(),
        )
    }

    #[test]
    fn sieve_and_rounds_keep_the_keys_of_the_plain_search() {
        let cases: [(u16, u32, &[&'static [u8]]); 5] = [
            (1024, 0, &[b"a", b"b", b"c", b"d", b"e", b"f"]),
            // Exponents whose gcd check rejects candidates: p ≡ 1 (mod 3)
            // for a third of them.
            (1024, 3, &[b"a", b"g", b"h"]),
            (1024, 3 * 5 * 7, &[b"a", b"i"]),
            (2048, 0, &[b"a", b"b", b"j", b"k"]),
            (3072, 0, &[b"a", b"l"]),
        ];
        for (bits, e, tags) in cases {
            for &tag in tags {
                assert_eq!(
                    generate(bits, e, &mut stream(tag)).unwrap(),
                    reference_generate(bits, e, &mut stream(tag)),
                    "{bits} bits, e {e}, stream {tag:?}"
                );
            }
        }
    }

    /// The odd primes below `bound` by trial division.
    fn naive_odd_primes(bound: u64) -> Vec<u64> {
        (3..bound)
            .step_by(2)
            .filter(|&n| {
                (3..)
                    .step_by(2)
                    .take_while(|d| d * d <= n)
                    .all(|d| n % d != 0)
            })
            .collect()
    }

    #[test]
    fn sieve_tables_hold_every_odd_prime_below_the_bound() {
        let naive = naive_odd_primes(SIEVE_BOUND as u64);
        assert_eq!(PRIMES.to_vec(), naive);
        // The batches partition the primes in order, each product fitting a
        // u64 and the next prime not fitting.
        let mut start = 0;
        for b in &BATCHES {
            assert!(b.end > start);
            let m = PRIMES[start..b.end]
                .iter()
                .try_fold(1u64, |m, &p| m.checked_mul(p))
                .unwrap();
            assert_eq!(b.div.d, m << m.leading_zeros());
            if b.end < PRIME_COUNT {
                assert!(m.checked_mul(PRIMES[b.end]).is_none());
            }
            start = b.end;
        }
        assert_eq!(start, PRIME_COUNT);
        for (&p, sp) in PRIMES.iter().zip(&SMALL_PRIMES) {
            assert_eq!(p.wrapping_mul(sp.inv), 1);
            for x in [0, p, 2 * p, p * p, u64::MAX / p * p] {
                assert!(sp.divides(x), "{p} | {x}");
            }
            for x in [1, p - 1, p + 1, 2 * p + 1, u64::MAX / p * p - 1, u64::MAX] {
                assert_eq!(sp.divides(x), x % p == 0, "{p} | {x}");
            }
        }
    }

    #[test]
    fn two_by_one_remainders_match_u128() {
        let divisors = [
            1u64,
            3,
            65537,
            0xFFFF_FFFF,
            1 << 63,
            u64::MAX,
            0x8000_0000_0000_0001,
        ];
        let mut next = stream(b"rem");
        let mut word = move || u64::from_be_bytes(next(8).try_into().unwrap());
        let random: Vec<u64> = (0..64).map(|_| word() | 1).collect();
        for m in divisors.into_iter().chain(random) {
            let div = Divisor::normalised(m);
            assert!(div.d >> 63 == 1 && div.d.is_multiple_of(m));
            for _ in 0..64 {
                let (u1, u0) = (word() % div.d, word());
                let want = (((u128::from(u1) << 64) | u128::from(u0)) % u128::from(div.d)) as u64;
                assert_eq!(div.rem(u1, u0), want, "{u1:#x}:{u0:#x} mod {:#x}", div.d);
            }
            for (u1, u0) in [(0, 0), (0, u64::MAX), (div.d - 1, u64::MAX), (div.d - 1, 0)] {
                let want = (((u128::from(u1) << 64) | u128::from(u0)) % u128::from(div.d)) as u64;
                assert_eq!(div.rem(u1, u0), want);
            }
        }
    }

    #[test]
    fn sieve_finds_exactly_the_small_factors() {
        let mut next = stream(b"sieve");
        let has_factor = |x: &BigUint| {
            PRIMES
                .iter()
                .any(|&p| x % BigUint::from(p) == BigUint::from(0u32))
        };
        let mut seen = [0usize; 2];
        for len in [8, 13, 64, 128, 192] {
            for _ in 0..200 {
                let mut c = next(len);
                c[len - 1] |= 1;
                let x = BigUint::from_bytes_be(&c);
                let found = has_small_factor(&be_words(&c));
                assert_eq!(found, has_factor(&x), "{c:02x?}");
                seen[usize::from(found)] += 1;
            }
            // Multiples of the first and last prime and of each batch's
            // first prime, times an odd number free of small factors.
            let mut f = next(len - 2);
            f[len - 3] |= 1;
            while has_factor(&BigUint::from_bytes_be(&f)) {
                f = next(len - 2);
                f[len - 3] |= 1;
            }
            let f = BigUint::from_bytes_be(&f);
            assert!(!has_small_factor(&be_words(&f.to_bytes_be())));
            let firsts = BATCHES.iter().map(|b| b.end).filter(|&i| i < PRIME_COUNT);
            for i in [0, PRIME_COUNT - 1].into_iter().chain(firsts) {
                let x = &f * BigUint::from(PRIMES[i]);
                assert!(
                    has_small_factor(&be_words(&x.to_bytes_be())),
                    "{}",
                    PRIMES[i]
                );
            }
            // The first prime past the bound is not in the sieve.
            let is_prime = |n: u64| {
                (2..)
                    .take_while(|d| d * d <= n)
                    .all(|d| !n.is_multiple_of(d))
            };
            let past = (SIEVE_BOUND as u64..).find(|&n| is_prime(n)).unwrap();
            let x = &f * BigUint::from(past);
            assert!(!has_small_factor(&be_words(&x.to_bytes_be())));
        }
        // Both outcomes occurred among the random values.
        assert!(seen[0] > 0 && seen[1] > 0);
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
