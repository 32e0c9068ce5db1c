//! One test session with the disk: a freshly canaried DMA region, a reset and
//! (re)initialised device, the driver side of its one split virtqueue, and the
//! two ways a submitted request may end — completed with a status byte
//! ([`Session::expect_completed`]) or refused with DEVICE_NEEDS_RESET
//! ([`Session::expect_refused`]) — each checked against a snapshot of the DMA
//! region so the device changed nothing it was not allowed to.

use core::ops::Range;

use selftest_guest::defs::virtio as v;
use selftest_guest::detail::Detail;
use selftest_guest::vring::{Change, RingLayout};

use crate::dma;
use crate::driver::{barrier, InitError, Mmio, RingAddrs};

/// The queue size every session uses.
pub const QUEUE_SIZE: u16 = 8;
/// The ring layout of a [`QUEUE_SIZE`] queue.
pub const LAYOUT: RingLayout = RingLayout::new(QUEUE_SIZE);
/// Reads of the used index (guest RAM, no exit) before a request counts as lost.
const USED_POLL_LIMIT: u32 = 1_000_000;
/// Reads of Status (an exit each) before DEVICE_NEEDS_RESET counts as missing.
const STATUS_POLL_LIMIT: u32 = 1_000;

/// One split-ring descriptor as the driver writes it.
#[derive(Clone, Copy, Debug)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

/// Writes `d` at region offset `off` (a descriptor table entry).
pub fn write_desc(off: usize, d: Desc) {
    dma::w64(off, d.addr);
    dma::w32(off + 8, d.len);
    dma::w16(off + 12, d.flags);
    dma::w16(off + 14, d.next);
}

/// Region offset of descriptor `i` of the queue's table.
pub fn desc_off(i: u16) -> usize {
    dma::RING + LAYOUT.desc(i) as usize
}

/// Region offset of entry `i` of the indirect table at `table`.
pub fn table_off(table: usize, i: u16) -> usize {
    table + (v::DESC_SIZE * u64::from(i)) as usize
}

/// Writes the virtio-blk request header (type, reserved, sector).
pub fn write_header(kind: u32, sector: u64) {
    dma::w32(dma::HEADER, kind);
    dma::w32(dma::HEADER + 4, 0);
    dma::w64(dma::HEADER + 8, sector);
}

/// The header descriptor, chained to `next`.
pub fn header_desc(next: u16) -> Desc {
    Desc {
        addr: dma::addr(dma::HEADER),
        len: v::BLK_HEADER_SIZE,
        flags: v::DESC_F_NEXT,
        next,
    }
}

/// The status-byte descriptor (device-writable, last in its chain).
pub fn status_desc() -> Desc {
    Desc {
        addr: dma::addr(dma::STATUS),
        len: 1,
        flags: v::DESC_F_WRITE,
        next: 0,
    }
}

/// A one-sector data descriptor at the region's data buffer, chained to `next`;
/// device-writable for a read (IN).
pub fn data_desc(kind: u32, next: u16) -> Desc {
    Desc {
        addr: dma::addr(dma::DATA),
        len: v::SECTOR_SIZE as u32,
        flags: v::DESC_F_NEXT
            | if kind == v::BLK_T_IN {
                v::DESC_F_WRITE
            } else {
                0
            },
        next,
    }
}

/// Region ranges of a completed request the device may write besides the used
/// ring: the status byte, and the data buffer for a read.
pub fn request_writes(kind: u32) -> [Range<usize>; 2] {
    let data = if kind == v::BLK_T_IN {
        dma::DATA..dma::DATA + v::SECTOR_SIZE as usize
    } else {
        0..0
    };
    [dma::STATUS..dma::STATUS + 1, data]
}

/// Fills the data buffer with pattern `seed`.
pub fn fill_data(seed: u8) {
    for i in 0..v::SECTOR_SIZE as usize {
        dma::w8(dma::DATA + i, selftest_guest::vring::pattern_byte(seed, i));
    }
}

/// The first data-buffer byte that differs from pattern `seed`.
pub fn data_mismatch(seed: u8) -> Option<(usize, u8, u8)> {
    (0..v::SECTOR_SIZE as usize).find_map(|i| {
        let (got, want) = (
            dma::r8(dma::DATA + i),
            selftest_guest::vring::pattern_byte(seed, i),
        );
        (got != want).then_some((i, got, want))
    })
}

/// A used-ring element.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Used {
    pub id: u32,
    pub len: u32,
}

/// Describes a [`Change`] in the region for a failure message.
pub fn describe(p: &mut Detail, what: &str, c: Change) {
    p.append(format_args!(
        "{what}: region byte {:#x} (ipa {:#x}) changed {:#x} -> {:#x} ({} byte(s) in all)",
        c.offset,
        dma::addr(c.offset),
        c.was,
        c.now,
        c.count
    ));
}

/// A device being driven, with the driver's view of its queue.
pub struct Session {
    pub mmio: Mmio,
    next_avail: u16,
    used_seen: u16,
}

impl Session {
    /// The ring addresses of the session's queue.
    pub fn rings() -> RingAddrs {
        RingAddrs {
            desc: dma::addr(dma::RING),
            avail: dma::addr(dma::RING + LAYOUT.avail as usize),
            used: dma::addr(dma::RING + LAYOUT.used as usize),
        }
    }

    /// A canaried region with zeroed rings and a reset device, not initialised.
    pub fn fresh() -> Self {
        dma::fill_canary();
        dma::zero(dma::RING..dma::RING + LAYOUT.total as usize);
        dma::w8(dma::STATUS, dma::STATUS_UNSET);
        Self {
            mmio: Mmio::new(v::BLK_BASE),
            next_avail: 0,
            used_seen: 0,
        }
    }

    /// [`Self::fresh`], then the full initialisation with `features`.
    pub fn start(features: u64) -> Result<Self, InitError> {
        let s = Self::fresh();
        s.mmio.init(features, QUEUE_SIZE, Self::rings())?;
        Ok(s)
    }

    /// The used index the device last published.
    pub fn used_idx(&self) -> u16 {
        dma::r16(dma::RING + (LAYOUT.used + v::RING_IDX) as usize)
    }

    fn used_elem(&self, idx: u16) -> Used {
        let off = dma::RING + LAYOUT.used_slot(idx) as usize;
        Used {
            id: dma::r32(off),
            len: dma::r32(off + 4),
        }
    }

    /// Puts `head` in the available ring and publishes it (entry, barrier,
    /// index, barrier), without notifying.
    pub fn make_available(&mut self, head: u16) {
        dma::w16(
            dma::RING + LAYOUT.avail_slot(self.next_avail) as usize,
            head,
        );
        barrier();
        self.next_avail = self.next_avail.wrapping_add(1);
        self.set_avail_idx(self.next_avail);
    }

    /// Writes the available ring's index as is (a driver bug, on purpose).
    pub fn set_avail_idx(&self, idx: u16) {
        dma::w16(dma::RING + (LAYOUT.avail + v::RING_IDX) as usize, idx);
        barrier();
    }

    /// Snapshots the region and notifies the queue.
    pub fn kick(&self) {
        dma::take_snapshot();
        self.mmio.notify();
    }

    /// Submits `head` and waits for the device to complete it; checks the used
    /// element names `head`, the status byte is `want_status`, and nothing
    /// outside the used ring and `allowed` changed. Returns the used element.
    pub fn expect_completed(
        &mut self,
        what: &str,
        head: u16,
        want_status: u8,
        allowed: &[Range<usize>],
        p: &mut Detail,
    ) -> Option<Used> {
        dma::w8(dma::STATUS, dma::STATUS_UNSET);
        self.make_available(head);
        self.kick();
        let want_idx = self.used_seen.wrapping_add(1);
        let done = (0..USED_POLL_LIMIT).any(|_| self.used_idx() == want_idx);
        barrier();
        self.mmio.ack_interrupts();
        let status = self.mmio.status();
        if !done {
            p.append(format_args!(
                "{what}: used idx {} (want {want_idx}), device status {status:#x}",
                self.used_idx()
            ));
            return None;
        }
        self.used_seen = want_idx;
        let used = self.used_elem(want_idx.wrapping_sub(1));
        if used.id != u32::from(head) {
            p.append(format_args!("{what}: used id {} (want {head})", used.id));
        }
        let got = dma::r8(dma::STATUS);
        if got != want_status {
            p.append(format_args!(
                "{what}: request status {got:#x} (want {want_status:#x})"
            ));
        }
        if status & v::S_NEEDS_RESET != 0 {
            p.append(format_args!("{what}: device status {status:#x}"));
        }
        let used_ring = LAYOUT.used_range();
        let mut ranges = [
            dma::RING + used_ring.start as usize..dma::RING + used_ring.end as usize,
            0..0,
            0..0,
        ];
        for (slot, r) in ranges[1..].iter_mut().zip(allowed) {
            *slot = r.clone();
        }
        if let Some(c) = dma::changed_since_snapshot(&ranges) {
            describe(p, what, c);
        }
        self.check_canaries(what, p);
        Some(used)
    }

    /// Submits `head` (unless `head` is `None`: the caller already published
    /// something) and checks the device refuses it: DEVICE_NEEDS_RESET, no used
    /// entry, no byte of the region changed. Then resets the device.
    pub fn expect_refused(&mut self, what: &str, head: Option<u16>, p: &mut Detail) {
        if let Some(head) = head {
            self.make_available(head);
        }
        self.kick();
        let mut status = self.mmio.status();
        for _ in 0..STATUS_POLL_LIMIT {
            if status & v::S_NEEDS_RESET != 0 {
                break;
            }
            status = self.mmio.status();
        }
        barrier();
        if status & v::S_NEEDS_RESET == 0 {
            p.append(format_args!(
                "{what}: device status {status:#x}, no DEVICE_NEEDS_RESET"
            ));
        }
        let idx = self.used_idx();
        if idx != self.used_seen {
            p.append(format_args!(
                "{what}: used idx moved {} -> {idx}",
                self.used_seen
            ));
        }
        if let Some(c) = dma::changed_since_snapshot(&[]) {
            describe(p, what, c);
        }
        self.check_canaries(what, p);
        self.mmio.ack_interrupts();
        if let Err(e) = self.mmio.reset() {
            p.append(format_args!("{what}: {e}"));
        }
    }

    /// Checks both canary pages.
    pub fn check_canaries(&self, what: &str, p: &mut Detail) {
        if let Some(c) = dma::canary_damage() {
            describe(p, what, c);
        }
    }
}
