//! The guest VMs the hypervisor runs side by side (the authority partition is not
//! one of them): set once at boot, before any secondary CPU starts, in the order
//! they were chosen (`rayos.vm=A,B`, or the registry's autostart order). The first
//! is the *primary* guest: the serial console's input goes to it (without the
//! authority partition), and its snapshots are the ones kept. Every guest is on
//! the display (cascaded panels) and takes physical input where the display
//! shows it: the pointer goes to the VM under it, the keyboard to the VM last
//! clicked (`input::stack`).
//!
//! A guest's devices raise their VM's [`vdev::WorkSignal`] from whichever CPU
//! completes the work (the system disk's interrupt lands on one CPU for every
//! VM), so [`service_deferred`] resumes every guest's deferred work, not only
//! the running one's: a VM whose vCPUs all sleep in WFI is woken by its own
//! completions.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::vm::{StopReason, Vm};

/// Guests that run at once at most.
pub const MAX: usize = 4;

static GUESTS: spin::Once<Vec<&'static Vm>> = spin::Once::new();

/// Which guests have been started since the host booted (by position): a VM
/// the boot held off counts once `vm start` started it.
static STARTED: [AtomicBool; MAX] = [const { AtomicBool::new(false) }; MAX];

/// Records the guests (once, at boot).
pub fn set(guests: Vec<&'static Vm>) {
    GUESTS.call_once(|| guests);
}

/// Every guest, the primary first; empty before [`set`].
pub fn all() -> &'static [&'static Vm] {
    GUESTS.get().map_or(&[], |g| g.as_slice())
}

/// The primary guest.
pub fn primary() -> Option<&'static Vm> {
    all().first().copied()
}

/// The guest called `name`.
pub fn find(name: &str) -> Option<&'static Vm> {
    all().iter().copied().find(|v| v.name == name)
}

/// Records that `vm` was started (at host boot, or by `vm start`).
pub fn mark_started(vm: &Vm) {
    if let Some(i) = index_of(vm) {
        STARTED[i].store(true, Ordering::Release);
    }
}

/// Whether more than one guest has been started since the host booted
/// (console lines then say whose they are; a VM held off prints nothing).
pub fn several() -> bool {
    STARTED.iter().filter(|s| s.load(Ordering::Acquire)).count() > 1
}

/// The position of `vm` among the guests (`None`: the authority partition).
pub fn index_of(vm: &Vm) -> Option<usize> {
    all().iter().position(|g| core::ptr::eq(*g, vm))
}

/// Resumes the deferred device work of every guest but `except` (which its
/// caller services itself), waking the vCPUs it interrupts (no vCPU of those
/// guests is looking: `Vm::resume_deferred(None)`).
pub fn service_deferred(except: Option<&Vm>) {
    for g in all() {
        if except.is_some_and(|e| core::ptr::eq(e, *g)) || !g.work.is_raised() {
            continue;
        }
        g.resume_deferred(None);
    }
}

/// The guests that have not powered off.
pub fn still_on() -> usize {
    all()
        .iter()
        .filter(|g| g.stopping() != Some(StopReason::PoweredOff))
        .count()
}

/// The stage-2 VMID of guest `index`: the primary's is 1, the authority
/// partition's [`crate::authority::VMID`], the others' follow it.
pub fn vmid(index: usize) -> u16 {
    match index {
        0 => 1,
        i => crate::authority::VMID + i as u16,
    }
}

/// Whether any guest has deferred device work raised.
pub fn any_work() -> bool {
    all().iter().any(|g| g.work.is_raised())
}
