use super::*;
use crate::cowlog::log_writes;
use crate::format::{device_layout_crc, DeviceState};
use crate::ram::{ZeroMap, BLOCK_SIZE, PAGES_PER_BLOCK, PAGE_SIZE};
use crate::snapshot::COW_GRANULE;
use crate::store::{CopyIo, RamImage, RamSink};
use crate::time::TimeState;
use crate::vcpu::{Power, VcpuState};
use alloc::vec;

use registry::{BootSpec, DeviceModel, DiskSpec, MemDisk, Policy, VmSpec};

const MEM: u64 = 8 << 20;
const FREQ: u64 = 62_500_000;
const CRC: CrcAppend = crate::crc32c_append;

struct Ram(Vec<Option<Vec<u8>>>);

impl Ram {
    fn empty() -> Ram {
        Ram((0..MEM as usize / BLOCK_SIZE).map(|_| None).collect())
    }
    fn with(seed: u8) -> Ram {
        let mut r = Ram::empty();
        let mut b = vec![0u8; BLOCK_SIZE];
        b[5 * PAGE_SIZE + 1] = seed;
        b[BLOCK_SIZE - 1] = seed ^ 0xff;
        r.0[1] = Some(b);
        r
    }
}

impl RamImage for Ram {
    fn blocks(&self) -> u32 {
        self.0.len() as u32
    }
    fn block(&self, b: u32) -> Option<&[u8]> {
        self.0[b as usize].as_deref()
    }
}

impl RamSink for Ram {
    fn write_page(&mut self, b: u32, page: u32, data: &[u8]) {
        let blk = self.0[b as usize].get_or_insert_with(|| vec![0xee; BLOCK_SIZE]);
        let at = page as usize * PAGE_SIZE;
        blk[at..at + PAGE_SIZE].copy_from_slice(data);
    }
    fn end_block(&mut self, b: u32, zero: &ZeroMap) {
        let blk = self.0[b as usize].get_or_insert_with(|| vec![0xee; BLOCK_SIZE]);
        for p in (0..PAGES_PER_BLOCK).filter(|&p| zero.is_zero(p)) {
            blk[p * PAGE_SIZE..(p + 1) * PAGE_SIZE].fill(0);
        }
    }
}

/// Bytes the tests reserve for a log.
const RESERVE: u64 = 256 << 10;

/// [`super::take`] of `ram` through the synchronous [`CopyIo`].
fn take(
    disk: &mut dyn BlockBackend,
    reg: &mut Registry,
    tag: &str,
    input: &SuspendInput<'_>,
    ram: &Ram,
    crc: CrcAppend,
) -> Result<(TakeReport, CowLog), DiskSnapshotError> {
    let mut ram = Ram(ram.0.clone());
    let nonce = 0x1234_5678_9abc_def0 ^ tag.len() as u64;
    super::take(
        &mut CopyIo::new(disk, &mut ram),
        reg,
        tag,
        input,
        RESERVE,
        nonce,
        crc,
    )
}

/// [`crate::store::restore_ram`] into `ram` through the synchronous [`CopyIo`].
fn restore_ram(
    disk: &mut dyn BlockBackend,
    st: &OpenedState,
    ram: &mut Ram,
) -> Result<(), ColdReason> {
    crate::store::restore_ram(&mut CopyIo::new(disk, ram), st)
}

/// A registry with one VM: a 3 MiB + 8 KiB writable disk (a partial last chunk)
/// and a read-only one (not copied).
fn setup() -> (MemDisk, Registry, Uuid) {
    let mut disk = MemDisk::new(48 << 20);
    let mut reg = Registry::format(&mut disk, Uuid::from_random_bytes([1; 16])).unwrap();
    let spec = VmSpec {
        name: String::from("linux"),
        vcpus: 1,
        memory_bytes: MEM,
        device_model: DeviceModel::LinuxDt,
        boot: BootSpec::Linux {
            kernel_capacity: 64 << 10,
            initrd_capacity: None,
            cmdline: String::from("console=ttyAMA0"),
        },
        disks: vec![
            DiskSpec {
                size: (3 << 20) + 8192,
                read_only: false,
            },
            DiskSpec {
                size: 64 << 10,
                read_only: true,
            },
        ],
        tpm_nv_size: 0,
        policy: Policy::default(),
    };
    let id = reg
        .add_vm(&mut disk, Uuid::from_random_bytes([2; 16]), &spec)
        .unwrap();
    (disk, reg, id)
}

fn fingerprint(id: Uuid) -> Fingerprint {
    Fingerprint {
        uuid: id.0,
        vcpus: 1,
        memory_bytes: MEM,
        ram_ipa: 0x4000_0000,
        devices_crc: device_layout_crc([("pl011", 0x900_0000u64)].into_iter()),
    }
}

struct Machine {
    vcpus: Vec<VcpuState>,
    devices: Vec<DeviceState>,
}

fn machine(seed: u8) -> Machine {
    let mut v = VcpuState::default();
    v.x[3] = u64::from(seed);
    v.power = Power::On;
    Machine {
        vcpus: vec![v],
        devices: vec![DeviceState {
            name: String::from("pl011"),
            base: 0x900_0000,
            blob: vec![seed; 24],
        }],
    }
}

fn input<'a>(id: Uuid, m: &'a Machine, vcount: u64) -> SuspendInput<'a> {
    SuspendInput {
        uuid: id,
        fingerprint: fingerprint(id),
        time: TimeState {
            cntfrq: FREQ,
            guest_vcount: vcount,
            host_pcount: vcount,
        },
        vcpus: &m.vcpus,
        devices: &m.devices,
    }
}

fn guest_disk(reg: &Registry, id: Uuid) -> Extent {
    reg.vm(id).unwrap().disks[0].extent
}

/// A guest write at `at` of guest disk `e`, through the logs first (as el2's
/// system disk does).
fn write_guest(disk: &mut MemDisk, logs: &mut [CowLog], e: Extent, at: u64, data: &[u8]) {
    let broke = log_writes(disk, logs, e.start + at, data.len() as u64, CRC);
    assert!(broke.is_empty());
    registry::write_extent(disk, e, at, data).unwrap();
}

fn guest_bytes(disk: &MemDisk, e: Extent) -> Vec<u8> {
    disk.bytes()[e.start as usize..(e.start + e.len) as usize].to_vec()
}

fn no_log() -> impl FnMut(&mut dyn BlockBackend, u64, u64) {
    |_, _, _| {}
}

#[test]
fn take_then_roll_back_gives_back_the_disk_ram_and_state_and_survives_a_reopen() {
    let (mut disk, mut reg, id) = setup();
    let e = guest_disk(&reg, id);
    let mut logs = Vec::new();
    write_guest(&mut disk, &mut logs, e, 0, &[0x11; 512]);
    write_guest(&mut disk, &mut logs, e, (3 << 20) + 4096, &[0x22; 4096]);
    let at_snapshot = guest_bytes(&disk, e);
    let m = machine(7);
    let (r, log) = take(
        &mut disk,
        &mut reg,
        "t1",
        &input(id, &m, 1000),
        &Ram::with(7),
        CRC,
    )
    .unwrap();
    assert_eq!(log.saved(), 0);
    assert_eq!(r.log_reserve, log.data_bytes().1);
    assert!(r.log_reserve > 0 && r.log_bytes <= RESERVE.next_multiple_of(1 << 20));
    let listed = list(reg.vm(id).unwrap());
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].tag, "t1");
    assert_eq!(listed[0].image_bytes, r.image.bytes);
    let mut logs = vec![log];
    // The guest changes its disk: a new granule, an overwritten one, a cleared
    // one (the partial last one), the same granule twice.
    write_guest(&mut disk, &mut logs, e, 1 << 20, &[0x33; 4096]);
    write_guest(&mut disk, &mut logs, e, 0, &[0x44; 100]);
    write_guest(&mut disk, &mut logs, e, 0, &[0x45; 4096 * 3]);
    write_guest(&mut disk, &mut logs, e, (3 << 20) + 4096, &[0; 4096]);
    assert_eq!(logs[0].saved(), 5);
    // A host reboot: the registry and the log are read from the disk again, and
    // logging continues.
    let reg = Registry::open(&mut disk).unwrap();
    let mut reopened: Vec<CowLog> = open_logs(&mut disk, &reg, CRC)
        .into_iter()
        .map(|(u, t, l)| {
            assert_eq!((u, t.as_str()), (id, "t1"));
            l.unwrap()
        })
        .collect();
    assert_eq!(reopened[0].saved(), 5);
    write_guest(&mut disk, &mut reopened, e, 2 << 20, &[0x66; 8192]);
    write_guest(&mut disk, &mut reopened, e, 0, &[0x67; 4096]);
    assert_eq!(reopened[0].saved(), 7);
    let s = open(&mut disk, &reg, id, "t1", &fingerprint(id), FREQ, CRC).unwrap();
    let mut logged = Vec::new();
    let written = restore_disks(&mut disk, &s, CRC, &mut |_, off, len| {
        logged.push((off, len))
    })
    .unwrap();
    assert_eq!(guest_bytes(&disk, e), at_snapshot);
    // Every saved granule was written back, each through the hook first.
    assert_eq!(written, 7 * 4096);
    assert_eq!(logged.len(), 7);
    assert_eq!(logged[0], (e.start + (1 << 20), 4096));
    let mut ram = Ram::empty();
    restore_ram(&mut disk, &s.image, &mut ram).unwrap();
    assert_eq!(ram.0, Ram::with(7).0);
    assert_eq!(s.image.vcpus[0].x[3], 7);
    assert_eq!(s.image.devices, m.devices);
    assert_eq!(s.image.header.time.guest_vcount, 1000);
    // A snapshot is not consumed: its log still holds its contents, the guest
    // writes on, and rolling back again works.
    write_guest(&mut disk, &mut reopened, e, 8192, &[9; 4096]);
    write_guest(&mut disk, &mut reopened, e, 3 << 20, &[9; 4096]);
    let s = open(&mut disk, &reg, id, "t1", &fingerprint(id), FREQ, CRC).unwrap();
    restore_disks(&mut disk, &s, CRC, &mut no_log()).unwrap();
    assert_eq!(guest_bytes(&disk, e), at_snapshot);
}

#[test]
fn nested_snapshots_each_log_what_they_need_and_roll_back_in_any_order() {
    let (mut disk, mut reg, id) = setup();
    let e = guest_disk(&reg, id);
    let m = machine(1);
    let mut logs = Vec::new();
    write_guest(&mut disk, &mut logs, e, 0, &[1; 4096]);
    let (_, a) = take(
        &mut disk,
        &mut reg,
        "a",
        &input(id, &m, 1),
        &Ram::empty(),
        CRC,
    )
    .unwrap();
    logs.push(a);
    let at_a = guest_bytes(&disk, e);
    write_guest(&mut disk, &mut logs, e, 0, &[2; 4096]);
    write_guest(&mut disk, &mut logs, e, 4096, &[2; 4096]);
    let (_, b) = take(
        &mut disk,
        &mut reg,
        "b",
        &input(id, &m, 1),
        &Ram::empty(),
        CRC,
    )
    .unwrap();
    logs.push(b);
    let at_b = guest_bytes(&disk, e);
    write_guest(&mut disk, &mut logs, e, 0, &[3; 8192 * 2]);
    // "a" saved each granule once, "b" its own first writes.
    assert_eq!((logs[0].saved(), logs[1].saved()), (4, 4));
    // Back to "a" (writes through "b"'s log: it stays valid), then to "b".
    let s = open(&mut disk, &reg, id, "a", &fingerprint(id), FREQ, CRC).unwrap();
    restore_disks(&mut disk, &s, CRC, &mut |d, off, len| {
        assert!(log_writes(d, &mut logs, off, len, CRC).is_empty());
    })
    .unwrap();
    assert_eq!(guest_bytes(&disk, e), at_a);
    let s = open(&mut disk, &reg, id, "b", &fingerprint(id), FREQ, CRC).unwrap();
    restore_disks(&mut disk, &s, CRC, &mut |d, off, len| {
        assert!(log_writes(d, &mut logs, off, len, CRC).is_empty());
    })
    .unwrap();
    assert_eq!(guest_bytes(&disk, e), at_b);
    let s = open(&mut disk, &reg, id, "a", &fingerprint(id), FREQ, CRC).unwrap();
    restore_disks(&mut disk, &s, CRC, &mut no_log()).unwrap();
    assert_eq!(guest_bytes(&disk, e), at_a);
}

#[test]
fn a_full_reserve_invalidates_the_snapshot_durably() {
    let (mut disk, mut reg, id) = setup();
    let e = guest_disk(&reg, id);
    let m = machine(1);
    let (_, log) = take(
        &mut disk,
        &mut reg,
        "t",
        &input(id, &m, 1),
        &Ram::empty(),
        CRC,
    )
    .unwrap();
    let cap = log.data_bytes().1 / COW_GRANULE;
    let mut logs = vec![log];
    // Exactly the reserve fits.
    write_guest(
        &mut disk,
        &mut logs,
        e,
        0,
        &vec![1; (cap * COW_GRANULE) as usize],
    );
    assert_eq!(logs[0].invalid(), None);
    let broke = log_writes(&mut disk, &mut logs, e.start + cap * COW_GRANULE, 1, CRC);
    assert_eq!(broke, vec![0]);
    assert_eq!(logs[0].invalid(), Some(crate::cowlog::INVALID_FULL));
    // Said on the disk too: after a reboot the log opens as invalid, and a
    // rollback is refused with nothing changed.
    let before = disk.bytes().to_vec();
    let reopened = open_logs(&mut disk, &reg, CRC);
    assert_eq!(
        reopened[0].2.as_ref().unwrap().invalid(),
        Some(crate::cowlog::INVALID_FULL)
    );
    let r = open(&mut disk, &reg, id, "t", &fingerprint(id), FREQ, CRC);
    assert!(matches!(
        r,
        Err(DiskSnapshotError::Log(LogError::Invalid(
            crate::cowlog::INVALID_FULL
        )))
    ));
    assert_eq!(disk.bytes(), &before[..]);
}

#[test]
fn tags_limits_and_delete() {
    let (mut disk, mut reg, id) = setup();
    let m = machine(1);
    take(
        &mut disk,
        &mut reg,
        "a",
        &input(id, &m, 1),
        &Ram::with(1),
        CRC,
    )
    .unwrap();
    assert!(matches!(
        take(
            &mut disk,
            &mut reg,
            "a",
            &input(id, &m, 1),
            &Ram::with(1),
            CRC
        ),
        Err(DiskSnapshotError::Exists)
    ));
    for i in 1..registry::defs::MAX_SNAPSHOTS {
        let t = alloc::format!("s{i}");
        take(
            &mut disk,
            &mut reg,
            &t,
            &input(id, &m, 1),
            &Ram::empty(),
            CRC,
        )
        .unwrap();
    }
    assert!(matches!(
        take(
            &mut disk,
            &mut reg,
            "z",
            &input(id, &m, 1),
            &Ram::empty(),
            CRC
        ),
        Err(DiskSnapshotError::TooMany)
    ));
    let snap = reg.vm(id).unwrap().snapshots[0].clone();
    delete(&mut disk, &mut reg, id, "a").unwrap();
    assert_eq!(
        delete(&mut disk, &mut reg, id, "a"),
        Err(DiskSnapshotError::NoSuch)
    );
    // Its space is free and zeroed (free space never carries a VM's state).
    for x in [snap.image.extent, snap.disk.extent] {
        assert!(disk.bytes()[x.start as usize..(x.start + x.len) as usize]
            .iter()
            .all(|&b| b == 0));
    }
    assert!(matches!(
        open(&mut disk, &reg, id, "a", &fingerprint(id), FREQ, CRC),
        Err(DiskSnapshotError::NoSuch)
    ));
    take(
        &mut disk,
        &mut reg,
        "z",
        &input(id, &m, 1),
        &Ram::empty(),
        CRC,
    )
    .unwrap();
}

#[test]
fn another_configuration_or_counter_is_refused_and_nothing_changes() {
    let (mut disk, mut reg, id) = setup();
    let m = machine(3);
    take(
        &mut disk,
        &mut reg,
        "t",
        &input(id, &m, 5),
        &Ram::with(3),
        CRC,
    )
    .unwrap();
    let mut other = fingerprint(id);
    other.vcpus = 2;
    assert!(matches!(
        open(&mut disk, &reg, id, "t", &other, FREQ, CRC),
        Err(DiskSnapshotError::Refused(ColdReason::ConfigMismatch(_)))
    ));
    assert!(matches!(
        open(&mut disk, &reg, id, "t", &fingerprint(id), FREQ + 1, CRC),
        Err(DiskSnapshotError::Refused(
            ColdReason::CounterFrequency { .. }
        ))
    ));
}

#[test]
fn a_flipped_byte_anywhere_in_the_used_log_is_refused_before_anything_changes() {
    let (mut disk, mut reg, id) = setup();
    let e = guest_disk(&reg, id);
    let m = machine(4);
    let (_, log) = take(
        &mut disk,
        &mut reg,
        "t",
        &input(id, &m, 5),
        &Ram::with(4),
        CRC,
    )
    .unwrap();
    let mut logs = vec![log];
    write_guest(&mut disk, &mut logs, e, 0, &[1; 4096 * 3]);
    let blob = reg.vm(id).unwrap().snapshots[0].disk;
    let before = disk.bytes().to_vec();
    let cap = u32::try_from(logs[0].data_bytes().1 / COW_GRANULE).unwrap();
    let data = crate::cowlog::layout_len(cap) - u64::from(cap) * COW_GRANULE;
    // The header block, the whole index, and the three saved granules.
    let used = (0..data).chain(data..data + 3 * COW_GRANULE);
    for i in used {
        let at = (blob.extent.start + i) as usize;
        disk.bytes_mut()[at] ^= 0x08;
        let r = open(&mut disk, &reg, id, "t", &fingerprint(id), FREQ, CRC);
        assert!(
            matches!(r, Err(DiskSnapshotError::Log(LogError::Format(_)))),
            "flip at log byte {i}: {:?}",
            r.map(|_| ())
        );
        disk.bytes_mut()[at] ^= 0x08;
    }
    assert_eq!(disk.bytes(), &before[..]);
}

#[test]
fn a_full_copy_from_slot_version_4_is_refused() {
    let (mut disk, mut reg, id) = setup();
    let m = machine(4);
    take(
        &mut disk,
        &mut reg,
        "t",
        &input(id, &m, 5),
        &Ram::with(4),
        CRC,
    )
    .unwrap();
    let blob = reg.vm(id).unwrap().snapshots[0].disk;
    disk.bytes_mut()[blob.extent.start as usize..][..8].copy_from_slice(&COPY_MAGIC);
    let r = open(&mut disk, &reg, id, "t", &fingerprint(id), FREQ, CRC);
    let e = r.map(|_| ()).unwrap_err();
    assert_eq!(e, DiskSnapshotError::Log(LogError::FullCopy));
    assert!(alloc::format!("{e}").contains("older build"), "{e}");
    // Listed as refused at boot too.
    assert!(matches!(
        open_logs(&mut disk, &reg, CRC)[0].2,
        Err(LogError::FullCopy)
    ));
}

struct CutDisk {
    inner: MemDisk,
    budget: usize,
}

impl BlockBackend for CutDisk {
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        // The system disk's driver moves whole sectors only.
        assert!(
            offset.is_multiple_of(512) && buf.len().is_multiple_of(512),
            "{offset}+{}",
            buf.len()
        );
        self.inner.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        assert!(
            offset.is_multiple_of(512) && data.len().is_multiple_of(512),
            "{offset}+{}",
            data.len()
        );
        if self.budget == 0 {
            return Err(BlockError::Io);
        }
        self.budget -= 1;
        if self.budget == 0 {
            // The last write tears: only its first half lands.
            let half = (data.len() / 2).next_multiple_of(512).min(data.len());
            let _ = self.inner.write_at(offset, &data[..half]);
            return Err(BlockError::Io);
        }
        self.inner.write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        if self.budget == 0 {
            return Err(BlockError::Io);
        }
        self.inner.flush()
    }
}

#[test]
fn a_power_cut_at_any_write_of_a_take_leaves_no_snapshot_or_the_complete_one() {
    let (mut disk, mut reg, id) = setup();
    let e = guest_disk(&reg, id);
    let mut none_logs = Vec::new();
    write_guest(&mut disk, &mut none_logs, e, 0, &[0x77; 4096]);
    let m = machine(9);
    // An older snapshot that must survive every cut.
    take(
        &mut disk,
        &mut reg,
        "old",
        &input(id, &m, 3),
        &Ram::with(2),
        CRC,
    )
    .unwrap();
    let at_snapshot = guest_bytes(&disk, e);
    let (mut complete, mut none) = (0, 0);
    for budget in 1.. {
        let mut cut = CutDisk {
            inner: MemDisk::from_bytes(disk.bytes().to_vec()),
            budget,
        };
        let mut r = Registry::open(&mut cut).unwrap();
        let ok = take(
            &mut cut,
            &mut r,
            "new",
            &input(id, &m, 4),
            &Ram::with(9),
            CRC,
        )
        .is_ok();
        // The host boots again.
        let mut after = cut.inner;
        let mut reg2 = Registry::open(&mut after).expect("the registry always opens");
        let tags: Vec<String> = list(reg2.vm(id).unwrap())
            .into_iter()
            .map(|t| t.tag)
            .collect();
        assert!(tags.contains(&String::from("old")), "budget {budget}");
        open(&mut after, &reg2, id, "old", &fingerprint(id), FREQ, CRC).unwrap();
        if tags.contains(&String::from("new")) {
            complete += 1;
            // Reopened through a disk that takes whole sectors only, as el2's.
            let mut sectored = CutDisk {
                inner: after.clone(),
                budget: usize::MAX,
            };
            let mut logs: Vec<CowLog> = open_logs(&mut sectored, &reg2, CRC)
                .into_iter()
                .map(|l| l.2.unwrap())
                .collect();
            write_guest(&mut after, &mut logs, e, 0, &[0x78; 4096]);
            let s = open(&mut after, &reg2, id, "new", &fingerprint(id), FREQ, CRC).unwrap();
            restore_disks(&mut after, &s, CRC, &mut no_log()).unwrap();
            assert_eq!(guest_bytes(&after, e), at_snapshot);
        } else {
            none += 1;
            // An incomplete entry is never listed and is removed by the next take.
            remove_incomplete(&mut after, &mut reg2, id).unwrap();
            assert!(reg2
                .vm(id)
                .unwrap()
                .snapshots
                .iter()
                .all(|s| s.tag != "new"));
        }
        if ok {
            break;
        }
    }
    assert!(
        complete >= 1 && none > 5,
        "{complete} complete, {none} none"
    );
}
