//! The root complex's saved state through the generic device tests
//! (`vdev::save_restore_tests!`): once with the test function (INTx, MSI-X in
//! its own BAR, a pending vector) and once with the NVMe function brought up as
//! Linux does (BAR0 placed, bus mastering, MSI-X, the admin queue enabled and
//! one Identify completed), plus a blob for another layout refused, and a
//! restored root complex decoding the same BARs and delivering a vector left
//! pending when it is unmasked.

extern crate std;

use alloc::boxed::Box;
use alloc::vec::Vec;
use std::sync::{Arc, Mutex};

use nvme::defs::{admin, reg as nreg};
use nvme::testing::RamDisk;
use vdev::{AccessSize, GuestMemory, InterruptSink, MmioContext, SaveRestore, VecMemory};

use crate::defs::{reg, virt, CONFIG_HEADER_SIZE};
use crate::nvme::{NvmeFunction, MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET};
use crate::root::{Layout, MsiController, RootComplex, Window};

const RAM: Window = Window {
    base: 0x4000_0000,
    size: 0x1_0000,
};
const W: AccessSize = AccessSize::Word;
const H: AccessSize = AccessSize::Half;
const D: AccessSize = AccessSize::Double;
const DOORBELL: u64 = 0x0802_0040;
const BAR0: u64 = virt::MMIO_BASE + 0x20_0000;
const ASQ: u64 = RAM.base + 0x1000;
const ACQ: u64 = RAM.base + 0x2000;
const IDENTIFY_BUF: u64 = RAM.base + 0x3000;

/// Records the messages it takes at [`DOORBELL`].
#[derive(Clone, Default)]
struct Doorbell(Arc<Mutex<Vec<u32>>>);

impl MsiController for Doorbell {
    fn deliver(&mut self, address: u64, data: u32, _irq: &mut dyn InterruptSink) -> bool {
        address == DOORBELL && {
            self.0.lock().unwrap().push(data);
            true
        }
    }
}

/// Records line levels.
#[derive(Default)]
struct Lines(std::collections::BTreeMap<u32, bool>);

impl InterruptSink for Lines {
    fn set_level(&mut self, intid: u32, level: bool) {
        self.0.insert(intid, level);
    }
}

fn ecam(device: u64, r: usize) -> u64 {
    virt::ECAM_BASE + (device << 15) + r as u64
}

/// Runs one guest access against `rc` with fresh memory and lines.
fn go(
    rc: &mut RootComplex,
    mem: &mut VecMemory,
    gpa: u64,
    size: AccessSize,
    v: Option<u64>,
) -> u64 {
    let mut lines = Lines::default();
    let mut ctx = MmioContext {
        vcpu: 0,
        mem,
        irq: &mut lines,
    };
    rc.access(&mut ctx, gpa, size, v).unwrap_or(u64::MAX)
}

fn msix_cap(rc: &mut RootComplex, mem: &mut VecMemory, device: u64) -> u64 {
    let mut at = go(
        rc,
        mem,
        ecam(device, reg::CAPABILITIES_POINTER),
        AccessSize::Byte,
        None,
    );
    while go(rc, mem, ecam(device, at as usize), AccessSize::Byte, None)
        != u64::from(crate::defs::cap_id::MSIX)
    {
        at = go(
            rc,
            mem,
            ecam(device, at as usize + 1),
            AccessSize::Byte,
            None,
        );
    }
    at
}

/// Everything a guest can read of the root complex: every configuration dword of
/// both functions, the decoded BARs, and (NVMe) the controller registers, the
/// MSI-X table and PBA.
fn config_probe(rc: &mut RootComplex) -> Vec<u64> {
    let mut mem = VecMemory::new(RAM.base, RAM.size as usize);
    let mut out = Vec::new();
    for device in 0..2 {
        for r in (0..CONFIG_HEADER_SIZE).step_by(4) {
            out.push(go(rc, &mut mem, ecam(device, r), W, None));
        }
    }
    for (d, b, w) in rc.decoded_bars() {
        out.extend([u64::from(d), u64::from(b), w.base, w.size]);
    }
    out
}

// --- The test function (tests.rs's `Probe`) -------------------------------

mod with_probe {
    use super::*;
    use crate::tests::{probe, Probe};

    pub const BAR0_AT: u64 = virt::MMIO_BASE + 0x10_0000;
    pub const BAR2_AT: u64 = virt::HIGH_MMIO_BASE;

    pub fn make() -> RootComplex {
        let mut rc = RootComplex::new(Layout::virt(false), &[RAM]).unwrap();
        rc.attach(1, Box::new(Probe::default())).unwrap();
        rc.set_msi_controller(Box::new(Doorbell::default()));
        rc
    }

    /// BARs placed, memory and bus mastering on, MSI-X enabled with vector 1
    /// programmed but masked and then raised (pending), the scratch register
    /// written, INTx driven (masked by MSI-X, so only Status shows it).
    pub fn drive(rc: &mut RootComplex) {
        let mut m = VecMemory::new(RAM.base, RAM.size as usize);
        go(rc, &mut m, ecam(1, reg::BAR0), W, Some(BAR0_AT));
        go(
            rc,
            &mut m,
            ecam(1, reg::BAR0 + 8),
            W,
            Some(BAR2_AT & 0xffff_ffff),
        );
        go(rc, &mut m, ecam(1, reg::BAR0 + 12), W, Some(BAR2_AT >> 32));
        go(rc, &mut m, ecam(1, reg::COMMAND), H, Some(0x6));
        let cap = msix_cap(rc, &mut m, 1);
        go(rc, &mut m, ecam(1, cap as usize + 2), H, Some(1 << 15));
        let e = BAR2_AT + 16;
        go(rc, &mut m, e, D, Some(DOORBELL));
        go(rc, &mut m, e + 8, W, Some(0x55));
        go(rc, &mut m, e + 12, W, Some(1));
        go(rc, &mut m, BAR0_AT + probe::RAISE, W, Some(1));
        go(rc, &mut m, BAR0_AT + probe::SCRATCH, D, Some(0xfeed_f00d));
        go(rc, &mut m, BAR0_AT + probe::INTX, W, Some(1));
    }

    /// The configuration, the function's scratch, the table and PBA, then what
    /// unmasking vector 1 sends.
    pub fn probe(rc: &mut RootComplex) -> (Vec<u64>, Vec<u32>) {
        let mut out = config_probe(rc);
        let mut m = VecMemory::new(RAM.base, RAM.size as usize);
        out.push(go(rc, &mut m, BAR0_AT + probe::SCRATCH, D, None));
        for off in (0..u64::from(probe::VECTORS) * 16).step_by(4) {
            out.push(go(rc, &mut m, BAR2_AT + off, W, None));
        }
        out.push(go(rc, &mut m, BAR2_AT + probe::PBA_OFFSET, D, None));
        let db = Doorbell::default();
        rc.set_msi_controller(Box::new(db.clone()));
        go(rc, &mut m, BAR2_AT + 16 + 12, W, Some(0));
        let sent = db.0.lock().unwrap().clone();
        (out, sent)
    }
}

vdev::save_restore_tests!(
    root_with_test_function,
    make: with_probe::make,
    drive: with_probe::drive,
    probe: with_probe::probe
);

/// A restored root complex decodes the saved BARs and sends the vector that was
/// pending at the save once the guest unmasks it; the INTx level is in Status.
#[test]
fn restored_root_complex_decodes_and_sends_the_pending_vector() {
    use with_probe::*;
    let mut rc = make();
    drive(&mut rc);
    let blob = rc.save();
    let mut fresh = make();
    assert_eq!(fresh.decoded_bars().count(), 0);
    fresh.restore(&blob).unwrap();
    assert_eq!(fresh.decoded_bars().count(), 2, "BAR0 and BAR2 decode");
    let (_, sent) = probe(&mut fresh);
    assert_eq!(sent, [0x55], "the pending vector went when unmasked");
    let mut m = VecMemory::new(RAM.base, RAM.size as usize);
    let status = go(&mut fresh, &mut m, ecam(1, reg::STATUS), H, None);
    assert_ne!(status & (1 << 3), 0, "Status.Interrupt Status");
}

/// Blobs no guest could have made, and blobs of another layout, are refused and
/// change nothing: a read-only configuration bit set, a reserved MSI-X address
/// bit, a pending bit past the last vector, another device number.
#[test]
fn unreachable_states_and_other_layouts_are_refused() {
    use with_probe::*;
    let mut rc = make();
    drive(&mut rc);
    let good = rc.save();
    let mut target = make();
    let before = target.save();
    // Header 8 bytes, slot count 4, the host bridge's device number at 12, its
    // configuration's length at 13 and bytes from 17.
    let config_at = 8 + 4 + 1 + 4;
    let mut bad = Vec::new();
    // The vendor ID (read-only).
    let mut b = good.clone();
    b[config_at] ^= 1;
    bad.push(b);
    // Another device number for the host bridge.
    let mut b = good.clone();
    b[12] = 3;
    bad.push(b);
    // The host bridge's Status.Interrupt Status without a pin.
    let mut b = good.clone();
    b[config_at + reg::STATUS] |= 1 << 3;
    bad.push(b);
    for b in &bad {
        assert!(target.restore(b).is_err());
        assert!(target.save() == before, "a refused blob changed the state");
    }
    // Another layout: no function at 00:01.0.
    let mut other = RootComplex::new(Layout::virt(false), &[RAM]).unwrap();
    let before = other.save();
    assert!(other.restore(&good).is_err());
    assert!(other.save() == before);
}

// --- The NVMe function -----------------------------------------------------

fn nvme_make() -> RootComplex {
    let mut rc = RootComplex::new(Layout::virt(false), &[RAM]).unwrap();
    let cfg = nvme::Config {
        io_queues: 1,
        vectors: 2,
        vendor_id: 0x1234,
        ..nvme::Config::default()
    };
    let f = NvmeFunction::new(RamDisk::new(1 << 20), cfg, 0x1234, 0x0001);
    rc.attach(1, Box::new(f)).unwrap();
    rc.set_msi_controller(Box::new(Doorbell::default()));
    rc
}

/// As Linux brings it up: BAR0, memory and bus mastering, MSI-X vector 0, the
/// admin queue enabled, Identify Controller run and completed.
fn nvme_drive(rc: &mut RootComplex) {
    let mut m = VecMemory::new(RAM.base, RAM.size as usize);
    go(rc, &mut m, ecam(1, reg::BAR0), W, Some(BAR0));
    go(rc, &mut m, ecam(1, reg::BAR0 + 4), W, Some(0));
    go(rc, &mut m, ecam(1, reg::COMMAND), H, Some(0x6));
    let cap = msix_cap(rc, &mut m, 1);
    go(rc, &mut m, ecam(1, cap as usize + 2), H, Some(1 << 15));
    let e = BAR0 + MSIX_TABLE_OFFSET;
    go(rc, &mut m, e, D, Some(DOORBELL));
    go(rc, &mut m, e + 8, W, Some(0x21));
    go(rc, &mut m, e + 12, W, Some(0));
    go(rc, &mut m, BAR0 + nreg::AQA, W, Some((15 << 16) | 15));
    go(rc, &mut m, BAR0 + nreg::ASQ, D, Some(ASQ));
    go(rc, &mut m, BAR0 + nreg::ACQ, D, Some(ACQ));
    go(
        rc,
        &mut m,
        BAR0 + nreg::CC,
        W,
        Some((4 << 20) | (6 << 16) | 1),
    );
    let mut sqe = [0u8; 64];
    sqe[0] = admin::IDENTIFY;
    sqe[2..4].copy_from_slice(&7u16.to_le_bytes());
    sqe[24..32].copy_from_slice(&IDENTIFY_BUF.to_le_bytes());
    sqe[40..44].copy_from_slice(&1u32.to_le_bytes());
    m.write(ASQ, &sqe).unwrap();
    go(rc, &mut m, BAR0 + nreg::DOORBELLS, W, Some(1));
    let mut lines = Lines::default();
    let mut ctx = MmioContext {
        vcpu: 0,
        mem: &mut m,
        irq: &mut lines,
    };
    while rc.has_work() {
        rc.poll(&mut ctx);
    }
    assert_eq!(rc.in_flight(), 0);
}

/// The configuration, the controller's registers, the MSI-X table and PBA.
fn nvme_probe(rc: &mut RootComplex) -> Vec<u64> {
    let mut out = config_probe(rc);
    let mut m = VecMemory::new(RAM.base, RAM.size as usize);
    for r in [nreg::CC, nreg::CSTS, nreg::AQA, nreg::INTMS] {
        out.push(go(rc, &mut m, BAR0 + r, W, None));
    }
    for r in [nreg::ASQ, nreg::ACQ] {
        out.push(go(rc, &mut m, BAR0 + r, D, None));
    }
    for off in (0..32).step_by(4) {
        out.push(go(rc, &mut m, BAR0 + MSIX_TABLE_OFFSET + off, W, None));
    }
    out.push(go(rc, &mut m, BAR0 + MSIX_PBA_OFFSET, D, None));
    out
}

vdev::save_restore_tests!(
    root_with_nvme,
    make: nvme_make,
    drive: nvme_drive,
    probe: nvme_probe
);

/// A restored controller carries on from the saved queue positions: the next
/// admin command (at SQ slot 1) completes in CQ slot 1 with phase 1 and the
/// vector goes to the doorbell.
#[test]
fn restored_nvme_continues_at_the_saved_queue_positions() {
    let mut rc = nvme_make();
    nvme_drive(&mut rc);
    let blob = rc.save();
    let mut fresh = nvme_make();
    fresh.restore(&blob).unwrap();
    let db = Doorbell::default();
    fresh.set_msi_controller(Box::new(db.clone()));
    let mut m = VecMemory::new(RAM.base, RAM.size as usize);
    let mut sqe = [0u8; 64];
    sqe[0] = admin::IDENTIFY;
    sqe[2..4].copy_from_slice(&9u16.to_le_bytes());
    sqe[24..32].copy_from_slice(&IDENTIFY_BUF.to_le_bytes());
    sqe[40..44].copy_from_slice(&1u32.to_le_bytes());
    m.write(ASQ + 64, &sqe).unwrap();
    go(&mut fresh, &mut m, BAR0 + nreg::DOORBELLS, W, Some(2));
    let mut lines = Lines::default();
    let mut ctx = MmioContext {
        vcpu: 0,
        mem: &mut m,
        irq: &mut lines,
    };
    while fresh.has_work() {
        fresh.poll(&mut ctx);
    }
    let dw3 = m.read_u32(ACQ + 16 + 12).unwrap();
    assert_eq!(dw3 & 0xffff, 9, "command ID in CQ slot 1");
    assert_eq!(dw3 >> 16, 1, "phase 1, success");
    assert_eq!(*db.0.lock().unwrap(), [0x21], "vector 0 sent");
}
