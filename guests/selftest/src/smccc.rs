//! SMCCC calls from the guest: [`call`] (x0..x3 in, x0..x3 out, through `hvc #0`
//! or `smc #0`), [`hvc_snapshot`] (one HVC with x1..x30 set and all of x0..x30
//! captured afterwards) and the result decoding [`ret`].

use crate::defs::smccc::FID_SMC64;

/// Which instruction carries the call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conduit {
    /// `hvc #0`.
    Hvc,
    /// `smc #0` (the hypervisor traps it and answers the same way).
    Smc,
}

impl Conduit {
    /// The mnemonic, for messages.
    pub fn name(self) -> &'static str {
        match self {
            Conduit::Hvc => "hvc",
            Conduit::Smc => "smc",
        }
    }
}

/// Calls function `fid` with arguments x1..x3; returns x0..x3. Registers x4..x17
/// are treated as clobbered (SMCCC 1.0 allows it).
pub fn call(conduit: Conduit, fid: u32, args: [u64; 3]) -> [u64; 4] {
    let (mut x0, mut x1, mut x2, mut x3) = (u64::from(fid), args[0], args[1], args[2]);
    macro_rules! invoke {
        ($insn:literal) => {
            // SAFETY: an SMCCC call; the callee may only change x0..x17 (declared)
            // and must preserve the stack pointer and x18..x30. Whatever it does to
            // guest memory is the hypervisor's contract, hence no `nomem`.
            unsafe {
                core::arch::asm!(
                    $insn,
                    inout("x0") x0, inout("x1") x1, inout("x2") x2, inout("x3") x3,
                    out("x4") _, out("x5") _, out("x6") _, out("x7") _,
                    out("x8") _, out("x9") _, out("x10") _, out("x11") _,
                    out("x12") _, out("x13") _, out("x14") _, out("x15") _,
                    out("x16") _, out("x17") _,
                )
            }
        };
    }
    match conduit {
        Conduit::Hvc => invoke!("hvc #0"),
        Conduit::Smc => invoke!("smc #0"),
    }
    [x0, x1, x2, x3]
}

/// The signed return code of function `fid` from its x0: SMC32/HVC32 functions
/// return a 32-bit value in w0 (the upper half of x0 is not theirs to define).
pub fn ret(fid: u32, x0: u64) -> i64 {
    if fid & FID_SMC64 != 0 {
        x0 as i64
    } else {
        i64::from(x0 as u32 as i32)
    }
}

/// Performs one `hvc #0` with x0..x30 loaded from `regs` (x0 is the function ID)
/// and returns x0..x30 as they were right after the call. x18..x30 are saved and
/// restored around it inside the assembly, so the compiler's registers survive
/// even if the hypervisor breaks the SMCCC.
pub fn hvc_snapshot(regs: &[u64; 31]) -> [u64; 31] {
    let mut out = [0u64; 31];
    // SAFETY: the block saves x18..x30 in its own 384-byte stack area (keeping sp
    // 16-byte aligned) and restores them before it ends; x0..x17 are declared
    // clobbered. It reads 31 words from `regs` and writes 31 words to `out`, both
    // valid for those sizes.
    unsafe {
        core::arch::asm!(
            "sub sp, sp, #384",
            "stp x18, x19, [sp, #0]",
            "stp x20, x21, [sp, #16]",
            "stp x22, x23, [sp, #32]",
            "stp x24, x25, [sp, #48]",
            "stp x26, x27, [sp, #64]",
            "stp x28, x29, [sp, #80]",
            "stp x30, x1, [sp, #96]",
            "ldp x2, x3, [x0, #16]",
            "ldp x4, x5, [x0, #32]",
            "ldp x6, x7, [x0, #48]",
            "ldp x8, x9, [x0, #64]",
            "ldp x10, x11, [x0, #80]",
            "ldp x12, x13, [x0, #96]",
            "ldp x14, x15, [x0, #112]",
            "ldp x16, x17, [x0, #128]",
            "ldp x18, x19, [x0, #144]",
            "ldp x20, x21, [x0, #160]",
            "ldp x22, x23, [x0, #176]",
            "ldp x24, x25, [x0, #192]",
            "ldp x26, x27, [x0, #208]",
            "ldp x28, x29, [x0, #224]",
            "ldr x30, [x0, #240]",
            "ldr x1, [x0, #8]",
            "ldr x0, [x0]",
            "hvc #0",
            "stp x0, x1, [sp, #128]",
            "stp x2, x3, [sp, #144]",
            "stp x4, x5, [sp, #160]",
            "stp x6, x7, [sp, #176]",
            "stp x8, x9, [sp, #192]",
            "stp x10, x11, [sp, #208]",
            "stp x12, x13, [sp, #224]",
            "stp x14, x15, [sp, #240]",
            "stp x16, x17, [sp, #256]",
            "stp x18, x19, [sp, #272]",
            "stp x20, x21, [sp, #288]",
            "stp x22, x23, [sp, #304]",
            "stp x24, x25, [sp, #320]",
            "stp x26, x27, [sp, #336]",
            "stp x28, x29, [sp, #352]",
            "str x30, [sp, #368]",
            "ldr x1, [sp, #104]",
            "add x2, sp, #128",
            "mov x3, #31",
            "5:  ldr x4, [x2], #8",
            "    str x4, [x1], #8",
            "    subs x3, x3, #1",
            "    b.ne 5b",
            "ldp x18, x19, [sp, #0]",
            "ldp x20, x21, [sp, #16]",
            "ldp x22, x23, [sp, #32]",
            "ldp x24, x25, [sp, #48]",
            "ldp x26, x27, [sp, #64]",
            "ldp x28, x29, [sp, #80]",
            "ldr x30, [sp, #96]",
            "add sp, sp, #384",
            inout("x0") regs.as_ptr() => _,
            inout("x1") out.as_mut_ptr() => _,
            out("x2") _, out("x3") _, out("x4") _, out("x5") _, out("x6") _, out("x7") _,
            out("x8") _, out("x9") _, out("x10") _, out("x11") _, out("x12") _, out("x13") _,
            out("x14") _, out("x15") _, out("x16") _, out("x17") _,
        );
    }
    out
}
