//! `registry`: the system-disk registry's decoders, from a fuzz-controlled disk. The
//! first byte picks what the rest is:
//!
//! - `0`: one superblock copy (padded or cut to 512 bytes; bit 7 of the first byte
//!   recomputes its CRC so the fields behind it are reached);
//! - `1`/`2`: a slot payload of slot version 1/2 (the VM records);
//! - `3`: one encoded VM record;
//! - `4`: the payload of slot A of a freshly formatted 64 MiB disk (valid superblocks and
//!   slot header written around it; bit 7 also writes a second payload, the bytes after
//!   the first `u16` length, to slot B one generation later), then `Registry::open`;
//! - `5`: a sparse disk image: a capacity (u16, MiB above the minimum) and patches
//!   (block number u16, length u16, bytes), then `Registry::open` — the corpus holds
//!   real `cargo xtask disk` images in this form.
//!
//! Invariants: whatever decodes re-encodes to something that decodes to the same
//! value; an opened registry's VMs pass their own check, their extents lie in the
//! data area without overlapping, and free space plus used space is the data area.

use std::collections::BTreeMap;

use registry::codec::Writer;
use registry::defs::{
    sb, BLOCK_SIZE, MIN_DISK_SIZE, SUPERBLOCK_BACKUP_OFFSET, SUPERBLOCK_PRIMARY_OFFSET,
    SUPERBLOCK_SIZE,
};
use registry::slot::{build_slot_version, decode_payload_version, encode_payload};
use registry::{crc32c, Registry, SlotId, Superblock, Uuid, VmRecord};
use vdev::{BlockBackend, BlockError};

/// Flag bit of the first byte (see the module documentation).
const FLAG: u8 = 0x80;
const MODE_MASK: u8 = 0x7F;
const MIB: u64 = 1 << 20;
/// The disk UUID of formatted disks this target builds.
const DISK_UUID: [u8; 16] = *b"RayOS fuzz disk!";
/// Capacity of the formatted disks of mode 4 (room for the VMs of the seed images).
const FORMATTED_SIZE: u64 = 64 * MIB;

/// A disk of any capacity that stores only the blocks written to it.
pub struct SparseDisk {
    capacity: u64,
    blocks: BTreeMap<u64, Vec<u8>>,
}

impl SparseDisk {
    /// A zeroed disk of `capacity` bytes.
    pub fn new(capacity: u64) -> Self {
        Self {
            capacity,
            blocks: BTreeMap::new(),
        }
    }

    fn check(&self, offset: u64, len: usize) -> Result<(), BlockError> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.capacity => Ok(()),
            _ => Err(BlockError::OutOfRange),
        }
    }
}

impl BlockBackend for SparseDisk {
    fn capacity(&self) -> u64 {
        self.capacity
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.check(offset, buf.len())?;
        let mut done = 0;
        while done < buf.len() {
            let at = offset + done as u64;
            let within = (at % BLOCK_SIZE) as usize;
            let n = (BLOCK_SIZE as usize - within).min(buf.len() - done);
            let out = &mut buf[done..done + n];
            match self.blocks.get(&(at / BLOCK_SIZE)) {
                Some(blk) => out.copy_from_slice(&blk[within..within + n]),
                None => out.fill(0),
            }
            done += n;
        }
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        self.check(offset, data.len())?;
        let mut done = 0;
        while done < data.len() {
            let at = offset + done as u64;
            let within = (at % BLOCK_SIZE) as usize;
            let n = (BLOCK_SIZE as usize - within).min(data.len() - done);
            let blk = self
                .blocks
                .entry(at / BLOCK_SIZE)
                .or_insert_with(|| vec![0; BLOCK_SIZE as usize]);
            blk[within..within + n].copy_from_slice(&data[done..done + n]);
            done += n;
        }
        Ok(())
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        Ok(())
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let Some((&control, rest)) = data.split_first() else {
        return;
    };
    let flag = control & FLAG != 0;
    match control & MODE_MASK {
        0 => superblock(rest, flag),
        1 => payload(rest, 1),
        2 => payload(rest, 2),
        3 => record(rest),
        4 => formatted(rest, flag),
        5 => image(rest),
        _ => {}
    }
}

fn superblock(rest: &[u8], fix_crc: bool) {
    let mut b = [0u8; SUPERBLOCK_SIZE];
    let n = rest.len().min(SUPERBLOCK_SIZE);
    b[..n].copy_from_slice(&rest[..n]);
    if fix_crc {
        let crc = crc32c(&b[..sb::CRC]);
        b[sb::CRC..sb::CRC + 4].copy_from_slice(&crc.to_le_bytes());
    }
    if let Ok(s) = Superblock::decode(&b) {
        assert_eq!(
            Superblock::decode(&s.encode()),
            Ok(s),
            "superblock round trip"
        );
    }
}

fn payload(rest: &[u8], version: u32) {
    let Ok(vms) = decode_payload_version(rest, version) else {
        return;
    };
    let again = decode_payload_version(&encode_payload(&vms), registry::defs::SLOT_VERSION);
    assert_eq!(again.as_ref(), Ok(&vms), "payload round trip");
}

fn record(rest: &[u8]) {
    let Ok(vm) = VmRecord::decode(rest) else {
        return;
    };
    let mut w = Writer::new();
    vm.encode(&mut w);
    assert_eq!(
        VmRecord::decode(&w.into_bytes()),
        Ok(vm),
        "record round trip"
    );
}

/// A formatted disk of [`FORMATTED_SIZE`] around the fuzzed slot payloads.
fn formatted(rest: &[u8], second: bool) {
    let uuid = Uuid(DISK_UUID);
    let Some(s) = Superblock::for_capacity(uuid, FORMATTED_SIZE) else {
        panic!("no geometry for a {FORMATTED_SIZE}-byte disk");
    };
    let mut disk = SparseDisk::new(FORMATTED_SIZE);
    let sbytes = s.encode();
    for at in [SUPERBLOCK_PRIMARY_OFFSET, SUPERBLOCK_BACKUP_OFFSET] {
        let _ = disk.write_at(at, &sbytes);
    }
    let (a, b) = if second && rest.len() >= 2 {
        let n = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        (&rest[2..2 + n], Some(&rest[2 + n..]))
    } else {
        (rest, None)
    };
    let max = registry::defs::MAX_PAYLOAD;
    let slot_a = build_slot_version(&s, SlotId::A, 1, &a[..a.len().min(max)], 2);
    let _ = disk.write_at(s.slot_a_offset, &slot_a);
    if let Some(b) = b {
        let slot_b = build_slot_version(&s, SlotId::B, 2, &b[..b.len().min(max)], 2);
        let _ = disk.write_at(s.slot_b_offset, &slot_b);
    }
    open(&mut disk);
}

/// A sparse image: capacity, then (block, length, bytes) patches.
fn image(rest: &[u8]) {
    if rest.len() < 2 {
        return;
    }
    let extra = u64::from(u16::from_le_bytes([rest[0], rest[1]]));
    let mut disk = SparseDisk::new(MIN_DISK_SIZE + extra * MIB);
    let mut r = &rest[2..];
    while r.len() >= 4 {
        let block = u64::from(u16::from_le_bytes([r[0], r[1]]));
        let len = usize::from(u16::from_le_bytes([r[2], r[3]])).min(r.len() - 4);
        let _ = disk.write_at(block * BLOCK_SIZE, &r[4..4 + len]);
        r = &r[4 + len..];
    }
    open(&mut disk);
}

fn open(disk: &mut SparseDisk) {
    let Ok(reg) = Registry::open(disk) else {
        return;
    };
    let data = reg.superblock().data_area();
    let mut used: Vec<(u64, u64)> = Vec::new();
    for vm in reg.vms() {
        assert_eq!(vm.check(), Ok(()), "opened VM fails its own check");
        for (_, e) in vm.extents() {
            if e.is_empty() {
                continue;
            }
            let Some(end) = e.end() else {
                panic!("extent {e:?} wraps");
            };
            assert!(
                e.start >= data.start && end <= data.start + data.len,
                "extent {e:?} outside the data area {data:?}"
            );
            used.push((e.start, end));
        }
    }
    used.sort_unstable();
    for w in used.windows(2) {
        assert!(
            w[0].1 <= w[1].0,
            "extents {:?} and {:?} overlap",
            w[0],
            w[1]
        );
    }
    let used_bytes: u64 = used.iter().map(|(s, e)| e - s).sum();
    assert_eq!(
        reg.free_bytes() + used_bytes,
        data.len,
        "free and used space do not add up to the data area"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparse_disk_reads_back_what_was_written_across_blocks() {
        let mut d = SparseDisk::new(8 * BLOCK_SIZE);
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8 | 1).collect();
        d.write_at(300, &data).unwrap();
        let mut all = vec![0xEE; 8 * BLOCK_SIZE as usize];
        d.read_at(0, &mut all).unwrap();
        assert!(all[..300].iter().all(|&b| b == 0));
        assert_eq!(&all[300..1300], &data[..]);
        assert!(all[1300..].iter().all(|&b| b == 0));
        assert_eq!(
            d.read_at(8 * BLOCK_SIZE - 1, &mut [0; 2]),
            Err(BlockError::OutOfRange)
        );
        assert_eq!(d.write_at(u64::MAX, &[0]), Err(BlockError::OutOfRange));
    }
}
