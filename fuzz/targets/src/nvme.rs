//! `nvme`: a hostile host against the NVMe controller model: register accesses of
//! any offset and width, doorbell writes of any queue and value, submission queue
//! entries with fuzzed opcodes, fields and PRPs (inside, across the edge of, or
//! outside a small guest RAM, PRP lists included), raw guest RAM writes, a
//! Linux-style bring-up (admin queue, Number of Queues, I/O queue pairs), a backend
//! that holds requests and completes them in batches, controller resets, shutdowns
//! and save/restore cycles; a bring-up with bit 7 of its pair count set moves data
//! by DMA (guest memory with device addresses, a backend with small segment limits,
//! its requests held until released).
//!
//! Invariants, checked after every operation:
//! - no panic, and every read carries no bits outside its access;
//! - CSTS holds only RDY, CFS and SHST, and RDY only while CC.EN is set;
//! - at most `MAX_IN_FLIGHT` commands are held and the backend is lent at most
//!   `MAX_BUFFERS` bounce buffers and `MAX_DMA_OPS` DMA operations (plus flushes,
//!   one per held command and one for shutdown);
//! - no DMA operation is still held after a controller reset;
//! - only configured interrupt vectors are signalled;
//! - a saved state restores into a fresh controller that saves the same bytes.

use arbitrary::{Arbitrary, Unstructured};
use nvme::controller::{MAX_BUFFERS, MAX_DMA_OPS, MAX_IN_FLIGHT};
use nvme::defs::{admin, feature, reg};
use nvme::testing::{Driver, RamDisk, Sqe, DATA, PAGE, RAM_BASE, RAM_SIZE};
use nvme::{Config, Controller};
use vdev::{AccessSize, AsyncBlock, DmaLimits, GuestMemory, SaveRestore};

use crate::{Bytes, Encoder};

/// I/O queue pairs (and vectors - 1) of the controller.
const IO_QUEUES: u16 = 3;
/// Bytes of the RAM disk.
const DISK: usize = 256 << 10;
/// The DMA mode's backend limits: small, so that commands split.
const DMA_LIMITS: DmaLimits = DmaLimits {
    max_segments: 3,
    max_segment_bytes: 4096,
    max_bytes: 8192,
};
/// The bring-up's pair-count bit that turns the DMA mode on.
const DMA_BIT: u8 = 0x80;

fn config() -> Config {
    Config {
        io_queues: IO_QUEUES,
        vectors: IO_QUEUES + 1,
        max_queue_entries: 64,
        ..Config::default()
    }
}

fn controller() -> Controller<RamDisk> {
    Controller::new(RamDisk::new(DISK), config())
}

/// A guest address: a page of the data area plus an offset, or anywhere.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Addr {
    Data(u8, u16),
    Raw(u64),
}

impl Addr {
    fn gpa(self) -> u64 {
        match self {
            Addr::Data(page, off) => DATA + u64::from(page) * PAGE + u64::from(off % 4096),
            Addr::Raw(a) => a,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Read {
        offset: u16,
        size: u8,
    },
    Write {
        offset: u16,
        size: u8,
        value: u64,
    },
    /// Doorbell `index` (SQ y tail = 2y, CQ y head = 2y + 1).
    Doorbell {
        index: u8,
        value: u16,
    },
    /// Raw bytes at an offset of the data area.
    Memory {
        offset: u32,
        bytes: Bytes,
    },
    /// A PRP list entry: slot `slot` of data page `page` points at `to`.
    ListEntry {
        page: u8,
        slot: u16,
        to: Addr,
    },
    /// A command on host queue `queue` (its doorbell rung).
    Command {
        queue: u8,
        opcode: u8,
        flags: u8,
        nsid: u8,
        prp1: Addr,
        prp2: Addr,
        cdw: [u32; 6],
    },
    /// Reset, enable, Number of Queues, `pairs` I/O queue pairs of `size` entries.
    BringUp {
        pairs: u8,
        size: u8,
    },
    Reap,
    Hold(bool),
    /// Completes that many held backend requests.
    Release(u8),
    Poll,
    Disable,
    Shutdown,
    SaveRestore,
    Reset,
}

/// Op variants, in declaration order (for the seeds).
mod op {
    pub const COUNT: u32 = 15;
    pub const DOORBELL: u32 = 2;
    pub const MEMORY: u32 = 3;
    pub const LIST_ENTRY: u32 = 4;
    pub const COMMAND: u32 = 5;
    pub const BRING_UP: u32 = 6;
    pub const REAP: u32 = 7;
    pub const HOLD: u32 = 8;
    pub const RELEASE: u32 = 9;
    pub const POLL: u32 = 10;
    pub const DISABLE: u32 = 11;
    pub const SHUTDOWN: u32 = 12;
    pub const SAVE_RESTORE: u32 = 13;
}

fn check(d: &mut Driver<RamDisk>) {
    let csts = d
        .ctrl
        .read(reg::CSTS, AccessSize::Word)
        .expect("CSTS reads");
    assert_eq!(
        csts & !0xf,
        0,
        "CSTS {csts:#x} has bits outside RDY/CFS/SHST"
    );
    let cc = d.ctrl.read(reg::CC, AccessSize::Word).expect("CC reads");
    assert!(csts & 1 == 0 || cc & 1 == 1, "RDY while CC.EN is clear");
    assert!(
        d.ctrl.in_flight() <= MAX_IN_FLIGHT,
        "too many held commands"
    );
    let ops = d.ctrl.backend_ops();
    assert!(
        ops <= MAX_BUFFERS + MAX_DMA_OPS + MAX_IN_FLIGHT + 1,
        "{ops} backend operations"
    );
    assert!(
        d.ctrl.backend().queued_dma() <= MAX_DMA_OPS,
        "too many DMA operations"
    );
    let vectors = d.ctrl.config().vectors;
    assert!(
        d.irq.0.iter().all(|&v| v < vectors),
        "unconfigured vector signalled: {:?}",
        d.irq.0
    );
    d.irq.0.clear();
}

fn bring_up(d: &mut Driver<RamDisk>, pairs: u8, size: u8) {
    d.disable();
    d.ctrl.backend_mut().hold = false;
    let dma = pairs & DMA_BIT != 0;
    d.mem.allow_dma(dma);
    d.ctrl.backend_mut().dma = dma.then_some(DMA_LIMITS);
    let pairs = pairs & !DMA_BIT;
    d.enable();
    let n = u32::from(IO_QUEUES - 1);
    d.submit(
        0,
        Sqe::new(admin::SET_FEATURES)
            .cdw(10, u32::from(feature::NUMBER_OF_QUEUES))
            .cdw(11, n | n << 16),
    );
    d.reap(0);
    let size = u16::from(size % 63) + 2;
    for q in 1..=u16::from(pairs).min(IO_QUEUES) {
        let (sq, cq) = Driver::<RamDisk>::queue_area(q);
        let _ = d.mem.write(cq, &[0; 0x2000]);
        let c10 = u32::from(q) | u32::from(size - 1) << 16;
        d.submit(
            0,
            Sqe::new(admin::CREATE_IO_CQ)
                .prp(cq, 0)
                .cdw(10, c10)
                .cdw(11, u32::from(q) << 16 | 0b11),
        );
        d.submit(
            0,
            Sqe::new(admin::CREATE_IO_SQ)
                .prp(sq, 0)
                .cdw(10, c10)
                .cdw(11, u32::from(q) << 16 | 1),
        );
        let ok = d.reap(0).iter().all(|c| c.sct == 0 && c.sc == 0);
        if ok {
            d.queues[usize::from(q)] = Some(nvme::testing::HostQueue {
                sq,
                cq,
                size,
                tail: 0,
                head: 0,
                phase: true,
            });
        }
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    run_ops(data);
}

fn run_ops(data: &[u8]) -> Driver<RamDisk> {
    let mut u = Unstructured::new(data);
    let mut d = Driver::new(controller());
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        match op {
            Op::Read { offset, size } => {
                let size = crate::access_size(size);
                if let Ok(v) = d.ctrl.read(u64::from(offset), size) {
                    assert_eq!(v & !size.mask(), 0, "read wider than the access");
                }
            }
            Op::Write {
                offset,
                size,
                value,
            } => {
                let _ = d.ctrl.write(
                    &mut d.mem,
                    &mut d.irq,
                    u64::from(offset),
                    crate::access_size(size),
                    value,
                );
            }
            Op::Doorbell { index, value } => {
                let off = reg::DOORBELLS + u64::from(index) * 4;
                let _ = d.ctrl.write(
                    &mut d.mem,
                    &mut d.irq,
                    off,
                    AccessSize::Word,
                    u64::from(value),
                );
            }
            Op::Memory { offset, bytes } => {
                let room = RAM_BASE + RAM_SIZE as u64 - DATA;
                let at = DATA + u64::from(offset) % room;
                let n = bytes
                    .0
                    .len()
                    .min((RAM_BASE + RAM_SIZE as u64 - at) as usize);
                let _ = d.mem.write(at, &bytes.0[..n]);
            }
            Op::ListEntry { page, slot, to } => {
                let at = DATA + u64::from(page) * PAGE + u64::from(slot % 512) * 8;
                let _ = d.mem.write_u64(at, to.gpa());
            }
            Op::Command {
                queue,
                opcode,
                flags,
                nsid,
                prp1,
                prp2,
                cdw,
            } => {
                let q = u16::from(queue) % (IO_QUEUES + 1);
                if d.queues[usize::from(q)].is_some() {
                    let nsid = match nsid % 4 {
                        0 => 1,
                        1 => 0,
                        2 => 0xffff_ffff,
                        _ => u32::from(nsid),
                    };
                    let sqe = Sqe {
                        opcode,
                        flags,
                        nsid,
                        prp1: prp1.gpa(),
                        prp2: prp2.gpa(),
                        cdw,
                    };
                    d.submit(q, sqe);
                }
            }
            Op::BringUp { pairs, size } => bring_up(&mut d, pairs, size),
            Op::Reap => {
                for q in 0..=IO_QUEUES {
                    d.reap(q);
                }
            }
            Op::Hold(h) => d.ctrl.backend_mut().hold = h,
            Op::Release(n) => {
                d.ctrl.backend_mut().release(usize::from(n));
                let Driver { ctrl, mem, .. } = &mut d;
                ctrl.backend_mut().release_dma(mem, usize::from(n));
                d.poll();
            }
            Op::Poll => d.poll(),
            Op::Disable => {
                d.disable();
                assert_eq!(
                    d.ctrl.backend().queued_dma(),
                    0,
                    "DMA still in flight after a reset"
                );
            }
            Op::Shutdown => {
                let cc = d.ctrl.read(reg::CC, AccessSize::Word).unwrap_or(0);
                d.write_reg(reg::CC, AccessSize::Word, cc | 1 << 14);
            }
            Op::SaveRestore => {
                // The harness waits out DMA first: the fresh controller knows
                // nothing of the old one's operations.
                d.ctrl.backend_mut().quiesce();
                d.poll();
                let blob = d.ctrl.save();
                let mut fresh = controller();
                fresh.restore(&blob).expect("a saved state restores");
                assert!(fresh.save() == blob, "save after restore differs");
                // Carry on with the restored controller over the same disk.
                let disk = core::mem::replace(d.ctrl.backend_mut(), RamDisk::new(0));
                *fresh.backend_mut() = disk;
                d.ctrl = fresh;
            }
            Op::Reset => {
                d.ctrl.reset();
                assert_eq!(
                    d.ctrl.backend().queued_dma(),
                    0,
                    "DMA still in flight after a reset"
                );
                for q in d.queues.iter_mut() {
                    *q = None;
                }
            }
        }
        check(&mut d);
    }
    d
}

/// The 16 KiB the `linux-io` seed writes to LBA 8.
fn linux_pattern() -> Vec<u8> {
    (0..16u32 << 10).map(|i| (i * 7 + i / 512) as u8).collect()
}

/// The seed corpus: a Linux bring-up with I/O of every kind, PRP lists crossing pages,
/// doorbell misuse, a held backend with a reset in flight, shutdown, save/restore.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let cmd = |e: &mut Encoder, q: u8, opcode: u8, prp1: u64, prp2: u64, cdw: [u32; 6]| {
        e.variant(op::COMMAND, op::COUNT)
            .u8(q)
            .u8(opcode)
            .u8(0)
            .u8(0);
        // Addr::Raw is variant 1 of 2.
        e.variant(1, 2).u64(prp1).variant(1, 2).u64(prp2);
        for v in cdw {
            e.u32(v);
        }
    };
    let page = |n: u64| DATA + n * PAGE;

    // Bring-up, identify, then write and read 16 KiB through a PRP list and flush.
    let mut e = Encoder::default();
    e.variant(op::BRING_UP, op::COUNT).u8(2).u8(30);
    cmd(&mut e, 0, admin::IDENTIFY, page(0), 0, [1, 0, 0, 0, 0, 0]);
    cmd(&mut e, 0, admin::IDENTIFY, page(0), 0, [0, 0, 0, 0, 0, 0]);
    e.variant(op::MEMORY, op::COUNT)
        .u32(PAGE as u32 + 0x200)
        .bytes(&linux_pattern());
    for i in 0..4u16 {
        e.variant(op::LIST_ENTRY, op::COUNT).u8(10).u16(i);
        e.variant(0, 2).u8(2 + i as u8).u16(0);
    }
    cmd(
        &mut e,
        1,
        0x01,
        page(1) + 0x200,
        page(10),
        [8, 0, 31, 0, 0, 0],
    );
    cmd(
        &mut e,
        1,
        0x02,
        page(1) + 0x200,
        page(10),
        [8, 0, 31, 0, 0, 0],
    );
    cmd(&mut e, 2, 0x00, 0, 0, [0; 6]);
    cmd(&mut e, 2, 0x08, 0, 0, [100, 0, 63, 0, 0, 0]);
    cmd(&mut e, 2, 0x09, page(20), 0, [0, 4, 0, 0, 0, 0]);
    e.variant(op::REAP, op::COUNT);
    // The same with data moved by DMA, split by the backend's limits, released:
    // the bring-up's pair count follows its 4-byte variant.
    let mut dma = e.0.clone();
    dma[4] |= DMA_BIT;
    out.push(("linux-io", e.0));
    let mut e = Encoder(dma);
    e.variant(op::RELEASE, op::COUNT).u8(255);
    e.variant(op::REAP, op::COUNT);
    out.push(("linux-io-dma", e.0));

    // Event requests, then doorbells beyond the queue and of missing queues, then
    // the error log read.
    let mut e = Encoder::default();
    e.variant(op::BRING_UP, op::COUNT).u8(1).u8(6);
    cmd(&mut e, 0, admin::ASYNC_EVENT_REQUEST, 0, 0, [0; 6]);
    cmd(&mut e, 0, admin::ASYNC_EVENT_REQUEST, 0, 0, [0; 6]);
    e.variant(op::DOORBELL, op::COUNT).u8(2).u16(500);
    e.variant(op::DOORBELL, op::COUNT).u8(9).u16(1);
    e.variant(op::DOORBELL, op::COUNT).u8(3).u16(7);
    cmd(
        &mut e,
        0,
        admin::GET_LOG_PAGE,
        page(0),
        0,
        [1 | 15 << 16, 0, 0, 0, 0, 0],
    );
    e.variant(op::REAP, op::COUNT);
    out.push(("doorbells", e.0));

    // A held backend: reads in flight across a reset, a shutdown, save/restore.
    let mut e = Encoder::default();
    e.variant(op::BRING_UP, op::COUNT).u8(3).u8(14);
    e.variant(op::HOLD, op::COUNT).u8(1);
    for q in 1..=3u8 {
        cmd(
            &mut e,
            q,
            0x02,
            page(u64::from(q)),
            0,
            [u32::from(q), 0, 7, 0, 0, 0],
        );
    }
    e.variant(op::SAVE_RESTORE, op::COUNT);
    e.variant(op::RELEASE, op::COUNT).u8(2);
    e.variant(op::DISABLE, op::COUNT);
    e.variant(op::RELEASE, op::COUNT).u8(8);
    e.variant(op::BRING_UP, op::COUNT).u8(1).u8(2);
    cmd(&mut e, 1, 0x01, page(4), 0, [0, 0, 0, 1 << 30, 0, 0]);
    e.variant(op::SHUTDOWN, op::COUNT);
    e.variant(op::POLL, op::COUNT);
    e.variant(op::SAVE_RESTORE, op::COUNT);
    out.push(("reset-in-flight", e.0));

    // Hostile PRPs: outside RAM, misaligned, a list that points at itself.
    let mut e = Encoder::default();
    e.variant(op::BRING_UP, op::COUNT).u8(1).u8(62);
    cmd(&mut e, 1, 0x02, 0x10, 0, [0, 0, 0, 0, 0, 0]);
    cmd(&mut e, 1, 0x02, page(1) + 2, 0, [0, 0, 0, 0, 0, 0]);
    for i in 0..512u16 {
        e.variant(op::LIST_ENTRY, op::COUNT).u8(30).u16(i);
        e.variant(0, 2).u8(30).u16(0);
    }
    cmd(&mut e, 1, 0x02, page(1), page(30), [0, 0, 255, 0, 0, 0]);
    cmd(&mut e, 1, 0x02, page(1), u64::MAX - 7, [0, 0, 31, 0, 0, 0]);
    cmd(
        &mut e,
        0,
        admin::CREATE_IO_CQ,
        0,
        0,
        [2, 3 << 16, 0, 0, 0, 0],
    );
    out.push(("hostile-prps", e.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_decode_as_written_and_run() {
        for (name, bytes) in seeds() {
            let mut u = Unstructured::new(&bytes);
            let mut n = 0;
            while !u.is_empty() {
                let op = Op::arbitrary(&mut u).unwrap_or_else(|e| panic!("{name}: {e}"));
                if n == 0 {
                    assert!(
                        matches!(op, Op::BringUp { .. }),
                        "{name} starts with {op:?}"
                    );
                }
                n += 1;
            }
            assert!(n > 3, "{name}");
            run(&bytes);
        }
    }

    #[test]
    fn the_linux_seed_moves_data_to_the_disk() {
        let (name, bytes) = seeds().into_iter().next().unwrap();
        assert_eq!(name, "linux-io");
        let d = run_ops(&bytes);
        let disk = &d.ctrl.backend().data;
        assert!(
            disk[8 * 512..8 * 512 + (16 << 10)] == linux_pattern()[..],
            "the written data is not on the disk"
        );
    }

    #[test]
    fn the_dma_seed_moves_the_same_data_by_dma() {
        let (name, bytes) = seeds().into_iter().nth(1).unwrap();
        assert_eq!(name, "linux-io-dma");
        let d = run_ops(&bytes);
        let b = d.ctrl.backend();
        assert!(b.dma_ops >= 4, "{} DMA operations", b.dma_ops);
        assert_eq!(b.queued_dma(), 0);
        assert!(
            b.data[8 * 512..8 * 512 + (16 << 10)] == linux_pattern()[..],
            "the written data is not on the disk"
        );
    }
}
