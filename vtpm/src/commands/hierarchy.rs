//! Part 3 §24: TPM2_HierarchyControl, TPM2_SetPrimaryPolicy and
//! TPM2_HierarchyChangeAuth.

use crate::defs::{handle, limits, rc};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::Digest;

pub fn hierarchy_control(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let enable = cmd.params.u32().p(1)?;
    if !matches!(
        enable,
        handle::OWNER | handle::ENDORSEMENT | handle::PLATFORM | handle::PLATFORM_NV
    ) {
        return Err(rc::VALUE + rc::P + rc::N1);
    }
    let state = cmd.params.yes_no().p(2)?;
    cmd.finish()?;
    let auth = cmd.handles[0];
    // Platform and its NV are controlled only with platformAuth; owner and
    // endorsement may disable themselves, and only the platform re-enables them.
    let allowed = match enable {
        handle::PLATFORM | handle::PLATFORM_NV => auth == handle::PLATFORM,
        handle::OWNER => {
            auth == handle::PLATFORM || (auth == handle::OWNER && (!state || tpm.v.sh_enable))
        }
        _ => {
            auth == handle::PLATFORM || (auth == handle::ENDORSEMENT && (!state || tpm.v.eh_enable))
        }
    };
    if !allowed {
        return Err(rc::AUTH_TYPE);
    }
    let slot = match enable {
        handle::PLATFORM => &mut tpm.v.ph_enable,
        handle::PLATFORM_NV => &mut tpm.v.ph_enable_nv,
        handle::OWNER => &mut tpm.v.sh_enable,
        _ => &mut tpm.v.eh_enable,
    };
    if *slot != state {
        *slot = state;
        cmd.breaks_orderly = true;
    }
    Ok(())
}

pub fn hierarchy_change_auth(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let new = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    cmd.finish()?;
    let new = crate::auth::strip_trailing_zeros(new);
    // The authValue may be no larger than the context integrity digest.
    if new.len() > limits::MAX_HIERARCHY_AUTH {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    let d = Digest::from_slice(new);
    match cmd.handles[0] {
        handle::PLATFORM => tpm.v.platform_auth = d,
        handle::OWNER => tpm.p.owner_auth = d,
        handle::ENDORSEMENT => tpm.p.endorsement_auth = d,
        _ => tpm.p.lockout_auth = d,
    }
    if cmd.handles[0] != handle::PLATFORM {
        cmd.nv_dirty = true;
    } else {
        cmd.breaks_orderly = true;
    }
    Ok(())
}

pub fn set_primary_policy(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let policy = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    let alg = cmd.params.hash_alg(true).p(2)?;
    cmd.finish()?;
    let value = match alg {
        None if policy.is_empty() => None,
        Some(h) if policy.len() == h.digest_size() => Some((h, Digest::from_slice(policy))),
        _ => return Err(rc::SIZE + rc::P + rc::N1),
    };
    match cmd.handles[0] {
        handle::PLATFORM => {
            tpm.v.platform_policy = value;
            cmd.breaks_orderly = true;
            return Ok(());
        }
        handle::OWNER => tpm.p.owner_policy = value,
        handle::ENDORSEMENT => tpm.p.endorsement_policy = value,
        _ => tpm.p.lockout_policy = value,
    }
    cmd.nv_dirty = true;
    Ok(())
}
