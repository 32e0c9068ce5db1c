//! USB devices as the controller sees them: the SETUP packet, the answers a device
//! gives (data, NAK, STALL), the chapter-9 standard requests every device shares
//! ([`Core::standard`]), and the [`Device`] enum of the devices this crate models.

use alloc::vec;
use alloc::vec::Vec;

use vdev::AsyncBlock;

use crate::defs::{speed, usb};
use crate::hid::{Keyboard, Tablet};
use crate::storage::MassStorage;

/// The 8-byte SETUP packet of a control transfer (USB 2.0 §9.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setup {
    pub request_type: u8,
    pub request: u8,
    pub value: u16,
    pub index: u16,
    pub length: u16,
}

impl Setup {
    /// From the immediate data of a Setup Stage TRB (little-endian packet bytes).
    pub fn from_u64(v: u64) -> Self {
        Setup {
            request_type: v as u8,
            request: (v >> 8) as u8,
            value: (v >> 16) as u16,
            index: (v >> 32) as u16,
            length: (v >> 48) as u16,
        }
    }
    pub fn to_u64(self) -> u64 {
        u64::from(self.request_type)
            | u64::from(self.request) << 8
            | u64::from(self.value) << 16
            | u64::from(self.index) << 32
            | u64::from(self.length) << 48
    }
    pub fn is_in(&self) -> bool {
        self.request_type & usb::DIR_IN != 0
    }
    pub fn kind(&self) -> u8 {
        self.request_type & usb::TYPE_MASK
    }
    pub fn recipient(&self) -> u8 {
        self.request_type & usb::RECIPIENT_MASK
    }
}

/// A device's answer to a control request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Accepted; for an IN request, the data (at most wLength bytes are sent).
    Data(Vec<u8>),
    /// Refused with a STALL handshake (request error).
    Stall,
}

impl Control {
    pub fn ok() -> Self {
        Control::Data(Vec::new())
    }
}

/// A device's answer to a bulk or interrupt transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transfer {
    /// IN: the data (at most what was asked); OUT: accepted.
    Data(Vec<u8>),
    /// Nothing to send (IN) or not ready to take data (OUT): the transfer waits.
    Nak,
    /// The endpoint is halted.
    Stall,
}

/// What every device keeps for the standard requests: its address, configuration,
/// halted endpoints and the speed of the port it is attached to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Core {
    pub address: u8,
    pub configuration: u8,
    /// Halt feature per endpoint: bit n for OUT endpoint n, bit 16 + n for IN.
    pub halted: u32,
    pub remote_wakeup: bool,
    pub speed: u32,
}

impl Core {
    pub fn new(speed: u32) -> Self {
        Core {
            address: 0,
            configuration: 0,
            halted: 0,
            remote_wakeup: false,
            speed,
        }
    }

    /// Bus reset: back to the default state.
    pub fn bus_reset(&mut self) {
        *self = Core::new(self.speed);
    }

    pub fn halt_bit(ep_addr: u8) -> u32 {
        let n = u32::from(ep_addr & 0xf);
        if ep_addr & usb::DIR_IN != 0 {
            1 << (16 + n)
        } else {
            1 << n
        }
    }

    pub fn is_halted(&self, ep_addr: u8) -> bool {
        self.halted & Self::halt_bit(ep_addr) != 0
    }

    /// Handles a standard request (`None`: not a standard request this core answers,
    /// the device's own handler gets it).
    pub fn standard(
        &mut self,
        desc: &Descriptors,
        setup: &Setup,
        data: &[u8],
        endpoints: &[u8],
    ) -> Option<Control> {
        if setup.kind() != usb::TYPE_STANDARD {
            return None;
        }
        let stall = Some(Control::Stall);
        let has_ep = |a: u8| a & 0x7f == 0 || endpoints.contains(&a);
        Some(match (setup.request_type, setup.request) {
            (0x80, usb::GET_DESCRIPTOR) => {
                let [index, kind] = setup.value.to_le_bytes();
                match desc.get(kind, index, self.speed) {
                    Some(d) => Control::Data(d),
                    None => return stall,
                }
            }
            (0x00, usb::SET_ADDRESS) if setup.value <= 127 && setup.length == 0 => {
                self.address = setup.value as u8;
                Control::ok()
            }
            (0x00, usb::SET_CONFIGURATION) if setup.value <= 1 => {
                self.configuration = setup.value as u8;
                // Configuring resets every endpoint's halt (USB 2.0 §9.4.5).
                self.halted = 0;
                Control::ok()
            }
            (0x80, usb::GET_CONFIGURATION) => Control::Data(vec![self.configuration]),
            (0x80, usb::GET_STATUS) => {
                // Self-powered, remote wakeup as set.
                Control::Data(vec![1 | u8::from(self.remote_wakeup) << 1, 0])
            }
            (0x81, usb::GET_STATUS) => Control::Data(vec![0, 0]),
            (0x82, usb::GET_STATUS) if has_ep(setup.index as u8) => {
                Control::Data(vec![u8::from(self.is_halted(setup.index as u8)), 0])
            }
            (0x00, usb::CLEAR_FEATURE | usb::SET_FEATURE) => {
                if setup.value == usb::DEVICE_REMOTE_WAKEUP {
                    self.remote_wakeup = setup.request == usb::SET_FEATURE;
                }
                // Other device features (test mode, U1/U2 enables) are accepted and
                // have no effect on a virtual link.
                Control::ok()
            }
            (0x02, usb::CLEAR_FEATURE | usb::SET_FEATURE)
                if setup.value == usb::ENDPOINT_HALT && has_ep(setup.index as u8) =>
            {
                let bit = Self::halt_bit(setup.index as u8);
                if setup.index & 0x7f == 0 {
                    // The default control endpoint is never halted for good.
                } else if setup.request == usb::SET_FEATURE {
                    self.halted |= bit;
                } else {
                    self.halted &= !bit;
                }
                Control::ok()
            }
            (0x01, usb::SET_INTERFACE) if setup.value == 0 && setup.index < desc.interfaces => {
                Control::ok()
            }
            (0x81, usb::GET_INTERFACE) if setup.index < desc.interfaces => Control::Data(vec![0]),
            (0x00, usb::SET_SEL) if data.len() == 6 => Control::ok(),
            (0x00, usb::SET_ISOCH_DELAY) if setup.length == 0 => Control::ok(),
            // A standard request on an interface (HID report descriptor) is the
            // device's; everything else is a request error.
            (0x81, usb::GET_DESCRIPTOR) => return None,
            _ => Control::Stall,
        })
    }
}

/// The descriptors of one device (built once; the configuration depends on speed).
#[derive(Debug, Clone)]
pub struct Descriptors {
    pub vendor: u16,
    pub product: u16,
    /// String descriptors 1.. (manufacturer, product, serial number).
    pub strings: &'static [&'static str],
    pub interfaces: u16,
    /// The configuration for full/high speed and for SuperSpeed (with endpoint
    /// companions).
    pub config_hs: Vec<u8>,
    pub config_ss: Vec<u8>,
}

/// Language ID of the strings: English (United States).
const LANGID_EN_US: u16 = 0x0409;

impl Descriptors {
    /// The device descriptor at `speed`.
    pub fn device(&self, speed_id: u32) -> Vec<u8> {
        let ss = speed_id == speed::SUPER;
        let bcd_usb: u16 = if ss { 0x0320 } else { 0x0200 };
        // bMaxPacketSize0: 512 bytes as the exponent 9 at SuperSpeed, else 64.
        let mps0 = if ss { 9 } else { 64 };
        let mut d = vec![18, usb::DT_DEVICE];
        d.extend_from_slice(&bcd_usb.to_le_bytes());
        d.extend_from_slice(&[0, 0, 0, mps0]);
        d.extend_from_slice(&self.vendor.to_le_bytes());
        d.extend_from_slice(&self.product.to_le_bytes());
        d.extend_from_slice(&0x0100u16.to_le_bytes());
        d.extend_from_slice(&[1, 2, 3, 1]);
        d
    }

    /// Descriptor `kind`/`index` at `speed`, if the device has it.
    pub fn get(&self, kind: u8, index: u8, speed_id: u32) -> Option<Vec<u8>> {
        let ss = speed_id == speed::SUPER;
        match kind {
            usb::DT_DEVICE if index == 0 => Some(self.device(speed_id)),
            usb::DT_CONFIG if index == 0 => Some(if ss {
                self.config_ss.clone()
            } else {
                self.config_hs.clone()
            }),
            usb::DT_STRING if index == 0 => {
                let mut d = vec![4, usb::DT_STRING];
                d.extend_from_slice(&LANGID_EN_US.to_le_bytes());
                Some(d)
            }
            usb::DT_STRING => {
                let s = self.strings.get(usize::from(index) - 1)?;
                let mut d = vec![0, usb::DT_STRING];
                for u in s.encode_utf16() {
                    d.extend_from_slice(&u.to_le_bytes());
                }
                d[0] = d.len() as u8;
                Some(d)
            }
            usb::DT_DEVICE_QUALIFIER if !ss && index == 0 => {
                // The device at the other (full) speed: same class and packet size.
                let dev = self.device(speed_id);
                let mut d = vec![10, usb::DT_DEVICE_QUALIFIER];
                d.extend_from_slice(&dev[2..8]);
                d.extend_from_slice(&[1, 0]);
                Some(d)
            }
            usb::DT_BOS if ss && index == 0 => Some(bos()),
            _ => None,
        }
    }
}

/// The Binary Device Object Store of a SuperSpeed device (USB 3.2 §9.6.2): a USB 2.0
/// Extension (LPM) and a SuperSpeed USB device capability.
fn bos() -> Vec<u8> {
    let mut d = vec![5, usb::DT_BOS, 0, 0, 2];
    // USB 2.0 Extension: bmAttributes LPM.
    d.extend_from_slice(&[7, usb::DT_DEVICE_CAPABILITY, 2, 0x02, 0, 0, 0]);
    // SuperSpeed USB: speeds supported (full, high, super), functionality from full
    // speed, U1/U2 exit latencies.
    d.extend_from_slice(&[
        10,
        usb::DT_DEVICE_CAPABILITY,
        3,
        0,
        0x0e,
        0,
        1,
        10,
        0xff,
        0x07,
    ]);
    let total = d.len() as u16;
    d[2..4].copy_from_slice(&total.to_le_bytes());
    d
}

/// A configuration descriptor around `body` (interface and endpoint descriptors).
pub fn config(interfaces: u8, body: &[u8]) -> Vec<u8> {
    // Self-powered; 100 mA.
    let mut d = vec![9, usb::DT_CONFIG, 0, 0, interfaces, 1, 0, 0xc0, 50];
    d.extend_from_slice(body);
    let total = d.len() as u16;
    d[2..4].copy_from_slice(&total.to_le_bytes());
    d
}

/// An interface descriptor.
pub fn interface(number: u8, endpoints: u8, class: u8, subclass: u8, protocol: u8) -> [u8; 9] {
    [
        9,
        usb::DT_INTERFACE,
        number,
        0,
        endpoints,
        class,
        subclass,
        protocol,
        0,
    ]
}

/// An endpoint descriptor: `attributes` 2 bulk, 3 interrupt.
pub fn endpoint(address: u8, attributes: u8, max_packet: u16, interval: u8) -> [u8; 7] {
    let [lo, hi] = max_packet.to_le_bytes();
    [7, usb::DT_ENDPOINT, address, attributes, lo, hi, interval]
}

/// A SuperSpeed endpoint companion: `max_burst` packets, `bytes_per_interval` for
/// periodic endpoints.
pub fn ss_companion(max_burst: u8, bytes_per_interval: u16) -> [u8; 6] {
    let [lo, hi] = bytes_per_interval.to_le_bytes();
    [6, usb::DT_SS_ENDPOINT_COMPANION, max_burst, 0, lo, hi]
}

/// The devices this crate models.
pub enum Device<B: AsyncBlock> {
    Keyboard(Keyboard),
    Tablet(Tablet),
    Storage(MassStorage<B>),
}

impl<B: AsyncBlock> Device<B> {
    pub fn core(&self) -> &Core {
        match self {
            Device::Keyboard(d) => &d.core,
            Device::Tablet(d) => &d.core,
            Device::Storage(d) => &d.core,
        }
    }
    pub fn core_mut(&mut self) -> &mut Core {
        match self {
            Device::Keyboard(d) => &mut d.core,
            Device::Tablet(d) => &mut d.core,
            Device::Storage(d) => &mut d.core,
        }
    }
    /// The endpoint addresses of the device's configuration.
    pub fn endpoints(&self) -> &'static [u8] {
        match self {
            Device::Keyboard(_) | Device::Tablet(_) => crate::hid::ENDPOINTS,
            Device::Storage(_) => crate::storage::ENDPOINTS,
        }
    }
    /// USB bus reset (port reset).
    pub fn bus_reset(&mut self) {
        self.core_mut().bus_reset();
        match self {
            Device::Keyboard(d) => d.bus_reset(),
            Device::Tablet(d) => d.bus_reset(),
            Device::Storage(d) => d.bus_reset(),
        }
    }
    /// A control transfer on the default endpoint: `data` is the OUT data stage.
    pub fn control(&mut self, setup: &Setup, data: &[u8]) -> Control {
        let eps = self.endpoints();
        let answer = match self {
            Device::Keyboard(d) => {
                let desc = crate::hid::keyboard_descriptors();
                d.core
                    .standard(&desc, setup, data, eps)
                    .unwrap_or_else(|| d.class_request(setup, data))
            }
            Device::Tablet(d) => {
                let desc = crate::hid::tablet_descriptors();
                d.core
                    .standard(&desc, setup, data, eps)
                    .unwrap_or_else(|| d.class_request(setup, data))
            }
            Device::Storage(d) => {
                let desc = crate::storage::descriptors();
                match d.core.standard(&desc, setup, data, eps) {
                    Some(c) => {
                        if setup.request == usb::CLEAR_FEATURE && setup.recipient() == 2 {
                            d.halt_cleared(setup.index as u8);
                        }
                        c
                    }
                    None => d.class_request(setup, data),
                }
            }
        };
        match answer {
            Control::Data(mut v) => {
                v.truncate(usize::from(setup.length));
                Control::Data(v)
            }
            Control::Stall => Control::Stall,
        }
    }
    /// An IN transfer of at most `max` bytes from endpoint `ep` (1..15).
    pub fn transfer_in(&mut self, ep: u8, max: usize) -> Transfer {
        let addr = ep | usb::DIR_IN;
        if !self.endpoints().contains(&addr) || self.core().configuration == 0 {
            return Transfer::Stall;
        }
        if self.core().is_halted(addr) {
            return Transfer::Stall;
        }
        match self {
            Device::Keyboard(d) => d.interrupt_in(max),
            Device::Tablet(d) => d.interrupt_in(max),
            Device::Storage(d) => d.bulk_in(max),
        }
    }
    /// An OUT transfer to endpoint `ep`.
    pub fn transfer_out(&mut self, ep: u8, data: &[u8]) -> Transfer {
        if !self.endpoints().contains(&ep) || self.core().configuration == 0 {
            return Transfer::Stall;
        }
        if self.core().is_halted(ep) {
            return Transfer::Stall;
        }
        match self {
            Device::Storage(d) => d.bulk_out(data),
            _ => Transfer::Stall,
        }
    }
    /// Whether an IN transfer on `ep` would get data now (not NAK).
    pub fn in_ready(&self, _ep: u8) -> bool {
        match self {
            Device::Keyboard(d) => d.has_report(),
            Device::Tablet(d) => d.has_report(),
            Device::Storage(d) => d.in_ready(),
        }
    }
}
