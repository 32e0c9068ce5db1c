//! [`Stage2`]: one VM's stage-2 translation tables and the operations on them
//! (map, unmap, protect, translate, destroy).
//!
//! Invariants kept by every operation: the root always exists; a non-root
//! table is never empty (it is freed when its last valid entry goes); leaves
//! are blocks at levels 1-2 or pages at level 3; an operation that returns an
//! error has changed no translation.

use crate::defs::{desc, granule, vttbr};
use crate::walk::{self, aligned, classify, Kind, Node, Reserve};
use crate::{Attrs, Error, Flush, Layout, MemType, Perms, TableAllocator};

/// The result of a successful [`Stage2::translate`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Physical (output) address of the translated IPA.
    pub pa: u64,
    /// Attributes of the mapping.
    pub attrs: Attrs,
    /// Level of the leaf descriptor (1: 1 GiB block, 2: 2 MiB block, 3: page).
    pub level: u8,
    /// Bytes covered by the leaf descriptor.
    pub block_size: u64,
}

/// What a range edit does to each leaf.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Unmap,
    /// Replace the attribute bits with these.
    Protect(u64),
}

/// One VM's stage-2 translation tables.
#[derive(Debug)]
pub struct Stage2 {
    root: u64,
    layout: Layout,
    vmid: u16,
}

impl Stage2 {
    /// Allocates the (concatenated) root for `layout` and tags it with `vmid`.
    pub fn new<A: TableAllocator>(alloc: &mut A, layout: Layout, vmid: u16) -> Result<Self, Error> {
        if !layout.is_consistent() {
            return Err(Error::InvalidLayout);
        }
        if !layout.vmid16 && vmid > vttbr::VMID8_MAX {
            return Err(Error::VmidTooLarge);
        }
        let root = walk::alloc_tables(alloc, layout.concat)?;
        Ok(Stage2 { root, layout, vmid })
    }

    /// VTTBR_EL2 for this VM: BADDR (root address) | VMID << 48, CnP clear.
    pub fn vttbr(&self) -> u64 {
        (self.root & vttbr::BADDR_MASK) | (u64::from(self.vmid) << vttbr::VMID_SHIFT)
    }

    /// VTCR_EL2 for this VM (VS set iff the layout uses 16-bit VMIDs).
    pub fn vtcr(&self) -> u64 {
        self.layout.vtcr(self.layout.vmid16)
    }

    /// The layout the tables were built for.
    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// The VMID.
    pub fn vmid(&self) -> u16 {
        self.vmid
    }

    /// Physical address of the root table(s).
    pub fn root_pa(&self) -> u64 {
        self.root
    }

    #[inline(always)]
    fn root_node(&self) -> Node {
        Node {
            pa: self.root,
            level: self.layout.start_level,
            entries: self.layout.root_entries(),
        }
    }

    /// Checks an IPA range and returns its end.
    fn check_ipa(&self, ipa: u64, size: u64) -> Result<u64, Error> {
        if !ipa.is_multiple_of(granule::PAGE_SIZE) || !size.is_multiple_of(granule::PAGE_SIZE) {
            return Err(Error::Unaligned);
        }
        let end = ipa.checked_add(size).ok_or(Error::Overflow)?;
        if end > self.layout.ipa_size() {
            return Err(Error::IpaOutOfRange);
        }
        Ok(end)
    }

    /// Checks a PA range.
    fn check_pa(&self, pa: u64, size: u64) -> Result<(), Error> {
        if !pa.is_multiple_of(granule::PAGE_SIZE) {
            return Err(Error::Unaligned);
        }
        let end = pa.checked_add(size).ok_or(Error::Overflow)?;
        if end > self.layout.pa_size() {
            return Err(Error::PaOutOfRange);
        }
        Ok(())
    }

    /// Maps guest RAM: `cleaned` names the host-physical range and proves it was
    /// cleaned to the point of coherency after EL2 last wrote it (see
    /// [`crate::coherency`]), so a guest that starts with its MMU off reads what
    /// EL2 wrote. Normal memory with `perms`; otherwise as [`Stage2::map`].
    pub fn map_ram<A: TableAllocator>(
        &mut self,
        a: &mut A,
        ipa: u64,
        cleaned: crate::coherency::Cleaned,
        perms: Perms,
    ) -> Result<(), Error> {
        self.map(a, ipa, cleaned.pa(), cleaned.len(), Attrs::normal(perms))
    }

    /// Maps `[ipa, ipa + size)` to `[pa, pa + size)` with `attrs`, using 1 GiB
    /// and 2 MiB blocks wherever `ipa`, `pa` and the range allow and 4 KiB
    /// pages elsewhere. `size == 0` does nothing.
    ///
    /// Refuses with [`Error::AlreadyMapped`] if any page of the range is
    /// already mapped (nothing is replaced). Only invalid entries become
    /// valid, so no TLB maintenance is needed afterwards; the caller still
    /// issues `DSB ISHST` before relying on the mapping. On any error nothing
    /// is mapped. If the error is [`Error::OutOfMemory`] or
    /// [`Error::BadTableAddress`] some entries of the range were valid for a
    /// moment: if a vCPU of this VM may have run meanwhile, invalidate the
    /// range before reusing the tables freed by the rollback.
    pub fn map<A: TableAllocator>(
        &mut self,
        a: &mut A,
        ipa: u64,
        pa: u64,
        size: u64,
        attrs: Attrs,
    ) -> Result<(), Error> {
        let end = self.check_ipa(ipa, size)?;
        self.check_pa(pa, size)?;
        if size == 0 {
            return Ok(());
        }
        let root = self.root_node();
        if !self.range_is(a, root, ipa, end, false) {
            return Err(Error::AlreadyMapped);
        }
        let bits = attrs.leaf_bits();
        if let Err(e) = self.map_walk(a, root, ipa, end, pa, bits) {
            // The range was empty before, so unmapping all of it removes
            // exactly what was added; no leaf straddles it, so this cannot
            // need a table.
            let mut ignored = Flush::NONE;
            let mut none = Reserve::default();
            let _ = self.edit_walk(a, root, ipa, end, Op::Unmap, &mut none, &mut ignored);
            none.release(a);
            return Err(e);
        }
        Ok(())
    }

    /// Unmaps `[ipa, ipa + size)`; holes in the range are fine. Blocks that
    /// straddle either end are split first, and tables that become empty are
    /// freed. `size == 0` does nothing.
    ///
    /// Returns the [`Flush`] the caller must perform before the VM runs again
    /// (and before reusing freed table frames). On error (bad range, or no
    /// memory for splitting) nothing changed.
    pub fn unmap<A: TableAllocator>(
        &mut self,
        a: &mut A,
        ipa: u64,
        size: u64,
    ) -> Result<Flush, Error> {
        let end = self.check_ipa(ipa, size)?;
        if size == 0 {
            return Ok(Flush::NONE);
        }
        self.edit(a, ipa, end, Op::Unmap)
    }

    /// Changes the attributes of every mapping in `[ipa, ipa + size)`,
    /// splitting blocks that straddle either end. Fails with
    /// [`Error::NotMapped`] (changing nothing) if any page of the range is
    /// unmapped. A memory-type change goes through break-before-make (see
    /// [`TableAllocator::break_before_make`]); a permission-only change is
    /// written in place. `size == 0` does nothing.
    ///
    /// Returns the [`Flush`] for every entry that changed (including split
    /// blocks).
    pub fn protect<A: TableAllocator>(
        &mut self,
        a: &mut A,
        ipa: u64,
        size: u64,
        attrs: Attrs,
    ) -> Result<Flush, Error> {
        let end = self.check_ipa(ipa, size)?;
        if size == 0 {
            return Ok(Flush::NONE);
        }
        if !self.range_is(a, self.root_node(), ipa, end, true) {
            return Err(Error::NotMapped);
        }
        self.edit(a, ipa, end, Op::Protect(attrs.leaf_bits()))
    }

    /// Translates one IPA: `None` if it is beyond the IPA size or unmapped.
    /// Allocation-free and at most four table reads.
    #[inline]
    pub fn translate<A: TableAllocator>(&self, a: &mut A, ipa: u64) -> Option<Translation> {
        if ipa >> self.layout.ipa_bits != 0 {
            return None;
        }
        let mut node = self.root_node();
        loop {
            let (table, i) = node.slot(ipa);
            let d = a.table(table)[i];
            match classify(d, node.level) {
                Kind::Invalid => return None,
                Kind::Table(next) => {
                    node = Node::child(next, node.level);
                }
                Kind::Leaf => {
                    let size = granule::level_size(node.level);
                    let base = d & desc::OA_MASK & !(size - 1);
                    return Some(Translation {
                        pa: base | (ipa & (size - 1)),
                        attrs: Attrs::from_leaf(d),
                        level: node.level,
                        block_size: size,
                    });
                }
            }
        }
    }

    /// Checks a guest buffer: the PA of `ipa` if every byte of
    /// `[ipa, ipa + len)` is mapped as [`MemType::Normal`] memory with at least
    /// `need` permissions and the range is contiguous in PA; `None` otherwise
    /// (also for `len == 0` or an overflowing range). One walk per leaf.
    pub fn translate_range<A: TableAllocator>(
        &self,
        a: &mut A,
        ipa: u64,
        len: u64,
        need: Perms,
    ) -> Option<u64> {
        let end = ipa.checked_add(len)?;
        if len == 0 {
            return None;
        }
        let usable =
            |t: &Translation| t.attrs.mem == MemType::Normal && t.attrs.perms.contains(need);
        let first = self.translate(a, ipa)?;
        if !usable(&first) {
            return None;
        }
        let mut cur = (ipa & !(first.block_size - 1)) + first.block_size;
        while cur < end {
            let t = self.translate(a, cur)?;
            if !usable(&t) || t.pa != first.pa + (cur - ipa) {
                return None;
            }
            cur = (cur & !(t.block_size - 1)) + t.block_size;
        }
        Some(first.pa)
    }

    /// Frees every table, the root included.
    pub fn destroy<A: TableAllocator>(self, a: &mut A) {
        let root = self.root_node();
        for idx in 0..root.entries {
            let table = root.pa + (idx / granule::TABLE_ENTRIES) as u64 * granule::PAGE_SIZE;
            let d = a.table(table)[idx % granule::TABLE_ENTRIES];
            if let Kind::Table(child) = classify(d, root.level) {
                free_subtree(a, child, root.level + 1);
            }
        }
        a.free_tables(self.root, self.layout.concat);
    }

    /// Whether every page of `[start, end)` under `node` is mapped
    /// (`mapped == true`) or unmapped (`mapped == false`).
    fn range_is<A: TableAllocator>(
        &self,
        a: &mut A,
        node: Node,
        start: u64,
        end: u64,
        mapped: bool,
    ) -> bool {
        let size = granule::level_size(node.level);
        let mut cur = start;
        while cur < end {
            let next = end.min((cur & !(size - 1)) + size);
            let (table, i) = node.slot(cur);
            let ok = match classify(a.table(table)[i], node.level) {
                Kind::Invalid => !mapped,
                Kind::Leaf => mapped,
                Kind::Table(child) => {
                    self.range_is(a, Node::child(child, node.level), cur, next, mapped)
                }
            };
            if !ok {
                return false;
            }
            cur = next;
        }
        true
    }

    /// Maps `[start, end)` (known to be unmapped) under `node` to `pa..`.
    fn map_walk<A: TableAllocator>(
        &mut self,
        a: &mut A,
        node: Node,
        start: u64,
        end: u64,
        pa: u64,
        bits: u64,
    ) -> Result<(), Error> {
        let size = granule::level_size(node.level);
        let mut cur = start;
        while cur < end {
            let base = cur & !(size - 1);
            let next = end.min(base + size);
            let out = pa + (cur - start);
            let (table, i) = node.slot(cur);
            let d = a.table(table)[i];
            let whole = cur == base && next - base == size;
            let kind = classify(d, node.level);
            if kind == Kind::Invalid
                && whole
                && node.level >= granule::MIN_BLOCK_LEVEL
                && aligned(out, size)
            {
                a.table(table)[i] = walk::leaf(node.level, out, bits);
            } else {
                let child = match kind {
                    Kind::Table(child) => child,
                    Kind::Leaf => return Err(Error::AlreadyMapped),
                    Kind::Invalid => {
                        let child = walk::alloc_tables(a, 1)?;
                        a.publish_barrier();
                        a.table(table)[i] = walk::table_desc(child);
                        child
                    }
                };
                self.map_walk(a, Node::child(child, node.level), cur, next, out, bits)?;
            }
            cur = next;
        }
        Ok(())
    }

    /// Unmap or protect `[ipa, end)`: reserve the tables edge splits need,
    /// split the edges, then edit the range.
    fn edit<A: TableAllocator>(
        &mut self,
        a: &mut A,
        ipa: u64,
        end: u64,
        op: Op,
    ) -> Result<Flush, Error> {
        let needed = self.splits_needed(a, ipa, end);
        let mut reserve = Reserve::fill(a, needed)?;
        let mut flush = Flush::NONE;
        let root = self.root_node();
        let r = self
            .split_at(a, ipa, &mut reserve, &mut flush)
            .and_then(|()| self.split_at(a, end, &mut reserve, &mut flush))
            .and_then(|()| self.edit_walk(a, root, ipa, end, op, &mut reserve, &mut flush));
        // The split count is exact; tests run with this check on.
        debug_assert!(
            r.is_err() || reserve.was_exact(),
            "split reserve miscounted"
        );
        reserve.release(a);
        r.map(|()| flush)
    }

    /// Level of the leaf that straddles `addr` (covers it without starting at
    /// it), if there is one.
    fn straddling_leaf<A: TableAllocator>(&self, a: &mut A, addr: u64) -> Option<u8> {
        if addr >= self.layout.ipa_size() {
            return None;
        }
        let mut node = self.root_node();
        loop {
            if aligned(addr, granule::level_size(node.level)) {
                return None;
            }
            let (table, i) = node.slot(addr);
            match classify(a.table(table)[i], node.level) {
                Kind::Invalid => return None,
                Kind::Table(child) => node = Node::child(child, node.level),
                Kind::Leaf => return Some(node.level),
            }
        }
    }

    /// Tables that splitting the leaves straddling `start` and `end` needs.
    /// When both lie in the same leaf, the levels split for `start` that also
    /// contain `end` are counted once.
    fn splits_needed<A: TableAllocator>(&self, a: &mut A, start: u64, end: u64) -> usize {
        let splits = |addr: u64, from: u8| {
            (from..granule::LAST_LEVEL).filter(move |&l| !aligned(addr, granule::level_size(l)))
        };
        let s = self.straddling_leaf(a, start);
        let e = self.straddling_leaf(a, end);
        let mut n =
            s.map_or(0, |l| splits(start, l).count()) + e.map_or(0, |l| splits(end, l).count());
        if let (Some(ls), Some(le)) = (s, e) {
            let same = |l: u8| start >> granule::level_shift(l) == end >> granule::level_shift(l);
            if ls == le && same(ls) {
                n -= splits(start, ls)
                    .filter(|&l| !aligned(end, granule::level_size(l)) && same(l))
                    .count();
            }
        }
        n
    }

    /// Splits every leaf that straddles `addr` (covers it without starting at it).
    fn split_at<A: TableAllocator>(
        &mut self,
        a: &mut A,
        addr: u64,
        reserve: &mut Reserve,
        flush: &mut Flush,
    ) -> Result<(), Error> {
        if addr >= self.layout.ipa_size() {
            return Ok(());
        }
        let mut node = self.root_node();
        loop {
            let size = granule::level_size(node.level);
            if aligned(addr, size) {
                return Ok(());
            }
            let (table, i) = node.slot(addr);
            let d = a.table(table)[i];
            let child = match classify(d, node.level) {
                Kind::Invalid => return Ok(()),
                Kind::Table(child) => child,
                Kind::Leaf => split_leaf(
                    a,
                    table,
                    i,
                    node.level,
                    d,
                    addr & !(size - 1),
                    reserve,
                    flush,
                )?,
            };
            node = Node::child(child, node.level);
        }
    }

    /// Applies `op` to `[start, end)` under `node`.
    #[allow(clippy::too_many_arguments)]
    fn edit_walk<A: TableAllocator>(
        &mut self,
        a: &mut A,
        node: Node,
        start: u64,
        end: u64,
        op: Op,
        reserve: &mut Reserve,
        flush: &mut Flush,
    ) -> Result<(), Error> {
        let size = granule::level_size(node.level);
        let mut cur = start;
        while cur < end {
            let base = cur & !(size - 1);
            let next = end.min(base + size);
            let whole = cur == base && next - base == size;
            let (table, i) = node.slot(cur);
            let d = a.table(table)[i];
            match classify(d, node.level) {
                Kind::Invalid => {}
                Kind::Leaf if whole => match op {
                    Op::Unmap => {
                        a.table(table)[i] = 0;
                        flush.add(base, size);
                    }
                    Op::Protect(bits) => {
                        let new = (d & !desc::LEAF_ATTR_MASK) | bits;
                        if new != d {
                            if (new ^ d) & desc::MEMATTR_MASK != 0 {
                                a.table(table)[i] = 0;
                                a.break_before_make(base, size);
                            }
                            a.table(table)[i] = new;
                            flush.add(base, size);
                        }
                    }
                },
                Kind::Leaf => {
                    // Edges were split beforehand; this only runs if an
                    // invariant was broken, and then still does the right thing.
                    let child = split_leaf(a, table, i, node.level, d, base, reserve, flush)?;
                    self.edit_walk(
                        a,
                        Node::child(child, node.level),
                        cur,
                        next,
                        op,
                        reserve,
                        flush,
                    )?;
                }
                Kind::Table(child) => {
                    if whole && op == Op::Unmap {
                        a.table(table)[i] = 0;
                        free_subtree(a, child, node.level + 1);
                        flush.add(base, size);
                    } else {
                        self.edit_walk(
                            a,
                            Node::child(child, node.level),
                            cur,
                            next,
                            op,
                            reserve,
                            flush,
                        )?;
                        if op == Op::Unmap && table_is_empty(a, child) {
                            a.table(table)[i] = 0;
                            a.free_tables(child, 1);
                            flush.add(base, size);
                        }
                    }
                }
            }
            cur = next;
        }
        Ok(())
    }
}

#[cfg(test)]
impl Stage2 {
    /// Counts the tables reachable from the root (root tables included), or
    /// `None` if a non-root table is empty (an invariant violation).
    pub(crate) fn reachable_tables<A: TableAllocator>(&self, a: &mut A) -> Option<usize> {
        fn count<A: TableAllocator>(a: &mut A, node: Node, root: bool) -> Option<usize> {
            let mut n = node.entries / granule::TABLE_ENTRIES;
            let mut valid = 0;
            for idx in 0..node.entries {
                let (table, i) = (
                    node.pa + (idx / granule::TABLE_ENTRIES) as u64 * granule::PAGE_SIZE,
                    idx % granule::TABLE_ENTRIES,
                );
                let d = a.table(table)[i];
                if d & desc::VALID != 0 {
                    valid += 1;
                }
                if let Kind::Table(child) = classify(d, node.level) {
                    n += count(a, Node::child(child, node.level), false)?;
                }
            }
            (valid > 0 || root).then_some(n)
        }
        count(a, self.root_node(), true)
    }
}

/// Replaces the leaf `d` at `table[i]` (level `level`, covering `base..`) by a
/// table of next-level leaves with the same output and attributes, using
/// break-before-make. Returns the new table.
#[allow(clippy::too_many_arguments)]
fn split_leaf<A: TableAllocator>(
    a: &mut A,
    table: u64,
    i: usize,
    level: u8,
    d: u64,
    base: u64,
    reserve: &mut Reserve,
    flush: &mut Flush,
) -> Result<u64, Error> {
    let child = reserve.take(a)?;
    let size = granule::level_size(level);
    let child_level = level + 1;
    let child_size = granule::level_size(child_level);
    let oa = d & desc::OA_MASK & !(size - 1);
    let attr_bits = d & !(desc::OA_MASK | desc::TYPE_MASK);
    for (j, e) in a.table(child).iter_mut().enumerate() {
        *e = walk::leaf(child_level, oa + j as u64 * child_size, attr_bits);
    }
    a.publish_barrier();
    a.table(table)[i] = 0;
    a.break_before_make(base, size);
    a.table(table)[i] = walk::table_desc(child);
    flush.add(base, size);
    Ok(child)
}

/// Frees the table at `table` (at `level`) and every table below it.
fn free_subtree<A: TableAllocator>(a: &mut A, table: u64, level: u8) {
    if level < granule::LAST_LEVEL {
        for i in 0..granule::TABLE_ENTRIES {
            if let Kind::Table(child) = classify(a.table(table)[i], level) {
                free_subtree(a, child, level + 1);
            }
        }
    }
    a.free_tables(table, 1);
}

/// Whether a table holds no valid descriptor.
fn table_is_empty<A: TableAllocator>(a: &mut A, table: u64) -> bool {
    a.table(table).iter().all(|&d| d & desc::VALID == 0)
}
