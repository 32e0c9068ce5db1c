//! Little-endian byte encoding used by every on-disk structure: a growable
//! [`Writer`] and a bounds-checked [`Reader`] that never panics on short or hostile
//! input, plus the CRC32C checksum.

use alloc::vec::Vec;
use core::fmt;

/// CRC32C (Castagnoli, the iSCSI polynomial) as used by every checksum in the format
/// (slice-by-16 tables: large blobs such as kernels are checked at boot).
pub fn crc32c(data: &[u8]) -> u32 {
    const CASTAGNOLI: crc::Crc<u32, crc::Table<16>> =
        crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);
    CASTAGNOLI.checksum(data)
}

/// Why bytes do not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The input ended inside a field.
    Truncated,
    /// Bytes were left over after the last field.
    TrailingBytes,
    /// A string field is not UTF-8.
    BadUtf8,
    /// A length field exceeds the format's limit for that field.
    TooLong(&'static str),
    /// A tag or flag field holds a value the format does not define.
    BadValue(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("truncated"),
            DecodeError::TrailingBytes => f.write_str("trailing bytes"),
            DecodeError::BadUtf8 => f.write_str("string is not UTF-8"),
            DecodeError::TooLong(what) => write!(f, "{what} too long"),
            DecodeError::BadValue(what) => write!(f, "undefined value in {what}"),
        }
    }
}

/// Appends little-endian fields to a byte vector.
#[derive(Default)]
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }
    /// The bytes written so far.
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }
    /// Number of bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// Appends one byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// Appends a `u16`.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a `u32`.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends a `u64`.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// Appends raw bytes.
    pub fn bytes(&mut self, v: &[u8]) {
        self.buf.extend_from_slice(v);
    }
    /// Appends a string as a `u16` length and its UTF-8 bytes. The caller has checked
    /// the length against the field's limit (all limits are below `u16::MAX`).
    pub fn str16(&mut self, s: &str) {
        self.u16(u16::try_from(s.len()).unwrap_or(u16::MAX));
        self.bytes(s.as_bytes());
    }
    /// Overwrites a `u32` previously written at `at`.
    pub fn patch_u32(&mut self, at: usize, v: u32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }
}

/// Reads little-endian fields from a byte slice, failing with
/// [`DecodeError::Truncated`] instead of panicking.
pub struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Reads from `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf }
    }
    /// Takes the next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.buf.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }
    /// Takes exactly `N` bytes as an array.
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
    /// Reads one byte.
    pub fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }
    /// Reads a `u16`.
    pub fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// Reads a `u32`.
    pub fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// Reads a `u64`.
    pub fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// Reads a `u16`-length-prefixed UTF-8 string of at most `max` bytes.
    pub fn str16(&mut self, max: usize, what: &'static str) -> Result<&'a str, DecodeError> {
        let len = usize::from(self.u16()?);
        if len > max {
            return Err(DecodeError::TooLong(what));
        }
        core::str::from_utf8(self.take(len)?).map_err(|_| DecodeError::BadUtf8)
    }
    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), DecodeError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes)
        }
    }
}

/// Reads a little-endian `u32` at `at` of a buffer the caller sized.
pub fn get_u32(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

/// Reads a little-endian `u64` at `at` of a buffer the caller sized.
pub fn get_u64(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Writes a little-endian `u32` at `at` of a buffer the caller sized.
pub fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes a little-endian `u64` at `at` of a buffer the caller sized.
pub fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The CRC-32/ISCSI catalogue check value for "123456789".
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn round_trip_and_truncation() {
        let mut w = Writer::new();
        w.u8(7);
        w.u16(0x1234);
        w.u32(0xdead_beef);
        w.u64(u64::MAX - 1);
        w.str16("héllo");
        let bytes = w.into_bytes();
        let mut r = Reader::new(&bytes);
        assert_eq!(r.u8(), Ok(7));
        assert_eq!(r.u16(), Ok(0x1234));
        assert_eq!(r.u32(), Ok(0xdead_beef));
        assert_eq!(r.u64(), Ok(u64::MAX - 1));
        assert_eq!(r.str16(16, "s"), Ok("héllo"));
        assert_eq!(r.finish(), Ok(()));
        for cut in 0..bytes.len() {
            let mut r = Reader::new(&bytes[..cut]);
            let all = (|| {
                r.u8()?;
                r.u16()?;
                r.u32()?;
                r.u64()?;
                r.str16(16, "s")?;
                Ok::<(), DecodeError>(())
            })();
            assert_eq!(all, Err(DecodeError::Truncated), "cut at {cut}");
        }
    }

    #[test]
    fn string_limits_and_utf8() {
        let mut w = Writer::new();
        w.str16("abcdef");
        let b = w.into_bytes();
        assert_eq!(
            Reader::new(&b).str16(5, "name"),
            Err(DecodeError::TooLong("name"))
        );
        let bad = [2u8, 0, 0xff, 0xfe];
        assert_eq!(
            Reader::new(&bad).str16(5, "name"),
            Err(DecodeError::BadUtf8)
        );
        let extra = [0u8, 0, 1];
        let mut r = Reader::new(&extra);
        assert_eq!(r.str16(5, "name"), Ok(""));
        assert_eq!(r.finish(), Err(DecodeError::TrailingBytes));
    }
}
