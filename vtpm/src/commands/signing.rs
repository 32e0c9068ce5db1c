//! Part 3 §20, §18.4 and §14.5: TPM2_Sign and TPM2_VerifySignature with ECDSA,
//! EC Schnorr and SM2 on each curve and RSASSA/RSAPSS (in [`super::rsa`]), TPM2_Quote,
//! and TPM2_ECDH_ZGen. TPM2_Sign and the attestations also sign with ECDAA,
//! the second phase of TPM2_Commit ([`super::ecc2phase`]); VerifySignature
//! does not verify ECDAA (TPM_RC_SCHEME, as the reference implementation).

use crate::defs::{alg, handle, limits, rc, st};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::HashAlg;
use crate::marshal::{Reader, Writer};
use crate::object::Key;
use crate::public::{self, attr, ids};
use crate::session::ct_eq;
use alloc::vec::Vec;

/// Hash of tickets (the context integrity hash).
const TICKET_HASH: HashAlg = HashAlg::Sha384;

pub fn sign(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let digest = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    let scheme = sig_scheme(&mut cmd.params, 2)?;
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
    let (sig_alg, hash, count) = select_scheme(&key, scheme, 2)?;
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
    let sig = if sig_alg == ids::ECDAA {
        ecdaa_sign(tpm, &key, hash, count, digest)?
    } else {
        signature(tpm, &key, sig_alg, hash, digest)?
    };
    cmd.out.bytes(&sig);
    Ok(())
}

/// A TPMT_SIG_SCHEME+ of a command: (scheme, hash) or None for
/// TPM_ALG_NULL, and the commit count of an ECDAA scheme (0 for the others).
pub(crate) type SigScheme = (Option<(u16, HashAlg)>, u16);

/// A TPMT_SIG_SCHEME+ (command parameter `n`).
pub(crate) fn sig_scheme(r: &mut Reader, n: u32) -> Result<SigScheme, u32> {
    let scheme_alg = r.u16().p(n)?;
    if scheme_alg == alg::NULL {
        return Ok((None, 0));
    }
    if !matches!(
        scheme_alg,
        ids::ECDSA | ids::RSASSA | ids::RSAPSS | ids::ECDAA | ids::ECSCHNORR | ids::SM2
    ) {
        return Err(rc::SCHEME + rc::P + n * rc::N1);
    }
    let hash = r
        .hash_alg(false)
        .p(n)?
        .ok_or(rc::HASH + rc::P + n * rc::N1)?;
    let count = if scheme_alg == ids::ECDAA {
        r.u16().p(n)?
    } else {
        0
    };
    Ok((Some((scheme_alg, hash)), count))
}

/// The ECDAA scheme of TPM2_Sign (ECDAA, hash, commit count) when the key
/// (an ECC key) or the command names it, else None: the command's, if the
/// key has none or the same scheme and hash. The command must name it (its
/// count is the commitment's): a NULL scheme with an ECDAA key is
/// TPM_RC_SCHEME, as in the reference implementation.
fn ecdaa_scheme(
    key: &Key,
    scheme: Option<(u16, HashAlg)>,
    in_count: u16,
) -> Option<Result<(u16, HashAlg, u16), u32>> {
    let is_ecdaa = |s: Option<(u16, HashAlg)>| matches!(s, Some((ids::ECDAA, _)));
    if key.public.ty != ids::ECC || !is_ecdaa(key.public.scheme) && !is_ecdaa(scheme) {
        return None;
    }
    Some(match (key.public.scheme, scheme) {
        (Some(k), Some(c)) if k == c => Ok((ids::ECDAA, c.1, in_count)),
        (None, Some((_, h))) => Ok((ids::ECDAA, h, in_count)),
        _ => Err(rc::SCHEME + rc::P + 2 * rc::N1),
    })
}

/// The scheme `key` signs with for a command's `scheme` (parameter `n`):
/// (scheme, hash, ECDAA commit count).
fn select_scheme(key: &Key, scheme: SigScheme, n: u32) -> Result<(u16, HashAlg, u16), u32> {
    match ecdaa_scheme(key, scheme.0, scheme.1) {
        Some(s) => s,
        None => {
            let (sig_alg, hash) = signing_scheme(key, scheme.0, n)?;
            Ok((sig_alg, hash, 0))
        }
    }
}

/// The order n of the P-256 group.
#[cfg(test)]
const P256_ORDER: [u8; 32] = [
    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
    0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63, 0x25, 0x51,
];

/// `v` (big-endian, any length) mod n as a scalar.
#[cfg(test)]
pub(crate) fn scalar_mod_n(v: &[u8]) -> p256::Scalar {
    use p256::elliptic_curve::PrimeField;
    let n = num_bigint_dig::BigUint::from_bytes_be(&P256_ORDER);
    let m = (num_bigint_dig::BigUint::from_bytes_be(v) % n).to_bytes_be();
    let mut b = [0u8; public::P256_BYTES];
    b[public::P256_BYTES - m.len()..].copy_from_slice(&m);
    Option::from(p256::Scalar::from_repr(b.into())).unwrap_or(p256::Scalar::ZERO)
}

/// The ECDAA signature (Part 1 §C.4, the second phase of TPM2_Commit's split
/// signing) of `digest`: with r the secret of commitment `count` (bound to
/// the key's Name), a fresh 0 < nonceK < n, T = H(nonceK || digest) mod n
/// and s = r + T·d mod n, the TPMT_SIGNATURE (ECDAA, hash, nonceK, s). The
/// commitment is used up; an unknown or used one is TPM_RC_VALUE.
fn ecdaa_sign(
    tpm: &mut Tpm,
    key: &Key,
    hash: HashAlg,
    count: u16,
    digest: &[u8],
) -> Result<Vec<u8>, u32> {
    let curve = key.public.curve;
    let d = key
        .private
        .as_deref()
        .and_then(|p| key.public.scalar(p))
        .ok_or(rc::AUTH_UNAVAILABLE)?;
    let Some(full) = super::ecc2phase::outstanding(tpm, count) else {
        log::warn!("vtpm: Sign: ECDAA commitment {count} unknown or used");
        return Err(rc::VALUE);
    };
    let r = super::ecc2phase::commit_secret(tpm, full, &key.name, curve);
    let (nonce_k, s) = loop {
        let mut k = alloc::vec![0u8; curve.bytes()];
        tpm.random(&mut k);
        if public::scalar_from_bytes(curve, &k).is_none() {
            continue;
        }
        // nonceK in its minimal big-endian form, as hashed and returned.
        let first = k.iter().position(|&b| b != 0).unwrap_or(k.len());
        let nonce_k = k[first..].to_vec();
        let t = public::mod_order(curve, hash.digest(&[&nonce_k, digest]).as_bytes());
        if let Some(s) = public::ecdaa_s(&r, &t, &d) {
            break (nonce_k, s);
        }
    };
    super::ecc2phase::end_commit(tpm, full);
    let mut w = Writer::new();
    w.u16(ids::ECDAA).u16(hash.id()).tpm2b(&nonce_k).tpm2b(&s);
    Ok(w.buf)
}

/// The signing scheme: the key's, or the command's (parameter `n`) when the
/// key has none; it must suit the key's type (ECDSA for ECC, RSASSA/RSAPSS
/// for RSA).
fn signing_scheme(
    key: &crate::object::Key,
    scheme: Option<(u16, HashAlg)>,
    n: u32,
) -> Result<(u16, HashAlg), u32> {
    let bad = rc::SCHEME + rc::P + n * rc::N1;
    let s = match (key.public.scheme, scheme) {
        (Some(k), None) => k,
        (Some(k), Some(c)) if k == c => k,
        (None, Some(c)) => c,
        _ => return Err(bad),
    };
    let suits = match key.public.ty {
        ids::ECC => matches!(s.0, ids::ECDSA | ids::ECSCHNORR | ids::SM2),
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
            .and_then(|p| key.public.scalar(p))
            .ok_or(rc::AUTH_UNAVAILABLE)?;
        let (r, s) = match sig_alg {
            ids::ECSCHNORR => with_nonce(tpm, key.public.curve, |k| {
                public::schnorr_sign(&d, k, hash, digest)
            }),
            ids::SM2 => with_nonce(tpm, key.public.curve, |k| public::sm2_sign(&d, k, digest)),
            _ => public::ecdsa_sign(&d, digest).ok_or(rc::FAILURE)?,
        };
        w.tpm2b(&r).tpm2b(&s);
    }
    Ok(w.buf)
}

/// A signature that takes a fresh nonce k from the TPM's DRBG (EC Schnorr:
/// TPM_ALG_ECSCHNORR; SM2: TPM_ALG_SM2): `sign` with k, k drawn again while
/// it is not a scalar or `sign` refuses it (e or s zero; SM2's r = 0 or
/// r + k = n).
fn with_nonce(
    tpm: &mut Tpm,
    curve: public::Curve,
    mut sign: impl FnMut(&public::EcScalar) -> Option<(Vec<u8>, Vec<u8>)>,
) -> (Vec<u8>, Vec<u8>) {
    let mut k = alloc::vec![0u8; curve.bytes()];
    loop {
        tpm.random(&mut k);
        if let Some(rs) = public::scalar_from_bytes(curve, &k).and_then(|k| sign(&k)) {
            return rs;
        }
    }
}

/// A parsed TPMT_SIGNATURE: the scheme, its hash, and r and s (ECDSA) or the
/// signature block (RSA; s empty).
pub(crate) type SignatureParts<'a> = (u16, HashAlg, &'a [u8], &'a [u8]);

/// A TPMT_SIGNATURE (command parameter `n`).
pub(crate) fn parse_signature<'a>(r: &mut Reader<'a>, n: u32) -> Result<SignatureParts<'a>, u32> {
    let sig_alg = r.u16().p(n)?;
    if !matches!(
        sig_alg,
        ids::ECDSA | ids::RSASSA | ids::RSAPSS | ids::ECSCHNORR | ids::SM2
    ) {
        return Err(rc::SCHEME + rc::P + n * rc::N1);
    }
    let hash = r
        .hash_alg(false)
        .p(n)?
        .ok_or(rc::HASH + rc::P + n * rc::N1)?;
    if matches!(sig_alg, ids::ECDSA | ids::ECSCHNORR | ids::SM2) {
        let sr = r.tpm2b(public::MAX_ECC_BYTES).p(n)?;
        Ok((sig_alg, hash, sr, r.tpm2b(public::MAX_ECC_BYTES).p(n)?))
    } else {
        Ok((
            sig_alg,
            hash,
            r.tpm2b(crate::rsa_key::MAX_RSA_BYTES).p(n)?,
            &[][..],
        ))
    }
}

/// Does (r, s) under (sig_alg, hash) verify over `digest` with the signing key
/// of handle `hn`? Errors: KEY (handle) for a key without a usable public
/// part, ATTRIBUTES (handle) for a key that does not sign, SCHEME
/// (parameter `sn`) for a scheme of another key type.
pub(crate) fn verify_with_key(
    key: &Key,
    hn: u32,
    sn: u32,
    (sig_alg, hash, r, s): SignatureParts,
    digest: &[u8],
) -> Result<bool, u32> {
    if !key.public.has(attr::SIGN) {
        return Err(rc::ATTRIBUTES + rc::H + hn * rc::N1);
    }
    Ok(match key.public.ty {
        ids::ECC if sig_alg == ids::ECDSA => {
            let pk = key.public.point().ok_or(rc::KEY + rc::H + hn * rc::N1)?;
            public::ecdsa_verify(&pk, digest, r, s)
        }
        ids::ECC if sig_alg == ids::ECSCHNORR => {
            let pk = key.public.point().ok_or(rc::KEY + rc::H + hn * rc::N1)?;
            public::schnorr_verify(&pk, hash, digest, r, s)
        }
        ids::ECC if sig_alg == ids::SM2 => {
            let pk = key.public.point().ok_or(rc::KEY + rc::H + hn * rc::N1)?;
            public::sm2_verify(&pk, digest, r, s)
        }
        ids::RSA if matches!(sig_alg, ids::RSASSA | ids::RSAPSS) => {
            super::rsa::verify(key, sig_alg, hash, digest, r)
        }
        _ => return Err(rc::SCHEME + rc::P + sn * rc::N1),
    })
}

pub fn verify_signature(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let digest = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    let sig = parse_signature(&mut cmd.params, 2)?;
    cmd.finish()?;
    let key = tpm.key(cmd.handles[0]).ok_or(rc::KEY + rc::H + rc::N1)?;
    if !verify_with_key(key, 1, 2, sig, digest)? {
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
    let x = sub.tpm2b(public::MAX_ECC_BYTES).p(1)?;
    let y = sub.tpm2b(public::MAX_ECC_BYTES).p(1)?;
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
        .and_then(|p| key.public.scalar(p))
        .ok_or(rc::AUTH_UNAVAILABLE)?;
    let (zx, zy) = public::ecdh_point(&d, x, y).ok_or(rc::ECC_POINT + rc::P + rc::N1)?;
    let mut point = crate::marshal::Writer::new();
    point.tpm2b(&zx).tpm2b(&zy);
    cmd.out.tpm2b(&point.buf);
    Ok(())
}

/// Part 3 §14.4 TPM2_ECDH_KeyGen: an ephemeral key d_e from the DRBG;
/// zPoint = d_e·Q of the (public) ECC key of handle 1, pubPoint = d_e·G.
pub fn ecdh_key_gen(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let key = tpm.key(cmd.handles[0]).ok_or(rc::KEY + rc::H + rc::N1)?;
    if key.public.ty != ids::ECC {
        return Err(rc::KEY + rc::H + rc::N1);
    }
    let (qx, qy) = (key.public.x.clone(), key.public.y.clone());
    let curve = key.public.curve;
    let d = public::derive_scalar(curve, |_| {
        let mut b = alloc::vec![0u8; curve.bytes()];
        tpm.random(&mut b);
        b
    });
    let (zx, zy) = public::ecdh_point(&d, &qx, &qy).ok_or(rc::ECC_POINT + rc::H + rc::N1)?;
    let (gx, gy) = d.public().xy();
    let (gx, gy) = (&gx[..], &gy[..]);
    let mut z = crate::marshal::Writer::new();
    z.tpm2b(&zx).tpm2b(&zy);
    let mut p = crate::marshal::Writer::new();
    p.tpm2b(gx).tpm2b(gy);
    cmd.out.tpm2b(&z.buf).tpm2b(&p.buf);
    Ok(())
}

/// The key that signs an attestation (handle `h`, handle number `hn`) with
/// the scheme it signs with; None for TPM_RH_NULL (the attestation is
/// returned unsigned, whatever the scheme asked for).
pub(crate) fn attest_signer(
    tpm: &Tpm,
    h: u32,
    hn: u32,
    scheme: SigScheme,
    scheme_param: u32,
) -> Result<Option<Signer>, u32> {
    if h == handle::NULL {
        return Ok(None);
    }
    let key = tpm.key(h).ok_or(rc::KEY + rc::H + hn * rc::N1)?.clone();
    if !key.public.has(attr::SIGN) {
        return Err(rc::KEY + rc::H + hn * rc::N1);
    }
    if key.private.is_none() {
        return Err(rc::AUTH_UNAVAILABLE);
    }
    let (sig_alg, hash, count) = select_scheme(&key, scheme, scheme_param)?;
    Ok(Some((key, sig_alg, hash, count)))
}

/// The key that signs an attestation, its scheme, hash and ECDAA count.
pub(crate) type Signer = (Key, u16, HashAlg, u16);

/// A TPMS_ATTEST of type `ty` (Part 2 §10.12.12) signed by `signer` (None:
/// TPM_RH_NULL) with `extra_data` and the type-specific `body`. The reset
/// and restart counters and the firmware version are obfuscated unless the
/// signer is in the endorsement or platform hierarchy (privacy).
pub(crate) fn attest(
    tpm: &Tpm,
    signer: Option<&Key>,
    ty: u16,
    extra_data: &[u8],
    body: &[u8],
) -> Vec<u8> {
    let (v1, v2) = crate::commands::capability::FIRMWARE_VERSION;
    let mut reset = tpm.p.reset_count;
    let mut restart = tpm.p.restart_count;
    let mut firmware = u64::from(v1) << 32 | u64::from(v2);
    let null_name = handle::NULL.to_be_bytes();
    let (qualified_signer, name, name_alg, hierarchy) = match signer {
        Some(k) => (
            &k.qualified_name[..],
            &k.name[..],
            k.public.name_alg,
            k.hierarchy,
        ),
        None => (&null_name[..], &null_name[..], TICKET_HASH, handle::NULL),
    };
    if !matches!(hierarchy, handle::ENDORSEMENT | handle::PLATFORM) {
        let o = crate::session::kdfa(name_alg, &tpm.p.sh_proof, b"OBFUSCATE", name, &[], 128);
        let w = |i: usize| u32::from_be_bytes([o[i], o[i + 1], o[i + 2], o[i + 3]]);
        reset = reset.wrapping_add(w(0));
        restart = restart.wrapping_add(w(4));
        firmware = firmware.wrapping_add(u64::from(w(8)) << 32 | u64::from(w(12)));
    }
    let mut a = Writer::new();
    a.u32(crate::defs::TPM_GENERATED_VALUE)
        .u16(ty)
        .tpm2b(qualified_signer)
        .tpm2b(extra_data)
        .u64(tpm.clock())
        .u32(reset)
        .u32(restart)
        .u8(tpm.v.safe as u8)
        .u64(firmware)
        .bytes(body);
    a.buf
}

/// The TPMT_SIGNATURE of an attestation: signed by the signer, or
/// TPM_ALG_NULL when there is none.
pub(crate) fn sign_attest(
    tpm: &mut Tpm,
    signer: Option<&Signer>,
    attest: &[u8],
) -> Result<Vec<u8>, u32> {
    match signer {
        None => Ok(alg::NULL.to_be_bytes().to_vec()),
        Some((key, sig_alg, hash, count)) => {
            let digest = hash.digest(&[attest]);
            if *sig_alg == ids::ECDAA {
                return ecdaa_sign(tpm, key, *hash, *count, digest.as_bytes());
            }
            signature(tpm, key, *sig_alg, *hash, digest.as_bytes())
        }
    }
}

pub fn quote(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let qualifying = cmd.params.tpm2b(limits::TPMU_HA_SIZE + 2).p(1)?;
    let scheme = sig_scheme(&mut cmd.params, 2)?;
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
    let (sig_alg, hash, count) = select_scheme(&key, scheme, 2)?;
    // PCR digest with the signing scheme's hash, over the selection in order.
    let mut values = Vec::new();
    for (bank, mask) in &sel {
        for i in 0..limits::PCR_COUNT {
            if mask & (1 << i) != 0 && tpm.v.allocation.is_allocated(*bank, i) {
                values.push(*tpm.v.pcrs.get(*bank, i));
            }
        }
    }
    let parts: Vec<&[u8]> = values.iter().map(|d| d.as_bytes()).collect();
    let pcr_digest = hash.digest(&parts);
    let mut body = Writer::new();
    body.bytes(raw_sel).tpm2b(pcr_digest.as_bytes());
    let a = attest(tpm, Some(&key), st::ATTEST_QUOTE, qualifying, &body.buf);
    let sig = sign_attest(tpm, Some(&(key, sig_alg, hash, count)), &a)?;
    cmd.out.tpm2b(&a).bytes(&sig);
    Ok(())
}

/// NIST P-256 domain parameters (FIPS 186-4 §D.1.2.3, SEC 2 §2.4.2), big-endian.
pub mod p256_domain {
    pub const KEY_BITS: u16 = 256;
    pub const P: [u8; 32] = [
        0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xFF,
    ];
    /// a = p − 3.
    pub const A: [u8; 32] = [
        0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xFC,
    ];
    pub const B: [u8; 32] = [
        0x5A, 0xC6, 0x35, 0xD8, 0xAA, 0x3A, 0x93, 0xE7, 0xB3, 0xEB, 0xBD, 0x55, 0x76, 0x98, 0x86,
        0xBC, 0x65, 0x1D, 0x06, 0xB0, 0xCC, 0x53, 0xB0, 0xF6, 0x3B, 0xCE, 0x3C, 0x3E, 0x27, 0xD2,
        0x60, 0x4B,
    ];
    pub const GX: [u8; 32] = [
        0x6B, 0x17, 0xD1, 0xF2, 0xE1, 0x2C, 0x42, 0x47, 0xF8, 0xBC, 0xE6, 0xE5, 0x63, 0xA4, 0x40,
        0xF2, 0x77, 0x03, 0x7D, 0x81, 0x2D, 0xEB, 0x33, 0xA0, 0xF4, 0xA1, 0x39, 0x45, 0xD8, 0x98,
        0xC2, 0x96,
    ];
    pub const GY: [u8; 32] = [
        0x4F, 0xE3, 0x42, 0xE2, 0xFE, 0x1A, 0x7F, 0x9B, 0x8E, 0xE7, 0xEB, 0x4A, 0x7C, 0x0F, 0x9E,
        0x16, 0x2B, 0xCE, 0x33, 0x57, 0x6B, 0x31, 0x5E, 0xCE, 0xCB, 0xB6, 0x40, 0x68, 0x37, 0xBF,
        0x51, 0xF5,
    ];
    /// The order of G.
    pub const N: [u8; 32] = [
        0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xBC, 0xE6, 0xFA, 0xAD, 0xA7, 0x17, 0x9E, 0x84, 0xF3, 0xB9, 0xCA, 0xC2, 0xFC, 0x63,
        0x25, 0x51,
    ];
    /// The cofactor.
    pub const H: [u8; 1] = [1];
}

/// NIST P-384 domain parameters (FIPS 186-4 §D.1.2.4, SEC 2 §2.5.1), big-endian.
pub mod p384_domain {
    pub const KEY_BITS: u16 = 384;
    pub const P: [u8; 48] = [
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF,
        0xFF, 0xFF, 0xFF,
    ];
    /// a = p − 3.
    pub const A: [u8; 48] = [
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xFE, 0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0xFF,
        0xFF, 0xFF, 0xFC,
    ];
    pub const B: [u8; 48] = [
        0xB3, 0x31, 0x2F, 0xA7, 0xE2, 0x3E, 0xE7, 0xE4, 0x98, 0x8E, 0x05, 0x6B, 0xE3, 0xF8, 0x2D,
        0x19, 0x18, 0x1D, 0x9C, 0x6E, 0xFE, 0x81, 0x41, 0x12, 0x03, 0x14, 0x08, 0x8F, 0x50, 0x13,
        0x87, 0x5A, 0xC6, 0x56, 0x39, 0x8D, 0x8A, 0x2E, 0xD1, 0x9D, 0x2A, 0x85, 0xC8, 0xED, 0xD3,
        0xEC, 0x2A, 0xEF,
    ];
    pub const GX: [u8; 48] = [
        0xAA, 0x87, 0xCA, 0x22, 0xBE, 0x8B, 0x05, 0x37, 0x8E, 0xB1, 0xC7, 0x1E, 0xF3, 0x20, 0xAD,
        0x74, 0x6E, 0x1D, 0x3B, 0x62, 0x8B, 0xA7, 0x9B, 0x98, 0x59, 0xF7, 0x41, 0xE0, 0x82, 0x54,
        0x2A, 0x38, 0x55, 0x02, 0xF2, 0x5D, 0xBF, 0x55, 0x29, 0x6C, 0x3A, 0x54, 0x5E, 0x38, 0x72,
        0x76, 0x0A, 0xB7,
    ];
    pub const GY: [u8; 48] = [
        0x36, 0x17, 0xDE, 0x4A, 0x96, 0x26, 0x2C, 0x6F, 0x5D, 0x9E, 0x98, 0xBF, 0x92, 0x92, 0xDC,
        0x29, 0xF8, 0xF4, 0x1D, 0xBD, 0x28, 0x9A, 0x14, 0x7C, 0xE9, 0xDA, 0x31, 0x13, 0xB5, 0xF0,
        0xB8, 0xC0, 0x0A, 0x60, 0xB1, 0xCE, 0x1D, 0x7E, 0x81, 0x9D, 0x7A, 0x43, 0x1D, 0x7C, 0x90,
        0xEA, 0x0E, 0x5F,
    ];
    /// The order of G.
    pub const N: [u8; 48] = [
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF,
        0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xC7, 0x63, 0x4D, 0x81, 0xF4, 0x37,
        0x2D, 0xDF, 0x58, 0x1A, 0x0D, 0xB2, 0x48, 0xB0, 0xA7, 0x7A, 0xEC, 0xEC, 0x19, 0x6A, 0xCC,
        0xC5, 0x29, 0x73,
    ];
    /// The cofactor.
    pub const H: [u8; 1] = [1];
}

/// NIST P-521 domain parameters (FIPS 186-4 §D.1.2.5, SEC 2 §2.6.1),
/// big-endian hex, 66 bytes each (the cofactor one byte).
pub mod p521_domain {
    pub const KEY_BITS: u16 = 521;
    /// p = 2^521 − 1.
    pub const P: &str = "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    /// a = p − 3.
    pub const A: &str = "01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffc";
    pub const B: &str = "0051953eb9618e1c9a1f929a21a0b68540eea2da725b99b315f3b8b489918ef109e156193951ec7e937b1652c0bd3bb1bf073573df883d2c34f1ef451fd46b503f00";
    pub const GX: &str = "00c6858e06b70404e9cd9e3ecb662395b4429c648139053fb521f828af606b4d3dbaa14b5e77efe75928fe1dc127a2ffa8de3348b3c1856a429bf97e7e31c2e5bd66";
    pub const GY: &str = "011839296a789a3bc0045c8a5fb42c7d1bd998f54449579b446817afbd17273e662c97ee72995ef42640c550b9013fad0761353c7086a272c24088be94769fd16650";
    /// The order of G.
    pub const N: &str = "01fffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409";
    /// The cofactor.
    pub const H: &str = "01";

    /// `hex` as bytes.
    pub fn bytes(hex: &str) -> alloc::vec::Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .filter_map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
            .collect()
    }
}

/// NIST P-192 domain parameters (FIPS 186-4 §D.1.2.1), big-endian hex.
pub mod p192_domain {
    pub const KEY_BITS: u16 = 192;
    pub const P: &str = "fffffffffffffffffffffffffffffffeffffffffffffffff";
    /// a = p − 3.
    pub const A: &str = "fffffffffffffffffffffffffffffffefffffffffffffffc";
    pub const B: &str = "64210519e59c80e70fa7e9ab72243049feb8deecc146b9b1";
    pub const GX: &str = "188da80eb03090f67cbf20eb43a18800f4ff0afd82ff1012";
    pub const GY: &str = "07192b95ffc8da78631011ed6b24cdd573f977a11e794811";
    pub const N: &str = "ffffffffffffffffffffffff99def836146bc9b1b4d22831";
}

/// NIST P-224 domain parameters (FIPS 186-4 §D.1.2.2), big-endian hex.
pub mod p224_domain {
    pub const KEY_BITS: u16 = 224;
    pub const P: &str = "ffffffffffffffffffffffffffffffff000000000000000000000001";
    /// a = p − 3.
    pub const A: &str = "fffffffffffffffffffffffffffffffefffffffffffffffffffffffe";
    pub const B: &str = "b4050a850c04b3abf54132565044b0b7d7bfd8ba270b39432355ffb4";
    pub const GX: &str = "b70e0cbd6bb4bf7f321390b94a03c1d356c21122343280d6115c1d21";
    pub const GY: &str = "bd376388b5f723fb4c22dfe6cd4375a05a07476444d5819985007e34";
    pub const N: &str = "ffffffffffffffffffffffffffff16a2e0b8f03e13dd29455c5c2a3d";
}

/// SM2 P-256 domain parameters (GB/T 32918.5 §4, the recommended curve),
/// big-endian hex.
pub mod sm2_domain {
    pub const KEY_BITS: u16 = 256;
    pub const P: &str = "fffffffeffffffffffffffffffffffffffffffff00000000ffffffffffffffff";
    /// a = p − 3.
    pub const A: &str = "fffffffeffffffffffffffffffffffffffffffff00000000fffffffffffffffc";
    pub const B: &str = "28e9fa9e9d9f5e344d5a9e4bcf6509a7f39789f515ab8f92ddbcbd414d940e93";
    pub const GX: &str = "32c4ae2c1f1981195f9904466a39c9948fe30bbff2660be1715a4589334c74c7";
    pub const GY: &str = "bc3736a2f4f6779c59bdcee36b692153d0a9877cc62a474002df32e52139f0a0";
    pub const N: &str = "fffffffeffffffffffffffffffffffff7203df6b21c6052b53bbf40939d54123";
}

/// BN P-256 domain parameters (TCG Algorithm Registry, ISO/IEC 15946-5):
/// y² = x³ + 3, G = (1, 2), cofactor 1; big-endian hex.
pub mod bn_p256_domain {
    pub const KEY_BITS: u16 = 256;
    pub const P: &str = "fffffffffffcf0cd46e5f25eee71a49f0cdc65fb12980a82d3292ddbaed33013";
    /// a = 0, in one byte as libtpms gives it.
    pub const A: &str = "00";
    pub const B: &str = "0000000000000000000000000000000000000000000000000000000000000003";
    pub const GX: &str = "0000000000000000000000000000000000000000000000000000000000000001";
    pub const GY: &str = "0000000000000000000000000000000000000000000000000000000000000002";
    pub const N: &str = "fffffffffffcf0cd46e5f25eee71a49e0cdc65fb1299921af62d536cd10b500d";
}

/// BN P-638 domain parameters (TCG Algorithm Registry, ISO/IEC 15946-5):
/// y² = x³ + 257, G = (p − 1, 16), cofactor 1; big-endian hex, 80 bytes
/// each (a as libtpms gives it, in one byte).
pub mod bn_p638_domain {
    pub const KEY_BITS: u16 = 638;
    pub const P: &str = concat!(
        "23fffffdc000000d7fffffb8000001d3fffff942d000165e3fff94870000d52f",
        "fffdd0e00008de55c00086520021e55bfffff51ffff4eb800000004c80015acd",
        "ffffffffffffece00000000000000067"
    );
    pub const A: &str = "00";
    pub const B: &str = concat!(
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "00000000000000000000000000000101"
    );
    pub const GX: &str = concat!(
        "23fffffdc000000d7fffffb8000001d3fffff942d000165e3fff94870000d52f",
        "fffdd0e00008de55c00086520021e55bfffff51ffff4eb800000004c80015acd",
        "ffffffffffffece00000000000000066"
    );
    pub const GY: &str = concat!(
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "00000000000000000000000000000010"
    );
    pub const N: &str = concat!(
        "23fffffdc000000d7fffffb8000001d3fffff942d000165e3fff94870000d52f",
        "fffdd0e00008de55600086550021e555fffff54ffff4eac000000049800154d9",
        "ffffffffffffeda00000000000000061"
    );
}

/// TPM_ALG_SM3_256, the KDF hash the reference curve table names for SM2
/// P-256.
const TPM_ALG_SM3_256: u16 = 0x0012;

/// The TPMS_ALGORITHM_DETAIL_ECC values of `curve`: keySize, the hash of
/// its KDF (KDF1 of SP 800-56A; None: TPM_ALG_NULL) and p, a, b, gX, gY, n,
/// h. The KDF hashes are the reference curve table's (SHA-256 for the NIST
/// curves up to 256 bits, SHA-384 for P-384, SHA-512 for P-521, SM3-256 for
/// SM2 P-256 — a name only: as in libtpms, no command computes that KDF, and
/// SM3 is no hash of this TPM; none for the BN curves).
pub fn domain(curve: public::Curve) -> (u16, Option<u16>, [Vec<u8>; 7]) {
    use p521_domain::bytes;
    let h = alloc::vec![1u8];
    let hex = |v: [&str; 6]| {
        let [p, a, b, gx, gy, n] = v.map(bytes);
        [p, a, b, gx, gy, n, h.clone()]
    };
    match curve {
        public::Curve::P192 => {
            use p192_domain as d;
            (
                d::KEY_BITS,
                Some(alg::SHA256),
                hex([d::P, d::A, d::B, d::GX, d::GY, d::N]),
            )
        }
        public::Curve::P224 => {
            use p224_domain as d;
            (
                d::KEY_BITS,
                Some(alg::SHA256),
                hex([d::P, d::A, d::B, d::GX, d::GY, d::N]),
            )
        }
        public::Curve::P256 => {
            use p256_domain as d;
            let v = [&d::P[..], &d::A, &d::B, &d::GX, &d::GY, &d::N, &d::H].map(<[u8]>::to_vec);
            (d::KEY_BITS, Some(alg::SHA256), v)
        }
        public::Curve::P384 => {
            use p384_domain as d;
            let v = [&d::P[..], &d::A, &d::B, &d::GX, &d::GY, &d::N, &d::H].map(<[u8]>::to_vec);
            (d::KEY_BITS, Some(alg::SHA384), v)
        }
        public::Curve::P521 => {
            use p521_domain as d;
            (
                d::KEY_BITS,
                Some(alg::SHA512),
                hex([d::P, d::A, d::B, d::GX, d::GY, d::N]),
            )
        }
        public::Curve::BnP256 => {
            use bn_p256_domain as d;
            (
                d::KEY_BITS,
                None,
                hex([d::P, d::A, d::B, d::GX, d::GY, d::N]),
            )
        }
        public::Curve::BnP638 => {
            use bn_p638_domain as d;
            (
                d::KEY_BITS,
                None,
                hex([d::P, d::A, d::B, d::GX, d::GY, d::N]),
            )
        }
        public::Curve::Sm2P256 => {
            use sm2_domain as d;
            (
                d::KEY_BITS,
                Some(TPM_ALG_SM3_256),
                hex([d::P, d::A, d::B, d::GX, d::GY, d::N]),
            )
        }
    }
}

/// Part 3 §23.3 TPM2_ECC_Parameters: TPMS_ALGORITHM_DETAIL_ECC of an
/// implemented curve ([`public::Curve`]), with the curve's KDF ([`domain`])
/// and no fixed signing scheme, as the reference curve table.
pub fn ecc_parameters(_tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let curve = cmd.params.u16().p(1)?;
    cmd.finish()?;
    let Some(c) = public::Curve::from_id(curve) else {
        return Err(rc::CURVE + rc::P + rc::N1);
    };
    let (bits, kdf_hash, values) = domain(c);
    cmd.out.u16(curve).u16(bits);
    match kdf_hash {
        Some(h) => cmd.out.u16(alg::KDF1_SP800_56A).u16(h),
        None => cmd.out.u16(alg::NULL),
    };
    cmd.out.u16(alg::NULL);
    for v in values {
        cmd.out.tpm2b(&v);
    }
    Ok(())
}

#[cfg(test)]
mod ecc_parameter_tests {
    use super::p256_domain as d;
    use num_bigint_dig::BigUint;
    use p256::elliptic_curve::sec1::ToEncodedPoint;

    #[test]
    fn p256_domain_is_the_curve_of_the_p256_crate() {
        let g = p256::ProjectivePoint::GENERATOR
            .to_affine()
            .to_encoded_point(false);
        assert_eq!(g.x().unwrap().as_slice(), &d::GX);
        assert_eq!(g.y().unwrap().as_slice(), &d::GY);
        let big = |b: &[u8]| BigUint::from_bytes_be(b);
        let (p, x, y) = (big(&d::P), big(&d::GX), big(&d::GY));
        // a = p − 3, and G is on y² = x³ + ax + b.
        assert_eq!(big(&d::A) + BigUint::from(3u32), p);
        let lhs = (&y * &y) % &p;
        let rhs = (&x * &x * &x + big(&d::A) * &x + big(&d::B)) % &p;
        assert_eq!(lhs, rhs);
        // n·G is the identity: the p256 crate's scalar field wraps at N.
        let n_minus_1 = p256::Scalar::ZERO - p256::Scalar::ONE;
        let mut n = n_minus_1.to_bytes().to_vec();
        let last = n.len() - 1;
        n[last] += 1;
        assert_eq!(n, d::N);
    }

    #[test]
    fn p521_domain_is_the_curve_of_the_p521_crate() {
        use super::p521_domain as d;
        use p521::elliptic_curve::sec1::ToEncodedPoint as _;
        let g = p521::AffinePoint::GENERATOR.to_encoded_point(false);
        assert_eq!(g.x().unwrap().as_slice(), d::bytes(d::GX));
        assert_eq!(g.y().unwrap().as_slice(), d::bytes(d::GY));
        let big = |h: &str| BigUint::from_bytes_be(&d::bytes(h));
        let (p, x, y, a) = (big(d::P), big(d::GX), big(d::GY), big(d::A));
        assert_eq!(p, (BigUint::from(1u32) << 521) - BigUint::from(1u32));
        assert_eq!(&a + BigUint::from(3u32), p);
        assert_eq!((&y * &y) % &p, (&x * &x * &x + &a * &x + big(d::B)) % &p);
        // The scalar field wraps at N.
        let n_minus_1 = p521::Scalar::ZERO - p521::Scalar::ONE;
        let n = BigUint::from_bytes_be(&p521::elliptic_curve::PrimeField::to_repr(&n_minus_1))
            + BigUint::from(1u32);
        assert_eq!(n, big(d::N));
        for h in [d::P, d::A, d::B, d::GX, d::GY, d::N] {
            assert_eq!(d::bytes(h).len(), crate::public::P521_BYTES);
        }
    }
}
