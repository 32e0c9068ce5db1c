//! The MMIO contention benchmark guest (2 vCPUs, a virtio-blk disk). vCPU 0 times
//! reads of its GIC redistributor's GICR_TYPER with the virtual counter: first
//! [`READS`] of them while vCPU 1 is off (for reference: `off_ticks`), then
//! [`ROUNDS`] rounds of two phases: [`READS`] reads while vCPU 1 runs but is idle,
//! spinning in the guest without exits (the baseline: the same two busy host
//! threads), and at least as many while vCPU 1 issues 64 KiB virtio-blk requests
//! back to back (alternating writes and reads, polling the used ring between them),
//! until [`MIN_BUSY_REQUESTS`] of them overlapped the phase. Each
//! round prints
//! `bench-contention-round: round=… idle_reads=… idle_ticks=… idle_p50=… idle_p99=… busy_reads=… busy_ticks=… busy_p50=… busy_p99=… requests=…`
//! (each phase's total ticks and its single reads' median and 99th percentile from
//! a histogram of 4-tick buckets; `requests`: those vCPU 1 completed while the busy
//! phase was timed), and the
//! run ends with `bench-contention: off_ticks=… reads=… rounds=…`. Alternating the
//! phases within each round makes a change in host load hit both alike; the host
//! side takes the median of the rounds' ratios. With one lock over the whole MMIO
//! bus a redistributor read waits for the disk request in flight; with a lock per
//! device it does not.
//!
//! On the host this binary only prints that it must be built for
//! `aarch64-unknown-none`.
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
#[path = "../virtio-hostile/driver.rs"]
#[allow(dead_code)]
mod driver;

#[cfg(target_os = "none")]
mod guest {
    use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

    use selftest_guest::defs::smccc::PSCI_CPU_ON_64;
    use selftest_guest::defs::sysreg::{CPACR_FPEN_ALL, SCTLR_EL1_INIT_HI, SCTLR_EL1_INIT_LO};
    use selftest_guest::defs::virtio as v;
    use selftest_guest::smccc::{call, Conduit};
    use selftest_guest::{outln, power, probe, sysreg, vectors};

    use crate::driver::{barrier, Mmio, RingAddrs};

    /// GIC redistributor frames of the guest (the `boards` crate's guest map) and
    /// the offset of GICR_TYPER in the first frame (GIC architecture spec §12.11).
    const GICR_BASE: u64 = 0x080a_0000;
    const GICR_TYPER: u64 = 0x0008;
    /// Timed redistributor reads per phase (at least, for a busy phase).
    pub const READS: u64 = 20_000;
    /// A busy phase goes on until this many disk requests overlapped it (or
    /// [`MAX_BUSY_READS`] reads were done).
    pub const MIN_BUSY_REQUESTS: u64 = 200;
    pub const MAX_BUSY_READS: u64 = 4_000_000;
    /// Rounds of (idle phase, busy phase).
    pub const ROUNDS: u32 = 7;
    /// Bytes moved by one disk request.
    const REQUEST_BYTES: usize = 64 << 10;
    /// The MPIDR of vCPU 1 (Aff0 = 1, bit 31 RES1).
    const VCPU1_MPIDR: u64 = 1 << 31 | 1;
    /// Queue size of the one virtqueue.
    const QUEUE: u16 = 4;

    /// Requests vCPU 1 completes before a busy phase is timed (its I/O under way).
    const WARMUP_REQUESTS: u64 = 2;
    /// What vCPU 1 does: it sets IDLE once its disk is set up (and then spins in
    /// the guest, no exits); vCPU 0 sets GO for I/O, IDLE to pause it and STOP to
    /// end it.
    const IDLE: u32 = 1;
    const GO: u32 = 2;
    const STOP: u32 = 3;
    static PHASE: AtomicU32 = AtomicU32::new(0);
    /// Set by vCPU 1 while it is in its I/O loop (cleared once it is idle again).
    static IN_IO: AtomicU32 = AtomicU32::new(0);
    /// Requests vCPU 1 completed; the code of the step that failed, if one did.
    static REQUESTS: AtomicU64 = AtomicU64::new(0);
    static IO_ERROR: AtomicU32 = AtomicU32::new(0);

    #[repr(C)]
    struct Desc {
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    }

    /// The virtqueue and one request's buffers, in guest RAM (the MMU is off:
    /// addresses are IPAs).
    #[repr(C, align(4096))]
    struct Dma {
        desc: [Desc; QUEUE as usize],
        /// flags, idx, ring[QUEUE], used_event.
        avail: [u16; 3 + QUEUE as usize],
        _pad: [u8; 64 - 2 * (3 + QUEUE as usize)],
        /// flags, idx (u16 each), then QUEUE (id u32, len u32) elements, avail_event.
        used: [u32; 2 + 2 * QUEUE as usize],
        header: [u32; 4],
        status: [u8; 16],
        data: [u8; REQUEST_BYTES],
    }

    static mut DMA: Dma = Dma {
        desc: [const {
            Desc {
                addr: 0,
                len: 0,
                flags: 0,
                next: 0,
            }
        }; QUEUE as usize],
        avail: [0; 3 + QUEUE as usize],
        _pad: [0; 64 - 2 * (3 + QUEUE as usize)],
        used: [0; 2 + 2 * QUEUE as usize],
        header: [0; 4],
        status: [0; 16],
        data: [0; REQUEST_BYTES],
    };

    #[repr(C, align(16))]
    struct Stack([u8; 16 << 10]);
    static mut STACK1: Stack = Stack([0; 16 << 10]);

    core::arch::global_asm!(
        ".global bench_secondary_entry",
        "bench_secondary_entry:",
        "    mov x1, #{cpacr}",
        "    msr cpacr_el1, x1",
        "    movz x1, #{sctlr_lo}",
        "    movk x1, #{sctlr_hi}, lsl #16",
        "    msr sctlr_el1, x1",
        "    isb",
        "    mov sp, x0",
        "    bl bench_secondary_main",
        "1:  wfe",
        "    b 1b",
        cpacr = const CPACR_FPEN_ALL,
        sctlr_lo = const SCTLR_EL1_INIT_LO,
        sctlr_hi = const SCTLR_EL1_INIT_HI,
    );
    extern "C" {
        fn bench_secondary_entry();
    }

    /// Width of a latency histogram bucket, in counter ticks, and the buckets
    /// (the last one also holds every longer read).
    const BUCKET_TICKS: u64 = 4;
    const BUCKETS: usize = 2048;

    /// One phase: reads, total ticks and the histogram of single-read latencies.
    struct Phase {
        reads: u64,
        ticks: u64,
        hist: [u32; BUCKETS],
    }

    impl Phase {
        /// The latency (ticks, a bucket's middle) `per_mille` of the reads stay within.
        fn percentile(&self, per_mille: u64) -> u64 {
            let want = (self.reads * per_mille).div_ceil(1000);
            let mut seen = 0;
            for (b, &n) in self.hist.iter().enumerate() {
                seen += u64::from(n);
                if seen >= want {
                    return b as u64 * BUCKET_TICKS + BUCKET_TICKS / 2;
                }
            }
            BUCKETS as u64 * BUCKET_TICKS
        }
    }

    /// Times redistributor reads, each on its own and all together: [`READS`] of
    /// them and then more while `more()` says so, up to `max`.
    fn time_reads(p: &mut Phase, more: impl Fn() -> bool, max: u64) {
        p.hist.fill(0);
        p.reads = 0;
        let start = sysreg::cntvct_el0();
        while p.reads < READS || (p.reads < max && more()) {
            let t0 = sysreg::cntvct_el0();
            probe::load32(GICR_BASE + GICR_TYPER);
            let t = sysreg::cntvct_el0() - t0;
            p.hist[((t / BUCKET_TICKS) as usize).min(BUCKETS - 1)] += 1;
            p.reads += 1;
        }
        p.ticks = sysreg::cntvct_el0() - start;
    }

    /// Waits until `done` holds or vCPU 1 reported an error; false on an error.
    fn wait_for(done: impl Fn() -> bool) -> bool {
        loop {
            if IO_ERROR.load(Ordering::Acquire) != 0 {
                return false;
            }
            if done() {
                return true;
            }
            core::hint::spin_loop();
        }
    }

    fn io_failed() -> ! {
        let error = IO_ERROR.load(Ordering::Acquire);
        outln!("bench-contention: error: vCPU 1's disk I/O failed (code {error})");
        power::system_off()
    }

    /// Entered from `_start` with a stack and a zeroed BSS.
    #[no_mangle]
    extern "C" fn guest_main() -> ! {
        vectors::install(u32::MAX);
        // For reference: vCPU 1 still off.
        let mut idle = Phase {
            reads: 0,
            ticks: 0,
            hist: [0; BUCKETS],
        };
        let mut busy = Phase {
            reads: 0,
            ticks: 0,
            hist: [0; BUCKETS],
        };
        time_reads(&mut idle, || false, READS);
        time_reads(&mut idle, || false, READS);
        let off = idle.ticks;
        // Only the address of the stack is taken here; vCPU 1 alone uses it.
        let stack_top =
            core::ptr::addr_of_mut!(STACK1) as u64 + core::mem::size_of::<Stack>() as u64;
        let r = call(
            Conduit::Hvc,
            PSCI_CPU_ON_64,
            [
                VCPU1_MPIDR,
                bench_secondary_entry as *const () as u64,
                stack_top,
            ],
        );
        if r[0] != 0 {
            outln!(
                "bench-contention: error: CPU_ON of vCPU 1 returned {:#x}",
                r[0]
            );
            power::system_off();
        }
        if !wait_for(|| PHASE.load(Ordering::Acquire) == IDLE) {
            io_failed();
        }
        for round in 0..ROUNDS {
            // The baseline: vCPU 1 running (spinning in the guest) but idle.
            PHASE.store(IDLE, Ordering::Release);
            if !wait_for(|| IN_IO.load(Ordering::Acquire) == 0) {
                io_failed();
            }
            time_reads(&mut idle, || false, READS);
            // Let its I/O get going, then time as many reads during it.
            let before = REQUESTS.load(Ordering::Acquire);
            PHASE.store(GO, Ordering::Release);
            if !wait_for(|| REQUESTS.load(Ordering::Acquire) >= before + WARMUP_REQUESTS) {
                io_failed();
            }
            let first = REQUESTS.load(Ordering::Acquire);
            time_reads(
                &mut busy,
                || REQUESTS.load(Ordering::Acquire) < first + MIN_BUSY_REQUESTS,
                MAX_BUSY_READS,
            );
            let requests = REQUESTS.load(Ordering::Acquire) - first;
            PHASE.store(IDLE, Ordering::Release);
            if IO_ERROR.load(Ordering::Acquire) != 0 {
                io_failed();
            }
            outln!(
                "bench-contention-round: round={round} idle_reads={} idle_ticks={} idle_p50={} idle_p99={} busy_reads={} busy_ticks={} busy_p50={} busy_p99={} requests={requests}",
                idle.reads,
                idle.ticks,
                idle.percentile(500),
                idle.percentile(990),
                busy.reads,
                busy.ticks,
                busy.percentile(500),
                busy.percentile(990)
            );
        }
        PHASE.store(STOP, Ordering::Release);
        outln!("bench-contention: off_ticks={off} reads={READS} rounds={ROUNDS}");
        power::system_off()
    }

    fn fail(code: u32) -> ! {
        IO_ERROR.store(code, Ordering::Release);
        loop {
            core::hint::spin_loop();
        }
    }

    /// vCPU 1: sets up the disk, parks until vCPU 0 asks for I/O, then issues
    /// requests back to back until told to stop.
    #[no_mangle]
    extern "C" fn bench_secondary_main() -> ! {
        let dma = core::ptr::addr_of_mut!(DMA);
        // SAFETY: vCPU 1 alone touches DMA (and the device, through its rings).
        let d = unsafe { &mut *dma };
        let rings = RingAddrs {
            desc: core::ptr::addr_of!(d.desc) as u64,
            avail: core::ptr::addr_of!(d.avail) as u64,
            used: core::ptr::addr_of!(d.used) as u64,
        };
        let blk = Mmio::new(v::BLK_BASE);
        if blk.init(v::F_VERSION_1, QUEUE, rings).is_err() {
            fail(1);
        }
        d.desc[0] = Desc {
            addr: core::ptr::addr_of!(d.header) as u64,
            len: v::BLK_HEADER_SIZE,
            flags: v::DESC_F_NEXT,
            next: 1,
        };
        d.desc[2] = Desc {
            addr: core::ptr::addr_of!(d.status) as u64,
            len: 1,
            flags: v::DESC_F_WRITE,
            next: 0,
        };
        let sectors = v::BLK_CAPACITY_SECTORS - REQUEST_BYTES as u64 / v::SECTOR_SIZE;
        let mut n: u64 = 0;
        PHASE.store(IDLE, Ordering::Release);
        loop {
            match PHASE.load(Ordering::Acquire) {
                GO => IN_IO.store(1, Ordering::Release),
                STOP => break,
                _ => {
                    IN_IO.store(0, Ordering::Release);
                    core::hint::spin_loop();
                    continue;
                }
            }
            let kind = if n.is_multiple_of(2) {
                v::BLK_T_OUT
            } else {
                v::BLK_T_IN
            };
            d.header = [kind, 0, ((n * 128) % sectors) as u32, 0];
            d.desc[1] = Desc {
                addr: core::ptr::addr_of!(d.data) as u64,
                len: REQUEST_BYTES as u32,
                flags: if kind == v::BLK_T_IN {
                    v::DESC_F_NEXT | v::DESC_F_WRITE
                } else {
                    v::DESC_F_NEXT
                },
                next: 2,
            };
            d.status[0] = 0xff;
            let idx = d.avail[1];
            d.avail[3 + usize::from(idx % QUEUE)] = 0;
            barrier();
            // SAFETY: the avail index is read by the device; volatile keeps the
            // store where it is.
            unsafe { core::ptr::write_volatile(&mut d.avail[1], idx.wrapping_add(1)) };
            blk.notify();
            // The used index (the low half of used[0]'s second u16).
            let used = core::ptr::addr_of!(d.used) as *const u16;
            // SAFETY: reads of the used ring the device writes.
            while unsafe { core::ptr::read_volatile(used.add(1)) } != idx.wrapping_add(1) {
                core::hint::spin_loop();
            }
            blk.ack_interrupts();
            // SAFETY: the device wrote the status byte before the used index.
            if unsafe { core::ptr::read_volatile(&d.status[0]) } != v::BLK_S_OK {
                fail(2);
            }
            n += 1;
            REQUESTS.store(n, Ordering::Release);
        }
        loop {
            // SAFETY: waits for an event; nothing else.
            unsafe { core::arch::asm!("wfe") };
        }
    }
}

#[cfg(not(target_os = "none"))]
fn main() {
    println!("bench-contention is a bare-metal guest: build it with --target aarch64-unknown-none");
}
