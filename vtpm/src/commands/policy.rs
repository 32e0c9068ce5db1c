//! Part 3 §23: the policy commands over a policy (or trial) session —
//! PolicyRestart, PolicyGetDigest, PolicyPCR, PolicyAuthValue, PolicyPassword,
//! PolicyCommandCode, PolicyOR, PolicySecret, PolicyAuthorize (with
//! VerifySignature tickets), PolicyLocality and PolicyCpHash. A trial session computes the
//! digest without checking anything.

use crate::defs::{cc, handle, limits, rc, st};
use crate::dispatch;
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::{Digest, HashAlg};
use crate::session::{AuthSession, SessionKind};
use alloc::vec::Vec;

/// The policy session of handle `cmd.handles[i]` (loaded: the handle area
/// checked it).
fn session<'a>(tpm: &'a mut Tpm, cmd: &Cmd, i: usize) -> Result<&'a mut AuthSession, u32> {
    tpm.v
        .sessions
        .get_mut(cmd.handles[i])
        .ok_or(rc::REFERENCE_H0)
}

pub fn policy_restart(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let now = tpm.tpm_time();
    session(tpm, cmd, 0)?.reset_policy(now);
    Ok(())
}

pub fn policy_get_digest(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let d = session(tpm, cmd, 0)?.policy.digest;
    cmd.out.tpm2b(d.as_bytes());
    Ok(())
}

pub fn policy_auth_value(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let s = session(tpm, cmd, 0)?;
    s.extend_policy(&[&cc::POLICY_AUTH_VALUE.to_be_bytes()]);
    s.policy.auth_value_needed = true;
    s.policy.password_needed = false;
    Ok(())
}

pub fn policy_password(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let s = session(tpm, cmd, 0)?;
    // Same digest as PolicyAuthValue (Part 3 §23.18).
    s.extend_policy(&[&cc::POLICY_AUTH_VALUE.to_be_bytes()]);
    s.policy.password_needed = true;
    s.policy.auth_value_needed = false;
    Ok(())
}

pub fn policy_command_code(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let code = cmd.params.u32().p(1)?;
    cmd.finish()?;
    let s = session(tpm, cmd, 0)?;
    if s.policy.command_code.is_some_and(|c| c != code) {
        return Err(rc::VALUE + rc::P + rc::N1);
    }
    if dispatch::lookup(code).is_none() {
        return Err(rc::POLICY_CC + rc::P + rc::N1);
    }
    s.extend_policy(&[&cc::POLICY_COMMAND_CODE.to_be_bytes(), &code.to_be_bytes()]);
    s.policy.command_code = Some(code);
    Ok(())
}

pub fn policy_or(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let count = cmd.params.u32().p(1)? as usize;
    if !(2..=limits::MAX_DIGEST_LIST).contains(&count) {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    let mut list: Vec<&[u8]> = Vec::with_capacity(count);
    for _ in 0..count {
        list.push(cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?);
    }
    cmd.finish()?;
    let s = session(tpm, cmd, 0)?;
    if s.kind != SessionKind::Trial && !list.iter().any(|d| *d == s.policy.digest.as_bytes()) {
        log::warn!("vtpm: PolicyOR: the policy digest is not in the list");
        return Err(rc::VALUE + rc::P + rc::N1);
    }
    let size = s.hash.digest_size();
    s.policy.digest = Digest::filled(size, 0);
    let code = cc::POLICY_OR.to_be_bytes();
    let mut parts: Vec<&[u8]> = alloc::vec![&code];
    parts.extend(list);
    s.extend_policy(&parts);
    Ok(())
}

/// The digest of the selected PCRs' values, in selection order.
fn pcr_digest(tpm: &Tpm, h: HashAlg, sel: &[(HashAlg, u32)]) -> Digest {
    let mut values: Vec<Digest> = Vec::new();
    for (bank, mask) in sel {
        for i in 0..limits::PCR_COUNT {
            if mask & (1 << i) != 0 && tpm.v.allocation.is_allocated(*bank, i) {
                values.push(*tpm.v.pcrs.get(*bank, i));
            }
        }
    }
    let parts: Vec<&[u8]> = values.iter().map(Digest::as_bytes).collect();
    h.digest(&parts)
}

pub fn policy_pcr(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let pcr_digest_in = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    let before = cmd.params.rest();
    let sel = cmd.params.pcr_selection_list().p(2)?;
    let raw_sel = &before[..before.len() - cmd.params.remaining()];
    cmd.finish()?;
    let (hash, trial) = {
        let s = session(tpm, cmd, 0)?;
        (s.hash, s.kind == SessionKind::Trial)
    };
    let current = pcr_digest(tpm, hash, &sel);
    let digest = if trial {
        if pcr_digest_in.is_empty() {
            current
        } else {
            Digest::from_slice(pcr_digest_in)
        }
    } else {
        if !pcr_digest_in.is_empty() && pcr_digest_in != current.as_bytes() {
            log::warn!("vtpm: PolicyPCR: the PCR values do not match pcrDigest");
            return Err(rc::VALUE + rc::P + rc::N1);
        }
        current
    };
    let counter = tpm.v.pcr_counter;
    let s = session(tpm, cmd, 0)?;
    s.extend_policy(&[&cc::POLICY_PCR.to_be_bytes(), raw_sel, digest.as_bytes()]);
    if !trial {
        s.policy.pcr_counter = Some(counter);
    }
    Ok(())
}

/// The hierarchy an entity belongs to, for tickets.
fn entity_hierarchy(h: u32) -> u32 {
    match h {
        handle::ENDORSEMENT => handle::ENDORSEMENT,
        handle::PLATFORM => handle::PLATFORM,
        _ => handle::OWNER,
    }
}

/// The authorization ticket of TPM2_PolicySecret / TPM2_PolicySigned
/// (TPMT_TK_AUTH, checked by TPM2_PolicyTicket): HMAC(proof(hierarchy), tag
/// || timeout || cpHashA || policyRef || authName || resetCount ||
/// restartCount). The counters make the ticket expire at the next startup,
/// when TPM time (which timeout counts in) starts again from zero.
fn auth_ticket(
    tpm: &Tpm,
    tag: u16,
    hierarchy: u32,
    timeout: u64,
    cp_hash_a: &[u8],
    policy_ref: &[u8],
    name: &[u8],
) -> Digest {
    HashAlg::Sha384.hmac(
        &tpm.hierarchy_proof(hierarchy),
        &[
            &tag.to_be_bytes(),
            &timeout.to_be_bytes(),
            cp_hash_a,
            policy_ref,
            name,
            &tpm.p.reset_count.to_be_bytes(),
            &tpm.p.restart_count.to_be_bytes(),
        ],
    )
}

/// The parameters TPM2_PolicySecret and TPM2_PolicySigned share.
struct Assertion<'a> {
    /// TPM2_PolicySecret or TPM2_PolicySigned.
    code: u32,
    /// TPM_ST_AUTH_SECRET or TPM_ST_AUTH_SIGNED.
    tag: u16,
    /// The hierarchy of the authorizing entity (for the ticket).
    hierarchy: u32,
    /// The Name of the authorizing entity.
    name: Vec<u8>,
    nonce_tpm: &'a [u8],
    cp_hash_a: &'a [u8],
    policy_ref: &'a [u8],
    expiration: i32,
}

/// The checks (PolicyParameterChecks: nonceTPM, expiration, cpHashA) and
/// digest update of an assertion on the policy session of handle `si`, then
/// its response: a ticket when expiration is negative.
fn assert_policy(tpm: &mut Tpm, cmd: &mut Cmd, si: usize, a: Assertion) -> Result<(), u32> {
    let now = tpm.tpm_time();
    let s = session(tpm, cmd, si)?;
    let trial = s.kind == SessionKind::Trial;
    let mut timeout = 0u64;
    if !trial {
        if a.expiration != 0 {
            let span = u64::from(a.expiration.unsigned_abs()) * 1000;
            timeout = if a.nonce_tpm.is_empty() {
                now + span
            } else {
                s.start_time + span
            };
        }
        if !a.nonce_tpm.is_empty() && a.nonce_tpm != s.nonce_tpm.as_bytes() {
            return Err(rc::NONCE + rc::P + rc::N1);
        }
        if timeout != 0 && timeout < now {
            return Err(rc::EXPIRED + rc::P + 4 * rc::N1);
        }
        if !a.cp_hash_a.is_empty() {
            if a.cp_hash_a.len() != s.hash.digest_size() {
                return Err(rc::SIZE + rc::P + 2 * rc::N1);
            }
            if s.policy.cp_hash_conflicts(a.cp_hash_a) {
                return Err(rc::CPHASH);
            }
        }
    }
    // policyDigest := H(H(policyDigest || commandCode || authName) || policyRef)
    s.extend_policy(&[&a.code.to_be_bytes(), &a.name]);
    s.extend_policy(&[a.policy_ref]);
    if !a.cp_hash_a.is_empty() {
        s.policy.cp_hash = Some(Digest::from_slice(a.cp_hash_a));
    }
    if timeout != 0 && s.policy.timeout.is_none_or(|t| timeout < t) {
        s.policy.timeout = Some(timeout);
    }
    if a.expiration < 0 && !trial {
        let ticket = auth_ticket(
            tpm,
            a.tag,
            a.hierarchy,
            timeout,
            a.cp_hash_a,
            a.policy_ref,
            &a.name,
        );
        cmd.out
            .tpm2b(&timeout.to_be_bytes())
            .u16(a.tag)
            .u32(a.hierarchy)
            .tpm2b(ticket.as_bytes());
    } else {
        cmd.out.tpm2b(&[]).u16(a.tag).u32(handle::NULL).tpm2b(&[]);
    }
    Ok(())
}

pub fn policy_secret(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let nonce_tpm = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    let cp_hash_a = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(2)?;
    let policy_ref = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(3)?;
    let expiration = cmd.params.u32().p(4)? as i32;
    cmd.finish()?;
    let auth_entity = cmd.handles[0];
    let a = Assertion {
        code: cc::POLICY_SECRET,
        tag: st::AUTH_SECRET,
        hierarchy: entity_hierarchy(auth_entity),
        name: tpm.entity_name(auth_entity),
        nonce_tpm,
        cp_hash_a,
        policy_ref,
        expiration,
    };
    assert_policy(tpm, cmd, 1, a)
}

/// Part 3 §23.3 TPM2_PolicySigned: authObject signed aHash =
/// H_sig(nonceTPM || expiration || cpHashA || policyRef) (the hash of the
/// signature's scheme). A trial session checks nothing.
pub fn policy_signed(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let nonce_tpm = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    let cp_hash_a = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(2)?;
    let policy_ref = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(3)?;
    let expiration = cmd.params.u32().p(4)? as i32;
    // TPMT_SIGNATURE's sigAlg is TPMI_ALG_SIG_SCHEME+: TPM_ALG_NULL (no
    // signature) serves a trial session.
    let sig = if cmd
        .params
        .rest()
        .starts_with(&crate::defs::alg::NULL.to_be_bytes())
    {
        cmd.params.u16().p(5)?;
        None
    } else {
        Some(super::signing::parse_signature(&mut cmd.params, 5)?)
    };
    cmd.finish()?;
    let key = tpm
        .key(cmd.handles[0])
        .ok_or(rc::KEY + rc::H + rc::N1)?
        .clone();
    let trial = session(tpm, cmd, 1)?.kind == SessionKind::Trial;
    if !trial {
        let Some(sig) = sig else {
            return Err(rc::SIGNATURE + rc::P + 5 * rc::N1);
        };
        let a_hash = sig
            .1
            .digest(&[nonce_tpm, &expiration.to_be_bytes(), cp_hash_a, policy_ref]);
        if !super::signing::verify_with_key(&key, 1, 5, sig, a_hash.as_bytes())? {
            log::warn!("vtpm: PolicySigned: the signature does not verify");
            return Err(rc::SIGNATURE + rc::P + 5 * rc::N1);
        }
    }
    let a = Assertion {
        code: cc::POLICY_SIGNED,
        tag: st::AUTH_SIGNED,
        hierarchy: key.hierarchy,
        name: key.name,
        nonce_tpm,
        cp_hash_a,
        policy_ref,
        expiration,
    };
    assert_policy(tpm, cmd, 1, a)
}

/// Part 3 §23.5 TPM2_PolicyTicket: the assertion of an earlier
/// TPM2_PolicySigned or TPM2_PolicySecret, proved by its ticket, until its
/// timeout.
pub fn policy_ticket(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let timeout_in = cmd.params.tpm2b(8).p(1)?;
    let cp_hash_a = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(2)?;
    let policy_ref = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(3)?;
    let auth_name = cmd.params.tpm2b(limits::TPMU_HA_SIZE + 2).p(4)?;
    let tag = cmd.params.u16().p(5)?;
    let code = match tag {
        st::AUTH_SIGNED => cc::POLICY_SIGNED,
        st::AUTH_SECRET => cc::POLICY_SECRET,
        _ => return Err(rc::TAG + rc::P + 5 * rc::N1),
    };
    let t_hierarchy = cmd.params.u32().p(5)?;
    if !matches!(
        t_hierarchy,
        handle::OWNER | handle::PLATFORM | handle::ENDORSEMENT | handle::NULL
    ) {
        return Err(rc::VALUE + rc::P + 5 * rc::N1);
    }
    let t_digest = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(5)?;
    cmd.finish()?;
    // TPM2B_TIMEOUT: the 8-byte TPM time a ticket expires at.
    if timeout_in.len() != 8 {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    let mut t = [0u8; 8];
    t.copy_from_slice(timeout_in);
    let timeout = u64::from_be_bytes(t);
    let now = tpm.tpm_time();
    if timeout < now {
        return Err(rc::EXPIRED + rc::P + rc::N1);
    }
    let expect = auth_ticket(
        tpm,
        tag,
        t_hierarchy,
        timeout,
        cp_hash_a,
        policy_ref,
        auth_name,
    );
    if !crate::session::ct_eq(t_digest, expect.as_bytes()) {
        log::warn!("vtpm: PolicyTicket: the ticket does not verify");
        return Err(rc::TICKET + rc::P + 5 * rc::N1);
    }
    let s = session(tpm, cmd, 0)?;
    if !cp_hash_a.is_empty() {
        if cp_hash_a.len() != s.hash.digest_size() {
            return Err(rc::SIZE + rc::P + 2 * rc::N1);
        }
        if s.policy.cp_hash_conflicts(cp_hash_a) {
            return Err(rc::CPHASH);
        }
    }
    s.extend_policy(&[&code.to_be_bytes(), auth_name]);
    s.extend_policy(&[policy_ref]);
    if !cp_hash_a.is_empty() {
        s.policy.cp_hash = Some(Digest::from_slice(cp_hash_a));
    }
    if s.policy.timeout.is_none_or(|t| timeout < t) {
        s.policy.timeout = Some(timeout);
    }
    Ok(())
}

/// TPM_EO: the comparisons of TPM2_PolicyNV and TPM2_PolicyCounterTimer.
mod eo {
    pub const EQ: u16 = 0x0000;
    pub const NEQ: u16 = 0x0001;
    pub const SIGNED_GT: u16 = 0x0002;
    pub const UNSIGNED_GT: u16 = 0x0003;
    pub const SIGNED_LT: u16 = 0x0004;
    pub const UNSIGNED_LT: u16 = 0x0005;
    pub const SIGNED_GE: u16 = 0x0006;
    pub const UNSIGNED_GE: u16 = 0x0007;
    pub const SIGNED_LE: u16 = 0x0008;
    pub const UNSIGNED_LE: u16 = 0x0009;
    pub const BITSET: u16 = 0x000A;
    pub const BITCLEAR: u16 = 0x000B;
}

/// TPM_RC_POLICY: a policy assertion is false.
const RC_POLICY: u32 = rc::VER1 + 0x026;

/// `a` (operand A, from the TPM) compared with `b` by `op`: both big-endian
/// integers of the same length, two's complement for the signed operations.
fn compare(op: u16, a: &[u8], b: &[u8]) -> bool {
    use core::cmp::Ordering;
    let unsigned = a.cmp(b);
    let signed = match (a.first(), b.first()) {
        (Some(x), Some(y)) if (x ^ y) & 0x80 != 0 => {
            // Different signs: the negative one is smaller.
            if x & 0x80 != 0 {
                Ordering::Less
            } else {
                Ordering::Greater
            }
        }
        _ => unsigned,
    };
    match op {
        eo::EQ => unsigned == Ordering::Equal,
        eo::NEQ => unsigned != Ordering::Equal,
        eo::SIGNED_GT => signed == Ordering::Greater,
        eo::UNSIGNED_GT => unsigned == Ordering::Greater,
        eo::SIGNED_LT => signed == Ordering::Less,
        eo::UNSIGNED_LT => unsigned == Ordering::Less,
        eo::SIGNED_GE => signed != Ordering::Less,
        eo::UNSIGNED_GE => unsigned != Ordering::Less,
        eo::SIGNED_LE => signed != Ordering::Greater,
        eo::UNSIGNED_LE => unsigned != Ordering::Greater,
        eo::BITSET => a.iter().zip(b).all(|(x, y)| x & y == *y),
        eo::BITCLEAR => a.iter().zip(b).all(|(x, y)| x & y == 0),
        _ => false,
    }
}

/// operandB, offset and operation (parameters 1–3) of TPM2_PolicyNV and
/// TPM2_PolicyCounterTimer, and args = H(operandB || offset || operation)
/// in the session's hash.
fn comparison<'a>(cmd: &mut Cmd<'a>) -> Result<(&'a [u8], u16, u16), u32> {
    let operand_b = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    let offset = cmd.params.u16().p(2)?;
    let op = cmd.params.u16().p(3)?;
    if op > eo::BITCLEAR {
        return Err(rc::VALUE + rc::P + 3 * rc::N1);
    }
    cmd.finish()?;
    Ok((operand_b, offset, op))
}

fn comparison_args(h: HashAlg, operand_b: &[u8], offset: u16, op: u16) -> Digest {
    h.digest(&[operand_b, &offset.to_be_bytes(), &op.to_be_bytes()])
}

/// Part 3 §23.9 TPM2_PolicyNV: the contents of an NV index (read with the
/// authorization of handle 1) at offset, compared with operandB.
pub fn policy_nv(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let (operand_b, offset, op) = comparison(cmd)?;
    let trial = session(tpm, cmd, 2)?.kind == SessionKind::Trial;
    if !trial {
        let data = super::nv::read_for_policy(tpm, cmd)?;
        if usize::from(offset) > data.len() {
            return Err(rc::VALUE + rc::P + 2 * rc::N1);
        }
        let end = usize::from(offset) + operand_b.len();
        if end > data.len() {
            return Err(rc::SIZE + rc::P + rc::N1);
        }
        if !compare(op, &data[usize::from(offset)..end], operand_b) {
            return Err(RC_POLICY);
        }
    }
    let name = tpm.entity_name(cmd.handles[1]);
    let s = session(tpm, cmd, 2)?;
    let args = comparison_args(s.hash, operand_b, offset, op);
    s.extend_policy(&[&cc::POLICY_NV.to_be_bytes(), args.as_bytes(), &name]);
    Ok(())
}

/// Part 3 §23.10 TPM2_PolicyCounterTimer: TPMS_TIME_INFO (TPM time, clock,
/// resetCount, restartCount, safe) at offset, compared with operandB.
pub fn policy_counter_timer(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let (operand_b, offset, op) = comparison(cmd)?;
    let trial = session(tpm, cmd, 0)?.kind == SessionKind::Trial;
    if !trial {
        let mut info = crate::marshal::Writer::new();
        info.u64(tpm.tpm_time())
            .u64(tpm.clock())
            .u32(tpm.p.reset_count)
            .u32(tpm.p.restart_count)
            .u8(tpm.v.safe as u8);
        if usize::from(offset) > info.buf.len() {
            return Err(rc::VALUE + rc::P + 2 * rc::N1);
        }
        let end = usize::from(offset) + operand_b.len();
        if end > info.buf.len() {
            return Err(rc::RANGE);
        }
        if !compare(op, &info.buf[usize::from(offset)..end], operand_b) {
            return Err(RC_POLICY);
        }
    }
    let s = session(tpm, cmd, 0)?;
    let args = comparison_args(s.hash, operand_b, offset, op);
    s.extend_policy(&[&cc::POLICY_COUNTER_TIMER.to_be_bytes(), args.as_bytes()]);
    Ok(())
}

/// Part 3 §23.22 TPM2_PolicyAuthorizeNV: the policy digest so far must be
/// the TPMT_HA an NV index holds (read with the authorization of handle 1);
/// the digest then restarts from the index's Name.
pub fn policy_authorize_nv(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let (trial, current, hash) = {
        let s = session(tpm, cmd, 2)?;
        (s.kind == SessionKind::Trial, s.policy.digest, s.hash)
    };
    if !trial {
        let data = super::nv::read_for_policy(tpm, cmd)?;
        let mut r = crate::marshal::Reader::new(&data);
        let alg = r.u16().map_err(|_| rc::VALUE)?;
        let n = hash.digest_size();
        let ok = alg == hash.id() && r.remaining() >= n && {
            let d = r.bytes(n).map_err(|_| rc::VALUE)?;
            crate::session::ct_eq(d, current.as_bytes())
        };
        if !ok {
            log::warn!("vtpm: PolicyAuthorizeNV: the policy is not the one the index holds");
            return Err(rc::VALUE);
        }
    }
    let name = tpm.entity_name(cmd.handles[1]);
    let s = session(tpm, cmd, 2)?;
    s.policy.digest = Digest::filled(s.hash.digest_size(), 0);
    s.extend_policy(&[&cc::POLICY_AUTHORIZE_NV.to_be_bytes(), &name]);
    Ok(())
}

/// TPMT_TK_VERIFIED tag.
const ST_VERIFIED: u16 = 0x8022;

pub fn policy_authorize(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let approved = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    let policy_ref = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(2)?;
    let key_sign = cmd.params.tpm2b(limits::TPMU_HA_SIZE + 2).p(3)?;
    let tag = cmd.params.u16().p(4)?;
    if tag != ST_VERIFIED {
        return Err(rc::TAG + rc::P + 4 * rc::N1);
    }
    let t_hierarchy = cmd.params.u32().p(4)?;
    let t_digest = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(4)?;
    cmd.finish()?;
    // keySign is a Name: a hash algorithm and a digest of its size.
    let key_alg = (key_sign.len() >= 2)
        .then(|| HashAlg::from_id(u16::from_be_bytes([key_sign[0], key_sign[1]])))
        .flatten()
        .filter(|h| key_sign.len() == 2 + h.digest_size())
        .ok_or(rc::HASH + rc::P + 3 * rc::N1)?;
    let proof = match t_hierarchy {
        handle::ENDORSEMENT => Some(tpm.p.eh_proof),
        handle::PLATFORM => Some(tpm.p.ph_proof),
        handle::OWNER => Some(tpm.p.sh_proof),
        _ => None,
    };
    let s = session(tpm, cmd, 0)?;
    if s.kind != SessionKind::Trial {
        if approved != s.policy.digest.as_bytes() {
            return Err(rc::VALUE + rc::P + rc::N1);
        }
        // The ticket says keySign signed H(approvedPolicy || policyRef).
        let a_hash = key_alg.digest(&[approved, policy_ref]);
        let ok = proof.is_some_and(|p| {
            crate::session::ct_eq(
                t_digest,
                HashAlg::Sha384
                    .hmac(
                        &p,
                        &[&ST_VERIFIED.to_be_bytes(), a_hash.as_bytes(), key_sign],
                    )
                    .as_bytes(),
            )
        });
        if !ok {
            return Err(rc::TICKET + rc::P + 4 * rc::N1);
        }
    }
    // The digest restarts: H(H(0 || CC || keySign) || policyRef).
    s.policy.digest = Digest::filled(s.hash.digest_size(), 0);
    s.extend_policy(&[&cc::POLICY_AUTHORIZE.to_be_bytes(), key_sign]);
    s.extend_policy(&[policy_ref]);
    Ok(())
}

pub fn policy_locality(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let locality = cmd.params.u8().p(1)?;
    cmd.finish()?;
    if locality == 0 {
        return Err(rc::RANGE + rc::P + rc::N1);
    }
    let s = session(tpm, cmd, 0)?;
    // A second PolicyLocality may only narrow the set (extended localities
    // above 31 are not supported).
    let narrowed = match s.policy.locality {
        None => locality,
        Some(prev) if locality < 32 && prev < 32 => prev & locality,
        Some(_) => 0,
    };
    if locality >= 32 || narrowed == 0 {
        return Err(rc::RANGE + rc::P + rc::N1);
    }
    s.extend_policy(&[&cc::POLICY_LOCALITY.to_be_bytes(), &[locality]]);
    s.policy.locality = Some(narrowed);
    Ok(())
}

pub fn policy_cp_hash(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let cp = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    cmd.finish()?;
    let s = session(tpm, cmd, 0)?;
    if cp.len() != s.hash.digest_size() {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    if s.policy.cp_hash_conflicts(cp) {
        return Err(rc::CPHASH);
    }
    s.extend_policy(&[&cc::POLICY_CP_HASH.to_be_bytes(), cp]);
    s.policy.cp_hash = Some(Digest::from_slice(cp));
    Ok(())
}

/// Part 3 §23.12 TPM2_PolicyNameHash: the command's handles must have the
/// Names whose digest is nameHash (exclusive with a cpHash or template).
pub fn policy_name_hash(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let name_hash = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    cmd.finish()?;
    let s = session(tpm, cmd, 0)?;
    if name_hash.len() != s.hash.digest_size() {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    let p = &s.policy;
    if p.cp_hash.is_some() || p.name_hash.is_some() || p.template_hash.is_some() {
        return Err(rc::CPHASH);
    }
    s.extend_policy(&[&cc::POLICY_NAME_HASH.to_be_bytes(), name_hash]);
    s.policy.name_hash = Some(Digest::from_slice(name_hash));
    Ok(())
}

/// Part 3 §23.15 TPM2_PolicyDuplicationSelect: TPM2_Duplicate of the object
/// named objectName to the parent named newParentName (the object's Name
/// in the digest only when includeObject is YES).
pub fn policy_duplication_select(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let object_name = cmd.params.tpm2b(limits::TPMU_HA_SIZE + 2).p(1)?;
    let new_parent_name = cmd.params.tpm2b(limits::TPMU_HA_SIZE + 2).p(2)?;
    let include_object = cmd.params.yes_no().p(3)?;
    cmd.finish()?;
    let s = session(tpm, cmd, 0)?;
    let p = &s.policy;
    if p.cp_hash.is_some() || p.name_hash.is_some() || p.template_hash.is_some() {
        return Err(rc::CPHASH);
    }
    if p.command_code.is_some_and(|c| c != cc::DUPLICATE) {
        return Err(rc::COMMAND_CODE);
    }
    let name_hash = s.hash.digest(&[object_name, new_parent_name]);
    let code = cc::POLICY_DUPLICATION_SELECT.to_be_bytes();
    let yes = [include_object as u8];
    if include_object {
        s.extend_policy(&[&code, object_name, new_parent_name, &yes]);
    } else {
        s.extend_policy(&[&code, new_parent_name, &yes]);
    }
    s.policy.name_hash = Some(name_hash);
    s.policy.command_code = Some(cc::DUPLICATE);
    Ok(())
}

/// Part 3 §23.23 TPM2_PolicyTemplate: the creating command's template must
/// hash to templateHash (exclusive with a cpHash or name hash).
pub fn policy_template(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let template_hash = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    cmd.finish()?;
    let s = session(tpm, cmd, 0)?;
    let p = &s.policy;
    if p.cp_hash.is_some() || p.name_hash.is_some() {
        return Err(rc::CPHASH);
    }
    if p.template_hash
        .is_some_and(|t| t.as_bytes() != template_hash)
    {
        return Err(rc::VALUE + rc::P + rc::N1);
    }
    if template_hash.len() != s.hash.digest_size() {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    s.extend_policy(&[&cc::POLICY_TEMPLATE.to_be_bytes(), template_hash]);
    s.policy.template_hash = Some(Digest::from_slice(template_hash));
    Ok(())
}

/// Part 3 §23.21 TPM2_PolicyNvWritten: the NV index authorized must (YES)
/// or must not (NO) have been written.
pub fn policy_nv_written(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let written = cmd.params.yes_no().p(1)?;
    cmd.finish()?;
    let s = session(tpm, cmd, 0)?;
    if s.policy.nv_written.is_some_and(|w| w != written) {
        return Err(rc::VALUE + rc::P + rc::N1);
    }
    s.extend_policy(&[&cc::POLICY_NV_WRITTEN.to_be_bytes(), &[written as u8]]);
    s.policy.nv_written = Some(written);
    Ok(())
}

/// Part 3 §23.13 TPM2_PolicyPhysicalPresence: the authorization needs
/// physical presence (which this TPM never has asserted).
pub fn policy_physical_presence(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let s = session(tpm, cmd, 0)?;
    s.extend_policy(&[&cc::POLICY_PHYSICAL_PRESENCE.to_be_bytes()]);
    s.policy.pp_required = true;
    Ok(())
}
