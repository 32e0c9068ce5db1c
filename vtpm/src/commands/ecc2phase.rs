//! Two-phase ECC key exchange (Part 3 §14.5 TPM2_ZGen_2Phase, §19.3
//! TPM2_EC_Ephemeral). EC_Ephemeral commits to an ephemeral secret r —
//! derived from the reset cycle's commit nonce and a commit counter, never
//! stored — and returns Q = r·G with the counter; ZGen_2Phase uses the
//! commitment once: with the ECDH scheme (Full Unified Model),
//! Z1 = d_s·Q_sB and Z2 = r·Q_eB. A commitment stays usable until it is used,
//! until COMMIT_WINDOW newer ones exist, or until the next TPM Reset.

use crate::defs::rc;
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::HashAlg;
use crate::marshal::{Reader, Writer};
use crate::nv::COMMIT_WINDOW;
use crate::public::{self, attr, ids};
use alloc::vec::Vec;
use p256::elliptic_curve::sec1::ToEncodedPoint;
use p256::NonZeroScalar;

/// Label of the commit-secret derivation.
const COMMIT_LABEL: &[u8] = b"RayOS vTPM ECC commit";

/// Reads a TPM2B_ECC_POINT (parameter `n`) as (x, y). A point that does not
/// fill its size exactly is TPM_RC_SIZE.
pub(crate) fn read_point<'a>(r: &mut Reader<'a>, n: u32) -> Result<(&'a [u8], &'a [u8]), u32> {
    let size = r.u16().p(n)? as usize;
    let mut sub = r.sub(size).p(n)?;
    let size_rc = rc::SIZE + rc::P + n * rc::N1;
    let x = sub.tpm2b(public::P256_BYTES).map_err(|_| size_rc)?;
    let y = sub.tpm2b(public::P256_BYTES).map_err(|_| size_rc)?;
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

/// Reads a TPMI_ECC_CURVE: only NIST P-256 is implemented.
fn read_curve(r: &mut Reader, n: u32) -> Result<(), u32> {
    if r.u16().p(n)? != ids::NIST_P256 {
        return Err(rc::CURVE + rc::P + n * rc::N1);
    }
    Ok(())
}

/// The secret of commitment `counter`: HMAC-SHA-256 keyed with the commit
/// nonce over the label, the counter and an iteration byte, taken as a
/// scalar (the next iteration if it is 0 or not below the group order).
fn commit_secret(tpm: &Tpm, counter: u64) -> NonZeroScalar {
    let nonce = tpm.v.commit.nonce;
    let mut i = 0u8;
    loop {
        let d = HashAlg::Sha256.hmac(&nonce, &[COMMIT_LABEL, &counter.to_be_bytes(), &[i]]);
        if let Some(s) = public::scalar_from_bytes(d.as_bytes()) {
            return s;
        }
        i = i.wrapping_add(1);
    }
}

/// A new commitment: its counter (the low 16 bits go to the caller) and
/// secret.
fn commit(tpm: &mut Tpm) -> (u64, NonZeroScalar) {
    let c = tpm.v.commit.counter;
    tpm.v.commit.counter = c.wrapping_add(1);
    // The slot of the counter COMMIT_WINDOW back is reused.
    tpm.v.commit.outstanding |= 1 << (c % COMMIT_WINDOW);
    (c, commit_secret(tpm, c))
}

/// The full counter of an unused commitment whose low 16 bits are `c`.
fn outstanding(tpm: &Tpm, c: u16) -> Option<u64> {
    let next = tpm.v.commit.counter;
    // The newest counter below `next` with these low bits.
    let back = (next.wrapping_sub(1) as u16).wrapping_sub(c);
    let full = next.checked_sub(1)?.checked_sub(u64::from(back))?;
    let recent = next - full <= COMMIT_WINDOW;
    (recent && tpm.v.commit.outstanding & (1 << (full % COMMIT_WINDOW)) != 0).then_some(full)
}

/// The x and y of r·G.
fn public_point(r: &NonZeroScalar) -> Result<(Vec<u8>, Vec<u8>), u32> {
    let p = p256::PublicKey::from_secret_scalar(r).to_encoded_point(false);
    match (p.x(), p.y()) {
        (Some(x), Some(y)) => Ok((x.to_vec(), y.to_vec())),
        _ => Err(rc::FAILURE),
    }
}

/// TPM2_EC_Ephemeral: curveID → Q (TPM2B_ECC_POINT), counter (UINT16).
pub fn ec_ephemeral(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    read_curve(&mut cmd.params, 1)?;
    cmd.finish()?;
    let (c, r) = commit(tpm);
    let (x, y) = public_point(&r)?;
    write_point(&mut cmd.out, &x, &y);
    cmd.out.u16(c as u16);
    Ok(())
}

/// TPM2_ZGen_2Phase: keyA (USER; an unrestricted ECC decrypt key), inQsB,
/// inQeB (the other party's static and ephemeral points), inScheme
/// (TPMI_ECC_KEY_EXCHANGE), counter (of keyA's party's EC_Ephemeral) →
/// outZ1, outZ2. Only the ECDH scheme is implemented (ECMQV and SM2 are not
/// among this TPM's algorithms).
pub fn zgen_2phase(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let (qs_x, qs_y) = read_point(&mut cmd.params, 1)?;
    let (qe_x, qe_y) = read_point(&mut cmd.params, 2)?;
    let scheme = cmd.params.u16().p(3)?;
    if scheme != ids::ECDH && scheme != crate::defs::alg::NULL {
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
    if scheme != ids::ECDH {
        return Err(rc::SCHEME + rc::P + 3 * rc::N1);
    }
    let d = key
        .private
        .as_deref()
        .and_then(public::scalar_from_bytes)
        .ok_or(rc::AUTH_UNAVAILABLE)?;
    let z1 = public::ecdh_point(&d, qs_x, qs_y).ok_or(rc::ECC_POINT + rc::P + rc::N1)?;
    // The other party's ephemeral point is checked before the commitment.
    public::ecdh_point(&d, qe_x, qe_y).ok_or(rc::ECC_POINT + rc::P + 2 * rc::N1)?;
    let Some(full) = outstanding(tpm, counter) else {
        log::warn!("vtpm: ZGen_2Phase: commitment {counter} unknown or used");
        return Err(rc::VALUE + rc::P + 4 * rc::N1);
    };
    let r = commit_secret(tpm, full);
    let z2 = public::ecdh_point(&r, qe_x, qe_y).ok_or(rc::ECC_POINT + rc::P + 2 * rc::N1)?;
    tpm.v.commit.outstanding &= !(1 << (full % COMMIT_WINDOW));
    write_point(&mut cmd.out, &z1.0, &z1.1);
    write_point(&mut cmd.out, &z2.0, &z2.1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defs::{cc, su};
    use crate::tests::{command, new_tpm, params_of, startup, SharedNv, TestClock};

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
            public_point(&commit_secret(&t, 0)).unwrap(),
            public_point(&commit_secret(&t, 0x1_0000)).unwrap()
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
}
