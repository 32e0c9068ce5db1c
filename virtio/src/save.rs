//! Saved-state plumbing shared by the transport and the queues: a bounds-checked
//! little-endian reader over a saved blob. The layout itself is documented on
//! [`crate::MmioTransport`]'s `SaveRestore` implementation.

use vdev::RestoreError;

/// Reads little-endian fields from a saved blob; running out is
/// [`RestoreError::Malformed`].
pub struct Reader<'b> {
    blob: &'b [u8],
}

impl<'b> Reader<'b> {
    /// A reader at the start of `blob`.
    pub fn new(blob: &'b [u8]) -> Self {
        Self { blob }
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
        match self.take(1)?[0] {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(RestoreError::Malformed),
        }
    }

    /// Whatever is left.
    pub fn rest(&mut self) -> &'b [u8] {
        core::mem::take(&mut self.blob)
    }
}
