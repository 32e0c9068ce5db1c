//! The physical keyboard and tablet (QEMU's `virtio-keyboard-device` and
//! `virtio-tablet-device`, driven by the hypervisor) to authority-ABI input events.
//!
//! A physical device speaks evdev: events accumulate until SYN_REPORT, and then
//! the report becomes [`InputEvent`]s in a fixed order — the pointer's new position
//! first (so a click in the same report happens where the pointer now is), then
//! keys and buttons in the order they came, then the wheel. Tablet positions are
//! scaled from the device's axis range onto the physical display's pixels (the
//! pixel whose span holds the position). Key auto-repeat (value 2) is dropped: the
//! guest's own keyboard driver repeats. Everything here comes from a device the
//! hypervisor drives but does not trust: unknown types and codes are ignored, and
//! a report is bounded ([`MAX_REPORT`] events; beyond, the rest of it is dropped).

use alloc::vec::Vec;

use authority_abi::input::{Button, InputEvent, Space};
use virtio::defs::input as ev;

use crate::keymap::evdev_to_hid;

/// Most key and button changes kept from one report.
pub const MAX_REPORT: usize = 64;

/// One absolute axis of the physical tablet: its range as the device reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Axis {
    pub min: i32,
    pub max: i32,
}

/// The physical input devices' translation.
#[derive(Debug, Clone)]
pub struct Physical {
    display: (u32, u32),
    axes: (Axis, Axis),
    /// Raw axis values of the report being gathered.
    abs: (Option<i32>, Option<i32>),
    /// The last position delivered (display pixels).
    position: (i32, i32),
    presses: Vec<InputEvent>,
    wheel: (i32, i32),
    /// Reports cut short at [`MAX_REPORT`].
    pub truncated: u64,
}

/// The tablet button of evdev code `code`.
fn button(code: u16) -> Option<Button> {
    Some(match code {
        ev::BTN_LEFT => Button::Left,
        ev::BTN_RIGHT => Button::Right,
        ev::BTN_MIDDLE => Button::Middle,
        ev::BTN_SIDE => Button::Back,
        ev::BTN_EXTRA => Button::Forward,
        _ => return None,
    })
}

/// `v` on `axis` as a pixel of a `len`-pixel display side: the pixel whose
/// 1/len-th of the range holds it, clamped to the display.
fn scale(v: i32, axis: Axis, len: u32) -> i32 {
    let span = (i64::from(axis.max) - i64::from(axis.min) + 1).max(1);
    let off = (i64::from(v) - i64::from(axis.min)).clamp(0, span - 1);
    (off * i64::from(len) / span) as i32
}

impl Physical {
    /// A display of `display` pixels; the tablet's axes span `axes` (x, y).
    pub fn new(display: (u32, u32), axes: (Axis, Axis)) -> Self {
        Physical {
            display,
            axes,
            abs: (None, None),
            position: (0, 0),
            presses: Vec::new(),
            wheel: (0, 0),
            truncated: 0,
        }
    }

    /// The last pointer position, in display pixels.
    pub fn position(&self) -> (i32, i32) {
        self.position
    }

    /// Takes one evdev event; at SYN_REPORT appends the report's input events to
    /// `out`.
    pub fn event(&mut self, ty: u16, code: u16, value: i32, out: &mut Vec<InputEvent>) {
        match ty {
            ev::EV_KEY if value == 0 || value == 1 => {
                let pressed = value == 1;
                let e = match button(code) {
                    Some(button) => InputEvent::Button { button, pressed },
                    None => match evdev_to_hid(code) {
                        Some(usage) => InputEvent::Key { usage, pressed },
                        None => return,
                    },
                };
                if self.presses.len() < MAX_REPORT {
                    self.presses.push(e);
                } else {
                    self.truncated += 1;
                }
            }
            ev::EV_ABS if code == ev::ABS_X => self.abs.0 = Some(value),
            ev::EV_ABS if code == ev::ABS_Y => self.abs.1 = Some(value),
            ev::EV_REL if code == ev::REL_WHEEL => {
                self.wheel.0 = self.wheel.0.saturating_add(value)
            }
            ev::EV_REL if code == ev::REL_HWHEEL => {
                self.wheel.1 = self.wheel.1.saturating_add(value)
            }
            ev::EV_SYN if code == ev::SYN_REPORT => self.report(out),
            _ => {}
        }
    }

    fn report(&mut self, out: &mut Vec<InputEvent>) {
        if self.abs.0.is_some() || self.abs.1.is_some() {
            if let Some(x) = self.abs.0.take() {
                self.position.0 = scale(x, self.axes.0, self.display.0);
            }
            if let Some(y) = self.abs.1.take() {
                self.position.1 = scale(y, self.axes.1, self.display.1);
            }
            out.push(InputEvent::PointerAbs {
                x: self.position.0,
                y: self.position.1,
                space: Space::Display,
            });
        }
        out.append(&mut self.presses);
        let (vertical, horizontal) = core::mem::take(&mut self.wheel);
        if vertical != 0 || horizontal != 0 {
            out.push(InputEvent::Wheel {
                vertical,
                horizontal,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keymap::{hid_to_evdev, usage};

    const QEMU_AXIS: Axis = Axis {
        min: 0,
        max: 0x7fff,
    };

    fn run(p: &mut Physical, events: &[(u16, u16, i32)]) -> Vec<InputEvent> {
        let mut out = Vec::new();
        for &(t, c, v) in events {
            p.event(t, c, v, &mut out);
        }
        out
    }

    #[test]
    fn a_tablet_report_is_the_pointer_then_the_click_at_display_pixels() {
        let mut p = Physical::new((1280, 800), (QEMU_AXIS, QEMU_AXIS));
        // The centre of pixel (300, 200) on QEMU's 0..=0x7fff axes.
        let at = |px: i64, len: i64| ((2 * px + 1) * 0x8000 / (2 * len)) as i32;
        let out = run(
            &mut p,
            &[
                (ev::EV_ABS, ev::ABS_X, at(300, 1280)),
                (ev::EV_ABS, ev::ABS_Y, at(200, 800)),
                (ev::EV_KEY, ev::BTN_LEFT, 1),
                (ev::EV_SYN, ev::SYN_REPORT, 0),
                (ev::EV_KEY, ev::BTN_LEFT, 0),
                (ev::EV_SYN, ev::SYN_REPORT, 0),
            ],
        );
        assert_eq!(
            out,
            [
                InputEvent::PointerAbs {
                    x: 300,
                    y: 200,
                    space: Space::Display
                },
                InputEvent::Button {
                    button: Button::Left,
                    pressed: true
                },
                InputEvent::Button {
                    button: Button::Left,
                    pressed: false
                },
            ]
        );
    }

    #[test]
    fn every_pixel_of_a_side_is_reached_and_the_ends_clamp() {
        for len in [1u32, 7, 640, 1280, 4096] {
            let mut seen = alloc::vec![false; len as usize];
            for v in 0..=0x7fff {
                let px = scale(v, QEMU_AXIS, len);
                seen[px as usize] = true;
            }
            assert!(seen.iter().all(|&s| s), "len {len}");
            assert_eq!(scale(-5, QEMU_AXIS, len), 0);
            assert_eq!(scale(i32::MAX, QEMU_AXIS, len), len as i32 - 1);
        }
    }

    #[test]
    fn one_axis_keeps_the_other_and_keys_become_usages() {
        let mut p = Physical::new((100, 100), (QEMU_AXIS, QEMU_AXIS));
        run(
            &mut p,
            &[
                (ev::EV_ABS, ev::ABS_X, 0x4000),
                (ev::EV_ABS, ev::ABS_Y, 0x4000),
                (ev::EV_SYN, ev::SYN_REPORT, 0),
            ],
        );
        let a = hid_to_evdev(usage::A).unwrap();
        let out = run(
            &mut p,
            &[
                (ev::EV_ABS, ev::ABS_Y, 0),
                (ev::EV_KEY, a, 1),
                (ev::EV_KEY, a, 2),
                (ev::EV_REL, ev::REL_WHEEL, -1),
                (ev::EV_KEY, 0x2ff, 1),
                (0x15, 3, 3),
                (ev::EV_SYN, ev::SYN_REPORT, 0),
            ],
        );
        assert_eq!(
            out,
            [
                InputEvent::PointerAbs {
                    x: 50,
                    y: 0,
                    space: Space::Display
                },
                InputEvent::Key {
                    usage: usage::A,
                    pressed: true
                },
                InputEvent::Wheel {
                    vertical: -1,
                    horizontal: 0
                },
            ]
        );
    }

    #[test]
    fn a_flood_without_syn_stays_bounded() {
        let mut p = Physical::new((100, 100), (QEMU_AXIS, QEMU_AXIS));
        let a = hid_to_evdev(usage::A).unwrap();
        let mut out = Vec::new();
        for i in 0..10_000 {
            p.event(ev::EV_KEY, a, i % 2, &mut out);
        }
        assert!(out.is_empty());
        p.event(ev::EV_SYN, ev::SYN_REPORT, 0, &mut out);
        assert_eq!(out.len(), MAX_REPORT);
        assert_eq!(p.truncated, 10_000 - MAX_REPORT as u64);
    }

    #[test]
    fn evdev_to_hid_inverts_hid_to_evdev() {
        for u in 0..=u8::MAX {
            if let Some(code) = hid_to_evdev(u) {
                let back = evdev_to_hid(code).unwrap();
                assert_eq!(hid_to_evdev(back), Some(code));
                assert!(back <= u);
            }
        }
        assert_eq!(evdev_to_hid(0), None);
    }
}
