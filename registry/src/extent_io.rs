//! Bounds-checked I/O inside one extent of the system disk: reading and writing at
//! an offset within the extent, zeroing it, reading a blob with its checksum
//! verified, and [`ExtentDisk`], a [`BlockBackend`] that exposes one extent (a guest
//! disk, the TPM NV area) as a whole disk.

use alloc::vec;
use alloc::vec::Vec;

use vdev::{BlockBackend, BlockError};

use crate::codec::crc32c;
use crate::defs::BLOCK_SIZE;
use crate::error::ExtentIoError;
use crate::record::{Blob, Extent};

/// The absolute disk offset of `offset..offset+len` inside `extent`, if it fits.
fn locate(extent: Extent, offset: u64, len: usize) -> Result<u64, ExtentIoError> {
    let end = offset
        .checked_add(len as u64)
        .ok_or(ExtentIoError::OutOfExtent)?;
    if end > extent.len {
        return Err(ExtentIoError::OutOfExtent);
    }
    extent
        .start
        .checked_add(offset)
        .ok_or(ExtentIoError::OutOfExtent)
}

/// Reads `buf.len()` bytes at `offset` within `extent`.
pub fn read_extent(
    disk: &mut dyn BlockBackend,
    extent: Extent,
    offset: u64,
    buf: &mut [u8],
) -> Result<(), ExtentIoError> {
    let at = locate(extent, offset, buf.len())?;
    disk.read_at(at, buf).map_err(ExtentIoError::Io)
}

/// Writes `data` at `offset` within `extent` (not flushed).
pub fn write_extent(
    disk: &mut dyn BlockBackend,
    extent: Extent,
    offset: u64,
    data: &[u8],
) -> Result<(), ExtentIoError> {
    let at = locate(extent, offset, data.len())?;
    disk.write_at(at, data).map_err(ExtentIoError::Io)
}

/// Makes `len` bytes at `offset` within `extent` read as zeros (not flushed).
pub fn zero_in_extent(
    disk: &mut dyn BlockBackend,
    extent: Extent,
    offset: u64,
    len: u64,
) -> Result<(), ExtentIoError> {
    let end = offset.checked_add(len).ok_or(ExtentIoError::OutOfExtent)?;
    if end > extent.len {
        return Err(ExtentIoError::OutOfExtent);
    }
    let at = extent
        .start
        .checked_add(offset)
        .ok_or(ExtentIoError::OutOfExtent)?;
    disk.write_zeroes(at, len).map_err(ExtentIoError::Io)
}

/// Makes the whole extent read as zeros (on a sparse host file its space is
/// given back) and flushes.
pub fn zero_extent(disk: &mut dyn BlockBackend, extent: Extent) -> Result<(), ExtentIoError> {
    zero_in_extent(disk, extent, 0, extent.len)?;
    disk.flush().map_err(ExtentIoError::Io)
}

/// Reads a blob's content and verifies its CRC32C. Reads whole blocks.
pub fn read_blob(disk: &mut dyn BlockBackend, blob: &Blob) -> Result<Vec<u8>, ExtentIoError> {
    let size = usize::try_from(blob.size).map_err(|_| ExtentIoError::OutOfExtent)?;
    let mut buf = vec![0u8; size.next_multiple_of(BLOCK_SIZE as usize)];
    read_extent(disk, blob.extent, 0, &mut buf)?;
    buf.truncate(size);
    if crc32c(&buf) != blob.crc32c {
        return Err(ExtentIoError::Checksum);
    }
    Ok(buf)
}

/// Reads a blob into `buf` (at least its size rounded up to whole blocks, so no
/// allocation is needed for large blobs such as kernels) and verifies its checksum.
/// Returns the blob's content length.
pub fn read_blob_into(
    disk: &mut dyn BlockBackend,
    blob: &Blob,
    buf: &mut [u8],
) -> Result<usize, ExtentIoError> {
    read_blob_into_with(disk, blob, buf, crc32c)
}

/// [`read_blob_into`] with the caller's CRC32C routine (the hypervisor passes one
/// using the CPU's CRC instructions); it must compute exactly [`crc32c`].
pub fn read_blob_into_with(
    disk: &mut dyn BlockBackend,
    blob: &Blob,
    buf: &mut [u8],
    crc32c: fn(&[u8]) -> u32,
) -> Result<usize, ExtentIoError> {
    let size = usize::try_from(blob.size).map_err(|_| ExtentIoError::OutOfExtent)?;
    let padded = size.next_multiple_of(BLOCK_SIZE as usize);
    let buf = buf.get_mut(..padded).ok_or(ExtentIoError::OutOfExtent)?;
    read_extent(disk, blob.extent, 0, buf)?;
    if crc32c(&buf[..size]) != blob.crc32c {
        return Err(ExtentIoError::Checksum);
    }
    Ok(size)
}

/// One extent of a backing disk, seen as a disk of its own: offsets are relative to
/// the extent and nothing outside it can be reached.
#[derive(Debug)]
pub struct ExtentDisk<D: BlockBackend> {
    inner: D,
    extent: Extent,
    read_only: bool,
}

impl<D: BlockBackend> ExtentDisk<D> {
    /// Exposes `extent` of `inner`; writes are refused if `read_only` (or if `inner`
    /// is read-only).
    pub fn new(inner: D, extent: Extent, read_only: bool) -> ExtentDisk<D> {
        ExtentDisk {
            inner,
            extent,
            read_only,
        }
    }
    /// The backing disk.
    pub fn into_inner(self) -> D {
        self.inner
    }
}

impl<D: BlockBackend> BlockBackend for ExtentDisk<D> {
    fn capacity(&self) -> u64 {
        self.extent.len
    }
    fn read_only(&self) -> bool {
        self.read_only || self.inner.read_only()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        read_extent(&mut self.inner, self.extent, offset, buf).map_err(to_block)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        if self.read_only() {
            return Err(BlockError::ReadOnly);
        }
        write_extent(&mut self.inner, self.extent, offset, data).map_err(to_block)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        self.inner.flush()
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        if self.read_only() {
            return Err(BlockError::ReadOnly);
        }
        zero_in_extent(&mut self.inner, self.extent, offset, len).map_err(to_block)
    }
}

fn to_block(e: ExtentIoError) -> BlockError {
    match e {
        ExtentIoError::Io(b) => b,
        ExtentIoError::OutOfExtent | ExtentIoError::Checksum => BlockError::OutOfRange,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memdisk::MemDisk;

    #[test]
    fn read_blob_into_verifies_and_needs_whole_blocks() {
        let mut d = MemDisk::new(16384);
        let data = [7u8; 700];
        write_extent(&mut d, E, 0, &data).unwrap();
        let blob = Blob {
            extent: E,
            size: 700,
            crc32c: crc32c(&data),
        };
        let mut buf = [0u8; 1024];
        assert_eq!(read_blob_into(&mut d, &blob, &mut buf), Ok(700));
        assert_eq!(&buf[..700], &data[..]);
        assert_eq!(
            read_blob_into(&mut d, &blob, &mut buf[..1000]),
            Err(ExtentIoError::OutOfExtent)
        );
        let bad = Blob {
            crc32c: blob.crc32c ^ 1,
            ..blob
        };
        assert_eq!(
            read_blob_into(&mut d, &bad, &mut buf),
            Err(ExtentIoError::Checksum)
        );
    }

    const E: Extent = Extent {
        start: 4096,
        len: 4096,
    };

    #[test]
    fn bounds_are_enforced() {
        let mut d = MemDisk::new(16384);
        write_extent(&mut d, E, 4090, &[1; 6]).unwrap();
        assert_eq!(
            write_extent(&mut d, E, 4091, &[1; 6]),
            Err(ExtentIoError::OutOfExtent)
        );
        assert_eq!(
            write_extent(&mut d, E, u64::MAX, &[1]),
            Err(ExtentIoError::OutOfExtent)
        );
        let mut b = [0u8; 6];
        read_extent(&mut d, E, 4090, &mut b).unwrap();
        assert_eq!(b, [1; 6]);
        assert_eq!(d.bytes()[4096 + 4090], 1);
        assert_eq!(d.bytes()[4096 + 4096], 0);
        let far = Extent {
            start: u64::MAX - 10,
            len: 100,
        };
        assert_eq!(
            write_extent(&mut d, far, 20, &[1]),
            Err(ExtentIoError::OutOfExtent)
        );
    }

    #[test]
    fn zero_and_blob_checksum() {
        let mut d = MemDisk::new(16384);
        write_extent(&mut d, E, 0, b"kernel").unwrap();
        let blob = Blob {
            extent: E,
            size: 6,
            crc32c: crc32c(b"kernel"),
        };
        assert_eq!(read_blob(&mut d, &blob).unwrap(), b"kernel");
        zero_extent(&mut d, E).unwrap();
        assert!(d.bytes().iter().all(|&x| x == 0));
        assert_eq!(read_blob(&mut d, &blob), Err(ExtentIoError::Checksum));
    }

    #[test]
    fn extent_disk_is_a_window() {
        let mut w = ExtentDisk::new(MemDisk::new(16384), E, false);
        assert_eq!(w.capacity(), 4096);
        w.write_at(0, &[7; 512]).unwrap();
        assert_eq!(
            w.write_at(4096 - 511, &[7; 512]),
            Err(BlockError::OutOfRange)
        );
        let inner = w.into_inner();
        assert_eq!(&inner.bytes()[4096..4096 + 512], &[7; 512]);
        assert_eq!(inner.bytes()[4095], 0);
        let mut ro = ExtentDisk::new(inner, E, true);
        assert!(ro.read_only());
        assert_eq!(ro.write_at(0, &[1]), Err(BlockError::ReadOnly));
        let mut b = [0u8; 1];
        ro.read_at(0, &mut b).unwrap();
        assert_eq!(b, [7]);
    }
}
