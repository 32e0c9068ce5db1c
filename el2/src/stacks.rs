//! The hypervisor's per-CPU stacks and their guard pages.
//!
//! Every physical CPU the hypervisor can run on has one stack slot of [`SLOT`]
//! bytes in the image's `.stacks` section (el2/linker.ld), for its scheduler
//! (slot *k* for physical CPU *k*, the boot CPU's first), and every vCPU has one
//! too (slot [`MAX_CPUS`] + *i*), which it runs on whichever physical CPU runs it
//! (`smp.rs`). Each slot is aligned to its size:
//!
//! ```text
//! slot + 0x0000  guard page (unmapped)
//! slot + 0x1000  emergency stack (16 KiB): the fatal-fault path runs here
//! slot + 0x5000  guard page (unmapped): a stack overflow faults here
//! slot + 0x6000  the CPU's stack (104 KiB), growing down from slot + SLOT
//! ```
//!
//! Because the slot is aligned to its size, the fault vectors find a CPU's
//! emergency stack from any stack pointer inside its slot with one AND, without a
//! free register (vectors.rs): a stack overflow therefore reports itself instead of
//! faulting again on every push.

/// Bytes of one CPU's stack slot (keep in step with `STACK_SLOT` in linker.ld).
pub const SLOT: u64 = 0x2_0000;
/// Physical CPUs with a stack slot.
pub const MAX_CPUS: usize = 8;
/// vCPUs with a stack slot.
pub const MAX_VCPUS: usize = 8;
/// Stack slots (`STACK_SLOTS` in linker.ld).
const SLOTS: usize = MAX_CPUS + MAX_VCPUS;
/// Bytes of a guard page.
const GUARD: u64 = 0x1000;
/// Offset of the emergency stack's top (its initial SP) in a slot.
pub const EMERGENCY_TOP: u64 = 0x5000;
/// Offset of the guard page below the CPU's stack.
const STACK_GUARD: u64 = EMERGENCY_TOP;
/// Offset of the lowest byte of the CPU's stack.
const STACK_BOTTOM: u64 = STACK_GUARD + GUARD;

const _: () = assert!(SLOT.is_power_of_two() && STACK_BOTTOM < SLOT);

extern "C" {
    static __stacks_start: u8;
    static __stacks_end: u8;
}

/// The `.stacks` section: `[start, end)`.
pub fn section() -> (u64, u64) {
    (
        core::ptr::addr_of!(__stacks_start) as u64,
        core::ptr::addr_of!(__stacks_end) as u64,
    )
}

/// Checks that the linker laid the slots out as this module describes.
pub fn check_layout() -> Result<(), &'static str> {
    let (start, end) = section();
    if !start.is_multiple_of(SLOT) {
        return Err("the stack slots are not aligned to their size");
    }
    if end - start != SLOT * SLOTS as u64 {
        return Err("the stack section does not hold one slot per CPU and per vCPU");
    }
    Ok(())
}

/// Every guard page: two per slot.
pub fn guard_pages() -> impl Iterator<Item = u64> {
    let (start, _) = section();
    (0..SLOTS as u64).flat_map(move |i| {
        let slot = start + i * SLOT;
        [slot, slot + STACK_GUARD]
    })
}

/// The top (initial SP) of vCPU `i`'s stack.
pub fn vcpu_stack_top(i: usize) -> u64 {
    section().0 + (MAX_CPUS + i + 1) as u64 * SLOT
}

/// Whether `addr` is in a guard page (an overflow, when it is a fault address).
pub fn in_guard(addr: u64) -> bool {
    let (start, end) = section();
    (start..end).contains(&addr) && {
        let off = (addr - start) % SLOT;
        off < GUARD || (STACK_GUARD..STACK_BOTTOM).contains(&off)
    }
}
