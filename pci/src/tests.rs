//! The root complex driven as an operating system's PCI core and a driver do:
//! enumerate through ECAM, size and place BARs, enable memory and bus mastering,
//! program MSI-X, take interrupts; and as a hostile guest does.

extern crate std;

use alloc::boxed::Box;
use alloc::vec::Vec;
use std::sync::{Arc, Mutex};

use vdev::{AccessSize, GuestMemory, InterruptSink, MmioContext, MmioError, VecMemory};

use crate::defs::{cap_id, class, msix_cap, reg, virt, IntxPin, BAR_COUNT};
use crate::function::{BarSpec, FunctionContext, FunctionSpec, Identity, MsixSpec, PciFunction};
use crate::root::{intx_intid, Layout, MsiController, RootComplex, RootError, Window};

const RAM: Window = Window {
    base: 0x4000_0000,
    size: 0x10_0000,
};

/// The test device's registers in BAR0.
pub(crate) mod probe {
    /// Scratch register.
    pub const SCRATCH: u64 = 0x0;
    /// Writing an address DMA-writes the scratch value there; the result (1 ok,
    /// 2 refused) is read back here.
    pub const DMA: u64 = 0x8;
    /// Writing N signals MSI-X vector N.
    pub const RAISE: u64 = 0x10;
    /// Writing 0/1 drives INTx.
    pub const INTX: u64 = 0x18;
    pub const BAR0_SIZE: u64 = 0x4000;
    pub const BAR2_SIZE: u64 = 0x1_0000;
    pub const VECTORS: u16 = 4;
    pub const PBA_OFFSET: u64 = 0x800;
}

#[derive(Default)]
pub(crate) struct Probe {
    scratch: u64,
    dma_result: u64,
    resets: u32,
}

impl PciFunction for Probe {
    fn spec(&self) -> FunctionSpec {
        let mut bars = [None; BAR_COUNT];
        bars[0] = Some(BarSpec {
            size: probe::BAR0_SIZE,
            is_64bit: false,
            prefetchable: false,
        });
        bars[2] = Some(BarSpec {
            size: probe::BAR2_SIZE,
            is_64bit: true,
            prefetchable: true,
        });
        FunctionSpec {
            identity: Identity {
                vendor_id: 0x1234,
                device_id: 0xabcd,
                revision_id: 2,
                class: class::NVME,
                subsystem_vendor_id: 0x1234,
                subsystem_id: 0x5678,
            },
            bars,
            msix: Some(MsixSpec {
                vectors: probe::VECTORS,
                table_bar: 2,
                table_offset: 0,
                pba_bar: 2,
                pba_offset: probe::PBA_OFFSET,
            }),
            intx: Some(IntxPin::IntA),
            pcie: true,
        }
    }
    fn bar_read(
        &mut self,
        _ctx: &mut FunctionContext,
        bar: u8,
        offset: u64,
        _size: AccessSize,
    ) -> Result<u64, MmioError> {
        match (bar, offset) {
            (0, probe::SCRATCH) => Ok(self.scratch),
            (0, probe::DMA) => Ok(self.dma_result),
            _ => Ok(0),
        }
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
            (0, probe::SCRATCH) => self.scratch = value,
            (0, probe::DMA) => {
                self.dma_result = match ctx.mem.write_u64(value, self.scratch) {
                    Ok(()) => 1,
                    Err(_) => 2,
                }
            }
            (0, probe::RAISE) => ctx.irq.msix(value as u16),
            (0, probe::INTX) => ctx.irq.set_intx(value != 0),
            _ => return Err(MmioError::NoRegister { offset }),
        }
        Ok(())
    }
    fn reset(&mut self) {
        self.scratch = 0;
        self.resets += 1;
    }
    fn save(&self) -> Vec<u8> {
        let Probe {
            scratch,
            dma_result,
            // The test's count, not device state.
            resets: _,
        } = self;
        let mut w = vdev::save::Writer::new(*b"TPRB", 1);
        w.u64(*scratch).u64(*dma_result);
        w.finish()
    }
    fn restore(&mut self, blob: &[u8]) -> Result<(), vdev::RestoreError> {
        let (_, mut r) = vdev::save::Reader::open(blob, *b"TPRB", 1)?;
        let (scratch, dma_result) = (r.u64()?, r.u64()?);
        r.end()?;
        if dma_result > 2 {
            return Err(vdev::RestoreError::Malformed);
        }
        (self.scratch, self.dma_result) = (scratch, dma_result);
        Ok(())
    }
}

/// An MSI controller that takes messages to one doorbell and records them.
#[derive(Clone, Default)]
struct Doorbell(Arc<Mutex<Vec<u32>>>);

const DOORBELL: u64 = 0x0802_0040;

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

struct Vm {
    rc: RootComplex,
    mem: VecMemory,
    lines: Lines,
    msis: Doorbell,
}

const W: AccessSize = AccessSize::Word;
const ECAM: u64 = virt::ECAM_BASE;
const BAR0_AT: u64 = virt::MMIO_BASE + 0x10_0000;
const BAR2_AT: u64 = virt::HIGH_MMIO_BASE;

fn cfg(device: u64, reg: usize) -> u64 {
    ECAM + (device << 15) + reg as u64
}

impl Vm {
    fn new() -> Vm {
        let mut rc = RootComplex::new(Layout::virt(false), &[RAM]).unwrap();
        rc.attach(1, Box::new(Probe::default())).unwrap();
        let msis = Doorbell::default();
        rc.set_msi_controller(Box::new(msis.clone()));
        Vm {
            rc,
            mem: VecMemory::new(RAM.base, RAM.size as usize),
            lines: Lines::default(),
            msis,
        }
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
    /// What an OS does: place BAR0 low and BAR2 high, enable memory and bus
    /// mastering.
    fn bring_up(&mut self) {
        self.wr(cfg(1, reg::BAR0), W, BAR0_AT);
        self.wr(cfg(1, reg::BAR0 + 8), W, BAR2_AT & 0xffff_ffff);
        self.wr(cfg(1, reg::BAR0 + 12), W, BAR2_AT >> 32);
        self.wr(cfg(1, reg::COMMAND), AccessSize::Half, 0x6);
    }
    fn msix_cap(&mut self) -> u64 {
        let mut at = self.rd(cfg(1, reg::CAPABILITIES_POINTER), AccessSize::Byte);
        while at != 0 {
            if self.rd(cfg(1, at as usize), AccessSize::Byte) == u64::from(cap_id::MSIX) {
                return at;
            }
            at = self.rd(cfg(1, at as usize + 1), AccessSize::Byte);
        }
        panic!("no MSI-X capability");
    }
    fn set_msix_control(&mut self, v: u16) {
        let at = self.msix_cap();
        self.wr(
            cfg(1, at as usize + msix_cap::MESSAGE_CONTROL),
            AccessSize::Half,
            u64::from(v),
        );
    }
    /// Programs vector `v` with `data` to `address`, unmasked.
    fn program_vector(&mut self, v: u64, address: u64, data: u32) {
        let e = BAR2_AT + v * 16;
        self.wr(e, AccessSize::Double, address);
        self.wr(e + 8, W, u64::from(data));
        self.wr(e + 12, W, 0);
    }
    fn msis(&self) -> Vec<u32> {
        self.msis.0.lock().unwrap().clone()
    }
}

const MSIX_ENABLE: u16 = 1 << 15;
const FUNCTION_MASK: u16 = 1 << 14;

#[test]
fn enumeration_finds_the_host_bridge_and_the_function() {
    let mut vm = Vm::new();
    assert_eq!(vm.rd(cfg(0, reg::VENDOR_ID), W), 0x0008_1b36);
    assert_eq!(
        vm.rd(cfg(0, reg::REVISION_ID), W) >> 8,
        0x06_00_00,
        "host bridge class"
    );
    assert_eq!(vm.rd(cfg(0, reg::HEADER_TYPE), AccessSize::Byte), 0);
    assert_eq!(vm.rd(cfg(1, reg::VENDOR_ID), W), 0xabcd_1234);
    assert_eq!(vm.rd(cfg(1, reg::REVISION_ID), W), 0x0108_0202);
    assert_eq!(vm.rd(cfg(1, reg::SUBSYSTEM_VENDOR_ID), W), 0x5678_1234);
    assert_eq!(vm.rd(cfg(1, reg::INTERRUPT_PIN), AccessSize::Byte), 1);
    // Empty slots, other functions and other buses read all-ones.
    assert_eq!(vm.rd(cfg(2, 0), W), 0xffff_ffff);
    assert_eq!(vm.rd(cfg(31, 0), AccessSize::Half), 0xffff);
    assert_eq!(vm.rd(cfg(1, 0) + (1 << 12), W), 0xffff_ffff, "function 1");
    assert_eq!(vm.rd(ECAM + (1 << 20) + (1 << 15), W), 0xffff_ffff, "bus 1");
    // Writes there go nowhere.
    vm.wr(cfg(2, reg::COMMAND), W, 0x6);
    assert_eq!(vm.rd(cfg(2, reg::COMMAND), W), 0xffff_ffff);
}

#[test]
fn capability_list_has_pci_express_then_msix() {
    let mut vm = Vm::new();
    assert_ne!(vm.rd(cfg(1, reg::STATUS), AccessSize::Half) & (1 << 4), 0);
    let first = vm.rd(cfg(1, reg::CAPABILITIES_POINTER), AccessSize::Byte);
    assert_eq!(vm.rd(cfg(1, first as usize), AccessSize::Byte), 0x10);
    // Version 2, Root Complex Integrated Endpoint.
    assert_eq!(vm.rd(cfg(1, first as usize + 2), AccessSize::Half), 0x0092);
    let at = vm.msix_cap();
    assert_eq!(vm.rd(cfg(1, at as usize + 1), AccessSize::Byte), 0, "last");
    let ctl = vm.rd(cfg(1, at as usize + 2), AccessSize::Half);
    assert_eq!(ctl, u64::from(probe::VECTORS - 1), "table size, disabled");
    assert_eq!(
        vm.rd(cfg(1, at as usize + 4), W),
        2,
        "table: BAR2, offset 0"
    );
    assert_eq!(vm.rd(cfg(1, at as usize + 8), W), probe::PBA_OFFSET | 2);
    // The host bridge has no capabilities; nothing in the extended space.
    assert_eq!(vm.rd(cfg(0, reg::STATUS), AccessSize::Half) & (1 << 4), 0);
    assert_eq!(vm.rd(cfg(1, 0x100), W), 0);
}

#[test]
fn bar_sizing_reads_back_the_size_mask() {
    let mut vm = Vm::new();
    vm.wr(cfg(1, reg::BAR0), W, 0xffff_ffff);
    assert_eq!(
        vm.rd(cfg(1, reg::BAR0), W),
        !(probe::BAR0_SIZE - 1) & 0xffff_ffff
    );
    vm.wr(cfg(1, reg::BAR0 + 8), W, 0xffff_ffff);
    vm.wr(cfg(1, reg::BAR0 + 12), W, 0xffff_ffff);
    // 64-bit (type 10b), prefetchable.
    assert_eq!(vm.rd(cfg(1, reg::BAR0 + 8), W), 0xffff_0000 | 0xc);
    assert_eq!(vm.rd(cfg(1, reg::BAR0 + 12), W), 0xffff_ffff);
    // BARs 1, 4, 5 (not implemented) stay zero.
    for i in [1usize, 4, 5] {
        vm.wr(cfg(1, reg::BAR0 + 4 * i), W, 0xffff_ffff);
        assert_eq!(vm.rd(cfg(1, reg::BAR0 + 4 * i), W), 0);
    }
    // Low bits of an address are dropped.
    vm.wr(cfg(1, reg::BAR0), W, BAR0_AT + 0x123);
    assert_eq!(vm.rd(cfg(1, reg::BAR0), W), BAR0_AT);
}

#[test]
fn bars_decode_with_memory_space_enable_only() {
    let mut vm = Vm::new();
    vm.wr(cfg(1, reg::BAR0), W, BAR0_AT);
    vm.wr(BAR0_AT, AccessSize::Double, 0x55);
    assert_eq!(
        vm.rd(BAR0_AT, AccessSize::Double),
        u64::MAX,
        "MSE off: master abort"
    );
    vm.bring_up();
    vm.wr(BAR0_AT, AccessSize::Double, 0x55);
    assert_eq!(vm.rd(BAR0_AT, AccessSize::Double), 0x55);
    let bars: Vec<_> = vm.rc.decoded_bars().collect();
    assert_eq!(bars.len(), 2);
    vm.wr(cfg(1, reg::COMMAND), AccessSize::Half, 0x4);
    assert_eq!(vm.rd(BAR0_AT, AccessSize::Double), u64::MAX);
}

#[test]
fn a_bar_over_ram_or_outside_the_windows_is_not_decoded() {
    let mut vm = Vm::new();
    vm.bring_up();
    vm.mem.write_u64(RAM.base, 0x1111).unwrap();
    // Over RAM, over the GIC, at 0, over the I/O window and over ECAM.
    for at in [RAM.base, 0x0800_0000, 0, virt::PIO_BASE, virt::ECAM_BASE] {
        vm.wr(cfg(1, reg::BAR0), W, at);
        assert!(
            vm.rc.decoded_bars().all(|(_, bar, _)| bar != 0),
            "BAR0 at {at:#x} decodes"
        );
    }
    // The RAM-side view is untouched and the guest's write went nowhere.
    vm.wr(RAM.base, AccessSize::Double, 0x2222);
    assert_eq!(vm.mem.read_u64(RAM.base).unwrap(), 0x1111);
    // A 64-bit BAR placed in the 32-bit window is fine.
    vm.wr(cfg(1, reg::BAR0 + 8), W, BAR0_AT + 0x10_0000);
    vm.wr(cfg(1, reg::BAR0 + 12), W, 0);
    assert!(vm
        .rc
        .decoded_bars()
        .any(|(_, bar, w)| bar == 2 && w.base == BAR0_AT + 0x10_0000));
    // Back inside: decodes again.
    vm.wr(cfg(1, reg::BAR0), W, BAR0_AT);
    vm.wr(BAR0_AT, AccessSize::Double, 7);
    assert_eq!(vm.rd(BAR0_AT, AccessSize::Double), 7);
}

/// Found by the `pci_config` fuzz target: a 64-bit BAR at the top of the address
/// space made the overlap check overflow.
#[test]
fn a_bar_at_the_top_of_the_address_space_is_refused() {
    let mut vm = Vm::new();
    vm.bring_up();
    vm.wr(cfg(1, reg::BAR0 + 8), W, 0xffff_0000);
    vm.wr(cfg(1, reg::BAR0 + 12), W, 0xffff_ffff);
    assert!(vm.rc.decoded_bars().all(|(_, bar, _)| bar != 2));
    assert_eq!(vm.rd(u64::MAX - 7, AccessSize::Double), u64::MAX);
}

#[test]
fn a_bar_over_another_devices_bar_is_not_decoded() {
    let mut vm = Vm::new();
    vm.rc.attach(2, Box::new(Probe::default())).unwrap();
    vm.bring_up();
    vm.wr(BAR0_AT, AccessSize::Double, 0xaaaa);
    // Device 2's BAR0 over device 1's.
    vm.wr(cfg(2, reg::BAR0), W, BAR0_AT);
    vm.wr(cfg(2, reg::COMMAND), AccessSize::Half, 0x2);
    let dev2: Vec<_> = vm.rc.decoded_bars().filter(|(d, _, _)| *d == 2).collect();
    assert!(dev2.is_empty(), "{dev2:?}");
    assert_eq!(
        vm.rd(BAR0_AT, AccessSize::Double),
        0xaaaa,
        "device 1 still answers"
    );
    // Device 2's BAR0 over device 1's BAR2 (partly).
    vm.wr(cfg(2, reg::BAR0), W, BAR0_AT + 0x10_0000);
    vm.wr(cfg(1, reg::BAR0 + 8), W, BAR0_AT + 0x10_0000);
    vm.wr(cfg(1, reg::BAR0 + 12), W, 0);
    let n = vm
        .rc
        .decoded_bars()
        .filter(|(_, _, w)| w.base == BAR0_AT + 0x10_0000)
        .count();
    assert_eq!(n, 1, "only one of two overlapping BARs decodes");
    // Moved apart: both decode.
    vm.wr(cfg(2, reg::BAR0), W, BAR0_AT + 0x20_0000);
    assert_eq!(vm.rc.decoded_bars().count(), 3);
}

#[test]
fn dma_only_with_bus_master_enable() {
    let mut vm = Vm::new();
    vm.bring_up();
    vm.wr(cfg(1, reg::COMMAND), AccessSize::Half, 0x2); // memory, no bus master
    vm.wr(BAR0_AT + probe::SCRATCH, AccessSize::Double, 0xfeed);
    vm.wr(BAR0_AT + probe::DMA, AccessSize::Double, RAM.base + 0x100);
    assert_eq!(
        vm.rd(BAR0_AT + probe::DMA, AccessSize::Double),
        2,
        "refused"
    );
    assert_eq!(vm.mem.read_u64(RAM.base + 0x100).unwrap(), 0);
    vm.wr(cfg(1, reg::COMMAND), AccessSize::Half, 0x6);
    vm.wr(BAR0_AT + probe::DMA, AccessSize::Double, RAM.base + 0x100);
    assert_eq!(vm.rd(BAR0_AT + probe::DMA, AccessSize::Double), 1);
    assert_eq!(vm.mem.read_u64(RAM.base + 0x100).unwrap(), 0xfeed);
    // With bus mastering, still only RAM.
    vm.wr(BAR0_AT + probe::DMA, AccessSize::Double, 0x0800_0000);
    assert_eq!(vm.rd(BAR0_AT + probe::DMA, AccessSize::Double), 2);
}

#[test]
fn msix_messages_reach_the_msi_controller() {
    let mut vm = Vm::new();
    vm.bring_up();
    vm.set_msix_control(MSIX_ENABLE);
    for v in 0..u64::from(probe::VECTORS) {
        vm.program_vector(v, DOORBELL, 100 + v as u32);
    }
    assert_eq!(vm.rd(BAR2_AT + 8, W), 100);
    assert_eq!(vm.rd(BAR2_AT, AccessSize::Double), DOORBELL);
    vm.wr(BAR0_AT + probe::RAISE, W, 2);
    vm.wr(BAR0_AT + probe::RAISE, W, 0);
    assert_eq!(vm.msis(), [102, 100]);
    // A vector past the table is dropped.
    vm.wr(BAR0_AT + probe::RAISE, W, 9);
    assert_eq!(vm.msis().len(), 2);
}

#[test]
fn masked_vectors_pend_and_fire_when_unmasked() {
    let mut vm = Vm::new();
    vm.bring_up();
    vm.set_msix_control(MSIX_ENABLE);
    vm.program_vector(1, DOORBELL, 7);
    vm.wr(BAR2_AT + 16 + 12, W, 1); // mask vector 1
    vm.wr(BAR0_AT + probe::RAISE, W, 1);
    assert!(vm.msis().is_empty());
    assert_eq!(vm.rd(BAR2_AT + probe::PBA_OFFSET, AccessSize::Double), 0b10);
    vm.wr(BAR2_AT + 16 + 12, W, 0);
    assert_eq!(vm.msis(), [7]);
    assert_eq!(vm.rd(BAR2_AT + probe::PBA_OFFSET, W), 0);
    // Function mask.
    vm.set_msix_control(MSIX_ENABLE | FUNCTION_MASK);
    vm.wr(BAR0_AT + probe::RAISE, W, 1);
    assert_eq!(vm.msis(), [7]);
    assert_eq!(vm.rd(BAR2_AT + probe::PBA_OFFSET, W), 0b10);
    vm.set_msix_control(MSIX_ENABLE);
    assert_eq!(vm.msis(), [7, 7]);
    // Bus mastering off: the message waits for it.
    vm.wr(cfg(1, reg::COMMAND), AccessSize::Half, 0x2);
    vm.wr(BAR0_AT + probe::RAISE, W, 1);
    assert_eq!(vm.msis().len(), 2);
    vm.wr(cfg(1, reg::COMMAND), AccessSize::Half, 0x6);
    assert_eq!(vm.msis(), [7, 7, 7]);
    // MSI-X disabled: nothing, nothing pending.
    vm.set_msix_control(0);
    vm.wr(BAR0_AT + probe::RAISE, W, 1);
    assert_eq!(vm.rd(BAR2_AT + probe::PBA_OFFSET, W), 0);
    assert_eq!(vm.msis().len(), 3);
}

#[test]
fn msix_table_garbage_is_contained() {
    let mut vm = Vm::new();
    vm.bring_up();
    vm.set_msix_control(MSIX_ENABLE);
    // Garbage everywhere in the table, including reserved bits.
    for off in (0..u64::from(probe::VECTORS) * 16).step_by(4) {
        vm.wr(BAR2_AT + off, W, 0xdead_beef);
    }
    assert_eq!(vm.rd(BAR2_AT, W), 0xdead_beec, "address bits 1:0 reserved");
    assert_eq!(
        vm.rd(BAR2_AT + 12, W),
        1,
        "vector control keeps only the mask bit"
    );
    vm.wr(BAR2_AT + 12, W, 0);
    vm.wr(BAR0_AT + probe::RAISE, W, 0);
    assert!(vm.msis().is_empty());
    assert_eq!(vm.rc.dropped_messages(), 1);
    // A message aimed at RAM is not a RAM write either.
    vm.program_vector(0, RAM.base, 0x1234);
    vm.wr(BAR0_AT + probe::RAISE, W, 0);
    assert_eq!(vm.mem.read_u32(RAM.base).unwrap(), 0);
    assert_eq!(vm.rc.dropped_messages(), 2);
    // Byte, half and unaligned accesses to the table and PBA are refused.
    for (off, size) in [
        (0, AccessSize::Byte),
        (2, AccessSize::Half),
        (4, AccessSize::Double),
    ] {
        assert!(vm.access(BAR2_AT + off, size, Some(1)).is_err());
        assert!(vm.access(BAR2_AT + off, size, None).is_err());
    }
    assert!(vm
        .access(BAR2_AT + probe::PBA_OFFSET + 1, AccessSize::Byte, None)
        .is_err());
    // PBA writes are ignored.
    vm.wr(BAR2_AT + probe::PBA_OFFSET, AccessSize::Double, u64::MAX);
    assert_eq!(vm.rd(BAR2_AT + probe::PBA_OFFSET, AccessSize::Double), 0);
}

#[test]
fn intx_is_swizzled_and_obeys_interrupt_disable() {
    let layout = Layout::virt(false);
    // virt: INTA of slot 0 is SPI 3 (INTID 35); slot 1 INTA is SPI 4.
    assert_eq!(intx_intid(&layout, 0, IntxPin::IntA), 35);
    assert_eq!(intx_intid(&layout, 1, IntxPin::IntA), 36);
    assert_eq!(intx_intid(&layout, 3, IntxPin::IntB), 35);
    assert_eq!(intx_intid(&layout, 2, IntxPin::IntD), 36);
    let mut vm = Vm::new();
    vm.rc.attach(5, Box::new(Probe::default())).unwrap(); // INTA → (5+0)%4 = SPI 4 too
    vm.bring_up();
    vm.wr(BAR0_AT + probe::INTX, W, 1);
    assert_eq!(vm.lines.0.get(&36), Some(&true));
    assert_ne!(vm.rd(cfg(1, reg::STATUS), AccessSize::Half) & (1 << 3), 0);
    // Interrupt Disable lowers the line, Status still shows the request.
    vm.wr(cfg(1, reg::COMMAND), AccessSize::Half, 0x6 | 1 << 10);
    assert_eq!(vm.lines.0.get(&36), Some(&false));
    assert_ne!(vm.rd(cfg(1, reg::STATUS), AccessSize::Half) & (1 << 3), 0);
    vm.wr(cfg(1, reg::COMMAND), AccessSize::Half, 0x6);
    assert_eq!(vm.lines.0.get(&36), Some(&true));
    // Device 5 shares SPI 4: the line stays high until both drop it.
    vm.wr(cfg(5, reg::BAR0), W, BAR0_AT + 0x40_0000);
    vm.wr(cfg(5, reg::COMMAND), AccessSize::Half, 0x6);
    vm.wr(BAR0_AT + 0x40_0000 + probe::INTX, W, 1);
    vm.wr(BAR0_AT + probe::INTX, W, 0);
    assert_eq!(vm.lines.0.get(&36), Some(&true));
    vm.wr(BAR0_AT + 0x40_0000 + probe::INTX, W, 0);
    assert_eq!(vm.lines.0.get(&36), Some(&false));
    // MSI-X Enable masks INTx.
    vm.wr(BAR0_AT + probe::INTX, W, 1);
    vm.set_msix_control(MSIX_ENABLE);
    assert_eq!(vm.lines.0.get(&36), Some(&false));
}

#[test]
fn hostile_configuration_accesses() {
    let mut vm = Vm::new();
    // 8-byte and unaligned ECAM accesses are refused, for present and absent functions.
    for dev in [1u64, 7] {
        assert!(matches!(
            vm.access(cfg(dev, 0), AccessSize::Double, None),
            Err(MmioError::UnsupportedSize { .. })
        ));
        assert!(matches!(
            vm.access(cfg(dev, 1), W, None),
            Err(MmioError::Unaligned { .. })
        ));
        assert!(matches!(
            vm.access(cfg(dev, 3), AccessSize::Half, Some(0)),
            Err(MmioError::Unaligned { .. })
        ));
    }
    // Outside the 4 KiB of a function's configuration space (the ConfigSpace API;
    // through ECAM an offset past 4 KiB is the next function).
    let c = vm.rc.config(1).unwrap().clone();
    assert!(c.read(0x1000, AccessSize::Byte).is_err());
    assert!(c.read(0xffe, W).is_err());
    assert!(c.read(u64::MAX - 1, AccessSize::Half).is_err());
    // Read-only registers keep their values.
    vm.wr(cfg(1, reg::VENDOR_ID), W, 0);
    vm.wr(cfg(1, reg::REVISION_ID), W, 0);
    vm.wr(cfg(1, reg::INTERRUPT_PIN), AccessSize::Byte, 3);
    vm.wr(cfg(1, reg::CAPABILITIES_POINTER), AccessSize::Byte, 0x80);
    assert_eq!(vm.rd(cfg(1, reg::VENDOR_ID), W), 0xabcd_1234);
    assert_eq!(vm.rd(cfg(1, reg::REVISION_ID), W), 0x0108_0202);
    assert_eq!(vm.rd(cfg(1, reg::INTERRUPT_PIN), AccessSize::Byte), 1);
    assert_eq!(
        vm.rd(cfg(1, reg::CAPABILITIES_POINTER), AccessSize::Byte),
        0x40
    );
    // Status: capability bit read-only, nothing else set by writes of ones.
    vm.wr(cfg(1, reg::STATUS), AccessSize::Half, 0xffff);
    assert_eq!(vm.rd(cfg(1, reg::STATUS), AccessSize::Half), 1 << 4);
    // Command: I/O space is hardwired to zero (no I/O BARs).
    vm.wr(cfg(1, reg::COMMAND), AccessSize::Half, 0xffff);
    assert_eq!(vm.rd(cfg(1, reg::COMMAND), AccessSize::Half), 0x0546);
    // Interrupt Line is the OS's scratch byte.
    vm.wr(cfg(1, reg::INTERRUPT_LINE), AccessSize::Byte, 0x2a);
    assert_eq!(vm.rd(cfg(1, reg::INTERRUPT_LINE), AccessSize::Byte), 0x2a);
    // The I/O window reads all-ones and ignores writes.
    vm.wr(virt::PIO_BASE, W, 0);
    assert_eq!(vm.rd(virt::PIO_BASE + 4, W), 0xffff_ffff);
    // A BAR-window access past the end of a BAR is a master abort, not the device.
    vm.bring_up();
    let r = vm.rd(BAR0_AT + probe::BAR0_SIZE - 4, AccessSize::Double);
    assert_eq!(r, u64::MAX);
}

#[test]
fn reset_returns_everything_to_reset_values() {
    let mut vm = Vm::new();
    vm.bring_up();
    vm.set_msix_control(MSIX_ENABLE);
    vm.program_vector(0, DOORBELL, 5);
    vm.wr(BAR0_AT + probe::INTX, W, 1);
    vm.set_msix_control(0);
    assert_eq!(vm.lines.0.get(&36), Some(&true));
    let mut lines = Lines::default();
    vm.rc.reset(&mut lines);
    assert_eq!(lines.0.get(&36), Some(&false));
    assert_eq!(vm.rd(cfg(1, reg::COMMAND), AccessSize::Half), 0);
    assert_eq!(vm.rd(cfg(1, reg::BAR0), W), 0);
    assert_eq!(vm.rc.decoded_bars().count(), 0);
    vm.bring_up();
    assert_eq!(vm.rd(BAR2_AT + 12, W), 1, "vectors masked again");
    assert_eq!(vm.rd(BAR0_AT, AccessSize::Double), 0, "function reset");
}

#[test]
fn bad_layouts_and_specs_are_refused() {
    let mut l = Layout::virt(false);
    assert!(RootComplex::new(
        l,
        &[Window {
            base: 0x3000_0000,
            size: 0x1000
        }]
    )
    .is_err());
    l.mmio32.base = virt::ECAM_BASE;
    assert_eq!(RootComplex::new(l, &[]).err(), Some(RootError::Layout));
    let mut rc = RootComplex::new(Layout::virt(true), &[RAM]).unwrap();
    assert_eq!(
        rc.attach(0, Box::new(Probe::default())).err(),
        Some(RootError::Slot)
    );
    assert_eq!(
        rc.attach(32, Box::new(Probe::default())).err(),
        Some(RootError::Slot)
    );

    struct Bad(FunctionSpec);
    impl PciFunction for Bad {
        fn spec(&self) -> FunctionSpec {
            self.0
        }
        fn bar_read(
            &mut self,
            _: &mut FunctionContext,
            _: u8,
            _: u64,
            _: AccessSize,
        ) -> Result<u64, MmioError> {
            Ok(0)
        }
        fn bar_write(
            &mut self,
            _: &mut FunctionContext,
            _: u8,
            _: u64,
            _: AccessSize,
            _: u64,
        ) -> Result<(), MmioError> {
            Ok(())
        }
        fn reset(&mut self) {}
        fn save(&self) -> Vec<u8> {
            Vec::new()
        }
        fn restore(&mut self, _: &[u8]) -> Result<(), vdev::RestoreError> {
            Ok(())
        }
    }
    let good = Probe::default().spec();
    let mut s = good;
    s.bars[0].as_mut().unwrap().size = 0x3000;
    assert!(
        rc.attach(3, Box::new(Bad(s))).is_err(),
        "not a power of two"
    );
    let mut s = good;
    s.bars[3] = s.bars[0];
    assert!(
        rc.attach(3, Box::new(Bad(s))).is_err(),
        "upper half of BAR2 taken"
    );
    let mut s = good;
    s.msix.as_mut().unwrap().pba_offset = 0x8;
    assert!(
        rc.attach(3, Box::new(Bad(s))).is_err(),
        "PBA over the table"
    );
    let mut s = good;
    s.msix.as_mut().unwrap().table_bar = 1;
    assert!(
        rc.attach(3, Box::new(Bad(s))).is_err(),
        "table in a missing BAR"
    );
    let mut s = good;
    s.msix.as_mut().unwrap().pba_offset = probe::BAR2_SIZE - 4;
    assert!(rc.attach(3, Box::new(Bad(s))).is_err(), "PBA past the BAR");
    assert!(rc.attach(3, Box::new(Bad(good))).is_ok());
    // The high ECAM window works the same.
    let id = {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut VecMemory::new(RAM.base, 0x1000),
            irq: &mut Lines::default(),
        };
        rc.access(&mut ctx, virt::HIGH_ECAM_BASE + (3 << 15), W, None)
            .unwrap()
    };
    assert_eq!(id, 0xabcd_1234);
}

/// The GICv2m frame as the MSI controller, as el2 connects it.
struct V2m {
    frame: vgic::v2m::V2mFrame,
    base: u64,
}

impl MsiController for V2m {
    fn deliver(&mut self, address: u64, data: u32, irq: &mut dyn InterruptSink) -> bool {
        self.frame.message(self.base, address, data, irq)
    }
}

#[test]
fn msix_through_a_gicv2m_frame_pends_the_spi_in_the_vgic() {
    const FRAME: u64 = 0x0802_0000;
    let mut vgic = vgic::Vgic::new(vgic::VgicConfig::simple(1, 96)).unwrap();
    let frame = vgic::v2m::V2mFrame::new(80, 32, 128).unwrap();
    let mut rc = RootComplex::new(Layout::virt(false), &[RAM]).unwrap();
    rc.attach(1, Box::new(Probe::default())).unwrap();
    rc.set_msi_controller(Box::new(V2m { frame, base: FRAME }));
    let mut mem = VecMemory::new(RAM.base, 0x1000);
    // Linux's v2m driver makes its SPIs edge-triggered.
    let icfgr = vgic::regs::gicd::ICFGR + 4 * (90 / 16);
    vgic.gicd_write(icfgr, W, 0b10 << (2 * (90 % 16))).unwrap();
    let mut go = |rc: &mut RootComplex, vgic: &mut vgic::Vgic, gpa: u64, size, v: u64| {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: vgic,
        };
        rc.access(&mut ctx, gpa, size, Some(v)).unwrap();
    };
    go(&mut rc, &mut vgic, cfg(1, reg::BAR0), W, BAR0_AT);
    go(
        &mut rc,
        &mut vgic,
        cfg(1, reg::BAR0 + 8),
        W,
        BAR2_AT & 0xffff_ffff,
    );
    go(&mut rc, &mut vgic, cfg(1, reg::BAR0 + 12), W, BAR2_AT >> 32);
    go(
        &mut rc,
        &mut vgic,
        cfg(1, reg::COMMAND),
        AccessSize::Half,
        0x6,
    );
    let c = rc.config(1).unwrap();
    let first = c
        .read(reg::CAPABILITIES_POINTER as u64, AccessSize::Byte)
        .unwrap();
    let msix = c.read(u64::from(first) + 1, AccessSize::Byte).unwrap() as usize;
    assert_eq!(
        c.read(msix as u64, AccessSize::Byte).unwrap(),
        u32::from(cap_id::MSIX)
    );
    let control = cfg(1, msix + msix_cap::MESSAGE_CONTROL);
    go(
        &mut rc,
        &mut vgic,
        control,
        AccessSize::Half,
        u64::from(MSIX_ENABLE),
    );
    go(
        &mut rc,
        &mut vgic,
        BAR2_AT + 16,
        AccessSize::Double,
        FRAME + vgic::v2m::reg::MSI_SETSPI_NS,
    );
    go(&mut rc, &mut vgic, BAR2_AT + 16 + 8, W, 90);
    go(&mut rc, &mut vgic, BAR2_AT + 16 + 12, W, 0);
    let ispendr = vgic::regs::gicd::ISPENDR + 4 * (90 / 32);
    let pending = |vgic: &vgic::Vgic| vgic.gicd_read(ispendr, W).unwrap() & (1 << (90 % 32)) != 0;
    assert!(!pending(&vgic));
    go(&mut rc, &mut vgic, BAR0_AT + probe::RAISE, W, 1);
    assert!(pending(&vgic), "vector 1 became SPI 90");
    assert_eq!(rc.dropped_messages(), 0);
}

/// `Layout::virt` and the VM description (`boards::devices::pcie`) name the same
/// windows and SPIs (the description leaves the 64-bit window out).
#[test]
fn virt_layout_matches_the_vm_description() {
    let b = boards::devices::pcie();
    let l = Layout::virt(false);
    let w = |x: boards::devices::Window| Window {
        base: x.base,
        size: x.size,
    };
    assert_eq!(l.ecam, w(b.ecam));
    assert_eq!(l.mmio32, w(b.mmio32));
    assert_eq!(l.pio, Some(w(b.pio)));
    assert_eq!(l.intx_first_intid, b.intx_first_intid);
}
