use super::*;
use alloc::vec;
use proptest::prelude::*;
use registry::MemDisk;

const CRC: CrcAppend = crate::crc32c_append;
/// Two guest disks (the second with a partial last granule) and the log's extent.
const DISKS: [Extent; 2] = [
    Extent {
        start: 1 << 20,
        len: 64 << 10,
    },
    Extent {
        start: 2 << 20,
        len: (16 << 10) + 512,
    },
];
const LOG: Extent = Extent {
    start: 4 << 20,
    len: 1 << 20,
};

fn disk_with_data() -> MemDisk {
    let mut d = MemDisk::new(8 << 20);
    for (i, b) in d.bytes_mut()[1 << 20..3 << 20].iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    d
}

fn guest(d: &MemDisk) -> Vec<u8> {
    DISKS
        .iter()
        .flat_map(|e| d.bytes()[e.start as usize..(e.start + e.len) as usize].to_vec())
        .collect()
}

/// The system disk's driver moves whole sectors only.
fn sectors(offset: u64, len: usize) {
    assert!(
        offset.is_multiple_of(SECTOR_SIZE) && (len as u64).is_multiple_of(SECTOR_SIZE),
        "a request of {len} bytes at {offset} is not whole sectors"
    );
}

/// A disk that records every write and flush, passing them through (whole
/// sectors only).
struct Recorder {
    inner: MemDisk,
    ops: Vec<Option<(u64, Vec<u8>)>>,
}

impl BlockBackend for Recorder {
    fn capacity(&self) -> u64 {
        self.inner.capacity()
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        sectors(offset, buf.len());
        self.inner.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        sectors(offset, data.len());
        self.ops.push(Some((offset, data.to_vec())));
        self.inner.write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        self.ops.push(None);
        Ok(())
    }
}

/// Guest writes (offset into the system disk, length, byte).
const WRITES: [(u64, u64, u8); 6] = [
    ((1 << 20) + 512, 1024, 0xa1),
    ((1 << 20) + 4096, 3 * 4096, 0xa2),
    ((1 << 20) + 4096, 512, 0xa3),
    ((2 << 20) + (16 << 10), 512, 0xa4),
    ((1 << 20) + (60 << 10), 4096, 0xa5),
    ((2 << 20), 8192, 0xa6),
];

#[test]
fn round_trip_reopen_and_restore() {
    let mut d = disk_with_data();
    let at_snapshot = guest(&d);
    let (log, blob) = CowLog::create(&mut d, LOG, &DISKS, 40, 77, CRC).unwrap();
    let mut logs = vec![log];
    for (i, &(off, len, b)) in WRITES.iter().enumerate() {
        assert!(log_writes(&mut d, &mut logs, off, len, CRC).is_empty());
        d.write_at(off, &vec![b; len as usize]).unwrap();
        // Reopened from the disk after every write it equals the one in memory.
        let again = CowLog::open(&mut d, &blob, &DISKS, CRC).unwrap();
        assert_eq!(again.entries, logs[0].entries, "after write {i}");
        assert_eq!(again.tail, logs[0].tail, "after write {i}");
        logs[0] = again;
    }
    // 1 + 3 + 0 + 1 (the partial granule) + 1 + 2.
    assert_eq!(logs[0].saved(), 8);
    assert_ne!(guest(&d), at_snapshot);
    logs[0].check_data(&mut d, CRC).unwrap();
    let n = logs[0].restore(&mut d, CRC, &mut |_, _, _| {}).unwrap();
    assert_eq!(n, 7 * 4096 + 512);
    assert_eq!(guest(&d), at_snapshot);
    // Writes outside the logged disks are not logged.
    assert!(log_writes(&mut d, &mut logs, 3 << 20, 4096, CRC).is_empty());
    assert_eq!(logs[0].saved(), 8);
}

#[test]
fn many_entries_span_index_sectors_and_reopen() {
    let mut d = disk_with_data();
    let at_snapshot = guest(&d);
    let (log, blob) = CowLog::create(&mut d, LOG, &DISKS, 40, 5, CRC).unwrap();
    let mut logs = vec![log];
    // One granule at a time, then the rest in one write.
    for g in 0..7u64 {
        let off = DISKS[0].start + g * 4096 * 2;
        assert!(log_writes(&mut d, &mut logs, off, 1, CRC).is_empty());
        d.write_at(off, &[0xcc]).unwrap();
    }
    let all = DISKS[0].len;
    assert!(log_writes(&mut d, &mut logs, DISKS[0].start, all, CRC).is_empty());
    d.write_at(DISKS[0].start, &vec![0xdd; all as usize])
        .unwrap();
    assert_eq!(logs[0].saved(), 16);
    let again = CowLog::open(&mut d, &blob, &DISKS, CRC).unwrap();
    assert_eq!(again.entries, logs[0].entries);
    again.check_data(&mut d, CRC).unwrap();
    again.restore(&mut d, CRC, &mut |_, _, _| {}).unwrap();
    assert_eq!(guest(&d), at_snapshot);
}

/// The disk as a power cut after `ops[..k]` may leave it: everything up to the
/// last flush in that prefix, plus the writes after it for which `keep` says so.
fn crashed(
    start: &MemDisk,
    ops: &[Option<(u64, Vec<u8>)>],
    k: usize,
    keep: &dyn Fn(usize) -> bool,
) -> MemDisk {
    let last_flush = ops[..k]
        .iter()
        .rposition(|o| o.is_none())
        .map_or(0, |i| i + 1);
    let mut d = start.clone();
    for (i, op) in ops[..k].iter().enumerate() {
        if let Some((off, data)) = op {
            if i < last_flush || keep(i) {
                d.write_at(*off, data).unwrap();
            }
        }
    }
    d
}

#[test]
fn a_power_cut_at_any_moment_leaves_a_log_that_restores_exactly_or_is_refused() {
    let mut start = disk_with_data();
    let at_snapshot = guest(&start);
    // A small reserve: the run ends with the log full.
    let (log, blob) = CowLog::create(&mut start, LOG, &DISKS, 6, 9, CRC).unwrap();
    let mut rec = Recorder {
        inner: start.clone(),
        ops: Vec::new(),
    };
    let mut logs = vec![log];
    for &(off, len, b) in &WRITES {
        log_writes(&mut rec, &mut logs, off, len, CRC);
        // The guest's own write, then the guest's flush.
        rec.write_at(off, &vec![b; len as usize]).unwrap();
        rec.flush().unwrap();
    }
    assert_eq!(logs[0].invalid(), Some(INVALID_FULL));
    let ops = rec.ops;
    let (mut restored, mut refused) = (0, 0);
    for k in 0..=ops.len() {
        let after_flush = ops[..k]
            .iter()
            .rposition(|o| o.is_none())
            .map_or(0, |i| i + 1);
        let unflushed: Vec<usize> = (after_flush..k).filter(|&i| ops[i].is_some()).collect();
        // None of the unflushed writes, all, each alone, all but each.
        let mut cases: Vec<Vec<usize>> = vec![vec![], unflushed.clone()];
        for &u in &unflushed {
            cases.push(vec![u]);
            cases.push(unflushed.iter().copied().filter(|&x| x != u).collect());
        }
        for kept in cases {
            let mut d = crashed(&start, &ops, k, &|i| kept.contains(&i));
            let before = d.clone();
            let ok = CowLog::open(&mut d, &blob, &DISKS, CRC)
                .and_then(|l| l.check_data(&mut d, CRC).map(|()| l))
                .and_then(|l| l.restore(&mut d, CRC, &mut |_, _, _| {}));
            match ok {
                Ok(_) => {
                    restored += 1;
                    assert!(guest(&d) == at_snapshot, "cut after op {k}, kept {kept:?}");
                }
                Err(e) => {
                    refused += 1;
                    // Whole-sector writes never tear here: the only refusal is
                    // the log's own durable "full" mark (an entry whose data did
                    // not land would be refused as a checksum mismatch).
                    assert_eq!(
                        e,
                        LogError::Invalid(INVALID_FULL),
                        "cut after op {k}, kept {kept:?}"
                    );
                    assert!(d == before, "cut after op {k}: a refusal changed the disk");
                }
            }
        }
    }
    // Most cuts restore; the ones after the log filled up are refused.
    assert!(
        restored > refused && refused > 0,
        "{restored} restored, {refused} refused"
    );
}

#[test]
fn hostile_index_entries_are_refused() {
    let mut d = disk_with_data();
    let (log, blob) = CowLog::create(&mut d, LOG, &DISKS, 40, 3, CRC).unwrap();
    let mut logs = vec![log];
    log_writes(&mut d, &mut logs, DISKS[0].start, 8192, CRC);
    let index = (LOG.start + ALIGN) as usize;
    let entry = |seq: u32, granule: u64, nonce: u64, kind: u32| {
        Entry {
            kind,
            seq,
            nonce,
            granule,
            data_crc: 0,
        }
        .encode(CRC)
    };
    let total = 16 + 5; // granules of both disks
    let cases: [(usize, [u8; ENTRY]); 6] = [
        (2, entry(2, total, 3, KIND_GRANULE)), // granule out of range
        (2, entry(2, 0, 3, KIND_GRANULE)),     // granule twice
        (2, entry(3, 5, 3, KIND_GRANULE)),     // wrong sequence
        (2, entry(2, 5, 4, KIND_GRANULE)),     // another log's nonce
        (2, entry(2, 5, 3, 7)),                // unknown kind
        (5, entry(5, 5, 3, KIND_GRANULE)),     // after the end
    ];
    for (slot, e) in cases {
        let mut h = d.clone();
        h.bytes_mut()[index + slot * ENTRY..][..ENTRY].copy_from_slice(&e);
        assert!(
            matches!(
                CowLog::open(&mut h, &blob, &DISKS, CRC),
                Err(LogError::Format(_))
            ),
            "slot {slot}"
        );
    }
    // The VM's disks changed: refused.
    let other = [DISKS[0]];
    assert!(CowLog::open(&mut d, &blob, &other, CRC).is_err());
    assert!(CowLog::open(&mut d, &blob, &DISKS, CRC).is_ok());
}

#[test]
fn writes_through_logged_are_logged_first() {
    let mut d = disk_with_data();
    let at_snapshot = guest(&d);
    let (log, _) = CowLog::create(&mut d, LOG, &DISKS, 40, 3, CRC).unwrap();
    let mut logs = vec![log];
    let mut l = Logged {
        disk: &mut d,
        logs: &mut logs,
        crc: CRC,
        broke: Vec::new(),
    };
    l.write_at(DISKS[1].start, &[7; 4096]).unwrap();
    assert!(l.broke.is_empty());
    assert_eq!(logs[0].saved(), 1);
    logs[0].restore(&mut d, CRC, &mut |_, _, _| {}).unwrap();
    assert_eq!(guest(&d), at_snapshot);
}

#[test]
fn capacity_fits_the_reserve() {
    for bytes in [0u64, 4096, 12288, 1 << 20, (64 << 20) + 7] {
        let c = capacity_for(bytes);
        assert!(layout_len(c) <= bytes || c == 0, "{bytes}");
        assert!(layout_len(c + 1) > bytes, "{bytes}");
    }
}

proptest! {
    #[test]
    fn hostile_headers_never_panic_and_stay_inside_the_disk(
        bytes in prop::collection::vec(any::<u8>(), 0..120),
        start in any::<u64>(), len in any::<u64>(), size in any::<u64>(), crc in any::<u32>(),
    ) {
        let mut block = vec![0u8; ALIGN as usize];
        let n = bytes.len().min(block.len());
        block[..n].copy_from_slice(&bytes[..n]);
        if n >= 12 {
            block[..8].copy_from_slice(&LOG_MAGIC);
            block[8..12].copy_from_slice(&LOG_VERSION.to_le_bytes());
        }
        let blob = Blob { extent: Extent { start, len }, size, crc32c: crc };
        let cap = 64u64 << 20;
        if let Ok(h) = LogHeader::decode(&block, &blob, cap, CRC) {
            prop_assert!(h.disks.iter().all(|d| d.start + d.len <= cap));
            prop_assert!(blob.extent.start + blob.extent.len <= cap);
            prop_assert_eq!(layout_len(h.capacity), size);
        }
        let _ = LogHeader::decode(&block[..n], &blob, cap, CRC);
    }

    #[test]
    fn a_random_index_never_panics(seed in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut d = disk_with_data();
        let (_, blob) = CowLog::create(&mut d, LOG, &DISKS, 40, 3, CRC).unwrap();
        let at = (LOG.start + ALIGN) as usize;
        d.bytes_mut()[at..at + seed.len()].copy_from_slice(&seed);
        if let Ok(l) = CowLog::open(&mut d, &blob, &DISKS, CRC) {
            prop_assert!(l.entries.iter().all(|&(g, _)| g < 21));
        }
    }
}
