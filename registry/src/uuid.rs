//! 128-bit identities for disks and VMs, in the registry's on-disk byte order. The
//! `uuid` crate does the RFC 9562 work (version-4 stamping, parsing, formatting);
//! `no_std` has no RNG, so the caller supplies 16 random bytes and
//! [`Uuid::from_random_bytes`] makes them a version-4 UUID.

use core::fmt;

/// A 16-byte UUID, stored on disk in its canonical byte order.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Uuid(pub [u8; 16]);

/// Why a string is not a UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseUuidError;

impl fmt::Display for ParseUuidError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("not a UUID (expected 8-4-4-4-12 hex digits)")
    }
}

impl Uuid {
    /// The all-zero UUID, never a valid identity.
    pub const NIL: Uuid = Uuid([0; 16]);

    /// Makes a version-4 (random) UUID from 16 random bytes.
    pub fn from_random_bytes(bytes: [u8; 16]) -> Uuid {
        Uuid(
            uuid::Builder::from_random_bytes(bytes)
                .into_uuid()
                .into_bytes(),
        )
    }

    /// Whether this is the nil UUID.
    pub fn is_nil(&self) -> bool {
        self.as_crate().is_nil()
    }

    /// Parses the hyphenated form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` (the other
    /// forms the `uuid` crate knows — simple, braced, URN — are refused).
    pub fn parse(s: &str) -> Result<Uuid, ParseUuidError> {
        if s.len() != uuid::fmt::Hyphenated::LENGTH {
            return Err(ParseUuidError);
        }
        uuid::Uuid::try_parse(s)
            .map(|u| Uuid(u.into_bytes()))
            .map_err(|_| ParseUuidError)
    }

    fn as_crate(&self) -> uuid::Uuid {
        uuid::Uuid::from_bytes(self.0)
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.as_crate().hyphenated(), f)
    }
}

impl fmt::Debug for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uuid({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn display_parse_round_trip() {
        let u = Uuid::from_random_bytes([0xab; 16]);
        let s = u.to_string();
        assert_eq!(s, "abababab-abab-4bab-abab-abababababab");
        assert_eq!(Uuid::parse(&s), Ok(u));
        assert_eq!(Uuid::parse(&s.to_uppercase()), Ok(u));
    }

    #[test]
    fn version_and_variant_bits() {
        let u = Uuid::from_random_bytes([0; 16]);
        assert_eq!(u.0[6] >> 4, 4);
        assert_eq!(u.0[8] >> 6, 0b10);
        assert!(!u.is_nil());
    }

    #[test]
    fn parse_rejects_garbage() {
        assert!(Uuid::parse("").is_err());
        assert!(Uuid::parse("abababab-abab-4bab-abab-ababababab").is_err());
        assert!(Uuid::parse("abababab_abab-4bab-abab-abababababab").is_err());
        assert!(Uuid::parse("gbababab-abab-4bab-abab-abababababab").is_err());
        // Forms other than the hyphenated one.
        assert!(Uuid::parse("abababababab4bababababababababab").is_err());
        assert!(Uuid::parse("{abababab-abab-4bab-abab-abababababab}").is_err());
        assert!(Uuid::parse("urn:uuid:abababab-abab-4bab-abab-abababababab").is_err());
    }

    #[test]
    fn random_bytes_keep_their_randomness_outside_version_and_variant() {
        let u = Uuid::from_random_bytes([0xff; 16]);
        assert_eq!(u.to_string(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert!(Uuid::NIL.is_nil());
        assert_eq!(
            Uuid::parse("00000000-0000-0000-0000-000000000000"),
            Ok(Uuid::NIL)
        );
    }
}
