//! Guest RAM in a saved image. RAM is populated in 2 MiB blocks on first touch
//! (`el2/src/guestram.rs`); only populated blocks are saved. Within a block each
//! 4 KiB page that is all zero is one bit of a [`ZeroMap`] and no data. Each saved
//! block has a slot of [`BLOCK_SIZE`] bytes in the RAM data section, and each page
//! with data sits at its own place in its block's slot (a zero page's place holds
//! whatever was there: it is never read), so a later suspend can rewrite only the
//! pages that changed. The RAM index lists, per saved block, its number, its slot,
//! the XXH64 of its data pages in order ([`block_sum`]) and its zero map
//! ([`IndexEntry`]).

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

/// One saved block: its number (offset from the RAM base / [`BLOCK_SIZE`]), its
/// slot in the RAM data section, the checksum of its data pages ([`block_sum`])
/// and which of its pages are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexEntry {
    pub block: u32,
    pub slot: u32,
    pub sum: u64,
    pub zero: ZeroMap,
}

/// The checksum of a block's data: XXH64 (seed 0) of its pages with data, in page
/// order (`block` is the whole block; pages past its end count as zero). Not
/// CRC32C: XXH64 is plain integer arithmetic, which an emulator runs natively,
/// and a resume checksums all of RAM.
pub fn block_sum(block: &[u8], zero: &ZeroMap) -> u64 {
    use core::hash::Hasher;
    let mut h = twox_hash::XxHash64::with_seed(0);
    for (p, n) in runs(|p| !zero.is_zero(p) && p * PAGE_SIZE < block.len()) {
        h.write(&block[p * PAGE_SIZE..((p + n) * PAGE_SIZE).min(block.len())]);
    }
    h.finish()
}

impl IndexEntry {
    /// The pages with data as runs `(first page, pages)`, in order.
    pub fn data_runs(&self) -> Vec<(usize, usize)> {
        runs(|p| !self.zero.is_zero(p))
    }
}

/// The pages of a block for which `f` holds, as maximal runs `(first, count)`.
pub fn runs(f: impl Fn(usize) -> bool) -> Vec<(usize, usize)> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    for p in (0..PAGES_PER_BLOCK).filter(|&p| f(p)) {
        match out.last_mut() {
            Some((first, n)) if *first + *n == p => *n += 1,
            _ => out.push((p, 1)),
        }
    }
    out
}

/// Bytes of one encoded [`IndexEntry`].
pub const ENTRY_LEN: usize = 4 + 4 + 8 + 8 * MAP_WORDS;

/// Encodes the RAM index.
pub fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * ENTRY_LEN);
    for e in entries {
        out.extend_from_slice(&e.block.to_le_bytes());
        out.extend_from_slice(&e.slot.to_le_bytes());
        out.extend_from_slice(&e.sum.to_le_bytes());
        for w in e.zero.0 {
            out.extend_from_slice(&w.to_le_bytes());
        }
    }
    out
}

/// Decodes the RAM index of a VM with `blocks` blocks of RAM and an image with
/// `slots` block slots: entries strictly increasing by block number, each inside
/// RAM, each in its own slot. Returns the entries and the
/// number of data pages they describe.
pub fn decode_index(
    bytes: &[u8],
    blocks: u32,
    slots: u32,
) -> Result<(Vec<IndexEntry>, u64), FormatError> {
    if !bytes.len().is_multiple_of(ENTRY_LEN) || bytes.len() / ENTRY_LEN > blocks as usize {
        return Err(FormatError::Malformed("RAM index length"));
    }
    let mut out = Vec::with_capacity(bytes.len() / ENTRY_LEN);
    let mut pages = 0u64;
    let mut taken = alloc::vec![false; slots.min(blocks) as usize];
    let word = |c: &[u8], at: usize| u32::from_le_bytes([c[at], c[at + 1], c[at + 2], c[at + 3]]);
    for c in bytes.chunks_exact(ENTRY_LEN) {
        let (block, slot) = (word(c, 0), word(c, 4));
        let sum = u64::from(word(c, 8)) | u64::from(word(c, 12)) << 32;
        if block >= blocks || out.last().is_some_and(|l: &IndexEntry| l.block >= block) {
            return Err(FormatError::Malformed("RAM index block number"));
        }
        match taken.get_mut(slot as usize) {
            Some(t @ false) => *t = true,
            _ => return Err(FormatError::Malformed("RAM index slot")),
        }
        let mut zero = ZeroMap::default();
        for (i, w) in c[16..].chunks_exact(8).enumerate() {
            zero.0[i] = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        }
        pages += zero.data_pages() as u64;
        out.push(IndexEntry {
            block,
            slot,
            sum,
            zero,
        });
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
                slot: 1,
                sum: 0xdead_beef_0bad_f00d,
                zero: ZeroMap::default(),
            },
            IndexEntry {
                block: 7,
                slot: 0,
                sum: 7,
                zero: z,
            },
        ];
        let bytes = encode_index(&e);
        let (back, pages) = decode_index(&bytes, 8, 2).unwrap();
        assert_eq!(back, e);
        assert_eq!(pages, PAGES_PER_BLOCK as u64 + 61);
        // Block outside RAM, out of order, duplicated, torn, too many.
        assert!(decode_index(&bytes, 7, 2).is_err());
        let mut swapped = encode_index(&[e[1], e[0]]);
        assert!(decode_index(&swapped, 8, 2).is_err());
        swapped = encode_index(&[e[1], e[1]]);
        assert!(decode_index(&swapped, 8, 2).is_err());
        assert!(decode_index(&bytes[..bytes.len() - 1], 8, 2).is_err());
        assert!(decode_index(&bytes, 1, 2).is_err());
        // A slot past the RAM data, two blocks in one slot.
        assert!(decode_index(&bytes, 8, 1).is_err());
        let mut same = e;
        same[1].slot = 1;
        assert!(decode_index(&encode_index(&same), 8, 2).is_err());
    }

    #[test]
    fn runs_are_maximal() {
        let mut z = ZeroMap([u64::MAX; MAP_WORDS]);
        for p in [0, 1, 2, 63, 64, 511] {
            z.0[p / 64] &= !(1 << (p % 64));
        }
        let e = IndexEntry {
            block: 0,
            slot: 0,
            sum: 0,
            zero: z,
        };
        assert_eq!(e.data_runs(), vec![(0, 3), (63, 2), (511, 1)]);
        assert_eq!(runs(|_| true), vec![(0, PAGES_PER_BLOCK)]);
        assert!(runs(|_| false).is_empty());
    }

    #[test]
    fn block_sum_covers_data_pages_only_in_order() {
        let mut b = vec![0u8; BLOCK_SIZE];
        b[PAGE_SIZE] = 1;
        b[9 * PAGE_SIZE + 3] = 2;
        let z = ZeroMap::of(&b);
        let s = block_sum(&b, &z);
        // XXH64 of the two data pages back to back.
        let mut both = b[PAGE_SIZE..2 * PAGE_SIZE].to_vec();
        both.extend_from_slice(&b[9 * PAGE_SIZE..10 * PAGE_SIZE]);
        use core::hash::Hasher;
        let mut h = twox_hash::XxHash64::with_seed(0);
        h.write(&both);
        assert_eq!(s, h.finish());
        // A byte of a zero page's place does not count; one of a data page does.
        let mut c = b.clone();
        c[5 * PAGE_SIZE] = 7;
        assert_eq!(block_sum(&c, &z), s);
        c[9 * PAGE_SIZE] ^= 1;
        assert_ne!(block_sum(&c, &z), s);
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
