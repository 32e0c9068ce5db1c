//! Part 3 §12.4 TPM2_ActivateCredential and §12.5 TPM2_MakeCredential, with
//! the credential protection of Part 1 §24 ("Credential Protection"):
//!
//! - a seed, one digest of the key's nameAlg long, is shared with the holder of
//!   the (restricted, decrypting) key: RSAES-OAEP encrypted with the label
//!   "IDENTITY\0" for RSA, or agreed by one-pass ECDH for ECC (seed =
//!   KDFe(nameAlg, (d_e·Q).x, "IDENTITY", Q_e.x, Q.x, digest bits), the secret
//!   being the ephemeral point Q_e);
//! - the credential (a TPM2B_DIGEST) is AES-CFB encrypted with a zero IV under
//!   symKey = KDFa(nameAlg, seed, "STORAGE", Name(object), "", key bits);
//! - credentialBlob = TPM2B_DIGEST(HMAC(KDFa(nameAlg, seed, "INTEGRITY", "",
//!   "", digest bits), encIdentity || Name(object))) || encIdentity.

use crate::defs::{limits, rc};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::HashAlg;
use crate::marshal::{Reader, Writer};
use crate::object::Key;
use crate::public::{self, attr, ids, SymObject};
use crate::rsa_key::{self, FillRng};
use crate::rsa_pad;
use crate::session::{aes_cfb, ct_eq, kdfa};
use alloc::vec::Vec;

/// Largest TPM2B_ENCRYPTED_SECRET (a block of the largest RSA key).
const MAX_SECRET: usize = rsa_key::MAX_RSA_BYTES;
/// Largest TPM2B_ID_OBJECT accepted.
const MAX_ID_OBJECT: usize = 2 + limits::TPMU_HA_SIZE + 2 + limits::TPMU_HA_SIZE;
/// Largest TPM2B_NAME.
const MAX_NAME: usize = 2 + limits::TPMU_HA_SIZE;

/// The label of a credential's seed (KDFe and OAEP add the terminating zero).
const IDENTITY: &[u8] = b"IDENTITY";

/// A fresh seed, one digest of `key`'s nameAlg long, and its encryption to
/// `key` under `label` (Part 1 §B.10.3 / §C.6.4, "secret sharing"): RSAES-OAEP
/// with label || 0, or one-pass ECDH (the secret is the ephemeral point).
pub(crate) fn seal_seed(tpm: &mut Tpm, key: &Key, label: &[u8]) -> Result<(Vec<u8>, Vec<u8>), u32> {
    let h = key.public.name_alg;
    if key.public.ty == ids::RSA {
        let mut seed = alloc::vec![0u8; h.digest_size()];
        tpm.random(&mut seed);
        let pk = key.public.rsa_public().ok_or(rc::KEY + rc::H + rc::N1)?;
        let oaep_label = [label, &[0]].concat();
        let mut fill = |b: &mut [u8]| tpm.random(b);
        let secret = rsa_pad::oaep_encrypt(&pk, h, &oaep_label, &seed, &mut FillRng(&mut fill))
            .ok_or(rc::FAILURE)?;
        return Ok((seed, secret));
    }
    let d = public::derive_scalar(key.public.curve, |_| {
        let mut b = alloc::vec![0u8; key.public.curve.bytes()];
        tpm.random(&mut b);
        b
    });
    let z = public::ecdh_x(&d, &key.public.x, &key.public.y).ok_or(rc::KEY + rc::H + rc::N1)?;
    let (qx, qy) = d.public().xy();
    let (qx, qy) = (&qx[..], &qy[..]);
    let seed = public::kdfe(h, &z, label, qx, &key.public.x, h.digest_size() as u32 * 8);
    let mut point = Writer::new();
    point.tpm2b(qx).tpm2b(qy);
    Ok((seed, point.buf))
}

/// Is `k` a key credentials can be protected to: an asymmetric restricted
/// decryption key with an AES-CFB symmetric algorithm?
fn protector(k: &Key) -> Option<u16> {
    let SymObject::AesCfb(bits) = k.public.symmetric else {
        return None;
    };
    (matches!(k.public.ty, ids::ECC | ids::RSA) && k.public.has(attr::RESTRICTED | attr::DECRYPT))
        .then_some(bits)
}

/// The symmetric key and the HMAC key protecting a credential.
pub(crate) fn credential_keys(
    h: HashAlg,
    seed: &[u8],
    name: &[u8],
    bits: u16,
) -> (Vec<u8>, Vec<u8>) {
    let sym = kdfa(h, seed, b"STORAGE", name, &[], u32::from(bits));
    let mac = kdfa(h, seed, b"INTEGRITY", &[], &[], h.digest_size() as u32 * 8);
    (sym, mac)
}

pub fn make_credential(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let credential = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?.to_vec();
    let name = cmd.params.tpm2b(MAX_NAME).p(2)?.to_vec();
    cmd.finish()?;
    let key = tpm
        .key(cmd.handles[0])
        .ok_or(rc::TYPE + rc::H + rc::N1)?
        .clone();
    let bits = protector(&key).ok_or(rc::TYPE + rc::H + rc::N1)?;
    let h = key.public.name_alg;
    if credential.len() > h.digest_size() {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    let (seed, secret) = seal_seed(tpm, &key, IDENTITY)?;
    let (sym, mac) = credential_keys(h, &seed, &name, bits);
    let mut enc = Writer::new();
    enc.tpm2b(&credential);
    let mut enc = enc.buf;
    aes_cfb(&sym, &[0u8; 16], &mut enc, true);
    let integrity = h.hmac(&mac, &[&enc, &name]);
    let mut blob = Writer::new();
    blob.tpm2b(integrity.as_bytes()).bytes(&enc);
    cmd.out.tpm2b(&blob.buf).tpm2b(&secret);
    Ok(())
}

/// The seed `secret` (command parameter `n`) carries to `key` under
/// `label` (the inverse of [`seal_seed`]).
pub(crate) fn recover_seed(
    tpm: &mut Tpm,
    key: &Key,
    secret: &[u8],
    label: &[u8],
    n: u32,
) -> Result<Vec<u8>, u32> {
    let h = key.public.name_alg;
    let pn = rc::P + n * rc::N1;
    let seed = if key.public.ty == ids::RSA {
        let k = key
            .private
            .as_deref()
            .and_then(|p| rsa_key::private_key(&key.public.x, key.public.exponent, p))
            .ok_or(rc::AUTH_UNAVAILABLE)?;
        if secret.len() != key.public.x.len() {
            return Err(rc::SIZE + pn);
        }
        let oaep_label = [label, &[0]].concat();
        let mut fill = |b: &mut [u8]| tpm.random(b);
        rsa_pad::oaep_decrypt(&k, h, &oaep_label, secret, &mut FillRng(&mut fill))
            .ok_or(rc::VALUE + pn)?
    } else {
        let d = key
            .private
            .as_deref()
            .and_then(|p| key.public.scalar(p))
            .ok_or(rc::AUTH_UNAVAILABLE)?;
        let mut r = Reader::new(secret);
        let x = r.tpm2b(public::MAX_ECC_BYTES).map_err(|e| e + pn)?;
        let y = r.tpm2b(public::MAX_ECC_BYTES).map_err(|e| e + pn)?;
        if r.remaining() != 0 {
            return Err(rc::SIZE + pn);
        }
        let z = public::ecdh_x(&d, x, y).ok_or(rc::ECC_POINT + pn)?;
        public::kdfe(h, &z, label, x, &key.public.x, h.digest_size() as u32 * 8)
    };
    if seed.len() != h.digest_size() {
        return Err(rc::VALUE + pn);
    }
    Ok(seed)
}

pub fn activate_credential(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let blob = cmd.params.tpm2b(MAX_ID_OBJECT).p(1)?.to_vec();
    let secret = cmd.params.tpm2b(MAX_SECRET).p(2)?.to_vec();
    cmd.finish()?;
    let h2 = rc::H + 2 * rc::N1;
    let object = tpm.key(cmd.handles[0]).ok_or(rc::TYPE + rc::H + rc::N1)?;
    let name = object.name.clone();
    let key = tpm.key(cmd.handles[1]).ok_or(rc::TYPE + h2)?.clone();
    if !matches!(key.public.ty, ids::ECC | ids::RSA) {
        return Err(rc::TYPE + h2);
    }
    let bits = protector(&key).ok_or(rc::ATTRIBUTES + h2)?;
    let seed = recover_seed(tpm, &key, &secret, IDENTITY, 2)?;
    let h = key.public.name_alg;
    let (sym, mac) = credential_keys(h, &seed, &name, bits);
    let p1 = rc::P + rc::N1;
    let mut r = Reader::new(&blob);
    let integrity = r.tpm2b(limits::TPMU_HA_SIZE).map_err(|e| e + p1)?;
    let enc = r.rest();
    if integrity.len() != h.digest_size() {
        return Err(rc::SIZE + p1);
    }
    let expect = h.hmac(&mac, &[enc, &name]);
    if !ct_eq(integrity, expect.as_bytes()) {
        log::warn!("vtpm: ActivateCredential: the credential blob fails its integrity check");
        return Err(rc::INTEGRITY + p1);
    }
    let mut plain = enc.to_vec();
    aes_cfb(&sym, &[0u8; 16], &mut plain, false);
    let mut r = Reader::new(&plain);
    let credential = r.tpm2b(h.digest_size()).map_err(|_| rc::SIZE + p1)?;
    if r.remaining() != 0 {
        return Err(rc::SIZE + p1);
    }
    cmd.out.tpm2b(credential);
    Ok(())
}
