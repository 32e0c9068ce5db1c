//! Snapshots of a running VM and rollback to them (`vm snapshot`, `vm rollback`,
//! `vm snapshots`, `vm delete-snapshot`): el2's side of `vmstate::snapshot` (in
//! memory) and `vmstate::snapshot_disk` (`--disk`: on the system disk, surviving
//! a host reboot). Tags are unique across both kinds.
//!
//! **Memory.** At boot, free RAM left after the guests' RAM (up to [`POOL_MAX`],
//! keeping [`KEEP_FREE`]) is added to the hypervisor heap as the snapshot pool
//! ([`give_pool`]). Snapshots take at most the pool's size in all; a snapshot
//! that does not fit (by count or by the heap's fallible allocation) is refused.
//!
//! **Snapshot** (from vCPU `here` of a paused VM): `suspend::capture_machine`
//! (every vCPU on its own CPU, devices drained and saved, guest time), then a copy
//! of every populated RAM block, then the guest disk's copy-on-write log starts
//! ([`before_guest_write`], called by the system disk's guest extents before a
//! write is started: the first write to a granule after a snapshot saves its old
//! contents, synchronously, before the write goes to the device).
//!
//! **Rollback**: the guest disk's requests are drained, the logged granules are
//! written back (refused, with nothing changed, when the log overflowed its
//! budget), then RAM is emptied (`GuestRam::reset`) and refilled from the copy,
//! the devices restored, guest virtual time set back to the snapshot's, and every
//! vCPU gets its saved state: `here` at once, the parked ones as they leave the
//! park ([`on_unpark`], on their own CPUs). Snapshots taken after the one rolled
//! back to are dropped (the disk no longer holds their state).
//!
//! **Disk snapshots** ([`take_disk`], [`rollback`] of a disk tag): the same
//! capture, then `snapshot_disk::take` writes the image with suspend's writer
//! (RAM by DMA through `suspend::Io`, into the snapshot's own extent, never
//! incremental: the base and dirty log of a later suspend are left alone) and an
//! empty persistent copy-on-write log of the guest disks (`vmstate::cowlog`,
//! reserving [`disk_log_reserve`]), and commits them to the registry. From then on
//! [`before_guest_write`] saves the old contents of each granule first written
//! into every disk snapshot's log, durably (data, flush, index, flush), before the
//! write starts. The logs are opened from the system disk before the first guest
//! write after a host boot (cold boot or resume) or the first snapshot command,
//! so logging continues across reboots. A log whose reserve fills records so and
//! its snapshot is listed as invalid and refused. Rolling back opens and checks
//! the image and the whole log first (refused with nothing changed), then RAM is
//! emptied (`GuestRam::reset`, which also drops the incremental-suspend base) and
//! read back by `vmstate::restore_ram` through `suspend::Io` as a resume reads it
//! (DMA, each block's XXH64 checked), the saved granules are written back — each
//! write first through the in-memory snapshots' log and the other disk
//! snapshots' logs, so those stay valid — and devices, time and vCPUs follow as
//! for an in-memory rollback. A disk snapshot is not consumed: its log keeps its
//! contents, so it can be rolled back to again; an in-memory rollback's disk
//! writes go through the disk logs too.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

use arch::relax::Mutex;
use arch::smccc::{CpuPower, PowerTopology};
use registry::Uuid;
use vmstate::cowlog::{log_writes, Logged};
use vmstate::{
    CowLog, DeviceState, DiskCow, DiskSnapshotError, LogError, Power, RamSnapshot, SnapshotError,
    TimeState, VcpuState,
};

use crate::el1::{read_sysreg, write_sysreg};
use crate::suspend::{Io, Machine, Ram};
use crate::vm::{Vcpu, Vm};

/// Most memory the snapshot pool takes from free RAM.
const POOL_MAX: u64 = 512 << 20;
/// Free RAM left outside the pool.
const KEEP_FREE: u64 = 16 << 20;
/// The pool's alignment (a 2 MiB block).
const POOL_ALIGN: u64 = 2 << 20;
/// Snapshots of the VM at most.
const MAX_SNAPSHOTS: usize = 8;
/// Share of the pool the disk copy-on-write logs may take (1/this).
const COW_SHARE: u64 = 4;

/// Bytes of the snapshot pool.
static POOL: AtomicU64 = AtomicU64::new(0);
/// Some snapshot is logging guest disk writes (the fast path's test).
static LOGGING: AtomicBool = AtomicBool::new(false);
/// The snapshots, oldest first.
static STORE: Mutex<Vec<Snapshot>> = Mutex::new(Vec::new());
/// The guest disk's copy-on-write logs; lock order: `COW`, then storage.
static COW: Mutex<Option<DiskCow>> = Mutex::new(None);
/// The next snapshot id (ids grow with time: the disk log relies on it).
static NEXT_ID: AtomicU64 = AtomicU64::new(1);
/// The disk snapshots' logs: [`DLOGS_UNKNOWN`] until opened from the system disk,
/// then [`DLOGS_NONE`] or [`DLOGS_SOME`] (the guest-write fast path's test).
static DLOGS_STATE: AtomicU8 = AtomicU8::new(DLOGS_UNKNOWN);
const DLOGS_UNKNOWN: u8 = 0;
const DLOGS_NONE: u8 = 1;
const DLOGS_SOME: u8 = 2;
/// The disk snapshots' logs; lock order: `COW`, then `DLOGS`, then storage.
static DLOGS: Mutex<DiskLogs> = Mutex::new(DiskLogs {
    logs: Vec::new(),
    names: Vec::new(),
    refused: Vec::new(),
});
/// Share of the writable guest disks a disk snapshot's log reserves (1/this).
const DISK_LOG_SHARE: u64 = 4;
/// The smallest reserve of a disk snapshot's log.
const DISK_LOG_MIN: u64 = 4 << 20;

/// Every disk snapshot's log on the system disk, open for appending.
struct DiskLogs {
    logs: Vec<CowLog>,
    /// `(VM, tag)` of `logs[i]`.
    names: Vec<(Uuid, String)>,
    /// Logs that could not be opened at boot, with why.
    refused: Vec<(Uuid, String, String)>,
}

impl DiskLogs {
    fn find(&self, uuid: Uuid, tag: &str) -> Option<usize> {
        self.names.iter().position(|(u, t)| *u == uuid && t == tag)
    }

    fn remove(&mut self, uuid: Uuid, tag: &str) {
        if let Some(i) = self.find(uuid, tag) {
            self.logs.remove(i);
            self.names.remove(i);
        }
        self.refused.retain(|(u, t, _)| !(*u == uuid && t == tag));
        self.publish();
    }

    fn publish(&self) {
        let st = if self.logs.is_empty() {
            DLOGS_NONE
        } else {
            DLOGS_SOME
        };
        DLOGS_STATE.store(st, Ordering::Release);
    }

    /// Logs a warning for each log in `broke` (indexes).
    fn warn(&self, broke: &[usize]) {
        for &i in broke {
            let (_, tag) = &self.names[i];
            let why = self.logs[i]
                .invalid()
                .map_or(String::new(), |w| format!("{}", LogError::Invalid(w)));
            log::warn!("snapshots: disk snapshot '{tag}' is no longer valid: {why}");
        }
    }
}

/// Opens every disk snapshot's log from the system disk, once per boot (before
/// the first guest write or snapshot command).
fn load_disk_logs() {
    if DLOGS_STATE.load(Ordering::Acquire) != DLOGS_UNKNOWN {
        return;
    }
    let mut d = DLOGS.lock();
    if DLOGS_STATE.load(Ordering::Acquire) != DLOGS_UNKNOWN {
        return;
    }
    let opened = crate::storage::with(|st| {
        vmstate::snapshot_disk::open_logs(&mut st.disk, &st.registry, crate::accel::crc32c_append)
    })
    .unwrap_or_default();
    for (uuid, tag, log) in opened {
        match log {
            Ok(log) => {
                let (used, reserve) = log.data_bytes();
                log::info!(
                    "snapshots: disk snapshot '{tag}': log continues ({} of {} KiB used{})",
                    used >> 10,
                    reserve >> 10,
                    if log.invalid().is_some() {
                        "; invalid"
                    } else {
                        ""
                    }
                );
                d.logs.push(log);
                d.names.push((uuid, tag));
            }
            Err(e) => {
                log::warn!(
                    "snapshots: disk snapshot '{tag}': its log is refused ({e}); it cannot be rolled back to"
                );
                d.refused.push((uuid, tag, format!("{e}")));
            }
        }
    }
    d.publish();
}

/// The reserve of a new disk snapshot's log for a VM whose writable guest disks
/// hold `disk_bytes`.
pub fn disk_log_reserve(disk_bytes: u64) -> u64 {
    (disk_bytes / DISK_LOG_SHARE).max(DISK_LOG_MIN)
}

/// Writes started on the VM's RAM disks (a boot bundle's virtio-blk and NVMe
/// disks), which no copy-on-write log covers: an in-memory snapshot of a boot
/// bundle's VM records the count, and rolling back to it is refused once the
/// count moved (its RAM would no longer match its disks).
static UNLOGGED_WRITES: AtomicU64 = AtomicU64::new(0);

/// A RAM disk of a boot bundle's VM, counting the writes started on it
/// ([`UNLOGGED_WRITES`]).
pub struct Unlogged<B: vdev::AsyncBlock>(pub B);

impl<B: vdev::AsyncBlock> Unlogged<B> {
    fn count(op: vdev::BlockOp) {
        if matches!(op, vdev::BlockOp::Write { .. }) {
            UNLOGGED_WRITES.fetch_add(1, Ordering::AcqRel);
        }
    }
}

impl<B: vdev::AsyncBlock> vdev::AsyncBlock for Unlogged<B> {
    fn capacity(&self) -> u64 {
        self.0.capacity()
    }
    fn read_only(&self) -> bool {
        self.0.read_only()
    }
    fn max_transfer(&self) -> usize {
        self.0.max_transfer()
    }
    fn submit(&mut self, tag: u64, op: vdev::BlockOp, buf: Vec<u8>) -> vdev::Submit {
        Self::count(op);
        self.0.submit(tag, op, buf)
    }
    fn poll(&mut self) -> Option<vdev::Completion> {
        self.0.poll()
    }
    fn has_completions(&self) -> bool {
        self.0.has_completions()
    }
    fn set_waker(&mut self, signal: vdev::WorkSignal) {
        self.0.set_waker(signal)
    }
    fn dma_limits(&self) -> Option<vdev::DmaLimits> {
        self.0.dma_limits()
    }
    fn submit_dma(
        &mut self,
        tag: u64,
        op: vdev::BlockOp,
        segs: &[vdev::DmaSegment],
    ) -> vdev::Submit {
        Self::count(op);
        self.0.submit_dma(tag, op, segs)
    }
    fn quiesce(&mut self) {
        self.0.quiesce()
    }
}

struct Snapshot {
    id: u64,
    tag: String,
    /// [`UNLOGGED_WRITES`] when it was taken.
    unlogged_writes: u64,
    ram: RamSnapshot,
    vcpus: Vec<VcpuState>,
    devices: Vec<DeviceState>,
    guest_vcount: u64,
    host_pcount: u64,
}

impl Snapshot {
    /// Hypervisor memory it takes, besides its disk log.
    fn bytes(&self) -> u64 {
        self.ram.bytes()
            + self
                .devices
                .iter()
                .map(|d| d.blob.len() as u64)
                .sum::<u64>()
            + (self.vcpus.len() * core::mem::size_of::<VcpuState>()) as u64
    }
}

/// What `vm snapshots` shows of one snapshot.
pub struct Listed {
    pub tag: String,
    pub bytes: u64,
    /// On the system disk (`--disk`), else in memory.
    pub disk: bool,
    /// For `vm snapshots`: a disk snapshot's image and log use, or why it is
    /// invalid.
    pub note: String,
}

/// Adds free RAM (after the guests' RAM was taken) to the heap as the snapshot
/// pool: one range, the largest free one (an image loaded high in RAM — the
/// authority partition's — splits the rest in pieces).
pub fn give_pool(pmem: &mut boards::memmap::PhysMem) {
    let size = pmem
        .free_bytes()
        .saturating_sub(KEEP_FREE)
        .min(pmem.largest_free())
        .min(POOL_MAX)
        & !(POOL_ALIGN - 1);
    if size == 0 {
        log::info!("snapshots: no free RAM for an in-memory snapshot pool");
        return;
    }
    // The largest range need not start aligned: one alignment step less fits.
    let size_base = [size, size.saturating_sub(POOL_ALIGN)]
        .into_iter()
        .filter(|&s| s > 0)
        .find_map(|s| pmem.alloc(s, POOL_ALIGN).map(|b| (s, b)));
    let Some((size, base)) = size_base else {
        log::info!("snapshots: no free RAM range for an in-memory snapshot pool");
        return;
    };
    crate::heap::add_region(base, size);
    POOL.store(size, Ordering::Release);
    log::info!("snapshots: {} MiB in-memory pool", size >> 20);
}

/// Before the guest writes `len` bytes at byte `offset` of the system disk (in its
/// extent `[lo, hi)`): saves what a live snapshot needs of the old contents.
pub fn before_guest_write(offset: u64, len: u64, extent: (u64, u64)) {
    if LOGGING.load(Ordering::Acquire) {
        let mut cow = COW.lock();
        if let Some(cow) = cow.as_mut() {
            let broke =
                crate::storage::with(|st| cow.before_write(&mut st.disk, extent, offset, len))
                    .unwrap_or(0);
            if broke > 0 {
                log::warn!(
                    "snapshots: guest disk write at byte {offset} overflowed the copy-on-write budget; {broke} snapshot(s) can no longer be rolled back to"
                );
            }
        }
    }
    load_disk_logs();
    if DLOGS_STATE.load(Ordering::Acquire) == DLOGS_SOME {
        let mut d = DLOGS.lock();
        let DiskLogs { logs, .. } = &mut *d;
        let broke = crate::storage::with(|st| {
            log_writes(&mut st.disk, logs, offset, len, crate::accel::crc32c_append)
        })
        .unwrap_or_default();
        d.warn(&broke);
    }
}

/// Takes snapshot `tag` of the paused `vm` from vCPU `here`; returns the bytes of
/// memory it takes.
pub fn take(vm: &Vm, here: &mut Vcpu, tag: &str) -> Result<u64, TakeError> {
    if list_disk(vm).iter().any(|s| s.tag == tag) {
        return Err(TakeError::Exists);
    }
    {
        let store = STORE.lock();
        if store.iter().any(|s| s.tag == tag) {
            return Err(TakeError::Exists);
        }
        if store.len() >= MAX_SNAPSHOTS {
            return Err(TakeError::Other(format!(
                "{MAX_SNAPSHOTS} snapshots exist already; delete one first"
            )));
        }
    }
    let Machine {
        vcpus,
        devices,
        time,
    } = crate::suspend::capture_machine(vm, vm, here).map_err(TakeError::Other)?;
    let used: u64 = STORE.lock().iter().map(Snapshot::bytes).sum();
    let budget = POOL.load(Ordering::Acquire).saturating_sub(used);
    let ram =
        RamSnapshot::capture(&Ram(vm.ram), budget).map_err(|e| TakeError::Other(format!("{e}")))?;
    let id = NEXT_ID.fetch_add(1, Ordering::AcqRel);
    let snap = Snapshot {
        id,
        tag: String::from(tag),
        // Requests were drained: every write started so far has completed.
        unlogged_writes: UNLOGGED_WRITES.load(Ordering::Acquire),
        ram,
        vcpus,
        devices,
        guest_vcount: time.guest_vcount,
        host_pcount: time.host_pcount,
    };
    let bytes = snap.bytes();
    {
        let mut cow = COW.lock();
        cow.get_or_insert_with(|| DiskCow::new(POOL.load(Ordering::Acquire) / COW_SHARE))
            .start(id);
        LOGGING.store(true, Ordering::Release);
    }
    STORE.lock().push(snap);
    log::info!(
        "VM '{}': snapshot '{tag}' taken in memory ({} KiB)",
        vm.name,
        bytes >> 10
    );
    Ok(bytes)
}

/// Why [`take`] refused.
pub enum TakeError {
    Exists,
    Other(String),
}

/// The snapshots, oldest first, with their memory (RAM copy, device state and
/// disk log).
pub fn list() -> Vec<Listed> {
    let cow = COW.lock();
    STORE
        .lock()
        .iter()
        .map(|s| Listed {
            tag: s.tag.clone(),
            bytes: s.bytes() + cow.as_ref().map_or(0, |c| c.bytes_of(s.id)),
            disk: false,
            note: String::new(),
        })
        .collect()
}

/// `vm`'s complete disk snapshots, oldest first, with the system-disk space each
/// takes (image and log extents) and a note: the image's bytes and the log's
/// used/reserved bytes, or why it cannot be rolled back to.
pub fn list_disk(vm: &Vm) -> Vec<Listed> {
    let Some(uuid) = vm.identity else {
        return Vec::new();
    };
    load_disk_logs();
    let listed = crate::storage::with(|st| {
        st.registry
            .vm(uuid)
            .map(vmstate::snapshot_disk::list)
            .unwrap_or_default()
    })
    .unwrap_or_default();
    let d = DLOGS.lock();
    listed
        .into_iter()
        .map(|l| {
            let note = match d.find(uuid, &l.tag) {
                Some(i) => {
                    let log = &d.logs[i];
                    let (used, reserve) = log.data_bytes();
                    match log.invalid() {
                        None => format!(
                            "; image {} KiB, disk log {} of {} KiB used",
                            l.image_bytes.div_ceil(1024),
                            used >> 10,
                            reserve >> 10
                        ),
                        Some(vmstate::cowlog::INVALID_FULL) => {
                            format!("; INVALID: disk log full ({} KiB reserved)", reserve >> 10)
                        }
                        Some(_) => String::from("; INVALID: writing the disk log failed"),
                    }
                }
                None => {
                    let why = d
                        .refused
                        .iter()
                        .find(|(u, t, _)| *u == uuid && *t == l.tag)
                        .map_or("not open", |r| r.2.as_str());
                    format!("; INVALID: {why}")
                }
            };
            Listed {
                bytes: l.image_bytes + l.log.extent.len,
                tag: l.tag,
                disk: true,
                note,
            }
        })
        .collect()
}

/// Takes disk snapshot `tag` of the paused `vm` from vCPU `here`; returns the
/// system-disk bytes it takes.
pub fn take_disk(vm: &Vm, here: &mut Vcpu, tag: &str) -> Result<u64, TakeError> {
    let Some(uuid) = vm.identity else {
        return Err(TakeError::Other(String::from(
            "the VM was not started from the system disk (a boot bundle has nowhere to keep a disk snapshot)",
        )));
    };
    if STORE.lock().iter().any(|s| s.tag == tag) || list_disk(vm).iter().any(|s| s.tag == tag) {
        return Err(TakeError::Exists);
    }
    let start = read_sysreg!("CNTPCT_EL0");
    let Machine {
        vcpus,
        devices,
        time,
    } = crate::suspend::capture_machine(vm, vm, here).map_err(TakeError::Other)?;
    let input = vmstate::SuspendInput {
        uuid,
        fingerprint: crate::suspend::fingerprint(vm),
        time,
        vcpus: &vcpus,
        devices: &devices,
    };
    // RAM by DMA as a suspend writes it, but with no base: the snapshot's image
    // has an extent of its own, and the dirty log a later incremental suspend
    // relies on is not asked.
    load_disk_logs();
    let nonce = read_sysreg!("CNTPCT_EL0")
        ^ NEXT_ID
            .fetch_add(1, Ordering::AcqRel)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15);
    // The log is in `DLOGS` before the guest runs again (lock order: `DLOGS`,
    // then storage).
    let mut d = DLOGS.lock();
    let r = crate::storage::with(|st| {
        let guest: u64 = st.registry.vm(uuid).map_or(0, |r| {
            vmstate::snapshot_disk::copied_disks(r)
                .iter()
                .map(|e| e.len)
                .sum()
        });
        let mut io = Io::new(st.disk.clone(), vm.ram);
        vmstate::snapshot_disk::take(
            &mut io,
            &mut st.registry,
            tag,
            &input,
            disk_log_reserve(guest),
            nonce,
            crate::accel::crc32c_append,
        )
    })
    .unwrap_or(Err(DiskSnapshotError::Write(vmstate::SuspendError::Io(
        vdev::BlockError::Io,
    ))));
    let report = match r {
        Ok((r, log)) => {
            d.logs.push(log);
            d.names.push((uuid, String::from(tag)));
            d.publish();
            drop(d);
            r
        }
        Err(DiskSnapshotError::Exists) => return Err(TakeError::Exists),
        Err(e) => return Err(TakeError::Other(format!("{e}"))),
    };
    let bytes = list_disk(vm)
        .into_iter()
        .find(|s| s.tag == tag)
        .map_or(report.bytes(), |s| s.bytes);
    log::info!(
        "VM '{}': snapshot '{tag}' taken on the system disk ({} KiB image, a copy-on-write log of the guest disks reserving {} KiB; {} KiB of the system disk) in {} ms",
        vm.name,
        report.image.bytes >> 10,
        report.log_reserve >> 10,
        bytes >> 10,
        read_sysreg!("CNTPCT_EL0").wrapping_sub(start) * 1000 / read_sysreg!("CNTFRQ_EL0").max(1)
    );
    Ok(bytes)
}

/// Deletes `vm`'s snapshot `tag` (in memory or on the system disk); `Ok(false)`
/// if there is none.
pub fn delete(vm: &Vm, tag: &str) -> Result<bool, String> {
    if !STORE.lock().iter().any(|s| s.tag == tag) {
        let Some(uuid) = vm.identity else {
            return Ok(false);
        };
        load_disk_logs();
        let mut d = DLOGS.lock();
        let r = crate::storage::with(|st| {
            vmstate::snapshot_disk::delete(&mut st.disk, &mut st.registry, uuid, tag)
        });
        return match r {
            Some(Ok(())) => {
                d.remove(uuid, tag);
                log::info!("VM '{}': disk snapshot '{tag}' deleted", vm.name);
                Ok(true)
            }
            Some(Err(DiskSnapshotError::NoSuch)) | None => Ok(false),
            Some(Err(e)) => Err(format!("{e}")),
        };
    }
    Ok(delete_memory(tag))
}

/// Deletes in-memory snapshot `tag`; `false` if there is none.
fn delete_memory(tag: &str) -> bool {
    let mut store = STORE.lock();
    let Some(i) = store.iter().position(|s| s.tag == tag) else {
        return false;
    };
    let s = store.remove(i);
    let mut cow = COW.lock();
    if let Some(c) = cow.as_mut() {
        c.drop_log(s.id);
        LOGGING.store(c.active(), Ordering::Release);
    }
    true
}

/// Why [`rollback`] refused or failed.
pub enum RollbackError {
    NoSuch,
    /// Nothing was changed.
    Refused(String),
    /// Failed part-way: the VM holds part of the snapshot.
    Partial(String),
}

/// Rolls the paused `vm` back to snapshot `tag` from vCPU `here`. On `Ok` guest
/// virtual time is the snapshot's (set in the VM's offset; `here` loads it) and
/// the parked vCPUs pick up their states as they leave the park.
pub fn rollback(vm: &Vm, here: &mut Vcpu, tag: &str) -> Result<(), RollbackError> {
    let mut store = STORE.lock();
    let Some(pos) = store.iter().position(|s| s.tag == tag) else {
        drop(store);
        return rollback_disk(vm, here, tag);
    };
    let snap = &store[pos];
    same_power(vm, &snap.vcpus)?;
    crate::suspend::drain(vm, here.idx).map_err(RollbackError::Refused)?;
    if UNLOGGED_WRITES.load(Ordering::Acquire) != snap.unlogged_writes {
        return Err(RollbackError::Refused(String::from(
            "the VM's RAM disks (a boot bundle's, which no log covers) were written since the snapshot",
        )));
    }
    // 1. The disk (refused with nothing changed when its log is broken). A boot
    // bundle's VM has only RAM disks, which the log never covers (checked
    // above: unwritten since the snapshot), and no system disk to write to.
    if vm.identity.is_some() {
        let mut cow = COW.lock();
        let Some(c) = cow.as_mut() else {
            return Err(RollbackError::Refused(String::from("no disk log")));
        };
        // Its writes go through the disk snapshots' logs first.
        load_disk_logs();
        let mut d = DLOGS.lock();
        let DiskLogs { logs, .. } = &mut *d;
        let (r, broke) = crate::storage::with(|st| {
            let mut disk = Logged {
                disk: &mut st.disk,
                logs,
                crc: crate::accel::crc32c_append,
                broke: Vec::new(),
            };
            let r = c.rollback(&mut disk, snap.id);
            (r, disk.broke)
        })
        .unwrap_or((Err(SnapshotError::Io(vdev::BlockError::Io)), Vec::new()));
        d.warn(&broke);
        match r {
            Ok(()) => {}
            Err(e @ SnapshotError::Broken) => return Err(RollbackError::Refused(format!("{e}"))),
            Err(e) => {
                return Err(RollbackError::Partial(format!(
                    "guest disk partly rolled back ({e}); RAM and vCPUs were not"
                )))
            }
        }
    }
    // 2. RAM: emptied, then the copy.
    vm.ram.reset();
    snap.ram.restore(&mut Ram(vm.ram));
    // 3-5. Devices, time, vCPUs.
    let time = TimeState {
        cntfrq: read_sysreg!("CNTFRQ_EL0"),
        guest_vcount: snap.guest_vcount,
        host_pcount: snap.host_pcount,
    };
    finish_rollback(vm, here, &snap.devices, &time, &snap.vcpus)?;
    // Snapshots after this one no longer match the disk.
    let id = snap.id;
    let dropped: Vec<String> = store
        .iter()
        .filter(|s| s.id > id)
        .map(|s| s.tag.clone())
        .collect();
    store.retain(|s| s.id <= id);
    if !dropped.is_empty() {
        log::info!(
            "VM '{}': snapshots taken after '{tag}' dropped: {}",
            vm.name,
            dropped.join(", ")
        );
    }
    log::info!("VM '{}': rolled back to snapshot '{tag}'", vm.name);
    Ok(())
}

/// Refuses a rollback to a state whose vCPUs were powered otherwise than now (a
/// vCPU's power cannot be changed from here).
fn same_power(vm: &Vm, vcpus: &[VcpuState]) -> Result<(), RollbackError> {
    for (i, st) in vcpus.iter().enumerate() {
        let on = vm.power(i) != CpuPower::Off;
        if on != (st.power == Power::On) {
            return Err(RollbackError::Refused(format!(
                "vCPU {i} was powered {} at the snapshot and is {} now; rolling back across a CPU power change is not supported",
                if st.power == Power::On { "on" } else { "off" },
                if on { "on" } else { "off" }
            )));
        }
    }
    Ok(())
}

/// The end of every rollback, once RAM and disks hold the snapshot's: devices
/// restored, guest virtual time continued from the snapshot's count (CNTVOFF, so
/// no tick of the time in between is owed), every vCPU given its state (`here` at
/// once, the parked ones as they leave the park).
fn finish_rollback(
    vm: &Vm,
    here: &mut Vcpu,
    devices: &[DeviceState],
    time: &TimeState,
    vcpus: &[VcpuState],
) -> Result<(), RollbackError> {
    drop_taken_vtimer(vm, here);
    crate::suspend::restore_devices(vm, devices)
        .map_err(|e| RollbackError::Partial(format!("device state refused: {e:?}")))?;
    let now = read_sysreg!("CNTPCT_EL0");
    vm.set_cntvoff(vmstate::cntvoff_for(time.guest_vcount, now));
    for (i, st) in vcpus.iter().enumerate() {
        let mut st = st.clone();
        st.ptimer_cval = vmstate::rebase_physical(st.ptimer_cval, time.host_pcount, now);
        vm.kick[i].store(true, Ordering::Release);
        if i == here.idx {
            crate::suspend::apply(here, &st);
            crate::vm::load_vcpu(here);
        } else if st.power == Power::On {
            *vm.resume_slots[i].lock() = Some(alloc::boxed::Box::new(st));
        }
    }
    Ok(())
}

/// Rolls the paused `vm` back to its disk snapshot `tag` from vCPU `here` (see
/// the module documentation).
fn rollback_disk(vm: &Vm, here: &mut Vcpu, tag: &str) -> Result<(), RollbackError> {
    let Some(uuid) = vm.identity else {
        return Err(RollbackError::NoSuch);
    };
    let start = read_sysreg!("CNTPCT_EL0");
    let crc = crate::accel::crc32c_append;
    let cntfrq = read_sysreg!("CNTFRQ_EL0");
    let expected = crate::suspend::fingerprint(vm);
    // Everything checked before anything changes.
    let opened = crate::storage::with(|st| {
        vmstate::snapshot_disk::open(
            &mut st.disk,
            &st.registry,
            uuid,
            tag,
            &expected,
            cntfrq,
            crc,
        )
    })
    .unwrap_or(Err(DiskSnapshotError::NoSuch));
    // A log known here to be incomplete (its invalid mark possibly not on the
    // disk, when writing it failed) is refused too.
    load_disk_logs();
    let opened = opened.and_then(|o| {
        let d = DLOGS.lock();
        match d.find(uuid, tag).map(|i| d.logs[i].invalid()) {
            Some(Some(why)) => Err(DiskSnapshotError::Log(LogError::Invalid(why))),
            _ => Ok(o),
        }
    });
    let opened = match opened {
        Ok(o) => o,
        Err(DiskSnapshotError::NoSuch) => return Err(RollbackError::NoSuch),
        Err(e) => {
            log::warn!("VM '{}': disk snapshot '{tag}' refused: {e}", vm.name);
            return Err(RollbackError::Refused(format!(
                "the disk snapshot is refused: {e}"
            )));
        }
    };
    same_power(vm, &opened.image.vcpus)?;
    crate::suspend::drain(vm, here.idx).map_err(RollbackError::Refused)?;
    // RAM: emptied (which also ends dirty logging and drops the base of an
    // incremental suspend: RAM no longer matches it), then read back from the
    // image as a resume reads it (DMA, each block's checksum checked), and like
    // a resume's only the pages EL2 zeroes are cleaned when the snapshot's vCPUs
    // access RAM cacheable: the system disk is cache-coherent, so its writes
    // leave no stale line of the guest's earlier contents of those pages.
    vm.ram.reset();
    let cacheable = crate::suspend::data_cacheable(&opened.image.vcpus);
    let mut finish_ticks = 0;
    crate::storage::with(|st| {
        let mut io = Io::new(st.disk.clone(), vm.ram).for_cacheable_guest(cacheable);
        let r = vmstate::restore_ram(&mut io, &opened.image);
        finish_ticks = io.finish_ticks();
        r
    })
    .unwrap_or(Err(vmstate::ColdReason::Unreadable))
    .map_err(|e| RollbackError::Partial(format!("guest RAM partly restored ({e})")))?;
    // The guest disks, each write first through the in-memory snapshots' log and
    // the disk snapshots' logs (lock order: `COW`, `DLOGS`, then storage).
    let written = {
        let mut cow = COW.lock();
        let mut d = DLOGS.lock();
        let DiskLogs { logs, .. } = &mut *d;
        let mut broke = Vec::new();
        let crc = crate::accel::crc32c_append;
        let r = crate::storage::with(|st| {
            vmstate::snapshot_disk::restore_disks(
                &mut st.disk,
                &opened,
                crc,
                &mut |disk, off, len| {
                    if let Some(c) = cow.as_mut() {
                        let e = opened
                            .log
                            .header()
                            .disks
                            .iter()
                            .find(|e| off >= e.start && off < e.start + e.len)
                            .map_or((off, off + len), |e| (e.start, e.start + e.len));
                        if c.before_write(disk, e, off, len) > 0 {
                            log::warn!(
                                "snapshots: rolling back to '{tag}' overflowed the copy-on-write budget of an in-memory snapshot"
                            );
                        }
                    }
                    broke.extend(log_writes(disk, logs, off, len, crc));
                },
            )
        })
        .unwrap_or(Err(DiskSnapshotError::Log(LogError::Io(vdev::BlockError::Io))));
        d.warn(&broke);
        r.map_err(|e| RollbackError::Partial(format!("guest disk partly rolled back ({e})")))?
    };
    let h = &opened.image.header;
    finish_rollback(
        vm,
        here,
        &opened.image.devices,
        &h.time,
        &opened.image.vcpus,
    )?;
    log::info!(
        "VM '{}': rolled back to disk snapshot '{tag}' ({} KiB of guest disk rewritten) in {} ms (finishing RAM blocks {} ms, {})",
        vm.name,
        written >> 10,
        read_sysreg!("CNTPCT_EL0").wrapping_sub(start) * 1000 / cntfrq.max(1),
        finish_ticks * 1000 / cntfrq.max(1),
        if cacheable {
            "only EL2's zeroed pages cleaned"
        } else {
            "every line cleaned"
        }
    );
    Ok(())
}

/// After the VM resumes, on the commanding vCPU's CPU: load the VM's (new)
/// virtual-counter offset.
pub fn load_cntvoff(vm: &Vm) {
    write_sysreg!("CNTVOFF_EL2", vm.cntvoff());
    // SAFETY: the new offset must be in effect before the timer is looked at.
    unsafe { core::arch::asm!("isb") };
}

/// Before a rollback replaces the vGIC and `vcpu.vtimer_raised` with the
/// snapshot's (on `vcpu`'s own CPU, where it is loaded): takes its virtual timer
/// off this CPU's hardware ([`crate::smp::release_vtimer`]). The physical PPI is
/// active while EL2 took it and the guest has not yet deactivated the
/// hardware-linked virtual one: EL2 may have taken it while the VM stood (a long
/// rollback reads the system disk with interrupts taken), or the guest
/// acknowledged it and was paused inside its handler (the line then reads low,
/// so `vtimer_raised` may be clear). Either way the deactivation that would end
/// it is in the vGIC the rollback discards; left active, the vCPU's timer never
/// fires again. The state loaded next sets the timer up again.
fn drop_taken_vtimer(vm: &Vm, vcpu: &mut Vcpu) {
    let raised = core::mem::take(&mut vcpu.vtimer_raised);
    if crate::smp::release_vtimer() {
        log::info!(
            "VM '{}': vCPU {}'s virtual-timer interrupt was active at the rollback ({}); it is deactivated",
            vm.name,
            vcpu.idx,
            if raised {
                "raised for the guest, not yet ended by it"
            } else {
                "taken by the guest, not yet ended by it"
            }
        );
    }
}

/// A vCPU leaving the park: takes up the state a rollback left for it.
pub fn on_unpark(vm: &Vm, vcpu: &mut Vcpu) {
    let st = vm.resume_slots[vcpu.idx].lock().take();
    if let Some(st) = st {
        drop_taken_vtimer(vm, vcpu);
        crate::suspend::apply(vcpu, &st);
        crate::vm::load_vcpu(vcpu);
    }
}
