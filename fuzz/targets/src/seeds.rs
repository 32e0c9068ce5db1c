//! The seed corpus, written as the traffic a real driver, guest or tool produces:
//! virtio drivers bringing devices up and queueing requests, a guest's GIC driver
//! enabling and taking interrupts, TPM 2.0 commands as tpm2-tools sends them, NV
//! images of a freshly manufactured and of a provisioned TPM, registries of disks
//! made by `cargo xtask disk`, boot bundles as `cargo xtask` writes them.
//! `cargo run -p fuzz-targets --example seeds -- fuzz/corpus [DISK.img ...]` writes
//! them to the corpus folders.

use registry::defs::{BLOCK_SIZE, MIN_DISK_SIZE, SLOT_HEADER_SIZE};
use vgic::regs::{ctlr, gicd, gicr};
use virtio::defs::{mmio, ring};
use vtpm::defs::{alg, cap, cc, handle, st, su};
use vtpm::hash::HashAlg;

use crate::tpm_common::{nv_image_after, HEADER};
use crate::Encoder;

/// Named seeds of target `name` (those of `registry` made from disk images come from
/// [`registry_image`]).
pub fn seeds(name: &str) -> Vec<(String, Vec<u8>)> {
    let list: Vec<(&str, Vec<u8>)> = match name {
        "virtio_mmio" => virtio_seeds(),
        "virtio_gpu" => gpu_seeds(),
        "vgic_mmio" => vgic_seeds(),
        "tpm_dispatch" => tpm_dispatch_seeds(),
        "tis" => tis_seeds(),
        "crb" => crb_seeds(),
        "nv_image" => nv_seeds(),
        "registry" => registry_seeds(),
        "boot_bundle" => bundle_seeds(),
        "fw_cfg" => crate::fw_cfg::seeds(),
        "cfi_flash" => crate::cfi_flash::seeds(),
        "nvme" => crate::nvme::seeds(),
        "pci_config" => crate::pci_config::seeds(),
        "input_script" => crate::input_script::seeds(),
        "virtio_pci" => crate::virtio_pci::seeds(),
        "gic_its" => crate::gic_its::seeds(),
        "xhci" => crate::xhci::seeds(),
        _ => Vec::new(),
    };
    list.into_iter().map(|(n, b)| (n.to_string(), b)).collect()
}

// ---- virtio_gpu ------------------------------------------------------------------

/// Op variants of `virtio_gpu::Op`, in declaration order.
mod gpuop {
    pub const COUNT: u32 = 8;
    pub const RAW: u32 = 0;
    pub const COMMAND: u32 = 1;
    pub const MEMORY: u32 = 2;
    pub const MODE: u32 = 3;
    pub const CONFIG: u32 = 4;
    pub const RENDER: u32 = 5;
    pub const SAVE_RESTORE: u32 = 6;
    pub const RESET: u32 = 7;
}

/// Pixel (x, y) of the frame the `draw-frame` seed draws.
pub fn gpu_pixel(x: u32, y: u32) -> u32 {
    0xff00_0000 | (x * 4) << 16 | (y * 5) << 8 | ((x ^ y) & 0xff)
}

struct Gs(Encoder);

impl Gs {
    fn new() -> Self {
        Gs(Encoder::default())
    }
    /// A command of type `kind` (a `virtio_gpu::KINDS` value) with `fields` and
    /// `tail`, the response buffer `resp` bytes long.
    fn cmd(&mut self, kind: u32, fields: &[u32], tail: &[u8], resp: u16) -> &mut Self {
        self.cmd_with(kind, 0, 0, fields, tail, resp)
    }
    fn cmd_with(
        &mut self,
        kind: u32,
        flags: u8,
        fence: u64,
        fields: &[u32],
        tail: &[u8],
        resp: u16,
    ) -> &mut Self {
        use crate::virtio_gpu::KINDS;
        let index = KINDS.iter().position(|&k| k == kind).expect("kind listed") as u8;
        let cursorq =
            kind == vgpu::defs::cmd::UPDATE_CURSOR || kind == vgpu::defs::cmd::MOVE_CURSOR;
        let e = &mut self.0;
        e.variant(gpuop::COMMAND, gpuop::COUNT)
            .bool(cursorq)
            .u8(index)
            .u8(flags)
            .u64(fence);
        for i in 0..8 {
            e.u32(fields.get(i).copied().unwrap_or(0));
        }
        e.u8(fields.len() as u8).bytes(tail).u16(u16::MAX).u16(resp);
        self
    }
    fn op(&mut self, v: u32) -> &mut Encoder {
        self.0.variant(v, gpuop::COUNT)
    }
}

fn gpu_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::virtio_gpu::BACKING;
    use vgpu::defs::{cmd, config, format, hdr, layout};
    let h = hdr::SIZE as u16;
    let mut out = Vec::new();
    let entry = |addr: u64, len: u32| {
        let mut e = Vec::new();
        e.extend(addr.to_le_bytes());
        e.extend(len.to_le_bytes());
        e.extend(0u32.to_le_bytes());
        e
    };

    // A driver probing the displays, a mode change and its event being cleared.
    let mut g = Gs::new();
    g.cmd(
        cmd::GET_DISPLAY_INFO,
        &[],
        &[],
        layout::RESP_DISPLAY_INFO as u16,
    );
    g.cmd(cmd::GET_EDID, &[0, 0], &[], layout::RESP_EDID as u16);
    g.cmd(cmd::GET_EDID, &[1, 0], &[], layout::RESP_EDID as u16);
    g.op(gpuop::MODE).u8(0).u16(40).u16(30);
    g.cmd(
        cmd::GET_DISPLAY_INFO,
        &[],
        &[],
        layout::RESP_DISPLAY_INFO as u16,
    );
    g.op(gpuop::CONFIG)
        .u8(config::EVENTS_CLEAR as u8)
        .u8(2)
        .u32(config::EVENT_DISPLAY);
    g.cmd(cmd::GET_CAPSET_INFO, &[0, 0], &[], h);
    out.push(("display-probe", g.0 .0));

    // What Linux's fbdev does: a frame resource, its backing, transfer, scanout,
    // flush; then a partial update, and a cursor.
    let (w, ht) = (64u32, 48u32);
    let mut g = Gs::new();
    g.cmd(
        cmd::GET_DISPLAY_INFO,
        &[],
        &[],
        layout::RESP_DISPLAY_INFO as u16,
    );
    g.cmd(
        cmd::RESOURCE_CREATE_2D,
        &[1, format::B8G8R8X8_UNORM, w, ht],
        &[],
        h,
    );
    let mut frame = Vec::new();
    for y in 0..ht {
        for x in 0..w {
            frame.extend(gpu_pixel(x, y).to_le_bytes());
        }
    }
    let frame_len = frame.len() as u32;
    g.op(gpuop::MEMORY).u32(0).bytes(&frame);
    // The backing in two pieces.
    g.cmd(
        cmd::RESOURCE_ATTACH_BACKING,
        &[1, 2],
        &[
            entry(BACKING, 4096),
            entry(BACKING + 4096, frame_len - 4096),
        ]
        .concat(),
        h,
    );
    g.cmd(cmd::TRANSFER_TO_HOST_2D, &[0, 0, w, ht, 0, 0, 1, 0], &[], h);
    g.cmd(cmd::SET_SCANOUT, &[0, 0, w, ht, 0, 1], &[], h);
    g.cmd(cmd::RESOURCE_FLUSH, &[0, 0, w, ht, 1, 0], &[], h);
    g.op(gpuop::RENDER);
    g.cmd(
        cmd::TRANSFER_TO_HOST_2D,
        &[8, 4, 16, 8, (4 * w + 8) * 4, 0, 1, 0],
        &[],
        h,
    );
    g.cmd_with(
        cmd::RESOURCE_FLUSH,
        hdr::FLAG_FENCE as u8,
        42,
        &[8, 4, 16, 8, 1, 0],
        &[],
        h,
    );
    g.op(gpuop::RENDER);
    let cursor_at = BACKING + 0x4000;
    g.cmd(
        cmd::RESOURCE_CREATE_2D,
        &[2, format::B8G8R8A8_UNORM, 64, 64],
        &[],
        h,
    );
    g.op(gpuop::MEMORY).u32(0x4000).bytes(&[0x80; 64 * 64 * 4]);
    g.cmd(
        cmd::RESOURCE_ATTACH_BACKING,
        &[2, 1],
        &entry(cursor_at, 64 * 64 * 4),
        h,
    );
    g.cmd(
        cmd::TRANSFER_TO_HOST_2D,
        &[0, 0, 64, 64, 0, 0, 2, 0],
        &[],
        h,
    );
    g.cmd(cmd::UPDATE_CURSOR, &[0, 10, 20, 0, 2, 1, 1, 0], &[], 0);
    g.cmd(cmd::MOVE_CURSOR, &[0, 30, 25, 0, 0, 0, 0, 0], &[], 0);
    g.op(gpuop::SAVE_RESTORE);
    g.op(gpuop::RENDER);
    out.push(("draw-frame", g.0 .0));

    // A hostile guest: id reuse, 0x0 and huge resources, rectangles, strides and
    // backing out of range, floods of flushes, then a reset.
    let mut g = Gs::new();
    g.cmd(
        cmd::RESOURCE_CREATE_2D,
        &[1, format::X8R8G8B8_UNORM, 32, 32],
        &[],
        h,
    );
    g.cmd(
        cmd::RESOURCE_CREATE_2D,
        &[1, format::X8R8G8B8_UNORM, 32, 32],
        &[],
        h,
    );
    g.cmd(
        cmd::RESOURCE_CREATE_2D,
        &[2, format::X8R8G8B8_UNORM, 0, 0],
        &[],
        h,
    );
    g.cmd(
        cmd::RESOURCE_CREATE_2D,
        &[3, format::X8R8G8B8_UNORM, 16384, 16384],
        &[],
        h,
    );
    g.cmd(cmd::RESOURCE_CREATE_2D, &[4, 99, 8, 8], &[], h);
    g.cmd(
        cmd::RESOURCE_ATTACH_BACKING,
        &[1, 3],
        &entry(BACKING, 4096),
        h,
    );
    g.cmd(
        cmd::RESOURCE_ATTACH_BACKING,
        &[1, 1],
        &entry(u64::MAX - 8, 4096),
        h,
    );
    g.cmd(
        cmd::RESOURCE_ATTACH_BACKING,
        &[1, 1],
        &entry(0x1000, 4096),
        h,
    );
    g.cmd(
        cmd::RESOURCE_ATTACH_BACKING,
        &[1, 1],
        &entry(BACKING, 4096),
        h,
    );
    g.cmd(
        cmd::TRANSFER_TO_HOST_2D,
        &[0, 0, 32, 32, 0, 0, 1, 0],
        &[],
        h,
    );
    g.cmd(cmd::TRANSFER_TO_HOST_2D, &[0, 0, 32, 8, 4, 0, 1, 0], &[], h);
    g.cmd(
        cmd::TRANSFER_TO_HOST_2D,
        &[u32::MAX, 0, 2, 2, 0, 0, 1, 0],
        &[],
        h,
    );
    g.cmd(cmd::SET_SCANOUT, &[0, 0, 33, 32, 0, 1], &[], h);
    g.cmd(cmd::SET_SCANOUT, &[0, 0, 32, 32, 7, 1], &[], h);
    g.cmd(cmd::SET_SCANOUT, &[0, 0, 32, 32, 0, 1], &[], h);
    for i in 0..40u32 {
        g.cmd(
            cmd::RESOURCE_FLUSH,
            &[i % 31, i % 29, 1 + i % 3, 1, 1, 0],
            &[],
            h,
        );
    }
    g.op(gpuop::RENDER);
    g.cmd(cmd::RESOURCE_DETACH_BACKING, &[1, 0], &[], h);
    g.cmd(cmd::RESOURCE_DETACH_BACKING, &[1, 0], &[], h);
    g.cmd(cmd::RESOURCE_UNREF, &[1, 0], &[], h);
    g.cmd(cmd::RESOURCE_UNREF, &[1, 0], &[], h);
    g.op(gpuop::RAW)
        .bool(false)
        .u16(3)
        .u16(h)
        .bytes(&[0x01, 0x01, 0x00]);
    g.op(gpuop::RESET);
    g.cmd(
        cmd::GET_DISPLAY_INFO,
        &[],
        &[],
        layout::RESP_DISPLAY_INFO as u16,
    );
    out.push(("hostile", g.0 .0));
    out
}

// ---- virtio_mmio ----------------------------------------------------------------

/// Op variants of `virtio_mmio::Op`, in declaration order.
mod vop {
    pub const COUNT: u32 = 14;
    pub const READ: u32 = 0;
    pub const REGISTER: u32 = 2;
    pub const NOTIFY: u32 = 3;
    pub const MEMORY: u32 = 4;
    pub const DESCRIPTOR: u32 = 5;
    pub const AVAIL: u32 = 7;
    pub const SETUP: u32 = 9;
    pub const INPUT: u32 = 10;
    pub const POLL: u32 = 11;
    pub const RESET: u32 = 13;
}
/// `virtio_mmio::Kind`.
const KINDS: u32 = 3;
/// Index of INTERRUPT_ACK in `virtio_mmio::REGISTERS`.
const REG_INTERRUPT_ACK: u8 = 7;
/// Data buffers live past the queue pages.
const DATA: u16 = 0x4000;
/// virtio-blk request types (virtio 1.2, 5.2.6).
const BLK_T_IN: u32 = 0;
const BLK_T_OUT: u32 = 1;
const BLK_T_FLUSH: u32 = 4;
const BLK_T_GET_ID: u32 = 8;
const BLK_REQ_HEADER: u32 = 16;
const SECTOR: u32 = 512;

struct V(Encoder);

impl V {
    fn new(kind: u32) -> Self {
        let mut e = Encoder::default();
        e.variant(kind, KINDS);
        V(e)
    }
    fn op(&mut self, v: u32) -> &mut Encoder {
        self.0.variant(v, vop::COUNT)
    }
    fn setup(&mut self) -> &mut Self {
        // Every feature the device offers; queues of 8.
        self.op(vop::SETUP).u64(u64::MAX).u8(3);
        self
    }
    fn desc(&mut self, q: u8, i: u16, off: u16, len: u32, flags: u16, next: u16) -> &mut Self {
        self.op(vop::DESCRIPTOR)
            .u8(q)
            .u16(i)
            .u16(off)
            .u32(len)
            .u16(flags)
            .u16(next);
        self
    }
    fn mem(&mut self, off: u16, bytes: &[u8]) -> &mut Self {
        self.op(vop::MEMORY).u16(off).bytes(bytes);
        self
    }
    fn kick(&mut self, q: u8, head: u16) -> &mut Self {
        self.op(vop::AVAIL).u8(q).u16(head);
        self.op(vop::NOTIFY).u16(u16::from(q));
        self.op(vop::READ).u16(mmio::INTERRUPT_STATUS as u16).u8(2);
        self.op(vop::REGISTER).u8(REG_INTERRUPT_ACK).u32(1);
        self
    }
    fn blk_request(
        &mut self,
        head: u16,
        ty: u32,
        sector: u64,
        data: u32,
        write: bool,
    ) -> &mut Self {
        let hdr = DATA + head * 0x40;
        let mut h = Vec::new();
        h.extend(ty.to_le_bytes());
        h.extend(0u32.to_le_bytes());
        h.extend(sector.to_le_bytes());
        self.mem(hdr, &h);
        let buf = DATA + 0x1000 + head * 0x200;
        let data_flags = ring::DESC_F_NEXT | if write { 0 } else { ring::DESC_F_WRITE };
        self.desc(0, head, hdr, BLK_REQ_HEADER, ring::DESC_F_NEXT, head + 1);
        self.desc(0, head + 1, buf, data, data_flags, head + 2);
        self.desc(0, head + 2, hdr + 0x20, 1, ring::DESC_F_WRITE, 0);
        self.kick(0, head)
    }
}

fn virtio_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    // A driver probing every register of each device.
    for (name, kind) in [("probe-blk", 0), ("probe-rng", 1), ("probe-console", 2)] {
        let mut v = V::new(kind);
        for off in (0..mmio::CONFIG + 0x20).step_by(4) {
            v.op(vop::READ).u16(off as u16).u8(2);
        }
        v.setup();
        v.op(vop::RESET);
        out.push((name, v.0 .0));
    }
    // virtio-blk: read, write, flush, GET_ID, then an indirect read.
    let mut v = V::new(0);
    v.setup();
    v.mem(DATA + 0x1400, &[0xA5; SECTOR as usize]);
    v.blk_request(0, BLK_T_OUT, 1, SECTOR, true);
    v.blk_request(0, BLK_T_IN, 1, SECTOR, false);
    v.blk_request(3, BLK_T_FLUSH, 0, 0, false);
    v.blk_request(0, BLK_T_GET_ID, 0, 20, false);
    let table = DATA + 0x3000;
    let mut ind = Vec::new();
    for (addr, len, flags, next) in [
        (u64::from(DATA), BLK_REQ_HEADER, ring::DESC_F_NEXT, 1u16),
        (
            u64::from(DATA) + 0x1000,
            SECTOR,
            ring::DESC_F_NEXT | ring::DESC_F_WRITE,
            2,
        ),
        (u64::from(DATA) + 0x20, 1, ring::DESC_F_WRITE, 0),
    ] {
        ind.extend((addr + crate::virtio_mmio::RAM_BASE).to_le_bytes());
        ind.extend(len.to_le_bytes());
        ind.extend(flags.to_le_bytes());
        ind.extend(next.to_le_bytes());
    }
    v.mem(table, &ind);
    v.desc(0, 5, table, ind.len() as u32, ring::DESC_F_INDIRECT, 0);
    v.kick(0, 5);
    out.push(("blk-requests", v.0 .0));
    // virtio-rng: two buffers.
    let mut v = V::new(1);
    v.setup();
    v.desc(0, 0, DATA, 64, ring::DESC_F_WRITE, 0);
    v.kick(0, 0);
    v.desc(0, 1, DATA + 0x100, 4096, ring::DESC_F_WRITE, 0);
    v.kick(0, 1);
    out.push(("rng-requests", v.0 .0));
    // virtio-console: a receive buffer filled by host input, a transmit.
    let mut v = V::new(2);
    v.setup();
    v.desc(0, 0, DATA, 128, ring::DESC_F_WRITE, 0);
    v.kick(0, 0);
    v.op(vop::INPUT).bytes(b"login: root\n");
    v.op(vop::POLL);
    v.mem(DATA + 0x200, b"hello from the guest\n");
    v.desc(1, 0, DATA + 0x200, 21, 0, 0);
    v.kick(1, 0);
    out.push(("console-io", v.0 .0));
    out
}

// ---- vgic_mmio --------------------------------------------------------------------

/// Op variants of `vgic_mmio::Op`, in declaration order.
mod gop {
    pub const COUNT: u32 = 13;
    pub const GICD_READ: u32 = 0;
    pub const GICD_WRITE: u32 = 1;
    pub const GICR_READ: u32 = 2;
    pub const GICR_WRITE: u32 = 3;
    pub const SPI: u32 = 4;
    pub const PPI: u32 = 5;
    pub const SGI: u32 = 6;
    pub const HW_MAP: u32 = 7;
    pub const FLUSH: u32 = 8;
    pub const SYNC: u32 = 9;
    pub const GUEST: u32 = 10;
    pub const KICKS: u32 = 11;
}
/// Access size bytes of the targets (log2).
const WORD: u8 = 2;
const DOUBLE: u8 = 3;
/// The virtual timer's PPI, and the SGI a Linux guest uses for rescheduling.
const PPI_VTIMER: u8 = 27;
const SGI_RESCHEDULE: u64 = 0;
/// ICC_SGI1R_EL1.INTID is bits \[27:24\].
const SGI1R_INTID_SHIFT: u32 = 24;
const ALL_ONES: u64 = 0xFFFF_FFFF;
/// `vgic_mmio::guest_transition` picks: 0 acknowledges, 2 deactivates an active one.
const GUEST_ACK: u8 = 0;
const GUEST_DEACTIVATE: u8 = 2;

fn vgic_boot(e: &mut Encoder, vcpus: u8) {
    let op = |e: &mut Encoder, v| {
        e.variant(v, gop::COUNT);
    };
    op(e, gop::GICD_READ);
    e.u16(gicd::TYPER as u16).u8(WORD);
    op(e, gop::GICD_WRITE);
    e.u16(gicd::CTLR as u16)
        .u8(WORD)
        .u64(u64::from(ctlr::ENABLE_GRP0 | ctlr::ENABLE_GRP1));
    for bank in 0..2u16 {
        op(e, gop::GICD_WRITE);
        e.u16(gicd::IGROUPR as u16 + 4 * bank)
            .u8(WORD)
            .u64(ALL_ONES);
        op(e, gop::GICD_WRITE);
        e.u16(gicd::ISENABLER as u16 + 4 * bank)
            .u8(WORD)
            .u64(ALL_ONES);
    }
    op(e, gop::GICD_WRITE);
    e.u16(gicd::IPRIORITYR as u16 + 32)
        .u8(WORD)
        .u64(0xA0A0_A0A0);
    // SPI 32 to vCPU 0 (64-bit IROUTER), SPI 33 to any (IRM).
    op(e, gop::GICD_WRITE);
    e.u16((gicd::IROUTER + 8 * 32) as u16).u8(DOUBLE).u64(0);
    op(e, gop::GICD_WRITE);
    e.u16((gicd::IROUTER + 8 * 33) as u16)
        .u8(DOUBLE)
        .u64(1 << 31);
    for cpu in 0..u32::from(vcpus) {
        let rd = cpu * gicr::STRIDE as u32;
        let sgi = rd + gicr::SGI_BASE as u32;
        op(e, gop::GICR_READ);
        e.u32(rd + gicr::TYPER as u32).u8(DOUBLE);
        op(e, gop::GICR_WRITE);
        e.u32(rd + gicr::WAKER as u32).u8(WORD).u64(0);
        op(e, gop::GICR_WRITE);
        e.u32(sgi + gicr::IGROUPR0 as u32).u8(WORD).u64(ALL_ONES);
        op(e, gop::GICR_WRITE);
        e.u32(sgi + gicr::ISENABLER0 as u32).u8(WORD).u64(ALL_ONES);
    }
}

fn vgic_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    // Two vCPUs, 32 SPIs, 4 list registers: timer, device SPI, IPI.
    let mut e = Encoder::default();
    e.u8(1).u8(0).u8(1).u8(3);
    vgic_boot(&mut e, 2);
    e.variant(gop::PPI, gop::COUNT)
        .u8(0)
        .u8(PPI_VTIMER)
        .bool(true);
    e.variant(gop::SPI, gop::COUNT).u16(32).bool(true);
    e.variant(gop::SGI, gop::COUNT)
        .u8(1)
        .u64(SGI_RESCHEDULE << SGI1R_INTID_SHIFT | 1);
    e.variant(gop::KICKS, gop::COUNT);
    for _ in 0..2 {
        e.variant(gop::FLUSH, gop::COUNT).u8(0);
        e.variant(gop::GUEST, gop::COUNT).u8(0).u8(0).u8(GUEST_ACK);
        e.variant(gop::GUEST, gop::COUNT).u8(0).u8(1).u8(GUEST_ACK);
        e.variant(gop::SYNC, gop::COUNT).u8(0).u8(0);
        e.variant(gop::GUEST, gop::COUNT)
            .u8(0)
            .u8(0)
            .u8(GUEST_DEACTIVATE);
    }
    e.variant(gop::PPI, gop::COUNT)
        .u8(0)
        .u8(PPI_VTIMER)
        .bool(false);
    e.variant(gop::SPI, gop::COUNT).u16(32).bool(false);
    e.variant(gop::FLUSH, gop::COUNT).u8(0);
    e.variant(gop::SYNC, gop::COUNT).u8(0).u8(1);
    out.push(("linux-2cpu", e.0));
    // One vCPU, 988 SPIs, 1 list register: more pending than fits, a HW mapping.
    let mut e = Encoder::default();
    e.u8(0).u8(3).u8(4).u8(0);
    vgic_boot(&mut e, 1);
    e.variant(gop::HW_MAP, gop::COUNT)
        .u8(0)
        .u16(u16::from(PPI_VTIMER))
        .u16(27)
        .bool(false);
    e.variant(gop::PPI, gop::COUNT)
        .u8(0)
        .u8(PPI_VTIMER)
        .bool(true);
    for spi in 32..40u16 {
        e.variant(gop::SPI, gop::COUNT).u16(spi).bool(true);
    }
    for _ in 0..4 {
        e.variant(gop::FLUSH, gop::COUNT).u8(0);
        e.variant(gop::GUEST, gop::COUNT).u8(0).u8(0).u8(GUEST_ACK);
        e.variant(gop::FLUSH, gop::COUNT).u8(0);
        e.variant(gop::GUEST, gop::COUNT)
            .u8(0)
            .u8(0)
            .u8(GUEST_DEACTIVATE);
        e.variant(gop::SYNC, gop::COUNT).u8(0).u8(3);
    }
    out.push(("overflow-988", e.0));
    out
}

// ---- TPM ------------------------------------------------------------------------

/// TPMA_NV bits (TPM 2.0 Part 2, 13.4): OWNERWRITE, AUTHWRITE, OWNERREAD, AUTHREAD.
const NV_OWNER_AUTH_RW: u32 = 1 << 1 | 1 << 2 | 1 << 17 | 1 << 18;
const NV_INDEX: u32 = 0x0150_0000;
const NV_SIZE: u16 = 32;
/// TPM_ALG_ECC, TPM_ECC_NIST_P256, TPMA_OBJECT of a storage primary (fixedTPM,
/// fixedParent, sensitiveDataOrigin, userWithAuth, restricted, decrypt).
const ALG_ECC: u16 = 0x0023;
const ECC_NIST_P256: u16 = 0x0003;
const STORAGE_PRIMARY: u32 = 0x0003_0072;
/// The handle TPM2_CreatePrimary returns for the first loaded object.
const PRIMARY: u32 = 0x8000_0000;
const AES_128: u16 = 128;
/// TPM_PT_MANUFACTURER, the first fixed property.
const PT_FIXED: u32 = 0x100;
const PCR_SELECT_ALL: [u8; 4] = [3, 0xFF, 0xFF, 0xFF];

/// A command with `handles`, a password session (empty password) when `auth`, and
/// `params`.
fn tpm_command(code: u32, handles: &[u32], auth: bool, params: &[u8]) -> Vec<u8> {
    tpm_command_auths(code, handles, usize::from(auth), params)
}

/// A command with `handles`, `auths` password sessions (empty passwords) and
/// `params`.
fn tpm_command_auths(code: u32, handles: &[u32], auths: usize, params: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    for h in handles {
        body.extend(h.to_be_bytes());
    }
    if auths > 0 {
        // sessionHandle, nonce (empty), attributes (continueSession), hmac (empty).
        let session = [handle::RS_PW.to_be_bytes().as_slice(), &[0, 0, 1, 0, 0]].concat();
        let area = session.repeat(auths);
        body.extend((area.len() as u32).to_be_bytes());
        body.extend(area);
    }
    body.extend(params);
    let tag = if auths > 0 {
        st::SESSIONS
    } else {
        st::NO_SESSIONS
    };
    let mut c = Vec::new();
    c.extend(tag.to_be_bytes());
    c.extend(((HEADER + body.len()) as u32).to_be_bytes());
    c.extend(code.to_be_bytes());
    c.extend(body);
    c
}

fn tpm2b(b: &[u8]) -> Vec<u8> {
    [(b.len() as u16).to_be_bytes().as_slice(), b].concat()
}

/// Commands as tpm2-tools sends them after TPM2_Startup.
fn tpm_session() -> Vec<Vec<u8>> {
    let sha256 = alg::SHA256.to_be_bytes();
    let pcr_sel = [1u32.to_be_bytes().as_slice(), &sha256, &PCR_SELECT_ALL].concat();
    let mut extend = 1u32.to_be_bytes().to_vec();
    extend.extend(sha256);
    extend.extend([0x11; 32]);
    let nv_public = [
        NV_INDEX.to_be_bytes().as_slice(),
        &sha256,
        &NV_OWNER_AUTH_RW.to_be_bytes(),
        &tpm2b(&[]),
        &NV_SIZE.to_be_bytes(),
    ]
    .concat();
    let ecc_public = [
        ALG_ECC.to_be_bytes().as_slice(),
        &sha256,
        &STORAGE_PRIMARY.to_be_bytes(),
        &tpm2b(&[]),
        &alg::AES.to_be_bytes(),
        &AES_128.to_be_bytes(),
        &alg::CFB.to_be_bytes(),
        &alg::NULL.to_be_bytes(),
        &ECC_NIST_P256.to_be_bytes(),
        &alg::NULL.to_be_bytes(),
        &tpm2b(&[]),
        &tpm2b(&[]),
    ]
    .concat();
    let create_primary = [
        tpm2b(&[0, 0, 0, 0]),
        tpm2b(&ecc_public),
        tpm2b(&[]),
        0u32.to_be_bytes().to_vec(),
    ]
    .concat();
    let cap = |c: u32, p: u32, n: u32| [c.to_be_bytes(), p.to_be_bytes(), n.to_be_bytes()].concat();
    let hmac_session = [
        tpm2b(&[0x5A; 16]),
        tpm2b(&[]),
        vec![vtpm::defs::se::HMAC],
        alg::NULL.to_be_bytes().to_vec(),
        sha256.to_vec(),
    ]
    .concat();
    vec![
        tpm_command(
            cc::GET_CAPABILITY,
            &[],
            false,
            &cap(cap::TPM_PROPERTIES, PT_FIXED, 64),
        ),
        tpm_command(cc::GET_CAPABILITY, &[], false, &cap(cap::COMMANDS, 0, 128)),
        tpm_command(cc::GET_CAPABILITY, &[], false, &cap(cap::ALGS, 0, 64)),
        tpm_command(cc::GET_CAPABILITY, &[], false, &cap(cap::PCRS, 0, 1)),
        tpm_command(cc::GET_RANDOM, &[], false, &32u16.to_be_bytes()),
        tpm_command(cc::SELF_TEST, &[], false, &[1]),
        tpm_command(cc::GET_TEST_RESULT, &[], false, &[]),
        tpm_command(cc::PCR_READ, &[], false, &pcr_sel),
        tpm_command(cc::PCR_EXTEND, &[7], true, &extend),
        tpm_command(cc::PCR_EVENT, &[8], true, &tpm2b(b"grub_cmd linux")),
        tpm_command(
            cc::HASH,
            &[],
            false,
            &[
                tpm2b(b"abc"),
                sha256.to_vec(),
                handle::OWNER.to_be_bytes().to_vec(),
            ]
            .concat(),
        ),
        tpm_command(cc::READ_CLOCK, &[], false, &[]),
        tpm_command(
            cc::NV_DEFINE_SPACE,
            &[handle::OWNER],
            true,
            &[tpm2b(&[]), tpm2b(&nv_public)].concat(),
        ),
        tpm_command(
            cc::NV_WRITE,
            &[NV_INDEX, NV_INDEX],
            true,
            &[tpm2b(&[0x42; 16]), 0u16.to_be_bytes().to_vec()].concat(),
        ),
        tpm_command(
            cc::NV_READ,
            &[NV_INDEX, NV_INDEX],
            true,
            &[16u16.to_be_bytes(), 0u16.to_be_bytes()].concat(),
        ),
        tpm_command(cc::NV_READ_PUBLIC, &[NV_INDEX], false, &[]),
        tpm_command(
            cc::START_AUTH_SESSION,
            &[handle::NULL, handle::NULL],
            false,
            &hmac_session,
        ),
        tpm_command(cc::CREATE_PRIMARY, &[handle::OWNER], true, &create_primary),
        // The primary (0x80000000) certified without a signing key
        // (TPM_RH_NULL), the time, and a credential for it.
        tpm_command_auths(
            cc::CERTIFY,
            &[PRIMARY, handle::NULL],
            2,
            &[tpm2b(b"nonce"), alg::NULL.to_be_bytes().to_vec()].concat(),
        ),
        tpm_command_auths(
            cc::GET_TIME,
            &[handle::ENDORSEMENT, handle::NULL],
            2,
            &[tpm2b(b"nonce"), alg::NULL.to_be_bytes().to_vec()].concat(),
        ),
        tpm_command(
            cc::MAKE_CREDENTIAL,
            &[PRIMARY],
            false,
            &[
                tpm2b(&[7; 32]),
                tpm2b(&[[0, 0x0B].as_slice(), &[6; 32]].concat()),
            ]
            .concat(),
        ),
    ]
}

fn tpm_dispatch_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let all = tpm_session();
    let mut out = vec![("session", [vec![0x80], all.concat()].concat())];
    // Each command alone after TPM2_Startup (locality 0), and one before it.
    const NAMES: [&str; 21] = [
        "cap-props",
        "cap-commands",
        "cap-algs",
        "cap-pcrs",
        "get-random",
        "self-test",
        "test-result",
        "pcr-read",
        "pcr-extend",
        "pcr-event",
        "hash",
        "read-clock",
        "nv-define",
        "nv-write",
        "nv-read",
        "nv-read-public",
        "start-auth-session",
        "create-primary",
        "certify",
        "get-time",
        "make-credential",
    ];
    for (name, c) in NAMES.iter().zip(&all) {
        out.push((name, [vec![0x80], c.clone()].concat()));
    }
    // The platform-administration, PCR-group and command-audit commands.
    let pcr_policy = [&[0, 0][..], &[0, 0x10], &20u32.to_be_bytes()].concat();
    let audit_set = [
        &[0, 0x0B][..],
        &[0, 0, 0, 1],
        &cc::PCR_EXTEND.to_be_bytes(),
        &[0, 0, 0, 0],
    ]
    .concat();
    let mut extend = vec![0, 0, 0, 1, 0, 0x0B];
    extend.extend([0x11; 32]);
    let audit_seed = [
        tpm_command(
            cc::SET_COMMAND_CODE_AUDIT_STATUS,
            &[handle::OWNER],
            true,
            &audit_set,
        ),
        tpm_command(cc::PCR_EXTEND, &[16], true, &extend),
        tpm_command(cc::PCR_SET_AUTH_VALUE, &[20], true, &[0, 3, 1, 2, 3]),
        tpm_command(
            cc::PCR_SET_AUTH_POLICY,
            &[handle::PLATFORM],
            true,
            &pcr_policy,
        ),
        tpm_command(cc::CLOCK_RATE_ADJUST, &[handle::OWNER], true, &[3]),
        tpm_command(
            cc::SET_ALGORITHM_SET,
            &[handle::PLATFORM],
            true,
            &[0, 0, 0, 1],
        ),
        tpm_command(
            cc::PP_COMMANDS,
            &[handle::PLATFORM],
            true,
            &[0, 0, 0, 0, 0, 0, 0, 0],
        ),
        tpm_command_auths(
            cc::GET_COMMAND_AUDIT_DIGEST,
            &[handle::ENDORSEMENT, handle::NULL],
            2,
            &[0, 0, 0, 0x10],
        ),
    ];
    out.push(("platform-audit", [vec![0x80], audit_seed.concat()].concat()));
    out.push(("commit-ecdaa", [vec![0x80], ecdaa_seed().concat()].concat()));
    out.push((
        "startup-state-locality3",
        [
            vec![3],
            tpm_command(cc::STARTUP, &[], false, &su::STATE.to_be_bytes()),
        ]
        .concat(),
    ));
    out
}

/// `tis::Op` / `crb::Op` variants, in declaration order.
mod top {
    pub const COUNT: u32 = 6;
    pub const READ: u32 = 0;
    pub const EXCHANGE: u32 = 3;
    pub const STARTUP: u32 = 4;
    pub const RESET: u32 = 5;
}

fn interface_seeds(registers: &[u16]) -> Vec<(&'static str, Vec<u8>)> {
    let mut e = Encoder::default();
    for loc in 0..5u16 {
        for &r in registers {
            e.variant(top::READ, top::COUNT)
                .u16(loc * 0x1000 + r)
                .u8(WORD);
        }
    }
    let probe = e.0;
    let mut e = Encoder::default();
    e.variant(top::STARTUP, top::COUNT).u8(0);
    for c in tpm_session().iter().take(8) {
        e.variant(top::EXCHANGE, top::COUNT).u8(0).bytes(c);
    }
    e.variant(top::RESET, top::COUNT);
    e.variant(top::STARTUP, top::COUNT).u8(3);
    vec![("probe", probe), ("commands", e.0)]
}

fn tis_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use vtpm::tis_regs::fifo::*;
    interface_seeds(
        &[
            ACCESS,
            INT_ENABLE,
            INT_STATUS,
            INTF_CAPABILITY,
            STS,
            INTERFACE_ID,
            DID_VID,
            RID,
        ]
        .map(|r| r as u16),
    )
}

fn crb_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use vtpm::tis_regs::crb::*;
    interface_seeds(
        &[
            LOC_STATE,
            LOC_STS,
            INTF_ID_LO,
            INTF_ID_HI,
            CTRL_STS,
            CTRL_CMD_SIZE,
            CTRL_CMD_LADDR,
            CTRL_RSP_ADDR_LO,
            INT_STS,
        ]
        .map(|r| r as u16),
    )
}

/// Length of the SHA-256 that ends an NV image.
const NV_CHECKSUM: usize = 32;

fn nv_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let fresh = nv_image_after(&[]);
    let session = tpm_session();
    let provisioned = nv_image_after(&session);
    let body = |img: &[u8]| [vec![0], img[..img.len() - NV_CHECKSUM].to_vec()].concat();
    assert_eq!(
        HashAlg::Sha256
            .digest(&[&fresh[..fresh.len() - NV_CHECKSUM]])
            .as_bytes(),
        &fresh[fresh.len() - NV_CHECKSUM..]
    );
    vec![
        ("manufactured", body(&fresh)),
        ("provisioned", body(&provisioned)),
        ("raw-manufactured", [vec![0xFF], fresh].concat()),
    ]
}

// ---- registry ---------------------------------------------------------------------

fn registry_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut blank = vec![4];
    blank.extend([0u8; 0]);
    vec![("formatted-empty", blank)]
}

/// Seeds from a real system-disk image (`cargo xtask disk create/add-vm`): the image
/// as sparse patches of its non-zero blocks (mode 5), its superblock (mode 0), and
/// the payload of its active slot (modes 2 and 4).
pub fn registry_image(image: &[u8]) -> Vec<Vec<u8>> {
    let block = BLOCK_SIZE as usize;
    let extra_mib = (image.len() as u64).saturating_sub(MIN_DISK_SIZE) >> 20;
    let mut sparse = vec![5];
    sparse.extend((extra_mib as u16).to_le_bytes());
    for (i, b) in image.chunks(block).enumerate().take(usize::from(u16::MAX)) {
        if b.iter().any(|&x| x != 0) {
            sparse.extend((i as u16).to_le_bytes());
            sparse.extend((b.len() as u16).to_le_bytes());
            sparse.extend(b);
        }
    }
    let mut out = vec![sparse, [&[0u8][..], &image[..block]].concat()];
    // The slot with the higher generation.
    let slot = |off: u64| {
        let h = &image[off as usize..off as usize + SLOT_HEADER_SIZE];
        let generation = u64::from_le_bytes(h[32..40].try_into().unwrap_or_default());
        let len = u32::from_le_bytes(h[40..44].try_into().unwrap_or_default()) as usize;
        let start = off as usize + SLOT_HEADER_SIZE;
        (
            generation,
            image.get(start..start + len).unwrap_or(&[]).to_vec(),
        )
    };
    let a = slot(registry::defs::SLOT_A_OFFSET);
    let b = slot(registry::defs::SLOT_B_OFFSET);
    let payload = if a.0 >= b.0 { a.1 } else { b.1 };
    out.push([&[2u8][..], &payload].concat());
    out.push([&[4u8][..], &payload].concat());
    out
}

// ---- boot_bundle ------------------------------------------------------------------

fn bundle_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let kernel = [0x4Du8, 0x5A, 0, 0, 0, 0, 0, 0];
    let base = vmspec::VmSpec {
        name: "vm0".into(),
        vcpus: 2,
        mem: 512 << 20,
        cmdline: "console=ttyAMA0 quiet".into(),
        guest: "linux".into(),
        disk: Some(64 << 20),
        nvme: Some(16 << 20),
        virtio_pci: Some(8 << 20),
        usb: true,
        usb_storage: None,
        fault: None,
        pmu_el2_counting: false,
        kernel: &kernel,
        initrd: Some(b"070701 initramfs"),
        firmware: None,
    };
    let bare = vmspec::VmSpec {
        name: "selftest".into(),
        vcpus: 1,
        mem: 16 << 20,
        cmdline: String::new(),
        guest: "selftest".into(),
        disk: None,
        nvme: None,
        virtio_pci: None,
        usb: false,
        usb_storage: None,
        fault: vmspec::HypervisorFault::from_name("panic"),
        pmu_el2_counting: true,
        kernel: &kernel,
        initrd: None,
        firmware: None,
    };
    vec![
        ("linux", vmspec::write_bundle(&base)),
        ("selftest-fault", vmspec::write_bundle(&bare)),
    ]
}

/// An ECDAA signing primary (TPM_ALG_ECDAA with SHA-256, count 0), then
/// TPM2_Commit (no points: E = r·G) and TPM2_Sign with the ECDAA scheme and
/// that commitment's count (0, the first of the reset cycle).
fn ecdaa_seed() -> Vec<Vec<u8>> {
    const ALG_ECDAA: u16 = 0x001A;
    // fixedTPM | fixedParent | sensitiveDataOrigin | userWithAuth | sign.
    const SIGNER: u32 = 0x0004_0072;
    let sha256 = alg::SHA256.to_be_bytes();
    let public = [
        ALG_ECC.to_be_bytes().as_slice(),
        &sha256,
        &SIGNER.to_be_bytes(),
        &tpm2b(&[]),
        &alg::NULL.to_be_bytes(),
        &ALG_ECDAA.to_be_bytes(),
        &sha256,
        &[0, 0],
        &ECC_NIST_P256.to_be_bytes(),
        &alg::NULL.to_be_bytes(),
        &tpm2b(&[]),
        &tpm2b(&[]),
    ]
    .concat();
    let create_primary = [
        tpm2b(&[0, 0, 0, 0]),
        tpm2b(&public),
        tpm2b(&[]),
        0u32.to_be_bytes().to_vec(),
    ]
    .concat();
    // P1 empty (two empty coordinates), s2 and y2 empty.
    let commit = [0, 4, 0, 0, 0, 0, 0, 0, 0, 0];
    let sign = [
        tpm2b(&[0x5A; 32]).as_slice(),
        &ALG_ECDAA.to_be_bytes(),
        &sha256,
        &[0, 0],
        &st::HASHCHECK.to_be_bytes(),
        &handle::NULL.to_be_bytes(),
        &tpm2b(&[]),
    ]
    .concat();
    vec![
        tpm_command(cc::CREATE_PRIMARY, &[handle::OWNER], true, &create_primary),
        tpm_command(cc::COMMIT, &[0x8000_0000], true, &commit),
        tpm_command(cc::SIGN, &[0x8000_0000], true, &sign),
    ]
}

#[cfg(test)]
mod tpm_seed_tests {
    use super::{ecdaa_seed, tpm_session};
    use crate::tpm_common::{startup_command, tpm};

    /// Every command of the tpm_dispatch session seed succeeds when run in
    /// order after TPM2_Startup, so the fuzzer's mutations start from the
    /// handlers' success paths (the certification, the time and the
    /// credential of the primary included).
    #[test]
    fn the_tpm_session_seed_succeeds_command_by_command() {
        let mut t = tpm();
        let rc = |r: &[u8]| u32::from_be_bytes(r[6..10].try_into().unwrap());
        let r = t.execute(0, &startup_command());
        assert!(
            rc(&r) == 0 || rc(&r) == vtpm::defs::rc::INITIALIZE,
            "{r:02x?}"
        );
        for (i, c) in tpm_session().iter().enumerate() {
            let r = t.execute(0, c);
            assert_eq!(rc(&r), 0, "command {i} ({c:02x?}): {r:02x?}");
        }
    }

    /// The commit-ecdaa seed's CreatePrimary, Commit and ECDAA Sign succeed.
    #[test]
    fn the_ecdaa_seed_succeeds_command_by_command() {
        let mut t = tpm();
        let rc = |r: &[u8]| u32::from_be_bytes(r[6..10].try_into().unwrap());
        let r = t.execute(0, &startup_command());
        assert!(
            rc(&r) == 0 || rc(&r) == vtpm::defs::rc::INITIALIZE,
            "{r:02x?}"
        );
        for (i, c) in ecdaa_seed().iter().enumerate() {
            let r = t.execute(0, c);
            assert_eq!(rc(&r), 0, "command {i} ({c:02x?}): {r:02x?}");
        }
    }
}
