//! A validated descriptor chain and the cursors that move data through it.
//!
//! A [`DescChain`] is what the queue hands a device after every descriptor was checked:
//! the device-readable segments, then the device-writable ones, each a guest physical
//! range that does not wrap. [`ChainReader`] and [`ChainWriter`] copy bytes through
//! them in caller-sized chunks, so a device never allocates by a guest-supplied
//! length. Guest memory errors surface as [`MemError`]; devices turn them into
//! DEVICE_NEEDS_RESET.

use alloc::vec::Vec;
use vdev::{GuestMemory, MemError};

/// One guest buffer: `len` bytes at guest physical address `addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub addr: u64,
    pub len: u32,
}

/// A validated descriptor chain, as popped from an available ring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DescChain {
    /// Index of the head descriptor: what goes back in the used ring.
    pub head: u16,
    /// Device-readable segments, in chain order.
    pub readable: Vec<Segment>,
    /// Device-writable segments, in chain order (all after the readable ones).
    pub writable: Vec<Segment>,
}

impl DescChain {
    /// Total bytes the device may read.
    pub fn readable_len(&self) -> u64 {
        self.readable.iter().map(|s| u64::from(s.len)).sum()
    }
    /// Total bytes the device may write.
    pub fn writable_len(&self) -> u64 {
        self.writable.iter().map(|s| u64::from(s.len)).sum()
    }
    /// A cursor over the readable bytes.
    pub fn reader(&self) -> ChainReader<'_> {
        ChainReader::new(&self.readable)
    }
    /// A cursor over the writable bytes.
    pub fn writer(&self) -> ChainWriter<'_> {
        ChainWriter::new(&self.writable, self.writable_len())
    }
}

/// Position inside a list of segments.
#[derive(Debug, Clone, Copy, Default)]
struct Cursor {
    seg: usize,
    off: u32,
}

impl Cursor {
    /// The next contiguous piece of at most `max` bytes, or `None` at the end. Advances.
    fn next_piece(&mut self, segs: &[Segment], max: usize) -> Option<(u64, usize)> {
        while let Some(s) = segs.get(self.seg) {
            let left = s.len - self.off;
            if left == 0 {
                self.seg += 1;
                self.off = 0;
                continue;
            }
            // `left` fits in u32, so the min fits in both usize and u32.
            let n = core::cmp::min(left as usize, max);
            let addr = s.addr + u64::from(self.off);
            self.off += n as u32;
            return Some((addr, n));
        }
        None
    }
}

/// Reads the device-readable bytes of a chain in order.
#[derive(Debug, Clone)]
pub struct ChainReader<'c> {
    segs: &'c [Segment],
    cur: Cursor,
    consumed: u64,
}

impl<'c> ChainReader<'c> {
    /// A reader positioned at the first byte of `segs`.
    pub fn new(segs: &'c [Segment]) -> Self {
        Self {
            segs,
            cur: Cursor::default(),
            consumed: 0,
        }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> u64 {
        let total: u64 = self.segs.iter().map(|s| u64::from(s.len)).sum();
        total - self.consumed
    }

    /// Fills as much of `buf` as the chain has left; returns the number of bytes read.
    pub fn read(&mut self, mem: &dyn GuestMemory, buf: &mut [u8]) -> Result<usize, MemError> {
        let mut done = 0;
        while done < buf.len() {
            let Some((addr, n)) = self.cur.next_piece(self.segs, buf.len() - done) else {
                break;
            };
            mem.read(addr, &mut buf[done..done + n])?;
            done += n;
        }
        self.consumed += done as u64;
        Ok(done)
    }

    /// Reads exactly `buf.len()` bytes, or returns `Ok(false)` when the chain is shorter.
    pub fn read_exact(&mut self, mem: &dyn GuestMemory, buf: &mut [u8]) -> Result<bool, MemError> {
        Ok(self.read(mem, buf)? == buf.len())
    }
}

/// Writes into the device-writable bytes of a chain in order, counting what it wrote
/// (the `len` reported in the used ring).
#[derive(Debug, Clone)]
pub struct ChainWriter<'c> {
    segs: &'c [Segment],
    cur: Cursor,
    limit: u64,
    written: u64,
}

impl<'c> ChainWriter<'c> {
    /// A writer over `segs` that stops after `limit` bytes.
    pub fn new(segs: &'c [Segment], limit: u64) -> Self {
        Self {
            segs,
            cur: Cursor::default(),
            limit,
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Bytes that can still be written before the limit.
    pub fn remaining(&self) -> u64 {
        self.limit - self.written
    }

    /// Lowers the limit by `n` bytes, reserving the chain's last `n` writable bytes
    /// (e.g. a status byte). Returns `false` if fewer than `n` bytes are left.
    pub fn reserve_tail(&mut self, n: u64) -> bool {
        if self.remaining() < n {
            return false;
        }
        self.limit -= n;
        true
    }

    /// Writes as much of `data` as fits; returns the number of bytes written.
    pub fn write(&mut self, mem: &mut dyn GuestMemory, data: &[u8]) -> Result<usize, MemError> {
        let want = core::cmp::min(data.len() as u64, self.remaining()) as usize;
        let mut done = 0;
        while done < want {
            let Some((addr, n)) = self.cur.next_piece(self.segs, want - done) else {
                break;
            };
            mem.write(addr, &data[done..done + n])?;
            done += n;
        }
        self.written += done as u64;
        Ok(done)
    }

    /// Writes `count` bytes produced by `fill` in chunks of at most `chunk.len()`,
    /// stopping at the limit. `fill` gets each chunk to fill before it is written.
    pub fn write_with<E>(
        &mut self,
        mem: &mut dyn GuestMemory,
        count: u64,
        chunk: &mut [u8],
        mut fill: impl FnMut(&mut [u8]) -> Result<(), E>,
    ) -> Result<u64, WriteWithError<E>> {
        let mut left = core::cmp::min(count, self.remaining());
        let mut total = 0;
        while left > 0 {
            let n = core::cmp::min(left, chunk.len() as u64) as usize;
            fill(&mut chunk[..n]).map_err(WriteWithError::Fill)?;
            let w = self.write(mem, &chunk[..n]).map_err(WriteWithError::Mem)?;
            total += w as u64;
            left -= n as u64;
            if w < n {
                break;
            }
        }
        Ok(total)
    }
}

/// Why [`ChainWriter::write_with`] stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteWithError<E> {
    /// The producer failed.
    Fill(E),
    /// Guest memory refused the write.
    Mem(MemError),
}

/// The last `n` writable bytes of `segs` as guest ranges (at most `n` pieces), for
/// writing a trailer such as a status byte. `None` if the segments are shorter.
pub fn tail_segments(segs: &[Segment], n: u64) -> Option<Vec<Segment>> {
    let mut left = n;
    let mut out = Vec::new();
    for s in segs.iter().rev() {
        if left == 0 {
            break;
        }
        let take = core::cmp::min(u64::from(s.len), left);
        if take > 0 {
            out.push(Segment {
                addr: s.addr + u64::from(s.len) - take,
                len: take as u32,
            });
            left -= take;
        }
    }
    if left > 0 {
        return None;
    }
    out.reverse();
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdev::VecMemory;

    fn segs() -> Vec<Segment> {
        alloc::vec![
            Segment {
                addr: 0x1000,
                len: 3
            },
            Segment {
                addr: 0x2000,
                len: 0
            },
            Segment {
                addr: 0x3000,
                len: 5
            },
        ]
    }

    #[test]
    fn reader_crosses_segments_and_stops_at_end() {
        let mut m = VecMemory::new(0, 0x4000);
        m.write(0x1000, b"abc").unwrap();
        m.write(0x3000, b"defgh").unwrap();
        let s = segs();
        let mut r = ChainReader::new(&s);
        let mut b = [0u8; 4];
        assert!(r.read_exact(&m, &mut b).unwrap());
        assert_eq!(&b, b"abcd");
        let mut rest = [0u8; 10];
        assert_eq!(r.read(&m, &mut rest).unwrap(), 4);
        assert_eq!(&rest[..4], b"efgh");
        assert_eq!(r.remaining(), 0);
    }

    #[test]
    fn writer_respects_limit_and_reserved_tail() {
        let mut m = VecMemory::new(0, 0x4000);
        let s = segs();
        let mut w = ChainWriter::new(&s, 8);
        assert!(w.reserve_tail(1));
        assert_eq!(w.write(&mut m, b"0123456789").unwrap(), 7);
        assert_eq!(&m.as_bytes()[0x1000..0x1003], b"012");
        assert_eq!(&m.as_bytes()[0x3000..0x3005], b"3456\0");
        assert_eq!(w.written(), 7);
        let t = tail_segments(&s, 1).unwrap();
        assert_eq!(
            t,
            alloc::vec![Segment {
                addr: 0x3004,
                len: 1
            }]
        );
        assert!(tail_segments(&s, 9).is_none());
    }

    #[test]
    fn memory_errors_propagate() {
        let mut m = VecMemory::new(0, 0x1000);
        let s = alloc::vec![Segment {
            addr: 0xfff,
            len: 2
        }];
        let mut w = ChainWriter::new(&s, 2);
        assert!(w.write(&mut m, b"xy").is_err());
        assert_eq!(m.as_bytes()[0xfff], 0);
    }
}
