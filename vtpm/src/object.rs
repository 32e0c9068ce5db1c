//! Transient objects: the table of loaded objects (handles 0x80000000 + slot)
//! and the objects it holds. So far these are hash and event sequence objects
//! (TPM2_HashSequenceStart): an incremental hash state per bank, the sequence's
//! authValue, and whether a hash ticket may be issued for the data.

use crate::defs::{handle, limits, TPM_GENERATED_VALUE};
use crate::hash::{Digest, HashAlg};
use crate::public::Public;
use alloc::vec::Vec;
use sha1::Sha1;
use sha2::{Digest as _, Sha256, Sha384, Sha512};

/// A running hash of one algorithm.
#[derive(Debug, Clone)]
pub enum HashState {
    Sha1(Sha1),
    Sha256(Sha256),
    Sha384(Sha384),
    Sha512(Sha512),
}

impl HashState {
    pub fn new(h: HashAlg) -> Self {
        match h {
            HashAlg::Sha1 => HashState::Sha1(Sha1::new()),
            HashAlg::Sha256 => HashState::Sha256(Sha256::new()),
            HashAlg::Sha384 => HashState::Sha384(Sha384::new()),
            HashAlg::Sha512 => HashState::Sha512(Sha512::new()),
        }
    }
    pub fn alg(&self) -> HashAlg {
        match self {
            HashState::Sha1(_) => HashAlg::Sha1,
            HashState::Sha256(_) => HashAlg::Sha256,
            HashState::Sha384(_) => HashAlg::Sha384,
            HashState::Sha512(_) => HashAlg::Sha512,
        }
    }
    pub fn update(&mut self, data: &[u8]) {
        match self {
            HashState::Sha1(s) => s.update(data),
            HashState::Sha256(s) => s.update(data),
            HashState::Sha384(s) => s.update(data),
            HashState::Sha512(s) => s.update(data),
        }
    }
    pub fn finish(self) -> Digest {
        match self {
            HashState::Sha1(s) => Digest::from_slice(&s.finalize()),
            HashState::Sha256(s) => Digest::from_slice(&s.finalize()),
            HashState::Sha384(s) => Digest::from_slice(&s.finalize()),
            HashState::Sha512(s) => Digest::from_slice(&s.finalize()),
        }
    }
}

/// A hash sequence (one bank) or an event sequence (every bank).
/// A running AES-CMAC (a MAC sequence of a symmetric key).
#[derive(Clone)]
pub enum CmacState {
    A128(alloc::boxed::Box<cmac::Cmac<aes::Aes128>>),
    A256(alloc::boxed::Box<cmac::Cmac<aes::Aes256>>),
}

impl core::fmt::Debug for CmacState {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("CmacState")
    }
}

impl CmacState {
    /// A CMAC keyed with an AES-128 or AES-256 key.
    pub fn new(key: &[u8]) -> Option<Self> {
        use cmac::Mac;
        match key.len() {
            16 => cmac::Cmac::<aes::Aes128>::new_from_slice(key)
                .ok()
                .map(|c| CmacState::A128(alloc::boxed::Box::new(c))),
            32 => cmac::Cmac::<aes::Aes256>::new_from_slice(key)
                .ok()
                .map(|c| CmacState::A256(alloc::boxed::Box::new(c))),
            _ => None,
        }
    }
    pub fn update(&mut self, data: &[u8]) {
        use cmac::Mac;
        match self {
            CmacState::A128(c) => c.update(data),
            CmacState::A256(c) => c.update(data),
        }
    }
    /// The 16-byte tag.
    pub fn finish(self) -> Digest {
        use cmac::Mac;
        let tag = match self {
            CmacState::A128(c) => c.finalize().into_bytes(),
            CmacState::A256(c) => c.finalize().into_bytes(),
        };
        Digest::from_slice(&tag)
    }
}

#[derive(Debug, Clone)]
pub struct Sequence {
    pub states: Vec<HashState>,
    /// An event sequence (TPM2_HashSequenceStart with TPM_ALG_NULL).
    pub event: bool,
    pub auth: Digest,
    /// No data has been added yet.
    pub first_block: bool,
    /// The data did not start with TPM_GENERATED_VALUE: a ticket may be issued.
    pub ticket_safe: bool,
    /// An HMAC sequence (TPM2_HMAC_Start): the key, already reduced to at
    /// most one block; the state holds H((key ^ ipad) || data…).
    pub hmac_key: Option<Vec<u8>>,
    /// A CMAC sequence (TPM2_MAC_Start with a symmetric key): its running
    /// MAC, and no hash banks.
    pub cmac: Option<CmacState>,
}

/// Block size of a hash (for HMAC).
pub fn block_size(h: HashAlg) -> usize {
    match h {
        HashAlg::Sha384 | HashAlg::Sha512 => 128,
        HashAlg::Sha1 | HashAlg::Sha256 => 64,
    }
}

/// `key` padded to a block and XORed with `pad` (HMAC, RFC 2104).
fn padded_key(h: HashAlg, key: &[u8], pad: u8) -> Vec<u8> {
    let mut k = alloc::vec![0u8; block_size(h)];
    k[..key.len()].copy_from_slice(key);
    k.iter_mut().for_each(|b| *b ^= pad);
    k
}

impl Sequence {
    /// A hash sequence over `alg`, or an event sequence when `alg` is `None`.
    pub fn new(alg: Option<HashAlg>, auth: Digest) -> Self {
        let states = match alg {
            Some(h) => alloc::vec![HashState::new(h)],
            None => HashAlg::ALL.iter().map(|h| HashState::new(*h)).collect(),
        };
        Self {
            states,
            event: alg.is_none(),
            auth,
            first_block: true,
            ticket_safe: true,
            hmac_key: None,
            cmac: None,
        }
    }

    /// A CMAC sequence keyed with `key` (AES-128 or AES-256).
    pub fn new_cmac(key: &[u8], auth: Digest) -> Option<Self> {
        Some(Self {
            states: Vec::new(),
            event: false,
            auth,
            first_block: true,
            ticket_safe: true,
            hmac_key: None,
            cmac: Some(CmacState::new(key)?),
        })
    }

    /// An HMAC sequence over `alg` keyed with `key`.
    pub fn new_hmac(alg: HashAlg, key: &[u8], auth: Digest) -> Self {
        let key = if key.len() > block_size(alg) {
            alg.digest(&[key]).as_bytes().to_vec()
        } else {
            key.to_vec()
        };
        let mut inner = HashState::new(alg);
        inner.update(&padded_key(alg, &key, 0x36));
        Self {
            states: alloc::vec![inner],
            event: false,
            auth,
            first_block: true,
            ticket_safe: true,
            hmac_key: Some(key),
            cmac: None,
        }
    }

    /// Finishes a hash, HMAC or CMAC sequence (the first bank).
    pub fn finish(mut self) -> Digest {
        if let Some(c) = self.cmac.take() {
            return c.finish();
        }
        let inner = self.states.remove(0);
        let alg = inner.alg();
        let d = inner.finish();
        match self.hmac_key {
            None => d,
            Some(k) => alg.digest(&[&padded_key(alg, &k, 0x5C), d.as_bytes()]),
        }
    }

    /// Adds data to every bank.
    pub fn update(&mut self, data: &[u8]) {
        if self.first_block && !data.is_empty() {
            if data.len() >= 4 && data[..4] == TPM_GENERATED_VALUE.to_be_bytes() {
                self.ticket_safe = false;
            }
            self.first_block = false;
        }
        for s in &mut self.states {
            s.update(data);
        }
        if let Some(c) = &mut self.cmac {
            c.update(data);
        }
    }
}

/// A key: its public area, Names, hierarchy and (unless loaded public-only)
/// its sensitive part.
#[derive(Debug, Clone)]
pub struct Key {
    pub public: Public,
    pub name: Vec<u8>,
    pub qualified_name: Vec<u8>,
    /// The hierarchy the key belongs to (TPM_RH_NULL for external keys).
    pub hierarchy: u32,
    pub auth: Digest,
    /// The private part — the ECC scalar (big-endian), the RSA prime p
    /// (big-endian, keyBits/16 bytes) or the keyed-hash data — absent for a
    /// public-only key.
    pub private: Option<Vec<u8>>,
    /// sensitive.seedValue: a storage key's seed for protecting its
    /// children, a keyed-hash object's obfuscation value.
    pub seed_value: Vec<u8>,
}

impl Key {
    /// Serializes the key (public area, authValue, private part, hierarchy,
    /// seedValue, Qualified Name) for the NV image and context blobs.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = crate::marshal::Writer::new();
        w.tpm2b(&self.public.marshal())
            .tpm2b(self.auth.as_bytes())
            .tpm2b(self.private.as_deref().unwrap_or(&[]))
            .u8(self.private.is_some() as u8)
            .u32(self.hierarchy)
            .tpm2b(&self.seed_value)
            .tpm2b(&self.qualified_name);
        w.buf
    }

    /// Parses [`Key::encode`] output, recomputing the Name. Records written
    /// before the Qualified Name was kept get that of a primary object
    /// (H(hierarchy || Name)).
    pub fn decode(b: &[u8]) -> Option<Self> {
        let mut r = crate::marshal::Reader::new(b);
        let public = Public::unmarshal_2b(&mut r).ok()?;
        let auth = Digest::from_slice(r.tpm2b(limits::MAX_DIGEST).ok()?);
        let private = r
            .tpm2b(crate::public::max_sensitive(public.ty))
            .ok()?
            .to_vec();
        let has_private = r.u8().ok()? == 1;
        let hierarchy = r.u32().ok()?;
        let seed_value = r.tpm2b(limits::TPMU_HA_SIZE).ok()?.to_vec();
        let name = public.name();
        let qualified_name = if r.remaining() == 0 {
            crate::public::name_of(
                public.name_alg,
                &[&hierarchy.to_be_bytes()[..], &name].concat(),
            )
        } else {
            r.tpm2b(limits::TPMU_HA_SIZE + 2).ok()?.to_vec()
        };
        if r.remaining() != 0 {
            return None;
        }
        Some(Self {
            public,
            name,
            qualified_name,
            hierarchy,
            auth,
            private: has_private.then_some(private),
            seed_value,
        })
    }
}

/// A loaded transient object.
#[derive(Debug, Clone)]
pub enum Object {
    Sequence(Sequence),
    Key(alloc::boxed::Box<Key>),
}

impl Object {
    /// The object's authValue.
    pub fn auth(&self) -> Digest {
        match self {
            Object::Sequence(s) => s.auth,
            Object::Key(k) => k.auth,
        }
    }

    /// Is the object protected against dictionary attacks (noDA clear)?
    pub fn da_protected(&self) -> bool {
        match self {
            // Sequence objects have no public area and no DA protection here.
            Object::Sequence(_) => false,
            Object::Key(k) => !k.public.has(crate::public::attr::NO_DA),
        }
    }
}

/// The loaded transient objects, and the persistent objects (a view of the
/// NV image's evicted keys, kept in step with it by TPM2_EvictControl).
#[derive(Debug, Clone)]
pub struct ObjectTable {
    slots: Vec<Option<Object>>,
    persistent: Vec<(u32, Object)>,
}

impl Default for ObjectTable {
    fn default() -> Self {
        Self::new()
    }
}

impl ObjectTable {
    pub fn new() -> Self {
        Self {
            slots: alloc::vec![None; limits::MAX_LOADED_OBJECTS],
            persistent: Vec::new(),
        }
    }

    /// A table whose persistent objects are the NV image's `(handle, key)`
    /// records (records that do not decode are skipped with a warning).
    pub fn with_persistent(records: &[(u32, Vec<u8>)]) -> Self {
        let mut t = Self::new();
        for (h, b) in records {
            match Key::decode(b) {
                Some(k) => t
                    .persistent
                    .push((*h, Object::Key(alloc::boxed::Box::new(k)))),
                None => log::warn!("vtpm: persistent object {h:#x} does not decode"),
            }
        }
        t
    }

    /// Adds (or replaces) persistent object `h`.
    pub fn set_persistent(&mut self, h: u32, o: Object) {
        self.persistent.retain(|(p, _)| *p != h);
        self.persistent.push((h, o));
        self.persistent.sort_by_key(|(p, _)| *p);
    }

    /// Removes persistent object `h`.
    pub fn remove_persistent(&mut self, h: u32) -> bool {
        let n = self.persistent.len();
        self.persistent.retain(|(p, _)| *p != h);
        self.persistent.len() != n
    }

    /// Handles of the persistent objects, ascending.
    pub fn persistent_handles(&self) -> Vec<u32> {
        self.persistent.iter().map(|(h, _)| *h).collect()
    }

    fn index(h: u32) -> Option<usize> {
        if handle::ht(h) != handle::HT_TRANSIENT {
            return None;
        }
        let i = (h & 0x00FF_FFFF) as usize;
        (i < limits::MAX_LOADED_OBJECTS).then_some(i)
    }

    /// Loads `o`; returns its handle, or `None` when every slot is taken.
    pub fn insert(&mut self, o: Object) -> Option<u32> {
        let i = self.slots.iter().position(Option::is_none)?;
        self.slots[i] = Some(o);
        Some(u32::from(handle::HT_TRANSIENT) << 24 | i as u32)
    }

    pub fn get(&self, h: u32) -> Option<&Object> {
        if handle::ht(h) == handle::HT_PERSISTENT {
            return self
                .persistent
                .iter()
                .find(|(p, _)| *p == h)
                .map(|(_, o)| o);
        }
        self.slots.get(Self::index(h)?)?.as_ref()
    }

    pub fn get_mut(&mut self, h: u32) -> Option<&mut Object> {
        self.slots.get_mut(Self::index(h)?)?.as_mut()
    }

    /// Loaded key objects with their handles (for snapshots; sequence
    /// objects are not included).
    pub fn keys(&self) -> impl Iterator<Item = (u32, &Key)> {
        self.slots.iter().enumerate().filter_map(|(i, o)| match o {
            Some(Object::Key(k)) => Some((u32::from(handle::HT_TRANSIENT) << 24 | i as u32, &**k)),
            _ => None,
        })
    }

    /// Puts a restored object back under its transient handle; false if the
    /// handle is out of range or taken.
    pub fn restore(&mut self, h: u32, o: Object) -> bool {
        match Self::index(h) {
            Some(i) if self.slots[i].is_none() => {
                self.slots[i] = Some(o);
                true
            }
            _ => false,
        }
    }

    /// Unloads `h`, returning the object.
    pub fn remove(&mut self, h: u32) -> Option<Object> {
        self.slots.get_mut(Self::index(h)?)?.take()
    }

    /// Handles of the loaded objects, ascending.
    pub fn handles(&self) -> Vec<u32> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, o)| o.is_some())
            .map(|(i, _)| u32::from(handle::HT_TRANSIENT) << 24 | i as u32)
            .collect()
    }

    pub fn count(&self) -> usize {
        self.slots.iter().flatten().count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_hash_incrementally_and_track_ticket_safety() {
        let mut s = Sequence::new(Some(HashAlg::Sha256), Digest::filled(0, 0));
        s.update(b"ab");
        s.update(b"c");
        assert!(s.ticket_safe);
        let d = s.states.remove(0).finish();
        assert_eq!(d, HashAlg::Sha256.digest(&[b"abc"]));
        let mut e = Sequence::new(None, Digest::filled(0, 0));
        assert_eq!(e.states.len(), HashAlg::ALL.len());
        e.update(&TPM_GENERATED_VALUE.to_be_bytes());
        assert!(!e.ticket_safe);
    }

    #[test]
    fn table_has_three_slots() {
        let mut t = ObjectTable::new();
        let seq = || Object::Sequence(Sequence::new(None, Digest::filled(0, 0)));
        let a = t.insert(seq()).unwrap();
        assert_eq!(a, 0x8000_0000);
        t.insert(seq()).unwrap();
        t.insert(seq()).unwrap();
        assert!(t.insert(seq()).is_none());
        assert!(t.remove(a).is_some());
        assert!(t.get(a).is_none());
        assert_eq!(t.count(), 2);
        assert!(t.get(0x8100_0000).is_none());
    }
}
