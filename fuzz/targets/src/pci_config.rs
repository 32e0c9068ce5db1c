//! `pci_config`: the PCIe root complex (`virt`'s layout, the host bridge and two
//! test functions with a 32-bit BAR, a 64-bit BAR holding the MSI-X table and PBA,
//! and an INTx pin) driven by ECAM accesses of any device, register, width and
//! value (on bus 0 and beyond), accesses anywhere in the memory and I/O windows,
//! BAR placements as an OS writes them (over RAM, over each other, in and out of
//! the windows), functions doing DMA, raising MSI-X vectors and INTx, and resets.
//!
//! Invariants: reads carry no bits outside the access; decoded BARs lie inside a
//! window their type may use, belong to functions with Memory Space Enable and
//! never overlap; guest RAM changes only by a DMA of a function with Bus Master
//! Enable, at its target; messages reach the MSI controller only from a function
//! with MSI-X enabled, unmasked and bus mastering, with the data of an unmasked
//! table entry; the INTx SPIs are the wired OR of the functions' levels under
//! Interrupt Disable and MSI-X Enable, and Status.Interrupt Status follows the
//! level; read-only identity registers never change.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arbitrary::{Arbitrary, Unstructured};
use pci::defs::{msix_cap, reg, virt, IntxPin, BAR_COUNT, COMMAND};
use pci::{
    intx_intid, BarSpec, FunctionContext, FunctionSpec, Identity, Layout, MsiController, MsixSpec,
    PciFunction, RootComplex, Window,
};
use vdev::{AccessSize, InterruptSink, MmioContext, MmioError, VecMemory};

use crate::Encoder;

const RAM: Window = Window {
    base: 0x4000_0000,
    size: 0x1_0000,
};
/// The MSI controller's doorbell (where a GICv2m frame's MSI_SETSPI_NS is).
const DOORBELL: u64 = 0x0802_0040;
/// Device numbers of the two test functions.
const DEVICES: [u8; 2] = [1, 4];
const VECTORS: u16 = 5;
const BAR0_SIZE: u64 = 0x1000;
const BAR2_SIZE: u64 = 0x2000;
const PBA_OFFSET: u64 = 0x1000;

/// Test function registers in BAR0.
mod probe {
    pub const DMA: u64 = 0x0;
    pub const RAISE: u64 = 0x8;
    pub const INTX: u64 = 0x10;
}

/// What the harness can see of a test function from outside.
#[derive(Default)]
struct Seen {
    intx: bool,
    dma_refused: u32,
    /// Targets of DMA writes that went through, since the last check.
    dma_done: Vec<u64>,
}

struct Probe(Arc<Mutex<Seen>>);

impl PciFunction for Probe {
    fn spec(&self) -> FunctionSpec {
        let mut bars = [None; BAR_COUNT];
        bars[0] = Some(BarSpec {
            size: BAR0_SIZE,
            is_64bit: false,
            prefetchable: false,
        });
        bars[2] = Some(BarSpec {
            size: BAR2_SIZE,
            is_64bit: true,
            prefetchable: false,
        });
        FunctionSpec {
            identity: Identity {
                vendor_id: 0x1234,
                device_id: 0x5678,
                revision_id: 1,
                class: pci::defs::class::NVME,
                subsystem_vendor_id: 0,
                subsystem_id: 0,
            },
            bars,
            msix: Some(MsixSpec {
                vectors: VECTORS,
                table_bar: 2,
                table_offset: 0,
                pba_bar: 2,
                pba_offset: PBA_OFFSET,
            }),
            intx: Some(IntxPin::IntA),
            pcie: true,
        }
    }
    fn bar_read(
        &mut self,
        _ctx: &mut FunctionContext,
        _bar: u8,
        _offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        Ok(0x5a5a_5a5a_5a5a_5a5a & size.mask())
    }
    fn bar_write(
        &mut self,
        ctx: &mut FunctionContext,
        bar: u8,
        offset: u64,
        _size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        match (bar, offset) {
            (0, probe::DMA) => {
                let ok = ctx.mem.write_u64(value, value).is_ok();
                let mut seen = self.0.lock().unwrap();
                if ok {
                    seen.dma_done.push(value);
                } else {
                    seen.dma_refused += 1;
                }
            }
            (0, probe::RAISE) => ctx.irq.msix(value as u16),
            (0, probe::INTX) => {
                self.0.lock().unwrap().intx = value & 1 != 0;
                ctx.irq.set_intx(value & 1 != 0);
            }
            _ => {}
        }
        Ok(())
    }
    fn reset(&mut self) {
        self.0.lock().unwrap().intx = false;
    }
    fn save(&self) -> Vec<u8> {
        // What it records is the harness's observation, not device state.
        Vec::new()
    }
    fn restore(&mut self, blob: &[u8]) -> Result<(), vdev::RestoreError> {
        if blob.is_empty() {
            Ok(())
        } else {
            Err(vdev::RestoreError::Malformed)
        }
    }
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
struct Lines(BTreeMap<u32, bool>);

impl InterruptSink for Lines {
    fn set_level(&mut self, intid: u32, level: bool) {
        assert!(
            (35..39).contains(&intid),
            "INTID {intid} is not an INTx SPI"
        );
        self.0.insert(intid, level);
    }
}

/// Where a window access goes.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Target {
    Mmio32(u32),
    Mmio64(u32),
    Pio(u16),
    /// Near a test function's BAR (its programmed address plus an offset).
    Bar {
        dev: bool,
        bar: bool,
        offset: u16,
    },
}

#[derive(Arbitrary, Debug)]
enum Op {
    ConfigRead {
        ecam: u32,
        size: u8,
    },
    ConfigWrite {
        ecam: u32,
        size: u8,
        value: u32,
    },
    /// A configuration access to a test function's header or capabilities.
    FnConfig {
        dev: bool,
        reg: u8,
        size: u8,
        value: u32,
        write: bool,
    },
    Window {
        to: Target,
        size: u8,
        value: u64,
        write: bool,
    },
    /// BAR `bar` of a test function placed at `addr` (both halves for BAR2).
    Place {
        dev: bool,
        bar: bool,
        addr: u64,
    },
    Command {
        dev: bool,
        value: u16,
    },
    MsixControl {
        dev: bool,
        enable: bool,
        mask: bool,
    },
    /// A table entry written with one QWORD and two DWORDs.
    Vector {
        dev: bool,
        vector: u8,
        doorbell: bool,
        address: u64,
        data: u32,
        masked: bool,
    },
    Raise {
        dev: bool,
        vector: u16,
    },
    Intx {
        dev: bool,
        level: bool,
    },
    Dma {
        dev: bool,
        offset: u16,
        raw: Option<u64>,
    },
    Reset,
}

struct Harness {
    rc: RootComplex,
    mem: VecMemory,
    lines: Lines,
    msis: Doorbell,
    seen: [Arc<Mutex<Seen>>; 2],
}

fn cfg_addr(device: u8, reg: u64) -> u64 {
    virt::ECAM_BASE + (u64::from(device) << 15) + reg
}

impl Harness {
    fn new() -> Harness {
        let mut rc = RootComplex::new(Layout::virt(false), &[RAM]).expect("virt layout");
        let seen = [Arc::default(), Arc::default()];
        for (d, s) in DEVICES.iter().zip(&seen) {
            rc.attach(*d, Box::new(Probe(Arc::clone(s))))
                .expect("probe attaches");
        }
        let msis = Doorbell::default();
        rc.set_msi_controller(Box::new(msis.clone()));
        Harness {
            rc,
            mem: VecMemory::new(RAM.base, RAM.size as usize),
            lines: Lines::default(),
            msis,
            seen,
        }
    }

    fn access(&mut self, gpa: u64, size: AccessSize, write: Option<u64>) -> Option<u64> {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut self.lines,
        };
        let v = self.rc.access(&mut ctx, gpa, size, write).ok()?;
        if write.is_none() {
            assert_eq!(v & !size.mask(), 0, "read of {gpa:#x} too wide");
        }
        Some(v)
    }

    fn cfg(&mut self, dev: u8, reg: u64, size: AccessSize) -> u64 {
        self.access(cfg_addr(dev, reg), size, None)
            .expect("aligned config read")
    }

    fn msix_cap(&mut self, dev: u8) -> u64 {
        let mut at = self.cfg(dev, reg::CAPABILITIES_POINTER as u64, AccessSize::Byte);
        for _ in 0..4 {
            if self.cfg(dev, at, AccessSize::Byte) == u64::from(pci::defs::cap_id::MSIX) {
                return at;
            }
            at = self.cfg(dev, at + 1, AccessSize::Byte);
        }
        panic!("the MSI-X capability is not on the list");
    }

    fn bar_base(&mut self, dev: u8, bar: usize) -> u64 {
        let lo = self.cfg(dev, (reg::BAR0 + 4 * bar) as u64, AccessSize::Word);
        let hi = if bar == 2 {
            self.cfg(dev, (reg::BAR0 + 12) as u64, AccessSize::Word)
        } else {
            0
        };
        (lo & !0xf) | hi << 32
    }

    fn check(&mut self, ram_before: &[u8], msis_before: usize) {
        // Decoded BARs.
        let decoded: Vec<_> = self.rc.decoded_bars().collect();
        let l = *self.rc.layout();
        for (i, (dev, bar, w)) in decoded.iter().enumerate() {
            let c = self.rc.config(*dev).expect("decoded device exists");
            assert!(c.command().is_set(COMMAND::MEMORY_SPACE_ENABLE));
            let in32 = w.base >= l.mmio32.base && w.base + w.size <= l.mmio32.end();
            let in64 = l
                .mmio64
                .is_some_and(|m| w.base >= m.base && w.base + w.size <= m.end());
            assert!(in32 || (*bar == 2 && in64), "BAR {w:?} outside its windows");
            for (_, _, o) in &decoded[i + 1..] {
                assert!(
                    w.base + w.size <= o.base || o.base + o.size <= w.base,
                    "{w:?} overlaps {o:?}"
                );
            }
        }
        // RAM changes only by a DMA that went through, at its target, from a
        // function with bus mastering on.
        let mut targets = Vec::new();
        for (d, s) in DEVICES.iter().zip(&self.seen) {
            let done = std::mem::take(&mut s.lock().unwrap().dma_done);
            if !done.is_empty() {
                let c = self.rc.config(*d).expect("device");
                assert!(
                    c.command().is_set(COMMAND::BUS_MASTER_ENABLE),
                    "DMA without bus mastering"
                );
            }
            targets.extend(done);
        }
        let now = self.mem.as_bytes();
        if ram_before != now {
            for (i, (a, b)) in ram_before.iter().zip(now).enumerate() {
                let gpa = RAM.base + i as u64;
                assert!(
                    a == b
                        || targets
                            .iter()
                            .any(|&t| (t..t.saturating_add(8)).contains(&gpa)),
                    "RAM byte {i:#x} changed outside a DMA's target"
                );
            }
        }
        // Messages: only from functions allowed to send.
        let msis = self.msis.0.lock().unwrap().len();
        if msis > msis_before {
            let any = DEVICES.iter().any(|d| {
                let c = self.rc.config(*d).expect("device");
                c.msix_unmasked() && c.command().is_set(COMMAND::BUS_MASTER_ENABLE)
            });
            assert!(any, "a message from a function that may not send");
        }
        // INTx: wired OR under Interrupt Disable and MSI-X Enable.
        let mut want: BTreeMap<u32, bool> = BTreeMap::new();
        for (d, s) in DEVICES.iter().zip(&self.seen) {
            let level = s.lock().unwrap().intx;
            let c = self.rc.config(*d).expect("device");
            let status = c
                .read(reg::STATUS as u64, AccessSize::Half)
                .expect("status");
            assert_eq!(status & (1 << 3) != 0, level, "Interrupt Status");
            let on = level && !c.command().is_set(COMMAND::INTERRUPT_DISABLE) && !c.msix_enabled();
            let e = want.entry(intx_intid(&l, *d, IntxPin::IntA)).or_default();
            *e |= on;
        }
        for (intid, level) in want {
            assert_eq!(
                self.lines.0.get(&intid).copied().unwrap_or(false),
                level,
                "INTx line {intid}"
            );
        }
        // Identity is read-only.
        for d in DEVICES {
            assert_eq!(self.cfg(d, 0, AccessSize::Word), 0x5678_1234);
        }
        assert_eq!(self.cfg(0, 0, AccessSize::Word), 0x0008_1b36);
    }

    fn op(&mut self, op: Op) {
        let ram_before = self.mem.as_bytes().to_vec();
        let msis_before = self.msis.0.lock().unwrap().len();
        let dev_of = |d: bool| DEVICES[usize::from(d)];
        match op {
            Op::ConfigRead { ecam, size } => {
                let at = virt::ECAM_BASE + u64::from(ecam) % virt::ECAM_SIZE;
                self.access(at, crate::access_size(size), None);
            }
            Op::ConfigWrite { ecam, size, value } => {
                let at = virt::ECAM_BASE + u64::from(ecam) % virt::ECAM_SIZE;
                self.access(at, crate::access_size(size), Some(u64::from(value)));
            }
            Op::FnConfig {
                dev,
                reg,
                size,
                value,
                write,
            } => {
                let at = cfg_addr(dev_of(dev), u64::from(reg));
                self.access(
                    at,
                    crate::access_size(size),
                    write.then_some(u64::from(value)),
                );
            }
            Op::Window {
                to,
                size,
                value,
                write,
            } => {
                let at = match to {
                    Target::Mmio32(o) => virt::MMIO_BASE + u64::from(o) % virt::MMIO_SIZE,
                    Target::Mmio64(o) => virt::HIGH_MMIO_BASE + u64::from(o),
                    Target::Pio(o) => virt::PIO_BASE + u64::from(o) % virt::PIO_SIZE,
                    Target::Bar { dev, bar, offset } => {
                        let b = if bar { 2 } else { 0 };
                        self.bar_base(dev_of(dev), b) + u64::from(offset) % (BAR2_SIZE + 0x100)
                    }
                };
                self.access(at, crate::access_size(size), write.then_some(value));
            }
            Op::Place { dev, bar, addr } => {
                let d = dev_of(dev);
                let r = if bar { reg::BAR0 + 8 } else { reg::BAR0 } as u64;
                self.access(cfg_addr(d, r), AccessSize::Word, Some(addr & 0xffff_ffff));
                if bar {
                    self.access(cfg_addr(d, r + 4), AccessSize::Word, Some(addr >> 32));
                }
            }
            Op::Command { dev, value } => {
                let at = cfg_addr(dev_of(dev), reg::COMMAND as u64);
                self.access(at, AccessSize::Half, Some(u64::from(value)));
            }
            Op::MsixControl { dev, enable, mask } => {
                let d = dev_of(dev);
                let at = self.msix_cap(d) + msix_cap::MESSAGE_CONTROL as u64;
                let v = u64::from(enable) << 15 | u64::from(mask) << 14;
                self.access(cfg_addr(d, at), AccessSize::Half, Some(v));
            }
            Op::Vector {
                dev,
                vector,
                doorbell,
                address,
                data,
                masked,
            } => {
                let e = self.bar_base(dev_of(dev), 2) + u64::from(vector % 8) * 16;
                let address = if doorbell { DOORBELL } else { address };
                self.access(e, AccessSize::Double, Some(address));
                self.access(e + 8, AccessSize::Word, Some(u64::from(data)));
                self.access(e + 12, AccessSize::Word, Some(u64::from(masked)));
            }
            Op::Raise { dev, vector } => {
                let at = self.bar_base(dev_of(dev), 0) + probe::RAISE;
                self.access(at, AccessSize::Word, Some(u64::from(vector % 8)));
            }
            Op::Intx { dev, level } => {
                let at = self.bar_base(dev_of(dev), 0) + probe::INTX;
                self.access(at, AccessSize::Word, Some(u64::from(level)));
            }
            Op::Dma { dev, offset, raw } => {
                let gpa = raw.unwrap_or(RAM.base + u64::from(offset) % (RAM.size - 8));
                let at = self.bar_base(dev_of(dev), 0) + probe::DMA;
                self.access(at, AccessSize::Double, Some(gpa));
            }
            Op::Reset => {
                self.rc.reset(&mut self.lines);
            }
        }
        self.check(&ram_before, msis_before);
    }
}

pub fn run(data: &[u8]) {
    run_ops(data);
}

fn run_ops(data: &[u8]) -> Harness {
    let mut u = Unstructured::new(data);
    let mut h = Harness::new();
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        h.op(op);
    }
    h
}

/// `Op` variants, in declaration order.
mod op {
    pub const COUNT: u32 = 12;
    pub const FN_CONFIG: u32 = 2;
    pub const PLACE: u32 = 4;
    pub const COMMAND: u32 = 5;
    pub const MSIX_CONTROL: u32 = 6;
    pub const VECTOR: u32 = 7;
    pub const RAISE: u32 = 8;
    pub const INTX: u32 = 9;
    pub const DMA: u32 = 10;
    pub const RESET: u32 = 11;
}

/// An OS bringing both functions up: BARs placed, memory and bus mastering on,
/// MSI-X programmed; then the functions DMA, raise vectors and INTx.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut e = Encoder::default();
    // Probe the header of the first function, byte by byte.
    for r in 0..0x40u8 {
        e.variant(op::FN_CONFIG, op::COUNT)
            .bool(false)
            .u8(r)
            .u8(0)
            .u32(0)
            .bool(false);
    }
    for (i, dev) in [false, true].into_iter().enumerate() {
        let low = virt::MMIO_BASE + 0x10_0000 * (i as u64 + 1);
        let high = virt::HIGH_MMIO_BASE + 0x10_0000 * i as u64;
        e.variant(op::PLACE, op::COUNT)
            .bool(dev)
            .bool(false)
            .u64(low);
        e.variant(op::PLACE, op::COUNT)
            .bool(dev)
            .bool(true)
            .u64(high);
        e.variant(op::COMMAND, op::COUNT).bool(dev).u16(0x6);
        e.variant(op::MSIX_CONTROL, op::COUNT)
            .bool(dev)
            .bool(true)
            .bool(false);
        for v in 0..VECTORS as u8 {
            e.variant(op::VECTOR, op::COUNT)
                .bool(dev)
                .u8(v)
                .bool(true)
                .u64(0)
                .u32(80 + u32::from(v))
                .bool(false);
        }
        e.variant(op::RAISE, op::COUNT).bool(dev).u16(1);
        e.variant(op::DMA, op::COUNT).bool(dev).u16(0x100).u8(0);
    }
    let bring_up = e.0.clone();
    // Then: INTx after MSI-X is off, BARs overlapping, bus mastering off, reset.
    let mut e2 = Encoder(bring_up.clone());
    e2.variant(op::MSIX_CONTROL, op::COUNT)
        .bool(false)
        .bool(false)
        .bool(false);
    e2.variant(op::INTX, op::COUNT).bool(false).bool(true);
    e2.variant(op::PLACE, op::COUNT)
        .bool(true)
        .bool(false)
        .u64(virt::MMIO_BASE + 0x10_0000);
    e2.variant(op::PLACE, op::COUNT)
        .bool(false)
        .bool(false)
        .u64(RAM.base);
    e2.variant(op::COMMAND, op::COUNT).bool(true).u16(0x2);
    e2.variant(op::DMA, op::COUNT).bool(true).u16(0x200).u8(0);
    e2.variant(op::RESET, op::COUNT);
    vec![("bring-up", bring_up), ("misplaced-and-reset", e2.0)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdev::GuestMemory;

    #[test]
    fn the_seeds_reach_dma_msix_and_intx() {
        let seeds = seeds();
        let h = run_ops(&seeds[0].1);
        assert_eq!(
            *h.msis.0.lock().unwrap(),
            [81, 81],
            "vector 1 of each function"
        );
        assert_eq!(h.mem.read_u64(RAM.base + 0x100).unwrap(), RAM.base + 0x100);
        assert_eq!(h.rc.decoded_bars().count(), 4);
        let h = run_ops(&seeds[1].1);
        assert_eq!(
            h.seen[1].lock().unwrap().dma_refused,
            1,
            "bus mastering off"
        );
        assert_eq!(h.rc.decoded_bars().count(), 0, "after reset");
    }
}
