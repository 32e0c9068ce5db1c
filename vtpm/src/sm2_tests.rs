//! Tests of the SM2 signature scheme, the ECMQV and SM2 key exchanges of
//! TPM2_ZGen_2Phase and the curves NIST P-192, P-224 and SM2 P-256: against
//! an affine big-integer model of the curves written from the standards'
//! equations (GB/T 32918.2 §6.1/§7.1, GB/T 32918.3 §6.1 with libtpms's
//! associate value, SP 800-56A §5.7.2.3), against the RustCrypto `sm2`,
//! `p192` and `p224` verifiers, against swtpm's recorded SM2 key exchange,
//! and through the command interface with the architected error codes.

use crate::commands::signing::{
    bn_p256_domain, bn_p638_domain, p192_domain, p224_domain, p521_domain::bytes, sm2_domain,
};
use crate::defs::{alg, cap, cc, handle, rc};
use crate::hash::HashAlg;
use crate::marshal::{Reader, Writer};
use crate::object_tests::{create_primary, sign, started, verify};
use crate::public::{self, attr, ids, Curve, EcScalar, Public, SymObject, TwoPhase};
use crate::tests::{command, params_of, rc_of};
use crate::Tpm;
use alloc::vec::Vec;
use num_bigint_dig::BigUint;

/// A short-Weierstrass curve y² = x³ + ax + b over F_p with generator G of
/// order n, in affine coordinates (None is the point at infinity).
struct Model {
    p: BigUint,
    a: BigUint,
    n: BigUint,
    g: (BigUint, BigUint),
}

type Pt = Option<(BigUint, BigUint)>;

impl Model {
    fn of(curve: Curve) -> Self {
        let (p, a, gx, gy, n) = match curve {
            Curve::P192 => {
                use p192_domain as d;
                (d::P, d::A, d::GX, d::GY, d::N)
            }
            Curve::P224 => {
                use p224_domain as d;
                (d::P, d::A, d::GX, d::GY, d::N)
            }
            Curve::Sm2P256 => {
                use sm2_domain as d;
                (d::P, d::A, d::GX, d::GY, d::N)
            }
            Curve::BnP256 => {
                use bn_p256_domain as d;
                (d::P, d::A, d::GX, d::GY, d::N)
            }
            Curve::BnP638 => {
                use bn_p638_domain as d;
                (d::P, d::A, d::GX, d::GY, d::N)
            }
            _ => unreachable!("the model serves the new curves"),
        };
        let big = |h: &str| BigUint::from_bytes_be(&bytes(h));
        Model {
            p: big(p),
            a: big(a),
            n: big(n),
            g: (big(gx), big(gy)),
        }
    }
    fn inv(&self, v: &BigUint) -> BigUint {
        v.modpow(&(&self.p - 2u32), &self.p)
    }
    fn sub(&self, a: &BigUint, b: &BigUint) -> BigUint {
        ((a + &self.p) - (b % &self.p)) % &self.p
    }
    fn add(&self, s: &Pt, t: &Pt) -> Pt {
        let (Some((x1, y1)), Some((x2, y2))) = (s, t) else {
            return s.clone().or_else(|| t.clone());
        };
        let l = if x1 == x2 {
            if (y1 + y2) % &self.p == BigUint::from(0u32) {
                return None;
            }
            (BigUint::from(3u32) * x1 * x1 + &self.a) * self.inv(&(BigUint::from(2u32) * y1))
                % &self.p
        } else {
            self.sub(y2, y1) * self.inv(&self.sub(x2, x1)) % &self.p
        };
        let x3 = self.sub(&self.sub(&(&l * &l % &self.p), x1), x2);
        let y3 = self.sub(&(&l * self.sub(x1, &x3) % &self.p), y1);
        Some((x3, y3))
    }
    fn mul(&self, k: &BigUint, pt: &Pt) -> Pt {
        let mut acc: Pt = None;
        for i in (0..k.bits()).rev() {
            acc = self.add(&acc, &acc);
            if (k >> i) & BigUint::from(1u32) == BigUint::from(1u32) {
                acc = self.add(&acc, pt);
            }
        }
        acc
    }
    fn gen(&self) -> Pt {
        Some(self.g.clone())
    }
    fn on_curve(&self, pt: &Pt, b: &BigUint) -> bool {
        let Some((x, y)) = pt else { return false };
        (y * y) % &self.p == (x * x * x + &self.a * x + b) % &self.p
    }
}

fn big(b: &[u8]) -> BigUint {
    BigUint::from_bytes_be(b)
}

fn fixed(curve: Curve, seed: u8) -> EcScalar {
    public::derive_scalar(curve, |i| {
        let mut v = Vec::new();
        for half in [0u8, 1] {
            let h = HashAlg::Sha512.digest(&[&[seed, half], &i.to_be_bytes()]);
            v.extend_from_slice(h.as_bytes());
        }
        v.truncate(curve.bytes());
        if curve == Curve::P521 {
            v[0] &= 1;
        }
        v
    })
}

const NEW_CURVES: [Curve; 3] = [Curve::P192, Curve::P224, Curve::Sm2P256];
/// The Barreto–Naehrig curves ([`crate::bn`]), checked against the model too.
const BN_CURVES: [Curve; 2] = [Curve::BnP256, Curve::BnP638];

/// The BN curves' domains are the registry's and the curves of
/// [`crate::bn`]: a = 0, G on y² = x³ + b, the model's n·G the point at
/// infinity, h = 1, the generator d·G for d = 1, and a scalar's public point
/// the model's d·G; a point off the curve, a coordinate not below p and a
/// scalar not below n are refused.
#[test]
fn bn_curve_domains_are_the_curves_of_the_bn_module() {
    for curve in BN_CURVES {
        let m = Model::of(curve);
        let (bits, kdf, v) = crate::commands::signing::domain(curve);
        assert_eq!((usize::from(bits), kdf), (curve.order_bits(), None));
        let [p, a, b, gx, gy, n, h] = v;
        assert_eq!((a, h), (alloc::vec![0], alloc::vec![1]));
        assert!(m.on_curve(&m.gen(), &big(&b)), "{curve:?} G on the curve");
        assert!(!m.on_curve(&m.gen(), &(big(&b) + 1u32)));
        assert_eq!(public::order(curve), n, "{curve:?} n");
        assert_eq!(m.mul(&m.n, &m.gen()), None, "{curve:?} n·G = O");
        for v in [&p, &b, &gx, &gy, &n] {
            assert_eq!(v.len(), curve.bytes());
        }
        let mut one = alloc::vec![0u8; curve.bytes()];
        *one.last_mut().unwrap() = 1;
        let g = public::scalar_from_bytes(curve, &one)
            .unwrap()
            .public()
            .xy();
        assert_eq!((g.0, g.1), (gx.clone(), gy.clone()), "{curve:?} G");
        let d = fixed(curve, 7);
        let (x, y) = d.public().xy();
        assert_eq!(
            m.mul(&big(&d.to_bytes()), &m.gen()),
            Some((big(&x), big(&y)))
        );
        assert_eq!(public::EcPublic::from_xy(curve, &x, &y), Some(d.public()));
        let mut y1 = y.clone();
        *y1.last_mut().unwrap() ^= 1;
        assert_eq!(public::EcPublic::from_xy(curve, &x, &y1), None);
        assert_eq!(public::EcPublic::from_xy(curve, &p, &y), None);
        assert!(public::scalar_from_bytes(curve, &n).is_none());
        assert!(public::scalar_from_bytes(curve, &alloc::vec![0; curve.bytes()]).is_none());
        // ECDH is the model's d·Q.
        let e = fixed(curve, 8);
        let q = e.public().xy();
        assert_eq!(
            public::ecdh_point(&d, &q.0, &q.1).map(|(x, y)| (big(&x), big(&y))),
            m.mul(&big(&d.to_bytes()), &Some((big(&q.0), big(&q.1))))
        );
    }
}

/// The domains of the new curves are the curves of their crates: the
/// generator the crate's d·G for d = 1, on y² = x³ + ax + b, a = p − 3, and
/// n·G the point at infinity in the model (the crate's order is n).
#[test]
fn new_curve_domains_are_the_curves_of_their_crates() {
    for curve in NEW_CURVES {
        let m = Model::of(curve);
        let (_, _, v) = crate::commands::signing::domain(curve);
        let [p, a, b, gx, gy, n, h] = v;
        assert_eq!(h, [1]);
        assert_eq!(big(&a) + 3u32, big(&p), "{curve:?} a = p - 3");
        assert!(m.on_curve(&m.gen(), &big(&b)), "{curve:?} G on the curve");
        let mut one = alloc::vec![0u8; curve.bytes()];
        *one.last_mut().unwrap() = 1;
        let g = public::scalar_from_bytes(curve, &one)
            .unwrap()
            .public()
            .xy();
        assert_eq!((g.0, g.1), (gx.clone(), gy.clone()), "{curve:?} G");
        assert_eq!(public::order(curve), n, "{curve:?} n");
        assert_eq!(m.mul(&m.n, &m.gen()), None, "{curve:?} n·G = O");
        for v in [&p, &a, &b, &gx, &gy, &n] {
            assert_eq!(v.len(), curve.bytes());
        }
        // A scalar's public point is the model's d·G.
        let d = fixed(curve, 7);
        let (x, y) = d.public().xy();
        assert_eq!(
            m.mul(&big(&d.to_bytes()), &m.gen()),
            Some((big(&x), big(&y)))
        );
    }
}

/// SM2 signatures (r, s) from the model for key d, nonce k, digest e.
fn model_sm2_sign(m: &Model, d: &BigUint, k: &BigUint, e: &BigUint) -> (BigUint, BigUint) {
    let (x1, _) = m.mul(k, &m.gen()).unwrap();
    let r = (e + x1) % &m.n;
    let inv = (d + 1u32).modpow(&(&m.n - 2u32), &m.n);
    let s = (inv * ((k + &m.n * 2u32) - (&r * d) % &m.n)) % &m.n;
    (r, s)
}

/// SM2 signing follows GB/T 32918.2 §6.1 (the model's r and s for the same
/// key, nonce and digest, on every new curve and with digests shorter and
/// longer than the order), verifies, and fails verification for another
/// digest, r or s zero or not below n, and another key.
#[test]
fn sm2_signatures_follow_gbt_32918_2() {
    for curve in NEW_CURVES
        .into_iter()
        .chain(BN_CURVES)
        .chain([Curve::P256, Curve::P384])
    {
        for (i, hash) in [HashAlg::Sha256, HashAlg::Sha384, HashAlg::Sha1]
            .into_iter()
            .enumerate()
        {
            let d = fixed(curve, 1 + i as u8);
            let k = fixed(curve, 100 + i as u8);
            let digest = hash.digest(&[b"sm2", &[i as u8]]);
            let digest = digest.as_bytes();
            let (r, s) = public::sm2_sign(&d, &k, digest).expect("sign");
            assert_eq!(r.len(), curve.bytes());
            assert_eq!(s.len(), curve.bytes());
            let pk = d.public();
            assert!(
                public::sm2_verify(&pk, digest, &r, &s),
                "{curve:?} {hash:?}"
            );
            if matches!(
                curve,
                Curve::P192 | Curve::P224 | Curve::Sm2P256 | Curve::BnP256 | Curve::BnP638
            ) {
                let m = Model::of(curve);
                let e = big(digest) % &m.n;
                let (mr, ms) = model_sm2_sign(&m, &big(&d.to_bytes()), &big(&k.to_bytes()), &e);
                assert_eq!((big(&r), big(&s)), (mr, ms), "{curve:?} {hash:?} model");
            }
            let mut other = digest.to_vec();
            other[0] ^= 1;
            assert!(!public::sm2_verify(&pk, &other, &r, &s));
            assert!(!public::sm2_verify(
                &fixed(curve, 9).public(),
                digest,
                &r,
                &s
            ));
            let zero = alloc::vec![0u8; curve.bytes()];
            let n = public::order(curve);
            let n_plus_r = (big(&n) + big(&r)).to_bytes_be();
            for (rr, ss) in [
                (&zero, &s),
                (&r, &zero),
                (&n, &s),
                (&r, &n),
                (&n_plus_r, &s),
            ] {
                assert!(!public::sm2_verify(&pk, digest, rr, ss));
            }
            // An ECDSA signature is no SM2 signature.
            if let Some((er, es)) = public::ecdsa_sign(&d, digest) {
                assert!(!public::sm2_verify(&pk, digest, &er, &es));
            }
        }
    }
}

/// On SM2 P-256 with a 32-byte digest, the TPM's SM2 signatures verify with
/// the `sm2` crate's verifier (which takes e as the digest, as the TPM does)
/// and the crate's signatures verify with the TPM's.
#[test]
fn sm2_signatures_interoperate_with_the_sm2_crate() {
    use p256::ecdsa::signature::hazmat::{PrehashSigner, PrehashVerifier};
    for i in 0..4u8 {
        let d = fixed(Curve::Sm2P256, 20 + i);
        let k = fixed(Curve::Sm2P256, 40 + i);
        let digest = HashAlg::Sha256.digest(&[b"interop", &[i]]);
        let digest = digest.as_bytes();
        let (r, s) = public::sm2_sign(&d, &k, digest).unwrap();
        let EcScalar::Sm2P256(ds) = d else { panic!() };
        let key = sm2::dsa::SigningKey::from_nonzero_scalar("1234567812345678", ds).unwrap();
        let sig = sm2::dsa::Signature::from_slice(&[r.clone(), s.clone()].concat()).unwrap();
        key.verifying_key().verify_prehash(digest, &sig).unwrap();
        let theirs: sm2::dsa::Signature = key.sign_prehash(digest).unwrap();
        let b = theirs.to_bytes();
        assert!(public::sm2_verify(&d.public(), digest, &b[..32], &b[32..]));
        assert!(!public::sm2_verify(
            &d.public(),
            &[0u8; 32],
            &b[..32],
            &b[32..]
        ));
    }
}

/// ECDSA on the new curves and the BN curves: the TPM's signatures verify
/// with the `p192` and `p224` crates' verifiers and the model's verification
/// equation, and tampered ones fail.
#[test]
fn ecdsa_on_the_new_curves_verifies_with_their_crates() {
    use p256::ecdsa::signature::hazmat::PrehashVerifier;
    for curve in NEW_CURVES.into_iter().chain(BN_CURVES) {
        for hash in [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha512] {
            let d = fixed(curve, 3);
            let digest = hash.digest(&[b"ecdsa"]);
            let digest = digest.as_bytes();
            let (r, s) = public::ecdsa_sign(&d, digest).unwrap();
            let pk = d.public();
            assert!(
                public::ecdsa_verify(&pk, digest, &r, &s),
                "{curve:?} {hash:?}"
            );
            let mut bad = s.clone();
            bad[3] ^= 1;
            assert!(!public::ecdsa_verify(&pk, digest, &r, &bad));
            let sig = [r.clone(), s.clone()].concat();
            match pk {
                public::EcPublic::P192(q) => {
                    let vk = p192::ecdsa::VerifyingKey::from(q);
                    let sig = p192::ecdsa::Signature::from_slice(&sig).unwrap();
                    vk.verify_prehash(digest, &sig).unwrap();
                }
                public::EcPublic::P224(q) => {
                    let vk = p224::ecdsa::VerifyingKey::from(q);
                    let sig = p224::ecdsa::Signature::from_slice(&sig).unwrap();
                    vk.verify_prehash(digest, &sig).unwrap();
                }
                _ => {}
            }
            // The model: with z the digest's leftmost bits of n's size,
            // x(u1·G + u2·Q) mod n = r.
            let m = Model::of(curve);
            let zb = &digest[..digest.len().min(curve.bytes())];
            let z = big(zb) % &m.n;
            let w = big(&s).modpow(&(&m.n - 2u32), &m.n);
            let (u1, u2) = (&z * &w % &m.n, big(&r) * &w % &m.n);
            let (qx, qy) = pk.xy();
            let sum = m.add(
                &m.mul(&u1, &m.gen()),
                &m.mul(&u2, &Some((big(&qx), big(&qy)))),
            );
            assert_eq!(sum.unwrap().0 % &m.n, big(&r), "{curve:?} model");
        }
    }
}

/// The MQV and SM2 exchanges agree from both sides on every curve and equal
/// the model's Z (SP 800-56A §5.7.2.3: implicitSig = de + avf(QeA)·ds,
/// P = implicitSig·(QeB + avf(QeB)·QsB), avf(Q) = (x mod 2^f) + 2^f with f =
/// ⌈⌈log2 n⌉/2⌉; GB/T 32918.3: t = d + x̄(R)·r, V = t·(P + x̄(R')·R'), with
/// libtpms's x̄ = (x mod 2^keep) OR 2^set of [`public::sm2_avf_bits`], not
/// the standard's x̄ = (x mod 2^w) + 2^w, w = f − 1, which gives another Z).
#[test]
fn mqv_and_sm2_exchanges_agree_and_follow_their_definitions() {
    for curve in Curve::ALL {
        for scheme in [TwoPhase::Mqv, TwoPhase::Sm2] {
            let (dsa, dea, dsb, deb) = (
                fixed(curve, 50),
                fixed(curve, 51),
                fixed(curve, 52),
                fixed(curve, 53),
            );
            let xy = |d: &EcScalar| d.public().xy();
            let (qsa, qea, qsb, qeb) = (xy(&dsa), xy(&dea), xy(&dsb), xy(&deb));
            let za = public::two_phase_z(scheme, &dsa, &dea, (&qsb.0, &qsb.1), (&qeb.0, &qeb.1))
                .unwrap();
            let zb = public::two_phase_z(scheme, &dsb, &deb, (&qsa.0, &qsa.1), (&qea.0, &qea.1))
                .unwrap();
            assert_eq!(za, zb, "{curve:?} {scheme:?}");
            // Not plain ECDH of either pair.
            assert_ne!(Some(za.clone()), public::ecdh_point(&dsa, &qsb.0, &qsb.1));
            assert_ne!(Some(za.clone()), public::ecdh_point(&dea, &qeb.0, &qeb.1));
            // The other scheme gives another Z.
            let other = match scheme {
                TwoPhase::Mqv => TwoPhase::Sm2,
                TwoPhase::Sm2 => TwoPhase::Mqv,
            };
            let zo = public::two_phase_z(other, &dsa, &dea, (&qsb.0, &qsb.1), (&qeb.0, &qeb.1));
            assert_ne!(zo, Some(za.clone()));
            if !NEW_CURVES.contains(&curve) && !BN_CURVES.contains(&curve) {
                continue;
            }
            let m = Model::of(curve);
            let f = (m.n.bits()).div_ceil(2);
            let one = BigUint::from(1u32);
            let one = &one;
            let standard = |w: usize| move |x: &[u8]| (big(x) % (one << w)) + (one << w);
            let (keep, set) = public::sm2_avf_bits(m.n.bits());
            let libtpms = |x: &[u8]| (big(x) % (one << keep)) | (one << set);
            let [ds, de] = [&dsa, &dea].map(|d| big(&d.to_bytes()));
            let pt = |q: &(Vec<u8>, Vec<u8>)| Some((big(&q.0), big(&q.1)));
            let sm2 = |avf: &dyn Fn(&[u8]) -> BigUint| {
                let t = (&ds + avf(&qea.0) * &de) % &m.n;
                let sum = m.add(&pt(&qsb), &m.mul(&avf(&qeb.0), &pt(&qeb)));
                m.mul(&t, &sum)
            };
            let z = match scheme {
                TwoPhase::Mqv => {
                    let avf = standard(f);
                    let sig = (&de + avf(&qea.0) * &ds) % &m.n;
                    let sum = m.add(&pt(&qeb), &m.mul(&avf(&qeb.0), &pt(&qsb)));
                    m.mul(&sig, &sum)
                }
                TwoPhase::Sm2 => {
                    assert_ne!(
                        sm2(&standard(f - 1)),
                        Some((big(&za.0), big(&za.1))),
                        "{curve:?}: GB/T 32918.3's x̄ gives another Z"
                    );
                    sm2(&libtpms)
                }
            };
            assert_eq!(
                z,
                Some((big(&za.0), big(&za.1))),
                "{curve:?} {scheme:?} model"
            );
        }
    }
}

/// libtpms's SM2 x̄ = (x mod 2^keep) OR 2^set for each order size, worked
/// out by hand from its helpers (w = ⌊msb(n)/2⌋ − 1; the mask keeps the low
/// 64 − w mod 64 bits of w's word; a 32-bit shift sets bit w mod 64 mod 32
/// of it), next to GB/T 32918.3's w = ⌈⌈log2 n⌉/2⌉ − 1.
#[test]
fn sm2_associate_values_are_libtpms_per_order_size() {
    for (curve, bits, keep_set, gbt_w) in [
        (Curve::P192, 192, (98, 94), 95),
        (Curve::P224, 224, (82, 78), 111),
        (Curve::P256, 256, (66, 94), 127),
        (Curve::Sm2P256, 256, (66, 94), 127),
        (Curve::BnP256, 256, (66, 94), 127),
        (Curve::P384, 384, (130, 158), 191),
        (Curve::P521, 521, (317, 259), 260),
        (Curve::BnP638, 638, (259, 285), 318),
    ] {
        assert_eq!(curve.order_bits(), bits, "{curve:?}");
        assert_eq!(public::sm2_avf_bits(bits), keep_set, "{curve:?}");
        assert_eq!(bits.div_ceil(2) - 1, gbt_w);
        assert_ne!(keep_set, (gbt_w, gbt_w));
    }
}

/// Known answers of Debian's swtpm (libtpms 0.9.2), recorded from its
/// TPM2_LoadExternal of d_sA, TPM2_EC_Ephemeral (Q_eA) and TPM2_ZGen_2Phase
/// (SM2) with party B's d_sB, d_eB: (curve, Q_eA x, y, Z1 x, y). Party B's
/// Z from the vTPM's [`public::two_phase_z`] over A's public points is
/// swtpm's Z1, on every curve where swtpm completes the exchange (on P-521
/// and BN P-638 it overflows its big numbers and enters failure mode).
/// `interop_sm2_key_exchange_with_swtpm` checks the same against a live swtpm.
const SWTPM_SM2_ANSWERS: [(Curve, &str, &str, &str, &str); 6] = [
    (
        Curve::P192,
        "a80b9363f252ce73bdd215329d9105c67f7d9c5d6b9fd90b",
        "93eac44591b88571e2d0e6f48e820c7db0611449a571b3d1",
        "f5653281d5a3a21aacfccbd9b7781b788ee031e32f2c9192",
        "c823f3900040d767e99a18150536d3a01154966ebeb8b7e3",
    ),
    (
        Curve::P224,
        "45367a52e05d6b4d2ed4ace3124c6354a250fcb0f8141b7c567c1fc6",
        "78025ca50aa62fc1ec9f3b70f2720923dac39fef8ca83868715740f0",
        "88125aa5d5f2442fe83ccbb0e55d476b937c5b635c76caed52939a01",
        "1b5a0082d7fdbb266acfad7910323c6b38cce45456cc519ed77cf29c",
    ),
    (
        Curve::P256,
        "a0fa6c53f567569e8e8a2f3e56af1c94c6831d67f6d34c97fda98b75238b7e47",
        "376df5d2144ab48f3ea027ab763988a025025bdd2b46fdba9dec3d0acd3846c9",
        "dca354aa7e1d134ab286cdfde8c311b54b8e51364d59c7c444423355930497d1",
        "39d9b6bb73d632d07323d2ff3758f8fe4653f9f0a4406d00f62936f286c84389",
    ),
    (
        Curve::P384,
        concat!(
            "ab65c31403094fef152d7f649983c1b960f8a0724c3aeb83",
            "3dce29a9d36c6293f733378c929d8f03f842486adcb2f7b2"
        ),
        concat!(
            "998b2003e6c4b30eb76eea60de8bcb15cc3b2786e7d41d53",
            "b2f4e9259ab31616dcb4b07348fca790fef54b39859418d5"
        ),
        concat!(
            "9cca452c088493647e87da6a5a7b1507e3f9ac64f40dbde2",
            "e2737a3f3d173b20a0bf4c2b246f0189e53c6f49e2f50241"
        ),
        concat!(
            "32b9a30b135f44bd25110f4ebc2c76c67c929282830d874b",
            "75dbcaf6dc0e69ccd40f3d0b9072b35bb4e5eefc978bdddd"
        ),
    ),
    (
        Curve::Sm2P256,
        "f3131e0302048bc7f8b86259d3f1813b567967ee9953da70d6c47d6693fce4fc",
        "917d125bf21c8fcb9b008e4aa23148823e4ee4e502fb211368816a29e35f6e42",
        "62211ee2094e5db6573e18b6c244958eba173f300a983599df5cce835bdf0e77",
        "3d9ec20c610f085d145fd93699508d128eadd8ed1341babcab083e25bb8904c3",
    ),
    (
        Curve::BnP256,
        "72d3a229cde60e8cd021981e45927f8b3785270a669fa2c83b3f70d340d87343",
        "825bbba1920bd818534df18ecf48cebf6f20a879c6e6d5963cb81f551552c33a",
        "61b481893a7244dfc66dcfc91e7ea483dc2e5f3aed2b612f374b7669dbd733e7",
        "84d5d8f224a31ee51138b5d20ea1bead95ee826846bae87c4cad0523b4576300",
    ),
];

#[test]
fn sm2_exchange_gives_swtpms_recorded_z() {
    // The private keys of the recording, below every order here.
    let (ds_a, ds_b, de_b) = (
        "1234567890abcdef1234567890abcdef",
        "02234567890abcdef1234567890abcdef12345",
        "3234567890abcdef1234567890abcdef12345678",
    );
    for (curve, qex, qey, zx, zy) in SWTPM_SM2_ANSWERS {
        let scalar = |h: &str| {
            let mut v = alloc::vec![0u8; curve.bytes()];
            let b = bytes(h);
            let n = v.len();
            v[n - b.len()..].copy_from_slice(&b);
            public::scalar_from_bytes(curve, &v).unwrap()
        };
        let qs_a = scalar(ds_a).public().xy();
        let z = public::two_phase_z(
            TwoPhase::Sm2,
            &scalar(ds_b),
            &scalar(de_b),
            (&qs_a.0, &qs_a.1),
            (&bytes(qex), &bytes(qey)),
        );
        assert_eq!(z, Some((bytes(zx), bytes(zy))), "{curve:?}");
    }
}

fn ecc_template(curve: Curve, scheme: Option<(u16, HashAlg)>, attributes: u32) -> Public {
    Public {
        ty: ids::ECC,
        name_alg: HashAlg::Sha256,
        attributes,
        auth_policy: Vec::new(),
        symmetric: SymObject::Null,
        scheme,
        x: Vec::new(),
        y: Vec::new(),
        exponent: 0,
        rsa_bits: 0,
        ecdaa_count: 0,
        curve,
    }
}

const BASE: u32 = attr::FIXED_TPM
    | attr::FIXED_PARENT
    | attr::SENSITIVE_DATA_ORIGIN
    | attr::USER_WITH_AUTH
    | attr::NO_DA;

/// (handle, public area) of a new primary key.
fn primary(t: &mut Tpm, p: &Public) -> (u32, Public) {
    let (code, h, pubk) = create_primary(t, handle::OWNER, p, b"", b"");
    assert_eq!(code, 0, "CreatePrimary {p:?}");
    (h, Public::unmarshal(&mut Reader::new(&pubk)).unwrap())
}

/// A TPMT_SIGNATURE of `scheme` with `hash` and (r, s).
fn signature(scheme: u16, hash: HashAlg, r: &[u8], s: &[u8]) -> Vec<u8> {
    let mut w = Writer::new();
    w.u16(scheme).u16(hash.id()).tpm2b(r).tpm2b(s);
    w.buf
}

/// TPM2_Sign and TPM2_VerifySignature with SM2 keys on each curve (the
/// key's scheme, or a NULL-scheme key with the scheme named by the command):
/// the signatures verify with the host's SM2 verification; VerifySignature
/// accepts them, and refuses another digest (TPM_RC_SIGNATURE), r = 0, a
/// hash other than the key's (TPM_RC_SCHEME at Sign), and SM2 with an RSA
/// key.
#[test]
fn sm2_keys_sign_and_verify_through_the_command_interface() {
    let mut t = started();
    let sig_rc = rc::SIGNATURE + rc::P + 2 * rc::N1;
    for curve in Curve::ALL {
        let p = ecc_template(curve, Some((ids::SM2, HashAlg::Sha256)), BASE | attr::SIGN);
        let (h, pubk) = primary(&mut t, &p);
        let digest = HashAlg::Sha256.digest(&[b"command"]);
        let digest = digest.as_bytes();
        let r = sign(&mut t, h, b"", digest, None);
        let sig = params_of(&r).to_vec();
        let mut rd = Reader::new(&sig);
        assert_eq!(rd.u16().unwrap(), ids::SM2);
        assert_eq!(rd.u16().unwrap(), HashAlg::Sha256.id());
        let (sr, ss) = (
            rd.tpm2b(public::MAX_ECC_BYTES).unwrap(),
            rd.tpm2b(public::MAX_ECC_BYTES).unwrap(),
        );
        assert_eq!(rd.remaining(), 0);
        let pk = pubk.point().unwrap();
        assert!(public::sm2_verify(&pk, digest, sr, ss), "{curve:?}");
        assert!(!public::ecdsa_verify(&pk, digest, sr, ss), "{curve:?}");
        assert_eq!(rc_of(&verify(&mut t, h, digest, &sig)), 0, "{curve:?}");
        let mut other = digest.to_vec();
        other[5] ^= 0x80;
        assert_eq!(rc_of(&verify(&mut t, h, &other, &sig)), sig_rc);
        let zero = alloc::vec![0u8; curve.bytes()];
        let bad = signature(ids::SM2, HashAlg::Sha256, &zero, ss);
        assert_eq!(rc_of(&verify(&mut t, h, digest, &bad)), sig_rc);
        // The same (r, s) as ECDSA does not verify either.
        let as_ecdsa = signature(ids::ECDSA, HashAlg::Sha256, sr, ss);
        assert_eq!(rc_of(&verify(&mut t, h, digest, &as_ecdsa)), sig_rc);
        // The command naming another hash than the key's scheme.
        let mut w = Writer::new();
        w.tpm2b(digest)
            .u16(ids::SM2)
            .u16(HashAlg::Sha384.id())
            .u16(crate::defs::st::HASHCHECK)
            .u32(handle::NULL)
            .tpm2b(&[]);
        let r = t.execute(0, &command(cc::SIGN, &[h], &[b""], &w.buf));
        assert_eq!(rc_of(&r), rc::SCHEME + rc::P + 2 * rc::N1);
        crate::object_tests::flush(&mut t, h);
    }
    // A NULL-scheme signing key signs with the SM2 scheme the command names.
    let p = ecc_template(Curve::Sm2P256, None, BASE | attr::SIGN);
    let (h, pubk) = primary(&mut t, &p);
    let digest = HashAlg::Sha384.digest(&[b"null scheme"]);
    let mut w = Writer::new();
    w.tpm2b(digest.as_bytes())
        .u16(ids::SM2)
        .u16(HashAlg::Sha384.id())
        .u16(crate::defs::st::HASHCHECK)
        .u32(handle::NULL)
        .tpm2b(&[]);
    let r = t.execute(0, &command(cc::SIGN, &[h], &[b""], &w.buf));
    let sig = params_of(&r).to_vec();
    let mut rd = Reader::new(&sig[4..]);
    let (sr, ss) = (
        rd.tpm2b(public::MAX_ECC_BYTES).unwrap(),
        rd.tpm2b(public::MAX_ECC_BYTES).unwrap(),
    );
    assert!(public::sm2_verify(
        &pubk.point().unwrap(),
        digest.as_bytes(),
        sr,
        ss
    ));
    assert_eq!(rc_of(&verify(&mut t, h, digest.as_bytes(), &sig)), 0);
    // SM2 on an RSA key: the scheme does not suit the key.
    let mut rsa = ecc_template(Curve::P256, None, BASE | attr::SIGN);
    rsa.ty = ids::RSA;
    rsa.rsa_bits = 2048;
    let (rh, _) = primary(&mut t, &rsa);
    let r = t.execute(0, &command(cc::SIGN, &[rh], &[b""], &w.buf));
    assert_eq!(rc_of(&r), rc::SCHEME + rc::P + 2 * rc::N1);
    let fake = signature(ids::SM2, HashAlg::Sha384, &[1; 32], &[1; 32]);
    let r = verify(&mut t, rh, digest.as_bytes(), &fake);
    assert_eq!(rc_of(&r), rc::SCHEME + rc::P + 2 * rc::N1);
}

/// Key creation checks the SM2 and ECMQV schemes against the key's use:
/// SM2 suits a signing key or a decrypt (key-exchange) key but not one that
/// does both; ECMQV only a decrypt key (TPM_RC_SCHEME). A malformed SM2
/// signature (a coordinate longer than the largest curve's) is TPM_RC_SIZE.
#[test]
fn sm2_and_ecmqv_key_schemes_suit_the_keys_use() {
    let mut t = started();
    let sm2 = Some((ids::SM2, HashAlg::Sha256));
    let mqv = Some((ids::ECMQV, HashAlg::Sha256));
    for (scheme, attrs, ok) in [
        (sm2, attr::SIGN, true),
        (sm2, attr::DECRYPT, true),
        (sm2, attr::SIGN | attr::DECRYPT, false),
        (mqv, attr::DECRYPT, true),
        (mqv, attr::SIGN, false),
        (mqv, attr::SIGN | attr::DECRYPT, false),
    ] {
        let p = ecc_template(Curve::Sm2P256, scheme, BASE | attrs);
        let (code, h, _) = create_primary(&mut t, handle::OWNER, &p, b"", b"");
        let want = if ok {
            0
        } else {
            rc::SCHEME + rc::P + 2 * rc::N1
        };
        assert_eq!(code, want, "{scheme:?} {attrs:#x}");
        if ok {
            crate::object_tests::flush(&mut t, h);
        }
    }
    let p = ecc_template(Curve::Sm2P256, sm2, BASE | attr::SIGN);
    let (h, _) = primary(&mut t, &p);
    let long = signature(ids::SM2, HashAlg::Sha256, &[1; 81], &[1; 32]);
    let r = verify(&mut t, h, &[0; 32], &long);
    assert_eq!(rc_of(&r), rc::SIZE + rc::P + 2 * rc::N1);
}

/// TPM2_EC_Ephemeral + TPM2_ZGen_2Phase with the ECMQV and SM2 schemes:
/// the TPM's Z1 (party A: its static key and the committed ephemeral key)
/// equals the Z party B computes from A's static and ephemeral points, Z2 is
/// the empty point, the commitment is used once (TPM_RC_VALUE), a key of
/// another scheme refuses the command's (TPM_RC_SCHEME), and a point off the
/// curve is TPM_RC_ECC_POINT.
#[test]
fn zgen_2phase_ecmqv_and_sm2_agree_with_the_other_party() {
    let mut t = started();
    for curve in Curve::ALL {
        for (scheme_id, scheme) in [(ids::ECMQV, TwoPhase::Mqv), (ids::SM2, TwoPhase::Sm2)] {
            let p = ecc_template(
                curve,
                Some((scheme_id, HashAlg::Sha256)),
                BASE | attr::DECRYPT,
            );
            let (h, pubk) = primary(&mut t, &p);
            let r = t.execute(
                0,
                &command(cc::EC_EPHEMERAL, &[], &[], &curve.id().to_be_bytes()),
            );
            let mut rd = Reader::new(params_of(&r));
            let mut q = Reader::new(rd.tpm2b(200).unwrap());
            let (qe_ax, qe_ay) = (
                q.tpm2b(public::MAX_ECC_BYTES).unwrap().to_vec(),
                q.tpm2b(public::MAX_ECC_BYTES).unwrap().to_vec(),
            );
            let counter = rd.u16().unwrap();
            let (dsb, deb) = (fixed(curve, 60), fixed(curve, 61));
            let (qs_b, qe_b) = (dsb.public().xy(), deb.public().xy());
            let point = |x: &[u8], y: &[u8]| {
                let mut p = Writer::new();
                p.tpm2b(x).tpm2b(y);
                let mut w = Writer::new();
                w.tpm2b(&p.buf);
                w.buf
            };
            let zgen = |qs: &[u8], qe: &[u8], scheme: u16, counter: u16| {
                let mut w = Writer::new();
                w.bytes(qs).bytes(qe).u16(scheme).u16(counter);
                command(cc::ZGEN_2PHASE, &[h], &[b""], &w.buf)
            };
            let (qs, qe) = (point(&qs_b.0, &qs_b.1), point(&qe_b.0, &qe_b.1));
            // A key of this scheme refuses another scheme in the command.
            let r = t.execute(0, &zgen(&qs, &qe, ids::ECDH, counter));
            assert_eq!(rc_of(&r), rc::SCHEME + rc::P + 3 * rc::N1);
            // A static point off the curve.
            let mut off = qs_b.1.clone();
            *off.last_mut().unwrap() ^= 1;
            let r = t.execute(0, &zgen(&point(&qs_b.0, &off), &qe, scheme_id, counter));
            assert_eq!(rc_of(&r), rc::ECC_POINT + rc::P + rc::N1);
            let r = t.execute(0, &zgen(&qs, &qe, scheme_id, counter));
            let out = params_of(&r).to_vec();
            let mut rd = Reader::new(&out);
            let mut z1 = Reader::new(rd.tpm2b(200).unwrap());
            let z1 = (
                z1.tpm2b(public::MAX_ECC_BYTES).unwrap().to_vec(),
                z1.tpm2b(public::MAX_ECC_BYTES).unwrap().to_vec(),
            );
            assert_eq!(rd.tpm2b(200).unwrap(), &[0, 0, 0, 0], "Z2 empty");
            assert_eq!(rd.remaining(), 0);
            let zb = public::two_phase_z(scheme, &dsb, &deb, (&pubk.x, &pubk.y), (&qe_ax, &qe_ay))
                .unwrap();
            assert_eq!(z1, zb, "{curve:?} {scheme:?}");
            // The commitment is used up.
            let r = t.execute(0, &zgen(&qs, &qe, scheme_id, counter));
            assert_eq!(rc_of(&r), rc::VALUE + rc::P + 4 * rc::N1);
            crate::object_tests::flush(&mut t, h);
        }
    }
}

/// TPM_CAP_ALGS lists SM2 (asymmetric, signing, method) and ECMQV
/// (asymmetric, method) among 33 algorithms; TPM_CAP_ECC_CURVES lists
/// P-192, P-224, P-256, P-384, P-521 and SM2 P-256; TPM2_ECC_Parameters
/// describes the new curves and TPM2_TestParms accepts them with the SM2
/// and ECMQV schemes.
#[test]
fn capabilities_list_sm2_ecmqv_and_the_new_curves() {
    let mut t = started();
    let getcap = |t: &mut Tpm, capability: u32, property: u32| {
        let mut w = Writer::new();
        w.u32(capability).u32(property).u32(1000);
        let r = t.execute(0, &command(cc::GET_CAPABILITY, &[], &[], &w.buf));
        params_of(&r).to_vec()
    };
    let algs = getcap(&mut t, cap::ALGS, 0);
    let mut rd = Reader::new(&algs);
    assert_eq!(rd.u8().unwrap(), 0, "moreData");
    assert_eq!(rd.u32().unwrap(), cap::ALGS);
    let n = rd.u32().unwrap();
    assert_eq!(n, 33);
    let mut list = Vec::new();
    for _ in 0..n {
        list.push((rd.u16().unwrap(), rd.u32().unwrap()));
    }
    assert!(list.windows(2).all(|w| w[0].0 < w[1].0), "ascending");
    let sm2 = alg::ATTR_ASYMMETRIC | alg::ATTR_SIGNING | alg::ATTR_METHOD;
    assert!(list.contains(&(ids::SM2, sm2)), "{list:x?}");
    let mqv = alg::ATTR_ASYMMETRIC | alg::ATTR_METHOD;
    assert!(list.contains(&(ids::ECMQV, mqv)), "{list:x?}");
    let curves = getcap(&mut t, cap::ECC_CURVES, 0);
    assert_eq!(
        curves,
        [0, 0, 0, 0, 8, 0, 0, 0, 8, 0, 1, 0, 2, 0, 3, 0, 4, 0, 5, 0, 0x10, 0, 0x11, 0, 0x20]
    );
    for curve in NEW_CURVES {
        let r = t.execute(
            0,
            &command(cc::ECC_PARAMETERS, &[], &[], &curve.id().to_be_bytes()),
        );
        let mut rd = Reader::new(params_of(&r));
        assert_eq!(rd.u16().unwrap(), curve.id());
        assert_eq!(usize::from(rd.u16().unwrap()), 8 * curve.bytes());
        assert_eq!(rd.u16().unwrap(), alg::KDF1_SP800_56A);
        // The reference curve table's KDF hash: SHA-256, SM3-256 for SM2.
        let kdf_hash = if curve == Curve::Sm2P256 {
            0x0012
        } else {
            HashAlg::Sha256.id()
        };
        assert_eq!(rd.u16().unwrap(), kdf_hash);
        assert_eq!(rd.u16().unwrap(), alg::NULL);
        let m = Model::of(curve);
        let vals: Vec<BigUint> = (0..7)
            .map(|_| big(rd.tpm2b(public::MAX_ECC_BYTES).unwrap()))
            .collect();
        assert_eq!(rd.remaining(), 0);
        assert_eq!((&vals[0], &vals[1]), (&m.p, &m.a));
        assert_eq!((&vals[3], &vals[4], &vals[5]), (&m.g.0, &m.g.1, &m.n));
        assert!(m.on_curve(&m.gen(), &vals[2]));
        for (scheme, hash) in [(ids::SM2, 0x000B), (ids::ECMQV, 0x000C)] {
            let mut w = Writer::new();
            w.u16(ids::ECC)
                .u16(alg::NULL)
                .u16(scheme)
                .u16(hash)
                .u16(curve.id())
                .u16(alg::NULL);
            let r = t.execute(0, &command(cc::TEST_PARMS, &[], &[], &w.buf));
            assert_eq!(rc_of(&r), 0, "TestParms {curve:?} {scheme:#x}");
        }
    }
}

/// A peer's point whose x coordinate comes without its leading zero byte
/// (as OpenSSL encodes it) is the same point to ECDH (TPM2_ECDH_ZGen, the
/// seed of an ECC-wrapped import or credential), on every curve; a
/// coordinate longer than the field is still refused.
#[test]
fn ecdh_takes_coordinates_without_leading_zeros() {
    for curve in Curve::ALL {
        let d = fixed(curve, 90);
        let peer = (0u8..=255)
            .map(|i| fixed(curve, i).public().xy())
            .find(|(x, _)| x[0] == 0)
            .expect("a point with a leading zero in x");
        let full = public::ecdh_point(&d, &peer.0, &peer.1).unwrap();
        let short = public::ecdh_point(&d, &peer.0[1..], &peer.1).unwrap();
        assert_eq!(full, short, "{curve:?}");
        let mut long = alloc::vec![1u8];
        long.extend(&peer.0);
        assert_eq!(public::ecdh_point(&d, &long, &peer.1), None, "{curve:?}");
    }
}

/// A TPM with an SM2 signing key and an ECMQV decrypt key on SM2 P-256 and
/// one outstanding commitment, and commands that reach the new code paths:
/// Sign and VerifySignature with SM2, ZGen_2Phase with ECMQV and SM2,
/// EC_Ephemeral, ECC_Parameters and TestParms on the new curves, and
/// CreatePrimary of a P-192 key.
fn fuzz_state_and_seeds() -> (Tpm, Vec<Vec<u8>>) {
    let mut t = started();
    let sm2 = Some((ids::SM2, HashAlg::Sha256));
    let (signer, _) = primary(
        &mut t,
        &ecc_template(Curve::Sm2P256, sm2, BASE | attr::SIGN),
    );
    let mqv = Some((ids::ECMQV, HashAlg::Sha256));
    let (kx, _) = primary(
        &mut t,
        &ecc_template(Curve::Sm2P256, mqv, BASE | attr::DECRYPT),
    );
    let r = t.execute(
        0,
        &command(cc::EC_EPHEMERAL, &[], &[], &ids::SM2_P256.to_be_bytes()),
    );
    let counter = u16::from_be_bytes(params_of(&r)[params_of(&r).len() - 2..].try_into().unwrap());
    let digest = [7u8; 32];
    let sig = params_of(&sign(&mut t, signer, b"", &digest, None)).to_vec();
    let mut verify = Writer::new();
    verify.tpm2b(&digest).bytes(&sig);
    let (qs, qe) = (
        fixed(Curve::Sm2P256, 1).public().xy(),
        fixed(Curve::Sm2P256, 2).public().xy(),
    );
    let zgen = |scheme: u16| {
        let mut w = Writer::new();
        for (x, y) in [&qs, &qe] {
            let mut p = Writer::new();
            p.tpm2b(x).tpm2b(y);
            w.tpm2b(&p.buf);
        }
        w.u16(scheme).u16(counter);
        command(cc::ZGEN_2PHASE, &[kx], &[b""], &w.buf)
    };
    let mut sign_cmd = Writer::new();
    sign_cmd
        .tpm2b(&digest)
        .u16(ids::SM2)
        .u16(HashAlg::Sha256.id())
        .u16(crate::defs::st::HASHCHECK)
        .u32(handle::NULL)
        .tpm2b(&[]);
    let mut parms = Writer::new();
    parms
        .u16(ids::ECC)
        .u16(alg::NULL)
        .u16(ids::SM2)
        .u16(HashAlg::Sha256.id())
        .u16(ids::SM2_P256)
        .u16(alg::NULL);
    let mut create = Writer::new();
    let mut sens = Writer::new();
    sens.tpm2b(b"").tpm2b(b"");
    let p192 = ecc_template(
        Curve::P192,
        Some((ids::ECDSA, HashAlg::Sha256)),
        BASE | attr::SIGN,
    );
    create
        .tpm2b(&sens.buf)
        .tpm2b(&p192.marshal())
        .tpm2b(&[])
        .u32(0);
    let seeds = alloc::vec![
        command(cc::SIGN, &[signer], &[b""], &sign_cmd.buf),
        command(cc::VERIFY_SIGNATURE, &[signer], &[], &verify.buf),
        zgen(ids::ECMQV),
        zgen(ids::SM2),
        command(cc::EC_EPHEMERAL, &[], &[], &ids::NIST_P224.to_be_bytes()),
        command(cc::ECC_PARAMETERS, &[], &[], &ids::SM2_P256.to_be_bytes()),
        command(cc::TEST_PARMS, &[], &[], &parms.buf),
        command(cc::CREATE_PRIMARY, &[handle::OWNER], &[b""], &create.buf),
    ];
    (t, seeds)
}

/// Unmutated, the seeds succeed (but the SM2 exchange with the ECMQV key).
#[test]
fn sm2_fuzz_seeds_reach_their_success_paths() {
    let n = fuzz_state_and_seeds().1.len();
    for i in 0..n {
        let (mut t, seeds) = fuzz_state_and_seeds();
        let r = t.execute(0, &seeds[i]);
        let want = if i == 3 {
            rc::SCHEME + rc::P + 3 * rc::N1
        } else {
            0
        };
        assert_eq!(rc_of(&r), want, "seed {i}: {r:02x?}");
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 192, ..Default::default() })]

    /// Mutated SM2, ECMQV and new-curve commands get a well-formed response
    /// (an error code or a result), never a panic, and the TPM answers
    /// afterwards.
    #[test]
    fn mutated_sm2_and_ecmqv_commands_never_panic(
        seed in 0usize..8,
        flips in proptest::collection::vec((proptest::prelude::any::<u16>(), proptest::prelude::any::<u8>()), 0..6),
        cut in proptest::option::of(proptest::prelude::any::<u16>()),
        fix_size in proptest::prelude::any::<bool>(),
    ) {
        let (mut t, seeds) = fuzz_state_and_seeds();
        let mut c = seeds[seed % seeds.len()].clone();
        for (at, x) in flips {
            let n = c.len();
            c[at as usize % n] ^= x;
        }
        if let Some(cut) = cut {
            c.truncate(cut as usize % (c.len() + 1));
        }
        if fix_size && c.len() >= 6 {
            let n = c.len() as u32;
            c[2..6].copy_from_slice(&n.to_be_bytes());
        }
        let r = t.execute(0, &c);
        crate::fuzz_tests::check_response(&c, &r);
        let r = t.execute(0, &command(cc::GET_RANDOM, &[], &[], &[0, 4]));
        crate::fuzz_tests::check_response(&[], &r);
    }
}

/// A TPM with a BN P-256 ECDSA signing key and a BN P-638 ECDH key, and
/// commands on the BN curves that succeed on it: Sign, VerifySignature,
/// ECDH_ZGen, EC_Ephemeral, ECC_Parameters, TestParms (EC Schnorr) and
/// CreatePrimary of a BN P-638 key.
fn bn_fuzz_state_and_seeds() -> (Tpm, Vec<Vec<u8>>) {
    let mut t = started();
    let ecdsa = Some((ids::ECDSA, HashAlg::Sha256));
    let (signer, _) = primary(
        &mut t,
        &ecc_template(Curve::BnP256, ecdsa, BASE | attr::SIGN),
    );
    let ecdh = Some((ids::ECDH, HashAlg::Sha256));
    let (kx, _) = primary(
        &mut t,
        &ecc_template(Curve::BnP638, ecdh, BASE | attr::DECRYPT),
    );
    let digest = [7u8; 32];
    let sig = params_of(&sign(&mut t, signer, b"", &digest, None)).to_vec();
    let mut verify = Writer::new();
    verify.tpm2b(&digest).bytes(&sig);
    let (qx, qy) = fixed(Curve::BnP638, 3).public().xy();
    let mut point = Writer::new();
    point.tpm2b(&qx).tpm2b(&qy);
    let mut zgen = Writer::new();
    zgen.tpm2b(&point.buf);
    let mut sign_cmd = Writer::new();
    sign_cmd
        .tpm2b(&digest)
        .u16(ids::ECDSA)
        .u16(HashAlg::Sha256.id())
        .u16(crate::defs::st::HASHCHECK)
        .u32(handle::NULL)
        .tpm2b(&[]);
    let mut parms = Writer::new();
    parms
        .u16(ids::ECC)
        .u16(alg::NULL)
        .u16(ids::ECSCHNORR)
        .u16(HashAlg::Sha256.id())
        .u16(ids::BN_P256)
        .u16(alg::NULL);
    let mut create = Writer::new();
    let mut sens = Writer::new();
    sens.tpm2b(b"").tpm2b(b"");
    let p638 = ecc_template(Curve::BnP638, ecdsa, BASE | attr::SIGN);
    create
        .tpm2b(&sens.buf)
        .tpm2b(&p638.marshal())
        .tpm2b(&[])
        .u32(0);
    let seeds = alloc::vec![
        command(cc::SIGN, &[signer], &[b""], &sign_cmd.buf),
        command(cc::VERIFY_SIGNATURE, &[signer], &[], &verify.buf),
        command(cc::ECDH_ZGEN, &[kx], &[b""], &zgen.buf),
        command(cc::EC_EPHEMERAL, &[], &[], &ids::BN_P638.to_be_bytes()),
        command(cc::ECC_PARAMETERS, &[], &[], &ids::BN_P638.to_be_bytes()),
        command(cc::TEST_PARMS, &[], &[], &parms.buf),
        command(cc::CREATE_PRIMARY, &[handle::OWNER], &[b""], &create.buf),
    ];
    (t, seeds)
}

/// Unmutated, the BN seeds succeed, and ECDH_ZGen's Z is the model's.
#[test]
fn bn_fuzz_seeds_reach_their_success_paths() {
    let (mut t, seeds) = bn_fuzz_state_and_seeds();
    for (i, c) in seeds.iter().enumerate() {
        let r = t.execute(0, c);
        assert_eq!(rc_of(&r), 0, "seed {i}: {r:02x?}");
        if i == 2 {
            let mut rd = Reader::new(params_of(&r));
            let mut z = Reader::new(rd.tpm2b(200).unwrap());
            let (zx, zy) = (z.tpm2b(80).unwrap(), z.tpm2b(80).unwrap());
            assert_eq!((zx.len(), zy.len()), (80, 80));
            let q = fixed(Curve::BnP638, 3).public();
            assert!(public::EcPublic::from_xy(Curve::BnP638, zx, zy).is_some());
            assert_ne!((zx.to_vec(), zy.to_vec()), q.xy());
        }
    }
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 64, ..Default::default() })]

    /// Mutated commands on the BN curves get a well-formed response (an
    /// error code or a result), never a panic, and the TPM answers
    /// afterwards.
    #[test]
    fn mutated_bn_curve_commands_never_panic(
        seed in 0usize..7,
        flips in proptest::collection::vec((proptest::prelude::any::<u16>(), proptest::prelude::any::<u8>()), 0..6),
        cut in proptest::option::of(proptest::prelude::any::<u16>()),
        fix_size in proptest::prelude::any::<bool>(),
    ) {
        let (mut t, seeds) = bn_fuzz_state_and_seeds();
        let mut c = seeds[seed % seeds.len()].clone();
        for (at, x) in flips {
            let n = c.len();
            c[at as usize % n] ^= x;
        }
        if let Some(cut) = cut {
            c.truncate(cut as usize % (c.len() + 1));
        }
        if fix_size && c.len() >= 6 {
            let n = c.len() as u32;
            c[2..6].copy_from_slice(&n.to_be_bytes());
        }
        let r = t.execute(0, &c);
        crate::fuzz_tests::check_response(&c, &r);
        let r = t.execute(0, &command(cc::GET_RANDOM, &[], &[], &[0, 4]));
        crate::fuzz_tests::check_response(&[], &r);
    }
}

/// BN keys through the commands a guest sends: a BN P-638 storage primary
/// (the same template gives the same key), a BN P-256 signing child created
/// under it, loaded and signing (verified with the key's point); the child's
/// context round-trips; the parent made persistent survives a power cycle
/// (NV layout) and loads the child again; a volatile snapshot keeps the
/// loaded child.
#[test]
fn bn_keys_create_load_persist_and_survive_snapshots() {
    use crate::object_tests::{create, flush, load, storage_template};
    use crate::tests::{new_tpm, startup, SharedNv, TestClock};
    let nv = SharedNv::default();
    let clock = TestClock::default();
    let mut t = new_tpm(&nv, &clock);
    assert_eq!(startup(&mut t, crate::defs::su::CLEAR), 0);
    let mut storage = storage_template();
    storage.curve = Curve::BnP638;
    let (parent, pp) = primary(&mut t, &storage);
    assert_eq!((pp.x.len(), pp.y.len()), (80, 80));
    let (again, pp2) = primary(&mut t, &storage);
    assert_eq!(pp2, pp);
    crate::object_tests::flush(&mut t, again);
    let tpl = ecc_template(
        Curve::BnP256,
        Some((ids::ECDSA, HashAlg::Sha256)),
        BASE | attr::SIGN,
    );
    let (code, private, public) = create(&mut t, parent, &tpl, b"", b"");
    assert_eq!(code, 0);
    let pk = Public::unmarshal(&mut Reader::new(&public))
        .unwrap()
        .point()
        .unwrap();
    let digest = HashAlg::Sha256.digest(&[b"bn child"]);
    let digest = digest.as_bytes();
    let signed_by = |t: &mut Tpm, key: u32| {
        let r = sign(t, key, b"", digest, None);
        assert_eq!(rc_of(&r), 0, "{r:02x?}");
        let mut rd = Reader::new(params_of(&r));
        assert_eq!((rd.u16().unwrap(), rd.u16().unwrap()), (ids::ECDSA, 0x0B));
        let (r, s) = (rd.tpm2b(32).unwrap(), rd.tpm2b(32).unwrap());
        assert!(public::ecdsa_verify(&pk, digest, r, s));
    };
    let r = load(&mut t, parent, &private, &public);
    assert_eq!(rc_of(&r), 0);
    let key = u32::from_be_bytes(r[10..14].try_into().unwrap());
    signed_by(&mut t, key);
    // The child's context round-trips.
    let r = t.execute(0, &command(cc::CONTEXT_SAVE, &[key], &[], &[]));
    assert_eq!(rc_of(&r), 0);
    let ctx = params_of(&r).to_vec();
    flush(&mut t, key);
    let r = t.execute(0, &command(cc::CONTEXT_LOAD, &[], &[], &ctx));
    assert_eq!(rc_of(&r), 0);
    let key = u32::from_be_bytes(r[10..14].try_into().unwrap());
    signed_by(&mut t, key);
    // A volatile snapshot keeps it.
    let blob = t.save_volatile();
    let mut u = new_tpm(&nv, &clock);
    u.restore_volatile(&blob).unwrap();
    signed_by(&mut u, key);
    drop(u);
    // The parent made persistent outlives a power cycle and loads the child.
    let ph = 0x8100_0638u32;
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
    let r = load(&mut t, ph, &private, &public);
    assert_eq!(rc_of(&r), 0, "{r:02x?}");
    let key = u32::from_be_bytes(r[10..14].try_into().unwrap());
    signed_by(&mut t, key);
}
