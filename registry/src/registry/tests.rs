//! Tests of [`Registry`] over [`MemDisk`].

use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use vdev::{BlockBackend, BlockError};

use super::*;
use crate::defs::{MAX_VMS, SLOT_HEADER_SIZE, SUPERBLOCK_BACKUP_OFFSET};
use crate::memdisk::MemDisk;

const DISK: usize = 16 << 20;

fn uuid(n: u8) -> Uuid {
    Uuid::from_random_bytes([n; 16])
}

fn linux_spec(name: &str) -> VmSpec {
    VmSpec {
        name: name.to_string(),
        vcpus: 2,
        memory_bytes: 256 << 20,
        device_model: DeviceModel::LinuxDt,
        boot: BootSpec::Linux {
            kernel_capacity: 10_000,
            initrd_capacity: Some(5000),
            cmdline: "console=ttyAMA0".to_string(),
        },
        disks: vec![
            DiskSpec {
                size: 64 << 10,
                read_only: false,
            },
            DiskSpec {
                size: 4096,
                read_only: true,
            },
        ],
        tpm_nv_size: 16 << 10,
        policy: Policy::default(),
    }
}

fn uefi_spec(name: &str) -> VmSpec {
    VmSpec {
        name: name.to_string(),
        vcpus: 4,
        memory_bytes: 4 << 30,
        device_model: DeviceModel::UefiAcpi,
        boot: BootSpec::Firmware {
            code_capacity: 64 << 10,
            vars_capacity: 64 << 10,
        },
        disks: vec![DiskSpec {
            size: 1 << 20,
            read_only: false,
        }],
        tpm_nv_size: 16 << 10,
        policy: Policy {
            autostart: true,
            ..Policy::default()
        },
    }
}

fn fresh() -> (MemDisk, Registry) {
    let mut disk = MemDisk::new(DISK);
    let reg = Registry::format(&mut disk, uuid(0xd1)).unwrap();
    (disk, reg)
}

#[test]
fn format_then_open_is_empty() {
    let (mut disk, reg) = fresh();
    let opened = Registry::open(&mut disk).unwrap();
    assert_eq!(opened, reg);
    assert_eq!(opened.generation(), 1);
    assert_eq!(opened.active_slot(), SlotId::A);
    assert_eq!(
        opened.slot_status(SlotId::B),
        SlotStatus::Refused(SlotError::Blank)
    );
    assert!(opened.vms().is_empty());
    assert_eq!(opened.free_bytes(), opened.superblock().data_size);
}

#[test]
fn format_refuses_bad_input() {
    assert_eq!(
        Registry::format(&mut MemDisk::new(DISK), Uuid::NIL),
        Err(RegistryError::NilDiskUuid)
    );
    assert_eq!(
        Registry::format(&mut MemDisk::new(1 << 20), uuid(1)),
        Err(RegistryError::DiskTooSmall)
    );
    let mut ro = MemDisk::new(DISK);
    ro.set_read_only(true);
    assert_eq!(
        Registry::format(&mut ro, uuid(1)),
        Err(RegistryError::ReadOnly)
    );
}

#[test]
fn blank_disk_is_refused_not_formatted() {
    let mut disk = MemDisk::new(DISK);
    let err = Registry::open(&mut disk).unwrap_err();
    assert_eq!(
        err,
        OpenError::Superblock {
            primary: SuperblockError::BadMagic,
            backup: SuperblockError::BadMagic
        }
    );
    assert!(disk.bytes().iter().all(|&b| b == 0), "open must not write");
}

#[test]
fn add_vm_persists_and_alternates_slots() {
    let (mut disk, mut reg) = fresh();
    let a = reg
        .add_vm(&mut disk, uuid(1), &linux_spec("linux"))
        .unwrap();
    assert_eq!((reg.generation(), reg.active_slot()), (2, SlotId::B));
    let b = reg
        .add_vm(&mut disk, uuid(2), &uefi_spec("windows"))
        .unwrap();
    assert_eq!((reg.generation(), reg.active_slot()), (3, SlotId::A));
    let opened = Registry::open(&mut disk).unwrap();
    assert_eq!(opened.vms(), reg.vms());
    assert_eq!(
        opened.slot_status(SlotId::A),
        SlotStatus::Valid { generation: 3 }
    );
    assert_eq!(
        opened.slot_status(SlotId::B),
        SlotStatus::Valid { generation: 2 }
    );
    let lin = opened.vm(a).unwrap();
    assert_eq!(lin.name, "linux");
    assert_eq!(lin.disks.len(), 2);
    assert!(lin.disks[1].read_only);
    assert_eq!(lin.disks[0].extent.len, 64 << 10);
    // Capacities round up to the allocation unit; first fit packs from the start.
    match &lin.boot {
        BootSource::Linux { kernel, initrd, .. } => {
            assert_eq!(
                kernel.extent,
                Extent {
                    start: reg.superblock().data_offset,
                    len: 12288
                }
            );
            assert_eq!(initrd.unwrap().extent.start, kernel.extent.start + 12288);
        }
        other => panic!("unexpected boot source {other:?}"),
    }
    assert_eq!(opened.vm_by_name("windows").unwrap().uuid, b);
    assert!(opened.vm(b).unwrap().policy.autostart);
}

#[test]
fn add_vm_refuses_duplicates_and_bad_specs() {
    let (mut disk, mut reg) = fresh();
    reg.add_vm(&mut disk, uuid(1), &linux_spec("a")).unwrap();
    let before = reg.clone();
    assert_eq!(
        reg.add_vm(&mut disk, uuid(1), &linux_spec("b")),
        Err(RegistryError::Exists(uuid(1)))
    );
    assert_eq!(
        reg.add_vm(&mut disk, uuid(2), &linux_spec("a")),
        Err(RegistryError::Invalid(ConsistencyError::DuplicateName(
            uuid(2)
        )))
    );
    assert_eq!(
        reg.add_vm(&mut disk, Uuid::NIL, &linux_spec("c")),
        Err(RegistryError::Invalid(ConsistencyError::NilUuid))
    );
    let mut big = linux_spec("big");
    big.disks[0].size = DISK as u64;
    assert!(matches!(
        reg.add_vm(&mut disk, uuid(3), &big),
        Err(RegistryError::NoSpace { .. })
    ));
    let mut zero = linux_spec("zero");
    zero.disks[0].size = 0;
    assert!(matches!(
        reg.add_vm(&mut disk, uuid(3), &zero),
        Err(RegistryError::Invalid(ConsistencyError::MissingExtent {
            role: ExtentRole::Disk(0),
            ..
        }))
    ));
    let mut many = linux_spec("many");
    many.disks = vec![
        DiskSpec {
            size: 4096,
            read_only: false
        };
        crate::defs::MAX_DISKS + 1
    ];
    assert_eq!(
        reg.add_vm(&mut disk, uuid(3), &many),
        Err(RegistryError::Invalid(ConsistencyError::TooManyDisks(
            uuid(3)
        )))
    );
    let mut mismatch = linux_spec("mismatch");
    mismatch.device_model = DeviceModel::UefiAcpi;
    assert!(matches!(
        reg.add_vm(&mut disk, uuid(3), &mismatch),
        Err(RegistryError::Invalid(_))
    ));
    assert_eq!(reg, before);
    assert_eq!(Registry::open(&mut disk).unwrap(), before);
}

#[test]
fn registry_holds_max_vms_then_refuses() {
    let (mut disk, mut reg) = fresh();
    let mut spec = linux_spec("");
    spec.boot = BootSpec::Linux {
        kernel_capacity: 1,
        initrd_capacity: None,
        cmdline: "c".repeat(crate::defs::MAX_CMDLINE_LEN),
    };
    spec.disks = vec![
        DiskSpec {
            size: 1,
            read_only: false
        };
        crate::defs::MAX_DISKS
    ];
    spec.tpm_nv_size = 0;
    for i in 0..MAX_VMS {
        spec.name = alloc::format!("vm-{i:02}-{}", "x".repeat(50));
        reg.add_vm(&mut disk, uuid(i as u8 + 1), &spec).unwrap();
    }
    spec.name = "one-too-many".to_string();
    assert_eq!(
        reg.add_vm(&mut disk, uuid(200), &spec),
        Err(RegistryError::Invalid(ConsistencyError::TooManyVms))
    );
    assert_eq!(Registry::open(&mut disk).unwrap().vms().len(), MAX_VMS);
}

#[test]
fn update_vm_and_set_policy() {
    let (mut disk, mut reg) = fresh();
    let id = reg.add_vm(&mut disk, uuid(1), &linux_spec("a")).unwrap();
    reg.update_vm(&mut disk, id, |r| {
        r.name = "renamed".to_string();
        r.vcpus = 8;
    })
    .unwrap();
    let p = Policy {
        visible_on_start: true,
        pause_on_hide: true,
        ..Policy::default()
    };
    reg.set_policy(&mut disk, id, p).unwrap();
    let opened = Registry::open(&mut disk).unwrap();
    let r = opened.vm(id).unwrap();
    assert_eq!((r.name.as_str(), r.vcpus, r.policy), ("renamed", 8, p));

    let before = reg.clone();
    assert_eq!(
        reg.update_vm(&mut disk, id, |r| r.uuid = uuid(9)),
        Err(RegistryError::UuidChanged)
    );
    assert_eq!(
        reg.update_vm(&mut disk, id, |r| r.vcpus = 0),
        Err(RegistryError::Invalid(ConsistencyError::BadVcpus(id)))
    );
    assert!(matches!(
        reg.update_vm(&mut disk, id, |r| r.disks[1].extent = r.disks[0].extent),
        Err(RegistryError::Invalid(ConsistencyError::Overlap { .. }))
    ));
    assert_eq!(
        reg.update_vm(&mut disk, uuid(7), |_| {}),
        Err(RegistryError::NotFound(uuid(7)))
    );
    assert_eq!(reg, before);
    assert_eq!(Registry::open(&mut disk).unwrap(), before);
}

#[test]
fn blobs_round_trip_and_detect_corruption() {
    let (mut disk, mut reg) = fresh();
    let id = reg.add_vm(&mut disk, uuid(1), &linux_spec("a")).unwrap();
    let kernel: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
    reg.store_blob(&mut disk, id, ExtentRole::Kernel, &kernel)
        .unwrap();
    reg.store_blob(&mut disk, id, ExtentRole::Initrd, b"initrd")
        .unwrap();
    let mut opened = Registry::open(&mut disk).unwrap();
    assert_eq!(
        opened.read_blob(&mut disk, id, ExtentRole::Kernel).unwrap(),
        kernel
    );
    assert_eq!(
        opened.read_blob(&mut disk, id, ExtentRole::Initrd).unwrap(),
        b"initrd"
    );
    assert_eq!(
        opened.store_blob(&mut disk, id, ExtentRole::Kernel, &[0; 12289]),
        Err(RegistryError::BlobTooLarge {
            size: 12289,
            capacity: 12288
        })
    );
    assert_eq!(
        opened.store_blob(&mut disk, id, ExtentRole::FirmwareCode, b"x"),
        Err(RegistryError::NoSuchBlob(ExtentRole::FirmwareCode))
    );
    assert_eq!(
        opened.store_blob(&mut disk, id, ExtentRole::SavedState, b"x"),
        Err(RegistryError::NoSuchBlob(ExtentRole::SavedState))
    );
    let at = opened
        .vm(id)
        .unwrap()
        .blob(ExtentRole::Kernel)
        .unwrap()
        .extent
        .start as usize
        + 5000;
    disk.bytes_mut()[at] ^= 1;
    assert_eq!(
        opened.read_blob(&mut disk, id, ExtentRole::Kernel),
        Err(RegistryError::BlobChecksum(ExtentRole::Kernel))
    );
}

#[test]
fn saved_state_extent_reserved_and_stored() {
    let (mut disk, mut reg) = fresh();
    let id = reg.add_vm(&mut disk, uuid(1), &linux_spec("a")).unwrap();
    let e = reg.reserve_saved_state(&mut disk, id, 100_000).unwrap();
    assert_eq!(e.len, 102_400);
    assert_eq!(reg.reserve_saved_state(&mut disk, id, 50_000).unwrap(), e);
    reg.store_blob(&mut disk, id, ExtentRole::SavedState, &[0x5a; 100_000])
        .unwrap();
    let opened = Registry::open(&mut disk).unwrap();
    assert_eq!(opened.vm(id).unwrap().saved_state.size, 100_000);
    assert_eq!(
        opened
            .read_blob(&mut disk, id, ExtentRole::SavedState)
            .unwrap(),
        vec![0x5a; 100_000]
    );
    // Growing it drops the old state and zeroes the old extent.
    let bigger = reg.reserve_saved_state(&mut disk, id, 200_000).unwrap();
    assert_eq!(reg.vm(id).unwrap().saved_state.size, 0);
    let old_tail = &disk.bytes()[e.start as usize..(e.start + e.len) as usize];
    let overlap = bigger.start < e.start + e.len && e.start < bigger.start + bigger.len;
    assert!(overlap || old_tail.iter().all(|&b| b == 0));
}

#[test]
fn update_growing_an_extent_in_place_keeps_its_data() {
    let (mut disk, mut reg) = fresh();
    let id = reg.add_vm(&mut disk, uuid(1), &linux_spec("a")).unwrap();
    let tpm = reg.vm(id).unwrap().tpm_nv;
    crate::extent_io::write_extent(&mut disk, tpm, 0, &[9; 4096]).unwrap();
    // Shrink the TPM area: the tail is freed and zeroed, the head kept.
    reg.update_vm(&mut disk, id, |r| r.tpm_nv.len = 4096)
        .unwrap();
    let s = tpm.start as usize;
    assert_eq!(&disk.bytes()[s..s + 4096], &[9; 4096]);
    assert!(disk.bytes()[s + 4096..(tpm.start + tpm.len) as usize]
        .iter()
        .all(|&b| b == 0));
}

#[test]
fn remove_vm_zeroes_and_frees() {
    let (mut disk, mut reg) = fresh();
    let a = reg.add_vm(&mut disk, uuid(1), &linux_spec("a")).unwrap();
    let b = reg.add_vm(&mut disk, uuid(2), &uefi_spec("b")).unwrap();
    let a_extents = reg.vm(a).unwrap().extents();
    for (_, e) in &a_extents {
        crate::extent_io::write_extent(&mut disk, *e, 0, &[0xee; 4096]).unwrap();
    }
    let free_before = reg.free_bytes();
    let removed = reg.remove_vm(&mut disk, a).unwrap();
    assert_eq!(removed.uuid, a);
    assert_eq!(
        reg.free_bytes(),
        free_before + a_extents.iter().map(|(_, e)| e.len).sum::<u64>()
    );
    for (_, e) in &a_extents {
        assert!(disk.bytes()[e.start as usize..(e.start + e.len) as usize]
            .iter()
            .all(|&x| x == 0));
    }
    let opened = Registry::open(&mut disk).unwrap();
    assert!(opened.vm(a).is_none() && opened.vm(b).is_some());
    // First fit reuses the freed space at the start of the data area.
    let c = reg.add_vm(&mut disk, uuid(3), &linux_spec("c")).unwrap();
    assert_eq!(
        reg.vm(c).unwrap().extents()[0].1.start,
        reg.superblock().data_offset
    );
    assert_eq!(
        reg.remove_vm(&mut disk, uuid(9)),
        Err(RegistryError::NotFound(uuid(9)))
    );
}

#[test]
fn corrupt_active_slot_falls_back_and_is_reported() {
    let (mut disk, mut reg) = fresh();
    reg.add_vm(&mut disk, uuid(1), &linux_spec("a")).unwrap(); // gen 2 in B
    let gen2 = reg.clone();
    reg.add_vm(&mut disk, uuid(2), &uefi_spec("b")).unwrap(); // gen 3 in A
    let a_off = reg.superblock().slot_a_offset as usize;
    let written = SLOT_HEADER_SIZE + crate::slot::encode_payload(reg.vms()).len();
    for i in 0..written {
        let mut d = disk.clone();
        d.bytes_mut()[a_off + i] ^= 0x80;
        let opened = Registry::open(&mut d).unwrap();
        assert_eq!(opened.vms(), gen2.vms(), "flip at slot A byte {i}");
        assert_eq!(opened.generation(), 2);
        assert!(matches!(
            opened.slot_status(SlotId::A),
            SlotStatus::Refused(_)
        ));
    }
    // The next commit after a fallback overwrites the bad slot.
    let mut d = disk.clone();
    d.bytes_mut()[a_off + 100] ^= 0x80;
    let mut opened = Registry::open(&mut d).unwrap();
    opened.add_vm(&mut d, uuid(3), &linux_spec("c")).unwrap();
    assert_eq!(opened.active_slot(), SlotId::A);
    let again = Registry::open(&mut d).unwrap();
    assert_eq!(again.generation(), 3);
    assert_eq!(again.vms().len(), 2);
}

#[test]
fn both_slots_bad_fails_clearly() {
    let (mut disk, mut reg) = fresh();
    reg.add_vm(&mut disk, uuid(1), &linux_spec("a")).unwrap();
    let sb = *reg.superblock();
    disk.bytes_mut()[sb.slot_a_offset as usize + SLOT_HEADER_SIZE] ^= 1;
    disk.bytes_mut()[sb.slot_b_offset as usize + 3] ^= 1;
    let snapshot = disk.clone();
    assert_eq!(
        Registry::open(&mut disk),
        Err(OpenError::NoValidSlot {
            a: SlotError::PayloadChecksum,
            b: SlotError::BadMagic
        })
    );
    assert_eq!(disk, snapshot, "a failed open must not write");
}

#[test]
fn superblock_backup_used_when_primary_is_bad() {
    let (mut disk, mut reg) = fresh();
    reg.add_vm(&mut disk, uuid(1), &linux_spec("a")).unwrap();
    disk.bytes_mut()[40] ^= 1;
    assert_eq!(Registry::open(&mut disk).unwrap(), reg);
    disk.bytes_mut()[SUPERBLOCK_BACKUP_OFFSET as usize + 40] ^= 1;
    assert_eq!(
        Registry::open(&mut disk),
        Err(OpenError::Superblock {
            primary: SuperblockError::Checksum,
            backup: SuperblockError::Checksum
        })
    );
}

#[test]
fn tiny_disk_refused() {
    assert_eq!(
        Registry::open(&mut MemDisk::new(100)),
        Err(OpenError::DiskTooSmall {
            capacity: 100,
            recorded: 0
        })
    );
}

#[test]
fn shrunk_disk_refused() {
    let (disk, _) = fresh();
    let mut small = MemDisk::from_bytes(disk.bytes()[..DISK - 4096].to_vec());
    assert_eq!(
        Registry::open(&mut small),
        Err(OpenError::DiskTooSmall {
            capacity: (DISK - 4096) as u64,
            recorded: DISK as u64
        })
    );
}

/// A disk whose writes fail once armed.
struct FailingDisk {
    inner: MemDisk,
    fail: bool,
}

impl BlockBackend for FailingDisk {
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        if self.fail {
            return Err(BlockError::Io);
        }
        self.inner.write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        if self.fail {
            Err(BlockError::Io)
        } else {
            Ok(())
        }
    }
}

#[test]
fn failed_commit_keeps_the_committed_state() {
    let (disk, mut reg) = fresh();
    let mut d = FailingDisk {
        inner: disk,
        fail: false,
    };
    reg.add_vm(&mut d, uuid(1), &linux_spec("a")).unwrap();
    let before = reg.clone();
    d.fail = true;
    assert_eq!(
        reg.add_vm(&mut d, uuid(2), &linux_spec("b")),
        Err(RegistryError::Io(BlockError::Io))
    );
    assert_eq!(reg.vms(), before.vms());
    assert_eq!(reg.generation(), before.generation());
    assert_eq!(
        reg.slot_status(SlotId::A),
        SlotStatus::Refused(SlotError::Io(BlockError::Io))
    );
    assert_eq!(Registry::open(&mut d.inner).unwrap().vms(), before.vms());
    d.fail = false;
    reg.add_vm(&mut d, uuid(2), &linux_spec("b")).unwrap();
    assert_eq!(Registry::open(&mut d.inner).unwrap().vms().len(), 2);
}

#[test]
fn read_only_disk_refuses_updates() {
    let (mut disk, mut reg) = fresh();
    reg.add_vm(&mut disk, uuid(1), &linux_spec("a")).unwrap();
    disk.set_read_only(true);
    let opened = Registry::open(&mut disk).unwrap();
    assert_eq!(opened.vms().len(), 1);
    assert_eq!(
        reg.set_policy(&mut disk, uuid(1), Policy::default()),
        Err(RegistryError::ReadOnly)
    );
    assert_eq!(
        reg.remove_vm(&mut disk, uuid(1)),
        Err(RegistryError::ReadOnly)
    );
}

#[test]
fn start_counter_commits_and_survives_reopen() {
    let (mut disk, mut reg) = fresh();
    let id = reg.add_vm(&mut disk, uuid(1), &linux_spec("a")).unwrap();
    assert_eq!(reg.vm(id).unwrap().starts, 0);
    for n in 1..=3u64 {
        let generation = reg.generation();
        reg.update_vm(&mut disk, id, |r| r.starts += 1).unwrap();
        assert_eq!(reg.generation(), generation + 1);
        let opened = Registry::open(&mut disk).unwrap();
        assert_eq!(opened.vm(id).unwrap().starts, n);
        assert_eq!(opened, reg);
    }
    // A read-only disk refuses the increment and keeps the committed count.
    disk.set_read_only(true);
    assert_eq!(
        reg.update_vm(&mut disk, id, |r| r.starts += 1),
        Err(RegistryError::ReadOnly)
    );
    assert_eq!(reg.vm(id).unwrap().starts, 3);
}

#[test]
fn tpm_ca_key_is_made_once_and_survives_reopen_and_commits() {
    let mut disk = MemDisk::new(64 << 20);
    let mut reg = Registry::format(&mut disk, uuid(1)).unwrap();
    assert_eq!(reg.tpm_ca_key(), None);
    assert_eq!(reg.ensure_tpm_ca_key(&mut disk, [7; 32]), Ok([7; 32]));
    // A second call keeps the recorded key.
    assert_eq!(reg.ensure_tpm_ca_key(&mut disk, [9; 32]), Ok([7; 32]));
    let id = reg.add_vm(&mut disk, uuid(2), &linux_spec("a")).unwrap();
    let mut reopened = Registry::open(&mut disk).unwrap();
    assert_eq!(reopened.tpm_ca_key(), Some(&[7; 32]));
    assert_eq!(reopened.ensure_tpm_ca_key(&mut disk, [9; 32]), Ok([7; 32]));
    assert!(reopened.vm(id).is_some());
    // A read-only disk cannot gain a key (and keeps none).
    let mut fresh = MemDisk::new(64 << 20);
    let mut r2 = Registry::format(&mut fresh, uuid(3)).unwrap();
    let mut ro = ReadOnly(fresh);
    assert_eq!(
        r2.ensure_tpm_ca_key(&mut ro, [5; 32]),
        Err(RegistryError::ReadOnly)
    );
    assert_eq!(r2.tpm_ca_key(), None);
}

#[test]
fn debug_output_never_shows_the_tpm_ca_key() {
    let mut disk = MemDisk::new(64 << 20);
    let mut reg = Registry::format(&mut disk, uuid(1)).unwrap();
    let key = [0xA5; 32];
    reg.ensure_tpm_ca_key(&mut disk, key).unwrap();
    let shown = alloc::format!("{reg:?}");
    assert!(shown.contains("tpm_ca_key: Some(\"<secret>\")"), "{shown}");
    for leak in ["165, 165", "0xa5", "a5a5", "A5"] {
        assert!(!shown.contains(leak), "the key shows as `{leak}`: {shown}");
    }
}

struct ReadOnly(MemDisk);

impl BlockBackend for ReadOnly {
    fn capacity(&self) -> u64 {
        self.0.capacity()
    }
    fn read_only(&self) -> bool {
        true
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.0.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, buf: &[u8]) -> Result<(), BlockError> {
        self.0.write_at(offset, buf)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        self.0.flush()
    }
}

#[test]
fn a_version_2_disk_opens_without_a_key_and_upgrades_on_ensure() {
    use crate::defs::SLOT_VERSION_V2;
    use crate::slot::build_slot_version;
    let mut disk = MemDisk::new(64 << 20);
    let mut reg = Registry::format(&mut disk, uuid(1)).unwrap();
    let id = reg.add_vm(&mut disk, uuid(2), &linux_spec("old")).unwrap();
    // Rewrite the active slot as a version-2 writer would have: the records
    // without the CA key trailer, snapshot lists and RTC offsets.
    let active = reg.active_slot();
    let mut w = crate::codec::Writer::new();
    w.u32(reg.vms().len() as u32);
    for vm in reg.vms() {
        let mut rec = crate::codec::Writer::new();
        vm.encode(&mut rec);
        let mut rec = rec.into_bytes();
        rec.truncate(rec.len() - 11);
        w.u32(rec.len() as u32);
        w.bytes(&rec);
    }
    let sb = *reg.superblock();
    let bytes = build_slot_version(
        &sb,
        active,
        reg.generation(),
        &w.into_bytes(),
        SLOT_VERSION_V2,
    );
    disk.write_at(sb.slot_offset(active), &bytes).unwrap();
    let mut old = Registry::open(&mut disk).unwrap();
    assert_eq!(old.active_slot(), active);
    assert_eq!(old.tpm_ca_key(), None);
    assert_eq!(old.vm(id).unwrap().name, "old");
    assert_eq!(old.ensure_tpm_ca_key(&mut disk, [3; 32]), Ok([3; 32]));
    let upgraded = Registry::open(&mut disk).unwrap();
    assert_eq!(upgraded.tpm_ca_key(), Some(&[3; 32]));
    assert_eq!(upgraded.vm(id).unwrap().name, "old");
}
