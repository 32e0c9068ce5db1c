//! Part 3 §9–10: TPM2_Startup, TPM2_Shutdown, TPM2_SelfTest, TPM2_GetTestResult —
//! the startup types (TPM Reset, Restart, Resume), what each preserves, and the
//! reset/restart counters.

use crate::defs::limits::{self, PCR_COUNT};
use crate::defs::{rc, su};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::HashAlg;
use crate::nv::{Orderly, SavedState};
use crate::pcr::{self, PcrBanks};

/// The kind of startup TPM2_Startup performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StartupKind {
    Reset,
    Restart,
    Resume,
}

pub fn startup(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let ty = cmd.params.u16().p(1)?;
    if ty != su::CLEAR && ty != su::STATE {
        return Err(rc::VALUE + rc::P + rc::N1);
    }
    cmd.finish()?;
    let kind = match (ty, tpm.v.orderly_at_init) {
        (su::STATE, Orderly::State) if tpm.p.saved.is_some() => StartupKind::Resume,
        (su::STATE, _) => {
            log::warn!("vtpm: Startup(STATE) without a preceding Shutdown(STATE)");
            return Err(rc::VALUE + rc::P + rc::N1);
        }
        (_, Orderly::State) => StartupKind::Restart,
        _ => StartupKind::Reset,
    };
    let saved = tpm.p.saved.take();
    tpm.v.pcrs = PcrBanks::new();
    match kind {
        StartupKind::Reset => {
            tpm.p.reset_count = tpm.p.reset_count.wrapping_add(1);
            tpm.p.restart_count = 0;
            let mut np = [0u8; crate::defs::limits::SEED_SIZE];
            tpm.random(&mut np);
            tpm.p.null_proof = np;
            tpm.v.allocation = tpm.p.allocation;
            tpm.v.pcr_counter = 0;
            // A new reset cycle: a new commit nonce, no audit digest.
            let mut nonce = [0u8; crate::defs::limits::SEED_SIZE];
            tpm.random(&mut nonce);
            tpm.v.commit = crate::nv::CommitState {
                nonce,
                counter: 0,
                outstanding: 0,
            };
        }
        StartupKind::Restart | StartupKind::Resume => {
            tpm.p.restart_count = tpm.p.restart_count.wrapping_add(1);
            if let Some(s) = &saved {
                tpm.v.allocation = s.allocation;
                tpm.v.pcr_counter = s.pcr_counter;
                tpm.v.audit_digest = s.audit_digest;
                tpm.v.commit = s.commit;
            }
        }
    }
    // Every PCR the startup sets to its initial value is an update
    // (Part 1 §17.7): all of them after TPM Reset and Restart, those whose
    // state is not saved after Resume — the PCRs in TPM_PT_PCR_NO_INCREMENT
    // excepted, as always.
    let startup_updates = (0..PCR_COUNT)
        .filter(|&i| {
            pcr::counts_change(i) && (kind != StartupKind::Resume || !pcr::PCR_ATTRS[i].state_save)
        })
        .count() as u32;
    tpm.v.pcr_counter = tpm.v.pcr_counter.wrapping_add(startup_updates);
    if kind == StartupKind::Resume {
        if let Some(s) = saved {
            for (h, i, d) in &s.pcrs {
                tpm.v.pcrs.values[h.index()][usize::from(*i)] = *d;
            }
            tpm.v.sh_enable = s.sh_enable;
            tpm.v.eh_enable = s.eh_enable;
            tpm.v.ph_enable_nv = s.ph_enable_nv;
            tpm.v.platform_auth = s.platform_auth;
            tpm.v.pcr_auth = s.pcr_auth;
        }
    } else if cmd.locality == 3 {
        // H-CRTM-less startup from locality 3: PCR 0 records the locality.
        for h in HashAlg::ALL {
            let d = tpm.v.pcrs.values[h.index()][0].as_bytes_mut();
            if let Some(last) = d.last_mut() {
                *last = 3;
            }
        }
    }
    if kind != StartupKind::Resume {
        tpm.nv_startup_clear();
    }
    tpm.v.ph_enable = true;
    tpm.p.orderly = Orderly::None;
    tpm.v.started = true;
    cmd.nv_dirty = true;
    Ok(())
}

pub fn shutdown(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let ty = cmd.params.u16().p(1)?;
    if ty != su::CLEAR && ty != su::STATE {
        return Err(rc::VALUE + rc::P + rc::N1);
    }
    cmd.finish()?;
    if ty == su::STATE && tpm.v.pcr_reconfigured {
        return Err(rc::TYPE + rc::P + rc::N1);
    }
    // Both types save the reset-cycle state (null proof, PCR counter, allocation);
    // STATE also saves the PCRs and STATE_CLEAR data.
    let mut pcrs = alloc::vec::Vec::new();
    if ty == su::STATE {
        for h in HashAlg::ALL {
            for i in 0..PCR_COUNT {
                if pcr::PCR_ATTRS[i].state_save && tpm.v.allocation.is_allocated(h, i) {
                    pcrs.push((h, i as u8, *tpm.v.pcrs.get(h, i)));
                }
            }
        }
    }
    tpm.p.saved = Some(SavedState {
        pcrs,
        sh_enable: tpm.v.sh_enable,
        eh_enable: tpm.v.eh_enable,
        ph_enable_nv: tpm.v.ph_enable_nv,
        platform_auth: tpm.v.platform_auth,
        pcr_counter: tpm.v.pcr_counter,
        allocation: tpm.v.allocation,
        pcr_auth: tpm.v.pcr_auth,
        audit_digest: tpm.v.audit_digest,
        commit: tpm.v.commit,
    });
    tpm.p.orderly = if ty == su::STATE {
        Orderly::State
    } else {
        Orderly::Clear
    };
    cmd.nv_dirty = true;
    Ok(())
}

pub fn self_test(_tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let _full = cmd.params.yes_no().p(1)?;
    cmd.finish()?;
    // All algorithms are software and tested at build time; nothing is pending.
    Ok(())
}

/// Part 3 §10.3 TPM2_IncrementalSelfTest: toTest is a TPML_ALG; as with
/// TPM2_SelfTest, every algorithm is software tested at build time, so no
/// algorithm is ever pending and toDoList is empty.
pub fn incremental_self_test(_tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let count = cmd.params.u32().p(1)?;
    if count > limits::MAX_ALG_LIST_SIZE {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    for _ in 0..count {
        cmd.params.u16().p(1)?;
    }
    cmd.finish()?;
    cmd.out.u32(0);
    Ok(())
}

pub fn get_test_result(_tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    cmd.out.tpm2b(&[]).u32(rc::SUCCESS);
    Ok(())
}
