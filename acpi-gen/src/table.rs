//! Writing one system description table: the common 36-byte header (ACPI 6.3,
//! 5.2.6), little-endian fields appended in order, and the length and checksum
//! filled in when the table is finished.

use alloc::vec::Vec;

/// Size of the common table header.
pub const HEADER_LEN: usize = 36;
/// Offset of the header's Length field.
pub const LENGTH_OFFSET: usize = 4;
/// Offset of the header's Checksum field.
pub const CHECKSUM_OFFSET: usize = 9;
/// Creator ID and revision of every table this crate writes.
pub const CREATOR_ID: [u8; 4] = *b"RYOS";
pub const CREATOR_REVISION: u32 = 1;

/// Generic Address Structure address space IDs (ACPI 6.3, 5.2.3.2).
pub mod gas {
    pub const SYSTEM_MEMORY: u8 = 0;
    /// Access sizes.
    pub const ACCESS_BYTE: u8 = 1;
    pub const ACCESS_DWORD: u8 = 3;
    /// Size of the structure.
    pub const LEN: usize = 12;
}

/// The 8-bit checksum that makes `bytes` sum to zero when stored in a byte of
/// `bytes` that currently holds zero.
pub fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(sum(bytes))
}

/// The 8-bit sum of `bytes` (zero for a correctly checksummed table).
pub fn sum(bytes: &[u8]) -> u8 {
    bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b))
}

/// OEM identification copied into every header.
#[derive(Debug, Clone, Copy)]
pub struct Oem {
    pub id: [u8; 6],
    pub table_id: [u8; 8],
    pub revision: u32,
}

/// A table being written.
pub struct TableWriter {
    bytes: Vec<u8>,
}

impl TableWriter {
    /// Starts a table with its header (length and checksum still zero).
    pub fn new(signature: &[u8; 4], revision: u8, oem: &Oem) -> Self {
        let mut w = TableWriter {
            bytes: Vec::with_capacity(256),
        };
        w.raw(signature);
        w.u32(0); // Length, set by finish()
        w.u8(revision);
        w.u8(0); // Checksum, set by finish()
        w.raw(&oem.id);
        w.raw(&oem.table_id);
        w.u32(oem.revision);
        w.raw(&CREATOR_ID);
        w.u32(CREATOR_REVISION);
        debug_assert_eq!(w.bytes.len(), HEADER_LEN);
        w
    }

    /// Bytes written so far (the offset of the next field).
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Never true: a table always has its header.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.bytes.push(v);
        self
    }
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.raw(&v.to_le_bytes())
    }
    pub fn raw(&mut self, v: &[u8]) -> &mut Self {
        self.bytes.extend_from_slice(v);
        self
    }
    /// `n` zero bytes (reserved fields).
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.bytes.resize(self.bytes.len() + n, 0);
        self
    }
    /// A Generic Address Structure for a memory-mapped register.
    pub fn gas_memory(&mut self, bit_width: u8, access_size: u8, address: u64) -> &mut Self {
        self.u8(gas::SYSTEM_MEMORY)
            .u8(bit_width)
            .u8(0)
            .u8(access_size)
            .u64(address)
    }
    /// An all-zero (absent) Generic Address Structure.
    pub fn gas_none(&mut self) -> &mut Self {
        self.zeros(gas::LEN)
    }
    /// Overwrites a little-endian u16 already written at `offset`.
    pub fn patch_u16(&mut self, offset: usize, v: u16) {
        self.bytes[offset..offset + 2].copy_from_slice(&v.to_le_bytes());
    }

    /// Sets Length and Checksum and returns the table.
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.bytes.len() as u32;
        self.bytes[LENGTH_OFFSET..LENGTH_OFFSET + 4].copy_from_slice(&len.to_le_bytes());
        self.bytes[CHECKSUM_OFFSET] = 0;
        self.bytes[CHECKSUM_OFFSET] = checksum(&self.bytes);
        self.bytes
    }
}
