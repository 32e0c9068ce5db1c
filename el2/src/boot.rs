//! The first instructions: the arm64 Image header (so QEMU's `-kernel` and other
//! Linux-style loaders place us and pass the DTB in x0), the exception-level check,
//! BSS clearing, the boot stack and the jump into Rust; and the entry point of
//! secondary physical CPUs.

use core::arch::global_asm;

global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    b       primary_entry           // code0
    .long   0                       // code1
    .quad   0x80000                 // text_offset
    .quad   __image_size            // image_size (includes BSS and stacks)
    .quad   0x2                     // flags: little-endian, 4 KiB pages
    .quad   0, 0, 0                 // res2-res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5

primary_entry:
    mov     x19, x0                 // DTB physical address
    // Boot CPU stack: the top of the first per-CPU stack slot.
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    ldr     x2, =__stack_slot
    add     sp, x1, x2
    // Clear BSS.
    adrp    x1, __bss_start
    add     x1, x1, :lo12:__bss_start
    adrp    x2, __bss_end
    add     x2, x2, :lo12:__bss_end
1:  cmp     x1, x2
    b.hs    2f
    stp     xzr, xzr, [x1], #16
    b       1b
2:  mrs     x1, CurrentEL
    lsr     x1, x1, #2
    mov     x0, x19
    cmp     x1, #2
    b.ne    3f
    adrp    x2, el2_vectors
    add     x2, x2, :lo12:el2_vectors
    msr     VBAR_EL2, x2
    isb
    bl      rust_main
3:  // Entered at another exception level: report it and power off.
    bl      wrong_exception_level
4:  wfe
    b       4b

    // A physical CPU started by PSCI CPU_ON with its job in x0 (smp::Job): the
    // low byte is its stack slot.
    .global secondary_entry
secondary_entry:
    mov     x19, x0
    adrp    x1, __stacks_start
    add     x1, x1, :lo12:__stacks_start
    ldr     x2, =__stack_slot
    and     x3, x0, #0xff
    add     x3, x3, #1
    mul     x2, x2, x3
    add     sp, x1, x2
    adrp    x2, el2_vectors
    add     x2, x2, :lo12:el2_vectors
    msr     VBAR_EL2, x2
    isb
    mov     x0, x19
    bl      secondary_main
5:  wfe
    b       5b
"#
);
