//! [`WorkSignal`]: how a device that left work for later (a per-access budget ran out)
//! tells the hypervisor, which then resumes it through
//! [`crate::MmioBus::resume_deferred`] without waiting for the guest to touch the
//! device again. Checking it costs one atomic load, so the hypervisor can look on
//! every exit.

use alloc::sync::Arc;
use core::sync::atomic::{AtomicBool, Ordering};

/// A shared "some device has deferred work" flag; clones share the flag. A VM keeps
/// one and gives a clone to every device that can defer work.
#[derive(Clone, Default)]
pub struct WorkSignal(Arc<AtomicBool>);

impl WorkSignal {
    /// A lowered signal.
    pub fn new() -> Self {
        Self::default()
    }

    /// A device left work for later.
    pub fn raise(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether the signal is raised, lowering it. A device that still has work after
    /// being resumed raises it again.
    pub fn take(&self) -> bool {
        self.0.load(Ordering::Acquire) && self.0.swap(false, Ordering::AcqRel)
    }

    /// Whether the signal is raised (leaves it as it is).
    pub fn is_raised(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_one_flag_and_take_lowers_it() {
        let a = WorkSignal::new();
        let b = a.clone();
        assert!(!a.is_raised() && !a.take());
        b.raise();
        assert!(a.is_raised());
        assert!(a.take());
        assert!(!b.is_raised() && !b.take());
    }
}
