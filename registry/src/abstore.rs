//! [`AbStore`]: an atomically replaceable blob inside one extent, for state the
//! hypervisor rewrites while a VM runs (the TPM's NV image; later, saved state).
//! The extent is split into two halves; each holds a 40-byte header (magic,
//! version, half index, generation, length, content CRC32C, header CRC32C) and the
//! content. A store writes the half not holding the newest copy with the next
//! generation and flushes; a load returns the valid half with the highest
//! generation. A torn store therefore leaves the previous content readable.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use vdev::{BlockBackend, BlockError};

use crate::codec::{crc32c, get_u32, get_u64, put_u32, put_u64};
use crate::defs::{ab, AB_HEADER_SIZE, AB_MAGIC, BLOCK_SIZE, FORMAT_VERSION};
use crate::error::ExtentIoError;
use crate::extent_io::{read_extent, write_extent};
use crate::record::Extent;

/// Why a half was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HalfError {
    /// All-zero header: never written.
    Blank,
    /// Header magic, version, index or checksum wrong.
    BadHeader,
    /// Content length exceeds the half.
    BadLength,
    /// Content checksum wrong (torn or corrupt).
    Checksum,
}

/// Why an [`AbStore`] operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AbError {
    /// The backend failed.
    Io(BlockError),
    /// The content does not fit a half.
    TooLarge {
        /// Content length.
        size: u64,
        /// Largest content a half holds.
        capacity: u64,
    },
    /// Neither half is valid and at least one is not blank: refused, not reset.
    Corrupt {
        /// Why the first half was refused.
        first: HalfError,
        /// Why the second half was refused.
        second: HalfError,
    },
}

impl fmt::Display for AbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AbError::Io(e) => write!(f, "I/O error: {e:?}"),
            AbError::TooLarge { size, capacity } => {
                write!(f, "{size} bytes exceed the store's {capacity}")
            }
            AbError::Corrupt { first, second } => {
                write!(f, "both copies refused: {first:?}, {second:?}")
            }
        }
    }
}

impl From<ExtentIoError> for AbError {
    fn from(e: ExtentIoError) -> AbError {
        match e {
            ExtentIoError::Io(b) => AbError::Io(b),
            // Halves lie inside the extent by construction; report anything else as I/O.
            ExtentIoError::OutOfExtent | ExtentIoError::Checksum => {
                AbError::Io(BlockError::OutOfRange)
            }
        }
    }
}

/// Two-copy atomic storage inside one extent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbStore {
    extent: Extent,
    half: u64,
}

impl AbStore {
    /// A store over `extent`; `None` if the extent cannot hold two halves of at
    /// least one block each.
    pub fn new(extent: Extent) -> Option<AbStore> {
        let half = extent.len / 2 / BLOCK_SIZE * BLOCK_SIZE;
        (half >= BLOCK_SIZE).then_some(AbStore { extent, half })
    }

    /// Largest content the store holds.
    pub fn capacity(&self) -> u64 {
        self.half - AB_HEADER_SIZE as u64
    }

    fn half_extent(&self, index: u32) -> Extent {
        Extent {
            start: self.extent.start + u64::from(index) * self.half,
            len: self.half,
        }
    }

    /// Reads and checks one half: `(generation, content)`.
    fn read_half(
        &self,
        disk: &mut dyn BlockBackend,
        index: u32,
    ) -> Result<Result<(u64, Vec<u8>), HalfError>, AbError> {
        let e = self.half_extent(index);
        let mut head = vec![0u8; BLOCK_SIZE as usize];
        read_extent(disk, e, 0, &mut head)?;
        let h = &head[..AB_HEADER_SIZE];
        if h.iter().all(|&b| b == 0) {
            return Ok(Err(HalfError::Blank));
        }
        if h[ab::MAGIC..ab::MAGIC + 8] != AB_MAGIC
            || crc32c(&h[..ab::HEADER_CRC]) != get_u32(h, ab::HEADER_CRC)
            || get_u32(h, ab::VERSION) != FORMAT_VERSION
            || get_u32(h, ab::INDEX) != index
        {
            return Ok(Err(HalfError::BadHeader));
        }
        let len = get_u64(h, ab::LEN);
        if len > self.capacity() {
            return Ok(Err(HalfError::BadLength));
        }
        let total = (AB_HEADER_SIZE as u64 + len).next_multiple_of(BLOCK_SIZE);
        let mut buf = vec![0u8; total as usize];
        read_extent(disk, e, 0, &mut buf)?;
        let content = buf[AB_HEADER_SIZE..AB_HEADER_SIZE + len as usize].to_vec();
        if crc32c(&content) != get_u32(&buf, ab::DATA_CRC) {
            return Ok(Err(HalfError::Checksum));
        }
        Ok(Ok((get_u64(&buf, ab::GENERATION), content)))
    }

    /// The newest valid half: `(index, generation, content)`, `None` if both are
    /// blank.
    fn newest(&self, disk: &mut dyn BlockBackend) -> Result<Option<(u32, u64, Vec<u8>)>, AbError> {
        let first = self.read_half(disk, 0)?;
        let second = self.read_half(disk, 1)?;
        Ok(match (first, second) {
            (Ok((g0, c0)), Ok((g1, c1))) => Some(if g1 > g0 { (1, g1, c1) } else { (0, g0, c0) }),
            (Ok((g, c)), Err(e)) => {
                if e != HalfError::Blank {
                    log::warn!("registry: A/B store second half refused ({e:?}); using the first");
                }
                Some((0, g, c))
            }
            (Err(e), Ok((g, c))) => {
                if e != HalfError::Blank {
                    log::warn!("registry: A/B store first half refused ({e:?}); using the second");
                }
                Some((1, g, c))
            }
            (Err(HalfError::Blank), Err(HalfError::Blank)) => None,
            (Err(first), Err(second)) => return Err(AbError::Corrupt { first, second }),
        })
    }

    /// The last stored content; `None` if nothing was ever stored.
    pub fn load(&self, disk: &mut dyn BlockBackend) -> Result<Option<Vec<u8>>, AbError> {
        Ok(self.newest(disk)?.map(|(_, _, c)| c))
    }

    /// Replaces the content atomically: writes the other half with the next
    /// generation, then flushes.
    pub fn store(&self, disk: &mut dyn BlockBackend, data: &[u8]) -> Result<(), AbError> {
        let size = data.len() as u64;
        if size > self.capacity() {
            return Err(AbError::TooLarge {
                size,
                capacity: self.capacity(),
            });
        }
        let (index, generation) = match self.newest(disk) {
            Ok(Some((i, g, _))) => (1 - i, g + 1),
            // Nothing valid (blank, or refused): start over in the first half.
            Ok(None) | Err(AbError::Corrupt { .. }) => (0, 1),
            Err(e) => return Err(e),
        };
        let total = (AB_HEADER_SIZE + data.len()).next_multiple_of(BLOCK_SIZE as usize);
        let mut b = vec![0u8; total];
        b[ab::MAGIC..ab::MAGIC + 8].copy_from_slice(&AB_MAGIC);
        put_u32(&mut b, ab::VERSION, FORMAT_VERSION);
        put_u32(&mut b, ab::INDEX, index);
        put_u64(&mut b, ab::GENERATION, generation);
        put_u64(&mut b, ab::LEN, size);
        put_u32(&mut b, ab::DATA_CRC, crc32c(data));
        let hcrc = crc32c(&b[..ab::HEADER_CRC]);
        put_u32(&mut b, ab::HEADER_CRC, hcrc);
        b[AB_HEADER_SIZE..AB_HEADER_SIZE + data.len()].copy_from_slice(data);
        write_extent(disk, self.half_extent(index), 0, &b)?;
        disk.flush().map_err(AbError::Io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memdisk::MemDisk;

    const E: Extent = Extent {
        start: 8192,
        len: 16384,
    };

    /// Lands only the first `k` blocks of the next write, then fails everything.
    struct Torn {
        inner: MemDisk,
        k: Option<usize>,
    }

    impl BlockBackend for Torn {
        fn capacity(&self) -> u64 {
            self.inner.capacity()
        }
        fn read_only(&self) -> bool {
            false
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
            self.inner.read_at(offset, buf)
        }
        fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
            match self.k.take() {
                Some(k) => {
                    let n = (k * BLOCK_SIZE as usize).min(data.len());
                    self.inner.write_at(offset, &data[..n])?;
                    self.k = Some(usize::MAX);
                    Err(BlockError::Io)
                }
                None => self.inner.write_at(offset, data),
            }
        }
        fn flush(&mut self) -> Result<(), BlockError> {
            if self.k.is_some() {
                Err(BlockError::Io)
            } else {
                Ok(())
            }
        }
    }

    #[test]
    fn blank_store_load_and_alternation() {
        let s = AbStore::new(E).unwrap();
        assert_eq!(s.capacity(), 8192 - AB_HEADER_SIZE as u64);
        let mut d = MemDisk::new(32768);
        assert_eq!(s.load(&mut d), Ok(None));
        s.store(&mut d, b"one").unwrap();
        assert_eq!(s.load(&mut d), Ok(Some(b"one".to_vec())));
        s.store(&mut d, &[7; 3000]).unwrap();
        assert_eq!(s.load(&mut d), Ok(Some(vec![7; 3000])));
        s.store(&mut d, b"").unwrap();
        assert_eq!(s.load(&mut d), Ok(Some(Vec::new())));
        assert!(
            d.bytes()[..8192].iter().all(|&b| b == 0) && d.bytes()[24576..].iter().all(|&b| b == 0)
        );
        assert_eq!(
            s.store(&mut d, &[0; 8192]),
            Err(AbError::TooLarge {
                size: 8192,
                capacity: s.capacity()
            })
        );
        assert!(AbStore::new(Extent {
            start: 0,
            len: 1023
        })
        .is_none());
    }

    #[test]
    fn torn_store_keeps_the_previous_content() {
        let s = AbStore::new(E).unwrap();
        let mut base = MemDisk::new(32768);
        s.store(&mut base, &[1; 2000]).unwrap();
        s.store(&mut base, &[2; 1500]).unwrap();
        let new = vec![3u8; 5000];
        let blocks = (AB_HEADER_SIZE + new.len()).div_ceil(BLOCK_SIZE as usize);
        for k in 0..=blocks {
            let mut d = Torn {
                inner: base.clone(),
                k: Some(k),
            };
            assert!(s.store(&mut d, &new).is_err());
            let got = s.load(&mut d.inner).unwrap().unwrap();
            if k < blocks {
                assert_eq!(got, vec![2; 1500], "k={k}");
            } else {
                assert_eq!(got, new);
            }
        }
    }

    #[test]
    fn corruption_detected_and_refused() {
        let s = AbStore::new(E).unwrap();
        let mut d = MemDisk::new(32768);
        s.store(&mut d, b"first").unwrap();
        s.store(&mut d, b"second").unwrap();
        // Any flipped byte of the newest copy falls back to the older one.
        for i in 0..AB_HEADER_SIZE + 6 {
            let mut c = d.clone();
            c.bytes_mut()[8192 + 8192 + i] ^= 4;
            assert_eq!(s.load(&mut c), Ok(Some(b"first".to_vec())), "flip at {i}");
        }
        let mut c = d.clone();
        c.bytes_mut()[8192 + 5] ^= 4;
        c.bytes_mut()[8192 + 8192 + AB_HEADER_SIZE] ^= 4;
        assert_eq!(
            s.load(&mut c),
            Err(AbError::Corrupt {
                first: HalfError::BadHeader,
                second: HalfError::Checksum
            })
        );
    }
}
