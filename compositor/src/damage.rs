//! Damage tracking: the output rectangles that changed since the last frame and must
//! be recomposed. Sources of damage are a surface's flushed rectangle mapped through
//! its layer ([`crate::Layer::damage_of`]) and a layer that appeared, vanished or moved
//! (its old and new [`crate::Layer::bounds`]).

use alloc::vec::Vec;

use crate::geom::Rect;

/// How many rectangles are kept before they are merged into their bounding box.
pub const DEFAULT_LIMIT: usize = 16;

/// A bounded set of output rectangles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Damage {
    rects: Vec<Rect>,
    limit: usize,
}

impl Default for Damage {
    fn default() -> Self {
        Damage::new(DEFAULT_LIMIT)
    }
}

impl Damage {
    /// At most `limit` (at least 1) rectangles.
    pub fn new(limit: usize) -> Self {
        Damage {
            rects: Vec::new(),
            limit: limit.max(1),
        }
    }

    /// Adds `r` (empty rectangles are ignored, covered ones absorbed). Past the limit
    /// everything collapses into one bounding rectangle: more pixels, never fewer.
    pub fn add(&mut self, r: Rect) {
        if r.is_empty() || self.rects.iter().any(|k| k.contains(&r)) {
            return;
        }
        self.rects.retain(|k| !r.contains(k));
        if self.rects.len() == self.limit {
            let all = self.rects.iter().fold(r, |acc, k| acc.union(k));
            self.rects.clear();
            self.rects.push(all);
        } else {
            self.rects.push(r);
        }
    }

    pub fn rects(&self) -> &[Rect] {
        &self.rects
    }

    pub fn is_empty(&self) -> bool {
        self.rects.is_empty()
    }

    /// Forgets everything (after the frame was composed).
    pub fn clear(&mut self) {
        self.rects.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapses_past_the_limit_and_absorbs_covered_rects() {
        let mut d = Damage::new(2);
        d.add(Rect::new(0, 0, 2, 2));
        d.add(Rect::new(0, 0, 1, 1));
        assert_eq!(d.rects(), &[Rect::new(0, 0, 2, 2)]);
        d.add(Rect::new(10, 10, 1, 1));
        assert_eq!(d.rects().len(), 2);
        d.add(Rect::new(5, 0, 1, 1));
        assert_eq!(d.rects(), &[Rect::new(0, 0, 11, 11)]);
        d.add(Rect::new(0, 0, 0, 5));
        assert_eq!(d.rects().len(), 1);
        d.clear();
        assert!(d.is_empty());
    }
}
