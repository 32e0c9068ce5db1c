//! Split-virtqueue tests: validation of every driver-controlled field, ring
//! wrap-around and interrupt suppression.

use super::*;
use vdev::VecMemory;

const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const ALL: u64 = features::TRANSPORT;

fn setup(size: u16) -> (VecMemory, Queue) {
    let mem = VecMemory::new(0, 0x10000);
    let mut q = Queue::new(256);
    q.size = size;
    q.desc_addr = DESC;
    q.avail_addr = AVAIL;
    q.used_addr = USED;
    q.activate(&mem).unwrap();
    (mem, q)
}

fn put_desc(m: &mut VecMemory, table: u64, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
    let at = table + 16 * u64::from(i);
    m.write_u64(at, addr).unwrap();
    m.write_u32(at + 8, len).unwrap();
    m.write_u16(at + 12, flags).unwrap();
    m.write_u16(at + 14, next).unwrap();
}

fn offer(m: &mut VecMemory, q: &Queue, slot: u16, head: u16) {
    m.write_u16(AVAIL + 4 + 2 * u64::from(slot % q.size), head)
        .unwrap();
    m.write_u16(AVAIL + 2, slot.wrapping_add(1)).unwrap();
}

#[test]
fn activate_checks_size_alignment_and_ram() {
    let mem = VecMemory::new(0, 0x10000);
    let mut q = Queue::new(256);
    q.size = 3;
    assert_eq!(q.activate(&mem), Err(QueueError::BadSize(3)));
    q.size = 512;
    assert_eq!(q.activate(&mem), Err(QueueError::BadSize(512)));
    q.size = 0;
    assert_eq!(q.activate(&mem), Err(QueueError::BadSize(0)));
    q.size = 16;
    q.desc_addr = 8;
    assert!(matches!(
        q.activate(&mem),
        Err(QueueError::Misaligned { .. })
    ));
    q.desc_addr = 0;
    q.used_addr = 0xfffe;
    assert!(matches!(
        q.activate(&mem),
        Err(QueueError::Misaligned { .. })
    ));
    q.used_addr = 0xfff0;
    assert!(matches!(q.activate(&mem), Err(QueueError::Memory(_))));
    q.used_addr = u64::MAX - 3;
    assert_eq!(
        q.activate(&mem),
        Err(QueueError::RingOverflow(RingKind::Used))
    );
    assert!(!q.ready);
}

#[test]
fn pops_direct_chain_in_order() {
    let (mut m, mut q) = setup(8);
    put_desc(&mut m, DESC, 5, 0x8000, 16, ring::DESC_F_NEXT, 2);
    put_desc(
        &mut m,
        DESC,
        2,
        0x9000,
        512,
        ring::DESC_F_NEXT | ring::DESC_F_WRITE,
        7,
    );
    put_desc(&mut m, DESC, 7, 0xa000, 1, ring::DESC_F_WRITE, 0);
    offer(&mut m, &q, 0, 5);
    let c = q.pop(&mut m, ALL).unwrap().unwrap();
    assert_eq!(c.head, 5);
    assert_eq!(
        c.readable,
        alloc::vec![Segment {
            addr: 0x8000,
            len: 16
        }]
    );
    assert_eq!(c.writable.len(), 2);
    assert_eq!(c.writable_len(), 513);
    assert_eq!(q.pop(&mut m, ALL).unwrap(), None);
    // avail_event written with EVENT_IDX.
    assert_eq!(m.read_u16(USED + 4 + 8 * 8).unwrap(), 1);
}

#[test]
fn pop_into_reuses_a_chain_and_gives_what_pop_gives() {
    let (mut m, mut q) = setup(8);
    let (mut m2, mut q2) = setup(8);
    for mem in [&mut m, &mut m2] {
        put_desc(mem, DESC, 1, 0x8000, 16, ring::DESC_F_NEXT, 3);
        put_desc(mem, DESC, 3, 0x9000, 64, ring::DESC_F_WRITE, 0);
        put_desc(mem, DESC, 4, 0xa000, 8, ring::DESC_F_WRITE, 0);
    }
    offer(&mut m, &q, 0, 1);
    offer(&mut m2, &q2, 0, 1);
    // A chain left over from an earlier pop: its segments do not leak into the next.
    let mut chain = q2.pop(&mut m2, ALL).unwrap().unwrap();
    assert_eq!(Some(&chain), q.pop(&mut m, ALL).unwrap().as_ref());
    offer(&mut m, &q, 1, 4);
    offer(&mut m2, &q2, 1, 4);
    assert!(q2.pop_into(&mut m2, ALL, &mut chain).unwrap());
    assert_eq!(Some(&chain), q.pop(&mut m, ALL).unwrap().as_ref());
    assert_eq!(chain.head, 4);
    assert!(chain.readable.is_empty());
    assert_eq!(chain.writable_len(), 8);
    // Nothing left: false, as pop's None.
    assert!(!q2.pop_into(&mut m2, ALL, &mut chain).unwrap());
    assert_eq!(q.pop(&mut m, ALL).unwrap(), None);
    // A bad head is refused by both.
    offer(&mut m2, &q2, 2, 9);
    assert_eq!(
        q2.pop_into(&mut m2, ALL, &mut chain),
        Err(QueueError::HeadOutOfRange(9))
    );
}

#[test]
fn used_ring_wraps() {
    let (mut m, mut q) = setup(4);
    put_desc(&mut m, DESC, 0, 0x8000, 4, ring::DESC_F_WRITE, 0);
    for i in 0..70_000u32 {
        let slot = i as u16;
        offer(&mut m, &q, slot, 0);
        let c = q.pop(&mut m, 0).unwrap().unwrap();
        q.push_used(&mut m, c.head, i).unwrap();
    }
    assert_eq!(m.read_u16(USED + 2).unwrap(), 70_000u32 as u16);
    let last_slot = u64::from((69_999u32 as u16) % 4);
    assert_eq!(m.read_u32(USED + 4 + 8 * last_slot + 4).unwrap(), 69_999);
}

#[test]
fn refuses_malformed_chains() {
    type Build<'a> = &'a dyn Fn(&mut VecMemory);
    let cases: &[(Build, QueueError)] = &[
        (
            &|m| put_desc(m, DESC, 0, 0x8000, 4, ring::DESC_F_NEXT, 0),
            QueueError::ChainTooLong,
        ),
        (
            &|m| put_desc(m, DESC, 0, 0x8000, 4, ring::DESC_F_NEXT, 8),
            QueueError::NextOutOfRange(8),
        ),
        (
            &|m| {
                put_desc(
                    m,
                    DESC,
                    0,
                    0x8000,
                    4,
                    ring::DESC_F_WRITE | ring::DESC_F_NEXT,
                    1,
                );
                put_desc(m, DESC, 1, 0x8000, 4, 0, 0);
            },
            QueueError::ReadableAfterWritable,
        ),
        (
            &|m| put_desc(m, DESC, 0, u64::MAX - 1, 4, 0, 0),
            QueueError::AddressOverflow,
        ),
        (
            &|m| put_desc(m, DESC, 0, 0x8000, u32::MAX, ring::DESC_F_WRITE, 0),
            QueueError::ChainTooManyBytes,
        ),
        (
            &|m| {
                put_desc(
                    m,
                    DESC,
                    0,
                    0x8000,
                    32,
                    ring::DESC_F_INDIRECT | ring::DESC_F_NEXT,
                    1,
                )
            },
            QueueError::IndirectWithNext,
        ),
        (
            &|m| put_desc(m, DESC, 0, 0x8000, 24, ring::DESC_F_INDIRECT, 0),
            QueueError::IndirectBadLength(24),
        ),
        (
            &|m| put_desc(m, DESC, 0, 0x8000, 16 * 2048, ring::DESC_F_INDIRECT, 0),
            QueueError::IndirectTooLarge(2048),
        ),
        (
            &|m| {
                put_desc(m, DESC, 0, 0x8000, 32, ring::DESC_F_INDIRECT, 0);
                put_desc(m, 0x8000, 0, 0x9000, 16, ring::DESC_F_INDIRECT, 0);
            },
            QueueError::NestedIndirect,
        ),
        (
            &|m| {
                put_desc(m, DESC, 0, 0x8000, 32, ring::DESC_F_INDIRECT, 0);
                put_desc(m, 0x8000, 0, 0x9000, 16, ring::DESC_F_NEXT, 1);
                put_desc(m, 0x8000, 1, 0x9000, 16, ring::DESC_F_NEXT, 0);
            },
            QueueError::ChainTooLong,
        ),
        (
            &|m| {
                put_desc(m, DESC, 0, 0x8000, 32, ring::DESC_F_INDIRECT, 0);
                put_desc(m, 0x8000, 0, 0x9000, 16, ring::DESC_F_NEXT, 2);
            },
            QueueError::NextOutOfRange(2),
        ),
        (
            &|m| put_desc(m, DESC, 0, 0xfff8, 32, ring::DESC_F_INDIRECT, 0),
            QueueError::Memory(MemError::OutOfRange { gpa: 0x10000 }),
        ),
    ];
    for (i, (build, want)) in cases.iter().enumerate() {
        let (mut m, mut q) = setup(8);
        build(&mut m);
        offer(&mut m, &q, 0, 0);
        assert_eq!(q.pop(&mut m, ALL), Err(*want), "case {i}");
    }
}

#[test]
fn refuses_bad_heads_and_index_jumps_and_unnegotiated_indirect() {
    let (mut m, mut q) = setup(8);
    offer(&mut m, &q, 0, 8);
    assert_eq!(q.pop(&mut m, ALL), Err(QueueError::HeadOutOfRange(8)));
    let (mut m, mut q) = setup(8);
    m.write_u16(AVAIL + 2, 9).unwrap();
    assert!(matches!(
        q.pop(&mut m, ALL),
        Err(QueueError::AvailIdxJump { .. })
    ));
    let (mut m, mut q) = setup(8);
    put_desc(&mut m, DESC, 0, 0x8000, 16, ring::DESC_F_INDIRECT, 0);
    offer(&mut m, &q, 0, 0);
    assert_eq!(q.pop(&mut m, 0), Err(QueueError::IndirectNotNegotiated));
}

#[test]
fn indirect_after_direct_descriptors_is_accepted() {
    let (mut m, mut q) = setup(8);
    put_desc(&mut m, DESC, 3, 0x7000, 16, ring::DESC_F_NEXT, 4);
    put_desc(
        &mut m,
        DESC,
        4,
        0x8000,
        32,
        ring::DESC_F_INDIRECT | ring::DESC_F_WRITE,
        0,
    );
    put_desc(&mut m, 0x8000, 0, 0x9000, 8, ring::DESC_F_NEXT, 1);
    put_desc(&mut m, 0x8000, 1, 0xa000, 9, ring::DESC_F_WRITE, 0);
    offer(&mut m, &q, 0, 3);
    let c = q.pop(&mut m, ALL).unwrap().unwrap();
    assert_eq!(c.readable_len(), 24);
    assert_eq!(
        c.writable,
        alloc::vec![Segment {
            addr: 0xa000,
            len: 9
        }]
    );
}

#[test]
fn interrupt_suppression() {
    assert!(need_event(0, 1, 0));
    assert!(!need_event(1, 1, 0));
    assert!(need_event(0xffff, 0, 0xffff));
    // Without EVENT_IDX: the avail flag decides.
    let (mut m, mut q) = setup(8);
    assert!(q.should_interrupt(&m, 0).unwrap());
    m.write_u16(AVAIL, ring::AVAIL_F_NO_INTERRUPT).unwrap();
    assert!(!q.should_interrupt(&m, 0).unwrap());
    // With EVENT_IDX: used_event decides after the first signal.
    put_desc(&mut m, DESC, 0, 0x8000, 4, ring::DESC_F_WRITE, 0);
    let used_event_at = AVAIL + 4 + 2 * 8;
    for (slot, used_event, want) in [(0u16, 0u16, true), (1, 5, false), (2, 2, true)] {
        offer(&mut m, &q, slot, 0);
        let c = q.pop(&mut m, ALL).unwrap().unwrap();
        q.push_used(&mut m, c.head, 0).unwrap();
        m.write_u16(used_event_at, used_event).unwrap();
        assert_eq!(q.should_interrupt(&m, ALL).unwrap(), want, "slot {slot}");
    }
}
