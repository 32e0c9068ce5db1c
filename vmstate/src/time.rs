//! Guest time across a suspend: the guest's virtual counter (CNTVCT_EL0 =
//! CNTPCT_EL0 − CNTVOFF_EL2) stops at suspend and continues from the same value at
//! resume, on whatever host counter the next boot has. The compare values the guest
//! programmed (CNTV_CVAL_EL0) are in virtual time and are restored unchanged, so a
//! timer fires when its deadline comes in guest time — never early, and never as a
//! burst of the ticks that would have elapsed while the VM was on disk.

/// Time as the suspend saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TimeState {
    /// CNTFRQ_EL0 when suspended: a resume on a counter of another frequency would
    /// change the rate of guest time and is refused.
    pub cntfrq: u64,
    /// The guest's virtual count when its vCPUs stopped.
    pub guest_vcount: u64,
    /// The host's physical count at the same moment (the emulated EL1 physical
    /// timer's compare values are rebased against it).
    pub host_pcount: u64,
}

/// CNTVOFF_EL2 that makes the guest's virtual count read `guest_vcount` when the
/// host's physical count is `pcount_now` (modulo 2^64, as the counter subtracts).
pub fn cntvoff_for(guest_vcount: u64, pcount_now: u64) -> u64 {
    pcount_now.wrapping_sub(guest_vcount)
}

/// A compare value of the emulated EL1 physical timer, taken when the host's
/// physical count was `then`, moved to a host whose count is `now`: the time left
/// until it fires (or the time since it did) is kept.
pub fn rebase_physical(cval: u64, then: u64, now: u64) -> u64 {
    cval.wrapping_add(now.wrapping_sub(then))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virtual_time_continues_from_the_saved_count() {
        // Suspended when the guest's count was 5_000_000; the next host boot's
        // counter is only at 1_000 (it restarted from zero).
        let off = cntvoff_for(5_000_000, 1_000);
        assert_eq!(1_000u64.wrapping_sub(off), 5_000_000);
        // 100 ticks later the guest sees 100 ticks more, no jump.
        assert_eq!(1_100u64.wrapping_sub(off), 5_000_100);
        // And on a host whose counter is far ahead.
        let off = cntvoff_for(5_000_000, u64::MAX - 10);
        assert_eq!((u64::MAX - 10).wrapping_sub(off), 5_000_000);
    }

    #[test]
    fn physical_compare_values_keep_their_distance() {
        // 250 ticks left before suspend: 250 left after.
        assert_eq!(rebase_physical(1_250, 1_000, 40), 290);
        // Already expired 30 ticks before suspend: still expired by 30.
        assert_eq!(rebase_physical(970, 1_000, 40), 10);
        // Across the wrap.
        assert_eq!(rebase_physical(u64::MAX, u64::MAX - 5, 2), 7);
    }
}
