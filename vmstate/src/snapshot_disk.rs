//! Snapshots on the system disk (`vm snapshot NAME TAG --disk`): they survive a
//! host reboot. A disk snapshot is a registry entry ([`registry::DiskSnapshot`])
//! holding two blobs in extents of its own: the **image** — RAM, vCPUs, devices and
//! guest time in the suspend format, written by the same [`crate::store::write_image`]
//! (never from a base: every page with data is written, and the dirty log behind a
//! suspend's [`crate::store::Base`] is not asked) — and the **disk copy**, a sparse copy of the VM's writable guest disks (the
//! [`COW_GRANULE`]s with any non-zero byte, plus a bitmap of them).
//!
//! The disk copy is a full (sparse) copy rather than a log of the writes since the
//! snapshot: a copy-on-write log that survives a power cut would need every first
//! write to a granule to wait for its log entry to be durable and a recovery scan
//! at boot; the copy needs neither. Its cost is bounded by the guests' disks and
//! reported by `vm snapshots`.
//!
//! **Commit protocol** ([`take`]), the suspend rules: (1) one registry commit
//! records the entry with both extents allocated and both sizes 0 (incomplete; a
//! host that stops here leaves an incomplete entry, which the next [`take`] or
//! [`remove_incomplete`] deletes, and which is never listed or rolled back to);
//! (2) the image is written and flushed, its header last, flushed
//! ([`crate::store::write_image`]); (3) the disk copy's data and bitmap, flush, its
//! header, flush; (4) one registry commit sets both sizes and CRCs. A power cut
//! anywhere leaves the previous registry or the complete snapshot.
//!
//! **Disk copy layout** (little-endian): a [`ALIGN`]-byte header block (magic
//! `RAYOSDSK`, version, granule size, disk count, reserved zero, the number of data
//! granules, the CRC32C of the bitmap and of the data, each disk's length, then the
//! CRC32C of all those fields; zero padding), the bitmap (one bit per granule of
//! every disk in order, bit `i % 8` of byte `i / 8`; zero padding to [`ALIGN`]),
//! then the data granules in order. The registry blob's size is the copy's length
//! and its CRC the header's, which covers the others.
//!
//! **Rollback** ([`open`], then [`restore_disks`]): the image is opened and checked
//! as resume checks one ([`crate::store::open_saved`]), the disk copy's header,
//! bitmap and data are read and checked against their CRCs and the VM's disks
//! before anything is changed; then each 1 MiB of each disk is rebuilt from the
//! copy and written only where it differs. RAM comes back as a resume brings it,
//! through [`crate::store::restore_ram`] (each block's XXH64 checked).

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use registry::{Blob, DiskSnapshot, Extent, Registry, RegistryError, Uuid, VmRecord};
use vdev::{BlockBackend, BlockError};

use crate::format::{Fingerprint, FormatError, ALIGN};
use crate::snapshot::COW_GRANULE;
use crate::store::{
    open_saved, write_image, ColdReason, OpenedState, RamIo, SuspendError, SuspendInput,
    SuspendReport,
};
use crate::CrcAppend;

/// Bytes of a guest disk or of the disk copy moved per request.
pub const CHUNK: usize = 1 << 20;
/// The disk copy's magic.
pub const COPY_MAGIC: [u8; 8] = *b"RAYOSDSK";
/// The disk copy's layout version (the only one this build reads).
pub const COPY_VERSION: u32 = 1;
/// Bytes of the fields before the header's CRC with no disk.
const FIXED_FIELDS: usize = 8 + 4 + 4 + 4 + 4 + 8 + 4 + 4;

/// Why a disk snapshot could not be taken, rolled back to or deleted.
#[derive(Debug, Clone, PartialEq)]
pub enum DiskSnapshotError {
    /// The VM has a disk snapshot with this tag.
    Exists,
    /// The VM has [`registry::defs::MAX_SNAPSHOTS`] disk snapshots.
    TooMany,
    /// No complete disk snapshot has this tag.
    NoSuch,
    /// Writing it failed (the registry records no complete snapshot for it).
    Write(SuspendError),
    /// Its image or disk copy is refused: nothing was changed.
    Refused(ColdReason),
    /// Reading or writing a guest disk failed during a rollback.
    Io(BlockError),
}

impl fmt::Display for DiskSnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskSnapshotError::Exists => f.write_str("a disk snapshot has this tag"),
            DiskSnapshotError::TooMany => write!(
                f,
                "{} disk snapshots exist already; delete one first",
                registry::defs::MAX_SNAPSHOTS
            ),
            DiskSnapshotError::NoSuch => f.write_str("no disk snapshot has this tag"),
            DiskSnapshotError::Write(e) => write!(f, "{e}"),
            DiskSnapshotError::Refused(ColdReason::Format(e)) => write!(f, "{e}"),
            DiskSnapshotError::Refused(e) => write!(f, "{e}"),
            DiskSnapshotError::Io(e) => write!(f, "guest disk I/O: {e:?}"),
        }
    }
}

impl From<SuspendError> for DiskSnapshotError {
    fn from(e: SuspendError) -> Self {
        DiskSnapshotError::Write(e)
    }
}

impl From<RegistryError> for DiskSnapshotError {
    fn from(e: RegistryError) -> Self {
        DiskSnapshotError::Write(SuspendError::Registry(e))
    }
}

/// The header of a disk copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyHeader {
    /// Length in bytes of each guest disk copied, in order.
    pub disks: Vec<u64>,
    /// Granules with data (bits set in the bitmap).
    pub data_granules: u64,
    pub bitmap_crc: u32,
    pub data_crc: u32,
}

fn granules(len: u64) -> u64 {
    len.div_ceil(COW_GRANULE)
}

impl CopyHeader {
    /// Granules of every disk together (bits in the bitmap).
    pub fn total_granules(&self) -> u64 {
        self.disks.iter().map(|&l| granules(l)).sum()
    }

    /// Bytes of the bitmap (unpadded).
    pub fn bitmap_len(&self) -> u64 {
        self.total_granules().div_ceil(8)
    }

    /// Offset of the data granules.
    pub fn data_offset(&self) -> u64 {
        ALIGN + self.bitmap_len().next_multiple_of(ALIGN)
    }

    /// The copy's length.
    pub fn len(&self) -> u64 {
        self.data_offset() + self.data_granules * COW_GRANULE
    }

    /// Whether the copy holds no granule.
    pub fn is_empty(&self) -> bool {
        self.data_granules == 0
    }

    /// The encoded fields, the CRC32C of them last.
    pub fn encode(&self, crc: CrcAppend) -> Vec<u8> {
        let mut v = Vec::with_capacity(FIXED_FIELDS + 8 * self.disks.len() + 4);
        v.extend_from_slice(&COPY_MAGIC);
        v.extend_from_slice(&COPY_VERSION.to_le_bytes());
        v.extend_from_slice(&(COW_GRANULE as u32).to_le_bytes());
        v.extend_from_slice(&(self.disks.len() as u32).to_le_bytes());
        v.extend_from_slice(&0u32.to_le_bytes());
        v.extend_from_slice(&self.data_granules.to_le_bytes());
        v.extend_from_slice(&self.bitmap_crc.to_le_bytes());
        v.extend_from_slice(&self.data_crc.to_le_bytes());
        for d in &self.disks {
            v.extend_from_slice(&d.to_le_bytes());
        }
        let c = crc(0, &v);
        v.extend_from_slice(&c.to_le_bytes());
        v
    }

    /// The CRC32C the registry records for the copy.
    pub fn crc(&self, crc: CrcAppend) -> u32 {
        let v = self.encode(crc);
        u32::from_le_bytes([
            v[v.len() - 4],
            v[v.len() - 3],
            v[v.len() - 2],
            v[v.len() - 1],
        ])
    }

    /// Decodes a header block (`block`, [`ALIGN`] bytes) of a copy recorded with
    /// `blob`: every field checked, the padding zero, the length `blob.size`.
    pub fn decode(block: &[u8], blob: &Blob, crc: CrcAppend) -> Result<CopyHeader, FormatError> {
        if block.len() != ALIGN as usize {
            return Err(FormatError::Malformed("disk copy header"));
        }
        if block[..8] != COPY_MAGIC {
            return Err(FormatError::NotAnImage);
        }
        let u32_at =
            |o: usize| u32::from_le_bytes([block[o], block[o + 1], block[o + 2], block[o + 3]]);
        let u64_at = |o: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&block[o..o + 8]);
            u64::from_le_bytes(b)
        };
        let version = u32_at(8);
        if version != COPY_VERSION {
            return Err(FormatError::Version(version));
        }
        let n = u32_at(16) as usize;
        if u32_at(12) as u64 != COW_GRANULE
            || u32_at(20) != 0
            || n == 0
            || n > registry::defs::MAX_DISKS
        {
            return Err(FormatError::Malformed("disk copy header"));
        }
        let end = FIXED_FIELDS + 8 * n;
        let h = CopyHeader {
            disks: (0..n).map(|i| u64_at(FIXED_FIELDS + 8 * i)).collect(),
            data_granules: u64_at(24),
            bitmap_crc: u32_at(32),
            data_crc: u32_at(36),
        };
        if crc(0, &block[..end]) != u32_at(end) {
            return Err(FormatError::Checksum("disk copy header"));
        }
        if u32_at(end) != blob.crc32c {
            return Err(FormatError::Checksum("registry"));
        }
        if block[end + 4..].iter().any(|&b| b != 0) {
            return Err(FormatError::Malformed("disk copy header padding"));
        }
        let total = h.total_granules();
        // Every disk is at least a granule and no larger than the system disk
        // could hold; the lengths and counts cannot overflow below.
        if h.disks.iter().any(|&d| d == 0 || d > 1 << 56) || h.data_granules > total {
            return Err(FormatError::Malformed("disk copy lengths"));
        }
        if h.len() != blob.size || blob.size > blob.extent.len {
            return Err(FormatError::Malformed("disk copy length"));
        }
        Ok(h)
    }
}

fn bit(map: &[u8], i: u64) -> bool {
    map[(i / 8) as usize] & (1 << (i % 8)) != 0
}

fn io(e: registry::ExtentIoError) -> SuspendError {
    SuspendError::Registry(RegistryError::from(e))
}

/// The extents of the VM's guest disks a snapshot copies: the writable ones.
pub fn copied_disks(rec: &VmRecord) -> Vec<Extent> {
    rec.disks
        .iter()
        .filter(|d| !d.read_only)
        .map(|d| d.extent)
        .collect()
}

/// Reads every granule of `disks` and returns the bitmap of those with data.
fn scan(disk: &mut dyn BlockBackend, disks: &[Extent]) -> Result<(Vec<u8>, u64), SuspendError> {
    let total: u64 = disks.iter().map(|d| granules(d.len)).sum();
    let mut map = vec![0u8; total.div_ceil(8) as usize];
    let mut buf = vec![0u8; CHUNK];
    let (mut g, mut set) = (0u64, 0u64);
    for d in disks {
        let mut at = 0;
        while at < d.len {
            let n = (CHUNK as u64).min(d.len - at) as usize;
            registry::read_extent(disk, *d, at, &mut buf[..n]).map_err(io)?;
            for gran in buf[..n].chunks(COW_GRANULE as usize) {
                if gran.iter().any(|&b| b != 0) {
                    map[(g / 8) as usize] |= 1 << (g % 8);
                    set += 1;
                }
                g += 1;
            }
            at += n as u64;
        }
    }
    Ok((map, set))
}

/// Writes the copy of `disks` (bitmap `map`, `set` granules with data) into
/// `into`: data, bitmap, flush, header, flush. Returns the header.
fn write_copy(
    disk: &mut dyn BlockBackend,
    disks: &[Extent],
    map: &[u8],
    set: u64,
    into: Extent,
    crc: CrcAppend,
) -> Result<CopyHeader, SuspendError> {
    let mut h = CopyHeader {
        disks: disks.iter().map(|d| d.len).collect(),
        data_granules: set,
        bitmap_crc: crc(0, map),
        data_crc: 0,
    };
    let mut out = Vec::with_capacity(CHUNK);
    let mut buf = vec![0u8; CHUNK];
    let mut at_out = h.data_offset();
    let mut g = 0u64;
    for d in disks {
        let mut at = 0;
        while at < d.len {
            let n = (CHUNK as u64).min(d.len - at);
            let count = granules(n);
            if (g..g + count).any(|i| bit(map, i)) {
                registry::read_extent(disk, *d, at, &mut buf[..n as usize]).map_err(io)?;
                for (k, gran) in buf[..n as usize].chunks(COW_GRANULE as usize).enumerate() {
                    if bit(map, g + k as u64) {
                        out.extend_from_slice(gran);
                        out.resize(out.len().next_multiple_of(COW_GRANULE as usize), 0);
                    }
                }
                if out.len() >= CHUNK {
                    h.data_crc = crc(h.data_crc, &out);
                    registry::write_extent(disk, into, at_out, &out).map_err(io)?;
                    at_out += out.len() as u64;
                    out.clear();
                }
            }
            g += count;
            at += n;
        }
    }
    if !out.is_empty() {
        h.data_crc = crc(h.data_crc, &out);
        registry::write_extent(disk, into, at_out, &out).map_err(io)?;
    }
    let mut padded = map.to_vec();
    padded.resize(padded.len().next_multiple_of(ALIGN as usize), 0);
    registry::write_extent(disk, into, ALIGN, &padded).map_err(io)?;
    disk.flush()?;
    let mut hb = h.encode(crc);
    hb.resize(ALIGN as usize, 0);
    registry::write_extent(disk, into, 0, &hb).map_err(io)?;
    disk.flush()?;
    Ok(h)
}

/// What [`take`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeReport {
    pub image: SuspendReport,
    /// Bytes of the disk copy, and its granules with data.
    pub disk_bytes: u64,
    pub disk_granules: u64,
}

impl TakeReport {
    /// System-disk bytes the snapshot takes (its two blobs).
    pub fn bytes(&self) -> u64 {
        self.image.bytes + self.disk_bytes
    }
}

/// Deletes the VM's incomplete disk snapshots (left by a host that stopped while
/// taking one): one registry commit, which zeroes their extents. Returns how many.
pub fn remove_incomplete(
    disk: &mut dyn BlockBackend,
    reg: &mut Registry,
    uuid: Uuid,
) -> Result<usize, RegistryError> {
    let n = reg
        .vm(uuid)
        .map_or(0, |r| r.snapshots.iter().filter(|s| incomplete(s)).count());
    if n > 0 {
        reg.update_vm(disk, uuid, |r| r.snapshots.retain(|s| !incomplete(s)))?;
    }
    Ok(n)
}

fn incomplete(s: &DiskSnapshot) -> bool {
    s.image.size == 0 || s.disk.size == 0
}

/// The VM's complete disk snapshots, oldest first, with the system-disk bytes
/// each takes.
pub fn list(rec: &VmRecord) -> Vec<(String, u64)> {
    rec.snapshots
        .iter()
        .filter(|s| !incomplete(s))
        .map(|s| (s.tag.clone(), s.image.extent.len + s.disk.extent.len))
        .collect()
}

/// Takes disk snapshot `tag` of the VM `input.uuid` (paused, its guest disks
/// quiet): the image of `input` and guest RAM (through `io`, whose disk is the
/// system disk), and a copy of its writable guest disks, committed as the module
/// documentation says.
pub fn take(
    io: &mut dyn RamIo,
    reg: &mut Registry,
    tag: &str,
    input: &SuspendInput<'_>,
    crc: CrcAppend,
) -> Result<TakeReport, DiskSnapshotError> {
    let uuid = input.uuid;
    let disk = io.disk();
    remove_incomplete(disk, reg, uuid)?;
    let rec = reg.vm(uuid).ok_or(SuspendError::NoRecord)?;
    if rec.snapshots.iter().any(|s| s.tag == tag) {
        return Err(DiskSnapshotError::Exists);
    }
    if rec.snapshots.len() >= registry::defs::MAX_SNAPSHOTS {
        return Err(DiskSnapshotError::TooMany);
    }
    let disks = copied_disks(rec);
    let (map, set) = scan(disk, &disks)?;
    let copy_len = CopyHeader {
        disks: disks.iter().map(|d| d.len).collect(),
        data_granules: set,
        bitmap_crc: 0,
        data_crc: 0,
    }
    .len();
    let mut copy_extent = Extent::EMPTY;
    // No base: the snapshot's image goes to an extent of its own.
    let written = write_image(io, input, None, crc, |disk, room| {
        // 1. Both extents recorded, both sizes 0: nothing lands in free space.
        let capacity = room.need;
        let image = reg
            .allocate(capacity, &[])
            .ok_or(RegistryError::NoSpace { needed: capacity })?;
        copy_extent = reg
            .allocate(copy_len, &[image])
            .ok_or(RegistryError::NoSpace { needed: copy_len })?;
        let entry = DiskSnapshot {
            tag: String::from(tag),
            image: Blob::empty_in(image),
            disk: Blob::empty_in(copy_extent),
        };
        reg.update_vm(disk, uuid, |r| r.snapshots.push(entry))?;
        Ok(image)
    });
    let disk = io.disk();
    let done = written.and_then(|(image, image_crc)| {
        let h = write_copy(disk, &disks, &map, set, copy_extent, crc)?;
        // 4. The one commit that makes the snapshot complete.
        reg.update_vm(disk, uuid, |r| {
            if let Some(s) = r.snapshots.iter_mut().find(|s| s.tag == tag) {
                s.image.size = image.bytes;
                s.image.crc32c = image_crc;
                s.disk.size = h.len();
                s.disk.crc32c = h.crc(crc);
            }
        })?;
        Ok(TakeReport {
            image,
            disk_bytes: h.len(),
            disk_granules: set,
        })
    });
    if done.is_err() {
        // Best effort: an entry left incomplete is removed by the next take.
        let _ = remove_incomplete(disk, reg, uuid);
    }
    Ok(done?)
}

/// Deletes the VM's disk snapshot `tag` (one registry commit; its extents are
/// zeroed).
pub fn delete(
    disk: &mut dyn BlockBackend,
    reg: &mut Registry,
    uuid: Uuid,
    tag: &str,
) -> Result<(), DiskSnapshotError> {
    let rec = reg.vm(uuid).ok_or(SuspendError::NoRecord)?;
    if !rec.snapshots.iter().any(|s| s.tag == tag) {
        return Err(DiskSnapshotError::NoSuch);
    }
    reg.update_vm(disk, uuid, |r| r.snapshots.retain(|s| s.tag != tag))?;
    Ok(())
}

/// A disk snapshot opened for a rollback: its image read and checked up to the
/// RAM data, its disk copy's header and bitmap checked (and its data's CRC).
#[derive(Debug)]
pub struct OpenedSnapshot {
    pub image: OpenedState,
    pub copy: CopyHeader,
    copy_blob: Blob,
    map: Vec<u8>,
    disks: Vec<Extent>,
}

/// Opens the VM's disk snapshot `tag` for a rollback into the VM as it is
/// (`expected`, counter frequency `cntfrq`): everything but the image's RAM data
/// is read and checked here (that is checked as it is restored), the disk copy
/// completely. Changes nothing.
pub fn open(
    disk: &mut dyn BlockBackend,
    reg: &Registry,
    uuid: Uuid,
    tag: &str,
    expected: &Fingerprint,
    cntfrq: u64,
    crc: CrcAppend,
) -> Result<OpenedSnapshot, DiskSnapshotError> {
    let rec = reg.vm(uuid).ok_or(SuspendError::NoRecord)?;
    let snap = rec
        .snapshots
        .iter()
        .find(|s| s.tag == tag && !incomplete(s))
        .ok_or(DiskSnapshotError::NoSuch)?;
    let refused = |e: FormatError| DiskSnapshotError::Refused(ColdReason::Format(e));
    let image =
        open_saved(disk, snap.image, expected, cntfrq, crc).map_err(DiskSnapshotError::Refused)?;
    let blob = snap.disk;
    if blob.size < ALIGN || blob.size > blob.extent.len {
        return Err(refused(FormatError::Malformed("disk copy length")));
    }
    let unreadable = |_| DiskSnapshotError::Refused(ColdReason::Unreadable);
    let mut hb = vec![0u8; ALIGN as usize];
    registry::read_extent(disk, blob.extent, 0, &mut hb).map_err(unreadable)?;
    let copy = CopyHeader::decode(&hb, &blob, crc).map_err(refused)?;
    let disks = copied_disks(rec);
    if copy.disks != disks.iter().map(|d| d.len).collect::<Vec<_>>() {
        return Err(DiskSnapshotError::Refused(ColdReason::ConfigMismatch(
            "guest disks",
        )));
    }
    let mut map = vec![0u8; (copy.data_offset() - ALIGN) as usize];
    registry::read_extent(disk, blob.extent, ALIGN, &mut map).map_err(unreadable)?;
    let bl = copy.bitmap_len() as usize;
    if crc(0, &map[..bl]) != copy.bitmap_crc {
        return Err(refused(FormatError::Checksum("disk copy bitmap")));
    }
    let total = copy.total_granules();
    let set = (0..total).filter(|&i| bit(&map, i)).count() as u64;
    if set != copy.data_granules
        || map[bl..].iter().any(|&b| b != 0)
        || (total % 8 != 0 && map[bl - 1] >> (total % 8) != 0)
    {
        return Err(refused(FormatError::Malformed("disk copy bitmap")));
    }
    map.truncate(bl);
    // The data, checked before any guest disk is touched.
    let mut buf = vec![0u8; CHUNK];
    let (mut at, end, mut sum) = (copy.data_offset(), copy.len(), 0);
    while at < end {
        let n = (CHUNK as u64).min(end - at) as usize;
        registry::read_extent(disk, blob.extent, at, &mut buf[..n]).map_err(unreadable)?;
        sum = crc(sum, &buf[..n]);
        at += n as u64;
    }
    if sum != copy.data_crc {
        return Err(refused(FormatError::Checksum("disk copy data")));
    }
    Ok(OpenedSnapshot {
        image,
        copy,
        copy_blob: blob,
        map,
        disks,
    })
}

/// Writes the opened snapshot's disk copy back over the VM's guest disks: each
/// [`CHUNK`] rebuilt (granules with data from the copy, the others zero), read,
/// and written only where it differs, `before_write(disk, offset, len)` called
/// first (the in-memory snapshots' copy-on-write log). Flushes. On an error the
/// disks hold part of the snapshot.
pub fn restore_disks(
    disk: &mut dyn BlockBackend,
    s: &OpenedSnapshot,
    before_write: &mut dyn FnMut(&mut dyn BlockBackend, u64, u64, Extent),
) -> Result<u64, DiskSnapshotError> {
    let gs = COW_GRANULE as usize;
    let mut want = vec![0u8; CHUNK];
    let mut have = vec![0u8; CHUNK];
    let mut data = vec![0u8; CHUNK];
    let mut data_at = s.copy.data_offset();
    let mut g = 0u64;
    let mut written = 0u64;
    let ioe = |e: registry::ExtentIoError| match e {
        registry::ExtentIoError::Io(b) => DiskSnapshotError::Io(b),
        _ => DiskSnapshotError::Io(BlockError::OutOfRange),
    };
    for d in &s.disks {
        let mut at = 0;
        while at < d.len {
            let n = (CHUNK as u64).min(d.len - at) as usize;
            let count = granules(n as u64);
            let with_data = (g..g + count).filter(|&i| bit(&s.map, i)).count();
            if with_data > 0 {
                let len = with_data * gs;
                registry::read_extent(disk, s.copy_blob.extent, data_at, &mut data[..len])
                    .map_err(ioe)?;
                data_at += len as u64;
            }
            let mut next = 0;
            for k in 0..count as usize {
                let dst = &mut want[k * gs..((k + 1) * gs).min(n)];
                if bit(&s.map, g + k as u64) {
                    dst.copy_from_slice(&data[next * gs..next * gs + dst.len()]);
                    next += 1;
                } else {
                    dst.fill(0);
                }
            }
            registry::read_extent(disk, *d, at, &mut have[..n]).map_err(ioe)?;
            if want[..n] != have[..n] {
                let off = d.start + at;
                before_write(disk, off, n as u64, *d);
                registry::write_extent(disk, *d, at, &want[..n]).map_err(ioe)?;
                written += n as u64;
            }
            g += count;
            at += n as u64;
        }
    }
    disk.flush().map_err(DiskSnapshotError::Io)?;
    Ok(written)
}

#[cfg(test)]
mod tests;
