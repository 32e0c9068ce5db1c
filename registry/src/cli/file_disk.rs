//! [`FileDisk`]: a [`BlockBackend`] over a host file (a system-disk image).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use vdev::{BlockBackend, BlockError};

/// A system-disk image file.
#[derive(Debug)]
pub struct FileDisk {
    file: File,
    capacity: u64,
    read_only: bool,
}

impl FileDisk {
    /// Creates a new sparse image of `size` bytes; fails if the file exists.
    pub fn create(path: &Path, size: u64) -> std::io::Result<FileDisk> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        file.set_len(size)?;
        Ok(FileDisk {
            file,
            capacity: size,
            read_only: false,
        })
    }

    /// Opens an existing image, writable unless `read_only`.
    pub fn open(path: &Path, read_only: bool) -> std::io::Result<FileDisk> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        let capacity = file.metadata()?.len();
        Ok(FileDisk {
            file,
            capacity,
            read_only,
        })
    }

    fn check(&self, offset: u64, len: usize) -> Result<(), BlockError> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.capacity => Ok(()),
            _ => Err(BlockError::OutOfRange),
        }
    }
}

impl BlockBackend for FileDisk {
    fn capacity(&self) -> u64 {
        self.capacity
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.check(offset, buf.len())?;
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(|_| BlockError::Io)?;
        self.file.read_exact(buf).map_err(|_| BlockError::Io)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        self.check(offset, data.len())?;
        self.file
            .seek(SeekFrom::Start(offset))
            .map_err(|_| BlockError::Io)?;
        self.file.write_all(data).map_err(|_| BlockError::Io)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        if self.read_only {
            return Ok(());
        }
        self.file.sync_data().map_err(|_| BlockError::Io)
    }
    /// Punches a hole (the range reads as zeros and its host blocks are freed, the
    /// file keeps its size), so removing a VM with a 64 GiB disk neither writes
    /// 64 GiB nor leaves them allocated; file systems without hole punching get the
    /// zeros written.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        use rustix::fs::{fallocate, FallocateFlags};
        if self.read_only {
            return Err(BlockError::ReadOnly);
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.capacity => {}
            _ => return Err(BlockError::OutOfRange),
        }
        if len == 0 {
            return Ok(());
        }
        let flags = FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE;
        match fallocate(&self.file, flags, offset, len) {
            Ok(()) => Ok(()),
            Err(rustix::io::Errno::OPNOTSUPP) => {
                vdev::block::write_zeroes_by_writing(self, offset, len)
            }
            Err(_) => Err(BlockError::Io),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    #[test]
    fn write_zeroes_frees_the_range_and_it_reads_as_zeros() {
        let dir = std::env::temp_dir().join(std::format!("rayos-filedisk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("disk.img");
        let _ = std::fs::remove_file(&path);
        let mut d = FileDisk::create(&path, 8 << 20).unwrap();
        let data = std::vec![0xa5u8; 4 << 20];
        d.write_at(1 << 20, &data).unwrap();
        d.flush().unwrap();
        let allocated = |p: &Path| std::fs::metadata(p).unwrap().blocks() * 512;
        assert!(allocated(&path) >= 4 << 20);
        d.write_zeroes(1 << 20, 4 << 20).unwrap();
        d.flush().unwrap();
        let mut back = std::vec![1u8; 4 << 20];
        d.read_at(1 << 20, &mut back).unwrap();
        assert!(back.iter().all(|&b| b == 0));
        // The temporary directory's file system punches holes (ext4, xfs, btrfs and
        // tmpfs all do).
        assert!(
            allocated(&path) < 1 << 20,
            "{} bytes still allocated",
            allocated(&path)
        );
        assert_eq!(d.write_zeroes(8 << 20, 1), Err(BlockError::OutOfRange));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
