//! Part 3 §18: attestation commands — TPM2_Certify (§18.2),
//! TPM2_CertifyCreation (§18.3) and TPM2_GetTime (§18.7) — and §31.16
//! TPM2_NV_Certify. Each returns a
//! TPMS_ATTEST built by `signing::attest` and its signature by the
//! signing key (or TPM_ALG_NULL when the signing handle is TPM_RH_NULL).

use crate::defs::{handle, limits, rc, st};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::HashAlg;
use crate::marshal::Writer;
use crate::session::ct_eq;

use super::signing::{attest, attest_signer, sig_scheme, sign_attest};

/// Hash of tickets (the context integrity hash; as TPM2_Create's).
const TICKET_HASH: HashAlg = HashAlg::Sha384;

/// Largest TPM2B_DATA (sizeof(TPMT_HA)).
const MAX_DATA: usize = limits::TPMU_HA_SIZE + 2;

/// TPM2_Certify: objectHandle (ADMIN) is certified by signHandle (USER):
/// TPMS_CERTIFY_INFO = the object's Name and Qualified Name.
pub fn certify(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let qualifying = cmd.params.tpm2b(MAX_DATA).p(1)?;
    let scheme = sig_scheme(&mut cmd.params, 2)?;
    cmd.finish()?;
    // A sequence object has no public area to certify.
    let object = tpm.key(cmd.handles[0]).ok_or(rc::TYPE + rc::H + rc::N1)?;
    let mut body = Writer::new();
    body.tpm2b(&object.name).tpm2b(&object.qualified_name);
    let signer = attest_signer(tpm, cmd.handles[1], 2, scheme, 2)?;
    let a = attest(
        tpm,
        signer.as_ref().map(|s| &s.0),
        st::ATTEST_CERTIFY,
        qualifying,
        &body.buf,
    );
    let sig = sign_attest(tpm, signer.as_ref(), &a)?;
    cmd.out.tpm2b(&a).bytes(&sig);
    Ok(())
}

/// TPM2_CertifyCreation: signHandle (USER) certifies that objectHandle was
/// created by this TPM with creation data whose hash is creationHash, as the
/// creation ticket TPM2_Create/CreatePrimary issued proves.
pub fn certify_creation(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let qualifying = cmd.params.tpm2b(MAX_DATA).p(1)?;
    let creation_hash = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(2)?;
    let scheme = sig_scheme(&mut cmd.params, 3)?;
    let tag = cmd.params.u16().p(4)?;
    if tag != st::CREATION {
        return Err(rc::TAG + rc::P + 4 * rc::N1);
    }
    let t_hierarchy = cmd.params.u32().p(4)?;
    if !matches!(
        t_hierarchy,
        handle::OWNER | handle::PLATFORM | handle::ENDORSEMENT | handle::NULL
    ) {
        return Err(rc::VALUE + rc::P + 4 * rc::N1);
    }
    let t_digest = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(4)?;
    cmd.finish()?;
    let object = tpm
        .key(cmd.handles[1])
        .ok_or(rc::TYPE + rc::H + 2 * rc::N1)?;
    let name = object.name.clone();
    // The ticket: HMAC(proof(hierarchy), TPM_ST_CREATION || Name || creationHash).
    let valid = t_hierarchy != handle::NULL
        && ct_eq(
            t_digest,
            TICKET_HASH
                .hmac(
                    &tpm.hierarchy_proof(t_hierarchy),
                    &[&st::CREATION.to_be_bytes(), &name, creation_hash],
                )
                .as_bytes(),
        );
    if !valid {
        log::warn!("vtpm: CertifyCreation: the creation ticket does not verify");
        return Err(rc::TICKET + rc::P + 4 * rc::N1);
    }
    let mut body = Writer::new();
    body.tpm2b(&name).tpm2b(creation_hash);
    let signer = attest_signer(tpm, cmd.handles[0], 1, scheme, 3)?;
    let a = attest(
        tpm,
        signer.as_ref().map(|s| &s.0),
        st::ATTEST_CREATION,
        qualifying,
        &body.buf,
    );
    let sig = sign_attest(tpm, signer.as_ref(), &a)?;
    cmd.out.tpm2b(&a).bytes(&sig);
    Ok(())
}

/// TPM2_GetTime: the endorsement hierarchy (privacy administrator, USER)
/// allows signHandle (USER) to sign TPMS_TIME_ATTEST_INFO — TPM time, the
/// clock information in clear and the firmware version.
pub fn get_time(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let qualifying = cmd.params.tpm2b(MAX_DATA).p(1)?;
    let scheme = sig_scheme(&mut cmd.params, 2)?;
    cmd.finish()?;
    let signer = attest_signer(tpm, cmd.handles[1], 2, scheme, 2)?;
    let (v1, v2) = crate::commands::capability::FIRMWARE_VERSION;
    let mut body = Writer::new();
    body.u64(tpm.tpm_time())
        .u64(tpm.clock())
        .u32(tpm.p.reset_count)
        .u32(tpm.p.restart_count)
        .u8(tpm.v.safe as u8)
        .u64(u64::from(v1) << 32 | u64::from(v2));
    let a = attest(
        tpm,
        signer.as_ref().map(|s| &s.0),
        st::ATTEST_TIME,
        qualifying,
        &body.buf,
    );
    let sig = sign_attest(tpm, signer.as_ref(), &a)?;
    cmd.out.tpm2b(&a).bytes(&sig);
    Ok(())
}

/// TPM2_NV_Certify: signHandle (USER) signs size bytes of an NV index at
/// offset, read with the authorization of authHandle (USER):
/// TPMS_NV_CERTIFY_INFO = the index's Name, the offset and the contents.
pub fn nv_certify(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let qualifying = cmd.params.tpm2b(MAX_DATA).p(1)?;
    let scheme = sig_scheme(&mut cmd.params, 2)?;
    let size = cmd.params.u16().p(3)?;
    let offset = cmd.params.u16().p(4)?;
    cmd.finish()?;
    let signer = attest_signer(tpm, cmd.handles[0], 1, scheme, 2)?;
    let data = super::nv::read_checked(tpm, cmd, 1)?;
    let (offset_n, end) = (usize::from(offset), usize::from(offset) + usize::from(size));
    if usize::from(size) > limits::MAX_BUFFER || end > data.len() {
        return Err(super::nv::nvrc::NV_RANGE);
    }
    let mut body = Writer::new();
    body.tpm2b(&tpm.entity_name(cmd.handles[2]))
        .u16(offset)
        .tpm2b(&data[offset_n..end]);
    let a = attest(
        tpm,
        signer.as_ref().map(|s| &s.0),
        st::ATTEST_NV,
        qualifying,
        &body.buf,
    );
    let sig = sign_attest(tpm, signer.as_ref(), &a)?;
    cmd.out.tpm2b(&a).bytes(&sig);
    Ok(())
}
