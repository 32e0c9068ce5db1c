//! A dirty-page bitmap: which 4 KiB pages of a VM's RAM were written since they
//! were last taken. Writers mark pages from any CPU at once (a stage-2 permission
//! fault on a write-protected page, the hypervisor's own writes to guest RAM); a
//! consumer takes a range — query and clear in one step, so a mark racing with the
//! take lands either in this take or in the next one, never in neither. Incremental
//! suspend takes one 2 MiB block at a time; a framebuffer scan-out takes the pages
//! of its framebuffer ([`DirtyBitmap::take_runs`]).

use alloc::vec::Vec;
use core::ops::Range;
use core::sync::atomic::{AtomicU64, Ordering};

/// Bits per bitmap word.
const WORD_BITS: usize = 64;

/// One bit per page of `pages` pages; page numbers count from the start of RAM.
/// Marks and takes outside `0..pages` are ignored (clipped).
#[derive(Debug)]
pub struct DirtyBitmap {
    words: Vec<AtomicU64>,
    pages: usize,
}

/// The bits of word `w` that `[start, end)` (page numbers) covers.
fn word_mask(w: usize, start: usize, end: usize) -> u64 {
    let lo = (w * WORD_BITS).max(start) - w * WORD_BITS;
    let hi = ((w + 1) * WORD_BITS).min(end) - w * WORD_BITS;
    if hi <= lo {
        return 0;
    }
    let upper = if hi == WORD_BITS {
        u64::MAX
    } else {
        (1u64 << hi) - 1
    };
    upper & !((1u64 << lo) - 1)
}

impl DirtyBitmap {
    /// A bitmap of `pages` pages, all clean.
    pub fn new(pages: usize) -> Self {
        Self {
            words: (0..pages.div_ceil(WORD_BITS))
                .map(|_| AtomicU64::new(0))
                .collect(),
            pages,
        }
    }

    /// Pages covered.
    pub fn pages(&self) -> usize {
        self.pages
    }

    fn clip(&self, first: usize, count: usize) -> Range<usize> {
        let start = first.min(self.pages);
        start..first.saturating_add(count).min(self.pages)
    }

    /// Marks page `page` written.
    pub fn mark(&self, page: usize) {
        self.mark_range(page, 1);
    }

    /// Marks `count` pages from `first` written.
    pub fn mark_range(&self, first: usize, count: usize) {
        let r = self.clip(first, count);
        if r.is_empty() {
            return;
        }
        for w in r.start / WORD_BITS..=(r.end - 1) / WORD_BITS {
            self.words[w].fetch_or(word_mask(w, r.start, r.end), Ordering::AcqRel);
        }
    }

    /// Whether page `page` is marked.
    pub fn is_dirty(&self, page: usize) -> bool {
        page < self.pages
            && self.words[page / WORD_BITS].load(Ordering::Acquire) & (1 << (page % WORD_BITS)) != 0
    }

    /// Whether any page of `count` pages from `first` is marked (nothing cleared).
    pub fn any(&self, first: usize, count: usize) -> bool {
        let r = self.clip(first, count);
        !r.is_empty()
            && (r.start / WORD_BITS..=(r.end - 1) / WORD_BITS)
                .any(|w| self.words[w].load(Ordering::Acquire) & word_mask(w, r.start, r.end) != 0)
    }

    /// Query and clear: calls `f(i)` for every marked page `first + i` of `count`
    /// pages from `first`, in increasing order, and clears exactly those pages
    /// (each word is swapped out atomically, so a concurrent mark is never lost).
    pub fn take(&self, first: usize, count: usize, mut f: impl FnMut(usize)) {
        let r = self.clip(first, count);
        if r.is_empty() {
            return;
        }
        for w in r.start / WORD_BITS..=(r.end - 1) / WORD_BITS {
            let mask = word_mask(w, r.start, r.end);
            let mut bits = self.words[w].fetch_and(!mask, Ordering::AcqRel) & mask;
            while bits != 0 {
                let b = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                f(w * WORD_BITS + b - first);
            }
        }
    }

    /// Query and clear as runs: the marked pages of `count` pages from `first` as
    /// maximal ranges of consecutive page numbers (relative to `first`), in order —
    /// what a framebuffer copy or a disk write wants.
    pub fn take_runs(&self, first: usize, count: usize) -> Vec<Range<usize>> {
        let mut runs: Vec<Range<usize>> = Vec::new();
        self.take(first, count, |p| match runs.last_mut() {
            Some(r) if r.end == p => r.end += 1,
            _ => runs.push(p..p + 1),
        });
        runs
    }

    /// Marks every page (the state when nothing is known to be clean).
    pub fn mark_all(&self) {
        self.mark_range(0, self.pages);
    }

    /// Clears every page.
    pub fn clear_all(&self) {
        self.take(0, self.pages, |_| {});
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn taken(b: &DirtyBitmap, first: usize, count: usize) -> Vec<usize> {
        let mut v = Vec::new();
        b.take(first, count, |p| v.push(p));
        v
    }

    #[test]
    fn marks_are_taken_once_and_only_in_their_range() {
        let b = DirtyBitmap::new(1000);
        for p in [0, 63, 64, 65, 511, 512, 999] {
            b.mark(p);
        }
        assert!(b.is_dirty(63) && !b.is_dirty(62));
        // A range straddling words takes only its own pages, relative to `first`.
        assert_eq!(taken(&b, 63, 3), vec![0, 1, 2]);
        assert!(!b.is_dirty(64) && b.is_dirty(0) && b.is_dirty(511));
        assert_eq!(taken(&b, 63, 3), Vec::<usize>::new());
        assert_eq!(taken(&b, 0, 1000), vec![0, 511, 512, 999]);
        assert!(!b.any(0, 1000));
    }

    #[test]
    fn ranges_are_clipped_never_panic() {
        let b = DirtyBitmap::new(70);
        b.mark(70);
        b.mark(usize::MAX);
        b.mark_range(65, usize::MAX);
        assert_eq!(taken(&b, 0, usize::MAX), vec![65, 66, 67, 68, 69]);
        b.mark_range(usize::MAX, 5);
        assert!(!b.any(0, 70));
        assert!(!b.is_dirty(usize::MAX));
        assert_eq!(taken(&b, 100, 10), Vec::<usize>::new());
        let empty = DirtyBitmap::new(0);
        empty.mark_all();
        assert!(!empty.any(0, 1));
    }

    #[test]
    fn mark_range_sets_exactly_the_range() {
        for (first, count) in [(0, 64), (1, 62), (5, 200), (64, 64), (63, 2), (127, 1)] {
            let b = DirtyBitmap::new(256);
            b.mark_range(first, count);
            let all = taken(&b, 0, 256);
            assert_eq!(
                all,
                (first..first + count).collect::<Vec<_>>(),
                "{first}+{count}"
            );
        }
    }

    #[test]
    fn runs_merge_consecutive_pages() {
        let b = DirtyBitmap::new(600);
        b.mark_range(10, 5);
        b.mark(15);
        b.mark(17);
        b.mark_range(60, 10); // across a word boundary
        b.mark(599);
        assert_eq!(b.take_runs(8, 600), vec![2..8, 9..10, 52..62, 591..592]);
        assert!(b.take_runs(0, 600).is_empty());
        b.mark_all();
        assert_eq!(b.take_runs(0, 600), vec![0..600]);
        b.mark(3);
        b.clear_all();
        assert!(!b.any(0, 600));
    }

    #[test]
    fn concurrent_marks_are_never_lost() {
        extern crate std;
        use alloc::sync::Arc;
        let b = Arc::new(DirtyBitmap::new(4096));
        let writers: Vec<_> = (0..4)
            .map(|t| {
                let b = b.clone();
                std::thread::spawn(move || {
                    for p in (t..4096).step_by(4) {
                        b.mark(p);
                    }
                })
            })
            .collect();
        let mut seen = vec![false; 4096];
        while writers.iter().any(|w| !w.is_finished()) {
            b.take(0, 4096, |p| seen[p] = true);
        }
        for w in writers {
            w.join().unwrap();
        }
        b.take(0, 4096, |p| seen[p] = true);
        assert!(seen.iter().all(|&s| s));
    }
}
