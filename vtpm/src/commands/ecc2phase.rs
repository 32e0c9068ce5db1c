//! Two-phase ECC key exchange (Part 3 §14.5 TPM2_ZGen_2Phase, §19.3
//! TPM2_EC_Ephemeral). EC_Ephemeral commits to an ephemeral secret r —
//! derived from the reset cycle's commit nonce and a commit counter, never
//! stored — and returns Q = r·G with the counter; ZGen_2Phase uses the
//! commitment once: with the ECDH scheme (Full Unified Model),
//! Z1 = d_s·Q_sB and Z2 = r·Q_eB. TPM2_Commit (Part 3 §19.2) is the first
//! phase of an ECDAA signature: it commits to a secret r bound to the
//! signing key's Name, from the same commitment store, and returns
//! K = d·P2, L = r·P2 and E = r·P1 (or r·G); TPM2_Sign with the ECDAA scheme
//! ([`super::signing`]) uses it once. A commitment stays usable until it is
//! used, until COMMIT_WINDOW newer ones exist, or until the next TPM Reset.
//! All of it on NIST P-256, P-384 and P-521 (the secret derivation of
//! [`commit_secret`] names the curve).

use crate::defs::rc;
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::HashAlg;
use crate::marshal::{Reader, Writer};
use crate::nv::COMMIT_WINDOW;
use crate::public::{self, attr, ids};
use alloc::vec::Vec;

/// Label of the commit-secret derivation.
const COMMIT_LABEL: &[u8] = b"RayOS vTPM ECC commit";

/// Reads a TPM2B_ECC_POINT (parameter `n`) as (x, y). A point that does not
/// fill its size exactly is TPM_RC_SIZE.
pub(crate) fn read_point<'a>(r: &mut Reader<'a>, n: u32) -> Result<(&'a [u8], &'a [u8]), u32> {
    let size = r.u16().p(n)? as usize;
    let mut sub = r.sub(size).p(n)?;
    let size_rc = rc::SIZE + rc::P + n * rc::N1;
    let x = sub.tpm2b(public::MAX_ECC_BYTES).map_err(|_| size_rc)?;
    let y = sub.tpm2b(public::MAX_ECC_BYTES).map_err(|_| size_rc)?;
    if sub.remaining() != 0 {
        return Err(size_rc);
    }
    Ok((x, y))
}

fn write_point(w: &mut Writer, x: &[u8], y: &[u8]) {
    let mut p = Writer::new();
    p.tpm2b(x).tpm2b(y);
    w.tpm2b(&p.buf);
}

/// Reads a TPMI_ECC_CURVE: one of the implemented curves ([`public::Curve`]).
fn read_curve(r: &mut Reader, n: u32) -> Result<public::Curve, u32> {
    public::Curve::from_id(r.u16().p(n)?).ok_or(rc::CURVE + rc::P + n * rc::N1)
}

/// The secret of commitment `counter` on `curve`: on P-256, HMAC-SHA-256
/// keyed with the commit nonce over the label, the counter, the Name of the
/// signing key of a TPM2_Commit (empty for TPM2_EC_Ephemeral) and an
/// iteration byte, taken as a scalar (the next iteration if it is 0 or not
/// below the group order); on the other curves HMAC-SHA-512 over the same
/// and the curve ID, two blocks cut to the scalar size and the order's bits
/// (P-521's top byte to its one significant bit, BN P-638's to six).
pub(crate) fn commit_secret(
    tpm: &Tpm,
    counter: u64,
    name: &[u8],
    curve: public::Curve,
) -> public::EcScalar {
    let nonce = tpm.v.commit.nonce;
    let c = counter.to_be_bytes();
    if curve == public::Curve::P256 {
        let mut i = 0u8;
        loop {
            let d = HashAlg::Sha256.hmac(&nonce, &[COMMIT_LABEL, &c, name, &[i]]);
            if let Some(s) = public::p256_scalar(d.as_bytes()) {
                return public::EcScalar::P256(s);
            }
            i = i.wrapping_add(1);
        }
    }
    let id = curve.id().to_be_bytes();
    public::derive_scalar(curve, |i| {
        let i = i.to_be_bytes();
        let mut v = Vec::new();
        for block in [0u8, 1] {
            let h = HashAlg::Sha512.hmac(&nonce, &[COMMIT_LABEL, &c, name, &id, &i, &[block]]);
            v.extend_from_slice(h.as_bytes());
        }
        v.truncate(curve.bytes());
        // Cut to the order's bits (P-521: one bit of the first byte; BN
        // P-638: six).
        v[0] &= 0xFF >> (8 * curve.bytes() - curve.order_bits());
        v
    })
}

/// A new commitment on `curve`: its counter (the low 16 bits go to the
/// caller) and secret.
fn commit(tpm: &mut Tpm, curve: public::Curve) -> (u64, public::EcScalar) {
    let c = tpm.v.commit.counter;
    let r = commit_secret(tpm, c, &[], curve);
    mark_committed(tpm);
    (c, r)
}

/// Records the commitment of the next counter as issued and outstanding.
fn mark_committed(tpm: &mut Tpm) -> u64 {
    let c = tpm.v.commit.counter;
    tpm.v.commit.counter = c.wrapping_add(1);
    // The slot of the counter COMMIT_WINDOW back is reused.
    tpm.v.commit.outstanding |= 1 << (c % COMMIT_WINDOW);
    c
}

/// Marks the commitment of full counter `full` used.
pub(crate) fn end_commit(tpm: &mut Tpm, full: u64) {
    tpm.v.commit.outstanding &= !(1 << (full % COMMIT_WINDOW));
}

/// The full counter of an unused commitment whose low 16 bits are `c`.
pub(crate) fn outstanding(tpm: &Tpm, c: u16) -> Option<u64> {
    let next = tpm.v.commit.counter;
    // The newest counter below `next` with these low bits.
    let back = (next.wrapping_sub(1) as u16).wrapping_sub(c);
    let full = next.checked_sub(1)?.checked_sub(u64::from(back))?;
    let recent = next - full <= COMMIT_WINDOW;
    (recent && tpm.v.commit.outstanding & (1 << (full % COMMIT_WINDOW)) != 0).then_some(full)
}

/// MAX_ECC_KEY_BYTES (BN P-638's 80 bytes, as libtpms): the largest
/// TPM2B_ECC_PARAMETER the unmarshaller accepts; a larger coordinate than
/// the curve's is not on the curve.
const MAX_ECC_KEY_BYTES: usize = public::MAX_ECC_BYTES;

/// A coordinate in `n` big-endian bytes (leading zeros dropped or added), or
/// None if its value does not fit.
fn coordinate(c: &[u8], n: usize) -> Option<Vec<u8>> {
    let first = c.iter().position(|&b| b != 0).unwrap_or(c.len());
    let c = &c[first..];
    let mut out = alloc::vec![0u8; n];
    out.get_mut(n.checked_sub(c.len())?..)?.copy_from_slice(c);
    Some(out)
}

/// The (x, y) coordinates of a point as given.
type Coordinates<'a> = (&'a [u8], &'a [u8]);

/// A TPM2B_ECC_POINT (parameter `n`) with coordinates of any size the
/// reference unmarshaller accepts: (x, y), or None for an empty point (its
/// size covers no more than the two coordinate sizes).
fn read_any_point<'a>(r: &mut Reader<'a>, n: u32) -> Result<Option<Coordinates<'a>>, u32> {
    let size = r.u16().p(n)? as usize;
    let size_rc = rc::SIZE + rc::P + n * rc::N1;
    if size == 0 {
        return Err(size_rc);
    }
    let mut sub = r.sub(size).p(n)?;
    let x = sub.tpm2b(MAX_ECC_KEY_BYTES).p(n)?;
    let y = sub.tpm2b(MAX_ECC_KEY_BYTES).p(n)?;
    if sub.remaining() != 0 {
        return Err(size_rc);
    }
    Ok((size > 4).then_some((x, y)))
}

/// (x, y) as coordinates of the curve's size, if the point is on `curve`.
fn on_curve(curve: public::Curve, x: &[u8], y: &[u8]) -> Option<(Vec<u8>, Vec<u8>)> {
    let (x, y) = (coordinate(x, curve.bytes())?, coordinate(y, curve.bytes())?);
    public::EcPublic::from_xy(curve, &x, &y)?;
    Some((x, y))
}

/// The field prime p of `curve`.
fn prime(curve: public::Curve) -> Vec<u8> {
    let [p, ..] = super::signing::domain(curve).2;
    p
}

/// The empty TPM2B_ECC_POINT: two empty coordinates.
const EMPTY_POINT: [u8; 6] = [0, 4, 0, 0, 0, 0];

/// TPM2_Commit: signHandle (USER; an ECC key with the ECDAA scheme), P1
/// (TPM2B_ECC_POINT), s2 (TPM2B_SENSITIVE_DATA), y2 (TPM2B_ECC_PARAMETER) →
/// K, L, E (TPM2B_ECC_POINT), counter (UINT16). With P2 = (H_nameAlg(s2)
/// mod p, y2): K = d·P2 and L = r·P2; E = r·P1 if P1 is given, else r·G if
/// P2 is not; absent results are empty points.
pub fn commit_cmd(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let p1 = read_any_point(&mut cmd.params, 1)?;
    let s2 = cmd.params.tpm2b(crate::defs::limits::MAX_SYM_DATA).p(2)?;
    let y2 = cmd.params.tpm2b(MAX_ECC_KEY_BYTES).p(3)?;
    cmd.finish()?;
    let key = tpm.key(cmd.handles[0]).ok_or(rc::KEY + rc::H + rc::N1)?;
    if key.public.ty != ids::ECC {
        return Err(rc::KEY + rc::H + rc::N1);
    }
    let curve = key.public.curve;
    if !matches!(key.public.scheme, Some((ids::ECDAA, _))) {
        return Err(rc::SCHEME + rc::H + rc::N1);
    }
    if s2.is_empty() != y2.is_empty() {
        return Err(rc::SIZE + rc::P + 3 * rc::N1);
    }
    let p2 = if s2.is_empty() {
        None
    } else {
        // x2 = H_nameAlg(s2) mod p.
        let h = key.public.name_alg.digest(&[s2]);
        let prime = num_bigint_dig::BigUint::from_bytes_be(&prime(curve));
        let x2 = (num_bigint_dig::BigUint::from_bytes_be(h.as_bytes()) % prime).to_bytes_be();
        let p2 = on_curve(curve, &x2, y2).ok_or(rc::ECC_POINT + rc::P + 2 * rc::N1)?;
        Some(p2)
    };
    let d = key.private.as_deref().and_then(|p| key.public.scalar(p));
    if p2.is_some() && d.is_none() {
        return Err(rc::KEY + rc::H + rc::N1);
    }
    let p1 = match p1 {
        Some((x, y)) => Some(on_curve(curve, x, y).ok_or(rc::ECC_POINT + rc::P + rc::N1)?),
        None => None,
    };
    let r = commit_secret(tpm, tpm.v.commit.counter, &key.name, curve);
    let mut out = Writer::new();
    match (&p2, d) {
        (Some((x, y)), Some(d)) => {
            let k = public::ecdh_point(&d, x, y).ok_or(rc::NO_RESULT)?;
            let l = public::ecdh_point(&r, x, y).ok_or(rc::NO_RESULT)?;
            write_point(&mut out, &k.0, &k.1);
            write_point(&mut out, &l.0, &l.1);
        }
        _ => {
            out.bytes(&EMPTY_POINT).bytes(&EMPTY_POINT);
        }
    }
    match (p1, p2) {
        (Some((x, y)), _) => {
            let e = public::ecdh_point(&r, &x, &y).ok_or(rc::NO_RESULT)?;
            write_point(&mut out, &e.0, &e.1);
        }
        (None, None) => {
            let (x, y) = public_point(&r)?;
            write_point(&mut out, &x, &y);
        }
        (None, Some(_)) => {
            out.bytes(&EMPTY_POINT);
        }
    }
    let c = mark_committed(tpm);
    cmd.out.bytes(&out.buf);
    cmd.out.u16(c as u16);
    Ok(())
}

/// The x and y of r·G.
fn public_point(r: &public::EcScalar) -> Result<(Vec<u8>, Vec<u8>), u32> {
    Ok(r.public().xy())
}

/// TPM2_EC_Ephemeral: curveID → Q (TPM2B_ECC_POINT), counter (UINT16).
pub fn ec_ephemeral(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let curve = read_curve(&mut cmd.params, 1)?;
    cmd.finish()?;
    let (c, r) = commit(tpm, curve);
    let (x, y) = public_point(&r)?;
    write_point(&mut cmd.out, &x, &y);
    cmd.out.u16(c as u16);
    Ok(())
}

/// TPM2_ZGen_2Phase: keyA (USER; an unrestricted ECC decrypt key), inQsB,
/// inQeB (the other party's static and ephemeral points), inScheme
/// (TPMI_ECC_KEY_EXCHANGE), counter (of keyA's party's EC_Ephemeral) →
/// outZ1, outZ2. ECDH (Full Unified Model): Z1 = d_s·Q_sB, Z2 = r·Q_eB;
/// ECMQV (SP 800-56A §5.7.2.3) and SM2 (GB/T 32918.3's V/U): Z1 the single
/// shared point of [`public::two_phase_z`], Z2 the empty point. SM2 uses
/// libtpms's associate value, not the standard's ([`public::sm2_avf_bits`]):
/// the vTPM agrees with swtpm on Z, not with a GB/T 32918.3 peer. libtpms's
/// own ECMQV cannot run (it divides by a curve order it never loads and
/// enters failure mode), so ECMQV follows SP 800-56A.
pub fn zgen_2phase(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let (qs_x, qs_y) = read_point(&mut cmd.params, 1)?;
    let (qe_x, qe_y) = read_point(&mut cmd.params, 2)?;
    let scheme = cmd.params.u16().p(3)?;
    if !matches!(
        scheme,
        ids::ECDH | ids::ECMQV | ids::SM2 | crate::defs::alg::NULL
    ) {
        return Err(rc::SCHEME + rc::P + 3 * rc::N1);
    }
    let counter = cmd.params.u16().p(4)?;
    cmd.finish()?;
    let key = tpm.key(cmd.handles[0]).ok_or(rc::KEY + rc::H + rc::N1)?;
    if key.public.ty != ids::ECC {
        return Err(rc::KEY + rc::H + rc::N1);
    }
    if key.public.has(attr::RESTRICTED) || !key.public.has(attr::DECRYPT) {
        return Err(rc::ATTRIBUTES + rc::H + rc::N1);
    }
    let scheme = match key.public.scheme {
        Some((s, _)) if s != scheme => return Err(rc::SCHEME + rc::P + 3 * rc::N1),
        Some((s, _)) => s,
        None => scheme,
    };
    if !matches!(scheme, ids::ECDH | ids::ECMQV | ids::SM2) {
        return Err(rc::SCHEME + rc::P + 3 * rc::N1);
    }
    let curve = key.public.curve;
    let d = key
        .private
        .as_deref()
        .and_then(|p| key.public.scalar(p))
        .ok_or(rc::AUTH_UNAVAILABLE)?;
    let z1 = public::ecdh_point(&d, qs_x, qs_y).ok_or(rc::ECC_POINT + rc::P + rc::N1)?;
    // The other party's ephemeral point is checked before the commitment.
    public::ecdh_point(&d, qe_x, qe_y).ok_or(rc::ECC_POINT + rc::P + 2 * rc::N1)?;
    let Some(full) = outstanding(tpm, counter) else {
        log::warn!("vtpm: ZGen_2Phase: commitment {counter} unknown or used");
        return Err(rc::VALUE + rc::P + 4 * rc::N1);
    };
    let r = commit_secret(tpm, full, &[], curve);
    if scheme != ids::ECDH {
        let kind = if scheme == ids::ECMQV {
            public::TwoPhase::Mqv
        } else {
            public::TwoPhase::Sm2
        };
        // Both points are on the curve (checked above): no Z is the point
        // at infinity.
        let z =
            public::two_phase_z(kind, &d, &r, (qs_x, qs_y), (qe_x, qe_y)).ok_or(rc::NO_RESULT)?;
        end_commit(tpm, full);
        write_point(&mut cmd.out, &z.0, &z.1);
        cmd.out.bytes(&EMPTY_POINT);
        return Ok(());
    }
    let z2 = public::ecdh_point(&r, qe_x, qe_y).ok_or(rc::ECC_POINT + rc::P + 2 * rc::N1)?;
    end_commit(tpm, full);
    write_point(&mut cmd.out, &z1.0, &z1.1);
    write_point(&mut cmd.out, &z2.0, &z2.1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defs::{cc, su};
    use crate::tests::{command, new_tpm, params_of, startup, SharedNv, TestClock};
    use p256::elliptic_curve::sec1::{FromEncodedPoint, ToEncodedPoint};
    use p256::NonZeroScalar;

    fn started() -> Tpm {
        let mut t = new_tpm(&SharedNv::default(), &TestClock::default());
        assert_eq!(startup(&mut t, su::CLEAR), 0);
        t
    }

    fn ephemeral(t: &mut Tpm) -> (Vec<u8>, u16) {
        let r = t.execute(
            0,
            &command(cc::EC_EPHEMERAL, &[], &[], &ids::NIST_P256.to_be_bytes()),
        );
        let p = params_of(&r);
        let n = p.len();
        (
            p[..n - 2].to_vec(),
            u16::from_be_bytes([p[n - 2], p[n - 1]]),
        )
    }

    /// Commitments count up from 0, give distinct points, are usable once,
    /// expire after COMMIT_WINDOW newer ones (also across the 16-bit wrap of
    /// the counter the caller sees), and are all gone after a TPM Reset.
    #[test]
    fn commitments_are_single_use_windowed_and_per_reset_cycle() {
        let mut t = started();
        let (q0, c0) = ephemeral(&mut t);
        let (q1, c1) = ephemeral(&mut t);
        assert_eq!((c0, c1), (0, 1));
        assert_ne!(q0, q1);
        assert_eq!(outstanding(&t, 0), Some(0));
        assert_eq!(outstanding(&t, 2), None, "not issued yet");
        t.v.commit.outstanding &= !1;
        assert_eq!(outstanding(&t, 0), None, "used");
        for _ in 0..COMMIT_WINDOW {
            ephemeral(&mut t);
        }
        assert_eq!(outstanding(&t, 1), None, "more than COMMIT_WINDOW newer");
        assert_eq!(outstanding(&t, 2), Some(2));
        // Across the wrap of the caller's 16-bit counter.
        t.v.commit.counter = 0xFFFF;
        let (_, a) = ephemeral(&mut t);
        let (_, b) = ephemeral(&mut t);
        assert_eq!((a, b), (0xFFFF, 0));
        assert_eq!(outstanding(&t, 0xFFFF), Some(0xFFFF));
        assert_eq!(outstanding(&t, 0), Some(0x1_0000));
        // The secret depends on the full counter, not its low 16 bits.
        assert_ne!(
            public_point(&commit_secret(&t, 0, &[], public::Curve::P256)).unwrap(),
            public_point(&commit_secret(&t, 0x1_0000, &[], public::Curve::P256)).unwrap()
        );
        // A TPM Reset forgets every commitment and changes the nonce.
        let nonce = t.v.commit.nonce;
        let sd = command(cc::SHUTDOWN, &[], &[], &su::CLEAR.to_be_bytes());
        assert_eq!(crate::tests::rc_of(&t.execute(0, &sd)), 0);
        t.init();
        assert_eq!(startup(&mut t, su::CLEAR), 0);
        assert_eq!(outstanding(&t, 0), None);
        assert_ne!(t.v.commit.nonce, nonce);
        let (q, c) = ephemeral(&mut t);
        assert_eq!(c, 0);
        assert_ne!(q, q0);
    }

    /// LoadExternal of an ECDAA signing key with the known secret `d` (or
    /// only its public part); returns its handle.
    fn load_ecdaa(t: &mut Tpm, d: &NonZeroScalar, with_private: bool) -> u32 {
        use crate::marshal::Writer;
        let mut p = public::Public {
            ty: ids::ECC,
            name_alg: HashAlg::Sha256,
            attributes: attr::USER_WITH_AUTH | attr::SIGN,
            auth_policy: Vec::new(),
            symmetric: public::SymObject::Null,
            scheme: Some((ids::ECDAA, HashAlg::Sha256)),
            ecdaa_count: 9,
            curve: crate::public::Curve::P256,
            x: Vec::new(),
            y: Vec::new(),
            exponent: 0,
            rsa_bits: 0,
        };
        p.set_point(&public::EcPublic::P256(
            p256::PublicKey::from_secret_scalar(d),
        ));
        let mut w = Writer::new();
        if with_private {
            let mut sens = Writer::new();
            sens.u16(ids::ECC)
                .tpm2b(b"")
                .tpm2b(&[])
                .tpm2b(&d.to_bytes());
            w.tpm2b(&sens.buf);
        } else {
            w.u16(0);
        }
        w.tpm2b(&p.marshal()).u32(crate::defs::handle::NULL);
        let r = t.execute(0, &command(cc::LOAD_EXTERNAL, &[], &[], &w.buf));
        assert_eq!(crate::tests::rc_of(&r), 0, "LoadExternal {r:02x?}");
        u32::from_be_bytes(r[10..14].try_into().unwrap())
    }

    fn point_bytes(p: &p256::ProjectivePoint) -> Vec<u8> {
        let ep = p.to_affine().to_encoded_point(false);
        let mut w = Writer::new();
        write_point(&mut w, ep.x().unwrap(), ep.y().unwrap());
        w.buf
    }

    fn point_of(r: &mut Reader) -> Option<p256::ProjectivePoint> {
        let (x, y) = read_any_point(r, 1).unwrap()?;
        let ep = p256::EncodedPoint::from_affine_coordinates(x.into(), y.into(), false);
        let a: Option<p256::AffinePoint> = p256::AffinePoint::from_encoded_point(&ep).into();
        Some(a.unwrap().into())
    }

    fn commit_params(p1: &[u8], s2: &[u8], y2: &[u8]) -> Vec<u8> {
        let mut w = Writer::new();
        w.bytes(p1).tpm2b(s2).tpm2b(y2);
        w.buf
    }

    /// (K, L, E, counter) from TPM2_Commit, or its response code.
    #[allow(clippy::type_complexity)]
    fn run_commit(
        t: &mut Tpm,
        key: u32,
        params: &[u8],
    ) -> Result<
        (
            Option<p256::ProjectivePoint>,
            Option<p256::ProjectivePoint>,
            Option<p256::ProjectivePoint>,
            u16,
        ),
        u32,
    > {
        let r = t.execute(0, &command(cc::COMMIT, &[key], &[b""], params));
        if crate::tests::rc_of(&r) != 0 {
            return Err(crate::tests::rc_of(&r));
        }
        let mut rd = Reader::new(params_of(&r));
        let (k, l, e) = (point_of(&mut rd), point_of(&mut rd), point_of(&mut rd));
        Ok((k, l, e, rd.u16().unwrap()))
    }

    /// TPM2_Sign(ECDAA-SHA-256, count) of `digest`: (nonceK, s) or the code.
    fn run_sign(
        t: &mut Tpm,
        key: u32,
        digest: &[u8],
        count: u16,
    ) -> Result<(Vec<u8>, p256::Scalar), u32> {
        let mut w = Writer::new();
        w.tpm2b(digest)
            .u16(ids::ECDAA)
            .u16(HashAlg::Sha256.id())
            .u16(count)
            .u16(crate::defs::st::HASHCHECK)
            .u32(crate::defs::handle::NULL)
            .u16(0);
        let r = t.execute(0, &command(cc::SIGN, &[key], &[b""], &w.buf));
        if crate::tests::rc_of(&r) != 0 {
            return Err(crate::tests::rc_of(&r));
        }
        let mut rd = Reader::new(params_of(&r));
        assert_eq!(rd.u16().unwrap(), ids::ECDAA);
        assert_eq!(rd.u16().unwrap(), HashAlg::Sha256.id());
        let nk = rd.tpm2b(32).unwrap().to_vec();
        let s = rd.tpm2b(32).unwrap();
        Ok((nk, crate::commands::signing::scalar_mod_n(s)))
    }

    /// With a key whose secret d the test knows: Commit's K is exactly d·P2
    /// (P2 = (SHA-256(s2), y2)), and L = r·P2, E = r·P1 for the r that the
    /// ECDAA signature (nonceK, s) then proves: s·P2 = L + T·K,
    /// s·P1 = E + T·d·P1, s·G = r·G + T·Q with T = H(nonceK ‖ digest).
    /// Commit and EC_Ephemeral share one commitment store (consecutive
    /// counters; a commitment Sign used is gone for ZGen_2Phase too); a
    /// public-only key commits without P2 but not with it.
    #[test]
    fn commit_and_ecdaa_sign_satisfy_the_verification_equations() {
        let mut t = started();
        let d = public::derive_p256(|i| {
            HashAlg::Sha256
                .digest(&[&i.to_be_bytes(), b"daa"])
                .as_bytes()
                .to_vec()
        });
        let key = load_ecdaa(&mut t, &d, true);
        let g = p256::ProjectivePoint::GENERATOR;
        let q = g * *d;
        let a = p256::Scalar::from(5u64);
        let p1 = g * a;
        // An s2 whose hash is an x on the curve.
        let (s2, p2, y2) = (0u32..)
            .find_map(|i| {
                let s2 = i.to_be_bytes().to_vec();
                let x = HashAlg::Sha256.digest(&[&s2]);
                let ep =
                    p256::EncodedPoint::from_bytes([&[3u8][..], x.as_bytes()].concat()).unwrap();
                let p: Option<p256::AffinePoint> =
                    p256::AffinePoint::from_encoded_point(&ep).into();
                p.map(|p| (s2, p, p.to_encoded_point(false).y().unwrap().to_vec()))
            })
            .unwrap();
        let p2 = p256::ProjectivePoint::from(p2);
        let (k, l, e, c) =
            run_commit(&mut t, key, &commit_params(&point_bytes(&p1), &s2, &y2)).unwrap();
        let (k, l, e) = (k.unwrap(), l.unwrap(), e.unwrap());
        assert_eq!(k, p2 * *d, "K = d·P2");
        assert_eq!(c, 0);
        // EC_Ephemeral takes the next counter of the same store.
        let (_, c_eph) = ephemeral(&mut t);
        assert_eq!(c_eph, 1);
        let digest = HashAlg::Sha256.digest(&[b"msg"]);
        let (nk, s) = run_sign(&mut t, key, digest.as_bytes(), c).unwrap();
        let tt = crate::commands::signing::scalar_mod_n(
            HashAlg::Sha256.digest(&[&nk, digest.as_bytes()]).as_bytes(),
        );
        assert_eq!(p2 * s, l + k * tt, "s·P2 = L + T·K");
        assert_eq!(p1 * s, e + p1 * (tt * *d), "s·P1 = E + T·d·P1");
        // Used: Sign again and ZGen_2Phase with that counter both fail.
        assert_eq!(run_sign(&mut t, key, digest.as_bytes(), c), Err(rc::VALUE));
        assert_eq!(outstanding(&t, c), None);
        // No points: E = r·G.
        let (k, l, e, c) = run_commit(&mut t, key, &commit_params(&EMPTY_POINT, &[], &[])).unwrap();
        assert_eq!((k, l, c), (None, None, 2));
        let (nk, s) = run_sign(&mut t, key, digest.as_bytes(), c).unwrap();
        let tt = crate::commands::signing::scalar_mod_n(
            HashAlg::Sha256.digest(&[&nk, digest.as_bytes()]).as_bytes(),
        );
        assert_eq!(g * s, e.unwrap() + q * tt, "s·G = E + T·Q");
        // Hostile: P2 off the curve, P1 off the curve, half a P2.
        let mut y2_off = y2.clone();
        y2_off[31] ^= 1;
        let mut p1_off = point_bytes(&p1);
        let last = p1_off.len() - 1;
        p1_off[last] ^= 1;
        for (params, code) in [
            (
                commit_params(&EMPTY_POINT, &s2, &y2_off),
                rc::ECC_POINT + rc::P + 2 * rc::N1,
            ),
            (
                commit_params(&p1_off, &[], &[]),
                rc::ECC_POINT + rc::P + rc::N1,
            ),
            (
                commit_params(&EMPTY_POINT, &s2, &[]),
                rc::SIZE + rc::P + 3 * rc::N1,
            ),
            (commit_params(&[0, 0], &[], &[]), rc::SIZE + rc::P + rc::N1),
        ] {
            assert_eq!(run_commit(&mut t, key, &params).err(), Some(code));
        }
        // A failed Commit takes no counter.
        let (_, c) = ephemeral(&mut t);
        assert_eq!(c, 3);
        // Public part only: no d for K.
        let public_only = load_ecdaa(&mut t, &d, false);
        assert_eq!(
            run_commit(&mut t, public_only, &commit_params(&EMPTY_POINT, &s2, &y2)).err(),
            Some(rc::KEY + rc::H + rc::N1)
        );
        assert!(run_commit(&mut t, public_only, &commit_params(&EMPTY_POINT, &[], &[])).is_ok());
    }

    /// s·G = E + T·Q on the curve of `e` and `q` (T and s big-endian).
    fn ecdaa_holds<C>(
        e: &p256::elliptic_curve::PublicKey<C>,
        q: &p256::elliptic_curve::PublicKey<C>,
        t: &[u8],
        s: &[u8],
    ) -> bool
    where
        C: p256::elliptic_curve::CurveArithmetic,
        p256::elliptic_curve::Scalar<C>:
            p256::elliptic_curve::ops::Reduce<C::Uint, Bytes = p256::elliptic_curve::FieldBytes<C>>,
    {
        use p256::elliptic_curve::group::Group;
        let (Some(t), Some(s)) = (public::reduce_scalar::<C>(t), public::reduce_scalar::<C>(s))
        else {
            return false;
        };
        C::ProjectivePoint::generator() * s == e.to_projective() + q.to_projective() * t
    }

    /// On P-384 and P-521: TPM2_Commit's E = r·G and the ECDAA signature
    /// (nonceK, s) of TPM2_Sign satisfy s·G = E + T·Q with T = H(nonceK ‖
    /// digest) mod n (and not with another digest); TPM2_EC_Ephemeral and
    /// TPM2_ZGen_2Phase give the Z1 = d_A·Q_sB, Z2 = r_A·Q_eB that the other
    /// party computes as d_B·Q_sA and r_B·Q_eA; an ephemeral point of another
    /// curve is refused.
    #[test]
    fn ecdaa_and_two_phase_work_on_p384_and_p521() {
        use crate::marshal::Writer;
        let mut t = started();
        for curve in [public::Curve::P384, public::Curve::P521] {
            let n = curve.bytes();
            let fixed = |b: u8| {
                let mut v = alloc::vec![b; n];
                v[0] = 0;
                public::scalar_from_bytes(curve, &v).unwrap()
            };
            let load = |t: &mut Tpm, d: &public::EcScalar, scheme: u16, attrs: u32| {
                let mut p = public::Public {
                    ty: ids::ECC,
                    name_alg: HashAlg::Sha384,
                    attributes: attr::USER_WITH_AUTH | attrs,
                    auth_policy: Vec::new(),
                    symmetric: public::SymObject::Null,
                    scheme: Some((scheme, HashAlg::Sha384)),
                    ecdaa_count: 0,
                    curve,
                    x: Vec::new(),
                    y: Vec::new(),
                    exponent: 0,
                    rsa_bits: 0,
                };
                p.set_point(&d.public());
                let (x, y) = (p.x.clone(), p.y.clone());
                let secret = d.to_bytes();
                let mut sens = Writer::new();
                sens.u16(ids::ECC).tpm2b(b"").tpm2b(&[]).tpm2b(&secret);
                let mut w = Writer::new();
                w.tpm2b(&sens.buf)
                    .tpm2b(&p.marshal())
                    .u32(crate::defs::handle::NULL);
                let r = t.execute(0, &command(cc::LOAD_EXTERNAL, &[], &[], &w.buf));
                assert_eq!(crate::tests::rc_of(&r), 0, "LoadExternal {r:02x?}");
                (u32::from_be_bytes(r[10..14].try_into().unwrap()), x, y)
            };
            // ECDAA.
            let d = fixed(0x21);
            let (key, _, _) = load(&mut t, &d, ids::ECDAA, attr::SIGN);
            let r = t.execute(
                0,
                &command(
                    cc::COMMIT,
                    &[key],
                    &[b""],
                    &commit_params(&EMPTY_POINT, &[], &[]),
                ),
            );
            assert_eq!(crate::tests::rc_of(&r), 0, "{curve:?} Commit {r:02x?}");
            let mut rd = Reader::new(params_of(&r));
            assert_eq!(read_any_point(&mut rd, 1).unwrap(), None);
            assert_eq!(read_any_point(&mut rd, 1).unwrap(), None);
            let (ex, ey) = read_any_point(&mut rd, 1).unwrap().unwrap();
            let (ex, ey) = (ex.to_vec(), ey.to_vec());
            let count = rd.u16().unwrap();
            let digest = HashAlg::Sha384.digest(&[b"ecdaa"]);
            let mut w = Writer::new();
            w.tpm2b(digest.as_bytes())
                .u16(ids::ECDAA)
                .u16(HashAlg::Sha384.id())
                .u16(count)
                .u16(crate::defs::st::HASHCHECK)
                .u32(crate::defs::handle::NULL)
                .u16(0);
            let r = t.execute(0, &command(cc::SIGN, &[key], &[b""], &w.buf));
            assert_eq!(crate::tests::rc_of(&r), 0, "{curve:?} Sign {r:02x?}");
            let mut rd = Reader::new(params_of(&r));
            assert_eq!(rd.u16().unwrap(), ids::ECDAA);
            assert_eq!(rd.u16().unwrap(), HashAlg::Sha384.id());
            let nonce_k = rd.tpm2b(n).unwrap().to_vec();
            let s = rd.tpm2b(n).unwrap().to_vec();
            assert_eq!(s.len(), n);
            let tt = |m: &[u8]| {
                public::mod_order(curve, HashAlg::Sha384.digest(&[&nonce_k, m]).as_bytes())
            };
            let e = public::EcPublic::from_xy(curve, &ex, &ey).unwrap();
            let holds = |tv: &[u8]| match (e, d.public()) {
                (public::EcPublic::P384(e), public::EcPublic::P384(q)) => {
                    ecdaa_holds(&e, &q, tv, &s)
                }
                (public::EcPublic::P521(e), public::EcPublic::P521(q)) => {
                    ecdaa_holds(&e, &q, tv, &s)
                }
                _ => false,
            };
            assert!(holds(&tt(digest.as_bytes())), "{curve:?}: s·G = E + T·Q");
            assert!(
                !holds(&tt(b"another digest")),
                "{curve:?}: the check can fail"
            );
            // The commitment is used up.
            let r = t.execute(0, &command(cc::SIGN, &[key], &[b""], &w.buf));
            assert_ne!(crate::tests::rc_of(&r), 0);
            // The 2-phase exchange: party A in the TPM, party B here.
            let (d_a, d_b, r_b) = (fixed(0x31), fixed(0x42), fixed(0x53));
            let (key_a, qs_ax, qs_ay) = load(&mut t, &d_a, ids::ECDH, attr::DECRYPT);
            let r = t.execute(
                0,
                &command(cc::EC_EPHEMERAL, &[], &[], &curve.id().to_be_bytes()),
            );
            assert_eq!(
                crate::tests::rc_of(&r),
                0,
                "{curve:?} EC_Ephemeral {r:02x?}"
            );
            let mut rd = Reader::new(params_of(&r));
            let (qe_ax, qe_ay) = read_point(&mut rd, 1).unwrap();
            let (qe_ax, qe_ay) = (qe_ax.to_vec(), qe_ay.to_vec());
            let counter = rd.u16().unwrap();
            let point = |w: &mut Writer, (x, y): (Vec<u8>, Vec<u8>)| write_point(w, &x, &y);
            let mut w = Writer::new();
            point(&mut w, d_b.public().xy());
            point(&mut w, r_b.public().xy());
            w.u16(ids::ECDH).u16(counter);
            let r = t.execute(0, &command(cc::ZGEN_2PHASE, &[key_a], &[b""], &w.buf));
            assert_eq!(crate::tests::rc_of(&r), 0, "{curve:?} ZGen_2Phase {r:02x?}");
            let mut rd = Reader::new(params_of(&r));
            let (z1x, z1y) = read_point(&mut rd, 1).unwrap();
            let (z2x, z2y) = read_point(&mut rd, 1).unwrap();
            assert_eq!(
                (z1x.to_vec(), z1y.to_vec()),
                public::ecdh_point(&d_b, &qs_ax, &qs_ay).unwrap()
            );
            assert_eq!(
                (z2x.to_vec(), z2y.to_vec()),
                public::ecdh_point(&r_b, &qe_ax, &qe_ay).unwrap()
            );
            // A P-256 ephemeral point is not on this curve.
            let r = t.execute(
                0,
                &command(cc::EC_EPHEMERAL, &[], &[], &ids::NIST_P256.to_be_bytes()),
            );
            let mut rd = Reader::new(params_of(&r));
            let (px, py) = read_point(&mut rd, 1).unwrap();
            let (px, py) = (px.to_vec(), py.to_vec());
            let c2 = rd.u16().unwrap();
            let mut w = Writer::new();
            point(&mut w, d_b.public().xy());
            point(&mut w, (px, py));
            w.u16(ids::ECDH).u16(c2);
            let r = t.execute(0, &command(cc::ZGEN_2PHASE, &[key_a], &[b""], &w.buf));
            assert_eq!(crate::tests::rc_of(&r), rc::ECC_POINT + rc::P + 2 * rc::N1);
            for h in [key, key_a] {
                crate::object_tests::flush(&mut t, h);
            }
        }
    }
}
