//! A trace of the input-latency bracket (`cargo xtask bench input`), built in only
//! when the build's environment sets `RAYOS_LATSTAT` (`RAYOS_LATSTAT=1 cargo
//! xtask …`); otherwise every function here is an empty inline one and [`ON`] is
//! a `false` constant the compiler removes.
//!
//! It records every guest exit (vCPU task, the counter when the guest left and
//! when it was entered again, ESR_EL2 of a synchronous exit, the IPA of a data
//! abort) and two marks: the guest writing `@` to its PL011 (the bench's mark)
//! and the hypervisor acknowledging a physical input interrupt. When the VM
//! powers off it prints, per mark, every exit from 1 ms before it to 100 µs
//! after the next input interrupt, so the hypervisor's share of the bracket can
//! be told apart exit by exit (with the guest's clock read and evdev time from
//! the console, an offline comparison places the bracket's start).

use alloc::vec::Vec;
use core::sync::atomic::{AtomicUsize, Ordering};

use spin::Mutex;

use crate::el1::read_sysreg;

/// Whether the build carries the trace.
pub const ON: bool = option_env!("RAYOS_LATSTAT").is_some();

/// Exit records kept (the oldest are overwritten).
const RING: usize = 1 << 15;
/// Marks kept.
const MARKS: usize = 1 << 16;

#[derive(Clone, Copy, Default)]
struct Rec {
    task: u16,
    /// ESR_EL2 of a synchronous exit; `u32::MAX` for an interrupt.
    esr: u32,
    ipa: u64,
    out: u64,
    back: u64,
}

/// What a mark is.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// The guest wrote `@` to its PL011.
    GuestAt,
    /// The hypervisor acknowledged a physical input interrupt.
    InputIrq,
}

struct Trace {
    recs: Vec<Rec>,
    next: usize,
    marks: Vec<(u64, Mark)>,
}

static TRACE: Mutex<Option<Trace>> = Mutex::new(None);
/// Per task: the ring index of its last exit, whose re-entry time is owed.
static OPEN: [AtomicUsize; 64] = [const { AtomicUsize::new(usize::MAX) }; 64];

fn now() -> u64 {
    read_sysreg!("CNTPCT_EL0")
}

fn with(f: impl FnOnce(&mut Trace)) {
    let mut t = TRACE.lock();
    let t = t.get_or_insert_with(|| Trace {
        recs: alloc::vec![Rec::default(); RING],
        next: 0,
        marks: Vec::with_capacity(MARKS),
    });
    f(t);
}

/// Vcpu task `task` exited (`sync`: a synchronous exit).
#[inline(always)]
pub fn exit(task: usize, sync: bool) {
    if ON {
        exit_slow(task, sync);
    }
}

#[inline(never)]
fn exit_slow(task: usize, sync: bool) {
    let out = now();
    let esr = if sync {
        read_sysreg!("ESR_EL2") as u32
    } else {
        u32::MAX
    };
    let ipa = if sync && (esr >> 26) == 0x24 {
        (read_sysreg!("HPFAR_EL2") & 0xFFF_FFFF_FFF0) << 8 | (read_sysreg!("FAR_EL2") & 0xFFF)
    } else {
        0
    };
    with(|t| {
        let i = t.next % RING;
        t.recs[i] = Rec {
            task: task as u16,
            esr,
            ipa,
            out,
            back: 0,
        };
        t.next += 1;
        if let Some(o) = OPEN.get(task) {
            o.store(i, Ordering::Relaxed);
        }
    });
}

/// Vcpu task `task` enters the guest.
#[inline(always)]
pub fn entering(task: usize) {
    if ON {
        entering_slow(task);
    }
}

#[inline(never)]
fn entering_slow(task: usize) {
    let Some(o) = OPEN.get(task) else { return };
    let i = o.swap(usize::MAX, Ordering::Relaxed);
    if i == usize::MAX {
        return;
    }
    let back = now();
    with(|t| {
        if t.recs[i].task == task as u16 && t.recs[i].back == 0 {
            t.recs[i].back = back;
        }
    });
}

/// A mark now.
#[inline(always)]
pub fn mark(m: Mark) {
    if ON {
        let at = now();
        with(|t| {
            if t.marks.len() < MARKS {
                t.marks.push((at, m));
            }
        });
    }
}

/// Prints the trace (see the module documentation) and clears it.
pub fn report() {
    if !ON {
        return;
    }
    let Some(t) = TRACE.lock().take() else { return };
    let freq = read_sysreg!("CNTFRQ_EL0").max(1);
    let us = |ticks: u64| ticks as f64 * 1e6 / freq as f64;
    let mut recs: Vec<Rec> = t.recs.iter().copied().filter(|r| r.out != 0).collect();
    recs.sort_by_key(|r| r.out);
    log::info!(
        "latstat: {} exits recorded, {} marks ({} at-signs)",
        t.next,
        t.marks.len(),
        t.marks.iter().filter(|(_, m)| *m == Mark::GuestAt).count()
    );
    let mut n = 0;
    for (k, &(at, m)) in t.marks.iter().enumerate() {
        if m != Mark::GuestAt {
            continue;
        }
        let irq = t.marks[k..]
            .iter()
            .find(|(_, m)| *m == Mark::InputIrq)
            .map(|&(a, _)| a);
        // An `@` with no input interrupt within 20 ms is not the bench's mark.
        if irq.is_none_or(|a| a - at > freq / 50) {
            continue;
        }
        let from = at.saturating_sub(freq / 1000);
        let to = irq.unwrap_or(at).saturating_add(freq / 10_000);
        log::info!(
            "latstat @{n}: mark at {at}, input interrupt {}",
            irq.map_or("none".into(), |a| alloc::format!("+{:.1} us", us(a - at)))
        );
        for r in recs.iter().filter(|r| r.out >= from && r.out <= to) {
            let rel = r.out as i64 - at as i64;
            let el2 = if r.back >= r.out {
                alloc::format!("{:.2}", us(r.back - r.out))
            } else {
                "?".into()
            };
            let what = if r.esr == u32::MAX {
                "irq".into()
            } else if r.esr >> 26 == 0x24 {
                alloc::format!("mmio {:#x}", r.ipa)
            } else {
                alloc::format!("ec {:#x} iss {:#x}", r.esr >> 26, r.esr & 0x1FF_FFFF)
            };
            log::info!(
                "latstat   {}{:.1} us task {} {what} el2 {el2} us",
                if rel < 0 { "-" } else { "+" },
                us(rel.unsigned_abs()),
                r.task
            );
        }
        n += 1;
    }
}
