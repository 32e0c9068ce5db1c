//! virtio-blk tests, driven through the MMIO transport as a guest driver would.

use super::*;
use crate::defs::{features, mmio, ring};
use crate::testing::{MemDisk, TestDriver, RAM_BASE};
use vdev::AccessSize;

const SECTORS: usize = 64;

fn disk(read_only: bool) -> TestDriver<Blk<vdev::SyncBlock<MemDisk>>> {
    let mut d = TestDriver::new(
        Blk::new(vdev::SyncBlock(MemDisk::new(SECTORS, read_only)))
            .with_serial(b"RAYOS-DISK-0")
            .with_chunk_size(limits::CHUNK_BYTES),
        1 << 20,
    );
    d.start(features::INDIRECT_DESC);
    d
}

fn header(kind: u32, sector: u64) -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..4].copy_from_slice(&kind.to_le_bytes());
    h[8..].copy_from_slice(&sector.to_le_bytes());
    h
}

/// Lays out header, data and status buffers; returns (hdr, data, status) addresses.
fn request(
    d: &mut TestDriver<Blk<vdev::SyncBlock<MemDisk>>>,
    kind: u32,
    sector: u64,
    data_len: u32,
) -> (u64, u64, u64) {
    let hdr = d.alloc(16, 16);
    d.write_mem(hdr, &header(kind, sector));
    let data = d.alloc(u64::from(data_len.max(1)), 512);
    let st = d.alloc(1, 1);
    d.write_mem(st, &[0xff]);
    (hdr, data, st)
}

/// Submits a request with the data buffer device-writable or not; returns (status, used len).
fn submit(
    d: &mut TestDriver<Blk<vdev::SyncBlock<MemDisk>>>,
    kind: u32,
    sector: u64,
    data: &[u8],
    data_writable: bool,
) -> (u8, u32, u64) {
    let (hdr, buf, st) = request(d, kind, sector, data.len() as u32);
    d.write_mem(buf, data);
    let mut bufs = alloc::vec![(hdr, 16, false)];
    if !data.is_empty() {
        bufs.push((buf, data.len() as u32, data_writable));
    }
    bufs.push((st, 1, true));
    let head = d.add_chain(0, &bufs);
    d.notify(0);
    let (id, len) = d.pop_used(0).expect("request completed");
    assert_eq!(id, u32::from(head));
    (d.read_mem(st, 1)[0], len, buf)
}

#[test]
fn write_read_flush_round_trip() {
    let mut d = disk(false);
    let pattern: alloc::vec::Vec<u8> = (0..2048u32).map(|i| (i * 7 + 3) as u8).collect();
    let (status, len, _) = submit(&mut d, blk::T_OUT, 5, &pattern, false);
    assert_eq!((status, len), (blk::S_OK, 1));
    assert_eq!(
        &d.transport.device().backend().0.data[5 * 512..5 * 512 + 2048],
        &pattern[..]
    );
    let (status, len, buf) = submit(&mut d, blk::T_IN, 5, &[0u8; 2048], true);
    assert_eq!((status, len), (blk::S_OK, 2049));
    assert_eq!(d.read_mem(buf, 2048), pattern);
    let (status, _, _) = submit(&mut d, blk::T_FLUSH, 0, &[], false);
    assert_eq!(status, blk::S_OK);
    assert_eq!(d.transport.device().backend().0.flushes, 1);
}

#[test]
fn large_read_crosses_chunks_and_indirect_tables() {
    let mut d = disk(false);
    let len = 40 * 512; // more than CHUNK_BYTES
    let pattern: alloc::vec::Vec<u8> = (0..len).map(|i| (i / 512 + i) as u8).collect();
    d.transport.device_mut().backend_mut().0.data[..len].copy_from_slice(&pattern);
    let (hdr, _, st) = request(&mut d, blk::T_IN, 0, 1);
    let a = d.alloc(len as u64 / 2, 512);
    let b = d.alloc(len as u64 / 2, 512);
    let half = len as u32 / 2;
    let head = d.add_indirect(
        0,
        &[
            (hdr, 16, false),
            (a, half, true),
            (b, half, true),
            (st, 1, true),
        ],
    );
    d.notify(0);
    assert_eq!(d.pop_used(0), Some((u32::from(head), len as u32 + 1)));
    assert_eq!(d.read_mem(st, 1)[0], blk::S_OK);
    let mut got = d.read_mem(a, len / 2);
    got.extend(d.read_mem(b, len / 2));
    assert_eq!(got, pattern);
}

#[test]
fn get_id_returns_serial() {
    let mut d = disk(false);
    let (status, len, buf) = submit(&mut d, blk::T_GET_ID, 0, &[0xaa; 20], true);
    assert_eq!((status, len), (blk::S_OK, 21));
    let mut want = [0u8; 20];
    want[..12].copy_from_slice(b"RAYOS-DISK-0");
    assert_eq!(d.read_mem(buf, 20), want);
}

#[test]
fn read_only_disk_refuses_writes() {
    let mut d = disk(true);
    assert_ne!(d.device_features() & blk::F_RO, 0);
    assert_eq!(d.device_features() & blk::F_WRITE_ZEROES, 0);
    let (status, len, _) = submit(&mut d, blk::T_OUT, 0, &[0x55; 512], false);
    assert_eq!((status, len), (blk::S_IOERR, 1));
    let mut seg = [0u8; 16];
    seg[8..12].copy_from_slice(&1u32.to_le_bytes());
    let (status, _, _) = submit(&mut d, blk::T_WRITE_ZEROES, 0, &seg, false);
    assert_eq!(status, blk::S_IOERR);
    assert!(d
        .transport
        .device()
        .backend()
        .0
        .data
        .iter()
        .all(|&b| b == 0));
    let (status, _, _) = submit(&mut d, blk::T_IN, 0, &[0u8; 512], true);
    assert_eq!(status, blk::S_OK);
    assert!(!d.transport.needs_reset());
}

#[test]
fn out_of_range_and_partial_sectors_are_ioerr() {
    let mut d = disk(false);
    let last = SECTORS as u64 - 1;
    assert_eq!(
        submit(&mut d, blk::T_IN, last, &[0u8; 1024], true).0,
        blk::S_IOERR
    );
    assert_eq!(
        submit(&mut d, blk::T_OUT, last, &[1u8; 1024], false).0,
        blk::S_IOERR
    );
    assert_eq!(
        submit(&mut d, blk::T_IN, u64::MAX, &[0u8; 512], true).0,
        blk::S_IOERR
    );
    assert_eq!(
        submit(&mut d, blk::T_IN, 0, &[0u8; 100], true).0,
        blk::S_IOERR
    );
    assert_eq!(
        submit(&mut d, blk::T_OUT, 0, &[1u8; 513], false).0,
        blk::S_IOERR
    );
    assert!(d
        .transport
        .device()
        .backend()
        .0
        .data
        .iter()
        .all(|&b| b == 0));
    assert_eq!(
        submit(&mut d, blk::T_IN, last, &[0u8; 512], true).0,
        blk::S_OK
    );
}

#[test]
fn unknown_requests_are_unsupp() {
    let mut d = disk(false);
    assert_eq!(submit(&mut d, 0x1234, 0, &[], false).0, blk::S_UNSUPP);
    assert_eq!(submit(&mut d, 11, 0, &[0u8; 16], false).0, blk::S_UNSUPP); // DISCARD
}

#[test]
fn write_zeroes() {
    let mut d = disk(false);
    d.transport.device_mut().backend_mut().0.data.fill(0xee);
    let mut seg = [0u8; 16];
    seg[..8].copy_from_slice(&2u64.to_le_bytes());
    seg[8..12].copy_from_slice(&3u32.to_le_bytes());
    assert_eq!(
        submit(&mut d, blk::T_WRITE_ZEROES, 0, &seg, false).0,
        blk::S_OK
    );
    let data = &d.transport.device().backend().0.data;
    assert!(data[2 * 512..5 * 512].iter().all(|&b| b == 0));
    assert_eq!(data[2 * 512 - 1], 0xee);
    assert_eq!(data[5 * 512], 0xee);
    // Unknown flag: UNSUPP. Beyond the disk: IOERR. Two segments: IOERR.
    seg[12] = 2;
    assert_eq!(
        submit(&mut d, blk::T_WRITE_ZEROES, 0, &seg, false).0,
        blk::S_UNSUPP
    );
    seg[12] = 0;
    seg[..8].copy_from_slice(&(SECTORS as u64 - 1).to_le_bytes());
    assert_eq!(
        submit(&mut d, blk::T_WRITE_ZEROES, 0, &seg, false).0,
        blk::S_IOERR
    );
    assert_eq!(
        submit(&mut d, blk::T_WRITE_ZEROES, 0, &[0u8; 32], false).0,
        blk::S_IOERR
    );
}

#[test]
fn config_space_layout() {
    let mut d = disk(false);
    let rd = |d: &mut TestDriver<Blk<vdev::SyncBlock<MemDisk>>>, off: u64, size| {
        d.try_read(mmio::CONFIG + off, size).unwrap()
    };
    assert_eq!(rd(&mut d, 0, AccessSize::Word), SECTORS as u64);
    assert_eq!(rd(&mut d, 4, AccessSize::Word), 0);
    assert_eq!(rd(&mut d, 8, AccessSize::Word), u64::from(SIZE_MAX));
    assert_eq!(rd(&mut d, 12, AccessSize::Word), u64::from(SEG_MAX));
    assert_eq!(rd(&mut d, 20, AccessSize::Word), 512);
    assert_eq!(rd(&mut d, 21, AccessSize::Byte), 2);
    assert_eq!(rd(&mut d, 34, AccessSize::Half), 1);
    assert_eq!(rd(&mut d, 0x80, AccessSize::Word), 0);
}

#[test]
fn missing_header_or_status_needs_reset() {
    let mut d = disk(false);
    let buf = d.alloc(16, 16);
    d.add_chain(0, &[(buf, 8, false), (buf + 8, 1, true)]);
    d.notify(0);
    assert!(d.transport.needs_reset());
    let mut d = disk(false);
    d.write_mem(buf, &header(blk::T_IN, 0));
    d.add_chain(0, &[(buf, 16, false)]);
    d.notify(0);
    assert!(d.transport.needs_reset());
    assert_eq!(d.pop_used(0), None);
}

#[test]
fn oversized_and_out_of_ram_buffers_need_reset_without_stray_writes() {
    // A 4 GiB - 1 data length: refused before any allocation or access.
    let mut d = disk(false);
    let (hdr, data, st) = request(&mut d, blk::T_IN, 0, 512);
    d.add_chain(
        0,
        &[(hdr, 16, false), (data, u32::MAX, true), (st, 1, true)],
    );
    let before = d.mem.as_bytes().to_vec();
    d.notify(0);
    assert!(d.transport.needs_reset());
    assert_eq!(d.mem.as_bytes(), &before[..]);
    // A data buffer outside guest RAM: no write anywhere in RAM.
    let mut d = disk(false);
    let (hdr, _, st) = request(&mut d, blk::T_IN, 0, 512);
    d.add_chain(0, &[(hdr, 16, false), (0x1000, 512, true), (st, 1, true)]);
    let before = d.mem.as_bytes().to_vec();
    d.notify(0);
    assert!(d.transport.needs_reset());
    assert_eq!(d.mem.as_bytes(), &before[..]);
    // A write whose source lies past the end of RAM: the disk is not touched.
    let mut d = disk(false);
    let (hdr, _, st) = request(&mut d, blk::T_OUT, 0, 512);
    d.add_chain(
        0,
        &[
            (hdr, 16, false),
            (RAM_BASE + (1 << 20) - 256, 512, false),
            (st, 1, true),
        ],
    );
    d.notify(0);
    assert!(d.transport.needs_reset());
    assert!(d
        .transport
        .device()
        .backend()
        .0
        .data
        .iter()
        .all(|&b| b == 0));
}

#[test]
fn indirect_in_indirect_needs_reset() {
    let mut d = disk(false);
    let (hdr, data, st) = request(&mut d, blk::T_IN, 0, 512);
    let inner = d.alloc(48, 16);
    d.write_desc_at(inner, 0, hdr, 16, ring::DESC_F_NEXT, 1);
    d.write_desc_at(
        inner,
        1,
        data,
        512,
        ring::DESC_F_WRITE | ring::DESC_F_NEXT,
        2,
    );
    d.write_desc_at(inner, 2, st, 1, ring::DESC_F_WRITE, 0);
    let outer = d.alloc(16, 16);
    d.write_desc_at(outer, 0, inner, 48, ring::DESC_F_INDIRECT, 0);
    d.write_desc(0, 0, outer, 16, ring::DESC_F_INDIRECT, 0);
    d.publish(0, 0);
    let before = d.mem.as_bytes().to_vec();
    d.notify(0);
    assert!(d.transport.needs_reset());
    assert_eq!(d.mem.as_bytes(), &before[..]);
}

#[test]
fn head_index_out_of_range_needs_reset() {
    let mut d = disk(false);
    let size = d.queues[0].size;
    d.publish(0, size);
    let before = d.mem.as_bytes().to_vec();
    d.notify(0);
    assert!(d.transport.needs_reset());
    assert_eq!(d.mem.as_bytes(), &before[..]);
}

#[test]
fn vm_reset_forgets_queues_and_lowers_the_line_but_keeps_the_disk() {
    use vdev::{MmioDevice, SaveRestore};
    let fresh = TestDriver::new(
        Blk::new(vdev::SyncBlock(MemDisk::new(SECTORS, false)))
            .with_serial(b"RAYOS-DISK-0")
            .with_chunk_size(limits::CHUNK_BYTES),
        1 << 20,
    );
    let want = fresh.transport.save();
    let mut d = disk(false);
    let sector = [0x5au8; 512];
    assert_eq!(submit(&mut d, blk::T_OUT, 3, &sector, false).0, blk::S_OK);
    assert!(d.irq_level());
    MmioDevice::reset(&mut d.transport, &mut d.irq);
    assert!(!d.irq_level(), "reset lowers the line");
    assert_eq!(
        d.transport.save(),
        want,
        "registers and queues as at power-on"
    );
    // The disk's contents are the host's: a new driver reads what was written.
    d.queues.clear();
    d.start(features::INDIRECT_DESC);
    let mut back = [0u8; 512];
    let (st, _, buf) = submit(&mut d, blk::T_IN, 3, &back, true);
    assert_eq!(st, blk::S_OK);
    back.copy_from_slice(&d.read_mem(buf, 512));
    assert_eq!(back, sector);
}

// ---- Asynchronous completion -------------------------------------------------

/// A backend that holds every request until the test finishes it, in any order.
struct Held {
    disk: MemDisk,
    queued: alloc::vec::Vec<(u64, vdev::BlockOp, alloc::vec::Vec<u8>)>,
    ready: alloc::collections::VecDeque<vdev::Completion>,
    /// Answer `Busy` to every submission.
    busy: bool,
    signal: Option<vdev::WorkSignal>,
}

impl Held {
    fn new() -> Self {
        Self {
            disk: MemDisk::new(SECTORS, false),
            queued: alloc::vec::Vec::new(),
            ready: alloc::collections::VecDeque::new(),
            busy: false,
            signal: None,
        }
    }

    /// Performs the `i`th held request on the disk and makes its completion ready.
    fn finish(&mut self, i: usize) {
        use vdev::BlockBackend;
        let (tag, op, mut buf) = self.queued.remove(i);
        let result = match op {
            vdev::BlockOp::Read { offset } => self.disk.read_at(offset, &mut buf),
            vdev::BlockOp::Write { offset } => self.disk.write_at(offset, &buf),
            vdev::BlockOp::Flush => self.disk.flush(),
        };
        self.ready.push_back(vdev::Completion { tag, result, buf });
        if let Some(s) = &self.signal {
            s.raise();
        }
    }

    fn ops(&self) -> alloc::vec::Vec<vdev::BlockOp> {
        self.queued.iter().map(|q| q.1).collect()
    }
}

impl vdev::AsyncBlock for Held {
    fn capacity(&self) -> u64 {
        self.disk.data.len() as u64
    }
    fn read_only(&self) -> bool {
        false
    }
    fn submit(&mut self, tag: u64, op: vdev::BlockOp, buf: alloc::vec::Vec<u8>) -> vdev::Submit {
        if self.busy {
            return vdev::Submit::Busy(buf);
        }
        self.queued.push((tag, op, buf));
        vdev::Submit::Queued
    }
    fn poll(&mut self) -> Option<vdev::Completion> {
        self.ready.pop_front()
    }
    fn has_completions(&self) -> bool {
        !self.ready.is_empty()
    }
    fn set_waker(&mut self, signal: vdev::WorkSignal) {
        self.signal = Some(signal);
    }
}

type HeldDriver = TestDriver<Blk<Held>>;

fn held(in_flight: usize, buffers: usize) -> HeldDriver {
    let mut d = TestDriver::new(
        Blk::new(Held::new())
            .with_chunk_size(1024)
            .with_limits(in_flight, buffers),
        1 << 20,
    );
    d.start(features::INDIRECT_DESC | features::EVENT_IDX);
    d
}

/// A request in flight: its head, data buffer and status byte addresses.
struct Req {
    head: u16,
    buf: u64,
    st: u64,
}

/// Makes a request available (with `data` as its buffer contents) without notifying.
fn publish<D: VirtioDevice>(
    d: &mut TestDriver<D>,
    kind: u32,
    sector: u64,
    data: &[u8],
    writable: bool,
) -> Req {
    let hdr = d.alloc(16, 16);
    d.write_mem(hdr, &header(kind, sector));
    let buf = d.alloc(data.len().max(1) as u64, 512);
    d.write_mem(buf, data);
    let st = d.alloc(1, 1);
    d.write_mem(st, &[0xff]);
    let mut bufs = alloc::vec![(hdr, 16, false)];
    if !data.is_empty() {
        bufs.push((buf, data.len() as u32, writable));
    }
    bufs.push((st, 1, true));
    Req {
        head: d.add_chain(0, &bufs),
        buf,
        st,
    }
}

fn used<D: VirtioDevice>(d: &mut TestDriver<D>) -> alloc::vec::Vec<u32> {
    core::iter::from_fn(|| d.pop_used(0).map(|(id, _)| id)).collect()
}

fn backend(d: &mut HeldDriver) -> &mut Held {
    d.transport.device_mut().backend_mut()
}

#[test]
fn notify_returns_before_the_backend_completes_and_completions_may_come_out_of_order() {
    let mut d = held(8, 8);
    let a = publish(&mut d, blk::T_OUT, 1, &[0xa1; 512], false);
    let b = publish(&mut d, blk::T_OUT, 2, &[0xb2; 512], false);
    let c = publish(&mut d, blk::T_IN, 1, &[0; 512], true);
    d.notify(0);
    assert_eq!(backend(&mut d).queued.len(), 3, "all three started");
    assert!(
        used(&mut d).is_empty(),
        "nothing completed inside the notify"
    );
    assert!(!d.irq_level());
    assert_eq!(
        d.read_mem(a.st, 1),
        [0xff],
        "status untouched while in flight"
    );
    // The backend finishes the second first.
    backend(&mut d).finish(1);
    d.poll();
    assert_eq!(used(&mut d), [u32::from(b.head)]);
    assert_eq!(d.read_mem(b.st, 1), [blk::S_OK]);
    assert!(d.irq_level(), "completion interrupts");
    d.ack_interrupts();
    // Then the read before the write it overlaps: it sees the old (zero) data.
    backend(&mut d).finish(1);
    backend(&mut d).finish(0);
    d.poll();
    assert_eq!(used(&mut d), [u32::from(c.head), u32::from(a.head)]);
    assert_eq!(d.read_mem(c.buf, 512), [0; 512]);
    assert_eq!(d.read_mem(c.st, 1), [blk::S_OK]);
    assert_eq!(&backend(&mut d).disk.data[512..1024], &[0xa1; 512][..]);
    assert_eq!(d.transport.device().in_flight(), 0);
}

#[test]
fn a_large_request_moves_in_pieces_and_completes_once_after_its_last_piece() {
    // 4 KiB through 1 KiB buffers, at most 2 lent at once.
    let mut d = held(8, 2);
    let pattern: alloc::vec::Vec<u8> = (0..4096u32).map(|i| (i * 13 + 1) as u8).collect();
    backend(&mut d).disk.data[..4096].copy_from_slice(&pattern);
    let r = publish(&mut d, blk::T_IN, 0, &[0; 4096], true);
    d.notify(0);
    assert_eq!(backend(&mut d).queued.len(), 2, "bounded by the buffers");
    backend(&mut d).finish(1);
    d.poll();
    assert_eq!(
        backend(&mut d).queued.len(),
        2,
        "a returned buffer starts the next piece"
    );
    assert!(used(&mut d).is_empty());
    while !backend(&mut d).queued.is_empty() {
        let last = backend(&mut d).queued.len() - 1;
        backend(&mut d).finish(last);
        d.poll();
    }
    let done: alloc::vec::Vec<_> = core::iter::from_fn(|| d.pop_used(0)).collect();
    assert_eq!(done, [(u32::from(r.head), 4097)]);
    assert_eq!(d.read_mem(r.buf, 4096), pattern);
}

#[test]
fn flush_waits_for_earlier_writes_and_later_requests_wait_for_the_flush() {
    use vdev::BlockOp;
    let mut d = held(8, 8);
    let w1 = publish(&mut d, blk::T_OUT, 1, &[1; 512], false);
    let f = publish(&mut d, blk::T_FLUSH, 0, &[], false);
    let w2 = publish(&mut d, blk::T_OUT, 2, &[2; 512], false);
    d.notify(0);
    assert_eq!(backend(&mut d).ops(), [BlockOp::Write { offset: 512 }]);
    backend(&mut d).finish(0);
    d.poll();
    assert_eq!(used(&mut d), [u32::from(w1.head)]);
    assert_eq!(
        backend(&mut d).ops(),
        [BlockOp::Flush],
        "flush after the write"
    );
    assert_eq!(backend(&mut d).disk.flushes, 0);
    backend(&mut d).finish(0);
    d.poll();
    assert_eq!(used(&mut d), [u32::from(f.head)]);
    assert_eq!(d.read_mem(f.st, 1), [blk::S_OK]);
    assert_eq!(backend(&mut d).disk.flushes, 1);
    assert_eq!(
        backend(&mut d).ops(),
        [BlockOp::Write { offset: 1024 }],
        "the later write starts once the flush is done"
    );
    backend(&mut d).finish(0);
    d.poll();
    assert_eq!(used(&mut d), [u32::from(w2.head)]);
}

#[test]
fn a_full_in_flight_table_leaves_requests_in_the_ring_until_one_completes() {
    let mut d = held(2, 8);
    let reqs: alloc::vec::Vec<Req> = (0..4)
        .map(|i| publish(&mut d, blk::T_OUT, i, &[i as u8 + 1; 512], false))
        .collect();
    d.notify(0);
    assert_eq!(d.transport.device().in_flight(), 2);
    assert_eq!(backend(&mut d).queued.len(), 2);
    backend(&mut d).finish(0);
    d.poll();
    assert_eq!(used(&mut d), [u32::from(reqs[0].head)]);
    assert_eq!(d.transport.device().in_flight(), 2, "the third was taken");
    for _ in 0..3 {
        backend(&mut d).finish(0);
        d.poll();
    }
    assert_eq!(
        used(&mut d),
        [reqs[1].head, reqs[2].head, reqs[3].head].map(u32::from)
    );
    for i in 0..4 {
        assert_eq!(backend(&mut d).disk.data[i * 512], i as u8 + 1);
    }
}

#[test]
fn a_busy_backend_is_retried_on_poll() {
    let mut d = held(8, 8);
    backend(&mut d).busy = true;
    let r = publish(&mut d, blk::T_OUT, 3, &[7; 512], false);
    d.notify(0);
    assert!(backend(&mut d).queued.is_empty());
    assert!(
        d.transport.needs_poll(),
        "nothing in flight to wake it: poll"
    );
    backend(&mut d).busy = false;
    d.poll();
    backend(&mut d).finish(0);
    d.poll();
    assert_eq!(used(&mut d), [u32::from(r.head)]);
}

#[test]
fn reset_with_requests_in_flight_never_writes_guest_memory_afterwards() {
    use vdev::MmioDevice;
    for vm_reset in [false, true] {
        let mut d = held(8, 8);
        backend(&mut d).disk.data[..512].fill(0xee);
        let signal = vdev::WorkSignal::new();
        d.transport.connect_work_signal(&signal);
        let r = publish(&mut d, blk::T_IN, 0, &[0; 512], true);
        let w = publish(&mut d, blk::T_OUT, 1, &[0x77; 512], false);
        d.notify(0);
        assert_eq!(backend(&mut d).queued.len(), 2);
        if vm_reset {
            MmioDevice::reset(&mut d.transport, &mut d.irq);
        } else {
            d.write_reg(mmio::STATUS, 0);
        }
        d.queues.clear();
        d.start(features::INDIRECT_DESC);
        let before = d.mem.as_bytes().to_vec();
        backend(&mut d).finish(0);
        backend(&mut d).finish(0);
        assert!(
            signal.take(),
            "the backend's completion raised the VM's signal"
        );
        d.poll();
        assert_eq!(
            d.mem.as_bytes(),
            &before[..],
            "no data, status or used entry after the reset"
        );
        assert_eq!(d.read_mem(r.buf, 512), [0; 512]);
        assert_eq!(d.read_mem(w.st, 1), [0xff]);
        assert!(!d.transport.needs_reset());
        // The disk keeps working, its buffers back in the pool.
        let again = publish(&mut d, blk::T_IN, 0, &[0; 512], true);
        d.notify(0);
        backend(&mut d).finish(0);
        d.poll();
        assert_eq!(used(&mut d), [u32::from(again.head)]);
        assert_eq!(d.read_mem(again.buf, 512), [0xee; 512]);
    }
}

#[test]
fn a_head_made_available_again_while_in_flight_needs_reset_and_completes_nothing() {
    let mut d = held(8, 8);
    let r = publish(&mut d, blk::T_IN, 0, &[0; 512], true);
    d.notify(0);
    // A hostile driver publishes the same chain again, and rewrites it as a write.
    d.write_mem(r.buf, &[0x66; 512]);
    d.publish(0, r.head);
    d.notify(0);
    assert!(d.transport.needs_reset());
    assert_eq!(backend(&mut d).queued.len(), 1, "the copy was not started");
    let before = d.mem.as_bytes().to_vec();
    backend(&mut d).disk.data[..512].fill(0x99);
    backend(&mut d).finish(0);
    d.poll();
    assert_eq!(
        d.mem.as_bytes(),
        &before[..],
        "nothing completed while broken"
    );
    d.write_reg(mmio::STATUS, 0);
    d.queues.clear();
    d.start(features::INDIRECT_DESC);
    let before = d.mem.as_bytes().to_vec();
    d.poll();
    assert_eq!(d.mem.as_bytes(), &before[..], "nor after the reset");
    assert!(backend(&mut d).disk.data[512..].iter().all(|&b| b == 0));
}

// ---- Data straight to and from guest RAM (DMA) --------------------------------

/// A backend that moves data by DMA: it records each operation's guest segments
/// and, when the test finishes one, plays the host device (reads or writes guest
/// memory at those addresses).
struct Dma {
    held: Held,
    limits: vdev::DmaLimits,
    queued: alloc::vec::Vec<(u64, vdev::BlockOp, alloc::vec::Vec<vdev::DmaSegment>)>,
    /// Buffered submissions seen (none expected for reads and writes).
    buffered: usize,
    /// `quiesce` calls, and how many DMA operations were outstanding at each.
    quiesced: alloc::vec::Vec<usize>,
}

impl vdev::AsyncBlock for Dma {
    fn capacity(&self) -> u64 {
        self.held.capacity()
    }
    fn read_only(&self) -> bool {
        false
    }
    fn submit(&mut self, tag: u64, op: vdev::BlockOp, buf: alloc::vec::Vec<u8>) -> vdev::Submit {
        self.buffered += usize::from(op != vdev::BlockOp::Flush);
        self.held.submit(tag, op, buf)
    }
    fn poll(&mut self) -> Option<vdev::Completion> {
        self.held.poll()
    }
    fn has_completions(&self) -> bool {
        self.held.has_completions()
    }
    fn dma_limits(&self) -> Option<vdev::DmaLimits> {
        Some(self.limits)
    }
    fn submit_dma(
        &mut self,
        tag: u64,
        op: vdev::BlockOp,
        segs: &[vdev::DmaSegment],
    ) -> vdev::Submit {
        assert!(segs.len() <= self.limits.max_segments);
        assert!(segs.iter().all(|s| s.len <= self.limits.max_segment_bytes));
        self.queued.push((tag, op, segs.to_vec()));
        vdev::Submit::Queued
    }
    fn quiesce(&mut self) {
        self.quiesced.push(self.queued.len());
    }
}

type DmaDriver = TestDriver<Blk<Dma>>;

fn dma_disk(limits: vdev::DmaLimits) -> DmaDriver {
    let mut d = TestDriver::new(
        Blk::new(Dma {
            held: Held::new(),
            limits,
            queued: alloc::vec::Vec::new(),
            buffered: 0,
            quiesced: alloc::vec::Vec::new(),
        })
        .with_chunk_size(1024),
        1 << 20,
    );
    d.mem.allow_dma(true);
    d.start(features::INDIRECT_DESC | features::EVENT_IDX);
    d
}

const WIDE: vdev::DmaLimits = vdev::DmaLimits {
    max_segments: 64,
    max_segment_bytes: 1 << 20,
    max_bytes: 1 << 20,
};

/// The host device performs DMA operation `i` against guest memory and the disk.
fn dma_finish(d: &mut DmaDriver, i: usize) {
    use vdev::{BlockBackend, GuestMemory};
    let (tag, op, segs) = d.transport.device_mut().backend_mut().queued.remove(i);
    let mut at = match op {
        vdev::BlockOp::Read { offset } | vdev::BlockOp::Write { offset } => offset,
        vdev::BlockOp::Flush => unreachable!("flushes carry no data"),
    };
    for s in &segs {
        let mut bytes = alloc::vec![0; s.len as usize];
        let disk = &mut d.transport.device_mut().backend_mut().held.disk;
        match op {
            vdev::BlockOp::Read { .. } => {
                disk.read_at(at, &mut bytes).unwrap();
                d.mem.write(s.addr, &bytes).unwrap();
            }
            _ => {
                d.mem.read(s.addr, &mut bytes).unwrap();
                disk.write_at(at, &bytes).unwrap();
            }
        }
        at += u64::from(s.len);
    }
    let held = &mut d.transport.device_mut().backend_mut().held;
    held.ready.push_back(vdev::Completion {
        tag,
        result: Ok(()),
        buf: alloc::vec::Vec::new(),
    });
}

fn dma_backend(d: &mut DmaDriver) -> &mut Dma {
    d.transport.device_mut().backend_mut()
}

/// A request whose data is split over `parts` (length, device-writable) buffers.
fn publish_split(
    d: &mut DmaDriver,
    kind: u32,
    sector: u64,
    parts: &[(u32, bool)],
) -> (u16, alloc::vec::Vec<u64>, u64) {
    let hdr = d.alloc(16, 16);
    d.write_mem(hdr, &header(kind, sector));
    let mut bufs = alloc::vec![(hdr, 16, false)];
    let mut addrs = alloc::vec::Vec::new();
    for &(len, writable) in parts {
        let a = d.alloc(u64::from(len), 8);
        addrs.push(a);
        bufs.push((a, len, writable));
    }
    let st = d.alloc(1, 1);
    d.write_mem(st, &[0xff]);
    bufs.push((st, 1, true));
    (d.add_chain(0, &bufs), addrs, st)
}

#[test]
fn reads_and_writes_move_between_the_disk_and_guest_ram_directly() {
    let mut d = dma_disk(WIDE);
    // A write in two unequal buffers (neither a whole number of sectors).
    let (head, addrs, st) = publish_split(&mut d, blk::T_OUT, 2, &[(700, false), (324, false)]);
    let pattern: alloc::vec::Vec<u8> = (0..1024u32).map(|i| (i * 7 + 3) as u8).collect();
    d.write_mem(addrs[0], &pattern[..700]);
    d.write_mem(addrs[1], &pattern[700..]);
    d.notify(0);
    let (_, op, segs) = &dma_backend(&mut d).queued[0];
    assert_eq!(*op, vdev::BlockOp::Write { offset: 1024 });
    assert_eq!(
        segs[..],
        [
            vdev::DmaSegment {
                addr: addrs[0],
                len: 700
            },
            vdev::DmaSegment {
                addr: addrs[1],
                len: 324
            }
        ],
        "the guest's own buffers, not a copy"
    );
    assert_eq!(dma_backend(&mut d).buffered, 0);
    assert!(
        used(&mut d).is_empty(),
        "in flight until the device is done"
    );
    dma_finish(&mut d, 0);
    d.poll();
    let done: alloc::vec::Vec<_> = core::iter::from_fn(|| d.pop_used(0)).collect();
    assert_eq!(done, [(u32::from(head), 1)]);
    assert_eq!(d.read_mem(st, 1), [blk::S_OK]);
    assert_eq!(
        &dma_backend(&mut d).held.disk.data[1024..2048],
        &pattern[..]
    );
    // Read it back into three buffers.
    let (head, addrs, st) = publish_split(
        &mut d,
        blk::T_IN,
        2,
        &[(512, true), (100, true), (412, true)],
    );
    d.notify(0);
    dma_finish(&mut d, 0);
    d.poll();
    let done: alloc::vec::Vec<_> = core::iter::from_fn(|| d.pop_used(0)).collect();
    assert_eq!(done, [(u32::from(head), 1025)]);
    assert_eq!(d.read_mem(st, 1), [blk::S_OK]);
    let mut back = d.read_mem(addrs[0], 512);
    back.extend(d.read_mem(addrs[1], 100));
    back.extend(d.read_mem(addrs[2], 412));
    assert_eq!(back, pattern);
    assert_eq!(dma_backend(&mut d).buffered, 0);
}

#[test]
fn a_request_beyond_the_backends_limits_goes_in_sector_aligned_pieces() {
    // Two segments of at most 600 bytes per operation, 1024 bytes at most.
    let mut d = dma_disk(vdev::DmaLimits {
        max_segments: 2,
        max_segment_bytes: 600,
        max_bytes: 1024,
    });
    let (head, addrs, _) = publish_split(&mut d, blk::T_IN, 0, &[(1536, true)]);
    let pattern: alloc::vec::Vec<u8> = (0..1536u32).map(|i| (i % 251) as u8).collect();
    dma_backend(&mut d).held.disk.data[..1536].copy_from_slice(&pattern);
    d.notify(0);
    let a = addrs[0];
    let seg = |addr, len| vdev::DmaSegment { addr, len };
    let ops: alloc::vec::Vec<_> = dma_backend(&mut d)
        .queued
        .iter()
        .map(|(_, op, segs)| (*op, segs.clone()))
        .collect();
    assert_eq!(
        ops,
        [
            // 600 + 600 would end mid-sector: trimmed to 1024.
            (
                vdev::BlockOp::Read { offset: 0 },
                alloc::vec![seg(a, 600), seg(a + 600, 424)]
            ),
            (
                vdev::BlockOp::Read { offset: 1024 },
                alloc::vec![seg(a + 1024, 512)]
            ),
        ]
    );
    dma_finish(&mut d, 1);
    d.poll();
    assert!(used(&mut d).is_empty(), "completes after its last piece");
    dma_finish(&mut d, 0);
    d.poll();
    let done: alloc::vec::Vec<_> = core::iter::from_fn(|| d.pop_used(0)).collect();
    assert_eq!(done, [(u32::from(head), 1537)]);
    assert_eq!(d.read_mem(a, 1536), pattern);
}

#[test]
fn a_reset_waits_for_dma_in_flight_and_its_completions_change_nothing() {
    use vdev::MmioDevice;
    for vm_reset in [false, true] {
        let mut d = dma_disk(WIDE);
        let r = publish(&mut d, blk::T_IN, 0, &[0; 512], true);
        d.notify(0);
        assert_eq!(dma_backend(&mut d).queued.len(), 1);
        if vm_reset {
            MmioDevice::reset(&mut d.transport, &mut d.irq);
        } else {
            d.write_reg(mmio::STATUS, 0);
        }
        assert_eq!(
            dma_backend(&mut d).quiesced,
            [1],
            "the reset waited for the operation on guest RAM"
        );
        // The host device finished it during that wait; its completion is then
        // collected and dropped.
        dma_finish(&mut d, 0);
        d.queues.clear();
        d.start(features::INDIRECT_DESC);
        let before = d.mem.as_bytes().to_vec();
        d.poll();
        assert_eq!(d.mem.as_bytes(), &before[..], "no status or used entry");
        assert_eq!(d.read_mem(r.st, 1), [0xff]);
        // A reset with nothing on guest RAM does not wait.
        d.write_reg(mmio::STATUS, 0);
        assert_eq!(dma_backend(&mut d).quiesced.len(), 1);
    }
}

#[test]
fn buffers_outside_guest_ram_are_refused_before_the_device_sees_them() {
    let mut d = dma_disk(WIDE);
    let hdr = d.alloc(16, 16);
    d.write_mem(hdr, &header(blk::T_IN, 0));
    let st = d.alloc(1, 1);
    let beyond = RAM_BASE + (1 << 20) - 256; // runs 256 bytes past the end of RAM
    d.add_chain(0, &[(hdr, 16, false), (beyond, 512, true), (st, 1, true)]);
    d.notify(0);
    assert!(d.transport.needs_reset());
    assert!(dma_backend(&mut d).queued.is_empty());
    assert_eq!(dma_backend(&mut d).buffered, 0);
}

#[test]
fn memory_without_dma_falls_back_to_bounce_buffers() {
    let mut d = dma_disk(WIDE);
    d.mem.allow_dma(false);
    let r = publish(&mut d, blk::T_OUT, 1, &[0x5a; 512], false);
    d.notify(0);
    assert!(dma_backend(&mut d).queued.is_empty());
    assert_eq!(dma_backend(&mut d).buffered, 1);
    dma_backend(&mut d).held.finish(0);
    d.poll();
    assert_eq!(d.read_mem(r.st, 1), [blk::S_OK]);
    assert_eq!(
        &dma_backend(&mut d).held.disk.data[512..1024],
        &[0x5a; 512][..]
    );
}
