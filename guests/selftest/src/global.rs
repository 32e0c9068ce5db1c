//! [`Global`]: a plain mutable static for a single-CPU guest without atomics.
//!
//! With the MMU off every data access is Device-nGnRnE, where exclusive loads and
//! stores (atomics) are not usable, so shared state between the checks and the
//! exception handler lives in `Global`s: copied in and out with volatile accesses,
//! never borrowed.

use core::cell::UnsafeCell;

/// A value shared between the guest's main flow and its exception handler.
pub struct Global<T: Copy>(UnsafeCell<T>);

// SAFETY: the guests run on one CPU and never start another; the only other
// "thread" is the synchronous exception handler, which runs while the interrupted
// code is stopped. Values are only ever copied in and out with single volatile
// accesses (no references escape), so no reference ever aliases a write.
unsafe impl<T: Copy> Sync for Global<T> {}

impl<T: Copy> Global<T> {
    /// A global holding `value`.
    pub const fn new(value: T) -> Self {
        Self(UnsafeCell::new(value))
    }

    /// A copy of the value.
    pub fn get(&self) -> T {
        // SAFETY: the pointer comes from the `UnsafeCell`, is aligned and valid for
        // the life of `self`; see the `Sync` impl for why no write races this read.
        unsafe { core::ptr::read_volatile(self.0.get()) }
    }

    /// Replaces the value.
    pub fn set(&self, value: T) {
        // SAFETY: as in `get`; no reference into the cell exists while we write.
        unsafe { core::ptr::write_volatile(self.0.get(), value) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_and_set() {
        static G: Global<(u32, u64)> = Global::new((1, 2));
        assert_eq!(G.get(), (1, 2));
        G.set((3, 4));
        assert_eq!(G.get(), (3, 4));
    }
}
