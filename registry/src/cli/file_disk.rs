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
}
