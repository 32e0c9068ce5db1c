//! The row loops of layers that are neither unscaled nor axis-aligned bilinear:
//! rotated or sheared affine placements, projective ones (a quad), nearest or
//! bilinear, and scaled ones sampled nearest.
//!
//! Per row, the pixels the layer covers are found once, exactly: the source point
//! of pixel `i` of the span is linear in `i` (affine: `u`, `v`; projective: `U`, `V`,
//! `W` with `u = U/W`), so "inside the crop" is an intersection of half-lines —
//! `u ≥ 0`, `u < crop width`, likewise `v`, and for projective placements `W > 0`
//! with the crop's bounds multiplied through by `W` — computed in `i128`, a range of
//! pixels. Inside it no pixel is tested: the source point advances by an addition
//! per pixel (a division per pixel for projective placements, of non-negative
//! numbers), and each pixel is sampled and stored. Bilinear spans are split the same
//! way at the range where the 2×2 footprint lies inside the crop, which is sampled
//! without clamping. The loops are compiled per pair of source and output formats
//! (type parameters, so the byte orders fold into the loop instead of a `match` per
//! pixel) and per filter, and read texels and write pixels a word at a time when the
//! surface and the output are word-aligned.
//!
//! The results are those of the per-pixel loop that tests every pixel (kept under
//! `cfg(test)` as `reference_span` and compared on random transforms, crops, formats
//! and spans by a property test in `tests.rs`): the same integer arithmetic in the
//! same order, only the tests are hoisted.

use crate::format::{PixelFormat, BYTES_PER_PIXEL};
use crate::pixel::{blend, div255, lerp};
use crate::surface::Surface;
use crate::transform::{Linear, Q16_ONE};

/// A pixel format known at compile time.
pub(crate) trait Format {
    const FORMAT: PixelFormat;
}

pub(crate) struct Xrgb;
pub(crate) struct Argb;
pub(crate) struct Bgrx;

impl Format for Xrgb {
    const FORMAT: PixelFormat = PixelFormat::Xrgb8888;
}
impl Format for Argb {
    const FORMAT: PixelFormat = PixelFormat::Argb8888;
}
impl Format for Bgrx {
    const FORMAT: PixelFormat = PixelFormat::Bgrx8888;
}

/// The pixels `i` in `0..n` where `a + i·d ≥ 0` (a half-line meets `0..n` in a
/// range).
fn nonnegative(a: i128, d: i128, n: i128) -> (i128, i128) {
    match d.signum() {
        0 if a >= 0 => (0, n),
        0 => (0, 0),
        // i ≥ ⌈−a/d⌉.
        1 => ((-((a).div_euclid(d))).clamp(0, n), n),
        // i ≤ ⌊a/−d⌋.
        _ => (0, (a.div_euclid(-d) + 1).clamp(0, n)),
    }
}

/// The range of `0..n` where every `(a, d)` of `conditions` has `a + i·d ≥ 0`.
fn where_all(conditions: &[(i128, i128)], n: u32) -> Option<(u32, u32)> {
    let n = i128::from(n);
    let (lo, hi) = conditions.iter().fold((0, n), |(lo, hi), &(a, d)| {
        let (l, h) = nonnegative(a, d, n);
        (lo.max(l), hi.min(h))
    });
    // Both lie in 0..=n ≤ u32::MAX.
    (lo < hi).then_some((lo as u32, hi as u32))
}

/// Bounds `lo..hi` of a Q16.16 source coordinate.
type Bounds = (i128, i128);

/// The coordinate range of a `len`-texel crop axis: the whole crop.
fn inside(len: u32) -> Bounds {
    (0, i128::from(len) << 16)
}

/// The coordinate range of a `len`-texel crop axis where the bilinear footprint
/// needs no clamping: the left texel `⌊(c − ½)⌋` (with the weight's rounding, `(c −
/// 0x8000 + 0x80) >> 16`) at least 0 and the right one at most `len − 1`.
fn interior(len: u32) -> Bounds {
    let inset = Q16_ONE as i128 / 2 - 128;
    (inset, ((i128::from(len) - 1) << 16) + inset)
}

/// The pixels `i0..i1` of a span of `n` whose affine source point (Q32.32 `u0 +
/// i·du`, `v0 + i·dv`, compared as Q16.16) lies within `bu` × `bv`.
fn affine_range(
    (u0, du): (i64, i64),
    (v0, dv): (i64, i64),
    bu: Bounds,
    bv: Bounds,
    n: u32,
) -> Option<(u32, u32)> {
    let [u0, du, v0, dv] = [u0, du, v0, dv].map(i128::from);
    // `u >> 16 ≥ lo` ⟺ `u ≥ lo·2^16`; `u >> 16 < hi` ⟺ `u ≤ hi·2^16 − 1`.
    where_all(
        &[
            (u0 - (bu.0 << 16), du),
            ((bu.1 << 16) - 1 - u0, -du),
            (v0 - (bv.0 << 16), dv),
            ((bv.1 << 16) - 1 - v0, -dv),
        ],
        n,
    )
}

/// The pixels `i0..i1` of a span of `n` whose affine source point lies inside a `cw
/// × ch` crop.
pub(crate) fn affine_covered(
    u: (i64, i64),
    v: (i64, i64),
    cw: u32,
    ch: u32,
    n: u32,
) -> Option<(u32, u32)> {
    affine_range(u, v, inside(cw), inside(ch), n)
}

/// The pixels `i0..i1` of a span of `n` whose projective source point (Q16.16 `u =
/// ⌊U/W⌋`, `v = ⌊V/W⌋`, each of `U`, `V`, `W` a start and a step) is in front of the
/// viewer (`W > 0`) and within `bu` × `bv`: `lo·W ≤ U < hi·W`, likewise `V`.
fn projective_range(
    (u0, du): (i64, i64),
    (v0, dv): (i64, i64),
    (w0, dw): (i64, i64),
    bu: Bounds,
    bv: Bounds,
    n: u32,
) -> Option<(u32, u32)> {
    let [u0, du, v0, dv, w0, dw] = [u0, du, v0, dv, w0, dw].map(i128::from);
    where_all(
        &[
            (w0 - 1, dw),
            (u0 - bu.0 * w0, du - bu.0 * dw),
            (bu.1 * w0 - u0 - 1, bu.1 * dw - du),
            (v0 - bv.0 * w0, dv - bv.0 * dw),
            (bv.1 * w0 - v0 - 1, bv.1 * dw - dv),
        ],
        n,
    )
}

/// The pixels `i0..i1` of a span of `n` whose projective source point is in front of
/// the viewer and inside a `cw × ch` crop.
pub(crate) fn projective_covered(
    u: (i64, i64),
    v: (i64, i64),
    w: (i64, i64),
    cw: u32,
    ch: u32,
    n: u32,
) -> Option<(u32, u32)> {
    projective_range(u, v, w, inside(cw), inside(ch), n)
}

/// A layer's crop as read by the row loops.
pub(crate) struct Texels<'a> {
    data: &'a [u8],
    stride: usize,
    /// The crop's top-left pixel's byte offset.
    origin: usize,
    /// The same pixels as words, when the surface's bytes and stride are aligned to
    /// a word (else empty): on strict-alignment targets (both bare-metal ones) a
    /// byte slice costs a load per byte, a word one per texel.
    words: &'a [u32],
    stride_words: usize,
    origin_words: usize,
    last_x: i64,
    last_y: i64,
}

impl<'a> Texels<'a> {
    pub(crate) fn new(surface: &Surface<'a>, cx: u32, cy: u32, cw: u32, ch: u32) -> Self {
        let (data, stride) = (surface.bytes(), surface.stride());
        let origin = cy as usize * stride + cx as usize * BYTES_PER_PIXEL;
        let words = match bytemuck::try_cast_slice::<u8, u32>(data) {
            Ok(w) if stride.is_multiple_of(BYTES_PER_PIXEL) => w,
            // A last row shorter than a word multiple still reads as words up to it.
            _ => match data.len() / BYTES_PER_PIXEL * BYTES_PER_PIXEL {
                n if stride.is_multiple_of(BYTES_PER_PIXEL) => {
                    bytemuck::try_cast_slice::<u8, u32>(&data[..n]).unwrap_or(&[])
                }
                _ => &[],
            },
        };
        Texels {
            data,
            stride,
            origin,
            words,
            stride_words: stride / BYTES_PER_PIXEL,
            origin_words: origin / BYTES_PER_PIXEL,
            last_x: i64::from(cw) - 1,
            last_y: i64::from(ch) - 1,
        }
    }

    /// Crop texel `(x, y)` (inside the crop) as ARGB, read as a word (`WORDS`, when
    /// `words` is not empty) or as bytes. The surface was validated when made and the
    /// crop lies inside it, so the read is always in range; wrapping arithmetic and a
    /// `get` rather than an index keep a mistake from being a panic (it reads 0).
    #[inline(always)]
    fn at<S: Format, const WORDS: bool>(&self, x: i64, y: i64) -> u32 {
        if WORDS {
            let at = (y as usize)
                .wrapping_mul(self.stride_words)
                .wrapping_add(self.origin_words)
                .wrapping_add(x as usize);
            return match self.words.get(at) {
                Some(w) => S::FORMAT.load(w.to_ne_bytes()),
                None => 0,
            };
        }
        let at = (y as usize)
            .wrapping_mul(self.stride)
            .wrapping_add(self.origin)
            .wrapping_add((x as usize).wrapping_mul(BYTES_PER_PIXEL));
        match self.data.get(at..at.wrapping_add(BYTES_PER_PIXEL)) {
            Some(&[b0, b1, b2, b3]) => S::FORMAT.load([b0, b1, b2, b3]),
            _ => 0,
        }
    }

    /// The sample at crop point `(u, v)` (Q16.16, inside the crop): nearest, or
    /// bilinear with texel centres at half-integers, weights rounded to 1/256 and
    /// the crop's border repeated beyond it.
    #[inline(always)]
    fn sample<S: Format, const FILTER: u8, const WORDS: bool>(&self, u: i64, v: i64) -> u32 {
        if FILTER == NEAREST {
            return self.at::<S, WORDS>(u >> 16, v >> 16);
        }
        let tu = (u - Q16_ONE / 2 + 128) >> 8;
        let tv = (v - Q16_ONE / 2 + 128) >> 8;
        let (fx, fy) = ((tu & 0xFF) as u32, (tv & 0xFF) as u32);
        // Inside the interior range (`BILINEAR_INTERIOR`) both texels of each axis
        // lie in the crop; elsewhere the border repeats.
        let clamp = |t: i64, last: i64| {
            if FILTER == BILINEAR_INTERIOR {
                (t, t + 1)
            } else {
                (t.max(0).min(last), (t + 1).max(0).min(last))
            }
        };
        let (x0, x1) = clamp(tu >> 8, self.last_x);
        let (y0, y1) = clamp(tv >> 8, self.last_y);
        let top = lerp(self.at::<S, WORDS>(x0, y0), self.at::<S, WORDS>(x1, y0), fx);
        let bottom = lerp(self.at::<S, WORDS>(x0, y1), self.at::<S, WORDS>(x1, y1), fx);
        lerp(top, bottom, fy)
    }
}

/// The filters of the row loops (a const parameter).
const NEAREST: u8 = 0;
/// Bilinear, clamping the footprint to the crop.
const BILINEAR: u8 = 1;
/// Bilinear where the footprint is known to be inside the crop.
const BILINEAR_INTERIOR: u8 = 2;

/// ARGB `s` with coverage `alpha · opacity` over the output pixel `d` (its bytes as
/// a native word), or `None` where the coverage is 0 (the pixel stays).
#[inline(always)]
fn over<D: Format>(d: u32, s: u32, opacity: u32, opaque: bool) -> Option<u32> {
    if opaque {
        return Some(u32::from_ne_bytes(D::FORMAT.store(s)));
    }
    let a = div255((s >> 24) * opacity);
    if a == 0 {
        return None;
    }
    let out = if a == 255 {
        s
    } else {
        blend(s, D::FORMAT.load(d.to_ne_bytes()), a)
    };
    Some(u32::from_ne_bytes(D::FORMAT.store(out)))
}

/// Samples the layer into the output pixels `out`, the source point of each given
/// by `next` (called once per pixel, in order): a word at a time when the
/// surface and the output are aligned, else a byte at a time.
#[inline(always)]
fn row<S: Format, D: Format, const FILTER: u8>(
    t: &Texels,
    opacity: u32,
    out: &mut [u8],
    next: &mut impl FnMut() -> (i64, i64),
) {
    // Without alpha and at full opacity every covered pixel is replaced.
    let opaque = !S::FORMAT.has_alpha() && opacity == 255;
    let aligned = !t.words.is_empty() && bytemuck::try_cast_slice::<u8, u32>(out).is_ok();
    if aligned {
        let Ok(out) = bytemuck::try_cast_slice_mut::<u8, u32>(out) else {
            return;
        };
        for o in out {
            let (u, v) = next();
            let s = t.sample::<S, FILTER, true>(u, v);
            if let Some(w) = over::<D>(*o, s, opacity, opaque) {
                *o = w;
            }
        }
        return;
    }
    for px in out.chunks_exact_mut(BYTES_PER_PIXEL) {
        let (u, v) = next();
        let s = t.sample::<S, FILTER, false>(u, v);
        let d = u32::from_ne_bytes([px[0], px[1], px[2], px[3]]);
        if let Some(w) = over::<D>(d, s, opacity, opaque) {
            px.copy_from_slice(&w.to_ne_bytes());
        }
    }
}

/// Calls `$f::<S, D>` for the source format `$src` and the output format `$dst`
/// (XRGB8888 and ARGB8888 outputs are written alike: opaque, the same byte order).
macro_rules! by_formats {
    ($src:expr, $dst:expr, $f:ident ( $($arg:expr),* )) => {{
        use crate::format::PixelFormat::{Argb8888, Bgrx8888, Xrgb8888};
        use crate::general::{Argb, Bgrx, Xrgb};
        match ($src, $dst) {
            (Xrgb8888, Xrgb8888 | Argb8888) => $f::<Xrgb, Xrgb>($($arg),*),
            (Xrgb8888, Bgrx8888) => $f::<Xrgb, Bgrx>($($arg),*),
            (Argb8888, Xrgb8888 | Argb8888) => $f::<Argb, Xrgb>($($arg),*),
            (Argb8888, Bgrx8888) => $f::<Argb, Bgrx>($($arg),*),
            (Bgrx8888, Xrgb8888 | Argb8888) => $f::<Bgrx, Xrgb>($($arg),*),
            (Bgrx8888, Bgrx8888) => $f::<Bgrx, Bgrx>($($arg),*),
        }
    }};
}
pub(crate) use by_formats;

/// The source point of an affine layer along a span: `u`, `v` (Q32.32) at its first
/// pixel and their steps per pixel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AffineRow {
    pub u: (i64, i64),
    pub v: (i64, i64),
}

/// Draws an affine layer over the output pixels `out` (whole pixels; `row.u`, `row.v`
/// at the first one).
#[inline(never)]
pub(crate) fn affine_span<S: Format, D: Format>(
    t: &Texels,
    bilinear: bool,
    opacity: u32,
    at: AffineRow,
    out: &mut [u8],
) {
    let n = (out.len() / BYTES_PER_PIXEL) as u32;
    let cw = (t.last_x + 1) as u32;
    let ch = (t.last_y + 1) as u32;
    let Some((i0, i1)) = affine_covered(at.u, at.v, cw, ch, n) else {
        return;
    };
    let (du, dv) = (at.u.1, at.v.1);
    // Inside the range every accumulator is within the limits of `Mapping`.
    let mut uu = at.u.0 + i64::from(i0) * du;
    let mut vv = at.v.0 + i64::from(i0) * dv;
    let Some(out) = out.get_mut(i0 as usize * BYTES_PER_PIXEL..i1 as usize * BYTES_PER_PIXEL)
    else {
        return;
    };
    // Incremental: an addition per pixel.
    let mut next = || {
        let p = (uu >> 16, vv >> 16);
        uu += du;
        vv += dv;
        p
    };
    if !bilinear {
        return row::<S, D, NEAREST>(t, opacity, out, &mut next);
    }
    let inner = affine_range(at.u, at.v, interior(cw), interior(ch), n);
    bilinear_split::<S, D>(t, opacity, out, (i0, i1), inner, &mut next);
}

/// A bilinear span `out` (the covered pixels `covered` of the row) drawn in up to
/// three parts: the pixels whose footprint may cross the crop's border, clamped,
/// around those `inner` whose footprint is inside it, not clamped. `inner` lies
/// within `covered` and is one range, so the parts are in order.
#[inline(always)]
fn bilinear_split<S: Format, D: Format>(
    t: &Texels,
    opacity: u32,
    out: &mut [u8],
    covered: (u32, u32),
    inner: Option<(u32, u32)>,
    next: &mut impl FnMut() -> (i64, i64),
) {
    let Some((j0, j1)) = inner.filter(|&(j0, j1)| covered.0 <= j0 && j1 <= covered.1) else {
        return row::<S, D, BILINEAR>(t, opacity, out, next);
    };
    let at = |j: u32| (j - covered.0) as usize * BYTES_PER_PIXEL;
    let Some((head, rest)) = out.split_at_mut_checked(at(j0)) else {
        return;
    };
    let Some((mid, tail)) = rest.split_at_mut_checked(at(j1) - at(j0)) else {
        return;
    };
    row::<S, D, BILINEAR>(t, opacity, head, next);
    row::<S, D, BILINEAR_INTERIOR>(t, opacity, mid, next);
    row::<S, D, BILINEAR>(t, opacity, tail, next);
}

/// The source point of a projective layer along a span: `U`, `V`, `W` at its first
/// pixel and their steps per pixel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ProjectiveRow {
    pub u: (i64, i64),
    pub v: (i64, i64),
    pub w: (i64, i64),
}

/// Draws a projective layer over the output pixels `out`.
#[inline(never)]
pub(crate) fn projective_span<S: Format, D: Format>(
    t: &Texels,
    bilinear: bool,
    opacity: u32,
    at: ProjectiveRow,
    out: &mut [u8],
) {
    let n = (out.len() / BYTES_PER_PIXEL) as u32;
    let cw = (t.last_x + 1) as u32;
    let ch = (t.last_y + 1) as u32;
    let Some((i0, i1)) = projective_covered(at.u, at.v, at.w, cw, ch, n) else {
        return;
    };
    let (du, dv, dw) = (at.u.1, at.v.1, at.w.1);
    let k = i64::from(i0);
    let (mut uu, mut vv, mut ww) = (at.u.0 + k * du, at.v.0 + k * dv, at.w.0 + k * dw);
    let Some(out) = out.get_mut(i0 as usize * BYTES_PER_PIXEL..i1 as usize * BYTES_PER_PIXEL)
    else {
        return;
    };
    let mut next = || {
        // In the range U, V ≥ 0 and W > 0: the floor division is the unsigned one
        // (`max(1)` only spares the loop a panic path).
        let w = ww.max(1) as u64;
        let p = ((uu as u64 / w) as i64, (vv as u64 / w) as i64);
        uu += du;
        vv += dv;
        ww += dw;
        p
    };
    if !bilinear {
        return row::<S, D, NEAREST>(t, opacity, out, &mut next);
    }
    let inner = projective_range(at.u, at.v, at.w, interior(cw), interior(ch), n);
    bilinear_split::<S, D>(t, opacity, out, (i0, i1), inner, &mut next);
}

/// The start and step of `l` along row `ry` from column `rx` (relative to the
/// mapping's origin).
#[inline(always)]
pub(crate) fn along(l: &Linear, rx: i64, ry: i64) -> (i64, i64) {
    (l.at(rx, ry), l.dx)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `where_all` against testing every `i`.
    #[test]
    fn half_line_ranges_are_exact() {
        let values = [-7i128, -3, -1, 0, 1, 2, 5, 9];
        for a in values {
            for d in values {
                for b in values {
                    for e in values {
                        let conds = [(a, d), (b, e)];
                        let want: alloc::vec::Vec<u32> = (0..12u32)
                            .filter(|&i| conds.iter().all(|&(a, d)| a + i128::from(i) * d >= 0))
                            .collect();
                        let got: alloc::vec::Vec<u32> = where_all(&conds, 12)
                            .map(|(lo, hi)| (lo..hi).collect())
                            .unwrap_or_default();
                        assert_eq!(got, want, "{conds:?}");
                    }
                }
            }
        }
    }
}
