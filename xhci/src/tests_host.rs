//! Host tests of [`crate::host::HostLink`]: requests queued by the host reach the
//! guest's driver through the function's `poll` (input as HID reports, hot-plug as
//! Port Status Change Events), and the link refuses what cannot be done.

extern crate std;

use vdev::{GuestMemory, WorkSignal};

use pci::function::{FunctionContext, FunctionIrq, PciFunction};

use crate::controller::Config;
use crate::defs::{cc, portsc, speed, trb, trb_type};
use crate::function::XhciFunction;
use crate::hid::{Keyboard, Tablet, TabletInput};
use crate::host::{HostError, ReadOnlyImage, MAX_QUEUED};
use crate::storage::MassStorage;
use crate::testing::{Driver, RamDisk, DATA};
use crate::trb::Trb;
use crate::usb::Device;
use vdev::{AsyncBlock, BlockError, BlockOp, Completion, Submit};

const KBD_PORT: u8 = 1;
const TABLET_PORT: u8 = 2;
const STORAGE_PORT: u8 = 5;

#[derive(Default)]
struct Vectors(std::vec::Vec<u16>);

impl FunctionIrq for Vectors {
    fn msix_enabled(&self) -> bool {
        true
    }
    fn msix(&mut self, vector: u16) {
        self.0.push(vector);
    }
    fn set_intx(&mut self, _: bool) {}
}

fn function() -> XhciFunction<RamDisk> {
    let mut f = XhciFunction::new(Config::default(), 0x1234, 0x5678);
    let c = f.controller_mut();
    c.attach(KBD_PORT, Device::Keyboard(Keyboard::new(speed::HIGH)))
        .unwrap();
    c.attach(TABLET_PORT, Device::Tablet(Tablet::new(speed::HIGH)))
        .unwrap();
    c.attach(
        STORAGE_PORT,
        Device::Storage(MassStorage::new(RamDisk::patterned(64, true), speed::SUPER)),
    )
    .unwrap();
    f
}

/// Runs the function's deferred work as the root complex does.
fn poll(f: &mut XhciFunction<RamDisk>, d: &mut Driver) {
    let mut irq = Vectors::default();
    if f.has_work() {
        f.poll(&mut FunctionContext {
            vcpu: 0,
            mem: &mut d.mem,
            irq: &mut irq,
        });
    }
}

#[test]
fn a_key_and_a_tablet_state_from_the_link_reach_the_driver_as_reports() {
    let mut f = function();
    let link = f.host_link();
    let signal = WorkSignal::new();
    f.connect_work_signal(&signal);
    let mut d = Driver::new();
    d.start(f.controller_mut());
    let (kbd, _) = d.enumerate(f.controller_mut(), KBD_PORT).unwrap();
    let (tab, _) = d.enumerate(f.controller_mut(), TABLET_PORT).unwrap();
    // An interrupt IN waits for a report.
    let at = d.push(
        kbd,
        3,
        Trb::new(trb_type::NORMAL, DATA, 8, trb::IOC | trb::ISP),
    );
    d.w32(
        f.controller_mut(),
        crate::defs::layout::DOORBELLS + 4 * u64::from(kbd),
        3,
    );
    assert_eq!(d.wait_transfer(f.controller_mut(), at, 8), None);
    assert!(!f.has_work());
    assert!(!signal.take());
    // 'b' (usage 5) pressed through the link: the signal rises, the poll sends it.
    link.key(0x05, true).unwrap();
    assert!(signal.take(), "a queued request raises the work signal");
    assert!(f.has_work());
    poll(&mut f, &mut d);
    assert_eq!(link.queued(), 0);
    assert_eq!(
        d.wait_transfer(f.controller_mut(), at, 8),
        Some((cc::SUCCESS, 8))
    );
    let mut r = [0u8; 8];
    d.mem.read(DATA, &mut r).unwrap();
    assert_eq!(r, [0, 0, 0x05, 0, 0, 0, 0, 0]);
    // The release is the next report.
    link.key(0x05, false).unwrap();
    poll(&mut f, &mut d);
    assert_eq!(
        d.transfer(f.controller_mut(), kbd, 3, DATA, 8),
        Some((cc::SUCCESS, 8))
    );
    d.mem.read(DATA, &mut r).unwrap();
    assert_eq!(r, [0; 8]);
    // The tablet: position, left button, one wheel detent down.
    link.tablet(TabletInput {
        x: 0x1234,
        y: 0x0765,
        buttons: 1,
        wheel: -1,
    })
    .unwrap();
    poll(&mut f, &mut d);
    assert_eq!(
        d.transfer(f.controller_mut(), tab, 3, DATA, 6),
        Some((cc::SUCCESS, 6))
    );
    let mut t = [0u8; 6];
    d.mem.read(DATA, &mut t).unwrap();
    assert_eq!(t, [1, 0x34, 0x12, 0x65, 0x07, 0xff]);
}

#[test]
fn detach_and_attach_through_the_link_are_port_status_changes() {
    let mut f = function();
    let link = f.host_link();
    let mut d = Driver::new();
    d.start(f.controller_mut());
    d.enumerate(f.controller_mut(), STORAGE_PORT).unwrap();
    d.events.clear();
    assert!(link.attached(STORAGE_PORT) && link.has_device(STORAGE_PORT));
    assert!(!link.has_device(3));
    assert_eq!(link.attach(STORAGE_PORT), Err(HostError::AlreadyAttached));
    link.detach(STORAGE_PORT).unwrap();
    assert!(!link.attached(STORAGE_PORT));
    assert_eq!(link.detach(STORAGE_PORT), Err(HostError::NotAttached));
    // Nothing changes for the guest until the function polls.
    assert_ne!(d.portsc(f.controller_mut(), STORAGE_PORT) & portsc::CCS, 0);
    poll(&mut f, &mut d);
    let e = d
        .take(f.controller_mut(), |e| {
            e.kind() == trb_type::PORT_STATUS_CHANGE
        })
        .expect("a disconnect event");
    assert_eq!(e.param >> 24, u64::from(STORAGE_PORT));
    let sc = d.portsc(f.controller_mut(), STORAGE_PORT);
    assert_eq!(sc & (portsc::CCS | portsc::CSC), portsc::CSC);
    assert_eq!(
        f.parked().map(|(p, _)| p).collect::<std::vec::Vec<_>>(),
        [STORAGE_PORT]
    );
    // Plugged back: a connect, and the same medium enumerates again.
    link.attach(STORAGE_PORT).unwrap();
    poll(&mut f, &mut d);
    assert!(d
        .take(f.controller_mut(), |e| e.kind()
            == trb_type::PORT_STATUS_CHANGE)
        .is_some());
    assert_ne!(d.portsc(f.controller_mut(), STORAGE_PORT) & portsc::CCS, 0);
    assert_eq!(f.parked().count(), 0);
    d.enumerate(f.controller_mut(), STORAGE_PORT).unwrap();
    assert_eq!(f.controller().storage().unwrap().blocks(), 64);
}

#[test]
fn the_link_refuses_ports_without_devices_and_a_flood_of_requests() {
    let mut f = function();
    let link = f.host_link();
    for port in [0, 3, 4, 9, 31, 32, 255] {
        assert_eq!(link.detach(port), Err(HostError::NoSuchPort), "{port}");
        assert_eq!(link.attach(port), Err(HostError::NoSuchPort), "{port}");
        assert!(!link.attached(port));
    }
    for i in 0..MAX_QUEUED {
        link.key(4, i % 2 == 0).unwrap();
    }
    assert_eq!(link.key(4, true), Err(HostError::QueueFull));
    assert_eq!(link.detach(STORAGE_PORT), Err(HostError::QueueFull));
    assert!(
        link.attached(STORAGE_PORT),
        "a refused detach changes nothing"
    );
    let mut d = Driver::new();
    d.start(f.controller_mut());
    poll(&mut f, &mut d);
    assert_eq!(link.queued(), 0);
    link.detach(STORAGE_PORT).unwrap();
}

#[test]
fn a_restore_drops_waiting_requests_and_follows_the_saved_ports() {
    let mut f = function();
    let link = f.host_link();
    let blob = f.save();
    link.detach(STORAGE_PORT).unwrap();
    link.key(4, true).unwrap();
    f.restore(&blob).unwrap();
    assert_eq!(link.queued(), 0);
    assert!(link.attached(STORAGE_PORT));
    // Saved with the disk unplugged: a function that holds it plugged refuses.
    let mut d = Driver::new();
    link.detach(STORAGE_PORT).unwrap();
    poll(&mut f, &mut d);
    let unplugged = f.save();
    link.attach(STORAGE_PORT).unwrap();
    poll(&mut f, &mut d);
    assert!(f.restore(&unplugged).is_err());
    assert!(link.attached(STORAGE_PORT));
}

#[test]
fn pointer_buttons_and_wheel_accumulate_into_absolute_tablet_reports() {
    let mut f = function();
    let link = f.host_link();
    let mut d = Driver::new();
    d.start(f.controller_mut());
    let (tab, _) = d.enumerate(f.controller_mut(), TABLET_PORT).unwrap();
    let report = |f: &mut XhciFunction<RamDisk>, d: &mut Driver| {
        poll(f, d);
        assert_eq!(
            d.transfer(f.controller_mut(), tab, 3, DATA, 6),
            Some((cc::SUCCESS, 6))
        );
        let mut t = [0u8; 6];
        d.mem.read(DATA, &mut t).unwrap();
        t
    };
    link.pointer_abs(0x100, 0xffff).unwrap();
    assert_eq!(report(&mut f, &mut d), [0, 0x00, 0x01, 0xff, 0x7f, 0]);
    assert_eq!(link.button(1, true), Ok(true));
    assert_eq!(report(&mut f, &mut d), [2, 0x00, 0x01, 0xff, 0x7f, 0]);
    assert_eq!(link.button(7, true), Ok(false), "no such button");
    assert_eq!(link.queued(), 0);
    link.wheel(3).unwrap();
    assert_eq!(report(&mut f, &mut d), [2, 0x00, 0x01, 0xff, 0x7f, 3]);
    // The wheel turns once; the next report keeps buttons and position only.
    assert_eq!(link.button(1, false), Ok(true));
    assert_eq!(report(&mut f, &mut d), [0, 0x00, 0x01, 0xff, 0x7f, 0]);
}

#[test]
fn a_read_only_image_reads_whole_ranges_and_refuses_writes() {
    assert!(ReadOnlyImage::new(&[]).is_none());
    assert!(ReadOnlyImage::new(&[0; 511]).is_none());
    let bytes: std::vec::Vec<u8> = (0..2048u32).map(|i| (i * 7) as u8).collect();
    let mut img = ReadOnlyImage::new(&bytes).unwrap();
    assert_eq!(img.capacity(), 2048);
    assert!(img.read_only());
    // Requests complete inside `submit` (nothing is ever left for `poll`).
    let mut go = |op, len| match img.submit(9, op, std::vec![0u8; len]) {
        Submit::Done(Completion {
            tag: 9,
            result,
            buf,
        }) => (result, buf),
        other => panic!("an in-memory image answered {other:?}"),
    };
    let (r, buf) = go(BlockOp::Read { offset: 1536 }, 512);
    assert_eq!((r, &buf[..]), (Ok(()), &bytes[1536..]));
    assert_eq!(
        go(BlockOp::Read { offset: 1537 }, 512).0,
        Err(BlockError::OutOfRange)
    );
    assert_eq!(
        go(BlockOp::Read { offset: 1024 }, 1536).0,
        Err(BlockError::OutOfRange)
    );
    assert_eq!(
        go(BlockOp::Read { offset: u64::MAX }, 512).0,
        Err(BlockError::OutOfRange)
    );
    assert_eq!(
        go(BlockOp::Write { offset: 0 }, 512).0,
        Err(BlockError::ReadOnly)
    );
    assert_eq!(go(BlockOp::Flush, 0).0, Ok(()));
    assert!(img.poll().is_none() && !img.has_completions());
}

/// The storage device's disk completes late: the function reports the request
/// in flight (a suspend waits for it), the completion raises the work signal
/// the function was given, and the function's `poll` finishes the transfer.
/// A request of a device the host unplugged and plugged back completes into
/// nothing.
#[test]
fn a_late_disk_completion_raises_the_work_signal_and_poll_finishes_the_transfer() {
    let mut f = function();
    f.controller_mut().storage_mut().unwrap().backend_mut().hold = true;
    let link = f.host_link();
    let signal = WorkSignal::new();
    f.connect_work_signal(&signal);
    let mut d = Driver::new();
    d.start(f.controller_mut());
    let (slot, _) = d.enumerate(f.controller_mut(), STORAGE_PORT).unwrap();
    let cbw = |lba: u8| {
        let mut b = std::vec![0u8; 31];
        b[0..4].copy_from_slice(&crate::storage::CBW_SIGNATURE.to_le_bytes());
        b[8..12].copy_from_slice(&512u32.to_le_bytes());
        b[12] = 0x80;
        b[14] = 10;
        b[15] = crate::storage::op::READ_10;
        b[20] = lba;
        b[23] = 1;
        b
    };
    d.mem.write(DATA + 0x1000, &cbw(9)).unwrap();
    let c = f.controller_mut();
    assert_eq!(
        d.transfer(c, slot, 4, DATA + 0x1000, 31),
        Some((cc::SUCCESS, 31))
    );
    let at = d.push(
        slot,
        3,
        Trb::new(trb_type::NORMAL, DATA, 512, trb::IOC | trb::ISP),
    );
    d.w32(
        f.controller_mut(),
        crate::defs::layout::DOORBELLS + 4 * u64::from(slot),
        3,
    );
    assert_eq!(f.in_flight(), 1);
    assert!(!f.has_work() && !signal.take());
    assert_eq!(d.wait_transfer(f.controller_mut(), at, 512), None);
    let disk = f.controller_mut().storage_mut().unwrap().backend_mut();
    assert!(disk.complete(0));
    assert!(
        signal.take(),
        "the completion did not raise the work signal"
    );
    assert!(f.has_work());
    poll(&mut f, &mut d);
    assert_eq!(f.in_flight(), 0);
    assert_eq!(
        d.wait_transfer(f.controller_mut(), at, 512),
        Some((cc::SUCCESS, 512))
    );
    let mut got = [0u8; 512];
    d.mem.read(DATA, &mut got).unwrap();
    assert_eq!(
        &got[..],
        &RamDisk::patterned(64, true).data[9 * 512..10 * 512]
    );
    let csw = d.push(
        slot,
        3,
        Trb::new(trb_type::NORMAL, DATA + 0x2000, 13, trb::IOC | trb::ISP),
    );
    d.w32(
        f.controller_mut(),
        crate::defs::layout::DOORBELLS + 4 * u64::from(slot),
        3,
    );
    assert_eq!(
        d.wait_transfer(f.controller_mut(), csw, 13),
        Some((cc::SUCCESS, 13))
    );

    // Unplugged with a read at the disk: counted until it completes, then gone.
    d.mem.write(DATA + 0x1000, &cbw(3)).unwrap();
    assert_eq!(
        d.transfer(f.controller_mut(), slot, 4, DATA + 0x1000, 31),
        Some((cc::SUCCESS, 31))
    );
    assert_eq!(f.in_flight(), 1);
    link.detach(STORAGE_PORT).unwrap();
    poll(&mut f, &mut d);
    assert_eq!(f.parked().count(), 1);
    assert_eq!(
        f.in_flight(),
        1,
        "a parked device's request is still in flight"
    );
    let Some((_, Device::Storage(s))) = f.parked().next() else {
        panic!("the storage device is not parked");
    };
    assert_eq!(s.backend().held.len(), 1);
    // Plugged back (a bus reset: the read is abandoned), its late completion
    // is taken and dropped.
    link.attach(STORAGE_PORT).unwrap();
    poll(&mut f, &mut d);
    let disk = f.controller_mut().storage_mut().unwrap().backend_mut();
    assert!(disk.complete(0));
    assert!(signal.take());
    poll(&mut f, &mut d);
    assert_eq!(f.in_flight(), 0);
}
