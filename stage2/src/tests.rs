//! Unit tests of [`Stage2`] operations against [`SimAllocator`].

use crate::defs::granule::PAGE_SIZE;
use crate::{Attrs, Error, Flush, Layout, MemType, Perms, SimAllocator, Stage2, TableAllocator};

mod model;

const KIB4: u64 = PAGE_SIZE;
const MIB2: u64 = 2 << 20;
const GIB1: u64 = 1 << 30;

const RW: Attrs = Attrs::normal(Perms::RW);
const RWX: Attrs = Attrs::normal(Perms::RWX);
const DEV: Attrs = Attrs::device(Perms::RW);

fn setup(parange: u8) -> (SimAllocator, Stage2) {
    let mut a = SimAllocator::new();
    let s = Stage2::new(&mut a, Layout::from_parange(parange, 48).unwrap(), 5).unwrap();
    (a, s)
}

/// (pa, level) of a translation, for compact assertions.
fn tr(s: &Stage2, a: &mut SimAllocator, ipa: u64) -> Option<(u64, u8)> {
    s.translate(a, ipa).map(|t| (t.pa, t.level))
}

#[test]
fn new_registers() {
    let (a, s) = setup(0b0010);
    assert_eq!(a.live_tables(), 2);
    assert_eq!(s.root_pa() % (2 * PAGE_SIZE), 0);
    assert_eq!(s.vttbr(), s.root_pa() | (5 << 48));
    assert_eq!(s.vtcr(), 0x8002_3558);
    assert_eq!(s.layout().concat, 2);
    assert_eq!(s.vmid(), 5);
}

#[test]
fn new_checks_vmid_and_layout() {
    let mut a = SimAllocator::new();
    let l = Layout::from_parange(0b0101, 48).unwrap();
    assert_eq!(Stage2::new(&mut a, l, 256).err(), Some(Error::VmidTooLarge));
    let s = Stage2::new(&mut a, l.with_vmid16(true), 0x1234).unwrap();
    assert_eq!(s.vttbr() >> 48, 0x1234);
    assert_eq!(s.vtcr(), 0x800D_3590);
    let mut bad = l;
    bad.start_level = 1;
    assert_eq!(
        Stage2::new(&mut a, bad, 1).err(),
        Some(Error::InvalidLayout)
    );
    assert_eq!(
        Stage2::new(&mut SimAllocator::with_budget(0), l, 1).err(),
        Some(Error::OutOfMemory)
    );
    s.destroy(&mut a);
    assert_eq!(a.live_tables(), 0);
    assert_eq!(a.bad_ops(), 0);
}

#[test]
fn gib_block_when_aligned() {
    let (mut a, mut s) = setup(0b0101); // level-0 start
    s.map(&mut a, GIB1, 3 * GIB1, GIB1, RWX).unwrap();
    // Root plus one level-1 table holding the block.
    assert_eq!(a.live_tables(), 2);
    let t = s.translate(&mut a, GIB1 + 0x1234_5000).unwrap();
    assert_eq!(t.pa, 3 * GIB1 + 0x1234_5000);
    assert_eq!((t.level, t.block_size), (1, GIB1));
    assert_eq!(t.attrs, RWX);
    assert_eq!(s.translate(&mut a, GIB1 - KIB4), None);
    assert_eq!(s.translate(&mut a, 2 * GIB1), None);
}

#[test]
fn mib_blocks_and_pages_mixed() {
    let (mut a, mut s) = setup(0b0010); // level-1 start, 2 root tables
                                        // [2M - 4K, 6M + 4K) -> one page, two 2 MiB blocks, one page.
    let ipa = MIB2 - KIB4;
    let pa = 0x4000_0000 + MIB2 - KIB4;
    s.map(&mut a, ipa, pa, 2 * MIB2 + 2 * KIB4, RW).unwrap();
    assert_eq!(tr(&s, &mut a, ipa), Some((pa, 3)));
    assert_eq!(tr(&s, &mut a, MIB2), Some((pa + KIB4, 2)));
    assert_eq!(
        tr(&s, &mut a, 2 * MIB2 + 0x10),
        Some((pa + KIB4 + MIB2 + 0x10, 2))
    );
    assert_eq!(tr(&s, &mut a, 3 * MIB2), Some((pa + KIB4 + 2 * MIB2, 3)));
    assert_eq!(tr(&s, &mut a, 3 * MIB2 + KIB4), None);
    assert_eq!(tr(&s, &mut a, ipa - KIB4), None);
    // Root (2) + one level-2 table + two level-3 tables.
    assert_eq!(a.live_tables(), 5);
}

#[test]
fn pages_when_pa_misaligned() {
    let (mut a, mut s) = setup(0b0010);
    s.map(&mut a, 0, 0x4000_1000, MIB2, DEV).unwrap();
    let t = s.translate(&mut a, 0x1_F000).unwrap();
    assert_eq!((t.pa, t.level, t.block_size), (0x4002_0000, 3, KIB4));
    assert_eq!(t.attrs.mem, MemType::Device);
    assert_eq!(tr(&s, &mut a, MIB2 - KIB4), Some((0x4020_0000, 3)));
}

#[test]
fn map_refuses_overlap_and_changes_nothing() {
    let (mut a, mut s) = setup(0b0010);
    s.map(&mut a, MIB2, 0x4000_0000, MIB2, RW).unwrap();
    let before = a.live_tables();
    let e = s.map(&mut a, 0, 0x9000_0000, MIB2 + KIB4, RWX);
    assert_eq!(e, Err(Error::AlreadyMapped));
    assert_eq!(a.live_tables(), before);
    assert_eq!(tr(&s, &mut a, 0), None);
    assert_eq!(tr(&s, &mut a, MIB2), Some((0x4000_0000, 2)));
    assert_eq!(s.translate(&mut a, MIB2).unwrap().attrs, RW);
    // Same range again.
    assert_eq!(s.map(&mut a, MIB2, 0, MIB2, RW), Err(Error::AlreadyMapped));
}

#[test]
fn range_errors() {
    let (mut a, mut s) = setup(0b0010); // 40-bit IPA and PA
    let top = 1u64 << 40;
    assert_eq!(s.map(&mut a, 0x800, 0, KIB4, RW), Err(Error::Unaligned));
    assert_eq!(s.map(&mut a, 0, 0x800, KIB4, RW), Err(Error::Unaligned));
    assert_eq!(s.map(&mut a, 0, 0, 0x800, RW), Err(Error::Unaligned));
    assert_eq!(
        s.map(&mut a, top - KIB4, 0, 2 * KIB4, RW),
        Err(Error::IpaOutOfRange)
    );
    assert_eq!(s.map(&mut a, top, 0, KIB4, RW), Err(Error::IpaOutOfRange));
    assert_eq!(
        s.map(&mut a, 0, top - KIB4, 2 * KIB4, RW),
        Err(Error::PaOutOfRange)
    );
    assert_eq!(s.map(&mut a, !0xFFF, 0, 2 * KIB4, RW), Err(Error::Overflow));
    assert_eq!(s.map(&mut a, 0, !0xFFF, 2 * KIB4, RW), Err(Error::Overflow));
    assert_eq!(s.unmap(&mut a, 0x10, KIB4), Err(Error::Unaligned));
    assert_eq!(s.unmap(&mut a, top, KIB4), Err(Error::IpaOutOfRange));
    assert_eq!(s.protect(&mut a, 0, KIB4, RW), Err(Error::NotMapped));
    assert_eq!(
        s.protect(&mut a, !0xFFF, KIB4 * 2, RW),
        Err(Error::Overflow)
    );
    assert_eq!(s.translate(&mut a, top), None);
    assert_eq!(s.translate(&mut a, u64::MAX), None);
    // Zero sizes are no-ops.
    assert_eq!(s.map(&mut a, 0, 0, 0, RW), Ok(()));
    assert_eq!(s.unmap(&mut a, 0, 0), Ok(Flush::NONE));
    assert_eq!(s.protect(&mut a, 0, 0, RW), Ok(Flush::NONE));
    // The whole IPA space can be mapped right up to the top.
    s.map(&mut a, top - GIB1, 0, GIB1, RW).unwrap();
    assert_eq!(tr(&s, &mut a, top - 1), Some((GIB1 - 1, 1)));
    assert_eq!(a.live_tables(), 2);
    assert_eq!(a.bad_ops(), 0);
}

#[test]
fn partial_unmap_splits_gib_block() {
    let (mut a, mut s) = setup(0b0101);
    s.map(&mut a, GIB1, 0, GIB1, RW).unwrap();
    let hole = GIB1 + 5 * MIB2 + 3 * KIB4;
    let f = s.unmap(&mut a, hole, KIB4).unwrap();
    // The split 1 GiB block is part of what changed.
    assert_eq!(f.range(), Some(GIB1..2 * GIB1));
    assert_eq!(tr(&s, &mut a, hole), None);
    assert_eq!(tr(&s, &mut a, hole - KIB4), Some((hole - KIB4 - GIB1, 3)));
    assert_eq!(tr(&s, &mut a, hole + KIB4), Some((hole + KIB4 - GIB1, 3)));
    assert_eq!(tr(&s, &mut a, GIB1), Some((0, 2)));
    assert_eq!(tr(&s, &mut a, 2 * GIB1 - 1), Some((GIB1 - 1, 2)));
    // Root, level 1, one level-2 table, one level-3 table.
    assert_eq!(a.live_tables(), 4);
    // Two splits through break-before-make.
    assert_eq!(a.bbm_calls(), 2);
    // Attributes survive the split.
    assert_eq!(s.translate(&mut a, hole + KIB4).unwrap().attrs, RW);
}

#[test]
fn protect_splits_and_reattributes() {
    let (mut a, mut s) = setup(0b0010);
    s.map(&mut a, 0, 0x4000_0000, 4 * MIB2, RWX).unwrap();
    let ro = Attrs::normal(Perms::R);
    let f = s.protect(&mut a, MIB2 + KIB4, MIB2, ro).unwrap();
    assert_eq!(f.range(), Some(MIB2..3 * MIB2));
    assert_eq!(s.translate(&mut a, MIB2).unwrap().attrs, RWX);
    assert_eq!(s.translate(&mut a, MIB2 + KIB4).unwrap().attrs, ro);
    assert_eq!(s.translate(&mut a, 2 * MIB2).unwrap().attrs, ro);
    assert_eq!(s.translate(&mut a, 2 * MIB2 + KIB4).unwrap().attrs, RWX);
    assert_eq!(tr(&s, &mut a, 2 * MIB2), Some((0x4000_0000 + 2 * MIB2, 3)));
    assert_eq!(tr(&s, &mut a, 3 * MIB2), Some((0x4000_0000 + 3 * MIB2, 2)));
    // Two block splits, no memory-type change.
    assert_eq!(a.bbm_calls(), 2);
    // Same attributes again: nothing changes, nothing to flush.
    assert_eq!(s.protect(&mut a, MIB2 + KIB4, MIB2, ro), Ok(Flush::NONE));
    // A memory-type change on a whole block goes through break-before-make.
    let f = s.protect(&mut a, 3 * MIB2, MIB2, DEV).unwrap();
    assert_eq!(f.range(), Some(3 * MIB2..4 * MIB2));
    assert_eq!(a.bbm_calls(), 3);
    let t = s.translate(&mut a, 3 * MIB2 + 8).unwrap();
    assert_eq!((t.attrs, t.level), (DEV, 2));
    // Protect across a hole is refused and changes nothing.
    assert_eq!(
        s.protect(&mut a, 3 * MIB2, 2 * MIB2, RW),
        Err(Error::NotMapped)
    );
    assert_eq!(s.translate(&mut a, 3 * MIB2).unwrap().attrs, DEV);
}

#[test]
fn unmap_everything_frees_all_but_root() {
    for parange in [0b0000, 0b0010, 0b0011, 0b0101] {
        let (mut a, mut s) = setup(parange);
        let root = a.live_tables();
        s.map(&mut a, 0, 0x4000_0000, 3 * GIB1 / 2, RW).unwrap();
        s.map(&mut a, 2 * GIB1 - KIB4, 0x1000, 5 * KIB4, DEV)
            .unwrap();
        s.map(
            &mut a,
            3 * GIB1 + 7 * KIB4,
            0x9_0000_0000 % s.layout().pa_size(),
            3 * MIB2,
            RWX,
        )
        .unwrap();
        assert!(a.live_tables() > root);
        // Unmap in awkward pieces: splits, holes and whole tables.
        let f1 = s.unmap(&mut a, MIB2 + KIB4, GIB1).unwrap();
        assert!(f1.needed());
        let _ = s.unmap(&mut a, 0, 2 * GIB1).unwrap();
        let _ = s.unmap(&mut a, 2 * GIB1, 2 * GIB1).unwrap();
        assert_eq!(a.live_tables(), root, "parange {parange}");
        assert_eq!(tr(&s, &mut a, 3 * GIB1 + 8 * KIB4), None);
        // Nothing left: unmapping again changes nothing.
        assert_eq!(s.unmap(&mut a, 0, 4 * GIB1), Ok(Flush::NONE));
        s.destroy(&mut a);
        assert_eq!(a.live_tables(), 0);
        assert_eq!(a.bad_ops(), 0);
    }
}

#[test]
fn destroy_frees_populated_tables() {
    let (mut a, mut s) = setup(0b0101);
    s.map(&mut a, 0, 0, 3 * MIB2 + 5 * KIB4, RW).unwrap();
    s.map(&mut a, 1 << 40, 0, KIB4, RW).unwrap();
    assert!(a.live_tables() > 4);
    s.destroy(&mut a);
    assert_eq!(a.live_tables(), 0);
    assert_eq!(a.bad_ops(), 0);
}

#[test]
fn map_out_of_memory_rolls_back() {
    let mut a = SimAllocator::with_budget(4);
    let l = Layout::from_parange(0b0101, 48).unwrap();
    let mut s = Stage2::new(&mut a, l, 1).unwrap();
    s.map(&mut a, 0, 0, KIB4, RW).unwrap(); // root + L1 + L2 + L3
    assert_eq!(a.live_tables(), 4);
    // The last page needs a second level-3 table -> fails after mapping the rest.
    assert_eq!(
        s.map(&mut a, MIB2 - KIB4, 0x10_0000, 2 * KIB4 + MIB2 * 4, RW),
        Err(Error::OutOfMemory)
    );
    assert_eq!(a.live_tables(), 4);
    assert_eq!(tr(&s, &mut a, MIB2 - KIB4), None);
    assert_eq!(tr(&s, &mut a, MIB2), None);
    assert_eq!(tr(&s, &mut a, 0), Some((0, 3)));
    assert_eq!(a.bad_ops(), 0);
}

#[test]
fn unmap_without_memory_for_split_changes_nothing() {
    let mut a = SimAllocator::with_budget(3);
    let l = Layout::from_parange(0b0101, 48).unwrap();
    let mut s = Stage2::new(&mut a, l, 1).unwrap();
    s.map(&mut a, 0, 0, GIB1, RW).unwrap(); // root + L1
                                            // Splitting down to a page needs two tables; only one is left.
    assert_eq!(s.unmap(&mut a, 0x1000, KIB4), Err(Error::OutOfMemory));
    assert_eq!(tr(&s, &mut a, 0x1000), Some((0x1000, 1)));
    assert_eq!(a.live_tables(), 2);
    assert_eq!(a.bbm_calls(), 0);
    // A 2 MiB-aligned hole needs only one table and fits.
    let f = s.unmap(&mut a, MIB2, MIB2).unwrap();
    assert_eq!(f.range(), Some(0..GIB1));
    assert_eq!(tr(&s, &mut a, MIB2), None);
    assert_eq!(tr(&s, &mut a, 0), Some((0, 2)));
    assert_eq!(a.live_tables(), 3);
}

#[test]
fn flush_reports_only_changed_valid_entries() {
    let (mut a, mut s) = setup(0b0010);
    s.map(&mut a, 4 * MIB2, 0, 3 * KIB4, RW).unwrap();
    // Unmapping an empty range next to it needs no flush.
    assert_eq!(s.unmap(&mut a, 0, 4 * MIB2), Ok(Flush::NONE));
    // Unmapping one page: the page.
    let f = s.unmap(&mut a, 4 * MIB2 + KIB4, KIB4).unwrap();
    assert_eq!(f.range(), Some(4 * MIB2 + KIB4..4 * MIB2 + 2 * KIB4));
    // Unmapping the rest frees the level-3 table and then the now empty
    // level-2 table: the span of the level-1 entry that pointed at it is
    // reported (walk caches may hold that entry for any IPA below it).
    let f = s.unmap(&mut a, 4 * MIB2, MIB2).unwrap();
    assert_eq!(f.range(), Some(0..GIB1));
    assert_eq!(a.live_tables(), 2);
}

#[test]
fn small_ipa_layout_works() {
    let mut a = SimAllocator::new();
    let l = Layout::from_parange(0b0000, 32).unwrap(); // level 2, 4 tables
    let mut s = Stage2::new(&mut a, l, 0).unwrap();
    s.map(&mut a, 3 * GIB1, 0, GIB1, RW).unwrap();
    // Level-2 start: 2 MiB blocks in the concatenated root, no extra tables.
    assert_eq!(a.live_tables(), 4);
    assert_eq!(tr(&s, &mut a, (1 << 32) - 1), Some((GIB1 - 1, 2)));
    assert_eq!(
        s.map(&mut a, 1 << 32, 0, KIB4, RW),
        Err(Error::IpaOutOfRange)
    );
    s.destroy(&mut a);
    assert_eq!(a.live_tables(), 0);
}

/// The allocator hooks are called in the architected order.
#[test]
fn hooks_are_called() {
    #[derive(Default)]
    struct Log {
        inner: Option<SimAllocator>,
        events: alloc::vec::Vec<&'static str>,
    }
    impl TableAllocator for Log {
        fn alloc_tables(&mut self, count: usize) -> Option<u64> {
            self.events.push("alloc");
            self.inner.as_mut()?.alloc_tables(count)
        }
        fn free_tables(&mut self, pa: u64, count: usize) {
            self.events.push("free");
            if let Some(i) = self.inner.as_mut() {
                i.free_tables(pa, count)
            }
        }
        fn table(&mut self, pa: u64) -> &mut [u64; 512] {
            self.inner.get_or_insert_with(SimAllocator::new).table(pa)
        }
        fn break_before_make(&mut self, _ipa: u64, _size: u64) {
            self.events.push("bbm");
        }
        fn publish_barrier(&mut self) {
            self.events.push("barrier");
        }
    }
    let mut a = Log {
        inner: Some(SimAllocator::new()),
        ..Log::default()
    };
    let l = Layout::from_parange(0b0010, 48).unwrap();
    let mut s = Stage2::new(&mut a, l, 0).unwrap();
    s.map(&mut a, 0, 0, MIB2, RW).unwrap();
    assert_eq!(a.events, ["alloc", "alloc", "barrier"]);
    a.events.clear();
    let _ = s.unmap(&mut a, 0, KIB4).unwrap();
    assert_eq!(a.events, ["alloc", "barrier", "bbm"]);
}

#[test]
fn translate_range_checks_buffers() {
    let (mut a, mut s) = setup(0b0010);
    // [0, 2M): block at 0x4000_0000; [2M, 2M + 8K): pages continuing it;
    // then a page elsewhere, then a read-only page, then a device page.
    s.map(&mut a, 0, 0x4000_0000, MIB2, RW).unwrap();
    s.map(&mut a, MIB2, 0x4020_0000, 2 * KIB4, RW).unwrap();
    s.map(&mut a, MIB2 + 2 * KIB4, 0x9000_0000, KIB4, RW)
        .unwrap();
    s.map(
        &mut a,
        MIB2 + 3 * KIB4,
        0x4020_3000,
        KIB4,
        Attrs::normal(Perms::R),
    )
    .unwrap();
    s.map(&mut a, MIB2 + 4 * KIB4, 0x4020_4000, KIB4, DEV)
        .unwrap();
    let rr = |s: &Stage2, a: &mut SimAllocator, ipa, len, p| s.translate_range(a, ipa, len, p);
    // Across the block/page boundary, contiguous.
    assert_eq!(
        rr(&s, &mut a, MIB2 - 16, 32, Perms::RW),
        Some(0x4000_0000 + MIB2 - 16)
    );
    assert_eq!(
        rr(&s, &mut a, 0x10, MIB2 + 2 * KIB4 - 0x10, Perms::RW),
        Some(0x4000_0010)
    );
    // One more byte reaches the non-contiguous page.
    assert_eq!(rr(&s, &mut a, 0x10, MIB2 + 2 * KIB4 - 0xF, Perms::RW), None);
    // Permissions and memory type.
    assert_eq!(
        rr(&s, &mut a, MIB2 + 3 * KIB4, 8, Perms::R),
        Some(0x4020_3000)
    );
    assert_eq!(rr(&s, &mut a, MIB2 + 3 * KIB4, 8, Perms::W), None);
    assert_eq!(rr(&s, &mut a, MIB2 + 4 * KIB4, 8, Perms::R), None);
    // Holes, zero length, overflow.
    assert_eq!(rr(&s, &mut a, MIB2 + 5 * KIB4, 1, Perms::NONE), None);
    assert_eq!(rr(&s, &mut a, 0, 0, Perms::NONE), None);
    assert_eq!(rr(&s, &mut a, 0x10, u64::MAX, Perms::NONE), None);
}
