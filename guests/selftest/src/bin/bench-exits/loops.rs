//! The measured loops, in assembly so that they differ in exactly one
//! instruction: each iteration is `mov x0, #SMCCC_VERSION`, the variant
//! instruction, `subs` and `b.ne`; the counter is read (after an `isb`) right
//! before and right after the loop.

use selftest_guest::defs::map::PL011_BASE;
use selftest_guest::defs::pl011;
use selftest_guest::defs::smccc::SMCCC_VERSION;

/// The loop variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loop {
    /// `nop`: the baseline.
    Empty,
    /// `hvc #0` with x0 = SMCCC_VERSION: one hypercall exit.
    Hvc,
    /// `ldr w1, [PL011 FR]`: one MMIO exit.
    Mmio,
}

impl Loop {
    /// All variants, in output order.
    pub const ALL: [Loop; 3] = [Loop::Empty, Loop::Hvc, Loop::Mmio];

    /// The name used in messages.
    pub fn name(self) -> &'static str {
        match self {
            Loop::Empty => "empty",
            Loop::Hvc => "hvc",
            Loop::Mmio => "mmio",
        }
    }
}

macro_rules! counted_loop {
    ($variant:literal, $iterations:expr) => {{
        let (start, end): (u64, u64);
        // SAFETY: the loop reads PMEVCNTR0_EL0 and, depending on the variant,
        // makes SMCCC_VERSION calls or reads PL011 FR (no memory the program owns
        // is touched). Its state lives in x20..x22, which SMCCC calls preserve;
        // x0..x17 and x30 are declared clobbered.
        unsafe {
            core::arch::asm!(
                "isb",
                "mrs x21, pmevcntr0_el0",
                "2:  mov x0, #{fid}",
                concat!("    ", $variant),
                "    subs x20, x20, #1",
                "    b.ne 2b",
                "isb",
                "mrs x23, pmevcntr0_el0",
                fid = const SMCCC_VERSION,
                out("x23") end,
                inout("x20") $iterations => _,
                out("x21") start,
                in("x22") PL011_BASE + pl011::FR,
                clobber_abi("C"),
            )
        };
        (start, end)
    }};
}

/// Instructions retired by `iterations` iterations of loop `which` (counted from
/// the counter reset to the read after the loop is the same for all variants).
pub fn count(which: Loop, iterations: u64) -> u64 {
    let iterations = iterations.max(1);
    let (start, end) = match which {
        Loop::Empty => counted_loop!("nop", iterations),
        Loop::Hvc => counted_loop!("hvc #0", iterations),
        Loop::Mmio => counted_loop!("ldr w1, [x22]", iterations),
    };
    // PMEVCNTR0 may be only 32 bits wide (PMCR_EL0.LP clear); totals stay far below 2^32.
    u64::from((end as u32).wrapping_sub(start as u32))
}
