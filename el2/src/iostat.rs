//! Timing of a guest's disk requests through the hypervisor, for finding where a
//! request waits: built in only when the build's environment sets `RAYOS_IOSTAT`
//! (`RAYOS_IOSTAT=1 cargo xtask …`); otherwise every function here is an empty
//! inline one and [`ON`] is a `false` constant the compiler removes.
//!
//! Stages, each a histogram of counter ticks (CNTPCT_EL0) in power-of-two
//! microsecond buckets:
//! - `device`: a system-disk request on guest RAM from its submission to the
//!   virtio-blk device until it is taken off the used ring (the host's I/O, the
//!   interrupt's delivery, the handler);
//! - `to_post`: from the request's delivery to its disk's inbox until the guest's
//!   completion is posted (`Vm::resume_deferred` raising an interrupt);
//! - `to_entry`: from that post until the interrupted vCPU next enters the guest
//!   (its wake-up, a CPU to run on);
//! - `turnaround`: from a post until the next request is submitted (the guest's
//!   handling of the completion and its next command, the doorbell's exit);
//! - `guest`: the part of `turnaround` after the interrupted vCPU entered the guest.
//!
//! Counters: where the disk's interrupt was taken (a CPU running a vCPU, an idle
//! CPU) and how posts found the vCPU they interrupt (running here, running on
//! another CPU, not running). The figures are printed when the guest stays away
//! from the disk for [`QUIET_MS`] (a pause the measuring script makes between
//! passes) and when the VM powers off, and start again from zero.

use core::sync::atomic::{AtomicU64, Ordering};

/// Whether the build carries the instrumentation.
pub const ON: bool = option_env!("RAYOS_IOSTAT").is_some();

/// A pause in submissions this long ends a period: its figures are printed.
const QUIET_MS: u64 = 500;
/// Power-of-two microsecond buckets: 0 is < 1 µs, b is [2^(b-1), 2^b) µs, the
/// last takes the rest.
const BUCKETS: usize = 20;

/// The stages.
#[derive(Clone, Copy)]
pub enum Stage {
    Device = 0,
    ToPost = 1,
    ToEntry = 2,
    Turnaround = 3,
    Guest = 4,
}
const STAGES: usize = 5;
const STAGE_NAMES: [&str; STAGES] = ["device", "to_post", "to_entry", "turnaround", "guest"];

/// The counters.
#[derive(Clone, Copy)]
pub enum Count {
    /// The disk's interrupt taken by a CPU in a vCPU's exit path.
    IrqOnVcpu = 0,
    /// Taken by an idle CPU.
    IrqIdle = 1,
    /// A post interrupted the vCPU whose path posted it.
    PostSelf = 2,
    /// A post interrupted a vCPU running on another CPU.
    PostRemote = 3,
    /// A post interrupted a vCPU that was not running (blocked or waiting for a CPU).
    PostAsleep = 4,
    /// Requests submitted.
    Submitted = 5,
    /// Submitted from physical CPU 0 / another.
    SubmitCpu0 = 6,
    /// Taken off the used ring on physical CPU 0 / another.
    HarvestCpu0 = 7,
    /// Exits of vCPU 0 and 1: synchronous, interrupt; WFI blocks.
    Sync0 = 8,
    Sync1 = 9,
    Irq0 = 10,
    Irq1 = 11,
    Block0 = 12,
    Block1 = 13,
    /// vCPUs loaded on a CPU where another ran last (local TLB and I-cache flush).
    Flushes = 14,
    /// vCPUs loaded on a CPU.
    Loads = 15,
}
const COUNTS: usize = 16;
const COUNT_NAMES: [&str; COUNTS] = [
    "irq_on_vcpu",
    "irq_idle",
    "post_self",
    "post_remote",
    "post_asleep",
    "submitted",
    "submit_cpu0",
    "harvest_cpu0",
    "sync0",
    "sync1",
    "irq0",
    "irq1",
    "block0",
    "block1",
    "flushes",
    "loads",
];

static HIST: [[AtomicU64; BUCKETS]; STAGES] =
    [const { [const { AtomicU64::new(0) }; BUCKETS] }; STAGES];
static SUM: [AtomicU64; STAGES] = [const { AtomicU64::new(0) }; STAGES];
static COUNTERS: [AtomicU64; COUNTS] = [const { AtomicU64::new(0) }; COUNTS];
/// Counter value of the last delivery to an inbox, of the last post, of the last
/// submission (0: none pending).
static LAST_DELIVER: AtomicU64 = AtomicU64::new(0);
static LAST_POST: AtomicU64 = AtomicU64::new(0);
static LAST_SUBMIT: AtomicU64 = AtomicU64::new(0);
/// When the vCPU a post interrupted entered the guest after it (0: not yet).
static ENTERED: AtomicU64 = AtomicU64::new(0);
/// Per vCPU: when a post for it was made and it has not entered the guest since.
static POSTED: [AtomicU64; crate::stacks::MAX_VCPUS] =
    [const { AtomicU64::new(0) }; crate::stacks::MAX_VCPUS];
/// Periods printed.
static PERIOD: AtomicU64 = AtomicU64::new(0);

/// The counter now (0 when off).
#[inline(always)]
pub fn now() -> u64 {
    if ON {
        crate::el1::read_sysreg!("CNTPCT_EL0")
    } else {
        0
    }
}

fn freq() -> u64 {
    crate::el1::read_sysreg!("CNTFRQ_EL0").max(1)
}

/// Records `ticks` in `stage`.
#[inline(always)]
pub fn record(stage: Stage, ticks: u64) {
    if ON {
        record_slow(stage as usize, ticks);
    }
}

#[inline(never)]
fn record_slow(s: usize, ticks: u64) {
    let us = ticks.saturating_mul(1_000_000) / freq();
    let b = if us == 0 {
        0
    } else {
        (64 - us.leading_zeros() as usize).min(BUCKETS - 1)
    };
    HIST[s][b].fetch_add(1, Ordering::Relaxed);
    SUM[s].fetch_add(us, Ordering::Relaxed);
}

/// Counts one `c`.
#[inline(always)]
pub fn count(c: Count) {
    if ON {
        COUNTERS[c as usize].fetch_add(1, Ordering::Relaxed);
    }
}

/// A system-disk request on guest RAM is about to be submitted (called before the
/// engine's lock is taken); returns its submission time. Ends a period after a
/// pause, and measures the turnaround since the last post.
#[inline(always)]
pub fn submitting() -> u64 {
    if !ON {
        return 0;
    }
    let t = now();
    let last = LAST_SUBMIT.swap(t, Ordering::Relaxed);
    let post = LAST_POST.swap(0, Ordering::Relaxed);
    let entered = ENTERED.swap(0, Ordering::Relaxed);
    if last != 0 && t.wrapping_sub(last) > freq() * QUIET_MS / 1000 {
        report("pause");
    } else {
        if post != 0 {
            record(Stage::Turnaround, t.wrapping_sub(post));
        }
        if entered != 0 {
            record(Stage::Guest, t.wrapping_sub(entered));
        }
    }
    count(Count::Submitted);
    if crate::smp::this_pcpu() == 0 {
        count(Count::SubmitCpu0);
    }
    t
}

/// A request submitted at `t0` came back from the device.
#[inline(always)]
pub fn harvested(t0: u64) {
    if ON && t0 != 0 {
        let t = now();
        record(Stage::Device, t.wrapping_sub(t0));
        LAST_DELIVER.store(t, Ordering::Relaxed);
        if crate::smp::this_pcpu() == 0 {
            count(Count::HarvestCpu0);
        }
    }
}

/// `Vm::resume_deferred` raised interrupts for the vCPUs in `kicked` (bit i: vCPU
/// i of the VM whose tasks start at `task_base`), from vCPU `here` (`None`: an
/// idle CPU); `running(i)` tells whether vCPU i runs now.
#[inline(always)]
pub fn posted(task_base: usize, kicked: u64, here: Option<usize>, running: impl Fn(usize) -> bool) {
    if !ON || kicked == 0 {
        return;
    }
    let t = now();
    let d = LAST_DELIVER.swap(0, Ordering::Relaxed);
    if d != 0 {
        record(Stage::ToPost, t.wrapping_sub(d));
        LAST_POST.store(t, Ordering::Relaxed);
    }
    for i in (0..64).filter(|i| kicked & (1 << i) != 0) {
        count(if here == Some(i) {
            Count::PostSelf
        } else if running(i) {
            Count::PostRemote
        } else {
            Count::PostAsleep
        });
        if let Some(p) = POSTED.get(task_base + i) {
            let _ = p.compare_exchange(0, t, Ordering::Relaxed, Ordering::Relaxed);
        }
    }
}

/// vCPU task `t` enters the guest.
#[inline(always)]
pub fn entering(t: usize) {
    if ON {
        if let Some(p) = POSTED.get(t) {
            if p.load(Ordering::Relaxed) != 0 {
                let at = p.swap(0, Ordering::Relaxed);
                let t = now();
                record(Stage::ToEntry, t.wrapping_sub(at));
                ENTERED.store(t, Ordering::Relaxed);
            }
        }
    }
}

/// vCPU `i` exited (`sync`: a synchronous exit, else an interrupt).
#[inline(always)]
pub fn exit(i: usize, sync: bool) {
    if ON && i < 2 {
        count(match (sync, i) {
            (true, 0) => Count::Sync0,
            (true, _) => Count::Sync1,
            (false, 0) => Count::Irq0,
            (false, _) => Count::Irq1,
        });
    }
}

/// vCPU `i` blocks in WFI.
#[inline(always)]
pub fn block(i: usize) {
    if ON && i < 2 {
        count(if i == 0 { Count::Block0 } else { Count::Block1 });
    }
}

/// Prints the period's figures (`why` it ends) and starts a new one.
pub fn report(why: &str) {
    if !ON {
        return;
    }
    let period = PERIOD.fetch_add(1, Ordering::Relaxed);
    let mut line = alloc::string::String::new();
    use core::fmt::Write;
    for (i, name) in COUNT_NAMES.iter().enumerate() {
        let _ = write!(line, " {name}={}", COUNTERS[i].swap(0, Ordering::Relaxed));
    }
    let secs = now() / freq();
    log::info!("iostat {period} ({why}, at {secs} s):{line}");
    for (s, name) in STAGE_NAMES.iter().enumerate() {
        let mut line = alloc::string::String::new();
        let mut n = 0;
        for (b, h) in HIST[s].iter().enumerate() {
            let c = h.swap(0, Ordering::Relaxed);
            if c > 0 {
                n += c;
                let _ = write!(line, " <{}us:{c}", 1u64 << b);
            }
        }
        let sum = SUM[s].swap(0, Ordering::Relaxed);
        log::info!(
            "iostat {period} {name}: n={n} mean={}us{line}",
            sum.checked_div(n).unwrap_or(0)
        );
    }
}
