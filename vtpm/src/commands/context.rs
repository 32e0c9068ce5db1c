//! TPM2_FlushContext (Part 3 §28.4), TPM2_Hash (§15.4) and TPM2_ReadClock (§29.1).
//! FlushContext flushes sessions and transient objects.

use crate::defs::{handle, limits, rc, st, TPM_GENERATED_VALUE};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::HashAlg;

pub fn flush_context(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let h = cmd.params.u32().p(1)?;
    let ht = handle::ht(h);
    if ht != handle::HT_TRANSIENT
        && ht != handle::HT_HMAC_SESSION
        && ht != handle::HT_POLICY_SESSION
    {
        return Err(rc::VALUE + rc::P + rc::N1);
    }
    cmd.finish()?;
    // Sessions may be loaded or saved; objects are loaded.
    let flushed = if ht == handle::HT_TRANSIENT {
        tpm.v.objects.remove(h).is_some()
    } else {
        tpm.v.sessions.flush(h)
    };
    if flushed {
        return Ok(());
    }
    Err(rc::HANDLE + rc::P + rc::N1)
}

/// The hash algorithm of tickets and proofs (the context integrity hash).
const TICKET_HASH: HashAlg = HashAlg::Sha384;

pub fn hash(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let data = cmd.params.tpm2b(limits::MAX_BUFFER).p(1)?;
    let alg = cmd
        .params
        .hash_alg(false)
        .p(2)?
        .ok_or(rc::HASH + rc::P + 2 * rc::N1)?;
    let hierarchy = cmd.params.u32().p(3)?;
    if !matches!(
        hierarchy,
        handle::OWNER | handle::ENDORSEMENT | handle::PLATFORM | handle::NULL
    ) {
        return Err(rc::VALUE + rc::P + 3 * rc::N1);
    }
    cmd.finish()?;
    let digest = alg.digest(&[data]);
    cmd.out.tpm2b(digest.as_bytes());
    let generated = data.len() >= 4 && data[..4] == TPM_GENERATED_VALUE.to_be_bytes();
    hash_ticket(tpm, cmd, hierarchy, &digest, !generated);
    Ok(())
}

/// Marshals the TPMT_TK_HASHCHECK for `digest`: a real ticket when the data is
/// safe to sign and the hierarchy is not TPM_RH_NULL, else a NULL ticket.
pub fn hash_ticket(
    tpm: &Tpm,
    cmd: &mut Cmd,
    hierarchy: u32,
    digest: &crate::hash::Digest,
    safe: bool,
) {
    let generated = !safe;
    let proof = match hierarchy {
        handle::OWNER => Some(tpm.p.sh_proof),
        handle::ENDORSEMENT => Some(tpm.p.eh_proof),
        handle::PLATFORM => Some(tpm.p.ph_proof),
        _ => None,
    };
    cmd.out.u16(st::HASHCHECK);
    match proof {
        Some(proof) if !generated => {
            let t = TICKET_HASH.hmac(&proof, &[&st::HASHCHECK.to_be_bytes(), digest.as_bytes()]);
            cmd.out.u32(hierarchy).tpm2b(t.as_bytes());
        }
        _ => {
            cmd.out.u32(handle::NULL).tpm2b(&[]);
        }
    }
}

pub fn read_clock(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let clock = tpm.clock();
    let time = tpm.tpm_time();
    cmd.out
        .u64(time)
        .u64(clock)
        .u32(tpm.p.reset_count)
        .u32(tpm.p.restart_count)
        .u8(tpm.v.safe as u8);
    Ok(())
}

/// TPM_CLOCK_ADJUST_… limit: Clock may not be set beyond 0xFFFF000000000000
/// (Part 3 §29.2).
const CLOCK_MAX: u64 = 0xFFFF_0000_0000_0000;

/// Part 3 §29.2 TPM2_ClockSet: Clock moves forward to newTime (never back)
/// and is committed to NV; TPM time is not affected.
pub fn clock_set(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let new_time = cmd.params.u64().p(1)?;
    cmd.finish()?;
    if new_time > CLOCK_MAX || new_time < tpm.clock() {
        return Err(rc::VALUE + rc::P + rc::N1);
    }
    tpm.v.clock_base = new_time;
    tpm.v.clock_from = tpm.tpm_time();
    cmd.nv_dirty = true;
    Ok(())
}
