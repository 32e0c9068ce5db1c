//! [`MemDisk`]: a `Vec<u8>`-backed [`BlockBackend`] for tests and tools.

use alloc::vec;
use alloc::vec::Vec;

use vdev::{BlockBackend, BlockError};

/// A disk held in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemDisk {
    bytes: Vec<u8>,
    read_only: bool,
}

impl MemDisk {
    /// A zero-filled writable disk of `size` bytes.
    pub fn new(size: usize) -> MemDisk {
        MemDisk {
            bytes: vec![0; size],
            read_only: false,
        }
    }
    /// A writable disk holding `bytes`.
    pub fn from_bytes(bytes: Vec<u8>) -> MemDisk {
        MemDisk {
            bytes,
            read_only: false,
        }
    }
    /// Makes the disk refuse (or accept) writes.
    pub fn set_read_only(&mut self, read_only: bool) {
        self.read_only = read_only;
    }
    /// The disk's contents.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
    /// The disk's contents, for tests that corrupt them.
    pub fn bytes_mut(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    fn range(&self, offset: u64, len: usize) -> Result<core::ops::Range<usize>, BlockError> {
        let start = usize::try_from(offset).map_err(|_| BlockError::OutOfRange)?;
        let end = start.checked_add(len).ok_or(BlockError::OutOfRange)?;
        if end > self.bytes.len() {
            return Err(BlockError::OutOfRange);
        }
        Ok(start..end)
    }
}

impl BlockBackend for MemDisk {
    fn capacity(&self) -> u64 {
        self.bytes.len() as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let r = self.range(offset, buf.len())?;
        buf.copy_from_slice(&self.bytes[r]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        let r = self.range(offset, data.len())?;
        self.bytes[r].copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_read_only() {
        let mut d = MemDisk::new(1024);
        d.write_at(1020, &[1, 2, 3, 4]).unwrap();
        let mut b = [0u8; 4];
        d.read_at(1020, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
        assert_eq!(d.write_at(1021, &[0; 4]), Err(BlockError::OutOfRange));
        assert_eq!(d.read_at(u64::MAX, &mut b), Err(BlockError::OutOfRange));
        d.set_read_only(true);
        assert_eq!(d.write_at(0, &[0]), Err(BlockError::ReadOnly));
    }
}
