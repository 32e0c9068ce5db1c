//! The hypervisor heap: a buddy allocator over a static region in BSS. Guest RAM does
//! not come from here (see `pmem`); page tables, device models and bookkeeping do.

use buddy_system_allocator::LockedHeap;

/// Heap size: enough for stage-2 tables of several VMs, device models, the
/// registry and TPM state, the physical display's framebuffer and the guests'
/// virtio-gpu resources (bounded per VM in `vm.rs`).
const HEAP_SIZE: usize = 48 << 20;

#[repr(C, align(4096))]
struct HeapSpace([u8; HEAP_SIZE]);

static mut HEAP_SPACE: HeapSpace = HeapSpace([0; HEAP_SIZE]);

#[global_allocator]
static HEAP: LockedHeap<32> = LockedHeap::empty();

/// Hands the heap region to the allocator. Call once, with the MMU on.
pub fn init() {
    // SAFETY: HEAP_SPACE is used by nothing but the allocator, and `init` runs once on
    // the boot CPU before any allocation.
    unsafe {
        let start = core::ptr::addr_of_mut!(HEAP_SPACE) as usize;
        HEAP.lock().init(start, HEAP_SIZE);
    }
}

/// (bytes allocated, bytes in the heap), for the log.
pub fn usage() -> (usize, usize) {
    let h = HEAP.lock();
    (h.stats_alloc_actual(), h.stats_total_bytes())
}

/// Gives the allocator the physical range `[base, base + size)` as well (the
/// in-memory snapshot pool, `snapshot.rs`, taken from free RAM after the guests'
/// RAM). The range must be identity-mapped normal RAM that nothing else uses.
pub fn add_region(base: u64, size: u64) {
    // SAFETY: the caller hands over a range of RAM the physical-memory allocator
    // gave it and that nothing else uses, identity-mapped write-back (all RAM is,
    // `mmu.rs`), for the rest of the hypervisor's life.
    unsafe {
        HEAP.lock()
            .add_to_heap(base as usize, (base + size) as usize);
    }
}
