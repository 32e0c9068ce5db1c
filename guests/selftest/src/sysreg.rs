//! Reading and writing the EL1/EL0 system registers the guests use, one small
//! function per register (names as in the Arm ARM).

/// Defines `pub fn $fn() -> u64` reading system register `$reg` with `mrs`.
macro_rules! read_fns {
    ($($(#[$doc:meta])* $fn:ident => $reg:literal;)*) => {$(
        $(#[$doc])*
        #[inline(always)]
        pub fn $fn() -> u64 {
            let value: u64;
            // SAFETY: reading this register has no side effects and touches no memory.
            unsafe { core::arch::asm!(concat!("mrs {}, ", $reg), out(reg) value, options(nomem, nostack, preserves_flags)) };
            value
        }
    )*};
}

/// Defines `pub fn $fn(value: u64)` writing system register `$reg` with `msr`.
macro_rules! write_fns {
    ($($(#[$doc:meta])* $fn:ident => $reg:literal;)*) => {$(
        $(#[$doc])*
        #[inline(always)]
        pub fn $fn(value: u64) {
            // SAFETY: the guests only write registers that control their own EL1/EL0
            // state (timer, PMU, vector base); none of them changes memory safety.
            unsafe { core::arch::asm!(concat!("msr ", $reg, ", {}"), in(reg) value, options(nostack, preserves_flags)) };
        }
    )*};
}

read_fns! {
    /// ESR_EL1.
    esr_el1 => "esr_el1";
    /// FAR_EL1.
    far_el1 => "far_el1";
    /// MPIDR_EL1.
    mpidr_el1 => "mpidr_el1";
    /// ID_AA64PFR0_EL1.
    id_aa64pfr0_el1 => "s3_0_c0_c4_0";
    /// ID_AA64PFR1_EL1.
    id_aa64pfr1_el1 => "s3_0_c0_c4_1";
    /// ID_AA64DFR0_EL1.
    id_aa64dfr0_el1 => "s3_0_c0_c5_0";
    /// ID_AA64ISAR1_EL1.
    id_aa64isar1_el1 => "s3_0_c0_c6_1";
    /// ID_AA64ISAR2_EL1 (RAZ before it was defined).
    id_aa64isar2_el1 => "s3_0_c0_c6_2";
    /// ID_AA64MMFR0_EL1.
    id_aa64mmfr0_el1 => "s3_0_c0_c7_0";
    /// CNTFRQ_EL0.
    cntfrq_el0 => "cntfrq_el0";
    /// CNTV_CTL_EL0.
    cntv_ctl_el0 => "cntv_ctl_el0";
    /// CNTP_CTL_EL0 (trapped and emulated by the hypervisor).
    cntp_ctl_el0 => "cntp_ctl_el0";
    /// CNTP_CVAL_EL0.
    cntp_cval_el0 => "cntp_cval_el0";
    /// CNTP_TVAL_EL0.
    cntp_tval_el0 => "cntp_tval_el0";
    /// CNTPCT_EL0.
    cntpct_el0 => "cntpct_el0";
    /// FPCR.
    fpcr => "fpcr";
    /// PMCR_EL0.
    pmcr_el0 => "pmcr_el0";
    /// PMEVCNTR0_EL0.
    pmevcntr0_el0 => "pmevcntr0_el0";
}

write_fns! {
    /// VBAR_EL1.
    vbar_el1 => "vbar_el1";
    /// CNTV_CTL_EL0.
    set_cntv_ctl_el0 => "cntv_ctl_el0";
    /// CNTV_CVAL_EL0.
    set_cntv_cval_el0 => "cntv_cval_el0";
    /// CNTP_CTL_EL0.
    set_cntp_ctl_el0 => "cntp_ctl_el0";
    /// CNTP_CVAL_EL0.
    set_cntp_cval_el0 => "cntp_cval_el0";
    /// CNTP_TVAL_EL0.
    set_cntp_tval_el0 => "cntp_tval_el0";
    /// PMCR_EL0.
    set_pmcr_el0 => "pmcr_el0";
    /// PMEVTYPER0_EL0.
    set_pmevtyper0_el0 => "pmevtyper0_el0";
    /// PMCNTENSET_EL0.
    set_pmcntenset_el0 => "pmcntenset_el0";
    /// PMCNTENCLR_EL0.
    set_pmcntenclr_el0 => "pmcntenclr_el0";
}

/// CNTVCT_EL0, read after an `isb` so it is not taken early.
#[inline(always)]
pub fn cntvct_el0() -> u64 {
    let value: u64;
    // SAFETY: `isb` and a counter read have no side effects on memory.
    unsafe {
        core::arch::asm!("isb", "mrs {}, cntvct_el0", out(reg) value, options(nomem, nostack, preserves_flags))
    };
    value
}

/// `isb`: context synchronisation after a system register write.
#[inline(always)]
pub fn isb() {
    // SAFETY: a barrier; no memory or register effects.
    unsafe { core::arch::asm!("isb", options(nostack, preserves_flags)) };
}

/// Unmasks SError exceptions (PSTATE.A), leaving D, I and F masked.
pub fn unmask_serror() {
    // SAFETY: the vector table is installed before this is called, so a pending
    // SError is taken by the guest's handler, which reports it.
    unsafe {
        core::arch::asm!("msr daifclr, #{a}", a = const crate::defs::sysreg::DAIFCLR_A, options(nostack, preserves_flags))
    };
}
