//! The host console's line discipline: guest console output and hypervisor log
//! lines share one terminal, and must neither split each other nor be mistaken
//! for each other.
//!
//! - Each guest output source (a PL011, a virtio console) collects its bytes in a
//!   [`LineBuf`] and hands the [`Terminal`] whole lines: on a newline, when the
//!   buffer is full, or when the hypervisor flushes it (the guest went idle, the
//!   VM stops). The terminal is then written, and its lock taken, once per line.
//! - [`Terminal`] knows whether a guest line is left open on the terminal (a
//!   partial flush). A hypervisor line first ends it with a newline, so a
//!   hypervisor line never lands in the middle of a guest line; the guest's rest
//!   continues on a line of its own. Another source's output does the same.
//! - Hypervisor lines start with [`MARKER`] (`[el2`). A guest line that starts
//!   with it is shown with [`ESCAPE`] (`|`) in front, so on the terminal a line
//!   starting with `[el2` is always the hypervisor's. A guest line starts after a
//!   newline or carriage return; a partial line flushed while it is still a
//!   prefix of the marker (`[`, `[e`, `[el`) is escaped too, since what follows
//!   could complete it (a buffer that holds only such a prefix is not flushed
//!   early: [`LineBuf::partial_ready`]).

/// How every hypervisor log line starts.
pub const MARKER: &[u8] = b"[el2";
/// Put in front of a guest line that would otherwise start with [`MARKER`].
pub const ESCAPE: u8 = b'|';
/// Bytes a source buffers before its line goes out unfinished.
pub const LINE_MAX: usize = 256;
/// What ends a line on the terminal.
pub const NEWLINE: &[u8] = b"\r\n";

/// One source's line being assembled.
pub struct LineBuf {
    buf: [u8; LINE_MAX],
    len: usize,
}

impl Default for LineBuf {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuf {
    pub const fn new() -> Self {
        Self {
            buf: [0; LINE_MAX],
            len: 0,
        }
    }

    /// Appends `b`; `true` when the buffer must go out now (`b` ended the line,
    /// or the buffer is full).
    pub fn push(&mut self, b: u8) -> bool {
        if self.len < LINE_MAX {
            self.buf[self.len] = b;
            self.len += 1;
        }
        b == b'\n' || self.len == LINE_MAX
    }

    /// The bytes held.
    pub fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether the unfinished line may go out now: it holds something, and is
    /// not a strict prefix of [`MARKER`] (`[`, `[e`, `[el`), which waits for the
    /// next byte so a line like `[    0.1] …` is not escaped for being cut early.
    pub fn partial_ready(&self) -> bool {
        let b = self.bytes();
        let marker_prefix = b.len() < MARKER.len() && MARKER.starts_with(b);
        !b.is_empty() && !marker_prefix
    }

    pub fn clear(&mut self) {
        self.len = 0;
    }
}

/// Identifies a guest output source to the [`Terminal`].
pub type SourceId = u8;

/// The shared terminal's state.
pub struct Terminal {
    /// The guest source whose line is unfinished on the terminal, if any.
    open: Option<SourceId>,
    /// Whether the next guest byte of `open` starts a line (after a `\r`).
    open_at_line_start: bool,
}

impl Default for Terminal {
    fn default() -> Self {
        Self::new()
    }
}

impl Terminal {
    pub const fn new() -> Self {
        Self {
            open: None,
            open_at_line_start: false,
        }
    }

    /// Whether a guest line is unfinished on the terminal.
    pub fn guest_line_open(&self) -> bool {
        self.open.is_some()
    }

    /// Writes `bytes` from guest source `src` through `out`, escaping every line
    /// start that reads (or could become) [`MARKER`]. A line another source left
    /// open is ended first.
    pub fn guest(&mut self, src: SourceId, bytes: &[u8], out: &mut impl FnMut(&[u8])) {
        self.guest_labelled(src, b"", bytes, out);
    }

    /// [`Terminal::guest`] with `label` written at the start of every line that
    /// has anything on it (a VM's name, when several share the terminal). A
    /// labelled line cannot start with [`MARKER`] unless the label does, so it
    /// is not escaped: the caller gives a label that cannot (see its use).
    pub fn guest_labelled(
        &mut self,
        src: SourceId,
        label: &[u8],
        bytes: &[u8],
        out: &mut impl FnMut(&[u8]),
    ) {
        if bytes.is_empty() {
            return;
        }
        let mut at_start = match self.open {
            Some(s) if s == src => self.open_at_line_start,
            Some(_) => {
                out(NEWLINE);
                true
            }
            None => true,
        };
        let mut from = 0;
        for i in 0..bytes.len() {
            let newline = matches!(bytes[i], b'\n' | b'\r');
            if at_start && !newline {
                if !label.is_empty() {
                    out(&bytes[from..i]);
                    out(label);
                    from = i;
                } else if starts_like_marker(&bytes[i..]) {
                    out(&bytes[from..i]);
                    out(&[ESCAPE]);
                    from = i;
                }
            }
            at_start = newline;
        }
        out(&bytes[from..]);
        self.open = (bytes.last() != Some(&b'\n')).then_some(src);
        self.open_at_line_start = at_start;
    }

    /// Call before writing a hypervisor line: ends an unfinished guest line. The
    /// caller then writes its line (starting with [`MARKER`]) and [`NEWLINE`].
    pub fn hypervisor_line(&mut self, out: &mut impl FnMut(&[u8])) {
        if self.open.take().is_some() {
            out(NEWLINE);
        }
        self.open_at_line_start = false;
    }
}

/// Whether `rest` (bytes from a line start on) begins with [`MARKER`], or is a
/// shorter prefix of it that later bytes could complete.
fn starts_like_marker(rest: &[u8]) -> bool {
    let n = rest.len().min(MARKER.len());
    rest[..n] == MARKER[..n]
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn run(t: &mut Terminal, src: SourceId, bytes: &[u8], screen: &mut Vec<u8>) {
        t.guest(src, bytes, &mut |b| screen.extend_from_slice(b));
    }

    fn hyp(t: &mut Terminal, text: &str, screen: &mut Vec<u8>) {
        t.hypervisor_line(&mut |b| screen.extend_from_slice(b));
        screen.extend_from_slice(text.as_bytes());
        screen.extend_from_slice(NEWLINE);
    }

    fn lines(screen: &[u8]) -> Vec<&str> {
        core::str::from_utf8(screen)
            .unwrap()
            .split('\n')
            .map(|l| l.trim_end_matches('\r'))
            .collect()
    }

    #[test]
    fn a_line_buffer_goes_out_at_newline_or_when_full() {
        let mut l = LineBuf::new();
        assert!(!l.push(b'a') && !l.push(b'\r'));
        assert!(l.push(b'\n'));
        assert_eq!(l.bytes(), b"a\r\n");
        l.clear();
        assert!(l.is_empty());
        for i in 0..LINE_MAX - 1 {
            assert!(!l.push(b'x'), "{i}");
        }
        assert!(l.push(b'x'));
        assert_eq!(l.bytes().len(), LINE_MAX);
        // An unfinished line that could still become the marker waits.
        let mut l = LineBuf::new();
        assert!(!l.partial_ready());
        for (b, ready) in [(b'[', false), (b'e', false), (b'l', false), (b'2', true)] {
            l.push(b);
            assert_eq!(l.partial_ready(), ready, "{:?}", l.bytes());
        }
        let mut l = LineBuf::new();
        l.push(b'[');
        l.push(b' ');
        assert!(l.partial_ready());
    }

    #[test]
    fn a_hypervisor_line_never_lands_inside_a_guest_line() {
        let mut t = Terminal::new();
        let mut screen = Vec::new();
        run(&mut t, 0, b"login: ", &mut screen);
        assert!(t.guest_line_open());
        hyp(&mut t, "[el2 WARN ] refused", &mut screen);
        run(&mut t, 0, b"root\r\n", &mut screen);
        hyp(&mut t, "[el2 INFO ] next", &mut screen);
        assert_eq!(
            lines(&screen),
            [
                "login: ",
                "[el2 WARN ] refused",
                "root",
                "[el2 INFO ] next",
                ""
            ]
        );
        // A complete guest line needs no extra newline.
        let mut t = Terminal::new();
        let mut screen = Vec::new();
        run(&mut t, 0, b"done\r\n", &mut screen);
        hyp(&mut t, "[el2 INFO ] x", &mut screen);
        assert_eq!(screen, b"done\r\n[el2 INFO ] x\r\n");
    }

    #[test]
    fn two_sources_do_not_share_a_line() {
        let mut t = Terminal::new();
        let mut screen = Vec::new();
        run(&mut t, 0, b"uart", &mut screen);
        run(&mut t, 1, b"virtio\r\n", &mut screen);
        run(&mut t, 0, b" more", &mut screen);
        run(&mut t, 0, b" still\r\n", &mut screen);
        assert_eq!(lines(&screen), ["uart", "virtio", " more still", ""]);
    }

    #[test]
    fn a_forged_hypervisor_line_is_escaped() {
        let mut t = Terminal::new();
        let mut screen = Vec::new();
        run(
            &mut t,
            0,
            b"[el2 INFO ] fake\r\nok [el2 x\r\n\r[el2 WARN ] over\r\n",
            &mut screen,
        );
        assert_eq!(
            lines(&screen),
            ["|[el2 INFO ] fake", "ok [el2 x", "\r|[el2 WARN ] over", ""]
        );
        // Split across flushes: a partial line that could still become the marker
        // is escaped before it goes out.
        let mut t = Terminal::new();
        let mut screen = Vec::new();
        run(&mut t, 0, b"[e", &mut screen);
        run(&mut t, 0, b"l2 INFO ] fake\r\n", &mut screen);
        assert_eq!(lines(&screen), ["|[el2 INFO ] fake", ""]);
        // The rest of a guest line after a hypervisor line starts a line too.
        let mut t = Terminal::new();
        let mut screen = Vec::new();
        run(&mut t, 0, b"x", &mut screen);
        hyp(&mut t, "[el2 INFO ] real", &mut screen);
        run(&mut t, 0, b"[el2 INFO ] fake\r\n", &mut screen);
        assert_eq!(
            lines(&screen),
            ["x", "[el2 INFO ] real", "|[el2 INFO ] fake", ""]
        );
        // Every line starting with the marker is the hypervisor's.
        assert!(lines(&screen)
            .iter()
            .filter(|l| l.starts_with("[el2"))
            .all(|l| *l == "[el2 INFO ] real"));
        // Lines that only look alike pass untouched.
        let mut t = Terminal::new();
        let mut screen = Vec::new();
        run(
            &mut t,
            0,
            b"[    0.000000] Booting\r\n[el3\r\n",
            &mut screen,
        );
        assert_eq!(lines(&screen), ["[    0.000000] Booting", "[el3", ""]);
    }

    #[test]
    fn labelled_lines_say_whose_they_are_also_across_partial_flushes() {
        let mut t = Terminal::new();
        let mut screen = Vec::new();
        let put = |t: &mut Terminal, src, label: &[u8], b: &[u8], screen: &mut Vec<u8>| {
            t.guest_labelled(src, label, b, &mut |x| screen.extend_from_slice(x))
        };
        put(&mut t, 0, b"(a) ", b"one\r\ntw", &mut screen);
        put(&mut t, 0, b"(a) ", b"o\r\n\r\n", &mut screen);
        put(&mut t, 2, b"(b) ", b"[el2 fake\r\nx", &mut screen);
        hyp(&mut t, "[el2 INFO ] real", &mut screen);
        put(&mut t, 2, b"(b) ", b"y\n", &mut screen);
        assert_eq!(
            lines(&screen),
            [
                "(a) one",
                "(a) two",
                "",
                "(b) [el2 fake",
                "(b) x",
                "[el2 INFO ] real",
                "(b) y",
                ""
            ]
        );
    }
}
