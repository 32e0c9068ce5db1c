//! The superblock: the disk's identity and geometry (magic, format version, disk
//! UUID, sizes, slot and data-area offsets), written twice (sectors 0 and 1) at
//! format time and never rewritten, each copy protected by a CRC32C.

use crate::codec::{crc32c, get_u32, get_u64, put_u32, put_u64};
use crate::defs::{
    sb, ALLOC_UNIT, DATA_OFFSET, FORMAT_VERSION, MIN_DISK_SIZE, SLOT_A_OFFSET, SLOT_B_OFFSET,
    SLOT_SIZE, SUPERBLOCK_MAGIC, SUPERBLOCK_SIZE,
};
use crate::error::{SlotId, SuperblockError};
use crate::record::Extent;
use crate::uuid::Uuid;

/// The disk's identity and geometry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Superblock {
    /// The system disk's UUID.
    pub disk_uuid: Uuid,
    /// Disk size in bytes at format time.
    pub disk_size: u64,
    /// Size of each metadata slot.
    pub slot_size: u64,
    /// Byte offset of slot A.
    pub slot_a_offset: u64,
    /// Byte offset of slot B.
    pub slot_b_offset: u64,
    /// Byte offset of the data area.
    pub data_offset: u64,
    /// Size of the data area (a multiple of `alloc_unit`).
    pub data_size: u64,
    /// Every extent starts and ends on a multiple of this.
    pub alloc_unit: u64,
}

impl Superblock {
    /// The format-v1 geometry for a disk of `capacity` bytes, or `None` if it is
    /// smaller than [`MIN_DISK_SIZE`].
    pub fn for_capacity(disk_uuid: Uuid, capacity: u64) -> Option<Superblock> {
        if capacity < MIN_DISK_SIZE {
            return None;
        }
        let data_size = (capacity - DATA_OFFSET) / ALLOC_UNIT * ALLOC_UNIT;
        Some(Superblock {
            disk_uuid,
            disk_size: capacity,
            slot_size: SLOT_SIZE,
            slot_a_offset: SLOT_A_OFFSET,
            slot_b_offset: SLOT_B_OFFSET,
            data_offset: DATA_OFFSET,
            data_size,
            alloc_unit: ALLOC_UNIT,
        })
    }

    /// The data area as an extent.
    pub fn data_area(&self) -> Extent {
        Extent {
            start: self.data_offset,
            len: self.data_size,
        }
    }

    /// Byte offset of a metadata slot.
    pub fn slot_offset(&self, slot: SlotId) -> u64 {
        match slot {
            SlotId::A => self.slot_a_offset,
            SlotId::B => self.slot_b_offset,
        }
    }

    /// The 512-byte encoding.
    pub fn encode(&self) -> [u8; SUPERBLOCK_SIZE] {
        let mut b = [0u8; SUPERBLOCK_SIZE];
        b[sb::MAGIC..sb::MAGIC + 8].copy_from_slice(&SUPERBLOCK_MAGIC);
        put_u32(&mut b, sb::VERSION, FORMAT_VERSION);
        put_u32(&mut b, sb::SIZE, SUPERBLOCK_SIZE as u32);
        b[sb::DISK_UUID..sb::DISK_UUID + 16].copy_from_slice(&self.disk_uuid.0);
        put_u64(&mut b, sb::DISK_SIZE, self.disk_size);
        put_u64(&mut b, sb::SLOT_SIZE, self.slot_size);
        put_u64(&mut b, sb::SLOT_A_OFFSET, self.slot_a_offset);
        put_u64(&mut b, sb::SLOT_B_OFFSET, self.slot_b_offset);
        put_u64(&mut b, sb::DATA_OFFSET, self.data_offset);
        put_u64(&mut b, sb::DATA_SIZE, self.data_size);
        put_u64(&mut b, sb::ALLOC_UNIT, self.alloc_unit);
        let crc = crc32c(&b[..sb::CRC]);
        put_u32(&mut b, sb::CRC, crc);
        b
    }

    /// Decodes and checks one superblock copy.
    pub fn decode(b: &[u8; SUPERBLOCK_SIZE]) -> Result<Superblock, SuperblockError> {
        if b[sb::MAGIC..sb::MAGIC + 8] != SUPERBLOCK_MAGIC {
            return Err(SuperblockError::BadMagic);
        }
        if crc32c(&b[..sb::CRC]) != get_u32(b, sb::CRC) {
            return Err(SuperblockError::Checksum);
        }
        let version = get_u32(b, sb::VERSION);
        if version != FORMAT_VERSION {
            return Err(SuperblockError::UnsupportedVersion(version));
        }
        let mut disk_uuid = [0u8; 16];
        disk_uuid.copy_from_slice(&b[sb::DISK_UUID..sb::DISK_UUID + 16]);
        let s = Superblock {
            disk_uuid: Uuid(disk_uuid),
            disk_size: get_u64(b, sb::DISK_SIZE),
            slot_size: get_u64(b, sb::SLOT_SIZE),
            slot_a_offset: get_u64(b, sb::SLOT_A_OFFSET),
            slot_b_offset: get_u64(b, sb::SLOT_B_OFFSET),
            data_offset: get_u64(b, sb::DATA_OFFSET),
            data_size: get_u64(b, sb::DATA_SIZE),
            alloc_unit: get_u64(b, sb::ALLOC_UNIT),
        };
        // Format v1 has one fixed geometry, so anything else is corruption.
        let expected = Superblock::for_capacity(s.disk_uuid, s.disk_size);
        let reserved_clear = b[sb::RESERVED..sb::CRC].iter().all(|&x| x == 0);
        if expected != Some(s)
            || get_u32(b, sb::SIZE) != SUPERBLOCK_SIZE as u32
            || !reserved_clear
            || s.disk_uuid.is_nil()
        {
            return Err(SuperblockError::BadGeometry);
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Superblock {
        Superblock::for_capacity(Uuid::from_random_bytes([9; 16]), 64 << 20).unwrap()
    }

    #[test]
    fn round_trip() {
        let s = sample();
        assert_eq!(Superblock::decode(&s.encode()), Ok(s));
        assert_eq!(
            s.data_area(),
            Extent {
                start: DATA_OFFSET,
                len: (64 << 20) - DATA_OFFSET
            }
        );
    }

    #[test]
    fn odd_capacity_rounds_data_area_down() {
        let s = Superblock::for_capacity(Uuid::from_random_bytes([1; 16]), MIN_DISK_SIZE + 4095)
            .unwrap();
        assert_eq!(s.data_size % ALLOC_UNIT, 0);
        assert_eq!(Superblock::decode(&s.encode()), Ok(s));
        assert!(Superblock::for_capacity(s.disk_uuid, MIN_DISK_SIZE - 1).is_none());
    }

    #[test]
    fn every_byte_flip_refused() {
        let good = sample().encode();
        for i in 0..SUPERBLOCK_SIZE {
            let mut b = good;
            b[i] ^= 0x01;
            assert!(Superblock::decode(&b).is_err(), "flip at byte {i} accepted");
        }
    }

    #[test]
    fn blank_is_bad_magic_and_bad_fields_refused() {
        assert_eq!(
            Superblock::decode(&[0; SUPERBLOCK_SIZE]),
            Err(SuperblockError::BadMagic)
        );
        let mut s = sample();
        s.data_offset += ALLOC_UNIT;
        assert_eq!(
            Superblock::decode(&s.encode()),
            Err(SuperblockError::BadGeometry)
        );
        let mut b = sample().encode();
        put_u32(&mut b, sb::VERSION, 2);
        let crc = crc32c(&b[..sb::CRC]);
        put_u32(&mut b, sb::CRC, crc);
        assert_eq!(
            Superblock::decode(&b),
            Err(SuperblockError::UnsupportedVersion(2))
        );
    }
}
