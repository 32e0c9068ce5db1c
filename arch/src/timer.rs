//! An emulated EL1 generic timer (the EL1 physical timer, whose registers the
//! hypervisor traps with CNTHCTL_EL2.EL1PCEN = 0): CTL, CVAL and TVAL behave as the
//! Arm ARM describes (D11.2 "The AArch64 view of the Generic Timer"), computed from
//! the counter value passed in.

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
    fn owns_only_the_physical_timer_registers() {
        assert!(EmulatedTimer::owns(CNTP_CTL_EL0));
        assert!(
            !EmulatedTimer::owns(SysReg::new(3, 3, 14, 3, 1)),
            "CNTV_CTL_EL0 is not trapped"
        );
    }
}
