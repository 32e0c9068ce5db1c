//! Engine tests of RSA-2048 keys: deterministic primaries, storage parents,
//! RSASSA/RSAPSS signing and verification, LoadExternal binding,
//! RSA_Encrypt/RSA_Decrypt and RSA-salted sessions.

use crate::defs::{cc, handle, rc, st};
use crate::hash::HashAlg;
use crate::marshal::{Reader, Writer};
use crate::object_tests::{create, create_primary, flush, load, rparams, sign, started, verify};
use crate::public::{attr, ids, Public, SymObject};
use crate::rsa_key;

/// Bytes of an RSA-2048 block.
const RSA_BYTES: usize = 256;
use crate::tests::{command, params_of, rc_of};
use crate::Tpm;
use alloc::vec::Vec;
use rsa::{Oaep, Pkcs1v15Sign, Pss};
use sha2::Sha256;

fn rsa_template(attributes: u32, scheme: Option<(u16, HashAlg)>) -> Public {
    Public {
        ty: ids::RSA,
        name_alg: HashAlg::Sha256,
        attributes,
        auth_policy: Vec::new(),
        symmetric: SymObject::Null,
        scheme,
        x: Vec::new(),
        y: Vec::new(),
        exponent: 0,
        rsa_bits: 2048,
        ecdaa_count: 0,
        curve: crate::public::Curve::P256,
    }
}

const BASE: u32 =
    attr::FIXED_TPM | attr::FIXED_PARENT | attr::SENSITIVE_DATA_ORIGIN | attr::USER_WITH_AUTH;

fn rsa_storage() -> Public {
    let mut p = rsa_template(BASE | attr::RESTRICTED | attr::DECRYPT, None);
    p.symmetric = SymObject::AesCfb(128);
    p
}

fn public_of(bytes: &[u8]) -> Public {
    Public::unmarshal(&mut Reader::new(bytes)).unwrap()
}

/// The signature algorithm, hash and block of a TPMT_SIGNATURE response.
fn rsa_sig(r: &[u8]) -> (u16, u16, Vec<u8>) {
    let mut rd = Reader::new(params_of(r));
    let a = rd.u16().unwrap();
    let h = rd.u16().unwrap();
    (a, h, rd.tpm2b(rsa_key::MAX_RSA_BYTES).unwrap().to_vec())
}

#[test]
fn rsa_primaries_are_deterministic_and_public_areas_round_trip() {
    let mut t = started();
    let p = rsa_storage();
    let (rc0, a, pa) = create_primary(&mut t, handle::OWNER, &p, b"", b"");
    assert_eq!(rc0, 0);
    flush(&mut t, a);
    let (_, b, pb) = create_primary(&mut t, handle::OWNER, &p, b"", b"");
    assert_eq!(pa, pb);
    flush(&mut t, b);
    let (_, c, pc) = create_primary(&mut t, handle::ENDORSEMENT, &p, b"", b"");
    assert_ne!(pa, pc);
    flush(&mut t, c);
    let q = public_of(&pa);
    assert_eq!(q.ty, ids::RSA);
    assert_eq!(q.x.len(), RSA_BYTES);
    assert_eq!(q.marshal(), pa);
    assert!(q.rsa_public().is_some());
    // keyBits other than 1024, 2048 and 3072 do not unmarshal; a signing
    // scheme on a decrypt key is refused.
    let mut bad = p.marshal();
    let kb = bad.len() - 2 - 4 - 2;
    for bits in [0u16, 1536, 4096] {
        bad[kb..kb + 2].copy_from_slice(&bits.to_be_bytes());
        assert_eq!(Public::unmarshal(&mut Reader::new(&bad)), Err(rc::VALUE));
    }
    let d = rsa_template(BASE | attr::DECRYPT, Some((ids::RSASSA, HashAlg::Sha256)));
    assert_eq!(
        create_primary(&mut t, handle::OWNER, &d, b"", b"").0,
        rc::SCHEME + rc::P + 2 * rc::N1
    );
    let mut e = rsa_storage();
    e.exponent = 4;
    assert_eq!(
        create_primary(&mut t, handle::OWNER, &e, b"", b"").0,
        rc::VALUE + rc::P + 2 * rc::N1
    );
}

fn sign_with(t: &mut Tpm, key: u32, scheme: u16, digest: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.tpm2b(digest)
        .u16(scheme)
        .u16(HashAlg::Sha256.id())
        .u16(st::HASHCHECK)
        .u32(handle::NULL)
        .tpm2b(&[]);
    t.execute(0, &command(cc::SIGN, &[key], &[b""], &w.buf))
}

#[test]
fn children_of_an_rsa_parent_sign_with_rsassa_and_rsapss() {
    let mut t = started();
    let (rc0, parent, _) = create_primary(&mut t, handle::OWNER, &rsa_storage(), b"", b"");
    assert_eq!(rc0, 0);
    let tpl = rsa_template(BASE | attr::SIGN, Some((ids::RSASSA, HashAlg::Sha256)));
    let (rc1, private, public) = create(&mut t, parent, &tpl, b"", b"");
    assert_eq!(rc1, 0);
    let r = load(&mut t, parent, &private, &public);
    let key = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let _ = rparams(&r);
    let pk = public_of(&public).rsa_public().unwrap();
    let digest = HashAlg::Sha256.digest(&[b"message"]);
    // The key's scheme (RSASSA): deterministic, and verifies by hand.
    let r = sign(&mut t, key, b"", digest.as_bytes(), None);
    let (a, h, sig) = rsa_sig(&r);
    assert_eq!((a, h), (ids::RSASSA, HashAlg::Sha256.id()));
    assert!(pk
        .verify(Pkcs1v15Sign::new::<Sha256>(), digest.as_bytes(), &sig)
        .is_ok());
    assert_eq!(sign(&mut t, key, b"", digest.as_bytes(), None), r);
    let r2 = verify(&mut t, key, digest.as_bytes(), params_of(&r));
    assert_eq!(rc_of(&r2), 0);
    let other = HashAlg::Sha256.digest(&[b"other"]);
    let r3 = verify(&mut t, key, other.as_bytes(), params_of(&r));
    assert_eq!(rc_of(&r3), rc::SIGNATURE + rc::P + 2 * rc::N1);
    // The key fixes its scheme: PSS is refused.
    assert_eq!(
        rc_of(&sign_with(&mut t, key, ids::RSAPSS, digest.as_bytes())),
        rc::SCHEME + rc::P + 2 * rc::N1
    );
    flush(&mut t, key);
    // A key without a scheme signs with the command's: PSS (randomized).
    let tpl = rsa_template(BASE | attr::SIGN, None);
    let (_, private, public) = create(&mut t, parent, &tpl, b"", b"");
    let r = load(&mut t, parent, &private, &public);
    let key = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let r = sign_with(&mut t, key, ids::RSAPSS, digest.as_bytes());
    let (a, _, sig) = rsa_sig(&r);
    assert_eq!(a, ids::RSAPSS);
    let pk = public_of(&public).rsa_public().unwrap();
    // The salt is as long as the digest: the crate's verifier for exactly
    // that salt length accepts it.
    assert!(pk
        .verify(Pss::new::<Sha256>(), digest.as_bytes(), &sig)
        .is_ok());
    assert_ne!(sign_with(&mut t, key, ids::RSAPSS, digest.as_bytes()), r);
    assert_eq!(
        rc_of(&verify(&mut t, key, digest.as_bytes(), params_of(&r))),
        0
    );
    assert_eq!(
        rc_of(&sign_with(&mut t, key, ids::ECDSA, digest.as_bytes())),
        rc::SCHEME + rc::P + 2 * rc::N1
    );
    // Tampered private area: integrity failure.
    let mut bad = private.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(
        rc_of(&load(&mut t, parent, &bad, &public)),
        rc::INTEGRITY + rc::P + rc::N1
    );
}

/// RSAES-OAEP (SHA-256) of `msg` with `label` done outside the TPM, by the
/// `rsa` crate.
fn oaep_outside(pk: &rsa::RsaPublicKey, label: &str, msg: &[u8]) -> Vec<u8> {
    let mut fill = |b: &mut [u8]| b.fill(9);
    pk.encrypt(
        &mut rsa_key::FillRng(&mut fill),
        Oaep::new_with_label::<Sha256, _>(label),
        msg,
    )
    .unwrap()
}

fn load_external(t: &mut Tpm, sensitive: &[u8], public: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.tpm2b(sensitive).tpm2b(public).u32(handle::NULL);
    t.execute(0, &command(cc::LOAD_EXTERNAL, &[], &[], &w.buf))
}

/// A key pair made outside the TPM: (public area, p).
fn external_pair(attributes: u32, scheme: Option<(u16, HashAlg)>) -> (Public, Vec<u8>) {
    external_pair_of(2048, attributes, scheme)
}

/// A `bits`-bit key pair made outside the TPM: (public area, p).
fn external_pair_of(
    bits: u16,
    attributes: u32,
    scheme: Option<(u16, HashAlg)>,
) -> (Public, Vec<u8>) {
    let mut i = 0u32;
    let mut next = |n: usize| {
        let mut out = Vec::new();
        while out.len() < n {
            i += 1;
            out.extend_from_slice(
                HashAlg::Sha256
                    .digest(&[&i.to_be_bytes(), b"ext"])
                    .as_bytes(),
            );
        }
        out.truncate(n);
        out
    };
    let (n, p) = rsa_key::generate(bits, 0, &mut next).unwrap();
    let mut public = rsa_template(attributes, scheme);
    public.rsa_bits = bits;
    public.x = n;
    (public, p)
}

fn rsa_sensitive(p: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u16(ids::RSA).tpm2b(b"").tpm2b(b"").tpm2b(p);
    w.buf
}

#[test]
fn load_external_names_hash_the_public_area_and_bind_the_prime() {
    let mut t = started();
    let (public, p) = external_pair(attr::USER_WITH_AUTH | attr::SIGN, None);
    let r = load_external(&mut t, &[], &public.marshal());
    let mut rd = Reader::new(rparams(&r));
    let name = rd.tpm2b(64).unwrap();
    let mut expect = alloc::vec![0, 0x0B];
    expect.extend_from_slice(HashAlg::Sha256.digest(&[&public.marshal()]).as_bytes());
    assert_eq!(name, expect.as_slice());
    // A modulus of the wrong size is not a key.
    let mut short = public.clone();
    short.x.truncate(128);
    assert_eq!(
        rc_of(&load_external(&mut t, &[], &short.marshal())),
        rc::KEY + rc::P + 2 * rc::N1
    );
    // With its private part: binding is checked.
    let r = load_external(&mut t, &rsa_sensitive(&p), &public.marshal());
    assert_eq!(rc_of(&r), 0);
    let key = u32::from_be_bytes(r[10..14].try_into().unwrap());
    let digest = HashAlg::Sha256.digest(&[b"x"]);
    assert_eq!(
        rc_of(&sign_with(&mut t, key, ids::RSASSA, digest.as_bytes())),
        0
    );
    let mut wrong = p.clone();
    wrong[127] ^= 2;
    assert_eq!(
        rc_of(&load_external(
            &mut t,
            &rsa_sensitive(&wrong),
            &public.marshal()
        )),
        rc::BINDING + rc::P + 2 * rc::N1
    );
}

fn rsa_encrypt(t: &mut Tpm, key: u32, msg: &[u8], scheme: u16, label: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.tpm2b(msg).u16(scheme);
    if scheme == ids::OAEP {
        w.u16(HashAlg::Sha256.id());
    }
    w.tpm2b(label);
    t.execute(0, &command(cc::RSA_ENCRYPT, &[key], &[], &w.buf))
}

fn rsa_decrypt(t: &mut Tpm, key: u32, c: &[u8], scheme: u16, label: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.tpm2b(c).u16(scheme);
    if scheme == ids::OAEP {
        w.u16(HashAlg::Sha256.id());
    }
    w.tpm2b(label);
    t.execute(0, &command(cc::RSA_DECRYPT, &[key], &[b""], &w.buf))
}

#[test]
fn rsa_encrypt_and_decrypt_with_oaep_and_pkcs1v15() {
    let mut t = started();
    let tpl = rsa_template(BASE | attr::DECRYPT, None);
    let (rc0, key, public) = create_primary(&mut t, handle::OWNER, &tpl, b"", b"");
    assert_eq!(rc0, 0);
    let pk = public_of(&public).rsa_public().unwrap();
    for scheme in [ids::OAEP, ids::RSAES] {
        let label: &[u8] = if scheme == ids::OAEP { b"label\0" } else { b"" };
        let r = rsa_encrypt(&mut t, key, b"secret data", scheme, label);
        let c = Reader::new(params_of(&r))
            .tpm2b(RSA_BYTES)
            .unwrap()
            .to_vec();
        assert_eq!(c.len(), RSA_BYTES);
        // The block decodes by hand under the public key's inverse (the TPM's).
        let r = rsa_decrypt(&mut t, key, &c, scheme, label);
        assert_eq!(
            Reader::new(rparams_plain(&r)).tpm2b(RSA_BYTES).unwrap(),
            b"secret data"
        );
        let mut bad = c.clone();
        bad[200] ^= 1;
        assert_eq!(
            rc_of(&rsa_decrypt(&mut t, key, &bad, scheme, label)),
            rc::VALUE + rc::P + rc::N1
        );
    }
    // OAEP encoded outside the TPM decrypts inside it.
    let c = oaep_outside(&pk, "L\0", b"hi");
    let r = rsa_decrypt(&mut t, key, &c, ids::OAEP, b"L\0");
    assert_eq!(
        Reader::new(rparams_plain(&r)).tpm2b(RSA_BYTES).unwrap(),
        b"hi"
    );
    assert_eq!(
        rc_of(&rsa_decrypt(&mut t, key, &c, ids::OAEP, b"M\0")),
        rc::VALUE + rc::P + rc::N1
    );
    // Labels must be zero-terminated; NULL schemes on both sides are refused.
    assert_eq!(
        rc_of(&rsa_encrypt(&mut t, key, b"x", ids::OAEP, b"abc")),
        rc::VALUE + rc::P + 3 * rc::N1
    );
    assert_eq!(
        rc_of(&rsa_encrypt(&mut t, key, b"x", crate::defs::alg::NULL, b"")),
        rc::SCHEME + rc::P + 2 * rc::N1
    );
    assert_eq!(
        rc_of(&rsa_encrypt(&mut t, key, &[1; 200], ids::OAEP, b"")),
        rc::VALUE + rc::P + rc::N1
    );
    // A restricted (storage) key does not decrypt arbitrary data.
    let (_, s, _) = create_primary(&mut t, handle::OWNER, &rsa_storage(), b"", b"");
    assert_eq!(
        rc_of(&rsa_decrypt(&mut t, s, &c, ids::OAEP, b"L\0")),
        rc::ATTRIBUTES + rc::H + rc::N1
    );
}

/// The parameters of a response with an authorization area.
fn rparams_plain(r: &[u8]) -> &[u8] {
    assert_eq!(rc_of(r), 0, "{r:02x?}");
    params_of(r)
}

#[test]
fn rsa_salted_sessions_decrypt_the_oaep_salt() {
    let mut t = started();
    let (_, key, public) = create_primary(&mut t, handle::OWNER, &rsa_storage(), b"", b"");
    let pk = public_of(&public).rsa_public().unwrap();
    let start = |t: &mut Tpm, secret: &[u8]| {
        let mut p = Writer::new();
        p.tpm2b(&[1; 32])
            .tpm2b(secret)
            .u8(0)
            .u16(crate::defs::alg::NULL)
            .u16(HashAlg::Sha256.id());
        t.execute(
            0,
            &command(cc::START_AUTH_SESSION, &[key, handle::NULL], &[], &p.buf),
        )
    };
    let secret = oaep_outside(&pk, "SECRET\0", &[7; 32]);
    assert_eq!(rc_of(&start(&mut t, &secret)), 0);
    // Another label, or a salt longer than a digest: TPM_RC_VALUE.
    let secret = oaep_outside(&pk, "SECRET", &[7; 32]);
    assert_eq!(
        rc_of(&start(&mut t, &secret)),
        rc::VALUE + rc::P + 2 * rc::N1
    );
    let secret = oaep_outside(&pk, "SECRET\0", &[7; 33]);
    assert_eq!(
        rc_of(&start(&mut t, &secret)),
        rc::VALUE + rc::P + 2 * rc::N1
    );
    assert_eq!(
        rc_of(&start(&mut t, &[1; 255])),
        rc::VALUE + rc::P + 2 * rc::N1
    );
}

#[test]
fn rsa_keys_quote_and_persist_across_power_cycles() {
    use crate::tests::{new_tpm, startup, SharedNv, TestClock};
    let nv = SharedNv::default();
    let clock = TestClock::default();
    let mut t = new_tpm(&nv, &clock);
    assert_eq!(startup(&mut t, crate::defs::su::CLEAR), 0);
    let tpl = rsa_template(
        BASE | attr::SIGN | attr::RESTRICTED,
        Some((ids::RSASSA, HashAlg::Sha256)),
    );
    let (rc0, k, pubk) = create_primary(&mut t, handle::ENDORSEMENT, &tpl, b"", b"");
    assert_eq!(rc0, 0);
    let pk = public_of(&pubk).rsa_public().unwrap();
    let mut w = Writer::new();
    w.tpm2b(b"nonce")
        .u16(crate::defs::alg::NULL)
        .u32(1)
        .pcr_selection(HashAlg::Sha256, 0b1);
    let r = t.execute(0, &command(cc::QUOTE, &[k], &[b""], &w.buf));
    let mut rd = Reader::new(params_of(&r));
    let attest = rd.tpm2b(1024).unwrap().to_vec();
    assert_eq!(rd.u16().unwrap(), ids::RSASSA);
    assert_eq!(rd.u16().unwrap(), HashAlg::Sha256.id());
    let sig = rd.tpm2b(RSA_BYTES).unwrap();
    let digest = HashAlg::Sha256.digest(&[&attest]);
    assert!(pk
        .verify(Pkcs1v15Sign::new::<Sha256>(), digest.as_bytes(), sig)
        .is_ok());
    // Persistent: the same public area and a working key after a restart.
    let ph = 0x8101_0001u32;
    let r = t.execute(
        0,
        &command(
            cc::EVICT_CONTROL,
            &[handle::OWNER, k],
            &[b""],
            &ph.to_be_bytes(),
        ),
    );
    assert_eq!(rc_of(&r), 0);
    drop(t);
    let mut t = new_tpm(&nv, &clock);
    assert_eq!(startup(&mut t, crate::defs::su::CLEAR), 0);
    let r = t.execute(0, &command(cc::READ_PUBLIC, &[ph], &[], &[]));
    assert_eq!(Reader::new(params_of(&r)).tpm2b(512).unwrap(), &pubk[..]);
    let r = t.execute(0, &command(cc::QUOTE, &[ph], &[b""], &w.buf));
    assert_eq!(rc_of(&r), 0);
}

/// RSA-1024 and RSA-3072 keys do everything RSA-2048 keys do, through the
/// commands a guest sends: a storage primary (its public modulus of the
/// size asked for), a signing child created, loaded, signing with RSASSA and
/// RSAPSS (verified by the `rsa` crate) and verifying; a decrypting child
/// round-tripping RSA_Encrypt/RSA_Decrypt and decrypting OAEP made outside;
/// an RSA-salted session; LoadExternal with its prime bound; ContextSave /
/// ContextLoad; a persistent key across a restart and a volatile snapshot.
#[test]
fn rsa_1024_and_3072_keys_create_sign_decrypt_salt_and_persist() {
    use crate::tests::{new_tpm, startup, SharedNv, TestClock};
    for bits in [1024u16, 3072] {
        let bytes = usize::from(bits) / 8;
        let nv = SharedNv::default();
        let clock = TestClock::default();
        let mut t = new_tpm(&nv, &clock);
        assert_eq!(startup(&mut t, crate::defs::su::CLEAR), 0);
        let mut storage = rsa_storage();
        storage.rsa_bits = bits;
        let (rc0, parent, pp) = create_primary(&mut t, handle::OWNER, &storage, b"", b"");
        assert_eq!(rc0, 0, "{bits}");
        let pp = public_of(&pp);
        assert_eq!((pp.rsa_bits, pp.x.len()), (bits, bytes));
        // The same template gives the same key (deterministic primaries).
        let (_, again, pp2) = create_primary(&mut t, handle::OWNER, &storage, b"", b"");
        assert_eq!(public_of(&pp2), pp);
        flush(&mut t, again);

        // A signing child: RSASSA and RSAPSS (the command's scheme).
        let mut tpl = rsa_template(BASE | attr::SIGN, None);
        tpl.rsa_bits = bits;
        let (rc1, private, public) = create(&mut t, parent, &tpl, b"", b"");
        assert_eq!(rc1, 0);
        let r = load(&mut t, parent, &private, &public);
        let key = u32::from_be_bytes(r[10..14].try_into().unwrap());
        let pk = public_of(&public).rsa_public().unwrap();
        let digest = HashAlg::Sha256.digest(&[b"message"]);
        for scheme in [ids::RSASSA, ids::RSAPSS] {
            let r = sign_with(&mut t, key, scheme, digest.as_bytes());
            let (a, _, sig) = rsa_sig(&r);
            assert_eq!((a, sig.len()), (scheme, bytes));
            let ok = if scheme == ids::RSASSA {
                pk.verify(Pkcs1v15Sign::new::<Sha256>(), digest.as_bytes(), &sig)
            } else {
                pk.verify(Pss::new::<Sha256>(), digest.as_bytes(), &sig)
            };
            assert!(ok.is_ok(), "{bits} {scheme:#x}");
            assert_eq!(
                rc_of(&verify(&mut t, key, digest.as_bytes(), params_of(&r))),
                0
            );
            let other = HashAlg::Sha256.digest(&[b"other"]);
            assert_eq!(
                rc_of(&verify(&mut t, key, other.as_bytes(), params_of(&r))),
                rc::SIGNATURE + rc::P + 2 * rc::N1
            );
        }
        // The key's context round-trips and still signs.
        let r = t.execute(0, &command(cc::CONTEXT_SAVE, &[key], &[], &[]));
        assert_eq!(rc_of(&r), 0);
        let ctx = params_of(&r).to_vec();
        flush(&mut t, key);
        let r = t.execute(0, &command(cc::CONTEXT_LOAD, &[], &[], &ctx));
        let key = u32::from_be_bytes(r[10..14].try_into().unwrap());
        let r = sign_with(&mut t, key, ids::RSASSA, digest.as_bytes());
        let (_, _, sig) = rsa_sig(&r);
        assert!(pk
            .verify(Pkcs1v15Sign::new::<Sha256>(), digest.as_bytes(), &sig)
            .is_ok());
        // A volatile snapshot keeps the loaded key.
        let blob = t.save_volatile();
        let mut u = new_tpm(&nv, &clock);
        u.restore_volatile(&blob).unwrap();
        let r = sign_with(&mut u, key, ids::RSASSA, digest.as_bytes());
        assert_eq!(rsa_sig(&r).2, sig);
        drop(u);
        flush(&mut t, key);

        // A decrypting child: OAEP both ways, and OAEP made outside.
        let mut tpl = rsa_template(BASE | attr::DECRYPT, None);
        tpl.rsa_bits = bits;
        let (_, private, public) = create(&mut t, parent, &tpl, b"", b"");
        let r = load(&mut t, parent, &private, &public);
        let key = u32::from_be_bytes(r[10..14].try_into().unwrap());
        let pk = public_of(&public).rsa_public().unwrap();
        let r = rsa_encrypt(&mut t, key, b"secret data", ids::OAEP, b"label\0");
        let c = Reader::new(params_of(&r)).tpm2b(bytes).unwrap().to_vec();
        assert_eq!(c.len(), bytes);
        let r = rsa_decrypt(&mut t, key, &c, ids::OAEP, b"label\0");
        assert_eq!(
            Reader::new(rparams_plain(&r)).tpm2b(bytes).unwrap(),
            b"secret data"
        );
        let c = oaep_outside(&pk, "L\0", b"hi");
        let r = rsa_decrypt(&mut t, key, &c, ids::OAEP, b"L\0");
        assert_eq!(Reader::new(rparams_plain(&r)).tpm2b(bytes).unwrap(), b"hi");
        // A block of another key's size is refused.
        assert_eq!(
            rc_of(&rsa_decrypt(&mut t, key, &[1; 256], ids::OAEP, b"")),
            rc::SIZE + rc::P + rc::N1
        );
        flush(&mut t, key);

        // A session salted with the storage primary.
        let secret = oaep_outside(&pp.rsa_public().unwrap(), "SECRET\0", &[7; 32]);
        let mut p = Writer::new();
        p.tpm2b(&[1; 32])
            .tpm2b(&secret)
            .u8(0)
            .u16(crate::defs::alg::NULL)
            .u16(HashAlg::Sha256.id());
        let r = t.execute(
            0,
            &command(cc::START_AUTH_SESSION, &[parent, handle::NULL], &[], &p.buf),
        );
        assert_eq!(rc_of(&r), 0);
        let sh = u32::from_be_bytes(r[10..14].try_into().unwrap());
        flush(&mut t, sh);

        // LoadExternal: the prime binds, a wrong one does not.
        let (ext, prime) = external_pair_of(bits, attr::USER_WITH_AUTH | attr::SIGN, None);
        let r = load_external(&mut t, &rsa_sensitive(&prime), &ext.marshal());
        assert_eq!(rc_of(&r), 0);
        let k = u32::from_be_bytes(r[10..14].try_into().unwrap());
        let r = sign_with(&mut t, k, ids::RSASSA, digest.as_bytes());
        assert!(ext
            .rsa_public()
            .unwrap()
            .verify(
                Pkcs1v15Sign::new::<Sha256>(),
                digest.as_bytes(),
                &rsa_sig(&r).2
            )
            .is_ok());
        flush(&mut t, k);
        let mut wrong = prime.clone();
        wrong[bytes / 2 - 1] ^= 2;
        assert_eq!(
            rc_of(&load_external(
                &mut t,
                &rsa_sensitive(&wrong),
                &ext.marshal()
            )),
            rc::BINDING + rc::P + 2 * rc::N1
        );
        // keyBits that disagrees with the modulus is not a key.
        let mut mismatched = ext.clone();
        mismatched.rsa_bits = if bits == 1024 { 2048 } else { 1024 };
        assert_eq!(
            rc_of(&load_external(&mut t, &[], &mismatched.marshal())),
            rc::KEY + rc::P + 2 * rc::N1
        );

        // Persistent across a restart (NV image of the current layout).
        let ph = 0x8100_0010u32;
        let r = t.execute(
            0,
            &command(
                cc::EVICT_CONTROL,
                &[handle::OWNER, parent],
                &[b""],
                &ph.to_be_bytes(),
            ),
        );
        assert_eq!(rc_of(&r), 0);
        drop(t);
        let mut t = new_tpm(&nv, &clock);
        assert_eq!(startup(&mut t, crate::defs::su::CLEAR), 0);
        let r = t.execute(0, &command(cc::READ_PUBLIC, &[ph], &[], &[]));
        assert_eq!(
            public_of(Reader::new(params_of(&r)).tpm2b(512).unwrap()),
            pp
        );
        let (_, private, public) = create(&mut t, ph, &tpl, b"", b"");
        assert_eq!(rc_of(&load(&mut t, ph, &private, &public)), 0);
    }
}
