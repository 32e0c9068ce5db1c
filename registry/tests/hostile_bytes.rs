//! Property tests: decoding arbitrary or mutated bytes never panics, and whatever
//! decodes re-encodes to the same bytes (the format has one encoding per value).

use proptest::prelude::*;
use registry::codec::Writer;
use registry::slot::{decode_payload, encode_payload};
use registry::{
    Blob, BootSource, DeviceModel, DiskBus, DiskSnapshot, Extent, GuestDisk, MsiController, Policy,
    Uuid, VmRecord,
};

fn record(seed: u8) -> VmRecord {
    VmRecord {
        uuid: Uuid::from_random_bytes([seed; 16]),
        name: format!("vm{seed}"),
        vcpus: 1,
        memory_bytes: 2 << 20,
        device_model: DeviceModel::LinuxDt,
        boot: BootSource::Linux {
            kernel: Blob {
                extent: Extent {
                    start: 1 << 20,
                    len: 4096,
                },
                size: 10,
                crc32c: 5,
            },
            initrd: None,
            cmdline: "quiet".into(),
        },
        disks: vec![GuestDisk {
            extent: Extent {
                start: 2 << 20,
                len: 8192,
            },
            read_only: false,
        }],
        tpm_nv: Extent::EMPTY,
        policy: Policy::default(),
        saved_state: Blob::default(),
        starts: u64::from(seed),
        snapshots: vec![DiskSnapshot {
            tag: format!("t{seed}"),
            image: Blob {
                extent: Extent {
                    start: 3 << 20,
                    len: 8192,
                },
                size: 4096,
                crc32c: 1,
            },
            disk: Blob::default(),
        }],
        rtc_offset: -i64::from(seed) * 3600,
        msi: if seed.is_multiple_of(2) {
            MsiController::Its
        } else {
            MsiController::V2m
        },
        disk_bus: DiskBus::Nvme,
    }
}

proptest! {
    #[test]
    fn random_payloads_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(vms) = decode_payload(&bytes) {
            prop_assert_eq!(&encode_payload(&vms), &bytes);
        }
        let _ = VmRecord::decode(&bytes);
        let mut sb = [0u8; 512];
        let n = bytes.len().min(512);
        sb[..n].copy_from_slice(&bytes[..n]);
        let _ = registry::Superblock::decode(&sb);
    }

    #[test]
    fn mutated_records_never_panic(seed in any::<u8>(), edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut w = Writer::new();
        record(seed).encode(&mut w);
        let mut bytes = w.into_bytes();
        for (i, v) in edits {
            let at = i.index(bytes.len());
            bytes[at] = v;
        }
        if let Ok(r) = VmRecord::decode(&bytes) {
            let mut w = Writer::new();
            r.encode(&mut w);
            prop_assert_eq!(&w.into_bytes(), &bytes);
        }
    }
}
