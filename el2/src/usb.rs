//! A VM's USB: an xHCI controller (`xhci::function::XhciFunction`, class
//! 0c/03/30) at PCIe 00:03.0 behind the VM's root complex, with a HID keyboard on
//! root-hub port 1, a HID tablet on port 2 (USB 2 ports) and, when the VM has
//! one, a read-only mass-storage medium on port 5 (the first USB 3 port): an
//! image loaded with the VM, or a `windows` VM's install media on the system
//! disk.
//! [`UsbInput`] is the host's way in: input for the HID devices (the input
//! router's entry point) and hot-plug of the storage device (the monitor's `usb`
//! commands). The logic lives in `xhci::host`; this file only builds the set.

use alloc::boxed::Box;

use vdev::AsyncBlock;
use xhci::defs::speed;
use xhci::function::XhciFunction;
use xhci::{Config, Device, HostError, HostLink, Keyboard, MassStorage, Tablet};

/// Root-hub ports of the devices.
pub const KEYBOARD_PORT: u8 = 1;
pub const TABLET_PORT: u8 = 2;
pub const STORAGE_PORT: u8 = 5;

/// A storage medium the controller's mass-storage device serves: an image in
/// memory (completing at once) or an extent of the system disk (completing
/// later; the device NAKs the guest meanwhile and the completion raises the VM's
/// work signal).
pub type Medium = Box<dyn AsyncBlock + Send>;

/// What a VM's USB carries besides keyboard and tablet.
pub struct Usb {
    /// The mass-storage device's medium, if any.
    pub storage: Option<Medium>,
}

/// The controller with its devices attached, and the host's handle on it.
pub fn function(usb: Usb) -> (XhciFunction<Medium>, UsbInput) {
    let mut f = XhciFunction::new(
        Config::default(),
        boards::devices::XHCI_PCI_VENDOR_ID,
        boards::devices::XHCI_PCI_DEVICE_ID,
    );
    let c = f.controller_mut();
    // Fresh ports of a fresh controller: attach cannot be refused.
    let attached = [
        c.attach(KEYBOARD_PORT, Device::Keyboard(Keyboard::new(speed::HIGH))),
        c.attach(TABLET_PORT, Device::Tablet(Tablet::new(speed::HIGH))),
    ];
    for r in attached {
        if let Err(e) = r {
            log::warn!("usb: a HID device was refused: {e:?}");
        }
    }
    if let Some(medium) = usb.storage {
        let d = Device::Storage(MassStorage::new(medium, speed::SUPER));
        if let Err(e) = c.attach(STORAGE_PORT, d) {
            log::warn!("usb: the storage device was refused: {e:?}");
        }
    }
    let link = f.host_link();
    (f, UsbInput { link })
}

/// The host's handle on a VM's USB devices (cheap to clone). Requests are queued
/// and applied by the controller at its next deferred-work round, which the queue
/// raises; they fail only when [`xhci::host::MAX_QUEUED`] wait already or a
/// hot-plug request does not fit the port's state.
#[derive(Clone)]
pub struct UsbInput {
    link: HostLink,
}

impl UsbInput {
    /// A key (HID usage, Keyboard/Keypad page 0x07; modifiers 0xe0..=0xe7)
    /// pressed or released on the keyboard.
    pub fn key(&self, usage: u8, pressed: bool) -> Result<(), HostError> {
        self.link.key(usage, pressed)
    }

    /// The tablet's pointer at (`x`, `y`), each 0..=0x7fff across the screen.
    pub fn pointer_abs(&self, x: u16, y: u16) -> Result<(), HostError> {
        self.link.pointer_abs(x, y)
    }

    /// A tablet button (0 left, 1 right, 2 middle); `Ok(false)` for others.
    pub fn button(&self, button: u8, pressed: bool) -> Result<bool, HostError> {
        self.link.button(button, pressed)
    }

    /// The tablet's wheel turned by `detents`.
    pub fn wheel(&self, detents: i8) -> Result<(), HostError> {
        self.link.wheel(detents)
    }

    /// Unplugs the storage device (the guest sees a disconnect).
    pub fn detach_storage(&self) -> Result<(), HostError> {
        self.link.detach(STORAGE_PORT)
    }

    /// Plugs the storage device back in (the guest sees a connect).
    pub fn attach_storage(&self) -> Result<(), HostError> {
        self.link.attach(STORAGE_PORT)
    }

    /// Requests queued and not yet applied by the controller (at most
    /// [`xhci::host::MAX_QUEUED`]).
    pub fn queued(&self) -> usize {
        self.link.queued()
    }

    /// Whether the VM has a storage device (plugged in or not).
    pub fn has_storage(&self) -> bool {
        self.link.has_device(STORAGE_PORT)
    }
}
