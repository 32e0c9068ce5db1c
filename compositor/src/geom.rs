//! Integer rectangles in pixels: crops in surface space, destinations and damage in
//! output space.

/// A rectangle: origin `(x, y)` (may be negative, i.e. partly off the output) and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub const fn new(x: i32, y: i32, w: u32, h: u32) -> Self {
        Rect { x, y, w, h }
    }

    pub const fn is_empty(&self) -> bool {
        self.w == 0 || self.h == 0
    }

    /// The exclusive right and bottom edges, widened so they cannot overflow.
    pub const fn right(&self) -> i64 {
        self.x as i64 + self.w as i64
    }

    pub const fn bottom(&self) -> i64 {
        self.y as i64 + self.h as i64
    }

    /// The overlap of two rectangles, `None` when they do not overlap.
    pub fn intersect(&self, other: &Rect) -> Option<Rect> {
        let x0 = i64::from(self.x).max(i64::from(other.x));
        let y0 = i64::from(self.y).max(i64::from(other.y));
        let x1 = self.right().min(other.right());
        let y1 = self.bottom().min(other.bottom());
        Rect::from_edges(x0, y0, x1, y1)
    }

    /// The smallest rectangle holding both (an empty one holds nothing).
    pub fn union(&self, other: &Rect) -> Rect {
        if self.is_empty() {
            return *other;
        }
        if other.is_empty() {
            return *self;
        }
        let x0 = i64::from(self.x).min(i64::from(other.x));
        let y0 = i64::from(self.y).min(i64::from(other.y));
        let x1 = self.right().max(other.right());
        let y1 = self.bottom().max(other.bottom());
        Rect::from_edges(x0, y0, x1, y1).unwrap_or_default()
    }

    /// The rectangle `[x0, x1) × [y0, y1)` clamped to what `Rect` can hold; `None` if
    /// empty.
    pub fn from_edges(x0: i64, y0: i64, x1: i64, y1: i64) -> Option<Rect> {
        let clamp = |v: i64| v.clamp(i64::from(i32::MIN), i64::from(i32::MAX));
        let (x0, y0, x1, y1) = (clamp(x0), clamp(y0), clamp(x1), clamp(y1));
        if x1 <= x0 || y1 <= y0 {
            return None;
        }
        Some(Rect {
            x: x0 as i32,
            y: y0 as i32,
            w: (x1 - x0) as u32,
            h: (y1 - y0) as u32,
        })
    }

    /// Whether `other` lies wholly inside `self`.
    pub fn contains(&self, other: &Rect) -> bool {
        other.x >= self.x
            && other.y >= self.y
            && other.right() <= self.right()
            && other.bottom() <= self.bottom()
    }

    /// The largest rectangle of aspect ratio `src_w : src_h` centred in `area`
    /// (letterboxing): how a GOP guest's fixed-mode framebuffer is scaled onto its
    /// virtual monitor. `None` for empty inputs.
    pub fn fit(src_w: u32, src_h: u32, area: Rect) -> Option<Rect> {
        if src_w == 0 || src_h == 0 || area.is_empty() {
            return None;
        }
        let (sw, sh) = (u64::from(src_w), u64::from(src_h));
        let (aw, ah) = (u64::from(area.w), u64::from(area.h));
        // Width-limited when aw/ah <= sw/sh.
        let (w, h) = if aw * sh <= ah * sw {
            (aw, (aw * sh / sw).max(1))
        } else {
            ((ah * sw / sh).max(1), ah)
        };
        let x = i64::from(area.x) + ((aw - w) / 2) as i64;
        let y = i64::from(area.y) + ((ah - h) / 2) as i64;
        Rect::from_edges(x, y, x + w as i64, y + h as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersect_and_union() {
        let a = Rect::new(-5, 0, 10, 10);
        let b = Rect::new(3, 4, 10, 10);
        assert_eq!(a.intersect(&b), Some(Rect::new(3, 4, 2, 6)));
        assert_eq!(a.union(&b), Rect::new(-5, 0, 18, 14));
        assert_eq!(a.intersect(&Rect::new(5, 0, 1, 1)), None);
        assert_eq!(Rect::default().union(&b), b);
        let huge = Rect::new(i32::MAX, i32::MAX, u32::MAX, u32::MAX);
        assert_eq!(huge.intersect(&a), None);
    }

    #[test]
    fn fit_letterboxes_and_pillarboxes() {
        // 800x600 on 1920x1080: height-limited, 1440x1080 centred.
        assert_eq!(
            Rect::fit(800, 600, Rect::new(0, 0, 1920, 1080)),
            Some(Rect::new(240, 0, 1440, 1080))
        );
        // 1920x1080 on 1024x1024: width-limited, 1024x576 centred.
        assert_eq!(
            Rect::fit(1920, 1080, Rect::new(10, 0, 1024, 1024)),
            Some(Rect::new(10, 224, 1024, 576))
        );
        assert_eq!(Rect::fit(0, 1, Rect::new(0, 0, 1, 1)), None);
    }
}
