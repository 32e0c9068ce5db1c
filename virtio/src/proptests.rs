//! Property tests: random descriptor tables, indirect tables and available rings fed
//! to each device through the transport, and random register sequences. Properties:
//! no panic, and the only guest memory that changes lies inside the used ring or a
//! buffer some descriptor marks device-writable.

extern crate std;

use alloc::boxed::Box;
use alloc::vec::Vec;

use proptest::prelude::*;
use vdev::{AccessSize, GuestMemory};

use crate::blk::Blk;
use crate::console::Console;
use crate::defs::{features, mmio, ring};
use crate::device::VirtioDevice;
use crate::rng::{EntropyError, EntropySource, Rng};
use crate::testing::{MemDisk, TestDriver, RAM_BASE};

const RAM: u64 = 0x1_0000;
const QSIZE: u16 = 8;
const DESC: u64 = RAM_BASE + 0x1000;
const AVAIL: u64 = RAM_BASE + 0x2000;
const USED: u64 = RAM_BASE + 0x3000;
const INDIRECT: u64 = RAM_BASE + 0x4000;
const INDIRECT_ENTRIES: u16 = 8;
const DATA: u64 = RAM_BASE + 0x8000;

type Desc = (u64, u32, u16, u16);

/// Descriptor flags, biased towards plausible chains (readable, then writable).
fn flags() -> impl Strategy<Value = u16> {
    prop_oneof![
        3 => Just(ring::DESC_F_NEXT),
        3 => Just(ring::DESC_F_NEXT | ring::DESC_F_WRITE),
        2 => Just(ring::DESC_F_WRITE),
        1 => Just(ring::DESC_F_INDIRECT),
        2 => 0u16..8,
    ]
}

/// `next` as an offset from the descriptor's own index: mostly the one after it.
fn next_delta() -> impl Strategy<Value = u16> {
    prop_oneof![4 => Just(1u16), 1 => 0u16..10]
}

fn desc() -> impl Strategy<Value = Desc> {
    let addr = prop_oneof![
        6 => (0u64..0x900).prop_map(|o| RAM_BASE + 0x7000 + o * 16),
        2 => (0u64..RAM + 0x100).prop_map(|o| RAM_BASE + o),
        1 => Just(INDIRECT),
        1 => any::<u64>(),
    ];
    let len = prop_oneof![
        12 => 0u32..0x1300,
        2 => (1u32..10).prop_map(|n| n * 16),
        1 => Just(u32::MAX),
        1 => any::<u32>(),
    ];
    (addr, len, flags(), next_delta())
}

#[derive(Debug, Clone)]
struct Case {
    table: Vec<Desc>,
    indirect: Vec<Desc>,
    avail_idx: u16,
    heads: Vec<u16>,
    headers: Vec<(u32, u64)>,
    features: u64,
}

fn case() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(desc(), QSIZE as usize),
        prop::collection::vec(desc(), INDIRECT_ENTRIES as usize),
        prop_oneof![12 => 1u16..=QSIZE, 1 => any::<u16>()],
        prop::collection::vec(
            prop_oneof![12 => 0u16..QSIZE, 1 => 0u16..QSIZE + 2],
            QSIZE as usize,
        ),
        prop::collection::vec(
            (
                prop_oneof![0u32..2, Just(4), Just(8), Just(13), any::<u32>()],
                0u64..80,
            ),
            1..8,
        ),
        prop_oneof![
            Just(0),
            Just(features::INDIRECT_DESC),
            Just(features::INDIRECT_DESC | features::EVENT_IDX)
        ],
    )
        .prop_map(
            |(table, indirect, avail_idx, heads, headers, features)| Case {
                table,
                indirect,
                avail_idx,
                heads,
                headers,
                features,
            },
        )
}

/// Lays the case out in guest RAM, runs it against `device`, and checks that every
/// changed byte is in the used ring or a device-writable buffer.
fn run_case<D: VirtioDevice>(device: D, c: &Case, after_start: impl FnOnce(&mut TestDriver<D>)) {
    let mut d = TestDriver::new(device, RAM as usize);
    assert!(d.negotiate(features::VERSION_1 | c.features));
    let queues = d.transport.device().queue_max_sizes().len() as u16;
    for q in 0..queues {
        // Every queue shares the same random rings: the worst case for overlap.
        assert!(d.setup_queue_at(q, QSIZE, DESC, AVAIL, USED));
    }
    d.driver_ok();
    // Data region: request headers every 16 bytes, cycling through the case's list.
    let mut slot = DATA - 0x1000;
    let mut k = 0;
    while slot + 16 <= RAM_BASE + RAM {
        let (kind, sector) = c.headers[k % c.headers.len()];
        let mut h = [0u8; 16];
        h[..4].copy_from_slice(&kind.to_le_bytes());
        h[8..].copy_from_slice(&sector.to_le_bytes());
        d.write_mem(slot, &h);
        slot += 16;
        k += 1;
    }
    for (i, &(addr, len, flags, delta)) in c.table.iter().enumerate() {
        d.write_desc_at(
            DESC,
            i as u16,
            addr,
            len,
            flags,
            (i as u16 + delta) % (QSIZE + 2),
        );
    }
    for (i, &(addr, len, flags, delta)) in c.indirect.iter().enumerate() {
        d.write_desc_at(
            INDIRECT,
            i as u16,
            addr,
            len,
            flags,
            (i as u16 + delta) % (INDIRECT_ENTRIES + 2),
        );
    }
    for (i, &h) in c.heads.iter().enumerate() {
        d.mem.write_u16(AVAIL + 4 + 2 * i as u64, h).unwrap();
    }
    d.mem.write_u16(AVAIL + 2, c.avail_idx).unwrap();
    after_start(&mut d);
    let before = d.mem.as_bytes().to_vec();
    for q in 0..queues {
        d.notify(q);
        d.notify(q);
    }
    d.poll();

    let used_end =
        USED + ring::RING_HEADER + ring::USED_ELEM * u64::from(QSIZE) + ring::EVENT_FIELD;
    let mut allowed: Vec<(u64, u64)> = alloc::vec![(USED, used_end)];
    for &(addr, len, flags, _) in c.table.iter().chain(c.indirect.iter()) {
        if flags & ring::DESC_F_WRITE != 0 {
            allowed.push((addr, addr.saturating_add(u64::from(len))));
        }
    }
    for (i, (b, a)) in before.iter().zip(d.mem.as_bytes()).enumerate() {
        if b != a {
            let gpa = RAM_BASE + i as u64;
            assert!(
                allowed.iter().any(|&(s, e)| s <= gpa && gpa < e),
                "byte at {gpa:#x} changed outside every writable buffer"
            );
        }
    }
}

struct Fixed;
impl EntropySource for Fixed {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        buf.fill(0xa5);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn blk_random_rings_touch_only_writable_buffers(c in case()) {
        let mut disk = MemDisk::new(64, false);
        disk.data.fill(0x3c);
        run_case(Blk::new(vdev::SyncBlock(disk)), &c, |_| {});
    }

    #[test]
    fn rng_random_rings_touch_only_writable_buffers(c in case()) {
        run_case(Rng::new(Box::new(Fixed)), &c, |_| {});
    }

    #[test]
    fn console_random_rings_touch_only_writable_buffers(c in case()) {
        let console = Console::new(Box::new(|_: &[u8]| {}));
        run_case(console, &c, |d| {
            d.transport.device_mut().push_input(&[0x5a; 5000]);
        });
    }

    #[test]
    fn random_register_sequences_never_panic(
        ops in prop::collection::vec(
            (any::<bool>(), prop_oneof![4 => (0u64..0x40).prop_map(|r| r * 4), 1 => 0u64..0x200], 0u8..4, any::<u64>()),
            0..64,
        )
    ) {
        let mut d = TestDriver::new(Rng::new(Box::new(Fixed)), RAM as usize);
        for (write, offset, sas, value) in ops {
            let size = AccessSize::from_log2(sas).unwrap();
            let value = if offset == mmio::QUEUE_NUM { value % 16 } else { value };
            if write {
                let _ = d.try_write(offset, size, value);
            } else {
                let _ = d.try_read(offset, size);
            }
        }
        // The interrupt line always mirrors InterruptStatus.
        let isr = d.transport.interrupt_status();
        prop_assert_eq!(d.irq_level(), isr != 0);
    }
}

/// One well-formed virtio-blk request for the model test.
#[derive(Debug, Clone)]
struct BlkReq {
    kind: u32,
    sector: u64,
    /// Data segment lengths.
    segs: Vec<u32>,
    fill: u8,
    indirect: bool,
}

fn blk_req() -> impl Strategy<Value = BlkReq> {
    let kind = prop_oneof![
        4 => Just(crate::defs::blk::T_IN),
        4 => Just(crate::defs::blk::T_OUT),
        1 => Just(crate::defs::blk::T_FLUSH),
        1 => Just(crate::defs::blk::T_GET_ID),
        1 => any::<u32>(),
    ];
    let seg = prop_oneof![6 => (1u32..5).prop_map(|n| n * 512), 1 => 1u32..1500];
    (
        kind,
        prop_oneof![6 => 0u64..40, 1 => any::<u64>()],
        prop::collection::vec(seg, 0..4),
        any::<u8>(),
        any::<bool>(),
    )
        .prop_map(|(kind, sector, segs, fill, indirect)| BlkReq {
            kind,
            sector,
            segs,
            fill,
            indirect,
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Well-formed requests against a model disk: statuses, used lengths, disk
    /// contents and read data all match.
    #[test]
    fn blk_matches_a_model_disk(reqs in prop::collection::vec(blk_req(), 1..12)) {
        use crate::defs::blk;
        const SECTORS: usize = 32;
        let mut d = TestDriver::new(Blk::new(vdev::SyncBlock(MemDisk::new(SECTORS, false))), 1 << 20);
        d.start(features::INDIRECT_DESC);
        let mut model = alloc::vec![0u8; SECTORS * 512];
        for r in reqs {
            let total: u32 = r.segs.iter().sum();
            let writes = r.kind == blk::T_OUT;
            let hdr = d.alloc(16, 16);
            let mut h = [0u8; 16];
            h[..4].copy_from_slice(&r.kind.to_le_bytes());
            h[8..].copy_from_slice(&r.sector.to_le_bytes());
            d.write_mem(hdr, &h);
            let mut bufs = alloc::vec![(hdr, 16, false)];
            let mut data = Vec::new();
            for (k, &len) in r.segs.iter().enumerate() {
                let at = d.alloc(u64::from(len), 8);
                let bytes: Vec<u8> = (0..len).map(|i| r.fill.wrapping_add((i as u8) ^ (k as u8))).collect();
                d.write_mem(at, &bytes);
                data.extend_from_slice(&bytes);
                bufs.push((at, len, !writes));
            }
            let st = d.alloc(1, 1);
            bufs.push((st, 1, true));
            let head = if r.indirect { d.add_indirect(0, &bufs) } else { d.add_chain(0, &bufs) };
            d.notify(0);
            let (id, used_len) = d.pop_used(0).expect("completed");
            prop_assert_eq!(id, u32::from(head));
            let status = d.read_mem(st, 1)[0];

            let off = r.sector.checked_mul(512).filter(|o| o + u64::from(total) <= model.len() as u64);
            let whole = total.is_multiple_of(512);
            let (want_status, want_len) = match r.kind {
                blk::T_IN | blk::T_OUT if !whole || off.is_none() => (blk::S_IOERR, 1),
                blk::T_IN => (blk::S_OK, total + 1),
                blk::T_OUT => {
                    let o = off.unwrap() as usize;
                    model[o..o + total as usize].copy_from_slice(&data);
                    (blk::S_OK, 1)
                }
                blk::T_FLUSH => (blk::S_OK, 1),
                blk::T_GET_ID => (blk::S_OK, total.min(20) + 1),
                _ => (blk::S_UNSUPP, 1),
            };
            prop_assert_eq!((status, used_len), (want_status, want_len), "request {:?}", r);
            if r.kind == blk::T_IN && want_status == blk::S_OK {
                let o = off.unwrap() as usize;
                let mut got = Vec::new();
                let mut at = bufs.iter().skip(1);
                for &len in &r.segs {
                    got.extend(d.read_mem(at.next().unwrap().0, len as usize));
                }
                prop_assert_eq!(&got[..], &model[o..o + total as usize]);
            }
            prop_assert_eq!(&d.transport.device().backend().0.data[..], &model[..]);
        }
        prop_assert!(!d.transport.needs_reset());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Restoring corrupted saved state never panics, and a refused blob leaves the
    /// transport unchanged.
    #[test]
    fn restore_of_corrupted_blobs_never_panics(
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<prop::sample::Index>(),
        truncate in any::<bool>(),
    ) {
        use vdev::SaveRestore;
        let mut d = TestDriver::new(Rng::new(Box::new(Fixed)), RAM as usize);
        d.start(features::EVENT_IDX);
        let mut blob = d.transport.save();
        for (at, v) in flips {
            let i = at.index(blob.len());
            blob[i] = v;
        }
        if truncate {
            blob.truncate(cut.index(blob.len()));
        }
        let mut e = TestDriver::new(Rng::new(Box::new(Fixed)), RAM as usize);
        let fresh = e.transport.save();
        if e.transport.restore(&blob).is_err() {
            prop_assert_eq!(e.transport.save(), fresh);
        } else {
            // Whatever was accepted must run safely.
            e.notify(0);
            e.poll();
        }
    }
}
