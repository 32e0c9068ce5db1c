//! The host half of `cargo xtask bench compose` (run in release): composes a
//! 1920×1080 XRGB8888 guest surface into a 2560×1440 XRGB8888 output with a 64×64
//! ARGB cursor and a translucent status bar, and times, interleaved in the same run:
//! a plain copy of the output frame (the baseline), a full frame at scale 1, a full
//! frame with the guest scaled bilinearly to fill the output, and a damage-only frame
//! after a 64×64 change of the guest surface. Prints one line of medians in
//! nanoseconds per frame, which xtask turns into ratios. It also times the guest
//! placed as a quad in perspective and rotated (`quad_ns`, `rotated_ns`: the general
//! row loops), which xtask does not read.

use std::hint::black_box;
use std::time::Instant;

use compositor::text::status_bar;
use compositor::{
    compose, Filter, Frame, Layer, PixelFormat, Placement, Rect, Scene, Surface, Transform,
};

const OUT_W: u32 = 2560;
const OUT_H: u32 = 1440;
const GUEST_W: u32 = 1920;
const GUEST_H: u32 = 1080;
const CURSOR: u32 = 64;
const ROUNDS: usize = 15;

fn pattern(w: u32, h: u32, seed: u32) -> Vec<u8> {
    (0..w * h)
        .flat_map(|i| (i.wrapping_mul(2_654_435_761) ^ seed).to_le_bytes())
        .collect()
}

/// Median nanoseconds per call of `f`, run `reps` times per round.
fn time(samples: &mut Vec<f64>, reps: u32, mut f: impl FnMut()) {
    let t = Instant::now();
    for _ in 0..reps {
        f();
    }
    samples.push(t.elapsed().as_nanos() as f64 / f64::from(reps));
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let stride = OUT_W as usize * 4;
    let guest_px = pattern(GUEST_W, GUEST_H, 0x1234_5678);
    let cursor_px: Vec<u8> = (0..CURSOR * CURSOR)
        .flat_map(|i| {
            let a: u32 = if (i % CURSOR + i / CURSOR).is_multiple_of(3) {
                0
            } else {
                0xC0
            };
            (a << 24 | 0x00FF_FFFF).to_le_bytes()
        })
        .collect();
    let bar = status_bar(
        OUT_W,
        "RayOS  vm0: running  12:00",
        2,
        0xFFFF_FFFF,
        0xA000_0000,
    );
    let guest = Surface::new(
        &guest_px,
        GUEST_W,
        GUEST_H,
        GUEST_W as usize * 4,
        PixelFormat::Xrgb8888,
    )
    .unwrap();
    let cursor = Surface::new(
        &cursor_px,
        CURSOR,
        CURSOR,
        CURSOR as usize * 4,
        PixelFormat::Argb8888,
    )
    .unwrap();
    let scene = |placement: Placement, filter: Filter| Scene {
        background: 0x0020_2020,
        layers: vec![
            Layer {
                placement,
                filter,
                ..Layer::new(guest, 0, 0)
            },
            Layer {
                z: 2,
                ..Layer::new(bar.surface().unwrap(), 0, 0)
            },
            Layer {
                z: 3,
                ..Layer::new(cursor, 1200, 700)
            },
        ],
    };
    let unscaled = scene(Placement::At { x: 320, y: 180 }, Filter::Nearest);
    let scaled = scene(
        Placement::Scaled(Rect::new(0, 0, OUT_W, OUT_H)),
        Filter::Bilinear,
    );
    // The general row loops (not part of xtask's headline): the guest as a quad in
    // perspective and rotated by 10° at 1.2×, bilinear, over most of the output.
    let quad = scene(
        Placement::Transform(
            Transform::from_quad(
                GUEST_W,
                GUEST_H,
                [(200, 80), (2400, 200), (2300, 1300), (300, 1380)],
            )
            .unwrap(),
        ),
        Filter::Bilinear,
    );
    let (c, s) = (64_540i32, 11_380i32); // 65536·cos 10°, 65536·sin 10°
    let rotated = scene(
        Placement::Transform(Transform::affine_q16(
            c * 6 / 5,
            -s * 6 / 5,
            400 << 16,
            s * 6 / 5,
            c * 6 / 5,
            0,
        )),
        Filter::Bilinear,
    );
    let output = Rect::new(0, 0, OUT_W, OUT_H);
    let changed = Rect::new(900, 500, 64, 64);
    let damage = [unscaled.layers[0].damage_of(changed, output).unwrap()];
    let damaged_px = u64::from(damage[0].w) * u64::from(damage[0].h);

    let mut out = vec![0u8; stride * OUT_H as usize];
    let mut copy = vec![0u8; stride * OUT_H as usize];
    let (mut memcpy, mut full, mut bilinear, mut dmg) = (vec![], vec![], vec![], vec![]);
    let (mut quad_ns, mut rotated_ns) = (vec![], vec![]);
    for _ in 0..ROUNDS {
        time(&mut memcpy, 4, || {
            copy.copy_from_slice(black_box(&out));
            black_box(&copy);
        });
        time(&mut full, 4, || {
            let mut f = Frame::new(&mut out, OUT_W, OUT_H, stride, PixelFormat::Xrgb8888).unwrap();
            black_box(compose(&unscaled, &mut f, &[output]));
        });
        time(&mut bilinear, 2, || {
            let mut f = Frame::new(&mut out, OUT_W, OUT_H, stride, PixelFormat::Xrgb8888).unwrap();
            black_box(compose(&scaled, &mut f, &[output]));
        });
        time(&mut quad_ns, 1, || {
            let mut f = Frame::new(&mut out, OUT_W, OUT_H, stride, PixelFormat::Xrgb8888).unwrap();
            black_box(compose(&quad, &mut f, &[output]));
        });
        time(&mut rotated_ns, 1, || {
            let mut f = Frame::new(&mut out, OUT_W, OUT_H, stride, PixelFormat::Xrgb8888).unwrap();
            black_box(compose(&rotated, &mut f, &[output]));
        });
        time(&mut dmg, 200, || {
            let mut f = Frame::new(&mut out, OUT_W, OUT_H, stride, PixelFormat::Xrgb8888).unwrap();
            black_box(compose(&unscaled, &mut f, &damage));
        });
    }
    println!(
        "compose-bench: memcpy_ns={:.0} full_ns={:.0} bilinear_ns={:.0} damage_ns={:.0} damage_pixels={} output_pixels={} quad_ns={:.0} rotated_ns={:.0}",
        median(memcpy),
        median(full),
        median(bilinear),
        median(dmg),
        damaged_px,
        u64::from(OUT_W) * u64::from(OUT_H),
        median(quad_ns),
        median(rotated_ns)
    );
}
