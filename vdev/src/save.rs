//! Versioned save/restore of device state.

use alloc::vec::Vec;

/// Why saved state was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreError {
    /// The blob names another device type.
    WrongDevice,
    /// The blob's version is newer than this build understands.
    UnsupportedVersion(u32),
    /// The blob is shorter than its contents require, or fields are out of range.
    Malformed,
}

/// A device whose state can be captured and brought back.
///
/// Rules: a saved blob starts with [`header`] (the device's `SAVE_ID` and
/// `SAVE_VERSION`) and restore checks it with [`open`]; a device
/// must restore every version it ever saved (older fields get defaults), and refuses
/// newer ones. Restore validates everything as if it came from the guest.
pub trait SaveRestore {
    /// Four-byte identifier of the device type.
    const SAVE_ID: [u8; 4];
    /// Current version of the saved layout.
    const SAVE_VERSION: u32;
    /// Captures the device's state.
    fn save(&self) -> Vec<u8>;
    /// Replaces the device's state with `blob`.
    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError>;
}

/// Length of the header every saved blob starts with: `SAVE_ID` and the version
/// (little-endian).
pub const HEADER_LEN: usize = 8;

/// The header of a blob saved by a device with `id` at layout `version`.
pub fn header(id: [u8; 4], version: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&id);
    h[4..].copy_from_slice(&version.to_le_bytes());
    h
}

/// Checks the header of `blob` for a device with `id` whose current layout is
/// `current`: the id must match and the version must be one this build knows
/// (`1..=current`). Returns the version and the payload after the header.
pub fn open(blob: &[u8], id: [u8; 4], current: u32) -> Result<(u32, &[u8]), RestoreError> {
    if blob.len() < HEADER_LEN {
        return Err(RestoreError::Malformed);
    }
    if blob[..4] != id {
        return Err(RestoreError::WrongDevice);
    }
    let version = u32::from_le_bytes([blob[4], blob[5], blob[6], blob[7]]);
    if version == 0 || version > current {
        return Err(RestoreError::UnsupportedVersion(version));
    }
    Ok((version, &blob[HEADER_LEN..]))
}

/// Builds a saved blob: the [`header`], then little-endian fields.
pub struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// A blob for a device with `id` at layout `version`.
    pub fn new(id: [u8; 4], version: u32) -> Self {
        Self {
            buf: header(id, version).to_vec(),
        }
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    /// A flag as one byte, 0 or 1.
    pub fn flag(&mut self, v: bool) -> &mut Self {
        self.u8(u8::from(v))
    }

    /// `bytes` behind their length (u32); [`Reader::bytes`] reads them back.
    pub fn bytes(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u32::try_from(bytes.len()).expect("saved field over 4 GiB");
        self.u32(len);
        self.buf.extend_from_slice(bytes);
        self
    }

    /// The finished blob.
    pub fn finish(&mut self) -> Vec<u8> {
        core::mem::take(&mut self.buf)
    }
}

/// Reads the fields a [`Writer`] wrote; running out, a flag that is neither 0 nor 1,
/// a length over its bound, or bytes left at [`Reader::end`] are
/// [`RestoreError::Malformed`].
pub struct Reader<'b> {
    blob: &'b [u8],
}

impl<'b> Reader<'b> {
    /// A reader at the start of `blob` (a payload whose header was already checked,
    /// or one nested inside another device's blob).
    pub fn new(blob: &'b [u8]) -> Self {
        Self { blob }
    }

    /// Opens `blob` as [`open`] does and reads its payload.
    pub fn open(blob: &'b [u8], id: [u8; 4], current: u32) -> Result<(u32, Self), RestoreError> {
        let (version, payload) = open(blob, id, current)?;
        Ok((version, Self { blob: payload }))
    }

    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'b [u8], RestoreError> {
        if self.blob.len() < n {
            return Err(RestoreError::Malformed);
        }
        let (head, rest) = self.blob.split_at(n);
        self.blob = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RestoreError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, RestoreError> {
        self.array().map(u8::from_le_bytes)
    }

    pub fn u16(&mut self) -> Result<u16, RestoreError> {
        self.array().map(u16::from_le_bytes)
    }

    pub fn u32(&mut self) -> Result<u32, RestoreError> {
        self.array().map(u32::from_le_bytes)
    }

    pub fn u64(&mut self) -> Result<u64, RestoreError> {
        self.array().map(u64::from_le_bytes)
    }

    /// A byte that must be 0 or 1.
    pub fn flag(&mut self) -> Result<bool, RestoreError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(RestoreError::Malformed),
        }
    }

    /// A value that must have no bits outside `mask`.
    pub fn masked_u32(&mut self, mask: u32) -> Result<u32, RestoreError> {
        let v = self.u32()?;
        if v & !mask != 0 {
            return Err(RestoreError::Malformed);
        }
        Ok(v)
    }

    /// Length-prefixed bytes, at most `max` of them.
    pub fn bytes(&mut self, max: usize) -> Result<&'b [u8], RestoreError> {
        let n = self.u32()? as usize;
        if n > max {
            return Err(RestoreError::Malformed);
        }
        self.take(n)
    }

    /// Whatever is left.
    pub fn rest(&mut self) -> &'b [u8] {
        core::mem::take(&mut self.blob)
    }

    /// Checks that the whole blob was read.
    pub fn end(&self) -> Result<(), RestoreError> {
        if self.blob.is_empty() {
            Ok(())
        } else {
            Err(RestoreError::Malformed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_bad_headers_are_named() {
        let mut blob = header(*b"TEST", 2).to_vec();
        blob.extend_from_slice(&[9, 9]);
        assert_eq!(open(&blob, *b"TEST", 2), Ok((2, &[9u8, 9][..])));
        assert_eq!(
            open(&blob, *b"TEST", 3),
            Ok((2, &[9u8, 9][..])),
            "older versions stay readable"
        );
        assert_eq!(
            open(&blob, *b"TEST", 1),
            Err(RestoreError::UnsupportedVersion(2))
        );
        assert_eq!(open(&blob, *b"OTHR", 2), Err(RestoreError::WrongDevice));
        assert_eq!(
            open(&header(*b"TEST", 0), *b"TEST", 2),
            Err(RestoreError::UnsupportedVersion(0))
        );
        assert_eq!(open(&blob[..7], *b"TEST", 2), Err(RestoreError::Malformed));
    }

    #[test]
    fn writer_and_reader_agree_and_the_reader_refuses_what_does_not_fit() {
        let blob = Writer::new(*b"TEST", 1)
            .u8(1)
            .u16(2)
            .u32(3)
            .u64(4)
            .flag(true)
            .bytes(b"abc")
            .finish();
        let (v, mut r) = Reader::open(&blob, *b"TEST", 1).unwrap();
        assert_eq!(v, 1);
        assert_eq!(r.u8(), Ok(1));
        assert_eq!(r.u16(), Ok(2));
        assert_eq!(r.masked_u32(3), Ok(3));
        assert_eq!(r.u64(), Ok(4));
        assert_eq!(r.flag(), Ok(true));
        assert_eq!(r.end(), Err(RestoreError::Malformed), "bytes still unread");
        assert_eq!(r.bytes(3), Ok(&b"abc"[..]));
        assert_eq!(r.end(), Ok(()));
        assert_eq!(r.u8(), Err(RestoreError::Malformed), "ran out");

        let (_, mut r) = Reader::open(&blob, *b"TEST", 1).unwrap();
        assert_eq!(
            r.masked_u32(0xff),
            Err(RestoreError::Malformed),
            "bits outside the mask"
        );
        let bad_flag = Writer::new(*b"TEST", 1).u8(2).bytes(b"abcd").finish();
        let (_, mut r) = Reader::open(&bad_flag, *b"TEST", 1).unwrap();
        assert_eq!(r.flag(), Err(RestoreError::Malformed));
        assert_eq!(
            r.bytes(3),
            Err(RestoreError::Malformed),
            "longer than its bound"
        );
    }
}
