//! USB HID devices (Device Class Definition for HID 1.11): a keyboard (boot and
//! report protocol, LEDs through SET_REPORT) and an absolute pointer (tablet) with
//! three buttons and a wheel. The host side feeds them with [`Keyboard::key`] and
//! [`Tablet::inject`]; reports wait in a bounded queue for the guest's interrupt IN
//! transfers.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use crate::defs::usb;
use crate::usb::{config, endpoint, interface, ss_companion, Control, Core, Descriptors, Transfer};

/// The one interrupt IN endpoint of both devices.
pub const ENDPOINTS: &[u8] = &[0x81];
/// Reports held for the guest; beyond it the oldest are dropped (keyboard) or the
/// newest replaces the last (tablet: positions are absolute).
pub const MAX_QUEUED_REPORTS: usize = 64;
/// Vendor ID the devices report (the pid.codes open-source vendor).
pub const VENDOR_ID: u16 = 0x1209;

/// HID class: boot interface sub-class, keyboard and mouse protocols.
const CLASS_HID: u8 = 3;
const SUBCLASS_BOOT: u8 = 1;
const PROTOCOL_KEYBOARD: u8 = 1;
const PROTOCOL_MOUSE: u8 = 2;
/// HID protocols (SET_PROTOCOL wValue).
pub const BOOT_PROTOCOL: u8 = 0;
pub const REPORT_PROTOCOL: u8 = 1;
/// Keyboard usages of the modifier keys (Left Control .. Right GUI).
pub const USAGE_MODIFIER_FIRST: u8 = 0xe0;
pub const USAGE_MODIFIER_LAST: u8 = 0xe7;
/// The usage every key slot reports when more keys are down than a report holds.
pub const USAGE_ERROR_ROLLOVER: u8 = 0x01;
/// Keys a report holds.
const KEY_SLOTS: usize = 6;
/// Highest absolute coordinate of the tablet.
pub const TABLET_MAX: u16 = 0x7fff;

/// The keyboard's report descriptor: the boot keyboard layout (modifiers, a
/// reserved byte, six key usages in, five LEDs out), used in both protocols.
pub const KEYBOARD_REPORT_DESCRIPTOR: &[u8] = &[
    0x05, 0x01, // Usage Page (Generic Desktop)
    0x09, 0x06, // Usage (Keyboard)
    0xa1, 0x01, // Collection (Application)
    0x05, 0x07, //   Usage Page (Keyboard/Keypad)
    0x19, 0xe0, //   Usage Minimum (Left Control)
    0x29, 0xe7, //   Usage Maximum (Right GUI)
    0x15, 0x00, //   Logical Minimum (0)
    0x25, 0x01, //   Logical Maximum (1)
    0x75, 0x01, //   Report Size (1)
    0x95, 0x08, //   Report Count (8)
    0x81, 0x02, //   Input (Data, Variable, Absolute)
    0x95, 0x01, //   Report Count (1)
    0x75, 0x08, //   Report Size (8)
    0x81, 0x01, //   Input (Constant)
    0x95, 0x05, //   Report Count (5)
    0x75, 0x01, //   Report Size (1)
    0x05, 0x08, //   Usage Page (LEDs)
    0x19, 0x01, //   Usage Minimum (Num Lock)
    0x29, 0x05, //   Usage Maximum (Kana)
    0x91, 0x02, //   Output (Data, Variable, Absolute)
    0x95, 0x01, //   Report Count (1)
    0x75, 0x03, //   Report Size (3)
    0x91, 0x01, //   Output (Constant)
    0x95, 0x06, //   Report Count (6)
    0x75, 0x08, //   Report Size (8)
    0x15, 0x00, //   Logical Minimum (0)
    0x26, 0xff, 0x00, //   Logical Maximum (255)
    0x05, 0x07, //   Usage Page (Keyboard/Keypad)
    0x19, 0x00, //   Usage Minimum (0)
    0x2a, 0xff, 0x00, //   Usage Maximum (255)
    0x81, 0x00, //   Input (Data, Array)
    0xc0, // End Collection
];

/// The tablet's report descriptor: three buttons, absolute X and Y (0..=0x7fff),
/// a relative wheel.
pub const TABLET_REPORT_DESCRIPTOR: &[u8] = &[
    0x05, 0x01, // Usage Page (Generic Desktop)
    0x09, 0x02, // Usage (Mouse)
    0xa1, 0x01, // Collection (Application)
    0x09, 0x01, //   Usage (Pointer)
    0xa1, 0x00, //   Collection (Physical)
    0x05, 0x09, //     Usage Page (Button)
    0x19, 0x01, //     Usage Minimum (1)
    0x29, 0x03, //     Usage Maximum (3)
    0x15, 0x00, //     Logical Minimum (0)
    0x25, 0x01, //     Logical Maximum (1)
    0x95, 0x03, //     Report Count (3)
    0x75, 0x01, //     Report Size (1)
    0x81, 0x02, //     Input (Data, Variable, Absolute)
    0x95, 0x01, //     Report Count (1)
    0x75, 0x05, //     Report Size (5)
    0x81, 0x01, //     Input (Constant)
    0x05, 0x01, //     Usage Page (Generic Desktop)
    0x09, 0x30, //     Usage (X)
    0x09, 0x31, //     Usage (Y)
    0x15, 0x00, //     Logical Minimum (0)
    0x26, 0xff, 0x7f, //     Logical Maximum (32767)
    0x35, 0x00, //     Physical Minimum (0)
    0x46, 0xff, 0x7f, //     Physical Maximum (32767)
    0x75, 0x10, //     Report Size (16)
    0x95, 0x02, //     Report Count (2)
    0x81, 0x02, //     Input (Data, Variable, Absolute)
    0x05, 0x01, //     Usage Page (Generic Desktop)
    0x09, 0x38, //     Usage (Wheel)
    0x15, 0x81, //     Logical Minimum (-127)
    0x25, 0x7f, //     Logical Maximum (127)
    0x35, 0x00, //     Physical Minimum (0)
    0x45, 0x00, //     Physical Maximum (0)
    0x75, 0x08, //     Report Size (8)
    0x95, 0x01, //     Report Count (1)
    0x81, 0x06, //     Input (Data, Variable, Relative)
    0xc0, //   End Collection
    0xc0, // End Collection
];

/// The HID descriptor (HID 1.11 §6.2.1) naming a report descriptor of `len` bytes.
fn hid_descriptor(len: usize) -> [u8; 9] {
    let [lo, hi] = (len as u16).to_le_bytes();
    [9, usb::DT_HID, 0x11, 0x01, 0, 1, usb::DT_HID_REPORT, lo, hi]
}

fn hid_config(protocol: u8, report_len: usize, packet: u16) -> (Vec<u8>, Vec<u8>) {
    let mut body = Vec::new();
    body.extend_from_slice(&interface(0, 1, CLASS_HID, SUBCLASS_BOOT, protocol));
    body.extend_from_slice(&hid_descriptor(report_len));
    let mut hs = body.clone();
    // Interrupt IN, every 8 ms (high-speed bInterval 7: 2^(7-1) microframes).
    hs.extend_from_slice(&endpoint(0x81, 3, packet, 7));
    let mut ss = body;
    ss.extend_from_slice(&endpoint(0x81, 3, packet, 7));
    ss.extend_from_slice(&ss_companion(0, packet));
    (config(1, &hs), config(1, &ss))
}

pub fn keyboard_descriptors() -> Descriptors {
    let (config_hs, config_ss) = hid_config(PROTOCOL_KEYBOARD, KEYBOARD_REPORT_DESCRIPTOR.len(), 8);
    Descriptors {
        vendor: VENDOR_ID,
        product: 0x0001,
        strings: &["RayOS", "RayOS USB Keyboard", "1"],
        interfaces: 1,
        config_hs,
        config_ss,
    }
}

pub fn tablet_descriptors() -> Descriptors {
    let (config_hs, config_ss) = hid_config(PROTOCOL_MOUSE, TABLET_REPORT_DESCRIPTOR.len(), 8);
    Descriptors {
        vendor: VENDOR_ID,
        product: 0x0002,
        strings: &["RayOS", "RayOS USB Tablet", "2"],
        interfaces: 1,
        config_hs,
        config_ss,
    }
}

/// What both HID devices answer on their interface: the HID and report
/// descriptors, GET/SET_IDLE, GET/SET_PROTOCOL, GET_REPORT. `None`: not one of them.
fn hid_common(
    setup: &crate::usb::Setup,
    report_descriptor: &[u8],
    idle: &mut u8,
    protocol: &mut u8,
    report: &[u8],
) -> Option<Control> {
    if setup.index != 0 {
        return Some(Control::Stall);
    }
    Some(match (setup.request_type, setup.request) {
        (0x81, usb::GET_DESCRIPTOR) => match (setup.value >> 8) as u8 {
            usb::DT_HID_REPORT => Control::Data(report_descriptor.to_vec()),
            usb::DT_HID => Control::Data(hid_descriptor(report_descriptor.len()).to_vec()),
            _ => Control::Stall,
        },
        (0x21, usb::HID_SET_IDLE) => {
            *idle = (setup.value >> 8) as u8;
            Control::ok()
        }
        (0xa1, usb::HID_GET_IDLE) => Control::Data(vec![*idle]),
        (0x21, usb::HID_SET_PROTOCOL) if setup.value <= 1 => {
            *protocol = setup.value as u8;
            Control::ok()
        }
        (0xa1, usb::HID_GET_PROTOCOL) => Control::Data(vec![*protocol]),
        (0xa1, usb::HID_GET_REPORT) if setup.value >> 8 == 1 => Control::Data(report.to_vec()),
        _ => return None,
    })
}

/// A USB HID keyboard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyboard {
    pub core: Core,
    /// SET_IDLE duration (4 ms units; 0: report only on change, which is what this
    /// model does for every rate).
    pub idle: u8,
    pub protocol: u8,
    /// LED states the host last set (bit 0 Num Lock, 1 Caps Lock, 2 Scroll Lock,
    /// 3 Compose, 4 Kana).
    pub leds: u8,
    pub modifiers: u8,
    /// Keys down, in the order pressed.
    pub keys: Vec<u8>,
    pub queue: VecDeque<[u8; 8]>,
}

impl Keyboard {
    pub fn new(speed: u32) -> Self {
        Keyboard {
            core: Core::new(speed),
            idle: 0,
            protocol: REPORT_PROTOCOL,
            leds: 0,
            modifiers: 0,
            keys: Vec::new(),
            queue: VecDeque::new(),
        }
    }

    pub(crate) fn bus_reset(&mut self) {
        self.idle = 0;
        self.protocol = REPORT_PROTOCOL;
        self.queue.clear();
    }

    /// The current report: modifiers, reserved, up to six keys (all
    /// ErrorRollOver when more are down).
    pub fn report(&self) -> [u8; 8] {
        let mut r = [0u8; 8];
        r[0] = self.modifiers;
        if self.keys.len() > KEY_SLOTS {
            r[2..].fill(USAGE_ERROR_ROLLOVER);
        } else {
            r[2..2 + self.keys.len()].copy_from_slice(&self.keys);
        }
        r
    }

    /// The host presses (`down`) or releases key `usage` (HID Keyboard/Keypad
    /// page). Returns whether the state changed (a report was queued).
    pub fn key(&mut self, usage: u8, down: bool) -> bool {
        let changed = if (USAGE_MODIFIER_FIRST..=USAGE_MODIFIER_LAST).contains(&usage) {
            let bit = 1 << (usage - USAGE_MODIFIER_FIRST);
            let before = self.modifiers;
            if down {
                self.modifiers |= bit;
            } else {
                self.modifiers &= !bit;
            }
            before != self.modifiers
        } else if usage <= USAGE_ERROR_ROLLOVER + 2 {
            // 0..=3 are not keys (reserved, error codes).
            false
        } else if down {
            // Bounded: at most every usage once.
            !self.keys.contains(&usage) && {
                self.keys.push(usage);
                true
            }
        } else {
            let before = self.keys.len();
            self.keys.retain(|&k| k != usage);
            before != self.keys.len()
        };
        if changed {
            if self.queue.len() == MAX_QUEUED_REPORTS {
                self.queue.pop_front();
            }
            self.queue.push_back(self.report());
        }
        changed
    }

    pub fn has_report(&self) -> bool {
        !self.queue.is_empty()
    }

    pub(crate) fn interrupt_in(&mut self, max: usize) -> Transfer {
        match self.queue.pop_front() {
            Some(r) => Transfer::Data(r[..max.min(8)].to_vec()),
            None => Transfer::Nak,
        }
    }

    pub(crate) fn class_request(&mut self, setup: &crate::usb::Setup, data: &[u8]) -> Control {
        let report = self.report();
        if let Some(c) = hid_common(
            setup,
            KEYBOARD_REPORT_DESCRIPTOR,
            &mut self.idle,
            &mut self.protocol,
            &report,
        ) {
            return c;
        }
        match (setup.request_type, setup.request) {
            // SET_REPORT, output report (LEDs): one byte.
            (0x21, usb::HID_SET_REPORT)
                if (setup.value >> 8) as u8 == usb::HID_REPORT_OUTPUT && data.len() == 1 =>
            {
                self.leds = data[0] & 0x1f;
                Control::ok()
            }
            _ => Control::Stall,
        }
    }
}

/// One tablet state from the host: absolute position (clamped to
/// 0..=[`TABLET_MAX`]), buttons (bit 0 left, 1 right, 2 middle), wheel detents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TabletInput {
    pub x: u16,
    pub y: u16,
    pub buttons: u8,
    pub wheel: i8,
}

/// A USB HID absolute pointer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tablet {
    pub core: Core,
    pub idle: u8,
    pub protocol: u8,
    pub last: TabletInput,
    pub queue: VecDeque<[u8; 6]>,
}

impl Tablet {
    pub fn new(speed: u32) -> Self {
        Tablet {
            core: Core::new(speed),
            idle: 0,
            protocol: REPORT_PROTOCOL,
            last: TabletInput::default(),
            queue: VecDeque::new(),
        }
    }

    pub(crate) fn bus_reset(&mut self) {
        self.idle = 0;
        self.protocol = REPORT_PROTOCOL;
        self.queue.clear();
    }

    fn encode(i: TabletInput) -> [u8; 6] {
        let [xl, xh] = i.x.to_le_bytes();
        let [yl, yh] = i.y.to_le_bytes();
        [i.buttons & 0x7, xl, xh, yl, yh, i.wheel as u8]
    }

    /// Queues a report of `input` (coordinates clamped, wheel -127..=127).
    pub fn inject(&mut self, input: TabletInput) {
        let i = TabletInput {
            x: input.x.min(TABLET_MAX),
            y: input.y.min(TABLET_MAX),
            buttons: input.buttons & 0x7,
            wheel: input.wheel.max(-127),
        };
        self.last = TabletInput { wheel: 0, ..i };
        if self.queue.len() == MAX_QUEUED_REPORTS {
            self.queue.pop_back();
        }
        self.queue.push_back(Self::encode(i));
    }

    pub fn has_report(&self) -> bool {
        !self.queue.is_empty()
    }

    pub(crate) fn interrupt_in(&mut self, max: usize) -> Transfer {
        match self.queue.pop_front() {
            // The boot protocol's mouse report is buttons, X, Y (relative, 8 bits);
            // an absolute pointer has no meaningful boot report, so it sends the
            // buttons and zero motion there.
            Some(r) if self.protocol == BOOT_PROTOCOL => {
                Transfer::Data([r[0], 0, 0][..max.min(3)].to_vec())
            }
            Some(r) => Transfer::Data(r[..max.min(6)].to_vec()),
            None => Transfer::Nak,
        }
    }

    pub(crate) fn class_request(&mut self, setup: &crate::usb::Setup, _data: &[u8]) -> Control {
        let report = Self::encode(self.last);
        hid_common(
            setup,
            TABLET_REPORT_DESCRIPTOR,
            &mut self.idle,
            &mut self.protocol,
            &report,
        )
        .unwrap_or(Control::Stall)
    }
}
