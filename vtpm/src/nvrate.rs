//! NV write rate limiting (TPM 2.0 Part 1, "NV Memory": a TPM may refuse a command
//! that would write NV with TPM_RC_NV_RATE when NV has been written too often, and
//! Part 2's TPM_PT_NV_WRITE_RECOVERY says how long until it accepts one again).
//!
//! The NV image of a persistent TPM lives on the system disk, where every write is
//! two copies and a flush; a guest looping NV_Increment must not be able to wear the
//! disk or starve the other VMs' I/O. [`NvRateLimiter`] is a token bucket over the
//! TPM's own millisecond time source: [`NV_WRITE_BURST`] writes at once, then one
//! more every [`NV_WRITE_INTERVAL_MS`].

/// NV-writing commands the TPM accepts back to back from a full bucket.
pub const NV_WRITE_BURST: u32 = 64;
/// Milliseconds of TPM time that earn one more NV write (sustained rate: 10/s).
pub const NV_WRITE_INTERVAL_MS: u64 = 100;

/// A token bucket of NV writes, driven by an explicit millisecond clock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NvRateLimiter {
    burst: u32,
    interval_ms: u64,
    tokens: u32,
    /// Time (ms) up to which refills have been credited.
    credited_to: u64,
}

impl NvRateLimiter {
    /// A full bucket of `burst` writes refilled by one every `interval_ms` (at least
    /// 1), starting at time `now_ms`.
    pub fn new(burst: u32, interval_ms: u64, now_ms: u64) -> Self {
        Self {
            burst,
            interval_ms: interval_ms.max(1),
            tokens: burst,
            credited_to: now_ms,
        }
    }

    /// The TPM's limiter: [`NV_WRITE_BURST`] / [`NV_WRITE_INTERVAL_MS`].
    pub fn standard(now_ms: u64) -> Self {
        Self::new(NV_WRITE_BURST, NV_WRITE_INTERVAL_MS, now_ms)
    }

    /// Credits the writes earned since the last call. Time that goes backwards (a
    /// new time source after a reset) earns nothing and restarts the count there.
    fn refill(&mut self, now_ms: u64) {
        if now_ms < self.credited_to {
            self.credited_to = now_ms;
            return;
        }
        if self.tokens >= self.burst {
            self.credited_to = now_ms;
            return;
        }
        let earned = (now_ms - self.credited_to) / self.interval_ms;
        let room = u64::from(self.burst - self.tokens);
        if earned >= room {
            self.tokens = self.burst;
            self.credited_to = now_ms;
        } else {
            self.tokens += earned as u32;
            self.credited_to += earned * self.interval_ms;
        }
    }

    /// Whether a write may happen now (nothing is taken).
    pub fn available(&mut self, now_ms: u64) -> bool {
        self.refill(now_ms);
        self.tokens > 0
    }

    /// Records one NV write at `now_ms` (an empty bucket stays empty: writes the TPM
    /// must make regardless, such as TPM2_Shutdown's, are counted but never refused).
    pub fn record_write(&mut self, now_ms: u64) {
        self.refill(now_ms);
        self.tokens = self.tokens.saturating_sub(1);
    }

    /// TPM_PT_NV_WRITE_RECOVERY: milliseconds until a write is accepted (0 = now).
    pub fn recovery_ms(&self, now_ms: u64) -> u64 {
        let mut l = self.clone();
        l.refill(now_ms);
        if l.tokens > 0 {
            0
        } else {
            (l.credited_to + l.interval_ms).saturating_sub(now_ms)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_refusal_then_one_per_interval() {
        let mut l = NvRateLimiter::new(3, 100, 1_000);
        for _ in 0..3 {
            assert!(l.available(1_000));
            l.record_write(1_000);
        }
        assert!(!l.available(1_000));
        assert_eq!(l.recovery_ms(1_000), 100);
        assert!(!l.available(1_099));
        assert_eq!(l.recovery_ms(1_040), 60);
        assert!(l.available(1_100));
        l.record_write(1_100);
        assert!(!l.available(1_150));
        // Long idle: the bucket fills to the burst, not beyond.
        assert!(l.available(100_000));
        for _ in 0..3 {
            assert!(l.available(100_000));
            l.record_write(100_000);
        }
        assert!(!l.available(100_000));
    }

    #[test]
    fn partial_intervals_are_not_lost() {
        let mut l = NvRateLimiter::new(2, 100, 0);
        l.record_write(0);
        l.record_write(0);
        // Polled at 60 and 130: the write earned at 100 is there at 130, and the
        // next one is due at 200, not 230.
        assert!(!l.available(60));
        assert!(l.available(130));
        l.record_write(130);
        assert!(!l.available(199));
        assert!(l.available(200));
    }

    #[test]
    fn forced_writes_never_underflow_and_time_going_back_earns_nothing() {
        let mut l = NvRateLimiter::new(2, 10, 500);
        for _ in 0..5 {
            l.record_write(500);
        }
        assert!(!l.available(500));
        assert!(!l.available(0));
        assert!(!l.available(9));
        assert!(l.available(10));
    }
}
