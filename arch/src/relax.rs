//! How a CPU waits for a spin lock: the hypervisor's locks (`spin` mutexes in the
//! libraries and in el2) spin with [`Relax`], which calls the hint el2 installs
//! with [`set_hint`] — the `YIELD` instruction — and `core::hint::spin_loop`
//! (`ISB` on aarch64) before that, and on the host.
//!
//! Why not `ISB`: on an SMT core, and on QEMU running its emulated CPUs in turn
//! (one thread: `-icount`), only `YIELD` lets the CPU that holds the lock run.
//! QEMU switches CPUs on `YIELD` but otherwise only every 100 ms of virtual
//! time, so a CPU spinning with `ISB` on a lock whose holder QEMU had just
//! switched away from spun for 100 ms per hand-over: a 2-CPU host under
//! `-icount` made almost no progress. The libraries cannot issue the
//! instruction themselves (no `unsafe` outside el2), so el2 installs it once at
//! boot.

use spin::relax::RelaxStrategy;

static HINT: spin::Once<fn()> = spin::Once::new();

/// Installs the spin-wait hint (el2, once, before a second CPU starts).
pub fn set_hint(hint: fn()) {
    HINT.call_once(|| hint);
}

/// The spin locks' relax strategy: the installed hint, else `spin_loop`.
pub struct Relax;

impl RelaxStrategy for Relax {
    #[inline(always)]
    fn relax() {
        match HINT.get() {
            Some(hint) => hint(),
            None => core::hint::spin_loop(),
        }
    }
}

/// A fair spin lock that waits with [`Relax`].
pub type TicketMutex<T> = spin::mutex::TicketMutex<T, Relax>;
/// A spin lock that waits with [`Relax`].
pub type Mutex<T> = spin::mutex::SpinMutex<T, Relax>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_installed_hint_runs_while_a_lock_is_contended() {
        use core::sync::atomic::{AtomicUsize, Ordering};
        static CALLS: AtomicUsize = AtomicUsize::new(0);
        fn hint() {
            CALLS.fetch_add(1, Ordering::Relaxed);
        }
        set_hint(hint);
        Relax::relax();
        assert!(CALLS.load(Ordering::Relaxed) >= 1);
        let m = TicketMutex::new(5);
        assert_eq!(*m.lock(), 5);
    }
}
