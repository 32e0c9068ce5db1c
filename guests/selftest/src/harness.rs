//! Running one check: prints its `PASS`/`FAIL` line and keeps the tally, failing
//! a check that took exceptions it did not expect.

use crate::detail::Detail;
use crate::tally::{note_unexpected, Tally};
use crate::{outln, vectors};

/// The checks run so far.
#[derive(Default)]
pub struct Harness {
    tally: Tally,
}

impl Harness {
    /// Runs check `name`, which records what is wrong in the [`Detail`] it is
    /// given, and prints its verdict line.
    pub fn check(&mut self, name: &str, f: impl FnOnce(&mut Detail)) {
        let mut problems = Detail::new();
        let before = vectors::unexpected_count();
        f(&mut problems);
        let unexpected = vectors::unexpected_count().wrapping_sub(before);
        note_unexpected(&mut problems, unexpected);
        if problems.is_empty() {
            outln!("PASS {name}");
        } else {
            outln!("FAIL {name}: {problems}");
        }
        self.tally.record(&problems, unexpected);
    }

    /// `(passed, failed)` for the summary, counting unexpected exceptions taken
    /// outside any check as failures.
    pub fn totals(&self, total_unexpected: u32) -> (u32, u32) {
        (self.tally.passed, self.tally.failed_total(total_unexpected))
    }
}
