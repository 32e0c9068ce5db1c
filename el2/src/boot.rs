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
    .quad   0xa                     // flags: little-endian, 4 KiB pages, any 2 MiB-aligned base
    .quad   0, 0, 0                 // res2-res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5

primary_entry:
    mov     x19, x0                 // DTB physical address
    mov     x21, xzr                // no UEFI hand-over block (efi.rs passes one)
    // The UEFI application (efi.rs) joins here with x19 and x21 set, the MMU off.
    .global el2_boot_common
el2_boot_common:
    bl      el2_apply_relocations
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
    cmp     x1, #2
    mov     x0, x19
    mov     x1, x21                 // rust_main(dtb, UEFI hand-over block or 0)
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

    // Relocate: the image is position-independent; every absolute address it
    // holds is an R_AARCH64_RELATIVE entry of .rela.dyn (offset, info, addend),
    // patched by the distance between where it runs and where it was linked.
    // Each entry is set from its addend, so applying them twice is harmless (the
    // UEFI entry applies them once with the MMU on, then again from its copy).
    // A leaf: clobbers x1-x7 only.
    .global el2_apply_relocations
el2_apply_relocations:
    adr     x1, _start
    ldr     x2, =__link_base
    sub     x7, x1, x2              // 0 at the link address: still applied (the
                                    // linker leaves RELA places unwritten)
    adrp    x3, __rela_start
    add     x3, x3, :lo12:__rela_start
    adrp    x4, __rela_end
    add     x4, x4, :lo12:__rela_end
6:  cmp     x3, x4
    b.hs    7f
    ldp     x5, x6, [x3], #16       // r_offset, r_info
    ldr     x2, [x3], #8            // r_addend
    cmp     w6, #1027               // R_AARCH64_RELATIVE (xtask refuses any other type)
    b.ne    6b
    add     x2, x2, x7
    str     x2, [x5, x7]
    b       6b
7:  ret

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
