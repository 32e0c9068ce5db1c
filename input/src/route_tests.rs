//! Routing tests; every report produced is pushed into the virtio-input devices the
//! hypervisor will give the guest, which must accept it.

extern crate std;

use super::*;
use compositor::{Placement, Rect};
use std::vec;

const GW: u32 = 640;
const GH: u32 = 400;

/// A 640x400 guest shown 2:1 in a 320x200 panel at (100, 100) of a 1024x768 display.
fn panel() -> PointerMap {
    PointerMap::new(
        &Placement::Scaled(Rect::new(100, 100, 320, 200)),
        GW,
        GH,
        Rect::new(0, 0, 1024, 768),
    )
    .unwrap()
}

struct Vm {
    router: Router,
    kbd: virtio::Input,
    tablet: virtio::Input,
    out: Vec<Report>,
}

impl Vm {
    fn presented() -> Self {
        let mut vm = Vm {
            router: Router::new(GazeConfig {
                smoothing: 128,
                dwell_radius: 4,
                dwell_time: 50,
                max_gap: 100,
            }),
            kbd: virtio::Input::keyboard(),
            tablet: virtio::Input::tablet(GW, GH),
            out: Vec::new(),
        };
        vm.router.set_presentation(Some(panel()), &mut vm.out);
        vm.router.set_interactive(true, &mut vm.out);
        vm
    }

    /// Routes `e` and returns the reports it produced, after checking the devices
    /// accept them.
    fn route(&mut self, now: u64, e: InputEvent) -> (Routed, Vec<Report>) {
        let r = self.router.route(now, &e, &mut self.out);
        (r, self.drain())
    }

    fn drain(&mut self) -> Vec<Report> {
        let reports = core::mem::take(&mut self.out);
        for rep in &reports {
            let dev = match rep.device {
                Device::Keyboard => &mut self.kbd,
                Device::Tablet => &mut self.tablet,
            };
            dev.push_report(&rep.events)
                .expect("device refused a report");
        }
        reports
    }
}

fn abs(x: i32, y: i32) -> InputEvent {
    InputEvent::PointerAbs {
        x,
        y,
        space: Space::Display,
    }
}

fn left(pressed: bool) -> InputEvent {
    InputEvent::Button {
        button: Button::Left,
        pressed,
    }
}

fn tablet(events: Vec<Event>) -> Report {
    Report {
        device: Device::Tablet,
        events,
    }
}

fn at(x: i32, y: i32) -> Report {
    tablet(vec![
        Event::new(ev::EV_ABS, ev::ABS_X, x),
        Event::new(ev::EV_ABS, ev::ABS_Y, y),
    ])
}

#[test]
fn pointer_and_clicks_inside_the_panel_reach_the_guest_mapped() {
    let mut vm = Vm::presented();
    assert_eq!(
        vm.route(0, abs(100, 100)),
        (Routed::Delivered, vec![at(1, 1)])
    );
    assert_eq!(
        vm.route(0, abs(419, 299)),
        (Routed::Delivered, vec![at(639, 399)])
    );
    assert_eq!(
        vm.route(0, left(true)),
        (
            Routed::Delivered,
            vec![tablet(vec![Event::new(ev::EV_KEY, ev::BTN_LEFT, 1)])]
        )
    );
    // Dragged out of the panel: motion stays with RayOS, the release still arrives.
    assert_eq!(vm.route(0, abs(420, 299)), (Routed::Outside, vec![]));
    assert_eq!(
        vm.route(0, left(false)),
        (
            Routed::Delivered,
            vec![tablet(vec![Event::new(ev::EV_KEY, ev::BTN_LEFT, 0)])]
        )
    );
    // A click outside does not arrive, nor does its release.
    assert_eq!(vm.route(0, left(true)), (Routed::Outside, vec![]));
    assert_eq!(vm.route(0, left(false)), (Routed::Ignored, vec![]));
    let wheel = InputEvent::Wheel {
        vertical: -1,
        horizontal: 2,
    };
    assert_eq!(vm.route(0, wheel), (Routed::Outside, vec![]));
    vm.route(0, abs(200, 200));
    assert_eq!(
        vm.route(0, wheel),
        (
            Routed::Delivered,
            vec![tablet(vec![
                Event::new(ev::EV_REL, ev::REL_WHEEL, -1),
                Event::new(ev::EV_REL, ev::REL_HWHEEL, 2)
            ])]
        )
    );
}

#[test]
fn guest_coordinates_and_relative_motion_stay_on_the_guest_screen() {
    let mut vm = Vm::presented();
    let guest = |x, y| InputEvent::PointerAbs {
        x,
        y,
        space: Space::Guest,
    };
    assert_eq!(vm.route(0, guest(639, 0)).1, vec![at(639, 0)]);
    assert_eq!(vm.route(0, guest(640, 0)).0, Routed::Outside);
    assert_eq!(vm.route(0, guest(-1, 0)).0, Routed::Outside);
    vm.route(0, guest(10, 10));
    let rel = |dx, dy| InputEvent::PointerRel { dx, dy };
    assert_eq!(vm.route(0, rel(-50, 4)).1, vec![at(0, 14)]);
    assert_eq!(vm.route(0, rel(4096, 4096)).1, vec![at(639, 399)]);
}

#[test]
fn keys_arrive_as_evdev_codes_and_hiding_releases_what_is_held() {
    let mut vm = Vm::presented();
    let key = |usage, pressed| InputEvent::Key { usage, pressed };
    let kbd = |code, v| Report {
        device: Device::Keyboard,
        events: vec![Event::new(ev::EV_KEY, code, v)],
    };
    assert_eq!(vm.route(0, key(0xe1, true)).1, vec![kbd(42, 1)]);
    assert_eq!(vm.route(0, key(0x04, true)).1, vec![kbd(30, 1)]);
    assert_eq!(vm.route(0, key(0x04, false)).1, vec![kbd(30, 0)]);
    assert_eq!(vm.route(0, key(0x04, false)).0, Routed::Ignored);
    assert_eq!(vm.route(0, key(0x03, true)).0, Routed::Ignored, "no code");
    vm.route(0, abs(150, 150));
    vm.route(0, left(true));
    vm.route(
        0,
        InputEvent::Button {
            button: Button::Forward,
            pressed: true,
        },
    );
    // Hiding: Shift and both buttons are released; nothing passes afterwards.
    vm.router.set_presentation(None, &mut vm.out);
    assert_eq!(
        vm.drain(),
        vec![
            kbd(42, 0),
            tablet(vec![
                Event::new(ev::EV_KEY, ev::BTN_LEFT, 0),
                Event::new(ev::EV_KEY, ev::BTN_EXTRA, 0)
            ])
        ]
    );
    assert_eq!(
        vm.route(0, key(0x04, true)),
        (Routed::NotInteractive, vec![])
    );
    assert_eq!(vm.route(0, abs(150, 150)), (Routed::NotInteractive, vec![]));
    // Presented but not interactive: nothing either.
    vm.router.set_presentation(Some(panel()), &mut vm.out);
    vm.router.set_interactive(false, &mut vm.out);
    assert_eq!(vm.route(0, abs(150, 150)), (Routed::NotInteractive, vec![]));
    vm.router.set_interactive(true, &mut vm.out);
    assert_eq!(vm.route(0, abs(150, 150)).0, Routed::Delivered);
}

#[test]
fn a_gaze_dwell_clicks_at_the_dwelled_point() {
    let mut vm = Vm::presented();
    let mut t = 0;
    let mut clicks = Vec::new();
    let mut last = None;
    // Glide from outside the panel to (300, 200) on the display (guest (400, 200)),
    // then rest there with a little jitter.
    let path = (0..=20)
        .map(|i| (50 + i * 12, 150 + i * 2 + (i % 2)))
        .chain((0..30).map(|i| (300 + (i % 3) - 1, 200 + (i % 2))));
    for (x, y) in path {
        let (_, reports) = vm.route(t, InputEvent::Gaze { x, y });
        for r in reports {
            if r.events[0].code == ev::BTN_LEFT {
                clicks.push((r.events[0].value, last));
            } else {
                last = Some((r.events[0].value, r.events[1].value));
            }
        }
        t += 10;
    }
    assert_eq!(clicks.len(), 2, "{clicks:?}");
    assert_eq!(clicks[0].0, 1);
    assert_eq!(clicks[1].0, 0);
    let (x, y) = clicks[0].1.unwrap();
    assert!(
        (396..=404).contains(&x) && (198..=204).contains(&y),
        "{x},{y}"
    );
    // Gaze outside the panel moves nothing in the guest.
    assert_eq!(
        vm.route(t, InputEvent::Gaze { x: 900, y: 700 }).0,
        Routed::Outside
    );
}
