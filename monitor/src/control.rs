//! [`VmControl`]: the operations on VMs that the monitor's commands call, and that
//! the authority partition will call later through its own ABI; [`execute`] runs
//! one monitor line against it and answers with exactly one [`Status`] line.
//!
//! Status lines: `ok: …` when the command did what it says, `error: …` naming what
//! was wrong (the command, the VM, the state) when it did nothing. Text that comes
//! from outside (VM names from the system disk) is shown with every byte outside
//! printable ASCII as `?`, and a status is at most [`STATUS_MAX`] bytes, so a
//! status is always one line.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use crate::command::{
    parse, Command, DisplayChange, DisplayPlacement, InputAction, SnapshotStore, UsbOp,
};

/// Longest status text (after `ok: ` / `error: `), in bytes.
pub const STATUS_MAX: usize = 640;

/// What a VM is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmState {
    /// Its vCPUs run guest code.
    Running,
    /// Every vCPU is stopped at a clean point (`vm pause`); guest time stands still.
    Paused,
    /// Powered off (or not started).
    Off,
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Off => "off",
        })
    }
}

/// One VM as `vm list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmInfo {
    pub name: String,
    pub vcpus: usize,
    pub state: VmState,
}

/// A snapshot as `vm snapshots` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub tag: String,
    pub store: SnapshotStore,
    /// Bytes of memory (RAM copy) or system disk it takes.
    pub bytes: u64,
    /// More about it, appended to its `vm snapshots` entry (e.g. a disk
    /// snapshot's image and log sizes, or why it cannot be rolled back to).
    pub note: String,
}

/// What a suspend wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuspendReport {
    pub bytes_written: u64,
}

/// What `host shutdown` did to each VM before the host powers off.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShutdownReport {
    /// VMs powered off.
    pub powered_off: Vec<String>,
    /// VMs suspended to the system disk.
    pub suspended: Vec<String>,
}

/// Why an operation did nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ControlError {
    /// No VM has this name.
    NoSuchVm(String),
    /// `vm pause` of a VM already paused.
    AlreadyPaused(String),
    /// `vm resume` of a VM that is not paused.
    NotPaused { vm: String, state: VmState },
    /// The operation needs a running (or paused) VM.
    NotRunning { vm: String, state: VmState },
    /// No snapshot of `vm` has this tag.
    NoSuchSnapshot { vm: String, tag: String },
    /// A snapshot of `vm` already has this tag.
    SnapshotExists { vm: String, tag: String },
    /// This hypervisor cannot do `what` (yet): `why` says what is missing.
    Unsupported { what: String, why: &'static str },
    /// `vm`'s vCPUs did not reach a clean point in time; nothing changed.
    Timeout { vm: String, what: &'static str },
    /// The operation failed part-way; `why` says how and what state it left.
    Failed { vm: String, why: String },
    /// A value `vm`'s operation cannot take (a placement, a rate, a mode); nothing
    /// changed.
    Invalid { vm: String, why: String },
}

impl fmt::Display for ControlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ControlError::NoSuchVm(n) => write!(f, "no VM named '{n}' (see `vm list`)"),
            ControlError::AlreadyPaused(n) => write!(f, "vm {n} is already paused"),
            ControlError::NotPaused { vm, state } => {
                write!(f, "vm {vm} is not paused (it is {state})")
            }
            ControlError::NotRunning { vm, state } => write!(f, "vm {vm} is {state}"),
            ControlError::NoSuchSnapshot { vm, tag } => {
                write!(
                    f,
                    "vm {vm} has no snapshot '{tag}' (see `vm snapshots {vm}`)"
                )
            }
            ControlError::SnapshotExists { vm, tag } => {
                write!(f, "vm {vm} already has a snapshot '{tag}'")
            }
            ControlError::Unsupported { what, why } => write!(f, "{what}: {why}"),
            ControlError::Timeout { vm, what } => {
                write!(f, "vm {vm}: {what} timed out; nothing changed")
            }
            ControlError::Failed { vm, why } => write!(f, "vm {vm}: {why}"),
            ControlError::Invalid { vm, why } => write!(f, "vm {vm}: {why}; nothing changed"),
        }
    }
}

/// The operations on VMs. Names are as the operator typed them; an
/// implementation answers [`ControlError::NoSuchVm`] for one it does not have.
pub trait VmControl {
    /// Every VM, in a stable order.
    fn list(&self) -> Vec<VmInfo>;
    /// Stops every vCPU of `vm` at a clean point and keeps it stopped; returns once
    /// all have stopped. Guest virtual time stands still until [`Self::resume`].
    fn pause(&mut self, vm: &str) -> Result<(), ControlError>;
    /// Lets a paused VM's vCPUs run again, guest virtual time continuing where it
    /// stopped.
    fn resume(&mut self, vm: &str) -> Result<(), ControlError>;
    /// Saves `vm`'s whole state to its saved-state extent and powers it off.
    fn suspend(&mut self, vm: &str) -> Result<SuspendReport, ControlError>;
    /// Takes a snapshot of `vm` under `tag`.
    fn snapshot(
        &mut self,
        vm: &str,
        tag: &str,
        store: SnapshotStore,
    ) -> Result<SnapshotInfo, ControlError>;
    /// Rolls `vm` back to its snapshot `tag`; the VM keeps running from there.
    fn rollback(&mut self, vm: &str, tag: &str) -> Result<(), ControlError>;
    /// `vm`'s snapshots.
    fn snapshots(&self, vm: &str) -> Result<Vec<SnapshotInfo>, ControlError>;
    /// Deletes `vm`'s snapshot `tag`.
    fn delete_snapshot(&mut self, vm: &str, tag: &str) -> Result<(), ControlError>;
    /// Suspends or powers off every VM per its policy. On `Ok` the caller prints
    /// the status line and then powers the host off ([`After::PowerOffHost`]); on
    /// `Err` nothing was stopped.
    fn host_shutdown(&mut self) -> Result<ShutdownReport, ControlError>;
    /// Changes how `vm`'s screen is presented on the physical display (or its
    /// virtual monitor's mode, announced to the guest).
    fn display(&mut self, vm: &str, change: DisplayChange) -> Result<(), ControlError>;
    /// Sets the display's overlay line (empty: none).
    fn display_overlay(&mut self, text: &str) -> Result<(), ControlError>;
    /// The physical display and every VM's presentation, one line.
    fn display_status(&self) -> Result<String, ControlError>;
    /// Synthetic input for `vm` (through its input routing: delivered only while it
    /// is presented and interactive); `Ok` says what became of the events.
    fn input(&mut self, vm: &str, action: InputAction) -> Result<String, ControlError> {
        let _ = action;
        Err(ControlError::Unsupported {
            what: format!("input for vm {vm}"),
            why: "this hypervisor has no input routing",
        })
    }
    /// Hot-plugs `vm`'s USB mass-storage device.
    fn usb(&mut self, vm: &str, op: UsbOp) -> Result<(), ControlError> {
        let _ = op;
        Err(ControlError::Unsupported {
            what: format!("usb on vm {vm}"),
            why: "this hypervisor has no USB",
        })
    }
}

/// One status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    ok: bool,
    text: String,
}

impl Status {
    pub fn ok(text: &str) -> Self {
        Self::new(true, text)
    }

    pub fn error(text: &str) -> Self {
        Self::new(false, text)
    }

    fn new(ok: bool, text: &str) -> Self {
        let mut clean: String = text
            .chars()
            .map(|c| {
                if c == ' ' || c.is_ascii_graphic() {
                    c
                } else {
                    '?'
                }
            })
            .collect();
        if clean.len() > STATUS_MAX {
            clean.truncate(STATUS_MAX - 3);
            clean.push_str("...");
        }
        Self { ok, text: clean }
    }

    pub fn is_ok(&self) -> bool {
        self.ok
    }

    /// The text after `ok: ` / `error: `.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = if self.ok { "ok" } else { "error" };
        write!(f, "{kind}: {}", self.text)
    }
}

/// What the caller does after printing the status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Nothing,
    /// `host shutdown` succeeded: power the host off.
    PowerOffHost,
}

/// A command's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: Status,
    pub after: After,
}

impl Reply {
    fn ok(text: &str) -> Self {
        Self {
            status: Status::ok(text),
            after: After::Nothing,
        }
    }
    fn error(text: &str) -> Self {
        Self {
            status: Status::error(text),
            after: After::Nothing,
        }
    }
}

/// The one-line `help` text.
pub const HELP: &str = "commands: vm list | vm pause/resume/suspend NAME | \
vm snapshot NAME TAG [--disk] | vm rollback NAME TAG | vm snapshots NAME | \
vm delete-snapshot NAME TAG | host shutdown | usb detach/attach NAME | \
display present NAME panel X Y W H/fullscreen/quad X0 Y0 .. X3 Y3 | \
display hide/freeze/unfreeze NAME | display throttle NAME FPS | display mode NAME W H | \
display overlay [TEXT] | display status | input type NAME \"TEXT\"/key NAME CHORD/\
pointer NAME X Y/click NAME X Y [BTN]/gaze NAME X Y [MS]/interactive NAME on|off | help; \
Ctrl-] returns to the guest";

/// What a display change did, for its status line.
fn display_text(vm: &str, change: DisplayChange) -> String {
    match change {
        DisplayChange::Present(DisplayPlacement::Panel { x, y, w, h }) => {
            format!("vm {vm} presented as a panel {w}x{h} at ({x}, {y})")
        }
        DisplayChange::Present(DisplayPlacement::Fullscreen) => {
            format!("vm {vm} presented fullscreen")
        }
        DisplayChange::Present(DisplayPlacement::Quad(q)) => {
            let points: Vec<String> = q.iter().map(|(x, y)| format!("({x}, {y})")).collect();
            format!("vm {vm} presented as a quad {}", points.join(" "))
        }
        DisplayChange::Hide => format!("vm {vm} hidden"),
        DisplayChange::Freeze => format!("vm {vm} frozen (its last frame stays)"),
        DisplayChange::Unfreeze => format!("vm {vm} live again"),
        DisplayChange::Throttle { fps } => format!("vm {vm} throttled to {fps} frames/s"),
        DisplayChange::Mode { width, height } => {
            format!("vm {vm} virtual monitor mode {width}x{height} (guest notified)")
        }
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn list_text(vms: &[VmInfo]) -> String {
    if vms.is_empty() {
        return String::from("no VMs");
    }
    let each: Vec<String> = vms
        .iter()
        .map(|v| format!("{} vcpus={} state={}", v.name, v.vcpus, v.state))
        .collect();
    format!("{}: {}", plural(vms.len(), "vm", "vms"), each.join("; "))
}

fn store_name(s: SnapshotStore) -> &'static str {
    match s {
        SnapshotStore::Memory => "memory",
        SnapshotStore::Disk => "disk",
    }
}

/// Runs one monitor line (non-empty) against `ctl`.
pub fn execute(line: &str, ctl: &mut dyn VmControl) -> Reply {
    let cmd = match parse(line) {
        Ok(c) => c,
        Err(e) => return Reply::error(&format!("{e}")),
    };
    let result: Result<String, ControlError> = match cmd {
        Command::Help => Ok(String::from(HELP)),
        Command::VmList => Ok(list_text(&ctl.list())),
        Command::VmPause(vm) => ctl.pause(vm).map(|()| {
            let vcpus = ctl
                .list()
                .iter()
                .find(|v| v.name == vm)
                .map_or(0, |v| v.vcpus);
            format!(
                "vm {vm} paused ({} stopped)",
                plural(vcpus, "vCPU", "vCPUs")
            )
        }),
        Command::VmResume(vm) => ctl.resume(vm).map(|()| format!("vm {vm} resumed")),
        Command::VmSuspend(vm) => ctl.suspend(vm).map(|r| {
            format!(
                "vm {vm} suspended ({} KiB written)",
                r.bytes_written.div_ceil(1024)
            )
        }),
        Command::VmSnapshot { vm, tag, store } => ctl.snapshot(vm, tag, store).map(|s| {
            format!(
                "vm {vm} snapshot '{}' taken ({}, {} KiB)",
                s.tag,
                store_name(s.store),
                s.bytes.div_ceil(1024)
            )
        }),
        Command::VmRollback { vm, tag } => ctl
            .rollback(vm, tag)
            .map(|()| format!("vm {vm} rolled back to snapshot '{tag}'")),
        Command::VmSnapshots(vm) => ctl.snapshots(vm).map(|list| {
            if list.is_empty() {
                return format!("vm {vm} has no snapshots");
            }
            let each: Vec<String> = list
                .iter()
                .map(|s| {
                    format!(
                        "{} ({}, {} KiB{})",
                        s.tag,
                        store_name(s.store),
                        s.bytes.div_ceil(1024),
                        s.note
                    )
                })
                .collect();
            format!(
                "vm {vm} has {}: {}",
                plural(list.len(), "snapshot", "snapshots"),
                each.join(", ")
            )
        }),
        Command::VmDeleteSnapshot { vm, tag } => ctl
            .delete_snapshot(vm, tag)
            .map(|()| format!("vm {vm} snapshot '{tag}' deleted")),
        Command::Display { vm, change } => {
            ctl.display(vm, change).map(|()| display_text(vm, change))
        }
        Command::DisplayOverlay(text) => ctl.display_overlay(text).map(|()| {
            if text.is_empty() {
                String::from("overlay removed")
            } else {
                format!("overlay shows '{text}'")
            }
        }),
        Command::DisplayStatus => ctl.display_status(),
        Command::Input { vm, action } => ctl.input(vm, action).map(|r| format!("vm {vm}: {r}")),
        Command::Usb { vm, op } => ctl.usb(vm, op).map(|()| match op {
            UsbOp::DetachStorage => format!("vm {vm} USB storage detached"),
            UsbOp::AttachStorage => format!("vm {vm} USB storage attached"),
        }),
        Command::HostShutdown => {
            return match ctl.host_shutdown() {
                Ok(r) => {
                    let mut parts = Vec::new();
                    if !r.suspended.is_empty() {
                        parts.push(format!("suspended {}", r.suspended.join(", ")));
                    }
                    if !r.powered_off.is_empty() {
                        parts.push(format!("powered off {}", r.powered_off.join(", ")));
                    }
                    if parts.is_empty() {
                        parts.push(String::from("no VM was running"));
                    }
                    Reply {
                        status: Status::ok(&format!("host shutting down: {}", parts.join("; "))),
                        after: After::PowerOffHost,
                    }
                }
                Err(e) => Reply::error(&format!("host shutdown refused: {e}")),
            }
        }
    };
    match result {
        Ok(text) => Reply::ok(&text),
        Err(e) => Reply::error(&format!("{e}")),
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use alloc::string::ToString;
    use alloc::vec;

    /// A model of VMs: state changes only through the trait.
    struct Model {
        vms: Vec<VmInfo>,
        snapshots: Vec<(String, SnapshotInfo)>,
        suspend_on_shutdown: bool,
        calls: Vec<String>,
    }

    impl Model {
        fn new() -> Self {
            Self {
                vms: vec![
                    VmInfo {
                        name: "linux".into(),
                        vcpus: 2,
                        state: VmState::Running,
                    },
                    VmInfo {
                        name: "tiny".into(),
                        vcpus: 1,
                        state: VmState::Off,
                    },
                ],
                snapshots: Vec::new(),
                suspend_on_shutdown: false,
                calls: Vec::new(),
            }
        }
        fn vm(&mut self, name: &str) -> Result<&mut VmInfo, ControlError> {
            self.vms
                .iter_mut()
                .find(|v| v.name == name)
                .ok_or_else(|| ControlError::NoSuchVm(name.into()))
        }
    }

    impl VmControl for Model {
        fn list(&self) -> Vec<VmInfo> {
            self.vms.clone()
        }
        fn pause(&mut self, vm: &str) -> Result<(), ControlError> {
            self.calls.push(format!("pause {vm}"));
            let v = self.vm(vm)?;
            match v.state {
                VmState::Running => {
                    v.state = VmState::Paused;
                    Ok(())
                }
                VmState::Paused => Err(ControlError::AlreadyPaused(vm.into())),
                state => Err(ControlError::NotRunning {
                    vm: vm.into(),
                    state,
                }),
            }
        }
        fn resume(&mut self, vm: &str) -> Result<(), ControlError> {
            self.calls.push(format!("resume {vm}"));
            let v = self.vm(vm)?;
            if v.state != VmState::Paused {
                return Err(ControlError::NotPaused {
                    vm: vm.into(),
                    state: v.state,
                });
            }
            v.state = VmState::Running;
            Ok(())
        }
        fn suspend(&mut self, vm: &str) -> Result<SuspendReport, ControlError> {
            self.calls.push(format!("suspend {vm}"));
            self.vm(vm)?.state = VmState::Off;
            Ok(SuspendReport {
                bytes_written: 3 << 20,
            })
        }
        fn snapshot(
            &mut self,
            vm: &str,
            tag: &str,
            store: SnapshotStore,
        ) -> Result<SnapshotInfo, ControlError> {
            self.calls.push(format!("snapshot {vm} {tag} {store:?}"));
            self.vm(vm)?;
            if self.snapshots.iter().any(|(v, s)| v == vm && s.tag == tag) {
                return Err(ControlError::SnapshotExists {
                    vm: vm.into(),
                    tag: tag.into(),
                });
            }
            let s = SnapshotInfo {
                tag: tag.into(),
                store,
                bytes: 1500,
                note: if store == SnapshotStore::Disk {
                    String::from("; disk log 0 of 4 KiB used")
                } else {
                    String::new()
                },
            };
            self.snapshots.push((vm.into(), s.clone()));
            Ok(s)
        }
        fn rollback(&mut self, vm: &str, tag: &str) -> Result<(), ControlError> {
            self.calls.push(format!("rollback {vm} {tag}"));
            self.vm(vm)?;
            if !self.snapshots.iter().any(|(v, s)| v == vm && s.tag == tag) {
                return Err(ControlError::NoSuchSnapshot {
                    vm: vm.into(),
                    tag: tag.into(),
                });
            }
            Ok(())
        }
        fn snapshots(&self, vm: &str) -> Result<Vec<SnapshotInfo>, ControlError> {
            if !self.vms.iter().any(|v| v.name == vm) {
                return Err(ControlError::NoSuchVm(vm.into()));
            }
            Ok(self
                .snapshots
                .iter()
                .filter(|(v, _)| v == vm)
                .map(|(_, s)| s.clone())
                .collect())
        }
        fn delete_snapshot(&mut self, vm: &str, tag: &str) -> Result<(), ControlError> {
            self.calls.push(format!("delete {vm} {tag}"));
            let before = self.snapshots.len();
            self.snapshots.retain(|(v, s)| !(v == vm && s.tag == tag));
            if self.snapshots.len() == before {
                return Err(ControlError::NoSuchSnapshot {
                    vm: vm.into(),
                    tag: tag.into(),
                });
            }
            Ok(())
        }
        fn host_shutdown(&mut self) -> Result<ShutdownReport, ControlError> {
            self.calls.push("shutdown".into());
            if self.suspend_on_shutdown {
                return Err(ControlError::Unsupported {
                    what: "vm linux's policy is suspend_on_host_shutdown".into(),
                    why: "suspend is not built yet",
                });
            }
            Ok(ShutdownReport {
                powered_off: vec!["linux".into()],
                suspended: Vec::new(),
            })
        }
        fn display(&mut self, vm: &str, change: DisplayChange) -> Result<(), ControlError> {
            self.vm(vm)?;
            if let DisplayChange::Throttle { fps: 0 } = change {
                return Err(ControlError::Invalid {
                    vm: vm.into(),
                    why: "frame rate 0 is not within 1..=1000".into(),
                });
            }
            self.calls.push(format!("display {vm} {change:?}"));
            Ok(())
        }
        fn display_overlay(&mut self, text: &str) -> Result<(), ControlError> {
            self.calls.push(format!("overlay '{text}'"));
            Ok(())
        }
        fn display_status(&self) -> Result<String, ControlError> {
            Ok(format!("1280x800; {} presented", self.vms[0].name))
        }
        fn input(&mut self, vm: &str, action: InputAction) -> Result<String, ControlError> {
            self.vm(vm)?;
            self.calls.push(format!("input {vm} {action:?}"));
            Ok(String::from("1 event delivered"))
        }
        fn usb(&mut self, vm: &str, op: UsbOp) -> Result<(), ControlError> {
            self.vm(vm)?;
            if op == UsbOp::AttachStorage {
                return Err(ControlError::Invalid {
                    vm: vm.into(),
                    why: "the USB storage device is attached already".into(),
                });
            }
            self.calls.push(format!("usb {vm} {op:?}"));
            Ok(())
        }
    }

    #[test]
    fn input_commands_route_to_the_trait_with_one_status_line() {
        let mut m = Model::new();
        assert_eq!(
            run(&mut m, "input click linux 3 4 middle"),
            "ok: vm linux: 1 event delivered"
        );
        assert_eq!(
            run(&mut m, "input type nosuch \"x\""),
            "error: no VM named 'nosuch' (see `vm list`)"
        );
        assert!(run(&mut m, "input click linux 3").starts_with("error: "));
        assert_eq!(
            m.calls,
            [format!(
                "input linux {:?}",
                InputAction::Click {
                    x: 3,
                    y: 4,
                    button: crate::command::MouseButton::Middle
                }
            )]
        );
    }

    fn run(m: &mut Model, line: &str) -> String {
        let r = execute(line, m);
        let s = r.status.to_string();
        assert!(!s.contains('\n') && !s.contains('\r'), "one line: {s:?}");
        assert_eq!(r.status.is_ok(), s.starts_with("ok: "));
        assert!(s.starts_with("ok: ") || s.starts_with("error: "), "{s}");
        if r.after == After::PowerOffHost {
            assert!(r.status.is_ok());
        }
        s
    }

    #[test]
    fn list_pause_resume_through_the_trait() {
        let mut m = Model::new();
        assert_eq!(
            run(&mut m, "vm list"),
            "ok: 2 vms: linux vcpus=2 state=running; tiny vcpus=1 state=off"
        );
        assert_eq!(
            run(&mut m, "vm pause linux"),
            "ok: vm linux paused (2 vCPUs stopped)"
        );
        assert!(run(&mut m, "vm list").contains("linux vcpus=2 state=paused"));
        assert_eq!(
            run(&mut m, "vm pause linux"),
            "error: vm linux is already paused"
        );
        assert_eq!(run(&mut m, "vm resume linux"), "ok: vm linux resumed");
        assert_eq!(
            run(&mut m, "vm resume linux"),
            "error: vm linux is not paused (it is running)"
        );
        assert_eq!(run(&mut m, "vm pause tiny"), "error: vm tiny is off");
        assert_eq!(
            m.calls,
            [
                "pause linux",
                "pause linux",
                "resume linux",
                "resume linux",
                "pause tiny"
            ]
        );
        m.vms.clear();
        assert_eq!(run(&mut m, "vm list"), "ok: no VMs");
    }

    #[test]
    fn unknown_names_and_bad_lines_are_errors_that_touch_nothing() {
        let mut m = Model::new();
        assert_eq!(
            run(&mut m, "vm pause nosuch"),
            "error: no VM named 'nosuch' (see `vm list`)"
        );
        for line in [
            "vm",
            "vm pause",
            "frobnicate",
            "vm snapshot linux a/b",
            "host",
        ] {
            assert!(run(&mut m, line).starts_with("error: "), "{line}");
        }
        assert_eq!(m.calls, ["pause nosuch"], "parse errors call nothing");
    }

    #[test]
    fn snapshots_and_suspend_route_to_the_trait() {
        let mut m = Model::new();
        assert_eq!(
            run(&mut m, "vm snapshots linux"),
            "ok: vm linux has no snapshots"
        );
        assert_eq!(
            run(&mut m, "vm snapshot linux t1 --disk"),
            "ok: vm linux snapshot 't1' taken (disk, 2 KiB)"
        );
        assert_eq!(
            run(&mut m, "vm snapshot linux t1"),
            "error: vm linux already has a snapshot 't1'"
        );
        run(&mut m, "vm snapshot linux t2");
        assert_eq!(
            run(&mut m, "vm snapshots linux"),
            "ok: vm linux has 2 snapshots: t1 (disk, 2 KiB; disk log 0 of 4 KiB used), t2 (memory, 2 KiB)"
        );
        assert_eq!(
            run(&mut m, "vm rollback linux t2"),
            "ok: vm linux rolled back to snapshot 't2'"
        );
        assert_eq!(
            run(&mut m, "vm rollback linux t9"),
            "error: vm linux has no snapshot 't9' (see `vm snapshots linux`)"
        );
        assert_eq!(
            run(&mut m, "vm delete-snapshot linux t1"),
            "ok: vm linux snapshot 't1' deleted"
        );
        assert!(run(&mut m, "vm delete-snapshot linux t1").starts_with("error: "));
        assert_eq!(
            run(&mut m, "vm suspend linux"),
            "ok: vm linux suspended (3072 KiB written)"
        );
    }

    #[test]
    fn host_shutdown_powers_off_only_on_ok() {
        let mut m = Model::new();
        m.suspend_on_shutdown = true;
        let r = execute("host shutdown", &mut m);
        assert_eq!(r.after, After::Nothing);
        assert_eq!(
            r.status.to_string(),
            "error: host shutdown refused: vm linux's policy is suspend_on_host_shutdown: suspend is not built yet"
        );
        m.suspend_on_shutdown = false;
        let r = execute("host shutdown", &mut m);
        assert_eq!(r.after, After::PowerOffHost);
        assert_eq!(
            r.status.to_string(),
            "ok: host shutting down: powered off linux"
        );
    }

    #[test]
    fn display_commands_route_to_the_trait_with_one_status_line() {
        let mut m = Model::new();
        for (line, want, call) in [
            (
                "display present linux panel 10 20 320 240",
                "ok: vm linux presented as a panel 320x240 at (10, 20)",
                "display linux Present(Panel { x: 10, y: 20, w: 320, h: 240 })",
            ),
            (
                "display present linux fullscreen",
                "ok: vm linux presented fullscreen",
                "display linux Present(Fullscreen)",
            ),
            (
                "display present linux quad 0 0 9 0 9 9 0 9",
                "ok: vm linux presented as a quad (0, 0) (9, 0) (9, 9) (0, 9)",
                "display linux Present(Quad([(0, 0), (9, 0), (9, 9), (0, 9)]))",
            ),
            (
                "display hide linux",
                "ok: vm linux hidden",
                "display linux Hide",
            ),
            (
                "display freeze linux",
                "ok: vm linux frozen (its last frame stays)",
                "display linux Freeze",
            ),
            (
                "display unfreeze linux",
                "ok: vm linux live again",
                "display linux Unfreeze",
            ),
            (
                "display throttle linux 5",
                "ok: vm linux throttled to 5 frames/s",
                "display linux Throttle { fps: 5 }",
            ),
            (
                "display mode linux 800 600",
                "ok: vm linux virtual monitor mode 800x600 (guest notified)",
                "display linux Mode { width: 800, height: 600 }",
            ),
            (
                "display overlay hello  world",
                "ok: overlay shows 'hello  world'",
                "overlay 'hello  world'",
            ),
            ("display overlay", "ok: overlay removed", "overlay ''"),
        ] {
            assert_eq!(run(&mut m, line), want);
            assert_eq!(m.calls.pop().as_deref(), Some(call), "{line}");
        }
        assert_eq!(
            run(&mut m, "display status"),
            "ok: 1280x800; linux presented"
        );
        // Errors name the VM or the value, and change nothing.
        assert_eq!(
            run(&mut m, "display hide nope"),
            "error: no VM named 'nope' (see `vm list`)"
        );
        assert_eq!(
            run(&mut m, "display throttle linux 0"),
            "error: vm linux: frame rate 0 is not within 1..=1000; nothing changed"
        );
        assert!(run(&mut m, "display throttle linux x").starts_with("error: `display throttle`"));
        assert!(m.calls.is_empty(), "{:?}", m.calls);
    }

    #[test]
    fn usb_commands_reach_the_vm_and_report_what_they_did() {
        let mut m = Model::new();
        assert_eq!(
            run(&mut m, "usb detach linux"),
            "ok: vm linux USB storage detached"
        );
        assert_eq!(
            run(&mut m, "usb attach linux"),
            "error: vm linux: the USB storage device is attached already; nothing changed"
        );
        assert!(run(&mut m, "usb detach nosuch").starts_with("error: no VM named 'nosuch'"));
        assert!(run(&mut m, "usb key linux 0x04").starts_with("error: "));
        assert!(run(&mut m, "usb").starts_with("error: `usb` needs a subcommand"));
        assert_eq!(
            m.calls,
            ["usb linux DetachStorage"],
            "refused lines call nothing"
        );
    }

    #[test]
    fn help_is_one_line_naming_every_command() {
        let mut m = Model::new();
        let s = run(&mut m, "help");
        for c in [
            "vm list",
            "vm pause/resume/suspend",
            "vm snapshot",
            "vm rollback",
            "vm snapshots",
            "vm delete-snapshot",
            "host shutdown",
            "display present",
            "display hide/freeze/unfreeze",
            "display throttle",
            "display mode",
            "display overlay",
            "display status",
            "input type",
            "/key",
            "/pointer",
            "/click",
            "/gaze",
            "/interactive",
            "usb detach/attach",
            "help",
        ] {
            assert!(s.contains(c), "{c}");
        }
        assert!(!s.ends_with("..."), "not cut: {s}");
    }

    #[test]
    fn hostile_names_stay_on_one_bounded_line() {
        let mut m = Model::new();
        m.vms[0].name = "evil\r\n[el2 INFO ] forged\x1b[2J".repeat(50);
        let s = run(&mut m, "vm list");
        assert!(s.len() <= "error: ".len() + STATUS_MAX, "{}", s.len());
        assert!(s.ends_with("..."));
        assert!(s.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        assert_eq!(Status::error("a\u{e9}\tb").to_string(), "error: a??b");
    }
}
