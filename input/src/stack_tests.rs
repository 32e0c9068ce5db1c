//! Several VMs on one display: where each physical event goes.

extern crate std;

use super::*;
use crate::gaze::GazeConfig;
use crate::pointer::PointerMap;
use crate::route::Device;
use authority_abi::input::Button;
use compositor::{Placement, Rect};
use std::vec::Vec;
use virtio::defs::input as ev;

/// A 100x100 guest shown 1:1 at `(x, y)` of a 1024x768 display.
fn panel_at(x: i32, y: i32) -> PointerMap {
    PointerMap::new(
        &Placement::Scaled(Rect::new(x, y, 100, 100)),
        100,
        100,
        Rect::new(0, 0, 1024, 768),
    )
    .unwrap()
}

fn presented(x: i32, y: i32) -> Router {
    let mut r = Router::new(GazeConfig::default());
    let mut out = Vec::new();
    r.set_presentation(Some(panel_at(x, y)), &mut out);
    r.set_interactive(true, &mut out);
    r
}

fn at(x: i32, y: i32) -> InputEvent {
    InputEvent::PointerAbs {
        x,
        y,
        space: Space::Display,
    }
}

/// Routes `events` through `routers` (keys 'a', 'b', … in stack order, topmost
/// first); per event, whether delivered and to which VMs.
fn run(
    routers: &mut [Router],
    focus: &mut Option<char>,
    events: &[InputEvent],
) -> Vec<(bool, Vec<(char, Report)>)> {
    events
        .iter()
        .map(|e| {
            let mut stack: Vec<(char, &mut Router)> = routers
                .iter_mut()
                .enumerate()
                .map(|(i, r)| ((b'a' + i as u8) as char, r))
                .collect();
            let mut out = Vec::new();
            let d = route_stack(&mut stack, focus, 0, e, &mut out);
            (d, out)
        })
        .collect()
}

fn to(out: &[(char, Report)]) -> Vec<char> {
    out.iter().map(|(k, _)| *k).collect()
}

#[test]
fn the_pointer_goes_to_the_topmost_vm_under_it_and_nowhere_else() {
    // a (on top) at (50, 50); b below it at (100, 100): they overlap on
    // (100..150, 100..150).
    let mut rs = [presented(50, 50), presented(100, 100)];
    let mut focus = None;
    let r = run(
        &mut rs,
        &mut focus,
        &[at(120, 120), at(180, 180), at(10, 10), at(60, 60)],
    );
    // The overlap is a's (on top), b's own part is b's, outside both is RayOS's.
    assert_eq!((r[0].0, to(&r[0].1)), (true, std::vec!['a']));
    assert_eq!((r[1].0, to(&r[1].1)), (true, std::vec!['b']));
    assert_eq!((r[2].0, to(&r[2].1)), (false, std::vec![]));
    assert_eq!((r[3].0, to(&r[3].1)), (true, std::vec!['a']));
    // b's guest got the pointer at its own pixel (180-100, 180-100).
    let Report { device, events } = &r[1].1[0].1;
    assert_eq!(*device, Device::Tablet);
    assert_eq!(events[0].value, 80);
    assert_eq!(events[1].value, 80);
}

#[test]
fn a_click_goes_where_the_pointer_is_and_gives_that_vm_the_keyboard() {
    let mut rs = [presented(50, 50), presented(300, 300)];
    let mut focus = None;
    let press = |pressed| InputEvent::Button {
        button: Button::Left,
        pressed,
    };
    let key = |pressed| InputEvent::Key {
        usage: 0x04, // a
        pressed,
    };
    // Before any click the topmost VM taking input has the keyboard.
    let r = run(&mut rs, &mut focus, &[key(true), key(false)]);
    assert_eq!(to(&r[0].1), ['a']);
    assert_eq!(to(&r[1].1), ['a']);
    // Click in b: b has the button and then the keyboard.
    let r = run(
        &mut rs,
        &mut focus,
        &[at(320, 320), press(true), press(false), key(true)],
    );
    assert_eq!(to(&r[1].1), ['b']);
    assert_eq!(to(&r[2].1), ['b']);
    assert_eq!(to(&r[3].1), ['b']);
    assert_eq!(focus, Some('b'));
    // The key is released where it was pressed even after a click moved the
    // focus back to a; a click outside every VM is RayOS's and moves nothing.
    let r = run(
        &mut rs,
        &mut focus,
        &[
            at(60, 60),
            press(true),
            press(false),
            key(false),
            at(900, 700),
            press(true),
        ],
    );
    assert_eq!(to(&r[1].1), ['a']);
    assert_eq!(focus, Some('a'));
    assert_eq!(to(&r[3].1), ['b']);
    assert_eq!(r[3].1[0].1.events[0].ty, ev::EV_KEY);
    assert!(!r[5].0 && r[5].1.is_empty());
    assert_eq!(focus, Some('a'));
}

#[test]
fn a_button_held_into_another_vm_is_released_where_it_was_pressed() {
    let mut rs = [presented(50, 50), presented(300, 300)];
    let mut focus = None;
    let r = run(
        &mut rs,
        &mut focus,
        &[
            at(60, 60),
            InputEvent::Button {
                button: Button::Left,
                pressed: true,
            },
            at(320, 320),
            InputEvent::Button {
                button: Button::Left,
                pressed: false,
            },
        ],
    );
    assert_eq!(to(&r[1].1), ['a']);
    assert_eq!(to(&r[2].1), ['b']);
    // The release reaches a, which saw the press; b never saw it.
    assert_eq!(to(&r[3].1), ['a']);
}

#[test]
fn a_vm_that_does_not_take_input_keeps_nothing_but_still_covers_what_is_below() {
    let mut rs = [presented(50, 50), presented(50, 50)];
    let mut out = Vec::new();
    rs[0].set_interactive(false, &mut out);
    let mut focus = None;
    // a (on top, not interactive) covers b: the pointer there is RayOS's.
    let r = run(&mut rs, &mut focus, &[at(60, 60)]);
    assert!(!r[0].0 && r[0].1.is_empty());
    // Keys go to the topmost VM that takes input: b.
    let r = run(
        &mut rs,
        &mut focus,
        &[InputEvent::Key {
            usage: 0x04,
            pressed: true,
        }],
    );
    assert_eq!(to(&r[0].1), ['b']);
}
