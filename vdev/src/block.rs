//! Storage as block devices see it.

/// Why a block backend refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockError {
    /// The range lies (partly) beyond the end of the backend.
    OutOfRange,
    /// A write or discard to a read-only backend.
    ReadOnly,
    /// The underlying storage failed.
    Io,
}

/// The sector size block device models address storage in.
pub const SECTOR_SIZE: u64 = 512;

/// Byte-addressed storage behind a virtual disk. Offsets and lengths are multiples of
/// [`SECTOR_SIZE`] when they come from a block device model.
pub trait BlockBackend {
    /// Size of the backend in bytes.
    fn capacity(&self) -> u64;
    /// Whether writes are refused.
    fn read_only(&self) -> bool;
    /// Reads `buf.len()` bytes at byte `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError>;
    /// Writes `data` at byte `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), BlockError>;
}

impl<T: BlockBackend + ?Sized> BlockBackend for alloc::boxed::Box<T> {
    fn capacity(&self) -> u64 {
        (**self).capacity()
    }
    fn read_only(&self) -> bool {
        (**self).read_only()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        (**self).write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        (**self).flush()
    }
}

impl<T: BlockBackend + ?Sized> BlockBackend for &mut T {
    fn capacity(&self) -> u64 {
        (**self).capacity()
    }
    fn read_only(&self) -> bool {
        (**self).read_only()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        (**self).write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        (**self).flush()
    }
}

/// A block backend shared by several users (the registry and the guest disks that
/// are extents of the same system disk); each call takes the lock.
pub struct SharedBlock<B: ?Sized>(pub alloc::sync::Arc<spin::Mutex<B>>);

impl<B: ?Sized> Clone for SharedBlock<B> {
    fn clone(&self) -> Self {
        SharedBlock(self.0.clone())
    }
}

impl<B: BlockBackend + ?Sized> BlockBackend for SharedBlock<B> {
    fn capacity(&self) -> u64 {
        self.0.lock().capacity()
    }
    fn read_only(&self) -> bool {
        self.0.lock().read_only()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.0.lock().read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        self.0.lock().write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        self.0.lock().flush()
    }
}
