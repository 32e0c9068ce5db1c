//! The partition itself (bare metal only; see the crate root).

use core::fmt::Write;

use authority::boot::Boot;
use authority::shell::Shell;
use authority::Terminal;
use monitor::abi_client::{AbiControl, Hypercall, OpenError};
use monitor::After;

/// CPACR_EL1.FPEN = 0b11: FP/SIMD at EL1 and EL0 not trapped.
const CPACR_FPEN_ALL: u64 = 0b11 << 20;
/// SCTLR_EL1 at entry, low half: EOS (bit 11) set; M, C, I clear (MMU and
/// caches off).
const SCTLR_EL1_INIT_LO: u64 = 0x0800;
/// SCTLR_EL1 at entry, high half: the RES1 bits 20 (TSCXT), 22 (EIS), 23
/// (SPAN), 28 (nTLSMD), 29 (LSMAOE).
const SCTLR_EL1_INIT_HI: u64 = 0x30d0;

core::arch::global_asm!(
    ".pushsection .text.head, \"ax\"",
    ".global _start",
    "_start:",
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
    "3:  bl authority_main",
    "4:  wfe",
    "    b 4b",
    ".popsection",
    cpacr = const CPACR_FPEN_ALL,
    sctlr_lo = const SCTLR_EL1_INIT_LO,
    sctlr_hi = const SCTLR_EL1_INIT_HI,
);

/// The PL011 (ARM DDI 0183): polled transmit and receive.
mod pl011 {
    use boards::guest::PL011_BASE;

    /// Data register.
    const DR: u64 = 0x00;
    /// Flag register.
    const FR: u64 = 0x18;
    /// FR: receive FIFO empty.
    const FR_RXFE: u32 = 1 << 4;
    /// FR: transmit FIFO full.
    const FR_TXFF: u32 = 1 << 5;
    /// DR: the received character (the bits above are error flags).
    const DR_DATA: u32 = 0xff;

    fn fr() -> u32 {
        // SAFETY: FR is a 32-bit register of the partition's PL011, mapped at
        // PL011_BASE; reading it has no effect on Rust-visible memory.
        unsafe { core::ptr::read_volatile((PL011_BASE + FR) as *const u32) }
    }

    /// Sends one byte, waiting while the transmit FIFO is full.
    pub fn put(b: u8) {
        while fr() & FR_TXFF != 0 {
            core::hint::spin_loop();
        }
        // SAFETY: DR is the PL011's data register; the write sends one character.
        unsafe { core::ptr::write_volatile((PL011_BASE + DR) as *mut u32, u32::from(b)) };
    }

    /// One received byte, if any.
    pub fn get() -> Option<u8> {
        if fr() & FR_RXFE != 0 {
            return None;
        }
        // SAFETY: DR is the PL011's data register; the read takes one character
        // from the receive FIFO.
        let v = unsafe { core::ptr::read_volatile((PL011_BASE + DR) as *const u32) };
        Some((v & DR_DATA) as u8)
    }
}

/// The serial line as the shell's terminal.
struct Serial;

impl Terminal for Serial {
    fn write(&mut self, bytes: &[u8]) {
        bytes.iter().copied().for_each(pl011::put);
    }
}

impl Write for Serial {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                pl011::put(b'\r');
            }
            pl011::put(b);
        }
        Ok(())
    }
}

/// `HVC #0` with the SMC64 calling convention.
struct Hvc;

impl Hypercall for Hvc {
    fn ipa_of(&self, shared: &[u8]) -> u64 {
        // The MMU is off: a pointer is a physical address, which for a
        // partition is its IPA.
        shared.as_ptr() as u64
    }

    fn hvc(&mut self, x: [u64; 8], shared: &mut [u8]) -> [u64; 4] {
        let (mut x0, mut x1, mut x2, mut x3) = (x[0], x[1], x[2], x[3]);
        // The hypervisor reads and writes `shared` during the call: the asm is
        // not `nomem`, and the buffer's pointer is an input, so the compiler
        // neither keeps its bytes in registers across it nor drops the writes
        // before it.
        let _keep = shared.as_mut_ptr();
        // SAFETY: HVC #0 traps to the hypervisor, which implements the SMCCC
        // (x0..x17 may be clobbered; x18 and up are preserved). The only memory
        // it writes is authority memory the call named — inside `shared` — and
        // the stack is not touched.
        unsafe {
            core::arch::asm!(
                "hvc #0",
                inout("x0") x0,
                inout("x1") x1,
                inout("x2") x2,
                inout("x3") x3,
                inout("x4") x[4] => _,
                inout("x5") x[5] => _,
                inout("x6") x[6] => _,
                inout("x7") x[7] => _,
                inout("x8") _keep => _,
                lateout("x9") _, lateout("x10") _, lateout("x11") _,
                lateout("x12") _, lateout("x13") _, lateout("x14") _,
                lateout("x15") _, lateout("x16") _, lateout("x17") _,
                options(nostack),
            );
        }
        [x0, x1, x2, x3]
    }
}

mod heap {
    use buddy_system_allocator::LockedHeap;

    /// Heap size: the shell, the ABI client's shared buffer, VM lists, scripts.
    const HEAP_SIZE: usize = 8 << 20;

    #[repr(C, align(4096))]
    struct HeapSpace([u8; HEAP_SIZE]);

    static mut HEAP_SPACE: HeapSpace = HeapSpace([0; HEAP_SIZE]);

    #[global_allocator]
    static HEAP: LockedHeap<32> = LockedHeap::empty();

    /// Hands the heap region to the allocator; call once, before allocating.
    pub fn init() {
        // SAFETY: HEAP_SPACE is used by nothing but the allocator, and `init`
        // runs once, on the one CPU, before any allocation.
        unsafe {
            let start = core::ptr::addr_of_mut!(HEAP_SPACE) as usize;
            HEAP.lock().init(start, HEAP_SIZE);
        }
    }
}

/// Waits for ever (the hypervisor powers the host off, or there is nothing to do):
/// WFI with the virtual timer off, so the hypervisor blocks this vCPU for good
/// and its physical CPU runs the guest.
fn halt() -> ! {
    // SAFETY: writing CNTV_CTL_EL0 only stops this vCPU's virtual timer.
    unsafe { core::arch::asm!("msr cntv_ctl_el0, xzr", "isb", options(nomem, nostack)) };
    loop {
        // SAFETY: WFI only waits; it touches no memory.
        unsafe { core::arch::asm!("wfi", options(nomem, nostack)) };
    }
}

/// How long the partition sleeps when its serial line is idle: a typed byte waits
/// at most this long, and the partition's CPU share stays small (it wakes 200
/// times a second for a few microseconds).
const IDLE_MS: u64 = 5;

/// Sleeps [`IDLE_MS`]: arms the virtual timer (its interrupt stays disabled in the
/// GIC and masked here, so it is never taken) and waits in WFI, which the
/// hypervisor turns into giving the CPU to the guest until the timer's deadline.
fn idle() {
    let freq: u64;
    // SAFETY: reads the counter frequency; no memory is touched.
    unsafe { core::arch::asm!("mrs {}, cntfrq_el0", out(reg) freq, options(nomem, nostack)) };
    let ticks = (freq * IDLE_MS / 1000).max(1);
    // SAFETY: programs this vCPU's virtual timer (TVAL, then ENABLE with IMASK
    // clear so its deadline counts as a wake-up) and waits; no memory is touched.
    unsafe {
        core::arch::asm!(
            "msr cntv_tval_el0, {t}",
            "msr cntv_ctl_el0, {on}",
            "isb",
            "wfi",
            t = in(reg) ticks,
            on = in(reg) 1u64,
            options(nomem, nostack)
        )
    };
}

#[no_mangle]
extern "C" fn authority_main() -> ! {
    heap::init();
    let mut t = Serial;
    let _ = writeln!(t, "RayOS authority partition");
    let mut ctl = match AbiControl::open(Hvc) {
        Ok(c) => c,
        Err(OpenError::Status(s)) => {
            let _ = writeln!(t, "rayos: the hypervisor refused the authority ABI ({s:?})");
            halt()
        }
        Err(OpenError::Version(v)) => {
            let _ = writeln!(
                t,
                "rayos: the hypervisor's authority ABI {}.{} does not serve {}.{}",
                v.major,
                v.minor,
                authority_abi::VERSION.major,
                authority_abi::VERSION.minor
            );
            halt()
        }
    };
    let mut boot = Boot::new();
    let outcome = boot.run(&mut ctl);
    for line in &boot.log {
        let _ = writeln!(t, "rayos: {line}");
    }
    let _ = writeln!(t, "rayos: boot: {outcome:?}");
    let mut shell = Shell::new();
    let _ = writeln!(t, "rayos: {}", shell.reserve_leave_key(&mut ctl));
    shell.prompt(&mut t);
    loop {
        match pl011::get() {
            Some(b) => {
                if shell.feed(b, &mut ctl, &mut t) == After::PowerOffHost {
                    // The hypervisor powers the host off after answering.
                    halt()
                }
            }
            None => {
                shell.poll(&mut ctl, &mut t);
                // Script ends get a line; state events are shown by `vm list`.
                // The ring is drained so it never fills.
                shell.events(&mut ctl, &mut t);
                idle();
            }
        }
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    let _ = writeln!(Serial, "rayos: panic: {info}");
    halt()
}
