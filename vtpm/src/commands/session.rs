//! Part 3 §11 and §28: TPM2_StartAuthSession (unsalted, or salted with an ECC
//! P-256 or RSA-2048 decrypt key) and TPM2_ContextSave / TPM2_ContextLoad (sessions here,
//! objects in [`super::object_context`]). A saved session keeps its slot (and
//! handle) in the TPM; its context blob carries only an integrity value binding
//! the handle to the context sequence number under the null proof.

use crate::defs::{handle, limits, rc};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::{Digest, HashAlg};
use crate::session::{ct_eq, AuthSession, SessionKind, Symmetric};
use alloc::vec::Vec;

/// Largest TPM2B_ENCRYPTED_SECRET (a salt encrypted with the largest RSA key).
const MAX_ENCRYPTED_SECRET: usize = crate::rsa_key::MAX_RSA_BYTES;
/// Largest TPM2B_CONTEXT_DATA accepted.
const MAX_CONTEXT_DATA: usize = 2048;
/// Hash of context integrity values.
const CONTEXT_HASH: HashAlg = HashAlg::Sha384;

pub fn start_auth_session(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let nonce_caller = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    let salt = cmd.params.tpm2b(MAX_ENCRYPTED_SECRET).p(2)?;
    let kind = cmd.params.u8().p(3)?;
    let kind = SessionKind::from_se(kind).ok_or(rc::VALUE + rc::P + 3 * rc::N1)?;
    let symmetric = Symmetric::unmarshal(&mut cmd.params).p(4)?;
    let hash = cmd
        .params
        .hash_alg(false)
        .p(5)?
        .ok_or(rc::HASH + rc::P + 5 * rc::N1)?;
    cmd.finish()?;
    if nonce_caller.len() < limits::MIN_NONCE || nonce_caller.len() > hash.digest_size() {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    let salt = if cmd.handles[0] == handle::NULL {
        if !salt.is_empty() {
            return Err(rc::VALUE + rc::P + 2 * rc::N1);
        }
        Vec::new()
    } else {
        decrypt_salt(tpm, cmd.handles[0], salt)?
    };
    let bind = cmd.handles[1];
    let bind = (bind != handle::NULL).then(|| (bind, tpm.auth_value(bind)));
    let mut nonce_tpm = Digest::filled(hash.digest_size(), 0);
    tpm.random(nonce_tpm.as_bytes_mut());
    let mut s = AuthSession::new(
        kind,
        hash,
        symmetric,
        nonce_tpm,
        nonce_caller,
        bind,
        &salt,
        tpm.tpm_time(),
    );
    // A session bound to a DA-protected object counts its failures.
    s.da_bound = s.bound.is_some()
        && tpm
            .v
            .objects
            .get(cmd.handles[1])
            .is_some_and(|o| o.da_protected());
    let h = tpm.v.sessions.insert(s).map_err(|e| e.rc())?;
    cmd.r_handle = Some(h);
    cmd.out.tpm2b(nonce_tpm.as_bytes());
    Ok(())
}

/// The salt of a session salted with ECC key `key`: the encrypted secret is
/// the caller's ephemeral point Qe, and salt = KDFe(nameAlg, (d·Qe).x,
/// "SECRET", Qe.x, Qkey.x, digest bits) (Part 1 §C.6.4, §11.4.10.3).
/// An RSA key's salt is RSAES-OAEP encrypted (see [`super::rsa`]).
fn decrypt_salt(tpm: &mut Tpm, key_handle: u32, secret: &[u8]) -> Result<Vec<u8>, u32> {
    let h1 = rc::H + rc::N1;
    let key = tpm.key(key_handle).ok_or(rc::KEY + h1)?;
    if secret.is_empty() {
        return Err(rc::VALUE + rc::P + 2 * rc::N1);
    }
    if key.public.ty == crate::public::ids::RSA {
        let key = key.clone();
        return super::rsa::decrypt_salt(tpm, &key, secret);
    }
    let d = key
        .private
        .as_deref()
        .and_then(|p| key.public.scalar(p))
        .ok_or(rc::HANDLE + h1)?;
    if !key.public.has(crate::public::attr::DECRYPT) {
        return Err(rc::ATTRIBUTES + h1);
    }
    let bad = rc::VALUE + rc::P + 2 * rc::N1;
    let mut r = crate::marshal::Reader::new(secret);
    let x = r.tpm2b(crate::public::MAX_ECC_BYTES).map_err(|_| bad)?;
    let y = r.tpm2b(crate::public::MAX_ECC_BYTES).map_err(|_| bad)?;
    if r.remaining() != 0 {
        return Err(bad);
    }
    let z = crate::public::ecdh_x(&d, x, y).ok_or(bad)?;
    let h = key.public.name_alg;
    Ok(crate::public::kdfe(
        h,
        &z,
        b"SECRET",
        x,
        &key.public.x,
        h.digest_size() as u32 * 8,
    ))
}

fn context_integrity(tpm: &Tpm, sequence: u64, h: u32) -> Digest {
    CONTEXT_HASH.hmac(
        &tpm.p.null_proof,
        &[
            b"session context",
            &sequence.to_be_bytes(),
            &h.to_be_bytes(),
        ],
    )
}

pub fn context_save(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let h = cmd.handles[0];
    let sequence = tpm.v.context_counter;
    if handle::ht(h) == handle::HT_TRANSIENT {
        let (saved, hierarchy, blob) = crate::commands::object_context::save(tpm, h, sequence)
            .map_err(|e| rc::safe_add(e, rc::H + rc::N1))?;
        tpm.v.context_counter += 1;
        cmd.out.u64(sequence).u32(saved).u32(hierarchy).tpm2b(&blob);
        return Ok(());
    }
    if !tpm.v.sessions.save(h, sequence) {
        // Only sessions can be loaded, and the handle area checked this one is.
        return Err(rc::HANDLE + rc::H + rc::N1);
    }
    tpm.v.context_counter += 1;
    let integrity = context_integrity(tpm, sequence, h);
    let mut blob = crate::marshal::Writer::new();
    blob.tpm2b(integrity.as_bytes());
    cmd.out
        .u64(sequence)
        .u32(h)
        .u32(handle::NULL)
        .tpm2b(&blob.buf);
    Ok(())
}

pub fn context_load(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let sequence = cmd.params.u64().p(1)?;
    let h = cmd.params.u32().p(1)?;
    let ht = handle::ht(h);
    let session = ht == handle::HT_HMAC_SESSION || ht == handle::HT_POLICY_SESSION;
    if !session && !(handle::TRANSIENT_SAVED..=handle::TRANSIENT_SAVED + 2).contains(&h) {
        return Err(rc::VALUE + rc::P + rc::N1);
    }
    let hierarchy = cmd.params.u32().p(1)?;
    if !matches!(
        hierarchy,
        handle::OWNER | handle::ENDORSEMENT | handle::PLATFORM | handle::NULL
    ) {
        return Err(rc::VALUE + rc::P + rc::N1);
    }
    let blob = cmd.params.tpm2b(MAX_CONTEXT_DATA).p(1)?;
    cmd.finish()?;
    if !session {
        let new = crate::commands::object_context::load(tpm, sequence, h, hierarchy, blob)
            .map_err(|e| {
                log::warn!("vtpm: object context for {h:#x} refused ({e:#x})");
                rc::safe_add(e, rc::P + rc::N1)
            })?;
        cmd.r_handle = Some(new);
        return Ok(());
    }
    let mut r = crate::marshal::Reader::new(blob);
    let integrity = r.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    if !ct_eq(integrity, context_integrity(tpm, sequence, h).as_bytes()) {
        log::warn!("vtpm: context blob for {h:#x} fails its integrity check");
        return Err(rc::INTEGRITY + rc::P + rc::N1);
    }
    tpm.v
        .sessions
        .load(h, sequence)
        .map_err(|e| rc::safe_add(e, rc::P + rc::N1))?;
    cmd.r_handle = Some(h);
    Ok(())
}
