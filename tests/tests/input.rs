//! Input end to end on one Linux guest: its virtio-input keyboard and tablet
//! (`/proc/bus/input/devices`), QEMU's physical tablet driven by QMP
//! `input-send-event` and routed by the hypervisor through the inverse of the
//! display's placement, and the monitor's `input …` commands.
//!
//! The guest records its tablet's and keyboard's evdev streams (`cat
//! /dev/input/eventN` into files) until the script says `go`, then dumps them with
//! `od`; the test decodes the 24-byte `struct input_event`s. The guest's shell
//! reads the serial console, not a VT (the test guest has no console on its
//! framebuffer keyboard), so typed text is checked in the keyboard's evdev stream,
//! not as a command's output.
//!
//! With the VM as a panel at half scale, a QMP move and click inside the panel
//! arrive at the mapped guest pixel (within ±1); a click outside the panel, and
//! one while the VM is hidden, do not arrive; a gaze held still clicks at the
//! dwelled point; `input type` arrives as the US layout's key codes, and not while
//! the VM is not interactive; presented as a quad, a QMP click arrives at the guest
//! pixel the quad's projective inverse names (within ±1); the physical keyboard
//! types into the VM last clicked, except for RayOS's reserved ctrl+alt+home,
//! which the partition takes (it leaves the VM) and the guest never sees. The
//! hypervisor takes
//! the physical tablet and keyboard by their interrupts (its boot log says so).
//! All beside the authority partition, whose shell runs the `monitor` lines.

use std::time::Duration;

use integration_tests::evdev::{
    events, left_presses, mapped, near, qmp_button, qmp_keys, qmp_move, BTN_LEFT, EV_KEY,
};
use integration_tests::{boot, boot_lock, console_tail, script, statuses};
use xtask::qemu::DEFAULT_DISPLAY;
use xtask::run::{Ending, Guest, RunOptions};
use xtask::Layout;

/// Budget of the boot and the script.
const TIMEOUT: Duration = Duration::from_secs(300);
/// This file's system disk, under the workspace's `target/`.
const SYSTEM_DISK: &str = "test-disks/input-tests.img";
/// The panel: at (X, Y), half the guest's 640x480.
const PANEL: (i32, i32, u32, u32) = (100, 50, 320, 240);
/// Where QMP moves and clicks (display pixels, inside the panel).
const INSIDE: (i32, i32) = (260, 170);
/// Where QMP clicks outside the panel.
const OUTSIDE: (i32, i32) = (50, 30);
/// Where the gaze path starts (one sample, inside the panel: no click there).
const GAZE_START: (i32, i32) = (150, 80);
/// Where the gaze dwells (display pixels, inside the panel), and how long.
const GAZE: (i32, i32) = (300, 150);
const GAZE_MS: u32 = 1500;
/// The quad of the last click: the guest screen's corners (top-left, top-right,
/// bottom-right, bottom-left) on the display, and the display pixel clicked.
const QUAD: [(i32, i32); 4] = [(200, 100), (900, 180), (880, 560), (220, 700)];
const QUAD_CLICK: (i32, i32) = (550, 380);
/// `echo hi` then Enter on a US keyboard: E C H O SPACE H I ENTER.
const ECHO_HI: [u16; 8] = [18, 46, 35, 24, 57, 35, 23, 28];
/// evdev codes: A, Left Ctrl, Left Alt, Home.
const KEY_A: u16 = 30;
const KEY_LEFTCTRL: u16 = 29;
const KEY_LEFTALT: u16 = 56;
const KEY_HOME: u16 = 102;

/// The guest: list its input devices, record both evdev streams, dump them on `go`.
/// `input-ready` waits until both readers hold their device open: an event that
/// arrives before a reader opens it is not queued for that reader (a click sent
/// right after the line was lost that way).
const GUEST_CMD: &str = r#"grep Name /proc/bus/input/devices
for e in /sys/class/input/event*;do n=$(cat $e/device/name);d=/tmp/${e##*/};mknod $d c $(cut -d: -f1 $e/dev) $(cut -d: -f2 $e/dev);case "$n" in *tablet*) t=$d;; *keyboard*) k=$d;; esac;done
cat $t>/tmp/t.bin& a=$!;cat $k>/tmp/k.bin& b=$!
until [ "$(ls -l /proc/$a/fd /proc/$b/fd 2>/dev/null|grep -c /tmp/event)" = 2 ];do sleep 0.1;done
echo input-ready
read x
sleep 1;kill $a $b
echo tablet-begin;od -A n -v -t x1 /tmp/t.bin;echo tablet-end
echo keyboard-begin;od -A n -v -t x1 /tmp/k.bin;echo keyboard-end
sleep 3600"#;

#[test]
fn pointer_clicks_gaze_and_typing_reach_the_guest_only_where_and_while_they_should() {
    let _boot = boot_lock();
    let layout = Layout::detect();
    let (gw, gh) = vgpu::present::DEFAULT_MODE;
    let (px, py, pw, ph) = PANEL;
    let mut o = RunOptions::headless(Guest::Linux, TIMEOUT);
    o.system_disk = Some(layout.out.join(SYSTEM_DISK));
    o.guest_cmd = Some(GUEST_CMD.into());
    // Beside the authority partition, the default configuration: its boot
    // sequence leaves the VM hidden and not interactive, the `monitor` lines
    // go to its shell, and `go` is typed into the guest's console after
    // `attach linux`.
    o.authority = true;
    let text = format!(
        "expect input-ready\n\
         monitor display present linux panel {px} {py} {pw} {ph}\n\
         monitor input interactive linux on\n\
         {inside}{down}{up}sleep 1\n\
         {outside}{down}{up}sleep 1\n\
         monitor display hide linux\n\
         {inside}{down}{up}sleep 1\n\
         monitor display present linux panel {px} {py} {pw} {ph}\n\
         monitor input gaze linux {sx} {sy}\n\
         monitor input gaze linux {gx} {gy} {GAZE_MS}\n\
         monitor input interactive linux off\n\
         monitor input type linux \"x\"\n\
         monitor input interactive linux on\n\
         monitor input type linux \"echo hi\\n\"\n\
         monitor display present linux quad {quad}\n\
         {quad_click}{down}{up}sleep 2\n\
         {key_a}sleep 1\n\
         {leave_key}\
         expect rayos: ctrl\\+alt\\+home: vm linux hidden; it keeps running\n\
         sleep 1\n\
         attach linux\n\
         send go\n\
         expect keyboard-end\n",
        quad = QUAD.map(|(x, y)| format!("{x} {y}")).join(" "),
        quad_click = qmp_move(QUAD_CLICK.0, QUAD_CLICK.1),
        key_a = qmp_keys(&[("a", true), ("a", false)]),
        leave_key = qmp_keys(&[
            ("ctrl", true),
            ("alt", true),
            ("home", true),
            ("home", false),
            ("alt", false),
            ("ctrl", false)
        ]),
        inside = qmp_move(INSIDE.0, INSIDE.1),
        outside = qmp_move(OUTSIDE.0, OUTSIDE.1),
        down = qmp_button(true),
        up = qmp_button(false),
        sx = GAZE_START.0,
        sy = GAZE_START.1,
        gx = GAZE.0,
        gy = GAZE.1,
    );
    o.script = Some(script("input.script", &text));
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    let console = &outcome.console;
    assert_eq!(outcome.ending, Ending::ScriptDone, "\n{tail}");
    for name in ["RayOS virtio keyboard", "RayOS virtio tablet"] {
        assert!(
            console.contains(&format!("N: Name=\"{name}\"")),
            "/proc/bus/input/devices lacks {name}\n{tail}"
        );
    }
    // QEMU's physical devices have interrupts: el2 takes them by interrupt (the
    // quad click below, with no presentation change after it, arrives only so).
    for name in ["tablet", "keyboard"] {
        assert!(
            console
                .lines()
                .any(|l| l.contains(&format!("physical input: virtio {name} at"))
                    && l.contains("taken by interrupt")),
            "the physical {name} is not taken by its interrupt\n{tail}"
        );
    }
    let tablet = events(console, "tablet-begin", "tablet-end").expect("the tablet dump");
    let keyboard = events(console, "keyboard-begin", "keyboard-end").expect("the keyboard dump");

    // Exactly three clicks arrive: the QMP one inside the panel, the gaze's dwell
    // and the QMP one on the quad; the one outside and the one while hidden do not.
    let at = |(x, y): (i32, i32)| (mapped(x, px, gw, pw), mapped(y, py, gh, ph));
    let presses = left_presses(&tablet);
    assert_eq!(
        presses.len(),
        3,
        "left presses {presses:?}; tablet {tablet:?}\n{tail}"
    );
    assert!(
        near(presses[0], at(INSIDE)),
        "the QMP click at {:?} arrived at {:?}, want {:?} ±1",
        INSIDE,
        presses[0],
        at(INSIDE)
    );
    assert!(
        near(presses[1], at(GAZE)),
        "the dwell click at {:?} arrived at {:?}, want {:?} ±1",
        GAZE,
        presses[1],
        at(GAZE)
    );
    // Through the quad: the guest pixel its projective inverse names.
    let (dw, dh) = DEFAULT_DISPLAY;
    let placement = compositor::Placement::Transform(
        compositor::Transform::from_quad(gw, gh, QUAD).expect("the quad is not degenerate"),
    );
    let map = input::PointerMap::new(&placement, gw, gh, compositor::Rect::new(0, 0, dw, dh))
        .expect("the quad's map");
    let (qx, qy) = map
        .to_guest(QUAD_CLICK.0, QUAD_CLICK.1)
        .expect("the click is on the quad");
    let want = (i64::from(qx), i64::from(qy));
    assert!(
        near(presses[2], want),
        "the click at {QUAD_CLICK:?} on the quad arrived at {:?}, want {want:?} ±1",
        presses[2]
    );
    let releases = tablet
        .iter()
        .filter(|e| (e.ty, e.code, e.value) == (EV_KEY, BTN_LEFT, 0))
        .count();
    assert_eq!(releases, 3, "every press released\n{tail}");

    // Typed while interactive only: `echo hi` and Enter, each key down then up;
    // then the physical keyboard's `a` (the VM has the keyboard since the quad
    // click); then of RayOS's ctrl+alt+home only the modifiers and their
    // releases (by the leave hiding the VM, or the physical ones if they came
    // first), never Home.
    let keys: Vec<(u16, i32)> = keyboard
        .iter()
        .filter(|e| e.ty == EV_KEY)
        .map(|e| (e.code, e.value))
        .collect();
    let mut want: Vec<(u16, i32)> = ECHO_HI.iter().flat_map(|&k| [(k, 1), (k, 0)]).collect();
    want.extend([(KEY_A, 1), (KEY_A, 0), (KEY_LEFTCTRL, 1), (KEY_LEFTALT, 1)]);
    assert!(
        keys.len() == want.len() + 2 && keys.starts_with(&want),
        "keys {keys:?}, want {want:?} then both modifiers up\n{tail}"
    );
    let mut released = keys[want.len()..].to_vec();
    released.sort();
    assert_eq!(released, [(KEY_LEFTCTRL, 0), (KEY_LEFTALT, 0)], "\n{tail}");
    assert!(
        !keyboard.iter().any(|e| e.code == KEY_HOME),
        "RayOS's key reached the guest\n{tail}"
    );
    assert!(
        console.contains("rayos: ctrl+alt+home is RayOS's: it leaves the presented VM"),
        "the partition did not reserve its key\n{tail}"
    );

    let answers: Vec<&str> = statuses(console)
        .into_iter()
        .filter(|s| s.starts_with("ok: vm linux: "))
        .collect();
    assert!(
        answers
            .iter()
            .any(|s| s.contains("2 events: 0 delivered, 2 not interactive")),
        "typing while not interactive: {answers:?}"
    );
    assert!(
        answers
            .iter()
            .any(|s| s.contains("16 events: 16 delivered")),
        "typing `echo hi`: {answers:?}"
    );
}
