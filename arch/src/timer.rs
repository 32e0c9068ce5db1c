//! The guest's generic timers as pure code:
//! - an emulated EL1 generic timer (the EL1 physical timer, whose registers the
//!   hypervisor traps with CNTHCTL_EL2.EL1PCEN = 0): CTL, CVAL and TVAL behave as the
//!   Arm ARM describes (D11.2 "The AArch64 view of the Generic Timer"), computed from
//!   the counter value passed in;
//! - the level of the EL1 virtual timer's interrupt, which runs in hardware and is
//!   delivered hardware-linked ([`asserts_irq`], [`vtimer_line`]);
//! - the wake-up deadline of a trapped WFIT ([`wfit_expired`], [`wfit_wake_deadline`]).

use crate::sysreg::SysReg;

/// CNTP_TVAL_EL0, CNTP_CTL_EL0 and CNTP_CVAL_EL0.
pub const CNTP_TVAL_EL0: SysReg = SysReg::new(3, 3, 14, 2, 0);
pub const CNTP_CTL_EL0: SysReg = SysReg::new(3, 3, 14, 2, 1);
pub const CNTP_CVAL_EL0: SysReg = SysReg::new(3, 3, 14, 2, 2);

/// CNT*_CTL_EL0 bits.
pub const CTL_ENABLE: u64 = 1 << 0;
pub const CTL_IMASK: u64 = 1 << 1;
pub const CTL_ISTATUS: u64 = 1 << 2;

/// One emulated timer's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmulatedTimer {
    /// ENABLE and IMASK as the guest wrote them (ISTATUS is computed).
    pub ctl: u64,
    pub cval: u64,
}

/// What the hypervisor must do after a timer access or when time passes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerOutput {
    /// The level of the timer's interrupt line.
    pub irq_level: bool,
    /// When to look again (counter value), if the timer will fire in the future.
    pub deadline: Option<u64>,
}

/// Whether a generic timer whose CNT*_CTL_EL0 reads `ctl` asserts its interrupt:
/// the timer output is ENABLE && ISTATUS && !IMASK. ISTATUS is the timer condition
/// the hardware computes from CVAL and the count, so a CVAL moved into the future
/// clears it. Other bits are ignored.
pub const fn asserts_irq(ctl: u64) -> bool {
    ctl & (CTL_ENABLE | CTL_IMASK | CTL_ISTATUS) == CTL_ENABLE | CTL_ISTATUS
}

/// What the hypervisor does with the virtual timer's interrupt line after an exit.
///
/// The physical virtual-timer PPI raises the line: the hypervisor takes it, leaves
/// it active (the guest's deactivation of the hardware-linked virtual interrupt
/// deactivates it) and raises the vGIC line. Nothing in hardware lowers the line
/// again, so after every exit on which the line is up the hypervisor reads the
/// guest's live CNTV_CTL_EL0 and lowers it once the timer no longer asserts its
/// interrupt (disabled, masked with IMASK, or CVAL moved past the count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VtimerLine {
    /// Leave the line as it is: it is low, or the timer still asserts it.
    Keep,
    /// The line is up but the timer no longer asserts it: lower it.
    Lower,
}

/// The decision for a virtual timer whose vGIC line the hypervisor raised (`raised`)
/// and whose CNTV_CTL_EL0 now reads `ctl`.
pub const fn vtimer_line(raised: bool, ctl: u64) -> VtimerLine {
    if raised && !asserts_irq(ctl) {
        VtimerLine::Lower
    } else {
        VtimerLine::Keep
    }
}

/// Whether a WFIT whose timeout register held `timeout` has reached it at virtual
/// count `cntvct` (CNTVCT_EL0): the local timeout event is generated once the
/// virtual count is at or past the timeout.
pub const fn wfit_expired(cntvct: u64, timeout: u64) -> bool {
    cntvct >= timeout
}

/// The physical count at which the virtual count reaches `vtarget`, with the
/// physical count now `pnow` and CNTVOFF_EL2 `cntvoff` (virtual = physical −
/// offset, modulo 2^64: a resumed guest whose virtual time is ahead of this host's
/// counter has an offset that wrapped). A target the virtual count already
/// reached is due now; one beyond the physical counter's range never comes
/// (`None`). Both counts compare unsigned, as the timer and WFIT do.
pub const fn physical_deadline(vtarget: u64, cntvoff: u64, pnow: u64) -> Option<u64> {
    let vnow = pnow.wrapping_sub(cntvoff);
    if vtarget <= vnow {
        return Some(pnow);
    }
    pnow.checked_add(vtarget - vnow)
}

/// The physical count at which the EL2 timer must fire while a vCPU waits in WFIT:
/// the earlier of the emulated physical timer's own deadline (`ptimer`) and the WFIT
/// `timeout` (a virtual count: see [`physical_deadline`]; `pnow` is the physical
/// count now). `None` if nothing will.
pub fn wfit_wake_deadline(
    ptimer: Option<u64>,
    timeout: u64,
    cntvoff: u64,
    pnow: u64,
) -> Option<u64> {
    match (ptimer, physical_deadline(timeout, cntvoff, pnow)) {
        (Some(p), Some(t)) => Some(p.min(t)),
        (p, t) => p.or(t),
    }
}

/// The physical count at which a virtual timer with CNTV_CTL_EL0 `ctl` and
/// CNTV_CVAL_EL0 `cval` raises its interrupt, under CNTVOFF_EL2 `cntvoff` with the
/// physical count now `pnow` ([`physical_deadline`]); `None` while it is disabled
/// or masked (IMASK), or if that count is past the counter's range. A vCPU
/// waiting in WFI off its physical CPU wakes then (the timer is not in any
/// hardware meanwhile).
pub const fn vtimer_deadline(ctl: u64, cval: u64, cntvoff: u64, pnow: u64) -> Option<u64> {
    if ctl & (CTL_ENABLE | CTL_IMASK) != CTL_ENABLE {
        return None;
    }
    physical_deadline(cval, cntvoff, pnow)
}

impl EmulatedTimer {
    /// Whether `reg` is one of this timer's registers.
    pub fn owns(reg: SysReg) -> bool {
        matches!(reg, CNTP_TVAL_EL0 | CNTP_CTL_EL0 | CNTP_CVAL_EL0)
    }

    fn condition(&self, now: u64) -> bool {
        self.ctl & CTL_ENABLE != 0 && now >= self.cval
    }

    /// The value a read of `reg` returns at counter value `now`.
    pub fn read(&self, reg: SysReg, now: u64) -> u64 {
        match reg {
            CNTP_CTL_EL0 => self.ctl | if self.condition(now) { CTL_ISTATUS } else { 0 },
            CNTP_CVAL_EL0 => self.cval,
            // TVAL is the low 32 bits of CVAL - now, read as a signed value.
            _ => (self.cval.wrapping_sub(now) as u32) as i32 as i64 as u64 & 0xffff_ffff,
        }
    }

    /// Applies a write of `value` to `reg` at counter value `now`.
    pub fn write(&mut self, reg: SysReg, value: u64, now: u64) {
        match reg {
            CNTP_CTL_EL0 => self.ctl = value & (CTL_ENABLE | CTL_IMASK),
            CNTP_CVAL_EL0 => self.cval = value,
            // TVAL writes set CVAL to now + the sign-extended 32-bit value.
            _ => self.cval = now.wrapping_add(value as u32 as i32 as i64 as u64),
        }
    }

    /// The interrupt level and next deadline at counter value `now`.
    pub fn output(&self, now: u64) -> TimerOutput {
        let enabled = self.ctl & CTL_ENABLE != 0;
        let fired = self.condition(now);
        TimerOutput {
            irq_level: fired && self.ctl & CTL_IMASK == 0,
            deadline: (enabled && !fired).then_some(self.cval),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_at_cval_when_enabled_and_unmasked() {
        let mut t = EmulatedTimer::default();
        t.write(CNTP_CVAL_EL0, 1000, 0);
        assert_eq!(
            t.output(999),
            TimerOutput {
                irq_level: false,
                deadline: None
            },
            "disabled"
        );
        t.write(CNTP_CTL_EL0, CTL_ENABLE, 0);
        assert_eq!(
            t.output(999),
            TimerOutput {
                irq_level: false,
                deadline: Some(1000)
            }
        );
        assert_eq!(
            t.output(1000),
            TimerOutput {
                irq_level: true,
                deadline: None
            }
        );
        assert_eq!(t.read(CNTP_CTL_EL0, 1000), CTL_ENABLE | CTL_ISTATUS);
        t.write(CNTP_CTL_EL0, CTL_ENABLE | CTL_IMASK, 1000);
        assert_eq!(
            t.output(1001),
            TimerOutput {
                irq_level: false,
                deadline: None
            },
            "masked"
        );
        assert_eq!(
            t.read(CNTP_CTL_EL0, 1001),
            CTL_ENABLE | CTL_IMASK | CTL_ISTATUS,
            "ISTATUS ignores IMASK"
        );
    }

    #[test]
    fn tval_is_a_signed_32_bit_view_of_cval() {
        let mut t = EmulatedTimer::default();
        t.write(CNTP_TVAL_EL0, 500, 10_000);
        assert_eq!(t.cval, 10_500);
        assert_eq!(t.read(CNTP_TVAL_EL0, 10_000), 500);
        assert_eq!(t.read(CNTP_TVAL_EL0, 10_600), (-100i32) as u32 as u64);
        t.write(CNTP_TVAL_EL0, 0xffff_ff9c, 10_000); // -100
        assert_eq!(t.cval, 9_900);
        t.write(CNTP_CTL_EL0, 0xffff_ffff, 0);
        assert_eq!(
            t.ctl,
            CTL_ENABLE | CTL_IMASK,
            "ISTATUS and reserved bits are not stored"
        );
    }

    #[test]
    fn timer_output_is_enable_and_istatus_and_not_imask() {
        for bits in 0..8u64 {
            let (enable, imask, istatus) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
            let bit = |on: bool, b: u64| if on { b } else { 0 };
            let ctl = bit(enable, CTL_ENABLE) | bit(imask, CTL_IMASK) | bit(istatus, CTL_ISTATUS);
            let asserted = enable && istatus && !imask;
            assert_eq!(asserts_irq(ctl), asserted, "ctl {ctl:#b}");
            assert_eq!(
                asserts_irq(ctl | !0b111),
                asserted,
                "reserved bits ignored, ctl {ctl:#b}"
            );
            assert_eq!(
                vtimer_line(true, ctl),
                if asserted {
                    VtimerLine::Keep
                } else {
                    VtimerLine::Lower
                },
                "raised, ctl {ctl:#b}"
            );
            assert_eq!(
                vtimer_line(false, ctl),
                VtimerLine::Keep,
                "a line never raised is never lowered, ctl {ctl:#b}"
            );
        }
    }

    #[test]
    fn vtimer_deadline_is_cval_plus_offset_while_enabled_and_unmasked() {
        assert_eq!(vtimer_deadline(CTL_ENABLE, 1000, 50, 60), Some(1050));
        assert_eq!(
            vtimer_deadline(CTL_ENABLE | CTL_ISTATUS, 1000, 0, 2000),
            Some(2000),
            "a deadline the virtual count passed is due now"
        );
        assert_eq!(vtimer_deadline(CTL_ENABLE | CTL_IMASK, 1000, 0, 0), None);
        assert_eq!(vtimer_deadline(0, 1000, 0, 0), None);
        assert_eq!(vtimer_deadline(CTL_ENABLE, u64::MAX, 1, 10), None);
    }

    #[test]
    fn a_wrapped_offset_still_gives_the_deadline() {
        // A guest resumed on a host that booted more recently than the guest's
        // virtual count: offset = now - vcount wrapped below zero.
        let (vcount, pnow) = (30_000_000u64, 5_000_000u64);
        let off = pnow.wrapping_sub(vcount);
        assert_eq!(pnow.wrapping_sub(off), vcount);
        assert_eq!(
            physical_deadline(vcount + 1000, off, pnow),
            Some(pnow + 1000)
        );
        assert_eq!(
            vtimer_deadline(CTL_ENABLE, vcount + 1000, off, pnow),
            Some(pnow + 1000)
        );
        assert_eq!(physical_deadline(vcount - 1, off, pnow), Some(pnow));
        assert_eq!(
            wfit_wake_deadline(None, vcount + 7, off, pnow),
            Some(pnow + 7)
        );
    }

    #[test]
    fn vtimer_line_drops_when_cval_moves_forward() {
        // The timer fired: the hypervisor raised the line.
        let fired = CTL_ENABLE | CTL_ISTATUS;
        assert_eq!(vtimer_line(true, fired), VtimerLine::Keep);
        // The guest wrote a CVAL in the future: the hardware clears ISTATUS while
        // ENABLE stays set.
        assert_eq!(vtimer_line(true, CTL_ENABLE), VtimerLine::Lower);
        // Disabled (ISTATUS is UNKNOWN then, so either value) or masked: lowered.
        assert_eq!(vtimer_line(true, 0), VtimerLine::Lower);
        assert_eq!(vtimer_line(true, CTL_ISTATUS), VtimerLine::Lower);
        assert_eq!(vtimer_line(true, fired | CTL_IMASK), VtimerLine::Lower);
    }

    #[test]
    fn wfit_expires_at_its_timeout() {
        assert!(!wfit_expired(999, 1000));
        assert!(wfit_expired(1000, 1000));
        assert!(wfit_expired(1001, 1000));
        assert!(
            wfit_expired(0, 0),
            "a zero timeout (WFIT xzr) returns at once"
        );
        assert!(!wfit_expired(u64::MAX - 1, u64::MAX));
    }

    #[test]
    fn wfit_wakes_at_the_earlier_deadline() {
        assert_eq!(wfit_wake_deadline(None, 500, 0, 0), Some(500));
        assert_eq!(wfit_wake_deadline(Some(300), 500, 0, 0), Some(300));
        assert_eq!(wfit_wake_deadline(Some(700), 500, 0, 0), Some(500));
        assert_eq!(
            wfit_wake_deadline(Some(700), 500, 100, 100),
            Some(600),
            "the timeout is a virtual count: CNTVOFF_EL2 is added"
        );
        assert_eq!(
            wfit_wake_deadline(None, u64::MAX, 1, 1),
            None,
            "a timeout past the physical count's range never fires"
        );
        assert_eq!(wfit_wake_deadline(Some(42), u64::MAX, 1, 1), Some(42));
        assert_eq!(wfit_wake_deadline(Some(42), u64::MAX, 0, 0), Some(42));
    }

    #[test]
    fn owns_only_the_physical_timer_registers() {
        assert!(EmulatedTimer::owns(CNTP_CTL_EL0));
        assert!(
            !EmulatedTimer::owns(SysReg::new(3, 3, 14, 3, 1)),
            "CNTV_CTL_EL0 is not trapped"
        );
    }
}
