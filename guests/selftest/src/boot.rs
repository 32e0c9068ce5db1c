//! The guest entry point `_start` (first byte of the image, IPA 0x4008_0000):
//! enables FP/SIMD, sets SCTLR_EL1 to a known MMU-off state, takes its stack from
//! the image, zeroes the BSS and calls `guest_main`, which each guest binary
//! defines as `#[no_mangle] extern "C" fn guest_main() -> !`.
//!
//! The image carries [`IMAGE_MARKER`](crate::defs::map::IMAGE_MARKER) at offset 56,
//! where an arm64 `Image` has its magic, so the self-test can tell its own image
//! from the hypervisor's. Also here: the park loop handed to PSCI CPU_ON in
//! checks that must fail, and the panic handler.

use crate::defs::{map, sysreg};

core::arch::global_asm!(
    ".pushsection .text.head, \"ax\"",
    ".global _start",
    "_start:",
    "    b 1f",
    ".org {marker_offset}",
    ".word {marker}",
    "1:",
    // FP/SIMD on before any Rust code runs: the compiler may use the vector registers.
    "    mov x1, #{cpacr}",
    "    msr cpacr_el1, x1",
    "    movz x1, #{sctlr_lo}",
    "    movk x1, #{sctlr_hi}, lsl #16",
    "    msr sctlr_el1, x1",
    "    isb",
    "    adrp x1, __stack_top",
    "    add x1, x1, :lo12:__stack_top",
    "    mov sp, x1",
    "    adrp x1, __bss_start",
    "    add x1, x1, :lo12:__bss_start",
    "    adrp x2, __bss_end",
    "    add x2, x2, :lo12:__bss_end",
    "2:  cmp x1, x2",
    "    b.hs 3f",
    "    stp xzr, xzr, [x1], #16",
    "    b 2b",
    "3:  mov x0, xzr",
    "    bl guest_main",
    "4:  wfe",
    "    b 4b",
    "",
    ".global guest_secondary_park",
    "guest_secondary_park:",
    "    wfe",
    "    b guest_secondary_park",
    ".popsection",
    marker_offset = const map::IMAGE_MARKER_OFFSET,
    marker = const map::IMAGE_MARKER,
    cpacr = const sysreg::CPACR_FPEN_ALL,
    sctlr_lo = const sysreg::SCTLR_EL1_INIT_LO,
    sctlr_hi = const sysreg::SCTLR_EL1_INIT_HI,
);

extern "C" {
    /// Spins in `wfe` forever; a harmless entry point for CPU_ON calls that must fail.
    fn guest_secondary_park();
}

/// The address of the park loop (a valid entry point for PSCI CPU_ON).
pub fn secondary_park_address() -> u64 {
    guest_secondary_park as *const () as u64
}

/// Reports the panic as a failure and powers the VM off.
#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    crate::outln!("FAIL panic: {info}");
    crate::power::system_off()
}
