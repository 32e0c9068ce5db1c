//! Input events as INJECT_INPUT reads them from authority memory: 16 bytes each,
//! `kind: u16, flags: u16, code: u32, a: i32, b: i32`, little-endian.
//!
//! | kind | event        | flags                 | code            | a, b            |
//! |------|--------------|-----------------------|-----------------|-----------------|
//! | 1    | key          | bit 0: pressed        | HID usage (page 7, 0..=0xE7) | 0, 0 |
//! | 2    | pointer abs. | bit 1: guest coords   | 0               | x, y            |
//! | 3    | pointer rel. | 0                     | 0               | dx, dy          |
//! | 4    | button       | bit 0: pressed        | 0 left, 1 right, 2 middle, 3 back, 4 forward | 0, 0 |
//! | 5    | wheel        | 0                     | 0               | vertical, horizontal clicks |
//! | 6    | gaze point   | 0                     | 0               | x, y (display)  |
//!
//! An absolute pointer position is in physical-display pixels unless flag bit 1
//! says guest pixels; the hypervisor maps display positions through the inverse
//! of the VM's presentation transform, and a position outside the VM's panel is
//! not delivered. Bits, codes and fields a kind does not define must be zero.

use crate::call::MAX_COORD;
use crate::Status;

/// Bytes of one event record.
pub const EVENT_SIZE: usize = 16;
/// Highest HID keyboard usage (Keyboard/Keypad page, 0xE7 = Right GUI).
pub const KEY_USAGE_MAX: u32 = 0xE7;
/// Largest relative motion or wheel step in one event.
pub const MAX_DELTA: i32 = 4096;

/// The first modifier usage (Left Control): usage `MODIFIER_FIRST + n` is bit
/// `n` of a HID keyboard's modifier byte (Left Control, Shift, Alt, GUI, then
/// the right ones).
pub const MODIFIER_FIRST: u8 = 0xE0;

/// A [`Chord`]'s modifiers: each is satisfied by the key on either side.
pub mod modifier {
    pub const CTRL: u8 = 1 << 0;
    pub const SHIFT: u8 = 1 << 1;
    pub const ALT: u8 = 1 << 2;
    pub const GUI: u8 = 1 << 3;
    /// Every modifier a chord may name.
    pub const ALL: u8 = CTRL | SHIFT | ALT | GUI;
}

/// The last usage a chord may name: F24. The physical keyboard's evdev codes
/// map to no usage between it and the modifiers, so a chord on one could never
/// be pressed.
pub const CHORD_USAGE_MAX: u8 = 0x73;

/// The bit of a HID keyboard's modifier byte that modifier key `usage` sets
/// (`None`: not a modifier key).
pub fn modifier_bit(usage: u8) -> Option<u8> {
    (MODIFIER_FIRST..=KEY_USAGE_MAX as u8)
        .contains(&usage)
        .then(|| 1 << (usage - MODIFIER_FIRST))
}

/// A key chord on the physical keyboard (ABI 1.3, RESERVE_KEY): a key pressed
/// while at least some [`modifier`]s are held, on either side. Only
/// [`Chord::new`] makes one, so every chord is valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chord {
    modifiers: u8,
    usage: u8,
}

impl Chord {
    /// `None` unless `usage` is a key of the keyboard page (0x04 `a` to
    /// [`CHORD_USAGE_MAX`]) and `modifiers` only names [`modifier`] bits.
    pub fn new(modifiers: u8, usage: u8) -> Option<Chord> {
        ((0x04..=CHORD_USAGE_MAX).contains(&usage) && modifiers & !modifier::ALL == 0)
            .then_some(Chord { modifiers, usage })
    }

    /// [`Chord::new`] of two register or ring words (`None` if either is not a
    /// byte).
    pub fn from_words(modifiers: u64, usage: u64) -> Option<Chord> {
        Chord::new(u8::try_from(modifiers).ok()?, u8::try_from(usage).ok()?)
    }

    /// Its [`modifier`] bits.
    pub fn modifiers(&self) -> u8 {
        self.modifiers
    }

    /// Its key's HID usage.
    pub fn usage(&self) -> u8 {
        self.usage
    }

    /// Whether the modifier byte `held` (both sides' bits, as a HID keyboard
    /// report has them) holds this chord's modifiers.
    pub fn held(&self, held: u8) -> bool {
        let either = (held | held >> 4) & modifier::ALL;
        self.modifiers & !either == 0
    }
}

const PRESSED: u16 = 1 << 0;
const GUEST_COORDS: u16 = 1 << 1;

/// Where an absolute position is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    /// Physical-display pixels (mapped through the VM's presentation).
    Display,
    /// The guest's own pixels.
    Guest,
}

/// A pointer button.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Button {
    Left = 0,
    Right = 1,
    Middle = 2,
    Back = 3,
    Forward = 4,
}

/// One input event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputEvent {
    Key { usage: u8, pressed: bool },
    PointerAbs { x: i32, y: i32, space: Space },
    PointerRel { dx: i32, dy: i32 },
    Button { button: Button, pressed: bool },
    Wheel { vertical: i32, horizontal: i32 },
    Gaze { x: i32, y: i32 },
}

impl InputEvent {
    pub fn encode(&self) -> [u8; EVENT_SIZE] {
        let (kind, flags, code, a, b): (u16, u16, u32, i32, i32) = match *self {
            InputEvent::Key { usage, pressed } => (1, pressed as u16, usage as u32, 0, 0),
            InputEvent::PointerAbs { x, y, space } => {
                let flags = if space == Space::Guest {
                    GUEST_COORDS
                } else {
                    0
                };
                (2, flags, 0, x, y)
            }
            InputEvent::PointerRel { dx, dy } => (3, 0, 0, dx, dy),
            InputEvent::Button { button, pressed } => (4, pressed as u16, button as u32, 0, 0),
            InputEvent::Wheel {
                vertical,
                horizontal,
            } => (5, 0, 0, vertical, horizontal),
            InputEvent::Gaze { x, y } => (6, 0, 0, x, y),
        };
        let mut r = [0u8; EVENT_SIZE];
        r[0..2].copy_from_slice(&kind.to_le_bytes());
        r[2..4].copy_from_slice(&flags.to_le_bytes());
        r[4..8].copy_from_slice(&code.to_le_bytes());
        r[8..12].copy_from_slice(&a.to_le_bytes());
        r[12..16].copy_from_slice(&b.to_le_bytes());
        r
    }

    /// One record from authority memory; anything malformed is
    /// [`Status::InvalidParameters`].
    pub fn decode(r: &[u8; EVENT_SIZE]) -> Result<InputEvent, Status> {
        let kind = u16::from_le_bytes([r[0], r[1]]);
        let flags = u16::from_le_bytes([r[2], r[3]]);
        let code = u32::from_le_bytes([r[4], r[5], r[6], r[7]]);
        let a = i32::from_le_bytes([r[8], r[9], r[10], r[11]]);
        let b = i32::from_le_bytes([r[12], r[13], r[14], r[15]]);
        let coord = |v: i32| (-MAX_COORD..=MAX_COORD).contains(&v);
        let delta = |v: i32| (-MAX_DELTA..=MAX_DELTA).contains(&v);
        let ev = match kind {
            1 if flags & !PRESSED == 0 && code <= KEY_USAGE_MAX && a == 0 && b == 0 => {
                InputEvent::Key {
                    usage: code as u8,
                    pressed: flags & PRESSED != 0,
                }
            }
            2 if flags & !GUEST_COORDS == 0 && code == 0 && coord(a) && coord(b) => {
                InputEvent::PointerAbs {
                    x: a,
                    y: b,
                    space: if flags & GUEST_COORDS != 0 {
                        Space::Guest
                    } else {
                        Space::Display
                    },
                }
            }
            3 if flags == 0 && code == 0 && delta(a) && delta(b) => {
                InputEvent::PointerRel { dx: a, dy: b }
            }
            4 if flags & !PRESSED == 0 && a == 0 && b == 0 => InputEvent::Button {
                button: match code {
                    0 => Button::Left,
                    1 => Button::Right,
                    2 => Button::Middle,
                    3 => Button::Back,
                    4 => Button::Forward,
                    _ => return Err(Status::InvalidParameters),
                },
                pressed: flags & PRESSED != 0,
            },
            5 if flags == 0 && code == 0 && delta(a) && delta(b) => InputEvent::Wheel {
                vertical: a,
                horizontal: b,
            },
            6 if flags == 0 && code == 0 && coord(a) && coord(b) => InputEvent::Gaze { x: a, y: b },
            _ => return Err(Status::InvalidParameters),
        };
        Ok(ev)
    }
}

/// Decodes every record of an INJECT_INPUT buffer; the first malformed record
/// refuses the whole batch (nothing is delivered).
pub fn decode_all(bytes: &[u8], out: &mut impl Extend<InputEvent>) -> Result<(), Status> {
    if !bytes.len().is_multiple_of(EVENT_SIZE) {
        return Err(Status::InvalidParameters);
    }
    let mut staged = [None; crate::call::MAX_EVENTS as usize];
    if bytes.len() / EVENT_SIZE > staged.len() {
        return Err(Status::InvalidParameters);
    }
    for (slot, rec) in staged.iter_mut().zip(bytes.chunks_exact(EVENT_SIZE)) {
        let rec: &[u8; EVENT_SIZE] = rec.try_into().map_err(|_| Status::InvalidParameters)?;
        *slot = Some(InputEvent::decode(rec)?);
    }
    out.extend(staged.into_iter().map_while(|e| e));
    Ok(())
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn samples() -> [InputEvent; 9] {
        [
            InputEvent::Key {
                usage: 0x04,
                pressed: true,
            },
            InputEvent::Key {
                usage: KEY_USAGE_MAX as u8,
                pressed: false,
            },
            InputEvent::PointerAbs {
                x: -3,
                y: MAX_COORD,
                space: Space::Display,
            },
            InputEvent::PointerAbs {
                x: 10,
                y: 20,
                space: Space::Guest,
            },
            InputEvent::PointerRel { dx: -5, dy: 7 },
            InputEvent::Button {
                button: Button::Forward,
                pressed: true,
            },
            InputEvent::Wheel {
                vertical: -2,
                horizontal: 1,
            },
            InputEvent::Gaze { x: 640, y: 400 },
            InputEvent::Button {
                button: Button::Left,
                pressed: false,
            },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for e in samples() {
            assert_eq!(InputEvent::decode(&e.encode()), Ok(e));
        }
    }

    #[test]
    fn undefined_bits_codes_and_ranges_are_refused() {
        let key = InputEvent::Key {
            usage: 4,
            pressed: true,
        }
        .encode();
        let mut bad = Vec::new();
        let mut r = key;
        r[0] = 7; // kind
        bad.push(r);
        let mut r = key;
        r[2] = 0x04; // flag
        bad.push(r);
        let mut r = key;
        r[4] = 0xE8; // usage past the page
        bad.push(r);
        let mut r = key;
        r[8] = 1; // field a key does not have
        bad.push(r);
        let mut r = InputEvent::Gaze { x: 0, y: 0 }.encode();
        r[8..12].copy_from_slice(&(MAX_COORD + 1).to_le_bytes());
        bad.push(r);
        let mut r = InputEvent::PointerRel { dx: 0, dy: 0 }.encode();
        r[12..16].copy_from_slice(&(-MAX_DELTA - 1).to_le_bytes());
        bad.push(r);
        let mut r = InputEvent::Button {
            button: Button::Left,
            pressed: true,
        }
        .encode();
        r[4] = 5; // button
        bad.push(r);
        for r in bad {
            assert_eq!(
                InputEvent::decode(&r),
                Err(Status::InvalidParameters),
                "{r:x?}"
            );
        }
    }

    #[test]
    fn one_bad_record_refuses_the_whole_batch() {
        let mut bytes: Vec<u8> = samples().iter().flat_map(|e| e.encode()).collect();
        let mut out = Vec::new();
        decode_all(&bytes, &mut out).unwrap();
        assert_eq!(out, samples());
        bytes[EVENT_SIZE * 5] = 0xff;
        let mut out = Vec::new();
        assert_eq!(decode_all(&bytes, &mut out), Err(Status::InvalidParameters));
        assert!(out.is_empty());
        assert_eq!(
            decode_all(&bytes[..EVENT_SIZE + 1], &mut out),
            Err(Status::InvalidParameters)
        );
    }

    proptest! {
        #[test]
        fn any_record_decodes_to_itself_or_is_refused(r in any::<[u8; EVENT_SIZE]>()) {
            if let Ok(e) = InputEvent::decode(&r) {
                prop_assert_eq!(e.encode(), r);
            }
        }
    }
}
