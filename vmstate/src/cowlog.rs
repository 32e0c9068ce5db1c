//! The persistent copy-on-write log of a disk snapshot (`vm snapshot NAME TAG
//! --disk`): the old contents of every guest-disk [`COW_GRANULE`] first written
//! after the snapshot, kept in the snapshot's log extent on the system disk, so a
//! rollback — also after a host reboot — writes them back.
//!
//! **Layout** (little-endian, inside the log extent):
//! * a [`ALIGN`]-byte header block: magic `RAYOSCOW`, version, granule size, disk
//!   count, capacity (data entries), the snapshot's nonce, each logged guest disk's
//!   extent (start, length), the CRC32C of those fields; zero padding. The
//!   registry records the log as the snapshot's disk blob: size [`layout_len`],
//!   CRC the header's.
//! * the index: `capacity + 1` entries of [`ENTRY`] bytes (`kind`, `seq`,
//!   `nonce`, `granule`, the CRC32C of the granule's saved data, the CRC32C of the
//!   entry's fields), zero padding to [`ALIGN`]. Entry `i` has `seq == i`; the
//!   first all-zero entry ends the log and every entry after it must be zero.
//!   Kind [`KIND_GRANULE`] saves a granule (numbered across the logged disks in
//!   order); kind [`KIND_INVALID`] (only last) says the log stopped being
//!   complete — its reserve was full ([`INVALID_FULL`]) or writing it failed
//!   ([`INVALID_IO`]) — so the snapshot can no longer be rolled back to.
//! * the data: `capacity` granules, entry `i`'s at `i * COW_GRANULE`.
//!
//! **Write ordering** ([`log_writes`], before a guest write is started): the old
//! contents of the granules no log holds yet are read and written into each log's
//! data area, **flush**, then the index sectors holding their entries, **flush**;
//! only then does the guest write go to the device. An entry on the disk therefore
//! always has its data on the disk; an entry not on the disk guarded a write that
//! never started. Torn writes are assumed at sector granularity (as the registry
//! assumes): an index sector is rewritten whole with the entries it already held.
//! A power cut leaves a log that is complete for every guest write that started;
//! an entry whose CRC fails is refused, never skipped.
//!
//! **Rollback** ([`CowLog::open`] then [`CowLog::check_data`] then
//! [`CowLog::restore`]): the header and the whole index are validated (magic,
//! version, CRCs, nonce, sequence, granule numbers within the logged disks, no
//! granule twice, the disks those of the VM and inside the system disk), every
//! saved granule's CRC checked — all before a guest disk is touched; an invalid
//! log is refused with nothing changed. Then each saved granule is written back
//! (through `before_write`, so other snapshots' logs keep theirs) and the disk is
//! flushed. The log itself is kept: its entries still hold the snapshot's
//! contents, so the snapshot stays valid for later rollbacks.
//!
//! **Trust.** The CRCs detect corruption, not forgery: anyone who can write the
//! system disk can write the guest disks as well.

use alloc::vec;
use alloc::vec::Vec;

use registry::{Blob, Extent, ExtentIoError};
use vdev::{BlockBackend, BlockError, SECTOR_SIZE};

use crate::format::{FormatError, ALIGN};
use crate::snapshot::COW_GRANULE;
use crate::CrcAppend;

/// The log's magic.
pub const LOG_MAGIC: [u8; 8] = *b"RAYOSCOW";
/// The log's layout version (the only one this build reads).
pub const LOG_VERSION: u32 = 1;
/// Bytes of one index entry.
pub const ENTRY: usize = 32;
/// Entry kind: a saved granule.
pub const KIND_GRANULE: u32 = 1;
/// Entry kind: the log is no longer complete (reason in the `granule` field).
pub const KIND_INVALID: u32 = 2;
/// [`KIND_INVALID`] reason: the reserve was full.
pub const INVALID_FULL: u64 = 1;
/// [`KIND_INVALID`] reason: writing the log failed.
pub const INVALID_IO: u64 = 2;
/// Bytes of the header's fields before the disks.
const FIXED: usize = 8 + 4 + 4 + 4 + 4 + 8;
/// Most data entries a log holds (its index then stays within a few MiB).
pub const MAX_CAPACITY: u32 = 1 << 20;

const GRAN: usize = COW_GRANULE as usize;
const ENTRIES_PER_SECTOR: u64 = SECTOR_SIZE / ENTRY as u64;

/// Bytes of the index of a log holding `capacity` data entries (padded).
fn index_len(capacity: u32) -> u64 {
    ((u64::from(capacity) + 1) * ENTRY as u64).next_multiple_of(ALIGN)
}

/// Offset of the data area.
fn data_offset(capacity: u32) -> u64 {
    ALIGN + index_len(capacity)
}

/// Bytes of a log holding `capacity` data entries.
pub fn layout_len(capacity: u32) -> u64 {
    data_offset(capacity) + u64::from(capacity) * COW_GRANULE
}

/// The most data entries a log of at most `bytes` holds.
pub fn capacity_for(bytes: u64) -> u32 {
    let mut cap = (bytes / COW_GRANULE).min(u64::from(MAX_CAPACITY)) as u32;
    while cap > 0 && layout_len(cap) > bytes {
        cap -= 1;
    }
    cap
}

/// Why a log cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogError {
    /// The log on the disk is not a valid one (what).
    Format(FormatError),
    /// It records that it stopped being complete (its reserve was full, or
    /// writing it failed).
    Invalid(u64),
    /// Reading or writing the system disk failed.
    Io(BlockError),
    /// Not a log: a full copy of the guest disks from slot version 4.
    FullCopy,
}

impl core::fmt::Display for LogError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LogError::Format(e) => write!(f, "{e}"),
            LogError::Invalid(INVALID_FULL) => f.write_str(
                "its disk log's reserve filled up (the guest changed more of its disk since the snapshot than was reserved); it cannot be rolled back to",
            ),
            LogError::Invalid(_) => f.write_str(
                "writing its disk log failed, so the log misses later writes; it cannot be rolled back to",
            ),
            LogError::Io(e) => write!(f, "system disk I/O: {e:?}"),
            LogError::FullCopy => f.write_str(
                "it is a full disk copy written by an older build (slot version 4), which this build does not roll back to; delete it",
            ),
        }
    }
}

impl From<ExtentIoError> for LogError {
    fn from(e: ExtentIoError) -> Self {
        match e {
            ExtentIoError::Io(b) => LogError::Io(b),
            _ => LogError::Format(FormatError::Malformed("disk log extent")),
        }
    }
}

fn malformed(what: &'static str) -> LogError {
    LogError::Format(FormatError::Malformed(what))
}

/// The log's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogHeader {
    /// Data entries the log holds at most.
    pub capacity: u32,
    /// The snapshot's nonce (in every entry: entries of an earlier log in the
    /// same space are not this one's).
    pub nonce: u64,
    /// The logged guest disks, in order.
    pub disks: Vec<Extent>,
}

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}

impl LogHeader {
    /// Granules of every logged disk together.
    pub fn total_granules(&self) -> u64 {
        self.disks.iter().map(|d| d.len.div_ceil(COW_GRANULE)).sum()
    }

    /// The header block ([`ALIGN`] bytes) and its CRC.
    pub fn encode(&self, crc: CrcAppend) -> (Vec<u8>, u32) {
        let mut v = Vec::with_capacity(ALIGN as usize);
        v.extend_from_slice(&LOG_MAGIC);
        v.extend_from_slice(&LOG_VERSION.to_le_bytes());
        v.extend_from_slice(&(COW_GRANULE as u32).to_le_bytes());
        v.extend_from_slice(&(self.disks.len() as u32).to_le_bytes());
        v.extend_from_slice(&self.capacity.to_le_bytes());
        v.extend_from_slice(&self.nonce.to_le_bytes());
        for d in &self.disks {
            v.extend_from_slice(&d.start.to_le_bytes());
            v.extend_from_slice(&d.len.to_le_bytes());
        }
        let c = crc(0, &v);
        v.extend_from_slice(&c.to_le_bytes());
        v.resize(ALIGN as usize, 0);
        (v, c)
    }

    /// Decodes a header block of a log recorded as `blob` on a system disk of
    /// `capacity` bytes: every field checked.
    pub fn decode(
        block: &[u8],
        blob: &Blob,
        disk_capacity: u64,
        crc: CrcAppend,
    ) -> Result<LogHeader, FormatError> {
        if block.len() != ALIGN as usize {
            return Err(FormatError::Malformed("disk log header"));
        }
        if block[..8] != LOG_MAGIC {
            return Err(FormatError::NotAnImage);
        }
        let version = u32_at(block, 8);
        if version != LOG_VERSION {
            return Err(FormatError::Version(version));
        }
        let n = u32_at(block, 16) as usize;
        if u64::from(u32_at(block, 12)) != COW_GRANULE || n == 0 || n > registry::defs::MAX_DISKS {
            return Err(FormatError::Malformed("disk log header"));
        }
        let end = FIXED + 16 * n;
        if crc(0, &block[..end]) != u32_at(block, end) {
            return Err(FormatError::Checksum("disk log header"));
        }
        if u32_at(block, end) != blob.crc32c {
            return Err(FormatError::Checksum("registry"));
        }
        if block[end + 4..].iter().any(|&b| b != 0) {
            return Err(FormatError::Malformed("disk log header padding"));
        }
        let h = LogHeader {
            capacity: u32_at(block, 20),
            nonce: u64_at(block, 24),
            disks: (0..n)
                .map(|i| Extent {
                    start: u64_at(block, FIXED + 16 * i),
                    len: u64_at(block, FIXED + 16 * i + 8),
                })
                .collect(),
        };
        let inside = |e: &Extent| {
            e.len > 0
                && e.start
                    .checked_add(e.len)
                    .is_some_and(|end| end <= disk_capacity)
                && e.start.is_multiple_of(SECTOR_SIZE)
        };
        if !h.disks.iter().all(inside) {
            return Err(FormatError::Malformed("disk log's guest disks"));
        }
        if h.capacity > MAX_CAPACITY
            || layout_len(h.capacity) != blob.size
            || blob.size > blob.extent.len
            || !inside(&blob.extent)
        {
            return Err(FormatError::Malformed("disk log length"));
        }
        Ok(h)
    }
}

/// One index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    kind: u32,
    seq: u32,
    nonce: u64,
    granule: u64,
    data_crc: u32,
}

impl Entry {
    fn encode(&self, crc: CrcAppend) -> [u8; ENTRY] {
        let mut b = [0u8; ENTRY];
        b[0..4].copy_from_slice(&self.kind.to_le_bytes());
        b[4..8].copy_from_slice(&self.seq.to_le_bytes());
        b[8..16].copy_from_slice(&self.nonce.to_le_bytes());
        b[16..24].copy_from_slice(&self.granule.to_le_bytes());
        b[24..28].copy_from_slice(&self.data_crc.to_le_bytes());
        let c = crc(0, &b[..28]);
        b[28..32].copy_from_slice(&c.to_le_bytes());
        b
    }

    fn decode(b: &[u8], crc: CrcAppend) -> Result<Entry, FormatError> {
        if crc(0, &b[..28]) != u32_at(b, 28) {
            return Err(FormatError::Checksum("disk log entry"));
        }
        Ok(Entry {
            kind: u32_at(b, 0),
            seq: u32_at(b, 4),
            nonce: u64_at(b, 8),
            granule: u64_at(b, 16),
            data_crc: u32_at(b, 24),
        })
    }
}

/// A disk snapshot's log, open for appending (el2 keeps one per disk snapshot
/// while the host runs) or for a rollback.
#[derive(Debug, Clone)]
pub struct CowLog {
    extent: Extent,
    header: LogHeader,
    /// The saved granules in entry order.
    entries: Vec<(u64, u32)>,
    /// Bit per granule: saved.
    saved: Vec<u8>,
    /// Why the log is no longer complete, once it is not.
    invalid: Option<u64>,
    /// The index sector holding entry `entries.len()` as on the disk.
    tail: Vec<u8>,
}

fn bit(map: &[u8], i: u64) -> bool {
    map[(i / 8) as usize] & (1 << (i % 8)) != 0
}

impl CowLog {
    /// Starts an empty log in `extent` (zeroed by the registry, as all free
    /// space) for the guest disks `disks`, at most `capacity` entries: writes the
    /// index area zero and the header, flushes. Returns the log and the blob the
    /// registry records for it.
    pub fn create(
        disk: &mut dyn BlockBackend,
        extent: Extent,
        disks: &[Extent],
        capacity: u32,
        nonce: u64,
        crc: CrcAppend,
    ) -> Result<(CowLog, Blob), LogError> {
        let header = LogHeader {
            capacity,
            nonce,
            disks: disks.to_vec(),
        };
        let zero = vec![0u8; index_len(capacity) as usize];
        registry::write_extent(disk, extent, ALIGN, &zero)?;
        let (block, c) = header.encode(crc);
        registry::write_extent(disk, extent, 0, &block)?;
        disk.flush().map_err(LogError::Io)?;
        let blob = Blob {
            extent,
            size: layout_len(capacity),
            crc32c: c,
        };
        Ok((CowLog::empty(extent, header), blob))
    }

    fn empty(extent: Extent, header: LogHeader) -> CowLog {
        let total = header.total_granules();
        CowLog {
            extent,
            saved: vec![0u8; total.div_ceil(8) as usize],
            header,
            entries: Vec::new(),
            invalid: None,
            tail: vec![0u8; SECTOR_SIZE as usize],
        }
    }

    /// Reads and validates the log recorded as `blob` for the guest disks
    /// `disks` (the VM's, as the registry has them now): header and index. A log
    /// that records it stopped being complete opens (see [`Self::invalid`]).
    pub fn open(
        disk: &mut dyn BlockBackend,
        blob: &Blob,
        disks: &[Extent],
        crc: CrcAppend,
    ) -> Result<CowLog, LogError> {
        if blob.size < ALIGN || blob.size > blob.extent.len {
            return Err(malformed("disk log length"));
        }
        let mut hb = vec![0u8; ALIGN as usize];
        registry::read_extent(disk, blob.extent, 0, &mut hb)?;
        let header =
            LogHeader::decode(&hb, blob, disk.capacity(), crc).map_err(LogError::Format)?;
        if header.disks != disks {
            return Err(malformed("disk log's guest disks (not the VM's)"));
        }
        let mut index = vec![0u8; index_len(header.capacity) as usize];
        registry::read_extent(disk, blob.extent, ALIGN, &mut index)?;
        let mut log = CowLog::empty(blob.extent, header);
        let total = log.header.total_granules();
        let slots = log.header.capacity as usize + 1;
        let mut end = None;
        for (i, e) in index.chunks(ENTRY).take(slots).enumerate() {
            if end.is_some() {
                if e.iter().any(|&b| b != 0) {
                    return Err(malformed("disk log index (an entry after its end)"));
                }
                continue;
            }
            if e.iter().all(|&b| b == 0) {
                end = Some(i);
                continue;
            }
            let e = Entry::decode(e, crc).map_err(LogError::Format)?;
            if e.seq as usize != i || e.nonce != log.header.nonce {
                return Err(malformed("disk log entry (sequence or nonce)"));
            }
            if log.invalid.is_some() {
                return Err(malformed(
                    "disk log index (an entry after the invalid mark)",
                ));
            }
            match e.kind {
                KIND_GRANULE if i < slots - 1 => {
                    if e.granule >= total || bit(&log.saved, e.granule) {
                        return Err(malformed("disk log entry (granule)"));
                    }
                    log.saved[(e.granule / 8) as usize] |= 1 << (e.granule % 8);
                    log.entries.push((e.granule, e.data_crc));
                }
                KIND_INVALID if e.granule == INVALID_FULL || e.granule == INVALID_IO => {
                    log.invalid = Some(e.granule)
                }
                _ => return Err(malformed("disk log entry (kind)")),
            }
        }
        if index[slots * ENTRY..].iter().any(|&b| b != 0) {
            return Err(malformed("disk log index padding"));
        }
        let used = log.entries.len() + usize::from(log.invalid.is_some());
        let s = used / ENTRIES_PER_SECTOR as usize * SECTOR_SIZE as usize;
        // (None only past a last-slot invalid mark: nothing is appended then.)
        if let Some(t) = index.get(s..s + SECTOR_SIZE as usize) {
            log.tail.copy_from_slice(t);
        }
        Ok(log)
    }

    /// The header.
    pub fn header(&self) -> &LogHeader {
        &self.header
    }

    /// Why the log stopped being complete ([`INVALID_FULL`], [`INVALID_IO`]), if
    /// it did.
    pub fn invalid(&self) -> Option<u64> {
        self.invalid
    }

    /// Granules saved.
    pub fn saved(&self) -> u64 {
        self.entries.len() as u64
    }

    /// Bytes of saved data, and the most it may hold.
    pub fn data_bytes(&self) -> (u64, u64) {
        (
            self.saved() * COW_GRANULE,
            u64::from(self.header.capacity) * COW_GRANULE,
        )
    }

    /// The log's extent.
    pub fn extent(&self) -> Extent {
        self.extent
    }

    /// The granules of the system-disk range `[offset, offset + len)` that this
    /// log must save: `(granule number, system-disk offset, bytes)`.
    fn needed(&self, offset: u64, len: u64) -> Vec<(u64, u64, usize)> {
        let mut out = Vec::new();
        let end = offset.saturating_add(len);
        let mut base = 0u64;
        for d in &self.header.disks {
            let (lo, hi) = (d.start, d.start + d.len);
            if offset < hi && end > lo {
                let first = (offset.max(lo) - lo) / COW_GRANULE;
                let last = (end.min(hi) - lo).div_ceil(COW_GRANULE);
                for g in first..last {
                    if !bit(&self.saved, base + g) {
                        let at = lo + g * COW_GRANULE;
                        out.push((base + g, at, (hi - at).min(COW_GRANULE) as usize));
                    }
                }
            }
            base += d.len.div_ceil(COW_GRANULE);
        }
        out
    }

    /// Writes entries `from..` (the new ones in `self.entries`, then the invalid
    /// mark if set) into the index: whole sectors, starting with the tail sector.
    fn write_index(
        &mut self,
        disk: &mut dyn BlockBackend,
        from: usize,
        crc: CrcAppend,
    ) -> Result<(), LogError> {
        let mut new: Vec<Entry> = self.entries[from..]
            .iter()
            .enumerate()
            .map(|(k, &(granule, data_crc))| Entry {
                kind: KIND_GRANULE,
                seq: (from + k) as u32,
                nonce: self.header.nonce,
                granule,
                data_crc,
            })
            .collect();
        if let Some(why) = self.invalid {
            new.push(Entry {
                kind: KIND_INVALID,
                seq: self.entries.len() as u32,
                nonce: self.header.nonce,
                granule: why,
                data_crc: 0,
            });
        }
        let first_sector = from as u64 / ENTRIES_PER_SECTOR;
        let end = from + new.len();
        let sectors = (end as u64).div_ceil(ENTRIES_PER_SECTOR) - first_sector;
        let mut buf = vec![0u8; (sectors * SECTOR_SIZE) as usize];
        buf[..SECTOR_SIZE as usize].copy_from_slice(&self.tail);
        let base = (first_sector * ENTRIES_PER_SECTOR) as usize;
        for (k, e) in new.iter().enumerate() {
            let at = (from + k - base) * ENTRY;
            buf[at..at + ENTRY].copy_from_slice(&e.encode(crc));
        }
        registry::write_extent(disk, self.extent, ALIGN + first_sector * SECTOR_SIZE, &buf)?;
        // The sector that will hold the next entry, as it is now on the disk.
        let next = end as u64 / ENTRIES_PER_SECTOR - first_sector;
        self.tail = if next < sectors {
            buf[(next * SECTOR_SIZE) as usize..((next + 1) * SECTOR_SIZE) as usize].to_vec()
        } else {
            vec![0u8; SECTOR_SIZE as usize]
        };
        Ok(())
    }

    /// Reads the data of every saved granule and checks it against its entry's
    /// CRC. Changes nothing.
    pub fn check_data(&self, disk: &mut dyn BlockBackend, crc: CrcAppend) -> Result<(), LogError> {
        const PER_READ: usize = 256;
        let mut buf = vec![0u8; PER_READ * GRAN];
        let data = data_offset(self.header.capacity);
        for (c, chunk) in self.entries.chunks(PER_READ).enumerate() {
            let n = chunk.len() * GRAN;
            let at = data + (c * PER_READ * GRAN) as u64;
            registry::read_extent(disk, self.extent, at, &mut buf[..n])?;
            for (k, &(_, want)) in chunk.iter().enumerate() {
                if crc(0, &buf[k * GRAN..(k + 1) * GRAN]) != want {
                    return Err(LogError::Format(FormatError::Checksum("disk log data")));
                }
            }
        }
        Ok(())
    }

    /// Writes every saved granule back to its guest disk, `before_write(disk,
    /// offset, len)` called first for each (other snapshots' logs); flushes.
    /// Refuses (changing nothing) a log that records it is incomplete. Call after
    /// [`Self::check_data`]; the data is checked again as it is read. Returns the
    /// bytes written.
    pub fn restore(
        &self,
        disk: &mut dyn BlockBackend,
        crc: CrcAppend,
        before_write: &mut dyn FnMut(&mut dyn BlockBackend, u64, u64),
    ) -> Result<u64, LogError> {
        if let Some(why) = self.invalid {
            return Err(LogError::Invalid(why));
        }
        let data = data_offset(self.header.capacity);
        let mut buf = vec![0u8; GRAN];
        let mut written = 0;
        for (i, &(g, want)) in self.entries.iter().enumerate() {
            registry::read_extent(disk, self.extent, data + (i * GRAN) as u64, &mut buf)?;
            if crc(0, &buf) != want {
                return Err(LogError::Format(FormatError::Checksum("disk log data")));
            }
            let (at, n) = self.locate(g);
            before_write(disk, at, n as u64);
            disk.write_at(at, &buf[..n]).map_err(LogError::Io)?;
            written += n as u64;
        }
        disk.flush().map_err(LogError::Io)?;
        Ok(written)
    }

    /// Granule `g`'s system-disk offset and length.
    fn locate(&self, mut g: u64) -> (u64, usize) {
        for d in &self.header.disks {
            let n = d.len.div_ceil(COW_GRANULE);
            if g < n {
                let at = d.start + g * COW_GRANULE;
                return (at, (d.start + d.len - at).min(COW_GRANULE) as usize);
            }
            g -= n;
        }
        (0, 0)
    }
}

/// Before `len` bytes at byte `offset` of the system disk are written: saves, in
/// every log in `logs` still complete, the old contents of each granule it does
/// not hold yet, durably (module documentation: data, flush, index, flush). A log
/// whose reserve cannot hold them gets the [`INVALID_FULL`] mark instead (durable
/// before the write too), one whose writing fails [`INVALID_IO`] if that can
/// still be written. Returns the logs (indexes into `logs`) that became invalid
/// with this call. The write itself always goes ahead.
pub fn log_writes(
    disk: &mut dyn BlockBackend,
    logs: &mut [CowLog],
    offset: u64,
    len: u64,
    crc: CrcAppend,
) -> Vec<usize> {
    let mut broke = Vec::new();
    let mut pending: Vec<(usize, usize)> = Vec::new();
    let mut old = vec![0u8; GRAN];
    for (li, log) in logs.iter_mut().enumerate() {
        if log.invalid.is_some() || len == 0 {
            continue;
        }
        let need = log.needed(offset, len);
        if need.is_empty() {
            continue;
        }
        let from = log.entries.len();
        if from + need.len() > log.header.capacity as usize {
            log.invalid = Some(INVALID_FULL);
            broke.push(li);
            pending.push((li, from));
            continue;
        }
        let mut data = Vec::with_capacity(need.len() * GRAN);
        let mut ok = true;
        for &(_, at, n) in &need {
            old.fill(0);
            if disk.read_at(at, &mut old[..n]).is_err() {
                ok = false;
                break;
            }
            data.extend_from_slice(&old);
        }
        let at = data_offset(log.header.capacity) + (from * GRAN) as u64;
        if ok && registry::write_extent(disk, log.extent, at, &data).is_ok() {
            for (k, &(g, _, _)) in need.iter().enumerate() {
                log.saved[(g / 8) as usize] |= 1 << (g % 8);
                log.entries
                    .push((g, crc(0, &data[k * GRAN..(k + 1) * GRAN])));
            }
        } else {
            log.invalid = Some(INVALID_IO);
            broke.push(li);
        }
        pending.push((li, from));
    }
    if pending.is_empty() {
        return broke;
    }
    // The data before the entries that point at it.
    let flushed = disk.flush().is_ok();
    for &(li, from) in &pending {
        let log = &mut logs[li];
        if !flushed && log.invalid.is_none() {
            log.entries.truncate(from);
            log.invalid = Some(INVALID_IO);
            broke.push(li);
        }
        if log.write_index(disk, from, crc).is_err() && log.invalid.is_none() {
            log.invalid = Some(INVALID_IO);
            broke.push(li);
        }
    }
    // The entries before the guest write. A failure here leaves entries that may
    // not be durable: the logs are marked invalid (best effort) in memory too.
    if disk.flush().is_err() {
        for &(li, _) in &pending {
            if logs[li].invalid.is_none() {
                logs[li].invalid = Some(INVALID_IO);
                broke.push(li);
            }
        }
    }
    broke
}

/// A system disk whose every write goes through [`log_writes`] first: for
/// writes to the guest disks that do not come from the guest (an in-memory
/// snapshot's rollback), so the disk snapshots' logs see them too.
pub struct Logged<'a> {
    pub disk: &'a mut dyn BlockBackend,
    pub logs: &'a mut [CowLog],
    pub crc: CrcAppend,
    /// Logs that became invalid (indexes into `logs`).
    pub broke: Vec<usize>,
}

impl BlockBackend for Logged<'_> {
    fn capacity(&self) -> u64 {
        self.disk.capacity()
    }
    fn read_only(&self) -> bool {
        self.disk.read_only()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.disk.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        let broke = log_writes(self.disk, self.logs, offset, data.len() as u64, self.crc);
        self.broke.extend(broke);
        self.disk.write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        self.disk.flush()
    }
}

#[cfg(test)]
mod tests;
