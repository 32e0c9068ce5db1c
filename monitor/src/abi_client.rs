//! The authority ABI, caller side: [`AbiControl`] implements [`VmControl`] over
//! authority hypercalls, so the authority partition runs the monitor's own
//! command parser and prints the monitor's own status lines
//! ([`crate::execute`]`(line, &mut abi_control)`), plus what the ABI has beyond
//! the monitor (start, policy, input routing, console, the event ring).
//!
//! The client owns one **shared buffer** in its own memory: the event ring
//! ([`RING_BYTES`]) and then the argument area where tags and texts go and
//! VM_LIST, REPLY and CONSOLE_READ write. [`Hypercall::ipa_of`] says where that
//! buffer is for the hypervisor.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use authority_abi::call::{
    Buffer, Call, InputKind, Placement, Rect, VmEntry, VmId, REPLY_MAX, TEXT_MAX, VM_ENTRY_SIZE,
};
use authority_abi::input::{Button, Chord};
use authority_abi::reply::{ErrorKind, Record};
use authority_abi::ring::{self, Event};
use authority_abi::{call, Status as AbiStatus, VERSION};

use crate::command::{
    DisplayChange, DisplayPlacement, InputAction, MouseButton, SnapshotStore, UsbOp,
};
use crate::control::{
    ControlError, ShutdownReport, SnapshotInfo, SuspendReport, VmControl, VmInfo, VmState,
};

/// One HVC: x0..x7 in, x0..x3 out.
pub trait Hypercall {
    /// The IPA of `shared` (the client's shared buffer) as the hypervisor sees it.
    fn ipa_of(&self, shared: &[u8]) -> u64;
    /// `HVC #0` with `x`; the hypervisor may read and write `shared` meanwhile.
    fn hvc(&mut self, x: [u64; 8], shared: &mut [u8]) -> [u64; 4];
}

/// Where [`AbiControl::capture`] hands the rows: the capture's (width, height)
/// and the next rows' bytes.
pub type CaptureRows<'a> = dyn FnMut((u32, u32), &[u8]) + 'a;

/// Bytes of the event ring at the start of the shared buffer.
pub const RING_BYTES: usize = 4096;
/// Bytes of the argument area after it (a REPLY record fits).
pub const ARGS_BYTES: usize = REPLY_MAX as usize;
/// Most distinct `Unsupported` reasons kept (they must be `'static`).
const WHY_MAX: usize = 32;
/// What an `Unsupported` reason past [`WHY_MAX`] reads as.
const WHY_LOST: &str = "(the hypervisor's reason is not shown)";

struct Inner<H> {
    h: H,
    shared: Vec<u8>,
    /// `Unsupported` reasons seen, leaked once each (the hypervisor's are
    /// string literals: a handful).
    whys: Vec<&'static str>,
}

/// [`VmControl`] over the authority ABI.
pub struct AbiControl<H: Hypercall> {
    inner: RefCell<Inner<H>>,
}

/// Why the session could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The call answered this (NOT_SUPPORTED: not the authority, or no ABI).
    Status(AbiStatus),
    /// The hypervisor's version does not serve ours.
    Version(authority_abi::Version),
}

impl<H: Hypercall> Inner<H> {
    fn args_ipa(&self) -> u64 {
        self.h.ipa_of(&self.shared) + RING_BYTES as u64
    }

    /// Puts `data` at the start of the argument area; its buffer.
    fn put(&mut self, data: &[u8]) -> Buffer {
        self.shared[RING_BYTES..RING_BYTES + data.len()].copy_from_slice(data);
        Buffer {
            ipa: self.args_ipa(),
            len: data.len() as u64,
        }
    }

    fn args(&self, len: usize) -> &[u8] {
        &self.shared[RING_BYTES..RING_BYTES + len]
    }

    fn raw(&mut self, c: &Call) -> Result<u64, AbiStatus> {
        let (fid, a) = c.encode();
        let mut x = [0u64; 8];
        x[0] = fid as u64;
        x[1..].copy_from_slice(&a);
        let out = self.h.hvc(x, &mut self.shared);
        AbiStatus::from_x0(out[0]).map_err(|s| s.unwrap_or(AbiStatus::NotSupported))
    }

    /// The REPLY record of the last call, copied out.
    fn reply(&mut self) -> Option<Vec<u8>> {
        let out = Buffer {
            ipa: self.args_ipa(),
            len: ARGS_BYTES as u64,
        };
        let len = self.raw(&Call::Reply { out }).ok()? as usize;
        if len > ARGS_BYTES {
            return None;
        }
        let b = self.args(len).to_vec();
        Record::parse(&b)?;
        Some(b)
    }

    fn intern(&mut self, why: &str) -> &'static str {
        if let Some(w) = self.whys.iter().find(|w| **w == why) {
            return w;
        }
        if self.whys.len() == WHY_MAX {
            return WHY_LOST;
        }
        let w: &'static str = Box::leak(why.to_string().into_boxed_str());
        self.whys.push(w);
        w
    }

    /// The error a failed call on `vm` answered, as the monitor would print it.
    fn error(&mut self, vm: &str, s: AbiStatus) -> ControlError {
        let Some(b) = self.reply() else {
            return refused(vm, s);
        };
        let Some(r) = Record::parse(&b) else {
            return refused(vm, s);
        };
        let (a, t) = (String::from(r.text(0)), String::from(r.text(1)));
        let state = match r.vm_state() {
            Some(call::VmState::Running) => VmState::Running,
            Some(call::VmState::Paused) => VmState::Paused,
            _ => VmState::Off,
        };
        match ErrorKind::from_u32(r.kind) {
            Some(ErrorKind::NoSuchVm) => ControlError::NoSuchVm(a),
            Some(ErrorKind::AlreadyPaused) => ControlError::AlreadyPaused(a),
            Some(ErrorKind::NotPaused) => ControlError::NotPaused { vm: a, state },
            Some(ErrorKind::NotRunning) => ControlError::NotRunning { vm: a, state },
            Some(ErrorKind::NoSuchSnapshot) => ControlError::NoSuchSnapshot { vm: a, tag: t },
            Some(ErrorKind::SnapshotExists) => ControlError::SnapshotExists { vm: a, tag: t },
            Some(ErrorKind::Unsupported) => ControlError::Unsupported {
                what: a,
                why: self.intern(&t),
            },
            Some(ErrorKind::Timeout) => ControlError::Timeout {
                vm: a,
                what: self.intern(&t),
            },
            Some(ErrorKind::Failed) => ControlError::Failed { vm: a, why: t },
            Some(ErrorKind::Invalid) => ControlError::Invalid { vm: a, why: t },
            _ => refused(vm, s),
        }
    }

    fn list(&mut self) -> Vec<VmEntry> {
        let out = Buffer {
            ipa: self.args_ipa(),
            len: (ARGS_BYTES / VM_ENTRY_SIZE * VM_ENTRY_SIZE) as u64,
        };
        let Ok(n) = self.raw(&Call::VmList { out }) else {
            return Vec::new();
        };
        let n = (n as usize).min(ARGS_BYTES / VM_ENTRY_SIZE);
        (0..n)
            .filter_map(|i| {
                let mut e = [0u8; VM_ENTRY_SIZE];
                e.copy_from_slice(&self.shared[RING_BYTES + i * VM_ENTRY_SIZE..][..VM_ENTRY_SIZE]);
                VmEntry::decode(&e)
            })
            .collect()
    }

    fn id(&mut self, vm: &str) -> Result<VmId, ControlError> {
        self.list()
            .into_iter()
            .find(|e| e.name() == Some(vm))
            .map(|e| e.id)
            .ok_or_else(|| ControlError::NoSuchVm(vm.into()))
    }

    /// Makes the call `make(id)` on `vm`; x0 or the error it failed with.
    fn on(
        &mut self,
        vm: &str,
        make: impl FnOnce(&mut Self, VmId) -> Call,
    ) -> Result<u64, ControlError> {
        let id = self.id(vm)?;
        let c = make(self, id);
        self.raw(&c).map_err(|s| self.error(vm, s))
    }

    /// A call on no VM.
    fn plain(&mut self, c: &Call) -> Result<u64, ControlError> {
        self.raw(c).map_err(|s| self.error("", s))
    }

    fn reply_record(&mut self) -> Vec<u8> {
        self.reply().unwrap_or_default()
    }
}

fn refused(vm: &str, s: AbiStatus) -> ControlError {
    ControlError::Failed {
        vm: vm.into(),
        why: format!("the hypervisor refused the call ({s:?})"),
    }
}

fn snapshot_list(rec: &[u8]) -> Vec<SnapshotInfo> {
    let Some(r) = Record::parse(rec) else {
        return Vec::new();
    };
    let items: Vec<(u64, &str)> = r.items().collect();
    items
        .chunks_exact(2)
        .map(|p| SnapshotInfo {
            tag: p[0].1.into(),
            bytes: p[0].0,
            store: if p[1].0 == 1 {
                SnapshotStore::Disk
            } else {
                SnapshotStore::Memory
            },
            note: p[1].1.into(),
        })
        .collect()
}

impl<H: Hypercall> AbiControl<H> {
    /// Checks the hypervisor's version, registers the event ring and opens the
    /// session.
    pub fn open(h: H) -> Result<Self, OpenError> {
        let mut inner = Inner {
            h,
            shared: vec![0; RING_BYTES + ARGS_BYTES],
            whys: Vec::new(),
        };
        let v = inner.raw(&Call::Version).map_err(OpenError::Status)?;
        let theirs = authority_abi::Version::from_reg(v)
            .unwrap_or(authority_abi::Version { major: 0, minor: 0 });
        if !theirs.serves(VERSION) {
            return Err(OpenError::Version(theirs));
        }
        ring::init(&mut inner.shared[..RING_BYTES])
            .map_err(|_| OpenError::Status(AbiStatus::NoSpace))?;
        let r = Buffer {
            ipa: inner.h.ipa_of(&inner.shared),
            len: RING_BYTES as u64,
        };
        inner
            .raw(&Call::Open {
                version: VERSION,
                ring: r,
            })
            .map_err(OpenError::Status)?;
        Ok(Self {
            inner: RefCell::new(inner),
        })
    }

    /// The hypercall handle (tests look at what is behind it).
    pub fn hypercall(&self) -> core::cell::Ref<'_, H> {
        core::cell::Ref::map(self.inner.borrow(), |i| &i.h)
    }

    /// The hypercall handle, to change (tests play the hypervisor through it).
    pub fn hypercall_mut(&mut self) -> &mut H {
        &mut self.inner.get_mut().h
    }

    /// Every VM as VM_LIST says (ids, ABI states, flags).
    pub fn entries(&self) -> Vec<VmEntry> {
        self.inner.borrow_mut().list()
    }

    /// Starts `vm` (resume its saved state, or cold boot).
    pub fn start(&mut self, vm: &str) -> Result<(), ControlError> {
        self.inner
            .get_mut()
            .on(vm, |_, id| Call::VmStart(id))
            .map(|_| ())
    }

    /// `vm`'s policy bits.
    pub fn policy(&mut self, vm: &str) -> Result<u32, ControlError> {
        self.inner
            .get_mut()
            .on(vm, |_, id| Call::PolicyGet(id))
            .map(|b| b as u32)
    }

    pub fn set_policy(&mut self, vm: &str, bits: u32) -> Result<(), ControlError> {
        self.inner
            .get_mut()
            .on(vm, |_, id| Call::PolicySet { vm: id, bits })
            .map(|_| ())
    }

    /// Hands an input script's text to the hypervisor to run on `vm`.
    pub fn run_script(&mut self, vm: &str, script: &[u8]) -> Result<(), ControlError> {
        let inner = self.inner.get_mut();
        if script.len() > ARGS_BYTES {
            return Err(ControlError::Invalid {
                vm: vm.into(),
                why: format!(
                    "a script of {} bytes is longer than {ARGS_BYTES}",
                    script.len()
                ),
            });
        }
        inner
            .on(vm, |i, id| {
                let script = i.put(script);
                Call::RunInputScript { vm: id, script }
            })
            .map(|_| ())
    }

    /// Takes what `vm` printed on its serial line since the last read.
    pub fn console_read(&mut self, vm: &str) -> Result<Vec<u8>, ControlError> {
        let inner = self.inner.get_mut();
        let n = inner.on(vm, |i, id| Call::ConsoleRead {
            vm: id,
            out: Buffer {
                ipa: i.args_ipa(),
                len: call::CONSOLE_MAX,
            },
        })? as usize;
        Ok(inner.args(n.min(call::CONSOLE_MAX as usize)).to_vec())
    }

    /// Types `data` on `vm`'s serial line; answers the bytes it took.
    pub fn console_write(&mut self, vm: &str, data: &[u8]) -> Result<usize, ControlError> {
        let data = &data[..data.len().min(call::CONSOLE_MAX as usize)];
        if data.is_empty() {
            return Ok(0);
        }
        self.inner
            .get_mut()
            .on(vm, |i, id| Call::ConsoleWrite {
                vm: id,
                data: i.put(data),
            })
            .map(|n| n as usize)
    }

    /// Captures `vm`'s frame (`None`) or a region of it as XRGB8888 rows handed to
    /// `rows` (with the capture's width and height) in order, in strips of as many rows as the argument area holds (one
    /// CAPTURE each; the first says the capture's size); answers its width and
    /// height. A frame that changes meanwhile gives strips of different frames.
    pub fn capture(
        &mut self,
        vm: &str,
        region: Option<Rect>,
        rows: &mut CaptureRows<'_>,
    ) -> Result<(u32, u32), ControlError> {
        let inner = self.inner.get_mut();
        let id = inner.id(vm)?;
        let out = Buffer {
            ipa: inner.args_ipa(),
            len: ARGS_BYTES as u64,
        };
        let bad = |why: String| ControlError::Failed {
            vm: vm.into(),
            why: format!("capture: {why}"),
        };
        let n = inner
            .raw(&Call::Capture {
                vm: id,
                region,
                out,
            })
            .map_err(|s| inner.error(vm, s))?;
        // The first strip, before REPLY reuses the argument area.
        let first = inner.args((n as usize).min(ARGS_BYTES)).to_vec();
        let rec = inner.reply_record();
        let size: Vec<u64> = Record::parse(&rec)
            .map(|r| r.items().map(|(v, _)| v).collect())
            .unwrap_or_default();
        let (w, h) = match size[..] {
            [w, h]
                if (1..=u64::from(call::MAX_DIM)).contains(&w)
                    && (1..=u64::from(call::MAX_DIM)).contains(&h) =>
            {
                (w as u32, h as u32)
            }
            _ => {
                return Err(bad(String::from(
                    "the hypervisor did not say the capture's size",
                )))
            }
        };
        let row = u64::from(w) * 4;
        let fit = ARGS_BYTES as u64 / row;
        if fit == 0 {
            return Err(bad(format!(
                "rows of {w} pixels do not fit the {ARGS_BYTES}-byte buffer"
            )));
        }
        let base = region.unwrap_or(Rect { x: 0, y: 0, w, h });
        if (base.w, base.h) != (w, h) {
            return Err(bad(format!(
                "{w}x{h} captured for a {}x{} region",
                base.w, base.h
            )));
        }
        let mut done = 0u32;
        let mut got = n;
        loop {
            let want = u64::from(h - done).min(fit);
            if got != want * row {
                return Err(bad(format!(
                    "{got} bytes answered for {want} rows of {row} bytes"
                )));
            }
            if done == 0 {
                rows((w, h), &first);
            } else {
                rows((w, h), inner.args(got as usize));
            }
            done += want as u32;
            if done == h {
                return Ok((w, h));
            }
            let strip = Rect {
                x: base.x,
                y: base.y + done as i32,
                w,
                h: (u64::from(h - done).min(fit)) as u32,
            };
            got = inner
                .raw(&Call::Capture {
                    vm: id,
                    region: Some(strip),
                    out,
                })
                .map_err(|s| inner.error(vm, s))?;
        }
    }

    /// Reserves `chord` of the physical keyboard for RayOS (`None`: none): its
    /// presses arrive as [`Event::ReservedKey`] instead of reaching a guest.
    pub fn reserve_key(&mut self, chord: Option<Chord>) -> Result<(), ControlError> {
        self.inner
            .get_mut()
            .plain(&Call::ReserveKey(chord))
            .map(|_| ())
    }

    /// The events waiting in the ring, oldest first.
    pub fn events(&mut self) -> Vec<Event> {
        let inner = self.inner.get_mut();
        let mut out = Vec::new();
        while let Ok(Some(e)) = ring::pop(&mut inner.shared[..RING_BYTES]) {
            out.push(e);
        }
        out
    }

    /// The name of the VM with id `id`, if VM_LIST has it.
    pub fn name_of(&self, id: VmId) -> Option<String> {
        self.entries()
            .into_iter()
            .find(|e| e.id == id)
            .and_then(|e| e.name().map(String::from))
    }
}

impl<H: Hypercall> VmControl for AbiControl<H> {
    fn list(&self) -> Vec<VmInfo> {
        self.entries()
            .iter()
            .map(|e| VmInfo {
                name: e.name().unwrap_or("?").into(),
                vcpus: e.vcpus as usize,
                state: match e.state {
                    call::VmState::Running => VmState::Running,
                    call::VmState::Paused => VmState::Paused,
                    call::VmState::Off | call::VmState::Suspended => VmState::Off,
                },
            })
            .collect()
    }

    fn pause(&mut self, vm: &str) -> Result<(), ControlError> {
        self.inner
            .get_mut()
            .on(vm, |_, id| Call::VmPause(id))
            .map(|_| ())
    }

    fn resume(&mut self, vm: &str) -> Result<(), ControlError> {
        self.inner
            .get_mut()
            .on(vm, |_, id| Call::VmResume(id))
            .map(|_| ())
    }

    fn suspend(&mut self, vm: &str) -> Result<SuspendReport, ControlError> {
        self.inner
            .get_mut()
            .on(vm, |_, id| Call::VmSuspend(id))
            .map(|bytes_written| SuspendReport { bytes_written })
    }

    fn snapshot(
        &mut self,
        vm: &str,
        tag: &str,
        store: SnapshotStore,
    ) -> Result<SnapshotInfo, ControlError> {
        let inner = self.inner.get_mut();
        let bytes = inner.on(vm, |i, id| Call::VmSnapshot {
            vm: id,
            tag: i.put(tag.as_bytes()),
            disk: store == SnapshotStore::Disk,
        })?;
        let rec = inner.reply_record();
        let note = Record::parse(&rec).map_or(String::new(), |r| r.text(0).into());
        Ok(SnapshotInfo {
            tag: tag.into(),
            store,
            bytes,
            note,
        })
    }

    fn rollback(&mut self, vm: &str, tag: &str) -> Result<(), ControlError> {
        self.inner
            .get_mut()
            .on(vm, |i, id| Call::VmRollback {
                vm: id,
                tag: i.put(tag.as_bytes()),
            })
            .map(|_| ())
    }

    fn snapshots(&self, vm: &str) -> Result<Vec<SnapshotInfo>, ControlError> {
        let mut inner = self.inner.borrow_mut();
        inner.on(vm, |_, id| Call::VmSnapshots(id))?;
        Ok(snapshot_list(&inner.reply_record()))
    }

    fn delete_snapshot(&mut self, vm: &str, tag: &str) -> Result<(), ControlError> {
        self.inner
            .get_mut()
            .on(vm, |i, id| Call::VmDeleteSnapshot {
                vm: id,
                tag: i.put(tag.as_bytes()),
            })
            .map(|_| ())
    }

    fn host_shutdown(&mut self) -> Result<ShutdownReport, ControlError> {
        let inner = self.inner.get_mut();
        inner.plain(&Call::HostShutdown)?;
        let rec = inner.reply_record();
        let mut r = ShutdownReport {
            powered_off: Vec::new(),
            suspended: Vec::new(),
        };
        if let Some(rec) = Record::parse(&rec) {
            for (n, name) in rec.items() {
                if n == 1 {
                    r.suspended.push(name.into());
                } else {
                    r.powered_off.push(name.into());
                }
            }
        }
        Ok(r)
    }

    fn display(&mut self, vm: &str, change: DisplayChange) -> Result<(), ControlError> {
        // What the ABI cannot carry is refused here, naming the value, as the
        // hypervisor's own check would.
        let invalid = |why: String| ControlError::Invalid { vm: vm.into(), why };
        let c = |id: VmId| -> Result<Call, ControlError> {
            Ok(match change {
                DisplayChange::Present(p) => Call::Present {
                    vm: id,
                    placement: match p {
                        DisplayPlacement::Panel { x, y, w, h } => {
                            Placement::Panel(Rect { x, y, w, h })
                        }
                        DisplayPlacement::Fullscreen => Placement::Fullscreen,
                        DisplayPlacement::Quad(q) => Placement::Quad(q),
                    },
                },
                DisplayChange::Hide => Call::Hide(id),
                DisplayChange::Freeze => Call::Freeze(id),
                DisplayChange::Unfreeze => Call::Unfreeze(id),
                DisplayChange::Throttle { fps } => {
                    if !(1..=call::MAX_FPS).contains(&fps) {
                        return Err(invalid(format!(
                            "frame rate {fps} is not within 1..={}",
                            call::MAX_FPS
                        )));
                    }
                    Call::Throttle { vm: id, fps }
                }
                DisplayChange::Mode { width, height } => Call::SetMode {
                    vm: id,
                    w: width,
                    h: height,
                },
            })
        };
        let inner = self.inner.get_mut();
        let id = inner.id(vm)?;
        let call = c(id)?;
        let (fid, a) = call.encode();
        if call::decode(fid, &a) != Ok(call) {
            return Err(invalid(String::from(
                "the placement or size is outside what the authority ABI carries",
            )));
        }
        inner.raw(&call).map(|_| ()).map_err(|s| inner.error(vm, s))
    }

    fn display_overlay(&mut self, text: &str) -> Result<(), ControlError> {
        let inner = self.inner.get_mut();
        if text.len() as u64 > TEXT_MAX {
            return Err(ControlError::Invalid {
                vm: String::new(),
                why: format!("overlay text longer than {TEXT_MAX}"),
            });
        }
        let t = if text.is_empty() {
            None
        } else {
            Some(inner.put(text.as_bytes()))
        };
        inner.plain(&Call::DisplayOverlay { text: t }).map(|_| ())
    }

    fn display_status(&self) -> Result<String, ControlError> {
        let mut inner = self.inner.borrow_mut();
        inner.plain(&Call::DisplayStatus)?;
        let rec = inner.reply_record();
        Ok(Record::parse(&rec).map_or(String::new(), |r| r.text(0).into()))
    }

    fn input(&mut self, vm: &str, action: InputAction) -> Result<String, ControlError> {
        let inner = self.inner.get_mut();
        if let InputAction::Type(t) | InputAction::Key(t) = action {
            if t.len() as u64 > TEXT_MAX {
                return Err(ControlError::Invalid {
                    vm: vm.into(),
                    why: format!("text longer than {TEXT_MAX} bytes"),
                });
            }
        }
        inner.on(vm, |i, id| match action {
            InputAction::Interactive(on) => Call::SetInput {
                vm: id,
                interactive: on,
            },
            InputAction::Type(t) => Call::InputAction {
                vm: id,
                kind: InputKind::Type(i.put(t.as_bytes())),
            },
            InputAction::Key(t) => Call::InputAction {
                vm: id,
                kind: InputKind::Key(i.put(t.as_bytes())),
            },
            InputAction::Pointer { x, y } => Call::InputAction {
                vm: id,
                kind: InputKind::Pointer { x, y },
            },
            InputAction::Click { x, y, button } => Call::InputAction {
                vm: id,
                kind: InputKind::Click {
                    x,
                    y,
                    button: match button {
                        MouseButton::Left => Button::Left,
                        MouseButton::Right => Button::Right,
                        MouseButton::Middle => Button::Middle,
                        MouseButton::Back => Button::Back,
                        MouseButton::Forward => Button::Forward,
                    },
                },
            },
            InputAction::Gaze { x, y, ms } => Call::InputAction {
                vm: id,
                kind: InputKind::Gaze { x, y, ms },
            },
        })?;
        let rec = inner.reply_record();
        Ok(Record::parse(&rec).map_or(String::new(), |r| r.text(0).into()))
    }

    fn usb(&mut self, vm: &str, op: UsbOp) -> Result<(), ControlError> {
        self.inner
            .get_mut()
            .on(vm, |_, id| Call::Usb {
                vm: id,
                op: match op {
                    UsbOp::DetachStorage => call::UsbOp::Detach,
                    UsbOp::AttachStorage => call::UsbOp::Attach,
                },
            })
            .map(|_| ())
    }
}
