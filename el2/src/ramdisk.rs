//! A RAM disk: zero-filled physical memory given to a guest as a block device (the
//! direct-boot path's `disk = SIZE`, used by tests that need a disk without a system
//! disk).

use vdev::{BlockBackend, BlockError};

/// `size` bytes of physical memory at `pa`, owned by one disk.
pub struct RamDisk {
    pa: u64,
    size: u64,
}

impl RamDisk {
    /// Takes ownership of `[pa, pa + size)`, which the caller allocated and no one
    /// else uses, and zeroes it.
    pub fn new(pa: u64, size: u64) -> Self {
        // SAFETY: the range was just allocated from free physical memory for this disk
        // alone and is identity-mapped as normal memory.
        unsafe { core::ptr::write_bytes(pa as *mut u8, 0, size as usize) };
        Self { pa, size }
    }

    fn check(&self, offset: u64, len: usize) -> Result<usize, BlockError> {
        let end = offset
            .checked_add(len as u64)
            .ok_or(BlockError::OutOfRange)?;
        if end > self.size {
            return Err(BlockError::OutOfRange);
        }
        Ok((self.pa + offset) as usize)
    }
}

impl BlockBackend for RamDisk {
    fn capacity(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        let p = self.check(offset, buf.len())?;
        // SAFETY: `check` keeps [p, p + len) inside this disk's memory.
        unsafe { core::ptr::copy_nonoverlapping(p as *const u8, buf.as_mut_ptr(), buf.len()) };
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        let p = self.check(offset, data.len())?;
        // SAFETY: as in `read_at`.
        unsafe { core::ptr::copy_nonoverlapping(data.as_ptr(), p as *mut u8, data.len()) };
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        Ok(())
    }
}
