//! The virtio-PCI transport driven as Linux's virtio_pci (modern) drives it:
//! found by vendor and device ID through ECAM, its vendor capabilities walked,
//! BAR0 placed, MSI-X vectors mapped, features negotiated, a queue set up and a
//! request served with the queue's vector sent; and the hostile cases: bad queue
//! sizes, notifications that match no queue, vectors the table lacks and garbage
//! table entries, DMA with bus mastering off, wrong-width register accesses.

extern crate std;

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use std::sync::Mutex;

use vdev::{AccessSize, GuestMemory, InterruptSink, MmioContext, MmioError, VecMemory};
use virtio::defs::pci::{common, NO_VECTOR};
use virtio::defs::{blk, device_id, features, status};
use virtio::testing::MemDisk;
use virtio::{Blk, Console, EntropyError, EntropySource, Rng};

use crate::defs::{cap_id, msix_cap, reg, virt};
use crate::root::{Layout, MsiController, RootComplex, Window};
use crate::virtio::{class_of, VirtioFunction, BAR0_SIZE, MSIX_TABLE_OFFSET};

const RAM: Window = Window {
    base: 0x4000_0000,
    size: 0x1_0000,
};
const BAR0: u64 = virt::MMIO_BASE + 0x40_0000;
const DOORBELL: u64 = 0x0802_0040;
const DESC: u64 = RAM.base + 0x1000;
const AVAIL: u64 = RAM.base + 0x2000;
const USED: u64 = RAM.base + 0x3000;
const BUF: u64 = RAM.base + 0x4000;
const QSIZE: u16 = 8;
const B: AccessSize = AccessSize::Byte;
const H: AccessSize = AccessSize::Half;
const W: AccessSize = AccessSize::Word;
const D: AccessSize = AccessSize::Double;
const MSIX_ENABLE: u64 = 1 << 15;
/// Memory Space Enable, Bus Master Enable.
const MEM: u64 = 0x2;
const MEM_BM: u64 = 0x6;

/// The SPI device 1's INTA is swizzled onto.
fn inta() -> u32 {
    crate::intx_intid(&Layout::virt(false), 1, crate::defs::IntxPin::IntA)
}

#[derive(Clone, Default)]
struct Doorbell(Arc<Mutex<Vec<u32>>>);

impl MsiController for Doorbell {
    fn deliver(&mut self, address: u64, data: u32, _irq: &mut dyn InterruptSink) -> bool {
        if address != DOORBELL {
            return false;
        }
        self.0.lock().unwrap().push(data);
        true
    }
}

#[derive(Default)]
struct Lines(std::collections::BTreeMap<u32, bool>);

impl InterruptSink for Lines {
    fn set_level(&mut self, intid: u32, level: bool) {
        self.0.insert(intid, level);
    }
}

struct Counter(u8);

impl EntropySource for Counter {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        for b in buf {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
        Ok(())
    }
}

/// Where the vendor capabilities put each structure (offsets in BAR0).
#[derive(Debug, Default)]
struct Caps {
    common: u64,
    notify: u64,
    multiplier: u64,
    isr: u64,
    device: u64,
    /// Where the VIRTIO_PCI_CAP_PCI_CFG capability is in configuration space.
    pci_cfg: u64,
}

struct Guest {
    rc: RootComplex,
    mem: VecMemory,
    lines: Lines,
    msis: Doorbell,
    caps: Caps,
}

fn cfg(r: u64) -> u64 {
    virt::ECAM_BASE + (1 << 15) + r
}

fn disk() -> Blk<vdev::SyncBlock<MemDisk>> {
    let mut d = MemDisk::new(64, false);
    for (i, b) in d.data.iter_mut().enumerate() {
        *b = (i % 251) as u8;
    }
    Blk::new(vdev::SyncBlock(d))
}

impl Guest {
    fn with(f: Box<dyn crate::PciFunction + Send>) -> Guest {
        let mut rc = RootComplex::new(Layout::virt(false), &[RAM]).unwrap();
        rc.attach(1, f).unwrap();
        let msis = Doorbell::default();
        rc.set_msi_controller(Box::new(msis.clone()));
        Guest {
            rc,
            mem: VecMemory::new(RAM.base, RAM.size as usize),
            lines: Lines::default(),
            msis,
            caps: Caps::default(),
        }
    }
    fn blk() -> Guest {
        Self::with(Box::new(VirtioFunction::new(
            disk(),
            class_of(device_id::BLOCK),
        )))
    }
    fn access(&mut self, gpa: u64, size: AccessSize, write: Option<u64>) -> Result<u64, MmioError> {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut self.lines,
        };
        self.rc.access(&mut ctx, gpa, size, write)
    }
    fn rd(&mut self, gpa: u64, size: AccessSize) -> u64 {
        self.access(gpa, size, None).unwrap()
    }
    fn wr(&mut self, gpa: u64, size: AccessSize, v: u64) {
        self.access(gpa, size, Some(v)).unwrap();
    }
    fn common(&self, field: u64) -> u64 {
        BAR0 + self.caps.common + field
    }
    fn msis(&self) -> Vec<u32> {
        self.msis.0.lock().unwrap().clone()
    }
    fn status(&mut self) -> u64 {
        self.rd(self.common(common::DEVICE_STATUS), B)
    }
    /// Walks the capability list for MSI-X and the virtio structures.
    fn find_caps(&mut self) -> u64 {
        let mut msix = 0;
        let mut at = self.rd(cfg(reg::CAPABILITIES_POINTER as u64), B);
        while at != 0 {
            match self.rd(cfg(at), B) as u8 {
                cap_id::MSIX => msix = at,
                cap_id::VENDOR_SPECIFIC => {
                    assert_eq!(self.rd(cfg(at + 4), B), 0, "all in BAR0");
                    let off = self.rd(cfg(at + 8), W);
                    match self.rd(cfg(at + 3), B) {
                        1 => self.caps.common = off,
                        2 => {
                            self.caps.notify = off;
                            self.caps.multiplier = self.rd(cfg(at + 16), W);
                        }
                        3 => self.caps.isr = off,
                        4 => self.caps.device = off,
                        5 => self.caps.pci_cfg = at,
                        t => panic!("unexpected virtio capability type {t}"),
                    }
                }
                _ => {}
            }
            at = self.rd(cfg(at + 1), B);
        }
        assert_ne!(msix, 0, "no MSI-X capability");
        msix
    }
    /// Enumeration and BAR placement with `command`, MSI-X enabled with `vectors`
    /// entries aimed at the doorbell (data 100 + vector).
    fn bring_up(&mut self, command: u64, vectors: u64) {
        let msix = self.find_caps();
        self.wr(cfg(reg::BAR0 as u64), W, BAR0);
        self.wr(cfg(reg::BAR0 as u64 + 4), W, 0);
        self.wr(cfg(reg::COMMAND as u64), H, command);
        self.wr(cfg(msix + msix_cap::MESSAGE_CONTROL as u64), H, MSIX_ENABLE);
        for v in 0..vectors {
            let e = BAR0 + MSIX_TABLE_OFFSET + v * 16;
            self.wr(e, D, DOORBELL);
            self.wr(e + 8, W, 100 + v);
            self.wr(e + 12, W, 0);
        }
    }
    /// Reset, ACKNOWLEDGE | DRIVER, VERSION_1 negotiated, FEATURES_OK.
    fn negotiate(&mut self) {
        self.wr(self.common(common::DEVICE_STATUS), B, 0);
        let ad = u64::from(status::ACKNOWLEDGE | status::DRIVER);
        self.wr(self.common(common::DEVICE_STATUS), B, ad);
        self.wr(self.common(common::DEVICE_FEATURE_SELECT), W, 1);
        let hi = self.rd(self.common(common::DEVICE_FEATURE), W);
        assert_ne!(hi & 1, 0, "VERSION_1 offered");
        self.wr(self.common(common::DRIVER_FEATURE_SELECT), W, 1);
        self.wr(
            self.common(common::DRIVER_FEATURE),
            W,
            features::VERSION_1 >> 32,
        );
        let fo = ad | u64::from(status::FEATURES_OK);
        self.wr(self.common(common::DEVICE_STATUS), B, fo);
        assert_eq!(self.status(), fo);
    }
    /// Queue `q`: size, vector, ring addresses, enable.
    fn setup_queue(&mut self, q: u64, size: u16, vector: u16) {
        self.wr(self.common(common::QUEUE_SELECT), H, q);
        self.wr(self.common(common::QUEUE_SIZE), H, u64::from(size));
        self.wr(self.common(common::QUEUE_MSIX_VECTOR), H, u64::from(vector));
        // Low and high halves, as a 32-bit driver writes them.
        self.wr(self.common(common::QUEUE_DESC), W, DESC);
        self.wr(self.common(common::QUEUE_DESC) + 4, W, 0);
        self.wr(self.common(common::QUEUE_DRIVER), D, AVAIL);
        self.wr(self.common(common::QUEUE_DEVICE), D, USED);
        self.wr(self.common(common::QUEUE_ENABLE), H, 1);
    }
    fn driver_ok(&mut self) {
        let v = u64::from(
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
        self.wr(self.common(common::DEVICE_STATUS), B, v);
    }
    /// Everything up to DRIVER_OK with queue 0 on vector 1 and config on 0.
    fn started(command: u64) -> Guest {
        let mut g = Guest::blk();
        g.bring_up(command, 2);
        g.negotiate();
        g.setup_queue(0, QSIZE, 1);
        g.wr(g.common(common::CONFIG_MSIX_VECTOR), H, 0);
        g.driver_ok();
        g
    }
    fn desc(&mut self, i: u64, addr: u64, len: u32, flags: u16, next: u16) {
        let at = DESC + 16 * i;
        self.mem.write_u64(at, addr).unwrap();
        self.mem.write_u32(at + 8, len).unwrap();
        self.mem.write_u16(at + 12, flags).unwrap();
        self.mem.write_u16(at + 14, next).unwrap();
    }
    /// A virtio-blk read of `sector` into BUF + 0x100, chain head 0, published.
    fn post_read(&mut self, sector: u64) {
        self.mem.write_u32(BUF, blk::T_IN).unwrap();
        self.mem.write_u64(BUF + 8, sector).unwrap();
        self.desc(0, BUF, 16, 1, 1);
        self.desc(1, BUF + 0x100, 512, 1 | 2, 2);
        self.desc(2, BUF + 0x80, 1, 2, 0);
        let idx = self.mem.read_u16(AVAIL + 2).unwrap();
        self.mem
            .write_u16(AVAIL + 4 + 2 * u64::from(idx % QSIZE), 0)
            .unwrap();
        self.mem.write_u16(AVAIL + 2, idx.wrapping_add(1)).unwrap();
    }
    fn notify_at(&mut self, offset: u64) {
        let at = BAR0 + self.caps.notify + offset;
        self.wr(at, H, 0);
    }
    fn used_idx(&self) -> u16 {
        self.mem.read_u16(USED + 2).unwrap()
    }
}

#[test]
fn identity_and_capabilities_are_virtio_modern() {
    let mut g = Guest::blk();
    assert_eq!(g.rd(cfg(reg::VENDOR_ID as u64), H), 0x1af4);
    assert_eq!(g.rd(cfg(reg::DEVICE_ID as u64), H), 0x1042);
    assert_eq!(g.rd(cfg(reg::REVISION_ID as u64), B), 1);
    assert!(g.rd(cfg(reg::SUBSYSTEM_ID as u64), H) >= 0x40);
    // BAR0 is 64-bit, sized as the layout says.
    g.wr(cfg(reg::BAR0 as u64), W, 0xffff_ffff);
    g.wr(cfg(reg::BAR0 as u64 + 4), W, 0xffff_ffff);
    assert_eq!(
        g.rd(cfg(reg::BAR0 as u64), W),
        !(BAR0_SIZE - 1) & 0xffff_fff0 | 0x4
    );
    let msix = g.find_caps();
    // Four structures in distinct pages of BAR0, notify multiplier 4.
    let Caps {
        common,
        notify,
        multiplier,
        isr,
        device,
        pci_cfg,
    } = g.caps;
    assert_ne!(pci_cfg, 0, "the VIRTIO_PCI_CAP_PCI_CFG window");
    assert_eq!(g.rd(cfg(pci_cfg + 2), B), 20, "cap_len");
    let mut offs = [common, notify, isr, device];
    offs.sort_unstable();
    assert!(
        offs.windows(2).all(|w| w[1] - w[0] >= 0x1000),
        "{:?}",
        g.caps
    );
    assert_eq!(multiplier, 4);
    // One vector per queue plus the config vector: Table Size is N - 1.
    assert_eq!(g.rd(cfg(msix + 2), H) & 0x7ff, 1);
    // The capabilities are read-only.
    g.wr(cfg(msix + 12 + 8), W, 0x1234);
    g.find_caps();
    assert_eq!(g.caps.common, common);
    // The other device models behind the same transport.
    let mut rng = Guest::with(Box::new(VirtioFunction::new(
        Rng::new(Box::new(Counter(0))),
        class_of(device_id::ENTROPY),
    )));
    assert_eq!(rng.rd(cfg(reg::DEVICE_ID as u64), H), 0x1044);
    let mut con = Guest::with(Box::new(VirtioFunction::new(
        Console::new(Box::new(|_: &[u8]| {})),
        class_of(device_id::CONSOLE),
    )));
    assert_eq!(con.rd(cfg(reg::DEVICE_ID as u64), H), 0x1043);
    assert_eq!(con.rd(cfg(reg::REVISION_ID as u64), W) >> 8, 0x07_80_00);
}

#[test]
fn linux_style_bring_up_serves_a_read_with_the_queue_vector() {
    let mut g = Guest::blk();
    g.bring_up(MEM_BM, 2);
    assert_eq!(g.rd(g.common(common::NUM_QUEUES), H), 1);
    g.negotiate();
    // queue_size resets to the maximum; a vector the table has reads back.
    g.wr(g.common(common::QUEUE_SELECT), H, 0);
    assert_eq!(g.rd(g.common(common::QUEUE_SIZE), H), 256);
    assert_eq!(g.rd(g.common(common::QUEUE_NOTIFY_OFF), H), 0);
    g.setup_queue(0, QSIZE, 1);
    assert_eq!(g.rd(g.common(common::QUEUE_MSIX_VECTOR), H), 1);
    assert_eq!(g.rd(g.common(common::QUEUE_ENABLE), H), 1);
    assert_eq!(g.rd(g.common(common::QUEUE_DESC), D), DESC);
    assert_eq!(g.rd(g.common(common::QUEUE_DRIVER) + 4, W), 0);
    g.wr(g.common(common::CONFIG_MSIX_VECTOR), H, 0);
    assert_eq!(g.rd(g.common(common::CONFIG_MSIX_VECTOR), H), 0);
    g.driver_ok();
    // Capacity through the device-configuration structure: 64 sectors.
    let dev = BAR0 + g.caps.device;
    assert_eq!(g.rd(dev + blk::CFG_CAPACITY as u64, W), 64);
    assert_eq!(g.rd(dev + blk::CFG_CAPACITY as u64 + 4, W), 0);
    g.post_read(3);
    g.notify_at(0);
    assert_eq!(g.used_idx(), 1);
    assert_eq!(g.mem.read_u32(USED + 8).unwrap(), 513, "512 data + status");
    assert_eq!(g.mem.read_u8_at(BUF + 0x80), blk::S_OK);
    let mut data = [0u8; 4];
    g.mem.read(BUF + 0x100, &mut data).unwrap();
    let first = 3 * 512;
    assert_eq!(
        data,
        core::array::from_fn(|i| ((first + i) % 251) as u8),
        "sector 3 read back"
    );
    // The queue's vector, not the config one; no INTx with MSI-X on.
    assert_eq!(g.msis(), [101]);
    assert!(!g.lines.0.get(&inta()).copied().unwrap_or(false));
    // A reset zeroes the status and gives back the maximum size.
    g.wr(g.common(common::DEVICE_STATUS), B, 0);
    assert_eq!(g.status(), 0);
    assert_eq!(g.rd(g.common(common::QUEUE_SIZE), H), 256);
    assert_eq!(
        g.rd(g.common(common::QUEUE_MSIX_VECTOR), H),
        u64::from(NO_VECTOR)
    );
}

trait ReadU8 {
    fn read_u8_at(&self, gpa: u64) -> u8;
}

impl ReadU8 for VecMemory {
    fn read_u8_at(&self, gpa: u64) -> u8 {
        let mut b = [0u8];
        self.read(gpa, &mut b).unwrap();
        b[0]
    }
}

#[test]
fn without_msix_the_isr_and_inta_carry_the_interrupt() {
    let mut g = Guest::blk();
    g.find_caps();
    g.wr(cfg(reg::BAR0 as u64), W, BAR0);
    g.wr(cfg(reg::BAR0 as u64 + 4), W, 0);
    g.wr(cfg(reg::COMMAND as u64), H, MEM_BM);
    g.negotiate();
    g.setup_queue(0, QSIZE, NO_VECTOR);
    g.driver_ok();
    g.post_read(0);
    g.notify_at(0);
    assert_eq!(g.used_idx(), 1);
    assert!(g.msis().is_empty());
    assert_eq!(g.lines.0.get(&inta()), Some(&true));
    // Reading ISR returns the queue bit, clears it and lowers the line.
    let isr = BAR0 + g.caps.isr;
    assert_eq!(g.rd(isr, B), 1);
    assert_eq!(g.lines.0.get(&inta()), Some(&false));
    assert_eq!(g.rd(isr, B), 0);
}

#[test]
fn bad_queue_sizes_need_reset_and_reset_recovers() {
    for size in [0u16, 3, 512, 0xffff] {
        let mut g = Guest::blk();
        g.bring_up(MEM_BM, 2);
        g.negotiate();
        g.setup_queue(0, size, 1);
        assert_ne!(
            g.status() & u64::from(status::DEVICE_NEEDS_RESET),
            0,
            "size {size}"
        );
        assert_eq!(g.rd(g.common(common::QUEUE_ENABLE), H), 0);
        // Nothing is processed until reset; then the device works again.
        g.wr(g.common(common::DEVICE_STATUS), B, 0);
        assert_eq!(g.status(), 0);
        g.negotiate();
        g.setup_queue(0, QSIZE, 1);
        g.driver_ok();
        g.post_read(0);
        g.notify_at(0);
        assert_eq!(g.used_idx(), 1, "size {size}");
    }
    // Queue registers of an enabled queue are frozen; an absent queue reads 0.
    let mut g = Guest::started(MEM_BM);
    g.wr(g.common(common::QUEUE_SIZE), H, 4);
    assert_eq!(g.rd(g.common(common::QUEUE_SIZE), H), u64::from(QSIZE));
    g.wr(g.common(common::QUEUE_SELECT), H, 7);
    assert_eq!(g.rd(g.common(common::QUEUE_SIZE), H), 0);
    g.wr(g.common(common::QUEUE_ENABLE), H, 1);
    g.wr(g.common(common::QUEUE_DESC), D, 0x1234);
    assert_eq!(g.rd(g.common(common::QUEUE_DESC), D), 0);
    assert_eq!(g.status() & u64::from(status::DEVICE_NEEDS_RESET), 0);
}

#[test]
fn notifications_that_match_no_queue_are_ignored() {
    let mut g = Guest::started(MEM_BM);
    g.post_read(0);
    // Past the last queue, between two slots, at the far end of the region.
    for off in [4, 8, 2, 0xffe, 0xffc] {
        g.notify_at(off);
    }
    assert_eq!(g.used_idx(), 0);
    assert!(g.msis().is_empty());
    assert_eq!(g.status() & u64::from(status::DEVICE_NEEDS_RESET), 0);
    g.notify_at(0);
    assert_eq!(g.used_idx(), 1);
    // Wrong-width and unknown common-configuration accesses are refused; the
    // reserved tail of the structure's page reads 0.
    for (off, size) in [
        (common::DEVICE_STATUS, W),
        (common::QUEUE_SIZE, B),
        (common::DEVICE_FEATURE, D),
        (common::QUEUE_DESC + 2, H),
        (common::QUEUE_DESC + 4, D),
    ] {
        assert!(g.access(g.common(off), size, None).is_err(), "{off:#x}");
        assert!(g.access(g.common(off), size, Some(0)).is_err(), "{off:#x}");
    }
    assert_eq!(g.rd(g.common(common::SIZE + 4), W), 0);
    assert_eq!(g.rd(g.common(0x800), W), 0);
    assert_eq!(g.status() & u64::from(status::DEVICE_NEEDS_RESET), 0);
}

#[test]
fn vectors_past_the_table_and_garbage_entries_are_contained() {
    let mut g = Guest::blk();
    g.bring_up(MEM_BM, 2);
    g.negotiate();
    // Vector 2 does not exist (two vectors): read back as NO_VECTOR.
    g.setup_queue(0, QSIZE, 2);
    assert_eq!(
        g.rd(g.common(common::QUEUE_MSIX_VECTOR), H),
        u64::from(NO_VECTOR)
    );
    g.wr(g.common(common::CONFIG_MSIX_VECTOR), H, 0x7ff);
    assert_eq!(
        g.rd(g.common(common::CONFIG_MSIX_VECTOR), H),
        u64::from(NO_VECTOR)
    );
    g.wr(g.common(common::QUEUE_MSIX_VECTOR), H, 1);
    // Garbage in the queue's table entry: the message goes nowhere.
    let e = BAR0 + MSIX_TABLE_OFFSET + 16;
    g.wr(e, W, 0xdead_beef);
    g.wr(e + 4, W, 0xffff_ffff);
    g.wr(e + 8, W, 0xffff_ffff);
    g.wr(e + 12, W, 0xffff_fffe);
    g.driver_ok();
    g.post_read(0);
    g.notify_at(0);
    assert_eq!(g.used_idx(), 1, "the device still works");
    assert!(g.msis().is_empty());
    assert_eq!(g.rc.dropped_messages(), 1);
    assert_eq!(g.mem.read_u32(RAM.base).unwrap(), 0);
    // Fixed, the next completion signals.
    g.wr(e, D, DOORBELL);
    g.wr(e + 8, W, 101);
    g.post_read(1);
    g.notify_at(0);
    assert_eq!(g.msis(), [101]);
}

#[test]
fn dma_with_bus_mastering_off_needs_reset_and_touches_nothing() {
    // Queue enable reads the rings: refused without Bus Master Enable.
    let mut g = Guest::blk();
    g.bring_up(MEM, 2);
    g.negotiate();
    g.setup_queue(0, QSIZE, 1);
    assert_ne!(g.status() & u64::from(status::DEVICE_NEEDS_RESET), 0);
    // Bus mastering turned off after DRIVER_OK: the request is not served, the
    // config vector waits for bus mastering, RAM is untouched.
    let mut g = Guest::started(MEM_BM);
    g.post_read(2);
    let before = g.mem.as_bytes().to_vec();
    g.wr(cfg(reg::COMMAND as u64), H, MEM);
    g.notify_at(0);
    assert_eq!(g.mem.as_bytes(), &before[..]);
    assert_ne!(g.status() & u64::from(status::DEVICE_NEEDS_RESET), 0);
    assert!(g.msis().is_empty());
    g.wr(cfg(reg::COMMAND as u64), H, MEM_BM);
    assert_eq!(
        g.msis(),
        [100],
        "the config-change vector, once bus mastering is back"
    );
    assert_eq!(g.used_idx(), 0);
}

#[test]
fn vm_reset_returns_the_function_to_power_on() {
    let mut g = Guest::started(MEM_BM);
    g.post_read(0);
    g.notify_at(0);
    let mut lines = Lines::default();
    g.rc.reset(&mut lines);
    // Configuration space back to reset: BAR unplaced, so decode BAR0 again.
    g.bring_up(MEM_BM, 2);
    assert_eq!(g.status(), 0);
    assert_eq!(g.rd(g.common(common::CONFIG_GENERATION), B), 0);
    assert_eq!(g.rd(g.common(common::QUEUE_ENABLE), H), 0);
    assert_eq!(g.rd(g.common(common::QUEUE_SIZE), H), 256);
    assert_eq!(
        g.rd(g.common(common::CONFIG_MSIX_VECTOR), H),
        u64::from(NO_VECTOR)
    );
}

#[test]
fn malformed_vendor_capabilities_are_refused() {
    use crate::function::PciFunction;
    use crate::{ConfigSpace, SpecError};
    let f = VirtioFunction::new(disk(), class_of(device_id::BLOCK));
    let spec = f.spec();
    let caps = f.vendor_capabilities();
    assert!(ConfigSpace::with_vendor_caps(&spec, &caps).is_ok());
    let mut short = caps.clone();
    short[0][2] = 8;
    let too_many: Vec<Vec<u8>> = caps.iter().cycle().take(16).cloned().collect();
    for bad in [short, too_many, alloc::vec![alloc::vec![0u8; 2]]] {
        assert_eq!(
            ConfigSpace::with_vendor_caps(&spec, &bad).err(),
            Some(SpecError::VendorCapability)
        );
    }
}

/// The rng and console models serve requests over PCI exactly as over MMIO.
#[test]
fn rng_and_console_models_run_over_pci() {
    // virtio-rng: one device-writable buffer filled from the source.
    let mut g = Guest::with(Box::new(VirtioFunction::new(
        Rng::new(Box::new(Counter(0))),
        class_of(device_id::ENTROPY),
    )));
    g.bring_up(MEM_BM, 2);
    g.negotiate();
    g.setup_queue(0, QSIZE, 1);
    g.driver_ok();
    g.desc(0, BUF, 16, 2, 0);
    g.mem.write_u16(AVAIL + 4, 0).unwrap();
    g.mem.write_u16(AVAIL + 2, 1).unwrap();
    g.notify_at(0);
    assert_eq!(g.used_idx(), 1);
    let mut got = [0u8; 16];
    g.mem.read(BUF, &mut got).unwrap();
    assert_eq!(got, core::array::from_fn(|i| i as u8 + 1));
    assert_eq!(g.msis(), [101]);

    // virtio-console: transmitq (queue 1, notified at 1 * multiplier) on vector 2.
    let out = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&out);
    let mut g = Guest::with(Box::new(VirtioFunction::new(
        Console::new(Box::new(move |b: &[u8]| {
            sink.lock().unwrap().extend_from_slice(b)
        })),
        class_of(device_id::CONSOLE),
    )));
    g.bring_up(MEM_BM, 3);
    assert_eq!(g.rd(g.common(common::NUM_QUEUES), H), 2);
    g.negotiate();
    g.setup_queue(1, QSIZE, 2);
    assert_eq!(g.rd(g.common(common::QUEUE_NOTIFY_OFF), H), 1);
    g.driver_ok();
    g.mem.write(BUF, b"hello over pci").unwrap();
    g.desc(0, BUF, 14, 0, 0);
    g.mem.write_u16(AVAIL + 4, 0).unwrap();
    g.mem.write_u16(AVAIL + 2, 1).unwrap();
    g.notify_at(g.caps.multiplier);
    assert_eq!(g.used_idx(), 1);
    assert_eq!(&out.lock().unwrap()[..], b"hello over pci");
    assert_eq!(g.msis(), [102]);
}

/// The function driven directly (no root complex): MSI-X always deliverable.
#[derive(Default)]
struct Irq {
    sent: Vec<u16>,
    intx: bool,
}

impl crate::FunctionIrq for Irq {
    fn msix_enabled(&self) -> bool {
        true
    }
    fn msix(&mut self, vector: u16) {
        self.sent.push(vector);
    }
    fn set_intx(&mut self, level: bool) {
        self.intx = level;
    }
}

type BlkFn = VirtioFunction<Blk<vdev::SyncBlock<MemDisk>>>;

fn blk_fn() -> BlkFn {
    VirtioFunction::new(disk(), class_of(device_id::BLOCK))
}

/// A guest of one function: its memory persists across save/restore.
struct Direct {
    mem: VecMemory,
    irq: Irq,
}

impl Direct {
    fn new() -> Direct {
        Direct {
            mem: VecMemory::new(RAM.base, RAM.size as usize),
            irq: Irq::default(),
        }
    }
    fn wr(&mut self, f: &mut BlkFn, off: u64, size: AccessSize, v: u64) {
        use crate::PciFunction;
        let mut ctx = crate::FunctionContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut self.irq,
        };
        f.bar_write(&mut ctx, 0, off, size, v).unwrap();
    }
    fn rd(&mut self, f: &mut BlkFn, off: u64, size: AccessSize) -> u64 {
        use crate::PciFunction;
        let mut ctx = crate::FunctionContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut self.irq,
        };
        f.bar_read(&mut ctx, 0, off, size).unwrap()
    }
    /// Bring-up to DRIVER_OK with queue 0 (size 8) on vector 1, config on 0.
    fn start(&mut self, f: &mut BlkFn) {
        use crate::virtio::COMMON_OFFSET as C;
        let s = |st: u32| u64::from(st);
        self.wr(f, C + common::DEVICE_STATUS, B, 0);
        self.wr(
            f,
            C + common::DEVICE_STATUS,
            B,
            s(status::ACKNOWLEDGE | status::DRIVER),
        );
        self.wr(f, C + common::DRIVER_FEATURE_SELECT, W, 1);
        self.wr(f, C + common::DRIVER_FEATURE, W, features::VERSION_1 >> 32);
        let fo = status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK;
        self.wr(f, C + common::DEVICE_STATUS, B, s(fo));
        self.wr(f, C + common::QUEUE_SIZE, H, u64::from(QSIZE));
        self.wr(f, C + common::QUEUE_MSIX_VECTOR, H, 1);
        self.wr(f, C + common::QUEUE_DESC, D, DESC);
        self.wr(f, C + common::QUEUE_DRIVER, D, AVAIL);
        self.wr(f, C + common::QUEUE_DEVICE, D, USED);
        self.wr(f, C + common::QUEUE_ENABLE, H, 1);
        self.wr(f, C + common::CONFIG_MSIX_VECTOR, H, 0);
        self.wr(f, C + common::DEVICE_STATUS, B, s(fo | status::DRIVER_OK));
    }
    /// A read of `sector` published as avail entry `n` (head 0) and notified.
    fn read_sector(&mut self, f: &mut BlkFn, sector: u64, n: u16) {
        self.mem.write_u32(BUF, blk::T_IN).unwrap();
        self.mem.write_u64(BUF + 8, sector).unwrap();
        for (i, (addr, len, flags, next)) in [
            (BUF, 16u32, 1u16, 1u16),
            (BUF + 0x100, 512, 3, 2),
            (BUF + 0x80, 1, 2, 0),
        ]
        .into_iter()
        .enumerate()
        {
            let at = DESC + 16 * i as u64;
            self.mem.write_u64(at, addr).unwrap();
            self.mem.write_u32(at + 8, len).unwrap();
            self.mem.write_u16(at + 12, flags).unwrap();
            self.mem.write_u16(at + 14, next).unwrap();
        }
        self.mem
            .write_u16(AVAIL + 4 + 2 * u64::from(n % QSIZE), 0)
            .unwrap();
        self.mem.write_u16(AVAIL + 2, n + 1).unwrap();
        self.wr(f, crate::virtio::NOTIFY_OFFSET, H, 0);
    }
}

fn drive_blk_fn(f: &mut BlkFn) {
    let mut d = Direct::new();
    d.start(f);
    d.read_sector(f, 1, 0);
}

fn probe_blk_fn(f: &mut BlkFn) -> Vec<u64> {
    use crate::virtio::{COMMON_OFFSET as C, DEVICE_OFFSET};
    let mut d = Direct::new();
    let mut out = Vec::new();
    for (off, size) in [
        (C + common::DEVICE_STATUS, B),
        (C + common::CONFIG_GENERATION, B),
        (C + common::CONFIG_MSIX_VECTOR, H),
        (C + common::QUEUE_SIZE, H),
        (C + common::QUEUE_MSIX_VECTOR, H),
        (C + common::QUEUE_ENABLE, H),
        (C + common::QUEUE_DESC, D),
        (C + common::QUEUE_DRIVER, D),
        (C + common::QUEUE_DEVICE, D),
        (C + common::DRIVER_FEATURE, W),
        (DEVICE_OFFSET + blk::CFG_CAPACITY as u64, D),
    ] {
        out.push(d.rd(f, off, size));
    }
    out
}

vdev::save_restore_tests!(
    virtio_pci_saved_state,
    make: blk_fn,
    drive: drive_blk_fn,
    probe: probe_blk_fn,
);

#[test]
fn a_running_function_continues_after_restore() {
    use vdev::SaveRestore;
    let mut d = Direct::new();
    let mut f = blk_fn();
    d.start(&mut f);
    d.read_sector(&mut f, 1, 0);
    assert_eq!(d.irq.sent, [1]);
    let blob = f.save();
    let mut g = blk_fn();
    g.restore(&blob).unwrap();
    // The restored function serves the next request from where the ring was.
    d.read_sector(&mut g, 2, 1);
    assert_eq!(d.mem.read_u16(USED + 2).unwrap(), 2);
    assert_eq!(d.irq.sent, [1, 1]);
    let mut b = [0u8; 1];
    d.mem.read(BUF + 0x100, &mut b).unwrap();
    assert_eq!(b[0], ((2 * 512) % 251) as u8);
    // A blob with a vector past the table or reserved ISR bits is refused.
    let mut bad = blob.clone();
    bad[vdev::save::HEADER_LEN] = 0x55;
    assert!(blk_fn().restore(&bad).is_err());
    let isr_at = vdev::save::HEADER_LEN + 2 + 4 + 2;
    let mut bad = blob;
    bad[isr_at] = 0x80;
    assert!(blk_fn().restore(&bad).is_err());
}

/// The VIRTIO_PCI_CAP_PCI_CFG window's fields (virtio 1.2 §4.1.4.9).
mod window {
    pub const BAR: u64 = 4;
    pub const OFFSET: u64 = 8;
    pub const LENGTH: u64 = 12;
    pub const DATA: u64 = 16;
}

impl Guest {
    /// Points the window at `length` bytes at `offset` of BAR `bar`.
    fn aim(&mut self, bar: u64, offset: u64, length: u64) {
        let at = self.caps.pci_cfg;
        self.wr(cfg(at + window::BAR), B, bar);
        self.wr(cfg(at + window::OFFSET), W, offset);
        self.wr(cfg(at + window::LENGTH), W, length);
    }
    fn window_read(&mut self) -> u64 {
        self.rd(cfg(self.caps.pci_cfg + window::DATA), W)
    }
    fn window_write(&mut self, v: u64) {
        self.wr(cfg(self.caps.pci_cfg + window::DATA), W, v);
    }
}

#[test]
fn the_pci_cfg_window_reaches_the_structures_without_the_bar_placed() {
    let mut g = Guest::blk();
    g.find_caps();
    let (common_at, device_at, isr_at) = (g.caps.common, g.caps.device, g.caps.isr);
    // BAR0 not placed, Memory Space off: only the window reaches the device.
    g.aim(0, common_at + common::NUM_QUEUES, 2);
    assert_eq!(g.window_read() & 0xffff, 1, "num_queues of virtio-blk");
    // A driver negotiates through the window alone.
    g.aim(0, common_at + common::DEVICE_STATUS, 1);
    g.window_write(0);
    let ad = u64::from(status::ACKNOWLEDGE | status::DRIVER);
    g.window_write(ad);
    assert_eq!(g.window_read() & 0xff, ad);
    g.aim(0, common_at + common::DEVICE_FEATURE_SELECT, 4);
    g.window_write(1);
    g.aim(0, common_at + common::DEVICE_FEATURE, 4);
    assert_ne!(g.window_read() & 1, 0, "VERSION_1 offered");
    // Device configuration: the disk's capacity in sectors (low word).
    g.aim(0, device_at + blk::CFG_CAPACITY as u64, 4);
    assert_eq!(g.window_read(), 64, "MemDisk::new(64, ..)");
    // The ISR structure, one byte.
    g.aim(0, isr_at, 1);
    assert_eq!(g.window_read() & 0xff, 0);
    // The same register through the placed BAR agrees.
    g.wr(cfg(reg::BAR0 as u64), W, BAR0);
    g.wr(cfg(reg::BAR0 as u64 + 4), W, 0);
    g.wr(cfg(reg::COMMAND as u64), H, MEM);
    assert_eq!(g.status(), ad);
    // The window's fields are writable and read back; its header is not.
    let at = g.caps.pci_cfg;
    assert_eq!(g.rd(cfg(at + window::OFFSET), W), isr_at);
    assert_eq!(g.rd(cfg(at + window::LENGTH), W), 1);
    g.wr(cfg(at + 2), H, 0xffff);
    assert_eq!(g.rd(cfg(at + 2), H), 20 | 5 << 8, "cap_len and cfg_type");
}

#[test]
fn pci_cfg_window_accesses_outside_the_structures_are_refused() {
    let mut g = Guest::blk();
    g.bring_up(MEM_BM, 2);
    let common_at = g.caps.common;
    let sentinel = 0x5a5a_5a5a;
    // A window on device_status to see what refused writes did not do.
    let status_now = |g: &mut Guest| g.rd(g.common(common::DEVICE_STATUS), B);
    g.wr(g.common(common::DEVICE_STATUS), B, 0);
    let bad: [(u64, u64, u64, &str); 9] = [
        (0, common_at + common::DEVICE_STATUS, 3, "length 3"),
        (0, common_at + common::DEVICE_STATUS, 0, "length 0"),
        (0, common_at + common::DEVICE_STATUS, 8, "length 8"),
        (0, common_at + common::DEVICE_STATUS + 1, 2, "unaligned"),
        (
            1,
            common_at + common::DEVICE_STATUS,
            1,
            "BAR 1 is BAR0's upper half",
        ),
        (3, 0, 4, "no BAR 3"),
        (0, MSIX_TABLE_OFFSET + 8, 4, "the MSI-X table"),
        (0, common_at + 0x800, 4, "between structures"),
        (0, 0xffff_fffc, 4, "past the BAR"),
    ];
    for (bar, offset, length, what) in bad {
        g.aim(bar, offset, length);
        g.window_write(sentinel);
        assert_eq!(status_now(&mut g), 0, "{what}: nothing written");
        assert_eq!(g.window_read(), sentinel, "{what}: nothing read");
    }
    // The MSI-X table entry the window aimed at keeps its data.
    assert_eq!(g.rd(BAR0 + MSIX_TABLE_OFFSET + 8, W), 100);
    // An ISR read that would run past its one byte.
    g.aim(0, g.caps.isr, 2);
    g.window_write(sentinel);
    assert_eq!(g.window_read(), sentinel);
    // Aimed right again, it works.
    g.aim(0, common_at + common::DEVICE_STATUS, 1);
    g.window_write(u64::from(status::ACKNOWLEDGE));
    assert_eq!(status_now(&mut g), u64::from(status::ACKNOWLEDGE));
    // The read fills the data field's first byte (the rest is what was written).
    assert_eq!(g.window_read(), u64::from(status::ACKNOWLEDGE));
    g.wr(cfg(g.caps.pci_cfg + window::DATA + 2), H, 0xabcd);
    assert_eq!(
        g.window_read(),
        0xabcd_0000 | u64::from(status::ACKNOWLEDGE),
        "a write of the data field's upper half wrote byte 0 (length 1) again"
    );
    assert_eq!(status_now(&mut g), u64::from(status::ACKNOWLEDGE));
}
