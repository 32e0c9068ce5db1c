//! The pointer map against the compositor itself: a guest screen whose every pixel
//! holds its own coordinates is composed with the placement, and at every display
//! pixel the map must name the guest pixel the compositor drew there (within one
//! pixel, and where one of them sees the guest and the other not, only at the
//! screen's edge).

extern crate std;

use super::*;
use compositor::{compose_full, Filter, Frame, Layer, PixelFormat, Scene, Surface};
use proptest::prelude::*;
use std::vec::Vec;

/// No guest pixel holds this value (coordinates are below 4095).
const BACKGROUND: u32 = 0x00ff_ffff;
const COORD_BITS: u32 = 12;
const COORD_MASK: u32 = (1 << COORD_BITS) - 1;

/// A `w × h` XRGB screen whose pixel `(u, v)` is `u << 12 | v`.
fn coordinate_screen(w: u32, h: u32) -> Vec<u8> {
    assert!(w < COORD_MASK && h < COORD_MASK);
    (0..h)
        .flat_map(|v| (0..w).flat_map(move |u| (u << COORD_BITS | v).to_le_bytes()))
        .collect()
}

/// How the map and the compositor disagreed.
#[derive(Debug, Default)]
struct Comparison {
    /// Display pixels both show the guest at.
    covered: usize,
    /// Pixels whose guest coordinates differ (by at most one).
    off_by_one: usize,
    /// Pixels only one of them shows the guest at.
    coverage_differs: usize,
}

/// Composes `placement` of a `gw × gh` screen onto a `dw × dh` display and compares
/// every display pixel with [`PointerMap::to_guest`]. `None` if the compositor
/// skipped the layer (the map must then refuse it too, or see nothing).
fn compare(placement: Placement, gw: u32, gh: u32, dw: u32, dh: u32) -> Option<Comparison> {
    let pixels = coordinate_screen(gw, gh);
    let surface = Surface::new(&pixels, gw, gh, gw as usize * 4, PixelFormat::Xrgb8888).unwrap();
    let mut layer = Layer::new(surface, 0, 0);
    layer.placement = placement;
    layer.filter = Filter::Nearest;
    let scene = Scene {
        background: BACKGROUND,
        layers: std::vec![layer],
    };
    let mut out = std::vec![0u8; (dw * dh * 4) as usize];
    let mut frame = Frame::new(&mut out, dw, dh, dw as usize * 4, PixelFormat::Xrgb8888).unwrap();
    let report = compose_full(&scene, &mut frame);
    let display = Rect::new(0, 0, dw, dh);
    if !report.skipped.is_empty() {
        // Not drawn at all: the map refuses it or sees nothing of it either.
        if let Some(map) = PointerMap::new(&placement, gw, gh, display) {
            for (x, y) in (0..dh).flat_map(|y| (0..dw).map(move |x| (x, y))) {
                assert_eq!(map.to_guest(x as i32, y as i32), None, "{report:?}");
            }
        }
        return None;
    }
    let map = PointerMap::new(&placement, gw, gh, display).expect("drawn but refused");
    let edge = |(u, v): (u32, u32)| u == 0 || v == 0 || u == gw - 1 || v == gh - 1;
    let mut c = Comparison::default();
    for y in 0..dh {
        for x in 0..dw {
            let drawn = frame.get(x, y).unwrap() & 0x00ff_ffff;
            let drawn = (drawn != BACKGROUND).then_some((drawn >> COORD_BITS, drawn & COORD_MASK));
            let mapped = map.to_guest(x as i32, y as i32);
            match (drawn, mapped) {
                (Some(d), Some(m)) => {
                    c.covered += 1;
                    let (du, dv) = (d.0.abs_diff(m.0), d.1.abs_diff(m.1));
                    assert!(
                        du <= 1 && dv <= 1,
                        "({x}, {y}): compositor {d:?}, map {m:?}, {placement:?}"
                    );
                    c.off_by_one += usize::from(du + dv > 0);
                }
                (Some(p), None) | (None, Some(p)) => {
                    assert!(
                        edge(p),
                        "({x}, {y}): compositor {drawn:?}, map {mapped:?}, {placement:?}"
                    );
                    c.coverage_differs += 1;
                }
                (None, None) => {}
            }
        }
    }
    Some(c)
}

#[test]
fn unscaled_placement_maps_exactly() {
    for (x, y) in [(0, 0), (7, 3), (-5, -9), (60, 40)] {
        let c = compare(Placement::At { x, y }, 40, 30, 80, 60).unwrap();
        assert_eq!((c.off_by_one, c.coverage_differs), (0, 0));
        assert!(c.covered > 0);
    }
    let m = PointerMap::new(
        &Placement::At { x: 10, y: 20 },
        40,
        30,
        Rect::new(0, 0, 80, 60),
    )
    .unwrap();
    assert_eq!(m.to_guest(10, 20), Some((0, 0)));
    assert_eq!(m.to_guest(49, 49), Some((39, 29)));
    assert_eq!(m.to_guest(50, 49), None);
    assert_eq!(m.to_guest(9, 20), None);
    assert_eq!(m.to_guest(79, 59), None);
}

#[test]
fn scaled_panel_edges_and_extreme_scales() {
    // A 1280x800 guest in a 320x200 panel at (100, 50): display corners of the
    // panel are guest corners, one pixel outside is RayOS's.
    let p = Placement::Scaled(Rect::new(100, 50, 320, 200));
    let m = PointerMap::new(&p, 1280, 800, Rect::new(0, 0, 640, 480)).unwrap();
    assert_eq!(
        m.to_guest(100, 50),
        Some((2, 2)),
        "the first display pixel's centre is guest (2, 2)"
    );
    assert_eq!(m.to_guest(419, 249), Some((1278, 798)));
    assert_eq!(m.to_guest(99, 50), None);
    assert_eq!(m.to_guest(420, 249), None);
    assert_eq!(m.to_guest(419, 250), None);
    // Upscaled 4x: every guest pixel is a 4x4 block.
    let m = PointerMap::new(
        &Placement::Scaled(Rect::new(0, 0, 160, 120)),
        40,
        30,
        Rect::new(0, 0, 160, 120),
    )
    .unwrap();
    assert_eq!(m.to_guest(3, 3), Some((0, 0)));
    assert_eq!(m.to_guest(4, 7), Some((1, 1)));
    assert_eq!(m.to_guest(159, 119), Some((39, 29)));
    // Extreme scales against the compositor: coverage identical, values within one.
    for (gw, gh, dst) in [
        (1920, 1080, Rect::new(3, 2, 37, 21)),
        (8, 6, Rect::new(-3, 5, 500, 300)),
        (3, 1, Rect::new(0, 0, 256, 7)),
        (640, 480, Rect::new(11, 13, 641, 479)),
        (1, 1, Rect::new(2, 2, 1, 1)),
    ] {
        let c = compare(Placement::Scaled(dst), gw, gh, 520, 320).unwrap();
        assert_eq!(c.coverage_differs, 0, "{gw}x{gh} in {dst:?}");
        assert!(c.covered > 0);
    }
}

#[test]
fn scaled_products_beyond_64_bits_are_exact() {
    // A guest 2^32 − 1 pixels wide shown 100 display pixels wide at the far right
    // of a display spanning every i32: far left of it, (2x + 1 − 2·dx)·cw is
    // about −2^65, past 64 bits, and must still be outside, not wrapped inside.
    let display = Rect::new(i32::MIN, 0, u32::MAX, 1);
    let dst = Rect::new(i32::MAX - 100, 0, 100, 1);
    let m = PointerMap::new(&Placement::Scaled(dst), u32::MAX, 1, display).unwrap();
    for x in [i32::MIN, i32::MIN + 1, -1, 0, 1 << 30, i32::MAX - 101] {
        assert_eq!(m.to_guest(x, 0), None, "x {x}");
    }
    // Inside, every pixel against the 128-bit formula.
    for x in dst.x..i32::MAX {
        let u = ((2 * i128::from(x) + 1 - 2 * i128::from(dst.x)) * i128::from(u32::MAX))
            .div_euclid(200);
        assert_eq!(m.to_guest(x, 0), Some((u as u32, 0)), "x {x}");
    }
}

#[test]
fn quad_outside_and_behind_the_viewer_stay_with_rayos() {
    let t = Transform::from_quad(64, 48, [(20, 10), (110, 20), (100, 90), (10, 80)]).unwrap();
    let p = Placement::Transform(t);
    let m = PointerMap::new(&p, 64, 48, Rect::new(0, 0, 128, 96)).unwrap();
    assert_eq!(m.to_guest(20, 10), Some((0, 0)));
    assert_eq!(m.to_guest(5, 5), None);
    assert_eq!(m.to_guest(127, 95), None);
    let c = compare(p, 64, 48, 128, 96).unwrap();
    assert!(c.covered > 4000);
    // A plane crossing the viewer: W ≤ 0 on part of the display maps to nothing.
    let behind = Transform::new([[65536, 0, 0], [0, 65536, 0], [-1024, 0, 65536 * 32]]);
    let m = PointerMap::new(
        &Placement::Transform(behind),
        64,
        48,
        Rect::new(0, 0, 4096, 96),
    )
    .unwrap();
    assert_eq!(m.to_guest(4000, 10), None);
    assert!(m.to_guest(1, 1).is_some());
    // Singular, oversized and empty placements are refused.
    let singular = Transform::new([[1, 2, 0], [2, 4, 0], [0, 0, 1]]);
    assert!(
        PointerMap::new(&Placement::Transform(singular), 4, 4, Rect::new(0, 0, 8, 8)).is_none()
    );
    let huge = Transform::new([[MAX_ENTRY + 1, 0, 0], [0, 1, 0], [0, 0, 1]]);
    assert!(PointerMap::new(&Placement::Transform(huge), 4, 4, Rect::new(0, 0, 8, 8)).is_none());
    assert!(PointerMap::new(
        &Placement::Scaled(Rect::new(0, 0, 0, 5)),
        4,
        4,
        Rect::new(0, 0, 8, 8)
    )
    .is_none());
    assert!(PointerMap::new(&Placement::At { x: 0, y: 0 }, 0, 4, Rect::new(0, 0, 8, 8)).is_none());
}

#[test]
fn abi_placements_become_the_presenters_placements() {
    use authority_abi::call::{Placement as P, Rect as R};
    let display = Rect::new(0, 0, 1920, 1080);
    assert_eq!(
        placement_for(
            &P::Panel(R {
                x: 5,
                y: 6,
                w: 800,
                h: 600
            }),
            800,
            600,
            display
        ),
        Some(Placement::At { x: 5, y: 6 })
    );
    assert_eq!(
        placement_for(
            &P::Panel(R {
                x: 5,
                y: 6,
                w: 400,
                h: 300
            }),
            800,
            600,
            display
        ),
        Some(Placement::Scaled(Rect::new(5, 6, 400, 300)))
    );
    assert_eq!(
        placement_for(&P::Fullscreen, 800, 600, display),
        Some(Placement::Scaled(Rect::new(240, 0, 1440, 1080)))
    );
    let q = [(0, 0), (100, 10), (90, 80), (-5, 70)];
    assert_eq!(
        placement_for(&P::Quad(q), 800, 600, display),
        Transform::from_quad(800, 600, q).map(Placement::Transform)
    );
    assert_eq!(
        placement_for(&P::Quad([(0, 0); 4]), 800, 600, display),
        None
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Scaled panels of any size and position, up and down: the map covers exactly
    /// what the compositor draws and names its pixel within one.
    #[test]
    fn scaled_matches_the_compositor(
        gw in 1u32..200, gh in 1u32..150,
        x in -40i32..120, y in -40i32..90, w in 1u32..260, h in 1u32..200,
    ) {
        let c = compare(Placement::Scaled(Rect::new(x, y, w, h)), gw, gh, 160, 120);
        prop_assert_eq!(c.map_or(0, |c| c.coverage_differs), 0);
    }

    /// Quads seen in perspective: within one pixel, coverage differing only at the
    /// guest screen's edge.
    #[test]
    fn quads_match_the_compositor(
        gw in 2u32..120, gh in 2u32..90,
        corners in proptest::array::uniform4((-30i32..190, -30i32..150)),
    ) {
        if let Some(t) = Transform::from_quad(gw, gh, corners) {
            let _ = compare(Placement::Transform(t), gw, gh, 160, 120);
        }
    }
}
