//! The object side of TPM2_ContextSave / TPM2_ContextLoad (Part 1 §30): a key
//! object's context blob is integrity || AES-256-CFB(serialized key), both
//! keyed from the proof of the key's hierarchy (so NULL-hierarchy contexts die
//! with the null proof at TPM Reset) and bound to the sequence number and
//! saved handle. Sequence objects keep running hash states that cannot be
//! serialized; their contexts are not saved (TPM_RC_TYPE).

use crate::defs::{handle, limits, rc};
use crate::engine::Tpm;
use crate::hash::{Digest, HashAlg};
use crate::marshal::{Reader, Writer};
use crate::object::{Key, Object};
use crate::public::attr;
use crate::session::{aes_cfb, ct_eq, kdfa};
use alloc::boxed::Box;
use alloc::vec::Vec;

const CONTEXT_HASH: HashAlg = HashAlg::Sha384;

fn keys(proof: &[u8], sequence: u64, saved: u32) -> (Vec<u8>, Vec<u8>) {
    let m = kdfa(
        HashAlg::Sha256,
        proof,
        b"CFB",
        &sequence.to_be_bytes(),
        &saved.to_be_bytes(),
        256 + 128,
    );
    (m[..32].to_vec(), m[32..].to_vec())
}

fn integrity(proof: &[u8], sequence: u64, saved: u32, hierarchy: u32, enc: &[u8]) -> Digest {
    CONTEXT_HASH.hmac(
        proof,
        &[
            b"object context",
            &sequence.to_be_bytes(),
            &saved.to_be_bytes(),
            &hierarchy.to_be_bytes(),
            enc,
        ],
    )
}

/// Saves object `h`: (savedHandle, hierarchy, contextBlob), or a bare code.
pub fn save(tpm: &Tpm, h: u32, sequence: u64) -> Result<(u32, u32, Vec<u8>), u32> {
    let key = match tpm.v.objects.get(h) {
        Some(Object::Key(k)) => k,
        Some(Object::Sequence(_)) => {
            log::warn!("vtpm: sequence object contexts are not saved");
            return Err(rc::TYPE);
        }
        None => return Err(rc::REFERENCE_H0),
    };
    let saved = if key.public.has(attr::ST_CLEAR) {
        handle::TRANSIENT_SAVED + 2
    } else {
        handle::TRANSIENT_SAVED
    };
    let plain = key.encode();
    let proof = tpm.hierarchy_proof(key.hierarchy);
    let (k, iv) = keys(&proof, sequence, saved);
    let mut enc = plain;
    aes_cfb(&k, &iv, &mut enc, true);
    let tag = integrity(&proof, sequence, saved, key.hierarchy, &enc);
    let mut blob = Writer::new();
    blob.tpm2b(tag.as_bytes()).bytes(&enc);
    Ok((saved, key.hierarchy, blob.buf))
}

/// Loads an object context; returns the new handle, or a bare code
/// (INTEGRITY for a blob this TPM did not produce).
pub fn load(
    tpm: &mut Tpm,
    sequence: u64,
    saved: u32,
    hierarchy: u32,
    blob: &[u8],
) -> Result<u32, u32> {
    let mut r = Reader::new(blob);
    let tag = r.tpm2b(limits::TPMU_HA_SIZE)?;
    let enc = r.rest();
    let proof = tpm.hierarchy_proof(hierarchy);
    if !ct_eq(
        tag,
        integrity(&proof, sequence, saved, hierarchy, enc).as_bytes(),
    ) {
        return Err(rc::INTEGRITY);
    }
    tpm.check_hierarchy_enabled(hierarchy)?;
    let (k, iv) = keys(&proof, sequence, saved);
    let mut plain = enc.to_vec();
    aes_cfb(&k, &iv, &mut plain, false);
    let key = Key::decode(&plain).ok_or(rc::INTEGRITY)?;
    if key.hierarchy != hierarchy {
        return Err(rc::INTEGRITY);
    }
    tpm.v
        .objects
        .insert(Object::Key(Box::new(key)))
        .ok_or(rc::OBJECT_MEMORY)
}
