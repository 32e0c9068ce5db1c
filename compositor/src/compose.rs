//! The scene and the compositing loops: layers in z-order over a background colour,
//! recomposed only inside the damaged rectangles. A pixel's value depends on nothing
//! but its coordinates and the scene, so recomposing any set of rectangles gives the
//! same pixels a full recomposition would.

use alloc::vec::Vec;

use crate::format::{PixelFormat, BYTES_PER_PIXEL, OPAQUE};
use crate::general::{
    affine_span, along, by_formats, projective_span, AffineRow, ProjectiveRow, Texels,
};
use crate::geom::Rect;
use crate::kernels::{Kernels, Portable};
#[cfg(test)]
use crate::pixel::lerp;
use crate::pixel::{blend, div255};
use crate::surface::{Frame, LayerError, Surface};
use crate::transform::{Inverse, Mapping, Placement, Q16_ONE};

/// How a layer's pixels are sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Filter {
    Nearest,
    /// Bilinear with 8-bit weights, on straight (not premultiplied) channels; texels
    /// beyond the crop's edge repeat its border.
    Bilinear,
}

/// One surface placed in the scene.
#[derive(Debug, Clone, Copy)]
pub struct Layer<'a> {
    pub surface: Surface<'a>,
    /// The part of the surface shown, in surface pixels; `None` shows all of it.
    pub crop: Option<Rect>,
    pub placement: Placement,
    pub filter: Filter,
    /// Multiplies the surface's own alpha; 255 is opaque.
    pub opacity: u8,
    /// Higher is nearer the viewer; equal `z` keeps the order of the scene's list.
    pub z: i32,
}

impl<'a> Layer<'a> {
    /// `surface` uncropped, unscaled at `(x, y)`, nearest, opaque, `z` 0.
    pub fn new(surface: Surface<'a>, x: i32, y: i32) -> Self {
        Layer {
            surface,
            crop: None,
            placement: Placement::At { x, y },
            filter: Filter::Nearest,
            opacity: 255,
            z: 0,
        }
    }

    fn crop_rect(&self) -> Result<Rect, LayerError> {
        let crop = self.crop.unwrap_or(self.surface.rect());
        if crop.is_empty() {
            return Err(LayerError::Empty);
        }
        if !self.surface.rect().contains(&crop) {
            return Err(LayerError::CropOutside);
        }
        Ok(crop)
    }

    fn prepare(&self, output: Rect) -> Result<Prepared<'a>, LayerError> {
        self.prepare_as(0, output)
    }

    /// [`Layer::prepare`] for the layer at `id` in its scene.
    fn prepare_as(&self, id: usize, output: Rect) -> Result<Prepared<'a>, LayerError> {
        let crop = self.crop_rect()?;
        let mapping = Mapping::new(&self.placement, crop.w, crop.h, output)?;
        let opaque = !self.surface.format().has_alpha() && self.opacity == 255;
        let cover = match self.placement {
            _ if !opaque => None,
            Placement::At { x, y } => Rect::new(x, y, crop.w, crop.h).intersect(&output),
            // Every pixel strictly inside the destination has its centre inside the crop.
            Placement::Scaled(d) => Rect::from_edges(
                i64::from(d.x) + 1,
                i64::from(d.y) + 1,
                d.right() - 1,
                d.bottom() - 1,
            )
            .and_then(|r| r.intersect(&output)),
            Placement::Transform(_) => None,
        };
        Ok(Prepared {
            id,
            surface: self.surface,
            crop,
            mapping,
            filter: self.filter,
            opacity: u32::from(self.opacity),
            cover,
        })
    }

    /// The output pixels this layer may cover on `output`.
    pub fn bounds(&self, output: Rect) -> Result<Rect, LayerError> {
        Ok(self.prepare(output)?.mapping.bounds)
    }

    /// The output pixels that a change of the surface's pixels inside `changed`
    /// (surface coordinates, e.g. a guest's flushed rectangle) can alter.
    pub fn damage_of(&self, changed: Rect, output: Rect) -> Option<Rect> {
        let p = self.prepare(output).ok()?;
        let local = changed.intersect(&p.crop)?;
        let local = Rect::new(local.x - p.crop.x, local.y - p.crop.y, local.w, local.h);
        p.mapping.damage_of(local, p.crop.w, p.crop.h)
    }
}

/// A background colour and layers.
#[derive(Debug, Clone, Default)]
pub struct Scene<'a> {
    /// ARGB; the alpha byte is ignored.
    pub background: u32,
    pub layers: Vec<Layer<'a>>,
}

/// What a composition skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    /// `(index in Scene::layers, why)` for every layer not drawn.
    pub skipped: Vec<(usize, LayerError)>,
}

/// A layer ready to draw on one output.
#[derive(Debug, Clone, Copy)]
struct Prepared<'a> {
    /// The layer's index in the scene (names its cached rows in [`Scratch`]).
    id: usize,
    surface: Surface<'a>,
    crop: Rect,
    mapping: Mapping,
    filter: Filter,
    opacity: u32,
    /// Output pixels this layer certainly covers opaquely.
    cover: Option<Rect>,
}

/// Composes `scene` into `frame` inside `damage` (output coordinates; clipped to the
/// frame, may overlap). Layers whose geometry is unusable are skipped and reported.
pub fn compose(scene: &Scene, frame: &mut Frame, damage: &[Rect]) -> Report {
    compose_with(scene, frame, damage, &Portable)
}

/// [`compose`] with the byte loops run by `kernels` (which give the same bytes as
/// [`Portable`]'s: the result is the same).
pub fn compose_with<K: Kernels + ?Sized>(
    scene: &Scene,
    frame: &mut Frame,
    damage: &[Rect],
    kernels: &K,
) -> Report {
    compose_inner(scene, frame, damage, kernels, false)
}

/// [`compose`] with the layers of the general row loops (`general.rs`) drawn by the
/// per-pixel reference loop instead, for comparing the two.
#[cfg(test)]
pub(crate) fn compose_per_pixel(scene: &Scene, frame: &mut Frame, damage: &[Rect]) -> Report {
    compose_inner(scene, frame, damage, &Portable, true)
}

fn compose_inner<K: Kernels + ?Sized>(
    scene: &Scene,
    frame: &mut Frame,
    damage: &[Rect],
    kernels: &K,
    per_pixel: bool,
) -> Report {
    let output = frame.rect();
    let mut report = Report::default();
    let mut order: Vec<(i32, usize, Prepared)> = Vec::with_capacity(scene.layers.len());
    for (i, layer) in scene.layers.iter().enumerate() {
        match layer.prepare_as(i, output) {
            Ok(p) => order.push((layer.z, i, p)),
            Err(e) => report.skipped.push((i, e)),
        }
    }
    order.sort_by_key(|&(z, i, _)| (z, i));
    let layers: Vec<Prepared> = order.into_iter().map(|(_, _, p)| p).collect();
    let background = scene.background | OPAQUE;
    let mut scratch = Scratch::default();
    #[cfg(test)]
    {
        scratch.per_pixel = per_pixel;
    }
    #[cfg(not(test))]
    let _ = per_pixel;
    for rect in damage {
        let Some(r) = rect.intersect(&output) else {
            continue;
        };
        let (x0, x1) = (r.x as u32, r.right() as u32);
        for y in r.y as u32..r.bottom() as u32 {
            draw_row(kernels, &layers, frame, &mut scratch, background, y, x0, x1);
        }
    }
    report
}

/// Composes the whole frame.
pub fn compose_full(scene: &Scene, frame: &mut Frame) -> Report {
    let all = frame.rect();
    compose(scene, frame, &[all])
}

/// Pixels `x0..x1` of row `y`. The topmost layer covering part of the span opaquely
/// hides everything below it there: below it only the rest of the span is drawn.
#[allow(clippy::too_many_arguments)]
fn draw_row<K: Kernels + ?Sized>(
    k: &K,
    layers: &[Prepared],
    frame: &mut Frame,
    scratch: &mut Scratch,
    background: u32,
    y: u32,
    x0: u32,
    x1: u32,
) {
    if x0 >= x1 {
        return;
    }
    let hidden = layers.iter().enumerate().rev().find_map(|(i, l)| {
        let c = l.cover?;
        let inside = i64::from(y) >= i64::from(c.y) && i64::from(y) < c.bottom();
        let a = i64::from(x0).max(i64::from(c.x));
        let b = i64::from(x1).min(c.right());
        (inside && a < b).then_some((i, a as u32, b as u32))
    });
    let first = match hidden {
        Some((i, a, b)) => {
            draw_row(k, &layers[..i], frame, scratch, background, y, x0, a);
            draw_row(k, &layers[..i], frame, scratch, background, y, b, x1);
            i
        }
        None => {
            let fill = frame.format().store(background);
            let span = frame.span_mut(y, x0, x1);
            match bytemuck::try_cast_slice_mut::<u8, u32>(span) {
                Ok(words) => words.fill(u32::from_ne_bytes(fill)),
                Err(_) => {
                    for px in span.chunks_exact_mut(BYTES_PER_PIXEL) {
                        px.copy_from_slice(&fill);
                    }
                }
            }
            0
        }
    };
    for layer in &layers[first..] {
        draw_span(k, layer, frame, scratch, y, x0, x1);
    }
}

/// `v` limited to `lo..=hi` (`hi` wins if they cross: unlike `Ord::clamp`, never a
/// panic, and inlined in the pixel loops).
#[inline(always)]
fn within(v: i64, lo: i64, hi: i64) -> i64 {
    v.max(lo).min(hi)
}

/// Writes ARGB `s` with coverage `alpha · opacity` over output pixel bytes `px`.
#[inline(always)]
fn put(px: &mut [u8], format: PixelFormat, s: u32, opacity: u32) {
    let a = div255((s >> 24) * opacity);
    if a == 0 {
        return;
    }
    let out = if a == 255 {
        s
    } else {
        blend(s, format.load([px[0], px[1], px[2], px[3]]), a)
    };
    px.copy_from_slice(&format.store(out));
}

/// The layer's sample at crop coordinates `(u, v)` (Q16.16, inside the crop).
#[cfg(test)]
fn sample(l: &Prepared, u: i64, v: i64) -> u32 {
    let (cx, cy) = (l.crop.x as u32, l.crop.y as u32);
    match l.filter {
        Filter::Nearest => l
            .surface
            .pixel(cx + (u >> 16) as u32, cy + (v >> 16) as u32),
        Filter::Bilinear => {
            // Texel centres sit at half-integers; weights rounded to 1/256.
            let tu = (u - Q16_ONE / 2 + 128) >> 8;
            let tv = (v - Q16_ONE / 2 + 128) >> 8;
            let (fx, fy) = ((tu & 0xFF) as u32, (tv & 0xFF) as u32);
            let last_x = i64::from(l.crop.w) - 1;
            let last_y = i64::from(l.crop.h) - 1;
            let x0 = within(tu >> 8, 0, last_x);
            let x1 = within((tu >> 8) + 1, 0, last_x);
            let y0 = within(tv >> 8, 0, last_y);
            let y1 = within((tv >> 8) + 1, 0, last_y);
            let p = |x: i64, y: i64| l.surface.pixel(cx + x as u32, cy + y as u32);
            let top = lerp(p(x0, y0), p(x1, y0), fx);
            let bottom = lerp(p(x0, y1), p(x1, y1), fx);
            lerp(top, bottom, fy)
        }
    }
}

/// Draws the layer over pixels `x0..x1` of row `y`.
fn draw_span<K: Kernels + ?Sized>(
    k: &K,
    l: &Prepared,
    frame: &mut Frame,
    scratch: &mut Scratch,
    y: u32,
    x0: u32,
    x1: u32,
) {
    let b = l.mapping.bounds;
    if i64::from(y) < i64::from(b.y) || i64::from(y) >= b.bottom() {
        return;
    }
    let xa = i64::from(x0).max(i64::from(b.x));
    let xb = i64::from(x1).min(b.right());
    if xa >= xb {
        return;
    }
    let (xa, xb) = (xa as u32, xb as u32);
    let rx0 = i64::from(xa) - i64::from(l.mapping.x0);
    let ry = i64::from(y) - i64::from(l.mapping.y0);
    let format = frame.format();
    match l.mapping.inverse {
        Inverse::Affine { u, v } => {
            if u.dx == 1 << 32
                && u.dy == 0
                && v.dx == 0
                && v.dy == 1 << 32
                && u.base & 0xFFFF_FFFF == 1 << 31
                && v.base & 0xFFFF_FFFF == 1 << 31
            {
                return copy_span(
                    k,
                    l,
                    frame,
                    y,
                    xa,
                    xb,
                    (u.base >> 32) + rx0,
                    (v.base >> 32) + ry,
                );
            }
            if u.dy == 0 && v.dx == 0 && l.filter == Filter::Bilinear {
                let (u0, v16) = (u.at(rx0, ry), v.at(rx0, ry) >> 16);
                let (step, rows) = (u.dx, RowSteps(v.dy));
                return match l.surface.format() {
                    PixelFormat::Xrgb8888 => {
                        axis_bilinear(k, l, frame, scratch, y, xa, xb, u0, step, v16, rows, |w| {
                            w | OPAQUE
                        })
                    }
                    PixelFormat::Argb8888 => {
                        axis_bilinear(k, l, frame, scratch, y, xa, xb, u0, step, v16, rows, |w| w)
                    }
                    PixelFormat::Bgrx8888 => {
                        axis_bilinear(k, l, frame, scratch, y, xa, xb, u0, step, v16, rows, |w| {
                            w.swap_bytes() | OPAQUE
                        })
                    }
                };
            }
            #[cfg(test)]
            if scratch.per_pixel {
                return reference_span(l, frame, y, xa, xb);
            }
            let row = AffineRow {
                u: along(&u, rx0, ry),
                v: along(&v, rx0, ry),
            };
            let t = texels(l);
            let bilinear = l.filter == Filter::Bilinear;
            let out = frame.span_mut(y, xa, xb);
            by_formats!(
                l.surface.format(),
                format,
                affine_span(&t, bilinear, l.opacity, row, out)
            )
        }
        Inverse::Projective { u, v, w } => {
            #[cfg(test)]
            if scratch.per_pixel {
                return reference_span(l, frame, y, xa, xb);
            }
            let row = ProjectiveRow {
                u: along(&u, rx0, ry),
                v: along(&v, rx0, ry),
                w: along(&w, rx0, ry),
            };
            let t = texels(l);
            let bilinear = l.filter == Filter::Bilinear;
            let out = frame.span_mut(y, xa, xb);
            by_formats!(
                l.surface.format(),
                format,
                projective_span(&t, bilinear, l.opacity, row, out)
            )
        }
    }
}

/// The layer's crop as the general row loops read it.
fn texels<'a>(l: &Prepared<'a>) -> Texels<'a> {
    Texels::new(
        &l.surface,
        l.crop.x as u32,
        l.crop.y as u32,
        l.crop.w,
        l.crop.h,
    )
}

/// The straightforward loop the general row loops replace: every pixel's source
/// point computed and tested, sampled through the surface's format. Kept as the
/// reference they are compared with.
#[cfg(test)]
fn reference_span(l: &Prepared, frame: &mut Frame, y: u32, xa: u32, xb: u32) {
    let rx0 = i64::from(xa) - i64::from(l.mapping.x0);
    let ry = i64::from(y) - i64::from(l.mapping.y0);
    let (cw, ch) = (i64::from(l.crop.w) << 16, i64::from(l.crop.h) << 16);
    let format = frame.format();
    match l.mapping.inverse {
        Inverse::Affine { u, v } => {
            let mut uu = u.at(rx0, ry);
            let mut vv = v.at(rx0, ry);
            for px in frame.span_mut(y, xa, xb).chunks_exact_mut(BYTES_PER_PIXEL) {
                let (su, sv) = (uu >> 16, vv >> 16);
                if (0..cw).contains(&su) && (0..ch).contains(&sv) {
                    put(px, format, sample(l, su, sv), l.opacity);
                }
                uu += u.dx;
                vv += v.dx;
            }
        }
        Inverse::Projective { u, v, w } => {
            let mut uu = u.at(rx0, ry);
            let mut vv = v.at(rx0, ry);
            let mut ww = w.at(rx0, ry);
            for px in frame.span_mut(y, xa, xb).chunks_exact_mut(BYTES_PER_PIXEL) {
                if ww > 0 {
                    let (su, sv) = (uu.div_euclid(ww), vv.div_euclid(ww));
                    if (0..cw).contains(&su) && (0..ch).contains(&sv) {
                        put(px, format, sample(l, su, sv), l.opacity);
                    }
                }
                uu += u.dx;
                vv += v.dx;
                ww += w.dx;
            }
        }
    }
}

/// A layer's `v` step per output row (Q32.32), for choosing the order of the passes.
#[derive(Debug, Clone, Copy)]
struct RowSteps(i64);

/// Bilinear sampling of an axis-aligned layer, separably. `u` starts at `u0`
/// (Q32.32) and advances by `step` per pixel; `v` (Q16.16 `v16`) is constant along
/// the row and advances by `rows` per row; `load` reads the surface's format.
///
/// Interpolation works per 8-bit channel, so it commutes with the format's byte
/// order and with forcing alpha opaque: the passes run on the source's raw bytes
/// (loops the compiler vectorises, or the caller's [`Kernels`]) and `load` is
/// applied to each output pixel. Two orders, both giving pixels that depend only
/// on their column, row and the layer:
///
/// - vertical first, when the layer is not magnified vertically: the two source
///   rows' columns are interpolated vertically (once per column, not once per
///   output pixel), then each pixel interpolates two of them horizontally;
/// - horizontal first, when it is (each source row serves more than one output
///   row): each source row the span reads is interpolated horizontally once, kept
///   in [`Scratch`] while the rows below use it, and every output row is one
///   vertical interpolation of two such rows — the per-pixel horizontal pass, the
///   costly one, then runs once per source row instead of once per output row.
// Kept out of line: inlined, its buffers and branches made every `draw_span` call
// (most of them unscaled copies) save and restore more.
#[allow(clippy::too_many_arguments)]
#[inline(never)]
fn axis_bilinear<K: Kernels + ?Sized>(
    k: &K,
    l: &Prepared,
    frame: &mut Frame,
    scratch: &mut Scratch,
    y: u32,
    xa: u32,
    xb: u32,
    u0: i64,
    step: i64,
    v16: i64,
    rows: RowSteps,
    load: impl Fn(u32) -> u32,
) {
    let (cw, ch) = (i64::from(l.crop.w) << 16, i64::from(l.crop.h) << 16);
    if !(0..ch).contains(&v16) {
        return;
    }
    let tv = (v16 - Q16_ONE / 2 + 128) >> 8;
    let fy = (tv & 0xFF) as u8;
    let last_x = i64::from(l.crop.w) - 1;
    let last_y = i64::from(l.crop.h) - 1;
    let (cx, cy) = (l.crop.x as u32, l.crop.y as u32);
    // Texel column (before clamping) and weight of a Q16.16 `u`.
    let column = |u16: i64| (u16 - Q16_ONE / 2 + 128) >> 8;
    let first = column(u0 >> 16) >> 8;
    let last = column((u0 + step * (i64::from(xb - xa) - 1)) >> 16) >> 8;
    let lo = within(first.min(last), 0, last_x);
    let hi = within(first.max(last) + 1, 0, last_x);
    // The source rows' columns lo..=hi (crop coordinates).
    let row = |r: i64| {
        let sy = cy + within(r, 0, last_y) as u32;
        l.surface.span(sy, cx + lo as u32, cx + hi as u32 + 1)
    };
    let (r0, r1) = (within(tv >> 8, 0, last_y), within((tv >> 8) + 1, 0, last_y));
    let n = (hi - lo + 1) as usize;
    let g = scratch.gather(Span {
        u0,
        step,
        count: xb - xa,
        cw,
        lo,
    });
    let Some((i0, i1)) = g.covered else {
        return;
    };
    let m = (i1 - i0) as usize;
    let (format, opacity) = (frame.format(), l.opacity);
    let out = frame.span_mut(y, xa + i0, xa + i1);
    let opaque = !l.surface.format().has_alpha() && opacity == 255;
    // Opaque and the same byte order in and out: interpolate straight into the
    // output, forcing alpha there (interpolation is per channel, `load` and the
    // store only reorder bytes and set alpha; and a channel that is 0xFF in every
    // texel interpolates to 0xFF).
    let direct = match (opaque, same_order_alpha(l.surface.format(), format)) {
        (true, Some(alpha)) => Some(u32::from_le_bytes(core::array::from_fn(|i| {
            if i == alpha {
                0xFF
            } else {
                0
            }
        }))),
        _ => None,
    };
    if rows.0 < 1 << 32 {
        // Horizontal first. The rows are cached by layer and source row (the
        // table's geometry is the span's: `gather` drops them when it changes).
        let mask = direct.unwrap_or(0);
        let id = l.id;
        let (a, b) = match (g.cached(id, r0), g.cached(id, r1)) {
            (Some(a), Some(b)) => (a, b),
            (Some(a), None) => (a, g.fill(k, 1 - a, (id, r1), row(r1), n, mask)),
            (None, Some(b)) => (g.fill(k, 1 - b, (id, r0), row(r0), n, mask), b),
            (None, None) => {
                let a = g.fill(k, 0, (id, r0), row(r0), n, mask);
                let b = if r1 == r0 {
                    a
                } else {
                    g.fill(k, 1, (id, r1), row(r1), n, mask)
                };
                (a, b)
            }
        };
        let (top, bottom) = (&g.rows[a].px, &g.rows[b].px);
        if direct.is_some() {
            return k.lerp_rows(
                bytemuck::cast_slice(top),
                bytemuck::cast_slice(bottom),
                fy,
                out,
            );
        }
        let samples = &mut g.left;
        samples.resize(m, 0);
        k.lerp_rows(
            bytemuck::cast_slice(top),
            bytemuck::cast_slice(bottom),
            fy,
            bytemuck::cast_slice_mut(samples),
        );
        return store_samples(out, samples, &load, format, opacity, opaque);
    }
    // Vertical first: columns lo..=hi at 1..=n, with the edge columns repeated at 0
    // and n + 1.
    let (top, bottom) = (row(r0), row(r1));
    let cols = &mut g.cols;
    // Every element is written below: resizing only when the length changes saves
    // clearing the buffers on every row.
    cols.resize(n + 2, 0);
    k.lerp_rows(top, bottom, fy, bytemuck::cast_slice_mut(&mut cols[1..=n]));
    cols[0] = cols[1];
    cols[n + 1] = cols[n];
    let (left, right) = (&mut g.left, &mut g.right);
    gather_pairs(cols, &g.index, left, right);
    if let Some(mask) = direct {
        return k.lerp_weighted(
            out,
            bytemuck::cast_slice(left),
            bytemuck::cast_slice(right),
            bytemuck::cast_slice(&g.weight),
            mask,
        );
    }
    // Interpolate: byte by byte, each with its pixel's weight (vectorises).
    k.lerp_weighted_in_place(
        bytemuck::cast_slice_mut(left),
        bytemuck::cast_slice(right),
        bytemuck::cast_slice(&g.weight),
    );
    store_samples(out, left, &load, format, opacity, opaque)
}

/// `left[i]`, `right[i]` = the columns `cols[index[i]]`, `cols[index[i] + 1]` (the
/// buffers resized to `index`). A covered pixel's left texel is at least lo − 1
/// (only when lo = 0, where the clamped texel is column 0) and its right texel at
/// most hi + 1 (only when hi = last_x), so with the edge columns repeated at both
/// ends of `cols` every pair is inside it.
#[inline(always)]
fn gather_pairs(cols: &[u32], index: &[u32], left: &mut Vec<u32>, right: &mut Vec<u32>) {
    left.resize(index.len(), 0);
    right.resize(index.len(), 0);
    // Every index is at most `cols.len() − 2` by construction; the `min` says so to
    // the compiler, which then reads both columns without a bounds check (the loop
    // is the one scalar pass of the bilinear passes: a load of the index, one of
    // the pair, two stores).
    let Some(last) = cols.len().checked_sub(2) else {
        return;
    };
    for ((&k, a), b) in index.iter().zip(left.iter_mut()).zip(right.iter_mut()) {
        let k = (k as usize).min(last);
        (*a, *b) = (cols[k], cols[k + 1]);
    }
}

/// Writes interpolated raw source pixels (little-endian words) into `out`, read
/// with `load` and stored in the output's `format`: blended unless `opaque`.
#[inline(always)]
fn store_samples(
    out: &mut [u8],
    samples: &[u32],
    load: impl Fn(u32) -> u32,
    format: PixelFormat,
    opacity: u32,
    opaque: bool,
) {
    let samples = samples.iter().map(|&w| load(u32::from_le(w)));
    if !opaque {
        for (px, s) in out.chunks_exact_mut(BYTES_PER_PIXEL).zip(samples) {
            put(px, format, s, opacity);
        }
        return;
    }
    // Opaque: every covered pixel is replaced; the store is chosen once per span.
    let store = |s: u32| match format {
        PixelFormat::Xrgb8888 | PixelFormat::Argb8888 => (s | OPAQUE).to_le(),
        PixelFormat::Bgrx8888 => (s | OPAQUE).swap_bytes().to_le(),
    };
    if let Ok(words) = bytemuck::try_cast_slice_mut::<u8, u32>(out) {
        for (d, s) in words.iter_mut().zip(samples) {
            *d = store(s);
        }
        return;
    }
    for (px, s) in out.chunks_exact_mut(BYTES_PER_PIXEL).zip(samples) {
        px.copy_from_slice(&store(s).to_ne_bytes());
    }
}

/// The horizontal sampling of an axis-aligned span: which covered pixel reads which
/// two columns with which weight. It depends only on these numbers, the same for
/// every row of a layer, so it is computed once and reused while they stay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    /// `u` of the span's first pixel (Q32.32) and its step per pixel.
    u0: i64,
    step: i64,
    /// Pixels in the span.
    count: u32,
    /// Crop width (Q16.16).
    cw: i64,
    /// The first crop column the span reads.
    lo: i64,
}

/// Buffers reused across the rows of one composition.
#[derive(Default)]
struct Scratch {
    /// The span `index`/`weight`/`covered` were computed for.
    span: Option<Span>,
    /// The covered pixels `i0..i1` of the span (contiguous: `u` is monotonic).
    covered: Option<(u32, u32)>,
    /// Per covered pixel: the index of its left column in `cols`, and its weight
    /// replicated into every byte.
    index: Vec<u32>,
    weight: Vec<u32>,
    /// Vertically interpolated columns of the current row, with the edges repeated.
    cols: Vec<u32>,
    /// Per covered pixel: its left and right texel (then the interpolated sample).
    left: Vec<u32>,
    right: Vec<u32>,
    /// Source rows interpolated horizontally for the span (the horizontal-first
    /// order of `axis_bilinear`).
    rows: [HRow; 2],
    /// Draw the layers the general row loops draw (neither unscaled nor axis-aligned
    /// bilinear) with the per-pixel reference loop instead (tests).
    #[cfg(test)]
    per_pixel: bool,
}

/// A source row interpolated horizontally: one word per covered pixel of the span.
#[derive(Default)]
struct HRow {
    /// The layer's id and the crop row it holds, if any.
    key: Option<(usize, i64)>,
    px: Vec<u32>,
}

impl Scratch {
    /// The buffers, with the table for `span`.
    fn gather(&mut self, span: Span) -> &mut Self {
        if self.span == Some(span) {
            return self;
        }
        let covered = |i: u32| (0..span.cw).contains(&((span.u0 + span.step * i64::from(i)) >> 16));
        self.covered = (0..span.count).find(|&i| covered(i)).map(|i0| {
            let last = (i0..span.count).rev().find(|&i| covered(i)).unwrap_or(i0);
            (i0, last + 1)
        });
        self.index.clear();
        self.weight.clear();
        self.rows.iter_mut().for_each(|r| r.key = None);
        if let Some((i0, i1)) = self.covered {
            for i in i0..i1 {
                let u16 = (span.u0 + span.step * i64::from(i)) >> 16;
                let tu = (u16 - Q16_ONE / 2 + 128) >> 8;
                self.index.push(((tu >> 8) - span.lo + 1) as u32);
                self.weight.push((tu & 0xFF) as u32 * 0x0101_0101);
            }
        }
        self.span = Some(span);
        self
    }

    /// The slot holding crop row `row` of layer `id`, interpolated for the span.
    fn cached(&self, id: usize, row: i64) -> Option<usize> {
        self.rows.iter().position(|r| r.key == Some((id, row)))
    }

    /// Interpolates the source row `src` (the span's columns lo..=hi, `n` of them)
    /// horizontally into slot `slot` (0 or 1), each word ORed with `mask`, and
    /// names it `key`; returns the slot.
    fn fill<K: Kernels + ?Sized>(
        &mut self,
        k: &K,
        slot: usize,
        key: (usize, i64),
        src: &[u8],
        n: usize,
        mask: u32,
    ) -> usize {
        // Columns at 1..=n with the edges repeated, as in the vertical-first order.
        self.cols.resize(n + 2, 0);
        k.or_words(src, bytemuck::cast_slice_mut(&mut self.cols[1..=n]), mask);
        self.cols[0] = self.cols[1];
        self.cols[n + 1] = self.cols[n];
        gather_pairs(&self.cols, &self.index, &mut self.left, &mut self.right);
        let Some(r) = self.rows.get_mut(slot) else {
            return 0;
        };
        r.px.resize(self.index.len(), 0);
        k.lerp_weighted(
            bytemuck::cast_slice_mut(&mut r.px),
            bytemuck::cast_slice(&self.left),
            bytemuck::cast_slice(&self.right),
            bytemuck::cast_slice(&self.weight),
            0,
        );
        r.key = Some(key);
        slot
    }
}

/// The byte of a pixel that holds alpha when `from` and `to` store the colour
/// channels in the same byte order, else None.
fn same_order_alpha(from: PixelFormat, to: PixelFormat) -> Option<usize> {
    use PixelFormat::{Argb8888, Bgrx8888, Xrgb8888};
    match (from, to) {
        (Xrgb8888 | Argb8888, Xrgb8888 | Argb8888) => Some(3),
        (Bgrx8888, Bgrx8888) => Some(0),
        _ => None,
    }
}

/// An unscaled layer: output pixel `xa + i` of row `y` is crop pixel `(su + i, sv)`.
#[allow(clippy::too_many_arguments)]
fn copy_span<K: Kernels + ?Sized>(
    k: &K,
    l: &Prepared,
    frame: &mut Frame,
    y: u32,
    xa: u32,
    xb: u32,
    su: i64,
    sv: i64,
) {
    if !(0..i64::from(l.crop.h)).contains(&sv) {
        return;
    }
    // Clip to the crop's columns.
    let skip = (-su).max(0);
    let len = (i64::from(xb) - i64::from(xa) - skip).min(i64::from(l.crop.w) - (su + skip));
    if len <= 0 {
        return;
    }
    let (dx, sx) = (xa + skip as u32, (su + skip) as u32 + l.crop.x as u32);
    let sy = sv as u32 + l.crop.y as u32;
    let src = l.surface.span(sy, sx, sx + len as u32);
    let out = frame.format();
    let dst = frame.span_mut(y, dx, dx + len as u32);
    let from = l.surface.format();
    use PixelFormat::{Argb8888, Bgrx8888, Xrgb8888};
    if let (Argb8888, Xrgb8888 | Argb8888, Ok(opacity)) = (from, out, u8::try_from(l.opacity)) {
        // The overlays: the same byte order in and out.
        return k.blend_argb(src, dst, opacity);
    }
    if from.has_alpha() || l.opacity != 255 {
        for (d, s) in dst
            .chunks_exact_mut(BYTES_PER_PIXEL)
            .zip(src.chunks_exact(BYTES_PER_PIXEL))
        {
            put(d, out, from.load([s[0], s[1], s[2], s[3]]), l.opacity);
        }
        return;
    }
    match (from, out) {
        (Xrgb8888 | Argb8888, Xrgb8888 | Argb8888) => k.or_words(src, dst, OPAQUE),
        (Bgrx8888, Bgrx8888) => k.or_words(src, dst, 0xFF),
        (Xrgb8888 | Argb8888, Bgrx8888) => convert(src, dst, |w| w.swap_bytes() | 0xFF),
        (Bgrx8888, Xrgb8888 | Argb8888) => convert(src, dst, |w| w.swap_bytes() | OPAQUE),
    }
}

/// `dst[i] = f(src[i])` over little-endian words; simple enough to vectorise. Aligned
/// buffers (the usual case) are read and written a word at a time.
#[inline(always)]
fn convert(src: &[u8], dst: &mut [u8], f: impl Fn(u32) -> u32) {
    if let (Ok(s), Ok(d)) = (
        bytemuck::try_cast_slice::<u8, u32>(src),
        bytemuck::try_cast_slice_mut::<u8, u32>(dst),
    ) {
        for (d, s) in d.iter_mut().zip(s) {
            *d = f(u32::from_le(*s)).to_le();
        }
        return;
    }
    for (d, s) in dst
        .chunks_exact_mut(BYTES_PER_PIXEL)
        .zip(src.chunks_exact(BYTES_PER_PIXEL))
    {
        let w = u32::from_le_bytes([s[0], s[1], s[2], s[3]]);
        d.copy_from_slice(&f(w).to_le_bytes());
    }
}
