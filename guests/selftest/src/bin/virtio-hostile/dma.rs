//! The guest memory the virtio device is given: one page-aligned static region
//! of three pages — a canary page, the work page (rings, indirect tables, the
//! request header, status byte and data buffer) and another canary page — plus
//! a snapshot of it, and a guard over the last bytes of guest RAM.
//!
//! With the MMU off every access here is Device-nGnRnE, so all of it goes
//! through aligned volatile accesses of the natural size (no `memcpy`, no
//! unaligned or combined accesses). Addresses given to the device are the
//! pointers themselves (IPA = VA with the MMU off).

use core::cell::UnsafeCell;
use core::ops::Range;

use selftest_guest::defs::{map, virtio as v};
use selftest_guest::vring::{canary_byte, first_change, Change};

/// The canary page before the work page.
const CANARY_LO: Range<usize> = 0..0x1000;
/// The work page.
const WORK: Range<usize> = CANARY_LO.end..CANARY_LO.end + 0x1000;
/// The canary page after the work page.
const CANARY_HI: Range<usize> = WORK.end..WORK.end + 0x1000;
/// Bytes in the region.
const REGION_SIZE: usize = CANARY_HI.end;
/// The queue's descriptor table, followed by its available and used rings.
pub const RING: usize = WORK.start;
/// An indirect descriptor table (up to 8 entries).
pub const TABLE: usize = WORK.start + 0x200;
/// A second indirect table (what a nested indirect descriptor points at).
pub const TABLE2: usize = WORK.start + 0x280;
/// The virtio-blk request header.
pub const HEADER: usize = WORK.start + 0x300;
/// The request status byte.
pub const STATUS: usize = WORK.start + 0x310;
/// The one-sector data buffer.
pub const DATA: usize = WORK.start + 0x400;
/// What the status byte holds before the device answers.
pub const STATUS_UNSET: u8 = 0xff;

/// Guarded bytes at the end of guest RAM (the in-RAM half of the straddling
/// buffer and 256 bytes more).
const RAM_END_GUARD: Range<u64> = v::STRADDLE_IPA - 0x100..map::GUEST_RAM_END;

#[repr(C, align(4096))]
struct Region(UnsafeCell<[u8; REGION_SIZE]>);

// SAFETY: the guest runs on one CPU; the region is only reached through raw
// pointers with volatile accesses (never references), by the guest and by the
// virtio device, which is the point of the test.
unsafe impl Sync for Region {}

static DMA: Region = Region(UnsafeCell::new([0; REGION_SIZE]));
static SNAPSHOT: Region = Region(UnsafeCell::new([0; REGION_SIZE]));

fn ptr(region: &Region, off: usize, size: usize) -> *mut u8 {
    assert!(
        off + size <= REGION_SIZE && off.is_multiple_of(size),
        "dma access {off:#x}"
    );
    // `off` is inside the region (checked above).
    region.0.get().cast::<u8>().wrapping_add(off)
}

/// The guest-physical address of region offset `off`.
pub fn addr(off: usize) -> u64 {
    ptr(&DMA, off, 1) as u64
}

macro_rules! accessors {
    ($($read:ident: $t:ty;)*; $($write:ident: $u:ty;)*) => {
        $(
            /// Reads the value at region offset `off` (aligned).
            pub fn $read(off: usize) -> $t {
                let p = ptr(&DMA, off, core::mem::size_of::<$t>()).cast::<$t>();
                // SAFETY: `ptr` checked that `p` is aligned and inside the static
                // region; no reference to the region exists.
                unsafe { p.read_volatile() }
            }
        )*
        $(
            /// Writes `value` at region offset `off` (aligned).
            pub fn $write(off: usize, value: $u) {
                let p = ptr(&DMA, off, core::mem::size_of::<$u>()).cast::<$u>();
                // SAFETY: as in the read accessors.
                unsafe { p.write_volatile(value) }
            }
        )*
    };
}

accessors! {
    r8: u8; r16: u16; r32: u32;;
    w8: u8; w16: u16; w32: u32; w64: u64;
}

fn snap(off: usize) -> u8 {
    // SAFETY: `ptr` checked the offset; the snapshot is only used here and in
    // `take_snapshot`, through raw pointers.
    unsafe { ptr(&SNAPSHOT, off, 1).read_volatile() }
}

/// Fills the whole region with the canary pattern.
pub fn fill_canary() {
    for i in 0..REGION_SIZE {
        w8(i, canary_byte(i));
    }
}

/// Zeroes `range` of the region.
pub fn zero(range: Range<usize>) {
    for i in range {
        w8(i, 0);
    }
}

/// Records the region as it is now.
pub fn take_snapshot() {
    for i in 0..REGION_SIZE {
        // SAFETY: `ptr` checked the offset; nothing else holds the snapshot.
        unsafe { ptr(&SNAPSHOT, i, 1).write_volatile(r8(i)) };
    }
}

/// The first byte changed since [`take_snapshot`] outside `allowed`.
pub fn changed_since_snapshot(allowed: &[Range<usize>]) -> Option<Change> {
    first_change(REGION_SIZE, allowed, snap, r8)
}

/// The first byte of the two canary pages that no longer holds its canary.
pub fn canary_damage() -> Option<Change> {
    [CANARY_LO, CANARY_HI].into_iter().find_map(|page| {
        let start = page.start;
        first_change(
            page.len(),
            &[],
            |i| canary_byte(start + i),
            |i| r8(start + i),
        )
        .map(|c| Change {
            offset: start + c.offset,
            ..c
        })
    })
}

fn guard_ptr(i: usize) -> *mut u8 {
    (RAM_END_GUARD.start + i as u64) as *mut u8
}

fn guard_len() -> usize {
    (RAM_END_GUARD.end - RAM_END_GUARD.start) as usize
}

/// Fills the guard at the end of guest RAM with the canary pattern.
pub fn fill_ram_end_guard() {
    for i in 0..guard_len() {
        // SAFETY: the guard is the last 512 bytes of guest RAM, far above the
        // guest image, stack and BSS (the linker script keeps the top 64 KiB
        // free); no Rust object lives there.
        unsafe { guard_ptr(i).write_volatile(canary_byte(i)) };
    }
}

/// The first byte of the RAM-end guard that no longer holds its canary; the
/// offset is from the start of the guard.
pub fn ram_end_guard_damage() -> Option<Change> {
    // SAFETY: as in `fill_ram_end_guard`; reads only.
    let now = |i: usize| unsafe { guard_ptr(i).read_volatile() };
    first_change(guard_len(), &[], canary_byte, now)
}

/// The guest-physical start of the RAM-end guard (for messages).
pub fn ram_end_guard_start() -> u64 {
    RAM_END_GUARD.start
}
