//! The console input path: every byte typed on the host console goes through
//! [`Input::feed`].
//!
//! - **Guest mode** (the start): a byte is queued for the guest (a bounded queue:
//!   when the guest does not read its UART the queue fills and further bytes are
//!   dropped and counted, as a real UART overruns — the hypervisor keeps reading
//!   the host UART, so [`ESCAPE`] is always seen). [`ESCAPE`] itself is never
//!   queued: it enters the monitor.
//! - **Monitor mode**: no byte reaches the guest. Printable ASCII goes into the
//!   line (echoed); backspace (0x08) and DEL (0x7f) erase one character; Ctrl-U
//!   (0x15) erases the line; CR or LF ends it (an LF right after a CR is the same
//!   line end); a terminal escape sequence (ESC, then `[` or `O` and parameters up
//!   to a final byte) is skipped whole, so arrow keys insert nothing; every other
//!   byte is ignored. A line longer than [`LINE_MAX`] is refused when it ends,
//!   with nothing of it executed. [`ESCAPE`] leaves the monitor, discarding an
//!   unfinished line.
//! - **Pass-through** ([`Input::pass_escape`]): when the console's reader has an
//!   escape of its own — the authority partition's shell, whose `Ctrl-]` ends an
//!   `attach` — every byte, [`ESCAPE`] included, is queued for it and the monitor
//!   is never entered.

/// `Ctrl-]`: enters and leaves the monitor.
pub const ESCAPE: u8 = 0x1d;
/// Longest monitor line accepted, in bytes.
pub const LINE_MAX: usize = 128;
/// Bytes queued for the guest while its UART has no room.
pub const GUEST_QUEUE: usize = 4096;

/// ASCII control bytes the line editor acts on.
const BACKSPACE: u8 = 0x08;
const DELETE: u8 = 0x7f;
const CTRL_U: u8 = 0x15;
const ESC: u8 = 0x1b;
const CR: u8 = b'\r';
const LF: u8 = b'\n';

/// Where typed bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Guest,
    Monitor,
}

/// A terminal escape sequence being skipped (ECMA-48: ESC, then `[` for CSI or
/// `O` for SS3, parameter and intermediate bytes, one final byte 0x40..=0x7e).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sequence {
    None,
    /// ESC seen.
    Esc,
    /// ESC `[` or ESC `O` seen: skipping to the final byte.
    Body,
}

/// A finished monitor line: printable ASCII only, at most [`LINE_MAX`] bytes.
#[derive(Clone, Copy)]
pub struct LineText {
    buf: [u8; LINE_MAX],
    len: usize,
}

impl LineText {
    pub fn as_str(&self) -> &str {
        // Only printable ASCII is ever stored (see `Input::feed`).
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl core::fmt::Debug for LineText {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl PartialEq for LineText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

/// What one byte did; the caller shows it on the terminal.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Step {
    /// Queued for the guest.
    Guest,
    /// For the guest, but its queue is full: dropped (counted, see
    /// [`Input::take_dropped`]).
    GuestDropped,
    /// The operator entered the monitor: show that, and a prompt.
    Entered,
    /// The operator left the monitor (an unfinished line was discarded).
    Left,
    /// Show this printable byte.
    Echo(u8),
    /// Erase the last character shown.
    Erase,
    /// Erase this many characters shown (Ctrl-U).
    Kill(usize),
    /// A line to execute.
    Line(LineText),
    /// An empty line: show a new prompt.
    Empty,
    /// The line ended longer than [`LINE_MAX`]: refused, nothing executed.
    Overlong,
    /// Nothing to show (an ignored byte, an escape sequence, input past the limit).
    Ignored,
}

/// The console input state: the escape state machine, the monitor's line and
/// the guest's queue.
pub struct Input {
    mode: Mode,
    line: [u8; LINE_MAX],
    len: usize,
    /// Printable bytes arrived past [`LINE_MAX`]: the line is refused when it ends.
    overlong: bool,
    /// The previous byte was a CR (an LF right after it ends nothing).
    after_cr: bool,
    seq: Sequence,
    queue: [u8; GUEST_QUEUE],
    head: usize,
    queued: usize,
    dropped: u64,
    /// [`ESCAPE`] goes to the reader too: the monitor cannot be entered.
    pass_escape: bool,
}

impl Default for Input {
    fn default() -> Self {
        Self::new()
    }
}

impl Input {
    pub const fn new() -> Self {
        Self {
            mode: Mode::Guest,
            line: [0; LINE_MAX],
            len: 0,
            overlong: false,
            after_cr: false,
            seq: Sequence::None,
            queue: [0; GUEST_QUEUE],
            head: 0,
            queued: 0,
            dropped: 0,
            pass_escape: false,
        }
    }

    /// From now on every byte, [`ESCAPE`] included, goes to the reader (the
    /// monitor, if the operator is in it, is left with its line discarded).
    pub fn pass_escape(&mut self) {
        self.pass_escape = true;
        self.mode = Mode::Guest;
        self.clear_line();
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Takes one byte typed on the host console.
    pub fn feed(&mut self, b: u8) -> Step {
        match self.mode {
            Mode::Guest if b == ESCAPE && !self.pass_escape => {
                self.mode = Mode::Monitor;
                self.clear_line();
                Step::Entered
            }
            Mode::Guest => self.queue_for_guest(b),
            Mode::Monitor => self.edit(b),
        }
    }

    fn clear_line(&mut self) {
        self.len = 0;
        self.overlong = false;
        self.after_cr = false;
        self.seq = Sequence::None;
    }

    fn edit(&mut self, b: u8) -> Step {
        let after_cr = core::mem::replace(&mut self.after_cr, false);
        if b == ESCAPE {
            self.mode = Mode::Guest;
            self.clear_line();
            return Step::Left;
        }
        match self.seq {
            Sequence::Esc => {
                self.seq = if b == b'[' || b == b'O' {
                    Sequence::Body
                } else {
                    Sequence::None
                };
                return Step::Ignored;
            }
            Sequence::Body => {
                if (0x40..=0x7e).contains(&b) {
                    self.seq = Sequence::None;
                } else if !(0x20..=0x3f).contains(&b) {
                    // Not a parameter or intermediate byte: the sequence is broken.
                    self.seq = Sequence::None;
                }
                return Step::Ignored;
            }
            Sequence::None => {}
        }
        match b {
            CR | LF => {
                if b == LF && after_cr {
                    return Step::Ignored;
                }
                self.after_cr = b == CR;
                let step = if self.overlong {
                    Step::Overlong
                } else if self.len == 0 {
                    Step::Empty
                } else {
                    let mut text = LineText {
                        buf: [0; LINE_MAX],
                        len: self.len,
                    };
                    text.buf[..self.len].copy_from_slice(&self.line[..self.len]);
                    Step::Line(text)
                };
                self.len = 0;
                self.overlong = false;
                step
            }
            BACKSPACE | DELETE => {
                if self.overlong || self.len == 0 {
                    return Step::Ignored;
                }
                self.len -= 1;
                Step::Erase
            }
            CTRL_U => {
                let shown = if self.overlong { LINE_MAX } else { self.len };
                self.len = 0;
                self.overlong = false;
                if shown == 0 {
                    Step::Ignored
                } else {
                    Step::Kill(shown)
                }
            }
            ESC => {
                self.seq = Sequence::Esc;
                Step::Ignored
            }
            0x20..=0x7e => {
                if self.len == LINE_MAX || self.overlong {
                    self.overlong = true;
                    return Step::Ignored;
                }
                self.line[self.len] = b;
                self.len += 1;
                Step::Echo(b)
            }
            _ => Step::Ignored,
        }
    }

    fn queue_for_guest(&mut self, b: u8) -> Step {
        if self.queued == GUEST_QUEUE {
            self.dropped += 1;
            return Step::GuestDropped;
        }
        self.queue[(self.head + self.queued) % GUEST_QUEUE] = b;
        self.queued += 1;
        Step::Guest
    }

    /// Bytes waiting for the guest.
    pub fn guest_pending(&self) -> usize {
        self.queued
    }

    /// Moves up to `out.len()` waiting bytes into `out`, oldest first; returns how
    /// many.
    pub fn take_guest(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.queued);
        for slot in out.iter_mut().take(n) {
            *slot = self.queue[self.head];
            self.head = (self.head + 1) % GUEST_QUEUE;
        }
        self.queued -= n;
        n
    }

    /// Bytes dropped for a full guest queue since the last call.
    pub fn take_dropped(&mut self) -> u64 {
        core::mem::take(&mut self.dropped)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn feed_all(i: &mut Input, bytes: &[u8]) -> Vec<Step> {
        bytes.iter().map(|b| i.feed(*b)).collect()
    }

    fn drain(i: &mut Input) -> Vec<u8> {
        let mut out = std::vec![0; GUEST_QUEUE];
        let n = i.take_guest(&mut out);
        out.truncate(n);
        out
    }

    fn lines(steps: &[Step]) -> Vec<std::string::String> {
        steps
            .iter()
            .filter_map(|s| match s {
                Step::Line(l) => Some(l.as_str().into()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn guest_bytes_pass_until_the_escape_and_none_while_in_the_monitor() {
        let mut i = Input::new();
        assert!(feed_all(&mut i, b"ls\r").iter().all(|s| *s == Step::Guest));
        assert_eq!(i.feed(ESCAPE), Step::Entered);
        assert_eq!(i.mode(), Mode::Monitor);
        let steps = feed_all(&mut i, b"vm list\r\x01\x03\x04\x1a\x00\xff\x80");
        assert_eq!(lines(&steps), ["vm list"]);
        assert_eq!(i.feed(ESCAPE), Step::Left);
        assert_eq!(i.mode(), Mode::Guest);
        feed_all(&mut i, b"pwd\r");
        // Only what was typed in guest mode, without the escapes.
        assert_eq!(drain(&mut i), b"ls\rpwd\r");
        assert_eq!(i.guest_pending(), 0);
    }

    #[test]
    fn pass_through_gives_the_escape_to_the_reader_and_leaves_the_monitor() {
        let mut i = Input::new();
        i.feed(ESCAPE);
        feed_all(&mut i, b"vm li");
        i.pass_escape();
        assert_eq!(i.mode(), Mode::Guest);
        let steps = feed_all(&mut i, b"a\x1db\r\x1d");
        assert!(steps.iter().all(|s| *s == Step::Guest), "{steps:?}");
        assert_eq!(i.mode(), Mode::Guest);
        // The unfinished monitor line is gone; the escapes reached the reader.
        assert_eq!(drain(&mut i), b"a\x1db\r\x1d");
    }

    #[test]
    fn qemu_ctrl_a_bytes_are_ordinary_guest_bytes() {
        let mut i = Input::new();
        assert_eq!(i.feed(0x01), Step::Guest);
        assert_eq!(i.feed(b'x'), Step::Guest);
        assert_eq!(drain(&mut i), [0x01, b'x']);
    }

    #[test]
    fn line_editing() {
        let mut i = Input::new();
        i.feed(ESCAPE);
        // Backspace and DEL erase; Ctrl-U erases the line; erasing nothing shows nothing.
        let steps = feed_all(&mut i, b"\x08vm lisx\x7ft\r");
        assert_eq!(steps[0], Step::Ignored);
        assert!(steps.contains(&Step::Erase));
        assert_eq!(lines(&steps), ["vm list"]);
        let steps = feed_all(&mut i, b"garbage\x15help\n");
        assert!(steps.contains(&Step::Kill(7)));
        assert_eq!(lines(&steps), ["help"]);
        assert_eq!(i.feed(CTRL_U), Step::Ignored);
    }

    #[test]
    fn crlf_ends_one_line_and_blank_lines_execute_nothing() {
        let mut i = Input::new();
        i.feed(ESCAPE);
        let steps = feed_all(&mut i, b"help\r\nvm list\n\r\n\n");
        assert_eq!(lines(&steps), ["help", "vm list"]);
        assert_eq!(
            steps.iter().filter(|s| **s == Step::Empty).count(),
            2,
            "`\\r\\n` after a line is one end; the lone `\\n` after it is a blank line"
        );
    }

    #[test]
    fn arrow_keys_and_other_escape_sequences_insert_nothing() {
        let mut i = Input::new();
        i.feed(ESCAPE);
        let steps = feed_all(&mut i, b"vm\x1b[A\x1b[1;5C\x1bOB list\x1b[\x07x\r");
        // The broken sequence (`ESC [` then BEL) ends at the BEL; `x` is typed.
        assert_eq!(lines(&steps), ["vm listx"]);
    }

    #[test]
    fn control_bytes_and_non_ascii_are_ignored_in_the_monitor() {
        let mut i = Input::new();
        i.feed(ESCAPE);
        let mut hostile: Vec<u8> = (0u8..=255)
            .filter(|b| !matches!(*b, CR | LF | ESCAPE | ESC | BACKSPACE | DELETE | CTRL_U))
            .filter(|b| !(0x20..=0x7e).contains(b))
            .collect();
        hostile.extend_from_slice(b"ok\r");
        let steps = feed_all(&mut i, &hostile);
        assert_eq!(lines(&steps), ["ok"]);
        assert_eq!(i.guest_pending(), 0, "nothing reached the guest");
    }

    #[test]
    fn a_10000_byte_line_is_refused_whole_and_the_next_line_works() {
        let mut i = Input::new();
        i.feed(ESCAPE);
        let long = std::vec![b'a'; 10_000];
        let steps = feed_all(&mut i, &long);
        assert_eq!(
            steps.iter().filter(|s| matches!(s, Step::Echo(_))).count(),
            LINE_MAX,
            "echo stops at the limit"
        );
        // Backspace cannot make an overlong line acceptable.
        assert_eq!(i.feed(DELETE), Step::Ignored);
        assert_eq!(i.feed(CR), Step::Overlong);
        let steps = feed_all(&mut i, b"vm list\r");
        assert_eq!(lines(&steps), ["vm list"]);
        // A line of exactly LINE_MAX is accepted; Ctrl-U clears an overlong one.
        let exact = std::vec![b'b'; LINE_MAX];
        let steps = feed_all(&mut i, &exact);
        assert!(!steps.contains(&Step::Ignored));
        assert!(matches!(i.feed(CR), Step::Line(l) if l.as_str().len() == LINE_MAX));
        feed_all(&mut i, &long);
        assert_eq!(i.feed(CTRL_U), Step::Kill(LINE_MAX));
        assert_eq!(lines(&feed_all(&mut i, b"help\r")), ["help"]);
    }

    #[test]
    fn leaving_discards_the_unfinished_line() {
        let mut i = Input::new();
        i.feed(ESCAPE);
        feed_all(&mut i, b"host shut");
        assert_eq!(i.feed(ESCAPE), Step::Left);
        assert_eq!(i.feed(ESCAPE), Step::Entered);
        assert_eq!(lines(&feed_all(&mut i, b"down\r")), ["down"]);
        // A half-typed escape sequence does not survive leaving either.
        feed_all(&mut i, b"\x1b[");
        i.feed(ESCAPE);
        i.feed(ESCAPE);
        assert_eq!(lines(&feed_all(&mut i, b"A\r")), ["A"]);
    }

    #[test]
    fn a_full_guest_queue_drops_and_counts_but_the_escape_still_works() {
        let mut i = Input::new();
        for _ in 0..GUEST_QUEUE {
            assert_eq!(i.feed(b'q'), Step::Guest);
        }
        assert_eq!(i.feed(b'r'), Step::GuestDropped);
        assert_eq!(i.feed(b's'), Step::GuestDropped);
        assert_eq!(i.take_dropped(), 2);
        assert_eq!(i.take_dropped(), 0);
        assert_eq!(i.feed(ESCAPE), Step::Entered);
        let mut two = [0u8; 2];
        assert_eq!(i.take_guest(&mut two), 2);
        assert_eq!(i.guest_pending(), GUEST_QUEUE - 2);
        // The queue wraps around and keeps its order.
        i.feed(ESCAPE);
        i.feed(b'1');
        i.feed(b'2');
        let all = drain(&mut i);
        assert_eq!(all.len(), GUEST_QUEUE);
        assert_eq!(&all[all.len() - 2..], b"12");
        assert!(all[..all.len() - 2].iter().all(|b| *b == b'q'));
    }
}
