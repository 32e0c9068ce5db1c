//! One vCPU's architectural state as a saved image holds it: the general-purpose
//! registers, PC and PSTATE (ELR_EL2/SPSR_EL2 of its last exit), the EL1 system
//! registers a general-purpose OS uses (the set `el2/src/el1.rs` switches), FP/SIMD
//! with FPCR/FPSR, its virtual CPU interface (ICH_VMCR_EL2 and the active-priority
//! registers), its timers and its PSCI power state. The list registers are not here:
//! el2 syncs them back into the vGIC before a vCPU's state is taken, so pending and
//! active interrupts are in the vGIC's saved state.

use alloc::vec::Vec;

use vdev::save::{Reader, Writer};
use vdev::{RestoreError, SaveRestore};

/// The EL1 (and EL0-visible) system registers, named as in the Arm ARM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct El1Regs {
    pub sctlr: u64,
    pub actlr: u64,
    pub cpacr: u64,
    pub ttbr0: u64,
    pub ttbr1: u64,
    pub tcr: u64,
    pub mair: u64,
    pub amair: u64,
    pub vbar: u64,
    pub contextidr: u64,
    pub tpidr_el0: u64,
    pub tpidrro_el0: u64,
    pub tpidr_el1: u64,
    pub sp_el0: u64,
    pub sp_el1: u64,
    pub elr_el1: u64,
    pub spsr_el1: u64,
    pub esr_el1: u64,
    pub far_el1: u64,
    pub afsr0: u64,
    pub afsr1: u64,
    pub par: u64,
    pub csselr: u64,
    pub cntkctl: u64,
    /// CNTV_CTL_EL0 and CNTV_CVAL_EL0: the virtual timer, in guest virtual time.
    pub cntv_ctl: u64,
    pub cntv_cval: u64,
    pub mdscr: u64,
}

/// A vCPU's PSCI power state at suspend. A vCPU that was being started (CPU_ON
/// pending) is never saved: suspend waits until it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Power {
    #[default]
    Off,
    On,
}

/// One vCPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VcpuState {
    pub x: [u64; 31],
    /// ELR_EL2: where the guest continues.
    pub pc: u64,
    /// SPSR_EL2: the guest's PSTATE (an EL0 or EL1 mode; see [`valid_pstate`]).
    pub pstate: u64,
    pub el1: El1Regs,
    pub q: [u128; 32],
    pub fpcr: u64,
    pub fpsr: u64,
    /// ICH_VMCR_EL2 (the guest's ICC_PMR/BPR/IGRPEN view), ICH_AP0R0_EL2 and
    /// ICH_AP1R0_EL2.
    pub ich_vmcr: u64,
    pub ich_ap0r0: u32,
    pub ich_ap1r0: u32,
    /// The emulated EL1 physical timer (control as written, compare value in host
    /// physical counts at suspend; see [`crate::time::rebase_physical`]).
    pub ptimer_ctl: u64,
    pub ptimer_cval: u64,
    /// The hypervisor had raised the virtual timer's vGIC line and not lowered it.
    pub vtimer_raised: bool,
    pub power: Power,
}

impl Default for VcpuState {
    fn default() -> Self {
        Self {
            x: [0; 31],
            pc: 0,
            pstate: PSTATE_M_EL1H,
            el1: El1Regs::default(),
            q: [0; 32],
            fpcr: 0,
            fpsr: 0,
            ich_vmcr: 0,
            ich_ap0r0: 0,
            ich_ap1r0: 0,
            ptimer_ctl: 0,
            ptimer_cval: 0,
            vtimer_raised: false,
            power: Power::Off,
        }
    }
}

/// SPSR_EL2.M[4]: the exception came from AArch32.
const PSTATE_M_AARCH32: u64 = 1 << 4;
/// SPSR_EL2.M[3:0] (with M[4]): the mode the ERET returns to.
const PSTATE_M_MASK: u64 = 0x1f;
/// AArch64 EL0t, EL1t, EL1h; AArch32 User (EL0).
const PSTATE_M_EL0T: u64 = 0b0_0000;
const PSTATE_M_EL1T: u64 = 0b0_0100;
const PSTATE_M_EL1H: u64 = 0b0_0101;
const PSTATE_M_USR32: u64 = PSTATE_M_AARCH32;
/// ICH_VMCR_EL2 fields defined by GICv3 (VENG0, VENG1, VAckCtl, VFIQEn, VCBPR,
/// VEOIM, VBPR1, VBPR0, VPMR): bits 0-4, 9 and 18-31; the rest is RES0.
const ICH_VMCR_DEFINED: u64 = 0x1f | (1 << 9) | (0x3fff << 18);

/// Whether `pstate` returns to a mode a guest may run in: EL0 or EL1 of AArch64,
/// or AArch32 User. A saved image that would ERET to EL2 is refused.
pub fn valid_pstate(pstate: u64) -> bool {
    matches!(
        pstate & PSTATE_M_MASK,
        PSTATE_M_EL0T | PSTATE_M_EL1T | PSTATE_M_EL1H | PSTATE_M_USR32
    ) && pstate >> 32 == 0
}

impl SaveRestore for VcpuState {
    const SAVE_ID: [u8; 4] = *b"VCPU";
    const SAVE_VERSION: u32 = 1;

    fn save(&self) -> Vec<u8> {
        let Self {
            x,
            pc,
            pstate,
            el1,
            q,
            fpcr,
            fpsr,
            ich_vmcr,
            ich_ap0r0,
            ich_ap1r0,
            ptimer_ctl,
            ptimer_cval,
            vtimer_raised,
            power,
        } = self;
        let El1Regs {
            sctlr,
            actlr,
            cpacr,
            ttbr0,
            ttbr1,
            tcr,
            mair,
            amair,
            vbar,
            contextidr,
            tpidr_el0,
            tpidrro_el0,
            tpidr_el1,
            sp_el0,
            sp_el1,
            elr_el1,
            spsr_el1,
            esr_el1,
            far_el1,
            afsr0,
            afsr1,
            par,
            csselr,
            cntkctl,
            cntv_ctl,
            cntv_cval,
            mdscr,
        } = el1;
        let mut w = Writer::new(Self::SAVE_ID, Self::SAVE_VERSION);
        w.u8(match power {
            Power::Off => 0,
            Power::On => 1,
        });
        for r in x.iter().chain([pc, pstate]) {
            w.u64(*r);
        }
        for r in [
            sctlr,
            actlr,
            cpacr,
            ttbr0,
            ttbr1,
            tcr,
            mair,
            amair,
            vbar,
            contextidr,
            tpidr_el0,
            tpidrro_el0,
            tpidr_el1,
            sp_el0,
            sp_el1,
            elr_el1,
            spsr_el1,
            esr_el1,
            far_el1,
            afsr0,
            afsr1,
            par,
            csselr,
            cntkctl,
            cntv_ctl,
            cntv_cval,
            mdscr,
        ] {
            w.u64(*r);
        }
        for v in q {
            w.u64(*v as u64).u64((*v >> 64) as u64);
        }
        w.u64(*fpcr).u64(*fpsr);
        w.u64(*ich_vmcr).u32(*ich_ap0r0).u32(*ich_ap1r0);
        w.u64(*ptimer_ctl).u64(*ptimer_cval).flag(*vtimer_raised);
        w.finish()
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let (_version, mut r) = Reader::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
        let power = match r.u8()? {
            0 => Power::Off,
            1 => Power::On,
            _ => return Err(RestoreError::Malformed),
        };
        let mut s = VcpuState {
            power,
            ..VcpuState::default()
        };
        for v in s.x.iter_mut() {
            *v = r.u64()?;
        }
        s.pc = r.u64()?;
        s.pstate = r.u64()?;
        if !valid_pstate(s.pstate) {
            return Err(RestoreError::Malformed);
        }
        let e = &mut s.el1;
        for f in [
            &mut e.sctlr,
            &mut e.actlr,
            &mut e.cpacr,
            &mut e.ttbr0,
            &mut e.ttbr1,
            &mut e.tcr,
            &mut e.mair,
            &mut e.amair,
            &mut e.vbar,
            &mut e.contextidr,
            &mut e.tpidr_el0,
            &mut e.tpidrro_el0,
            &mut e.tpidr_el1,
            &mut e.sp_el0,
            &mut e.sp_el1,
            &mut e.elr_el1,
            &mut e.spsr_el1,
            &mut e.esr_el1,
            &mut e.far_el1,
            &mut e.afsr0,
            &mut e.afsr1,
            &mut e.par,
            &mut e.csselr,
            &mut e.cntkctl,
            &mut e.cntv_ctl,
            &mut e.cntv_cval,
            &mut e.mdscr,
        ] {
            *f = r.u64()?;
        }
        for v in s.q.iter_mut() {
            let lo = r.u64()?;
            let hi = r.u64()?;
            *v = u128::from(lo) | (u128::from(hi) << 64);
        }
        s.fpcr = r.u64()?;
        s.fpsr = r.u64()?;
        s.ich_vmcr = r.u64()?;
        if s.ich_vmcr & !ICH_VMCR_DEFINED != 0 {
            return Err(RestoreError::Malformed);
        }
        s.ich_ap0r0 = r.u32()?;
        s.ich_ap1r0 = r.u32()?;
        s.ptimer_ctl = r.u64()?;
        s.ptimer_cval = r.u64()?;
        s.vtimer_raised = r.flag()?;
        r.end()?;
        *self = s;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eret_to_el2_or_undefined_modes_is_refused() {
        assert!(valid_pstate(PSTATE_M_EL1H | 0x3c0));
        assert!(valid_pstate(PSTATE_M_EL0T));
        assert!(valid_pstate(PSTATE_M_USR32));
        for el2 in [0b1000u64, 0b1001, 0b1100, 0b1101, 0b0001, 0b1_0011] {
            assert!(!valid_pstate(el2), "{el2:#b}");
        }
        let mut s = busy();
        s.pstate = 0b1001; // EL2h
        let blob = s.save();
        let mut t = VcpuState::default();
        assert_eq!(t.restore(&blob), Err(RestoreError::Malformed));
        assert_eq!(t, VcpuState::default());
    }

    #[test]
    fn vmcr_reserved_bits_are_refused() {
        let mut s = busy();
        s.ich_vmcr |= 1 << 7;
        let mut t = VcpuState::default();
        assert_eq!(t.restore(&s.save()), Err(RestoreError::Malformed));
    }

    fn busy() -> VcpuState {
        let mut s = VcpuState::default();
        drive(&mut s);
        s
    }

    fn drive(s: &mut VcpuState) {
        for (i, x) in s.x.iter_mut().enumerate() {
            *x = 0x1111_0000_0000_0000 | i as u64;
        }
        s.pc = 0xffff_8000_1234_5678;
        s.pstate = PSTATE_M_EL1H | 0x3c0;
        s.el1.sctlr = 0x30d0_198d;
        s.el1.ttbr1 = 0x4123_4000;
        s.el1.sp_el1 = 0xffff_8000_0abc_0000;
        s.el1.cntv_ctl = 1;
        s.el1.cntv_cval = 77_000;
        s.el1.mdscr = 0x1000;
        for (i, q) in s.q.iter_mut().enumerate() {
            *q = (i as u128) << 100 | 0xdead_beef;
        }
        s.fpcr = 0x0300_0000;
        s.fpsr = 0x10;
        s.ich_vmcr = (0xf0 << 24) | 0b10;
        s.ich_ap1r0 = 1 << 3;
        s.ptimer_ctl = 1;
        s.ptimer_cval = 99;
        s.vtimer_raised = true;
        s.power = Power::On;
    }

    vdev::save_restore_tests!(
        saved_state,
        make: VcpuState::default,
        drive: |s: &mut VcpuState| drive(s),
        probe: |s: &mut VcpuState| s.clone(),
    );
}
