//! A token bucket for log lines a guest can cause: at most `burst` lines at once,
//! then one line per `period` of the caller's clock; what it holds back is
//! counted and reported with the next line let through. The clock is whatever
//! the caller passes (counter ticks in the hypervisor, plain numbers in tests).

/// The hypervisor's warning and error lines let through at once.
pub const LOG_BURST: u32 = 20;
/// The hypervisor's warning and error lines let through per second after the burst.
pub const LOG_LINES_PER_SEC: u64 = 5;

/// How the hypervisor's line after a hold-back goes on after the count
/// (`[el2 WARN ] N warning/error lines suppressed …`).
pub const LOG_SUPPRESSED: &str = "warning/error lines suppressed";

/// Whether a line may be printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Print it; `suppressed` lines were held back since the last one printed.
    Print { suppressed: u64 },
    /// Drop it (it is counted).
    Drop,
}

/// A token bucket.
#[derive(Debug, Clone)]
pub struct RateLimit {
    burst: u32,
    period: u64,
    tokens: u32,
    /// When the last token was added (`None` before the first check).
    refilled: Option<u64>,
    suppressed: u64,
}

impl RateLimit {
    /// A full bucket of `burst` tokens, one more every `period` (at least 1).
    pub const fn new(burst: u32, period: u64) -> Self {
        Self {
            burst,
            period: if period == 0 { 1 } else { period },
            tokens: burst,
            refilled: None,
            suppressed: 0,
        }
    }

    /// Decides about a line at time `now`.
    pub fn check(&mut self, now: u64) -> Verdict {
        let last = *self.refilled.get_or_insert(now);
        if now < last {
            // The clock went back: restart the period from here.
            self.refilled = Some(now);
        } else {
            let periods = (now - last) / self.period;
            if periods > 0 {
                let room = u64::from(self.burst - self.tokens);
                self.tokens += periods.min(room) as u32;
                self.refilled = Some(last + periods * self.period);
            }
        }
        if self.tokens == 0 {
            self.suppressed += 1;
            return Verdict::Drop;
        }
        self.tokens -= 1;
        Verdict::Print {
            suppressed: core::mem::take(&mut self.suppressed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn printed(r: &mut RateLimit, now: u64, n: usize) -> usize {
        (0..n)
            .filter(|_| matches!(r.check(now), Verdict::Print { .. }))
            .count()
    }

    #[test]
    fn a_burst_passes_then_one_line_per_period() {
        let mut r = RateLimit::new(3, 100);
        assert_eq!(printed(&mut r, 1_000, 10), 3);
        assert_eq!(r.check(1_099), Verdict::Drop);
        assert_eq!(r.check(1_100), Verdict::Print { suppressed: 8 });
        assert_eq!(r.check(1_150), Verdict::Drop);
        assert_eq!(r.check(1_200), Verdict::Print { suppressed: 1 });
        assert_eq!(r.check(1_200), Verdict::Drop);
    }

    #[test]
    fn a_quiet_spell_refills_up_to_the_burst_only() {
        let mut r = RateLimit::new(3, 100);
        assert_eq!(printed(&mut r, 0, 3), 3);
        assert_eq!(printed(&mut r, 1_000_000, 10), 3);
        // A partial period is not lost: 250 after the refill point is 2 tokens.
        let mut r = RateLimit::new(5, 100);
        assert_eq!(printed(&mut r, 0, 5), 5);
        assert_eq!(printed(&mut r, 150, 5), 1);
        assert_eq!(printed(&mut r, 200, 5), 1);
    }

    #[test]
    fn a_clock_going_back_neither_panics_nor_refills() {
        let mut r = RateLimit::new(1, 10);
        assert!(matches!(r.check(500), Verdict::Print { suppressed: 0 }));
        assert_eq!(r.check(100), Verdict::Drop);
        assert_eq!(r.check(105), Verdict::Drop);
        assert_eq!(r.check(110), Verdict::Print { suppressed: 2 });
        let mut z = RateLimit::new(0, 0);
        assert_eq!(z.check(u64::MAX), Verdict::Drop);
        assert_eq!(z.check(0), Verdict::Drop);
    }
}
