//! HMAC and policy sessions (Part 1 §19, §21): the session table (handles,
//! loaded/saved state), KDFa, the session key, command and response HMACs, and
//! parameter encryption of the first TPM2B parameter with AES-CFB or XOR.

use crate::defs::{alg, handle, limits, rc, se};
use crate::hash::{Digest, HashAlg};
use crate::marshal::Reader;
use aes::cipher::{AsyncStreamCipher, KeyIvInit};
use alloc::vec::Vec;

/// TPMT_SYM_DEF of a session: how its parameters are encrypted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Symmetric {
    Null,
    /// XOR obfuscation with KDFa over this hash.
    Xor(HashAlg),
    /// AES in CFB mode with a key of this many bits (128, 192 or 256).
    AesCfb(u16),
}

impl Symmetric {
    /// Unmarshals a TPMT_SYM_DEF (TPMI_ALG_SYM+ with its key bits and mode).
    /// Errors are bare codes: SYMMETRIC (algorithm), VALUE (key bits), HASH, MODE.
    pub fn unmarshal(r: &mut Reader) -> Result<Self, u32> {
        match r.u16()? {
            alg::NULL => Ok(Symmetric::Null),
            alg::XOR => {
                let h = r.hash_alg(false)?.ok_or(rc::HASH)?;
                Ok(Symmetric::Xor(h))
            }
            alg::AES => {
                let bits = r.u16()?;
                if !matches!(bits, 128 | 192 | 256) {
                    return Err(rc::VALUE);
                }
                if r.u16()? != alg::CFB {
                    return Err(rc::MODE);
                }
                Ok(Symmetric::AesCfb(bits))
            }
            _ => Err(rc::SYMMETRIC),
        }
    }

    /// Encrypts (`encrypt`) or decrypts `data` in place with a key derived
    /// from `key` and the two nonces (Part 1 §21.2–21.3).
    pub fn apply(
        self,
        h: HashAlg,
        key: &[u8],
        nonce_newer: &[u8],
        nonce_older: &[u8],
        data: &mut [u8],
        encrypt: bool,
    ) {
        match self {
            Symmetric::Null => {}
            Symmetric::Xor(xh) => {
                let mask = kdfa(
                    xh,
                    key,
                    b"XOR",
                    nonce_newer,
                    nonce_older,
                    data.len() as u32 * 8,
                );
                for (d, m) in data.iter_mut().zip(mask) {
                    *d ^= m;
                }
            }
            Symmetric::AesCfb(bits) => {
                let kb = usize::from(bits / 8);
                let m = kdfa(
                    h,
                    key,
                    b"CFB",
                    nonce_newer,
                    nonce_older,
                    u32::from(bits) + 128,
                );
                let (k, iv) = m.split_at(kb);
                aes_cfb(k, iv, data, encrypt);
            }
        }
    }
}

/// AES-CFB128 over `data` with key `k` (16, 24 or 32 bytes) and IV `iv`.
pub fn aes_cfb(k: &[u8], iv: &[u8], data: &mut [u8], encrypt: bool) {
    fn run<C>(k: &[u8], iv: &[u8], data: &mut [u8], encrypt: bool)
    where
        C: aes::cipher::BlockEncrypt + aes::cipher::BlockCipher + aes::cipher::KeyInit,
    {
        if encrypt {
            if let Ok(c) = cfb_mode::Encryptor::<C>::new_from_slices(k, iv) {
                c.encrypt(data);
            }
        } else if let Ok(c) = cfb_mode::Decryptor::<C>::new_from_slices(k, iv) {
            c.decrypt(data);
        }
    }
    match k.len() {
        16 => run::<aes::Aes128>(k, iv, data, encrypt),
        24 => run::<aes::Aes192>(k, iv, data, encrypt),
        _ => run::<aes::Aes256>(k, iv, data, encrypt),
    }
}

/// KDFa (Part 1 §11.4.10.2): HMAC-based counter-mode KDF (SP 800-108). The label
/// is used with a terminating zero octet; the result has `bits` bits (the
/// excess high-order bits of the first octet cleared).
pub fn kdfa(h: HashAlg, key: &[u8], label: &[u8], u: &[u8], v: &[u8], bits: u32) -> Vec<u8> {
    let bytes = bits.div_ceil(8) as usize;
    let mut out = Vec::with_capacity(bytes + h.digest_size());
    let mut counter = 1u32;
    while out.len() < bytes {
        let block = h.hmac(
            key,
            &[
                &counter.to_be_bytes(),
                label,
                &[0],
                u,
                v,
                &bits.to_be_bytes(),
            ],
        );
        out.extend_from_slice(block.as_bytes());
        counter += 1;
    }
    out.truncate(bytes);
    if !bits.is_multiple_of(8) {
        if let Some(b) = out.first_mut() {
            *b &= (1u8 << (bits % 8)) - 1;
        }
    }
    out
}

/// The kind of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Hmac,
    Policy,
    /// A trial policy session: computes a policy digest, authorizes nothing.
    Trial,
}

impl SessionKind {
    pub fn from_se(v: u8) -> Option<Self> {
        match v {
            se::HMAC => Some(SessionKind::Hmac),
            se::POLICY => Some(SessionKind::Policy),
            se::TRIAL => Some(SessionKind::Trial),
            _ => None,
        }
    }
    pub fn is_policy(self) -> bool {
        self != SessionKind::Hmac
    }
    /// TPM_HT of this kind's handles.
    pub fn handle_type(self) -> u8 {
        if self.is_policy() {
            handle::HT_POLICY_SESSION
        } else {
            handle::HT_HMAC_SESSION
        }
    }
}

/// The policy state of a policy (or trial) session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyState {
    pub digest: Digest,
    /// TPM2_PolicyCommandCode.
    pub command_code: Option<u32>,
    /// PCR update counter when TPM2_PolicyPCR ran.
    pub pcr_counter: Option<u32>,
    /// cpHash bound by TPM2_PolicySecret's cpHashA.
    pub cp_hash: Option<Digest>,
    /// TPM time (ms) after which the session's policy has expired.
    pub timeout: Option<u64>,
    /// TPM2_PolicyAuthValue: the HMAC includes the entity's authValue.
    pub auth_value_needed: bool,
    /// TPM2_PolicyPassword: the HMAC field is the entity's authValue in clear.
    pub password_needed: bool,
    /// TPM2_PolicyLocality: the localities (bit n = locality n) allowed.
    pub locality: Option<u8>,
    /// TPM2_PolicyNameHash / TPM2_PolicyDuplicationSelect: H(Names of the
    /// command's handles).
    pub name_hash: Option<Digest>,
    /// TPM2_PolicyTemplate: H(the object template of the creating command).
    pub template_hash: Option<Digest>,
    /// TPM2_PolicyNvWritten: the TPMA_NV_WRITTEN the NV index must have.
    pub nv_written: Option<bool>,
    /// TPM2_PolicyPhysicalPresence: physical presence must be asserted.
    pub pp_required: bool,
}

impl PolicyState {
    /// May the session be bound to cpHash `cp`? Not when it already has
    /// another cpHash, a name hash or a template hash (they exclude each
    /// other: TPM_RC_CPHASH).
    pub fn cp_hash_conflicts(&self, cp: &[u8]) -> bool {
        self.cp_hash.is_some_and(|c| c.as_bytes() != cp)
            || self.name_hash.is_some()
            || self.template_hash.is_some()
    }

    fn new(h: HashAlg) -> Self {
        Self {
            digest: Digest::filled(h.digest_size(), 0),
            command_code: None,
            pcr_counter: None,
            cp_hash: None,
            timeout: None,
            auth_value_needed: false,
            password_needed: false,
            locality: None,
            name_hash: None,
            template_hash: None,
            nv_written: None,
            pp_required: false,
        }
    }
}

/// One HMAC or policy session.
#[derive(Debug, Clone)]
pub struct AuthSession {
    pub kind: SessionKind,
    pub hash: HashAlg,
    pub symmetric: Symmetric,
    pub nonce_tpm: Digest,
    pub session_key: Vec<u8>,
    /// The entity (handle, authValue) an HMAC session is bound to.
    pub bound: Option<(u32, Digest)>,
    /// Bound to lockoutAuth: unusable while lockoutAuth is locked out.
    pub lockout_bound: bool,
    /// Bound to a DA-protected object: its failures count towards lockout.
    pub da_bound: bool,
    pub policy: PolicyState,
    /// TPM time (ms) when the session started or its policy was last reset.
    pub start_time: u64,
    /// Context saved with this sequence number: the handle is reserved but
    /// the session is not loaded.
    pub saved: Option<u64>,
    /// The session audit digest, once the session has been used for audit
    /// (an HMAC session with TPMA_SESSION.audit).
    pub audit: Option<Digest>,
}

impl AuthSession {
    /// Starts a session: sessionKey = KDFa(authHash, bindAuth || salt, "ATH",
    /// nonceTPM, nonceCaller, digest bits), empty if both are empty.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: SessionKind,
        hash: HashAlg,
        symmetric: Symmetric,
        nonce_tpm: Digest,
        nonce_caller: &[u8],
        bind: Option<(u32, Digest)>,
        salt: &[u8],
        now: u64,
    ) -> Self {
        let mut key = Vec::new();
        if let Some((_, a)) = &bind {
            key.extend_from_slice(a.as_bytes());
        }
        key.extend_from_slice(salt);
        let session_key = if key.is_empty() {
            Vec::new()
        } else {
            kdfa(
                hash,
                &key,
                b"ATH",
                nonce_tpm.as_bytes(),
                nonce_caller,
                hash.digest_size() as u32 * 8,
            )
        };
        let lockout_bound = matches!(bind, Some((handle::LOCKOUT, _)));
        Self {
            kind,
            hash,
            symmetric,
            nonce_tpm,
            session_key,
            bound: if kind == SessionKind::Hmac {
                bind
            } else {
                None
            },
            lockout_bound: kind == SessionKind::Hmac && lockout_bound,
            da_bound: false,
            policy: PolicyState::new(hash),
            start_time: now,
            saved: None,
            audit: None,
        }
    }

    /// TPM2_PolicyRestart and the reset after each use: the policy starts over.
    pub fn reset_policy(&mut self, now: u64) {
        self.policy = PolicyState::new(self.hash);
        self.start_time = now;
    }

    /// Is this HMAC session bound to `h` whose authValue is now `auth`?
    pub fn is_bound_to(&self, h: u32, auth: &Digest) -> bool {
        matches!(&self.bound, Some((bh, ba)) if *bh == h && ba == auth)
    }

    /// policyDigest := H(policyDigest || parts...).
    pub fn extend_policy(&mut self, parts: &[&[u8]]) {
        let mut all: Vec<&[u8]> = Vec::with_capacity(parts.len() + 1);
        all.push(self.policy.digest.as_bytes());
        all.extend_from_slice(parts);
        self.policy.digest = self.hash.digest(&all);
    }
}

impl AuthSession {
    /// Serializes the session for a VM snapshot; TPM times are stored
    /// relative to `now` (elapsed for the start, remaining for a timeout).
    pub fn encode(&self, w: &mut crate::marshal::Writer, now: u64) {
        let kind = match self.kind {
            SessionKind::Hmac => se::HMAC,
            SessionKind::Policy => se::POLICY,
            SessionKind::Trial => se::TRIAL,
        };
        w.u8(kind).u16(self.hash.id());
        match self.symmetric {
            Symmetric::Null => w.u8(0).u16(0),
            Symmetric::Xor(h) => w.u8(1).u16(h.id()),
            Symmetric::AesCfb(b) => w.u8(2).u16(b),
        };
        w.tpm2b(self.nonce_tpm.as_bytes()).tpm2b(&self.session_key);
        match &self.bound {
            None => w.u8(0).u32(0).tpm2b(&[]),
            Some((h, a)) => w.u8(1).u32(*h).tpm2b(a.as_bytes()),
        };
        w.u8(self.lockout_bound as u8).u8(self.da_bound as u8);
        let p = &self.policy;
        w.tpm2b(p.digest.as_bytes());
        w.u8(p.command_code.is_some() as u8)
            .u32(p.command_code.unwrap_or(0));
        w.u8(p.pcr_counter.is_some() as u8)
            .u32(p.pcr_counter.unwrap_or(0));
        w.u8(p.cp_hash.is_some() as u8)
            .tpm2b(p.cp_hash.as_ref().map_or(&[][..], |d| d.as_bytes()));
        w.u8(p.timeout.is_some() as u8)
            .u64(p.timeout.map_or(0, |t| t.saturating_sub(now)));
        w.u8(p.auth_value_needed as u8)
            .u8(p.password_needed as u8)
            .u64(now.saturating_sub(self.start_time));
        w.u8(self.saved.is_some() as u8)
            .u64(self.saved.unwrap_or(0));
        w.u8(p.locality.is_some() as u8).u8(p.locality.unwrap_or(0));
        // Since snapshot version 3.
        w.u8(p.name_hash.is_some() as u8)
            .tpm2b(p.name_hash.as_ref().map_or(&[][..], |d| d.as_bytes()));
        w.u8(p.template_hash.is_some() as u8)
            .tpm2b(p.template_hash.as_ref().map_or(&[][..], |d| d.as_bytes()));
        w.u8(match p.nv_written {
            None => 0,
            Some(false) => 1,
            Some(true) => 2,
        })
        .u8(p.pp_required as u8);
        // Since snapshot version 4.
        w.u8(self.audit.is_some() as u8)
            .tpm2b(self.audit.as_ref().map_or(&[][..], |d| d.as_bytes()));
    }

    /// Parses [`AuthSession::encode`] output of the current snapshot version.
    pub fn decode(r: &mut Reader) -> Option<Self> {
        Self::decode_version(r, crate::snapshot::VOLATILE_VERSION)
    }

    /// Parses [`AuthSession::encode`] output of snapshot version `version`
    /// (before version 3 the policy name hash, template hash, NV-written and
    /// physical-presence conditions were not saved), checking every field;
    /// times become relative to a TPM time of 0 (the restored TPM's).
    pub fn decode_version(r: &mut Reader, version: u32) -> Option<Self> {
        let flag = |r: &mut Reader| match r.u8() {
            Ok(0) => Some(false),
            Ok(1) => Some(true),
            _ => None,
        };
        let kind = SessionKind::from_se(r.u8().ok()?)?;
        let hash = HashAlg::from_id(r.u16().ok()?)?;
        let symmetric = match (r.u8().ok()?, r.u16().ok()?) {
            (0, _) => Symmetric::Null,
            (1, h) => Symmetric::Xor(HashAlg::from_id(h)?),
            (2, b @ (128 | 192 | 256)) => Symmetric::AesCfb(b),
            _ => return None,
        };
        let nonce = r.tpm2b(limits::MAX_DIGEST).ok()?;
        if nonce.len() != hash.digest_size() {
            return None;
        }
        let session_key = r.tpm2b(limits::MAX_DIGEST).ok()?.to_vec();
        let has_bound = flag(r)?;
        let bh = r.u32().ok()?;
        let ba = Digest::from_slice(r.tpm2b(limits::MAX_DIGEST).ok()?);
        let lockout_bound = flag(r)?;
        let da_bound = flag(r)?;
        let digest = r.tpm2b(limits::MAX_DIGEST).ok()?;
        if digest.len() != hash.digest_size() {
            return None;
        }
        let cc = (flag(r)?, r.u32().ok()?);
        let pc = (flag(r)?, r.u32().ok()?);
        let cp = (flag(r)?, r.tpm2b(limits::MAX_DIGEST).ok()?);
        let to = (flag(r)?, r.u64().ok()?);
        let auth_value_needed = flag(r)?;
        let password_needed = flag(r)?;
        let _elapsed = r.u64().ok()?;
        let saved = (flag(r)?, r.u64().ok()?);
        let loc = (flag(r)?, r.u8().ok()?);
        let mut name_hash = None;
        let mut template_hash = None;
        let mut nv_written = None;
        let mut pp_required = false;
        if version >= 3 {
            let digest_of = |r: &mut Reader| -> Option<Option<Digest>> {
                let set = flag(r)?;
                let d = r.tpm2b(limits::MAX_DIGEST).ok()?;
                if set && d.len() != hash.digest_size() {
                    return None;
                }
                Some(set.then(|| Digest::from_slice(d)))
            };
            name_hash = digest_of(r)?;
            template_hash = digest_of(r)?;
            nv_written = match r.u8().ok()? {
                0 => None,
                1 => Some(false),
                2 => Some(true),
                _ => return None,
            };
            pp_required = flag(r)?;
        }
        let mut audit = None;
        if version >= 4 {
            let set = flag(r)?;
            let d = r.tpm2b(limits::MAX_DIGEST).ok()?;
            if set && (d.len() != hash.digest_size() || kind != SessionKind::Hmac) {
                return None;
            }
            audit = set.then(|| Digest::from_slice(d));
        }
        Some(Self {
            kind,
            hash,
            symmetric,
            nonce_tpm: Digest::from_slice(nonce),
            session_key,
            bound: has_bound.then_some((bh, ba)),
            lockout_bound,
            da_bound,
            policy: PolicyState {
                digest: Digest::from_slice(digest),
                command_code: cc.0.then_some(cc.1),
                pcr_counter: pc.0.then_some(pc.1),
                cp_hash: cp.0.then(|| Digest::from_slice(cp.1)),
                timeout: to.0.then_some(to.1),
                auth_value_needed,
                password_needed,
                locality: loc.0.then_some(loc.1),
                name_hash,
                template_hash,
                nv_written,
                pp_required,
            },
            start_time: 0,
            saved: saved.0.then_some(saved.1),
            audit,
        })
    }
}

/// Why a session could not be created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TableError {
    /// Every session handle is in use (TPM_RC_SESSION_HANDLES).
    NoHandles,
    /// Too many sessions are loaded (TPM_RC_SESSION_MEMORY).
    NoMemory,
}

impl TableError {
    pub fn rc(self) -> u32 {
        match self {
            TableError::NoHandles => rc::SESSION_HANDLES,
            TableError::NoMemory => rc::SESSION_MEMORY,
        }
    }
}

/// All sessions, indexed by the low bits of their handles.
#[derive(Debug, Clone)]
pub struct SessionTable {
    slots: Vec<Option<AuthSession>>,
}

impl Default for SessionTable {
    fn default() -> Self {
        Self::new()
    }
}

impl SessionTable {
    pub fn new() -> Self {
        Self {
            slots: alloc::vec![None; limits::MAX_ACTIVE_SESSIONS],
        }
    }

    fn index(h: u32) -> Option<usize> {
        let ht = handle::ht(h);
        if ht != handle::HT_HMAC_SESSION && ht != handle::HT_POLICY_SESSION {
            return None;
        }
        let i = (h & 0x00FF_FFFF) as usize;
        (i < limits::MAX_ACTIVE_SESSIONS).then_some(i)
    }

    /// Number of loaded sessions.
    pub fn loaded_count(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|s| s.saved.is_none())
            .count()
    }

    /// Number of saved (not loaded) sessions.
    pub fn saved_count(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .filter(|s| s.saved.is_some())
            .count()
    }

    /// Handles of the loaded (`saved == false`) or saved sessions, ascending.
    pub fn handles(&self, saved: bool) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let s = s.as_ref()?;
                (s.saved.is_some() == saved)
                    .then_some((u32::from(s.kind.handle_type()) << 24) | i as u32)
            })
            .collect();
        v.sort_unstable();
        v
    }

    /// Inserts a new loaded session; returns its handle.
    pub fn insert(&mut self, s: AuthSession) -> Result<u32, TableError> {
        if self.loaded_count() >= limits::MAX_LOADED_SESSIONS {
            return Err(TableError::NoMemory);
        }
        let i = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(TableError::NoHandles)?;
        let h = (u32::from(s.kind.handle_type()) << 24) | i as u32;
        self.slots[i] = Some(s);
        Ok(h)
    }

    /// The session of handle `h` in any state, if its type matches.
    pub fn slot(&self, h: u32) -> Option<&AuthSession> {
        let s = self.slots.get(Self::index(h)?)?.as_ref()?;
        (s.kind.handle_type() == handle::ht(h)).then_some(s)
    }

    fn slot_mut(&mut self, h: u32) -> Option<&mut AuthSession> {
        let s = self.slots.get_mut(Self::index(h)?)?.as_mut()?;
        (s.kind.handle_type() == handle::ht(h)).then_some(s)
    }

    /// The loaded session of handle `h`.
    pub fn get(&self, h: u32) -> Option<&AuthSession> {
        self.slot(h).filter(|s| s.saved.is_none())
    }

    /// The loaded session of handle `h`, mutably.
    pub fn get_mut(&mut self, h: u32) -> Option<&mut AuthSession> {
        self.slot_mut(h).filter(|s| s.saved.is_none())
    }

    /// Marks a loaded session saved with context `sequence`.
    pub fn save(&mut self, h: u32, sequence: u64) -> bool {
        match self.get_mut(h) {
            Some(s) => {
                s.saved = Some(sequence);
                true
            }
            None => false,
        }
    }

    /// Loads the saved session `h` whose context has `sequence`.
    pub fn load(&mut self, h: u32, sequence: u64) -> Result<(), u32> {
        let loaded = self.loaded_count();
        let s = self.slot_mut(h).ok_or(rc::HANDLE)?;
        if s.saved != Some(sequence) {
            return Err(rc::HANDLE);
        }
        if loaded >= limits::MAX_LOADED_SESSIONS {
            return Err(rc::SESSION_MEMORY);
        }
        s.saved = None;
        Ok(())
    }

    /// Every session with its handle (for snapshots).
    pub fn all(&self) -> impl Iterator<Item = (u32, &AuthSession)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            let s = s.as_ref()?;
            Some(((u32::from(s.kind.handle_type()) << 24) | i as u32, s))
        })
    }

    /// Puts a restored session back under its handle; false if the handle
    /// does not fit the session or its slot is taken or too many would be
    /// loaded.
    pub fn restore(&mut self, h: u32, s: AuthSession) -> bool {
        let Some(i) = Self::index(h) else {
            return false;
        };
        if handle::ht(h) != s.kind.handle_type()
            || self.slots[i].is_some()
            || (s.saved.is_none() && self.loaded_count() >= limits::MAX_LOADED_SESSIONS)
        {
            return false;
        }
        self.slots[i] = Some(s);
        true
    }

    /// Removes session `h` (loaded or saved). Returns whether it existed.
    pub fn flush(&mut self, h: u32) -> bool {
        if self.slot(h).is_none() {
            return false;
        }
        if let Some(i) = Self::index(h) {
            self.slots[i] = None;
        }
        true
    }
}

/// The HMAC of a session over a parameter hash and nonces (Part 1 §19.6):
/// HMAC(sessionKey || authValue, pHash || nonceNewer || nonceOlder || extra
/// nonces || sessionAttributes). Empty when both the key and the presented
/// HMAC are empty (an empty HMAC is then acceptable).
pub fn session_hmac(
    s: &AuthSession,
    auth: Option<&Digest>,
    p_hash: &[u8],
    nonces: &[&[u8]],
    attributes: u8,
    presented_empty: bool,
) -> Digest {
    let mut key = s.session_key.clone();
    if let Some(a) = auth {
        key.extend_from_slice(a.as_bytes());
    }
    if key.is_empty() && presented_empty {
        return Digest::filled(0, 0);
    }
    let mut parts: Vec<&[u8]> = Vec::with_capacity(nonces.len() + 2);
    parts.push(p_hash);
    parts.extend_from_slice(nonces);
    let a = [attributes];
    parts.push(&a);
    s.hash.hmac(&key, &parts)
}

/// Constant-time equality of two byte strings.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> alloc::string::String {
        b.iter().map(|x| alloc::format!("{x:02x}")).collect()
    }

    #[test]
    fn kdfa_matches_its_definition_and_masks_bits() {
        let k = kdfa(HashAlg::Sha256, b"key", b"ATH", b"u", b"v", 256);
        let expect = HashAlg::Sha256.hmac(
            b"key",
            &[
                &1u32.to_be_bytes(),
                b"ATH",
                &[0],
                b"u",
                b"v",
                &256u32.to_be_bytes(),
            ],
        );
        assert_eq!(k, expect.as_bytes());
        let long = kdfa(HashAlg::Sha1, b"k", b"CFB", b"", b"", 256);
        assert_eq!(long.len(), 32);
        let second = HashAlg::Sha1.hmac(
            b"k",
            &[&2u32.to_be_bytes(), b"CFB", &[0], &256u32.to_be_bytes()],
        );
        assert_eq!(&long[20..], &second.as_bytes()[..12]);
        let odd = kdfa(HashAlg::Sha256, b"k", b"X", b"", b"", 12);
        assert_eq!(odd.len(), 2);
        assert!(odd[0] < 16);
    }

    #[test]
    fn aes_cfb_round_trips_and_matches_sp800_38a() {
        // SP 800-38A F.3.13 CFB128-AES128.Encrypt, first block.
        let key = [
            0x2b, 0x7e, 0x15, 0x16, 0x28, 0xae, 0xd2, 0xa6, 0xab, 0xf7, 0x15, 0x88, 0x09, 0xcf,
            0x4f, 0x3c,
        ];
        let iv: [u8; 16] = core::array::from_fn(|i| i as u8);
        let mut pt = [
            0x6b, 0xc1, 0xbe, 0xe2, 0x2e, 0x40, 0x9f, 0x96, 0xe9, 0x3d, 0x7e, 0x11, 0x73, 0x93,
            0x17, 0x2a, 0xae, 0x2d,
        ];
        let orig = pt;
        aes_cfb(&key, &iv, &mut pt, true);
        assert_eq!(hex(&pt[..16]), "3b3fd92eb72dad20333449f8e83cfb4a");
        aes_cfb(&key, &iv, &mut pt, false);
        assert_eq!(pt, orig);
    }

    #[test]
    fn parameter_encryption_round_trips_for_each_algorithm() {
        for sym in [
            Symmetric::AesCfb(128),
            Symmetric::AesCfb(256),
            Symmetric::Xor(HashAlg::Sha256),
        ] {
            let mut d = *b"secret parameter data";
            sym.apply(HashAlg::Sha256, b"k", b"n1", b"n2", &mut d, true);
            assert_ne!(&d, b"secret parameter data");
            sym.apply(HashAlg::Sha256, b"k", b"n1", b"n2", &mut d, false);
            assert_eq!(&d, b"secret parameter data");
        }
    }

    #[test]
    fn sym_def_unmarshal_checks_each_field() {
        let p = |b: &[u8]| Symmetric::unmarshal(&mut Reader::new(b));
        assert_eq!(p(&[0, 0x10]), Ok(Symmetric::Null));
        assert_eq!(p(&[0, 6, 0, 128, 0, 0x43]), Ok(Symmetric::AesCfb(128)));
        assert_eq!(p(&[0, 6, 0, 100, 0, 0x43]), Err(rc::VALUE));
        assert_eq!(p(&[0, 6, 0, 128, 0, 0x44]), Err(rc::MODE));
        assert_eq!(p(&[0, 0x0A, 0, 0x0B]), Ok(Symmetric::Xor(HashAlg::Sha256)));
        assert_eq!(p(&[0, 0x25]), Err(rc::SYMMETRIC));
    }

    fn session(kind: SessionKind) -> AuthSession {
        AuthSession::new(
            kind,
            HashAlg::Sha256,
            Symmetric::Null,
            Digest::filled(32, 1),
            &[2; 16],
            None,
            &[],
            0,
        )
    }

    #[test]
    fn table_limits_loaded_sessions_and_saves() {
        let mut t = SessionTable::new();
        let a = t.insert(session(SessionKind::Hmac)).unwrap();
        let b = t.insert(session(SessionKind::Policy)).unwrap();
        let _c = t.insert(session(SessionKind::Trial)).unwrap();
        assert_eq!(a, 0x0200_0000);
        assert_eq!(b, 0x0300_0001);
        assert_eq!(
            t.insert(session(SessionKind::Hmac)),
            Err(TableError::NoMemory)
        );
        assert!(t.get(0x0300_0000).is_none(), "type must match the slot");
        assert!(t.save(a, 7));
        assert!(t.get(a).is_none());
        let d = t.insert(session(SessionKind::Hmac)).unwrap();
        assert_eq!(t.load(a, 7), Err(rc::SESSION_MEMORY));
        assert!(t.flush(d));
        assert_eq!(t.load(a, 6), Err(rc::HANDLE));
        assert_eq!(t.load(a, 7), Ok(()));
        assert_eq!(t.handles(false).len(), 3);
        assert_eq!(t.saved_count(), 0);
    }

    #[test]
    fn unbound_unsalted_sessions_have_no_key() {
        assert!(session(SessionKind::Hmac).session_key.is_empty());
        let s = AuthSession::new(
            SessionKind::Hmac,
            HashAlg::Sha256,
            Symmetric::Null,
            Digest::filled(32, 1),
            &[2; 16],
            Some((handle::OWNER, Digest::from_slice(b"pw"))),
            &[],
            0,
        );
        assert_eq!(s.session_key.len(), 32);
        assert!(s.is_bound_to(handle::OWNER, &Digest::from_slice(b"pw")));
        assert!(!s.is_bound_to(handle::OWNER, &Digest::from_slice(b"other")));
    }
}
