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

/// Whether `bytes` are all zero: 64-bit words eight at a time when `bytes` is
/// word-aligned (a page of RAM always is), else eight bytes at a time.
pub fn is_zero(bytes: &[u8]) -> bool {
    if let Ok(words) = bytemuck::try_cast_slice::<u8, u64>(bytes) {
        let groups = words.chunks_exact(8);
        let rest = groups.remainder();
        return groups
            .into_iter()
            .all(|g| g.iter().fold(0, |a, w| a | w) == 0)
            && rest.iter().all(|&w| w == 0);
    }
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
    let mut h = Xxh64::new();
    for (p, n) in runs(|p| !zero.is_zero(p) && p * PAGE_SIZE < block.len()) {
        h.write(&block[p * PAGE_SIZE..((p + n) * PAGE_SIZE).min(block.len())]);
    }
    h.finish()
}

/// XXH64's primes (xxHash specification, "XXH64 algorithm description").
const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;
/// Bytes of one XXH64 stripe (four 64-bit lanes).
const STRIPE: usize = 32;

/// XXH64 with seed 0, fed in pieces: the same value as any XXH64 (the tests
/// compare it with `twox_hash`), computed so that a piece starting on an 8-byte
/// boundary (RAM pages always do) is read a 64-bit word at a time. The bare-metal
/// targets are strict-alignment, so a hash over `&[u8]` of unknown alignment
/// (`twox_hash`) reads every word a byte at a time: eight loads where one does,
/// and under QEMU TCG each load is a software TLB lookup — that made a resume's
/// checksums five times slower.
#[derive(Debug, Clone)]
pub struct Xxh64 {
    acc: [u64; 4],
    len: u64,
    buf: [u8; STRIPE],
    buffered: usize,
}

impl Default for Xxh64 {
    fn default() -> Self {
        Self::new()
    }
}

fn xxh_round(acc: u64, word: u64) -> u64 {
    acc.wrapping_add(word.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn le64(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

impl Xxh64 {
    /// Nothing hashed yet.
    pub fn new() -> Self {
        Xxh64 {
            acc: [P1.wrapping_add(P2), P2, 0, 0u64.wrapping_sub(P1)],
            len: 0,
            buf: [0; STRIPE],
            buffered: 0,
        }
    }

    fn stripe(&mut self, w: [u64; 4]) {
        for (a, w) in self.acc.iter_mut().zip(w) {
            *a = xxh_round(*a, w);
        }
    }

    fn stripe_bytes(&mut self, b: &[u8]) {
        self.stripe([le64(b), le64(&b[8..]), le64(&b[16..]), le64(&b[24..])]);
    }

    /// Hashes `data` after everything written before.
    pub fn write(&mut self, mut data: &[u8]) {
        self.len = self.len.wrapping_add(data.len() as u64);
        if self.buffered > 0 {
            let n = (STRIPE - self.buffered).min(data.len());
            self.buf[self.buffered..self.buffered + n].copy_from_slice(&data[..n]);
            self.buffered += n;
            data = &data[n..];
            if self.buffered < STRIPE {
                return;
            }
            let b = self.buf;
            self.stripe_bytes(&b);
            self.buffered = 0;
        }
        let (body, tail) = data.split_at(data.len() - data.len() % STRIPE);
        match bytemuck::try_cast_slice::<u8, u64>(body) {
            Ok(words) => {
                for s in words.chunks_exact(4) {
                    self.stripe([s[0], s[1], s[2], s[3]].map(u64::from_le));
                }
            }
            Err(_) => {
                for s in body.chunks_exact(STRIPE) {
                    self.stripe_bytes(s);
                }
            }
        }
        self.buf[..tail.len()].copy_from_slice(tail);
        self.buffered = tail.len();
    }

    /// The hash of everything written.
    pub fn finish(&self) -> u64 {
        let [v1, v2, v3, v4] = self.acc;
        let mut h = if self.len >= STRIPE as u64 {
            let mut h = v1
                .rotate_left(1)
                .wrapping_add(v2.rotate_left(7))
                .wrapping_add(v3.rotate_left(12))
                .wrapping_add(v4.rotate_left(18));
            for v in self.acc {
                h = (h ^ xxh_round(0, v)).wrapping_mul(P1).wrapping_add(P4);
            }
            h
        } else {
            P5 // the seed, 0, plus P5
        };
        h = h.wrapping_add(self.len);
        let mut tail = &self.buf[..self.buffered];
        while tail.len() >= 8 {
            h ^= xxh_round(0, le64(tail));
            h = h.rotate_left(27).wrapping_mul(P1).wrapping_add(P4);
            tail = &tail[8..];
        }
        if tail.len() >= 4 {
            let w = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
            h ^= u64::from(w).wrapping_mul(P1);
            h = h.rotate_left(23).wrapping_mul(P2).wrapping_add(P3);
            tail = &tail[4..];
        }
        for &b in tail {
            h ^= u64::from(b).wrapping_mul(P5);
            h = h.rotate_left(11).wrapping_mul(P1);
        }
        h ^= h >> 33;
        h = h.wrapping_mul(P2);
        h ^= h >> 29;
        h = h.wrapping_mul(P3);
        h ^ (h >> 32)
    }
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

    /// XXH64 of `data` by `twox_hash`, the reference.
    fn reference(data: &[u8]) -> u64 {
        use core::hash::Hasher;
        let mut h = twox_hash::XxHash64::with_seed(0);
        h.write(data);
        h.finish()
    }

    #[test]
    fn xxh64_matches_the_reference_on_every_length_alignment_and_split() {
        // Words so that a slice at offset 0 is 8-byte aligned (the word path).
        let words: Vec<u64> = (0..40u64)
            .map(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xA5A5)
            .collect();
        let all: &[u8] = bytemuck::cast_slice(&words);
        for start in 0..9 {
            for len in 0..=all.len() - start {
                let d = &all[start..start + len];
                let want = reference(d);
                let mut one = Xxh64::new();
                one.write(d);
                assert_eq!(one.finish(), want, "start {start} len {len}");
                for cut in [1, 7, 8, 31, 32, 33, 64] {
                    let cut = cut.min(len);
                    let mut two = Xxh64::new();
                    two.write(&d[..cut]);
                    two.write(&[]);
                    two.write(&d[cut..]);
                    assert_eq!(two.finish(), want, "start {start} len {len} cut {cut}");
                }
            }
        }
    }

    #[test]
    fn xxh64_of_known_values() {
        // From the xxHash reference: XXH64("", 0) and XXH64("a", 0).
        assert_eq!(Xxh64::new().finish(), 0xEF46_DB37_51D8_E999);
        let mut h = Xxh64::new();
        h.write(b"a");
        assert_eq!(h.finish(), 0xD24E_C4F1_A98C_6E5B);
    }

    #[test]
    fn block_sum_of_a_whole_block_is_the_reference_xxh64() {
        let words: Vec<u64> = (0..BLOCK_SIZE as u64 / 8)
            .map(|i| i.wrapping_mul(0x2545_F491_4F6C_DD1D))
            .collect();
        let b: &[u8] = bytemuck::cast_slice(&words);
        assert_eq!(block_sum(b, &ZeroMap::of(b)), reference(b));
    }

    #[test]
    fn is_zero_on_aligned_words() {
        let mut w = vec![0u64; 67];
        let b: &[u8] = bytemuck::cast_slice(&w);
        assert!(is_zero(b) && is_zero(&b[8..]) && is_zero(&b[3..]));
        for at in [0, 7, 8, 63, 64, 66] {
            w.iter_mut().for_each(|x| *x = 0);
            w[at] = 1 << 63;
            let b: &[u8] = bytemuck::cast_slice(&w);
            assert!(!is_zero(b), "word {at}");
            assert!(!is_zero(&b[1..]), "word {at}, unaligned");
        }
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
