//! The EL2 exception vector table and the world switch.
//!
//! A guest runs between `__guest_enter` and the next exception taken from a lower EL.
//! `__guest_enter(regs)` saves the hypervisor's callee-saved registers on its own stack,
//! loads the guest's general-purpose registers, ELR_EL2 and SPSR_EL2 from `regs`, and
//! ERETs. A lower-EL exception saves the guest's registers back into `regs` (found
//! through TPIDR_EL2), restores the callee-saved registers and returns from
//! `__guest_enter` with the kind of exception in x0. Everything else of the guest's
//! EL1 state stays live in the hardware: the hypervisor (built soft-float) never
//! touches FP/SIMD or EL1 system registers on this path.
//!
//! Exceptions taken at EL2 itself are hypervisor faults: they switch to the CPU's
//! emergency stack ([`crate::stacks`]), save a [`TrapFrame`] and call
//! [`crate::fault::el2_exception`], which never returns.

use core::arch::global_asm;

/// Kinds of lower-EL exception, as returned by `__guest_enter`.
pub mod kind {
    pub const SYNC: u64 = 0;
    pub const IRQ: u64 = 1;
    pub const FIQ: u64 = 2;
    pub const SERROR: u64 = 3;
}

/// A guest's general-purpose state as the world switch saves it. The layout is
/// shared with the assembly below.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GuestRegs {
    pub x: [u64; 31],
    /// ELR_EL2: where the guest resumes.
    pub pc: u64,
    /// SPSR_EL2: the guest's PSTATE.
    pub pstate: u64,
}

const _: () = assert!(core::mem::offset_of!(GuestRegs, pc) == 248);
const _: () = assert!(core::mem::offset_of!(GuestRegs, pstate) == 256);

/// The registers of a fault taken at EL2.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct TrapFrame {
    pub x: [u64; 31],
    pub elr: u64,
    pub spsr: u64,
    pub esr: u64,
    pub far: u64,
    pub sp: u64,
}

extern "C" {
    /// Runs the guest whose registers are at `regs` until its next exception and
    /// returns the [`kind`] of that exception.
    pub fn __guest_enter(regs: *mut GuestRegs) -> u64;
}

global_asm!(
    r#"
.macro CURRENT_EL_FAULT kind
    .balign 0x80
    // A fault at EL2 is fatal: report it from this CPU's emergency stack, because
    // the stack in SP may be the cause (an overflow into its guard page would fault
    // again on every push). The slot holding SP is found by aligning SP down to the
    // slot size (stacks.rs); x0 waits in TPIDR_EL2, whose guest-register pointer
    // is not needed again.
    msr     TPIDR_EL2, x0
    mov     x0, sp
    and     sp, x0, #~({slot} - 1)
    add     sp, sp, #{emergency_top}
    sub     sp, sp, #(36 * 8)
    str     x0, [sp, #(35 * 8)]
    mrs     x0, TPIDR_EL2
    stp     x0, x1, [sp, #(0 * 8)]
    mov     x0, #\kind
    b       el2_fault_common
.endm

.macro LOWER_EL_EXIT kind
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mov     x1, #\kind
    b       guest_exit_common
.endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global el2_vectors
el2_vectors:
    // Current EL with SP_EL0 (never used by the hypervisor).
    CURRENT_EL_FAULT 0
    CURRENT_EL_FAULT 1
    CURRENT_EL_FAULT 2
    CURRENT_EL_FAULT 3
    // Current EL with SP_ELx.
    CURRENT_EL_FAULT 0
    CURRENT_EL_FAULT 1
    CURRENT_EL_FAULT 2
    CURRENT_EL_FAULT 3
    // Lower EL using AArch64.
    LOWER_EL_EXIT 0
    LOWER_EL_EXIT 1
    LOWER_EL_EXIT 2
    LOWER_EL_EXIT 3
    // Lower EL using AArch32 (EL0 compat tasks of a guest).
    LOWER_EL_EXIT 0
    LOWER_EL_EXIT 1
    LOWER_EL_EXIT 2
    LOWER_EL_EXIT 3

    .text
    .global __guest_enter
__guest_enter:
    stp     x29, x30, [sp, #-96]!
    stp     x19, x20, [sp, #16]
    stp     x21, x22, [sp, #32]
    stp     x23, x24, [sp, #48]
    stp     x25, x26, [sp, #64]
    stp     x27, x28, [sp, #80]
    msr     TPIDR_EL2, x0
    ldp     x1, x2, [x0, #248]
    msr     ELR_EL2, x1
    msr     SPSR_EL2, x2
    ldp     x2, x3, [x0, #16]
    ldp     x4, x5, [x0, #32]
    ldp     x6, x7, [x0, #48]
    ldp     x8, x9, [x0, #64]
    ldp     x10, x11, [x0, #80]
    ldp     x12, x13, [x0, #96]
    ldp     x14, x15, [x0, #112]
    ldp     x16, x17, [x0, #128]
    ldp     x18, x19, [x0, #144]
    ldp     x20, x21, [x0, #160]
    ldp     x22, x23, [x0, #176]
    ldp     x24, x25, [x0, #192]
    ldp     x26, x27, [x0, #208]
    ldp     x28, x29, [x0, #224]
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0, #0]
    eret
    dsb     nsh
    isb

guest_exit_common:
    // Guest x0/x1 are on the stack; x1 holds the exit kind.
    mrs     x0, TPIDR_EL2
    stp     x2, x3, [x0, #16]
    stp     x4, x5, [x0, #32]
    stp     x6, x7, [x0, #48]
    stp     x8, x9, [x0, #64]
    stp     x10, x11, [x0, #80]
    stp     x12, x13, [x0, #96]
    stp     x14, x15, [x0, #112]
    stp     x16, x17, [x0, #128]
    stp     x18, x19, [x0, #144]
    stp     x20, x21, [x0, #160]
    stp     x22, x23, [x0, #176]
    stp     x24, x25, [x0, #192]
    stp     x26, x27, [x0, #208]
    stp     x28, x29, [x0, #224]
    str     x30, [x0, #240]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x0, #0]
    mrs     x2, ELR_EL2
    mrs     x3, SPSR_EL2
    stp     x2, x3, [x0, #248]
    mov     x0, x1
    ldp     x19, x20, [sp, #16]
    ldp     x21, x22, [sp, #32]
    ldp     x23, x24, [sp, #48]
    ldp     x25, x26, [sp, #64]
    ldp     x27, x28, [sp, #80]
    ldp     x29, x30, [sp], #96
    ret

el2_fault_common:
    // x0 = vector kind; original x0/x1 saved at [sp], the faulting SP at [sp, #280].
    stp     x2, x3, [sp, #(2 * 8)]
    stp     x4, x5, [sp, #(4 * 8)]
    stp     x6, x7, [sp, #(6 * 8)]
    stp     x8, x9, [sp, #(8 * 8)]
    stp     x10, x11, [sp, #(10 * 8)]
    stp     x12, x13, [sp, #(12 * 8)]
    stp     x14, x15, [sp, #(14 * 8)]
    stp     x16, x17, [sp, #(16 * 8)]
    stp     x18, x19, [sp, #(18 * 8)]
    stp     x20, x21, [sp, #(20 * 8)]
    stp     x22, x23, [sp, #(22 * 8)]
    stp     x24, x25, [sp, #(24 * 8)]
    stp     x26, x27, [sp, #(26 * 8)]
    stp     x28, x29, [sp, #(28 * 8)]
    str     x30, [sp, #(30 * 8)]
    mrs     x1, ELR_EL2
    mrs     x2, SPSR_EL2
    stp     x1, x2, [sp, #(31 * 8)]
    mrs     x1, ESR_EL2
    mrs     x2, FAR_EL2
    stp     x1, x2, [sp, #(33 * 8)]
    mov     x1, x0
    mov     x0, sp
    bl      el2_exception
1:  wfe
    b       1b
"#,
    slot = const crate::stacks::SLOT,
    emergency_top = const crate::stacks::EMERGENCY_TOP,
);
