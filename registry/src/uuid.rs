//! 128-bit identities for disks and VMs. `no_std` has no RNG, so the caller supplies
//! 16 random bytes and [`Uuid::from_random_bytes`] stamps them as an RFC 9562
//! version-4 UUID.

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
    pub fn from_random_bytes(mut bytes: [u8; 16]) -> Uuid {
        bytes[6] = (bytes[6] & 0x0f) | 0x40; // version 4
        bytes[8] = (bytes[8] & 0x3f) | 0x80; // RFC 9562 variant
        Uuid(bytes)
    }

    /// Whether this is the nil UUID.
    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }

    /// Parses the hyphenated form `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub fn parse(s: &str) -> Result<Uuid, ParseUuidError> {
        let s = s.as_bytes();
        if s.len() != 36 {
            return Err(ParseUuidError);
        }
        let mut out = [0u8; 16];
        let mut nibbles = 0usize;
        for (i, &c) in s.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if c != b'-' {
                    return Err(ParseUuidError);
                }
                continue;
            }
            let v = match c {
                b'0'..=b'9' => c - b'0',
                b'a'..=b'f' => c - b'a' + 10,
                b'A'..=b'F' => c - b'A' + 10,
                _ => return Err(ParseUuidError),
            };
            out[nibbles / 2] |= if nibbles.is_multiple_of(2) { v << 4 } else { v };
            nibbles += 1;
        }
        Ok(Uuid(out))
    }
}

impl fmt::Display for Uuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
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
    }
}
