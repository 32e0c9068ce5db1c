//! Placements of a layer's crop on the output and their inverse mappings.
//!
//! A placement maps crop coordinates `(u, v)` (pixels, origin at the crop's top-left
//! corner) to output coordinates. Compositing runs the other way: for every output
//! pixel centre `(x + ½, y + ½)` it finds the source point, and the pixel is covered
//! when that point lies inside the crop. All of it is integer arithmetic: matrices are
//! homogeneous `i64`, setup uses `i128` with checked operations, and the per-pixel
//! values are `i64` linear forms — the hypervisor is built soft-float, so no `f32`/`f64`
//! appears anywhere here.

use crate::geom::Rect;
use crate::surface::{LayerError, MAX_DIM};

/// Fixed-point one of the Q16.16 sampling coordinates.
pub const Q16_ONE: i64 = 1 << 16;
/// Fraction bits of the affine accumulators (Q32.32).
const AFFINE_FRAC: u32 = 32;
/// The largest magnitude of an entry of a [`Transform`].
pub const MAX_ENTRY: i64 = 1 << 36;
/// The largest magnitude of a destination coordinate or size of [`Placement::Scaled`]
/// and [`Placement::At`].
pub const MAX_COORD: i64 = 1 << 24;
/// Bounds of the per-pixel accumulators.
const AFFINE_STEP_LIMIT: i128 = 1 << 47;
const AFFINE_BASE_LIMIT: i128 = 1 << 60;
const PROJECTIVE_LIMIT: i128 = 1 << 62;

/// A homogeneous 3×3 matrix taking crop coordinates `(u, v, 1)` to output `(X, Y, W)`,
/// the output point being `(X/W, Y/W)`. Scaling the whole matrix changes nothing, so
/// entries are plain integers: a Q16.16 affine matrix is `[[a, b, c], [d, e, f], [0, 0,
/// 65536]]`. Points with `W ≤ 0` are behind the viewer and never drawn. Entries are
/// limited to ±[`MAX_ENTRY`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transform {
    pub m: [[i64; 3]; 3],
}

impl Transform {
    pub const fn new(m: [[i64; 3]; 3]) -> Self {
        Transform { m }
    }

    /// A Q16.16 affine map: `x = a·u + b·v + c`, `y = d·u + e·v + f`.
    pub const fn affine_q16(a: i32, b: i32, c: i32, d: i32, e: i32, f: i32) -> Self {
        Transform {
            m: [
                [a as i64, b as i64, c as i64],
                [d as i64, e as i64, f as i64],
                [0, 0, Q16_ONE],
            ],
        }
    }

    /// The projective map taking a `crop_w × crop_h` crop's corners — top-left,
    /// top-right, bottom-right, bottom-left — to the output points `quad` in that
    /// order (a panel placed in 3D and seen in perspective). `None` when the quad is
    /// degenerate (three corners on a line), a coordinate exceeds ±[`MAX_COORD`], or
    /// the crop is empty. Computed exactly in `i128`, then scaled down to fit
    /// ±[`MAX_ENTRY`] (a uniform scale changes nothing but rounding).
    pub fn from_quad(crop_w: u32, crop_h: u32, quad: [(i32, i32); 4]) -> Option<Self> {
        if crop_w == 0 || crop_h == 0 {
            return None;
        }
        if quad
            .iter()
            .any(|&(x, y)| i64::from(x).abs() > MAX_COORD || i64::from(y).abs() > MAX_COORD)
        {
            return None;
        }
        let p = quad.map(|(x, y)| (i128::from(x), i128::from(y)));
        let [(x0, y0), (x1, y1), (x2, y2), (x3, y3)] = p;
        // The unit square to the quad (s, t in 0..1): x = (a·s + b·t + c)/(g·s + h·t + i).
        let (dx1, dx2, sx) = (x1 - x2, x3 - x2, x0 - x1 + x2 - x3);
        let (dy1, dy2, sy) = (y1 - y2, y3 - y2, y0 - y1 + y2 - y3);
        let den = dx1 * dy2 - dx2 * dy1;
        if den == 0 {
            return None;
        }
        let g = sx * dy2 - dx2 * sy;
        let h = dx1 * sy - sx * dy1;
        let unit = [
            [(x1 - x0) * den + g * x1, (x3 - x0) * den + h * x3, x0 * den],
            [(y1 - y0) * den + g * y1, (y3 - y0) * den + h * y3, y0 * den],
            [g, h, den],
        ];
        // s = u / crop_w, t = v / crop_h: scale the columns by crop_h, crop_w and
        // crop_w·crop_h.
        let (cw, ch) = (i128::from(crop_w), i128::from(crop_h));
        let mut m = unit.map(|[a, b, c]| [a * ch, b * cw, c * cw * ch]);
        // W must be positive inside the quad: its sign is the orientation of `den`.
        if den < 0 {
            m = m.map(|row| row.map(|e| -e));
        }
        let largest = m.iter().flatten().map(|e| e.unsigned_abs()).max()?;
        let mut shift = 0;
        while (largest >> shift) > MAX_ENTRY as u128 {
            shift += 1;
        }
        let half = if shift == 0 { 0 } else { 1i128 << (shift - 1) };
        let out = m.map(|row| row.map(|e| ((e + half) >> shift) as i64));
        // A degenerate quad (three corners on a line) leaves a singular matrix.
        let t = Transform { m: out };
        let [[a, b, c], [d, e, f], [gg, hh, ii]] = t.m.map(|r| r.map(i128::from));
        let det = a * (e * ii - f * hh) - b * (d * ii - f * gg) + c * (d * hh - e * gg);
        (det != 0).then_some(t)
    }

    fn is_affine(&self) -> bool {
        self.m[2][0] == 0 && self.m[2][1] == 0
    }
}

/// Where a layer's crop goes on the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Unscaled, top-left corner at `(x, y)`.
    At { x: i32, y: i32 },
    /// Scaled to fill `dst` (how a GOP guest is fitted to its virtual monitor).
    Scaled(Rect),
    /// Any affine or projective map.
    Transform(Transform),
}

/// `value(x, y) = base + (x − x0)·dx + (y − y0)·dy` at output pixel `(x, y)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Linear {
    pub base: i64,
    pub dx: i64,
    pub dy: i64,
}

impl Linear {
    /// The value at `(x, y)` relative to the mapping's origin.
    #[inline(always)]
    pub fn at(&self, rx: i64, ry: i64) -> i64 {
        self.base + rx * self.dx + ry * self.dy
    }
}

/// The output-to-crop map of a layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inverse {
    /// `u`, `v` in Q32.32.
    Affine { u: Linear, v: Linear },
    /// `u = U/W`, `v = V/W` in Q16.16, drawn only where `W > 0`.
    Projective { u: Linear, v: Linear, w: Linear },
}

/// A layer's placement prepared for one output: its inverse, the origin `(x0, y0)`
/// its linear forms are relative to, and the output rectangle it may cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Mapping {
    pub inverse: Inverse,
    pub x0: i32,
    pub y0: i32,
    /// Output pixels that may be covered, clipped to the output.
    pub bounds: Rect,
    forward: [[i128; 3]; 3],
}

/// `round(n / d)` for `d ≠ 0`.
fn div_round(n: i128, d: i128) -> Option<i128> {
    let (n, d) = if d < 0 {
        (n.checked_neg()?, -d)
    } else {
        (n, d)
    };
    Some(
        n.checked_mul(2)?
            .checked_add(d)?
            .div_euclid(d.checked_mul(2)?),
    )
}

fn fits(v: i128, limit: i128) -> Option<i64> {
    (v.abs() <= limit).then_some(v as i64)
}

impl Mapping {
    /// Prepares `placement` of a `crop_w × crop_h` crop for `output`.
    pub fn new(
        placement: &Placement,
        crop_w: u32,
        crop_h: u32,
        output: Rect,
    ) -> Result<Mapping, LayerError> {
        let (cw, ch) = (i128::from(crop_w), i128::from(crop_h));
        let forward = match *placement {
            Placement::At { x, y } => {
                let (x, y) = (i128::from(x), i128::from(y));
                [[1, 0, x], [0, 1, y], [0, 0, 1]]
            }
            Placement::Scaled(dst) => {
                if dst.is_empty() {
                    return Err(LayerError::Empty);
                }
                let (dx, dy) = (i128::from(dst.x), i128::from(dst.y));
                let (dw, dh) = (i128::from(dst.w), i128::from(dst.h));
                if dw > MAX_COORD as i128 || dh > MAX_COORD as i128 {
                    return Err(LayerError::TooLarge);
                }
                [
                    [dw * ch, 0, dx * cw * ch],
                    [0, dh * cw, dy * cw * ch],
                    [0, 0, cw * ch],
                ]
            }
            Placement::Transform(t) => {
                if t.m.iter().flatten().any(|e| e.abs() > MAX_ENTRY) {
                    return Err(LayerError::TooLarge);
                }
                t.m.map(|row| row.map(i128::from))
            }
        };
        let whole = Rect::new(0, 0, crop_w, crop_h);
        // Unscaled and scaled layers cover exactly their destination rectangle.
        let exact = match *placement {
            Placement::At { x, y } => Some(Rect::new(x, y, crop_w, crop_h)),
            Placement::Scaled(dst) => Some(dst),
            Placement::Transform(_) => None,
        };
        let bounds = match exact {
            Some(r) => r,
            None => Self::bounds_through(&forward, whole)?,
        }
        .intersect(&output)
        .ok_or(LayerError::Offscreen)?;
        let (x0, y0) = (bounds.x, bounds.y);
        let inverse = match *placement {
            Placement::At { x, y } => {
                // u = x − dx exactly, at the pixel centre: u = (x0 − dx) + ½.
                let base = |o: i32, d: i32| {
                    let v =
                        ((i128::from(o) - i128::from(d)) << AFFINE_FRAC) + (1 << (AFFINE_FRAC - 1));
                    fits(v, AFFINE_BASE_LIMIT).ok_or(LayerError::TooLarge)
                };
                Inverse::Affine {
                    u: Linear {
                        base: base(x0, x)?,
                        dx: 1 << AFFINE_FRAC,
                        dy: 0,
                    },
                    v: Linear {
                        base: base(y0, y)?,
                        dx: 0,
                        dy: 1 << AFFINE_FRAC,
                    },
                }
            }
            Placement::Scaled(dst) => {
                // u = (x + ½ − dx)·cw/dw.
                let axis = |o: i32, d: i32, c: i128, len: u32| -> Option<(i64, i64)> {
                    let len = i128::from(len);
                    let step = div_round(c << AFFINE_FRAC, len)?;
                    let num = ((2 * (i128::from(o) - i128::from(d)) + 1) * c) << (AFFINE_FRAC - 1);
                    let base = div_round(num, len)?;
                    Some((
                        fits(base, AFFINE_BASE_LIMIT)?,
                        fits(step, AFFINE_STEP_LIMIT)?,
                    ))
                };
                let (ub, us) = axis(x0, dst.x, cw, dst.w).ok_or(LayerError::TooLarge)?;
                let (vb, vs) = axis(y0, dst.y, ch, dst.h).ok_or(LayerError::TooLarge)?;
                Inverse::Affine {
                    u: Linear {
                        base: ub,
                        dx: us,
                        dy: 0,
                    },
                    v: Linear {
                        base: vb,
                        dx: 0,
                        dy: vs,
                    },
                }
            }
            Placement::Transform(t) if t.is_affine() => Self::affine_inverse(&forward, x0, y0)?,
            Placement::Transform(_) => Self::projective_inverse(&forward, x0, y0)?,
        };
        Ok(Mapping {
            inverse,
            x0,
            y0,
            bounds,
            forward,
        })
    }

    /// The inverse of an affine `f` (whose `W = f[2][2]` is positive: a negative one
    /// puts the whole plane behind the viewer and is refused earlier as `Offscreen`).
    fn affine_inverse(f: &[[i128; 3]; 3], x0: i32, y0: i32) -> Result<Inverse, LayerError> {
        let [[m00, m01, m02], [m10, m11, m12], [_, _, m22]] = *f;
        let det = m00 * m11 - m01 * m10;
        if det == 0 || m22 == 0 {
            return Err(LayerError::Degenerate);
        }
        // (u, v)·det = adj · (x, y, 1), the adjugate rows of an affine matrix.
        let rows = [
            [m11 * m22, -m01 * m22, m01 * m12 - m02 * m11],
            [-m10 * m22, m00 * m22, m02 * m10 - m00 * m12],
        ];
        let (px, py) = (2 * i128::from(x0) + 1, 2 * i128::from(y0) + 1);
        let lin = |[a, b, c]: [i128; 3]| -> Option<Linear> {
            let num = a
                .checked_mul(px)?
                .checked_add(b.checked_mul(py)?)?
                .checked_add(c.checked_mul(2)?)?;
            let base = div_round(num.checked_mul(1 << (AFFINE_FRAC - 1))?, det)?;
            let dx = div_round(a.checked_mul(1 << AFFINE_FRAC)?, det)?;
            let dy = div_round(b.checked_mul(1 << AFFINE_FRAC)?, det)?;
            Some(Linear {
                base: fits(base, AFFINE_BASE_LIMIT)?,
                dx: fits(dx, AFFINE_STEP_LIMIT)?,
                dy: fits(dy, AFFINE_STEP_LIMIT)?,
            })
        };
        Ok(Inverse::Affine {
            u: lin(rows[0]).ok_or(LayerError::TooLarge)?,
            v: lin(rows[1]).ok_or(LayerError::TooLarge)?,
        })
    }

    /// The inverse of a projective `f`: the adjugate (the inverse up to scale), its
    /// `u`, `v` rows scaled to give Q16.16, sign-fixed so that points in front of the
    /// viewer get `W > 0`, and shifted as one so every accumulator stays within ±2^62
    /// over the output while keeping as many bits as that allows.
    fn projective_inverse(f: &[[i128; 3]; 3], x0: i32, y0: i32) -> Result<Inverse, LayerError> {
        let m = |r: usize, c: usize| f[r][c];
        let cof = |r0: usize, r1: usize, c0: usize, c1: usize| {
            m(r0, c0) * m(r1, c1) - m(r0, c1) * m(r1, c0)
        };
        // adj = transpose of the cofactor matrix.
        let adj = [
            [cof(1, 2, 1, 2), -cof(0, 2, 1, 2), cof(0, 1, 1, 2)],
            [-cof(1, 2, 0, 2), cof(0, 2, 0, 2), -cof(0, 1, 0, 2)],
            [cof(1, 2, 0, 1), -cof(0, 2, 0, 1), cof(0, 1, 0, 1)],
        ];
        let det = m(0, 0) * adj[0][0] + m(0, 1) * adj[1][0] + m(0, 2) * adj[2][0];
        if det == 0 {
            return Err(LayerError::Degenerate);
        }
        let sign = det.signum();
        let (px, py) = (2 * i128::from(x0) + 1, 2 * i128::from(y0) + 1);
        // Each row as (base, dx, dy) over doubled pixel-centre coordinates.
        let mut rows = [[0i128; 3]; 3];
        for (i, row) in rows.iter_mut().enumerate() {
            let scale = if i < 2 { Q16_ONE as i128 } else { 1 };
            let [a, b, c] = adj[i].map(|e| e * scale * sign);
            *row = [a * px + b * py + 2 * c, 2 * a, 2 * b];
        }
        let span = i128::from(MAX_DIM);
        let bound = rows
            .iter()
            .map(|[base, dx, dy]| base.abs() + (dx.abs() + dy.abs()) * span)
            .max()
            .unwrap_or(0);
        if bound == 0 {
            return Err(LayerError::Degenerate);
        }
        // The shift putting `bound` just under the limit.
        let mut shift: i32 = (128 - bound.leading_zeros() as i32) - 62;
        let apply = |v: i128, s: i32| if s >= 0 { v >> s } else { v << -s };
        let fits_all = |s: i32| {
            rows.iter().all(|[b, x, y]| {
                apply(*b, s).abs() + (apply(*x, s).abs() + apply(*y, s).abs()) * span
                    <= PROJECTIVE_LIMIT
            })
        };
        while !fits_all(shift) {
            shift += 1;
        }
        let lin = |[b, x, y]: [i128; 3]| Linear {
            base: apply(b, shift) as i64,
            dx: apply(x, shift) as i64,
            dy: apply(y, shift) as i64,
        };
        let w = lin(rows[2]);
        if w.dx == 0 && w.dy == 0 && w.base <= 0 {
            return Err(LayerError::Degenerate);
        }
        Ok(Inverse::Projective {
            u: lin(rows[0]),
            v: lin(rows[1]),
            w,
        })
    }

    /// The output rectangle that may hold the image of crop rectangle `src`, one pixel
    /// wider on every side than the exact image (unclipped). A plane crossing the
    /// viewer gives the whole coordinate range; one wholly behind it gives `Offscreen`.
    fn bounds_through(f: &[[i128; 3]; 3], src: Rect) -> Result<Rect, LayerError> {
        let (u0, v0) = (i128::from(src.x), i128::from(src.y));
        let (u1, v1) = (src.right() as i128, src.bottom() as i128);
        let corners = [(u0, v0), (u1, v0), (u0, v1), (u1, v1)];
        let mut front = 0;
        let (mut lo_x, mut lo_y, mut hi_x, mut hi_y) = (i128::MAX, i128::MAX, i128::MIN, i128::MIN);
        for (u, v) in corners {
            let p = f.map(|[a, b, c]| a * u + b * v + c);
            let w = p[2];
            if w <= 0 {
                continue;
            }
            front += 1;
            lo_x = lo_x.min(p[0].div_euclid(w));
            lo_y = lo_y.min(p[1].div_euclid(w));
            hi_x = hi_x.max(-((-p[0]).div_euclid(w)));
            hi_y = hi_y.max(-((-p[1]).div_euclid(w)));
        }
        let clamp = |v: i128| v.clamp(i128::from(i32::MIN), i128::from(i32::MAX)) as i64;
        match front {
            0 => Err(LayerError::Offscreen),
            4 => Rect::from_edges(
                clamp(lo_x - 1),
                clamp(lo_y - 1),
                clamp(hi_x + 1),
                clamp(hi_y + 1),
            )
            .ok_or(LayerError::Degenerate),
            _ => Ok(Rect::from_edges(
                i64::from(i32::MIN),
                i64::from(i32::MIN),
                i64::from(i32::MAX),
                i64::from(i32::MAX),
            )
            .unwrap_or_default()),
        }
    }

    /// The output pixels a change of crop rectangle `src` can alter (bilinear sampling
    /// reads one texel beyond a pixel's footprint, so `src` is first widened by one).
    pub fn damage_of(&self, src: Rect, crop_w: u32, crop_h: u32) -> Option<Rect> {
        let crop = Rect::new(0, 0, crop_w, crop_h);
        let wide = Rect::from_edges(
            i64::from(src.x) - 1,
            i64::from(src.y) - 1,
            src.right() + 1,
            src.bottom() + 1,
        )?
        .intersect(&crop)?;
        Self::bounds_through(&self.forward, wide)
            .ok()?
            .intersect(&self.bounds)
    }
}
