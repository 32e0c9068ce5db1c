//! The host's side of a controller that lives inside a root complex (behind the
//! root complex's lock, where the hypervisor's input routing and monitor cannot
//! reach it directly): a [`HostLink`] queues requests — key presses, tablet
//! states, unplugging and re-plugging a port's device — and the
//! [`crate::function::XhciFunction`] applies them at its next `poll` (the link
//! raises the function's work signal). Input reaches the guest as HID reports on
//! the devices' interrupt endpoints; hot-plug as Port Status Change Events.
//!
//! The link tracks which ports hold a device as the host intends them (the
//! function applies every request in order, so they agree once the queue is
//! drained), which lets it refuse a detach of an empty port or an attach of a
//! port whose device was never detached before queueing anything.

use alloc::collections::VecDeque;
use alloc::sync::Arc;

use spin::Mutex;
use vdev::WorkSignal;

use vdev::{AsyncBlock, BlockError, BlockOp, Completion, Submit};

use crate::hid::{TabletInput, TABLET_MAX};

/// Buttons of the tablet (left, right, middle).
pub const TABLET_BUTTONS: u8 = 3;

/// Requests a link holds at most; more are refused ([`HostError::QueueFull`]).
pub const MAX_QUEUED: usize = 256;

/// One request of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostRequest {
    /// A key (HID usage, Keyboard/Keypad page) pressed or released on the first
    /// keyboard.
    Key { usage: u8, down: bool },
    /// The first tablet's new state.
    Tablet(TabletInput),
    /// Unplug the device on `port` (1-based); the function keeps it.
    Detach { port: u8 },
    /// Plug the device unplugged from `port` back in.
    Attach { port: u8 },
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostError {
    /// The port does not exist (or has no device the host can plug there).
    NoSuchPort,
    /// Detach of a port with no device.
    NotAttached,
    /// Attach of a port whose device is plugged in.
    AlreadyAttached,
    /// [`MAX_QUEUED`] requests wait already.
    QueueFull,
}

impl core::fmt::Display for HostError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            HostError::NoSuchPort => "no such port",
            HostError::NotAttached => "no device is attached there",
            HostError::AlreadyAttached => "the device is attached already",
            HostError::QueueFull => "too many requests are waiting",
        })
    }
}

#[derive(Default)]
struct Inbox {
    queue: VecDeque<HostRequest>,
    /// Bit `p`: port `p` holds a device once the queue is applied.
    present: u32,
    /// Bit `p`: port `p` had a device the host may plug back.
    known: u32,
    /// The tablet's state as the host last set it (wheel 0).
    tablet: TabletInput,
    signal: Option<WorkSignal>,
}

/// The host's handle on one controller; clones share it.
#[derive(Clone, Default)]
pub struct HostLink(Arc<Mutex<Inbox>>);

fn bit(port: u8) -> Option<u32> {
    (1..32).contains(&port).then(|| 1u32 << port)
}

impl HostLink {
    /// A link whose ports `present` (bit per 1-based port) hold devices.
    pub(crate) fn new(present: u32) -> Self {
        HostLink(Arc::new(Mutex::new(Inbox {
            present,
            known: present,
            ..Inbox::default()
        })))
    }

    fn push(&self, r: HostRequest) -> Result<(), HostError> {
        let mut i = self.0.lock();
        match r {
            HostRequest::Detach { port } => {
                let b = bit(port).filter(|b| i.known & b != 0);
                let b = b.ok_or(HostError::NoSuchPort)?;
                if i.present & b == 0 {
                    return Err(HostError::NotAttached);
                }
                if i.queue.len() >= MAX_QUEUED {
                    return Err(HostError::QueueFull);
                }
                i.present &= !b;
            }
            HostRequest::Attach { port } => {
                let b = bit(port).filter(|b| i.known & b != 0);
                let b = b.ok_or(HostError::NoSuchPort)?;
                if i.present & b != 0 {
                    return Err(HostError::AlreadyAttached);
                }
                if i.queue.len() >= MAX_QUEUED {
                    return Err(HostError::QueueFull);
                }
                i.present |= b;
            }
            _ => {
                if i.queue.len() >= MAX_QUEUED {
                    return Err(HostError::QueueFull);
                }
            }
        }
        i.queue.push_back(r);
        if let Some(s) = &i.signal {
            s.raise();
        }
        Ok(())
    }

    /// Presses (`down`) or releases a key, by HID usage (Keyboard/Keypad page
    /// 0x07; modifiers are 0xe0..=0xe7).
    pub fn key(&self, usage: u8, down: bool) -> Result<(), HostError> {
        self.push(HostRequest::Key { usage, down })
    }

    /// The tablet's new state (absolute position, buttons, wheel detents).
    pub fn tablet(&self, input: TabletInput) -> Result<(), HostError> {
        self.push(HostRequest::Tablet(input))
    }

    /// Moves the tablet's pointer to (`x`, `y`), each 0..=[`TABLET_MAX`] across
    /// the screen (larger values are clamped), buttons as they are.
    pub fn pointer_abs(&self, x: u16, y: u16) -> Result<(), HostError> {
        let mut i = self.0.lock();
        let next = TabletInput {
            x: x.min(TABLET_MAX),
            y: y.min(TABLET_MAX),
            ..i.tablet
        };
        Self::push_tablet(&mut i, next, 0)
    }

    /// Presses or releases tablet button `button` (0 left, 1 right, 2 middle);
    /// `Ok(false)`: the tablet has no such button, nothing is queued.
    pub fn button(&self, button: u8, pressed: bool) -> Result<bool, HostError> {
        if button >= TABLET_BUTTONS {
            return Ok(false);
        }
        let mut i = self.0.lock();
        let mut next = i.tablet;
        if pressed {
            next.buttons |= 1 << button;
        } else {
            next.buttons &= !(1 << button);
        }
        Self::push_tablet(&mut i, next, 0).map(|()| true)
    }

    /// Turns the tablet's wheel by `detents` (positive: away from the user),
    /// pointer and buttons as they are.
    pub fn wheel(&self, detents: i8) -> Result<(), HostError> {
        let mut i = self.0.lock();
        let next = i.tablet;
        Self::push_tablet(&mut i, next, detents)
    }

    fn push_tablet(i: &mut Inbox, next: TabletInput, wheel: i8) -> Result<(), HostError> {
        if i.queue.len() >= MAX_QUEUED {
            return Err(HostError::QueueFull);
        }
        i.tablet = next;
        i.queue
            .push_back(HostRequest::Tablet(TabletInput { wheel, ..next }));
        if let Some(s) = &i.signal {
            s.raise();
        }
        Ok(())
    }

    /// Unplugs the device on `port` (the guest sees a disconnect).
    pub fn detach(&self, port: u8) -> Result<(), HostError> {
        self.push(HostRequest::Detach { port })
    }

    /// Plugs the device unplugged from `port` back in (the guest sees a connect).
    pub fn attach(&self, port: u8) -> Result<(), HostError> {
        self.push(HostRequest::Attach { port })
    }

    /// Whether `port` holds a device once the waiting requests are applied.
    pub fn attached(&self, port: u8) -> bool {
        bit(port).is_some_and(|b| self.0.lock().present & b != 0)
    }

    /// Whether `port` had a device when the link was made (one the host can
    /// unplug and plug back).
    pub fn has_device(&self, port: u8) -> bool {
        bit(port).is_some_and(|b| self.0.lock().known & b != 0)
    }

    /// Requests not yet applied.
    pub fn queued(&self) -> usize {
        self.0.lock().queue.len()
    }

    pub(crate) fn connect(&self, signal: &WorkSignal) {
        let mut i = self.0.lock();
        if !i.queue.is_empty() {
            signal.raise();
        }
        i.signal = Some(signal.clone());
    }

    pub(crate) fn pop(&self) -> Option<HostRequest> {
        self.0.lock().queue.pop_front()
    }

    pub(crate) fn has_requests(&self) -> bool {
        !self.0.lock().queue.is_empty()
    }

    /// After a restore: the ports' devices as they now are, requests dropped.
    pub(crate) fn set_present(&self, present: u32) {
        let mut i = self.0.lock();
        i.queue.clear();
        i.present = present;
    }
}

/// A read-only medium in host memory (an install image loaded with the VM) as a
/// mass-storage backend; its length is a whole number of sectors.
pub struct ReadOnlyImage<'a>(&'a [u8]);

impl<'a> ReadOnlyImage<'a> {
    /// `None` unless `image` is a non-empty whole number of 512-byte sectors.
    pub fn new(image: &'a [u8]) -> Option<Self> {
        (!image.is_empty() && (image.len() as u64).is_multiple_of(vdev::SECTOR_SIZE))
            .then_some(Self(image))
    }
}

/// Every request completes inside `submit` (the image is in memory).
impl AsyncBlock for ReadOnlyImage<'_> {
    fn capacity(&self) -> u64 {
        self.0.len() as u64
    }
    fn read_only(&self) -> bool {
        true
    }
    fn submit(&mut self, tag: u64, op: BlockOp, mut buf: alloc::vec::Vec<u8>) -> Submit {
        let result = match op {
            BlockOp::Read { offset } => usize::try_from(offset)
                .ok()
                .and_then(|start| self.0.get(start..start.checked_add(buf.len())?))
                .map(|src| buf.copy_from_slice(src))
                .ok_or(BlockError::OutOfRange),
            BlockOp::Write { .. } => Err(BlockError::ReadOnly),
            BlockOp::Flush => Ok(()),
        };
        Submit::Done(Completion { tag, result, buf })
    }
    fn poll(&mut self) -> Option<Completion> {
        None
    }
    fn has_completions(&self) -> bool {
        false
    }
}
