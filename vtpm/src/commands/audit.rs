//! Command audit (Part 1 §33, Part 3 §21): TPM2_SetCommandCodeAuditStatus
//! chooses the audit hash and the audited commands; every successful audited
//! command extends the reset-cycle audit digest with its cpHash and rpHash
//! (the first one after a reset of the digest bumps the persistent audit
//! counter); TPM2_GetCommandAuditDigest reports — and, when signed, restarts —
//! it.

use crate::authorize::{cp_hash, rp_hash};
use crate::defs::{cc, handle, limits, rc, st};
use crate::dispatch;
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::Digest;
use crate::marshal::Writer;
use alloc::vec::Vec;

use super::platform::cc_list;
use super::signing::{attest, attest_signer, sig_scheme, sign_attest};

/// Largest TPM2B_DATA (sizeof(TPMT_HA)).
const MAX_DATA: usize = limits::TPMU_HA_SIZE + 2;

/// Is `code` audited?
pub(crate) fn is_audited(tpm: &Tpm, code: u32) -> bool {
    tpm.p.audit.commands.binary_search(&code).is_ok()
}

/// Extends the audit digest with a successful audited command: `names` are
/// the Names of its handles as the command saw them, `params` its parameters
/// and `out` its response parameters. Returns whether persistent state (the
/// audit counter) changed.
pub(crate) fn record(
    tpm: &mut Tpm,
    code: u32,
    names: &[Vec<u8>],
    params: &[u8],
    out: &[u8],
) -> bool {
    let alg = tpm.p.audit.alg;
    let mut counted = false;
    if tpm.v.audit_digest.as_bytes().is_empty() {
        tpm.v.audit_digest = Digest::filled(alg.digest_size(), 0);
        tpm.p.audit.counter = tpm.p.audit.counter.wrapping_add(1);
        counted = true;
    }
    let cp = cp_hash(alg, code, names, params);
    let rp = rp_hash(alg, code, out);
    tpm.v.audit_digest = alg.digest(&[tpm.v.audit_digest.as_bytes(), cp.as_bytes(), rp.as_bytes()]);
    counted
}

/// TPM2_SetCommandCodeAuditStatus: auth (owner or platform, USER), auditAlg
/// (TPMI_ALG_HASH+), setList, clearList (TPML_CC). A new audit hash cannot be
/// chosen together with list changes; it restarts the digest (and this
/// command is not audited). Unimplemented codes and TPM2_Shutdown are not
/// added; TPM2_SetCommandCodeAuditStatus stays audited.
pub fn set_command_code_audit_status(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let alg = cmd.params.hash_alg(true).p(1)?;
    let set = cc_list(&mut cmd.params, 2)?;
    let clear = cc_list(&mut cmd.params, 3)?;
    cmd.finish()?;
    match alg {
        Some(a) if a != tpm.p.audit.alg => {
            if !set.is_empty() || !clear.is_empty() {
                log::warn!("vtpm: SetCommandCodeAuditStatus: new hash and list changes at once");
                return Err(rc::VALUE + rc::P + rc::N1);
            }
            tpm.p.audit.alg = a;
            tpm.v.audit_digest = Digest::filled(0, 0);
            cmd.skip_audit = true;
        }
        _ => {
            let list = &mut tpm.p.audit.commands;
            for c in set {
                if c != cc::SHUTDOWN && dispatch::lookup(c).is_some() {
                    if let Err(at) = list.binary_search(&c) {
                        list.insert(at, c);
                    }
                }
            }
            for c in clear {
                if c != cc::SET_COMMAND_CODE_AUDIT_STATUS {
                    list.retain(|&x| x != c);
                }
            }
        }
    }
    cmd.nv_dirty = true;
    Ok(())
}

/// TPM2_GetCommandAuditDigest: privacyHandle (endorsement, USER), signHandle
/// (USER, or TPM_RH_NULL), qualifyingData, inScheme: TPMS_COMMAND_AUDIT_INFO —
/// audit counter, audit hash, audit digest and the digest of the audited
/// command codes. A signed report restarts the digest.
pub fn get_command_audit_digest(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let qualifying = cmd.params.tpm2b(MAX_DATA).p(1)?;
    let scheme = sig_scheme(&mut cmd.params, 2)?;
    cmd.finish()?;
    let signer = attest_signer(tpm, cmd.handles[1], 2, scheme, 2)?;
    let alg = tpm.p.audit.alg;
    let codes: Vec<[u8; 4]> = tpm
        .p
        .audit
        .commands
        .iter()
        .map(|c| c.to_be_bytes())
        .collect();
    let parts: Vec<&[u8]> = codes.iter().map(|c| &c[..]).collect();
    let command_digest = alg.digest(&parts);
    let mut body = Writer::new();
    body.u64(tpm.p.audit.counter)
        .u16(alg.id())
        .tpm2b(tpm.v.audit_digest.as_bytes())
        .tpm2b(command_digest.as_bytes());
    let a = attest(
        tpm,
        signer.as_ref().map(|s| &s.0),
        st::ATTEST_COMMAND_AUDIT,
        qualifying,
        &body.buf,
    );
    let sig = sign_attest(tpm, signer.as_ref(), &a)?;
    if cmd.handles[1] != handle::NULL {
        tpm.v.audit_digest = Digest::filled(0, 0);
    }
    cmd.out.tpm2b(&a).bytes(&sig);
    Ok(())
}

/// TPM2_GetSessionAuditDigest: privacyAdminHandle (endorsement, USER),
/// signHandle (USER, or TPM_RH_NULL), sessionHandle (an HMAC session that has
/// been used for audit), qualifyingData, inScheme: TPMS_SESSION_AUDIT_INFO —
/// whether the session is the exclusive audit session, and its digest.
pub fn get_session_audit_digest(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let qualifying = cmd.params.tpm2b(MAX_DATA).p(1)?;
    let scheme = sig_scheme(&mut cmd.params, 2)?;
    cmd.finish()?;
    let signer = attest_signer(tpm, cmd.handles[1], 2, scheme, 2)?;
    let h = cmd.handles[2];
    let digest = tpm
        .v
        .sessions
        .get(h)
        .and_then(|s| s.audit)
        .ok_or(rc::TYPE + rc::H + 3 * rc::N1)?;
    let mut body = Writer::new();
    body.u8((tpm.v.exclusive_audit == Some(h)) as u8)
        .tpm2b(digest.as_bytes());
    let a = attest(
        tpm,
        signer.as_ref().map(|s| &s.0),
        st::ATTEST_SESSION_AUDIT,
        qualifying,
        &body.buf,
    );
    let sig = sign_attest(tpm, signer.as_ref(), &a)?;
    cmd.out.tpm2b(&a).bytes(&sig);
    Ok(())
}
