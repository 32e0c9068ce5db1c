//! Host tests of the authority ABI's two sides: the dispatcher against a fake
//! [`AbiTarget`] and fake authority memory, and the client looped back through
//! the dispatcher (the same status line as the monitor command run directly).
extern crate std;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use authority_abi::call::{
    func, Buffer, Call, InputKind, Rect, VmEntry, VmId, VM_ENTRY_SIZE, VM_PRESENTED,
};
use authority_abi::input::{modifier, Chord, InputEvent};
use authority_abi::reply::{ErrorKind, Record};
use authority_abi::ring::{self, Event};
use authority_abi::{call, fid, Status as AbiStatus, Version, VERSION};

use crate::abi::{AbiTarget, AuthorityMemory, Captured, Dispatcher};
use crate::abi_client::{AbiControl, Hypercall, OpenError};
use crate::command::{DisplayChange, InputAction, SnapshotStore, UsbOp};
use crate::control::{
    execute, After, ControlError, ShutdownReport, SnapshotInfo, SuspendReport, VmControl, VmInfo,
    VmState,
};

/// VMs whose state changes only through the traits; every call is logged.
#[derive(Clone)]
struct Model {
    vms: Vec<VmInfo>,
    snapshots: Vec<(String, SnapshotInfo)>,
    policy: u32,
    calls: Vec<String>,
    console_out: Vec<u8>,
    console_in: Vec<u8>,
    presented: bool,
    /// The guest frame's size (its pixel bytes are [`frame_byte`]).
    frame: (u32, u32),
}

/// Byte `i` of row `y` of [`Model`]'s frame.
fn frame_byte(i: u32, y: u32) -> u8 {
    (i.wrapping_mul(7) ^ y.wrapping_mul(13)) as u8
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
            policy: 0x13,
            calls: Vec::new(),
            console_out: b"login: ".to_vec(),
            console_in: Vec::new(),
            presented: false,
            frame: (4, 2),
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
        Ok(ShutdownReport {
            powered_off: vec!["tiny".into()],
            suspended: vec!["linux".into()],
        })
    }
    fn display(&mut self, vm: &str, change: DisplayChange) -> Result<(), ControlError> {
        self.vm(vm)?;
        if let DisplayChange::Throttle { fps: 7 } = change {
            return Err(ControlError::Invalid {
                vm: vm.into(),
                why: "7 frames/s is unlucky".into(),
            });
        }
        if let DisplayChange::Present(_) = change {
            self.presented = true;
        }
        if change == DisplayChange::Hide {
            self.presented = false;
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
        if let InputAction::Gaze { ms: 9999, .. } = action {
            return Err(ControlError::Unsupported {
                what: "long gaze".into(),
                why: "the gaze filter is asleep",
            });
        }
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

impl AbiTarget for Model {
    fn start(&mut self, vm: &str) -> Result<(), ControlError> {
        self.calls.push(format!("start {vm}"));
        let v = self.vm(vm)?;
        if v.state != VmState::Off {
            return Err(ControlError::NotRunning {
                vm: vm.into(),
                state: v.state,
            });
        }
        v.state = VmState::Running;
        Ok(())
    }
    fn abi_state(&self, vm: &str) -> Option<call::VmState> {
        let v = self.vms.iter().find(|v| v.name == vm)?;
        Some(match v.state {
            VmState::Running => call::VmState::Running,
            VmState::Paused => call::VmState::Paused,
            VmState::Off => call::VmState::Off,
        })
    }
    fn abi_flags(&self, vm: &str) -> u32 {
        if vm == "linux" && self.presented {
            VM_PRESENTED
        } else {
            0
        }
    }
    fn policy(&self, vm: &str) -> Result<u32, ControlError> {
        self.vms
            .iter()
            .find(|v| v.name == vm)
            .map(|_| self.policy)
            .ok_or_else(|| ControlError::NoSuchVm(vm.into()))
    }
    fn set_policy(&mut self, _vm: &str, bits: u32) -> Result<(), ControlError> {
        self.policy = bits;
        Ok(())
    }
    fn inject(&mut self, vm: &str, events: &[InputEvent]) -> Result<u64, ControlError> {
        self.calls.push(format!("inject {vm} {events:?}"));
        Ok(events.len() as u64)
    }
    fn run_script(&mut self, vm: &str, script: &[u8]) -> Result<(), ControlError> {
        self.calls.push(format!(
            "script {vm} {}",
            core::str::from_utf8(script).unwrap()
        ));
        Ok(())
    }
    fn capture(
        &mut self,
        vm: &str,
        region: Option<Rect>,
        max: u64,
        write: &mut dyn FnMut(u64, &[u8]),
    ) -> Result<Captured, ControlError> {
        self.calls.push(format!("capture {vm} {region:?} {max}"));
        let (fw, fh) = self.frame;
        let r = region.unwrap_or(Rect {
            x: 0,
            y: 0,
            w: fw,
            h: fh,
        });
        if r.x < 0
            || r.y < 0
            || r.x as u64 + u64::from(r.w) > u64::from(fw)
            || r.y as u64 + u64::from(r.h) > u64::from(fh)
        {
            return Err(ControlError::Invalid {
                vm: vm.into(),
                why: format!("the region is outside the {fw}x{fh} frame"),
            });
        }
        let row_bytes = u64::from(r.w) * 4;
        let rows = (max / row_bytes).min(u64::from(r.h));
        let mut off = 0;
        for y in 0..rows as u32 {
            let row: Vec<u8> = (0..r.w * 4)
                .map(|i| frame_byte(r.x as u32 * 4 + i, r.y as u32 + y))
                .collect();
            write(off, &row);
            off += row.len() as u64;
        }
        // A misbehaving target writing past the buffer is cut off.
        write(max, &[0xee; 8]);
        Ok(Captured {
            bytes: off,
            width: r.w,
            height: r.h,
        })
    }
    fn console_read(&mut self, _vm: &str, out: &mut [u8]) -> Result<usize, ControlError> {
        let n = out.len().min(self.console_out.len());
        out[..n].copy_from_slice(&self.console_out[..n]);
        self.console_out.drain(..n);
        Ok(n)
    }
    fn console_write(&mut self, _vm: &str, data: &[u8]) -> Result<usize, ControlError> {
        self.console_in.extend_from_slice(data);
        Ok(data.len())
    }
    fn reserve_key(&mut self, chord: Option<Chord>) -> Result<(), ControlError> {
        self.calls.push(format!("reserve {chord:?}"));
        Ok(())
    }
}

/// Authority RAM: `mem` at IPA `base`.
struct Ram {
    base: u64,
    mem: Vec<u8>,
    barriers: usize,
}

impl AuthorityMemory for Ram {
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
    fn store_barrier(&mut self) {
        self.barriers += 1;
    }
}

const BASE: u64 = 0x4800_0000;

fn ram() -> Ram {
    Ram {
        base: BASE,
        mem: vec![0; 64 << 10],
        barriers: 0,
    }
}

fn hvc(d: &mut Dispatcher, m: &mut Model, r: &mut Ram, c: &Call) -> Result<u64, Option<AbiStatus>> {
    let (f, a) = c.encode();
    let mut x = [0u64; 8];
    x[0] = f as u64;
    x[1..].copy_from_slice(&a);
    AbiStatus::from_x0(d.call(x, m, r).x0)
}

fn at(off: u64, len: u64) -> Buffer {
    Buffer {
        ipa: BASE + off,
        len,
    }
}

/// A dispatcher opened with a ring at the start of RAM.
fn opened() -> (Dispatcher, Model, Ram) {
    let (mut d, mut m, mut r) = (Dispatcher::new(), Model::new(), ram());
    ring::init(&mut r.mem[..4096]).unwrap();
    let open = Call::Open {
        version: VERSION,
        ring: at(0, 4096),
    };
    assert_eq!(hvc(&mut d, &mut m, &mut r, &open), Ok(0));
    (d, m, r)
}

fn reply(d: &mut Dispatcher, m: &mut Model, r: &mut Ram) -> Vec<u8> {
    let n = hvc(
        d,
        m,
        r,
        &Call::Reply {
            out: at(0x8000, 4096),
        },
    )
    .unwrap() as usize;
    r.mem[0x8000..0x8000 + n].to_vec()
}

fn entries(d: &mut Dispatcher, m: &mut Model, r: &mut Ram) -> Vec<VmEntry> {
    let n = hvc(
        d,
        m,
        r,
        &Call::VmList {
            out: at(0x2000, 8 * VM_ENTRY_SIZE as u64),
        },
    )
    .unwrap() as usize;
    (0..n)
        .map(|i| {
            let mut e = [0u8; VM_ENTRY_SIZE];
            e.copy_from_slice(&r.mem[0x2000 + i * VM_ENTRY_SIZE..][..VM_ENTRY_SIZE]);
            VmEntry::decode(&e).unwrap()
        })
        .collect()
}

fn events(r: &mut Ram) -> Vec<Event> {
    core::iter::from_fn(|| ring::pop(&mut r.mem[..4096]).unwrap()).collect()
}

#[test]
fn before_open_only_version_and_open_answer_and_a_wrong_version_is_refused() {
    let (mut d, mut m, mut r) = (Dispatcher::new(), Model::new(), ram());
    assert_eq!(
        hvc(&mut d, &mut m, &mut r, &Call::Version),
        Ok(VERSION.to_reg())
    );
    for c in [
        Call::VmList {
            out: at(0x2000, 80),
        },
        Call::VmPause(VmId(0)),
        Call::HostShutdown,
        Call::DisplayStatus,
    ] {
        assert_eq!(
            hvc(&mut d, &mut m, &mut r, &c),
            Err(Some(AbiStatus::NotOpen)),
            "{c:?}"
        );
    }
    ring::init(&mut r.mem[..4096]).unwrap();
    for version in [
        Version {
            major: 1,
            minor: VERSION.minor + 1,
        },
        Version { major: 2, minor: 0 },
    ] {
        let c = Call::Open {
            version,
            ring: at(0, 4096),
        };
        assert_eq!(
            hvc(&mut d, &mut m, &mut r, &c),
            Err(Some(AbiStatus::VersionMismatch))
        );
    }
    // A ring the authority did not initialise is refused, and the session stays shut.
    let c = Call::Open {
        version: VERSION,
        ring: at(0x4000, 4096),
    };
    assert_eq!(
        hvc(&mut d, &mut m, &mut r, &c),
        Err(Some(AbiStatus::InvalidParameters))
    );
    assert!(!d.is_open());
    // A 1.0 caller is served by this 1.1 hypervisor.
    let c = Call::Open {
        version: Version { major: 1, minor: 0 },
        ring: at(0, 4096),
    };
    assert_eq!(hvc(&mut d, &mut m, &mut r, &c), Ok(0));
    assert!(m.calls.is_empty(), "nothing reached a VM: {:?}", m.calls);
}

#[test]
fn ids_are_stable_and_bad_ids_and_buffers_are_refused_without_touching_a_vm() {
    let (mut d, mut m, mut r) = opened();
    let e = entries(&mut d, &mut m, &mut r);
    assert_eq!(e.len(), 2);
    assert_eq!((e[0].id, e[0].name()), (VmId(0), Some("linux")));
    assert_eq!((e[1].id, e[1].name()), (VmId(1), Some("tiny")));
    assert_eq!(e[0].state, call::VmState::Running);
    assert_eq!(e[0].vcpus, 2);
    // A VM that goes away keeps its id; a new one gets the next.
    m.vms.remove(0);
    m.vms.push(VmInfo {
        name: "win".into(),
        vcpus: 4,
        state: VmState::Off,
    });
    let e = entries(&mut d, &mut m, &mut r);
    assert_eq!(e[0].id, VmId(1));
    assert_eq!((e[1].id, e[1].name()), (VmId(2), Some("win")));
    for id in [0, 3, u32::MAX] {
        assert_eq!(
            hvc(&mut d, &mut m, &mut r, &Call::VmPause(VmId(id))),
            Err(Some(AbiStatus::NoSuchVm))
        );
    }
    // Buffers outside authority RAM: before, straddling the end, far away.
    let end = BASE + r.mem.len() as u64;
    for b in [
        Buffer {
            ipa: BASE - 16,
            len: 16,
        },
        Buffer {
            ipa: end - 4,
            len: 8,
        },
        Buffer { ipa: 0, len: 4 },
    ] {
        for c in [
            Call::VmSnapshot {
                vm: VmId(1),
                tag: b,
                disk: false,
            },
            Call::VmList {
                out: Buffer {
                    ipa: b.ipa,
                    len: 80,
                },
            },
            Call::ConsoleWrite {
                vm: VmId(1),
                data: b,
            },
            Call::Reply { out: b },
        ] {
            assert_eq!(
                hvc(&mut d, &mut m, &mut r, &c),
                Err(Some(AbiStatus::BadBuffer)),
                "{c:?}"
            );
        }
    }
    // Unknown functions and malformed registers.
    let mut x = [0u64; 8];
    x[0] = fid(0x04) as u64;
    assert_eq!(
        AbiStatus::from_x0(d.call(x, &mut m, &mut r).x0),
        Err(Some(AbiStatus::NotSupported))
    );
    x[0] = 1 << 32 | fid(func::VM_LIST) as u64;
    assert_eq!(
        AbiStatus::from_x0(d.call(x, &mut m, &mut r).x0),
        Err(Some(AbiStatus::NotSupported))
    );
    // Refusals are counted for el2's log, the last one named.
    let (n, last) = d.refused();
    assert_eq!(
        n,
        3 + 3 * 4 + 2,
        "3 bad ids, 3 bad buffers in 4 calls, 2 bad function ids"
    );
    assert_eq!(
        last,
        Some((1 << 32 | fid(func::VM_LIST) as u64, AbiStatus::NotSupported))
    );
    // A refused call leaves a Refused reply.
    let rec = reply(&mut d, &mut m, &mut r);
    assert_eq!(Record::parse(&rec).unwrap().kind, ErrorKind::Refused as u32);
    assert!(m.calls.is_empty(), "{:?}", m.calls);
}

#[test]
fn every_call_reaches_the_target_and_state_changes_become_ring_events() {
    let (mut d, mut m, mut r) = opened();
    let (linux, tiny) = (VmId(0), VmId(1));
    entries(&mut d, &mut m, &mut r);
    let ok = |d: &mut Dispatcher, m: &mut Model, r: &mut Ram, c: Call| {
        hvc(d, m, r, &c).unwrap_or_else(|e| panic!("{c:?}: {e:?}"))
    };
    ok(&mut d, &mut m, &mut r, Call::VmStart(tiny));
    ok(&mut d, &mut m, &mut r, Call::VmPause(linux));
    ok(&mut d, &mut m, &mut r, Call::VmResume(linux));
    assert_eq!(ok(&mut d, &mut m, &mut r, Call::VmSuspend(tiny)), 3 << 20);
    assert_eq!(
        events(&mut r),
        [
            (tiny, call::VmState::Running),
            (linux, call::VmState::Paused),
            (linux, call::VmState::Running),
            (tiny, call::VmState::Off),
        ]
        .map(|(vm, state)| Event::VmState { vm, state })
    );
    assert!(r.barriers >= 4, "a barrier before each producer index");
    r.mem[0x3000..0x3003].copy_from_slice(b"t-1");
    let tag = at(0x3000, 3);
    assert_eq!(
        ok(
            &mut d,
            &mut m,
            &mut r,
            Call::VmSnapshot {
                vm: linux,
                tag,
                disk: true
            }
        ),
        1500
    );
    ok(&mut d, &mut m, &mut r, Call::VmRollback { vm: linux, tag });
    assert_eq!(ok(&mut d, &mut m, &mut r, Call::VmSnapshots(linux)), 1);
    ok(
        &mut d,
        &mut m,
        &mut r,
        Call::VmDeleteSnapshot { vm: linux, tag },
    );
    // A tag with a bad character is refused before the VM.
    r.mem[0x3000] = b'/';
    assert_eq!(
        hvc(&mut d, &mut m, &mut r, &Call::VmRollback { vm: linux, tag }),
        Err(Some(AbiStatus::InvalidParameters))
    );
    ok(
        &mut d,
        &mut m,
        &mut r,
        Call::Present {
            vm: linux,
            placement: call::Placement::Fullscreen,
        },
    );
    assert_eq!(entries(&mut d, &mut m, &mut r)[0].flags, VM_PRESENTED);
    for c in [
        Call::Hide(linux),
        Call::Freeze(linux),
        Call::Unfreeze(linux),
        Call::Throttle { vm: linux, fps: 30 },
        Call::SetMode {
            vm: linux,
            w: 800,
            h: 600,
        },
        Call::SetInput {
            vm: linux,
            interactive: false,
        },
    ] {
        ok(&mut d, &mut m, &mut r, c);
    }
    // Input events: decoded from authority memory; one bad record refuses all.
    let evs = [
        InputEvent::Key {
            usage: 4,
            pressed: true,
        },
        InputEvent::Gaze { x: 5, y: 6 },
    ];
    for (i, e) in evs.iter().enumerate() {
        r.mem[0x3000 + i * 16..][..16].copy_from_slice(&e.encode());
    }
    let inj = Call::InjectInput {
        vm: linux,
        events: at(0x3000, 32),
    };
    assert_eq!(ok(&mut d, &mut m, &mut r, inj), 2);
    r.mem[0x3000 + 16] = 0x7f;
    assert_eq!(
        hvc(&mut d, &mut m, &mut r, &inj),
        Err(Some(AbiStatus::InvalidParameters))
    );
    r.mem[0x3000..0x3009].copy_from_slice(b"wait 100\n");
    ok(
        &mut d,
        &mut m,
        &mut r,
        Call::RunInputScript {
            vm: linux,
            script: at(0x3000, 9),
        },
    );
    // Capture: rows land in the buffer and nothing past it.
    r.mem[0x5000..0x5000 + 64].fill(0);
    let cap = Call::Capture {
        vm: linux,
        region: Some(Rect {
            x: 0,
            y: 0,
            w: 2,
            h: 2,
        }),
        out: at(0x5000, 16),
    };
    assert_eq!(ok(&mut d, &mut m, &mut r, cap), 16);
    let want: Vec<u8> = (0..2)
        .flat_map(|y| (0..8).map(move |i| frame_byte(i, y)))
        .collect();
    assert_eq!(r.mem[0x5000..0x5010], want[..]);
    assert_eq!(r.mem[0x5010..0x5018], [0; 8], "nothing past the buffer");
    // Its REPLY: the captured width and height.
    let rec = reply(&mut d, &mut m, &mut r);
    let rec = Record::parse(&rec).unwrap();
    assert_eq!(rec.items().collect::<Vec<_>>(), [(2, ""), (2, "")]);
    // A buffer for one row: one row, and the size of the whole capture.
    let cap = Call::Capture {
        vm: linux,
        region: None,
        out: at(0x5000, 20),
    };
    assert_eq!(ok(&mut d, &mut m, &mut r, cap), 16);
    let rec = reply(&mut d, &mut m, &mut r);
    let rec = Record::parse(&rec).unwrap();
    assert_eq!(rec.items().collect::<Vec<_>>(), [(4, ""), (2, "")]);
    assert_eq!(ok(&mut d, &mut m, &mut r, Call::PolicyGet(linux)), 0x13);
    ok(
        &mut d,
        &mut m,
        &mut r,
        Call::PolicySet {
            vm: linux,
            bits: 0x1f,
        },
    );
    assert_eq!(ok(&mut d, &mut m, &mut r, Call::PolicyGet(linux)), 0x1f);
    // Console: what the VM printed comes out; what the authority typed goes in.
    let n = ok(
        &mut d,
        &mut m,
        &mut r,
        Call::ConsoleRead {
            vm: linux,
            out: at(0x6000, 64),
        },
    );
    assert_eq!(&r.mem[0x6000..0x6000 + n as usize], b"login: ");
    r.mem[0x6000..0x6005].copy_from_slice(b"root\r");
    assert_eq!(
        ok(
            &mut d,
            &mut m,
            &mut r,
            Call::ConsoleWrite {
                vm: linux,
                data: at(0x6000, 5)
            }
        ),
        5
    );
    assert_eq!(m.console_in, b"root\r");
    // Overlay text must be printable.
    r.mem[0x6000..0x6003].copy_from_slice(b"a\nb");
    assert_eq!(
        hvc(
            &mut d,
            &mut m,
            &mut r,
            &Call::DisplayOverlay {
                text: Some(at(0x6000, 3))
            }
        ),
        Err(Some(AbiStatus::InvalidParameters))
    );
    r.mem[0x6000..0x6002].copy_from_slice(b"\x01x");
    assert_eq!(
        hvc(
            &mut d,
            &mut m,
            &mut r,
            &Call::InputAction {
                vm: linux,
                kind: InputKind::Key(at(0x6000, 2)),
            }
        ),
        Err(Some(AbiStatus::InvalidParameters))
    );
    let out = d.call(
        {
            let (f, a) = Call::HostShutdown.encode();
            let mut x = [0; 8];
            x[0] = f as u64;
            x[1..].copy_from_slice(&a);
            x
        },
        &mut m,
        &mut r,
    );
    assert_eq!((out.x0, out.after), (0, After::PowerOffHost));
    let rec = reply(&mut d, &mut m, &mut r);
    let rec = Record::parse(&rec).unwrap();
    assert_eq!(rec.items().collect::<Vec<_>>(), [(0, "tiny"), (1, "linux")]);
    assert!(m.calls.iter().any(|c| c.starts_with("inject linux [Key")));
    assert!(m.calls.contains(&"script linux wait 100\n".to_string()));
}

#[test]
fn a_full_or_scribbled_ring_loses_events_not_the_call() {
    let (mut d, mut m, mut r) = opened();
    // A 4 KiB ring holds 64 entries; pause and resume make one event each.
    for _ in 0..70 {
        hvc(&mut d, &mut m, &mut r, &Call::VmPause(VmId(0))).unwrap();
        hvc(&mut d, &mut m, &mut r, &Call::VmResume(VmId(0))).unwrap();
    }
    assert_eq!(d.lost_events(), 140 - 64);
    assert_eq!(ring::dropped(&r.mem[..4096]) as u64, d.lost_events());
    let got = events(&mut r);
    assert_eq!(got.len(), 64);
    assert_eq!(
        got[63],
        Event::VmState {
            vm: VmId(0),
            state: call::VmState::Running
        }
    );
    // Room again: the next event arrives (the consumer index the authority
    // moved was not written back over).
    hvc(&mut d, &mut m, &mut r, &Call::VmPause(VmId(0))).unwrap();
    assert_eq!(events(&mut r).len(), 1);
    // A scribbled header loses the event, not the call.
    r.mem[0] = 0;
    assert_eq!(hvc(&mut d, &mut m, &mut r, &Call::VmResume(VmId(0))), Ok(0));
    assert_eq!(m.vms[0].state, VmState::Running);
    assert_eq!(d.lost_events(), 140 - 64 + 1);
}

/// The client looped back through a dispatcher onto a model.
struct Loop {
    d: Dispatcher,
    m: Model,
    base: u64,
    /// Whether the hypervisor answers as a 2.0 one.
    major2: bool,
}

impl Hypercall for Loop {
    fn ipa_of(&self, _shared: &[u8]) -> u64 {
        self.base
    }
    fn hvc(&mut self, x: [u64; 8], shared: &mut [u8]) -> [u64; 4] {
        if self.major2 {
            return [Version { major: 2, minor: 0 }.to_reg(), 0, 0, 0];
        }
        let mut r = Ram {
            base: self.base,
            mem: shared.to_vec(),
            barriers: 0,
        };
        let o = self.d.call(x, &mut self.m, &mut r);
        shared.copy_from_slice(&r.mem);
        [o.x0, 0, 0, 0]
    }
}

fn client() -> AbiControl<Loop> {
    AbiControl::open(Loop {
        d: Dispatcher::new(),
        m: Model::new(),
        base: BASE,
        major2: false,
    })
    .unwrap_or_else(|_| panic!("open"))
}

#[test]
fn the_client_refuses_a_hypervisor_of_another_major() {
    let r = AbiControl::open(Loop {
        d: Dispatcher::new(),
        m: Model::new(),
        base: BASE,
        major2: true,
    });
    assert!(matches!(
        r,
        Err(OpenError::Version(Version { major: 2, .. }))
    ));
}

#[test]
fn every_monitor_command_through_the_abi_gives_the_monitors_status_line() {
    let mut direct = Model::new();
    let mut abi = client();
    let lines = [
        "help",
        "vm list",
        "vm pause linux",
        "vm pause linux",
        "vm list",
        "vm resume linux",
        "vm resume linux",
        "vm pause tiny",
        "vm pause nosuch",
        "vm snapshots linux",
        "vm snapshot linux t1 --disk",
        "vm snapshot linux t1",
        "vm snapshot linux t2",
        "vm snapshots linux",
        "vm rollback linux t2",
        "vm rollback linux t9",
        "vm delete-snapshot linux t1",
        "vm delete-snapshot linux t1",
        "vm suspend tiny",
        "display present linux panel 10 20 320 240",
        "display present linux fullscreen",
        "display present linux quad 0 0 9 0 9 9 0 9",
        "display hide linux",
        "display freeze linux",
        "display unfreeze linux",
        "display throttle linux 5",
        "display throttle linux 7",
        "display mode linux 800 600",
        "display overlay hello  world",
        "display overlay",
        "display status",
        "display hide nope",
        "input type linux \"echo hi\\n\"",
        "input key linux ctrl+alt+f2",
        "input pointer linux 3 4",
        "input click linux 3 4 middle",
        "input gaze linux 30 40 500",
        "input gaze linux 30 40 9999",
        "input interactive linux off",
        "input type nosuch \"x\"",
        "usb detach linux",
        "usb attach linux",
        "usb detach nosuch",
        "frobnicate",
        "host shutdown",
    ];
    for line in lines {
        let want = execute(line, &mut direct);
        let got = execute(line, &mut abi);
        assert_eq!(got.status.to_string(), want.status.to_string(), "{line}");
        assert_eq!(got.after, want.after, "{line}");
    }
    // The same calls reached the VMs, except for names no VM has: the client
    // answers those from VM_LIST without a call.
    direct.calls.retain(|c| !c.contains("nosuch"));
    assert_eq!(abi.hypercall().m.calls, direct.calls);
    assert_eq!(abi.hypercall().m.vms, direct.vms);
}

#[test]
fn the_client_starts_vms_reads_policy_the_console_and_the_ring() {
    let mut abi = client();
    abi.start("tiny").unwrap();
    assert_eq!(
        abi.start("tiny"),
        Err(ControlError::NotRunning {
            vm: "tiny".into(),
            state: VmState::Running
        })
    );
    assert_eq!(
        abi.start("nosuch"),
        Err(ControlError::NoSuchVm("nosuch".into()))
    );
    assert_eq!(abi.policy("linux"), Ok(0x13));
    abi.set_policy("linux", 0x3).unwrap();
    assert_eq!(abi.policy("linux"), Ok(0x3));
    assert_eq!(abi.console_read("linux").unwrap(), b"login: ");
    assert_eq!(abi.console_read("linux").unwrap(), b"");
    assert_eq!(abi.console_write("linux", b"root\r"), Ok(5));
    assert_eq!(abi.hypercall().m.console_in, b"root\r");
    abi.run_script("linux", b"type \"x\"\n").unwrap();
    abi.pause("linux").unwrap();
    let tiny = abi.entries()[1].id;
    let linux = abi.entries()[0].id;
    assert_eq!(
        abi.events(),
        [
            Event::VmState {
                vm: tiny,
                state: call::VmState::Running
            },
            Event::VmState {
                vm: linux,
                state: call::VmState::Paused
            }
        ]
    );
    assert_eq!(abi.name_of(tiny).as_deref(), Some("tiny"));
    let home = Chord::new(modifier::CTRL | modifier::ALT, 0x4a);
    abi.reserve_key(home).unwrap();
    abi.reserve_key(None).unwrap();
    let calls = &abi.hypercall().m.calls;
    assert_eq!(
        calls[calls.len() - 2..],
        [format!("reserve {home:?}"), String::from("reserve None")]
    );
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    /// Registers biased towards what matters: buffers in and around authority
    /// RAM, small VM ids and kinds, and anything.
    fn reg() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..8,
            (0u64..0x1_0000).prop_map(|o| BASE + o),
            Just(BASE - 1),
            Just(BASE + (64 << 10) - 4),
            1u64..0x2000,
            any::<u64>(),
        ]
    }

    proptest! {
        /// Whatever an authority puts in its registers and its memory, a call
        /// answers (never panics), a refused call changes no VM, and REPLY
        /// then describes it.
        #[test]
        fn any_call_answers_and_a_refused_one_changes_nothing(
            n in prop_oneof![0u16..0x70, any::<u16>()],
            args in proptest::collection::vec(reg(), 7),
            fill in any::<u8>(),
        ) {
            let (mut d, mut m, mut r) = opened();
            r.mem[0x1000..].fill(fill);
            let mut x = [0u64; 8];
            x[0] = fid(n) as u64;
            x[1..].copy_from_slice(&args);
            let before = m.vms.clone();
            let out = d.call(x, &mut m, &mut r);
            if (out.x0 as i64) < 0 {
                prop_assert_eq!(&m.vms, &before);
            }
            // REPLY always describes the call just made.
            let rec = reply(&mut d, &mut m, &mut r);
            prop_assert!(Record::parse(&rec).is_some());
        }
    }
}

#[test]
fn the_client_captures_a_frame_larger_than_its_buffer_in_strips() {
    let mut m = Model::new();
    // Rows of 6000 bytes: two fit the argument area at a time.
    m.frame = (1500, 9);
    let mut abi = AbiControl::open(Loop {
        d: Dispatcher::new(),
        m,
        base: BASE,
        major2: false,
    })
    .unwrap_or_else(|_| panic!("open"));
    let frame = |x: u32, y: u32, w: u32, h: u32| -> Vec<u8> {
        (y..y + h)
            .flat_map(|row| (x * 4..(x + w) * 4).map(move |i| frame_byte(i, row)))
            .collect()
    };
    let mut got = Vec::new();
    let size = abi
        .capture("linux", None, &mut |_, b: &[u8]| got.extend_from_slice(b))
        .unwrap();
    assert_eq!(size, (1500, 9));
    assert!(got == frame(0, 0, 1500, 9), "the whole frame's bytes");
    let region = Rect {
        x: 3,
        y: 2,
        w: 1200,
        h: 7,
    };
    got.clear();
    let size = abi
        .capture("linux", Some(region), &mut |_, b: &[u8]| {
            got.extend_from_slice(b)
        })
        .unwrap();
    assert_eq!(size, (1200, 7));
    assert!(got == frame(3, 2, 1200, 7), "the region's bytes");
    // One CAPTURE per strip: two rows of the frame, three of the region, as many
    // as the argument area holds (the first asks for the whole frame).
    let calls: Vec<String> = abi
        .hypercall()
        .m
        .calls
        .iter()
        .filter(|c| c.starts_with("capture"))
        .cloned()
        .collect();
    assert_eq!(calls.len(), 5 + 3, "{calls:?}");
    // A region outside the frame: the target's error, nothing handed over.
    got.clear();
    let outside = Rect {
        x: 1000,
        y: 0,
        w: 501,
        h: 1,
    };
    let e = abi
        .capture("linux", Some(outside), &mut |_, b: &[u8]| {
            got.extend_from_slice(b)
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "vm linux: the region is outside the 1500x9 frame; nothing changed"
    );
    assert!(got.is_empty());
    assert!(matches!(
        abi.capture("nosuch", None, &mut |_, _: &[u8]| {}),
        Err(ControlError::NoSuchVm(_))
    ));
    // Rows longer than the argument area cannot be captured by this client.
    let mut m = Model::new();
    m.frame = (5000, 1);
    let mut abi = AbiControl::open(Loop {
        d: Dispatcher::new(),
        m,
        base: BASE,
        major2: false,
    })
    .unwrap_or_else(|_| panic!("open"));
    let e = abi
        .capture("linux", None, &mut |_, _: &[u8]| {})
        .unwrap_err();
    assert!(e.to_string().contains("do not fit"), "{e}");
}
