//! Save and restore of the engine's volatile state (what a power cycle would
//! lose: started flag, PCRs, hierarchy enables, platformAuth, clock) for VM
//! snapshots. Persistent state is not included: it lives in the NV image, which
//! the snapshot's owner keeps alongside. The DRBG is reseeded on restore rather
//! than saved. Authorization sessions, transient objects and platformPolicy are
//! not saved: a restored TPM has none (clients see TPM_RC_REFERENCE_S0/H0 and
//! start anew). Restore validates the blob as if a guest had written it.

use crate::defs::limits::{self, PCR_COUNT};
use crate::engine::{Tpm, Volatile};
use crate::hash::{Digest, HashAlg};
use crate::marshal::{Reader, Writer};
use crate::nv::Orderly;
use crate::pcr::{Allocation, PcrBanks, ALL_PCRS};
use alloc::vec::Vec;
use vdev::RestoreError;

/// Version of the volatile-state layout.
pub const VOLATILE_VERSION: u32 = 1;

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
        let v = &self.v;
        let mut w = Writer::new();
        w.u32(VOLATILE_VERSION).u8(v.started as u8);
        for m in v.allocation.0 {
            w.u32(m);
        }
        w.u32(v.pcr_counter);
        for b in [
            v.ph_enable,
            v.sh_enable,
            v.eh_enable,
            v.ph_enable_nv,
            v.lockout_auth_enabled,
            v.safe,
            v.pcr_reconfigured,
        ] {
            w.u8(b as u8);
        }
        w.tpm2b(v.platform_auth.as_bytes())
            .u64(clock)
            .u8(orderly_code(v.orderly_at_init));
        for h in HashAlg::ALL {
            for i in 0..PCR_COUNT {
                w.bytes(v.pcrs.get(h, i).as_bytes());
            }
        }
        w.u8(self.failure as u8);
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
        let mut alloc = [0u32; 3];
        for a in &mut alloc {
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
        for h in HashAlg::ALL {
            for i in 0..PCR_COUNT {
                pcrs.values[h.index()][i] =
                    Digest::from_slice(r.bytes(h.digest_size()).map_err(m)?);
            }
        }
        let failure = flag(&mut r)?;
        if r.remaining() != 0 {
            return Err(RestoreError::Malformed);
        }
        let now = self.time.now_ms();
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
            time_base: now,
            safe: f[5],
            orderly_at_init,
            pcr_reconfigured: f[6],
            platform_policy: None,
            sessions: crate::session::SessionTable::new(),
            objects: crate::object::ObjectTable::with_persistent(&self.p.persistent_objects),
            failed_tries: 0,
            last_auth_failure: 0,
            context_counter: 1,
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
        newer[3] = 9;
        assert_eq!(
            a.restore_volatile(&newer),
            Err(vdev::RestoreError::UnsupportedVersion(9))
        );
        let mut long = blob;
        long.push(0);
        assert!(a.restore_volatile(&long).is_err());
    }
}
