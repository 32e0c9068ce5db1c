//! NV indices (Part 1 §37, Part 2 TPMS_NV_PUBLIC / TPMA_NV): the public area,
//! its Name, the attribute rules checked at definition, the access rules of
//! reads and writes, and the serialization of an index into the NV image.

use crate::defs::{limits, rc};
use crate::hash::{Digest, HashAlg};
use crate::marshal::{Reader, Writer};
use alloc::vec::Vec;

/// TPMA_NV bits and TPM_NT index types.
pub mod nva {
    pub const PPWRITE: u32 = 1 << 0;
    pub const OWNERWRITE: u32 = 1 << 1;
    pub const AUTHWRITE: u32 = 1 << 2;
    pub const POLICYWRITE: u32 = 1 << 3;
    pub const TYPE_SHIFT: u32 = 4;
    pub const TYPE_MASK: u32 = 0xF << TYPE_SHIFT;
    pub const POLICY_DELETE: u32 = 1 << 10;
    pub const WRITELOCKED: u32 = 1 << 11;
    pub const WRITEALL: u32 = 1 << 12;
    pub const WRITEDEFINE: u32 = 1 << 13;
    pub const WRITE_STCLEAR: u32 = 1 << 14;
    pub const GLOBALLOCK: u32 = 1 << 15;
    pub const PPREAD: u32 = 1 << 16;
    pub const OWNERREAD: u32 = 1 << 17;
    pub const AUTHREAD: u32 = 1 << 18;
    pub const POLICYREAD: u32 = 1 << 19;
    pub const NO_DA: u32 = 1 << 25;
    pub const ORDERLY: u32 = 1 << 26;
    pub const CLEAR_STCLEAR: u32 = 1 << 27;
    pub const READLOCKED: u32 = 1 << 28;
    pub const WRITTEN: u32 = 1 << 29;
    pub const PLATFORMCREATE: u32 = 1 << 30;
    pub const READ_STCLEAR: u32 = 1 << 31;
    /// Bits with no assigned meaning.
    pub const RESERVED: u32 = 0x300 | 0x01F0_0000;
    /// TPM_NT values.
    pub const NT_ORDINARY: u32 = 0;
    pub const NT_COUNTER: u32 = 1;
    pub const NT_BITS: u32 = 2;
    pub const NT_EXTEND: u32 = 4;
    /// The write and read authorization methods.
    pub const WRITE_ANY: u32 = PPWRITE | OWNERWRITE | AUTHWRITE | POLICYWRITE;
    pub const READ_ANY: u32 = PPREAD | OWNERREAD | AUTHREAD | POLICYREAD;
}

/// Largest NV index data (MAX_NV_INDEX_SIZE).
pub const MAX_NV_INDEX_SIZE: usize = 2048;
/// NV indices the image holds.
pub const MAX_NV_INDICES: usize = 32;
/// Bytes of a counter or bit-field index.
pub const COUNTER_SIZE: usize = 8;

/// TPMS_NV_PUBLIC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvPublic {
    pub index: u32,
    pub name_alg: HashAlg,
    pub attributes: u32,
    pub auth_policy: Vec<u8>,
    pub data_size: u16,
}

impl NvPublic {
    /// Unmarshals a TPM2B_NV_PUBLIC (bare codes).
    pub fn unmarshal_2b(r: &mut Reader) -> Result<Self, u32> {
        let n = r.u16()? as usize;
        if n == 0 {
            return Err(rc::SIZE);
        }
        let mut s = r.sub(n)?;
        let index = s.u32()?;
        if crate::defs::handle::ht(index) != crate::defs::handle::HT_NV_INDEX {
            return Err(rc::VALUE);
        }
        let name_alg = s.hash_alg(false)?.ok_or(rc::HASH)?;
        let attributes = s.u32()?;
        if attributes & nva::RESERVED != 0 {
            return Err(rc::RESERVED_BITS);
        }
        let auth_policy = s.tpm2b(limits::TPMU_HA_SIZE)?.to_vec();
        let data_size = s.u16()?;
        if s.remaining() != 0 {
            return Err(rc::SIZE);
        }
        Ok(Self {
            index,
            name_alg,
            attributes,
            auth_policy,
            data_size,
        })
    }

    pub fn marshal(&self) -> Vec<u8> {
        let mut w = Writer::new();
        w.u32(self.index)
            .u16(self.name_alg.id())
            .u32(self.attributes)
            .tpm2b(&self.auth_policy)
            .u16(self.data_size);
        w.buf
    }

    /// nameAlg || H(TPMS_NV_PUBLIC).
    pub fn name(&self) -> Vec<u8> {
        crate::public::name_of(self.name_alg, &self.marshal())
    }

    /// The TPM_NT type.
    pub fn nt(&self) -> u32 {
        (self.attributes & nva::TYPE_MASK) >> nva::TYPE_SHIFT
    }

    pub fn has(&self, bits: u32) -> bool {
        self.attributes & bits != 0
    }

    /// The definition rules (bare codes; the caller decorates as parameter 2).
    pub fn validate(&self, platform: bool) -> Result<(), u32> {
        let a = self.attributes;
        if a & (nva::WRITELOCKED | nva::READLOCKED | nva::WRITTEN) != 0 {
            return Err(rc::ATTRIBUTES);
        }
        if a & nva::WRITE_ANY == 0 || a & nva::READ_ANY == 0 {
            return Err(rc::ATTRIBUTES);
        }
        if (a & nva::PLATFORMCREATE != 0) != platform {
            return Err(rc::ATTRIBUTES);
        }
        // Only the platform may define an index deleted by its policy
        // (TPM2_NV_UndefineSpaceSpecial).
        if a & nva::POLICY_DELETE != 0 && !platform {
            return Err(rc::ATTRIBUTES);
        }
        match self.nt() {
            nva::NT_ORDINARY => {
                if self.data_size as usize > MAX_NV_INDEX_SIZE {
                    return Err(rc::SIZE);
                }
            }
            nva::NT_COUNTER | nva::NT_BITS => {
                if self.data_size as usize != COUNTER_SIZE {
                    return Err(rc::SIZE);
                }
                if a & nva::CLEAR_STCLEAR != 0 && self.nt() == nva::NT_COUNTER {
                    return Err(rc::ATTRIBUTES);
                }
            }
            nva::NT_EXTEND => {
                if self.data_size as usize != self.name_alg.digest_size() {
                    return Err(rc::SIZE);
                }
            }
            // PIN indices are not implemented.
            _ => return Err(rc::ATTRIBUTES),
        }
        if !self.auth_policy.is_empty() && self.auth_policy.len() != self.name_alg.digest_size() {
            return Err(rc::SIZE);
        }
        Ok(())
    }
}

/// One defined NV index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvIndex {
    pub public: NvPublic,
    pub auth: Digest,
    pub data: Vec<u8>,
}

impl NvIndex {
    pub fn encode(&self, w: &mut Writer) {
        let p = self.public.marshal();
        w.tpm2b(&p).tpm2b(self.auth.as_bytes()).tpm2b(&self.data);
    }

    pub fn decode(r: &mut Reader) -> Option<Self> {
        let p = r.tpm2b(256).ok()?;
        let mut pw = Writer::new();
        pw.tpm2b(p);
        let public = NvPublic::unmarshal_2b(&mut Reader::new(&pw.buf)).ok()?;
        let auth = Digest::from_slice(r.tpm2b(limits::MAX_DIGEST).ok()?);
        let data = r.tpm2b(MAX_NV_INDEX_SIZE).ok()?.to_vec();
        (data.len() == public.data_size as usize).then_some(Self { public, auth, data })
    }

    /// The counter or bit field value.
    pub fn value_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.data[..COUNTER_SIZE.min(self.data.len())]);
        u64::from_be_bytes(b)
    }
}

/// How a command authorized access to an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvAuthBy {
    Owner,
    Platform,
    /// The index's authValue (password or HMAC session).
    IndexAuth,
    /// A policy session against the index's authPolicy.
    IndexPolicy,
}

/// NvWriteAccessChecks / NvReadAccessChecks: TPM_RC_NV_AUTHORIZATION when the
/// index does not allow this kind of authorization for the access.
pub fn access_allowed(p: &NvPublic, by: NvAuthBy, write: bool) -> bool {
    let (pp, owner, auth, policy) = if write {
        (
            nva::PPWRITE,
            nva::OWNERWRITE,
            nva::AUTHWRITE,
            nva::POLICYWRITE,
        )
    } else {
        (nva::PPREAD, nva::OWNERREAD, nva::AUTHREAD, nva::POLICYREAD)
    };
    p.has(match by {
        NvAuthBy::Owner => owner,
        NvAuthBy::Platform => pp,
        NvAuthBy::IndexAuth => auth,
        NvAuthBy::IndexPolicy => policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ordinary() -> NvPublic {
        NvPublic {
            index: 0x0150_0001,
            name_alg: HashAlg::Sha256,
            attributes: nva::OWNERWRITE | nva::OWNERREAD | nva::AUTHREAD | nva::AUTHWRITE,
            auth_policy: Vec::new(),
            data_size: 32,
        }
    }

    #[test]
    fn public_round_trips_and_names_hash_it() {
        let p = ordinary();
        let mut w = Writer::new();
        w.tpm2b(&p.marshal());
        assert_eq!(
            NvPublic::unmarshal_2b(&mut Reader::new(&w.buf)),
            Ok(p.clone())
        );
        assert_eq!(
            p.name()[2..],
            *HashAlg::Sha256.digest(&[&p.marshal()]).as_bytes()
        );
        let idx = NvIndex {
            public: p.clone(),
            auth: Digest::from_slice(b"a"),
            data: alloc::vec![0; 32],
        };
        let mut w = Writer::new();
        idx.encode(&mut w);
        assert_eq!(NvIndex::decode(&mut Reader::new(&w.buf)), Some(idx));
    }

    #[test]
    fn definition_rules() {
        assert_eq!(ordinary().validate(false), Ok(()));
        assert_eq!(ordinary().validate(true), Err(rc::ATTRIBUTES));
        let mut p = ordinary();
        p.attributes |= nva::WRITTEN;
        assert_eq!(p.validate(false), Err(rc::ATTRIBUTES));
        let mut p = ordinary();
        p.attributes |= nva::NT_COUNTER << nva::TYPE_SHIFT;
        assert_eq!(p.validate(false), Err(rc::SIZE));
        p.data_size = 8;
        assert_eq!(p.validate(false), Ok(()));
        let mut p = ordinary();
        p.attributes |= nva::NT_EXTEND << nva::TYPE_SHIFT;
        assert_eq!(p.validate(false), Ok(()));
        p.data_size = 20;
        assert_eq!(p.validate(false), Err(rc::SIZE));
        let mut p = ordinary();
        p.attributes &= !nva::READ_ANY;
        assert_eq!(p.validate(false), Err(rc::ATTRIBUTES));
    }

    #[test]
    fn access_follows_the_attribute_of_the_authorization_used() {
        let p = ordinary();
        assert!(access_allowed(&p, NvAuthBy::Owner, true));
        assert!(!access_allowed(&p, NvAuthBy::Platform, true));
        assert!(access_allowed(&p, NvAuthBy::IndexAuth, false));
        assert!(!access_allowed(&p, NvAuthBy::IndexPolicy, false));
    }
}
