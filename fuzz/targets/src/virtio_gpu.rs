//! `virtio_gpu`: a hostile driver against the virtio-gpu device's command parser,
//! through the real virtio-mmio transport and split virtqueues. The driver brings the
//! device up once (well-formed rings, so every failure is the device's), then runs a
//! sequence of operations: raw command bytes, commands of a known type with fuzzed
//! fields and trailing bytes (attach-backing entries), each with a fuzzed response
//! buffer length and the request split over one or two descriptors, on either queue;
//! raw bytes into guest RAM (backing pages); mode changes with the display event;
//! config-space writes; the render loop reading every scanout and its damage and the
//! cursor; save → restore into a fresh device; VM resets.
//!
//! Invariants, checked after every operation:
//! - every chain completes at once, with no more bytes than its writable part, and a
//!   response of at least a header has a known response type; the device never
//!   enters DEVICE_NEEDS_RESET (the rings are well-formed);
//! - the device writes guest RAM only in the used ring or the response buffer;
//! - host memory stays within the configured bounds;
//! - what the render loop reads is consistent: a scanout's rectangle lies inside its
//!   resource, its pixel slice holds `stride * height` bytes, every damage rectangle
//!   lies inside the scanout rectangle, the cursor image is 64×64;
//! - a saved state restores into a fresh device that saves the same bytes;
//! - no panic.

use arbitrary::{Arbitrary, Unstructured};
use vdev::{
    AccessSize, GuestMemory, InterruptSink, MemError, MmioContext, MmioDevice, SaveRestore,
    VecMemory,
};
use vgpu::defs::{cmd, config, cursor, format, hdr, queue};
use vgpu::{Gpu, GpuConfig};
use virtio::defs::{features, mmio, ring, status};
use virtio::MmioTransport;

/// Guest physical address of the fake guest RAM.
pub const RAM_BASE: u64 = 0x4000_0000;
/// Size of the fake guest RAM.
pub const RAM_SIZE: usize = 0x4_0000;
/// Queue `q`'s rings: one page each from RAM_BASE.
const QUEUE_PAGE: u64 = 0x1000;
const AVAIL_OFFSET: u64 = 0x400;
const USED_OFFSET: u64 = 0x800;
const QUEUE_SIZE: u16 = 8;
/// The request buffer, the response buffer, then the rest of RAM (backing).
const REQ: u64 = RAM_BASE + 0x2000;
const REQ_MAX: usize = 0x2000;
const RESP: u64 = RAM_BASE + 0x4000;
const RESP_MAX: u32 = 0x1000;
/// Offsets into RAM that `Memory` writes and backing entries land in.
pub const BACKING: u64 = RAM_BASE + 0x8000;
const INTID: u32 = 48;
/// Bounds the fuzzed device runs with (small, so that fuzzing stays fast).
const MAX_RESOURCE_BYTES: u64 = 256 << 10;
const MAX_TOTAL_BYTES: u64 = 1 << 20;

/// The fuzzed device's configuration.
pub fn gpu_config() -> GpuConfig {
    GpuConfig {
        modes: vec![(64, 48), (32, 32)],
        max_resource_bytes: MAX_RESOURCE_BYTES,
        max_total_bytes: MAX_TOTAL_BYTES,
    }
}

/// Command types a `Command` operation picks from (index modulo the length).
pub const KINDS: &[u32] = &[
    cmd::GET_DISPLAY_INFO,
    cmd::RESOURCE_CREATE_2D,
    cmd::RESOURCE_UNREF,
    cmd::SET_SCANOUT,
    cmd::RESOURCE_FLUSH,
    cmd::TRANSFER_TO_HOST_2D,
    cmd::RESOURCE_ATTACH_BACKING,
    cmd::RESOURCE_DETACH_BACKING,
    cmd::GET_CAPSET_INFO,
    cmd::GET_EDID,
    cmd::UPDATE_CURSOR,
    cmd::MOVE_CURSOR,
];

/// Every response type the device may send.
const RESPONSES: &[u32] = &[
    cmd::RESP_OK_NODATA,
    cmd::RESP_OK_DISPLAY_INFO,
    cmd::RESP_OK_EDID,
    cmd::RESP_ERR_UNSPEC,
    cmd::RESP_ERR_OUT_OF_MEMORY,
    cmd::RESP_ERR_INVALID_SCANOUT_ID,
    cmd::RESP_ERR_INVALID_RESOURCE_ID,
    cmd::RESP_ERR_INVALID_PARAMETER,
];

#[derive(Arbitrary, Debug)]
pub enum Op {
    /// Raw request bytes.
    Raw {
        cursorq: bool,
        split: u16,
        resp_len: u16,
        bytes: crate::Bytes,
    },
    /// A command of type `KINDS[kind]`: header flags and fence, 32-bit fields, then
    /// `tail` (attach-backing entries).
    Command {
        cursorq: bool,
        kind: u8,
        flags: u8,
        fence: u64,
        fields: [u32; 8],
        nfields: u8,
        tail: crate::Bytes,
        split: u16,
        resp_len: u16,
    },
    /// Raw bytes into RAM at `BACKING + offset` (wrapping inside RAM).
    Memory { offset: u32, bytes: crate::Bytes },
    /// The host changes scanout `scanout`'s mode and signals it.
    Mode {
        scanout: u8,
        width: u16,
        height: u16,
    },
    /// A driver write to the configuration space.
    Config { offset: u8, size: u8, value: u32 },
    /// The render loop takes every scanout's damage and reads what it shows.
    Render,
    /// Save, restore into a fresh device, continue with the restored one.
    SaveRestore,
    /// VM reset, then a fresh bring-up.
    Reset,
}

/// Guest RAM that refuses device writes outside the used rings and the response
/// buffer of the chain in flight.
struct CheckedMemory {
    ram: VecMemory,
    allowed: Vec<(u64, u64)>,
}

impl GuestMemory for CheckedMemory {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.ram.read(gpa, buf)
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let end = gpa.saturating_add(data.len() as u64);
        assert!(
            self.allowed.iter().any(|&(s, e)| s <= gpa && end <= e),
            "device wrote {gpa:#x}..{end:#x} outside the used rings and the response buffer"
        );
        self.ram.write(gpa, data)
    }
}

#[derive(Default)]
struct Line(bool);

impl InterruptSink for Line {
    fn set_level(&mut self, intid: u32, level: bool) {
        assert_eq!(intid, INTID, "the transport drove another INTID");
        self.0 = level;
    }
}

struct Harness {
    t: MmioTransport<Gpu>,
    mem: CheckedMemory,
    line: Line,
    avail_idx: [u16; 2],
    used_idx: [u16; 2],
}

fn fresh() -> MmioTransport<Gpu> {
    MmioTransport::new(Gpu::new(gpu_config()), INTID)
}

impl Harness {
    fn new() -> Self {
        let used = |q: u64| {
            let at = RAM_BASE + q * QUEUE_PAGE + USED_OFFSET;
            (at, at + 0x400)
        };
        let mut h = Self {
            t: fresh(),
            mem: CheckedMemory {
                ram: VecMemory::new(RAM_BASE, RAM_SIZE),
                allowed: vec![used(0), used(1)],
            },
            line: Line::default(),
            avail_idx: [0; 2],
            used_idx: [0; 2],
        };
        h.setup();
        h
    }

    fn reg_write(&mut self, offset: u64, size: AccessSize, value: u64) {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut self.line,
        };
        let _ = self.t.write(&mut ctx, offset, size, value);
    }

    fn reg(&mut self, offset: u64, value: u32) {
        self.reg_write(offset, AccessSize::Word, u64::from(value));
    }

    /// The standard bring-up with VERSION_1 and EDID, both queues of 8 at fixed pages.
    fn setup(&mut self) {
        self.reg(mmio::STATUS, 0);
        let drv = status::ACKNOWLEDGE | status::DRIVER;
        self.reg(mmio::STATUS, drv);
        let accept = features::VERSION_1 | vgpu::defs::features::EDID;
        for (sel, word) in [(0, accept as u32), (1, (accept >> 32) as u32)] {
            self.reg(mmio::DRIVER_FEATURES_SEL, sel);
            self.reg(mmio::DRIVER_FEATURES, word);
        }
        self.reg(mmio::STATUS, drv | status::FEATURES_OK);
        for q in 0..2u64 {
            let page = RAM_BASE + q * QUEUE_PAGE;
            let _ = self.mem.ram.write(page, &[0; QUEUE_PAGE as usize]);
            self.reg(mmio::QUEUE_SEL, q as u32);
            self.reg(mmio::QUEUE_NUM, u32::from(QUEUE_SIZE));
            for (lo, hi, addr) in [
                (mmio::QUEUE_DESC_LOW, mmio::QUEUE_DESC_HIGH, page),
                (
                    mmio::QUEUE_DRIVER_LOW,
                    mmio::QUEUE_DRIVER_HIGH,
                    page + AVAIL_OFFSET,
                ),
                (
                    mmio::QUEUE_DEVICE_LOW,
                    mmio::QUEUE_DEVICE_HIGH,
                    page + USED_OFFSET,
                ),
            ] {
                self.reg(lo, addr as u32);
                self.reg(hi, (addr >> 32) as u32);
            }
            self.reg(mmio::QUEUE_READY, 1);
        }
        self.reg(mmio::STATUS, drv | status::FEATURES_OK | status::DRIVER_OK);
        self.avail_idx = [0; 2];
        self.used_idx = [0; 2];
        assert_eq!(self.t.status() & status::DRIVER_OK, status::DRIVER_OK);
    }

    fn desc(&mut self, q: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = RAM_BASE + q * QUEUE_PAGE + u64::from(i) * ring::DESC_SIZE;
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12..14].copy_from_slice(&flags.to_le_bytes());
        b[14..].copy_from_slice(&next.to_le_bytes());
        self.mem.ram.write(at, &b).unwrap();
    }

    /// Sends `req` on a queue with a response buffer of `resp_len` bytes (none if 0),
    /// the request split after `split` bytes; checks how it completed.
    fn send(&mut self, cursorq: bool, req: &[u8], split: u16, resp_len: u16) {
        let q = if cursorq {
            queue::CURSORQ
        } else {
            queue::CONTROLQ
        };
        let qi = u64::from(q);
        let req = &req[..req.len().min(REQ_MAX)];
        self.mem.ram.write(REQ, req).unwrap();
        let resp_len = u32::from(resp_len) % (RESP_MAX + 1);
        self.mem
            .ram
            .write(RESP, &vec![0xee; resp_len as usize])
            .unwrap();
        let split = usize::from(split) % (req.len() + 1);
        // Descriptors: the request (one or two pieces, none if empty), the response.
        let mut pieces: Vec<(u64, u32, u16)> = Vec::new();
        let (a, b) = req.split_at(split);
        for (off, piece) in [(0usize, a), (split, b)] {
            if !piece.is_empty() {
                pieces.push((REQ + off as u64, piece.len() as u32, 0));
            }
        }
        if resp_len > 0 {
            pieces.push((RESP, resp_len, ring::DESC_F_WRITE));
        }
        if pieces.is_empty() {
            // A chain needs a descriptor: an empty request of one byte.
            pieces.push((REQ, 1, 0));
        }
        let n = pieces.len();
        for (i, (addr, len, flags)) in pieces.into_iter().enumerate() {
            let next = if i + 1 < n { ring::DESC_F_NEXT } else { 0 };
            self.desc(qi, i as u16, addr, len, flags | next, i as u16 + 1);
        }
        let avail = RAM_BASE + qi * QUEUE_PAGE + AVAIL_OFFSET;
        let idx = self.avail_idx[usize::from(q)];
        let slot = avail + 4 + u64::from(idx % QUEUE_SIZE) * 2;
        self.mem.ram.write_u16(slot, 0).unwrap();
        let idx = idx.wrapping_add(1);
        self.mem
            .ram
            .write_u16(avail + ring::IDX_OFFSET, idx)
            .unwrap();
        self.avail_idx[usize::from(q)] = idx;
        self.mem.allowed.push((RESP, RESP + u64::from(resp_len)));
        self.reg(mmio::QUEUE_NOTIFY, u32::from(q));
        self.mem.allowed.pop();
        // The chain completed, once, with at most its writable length.
        let used = RAM_BASE + qi * QUEUE_PAGE + USED_OFFSET;
        let used_idx = self.mem.ram.read_u16(used + ring::IDX_OFFSET).unwrap();
        let last = self.used_idx[usize::from(q)];
        assert_eq!(
            used_idx,
            last.wrapping_add(1),
            "the chain did not complete once"
        );
        let elem = used + 4 + u64::from(last % QUEUE_SIZE) * 8;
        let (id, len) = (
            self.mem.ram.read_u32(elem).unwrap(),
            self.mem.ram.read_u32(elem + 4).unwrap(),
        );
        self.used_idx[usize::from(q)] = used_idx;
        assert_eq!(id, 0);
        assert!(
            len <= resp_len,
            "{len} bytes written into a {resp_len}-byte buffer"
        );
        if len as usize >= hdr::SIZE {
            let ty = self.mem.ram.read_u32(RESP).unwrap();
            assert!(RESPONSES.contains(&ty), "response type {ty:#x}");
        }
        assert!(
            !self.t.needs_reset(),
            "well-formed rings, yet DEVICE_NEEDS_RESET"
        );
        // Acknowledge the interrupt as a driver would.
        let isr = self.t.interrupt_status();
        self.reg(mmio::INTERRUPT_ACK, isr);
    }

    fn check(&mut self) {
        let gpu = self.t.device();
        assert!(gpu.resource_bytes() <= MAX_TOTAL_BYTES);
        assert_eq!(self.line.0, self.t.interrupt_status() != 0);
        let n = gpu.num_scanouts();
        for s in 0..n {
            if let Some(v) = gpu.scanout(s) {
                assert!(v.rect.fits_in(v.width, v.height) && !v.rect.is_empty());
                assert_eq!(v.stride, v.width * format::BYTES_PER_PIXEL);
                assert_eq!(
                    v.pixels.len() as u64,
                    u64::from(v.stride) * u64::from(v.height)
                );
                assert!(u64::from(v.width) * u64::from(v.height) * 4 <= MAX_RESOURCE_BYTES);
            }
        }
        if let Some(c) = gpu.cursor() {
            assert_eq!(
                c.image.len() as u32,
                cursor::SIZE * cursor::SIZE * format::BYTES_PER_PIXEL
            );
            assert!((c.scanout as usize) < n);
        }
    }

    fn render(&mut self) {
        let gpu = self.t.device_mut();
        for s in 0..gpu.num_scanouts() {
            let damage = gpu.take_damage(s);
            assert!(damage.len() <= vgpu::defs::limits::MAX_DAMAGE_RECTS);
            match gpu.scanout(s) {
                Some(v) => {
                    for d in &damage {
                        assert!(
                            !d.is_empty() && d.fits_in(v.rect.width, v.rect.height),
                            "damage {d:?} outside {:?}",
                            v.rect
                        );
                    }
                }
                None => assert!(damage.is_empty(), "damage on a disabled scanout"),
            }
            assert!(gpu.take_damage(s).is_empty());
        }
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    execute(data);
}

/// Runs one input and hands back the harness.
fn execute(data: &[u8]) -> Harness {
    let mut u = Unstructured::new(data);
    let mut h = Harness::new();
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        match op {
            Op::Raw {
                cursorq,
                split,
                resp_len,
                bytes,
            } => h.send(cursorq, &bytes.0, split, resp_len),
            Op::Command {
                cursorq,
                kind,
                flags,
                fence,
                fields,
                nfields,
                tail,
                split,
                resp_len,
            } => {
                let kind = KINDS[usize::from(kind) % KINDS.len()];
                let mut m = Vec::with_capacity(hdr::SIZE + 32 + tail.0.len());
                m.extend(kind.to_le_bytes());
                m.extend(u32::from(flags).to_le_bytes());
                m.extend(fence.to_le_bytes());
                m.extend([0u8; 8]);
                for f in &fields[..usize::from(nfields) % (fields.len() + 1)] {
                    m.extend(f.to_le_bytes());
                }
                m.extend_from_slice(&tail.0);
                h.send(cursorq, &m, split, resp_len);
            }
            Op::Memory { offset, bytes } => {
                let room = RAM_BASE + RAM_SIZE as u64 - BACKING;
                let at = BACKING + u64::from(offset) % room;
                let n = bytes
                    .0
                    .len()
                    .min((RAM_BASE + RAM_SIZE as u64 - at) as usize);
                h.mem.ram.write(at, &bytes.0[..n]).unwrap();
            }
            Op::Mode {
                scanout,
                width,
                height,
            } => {
                let ok =
                    h.t.device_mut()
                        .set_mode(usize::from(scanout), u32::from(width), u32::from(height))
                        .is_ok();
                if ok {
                    h.t.signal_config_change(&mut h.line);
                    let mut ctx = MmioContext {
                        vcpu: 0,
                        mem: &mut h.mem,
                        irq: &mut h.line,
                    };
                    let events = h.t.read(
                        &mut ctx,
                        mmio::CONFIG + config::EVENTS_READ as u64,
                        AccessSize::Word,
                    );
                    assert_eq!(
                        events.ok().map(|e| e & u64::from(config::EVENT_DISPLAY)),
                        Some(u64::from(config::EVENT_DISPLAY))
                    );
                }
            }
            Op::Config {
                offset,
                size,
                value,
            } => {
                let size = crate::access_size(size);
                h.reg_write(
                    mmio::CONFIG + u64::from(offset % 0x20),
                    size,
                    u64::from(value),
                );
            }
            Op::Render => h.render(),
            Op::SaveRestore => {
                let blob = h.t.save();
                let mut copy = fresh();
                copy.restore(&blob).expect("a saved state restores");
                assert!(copy.save() == blob, "restored state saves differently");
                h.t = copy;
            }
            Op::Reset => {
                MmioDevice::reset(&mut h.t, &mut h.line);
                assert_eq!(h.t.device().resource_count(), 0);
                h.setup();
            }
        }
        h.check();
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_seed_reaches_the_scanout() {
        let seeds = crate::seeds::seeds("virtio_gpu");
        let (_, data) = seeds.iter().find(|(n, _)| n == "draw-frame").expect("seed");
        let mut h = execute(data);
        let gpu = h.t.device_mut();
        let v = gpu.scanout(0).expect("scanout 0 shows the frame");
        let (w, hgt) = (v.width, v.height);
        for (x, y) in [(0, 0), (w - 1, hgt - 1), (5, 7)] {
            let at = (y * v.stride + x * 4) as usize;
            let px = u32::from_le_bytes(v.pixels[at..at + 4].try_into().unwrap());
            assert_eq!(px, crate::seeds::gpu_pixel(x, y), "({x}, {y})");
        }
        assert!(gpu.cursor().is_some(), "the seed sets a cursor");
        for (_, data) in &seeds {
            run(data);
        }
    }
}
