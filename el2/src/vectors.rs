//! The EL2 exception vector table and the world switch.
//!
//! A guest runs between `__guest_enter` and the next exception taken from a lower EL.
//! [`guest_enter`] calls `__guest_enter(regs)` from inline assembly that declares
//! every general-purpose register but x19, x29 and SP clobbered; `__guest_enter`
//! saves those two on its own stack, loads the guest's general-purpose registers,
//! ELR_EL2 and SPSR_EL2 from `regs`, and ERETs. A lower-EL exception saves the
//! guest's registers back into `regs` (found through TPIDR_EL2), restores x19/x29
//! and returns from `__guest_enter` with the [`ExitKind`] in x0. Everything else of the guest's
//! EL1 state stays live in the hardware: the hypervisor (built soft-float) never
//! touches FP/SIMD or EL1 system registers on this path.
//!
//! Exceptions taken at EL2 itself are hypervisor faults: they switch to the CPU's
//! emergency stack ([`crate::stacks`]), save a [`TrapFrame`] and call
//! [`crate::fault::el2_exception`], which never returns.

use core::arch::global_asm;

/// The kind of lower-EL exception that ended a guest run, as `__guest_enter`
/// returns it. The vector table's `mov` immediates are these discriminants, passed
/// to the assembly as `const` operands.
#[repr(u64)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Sync = 0,
    Irq = 1,
    Fiq = 2,
    SError = 3,
}

impl ExitKind {
    /// The kind `__guest_enter` returned as `raw`; `None` for a value the world
    /// switch never produces.
    #[inline(always)]
    pub fn from_raw(raw: u64) -> Option<Self> {
        [Self::Sync, Self::Irq, Self::Fiq, Self::SError]
            .into_iter()
            .find(|k| *k as u64 == raw)
    }
}

/// A guest's general-purpose state as the world switch saves it. The layout is
/// shared with the assembly below, which takes every offset from [`x_off`] and
/// `offset_of!` as `const` operands.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct GuestRegs {
    pub x: [u64; 31],
    /// ELR_EL2: where the guest resumes.
    pub pc: u64,
    /// SPSR_EL2: the guest's PSTATE.
    pub pstate: u64,
}

/// Offset of general-purpose register `n` in [`GuestRegs`].
const fn x_off(n: usize) -> usize {
    assert!(n < 31);
    core::mem::offset_of!(GuestRegs, x) + n * core::mem::size_of::<u64>()
}

/// Offset of ELR_EL2 / SPSR_EL2 (loaded and stored as one pair).
const PC_OFF: usize = core::mem::offset_of!(GuestRegs, pc);
const PSTATE_OFF: usize = core::mem::offset_of!(GuestRegs, pstate);

// The contract the assembly relies on, for every slot: registers are 8-byte slots
// in order, x30 sits alone before the (pc, pstate) pair, every pair is adjacent,
// and every offset fits the scaled 7-bit immediate of `ldp`/`stp` (multiples of 8
// up to 504).
const _: () = {
    let mut n = 0;
    while n < 31 {
        assert!(x_off(n) == n * 8);
        assert!(x_off(n) <= 504);
        n += 1;
    }
    assert!(PC_OFF == x_off(30) + 8);
    assert!(PSTATE_OFF == PC_OFF + 8);
    assert!(PSTATE_OFF <= 504);
    assert!(core::mem::size_of::<GuestRegs>() == PSTATE_OFF + 8);
};

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

// The fault path stores a `TrapFrame` with literal slot numbers (n * 8): x0..x30,
// then ELR/SPSR, ESR/FAR as pairs, then SP, in a 36-slot frame.
const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(offset_of!(TrapFrame, x) == 0);
    assert!(offset_of!(TrapFrame, elr) == 31 * 8 && offset_of!(TrapFrame, spsr) == 32 * 8);
    assert!(offset_of!(TrapFrame, esr) == 33 * 8 && offset_of!(TrapFrame, far) == 34 * 8);
    assert!(offset_of!(TrapFrame, sp) == 35 * 8 && size_of::<TrapFrame>() == 36 * 8);
};

/// Runs the guest whose registers are at `regs` until its next exception and
/// returns the [`ExitKind`] of that exception (as its discriminant).
///
/// The call is inline assembly declaring every register the world switch does not
/// keep (all of the C ABI's caller-saved ones and x20..x28) clobbered: the
/// compiler keeps only what it needs across the guest run, and `__guest_enter`
/// saves just the two it may not be told about (x19, x29).
///
/// # Safety
/// `regs` must be valid for reads and writes for the whole call, and the EL2
/// controls (stage 2, traps, vector table) must be set up for the guest.
#[inline(always)]
pub unsafe fn guest_enter(regs: *mut GuestRegs) -> u64 {
    let kind: u64;
    // SAFETY: the caller vouches for `regs` and the EL2 state. `__guest_enter`
    // returns normally with SP, x19 and x29 as they were and the kind in x0;
    // every other register it changes is declared clobbered here.
    unsafe {
        core::arch::asm!(
            "bl __guest_enter",
            inout("x0") regs => kind,
            lateout("x20") _, lateout("x21") _, lateout("x22") _, lateout("x23") _,
            lateout("x24") _, lateout("x25") _, lateout("x26") _, lateout("x27") _,
            lateout("x28") _,
            clobber_abi("C"),
        )
    };
    kind
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
    mov     x0, #\kind
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
    LOWER_EL_EXIT {sync}
    LOWER_EL_EXIT {irq}
    LOWER_EL_EXIT {fiq}
    LOWER_EL_EXIT {serror}
    // Lower EL using AArch32 (EL0 compat tasks of a guest).
    LOWER_EL_EXIT {sync}
    LOWER_EL_EXIT {irq}
    LOWER_EL_EXIT {fiq}
    LOWER_EL_EXIT {serror}

    .text
    .global __guest_enter
__guest_enter:
    // x19 and x29 (and the return address) are the caller's; everything else is
    // declared clobbered by `guest_enter`.
    stp     x29, x30, [sp, #-32]!
    str     x19, [sp, #16]
    msr     TPIDR_EL2, x0
    ldp     x1, x2, [x0, #{pc}]
    msr     ELR_EL2, x1
    msr     SPSR_EL2, x2
    ldp     x2, x3, [x0, #{x2}]
    ldp     x4, x5, [x0, #{x4}]
    ldp     x6, x7, [x0, #{x6}]
    ldp     x8, x9, [x0, #{x8}]
    ldp     x10, x11, [x0, #{x10}]
    ldp     x12, x13, [x0, #{x12}]
    ldp     x14, x15, [x0, #{x14}]
    ldp     x16, x17, [x0, #{x16}]
    ldp     x18, x19, [x0, #{x18}]
    ldp     x20, x21, [x0, #{x20}]
    ldp     x22, x23, [x0, #{x22}]
    ldp     x24, x25, [x0, #{x24}]
    ldp     x26, x27, [x0, #{x26}]
    ldp     x28, x29, [x0, #{x28}]
    ldr     x30, [x0, #{x30}]
    ldp     x0, x1, [x0, #{x0}]
    eret
    dsb     nsh
    isb

guest_exit_common:
    // Guest x0/x1 are on the stack; x0 holds the exit kind, the return value.
    mrs     x1, TPIDR_EL2
    stp     x2, x3, [x1, #{x2}]
    stp     x4, x5, [x1, #{x4}]
    stp     x6, x7, [x1, #{x6}]
    stp     x8, x9, [x1, #{x8}]
    stp     x10, x11, [x1, #{x10}]
    stp     x12, x13, [x1, #{x12}]
    stp     x14, x15, [x1, #{x14}]
    stp     x16, x17, [x1, #{x16}]
    stp     x18, x19, [x1, #{x18}]
    stp     x20, x21, [x1, #{x20}]
    stp     x22, x23, [x1, #{x22}]
    stp     x24, x25, [x1, #{x24}]
    stp     x26, x27, [x1, #{x26}]
    stp     x28, x29, [x1, #{x28}]
    str     x30, [x1, #{x30}]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x1, #{x0}]
    mrs     x2, ELR_EL2
    mrs     x3, SPSR_EL2
    stp     x2, x3, [x1, #{pc}]
    ldr     x19, [sp, #16]
    ldp     x29, x30, [sp], #32
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
    sync = const ExitKind::Sync as u64,
    irq = const ExitKind::Irq as u64,
    fiq = const ExitKind::Fiq as u64,
    serror = const ExitKind::SError as u64,
    pc = const PC_OFF,
    x0 = const x_off(0),
    x2 = const x_off(2),
    x4 = const x_off(4),
    x6 = const x_off(6),
    x8 = const x_off(8),
    x10 = const x_off(10),
    x12 = const x_off(12),
    x14 = const x_off(14),
    x16 = const x_off(16),
    x18 = const x_off(18),
    x20 = const x_off(20),
    x22 = const x_off(22),
    x24 = const x_off(24),
    x26 = const x_off(26),
    x28 = const x_off(28),
    x30 = const x_off(30),
);
