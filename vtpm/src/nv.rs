//! The TPM's non-volatile image: one versioned, checksummed blob holding the
//! seeds and proofs, hierarchy authorizations, clock, reset/restart counters,
//! orderly-shutdown state, PCR allocation and the state Shutdown saves. The engine
//! commits it through [`NvStore`] before it answers any command that changed it.
//!
//! Layout: magic "VTNV", version u32, generation u64, payload length u32, payload,
//! SHA-256 over everything before it. Decoding checks all of it and refuses an
//! image that fails any check.
//!
//! The version rule: [`NV_VERSION`] is bumped whenever an image this build
//! writes could be misread or refused part-way by an older build — a new or
//! changed field, and also a record whose bytes keep their layout but may now
//! hold values an older build's limits refuse (layout 8). An older build then
//! refuses the whole image with [`NvError::UnsupportedVersion`] rather than
//! failing later on one object; this build reads every older layout.

use crate::defs::limits::{self, PCR_COUNT, SEED_SIZE};
use crate::hash::{Digest, HashAlg};
use crate::marshal::{Reader, Writer};
use crate::pcr::{Allocation, ALL_PCRS, PCR_ATTRS};
use alloc::vec::Vec;

/// Where the NV image lives. `store` must be atomic: after a crash, `load` returns
/// either the previous or the new image, never a mix.
pub trait NvStore {
    /// The last stored image, or `None` if the TPM was never manufactured.
    fn load(&mut self) -> Result<Option<Vec<u8>>, NvError>;
    /// Replaces the image.
    fn store(&mut self, image: &[u8]) -> Result<(), NvError>;
}

/// Why NV could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvError {
    /// The backing store failed or is absent.
    Unavailable,
    /// The stored image is damaged or of an unknown layout.
    Corrupt,
    /// The stored image is of a newer layout than this build understands.
    UnsupportedVersion(u32),
}

/// An in-memory [`NvStore`], for tests and for VMs without persistent TPM state.
#[derive(Debug, Default, Clone)]
pub struct MemNvStore {
    pub image: Option<Vec<u8>>,
    /// Number of successful stores.
    pub writes: u64,
}

impl NvStore for MemNvStore {
    fn load(&mut self) -> Result<Option<Vec<u8>>, NvError> {
        Ok(self.image.clone())
    }
    fn store(&mut self, image: &[u8]) -> Result<(), NvError> {
        self.image = Some(image.to_vec());
        self.writes += 1;
        Ok(())
    }
}

const MAGIC: [u8; 4] = *b"VTNV";
/// Current layout version. Layout 8 has the bytes of layout 7, but its
/// persistent objects may be RSA-1024 or RSA-3072 keys (a 192-byte prime
/// and a 384-byte modulus exceed layout 7's object limits) or NIST P-521
/// keys (a curve layout 7 refuses). Layout 9 has the bytes of layout 8, but
/// its persistent ECC keys may name the ECSCHNORR scheme and its symmetric
/// keys may be TDES or Camellia keys, which layout 8's public-area checks
/// refuse. Layout 10 has the bytes of layout 9, but its persistent ECC keys
/// may be on NIST P-192, P-224 or SM2 P-256 or name the SM2 or ECMQV scheme,
/// which layout 9's public-area checks refuse. Layout 11 has the bytes of
/// layout 10, but its persistent ECC keys may be on BN P-256 or BN P-638
/// (whose 80-byte coordinates exceed layout 10's 66-byte limit).
pub const NV_VERSION: u32 = 11;
const CHECKSUM_LEN: usize = 32;

/// How the TPM was last shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Orderly {
    /// No orderly shutdown since the last Startup (or never started).
    None,
    /// Shutdown(CLEAR).
    Clear,
    /// Shutdown(STATE): [`Persistent::saved`] holds the state.
    State,
}

/// State saved by Shutdown(STATE) for Startup(STATE) (TPM Resume) and, in part,
/// for Startup(CLEAR) after it (TPM Restart).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedState {
    /// Values of the state-saved PCRs (0–15) in every bank.
    pub pcrs: Vec<(HashAlg, u8, Digest)>,
    pub sh_enable: bool,
    pub eh_enable: bool,
    pub ph_enable_nv: bool,
    pub platform_auth: Digest,
    pub pcr_counter: u32,
    /// The allocation in force when the state was saved.
    pub allocation: Allocation,
    /// Layout version 6: the authValue of the PCR authorization group
    /// (TPM2_PCR_SetAuthValue; STATE_CLEAR data, restored by Resume only),
    /// and the reset-cycle state Restart and Resume keep: the command audit
    /// digest and the ECC commit state (TPM2_Commit, TPM2_EC_Ephemeral).
    pub pcr_auth: Digest,
    pub audit_digest: Digest,
    pub commit: CommitState,
}

/// The reset-cycle state of two-phase ECC commitments: the nonce ephemeral
/// secrets are derived from, the counter of the last commitment and which of
/// the last [`COMMIT_WINDOW`] counters are still unused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitState {
    pub nonce: [u8; SEED_SIZE],
    pub counter: u64,
    /// Bit `c % COMMIT_WINDOW` is set while the commitment of counter `c`
    /// (one of the last COMMIT_WINDOW) has not been used.
    pub outstanding: u64,
}

impl Default for CommitState {
    fn default() -> Self {
        Self {
            nonce: [0; SEED_SIZE],
            counter: 0,
            outstanding: 0,
        }
    }
}

/// How many recent commitments may be outstanding at once.
pub const COMMIT_WINDOW: u64 = 64;

/// Command audit (TPM2_SetCommandCodeAuditStatus): the audit hash, the
/// audited command codes (sorted) and the audit counter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub alg: HashAlg,
    pub commands: Vec<u32>,
    pub counter: u64,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            alg: HashAlg::Sha256,
            // TPM2_SetCommandCodeAuditStatus is always audited.
            commands: alloc::vec![crate::defs::cc::SET_COMMAND_CODE_AUDIT_STATUS],
            counter: 0,
        }
    }
}

/// Everything the TPM keeps across power cycles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Persistent {
    pub generation: u64,
    pub eps: [u8; SEED_SIZE],
    pub sps: [u8; SEED_SIZE],
    pub pps: [u8; SEED_SIZE],
    pub eh_proof: [u8; SEED_SIZE],
    pub sh_proof: [u8; SEED_SIZE],
    pub ph_proof: [u8; SEED_SIZE],
    /// Null hierarchy proof of the current TPM Reset cycle (kept across Restart
    /// and Resume, replaced at every TPM Reset).
    pub null_proof: [u8; SEED_SIZE],
    pub owner_auth: Digest,
    pub endorsement_auth: Digest,
    pub lockout_auth: Digest,
    /// Milliseconds the TPM has been powered, as last committed.
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub orderly: Orderly,
    /// PCR allocation to use from the next TPM Reset on.
    pub allocation: Allocation,
    pub saved: Option<SavedState>,
    /// ownerPolicy, endorsementPolicy, lockoutPolicy (TPM2_SetPrimaryPolicy;
    /// added in layout version 2).
    pub owner_policy: Option<(HashAlg, Digest)>,
    pub endorsement_policy: Option<(HashAlg, Digest)>,
    pub lockout_policy: Option<(HashAlg, Digest)>,
    /// Persistent objects (TPM2_EvictControl): handle and serialized key
    /// (added in layout version 3).
    pub persistent_objects: Vec<(u32, Vec<u8>)>,
    /// Dictionary-attack parameters (TPM2_DictionaryAttackParameters) and
    /// TPM2_ClearControl's disableClear (added in layout version 4).
    pub da: DaParams,
    pub disable_clear: bool,
    /// NV indices and the largest count any counter index has had (added in
    /// layout version 5).
    pub nv_indices: Vec<crate::nvindex::NvIndex>,
    pub nv_max_counter: u64,
    /// Layout version 6: TPM2_SetAlgorithmSet's value, the commands that need
    /// physical presence with platformAuth (TPM2_PP_Commands; sorted), the
    /// authPolicy of the PCR policy group (TPM2_PCR_SetAuthPolicy) and the
    /// command audit settings.
    pub algorithm_set: u32,
    pub pp_commands: Vec<u32>,
    pub pcr_policy: Option<(HashAlg, Digest)>,
    pub audit: AuditSettings,
    // Layout version 7 stores the SHA-512 bank's masks of `allocation` and of
    // the saved state's allocation after the version-6 fields; an older image
    // loads with the SHA-512 bank unallocated, as the TPM that wrote it had no
    // such bank.
}

/// Dictionary-attack parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DaParams {
    /// Failures before DA-protected entities are locked out.
    pub max_tries: u32,
    /// Seconds after which one failure is forgiven (0: never).
    pub recovery_time: u32,
    /// Seconds after a lockoutAuth failure before it may be tried again (0:
    /// only after a TPM Reset).
    pub lockout_recovery: u32,
}

impl Default for DaParams {
    fn default() -> Self {
        Self {
            max_tries: limits::MAX_AUTH_FAIL,
            recovery_time: (limits::LOCKOUT_INTERVAL_MS / 1000) as u32,
            lockout_recovery: limits::LOCKOUT_RECOVERY_S,
        }
    }
}

fn encode_policy(p: &mut Writer, policy: &Option<(HashAlg, Digest)>) {
    match policy {
        None => {
            p.u16(crate::defs::alg::NULL).tpm2b(&[]);
        }
        Some((h, d)) => {
            p.u16(h.id()).tpm2b(d.as_bytes());
        }
    }
}

fn decode_policy(r: &mut Reader) -> Result<Option<(HashAlg, Digest)>, NvError> {
    let id = r.u16().map_err(|_| NvError::Corrupt)?;
    let d = r.tpm2b(limits::MAX_DIGEST).map_err(|_| NvError::Corrupt)?;
    if id == crate::defs::alg::NULL {
        return if d.is_empty() {
            Ok(None)
        } else {
            Err(NvError::Corrupt)
        };
    }
    let h = HashAlg::from_id(id).ok_or(NvError::Corrupt)?;
    if d.len() != h.digest_size() {
        return Err(NvError::Corrupt);
    }
    Ok(Some((h, Digest::from_slice(d))))
}

impl Persistent {
    /// A freshly manufactured TPM with seeds from `rand`.
    pub fn manufacture(rand: &mut dyn FnMut(&mut [u8])) -> Self {
        let mut seed = || {
            let mut s = [0u8; SEED_SIZE];
            rand(&mut s);
            s
        };
        Self {
            generation: 0,
            eps: seed(),
            sps: seed(),
            pps: seed(),
            eh_proof: seed(),
            sh_proof: seed(),
            ph_proof: seed(),
            null_proof: seed(),
            owner_auth: Digest::filled(0, 0),
            endorsement_auth: Digest::filled(0, 0),
            lockout_auth: Digest::filled(0, 0),
            clock: 0,
            reset_count: 0,
            restart_count: 0,
            orderly: Orderly::None,
            allocation: Allocation::default(),
            saved: None,
            owner_policy: None,
            endorsement_policy: None,
            lockout_policy: None,
            persistent_objects: Vec::new(),
            da: DaParams::default(),
            disable_clear: false,
            nv_indices: Vec::new(),
            nv_max_counter: 0,
            algorithm_set: 0,
            pp_commands: alloc::vec![crate::defs::cc::PP_COMMANDS],
            pcr_policy: None,
            audit: AuditSettings::default(),
        }
    }

    /// Serializes into the checksummed image.
    pub fn encode(&self) -> Vec<u8> {
        let mut p = Writer::new();
        for s in [
            &self.eps,
            &self.sps,
            &self.pps,
            &self.eh_proof,
            &self.sh_proof,
            &self.ph_proof,
            &self.null_proof,
        ] {
            p.bytes(s);
        }
        for a in [&self.owner_auth, &self.endorsement_auth, &self.lockout_auth] {
            p.tpm2b(a.as_bytes());
        }
        p.u64(self.clock)
            .u32(self.reset_count)
            .u32(self.restart_count);
        p.u8(match self.orderly {
            Orderly::None => 0,
            Orderly::Clear => 1,
            Orderly::State => 2,
        });
        encode_allocation(&mut p, &self.allocation);
        match &self.saved {
            None => {
                p.u8(0);
            }
            Some(s) => {
                p.u8(1)
                    .u8(s.sh_enable as u8)
                    .u8(s.eh_enable as u8)
                    .u8(s.ph_enable_nv as u8);
                p.tpm2b(s.platform_auth.as_bytes()).u32(s.pcr_counter);
                encode_allocation(&mut p, &s.allocation);
                p.u16(s.pcrs.len() as u16);
                for (h, i, d) in &s.pcrs {
                    p.u16(h.id()).u8(*i).tpm2b(d.as_bytes());
                }
            }
        }
        for policy in [
            &self.owner_policy,
            &self.endorsement_policy,
            &self.lockout_policy,
        ] {
            encode_policy(&mut p, policy);
        }
        p.u16(self.persistent_objects.len() as u16);
        for (h, b) in &self.persistent_objects {
            p.u32(*h).u32(b.len() as u32).bytes(b);
        }
        p.u32(self.da.max_tries)
            .u32(self.da.recovery_time)
            .u32(self.da.lockout_recovery)
            .u8(self.disable_clear as u8);
        p.u16(self.nv_indices.len() as u16);
        for i in &self.nv_indices {
            i.encode(&mut p);
        }
        p.u64(self.nv_max_counter);
        p.u32(self.algorithm_set);
        encode_codes(&mut p, &self.pp_commands);
        encode_policy(&mut p, &self.pcr_policy);
        p.u16(self.audit.alg.id()).u64(self.audit.counter);
        encode_codes(&mut p, &self.audit.commands);
        if let Some(s) = &self.saved {
            p.tpm2b(s.pcr_auth.as_bytes())
                .tpm2b(s.audit_digest.as_bytes())
                .bytes(&s.commit.nonce)
                .u64(s.commit.counter)
                .u64(s.commit.outstanding);
        }
        p.u32(self.allocation.mask(HashAlg::Sha512));
        if let Some(s) = &self.saved {
            p.u32(s.allocation.mask(HashAlg::Sha512));
        }
        let mut w = Writer::new();
        w.bytes(&MAGIC)
            .u32(NV_VERSION)
            .u64(self.generation)
            .u32(p.len() as u32)
            .bytes(&p.buf);
        let sum = HashAlg::Sha256.digest(&[&w.buf]);
        w.bytes(sum.as_bytes());
        w.buf
    }

    /// Parses and checks an image.
    pub fn decode(image: &[u8]) -> Result<Self, NvError> {
        let body_len = image
            .len()
            .checked_sub(CHECKSUM_LEN)
            .ok_or(NvError::Corrupt)?;
        let (body, sum) = image.split_at(body_len);
        if HashAlg::Sha256.digest(&[body]).as_bytes() != sum {
            return Err(NvError::Corrupt);
        }
        let c = |_| NvError::Corrupt;
        let mut r = Reader::new(body);
        if r.bytes(4).map_err(c)? != MAGIC {
            return Err(NvError::Corrupt);
        }
        let version = r.u32().map_err(c)?;
        if version > NV_VERSION {
            return Err(NvError::UnsupportedVersion(version));
        }
        if version == 0 {
            return Err(NvError::Corrupt);
        }
        let generation = r.u64().map_err(c)?;
        let len = r.u32().map_err(c)? as usize;
        if len != r.remaining() {
            return Err(NvError::Corrupt);
        }
        let seed = |r: &mut Reader| -> Result<[u8; SEED_SIZE], NvError> {
            let mut s = [0u8; SEED_SIZE];
            s.copy_from_slice(r.bytes(SEED_SIZE).map_err(c)?);
            Ok(s)
        };
        let auth = |r: &mut Reader| {
            r.tpm2b(limits::MAX_DIGEST)
                .map(Digest::from_slice)
                .map_err(c)
        };
        let flag = |r: &mut Reader| match r.u8() {
            Ok(0) => Ok(false),
            Ok(1) => Ok(true),
            _ => Err(NvError::Corrupt),
        };
        let (eps, sps, pps) = (seed(&mut r)?, seed(&mut r)?, seed(&mut r)?);
        let (eh_proof, sh_proof, ph_proof, null_proof) =
            (seed(&mut r)?, seed(&mut r)?, seed(&mut r)?, seed(&mut r)?);
        let (owner_auth, endorsement_auth, lockout_auth) =
            (auth(&mut r)?, auth(&mut r)?, auth(&mut r)?);
        let clock = r.u64().map_err(c)?;
        let reset_count = r.u32().map_err(c)?;
        let restart_count = r.u32().map_err(c)?;
        let orderly = match r.u8().map_err(c)? {
            0 => Orderly::None,
            1 => Orderly::Clear,
            2 => Orderly::State,
            _ => return Err(NvError::Corrupt),
        };
        let allocation = decode_allocation(&mut r)?;
        let saved = if flag(&mut r)? {
            let sh_enable = flag(&mut r)?;
            let eh_enable = flag(&mut r)?;
            let ph_enable_nv = flag(&mut r)?;
            let platform_auth = auth(&mut r)?;
            let pcr_counter = r.u32().map_err(c)?;
            let allocation = decode_allocation(&mut r)?;
            let n = r.u16().map_err(c)? as usize;
            if n > PCR_COUNT * HashAlg::ALL.len() {
                return Err(NvError::Corrupt);
            }
            let mut pcrs = Vec::with_capacity(n);
            for _ in 0..n {
                let h = HashAlg::from_id(r.u16().map_err(c)?).ok_or(NvError::Corrupt)?;
                let i = r.u8().map_err(c)?;
                let d = r.tpm2b(limits::MAX_DIGEST).map_err(c)?;
                if usize::from(i) >= PCR_COUNT
                    || !PCR_ATTRS[usize::from(i)].state_save
                    || d.len() != h.digest_size()
                {
                    return Err(NvError::Corrupt);
                }
                pcrs.push((h, i, Digest::from_slice(d)));
            }
            Some(SavedState {
                pcrs,
                sh_enable,
                eh_enable,
                ph_enable_nv,
                platform_auth,
                pcr_counter,
                allocation,
                pcr_auth: Digest::filled(0, 0),
                audit_digest: Digest::filled(0, 0),
                commit: CommitState::default(),
            })
        } else {
            None
        };
        let (owner_policy, endorsement_policy, lockout_policy) = if version >= 2 {
            (
                decode_policy(&mut r)?,
                decode_policy(&mut r)?,
                decode_policy(&mut r)?,
            )
        } else {
            (None, None, None)
        };
        let mut persistent_objects = Vec::new();
        if version >= 3 {
            let n = r.u16().map_err(c)? as usize;
            if n > limits::MAX_PERSISTENT_OBJECTS {
                return Err(NvError::Corrupt);
            }
            for _ in 0..n {
                let h = r.u32().map_err(c)?;
                let len = r.u32().map_err(c)? as usize;
                persistent_objects.push((h, r.bytes(len).map_err(c)?.to_vec()));
            }
        }
        let (da, disable_clear) = if version >= 4 {
            let da = DaParams {
                max_tries: r.u32().map_err(c)?,
                recovery_time: r.u32().map_err(c)?,
                lockout_recovery: r.u32().map_err(c)?,
            };
            (da, flag(&mut r)?)
        } else {
            (DaParams::default(), false)
        };
        let mut nv_indices = Vec::new();
        let mut nv_max_counter = 0;
        if version >= 5 {
            let n = r.u16().map_err(c)? as usize;
            if n > crate::nvindex::MAX_NV_INDICES {
                return Err(NvError::Corrupt);
            }
            for _ in 0..n {
                nv_indices.push(crate::nvindex::NvIndex::decode(&mut r).ok_or(NvError::Corrupt)?);
            }
            nv_max_counter = r.u64().map_err(c)?;
        }
        let mut algorithm_set = 0;
        let mut pp_commands = alloc::vec![crate::defs::cc::PP_COMMANDS];
        let mut pcr_policy = None;
        let mut audit = AuditSettings::default();
        let mut saved = saved;
        if version >= 6 {
            algorithm_set = r.u32().map_err(c)?;
            pp_commands = decode_codes(&mut r)?;
            if !pp_commands.contains(&crate::defs::cc::PP_COMMANDS) {
                return Err(NvError::Corrupt);
            }
            pcr_policy = decode_policy(&mut r)?;
            audit.alg = HashAlg::from_id(r.u16().map_err(c)?).ok_or(NvError::Corrupt)?;
            audit.counter = r.u64().map_err(c)?;
            audit.commands = decode_codes(&mut r)?;
            if let Some(s) = &mut saved {
                let digest = |r: &mut Reader, allow: &dyn Fn(usize) -> bool| {
                    let d = r.tpm2b(limits::MAX_DIGEST).map_err(c)?;
                    if allow(d.len()) {
                        Ok(Digest::from_slice(d))
                    } else {
                        Err(NvError::Corrupt)
                    }
                };
                s.pcr_auth = digest(&mut r, &|_| true)?;
                s.audit_digest = digest(&mut r, &|n| n == 0 || n == audit.alg.digest_size())?;
                s.commit.nonce = seed(&mut r)?;
                s.commit.counter = r.u64().map_err(c)?;
                s.commit.outstanding = r.u64().map_err(c)?;
            }
        }
        let mut allocation = allocation;
        if version >= 7 {
            allocation.0[HashAlg::Sha512.index()] = decode_mask(&mut r)?;
            if let Some(s) = &mut saved {
                s.allocation.0[HashAlg::Sha512.index()] = decode_mask(&mut r)?;
            }
        }
        if r.remaining() != 0 {
            return Err(NvError::Corrupt);
        }
        Ok(Self {
            generation,
            eps,
            sps,
            pps,
            eh_proof,
            sh_proof,
            ph_proof,
            null_proof,
            owner_auth,
            endorsement_auth,
            lockout_auth,
            clock,
            reset_count,
            restart_count,
            orderly,
            allocation,
            saved,
            owner_policy,
            endorsement_policy,
            lockout_policy,
            persistent_objects,
            da,
            disable_clear,
            nv_indices,
            nv_max_counter,
            algorithm_set,
            pp_commands,
            pcr_policy,
            audit,
        })
    }
}

/// Most command codes a list in the image may hold.
const MAX_CODES: usize = 256;

fn encode_codes(w: &mut Writer, codes: &[u32]) {
    w.u16(codes.len() as u16);
    for c in codes {
        w.u32(*c);
    }
}

/// A sorted list of distinct command codes.
fn decode_codes(r: &mut Reader) -> Result<Vec<u32>, NvError> {
    let n = usize::from(r.u16().map_err(|_| NvError::Corrupt)?);
    if n > MAX_CODES {
        return Err(NvError::Corrupt);
    }
    let mut v: Vec<u32> = Vec::with_capacity(n);
    for _ in 0..n {
        let code = r.u32().map_err(|_| NvError::Corrupt)?;
        if v.last().is_some_and(|&l| l >= code) {
            return Err(NvError::Corrupt);
        }
        v.push(code);
    }
    Ok(v)
}

/// The banks of layout versions up to 6, stored where the allocation is; the
/// SHA-512 bank's mask follows the version-6 fields.
const V6_BANKS: [HashAlg; 3] = [HashAlg::Sha1, HashAlg::Sha256, HashAlg::Sha384];

fn encode_allocation(w: &mut Writer, a: &Allocation) {
    for h in V6_BANKS {
        w.u32(a.mask(h));
    }
}

fn decode_mask(r: &mut Reader) -> Result<u32, NvError> {
    let m = r.u32().map_err(|_| NvError::Corrupt)?;
    if m & !ALL_PCRS != 0 {
        return Err(NvError::Corrupt);
    }
    Ok(m)
}

/// The version-6 part of an allocation; the SHA-512 bank starts unallocated.
fn decode_allocation(r: &mut Reader) -> Result<Allocation, NvError> {
    let mut a = Allocation([0; crate::pcr::BANKS]);
    for h in V6_BANKS {
        a.0[h.index()] = decode_mask(r)?;
    }
    Ok(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Persistent {
        let mut n = 0u8;
        let mut p = Persistent::manufacture(&mut |b: &mut [u8]| {
            for x in b {
                *x = n;
                n = n.wrapping_add(1);
            }
        });
        p.owner_auth = Digest::from_slice(b"owner");
        p.clock = 1234;
        p.orderly = Orderly::State;
        p.saved = Some(SavedState {
            pcrs: alloc::vec![(HashAlg::Sha256, 3, Digest::filled(32, 9))],
            sh_enable: true,
            eh_enable: false,
            ph_enable_nv: true,
            platform_auth: Digest::from_slice(b"pp"),
            pcr_counter: 7,
            allocation: Allocation::default(),
            pcr_auth: Digest::filled(0, 0),
            audit_digest: Digest::filled(0, 0),
            commit: CommitState::default(),
        });
        p.lockout_policy = Some((HashAlg::Sha256, Digest::filled(32, 4)));
        p
    }

    #[test]
    fn round_trips() {
        let p = sample();
        assert_eq!(Persistent::decode(&p.encode()), Ok(p));
    }

    #[test]
    fn any_flipped_bit_or_truncation_is_refused() {
        let img = sample().encode();
        for i in (0..img.len()).step_by(7) {
            let mut bad = img.clone();
            bad[i] ^= 0x10;
            assert!(Persistent::decode(&bad).is_err(), "flip at {i}");
        }
        assert_eq!(
            Persistent::decode(&img[..img.len() - 1]),
            Err(NvError::Corrupt)
        );
        assert_eq!(Persistent::decode(&[]), Err(NvError::Corrupt));
    }

    /// Layout-7 to -10 images (the same bytes as layout 11) load
    /// unchanged and are written back as layout 11.
    #[test]
    fn version_7_to_10_images_load_and_are_rewritten_as_11() {
        let p = sample();
        let img = p.encode();
        assert_eq!(u32::from_be_bytes(img[4..8].try_into().unwrap()), 11);
        for old in [7, 8, 9, 10] {
            let v = relabel(&img[..img.len() - CHECKSUM_LEN], old, 0);
            let up = Persistent::decode(&v).unwrap();
            assert_eq!(up, p);
            assert_eq!(up.encode(), img);
        }
    }

    #[test]
    fn newer_version_is_reported() {
        let mut img = sample().encode();
        img[4..8].copy_from_slice(&99u32.to_be_bytes());
        let n = img.len() - CHECKSUM_LEN;
        let sum = HashAlg::Sha256.digest(&[&img[..n]]);
        img[n..].copy_from_slice(sum.as_bytes());
        assert_eq!(
            Persistent::decode(&img),
            Err(NvError::UnsupportedVersion(99))
        );
    }

    /// Bytes the version-6 fields take in [`sample`]'s image: algorithmSet
    /// (4), the PP list (2 + 4), no PCR policy (2 + 2), audit hash and counter
    /// (2 + 8), the audit list (2 + 4), and, as a state is saved, an empty PCR
    /// authValue and audit digest (2 + 2), the commit nonce, counter and
    /// outstanding map (48 + 8 + 8).
    const V6_TAIL: usize = 4 + 6 + 4 + 10 + 6 + 4 + SEED_SIZE + 16;
    /// Bytes the version-7 fields take in [`sample`]'s image: the SHA-512
    /// masks of the allocation and of the saved state's allocation.
    const V7_TAIL: usize = 8;

    /// `p` as a TPM without a SHA-512 bank would have stored it.
    fn without_sha512_bank(mut p: Persistent) -> Persistent {
        p.allocation.0[HashAlg::Sha512.index()] = 0;
        if let Some(s) = &mut p.saved {
            s.allocation.0[HashAlg::Sha512.index()] = 0;
        }
        p
    }

    /// `body` (an image without its checksum) relabelled as `version`, with
    /// the last `drop` bytes removed, and checksummed.
    fn relabel(body: &[u8], version: u32, drop: usize) -> Vec<u8> {
        let mut v = body[..body.len() - drop].to_vec();
        v[4..8].copy_from_slice(&version.to_be_bytes());
        let len = u32::from_be_bytes(v[16..20].try_into().unwrap()) - drop as u32;
        v[16..20].copy_from_slice(&len.to_be_bytes());
        let sum = HashAlg::Sha256.digest(&[&v]);
        v.extend_from_slice(sum.as_bytes());
        v
    }

    /// An image of an older layout (version 2: no persistent objects, DA
    /// parameters or disableClear) still loads, with the newer fields at their
    /// defaults.
    #[test]
    fn older_layout_versions_load() {
        let mut p = sample();
        p.persistent_objects.clear();
        let img = p.encode();
        let body = &img[..img.len() - CHECKSUM_LEN];
        // Drop the version-3, -4, -5 and -6 fields (an empty list: u16 0; DA
        // parameters and disableClear: 13 bytes; no NV index and the max
        // counter: 10 bytes) and relabel.
        let v2 = relabel(body, 2, 25 + V6_TAIL + V7_TAIL);
        assert_eq!(Persistent::decode(&v2), Ok(without_sha512_bank(p)));
    }

    /// A version-5 image (before the platform, PCR-group, audit and commit
    /// fields) upgrades: the new fields take their manufacture defaults and
    /// the saved state gets an empty PCR authValue, audit digest and commit
    /// state; the next commit writes version 6.
    #[test]
    fn version_5_image_upgrades() {
        let p = sample();
        let img = p.encode();
        let v5 = relabel(&img[..img.len() - CHECKSUM_LEN], 5, V6_TAIL + V7_TAIL);
        let up = Persistent::decode(&v5).unwrap();
        assert_eq!(up, without_sha512_bank(p));
        assert_eq!(up.pp_commands, [crate::defs::cc::PP_COMMANDS]);
        assert_eq!(up.audit, AuditSettings::default());
        let again = up.encode();
        assert_eq!(
            u32::from_be_bytes(again[4..8].try_into().unwrap()),
            NV_VERSION
        );
        assert_eq!(Persistent::decode(&again), Ok(up));
    }

    /// A version-6 image (three PCR banks) upgrades with the SHA-512 bank
    /// unallocated in the allocation and the saved state; the SHA-512 masks
    /// round-trip in version 7, and a mask naming PCRs beyond the 24 is refused.
    #[test]
    fn version_6_image_upgrades_without_a_sha512_bank() {
        let mut p = sample();
        if let Some(s) = &mut p.saved {
            s.allocation.0[HashAlg::Sha512.index()] = 0x00_00F0;
        }
        p.allocation.0[HashAlg::Sha512.index()] = 0x12_3456;
        let img = p.encode();
        assert_eq!(Persistent::decode(&img), Ok(p.clone()));
        let v6 = relabel(&img[..img.len() - CHECKSUM_LEN], 6, V7_TAIL);
        let up = Persistent::decode(&v6).unwrap();
        assert_eq!(up, without_sha512_bank(p.clone()));
        assert_eq!(up.allocation.mask(HashAlg::Sha256), ALL_PCRS);
        let mut body = img[..img.len() - CHECKSUM_LEN].to_vec();
        let n = body.len();
        body[n - 8..n - 4].copy_from_slice(&0x0100_0000u32.to_be_bytes());
        assert_eq!(
            Persistent::decode(&relabel(&body, NV_VERSION, 0)),
            Err(NvError::Corrupt)
        );
    }

    /// The version-6 fields round-trip, and damaged ones (checksum intact)
    /// are refused: unsorted or duplicated command lists, a PP list without
    /// TPM2_PP_Commands, an unknown audit hash, an audit digest of the wrong
    /// size, an oversized list.
    #[test]
    fn version_6_fields_round_trip_and_hostile_values_are_refused() {
        let mut p = sample();
        p.algorithm_set = 9;
        p.pp_commands = alloc::vec![crate::defs::cc::CLEAR, crate::defs::cc::PP_COMMANDS];
        p.pcr_policy = Some((HashAlg::Sha256, Digest::filled(32, 3)));
        p.audit.alg = HashAlg::Sha384;
        p.audit.counter = 77;
        p.audit.commands.insert(0, crate::defs::cc::CLEAR);
        if let Some(s) = &mut p.saved {
            s.pcr_auth = Digest::from_slice(b"pcr");
            s.audit_digest = Digest::filled(48, 5);
            s.commit = CommitState {
                nonce: [6; SEED_SIZE],
                counter: 12,
                outstanding: 0b1010,
            };
        }
        assert_eq!(Persistent::decode(&p.encode()), Ok(p.clone()));
        type Damage<'a> = (&'a str, &'a dyn Fn(&mut Persistent));
        let cases: &[Damage] = &[
            ("unsorted PP list", &|q| q.pp_commands.reverse()),
            ("duplicate audit code", &|q| {
                q.audit.commands.insert(0, crate::defs::cc::CLEAR)
            }),
            ("PP list without PP_Commands", &|q| {
                q.pp_commands.truncate(1)
            }),
            ("audit digest size", &|q| {
                if let Some(s) = &mut q.saved {
                    s.audit_digest = Digest::filled(32, 5);
                }
            }),
            ("oversized list", &|q| q.audit.commands = (0..300).collect()),
        ];
        for (what, damage) in cases {
            let mut q = p.clone();
            damage(&mut q);
            assert_eq!(
                Persistent::decode(&q.encode()),
                Err(NvError::Corrupt),
                "{what}"
            );
        }
        // An unknown audit hash id.
        let img = p.encode();
        let body = &img[..img.len() - CHECKSUM_LEN];
        let at = body
            .windows(10)
            .rposition(|w| {
                w == [
                    &HashAlg::Sha384.id().to_be_bytes()[..],
                    &77u64.to_be_bytes(),
                ]
                .concat()
            })
            .unwrap();
        let mut bad = body.to_vec();
        bad[at..at + 2].copy_from_slice(&0x0099u16.to_be_bytes());
        let bad = relabel(&bad, NV_VERSION, 0);
        assert_eq!(Persistent::decode(&bad), Err(NvError::Corrupt));
    }

    #[test]
    fn persistent_objects_round_trip() {
        let mut p = sample();
        p.persistent_objects = alloc::vec![(0x8100_0001, alloc::vec![1, 2, 3])];
        assert_eq!(Persistent::decode(&p.encode()), Ok(p));
    }
}
