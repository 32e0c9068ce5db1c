//! Big-endian TPM marshalling with strict bounds: [`Reader`] never reads past its
//! buffer and reports `TPM_RC_INSUFFICIENT`, sized buffers (TPM2B) larger than their
//! type allows report `TPM_RC_SIZE`, lists (TPML) longer than allowed report
//! `TPM_RC_SIZE`. [`Writer`] appends to a byte vector.

use crate::defs::{alg, limits, rc};
use crate::hash::HashAlg;
use alloc::vec::Vec;

/// A bounds-checked cursor over command bytes. Errors are bare format-1 response
/// codes; the caller adds the handle/parameter/session decoration.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader over `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }
    /// Bytes not yet consumed.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// The unconsumed bytes.
    pub fn rest(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }
    /// Takes `n` raw bytes.
    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], u32> {
        if n > self.remaining() {
            return Err(rc::INSUFFICIENT);
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    /// Takes a sub-reader over the next `n` bytes.
    pub fn sub(&mut self, n: usize) -> Result<Reader<'a>, u32> {
        Ok(Reader::new(self.bytes(n)?))
    }
    pub fn u8(&mut self) -> Result<u8, u32> {
        Ok(self.bytes(1)?[0])
    }
    pub fn u16(&mut self) -> Result<u16, u32> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    pub fn u32(&mut self) -> Result<u32, u32> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub fn u64(&mut self) -> Result<u64, u32> {
        Ok(u64::from(self.u32()?) << 32 | u64::from(self.u32()?))
    }
    /// A TPM2B whose size may not exceed `max`.
    pub fn tpm2b(&mut self, max: usize) -> Result<&'a [u8], u32> {
        let n = self.u16()? as usize;
        if n > max {
            return Err(rc::SIZE);
        }
        self.bytes(n)
    }
    /// TPMI_YES_NO.
    pub fn yes_no(&mut self) -> Result<bool, u32> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(rc::VALUE),
        }
    }
    /// TPMI_ALG_HASH: an implemented hash, or TPM_ALG_NULL when `allow_null`.
    pub fn hash_alg(&mut self, allow_null: bool) -> Result<Option<HashAlg>, u32> {
        let id = self.u16()?;
        if id == alg::NULL && allow_null {
            return Ok(None);
        }
        HashAlg::from_id(id).map(Some).ok_or(rc::HASH)
    }
    /// TPMS_PCR_SELECTION: hash and a select bitmap of exactly PCR_SELECT bytes
    /// (PCR_SELECT_MIN..=PCR_SELECT_MAX), as a PCR bit mask.
    pub fn pcr_selection(&mut self) -> Result<(HashAlg, u32), u32> {
        let h = self.hash_alg(false)?.ok_or(rc::HASH)?;
        let n = self.u8()? as usize;
        if n != limits::PCR_SELECT {
            return Err(rc::VALUE);
        }
        let b = self.bytes(n)?;
        Ok((
            h,
            u32::from(b[0]) | u32::from(b[1]) << 8 | u32::from(b[2]) << 16,
        ))
    }
    /// TPML_PCR_SELECTION (count ≤ number of implemented hashes).
    pub fn pcr_selection_list(&mut self) -> Result<Vec<(HashAlg, u32)>, u32> {
        let count = self.u32()? as usize;
        if count > HashAlg::ALL.len() {
            return Err(rc::SIZE);
        }
        (0..count).map(|_| self.pcr_selection()).collect()
    }
    /// TPML_DIGEST_VALUES: (hash, digest) pairs, each digest exactly the hash's size.
    pub fn digest_values(&mut self) -> Result<Vec<(HashAlg, &'a [u8])>, u32> {
        let count = self.u32()? as usize;
        if count > HashAlg::ALL.len() {
            return Err(rc::SIZE);
        }
        let mut v = Vec::with_capacity(count);
        for _ in 0..count {
            let h = self.hash_alg(false)?.ok_or(rc::HASH)?;
            v.push((h, self.bytes(h.digest_size())?));
        }
        Ok(v)
    }
}

/// Big-endian appender.
#[derive(Debug, Default, Clone)]
pub struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(b);
        self
    }
    /// A TPM2B: u16 size then the bytes. Callers keep `b` within its type's limit.
    pub fn tpm2b(&mut self, b: &[u8]) -> &mut Self {
        self.u16(b.len() as u16).bytes(b)
    }
    /// TPMS_PCR_SELECTION from a bit mask.
    pub fn pcr_selection(&mut self, h: HashAlg, mask: u32) -> &mut Self {
        self.u16(h.id()).pcr_select(mask)
    }
    /// TPMS_PCR_SELECT (sizeofSelect and bitmap) from a bit mask.
    pub fn pcr_select(&mut self, mask: u32) -> &mut Self {
        self.u8(limits::PCR_SELECT as u8);
        self.bytes(&[mask as u8, (mask >> 8) as u8, (mask >> 16) as u8])
    }
    /// Overwrites a u32 at `at` (for size fields filled in afterwards).
    pub fn patch_u32(&mut self, at: usize, v: u32) {
        self.buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncated_reads_are_insufficient() {
        let mut r = Reader::new(&[0, 1, 2]);
        assert_eq!(r.u32(), Err(rc::INSUFFICIENT));
        assert_eq!(r.u16(), Ok(1));
        assert_eq!(r.u16(), Err(rc::INSUFFICIENT));
        assert_eq!(r.u8(), Ok(2));
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn tpm2b_over_limit_is_size_and_short_is_insufficient() {
        assert_eq!(Reader::new(&[0, 3, 1, 2, 3]).tpm2b(2), Err(rc::SIZE));
        assert_eq!(Reader::new(&[0, 3, 1, 2]).tpm2b(8), Err(rc::INSUFFICIENT));
        assert_eq!(Reader::new(&[0, 2, 1, 2]).tpm2b(2), Ok(&[1u8, 2][..]));
    }

    #[test]
    fn pcr_selection_checks_hash_and_select_size() {
        assert_eq!(
            Reader::new(&[0, 0x0B, 3, 1, 0, 0x80]).pcr_selection(),
            Ok((HashAlg::Sha256, 0x80_0001))
        );
        assert_eq!(
            Reader::new(&[0, 0x0E, 3, 1, 0, 0]).pcr_selection(),
            Err(rc::HASH)
        );
        assert_eq!(
            Reader::new(&[0, 0x0B, 4, 1, 0, 0, 0]).pcr_selection(),
            Err(rc::VALUE)
        );
        assert_eq!(
            Reader::new(&[0, 0, 0, 5]).pcr_selection_list(),
            Err(rc::SIZE)
        );
    }

    #[test]
    fn yes_no_rejects_other_values() {
        assert_eq!(Reader::new(&[2]).yes_no(), Err(rc::VALUE));
        assert_eq!(Reader::new(&[1]).yes_no(), Ok(true));
    }

    #[test]
    fn writer_round_trips_selection() {
        let mut w = Writer::new();
        w.pcr_selection(HashAlg::Sha384, 0x12_3456);
        let (h, m) = Reader::new(&w.buf).pcr_selection().unwrap();
        assert_eq!((h, m), (HashAlg::Sha384, 0x12_3456));
    }
}
