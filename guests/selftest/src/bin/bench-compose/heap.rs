//! A bump allocator over a static arena: the compositor needs `alloc`, and this
//! guest allocates a few buffers once and never frees them.

use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr;

use selftest_guest::global::Global;

/// Bytes of the arena (the guest image must stay within its 64 MiB of RAM).
const ARENA_SIZE: usize = 8 << 20;

#[repr(align(16))]
struct Arena(UnsafeCell<[u8; ARENA_SIZE]>);

// SAFETY: the guest runs on one CPU and its exception handler never allocates, so
// the arena is only reached through `Bump`, one call at a time; each byte is handed
// out once.
unsafe impl Sync for Arena {}

static ARENA: Arena = Arena(UnsafeCell::new([0; ARENA_SIZE]));
/// Offset of the first free byte.
static NEXT: Global<usize> = Global::new(0);

struct Bump;

// SAFETY: `alloc` returns a block of `layout.size()` bytes aligned to
// `layout.align()` inside the arena that no earlier call returned (NEXT only grows),
// or null when the arena is exhausted; `dealloc` frees nothing, which is allowed.
unsafe impl GlobalAlloc for Bump {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let base = ARENA.0.get().cast::<u8>();
        let next = NEXT.get();
        let misalign = (base as usize + next) % layout.align();
        let start = next
            + if misalign == 0 {
                0
            } else {
                layout.align() - misalign
            };
        match start.checked_add(layout.size()) {
            Some(end) if end <= ARENA_SIZE => {
                NEXT.set(end);
                base.wrapping_add(start)
            }
            _ => ptr::null_mut(),
        }
    }

    unsafe fn dealloc(&self, _ptr: *mut u8, _layout: Layout) {}
}

#[global_allocator]
static ALLOCATOR: Bump = Bump;
