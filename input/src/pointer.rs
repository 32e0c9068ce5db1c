//! A pointer on the physical display to a guest pixel: the inverse of the placement
//! the compositor draws the guest's screen with.
//!
//! The compositor covers output pixel `(x, y)` with the guest pixel under its centre
//! `(x + ½, y + ½)` pulled back through the placement; [`PointerMap::to_guest`] does the
//! same pull-back, exactly, in rational integer arithmetic (`i128`; the hypervisor is
//! soft-float), and answers `None` where the compositor shows no guest pixel: outside
//! the panel or quad, behind the viewer, or outside the display. The compositor's own
//! per-pixel sampling is fixed point, so the two agree to within one guest pixel, and
//! only at pixel boundaries (tested against the compositor itself).

use authority_abi::call::Placement as AbiPlacement;
use compositor::{Placement, Rect, Transform, MAX_COORD, MAX_ENTRY};

/// How [`PointerMap`] pulls a display point back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Inverse {
    /// Unscaled at `(x, y)`.
    At { x: i32, y: i32 },
    /// Scaled to fill `dst`.
    Scaled(Rect),
    /// The adjugate of the forward matrix, rows negated when its determinant is
    /// negative, so that a point in front of the viewer has a positive third
    /// coordinate.
    Projective([[i128; 3]; 3]),
}

/// The inverse of one VM's presentation on one display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PointerMap {
    inverse: Inverse,
    guest_w: u32,
    guest_h: u32,
    display: Rect,
}

/// The compositor placement for an authority-ABI presentation of a `guest_w ×
/// guest_h` screen on `display`, the way the presenter (`vgpu::present`) chooses it:
/// a panel scaled to its rectangle (unscaled when the sizes agree), fullscreen as
/// the largest centred rectangle of the guest's aspect ratio, a quad as the
/// projective map onto its corners. `None` when nothing would be drawn.
pub fn placement_for(
    p: &AbiPlacement,
    guest_w: u32,
    guest_h: u32,
    display: Rect,
) -> Option<Placement> {
    let scaled = |d: Rect| {
        if (d.w, d.h) == (guest_w, guest_h) {
            Placement::At { x: d.x, y: d.y }
        } else {
            Placement::Scaled(d)
        }
    };
    match *p {
        AbiPlacement::Panel(r) => Some(scaled(Rect::new(r.x, r.y, r.w, r.h))),
        AbiPlacement::Fullscreen => Rect::fit(guest_w, guest_h, display).map(scaled),
        AbiPlacement::Quad(q) => {
            Transform::from_quad(guest_w, guest_h, q).map(Placement::Transform)
        }
    }
}

impl PointerMap {
    /// The inverse of `placement` of a `guest_w × guest_h` screen on `display`.
    /// `None` for an empty screen or a placement the compositor refuses (empty or
    /// oversized rectangle, entries beyond [`MAX_ENTRY`], a singular matrix).
    pub fn new(placement: &Placement, guest_w: u32, guest_h: u32, display: Rect) -> Option<Self> {
        if guest_w == 0 || guest_h == 0 {
            return None;
        }
        let inverse = match *placement {
            Placement::At { x, y } => Inverse::At { x, y },
            Placement::Scaled(d) => {
                if d.is_empty() || i64::from(d.w) > MAX_COORD || i64::from(d.h) > MAX_COORD {
                    return None;
                }
                Inverse::Scaled(d)
            }
            Placement::Transform(t) => {
                if t.m.iter().flatten().any(|e| e.abs() > MAX_ENTRY) {
                    return None;
                }
                let f = t.m.map(|r| r.map(i128::from));
                let cof = |r0: usize, r1: usize, c0: usize, c1: usize| {
                    f[r0][c0] * f[r1][c1] - f[r0][c1] * f[r1][c0]
                };
                let mut adj = [
                    [cof(1, 2, 1, 2), -cof(0, 2, 1, 2), cof(0, 1, 1, 2)],
                    [-cof(1, 2, 0, 2), cof(0, 2, 0, 2), -cof(0, 1, 0, 2)],
                    [cof(1, 2, 0, 1), -cof(0, 2, 0, 1), cof(0, 1, 0, 1)],
                ];
                let det = f[0][0] * adj[0][0] + f[0][1] * adj[1][0] + f[0][2] * adj[2][0];
                if det == 0 {
                    return None;
                }
                if det < 0 {
                    adj = adj.map(|r| r.map(|e| -e));
                }
                Inverse::Projective(adj)
            }
        };
        Some(PointerMap {
            inverse,
            guest_w,
            guest_h,
            display,
        })
    }

    /// The guest screen's size.
    pub fn guest_size(&self) -> (u32, u32) {
        (self.guest_w, self.guest_h)
    }

    /// The guest pixel shown at display pixel `(x, y)`, `None` where the display
    /// shows none of the guest (the pointer stays with RayOS).
    pub fn to_guest(&self, x: i32, y: i32) -> Option<(u32, u32)> {
        let d = self.display;
        if i64::from(x) < i64::from(d.x)
            || i64::from(y) < i64::from(d.y)
            || i64::from(x) >= d.right()
            || i64::from(y) >= d.bottom()
        {
            return None;
        }
        let (cw, ch) = (i128::from(self.guest_w), i128::from(self.guest_h));
        // Pixel centres, doubled to stay integral.
        let (px, py) = (2 * i128::from(x) + 1, 2 * i128::from(y) + 1);
        let (u, v) = match self.inverse {
            Inverse::At { x: ox, y: oy } => (
                i128::from(x) - i128::from(ox),
                i128::from(y) - i128::from(oy),
            ),
            Inverse::Scaled(dst) => {
                // u = (x + ½ − dx)·cw/dw, in 64 bits when the product fits (any
                // display and guest of today: 128-bit division is a library
                // call of hundreds of instructions in the hypervisor, on every
                // pointer move), else in 128. The same quotient either way.
                let axis = |p: i128, o: i32, c: i128, len: u32| {
                    let num = p - 2 * i128::from(o);
                    let narrow = i64::try_from(num)
                        .ok()
                        .zip(i64::try_from(c).ok())
                        .and_then(|(n, c)| n.checked_mul(c));
                    match narrow {
                        Some(nc) => i128::from(nc.div_euclid(2 * i64::from(len))),
                        None => (num * c).div_euclid(2 * i128::from(len)),
                    }
                };
                (axis(px, dst.x, cw, dst.w), axis(py, dst.y, ch, dst.h))
            }
            Inverse::Projective(adj) => {
                let row = |r: [i128; 3]| r[0] * px + r[1] * py + r[2] * 2;
                let (uu, vv, w) = (row(adj[0]), row(adj[1]), row(adj[2]));
                if w <= 0 {
                    return None;
                }
                (uu.div_euclid(w), vv.div_euclid(w))
            }
        };
        let inside = |v: i128, len: i128| (0..len).contains(&v);
        (inside(u, cw) && inside(v, ch)).then_some((u as u32, v as u32))
    }
}

#[cfg(test)]
#[path = "pointer_tests.rs"]
mod tests;
