//! Engine tests: whole commands in, whole responses out.

extern crate std;

use crate::defs::{cc, handle, rc, st, su};
use crate::drbg::tests::CountingEntropy;
use crate::engine::{TimeSource, Tpm};
use crate::hash::HashAlg;
use crate::marshal::{Reader, Writer};
use crate::nv::{MemNvStore, NvError, NvStore};
use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// A clock the test advances by hand.
#[derive(Clone, Default)]
pub struct TestClock(pub Arc<AtomicU64>);
impl TimeSource for TestClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// An NV store shared with the test, so a power cycle can build a new Tpm on it.
#[derive(Clone, Default)]
pub struct SharedNv(pub Arc<Mutex<MemNvStore>>);
impl NvStore for SharedNv {
    fn load(&mut self) -> Result<Option<Vec<u8>>, NvError> {
        self.0.lock().unwrap().load()
    }
    fn store(&mut self, image: &[u8]) -> Result<(), NvError> {
        self.0.lock().unwrap().store(image)
    }
}

pub fn new_tpm(nv: &SharedNv, clock: &TestClock) -> Tpm {
    Tpm::new(
        Box::new(CountingEntropy(1)),
        Box::new(clock.clone()),
        Box::new(nv.clone()),
    )
    .unwrap()
}

/// Builds a command; `auth` adds one password session per entry.
pub fn command(code: u32, handles: &[u32], auth: &[&[u8]], params: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    let tag = if auth.is_empty() {
        st::NO_SESSIONS
    } else {
        st::SESSIONS
    };
    w.u16(tag).u32(0).u32(code);
    for h in handles {
        w.u32(*h);
    }
    if !auth.is_empty() {
        let mut s = Writer::new();
        for pw in auth {
            s.u32(handle::RS_PW).u16(0).u8(1).tpm2b(pw);
        }
        w.u32(s.len() as u32).bytes(&s.buf);
    }
    w.bytes(params);
    let n = w.len() as u32;
    w.patch_u32(2, n);
    w.buf
}

pub fn rc_of(resp: &[u8]) -> u32 {
    u32::from_be_bytes(resp[6..10].try_into().unwrap())
}

/// Response parameters of a successful response (skipping parameterSize when the
/// response carries sessions).
pub fn params_of(resp: &[u8]) -> &[u8] {
    assert_eq!(rc_of(resp), 0, "response {resp:02x?}");
    let size = u32::from_be_bytes(resp[2..6].try_into().unwrap()) as usize;
    assert_eq!(size, resp.len());
    if u16::from_be_bytes([resp[0], resp[1]]) == st::SESSIONS {
        let n = u32::from_be_bytes(resp[10..14].try_into().unwrap()) as usize;
        &resp[14..14 + n]
    } else {
        &resp[10..]
    }
}

pub fn startup(tpm: &mut Tpm, ty: u16) -> u32 {
    rc_of(&tpm.execute(0, &command(cc::STARTUP, &[], &[], &ty.to_be_bytes())))
}

fn started() -> (Tpm, SharedNv, TestClock) {
    let nv = SharedNv::default();
    let clock = TestClock::default();
    let mut t = new_tpm(&nv, &clock);
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    (t, nv, clock)
}

fn sel(h: HashAlg, mask: u32) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(1).pcr_selection(h, mask);
    w.buf
}

fn read_pcr(t: &mut Tpm, h: HashAlg, i: usize) -> Vec<u8> {
    let r = t.execute(0, &command(cc::PCR_READ, &[], &[], &sel(h, 1 << i)));
    let p = params_of(&r);
    let mut rd = Reader::new(p);
    rd.u32().unwrap();
    let list = rd.pcr_selection_list().unwrap();
    assert_eq!(list, [(h, 1 << i)]);
    assert_eq!(rd.u32().unwrap(), 1);
    rd.tpm2b(64).unwrap().to_vec()
}

fn extend(t: &mut Tpm, i: u32, h: HashAlg, d: &[u8]) -> u32 {
    let mut w = Writer::new();
    w.u32(1).u16(h.id()).bytes(d);
    rc_of(&t.execute(0, &command(cc::PCR_EXTEND, &[i], &[b""], &w.buf)))
}

fn shutdown(t: &mut Tpm, ty: u16) -> u32 {
    rc_of(&t.execute(0, &command(cc::SHUTDOWN, &[], &[], &ty.to_be_bytes())))
}

#[test]
fn header_errors_follow_the_reference_order() {
    let (mut t, _, _) = started();
    assert_eq!(t.execute(0, &[]), [0x80, 1, 0, 0, 0, 10, 0, 0, 0, 0x9A]);
    assert_eq!(rc_of(&t.execute(0, &[0x80, 0x01, 0, 0])), rc::INSUFFICIENT);
    let bad_tag = t.execute(0, &[0x80, 0x03, 0, 0, 0, 10, 0, 0, 1, 0x7B]);
    assert_eq!(bad_tag, [0, 0xC4, 0, 0, 0, 10, 0, 0, 0, 0x1E]);
    // Size field disagreeing with the bytes received, both ways.
    let mut c = command(cc::GET_RANDOM, &[], &[], &[0, 8]);
    c.push(0);
    assert_eq!(rc_of(&t.execute(0, &c)), rc::COMMAND_SIZE);
    c.truncate(c.len() - 2);
    assert_eq!(rc_of(&t.execute(0, &c)), rc::COMMAND_SIZE);
    // Header complete, code missing.
    assert_eq!(
        rc_of(&t.execute(0, &[0x80, 1, 0, 0, 0, 8, 0, 0])),
        rc::INSUFFICIENT
    );
    let big = command(cc::GET_RANDOM, &[], &[], &[0u8; 5000]);
    assert_eq!(rc_of(&t.execute(0, &big)), rc::COMMAND_SIZE);
    assert_eq!(
        rc_of(&t.execute(0, &command(0x1FF, &[], &[], &[]))),
        rc::COMMAND_CODE
    );
    // Truncated parameter: INSUFFICIENT on parameter 1; extra bytes: SIZE.
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::GET_RANDOM, &[], &[], &[0]))),
        rc::INSUFFICIENT + rc::P + rc::N1
    );
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::GET_RANDOM, &[], &[], &[0, 1, 2]))),
        rc::SIZE
    );
}

#[test]
fn initialisation_rules() {
    let nv = SharedNv::default();
    let clock = TestClock::default();
    let mut t = new_tpm(&nv, &clock);
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::GET_RANDOM, &[], &[], &[0, 8]))),
        rc::INITIALIZE
    );
    assert_eq!(startup(&mut t, 7), rc::VALUE + rc::P + rc::N1);
    assert_eq!(startup(&mut t, su::STATE), rc::VALUE + rc::P + rc::N1);
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    assert_eq!(startup(&mut t, su::CLEAR), rc::INITIALIZE);
    let r = t.execute(0, &command(cc::GET_RANDOM, &[], &[], &[0, 100]));
    assert_eq!(params_of(&r).len(), 2 + 64);
    // Startup refuses sessions.
    let s = command(cc::STARTUP, &[], &[b""], &[0, 0]);
    t.init();
    assert_eq!(rc_of(&t.execute(0, &s)), rc::AUTH_CONTEXT);
}

#[test]
fn pcr_extend_event_read_reset() {
    let (mut t, _, _) = started();
    let d = [0xABu8; 32];
    assert_eq!(extend(&mut t, 7, HashAlg::Sha256, &d), 0);
    let expect = HashAlg::Sha256.digest(&[&[0u8; 32], &d]);
    assert_eq!(read_pcr(&mut t, HashAlg::Sha256, 7), expect.as_bytes());
    assert_eq!(read_pcr(&mut t, HashAlg::Sha1, 7), [0u8; 20]);
    assert_eq!(read_pcr(&mut t, HashAlg::Sha384, 17), [0xFFu8; 48]);
    // Wrong digest size for the bank → INSUFFICIENT or SIZE on parameter 1.
    assert_eq!(
        extend(&mut t, 7, HashAlg::Sha1, &[1; 19]) & 0xFFF,
        rc::INSUFFICIENT + rc::P + rc::N1
    );
    // Without a session: AUTH_MISSING. Bad handle: VALUE on handle 1.
    let mut w = Writer::new();
    w.u32(0);
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::PCR_EXTEND, &[7], &[], &w.buf))),
        rc::AUTH_MISSING
    );
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::PCR_EXTEND, &[24], &[b""], &w.buf))),
        rc::VALUE + rc::H + rc::N1
    );
    // Locality: PCR 17 not extendable from locality 0, extendable from 4.
    let c = command(cc::PCR_EXTEND, &[17], &[b""], &w.buf);
    assert_eq!(rc_of(&t.execute(0, &c)), rc::LOCALITY);
    assert_eq!(rc_of(&t.execute(4, &c)), 0);
    // PCR_Event returns one digest per implemented hash and extends them.
    let mut ev = Writer::new();
    ev.tpm2b(b"event");
    let r = t.execute(0, &command(cc::PCR_EVENT, &[9], &[b""], &ev.buf));
    let mut rd = Reader::new(params_of(&r));
    let got = rd.digest_values().unwrap();
    assert_eq!(got.len(), HashAlg::ALL.len());
    for (h, dg) in got {
        assert_eq!(dg, HashAlg::digest(h, &[b"event"]).as_bytes());
        let want = h.digest(&[&alloc::vec![0u8; h.digest_size()], dg]);
        assert_eq!(read_pcr(&mut t, h, 9), want.as_bytes());
    }
    // Reset: 16 and 23 at locality 0 only.
    assert_eq!(extend(&mut t, 16, HashAlg::Sha256, &d), 0);
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::PCR_RESET, &[16], &[b""], &[]))),
        0
    );
    assert_eq!(read_pcr(&mut t, HashAlg::Sha256, 16), [0u8; 32]);
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::PCR_RESET, &[7], &[b""], &[]))),
        rc::LOCALITY
    );
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::PCR_RESET, &[handle::NULL], &[b""], &[]))),
        rc::VALUE + rc::H + rc::N1
    );
}

#[test]
fn pcr_read_caps_at_eight_digests() {
    let (mut t, _, _) = started();
    let mut w = Writer::new();
    w.u32(2)
        .pcr_selection(HashAlg::Sha1, 0xFF_FFFF)
        .pcr_selection(HashAlg::Sha256, 0xF);
    let r = t.execute(0, &command(cc::PCR_READ, &[], &[], &w.buf));
    let mut rd = Reader::new(params_of(&r));
    rd.u32().unwrap();
    assert_eq!(
        rd.pcr_selection_list().unwrap(),
        [(HashAlg::Sha1, 0xFF), (HashAlg::Sha256, 0)]
    );
    assert_eq!(rd.u32().unwrap(), 8);
}

#[test]
fn hierarchy_auth_and_passwords() {
    let (mut t, nv, clock) = started();
    let mut w = Writer::new();
    w.tpm2b(b"secret");
    let c = command(cc::HIERARCHY_CHANGE_AUTH, &[handle::OWNER], &[b""], &w.buf);
    assert_eq!(rc_of(&t.execute(0, &c)), 0);
    // The old (empty) password no longer works: BAD_AUTH on session 1.
    assert_eq!(rc_of(&t.execute(0, &c)), rc::BAD_AUTH + rc::S + rc::N1);
    let mut w2 = Writer::new();
    w2.tpm2b(b"");
    let back = command(
        cc::HIERARCHY_CHANGE_AUTH,
        &[handle::OWNER],
        &[b"secret\0\0"],
        &w2.buf,
    );
    // Owner auth persists across a power cycle.
    drop(t);
    let mut t = new_tpm(&nv, &clock);
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    assert_eq!(rc_of(&t.execute(0, &back)), 0);
    // Lockout failures are DA-protected.
    let l = command(
        cc::HIERARCHY_CHANGE_AUTH,
        &[handle::LOCKOUT],
        &[b"nope"],
        &w2.buf,
    );
    assert_eq!(rc_of(&t.execute(0, &l)), rc::AUTH_FAIL + rc::S + rc::N1);
    // Too-large auth value.
    let mut big = Writer::new();
    big.tpm2b(&[1u8; 49]);
    let c = command(
        cc::HIERARCHY_CHANGE_AUTH,
        &[handle::OWNER],
        &[b""],
        &big.buf,
    );
    assert_eq!(rc_of(&t.execute(0, &c)), rc::SIZE + rc::P + rc::N1);
    big.buf.clear();
    big.tpm2b(&[1u8; 65]);
    let c = command(
        cc::HIERARCHY_CHANGE_AUTH,
        &[handle::OWNER],
        &[b""],
        &big.buf,
    );
    assert_eq!(rc_of(&t.execute(0, &c)), rc::SIZE + rc::P + rc::N1);
}

#[test]
fn auth_area_size_checks() {
    let (mut t, _, _) = started();
    let mut c = command(cc::PCR_RESET, &[16], &[b""], &[]);
    // authSize smaller than a minimal session.
    c[14..18].copy_from_slice(&8u32.to_be_bytes());
    assert_eq!(rc_of(&t.execute(0, &c)), rc::SIZE);
    // authSize beyond the command.
    c[14..18].copy_from_slice(&100u32.to_be_bytes());
    assert_eq!(rc_of(&t.execute(0, &c)), rc::SIZE);
    // Two sessions for one handle: the second authorizes nothing.
    let c2 = command(cc::PCR_RESET, &[16], &[b"", b""], &[]);
    assert_eq!(rc_of(&t.execute(0, &c2)), rc::HANDLE + rc::S + 2 * rc::N1);
}

#[test]
fn hierarchy_control_disables_owner() {
    let (mut t, _, _) = started();
    let mut pen = Writer::new();
    pen.u32(handle::PLATFORM).u8(0);
    assert_eq!(
        rc_of(&t.execute(
            0,
            &command(cc::HIERARCHY_CONTROL, &[handle::OWNER], &[b""], &pen.buf)
        )),
        rc::AUTH_TYPE
    );
    let mut w = Writer::new();
    w.u32(handle::OWNER).u8(0);
    assert_eq!(
        rc_of(&t.execute(
            0,
            &command(cc::HIERARCHY_CONTROL, &[handle::OWNER], &[b""], &w.buf)
        )),
        0
    );
    let mut a = Writer::new();
    a.tpm2b(b"x");
    let c = command(cc::HIERARCHY_CHANGE_AUTH, &[handle::OWNER], &[b""], &a.buf);
    assert_eq!(rc_of(&t.execute(0, &c)), rc::HIERARCHY + rc::H + rc::N1);
    // Endorsement cannot touch owner; platform re-enables it.
    let mut en = Writer::new();
    en.u32(handle::OWNER).u8(1);
    assert_eq!(
        rc_of(&t.execute(
            0,
            &command(
                cc::HIERARCHY_CONTROL,
                &[handle::ENDORSEMENT],
                &[b""],
                &en.buf
            )
        )),
        rc::AUTH_TYPE
    );
    assert_eq!(
        rc_of(&t.execute(
            0,
            &command(cc::HIERARCHY_CONTROL, &[handle::PLATFORM], &[b""], &en.buf)
        )),
        0
    );
    assert_eq!(rc_of(&t.execute(0, &c)), 0);
    let mut bad = Writer::new();
    bad.u32(handle::OWNER).u8(2);
    assert_eq!(
        rc_of(&t.execute(
            0,
            &command(cc::HIERARCHY_CONTROL, &[handle::PLATFORM], &[b""], &bad.buf)
        )),
        rc::VALUE + rc::P + 2 * rc::N1
    );
}

fn read_clock(t: &mut Tpm) -> (u64, u32, u32, u8) {
    let r = t.execute(0, &command(cc::READ_CLOCK, &[], &[], &[]));
    let mut rd = Reader::new(params_of(&r));
    rd.u64().unwrap();
    (
        rd.u64().unwrap(),
        rd.u32().unwrap(),
        rd.u32().unwrap(),
        rd.u8().unwrap(),
    )
}

#[test]
fn shutdown_state_resume_preserves_pcrs_0_to_15_only() {
    let (mut t, nv, clock) = started();
    let d = [5u8; 32];
    assert_eq!(extend(&mut t, 3, HashAlg::Sha256, &d), 0);
    assert_eq!(extend(&mut t, 16, HashAlg::Sha256, &d), 0);
    let p3 = read_pcr(&mut t, HashAlg::Sha256, 3);
    let (_, reset0, restart0, _) = read_clock(&mut t);
    assert_eq!(shutdown(&mut t, su::STATE), 0);
    clock.0.store(5000, Ordering::Relaxed);
    drop(t);
    let mut t = new_tpm(&nv, &clock);
    assert_eq!(startup(&mut t, su::STATE), 0);
    assert_eq!(read_pcr(&mut t, HashAlg::Sha256, 3), p3);
    assert_eq!(read_pcr(&mut t, HashAlg::Sha256, 16), [0u8; 32]);
    let (_, reset1, restart1, safe) = read_clock(&mut t);
    assert_eq!((reset1, restart1, safe), (reset0, restart0 + 1, 1));
    // Resume state is consumed: a second power cycle without Shutdown can't resume.
    t.init();
    assert_eq!(startup(&mut t, su::STATE), rc::VALUE + rc::P + rc::N1);
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    assert_eq!(read_pcr(&mut t, HashAlg::Sha256, 3), [0u8; 32]);
    let (_, reset2, restart2, safe) = read_clock(&mut t);
    assert_eq!((reset2, restart2, safe), (reset0 + 1, 0, 0));
}

#[test]
fn clock_is_committed_at_update_intervals_and_becomes_safe() {
    let (mut t, nv, clock) = started();
    assert_eq!(read_clock(&mut t).3, 0);
    let writes = nv.0.lock().unwrap().writes;
    clock.0.store(1 << 22, Ordering::Relaxed);
    let (c, _, _, safe) = read_clock(&mut t);
    assert_eq!((c, safe), (1 << 22, 0));
    assert_eq!(nv.0.lock().unwrap().writes, writes + 1);
    assert_eq!(read_clock(&mut t).3, 1);
    assert_eq!(nv.0.lock().unwrap().writes, writes + 1);
    // After an unorderly power loss the clock resumes from the committed value.
    clock.0.store((1 << 22) + 5000, Ordering::Relaxed);
    drop(t);
    let mut t = new_tpm(&nv, &clock);
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    assert_eq!(read_clock(&mut t).0, 1 << 22);
}

#[test]
fn restart_resets_pcrs_but_counts_restart() {
    let (mut t, _, _) = started();
    assert_eq!(extend(&mut t, 3, HashAlg::Sha1, &[1; 20]), 0);
    let (_, reset0, _, _) = read_clock(&mut t);
    assert_eq!(shutdown(&mut t, su::STATE), 0);
    t.init();
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    assert_eq!(read_pcr(&mut t, HashAlg::Sha1, 3), [0u8; 20]);
    assert_eq!(read_clock(&mut t).1, reset0);
    assert_eq!(read_clock(&mut t).2, 1);
}

#[test]
fn extend_after_shutdown_state_breaks_orderly() {
    let (mut t, _, _) = started();
    assert_eq!(shutdown(&mut t, su::STATE), 0);
    assert_eq!(extend(&mut t, 3, HashAlg::Sha1, &[1; 20]), 0);
    t.init();
    assert_eq!(startup(&mut t, su::STATE), rc::VALUE + rc::P + rc::N1);
}

#[test]
fn pcr_allocate_takes_effect_at_next_reset() {
    let (mut t, _, _) = started();
    let mut w = Writer::new();
    w.u32(1).pcr_selection(HashAlg::Sha1, 0);
    let r = t.execute(
        0,
        &command(cc::PCR_ALLOCATE, &[handle::PLATFORM], &[b""], &w.buf),
    );
    assert_eq!(params_of(&r)[0], 1);
    assert_eq!(read_pcr(&mut t, HashAlg::Sha1, 0), [0u8; 20]);
    assert_eq!(shutdown(&mut t, su::STATE), rc::TYPE + rc::P + rc::N1);
    assert_eq!(shutdown(&mut t, su::CLEAR), 0);
    t.init();
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    let r = t.execute(0, &command(cc::PCR_READ, &[], &[], &sel(HashAlg::Sha1, 1)));
    let mut rd = Reader::new(params_of(&r));
    rd.u32().unwrap();
    assert_eq!(rd.pcr_selection_list().unwrap(), [(HashAlg::Sha1, 0)]);
    assert_eq!(rd.u32().unwrap(), 0);
}

fn get_cap(t: &mut Tpm, capability: u32, property: u32, count: u32) -> Vec<u8> {
    let mut w = Writer::new();
    w.u32(capability).u32(property).u32(count);
    params_of(&t.execute(0, &command(cc::GET_CAPABILITY, &[], &[], &w.buf))).to_vec()
}

#[test]
fn capability_commands_come_from_the_table() {
    let (mut t, _, _) = started();
    let p = get_cap(&mut t, crate::defs::cap::COMMANDS, 0, 1000);
    let mut rd = Reader::new(&p);
    assert_eq!(rd.u8().unwrap(), 0);
    assert_eq!(rd.u32().unwrap(), crate::defs::cap::COMMANDS);
    let n = rd.u32().unwrap() as usize;
    assert_eq!(n, crate::dispatch::COMMANDS.len());
    let codes: Vec<u32> = (0..n).map(|_| rd.u32().unwrap() & 0xFFFF).collect();
    for c in &codes {
        assert!(crate::dispatch::lookup(*c).is_some());
    }
    // Paging: two at a time from PCR_Read on.
    let p = get_cap(&mut t, crate::defs::cap::COMMANDS, cc::PCR_READ, 1);
    assert_eq!(p[0], 1);
    assert_eq!(&p[9..13], &cc::PCR_READ.to_be_bytes());
}

#[test]
fn capability_properties() {
    let (mut t, _, _) = started();
    let p = get_cap(
        &mut t,
        crate::defs::cap::TPM_PROPERTIES,
        crate::defs::pt::FAMILY_INDICATOR,
        1,
    );
    assert_eq!(&p[9..], &[0, 0, 1, 0, b'2', b'.', b'0', 0]);
    let p = get_cap(
        &mut t,
        crate::defs::cap::TPM_PROPERTIES,
        crate::defs::pt::PCR_COUNT,
        1,
    );
    assert_eq!(&p[13..], &24u32.to_be_bytes());
    let p = get_cap(
        &mut t,
        crate::defs::cap::TPM_PROPERTIES,
        crate::defs::pt::TOTAL_COMMANDS,
        1,
    );
    assert_eq!(
        &p[13..],
        &(crate::dispatch::COMMANDS.len() as u32).to_be_bytes()
    );
    let p = get_cap(
        &mut t,
        crate::defs::cap::TPM_PROPERTIES,
        crate::defs::pt::STARTUP_CLEAR,
        1,
    );
    assert_eq!(&p[13..], &0xFu32.to_be_bytes());
    let mut w = Writer::new();
    w.u32(99).u32(0).u32(1);
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::GET_CAPABILITY, &[], &[], &w.buf))),
        rc::VALUE + rc::P + rc::N1
    );
    let mut w = Writer::new();
    w.u32(crate::defs::cap::HANDLES).u32(0x0500_0000).u32(1);
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::GET_CAPABILITY, &[], &[], &w.buf))),
        rc::HANDLE + rc::P + 2 * rc::N1
    );
    let p = get_cap(&mut t, crate::defs::cap::HANDLES, 0x4000_0000, 100);
    assert_eq!(u32::from_be_bytes(p[5..9].try_into().unwrap()), 7);
}

#[test]
fn nv_written_before_response_and_corruption_refused() {
    let (mut t, nv, clock) = started();
    let before = nv.0.lock().unwrap().writes;
    let mut w = Writer::new();
    w.tpm2b(b"e");
    let c = command(
        cc::HIERARCHY_CHANGE_AUTH,
        &[handle::ENDORSEMENT],
        &[b""],
        &w.buf,
    );
    assert_eq!(rc_of(&t.execute(0, &c)), 0);
    assert_eq!(nv.0.lock().unwrap().writes, before + 1);
    // Reads don't write.
    t.execute(0, &command(cc::GET_RANDOM, &[], &[], &[0, 4]));
    assert_eq!(nv.0.lock().unwrap().writes, before + 1);
    nv.0.lock().unwrap().image.as_mut().unwrap()[40] ^= 1;
    let r = Tpm::new(
        Box::new(CountingEntropy(1)),
        Box::new(clock.clone()),
        Box::new(nv.clone()),
    );
    assert_eq!(r.err(), Some(NvError::Corrupt));
}

#[test]
fn hash_and_flush() {
    let (mut t, _, _) = started();
    let mut w = Writer::new();
    w.tpm2b(b"abc").u16(HashAlg::Sha256.id()).u32(handle::NULL);
    let r = t.execute(0, &command(cc::HASH, &[], &[], &w.buf));
    let mut rd = Reader::new(params_of(&r));
    assert_eq!(
        rd.tpm2b(64).unwrap(),
        HashAlg::Sha256.digest(&[b"abc"]).as_bytes()
    );
    assert_eq!(rd.u16().unwrap(), st::HASHCHECK);
    assert_eq!(rd.u32().unwrap(), handle::NULL);
    let mut w = Writer::new();
    w.tpm2b(b"abc").u16(HashAlg::Sha256.id()).u32(handle::OWNER);
    let r = t.execute(0, &command(cc::HASH, &[], &[], &w.buf));
    assert_eq!(params_of(&r).len(), 34 + 2 + 4 + 2 + 48);
    let mut w = Writer::new();
    w.tpm2b(b"abc").u16(0x0012).u32(handle::NULL);
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::HASH, &[], &[], &w.buf))),
        rc::HASH + rc::P + 2 * rc::N1
    );
    assert_eq!(
        rc_of(&t.execute(
            0,
            &command(cc::FLUSH_CONTEXT, &[], &[], &0x8000_0000u32.to_be_bytes())
        )),
        rc::HANDLE + rc::P + rc::N1
    );
    assert_eq!(
        rc_of(&t.execute(
            0,
            &command(cc::FLUSH_CONTEXT, &[], &[], &0x4000_0001u32.to_be_bytes())
        )),
        rc::VALUE + rc::P + rc::N1
    );
}

/// An NV store that fails every write.
struct BrokenNv;
impl NvStore for BrokenNv {
    fn load(&mut self) -> Result<Option<Vec<u8>>, NvError> {
        Ok(Some(
            crate::nv::Persistent::manufacture(&mut |b| b.fill(7)).encode(),
        ))
    }
    fn store(&mut self, _: &[u8]) -> Result<(), NvError> {
        Err(NvError::Unavailable)
    }
}

#[test]
fn nv_write_failure_enters_failure_mode() {
    let mut t = Tpm::new(
        Box::new(CountingEntropy(1)),
        Box::new(TestClock::default()),
        Box::new(BrokenNv),
    )
    .unwrap();
    assert_eq!(startup(&mut t, su::CLEAR), rc::FAILURE);
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::GET_RANDOM, &[], &[], &[0, 4]))),
        rc::FAILURE
    );
    let r = t.execute(0, &command(cc::GET_TEST_RESULT, &[], &[], &[]));
    assert_eq!(rc_of(&r), 0);
    assert_eq!(&r[10..], &[0, 0, 0, 0, 1, 1]);
}

#[test]
fn incremental_self_test_has_nothing_pending() {
    let (mut t, _, _) = started();
    let mut w = Writer::new();
    w.u32(2)
        .u16(HashAlg::Sha256.id())
        .u16(crate::public::ids::ECC);
    let r = t.execute(0, &command(cc::INCREMENTAL_SELF_TEST, &[], &[], &w.buf));
    assert_eq!(rc_of(&r), 0);
    assert_eq!(params_of(&r), &[0, 0, 0, 0]);
    // An empty list, a list longer than MAX_ALG_LIST_SIZE, a short list.
    let r = t.execute(
        0,
        &command(cc::INCREMENTAL_SELF_TEST, &[], &[], &[0, 0, 0, 0]),
    );
    assert_eq!(rc_of(&r), 0);
    let r = t.execute(
        0,
        &command(cc::INCREMENTAL_SELF_TEST, &[], &[], &[0, 0, 0, 65]),
    );
    assert_eq!(rc_of(&r), rc::SIZE + rc::P + rc::N1);
    let r = t.execute(
        0,
        &command(cc::INCREMENTAL_SELF_TEST, &[], &[], &[0, 0, 0, 2, 0, 4]),
    );
    assert_ne!(rc_of(&r), 0);
}

/// An index with TPMA_NV_POLICY_DELETE: only the platform defines it,
/// TPM2_NV_UndefineSpace refuses it (TPM_RC_ATTRIBUTES, handle 2) and
/// TPM2_NV_UndefineSpaceSpecial refuses an index without the attribute
/// (handle 1) and a password for its ADMIN role (TPM_RC_AUTH_TYPE).
#[test]
fn policy_delete_indices_need_undefine_space_special() {
    use crate::marshal::Writer;
    let (mut t, _, _) = started();
    let define = |by: u32, index: u32, attrs: u32| {
        let mut p = Writer::new();
        p.u32(index).u16(0x0B).u32(attrs).tpm2b(&[7; 32]).u16(8);
        let mut w = Writer::new();
        w.tpm2b(&[]).tpm2b(&p.buf);
        command(cc::NV_DEFINE_SPACE, &[by], &[b""], &w.buf)
    };
    // authread | authwrite | ppread | ppwrite | platformcreate | policyDelete.
    let special = 0x4005_0405;
    let r = t.execute(0, &define(handle::OWNER, 0x0150_0070, special & !(1 << 30)));
    assert_eq!(rc_of(&r), rc::ATTRIBUTES + rc::P + 2 * rc::N1);
    assert_eq!(
        rc_of(&t.execute(0, &define(handle::PLATFORM, 0x0150_0070, special))),
        0
    );
    assert_eq!(
        rc_of(&t.execute(
            0,
            &define(handle::PLATFORM, 0x0150_0071, special & !(1 << 10))
        )),
        0
    );
    let r = t.execute(
        0,
        &command(
            cc::NV_UNDEFINE_SPACE,
            &[handle::PLATFORM, 0x0150_0070],
            &[b""],
            &[],
        ),
    );
    assert_eq!(rc_of(&r), rc::ATTRIBUTES + rc::H + 2 * rc::N1);
    let special_cmd = |index: u32| {
        command(
            cc::NV_UNDEFINE_SPACE_SPECIAL,
            &[index, handle::PLATFORM],
            &[b"", b""],
            &[],
        )
    };
    assert_eq!(
        rc_of(&t.execute(0, &special_cmd(0x0150_0070))),
        rc::AUTH_TYPE
    );
    assert_eq!(
        rc_of(&t.execute(0, &special_cmd(0x0150_0071))),
        rc::AUTH_TYPE,
        "the role is checked before the handler"
    );
    // The index is still there.
    let r = t.execute(0, &command(cc::NV_READ_PUBLIC, &[0x0150_0070], &[], &[]));
    assert_eq!(rc_of(&r), 0);
}
