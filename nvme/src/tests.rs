//! The controller driven the way Linux's `nvme` driver drives it, and by a hostile
//! host.

extern crate std;

use alloc::vec;
use alloc::vec::Vec;

use vdev::{AccessSize, BlockError, GuestMemory, SaveRestore};

use crate::controller::{Config, Controller, MAX_TRANSFER};
use crate::defs::{admin, aer, feature, identify, io, log_page, reg, Status, CAP, CSTS};
use crate::testing::{Driver, RamDisk, Sqe, DATA, PAGE, RAM_BASE, RAM_SIZE};

const DISK: usize = 1 << 20;
const BLOCKS: u64 = DISK as u64 / 512;

fn config(io_queues: u16) -> Config {
    Config {
        io_queues,
        vectors: io_queues + 1,
        max_queue_entries: 64,
        serial: b"SN-TEST-1".to_vec(),
        ..Config::default()
    }
}

fn driver(io_queues: u16) -> Driver<RamDisk> {
    Driver::new(Controller::new(RamDisk::new(DISK), config(io_queues)))
}

/// A driver with the controller enabled and `n` I/O queue pairs of 16 entries,
/// pair `q` on vector `q`.
fn ready(n: u16) -> Driver<RamDisk> {
    let mut d = driver(n);
    assert_eq!(d.enable() & 1, 1, "CSTS.RDY");
    let nq = u32::from(n - 1);
    let c = d.admin(
        Sqe::new(admin::SET_FEATURES)
            .cdw(10, u32::from(feature::NUMBER_OF_QUEUES))
            .cdw(11, nq | nq << 16),
    );
    assert_eq!(c.status(), Status::SUCCESS);
    for q in 1..=n {
        let (a, b) = d.create_pair(q, 16, q);
        assert_eq!((a.status(), b.status()), (Status::SUCCESS, Status::SUCCESS));
    }
    d
}

fn page(n: u64) -> u64 {
    DATA + n * PAGE
}

fn rw(opcode: u8, slba: u64, blocks: u32) -> Sqe {
    Sqe::new(opcode)
        .nsid(1)
        .cdw(10, slba as u32)
        .cdw(11, (slba >> 32) as u32)
        .cdw(12, blocks - 1)
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn identify(d: &mut Driver<RamDisk>, cns: u32, nsid: u32) -> (Status, Vec<u8>) {
    d.mem.write(page(0), &[0xee; 4096]).unwrap();
    let c = d.admin(
        Sqe::new(admin::IDENTIFY)
            .nsid(nsid)
            .prp(page(0), 0)
            .cdw(10, cns),
    );
    let mut buf = vec![0u8; 4096];
    d.mem.read(page(0), &mut buf).unwrap();
    (c.status(), buf)
}

#[test]
fn capabilities_and_version_are_what_linux_reads() {
    let mut d = driver(4);
    let cap = d.read_reg(reg::CAP, AccessSize::Double);
    let cap = tock_registers::LocalRegisterCopy::<u64, CAP::Register>::new(cap);
    assert_eq!(cap.read(CAP::MQES), 63);
    assert_eq!(cap.read(CAP::DSTRD), 0);
    assert!(cap.is_set(CAP::CQR));
    assert_eq!(cap.read(CAP::CSS), 1, "NVM command set");
    assert_eq!(cap.read(CAP::MPSMIN), 0);
    // 32-bit halves agree with the 64-bit read.
    let lo = d.read_reg(reg::CAP, AccessSize::Word);
    let hi = d.read_reg(reg::CAP + 4, AccessSize::Word);
    assert_eq!(lo | hi << 32, cap.get());
    assert_eq!(d.read_reg(reg::VS, AccessSize::Word), 0x0001_0400);
    assert_eq!(d.csts(), 0);
    // Byte accesses and unaligned ones are refused, not answered with garbage.
    assert!(d.ctrl.read(reg::CSTS, AccessSize::Byte).is_err());
    assert!(d.ctrl.read(reg::CSTS + 2, AccessSize::Word).is_err());
}

#[test]
fn linux_bring_up_identify_and_queue_creation() {
    let mut d = driver(2);
    assert_eq!(d.enable(), 1);
    let (s, id) = identify(&mut d, u32::from(identify::CNS_CONTROLLER), 0);
    assert_eq!(s, Status::SUCCESS);
    assert_eq!(&id[identify::SN..identify::SN + 10], b"SN-TEST-1 ");
    assert_eq!(id[identify::MDTS], 8);
    assert_eq!(MAX_TRANSFER, 1 << 20);
    assert_eq!(id[identify::SQES], 0x66);
    assert_eq!(id[identify::CQES], 0x44);
    assert_eq!(&id[identify::NN..identify::NN + 4], &1u32.to_le_bytes());
    assert_eq!(id[identify::ONCS] & 0b1100, 0b1100, "DSM and Write Zeroes");
    assert_eq!(id[identify::VWC] & 1, 1);
    assert_eq!(id[identify::AERL], 3);
    assert_eq!(
        &id[identify::VER..identify::VER + 4],
        &0x0001_0400u32.to_le_bytes()
    );

    let (s, ns) = identify(&mut d, u32::from(identify::CNS_NAMESPACE), 1);
    assert_eq!(s, Status::SUCCESS);
    assert_eq!(&ns[0..8], &BLOCKS.to_le_bytes(), "NSZE");
    assert_eq!(ns[identify::LBAF0 + 2], 9, "LBADS: 512-byte blocks");
    let (s, list) = identify(&mut d, u32::from(identify::CNS_ACTIVE_NSID_LIST), 0);
    assert_eq!(s, Status::SUCCESS);
    assert_eq!(&list[..8], &[1, 0, 0, 0, 0, 0, 0, 0]);
    let (s, _) = identify(&mut d, u32::from(identify::CNS_NAMESPACE), 2);
    assert_eq!(s, Status::INVALID_NAMESPACE);
    let (s, _) = identify(&mut d, 0x55, 0);
    assert_eq!(s, Status::INVALID_FIELD);

    // Linux asks for one queue per possible CPU; it gets the configured count.
    let c = d.admin(
        Sqe::new(admin::SET_FEATURES)
            .cdw(10, u32::from(feature::NUMBER_OF_QUEUES))
            .cdw(11, 7 | 7 << 16),
    );
    assert_eq!((c.status(), c.dw0), (Status::SUCCESS, 1 | 1 << 16));
    for q in 1..=2 {
        let (a, b) = d.create_pair(q, 16, q);
        assert_eq!((a.status(), b.status()), (Status::SUCCESS, Status::SUCCESS));
    }
    let (a, _) = d.create_pair(3, 16, 1);
    assert_eq!(a.status(), Status::INVALID_QUEUE_IDENTIFIER);
    // Number of Queues cannot change once I/O queues exist.
    let c = d.admin(
        Sqe::new(admin::SET_FEATURES)
            .cdw(10, u32::from(feature::NUMBER_OF_QUEUES))
            .cdw(11, 0),
    );
    assert_eq!(c.status(), Status::COMMAND_SEQUENCE_ERROR);
    // Each queue's completions raise its own vector.
    d.irq.0.clear();
    for q in 1..=2 {
        let c = d.cmd(q, Sqe::new(io::FLUSH).nsid(1));
        assert_eq!((c.status(), c.sqid), (Status::SUCCESS, q));
    }
    assert_eq!(d.irq.0, [1, 2]);
}

#[test]
fn reads_and_writes_with_prp_lists_crossing_pages() {
    let mut d = ready(1);
    // 64 KiB starting 0x200 into page 1: PRP1 covers 3.5 KiB, the rest is 15 pages
    // plus a half, described by a list in page 40.
    let data = pattern(64 << 10, 3);
    let buf = page(1) + 0x200;
    d.mem.write(buf, &data).unwrap();
    for i in 0..16 {
        d.mem.write_u64(page(40) + i * 8, page(2 + i)).unwrap();
    }
    let c = d.cmd(1, rw(io::WRITE, 100, 128).prp(buf, page(40)));
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(
        &d.ctrl.backend().data[100 * 512..100 * 512 + data.len()],
        &data[..]
    );

    // Read it back into scattered pages with a list that starts in the last two
    // slots of a page and chains to the next list page.
    let list = page(61) - 16;
    let targets: Vec<u64> = (0..15).map(|i| page(80 + 2 * i)).collect();
    d.mem.write_u64(list, targets[0]).unwrap();
    d.mem.write_u64(list + 8, page(62)).unwrap();
    for (i, t) in targets[1..].iter().enumerate() {
        d.mem.write_u64(page(62) + i as u64 * 8, *t).unwrap();
    }
    let c = d.cmd(1, rw(io::READ, 100, 128).prp(page(70), list));
    assert_eq!(c.status(), Status::SUCCESS);
    let mut got = vec![0u8; 4096];
    d.mem.read(page(70), &mut got).unwrap();
    assert_eq!(&got[..], &data[..4096]);
    for (i, t) in targets.iter().enumerate() {
        d.mem.read(*t, &mut got).unwrap();
        assert_eq!(&got[..], &data[4096 * (i + 1)..4096 * (i + 2)], "page {i}");
    }
    // The transfer MDTS allows exactly (one list page of 255 entries), and one
    // block more.
    let list = page(600);
    for i in 0..MAX_TRANSFER / PAGE - 1 {
        d.mem.write_u64(list + i * 8, page(2 + i)).unwrap();
    }
    d.ctrl.backend_mut().data[..MAX_TRANSFER as usize].fill(0x3c);
    let c = d.cmd(
        1,
        rw(io::READ, 0, (MAX_TRANSFER / 512) as u32).prp(page(1), list),
    );
    assert_eq!(c.status(), Status::SUCCESS);
    let mut got = vec![0u8; MAX_TRANSFER as usize];
    d.mem.read(page(1), &mut got).unwrap();
    assert!(got.iter().all(|&b| b == 0x3c), "1 MiB landed in 256 pages");
    let c = d.cmd(
        1,
        rw(io::READ, 0, (MAX_TRANSFER / 512) as u32 + 1).prp(page(1), list),
    );
    assert_eq!(c.status(), Status::INVALID_FIELD);
}

#[test]
fn commands_complete_when_the_backend_does_not_in_the_doorbell_write() {
    let mut d = ready(1);
    d.ctrl.backend_mut().hold = true;
    d.ctrl.backend_mut().data[512..1024].fill(0x5a);
    d.irq.0.clear();
    let cid = d.submit(1, rw(io::READ, 1, 1).prp(page(3), 0));
    assert!(d.reap(1).is_empty(), "completed inside the doorbell write");
    assert_eq!((d.ctrl.in_flight(), d.ctrl.backend().queued()), (1, 1));
    assert!(d.irq.0.is_empty());
    d.poll();
    assert!(d.reap(1).is_empty(), "completed before the backend");
    d.ctrl.backend_mut().release(1);
    assert!(d.ctrl.has_work());
    d.poll();
    let c = d.reap(1);
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].cid, c[0].status(), c[0].sqhd),
        (cid, Status::SUCCESS, 1)
    );
    assert_eq!(d.irq.0, [1]);
    let mut got = [0u8; 512];
    d.mem.read(page(3), &mut got).unwrap();
    assert_eq!(got, [0x5a; 512]);
}

#[test]
fn flush_write_zeroes_discard_and_fua() {
    let mut d = ready(1);
    d.ctrl.backend_mut().data.fill(0xff);
    let c = d.cmd(1, Sqe::new(io::FLUSH).nsid(1));
    assert_eq!((c.status(), d.ctrl.backend().flushes), (Status::SUCCESS, 1));
    // Write Zeroes of 300 blocks (more than one bounce buffer).
    let c = d.cmd(1, rw(io::WRITE_ZEROES, 10, 300));
    assert_eq!(c.status(), Status::SUCCESS);
    let disk = &d.ctrl.backend().data;
    assert!(disk[10 * 512..310 * 512].iter().all(|&b| b == 0));
    assert_eq!((disk[10 * 512 - 1], disk[310 * 512]), (0xff, 0xff));
    // Dataset Management deallocate: two ranges, validated.
    let mut ranges = Vec::new();
    for (slba, n) in [(0u64, 8u32), (BLOCKS - 8, 8)] {
        ranges.extend(0u32.to_le_bytes());
        ranges.extend(n.to_le_bytes());
        ranges.extend(slba.to_le_bytes());
    }
    d.mem.write(page(5), &ranges).unwrap();
    let dsm = |nr: u32| {
        Sqe::new(io::DATASET_MANAGEMENT)
            .nsid(1)
            .prp(page(5), 0)
            .cdw(10, nr - 1)
            .cdw(11, io::DSM_AD)
    };
    assert_eq!(d.cmd(1, dsm(2)).status(), Status::SUCCESS);
    d.mem.write_u64(page(5) + 16 + 8, BLOCKS - 7).unwrap();
    assert_eq!(d.cmd(1, dsm(2)).status(), Status::LBA_OUT_OF_RANGE);
    // A Force Unit Access write is followed by a flush; so is every write once the
    // volatile write cache is off.
    let flushes = d.ctrl.backend().flushes;
    let c = d.cmd(1, rw(io::WRITE, 0, 1).prp(page(6), 0).cdw(12, io::FUA));
    assert_eq!(
        (c.status(), d.ctrl.backend().flushes),
        (Status::SUCCESS, flushes + 1)
    );
    let c = d.cmd(1, rw(io::WRITE, 0, 1).prp(page(6), 0));
    assert_eq!(
        (c.status(), d.ctrl.backend().flushes),
        (Status::SUCCESS, flushes + 1)
    );
    let vwc = |on: u32| {
        Sqe::new(admin::SET_FEATURES)
            .cdw(10, u32::from(feature::VOLATILE_WRITE_CACHE))
            .cdw(11, on)
    };
    assert_eq!(d.admin(vwc(0)).status(), Status::SUCCESS);
    let c =
        d.admin(Sqe::new(admin::GET_FEATURES).cdw(10, u32::from(feature::VOLATILE_WRITE_CACHE)));
    assert_eq!(c.dw0, 0);
    d.cmd(1, rw(io::WRITE, 0, 1).prp(page(6), 0));
    assert_eq!(d.ctrl.backend().flushes, flushes + 2);
}

#[test]
fn reset_with_io_in_flight_never_writes_guest_memory_afterwards() {
    let mut d = ready(1);
    d.ctrl.backend_mut().hold = true;
    d.ctrl.backend_mut().data.fill(0x77);
    d.mem.write(page(10), &[0x11; 8192]).unwrap();
    for i in 0..4 {
        d.submit(1, rw(io::READ, i * 4, 4).prp(page(10) + i * 2048, 0));
    }
    assert_eq!(d.ctrl.backend().queued(), 4);
    let (_, cq) = Driver::<RamDisk>::queue_area(1);
    let mut cq_before = vec![0u8; 256];
    d.mem.read(cq, &mut cq_before).unwrap();
    d.disable();
    assert_eq!(d.csts() & 1, 0, "RDY clears");
    assert_eq!(d.ctrl.in_flight(), 0);
    d.ctrl.backend_mut().release(4);
    d.poll();
    let mut after = vec![0u8; 8192];
    d.mem.read(page(10), &mut after).unwrap();
    assert!(
        after.iter().all(|&b| b == 0x11),
        "a read landed after the reset"
    );
    let mut cq_after = vec![0u8; 256];
    d.mem.read(cq, &mut cq_after).unwrap();
    assert_eq!(
        cq_before, cq_after,
        "a completion was posted after the reset"
    );
    assert_eq!(d.ctrl.backend_ops(), 0);
    // The controller comes back and works.
    d.ctrl.backend_mut().hold = false;
    assert_eq!(d.enable() & 1, 1);
    d.create_pair(1, 16, 1);
    let c = d.cmd(1, rw(io::READ, 0, 1).prp(page(10), 0));
    assert_eq!(c.status(), Status::SUCCESS);
    let mut got = [0u8; 512];
    d.mem.read(page(10), &mut got).unwrap();
    assert_eq!(got, [0x77; 512]);
}

#[test]
fn shutdown_waits_for_commands_then_flushes() {
    let mut d = ready(1);
    d.ctrl.backend_mut().hold = true;
    d.submit(1, rw(io::WRITE, 0, 1).prp(page(2), 0));
    let cc = d.read_reg(reg::CC, AccessSize::Word);
    d.write_reg(reg::CC, AccessSize::Word, cc | 1 << 14);
    let shst = |d: &mut Driver<RamDisk>| {
        tock_registers::LocalRegisterCopy::<u32, CSTS::Register>::new(d.csts()).read(CSTS::SHST)
    };
    assert_eq!(shst(&mut d), 1, "occurring");
    d.ctrl.backend_mut().release(1);
    d.poll();
    assert_eq!(d.reap(1).len(), 1);
    assert_eq!(
        (shst(&mut d), d.ctrl.backend().flushes),
        (1, 0),
        "flush queued"
    );
    d.ctrl.backend_mut().release(1);
    d.poll();
    assert_eq!((shst(&mut d), d.ctrl.backend().flushes), (2, 1), "complete");
    d.disable();
    assert_eq!(d.csts(), 0);
}

// ---- hostile host -------------------------------------------------------------------

#[test]
fn prps_outside_ram_or_misaligned_get_their_status_codes() {
    let mut d = ready(1);
    let outside = RAM_BASE + RAM_SIZE as u64;
    let cases = [
        // Data pointer outside RAM: read data cannot land, write data cannot be read.
        (
            rw(io::READ, 0, 1).prp(outside, 0),
            Status::DATA_TRANSFER_ERROR,
        ),
        (
            rw(io::WRITE, 0, 1).prp(0x1000, 0),
            Status::DATA_TRANSFER_ERROR,
        ),
        // A PRP list outside RAM.
        (
            rw(io::READ, 0, 24).prp(page(1), outside),
            Status::DATA_TRANSFER_ERROR,
        ),
        // PRP1 not dword aligned; PRP2 data page not page aligned; list not qword aligned.
        (
            rw(io::READ, 0, 1).prp(page(1) + 2, 0),
            Status::PRP_OFFSET_INVALID,
        ),
        (
            rw(io::READ, 0, 8).prp(page(1) + 512, page(2) + 4),
            Status::PRP_OFFSET_INVALID,
        ),
        (
            rw(io::READ, 0, 24).prp(page(1), page(2) + 4),
            Status::PRP_OFFSET_INVALID,
        ),
        // An identify buffer outside RAM.
        (
            Sqe::new(admin::IDENTIFY).prp(outside, 0).cdw(10, 1),
            Status::DATA_TRANSFER_ERROR,
        ),
    ];
    for (i, (sqe, want)) in cases.into_iter().enumerate() {
        let q = if sqe.opcode == admin::IDENTIFY { 0 } else { 1 };
        assert_eq!(d.cmd(q, sqe).status(), want, "case {i}");
    }
    // A list entry that is not page aligned.
    d.mem.write_u64(page(3), page(4) + 8).unwrap();
    let c = d.cmd(1, rw(io::READ, 0, 24).prp(page(1), page(3)));
    assert_eq!(c.status(), Status::PRP_OFFSET_INVALID);
    // The error log holds them, newest first.
    let c = d.admin(
        Sqe::new(admin::GET_LOG_PAGE)
            .prp(page(8), 0)
            .cdw(10, u32::from(log_page::ERROR_INFORMATION) | 15 << 16),
    );
    assert_eq!(c.status(), Status::SUCCESS);
    let count = d.mem.read_u64(page(8)).unwrap();
    assert_eq!(count, 8);
    let status = d.mem.read_u16(page(8) + 12).unwrap() >> 1;
    assert_eq!(status & 0xff, u16::from(Status::PRP_OFFSET_INVALID.sc));
}

#[test]
fn lba_ranges_namespaces_opcodes_and_read_only_disks() {
    let mut d = ready(1);
    let cases = [
        (
            rw(io::READ, BLOCKS - 1, 2).prp(page(1), 0),
            Status::LBA_OUT_OF_RANGE,
        ),
        (
            rw(io::READ, u64::MAX, 1).prp(page(1), 0),
            Status::LBA_OUT_OF_RANGE,
        ),
        (rw(io::WRITE_ZEROES, BLOCKS, 1), Status::LBA_OUT_OF_RANGE),
        (
            rw(io::READ, 0, 1).prp(page(1), 0).nsid(2),
            Status::INVALID_NAMESPACE,
        ),
        (Sqe::new(io::FLUSH).nsid(0xffff_ffff), Status::SUCCESS),
        (Sqe::new(0x7f).nsid(1), Status::INVALID_OPCODE),
        (
            Sqe {
                flags: 0x40,
                ..rw(io::READ, 0, 1)
            },
            Status::INVALID_FIELD,
        ),
        (
            Sqe {
                flags: 0x01,
                ..rw(io::READ, 0, 1)
            },
            Status::INVALID_FIELD,
        ),
    ];
    for (i, (sqe, want)) in cases.into_iter().enumerate() {
        assert_eq!(d.cmd(1, sqe).status(), want, "case {i}");
    }
    assert_eq!(d.admin(Sqe::new(0xc5)).status(), Status::INVALID_OPCODE);
    let c = d.admin(
        Sqe::new(admin::GET_LOG_PAGE)
            .prp(page(1), 0)
            .cdw(10, 0x7f | 3 << 16),
    );
    assert_eq!(c.status(), Status::INVALID_LOG_PAGE);
    let c = d.admin(Sqe::new(admin::GET_FEATURES).cdw(10, 0x7e));
    assert_eq!(c.status(), Status::INVALID_FIELD);
    let c = d.admin(
        Sqe::new(admin::SET_FEATURES)
            .cdw(10, u32::from(feature::VOLATILE_WRITE_CACHE) | feature::SAVE),
    );
    assert_eq!(c.status(), Status::FEATURE_NOT_SAVEABLE);

    d.ctrl.backend_mut().read_only = true;
    let c = d.cmd(1, rw(io::WRITE, 0, 1).prp(page(1), 0));
    assert_eq!(c.status(), Status::NAMESPACE_WRITE_PROTECTED);
    d.ctrl.backend_mut().read_only = false;
    d.ctrl.backend_mut().fail_next = Some(BlockError::Io);
    let c = d.cmd(1, rw(io::READ, 0, 1).prp(page(1), 0));
    assert_eq!(c.status(), Status::UNRECOVERED_READ_ERROR);
    d.ctrl.backend_mut().fail_next = Some(BlockError::Io);
    let c = d.cmd(1, rw(io::WRITE, 0, 1).prp(page(1), 0));
    assert_eq!(c.status(), Status::WRITE_FAULT);
}

#[test]
fn zero_sized_huge_duplicate_and_dangling_queues_are_refused() {
    let mut d = driver(2);
    d.enable();
    let (sq, cq) = Driver::<RamDisk>::queue_area(1);
    let create_cq = |qid: u32, entries: u32, iv: u32, base: u64| {
        Sqe::new(admin::CREATE_IO_CQ)
            .prp(base, 0)
            .cdw(10, qid | (entries.wrapping_sub(1)) << 16)
            .cdw(11, iv << 16 | 0b11)
    };
    let cases = [
        (create_cq(1, 1, 1, cq), Status::INVALID_QUEUE_SIZE),
        (create_cq(1, 65, 1, cq), Status::INVALID_QUEUE_SIZE),
        (create_cq(1, 0x1_0000, 1, cq), Status::INVALID_QUEUE_SIZE),
        (create_cq(0, 16, 1, cq), Status::INVALID_QUEUE_IDENTIFIER),
        (create_cq(3, 16, 1, cq), Status::INVALID_QUEUE_IDENTIFIER),
        (create_cq(1, 16, 3, cq), Status::INVALID_INTERRUPT_VECTOR),
        (create_cq(1, 16, 1, cq + 8), Status::INVALID_FIELD),
        (create_cq(1, 16, 1, 0x1000), Status::INVALID_FIELD),
        (
            create_cq(1, 64, 1, RAM_BASE + RAM_SIZE as u64),
            Status::INVALID_FIELD,
        ),
        (create_cq(1, 16, 1, cq), Status::SUCCESS),
        (create_cq(1, 16, 1, cq), Status::INVALID_QUEUE_IDENTIFIER),
        (
            Sqe::new(admin::CREATE_IO_SQ)
                .prp(sq, 0)
                .cdw(10, 1 | 15 << 16)
                .cdw(11, 2 << 16 | 1),
            Status::COMPLETION_QUEUE_INVALID,
        ),
        (
            Sqe::new(admin::CREATE_IO_SQ)
                .prp(sq, 0)
                .cdw(10, 1 | 15 << 16)
                .cdw(11, 1 << 16),
            Status::INVALID_FIELD,
        ),
        (
            Sqe::new(admin::CREATE_IO_SQ)
                .prp(sq, 0)
                .cdw(10, 1 | 15 << 16)
                .cdw(11, 1 << 16 | 1),
            Status::SUCCESS,
        ),
        (
            Sqe::new(admin::DELETE_IO_CQ).cdw(10, 1),
            Status::INVALID_QUEUE_DELETION,
        ),
        (
            Sqe::new(admin::DELETE_IO_SQ).cdw(10, 0),
            Status::INVALID_QUEUE_IDENTIFIER,
        ),
        (
            Sqe::new(admin::DELETE_IO_SQ).cdw(10, 2),
            Status::INVALID_QUEUE_IDENTIFIER,
        ),
        (Sqe::new(admin::DELETE_IO_SQ).cdw(10, 1), Status::SUCCESS),
        (Sqe::new(admin::DELETE_IO_CQ).cdw(10, 1), Status::SUCCESS),
        (
            Sqe::new(admin::DELETE_IO_CQ).cdw(10, 1),
            Status::INVALID_QUEUE_IDENTIFIER,
        ),
    ];
    for (i, (sqe, want)) in cases.into_iter().enumerate() {
        assert_eq!(d.admin(sqe).status(), want, "case {i}");
    }
}

#[test]
fn doorbell_writes_beyond_the_queue_raise_invalid_doorbell_events() {
    let mut d = ready(1);
    let aer_cid = d.submit(0, Sqe::new(admin::ASYNC_EVENT_REQUEST));
    assert!(d.reap(0).is_empty(), "an event request is held");
    // SQ 1 has 16 entries: a tail of 16 is beyond it.
    d.ring_sq(1, 16);
    let c = d.reap(0);
    assert_eq!(c.len(), 1);
    let want = aer::TYPE_ERROR
        | aer::INFO_INVALID_DOORBELL_VALUE << 8
        | u32::from(log_page::ERROR_INFORMATION) << 16;
    assert_eq!(
        (c[0].cid, c[0].status(), c[0].dw0),
        (aer_cid, Status::SUCCESS, want)
    );
    // A doorbell of a queue that does not exist (and one past every queue): the
    // event waits, masked until the host reads the error log.
    d.submit(0, Sqe::new(admin::ASYNC_EVENT_REQUEST));
    d.write_reg(reg::DOORBELLS + 7 * 8, AccessSize::Word, 1);
    d.write_reg(reg::DOORBELLS + 0x2ff8, AccessSize::Word, 1);
    assert!(
        d.reap(0).is_empty(),
        "error events are masked until the log is read"
    );
    let log = Sqe::new(admin::GET_LOG_PAGE)
        .prp(page(0), 0)
        .cdw(10, u32::from(log_page::ERROR_INFORMATION) | 15 << 16);
    let c = d.submit(0, log);
    let got = d.reap(0);
    assert_eq!(got[0].cid, c);
    assert_eq!(
        got[1].dw0,
        aer::INFO_INVALID_DOORBELL_REGISTER << 8 | u32::from(log_page::ERROR_INFORMATION) << 16
    );
    // A CQ head doorbell that would take entries the controller never posted.
    d.ring_cq(1, 5);
    // The queue still works, and the controller is intact.
    let c = d.cmd(1, rw(io::READ, 0, 1).prp(page(1), 0));
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(d.csts() & 0b11, 1);
    // More than AERL + 1 requests: the extra one is refused.
    for _ in 0..5 {
        d.submit(0, Sqe::new(admin::ASYNC_EVENT_REQUEST));
    }
    let c = d.reap(0);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].status(), Status::AER_LIMIT_EXCEEDED);
}

#[test]
fn a_full_completion_queue_holds_completions_until_the_head_moves() {
    let mut d = driver(1);
    d.enable();
    d.create_pair(1, 4, 1);
    // Four commands on a 4-entry CQ: three fit (one slot stays empty).
    for _ in 0..3 {
        d.submit(1, Sqe::new(io::FLUSH).nsid(1));
    }
    d.queue_only(1, Sqe::new(io::FLUSH).nsid(1));
    let tail = d.queues[1].unwrap().tail;
    d.ring_sq(1, tail);
    let (_, cq) = Driver::<RamDisk>::queue_area(1);
    let posted = |d: &Driver<RamDisk>| {
        (0..4)
            .filter(|i| d.mem.read_u32(cq + i * 16 + 12).unwrap() & (1 << 16) != 0)
            .count()
    };
    assert_eq!(posted(&d), 3);
    assert_eq!(d.reap(1).len(), 3);
    assert_eq!(
        d.reap(1).len(),
        1,
        "the held completion followed the head doorbell"
    );
}

#[test]
fn a_bad_configuration_or_admin_queue_sets_controller_fatal_status() {
    for (mps, asq) in [
        (5u64, RAM_BASE),
        (0, 0x1000),
        (0, RAM_BASE + RAM_SIZE as u64),
    ] {
        let mut d = driver(1);
        d.write_reg(reg::AQA, AccessSize::Word, 31 | 31 << 16);
        d.write_reg(reg::ASQ, AccessSize::Double, asq);
        d.write_reg(reg::ACQ, AccessSize::Double, RAM_BASE + 0x2000);
        d.write_reg(reg::CC, AccessSize::Word, 1 | mps << 7 | 6 << 16 | 4 << 20);
        assert_eq!(d.csts() & 0b11, 0b10, "CFS, not RDY ({mps}, {asq:#x})");
        // A doorbell now is ignored, and a reset clears it.
        d.write_reg(reg::DOORBELLS, AccessSize::Word, 1);
        d.write_reg(reg::CC, AccessSize::Word, 0);
        assert_eq!(d.csts(), 0);
    }
    // An admin queue of one entry.
    let mut d = driver(1);
    d.write_reg(reg::AQA, AccessSize::Word, 0);
    d.write_reg(reg::CC, AccessSize::Word, 1);
    assert_eq!(d.csts() & 0b11, 0b10);
}

#[test]
fn a_submission_queue_deleted_with_commands_in_flight_aborts_them() {
    let mut d = ready(1);
    d.ctrl.backend_mut().hold = true;
    let cid = d.submit(1, rw(io::READ, 0, 1).prp(page(1), 0));
    let c = d.admin(Sqe::new(admin::DELETE_IO_SQ).cdw(10, 1));
    assert_eq!(c.status(), Status::SUCCESS);
    let c = d.reap(1);
    assert_eq!(
        (c[0].cid, c[0].status()),
        (cid, Status::ABORTED_SQ_DELETION)
    );
    d.ctrl.backend_mut().release(1);
    d.poll();
    assert!(d.reap(1).is_empty());
    assert_eq!(d.ctrl.backend_ops(), 0);
}

#[test]
fn a_backend_that_is_busy_gets_the_request_again_later() {
    let mut d = ready(1);
    d.ctrl.backend_mut().hold = true;
    d.ctrl.backend_mut().max_queued = 1;
    let data = pattern(4096, 9);
    for i in 0..4u64 {
        d.mem.write(page(10 + i), &data).unwrap();
        d.submit(1, rw(io::WRITE, i * 8, 8).prp(page(10 + i), 0));
    }
    let mut done = 0;
    for _ in 0..8 {
        d.ctrl.backend_mut().release(1);
        d.poll();
        done += d.reap(1).len();
    }
    assert_eq!(done, 4);
    assert_eq!(&d.ctrl.backend().data[3 * 4096..4 * 4096], &data[..]);
}

#[test]
fn log_pages_and_features_read_back() {
    let mut d = ready(1);
    d.cmd(1, rw(io::WRITE, 0, 8).prp(page(1), 0));
    d.cmd(1, rw(io::READ, 0, 8).prp(page(1), 0));
    let c = d.admin(
        Sqe::new(admin::GET_LOG_PAGE)
            .prp(page(2), 0)
            .cdw(10, u32::from(log_page::SMART) | 127 << 16),
    );
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(
        d.mem.read_u64(page(2) + 64).unwrap(),
        1,
        "host read commands"
    );
    assert_eq!(
        d.mem.read_u64(page(2) + 80).unwrap(),
        1,
        "host write commands"
    );
    assert_eq!(d.mem.read_u64(page(2) + 32).unwrap(), 1, "data units read");
    let c = d.admin(
        Sqe::new(admin::GET_LOG_PAGE)
            .prp(page(2), 0)
            .cdw(10, u32::from(log_page::FIRMWARE_SLOT) | 127 << 16),
    );
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(d.mem.read_u32(page(2)).unwrap() & 0xff, 1);
    // Offsets that are not dwords, or past the page, are refused.
    let c = d.admin(
        Sqe::new(admin::GET_LOG_PAGE)
            .prp(page(2), 0)
            .cdw(10, u32::from(log_page::SMART) | 3 << 16)
            .cdw(12, 2),
    );
    assert_eq!(c.status(), Status::INVALID_FIELD);
    let coalesce = Sqe::new(admin::SET_FEATURES)
        .cdw(10, u32::from(feature::INTERRUPT_COALESCING))
        .cdw(11, 0x0a04);
    assert_eq!(d.admin(coalesce).status(), Status::SUCCESS);
    let c =
        d.admin(Sqe::new(admin::GET_FEATURES).cdw(10, u32::from(feature::INTERRUPT_COALESCING)));
    assert_eq!(c.dw0, 0x0a04);
    let c = d.admin(
        Sqe::new(admin::GET_FEATURES)
            .cdw(10, u32::from(feature::INTERRUPT_VECTOR_CONFIG))
            .cdw(11, 9),
    );
    assert_eq!(c.status(), Status::INVALID_FIELD);
}

#[test]
fn a_restored_controller_runs_commands_that_were_in_flight() {
    let mut d = ready(1);
    d.ctrl.backend_mut().hold = true;
    d.ctrl.backend_mut().data[..512].fill(0x42);
    let cid = d.submit(1, rw(io::READ, 0, 1).prp(page(1), 0));
    let blob = d.ctrl.save();
    // A new controller over the same disk (the old backend's operation is lost).
    let mut disk = RamDisk::new(DISK);
    disk.data[..512].fill(0x42);
    let mut fresh = Controller::new(disk, config(1));
    fresh.restore(&blob).unwrap();
    d.ctrl = fresh;
    d.poll();
    let c = d.reap(1);
    assert_eq!(
        (c.len(), c[0].cid, c[0].status()),
        (1, cid, Status::SUCCESS)
    );
    assert_eq!(d.mem.read_u64(page(1)).unwrap(), 0x4242_4242_4242_4242);
}

/// Doorbells rung before a save whose commands the controller had not fetched yet
/// (it holds `MAX_IN_FLIGHT` already) are fetched by the restored controller, after
/// the held ones run again: every command submitted completes exactly once.
#[test]
fn a_restored_controller_fetches_what_was_rung_and_not_fetched() {
    let mut d = driver(3);
    assert_eq!(d.enable() & 1, 1, "CSTS.RDY");
    let c = d.admin(
        Sqe::new(admin::SET_FEATURES)
            .cdw(10, u32::from(feature::NUMBER_OF_QUEUES))
            .cdw(11, 2 | 2 << 16),
    );
    assert_eq!(c.status(), Status::SUCCESS);
    for q in 1..=3 {
        let (a, b) = d.create_pair(q, 64, q);
        assert_eq!((a.status(), b.status()), (Status::SUCCESS, Status::SUCCESS));
    }
    d.ctrl.backend_mut().data[..512].fill(0x5a);
    d.ctrl.backend_mut().hold = true;
    let per_queue = [63usize, 63, 20];
    let mut cids = Vec::new();
    for (i, &n) in per_queue.iter().enumerate() {
        for _ in 0..n {
            cids.push(d.submit(i as u16 + 1, rw(io::READ, 0, 1).prp(page(1), 0)));
        }
    }
    let submitted: usize = per_queue.iter().sum();
    let held = d.ctrl.in_flight();
    assert_eq!(held, crate::controller::MAX_IN_FLIGHT);
    assert!(submitted > held, "some doorbells are rung and not fetched");
    let blob = d.ctrl.save();
    let mut disk = RamDisk::new(DISK);
    disk.data[..512].fill(0x5a);
    let mut fresh = Controller::new(disk, config(3));
    fresh.restore(&blob).unwrap();
    d.ctrl = fresh;
    let mut done = Vec::new();
    for _ in 0..8 {
        d.poll();
        for q in 1..=3 {
            done.extend(d.reap(q));
        }
    }
    assert!(done.iter().all(|c| c.status() == Status::SUCCESS));
    let mut got: Vec<u16> = done.iter().map(|c| c.cid).collect();
    got.sort_unstable();
    cids.sort_unstable();
    assert_eq!(got, cids, "each command completes once");
    assert_eq!(d.ctrl.in_flight(), 0);
    assert_eq!(d.mem.read_u64(page(1)).unwrap(), 0x5a5a_5a5a_5a5a_5a5a);
}

// ---- save / restore -----------------------------------------------------------------

fn make() -> Controller<RamDisk> {
    Controller::new(RamDisk::new(64 << 10), config(2))
}

/// Enabled, two queue pairs, features set, an event request held, an error logged,
/// a completion waiting for room and a read in flight.
fn busy(c: &mut Controller<RamDisk>) {
    let ctrl = core::mem::replace(c, make());
    let mut d = Driver::new(ctrl);
    d.enable();
    d.admin(
        Sqe::new(admin::SET_FEATURES)
            .cdw(10, u32::from(feature::NUMBER_OF_QUEUES))
            .cdw(11, 1 | 1 << 16),
    );
    d.admin(
        Sqe::new(admin::SET_FEATURES)
            .cdw(10, u32::from(feature::INTERRUPT_COALESCING))
            .cdw(11, 0x0102),
    );
    d.create_pair(1, 4, 1);
    d.create_pair(2, 8, 2);
    d.submit(0, Sqe::new(admin::ASYNC_EVENT_REQUEST));
    d.cmd(1, Sqe::new(io::READ).nsid(9));
    d.cmd(1, rw(io::WRITE, 1, 1).prp(page(1), 0));
    d.write_reg(reg::INTMS, AccessSize::Word, 0x5);
    // Fill CQ 1 without reaping, so a completion waits; then a read in flight on 2.
    for _ in 0..4 {
        d.submit(1, Sqe::new(io::FLUSH).nsid(1));
    }
    d.ctrl.backend_mut().hold = true;
    d.submit(2, rw(io::READ, 0, 2).prp(page(2), 0));
    *c = d.ctrl;
}

fn probe(c: &mut Controller<RamDisk>) -> Vec<u64> {
    let held = c.in_flight() as u64;
    [
        reg::CAP,
        reg::CC,
        reg::CSTS,
        reg::AQA,
        reg::ASQ,
        reg::ACQ,
        reg::INTMS,
    ]
    .iter()
    .map(|&o| {
        let size = if o == reg::CAP || o == reg::ASQ || o == reg::ACQ {
            AccessSize::Double
        } else {
            AccessSize::Word
        };
        c.read(o, size).unwrap()
    })
    .chain([held])
    .collect()
}

vdev::save_restore_tests!(nvme_save, make: make, drive: busy, probe: probe);

// ---- property: a random I/O stream against a model of the disk ----------------------

mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Write {
            slba: u64,
            blocks: u32,
            seed: u8,
            offset: u16,
        },
        Read {
            slba: u64,
            blocks: u32,
            offset: u16,
        },
        Zeroes {
            slba: u64,
            blocks: u32,
        },
        Flush,
        Raw {
            opcode: u8,
            nsid: u32,
            prp1: u64,
            prp2: u64,
            cdw: [u32; 6],
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        let slba = 0..BLOCKS + 4;
        prop_oneof![
            (slba.clone(), 1..2100u32, any::<u8>(), 0..1024u16).prop_map(
                |(slba, blocks, seed, offset)| Op::Write {
                    slba,
                    blocks,
                    seed,
                    offset
                }
            ),
            (slba.clone(), 1..2100u32, 0..1024u16).prop_map(|(slba, blocks, offset)| Op::Read {
                slba,
                blocks,
                offset
            }),
            (slba, 1..2000u32).prop_map(|(slba, blocks)| Op::Zeroes { slba, blocks }),
            Just(Op::Flush),
            (
                any::<u8>(),
                0..3u32,
                any::<u64>(),
                any::<u64>(),
                any::<[u32; 6]>()
            )
                .prop_map(|(opcode, nsid, prp1, prp2, cdw)| Op::Raw {
                    opcode,
                    nsid,
                    prp1,
                    prp2,
                    cdw
                }),
        ]
    }

    /// PRPs for `len` bytes at `buf` (dword aligned), a list in page 700 when needed.
    fn prps(d: &mut Driver<RamDisk>, buf: u64, len: u64) -> (u64, u64) {
        let first = PAGE - (buf % PAGE);
        if len <= first {
            return (buf, 0);
        }
        let next = buf - buf % PAGE + PAGE;
        if len - first <= PAGE {
            return (buf, next);
        }
        let pages = (len - first).div_ceil(PAGE);
        for i in 0..pages {
            d.mem.write_u64(page(700) + i * 8, next + i * PAGE).unwrap();
        }
        (buf, page(700))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn every_command_completes_once_and_the_disk_matches_a_model(
            ops in prop::collection::vec(op(), 1..24),
            hold in any::<bool>(),
        ) {
            let mut d = ready(1);
            let mut model = vec![0u8; DISK];
            for op in ops {
                d.ctrl.backend_mut().hold = hold;
                let (sqe, expect_ok, read_at) = match op {
                    Op::Write { slba, blocks, seed, offset } => {
                        let len = u64::from(blocks) * 512;
                        let buf = page(1) + u64::from(offset) * 4;
                        let data = pattern(len as usize, seed);
                        d.mem.write(buf, &data).unwrap();
                        let (p1, p2) = prps(&mut d, buf, len);
                        let ok = slba + u64::from(blocks) <= BLOCKS && len <= MAX_TRANSFER;
                        if ok {
                            let at = slba as usize * 512;
                            model[at..at + len as usize].copy_from_slice(&data);
                        }
                        (rw(io::WRITE, slba, blocks).prp(p1, p2), ok, None)
                    }
                    Op::Read { slba, blocks, offset } => {
                        let len = u64::from(blocks) * 512;
                        let buf = page(1) + u64::from(offset) * 4;
                        let (p1, p2) = prps(&mut d, buf, len);
                        let ok = slba + u64::from(blocks) <= BLOCKS && len <= MAX_TRANSFER;
                        let at = ok.then_some((buf, slba as usize * 512, len as usize));
                        (rw(io::READ, slba, blocks).prp(p1, p2), ok, at)
                    }
                    Op::Zeroes { slba, blocks } => {
                        let ok = slba + u64::from(blocks) <= BLOCKS;
                        if ok {
                            let at = slba as usize * 512;
                            model[at..at + blocks as usize * 512].fill(0);
                        }
                        (rw(io::WRITE_ZEROES, slba, blocks), ok, None)
                    }
                    Op::Flush => (Sqe::new(io::FLUSH).nsid(1), true, None),
                    Op::Raw { opcode, nsid, prp1, prp2, cdw } => {
                        // Never a data-changing opcode: the model cannot predict it.
                        let opcode = if matches!(opcode, io::WRITE | io::WRITE_ZEROES) {
                            io::READ
                        } else {
                            opcode
                        };
                        let sqe = Sqe { opcode, nsid, prp1, prp2, cdw, flags: 0 };
                        (sqe, false, None)
                    }
                };
                let cid = d.submit(1, sqe);
                let mut got = Vec::new();
                for _ in 0..64 {
                    got.extend(d.reap(1));
                    if !got.is_empty() {
                        break;
                    }
                    let n = d.ctrl.backend().queued();
                    d.ctrl.backend_mut().release(n);
                    d.poll();
                }
                prop_assert_eq!(got.len(), 1, "one completion per command");
                prop_assert_eq!(got[0].cid, cid);
                if expect_ok {
                    prop_assert_eq!(got[0].status(), Status::SUCCESS);
                }
                if let Some((buf, at, len)) = read_at {
                    let mut back = vec![0u8; len];
                    d.mem.read(buf, &mut back).unwrap();
                    prop_assert!(back == model[at..at + len], "read data differs");
                }
                prop_assert_eq!(d.csts() & 0b11, 1, "controller ready, not fatal");
            }
            prop_assert!(d.ctrl.backend().data == model, "disk differs from the model");
        }
    }
}

#[test]
fn abort_keep_alive_and_feature_capabilities() {
    let mut d = ready(1);
    let c = d.admin(Sqe::new(admin::ABORT).cdw(10, 1 | 5 << 16));
    assert_eq!((c.status(), c.dw0 & 1), (Status::SUCCESS, 1), "not aborted");
    assert_eq!(
        d.admin(Sqe::new(admin::KEEP_ALIVE)).status(),
        Status::SUCCESS
    );
    let sel = |s: u32, fid: u8| {
        Sqe::new(admin::GET_FEATURES).cdw(10, u32::from(fid) | s << feature::SEL_SHIFT)
    };
    let c = d.admin(sel(
        feature::SEL_CAPABILITIES,
        feature::VOLATILE_WRITE_CACHE,
    ));
    assert_eq!(
        (c.status(), c.dw0),
        (Status::SUCCESS, 1 << 2),
        "changeable only"
    );
    let c = d.admin(sel(feature::SEL_CAPABILITIES, 0x7e));
    assert_eq!(c.status(), Status::INVALID_FIELD);
    let c = d.admin(sel(feature::SEL_DEFAULT, feature::TEMPERATURE_THRESHOLD));
    assert_eq!(c.dw0, feature::DEFAULT_TEMPERATURE_THRESHOLD);
    let c = d.admin(sel(7, feature::ARBITRATION));
    assert_eq!(c.status(), Status::INVALID_FIELD);
    // Interrupt vector configuration: per vector, refused past the last one.
    let ivc = Sqe::new(admin::SET_FEATURES)
        .cdw(10, u32::from(feature::INTERRUPT_VECTOR_CONFIG))
        .cdw(11, 1 | 1 << 16);
    assert_eq!(d.admin(ivc).status(), Status::SUCCESS);
    let c = d.admin(
        Sqe::new(admin::GET_FEATURES)
            .cdw(10, u32::from(feature::INTERRUPT_VECTOR_CONFIG))
            .cdw(11, 1),
    );
    assert_eq!(c.dw0, 1 | 1 << 16);
}

/// A ready driver whose guest memory and backend move data directly (`submit_dma`),
/// with the backend holding requests until released.
fn ready_dma(lim: vdev::DmaLimits) -> Driver<RamDisk> {
    let mut d = ready(1);
    d.mem.allow_dma(true);
    let b = d.ctrl.backend_mut();
    b.dma = Some(lim);
    b.hold = true;
    d
}

/// Releases every held DMA request and polls until the command completes.
fn finish_dma(d: &mut Driver<RamDisk>, cid: u16) -> crate::testing::Cqe {
    for _ in 0..64 {
        let Driver { ctrl, mem, .. } = d;
        let n = ctrl.backend().queued();
        ctrl.backend_mut().release_dma(mem, n);
        d.poll();
        if let Some(c) = d.reap(1).into_iter().find(|c| c.cid == cid) {
            return c;
        }
    }
    panic!("command {cid} did not complete");
}

const DMA: vdev::DmaLimits = vdev::DmaLimits {
    max_segments: 4,
    max_segment_bytes: 4096,
    max_bytes: 64 << 10,
};

#[test]
fn data_moves_by_dma_when_memory_and_backend_allow_it_split_to_their_limits() {
    let mut d = ready_dma(DMA);
    // 64 KiB written from 16 scattered pages through a PRP list: the limits allow
    // 4 segments of 4 KiB, so 4 operations, no buffer.
    let data = pattern(64 << 10, 3);
    let targets: Vec<u64> = (0..16).map(|i| page(100 + 2 * i)).collect();
    for (i, t) in targets.iter().enumerate() {
        d.mem.write(*t, &data[i * 4096..(i + 1) * 4096]).unwrap();
    }
    for (i, t) in targets[1..].iter().enumerate() {
        d.mem.write_u64(page(90) + 8 * i as u64, *t).unwrap();
    }
    let cid = d.submit(1, rw(io::WRITE, 8, 128).prp(targets[0], page(90)));
    let c = finish_dma(&mut d, cid);
    assert_eq!(c.status(), Status::SUCCESS);
    let b = d.ctrl.backend();
    assert_eq!((b.dma_ops, b.buffered_ops), (4, 0));
    assert_eq!(&b.data[8 * 512..8 * 512 + data.len()], &data[..]);

    // Read back into one contiguous run (PRP list of consecutive pages): the
    // segments merge up to 4 KiB each, again 4 operations.
    for i in 0..15u64 {
        d.mem.write_u64(page(91) + 8 * i, page(201 + i)).unwrap();
    }
    let cid = d.submit(1, rw(io::READ, 8, 128).prp(page(200), page(91)));
    let c = finish_dma(&mut d, cid);
    assert_eq!(c.status(), Status::SUCCESS);
    let mut back = vec![0u8; data.len()];
    d.mem.read(page(200), &mut back).unwrap();
    assert_eq!(back, data);
    assert_eq!(d.ctrl.backend().dma_ops, 8);
    assert_eq!(d.ctrl.backend_ops(), 0);
}

#[test]
fn without_direct_access_to_guest_memory_data_is_copied() {
    let mut d = ready_dma(DMA);
    d.mem.allow_dma(false);
    d.ctrl.backend_mut().hold = false;
    let data = pattern(8192, 9);
    d.mem.write(page(20), &data).unwrap();
    let c = d.cmd(1, rw(io::WRITE, 0, 16).prp(page(20), page(21)));
    assert_eq!(c.status(), Status::SUCCESS);
    let b = d.ctrl.backend();
    assert_eq!((b.dma_ops, &b.data[..8192]), (0, &data[..]));
    assert!(b.buffered_ops > 0);
}

#[test]
fn dma_prp_outside_ram_fails_the_command_and_starts_nothing() {
    let mut d = ready_dma(DMA);
    let outside = RAM_BASE + RAM_SIZE as u64;
    let cid = d.submit(1, rw(io::READ, 0, 8).prp(outside, 0));
    d.poll();
    let c = d.reap(1);
    assert_eq!(c.len(), 1);
    assert_eq!(
        (c[0].cid, c[0].status()),
        (cid, Status::DATA_TRANSFER_ERROR)
    );
    assert_eq!(d.ctrl.backend().queued(), 0);
}

#[test]
fn reset_waits_out_dma_in_flight_and_nothing_lands_afterwards() {
    let mut d = ready_dma(DMA);
    d.ctrl.backend_mut().data.fill(0x77);
    d.mem.write(page(10), &[0x11; 8192]).unwrap();
    d.submit(1, rw(io::READ, 0, 16).prp(page(10), page(11)));
    assert_eq!(
        d.ctrl.backend().dma_ops,
        1,
        "one operation of two 4 KiB segments"
    );
    d.disable();
    assert_eq!(
        d.ctrl.backend().quiesces,
        1,
        "the reset quiesced the backend"
    );
    assert_eq!(d.ctrl.backend().queued(), 0);
    d.poll();
    let mut after = vec![0u8; 8192];
    d.mem.read(page(10), &mut after).unwrap();
    assert!(
        after.iter().all(|&b| b == 0x11),
        "a read landed after the reset"
    );
    assert_eq!(d.ctrl.backend_ops(), 0);
}

#[test]
fn dma_segments_keep_to_the_limits_and_to_whole_sectors() {
    use crate::controller::{dma_segments, DmaPlan};
    use crate::prp::Segment;
    let mut mem = vdev::VecMemory::new(RAM_BASE, RAM_SIZE);
    mem.allow_dma(true);
    let segs = [
        Segment {
            gpa: RAM_BASE + 0x300,
            len: 0xd00,
        },
        Segment {
            gpa: RAM_BASE + 0x10000,
            len: 0x3000,
        },
    ];
    let mut out = Vec::new();
    let lim = |max_segments, max_segment_bytes, max_bytes| vdev::DmaLimits {
        max_segments,
        max_segment_bytes,
        max_bytes,
    };
    // One segment allowed: 0xd00 bytes trimmed to whole sectors.
    let p = dma_segments(
        &mut mem,
        &segs,
        0,
        0x3d00,
        lim(1, 0x1000, 1 << 20),
        &mut out,
    );
    assert_eq!(p, DmaPlan::Segments(0xc00));
    assert_eq!(
        out,
        [vdev::DmaSegment {
            addr: RAM_BASE + 0x300,
            len: 0xc00
        }]
    );
    // Skipping into the second run, segments split at 0x1000, capped by max_bytes.
    let p = dma_segments(
        &mut mem,
        &segs,
        0xd00 + 0x800,
        0x2800,
        lim(8, 0x1000, 0x2000),
        &mut out,
    );
    assert_eq!(p, DmaPlan::Segments(0x2000));
    assert_eq!(
        out,
        [
            vdev::DmaSegment {
                addr: RAM_BASE + 0x10800,
                len: 0x1000
            },
            vdev::DmaSegment {
                addr: RAM_BASE + 0x11800,
                len: 0x1000
            },
        ]
    );
    // Less than a sector within the limits: copy instead.
    let p = dma_segments(&mut mem, &segs, 0, 0x3d00, lim(1, 0x100, 1 << 20), &mut out);
    assert_eq!(p, DmaPlan::Unavailable);
    // Not RAM, and memory without direct access.
    let bad = [Segment {
        gpa: 0x1000,
        len: 0x200,
    }];
    let p = dma_segments(&mut mem, &bad, 0, 0x200, lim(8, 0x1000, 1 << 20), &mut out);
    assert_eq!(p, DmaPlan::NotRam);
    mem.allow_dma(false);
    let p = dma_segments(&mut mem, &segs, 0, 0x200, lim(8, 0x1000, 1 << 20), &mut out);
    assert_eq!(p, DmaPlan::Unavailable);
}

#[test]
fn deleting_a_queue_waits_out_its_dma_before_reporting_the_abort() {
    let mut d = ready_dma(DMA);
    d.ctrl.backend_mut().data.fill(0x77);
    d.mem.write(page(10), &[0x11; 4096]).unwrap();
    d.submit(1, rw(io::READ, 0, 8).prp(page(10), 0));
    assert_eq!(d.ctrl.backend().dma_ops, 1);
    let c = d.admin(Sqe::new(admin::DELETE_IO_SQ).cdw(10, 1));
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(d.ctrl.backend().quiesces, 1);
    let aborted = d.reap(1);
    assert_eq!(aborted.len(), 1);
    assert_eq!(aborted[0].status(), Status::ABORTED_SQ_DELETION);
    d.poll();
    let mut after = [0u8; 4096];
    d.mem.read(page(10), &mut after).unwrap();
    assert!(
        after.iter().all(|&b| b == 0x11),
        "a read landed after the abort"
    );
    assert_eq!(d.ctrl.backend_ops(), 0);
}

#[test]
fn dma_operations_in_flight_are_bounded_and_the_rest_follow_as_they_complete() {
    use crate::controller::MAX_DMA_OPS;
    // One 512-byte segment per operation: a 64 KiB write is 128 operations.
    let mut d = ready_dma(vdev::DmaLimits {
        max_segments: 1,
        max_segment_bytes: 512,
        max_bytes: 512,
    });
    let data = pattern(64 << 10, 5);
    d.mem.write(page(100), &data).unwrap();
    for i in 0..15u64 {
        d.mem.write_u64(page(90) + 8 * i, page(101 + i)).unwrap();
    }
    let cid = d.submit(1, rw(io::WRITE, 0, 128).prp(page(100), page(90)));
    assert_eq!(d.ctrl.backend().queued(), MAX_DMA_OPS);
    let c = finish_dma(&mut d, cid);
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(d.ctrl.backend().dma_ops, 128);
    assert_eq!(&d.ctrl.backend().data[..data.len()], &data[..]);
}

/// Captures the `log` records the current thread emits (tests run on their own
/// threads; the logger is installed once for the test binary).
mod log_capture {
    extern crate std;
    use alloc::string::{String, ToString};
    use alloc::vec::Vec;
    use std::cell::RefCell;

    std::thread_local! {
        static LINES: RefCell<Vec<(log::Level, String)>> = const { RefCell::new(Vec::new()) };
    }

    struct Capture;

    impl log::Log for Capture {
        fn enabled(&self, _: &log::Metadata) -> bool {
            true
        }
        fn log(&self, record: &log::Record) {
            LINES.with(|l| {
                l.borrow_mut()
                    .push((record.level(), record.args().to_string()))
            });
        }
        fn flush(&self) {}
    }

    static CAPTURE: Capture = Capture;

    /// Runs `f` and returns the lines it logged at `level` or more severe.
    pub fn lines_of(level: log::Level, f: impl FnOnce()) -> Vec<String> {
        let _ = log::set_logger(&CAPTURE);
        log::set_max_level(log::LevelFilter::Trace);
        LINES.with(|l| l.borrow_mut().clear());
        f();
        LINES.with(|l| {
            l.borrow_mut()
                .drain(..)
                .filter(|(lv, _)| *lv <= level)
                .map(|(_, s)| s)
                .collect()
        })
    }
}

#[test]
fn identify_of_the_nvme2_command_set_structures_is_invalid_field_without_a_warning() {
    let mut d = driver(1);
    assert_eq!(d.enable(), 1);
    // CAP.CSS reports the NVM Command Set only (no "I/O Command Set Support"), and
    // VS 1.4, where CNS 05h..08h and 1Ch are reserved.
    let cap = d.ctrl.read(reg::CAP, AccessSize::Double).unwrap();
    let cap = tock_registers::LocalRegisterCopy::<u64, CAP::Register>::new(cap);
    assert_eq!(cap.read(CAP::CSS), 1, "CAP.CSS: NVM Command Set only");
    for cns in identify::CNS_NVME2_IO_COMMAND_SETS {
        let mut status = Status::SUCCESS;
        let mut data = Vec::new();
        // Linux's probe: CNS 06h with CSI 00h (NVM) in CDW11.
        let warned = log_capture::lines_of(log::Level::Warn, || {
            (status, data) = identify(&mut d, u32::from(cns), 0);
        });
        assert_eq!(status, Status::INVALID_FIELD, "CNS {cns:#x}");
        assert!(warned.is_empty(), "CNS {cns:#x} logged {warned:?}");
        assert!(data.iter().all(|&b| b == 0xee), "CNS {cns:#x} wrote data");
    }
    // A CNS no version defines is still refused with a warning.
    let warned = log_capture::lines_of(log::Level::Warn, || {
        let (s, _) = identify(&mut d, 0x55, 0);
        assert_eq!(s, Status::INVALID_FIELD);
    });
    assert_eq!(warned.len(), 1, "{warned:?}");
    // The controller still answers afterwards.
    let (s, _) = identify(&mut d, u32::from(identify::CNS_CONTROLLER), 0);
    assert_eq!(s, Status::SUCCESS);
}
