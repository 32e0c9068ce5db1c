//! Part 3 §24.6–24.7, §24.9–24.10 and §25: TPM2_Clear, TPM2_ClearControl,
//! TPM2_ChangePPS, TPM2_ChangeEPS, TPM2_DictionaryAttackLockReset and
//! TPM2_DictionaryAttackParameters.

use crate::defs::{handle, limits, rc};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::Digest;
use crate::object::Object;

/// Persistent handles in the owner's range.
const OWNER_PERSISTENT: core::ops::RangeInclusive<u32> = 0x8100_0000..=0x817F_FFFF;

pub fn clear(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    if tpm.p.disable_clear {
        log::warn!("vtpm: Clear refused: disableClear is set");
        return Err(rc::DISABLED);
    }
    // New storage primary seed and owner/endorsement proofs: every storage
    // key and ticket of the old owner is gone.
    let mut fresh = [[0u8; limits::SEED_SIZE]; 3];
    for s in &mut fresh {
        tpm.random(s);
    }
    let [sps, sh, eh] = fresh;
    tpm.p.sps = sps;
    tpm.p.sh_proof = sh;
    tpm.p.eh_proof = eh;
    let empty = Digest::filled(0, 0);
    tpm.p.owner_auth = empty;
    tpm.p.endorsement_auth = empty;
    tpm.p.lockout_auth = empty;
    tpm.p.owner_policy = None;
    tpm.p.endorsement_policy = None;
    tpm.p.lockout_policy = None;
    tpm.v.sh_enable = true;
    tpm.v.eh_enable = true;
    tpm.v.failed_tries = 0;
    // Owner and endorsement objects, loaded or persistent, are flushed.
    for h in tpm.v.objects.handles() {
        if let Some(Object::Key(k)) = tpm.v.objects.get(h) {
            if matches!(k.hierarchy, handle::OWNER | handle::ENDORSEMENT) {
                tpm.v.objects.remove(h);
            }
        }
    }
    let gone: alloc::vec::Vec<u32> = tpm
        .p
        .persistent_objects
        .iter()
        .map(|(h, _)| *h)
        .filter(|h| OWNER_PERSISTENT.contains(h))
        .collect();
    for h in gone {
        tpm.v.objects.remove_persistent(h);
    }
    tpm.p
        .persistent_objects
        .retain(|(h, _)| !OWNER_PERSISTENT.contains(h));
    // Indices the owner defined go too.
    tpm.p
        .nv_indices
        .retain(|i| i.public.has(crate::nvindex::nva::PLATFORMCREATE));
    // Dictionary-attack parameters return to their defaults; Clock restarts
    // at 0 (and is safe); the reset, restart and audit counters restart at
    // 0; the PCR group authValue is cleared and the PCR update counter moves.
    tpm.p.da = crate::nv::DaParams::default();
    tpm.v.clock_base = 0;
    tpm.v.clock_from = tpm.tpm_time();
    tpm.v.safe = true;
    tpm.p.reset_count = 0;
    tpm.p.restart_count = 0;
    tpm.p.audit.counter = 0;
    tpm.v.pcr_auth = Digest::filled(0, 0);
    tpm.v.pcr_counter = tpm.v.pcr_counter.wrapping_add(1);
    cmd.nv_dirty = true;
    cmd.breaks_orderly = true;
    Ok(())
}

pub fn clear_control(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let disable = cmd.params.yes_no().p(1)?;
    cmd.finish()?;
    // lockoutAuth may only set disableClear; the platform may clear it.
    if cmd.handles[0] == handle::LOCKOUT && !disable {
        return Err(rc::AUTH_FAIL);
    }
    if tpm.p.disable_clear != disable {
        tpm.p.disable_clear = disable;
        cmd.nv_dirty = true;
    }
    Ok(())
}

pub fn dictionary_attack_lock_reset(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    tpm.v.failed_tries = 0;
    Ok(())
}

pub fn dictionary_attack_parameters(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let max_tries = cmd.params.u32().p(1)?;
    let recovery_time = cmd.params.u32().p(2)?;
    let lockout_recovery = cmd.params.u32().p(3)?;
    cmd.finish()?;
    tpm.p.da = crate::nv::DaParams {
        max_tries,
        recovery_time,
        lockout_recovery,
    };
    tpm.v.failed_tries = 0;
    cmd.nv_dirty = true;
    Ok(())
}

/// Flushes every key of `hierarchy`, loaded or persistent.
fn flush_hierarchy(tpm: &mut Tpm, hierarchy: u32) {
    let in_h = |o: Option<&Object>| matches!(o, Some(Object::Key(k)) if k.hierarchy == hierarchy);
    for h in tpm.v.objects.handles() {
        if in_h(tpm.v.objects.get(h)) {
            tpm.v.objects.remove(h);
        }
    }
    let gone: alloc::vec::Vec<u32> = tpm
        .v
        .objects
        .persistent_handles()
        .into_iter()
        .filter(|h| in_h(tpm.v.objects.get(*h)))
        .collect();
    for h in &gone {
        tpm.v.objects.remove_persistent(*h);
    }
    tpm.p.persistent_objects.retain(|(h, _)| !gone.contains(h));
}

/// Part 3 §24.10 TPM2_ChangeEPS: a new endorsement primary seed and
/// ehProof (every endorsement key, context and ticket is gone), the
/// endorsement authValue and policy emptied.
pub fn change_eps(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let mut eps = [0u8; limits::SEED_SIZE];
    let mut proof = [0u8; limits::SEED_SIZE];
    tpm.random(&mut eps);
    tpm.random(&mut proof);
    tpm.p.eps = eps;
    tpm.p.eh_proof = proof;
    tpm.p.endorsement_auth = Digest::filled(0, 0);
    tpm.p.endorsement_policy = None;
    flush_hierarchy(tpm, handle::ENDORSEMENT);
    cmd.nv_dirty = true;
    cmd.breaks_orderly = true;
    Ok(())
}

/// Part 3 §24.9 TPM2_ChangePPS: a new platform primary seed and phProof
/// (every platform key, context and ticket is gone), platformPolicy
/// emptied.
pub fn change_pps(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    cmd.finish()?;
    let mut pps = [0u8; limits::SEED_SIZE];
    let mut proof = [0u8; limits::SEED_SIZE];
    tpm.random(&mut pps);
    tpm.random(&mut proof);
    tpm.p.pps = pps;
    tpm.p.ph_proof = proof;
    tpm.v.platform_policy = None;
    flush_hierarchy(tpm, handle::PLATFORM);
    cmd.nv_dirty = true;
    cmd.breaks_orderly = true;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::defs::{cc, handle, rc, su};
    use crate::marshal::Writer;
    use crate::tests::{command, new_tpm, rc_of, startup, SharedNv, TestClock};

    #[test]
    fn clear_resets_owner_auth_and_obeys_disable_clear() {
        let mut t = new_tpm(&SharedNv::default(), &TestClock::default());
        assert_eq!(startup(&mut t, su::CLEAR), 0);
        let mut a = Writer::new();
        a.tpm2b(b"own");
        let set = command(cc::HIERARCHY_CHANGE_AUTH, &[handle::OWNER], &[b""], &a.buf);
        assert_eq!(rc_of(&t.execute(0, &set)), 0);
        let sps = t.p.sps;
        let clear = command(cc::CLEAR, &[handle::LOCKOUT], &[b""], &[]);
        assert_eq!(rc_of(&t.execute(0, &clear)), 0);
        assert!(t.p.owner_auth.as_bytes().is_empty());
        assert_ne!(t.p.sps, sps);
        // disableClear: lockout may set it, only the platform clears it.
        let cc_set = command(cc::CLEAR_CONTROL, &[handle::LOCKOUT], &[b""], &[1]);
        assert_eq!(rc_of(&t.execute(0, &cc_set)), 0);
        assert_eq!(rc_of(&t.execute(0, &clear)), rc::DISABLED);
        let cc_unset = command(cc::CLEAR_CONTROL, &[handle::LOCKOUT], &[b""], &[0]);
        assert_eq!(rc_of(&t.execute(0, &cc_unset)), rc::AUTH_FAIL);
        let pp = command(cc::CLEAR_CONTROL, &[handle::PLATFORM], &[b""], &[0]);
        assert_eq!(rc_of(&t.execute(0, &pp)), 0);
        assert_eq!(rc_of(&t.execute(0, &clear)), 0);
        // The owner hierarchy is not a TPMI_RH_CLEAR.
        let bad = command(cc::CLEAR, &[handle::OWNER], &[b""], &[]);
        assert_eq!(rc_of(&t.execute(0, &bad)), rc::VALUE + rc::H + rc::N1);
    }

    #[test]
    fn da_parameters_are_kept_and_lock_reset_clears_failures() {
        let mut t = new_tpm(&SharedNv::default(), &TestClock::default());
        assert_eq!(startup(&mut t, su::CLEAR), 0);
        let mut p = Writer::new();
        p.u32(5).u32(60).u32(0);
        let c = command(
            cc::DICTIONARY_ATTACK_PARAMETERS,
            &[handle::LOCKOUT],
            &[b""],
            &p.buf,
        );
        assert_eq!(rc_of(&t.execute(0, &c)), 0);
        assert_eq!(t.p.da.max_tries, 5);
        assert_eq!(t.p.da.recovery_time, 60);
        t.v.failed_tries = 5;
        let r = command(
            cc::DICTIONARY_ATTACK_LOCK_RESET,
            &[handle::LOCKOUT],
            &[b""],
            &[],
        );
        assert_eq!(rc_of(&t.execute(0, &r)), 0);
        assert_eq!(t.v.failed_tries, 0);
        // A wrong lockoutAuth: AUTH_FAIL, then locked out (lockoutRecovery 0:
        // until the next TPM Reset).
        assert_eq!(
            rc_of(&t.execute(
                0,
                &command(
                    cc::DICTIONARY_ATTACK_LOCK_RESET,
                    &[handle::LOCKOUT],
                    &[b"x"],
                    &[]
                )
            )),
            rc::AUTH_FAIL + rc::S + rc::N1
        );
        assert_eq!(rc_of(&t.execute(0, &r)), rc::LOCKOUT);
    }
}
