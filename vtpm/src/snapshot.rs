//! Save and restore of the engine's volatile state (what a power cycle would
//! lose: started flag, PCRs, hierarchy enables, platformAuth, clock) for VM
//! snapshots. Persistent state is not included: it lives in the NV image, which
//! the snapshot's owner keeps alongside. The DRBG is reseeded on restore rather
//! than saved. Since version 2 the blob also carries platformPolicy, the
//! dictionary-attack state, the loaded key objects and the sessions (their TPM
//! times rebased on the saving TPM's time); hash/HMAC sequence objects are not
//! saved (their running hash states cannot be serialized) and are gone after
//! a restore (TPM_RC_REFERENCE_H0). Version 3 adds the policy sessions' name
//! hash, template hash, NV-written and physical-presence conditions; version 4
//! the clock rate (TPM2_ClockRateAdjust), the PCR group authValue, the command
//! audit digest and the ECC commit state. Version 6 has the bytes of
//! version 5, but its loaded keys may be RSA-1024 or RSA-3072 keys, which a
//! version-5 reader's object limits refuse (the rule of `nv::NV_VERSION`:
//! bump when an older reader could fail part-way); version 7, likewise, may
//! carry ECC keys of the ECSCHNORR scheme and TDES/Camellia keys; version 8
//! ECC keys on P-192, P-224 or SM2 P-256 or of the SM2 or ECMQV scheme;
//! version 9 ECC keys on BN P-256 or BN P-638. Restore
//! validates the blob as if a guest had written it.

use crate::defs::limits::{self, PCR_COUNT};
use crate::engine::{Tpm, Volatile};
use crate::hash::{Digest, HashAlg};
use crate::marshal::{Reader, Writer};
use crate::nv::Orderly;
use crate::pcr::{Allocation, PcrBanks, ALL_PCRS};
use alloc::vec::Vec;
use vdev::RestoreError;

/// Version of the volatile-state layout.
/// Version 5 added the SHA-512 PCR bank (its allocation mask and values);
/// version 6 admits RSA keys of 1024 and 3072 bits and P-521 keys; version 7
/// ECC keys of the ECSCHNORR scheme and TDES/Camellia symmetric keys;
/// version 8 ECC keys on P-192, P-224 or SM2 P-256 or of the SM2 or ECMQV
/// scheme; version 9 ECC keys on BN P-256 or BN P-638.
pub const VOLATILE_VERSION: u32 = 9;
/// Objects or sessions a blob may carry (more is malformed).
const MAX_SNAPSHOT_ENTRIES: usize = 64;

fn orderly_code(o: Orderly) -> u8 {
    match o {
        Orderly::None => 0,
        Orderly::Clear => 1,
        Orderly::State => 2,
    }
}

impl Tpm {
    /// Serializes the volatile state.
    pub fn save_volatile(&self) -> Vec<u8> {
        let clock = self.clock();
        let now = self.tpm_time();
        let Tpm {
            // The NV image and the time source are the owner's, kept alongside.
            nv: _,
            time: _,
            // Reseeded on restore rather than saved.
            drbg: _,
            // Persistent state lives in the NV image.
            p: _,
            v,
            failure,
            // The NV write budget refills with the restored VM (a host policy,
            // not TPM state a guest could observe).
            nv_rate: _,
            nv_rate_logged: _,
            // A platform signal, not TPM state.
            physical_presence: _,
        } = self;
        let Volatile {
            started,
            pcrs,
            allocation,
            pcr_counter,
            ph_enable,
            sh_enable,
            eh_enable,
            ph_enable_nv,
            platform_auth,
            lockout_auth_enabled,
            // TPM times of the last lockoutAuth and DA failures: the restored TPM's
            // time starts again at zero, so its recovery and healing intervals run
            // from the restore (never shorter than on the saving TPM).
            lockout_failed_at: _,
            last_auth_failure: _,
            // Saved as the Clock value; the time base is the restoring TPM's.
            clock_base: _,
            clock_from: _,
            safe,
            orderly_at_init,
            pcr_reconfigured,
            platform_policy,
            sessions,
            objects,
            failed_tries,
            context_counter,
            clock_rate,
            pcr_auth,
            audit_digest,
            commit,
            exclusive_audit,
        } = v;
        let mut w = Writer::new();
        w.u32(VOLATILE_VERSION).u8(*started as u8);
        for m in allocation.0 {
            w.u32(m);
        }
        w.u32(*pcr_counter);
        for b in [
            ph_enable,
            sh_enable,
            eh_enable,
            ph_enable_nv,
            lockout_auth_enabled,
            safe,
            pcr_reconfigured,
        ] {
            w.u8(*b as u8);
        }
        w.tpm2b(platform_auth.as_bytes())
            .u64(clock)
            .u8(orderly_code(*orderly_at_init));
        for h in HashAlg::ALL {
            for i in 0..PCR_COUNT {
                w.bytes(pcrs.get(h, i).as_bytes());
            }
        }
        w.u8(*failure as u8);
        // Version 2: platformPolicy, DA state, context counter, loaded keys
        // and sessions. TPM times are rebased on the saving TPM's time.
        match platform_policy {
            None => w.u16(crate::defs::alg::NULL).tpm2b(&[]),
            Some((h, d)) => w.u16(h.id()).tpm2b(d.as_bytes()),
        };
        w.u32(*failed_tries)
            .u64(*context_counter)
            .u8(*lockout_auth_enabled as u8);
        let keys: Vec<(u32, Vec<u8>)> = objects.keys().map(|(h, k)| (h, k.encode())).collect();
        w.u8(keys.len() as u8);
        for (h, b) in keys {
            w.u32(h).u32(b.len() as u32).bytes(&b);
        }
        let sessions: Vec<(u32, &crate::session::AuthSession)> = sessions.all().collect();
        w.u8(sessions.len() as u8);
        for (h, s) in sessions {
            w.u32(h);
            s.encode(&mut w, now);
        }
        // Version 4.
        w.u32(clock_rate.rate_ppm)
            .tpm2b(pcr_auth.as_bytes())
            .tpm2b(audit_digest.as_bytes())
            .bytes(&commit.nonce)
            .u64(commit.counter)
            .u64(commit.outstanding)
            .u8(exclusive_audit.is_some() as u8)
            .u32(exclusive_audit.unwrap_or(0));
        w.buf
    }

    /// Replaces the volatile state with a saved one.
    pub fn restore_volatile(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let m = |_| RestoreError::Malformed;
        let mut r = Reader::new(blob);
        let version = r.u32().map_err(m)?;
        if version > VOLATILE_VERSION {
            return Err(RestoreError::UnsupportedVersion(version));
        }
        let flag = |r: &mut Reader| match r.u8() {
            Ok(0) => Ok(false),
            Ok(1) => Ok(true),
            _ => Err(RestoreError::Malformed),
        };
        let started = flag(&mut r)?;
        // Before version 5 there was no SHA-512 bank: it stays unallocated.
        let banks: &[HashAlg] = if version >= 5 {
            &HashAlg::ALL
        } else {
            &HashAlg::ALL[..3]
        };
        let mut alloc = [0u32; crate::pcr::BANKS];
        for h in banks {
            let a = &mut alloc[h.index()];
            *a = r.u32().map_err(m)?;
            if *a & !ALL_PCRS != 0 {
                return Err(RestoreError::Malformed);
            }
        }
        let pcr_counter = r.u32().map_err(m)?;
        let mut f = [false; 7];
        for x in &mut f {
            *x = flag(&mut r)?;
        }
        let platform_auth = Digest::from_slice(r.tpm2b(limits::MAX_DIGEST).map_err(m)?);
        let clock = r.u64().map_err(m)?;
        let orderly_at_init = match r.u8().map_err(m)? {
            0 => Orderly::None,
            1 => Orderly::Clear,
            2 => Orderly::State,
            _ => return Err(RestoreError::Malformed),
        };
        let mut pcrs = PcrBanks::new();
        for &h in banks {
            for i in 0..PCR_COUNT {
                pcrs.values[h.index()][i] =
                    Digest::from_slice(r.bytes(h.digest_size()).map_err(m)?);
            }
        }
        let failure = flag(&mut r)?;
        let mut platform_policy = None;
        let mut failed_tries = 0;
        let mut context_counter = 1;
        let mut objects = crate::object::ObjectTable::with_persistent(&self.p.persistent_objects);
        let mut sessions = crate::session::SessionTable::new();
        if version >= 2 {
            let alg = r.u16().map_err(m)?;
            let d = r.tpm2b(limits::MAX_DIGEST).map_err(m)?;
            if alg != crate::defs::alg::NULL {
                let h = HashAlg::from_id(alg).ok_or(RestoreError::Malformed)?;
                if d.len() != h.digest_size() {
                    return Err(RestoreError::Malformed);
                }
                platform_policy = Some((h, Digest::from_slice(d)));
            } else if !d.is_empty() {
                return Err(RestoreError::Malformed);
            }
            failed_tries = r.u32().map_err(m)?;
            context_counter = r.u64().map_err(m)?;
            f[4] = flag(&mut r)?;
            let n = usize::from(r.u8().map_err(m)?);
            if n > MAX_SNAPSHOT_ENTRIES {
                return Err(RestoreError::Malformed);
            }
            for _ in 0..n {
                let h = r.u32().map_err(m)?;
                let len = r.u32().map_err(m)? as usize;
                let k = crate::object::Key::decode(r.bytes(len).map_err(m)?)
                    .ok_or(RestoreError::Malformed)?;
                let o = crate::object::Object::Key(alloc::boxed::Box::new(k));
                if !objects.restore(h, o) {
                    return Err(RestoreError::Malformed);
                }
            }
            let n = usize::from(r.u8().map_err(m)?);
            if n > MAX_SNAPSHOT_ENTRIES {
                return Err(RestoreError::Malformed);
            }
            for _ in 0..n {
                let h = r.u32().map_err(m)?;
                let s = crate::session::AuthSession::decode_version(&mut r, version)
                    .ok_or(RestoreError::Malformed)?;
                if !sessions.restore(h, s) {
                    return Err(RestoreError::Malformed);
                }
            }
        }
        let now = self.time.now_ms();
        let mut clock_rate = crate::commands::platform::ClockRate::nominal(now);
        let mut pcr_auth = Digest::filled(0, 0);
        let mut audit_digest = Digest::filled(0, 0);
        let mut commit = crate::nv::CommitState::default();
        let mut exclusive_audit = None;
        if version >= 4 {
            use crate::commands::platform::{RATE_LIMIT_PPM, RATE_NOMINAL_PPM};
            clock_rate.rate_ppm = r.u32().map_err(m)?;
            if clock_rate.rate_ppm.abs_diff(RATE_NOMINAL_PPM) > RATE_LIMIT_PPM {
                return Err(RestoreError::Malformed);
            }
            pcr_auth = Digest::from_slice(r.tpm2b(limits::MAX_DIGEST).map_err(m)?);
            let d = r.tpm2b(limits::MAX_DIGEST).map_err(m)?;
            if !d.is_empty() && d.len() != self.p.audit.alg.digest_size() {
                return Err(RestoreError::Malformed);
            }
            audit_digest = Digest::from_slice(d);
            commit
                .nonce
                .copy_from_slice(r.bytes(limits::SEED_SIZE).map_err(m)?);
            commit.counter = r.u64().map_err(m)?;
            commit.outstanding = r.u64().map_err(m)?;
            let set = flag(&mut r)?;
            let h = r.u32().map_err(m)?;
            exclusive_audit = set.then_some(h);
            if exclusive_audit.is_some_and(|h| sessions.get(h).is_none_or(|s| s.audit.is_none())) {
                return Err(RestoreError::Malformed);
            }
        }
        if r.remaining() != 0 {
            return Err(RestoreError::Malformed);
        }
        self.v = Volatile {
            started,
            pcrs,
            allocation: Allocation(alloc),
            pcr_counter,
            ph_enable: f[0],
            sh_enable: f[1],
            eh_enable: f[2],
            ph_enable_nv: f[3],
            platform_auth,
            lockout_auth_enabled: f[4],
            lockout_failed_at: 0,
            clock_base: clock,
            clock_from: 0,
            safe: f[5],
            orderly_at_init,
            pcr_reconfigured: f[6],
            platform_policy,
            sessions,
            objects,
            failed_tries,
            last_auth_failure: 0,
            context_counter,
            clock_rate,
            pcr_auth,
            audit_digest,
            commit,
            exclusive_audit,
        };
        self.failure = failure;
        self.drbg.reseed(b"restore");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::defs::{cc, su};
    use crate::hash::HashAlg;
    use crate::tests::{command, new_tpm, params_of, startup, SharedNv, TestClock};

    #[test]
    fn round_trip_keeps_pcrs_and_started() {
        let nv = SharedNv::default();
        let clock = TestClock::default();
        let mut a = new_tpm(&nv, &clock);
        assert_eq!(startup(&mut a, su::CLEAR), 0);
        let mut ext = alloc::vec::Vec::from(1u32.to_be_bytes());
        ext.extend(HashAlg::Sha1.id().to_be_bytes());
        ext.extend([3u8; 20]);
        a.execute(0, &command(cc::PCR_EXTEND, &[5], &[b""], &ext));
        let read = command(cc::PCR_READ, &[], &[], &[0, 0, 0, 1, 0, 4, 3, 0x20, 0, 0]);
        let want = a.execute(0, &read);
        let blob = a.save_volatile();
        let mut b = new_tpm(&nv, &clock);
        b.restore_volatile(&blob).unwrap();
        assert_eq!(params_of(&b.execute(0, &read)), params_of(&want));
        assert_eq!(b.save_volatile(), blob);
    }

    /// A version-4 blob (three PCR banks) restores: the SHA-1/256/384 PCRs
    /// as saved, the SHA-512 bank unallocated (PCR_Read returns no SHA-512
    /// digest and TPM_CAP_PCRS an empty SHA-512 selection).
    #[test]
    fn version_6_to_8_blobs_restore() {
        let nv = SharedNv::default();
        let clock = TestClock::default();
        let mut a = new_tpm(&nv, &clock);
        assert_eq!(startup(&mut a, su::CLEAR), 0);
        let mut ext = alloc::vec::Vec::from(1u32.to_be_bytes());
        ext.extend(HashAlg::Sha256.id().to_be_bytes());
        ext.extend([9u8; 32]);
        a.execute(0, &command(cc::PCR_EXTEND, &[5], &[b""], &ext));
        let read = command(
            cc::PCR_READ,
            &[],
            &[],
            &[0, 0, 0, 1, 0, 0x0B, 3, 0x20, 0, 0],
        );
        let want = a.execute(0, &read);
        let blob = a.save_volatile();
        assert_eq!(blob[..4], super::VOLATILE_VERSION.to_be_bytes());
        // Versions 6 to 8 have version 9's bytes.
        for old in [6u32, 7, 8] {
            let mut blob = blob.clone();
            blob[..4].copy_from_slice(&old.to_be_bytes());
            let mut b = new_tpm(&nv, &clock);
            b.restore_volatile(&blob).unwrap();
            assert_eq!(params_of(&b.execute(0, &read)), params_of(&want));
        }
    }

    #[test]
    fn version_4_blob_restores_without_a_sha512_bank() {
        let nv = SharedNv::default();
        let clock = TestClock::default();
        let mut a = new_tpm(&nv, &clock);
        assert_eq!(startup(&mut a, su::CLEAR), 0);
        let mut ext = alloc::vec::Vec::from(1u32.to_be_bytes());
        ext.extend(HashAlg::Sha384.id().to_be_bytes());
        ext.extend([7u8; 48]);
        a.execute(0, &command(cc::PCR_EXTEND, &[5], &[b""], &ext));
        let read384 = command(
            cc::PCR_READ,
            &[],
            &[],
            &[0, 0, 0, 1, 0, 0x0C, 3, 0x20, 0, 0],
        );
        let want = a.execute(0, &read384);
        let blob = a.save_volatile();
        // Version 4: no SHA-512 mask (the fourth, after the version and the
        // started flag) and no SHA-512 PCR values (after the other banks,
        // which follow the counter, seven flags, an empty platform auth,
        // the clock and the orderly state).
        let masks = 4 + 1;
        let pcrs = masks + 16 + 4 + 7 + 2 + 8 + 1;
        let sha512 = pcrs + 24 * (20 + 32 + 48);
        let mut v4 = blob[..masks + 12].to_vec();
        v4.extend_from_slice(&blob[masks + 16..sha512]);
        v4.extend_from_slice(&blob[sha512 + 24 * 64..]);
        v4[..4].copy_from_slice(&4u32.to_be_bytes());
        let mut b = new_tpm(&nv, &clock);
        b.restore_volatile(&v4).unwrap();
        assert_eq!(params_of(&b.execute(0, &read384)), params_of(&want));
        let read512 = command(
            cc::PCR_READ,
            &[],
            &[],
            &[0, 0, 0, 1, 0, 0x0D, 3, 0xFF, 0, 0],
        );
        let r = b.execute(0, &read512);
        // pcrUpdateCounter, one selection (SHA-512, nothing selected), no digests.
        assert_eq!(
            &params_of(&r)[4..],
            &[0, 0, 0, 1, 0, 0x0D, 3, 0, 0, 0, 0, 0, 0, 0]
        );
        // The full blob still restores with the bank allocated.
        let mut c = new_tpm(&nv, &clock);
        c.restore_volatile(&blob).unwrap();
        let r = c.execute(0, &read512);
        assert_eq!(
            &params_of(&r)[4..15],
            &[0, 0, 0, 1, 0, 0x0D, 3, 0xFF, 0, 0, 0]
        );
    }

    #[test]
    fn malformed_blobs_are_refused() {
        let nv = SharedNv::default();
        let clock = TestClock::default();
        let mut a = new_tpm(&nv, &clock);
        let blob = a.save_volatile();
        assert!(a.restore_volatile(&blob[..blob.len() - 1]).is_err());
        let mut bad = blob.clone();
        bad[4] = 7;
        assert!(a.restore_volatile(&bad).is_err());
        let mut newer = blob.clone();
        newer[3] = super::VOLATILE_VERSION as u8 + 1;
        assert_eq!(
            a.restore_volatile(&newer),
            Err(vdev::RestoreError::UnsupportedVersion(
                super::VOLATILE_VERSION + 1
            ))
        );
        let mut long = blob;
        long.push(0);
        assert!(a.restore_volatile(&long).is_err());
    }

    #[test]
    fn keys_and_sessions_survive_a_snapshot() {
        use crate::marshal::{Reader, Writer};
        let nv = SharedNv::default();
        let clock = TestClock::default();
        let mut a = new_tpm(&nv, &clock);
        assert_eq!(startup(&mut a, su::CLEAR), 0);
        // A signing primary (0x80000000) and a trial session with a digest.
        let mut p = Writer::new();
        p.u16(0x23).u16(0x0B).u32(0x0004_0072).tpm2b(&[]);
        p.u16(0x10)
            .u16(0x18)
            .u16(0x0B)
            .u16(0x03)
            .u16(0x10)
            .tpm2b(&[])
            .tpm2b(&[]);
        let mut w = Writer::new();
        w.tpm2b(&[0, 0, 0, 0]).tpm2b(&p.buf).tpm2b(&[]).u32(0);
        let r = a.execute(
            0,
            &command(cc::CREATE_PRIMARY, &[0x4000_0001], &[b""], &w.buf),
        );
        assert_eq!(crate::tests::rc_of(&r), 0);
        let mut w = Writer::new();
        w.tpm2b(&[1; 16]).tpm2b(&[]).u8(3).u16(0x10).u16(0x0B);
        let r = a.execute(
            0,
            &command(
                cc::START_AUTH_SESSION,
                &[0x4000_0007, 0x4000_0007],
                &[],
                &w.buf,
            ),
        );
        let sh = u32::from_be_bytes(r[10..14].try_into().unwrap());
        let r = a.execute(0, &command(cc::POLICY_AUTH_VALUE, &[sh], &[], &[]));
        assert_eq!(crate::tests::rc_of(&r), 0);
        let digest = |t: &mut crate::Tpm| {
            let r = t.execute(0, &command(cc::POLICY_GET_DIGEST, &[sh], &[], &[]));
            params_of(&r).to_vec()
        };
        let want = digest(&mut a);
        let blob = a.save_volatile();
        let mut b = new_tpm(&nv, &clock);
        b.restore_volatile(&blob).unwrap();
        assert_eq!(digest(&mut b), want);
        let r = b.execute(0, &command(cc::READ_PUBLIC, &[0x8000_0000], &[], &[]));
        let pa = Reader::new(params_of(&r)).tpm2b(512).unwrap().to_vec();
        let r = a.execute(0, &command(cc::READ_PUBLIC, &[0x8000_0000], &[], &[]));
        assert_eq!(Reader::new(params_of(&r)).tpm2b(512).unwrap(), &pa[..]);
        assert_eq!(b.save_volatile(), blob);
        // A session under a handle of the wrong type is refused, and so is a
        // truncated blob.
        let mut bad = blob.clone();
        let at = bad.windows(4).rposition(|w| w == sh.to_be_bytes()).unwrap();
        bad[at] = 0x02;
        assert!(b.restore_volatile(&bad).is_err());
        let bad = &blob[..blob.len() - 3];
        assert!(b.restore_volatile(bad).is_err());
    }
}
