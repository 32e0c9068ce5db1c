//! Host tests: a driver ([`crate::testing::Driver`]) brings the controller up and
//! talks to its devices only through registers, rings and guest memory.

extern crate std;

use alloc::vec;
use alloc::vec::Vec;

use vdev::{AccessSize, GuestMemory};

use crate::controller::{Config, Controller};
use crate::defs::{cc, ctx, intr, layout, op, portsc, speed, trb, trb_type, usb, usbsts};
use crate::hid::{Keyboard, Tablet, TabletInput, BOOT_PROTOCOL};
use crate::storage::{op as scsi, sense, MassStorage, CSW_FAILED, CSW_PASSED};
use crate::testing::{Driver, RamDisk, DATA, RAM_BASE};
use crate::trb::Trb;
use crate::usb::{Device, Setup};

const KBD_PORT: u8 = 1;
const TABLET_PORT: u8 = 2;
const STORAGE_PORT: u8 = 5;
const DISK_SECTORS: usize = 256;

/// A controller with a keyboard and a tablet on USB 2 ports and a writable disk on
/// the first USB 3 port.
fn machine(read_only: bool) -> Controller<RamDisk> {
    let mut c = Controller::new(Config::default());
    c.attach(KBD_PORT, Device::Keyboard(Keyboard::new(speed::HIGH)))
        .unwrap();
    c.attach(TABLET_PORT, Device::Tablet(Tablet::new(speed::HIGH)))
        .unwrap();
    c.attach(
        STORAGE_PORT,
        Device::Storage(MassStorage::new(
            RamDisk::patterned(DISK_SECTORS, read_only),
            speed::SUPER,
        )),
    )
    .unwrap();
    c
}

fn started(read_only: bool) -> (Controller<RamDisk>, Driver) {
    let mut c = machine(read_only);
    let mut d = Driver::new();
    d.start(&mut c);
    (c, d)
}

fn code(e: &Trb) -> u8 {
    (e.status >> 24) as u8
}

#[test]
fn capability_registers_describe_the_controller() {
    let mut c = machine(false);
    let r = |c: &mut Controller<RamDisk>, o| c.read(o, AccessSize::Word).unwrap() as u32;
    assert_eq!(c.read(0, AccessSize::Byte).unwrap(), layout::CAP_LENGTH);
    assert_eq!(c.read(2, AccessSize::Half).unwrap(), 0x0110);
    let hcs1 = r(&mut c, 0x04);
    assert_eq!(hcs1 & 0xff, 32, "MaxSlots");
    assert_eq!((hcs1 >> 8) & 0x7ff, 1, "MaxIntrs");
    assert_eq!(hcs1 >> 24, 8, "MaxPorts");
    assert_eq!(r(&mut c, 0x14), layout::DOORBELLS as u32);
    assert_eq!(r(&mut c, 0x18), layout::RUNTIME as u32);
    // Walk the extended capabilities as a driver does: USB 2 ports 1-4, USB 3 5-8.
    let mut at = u64::from(r(&mut c, 0x10) >> 16) * 4;
    let mut found = Vec::new();
    while at != 0 {
        let head = r(&mut c, at);
        assert_eq!(head & 0xff, 2, "Supported Protocol");
        assert_eq!(r(&mut c, at + 4), u32::from_le_bytes(*b"USB "));
        let ports = r(&mut c, at + 8);
        found.push((head >> 24, ports & 0xff, (ports >> 8) & 0xff));
        let next = (head >> 8) & 0xff;
        at = if next == 0 {
            0
        } else {
            at + 4 * u64::from(next)
        };
    }
    assert_eq!(found, vec![(2, 1, 4), (3, 5, 4)]);
    // Unaligned and byte writes are refused, not panics.
    let mut d = Driver::new();
    assert!(c.read(3, AccessSize::Word).is_err());
    assert!(c
        .write(&mut d.mem, &mut d.irq, 0x40, AccessSize::Byte, 1)
        .is_err());
}

#[test]
fn start_reports_connected_ports_with_events_and_an_interrupt() {
    let (mut c, mut d) = started(false);
    let sts = d.r32(&mut c, layout::OPER + op::USBSTS);
    assert_eq!(sts & usbsts::HCH, 0, "running");
    assert!(d.irq.signals.contains(&0), "MSI-X vector 0 signalled");
    d.drain(&mut c);
    let mut ports: Vec<u64> = d
        .events
        .iter()
        .filter(|e| e.kind() == trb_type::PORT_STATUS_CHANGE)
        .map(|e| e.param >> 24)
        .collect();
    ports.sort();
    assert_eq!(ports, vec![1, 2, 5]);
    // USB 2 port: connected, not enabled until reset; USB 3: enabled, U0, SuperSpeed.
    let p1 = d.portsc(&mut c, KBD_PORT);
    assert_eq!(p1 & (portsc::CCS | portsc::PED), portsc::CCS);
    let p5 = d.portsc(&mut c, STORAGE_PORT);
    assert_eq!(p5 & (portsc::CCS | portsc::PED), portsc::CCS | portsc::PED);
    assert_eq!((p5 >> portsc::SPEED_SHIFT) & 0xf, speed::SUPER);
    assert_eq!(d.portsc(&mut c, 3) & portsc::CCS, 0);
    assert!(d.reset_port(&mut c, KBD_PORT));
    let p1 = d.portsc(&mut c, KBD_PORT);
    assert_eq!(p1 & portsc::PED, portsc::PED);
    assert_eq!((p1 >> portsc::SPEED_SHIFT) & 0xf, speed::HIGH);
}

#[test]
fn keyboard_enumerates_and_an_injected_key_reaches_the_driver() {
    let (mut c, mut d) = started(false);
    let (slot, dev) = d.enumerate(&mut c, KBD_PORT).unwrap();
    assert_eq!(dev[0], 18);
    assert_eq!(dev[1], usb::DT_DEVICE);
    assert_eq!(u16::from_le_bytes([dev[8], dev[9]]), crate::hid::VENDOR_ID);
    // The slot is Configured in the output context, with the guest's address.
    assert_eq!(d.out_slot(slot, 3) >> 27, ctx::SLOT_CONFIGURED);
    assert_eq!(d.out_slot(slot, 3) & 0xff, u32::from(slot));
    assert_eq!(d.out_ep(slot, 3, 0) & 7, ctx::EP_RUNNING);
    // Strings and the HID report descriptor.
    let s = d
        .get_descriptor(&mut c, slot, 0x80, usb::DT_STRING, 2, 255)
        .unwrap();
    let name: Vec<u16> = s[2..]
        .chunks(2)
        .map(|p| u16::from_le_bytes([p[0], p[1]]))
        .collect();
    assert_eq!(
        std::string::String::from_utf16(&name).unwrap(),
        "RayOS USB Keyboard"
    );
    let rd = d
        .get_descriptor(&mut c, slot, 0x81, usb::DT_HID_REPORT, 0, 255)
        .unwrap();
    assert_eq!(rd, crate::hid::KEYBOARD_REPORT_DESCRIPTOR);
    // SET_IDLE 0 and the boot protocol, as a BIOS-style driver does.
    let class_out = |request, value| Setup {
        request_type: 0x21,
        request,
        value,
        index: 0,
        length: 0,
    };
    d.control(&mut c, slot, class_out(usb::HID_SET_IDLE, 0), &[])
        .unwrap();
    d.control(&mut c, slot, class_out(usb::HID_SET_PROTOCOL, 0), &[])
        .unwrap();
    assert_eq!(c.keyboard().unwrap().protocol, BOOT_PROTOCOL);
    // An interrupt IN transfer waits (NAK) until the host injects a key.
    let at = d.push(
        slot,
        3,
        Trb::new(trb_type::NORMAL, DATA, 8, trb::IOC | trb::ISP),
    );
    d.w32(&mut c, layout::DOORBELLS + 4 * u64::from(slot), 3);
    assert_eq!(d.wait_transfer(&mut c, at, 8), None);
    assert!(!c.has_work());
    // 'a' (usage 4) with Left Shift.
    assert!(c.keyboard_key(0xe1, true));
    assert!(c.keyboard_key(0x04, true));
    assert!(c.has_work());
    c.poll(&mut d.mem, &mut d.irq);
    assert_eq!(d.wait_transfer(&mut c, at, 8), Some((cc::SUCCESS, 8)));
    let mut r = [0u8; 8];
    d.mem.read(DATA, &mut r).unwrap();
    assert_eq!(r, [0x02, 0, 0, 0, 0, 0, 0, 0], "Shift down first");
    assert_eq!(d.transfer(&mut c, slot, 3, DATA, 8), Some((cc::SUCCESS, 8)));
    d.mem.read(DATA, &mut r).unwrap();
    assert_eq!(r, [0x02, 0, 0x04, 0, 0, 0, 0, 0]);
    // LEDs: SET_REPORT(Output) with Caps Lock.
    let set_report = Setup {
        request_type: 0x21,
        request: usb::HID_SET_REPORT,
        value: 0x0200,
        index: 0,
        length: 1,
    };
    d.control(&mut c, slot, set_report, &[0x02]).unwrap();
    assert_eq!(c.keyboard().unwrap().leds, 0x02);
}

#[test]
fn tablet_reports_absolute_position_buttons_and_wheel() {
    let (mut c, mut d) = started(false);
    let (slot, _) = d.enumerate(&mut c, TABLET_PORT).unwrap();
    let rd = d
        .get_descriptor(&mut c, slot, 0x81, usb::DT_HID_REPORT, 0, 255)
        .unwrap();
    assert_eq!(rd, crate::hid::TABLET_REPORT_DESCRIPTOR);
    assert!(c.tablet_inject(TabletInput {
        x: 0x1234,
        y: 0xffff,
        buttons: 0b101,
        wheel: -3,
    }));
    assert_eq!(
        d.transfer(&mut c, slot, 3, DATA, 8),
        Some((cc::SHORT_PACKET, 6))
    );
    let mut r = [0u8; 6];
    d.mem.read(DATA, &mut r).unwrap();
    assert_eq!(
        r,
        [0b101, 0x34, 0x12, 0xff, 0x7f, (-3i8) as u8],
        "Y clamped to 0x7fff"
    );
}

/// READ CAPACITY(10) CDB.
fn cdb10(op: u8, lba: u32, blocks: u16) -> Vec<u8> {
    let mut c = vec![op, 0];
    c.extend_from_slice(&lba.to_be_bytes());
    c.push(0);
    c.extend_from_slice(&blocks.to_be_bytes());
    c.push(0);
    c
}

fn cdb16(op: u8, lba: u64, blocks: u32) -> Vec<u8> {
    let mut c = vec![op, 0];
    c.extend_from_slice(&lba.to_be_bytes());
    c.extend_from_slice(&blocks.to_be_bytes());
    c.extend_from_slice(&[0, 0]);
    c
}

fn sector(n: usize) -> Vec<u8> {
    RamDisk::patterned(DISK_SECTORS, false).data[n * 512..(n + 1) * 512].to_vec()
}

#[test]
fn storage_enumerates_at_superspeed_and_reads_and_writes_sectors() {
    let (mut c, mut d) = started(false);
    let (slot, dev) = d.enumerate(&mut c, STORAGE_PORT).unwrap();
    assert_eq!(u16::from_le_bytes([dev[2], dev[3]]), 0x0320);
    assert_eq!(dev[7], 9, "512-byte EP0 at SuperSpeed");
    let bos = d
        .get_descriptor(&mut c, slot, 0x80, usb::DT_BOS, 0, 255)
        .unwrap();
    assert_eq!(bos[1], usb::DT_BOS);
    // INQUIRY.
    let (inq, st, res) = d
        .bot(&mut c, slot, &[scsi::INQUIRY, 0, 0, 0, 36, 0], 36, &[])
        .unwrap();
    assert_eq!((st, res), (CSW_PASSED, 0));
    assert_eq!(inq[0], 0, "direct-access block device");
    assert_eq!(&inq[8..13], b"RayOS");
    // TEST UNIT READY.
    let (_, st, _) = d.bot(&mut c, slot, &[0; 6], 0, &[]).unwrap();
    assert_eq!(st, CSW_PASSED);
    // READ CAPACITY(10) and (16).
    let (cap, st, _) = d
        .bot(&mut c, slot, &cdb10(scsi::READ_CAPACITY_10, 0, 0), 8, &[])
        .unwrap();
    assert_eq!(st, CSW_PASSED);
    assert_eq!(cap, [0, 0, 0, 255, 0, 0, 2, 0]);
    let mut rc16 = cdb16(scsi::SERVICE_ACTION_IN_16, 0, 32);
    rc16[1] = scsi::SA_READ_CAPACITY_16;
    let (cap, st, _) = d.bot(&mut c, slot, &rc16, 32, &[]).unwrap();
    assert_eq!(st, CSW_PASSED);
    assert_eq!(&cap[..12], &[0, 0, 0, 0, 0, 0, 0, 255, 0, 0, 2, 0]);
    // READ(10) of sectors 3..5, READ(16) of sector 255.
    let (data, st, res) = d
        .bot(&mut c, slot, &cdb10(scsi::READ_10, 3, 2), 1024, &[])
        .unwrap();
    assert_eq!((st, res), (CSW_PASSED, 0));
    assert_eq!(data[..512], sector(3)[..]);
    assert_eq!(data[512..], sector(4)[..]);
    let (data, st, _) = d
        .bot(&mut c, slot, &cdb16(scsi::READ_16, 255, 1), 512, &[])
        .unwrap();
    assert_eq!(st, CSW_PASSED);
    assert_eq!(data, sector(255));
    // WRITE(10) then read back; WRITE(16) too.
    let payload: Vec<u8> = (0..1024u32).map(|i| (i * 13) as u8).collect();
    let (_, st, res) = d
        .bot(&mut c, slot, &cdb10(scsi::WRITE_10, 10, 2), 0, &payload)
        .unwrap();
    assert_eq!((st, res), (CSW_PASSED, 0));
    let (back, _, _) = d
        .bot(&mut c, slot, &cdb10(scsi::READ_10, 10, 2), 1024, &[])
        .unwrap();
    assert_eq!(back, payload);
    let (_, st, _) = d
        .bot(
            &mut c,
            slot,
            &cdb16(scsi::WRITE_16, 200, 1),
            0,
            &payload[..512],
        )
        .unwrap();
    assert_eq!(st, CSW_PASSED);
    assert_eq!(
        c.storage().unwrap().backend().data[200 * 512..201 * 512],
        payload[..512]
    );
    // MODE SENSE(6) and (10): not write protected.
    let (ms, st, _) = d
        .bot(
            &mut c,
            slot,
            &[scsi::MODE_SENSE_6, 0, 0x3f, 0, 192, 0],
            192,
            &[],
        )
        .unwrap();
    assert_eq!(st, CSW_PASSED);
    assert_eq!(ms[2] & 0x80, 0);
    assert_eq!(usize::from(ms[0]) + 1, ms.len());
    let (ms, st, _) = d
        .bot(
            &mut c,
            slot,
            &[scsi::MODE_SENSE_10, 0, 0x3f, 0, 0, 0, 0, 0, 192, 0],
            192,
            &[],
        )
        .unwrap();
    assert_eq!(st, CSW_PASSED);
    assert_eq!(
        usize::from(u16::from_be_bytes([ms[0], ms[1]])) + 2,
        ms.len()
    );
}

#[test]
fn read_only_image_refuses_writes_with_data_protect_sense() {
    let (mut c, mut d) = started(true);
    let (slot, _) = d.enumerate(&mut c, STORAGE_PORT).unwrap();
    let (ms, _, _) = d
        .bot(
            &mut c,
            slot,
            &[scsi::MODE_SENSE_6, 0, 0x3f, 0, 192, 0],
            192,
            &[],
        )
        .unwrap();
    assert_eq!(ms[2] & 0x80, 0x80, "write protected");
    let (_, st, res) = d
        .bot(&mut c, slot, &cdb10(scsi::WRITE_10, 0, 1), 0, &[0xaa; 512])
        .unwrap();
    assert_eq!((st, res), (CSW_FAILED, 512));
    let (s, st, _) = d
        .bot(
            &mut c,
            slot,
            &[scsi::REQUEST_SENSE, 0, 0, 0, 18, 0],
            18,
            &[],
        )
        .unwrap();
    assert_eq!(st, CSW_PASSED);
    assert_eq!(
        (s[2], s[12]),
        (sense::DATA_PROTECT, sense::WRITE_PROTECTED.0)
    );
    assert_eq!(c.storage().unwrap().backend().data[..512], sector(0)[..]);
    // Out of range and unknown commands: ILLEGAL REQUEST, and the next command works.
    let (_, st, _) = d
        .bot(&mut c, slot, &cdb10(scsi::READ_10, 255, 2), 1024, &[])
        .unwrap();
    assert_eq!(st, CSW_FAILED);
    let (s, _, _) = d
        .bot(
            &mut c,
            slot,
            &[scsi::REQUEST_SENSE, 0, 0, 0, 18, 0],
            18,
            &[],
        )
        .unwrap();
    assert_eq!(
        (s[2], s[12]),
        (sense::ILLEGAL_REQUEST, sense::LBA_OUT_OF_RANGE.0)
    );
    let (_, st, _) = d.bot(&mut c, slot, &[0xee, 0, 0, 0, 0, 0], 0, &[]).unwrap();
    assert_eq!(st, CSW_FAILED);
    let (data, st, _) = d
        .bot(&mut c, slot, &cdb10(scsi::READ_10, 1, 1), 512, &[])
        .unwrap();
    assert_eq!((data, st), (sector(1), CSW_PASSED));
}

#[test]
fn invalid_cbw_stalls_until_reset_recovery() {
    let (mut c, mut d) = started(false);
    let (slot, _) = d.enumerate(&mut c, STORAGE_PORT).unwrap();
    d.mem.write(DATA, &[0x55; 31]).unwrap();
    assert_eq!(
        d.transfer(&mut c, slot, 4, DATA, 31),
        Some((cc::SUCCESS, 31))
    );
    // The CSW read stalls; the endpoint halts.
    assert_eq!(
        d.transfer(&mut c, slot, 3, DATA, 13).map(|r| r.0),
        Some(cc::STALL)
    );
    assert_eq!(d.out_ep(slot, 3, 0) & 7, ctx::EP_HALTED);
    // Reset Recovery: class reset, CLEAR_FEATURE(HALT) on both, Reset Endpoint and
    // Set TR Dequeue on the host side.
    let bot_reset = Setup {
        request_type: 0x21,
        request: usb::BOT_RESET,
        value: 0,
        index: 0,
        length: 0,
    };
    d.control(&mut c, slot, bot_reset, &[]).unwrap();
    for ep in [0x81u16, 0x02] {
        let clear = Setup {
            request_type: 0x02,
            request: usb::CLEAR_FEATURE,
            value: usb::ENDPOINT_HALT,
            index: ep,
            length: 0,
        };
        d.control(&mut c, slot, clear, &[]).unwrap();
    }
    recover(&mut c, &mut d, slot, 3);
    let (data, st, _) = d
        .bot(&mut c, slot, &cdb10(scsi::READ_10, 7, 1), 512, &[])
        .unwrap();
    assert_eq!((data, st), (sector(7), CSW_PASSED));
}

/// Reset Endpoint, then Set TR Dequeue Pointer to the ring's enqueue position.
fn recover(c: &mut Controller<RamDisk>, d: &mut Driver, slot: u8, dci: u8) {
    let ctrl = u32::from(slot) << trb::SLOT_SHIFT | u32::from(dci) << trb::EP_SHIFT;
    assert_eq!(
        d.cmd(c, Trb::new(trb_type::RESET_ENDPOINT, 0, 0, ctrl)).0,
        cc::SUCCESS
    );
    assert_eq!(d.out_ep(slot, dci, 0) & 7, ctx::EP_STOPPED);
    let r = d.rings[&(slot, dci)];
    let deq = r.enqueue | u64::from(r.cycle);
    assert_eq!(
        d.cmd(c, Trb::new(trb_type::SET_TR_DEQUEUE, deq, 0, ctrl)).0,
        cc::SUCCESS
    );
    assert_eq!(u64::from(d.out_ep(slot, dci, 2)), deq & 0xffff_ffff);
}

#[test]
fn malformed_control_requests_stall_and_the_endpoint_recovers() {
    let (mut c, mut d) = started(false);
    let (slot, _) = d.enumerate(&mut c, KBD_PORT).unwrap();
    let bad = [
        // Unknown standard request.
        Setup {
            request_type: 0x80,
            request: 0x77,
            value: 0,
            index: 0,
            length: 4,
        },
        // Descriptor the device does not have.
        Setup {
            request_type: 0x80,
            request: usb::GET_DESCRIPTOR,
            value: 0x0900,
            index: 0,
            length: 4,
        },
        // String index past the table.
        Setup {
            request_type: 0x80,
            request: usb::GET_DESCRIPTOR,
            value: 0x03f0,
            index: 0,
            length: 4,
        },
        // Configuration 7.
        Setup {
            request_type: 0x00,
            request: usb::SET_CONFIGURATION,
            value: 7,
            index: 0,
            length: 0,
        },
        // CLEAR_FEATURE(HALT) of an endpoint the device lacks.
        Setup {
            request_type: 0x02,
            request: usb::CLEAR_FEATURE,
            value: 0,
            index: 0x85,
            length: 0,
        },
        // HID request to interface 3.
        Setup {
            request_type: 0x21,
            request: usb::HID_SET_IDLE,
            value: 0,
            index: 3,
            length: 0,
        },
        // SET_ADDRESS 200.
        Setup {
            request_type: 0x00,
            request: usb::SET_ADDRESS,
            value: 200,
            index: 0,
            length: 0,
        },
    ];
    for s in bad {
        assert_eq!(d.control(&mut c, slot, s, &[]), Err(cc::STALL), "{s:?}");
        assert_eq!(d.out_ep(slot, 1, 0) & 7, ctx::EP_HALTED);
        recover(&mut c, &mut d, slot, 1);
    }
    // An OUT data stage longer than wLength says is malformed too.
    let s = Setup {
        request_type: 0x21,
        request: usb::HID_SET_REPORT,
        value: 0x0200,
        index: 0,
        length: 0,
    };
    d.push(
        slot,
        1,
        Trb::new(trb_type::SETUP_STAGE, s.to_u64(), 8, trb::IDT),
    );
    d.push(slot, 1, Trb::new(trb_type::DATA_STAGE, DATA, 64, 0));
    let st = d.push(
        slot,
        1,
        Trb::new(trb_type::STATUS_STAGE, 0, 0, trb::IOC | trb::DIR_IN),
    );
    d.w32(&mut c, layout::DOORBELLS + 4 * u64::from(slot), 1);
    d.drain(&mut c);
    assert!(d
        .events
        .iter()
        .any(|e| e.kind() == trb_type::TRANSFER_EVENT && code(e) == cc::STALL));
    assert!(!d.events.iter().any(|e| e.param == st));
    d.events.clear();
    recover(&mut c, &mut d, slot, 1);
    // An IN request with wLength 18 but no Data Stage.
    let s = Setup {
        request_type: 0x80,
        request: usb::GET_DESCRIPTOR,
        value: 0x0100,
        index: 0,
        length: 18,
    };
    d.push(
        slot,
        1,
        Trb::new(trb_type::SETUP_STAGE, s.to_u64(), 8, trb::IDT),
    );
    d.push(
        slot,
        1,
        Trb::new(trb_type::STATUS_STAGE, 0, 0, trb::IOC | trb::DIR_IN),
    );
    d.w32(&mut c, layout::DOORBELLS + 4 * u64::from(slot), 1);
    let e = d
        .take(&mut c, |e| e.kind() == trb_type::TRANSFER_EVENT)
        .unwrap();
    assert_eq!(code(&e), cc::STALL);
    recover(&mut c, &mut d, slot, 1);
    let dev = d
        .get_descriptor(&mut c, slot, 0x80, usb::DT_DEVICE, 0, 18)
        .unwrap();
    assert_eq!(dev.len(), 18);
}

#[test]
fn a_nakked_bulk_out_goes_through_once_the_device_moves_on() {
    let (mut c, mut d) = started(false);
    let (slot, _) = d.enumerate(&mut c, STORAGE_PORT).unwrap();
    let cbw = |tag: u32, len: u32, cdb: &[u8]| {
        let mut b = vec![0u8; 31];
        b[0..4].copy_from_slice(&crate::storage::CBW_SIGNATURE.to_le_bytes());
        b[4..8].copy_from_slice(&tag.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[12] = 0x80;
        b[14] = cdb.len() as u8;
        b[15..15 + cdb.len()].copy_from_slice(cdb);
        b
    };
    d.mem
        .write(DATA, &cbw(1, 512, &cdb10(scsi::READ_10, 6, 1)))
        .unwrap();
    assert_eq!(
        d.transfer(&mut c, slot, 4, DATA, 31),
        Some((cc::SUCCESS, 31))
    );
    // The next CBW before the data and CSW were read: the device NAKs it.
    d.mem
        .write(
            DATA + 0x100,
            &cbw(2, 0, &[scsi::TEST_UNIT_READY, 0, 0, 0, 0, 0]),
        )
        .unwrap();
    let second = d.push(
        slot,
        4,
        Trb::new(trb_type::NORMAL, DATA + 0x100, 31, trb::IOC),
    );
    d.w32(&mut c, layout::DOORBELLS + 4 * u64::from(slot), 4);
    assert_eq!(d.wait_transfer(&mut c, second, 31), None);
    assert_eq!(
        d.transfer(&mut c, slot, 3, DATA + 0x1000, 512),
        Some((cc::SUCCESS, 512))
    );
    assert_eq!(
        d.transfer(&mut c, slot, 3, DATA + 0x2000, 13),
        Some((cc::SUCCESS, 13))
    );
    // The CSW went out; the waiting CBW is taken from the next poll.
    assert!(c.has_work());
    c.poll(&mut d.mem, &mut d.irq);
    assert_eq!(d.wait_transfer(&mut c, second, 31), Some((cc::SUCCESS, 31)));
    assert_eq!(
        d.transfer(&mut c, slot, 3, DATA + 0x3000, 13),
        Some((cc::SUCCESS, 13))
    );
    let mut csw = [0u8; 13];
    d.mem.read(DATA + 0x3000, &mut csw).unwrap();
    assert_eq!((csw[4], csw[12]), (2, CSW_PASSED));
}

#[test]
fn commands_validate_slot_and_endpoint_ids() {
    let (mut c, mut d) = started(false);
    for s in [0u8, 1, 33, 255] {
        let ctrl = u32::from(s) << trb::SLOT_SHIFT;
        assert_eq!(
            d.cmd(&mut c, Trb::new(trb_type::DISABLE_SLOT, 0, 0, ctrl))
                .0,
            cc::SLOT_NOT_ENABLED
        );
        assert_eq!(
            d.cmd(
                &mut c,
                Trb::new(trb_type::ADDRESS_DEVICE, crate::testing::INPUT_CTX, 0, ctrl)
            )
            .0,
            cc::SLOT_NOT_ENABLED
        );
        let ep = ctrl | 3 << trb::EP_SHIFT;
        assert_eq!(
            d.cmd(&mut c, Trb::new(trb_type::STOP_ENDPOINT, 0, 0, ep)).0,
            cc::SLOT_NOT_ENABLED
        );
    }
    let slot = d.enable_slot(&mut c).unwrap();
    let ctrl = u32::from(slot) << trb::SLOT_SHIFT;
    // Endpoint 0 is no endpoint; a disabled endpoint is not enabled.
    assert_eq!(
        d.cmd(&mut c, Trb::new(trb_type::RESET_ENDPOINT, 0, 0, ctrl))
            .0,
        cc::TRB
    );
    assert_eq!(
        d.cmd(
            &mut c,
            Trb::new(trb_type::STOP_ENDPOINT, 0, 0, ctrl | 5 << trb::EP_SHIFT)
        )
        .0,
        cc::ENDPOINT_NOT_ENABLED
    );
    // Configure before Address: context state error.
    assert_eq!(
        d.cmd(
            &mut c,
            Trb::new(
                trb_type::CONFIGURE_ENDPOINT,
                crate::testing::INPUT_CTX,
                0,
                ctrl
            )
        )
        .0,
        cc::CONTEXT_STATE
    );
    // Address to a port without a device, an input context outside RAM.
    assert_eq!(
        d.address(&mut c, slot, 3, speed::HIGH, 64),
        cc::USB_TRANSACTION
    );
    assert_eq!(
        d.cmd(
            &mut c,
            Trb::new(trb_type::ADDRESS_DEVICE, 0x10_0000, 0, ctrl)
        )
        .0,
        cc::PARAMETER
    );
    // Transfer-ring TRB types, unknown types and reserved ones on the command ring.
    for t in [trb_type::NORMAL, trb_type::SETUP_STAGE, 40, 63] {
        assert_eq!(d.cmd(&mut c, Trb::new(t, 0, 0, 0)).0, cc::TRB);
    }
    assert_eq!(
        d.cmd(&mut c, Trb::new(trb_type::NO_OP_COMMAND, 0, 0, 0)).0,
        cc::SUCCESS
    );
    // Doorbells of slots that do not exist are ignored.
    for s in [2u64, 40, 255] {
        d.w32(&mut c, layout::DOORBELLS + 4 * s, 1);
    }
    assert!(!c.halted_with_error());
    // Every slot taken: No Slots Available.
    for _ in 1..32 {
        d.enable_slot(&mut c).unwrap();
    }
    assert_eq!(d.enable_slot(&mut c), Err(cc::NO_SLOTS));
    assert_eq!(
        d.cmd(&mut c, Trb::new(trb_type::DISABLE_SLOT, 0, 0, ctrl))
            .0,
        cc::SUCCESS
    );
    assert_eq!(d.enable_slot(&mut c), Ok(slot));
}

#[test]
fn endpoint_commands_follow_the_endpoint_state_machine() {
    let (mut c, mut d) = started(false);
    let (slot, _) = d.enumerate(&mut c, STORAGE_PORT).unwrap();
    let ep = |dci: u32| u32::from(slot) << trb::SLOT_SHIFT | dci << trb::EP_SHIFT;
    // Reset Endpoint of a running endpoint, Set TR Dequeue of a running endpoint.
    assert_eq!(
        d.cmd(&mut c, Trb::new(trb_type::RESET_ENDPOINT, 0, 0, ep(3)))
            .0,
        cc::CONTEXT_STATE
    );
    assert_eq!(
        d.cmd(
            &mut c,
            Trb::new(trb_type::SET_TR_DEQUEUE, DATA | 1, 0, ep(3))
        )
        .0,
        cc::CONTEXT_STATE
    );
    // Stop, twice.
    assert_eq!(
        d.cmd(&mut c, Trb::new(trb_type::STOP_ENDPOINT, 0, 0, ep(3)))
            .0,
        cc::SUCCESS
    );
    assert_eq!(d.out_ep(slot, 3, 0) & 7, ctx::EP_STOPPED);
    assert_eq!(
        d.cmd(&mut c, Trb::new(trb_type::STOP_ENDPOINT, 0, 0, ep(3)))
            .0,
        cc::CONTEXT_STATE
    );
    // A doorbell restarts it.
    let (data, st, _) = d
        .bot(&mut c, slot, &cdb10(scsi::READ_10, 9, 1), 512, &[])
        .unwrap();
    assert_eq!((data, st), (sector(9), CSW_PASSED));
    assert_eq!(d.out_ep(slot, 3, 0) & 7, ctx::EP_RUNNING);
    // Evaluate Context changes EP0's max packet size and the max exit latency.
    crate::testing::Driver::new();
    let input = crate::testing::INPUT_CTX;
    d.mem.write(input, &[0u8; 96]).unwrap();
    d.mem.write_u32(input + 4, 0b11).unwrap();
    d.mem.write_u32(input + 32 + 4, 77).unwrap();
    d.mem.write_u32(input + 64 + 4, 256 << 16).unwrap();
    let ctrl = u32::from(slot) << trb::SLOT_SHIFT;
    assert_eq!(
        d.cmd(&mut c, Trb::new(trb_type::EVALUATE_CONTEXT, input, 0, ctrl))
            .0,
        cc::SUCCESS
    );
    assert_eq!(d.out_ep(slot, 1, 1) >> 16, 256);
    assert_eq!(d.out_slot(slot, 1) & 0xffff, 77);
    // Deconfigure, then Reset Device, then Disable Slot.
    assert_eq!(
        d.cmd(
            &mut c,
            Trb::new(trb_type::CONFIGURE_ENDPOINT, 0, 0, ctrl | trb::DC)
        )
        .0,
        cc::SUCCESS
    );
    assert_eq!(d.out_slot(slot, 3) >> 27, ctx::SLOT_ADDRESSED);
    assert_eq!(d.out_ep(slot, 3, 0) & 7, ctx::EP_DISABLED);
    assert_eq!(
        d.cmd(&mut c, Trb::new(trb_type::RESET_DEVICE, 0, 0, ctrl))
            .0,
        cc::SUCCESS
    );
    assert_eq!(d.out_slot(slot, 3) >> 27, ctx::SLOT_DEFAULT);
    assert_eq!(
        d.cmd(&mut c, Trb::new(trb_type::RESET_DEVICE, 0, 0, ctrl))
            .0,
        cc::CONTEXT_STATE
    );
    assert_eq!(
        d.cmd(&mut c, Trb::new(trb_type::DISABLE_SLOT, 0, 0, ctrl))
            .0,
        cc::SUCCESS
    );
    assert_eq!(
        d.cmd(&mut c, Trb::new(trb_type::DISABLE_SLOT, 0, 0, ctrl))
            .0,
        cc::SLOT_NOT_ENABLED
    );
}

#[test]
fn address_device_with_bsr_stays_default_until_a_second_address() {
    let (mut c, mut d) = started(false);
    assert!(d.reset_port(&mut c, KBD_PORT));
    let slot = d.enable_slot(&mut c).unwrap();
    d.address(&mut c, slot, KBD_PORT, speed::HIGH, 64);
    // That was BSR=0; a fresh slot with BSR=1:
    let slot2 = d.enable_slot(&mut c).unwrap();
    let ctrl = u32::from(slot2) << trb::SLOT_SHIFT;
    let out = crate::testing::DEVICE_CTX + u64::from(slot2) * 0x800;
    d.mem
        .write_u64(crate::testing::DCBAA + 8 * u64::from(slot2), out)
        .unwrap();
    assert_eq!(
        d.cmd(
            &mut c,
            Trb::new(
                trb_type::ADDRESS_DEVICE,
                crate::testing::INPUT_CTX,
                0,
                ctrl | trb::BSR
            )
        )
        .0,
        cc::SUCCESS
    );
    assert_eq!(d.out_slot(slot2, 3) >> 27, ctx::SLOT_DEFAULT);
    assert_eq!(d.out_slot(slot2, 3) & 0xff, 0);
    assert_eq!(
        d.cmd(
            &mut c,
            Trb::new(
                trb_type::ADDRESS_DEVICE,
                crate::testing::INPUT_CTX,
                0,
                ctrl | trb::BSR
            )
        )
        .0,
        cc::CONTEXT_STATE
    );
    assert_eq!(
        d.cmd(
            &mut c,
            Trb::new(trb_type::ADDRESS_DEVICE, crate::testing::INPUT_CTX, 0, ctrl)
        )
        .0,
        cc::SUCCESS
    );
    assert_eq!(d.out_slot(slot2, 3) >> 27, ctx::SLOT_ADDRESSED);
    assert_eq!(d.out_slot(slot2, 3) & 0xff, u32::from(slot2));
}

#[test]
fn transfer_ring_link_loops_and_links_outside_ram_halt_the_endpoint_only() {
    let (mut c, mut d) = started(false);
    let (slot, _) = d.enumerate(&mut c, STORAGE_PORT).unwrap();
    // A Link TRB pointing at itself (no Toggle Cycle): the ring never yields a TRB.
    let r = d.rings[&(slot, 3)];
    let self_link = Trb::new(trb_type::LINK, r.enqueue, 0, 1);
    d.mem.write(r.enqueue, &self_link.to_bytes()).unwrap();
    d.w32(&mut c, layout::DOORBELLS + 4 * u64::from(slot), 3);
    let e = d
        .take(&mut c, |e| e.kind() == trb_type::TRANSFER_EVENT)
        .unwrap();
    assert_eq!(code(&e), cc::TRB);
    assert_eq!(d.out_ep(slot, 3, 0) & 7, ctx::EP_HALTED);
    // A Link TRB to outside RAM on the OUT endpoint.
    let r = d.rings[&(slot, 4)];
    let out_link = Trb::new(trb_type::LINK, 0x1000_0000, 0, 1);
    d.mem.write(r.enqueue, &out_link.to_bytes()).unwrap();
    d.w32(&mut c, layout::DOORBELLS + 4 * u64::from(slot), 4);
    let e = d
        .take(&mut c, |e| e.kind() == trb_type::TRANSFER_EVENT)
        .unwrap();
    assert_eq!(code(&e), cc::TRB);
    assert_eq!(e.param, 0x1000_0000);
    // The controller and the other devices go on.
    assert!(!c.halted_with_error());
    d.mem
        .write(d.rings[&(slot, 3)].enqueue, &[0u8; 16])
        .unwrap();
    d.mem
        .write(d.rings[&(slot, 4)].enqueue, &[0u8; 16])
        .unwrap();
    recover(&mut c, &mut d, slot, 3);
    recover(&mut c, &mut d, slot, 4);
    let (data, st, _) = d
        .bot(&mut c, slot, &cdb10(scsi::READ_10, 2, 1), 512, &[])
        .unwrap();
    assert_eq!((data, st), (sector(2), CSW_PASSED));
}

#[test]
fn a_ring_full_of_valid_trbs_is_worked_off_in_bounded_steps() {
    let (mut c, mut d) = started(false);
    let (slot, _) = d.enumerate(&mut c, KBD_PORT).unwrap();
    // A ring of one segment whose TRBs are all No Op with a Link back to the start
    // and matching cycle: without the budget the controller would spin forever.
    let r = d.rings[&(slot, 1)];
    for i in 0..63u64 {
        let t = Trb::new(trb_type::NO_OP, 0, 0, 1);
        d.mem.write(r.base + 16 * i, &t.to_bytes()).unwrap();
    }
    d.mem
        .write(
            r.base + 16 * 63,
            &Trb::new(trb_type::LINK, r.base, 0, 1).to_bytes(),
        )
        .unwrap();
    d.w32(&mut c, layout::DOORBELLS + 4 * u64::from(slot), 1);
    assert!(c.has_work(), "the budget ran out, work deferred");
    // Each poll is bounded too; the guest fixes the ring and it settles.
    c.poll(&mut d.mem, &mut d.irq);
    d.mem.write(r.base + 16 * 63, &[0u8; 16]).unwrap();
    let mut polls = 0;
    while c.has_work() {
        c.poll(&mut d.mem, &mut d.irq);
        polls += 1;
        assert!(polls < 10);
    }
    assert!(!c.halted_with_error());
}

#[test]
fn oversized_and_misplaced_transfers_fail_with_completion_codes() {
    let (mut c, mut d) = started(false);
    let (slot, _) = d.enumerate(&mut c, STORAGE_PORT).unwrap();
    // A TD of 300 chained TRBs (more than a TD may hold).
    let r = d.rings[&(slot, 4)];
    let _ = r;
    for _ in 0..62 {
        d.push(slot, 4, Trb::new(trb_type::NORMAL, DATA, 0x1_0000, trb::CH));
    }
    // ...wrapping round the ring through its Link TRB, so cut it at 62 TRBs of 64
    // KiB each plus one more: 4 MiB, over the TD byte limit.
    d.push(
        slot,
        4,
        Trb::new(trb_type::NORMAL, DATA, 0x1_0000, trb::IOC),
    );
    d.w32(&mut c, layout::DOORBELLS + 4 * u64::from(slot), 4);
    let e = d
        .take(&mut c, |e| e.kind() == trb_type::TRANSFER_EVENT)
        .unwrap();
    assert_eq!(code(&e), cc::TRB);
    recover(&mut c, &mut d, slot, 4);
    // A buffer outside RAM.
    let at = d.push(slot, 4, Trb::new(trb_type::NORMAL, 0x10, 31, trb::IOC));
    d.w32(&mut c, layout::DOORBELLS + 4 * u64::from(slot), 4);
    let e = d
        .take(&mut c, |e| e.kind() == trb_type::TRANSFER_EVENT)
        .unwrap();
    assert_eq!((code(&e), e.param), (cc::DATA_BUFFER, at));
    recover(&mut c, &mut d, slot, 4);
    // Setup Stage TRBs on a bulk ring.
    d.push(
        slot,
        4,
        Trb::new(trb_type::SETUP_STAGE, 0, 8, trb::IDT | trb::IOC),
    );
    d.w32(&mut c, layout::DOORBELLS + 4 * u64::from(slot), 4);
    let e = d
        .take(&mut c, |e| e.kind() == trb_type::TRANSFER_EVENT)
        .unwrap();
    assert_eq!(code(&e), cc::TRB);
    recover(&mut c, &mut d, slot, 4);
    let (data, st, _) = d
        .bot(&mut c, slot, &cdb10(scsi::READ_10, 0, 1), 512, &[])
        .unwrap();
    assert_eq!((data, st), (sector(0), CSW_PASSED));
}

#[test]
fn command_ring_loops_and_erst_garbage_are_host_controller_errors() {
    // A command ring made of Link TRBs only.
    let (mut c, mut d) = started(false);
    let link = Trb::new(trb_type::LINK, crate::testing::CMD_RING, 0, 1);
    d.mem
        .write(crate::testing::CMD_RING, &link.to_bytes())
        .unwrap();
    d.w32(&mut c, layout::DOORBELLS, 0);
    assert!(c.halted_with_error());
    assert_ne!(d.r32(&mut c, layout::OPER + op::USBSTS) & usbsts::HCE, 0);
    // HCRST recovers.
    d.mem.write(crate::testing::CMD_RING, &[0u8; 16]).unwrap();
    d.start(&mut c);
    assert!(!c.halted_with_error());
    assert_eq!(
        d.cmd(&mut c, Trb::new(trb_type::NO_OP_COMMAND, 0, 0, 0)).0,
        cc::SUCCESS
    );

    let ir = layout::INTERRUPTERS;
    for (size, entry) in [
        (0u32, (crate::testing::EVENT_RING, 64u32)),
        (17, (crate::testing::EVENT_RING, 64)),
        (1, (crate::testing::EVENT_RING + 8, 64)),
        (1, (crate::testing::EVENT_RING, 8)),
        (1, (crate::testing::EVENT_RING, 0)),
        (1, (crate::testing::EVENT_RING, 5000)),
        (1, (0x1000, 64)),
        (1, (RAM_BASE + (4 << 20) - 0x200, 64)),
    ] {
        let (mut c, mut d) = started(false);
        let mut e = [0u8; 16];
        e[0..8].copy_from_slice(&entry.0.to_le_bytes());
        e[8..12].copy_from_slice(&entry.1.to_le_bytes());
        d.mem.write(crate::testing::ERST, &e).unwrap();
        d.w32(&mut c, ir + intr::ERSTSZ, size);
        d.w64(&mut c, ir + intr::ERSTBA, crate::testing::ERST);
        assert!(c.halted_with_error(), "{size} {entry:?}");
        // Commands go nowhere now, without a panic.
        d.w32(&mut c, layout::DOORBELLS, 0);
    }
    // An ERST outside RAM.
    let (mut c, mut d) = started(false);
    d.w64(&mut c, ir + intr::ERSTBA, 0x7000_0000);
    assert!(c.halted_with_error());
}

#[test]
fn a_full_event_ring_reports_it_and_resumes_when_software_catches_up() {
    let (mut c, mut d) = started(false);
    d.drain(&mut c);
    d.events.clear();
    // 80 No Op commands without reading events: the 64-TRB event ring fills.
    for _ in 0..2 {
        for _ in 0..40 {
            d.cmd
                .push(&mut d.mem, Trb::new(trb_type::NO_OP_COMMAND, 0, 0, 0));
        }
        d.w32(&mut c, layout::DOORBELLS, 0);
    }
    d.drain(&mut c);
    let full = d
        .events
        .iter()
        .filter(|e| e.kind() == trb_type::HOST_CONTROLLER && code(e) == cc::EVENT_RING_FULL)
        .count();
    assert_eq!(full, 1);
    assert_eq!(d.events.len(), 64, "63 completions and the full event");
    assert!(!c.halted_with_error());
    d.events.clear();
    assert_eq!(
        d.cmd(&mut c, Trb::new(trb_type::NO_OP_COMMAND, 0, 0, 0)).0,
        cc::SUCCESS
    );
}

#[test]
fn command_ring_abort_posts_command_ring_stopped() {
    let (mut c, mut d) = started(false);
    assert_eq!(
        d.cmd(&mut c, Trb::new(trb_type::NO_OP_COMMAND, 0, 0, 0)).0,
        cc::SUCCESS
    );
    assert_ne!(d.r32(&mut c, layout::OPER + op::CRCR) & 8, 0, "CRR");
    d.w32(
        &mut c,
        layout::OPER + op::CRCR,
        crate::defs::crcr::CA as u32,
    );
    assert_eq!(d.r32(&mut c, layout::OPER + op::CRCR) & 8, 0);
    let e = d
        .take(&mut c, |e| e.kind() == trb_type::COMMAND_COMPLETION)
        .unwrap();
    assert_eq!(code(&e), cc::COMMAND_RING_STOPPED);
    assert_eq!(e.param, d.cmd.enqueue);
    assert_eq!(
        d.cmd(&mut c, Trb::new(trb_type::NO_OP_COMMAND, 0, 0, 0)).0,
        cc::SUCCESS
    );
}

#[test]
fn storage_hot_plug_is_seen_as_disconnect_and_connect() {
    let (mut c, mut d) = started(false);
    let (slot, _) = d.enumerate(&mut c, STORAGE_PORT).unwrap();
    d.events.clear();
    let dev = c.detach(STORAGE_PORT).unwrap();
    c.poll(&mut d.mem, &mut d.irq);
    let e = d
        .take(&mut c, |e| e.kind() == trb_type::PORT_STATUS_CHANGE)
        .unwrap();
    assert_eq!(e.param >> 24, u64::from(STORAGE_PORT));
    let sc = d.portsc(&mut c, STORAGE_PORT);
    assert_eq!(sc & (portsc::CCS | portsc::CSC), portsc::CSC);
    // Transfers to the departed device fail; the slot is the driver's to disable.
    assert_eq!(
        d.transfer(&mut c, slot, 4, DATA, 31).map(|r| r.0),
        Some(cc::USB_TRANSACTION)
    );
    let ctrl = u32::from(slot) << trb::SLOT_SHIFT;
    assert_eq!(
        d.cmd(&mut c, Trb::new(trb_type::DISABLE_SLOT, 0, 0, ctrl))
            .0,
        cc::SUCCESS
    );
    // Attach another image and enumerate it.
    drop(dev);
    let disk = RamDisk::patterned(16, true);
    c.attach(
        STORAGE_PORT,
        Device::Storage(MassStorage::new(disk, speed::HIGH)),
    )
    .unwrap();
    assert_eq!(
        c.attach(STORAGE_PORT, Device::Keyboard(Keyboard::new(speed::HIGH))),
        Err(crate::AttachError::PortBusy)
    );
    c.poll(&mut d.mem, &mut d.irq);
    assert!(d
        .take(&mut c, |e| e.kind() == trb_type::PORT_STATUS_CHANGE)
        .is_some());
    let (slot, _) = d.enumerate(&mut c, STORAGE_PORT).unwrap();
    let (cap, _, _) = d
        .bot(&mut c, slot, &cdb10(scsi::READ_CAPACITY_10, 0, 0), 8, &[])
        .unwrap();
    assert_eq!(cap[3], 15);
}

#[test]
fn interrupts_follow_iman_ie_and_event_handler_busy() {
    let (mut c, mut d) = started(false);
    d.drain(&mut c);
    d.irq.signals.clear();
    // While EHB is set, further events do not interrupt again.
    d.cmd
        .push(&mut d.mem, Trb::new(trb_type::NO_OP_COMMAND, 0, 0, 0));
    d.cmd
        .push(&mut d.mem, Trb::new(trb_type::NO_OP_COMMAND, 0, 0, 0));
    d.w32(&mut c, layout::DOORBELLS, 0);
    assert_eq!(d.irq.signals, vec![0]);
    let ir = layout::INTERRUPTERS;
    assert_ne!(d.r32(&mut c, ir + intr::ERDP) & intr::ERDP_EHB as u32, 0);
    // IE clear: no interrupt, IP still set.
    d.drain(&mut c);
    d.w32(&mut c, ir + intr::IMAN, intr::IMAN_IP);
    d.irq.signals.clear();
    d.cmd
        .push(&mut d.mem, Trb::new(trb_type::NO_OP_COMMAND, 0, 0, 0));
    d.w32(&mut c, layout::DOORBELLS, 0);
    assert!(d.irq.signals.is_empty());
    assert_ne!(d.r32(&mut c, ir + intr::IMAN) & intr::IMAN_IP, 0);
    // Setting IE with IP pending interrupts.
    d.w32(&mut c, ir + intr::IMAN, intr::IMAN_IE);
    assert_eq!(d.irq.signals, vec![0]);
}

#[test]
fn event_data_trbs_report_the_accumulated_length() {
    let (mut c, mut d) = started(false);
    let (slot, _) = d.enumerate(&mut c, TABLET_PORT).unwrap();
    c.tablet_inject(TabletInput {
        x: 1,
        y: 2,
        buttons: 1,
        wheel: 0,
    });
    // Two chained Normal TRBs of 4 bytes and an Event Data TRB, as Windows queues.
    d.push(slot, 3, Trb::new(trb_type::NORMAL, DATA, 4, trb::CH));
    d.push(slot, 3, Trb::new(trb_type::NORMAL, DATA + 4, 4, trb::CH));
    d.push(
        slot,
        3,
        Trb::new(trb_type::EVENT_DATA, 0xfeed_0000, 0, trb::IOC),
    );
    d.w32(&mut c, layout::DOORBELLS + 4 * u64::from(slot), 3);
    let e = d
        .take(&mut c, |e| e.kind() == trb_type::TRANSFER_EVENT)
        .unwrap();
    assert_eq!(e.param, 0xfeed_0000);
    assert_ne!(e.control & trb::ED, 0);
    assert_eq!((code(&e), e.status & 0xff_ffff), (cc::SHORT_PACKET, 6));
    let mut r = [0u8; 6];
    d.mem.read(DATA, &mut r).unwrap();
    assert_eq!(r, [1, 1, 0, 2, 0, 0]);
}

#[test]
fn a_stopped_controller_takes_no_doorbells_and_hcrst_resets_everything() {
    let (mut c, mut d) = started(false);
    let (slot, _) = d.enumerate(&mut c, KBD_PORT).unwrap();
    d.w32(&mut c, layout::OPER + op::USBCMD, 0);
    assert_ne!(d.r32(&mut c, layout::OPER + op::USBSTS) & usbsts::HCH, 0);
    d.cmd
        .push(&mut d.mem, Trb::new(trb_type::NO_OP_COMMAND, 0, 0, 0));
    d.w32(&mut c, layout::DOORBELLS, 0);
    d.drain(&mut c);
    assert!(!d
        .events
        .iter()
        .any(|e| e.kind() == trb_type::COMMAND_COMPLETION));
    d.start(&mut c);
    assert!(c.slot(slot).is_some_and(|s| !s.enabled));
    assert_eq!(c.keyboard().unwrap().core.address, 0);
}

#[test]
fn reads_of_64_bit_registers_and_ports_past_the_end_are_harmless() {
    let (mut c, mut d) = started(false);
    let dcbaap = c
        .read(layout::OPER + op::DCBAAP, AccessSize::Double)
        .unwrap();
    assert_eq!(dcbaap, crate::testing::DCBAA);
    for off in (0..0x4000u64).step_by(4) {
        c.read(off, AccessSize::Word).unwrap();
    }
    // Writes to every port register, including change bits of empty ports.
    for p in 1..=8u8 {
        let off = layout::PORTS + layout::PORT_STRIDE * u64::from(p - 1);
        d.w32(&mut c, off, u32::MAX);
        d.w32(&mut c, off + 4, u32::MAX);
    }
    assert!(!c.halted_with_error());
}

// ---- save/restore ---------------------------------------------------------------

fn driven(c: &mut Controller<RamDisk>) {
    let mut d = Driver::new();
    d.start(c);
    let (slot, _) = d.enumerate(c, KBD_PORT).unwrap();
    let _ = slot;
    let (s2, _) = d.enumerate(c, STORAGE_PORT).unwrap();
    // Leave the storage device mid-command (CBW taken, data pending) and a key queued.
    let mut cbw = vec![0u8; 31];
    cbw[0..4].copy_from_slice(&crate::storage::CBW_SIGNATURE.to_le_bytes());
    cbw[8..12].copy_from_slice(&512u32.to_le_bytes());
    cbw[12] = 0x80;
    cbw[14] = 10;
    cbw[15..25].copy_from_slice(&cdb10(scsi::READ_10, 1, 1));
    d.mem.write(DATA, &cbw).unwrap();
    d.transfer(c, s2, 4, DATA, 31);
    c.keyboard_key(0x05, true);
    c.tablet_inject(TabletInput {
        x: 9,
        y: 9,
        buttons: 2,
        wheel: 1,
    });
}

/// What the guest sees: every register, and a probe of the devices' queues.
fn probe(c: &mut Controller<RamDisk>) -> Vec<u64> {
    let mut v: Vec<u64> = (0..layout::SIZE)
        .step_by(4)
        .map(|o| c.read(o, AccessSize::Word).unwrap())
        .collect();
    v.push(c.keyboard().map_or(0, |k| k.queue.len() as u64));
    v.push(c.tablet().map_or(0, |t| t.queue.len() as u64));
    v.push(u64::from(c.has_work()));
    v
}

vdev::save_restore_tests!(
    xhci_save,
    make: || machine(false),
    drive: driven,
    probe: probe,
);

#[test]
fn restored_controller_finishes_the_transfer_in_flight() {
    let mut a = machine(false);
    let mut d = Driver::new();
    d.start(&mut a);
    let (slot, _) = d.enumerate(&mut a, STORAGE_PORT).unwrap();
    let blob = vdev::SaveRestore::save(&a);
    let mut b = machine(false);
    vdev::SaveRestore::restore(&mut b, &blob).unwrap();
    let (data, st, _) = d
        .bot(&mut b, slot, &cdb10(scsi::READ_10, 5, 1), 512, &[])
        .unwrap();
    assert_eq!((data, st), (sector(5), CSW_PASSED));
    let _ = a.read(0, AccessSize::Word);
}

#[test]
fn a_state_with_the_erst_being_rewritten_or_refused_saves_and_restores() {
    let ir = layout::INTERRUPTERS;
    // ERSTBA's low half written (the table not read again yet), and a refused
    // table after a good one: both states restore (the fuzz target found them).
    for bad_second in [false, true] {
        let (mut c, mut d) = started(false);
        d.drain(&mut c);
        if bad_second {
            d.w32(&mut c, ir + intr::ERSTSZ, 99);
            d.w64(&mut c, ir + intr::ERSTBA, crate::testing::ERST);
            assert!(c.halted_with_error());
        } else {
            d.w32(&mut c, ir + intr::ERSTBA, crate::testing::ERST as u32);
        }
        let blob = vdev::SaveRestore::save(&c);
        let mut fresh = machine(false);
        vdev::SaveRestore::restore(&mut fresh, &blob).unwrap();
        assert!(vdev::SaveRestore::save(&fresh) == blob);
    }
}

#[test]
fn a_zero_length_interrupt_in_takes_no_report_away() {
    let (mut c, mut d) = started(false);
    let (slot, _) = d.enumerate(&mut c, KBD_PORT).unwrap();
    c.keyboard_key(0x1e, true);
    assert_eq!(d.transfer(&mut c, slot, 3, DATA, 0), Some((cc::SUCCESS, 0)));
    assert_eq!(d.transfer(&mut c, slot, 3, DATA, 8), Some((cc::SUCCESS, 8)));
    let mut r = [0u8; 8];
    d.mem.read(DATA, &mut r).unwrap();
    assert_eq!(r[2], 0x1e);
}
