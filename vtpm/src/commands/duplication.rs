//! Part 3 §13: TPM2_Duplicate (§13.1), TPM2_Rewrap (§13.2) and TPM2_Import
//! (§13.3), with the
//! duplication wrappers of Part 1 §23.3:
//!
//! - the inner wrapper (optional, symmetricAlg not TPM_ALG_NULL): AES-CFB with
//!   a zero IV under encryptionKey over TPM2B_DIGEST(H_nameAlg(TPM2B_SENSITIVE
//!   || Name)) || TPM2B_SENSITIVE;
//! - the outer wrapper (a new parent other than TPM_RH_NULL): a seed shared with
//!   the new parent under the label "DUPLICATE" (see
//!   `credential::seal_seed`), AES-CFB under KDFa(parent nameAlg, seed,
//!   "STORAGE", Name, "", parent key bits) and an HMAC under KDFa(…,
//!   "INTEGRITY", …) over the ciphertext || Name, placed before it.

use super::create::{bound, storage_parent, wrap};
use super::credential::{credential_keys, recover_seed, seal_seed};
use crate::defs::{alg, handle, limits, rc};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::Digest;
use crate::marshal::{Reader, Writer};
use crate::object::Key;
use crate::public::{attr, ids, name_of, Public, SymObject};
use crate::session::{aes_cfb, ct_eq};
use alloc::vec::Vec;

const DUPLICATE: &[u8] = b"DUPLICATE";
/// Largest TPM2B_PRIVATE accepted.
const MAX_PRIVATE: usize = 512;
/// Largest TPM2B_ENCRYPTED_SECRET (a block of the largest RSA key).
const MAX_SECRET: usize = crate::rsa_key::MAX_RSA_BYTES;
/// Largest TPM2B_DATA (sizeof(TPMT_HA)).
const MAX_DATA: usize = limits::TPMU_HA_SIZE + 2;

/// TPMT_SYM_DEF_OBJECT+ (command parameter `n`): the AES key bits of a CFB
/// inner wrapper, or None for TPM_ALG_NULL.
fn inner_alg(r: &mut Reader, n: u32) -> Result<Option<u16>, u32> {
    let pn = rc::P + n * rc::N1;
    match r.u16().p(n)? {
        alg::NULL => Ok(None),
        ids::AES => {
            let bits = r.u16().p(n)?;
            if !matches!(bits, 128 | 192 | 256) {
                return Err(rc::KEY_SIZE + pn);
            }
            if r.u16().p(n)? != ids::CFB {
                return Err(rc::MODE + pn);
            }
            Ok(Some(bits))
        }
        _ => Err(rc::SYMMETRIC + pn),
    }
}

/// TPM2B_SENSITIVE of `k`.
fn sensitive_2b(k: &Key) -> Vec<u8> {
    let mut s = Writer::new();
    s.u16(k.public.ty)
        .tpm2b(k.auth.as_bytes())
        .tpm2b(&k.seed_value)
        .tpm2b(k.private.as_deref().unwrap_or(&[]));
    let mut w = Writer::new();
    w.tpm2b(&s.buf);
    w.buf
}

/// The AES-CFB outer wrapper for a parent of nameAlg `parent_alg` and key
/// `bits`, keyed by `seed`: integrity || ciphertext.
fn outer_wrap(parent: &Key, bits: u16, seed: &[u8], name: &[u8], mut data: Vec<u8>) -> Vec<u8> {
    let h = parent.public.name_alg;
    let (sym, mac) = credential_keys(h, seed, name, bits);
    aes_cfb(&sym, &[0u8; 16], &mut data, true);
    let integrity = h.hmac(&mac, &[&data, name]);
    let mut w = Writer::new();
    w.tpm2b(integrity.as_bytes()).bytes(&data);
    w.buf
}

/// The symmetric key bits of a storage key.
fn storage_bits(k: &Key) -> Option<u16> {
    match k.public.symmetric {
        SymObject::AesCfb(bits) => Some(bits),
        _ => None,
    }
}

pub fn duplicate(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let key_in = cmd.params.tpm2b(MAX_DATA).p(1)?.to_vec();
    let inner = inner_alg(&mut cmd.params, 2)?;
    cmd.finish()?;
    let h1 = rc::H + rc::N1;
    let h2 = rc::H + 2 * rc::N1;
    let object = tpm.key(cmd.handles[0]).ok_or(rc::TYPE + h1)?.clone();
    if object.public.has(attr::FIXED_PARENT) || object.private.is_none() {
        return Err(rc::ATTRIBUTES + h1);
    }
    let new_parent = cmd.handles[1];
    if object.public.has(attr::ENCRYPTED_DUPLICATION) {
        if inner.is_none() {
            return Err(rc::SYMMETRIC + rc::P + 2 * rc::N1);
        }
        if new_parent == handle::NULL {
            return Err(rc::HIERARCHY + h2);
        }
    }
    let parent = if new_parent == handle::NULL {
        None
    } else {
        let p = tpm.key(new_parent).ok_or(rc::TYPE + h2)?.clone();
        let storage = matches!(p.public.ty, ids::ECC | ids::RSA)
            && p.public.has(attr::RESTRICTED | attr::DECRYPT)
            && storage_bits(&p).is_some();
        if !storage {
            return Err(rc::TYPE + h2);
        }
        Some(p)
    };
    let name = object.name.clone();
    let mut blob = sensitive_2b(&object);
    let mut key_out = Vec::new();
    match inner {
        None if !key_in.is_empty() => return Err(rc::SIZE + rc::P + rc::N1),
        None => {}
        Some(bits) => {
            let n = usize::from(bits / 8);
            let key = if key_in.is_empty() {
                let mut k = alloc::vec![0u8; n];
                tpm.random(&mut k);
                key_out = k.clone();
                k
            } else if key_in.len() == n {
                key_in
            } else {
                return Err(rc::SIZE + rc::P + rc::N1);
            };
            let integrity = object.public.name_alg.digest(&[&blob, &name]);
            let mut w = Writer::new();
            w.tpm2b(integrity.as_bytes()).bytes(&blob);
            blob = w.buf;
            aes_cfb(&key, &[0u8; 16], &mut blob, true);
        }
    }
    let (dup, secret) = match parent {
        None => (blob, Vec::new()),
        Some(p) => {
            let (seed, secret) = seal_seed(tpm, &p, DUPLICATE)?;
            let bits = storage_bits(&p).ok_or(rc::FAILURE)?;
            (outer_wrap(&p, bits, &seed, &name, blob), secret)
        }
    };
    cmd.out.tpm2b(&key_out).tpm2b(&dup).tpm2b(&secret);
    Ok(())
}

/// The storage key of handle `hn` (its value `h`), or None for TPM_RH_NULL.
fn storage_or_null(tpm: &Tpm, h: u32, hn: u32) -> Result<Option<(Key, u16)>, u32> {
    if h == handle::NULL {
        return Ok(None);
    }
    let bad = rc::TYPE + rc::H + hn * rc::N1;
    let k = tpm.key(h).ok_or(bad)?;
    let storage = matches!(k.public.ty, ids::ECC | ids::RSA)
        && k.public.has(attr::RESTRICTED | attr::DECRYPT);
    let bits = storage_bits(k).filter(|_| storage).ok_or(bad)?;
    Ok(Some((k.clone(), bits)))
}

/// Removes the outer wrapper `parent` (key bits `bits`) put on a duplicate
/// of the object named `name`, with the seed in `in_sym_seed` (command
/// parameter `seed_param`); integrity failures are charged to parameter
/// `dup_param`.
fn outer_unwrap(
    tpm: &mut Tpm,
    (parent, bits): (&Key, u16),
    name: &[u8],
    dup: &[u8],
    in_sym_seed: &[u8],
    (dup_param, seed_param): (u32, u32),
) -> Result<Vec<u8>, u32> {
    let seed = recover_seed(tpm, parent, in_sym_seed, DUPLICATE, seed_param)?;
    let h = parent.public.name_alg;
    let (sym, mac) = credential_keys(h, &seed, name, bits);
    let bad = rc::INTEGRITY + rc::P + dup_param * rc::N1;
    let mut r = Reader::new(dup);
    let integrity = r.tpm2b(limits::TPMU_HA_SIZE).map_err(|_| bad)?;
    let enc = r.rest();
    if !ct_eq(integrity, h.hmac(&mac, &[enc, name]).as_bytes()) {
        log::warn!("vtpm: the outer integrity of a duplicate does not check");
        return Err(bad);
    }
    let mut plain = enc.to_vec();
    aes_cfb(&sym, &[0u8; 16], &mut plain, false);
    Ok(plain)
}

/// TPM2_Rewrap: the outer wrapper of a duplicate moves from oldParent (USER)
/// to newParent; either may be TPM_RH_NULL (no wrapper).
pub fn rewrap(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let dup = cmd.params.tpm2b(MAX_PRIVATE).p(1)?.to_vec();
    let name = cmd.params.tpm2b(limits::TPMU_HA_SIZE + 2).p(2)?.to_vec();
    let in_sym_seed = cmd.params.tpm2b(MAX_SECRET).p(3)?.to_vec();
    cmd.finish()?;
    let is_name = name.len() >= 2
        && crate::hash::HashAlg::from_id(u16::from_be_bytes([name[0], name[1]]))
            .is_some_and(|h| name.len() == 2 + h.digest_size());
    if !is_name {
        return Err(rc::SIZE + rc::P + 2 * rc::N1);
    }
    let old = storage_or_null(tpm, cmd.handles[0], 1)?;
    let new = storage_or_null(tpm, cmd.handles[1], 2)?;
    let plain = match &old {
        None if !in_sym_seed.is_empty() => return Err(rc::VALUE + rc::P + 3 * rc::N1),
        None => dup,
        Some((k, bits)) => outer_unwrap(tpm, (k, *bits), &name, &dup, &in_sym_seed, (1, 3))?,
    };
    let (out, secret) = match new {
        None => (plain, Vec::new()),
        Some((k, bits)) => {
            let (seed, secret) = seal_seed(tpm, &k, DUPLICATE)?;
            (outer_wrap(&k, bits, &seed, &name, plain), secret)
        }
    };
    cmd.out.tpm2b(&out).tpm2b(&secret);
    Ok(())
}

pub fn import(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let enc_key = cmd.params.tpm2b(MAX_DATA).p(1)?.to_vec();
    let public = Public::unmarshal_2b(&mut cmd.params).p(2)?;
    let dup = cmd.params.tpm2b(MAX_PRIVATE).p(3)?.to_vec();
    let in_sym_seed = cmd.params.tpm2b(MAX_SECRET).p(4)?.to_vec();
    let inner = inner_alg(&mut cmd.params, 5)?;
    cmd.finish()?;
    let (p1, p2, p3) = (rc::P + rc::N1, rc::P + 2 * rc::N1, rc::P + 3 * rc::N1);
    match inner {
        None if !enc_key.is_empty() => return Err(rc::SIZE + p1),
        Some(bits) if enc_key.len() != usize::from(bits / 8) => return Err(rc::SIZE + p1),
        _ => {}
    }
    let parent = storage_parent(tpm, cmd.handles[0])?;
    if public.has(attr::FIXED_TPM) || public.has(attr::FIXED_PARENT) {
        return Err(rc::ATTRIBUTES + p2);
    }
    if public.has(attr::ENCRYPTED_DUPLICATION) && (inner.is_none() || in_sym_seed.is_empty()) {
        return Err(rc::ATTRIBUTES + p2);
    }
    public.validate(false).map_err(|e| rc::safe_add(e, p2))?;
    let name = public.name();
    // The outer wrapper.
    let mut blob = if in_sym_seed.is_empty() {
        dup
    } else {
        let bits = storage_bits(&parent).ok_or(rc::TYPE + rc::H + rc::N1)?;
        outer_unwrap(tpm, (&parent, bits), &name, &dup, &in_sym_seed, (3, 4))?
    };
    // The inner wrapper.
    if inner.is_some() {
        aes_cfb(&enc_key, &[0u8; 16], &mut blob, false);
        let mut r = Reader::new(&blob);
        let integrity = r
            .tpm2b(limits::TPMU_HA_SIZE)
            .map_err(|_| rc::INTEGRITY + p3)?;
        let sensitive = r.rest();
        let expect = public.name_alg.digest(&[sensitive, &name]);
        if !ct_eq(integrity, expect.as_bytes()) {
            log::warn!("vtpm: Import: the inner integrity of the duplicate does not check");
            return Err(rc::INTEGRITY + p3);
        }
        blob = sensitive.to_vec();
    }
    // TPM2B_SENSITIVE.
    let bad = |_| rc::INTEGRITY + p3;
    let mut r = Reader::new(&blob);
    let n = r.u16().map_err(bad)? as usize;
    let mut s = r.sub(n).map_err(bad)?;
    let ty = s.u16().map_err(bad)?;
    let auth = s.tpm2b(limits::TPMU_HA_SIZE).map_err(bad)?.to_vec();
    let seed_value = s.tpm2b(limits::TPMU_HA_SIZE).map_err(bad)?.to_vec();
    let mut secret = s
        .tpm2b(crate::public::max_sensitive(ty))
        .map_err(bad)?
        .to_vec();
    if s.remaining() != 0 || r.remaining() != 0 {
        return Err(rc::INTEGRITY + p3);
    }
    if ty != public.ty {
        return Err(rc::TYPE + p2);
    }
    // An ECC scalar may come without its leading zero bytes.
    if ty == ids::ECC && secret.len() < public.curve.bytes() {
        let mut padded = alloc::vec![0u8; public.curve.bytes() - secret.len()];
        padded.extend_from_slice(&secret);
        secret = padded;
    }
    let auth = crate::auth::strip_trailing_zeros(&auth).to_vec();
    if auth.len() > public.name_alg.digest_size() {
        return Err(rc::SIZE + p3);
    }
    if !bound(&public, &secret, &seed_value) {
        return Err(rc::BINDING + p2);
    }
    let key = Key {
        qualified_name: name_of(
            public.name_alg,
            &[&parent.qualified_name[..], &name].concat(),
        ),
        name,
        hierarchy: parent.hierarchy,
        auth: Digest::from_slice(&auth),
        private: Some(secret),
        seed_value,
        public,
    };
    cmd.out.tpm2b(&wrap(&parent, &key));
    Ok(())
}
