//! Part 3 §17 and §15.5: hash, HMAC and event sequences —
//! TPM2_HashSequenceStart, TPM2_HMAC_Start, TPM2_SequenceUpdate,
//! TPM2_SequenceComplete and TPM2_EventSequenceComplete — and the one-shot
//! TPM2_HMAC with a keyed-hash key. TPM2_HMAC and TPM2_HMAC_Start are also
//! TPM2_MAC and TPM2_MAC_Start (the same command codes, as in libtpms): their
//! scheme parameter (TPMI_ALG_MAC_SCHEME) may name TPM_ALG_CMAC, and a
//! symmetric key of the CMAC mode (or of no mode, with CMAC named) computes
//! AES-CMAC (SP 800-38B, the RustCrypto `cmac` crate).

use crate::commands::context::hash_ticket;
use crate::defs::{handle, limits, rc};
use crate::engine::{Cmd, ParamErr, Tpm};
use crate::hash::{Digest, HashAlg};
use crate::object::{CmacState, Object, Sequence};
use crate::pcr;
use crate::public::{ids, SymObject};
use alloc::vec::Vec;

pub fn hash_sequence_start(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let auth = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    let alg = cmd.params.hash_alg(true).p(2)?;
    cmd.finish()?;
    let auth = crate::auth::strip_trailing_zeros(auth);
    if auth.len() > limits::MAX_DIGEST {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    let seq = Sequence::new(alg, Digest::from_slice(auth));
    let h = tpm
        .v
        .objects
        .insert(Object::Sequence(seq))
        .ok_or(rc::OBJECT_MEMORY)?;
    cmd.r_handle = Some(h);
    Ok(())
}

/// The sequence object of handle `h` (a transient object the handle area
/// found loaded), or TPM_RC_MODE on handle 1 if it is not a sequence.
fn sequence(tpm: &mut Tpm, h: u32, n: u32) -> Result<&mut Sequence, u32> {
    match tpm.v.objects.get_mut(h) {
        Some(Object::Sequence(s)) => Ok(s),
        None => Err(rc::REFERENCE_H0),
        #[allow(unreachable_patterns)]
        Some(_) => Err(rc::MODE + rc::H + n * rc::N1),
    }
}

pub fn sequence_update(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let data = cmd.params.tpm2b(limits::MAX_BUFFER).p(1)?;
    cmd.finish()?;
    sequence(tpm, cmd.handles[0], 1)?.update(data);
    Ok(())
}

pub fn sequence_complete(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let data = cmd.params.tpm2b(limits::MAX_BUFFER).p(1)?;
    let hierarchy = cmd.params.u32().p(2)?;
    if !matches!(
        hierarchy,
        handle::OWNER | handle::ENDORSEMENT | handle::PLATFORM | handle::NULL
    ) {
        return Err(rc::VALUE + rc::P + 2 * rc::N1);
    }
    cmd.finish()?;
    let h = cmd.handles[0];
    if sequence(tpm, h, 1)?.event {
        return Err(rc::MODE + rc::H + rc::N1);
    }
    let Some(Object::Sequence(mut s)) = tpm.v.objects.remove(h) else {
        return Err(rc::REFERENCE_H0);
    };
    s.update(data);
    // An HMAC or CMAC result gets no hash ticket.
    let safe = s.ticket_safe && s.hmac_key.is_none() && s.cmac.is_none();
    let digest = s.finish();
    cmd.out.tpm2b(digest.as_bytes());
    hash_ticket(tpm, cmd, hierarchy, &digest, safe);
    Ok(())
}

/// The MAC key of handle 1 and the MAC to use (CryptSelectMac): the key's
/// (a keyed-hash key's scheme hash, a symmetric key's mode), or `requested`
/// when the key has none; they may not differ, and the MAC must suit the
/// key (HMAC a keyed-hash key, CMAC a symmetric one: TPM_RC_SCHEME).
fn mac_key(tpm: &Tpm, h: u32, requested: Option<Mac>) -> Result<(Vec<u8>, Mac), u32> {
    let h1 = rc::H + rc::N1;
    let k = tpm.key(h).ok_or(rc::TYPE + h1)?;
    let key_mac = match (k.public.ty, k.public.symmetric) {
        (ids::KEYEDHASH, _) => k.public.scheme.map(|(_, h)| Some(Mac::Hmac(h))),
        (ids::SYMCIPHER, SymObject::AesMode(_, ids::CMAC)) => Some(Some(Mac::Cmac)),
        (ids::SYMCIPHER, SymObject::AesAnyMode(_)) => None,
        // Another mode: not a MAC at all.
        (ids::SYMCIPHER, _) => Some(None),
        _ => return Err(rc::TYPE + h1),
    };
    if k.public.has(crate::public::attr::RESTRICTED) {
        return Err(rc::ATTRIBUTES + h1);
    }
    if !k.public.has(crate::public::attr::SIGN) {
        return Err(rc::KEY + h1);
    }
    let mac = match (key_mac, requested) {
        (Some(Some(km)), None) => km,
        (Some(Some(km)), Some(r)) if km == r => km,
        // A mode that is no MAC: another MAC named differs from it, and
        // the mode itself does not suit the key.
        (Some(None), Some(_)) => return Err(rc::VALUE + rc::P + 2 * rc::N1),
        (Some(None), None) => return Err(rc::SCHEME + rc::P + 2 * rc::N1),
        (None, Some(r)) => r,
        _ => return Err(rc::VALUE + rc::P + 2 * rc::N1),
    };
    match (k.public.ty, mac) {
        (ids::KEYEDHASH, Mac::Hmac(_)) | (ids::SYMCIPHER, Mac::Cmac) => {}
        _ => return Err(rc::SCHEME + rc::P + 2 * rc::N1),
    }
    Ok((k.private.clone().unwrap_or_default(), mac))
}

/// A MAC: HMAC with a hash, or AES-CMAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mac {
    Hmac(HashAlg),
    Cmac,
}

/// TPMI_ALG_MAC_SCHEME+ (bare codes): a hash, TPM_ALG_CMAC or TPM_ALG_NULL.
fn mac_scheme(cmd: &mut Cmd) -> Result<Option<Mac>, u32> {
    let id = cmd.params.u16()?;
    match id {
        ids::CMAC => Ok(Some(Mac::Cmac)),
        crate::defs::alg::NULL => Ok(None),
        _ => HashAlg::from_id(id)
            .map(|h| Some(Mac::Hmac(h)))
            .ok_or(rc::HASH),
    }
}

pub fn hmac(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let data = cmd.params.tpm2b(limits::MAX_BUFFER).p(1)?;
    let requested = mac_scheme(cmd).p(2)?;
    cmd.finish()?;
    let (key, mac) = mac_key(tpm, cmd.handles[0], requested)?;
    let tag = match mac {
        Mac::Hmac(alg) => alg.hmac(&key, &[data]),
        Mac::Cmac => {
            let mut c = CmacState::new(&key).ok_or(rc::KEY + rc::H + rc::N1)?;
            c.update(data);
            c.finish()
        }
    };
    cmd.out.tpm2b(tag.as_bytes());
    Ok(())
}

pub fn hmac_start(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let auth = cmd.params.tpm2b(limits::TPMU_HA_SIZE).p(1)?;
    let requested = mac_scheme(cmd).p(2)?;
    cmd.finish()?;
    let auth = crate::auth::strip_trailing_zeros(auth);
    if auth.len() > limits::MAX_DIGEST {
        return Err(rc::SIZE + rc::P + rc::N1);
    }
    let (key, mac) = mac_key(tpm, cmd.handles[0], requested)?;
    let seq = match mac {
        Mac::Hmac(alg) => Sequence::new_hmac(alg, &key, Digest::from_slice(auth)),
        Mac::Cmac => {
            Sequence::new_cmac(&key, Digest::from_slice(auth)).ok_or(rc::KEY + rc::H + rc::N1)?
        }
    };
    let h = tpm
        .v
        .objects
        .insert(Object::Sequence(seq))
        .ok_or(rc::OBJECT_MEMORY)?;
    cmd.r_handle = Some(h);
    Ok(())
}

pub fn event_sequence_complete(tpm: &mut Tpm, cmd: &mut Cmd) -> Result<(), u32> {
    let data = cmd.params.tpm2b(limits::MAX_BUFFER).p(1)?;
    cmd.finish()?;
    let (pcr_handle, h) = (cmd.handles[0], cmd.handles[1]);
    if !sequence(tpm, h, 2)?.event {
        return Err(rc::MODE + rc::H + 2 * rc::N1);
    }
    let index = (pcr_handle != handle::NULL).then_some(pcr_handle as usize);
    if let Some(i) = index {
        if !pcr::extend_allowed(i, cmd.locality) {
            log::warn!(
                "vtpm: PCR {i} may not be extended from locality {}",
                cmd.locality
            );
            return Err(rc::LOCALITY);
        }
    }
    let Some(Object::Sequence(mut s)) = tpm.v.objects.remove(h) else {
        return Err(rc::REFERENCE_H0);
    };
    s.update(data);
    cmd.out.u32(s.states.len() as u32);
    let mut updates = 0;
    for st in s.states {
        let alg: HashAlg = st.alg();
        let d = st.finish();
        cmd.out.u16(alg.id()).bytes(d.as_bytes());
        if let Some(i) = index {
            if tpm.v.allocation.is_allocated(alg, i) {
                tpm.v.pcrs.extend(alg, i, d.as_bytes());
                updates += 1;
            }
        }
    }
    if let Some(i) = index {
        crate::commands::pcr::changed(tpm, cmd, i, updates);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::defs::{cc, handle, rc, st, su};
    use crate::hash::HashAlg;
    use crate::marshal::{Reader, Writer};
    use crate::tests::{command, new_tpm, params_of, rc_of, startup, SharedNv, TestClock};
    use alloc::vec::Vec;

    fn start(t: &mut crate::Tpm, alg: u16, auth: &[u8]) -> u32 {
        let mut p = Writer::new();
        p.tpm2b(auth).u16(alg);
        let r = t.execute(0, &command(cc::HASH_SEQUENCE_START, &[], &[], &p.buf));
        assert_eq!(rc_of(&r), 0);
        u32::from_be_bytes(r[10..14].try_into().unwrap())
    }

    fn buf(data: &[u8]) -> Vec<u8> {
        let mut w = Writer::new();
        w.tpm2b(data);
        w.buf
    }

    #[test]
    fn hash_sequence_of_4_kib_matches_one_shot_hash_and_flushes() {
        let mut t = new_tpm(&SharedNv::default(), &TestClock::default());
        assert_eq!(startup(&mut t, su::CLEAR), 0);
        let h = start(&mut t, HashAlg::Sha256.id(), b"sq");
        assert_eq!(h, 0x8000_0000);
        let data: Vec<u8> = (0..4096u32).map(|i| i as u8).collect();
        for chunk in data.chunks(1024) {
            let r = t.execute(
                0,
                &command(cc::SEQUENCE_UPDATE, &[h], &[b"sq"], &buf(chunk)),
            );
            assert_eq!(rc_of(&r), 0);
        }
        // Wrong sequence auth.
        let r = t.execute(0, &command(cc::SEQUENCE_UPDATE, &[h], &[b"x"], &buf(b"")));
        assert_eq!(rc_of(&r), rc::BAD_AUTH + rc::S + rc::N1);
        let mut p = buf(b"");
        p.extend(handle::OWNER.to_be_bytes());
        let r = t.execute(0, &command(cc::SEQUENCE_COMPLETE, &[h], &[b"sq"], &p));
        let mut rd = Reader::new(params_of(&r));
        let d = rd.tpm2b(64).unwrap();
        assert_eq!(d, HashAlg::Sha256.digest(&[&data]).as_bytes());
        assert_eq!(rd.u16().unwrap(), st::HASHCHECK);
        assert_eq!(rd.u32().unwrap(), handle::OWNER);
        assert_eq!(rd.tpm2b(64).unwrap().len(), 48);
        // The sequence object is gone.
        let r = t.execute(0, &command(cc::SEQUENCE_UPDATE, &[h], &[b"sq"], &buf(b"")));
        assert_eq!(rc_of(&r), rc::REFERENCE_H0);
    }

    #[test]
    fn event_sequence_extends_every_bank() {
        let mut t = new_tpm(&SharedNv::default(), &TestClock::default());
        assert_eq!(startup(&mut t, su::CLEAR), 0);
        let h = start(&mut t, 0x0010, b"");
        // An event sequence cannot complete as a hash sequence.
        let mut p = buf(b"");
        p.extend(handle::NULL.to_be_bytes());
        let r = t.execute(0, &command(cc::SEQUENCE_COMPLETE, &[h], &[b""], &p));
        assert_eq!(rc_of(&r), rc::MODE + rc::H + rc::N1);
        let r = t.execute(
            0,
            &command(
                cc::EVENT_SEQUENCE_COMPLETE,
                &[16, h],
                &[b"", b""],
                &buf(b"ev"),
            ),
        );
        let mut rd = Reader::new(params_of(&r));
        let vals = rd.digest_values().unwrap();
        assert_eq!(vals.len(), HashAlg::ALL.len());
        for (alg, d) in vals {
            assert_eq!(d, alg.digest(&[b"ev"]).as_bytes());
        }
        // Three slots at most.
        for _ in 0..3 {
            start(&mut t, HashAlg::Sha1.id(), b"");
        }
        let mut p = Writer::new();
        p.tpm2b(b"").u16(HashAlg::Sha1.id());
        let r = t.execute(0, &command(cc::HASH_SEQUENCE_START, &[], &[], &p.buf));
        assert_eq!(rc_of(&r), rc::OBJECT_MEMORY);
        let f = command(cc::FLUSH_CONTEXT, &[], &[], &0x8000_0001u32.to_be_bytes());
        assert_eq!(rc_of(&t.execute(0, &f)), 0);
        assert_eq!(rc_of(&t.execute(0, &f)), rc::HANDLE + rc::P + rc::N1);
    }
}
