//! Engine tests of sessions: HMAC authorization computed independently of the
//! engine's own helpers (from Part 1's formulas), response HMACs, rolling
//! nonces, parameter encryption, policy sessions and session contexts.

use crate::defs::{cc, handle, rc, session_attr as sa, st, su};
use crate::hash::HashAlg;
use crate::marshal::{Reader, Writer};
use crate::session::{aes_cfb, kdfa};
use crate::tests::{command, new_tpm, params_of, rc_of, startup, SharedNv, TestClock};
use crate::Tpm;
use alloc::vec::Vec;

const SHA256: HashAlg = HashAlg::Sha256;

fn started() -> Tpm {
    let mut t = new_tpm(&SharedNv::default(), &TestClock::default());
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    t
}

/// A client-side view of one session.
struct Client {
    handle: u32,
    nonce_tpm: Vec<u8>,
    nonce_caller: Vec<u8>,
    key: Vec<u8>,
}

/// StartAuthSession(tpmKey NULL, bind, nonceCaller, no salt, type, symmetric, SHA-256).
fn start(t: &mut Tpm, bind: u32, bind_auth: &[u8], ty: u8, aes: bool) -> Client {
    let nonce_caller = alloc::vec![0x5Au8; 32];
    let mut p = Writer::new();
    p.tpm2b(&nonce_caller).tpm2b(&[]).u8(ty);
    if aes {
        p.u16(0x0006).u16(128).u16(0x0043);
    } else {
        p.u16(0x0010);
    }
    p.u16(SHA256.id());
    let r = t.execute(
        0,
        &command(cc::START_AUTH_SESSION, &[handle::NULL, bind], &[], &p.buf),
    );
    assert_eq!(rc_of(&r), 0, "{r:02x?}");
    let h = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let nonce_tpm = Reader::new(&r[14..]).tpm2b(64).unwrap().to_vec();
    assert_eq!(nonce_tpm.len(), 32);
    let key = if bind_auth.is_empty() {
        Vec::new()
    } else {
        kdfa(SHA256, bind_auth, b"ATH", &nonce_tpm, &nonce_caller, 256)
    };
    Client {
        handle: h,
        nonce_tpm,
        nonce_caller,
        key,
    }
}

/// A command with one HMAC session over `params` (already encrypted if the
/// session decrypts), authorizing `handles[0]` whose authValue is `auth`.
fn hmac_command(
    c: &Client,
    code: u32,
    handles: &[u32],
    auth: &[u8],
    attrs: u8,
    params: &[u8],
) -> Vec<u8> {
    let mut cp = Vec::new();
    cp.extend(code.to_be_bytes());
    for h in handles {
        cp.extend(h.to_be_bytes());
    }
    cp.extend(params);
    let cp_hash = SHA256.digest(&[&cp]);
    let key = [&c.key[..], auth].concat();
    let mac = SHA256.hmac(
        &key,
        &[cp_hash.as_bytes(), &c.nonce_caller, &c.nonce_tpm, &[attrs]],
    );
    let mut w = Writer::new();
    w.u16(st::SESSIONS).u32(0).u32(code);
    for h in handles {
        w.u32(*h);
    }
    let mut s = Writer::new();
    s.u32(c.handle)
        .tpm2b(&c.nonce_caller)
        .u8(attrs)
        .tpm2b(mac.as_bytes());
    w.u32(s.len() as u32).bytes(&s.buf).bytes(params);
    let n = w.len() as u32;
    w.patch_u32(2, n);
    w.buf
}

/// Checks the response HMAC and rolls the client's nonceTPM.
fn check_response(c: &mut Client, code: u32, auth: &[u8], attrs: u8, r: &[u8]) -> Vec<u8> {
    let params = params_of(r).to_vec();
    let mut rd = Reader::new(&r[14 + params.len()..]);
    let nonce = rd.tpm2b(64).unwrap().to_vec();
    assert_eq!(rd.u8().unwrap(), attrs);
    let mac = rd.tpm2b(64).unwrap();
    assert_ne!(nonce, c.nonce_tpm, "nonceTPM must roll");
    let rp = SHA256.digest(&[&0u32.to_be_bytes(), &code.to_be_bytes(), &params]);
    let key = [&c.key[..], auth].concat();
    let expect = SHA256.hmac(&key, &[rp.as_bytes(), &nonce, &c.nonce_caller, &[attrs]]);
    assert_eq!(mac, expect.as_bytes(), "response HMAC");
    c.nonce_tpm = nonce;
    params
}

fn change_auth_params(new: &[u8]) -> Vec<u8> {
    let mut p = Writer::new();
    p.tpm2b(new);
    p.buf
}

#[test]
fn unbound_hmac_session_authorizes_and_answers_with_an_hmac() {
    let mut t = started();
    let mut c = start(&mut t, handle::NULL, &[], 0, false);
    assert_eq!(c.handle, 0x0200_0000);
    let attrs = sa::CONTINUE_SESSION;
    let p = change_auth_params(b"pw1");
    let r = t.execute(
        0,
        &hmac_command(
            &c,
            cc::HIERARCHY_CHANGE_AUTH,
            &[handle::OWNER],
            b"",
            attrs,
            &p,
        ),
    );
    // The response HMAC is keyed with the entity's authValue as it is after
    // the command (the reference implementation's EntityGetAuthValue at
    // response time): the new one.
    check_response(&mut c, cc::HIERARCHY_CHANGE_AUTH, b"pw1", attrs, &r);
    // Now the owner's authValue is "pw1"; a stale nonce or a wrong value fails.
    let p = change_auth_params(b"");
    let bad = hmac_command(
        &c,
        cc::HIERARCHY_CHANGE_AUTH,
        &[handle::OWNER],
        b"nope",
        attrs,
        &p,
    );
    assert_eq!(rc_of(&t.execute(0, &bad)), rc::BAD_AUTH + rc::S + rc::N1);
    let good = hmac_command(
        &c,
        cc::HIERARCHY_CHANGE_AUTH,
        &[handle::OWNER],
        b"pw1",
        attrs,
        &p,
    );
    let r = t.execute(0, &good);
    check_response(&mut c, cc::HIERARCHY_CHANGE_AUTH, b"", attrs, &r);
    // Replaying the same command (old nonceTPM) fails.
    assert_eq!(rc_of(&t.execute(0, &good)), rc::BAD_AUTH + rc::S + rc::N1);
}

#[test]
fn session_without_continue_is_flushed_and_then_unknown() {
    let mut t = started();
    let mut c = start(&mut t, handle::NULL, &[], 0, false);
    let p = change_auth_params(b"");
    let r = t.execute(
        0,
        &hmac_command(&c, cc::HIERARCHY_CHANGE_AUTH, &[handle::OWNER], b"", 0, &p),
    );
    check_response(&mut c, cc::HIERARCHY_CHANGE_AUTH, b"", 0, &r);
    let again = hmac_command(&c, cc::HIERARCHY_CHANGE_AUTH, &[handle::OWNER], b"", 0, &p);
    assert_eq!(rc_of(&t.execute(0, &again)), rc::REFERENCE_S0);
}

#[test]
fn bound_session_omits_the_bound_entitys_auth_and_lockout_counts_failures() {
    let mut t = started();
    let set = command(
        cc::HIERARCHY_CHANGE_AUTH,
        &[handle::LOCKOUT],
        &[b""],
        &change_auth_params(b"lk"),
    );
    assert_eq!(rc_of(&t.execute(0, &set)), 0);
    let mut c = start(&mut t, handle::LOCKOUT, b"lk", 0, false);
    assert_eq!(c.key.len(), 32);
    let attrs = sa::CONTINUE_SESSION;
    let p = change_auth_params(b"lk");
    // Bound to lockout: the authValue is not in the HMAC key.
    let r = t.execute(
        0,
        &hmac_command(
            &c,
            cc::HIERARCHY_CHANGE_AUTH,
            &[handle::LOCKOUT],
            b"",
            attrs,
            &p,
        ),
    );
    check_response(&mut c, cc::HIERARCHY_CHANGE_AUTH, b"", attrs, &r);
    // A wrong HMAC on lockoutAuth: AUTH_FAIL, then lockout.
    let bad = hmac_command(
        &c,
        cc::HIERARCHY_CHANGE_AUTH,
        &[handle::LOCKOUT],
        b"x",
        attrs,
        &p,
    );
    assert_eq!(rc_of(&t.execute(0, &bad)), rc::AUTH_FAIL + rc::S + rc::N1);
    let good = hmac_command(
        &c,
        cc::HIERARCHY_CHANGE_AUTH,
        &[handle::LOCKOUT],
        b"",
        attrs,
        &p,
    );
    assert_eq!(rc_of(&t.execute(0, &good)), rc::LOCKOUT);
}

#[test]
fn decrypt_and_encrypt_sessions_use_aes_cfb_keyed_from_session_and_auth() {
    let mut t = started();
    let mut c = start(&mut t, handle::NULL, &[], 0, true);
    // Encrypted GetRandom response: the session authorizes nothing, so the key
    // is the (empty) session key alone.
    let attrs = sa::CONTINUE_SESSION | sa::ENCRYPT;
    let r = t.execute(
        0,
        &hmac_command(&c, cc::GET_RANDOM, &[], b"", attrs, &16u16.to_be_bytes()),
    );
    let old_caller = c.nonce_caller.clone();
    let params = check_response(&mut c, cc::GET_RANDOM, b"", attrs, &r);
    let mut data = params[2..].to_vec();
    assert_eq!(data.len(), 16);
    let m = kdfa(SHA256, b"", b"CFB", &c.nonce_tpm, &old_caller, 256);
    aes_cfb(&m[..16], &m[16..], &mut data, false);
    assert_ne!(data, params[2..].to_vec());

    // Decrypted HierarchyChangeAuth parameter: key = sessionKey || ownerAuth.
    let attrs = sa::CONTINUE_SESSION | sa::DECRYPT;
    let mut secret = b"s3cret".to_vec();
    let m = kdfa(SHA256, b"", b"CFB", &c.nonce_caller, &c.nonce_tpm, 256);
    aes_cfb(&m[..16], &m[16..], &mut secret, true);
    let p = change_auth_params(&secret);
    let r = t.execute(
        0,
        &hmac_command(
            &c,
            cc::HIERARCHY_CHANGE_AUTH,
            &[handle::OWNER],
            b"",
            attrs,
            &p,
        ),
    );
    check_response(&mut c, cc::HIERARCHY_CHANGE_AUTH, b"s3cret", attrs, &r);
    // The TPM decrypted it: the owner password is now "s3cret".
    let pcr = command(
        cc::HIERARCHY_CHANGE_AUTH,
        &[handle::OWNER],
        &[b"s3cret"],
        &change_auth_params(b""),
    );
    assert_eq!(rc_of(&t.execute(0, &pcr)), 0);
    // A command whose first parameter is not a TPM2B refuses decrypt.
    let bad = hmac_command(&c, cc::GET_RANDOM, &[], b"", attrs, &16u16.to_be_bytes());
    assert_eq!(rc_of(&t.execute(0, &bad)), rc::ATTRIBUTES + rc::S + rc::N1);
    // A session without a symmetric algorithm cannot encrypt.
    let plain = start(&mut t, handle::NULL, &[], 0, false);
    let enc = hmac_command(
        &plain,
        cc::GET_RANDOM,
        &[],
        b"",
        sa::ENCRYPT,
        &16u16.to_be_bytes(),
    );
    assert_eq!(rc_of(&t.execute(0, &enc)), rc::SYMMETRIC + rc::S + rc::N1);
}

fn policy_digest(t: &mut Tpm, h: u32) -> Vec<u8> {
    let r = t.execute(0, &command(cc::POLICY_GET_DIGEST, &[h], &[], &[]));
    Reader::new(params_of(&r)).tpm2b(64).unwrap().to_vec()
}

#[test]
fn policy_digests_follow_part_3() {
    let mut t = started();
    let c = start(&mut t, handle::NULL, &[], 3, false);
    assert_eq!(c.handle >> 24, 0x03);
    assert_eq!(policy_digest(&mut t, c.handle), [0u8; 32]);
    let r = t.execute(0, &command(cc::POLICY_AUTH_VALUE, &[c.handle], &[], &[]));
    assert_eq!(rc_of(&r), 0);
    let av = SHA256.digest(&[&[0u8; 32], &cc::POLICY_AUTH_VALUE.to_be_bytes()]);
    assert_eq!(policy_digest(&mut t, c.handle), av.as_bytes());
    let code = cc::PCR_EXTEND.to_be_bytes();
    let r = t.execute(
        0,
        &command(cc::POLICY_COMMAND_CODE, &[c.handle], &[], &code),
    );
    assert_eq!(rc_of(&r), 0);
    let ccd = SHA256.digest(&[av.as_bytes(), &cc::POLICY_COMMAND_CODE.to_be_bytes(), &code]);
    assert_eq!(policy_digest(&mut t, c.handle), ccd.as_bytes());
    // A second, different command code is refused; an unimplemented one too.
    let other = cc::HASH.to_be_bytes();
    let r = t.execute(
        0,
        &command(cc::POLICY_COMMAND_CODE, &[c.handle], &[], &other),
    );
    assert_eq!(rc_of(&r), rc::VALUE + rc::P + rc::N1);
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::POLICY_RESTART, &[c.handle], &[], &[]))),
        0
    );
    let r = t.execute(
        0,
        &command(
            cc::POLICY_COMMAND_CODE,
            &[c.handle],
            &[],
            // TPM2_FieldUpgradeStart: not implemented.
            &0x12Fu32.to_be_bytes(),
        ),
    );
    assert_eq!(rc_of(&r), rc::POLICY_CC + rc::P + rc::N1);
    // PolicyPCR over PCR 3 (sha256) in a trial session: current values.
    let mut p = Writer::new();
    p.tpm2b(&[]).u32(1).pcr_selection(SHA256, 1 << 3);
    let raw_sel = p.buf[2..].to_vec();
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::POLICY_PCR, &[c.handle], &[], &p.buf))),
        0
    );
    let pcr_digest = SHA256.digest(&[&[0u8; 32]]);
    let expect = SHA256.digest(&[
        &[0u8; 32],
        &cc::POLICY_PCR.to_be_bytes(),
        &raw_sel,
        pcr_digest.as_bytes(),
    ]);
    assert_eq!(policy_digest(&mut t, c.handle), expect.as_bytes());
    // PolicyOR replaces the digest with H(0 || CC || list).
    let mut or = Writer::new();
    or.u32(2).tpm2b(&[1; 32]).tpm2b(&[2; 32]);
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::POLICY_OR, &[c.handle], &[], &or.buf))),
        0
    );
    let expect = SHA256.digest(&[&[0u8; 32], &cc::POLICY_OR.to_be_bytes(), &[1; 32], &[2; 32]]);
    assert_eq!(policy_digest(&mut t, c.handle), expect.as_bytes());
    // A trial session authorizes nothing.
    let p = change_auth_params(b"");
    let r = t.execute(
        0,
        &hmac_command(&c, cc::HIERARCHY_CHANGE_AUTH, &[handle::OWNER], b"", 1, &p),
    );
    assert_eq!(rc_of(&r), rc::ATTRIBUTES + rc::S + rc::N1);
}

#[test]
fn policy_session_authorizes_through_the_primary_policy_until_pcrs_change() {
    let mut t = started();
    // ownerPolicy := PolicyPCR(sha256:3) computed in a trial session.
    let trial = start(&mut t, handle::NULL, &[], 3, false);
    let mut pp = Writer::new();
    pp.tpm2b(&[]).u32(1).pcr_selection(SHA256, 1 << 3);
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::POLICY_PCR, &[trial.handle], &[], &pp.buf))),
        0
    );
    let pol = policy_digest(&mut t, trial.handle);
    let mut sp = Writer::new();
    sp.tpm2b(&pol).u16(SHA256.id());
    let r = t.execute(
        0,
        &command(cc::SET_PRIMARY_POLICY, &[handle::OWNER], &[b""], &sp.buf),
    );
    assert_eq!(rc_of(&r), 0);
    let mut c = start(&mut t, handle::NULL, &[], 1, false);
    let ph = c.handle;
    let run_pcr = |t: &mut Tpm| t.execute(0, &command(cc::POLICY_PCR, &[ph], &[], &pp.buf));
    assert_eq!(rc_of(&run_pcr(&mut t)), 0);
    let attrs = sa::CONTINUE_SESSION;
    let p = change_auth_params(b"");
    let r = t.execute(
        0,
        &hmac_command(
            &c,
            cc::HIERARCHY_CHANGE_AUTH,
            &[handle::OWNER],
            b"",
            attrs,
            &p,
        ),
    );
    check_response(&mut c, cc::HIERARCHY_CHANGE_AUTH, b"", attrs, &r);
    // The use reset the policy: a second use fails.
    let r = t.execute(
        0,
        &hmac_command(
            &c,
            cc::HIERARCHY_CHANGE_AUTH,
            &[handle::OWNER],
            b"",
            attrs,
            &p,
        ),
    );
    assert_eq!(rc_of(&r), rc::POLICY_FAIL + rc::S + rc::N1);
    // PolicyPCR, then PCR 3 changes: PCR_CHANGED.
    assert_eq!(rc_of(&run_pcr(&mut t)), 0);
    let mut ext = Writer::new();
    ext.u32(1).u16(SHA256.id()).bytes(&[9; 32]);
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::PCR_EXTEND, &[3], &[b""], &ext.buf))),
        0
    );
    let r = t.execute(
        0,
        &hmac_command(
            &c,
            cc::HIERARCHY_CHANGE_AUTH,
            &[handle::OWNER],
            b"",
            attrs,
            &p,
        ),
    );
    assert_eq!(rc_of(&r), rc::PCR_CHANGED);
    // Evaluated again now: the digest no longer matches ownerPolicy.
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::POLICY_RESTART, &[c.handle], &[], &[]))),
        0
    );
    assert_eq!(rc_of(&run_pcr(&mut t)), 0);
    let r = t.execute(
        0,
        &hmac_command(
            &c,
            cc::HIERARCHY_CHANGE_AUTH,
            &[handle::OWNER],
            b"",
            attrs,
            &p,
        ),
    );
    assert_eq!(rc_of(&r), rc::POLICY_FAIL + rc::S + rc::N1);
    // PolicyPCR with a pcrDigest that does not match the PCRs.
    let mut bad = Writer::new();
    bad.tpm2b(&[7; 32]).u32(1).pcr_selection(SHA256, 1 << 3);
    let r = t.execute(0, &command(cc::POLICY_PCR, &[c.handle], &[], &bad.buf));
    assert_eq!(rc_of(&r), rc::VALUE + rc::P + rc::N1);
}

#[test]
fn context_save_and_load_round_trip_and_refuse_forgeries() {
    let mut t = started();
    let c = start(&mut t, handle::NULL, &[], 0, false);
    let r = t.execute(0, &command(cc::CONTEXT_SAVE, &[c.handle], &[], &[]));
    let ctx = params_of(&r).to_vec();
    // Saved: no longer usable or loadable twice... until loaded.
    let p = change_auth_params(b"");
    let use_it = hmac_command(&c, cc::HIERARCHY_CHANGE_AUTH, &[handle::OWNER], b"", 1, &p);
    assert_eq!(rc_of(&t.execute(0, &use_it)), rc::REFERENCE_S0);
    let mut forged = ctx.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let r = t.execute(0, &command(cc::CONTEXT_LOAD, &[], &[], &forged));
    assert_eq!(rc_of(&r), rc::INTEGRITY + rc::P + rc::N1);
    let r = t.execute(0, &command(cc::CONTEXT_LOAD, &[], &[], &ctx));
    assert_eq!(rc_of(&r), 0);
    assert_eq!(u32::from_be_bytes(r[10..14].try_into().unwrap()), c.handle);
    // Loading the same context again: the session is loaded, not saved.
    let r = t.execute(0, &command(cc::CONTEXT_LOAD, &[], &[], &ctx));
    assert_eq!(rc_of(&r), rc::HANDLE + rc::P + rc::N1);
    assert_ne!(rc_of(&t.execute(0, &use_it)), rc::REFERENCE_S0);
    // Flushed: gone.
    let f = command(cc::FLUSH_CONTEXT, &[], &[], &c.handle.to_be_bytes());
    assert_eq!(rc_of(&t.execute(0, &f)), 0);
    assert_eq!(rc_of(&t.execute(0, &f)), rc::HANDLE + rc::P + rc::N1);
}

#[test]
fn session_limits_and_bad_start_parameters() {
    let mut t = started();
    for _ in 0..3 {
        start(&mut t, handle::NULL, &[], 0, false);
    }
    let mut p = Writer::new();
    p.tpm2b(&[1; 16])
        .tpm2b(&[])
        .u8(0)
        .u16(0x0010)
        .u16(SHA256.id());
    let sas = command(
        cc::START_AUTH_SESSION,
        &[handle::NULL, handle::NULL],
        &[],
        &p.buf,
    );
    assert_eq!(rc_of(&t.execute(0, &sas)), rc::SESSION_MEMORY);
    let mut short = Writer::new();
    short
        .tpm2b(&[1; 15])
        .tpm2b(&[])
        .u8(0)
        .u16(0x0010)
        .u16(SHA256.id());
    let r = t.execute(
        0,
        &command(
            cc::START_AUTH_SESSION,
            &[handle::NULL, handle::NULL],
            &[],
            &short.buf,
        ),
    );
    assert_eq!(rc_of(&r), rc::SIZE + rc::P + rc::N1);
    // Sessions end at _TPM_Init.
    t.init();
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    assert_eq!(rc_of(&t.execute(0, &sas)), 0);
}

/// Audit sessions: the first use makes a session the exclusive audit session
/// (auditExclusive in the response); a command with no audit session ends
/// that; asking for exclusivity then fails with TPM_RC_EXCLUSIVE until
/// auditReset restarts the digest. Policy sessions, a second audit session
/// and auditReset/auditExclusive without audit are refused.
#[test]
fn audit_sessions_track_exclusivity_and_refuse_bad_attributes() {
    let mut t = started();
    let mut c = start(&mut t, handle::NULL, b"", 0, false);
    let get_random = 8u16.to_be_bytes();
    let audit = sa::CONTINUE_SESSION | sa::AUDIT;
    let exclusive = audit | sa::AUDIT_EXCLUSIVE;
    let r = t.execute(
        0,
        &hmac_command(&c, cc::GET_RANDOM, &[], b"", audit, &get_random),
    );
    assert_eq!(rc_of(&r), 0, "{r:02x?}");
    check_response(&mut c, cc::GET_RANDOM, b"", exclusive, &r);
    let first = t.v.sessions.get(c.handle).unwrap().audit.unwrap();
    assert_eq!(first.as_bytes().len(), 32);
    let r = t.execute(
        0,
        &hmac_command(&c, cc::GET_RANDOM, &[], b"", exclusive, &get_random),
    );
    check_response(&mut c, cc::GET_RANDOM, b"", exclusive, &r);
    let second = t.v.sessions.get(c.handle).unwrap().audit.unwrap();
    assert_ne!(first, second);
    // A command without an audit session ends the exclusivity.
    let r = t.execute(0, &command(cc::GET_RANDOM, &[], &[], &get_random));
    assert_eq!(rc_of(&r), 0);
    let r = t.execute(
        0,
        &hmac_command(&c, cc::GET_RANDOM, &[], b"", exclusive, &get_random),
    );
    assert_eq!(rc_of(&r), rc::VER1 + 0x021, "TPM_RC_EXCLUSIVE");
    let r = t.execute(
        0,
        &hmac_command(&c, cc::GET_RANDOM, &[], b"", audit, &get_random),
    );
    check_response(&mut c, cc::GET_RANDOM, b"", audit, &r);
    // auditReset restarts the digest and the exclusivity.
    let reset = exclusive | sa::AUDIT_RESET;
    let r = t.execute(
        0,
        &hmac_command(&c, cc::GET_RANDOM, &[], b"", reset, &get_random),
    );
    let out = check_response(&mut c, cc::GET_RANDOM, b"", reset, &r);
    let cp = SHA256.digest(&[&cc::GET_RANDOM.to_be_bytes(), &get_random]);
    let rp = SHA256.digest(&[&0u32.to_be_bytes(), &cc::GET_RANDOM.to_be_bytes(), &out]);
    let expect = SHA256.digest(&[&[0; 32], cp.as_bytes(), rp.as_bytes()]);
    assert_eq!(t.v.sessions.get(c.handle).unwrap().audit, Some(expect));
    // Refused attributes.
    let s1 = rc::S + rc::N1;
    let r = t.execute(
        0,
        &hmac_command(
            &c,
            cc::GET_RANDOM,
            &[],
            b"",
            sa::CONTINUE_SESSION | sa::AUDIT_RESET,
            &get_random,
        ),
    );
    assert_eq!(rc_of(&r), rc::ATTRIBUTES + s1);
    let p = start(&mut t, handle::NULL, b"", 1, false);
    let r = t.execute(
        0,
        &hmac_command(&p, cc::GET_RANDOM, &[], b"", audit, &get_random),
    );
    assert_eq!(rc_of(&r), rc::ATTRIBUTES + s1);
    // Two audit sessions: the second is refused.
    let c2 = start(&mut t, handle::NULL, b"", 0, false);
    let one = hmac_command(&c, cc::GET_RANDOM, &[], b"", audit, &get_random);
    let two = hmac_command(&c2, cc::GET_RANDOM, &[], b"", audit, &get_random);
    // Splice the second session into the first command's area.
    let area = |cmd: &[u8]| {
        let n = u32::from_be_bytes(cmd[10..14].try_into().unwrap()) as usize;
        cmd[14..14 + n].to_vec()
    };
    let both = [area(&one), area(&two)].concat();
    let mut w = Writer::new();
    w.u16(st::SESSIONS)
        .u32(0)
        .u32(cc::GET_RANDOM)
        .u32(both.len() as u32)
        .bytes(&both)
        .bytes(&get_random);
    let n = w.len() as u32;
    w.patch_u32(2, n);
    assert_eq!(
        rc_of(&t.execute(0, &w.buf)),
        rc::ATTRIBUTES + rc::S + 2 * rc::N1
    );
}
