//! The `rayos> ` shell on the serial console (docs/console.md).
//!
//! Bytes go through the monitor's line editor ([`monitor::Input`]: backspace,
//! Ctrl-U, terminal escape sequences skipped, lines of at most
//! [`monitor::LINE_MAX`] bytes). A line is one of the shell's own commands
//! (`present`, `leave`, `vm start`, `input type` with unquoted text,
//! `input script`, `input kept`, `input reserve`, `script`, `scripts`,
//! `capture`, `frames`, `attach`, `help`) or else a monitor
//! command run by [`monitor::execute`] over [`Authority`], with the monitor's
//! status line. `attach NAME` hands the serial line to the VM's console until
//! `Ctrl-]` ([`monitor::ESCAPE`]).

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use authority_abi::call::{Rect, VmId, VM_PRESENTED};
use authority_abi::input::{Chord, InputEvent};
use authority_abi::ring::Event;
use input::run::RegionHasher;
use input::script::Script;
use monitor::input::Mode;
use monitor::{execute, After, Input, Status, Step, ESCAPE};

use crate::boot;
use crate::policy::PAUSE_ON_HIDE;
use crate::{Authority, Terminal};

/// The prompt.
pub const PROMPT: &str = "rayos> ";
/// The prompt while a `script NAME` here-document is being typed.
pub const SCRIPT_PROMPT: &str = "script> ";
/// The line that ends a here-document.
pub const SCRIPT_END: &str = "end";
/// Most scripts the shell holds (built-in ones included).
pub const SCRIPTS_MAX: usize = 16;
/// Longest script name.
pub const SCRIPT_NAME_MAX: usize = 32;

/// The shell's own commands, in one line (then the monitor's `help`).
pub const SHELL_HELP: &str = "shell: present NAME | leave NAME | vm start NAME | \
input type NAME TEXT | input gaze NAME X Y [MS] | input script NAME FILE | \
script FILE (lines, then `end`) | scripts | capture NAME [X Y W H] | frames NAME | \
input kept | input reserve [CHORD|off] | attach NAME (Ctrl-] returns)";

/// The chord of the physical keyboard RayOS reserves at start ([`Shell::reserve`]):
/// pressed in a presented VM, it leaves every presented VM instead of reaching
/// it.
pub const LEAVE_KEY: &str = "ctrl+alt+home";

/// Scripts built into the authority image: (name, text).
pub const BUILTIN_SCRIPTS: &[(&str, &str)] = &[
    ("hello", "# types a greeting on the guest's console\ntype \"echo hello from rayos\\n\"\n"),
    (
        "console2",
        "# switches to the second virtual console and waits for it to draw\nkey ctrl+alt+f2\nwait-change 0 0 640 16 timeout 5000\n",
    ),
];

/// The physical input RayOS kept (`Event::Input`): counts by kind, and the last.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct KeptInput {
    keys: u64,
    pointer: u64,
    buttons: u64,
    other: u64,
    last: Option<InputEvent>,
}

impl KeptInput {
    fn add(&mut self, e: InputEvent) {
        match e {
            InputEvent::Key { .. } => self.keys += 1,
            InputEvent::PointerAbs { .. } | InputEvent::PointerRel { .. } => self.pointer += 1,
            InputEvent::Button { .. } => self.buttons += 1,
            InputEvent::Wheel { .. } | InputEvent::Gaze { .. } => self.other += 1,
        }
        self.last = Some(e);
    }
}

impl core::fmt::Display for KeptInput {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let n = self.keys + self.pointer + self.buttons + self.other;
        write!(
            f,
            "rayos kept {n} input event(s) no guest took: {} key, {} pointer, {} button, {} other",
            self.keys, self.pointer, self.buttons, self.other
        )?;
        match self.last {
            Some(InputEvent::Key { usage, pressed }) => {
                write!(
                    f,
                    "; last: key {usage:#04x} {}",
                    if pressed { "down" } else { "up" }
                )
            }
            Some(InputEvent::PointerAbs { x, y, .. }) => write!(f, "; last: pointer at {x} {y}"),
            Some(InputEvent::PointerRel { dx, dy }) => write!(f, "; last: pointer by {dx} {dy}"),
            Some(InputEvent::Button { button, pressed }) => write!(
                f,
                "; last: button {button:?} {}",
                if pressed { "down" } else { "up" }
            ),
            Some(InputEvent::Wheel {
                vertical,
                horizontal,
            }) => {
                write!(f, "; last: wheel {vertical} {horizontal}")
            }
            Some(InputEvent::Gaze { x, y }) => write!(f, "; last: gaze at {x} {y}"),
            None => Ok(()),
        }
    }
}

/// Bytes of guest console input that wait for its UART, at most.
const PENDING_MAX: usize = 4096;

/// The shell.
pub struct Shell {
    input: Input,
    /// The VM whose console the serial line is attached to.
    attached: Option<String>,
    /// Console bytes typed while attached that the VM has not taken yet.
    pending: Vec<u8>,
    /// A `script NAME` here-document being typed: its name and text.
    heredoc: Option<(String, String)>,
    /// User-defined scripts (name, text); the built-in ones are [`BUILTIN_SCRIPTS`].
    scripts: Vec<(String, String)>,
    /// The script last started on each VM (VM, script), for its end's line.
    started: Vec<(String, String)>,
    /// Per VM id: FrameReady events seen, and the last one's frame and damage.
    frames: Vec<(VmId, u64, u64, Rect)>,
    /// The physical input no guest took, which the hypervisor handed to RayOS.
    kept: KeptInput,
    /// The chord of the physical keyboard reserved for RayOS (it leaves the
    /// presented VMs).
    reserved: Option<Chord>,
}

impl Default for Shell {
    fn default() -> Self {
        Self::new()
    }
}

fn ok(t: &mut dyn Terminal, text: &str) {
    status(t, &Status::ok(text));
}

fn err(t: &mut dyn Terminal, text: &str) {
    status(t, &Status::error(text));
}

fn status(t: &mut dyn Terminal, s: &Status) {
    t.write(format!("{s}\r\n").as_bytes());
}

/// `TEXT` as the monitor's quoted `"TEXT"` (with its escapes); text already in
/// quotes is kept as typed.
fn quoted(text: &str) -> String {
    if text.starts_with('"') {
        return text.into();
    }
    let mut q = String::from("\"");
    for c in text.chars() {
        if matches!(c, '"' | '\\') {
            q.push('\\');
        }
        q.push(c);
    }
    q.push('"');
    q
}

/// The rest of `line` after `n` blank-separated words.
fn rest_after(line: &str, n: usize) -> &str {
    let mut rest = line.trim_start();
    for _ in 0..n {
        let end = rest
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        rest = rest[end..].trim_start();
    }
    rest
}

impl Shell {
    pub fn new() -> Self {
        let mut input = Input::new();
        // The line editor starts in guest mode; the shell is its other mode.
        input.feed(ESCAPE);
        Self {
            input,
            attached: None,
            pending: Vec::new(),
            heredoc: None,
            scripts: Vec::new(),
            started: Vec::new(),
            frames: Vec::new(),
            kept: KeptInput::default(),
            reserved: None,
        }
    }

    /// Reserves `chord` of the physical keyboard for RayOS (`None`: none), so
    /// that pressing it leaves the presented VMs; answers the line to show.
    pub fn reserve(
        &mut self,
        chord: Option<Chord>,
        ctl: &mut dyn Authority,
    ) -> Result<String, String> {
        ctl.reserve_key(chord).map_err(|e| format!("{e}"))?;
        self.reserved = chord;
        Ok(self.reserved_line())
    }

    /// Reserves [`LEAVE_KEY`] (at start); answers the line to show.
    pub fn reserve_leave_key(&mut self, ctl: &mut dyn Authority) -> String {
        let chord = input::keymap::parse_chord(LEAVE_KEY);
        debug_assert!(chord.is_some(), "LEAVE_KEY is a chord");
        self.reserve(chord, ctl)
            .unwrap_or_else(|e| format!("{LEAVE_KEY} is not reserved for RayOS: {e}"))
    }

    fn reserved_line(&self) -> String {
        match self.reserved {
            Some(c) => format!(
                "{} is RayOS's: it leaves the presented VM",
                input::keymap::chord_name(c)
            ),
            None => String::from("no key is reserved for RayOS"),
        }
    }

    /// The VM the console is attached to.
    pub fn attached(&self) -> Option<&str> {
        self.attached.as_deref()
    }

    /// The text of script `name` (user-defined ones first).
    pub fn script(&self, name: &str) -> Option<&str> {
        self.scripts
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
            .or_else(|| {
                BUILTIN_SCRIPTS
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, t)| *t)
            })
    }

    /// The prompt for the current mode.
    pub fn prompt(&self, t: &mut dyn Terminal) {
        if self.attached.is_none() {
            t.write(if self.heredoc.is_some() {
                SCRIPT_PROMPT.as_bytes()
            } else {
                PROMPT.as_bytes()
            });
        }
    }

    /// Takes one byte from the serial line; answers what the caller must do
    /// after (power the host off after `host shutdown` said ok).
    pub fn feed(&mut self, b: u8, ctl: &mut dyn Authority, t: &mut dyn Terminal) -> After {
        match self.input.feed(b) {
            Step::Guest | Step::GuestDropped => {
                let mut buf = [0u8; 64];
                let n = self.input.take_guest(&mut buf);
                if self.pending.len() + n <= PENDING_MAX {
                    self.pending.extend_from_slice(&buf[..n]);
                }
                self.flush(ctl);
            }
            Step::Entered => {
                // Ctrl-] while attached: back to the shell.
                if let Some(vm) = self.attached.take() {
                    self.pending.clear();
                    t.write(format!("\r\n[detached from vm {vm}]\r\n").as_bytes());
                }
                self.prompt(t);
            }
            Step::Left => {
                // Ctrl-] in the shell: stay (there is nothing to return to).
                self.input.feed(ESCAPE);
                t.write(b"\r\n");
                self.heredoc = None;
                self.prompt(t);
            }
            Step::Echo(c) => t.write(&[c]),
            Step::Erase => t.write(b"\x08 \x08"),
            Step::Kill(n) => {
                for _ in 0..n {
                    t.write(b"\x08 \x08");
                }
            }
            Step::Empty => {
                t.write(b"\r\n");
                if let Some((_, text)) = &mut self.heredoc {
                    text.push('\n');
                }
                self.prompt(t);
            }
            Step::Overlong => {
                t.write(b"\r\n");
                err(
                    t,
                    &format!("line longer than {} characters", monitor::LINE_MAX),
                );
                self.prompt(t);
            }
            Step::Line(line) => {
                t.write(b"\r\n");
                let after = self.line(line.as_str(), ctl, t);
                self.prompt(t);
                return after;
            }
            Step::Ignored => {}
        }
        After::Nothing
    }

    /// While attached: the VM's console output to the terminal, and typed bytes
    /// its UART had no room for yet. Call it whenever the serial line is idle.
    pub fn poll(&mut self, ctl: &mut dyn Authority, t: &mut dyn Terminal) {
        let Some(vm) = self.attached.clone() else {
            return;
        };
        self.flush(ctl);
        match ctl.console_read(&vm) {
            Ok(out) => t.write(&out),
            Err(e) => {
                self.attached = None;
                self.input.feed(ESCAPE);
                t.write(b"\r\n");
                err(t, &format!("attach {vm} ended: {e}"));
                self.prompt(t);
            }
        }
    }

    fn flush(&mut self, ctl: &mut dyn Authority) {
        let Some(vm) = &self.attached else {
            return;
        };
        if self.pending.is_empty() {
            return;
        }
        if let Ok(n) = ctl.console_write(vm, &self.pending) {
            self.pending.drain(..n.min(self.pending.len()));
        }
    }

    /// Runs one line (the caller has shown it).
    pub fn line(&mut self, line: &str, ctl: &mut dyn Authority, t: &mut dyn Terminal) -> After {
        if let Some((name, text)) = &mut self.heredoc {
            if line.trim() != SCRIPT_END {
                text.push_str(line);
                text.push('\n');
                return After::Nothing;
            }
            let (name, text) = (name.clone(), core::mem::take(text));
            self.heredoc = None;
            match Script::parse(text.as_bytes()) {
                Ok(s) => {
                    self.scripts.retain(|(n, _)| *n != name);
                    self.scripts.push((name.clone(), text));
                    ok(t, &format!("script {name} saved ({} steps)", s.steps.len()));
                }
                Err(e) => err(
                    t,
                    &format!("script {name} refused: line {}: {:?}", e.line, e.kind),
                ),
            }
            return After::Nothing;
        }
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        match words.as_slice() {
            ["help"] => {
                ok(t, SHELL_HELP);
                status(t, &execute("help", ctl).status);
            }
            ["present", vm] => match boot::present(ctl, vm) {
                Ok(()) => ok(t, &format!("vm {vm} presented fullscreen, interactive")),
                Err(e) => err(t, &e),
            },
            ["leave", vm] => match leave(vm, ctl) {
                Ok(text) => ok(t, &text),
                Err(text) => err(t, &text),
            },
            ["vm", "start", vm] => match ctl.start(vm) {
                Ok(()) => ok(t, &format!("vm {vm} started")),
                Err(e) => err(t, &format!("{e}")),
            },
            ["input", "type", vm, _, ..] => {
                let text = quoted(rest_after(line, 3));
                let r = execute(&format!("input type {vm} {text}"), ctl);
                status(t, &r.status);
            }
            ["input", "script", vm, file] => self.run_script(vm, file, ctl, t),
            ["capture", vm, rest @ ..] => capture(vm, rest, ctl, t),
            ["frames", vm] => {
                let Some(id) = ctl
                    .entries()
                    .into_iter()
                    .find(|e| e.name() == Some(vm))
                    .map(|e| e.id)
                else {
                    return {
                        err(t, &format!("no VM named '{vm}' (see `vm list`)"));
                        After::Nothing
                    };
                };
                match self.frames.iter().find(|f| f.0 == id) {
                    Some(&(_, n, frame, d)) => ok(
                        t,
                        &format!(
                            "vm {vm}: {n} frame-ready events, last frame {frame} (damage {},{} {}x{})",
                            d.x, d.y, d.w, d.h
                        ),
                    ),
                    None => ok(t, &format!("vm {vm}: no frame-ready events")),
                }
            }
            ["input", "kept"] => ok(t, &self.kept.to_string()),
            ["input", "reserve"] => ok(t, &self.reserved_line()),
            ["input", "reserve", spec] => {
                let chord = match *spec {
                    "off" => None,
                    spec => match input::keymap::parse_chord(spec) {
                        Some(c) => Some(c),
                        None => {
                            err(t, &format!("`{spec}` is not a chord: modifiers (ctrl, shift, alt, meta), then one key, joined by +"));
                            return After::Nothing;
                        }
                    },
                };
                match self.reserve(chord, ctl) {
                    Ok(line) => ok(t, &line),
                    Err(e) => err(t, &e),
                }
            }
            ["script", name] => {
                let good = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-');
                if name.len() > SCRIPT_NAME_MAX || !name.bytes().all(good) {
                    err(
                        t,
                        &format!("bad script name: 1 to {SCRIPT_NAME_MAX} of A-Z a-z 0-9 . _ -"),
                    );
                } else if self.scripts.len() + BUILTIN_SCRIPTS.len() >= SCRIPTS_MAX
                    && self.script(name).is_none()
                {
                    err(t, &format!("the shell holds at most {SCRIPTS_MAX} scripts"));
                } else if BUILTIN_SCRIPTS.iter().any(|(n, _)| n == name) {
                    err(t, &format!("script {name} is built in"));
                } else {
                    self.heredoc = Some(((*name).into(), String::new()));
                    t.write(format!("type the script, then a line `{SCRIPT_END}`\r\n").as_bytes());
                }
            }
            ["scripts"] => {
                let mut names: Vec<&str> = BUILTIN_SCRIPTS.iter().map(|(n, _)| *n).collect();
                names.extend(self.scripts.iter().map(|(n, _)| n.as_str()));
                ok(t, &format!("scripts: {}", names.join(", ")));
            }
            ["attach", vm] => {
                if !ctl.list().iter().any(|v| v.name == *vm) {
                    err(t, &format!("no VM named '{vm}' (see `vm list`)"));
                } else {
                    self.attached = Some((*vm).into());
                    self.pending.clear();
                    // The line editor's guest mode: bytes go to the VM.
                    self.input.feed(ESCAPE);
                    ok(
                        t,
                        &format!("attached to vm {vm}'s console; Ctrl-] returns to the shell"),
                    );
                    debug_assert_eq!(self.input.mode(), Mode::Guest);
                }
            }
            _ => {
                let r = execute(line, ctl);
                status(t, &r.status);
                return r.after;
            }
        }
        After::Nothing
    }

    fn run_script(&mut self, vm: &str, file: &str, ctl: &mut dyn Authority, t: &mut dyn Terminal) {
        let Some(text) = self.script(file).map(String::from) else {
            return err(t, &format!("no script named '{file}' (see `scripts`)"));
        };
        let s = match Script::parse(text.as_bytes()) {
            Ok(s) => s,
            Err(e) => {
                return err(
                    t,
                    &format!("script {file} refused: line {}: {:?}", e.line, e.kind),
                )
            }
        };
        match ctl.run_script(vm, text.as_bytes()) {
            Ok(()) => {
                self.started.retain(|(v, _)| v != vm);
                self.started.push((vm.into(), file.into()));
                ok(
                    t,
                    &format!("vm {vm}: script {file} started ({} steps)", s.steps.len()),
                )
            }
            Err(e) => err(t, &format!("{e}")),
        }
    }

    /// Shows what the hypervisor reported (the end of an input script) on lines
    /// of their own, and counts frame-ready events (`frames NAME`); call it
    /// whenever the serial line is idle. State events are taken and dropped
    /// (`vm list` shows states), so the ring never fills.
    pub fn events(&mut self, ctl: &mut dyn Authority, t: &mut dyn Terminal) {
        let events = ctl.events();
        if events.is_empty() {
            return;
        }
        let mut lines = Vec::new();
        for e in events {
            if let Event::Input { event } = e {
                self.kept.add(event);
                continue;
            }
            if let Event::ReservedKey { chord } = e {
                let key = input::keymap::chord_name(chord);
                let presented: Vec<String> = ctl
                    .entries()
                    .iter()
                    .filter(|v| v.flags & VM_PRESENTED != 0)
                    .filter_map(|v| v.name().map(String::from))
                    .collect();
                if presented.is_empty() {
                    lines.push(format!("rayos: {key}: no VM is presented"));
                }
                for vm in presented {
                    let text = leave(&vm, ctl).unwrap_or_else(|e| format!("error: {e}"));
                    lines.push(format!("rayos: {key}: {text}"));
                }
                continue;
            }
            if let Event::FrameReady { vm, frame, damage } = e {
                match self.frames.iter_mut().find(|f| f.0 == vm) {
                    Some(f) => *f = (vm, f.1 + 1, frame, damage),
                    None => self.frames.push((vm, 1, frame, damage)),
                }
                continue;
            }
            let Event::ScriptDone { vm, steps, status } = e else {
                continue;
            };
            let name = ctl
                .entries()
                .into_iter()
                .find(|v| v.id == vm)
                .and_then(|v| v.name().map(String::from))
                .unwrap_or_else(|| format!("#{}", vm.0));
            let script = self
                .started
                .iter()
                .position(|(v, _)| *v == name)
                .map(|i| self.started.remove(i).1)
                .map_or(String::from("(unnamed)"), |s| s);
            let how = match status {
                0 => format!("finished ({steps} steps)"),
                s => {
                    let why = match authority_abi::Status::from_x0(s as u64) {
                        Err(Some(st)) => format!("{st:?}"),
                        _ => format!("status {s}"),
                    };
                    format!("failed after {steps} steps ({why})")
                }
            };
            lines.push(format!("rayos: vm {name}: script {script} {how}"));
        }
        if lines.is_empty() {
            return;
        }
        t.write(b"\r\n");
        for l in lines {
            t.write(format!("{l}\r\n").as_bytes());
        }
        self.prompt(t);
    }
}

/// Hides `vm`, takes its input away and, if its policy says `pause_on_hide`,
/// pauses it; the status text either way.
fn leave(vm: &str, ctl: &mut dyn Authority) -> Result<String, String> {
    boot::background(ctl, vm)?;
    let policy = ctl
        .policy(vm)
        .map_err(|e| format!("vm {vm} hidden, but its policy: {e}"))?;
    if policy & PAUSE_ON_HIDE == 0 {
        return Ok(format!("vm {vm} hidden; it keeps running (policy)"));
    }
    match ctl.pause(vm) {
        Ok(()) => Ok(format!("vm {vm} hidden and paused (pause_on_hide)")),
        Err(e) => Err(format!("vm {vm} hidden, but not paused: {e}")),
    }
}

/// `capture NAME [X Y W H]`: the VM's frame or a region of it, fetched from the
/// hypervisor and shown as its size and region hash (`input::run::region_hash`,
/// what a script's `wait-match` compares).
fn capture(vm: &str, rest: &[&str], ctl: &mut dyn Authority, t: &mut dyn Terminal) {
    let region = match rest {
        [] => None,
        [x, y, w, h] => {
            let coord = |s: &str| {
                s.parse::<i32>()
                    .ok()
                    .filter(|v| v.unsigned_abs() <= authority_abi::call::MAX_COORD as u32)
            };
            let size = |s: &str| {
                s.parse::<u32>()
                    .ok()
                    .filter(|v| (1..=authority_abi::call::MAX_DIM).contains(v))
            };
            match (coord(x), coord(y), size(w), size(h)) {
                (Some(x), Some(y), Some(w), Some(h)) => Some(Rect { x, y, w, h }),
                _ => {
                    return err(
                        t,
                        &format!(
                            "capture: X Y within ±{}, W H 1..={}",
                            authority_abi::call::MAX_COORD,
                            authority_abi::call::MAX_DIM
                        ),
                    )
                }
            }
        }
        _ => return err(t, "usage: capture NAME [X Y W H]"),
    };
    let mut hasher: Option<RegionHasher> = None;
    let mut bytes = 0u64;
    let mut rows = |(w, h): (u32, u32), b: &[u8]| {
        bytes += b.len() as u64;
        hasher.get_or_insert(RegionHasher::new(w, h)).pixels(b);
    };
    match ctl.capture(vm, region, &mut rows) {
        Ok((w, h)) => {
            let hash = hasher.unwrap_or(RegionHasher::new(w, h)).finish();
            let at = region.map_or(String::new(), |r| format!(" at {},{}", r.x, r.y));
            ok(
                t,
                &format!("vm {vm}: captured {w}x{h}{at}, {bytes} bytes, hash {hash:016x}"),
            )
        }
        Err(e) => err(t, &format!("{e}")),
    }
}
