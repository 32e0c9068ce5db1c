//! The virtio-gpu device driven the way a guest driver drives it: through the
//! virtio-mmio registers and split virtqueues of `virtio::testing`.

use alloc::vec;
use alloc::vec::Vec;

use virtio::defs::mmio;
use virtio::testing::TestDriver;
use virtio::MmioTransport;

use crate::defs::{cmd, config, features, format, hdr, layout, limits, queue};
use crate::{Gpu, GpuConfig, Rect};

extern crate std;

/// Guest RAM of the test guest.
const RAM: usize = 16 << 20;
/// The test monitor.
const MODE: (u32, u32) = (320, 200);

/// A guest driver with two reusable buffers (request, response).
struct G {
    d: TestDriver<Gpu>,
    req: u64,
    resp: u64,
}

const REQ_BUF: u64 = 64 << 10;
const RESP_BUF: u64 = 4096;

fn cfg() -> GpuConfig {
    GpuConfig::single(MODE.0, MODE.1)
}

impl G {
    fn with(config: GpuConfig) -> Self {
        let mut d = TestDriver::new(Gpu::new(config), RAM);
        d.start(features::EDID);
        let req = d.alloc(REQ_BUF, 4096);
        let resp = d.alloc(RESP_BUF, 4096);
        Self { d, req, resp }
    }

    fn new() -> Self {
        Self::with(cfg())
    }

    fn gpu(&self) -> &Gpu {
        self.d.transport.device()
    }

    fn gpu_mut(&mut self) -> &mut Gpu {
        self.d.transport.device_mut()
    }

    /// Sends `req` on queue `q` with a `resp_len`-byte response buffer (none if 0);
    /// returns the bytes the device wrote.
    fn send(&mut self, q: u16, req: &[u8], resp_len: u32) -> Vec<u8> {
        self.d.write_mem(self.req, req);
        let mut bufs = vec![(self.req, req.len() as u32, false)];
        if resp_len > 0 {
            self.d.write_mem(self.resp, &vec![0xee; resp_len as usize]);
            bufs.push((self.resp, resp_len, true));
        }
        let head = self.d.add_chain(q, &bufs);
        self.d.notify(q);
        let (id, len) = self.d.pop_used(q).expect("request completed");
        assert_eq!(id, u32::from(head));
        assert!(!self.d.transport.needs_reset(), "device needs reset");
        self.d.read_mem(self.resp, len as usize)
    }

    /// Sends a control command; returns the response type.
    fn ctrl(&mut self, req: &[u8]) -> u32 {
        let r = self.send(queue::CONTROLQ, req, hdr::SIZE as u32);
        resp_type(&r)
    }

    fn create(&mut self, id: u32, fmt: u32, w: u32, h: u32) -> u32 {
        self.ctrl(&msg(cmd::RESOURCE_CREATE_2D, &[id, fmt, w, h]))
    }

    fn attach(&mut self, id: u32, entries: &[(u64, u32)]) -> u32 {
        self.ctrl(&attach_msg(id, entries.len() as u32, entries))
    }

    fn transfer(&mut self, id: u32, r: Rect, offset: u64) -> u32 {
        self.ctrl(&msg(
            cmd::TRANSFER_TO_HOST_2D,
            &[
                r.x,
                r.y,
                r.width,
                r.height,
                offset as u32,
                (offset >> 32) as u32,
                id,
                0,
            ],
        ))
    }

    fn flush(&mut self, id: u32, r: Rect) -> u32 {
        self.ctrl(&msg(
            cmd::RESOURCE_FLUSH,
            &[r.x, r.y, r.width, r.height, id, 0],
        ))
    }

    fn set_scanout(&mut self, s: u32, id: u32, r: Rect) -> u32 {
        self.ctrl(&msg(
            cmd::SET_SCANOUT,
            &[r.x, r.y, r.width, r.height, s, id],
        ))
    }

    fn unref(&mut self, id: u32) -> u32 {
        self.ctrl(&msg(cmd::RESOURCE_UNREF, &[id, 0]))
    }

    fn detach(&mut self, id: u32) -> u32 {
        self.ctrl(&msg(cmd::RESOURCE_DETACH_BACKING, &[id, 0]))
    }

    /// A `w`×`h` resource `id` with contiguous backing in fresh guest RAM holding
    /// `pixel(x, y)`; returns the backing's address.
    fn resource_with(&mut self, id: u32, w: u32, h: u32, pixel: impl Fn(u32, u32) -> u32) -> u64 {
        assert_eq!(
            self.create(id, format::B8G8R8X8_UNORM, w, h),
            cmd::RESP_OK_NODATA
        );
        let len = u64::from(w * h * 4);
        let at = self.d.alloc(len, 4096);
        self.d.write_mem(at, &image(w, h, pixel));
        assert_eq!(self.attach(id, &[(at, len as u32)]), cmd::RESP_OK_NODATA);
        at
    }
}

/// A command of `kind` with 32-bit fields after the header.
fn msg(kind: u32, fields: &[u32]) -> Vec<u8> {
    msg_fenced(kind, 0, 0, fields)
}

fn msg_fenced(kind: u32, flags: u32, fence: u64, fields: &[u32]) -> Vec<u8> {
    let mut m = vec![0u8; hdr::SIZE];
    m[0..4].copy_from_slice(&kind.to_le_bytes());
    m[4..8].copy_from_slice(&flags.to_le_bytes());
    m[8..16].copy_from_slice(&fence.to_le_bytes());
    for f in fields {
        m.extend_from_slice(&f.to_le_bytes());
    }
    m
}

fn attach_msg(id: u32, nr: u32, entries: &[(u64, u32)]) -> Vec<u8> {
    let mut m = msg(cmd::RESOURCE_ATTACH_BACKING, &[id, nr]);
    for (addr, len) in entries {
        m.extend_from_slice(&addr.to_le_bytes());
        m.extend_from_slice(&len.to_le_bytes());
        m.extend_from_slice(&0u32.to_le_bytes());
    }
    m
}

fn resp_type(r: &[u8]) -> u32 {
    assert!(r.len() >= hdr::SIZE, "response of {} bytes", r.len());
    u32::from_le_bytes(r[0..4].try_into().unwrap())
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

/// `w`×`h` pixels of `pixel(x, y)`, rows of `w * 4` bytes.
fn image(w: u32, h: u32, pixel: impl Fn(u32, u32) -> u32) -> Vec<u8> {
    let mut v = Vec::new();
    for y in 0..h {
        for x in 0..w {
            v.extend_from_slice(&pixel(x, y).to_le_bytes());
        }
    }
    v
}

fn pattern(x: u32, y: u32) -> u32 {
    (y << 16) | x | 0xff00_0000
}

/// Pixel (x, y) of scanout 0 as the render loop reads it.
fn shown(g: &G, x: u32, y: u32) -> u32 {
    let v = g.gpu().scanout(0).expect("scanout enabled");
    let at = ((v.rect.y + y) * v.stride + (v.rect.x + x) * 4) as usize;
    u32::from_le_bytes(v.pixels[at..at + 4].try_into().unwrap())
}

#[test]
fn display_info_reports_every_scanout_mode() {
    let mut g = G::with(GpuConfig {
        modes: vec![MODE, (640, 480)],
        ..cfg()
    });
    let r = g.send(
        queue::CONTROLQ,
        &msg(cmd::GET_DISPLAY_INFO, &[]),
        layout::RESP_DISPLAY_INFO as u32,
    );
    assert_eq!(r.len(), layout::RESP_DISPLAY_INFO);
    assert_eq!(resp_type(&r), cmd::RESP_OK_DISPLAY_INFO);
    let one = |i: usize| {
        let at = hdr::SIZE + i * layout::DISPLAY_ONE;
        (u32_at(&r, at + 8), u32_at(&r, at + 12), u32_at(&r, at + 16))
    };
    assert_eq!(one(0), (MODE.0, MODE.1, 1));
    assert_eq!(one(1), (640, 480, 1));
    assert_eq!(one(2), (0, 0, 0));
    // Config space: two scanouts, no capsets, no event.
    assert_eq!(g.d.read_reg(mmio::CONFIG + config::NUM_SCANOUTS as u64), 2);
    assert_eq!(g.d.read_reg(mmio::CONFIG + config::NUM_CAPSETS as u64), 0);
    assert_eq!(g.d.read_reg(mmio::CONFIG + config::EVENTS_READ as u64), 0);
}

#[test]
fn edid_is_offered_and_describes_the_monitor() {
    let mut g = G::new();
    assert_ne!(g.d.transport.negotiated_features() & features::EDID, 0);
    let r = g.send(
        queue::CONTROLQ,
        &msg(cmd::GET_EDID, &[0, 0]),
        layout::RESP_EDID as u32,
    );
    assert_eq!(r.len(), layout::RESP_EDID);
    assert_eq!(resp_type(&r), cmd::RESP_OK_EDID);
    assert_eq!(u32_at(&r, hdr::SIZE), 128);
    let e = &r[hdr::SIZE + 8..hdr::SIZE + 8 + 128];
    assert_eq!(e, crate::edid::generate(MODE.0, MODE.1).unwrap());
    assert!(r[hdr::SIZE + 8 + 128..].iter().all(|&b| b == 0));
    // A scanout that does not exist.
    let r = g.send(
        queue::CONTROLQ,
        &msg(cmd::GET_EDID, &[1, 0]),
        layout::RESP_EDID as u32,
    );
    assert_eq!(resp_type(&r), cmd::RESP_ERR_INVALID_SCANOUT_ID);
    assert_eq!(r.len(), hdr::SIZE);
}

#[test]
fn transferred_and_flushed_pixels_reach_the_scanout_with_their_damage() {
    let mut g = G::new();
    let (w, h) = MODE;
    // Backing in two pieces that are not adjacent in guest RAM.
    assert_eq!(
        g.create(1, format::B8G8R8X8_UNORM, w, h),
        cmd::RESP_OK_NODATA
    );
    let total = w * h * 4;
    let first = 4096 * 7 + 100;
    let a = g.d.alloc(u64::from(first), 4096);
    g.d.alloc(4096, 4096);
    let b = g.d.alloc(u64::from(total - first), 4096);
    let img = image(w, h, pattern);
    g.d.write_mem(a, &img[..first as usize]);
    g.d.write_mem(b, &img[first as usize..]);
    assert_eq!(
        g.attach(1, &[(a, first), (b, total - first)]),
        cmd::RESP_OK_NODATA
    );
    assert_eq!(g.transfer(1, Rect::new(0, 0, w, h), 0), cmd::RESP_OK_NODATA);
    assert_eq!(
        g.set_scanout(0, 1, Rect::new(0, 0, w, h)),
        cmd::RESP_OK_NODATA
    );
    assert_eq!(g.gpu_mut().take_damage(0), [Rect::new(0, 0, w, h)]);
    for (x, y) in [(0, 0), (w - 1, 0), (7, 13), (w - 1, h - 1), (100, 27)] {
        assert_eq!(shown(&g, x, y), pattern(x, y));
    }
    let v = g.gpu().scanout(0).unwrap();
    assert_eq!(
        (v.width, v.height, v.stride, v.format),
        (w, h, w * 4, format::B8G8R8X8_UNORM)
    );

    // The guest draws a 10x5 block at (30, 40) into its backing: nothing shows
    // until it transfers; the flush then reports exactly that damage.
    let block = Rect::new(30, 40, 10, 5);
    for y in block.y..block.y + block.height {
        let row = image(block.width, 1, |_, _| 0x00ab_cdef);
        let off = u64::from((y * w + block.x) * 4);
        let (base, off) = if off < u64::from(first) {
            (a, off)
        } else {
            (b, off - u64::from(first))
        };
        g.d.write_mem(base + off, &row);
    }
    assert_eq!(shown(&g, 30, 40), pattern(30, 40));
    let offset = u64::from((block.y * w + block.x) * 4);
    assert_eq!(g.transfer(1, block, offset), cmd::RESP_OK_NODATA);
    assert_eq!(g.gpu_mut().take_damage(0), []);
    assert_eq!(g.flush(1, block), cmd::RESP_OK_NODATA);
    assert_eq!(g.gpu_mut().take_damage(0), [block]);
    assert_eq!(g.gpu_mut().take_damage(0), []);
    assert_eq!(shown(&g, 30, 40), 0x00ab_cdef);
    assert_eq!(shown(&g, 39, 44), 0x00ab_cdef);
    assert_eq!(shown(&g, 40, 44), pattern(40, 44));
    assert_eq!(shown(&g, 29, 40), pattern(29, 40));
    assert_eq!(shown(&g, 30, 45), pattern(30, 45));
}

#[test]
fn a_scanout_showing_part_of_a_resource_gets_damage_in_its_own_coordinates() {
    let mut g = G::new();
    g.resource_with(1, 100, 100, pattern);
    assert_eq!(
        g.transfer(1, Rect::new(0, 0, 100, 100), 0),
        cmd::RESP_OK_NODATA
    );
    assert_eq!(
        g.set_scanout(0, 1, Rect::new(50, 20, 40, 30)),
        cmd::RESP_OK_NODATA
    );
    g.gpu_mut().take_damage(0);
    assert_eq!(shown(&g, 0, 0), pattern(50, 20));
    // A flush straddling the shown part's corner, and one outside it.
    assert_eq!(g.flush(1, Rect::new(40, 10, 20, 20)), cmd::RESP_OK_NODATA);
    assert_eq!(g.flush(1, Rect::new(0, 0, 10, 10)), cmd::RESP_OK_NODATA);
    assert_eq!(g.gpu_mut().take_damage(0), [Rect::new(0, 0, 10, 10)]);
}

#[test]
fn fences_and_contexts_are_echoed_in_the_response() {
    let mut g = G::new();
    let fence = 0x1234_5678_9abc_def0;
    let mut m = msg_fenced(
        cmd::RESOURCE_CREATE_2D,
        hdr::FLAG_FENCE,
        fence,
        &[5, format::X8R8G8B8_UNORM, 8, 8],
    );
    m[hdr::CTX_ID..hdr::CTX_ID + 4].copy_from_slice(&7u32.to_le_bytes());
    let r = g.send(queue::CONTROLQ, &m, hdr::SIZE as u32);
    assert_eq!(resp_type(&r), cmd::RESP_OK_NODATA);
    assert_eq!(u32_at(&r, hdr::FLAGS), hdr::FLAG_FENCE);
    assert_eq!(u64::from_le_bytes(r[8..16].try_into().unwrap()), fence);
    assert_eq!(u32_at(&r, hdr::CTX_ID), 7);
    // A failing fenced command still signals its fence.
    let m = msg_fenced(
        cmd::RESOURCE_CREATE_2D,
        hdr::FLAG_FENCE,
        fence + 1,
        &[5, format::X8R8G8B8_UNORM, 8, 8],
    );
    let r = g.send(queue::CONTROLQ, &m, hdr::SIZE as u32);
    assert_eq!(resp_type(&r), cmd::RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(u32_at(&r, hdr::FLAGS), hdr::FLAG_FENCE);
    assert_eq!(u64::from_le_bytes(r[8..16].try_into().unwrap()), fence + 1);
    // Without the flag no fence id comes back.
    let m = msg_fenced(cmd::GET_DISPLAY_INFO, 0, 99, &[]);
    let r = g.send(queue::CONTROLQ, &m, layout::RESP_DISPLAY_INFO as u32);
    assert_eq!((u32_at(&r, hdr::FLAGS), u32_at(&r, 8)), (0, 0));
}

#[test]
fn hostile_resource_creation_is_refused() {
    let mut g = G::with(GpuConfig {
        max_total_bytes: 3 << 20,
        max_resource_bytes: 2 << 20,
        ..cfg()
    });
    let f = format::B8G8R8A8_UNORM;
    assert_eq!(g.create(0, f, 8, 8), cmd::RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(g.create(1, f, 8, 8), cmd::RESP_OK_NODATA);
    assert_eq!(
        g.create(1, f, 8, 8),
        cmd::RESP_ERR_INVALID_RESOURCE_ID,
        "id reuse"
    );
    assert_eq!(
        g.create(2, 0, 8, 8),
        cmd::RESP_ERR_INVALID_PARAMETER,
        "format 0"
    );
    assert_eq!(
        g.create(2, 5, 8, 8),
        cmd::RESP_ERR_INVALID_PARAMETER,
        "format 5"
    );
    assert_eq!(g.create(2, f, 0, 0), cmd::RESP_ERR_INVALID_PARAMETER, "0x0");
    assert_eq!(g.create(2, f, 0, 8), cmd::RESP_ERR_INVALID_PARAMETER);
    assert_eq!(
        g.create(2, f, u32::MAX, u32::MAX),
        cmd::RESP_ERR_INVALID_PARAMETER,
        "huge"
    );
    let max = limits::MAX_DIMENSION;
    assert_eq!(
        g.create(2, f, max, max),
        cmd::RESP_ERR_OUT_OF_MEMORY,
        "over the per-resource bound"
    );
    assert_eq!(
        g.create(2, f, 1024, 512),
        cmd::RESP_OK_NODATA,
        "exactly 2 MiB"
    );
    assert_eq!(
        g.create(3, f, 1024, 256),
        cmd::RESP_ERR_OUT_OF_MEMORY,
        "over the total"
    );
    assert_eq!(g.gpu().resource_bytes(), (2 << 20) + 256);
    assert_eq!(g.unref(2), cmd::RESP_OK_NODATA);
    assert_eq!(g.unref(2), cmd::RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(g.create(3, f, 1024, 256), cmd::RESP_OK_NODATA);
    assert_eq!(g.gpu().resource_bytes(), (1 << 20) + 256);
    // The count bound.
    for id in 10..10 + limits::MAX_RESOURCES as u32 - 2 {
        assert_eq!(g.create(id, f, 1, 1), cmd::RESP_OK_NODATA);
    }
    assert_eq!(g.create(5000, f, 1, 1), cmd::RESP_ERR_OUT_OF_MEMORY);
    assert_eq!(g.gpu().resource_count(), limits::MAX_RESOURCES);
}

#[test]
fn hostile_rectangles_and_ids_are_refused() {
    let mut g = G::new();
    g.resource_with(1, 64, 32, pattern);
    let full = Rect::new(0, 0, 64, 32);
    assert_eq!(g.transfer(1, full, 0), cmd::RESP_OK_NODATA);
    let bad = [
        Rect::new(1, 0, 64, 32),
        Rect::new(0, 1, 64, 32),
        Rect::new(64, 0, 1, 1),
        Rect::new(u32::MAX, 0, 2, 1),
        Rect::new(0, u32::MAX - 1, 1, 4),
        Rect::new(0, 0, u32::MAX, u32::MAX),
    ];
    for r in bad {
        assert_eq!(
            g.set_scanout(0, 1, r),
            cmd::RESP_ERR_INVALID_PARAMETER,
            "{r:?}"
        );
        assert_eq!(g.flush(1, r), cmd::RESP_ERR_INVALID_PARAMETER, "{r:?}");
        assert_eq!(
            g.transfer(1, r, 0),
            cmd::RESP_ERR_INVALID_PARAMETER,
            "{r:?}"
        );
    }
    assert_eq!(
        g.set_scanout(0, 1, Rect::new(0, 0, 0, 5)),
        cmd::RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(g.set_scanout(1, 1, full), cmd::RESP_ERR_INVALID_SCANOUT_ID);
    assert_eq!(
        g.set_scanout(u32::MAX, 1, full),
        cmd::RESP_ERR_INVALID_SCANOUT_ID
    );
    assert_eq!(g.set_scanout(0, 2, full), cmd::RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(g.flush(2, full), cmd::RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(g.transfer(2, full, 0), cmd::RESP_ERR_INVALID_RESOURCE_ID);
    assert_eq!(g.detach(2), cmd::RESP_ERR_INVALID_RESOURCE_ID);
    assert!(g.gpu().scanout(0).is_none(), "nothing refused took effect");
    // Offsets that put the source past the backing, or overflow.
    assert_eq!(g.transfer(1, full, 4), cmd::RESP_ERR_INVALID_PARAMETER);
    assert_eq!(
        g.transfer(1, Rect::new(0, 31, 64, 1), 31 * 256 + 1),
        cmd::RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(
        g.transfer(1, Rect::new(0, 0, 1, 1), u64::MAX - 2),
        cmd::RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(
        g.transfer(1, Rect::new(0, 31, 64, 1), 31 * 256),
        cmd::RESP_OK_NODATA
    );
    // An empty rectangle is a no-op, not an error.
    assert_eq!(g.transfer(1, Rect::new(3, 3, 0, 0), 0), cmd::RESP_OK_NODATA);
}

#[test]
fn hostile_backing_is_refused() {
    let mut g = G::new();
    assert_eq!(
        g.create(1, format::B8G8R8X8_UNORM, 16, 16),
        cmd::RESP_OK_NODATA
    );
    let ram_end = virtio::testing::RAM_BASE + RAM as u64;
    let ok = g.d.alloc(1024, 4096);
    let cases: [(&str, Vec<u8>); 7] = [
        ("no entries", attach_msg(1, 0, &[])),
        (
            "too many entries",
            attach_msg(1, limits::MAX_BACKING_ENTRIES + 1, &[(ok, 1024)]),
        ),
        (
            "entries missing from the request",
            attach_msg(1, 3, &[(ok, 512), (ok + 512, 512)]),
        ),
        (
            "outside guest RAM",
            attach_msg(1, 1, &[(ram_end - 512, 1024)]),
        ),
        (
            "below guest RAM",
            attach_msg(1, 2, &[(ok, 512), (0x1000, 512)]),
        ),
        ("zero length", attach_msg(1, 2, &[(ok, 1024), (ok, 0)])),
        ("address wraps", attach_msg(1, 1, &[(u64::MAX - 100, 1024)])),
    ];
    for (what, m) in cases {
        assert_eq!(g.ctrl(&m), cmd::RESP_ERR_INVALID_PARAMETER, "{what}");
    }
    assert_eq!(
        g.attach(2, &[(ok, 1024)]),
        cmd::RESP_ERR_INVALID_RESOURCE_ID
    );
    assert_eq!(
        g.transfer(1, Rect::new(0, 0, 16, 16), 0),
        cmd::RESP_ERR_UNSPEC,
        "no backing"
    );
    assert_eq!(g.detach(1), cmd::RESP_ERR_UNSPEC, "nothing to detach");
    assert_eq!(g.attach(1, &[(ok, 1024)]), cmd::RESP_OK_NODATA);
    assert_eq!(
        g.attach(1, &[(ok, 1024)]),
        cmd::RESP_ERR_UNSPEC,
        "attached twice"
    );
    assert_eq!(
        g.transfer(1, Rect::new(0, 0, 16, 16), 0),
        cmd::RESP_OK_NODATA
    );
    assert_eq!(g.detach(1), cmd::RESP_OK_NODATA);
    assert_eq!(
        g.transfer(1, Rect::new(0, 0, 16, 16), 0),
        cmd::RESP_ERR_UNSPEC
    );
    // Backing smaller than the resource: only what it holds can be transferred.
    assert_eq!(g.attach(1, &[(ok, 512)]), cmd::RESP_OK_NODATA);
    assert_eq!(
        g.transfer(1, Rect::new(0, 0, 16, 8), 0),
        cmd::RESP_OK_NODATA
    );
    assert_eq!(
        g.transfer(1, Rect::new(0, 0, 16, 9), 0),
        cmd::RESP_ERR_INVALID_PARAMETER
    );
}

#[test]
fn a_flush_flood_costs_no_memory_and_loses_no_damage() {
    let mut g = G::new();
    g.resource_with(1, MODE.0, MODE.1, pattern);
    assert_eq!(
        g.set_scanout(0, 1, Rect::new(0, 0, MODE.0, MODE.1)),
        cmd::RESP_OK_NODATA
    );
    g.gpu_mut().take_damage(0);
    let mut want = Rect::default();
    for i in 0..5000u32 {
        let r = Rect::new((i * 7) % 300, (i * 13) % 190, 1 + i % 20, 1 + i % 10);
        assert_eq!(g.flush(1, r), cmd::RESP_OK_NODATA);
        want = want.union(&r);
        assert!(g.gpu().scanouts[0].damage.len() <= limits::MAX_DAMAGE_RECTS);
    }
    let damage = g.gpu_mut().take_damage(0);
    let covered = damage.iter().fold(Rect::default(), |a, d| a.union(d));
    assert_eq!(covered, want);
    // The device still answers.
    assert_eq!(g.flush(1, Rect::new(1, 1, 1, 1)), cmd::RESP_OK_NODATA);
    assert_eq!(g.gpu_mut().take_damage(0), [Rect::new(1, 1, 1, 1)]);
}

#[test]
fn malformed_requests_get_errors_not_resets() {
    let mut g = G::new();
    // No complete header.
    let r = g.send(queue::CONTROLQ, &[1, 2, 3], hdr::SIZE as u32);
    assert_eq!(resp_type(&r), cmd::RESP_ERR_UNSPEC);
    // Unknown, 3D and capset commands.
    for kind in [
        0,
        0x0200,
        cmd::GET_CAPSET_INFO,
        cmd::GET_CAPSET,
        0x10c,
        0xffff_ffff,
    ] {
        assert_eq!(
            g.ctrl(&msg(kind, &[0; 8])),
            cmd::RESP_ERR_UNSPEC,
            "{kind:#x}"
        );
    }
    // Commands cut short.
    assert_eq!(
        g.ctrl(&msg(cmd::RESOURCE_CREATE_2D, &[1, 1, 1])),
        cmd::RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(
        g.ctrl(&msg(cmd::TRANSFER_TO_HOST_2D, &[0; 7])),
        cmd::RESP_ERR_INVALID_PARAMETER
    );
    assert_eq!(g.gpu().resource_count(), 0);
    // Cursor commands on the control queue and the reverse.
    assert_eq!(
        g.ctrl(&msg(cmd::MOVE_CURSOR, &[0; 8])),
        cmd::RESP_ERR_UNSPEC
    );
    let r = g.send(
        queue::CURSORQ,
        &msg(cmd::GET_DISPLAY_INFO, &[]),
        hdr::SIZE as u32,
    );
    assert_eq!(resp_type(&r), cmd::RESP_ERR_UNSPEC);
    // A response buffer too small for the answer gets what fits; none gets nothing.
    let r = g.send(queue::CONTROLQ, &msg(cmd::GET_DISPLAY_INFO, &[]), 10);
    assert_eq!(r.len(), 10);
    let r = g.send(queue::CONTROLQ, &msg(cmd::GET_DISPLAY_INFO, &[]), 0);
    assert!(r.is_empty());
}

#[test]
fn cursor_updates_moves_and_hides() {
    let mut g = G::new();
    g.resource_with(9, 64, 64, |x, y| x * 3 + y);
    assert_eq!(
        g.transfer(9, Rect::new(0, 0, 64, 64), 0),
        cmd::RESP_OK_NODATA
    );
    g.resource_with(10, 32, 32, pattern);
    let cursor = |kind, s: u32, x: i32, y: i32, id, hx, hy| {
        msg(kind, &[s, x as u32, y as u32, 0, id, hx, hy, 0])
    };
    // The cursor queue's requests usually carry no response buffer.
    let r = g.send(
        queue::CURSORQ,
        &cursor(cmd::UPDATE_CURSOR, 0, 100, 50, 9, 4, 6),
        0,
    );
    assert!(r.is_empty());
    let c = g.gpu().cursor().expect("cursor shown");
    assert_eq!(
        (c.scanout, c.x, c.y, c.format),
        (0, 96, 44, format::B8G8R8X8_UNORM)
    );
    assert_eq!(c.image, image(64, 64, |x, y| x * 3 + y));
    let gen = g.gpu().generation();
    g.send(
        queue::CURSORQ,
        &cursor(cmd::MOVE_CURSOR, 0, -10, 7, 0, 0, 0),
        0,
    );
    let c = g.gpu().cursor().unwrap();
    assert_eq!((c.x, c.y), (-14, 1));
    assert!(g.gpu().generation() > gen);
    // Refused: a cursor that is not 64x64, a hot spot outside it, a missing
    // resource, a scanout that does not exist.
    for (req, want) in [
        (
            cursor(cmd::UPDATE_CURSOR, 0, 0, 0, 10, 0, 0),
            cmd::RESP_ERR_INVALID_PARAMETER,
        ),
        (
            cursor(cmd::UPDATE_CURSOR, 0, 0, 0, 9, 64, 0),
            cmd::RESP_ERR_INVALID_PARAMETER,
        ),
        (
            cursor(cmd::UPDATE_CURSOR, 0, 0, 0, 77, 0, 0),
            cmd::RESP_ERR_INVALID_RESOURCE_ID,
        ),
        (
            cursor(cmd::MOVE_CURSOR, 3, 0, 0, 0, 0, 0),
            cmd::RESP_ERR_INVALID_SCANOUT_ID,
        ),
    ] {
        let r = g.send(queue::CURSORQ, &req, hdr::SIZE as u32);
        assert_eq!(resp_type(&r), want);
    }
    assert_eq!(g.gpu().cursor().unwrap().x, -14, "refusals changed nothing");
    // Unreferencing the resource keeps the image the cursor copied.
    assert_eq!(g.unref(9), cmd::RESP_OK_NODATA);
    assert!(g.gpu().cursor().is_some());
    g.send(
        queue::CURSORQ,
        &cursor(cmd::UPDATE_CURSOR, 0, 0, 0, 0, 0, 0),
        0,
    );
    assert!(g.gpu().cursor().is_none());
}

#[test]
fn a_mode_change_raises_the_display_event_and_new_edid() {
    let mut g = G::new();
    g.d.ack_interrupts();
    assert_eq!(
        g.gpu_mut().set_mode(0, 0, 10),
        Err(crate::ModeError::BadSize)
    );
    assert_eq!(
        g.gpu_mut().set_mode(0, 4096, 10),
        Err(crate::ModeError::BadSize)
    );
    assert_eq!(
        g.gpu_mut().set_mode(1, 800, 600),
        Err(crate::ModeError::NoScanout)
    );
    g.gpu_mut().set_mode(0, 800, 600).unwrap();
    g.d.transport.signal_config_change(&mut g.d.irq);
    assert!(g.d.irq_level());
    assert_eq!(
        g.d.ack_interrupts() & mmio::INT_CONFIG_CHANGE,
        mmio::INT_CONFIG_CHANGE
    );
    assert_eq!(
        g.d.read_reg(mmio::CONFIG + config::EVENTS_READ as u64),
        config::EVENT_DISPLAY
    );
    let r = g.send(
        queue::CONTROLQ,
        &msg(cmd::GET_DISPLAY_INFO, &[]),
        layout::RESP_DISPLAY_INFO as u32,
    );
    assert_eq!(
        (u32_at(&r, hdr::SIZE + 8), u32_at(&r, hdr::SIZE + 12)),
        (800, 600)
    );
    let r = g.send(
        queue::CONTROLQ,
        &msg(cmd::GET_EDID, &[0, 0]),
        layout::RESP_EDID as u32,
    );
    assert_eq!(
        r[hdr::SIZE + 8..hdr::SIZE + 8 + 128],
        crate::edid::generate(800, 600).unwrap()
    );
    // The driver clears the event by writing it to events_clear.
    g.d.write_reg(
        mmio::CONFIG + config::EVENTS_CLEAR as u64,
        config::EVENT_DISPLAY,
    );
    assert_eq!(g.d.read_reg(mmio::CONFIG + config::EVENTS_READ as u64), 0);
    // A VM reset brings the configured mode back.
    g.gpu_mut().set_mode(0, 1024, 768).unwrap();
    vdev::MmioDevice::reset(&mut g.d.transport, &mut g.d.irq);
    assert_eq!(g.gpu().mode(0), Some(MODE));
}

#[test]
fn unref_and_reset_release_everything() {
    let mut g = G::new();
    g.resource_with(1, 32, 32, pattern);
    assert_eq!(
        g.set_scanout(0, 1, Rect::new(0, 0, 32, 32)),
        cmd::RESP_OK_NODATA
    );
    assert!(g.gpu().scanout(0).is_some());
    assert_eq!(g.unref(1), cmd::RESP_OK_NODATA);
    assert!(g.gpu().scanout(0).is_none());
    assert_eq!(g.gpu_mut().take_damage(0), []);
    assert_eq!(g.gpu().resource_bytes(), 0);
    // Setting scanout 0 to resource 0 disables it.
    g.resource_with(2, 32, 32, pattern);
    assert_eq!(
        g.set_scanout(0, 2, Rect::new(0, 0, 32, 32)),
        cmd::RESP_OK_NODATA
    );
    assert_eq!(g.set_scanout(0, 0, Rect::default()), cmd::RESP_OK_NODATA);
    assert!(g.gpu().scanout(0).is_none());
    // Device reset (Status = 0) drops every resource; the id is free again after.
    g.d.write_reg(mmio::STATUS, 0);
    assert_eq!(g.gpu().resource_count(), 0);
    assert_eq!(g.gpu().resource_bytes(), 0);
}

/// Random commands with random fields: nothing panics, the device never needs a
/// reset, and its bookkeeping holds after each.
mod random {
    use super::*;
    use proptest::prelude::*;

    fn command() -> impl Strategy<Value = (u32, Vec<u32>)> {
        let kinds = prop::sample::select(vec![
            cmd::GET_DISPLAY_INFO,
            cmd::GET_EDID,
            cmd::RESOURCE_CREATE_2D,
            cmd::RESOURCE_UNREF,
            cmd::SET_SCANOUT,
            cmd::RESOURCE_FLUSH,
            cmd::TRANSFER_TO_HOST_2D,
            cmd::RESOURCE_ATTACH_BACKING,
            cmd::RESOURCE_DETACH_BACKING,
            cmd::UPDATE_CURSOR,
            cmd::MOVE_CURSOR,
        ]);
        let field = prop_oneof![0u32..4, 0u32..300, Just(64u32), any::<u32>()];
        (kinds, prop::collection::vec(field, 0..10))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn random_commands_keep_the_device_consistent(cmds in prop::collection::vec(command(), 1..40)) {
            let mut g = G::with(GpuConfig { max_total_bytes: 1 << 20, ..cfg() });
            for (kind, mut fields) in cmds {
                if kind == cmd::RESOURCE_ATTACH_BACKING && fields.len() >= 2 {
                    // Entries inside guest RAM half the time.
                    fields[1] %= 3;
                    fields.extend([virtio::testing::RAM_BASE as u32 + 0x10_0000, 0, 4096, 0]);
                }
                if kind == cmd::RESOURCE_CREATE_2D && fields.len() >= 2 {
                    fields[1] = format::ALL[fields[1] as usize % format::ALL.len()];
                }
                let q = if kind == cmd::UPDATE_CURSOR || kind == cmd::MOVE_CURSOR { queue::CURSORQ } else { queue::CONTROLQ };
                g.send(q, &msg(kind, &fields), layout::RESP_EDID as u32);
                let gpu = g.gpu();
                let sum: u64 = gpu.resources.values().map(|r| r.bytes()).sum();
                prop_assert_eq!(sum, gpu.total_bytes);
                prop_assert!(sum <= 1 << 20);
                for sc in &gpu.scanouts {
                    if sc.resource != 0 {
                        let r = &gpu.resources[&sc.resource];
                        prop_assert!(sc.rect.fits_in(r.width, r.height));
                    }
                    prop_assert!(sc.damage.len() <= limits::MAX_DAMAGE_RECTS);
                    for d in &sc.damage {
                        prop_assert!(d.fits_in(sc.rect.width, sc.rect.height));
                    }
                }
            }
        }
    }
}

/// What a guest and the render loop see of a transport: config space, what the
/// scanout shows, its damage, the cursor.
type Probe = (
    Vec<u8>,
    Option<(Vec<u8>, Rect)>,
    Vec<Rect>,
    Option<(i32, i32, Vec<u8>)>,
    u32,
);

fn probe(t: &mut MmioTransport<Gpu>) -> Probe {
    let mut cfgspace = vec![0u8; config::SIZE];
    virtio::VirtioDevice::read_config(t.device(), 0, &mut cfgspace);
    let gpu = t.device_mut();
    let shown = gpu.scanout(0).map(|v| (v.pixels.to_vec(), v.rect));
    let cursor = gpu.cursor().map(|c| (c.x, c.y, c.image.to_vec()));
    let damage = gpu.take_damage(0);
    (cfgspace, shown, damage, cursor, t.status())
}

fn fresh() -> MmioTransport<Gpu> {
    MmioTransport::new(Gpu::new(cfg()), virtio::testing::TEST_INTID)
}

/// A started device showing a resource with pending damage, a second resource with
/// backing, a cursor, a mode change pending.
fn drive(t: &mut MmioTransport<Gpu>) {
    let mut g = G::new();
    g.resource_with(1, 40, 30, pattern);
    assert_eq!(
        g.transfer(1, Rect::new(0, 0, 40, 30), 0),
        cmd::RESP_OK_NODATA
    );
    assert_eq!(
        g.set_scanout(0, 1, Rect::new(5, 5, 30, 20)),
        cmd::RESP_OK_NODATA
    );
    g.gpu_mut().take_damage(0);
    assert_eq!(g.flush(1, Rect::new(10, 10, 4, 4)), cmd::RESP_OK_NODATA);
    g.resource_with(2, 64, 64, |x, y| x ^ y);
    assert_eq!(
        g.transfer(2, Rect::new(0, 0, 64, 64), 0),
        cmd::RESP_OK_NODATA
    );
    g.send(
        queue::CURSORQ,
        &msg(cmd::UPDATE_CURSOR, &[0, 12, 34, 0, 2, 1, 2, 0]),
        0,
    );
    g.gpu_mut().set_mode(0, 640, 480).unwrap();
    *t = g.d.transport;
}

vdev::save_restore_tests!(gpu_saved_state, make: fresh, drive: drive, probe: probe);

#[test]
fn restore_brings_back_what_the_render_loop_shows() {
    let mut a = fresh();
    drive(&mut a);
    let blob = vdev::SaveRestore::save(&a);
    let mut b = fresh();
    vdev::SaveRestore::restore(&mut b, &blob).unwrap();
    let v = b.device().scanout(0).unwrap();
    assert_eq!(v.rect, Rect::new(5, 5, 30, 20));
    assert_eq!(v.pixels, image(40, 30, pattern));
    assert_eq!(b.device_mut().take_damage(0), [Rect::new(5, 5, 4, 4)]);
    assert_eq!(b.device().mode(0), Some((640, 480)));
    assert_eq!(b.device().resource_bytes(), 40 * 30 * 4 + 64 * 64 * 4);
}

mod presentation {
    use super::*;
    use crate::present::*;
    use compositor::{Frame, PixelFormat};

    mod desk;

    const OUT: (u32, u32) = (200, 120);

    fn frame(buf: &mut [u8]) -> Frame<'_> {
        Frame::new(buf, OUT.0, OUT.1, OUT.0 as usize * 4, PixelFormat::Xrgb8888).unwrap()
    }

    fn at(buf: &[u8], x: u32, y: u32) -> u32 {
        let i = ((y * OUT.0 + x) * 4) as usize;
        u32::from_le_bytes(buf[i..i + 4].try_into().unwrap()) & 0x00ff_ffff
    }

    #[test]
    fn a_frame_taken_from_the_device_composes_without_it_and_the_guest_writes_meanwhile() {
        let mut g = G::new();
        let (w, h) = (16, 8);
        let backing = g.resource_with(1, w, h, pattern);
        assert_eq!(g.transfer(1, Rect::new(0, 0, w, h), 0), cmd::RESP_OK_NODATA);
        assert_eq!(
            g.set_scanout(0, 1, Rect::new(0, 0, w, h)),
            cmd::RESP_OK_NODATA
        );
        let mut p = Presenter::new(0, 3, 2);
        let mut buf = vec![0u8; (OUT.0 * OUT.1 * 4) as usize];
        // The render loop takes the frame under the device's lock...
        let source = p.take_frame(g.gpu_mut(), 0).expect("a first frame is due");
        // ...and, before it composes, a vCPU transfers new pixels into the very
        // resource (the device is free: `source` borrows nothing of it).
        g.d.write_mem(backing, &0x00_12_34_56u32.to_le_bytes());
        assert_eq!(g.transfer(1, Rect::new(0, 0, 1, 1), 0), cmd::RESP_OK_NODATA);
        assert_eq!(g.flush(1, Rect::new(0, 0, 1, 1)), cmd::RESP_OK_NODATA);
        // The frame shows the scanout as it was taken.
        let drawn = p.compose_frame(source, &mut frame(&mut buf));
        assert_eq!(drawn, [compositor::Rect::new(0, 0, OUT.0, OUT.1)]);
        assert_eq!(at(&buf, 3, 2), pattern(0, 0) & 0x00ff_ffff);
        assert_ne!(pattern(0, 0) & 0x00ff_ffff, 0x12_3456);
        // The next frame carries the transfer, as damage.
        let drawn = p.present(g.gpu_mut(), &mut frame(&mut buf), 0);
        assert_eq!(drawn, [compositor::Rect::new(3, 2, 1, 1)]);
        assert_eq!(at(&buf, 3, 2), 0x12_3456);
        assert_eq!(at(&buf, 4, 2), pattern(1, 0) & 0x00ff_ffff);
    }

    #[test]
    fn a_set_composer_composes_every_presentation() {
        use core::sync::atomic::{AtomicUsize, Ordering};
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        fn counting(
            scene: &compositor::Scene,
            frame: &mut compositor::Frame,
            damage: &[compositor::Rect],
        ) -> compositor::Report {
            CALLS.fetch_add(1, Ordering::Relaxed);
            compositor::compose(scene, frame, damage)
        }
        let mut g = G::new();
        let (w, h) = (16, 8);
        g.resource_with(1, w, h, pattern);
        assert_eq!(g.transfer(1, Rect::new(0, 0, w, h), 0), cmd::RESP_OK_NODATA);
        assert_eq!(
            g.set_scanout(0, 1, Rect::new(0, 0, w, h)),
            cmd::RESP_OK_NODATA
        );
        let mut p = Presenter::new(0, 3, 2);
        p.set_composer(counting);
        let mut buf = vec![0u8; (OUT.0 * OUT.1 * 4) as usize];
        p.present(g.gpu_mut(), &mut frame(&mut buf), 0);
        assert_eq!(CALLS.load(Ordering::Relaxed), 1);
        assert_eq!(at(&buf, 3, 2), pattern(0, 0) & 0x00ff_ffff);
        assert_eq!(at(&buf, 0, 0), BACKGROUND);
    }

    #[test]
    fn the_scanout_appears_exactly_at_the_panel_and_only_damage_is_redrawn() {
        let mut g = G::new();
        let (w, h) = (64, 40);
        let backing = g.resource_with(1, w, h, pattern);
        assert_eq!(g.transfer(1, Rect::new(0, 0, w, h), 0), cmd::RESP_OK_NODATA);
        // The scanout shows the resource's rows 2.. and columns 4.. .
        assert_eq!(
            g.set_scanout(0, 1, Rect::new(4, 2, 50, 30)),
            cmd::RESP_OK_NODATA
        );
        let mut p = Presenter::new(0, 30, 20);
        let mut buf = vec![0u8; (OUT.0 * OUT.1 * 4) as usize];
        let drawn = p.present(g.gpu_mut(), &mut frame(&mut buf), 0);
        assert_eq!(drawn, [compositor::Rect::new(0, 0, OUT.0, OUT.1)]);
        for y in 0..OUT.1 {
            for x in 0..OUT.0 {
                let inside = (30..80).contains(&x) && (20..50).contains(&y);
                let want = if inside {
                    pattern(x - 30 + 4, y - 20 + 2) & 0x00ff_ffff
                } else {
                    BACKGROUND
                };
                assert_eq!(at(&buf, x, y), want, "({x}, {y})");
            }
        }
        // Nothing changed: nothing drawn.
        assert!(p.present(g.gpu_mut(), &mut frame(&mut buf), 0).is_empty());
        // The guest changes resource pixel (10, 5) and flushes it: only that output
        // pixel is recomposed (a marker elsewhere survives).
        g.d.write_mem(
            backing + u64::from((5 * w + 10) * 4),
            &0x00_12_34_56u32.to_le_bytes(),
        );
        assert_eq!(
            g.transfer(1, Rect::new(10, 5, 1, 1), u64::from((5 * w + 10) * 4)),
            cmd::RESP_OK_NODATA
        );
        assert_eq!(g.flush(1, Rect::new(10, 5, 1, 1)), cmd::RESP_OK_NODATA);
        buf[0..4].copy_from_slice(&0x00ab_cdefu32.to_le_bytes());
        let drawn = p.present(g.gpu_mut(), &mut frame(&mut buf), 0);
        assert_eq!(drawn, [compositor::Rect::new(30 + 6, 20 + 3, 1, 1)]);
        assert_eq!(at(&buf, 36, 23), 0x12_3456);
        assert_eq!(
            at(&buf, 0, 0),
            0xab_cdef,
            "outside the damage nothing was redrawn"
        );
    }

    #[test]
    fn the_cursor_is_drawn_over_the_panel_and_a_disabled_scanout_leaves_background() {
        let mut g = G::new();
        g.resource_with(1, 20, 20, |_, _| 0x0011_1111);
        assert_eq!(
            g.transfer(1, Rect::new(0, 0, 20, 20), 0),
            cmd::RESP_OK_NODATA
        );
        assert_eq!(
            g.set_scanout(0, 1, Rect::new(0, 0, 20, 20)),
            cmd::RESP_OK_NODATA
        );
        assert_eq!(
            g.create(2, format::B8G8R8A8_UNORM, 64, 64),
            cmd::RESP_OK_NODATA
        );
        let img = image(64, 64, |x, _| if x < 2 { 0xff00_ff00 } else { 0 });
        let at_ = g.d.alloc(img.len() as u64, 4096);
        g.d.write_mem(at_, &img);
        assert_eq!(g.attach(2, &[(at_, img.len() as u32)]), cmd::RESP_OK_NODATA);
        assert_eq!(
            g.transfer(2, Rect::new(0, 0, 64, 64), 0),
            cmd::RESP_OK_NODATA
        );
        g.send(
            queue::CURSORQ,
            &msg(cmd::UPDATE_CURSOR, &[0, 5, 5, 0, 2, 0, 0, 0]),
            0,
        );
        let mut p = Presenter::new(0, 10, 10);
        let mut buf = vec![0u8; (OUT.0 * OUT.1 * 4) as usize];
        p.present(g.gpu_mut(), &mut frame(&mut buf), 0);
        assert_eq!(at(&buf, 15, 15), 0x00ff00, "opaque cursor pixel");
        assert_eq!(
            at(&buf, 17, 15),
            0x111111,
            "transparent cursor pixel shows the panel"
        );
        assert_eq!(at(&buf, 9, 9), BACKGROUND);
        assert_eq!(g.set_scanout(0, 0, Rect::default()), cmd::RESP_OK_NODATA);
        g.send(
            queue::CURSORQ,
            &msg(cmd::UPDATE_CURSOR, &[0, 0, 0, 0, 0, 0, 0, 0]),
            0,
        );
        p.present(g.gpu_mut(), &mut frame(&mut buf), 0);
        assert!((0..OUT.1).all(|y| (0..OUT.0).all(|x| at(&buf, x, y) == BACKGROUND)));
    }

    #[test]
    fn formats_map_to_the_compositor_s_byte_orders() {
        assert_eq!(
            pixel_format(format::B8G8R8X8_UNORM),
            Some(PixelFormat::Xrgb8888)
        );
        assert_eq!(
            pixel_format(format::B8G8R8A8_UNORM),
            Some(PixelFormat::Argb8888)
        );
        assert_eq!(
            pixel_format(format::X8R8G8B8_UNORM),
            Some(PixelFormat::Bgrx8888)
        );
        assert_eq!(pixel_format(format::R8G8B8A8_UNORM), None);
        // X8R8G8B8: bytes X, R, G, B.
        assert_eq!(
            PixelFormat::Bgrx8888.load([0, 0x11, 0x22, 0x33]) & 0xff_ffff,
            0x11_2233
        );
    }

    /// A device whose scanout 0 shows a whole `w × h` resource of `pixel`; the
    /// guest address of its backing.
    fn showing(w: u32, h: u32, pixel: impl Fn(u32, u32) -> u32) -> (G, u64) {
        let mut g = G::new();
        let backing = g.resource_with(1, w, h, pixel);
        assert_eq!(g.transfer(1, Rect::new(0, 0, w, h), 0), cmd::RESP_OK_NODATA);
        assert_eq!(
            g.set_scanout(0, 1, Rect::new(0, 0, w, h)),
            cmd::RESP_OK_NODATA
        );
        (g, backing)
    }

    /// The guest repaints its whole `w`-wide resource with `color` and flushes it.
    fn repaint(g: &mut G, backing: u64, w: u32, h: u32, color: u32) {
        g.d.write_mem(backing, &image(w, h, |_, _| color));
        assert_eq!(g.transfer(1, Rect::new(0, 0, w, h), 0), cmd::RESP_OK_NODATA);
        assert_eq!(g.flush(1, Rect::new(0, 0, w, h)), cmd::RESP_OK_NODATA);
    }

    fn everywhere(buf: &[u8], r: compositor::Rect) -> Vec<u32> {
        let mut v = Vec::new();
        for y in r.y as u32..r.bottom() as u32 {
            for x in r.x as u32..r.right() as u32 {
                v.push(at(buf, x, y));
            }
        }
        v
    }

    fn channels_close(a: u32, b: u32, tol: i32) -> bool {
        (0..3).all(|i| ((a >> (8 * i)) as u8 as i32 - (b >> (8 * i)) as u8 as i32).abs() <= tol)
    }

    #[test]
    fn a_frames_guest_damage_is_what_it_shows_anew() {
        let (mut g, backing) = showing(20, 10, |_, _| 0x0011_2233);
        let mut p = Presenter::new(0, 5, 5);
        // The first frame: the whole scanout.
        let s = p.take_frame(g.gpu_mut(), 0).unwrap();
        assert_eq!(s.guest_damage(), Some(Rect::new(0, 0, 20, 10)));
        // Two flushed areas: their bounding box.
        for r in [Rect::new(2, 3, 1, 1), Rect::new(6, 1, 2, 2)] {
            g.d.write_mem(backing, &0x00_12_34_56u32.to_le_bytes());
            assert_eq!(g.transfer(1, r, 0), cmd::RESP_OK_NODATA);
            assert_eq!(g.flush(1, r), cmd::RESP_OK_NODATA);
        }
        let s = p.take_frame(g.gpu_mut(), 0).unwrap();
        assert_eq!(s.guest_damage(), Some(Rect::new(2, 1, 6, 3)));
        // Hidden: the frame carries no guest frame.
        p.hide();
        let s = p.take_frame(g.gpu_mut(), 0).unwrap();
        assert_eq!(s.guest_damage(), None);
    }

    #[test]
    fn hidden_composes_nothing_and_leaves_the_damage_with_the_device() {
        let (mut g, backing) = showing(20, 10, |_, _| 0x0011_2233);
        let mut p = Presenter::new(0, 5, 5);
        let mut buf = vec![0u8; (OUT.0 * OUT.1 * 4) as usize];
        p.present(g.gpu_mut(), &mut frame(&mut buf), 0);
        assert_eq!(at(&buf, 5, 5), 0x11_2233);
        p.hide();
        assert_eq!(p.policy(), Policy::Hidden);
        assert_eq!(
            p.present(g.gpu_mut(), &mut frame(&mut buf), 0),
            [compositor::Rect::new(0, 0, OUT.0, OUT.1)]
        );
        assert!(everywhere(&buf, compositor::Rect::new(0, 0, OUT.0, OUT.1))
            .iter()
            .all(|&p| p == BACKGROUND));
        // The guest draws: nothing is composed and its damage is not even taken.
        repaint(&mut g, backing, 20, 10, 0x0044_5566);
        assert!(p.present(g.gpu_mut(), &mut frame(&mut buf), 0).is_empty());
        assert_eq!(at(&buf, 5, 5), BACKGROUND);
        assert!(!g.gpu_mut().take_damage(0).is_empty());
        p.show_live();
        p.present(g.gpu_mut(), &mut frame(&mut buf), 0);
        assert_eq!(at(&buf, 5, 5), 0x44_5566);
        assert_eq!(p.status(), "live panel 5 5 unscaled");
    }

    #[test]
    fn frozen_keeps_the_old_frame_while_the_guest_draws_and_unfreezing_shows_the_new() {
        let (mut g, backing) = showing(20, 10, |_, _| 0x0011_2233);
        let mut p = Presenter::new(0, 5, 5);
        let mut buf = vec![0u8; (OUT.0 * OUT.1 * 4) as usize];
        p.present(g.gpu_mut(), &mut frame(&mut buf), 0);
        assert_eq!(p.unfreeze(), Err(PresentError::NotFrozen));
        p.freeze(g.gpu_mut()).unwrap();
        repaint(&mut g, backing, 20, 10, 0x0044_5566);
        // Recomposed once (the frozen copy) and then nothing while the guest draws.
        p.present(g.gpu_mut(), &mut frame(&mut buf), 0);
        assert_eq!(at(&buf, 5, 5), 0x11_2233);
        repaint(&mut g, backing, 20, 10, 0x0077_8899);
        assert!(p.present(g.gpu_mut(), &mut frame(&mut buf), 0).is_empty());
        // A presentation change while frozen recomposes from the copy.
        p.set_placement(Placement::Panel {
            x: 50,
            y: 50,
            size: None,
        })
        .unwrap();
        p.present(g.gpu_mut(), &mut frame(&mut buf), 0);
        assert_eq!(at(&buf, 5, 5), BACKGROUND);
        assert_eq!(at(&buf, 50, 50), 0x11_2233);
        assert_eq!(p.status(), "frozen panel 50 50 unscaled");
        p.unfreeze().unwrap();
        p.present(g.gpu_mut(), &mut frame(&mut buf), 0);
        assert_eq!(at(&buf, 50, 50), 0x77_8899);
        // No scanout: nothing to freeze.
        assert_eq!(g.set_scanout(0, 0, Rect::default()), cmd::RESP_OK_NODATA);
        assert_eq!(p.freeze(g.gpu_mut()), Err(PresentError::NothingShown));
        assert_eq!(p.policy(), Policy::Live);
    }

    #[test]
    fn throttled_presents_at_most_fps_frames_a_second() {
        let (mut g, backing) = showing(20, 10, |_, _| 0x0011_2233);
        let mut p = Presenter::new(0, 0, 0);
        p.set_clock(1000);
        assert_eq!(p.throttle(0), Err(PresentError::BadFps(0)));
        assert_eq!(
            p.throttle(MAX_FPS + 1),
            Err(PresentError::BadFps(MAX_FPS + 1))
        );
        p.throttle(10).unwrap();
        assert_eq!(p.status(), "throttled 10 fps panel 0 0 unscaled");
        let mut buf = vec![0u8; (OUT.0 * OUT.1 * 4) as usize];
        assert!(!p
            .present(g.gpu_mut(), &mut frame(&mut buf), 1000)
            .is_empty());
        repaint(&mut g, backing, 20, 10, 0x0044_5566);
        // 99 ms later: not yet; 100 ms: the change, which waited in the device.
        assert!(p
            .present(g.gpu_mut(), &mut frame(&mut buf), 1099)
            .is_empty());
        assert_eq!(at(&buf, 0, 0), 0x11_2233);
        assert!(!p
            .present(g.gpu_mut(), &mut frame(&mut buf), 1100)
            .is_empty());
        assert_eq!(at(&buf, 0, 0), 0x44_5566);
    }

    #[test]
    fn a_flush_flood_under_a_throttle_gets_its_rate_of_frames_in_virtual_time() {
        // The guest flushes a change before every offered frame for 4 s of virtual
        // time (`now` is the only clock): at most ceil(T·fps) + 1 frames, and
        // exactly that many when the render loop's ticks divide the period.
        for (fps, clock, tick) in [
            (2, 1000, 1),
            (7, 7000, 10),
            (60, 62_500_000, 173_611), // period 1_041_666 = 6 ticks
        ] {
            let (mut g, backing) = showing(20, 10, |_, _| 0);
            let mut p = Presenter::new(0, 0, 0);
            p.set_clock(clock);
            p.throttle(fps).unwrap();
            let mut buf = vec![0u8; (OUT.0 * OUT.1 * 4) as usize];
            let (start, secs) = (5 * clock, 4);
            let (mut t, mut frames, mut flushes, mut colour) = (start, 0, 0, 0);
            while t <= start + secs * clock {
                colour += 1;
                repaint(&mut g, backing, 20, 10, colour);
                flushes += 1;
                if !p.present(g.gpu_mut(), &mut frame(&mut buf), t).is_empty() {
                    frames += 1;
                    assert_eq!(at(&buf, 0, 0), colour, "the latest flush is shown");
                }
                t += tick;
            }
            let bound = secs * u64::from(fps) + 1;
            assert_eq!(frames, bound, "{fps} fps: {flushes} flushes");
            assert!(flushes > 5 * frames, "{fps} fps: a flood");
        }
    }

    /// Quadrants of four colours.
    fn quadrants(w: u32, h: u32) -> impl Fn(u32, u32) -> u32 {
        move |x, y| match (x < w / 2, y < h / 2) {
            (true, true) => 0x00ff_0000,
            (false, true) => 0x0000_ff00,
            (true, false) => 0x0000_00ff,
            (false, false) => 0x00ff_ffff,
        }
    }

    #[test]
    fn a_panel_at_half_size_is_the_scanout_scaled_bilinearly() {
        let (mut g, _) = showing(80, 60, quadrants(80, 60));
        let mut p = Presenter::new(0, 0, 0);
        assert_eq!(
            p.set_placement(Placement::Panel {
                x: 10,
                y: 20,
                size: Some((0, 30))
            }),
            Err(PresentError::BadRect)
        );
        p.set_placement(Placement::Panel {
            x: 10,
            y: 20,
            size: Some((40, 30)),
        })
        .unwrap();
        let mut buf = vec![0u8; (OUT.0 * OUT.1 * 4) as usize];
        p.present(g.gpu_mut(), &mut frame(&mut buf), 0);
        let src = quadrants(40, 30);
        for y in 0..OUT.1 {
            for x in 0..OUT.0 {
                let (px, py) = (x as i32 - 10, y as i32 - 20);
                let inside = (0..40).contains(&px) && (0..30).contains(&py);
                // Away from the quadrant borders (bilinear blends one texel there).
                let clear = ![19, 20].contains(&px) && ![14, 15].contains(&py);
                let got = at(&buf, x, y);
                if !inside {
                    assert_eq!(got, BACKGROUND, "({x}, {y})");
                } else if clear {
                    assert_eq!(got, src(px as u32, py as u32) & 0xff_ffff, "({x}, {y})");
                }
            }
        }
        assert_eq!(p.status(), "live panel 10 20 40x30");
    }

    #[test]
    fn fullscreen_is_fitted_and_letterboxed() {
        let (mut g, _) = showing(50, 50, |_, _| 0x0012_3456);
        let mut p = Presenter::new(0, 0, 0);
        p.set_placement(Placement::Fullscreen).unwrap();
        let mut buf = vec![0u8; (OUT.0 * OUT.1 * 4) as usize];
        p.present(g.gpu_mut(), &mut frame(&mut buf), 0);
        // 50x50 on 200x120: 120x120 centred at x 40.
        for y in 0..OUT.1 {
            for x in 0..OUT.0 {
                let want = if (40..160).contains(&x) {
                    0x12_3456
                } else {
                    BACKGROUND
                };
                assert_eq!(at(&buf, x, y), want, "({x}, {y})");
            }
        }
        assert_eq!(p.status(), "live fullscreen");
    }

    #[test]
    fn a_quad_places_the_corners_and_a_degenerate_one_is_refused() {
        let (mut g, _) = showing(40, 40, quadrants(40, 40));
        let mut p = Presenter::new(0, 0, 0);
        assert_eq!(
            p.set_placement(Placement::Quad([(0, 0), (10, 10), (20, 20), (0, 20)])),
            Err(PresentError::DegenerateQuad)
        );
        assert_eq!(
            p.set_placement(Placement::Quad([
                (0, 0),
                (MAX_COORD + 1, 0),
                (9, 9),
                (0, 9)
            ])),
            Err(PresentError::BadRect)
        );
        // A trapezoid: the top edge narrower than the bottom.
        let q = [(80, 10), (120, 10), (150, 110), (50, 110)];
        p.set_placement(Placement::Quad(q)).unwrap();
        let mut buf = vec![0u8; (OUT.0 * OUT.1 * 4) as usize];
        p.present(g.gpu_mut(), &mut frame(&mut buf), 0);
        // Near each corner, inside: that corner's quadrant colour.
        let tol = 8;
        assert!(channels_close(at(&buf, 84, 14), 0xff_0000, tol));
        assert!(channels_close(at(&buf, 115, 14), 0x00_ff00, tol));
        assert!(channels_close(at(&buf, 140, 105), 0xff_ffff, tol));
        assert!(channels_close(at(&buf, 60, 105), 0x00_00ff, tol));
        // Outside the trapezoid: background.
        assert_eq!(at(&buf, 55, 14), BACKGROUND);
        assert_eq!(at(&buf, 145, 14), BACKGROUND);
        assert_eq!(at(&buf, 100, 115), BACKGROUND);
        assert_eq!(p.status(), "live quad 80,10 120,10 150,110 50,110");
    }

    #[test]
    fn the_overlay_line_is_the_font_s_text_at_the_bottom() {
        let (mut g, _) = showing(20, 10, |_, _| 0x0011_2233);
        let mut p = Presenter::new(0, 0, 0);
        p.set_overlay(Some("RayOS 1"));
        assert_eq!(p.overlay(), Some("RayOS 1"));
        let mut buf = vec![0u8; (OUT.0 * OUT.1 * 4) as usize];
        p.present(g.gpu_mut(), &mut frame(&mut buf), 0);
        let bar =
            compositor::text::status_bar(OUT.0, "RayOS 1", OVERLAY_SCALE, OVERLAY_FG, OVERLAY_BG);
        let top = OUT.1 - bar.height;
        let mut lit = 0;
        for y in 0..bar.height {
            for x in 0..OUT.0 {
                let i = ((y * bar.width + x) * 4) as usize;
                let want = u32::from_le_bytes(bar.data[i..i + 4].try_into().unwrap()) & 0xff_ffff;
                assert_eq!(at(&buf, x, top + y), want, "({x}, {y})");
                lit += usize::from(want == OVERLAY_FG & 0xff_ffff);
            }
        }
        assert!(lit > 50, "the text has lit pixels: {lit}");
        // Above the bar: the panel and the background as before.
        assert_eq!(at(&buf, 0, 0), 0x11_2233);
        assert_eq!(at(&buf, 100, top - 1), BACKGROUND);
        p.set_overlay(None);
        p.present(g.gpu_mut(), &mut frame(&mut buf), 0);
        assert_eq!(at(&buf, 100, OUT.1 - 1), BACKGROUND);
        // Long lines are cut.
        p.set_overlay(Some(&"x".repeat(1000)));
        assert_eq!(p.overlay().map(str::len), Some(OVERLAY_MAX));
    }
}
