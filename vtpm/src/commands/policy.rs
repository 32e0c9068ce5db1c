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

pub fn policy_secret(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let nonce_tpm = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    let cp_hash_a = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(2)?;
    let policy_ref = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(3)?;
    let expiration = cmd.params.u32().p(4)? as i32;
    cmd.finish()?;
    let now = tpm.tpm_time();
    let auth_entity = cmd.handles[0];
    let name = tpm.entity_name(auth_entity);
    let s = session(tpm, cmd, 1)?;
    let trial = s.kind == SessionKind::Trial;
    let mut timeout = 0u64;
    if !trial {
        if expiration != 0 {
            let span = u64::from(expiration.unsigned_abs()) * 1000;
            timeout = if nonce_tpm.is_empty() {
                now + span
            } else {
                s.start_time + span
            };
        }
        if !nonce_tpm.is_empty() && nonce_tpm != s.nonce_tpm.as_bytes() {
            return Err(rc::NONCE + rc::P + rc::N1);
        }
        if timeout != 0 && timeout < now {
            return Err(rc::EXPIRED + rc::P + 4 * rc::N1);
        }
        if !cp_hash_a.is_empty() {
            if cp_hash_a.len() != s.hash.digest_size() {
                return Err(rc::SIZE + rc::P + 2 * rc::N1);
            }
            if s.policy.cp_hash.is_some_and(|c| c.as_bytes() != cp_hash_a) {
                return Err(rc::CPHASH);
            }
        }
    }
    // policyDigest := H(H(policyDigest || TPM_CC_PolicySecret || authName) || policyRef)
    s.extend_policy(&[&cc::POLICY_SECRET.to_be_bytes(), &name]);
    s.extend_policy(&[policy_ref]);
    if !cp_hash_a.is_empty() {
        s.policy.cp_hash = Some(Digest::from_slice(cp_hash_a));
    }
    if timeout != 0 && s.policy.timeout.is_none_or(|t| timeout < t) {
        s.policy.timeout = Some(timeout);
    }
    if expiration < 0 && !trial {
        let hierarchy = entity_hierarchy(auth_entity);
        let proof = match hierarchy {
            handle::ENDORSEMENT => tpm.p.eh_proof,
            handle::PLATFORM => tpm.p.ph_proof,
            _ => tpm.p.sh_proof,
        };
        let ticket = HashAlg::Sha384.hmac(
            &proof,
            &[
                &st::AUTH_SECRET.to_be_bytes(),
                &timeout.to_be_bytes(),
                cp_hash_a,
                policy_ref,
                &name,
            ],
        );
        cmd.out
            .tpm2b(&timeout.to_be_bytes())
            .u16(st::AUTH_SECRET)
            .u32(hierarchy)
            .tpm2b(ticket.as_bytes());
    } else {
        cmd.out
            .tpm2b(&[])
            .u16(st::AUTH_SECRET)
            .u32(handle::NULL)
            .tpm2b(&[]);
    }
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
    if s.policy.cp_hash.is_some_and(|c| c.as_bytes() != cp) {
        return Err(rc::CPHASH);
    }
    s.extend_policy(&[&cc::POLICY_CP_HASH.to_be_bytes(), cp]);
    s.policy.cp_hash = Some(Digest::from_slice(cp));
    Ok(())
}
