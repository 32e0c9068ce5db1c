//! One VM's input routing: authority-ABI input events to the evdev reports of its
//! virtio-input keyboard and tablet.
//!
//! Nothing reaches the guest unless it is presented and interactive. Display
//! positions go through the VM's [`PointerMap`]; outside it the pointer stays with
//! RayOS, and so do button presses and wheel turns made there. A release always
//! follows its delivered press (a button pressed inside and released outside is
//! released in the guest), and when the VM stops being interactive every key and
//! button still held is released, so the guest never sees a stuck key. Gaze points
//! go through [`Gaze`] and become pointer motion and left clicks.

use alloc::vec::Vec;

use authority_abi::input::{Button, InputEvent, Space};
use virtio::defs::input as ev;
use virtio::input::Event;

use crate::gaze::{Gaze, GazeConfig};
use crate::keymap::hid_to_evdev;
use crate::pointer::PointerMap;

/// Which of the VM's input devices a report is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Keyboard,
    Tablet,
}

/// One report for a device (the device appends SYN_REPORT).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub device: Device,
    pub events: Vec<Event>,
}

/// What became of one input event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Reports were produced for the guest.
    Delivered,
    /// The VM is not presented or not interactive.
    NotInteractive,
    /// Outside the VM's picture, or a button/wheel while the pointer is there: it
    /// stays with RayOS.
    Outside,
    /// A key without an evdev code, or a release of something the guest never saw
    /// pressed.
    Ignored,
}

/// Routing state of one VM.
#[derive(Debug, Clone)]
pub struct Router {
    map: Option<PointerMap>,
    interactive: bool,
    /// The guest pointer position (guest pixels), once it has one.
    pointer: Option<(u32, u32)>,
    /// Whether the last display position was over the VM.
    inside: bool,
    /// Keys (evdev codes < 256) and buttons the guest saw pressed.
    keys_down: [u64; 4],
    buttons_down: u8,
    gaze: Gaze,
}

/// The tablet's evdev code of a button.
fn button_code(b: Button) -> u16 {
    match b {
        Button::Left => ev::BTN_LEFT,
        Button::Right => ev::BTN_RIGHT,
        Button::Middle => ev::BTN_MIDDLE,
        Button::Back => ev::BTN_SIDE,
        Button::Forward => ev::BTN_EXTRA,
    }
}

const ALL_BUTTONS: [Button; 5] = [
    Button::Left,
    Button::Right,
    Button::Middle,
    Button::Back,
    Button::Forward,
];

impl Router {
    /// A VM not presented, with gaze handled by `gaze`.
    pub fn new(gaze: GazeConfig) -> Self {
        Router {
            map: None,
            interactive: false,
            pointer: None,
            inside: false,
            keys_down: [0; 4],
            buttons_down: 0,
            gaze: Gaze::new(gaze),
        }
    }

    /// Presents the VM through `map`, or hides it (`None`); hiding releases what is
    /// held (into `out`).
    pub fn set_presentation(&mut self, map: Option<PointerMap>, out: &mut Vec<Report>) {
        if map.is_none() {
            self.release_all(out);
        }
        if map.map(|m| m.guest_size()) != self.map.map(|m| m.guest_size()) {
            self.pointer = None;
        }
        self.map = map;
        self.inside = false;
        self.gaze.reset();
    }

    /// Whether display position `(x, y)` is over the VM's picture (presented, and
    /// inside it), interactive or not.
    pub fn covers(&self, x: i32, y: i32) -> bool {
        self.map.is_some_and(|m| m.to_guest(x, y).is_some())
    }

    /// The interactive switch (presented or not).
    pub fn interactive(&self) -> bool {
        self.interactive
    }

    /// Whether the VM takes input now: presented and interactive.
    pub fn takes_input(&self) -> bool {
        self.map.is_some() && self.interactive
    }

    /// Whether the last display position was over the VM (its buttons and wheel
    /// go there).
    pub fn pointer_inside(&self) -> bool {
        self.inside
    }

    /// The pointer moved over something else (another VM above this one, or
    /// RayOS): button presses and wheel turns stop coming here. What the guest
    /// holds is still released here.
    pub fn pointer_elsewhere(&mut self) {
        self.inside = false;
    }

    /// Lets input through or not; turning it off releases what is held.
    pub fn set_interactive(&mut self, on: bool, out: &mut Vec<Report>) {
        if !on {
            self.release_all(out);
            self.gaze.reset();
        }
        self.interactive = on;
    }

    fn release_all(&mut self, out: &mut Vec<Report>) {
        let mut keys = Vec::new();
        for code in 0..256u16 {
            if self.keys_down[usize::from(code / 64)] & (1 << (code % 64)) != 0 {
                keys.push(Event::new(ev::EV_KEY, code, 0));
            }
        }
        self.keys_down = [0; 4];
        if !keys.is_empty() {
            out.push(Report {
                device: Device::Keyboard,
                events: keys,
            });
        }
        let buttons: Vec<Event> = ALL_BUTTONS
            .iter()
            .filter(|&&b| self.buttons_down & (1 << b as u8) != 0)
            .map(|&b| Event::new(ev::EV_KEY, button_code(b), 0))
            .collect();
        self.buttons_down = 0;
        if !buttons.is_empty() {
            out.push(Report {
                device: Device::Tablet,
                events: buttons,
            });
        }
    }

    fn motion(&mut self, at: (u32, u32), out: &mut Vec<Report>) {
        self.pointer = Some(at);
        out.push(Report {
            device: Device::Tablet,
            events: alloc::vec![
                Event::new(ev::EV_ABS, ev::ABS_X, at.0 as i32),
                Event::new(ev::EV_ABS, ev::ABS_Y, at.1 as i32),
            ],
        });
    }

    fn button(&mut self, b: Button, pressed: bool, out: &mut Vec<Report>) -> Routed {
        let bit = 1u8 << b as u8;
        if !pressed && self.buttons_down & bit == 0 {
            return Routed::Ignored;
        }
        if pressed && !self.inside {
            return Routed::Outside;
        }
        if pressed {
            self.buttons_down |= bit;
        } else {
            self.buttons_down &= !bit;
        }
        out.push(Report {
            device: Device::Tablet,
            events: alloc::vec![Event::new(ev::EV_KEY, button_code(b), i32::from(pressed))],
        });
        Routed::Delivered
    }

    /// Routes `e`, received at time `now` (used by gaze dwell), appending the
    /// guest's reports to `out`.
    pub fn route(&mut self, now: u64, e: &InputEvent, out: &mut Vec<Report>) -> Routed {
        let Some(map) = self.map.filter(|_| self.interactive) else {
            return Routed::NotInteractive;
        };
        let (gw, gh) = map.guest_size();
        match *e {
            InputEvent::Key { usage, pressed } => {
                let Some(code) = hid_to_evdev(usage) else {
                    return Routed::Ignored;
                };
                let (word, bit) = (usize::from(code / 64), 1u64 << (code % 64));
                if !pressed && self.keys_down[word] & bit == 0 {
                    return Routed::Ignored;
                }
                if pressed {
                    self.keys_down[word] |= bit;
                } else {
                    self.keys_down[word] &= !bit;
                }
                out.push(Report {
                    device: Device::Keyboard,
                    events: alloc::vec![Event::new(ev::EV_KEY, code, i32::from(pressed))],
                });
                Routed::Delivered
            }
            InputEvent::PointerAbs { x, y, space } => {
                let at = match space {
                    Space::Display => map.to_guest(x, y),
                    Space::Guest => (u32::try_from(x).is_ok_and(|x| x < gw)
                        && u32::try_from(y).is_ok_and(|y| y < gh))
                    .then_some((x as u32, y as u32)),
                };
                self.inside = at.is_some();
                match at {
                    Some(at) => {
                        self.motion(at, out);
                        Routed::Delivered
                    }
                    None => Routed::Outside,
                }
            }
            InputEvent::PointerRel { dx, dy } => {
                let (px, py) = self.pointer.unwrap_or((gw / 2, gh / 2));
                let step = |p: u32, d: i32, len: u32| {
                    (i64::from(p) + i64::from(d)).clamp(0, i64::from(len) - 1) as u32
                };
                self.inside = true;
                self.motion((step(px, dx, gw), step(py, dy, gh)), out);
                Routed::Delivered
            }
            InputEvent::Button { button, pressed } => self.button(button, pressed, out),
            InputEvent::Wheel {
                vertical,
                horizontal,
            } => {
                if !self.inside {
                    return Routed::Outside;
                }
                let mut events = Vec::new();
                if vertical != 0 {
                    events.push(Event::new(ev::EV_REL, ev::REL_WHEEL, vertical));
                }
                if horizontal != 0 {
                    events.push(Event::new(ev::EV_REL, ev::REL_HWHEEL, horizontal));
                }
                if events.is_empty() {
                    return Routed::Ignored;
                }
                out.push(Report {
                    device: Device::Tablet,
                    events,
                });
                Routed::Delivered
            }
            InputEvent::Gaze { x, y } => {
                let g = self.gaze.sample(now, x, y);
                let Some(at) = map.to_guest(g.pointer.0, g.pointer.1) else {
                    self.inside = false;
                    return Routed::Outside;
                };
                self.inside = true;
                self.motion(at, out);
                if g.click {
                    self.button(Button::Left, true, out);
                    self.button(Button::Left, false, out);
                }
                Routed::Delivered
            }
        }
    }
}

#[cfg(test)]
#[path = "route_tests.rs"]
mod tests;
