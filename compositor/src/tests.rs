//! The compositor against reference images computed independently: a straightforward
//! `f64` per-pixel model of the documented semantics (pixel-centre sampling, inverse
//! mapping by a floating-point matrix inverse, straight-alpha blending with
//! `round(x/255)`), sharing no code with the integer implementation.
//!
//! Tolerances: unscaled layers are exact (0). Bilinear and projective results are
//! within [`TOLERANCE`] per channel; pixels whose centre maps within [`EDGE_EPS`] of a
//! crop edge (or, for nearest, of a texel boundary) are not compared, since a rounding
//! difference of 1/65536 pixel legitimately decides them either way.

extern crate std;

use alloc::vec;
use alloc::vec::Vec;

use proptest::prelude::*;

use crate::*;

/// Largest per-channel difference allowed for bilinear or projective results.
const TOLERANCE: i32 = 2;
/// Pixels whose source point is this close to an edge are not compared.
const EDGE_EPS: f64 = 1e-3;

const FORMATS: [PixelFormat; 3] = [
    PixelFormat::Xrgb8888,
    PixelFormat::Argb8888,
    PixelFormat::Bgrx8888,
];

/// Test pixels: an ARGB image and its bytes in some format (with a padded stride).
#[derive(Debug, Clone)]
struct Image {
    w: u32,
    h: u32,
    argb: Vec<u32>,
    format: PixelFormat,
    stride: usize,
    bytes: Vec<u8>,
}

impl Image {
    fn new(w: u32, h: u32, format: PixelFormat, seed: u64, pad: usize) -> Image {
        let mut x = seed | 1;
        let argb: Vec<u32> = (0..w * h)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u32
            })
            .collect();
        let mut img = Image {
            w,
            h,
            argb,
            format,
            stride: w as usize * 4 + pad,
            bytes: vec![],
        };
        img.encode();
        img
    }

    fn encode(&mut self) {
        self.bytes = vec![0xA5; self.stride * self.h as usize];
        for y in 0..self.h as usize {
            for x in 0..self.w as usize {
                let p = self.argb[y * self.w as usize + x];
                // Byte order written out per format, independently of `format.rs`.
                let (a, r, g, b) = ((p >> 24) as u8, (p >> 16) as u8, (p >> 8) as u8, p as u8);
                let bytes = match self.format {
                    PixelFormat::Xrgb8888 => [b, g, r, 0x5A],
                    PixelFormat::Argb8888 => [b, g, r, a],
                    PixelFormat::Bgrx8888 => [0x5A, r, g, b],
                };
                self.bytes[y * self.stride + x * 4..][..4].copy_from_slice(&bytes);
            }
        }
    }

    /// The pixel as the compositor must read it: opaque unless the format has alpha.
    fn texel(&self, x: u32, y: u32) -> [f64; 4] {
        let p = self.argb[(y * self.w + x) as usize];
        let a = if self.format == PixelFormat::Argb8888 {
            p >> 24
        } else {
            255
        };
        [
            a as f64,
            ((p >> 16) & 255) as f64,
            ((p >> 8) & 255) as f64,
            (p & 255) as f64,
        ]
    }

    fn surface(&self) -> Surface<'_> {
        Surface::new(&self.bytes, self.w, self.h, self.stride, self.format).unwrap()
    }
}

/// A layer described for both the compositor and the reference.
#[derive(Debug, Clone)]
struct Spec {
    image: Image,
    crop: Option<Rect>,
    placement: Placement,
    filter: Filter,
    opacity: u8,
    z: i32,
}

impl Spec {
    fn layer(&self) -> Layer<'_> {
        Layer {
            surface: self.image.surface(),
            crop: self.crop,
            placement: self.placement,
            filter: self.filter,
            opacity: self.opacity,
            z: self.z,
        }
    }

    fn forward(&self, cw: f64, ch: f64) -> [[f64; 3]; 3] {
        match self.placement {
            Placement::At { x, y } => [[1.0, 0.0, x as f64], [0.0, 1.0, y as f64], [0.0, 0.0, 1.0]],
            Placement::Scaled(d) => [
                [d.w as f64 / cw, 0.0, d.x as f64],
                [0.0, d.h as f64 / ch, d.y as f64],
                [0.0, 0.0, 1.0],
            ],
            Placement::Transform(t) => t.m.map(|r| r.map(|e| e as f64)),
        }
    }
}

fn invert(m: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let c =
        |r0: usize, r1: usize, c0: usize, c1: usize| m[r0][c0] * m[r1][c1] - m[r0][c1] * m[r1][c0];
    let adj = [
        [c(1, 2, 1, 2), -c(0, 2, 1, 2), c(0, 1, 1, 2)],
        [-c(1, 2, 0, 2), c(0, 2, 0, 2), -c(0, 1, 0, 2)],
        [c(1, 2, 0, 1), -c(0, 2, 0, 1), c(0, 1, 0, 1)],
    ];
    let det = m[0][0] * adj[0][0] + m[0][1] * adj[1][0] + m[0][2] * adj[2][0];
    adj.map(|r| r.map(|e| e / det))
}

/// The reference picture: per pixel the RGB value, or `None` where it is not compared.
fn reference(specs: &[Spec], w: u32, h: u32, background: u32) -> Vec<Option<[f64; 3]>> {
    let mut order: Vec<&Spec> = specs.iter().collect();
    order.sort_by_key(|s| s.z);
    let bg = [
        ((background >> 16) & 255) as f64,
        ((background >> 8) & 255) as f64,
        (background & 255) as f64,
    ];
    let mut out = vec![Some(bg); (w * h) as usize];
    for s in order {
        let crop = s.crop.unwrap_or(Rect::new(0, 0, s.image.w, s.image.h));
        let (cw, ch) = (crop.w as f64, crop.h as f64);
        let f = s.forward(cw, ch);
        let inv = invert(f);
        for y in 0..h {
            for x in 0..w {
                let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
                let p = inv.map(|r| r[0] * px + r[1] * py + r[2]);
                let (u, v) = (p[0] / p[2], p[1] / p[2]);
                let in_front = f[2][0] * u + f[2][1] * v + f[2][2] > 0.0;
                if !in_front || !u.is_finite() || !v.is_finite() {
                    continue;
                }
                let cell = &mut out[(y * w + x) as usize];
                let near = |a: f64, b: f64| (a - b).abs() < EDGE_EPS;
                if near(u, 0.0) || near(u, cw) || near(v, 0.0) || near(v, ch) {
                    *cell = None;
                    continue;
                }
                if !(0.0..cw).contains(&u) || !(0.0..ch).contains(&v) {
                    continue;
                }
                let texel = |tx: f64, ty: f64| {
                    let tx = tx.clamp(0.0, cw - 1.0) as u32 + crop.x as u32;
                    let ty = ty.clamp(0.0, ch - 1.0) as u32 + crop.y as u32;
                    s.image.texel(tx, ty)
                };
                let sample = match s.filter {
                    Filter::Nearest => {
                        if near(u, u.round()) || near(v, v.round()) {
                            *cell = None;
                            continue;
                        }
                        texel(u.floor(), v.floor())
                    }
                    Filter::Bilinear => {
                        let (tu, tv) = (u - 0.5, v - 0.5);
                        let (x0, y0) = (tu.floor(), tv.floor());
                        let (fx, fy) = (tu - x0, tv - y0);
                        let (a, b) = (texel(x0, y0), texel(x0 + 1.0, y0));
                        let (c, d) = (texel(x0, y0 + 1.0), texel(x0 + 1.0, y0 + 1.0));
                        core::array::from_fn(|i| {
                            (a[i] * (1.0 - fx) + b[i] * fx) * (1.0 - fy)
                                + (c[i] * (1.0 - fx) + d[i] * fx) * fy
                        })
                    }
                };
                let Some(dst) = cell else { continue };
                let alpha = (sample[0] * s.opacity as f64 / 255.0).round();
                for i in 0..3 {
                    dst[i] = ((sample[i + 1] * alpha + dst[i] * (255.0 - alpha)) / 255.0).round();
                }
            }
        }
    }
    out
}

/// Composes `specs` into a `w × h` frame of `format` with a padded stride; checks the
/// padding was left alone and returns the frame's pixels as RGB.
fn composed(
    specs: &[Spec],
    w: u32,
    h: u32,
    background: u32,
    format: PixelFormat,
) -> (Vec<[i32; 3]>, Report) {
    let stride = w as usize * 4 + 12;
    let mut buf = vec![0x3Cu8; stride * h as usize];
    let scene = Scene {
        background,
        layers: specs.iter().map(Spec::layer).collect(),
    };
    let mut frame = Frame::new(&mut buf, w, h, stride, format).unwrap();
    let report = compose_full(&scene, &mut frame);
    let mut px = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let p = frame.get(x, y).unwrap();
            px.push([
                ((p >> 16) & 255) as i32,
                ((p >> 8) & 255) as i32,
                (p & 255) as i32,
            ]);
        }
    }
    for y in 0..h as usize {
        assert!(
            buf[y * stride + w as usize * 4..(y + 1) * stride]
                .iter()
                .all(|&b| b == 0x3C),
            "stride padding written"
        );
    }
    (px, report)
}

/// Largest channel difference over compared pixels, and how many were compared.
fn compare(specs: &[Spec], w: u32, h: u32, format: PixelFormat) -> (i32, usize) {
    let bg = 0x0012_3456;
    let want = reference(specs, w, h, bg);
    let (got, report) = composed(specs, w, h, bg, format);
    assert!(
        report
            .skipped
            .iter()
            .all(|(_, e)| *e == LayerError::Offscreen),
        "{report:?}"
    );
    let mut worst = 0;
    let mut n = 0;
    for (i, (g, r)) in got.iter().zip(&want).enumerate() {
        let Some(r) = r else { continue };
        n += 1;
        for c in 0..3 {
            let d = (g[c] - r[c] as i32).abs();
            assert!(
                d <= 8,
                "pixel {} ({}, {}) channel {c}: got {} want {}",
                i,
                i as u32 % w,
                i as u32 / w,
                g[c],
                r[c]
            );
            worst = worst.max(d);
        }
    }
    (worst, n)
}

fn spec(image: Image, placement: Placement) -> Spec {
    Spec {
        image,
        crop: None,
        placement,
        filter: Filter::Nearest,
        opacity: 255,
        z: 0,
    }
}

#[test]
fn exact_at_scale_one_in_every_format() {
    for (k, &out) in FORMATS.iter().enumerate() {
        let specs = vec![
            spec(
                // An odd stride: rows not word-aligned, the byte-wise paths.
                Image::new(20, 14, PixelFormat::Xrgb8888, 1 + k as u64, 3),
                Placement::At { x: 3, y: 2 },
            ),
            Spec {
                crop: Some(Rect::new(2, 3, 9, 7)),
                opacity: 200,
                z: 2,
                ..spec(
                    Image::new(13, 11, PixelFormat::Argb8888, 7, 8),
                    Placement::At { x: 15, y: 9 },
                )
            },
            Spec {
                z: 1,
                filter: Filter::Bilinear,
                ..spec(
                    Image::new(10, 10, PixelFormat::Bgrx8888, 9, 4),
                    Placement::At { x: 9, y: 5 },
                )
            },
            Spec {
                z: 1,
                opacity: 77,
                ..spec(
                    Image::new(6, 5, PixelFormat::Bgrx8888, 3, 0),
                    Placement::At { x: 1, y: 12 },
                )
            },
        ];
        let (worst, n) = compare(&specs, 32, 24, out);
        assert_eq!(worst, 0, "output {out:?}");
        assert_eq!(n, 32 * 24);
    }
}

#[test]
fn clipping_at_every_edge_and_corner() {
    let (w, h) = (24, 18);
    for (x, y) in [
        (-5, 4),
        (18, 4),
        (6, -7),
        (6, 13),
        (-5, -7),
        (18, 13),
        (-5, 13),
        (18, -7),
        (-9, -8),
    ] {
        for filter in [Filter::Nearest, Filter::Bilinear] {
            let specs = vec![
                Spec {
                    filter,
                    ..spec(
                        Image::new(11, 9, PixelFormat::Argb8888, 5, 0),
                        Placement::At { x, y },
                    )
                },
                Spec {
                    filter,
                    ..spec(
                        Image::new(7, 5, PixelFormat::Xrgb8888, 6, 0),
                        Placement::Scaled(Rect::new(x * 2, y * 2, 21, 16)),
                    )
                },
            ];
            let (worst, _) = compare(&specs, w, h, PixelFormat::Xrgb8888);
            assert!(worst <= TOLERANCE, "at ({x}, {y}) {filter:?}: {worst}");
        }
    }
    // Wholly off every edge: skipped and named, the frame is background.
    for (x, y) in [(-11, 0), (24, 0), (0, -9), (0, 18), (i32::MIN, i32::MAX)] {
        let specs = vec![spec(
            Image::new(11, 9, PixelFormat::Xrgb8888, 5, 0),
            Placement::At { x, y },
        )];
        let (px, report) = composed(&specs, w, h, 0x00AB_CDEF, PixelFormat::Xrgb8888);
        assert_eq!(report.skipped, vec![(0, LayerError::Offscreen)]);
        assert!(px.iter().all(|p| *p == [0xAB, 0xCD, 0xEF]));
    }
}

#[test]
fn bilinear_scaling_within_tolerance() {
    // Magnified vertically (interpolated horizontally first, rows cached) and not
    // (vertically first); opaque (straight into the output) and translucent.
    for (dst, crop) in [
        (Rect::new(2, 3, 53, 41), None),                          // up
        (Rect::new(-4, 5, 17, 9), Some(Rect::new(3, 2, 20, 15))), // down, cropped, clipped
        (Rect::new(7, 1, 31, 47), Some(Rect::new(1, 1, 6, 17))),  // anisotropic
        (Rect::new(0, 0, 58, 11), None),                          // wider, shorter
        (Rect::new(3, -2, 9, 50), None),                          // narrower, taller
    ] {
        // Padding 4 keeps rows word-aligned, 1 does not: both load paths.
        for (format, pad) in FORMATS.into_iter().flat_map(|f| [(f, 4), (f, 1)]) {
            for opacity in [190, 255] {
                let s = Spec {
                    crop,
                    filter: Filter::Bilinear,
                    opacity,
                    ..spec(Image::new(23, 19, format, 11, pad), Placement::Scaled(dst))
                };
                let (worst, n) = compare(&[s], 60, 50, PixelFormat::Xrgb8888);
                assert!(worst <= TOLERANCE, "{dst:?} {format:?} {opacity}: {worst}");
                assert!(n > 2500);
            }
        }
    }
}

#[test]
fn bilinear_layers_with_the_same_geometry_keep_their_own_rows() {
    // Both layers sample the same span of the same rows: the rows one interpolated
    // must not be taken for the other's.
    let dst = Rect::new(1, 2, 50, 44);
    let below = Spec {
        filter: Filter::Bilinear,
        ..spec(
            Image::new(23, 19, PixelFormat::Xrgb8888, 3, 0),
            Placement::Scaled(dst),
        )
    };
    let above = Spec {
        filter: Filter::Bilinear,
        opacity: 128,
        ..spec(
            Image::new(23, 19, PixelFormat::Argb8888, 8, 0),
            Placement::Scaled(dst),
        )
    };
    let (worst, n) = compare(&[below, above], 60, 50, PixelFormat::Xrgb8888);
    assert!(worst <= TOLERANCE, "{worst}");
    assert!(n > 2000);
}

/// A rotation by about 30° with scaling and translation, Q16.16.
fn rotation() -> Transform {
    let (c, s) = (0.866 * 1.3, 0.5 * 1.3);
    let q = |v: f64| (v * 65536.0) as i32;
    Transform::affine_q16(q(c), q(-s), q(20.0), q(s), q(c), q(-3.0))
}

/// A panel tilted away about its vertical axis: `W` grows with `u`.
fn perspective() -> Transform {
    Transform::new([
        [65536 * 2, 0, 65536 * 4],
        [3000, 65536 * 2, 65536 * 6],
        [1800, 0, 65536],
    ])
}

#[test]
fn affine_and_projective_within_tolerance() {
    for t in [rotation(), perspective()] {
        for filter in [Filter::Nearest, Filter::Bilinear] {
            let s = Spec {
                filter,
                crop: Some(Rect::new(2, 1, 20, 16)),
                ..spec(
                    Image::new(24, 20, PixelFormat::Argb8888, 21, 0),
                    Placement::Transform(t),
                )
            };
            let (worst, n) = compare(&[s], 64, 48, PixelFormat::Bgrx8888);
            let tol = if filter == Filter::Nearest {
                0
            } else {
                TOLERANCE
            };
            assert!(worst <= tol, "{t:?} {filter:?}: {worst}");
            assert!(n > 64 * 48 * 9 / 10);
        }
    }
}

#[test]
fn a_plane_crossing_the_viewer_is_drawn_only_in_front() {
    // W = 1 − u/8: the right part of the 16-wide crop is behind the viewer.
    let t = Transform::new([
        [65536, 0, 65536 * 10],
        [0, 65536, 65536 * 2],
        [-8192, 0, 65536],
    ]);
    let s = spec(
        Image::new(16, 6, PixelFormat::Xrgb8888, 2, 0),
        Placement::Transform(t),
    );
    let (worst, _) = compare(&[s], 40, 30, PixelFormat::Xrgb8888);
    assert_eq!(worst, 0);
}

#[test]
fn unusable_geometry_is_skipped_with_its_reason() {
    let img = Image::new(8, 8, PixelFormat::Xrgb8888, 1, 0);
    let cases = [
        (
            Placement::Scaled(Rect::new(0, 0, 0, 5)),
            None,
            LayerError::Empty,
        ),
        (
            Placement::At { x: 0, y: 0 },
            Some(Rect::new(0, 0, 0, 4)),
            LayerError::Empty,
        ),
        (
            Placement::At { x: 0, y: 0 },
            Some(Rect::new(4, 4, 5, 1)),
            LayerError::CropOutside,
        ),
        (
            Placement::At { x: 0, y: 0 },
            Some(Rect::new(-1, 0, 2, 1)),
            LayerError::CropOutside,
        ),
        (
            Placement::Scaled(Rect::new(0, 0, u32::MAX, 4)),
            None,
            LayerError::TooLarge,
        ),
        (
            Placement::Transform(Transform::new([[0; 3]; 3])),
            None,
            LayerError::Offscreen,
        ),
        (
            Placement::Transform(Transform::new([[1, 2, 0], [2, 4, 0], [0, 0, 1]])),
            None,
            LayerError::Degenerate,
        ),
        (
            Placement::Transform(Transform::new([[1, 0, 0], [0, 1, 0], [1, 1, 0]])),
            None,
            LayerError::Degenerate,
        ),
        (
            Placement::Transform(Transform::new([[i64::MAX, 0, 0], [0, 1, 0], [0, 0, 1]])),
            None,
            LayerError::TooLarge,
        ),
        (
            Placement::Transform(Transform::new([[1, 0, 0], [0, 1, 0], [0, 0, -1]])),
            None,
            LayerError::Offscreen,
        ),
    ];
    for (placement, crop, why) in cases {
        let s = Spec {
            crop,
            ..spec(img.clone(), placement)
        };
        let (px, report) = composed(&[s], 16, 16, 0, PixelFormat::Xrgb8888);
        assert_eq!(report.skipped, vec![(0, why)], "{placement:?} {crop:?}");
        assert!(px.iter().all(|p| *p == [0, 0, 0]));
    }
}

/// A random layer: any format and filter, any of the three placement kinds with
/// geometry that is sometimes absurd.
fn arb_spec() -> impl Strategy<Value = Spec> {
    let placement = prop_oneof![
        (-20i32..40, -20i32..40).prop_map(|(x, y)| Placement::At { x, y }),
        (-20i32..40, -20i32..40, 0u32..60, 0u32..60)
            .prop_map(|(x, y, w, h)| Placement::Scaled(Rect::new(x, y, w, h))),
        proptest::array::uniform3(proptest::array::uniform3(-200_000i64..200_000))
            .prop_map(|m| Placement::Transform(Transform::new(m))),
        (
            -1.0f64..1.0,
            0.3f64..3.0,
            -10.0f64..30.0,
            -10.0f64..30.0,
            -0.01f64..0.01
        )
            .prop_map(|(a, s, tx, ty, p)| {
                let q = |v: f64| (v * 65536.0) as i64;
                Placement::Transform(Transform::new([
                    [q(a.cos() * s), q(-a.sin() * s), q(tx)],
                    [q(a.sin() * s), q(a.cos() * s), q(ty)],
                    [q(p), q(-p / 2.0), 65536],
                ]))
            }),
    ];
    (
        1u32..12,
        1u32..12,
        0usize..3,
        any::<u64>(),
        placement,
        any::<bool>(),
        any::<u8>(),
        -2i32..3,
        0u32..4,
        0usize..5,
    )
        .prop_map(
            |(w, h, f, seed, placement, bilinear, opacity, z, c, pad)| Spec {
                image: Image::new(w, h, FORMATS[f], seed, pad),
                crop: (c > 0)
                    .then(|| Rect::new(0, (c as i32) - 1, w, h.saturating_sub(c - 1).max(1))),
                placement,
                filter: if bilinear {
                    Filter::Bilinear
                } else {
                    Filter::Nearest
                },
                opacity,
                z,
            },
        )
}

fn frame_bytes(specs: &[Spec], buf: &mut [u8], damage: Option<&[Rect]>) -> Report {
    let scene = Scene {
        background: 0x0040_8020,
        layers: specs.iter().map(Spec::layer).collect(),
    };
    let mut frame = Frame::new(buf, 33, 27, 33 * 4, PixelFormat::Xrgb8888).unwrap();
    match damage {
        Some(d) => compose(&scene, &mut frame, d),
        None => compose_full(&scene, &mut frame),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    /// Change one surface's pixels inside a rectangle and move another layer; recompose
    /// only the damage that change produces; the frame equals a full recomposition.
    #[test]
    fn damage_recomposition_equals_full_recomposition(
        specs in proptest::collection::vec(arb_spec(), 1..5),
        changed in (0i32..12, 0i32..12, 1u32..6, 1u32..6),
        target in any::<prop::sample::Index>(),
        moved in any::<prop::sample::Index>(),
        to in (-15i32..35, -15i32..35),
        seed in any::<u64>(),
    ) {
        let output = Rect::new(0, 0, 33, 27);
        let mut before = vec![0u8; 33 * 27 * 4];
        frame_bytes(&specs, &mut before, None);

        let mut after = specs.clone();
        let t = target.index(after.len());
        let m = moved.index(after.len());
        let changed = Rect::new(changed.0, changed.1, changed.2, changed.3);
        let mut damage = Damage::default();
        {
            let img = &mut after[t].image;
            let fresh = Image::new(img.w, img.h, img.format, seed, 0);
            for y in 0..img.h {
                for x in 0..img.w {
                    if changed.contains(&Rect::new(x as i32, y as i32, 1, 1)) {
                        img.argb[(y * img.w + x) as usize] = fresh.argb[(y * img.w + x) as usize];
                    }
                }
            }
            img.encode();
        }
        if let Some(r) = after[t].layer().damage_of(changed, output) {
            damage.add(r);
        }
        if let Ok(r) = specs[m].layer().bounds(output) {
            damage.add(r);
        }
        after[m].placement = match after[m].placement {
            Placement::At { .. } => Placement::At { x: to.0, y: to.1 },
            Placement::Scaled(d) => Placement::Scaled(Rect::new(to.0, to.1, d.w, d.h)),
            p @ Placement::Transform(_) => p,
        };
        if let Ok(r) = after[m].layer().bounds(output) {
            damage.add(r);
        }

        let mut full = vec![0u8; 33 * 27 * 4];
        let full_report = frame_bytes(&after, &mut full, None);
        let mut partial = before.clone();
        let partial_report = frame_bytes(&after, &mut partial, Some(damage.rects()));
        prop_assert_eq!(full_report, partial_report);
        prop_assert!(full == partial, "damage {:?}", damage.rects());
    }

    /// Recomposing arbitrary rectangles of an unchanged scene over garbage restores
    /// exactly those rectangles and touches nothing else.
    #[test]
    fn any_damage_rect_recomposes_exactly_its_pixels(
        specs in proptest::collection::vec(arb_spec(), 0..5),
        rects in proptest::collection::vec((-10i32..40, -10i32..40, 0u32..40, 0u32..40), 0..4),
    ) {
        let rects: Vec<Rect> = rects.into_iter().map(|(x, y, w, h)| Rect::new(x, y, w, h)).collect();
        let mut full = vec![0u8; 33 * 27 * 4];
        frame_bytes(&specs, &mut full, None);
        let mut partial = vec![0x77u8; 33 * 27 * 4];
        frame_bytes(&specs, &mut partial, Some(&rects));
        for y in 0..27 {
            for x in 0..33 {
                let at = (y * 33 + x) * 4;
                let inside = rects.iter().any(|r| r.contains(&Rect::new(x as i32, y as i32, 1, 1)));
                let want: &[u8] = if inside { &full[at..at + 4] } else { &[0x77; 4] };
                prop_assert_eq!(&partial[at..at + 4], want, "({}, {})", x, y);
            }
        }
    }

    /// No geometry makes it panic, whatever the entries.
    #[test]
    fn arbitrary_transforms_never_panic(
        m in proptest::array::uniform3(proptest::array::uniform3(any::<i64>())),
        small in proptest::array::uniform3(proptest::array::uniform3(-(1i64 << 36)..(1i64 << 36))),
        x in any::<i32>(), y in any::<i32>(), w in any::<u32>(), h in any::<u32>(),
    ) {
        let img = Image::new(5, 4, PixelFormat::Argb8888, 3, 0);
        for placement in [
            Placement::Transform(Transform::new(m)),
            Placement::Transform(Transform::new(small)),
            Placement::Scaled(Rect::new(x, y, w, h)),
            Placement::At { x, y },
        ] {
            for filter in [Filter::Nearest, Filter::Bilinear] {
                let s = Spec { filter, ..spec(img.clone(), placement) };
                let mut buf = vec![0u8; 33 * 27 * 4];
                frame_bytes(core::slice::from_ref(&s), &mut buf, None);
                let _ = s.layer().damage_of(Rect::new(x, y, w, h), Rect::new(0, 0, 33, 27));
            }
        }
    }
}

#[test]
fn a_misaligned_frame_gets_the_same_pixels() {
    // Word views need aligned bytes; a frame starting at an odd address takes the
    // byte-wise paths and must come out identical.
    let specs = [
        spec(
            Image::new(20, 14, PixelFormat::Xrgb8888, 1, 0),
            Placement::At { x: 3, y: 2 },
        ),
        Spec {
            filter: Filter::Bilinear,
            z: 1,
            ..spec(
                Image::new(9, 7, PixelFormat::Bgrx8888, 2, 0),
                Placement::Scaled(Rect::new(5, 4, 21, 13)),
            )
        },
    ];
    let scene = Scene {
        background: 0x0012_3456,
        layers: specs.iter().map(Spec::layer).collect(),
    };
    let (w, h) = (30u32, 20u32);
    let stride = w as usize * 4;
    let mut aligned = vec![0u8; stride * h as usize];
    let mut odd = vec![0u8; stride * h as usize + 1];
    compose_full(
        &scene,
        &mut Frame::new(&mut aligned, w, h, stride, PixelFormat::Xrgb8888).unwrap(),
    );
    compose_full(
        &scene,
        &mut Frame::new(&mut odd[1..], w, h, stride, PixelFormat::Xrgb8888).unwrap(),
    );
    assert!(aligned == odd[1..]);
}

/// Where `t` takes crop point `(u, v)`, in `f64`.
fn forward(t: &Transform, u: f64, v: f64) -> (f64, f64) {
    let r = |i: usize| t.m[i][0] as f64 * u + t.m[i][1] as f64 * v + t.m[i][2] as f64;
    (r(0) / r(2), r(1) / r(2))
}

#[test]
fn a_quad_maps_the_crop_corners_onto_its_points() {
    let quads = [
        [(10, 5), (50, 8), (46, 40), (12, 30)],
        // Clockwise or not, and an axis-aligned rectangle (affine).
        [(12, 30), (46, 40), (50, 8), (10, 5)],
        [(4, 4), (36, 4), (36, 28), (4, 28)],
        [(-1000, 0), (30000, -7), (20000, 9000), (0, 16000)],
    ];
    for q in quads {
        let t = Transform::from_quad(24, 20, q).unwrap();
        assert!(t.m.iter().flatten().all(|e| e.abs() <= MAX_ENTRY));
        let corners = [(0.0, 0.0), (24.0, 0.0), (24.0, 20.0), (0.0, 20.0)];
        for ((u, v), (x, y)) in corners.into_iter().zip(q) {
            let (fx, fy) = forward(&t, u, v);
            assert!(
                (fx - f64::from(x)).abs() < 0.01 && (fy - f64::from(y)).abs() < 0.01,
                "{q:?}: ({u}, {v}) -> ({fx}, {fy}), not ({x}, {y})"
            );
        }
    }
    // Three corners on a line, an empty crop, coordinates out of range.
    assert_eq!(
        Transform::from_quad(8, 8, [(0, 0), (4, 4), (8, 8), (0, 8)]),
        None
    );
    assert_eq!(Transform::from_quad(8, 8, [(0, 0); 4]), None);
    assert_eq!(
        Transform::from_quad(0, 8, [(0, 0), (8, 0), (8, 8), (0, 8)]),
        None
    );
    let far = (MAX_COORD + 1) as i32;
    assert_eq!(
        Transform::from_quad(8, 8, [(0, 0), (far, 0), (8, 8), (0, 8)]),
        None
    );
}

#[test]
fn a_quad_composes_within_tolerance_and_a_rectangle_quad_equals_scaling() {
    let q = [(6, 4), (58, 10), (54, 44), (3, 36)];
    let s = Spec {
        filter: Filter::Bilinear,
        ..spec(
            Image::new(24, 20, PixelFormat::Xrgb8888, 5, 0),
            Placement::Transform(Transform::from_quad(24, 20, q).unwrap()),
        )
    };
    let (worst, n) = compare(&[s], 64, 48, PixelFormat::Xrgb8888);
    assert!(worst <= TOLERANCE, "{worst}");
    assert!(n > 1000);
    // An axis-aligned quad is the same picture as Placement::Scaled.
    let image = Image::new(24, 20, PixelFormat::Xrgb8888, 9, 0);
    let quad = spec(
        image.clone(),
        Placement::Transform(
            Transform::from_quad(24, 20, [(8, 4), (56, 4), (56, 44), (8, 44)]).unwrap(),
        ),
    );
    let scaled = spec(image, Placement::Scaled(Rect::new(8, 4, 48, 40)));
    let bg = 0x0012_3456;
    let (a, _) = composed(&[quad], 64, 48, bg, PixelFormat::Xrgb8888);
    let (b, _) = composed(&[scaled], 64, 48, bg, PixelFormat::Xrgb8888);
    assert_eq!(a, b);
}

/// Kernels that differ from [`Portable`] only when the weighted interpolation's
/// slices are at least `from` bytes long (a wrong vector loop, say).
struct WrongPast {
    from: usize,
}

impl Kernels for WrongPast {
    fn lerp_rows(&self, top: &[u8], bottom: &[u8], f: u8, out: &mut [u8]) {
        Portable.lerp_rows(top, bottom, f, out)
    }
    fn lerp_weighted(&self, out: &mut [u8], p: &[u8], q: &[u8], w: &[u8], mask: u32) {
        Portable.lerp_weighted(out, p, q, w, mask);
        if out.len() >= self.from {
            out[self.from - 1] ^= 1;
        }
    }
    fn lerp_weighted_in_place(&self, p: &mut [u8], q: &[u8], w: &[u8]) {
        Portable.lerp_weighted_in_place(p, q, w)
    }
    fn or_words(&self, src: &[u8], dst: &mut [u8], mask: u32) {
        Portable.or_words(src, dst, mask)
    }
    fn blend_argb(&self, src: &[u8], dst: &mut [u8], opacity: u8) {
        Portable.blend_argb(src, dst, opacity)
    }
}

/// Kernels whose overlay blending is wrong in one case: a pixel with high alpha
/// under a translucent layer (a vector path that skips the opacity, say).
struct WrongBlend;

impl Kernels for WrongBlend {
    fn lerp_rows(&self, top: &[u8], bottom: &[u8], f: u8, out: &mut [u8]) {
        Portable.lerp_rows(top, bottom, f, out)
    }
    fn lerp_weighted(&self, out: &mut [u8], p: &[u8], q: &[u8], w: &[u8], mask: u32) {
        Portable.lerp_weighted(out, p, q, w, mask)
    }
    fn lerp_weighted_in_place(&self, p: &mut [u8], q: &[u8], w: &[u8]) {
        Portable.lerp_weighted_in_place(p, q, w)
    }
    fn or_words(&self, src: &[u8], dst: &mut [u8], mask: u32) {
        Portable.or_words(src, dst, mask)
    }
    fn blend_argb(&self, src: &[u8], dst: &mut [u8], opacity: u8) {
        Portable.blend_argb(src, dst, opacity);
        for (d, s) in dst.chunks_exact_mut(4).zip(src.chunks_exact(4)) {
            if s[3] >= 128 && opacity != 255 && opacity != 0 {
                d.copy_from_slice(&[s[0], s[1], s[2], 0xFF]);
            }
        }
    }
}

#[test]
fn kernels_verify_accepts_the_portable_ones_and_catches_a_wrong_one() {
    assert_eq!(kernels::verify(&Portable), Ok(()));
    let m = kernels::verify(&WrongPast { from: 40 }).unwrap_err();
    assert_eq!((m.kernel, m.len), ("lerp_weighted", 40));
    let m = kernels::verify(&WrongBlend).unwrap_err();
    assert_eq!(m.kernel, "blend_argb");
}

#[test]
fn overlay_blending_follows_the_per_channel_formula() {
    // Every alpha against every opacity class, computed per channel here: a pixel
    // with no coverage is left as it is (its X byte too), the others are opaque.
    let dst: Vec<u8> = (0..256u32)
        .flat_map(|i| [i as u8, (i * 7) as u8, (255 - i) as u8, (i * 3) as u8])
        .collect();
    let src: Vec<u8> = (0..256u32)
        .flat_map(|i| [(i * 5) as u8, (i * 11 + 3) as u8, (i * 13) as u8, i as u8])
        .collect();
    for opacity in [0u8, 1, 100, 128, 254, 255] {
        let mut got = dst.clone();
        Portable.blend_argb(&src, &mut got, opacity);
        for (i, ((g, s), d)) in got
            .chunks_exact(4)
            .zip(src.chunks_exact(4))
            .zip(dst.chunks_exact(4))
            .enumerate()
        {
            let cover = (f64::from(s[3]) * f64::from(opacity) / 255.0).round();
            let want: [u8; 4] = if cover == 0.0 {
                [d[0], d[1], d[2], d[3]]
            } else {
                let c = |j: usize| {
                    ((f64::from(s[j]) * cover + f64::from(d[j]) * (255.0 - cover)) / 255.0).round()
                        as u8
                };
                [c(0), c(1), c(2), 0xFF]
            };
            assert_eq!(g, want, "pixel {i} opacity {opacity}");
        }
    }
}

#[test]
fn compose_with_runs_the_given_kernels() {
    // A bilinear layer scaled to the whole frame: its rows go through
    // `lerp_weighted`, so kernels that break it change the frame, and the portable
    // ones give exactly `compose`'s frame.
    let image = Image::new(20, 16, PixelFormat::Xrgb8888, 7, 0);
    let mut s = spec(image, Placement::Scaled(Rect::new(0, 0, 33, 27)));
    s.filter = Filter::Bilinear;
    let scene = Scene {
        background: 0,
        layers: vec![s.layer()],
    };
    let draw = |k: &dyn Kernels| {
        let mut buf = vec![0u8; 33 * 27 * 4];
        let mut frame = Frame::new(&mut buf, 33, 27, 33 * 4, PixelFormat::Xrgb8888).unwrap();
        let all = frame.rect();
        compose_with(&scene, &mut frame, &[all], k);
        buf
    };
    let mut plain = vec![0u8; 33 * 27 * 4];
    let mut frame = Frame::new(&mut plain, 33, 27, 33 * 4, PixelFormat::Xrgb8888).unwrap();
    compose_full(&scene, &mut frame);
    assert_eq!(draw(&Portable), plain);
    assert_ne!(draw(&WrongPast { from: 8 }), plain);
}

#[test]
fn overlays_are_blended_by_the_given_kernels() {
    // A translucent ARGB layer unscaled over an opaque one: its pixels go through
    // `blend_argb`.
    let below = spec(
        Image::new(20, 16, PixelFormat::Xrgb8888, 7, 0),
        Placement::At { x: 0, y: 0 },
    );
    let mut above = spec(
        Image::new(12, 9, PixelFormat::Argb8888, 3, 0),
        Placement::At { x: 4, y: 5 },
    );
    above.opacity = 200;
    let scene = Scene {
        background: 0,
        layers: vec![below.layer(), above.layer()],
    };
    let draw = |k: &dyn Kernels| {
        let mut buf = vec![0u8; 20 * 16 * 4];
        let mut frame = Frame::new(&mut buf, 20, 16, 20 * 4, PixelFormat::Xrgb8888).unwrap();
        let all = frame.rect();
        compose_with(&scene, &mut frame, &[all], k);
        buf
    };
    assert_eq!(draw(&Portable), draw(&WrongPast { from: usize::MAX }));
    assert_ne!(draw(&WrongBlend), draw(&Portable));
}

/// Fractions of a translation (Q16.16) that put source points on a texel's edge, on
/// its centre, or on the bilinear weights' rounding boundary (`½ − 128/65536`), or
/// next to them.
const EDGE_FRACTIONS: [i64; 7] = [0, 65535, 127, 128, 129, 32767, 32768];

/// A layer for the general row loops (`general.rs`): a rotated, sheared or scaled
/// affine placement or a projective one, any filter, format, crop and opacity, on
/// a surface sometimes large enough to be magnified or minified.
fn arb_general_spec() -> impl Strategy<Value = Spec> {
    let q = |v: f64| (v * 65536.0) as i64;
    let placement = prop_oneof![
        // Affine: rotation, scale per axis, shear, translation.
        1 => (
            -3.2f64..3.2,
            0.2f64..4.0,
            0.2f64..4.0,
            -1.0f64..1.0,
            -40.0f64..60.0,
            -40.0f64..60.0
        )
            .prop_map(move |(a, sx, sy, sh, tx, ty)| {
                let (c, s) = (a.cos(), a.sin());
                Placement::Transform(Transform::new([
                    [q(c * sx), q(-s * sy + sh), q(tx)],
                    [q(s * sx), q(c * sy), q(ty)],
                    [0, 0, 65536],
                ]))
            }),
        // Projective: the same with a perspective row, sometimes crossing the viewer.
        1 => (
            -3.2f64..3.2,
            0.3f64..3.0,
            -20.0f64..40.0,
            -20.0f64..40.0,
            -0.08f64..0.08,
            -0.08f64..0.08
        )
            .prop_map(move |(a, s, tx, ty, px, py)| {
                Placement::Transform(Transform::new([
                    [q(a.cos() * s), q(-a.sin() * s), q(tx)],
                    [q(a.sin() * s), q(a.cos() * s), q(ty)],
                    [q(px), q(py), 65536],
                ]))
            }),
        // Quarter turns, mirrors and power-of-two scales with whole or half-pixel
        // offsets: source points fall exactly on the crop's edges (weighted: the
        // edges are where the row loops' ranges must be exact).
        4 => (
            0usize..8,
            -2i32..3,
            -2i32..3,
            -30i32..60,
            -30i32..60,
            proptest::array::uniform2(proptest::sample::select(&EDGE_FRACTIONS[..]))
        )
            .prop_map(|(turn, ex, ey, tx, ty, frac)| {
                let [[a, b], [c, d]] = [
                    [[1, 0], [0, 1]],
                    [[0, -1], [1, 0]],
                    [[-1, 0], [0, -1]],
                    [[0, 1], [-1, 0]],
                    [[-1, 0], [0, 1]],
                    [[1, 0], [0, -1]],
                    [[0, 1], [1, 0]],
                    [[0, -1], [-1, 0]],
                ][turn];
                let sx = |k: i64| {
                    if ex >= 0 {
                        k << (16 + ex)
                    } else {
                        k << 16 >> -ex
                    }
                };
                let sy = |k: i64| {
                    if ey >= 0 {
                        k << (16 + ey)
                    } else {
                        k << 16 >> -ey
                    }
                };
                Placement::Transform(Transform::new([
                    [sx(a), sy(b), (i64::from(tx) << 16) + frac[0]],
                    [sx(c), sy(d), (i64::from(ty) << 16) + frac[1]],
                    [0, 0, 65536],
                ]))
            }),
        // Projective with small whole entries: edges hit exactly now and then.
        1 => (1i64..4, 1i64..4, -20i64..40, -20i64..40, -3i64..4, -3i64..4).prop_map(
            |(a, b, tx, ty, px, py)| {
                Placement::Transform(Transform::new([
                    [a << 16, 0, tx << 15],
                    [0, b << 16, ty << 15],
                    [px << 12, py << 12, 65536],
                ]))
            }
        ),
        // A quad.
        1 => proptest::array::uniform4((-20i32..60, -20i32..50))
            .prop_filter_map("degenerate quad", |quad| Transform::from_quad(16, 12, quad)
                .map(Placement::Transform)),
        // Scaled and sampled nearest (an axis-aligned affine map).
        1 => (-20i32..40, -20i32..40, 1u32..70, 1u32..70)
            .prop_map(|(x, y, w, h)| Placement::Scaled(Rect::new(x, y, w, h))),
    ];
    (
        1u32..40,
        1u32..30,
        0usize..3,
        any::<u64>(),
        placement,
        any::<bool>(),
        prop_oneof![Just(255u8), any::<u8>()],
        (0u32..8, 0u32..8, 0u32..8, 0u32..8),
        0usize..5,
    )
        .prop_map(
            |(w, h, f, seed, placement, bilinear, opacity, (l, t, r, b), pad)| {
                let crop = Rect::from_edges(
                    i64::from(l.min(w - 1)),
                    i64::from(t.min(h - 1)),
                    i64::from(w.saturating_sub(r).max(l.min(w - 1) + 1)),
                    i64::from(h.saturating_sub(b).max(t.min(h - 1) + 1)),
                );
                let scaled = matches!(placement, Placement::Scaled(_));
                Spec {
                    image: Image::new(w, h, FORMATS[f], seed, pad),
                    crop,
                    placement,
                    // Scaled bilinear layers take the axis-aligned passes instead.
                    filter: if bilinear && !scaled {
                        Filter::Bilinear
                    } else {
                        Filter::Nearest
                    },
                    opacity,
                    z: 0,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    /// The general row loops (the covered span found once per row, the source point
    /// stepped, the formats fixed at compile time) give exactly the bytes of the
    /// per-pixel loop that tests and samples every pixel, on random transforms,
    /// crops, formats, filters, opacities and damage rectangles (tolerance 0: the
    /// same arithmetic, only the tests hoisted).
    #[test]
    fn the_row_loops_equal_the_per_pixel_loop(
        specs in proptest::collection::vec(arb_general_spec(), 1..4),
        out_format in 0usize..3,
        rects in proptest::collection::vec((-10i32..60, -10i32..50, 0u32..70, 0u32..60), 1..4),
        // A frame starting off a word boundary takes the byte-wise loops.
        offset in prop_oneof![Just(0usize), Just(1)],
    ) {
        let (w, h) = (53u32, 41u32);
        let rects: Vec<Rect> = rects.into_iter().map(|(x, y, w, h)| Rect::new(x, y, w, h)).collect();
        let scene = Scene {
            background: 0x0040_8020,
            layers: specs.iter().map(Spec::layer).collect(),
        };
        let stride = w as usize * 4 + 8;
        let mut fast = vec![0x3Cu8; stride * h as usize + offset];
        let mut slow = fast.clone();
        let format = FORMATS[out_format];
        fn frame(buf: &mut [u8], w: u32, h: u32, stride: usize, format: PixelFormat) -> Frame<'_> {
            Frame::new(buf, w, h, stride, format).unwrap()
        }
        let a = compose(&scene, &mut frame(&mut fast[offset..], w, h, stride, format), &rects);
        let b = compose::compose_per_pixel(
            &scene,
            &mut frame(&mut slow[offset..], w, h, stride, format),
            &rects,
        );
        prop_assert_eq!(a, b);
        for y in 0..h as usize {
            for x in 0..w as usize {
                let at = offset + y * stride + x * 4;
                prop_assert_eq!(&fast[at..at + 4], &slow[at..at + 4], "({}, {})", x, y);
            }
        }
        prop_assert!(fast[..] == slow[..], "stride padding");
    }
}

/// Quarter-turned bilinear layers whose source points sit on the bilinear
/// footprint's edge (`½ − 128/65536` and next to it) and on texel edges: the row
/// loops' interior ranges (no clamping) must end exactly there.
#[test]
fn the_row_loops_clamp_exactly_at_the_footprint_edges() {
    let img = Image::new(9, 7, PixelFormat::Xrgb8888, 5, 0);
    for turn in [[[0, -1], [1, 0]], [[0, 1], [-1, 0]], [[0, 1], [1, 0]]] {
        for frac in [127, 128, 129, 32767, 32768, 0, 65535] {
            let [[a, b], [c, d]] = turn.map(|r| r.map(|e: i64| e << 16));
            let t = Transform::new([
                [a, b, (12 << 16) + frac],
                [c, d, (3 << 16) + frac],
                [0, 0, 65536],
            ]);
            let s = Spec {
                filter: Filter::Bilinear,
                ..spec(img.clone(), Placement::Transform(t))
            };
            let scene = Scene {
                background: 0,
                layers: vec![s.layer()],
            };
            let (mut fast, mut slow) = (vec![0u8; 24 * 16 * 4], vec![0u8; 24 * 16 * 4]);
            let all = [Rect::new(0, 0, 24, 16)];
            let frame = |b| Frame::new(b, 24, 16, 24 * 4, PixelFormat::Xrgb8888).unwrap();
            compose(&scene, &mut frame(&mut fast), &all);
            compose::compose_per_pixel(&scene, &mut frame(&mut slow), &all);
            assert!(fast == slow, "{turn:?} {frac}");
            assert!(fast.iter().any(|&b| b != 0));
        }
    }
}
