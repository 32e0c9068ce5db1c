//! Part 3 §20, §18.4 and §14.5: TPM2_Sign and TPM2_VerifySignature with ECDSA
//! over P-256 and RSASSA/RSAPSS with RSA-2048 (in [`super::rsa`]), TPM2_Quote,
//! and TPM2_ECDH_ZGen.

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
        ids::ECDSA | ids::RSASSA | ids::RSAPSS => Some((
            scheme_alg,
            cmd.params
                .hash_alg(false)
                .p(2)?
                .ok_or(rc::HASH + rc::P + 2 * rc::N1)?,
        )),
        _ => return Err(rc::SCHEME + rc::P + 2 * rc::N1),
    };
    let tag = cmd.params.u16().p(3)?;
    if tag != st::HASHCHECK {
        return Err(rc::TAG + rc::P + 3 * rc::N1);
    }
    let t_hierarchy = cmd.params.u32().p(3)?;
    let t_digest = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(3)?;
    cmd.finish()?;
    let key = tpm
        .key(cmd.handles[0])
        .ok_or(rc::KEY + rc::H + rc::N1)?
        .clone();
    if !key.public.has(attr::SIGN) {
        return Err(rc::KEY + rc::H + rc::N1);
    }
    if key.private.is_none() {
        return Err(rc::AUTH_UNAVAILABLE);
    }
    let (sig_alg, hash) = signing_scheme(&key, scheme)?;
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
    let sig = signature(tpm, &key, sig_alg, hash, digest)?;
    cmd.out.bytes(&sig);
    Ok(())
}

/// The signing scheme: the key's, or the command's when the key has none;
/// it must suit the key's type (ECDSA for ECC, RSASSA/RSAPSS for RSA).
fn signing_scheme(
    key: &crate::object::Key,
    scheme: Option<(u16, HashAlg)>,
) -> Result<(u16, HashAlg), u32> {
    let bad = rc::SCHEME + rc::P + 2 * rc::N1;
    let s = match (key.public.scheme, scheme) {
        (Some(k), None) => k,
        (Some(k), Some(c)) if k == c => k,
        (None, Some(c)) => c,
        _ => return Err(bad),
    };
    let suits = match key.public.ty {
        ids::ECC => s.0 == ids::ECDSA,
        ids::RSA => matches!(s.0, ids::RSASSA | ids::RSAPSS),
        _ => false,
    };
    if !suits {
        return Err(bad);
    }
    Ok(s)
}

/// A TPMT_SIGNATURE over `digest` with `key` under (sig_alg, hash).
fn signature(
    tpm: &mut Tpm,
    key: &crate::object::Key,
    sig_alg: u16,
    hash: HashAlg,
    digest: &[u8],
) -> Result<alloc::vec::Vec<u8>, u32> {
    let mut w = crate::marshal::Writer::new();
    w.u16(sig_alg).u16(hash.id());
    if key.public.ty == ids::RSA {
        let sig = super::rsa::sign(tpm, key, sig_alg, hash, digest)?;
        w.tpm2b(&sig);
    } else {
        let d = key
            .private
            .as_deref()
            .and_then(public::scalar_from_bytes)
            .ok_or(rc::AUTH_UNAVAILABLE)?;
        let (r, s) = public::ecdsa_sign(&d, digest).ok_or(rc::FAILURE)?;
        w.tpm2b(&r).tpm2b(&s);
    }
    Ok(w.buf)
}

pub fn verify_signature(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let digest = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    let sig_alg = cmd.params.u16().p(2)?;
    if !matches!(sig_alg, ids::ECDSA | ids::RSASSA | ids::RSAPSS) {
        return Err(rc::SCHEME + rc::P + 2 * rc::N1);
    }
    let hash = cmd
        .params
        .hash_alg(false)
        .p(2)?
        .ok_or(rc::HASH + rc::P + 2 * rc::N1)?;
    let (r, s) = if sig_alg == ids::ECDSA {
        let r = cmd.params.tpm2b(public::P256_BYTES).p(2)?;
        (r, cmd.params.tpm2b(public::P256_BYTES).p(2)?)
    } else {
        (cmd.params.tpm2b(crate::rsa_key::RSA_BYTES).p(2)?, &[][..])
    };
    cmd.finish()?;
    let key = tpm.key(cmd.handles[0]).ok_or(rc::KEY + rc::H + rc::N1)?;
    if !key.public.has(attr::SIGN) {
        return Err(rc::ATTRIBUTES + rc::H + rc::N1);
    }
    let ok = match key.public.ty {
        ids::ECC if sig_alg == ids::ECDSA => {
            let pk = key.public.point().ok_or(rc::KEY + rc::H + rc::N1)?;
            public::ecdsa_verify(&pk, digest, r, s)
        }
        ids::RSA if sig_alg != ids::ECDSA => super::rsa::verify(key, sig_alg, hash, digest, r),
        _ => return Err(rc::SCHEME + rc::P + 2 * rc::N1),
    };
    if !ok {
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

pub fn ecdh_zgen(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let n = cmd.params.u16().p(1)? as usize;
    let mut sub = cmd.params.sub(n).p(1)?;
    let x = sub.tpm2b(public::P256_BYTES).p(1)?;
    let y = sub.tpm2b(public::P256_BYTES).p(1)?;
    if sub.remaining() != 0 {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    cmd.finish()?;
    let key = tpm.key(cmd.handles[0]).ok_or(rc::KEY + rc::H + rc::N1)?;
    if key.public.ty != ids::ECC
        || key.public.has(attr::RESTRICTED)
        || !key.public.has(attr::DECRYPT)
    {
        return Err(rc::KEY + rc::H + rc::N1);
    }
    let d = key
        .private
        .as_deref()
        .and_then(public::scalar_from_bytes)
        .ok_or(rc::AUTH_UNAVAILABLE)?;
    let (zx, zy) = public::ecdh_point(&d, x, y).ok_or(rc::ECC_POINT + rc::P + rc::N1)?;
    let mut point = crate::marshal::Writer::new();
    point.tpm2b(&zx).tpm2b(&zy);
    cmd.out.tpm2b(&point.buf);
    Ok(())
}

/// TPM_ST_ATTEST_QUOTE.
const ST_ATTEST_QUOTE: u16 = 0x8018;

pub fn quote(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let qualifying = cmd.params.tpm2b(limits::TPMU_HA_SIZE + 2).p(1)?;
    let scheme_alg = cmd.params.u16().p(2)?;
    let scheme = match scheme_alg {
        alg::NULL => None,
        ids::ECDSA | ids::RSASSA | ids::RSAPSS => Some((
            scheme_alg,
            cmd.params
                .hash_alg(false)
                .p(2)?
                .ok_or(rc::HASH + rc::P + 2 * rc::N1)?,
        )),
        _ => return Err(rc::SCHEME + rc::P + 2 * rc::N1),
    };
    let before = cmd.params.rest();
    let sel = cmd.params.pcr_selection_list().p(3)?;
    let raw_sel = &before[..before.len() - cmd.params.remaining()];
    cmd.finish()?;
    let key = tpm
        .key(cmd.handles[0])
        .ok_or(rc::KEY + rc::H + rc::N1)?
        .clone();
    if !key.public.has(attr::SIGN) {
        return Err(rc::KEY + rc::H + rc::N1);
    }
    if key.private.is_none() {
        return Err(rc::AUTH_UNAVAILABLE);
    }
    let (sig_alg, hash) = signing_scheme(&key, scheme)?;
    // PCR digest with the signing scheme's hash, over the selection in order.
    let mut values = alloc::vec::Vec::new();
    for (bank, mask) in &sel {
        for i in 0..limits::PCR_COUNT {
            if mask & (1 << i) != 0 && tpm.v.allocation.is_allocated(*bank, i) {
                values.push(*tpm.v.pcrs.get(*bank, i));
            }
        }
    }
    let parts: alloc::vec::Vec<&[u8]> = values.iter().map(|d| d.as_bytes()).collect();
    let pcr_digest = hash.digest(&parts);
    // Counters and firmware version are obfuscated for keys outside the
    // endorsement and platform hierarchies (privacy).
    let (v1, v2) = crate::commands::capability::FIRMWARE_VERSION;
    let mut reset = tpm.p.reset_count;
    let mut restart = tpm.p.restart_count;
    let mut firmware = u64::from(v1) << 32 | u64::from(v2);
    if !matches!(key.hierarchy, handle::ENDORSEMENT | handle::PLATFORM) {
        let o = crate::session::kdfa(
            key.public.name_alg,
            &tpm.p.sh_proof,
            b"OBFUSCATE",
            &key.name,
            &[],
            128,
        );
        let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
        reset = reset.wrapping_add(w(0));
        restart = restart.wrapping_add(w(4));
        firmware = firmware.wrapping_add(u64::from(w(8)) << 32 | u64::from(w(12)));
    }
    let mut a = crate::marshal::Writer::new();
    a.u32(crate::defs::TPM_GENERATED_VALUE)
        .u16(ST_ATTEST_QUOTE)
        .tpm2b(&key.qualified_name)
        .tpm2b(qualifying)
        .u64(tpm.clock())
        .u32(reset)
        .u32(restart)
        .u8(tpm.v.safe as u8)
        .u64(firmware)
        .bytes(raw_sel)
        .tpm2b(pcr_digest.as_bytes());
    let digest = hash.digest(&[&a.buf]);
    let sig = signature(tpm, &key, sig_alg, hash, digest.as_bytes())?;
    cmd.out.tpm2b(&a.buf).bytes(&sig);
    Ok(())
}
