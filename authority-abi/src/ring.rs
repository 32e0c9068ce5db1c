//! The event ring: the hypervisor (the only producer) tells the authority (the
//! only consumer) what happened, in authority memory registered by OPEN.
//!
//! Layout, little-endian:
//!
//! | offset | field      | written by |
//! |--------|------------|------------|
//! | 0      | magic `RAYE` (u32) | authority ([`init`]) |
//! | 4      | ABI major, minor (u16 each) | authority |
//! | 8      | capacity in entries (u32, a power of two ≥ 2) | authority |
//! | 12     | entry size (u32, [`ENTRY_SIZE`]) | authority |
//! | 16     | producer index (u32, free-running) | hypervisor |
//! | 20     | consumer index (u32, free-running) | authority |
//! | 24     | events dropped because the ring was full (u32) | hypervisor |
//! | 28..64 | zero | |
//! | 64     | `capacity` entries of [`ENTRY_SIZE`] bytes | hypervisor |
//!
//! An entry: `kind: u32, vm: u32, a: u64, b: u64, c: u64`. Entry `i` lives at
//! `64 + (i % capacity) * ENTRY_SIZE`. The ring is full when
//! `producer - consumer == capacity` (wrapping arithmetic); a producer index
//! further ahead than that, or a header the authority has changed, is refused
//! ([`RingError::Corrupt`]) — the hypervisor never trusts what authority memory
//! says.
//!
//! **Ordering.** [`push`] writes the entry and returns the new producer index;
//! the hypervisor then issues a store barrier (`DMB ISHST`) and [`publish`]es the
//! index. The consumer reads the producer index, issues a load barrier
//! (`DMB ISHLD`), and only then reads entries ([`pop`] does both reads; the
//! barrier is the caller's).

use crate::call::{Rect, VmId, VmState};
use crate::input::{Chord, InputEvent, EVENT_SIZE};
use crate::VERSION;

/// The header's bytes; entries start here.
pub const HEADER_SIZE: usize = 64;
/// Bytes of one entry.
pub const ENTRY_SIZE: usize = 32;
/// Largest ring OPEN accepts.
pub const MAX_BYTES: u64 = 1 << 20;
/// `RAYE`.
pub const MAGIC: u32 = u32::from_le_bytes(*b"RAYE");

const PRODUCER: usize = 16;
const CONSUMER: usize = 20;
const DROPPED: usize = 24;

/// Why the ring cannot be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingError {
    /// The header is not a ring of this ABI major, the sizes do not fit the
    /// memory, or the indices are impossible.
    Corrupt,
    /// No room: the event was counted as dropped.
    Full,
}

/// What the hypervisor reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A VM changed state.
    VmState { vm: VmId, state: VmState },
    /// A VM produced frame number `frame`; `damage` is the changed region
    /// (guest pixels).
    FrameReady { vm: VmId, frame: u64, damage: Rect },
    /// An input script ended after `steps` steps with `status` (0, or a
    /// negative [`crate::Status`] value).
    ScriptDone { vm: VmId, steps: u64, status: i64 },
    /// Physical input RayOS keeps (ABI 1.2): an event of the physical keyboard or
    /// tablet that no guest takes — none is presented and interactive, or the
    /// pointer is outside the presented VM's panel. Positions are display pixels.
    /// The entry's `vm` is 0; `a` and `b` hold the event's 16-byte record
    /// ([`InputEvent::encode`]).
    Input { event: InputEvent },
    /// The physical keyboard's reserved chord was pressed (ABI 1.3, RESERVE_KEY;
    /// the chord's release goes nowhere). The entry's `vm` is 0, `a` the chord's
    /// modifiers and `b` its usage.
    ReservedKey { chord: Chord },
    /// A kind a newer hypervisor minor defines; an older consumer skips it.
    Unknown { kind: u32 },
}

fn get32(m: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([m[at], m[at + 1], m[at + 2], m[at + 3]])
}

fn put32(m: &mut [u8], at: usize, v: u32) {
    m[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn get64(m: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&m[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Writes an empty ring's header over `mem` (the authority, before OPEN) and
/// answers its capacity: the largest power of two that fits.
pub fn init(mem: &mut [u8]) -> Result<u32, RingError> {
    let fits = mem
        .len()
        .checked_sub(HEADER_SIZE)
        .ok_or(RingError::Corrupt)?
        / ENTRY_SIZE;
    if fits < 2 || mem.len() as u64 > MAX_BYTES {
        return Err(RingError::Corrupt);
    }
    let capacity = 1u32 << (usize::BITS - 1 - fits.leading_zeros());
    mem[..HEADER_SIZE].fill(0);
    put32(mem, 0, MAGIC);
    put32(mem, 4, VERSION.to_reg() as u32);
    put32(mem, 8, capacity);
    put32(mem, 12, ENTRY_SIZE as u32);
    Ok(capacity)
}

/// The header's capacity, if the header describes a ring that fits `mem`.
pub fn check(mem: &[u8]) -> Result<u32, RingError> {
    if mem.len() < HEADER_SIZE || mem.len() as u64 > MAX_BYTES {
        return Err(RingError::Corrupt);
    }
    let capacity = get32(mem, 8);
    let major = (get32(mem, 4) >> 16) as u16;
    let fits = (mem.len() - HEADER_SIZE) / ENTRY_SIZE;
    if get32(mem, 0) != MAGIC
        || major != VERSION.major
        || get32(mem, 12) != ENTRY_SIZE as u32
        || !capacity.is_power_of_two()
        || capacity < 2
        || capacity as usize > fits
        || mem[28..HEADER_SIZE].iter().any(|&b| b != 0)
    {
        return Err(RingError::Corrupt);
    }
    Ok(capacity)
}

/// Events waiting: `producer - consumer`, checked against the capacity.
fn pending(mem: &[u8], capacity: u32) -> Result<u32, RingError> {
    let n = get32(mem, PRODUCER).wrapping_sub(get32(mem, CONSUMER));
    if n > capacity {
        return Err(RingError::Corrupt);
    }
    Ok(n)
}

fn entry_at(index: u32, capacity: u32) -> usize {
    HEADER_SIZE + (index % capacity) as usize * ENTRY_SIZE
}

/// The hypervisor's half of adding `ev`: writes the entry and answers the
/// producer index to [`publish`] after a store barrier. A full ring counts the
/// event as dropped.
pub fn push(mem: &mut [u8], ev: &Event) -> Result<u32, RingError> {
    let capacity = check(mem)?;
    if pending(mem, capacity)? == capacity {
        let dropped = get32(mem, DROPPED).saturating_add(1);
        put32(mem, DROPPED, dropped);
        return Err(RingError::Full);
    }
    let producer = get32(mem, PRODUCER);
    let (kind, vm, a, b, c) = match *ev {
        Event::VmState { vm, state } => (1, vm.0, state as u64, 0, 0),
        Event::FrameReady { vm, frame, damage } => (
            2,
            vm.0,
            frame,
            damage.x as u32 as u64 | (damage.y as u32 as u64) << 32,
            damage.w as u64 | (damage.h as u64) << 32,
        ),
        Event::ScriptDone { vm, steps, status } => (3, vm.0, steps, status as u64, 0),
        Event::Input { event } => {
            let r = event.encode();
            let half = |at: usize| {
                let mut h = [0u8; 8];
                h.copy_from_slice(&r[at..at + 8]);
                u64::from_le_bytes(h)
            };
            (4, 0, half(0), half(8), 0)
        }
        Event::ReservedKey { chord } => (5, 0, chord.modifiers().into(), chord.usage().into(), 0),
        // Never produced: only a consumer sees kinds it does not know.
        Event::Unknown { .. } => return Err(RingError::Corrupt),
    };
    let at = entry_at(producer, capacity);
    put32(mem, at, kind);
    put32(mem, at + 4, vm);
    for (i, v) in [a, b, c].into_iter().enumerate() {
        mem[at + 8 + i * 8..at + 16 + i * 8].copy_from_slice(&v.to_le_bytes());
    }
    Ok(producer.wrapping_add(1))
}

/// Makes the entries before `producer` visible to the consumer.
pub fn publish(mem: &mut [u8], producer: u32) {
    put32(mem, PRODUCER, producer);
}

/// The authority's side: the oldest event, if any, and the consumer index moved
/// past it.
pub fn pop(mem: &mut [u8]) -> Result<Option<Event>, RingError> {
    let capacity = check(mem)?;
    if pending(mem, capacity)? == 0 {
        return Ok(None);
    }
    let consumer = get32(mem, CONSUMER);
    let at = entry_at(consumer, capacity);
    let kind = get32(mem, at);
    let vm = VmId(get32(mem, at + 4));
    let (a, b, c) = (get64(mem, at + 8), get64(mem, at + 16), get64(mem, at + 24));
    let ev = match kind {
        1 => Event::VmState {
            vm,
            state: match a {
                0 => VmState::Off,
                1 => VmState::Running,
                2 => VmState::Paused,
                3 => VmState::Suspended,
                _ => return Err(RingError::Corrupt),
            },
        },
        2 => Event::FrameReady {
            vm,
            frame: a,
            damage: Rect {
                x: b as u32 as i32,
                y: (b >> 32) as u32 as i32,
                w: c as u32,
                h: (c >> 32) as u32,
            },
        },
        3 => Event::ScriptDone {
            vm,
            steps: a,
            status: b as i64,
        },
        4 => {
            let mut r = [0u8; EVENT_SIZE];
            r[..8].copy_from_slice(&a.to_le_bytes());
            r[8..].copy_from_slice(&b.to_le_bytes());
            Event::Input {
                event: InputEvent::decode(&r).map_err(|_| RingError::Corrupt)?,
            }
        }
        5 => Event::ReservedKey {
            chord: Chord::from_words(a, b).ok_or(RingError::Corrupt)?,
        },
        kind => Event::Unknown { kind },
    };
    put32(mem, CONSUMER, consumer.wrapping_add(1));
    Ok(Some(ev))
}

/// Events the hypervisor could not report because the ring was full.
pub fn dropped(mem: &[u8]) -> u32 {
    if mem.len() < HEADER_SIZE {
        return 0;
    }
    get32(mem, DROPPED)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    fn ev(i: u64) -> Event {
        match i % 5 {
            4 => Event::ReservedKey {
                chord: Chord::new(i as u8 & 0xf, 0x4a).unwrap(),
            },
            3 => Event::Input {
                event: InputEvent::PointerAbs {
                    x: i as i32,
                    y: -(i as i32),
                    space: crate::input::Space::Display,
                },
            },
            0 => Event::VmState {
                vm: VmId(i as u32),
                state: VmState::Paused,
            },
            1 => Event::FrameReady {
                vm: VmId(1),
                frame: i,
                damage: Rect {
                    x: -4,
                    y: 9,
                    w: 64,
                    h: 64,
                },
            },
            _ => Event::ScriptDone {
                vm: VmId(2),
                steps: i,
                status: -2,
            },
        }
    }

    fn send(mem: &mut [u8], e: &Event) -> Result<(), RingError> {
        let p = push(mem, e)?;
        publish(mem, p);
        Ok(())
    }

    #[test]
    fn init_takes_the_largest_power_of_two_that_fits() {
        let mut mem = vec![0xaa; HEADER_SIZE + 5 * ENTRY_SIZE + 7];
        assert_eq!(init(&mut mem), Ok(4));
        assert_eq!(check(&mem), Ok(4));
        assert_eq!(
            init(&mut [0; HEADER_SIZE + ENTRY_SIZE]),
            Err(RingError::Corrupt)
        );
        assert_eq!(init(&mut [0; 8]), Err(RingError::Corrupt));
        assert_eq!(
            init(&mut vec![0; MAX_BYTES as usize + 1]),
            Err(RingError::Corrupt)
        );
    }

    #[test]
    fn events_arrive_in_order_across_wraparound_and_a_full_ring_counts_drops() {
        let mut mem = vec![0; HEADER_SIZE + 4 * ENTRY_SIZE];
        init(&mut mem).unwrap();
        let mut next_out = 0u64;
        for i in 0..20u64 {
            send(&mut mem, &ev(i)).unwrap();
            if i % 2 == 1 {
                // The consumer lags by one event, then catches up.
                while let Some(e) = pop(&mut mem).unwrap() {
                    assert_eq!(e, ev(next_out));
                    next_out += 1;
                }
            }
        }
        for i in 0..4 {
            send(&mut mem, &ev(i)).unwrap();
        }
        assert_eq!(send(&mut mem, &ev(9)), Err(RingError::Full));
        assert_eq!(send(&mut mem, &ev(9)), Err(RingError::Full));
        assert_eq!(dropped(&mem), 2);
        let got: Vec<Event> = core::iter::from_fn(|| pop(&mut mem).unwrap()).collect();
        assert_eq!(got, (0..4).map(ev).collect::<Vec<_>>());
    }

    #[test]
    fn the_producer_index_wraps_at_u32() {
        let mut mem = vec![0; HEADER_SIZE + 2 * ENTRY_SIZE];
        init(&mut mem).unwrap();
        put32(&mut mem, PRODUCER, u32::MAX);
        put32(&mut mem, CONSUMER, u32::MAX);
        send(&mut mem, &ev(1)).unwrap();
        send(&mut mem, &ev(2)).unwrap();
        assert_eq!(get32(&mem, PRODUCER), 1);
        assert_eq!(pop(&mut mem).unwrap(), Some(ev(1)));
        assert_eq!(pop(&mut mem).unwrap(), Some(ev(2)));
        assert_eq!(pop(&mut mem).unwrap(), None);
    }

    #[test]
    fn a_scribbled_header_is_refused_not_trusted() {
        let mut good = vec![0; HEADER_SIZE + 8 * ENTRY_SIZE];
        init(&mut good).unwrap();
        let scribbles: [(usize, u32); 7] = [
            (0, 0x1234),   // magic
            (4, 2 << 16),  // another major
            (8, 6),        // capacity not a power of two
            (8, 16),       // capacity beyond the memory
            (12, 64),      // entry size
            (PRODUCER, 9), // producer ahead of consumer by more than capacity
            (40, 1),       // reserved
        ];
        for (at, v) in scribbles {
            let mut mem = good.clone();
            put32(&mut mem, at, v);
            assert_eq!(push(&mut mem, &ev(0)), Err(RingError::Corrupt), "{at}");
            assert_eq!(pop(&mut mem), Err(RingError::Corrupt), "{at}");
        }
    }

    #[test]
    fn unknown_kinds_are_skipped_by_an_older_consumer() {
        let mut mem = vec![0; HEADER_SIZE + 2 * ENTRY_SIZE];
        init(&mut mem).unwrap();
        send(&mut mem, &ev(0)).unwrap();
        put32(&mut mem, HEADER_SIZE, 77);
        send(&mut mem, &ev(3)).unwrap();
        assert_eq!(pop(&mut mem).unwrap(), Some(Event::Unknown { kind: 77 }));
        assert_eq!(pop(&mut mem).unwrap(), Some(ev(3)));
    }

    #[test]
    fn a_reserved_key_entry_that_is_not_a_chord_is_refused() {
        let mut mem = vec![0; HEADER_SIZE + 2 * ENTRY_SIZE];
        init(&mut mem).unwrap();
        send(&mut mem, &ev(4)).unwrap();
        // Its usage made a modifier's.
        mem[HEADER_SIZE + 16] = 0xe0;
        assert_eq!(pop(&mut mem), Err(RingError::Corrupt));
    }

    proptest! {
        /// Whatever the authority writes over a ring's header, the hypervisor's
        /// push and the consumer's pop answer without panicking or touching
        /// memory outside the slice they were given.
        #[test]
        fn push_and_pop_survive_any_header(
            entries in 2usize..20,
            scribbles in proptest::collection::vec((0usize..HEADER_SIZE, any::<u8>()), 0..6),
        ) {
            let mut mem = vec![0; HEADER_SIZE + entries * ENTRY_SIZE];
            init(&mut mem).unwrap();
            for (at, b) in scribbles {
                mem[at] = b;
            }
            for i in 0..3 {
                if let Ok(p) = push(&mut mem, &ev(i)) {
                    publish(&mut mem, p);
                }
            }
            let _ = pop(&mut mem);
        }
    }
}
