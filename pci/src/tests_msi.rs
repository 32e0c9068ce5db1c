//! The MSI capability (PCI 3.0 §6.8.1) as a host that uses only MSI drives it:
//! found after MSI-X in the capability list, its read-only bits, Multiple Message
//! Enable held to Multiple Message Capable, vectors in the low data bits, INTx
//! off while it is enabled, MSI-X taking precedence, nothing sent without bus
//! mastering, and messages through the GICv2m frame into the vGIC and with the
//! requester ID an ITS takes as the DeviceID.

extern crate std;

use alloc::boxed::Box;
use alloc::vec::Vec;
use std::sync::{Arc, Mutex};

use vdev::{AccessSize, GuestMemory, InterruptSink, MmioContext, MmioError, VecMemory};

use crate::config::ConfigSpace;
use crate::defs::{cap_id, msi_cap, msix_cap, reg, virt};
use crate::function::{FunctionContext, FunctionSpec, MsiSpec, PciFunction};
use crate::root::{Layout, MsiController, RootComplex, Window};
use crate::tests::{probe, Probe};

const RAM: Window = Window {
    base: 0x4000_0000,
    size: 0x10_0000,
};
const W: AccessSize = AccessSize::Word;
const H: AccessSize = AccessSize::Half;
const B: AccessSize = AccessSize::Byte;
const BAR0_AT: u64 = virt::MMIO_BASE + 0x10_0000;
const BAR2_AT: u64 = virt::HIGH_MMIO_BASE;
/// Where the recording MSI controller answers (above 4 GiB: the upper address
/// register matters).
const DOORBELL: u64 = 0x1_0802_0040;
/// Message Control: MSI Enable; Multiple Message Enable and Capable; 64-bit.
const MSI_ENABLE: u16 = 1;
const MME_SHIFT: u16 = 4;
const MMC_SHIFT: u16 = 1;
const ADDRESS_64: u16 = 1 << 7;
const COMMAND_MEMORY_AND_BUS_MASTER: u64 = 0x6;

/// The test device with an MSI capability asking for 4 vectors.
#[derive(Default)]
struct MsiProbe(Probe);

const PROBE_MSI_LOG2: u8 = 2;

impl PciFunction for MsiProbe {
    fn spec(&self) -> FunctionSpec {
        self.0.spec()
    }
    fn bar_read(
        &mut self,
        ctx: &mut FunctionContext,
        bar: u8,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        self.0.bar_read(ctx, bar, offset, size)
    }
    fn bar_write(
        &mut self,
        ctx: &mut FunctionContext,
        bar: u8,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        self.0.bar_write(ctx, bar, offset, size, value)
    }
    fn reset(&mut self) {
        self.0.reset()
    }
    fn save(&self) -> Vec<u8> {
        self.0.save()
    }
    fn restore(&mut self, blob: &[u8]) -> Result<(), vdev::RestoreError> {
        self.0.restore(blob)
    }
    fn msi(&self) -> Option<MsiSpec> {
        Some(MsiSpec {
            vectors_log2: PROBE_MSI_LOG2,
        })
    }
}

/// Records (requester ID, address, data) of the messages to [`DOORBELL`].
#[derive(Clone, Default)]
struct Recorder(Arc<Mutex<Vec<(u16, u64, u32)>>>);

impl MsiController for Recorder {
    fn deliver(&mut self, _: u64, _: u32, _: &mut dyn InterruptSink) -> bool {
        unreachable!("the root complex names the requester")
    }
    fn deliver_from(
        &mut self,
        requester: u16,
        address: u64,
        data: u32,
        _irq: &mut dyn InterruptSink,
    ) -> bool {
        if address != DOORBELL {
            return false;
        }
        self.0.lock().unwrap().push((requester, address, data));
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
    sent: Recorder,
}

fn cfg(reg: u64) -> u64 {
    virt::ECAM_BASE + (1 << 15) + reg
}

impl Vm {
    fn new() -> Vm {
        let mut rc = RootComplex::new(Layout::virt(false), &[RAM]).unwrap();
        rc.attach(1, Box::new(MsiProbe::default())).unwrap();
        let sent = Recorder::default();
        rc.set_msi_controller(Box::new(sent.clone()));
        Vm {
            rc,
            mem: VecMemory::new(RAM.base, 0x1000),
            lines: Lines::default(),
            sent,
        }
    }
    fn access(&mut self, gpa: u64, size: AccessSize, write: Option<u64>) -> u64 {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut self.lines,
        };
        self.rc.access(&mut ctx, gpa, size, write).unwrap()
    }
    fn rd(&mut self, gpa: u64, size: AccessSize) -> u64 {
        self.access(gpa, size, None)
    }
    fn wr(&mut self, gpa: u64, size: AccessSize, v: u64) {
        self.access(gpa, size, Some(v));
    }
    /// The capability IDs in list order, with their offsets.
    fn caps(&mut self) -> Vec<(u8, u64)> {
        let mut out = Vec::new();
        let mut at = self.rd(cfg(reg::CAPABILITIES_POINTER as u64), B);
        while at != 0 {
            out.push((self.rd(cfg(at), B) as u8, at));
            at = self.rd(cfg(at + 1), B);
        }
        out
    }
    fn cap(&mut self, id: u8) -> u64 {
        self.caps()
            .into_iter()
            .find(|c| c.0 == id)
            .map(|c| c.1)
            .expect("capability present")
    }
    fn bring_up(&mut self) {
        self.wr(cfg(reg::BAR0 as u64), W, BAR0_AT);
        self.wr(cfg(reg::BAR0 as u64 + 8), W, BAR2_AT & 0xffff_ffff);
        self.wr(cfg(reg::BAR0 as u64 + 12), W, BAR2_AT >> 32);
        self.wr(cfg(reg::COMMAND as u64), H, COMMAND_MEMORY_AND_BUS_MASTER);
    }
    /// What Linux's MSI setup writes: address, upper address, data, then
    /// Message Control with `log2` vectors and MSI Enable.
    fn program_msi(&mut self, address: u64, data: u16, log2: u16) {
        let at = self.cap(cap_id::MSI);
        self.wr(cfg(at + msi_cap::ADDRESS as u64), W, address & 0xffff_ffff);
        self.wr(cfg(at + msi_cap::UPPER_ADDRESS as u64), W, address >> 32);
        self.wr(cfg(at + msi_cap::DATA as u64), H, u64::from(data));
        self.wr(
            cfg(at + msi_cap::MESSAGE_CONTROL as u64),
            H,
            u64::from(log2 << MME_SHIFT | MSI_ENABLE),
        );
    }
    fn raise(&mut self, vector: u64) {
        self.wr(BAR0_AT + probe::RAISE, W, vector);
    }
    fn sent(&self) -> Vec<(u16, u64, u32)> {
        core::mem::take(&mut *self.sent.0.lock().unwrap())
    }
}

#[test]
fn the_msi_capability_follows_msix_and_keeps_its_read_only_bits() {
    let mut vm = Vm::new();
    let ids: Vec<u8> = vm.caps().iter().map(|c| c.0).collect();
    assert_eq!(ids, [cap_id::PCI_EXPRESS, cap_id::MSIX, cap_id::MSI]);
    let at = vm.cap(cap_id::MSI);
    let control = cfg(at + msi_cap::MESSAGE_CONTROL as u64);
    // Reset: disabled, 64-bit, asks for 4 vectors, one granted, no per-vector
    // masking.
    let reset = ADDRESS_64 | u16::from(PROBE_MSI_LOG2) << MMC_SHIFT;
    assert_eq!(vm.rd(control, H), u64::from(reset));
    // Every bit written: only MSI Enable and Multiple Message Enable take, and
    // Multiple Message Enable no more than Capable (7 asked, 4 vectors granted).
    vm.wr(control, H, 0xffff);
    assert_eq!(
        vm.rd(control, H),
        u64::from(reset | MSI_ENABLE | u16::from(PROBE_MSI_LOG2) << MME_SHIFT)
    );
    // A byte write of the low byte behaves alike.
    vm.wr(control, B, u64::from(6u16 << MME_SHIFT));
    assert_eq!(
        vm.rd(control, H),
        u64::from(reset | u16::from(PROBE_MSI_LOG2) << MME_SHIFT)
    );
    vm.wr(control, H, 0);
    assert_eq!(vm.rd(control, H), u64::from(reset));
    // Address bits 1:0 are reserved; the upper address and the 16-bit data are
    // writable; the two bytes after the data are not the capability's.
    vm.wr(cfg(at + msi_cap::ADDRESS as u64), W, 0xffff_ffff);
    assert_eq!(vm.rd(cfg(at + msi_cap::ADDRESS as u64), W), 0xffff_fffc);
    vm.wr(cfg(at + msi_cap::UPPER_ADDRESS as u64), W, 0x1234_5678);
    assert_eq!(
        vm.rd(cfg(at + msi_cap::UPPER_ADDRESS as u64), W),
        0x1234_5678
    );
    vm.wr(cfg(at + msi_cap::DATA as u64), W, 0xffff_ffff);
    assert_eq!(vm.rd(cfg(at + msi_cap::DATA as u64), W), 0xffff);
    // The ID and next pointer are read-only.
    vm.wr(cfg(at), H, 0xffff);
    assert_eq!(vm.rd(cfg(at), H), u64::from(cap_id::MSI));
    // A function without MSI has none.
    let mut rc = RootComplex::new(Layout::virt(false), &[RAM]).unwrap();
    rc.attach(1, Box::new(Probe::default())).unwrap();
    let c = rc.config(1).unwrap();
    let msix = c.read(reg::CAPABILITIES_POINTER as u64, B).unwrap();
    let msix = c.read(u64::from(msix) + 1, B).unwrap();
    assert_eq!(c.read(u64::from(msix), B).unwrap(), u32::from(cap_id::MSIX));
    assert_eq!(c.read(u64::from(msix) + 1, B).unwrap(), 0, "MSI-X is last");
}

#[test]
fn msi_vectors_go_in_the_low_data_bits_of_the_granted_allocation() {
    let mut vm = Vm::new();
    vm.bring_up();
    // Before MSI is enabled (and with MSI-X disabled) nothing is sent.
    vm.raise(0);
    assert!(vm.sent().is_empty());
    // Two vectors granted, data 0x40.
    vm.program_msi(DOORBELL, 0x40, 1);
    for v in 0..4 {
        vm.raise(v);
    }
    let requester: u16 = 1 << 3;
    assert_eq!(
        vm.sent(),
        [
            (requester, DOORBELL, 0x40),
            (requester, DOORBELL, 0x41),
            (requester, DOORBELL, 0x40),
            (requester, DOORBELL, 0x41),
        ],
        "vectors 2 and 3 alias onto the granted two"
    );
    // Four granted: each vector its own data; data's low bits as programmed are
    // replaced.
    vm.program_msi(DOORBELL, 0x53, 2);
    vm.raise(2);
    vm.raise(3);
    assert_eq!(
        vm.sent(),
        [(requester, DOORBELL, 0x52), (requester, DOORBELL, 0x53)]
    );
    // A single vector: every vector is the programmed data.
    vm.program_msi(DOORBELL, 0x77, 0);
    vm.raise(3);
    assert_eq!(vm.sent(), [(requester, DOORBELL, 0x77)]);
    // Garbage address: dropped and counted, nothing written anywhere.
    vm.program_msi(RAM.base, 0x77, 0);
    vm.raise(0);
    assert!(vm.sent().is_empty());
    assert_eq!(vm.rc.dropped_messages(), 1);
    assert_eq!(vm.mem.read_u32(RAM.base).unwrap(), 0);
}

#[test]
fn msi_masks_intx_yields_to_msix_and_needs_bus_mastering() {
    let mut vm = Vm::new();
    vm.bring_up();
    let intx = crate::root::intx_intid(vm.rc.layout(), 1, crate::defs::IntxPin::IntA);
    vm.wr(BAR0_AT + probe::INTX, W, 1);
    assert_eq!(vm.lines.0.get(&intx), Some(&true), "INTx before MSI");
    vm.program_msi(DOORBELL, 0x20, 2);
    assert_eq!(vm.lines.0.get(&intx), Some(&false), "MSI Enable masks INTx");
    // MSI-X enabled as well: MSI-X carries the vectors (its table entry 1).
    let msix = vm.cap(cap_id::MSIX);
    vm.wr(BAR2_AT + 16, AccessSize::Double, DOORBELL);
    vm.wr(BAR2_AT + 16 + 8, W, 0x99);
    vm.wr(BAR2_AT + 16 + 12, W, 0);
    vm.wr(cfg(msix + msix_cap::MESSAGE_CONTROL as u64), H, 1 << 15);
    vm.raise(1);
    assert_eq!(vm.sent(), [(1 << 3, DOORBELL, 0x99)]);
    vm.wr(cfg(msix + msix_cap::MESSAGE_CONTROL as u64), H, 0);
    vm.raise(1);
    assert_eq!(vm.sent(), [(1 << 3, DOORBELL, 0x21)]);
    // Bus mastering off: the function cannot write the message; it is lost,
    // counted, and not sent later.
    vm.wr(cfg(reg::COMMAND as u64), H, 0x2);
    vm.raise(1);
    assert!(vm.sent().is_empty());
    assert_eq!(vm.rc.dropped_messages(), 1);
    vm.wr(cfg(reg::COMMAND as u64), H, COMMAND_MEMORY_AND_BUS_MASTER);
    assert!(vm.sent().is_empty());
    // MSI disabled: INTx is back.
    let at = vm.cap(cap_id::MSI);
    vm.wr(cfg(at + msi_cap::MESSAGE_CONTROL as u64), H, 0);
    assert_eq!(vm.lines.0.get(&intx), Some(&true), "INTx after MSI");
    // A reset disables MSI and clears its registers.
    let mut sink = vdev::NullInterrupts;
    vm.rc.reset(&mut sink);
    assert_eq!(vm.rd(cfg(at + msi_cap::DATA as u64), H), 0);
    assert_eq!(vm.mem.read_u32(RAM.base).unwrap(), 0);
}

/// The GICv2m frame as the MSI controller, as el2 connects it.
struct V2m(vgic::v2m::V2mFrame);

const FRAME: u64 = 0x0802_0000;

impl MsiController for V2m {
    fn deliver(&mut self, address: u64, data: u32, irq: &mut dyn InterruptSink) -> bool {
        self.0.message(FRAME, address, data, irq)
    }
}

#[test]
fn msi_through_a_gicv2m_frame_pends_the_vectors_spi_in_the_vgic() {
    const SPI: u32 = 92;
    let mut vgic = vgic::Vgic::new(vgic::VgicConfig::simple(1, 96)).unwrap();
    let mut rc = RootComplex::new(Layout::virt(false), &[RAM]).unwrap();
    rc.attach(1, Box::new(MsiProbe::default())).unwrap();
    rc.set_msi_controller(Box::new(
        V2m(vgic::v2m::V2mFrame::new(80, 32, 128).unwrap()),
    ));
    let mut mem = VecMemory::new(RAM.base, 0x1000);
    for spi in SPI..SPI + 4 {
        let icfgr = vgic::regs::gicd::ICFGR + 4 * u64::from(spi / 16);
        let v = vgic.gicd_read(icfgr, W).unwrap();
        vgic.gicd_write(icfgr, W, v | 0b10 << (2 * (spi % 16)))
            .unwrap();
    }
    let mut go = |rc: &mut RootComplex, vgic: &mut vgic::Vgic, gpa: u64, size, v: u64| {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: vgic,
        };
        rc.access(&mut ctx, gpa, size, Some(v)).unwrap();
    };
    go(&mut rc, &mut vgic, cfg(reg::BAR0 as u64), W, BAR0_AT);
    go(&mut rc, &mut vgic, cfg(reg::COMMAND as u64), H, 0x6);
    let at = {
        let c = rc.config(1).unwrap();
        let mut at = c.read(reg::CAPABILITIES_POINTER as u64, B).unwrap();
        while c.read(u64::from(at), B).unwrap() != u32::from(cap_id::MSI) {
            at = c.read(u64::from(at) + 1, B).unwrap();
        }
        u64::from(at)
    };
    // Linux's v2m allocates an aligned block of SPIs for multi-MSI.
    let setspi = FRAME + vgic::v2m::reg::MSI_SETSPI_NS;
    go(
        &mut rc,
        &mut vgic,
        cfg(at + msi_cap::ADDRESS as u64),
        W,
        setspi,
    );
    go(
        &mut rc,
        &mut vgic,
        cfg(at + msi_cap::UPPER_ADDRESS as u64),
        W,
        0,
    );
    go(
        &mut rc,
        &mut vgic,
        cfg(at + msi_cap::DATA as u64),
        H,
        u64::from(SPI),
    );
    go(
        &mut rc,
        &mut vgic,
        cfg(at + msi_cap::MESSAGE_CONTROL as u64),
        H,
        u64::from(2 << MME_SHIFT | MSI_ENABLE),
    );
    let pending = |vgic: &vgic::Vgic, spi: u32| {
        let ispendr = vgic::regs::gicd::ISPENDR + 4 * u64::from(spi / 32);
        vgic.gicd_read(ispendr, W).unwrap() & (1 << (spi % 32)) != 0
    };
    assert!((SPI..SPI + 4).all(|s| !pending(&vgic, s)));
    go(&mut rc, &mut vgic, BAR0_AT + probe::RAISE, W, 3);
    assert!(pending(&vgic, SPI + 3), "vector 3 became SPI {}", SPI + 3);
    assert!((SPI..SPI + 3).all(|s| !pending(&vgic, s)));
    assert_eq!(rc.dropped_messages(), 0);
}

#[test]
fn saved_state_with_multiple_message_enable_above_capable_is_refused() {
    let spec = MsiProbe::default().spec();
    let msi = Some(MsiSpec {
        vectors_log2: PROBE_MSI_LOG2,
    });
    let cs = ConfigSpace::build(&spec, msi, &[], None).unwrap();
    let mut rc = RootComplex::new(Layout::virt(false), &[RAM]).unwrap();
    rc.attach(1, Box::new(MsiProbe::default())).unwrap();
    let at = {
        let c = rc.config(1).unwrap();
        let mut at = c.read(reg::CAPABILITIES_POINTER as u64, B).unwrap();
        while c.read(u64::from(at), B).unwrap() != u32::from(cap_id::MSI) {
            at = c.read(u64::from(at) + 1, B).unwrap();
        }
        at as usize
    };
    let mut bytes = *cs.state();
    assert!(cs.check_state(&bytes, false).is_some());
    bytes[at + msi_cap::MESSAGE_CONTROL] |= (u16::from(PROBE_MSI_LOG2) << MME_SHIFT) as u8;
    assert!(cs.check_state(&bytes, false).is_some(), "MME = MMC");
    bytes[at + msi_cap::MESSAGE_CONTROL] |= (7 << MME_SHIFT) as u8;
    assert!(cs.check_state(&bytes, false).is_none(), "MME > MMC");
    // More than 32 vectors is not a capability.
    let too_many = Some(MsiSpec { vectors_log2: 6 });
    assert!(ConfigSpace::build(&spec, too_many, &[], None).is_err());
}
