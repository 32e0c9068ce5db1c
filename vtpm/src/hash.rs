//! The hash algorithms this TPM implements (SHA-1, SHA-256, SHA-384, SHA-512) and HMAC over
//! them, through RustCrypto. [`Digest`] is a fixed-capacity value type so the
//! engine never allocates for a digest.

use crate::defs::{alg, limits};
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Sha256, Sha384, Sha512};

/// An implemented hash algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

/// A digest of at most [`limits::MAX_DIGEST`] bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest {
    bytes: [u8; limits::MAX_DIGEST],
    len: usize,
}

impl core::fmt::Debug for Digest {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for b in self.as_bytes() {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl Digest {
    /// A digest of `len` bytes all equal to `fill`.
    pub fn filled(len: usize, fill: u8) -> Self {
        let mut bytes = [0; limits::MAX_DIGEST];
        bytes[..len].fill(fill);
        Self { bytes, len }
    }
    /// Copies `b` (at most MAX_DIGEST bytes; longer input is truncated).
    pub fn from_slice(b: &[u8]) -> Self {
        let len = b.len().min(limits::MAX_DIGEST);
        let mut bytes = [0; limits::MAX_DIGEST];
        bytes[..len].copy_from_slice(&b[..len]);
        Self { bytes, len }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes[..self.len]
    }
}

impl HashAlg {
    /// All implemented hashes in TPM_ALG_ID order.
    pub const ALL: [HashAlg; 4] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
    ];

    pub fn from_id(id: u16) -> Option<Self> {
        match id {
            alg::SHA1 => Some(HashAlg::Sha1),
            alg::SHA256 => Some(HashAlg::Sha256),
            alg::SHA384 => Some(HashAlg::Sha384),
            alg::SHA512 => Some(HashAlg::Sha512),
            _ => None,
        }
    }
    pub fn id(self) -> u16 {
        match self {
            HashAlg::Sha1 => alg::SHA1,
            HashAlg::Sha256 => alg::SHA256,
            HashAlg::Sha384 => alg::SHA384,
            HashAlg::Sha512 => alg::SHA512,
        }
    }
    /// Index of this hash in [`HashAlg::ALL`] (the PCR bank index).
    pub fn index(self) -> usize {
        self as usize
    }
    pub fn digest_size(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }
    /// Hash of the concatenation of `parts`.
    pub fn digest(self, parts: &[&[u8]]) -> Digest {
        fn run<D: sha2::Digest>(parts: &[&[u8]]) -> Digest {
            let mut d = D::new();
            for p in parts {
                d.update(p);
            }
            Digest::from_slice(&d.finalize())
        }
        match self {
            HashAlg::Sha1 => run::<Sha1>(parts),
            HashAlg::Sha256 => run::<Sha256>(parts),
            HashAlg::Sha384 => run::<Sha384>(parts),
            HashAlg::Sha512 => run::<Sha512>(parts),
        }
    }
    /// HMAC keyed with `key` over the concatenation of `parts`.
    pub fn hmac(self, key: &[u8], parts: &[&[u8]]) -> Digest {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Digest {
            // HMAC accepts keys of any length, so this cannot fail.
            let mut m = <M as hmac::digest::KeyInit>::new_from_slice(key)
                .unwrap_or_else(|_| <M as hmac::digest::KeyInit>::new(&Default::default()));
            for p in parts {
                m.update(p);
            }
            Digest::from_slice(&m.finalize().into_bytes())
        }
        match self {
            HashAlg::Sha1 => run::<Hmac<Sha1>>(key, parts),
            HashAlg::Sha256 => run::<Hmac<Sha256>>(key, parts),
            HashAlg::Sha384 => run::<Hmac<Sha384>>(key, parts),
            HashAlg::Sha512 => run::<Hmac<Sha512>>(key, parts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: &Digest) -> alloc::string::String {
        alloc::format!("{d:?}")
    }

    #[test]
    fn known_answers() {
        assert_eq!(
            hex(&HashAlg::Sha1.digest(&[b"abc"])),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            hex(&HashAlg::Sha256.digest(&[b"a", b"bc"])),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(HashAlg::Sha384.digest(&[b""]).as_bytes().len(), 48);
        // FIPS 180-4 SHA-512("abc").
        assert_eq!(
            hex(&HashAlg::Sha512.digest(&[b"ab", b"c"])),
            "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
             2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
        );
        // RFC 4231 test case 2, HMAC-SHA-512.
        assert_eq!(
            hex(&HashAlg::Sha512.hmac(b"Jefe", &[b"what do ya want for nothing?"])),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554\
             9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
        // RFC 4231 test case 2.
        assert_eq!(
            hex(&HashAlg::Sha256.hmac(b"Jefe", &[b"what do ya want ", b"for nothing?"])),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn ids_round_trip() {
        for h in HashAlg::ALL {
            assert_eq!(HashAlg::from_id(h.id()), Some(h));
            assert_eq!(HashAlg::ALL[h.index()], h);
        }
        assert_eq!(HashAlg::from_id(0x0D), Some(HashAlg::Sha512));
        assert_eq!(HashAlg::from_id(0x0E), None);
    }
}
