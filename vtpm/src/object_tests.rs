//! Engine tests of key objects: deterministic primaries, ECDSA signing and
//! verification, restricted keys and hash tickets, LoadExternal, object
//! contexts, ReadPublic and dictionary-attack lockout.

use crate::defs::{cc, handle, rc, st, su};
use crate::hash::HashAlg;
use crate::marshal::{Reader, Writer};
use crate::public::{attr, ids, Public, SymObject};
use crate::tests::{command, new_tpm, params_of, rc_of, startup, SharedNv, TestClock};
use crate::Tpm;
use alloc::vec::Vec;

/// Parameters of a successful response that carries a handle (TPMA_CC.rHandle).
pub(crate) fn rparams(r: &[u8]) -> &[u8] {
    assert_eq!(rc_of(r), 0, "{r:02x?}");
    if u16::from_be_bytes([r[0], r[1]]) == st::SESSIONS {
        let n = u32::from_be_bytes(r[14..18].try_into().unwrap()) as usize;
        &r[18..18 + n]
    } else {
        &r[14..]
    }
}

pub(crate) fn started() -> Tpm {
    let mut t = new_tpm(&SharedNv::default(), &TestClock::default());
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    t
}

fn template(attributes: u32) -> Public {
    Public {
        ty: ids::ECC,
        name_alg: HashAlg::Sha256,
        attributes,
        auth_policy: Vec::new(),
        symmetric: SymObject::Null,
        scheme: Some((ids::ECDSA, HashAlg::Sha256)),
        x: Vec::new(),
        y: Vec::new(),
        exponent: 0,
        rsa_bits: 0,
        ecdaa_count: 0,
        curve: crate::public::Curve::P256,
    }
}

const SIGNER: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::USER_WITH_AUTH
    | attr::SIGN;

/// CreatePrimary; returns (rc, handle, public bytes).
pub(crate) fn create_primary(
    t: &mut Tpm,
    hierarchy: u32,
    p: &Public,
    auth: &[u8],
    data: &[u8],
) -> (u32, u32, Vec<u8>) {
    let mut sens = Writer::new();
    sens.tpm2b(auth).tpm2b(data);
    let mut w = Writer::new();
    w.tpm2b(&sens.buf).tpm2b(&p.marshal()).tpm2b(&[]).u32(0);
    let r = t.execute(
        0,
        &command(cc::CREATE_PRIMARY, &[hierarchy], &[b""], &w.buf),
    );
    if rc_of(&r) != 0 {
        return (rc_of(&r), 0, Vec::new());
    }
    let h = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let mut rd = Reader::new(rparams(&r));
    (0, h, rd.tpm2b(512).unwrap().to_vec())
}

pub(crate) fn flush(t: &mut Tpm, h: u32) {
    let r = t.execute(0, &command(cc::FLUSH_CONTEXT, &[], &[], &h.to_be_bytes()));
    assert_eq!(rc_of(&r), 0);
}

pub(crate) fn sign(
    t: &mut Tpm,
    key: u32,
    auth: &[u8],
    digest: &[u8],
    ticket: Option<(u32, &[u8])>,
) -> Vec<u8> {
    let mut w = Writer::new();
    w.tpm2b(digest)
        .u16(crate::defs::alg::NULL)
        .u16(st::HASHCHECK);
    match ticket {
        None => w.u32(handle::NULL).tpm2b(&[]),
        Some((h, d)) => w.u32(h).tpm2b(d),
    };
    t.execute(0, &command(cc::SIGN, &[key], &[auth], &w.buf))
}

pub(crate) fn verify(t: &mut Tpm, key: u32, digest: &[u8], sig: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.tpm2b(digest).bytes(sig);
    t.execute(0, &command(cc::VERIFY_SIGNATURE, &[key], &[], &w.buf))
}

#[test]
fn primaries_are_deterministic_per_seed_template_and_data() {
    let mut t = started();
    let p = template(SIGNER);
    let (rc0, a, pa) = create_primary(&mut t, handle::OWNER, &p, b"", b"");
    assert_eq!(rc0, 0);
    flush(&mut t, a);
    let (_, b, pb) = create_primary(&mut t, handle::OWNER, &p, b"", b"");
    assert_eq!(pa, pb, "same seed and template, same key");
    flush(&mut t, b);
    let (_, c, pc) = create_primary(&mut t, handle::ENDORSEMENT, &p, b"", b"");
    assert_ne!(pa, pc, "another hierarchy's seed");
    flush(&mut t, c);
    let mut p2 = p.clone();
    p2.auth_policy = alloc::vec![1; 32];
    let (_, d, pd) = create_primary(&mut t, handle::OWNER, &p2, b"", b"");
    assert_ne!(pa[pa.len() - 64..], pd[pd.len() - 64..], "another template");
    flush(&mut t, d);
    // Sensitive data is refused for an asymmetric key; attribute rules apply.
    let (e, _, _) = create_primary(&mut t, handle::OWNER, &p, b"", b"x");
    assert_eq!(e, rc::ATTRIBUTES + rc::P + 2 * rc::N1);
    let (e, _, _) = create_primary(
        &mut t,
        handle::OWNER,
        &template(SIGNER | attr::DECRYPT | attr::RESTRICTED),
        b"",
        b"",
    );
    assert_eq!(e, rc::ATTRIBUTES + rc::P + 2 * rc::N1);
    // The public point is on the curve and the Name hashes the public area.
    let q = Public::unmarshal(&mut Reader::new(&pa)).unwrap();
    assert!(q.point().is_some());
    assert_eq!(q.name()[2..], *HashAlg::Sha256.digest(&[&pa]).as_bytes());
}

#[test]
fn sign_verify_and_read_public() {
    let mut t = started();
    let (_, k, pubk) = create_primary(&mut t, handle::OWNER, &template(SIGNER), b"kp", b"");
    let digest = HashAlg::Sha256.digest(&[b"message"]);
    let r = sign(&mut t, k, b"kp", digest.as_bytes(), None);
    let sig = params_of(&r).to_vec();
    assert_eq!(&sig[..4], &[0, 0x18, 0, 0x0B]);
    let v = verify(&mut t, k, digest.as_bytes(), &sig);
    let mut rd = Reader::new(params_of(&v));
    assert_eq!(rd.u16().unwrap(), st::VERIFIED);
    assert_eq!(rd.u32().unwrap(), handle::OWNER);
    let other = HashAlg::Sha256.digest(&[b"other"]);
    assert_eq!(
        rc_of(&verify(&mut t, k, other.as_bytes(), &sig)),
        rc::SIGNATURE + rc::P + 2 * rc::N1
    );
    // A digest of the wrong size for the scheme.
    assert_eq!(
        rc_of(&sign(&mut t, k, b"kp", &[1; 20], None)),
        rc::SIZE + rc::P + rc::N1
    );
    // ReadPublic returns the same public area and its Name.
    let r = t.execute(0, &command(cc::READ_PUBLIC, &[k], &[], &[]));
    let mut rd = Reader::new(params_of(&r));
    assert_eq!(rd.tpm2b(512).unwrap(), &pubk[..]);
    let name = rd.tpm2b(64).unwrap();
    assert_eq!(
        name,
        Public::unmarshal(&mut Reader::new(&pubk)).unwrap().name()
    );
    // ReadPublic of a handle with nothing loaded.
    let r = t.execute(0, &command(cc::READ_PUBLIC, &[0x8000_0002], &[], &[]));
    assert_eq!(rc_of(&r), rc::REFERENCE_H0);
}

#[test]
fn restricted_keys_sign_only_ticketed_digests() {
    let mut t = started();
    let (_, k, _) = create_primary(
        &mut t,
        handle::OWNER,
        &template(SIGNER | attr::RESTRICTED),
        b"",
        b"",
    );
    let digest = HashAlg::Sha256.digest(&[b"data"]);
    assert_eq!(
        rc_of(&sign(&mut t, k, b"", digest.as_bytes(), None)),
        rc::TICKET + rc::P + 3 * rc::N1
    );
    // TPM2_Hash produces the ticket.
    let mut w = Writer::new();
    w.tpm2b(b"data")
        .u16(HashAlg::Sha256.id())
        .u32(handle::OWNER);
    let r = t.execute(0, &command(cc::HASH, &[], &[], &w.buf));
    let mut rd = Reader::new(params_of(&r));
    let d = rd.tpm2b(64).unwrap().to_vec();
    assert_eq!(d, digest.as_bytes());
    assert_eq!(rd.u16().unwrap(), st::HASHCHECK);
    let th = rd.u32().unwrap();
    let td = rd.tpm2b(64).unwrap().to_vec();
    assert_eq!(rc_of(&sign(&mut t, k, b"", &d, Some((th, &td)))), 0);
}

#[test]
fn load_external_with_and_without_private_part() {
    let mut t = started();
    let d = crate::public::derive_p256(|i| {
        HashAlg::Sha256
            .digest(&[&i.to_be_bytes(), b"ext"])
            .as_bytes()
            .to_vec()
    });
    let pk = crate::public::EcPublic::P256(p256::PublicKey::from_secret_scalar(&d));
    let mut p = template(attr::USER_WITH_AUTH | attr::SIGN);
    p.set_point(&pk);
    let scalar = p256::elliptic_curve::PrimeField::to_repr(&*d).to_vec();
    let load = |t: &mut Tpm, p: &Public, private: Option<&[u8]>, hierarchy: u32| {
        let mut w = Writer::new();
        match private {
            None => {
                w.u16(0);
            }
            Some(s) => {
                let mut sens = Writer::new();
                sens.u16(ids::ECC).tpm2b(b"ea").tpm2b(&[]).tpm2b(s);
                w.tpm2b(&sens.buf);
            }
        }
        w.tpm2b(&p.marshal()).u32(hierarchy);
        t.execute(0, &command(cc::LOAD_EXTERNAL, &[], &[], &w.buf))
    };
    let r = load(&mut t, &p, Some(&scalar), handle::NULL);
    let k = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let mut rd = Reader::new(rparams(&r));
    assert_eq!(rd.tpm2b(64).unwrap(), p.name());
    let digest = HashAlg::Sha256.digest(&[b"m"]);
    assert_eq!(rc_of(&sign(&mut t, k, b"ea", digest.as_bytes(), None)), 0);
    flush(&mut t, k);
    // A private part in another hierarchy, or one that does not match.
    assert_eq!(
        rc_of(&load(&mut t, &p, Some(&scalar), handle::OWNER)),
        rc::HIERARCHY + rc::P + 3 * rc::N1
    );
    let mut wrong = scalar.clone();
    wrong[31] ^= 1;
    assert_eq!(
        rc_of(&load(&mut t, &p, Some(&wrong), handle::NULL)),
        rc::BINDING + rc::P + 2 * rc::N1
    );
    // Public only: verifies but cannot sign.
    let r = load(&mut t, &p, None, handle::OWNER);
    let k = u32::from_be_bytes(r[10..14].try_into().unwrap());
    assert_eq!(
        rc_of(&sign(&mut t, k, b"", digest.as_bytes(), None)),
        rc::AUTH_UNAVAILABLE
    );
    // A point off the curve.
    p.y[5] ^= 0x40;
    assert_eq!(
        rc_of(&load(&mut t, &p, None, handle::OWNER)),
        rc::ECC_POINT + rc::P + 2 * rc::N1
    );
}

#[test]
fn key_contexts_round_trip_and_refuse_forgeries() {
    let mut t = started();
    let (_, k, pubk) = create_primary(&mut t, handle::OWNER, &template(SIGNER), b"pw", b"");
    let r = t.execute(0, &command(cc::CONTEXT_SAVE, &[k], &[], &[]));
    let ctx = params_of(&r).to_vec();
    assert_eq!(&ctx[8..12], &handle::TRANSIENT_SAVED.to_be_bytes());
    assert_eq!(&ctx[12..16], &handle::OWNER.to_be_bytes());
    flush(&mut t, k);
    let mut forged = ctx.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    let r = t.execute(0, &command(cc::CONTEXT_LOAD, &[], &[], &forged));
    assert_eq!(rc_of(&r), rc::INTEGRITY + rc::P + rc::N1);
    let r = t.execute(0, &command(cc::CONTEXT_LOAD, &[], &[], &ctx));
    let k2 = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let r = t.execute(0, &command(cc::READ_PUBLIC, &[k2], &[], &[]));
    assert_eq!(Reader::new(params_of(&r)).tpm2b(512).unwrap(), &pubk[..]);
    let digest = HashAlg::Sha256.digest(&[b"m"]);
    assert_eq!(rc_of(&sign(&mut t, k2, b"pw", digest.as_bytes(), None)), 0);
    // Sequence objects' contexts are not saved.
    let mut w = Writer::new();
    w.tpm2b(&[]).u16(HashAlg::Sha256.id());
    let r = t.execute(0, &command(cc::HASH_SEQUENCE_START, &[], &[], &w.buf));
    let s = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let r = t.execute(0, &command(cc::CONTEXT_SAVE, &[s], &[], &[]));
    assert_eq!(rc_of(&r), rc::TYPE + rc::H + rc::N1);
}

#[test]
fn wrong_key_auth_counts_towards_lockout_unless_no_da() {
    let mut t = started();
    let (_, k, _) = create_primary(&mut t, handle::OWNER, &template(SIGNER), b"right", b"");
    let digest = HashAlg::Sha256.digest(&[b"m"]);
    for _ in 0..3 {
        assert_eq!(
            rc_of(&sign(&mut t, k, b"wrong", digest.as_bytes(), None)),
            rc::AUTH_FAIL + rc::S + rc::N1
        );
    }
    assert_eq!(
        rc_of(&sign(&mut t, k, b"right", digest.as_bytes(), None)),
        rc::LOCKOUT
    );
    // A noDA key is unaffected.
    let (_, n, _) = create_primary(
        &mut t,
        handle::OWNER,
        &template(SIGNER | attr::NO_DA),
        b"r",
        b"",
    );
    assert_eq!(
        rc_of(&sign(&mut t, n, b"x", digest.as_bytes(), None)),
        rc::BAD_AUTH + rc::S + rc::N1
    );
    assert_eq!(rc_of(&sign(&mut t, n, b"r", digest.as_bytes(), None)), 0);
}

#[test]
fn evicted_keys_persist_across_power_cycles_until_removed() {
    let nv = SharedNv::default();
    let clock = TestClock::default();
    let mut t = new_tpm(&nv, &clock);
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    let (_, k, pubk) = create_primary(&mut t, handle::OWNER, &template(SIGNER), b"pk", b"");
    let ph = 0x8100_0001u32;
    let evict = |t: &mut Tpm, auth: u32, obj: u32, p: u32| {
        t.execute(
            0,
            &command(cc::EVICT_CONTROL, &[auth, obj], &[b""], &p.to_be_bytes()),
        )
    };
    // Owner handles only in the owner range; transient handles refused as targets.
    assert_eq!(
        rc_of(&evict(&mut t, handle::OWNER, k, 0x8180_0000)),
        rc::RANGE + rc::P + rc::N1
    );
    assert_eq!(
        rc_of(&evict(&mut t, handle::OWNER, k, 0x8000_0001)),
        rc::VALUE + rc::P + rc::N1
    );
    assert_eq!(rc_of(&evict(&mut t, handle::OWNER, k, ph)), 0);
    assert_eq!(rc_of(&evict(&mut t, handle::OWNER, k, ph)), rc::NV_DEFINED);
    // A new TPM on the same NV image (a power cycle / process restart).
    drop(t);
    let mut t = new_tpm(&nv, &clock);
    assert_eq!(startup(&mut t, su::CLEAR), 0);
    let r = t.execute(0, &command(cc::READ_PUBLIC, &[ph], &[], &[]));
    assert_eq!(Reader::new(params_of(&r)).tpm2b(512).unwrap(), &pubk[..]);
    let digest = HashAlg::Sha256.digest(&[b"m"]);
    assert_eq!(rc_of(&sign(&mut t, ph, b"pk", digest.as_bytes(), None)), 0);
    // Removal needs the handle itself as the object.
    assert_eq!(
        rc_of(&evict(&mut t, handle::OWNER, ph, 0x8100_0002)),
        rc::HANDLE + rc::H + 2 * rc::N1
    );
    assert_eq!(rc_of(&evict(&mut t, handle::OWNER, ph, ph)), 0);
    let r = t.execute(0, &command(cc::READ_PUBLIC, &[ph], &[], &[]));
    assert_eq!(rc_of(&r), rc::HANDLE + rc::H + rc::N1);
}

#[test]
fn test_parms_accepts_the_implemented_curves_only() {
    let mut t = started();
    let parms = |curve: u16, ty: u16| {
        let mut w = Writer::new();
        w.u16(ty)
            .u16(crate::defs::alg::NULL)
            .u16(ids::ECDSA)
            .u16(HashAlg::Sha256.id())
            .u16(curve)
            .u16(crate::defs::alg::NULL);
        command(cc::TEST_PARMS, &[], &[], &w.buf)
    };
    assert_eq!(rc_of(&t.execute(0, &parms(ids::NIST_P256, ids::ECC))), 0);
    assert_eq!(rc_of(&t.execute(0, &parms(ids::NIST_P384, ids::ECC))), 0);
    assert_eq!(rc_of(&t.execute(0, &parms(ids::NIST_P521, ids::ECC))), 0);
    for curve in [
        ids::NIST_P192,
        ids::NIST_P224,
        ids::BN_P256,
        ids::BN_P638,
        ids::SM2_P256,
    ] {
        assert_eq!(rc_of(&t.execute(0, &parms(curve, ids::ECC))), 0);
    }
    // Unassigned curves.
    for curve in [0x0012, 0x0021] {
        assert_eq!(
            rc_of(&t.execute(0, &parms(curve, ids::ECC))),
            rc::CURVE + rc::P + rc::N1
        );
    }
    // TPM_ALG_AES is no object type.
    assert_eq!(
        rc_of(&t.execute(0, &parms(ids::NIST_P256, ids::AES))),
        rc::TYPE + rc::P + rc::N1
    );
}

/// TPM2_TestParms of symmetric-cipher and keyed-hash parameters: the AES key
/// sizes and modes, the HMAC hashes; refused with each field's code.
#[test]
fn test_parms_checks_symcipher_and_keyedhash_parameters() {
    let mut t = started();
    let mut run = |fields: &[u16]| {
        let mut w = Writer::new();
        for f in fields {
            w.u16(*f);
        }
        rc_of(&t.execute(0, &command(cc::TEST_PARMS, &[], &[], &w.buf)))
    };
    let (sym, kh, null) = (ids::SYMCIPHER, ids::KEYEDHASH, crate::defs::alg::NULL);
    let p1 = rc::P + rc::N1;
    for mode in [
        ids::CFB,
        ids::CTR,
        ids::OFB,
        ids::CBC,
        ids::ECB,
        ids::CMAC,
        null,
    ] {
        assert_eq!(run(&[sym, ids::AES, 128, mode]), 0);
        assert_eq!(run(&[sym, ids::AES, 256, mode]), 0);
    }
    assert_eq!(run(&[sym, ids::AES, 192, ids::CFB]), rc::VALUE + p1);
    assert_eq!(run(&[sym, ids::AES, 128, ids::RSASSA]), rc::MODE + p1);
    assert_eq!(run(&[sym, null, 128, ids::CFB]), rc::SYMMETRIC + p1);
    assert_eq!(run(&[kh, null]), 0);
    assert_eq!(run(&[kh, crate::defs::alg::HMAC, HashAlg::Sha384.id()]), 0);
    assert_eq!(run(&[kh, crate::defs::alg::HMAC, null]), rc::HASH + p1);
    assert_eq!(run(&[kh, ids::ECDSA, HashAlg::Sha256.id()]), rc::VALUE + p1);
    // XOR (obfuscation, derivation parents) unmarshals but is not implemented.
    let xor = crate::defs::alg::XOR;
    assert_eq!(run(&[kh, xor, HashAlg::Sha256.id(), null]), rc::SCHEME + p1);
    assert_eq!(
        run(&[kh, xor, HashAlg::Sha256.id(), ids::CFB]),
        rc::KDF + p1
    );
    // Trailing bytes.
    assert_eq!(run(&[kh, null, 0]), rc::SIZE);
}

/// A storage primary (restricted decrypt, AES-128-CFB).
pub(crate) fn storage_template() -> Public {
    let mut p = template(
        attr::FIXED_TPM
            | attr::FIXED_PARENT
            | attr::SENSITIVE_DATA_ORIGIN
            | attr::USER_WITH_AUTH
            | attr::RESTRICTED
            | attr::DECRYPT,
    );
    p.symmetric = SymObject::AesCfb(128);
    p.scheme = None;
    p
}

fn sealed_template(attributes: u32) -> Public {
    Public {
        ty: ids::KEYEDHASH,
        name_alg: HashAlg::Sha256,
        attributes,
        auth_policy: Vec::new(),
        symmetric: SymObject::Null,
        scheme: None,
        x: Vec::new(),
        y: Vec::new(),
        exponent: 0,
        rsa_bits: 0,
        ecdaa_count: 0,
        curve: crate::public::Curve::P256,
    }
}

/// Create under `parent`; returns (rc, private, public).
pub(crate) fn create(
    t: &mut Tpm,
    parent: u32,
    p: &Public,
    auth: &[u8],
    data: &[u8],
) -> (u32, Vec<u8>, Vec<u8>) {
    let mut sens = Writer::new();
    sens.tpm2b(auth).tpm2b(data);
    let mut w = Writer::new();
    w.tpm2b(&sens.buf).tpm2b(&p.marshal()).tpm2b(&[]).u32(0);
    let r = t.execute(0, &command(cc::CREATE, &[parent], &[b""], &w.buf));
    if rc_of(&r) != 0 {
        return (rc_of(&r), Vec::new(), Vec::new());
    }
    let mut rd = Reader::new(params_of(&r));
    let private = rd.tpm2b(1024).unwrap().to_vec();
    let public = rd.tpm2b(1024).unwrap().to_vec();
    (0, private, public)
}

pub(crate) fn load(t: &mut Tpm, parent: u32, private: &[u8], public: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.tpm2b(private).tpm2b(public);
    t.execute(0, &command(cc::LOAD, &[parent], &[b""], &w.buf))
}

#[test]
fn create_load_and_unseal_children_of_a_storage_key() {
    let mut t = started();
    let (_, prim, _) = create_primary(&mut t, handle::OWNER, &storage_template(), b"", b"");
    let seal = sealed_template(attr::FIXED_TPM | attr::FIXED_PARENT | attr::USER_WITH_AUTH);
    let (rc0, private, public) = create(&mut t, prim, &seal, b"sp", b"the secret");
    assert_eq!(rc0, 0);
    let r = load(&mut t, prim, &private, &public);
    let h = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let name = Reader::new(rparams(&r)).tpm2b(64).unwrap().to_vec();
    assert_eq!(
        name,
        Public::unmarshal(&mut Reader::new(&public)).unwrap().name()
    );
    let u = t.execute(0, &command(cc::UNSEAL, &[h], &[b"sp"], &[]));
    assert_eq!(
        Reader::new(params_of(&u)).tpm2b(256).unwrap(),
        b"the secret"
    );
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::UNSEAL, &[h], &[b"no"], &[]))),
        rc::AUTH_FAIL + rc::S + rc::N1
    );
    flush(&mut t, h);
    // A tampered private area, or a public area it does not belong to.
    let mut bad = private.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(
        rc_of(&load(&mut t, prim, &bad, &public)),
        rc::INTEGRITY + rc::P + rc::N1
    );
    let (_, _, other_pub) = create(&mut t, prim, &seal, b"", b"other");
    assert_eq!(
        rc_of(&load(&mut t, prim, &private, &other_pub)),
        rc::INTEGRITY + rc::P + rc::N1
    );
    // Without userWithAuth the password cannot be used.
    let (_, p2, pub2) = create(
        &mut t,
        prim,
        &sealed_template(attr::FIXED_TPM | attr::FIXED_PARENT),
        b"",
        b"x",
    );
    let r = load(&mut t, prim, &p2, &pub2);
    let h2 = u32::from_be_bytes(r[10..14].try_into().unwrap());
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::UNSEAL, &[h2], &[b""], &[]))),
        rc::AUTH_UNAVAILABLE
    );
    flush(&mut t, h2);
    // A signing key is no storage parent, and cannot be unsealed.
    let (_, signer, _) = create_primary(&mut t, handle::OWNER, &template(SIGNER), b"", b"");
    assert_eq!(
        create(&mut t, signer, &seal, b"", b"s").0,
        rc::TYPE + rc::H + rc::N1
    );
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::UNSEAL, &[signer], &[b""], &[]))),
        rc::TYPE + rc::H + rc::N1
    );
    // Sealed data needs data (or sensitiveDataOrigin).
    assert_eq!(
        create(&mut t, prim, &seal, b"", b"").0,
        rc::ATTRIBUTES + rc::P + 2 * rc::N1
    );
}

#[test]
fn ecdh_zgen_multiplies_by_the_private_key() {
    let mut t = started();
    let mut p = template(
        attr::FIXED_TPM
            | attr::FIXED_PARENT
            | attr::SENSITIVE_DATA_ORIGIN
            | attr::USER_WITH_AUTH
            | attr::DECRYPT,
    );
    p.scheme = Some((ids::ECDH, HashAlg::Sha256));
    let (rc0, k, pubk) = create_primary(&mut t, handle::OWNER, &p, b"", b"");
    assert_eq!(rc0, 0);
    let kp = Public::unmarshal(&mut Reader::new(&pubk)).unwrap();
    // Our ephemeral key e: ZGen(e·G) must equal e·Q.
    let e = crate::public::derive_p256(|i| {
        HashAlg::Sha256
            .digest(&[&i.to_be_bytes(), b"e"])
            .as_bytes()
            .to_vec()
    });
    let mut ep = template(0);
    ep.set_point(&crate::public::EcPublic::P256(
        p256::PublicKey::from_secret_scalar(&e),
    ));
    let mut pt = Writer::new();
    pt.tpm2b(&ep.x).tpm2b(&ep.y);
    let mut w = Writer::new();
    w.tpm2b(&pt.buf);
    let r = t.execute(0, &command(cc::ECDH_ZGEN, &[k], &[b""], &w.buf));
    let mut rd = Reader::new(params_of(&r));
    let mut inner = Reader::new(rd.tpm2b(200).unwrap());
    let zx = inner.tpm2b(32).unwrap();
    assert_eq!(
        Some(zx.to_vec()),
        crate::public::ecdh_x(&crate::public::EcScalar::P256(e), &kp.x, &kp.y)
    );
    // A point off the curve; a signing key.
    let mut bad = Writer::new();
    let mut y = ep.y.clone();
    y[0] ^= 1;
    bad.tpm2b(&ep.x).tpm2b(&y);
    let mut w = Writer::new();
    w.tpm2b(&bad.buf);
    let r = t.execute(0, &command(cc::ECDH_ZGEN, &[k], &[b""], &w.buf));
    assert_eq!(rc_of(&r), rc::ECC_POINT + rc::P + rc::N1);
}

#[test]
fn quote_signs_the_attestation_over_the_selected_pcrs() {
    let mut t = started();
    let (_, k, pubk) = create_primary(
        &mut t,
        handle::ENDORSEMENT,
        &template(SIGNER | attr::RESTRICTED),
        b"",
        b"",
    );
    let mut w = Writer::new();
    w.tpm2b(b"nonce")
        .u16(crate::defs::alg::NULL)
        .u32(1)
        .pcr_selection(HashAlg::Sha256, 0b101);
    let r = t.execute(0, &command(cc::QUOTE, &[k], &[b""], &w.buf));
    let mut rd = Reader::new(params_of(&r));
    let attest = rd.tpm2b(1024).unwrap().to_vec();
    assert_eq!(rd.u16().unwrap(), ids::ECDSA);
    assert_eq!(rd.u16().unwrap(), HashAlg::Sha256.id());
    let sig_r = rd.tpm2b(32).unwrap().to_vec();
    let sig_s = rd.tpm2b(32).unwrap().to_vec();
    let pk = Public::unmarshal(&mut Reader::new(&pubk))
        .unwrap()
        .point()
        .unwrap();
    let digest = HashAlg::Sha256.digest(&[&attest]);
    assert!(crate::public::ecdsa_verify(
        &pk,
        digest.as_bytes(),
        &sig_r,
        &sig_s
    ));
    let mut a = Reader::new(&attest);
    assert_eq!(a.u32().unwrap(), crate::defs::TPM_GENERATED_VALUE);
    assert_eq!(a.u16().unwrap(), 0x8018);
    a.tpm2b(64).unwrap();
    assert_eq!(a.tpm2b(64).unwrap(), b"nonce");
    a.bytes(8 + 4 + 4 + 1 + 8).unwrap();
    a.pcr_selection_list().unwrap();
    let pcrs = HashAlg::Sha256.digest(&[&[0u8; 32], &[0u8; 32]]);
    assert_eq!(a.tpm2b(64).unwrap(), pcrs.as_bytes());
}

#[test]
fn hmac_keys_one_shot_and_sequences_match_rfc_2104() {
    let mut t = started();
    let key = b"0123456789abcdef0123456789abcdef";
    let seed = [7u8; 32];
    let mut p = sealed_template(attr::USER_WITH_AUTH | attr::SIGN);
    p.scheme = Some((crate::defs::alg::HMAC, HashAlg::Sha256));
    p.x = HashAlg::Sha256.digest(&[&seed, key]).as_bytes().to_vec();
    let mut sens = Writer::new();
    sens.u16(ids::KEYEDHASH).tpm2b(b"").tpm2b(&seed).tpm2b(key);
    let mut w = Writer::new();
    w.tpm2b(&sens.buf).tpm2b(&p.marshal()).u32(handle::NULL);
    let r = t.execute(0, &command(cc::LOAD_EXTERNAL, &[], &[], &w.buf));
    let k = u32::from_be_bytes(r[10..14].try_into().unwrap());
    assert_eq!(rc_of(&r), 0);
    let mut w = Writer::new();
    w.tpm2b(b"message").u16(crate::defs::alg::NULL);
    let r = t.execute(0, &command(cc::HMAC, &[k], &[b""], &w.buf));
    let want = HashAlg::Sha256.hmac(key, &[b"message"]);
    assert_eq!(
        Reader::new(params_of(&r)).tpm2b(64).unwrap(),
        want.as_bytes()
    );
    // A different hash than the key's scheme is refused.
    let mut w = Writer::new();
    w.tpm2b(b"message").u16(HashAlg::Sha1.id());
    let r = t.execute(0, &command(cc::HMAC, &[k], &[b""], &w.buf));
    assert_eq!(rc_of(&r), rc::VALUE + rc::P + 2 * rc::N1);
    // The same through HMAC_Start / SequenceUpdate / SequenceComplete, 3 KiB.
    let mut w = Writer::new();
    w.tpm2b(b"sq").u16(crate::defs::alg::NULL);
    let r = t.execute(0, &command(cc::HMAC_START, &[k], &[b""], &w.buf));
    let s = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let data: Vec<u8> = (0..3072u32).map(|i| (i * 7) as u8).collect();
    for c in data.chunks(1024) {
        let mut w = Writer::new();
        w.tpm2b(c);
        assert_eq!(
            rc_of(&t.execute(0, &command(cc::SEQUENCE_UPDATE, &[s], &[b"sq"], &w.buf))),
            0
        );
    }
    let mut w = Writer::new();
    w.tpm2b(b"end").u32(handle::OWNER);
    let r = t.execute(0, &command(cc::SEQUENCE_COMPLETE, &[s], &[b"sq"], &w.buf));
    let mut rd = Reader::new(params_of(&r));
    let want = HashAlg::Sha256.hmac(key, &[&data, b"end"]);
    assert_eq!(rd.tpm2b(64).unwrap(), want.as_bytes());
    // No hash ticket for an HMAC.
    assert_eq!(rd.u16().unwrap(), st::HASHCHECK);
    assert_eq!(rd.u32().unwrap(), handle::NULL);
    // An ECC key is no HMAC key.
    let (_, e, _) = create_primary(&mut t, handle::OWNER, &template(SIGNER), b"", b"");
    let mut w = Writer::new();
    w.tpm2b(b"m").u16(HashAlg::Sha256.id());
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::HMAC, &[e], &[b""], &w.buf))),
        rc::TYPE + rc::H + rc::N1
    );
}

#[test]
fn encrypt_decrypt_both_forms_agree_with_aes_cfb() {
    let mut t = started();
    let key = [0x42u8; 16];
    let seed = [1u8; 32];
    let mut p = sealed_template(attr::USER_WITH_AUTH | attr::SIGN | attr::DECRYPT);
    p.ty = ids::SYMCIPHER;
    p.symmetric = SymObject::AesCfb(128);
    p.x = HashAlg::Sha256.digest(&[&seed, &key]).as_bytes().to_vec();
    let mut sens = Writer::new();
    sens.u16(ids::SYMCIPHER).tpm2b(b"").tpm2b(&seed).tpm2b(&key);
    let mut w = Writer::new();
    w.tpm2b(&sens.buf).tpm2b(&p.marshal()).u32(handle::NULL);
    let r = t.execute(0, &command(cc::LOAD_EXTERNAL, &[], &[], &w.buf));
    assert_eq!(rc_of(&r), 0);
    let k = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let iv = [3u8; 16];
    let data: Vec<u8> = (0..50u8).collect();
    let mut want = data.clone();
    crate::session::aes_cfb(&key, &iv, &mut want, true);
    let mut w2 = Writer::new();
    w2.tpm2b(&data).u8(0).u16(crate::defs::alg::NULL).tpm2b(&iv);
    let r2 = t.execute(0, &command(cc::ENCRYPT_DECRYPT2, &[k], &[b""], &w2.buf));
    let mut w1 = Writer::new();
    w1.u8(0).u16(ids::CFB).tpm2b(&iv).tpm2b(&data);
    let r1 = t.execute(0, &command(cc::ENCRYPT_DECRYPT, &[k], &[b""], &w1.buf));
    assert_eq!(Reader::new(params_of(&r2)).tpm2b(1024).unwrap(), &want[..]);
    assert_eq!(params_of(&r1), params_of(&r2));
    // A mode other than the key's is refused; so is an IV of the wrong size.
    let mut w = Writer::new();
    w.u8(0).u16(0x0042).tpm2b(&iv).tpm2b(&data);
    let r = t.execute(0, &command(cc::ENCRYPT_DECRYPT, &[k], &[b""], &w.buf));
    assert_eq!(rc_of(&r), rc::MODE + rc::P + 2 * rc::N1);
    let mut w = Writer::new();
    w.tpm2b(&data).u8(1).u16(ids::CFB).tpm2b(&[0; 8]);
    let r = t.execute(0, &command(cc::ENCRYPT_DECRYPT2, &[k], &[b""], &w.buf));
    assert_eq!(rc_of(&r), rc::SIZE + rc::P + 4 * rc::N1);
}

/// A symmetric key of `symmetric` (AES-128, key bytes 0x42…) loaded with
/// LoadExternal; returns its handle.
fn load_aes_key(t: &mut Tpm, symmetric: SymObject) -> u32 {
    let key = [0x42u8; 16];
    let seed = [1u8; 32];
    let mut p = sealed_template(attr::USER_WITH_AUTH | attr::SIGN | attr::DECRYPT);
    p.ty = ids::SYMCIPHER;
    p.symmetric = symmetric;
    p.x = HashAlg::Sha256.digest(&[&seed, &key]).as_bytes().to_vec();
    let mut sens = Writer::new();
    sens.u16(ids::SYMCIPHER).tpm2b(b"").tpm2b(&seed).tpm2b(&key);
    let mut w = Writer::new();
    w.tpm2b(&sens.buf).tpm2b(&p.marshal()).u32(handle::NULL);
    let r = t.execute(0, &command(cc::LOAD_EXTERNAL, &[], &[], &w.buf));
    assert_eq!(rc_of(&r), 0);
    u32::from_be_bytes(r[10..14].try_into().unwrap())
}

/// TPM2_EncryptDecrypt2 of `data` with key `k`: (rc, outData, ivOut).
fn encrypt_decrypt2(
    t: &mut Tpm,
    k: u32,
    data: &[u8],
    decrypt: bool,
    mode: u16,
    iv: &[u8],
) -> (u32, Vec<u8>, Vec<u8>) {
    let mut w = Writer::new();
    w.tpm2b(data).u8(decrypt as u8).u16(mode).tpm2b(iv);
    let r = t.execute(0, &command(cc::ENCRYPT_DECRYPT2, &[k], &[b""], &w.buf));
    if rc_of(&r) != 0 {
        return (rc_of(&r), Vec::new(), Vec::new());
    }
    let mut rd = Reader::new(params_of(&r));
    let out = rd.tpm2b(1024).unwrap().to_vec();
    (0, out, rd.tpm2b(16).unwrap().to_vec())
}

/// CTR, OFB, CBC and ECB through TPM2_EncryptDecrypt2: with a key of no
/// fixed mode, each mode round-trips, two calls chained through ivOut equal
/// one call (CTR/OFB over a partial block too), and the IV and length rules
/// hold (ECB takes no IV, CBC/ECB whole blocks); a key fixed to CBC takes
/// CBC or NULL and refuses CTR; the key's public area round-trips its mode.
#[test]
fn encrypt_decrypt_in_ctr_ofb_cbc_and_ecb_modes() {
    let mut t = started();
    let k = load_aes_key(&mut t, SymObject::AesAnyMode(128));
    let data: Vec<u8> = (0..64u8).collect();
    for mode in [ids::CTR, ids::OFB, ids::CBC, ids::ECB] {
        let iv: &[u8] = if mode == ids::ECB { &[] } else { &[3; 16] };
        let (rc0, c, iv_out) = encrypt_decrypt2(&mut t, k, &data, false, mode, iv);
        assert_eq!(rc0, 0, "{mode:#x}");
        assert_ne!(c, data);
        assert_eq!(iv_out.len(), iv.len());
        let (_, p, iv_back) = encrypt_decrypt2(&mut t, k, &c, true, mode, iv);
        assert_eq!(p, data, "{mode:#x}");
        assert_eq!(iv_back, iv_out, "{mode:#x}: ivOut agrees both ways");
        // Chained: 32 (or, for the stream modes, 20) bytes then the rest.
        let split = if matches!(mode, ids::CTR | ids::OFB) {
            20
        } else {
            32
        };
        let (_, a, iv1) = encrypt_decrypt2(&mut t, k, &data[..split], false, mode, iv);
        let (_, b, iv2) = encrypt_decrypt2(&mut t, k, &data[split..], false, mode, &iv1);
        if matches!(mode, ids::CTR | ids::OFB) {
            // A partial block ends the first call: the stream restarts at a
            // block boundary, so only the first call's bytes match.
            assert_eq!(a, c[..split]);
            assert_eq!(
                iv1,
                encrypt_decrypt2(&mut t, k, &data[..32], false, mode, iv).2
            );
        } else {
            assert_eq!([a, b].concat(), c, "{mode:#x}");
            assert_eq!(iv2, iv_out);
        }
    }
    // Whole blocks chain exactly in the stream modes too.
    for mode in [ids::CTR, ids::OFB] {
        let (_, c, iv_out) = encrypt_decrypt2(&mut t, k, &data, false, mode, &[3; 16]);
        let (_, a, iv1) = encrypt_decrypt2(&mut t, k, &data[..32], false, mode, &[3; 16]);
        let (_, b, iv2) = encrypt_decrypt2(&mut t, k, &data[32..], false, mode, &iv1);
        assert_eq!([a, b].concat(), c);
        assert_eq!(iv2, iv_out);
    }
    let p4 = rc::P + 4 * rc::N1;
    assert_eq!(
        encrypt_decrypt2(&mut t, k, &data, false, ids::ECB, &[3; 16]).0,
        rc::SIZE + p4
    );
    assert_eq!(
        encrypt_decrypt2(&mut t, k, &data, false, ids::CBC, &[]).0,
        rc::SIZE + p4
    );
    for mode in [ids::CBC, ids::ECB] {
        let iv: &[u8] = if mode == ids::ECB { &[] } else { &[3; 16] };
        assert_eq!(
            encrypt_decrypt2(&mut t, k, &data[..20], false, mode, iv).0,
            rc::SIZE + rc::P + rc::N1
        );
    }
    // A key fixed to CBC.
    let kc = load_aes_key(&mut t, SymObject::AesMode(128, ids::CBC));
    let cbc = encrypt_decrypt2(&mut t, k, &data, false, ids::CBC, &[3; 16]);
    let with_null = encrypt_decrypt2(&mut t, kc, &data, false, crate::defs::alg::NULL, &[3; 16]);
    assert_eq!(with_null, cbc);
    assert_eq!(
        encrypt_decrypt2(&mut t, kc, &data, false, ids::CBC, &[3; 16]),
        cbc
    );
    assert_eq!(
        encrypt_decrypt2(&mut t, kc, &data, false, ids::CTR, &[3; 16]).0,
        rc::MODE + rc::P + 3 * rc::N1
    );
    let r = t.execute(0, &command(cc::READ_PUBLIC, &[kc], &[], &[]));
    let public = Public::unmarshal_2b(&mut Reader::new(params_of(&r))).unwrap();
    assert_eq!(public.symmetric, SymObject::AesMode(128, ids::CBC));
}

/// AES-CMAC through TPM2_MAC and TPM2_MAC_Start/SequenceUpdate/
/// SequenceComplete (the HMAC command codes) with a CMAC key — the RFC 4493
/// §4 tags, in one call or split across updates — and with a key of no
/// mode naming CMAC; a CFB key refuses CMAC named (TPM_RC_VALUE: not its
/// mode) and its own mode (TPM_RC_SCHEME: no MAC), a CMAC key does not
/// encrypt (TPM_RC_MODE), and the result gets no hash ticket.
#[test]
fn cmac_keys_mac_in_one_call_and_in_sequences() {
    let unhex = |s: &str| -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    };
    let mut t = started();
    let key = unhex("2b7e151628aed2a6abf7158809cf4f3c");
    let seed = [1u8; 32];
    let load = |t: &mut Tpm, symmetric: SymObject| {
        let mut p = sealed_template(attr::USER_WITH_AUTH | attr::SIGN);
        p.ty = ids::SYMCIPHER;
        p.symmetric = symmetric;
        p.x = HashAlg::Sha256.digest(&[&seed, &key]).as_bytes().to_vec();
        let mut sens = Writer::new();
        sens.u16(ids::SYMCIPHER).tpm2b(b"").tpm2b(&seed).tpm2b(&key);
        let mut w = Writer::new();
        w.tpm2b(&sens.buf).tpm2b(&p.marshal()).u32(handle::NULL);
        let r = t.execute(0, &command(cc::LOAD_EXTERNAL, &[], &[], &w.buf));
        assert_eq!(rc_of(&r), 0);
        u32::from_be_bytes(r[10..14].try_into().unwrap())
    };
    let mac = |t: &mut Tpm, k: u32, data: &[u8], scheme: u16| {
        let mut w = Writer::new();
        w.tpm2b(data).u16(scheme);
        let r = t.execute(0, &command(cc::HMAC, &[k], &[b""], &w.buf));
        if rc_of(&r) != 0 {
            return Err(rc_of(&r));
        }
        Ok(Reader::new(params_of(&r)).tpm2b(64).unwrap().to_vec())
    };
    let k = load(&mut t, SymObject::AesMode(128, ids::CMAC));
    let m64 = unhex(concat!(
        "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51",
        "30c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710"
    ));
    for (m, tag) in [
        (&[][..], "bb1d6929e95937287fa37d129b756746"),
        (&m64[..16], "070a16b46b4d4144f79bdd9dd04a287c"),
        (&m64[..40], "dfa66747de9ae63030ca32611497c827"),
        (&m64[..], "51f0bebf7e3b9d92fc49741779363cfe"),
    ] {
        assert_eq!(mac(&mut t, k, m, ids::CMAC), Ok(unhex(tag)));
        assert_eq!(mac(&mut t, k, m, crate::defs::alg::NULL), Ok(unhex(tag)));
    }
    // A sequence: 40 bytes in pieces of 7, 33 and the rest at completion.
    let mut w = Writer::new();
    w.tpm2b(b"sq").u16(ids::CMAC);
    let r = t.execute(0, &command(cc::HMAC_START, &[k], &[b""], &w.buf));
    assert_eq!(rc_of(&r), 0);
    let s = u32::from_be_bytes(r[10..14].try_into().unwrap());
    for c in [&m64[..7], &m64[7..40]] {
        let mut w = Writer::new();
        w.tpm2b(c);
        assert_eq!(
            rc_of(&t.execute(0, &command(cc::SEQUENCE_UPDATE, &[s], &[b"sq"], &w.buf))),
            0
        );
    }
    let mut w = Writer::new();
    w.tpm2b(&m64[40..]).u32(handle::OWNER);
    let r = t.execute(0, &command(cc::SEQUENCE_COMPLETE, &[s], &[b"sq"], &w.buf));
    let mut rd = Reader::new(params_of(&r));
    assert_eq!(
        rd.tpm2b(64).unwrap(),
        unhex("51f0bebf7e3b9d92fc49741779363cfe")
    );
    assert_eq!(rd.u16().unwrap(), st::HASHCHECK);
    assert_eq!(rd.u32().unwrap(), handle::NULL);
    // The CMAC key names its MAC: another is refused; it does not encrypt.
    assert_eq!(
        mac(&mut t, k, b"x", HashAlg::Sha256.id()),
        Err(rc::VALUE + rc::P + 2 * rc::N1)
    );
    let mut w = Writer::new();
    w.tpm2b(&[0; 16])
        .u8(0)
        .u16(crate::defs::alg::NULL)
        .tpm2b(&[0; 16]);
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::ENCRYPT_DECRYPT2, &[k], &[b""], &w.buf))),
        rc::MODE + rc::H + rc::N1
    );
    flush(&mut t, k);
    // A key of no mode MACs with CMAC when asked; a CFB key does not.
    let any = load(&mut t, SymObject::AesAnyMode(128));
    assert_eq!(
        mac(&mut t, any, &m64[..16], ids::CMAC),
        Ok(unhex("070a16b46b4d4144f79bdd9dd04a287c"))
    );
    assert_eq!(
        mac(&mut t, any, &m64[..16], crate::defs::alg::NULL),
        Err(rc::VALUE + rc::P + 2 * rc::N1)
    );
    flush(&mut t, any);
    let cfb = load(&mut t, SymObject::AesCfb(128));
    assert_eq!(
        mac(&mut t, cfb, b"x", ids::CMAC),
        Err(rc::VALUE + rc::P + 2 * rc::N1)
    );
    assert_eq!(
        mac(&mut t, cfb, b"x", crate::defs::alg::NULL),
        Err(rc::SCHEME + rc::P + 2 * rc::N1)
    );
}

#[test]
fn policy_authorize_accepts_a_policy_signed_by_the_named_key() {
    let mut t = started();
    let (_, k, pubk) = create_primary(&mut t, handle::OWNER, &template(SIGNER), b"", b"");
    let key_name = Public::unmarshal(&mut Reader::new(&pubk)).unwrap().name();
    // A policy session whose digest is the approved policy (PolicyAuthValue).
    let mut w = Writer::new();
    w.tpm2b(&[1; 16])
        .tpm2b(&[])
        .u8(1)
        .u16(0x10)
        .u16(HashAlg::Sha256.id());
    let r = t.execute(
        0,
        &command(
            cc::START_AUTH_SESSION,
            &[handle::NULL, handle::NULL],
            &[],
            &w.buf,
        ),
    );
    let s = u32::from_be_bytes(r[10..14].try_into().unwrap());
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::POLICY_AUTH_VALUE, &[s], &[], &[]))),
        0
    );
    let approved = HashAlg::Sha256.digest(&[&[0u8; 32], &cc::POLICY_AUTH_VALUE.to_be_bytes()]);
    // The key signs H(approved || policyRef); VerifySignature yields the ticket.
    let a_hash = HashAlg::Sha256.digest(&[approved.as_bytes(), b"ref"]);
    let sig = params_of(&sign(&mut t, k, b"", a_hash.as_bytes(), None)).to_vec();
    let v = verify(&mut t, k, a_hash.as_bytes(), &sig);
    let ticket = params_of(&v).to_vec();
    let authorize = |t: &mut Tpm, ticket: &[u8]| {
        let mut w = Writer::new();
        w.tpm2b(approved.as_bytes())
            .tpm2b(b"ref")
            .tpm2b(&key_name)
            .bytes(ticket);
        t.execute(0, &command(cc::POLICY_AUTHORIZE, &[s], &[], &w.buf))
    };
    let mut forged = ticket.clone();
    let last = forged.len() - 1;
    forged[last] ^= 1;
    assert_eq!(
        rc_of(&authorize(&mut t, &forged)),
        rc::TICKET + rc::P + 4 * rc::N1
    );
    assert_eq!(rc_of(&authorize(&mut t, &ticket)), 0);
    let step = HashAlg::Sha256.digest(&[&[0u8; 32], &0x16Au32.to_be_bytes(), &key_name]);
    let want = HashAlg::Sha256.digest(&[step.as_bytes(), b"ref"]);
    let r = t.execute(0, &command(cc::POLICY_GET_DIGEST, &[s], &[], &[]));
    assert_eq!(
        Reader::new(params_of(&r)).tpm2b(64).unwrap(),
        want.as_bytes()
    );
    // Now the digest is no longer the approved one.
    assert_eq!(
        rc_of(&authorize(&mut t, &ticket)),
        rc::VALUE + rc::P + rc::N1
    );
}

#[test]
fn policy_locality_limits_where_the_policy_holds() {
    let mut t = started();
    let mut w = Writer::new();
    w.tpm2b(&[1; 16])
        .tpm2b(&[])
        .u8(1)
        .u16(0x10)
        .u16(HashAlg::Sha256.id());
    let r = t.execute(
        0,
        &command(
            cc::START_AUTH_SESSION,
            &[handle::NULL, handle::NULL],
            &[],
            &w.buf,
        ),
    );
    let s = u32::from_be_bytes(r[10..14].try_into().unwrap());
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::POLICY_LOCALITY, &[s], &[], &[0b110]))),
        0
    );
    assert_eq!(
        rc_of(&t.execute(0, &command(cc::POLICY_LOCALITY, &[s], &[], &[0b001]))),
        rc::RANGE + rc::P + rc::N1
    );
    let r = t.execute(0, &command(cc::POLICY_GET_DIGEST, &[s], &[], &[]));
    let pol = Reader::new(params_of(&r)).tpm2b(64).unwrap().to_vec();
    let want = HashAlg::Sha256.digest(&[&[0u8; 32], &0x16Fu32.to_be_bytes(), &[0b110]]);
    assert_eq!(pol, want.as_bytes());
    // ownerPolicy := that; the session authorizes only at localities 1 and 2.
    let mut sp = Writer::new();
    sp.tpm2b(&pol).u16(HashAlg::Sha256.id());
    assert_eq!(
        rc_of(&t.execute(
            0,
            &command(cc::SET_PRIMARY_POLICY, &[handle::OWNER], &[b""], &sp.buf)
        )),
        0
    );
    let mut cmdb = Writer::new();
    cmdb.u16(st::SESSIONS)
        .u32(0)
        .u32(cc::HIERARCHY_CHANGE_AUTH)
        .u32(handle::OWNER);
    let mut a = Writer::new();
    a.u32(s).tpm2b(&[]).u8(1).tpm2b(&[]);
    cmdb.u32(a.len() as u32).bytes(&a.buf).tpm2b(&[]);
    let n = cmdb.len() as u32;
    cmdb.patch_u32(2, n);
    assert_eq!(rc_of(&t.execute(0, &cmdb.buf)), rc::LOCALITY);
    assert_eq!(rc_of(&t.execute(1, &cmdb.buf)), 0);
}

/// CreateLoaded; returns (rc, handle, outPrivate, outPublic, name).
fn create_loaded(
    t: &mut Tpm,
    parent: u32,
    parent_auth: &[u8],
    p: &Public,
    auth: &[u8],
    data: &[u8],
) -> (u32, u32, Vec<u8>, Vec<u8>, Vec<u8>) {
    let mut sens = Writer::new();
    sens.tpm2b(auth).tpm2b(data);
    let mut w = Writer::new();
    w.tpm2b(&sens.buf).tpm2b(&p.marshal());
    let r = t.execute(
        0,
        &command(cc::CREATE_LOADED, &[parent], &[parent_auth], &w.buf),
    );
    if rc_of(&r) != 0 {
        return (rc_of(&r), 0, Vec::new(), Vec::new(), Vec::new());
    }
    let h = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let mut rd = Reader::new(rparams(&r));
    let private = rd.tpm2b(1024).unwrap().to_vec();
    let public = rd.tpm2b(1024).unwrap().to_vec();
    let name = rd.tpm2b(128).unwrap().to_vec();
    assert_eq!(rd.remaining(), 0);
    (0, h, private, public, name)
}

#[test]
fn create_loaded_makes_primaries_and_loadable_children() {
    let mut t = started();
    // Under a hierarchy: the same primary CreatePrimary derives, no private.
    let tpl = template(SIGNER);
    let (rc0, p1, _) = create_primary(&mut t, handle::OWNER, &tpl, b"", b"");
    assert_eq!(rc0, 0);
    let (rc1, p2, private, public, name) =
        create_loaded(&mut t, handle::OWNER, b"", &tpl, b"", b"");
    assert_eq!(rc1, 0);
    assert!(private.is_empty());
    let r = t.execute(0, &command(cc::READ_PUBLIC, &[p1], &[], &[]));
    let mut rd = Reader::new(params_of(&r));
    assert_eq!(rd.tpm2b(512).unwrap(), &public[..]);
    assert_eq!(rd.tpm2b(128).unwrap(), &name[..]);
    flush(&mut t, p1);
    flush(&mut t, p2);
    // Under a storage key: a loaded child whose outPrivate loads again and
    // which signs (its auth is the sensitive-create auth).
    let (_, parent, _) = create_primary(&mut t, handle::OWNER, &storage_template(), b"", b"");
    let (rc2, k, private, public, name) = create_loaded(&mut t, parent, b"", &tpl, b"pw", b"");
    assert_eq!(rc2, 0);
    assert!(!private.is_empty());
    let digest = HashAlg::Sha256.digest(&[b"m"]);
    assert_eq!(rc_of(&sign(&mut t, k, b"pw", digest.as_bytes(), None)), 0);
    assert_eq!(
        rc_of(&sign(&mut t, k, b"no", digest.as_bytes(), None)),
        rc::AUTH_FAIL + rc::S + rc::N1
    );
    let r = load(&mut t, parent, &private, &public);
    assert_eq!(rc_of(&r), 0);
    assert_eq!(Reader::new(rparams(&r)).tpm2b(128).unwrap(), &name[..]);
    // A signing key is no parent; a bad template is parameter 2.
    assert_eq!(
        create_loaded(&mut t, k, b"pw", &tpl, b"", b"").0,
        rc::TYPE + rc::H + rc::N1
    );
    let mut bad = template(SIGNER | attr::DECRYPT | attr::RESTRICTED);
    bad.scheme = None;
    assert_ne!(create_loaded(&mut t, parent, b"", &bad, b"", b"").0, 0);
    assert_eq!(
        create_loaded(&mut t, parent, b"", &bad, b"", b"").0 & (rc::P | 0xF00),
        rc::P + 2 * rc::N1
    );
}

#[test]
fn ecc_parameters_describe_the_nist_curves_and_refuse_other_curves() {
    use crate::commands::signing::p256_domain as d;
    let mut t = started();
    let r = t.execute(
        0,
        &command(cc::ECC_PARAMETERS, &[], &[], &ids::NIST_P256.to_be_bytes()),
    );
    assert_eq!(rc_of(&r), 0);
    let mut rd = Reader::new(params_of(&r));
    assert_eq!(rd.u16().unwrap(), ids::NIST_P256);
    assert_eq!(rd.u16().unwrap(), 256);
    assert_eq!(rd.u16().unwrap(), crate::defs::alg::KDF1_SP800_56A);
    assert_eq!(rd.u16().unwrap(), HashAlg::Sha256.id());
    assert_eq!(rd.u16().unwrap(), crate::defs::alg::NULL);
    for v in [&d::P[..], &d::A, &d::B, &d::GX, &d::GY, &d::N, &d::H] {
        assert_eq!(rd.tpm2b(64).unwrap(), v);
    }
    assert_eq!(rd.remaining(), 0);
    // NIST P-384: its size, KDF hash and domain (checked against swtpm by
    // the differential test).
    let r = t.execute(0, &command(cc::ECC_PARAMETERS, &[], &[], &[0, 4]));
    let mut rd = Reader::new(params_of(&r));
    assert_eq!(rd.u16().unwrap(), ids::NIST_P384);
    assert_eq!(rd.u16().unwrap(), 384);
    assert_eq!(rd.u16().unwrap(), crate::defs::alg::KDF1_SP800_56A);
    assert_eq!(rd.u16().unwrap(), HashAlg::Sha384.id());
    assert_eq!(rd.u16().unwrap(), crate::defs::alg::NULL);
    {
        use crate::commands::signing::p384_domain as d;
        for v in [&d::P[..], &d::A, &d::B, &d::GX, &d::GY, &d::N, &d::H] {
            assert_eq!(rd.tpm2b(64).unwrap(), v);
        }
        // G is on the curve: gy² = gx³ + a·gx + b (mod p).
        use num_bigint_dig::BigUint;
        let [p, a, b, gx, gy] =
            [&d::P[..], &d::A, &d::B, &d::GX, &d::GY].map(BigUint::from_bytes_be);
        assert_eq!((&gy * &gy) % &p, (&gx * &gx * &gx + &a * &gx + &b) % &p);
    }
    // NIST P-521: 521 bits, SHA-512, its 66-byte domain.
    let r = t.execute(0, &command(cc::ECC_PARAMETERS, &[], &[], &[0, 5]));
    let mut rd = Reader::new(params_of(&r));
    assert_eq!(rd.u16().unwrap(), ids::NIST_P521);
    assert_eq!(rd.u16().unwrap(), 521);
    assert_eq!(rd.u16().unwrap(), crate::defs::alg::KDF1_SP800_56A);
    assert_eq!(rd.u16().unwrap(), HashAlg::Sha512.id());
    assert_eq!(rd.u16().unwrap(), crate::defs::alg::NULL);
    {
        use crate::commands::signing::p521_domain as d;
        for v in [d::P, d::A, d::B, d::GX, d::GY, d::N, d::H] {
            assert_eq!(rd.tpm2b(66).unwrap(), d::bytes(v));
        }
    }
    assert_eq!(rd.remaining(), 0);
    // BN P-256: 256 bits, no KDF, y² = x³ + 3 with G = (1, 2).
    let r = t.execute(0, &command(cc::ECC_PARAMETERS, &[], &[], &[0, 0x10]));
    let mut rd = Reader::new(params_of(&r));
    assert_eq!(rd.u16().unwrap(), ids::BN_P256);
    assert_eq!(rd.u16().unwrap(), 256);
    assert_eq!(rd.u16().unwrap(), crate::defs::alg::NULL);
    assert_eq!(rd.u16().unwrap(), crate::defs::alg::NULL);
    {
        use crate::commands::signing::bn_p256_domain as d;
        use crate::commands::signing::p521_domain::bytes;
        for v in [d::P, d::A, d::B, d::GX, d::GY, d::N] {
            assert_eq!(rd.tpm2b(32).unwrap(), bytes(v));
        }
        assert_eq!(bytes(d::A), [0]);
        assert_eq!(rd.tpm2b(32).unwrap(), [1]);
        assert_eq!(bytes(d::GY), [[0u8; 31].as_slice(), &[2]].concat());
    }
    assert_eq!(rd.remaining(), 0);
    // BN P-638: 638 bits in 80 bytes, no KDF, y² = x³ + 257.
    let r = t.execute(0, &command(cc::ECC_PARAMETERS, &[], &[], &[0, 0x11]));
    let mut rd = Reader::new(params_of(&r));
    assert_eq!(rd.u16().unwrap(), ids::BN_P638);
    assert_eq!(rd.u16().unwrap(), 638);
    assert_eq!(rd.u16().unwrap(), crate::defs::alg::NULL);
    assert_eq!(rd.u16().unwrap(), crate::defs::alg::NULL);
    {
        use crate::commands::signing::bn_p638_domain as d;
        use crate::commands::signing::p521_domain::bytes;
        for v in [d::P, d::A, d::B, d::GX, d::GY, d::N] {
            assert_eq!(rd.tpm2b(80).unwrap(), bytes(v));
        }
        assert_eq!(rd.tpm2b(80).unwrap(), [1]);
        assert_eq!(bytes(d::GX).len(), 80);
    }
    assert_eq!(rd.remaining(), 0);
    // An unassigned curve.
    let r = t.execute(0, &command(cc::ECC_PARAMETERS, &[], &[], &[0, 0x12]));
    assert_eq!(rc_of(&r), rc::CURVE + rc::P + rc::N1);
    let r = t.execute(0, &command(cc::ECC_PARAMETERS, &[], &[], &[0, 3, 0]));
    assert_eq!(rc_of(&r), rc::SIZE);
}

#[test]
fn ecdh_key_gen_agrees_with_ecdh_zgen() {
    let mut t = started();
    let mut p = template(
        attr::FIXED_TPM
            | attr::FIXED_PARENT
            | attr::SENSITIVE_DATA_ORIGIN
            | attr::USER_WITH_AUTH
            | attr::DECRYPT,
    );
    p.scheme = Some((ids::ECDH, HashAlg::Sha256));
    let (rc0, k, _) = create_primary(&mut t, handle::OWNER, &p, b"", b"");
    assert_eq!(rc0, 0);
    // No authorization: the key's public part only.
    let r = t.execute(0, &command(cc::ECDH_KEY_GEN, &[k], &[], &[]));
    assert_eq!(rc_of(&r), 0);
    let mut rd = Reader::new(params_of(&r));
    let z = rd.tpm2b(200).unwrap().to_vec();
    let pub_point = rd.tpm2b(200).unwrap().to_vec();
    assert_eq!(rd.remaining(), 0);
    // ZGen with the private key over pubPoint is zPoint.
    let mut w = Writer::new();
    w.tpm2b(&pub_point);
    let r = t.execute(0, &command(cc::ECDH_ZGEN, &[k], &[b""], &w.buf));
    assert_eq!(rc_of(&r), 0);
    assert_eq!(Reader::new(params_of(&r)).tpm2b(200).unwrap(), &z[..]);
    // Fresh ephemeral keys each time.
    let r2 = t.execute(0, &command(cc::ECDH_KEY_GEN, &[k], &[], &[]));
    assert_ne!(params_of(&r2), params_of(&r));
    // A keyed-hash object is no ECC key; parameters are refused.
    let (_, parent, _) = create_primary(&mut t, handle::OWNER, &storage_template(), b"", b"");
    let (_, private, public) = create(
        &mut t,
        parent,
        &sealed_template(attr::USER_WITH_AUTH),
        b"",
        b"s",
    );
    let r = load(&mut t, parent, &private, &public);
    let sealed = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let r = t.execute(0, &command(cc::ECDH_KEY_GEN, &[sealed], &[], &[]));
    assert_eq!(rc_of(&r), rc::KEY + rc::H + rc::N1);
    let r = t.execute(0, &command(cc::ECDH_KEY_GEN, &[k], &[], &[0]));
    assert_eq!(rc_of(&r), rc::SIZE);
}

/// A command whose one authorization is policy session `session` (no HMAC:
/// an unbound, unsalted session).
fn with_policy_session(code: u32, handles: &[u32], session: u32, params: &[u8]) -> Vec<u8> {
    let mut s = Writer::new();
    s.u32(session).tpm2b(&[0x5A; 16]).u8(1).tpm2b(&[]);
    let mut w = Writer::new();
    w.u16(st::SESSIONS).u32(0).u32(code);
    for h in handles {
        w.u32(*h);
    }
    w.u32(s.len() as u32).bytes(&s.buf).bytes(params);
    let n = w.len() as u32;
    w.patch_u32(2, n);
    w.buf
}

/// A policy session that ran TPM2_PolicyCommandCode(`code`).
fn policy_session_for(t: &mut Tpm, code: u32) -> u32 {
    let mut w = Writer::new();
    w.tpm2b(&[1; 16])
        .tpm2b(&[])
        .u8(crate::defs::se::POLICY)
        .u16(crate::defs::alg::NULL)
        .u16(HashAlg::Sha256.id());
    let r = t.execute(
        0,
        &command(
            cc::START_AUTH_SESSION,
            &[handle::NULL, handle::NULL],
            &[],
            &w.buf,
        ),
    );
    let s = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let r = t.execute(
        0,
        &command(cc::POLICY_COMMAND_CODE, &[s], &[], &code.to_be_bytes()),
    );
    assert_eq!(rc_of(&r), 0);
    s
}

/// TPM2_Rewrap: a sealed object duplicated (outer wrapper) to one storage
/// primary is rewrapped to another, imports under it and unseals; the
/// duplicate does not import under the second primary before rewrapping,
/// and a rewrap naming another object fails its integrity check.
#[test]
fn rewrap_moves_a_duplicate_to_another_parent() {
    let mut t = started();
    let (_, prim, _) = create_primary(&mut t, handle::OWNER, &storage_template(), b"", b"");
    // authPolicy = PolicyCommandCode(TPM2_Duplicate).
    let policy = HashAlg::Sha256.digest(&[
        &[0u8; 32],
        &cc::POLICY_COMMAND_CODE.to_be_bytes(),
        &cc::DUPLICATE.to_be_bytes(),
    ]);
    let mut seal = sealed_template(attr::USER_WITH_AUTH);
    seal.auth_policy = policy.as_bytes().to_vec();
    let (rc0, private, public) = create(&mut t, prim, &seal, b"", b"moving secret");
    assert_eq!(rc0, 0);
    let r = load(&mut t, prim, &private, &public);
    let obj = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let name = Public::unmarshal(&mut Reader::new(&public)).unwrap().name();
    flush(&mut t, prim);
    // Two different storage primaries (different unique fields).
    let storage_with = |u: u8| {
        let mut p = storage_template();
        p.x = alloc::vec![u; 32];
        p
    };
    let (rc1, np1, _) = create_primary(&mut t, handle::OWNER, &storage_with(1), b"", b"");
    assert_eq!(rc1, 0);
    // Duplicate to np1 (outer wrapper only).
    let s = policy_session_for(&mut t, cc::DUPLICATE);
    let mut w = Writer::new();
    w.tpm2b(&[]).u16(crate::defs::alg::NULL);
    let r = t.execute(
        0,
        &with_policy_session(cc::DUPLICATE, &[obj, np1], s, &w.buf),
    );
    assert_eq!(rc_of(&r), 0, "{r:02x?}");
    let mut rd = Reader::new(params_of(&r));
    assert!(rd.tpm2b(64).unwrap().is_empty());
    let dup1 = rd.tpm2b(512).unwrap().to_vec();
    let seed1 = rd.tpm2b(512).unwrap().to_vec();
    flush(&mut t, obj);
    let (rc2, np2, _) = create_primary(&mut t, handle::OWNER, &storage_with(2), b"", b"");
    assert_eq!(rc2, 0);
    let import = |t: &mut Tpm, parent: u32, dup: &[u8], seed: &[u8]| {
        let mut w = Writer::new();
        w.tpm2b(&[])
            .tpm2b(&public)
            .tpm2b(dup)
            .tpm2b(seed)
            .u16(crate::defs::alg::NULL);
        t.execute(0, &command(cc::IMPORT, &[parent], &[b""], &w.buf))
    };
    // Not importable under np2 as it is.
    assert_ne!(rc_of(&import(&mut t, np2, &dup1, &seed1)), 0);
    let rewrap = |t: &mut Tpm, name: &[u8]| {
        let mut w = Writer::new();
        w.tpm2b(&dup1).tpm2b(name).tpm2b(&seed1);
        t.execute(0, &command(cc::REWRAP, &[np1, np2], &[b""], &w.buf))
    };
    let mut other = name.clone();
    other[5] ^= 1;
    assert_eq!(
        rc_of(&rewrap(&mut t, &other)),
        rc::INTEGRITY + rc::P + rc::N1
    );
    let r = rewrap(&mut t, &name);
    assert_eq!(rc_of(&r), 0, "{r:02x?}");
    let mut rd = Reader::new(params_of(&r));
    let dup2 = rd.tpm2b(512).unwrap().to_vec();
    let seed2 = rd.tpm2b(512).unwrap().to_vec();
    let r = import(&mut t, np2, &dup2, &seed2);
    assert_eq!(rc_of(&r), 0, "{r:02x?}");
    let imported = Reader::new(params_of(&r)).tpm2b(512).unwrap().to_vec();
    let r = load(&mut t, np2, &imported, &public);
    let h = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let u = t.execute(0, &command(cc::UNSEAL, &[h], &[b""], &[]));
    assert_eq!(
        Reader::new(params_of(&u)).tpm2b(256).unwrap(),
        b"moving secret"
    );
}

/// TPM2_PolicyPhysicalPresence: a policy that requires physical presence is
/// satisfied only while the platform asserts it (else TPM_RC_PP); the policy conditions of version 3
/// (name hash, template hash, NV written, physical presence) survive a
/// session's snapshot encoding.
#[test]
fn physical_presence_policies_fail_and_policy_conditions_snapshot() {
    let mut t = started();
    let (_, prim, _) = create_primary(&mut t, handle::OWNER, &storage_template(), b"", b"");
    let policy = HashAlg::Sha256.digest(&[&[0u8; 32], &cc::POLICY_PHYSICAL_PRESENCE.to_be_bytes()]);
    let mut seal = sealed_template(0);
    seal.auth_policy = policy.as_bytes().to_vec();
    let (rc0, private, public) = create(&mut t, prim, &seal, b"", b"pp");
    assert_eq!(rc0, 0);
    let r = load(&mut t, prim, &private, &public);
    let obj = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let s = policy_session_for(&mut t, cc::UNSEAL);
    // Restart: the command-code assertion is not part of this policy.
    let r = t.execute(0, &command(cc::POLICY_RESTART, &[s], &[], &[]));
    assert_eq!(rc_of(&r), 0);
    let r = t.execute(0, &command(cc::POLICY_PHYSICAL_PRESENCE, &[s], &[], &[]));
    assert_eq!(rc_of(&r), 0);
    let r = t.execute(0, &with_policy_session(cc::UNSEAL, &[obj], s, &[]));
    assert_eq!(
        rc_of(&r),
        crate::commands::platform::RC_PP + rc::S + rc::N1,
        "{r:02x?}"
    );
    // Snapshot encoding of the policy conditions.
    let mut sess = t.v.sessions.get(s).unwrap().clone();
    sess.policy.name_hash = Some(HashAlg::Sha256.digest(&[b"names"]));
    sess.policy.template_hash = Some(HashAlg::Sha256.digest(&[b"template"]));
    sess.policy.nv_written = Some(false);
    let mut w = Writer::new();
    sess.encode(&mut w, 0);
    let back = crate::session::AuthSession::decode(&mut Reader::new(&w.buf)).unwrap();
    assert_eq!(back.policy.name_hash, sess.policy.name_hash);
    assert_eq!(back.policy.template_hash, sess.policy.template_hash);
    assert_eq!(back.policy.nv_written, Some(false));
    assert!(back.policy.pp_required);
    // A version-2 blob has none of them.
    let v2 = crate::session::AuthSession::decode_version(&mut Reader::new(&w.buf), 2).unwrap();
    assert_eq!(v2.policy.name_hash, None);
    assert!(!v2.policy.pp_required);
    // With physical presence asserted the same session satisfies the policy.
    t.set_physical_presence(true);
    let r = t.execute(0, &with_policy_session(cc::UNSEAL, &[obj], s, &[]));
    assert_eq!(rc_of(&r), 0, "{r:02x?}");
    t.set_physical_presence(false);
}

/// An RSA-3072 storage primary as the new parent of a duplicated sealed
/// object (the seed OAEP-encrypted to it with "DUPLICATE", TPM2_Import
/// decrypting it) that then unseals, and as the key of a credential
/// (TPM2_MakeCredential encrypting the seed with "IDENTITY",
/// TPM2_ActivateCredential recovering the credential); an encrypted seed of
/// an RSA-2048 block's size is refused.
#[test]
fn rsa_3072_parents_import_duplicates_and_activate_credentials() {
    let mut t = started();
    let (_, prim, _) = create_primary(&mut t, handle::OWNER, &storage_template(), b"", b"");
    let policy = HashAlg::Sha256.digest(&[
        &[0u8; 32],
        &cc::POLICY_COMMAND_CODE.to_be_bytes(),
        &cc::DUPLICATE.to_be_bytes(),
    ]);
    let mut seal = sealed_template(attr::USER_WITH_AUTH);
    seal.auth_policy = policy.as_bytes().to_vec();
    let (rc0, private, public) = create(&mut t, prim, &seal, b"", b"to a 3072 parent");
    assert_eq!(rc0, 0);
    let r = load(&mut t, prim, &private, &public);
    let obj = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let name = Public::unmarshal(&mut Reader::new(&public)).unwrap().name();
    flush(&mut t, prim);
    let mut rsa = storage_template();
    rsa.ty = ids::RSA;
    rsa.rsa_bits = 3072;
    rsa.x.clear();
    rsa.y.clear();
    let (rc1, np, npub) = create_primary(&mut t, handle::OWNER, &rsa, b"", b"");
    assert_eq!(rc1, 0);
    assert_eq!(
        Public::unmarshal(&mut Reader::new(&npub)).unwrap().x.len(),
        384
    );
    let s = policy_session_for(&mut t, cc::DUPLICATE);
    let mut w = Writer::new();
    w.tpm2b(&[]).u16(crate::defs::alg::NULL);
    let r = t.execute(
        0,
        &with_policy_session(cc::DUPLICATE, &[obj, np], s, &w.buf),
    );
    assert_eq!(rc_of(&r), 0, "{r:02x?}");
    let mut rd = Reader::new(params_of(&r));
    assert!(rd.tpm2b(64).unwrap().is_empty());
    let dup = rd.tpm2b(512).unwrap().to_vec();
    let seed = rd.tpm2b(512).unwrap().to_vec();
    assert_eq!(seed.len(), 384);
    let import = |t: &mut Tpm, seed: &[u8]| {
        let mut w = Writer::new();
        w.tpm2b(&[])
            .tpm2b(&public)
            .tpm2b(&dup)
            .tpm2b(seed)
            .u16(crate::defs::alg::NULL);
        t.execute(0, &command(cc::IMPORT, &[np], &[b""], &w.buf))
    };
    assert_ne!(rc_of(&import(&mut t, &seed[..256])), 0);
    let r = import(&mut t, &seed);
    assert_eq!(rc_of(&r), 0, "{r:02x?}");
    let imported = Reader::new(params_of(&r)).tpm2b(512).unwrap().to_vec();
    let r = load(&mut t, np, &imported, &public);
    let h = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let u = t.execute(0, &command(cc::UNSEAL, &[h], &[b""], &[]));
    assert_eq!(
        Reader::new(params_of(&u)).tpm2b(256).unwrap(),
        b"to a 3072 parent"
    );
    flush(&mut t, h);
    flush(&mut t, obj);
    // A credential for the object Name `name` protected by the 3072 key,
    // activated with a loaded object of that Name.
    let (_, p2, _) = create_primary(&mut t, handle::OWNER, &storage_template(), b"", b"");
    let r = load(&mut t, p2, &private, &public);
    flush(&mut t, p2);
    let obj = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let mut w = Writer::new();
    w.tpm2b(b"credential bytes").tpm2b(&name);
    let r = t.execute(0, &command(cc::MAKE_CREDENTIAL, &[np], &[], &w.buf));
    assert_eq!(rc_of(&r), 0, "{r:02x?}");
    let mut rd = Reader::new(params_of(&r));
    let blob = rd.tpm2b(512).unwrap().to_vec();
    let secret = rd.tpm2b(512).unwrap().to_vec();
    assert_eq!(secret.len(), 384);
    let mut w = Writer::new();
    w.tpm2b(&blob).tpm2b(&secret);
    let r = t.execute(
        0,
        &command(cc::ACTIVATE_CREDENTIAL, &[obj, np], &[b"", b""], &w.buf),
    );
    assert_eq!(rc_of(&r), 0, "{r:02x?}");
    assert_eq!(
        Reader::new(params_of(&r)).tpm2b(64).unwrap(),
        b"credential bytes"
    );
}
