//! Host tests of mass storage over a backend that completes late: the bulk
//! endpoints NAK while a request is with the backend, the doorbell write returns
//! at once, and the transfer or CSW completes from [`Controller::poll`] once the
//! backend does.

extern crate std;

use alloc::vec;
use alloc::vec::Vec;

use vdev::{BlockOp, GuestMemory};

use crate::controller::{Config, Controller};
use crate::defs::{cc, layout, speed, trb, trb_type, usb};
use crate::storage::{op as scsi, sense, MassStorage, CSW_FAILED, CSW_PASSED, CSW_PHASE_ERROR};
use crate::testing::{Driver, RamDisk, DATA};
use crate::trb::Trb;
use crate::usb::{Device, Setup};

const PORT: u8 = 5;
const SECTORS: usize = 1024;
const DCI_IN: u8 = 3;
const DCI_OUT: u8 = 4;
const CBW_AT: u64 = DATA + 0x18_0000;
const CSW_AT: u64 = DATA + 0x18_1000;

/// A started controller with a disk that holds every request, and the slot of
/// the enumerated storage device.
fn held(read_only: bool) -> (Controller<RamDisk>, Driver, u8) {
    let mut c = Controller::new(Config::default());
    let mut disk = RamDisk::patterned(SECTORS, read_only);
    disk.hold = true;
    c.attach(PORT, Device::Storage(MassStorage::new(disk, speed::SUPER)))
        .unwrap();
    let mut d = Driver::new();
    d.start(&mut c);
    let (slot, _) = d.enumerate(&mut c, PORT).unwrap();
    (c, d, slot)
}

fn disk(c: &mut Controller<RamDisk>) -> &mut RamDisk {
    c.storage_mut().unwrap().backend_mut()
}

fn sectors(from: usize, n: usize) -> Vec<u8> {
    RamDisk::patterned(SECTORS, false).data[from * 512..(from + n) * 512].to_vec()
}

fn cdb10(op: u8, lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![op, 0];
    c.extend_from_slice(&lba.to_be_bytes());
    c.push(0);
    c.extend_from_slice(&blocks.to_be_bytes());
    c.push(0);
    c
}

/// Sends a CBW (tag 7) on bulk OUT; it is taken at once.
fn cbw(c: &mut Controller<RamDisk>, d: &mut Driver, slot: u8, len: u32, dir_in: bool, cdb: &[u8]) {
    let mut b = vec![0u8; 31];
    b[0..4].copy_from_slice(&crate::storage::CBW_SIGNATURE.to_le_bytes());
    b[4..8].copy_from_slice(&7u32.to_le_bytes());
    b[8..12].copy_from_slice(&len.to_le_bytes());
    b[12] = if dir_in { 0x80 } else { 0 };
    b[14] = cdb.len() as u8;
    b[15..15 + cdb.len()].copy_from_slice(cdb);
    d.mem.write(CBW_AT, &b).unwrap();
    assert_eq!(
        d.transfer(c, slot, DCI_OUT, CBW_AT, 31),
        Some((cc::SUCCESS, 31))
    );
}

/// Queues a one-TRB TD and rings its doorbell; returns the TRB's address.
fn post(c: &mut Controller<RamDisk>, d: &mut Driver, slot: u8, dci: u8, buf: u64, len: u32) -> u64 {
    let flags = trb::IOC | if dci % 2 == 1 { trb::ISP } else { 0 };
    let at = d.push(slot, dci, Trb::new(trb_type::NORMAL, buf, len, flags));
    d.w32(c, layout::DOORBELLS + 4 * u64::from(slot), u32::from(dci));
    at
}

/// The controller's deferred work, as the VM runs it while `has_work`.
fn run(c: &mut Controller<RamDisk>, d: &mut Driver) {
    for _ in 0..64 {
        if !c.has_work() {
            return;
        }
        c.poll(&mut d.mem, &mut d.irq);
    }
    panic!("the controller never runs out of work");
}

/// The CSW: status and residue (tag and signature checked).
fn csw(c: &mut Controller<RamDisk>, d: &mut Driver, slot: u8) -> Option<(u8, u32)> {
    let at = post(c, d, slot, DCI_IN, CSW_AT, 13);
    let done = d.wait_transfer(c, at, 13).or_else(|| {
        run(c, d);
        d.wait_transfer(c, at, 13)
    })?;
    assert_eq!(done, (cc::SUCCESS, 13));
    let mut b = [0u8; 13];
    d.mem.read(CSW_AT, &mut b).unwrap();
    assert_eq!(b[0..4], crate::storage::CSW_SIGNATURE.to_le_bytes());
    assert_eq!(b[4..8], 7u32.to_le_bytes());
    Some((b[12], u32::from_le_bytes([b[8], b[9], b[10], b[11]])))
}

/// A CSW transfer that waits for the device: posted, no event yet.
fn csw_waits(c: &mut Controller<RamDisk>, d: &mut Driver, slot: u8) -> u64 {
    let at = post(c, d, slot, DCI_IN, CSW_AT, 13);
    run(c, d);
    assert_eq!(d.wait_transfer(c, at, 13), None, "the CSW came early");
    at
}

fn csw_of(d: &mut Driver) -> (u8, u32) {
    let mut b = [0u8; 13];
    d.mem.read(CSW_AT, &mut b).unwrap();
    (b[12], u32::from_le_bytes([b[8], b[9], b[10], b[11]]))
}

fn request_sense(c: &mut Controller<RamDisk>, d: &mut Driver, slot: u8) -> (u8, u8) {
    let (data, st, _) = d
        .bot(c, slot, &[scsi::REQUEST_SENSE, 0, 0, 0, 18, 0], 18, &[])
        .unwrap();
    assert_eq!(st, CSW_PASSED);
    (data[2], data[12])
}

#[test]
fn a_read_is_answered_from_poll_after_the_backend_completes_never_inside_the_doorbell() {
    let (mut c, mut d, slot) = held(false);
    // READ(10) of 130 sectors: more than one backend request (64 KiB each).
    let len = 130 * 512;
    cbw(
        &mut c,
        &mut d,
        slot,
        len,
        true,
        &cdb10(scsi::READ_10, 3, 130),
    );
    let at = post(&mut c, &mut d, slot, DCI_IN, DATA, len);
    // The doorbell returned with the first request at the backend, no data.
    assert_eq!(d.wait_transfer(&mut c, at, len), None);
    assert_eq!(disk(&mut c).held.len(), 1);
    assert_eq!(disk(&mut c).held[0].1, BlockOp::Read { offset: 3 * 512 });
    assert_eq!(disk(&mut c).held[0].2.len(), crate::storage::CHUNK);
    run(&mut c, &mut d);
    assert_eq!(
        d.wait_transfer(&mut c, at, len),
        None,
        "nothing completed yet"
    );
    // The first chunk alone does not fill the transfer (a short packet would end
    // the host's data phase): the second request goes out, the transfer waits.
    assert!(disk(&mut c).complete(0));
    assert!(c.has_work());
    run(&mut c, &mut d);
    assert_eq!(d.wait_transfer(&mut c, at, len), None);
    assert_eq!(
        disk(&mut c).held[0].1,
        BlockOp::Read {
            offset: (3 * 512 + crate::storage::CHUNK) as u64
        }
    );
    assert!(disk(&mut c).complete(0));
    run(&mut c, &mut d);
    assert_eq!(d.wait_transfer(&mut c, at, len), Some((cc::SUCCESS, len)));
    let mut got = vec![0u8; len as usize];
    d.mem.read(DATA, &mut got).unwrap();
    assert!(got == sectors(3, 130), "data differs");
    assert_eq!(csw(&mut c, &mut d, slot), Some((CSW_PASSED, 0)));
    assert!(disk(&mut c).held.is_empty());
}

#[test]
fn a_read_split_over_several_transfers_reads_ahead_and_keeps_order() {
    let (mut c, mut d, slot) = held(false);
    disk(&mut c).max_transfer = Some(2048);
    cbw(
        &mut c,
        &mut d,
        slot,
        8 * 512,
        true,
        &cdb10(scsi::READ_10, 100, 8),
    );
    // The read starts with the CBW, before any IN transfer.
    assert_eq!(disk(&mut c).held.len(), 1);
    let mut got = Vec::new();
    for part in 0..4u64 {
        let at = post(&mut c, &mut d, slot, DCI_IN, DATA, 1024);
        let mut done = d.wait_transfer(&mut c, at, 1024);
        if done.is_none() {
            // Even parts wait for their request; odd ones were read ahead.
            assert_eq!(part % 2, 0, "part {part} was not read ahead");
            assert!(disk(&mut c).complete(0));
            run(&mut c, &mut d);
            done = d.wait_transfer(&mut c, at, 1024);
        }
        assert_eq!(done, Some((cc::SUCCESS, 1024)), "part {part}");
        let mut b = vec![0u8; 1024];
        d.mem.read(DATA, &mut b).unwrap();
        got.extend_from_slice(&b);
    }
    assert!(got == sectors(100, 8));
    // Requests never exceeded the backend's limit, in disk order.
    let offsets: Vec<BlockOp> = disk(&mut c).log.iter().map(|l| l.0).collect();
    let want: Vec<BlockOp> = (0..2)
        .map(|i| BlockOp::Read {
            offset: 100 * 512 + i * 2048,
        })
        .collect();
    assert_eq!(offsets, want);
    assert_eq!(csw(&mut c, &mut d, slot), Some((CSW_PASSED, 0)));
}

#[test]
fn a_write_is_taken_at_once_and_its_csw_waits_for_the_backend() {
    let (mut c, mut d, slot) = held(false);
    let len = 200 * 512;
    let payload: Vec<u8> = (0..len).map(|i| (i * 31 + 5) as u8).collect();
    cbw(
        &mut c,
        &mut d,
        slot,
        len,
        false,
        &cdb10(scsi::WRITE_10, 40, 200),
    );
    d.mem.write(DATA, &payload).unwrap();
    let at = post(&mut c, &mut d, slot, DCI_OUT, DATA, len);
    assert_eq!(d.wait_transfer(&mut c, at, len), Some((cc::SUCCESS, len)));
    // One request at a time: the first chunk is with the backend.
    assert_eq!(disk(&mut c).held.len(), 1);
    let at = csw_waits(&mut c, &mut d, slot);
    assert!(disk(&mut c).complete(0));
    run(&mut c, &mut d);
    assert_eq!(
        d.wait_transfer(&mut c, at, 13),
        None,
        "CSW before the last write"
    );
    assert_eq!(disk(&mut c).held.len(), 1);
    assert!(disk(&mut c).complete(0));
    run(&mut c, &mut d);
    assert_eq!(d.wait_transfer(&mut c, at, 13), Some((cc::SUCCESS, 13)));
    assert_eq!(csw_of(&mut d), (CSW_PASSED, 0));
    assert!(disk(&mut c).data[40 * 512..240 * 512] == payload[..]);
}

#[test]
fn out_data_beyond_the_write_backlog_waits_for_a_completion() {
    let (mut c, mut d, slot) = held(false);
    disk(&mut c).max_transfer = Some(4096);
    let len = 144 * 512;
    let payload: Vec<u8> = (0..len).map(|i| (i * 7 + 1) as u8).collect();
    d.mem.write(DATA, &payload).unwrap();
    cbw(
        &mut c,
        &mut d,
        slot,
        len,
        false,
        &cdb10(scsi::WRITE_10, 0, 144),
    );
    // 64 KiB taken (4 KiB of it at the backend), then 4 KiB: the backlog is full.
    let a = post(&mut c, &mut d, slot, DCI_OUT, DATA, 64 << 10);
    assert_eq!(
        d.wait_transfer(&mut c, a, 64 << 10),
        Some((cc::SUCCESS, 64 << 10))
    );
    let b = post(&mut c, &mut d, slot, DCI_OUT, DATA + (64 << 10), 4096);
    assert_eq!(d.wait_transfer(&mut c, b, 4096), Some((cc::SUCCESS, 4096)));
    let last = post(&mut c, &mut d, slot, DCI_OUT, DATA + (68 << 10), 4096);
    run(&mut c, &mut d);
    assert_eq!(
        d.wait_transfer(&mut c, last, 4096),
        None,
        "taken past the backlog"
    );
    assert!(disk(&mut c).complete(0));
    run(&mut c, &mut d);
    assert_eq!(
        d.wait_transfer(&mut c, last, 4096),
        Some((cc::SUCCESS, 4096))
    );
    let at = csw_waits(&mut c, &mut d, slot);
    while disk(&mut c).complete(0) {
        run(&mut c, &mut d);
    }
    assert_eq!(d.wait_transfer(&mut c, at, 13), Some((cc::SUCCESS, 13)));
    assert_eq!(csw_of(&mut d), (CSW_PASSED, 0));
    assert!(disk(&mut c).data[..len as usize] == payload[..]);
    assert!(disk(&mut c).log.iter().all(|&(_, n)| n <= 4096));
}

#[test]
fn a_backend_failure_reported_late_fails_the_csw_with_medium_error_sense() {
    let (mut c, mut d, slot) = held(false);
    cbw(
        &mut c,
        &mut d,
        slot,
        4096,
        true,
        &cdb10(scsi::READ_10, 0, 8),
    );
    let at = post(&mut c, &mut d, slot, DCI_IN, DATA, 4096);
    disk(&mut c).fail = true;
    assert!(disk(&mut c).complete(0));
    run(&mut c, &mut d);
    // The data phase ends short (nothing read), the CSW says failed.
    assert_eq!(
        d.wait_transfer(&mut c, at, 4096),
        Some((cc::SHORT_PACKET, 0))
    );
    assert_eq!(csw(&mut c, &mut d, slot), Some((CSW_FAILED, 4096)));
    disk(&mut c).fail = false;
    disk(&mut c).hold = false;
    assert_eq!(
        request_sense(&mut c, &mut d, slot),
        (sense::MEDIUM_ERROR, sense::UNRECOVERED_READ_ERROR.0)
    );
}

#[test]
fn a_request_completing_after_reset_recovery_is_dropped_and_later_commands_read_right() {
    let (mut c, mut d, slot) = held(false);
    cbw(&mut c, &mut d, slot, 512, true, &cdb10(scsi::READ_10, 5, 1));
    assert_eq!(disk(&mut c).held.len(), 1);
    // The host gives up: Bulk-Only Mass Storage Reset, halts cleared.
    let reset = Setup {
        request_type: 0x21,
        request: usb::BOT_RESET,
        value: 0,
        index: 0,
        length: 0,
    };
    d.control(&mut c, slot, reset, &[]).unwrap();
    // A new READ waits for the abandoned request (one at a time, in order).
    cbw(&mut c, &mut d, slot, 512, true, &cdb10(scsi::READ_10, 9, 1));
    let at = post(&mut c, &mut d, slot, DCI_IN, DATA, 512);
    assert_eq!(disk(&mut c).held.len(), 1);
    // A confused backend completes a request nobody made: dropped.
    disk(&mut c).complete_unknown(999);
    run(&mut c, &mut d);
    assert_eq!(d.wait_transfer(&mut c, at, 512), None);
    assert!(disk(&mut c).complete(0));
    run(&mut c, &mut d);
    assert_eq!(
        d.wait_transfer(&mut c, at, 512),
        None,
        "stale data delivered"
    );
    assert_eq!(disk(&mut c).held[0].1, BlockOp::Read { offset: 9 * 512 });
    assert!(disk(&mut c).complete(0));
    run(&mut c, &mut d);
    assert_eq!(d.wait_transfer(&mut c, at, 512), Some((cc::SUCCESS, 512)));
    let mut b = vec![0u8; 512];
    d.mem.read(DATA, &mut b).unwrap();
    assert!(b == sectors(9, 1));
    assert_eq!(csw(&mut c, &mut d, slot), Some((CSW_PASSED, 0)));
}

#[test]
fn a_busy_backend_is_asked_again_at_the_next_poll() {
    let (mut c, mut d, slot) = held(false);
    disk(&mut c).busy = 2;
    disk(&mut c).hold = false;
    cbw(
        &mut c,
        &mut d,
        slot,
        1024,
        true,
        &cdb10(scsi::READ_10, 20, 2),
    );
    let at = post(&mut c, &mut d, slot, DCI_IN, DATA, 1024);
    assert_eq!(d.wait_transfer(&mut c, at, 1024), None);
    assert!(c.has_work(), "a busy backend leaves work for the poll");
    run(&mut c, &mut d);
    assert_eq!(d.wait_transfer(&mut c, at, 1024), Some((cc::SUCCESS, 1024)));
    let mut b = vec![0u8; 1024];
    d.mem.read(DATA, &mut b).unwrap();
    assert!(b == sectors(20, 2));
    assert_eq!(csw(&mut c, &mut d, slot), Some((CSW_PASSED, 0)));
}

#[test]
fn synchronize_cache_waits_for_the_flush() {
    let (mut c, mut d, slot) = held(false);
    cbw(
        &mut c,
        &mut d,
        slot,
        0,
        false,
        &cdb10(scsi::SYNCHRONIZE_CACHE_10, 0, 0),
    );
    assert_eq!(disk(&mut c).held[0].1, BlockOp::Flush);
    let at = csw_waits(&mut c, &mut d, slot);
    assert!(disk(&mut c).complete(0));
    run(&mut c, &mut d);
    assert_eq!(d.wait_transfer(&mut c, at, 13), Some((cc::SUCCESS, 13)));
    assert_eq!(csw_of(&mut d), (CSW_PASSED, 0));
}

#[test]
fn guest_values_are_checked_before_the_backend_sees_a_request() {
    let (mut c, mut d, slot) = held(false);
    disk(&mut c).hold = false;
    // LBA + count beyond the medium, and an LBA + count that wraps.
    let (_, st, res) = d
        .bot(
            &mut c,
            slot,
            &cdb10(scsi::READ_10, SECTORS as u32 - 1, 2),
            1024,
            &[],
        )
        .unwrap();
    assert_eq!((st, res), (CSW_FAILED, 1024));
    assert_eq!(
        request_sense(&mut c, &mut d, slot),
        (sense::ILLEGAL_REQUEST, sense::LBA_OUT_OF_RANGE.0)
    );
    let mut r16 = vec![scsi::READ_16, 0];
    r16.extend_from_slice(&u64::MAX.to_be_bytes());
    r16.extend_from_slice(&2u32.to_be_bytes());
    r16.extend_from_slice(&[0, 0]);
    let (_, st, _) = d.bot(&mut c, slot, &r16, 1024, &[]).unwrap();
    assert_eq!(st, CSW_FAILED);
    // The host expects less than the command moves (BOT case 7): phase error.
    let (_, st, _) = d
        .bot(&mut c, slot, &cdb10(scsi::READ_10, 0, 4), 1024, &[])
        .unwrap();
    assert_eq!(st, CSW_PHASE_ERROR);
    // A READ with an OUT data phase (case 10): phase error.
    let (_, st, _) = d
        .bot(&mut c, slot, &cdb10(scsi::READ_10, 0, 1), 0, &[0; 512])
        .unwrap();
    assert_eq!(st, CSW_PHASE_ERROR);
    // None of them reached the backend; LUN 1 neither.
    let mut cbw_lun1 = vec![0u8; 31];
    cbw_lun1[0..4].copy_from_slice(&crate::storage::CBW_SIGNATURE.to_le_bytes());
    cbw_lun1[4..8].copy_from_slice(&7u32.to_le_bytes());
    cbw_lun1[8..12].copy_from_slice(&512u32.to_le_bytes());
    cbw_lun1[12] = 0x80;
    cbw_lun1[13] = 1;
    cbw_lun1[14] = 10;
    cbw_lun1[15..25].copy_from_slice(&cdb10(scsi::READ_10, 0, 1));
    d.mem.write(CBW_AT, &cbw_lun1).unwrap();
    assert_eq!(
        d.transfer(&mut c, slot, DCI_OUT, CBW_AT, 31),
        Some((cc::SUCCESS, 31))
    );
    let at = post(&mut c, &mut d, slot, DCI_IN, DATA, 512);
    assert_eq!(
        d.wait_transfer(&mut c, at, 512),
        Some((cc::SHORT_PACKET, 0))
    );
    assert_eq!(csw(&mut c, &mut d, slot), Some((CSW_FAILED, 512)));
    assert!(disk(&mut c).log.is_empty(), "{:?}", disk(&mut c).log);
}

#[test]
fn a_read_only_medium_is_write_protected_and_writes_never_reach_it() {
    let (mut c, mut d, slot) = held(true);
    disk(&mut c).hold = false;
    let (ms, st, _) = d
        .bot(
            &mut c,
            slot,
            &[scsi::MODE_SENSE_6, 0, 0x3f, 0, 192, 0],
            192,
            &[],
        )
        .unwrap();
    assert_eq!(st, CSW_PASSED);
    assert_eq!(ms[2] & 0x80, 0x80, "WP bit");
    let (_, st, res) = d
        .bot(&mut c, slot, &cdb10(scsi::WRITE_10, 0, 1), 0, &[0xaa; 512])
        .unwrap();
    assert_eq!((st, res), (CSW_FAILED, 512));
    assert_eq!(
        request_sense(&mut c, &mut d, slot),
        (sense::DATA_PROTECT, sense::WRITE_PROTECTED.0)
    );
    // SYNCHRONIZE CACHE passes without a flush.
    let (_, st, _) = d
        .bot(
            &mut c,
            slot,
            &cdb10(scsi::SYNCHRONIZE_CACHE_10, 0, 0),
            0,
            &[],
        )
        .unwrap();
    assert_eq!(st, CSW_PASSED);
    assert!(disk(&mut c)
        .log
        .iter()
        .all(|(op, _)| matches!(op, BlockOp::Read { .. })));
    assert!(disk(&mut c).data == RamDisk::patterned(SECTORS, true).data);
}
