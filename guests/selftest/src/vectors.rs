//! The guest's EL1 exception vectors and its fault bookkeeping.
//!
//! Every vector saves x0..x30, ELR/SPSR, FPCR/FPSR and q0..q31 in a [`Frame`] on
//! the stack and calls `handle_exception`. A synchronous exception taken while a
//! check runs [`expect`] is recorded (ESR, FAR, ELR) and resumed per
//! [`resume_at`] (skip the instruction; return to x30 after an instruction abort
//! or when execution had left the image). Anything else is *unexpected*: it is counted, reported as
//! `FAIL unexpected-exception …` (the first [`REPORT_LIMIT`] of them) and
//! resumed the same way (IRQ/FIQ/SError return with that class masked). Past the
//! limit given to [`install`] the guest powers off instead of looping forever.

use crate::esr::{resume_at, Esr, Kind, Source, Vector};
use crate::global::Global;
use crate::{defs::sysreg as bits, outln, sysreg};

/// Size of [`Frame`] in bytes (a multiple of 16).
pub const FRAME_SIZE: usize = 800;
/// How many unexpected exceptions are printed before the rest are only counted.
pub const REPORT_LIMIT: u32 = 16;

/// Registers saved by the vector stub.
#[repr(C)]
pub struct Frame {
    /// x0..x29.
    pub x: [u64; 30],
    /// x30 (the link register).
    pub x30: u64,
    /// ELR_EL1: where `eret` resumes.
    pub elr: u64,
    /// SPSR_EL1: the PSTATE `eret` restores.
    pub spsr: u64,
    /// FPCR.
    pub fpcr: u64,
    /// FPSR.
    pub fpsr: u64,
    _pad: u64,
    /// q0..q31 as pairs of 64-bit halves.
    pub q: [u64; 64],
}

const _: () = assert!(core::mem::size_of::<Frame>() == FRAME_SIZE);

/// One synchronous exception the guest took.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trap {
    /// ESR_EL1.
    pub esr: Esr,
    /// FAR_EL1.
    pub far: u64,
    /// ELR_EL1 at the time it was taken.
    pub elr: u64,
}

/// What a check caught while it expected exceptions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caught {
    /// The first synchronous exception, if any.
    pub first: Option<Trap>,
    /// How many synchronous exceptions were taken.
    pub count: u32,
}

static EXPECTING: Global<bool> = Global::new(false);
static CAUGHT: Global<Caught> = Global::new(Caught {
    first: None,
    count: 0,
});
static UNEXPECTED: Global<u32> = Global::new(0);
static UNEXPECTED_LIMIT: Global<u32> = Global::new(u32::MAX);

core::arch::global_asm!(
    // The handler saves the FP/SIMD registers; the guest may be built soft-float
    // (the compose benchmark), where the assembler needs them named.
    ".arch_extension fp",
    ".arch_extension simd",
    ".pushsection .text.vectors, \"ax\"",
    ".balign 2048",
    ".global guest_vectors",
    "guest_vectors:",
    ".irp index, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15",
    "    .balign 0x80",
    "    sub sp, sp, #{frame}",
    "    stp x0, x1, [sp, #0]",
    "    mov x0, #\\index",
    "    b guest_exception_common",
    ".endr",
    "guest_exception_common:",
    "    stp x2, x3, [sp, #16]",
    "    stp x4, x5, [sp, #32]",
    "    stp x6, x7, [sp, #48]",
    "    stp x8, x9, [sp, #64]",
    "    stp x10, x11, [sp, #80]",
    "    stp x12, x13, [sp, #96]",
    "    stp x14, x15, [sp, #112]",
    "    stp x16, x17, [sp, #128]",
    "    stp x18, x19, [sp, #144]",
    "    stp x20, x21, [sp, #160]",
    "    stp x22, x23, [sp, #176]",
    "    stp x24, x25, [sp, #192]",
    "    stp x26, x27, [sp, #208]",
    "    stp x28, x29, [sp, #224]",
    "    mrs x2, elr_el1",
    "    stp x30, x2, [sp, #240]",
    "    mrs x2, spsr_el1",
    "    mrs x3, fpcr",
    "    stp x2, x3, [sp, #256]",
    "    mrs x2, fpsr",
    "    stp x2, xzr, [sp, #272]",
    "    stp q0, q1, [sp, #288]",
    "    stp q2, q3, [sp, #320]",
    "    stp q4, q5, [sp, #352]",
    "    stp q6, q7, [sp, #384]",
    "    stp q8, q9, [sp, #416]",
    "    stp q10, q11, [sp, #448]",
    "    stp q12, q13, [sp, #480]",
    "    stp q14, q15, [sp, #512]",
    "    stp q16, q17, [sp, #544]",
    "    stp q18, q19, [sp, #576]",
    "    stp q20, q21, [sp, #608]",
    "    stp q22, q23, [sp, #640]",
    "    stp q24, q25, [sp, #672]",
    "    stp q26, q27, [sp, #704]",
    "    stp q28, q29, [sp, #736]",
    "    stp q30, q31, [sp, #768]",
    "    mov x1, sp",
    "    bl {handler}",
    "    ldp q0, q1, [sp, #288]",
    "    ldp q2, q3, [sp, #320]",
    "    ldp q4, q5, [sp, #352]",
    "    ldp q6, q7, [sp, #384]",
    "    ldp q8, q9, [sp, #416]",
    "    ldp q10, q11, [sp, #448]",
    "    ldp q12, q13, [sp, #480]",
    "    ldp q14, q15, [sp, #512]",
    "    ldp q16, q17, [sp, #544]",
    "    ldp q18, q19, [sp, #576]",
    "    ldp q20, q21, [sp, #608]",
    "    ldp q22, q23, [sp, #640]",
    "    ldp q24, q25, [sp, #672]",
    "    ldp q26, q27, [sp, #704]",
    "    ldp q28, q29, [sp, #736]",
    "    ldp q30, q31, [sp, #768]",
    "    ldr x2, [sp, #272]",
    "    msr fpsr, x2",
    "    ldp x2, x3, [sp, #256]",
    "    msr spsr_el1, x2",
    "    msr fpcr, x3",
    "    ldp x30, x2, [sp, #240]",
    "    msr elr_el1, x2",
    "    ldp x2, x3, [sp, #16]",
    "    ldp x4, x5, [sp, #32]",
    "    ldp x6, x7, [sp, #48]",
    "    ldp x8, x9, [sp, #64]",
    "    ldp x10, x11, [sp, #80]",
    "    ldp x12, x13, [sp, #96]",
    "    ldp x14, x15, [sp, #112]",
    "    ldp x16, x17, [sp, #128]",
    "    ldp x18, x19, [sp, #144]",
    "    ldp x20, x21, [sp, #160]",
    "    ldp x22, x23, [sp, #176]",
    "    ldp x24, x25, [sp, #192]",
    "    ldp x26, x27, [sp, #208]",
    "    ldp x28, x29, [sp, #224]",
    "    ldp x0, x1, [sp, #0]",
    "    add sp, sp, #{frame}",
    "    eret",
    ".popsection",
    frame = const FRAME_SIZE,
    handler = sym handle_exception,
);

extern "C" {
    /// The vector table (2 KiB aligned).
    static guest_vectors: [u8; 2048];
    /// Start of the image (and of its code), from the linker script.
    static __image_start: u8;
    /// End of the image's code, from the linker script.
    static __text_end: u8;
}

/// The guest's own code.
fn text_range() -> core::ops::Range<u64> {
    core::ptr::addr_of!(__image_start) as u64..core::ptr::addr_of!(__text_end) as u64
}

/// Installs the vector table, then unmasks SError. After `limit` unexpected
/// exceptions the guest reports it and powers off.
pub fn install(limit: u32) {
    UNEXPECTED_LIMIT.set(limit);
    let base = core::ptr::addr_of!(guest_vectors) as u64;
    sysreg::vbar_el1(base);
    sysreg::isb();
    sysreg::unmask_serror();
}

/// Runs `f` expecting it to take synchronous exceptions; returns its result and
/// what was caught. Exceptions during `f` are not counted as unexpected.
pub fn expect<R>(f: impl FnOnce() -> R) -> (R, Caught) {
    CAUGHT.set(Caught::default());
    EXPECTING.set(true);
    let r = f();
    EXPECTING.set(false);
    (r, CAUGHT.get())
}

/// Unexpected exceptions taken so far.
pub fn unexpected_count() -> u32 {
    UNEXPECTED.get()
}

/// Called by the vector stub with the entry index and the saved registers.
extern "C" fn handle_exception(index: u64, frame: *mut Frame) {
    // SAFETY: the stub passes the frame it just built on the stack; it stays
    // valid and unaliased until this function returns.
    let frame = unsafe { &mut *frame };
    let esr = Esr(sysreg::esr_el1());
    let far = sysreg::far_el1();
    let vector = Vector::from_index(index);
    let sync = matches!(
        vector,
        Some(Vector {
            kind: Kind::Sync,
            ..
        })
    );
    if sync && vector.map(|v| v.source) == Some(Source::CurrentSpx) && EXPECTING.get() {
        let mut caught = CAUGHT.get();
        if caught.first.is_none() {
            caught.first = Some(Trap {
                esr,
                far,
                elr: frame.elr,
            });
        }
        caught.count = caught.count.saturating_add(1);
        CAUGHT.set(caught);
        frame.elr = resume_at(esr, frame.elr, frame.x30, text_range());
        return;
    }

    let n = UNEXPECTED.get().saturating_add(1);
    UNEXPECTED.set(n);
    let name = vector.map_or("invalid", |v| v.kind_name());
    if n <= REPORT_LIMIT {
        outln!(
            "FAIL unexpected-exception: {name} vector {index} esr={:#x} (ec={:#x}) far={:#x} elr={:#x}",
            esr.0,
            esr.ec(),
            far,
            frame.elr
        );
    } else if n == REPORT_LIMIT + 1 {
        outln!(
            "FAIL unexpected-exception: more than {REPORT_LIMIT}; further ones are only counted"
        );
    }
    if n >= UNEXPECTED_LIMIT.get() {
        outln!("FAIL too-many-exceptions: {n} unexpected exceptions, powering off");
        crate::power::system_off();
    }
    match vector.map(|v| v.kind) {
        Some(Kind::Sync) => frame.elr = resume_at(esr, frame.elr, frame.x30, text_range()),
        Some(Kind::Irq) => frame.spsr |= bits::SPSR_I,
        Some(Kind::Fiq) => frame.spsr |= bits::SPSR_F,
        Some(Kind::SError) | None => frame.spsr |= bits::SPSR_A,
    }
}
