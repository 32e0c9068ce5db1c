//! Snapshots on the system disk (`vm snapshot NAME TAG --disk`): they survive a
//! host reboot. A disk snapshot is a registry entry ([`registry::DiskSnapshot`])
//! holding two blobs in extents of its own: the **image** — RAM, vCPUs, devices and
//! guest time in the suspend format, written by the same [`crate::store::write_image`]
//! (never from a base: every page with data is written, and the dirty log behind a
//! suspend's [`crate::store::Base`] is not asked) — and the **disk log**, a
//! persistent copy-on-write log of the VM's writable guest disks
//! ([`crate::cowlog`]): empty when the snapshot is taken, extended (durably, before
//! the write starts) by every later guest write to a granule it does not hold yet,
//! within a reserve fixed at the snapshot. A log whose reserve fills up records so
//! and the snapshot can no longer be rolled back to (`vm snapshots` says so); it is
//! never rolled back to with changes missing.
//!
//! **Commit protocol** ([`take`]), the suspend rules: (1) one registry commit
//! records the entry with both extents allocated and both sizes 0 (incomplete; a
//! host that stops here leaves an incomplete entry, which the next [`take`] or
//! [`remove_incomplete`] deletes, and which is never listed or rolled back to);
//! (2) the image is written and flushed, its header last, flushed
//! ([`crate::store::write_image`]); (3) the log's empty index and header, flush;
//! (4) one registry commit sets both sizes and CRCs. A power cut anywhere leaves
//! the previous registry or the complete snapshot; the guest runs on only after
//! (4), with the log in place.
//!
//! **Rollback** ([`open`], then [`restore_disks`]): the image is opened and checked
//! as resume checks one ([`crate::store::open_saved`]), the log's header, index
//! and saved data checked before anything is changed; then the saved granules are
//! written back. RAM comes back as a resume brings it, through
//! [`crate::store::restore_ram`] (each block's XXH64 checked). Disk snapshots of
//! slot version 4 (a full copy of the guest disks, magic `RAYOSDSK`) are refused.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use registry::{Blob, DiskSnapshot, Extent, Registry, RegistryError, Uuid, VmRecord};
use vdev::{BlockBackend, BlockError};

use crate::cowlog::{self, CowLog, LogError};
use crate::format::Fingerprint;
use crate::store::{
    open_saved, write_image, ColdReason, OpenedState, RamIo, SuspendError, SuspendInput,
    SuspendReport,
};
use crate::CrcAppend;

/// The magic of a slot-version-4 full disk copy (refused).
const COPY_MAGIC: [u8; 8] = *b"RAYOSDSK";

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
    /// Its disk log is refused (or writing a guest disk failed during a
    /// rollback).
    Log(LogError),
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
            DiskSnapshotError::Log(e) => write!(f, "{e}"),
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

/// The extents of the VM's guest disks a snapshot copies: the writable ones.
pub fn copied_disks(rec: &VmRecord) -> Vec<Extent> {
    rec.disks
        .iter()
        .filter(|d| !d.read_only)
        .map(|d| d.extent)
        .collect()
}

/// What [`take`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TakeReport {
    pub image: SuspendReport,
    /// Bytes of the log's extent, and of guest-disk data it may hold.
    pub log_bytes: u64,
    pub log_reserve: u64,
}

impl TakeReport {
    /// System-disk bytes the snapshot takes (its two blobs).
    pub fn bytes(&self) -> u64 {
        self.image.bytes + self.log_bytes
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

/// One complete disk snapshot as the registry records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub tag: String,
    /// Bytes of its RAM/device image.
    pub image_bytes: u64,
    /// Its disk log's blob.
    pub log: Blob,
}

/// The VM's complete disk snapshots, oldest first.
pub fn list(rec: &VmRecord) -> Vec<Listed> {
    rec.snapshots
        .iter()
        .filter(|s| !incomplete(s))
        .map(|s| Listed {
            tag: s.tag.clone(),
            image_bytes: s.image.size,
            log: s.disk,
        })
        .collect()
}

/// Opens the log of every complete disk snapshot of every VM in `reg` (at boot,
/// before any guest writes): `(VM, tag, the log or why it is refused)`.
pub fn open_logs(
    disk: &mut dyn BlockBackend,
    reg: &Registry,
    crc: CrcAppend,
) -> Vec<(Uuid, String, Result<CowLog, LogError>)> {
    let mut out = Vec::new();
    for rec in reg.vms() {
        let disks = copied_disks(rec);
        for s in rec.snapshots.iter().filter(|s| !incomplete(s)) {
            let log = open_log(disk, &s.disk, &disks, crc);
            out.push((rec.uuid, s.tag.clone(), log));
        }
    }
    out
}

fn open_log(
    disk: &mut dyn BlockBackend,
    blob: &Blob,
    disks: &[Extent],
    crc: CrcAppend,
) -> Result<CowLog, LogError> {
    // Whole sectors only: the system disk's driver reads nothing smaller.
    let mut first = [0u8; vdev::SECTOR_SIZE as usize];
    if blob.extent.len >= vdev::SECTOR_SIZE {
        registry::read_extent(disk, blob.extent, 0, &mut first)?;
        if first[..8] == COPY_MAGIC {
            return Err(LogError::FullCopy);
        }
    }
    CowLog::open(disk, blob, disks, crc)
}

/// Takes disk snapshot `tag` of the VM `input.uuid` (paused, its guest disks
/// quiet): the image of `input` and guest RAM (through `io`, whose disk is the
/// system disk), and an empty log of its writable guest disks reserving
/// `reserve` bytes (at least one granule), committed as the module
/// documentation says. Returns the log, which must see every guest write from now
/// on ([`crate::cowlog::log_writes`]).
pub fn take(
    io: &mut dyn RamIo,
    reg: &mut Registry,
    tag: &str,
    input: &SuspendInput<'_>,
    reserve: u64,
    nonce: u64,
    crc: CrcAppend,
) -> Result<(TakeReport, CowLog), DiskSnapshotError> {
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
    if disks.is_empty() {
        return Err(DiskSnapshotError::Write(SuspendError::NoRecord));
    }
    let capacity = cowlog::capacity_for(reserve).max(1);
    let log_len = cowlog::layout_len(capacity);
    let mut log_extent = Extent::EMPTY;
    // No base: the snapshot's image goes to an extent of its own.
    let written = write_image(io, input, None, crc, |disk, room| {
        // 1. Both extents recorded, both sizes 0: nothing lands in free space.
        let need = room.need;
        let image = reg
            .allocate(need, &[])
            .ok_or(RegistryError::NoSpace { needed: need })?;
        log_extent = reg
            .allocate(log_len, &[image])
            .ok_or(RegistryError::NoSpace { needed: log_len })?;
        let entry = DiskSnapshot {
            tag: String::from(tag),
            image: Blob::empty_in(image),
            disk: Blob::empty_in(log_extent),
        };
        reg.update_vm(disk, uuid, |r| r.snapshots.push(entry))?;
        Ok(image)
    });
    let disk = io.disk();
    let done = written.and_then(|(image, image_crc)| {
        let (log, blob) = CowLog::create(disk, log_extent, &disks, capacity, nonce, crc).map_err(
            |e| match e {
                LogError::Io(b) => SuspendError::Io(b),
                _ => SuspendError::Io(BlockError::OutOfRange),
            },
        )?;
        // 4. The one commit that makes the snapshot complete.
        reg.update_vm(disk, uuid, |r| {
            if let Some(s) = r.snapshots.iter_mut().find(|s| s.tag == tag) {
                s.image.size = image.bytes;
                s.image.crc32c = image_crc;
                s.disk = blob;
            }
        })?;
        Ok((
            TakeReport {
                image,
                log_bytes: log_extent.len,
                log_reserve: log.data_bytes().1,
            },
            log,
        ))
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
/// RAM data, its log's header, index and saved data checked.
#[derive(Debug)]
pub struct OpenedSnapshot {
    pub image: OpenedState,
    pub log: CowLog,
}

/// Opens the VM's disk snapshot `tag` for a rollback into the VM as it is
/// (`expected`, counter frequency `cntfrq`): everything but the image's RAM data
/// is read and checked here (that is checked as it is restored), the log
/// completely (a log that records it is incomplete is refused). Changes nothing.
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
    let image =
        open_saved(disk, snap.image, expected, cntfrq, crc).map_err(DiskSnapshotError::Refused)?;
    let log =
        open_log(disk, &snap.disk, &copied_disks(rec), crc).map_err(DiskSnapshotError::Log)?;
    if let Some(why) = log.invalid() {
        return Err(DiskSnapshotError::Log(LogError::Invalid(why)));
    }
    log.check_data(disk, crc).map_err(DiskSnapshotError::Log)?;
    Ok(OpenedSnapshot { image, log })
}

/// Writes the opened snapshot's saved granules back over the VM's guest disks,
/// `before_write(disk, offset, len)` called first for each (the other snapshots'
/// logs). Flushes. Returns the bytes written. On an error the disks hold part of
/// the snapshot (and the log is unchanged: a later rollback can finish it).
pub fn restore_disks(
    disk: &mut dyn BlockBackend,
    s: &OpenedSnapshot,
    crc: CrcAppend,
    before_write: &mut dyn FnMut(&mut dyn BlockBackend, u64, u64),
) -> Result<u64, DiskSnapshotError> {
    s.log
        .restore(disk, crc, before_write)
        .map_err(DiskSnapshotError::Log)
}

#[cfg(test)]
mod tests;
