//! QEMU integration tests: they boot RayOS EL2 with real guests through the
//! `xtask` library (the same code `cargo xtask run` uses). This library holds
//! what the test files share; the tests are in `tests/*.rs`.
#![forbid(unsafe_code)]

pub mod procfs;

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use xtask::run::{run_captured, RunOptions, RunOutcome, CONSOLE_TAIL_LINES};
use xtask::Layout;

static BOOT: Mutex<()> = Mutex::new(());

/// Serialises QEMU boots within a test binary: they share build outputs and
/// bundles, and two emulated machines on a small host only slow each other
/// down. (Builds are additionally serialised across processes by xtask's
/// build lock.) A test that panicked while holding it does not block the rest.
pub fn boot_lock() -> MutexGuard<'static, ()> {
    BOOT.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The console tail of `outcome`, framed for a failure message; after a timeout,
/// where each emulated CPU was.
pub fn console_tail(outcome: &RunOutcome) -> String {
    let mut text = format!(
        "--- last {CONSOLE_TAIL_LINES} console lines ({:?} after {:.1} s) ---\n{}\n---",
        outcome.ending,
        outcome.elapsed.as_secs_f64(),
        outcome.console_tail(CONSOLE_TAIL_LINES)
    );
    if let Some(cpus) = &outcome.cpus_at_timeout {
        text.push_str(&format!("\n{cpus}\n---"));
    }
    text
}

/// Builds what `o` needs and boots it captured; set-up failures fail the test.
pub fn boot(o: &RunOptions) -> RunOutcome {
    run_captured(&Layout::detect(), o)
        .unwrap_or_else(|e| panic!("could not build, fetch, prepare the system disk or boot: {e}"))
}

/// The value after `key=` on the first console line that starts with it.
pub fn console_value<'a>(console: &'a str, key: &str) -> Option<&'a str> {
    console
        .lines()
        .map(|l| l.trim_end_matches('\r'))
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// The status lines (`ok: …` / `error: …`) of monitor commands on a console,
/// in order: the hypervisor monitor's (`[el2 monitor] ok: …`) and, beside the
/// authority partition, its shell's (a line of its own, after the prompts of
/// lines typed ahead of them: `rayos> ok: …`), without its answers to
/// `attach` (a script's `attach` and every `monitor` line after it re-attach).
pub fn statuses(console: &str) -> Vec<&str> {
    console.lines().filter_map(line_status).collect()
}

/// The console line index of the first status line (as [`statuses`] reads
/// them) that is `status`.
pub fn status_position(console: &str, status: &str) -> Option<usize> {
    console.lines().position(|l| line_status(l) == Some(status))
}

/// The status a console line carries: a monitor line without its prefix, or a
/// shell answer without the prompts before it (not the shell's attach answers).
fn line_status(line: &str) -> Option<&str> {
    let l = line.trim_end_matches('\r');
    let mut s = l
        .strip_prefix(monitor::LINE_PREFIX)
        .and_then(|r| r.strip_prefix(' '))
        .unwrap_or(l);
    while let Some(rest) = s.strip_prefix("rayos> ") {
        s = rest;
    }
    ((s.starts_with("ok: ") && !s.starts_with("ok: attached to vm ")) || s.starts_with("error: "))
        .then_some(s)
}

/// Writes a `--script` file named `name` under the workspace's target directory.
pub fn script(name: &str, text: &str) -> PathBuf {
    let dir = Layout::detect().out.join("test-scripts");
    std::fs::create_dir_all(&dir).expect("create target/test-scripts");
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write a test script");
    path
}

/// Guest input as the tests see it: QMP `input-send-event` steps for QEMU's
/// physical tablet, and the `struct input_event` streams a guest dumps with
/// `od -A n -v -t x1` between two marker lines.
pub mod evdev {
    use xtask::qemu::DEFAULT_DISPLAY;

    /// QEMU's absolute axes span 0..=0x7fff (INPUT_EVENT_ABS_MAX).
    pub const ABS_SPAN: i64 = 0x8000;

    /// evdev numbers (linux/input-event-codes.h).
    pub const EV_KEY: u16 = 1;
    pub const EV_ABS: u16 = 3;
    pub const ABS_X: u16 = 0;
    pub const ABS_Y: u16 = 1;
    pub const BTN_LEFT: u16 = 0x110;
    /// A display pixel's centre on QEMU's absolute axis for a `len`-pixel side.
    pub fn abs(px: i32, len: u32) -> i64 {
        (2 * i64::from(px) + 1) * ABS_SPAN / (2 * i64::from(len))
    }

    /// The guest pixel the centre of display pixel `px` shows, on an axis where the
    /// panel starts at `origin` and shows `guest` pixels in `len`.
    pub fn mapped(px: i32, origin: i32, guest: u32, len: u32) -> i64 {
        (2 * i64::from(px) + 1 - 2 * i64::from(origin)) * i64::from(guest) / (2 * i64::from(len))
    }

    pub fn qmp_move(x: i32, y: i32) -> String {
        let (w, h) = DEFAULT_DISPLAY;
        format!(
            "qmp input-send-event {{\"events\": [{{\"type\": \"abs\", \"data\": {{\"axis\": \"x\", \"value\": {}}}}}, {{\"type\": \"abs\", \"data\": {{\"axis\": \"y\", \"value\": {}}}}}]}}\n",
            abs(x, w),
            abs(y, h)
        )
    }

    pub fn qmp_button(down: bool) -> String {
        format!(
            "qmp input-send-event {{\"events\": [{{\"type\": \"btn\", \"data\": {{\"down\": {down}, \"button\": \"left\"}}}}]}}\n"
        )
    }

    /// QMP key events on the physical keyboard, in order: (QEMU qcode, down).
    pub fn qmp_keys(keys: &[(&str, bool)]) -> String {
        let events: Vec<String> = keys
            .iter()
            .map(|(qcode, down)| {
                format!(
                    "{{\"type\": \"key\", \"data\": {{\"down\": {down}, \"key\": {{\"type\": \"qcode\", \"data\": \"{qcode}\"}}}}}}"
                )
            })
            .collect();
        format!(
            "qmp input-send-event {{\"events\": [{}]}}\n",
            events.join(", ")
        )
    }

    /// One `struct input_event` (arm64: 16 bytes of time, type, code, value).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct Event {
        pub ty: u16,
        pub code: u16,
        pub value: i32,
    }

    /// The events dumped between `begin` and `end` (`od -t x1` lines).
    pub fn events(console: &str, begin: &str, end: &str) -> Option<Vec<Event>> {
        let mut lines = console.lines().map(|l| l.trim_end_matches('\r'));
        lines.find(|l| l.trim() == begin)?;
        let mut bytes = Vec::new();
        for l in lines {
            if l.trim() == end {
                let events = bytes
                    .chunks_exact(24)
                    .map(|r: &[u8]| Event {
                        ty: u16::from_le_bytes([r[16], r[17]]),
                        code: u16::from_le_bytes([r[18], r[19]]),
                        value: i32::from_le_bytes([r[20], r[21], r[22], r[23]]),
                    })
                    .collect();
                return Some(events);
            }
            let words: Vec<&str> = l.split_whitespace().collect();
            if !words.is_empty() && words.iter().all(|w| w.len() == 2) {
                if let Ok(b) = words
                    .iter()
                    .map(|w| u8::from_str_radix(w, 16))
                    .collect::<Result<Vec<u8>, _>>()
                {
                    bytes.extend(b);
                }
            }
        }
        None
    }

    /// The tablet's presses of the left button, each with the pointer position the
    /// guest had then.
    pub fn left_presses(tablet: &[Event]) -> Vec<(i64, i64)> {
        let (mut x, mut y) = (-1, -1);
        let mut presses = Vec::new();
        for e in tablet {
            match (e.ty, e.code) {
                (EV_ABS, ABS_X) => x = i64::from(e.value),
                (EV_ABS, ABS_Y) => y = i64::from(e.value),
                (EV_KEY, BTN_LEFT) if e.value == 1 => presses.push((x, y)),
                _ => {}
            }
        }
        presses
    }

    pub fn near(got: (i64, i64), want: (i64, i64)) -> bool {
        (got.0 - want.0).abs() <= 1 && (got.1 - want.1).abs() <= 1
    }
}
