//! Engine tests of the platform administration commands (ClockRateAdjust,
//! PP_Commands, SetAlgorithmSet) and the PCR group authorization
//! (PCR_SetAuthValue, PCR_SetAuthPolicy): whole commands in, whole responses
//! out, across power cycles and snapshots.

extern crate std;

use crate::commands::platform::{RATE_LIMIT_PPM, RATE_NOMINAL_PPM, RC_PP};
use crate::defs::{cap, cc, handle, rc, su};
use crate::engine::Tpm;
use crate::marshal::{Reader, Writer};
use crate::tests::{command, new_tpm, params_of, rc_of, startup, SharedNv, TestClock};
use alloc::vec::Vec;
use core::sync::atomic::Ordering;

fn started() -> (Tpm, SharedNv, TestClock) {
    let nv = SharedNv::default();
    let clock = TestClock::default();
    let mut t = new_tpm(&nv, &clock);
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    (t, nv, clock)
}

fn advance(clock: &TestClock, ms: u64) {
    clock.0.fetch_add(ms, Ordering::Relaxed);
}

/// (time, clock) from TPM2_ReadClock.
fn read_clock(t: &mut Tpm) -> (u64, u64) {
    let r = t.execute(0, &command(cc::READ_CLOCK, &[], &[], &[]));
    let mut rd = Reader::new(params_of(&r));
    (rd.u64().unwrap(), rd.u64().unwrap())
}

fn rate_adjust(t: &mut Tpm, adjust: i8) -> u32 {
    rc_of(&t.execute(
        0,
        &command(
            cc::CLOCK_RATE_ADJUST,
            &[handle::OWNER],
            &[b""],
            &[adjust as u8],
        ),
    ))
}

#[test]
fn clock_rate_adjust_changes_how_fast_clock_and_time_advance() {
    let (mut t, _, clock) = started();
    let (t0, c0) = read_clock(&mut t);
    advance(&clock, 100_000);
    let (t1, c1) = read_clock(&mut t);
    assert_eq!((t1 - t0, c1 - c0), (100_000, 100_000), "nominal rate");
    // Coarse faster: 1 % faster.
    assert_eq!(rate_adjust(&mut t, 3), 0);
    advance(&clock, 100_000);
    let (t2, c2) = read_clock(&mut t);
    assert_eq!((t2 - t1, c2 - c1), (101_000, 101_000));
    // Medium slower twice and fine slower: 1 % − 0.2 % − 0.01 %.
    for a in [-2, -2, -1] {
        assert_eq!(rate_adjust(&mut t, a), 0);
    }
    advance(&clock, 1_000_000);
    let (_, c3) = read_clock(&mut t);
    assert_eq!(c3 - c2, 1_007_900);
    // The rate stays within the limit however often it is pushed.
    for _ in 0..100 {
        assert_eq!(rate_adjust(&mut t, -3), 0);
    }
    advance(&clock, 1_000_000);
    let (_, c4) = read_clock(&mut t);
    let lowest = 1_000_000 * u64::from(RATE_NOMINAL_PPM - RATE_LIMIT_PPM) / 1_000_000;
    assert_eq!(c4 - c3, lowest);
    // Hostile values.
    for bad in [4i8, -4, i8::MIN, i8::MAX] {
        assert_eq!(rate_adjust(&mut t, bad), rc::VALUE + rc::P + rc::N1);
    }
    // Clock keeps its value across an orderly power cycle; the rate returns
    // to nominal.
    let sd = command(cc::SHUTDOWN, &[], &[], &su::CLEAR.to_be_bytes());
    assert_eq!(rc_of(&t.execute(0, &sd)), 0);
    t.init();
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    let (_, c5) = read_clock(&mut t);
    assert!(c5 >= c4);
    advance(&clock, 10_000);
    let (_, c6) = read_clock(&mut t);
    assert_eq!(c6 - c5, 10_000);
}

fn cc_list(codes: &[u32]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(codes.len() as u32);
    for c in codes {
        w.u32(*c);
    }
    w.buf
}

fn pp_commands(t: &mut Tpm, set: &[u32], clear: &[u32]) -> u32 {
    let mut p = cc_list(set);
    p.extend(cc_list(clear));
    rc_of(&t.execute(
        0,
        &command(cc::PP_COMMANDS, &[handle::PLATFORM], &[b""], &p),
    ))
}

fn pp_list(t: &mut Tpm) -> Vec<u32> {
    let mut w = Writer::new();
    w.u32(cap::PP_COMMANDS).u32(0).u32(64);
    let r = t.execute(0, &command(cc::GET_CAPABILITY, &[], &[], &w.buf));
    let mut rd = Reader::new(params_of(&r));
    rd.u8().unwrap();
    assert_eq!(rd.u32().unwrap(), cap::PP_COMMANDS);
    let n = rd.u32().unwrap();
    (0..n).map(|_| rd.u32().unwrap()).collect()
}

fn clear_control(t: &mut Tpm) -> u32 {
    rc_of(&t.execute(
        0,
        &command(cc::CLEAR_CONTROL, &[handle::PLATFORM], &[b""], &[0]),
    ))
}

#[test]
fn pp_commands_needs_physical_presence_and_makes_listed_commands_need_it() {
    let (mut t, nv, clock) = started();
    // Session 1 decoration.
    let pp = RC_PP + rc::S + rc::N1;
    assert_eq!(pp_list(&mut t), [cc::PP_COMMANDS]);
    assert_eq!(pp_commands(&mut t, &[cc::CLEAR_CONTROL], &[]), pp);
    t.set_physical_presence(true);
    // Unimplemented codes, commands platformAuth cannot authorize and
    // garbage are ignored.
    let set = [
        cc::CLEAR_CONTROL,
        cc::CLOCK_SET,
        cc::GET_RANDOM,
        0xFFFF_FFFF,
        0x0123,
    ];
    assert_eq!(pp_commands(&mut t, &set, &[]), 0);
    assert_eq!(
        pp_list(&mut t),
        [cc::CLEAR_CONTROL, cc::CLOCK_SET, cc::PP_COMMANDS]
    );
    assert_eq!(clear_control(&mut t), 0);
    t.set_physical_presence(false);
    assert_eq!(clear_control(&mut t), pp);
    // Owner authorization of a listed command does not need it.
    let owner_clock_set = command(
        cc::CLOCK_SET,
        &[handle::OWNER],
        &[b""],
        &u64::MAX.to_be_bytes(),
    );
    assert_eq!(
        rc_of(&t.execute(0, &owner_clock_set)),
        rc::VALUE + rc::P + rc::N1
    );
    // The list survives a power cycle (it is in NV).
    drop(t);
    let mut t = new_tpm(&nv, &clock);
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    assert_eq!(clear_control(&mut t), pp);
    t.set_physical_presence(true);
    // PP_Commands cannot be taken off the list.
    assert_eq!(
        pp_commands(&mut t, &[], &[cc::CLEAR_CONTROL, cc::PP_COMMANDS]),
        0
    );
    assert_eq!(pp_list(&mut t), [cc::CLOCK_SET, cc::PP_COMMANDS]);
    t.set_physical_presence(false);
    assert_eq!(clear_control(&mut t), 0);
    // Hostile lists.
    t.set_physical_presence(true);
    let mut long = Writer::new();
    long.u32(cap::MAX_CAP_CC + 1);
    let r = t.execute(
        0,
        &command(cc::PP_COMMANDS, &[handle::PLATFORM], &[b""], &long.buf),
    );
    assert_eq!(rc_of(&r), rc::SIZE + rc::P + rc::N1);
    let mut short = cc_list(&[cc::CLEAR]);
    short.extend([0, 0, 0, 2, 0, 0]);
    let r = t.execute(
        0,
        &command(cc::PP_COMMANDS, &[handle::PLATFORM], &[b""], &short),
    );
    assert_eq!(rc_of(&r), rc::INSUFFICIENT + rc::P + 2 * rc::N1);
}

#[test]
fn set_algorithm_set_is_kept_in_nv_and_reported() {
    let (mut t, nv, clock) = started();
    let set = |t: &mut Tpm, h: u32| {
        rc_of(&t.execute(
            0,
            &command(cc::SET_ALGORITHM_SET, &[h], &[b""], &7u32.to_be_bytes()),
        ))
    };
    assert_eq!(set(&mut t, handle::OWNER), rc::VALUE + rc::H + rc::N1);
    assert_eq!(set(&mut t, handle::PLATFORM), 0);
    drop(t);
    let mut t = new_tpm(&nv, &clock);
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    let mut w = Writer::new();
    w.u32(cap::TPM_PROPERTIES)
        .u32(crate::defs::pt::ALGORITHM_SET)
        .u32(1);
    let r = t.execute(0, &command(cc::GET_CAPABILITY, &[], &[], &w.buf));
    let p = params_of(&r);
    assert_eq!(
        &p[p.len() - 8..],
        [
            &crate::defs::pt::ALGORITHM_SET.to_be_bytes()[..],
            &[0, 0, 0, 7]
        ]
        .concat()
    );
}

fn set_auth(t: &mut Tpm, pcr: u32, old: &[u8], new: &[u8]) -> u32 {
    let mut w = Writer::new();
    w.tpm2b(new);
    rc_of(&t.execute(0, &command(cc::PCR_SET_AUTH_VALUE, &[pcr], &[old], &w.buf)))
}

/// PCR_Extend of PCR 20 from locality 1 with a password.
fn extend_20(t: &mut Tpm, password: &[u8]) -> u32 {
    let mut w = Writer::new();
    w.u32(1)
        .u16(crate::hash::HashAlg::Sha256.id())
        .bytes(&[7; 32]);
    rc_of(&t.execute(1, &command(cc::PCR_EXTEND, &[20], &[password], &w.buf)))
}

#[test]
fn pcr_auth_value_lasts_until_reset_or_restart_and_survives_resume() {
    let (mut t, _, _) = started();
    let bad = rc::BAD_AUTH + rc::S + rc::N1;
    assert_eq!(extend_20(&mut t, b""), 0);
    assert_eq!(set_auth(&mut t, 21, b"", b"secret\0"), 0);
    assert_eq!(extend_20(&mut t, b""), bad);
    assert_eq!(extend_20(&mut t, b"secret"), 0);
    // Outside the group: TPM_RC_VALUE, no decoration.
    assert_eq!(set_auth(&mut t, 0, b"", b"x"), rc::VALUE);
    // Shutdown(STATE) + Startup(STATE) keeps it.
    let sd = command(cc::SHUTDOWN, &[], &[], &su::STATE.to_be_bytes());
    assert_eq!(rc_of(&t.execute(0, &sd)), 0);
    t.init();
    assert_eq!(startup(&mut t, su::STATE), 0);
    assert_eq!(extend_20(&mut t, b"secret"), 0);
    // A snapshot carries it.
    let blob = t.save_volatile();
    assert_eq!(set_auth(&mut t, 20, b"secret", b"other"), 0);
    t.restore_volatile(&blob).unwrap();
    assert_eq!(extend_20(&mut t, b"secret"), 0);
    // Shutdown(STATE) + Startup(CLEAR) (TPM Restart) drops it.
    assert_eq!(rc_of(&t.execute(0, &sd)), 0);
    t.init();
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    assert_eq!(extend_20(&mut t, b""), 0);
}

#[test]
fn pcr_auth_policy_is_checked_and_persistent() {
    let (mut t, nv, clock) = started();
    let set_policy = |t: &mut Tpm, policy: &[u8], alg: u16, pcr: u32| {
        let mut w = Writer::new();
        w.tpm2b(policy).u16(alg).u32(pcr);
        rc_of(&t.execute(
            0,
            &command(cc::PCR_SET_AUTH_POLICY, &[handle::PLATFORM], &[b""], &w.buf),
        ))
    };
    let sha256 = crate::hash::HashAlg::Sha256.id();
    assert_eq!(
        set_policy(&mut t, &[1; 32], sha256, 19),
        rc::VALUE + rc::P + 3 * rc::N1
    );
    assert_eq!(
        set_policy(&mut t, &[1; 32], sha256, 24),
        rc::VALUE + rc::P + 3 * rc::N1
    );
    assert_eq!(
        set_policy(&mut t, &[1; 31], sha256, 20),
        rc::SIZE + rc::P + rc::N1
    );
    assert_eq!(
        set_policy(&mut t, &[1; 32], 0x0099, 20),
        rc::HASH + rc::P + 2 * rc::N1
    );
    assert_eq!(set_policy(&mut t, &[1; 32], sha256, 22), 0);
    assert_eq!(
        t.p.pcr_policy.map(|(_, d)| d.as_bytes().to_vec()),
        Some([1; 32].to_vec())
    );
    drop(t);
    let mut t = new_tpm(&nv, &clock);
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    assert_eq!(
        t.auth_policy(20).map(|(_, d)| d.as_bytes().to_vec()),
        Some([1; 32].to_vec())
    );
    assert_eq!(t.auth_policy(19), None);
    assert_eq!(set_policy(&mut t, &[], crate::defs::alg::NULL, 21), 0);
    assert_eq!(t.auth_policy(20), None);
}

/// The command audit digest of the reset cycle: extended by audited
/// commands, kept by TPM Restart and Resume and by a snapshot, cleared by a
/// TPM Reset; the audit counter is persistent.
#[test]
fn command_audit_digest_follows_the_reset_cycle() {
    let (mut t, _, _) = started();
    let mut p = Writer::new();
    p.u16(crate::defs::alg::NULL)
        .bytes(&cc_list(&[cc::PCR_EXTEND]))
        .bytes(&cc_list(&[]));
    let set = command(
        cc::SET_COMMAND_CODE_AUDIT_STATUS,
        &[handle::OWNER],
        &[b""],
        &p.buf,
    );
    assert_eq!(rc_of(&t.execute(0, &set)), 0);
    assert_eq!(t.p.audit.counter, 1);
    let after_set = t.v.audit_digest;
    assert_eq!(after_set.as_bytes().len(), 32);
    let mut w = Writer::new();
    w.u32(1)
        .u16(crate::hash::HashAlg::Sha256.id())
        .bytes(&[7; 32]);
    let ext = command(cc::PCR_EXTEND, &[16], &[b""], &w.buf);
    assert_eq!(rc_of(&t.execute(0, &ext)), 0);
    let after_ext = t.v.audit_digest;
    assert_ne!(after_ext, after_set);
    // Not audited: no change.
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::READ_CLOCK, &[], &[], &[]))),
        0
    );
    assert_eq!(t.v.audit_digest, after_ext);
    // Snapshot.
    let blob = t.save_volatile();
    assert_eq!(rc_of(&t.execute(0, &ext)), 0);
    t.restore_volatile(&blob).unwrap();
    assert_eq!(t.v.audit_digest, after_ext);
    // TPM Restart keeps it.
    let sd = |ty: u16| command(cc::SHUTDOWN, &[], &[], &ty.to_be_bytes());
    assert_eq!(rc_of(&t.execute(0, &sd(su::STATE))), 0);
    t.init();
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    assert_eq!(t.v.audit_digest, after_ext);
    // TPM Reset clears it; the next audited command bumps the counter.
    assert_eq!(rc_of(&t.execute(0, &sd(su::CLEAR))), 0);
    t.init();
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    assert!(t.v.audit_digest.as_bytes().is_empty());
    assert_eq!(rc_of(&t.execute(0, &ext)), 0);
    assert_eq!(t.p.audit.counter, 2);
    // A hostile snapshot: an audit digest of the wrong size is refused.
    let mut bad = t.save_volatile();
    let d = t.v.audit_digest;
    let at = bad
        .windows(34)
        .position(|x| x == [&[0, 32][..], d.as_bytes()].concat())
        .unwrap();
    bad[at + 1] = 31;
    bad.remove(at + 2);
    assert!(t.restore_volatile(&bad).is_err());
}

/// A snapshot naming an exclusive audit session that is not a loaded audit
/// session, or with a bad flag, is refused and changes nothing.
#[test]
fn snapshot_refuses_a_bogus_exclusive_audit_session() {
    let (mut t, _, _) = started();
    let blob = t.save_volatile();
    let n = blob.len();
    // The blob ends with the exclusive-audit flag and handle.
    assert_eq!(&blob[n - 5..], [0, 0, 0, 0, 0]);
    let mut bad = blob.clone();
    bad[n - 5] = 1;
    bad[n - 4..].copy_from_slice(&0x0200_0000u32.to_be_bytes());
    assert!(t.restore_volatile(&bad).is_err());
    bad[n - 5] = 2;
    assert!(t.restore_volatile(&bad).is_err());
    assert_eq!(t.save_volatile(), blob);
    t.restore_volatile(&blob).unwrap();
}
