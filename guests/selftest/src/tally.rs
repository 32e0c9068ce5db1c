//! Counting check results: a check passes only if it recorded no problem *and*
//! took no unexpected exception while it ran; the summary also counts
//! unexpected exceptions taken outside any check as failures.

use crate::detail::Detail;

/// Records in `problems` that a check took `unexpected` exceptions it did not expect.
pub fn note_unexpected(problems: &mut Detail, unexpected: u32) {
    if unexpected != 0 {
        problems.append(format_args!("{unexpected} unexpected exception(s)"));
    }
}

/// Running totals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Checks that passed.
    pub passed: u32,
    /// Checks that failed.
    pub failed: u32,
    /// Unexpected exceptions seen while a check ran (their checks failed).
    pub attributed_exceptions: u32,
}

impl Tally {
    /// Records one check, which passed if `problems` is empty; `unexpected` is
    /// the number of unexpected exceptions it saw (already noted in `problems`).
    pub fn record(&mut self, problems: &Detail, unexpected: u32) {
        self.attributed_exceptions = self.attributed_exceptions.saturating_add(unexpected);
        if problems.is_empty() {
            self.passed += 1;
        } else {
            self.failed += 1;
        }
    }

    /// Failures for the summary: failed checks plus unexpected exceptions taken
    /// outside any check (`total_unexpected` is the handler's running count).
    pub fn failed_total(&self, total_unexpected: u32) -> u32 {
        self.failed
            .saturating_add(total_unexpected.saturating_sub(self.attributed_exceptions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unexpected_exceptions_fail_a_check() {
        let mut clean = Detail::new();
        note_unexpected(&mut clean, 0);
        assert!(clean.is_empty());
        note_unexpected(&mut clean, 2);
        assert_eq!(clean.to_string(), "2 unexpected exception(s)");
        let mut d = crate::detail!("x0 = 0x0");
        note_unexpected(&mut d, 1);
        assert_eq!(d.to_string(), "x0 = 0x0; 1 unexpected exception(s)");
    }

    #[test]
    fn summary_counts_stray_exceptions() {
        let mut t = Tally::default();
        t.record(&Detail::new(), 0);
        t.record(&crate::detail!("no"), 3);
        t.record(&Detail::new(), 0);
        assert_eq!((t.passed, t.failed), (2, 1));
        assert_eq!(t.failed_total(3), 1);
        assert_eq!(t.failed_total(5), 3);
    }
}
