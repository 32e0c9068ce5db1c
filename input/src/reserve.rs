//! The physical keyboard's reserved chord (authority ABI 1.3, RESERVE_KEY): RayOS
//! claims the chord's key before any VM sees it, whichever VM has the keyboard.
//!
//! [`Reserve`] follows the physical keyboard's modifiers through every key event
//! (modifier keys themselves are never claimed, so a guest with the keyboard
//! sees them and is released from them when it loses the keyboard). A press of
//! the chord's key while its modifiers are held is [`Claim::Pressed`]: RayOS's.
//! That key's release is [`Claim::Swallowed`] even if the chord changed
//! meanwhile, so no VM ever sees half of it; a release of a key pressed before
//! the chord was reserved still passes, so no VM is left holding it.

use authority_abi::input::{modifier_bit, Chord, InputEvent};

/// What becomes of one physical input event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Not the chord: routed as usual.
    Pass,
    /// The chord was pressed: it goes to RayOS.
    Pressed(Chord),
    /// The release of a claimed press: it goes nowhere.
    Swallowed,
}

/// The reserved chord and the physical keyboard's state it needs.
#[derive(Debug, Default, Clone)]
pub struct Reserve {
    chord: Option<Chord>,
    /// Modifier keys held (a HID modifier byte).
    modifiers: u8,
    /// The usages whose press was claimed and whose release has not come (one
    /// bit per usage: a chord may change while its key is held, and the next
    /// one be pressed before it is released).
    claimed: [u64; 4],
}

impl Reserve {
    /// No chord reserved, no key held.
    pub const fn new() -> Self {
        Reserve {
            chord: None,
            modifiers: 0,
            claimed: [0; 4],
        }
    }

    /// Reserves `chord` (`None`: none) from now on.
    pub fn set(&mut self, chord: Option<Chord>) {
        self.chord = chord;
    }

    pub fn chord(&self) -> Option<Chord> {
        self.chord
    }

    /// Looks at one physical event (in the order the keyboard made them).
    pub fn claim(&mut self, e: &InputEvent) -> Claim {
        let InputEvent::Key { usage, pressed } = *e else {
            return Claim::Pass;
        };
        if let Some(bit) = modifier_bit(usage) {
            if pressed {
                self.modifiers |= bit;
            } else {
                self.modifiers &= !bit;
            }
            return Claim::Pass;
        }
        let (word, bit) = (usize::from(usage / 64), 1u64 << (usage % 64));
        if !pressed {
            if self.claimed[word] & bit != 0 {
                self.claimed[word] &= !bit;
                return Claim::Swallowed;
            }
            return Claim::Pass;
        }
        match self.chord {
            Some(c) if c.usage() == usage && c.held(self.modifiers) => {
                self.claimed[word] |= bit;
                Claim::Pressed(c)
            }
            _ => Claim::Pass,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use authority_abi::input::modifier::{ALT, CTRL};

    const HOME: u8 = 0x4a;
    const LCTRL: u8 = 0xe0;
    const RALT: u8 = 0xe6;

    fn key(usage: u8, pressed: bool) -> InputEvent {
        InputEvent::Key { usage, pressed }
    }

    fn run(r: &mut Reserve, events: &[InputEvent]) -> alloc::vec::Vec<Claim> {
        events.iter().map(|e| r.claim(e)).collect()
    }

    #[test]
    fn the_chord_is_claimed_and_its_release_swallowed_while_the_modifiers_pass() {
        let chord = Chord::new(CTRL | ALT, HOME).unwrap();
        let mut r = Reserve::default();
        r.set(Some(chord));
        let got = run(
            &mut r,
            &[
                key(LCTRL, true),
                key(RALT, true),
                key(HOME, true),
                key(HOME, false),
                key(RALT, false),
                key(LCTRL, false),
            ],
        );
        use Claim::*;
        assert_eq!(
            got,
            [Pass, Pass, Pressed(chord), Swallowed, Pass, Pass].to_vec()
        );
        // The key alone, or with one modifier, is the guest's.
        let got = run(
            &mut r,
            &[
                key(HOME, true),
                key(HOME, false),
                key(LCTRL, true),
                key(HOME, true),
                key(HOME, false),
            ],
        );
        assert!(got.iter().all(|c| *c == Pass), "{got:?}");
        // Pointer events never are RayOS's by this.
        let p = InputEvent::Gaze { x: 1, y: 2 };
        assert_eq!(r.claim(&p), Pass);
    }

    #[test]
    fn a_release_follows_its_press_across_a_change_of_chord() {
        let chord = Chord::new(CTRL, HOME).unwrap();
        let mut r = Reserve::default();
        // Pressed before the reservation: its release still goes to the guest.
        assert_eq!(r.claim(&key(LCTRL, true)), Claim::Pass);
        assert_eq!(r.claim(&key(HOME, true)), Claim::Pass);
        r.set(Some(chord));
        assert_eq!(r.claim(&key(HOME, false)), Claim::Pass);
        // Claimed, then the reservation goes: the release is still swallowed.
        assert_eq!(r.claim(&key(HOME, true)), Claim::Pressed(chord));
        r.set(None);
        assert_eq!(r.chord(), None);
        assert_eq!(r.claim(&key(HOME, false)), Claim::Swallowed);
        assert_eq!(r.claim(&key(HOME, true)), Claim::Pass);
    }

    #[test]
    fn two_chords_held_across_a_change_are_both_swallowed() {
        const END: u8 = 0x4d;
        let home = Chord::new(CTRL, HOME).unwrap();
        let end = Chord::new(CTRL, END).unwrap();
        let mut r = Reserve::default();
        r.set(Some(home));
        assert_eq!(r.claim(&key(LCTRL, true)), Claim::Pass);
        assert_eq!(r.claim(&key(HOME, true)), Claim::Pressed(home));
        r.set(Some(end));
        assert_eq!(r.claim(&key(END, true)), Claim::Pressed(end));
        assert_eq!(r.claim(&key(HOME, false)), Claim::Swallowed);
        assert_eq!(r.claim(&key(END, false)), Claim::Swallowed);
        // Usages past the modifiers are keys like any other, never modifiers.
        assert_eq!(r.claim(&key(0xff, true)), Claim::Pass);
        assert_eq!(r.claim(&key(0xff, false)), Claim::Pass);
        assert_eq!(r.claim(&key(END, true)), Claim::Pressed(end));
    }
}
