//! Guest RAM in a saved image. RAM is populated in 2 MiB blocks on first touch
//! (`el2/src/guestram.rs`); only populated blocks are saved. Within a block each
//! 4 KiB page that is all zero is one bit of a [`ZeroMap`] and no data; the other
//! pages follow in order in the RAM data section. The RAM index lists, per saved
//! block, its number and zero map ([`IndexEntry`]).

use alloc::vec::Vec;

use crate::format::FormatError;

/// Bytes in a page, the unit of zero detection.
pub const PAGE_SIZE: usize = 4096;
/// Bytes in a block, the unit of population.
pub const BLOCK_SIZE: usize = 2 << 20;
/// Pages in a block.
pub const PAGES_PER_BLOCK: usize = BLOCK_SIZE / PAGE_SIZE;
const MAP_WORDS: usize = PAGES_PER_BLOCK / 64;

/// Which pages of a block are all zero (bit set = zero, no data stored).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZeroMap(pub [u64; MAP_WORDS]);

impl ZeroMap {
    /// The zero map of `block` (a whole block; a shorter last block has its missing
    /// pages marked zero).
    pub fn of(block: &[u8]) -> ZeroMap {
        let mut m = ZeroMap([u64::MAX; MAP_WORDS]);
        for (p, page) in block.chunks(PAGE_SIZE).enumerate().take(PAGES_PER_BLOCK) {
            if !is_zero(page) {
                m.0[p / 64] &= !(1 << (p % 64));
            }
        }
        m
    }

    /// Whether page `p` is all zero.
    pub fn is_zero(&self, p: usize) -> bool {
        self.0[p / 64] & (1 << (p % 64)) != 0
    }

    /// Pages with data.
    pub fn data_pages(&self) -> usize {
        self.0.iter().map(|w| w.count_zeros() as usize).sum()
    }
}

/// Whether `bytes` are all zero (eight bytes at a time).
pub fn is_zero(bytes: &[u8]) -> bool {
    let words = bytes.chunks_exact(8);
    let tail = words.remainder();
    tail.iter().all(|&b| b == 0)
        && words
            .into_iter()
            .all(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]) == 0)
}

/// One saved block: its number (offset from the RAM base / [`BLOCK_SIZE`]) and
/// which of its pages are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub block: u32,
    pub zero: ZeroMap,
}

/// Bytes of one encoded [`IndexEntry`].
pub const ENTRY_LEN: usize = 4 + 8 * MAP_WORDS;

/// Encodes the RAM index.
pub fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in entries {
        out.extend_from_slice(&e.block.to_le_bytes());
        for w in e.zero.0 {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    out
}

/// Decodes the RAM index of a VM with `blocks` blocks of RAM: entries strictly
/// increasing by block number, each inside RAM. Returns the entries and the number
/// of data pages they describe.
pub fn decode_index(bytes: &[u8], blocks: u32) -> Result<(Vec<IndexEntry>, u64), FormatError> {
    if !bytes.len().is_multiple_of(ENTRY_LEN) || bytes.len() / ENTRY_LEN > blocks as usize {
        return Err(FormatError::Malformed("RAM index length"));
    }
    let mut out = Vec::with_capacity(bytes.len() / ENTRY_LEN);
    let mut pages = 0u64;
    for c in bytes.chunks_exact(ENTRY_LEN) {
        let block = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        if block >= blocks || out.last().is_some_and(|l: &IndexEntry| l.block >= block) {
            return Err(FormatError::Malformed("RAM index block number"));
        }
        let mut zero = ZeroMap::default();
        for (i, w) in c[4..].chunks_exact(8).enumerate() {
            zero.0[i] = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        }
        pages += zero.data_pages() as u64;
        out.push(IndexEntry { block, zero });
    }
    Ok((out, pages))
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn zero_map_marks_exactly_the_zero_pages() {
        let mut b = vec![0u8; BLOCK_SIZE];
        b[5 * PAGE_SIZE + 17] = 1;
        b[PAGES_PER_BLOCK * PAGE_SIZE - 1] = 9; // last byte of the last page
        let m = ZeroMap::of(&b);
        assert_eq!(m.data_pages(), 2);
        assert!(!m.is_zero(5) && !m.is_zero(PAGES_PER_BLOCK - 1));
        assert!(m.is_zero(0) && m.is_zero(6));
        // A short block: the missing pages count as zero.
        assert_eq!(ZeroMap::of(&b[..6 * PAGE_SIZE]).data_pages(), 1);
    }

    #[test]
    fn index_round_trips_and_hostile_indexes_are_refused() {
        let mut z = ZeroMap([u64::MAX; MAP_WORDS]);
        z.0[3] = 0b1011;
        let e = [
            IndexEntry {
                block: 0,
                zero: ZeroMap::default(),
            },
            IndexEntry { block: 7, zero: z },
        ];
        let bytes = encode_index(&e);
        let (back, pages) = decode_index(&bytes, 8).unwrap();
        assert_eq!(back, e);
        assert_eq!(pages, PAGES_PER_BLOCK as u64 + 61);
        // Block outside RAM, out of order, duplicated, torn, too many.
        assert!(decode_index(&bytes, 7).is_err());
        let mut swapped = encode_index(&[e[1], e[0]]);
        assert!(decode_index(&swapped, 8).is_err());
        swapped = encode_index(&[e[1], e[1]]);
        assert!(decode_index(&swapped, 8).is_err());
        assert!(decode_index(&bytes[..bytes.len() - 1], 8).is_err());
        assert!(decode_index(&bytes, 1).is_err());
    }

    #[test]
    fn is_zero_on_any_length() {
        assert!(is_zero(&[]));
        assert!(is_zero(&[0; 13]));
        let mut v = [0u8; 13];
        v[12] = 1;
        assert!(!is_zero(&v));
        v[12] = 0;
        v[3] = 1;
        assert!(!is_zero(&v));
    }
}
