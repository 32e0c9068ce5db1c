//! Several VMs on one desk (`present::desk`), each VM a guest driving its own
//! virtio-gpu.

use super::*;
use crate::present::desk::{cascade, Sources, Tick};

/// The VMs' devices by key (their index), counting what the desk does with each.
struct Devs<'a> {
    g: Vec<&'a mut G>,
    /// Per VM: frames taken (the device locked to take its damage).
    taken: Vec<usize>,
    /// Per VM: looked at without taking its frame (under another's damage).
    peeked: Vec<usize>,
}

impl<'a> Devs<'a> {
    fn new(g: Vec<&'a mut G>) -> Self {
        let n = g.len();
        Self {
            g,
            taken: vec![0; n],
            peeked: vec![0; n],
        }
    }
}

impl Sources<usize> for Devs<'_> {
    fn with(&mut self, key: usize, take: bool, f: &mut dyn FnMut(&mut dyn ScanoutSource)) {
        if take {
            self.taken[key] += 1;
        } else {
            self.peeked[key] += 1;
        }
        f(self.g[key].gpu_mut());
    }
}

fn tick(d: &mut Desk<usize>, devs: &mut Devs, buf: &mut [u8], now: u64) -> Tick<usize> {
    d.tick(devs, &mut frame(buf), now)
}

fn area(rects: &[compositor::Rect]) -> u64 {
    rects.iter().map(|r| u64::from(r.w) * u64::from(r.h)).sum()
}

/// The guest paints `r` of its whole `w`-wide resource (backing at `backing`)
/// with `color` and transfers and flushes just that.
fn paint(g: &mut G, backing: u64, w: u32, r: Rect, color: u32) {
    for y in r.y..r.y + r.height {
        let at = backing + u64::from((y * w + r.x) * 4);
        g.d.write_mem(at, &image(r.width, 1, |_, _| color));
    }
    let offset = u64::from((r.y * w + r.x) * 4);
    assert_eq!(g.transfer(1, r, offset), cmd::RESP_OK_NODATA);
    assert_eq!(g.flush(1, r), cmd::RESP_OK_NODATA);
}

/// A 64x64 ARGB cursor (resource 2) on scanout 0 at (`x`, `y`): an opaque 4x4
/// green square in its corner.
fn cursor_at(g: &mut G, x: u32, y: u32) {
    assert_eq!(
        g.create(2, format::B8G8R8A8_UNORM, 64, 64),
        cmd::RESP_OK_NODATA
    );
    let img = image(64, 64, |x, y| if x < 4 && y < 4 { 0xff00_ff00 } else { 0 });
    let at = g.d.alloc(img.len() as u64, 4096);
    g.d.write_mem(at, &img);
    assert_eq!(g.attach(2, &[(at, img.len() as u32)]), cmd::RESP_OK_NODATA);
    assert_eq!(
        g.transfer(2, Rect::new(0, 0, 64, 64), 0),
        cmd::RESP_OK_NODATA
    );
    g.send(
        queue::CURSORQ,
        &msg(cmd::UPDATE_CURSOR, &[0, x, y, 0, 2, 0, 0, 0]),
        0,
    );
}

fn move_cursor(g: &mut G, x: u32, y: u32) {
    g.send(
        queue::CURSORQ,
        &msg(cmd::MOVE_CURSOR, &[0, x, y, 0, 0, 0, 0, 0]),
        0,
    );
}

/// One step of a guest or of its presentation.
#[derive(Clone, Copy)]
enum Op {
    Paint(Rect, u32),
    Cursor(u32, u32),
    MoveCursor(u32, u32),
    Place(Placement),
    Freeze,
    Unfreeze,
    Throttle(u32),
    Hide,
    Live,
    Overlay(Option<&'static str>),
}

/// The guest's part of `op` (on its 40-wide resource backed at `backing`).
fn guest_does(op: Op, g: &mut G, backing: u64) {
    match op {
        Op::Paint(r, c) => paint(g, backing, 40, r, c),
        Op::Cursor(x, y) => cursor_at(g, x, y),
        Op::MoveCursor(x, y) => move_cursor(g, x, y),
        _ => {}
    }
}

/// The presentation's part of `op`.
fn present_does(op: Op, p: &mut Presenter, g: &G) {
    match op {
        Op::Place(pl) => p.set_placement(pl).unwrap(),
        Op::Freeze => p.freeze(g.gpu()).unwrap(),
        Op::Unfreeze => p.unfreeze().unwrap(),
        Op::Throttle(fps) => p.throttle(fps).unwrap(),
        Op::Hide => p.hide(),
        Op::Live => p.show_live(),
        _ => {}
    }
}

#[test]
fn a_desk_with_one_vm_shows_what_a_presenter_shows() {
    // Two identical guests: one presented by a `Presenter`, one on a desk alone.
    let (w, h) = (40, 30);
    let (mut ga, ba) = showing(w, h, pattern);
    let (mut gb, bb) = showing(w, h, pattern);
    let mut p = Presenter::new(0, 20, 10);
    let mut d = Desk::new();
    assert!(d.add(0, 0, 20, 10));
    assert!(!d.add(0, 0, 1, 1), "a key is on the desk once");
    // Both outputs start with the same garbage: what is not recomposed stays.
    let mut out_a = vec![0x5a; (OUT.0 * OUT.1 * 4) as usize];
    let mut out_b = out_a.clone();
    let panel = |x, y, size| Op::Place(Placement::Panel { x, y, size });
    let steps: Vec<(&str, Vec<Op>)> = vec![
        ("first frame", vec![]),
        ("a flush", vec![Op::Paint(Rect::new(3, 4, 5, 6), 0x11_2233)]),
        ("nothing", vec![]),
        ("a cursor", vec![Op::Cursor(30, 25)]),
        ("the cursor moves", vec![Op::MoveCursor(2, 3)]),
        ("moved", vec![panel(100, 50, None)]),
        (
            "scaled and a flush",
            vec![
                Op::Paint(Rect::new(10, 10, 4, 4), 0x44_5566),
                panel(90, 40, Some((60, 45))),
            ],
        ),
        (
            "a flush scaled",
            vec![Op::Paint(Rect::new(20, 5, 3, 2), 0x77_0000)],
        ),
        ("an overlay", vec![Op::Overlay(Some("desk 1"))]),
        ("frozen", vec![Op::Freeze]),
        (
            "drawing while frozen",
            vec![Op::Paint(Rect::new(0, 0, 40, 30), 0x00_8800)],
        ),
        ("still frozen", vec![]),
        ("unfrozen", vec![Op::Unfreeze]),
        (
            "throttled",
            vec![
                Op::Throttle(100),
                Op::Paint(Rect::new(1, 1, 2, 2), 0x12_3456),
            ],
        ),
        (
            "a flush within the throttle's period",
            vec![Op::Paint(Rect::new(5, 5, 2, 2), 0x65_4321)],
        ),
        (
            "hidden",
            vec![Op::Hide, Op::Paint(Rect::new(0, 0, 9, 9), 0x99_9999)],
        ),
        ("live", vec![Op::Live]),
        ("no overlay", vec![Op::Overlay(None)]),
        ("fullscreen", vec![Op::Place(Placement::Fullscreen)]),
        (
            "a quad",
            vec![
                Op::Paint(Rect::new(30, 20, 10, 10), 0x00_00aa),
                Op::Place(Placement::Quad([(30, 5), (170, 20), (150, 110), (40, 100)])),
            ],
        ),
        (
            "a flush in the quad",
            vec![Op::Paint(Rect::new(0, 0, 10, 10), 0x00_aa00)],
        ),
        (
            "back to a panel",
            vec![panel(0, 0, None), Op::MoveCursor(38, 28)],
        ),
    ];
    p.set_clock(1000);
    d.set_clock(1000);
    for (now, (name, ops)) in (1000..).zip(steps) {
        for op in ops {
            guest_does(op, &mut ga, ba);
            guest_does(op, &mut gb, bb);
            present_does(op, &mut p, &ga);
            present_does(op, d.presenter_mut(0).unwrap(), &gb);
            if let Op::Overlay(o) = op {
                p.set_overlay(o);
                d.set_overlay(o);
            }
        }
        let drawn_a = p.present(ga.gpu_mut(), &mut frame(&mut out_a), now);
        let t = tick(&mut d, &mut Devs::new(vec![&mut gb]), &mut out_b, now);
        assert_eq!(drawn_a.is_empty(), t.rects.is_empty(), "{name}");
        assert!(out_a == out_b, "{name}: the frames differ");
        // A rectangle the presenter did not recompose is not the desk's either.
        assert!(
            t.rects
                .iter()
                .all(|r| drawn_a.iter().any(|a| a.contains(r))),
            "{name}: {:?} vs {drawn_a:?}",
            t.rects
        );
    }
    // Everything was shown: the last step's cursor and pixels.
    assert_eq!(at(&out_b, 38, 28), 0x00_ff00);
    assert_eq!(at(&out_b, 0, 0), 0x00_aa00);
}

const C0: u32 = 0x11_1111;
const C1: u32 = 0x22_2222;

/// Two guests with 40x30 panels: VM 0 at (10, 10), VM 1 over it at (30, 20)
/// (they overlap at x 30..50, y 20..40), composed once.
/// A guest and its resource's backing.
type Guest = (G, u64);

fn two() -> (Guest, Guest, Desk<usize>, Vec<u8>) {
    let (mut g0, b0) = showing(40, 30, |_, _| C0);
    let (mut g1, b1) = showing(40, 30, |_, _| C1);
    let mut d = Desk::new();
    d.set_clock(1000);
    assert!(d.add(0, 0, 10, 10));
    assert!(d.add(1, 0, 30, 20));
    let mut buf = vec![0u8; (OUT.0 * OUT.1 * 4) as usize];
    let t = tick(&mut d, &mut Devs::new(vec![&mut g0, &mut g1]), &mut buf, 0);
    assert_eq!(t.rects, [compositor::Rect::new(0, 0, OUT.0, OUT.1)]);
    assert_eq!(t.composed.len(), 2);
    ((g0, b0), (g1, b1), d, buf)
}

#[test]
fn two_vms_are_placed_where_asked_and_the_most_recently_presented_is_on_top() {
    let ((mut g0, _), (mut g1, _), mut d, mut buf) = two();
    assert_eq!(at(&buf, 15, 15), C0);
    assert_eq!(at(&buf, 65, 45), C1);
    assert_eq!(at(&buf, 35, 25), C1, "the VM added last is on top");
    assert_eq!(at(&buf, 5, 5), BACKGROUND);
    assert_eq!(at(&buf, 75, 15), BACKGROUND);
    assert_eq!(d.order(), [0, 1]);
    assert_eq!((d.frames(0), d.frames(1)), (Some(1), Some(1)));
    // VM 0 is presented again: on top, recomposed where it is, nowhere else.
    buf[0..4].copy_from_slice(&0x00ab_cdefu32.to_le_bytes());
    assert!(d.raise(0));
    let mut devs = Devs::new(vec![&mut g0, &mut g1]);
    let t = tick(&mut d, &mut devs, &mut buf, 1);
    let vm0 = compositor::Rect::new(10, 10, 40, 30);
    assert!(t.rects.iter().all(|r| vm0.contains(r)), "{:?}", t.rects);
    assert_eq!(at(&buf, 35, 25), C0);
    assert_eq!(at(&buf, 55, 35), C1);
    assert_eq!(
        at(&buf, 0, 0),
        0xab_cdef,
        "outside VM 0 nothing was redrawn"
    );
    assert_eq!(d.order(), [1, 0]);
    // VM 1 was looked at (it lies under the recomposed area), its frame not taken.
    assert_eq!(devs.peeked, [0, 1]);
    assert_eq!((d.frames(0), d.frames(1)), (Some(2), Some(1)));
    // Raising the top VM changes nothing.
    assert!(d.raise(0));
    assert!(!d.raise(7));
    assert!(tick(&mut d, &mut devs, &mut buf, 2).rects.is_empty());
    // Moved: its old place is uncovered (VM 1 shows there again).
    d.presenter_mut(0)
        .unwrap()
        .set_placement(Placement::Panel {
            x: 120,
            y: 60,
            size: None,
        })
        .unwrap();
    tick(&mut d, &mut devs, &mut buf, 3);
    assert_eq!(at(&buf, 35, 25), C1);
    assert_eq!(at(&buf, 15, 15), BACKGROUND);
    assert_eq!(at(&buf, 125, 65), C0);
    // Taken off the desk: what it covered shows the background.
    assert!(d.remove(0));
    assert!(!d.remove(0));
    tick(&mut d, &mut devs, &mut buf, 4);
    assert_eq!(at(&buf, 125, 65), BACKGROUND);
    assert_eq!(at(&buf, 35, 25), C1);
}

#[test]
fn a_flush_recomposes_only_its_rectangles_with_what_lies_over_them() {
    let ((mut g0, b0), (mut g1, b1), mut d, mut buf) = two();
    buf[0..4].copy_from_slice(&0x00ab_cdefu32.to_le_bytes());
    // VM 0 (below) changes x 15..35, y 5..15 of its panel: output x 25..45,
    // y 15..25, of which x 30..45, y 20..25 lies under VM 1.
    paint(&mut g0, b0, 40, Rect::new(15, 5, 20, 10), 0x33_4455);
    let mut devs = Devs::new(vec![&mut g0, &mut g1]);
    let t = tick(&mut d, &mut devs, &mut buf, 1);
    assert_eq!(t.rects, [compositor::Rect::new(25, 15, 20, 10)]);
    assert_eq!(t.composed.len(), 1);
    assert_eq!(t.composed[0].key, 0);
    assert_eq!(t.composed[0].frame, 2);
    assert_eq!(t.composed[0].guest_damage, Some(Rect::new(15, 5, 20, 10)));
    assert_eq!(at(&buf, 26, 16), 0x33_4455);
    assert_eq!(at(&buf, 44, 19), 0x33_4455);
    assert_eq!(at(&buf, 35, 22), C1, "VM 1 stays on top of the change");
    assert_eq!(
        at(&buf, 0, 0),
        0xab_cdef,
        "outside the damage nothing was redrawn"
    );
    assert_eq!(devs.peeked, [0, 1]);
    // VM 1 (on top) changes a corner away from VM 0: VM 0 is not looked at.
    paint(devs.g[1], b1, 40, Rect::new(30, 20, 5, 5), 0x66_7788);
    let t = tick(&mut d, &mut devs, &mut buf, 2);
    assert_eq!(t.rects, [compositor::Rect::new(60, 40, 5, 5)]);
    assert_eq!(at(&buf, 62, 42), 0x66_7788);
    assert_eq!(devs.peeked, [0, 1]);
    assert_eq!((d.frames(0), d.frames(1)), (Some(2), Some(2)));
    // Nothing flushed: nothing composed.
    assert!(tick(&mut d, &mut devs, &mut buf, 3).rects.is_empty());
}

#[test]
fn a_hidden_vm_costs_nothing_and_its_device_is_not_looked_at() {
    let ((mut g0, b0), (mut g1, b1), mut d, mut buf) = two();
    d.presenter_mut(0).unwrap().hide();
    let mut devs = Devs::new(vec![&mut g0, &mut g1]);
    let t = tick(&mut d, &mut devs, &mut buf, 1);
    assert!(!t.rects.is_empty());
    assert_eq!(at(&buf, 15, 15), BACKGROUND);
    assert_eq!(at(&buf, 35, 25), C1);
    let (taken, frames) = (devs.taken[0], d.frames(0));
    // VM 0 draws and VM 1 floods over where VM 0 was: VM 0's device is never
    // locked, its frames do not move, its damage waits in its device.
    for i in 0..50u32 {
        paint(devs.g[0], b0, 40, Rect::new(0, 0, 40, 30), 0x40_0000 + i);
        paint(devs.g[1], b1, 40, Rect::new(0, 0, 40, 30), 0x50_0000 + i);
        let t = tick(&mut d, &mut devs, &mut buf, 2 + u64::from(i));
        assert_eq!(t.rects, [compositor::Rect::new(30, 20, 40, 30)]);
    }
    assert_eq!((devs.taken[0], devs.peeked[0]), (taken, 0));
    assert_eq!(d.frames(0), frames);
    assert_eq!(d.frames(1), Some(1 + 50));
    assert_eq!(at(&buf, 15, 15), BACKGROUND);
    assert!(!devs.g[0].gpu_mut().take_damage(0).is_empty());
    // Shown again: its latest frame.
    d.presenter_mut(0).unwrap().show_live();
    d.raise(0);
    tick(&mut d, &mut devs, &mut buf, 100);
    assert_eq!(at(&buf, 15, 15), 0x40_0000 + 49);
    assert_eq!(at(&buf, 35, 25), 0x40_0000 + 49);
}

/// Frames composed for VM 1 (a 4x4 change every tick) over `ticks` ticks, with
/// VM 0 repainting its whole panel `flood` times before every tick.
fn small_vm_frames(flood: u32, ticks: u32) -> (u64, u64) {
    let ((mut g0, b0), (mut g1, b1), mut d, mut buf) = two();
    d.set_budget(2 * u64::from(OUT.0 * OUT.1));
    let mut devs = Devs::new(vec![&mut g0, &mut g1]);
    for i in 0..ticks {
        for k in 0..flood {
            paint(
                devs.g[0],
                b0,
                40,
                Rect::new(0, 0, 40, 30),
                0x30_0000 + i * 8 + k,
            );
        }
        paint(devs.g[1], b1, 40, Rect::new(8, 8, 4, 4), 0x60_0000 + i);
        let t = tick(&mut d, &mut devs, &mut buf, 1 + u64::from(i));
        assert!(t.composed.iter().any(|c| c.key == 1), "tick {i}");
        assert_eq!(at(&buf, 30 + 9, 20 + 9), 0x60_0000 + i, "VM 1's latest");
        if flood > 0 {
            assert_eq!(
                at(&buf, 15, 15),
                0x30_0000 + i * 8 + flood - 1,
                "VM 0's latest"
            );
        }
    }
    (d.frames(0).unwrap(), d.frames(1).unwrap())
}

#[test]
fn a_vm_flooding_flushes_does_not_reduce_another_s_frame_rate() {
    let quiet = small_vm_frames(0, 60);
    let flooded = small_vm_frames(5, 60);
    assert_eq!(quiet, (1, 61));
    assert_eq!(flooded.1, quiet.1, "VM 1's frames with VM 0 flooding");
    // The flood's flushes are merged: a frame of VM 0's per tick, not five.
    assert_eq!(flooded.0, 61);
}

#[test]
fn when_the_budget_runs_out_the_vms_take_turns() {
    // Three 40x30 panels side by side; a tick may recompose one panel's worth.
    let mut g: Vec<(G, u64)> = (0..3).map(|_| showing(40, 30, |_, _| 0)).collect();
    let mut d = Desk::new();
    for k in 0..3 {
        assert!(d.add(k, 0, 50 * k as i32, 0));
    }
    d.set_budget(40 * 30);
    let mut buf = vec![0u8; (OUT.0 * OUT.1 * 4) as usize];
    let backings: Vec<u64> = g.iter().map(|(_, b)| *b).collect();
    let mut devs = Devs::new(g.iter_mut().map(|(g, _)| g).collect());
    // The first frame recomposes everything anyway: all three.
    assert_eq!(tick(&mut d, &mut devs, &mut buf, 0).composed.len(), 3);
    // All three repaint their whole panel before every tick.
    let mut served = Vec::new();
    for i in 1..=30u32 {
        for (k, b) in backings.iter().enumerate() {
            paint(
                devs.g[k],
                *b,
                40,
                Rect::new(0, 0, 40, 30),
                (k as u32) << 16 | i,
            );
        }
        let t = tick(&mut d, &mut devs, &mut buf, u64::from(i));
        assert!(area(&t.rects) <= 40 * 30, "tick {i}: {:?}", t.rects);
        assert_eq!(t.composed.len(), 1, "tick {i}");
        served.push(t.composed[0].key);
    }
    // Round-robin: each in turn, ten frames each.
    for w in served.windows(3) {
        let mut w = w.to_vec();
        w.sort();
        assert_eq!(w, [0, 1, 2], "{served:?}");
    }
    assert_eq!(
        (d.frames(0), d.frames(1), d.frames(2)),
        (Some(11), Some(11), Some(11))
    );
    // The floods stop: the frames deferred come out, each VM's latest.
    for i in 31..34 {
        tick(&mut d, &mut devs, &mut buf, i);
    }
    for k in 0..3u32 {
        assert_eq!(at(&buf, 50 * k + 5, 5), k << 16 | 30, "VM {k}");
    }
    assert!(tick(&mut d, &mut devs, &mut buf, 34).rects.is_empty());
}

#[test]
fn each_vm_keeps_its_own_policy() {
    let ((mut g0, b0), (mut g1, b1), mut d, mut buf) = two();
    d.presenter_mut(0).unwrap().throttle(10).unwrap();
    d.presenter_mut(1)
        .unwrap()
        .set_placement(Placement::Panel {
            x: 120,
            y: 60,
            size: None,
        })
        .unwrap();
    let mut devs = Devs::new(vec![&mut g0, &mut g1]);
    tick(&mut d, &mut devs, &mut buf, 1000);
    let before = (d.frames(0).unwrap(), d.frames(1).unwrap());
    // 200 ms of 1 ms ticks, both flooding: VM 0 at 10 frames a second, VM 1 every
    // tick.
    for t in 1..=200u32 {
        paint(devs.g[0], b0, 40, Rect::new(0, 0, 40, 30), 0x70_0000 + t);
        paint(devs.g[1], b1, 40, Rect::new(0, 0, 40, 30), 0x80_0000 + t);
        tick(&mut d, &mut devs, &mut buf, 1000 + u64::from(t));
        assert_eq!(at(&buf, 125, 65), 0x80_0000 + t);
    }
    assert_eq!(d.frames(0).unwrap() - before.0, 2, "ticks 1100 and 1200");
    assert_eq!(d.frames(1).unwrap() - before.1, 200);
    assert_eq!(at(&buf, 15, 15), 0x70_0000 + 200);
    // Frozen: VM 0 keeps its frame while the guest draws on.
    d.presenter_mut(0).unwrap().freeze(devs.g[0].gpu()).unwrap();
    paint(devs.g[0], b0, 40, Rect::new(0, 0, 40, 30), 0x12_3456);
    tick(&mut d, &mut devs, &mut buf, 1300);
    tick(&mut d, &mut devs, &mut buf, 1400);
    assert_eq!(at(&buf, 15, 15), 0x70_0000 + 200);
    assert_eq!(
        d.presenter(0).unwrap().status(),
        "frozen panel 10 10 unscaled"
    );
}

#[test]
fn cascaded_panels_each_show_their_corner() {
    assert_eq!(cascade(0), DEFAULT_PANEL);
    assert_eq!(cascade(8), cascade(0));
    // On the default 1280x800 display, 640x480 panels stacked in order: each one's
    // top-left corner lies inside the display and outside every later panel.
    for k in 0..8 {
        let (x, y) = cascade(k);
        assert!(x + 640 <= 1280 && y + 480 <= 800, "panel {k}");
        for later in k + 1..8 {
            let (lx, ly) = cascade(later);
            assert!(x < lx && y < ly, "{k} under {later}");
        }
    }
}

/// A step of several guests and their presentations on one desk.
#[derive(Debug, Clone)]
enum DeskOp {
    Paint(usize, Rect, u32),
    Move(usize, i32, i32, Option<(u32, u32)>),
    Hide(usize),
    Live(usize),
    Raise(usize),
    Cursor(u32, u32),
}

fn desk_op() -> impl proptest::strategy::Strategy<Value = DeskOp> {
    use proptest::prelude::*;
    let vm = 0usize..3;
    prop_oneof![
        4 => (vm.clone(), 0u32..40, 0u32..30, 1u32..40, 1u32..30, any::<u32>()).prop_map(
            |(k, x, y, w, h, c)| DeskOp::Paint(k, Rect::new(x, y, w.min(40 - x), h.min(30 - y)), c)
        ),
        2 => (vm.clone(), -30i32..200, -20i32..120, proptest::option::of((1u32..90, 1u32..70)))
            .prop_map(|(k, x, y, s)| DeskOp::Move(k, x, y, s)),
        1 => vm.clone().prop_map(DeskOp::Hide),
        1 => vm.clone().prop_map(DeskOp::Live),
        1 => vm.prop_map(DeskOp::Raise),
        1 => (0u32..40, 0u32..30).prop_map(|(x, y)| DeskOp::Cursor(x, y)),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(48))]
    #[test]
    fn damage_recomposition_equals_a_full_one_with_several_vms(
        ops in proptest::collection::vec(desk_op(), 1..24),
        budget in proptest::option::of(200u64..3000),
    ) {
        let mut g: Vec<(G, u64)> = (0..3u32)
            .map(|k| showing(40, 30, move |x, y| pattern(x + k, y)))
            .collect();
        cursor_at(&mut g[0].0, 5, 5);
        let mut d = Desk::new();
        for k in 0..3 {
            d.add(k, 0, 30 * k as i32, 20 * k as i32);
        }
        if let Some(b) = budget {
            d.set_budget(b);
        }
        let mut buf = vec![0x5a; (OUT.0 * OUT.1 * 4) as usize];
        for (now, op) in (0..).zip(&ops) {
            match *op {
                DeskOp::Paint(k, r, c) => {
                    let (gk, b) = &mut g[k];
                    paint(gk, *b, 40, r, c & 0x00ff_ffff);
                }
                DeskOp::Move(k, x, y, size) => d
                    .presenter_mut(k)
                    .unwrap()
                    .set_placement(Placement::Panel { x, y, size })
                    .unwrap(),
                DeskOp::Hide(k) => d.presenter_mut(k).unwrap().hide(),
                DeskOp::Live(k) => d.presenter_mut(k).unwrap().show_live(),
                DeskOp::Raise(k) => {
                    d.raise(k);
                }
                DeskOp::Cursor(x, y) => move_cursor(&mut g[0].0, x, y),
            }
            let mut devs = Devs::new(g.iter_mut().map(|(g, _)| g).collect());
            tick(&mut d, &mut devs, &mut buf, now);
        }
        // Let deferred frames come out.
        let mut devs = Devs::new(g.iter_mut().map(|(g, _)| g).collect());
        let mut settled = false;
        for now in 1000..1010 {
            if tick(&mut d, &mut devs, &mut buf, now).rects.is_empty() {
                settled = true;
                break;
            }
        }
        proptest::prop_assert!(settled, "the desk settles");
        // A fresh desk in the same state composes everything at once.
        let mut fresh = Desk::new();
        for k in d.order() {
            let p = d.presenter(k).unwrap();
            fresh.add(k, 0, 0, 0);
            let q = fresh.presenter_mut(k).unwrap();
            q.set_placement(p.placement()).unwrap();
            if p.policy() == Policy::Hidden {
                q.hide();
            }
        }
        let mut full = vec![0u8; buf.len()];
        tick(&mut fresh, &mut devs, &mut full, 2000);
        proptest::prop_assert!(buf == full, "damage-driven frame differs from a full one");
    }
}
