//! Keys: HID keyboard usages (USB HID Usage Tables, page 7, what the authority ABI
//! carries) to evdev key codes (what virtio-input carries), the US keyboard layout
//! (which usage, with or without Shift, types a character), and key names for chords.

use alloc::format;
use alloc::string::String;

use authority_abi::input::{modifier, modifier_bit, Chord};

/// Usages of the modifier keys (page 7).
pub mod usage {
    pub const A: u8 = 0x04;
    pub const Z: u8 = 0x1d;
    pub const DIGIT_1: u8 = 0x1e;
    pub const DIGIT_0: u8 = 0x27;
    pub const ENTER: u8 = 0x28;
    pub const ESCAPE: u8 = 0x29;
    pub const BACKSPACE: u8 = 0x2a;
    pub const TAB: u8 = 0x2b;
    pub const SPACE: u8 = 0x2c;
    pub const F1: u8 = 0x3a;
    pub const HOME: u8 = 0x4a;
    pub const F12: u8 = 0x45;
    pub const F13: u8 = 0x68;
    pub const F24: u8 = 0x73;
    pub const LEFT_CTRL: u8 = 0xe0;
    pub const LEFT_SHIFT: u8 = 0xe1;
    pub const LEFT_ALT: u8 = 0xe2;
    pub const LEFT_GUI: u8 = 0xe3;
    pub const RIGHT_CTRL: u8 = 0xe4;
    pub const RIGHT_SHIFT: u8 = 0xe5;
    pub const RIGHT_ALT: u8 = 0xe6;
    pub const RIGHT_GUI: u8 = 0xe7;
}

/// evdev codes of the letters a..z, in alphabetical order.
const LETTERS: [u16; 26] = [
    30, 48, 46, 32, 18, 33, 34, 35, 23, 36, 37, 38, 50, 49, 24, 25, 16, 19, 31, 20, 22, 47, 17, 45,
    21, 44,
];

/// evdev codes of usages 0x28..=0x67 (Enter .. Keypad =); 0 where Linux has none.
const MIDDLE: [u16; 0x40] = [
    28, 1, 14, 15, 57, 12, 13, 26, 27, 43, 43, 39, 40, 41, 51, 52, // 0x28..0x37
    53, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 87, 88, 99, 70, // 0x38..0x47
    119, 110, 102, 104, 111, 107, 109, 106, 105, 108, 103, 69, 98, 55, 74, 78, // 0x48..0x57
    96, 79, 80, 81, 75, 76, 77, 71, 72, 73, 82, 83, 86, 127, 116, 117, // 0x58..0x67
];

/// evdev codes of the modifiers 0xE0..=0xE7.
const MODIFIERS: [u16; 8] = [29, 42, 56, 125, 97, 54, 100, 126];

/// evdev code of F13; F13..F24 are consecutive on both sides.
const EVDEV_F13: u16 = 183;

/// The evdev key code of HID keyboard usage `usage`, `None` for usages without one
/// (reserved, error codes, and keys Linux has no code for).
pub fn hid_to_evdev(usage: u8) -> Option<u16> {
    let code = match usage {
        usage::A..=usage::Z => LETTERS[usize::from(usage - usage::A)],
        // 1..9, 0 are evdev 2..=11.
        usage::DIGIT_1..=usage::DIGIT_0 => u16::from(usage - usage::DIGIT_1) + 2,
        0x28..=0x67 => MIDDLE[usize::from(usage - 0x28)],
        usage::F13..=usage::F24 => EVDEV_F13 + u16::from(usage - usage::F13),
        usage::LEFT_CTRL..=usage::RIGHT_GUI => MODIFIERS[usize::from(usage - usage::LEFT_CTRL)],
        _ => 0,
    };
    (code != 0).then_some(code)
}

/// The HID keyboard usage of evdev key code `code` (the inverse of
/// [`hid_to_evdev`]; where two usages share a code, the lower), `None` for codes no
/// usage maps to.
pub fn evdev_to_hid(code: u16) -> Option<u8> {
    (0..=u8::MAX).find(|&u| hid_to_evdev(u) == Some(code))
}

/// Characters of the US layout typed without Shift and with it, by usage from 0x2D
/// (`-`) to 0x38 (`/`), skipping 0x32 (non-US `#`).
const PUNCT: [(u8, char, char); 11] = [
    (0x2d, '-', '_'),
    (0x2e, '=', '+'),
    (0x2f, '[', '{'),
    (0x30, ']', '}'),
    (0x31, '\\', '|'),
    (0x33, ';', ':'),
    (0x34, '\'', '"'),
    (0x35, '`', '~'),
    (0x36, ',', '<'),
    (0x37, '.', '>'),
    (0x38, '/', '?'),
];

/// Shifted digits 1..9, 0 on the US layout.
const SHIFTED_DIGITS: [char; 10] = ['!', '@', '#', '$', '%', '^', '&', '*', '(', ')'];

/// How character `c` is typed on a US keyboard: its usage and whether Shift is held.
/// `None` for characters the layout cannot type (the script parser refuses them).
pub fn us_layout(c: char) -> Option<(u8, bool)> {
    Some(match c {
        'a'..='z' => (usage::A + (c as u8 - b'a'), false),
        'A'..='Z' => (usage::A + (c as u8 - b'A'), true),
        '1'..='9' => (usage::DIGIT_1 + (c as u8 - b'1'), false),
        '0' => (usage::DIGIT_0, false),
        ' ' => (usage::SPACE, false),
        '\n' => (usage::ENTER, false),
        '\t' => (usage::TAB, false),
        _ => {
            if let Some(i) = SHIFTED_DIGITS.iter().position(|&s| s == c) {
                return Some((usage::DIGIT_1 + i as u8, true));
            }
            let &(u, plain, _) = PUNCT.iter().find(|p| p.1 == c || p.2 == c)?;
            (u, c != plain)
        }
    })
}

/// Named keys of chords (lower case), besides single letters, digits and the
/// punctuation of [`us_layout`] typed without Shift.
const NAMES: &[(&str, u8)] = &[
    ("ctrl", usage::LEFT_CTRL),
    ("lctrl", usage::LEFT_CTRL),
    ("rctrl", usage::RIGHT_CTRL),
    ("shift", usage::LEFT_SHIFT),
    ("lshift", usage::LEFT_SHIFT),
    ("rshift", usage::RIGHT_SHIFT),
    ("alt", usage::LEFT_ALT),
    ("lalt", usage::LEFT_ALT),
    ("ralt", usage::RIGHT_ALT),
    ("altgr", usage::RIGHT_ALT),
    ("meta", usage::LEFT_GUI),
    ("super", usage::LEFT_GUI),
    ("win", usage::LEFT_GUI),
    ("rmeta", usage::RIGHT_GUI),
    ("enter", usage::ENTER),
    ("return", usage::ENTER),
    ("esc", usage::ESCAPE),
    ("escape", usage::ESCAPE),
    ("backspace", usage::BACKSPACE),
    ("tab", usage::TAB),
    ("space", usage::SPACE),
    ("capslock", 0x39),
    ("printscreen", 0x46),
    ("sysrq", 0x46),
    ("scrolllock", 0x47),
    ("pause", 0x48),
    ("insert", 0x49),
    ("home", 0x4a),
    ("pageup", 0x4b),
    ("delete", 0x4c),
    ("del", 0x4c),
    ("end", 0x4d),
    ("pagedown", 0x4e),
    ("right", 0x4f),
    ("left", 0x50),
    ("down", 0x51),
    ("up", 0x52),
    ("numlock", 0x53),
    ("menu", 0x65),
];

/// The usage of key `name` (case-insensitive): a name of the table above, `f1`..`f24`,
/// or one character the US layout types without Shift.
pub fn key_by_name(name: &str) -> Option<u8> {
    let lower = |s: &str, t: &str| s.eq_ignore_ascii_case(t);
    if let Some(&(_, u)) = NAMES.iter().find(|(n, _)| lower(n, name)) {
        return Some(u);
    }
    if let Some(n) = name
        .strip_prefix(['f', 'F'])
        .and_then(|d| d.parse::<u8>().ok())
    {
        return match n {
            1..=12 => Some(usage::F1 + n - 1),
            13..=24 => Some(usage::F13 + n - 13),
            _ => None,
        };
    }
    let mut chars = name.chars();
    let (Some(c), None) = (chars.next(), chars.next()) else {
        return None;
    };
    match us_layout(c.to_ascii_lowercase())? {
        (u, false) if !c.is_whitespace() => Some(u),
        _ => None,
    }
}

/// The chord `spec` names (`ctrl+alt+home`: modifier names, either side's
/// counting as the modifier, then one key; case-insensitive), for
/// RESERVE_KEY; `None` if it is not one.
pub fn parse_chord(spec: &str) -> Option<Chord> {
    let mut modifiers = 0u8;
    let mut key = None;
    for name in spec.split('+') {
        let u = key_by_name(name)?;
        if key.is_some() {
            return None;
        }
        match modifier_bit(u) {
            Some(bit) => {
                // Either side's key is the modifier.
                let bit = (bit | bit >> 4) & modifier::ALL;
                if modifiers & bit != 0 {
                    return None;
                }
                modifiers |= bit;
            }
            None => key = Some(u),
        }
    }
    Chord::new(modifiers, key?)
}

/// `c` as [`parse_chord`] reads it (`ctrl+alt+home`).
pub fn chord_name(c: Chord) -> String {
    let mut out = String::new();
    for (bit, name) in [
        (modifier::CTRL, "ctrl"),
        (modifier::SHIFT, "shift"),
        (modifier::ALT, "alt"),
        (modifier::GUI, "meta"),
    ] {
        if c.modifiers() & bit != 0 {
            out.push_str(name);
            out.push('+');
        }
    }
    let named = NAMES.iter().find(|(_, u)| *u == c.usage()).map(|(n, _)| *n);
    let typed = || {
        (' '..='~')
            .find(|&ch| !ch.is_ascii_uppercase() && us_layout(ch) == Some((c.usage(), false)))
            .filter(|ch| *ch != ' ')
    };
    let function = || match c.usage() {
        u if (usage::F1..usage::F1 + 12).contains(&u) => Some(u - usage::F1 + 1),
        u if (usage::F13..usage::F13 + 12).contains(&u) => Some(u - usage::F13 + 13),
        _ => None,
    };
    match (named, typed(), function()) {
        (Some(n), _, _) => out.push_str(n),
        (None, Some(ch), _) => out.push(ch),
        (None, None, Some(n)) => out.push_str(&format!("f{n}")),
        _ => out.push_str(&format!("usage-{:#04x}", c.usage())),
    }
    out
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use virtio::defs::input as ev;

    #[test]
    fn hid_usages_map_to_the_evdev_codes_of_the_same_keys() {
        // Spot checks across every range, against the Linux key code names.
        let cases = [
            (0x04, 30),  // KEY_A
            (0x1d, 44),  // KEY_Z
            (0x1e, 2),   // KEY_1
            (0x27, 11),  // KEY_0
            (0x28, 28),  // KEY_ENTER
            (0x2c, 57),  // KEY_SPACE
            (0x38, 53),  // KEY_SLASH
            (0x3a, 59),  // KEY_F1
            (0x44, 87),  // KEY_F11
            (0x4c, 111), // KEY_DELETE
            (0x52, 103), // KEY_UP
            (0x58, 96),  // KEY_KPENTER
            (0x64, 86),  // KEY_102ND
            (0x67, 117), // KEY_KPEQUAL
            (0x68, 183), // KEY_F13
            (0x73, 194), // KEY_F24
            (0xe0, 29),  // KEY_LEFTCTRL
            (0xe7, 126), // KEY_RIGHTMETA
        ];
        for (u, code) in cases {
            assert_eq!(hid_to_evdev(u), Some(code), "usage {u:#x}");
        }
        for u in [0x00, 0x01, 0x03, 0x74, 0xa5, 0xdf, 0xe8, 0xff] {
            assert_eq!(hid_to_evdev(u), None, "usage {u:#x}");
        }
        // Every code produced is one the virtio keyboard advertises, and no two
        // usages share one except the two backslash keys.
        let mut seen = std::collections::BTreeMap::new();
        for u in 0..=255u8 {
            if let Some(c) = hid_to_evdev(u) {
                assert!((ev::KEY_FIRST..=ev::KEY_LAST).contains(&c), "{u:#x}");
                if let Some(prev) = seen.insert(c, u) {
                    assert_eq!((prev, u), (0x31, 0x32));
                }
            }
        }
    }

    #[test]
    fn us_layout_types_printable_ascii_and_nothing_else() {
        assert_eq!(us_layout('a'), Some((0x04, false)));
        assert_eq!(us_layout('Q'), Some((0x14, true)));
        assert_eq!(us_layout('!'), Some((0x1e, true)));
        assert_eq!(us_layout(')'), Some((0x27, true)));
        assert_eq!(us_layout('_'), Some((0x2d, true)));
        assert_eq!(us_layout('|'), Some((0x31, true)));
        assert_eq!(us_layout('"'), Some((0x34, true)));
        assert_eq!(us_layout('/'), Some((0x38, false)));
        assert_eq!(us_layout('\n'), Some((usage::ENTER, false)));
        for c in (' '..='~').chain(['\n', '\t']) {
            let (u, _) = us_layout(c).unwrap_or_else(|| panic!("{c:?}"));
            assert!(hid_to_evdev(u).is_some());
        }
        // Each (usage, shift) types one character only.
        let mut all: std::vec::Vec<_> = (' '..='~').filter_map(us_layout).collect();
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n);
        for c in ['é', '\r', '\u{7f}', '£', '\0'] {
            assert_eq!(us_layout(c), None, "{c:?}");
        }
    }

    #[test]
    fn key_names() {
        assert_eq!(key_by_name("Ctrl"), Some(usage::LEFT_CTRL));
        assert_eq!(key_by_name("f1"), Some(usage::F1));
        assert_eq!(key_by_name("F12"), Some(usage::F12));
        assert_eq!(key_by_name("f13"), Some(usage::F13));
        assert_eq!(key_by_name("f24"), Some(usage::F24));
        assert_eq!(key_by_name("f"), Some(0x09));
        assert_eq!(key_by_name("T"), Some(0x17));
        assert_eq!(key_by_name("="), Some(0x2e));
        for bad in ["f0", "f25", "", "ctl", "+", "!", "ab", " "] {
            assert_eq!(key_by_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn chords_parse_and_print_back() {
        use authority_abi::input::modifier::{ALT, CTRL, GUI, SHIFT};
        let home = Chord::new(CTRL | ALT, usage::HOME).unwrap();
        assert_eq!(parse_chord("ctrl+alt+home"), Some(home));
        // Either side's modifier, any case, any order of the modifiers.
        assert_eq!(parse_chord("AltGr+RCtrl+Home"), Some(home));
        assert_eq!(chord_name(home), "ctrl+alt+home");
        for (spec, chord) in [
            ("f12", Chord::new(0, usage::F12)),
            ("shift+meta+f13", Chord::new(GUI | SHIFT, usage::F13)),
            ("ctrl+/", Chord::new(CTRL, 0x38)),
            ("ctrl+q", Chord::new(CTRL, 0x14)),
        ] {
            assert_eq!(parse_chord(spec), chord, "{spec}");
            assert_eq!(chord_name(chord.unwrap()), spec);
        }
        // No key, two keys, a key before a modifier, a modifier twice (also
        // across sides), unknown names, nothing.
        for bad in [
            "ctrl+alt",
            "ctrl+a+b",
            "home+ctrl",
            "ctrl+rctrl+home",
            "ctrl+ctrl+home",
            "hyper+home",
            "",
            "ctrl++home",
        ] {
            assert_eq!(parse_chord(bad), None, "{bad}");
        }
    }
}
