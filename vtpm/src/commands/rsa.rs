//! Part 3 §14.2, §14.3 and the RSA halves of §20: TPM2_RSA_Encrypt and
//! TPM2_RSA_Decrypt (RSAES-OAEP with a zero-terminated label, RSAES-PKCS1-v1_5),
//! and the RSASSA-PKCS1-v1_5 / RSASSA-PSS signing and verification used by
//! TPM2_Sign, TPM2_VerifySignature and TPM2_Quote, plus the RSA-OAEP salt
//! decryption of TPM2_StartAuthSession.

use crate::defs::{alg, limits, rc};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::HashAlg;
use crate::object::Key;
use crate::public::{attr, ids};
use crate::rsa_key::{self, FillRng, MAX_RSA_BYTES};
use crate::rsa_pad;
use alloc::vec::Vec;

/// The private RSA key of `key`, or `err` when it has none or it does not
/// rebuild.
fn private(key: &Key, err: u32) -> Result<rsa::RsaPrivateKey, u32> {
    key.private
        .as_deref()
        .and_then(|p| rsa_key::private_key(&key.public.x, key.public.exponent, p))
        .ok_or(err)
}

/// Signs `digest` with RSA key `key` under `scheme` (RSASSA or RSAPSS) and
/// `hash`; returns the signature block (the modulus's size). The blinding and the
/// PSS salt come from the TPM's DRBG.
pub(crate) fn sign(
    tpm: &mut Tpm,
    key: &Key,
    scheme: u16,
    hash: HashAlg,
    digest: &[u8],
) -> Result<Vec<u8>, u32> {
    let k = private(key, rc::AUTH_UNAVAILABLE)?;
    if !matches!(scheme, ids::RSASSA | ids::RSAPSS) || digest.len() != hash.digest_size() {
        return Err(rc::SCHEME + rc::P + 2 * rc::N1);
    }
    let mut fill = |b: &mut [u8]| tpm.random(b);
    let rng = &mut FillRng(&mut fill);
    let sig = if scheme == ids::RSASSA {
        rsa_pad::sign_pkcs1v15(&k, hash, digest, rng)
    } else {
        rsa_pad::sign_pss(&k, hash, digest, rng)
    };
    sig.ok_or(rc::FAILURE)
}

/// Verifies an RSASSA/RSAPSS signature `sig` over `digest`.
pub(crate) fn verify(key: &Key, scheme: u16, hash: HashAlg, digest: &[u8], sig: &[u8]) -> bool {
    let Some(pk) = key.public.rsa_public() else {
        return false;
    };
    if sig.len() != key.public.x.len() || digest.len() != hash.digest_size() {
        return false;
    }
    match scheme {
        ids::RSASSA => rsa_pad::verify_pkcs1v15(&pk, hash, digest, sig),
        ids::RSAPSS => rsa_pad::verify_pss(&pk, hash, digest, sig),
        _ => false,
    }
}

/// TPMT_RSA_DECRYPT (bare codes): (scheme, hash) — RSAES, OAEP with its
/// hash — or None for TPM_ALG_NULL.
fn decrypt_scheme(cmd: &mut Cmd) -> Result<Option<(u16, HashAlg)>, u32> {
    match cmd.params.u16()? {
        alg::NULL => Ok(None),
        ids::RSAES => Ok(Some((ids::RSAES, HashAlg::Sha256))),
        ids::OAEP => Ok(Some((
            ids::OAEP,
            cmd.params.hash_alg(false)?.ok_or(rc::HASH)?,
        ))),
        _ => Err(rc::SCHEME),
    }
}

/// The scheme of an RSA encryption: the key's, or the command's when the
/// key has none (they must agree when both are given).
fn pick_scheme(key: &Key, scheme: Option<(u16, HashAlg)>) -> Result<(u16, HashAlg), u32> {
    let bad = rc::SCHEME + rc::P + 2 * rc::N1;
    let key_scheme = key.public.scheme;
    let s = match (key_scheme, scheme) {
        (Some(k), None) => k,
        (Some(k), Some(c)) if k.0 == c.0 && (k.0 == ids::RSAES || k.1 == c.1) => k,
        (None, Some(c)) => c,
        _ => return Err(bad),
    };
    if !matches!(s.0, ids::RSAES | ids::OAEP) {
        return Err(bad);
    }
    Ok(s)
}

/// The RSA decrypt key of handle 1 (bare TYPE/ATTRIBUTES codes with the
/// handle number).
fn rsa_key_of(tpm: &Tpm, h: u32) -> Result<Key, u32> {
    let h1 = rc::H + rc::N1;
    let k = tpm.key(h).ok_or(rc::KEY + h1)?;
    if k.public.ty != ids::RSA {
        return Err(rc::KEY + h1);
    }
    if !k.public.has(attr::DECRYPT) {
        return Err(rc::ATTRIBUTES + h1);
    }
    Ok(k.clone())
}

/// A label must be empty or end in a zero byte (IsLabelProperlyFormatted).
fn check_label(label: &[u8]) -> Result<(), u32> {
    if label.is_empty() || label[label.len() - 1] == 0 {
        Ok(())
    } else {
        Err(rc::VALUE + rc::P + 3 * rc::N1)
    }
}

pub fn rsa_encrypt(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let message = cmd.params.tpm2b(MAX_RSA_BYTES).p(1)?.to_vec();
    let scheme = decrypt_scheme(cmd).p(2)?;
    let label = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(3)?.to_vec();
    cmd.finish()?;
    check_label(&label)?;
    let key = rsa_key_of(tpm, cmd.handles[0])?;
    let (s, hash) = pick_scheme(&key, scheme)?;
    let pk = key.public.rsa_public().ok_or(rc::KEY + rc::H + rc::N1)?;
    let mut fill = |b: &mut [u8]| tpm.random(b);
    let rng = &mut FillRng(&mut fill);
    let out = if s == ids::OAEP {
        rsa_pad::oaep_encrypt(&pk, hash, &label, &message, rng)
    } else {
        rsa_pad::pkcs1v15_encrypt(&pk, &message, rng)
    }
    .ok_or(rc::VALUE + rc::P + rc::N1)?;
    cmd.out.tpm2b(&out);
    Ok(())
}

pub fn rsa_decrypt(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let cipher = cmd.params.tpm2b(MAX_RSA_BYTES).p(1)?.to_vec();
    let scheme = decrypt_scheme(cmd).p(2)?;
    let label = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(3)?.to_vec();
    cmd.finish()?;
    check_label(&label)?;
    let key = rsa_key_of(tpm, cmd.handles[0])?;
    if key.public.has(attr::RESTRICTED) {
        return Err(rc::ATTRIBUTES + rc::H + rc::N1);
    }
    let (s, hash) = pick_scheme(&key, scheme)?;
    let k = private(&key, rc::AUTH_UNAVAILABLE)?;
    if cipher.len() != key.public.x.len() {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    let mut fill = |b: &mut [u8]| tpm.random(b);
    let rng = &mut FillRng(&mut fill);
    let msg = if s == ids::OAEP {
        rsa_pad::oaep_decrypt(&k, hash, &label, &cipher, rng)
    } else {
        rsa_pad::pkcs1v15_decrypt(&k, &cipher, rng)
    };
    let Some(msg) = msg else {
        log::warn!("vtpm: RSA_Decrypt: the padding does not check");
        return Err(rc::VALUE + rc::P + rc::N1);
    };
    cmd.out.tpm2b(&msg);
    Ok(())
}

/// The salt of a session salted with RSA key `key`: the encrypted secret is
/// RSAES-OAEP with the key's nameAlg and the label "SECRET\0" (Part 1
/// §B.10.3); the salt may be at most one digest of nameAlg long.
pub(crate) fn decrypt_salt(tpm: &mut Tpm, key: &Key, secret: &[u8]) -> Result<Vec<u8>, u32> {
    let h1 = rc::H + rc::N1;
    let k = private(key, rc::HANDLE + h1)?;
    if !key.public.has(attr::DECRYPT) {
        return Err(rc::ATTRIBUTES + h1);
    }
    let bad = rc::VALUE + rc::P + 2 * rc::N1;
    if secret.len() != key.public.x.len() {
        return Err(bad);
    }
    let h = key.public.name_alg;
    let mut fill = |b: &mut [u8]| tpm.random(b);
    let salt =
        rsa_pad::oaep_decrypt(&k, h, b"SECRET\0", secret, &mut FillRng(&mut fill)).ok_or(bad)?;
    if salt.len() > h.digest_size() {
        return Err(bad);
    }
    Ok(salt)
}
