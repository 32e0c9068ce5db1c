//! How long a console command waits for its answer: from the line end typed on
//! the host console to the status line (`ok: …` / `error: …`) the command's
//! reader (the authority partition's shell, or the monitor) prints, on the
//! system counter — guest time under QEMU's `-icount`. The hypervisor feeds it
//! both sides and reports each answer slower than every one before.

/// The console's answer times, in counter ticks.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct AnswerClock {
    /// When the last line end was typed, while its answer is outstanding.
    typed: Option<u64>,
    /// Answers seen.
    pub answers: u64,
    /// The slowest answer, in ticks.
    pub slowest: u64,
}

impl AnswerClock {
    pub const fn new() -> Self {
        Self {
            typed: None,
            answers: 0,
            slowest: 0,
        }
    }

    /// A line end (CR or LF) was typed at `now`: the latest one starts the
    /// clock (an Enter on an empty line, which gets no status line, is
    /// overtaken by the next command's).
    pub fn typed(&mut self, now: u64) {
        self.typed = Some(now);
    }

    /// The reader printed the console line `line` at `now`. A status line
    /// answers the typed line: returns its time when it is the slowest yet.
    pub fn printed(&mut self, line: &[u8], now: u64) -> Option<u64> {
        let text = trim_start(line);
        if !(text.starts_with(b"ok: ") || text.starts_with(b"error: ")) {
            return None;
        }
        let took = now.saturating_sub(self.typed.take()?);
        self.answers += 1;
        if self.answers == 1 || took > self.slowest {
            self.slowest = took;
            return Some(took);
        }
        None
    }
}

/// `line` without leading CR, LF and the monitor's `[el2 monitor] ` prefix.
fn trim_start(line: &[u8]) -> &[u8] {
    let mut t = line;
    while let [b'\r' | b'\n', rest @ ..] = t {
        t = rest;
    }
    let prefix = crate::LINE_PREFIX.as_bytes();
    match t.strip_prefix(prefix) {
        Some(rest) => rest.strip_prefix(b" ").unwrap_or(rest),
        None => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_line_answers_the_last_typed_line_end_and_only_new_maxima_are_reported() {
        let mut c = AnswerClock::new();
        // Output before anything was typed answers nothing.
        assert_eq!(c.printed(b"ok: 1 vm\r\n", 5), None);
        c.typed(100);
        assert_eq!(c.printed(b"rayos> vm list\r\n", 110), None); // the echo
        assert_eq!(c.printed(b"\r\nok: 1 vm: linux\r\n", 150), Some(50));
        // Answered: a second status line answers nothing.
        assert_eq!(c.printed(b"ok: again\r\n", 400), None);
        // An empty Enter, then a command: timed from the command's line end.
        c.typed(1000);
        c.typed(2000);
        assert_eq!(
            c.printed(b"error: no such vm\r\n", 2030),
            None,
            "not slower"
        );
        c.typed(3000);
        assert_eq!(
            c.printed(b"[el2 monitor] ok: vm linux paused\r\n", 3100),
            Some(100)
        );
        assert_eq!((c.answers, c.slowest), (3, 100));
    }
}
