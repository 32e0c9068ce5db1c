//! The NVMe function driven as Linux brings it up: found by class code through
//! ECAM, BAR0 sized and placed, MSI-X vector 0 aimed at the GICv2m frame, the
//! admin queue enabled, Identify Controller answered with an interrupt in the vGIC;
//! and refused DMA while Bus Master Enable is clear.

extern crate std;

use alloc::boxed::Box;

use nvme::defs::{admin, reg as nreg};
use nvme::testing::RamDisk;
use vdev::{AccessSize, GuestMemory, InterruptSink, MmioContext, VecMemory};

use crate::defs::{cap_id, msix_cap, reg, virt};
use crate::nvme::{NvmeFunction, MSIX_TABLE_OFFSET, NVME_BAR0_SIZE};
use crate::root::{Layout, MsiController, RootComplex, Window};

const RAM: Window = Window {
    base: 0x4000_0000,
    size: 0x1_0000,
};
const FRAME: u64 = 0x0802_0000;
const BAR0: u64 = virt::MMIO_BASE + 0x20_0000;
const ASQ: u64 = RAM.base + 0x1000;
const ACQ: u64 = RAM.base + 0x2000;
const IDENTIFY_BUF: u64 = RAM.base + 0x3000;
const SPI: u32 = 80;
const W: AccessSize = AccessSize::Word;
const H: AccessSize = AccessSize::Half;

struct V2m(vgic::v2m::V2mFrame);

impl MsiController for V2m {
    fn deliver(&mut self, address: u64, data: u32, irq: &mut dyn InterruptSink) -> bool {
        self.0.message(FRAME, address, data, irq)
    }
}

struct Guest {
    rc: RootComplex,
    vgic: vgic::Vgic,
    mem: VecMemory,
}

fn cfg(r: u64) -> u64 {
    virt::ECAM_BASE + (1 << 15) + r
}

impl Guest {
    fn new() -> Guest {
        let mut rc = RootComplex::new(Layout::virt(false), &[RAM]).unwrap();
        let nvme_cfg = nvme::Config {
            io_queues: 1,
            vectors: 2,
            vendor_id: 0x1234,
            ..nvme::Config::default()
        };
        let f = NvmeFunction::new(RamDisk::new(1 << 20), nvme_cfg, 0x1234, 0x0001);
        rc.attach(1, Box::new(f)).unwrap();
        let frame = vgic::v2m::V2mFrame::new(SPI, 32, 128).unwrap();
        rc.set_msi_controller(Box::new(V2m(frame)));
        let mut vgic = vgic::Vgic::new(vgic::VgicConfig::simple(1, 96)).unwrap();
        let icfgr = vgic::regs::gicd::ICFGR + 4 * u64::from(SPI / 16);
        vgic.gicd_write(icfgr, W, 0b10 << (2 * (SPI % 16))).unwrap();
        Guest {
            rc,
            vgic,
            mem: VecMemory::new(RAM.base, RAM.size as usize),
        }
    }
    fn access(&mut self, gpa: u64, size: AccessSize, write: Option<u64>) -> u64 {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut self.vgic,
        };
        self.rc.access(&mut ctx, gpa, size, write).unwrap()
    }
    fn rd(&mut self, gpa: u64, size: AccessSize) -> u64 {
        self.access(gpa, size, None)
    }
    fn wr(&mut self, gpa: u64, size: AccessSize, v: u64) {
        self.access(gpa, size, Some(v));
    }
    fn spi_pending(&self) -> bool {
        let at = vgic::regs::gicd::ISPENDR + 4 * u64::from(SPI / 32);
        self.vgic.gicd_read(at, W).unwrap() & (1 << (SPI % 32)) != 0
    }
    /// AQA/ASQ/ACQ, then CC.EN with 64-byte SQEs, 16-byte CQEs, 4 KiB pages.
    fn enable(&mut self) -> u64 {
        self.wr(BAR0 + nreg::AQA, W, (15 << 16) | 15);
        self.wr(BAR0 + nreg::ASQ, AccessSize::Double, ASQ);
        self.wr(BAR0 + nreg::ACQ, AccessSize::Double, ACQ);
        self.wr(BAR0 + nreg::CC, W, (4 << 20) | (6 << 16) | 1);
        self.rd(BAR0 + nreg::CSTS, W)
    }
}

#[test]
fn linux_style_bring_up_through_pci_msix_and_v2m() {
    let mut g = Guest::new();
    // Found by class code, with a 64-bit non-prefetchable BAR0 of 32 KiB.
    assert_eq!(g.rd(cfg(reg::REVISION_ID as u64), W) >> 8, 0x01_08_02);
    g.wr(cfg(reg::BAR0 as u64), W, 0xffff_ffff);
    g.wr(cfg(reg::BAR0 as u64 + 4), W, 0xffff_ffff);
    assert_eq!(
        g.rd(cfg(reg::BAR0 as u64), W),
        !(NVME_BAR0_SIZE - 1) & 0xffff_fff0 | 0x4
    );
    g.wr(cfg(reg::BAR0 as u64), W, BAR0);
    g.wr(cfg(reg::BAR0 as u64 + 4), W, 0);
    // Memory on, bus mastering still off.
    g.wr(cfg(reg::COMMAND as u64), H, 0x2);
    // MSI-X: find the capability, table in BAR0 after the registers.
    let mut at = g.rd(cfg(reg::CAPABILITIES_POINTER as u64), AccessSize::Byte);
    while g.rd(cfg(at), AccessSize::Byte) != u64::from(cap_id::MSIX) {
        at = g.rd(cfg(at + 1), AccessSize::Byte);
    }
    assert_eq!(g.rd(cfg(at + msix_cap::TABLE as u64), W), MSIX_TABLE_OFFSET);
    assert_eq!(g.rd(cfg(at + 2), H) & 0x7ff, 1, "two vectors");
    g.wr(cfg(at + 2), H, 1 << 15);
    let entry = BAR0 + MSIX_TABLE_OFFSET;
    g.wr(
        entry,
        AccessSize::Double,
        FRAME + vgic::v2m::reg::MSI_SETSPI_NS,
    );
    g.wr(entry + 8, W, u64::from(SPI));
    g.wr(entry + 12, W, 0);

    // Without Bus Master Enable the controller sees no memory: enabling fails.
    let csts = g.enable();
    assert_eq!(csts & 0b11, 0b10, "CSTS.CFS, not RDY");
    g.wr(BAR0 + nreg::CC, W, 0);
    g.wr(cfg(reg::COMMAND as u64), H, 0x6);
    assert_eq!(g.enable() & 0b11, 0b01, "CSTS.RDY");

    // Identify Controller (CNS 1), command ID 7.
    let mut sqe = [0u8; 64];
    sqe[0] = admin::IDENTIFY;
    sqe[2..4].copy_from_slice(&7u16.to_le_bytes());
    sqe[24..32].copy_from_slice(&IDENTIFY_BUF.to_le_bytes());
    sqe[40..44].copy_from_slice(&1u32.to_le_bytes());
    g.mem.write(ASQ, &sqe).unwrap();
    assert!(!g.spi_pending());
    g.wr(BAR0 + nreg::DOORBELLS, W, 1);
    if g.rc.has_work() {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut g.mem,
            irq: &mut g.vgic,
        };
        g.rc.poll(&mut ctx);
    }
    let dw3 = g.mem.read_u32(ACQ + 12).unwrap();
    assert_eq!(dw3 & 0xffff, 7, "command ID");
    assert_eq!(dw3 >> 16, 1, "phase 1, status success");
    assert_eq!(g.mem.read_u16(IDENTIFY_BUF).unwrap(), 0x1234, "VID");
    assert!(
        g.spi_pending(),
        "vector 0 reached SPI {SPI} through the v2m frame"
    );
    assert_eq!(g.rc.dropped_messages(), 0);

    // Bus mastering off again: the next command is never fetched.
    g.wr(cfg(reg::COMMAND as u64), H, 0x2);
    g.mem.write(ASQ + 64, &sqe).unwrap();
    g.wr(BAR0 + nreg::DOORBELLS, W, 2);
    assert_eq!(g.mem.read_u32(ACQ + 16 + 12).unwrap(), 0, "no completion");
    // The controller reports the fatal status rather than touching memory.
    assert_ne!(g.rd(BAR0 + nreg::CSTS, W) & 0b10, 0, "CSTS.CFS");
}

/// The root complex on an MMIO bus as el2 puts it there: one device per window,
/// the ECAM window the one that resets it and runs deferred work.
#[test]
fn root_windows_route_bus_accesses() {
    use alloc::sync::Arc;
    use vdev::{MmioBus, WorkSignal};

    use crate::root::RootWindow;

    let g = Guest::new();
    let mut vgic = g.vgic;
    let mut mem = g.mem;
    let rc = Arc::new(spin::Mutex::new(g.rc));
    let mut bus = MmioBus::new();
    let windows = RootWindow::all(&rc);
    assert_eq!(windows.len(), 4, "ECAM, 32-bit, 64-bit, I/O");
    for w in windows {
        bus.insert("pcie", w.window.base, w.window.size, Box::new(w))
            .unwrap();
    }
    bus.connect_work_signal(&WorkSignal::new());
    let mut ctx = MmioContext {
        vcpu: 0,
        mem: &mut mem,
        irq: &mut vgic,
    };
    let mut go = |addr: u64, size, write: Option<u64>| {
        bus.access(&mut ctx, addr, size, write)
            .expect("on the bus")
            .unwrap()
    };
    assert_eq!(go(cfg(0), W, None), 0x0001_1234);
    go(cfg(reg::BAR0 as u64), W, Some(BAR0));
    go(cfg(reg::BAR0 as u64 + 4), W, Some(0));
    go(cfg(reg::COMMAND as u64), H, Some(0x6));
    // NVMe VS through the 32-bit window: 1.4.0.
    assert_eq!(go(BAR0 + nreg::VS, W, None), 0x0001_0400);
    assert_eq!(go(virt::PIO_BASE, W, None), 0xffff_ffff);
    // One reset through the bus resets the root complex (once, by the ECAM window).
    bus.reset_all(&mut vdev::NullInterrupts);
    assert_eq!(rc.lock().decoded_bars().count(), 0);
    assert!(!bus.has_deferred_work());
}

/// A host that uses only MSI: the NVMe function asks for a vector per completion
/// queue, and the admin queue's completion arrives through MSI and the v2m frame.
#[test]
fn an_msi_only_host_gets_the_admin_completion_through_msi_and_v2m() {
    use crate::defs::msi_cap;
    let mut g = Guest::new();
    g.wr(cfg(reg::BAR0 as u64), W, BAR0);
    g.wr(cfg(reg::BAR0 as u64 + 4), W, 0);
    g.wr(cfg(reg::COMMAND as u64), H, 0x6);
    let mut at = g.rd(cfg(reg::CAPABILITIES_POINTER as u64), AccessSize::Byte);
    while g.rd(cfg(at), AccessSize::Byte) != u64::from(cap_id::MSI) {
        at = g.rd(cfg(at + 1), AccessSize::Byte);
        assert_ne!(at, 0, "no MSI capability");
    }
    let control = cfg(at + msi_cap::MESSAGE_CONTROL as u64);
    // 64-bit, Multiple Message Capable 1 (two vectors: admin and one I/O queue).
    assert_eq!(g.rd(control, H), 1 << 7 | 1 << 1);
    g.wr(
        cfg(at + msi_cap::ADDRESS as u64),
        W,
        FRAME + vgic::v2m::reg::MSI_SETSPI_NS,
    );
    g.wr(cfg(at + msi_cap::UPPER_ADDRESS as u64), W, 0);
    g.wr(cfg(at + msi_cap::DATA as u64), H, u64::from(SPI));
    g.wr(control, H, 1);
    assert_eq!(g.enable() & 0b11, 0b01, "CSTS.RDY");
    let mut sqe = [0u8; 64];
    sqe[0] = admin::IDENTIFY;
    sqe[2..4].copy_from_slice(&9u16.to_le_bytes());
    sqe[24..32].copy_from_slice(&IDENTIFY_BUF.to_le_bytes());
    sqe[40..44].copy_from_slice(&1u32.to_le_bytes());
    g.mem.write(ASQ, &sqe).unwrap();
    assert!(!g.spi_pending());
    g.wr(BAR0 + nreg::DOORBELLS, W, 1);
    if g.rc.has_work() {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut g.mem,
            irq: &mut g.vgic,
        };
        g.rc.poll(&mut ctx);
    }
    assert_eq!(g.mem.read_u32(ACQ + 12).unwrap() & 0xffff, 9, "command ID");
    assert!(g.spi_pending(), "vector 0 reached SPI {SPI} through MSI");
    assert_eq!(g.rc.dropped_messages(), 0);
}
