//! A vCPU's EL1 state beyond its general-purpose registers: the system registers a
//! general-purpose OS uses and the FP/SIMD registers. While a vCPU owns its physical
//! CPU this state stays live in the hardware (the hypervisor never touches it on the
//! exit path); [`El1Context::save`] and [`El1Context::restore`] move it to and from
//! memory when a vCPU starts, stops, or gives up its CPU.
//!
//! It also holds the hypervisor's by-name system-register access: [`read_sysreg!`]
//! for registers whose read has no side effect (it refuses, at compile time, the
//! interrupt-acknowledge registers), [`write_sysreg!`], and typed accessors
//! ([`typed_sysreg!`]) for the registers `aarch64-cpu` lacks, with their layouts
//! from `arch::regs`. The reads with a side effect the hypervisor makes have their
//! own paths: the interrupt acknowledge (`irq::acknowledge`) and RNDRRS
//! (`entropy::rndrrs`).

use core::arch::asm;

/// FP/SIMD state.
#[repr(C, align(16))]
#[derive(Debug, Clone, Copy)]
pub struct FpState {
    pub q: [u128; 32],
    pub fpcr: u64,
    pub fpsr: u64,
}

impl FpState {
    /// All zero.
    pub const ZERO: FpState = FpState {
        q: [0; 32],
        fpcr: 0,
        fpsr: 0,
    };

    /// Captures the live FP/SIMD registers, FPCR and FPSR of the current CPU.
    pub fn save_live(&mut self) {
        // SAFETY: stores the 32 SIMD registers, FPCR and FPSR into `self`, which is
        // 16-byte aligned and large enough; CPTR_EL2 does not trap FP at EL2.
        unsafe {
            asm!(
                ".arch_extension fp",
                ".arch_extension simd",
                "stp q0, q1, [{p}, #0]", "stp q2, q3, [{p}, #32]", "stp q4, q5, [{p}, #64]",
                "stp q6, q7, [{p}, #96]", "stp q8, q9, [{p}, #128]", "stp q10, q11, [{p}, #160]",
                "stp q12, q13, [{p}, #192]", "stp q14, q15, [{p}, #224]", "stp q16, q17, [{p}, #256]",
                "stp q18, q19, [{p}, #288]", "stp q20, q21, [{p}, #320]", "stp q22, q23, [{p}, #352]",
                "stp q24, q25, [{p}, #384]", "stp q26, q27, [{p}, #416]", "stp q28, q29, [{p}, #448]",
                "stp q30, q31, [{p}, #480]",
                "mrs {t}, fpcr", "str {t}, [{p}, #512]",
                "mrs {t}, fpsr", "str {t}, [{p}, #520]",
                p = in(reg) core::ptr::addr_of_mut!(*self),
                t = out(reg) _,
                options(nostack),
            );
        }
    }

    /// Makes this the live FP/SIMD state of the current CPU.
    pub fn restore_live(&self) {
        // SAFETY: loads the SIMD registers, FPCR and FPSR from `self`; the hypervisor
        // is built soft-float, so none of its own values live in them (the one code
        // that uses them, `display::compose_simd`, saves and restores around it).
        unsafe {
            asm!(
                ".arch_extension fp",
                ".arch_extension simd",
                "ldp q0, q1, [{p}, #0]", "ldp q2, q3, [{p}, #32]", "ldp q4, q5, [{p}, #64]",
                "ldp q6, q7, [{p}, #96]", "ldp q8, q9, [{p}, #128]", "ldp q10, q11, [{p}, #160]",
                "ldp q12, q13, [{p}, #192]", "ldp q14, q15, [{p}, #224]", "ldp q16, q17, [{p}, #256]",
                "ldp q18, q19, [{p}, #288]", "ldp q20, q21, [{p}, #320]", "ldp q22, q23, [{p}, #352]",
                "ldp q24, q25, [{p}, #384]", "ldp q26, q27, [{p}, #416]", "ldp q28, q29, [{p}, #448]",
                "ldp q30, q31, [{p}, #480]",
                "ldr {t}, [{p}, #512]", "msr fpcr, {t}",
                "ldr {t}, [{p}, #520]", "msr fpsr, {t}",
                "isb",
                p = in(reg) core::ptr::addr_of!(*self),
                t = out(reg) _,
                options(nostack),
            );
        }
    }
}

/// EL1 system registers of one vCPU.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct El1Context {
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
    pub cntv_ctl: u64,
    pub cntv_cval: u64,
    pub mdscr: u64,
    pub fp: FpState,
}

macro_rules! sysregs {
    ($m:ident) => {
        $m!(sctlr, "SCTLR_EL1");
        $m!(actlr, "ACTLR_EL1");
        $m!(cpacr, "CPACR_EL1");
        $m!(ttbr0, "TTBR0_EL1");
        $m!(ttbr1, "TTBR1_EL1");
        $m!(tcr, "TCR_EL1");
        $m!(mair, "MAIR_EL1");
        $m!(amair, "AMAIR_EL1");
        $m!(vbar, "VBAR_EL1");
        $m!(contextidr, "CONTEXTIDR_EL1");
        $m!(tpidr_el0, "TPIDR_EL0");
        $m!(tpidrro_el0, "TPIDRRO_EL0");
        $m!(tpidr_el1, "TPIDR_EL1");
        $m!(sp_el0, "SP_EL0");
        $m!(sp_el1, "SP_EL1");
        $m!(elr_el1, "ELR_EL1");
        $m!(spsr_el1, "SPSR_EL1");
        $m!(esr_el1, "ESR_EL1");
        $m!(far_el1, "FAR_EL1");
        $m!(afsr0, "AFSR0_EL1");
        $m!(afsr1, "AFSR1_EL1");
        $m!(par, "PAR_EL1");
        $m!(csselr, "CSSELR_EL1");
        $m!(cntkctl, "CNTKCTL_EL1");
        $m!(cntv_ctl, "CNTV_CTL_EL0");
        $m!(cntv_cval, "CNTV_CVAL_EL0");
        $m!(mdscr, "MDSCR_EL1");
    };
}

impl El1Context {
    /// The architectural reset state of a vCPU's EL1.
    pub fn reset() -> Self {
        Self {
            sctlr: arch::controls::sctlr_el1_reset(),
            actlr: 0,
            cpacr: 0,
            ttbr0: 0,
            ttbr1: 0,
            tcr: 0,
            mair: 0,
            amair: 0,
            vbar: 0,
            contextidr: 0,
            tpidr_el0: 0,
            tpidrro_el0: 0,
            tpidr_el1: 0,
            sp_el0: 0,
            sp_el1: 0,
            elr_el1: 0,
            spsr_el1: 0,
            esr_el1: 0,
            far_el1: 0,
            afsr0: 0,
            afsr1: 0,
            par: 0,
            csselr: 0,
            cntkctl: 0,
            cntv_ctl: 0,
            cntv_cval: 0,
            mdscr: 0,
            fp: FpState {
                q: [0; 32],
                fpcr: 0,
                fpsr: 0,
            },
        }
    }

    /// Captures the live EL1 state of the current physical CPU.
    pub fn save(&mut self) {
        macro_rules! rd {
            ($f:ident, $r:literal) => {
                // SAFETY: reading these EL1 context registers (none of them an
                // interrupt acknowledge) only returns their value; the output is a
                // plain field of `self`.
                unsafe { asm!(concat!("mrs {}, ", $r), out(reg) self.$f, options(nomem, nostack)) };
            };
        }
        sysregs!(rd);
        self.fp.save_live();
    }

    /// Makes this the live EL1 state of the current physical CPU.
    pub fn restore(&self) {
        macro_rules! wr {
            ($f:ident, $r:literal) => {
                // SAFETY: writing an EL1 system register from EL2 only affects the
                // guest context that is about to run on this CPU.
                unsafe { asm!(concat!("msr ", $r, ", {}"), in(reg) self.$f, options(nomem, nostack)) };
            };
        }
        sysregs!(wr);
        self.fp.restore_live();
    }
}

const _: () = assert!(core::mem::offset_of!(FpState, fpcr) == 512);
const _: () = assert!(core::mem::offset_of!(FpState, fpsr) == 520);

/// Reads a system register, by name, whose read has no side effect: ID,
/// control, counter and EL1-context registers. A register whose read changes
/// state (interrupt acknowledge, RNDR) does not compile here.
macro_rules! read_sysreg {
    ($r:literal) => {{
        const _: () = assert!(
            !arch::regs::has_read_side_effect($r),
            "reading this register has a side effect: use irq::acknowledge or entropy::rndrrs"
        );
        let v: u64;
        // SAFETY: the assertion above keeps out the registers whose read has a side
        // effect, so this MRS only returns the register's value; it touches no memory.
        unsafe { core::arch::asm!(concat!("mrs {}, ", $r), out(reg) v, options(nomem, nostack)) };
        v
    }};
}

/// Writes one system register by name.
macro_rules! write_sysreg {
    ($r:literal, $v:expr) => {{
        let v: u64 = $v;
        // SAFETY: the caller writes guest EL1 state or an EL2 control register whose
        // effect it documents at the call site; none of them changes the
        // hypervisor's own translation or memory.
        unsafe { core::arch::asm!(concat!("msr ", $r, ", {}"), in(reg) v, options(nomem, nostack)) };
    }};
}

/// Declares `$name`, a typed accessor for the system register `$r` (which
/// `aarch64-cpu` does not provide) with the `arch::regs` layout `$layout`: the
/// `tock-registers` `Readable` (`r`), `Writeable` (`w`) interfaces or both
/// (`rw`), so callers use field names instead of shifts and masks. Only for
/// registers whose read has no side effect.
macro_rules! typed_sysreg {
    ($(#[$m:meta])* $name:ident, $r:literal, $layout:ty, r) => {
        $(#[$m])*
        pub struct $name;
        impl tock_registers::interfaces::Readable for $name {
            type T = u64;
            type R = $layout;
            #[inline(always)]
            fn get(&self) -> u64 {
                $crate::el1::read_sysreg!($r)
            }
        }
    };
    ($(#[$m:meta])* $name:ident, $r:literal, $layout:ty, w) => {
        $(#[$m])*
        pub struct $name;
        impl tock_registers::interfaces::Writeable for $name {
            type T = u64;
            type R = $layout;
            #[inline(always)]
            fn set(&self, v: u64) {
                $crate::el1::write_sysreg!($r, v)
            }
        }
    };
    ($(#[$m:meta])* $name:ident, $r:literal, $layout:ty, rw) => {
        $crate::el1::typed_sysreg!($(#[$m])* $name, $r, $layout, r);
        impl tock_registers::interfaces::Writeable for $name {
            type T = u64;
            type R = $layout;
            #[inline(always)]
            fn set(&self, v: u64) {
                $crate::el1::write_sysreg!($r, v)
            }
        }
    };
}

pub(crate) use {read_sysreg, typed_sysreg, write_sysreg};

/// Reads a feature-ID register of the group trapped by HCR_EL2.TID3 (op0 3, op1 0,
/// CRn 0, CRm 1..=7); encodings the architecture leaves unallocated read as zero.
pub fn read_id_register(crm: u8, op2: u8) -> u64 {
    macro_rules! ids {
        ($($crm:literal: [$($op2:literal)*]),*) => {
            match (crm, op2) {
                $($(
                    ($crm, $op2) => {
                        let v: u64;
                        // SAFETY: reading a feature-ID register only returns its value.
                        unsafe {
                            core::arch::asm!(concat!("mrs {}, S3_0_C0_C", $crm, "_", $op2), out(reg) v, options(nomem, nostack))
                        };
                        v
                    }
                )*)*
                _ => 0,
            }
        };
    }
    ids!(1: [0 1 2 3 4 5 6 7], 2: [0 1 2 3 4 5 6 7], 3: [0 1 2 3 4 5 6 7], 4: [0 1 2 3 4 5 6 7],
         5: [0 1 2 3 4 5 6 7], 6: [0 1 2 3 4 5 6 7], 7: [0 1 2 3 4 5 6 7])
}
