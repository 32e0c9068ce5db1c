//! Single-instruction memory probes: each function executes exactly one load,
//! store or branch of a known form (`ldr x`, `ldr w`, `ldrb`, `ldrsb`, `ldp`,
//! `str w`, `blr`) at an arbitrary address. They may fault; the vectors then
//! skip the instruction (or return from the `blr`), so a load that faulted leaves
//! [`SENTINEL`] as its result.

/// The result of a load that did not complete.
pub const SENTINEL: u64 = 0x5e17_e57d_dead_beef;

macro_rules! load_fn {
    ($(#[$doc:meta])* $name:ident, $insn:literal) => {
        $(#[$doc])*
        #[inline(never)]
        pub fn $name(addr: u64) -> u64 {
            let mut value = SENTINEL;
            // SAFETY: one load from `addr`, which may be MMIO or unmapped: the
            // guest's vectors handle the abort and skip the instruction. The
            // loaded value is not Rust-visible memory; no Rust object is at `addr`.
            unsafe { core::arch::asm!($insn, v = inout(reg) value, a = in(reg) addr) };
            value
        }
    };
}

load_fn!(
    /// `ldr x`: a 64-bit load.
    load64, "ldr {v}, [{a}]"
);
load_fn!(
    /// `ldr w`: a 32-bit load, zero-extended.
    load32, "ldr {v:w}, [{a}]"
);
load_fn!(
    /// `ldrb w`: an 8-bit load, zero-extended.
    load8, "ldrb {v:w}, [{a}]"
);
load_fn!(
    /// `ldrsb x`: an 8-bit load sign-extended to 64 bits.
    load8_sext64, "ldrsb {v}, [{a}]"
);
load_fn!(
    /// `ldrsb w`: an 8-bit load sign-extended to 32 bits (upper half zero).
    load8_sext32, "ldrsb {v:w}, [{a}]"
);

/// `ldp w, w`: a pair of 32-bit loads (no valid syndrome for the hypervisor).
#[inline(never)]
pub fn load_pair32(addr: u64) -> (u64, u64) {
    let (mut a, mut b) = (SENTINEL, SENTINEL);
    // SAFETY: as for the single loads: one `ldp` from `addr`, whose abort the
    // vectors handle by skipping it.
    unsafe {
        core::arch::asm!("ldp {a:w}, {b:w}, [{p}]", a = inout(reg) a, b = inout(reg) b, p = in(reg) addr)
    };
    (a, b)
}

/// `str w`: a 32-bit store.
#[inline(never)]
pub fn store32(addr: u64, value: u32) {
    // SAFETY: one store to `addr`, which the callers only point at MMIO, at
    // unmapped IPAs or at guest RAM outside the image; no Rust object lives there.
    unsafe { core::arch::asm!("str {v:w}, [{a}]", v = in(reg) value, a = in(reg) addr) };
}

/// `blr` to `target`, which is expected to abort on instruction fetch; the
/// vectors then resume at the return address. Returns whether the instruction
/// after the `blr` ran.
#[inline(never)]
pub fn call_address(target: u64) -> bool {
    let mut came_back: u64 = 0;
    // SAFETY: branches to `target`; the callers pass only addresses where an
    // instruction fetch aborts, and the abort handler returns to x30 (right after
    // the `blr`). All caller-saved registers are declared clobbered in case code
    // did run there.
    unsafe {
        core::arch::asm!(
            "blr {t}",
            "mov x20, #1",
            t = in(reg) target,
            inout("x20") came_back,
            clobber_abi("C"),
        )
    };
    came_back == 1
}
