//! Part 3 §20: TPM2_Sign and TPM2_VerifySignature with ECDSA over P-256.

use crate::defs::{alg, handle, limits, rc, st};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::HashAlg;
use crate::public::{self, attr, ids};
use crate::session::ct_eq;

/// Hash of tickets (the context integrity hash).
const TICKET_HASH: HashAlg = HashAlg::Sha384;

pub fn sign(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let digest = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    let scheme_alg = cmd.params.u16().p(2)?;
    let scheme = match scheme_alg {
        alg::NULL => None,
        ids::ECDSA => Some(
            cmd.params
                .hash_alg(false)
                .p(2)?
                .ok_or(rc::HASH + rc::P + 2 * rc::N1)?,
        ),
        _ => return Err(rc::SCHEME + rc::P + 2 * rc::N1),
    };
    let tag = cmd.params.u16().p(3)?;
    if tag != st::HASHCHECK {
        return Err(rc::TAG + rc::P + 3 * rc::N1);
    }
    let t_hierarchy = cmd.params.u32().p(3)?;
    let t_digest = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(3)?;
    cmd.finish()?;
    let key = tpm.key(cmd.handles[0]).ok_or(rc::KEY + rc::H + rc::N1)?;
    if !key.public.has(attr::SIGN) {
        return Err(rc::KEY + rc::H + rc::N1);
    }
    let d = key
        .private
        .as_deref()
        .and_then(public::scalar_from_bytes)
        .ok_or(rc::AUTH_UNAVAILABLE)?;
    // The key's scheme, or the command's when the key has none.
    let hash = match (key.public.scheme, scheme) {
        (Some((ids::ECDSA, kh)), None) => kh,
        (Some((ids::ECDSA, kh)), Some(h)) if h == kh => kh,
        (None, Some(h)) => h,
        _ => return Err(rc::SCHEME + rc::P + 2 * rc::N1),
    };
    if digest.len() != hash.digest_size() {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    if key.public.has(attr::RESTRICTED) {
        // A restricted key signs only digests the TPM computed (a valid ticket).
        let ok = t_hierarchy != handle::NULL
            && ct_eq(
                t_digest,
                TICKET_HASH
                    .hmac(
                        &tpm.hierarchy_proof(t_hierarchy),
                        &[&st::HASHCHECK.to_be_bytes(), digest],
                    )
                    .as_bytes(),
            );
        if !ok {
            return Err(rc::TICKET + rc::P + 3 * rc::N1);
        }
    }
    let (r, s) = public::ecdsa_sign(&d, digest).ok_or(rc::FAILURE)?;
    cmd.out.u16(ids::ECDSA).u16(hash.id()).tpm2b(&r).tpm2b(&s);
    Ok(())
}

pub fn verify_signature(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let digest = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    let sig_alg = cmd.params.u16().p(2)?;
    if sig_alg != ids::ECDSA {
        return Err(rc::SCHEME + rc::P + 2 * rc::N1);
    }
    let _hash = cmd
        .params
        .hash_alg(false)
        .p(2)?
        .ok_or(rc::HASH + rc::P + 2 * rc::N1)?;
    let r = cmd.params.tpm2b(public::P256_BYTES).p(2)?;
    let s = cmd.params.tpm2b(public::P256_BYTES).p(2)?;
    cmd.finish()?;
    let key = tpm.key(cmd.handles[0]).ok_or(rc::KEY + rc::H + rc::N1)?;
    if !key.public.has(attr::SIGN) {
        return Err(rc::ATTRIBUTES + rc::H + rc::N1);
    }
    let pk = key.public.point().ok_or(rc::KEY + rc::H + rc::N1)?;
    if !public::ecdsa_verify(&pk, digest, r, s) {
        log::warn!("vtpm: VerifySignature: the signature does not verify");
        return Err(rc::SIGNATURE + rc::P + 2 * rc::N1);
    }
    let hierarchy = key.hierarchy;
    let name = key.name.clone();
    if hierarchy == handle::NULL {
        cmd.out.u16(st::VERIFIED).u32(handle::NULL).tpm2b(&[]);
    } else {
        let t = TICKET_HASH.hmac(
            &tpm.hierarchy_proof(hierarchy),
            &[&st::VERIFIED.to_be_bytes(), digest, &name],
        );
        cmd.out.u16(st::VERIFIED).u32(hierarchy).tpm2b(t.as_bytes());
    }
    Ok(())
}
