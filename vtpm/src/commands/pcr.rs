//! Part 3 §22: PCR_Extend, PCR_Event, PCR_Read, PCR_Reset, PCR_Allocate.

use crate::defs::limits::{self, PCR_COUNT};
use crate::defs::{handle, rc};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::HashAlg;
use crate::pcr::{self, Allocation};

/// The PCR index of a TPMI_DH_PCR+ handle, or `None` for TPM_RH_NULL.
fn pcr_index(h: u32) -> Option<usize> {
    (h != handle::NULL).then_some(h as usize)
}

fn check_extend_locality(index: usize, locality: u8) -> Result<(), u32> {
    if pcr::extend_allowed(index, locality) {
        Ok(())
    } else {
        log::warn!("vtpm: PCR {index} may not be extended from locality {locality}");
        Err(rc::LOCALITY)
    }
}

/// Records `updates` changes of PCR `index` (update counter, orderly state).
/// Part 1 §17.7 (pcrUpdateCounter): every update of a PCR moves the counter,
/// so an extend counts once per allocated bank it extends (a PCR_Extend with
/// SHA-1 and SHA-256 digests is two updates, as in libtpms), a reset once;
/// PCRs in TPM_PT_PCR_NO_INCREMENT never move it.
pub(crate) fn changed(tpm: &mut Tpm, cmd: &mut Cmd, index: usize, updates: u32) {
    if pcr::counts_change(index) {
        tpm.v.pcr_counter = tpm.v.pcr_counter.wrapping_add(updates);
    }
    cmd.breaks_orderly = true;
}

pub fn pcr_extend(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let digests = cmd.params.digest_values().p(1)?;
    cmd.finish()?;
    let Some(index) = pcr_index(cmd.handles[0]) else {
        return Ok(());
    };
    check_extend_locality(index, cmd.locality)?;
    let mut updates = 0;
    for (h, d) in digests {
        if tpm.v.allocation.is_allocated(h, index) {
            tpm.v.pcrs.extend(h, index, d);
            updates += 1;
        }
    }
    changed(tpm, cmd, index, updates);
    Ok(())
}

pub fn pcr_event(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let data = cmd.params.tpm2b(limits::MAX_BUFFER).p(1)?;
    cmd.finish()?;
    let index = pcr_index(cmd.handles[0]);
    if let Some(i) = index {
        check_extend_locality(i, cmd.locality)?;
    }
    cmd.out.u32(HashAlg::ALL.len() as u32);
    let mut updates = 0;
    for h in HashAlg::ALL {
        let d = h.digest(&[data]);
        cmd.out.u16(h.id()).bytes(d.as_bytes());
        if let Some(i) = index {
            if tpm.v.allocation.is_allocated(h, i) {
                tpm.v.pcrs.extend(h, i, d.as_bytes());
                updates += 1;
            }
        }
    }
    if let Some(i) = index {
        changed(tpm, cmd, i, updates);
    }
    Ok(())
}

pub fn pcr_read(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let sel = cmd.params.pcr_selection_list().p(1)?;
    cmd.finish()?;
    let mut out_sel = alloc::vec::Vec::with_capacity(sel.len());
    let mut digests = alloc::vec::Vec::new();
    for (h, mask) in sel {
        let mut got = 0u32;
        for i in 0..PCR_COUNT {
            if mask & (1 << i) != 0
                && tpm.v.allocation.is_allocated(h, i)
                && digests.len() < limits::PCR_READ_MAX_DIGESTS
            {
                got |= 1 << i;
                digests.push(*tpm.v.pcrs.get(h, i));
            }
        }
        out_sel.push((h, got));
    }
    cmd.out.u32(tpm.v.pcr_counter).u32(out_sel.len() as u32);
    for (h, m) in out_sel {
        cmd.out.pcr_selection(h, m);
    }
    cmd.out.u32(digests.len() as u32);
    for d in digests {
        cmd.out.tpm2b(d.as_bytes());
    }
    Ok(())
}

pub fn pcr_reset(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let index = cmd.handles[0] as usize;
    if !pcr::reset_allowed(index, cmd.locality) {
        log::warn!(
            "vtpm: PCR {index} may not be reset from locality {}",
            cmd.locality
        );
        return Err(rc::LOCALITY);
    }
    tpm.v.pcrs.reset(index);
    changed(tpm, cmd, index, 1);
    Ok(())
}

pub fn pcr_allocate(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let sel = cmd.params.pcr_selection_list().p(1)?;
    cmd.finish()?;
    // Banks not named keep their allocation (Part 3 §22.5).
    let mut next: Allocation = tpm.p.allocation;
    for (h, mask) in sel {
        next.0[h.index()] = mask & pcr::ALL_PCRS;
    }
    let bytes_needed: u32 = HashAlg::ALL
        .iter()
        .map(|h| next.mask(*h).count_ones() * h.digest_size() as u32)
        .sum();
    let available: u32 = HashAlg::ALL
        .iter()
        .map(|h| PCR_COUNT as u32 * h.digest_size() as u32)
        .sum();
    let success = next.0.iter().any(|m| *m != 0);
    if success {
        if next != tpm.p.allocation {
            tpm.p.allocation = next;
            tpm.v.pcr_reconfigured = true;
            cmd.nv_dirty = true;
        }
    } else {
        log::warn!("vtpm: PCR_Allocate would leave no PCR allocated");
    }
    cmd.out
        .u8(success as u8)
        .u32(PCR_COUNT as u32)
        .u32(bytes_needed)
        .u32(available);
    Ok(())
}

/// TPM2_PCR_SetAuthPolicy: authHandle (platform, USER), authPolicy, hashAlg
/// (TPMI_ALG_HASH+), pcrNum (TPMI_DH_PCR): the authPolicy of pcrNum's policy
/// group, kept in NV. An empty policy with TPM_ALG_NULL removes it.
pub fn pcr_set_auth_policy(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let policy = cmd.params.tpm2b(limits::MAX_DIGEST).p(1)?;
    let alg = cmd.params.hash_alg(true).p(2)?;
    let pcr_num = cmd.params.u32().p(3)?;
    if pcr_num as usize >= PCR_COUNT {
        return Err(rc::VALUE + rc::P + 3 * rc::N1);
    }
    cmd.finish()?;
    if policy.len() != alg.map_or(0, |h| h.digest_size()) {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    if !pcr::in_group(pcr::POLICY_GROUP, pcr_num as usize) {
        log::warn!("vtpm: PCR {pcr_num} has no authPolicy to set");
        return Err(rc::VALUE + rc::P + 3 * rc::N1);
    }
    tpm.p.pcr_policy = alg.map(|h| (h, crate::hash::Digest::from_slice(policy)));
    cmd.nv_dirty = true;
    Ok(())
}

/// TPM2_PCR_SetAuthValue: pcrHandle (USER), auth: the authValue of the
/// PCR's authorization group until the next TPM Reset or Restart.
pub fn pcr_set_auth_value(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let auth = cmd.params.tpm2b(limits::MAX_DIGEST).p(1)?;
    cmd.finish()?;
    let index = cmd.handles[0] as usize;
    if !pcr::in_group(pcr::AUTH_GROUP, index) {
        log::warn!("vtpm: PCR {index} has no authValue to set");
        return Err(rc::VALUE);
    }
    tpm.v.pcr_auth = crate::hash::Digest::from_slice(crate::auth::strip_trailing_zeros(auth));
    // STATE_CLEAR data changed.
    cmd.breaks_orderly = true;
    Ok(())
}
