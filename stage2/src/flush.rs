//! TLB-maintenance requirements reported by table updates.
//!
//! A [`Flush`] is the hull `[start, end)` of every IPA whose previously *valid*
//! descriptor (leaf or table) was changed or removed by an operation. Creating
//! a mapping where there was none never needs a flush; removing, splitting or
//! re-attributing one does, and so does freeing a table (walk caches may still
//! hold it).

use core::ops::Range;

/// What the caller must invalidate after an update, before the guest may run
/// with the new tables (and before freed table frames may be reused).
///
/// On Arm: `DSB ISHST`, then `TLBI IPAS2E1IS` for each 4 KiB page of
/// [`Flush::range`] (or `TLBI VMALLS12E1IS` if the range is large), `DSB ISH`,
/// `TLBI VMALLE1IS` (stage-1 entries cached with the old stage-2 result),
/// `DSB ISH`, `ISB` — all with this VM's VMID in VTTBR_EL2.
#[must_use = "a Flush says which stage-2 TLB entries are now stale"]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flush {
    start: u64,
    end: u64,
}

impl Flush {
    /// Nothing to invalidate.
    pub const NONE: Flush = Flush { start: 0, end: 0 };

    /// Whether any previously valid entry changed.
    #[inline]
    pub fn needed(&self) -> bool {
        self.start < self.end
    }

    /// The IPA range to invalidate, if any.
    #[inline]
    pub fn range(&self) -> Option<Range<u64>> {
        self.needed().then_some(self.start..self.end)
    }

    /// The union (hull) of two flush requirements.
    pub fn merge(self, other: Flush) -> Flush {
        match (self.needed(), other.needed()) {
            (false, _) => other,
            (_, false) => self,
            _ => Flush {
                start: self.start.min(other.start),
                end: self.end.max(other.end),
            },
        }
    }

    /// Records that the valid entry covering `[start, start + size)` changed.
    pub(crate) fn add(&mut self, start: u64, size: u64) {
        *self = self.merge(Flush {
            start,
            end: start.saturating_add(size),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_is_not_needed() {
        assert!(!Flush::NONE.needed());
        assert_eq!(Flush::NONE.range(), None);
        assert_eq!(Flush::default(), Flush::NONE);
    }

    #[test]
    fn add_builds_hull() {
        let mut f = Flush::NONE;
        f.add(0x5000, 0x1000);
        assert_eq!(f.range(), Some(0x5000..0x6000));
        f.add(0x1000, 0x1000);
        assert_eq!(f.range(), Some(0x1000..0x6000));
        f.add(0x20_0000, 0x20_0000);
        assert_eq!(f.range(), Some(0x1000..0x40_0000));
        assert_eq!(Flush::NONE.merge(f), f);
        assert_eq!(f.merge(Flush::NONE), f);
    }
}
