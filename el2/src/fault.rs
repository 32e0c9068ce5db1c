//! What happens when the hypervisor itself goes wrong: a Rust panic or an exception
//! taken at EL2. Both print the cause, the registers that locate it, and a
//! frame-pointer backtrace, then power the machine off with a failing status.

use core::fmt::Arguments;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::console::emergency_write;
use crate::vectors::TrapFrame;

/// Exit status reported (through semihosting on QEMU) when the hypervisor dies.
pub const FATAL_STATUS: u32 = 70;

extern "C" {
    static __image_start: u8;
    static __text_end: u8;
}

/// MPIDR affinity (+1) of the CPU that is reporting a fatal error; 0 while none is.
static DYING: AtomicU64 = AtomicU64::new(0);

fn in_stacks(addr: u64) -> bool {
    let (lo, hi) = crate::stacks::section();
    (lo..hi.saturating_sub(16)).contains(&addr) && !crate::stacks::in_guard(addr)
}

fn in_text(addr: u64) -> bool {
    let (lo, hi) = (
        core::ptr::addr_of!(__image_start) as u64,
        core::ptr::addr_of!(__text_end) as u64,
    );
    (lo..hi).contains(&addr)
}

/// Prints return addresses by following the frame-pointer chain from `fp`.
fn backtrace(mut fp: u64) {
    emergency_write(format_args!("backtrace:\n"));
    for depth in 0..32 {
        if !fp.is_multiple_of(16) || !in_stacks(fp) {
            break;
        }
        // SAFETY: `fp` is 16-byte aligned and inside the hypervisor's stacks, where
        // every frame record is two words: the caller's frame pointer and return address.
        let (next, lr) = unsafe { (*(fp as *const u64), *((fp + 8) as *const u64)) };
        if lr == 0 || !in_text(lr) {
            break;
        }
        emergency_write(format_args!("  #{depth:<2} {:#018x}\n", lr - 4));
        if next <= fp {
            break;
        }
        fp = next;
    }
}

fn die(what: Arguments, fp: u64) -> ! {
    let me = (crate::el1::read_sysreg!("MPIDR_EL1") & arch::smccc::MPIDR_AFFINITY_MASK) + 1;
    if let Err(first) = DYING.compare_exchange(0, me, Ordering::AcqRel, Ordering::Acquire) {
        if first == me {
            // The report itself failed: stop without another word.
            crate::power::shutdown(FATAL_STATUS)
        }
        // Another CPU is reporting its own fault and will power the machine off.
        loop {
            aarch64_cpu::asm::wfe();
        }
    }
    emergency_write(format_args!("\n[el2 FATAL] {what}\n"));
    backtrace(fp);
    emergency_write(format_args!(
        "[el2 FATAL] hypervisor stopped; powering off with status {FATAL_STATUS}\n"
    ));
    crate::power::shutdown(FATAL_STATUS)
}

/// Called from the vectors for every exception taken at EL2.
#[no_mangle]
extern "C" fn el2_exception(frame: &TrapFrame, kind: u64) -> ! {
    let what = ["synchronous", "IRQ", "FIQ", "SError"]
        .get(kind as usize)
        .copied()
        .unwrap_or("?");
    let ec = arch::exit::exception_class(frame.esr);
    let overflow = if kind == 0 && crate::stacks::in_guard(frame.far) {
        "stack overflow (a guard page was touched): "
    } else {
        ""
    };
    die(
        format_args!(
            "{overflow}{what} exception at EL2: ESR_EL2={:#x} (EC {:#04x}) FAR_EL2={:#x} ELR_EL2={:#x} SPSR_EL2={:#x} SP={:#x} LR={:#x}",
            frame.esr, ec, frame.far, frame.elr, frame.spsr, frame.sp, frame.x[30]
        ),
        frame.x[29],
    )
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    let fp: u64;
    // SAFETY: reads the frame pointer register; no side effects.
    unsafe { core::arch::asm!("mov {}, x29", out(reg) fp) };
    die(format_args!("panic: {info}"), fp)
}

/// Recurses without end, 1 KiB of stack a level: the stack's guard page stops it.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let mut frame = [depth; 128];
    // Keeps the frame (and the recursion) from being optimised away.
    core::hint::black_box(&mut frame);
    if depth < u64::MAX {
        recurse(depth + 1) + frame[depth as usize % 128]
    } else {
        0
    }
}

/// An address no EL2 translation maps (inside the 48-bit VA range, far above RAM and
/// devices), for the deliberate data abort.
const UNMAPPED_VA: usize = 0x7f00_0000_0000;

/// The A64 `RET` instruction (C6.2.254), for the execute-never test.
const RET_INSTRUCTION: u32 = 0xd65f_03c0;

/// Dies on purpose because the boot bundle asked for it (tests of this module).
#[inline(never)]
pub fn deliberate(what: vmspec::HypervisorFault) -> ! {
    log::warn!(
        "the boot bundle asks for a deliberate hypervisor {} to test the fatal path",
        what.name()
    );
    match what {
        vmspec::HypervisorFault::Panic => panic!("deliberate panic requested by the boot bundle"),
        vmspec::HypervisorFault::StackOverflow => {
            let depth = recurse(0);
            panic!("recursion returned at depth {depth} without touching a guard page")
        }
        vmspec::HypervisorFault::WriteText => {
            let target = deliberate as *const () as *mut u32;
            // SAFETY: stores to the hypervisor's own code, which the EL2 map makes
            // read-only (W^X): the store faults and the handler powers off, so the
            // code is never changed and the store never returns.
            unsafe { core::ptr::write_volatile(target, 0) };
            panic!("a store to the hypervisor's code at {target:p} did not fault")
        }
        vmspec::HypervisorFault::ExecuteData => {
            // A `ret` instruction in writable memory (the stack): if the page were
            // executable the call would return normally.
            let code = [RET_INSTRUCTION; 4];
            let entry = core::hint::black_box(code.as_ptr());
            // SAFETY: branches to data the EL2 map makes execute-never (W^X): the
            // instruction fetch faults and the handler powers off. Were the page
            // executable, the callee is a lone `ret`, so the call would return.
            let f: extern "C" fn() = unsafe { core::mem::transmute(entry) };
            f();
            panic!("a branch into writable data at {entry:p} did not fault")
        }
        vmspec::HypervisorFault::DataAbort => {
            // SAFETY: reading an unmapped address faults at EL2 by design; the
            // exception handler reports it and powers off, so the read never returns.
            let v = unsafe { core::ptr::read_volatile(UNMAPPED_VA as *const u64) };
            panic!("a load from unmapped {UNMAPPED_VA:#x} returned {v:#x}")
        }
    }
}
