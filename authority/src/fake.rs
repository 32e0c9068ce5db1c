//! The tests' hypervisor: a fake `Hypercall` that runs the real dispatcher
//! (`monitor::abi`) over a model of VMs, and the tests of the shell and the boot
//! sequence driven through it.
extern crate std;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use authority_abi::call;
use authority_abi::input::Chord;
use monitor::abi::{AbiTarget, AuthorityMemory, Dispatcher};
use monitor::abi_client::{AbiControl, Hypercall};
use monitor::command::{DisplayChange, InputAction, SnapshotStore};
use monitor::control::{ShutdownReport, SnapshotInfo, SuspendReport};
use monitor::{After, ControlError, VmControl, VmInfo, VmState};

use crate::boot::{Boot, Outcome, State};
use crate::policy::*;
use crate::shell::{Shell, PROMPT};
use crate::{Authority, Terminal};

/// One VM of the model.
#[derive(Clone, Debug)]
pub struct Vm {
    pub name: String,
    pub state: call::VmState,
    pub policy: u32,
    pub presented: bool,
    pub interactive: bool,
    pub console_out: Vec<u8>,
    pub console_in: Vec<u8>,
}

/// VMs that change only through the ABI; every call logged.
#[derive(Default)]
pub struct Model {
    pub vms: Vec<Vm>,
    pub calls: Vec<String>,
    pub refuse_start: bool,
    /// Script ends the hypervisor reports after the call: (VM, steps, status).
    pub done: Vec<(String, u64, i64)>,
    /// Frames the hypervisor reports after the call: (VM, frame, damage).
    pub frames: Vec<(String, u64, call::Rect)>,
    /// Physical input el2 hands RayOS (`Event::Input`, `Event::ReservedKey`;
    /// reported after the next call, once open).
    pub kept: Vec<authority_abi::ring::Event>,
}

/// The guest frame every VM of the model shows: 8x4 pixels, byte `i` of row `y`
/// is [`frame_byte`].
pub const FRAME: (u32, u32) = (8, 4);

pub fn frame_byte(i: u32, y: u32) -> u8 {
    (i * 5 + y * 31) as u8
}

impl Model {
    pub fn with(vms: &[(&str, call::VmState, u32)]) -> Self {
        Self {
            vms: vms
                .iter()
                .map(|&(n, state, policy)| Vm {
                    name: n.into(),
                    state,
                    policy,
                    presented: false,
                    interactive: true,
                    console_out: Vec::new(),
                    console_in: Vec::new(),
                })
                .collect(),
            calls: Vec::new(),
            refuse_start: false,
            done: Vec::new(),
            frames: Vec::new(),
            kept: Vec::new(),
        }
    }
    fn vm(&mut self, n: &str) -> Result<&mut Vm, ControlError> {
        self.vms
            .iter_mut()
            .find(|v| v.name == n)
            .ok_or_else(|| ControlError::NoSuchVm(n.into()))
    }
}

fn mstate(s: call::VmState) -> VmState {
    match s {
        call::VmState::Running => VmState::Running,
        call::VmState::Paused => VmState::Paused,
        _ => VmState::Off,
    }
}

impl VmControl for Model {
    fn list(&self) -> Vec<VmInfo> {
        self.vms
            .iter()
            .map(|v| VmInfo {
                name: v.name.clone(),
                vcpus: 2,
                state: mstate(v.state),
            })
            .collect()
    }
    fn pause(&mut self, vm: &str) -> Result<(), ControlError> {
        self.calls.push(format!("pause {vm}"));
        let v = self.vm(vm)?;
        if v.state != call::VmState::Running {
            return Err(ControlError::NotRunning {
                vm: vm.into(),
                state: mstate(v.state),
            });
        }
        v.state = call::VmState::Paused;
        Ok(())
    }
    fn resume(&mut self, vm: &str) -> Result<(), ControlError> {
        self.calls.push(format!("resume {vm}"));
        let v = self.vm(vm)?;
        if v.state != call::VmState::Paused {
            return Err(ControlError::NotPaused {
                vm: vm.into(),
                state: mstate(v.state),
            });
        }
        v.state = call::VmState::Running;
        Ok(())
    }
    fn suspend(&mut self, vm: &str) -> Result<SuspendReport, ControlError> {
        self.calls.push(format!("suspend {vm}"));
        self.vm(vm)?.state = call::VmState::Suspended;
        Ok(SuspendReport {
            bytes_written: 4096,
        })
    }
    fn snapshot(
        &mut self,
        vm: &str,
        _: &str,
        _: SnapshotStore,
    ) -> Result<SnapshotInfo, ControlError> {
        Err(ControlError::NoSuchVm(vm.into()))
    }
    fn rollback(&mut self, vm: &str, _: &str) -> Result<(), ControlError> {
        Err(ControlError::NoSuchVm(vm.into()))
    }
    fn snapshots(&self, _: &str) -> Result<Vec<SnapshotInfo>, ControlError> {
        Ok(Vec::new())
    }
    fn delete_snapshot(&mut self, vm: &str, _: &str) -> Result<(), ControlError> {
        Err(ControlError::NoSuchVm(vm.into()))
    }
    fn host_shutdown(&mut self) -> Result<ShutdownReport, ControlError> {
        self.calls.push("shutdown".into());
        Ok(ShutdownReport {
            powered_off: Vec::new(),
            suspended: self.vms.iter().map(|v| v.name.clone()).collect(),
        })
    }
    fn display(&mut self, vm: &str, change: DisplayChange) -> Result<(), ControlError> {
        self.calls.push(format!("display {vm} {change:?}"));
        let v = self.vm(vm)?;
        match change {
            DisplayChange::Present(_) => v.presented = true,
            DisplayChange::Hide => v.presented = false,
            _ => {}
        }
        Ok(())
    }
    fn display_overlay(&mut self, _: &str) -> Result<(), ControlError> {
        Ok(())
    }
    fn display_status(&self) -> Result<String, ControlError> {
        Ok("1280x800".into())
    }
    fn input(&mut self, vm: &str, action: InputAction) -> Result<String, ControlError> {
        self.calls.push(format!("input {vm} {action:?}"));
        let v = self.vm(vm)?;
        match action {
            InputAction::Interactive(on) => {
                v.interactive = on;
                Ok(format!("input {}", if on { "on" } else { "off" }))
            }
            _ if !(v.presented && v.interactive) => Ok("0 events delivered (hidden)".into()),
            _ => Ok("events delivered".into()),
        }
    }
}

impl AbiTarget for Model {
    fn start(&mut self, vm: &str) -> Result<(), ControlError> {
        self.calls.push(format!("start {vm}"));
        if self.refuse_start {
            return Err(ControlError::Failed {
                vm: vm.into(),
                why: "its disk is missing".into(),
            });
        }
        let v = self.vm(vm)?;
        if !matches!(v.state, call::VmState::Off | call::VmState::Suspended) {
            return Err(ControlError::NotRunning {
                vm: vm.into(),
                state: mstate(v.state),
            });
        }
        v.state = call::VmState::Running;
        Ok(())
    }
    fn abi_state(&self, vm: &str) -> Option<call::VmState> {
        Some(self.vms.iter().find(|v| v.name == vm)?.state)
    }
    fn abi_flags(&self, vm: &str) -> u32 {
        let Some(v) = self.vms.iter().find(|v| v.name == vm) else {
            return 0;
        };
        let flag = |on: bool, f: u32| if on { f } else { 0 };
        flag(v.presented, call::VM_PRESENTED) | flag(v.interactive, call::VM_INTERACTIVE)
    }
    fn policy(&self, vm: &str) -> Result<u32, ControlError> {
        self.vms
            .iter()
            .find(|v| v.name == vm)
            .map(|v| v.policy)
            .ok_or_else(|| ControlError::NoSuchVm(vm.into()))
    }
    /// Runs at once: a `wait-match` never matches (FAILED after the steps before
    /// it), any other script finishes.
    fn run_script(&mut self, vm: &str, script: &[u8]) -> Result<(), ControlError> {
        self.calls
            .push(format!("script {vm} {}", String::from_utf8_lossy(script)));
        let s = input::Script::parse(script).map_err(|e| ControlError::Invalid {
            vm: vm.into(),
            why: format!("line {}: {:?}", e.line, e.kind),
        })?;
        let stop = s
            .steps
            .iter()
            .position(|st| matches!(st, input::script::Step::WaitMatch { .. }));
        let ended = match stop {
            Some(n) => (n as u64, authority_abi::Status::Failed as i64),
            None => (s.steps.len() as u64, 0),
        };
        self.done.push((vm.into(), ended.0, ended.1));
        Ok(())
    }
    fn capture(
        &mut self,
        vm: &str,
        region: Option<call::Rect>,
        max: u64,
        write: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<monitor::abi::Captured, ControlError> {
        self.vm(vm)?;
        let (fw, fh) = FRAME;
        let r = region.unwrap_or(call::Rect {
            x: 0,
            y: 0,
            w: fw,
            h: fh,
        });
        if r.x < 0 || r.y < 0 || r.x as u32 + r.w > fw || r.y as u32 + r.h > fh {
            return Err(ControlError::Invalid {
                vm: vm.into(),
                why: format!("the region is outside its {fw}x{fh} frame"),
            });
        }
        let rows = (max / (u64::from(r.w) * 4)).min(u64::from(r.h)) as u32;
        let mut off = 0;
        for y in 0..rows {
            let row: Vec<u8> = (0..r.w * 4)
                .map(|i| frame_byte(r.x as u32 * 4 + i, r.y as u32 + y))
                .collect();
            write(off, &row);
            off += row.len() as u64;
        }
        Ok(monitor::abi::Captured {
            bytes: off,
            width: r.w,
            height: r.h,
        })
    }
    fn console_read(&mut self, vm: &str, out: &mut [u8]) -> Result<usize, ControlError> {
        let v = self.vm(vm)?;
        let n = out.len().min(v.console_out.len());
        out[..n].copy_from_slice(&v.console_out[..n]);
        v.console_out.drain(..n);
        Ok(n)
    }
    fn reserve_key(&mut self, chord: Option<Chord>) -> Result<(), ControlError> {
        self.calls.push(format!("reserve {chord:?}"));
        Ok(())
    }
    fn console_write(&mut self, vm: &str, data: &[u8]) -> Result<usize, ControlError> {
        // A UART that takes at most 4 bytes at a time.
        let v = self.vm(vm)?;
        let n = data.len().min(4);
        v.console_in.extend_from_slice(&data[..n]);
        Ok(n)
    }
}

struct Ram<'a> {
    base: u64,
    mem: &'a mut [u8],
}

impl AuthorityMemory for Ram<'_> {
    fn contains(&self, ipa: u64, len: u64) -> bool {
        ipa >= self.base
            && ipa
                .checked_add(len)
                .is_some_and(|e| e <= self.base + self.mem.len() as u64)
    }
    fn read(&self, ipa: u64, buf: &mut [u8]) {
        let at = (ipa - self.base) as usize;
        buf.copy_from_slice(&self.mem[at..at + buf.len()]);
    }
    fn write(&mut self, ipa: u64, buf: &[u8]) {
        let at = (ipa - self.base) as usize;
        self.mem[at..at + buf.len()].copy_from_slice(buf);
    }
}

/// The fake hypervisor: the real dispatcher over the model.
pub struct Hyp {
    pub d: Dispatcher,
    pub m: Model,
}

impl Hypercall for Hyp {
    fn ipa_of(&self, _: &[u8]) -> u64 {
        0x4800_0000
    }
    fn hvc(&mut self, x: [u64; 8], shared: &mut [u8]) -> [u64; 4] {
        let mut r = Ram {
            base: 0x4800_0000,
            mem: shared,
        };
        let x0 = self.d.call(x, &mut self.m, &mut r).x0;
        // What el2 reports on its own, later: here, right after the call.
        for (vm, steps, status) in core::mem::take(&mut self.m.done) {
            let vm = self.d.id_of(&vm);
            let ev = authority_abi::ring::Event::ScriptDone { vm, steps, status };
            self.d.notify(&ev, &mut r).unwrap();
        }
        // (Frames wait for the session: before OPEN there is no ring.)
        let frames = if self.d.is_open() {
            core::mem::take(&mut self.m.frames)
        } else {
            Vec::new()
        };
        for (vm, frame, damage) in frames {
            let vm = self.d.id_of(&vm);
            let ev = authority_abi::ring::Event::FrameReady { vm, frame, damage };
            self.d.notify(&ev, &mut r).unwrap();
        }
        if self.d.is_open() {
            for ev in core::mem::take(&mut self.m.kept) {
                self.d.notify(&ev, &mut r).unwrap();
            }
        }
        [x0, 0, 0, 0]
    }
}

fn ctl(m: Model) -> AbiControl<Hyp> {
    AbiControl::open(Hyp {
        d: Dispatcher::new(),
        m,
    })
    .unwrap_or_else(|_| panic!("open"))
}

fn calls(c: &AbiControl<Hyp>) -> Vec<String> {
    c.hypercall().m.calls.clone()
}

fn vm(c: &AbiControl<Hyp>, name: &str) -> Vm {
    c.hypercall()
        .m
        .vms
        .iter()
        .find(|v| v.name == name)
        .unwrap()
        .clone()
}

use call::VmState::{Off, Paused, Running, Suspended};

#[test]
fn boot_resumes_the_autostart_vm_and_runs_it_hidden_without_input() {
    let mut c = ctl(Model::with(&[
        ("tiny", Off, 0),
        ("linux", Suspended, AUTOSTART | RESUME_ON_BOOT),
    ]));
    let mut b = Boot::new();
    let mut seen = Vec::new();
    while b.step(&mut c) {
        seen.push(core::mem::discriminant(b.state()));
    }
    assert_eq!(
        b.state(),
        &State::Done(Outcome::Background { vm: "linux".into() })
    );
    assert_eq!(
        seen.len(),
        5,
        "read policy, locate, start, background, done"
    );
    assert_eq!(
        calls(&c),
        [
            "start linux",
            "display linux Hide",
            "input linux Interactive(false)"
        ]
    );
    let l = vm(&c, "linux");
    assert_eq!(l.state, Running);
    assert!(!l.presented && !l.interactive);
    assert_eq!(vm(&c, "tiny").state, Off, "only the default VM starts");
    // The VM receives no input while in the background.
    let mut sh = Shell::new();
    let mut out = Vec::new();
    sh.line("input type linux ls", &mut c, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "ok: vm linux: 0 events delivered (hidden)\r\n"
    );
}

#[test]
fn boot_of_a_running_or_paused_or_visible_vm_and_of_no_vm() {
    // Already running (el2 autostarted it): no start.
    let mut c = ctl(Model::with(&[("linux", Running, AUTOSTART)]));
    assert_eq!(
        Boot::new().run(&mut c),
        Outcome::Background { vm: "linux".into() }
    );
    assert!(!calls(&c).iter().any(|s| s.starts_with("start")));
    // Paused: resumed.
    let mut c = ctl(Model::with(&[("linux", Paused, 0)]));
    Boot::new().run(&mut c);
    assert_eq!(calls(&c)[0], "resume linux");
    assert_eq!(vm(&c, "linux").state, Running);
    // visible_on_start: presented and interactive.
    let mut c = ctl(Model::with(&[
        ("a", Off, 0),
        ("linux", Off, AUTOSTART | VISIBLE_ON_START),
    ]));
    assert_eq!(
        Boot::new().run(&mut c),
        Outcome::Presented { vm: "linux".into() }
    );
    let l = vm(&c, "linux");
    assert!(l.presented && l.interactive && l.state == Running);
    // No VM: the shell alone.
    let mut c = ctl(Model::with(&[]));
    assert_eq!(Boot::new().run(&mut c), Outcome::NoVm);
    assert!(calls(&c).is_empty());
    // A start that fails ends the sequence with the hypervisor's reason.
    let mut m = Model::with(&[("linux", Off, AUTOSTART)]);
    m.refuse_start = true;
    let mut c = ctl(m);
    assert_eq!(
        Boot::new().run(&mut c),
        Outcome::Failed {
            vm: "linux".into(),
            why: "vm linux: its disk is missing".into()
        }
    );
    assert_eq!(calls(&c), ["start linux"], "nothing after a failed start");
}

/// Types `s` into the shell, a byte at a time.
fn typed(sh: &mut Shell, c: &mut AbiControl<Hyp>, s: &str) -> String {
    let mut out = Vec::new();
    for b in s.bytes() {
        sh.feed(b, c, &mut out);
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn present_and_leave_follow_the_policy() {
    let mut c = ctl(Model::with(&[
        ("linux", Running, PAUSE_ON_HIDE),
        ("bg", Running, 0),
    ]));
    let mut sh = Shell::new();
    let out = typed(&mut sh, &mut c, "present linux\r");
    assert_eq!(
        out,
        "present linux\r\nok: vm linux presented fullscreen, interactive\r\nrayos> "
    );
    let l = vm(&c, "linux");
    assert!(l.presented && l.interactive);
    let out = typed(&mut sh, &mut c, "input type linux echo \"hi\"\r");
    assert!(out.contains("ok: vm linux: events delivered"), "{out}");
    assert!(
        calls(&c).contains(&"input linux Type(\"\\\"echo \\\\\\\"hi\\\\\\\"\\\"\")".to_string())
    );
    let out = typed(&mut sh, &mut c, "leave linux\r");
    assert!(
        out.contains("ok: vm linux hidden and paused (pause_on_hide)"),
        "{out}"
    );
    let l = vm(&c, "linux");
    assert!(!l.presented && !l.interactive && l.state == Paused);
    // Without pause_on_hide the VM keeps running.
    typed(&mut sh, &mut c, "present bg\r");
    let out = typed(&mut sh, &mut c, "leave bg\r");
    assert!(
        out.contains("ok: vm bg hidden; it keeps running (policy)"),
        "{out}"
    );
    assert_eq!(vm(&c, "bg").state, Running);
    let out = typed(&mut sh, &mut c, "present nosuch\r");
    assert!(out.contains("error: no VM named 'nosuch'"), "{out}");
}

#[test]
fn monitor_commands_and_errors_keep_the_monitors_status_lines() {
    let mut c = ctl(Model::with(&[("linux", Running, 0)]));
    let mut sh = Shell::new();
    let out = typed(
        &mut sh,
        &mut c,
        "vm list\rvm pause linux\rvm pause linux\rfrob\r\r",
    );
    assert_eq!(
        out.split("\r\n")
            .filter(|l| l.starts_with("ok") || l.starts_with("error") || l.starts_with(PROMPT))
            .collect::<Vec<_>>(),
        [
            "ok: 1 vm: linux vcpus=2 state=running",
            "rayos> vm pause linux",
            "ok: vm linux paused (2 vCPUs stopped)",
            "rayos> vm pause linux",
            "error: vm linux is paused",
            "rayos> frob",
            "error: unknown command `frob` (try `help`)",
            "rayos> ",
            "rayos> ",
        ]
    );
    let mut out = Vec::new();
    assert_eq!(
        sh.line("host shutdown", &mut c, &mut out),
        After::PowerOffHost
    );
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "ok: host shutting down: suspended linux\r\n"
    );
    let mut out = Vec::new();
    sh.line("help", &mut c, &mut out);
    let out = String::from_utf8(out).unwrap();
    for w in [
        "present NAME",
        "leave NAME",
        "attach NAME",
        "input script",
        "vm list",
        "display present",
    ] {
        assert!(out.contains(w), "{w}: {out}");
    }
}

#[test]
fn scripts_are_written_here_validated_and_handed_over() {
    let mut c = ctl(Model::with(&[("linux", Running, 0)]));
    let mut sh = Shell::new();
    let out = typed(
        &mut sh,
        &mut c,
        "script login\rkey ctrl+alt+f2\r\rtype \"root\\n\"\rwait-change 0 0 64 16 timeout 500\rend\r",
    );
    assert!(out.contains("script> "), "{out}");
    assert!(out.contains("ok: script login saved (3 steps)"), "{out}");
    let out = typed(&mut sh, &mut c, "input script linux login\r");
    assert!(
        out.contains("ok: vm linux: script login started (3 steps)"),
        "{out}"
    );
    assert_eq!(
        calls(&c).last().unwrap(),
        "script linux key ctrl+alt+f2\n\ntype \"root\\n\"\nwait-change 0 0 64 16 timeout 500\n"
    );
    // A bad script is refused with its line, and nothing is stored or sent.
    let out = typed(&mut sh, &mut c, "script bad\rwait 1\rclick 1\rend\r");
    assert!(
        out.contains("error: script bad refused: line 2: MissingArgument"),
        "{out}"
    );
    let n = calls(&c).len();
    let out = typed(&mut sh, &mut c, "input script linux bad\r");
    assert!(out.contains("error: no script named 'bad'"), "{out}");
    // Built-in scripts run; unknown VMs are refused by the hypervisor's list.
    let out = typed(&mut sh, &mut c, "input script linux hello\r");
    assert!(
        out.contains("ok: vm linux: script hello started (1 steps)"),
        "{out}"
    );
    assert_eq!(calls(&c).len(), n + 1);
    let out = typed(&mut sh, &mut c, "input script nosuch hello\rscripts\r");
    assert!(out.contains("error: no VM named 'nosuch'"), "{out}");
    assert!(out.contains("ok: scripts: hello, console2, login"), "{out}");
    let out = typed(&mut sh, &mut c, "script hello\rscript a/b\r");
    assert!(out.contains("error: script hello is built in"), "{out}");
    assert!(out.contains("error: bad script name"), "{out}");
}

#[test]
fn every_builtin_script_parses() {
    for (name, text) in crate::shell::BUILTIN_SCRIPTS {
        assert!(
            input::script::Script::parse(text.as_bytes()).is_ok(),
            "{name}"
        );
    }
}

#[test]
fn attach_connects_the_serial_line_until_ctrl_close_bracket() {
    let mut m = Model::with(&[("linux", Running, 0)]);
    m.vms[0].console_out = b"login: ".to_vec();
    let mut c = ctl(m);
    let mut sh = Shell::new();
    let out = typed(&mut sh, &mut c, "attach linux\r");
    assert!(
        out.ends_with("ok: attached to vm linux's console; Ctrl-] returns to the shell\r\n"),
        "{out}"
    );
    assert_eq!(sh.attached(), Some("linux"));
    let mut out = Vec::new();
    sh.poll(&mut c, &mut out);
    assert_eq!(out, b"login: ");
    // Typed bytes go to the VM (its UART takes 4 at a time; the rest follow on poll),
    // not to the shell: no echo, no command.
    let out = typed(&mut sh, &mut c, "root\rvm list\r");
    assert_eq!(out, "");
    for _ in 0..4 {
        sh.poll(&mut c, &mut Vec::new());
    }
    assert_eq!(vm(&c, "linux").console_in, b"root\rvm list\r");
    // Ctrl-] returns to the shell.
    let out = typed(&mut sh, &mut c, "\x1d");
    assert_eq!(out, "\r\n[detached from vm linux]\r\nrayos> ");
    assert_eq!(sh.attached(), None);
    let out = typed(&mut sh, &mut c, "vm list\r");
    assert!(out.contains("ok: 1 vm"), "{out}");
    assert_eq!(
        vm(&c, "linux").console_in,
        b"root\rvm list\r",
        "nothing more went to the VM"
    );
    // Ctrl-] in the shell stays in the shell; attaching to nothing is refused.
    let out = typed(&mut sh, &mut c, "\x1dattach nosuch\r");
    assert!(out.contains("error: no VM named 'nosuch'"), "{out}");
    assert_eq!(sh.attached(), None);
}

#[test]
fn authority_trait_object_is_usable() {
    let mut c = ctl(Model::with(&[("linux", Off, 0)]));
    let a: &mut dyn Authority = &mut c;
    a.start("linux").unwrap();
    assert_eq!(a.entries()[0].state, Running);
    let mut v: Vec<u8> = Vec::new();
    let t: &mut dyn Terminal = &mut v;
    t.write(b"x");
    assert_eq!(v, b"x");
}

#[test]
fn a_scripts_end_is_shown_with_its_name_and_outcome() {
    let mut c = ctl(Model::with(&[("linux", Running, 0)]));
    let mut sh = Shell::new();
    typed(&mut sh, &mut c, "input script linux hello\r");
    let mut out = Vec::new();
    sh.events(&mut c, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "\r\nrayos: vm linux: script hello finished (1 steps)\r\nrayos> "
    );
    typed(
        &mut sh,
        &mut c,
        "script never\rwait 1\rwait-match 0 0 8 4 0123456789abcdef timeout 10\rend\r",
    );
    typed(&mut sh, &mut c, "input script linux never\r");
    let mut out = Vec::new();
    sh.events(&mut c, &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "\r\nrayos: vm linux: script never failed after 1 steps (Failed)\r\nrayos> "
    );
    // Nothing more: nothing printed.
    let mut out = Vec::new();
    sh.events(&mut c, &mut out);
    assert!(out.is_empty());
}

/// The region hash of the model's frame at (x, y), w x h.
fn frame_hash(x: u32, y: u32, w: u32, h: u32) -> u64 {
    let mut bytes = Vec::new();
    for row in y..y + h {
        bytes.extend((x * 4..(x + w) * 4).map(|i| frame_byte(i, row)));
    }
    let frame = input::FrameView {
        width: w,
        height: h,
        stride: (w * 4) as usize,
        data: &bytes,
    };
    input::run::frame_hash(&frame).unwrap()
}

#[test]
fn capture_shows_the_frames_size_and_region_hash() {
    let mut c = ctl(Model::with(&[("linux", Running, 0)]));
    let mut sh = Shell::new();
    let out = typed(&mut sh, &mut c, "capture linux\r");
    assert!(
        out.contains(&format!(
            "ok: vm linux: captured 8x4, 128 bytes, hash {:016x}",
            frame_hash(0, 0, 8, 4)
        )),
        "{out}"
    );
    let out = typed(&mut sh, &mut c, "capture linux 2 1 5 3\r");
    assert!(
        out.contains(&format!(
            "ok: vm linux: captured 5x3 at 2,1, 60 bytes, hash {:016x}",
            frame_hash(2, 1, 5, 3)
        )),
        "{out}"
    );
    // Refused: by the hypervisor (outside the frame), by the shell (malformed).
    let out = typed(&mut sh, &mut c, "capture linux 4 0 5 1\r");
    assert!(
        out.contains("error: vm linux: the region is outside its 8x4 frame; nothing changed"),
        "{out}"
    );
    let out = typed(
        &mut sh,
        &mut c,
        "capture linux 1 2 3\rcapture linux 0 0 0 1\rcapture nosuch\r",
    );
    assert!(
        out.contains("error: usage: capture NAME [X Y W H]"),
        "{out}"
    );
    assert!(out.contains("error: capture: X Y within"), "{out}");
    assert!(out.contains("error: no VM named 'nosuch'"), "{out}");
}

#[test]
fn frames_counts_the_frame_ready_events() {
    let r = |x, y, w, h| call::Rect { x, y, w, h };
    let mut m = Model::with(&[("linux", Running, 0), ("bg", Running, 0)]);
    // Reported right after the first call (OPEN).
    m.frames.push(("linux".into(), 7, r(0, 0, 640, 480)));
    m.frames.push(("linux".into(), 9, r(192, 100, 64, 16)));
    let mut c = ctl(m);
    let mut sh = Shell::new();
    // Not taken from the ring yet.
    let out = typed(&mut sh, &mut c, "frames linux\r");
    assert!(out.contains("ok: vm linux: no frame-ready events"), "{out}");
    let mut out = Vec::new();
    sh.events(&mut c, &mut out);
    assert!(out.is_empty(), "frame events print nothing");
    let out = typed(&mut sh, &mut c, "frames linux\rframes bg\rframes nosuch\r");
    assert!(
        out.contains("ok: vm linux: 2 frame-ready events, last frame 9 (damage 192,100 64x16)"),
        "{out}"
    );
    assert!(out.contains("ok: vm bg: no frame-ready events"), "{out}");
    assert!(out.contains("error: no VM named 'nosuch'"), "{out}");
}

#[test]
fn input_kept_counts_the_physical_input_rayos_got() {
    use authority_abi::input::{Button, InputEvent, Space};
    let mut m = Model::with(&[("linux", Running, 0)]);
    m.kept = std::vec![
        InputEvent::Key {
            usage: 0x04,
            pressed: true
        },
        InputEvent::PointerAbs {
            x: 5,
            y: 6,
            space: Space::Display
        },
        InputEvent::Button {
            button: Button::Left,
            pressed: true
        },
        InputEvent::Key {
            usage: 0x04,
            pressed: false
        },
    ]
    .into_iter()
    .map(|event| authority_abi::ring::Event::Input { event })
    .collect();
    let mut c = ctl(m);
    let mut sh = Shell::new();
    let out = typed(&mut sh, &mut c, "input kept\r");
    assert!(out.contains("ok: rayos kept 0 input event(s)"), "{out}");
    let mut out = Vec::new();
    sh.events(&mut c, &mut out);
    assert!(out.is_empty(), "kept input prints nothing");
    let out = typed(&mut sh, &mut c, "input kept\r");
    assert!(
        out.contains(
            "ok: rayos kept 4 input event(s) no guest took: 2 key, 1 pointer, 1 button, 0 other; last: key 0x04 up"
        ),
        "{out}"
    );
}

#[test]
fn the_reserved_key_leaves_every_presented_vm_and_the_shell_sets_it() {
    use authority_abi::ring::Event;
    let mut m = Model::with(&[
        ("linux", Running, PAUSE_ON_HIDE),
        ("bg", Running, 0),
        ("off", Off, 0),
    ]);
    m.vms[0].presented = true;
    m.vms[1].presented = true;
    let mut c = ctl(m);
    let mut sh = Shell::new();
    let home = input::keymap::parse_chord(crate::shell::LEAVE_KEY).unwrap();
    assert_eq!(
        sh.reserve_leave_key(&mut c),
        "ctrl+alt+home is RayOS's: it leaves the presented VM"
    );
    assert_eq!(
        calls(&c).last().unwrap(),
        &format!("reserve {:?}", Some(home))
    );
    c.hypercall_mut().m.kept = std::vec![Event::ReservedKey { chord: home }];
    // The event arrives with the next call's answer.
    let _ = typed(&mut sh, &mut c, "vm list\r");
    let mut out = Vec::new();
    sh.events(&mut c, &mut out);
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("rayos: ctrl+alt+home: vm linux hidden and paused (pause_on_hide)"),
        "{out}"
    );
    assert!(
        out.contains("rayos: ctrl+alt+home: vm bg hidden; it keeps running (policy)"),
        "{out}"
    );
    assert!(!out.contains("vm off"), "{out}");
    {
        let m = &c.hypercall().m;
        assert!(m.vms[..2].iter().all(|v| !v.presented && !v.interactive));
        assert_eq!(m.vms[0].state, Paused);
        assert_eq!(m.vms[1].state, Running);
    }
    // Again, with nothing presented.
    c.hypercall_mut().m.kept = std::vec![Event::ReservedKey { chord: home }];
    let _ = typed(&mut sh, &mut c, "vm list\r");
    let mut out = Vec::new();
    sh.events(&mut c, &mut out);
    let out = String::from_utf8(out).unwrap();
    assert!(
        out.contains("rayos: ctrl+alt+home: no VM is presented"),
        "{out}"
    );
    // The shell's command: show, change, refuse, remove.
    let out = typed(
        &mut sh,
        &mut c,
        "input reserve\rinput reserve meta+f12\rinput reserve ctrl+alt\rinput reserve off\rinput reserve\r",
    );
    for want in [
        "ok: ctrl+alt+home is RayOS's",
        "ok: meta+f12 is RayOS's",
        "error: `ctrl+alt` is not a chord",
        "ok: no key is reserved for RayOS",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
    let reserved: Vec<String> = calls(&c)
        .into_iter()
        .filter(|l| l.starts_with("reserve"))
        .collect();
    assert_eq!(
        reserved,
        [
            format!("reserve {:?}", Some(home)),
            format!("reserve {:?}", input::keymap::parse_chord("meta+f12")),
            String::from("reserve None"),
        ]
    );
}
