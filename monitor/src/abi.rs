//! The authority ABI, hypervisor side: [`Dispatcher::call`] takes the x0..x7 of
//! an authority HVC, decodes and validates it ([`authority_abi::call`]), performs
//! it on an [`AbiTarget`] (el2's [`VmControl`] plus what the ABI has beyond the
//! monitor's commands), reads and writes the authority's memory through
//! [`AuthorityMemory`], and answers x0. VM state changes it causes are pushed into
//! the event ring the authority registered with OPEN.
//!
//! **VM ids.** A VM's id is its position in a table of every name the dispatcher
//! has seen in [`VmControl::list`], in first-seen order; a name keeps its id for
//! the dispatcher's life (a VM that is gone answers NO_SUCH_VM, and its id is
//! never given to another VM).
//!
//! **Replies.** Each call but REPLY leaves a [`authority_abi::reply`] record: its
//! text result, or the [`ControlError`] (variant and fields) it failed with, so
//! the client ([`crate::abi_client`]) rebuilds exactly the error the monitor
//! would have printed.
//!
//! el2 (not this crate) must: answer NOT_SUPPORTED for the whole range to any
//! partition but the authority without calling this; implement
//! [`AuthorityMemory`] over the authority's stage-2 (an IPA range is the
//! authority's RAM or nothing); power the host off when an outcome says
//! [`After::PowerOffHost`] (after answering the call).

use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use authority_abi::call::{
    self, parse_tag, Buffer, Call, InputKind, Placement, Rect, Session, VmEntry, VmId,
    VM_ENTRY_SIZE, VM_NAME_MAX,
};
use authority_abi::input::{decode_all, Button, Chord, InputEvent};
use authority_abi::reply::{self, ErrorKind};
use authority_abi::ring::{self, Event, RingError};
use authority_abi::{Status as AbiStatus, VERSION};

use crate::command::{
    DisplayChange, DisplayPlacement, InputAction, MouseButton, SnapshotStore, UsbOp,
};
use crate::control::{After, ControlError, VmControl, VmState};

/// The authority partition's memory, as el2 maps it at stage 2.
pub trait AuthorityMemory {
    /// Whether `[ipa, ipa + len)` lies entirely in the authority's own RAM.
    fn contains(&self, ipa: u64, len: u64) -> bool;
    /// Copies authority memory at `ipa` into `buf` (a range [`Self::contains`]
    /// said yes to).
    fn read(&self, ipa: u64, buf: &mut [u8]);
    /// Copies `buf` into authority memory at `ipa` (a range [`Self::contains`]
    /// said yes to).
    fn write(&mut self, ipa: u64, buf: &[u8]);
    /// Orders the writes before it before the writes after it as the authority's
    /// CPUs see them (`DMB ISHST`): between a ring entry and its producer index.
    fn store_barrier(&mut self) {}
}

fn unsupported<T>(what: &str) -> Result<T, ControlError> {
    Err(ControlError::Unsupported {
        what: what.into(),
        why: "this hypervisor does not implement it",
    })
}

/// What the authority ABI can do beyond the monitor's commands. Every method has
/// a default that answers [`ControlError::Unsupported`], so el2 implements them as
/// it grows them.
pub trait AbiTarget: VmControl {
    /// Starts a VM that is off: resumes its saved state if it has one, else cold
    /// boots it (VM_START).
    fn start(&mut self, vm: &str) -> Result<(), ControlError> {
        let _ = vm;
        unsupported("vm start")
    }
    /// `vm`'s ABI state (`None`: no such VM) for VM_LIST, the calls' VM checks
    /// and state events — each call asks it of every VM, before and after;
    /// by default its [`VmControl::list`] state.
    fn abi_state(&self, vm: &str) -> Option<call::VmState> {
        self.list()
            .into_iter()
            .find(|v| v.name == vm)
            .map(|v| match v.state {
                VmState::Running => call::VmState::Running,
                VmState::Paused => call::VmState::Paused,
                VmState::Off => call::VmState::Off,
            })
    }
    /// `vm`'s flags (`VM_PRESENTED` …) for VM_LIST alone; by default none.
    fn abi_flags(&self, vm: &str) -> u32 {
        let _ = vm;
        0
    }
    /// `vm`'s policy bits (the registry's).
    fn policy(&self, vm: &str) -> Result<u32, ControlError> {
        let _ = vm;
        unsupported("policy")
    }
    fn set_policy(&mut self, vm: &str, bits: u32) -> Result<(), ControlError> {
        let _ = (vm, bits);
        unsupported("policy")
    }
    /// Routes input events (through the VM's routing); answers how many were
    /// delivered.
    fn inject(&mut self, vm: &str, events: &[InputEvent]) -> Result<u64, ControlError> {
        let _ = (vm, events);
        unsupported("input injection")
    }
    /// Starts an input script (its text, unparsed); its end is a `ScriptDone`
    /// event ([`Dispatcher::notify`]).
    fn run_script(&mut self, vm: &str, script: &[u8]) -> Result<(), ControlError> {
        let _ = (vm, script);
        unsupported("input scripts")
    }
    /// Captures `vm`'s frame (or a region of it, which must lie inside the frame)
    /// as XRGB8888 rows of `w * 4` bytes, handing `write(offset, bytes)` as many
    /// whole rows as fit in `max` bytes; answers what was captured.
    fn capture(
        &mut self,
        vm: &str,
        region: Option<Rect>,
        max: u64,
        write: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<Captured, ControlError> {
        let _ = (vm, region, max, write);
        unsupported("capture")
    }
    /// Takes up to `out.len()` bytes of `vm`'s serial output.
    fn console_read(&mut self, vm: &str, out: &mut [u8]) -> Result<usize, ControlError> {
        let _ = (vm, out);
        unsupported("console attach")
    }
    /// Gives `data` to `vm`'s serial input; answers the bytes taken.
    fn console_write(&mut self, vm: &str, data: &[u8]) -> Result<usize, ControlError> {
        let _ = (vm, data);
        unsupported("console attach")
    }
    /// Reserves `chord` of the physical keyboard for RayOS (`None`: none): its
    /// press becomes a [`Event::ReservedKey`], never a guest's input.
    fn reserve_key(&mut self, chord: Option<Chord>) -> Result<(), ControlError> {
        let _ = chord;
        unsupported("reserved keys")
    }
}

/// What [`AbiTarget::capture`] wrote: `bytes` of rows, of a capture `width` ×
/// `height` pixels (the region, or the whole frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Captured {
    pub bytes: u64,
    pub width: u32,
    pub height: u32,
}

/// What a call answered, and what el2 must do after answering it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub x0: u64,
    pub after: After,
}

/// One authority session's hypervisor side.
#[derive(Debug, Default)]
pub struct Dispatcher {
    open: bool,
    ring: Option<Buffer>,
    /// VM id → name.
    ids: Vec<String>,
    /// The REPLY record of the most recent call.
    reply: Vec<u8>,
    /// Events not reported because the ring was full or unusable.
    lost_events: u64,
    /// Calls refused before reaching a VM (decode or validate), and the last.
    refused: u64,
    last_refused: Option<(u64, AbiStatus)>,
}

struct Check<'a> {
    open: bool,
    live: &'a [bool],
    mem: &'a dyn AuthorityMemory,
}

impl Session for Check<'_> {
    fn is_open(&self) -> bool {
        self.open
    }
    fn vm_exists(&self, vm: VmId) -> bool {
        self.live.get(vm.0 as usize).copied().unwrap_or(false)
    }
    fn is_authority_memory(&self, ipa: u64, len: u64) -> bool {
        self.mem.contains(ipa, len)
    }
}

/// The ABI status a [`ControlError`] answers with.
pub fn status_of(e: &ControlError) -> AbiStatus {
    match e {
        ControlError::NoSuchVm(_) => AbiStatus::NoSuchVm,
        ControlError::AlreadyPaused(_)
        | ControlError::NotPaused { .. }
        | ControlError::NotRunning { .. } => AbiStatus::BadState,
        ControlError::NoSuchSnapshot { .. } => AbiStatus::NoSuchSnapshot,
        ControlError::SnapshotExists { .. } => AbiStatus::Denied,
        ControlError::Unsupported { .. } => AbiStatus::NotSupported,
        ControlError::Timeout { .. } | ControlError::Failed { .. } => AbiStatus::Failed,
        ControlError::Invalid { .. } => AbiStatus::InvalidParameters,
    }
}

fn state_code(s: VmState) -> u32 {
    match s {
        VmState::Running => call::VmState::Running as u32,
        VmState::Paused => call::VmState::Paused as u32,
        VmState::Off => call::VmState::Off as u32,
    }
}

/// Encodes `e` as a REPLY record.
pub fn error_record(e: &ControlError) -> Vec<u8> {
    let (kind, state, a, b): (ErrorKind, u32, &str, &str) = match e {
        ControlError::NoSuchVm(vm) => (ErrorKind::NoSuchVm, 0, vm, ""),
        ControlError::AlreadyPaused(vm) => (ErrorKind::AlreadyPaused, 0, vm, ""),
        ControlError::NotPaused { vm, state } => (ErrorKind::NotPaused, state_code(*state), vm, ""),
        ControlError::NotRunning { vm, state } => {
            (ErrorKind::NotRunning, state_code(*state), vm, "")
        }
        ControlError::NoSuchSnapshot { vm, tag } => (ErrorKind::NoSuchSnapshot, 0, vm, tag),
        ControlError::SnapshotExists { vm, tag } => (ErrorKind::SnapshotExists, 0, vm, tag),
        ControlError::Unsupported { what, why } => (ErrorKind::Unsupported, 0, what, why),
        ControlError::Timeout { vm, what } => (ErrorKind::Timeout, 0, vm, what),
        ControlError::Failed { vm, why } => (ErrorKind::Failed, 0, vm, why),
        ControlError::Invalid { vm, why } => (ErrorKind::Invalid, 0, vm, why),
    };
    let two = matches!(
        kind,
        ErrorKind::NoSuchVm
            | ErrorKind::AlreadyPaused
            | ErrorKind::NotPaused
            | ErrorKind::NotRunning
    );
    let items: &[(u64, &str)] = if two {
        &[(0, a)][..]
    } else {
        &[(0, a), (0, b)][..]
    };
    record(kind as u32, state, items)
}

fn record(kind: u32, state: u32, items: &[(u64, &str)]) -> Vec<u8> {
    let len = reply::encode(kind, state, items.iter().copied(), &mut []);
    let mut out = vec![0; len];
    reply::encode(kind, state, items.iter().copied(), &mut out);
    out
}

fn ok_record(items: &[(u64, &str)]) -> Vec<u8> {
    record(0, 0, items)
}

/// Printable ASCII text from authority memory (what a monitor line may hold).
fn read_text(mem: &dyn AuthorityMemory, b: Buffer) -> Result<String, AbiStatus> {
    let mut t = vec![0; b.len as usize];
    mem.read(b.ipa, &mut t);
    if !t.iter().all(|c| (0x20..=0x7e).contains(c)) {
        return Err(AbiStatus::InvalidParameters);
    }
    String::from_utf8(t).map_err(|_| AbiStatus::InvalidParameters)
}

fn read_bytes(mem: &dyn AuthorityMemory, b: Buffer) -> Vec<u8> {
    let mut t = vec![0; b.len as usize];
    mem.read(b.ipa, &mut t);
    t
}

fn button(b: Button) -> MouseButton {
    match b {
        Button::Left => MouseButton::Left,
        Button::Right => MouseButton::Right,
        Button::Middle => MouseButton::Middle,
        Button::Back => MouseButton::Back,
        Button::Forward => MouseButton::Forward,
    }
}

impl Dispatcher {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether OPEN succeeded.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The id VM `name` has (it gets one if it has none yet).
    pub fn id_of(&mut self, name: &str) -> VmId {
        match self.ids.iter().position(|n| n == name) {
            Some(i) => VmId(i as u32),
            None => {
                self.ids.push(name.into());
                VmId(self.ids.len() as u32 - 1)
            }
        }
    }

    /// Events lost because the ring was full or its header was scribbled.
    pub fn lost_events(&self) -> u64 {
        self.lost_events
    }

    /// Reports `ev` in the registered ring (el2: frame ready, script done, state
    /// changes it makes on its own). Without a ring (not open) nothing happens.
    pub fn notify(&mut self, ev: &Event, mem: &mut dyn AuthorityMemory) -> Result<(), RingError> {
        let Some(r) = self.ring else {
            return Ok(());
        };
        // Read the whole ring, push into the copy, and write back only what the
        // producer owns: the entry (or the dropped count), then the index.
        let before = read_bytes(mem, r);
        let mut m = before.clone();
        let res = ring::push(&mut m, ev);
        for (start, end) in changed(&before, &m) {
            mem.write(r.ipa + start as u64, &m[start..end]);
        }
        match res {
            Ok(producer) => {
                mem.store_barrier();
                let mut idx = [0u8; 4];
                idx.copy_from_slice(&producer.to_le_bytes());
                mem.write(r.ipa + PRODUCER_AT, &idx);
                Ok(())
            }
            Err(e) => {
                self.lost_events += 1;
                Err(e)
            }
        }
    }

    /// Performs one authority HVC (`x[0]` the function id; x1..x7 its
    /// arguments) and answers x0.
    pub fn call(
        &mut self,
        x: [u64; 8],
        ctl: &mut dyn AbiTarget,
        mem: &mut dyn AuthorityMemory,
    ) -> Outcome {
        let mut after = After::Nothing;
        let before = self.states(ctl);
        let x0 = match self.run(x, ctl, mem, &mut after) {
            Ok(v) => v,
            Err(s) => s.to_x0(),
        };
        // State changes the call made become events.
        let now = self.states(ctl);
        for (id, st) in now.iter().enumerate() {
            let old = before.get(id).copied().flatten();
            if let Some(state) = st {
                if old != Some(*state) {
                    let ev = Event::VmState {
                        vm: VmId(id as u32),
                        state: *state,
                    };
                    let _ = self.notify(&ev, mem);
                }
            }
        }
        Outcome { x0, after }
    }

    /// Every known id's state (`None`: no such VM now); learns new names.
    fn states(&mut self, ctl: &dyn AbiTarget) -> Vec<Option<call::VmState>> {
        for v in ctl.list() {
            self.id_of(&v.name);
        }
        self.ids.iter().map(|n| ctl.abi_state(n)).collect()
    }

    fn refuse(&mut self, s: AbiStatus) -> AbiStatus {
        self.reply = record(ErrorKind::Refused as u32, 0, &[]);
        self.refused += 1;
        s
    }

    /// How many calls were refused before reaching a VM (malformed, not open,
    /// bad id or buffer), and the function id and status of the last one: el2
    /// logs these rate-limited (this crate does not log).
    pub fn refused(&self) -> (u64, Option<(u64, AbiStatus)>) {
        (self.refused, self.last_refused)
    }

    fn run(
        &mut self,
        x: [u64; 8],
        ctl: &mut dyn AbiTarget,
        mem: &mut dyn AuthorityMemory,
        after: &mut After,
    ) -> Result<u64, AbiStatus> {
        let mut a = [0u64; 7];
        a.copy_from_slice(&x[1..]);
        let fid = u32::try_from(x[0]).map_err(|_| AbiStatus::NotSupported);
        let call = match fid.and_then(|f| call::decode(f, &a)) {
            Ok(c) => c,
            Err(s) => {
                self.last_refused = Some((x[0], s));
                return Err(self.refuse(s));
            }
        };
        let live: Vec<bool> = self
            .ids
            .iter()
            .map(|n| ctl.abi_state(n).is_some())
            .collect();
        let checked = call::validate(
            &call,
            &Check {
                open: self.open,
                live: &live,
                mem,
            },
        );
        if let Err(s) = checked {
            self.last_refused = Some((x[0], s));
            return Err(self.refuse(s));
        }
        if let Call::Reply { out } = call {
            if self.reply.len() as u64 <= out.len {
                mem.write(out.ipa, &self.reply);
            }
            return Ok(self.reply.len() as u64);
        }
        let name = call.vm().map(|v| self.ids[v.0 as usize].clone());
        let vm = name.as_deref().unwrap_or("");
        self.reply = ok_record(&[]);
        let r = self.perform(call, vm, ctl, mem, after);
        match r {
            Ok(v) => Ok(v),
            Err(Failure::Status(s)) => {
                self.last_refused = Some((x[0], s));
                Err(self.refuse(s))
            }
            Err(Failure::Control(e)) => {
                self.reply = error_record(&e);
                Err(status_of(&e))
            }
        }
    }

    fn perform(
        &mut self,
        call: Call,
        vm: &str,
        ctl: &mut dyn AbiTarget,
        mem: &mut dyn AuthorityMemory,
        after: &mut After,
    ) -> Result<u64, Failure> {
        let display = |ctl: &mut dyn AbiTarget, change| ctl.display(vm, change).map(|()| 0);
        Ok(match call {
            Call::Version => VERSION.to_reg(),
            Call::Open { ring: r, .. } => {
                if ring::check(&read_bytes(mem, r)).is_err() {
                    return Err(Failure::Status(AbiStatus::InvalidParameters));
                }
                self.open = true;
                self.ring = Some(r);
                0
            }
            Call::VmList { out } => {
                let vms = ctl.list();
                let fit = (out.len / VM_ENTRY_SIZE as u64) as usize;
                for (i, v) in vms.iter().take(fit).enumerate() {
                    let id = self.id_of(&v.name);
                    let state = ctl.abi_state(&v.name).unwrap_or(call::VmState::Off);
                    let flags = ctl.abi_flags(&v.name);
                    let mut name = [0u8; VM_NAME_MAX];
                    let n = v.name.len().min(VM_NAME_MAX);
                    name[..n].copy_from_slice(&v.name.as_bytes()[..n]);
                    let e = VmEntry {
                        id,
                        state,
                        vcpus: v.vcpus as u32,
                        flags,
                        name,
                    };
                    mem.write(out.ipa + (i * VM_ENTRY_SIZE) as u64, &e.encode());
                }
                vms.len() as u64
            }
            Call::VmStart(_) => ctl.start(vm).map(|()| 0)?,
            Call::VmPause(_) => ctl.pause(vm).map(|()| 0)?,
            Call::VmResume(_) => ctl.resume(vm).map(|()| 0)?,
            Call::VmSuspend(_) => {
                let r = ctl.suspend(vm)?;
                self.reply = ok_record(&[(r.bytes_written, "")]);
                r.bytes_written
            }
            Call::VmSnapshot { tag, disk, .. } => {
                let t = read_bytes(mem, tag);
                let t = parse_tag(&t).map_err(Failure::Status)?;
                let store = if disk {
                    SnapshotStore::Disk
                } else {
                    SnapshotStore::Memory
                };
                let s = ctl.snapshot(vm, t, store)?;
                self.reply = ok_record(&[(s.bytes, &s.note)]);
                s.bytes
            }
            Call::VmRollback { tag, .. } | Call::VmDeleteSnapshot { tag, .. } => {
                let t = read_bytes(mem, tag);
                let t = parse_tag(&t).map_err(Failure::Status)?;
                if matches!(call, Call::VmRollback { .. }) {
                    ctl.rollback(vm, t)?;
                } else {
                    ctl.delete_snapshot(vm, t)?;
                }
                0
            }
            Call::VmSnapshots(_) => {
                let list = ctl.snapshots(vm)?;
                let mut items: Vec<(u64, &str)> = Vec::new();
                for s in &list {
                    let store = (s.store == SnapshotStore::Disk) as u64;
                    items.push((s.bytes, &s.tag));
                    items.push((store, &s.note));
                }
                self.reply = ok_record(&items);
                list.len() as u64
            }
            Call::Present { placement, .. } => {
                let p = match placement {
                    Placement::Panel(r) => DisplayPlacement::Panel {
                        x: r.x,
                        y: r.y,
                        w: r.w,
                        h: r.h,
                    },
                    Placement::Fullscreen => DisplayPlacement::Fullscreen,
                    Placement::Quad(q) => DisplayPlacement::Quad(q),
                };
                display(ctl, DisplayChange::Present(p))?
            }
            Call::Hide(_) => display(ctl, DisplayChange::Hide)?,
            Call::Freeze(_) => display(ctl, DisplayChange::Freeze)?,
            Call::Unfreeze(_) => display(ctl, DisplayChange::Unfreeze)?,
            Call::Throttle { fps, .. } => display(ctl, DisplayChange::Throttle { fps })?,
            Call::SetMode { w, h, .. } => display(
                ctl,
                DisplayChange::Mode {
                    width: w,
                    height: h,
                },
            )?,
            Call::SetInput { interactive, .. } => {
                let t = ctl.input(vm, InputAction::Interactive(interactive))?;
                self.reply = ok_record(&[(0, &t)]);
                0
            }
            Call::InjectInput { events, .. } => {
                let mut evs = Vec::new();
                decode_all(&read_bytes(mem, events), &mut evs).map_err(Failure::Status)?;
                ctl.inject(vm, &evs)?
            }
            Call::RunInputScript { script, .. } => {
                ctl.run_script(vm, &read_bytes(mem, script))?;
                0
            }
            Call::Capture { region, out, .. } => {
                let mut write = |off: u64, bytes: &[u8]| {
                    // The target is el2's own code, but a row past the buffer
                    // would be a write outside what validate checked.
                    if off
                        .checked_add(bytes.len() as u64)
                        .is_some_and(|end| end <= out.len)
                    {
                        mem.write(out.ipa + off, bytes);
                    }
                };
                let c = ctl.capture(vm, region, out.len, &mut write)?;
                self.reply = ok_record(&[(u64::from(c.width), ""), (u64::from(c.height), "")]);
                c.bytes.min(out.len)
            }
            Call::PolicyGet(_) => ctl.policy(vm)? as u64,
            Call::PolicySet { bits, .. } => ctl.set_policy(vm, bits).map(|()| 0)?,
            Call::Reply { .. } => 0,
            Call::HostShutdown => {
                let r = ctl.host_shutdown()?;
                let mut items: Vec<(u64, &str)> = Vec::new();
                items.extend(r.powered_off.iter().map(|n| (0, n.as_str())));
                items.extend(r.suspended.iter().map(|n| (1, n.as_str())));
                self.reply = ok_record(&items);
                *after = After::PowerOffHost;
                0
            }
            Call::DisplayOverlay { text } => {
                let t = match text {
                    Some(b) => read_text(mem, b).map_err(Failure::Status)?,
                    None => String::new(),
                };
                ctl.display_overlay(&t)?;
                0
            }
            Call::DisplayStatus => {
                let t = ctl.display_status()?;
                self.reply = ok_record(&[(0, &t)]);
                0
            }
            Call::ReserveKey(chord) => {
                ctl.reserve_key(chord)?;
                0
            }
            Call::InputAction { kind, .. } => {
                let text = match kind {
                    InputKind::Type(b) | InputKind::Key(b) => {
                        read_text(mem, b).map_err(Failure::Status)?
                    }
                    _ => String::new(),
                };
                let action = match kind {
                    InputKind::Type(_) => InputAction::Type(&text),
                    InputKind::Key(_) => InputAction::Key(&text),
                    InputKind::Pointer { x, y } => InputAction::Pointer { x, y },
                    InputKind::Click { x, y, button: b } => InputAction::Click {
                        x,
                        y,
                        button: button(b),
                    },
                    InputKind::Gaze { x, y, ms } => InputAction::Gaze { x, y, ms },
                };
                let t = ctl.input(vm, action)?;
                self.reply = ok_record(&[(0, &t)]);
                0
            }
            Call::Usb { op, .. } => {
                let op = match op {
                    call::UsbOp::Detach => UsbOp::DetachStorage,
                    call::UsbOp::Attach => UsbOp::AttachStorage,
                };
                ctl.usb(vm, op).map(|()| 0)?
            }
            Call::ConsoleRead { out, .. } => {
                let mut b = vec![0; out.len as usize];
                let n = ctl.console_read(vm, &mut b)?.min(b.len());
                mem.write(out.ipa, &b[..n]);
                n as u64
            }
            Call::ConsoleWrite { data, .. } => {
                let d = read_bytes(mem, data);
                ctl.console_write(vm, &d)?.min(d.len()) as u64
            }
        })
    }
}

/// The ring header's producer index offset.
const PRODUCER_AT: u64 = 16;
/// The ring header's consumer index: the authority's, never written back.
const CONSUMER: core::ops::Range<usize> = 20..24;

/// The byte ranges where `a` and `b` differ, outside the consumer index.
fn changed(a: &[u8], b: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] && !CONSUMER.contains(&i) {
            let start = i;
            while i < a.len() && a[i] != b[i] && !CONSUMER.contains(&i) {
                i += 1;
            }
            out.push((start, i));
        } else {
            i += 1;
        }
    }
    out
}

enum Failure {
    Status(AbiStatus),
    Control(ControlError),
}

impl From<ControlError> for Failure {
    fn from(e: ControlError) -> Self {
        Failure::Control(e)
    }
}
