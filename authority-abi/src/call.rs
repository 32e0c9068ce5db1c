//! The calls: function numbers, their register layout, and the two checks the
//! hypervisor makes before acting on one ([`decode`], then [`validate`]).
//!
//! | n    | call              | x1       | x2            | x3          | x4        | x5       | x6      |
//! |------|-------------------|----------|---------------|-------------|-----------|----------|---------|
//! | 0x00 | VERSION           |          |               |             |           |          |         |
//! | 0x01 | OPEN              | version  | ring ipa      | ring bytes  |           |          |         |
//! | 0x10 | VM_LIST           | out ipa  | out bytes     |             |           |          |         |
//! | 0x11 | VM_START          | vm       |               |             |           |          |         |
//! | 0x12 | VM_PAUSE          | vm       |               |             |           |          |         |
//! | 0x13 | VM_RESUME         | vm       |               |             |           |          |         |
//! | 0x14 | VM_SUSPEND        | vm       |               |             |           |          |         |
//! | 0x15 | VM_SNAPSHOT       | vm       | tag ipa       | tag bytes   | flags     |          |         |
//! | 0x16 | VM_ROLLBACK       | vm       | tag ipa       | tag bytes   |           |          |         |
//! | 0x17 | VM_DELETE_SNAPSHOT| vm       | tag ipa       | tag bytes   |           |          |         |
//! | 0x20 | PRESENT           | vm       | kind          | p0          | p1        | p2       | p3      |
//! | 0x21 | HIDE              | vm       |               |             |           |          |         |
//! | 0x22 | FREEZE            | vm       |               |             |           |          |         |
//! | 0x23 | UNFREEZE          | vm       |               |             |           |          |         |
//! | 0x24 | THROTTLE          | vm       | fps           |             |           |          |         |
//! | 0x25 | SET_MODE          | vm       | (w, h)        |             |           |          |         |
//! | 0x30 | SET_INPUT         | vm       | interactive   |             |           |          |         |
//! | 0x31 | INJECT_INPUT      | vm       | events ipa    | count       |           |          |         |
//! | 0x32 | RUN_INPUT_SCRIPT  | vm       | script ipa    | script bytes|           |          |         |
//! | 0x40 | CAPTURE           | vm       | (x, y)        | (w, h)      | out ipa   | out bytes|         |
//! | 0x50 | POLICY_GET        | vm       |               |             |           |          |         |
//! | 0x51 | POLICY_SET        | vm       | policy bits   |             |           |          |         |
//!
//! Minor 1 adds (so the authority's shell can do everything the hypervisor's
//! monitor does, with the monitor's own status lines):
//!
//! | n    | call              | x1       | x2            | x3          | x4        | x5       | x6      |
//! |------|-------------------|----------|---------------|-------------|-----------|----------|---------|
//! | 0x02 | REPLY             | out ipa  | out bytes     |             |           |          |         |
//! | 0x03 | HOST_SHUTDOWN     |          |               |             |           |          |         |
//! | 0x18 | VM_SNAPSHOTS      | vm       |               |             |           |          |         |
//! | 0x26 | DISPLAY_OVERLAY   | text ipa | text bytes    |             |           |          |         |
//! | 0x27 | DISPLAY_STATUS    |          |               |             |           |          |         |
//! | 0x33 | INPUT_ACTION      | vm       | kind          | (x, y)      | arg       | text ipa | text bytes |
//! | 0x34 | USB               | vm       | op            |             |           |          |         |
//! | 0x60 | CONSOLE_READ      | vm       | out ipa       | out bytes   |           |          |         |
//! | 0x61 | CONSOLE_WRITE     | vm       | in ipa        | in bytes    |           |          |         |
//!
//! Minor 3 adds:
//!
//! | n    | call              | x1       | x2            | x3          | x4        | x5       | x6      |
//! |------|-------------------|----------|---------------|-------------|-----------|----------|---------|
//! | 0x35 | RESERVE_KEY       | modifiers| usage         |             |           |          |         |
//!
//! RESERVE_KEY reserves one chord of the physical keyboard for RayOS
//! ([`crate::input::Chord`]: modifier bits 0..=3, a HID usage of the keyboard
//! page from 0x04 to [`crate::input::CHORD_USAGE_MAX`], F24): its press goes to the ring as
//! [`crate::ring::Event::ReservedKey`] and its release nowhere, whichever VM has
//! the keyboard; a later call replaces it, (0, 0) removes it.
//!
//! REPLY writes the [`crate::reply`] record of the session's most recent other
//! call (its text result, or why it failed) and answers the record's length; a
//! record longer than the buffer is not written (the caller retries with a larger
//! one). DISPLAY_OVERLAY with 0 text bytes removes the overlay. INPUT_ACTION is
//! one monitor `input` command ([`InputKind`]); its text (type, key) is at most
//! [`TEXT_MAX`] printable ASCII bytes, and the answer text is in the REPLY.
//! USB op: 0 detach, 1 attach the VM's USB storage. CONSOLE_READ answers the
//! bytes of the VM's serial output copied (0: none waiting); CONSOLE_WRITE the
//! bytes of serial input the VM's UART took. VM_SUSPEND answers the bytes written,
//! VM_SNAPSHOT the snapshot's bytes, VM_SNAPSHOTS the number of snapshots (the
//! list is in the REPLY).
//!
//! `(a, b)` is two 32-bit values in one register, `a` in bits [31:0] and `b` in
//! [63:32] (coordinates as two's complement). A VM id uses bits [31:0] of its
//! register; the rest must be zero. PRESENT's kind: 0 panel (p0 = (x, y), p1 =
//! (w, h)), 1 fullscreen, 2 quad (p0..p3 = the corners top-left, top-right,
//! bottom-right, bottom-left as (x, y)). CAPTURE with (w, h) = (0, 0) captures the
//! whole frame, else the region, which must lie inside the frame
//! (INVALID_PARAMETERS otherwise); it writes XRGB8888 rows of `w * 4` bytes, as
//! many whole rows as the buffer holds, and answers the bytes written; its REPLY
//! (minor 1) carries the capture's width and height as its two items' numbers. VM_LIST answers the number of VMs and writes as many [`VmEntry`]
//! records as fit. Registers a call does not use are ignored.

use crate::input::{Chord, EVENT_SIZE};
use crate::ring;
use crate::{Status, Version, VERSION};

/// Function numbers (the low 16 bits of the function id, see [`crate::fid`]).
pub mod func {
    pub const VERSION: u16 = 0x00;
    pub const OPEN: u16 = 0x01;
    pub const VM_LIST: u16 = 0x10;
    pub const VM_START: u16 = 0x11;
    pub const VM_PAUSE: u16 = 0x12;
    pub const VM_RESUME: u16 = 0x13;
    pub const VM_SUSPEND: u16 = 0x14;
    pub const VM_SNAPSHOT: u16 = 0x15;
    pub const VM_ROLLBACK: u16 = 0x16;
    pub const VM_DELETE_SNAPSHOT: u16 = 0x17;
    pub const PRESENT: u16 = 0x20;
    pub const HIDE: u16 = 0x21;
    pub const FREEZE: u16 = 0x22;
    pub const UNFREEZE: u16 = 0x23;
    pub const THROTTLE: u16 = 0x24;
    pub const SET_MODE: u16 = 0x25;
    pub const SET_INPUT: u16 = 0x30;
    pub const INJECT_INPUT: u16 = 0x31;
    pub const RUN_INPUT_SCRIPT: u16 = 0x32;
    pub const CAPTURE: u16 = 0x40;
    pub const POLICY_GET: u16 = 0x50;
    pub const POLICY_SET: u16 = 0x51;
    // Minor 1.
    pub const REPLY: u16 = 0x02;
    pub const HOST_SHUTDOWN: u16 = 0x03;
    pub const VM_SNAPSHOTS: u16 = 0x18;
    pub const DISPLAY_OVERLAY: u16 = 0x26;
    pub const DISPLAY_STATUS: u16 = 0x27;
    pub const INPUT_ACTION: u16 = 0x33;
    pub const USB: u16 = 0x34;
    pub const CONSOLE_READ: u16 = 0x60;
    pub const CONSOLE_WRITE: u16 = 0x61;
    // Minor 3.
    pub const RESERVE_KEY: u16 = 0x35;
}

/// Largest coordinate magnitude (output or guest pixels).
pub const MAX_COORD: i32 = 1 << 15;
/// Largest width or height (rectangles, modes).
pub const MAX_DIM: u32 = 16384;
/// Highest throttle rate: the compositor's (`vgpu::present::MAX_FPS`; el2
/// checks at build time that the two agree), so `display throttle` accepts the
/// same rates from the partition's shell as from the hypervisor's monitor.
pub const MAX_FPS: u32 = 1000;
/// Largest buffer any call names (a 4K XRGB frame fits).
pub const MAX_BUFFER: u64 = 64 << 20;
/// Most input events one INJECT_INPUT carries.
pub const MAX_EVENTS: u64 = 256;
/// Longest input script.
pub const MAX_SCRIPT: u64 = 64 << 10;
/// Longest snapshot tag (the monitor's `TAG_MAX`).
pub const TAG_MAX: u64 = 32;
/// Bytes of one [`VmEntry`] record.
pub const VM_ENTRY_SIZE: usize = 80;
/// Longest VM name in a [`VmEntry`] (the registry's limit).
pub const VM_NAME_MAX: usize = 64;
/// VM_SNAPSHOT flag: keep the snapshot on the system disk (else in memory).
pub const SNAPSHOT_DISK: u64 = 1 << 0;
/// The defined policy bits (the registry's policy schema v1: autostart,
/// resume_on_boot, visible_on_start, pause_on_hide, suspend_on_host_shutdown).
pub const POLICY_KNOWN: u32 = 0x1f;

/// Longest INPUT_ACTION or DISPLAY_OVERLAY text (the monitor's line length).
pub const TEXT_MAX: u64 = 128;
/// Longest `input gaze` hold, in milliseconds (the monitor's).
pub const GAZE_MS_MAX: u64 = 10_000;
/// Most console bytes one CONSOLE_READ or CONSOLE_WRITE moves.
pub const CONSOLE_MAX: u64 = 4096;
/// Most bytes of one REPLY record.
pub const REPLY_MAX: u64 = 16 << 10;

/// A pointer button as INPUT_ACTION's `arg` for a click (the input events' codes).
pub use crate::input::Button;

/// One monitor `input` command (INPUT_ACTION).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// Kind 0: `input type`; the text is the monitor's quoted TEXT.
    Type(Buffer),
    /// Kind 1: `input key`; the text is the chord.
    Key(Buffer),
    /// Kind 2: pointer to a display position.
    Pointer { x: i32, y: i32 },
    /// Kind 3: click at a display position; `arg` is the button.
    Click { x: i32, y: i32, button: Button },
    /// Kind 4: a gaze point held `arg` milliseconds (0..=[`GAZE_MS_MAX`]).
    Gaze { x: i32, y: i32, ms: u32 },
}

/// What USB does (its `op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsbOp {
    Detach = 0,
    Attach = 1,
}

/// A VM, by the hypervisor's id for it (from VM_LIST).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct VmId(pub u32);

/// A range of the authority's own memory (intermediate physical addresses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    pub ipa: u64,
    pub len: u64,
}

/// A rectangle: top-left corner and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: i32,
    pub y: i32,
    pub w: u32,
    pub h: u32,
}

/// Where PRESENT puts a VM's screen on the physical display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    Panel(Rect),
    Fullscreen,
    /// Top-left, top-right, bottom-right, bottom-left.
    Quad([(i32, i32); 4]),
}

/// One decoded call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    Version,
    Open {
        version: Version,
        ring: Buffer,
    },
    VmList {
        out: Buffer,
    },
    VmStart(VmId),
    VmPause(VmId),
    VmResume(VmId),
    VmSuspend(VmId),
    VmSnapshot {
        vm: VmId,
        tag: Buffer,
        disk: bool,
    },
    VmRollback {
        vm: VmId,
        tag: Buffer,
    },
    VmDeleteSnapshot {
        vm: VmId,
        tag: Buffer,
    },
    Present {
        vm: VmId,
        placement: Placement,
    },
    Hide(VmId),
    Freeze(VmId),
    Unfreeze(VmId),
    Throttle {
        vm: VmId,
        fps: u32,
    },
    SetMode {
        vm: VmId,
        w: u32,
        h: u32,
    },
    SetInput {
        vm: VmId,
        interactive: bool,
    },
    /// `count` [`crate::input::InputEvent`] records at `events.ipa`
    /// (`events.len` = count × [`EVENT_SIZE`]).
    InjectInput {
        vm: VmId,
        events: Buffer,
    },
    RunInputScript {
        vm: VmId,
        script: Buffer,
    },
    /// `region` `None`: the whole frame.
    Capture {
        vm: VmId,
        region: Option<Rect>,
        out: Buffer,
    },
    PolicyGet(VmId),
    PolicySet {
        vm: VmId,
        bits: u32,
    },
    // Minor 1.
    Reply {
        out: Buffer,
    },
    HostShutdown,
    VmSnapshots(VmId),
    /// `None`: remove the overlay.
    DisplayOverlay {
        text: Option<Buffer>,
    },
    DisplayStatus,
    InputAction {
        vm: VmId,
        kind: InputKind,
    },
    Usb {
        vm: VmId,
        op: UsbOp,
    },
    ConsoleRead {
        vm: VmId,
        out: Buffer,
    },
    ConsoleWrite {
        vm: VmId,
        data: Buffer,
    },
    // Minor 3.
    /// `None`: no reserved key.
    ReserveKey(Option<Chord>),
}

/// Argument registers x1..x7.
pub type Args = [u64; 7];

const fn pair(a: u32, b: u32) -> u64 {
    a as u64 | (b as u64) << 32
}

const fn unpair(r: u64) -> (u32, u32) {
    (r as u32, (r >> 32) as u32)
}

fn invalid<T>() -> Result<T, Status> {
    Err(Status::InvalidParameters)
}

fn vm_id(r: u64) -> Result<VmId, Status> {
    u32::try_from(r).map(VmId).or_else(|_| invalid())
}

fn coord(v: u32) -> Result<i32, Status> {
    let v = v as i32;
    if (-MAX_COORD..=MAX_COORD).contains(&v) {
        Ok(v)
    } else {
        invalid()
    }
}

fn point(r: u64) -> Result<(i32, i32), Status> {
    let (x, y) = unpair(r);
    Ok((coord(x)?, coord(y)?))
}

fn size(r: u64) -> Result<(u32, u32), Status> {
    let (w, h) = unpair(r);
    if (1..=MAX_DIM).contains(&w) && (1..=MAX_DIM).contains(&h) {
        Ok((w, h))
    } else {
        invalid()
    }
}

fn rect(at: u64, wh: u64) -> Result<Rect, Status> {
    let (x, y) = point(at)?;
    let (w, h) = size(wh)?;
    Ok(Rect { x, y, w, h })
}

/// A buffer of 1..=`max` bytes whose end does not wrap.
fn buffer(ipa: u64, len: u64, max: u64) -> Result<Buffer, Status> {
    if len == 0 || len > max || ipa.checked_add(len).is_none() {
        return invalid();
    }
    Ok(Buffer { ipa, len })
}

/// Twice the signed area of a quad (shoelace); zero for a degenerate one.
fn quad_area2(c: &[(i32, i32); 4]) -> i64 {
    (0..4)
        .map(|i| {
            let (x0, y0) = c[i];
            let (x1, y1) = c[(i + 1) % 4];
            x0 as i64 * y1 as i64 - x1 as i64 * y0 as i64
        })
        .sum()
}

/// The call `fid` names with arguments `a` (x1..x7), checked for form only:
/// a function id outside the range or unknown is [`Status::NotSupported`]; a
/// malformed argument is [`Status::InvalidParameters`].
pub fn decode(fid: u32, a: &Args) -> Result<Call, Status> {
    if !crate::in_range(fid) || fid & !0xffff != crate::fid(0) {
        return Err(Status::NotSupported);
    }
    let vm = || vm_id(a[0]);
    let tag = || buffer(a[1], a[2], TAG_MAX);
    Ok(match fid as u16 {
        func::VERSION => Call::Version,
        func::OPEN => Call::Open {
            version: Version::from_reg(a[0]).ok_or(Status::InvalidParameters)?,
            ring: buffer(a[1], a[2], ring::MAX_BYTES)?,
        },
        func::VM_LIST => {
            let out = buffer(a[0], a[1], MAX_BUFFER)?;
            if !out.len.is_multiple_of(VM_ENTRY_SIZE as u64) {
                return invalid();
            }
            Call::VmList { out }
        }
        func::VM_START => Call::VmStart(vm()?),
        func::VM_PAUSE => Call::VmPause(vm()?),
        func::VM_RESUME => Call::VmResume(vm()?),
        func::VM_SUSPEND => Call::VmSuspend(vm()?),
        func::VM_SNAPSHOT => {
            if a[3] & !SNAPSHOT_DISK != 0 {
                return invalid();
            }
            Call::VmSnapshot {
                vm: vm()?,
                tag: tag()?,
                disk: a[3] & SNAPSHOT_DISK != 0,
            }
        }
        func::VM_ROLLBACK => Call::VmRollback {
            vm: vm()?,
            tag: tag()?,
        },
        func::VM_DELETE_SNAPSHOT => Call::VmDeleteSnapshot {
            vm: vm()?,
            tag: tag()?,
        },
        func::PRESENT => Call::Present {
            vm: vm()?,
            placement: match a[1] {
                0 => Placement::Panel(rect(a[2], a[3])?),
                1 => Placement::Fullscreen,
                2 => {
                    let c = [point(a[2])?, point(a[3])?, point(a[4])?, point(a[5])?];
                    if quad_area2(&c) == 0 {
                        return invalid();
                    }
                    Placement::Quad(c)
                }
                _ => return invalid(),
            },
        },
        func::HIDE => Call::Hide(vm()?),
        func::FREEZE => Call::Freeze(vm()?),
        func::UNFREEZE => Call::Unfreeze(vm()?),
        func::THROTTLE => {
            if !(1..=MAX_FPS as u64).contains(&a[1]) {
                return invalid();
            }
            Call::Throttle {
                vm: vm()?,
                fps: a[1] as u32,
            }
        }
        func::SET_MODE => {
            let (w, h) = size(a[1])?;
            Call::SetMode { vm: vm()?, w, h }
        }
        func::SET_INPUT => Call::SetInput {
            vm: vm()?,
            interactive: match a[1] {
                0 => false,
                1 => true,
                _ => return invalid(),
            },
        },
        func::INJECT_INPUT => {
            if !(1..=MAX_EVENTS).contains(&a[2]) {
                return invalid();
            }
            Call::InjectInput {
                vm: vm()?,
                events: buffer(
                    a[1],
                    a[2] * EVENT_SIZE as u64,
                    MAX_EVENTS * EVENT_SIZE as u64,
                )?,
            }
        }
        func::RUN_INPUT_SCRIPT => Call::RunInputScript {
            vm: vm()?,
            script: buffer(a[1], a[2], MAX_SCRIPT)?,
        },
        func::CAPTURE => {
            let region = if a[2] == 0 {
                point(a[1])?;
                if a[1] != 0 {
                    return invalid();
                }
                None
            } else {
                Some(rect(a[1], a[2])?)
            };
            Call::Capture {
                vm: vm()?,
                region,
                out: buffer(a[3], a[4], MAX_BUFFER)?,
            }
        }
        func::POLICY_GET => Call::PolicyGet(vm()?),
        func::POLICY_SET => {
            let bits = u32::try_from(a[1])
                .ok()
                .filter(|b| b & !POLICY_KNOWN == 0)
                .ok_or(Status::InvalidParameters)?;
            Call::PolicySet { vm: vm()?, bits }
        }
        func::REPLY => Call::Reply {
            out: buffer(a[0], a[1], REPLY_MAX)?,
        },
        func::HOST_SHUTDOWN => Call::HostShutdown,
        func::VM_SNAPSHOTS => Call::VmSnapshots(vm()?),
        func::DISPLAY_OVERLAY => Call::DisplayOverlay {
            text: if a[1] == 0 {
                None
            } else {
                Some(buffer(a[0], a[1], TEXT_MAX)?)
            },
        },
        func::DISPLAY_STATUS => Call::DisplayStatus,
        func::RESERVE_KEY => Call::ReserveKey(match (a[0], a[1]) {
            (0, 0) => None,
            (m, u) => Some(Chord::from_words(m, u).ok_or(Status::InvalidParameters)?),
        }),
        func::INPUT_ACTION => {
            let text = || buffer(a[4], a[5], TEXT_MAX);
            let (x, y) = point(a[2])?;
            let kind = match a[1] {
                0 | 1 if a[2] != 0 || a[3] != 0 => return invalid(),
                0 => InputKind::Type(text()?),
                1 => InputKind::Key(text()?),
                2..=4 if a[4] != 0 || a[5] != 0 => return invalid(),
                2 if a[3] == 0 => InputKind::Pointer { x, y },
                3 => InputKind::Click {
                    x,
                    y,
                    button: match a[3] {
                        0 => Button::Left,
                        1 => Button::Right,
                        2 => Button::Middle,
                        3 => Button::Back,
                        4 => Button::Forward,
                        _ => return invalid(),
                    },
                },
                4 if a[3] <= GAZE_MS_MAX => InputKind::Gaze {
                    x,
                    y,
                    ms: a[3] as u32,
                },
                _ => return invalid(),
            };
            Call::InputAction { vm: vm()?, kind }
        }
        func::USB => Call::Usb {
            vm: vm()?,
            op: match a[1] {
                0 => UsbOp::Detach,
                1 => UsbOp::Attach,
                _ => return invalid(),
            },
        },
        func::CONSOLE_READ => Call::ConsoleRead {
            vm: vm()?,
            out: buffer(a[1], a[2], CONSOLE_MAX)?,
        },
        func::CONSOLE_WRITE => Call::ConsoleWrite {
            vm: vm()?,
            data: buffer(a[1], a[2], CONSOLE_MAX)?,
        },
        _ => return Err(Status::NotSupported),
    })
}

impl Call {
    /// The function id and x1..x7 that make this call (the caller's side;
    /// [`decode`] of the result gives the call back).
    pub fn encode(&self) -> (u32, Args) {
        let mut a = [0u64; 7];
        let vm = |a: &mut Args, v: VmId| a[0] = v.0 as u64;
        let buf = |a: &mut Args, i: usize, b: Buffer| {
            a[i] = b.ipa;
            a[i + 1] = b.len;
        };
        let xy = |x: i32, y: i32| pair(x as u32, y as u32);
        let n = match *self {
            Call::Version => func::VERSION,
            Call::Open { version, ring } => {
                a[0] = version.to_reg();
                buf(&mut a, 1, ring);
                func::OPEN
            }
            Call::VmList { out } => {
                buf(&mut a, 0, out);
                func::VM_LIST
            }
            Call::VmStart(v) => {
                vm(&mut a, v);
                func::VM_START
            }
            Call::VmPause(v) => {
                vm(&mut a, v);
                func::VM_PAUSE
            }
            Call::VmResume(v) => {
                vm(&mut a, v);
                func::VM_RESUME
            }
            Call::VmSuspend(v) => {
                vm(&mut a, v);
                func::VM_SUSPEND
            }
            Call::VmSnapshot { vm: v, tag, disk } => {
                vm(&mut a, v);
                buf(&mut a, 1, tag);
                a[3] = if disk { SNAPSHOT_DISK } else { 0 };
                func::VM_SNAPSHOT
            }
            Call::VmRollback { vm: v, tag } => {
                vm(&mut a, v);
                buf(&mut a, 1, tag);
                func::VM_ROLLBACK
            }
            Call::VmDeleteSnapshot { vm: v, tag } => {
                vm(&mut a, v);
                buf(&mut a, 1, tag);
                func::VM_DELETE_SNAPSHOT
            }
            Call::Present { vm: v, placement } => {
                vm(&mut a, v);
                match placement {
                    Placement::Panel(r) => {
                        a[2] = xy(r.x, r.y);
                        a[3] = pair(r.w, r.h);
                    }
                    Placement::Fullscreen => a[1] = 1,
                    Placement::Quad(c) => {
                        a[1] = 2;
                        for (i, (x, y)) in c.into_iter().enumerate() {
                            a[2 + i] = xy(x, y);
                        }
                    }
                }
                func::PRESENT
            }
            Call::Hide(v) => {
                vm(&mut a, v);
                func::HIDE
            }
            Call::Freeze(v) => {
                vm(&mut a, v);
                func::FREEZE
            }
            Call::Unfreeze(v) => {
                vm(&mut a, v);
                func::UNFREEZE
            }
            Call::Throttle { vm: v, fps } => {
                vm(&mut a, v);
                a[1] = fps as u64;
                func::THROTTLE
            }
            Call::SetMode { vm: v, w, h } => {
                vm(&mut a, v);
                a[1] = pair(w, h);
                func::SET_MODE
            }
            Call::SetInput { vm: v, interactive } => {
                vm(&mut a, v);
                a[1] = interactive as u64;
                func::SET_INPUT
            }
            Call::InjectInput { vm: v, events } => {
                vm(&mut a, v);
                a[1] = events.ipa;
                a[2] = events.len / EVENT_SIZE as u64;
                func::INJECT_INPUT
            }
            Call::RunInputScript { vm: v, script } => {
                vm(&mut a, v);
                buf(&mut a, 1, script);
                func::RUN_INPUT_SCRIPT
            }
            Call::Capture { vm: v, region, out } => {
                vm(&mut a, v);
                if let Some(r) = region {
                    a[1] = xy(r.x, r.y);
                    a[2] = pair(r.w, r.h);
                }
                buf(&mut a, 3, out);
                func::CAPTURE
            }
            Call::PolicyGet(v) => {
                vm(&mut a, v);
                func::POLICY_GET
            }
            Call::PolicySet { vm: v, bits } => {
                vm(&mut a, v);
                a[1] = bits as u64;
                func::POLICY_SET
            }
            Call::Reply { out } => {
                buf(&mut a, 0, out);
                func::REPLY
            }
            Call::HostShutdown => func::HOST_SHUTDOWN,
            Call::VmSnapshots(v) => {
                vm(&mut a, v);
                func::VM_SNAPSHOTS
            }
            Call::DisplayOverlay { text } => {
                if let Some(t) = text {
                    buf(&mut a, 0, t);
                }
                func::DISPLAY_OVERLAY
            }
            Call::DisplayStatus => func::DISPLAY_STATUS,
            Call::ReserveKey(chord) => {
                if let Some(c) = chord {
                    a[0] = u64::from(c.modifiers());
                    a[1] = u64::from(c.usage());
                }
                func::RESERVE_KEY
            }
            Call::InputAction { vm: v, kind } => {
                vm(&mut a, v);
                match kind {
                    InputKind::Type(t) | InputKind::Key(t) => {
                        a[1] = matches!(kind, InputKind::Key(_)) as u64;
                        buf(&mut a, 4, t);
                    }
                    InputKind::Pointer { x, y } => {
                        a[1] = 2;
                        a[2] = xy(x, y);
                    }
                    InputKind::Click { x, y, button } => {
                        a[1] = 3;
                        a[2] = xy(x, y);
                        a[3] = button as u64;
                    }
                    InputKind::Gaze { x, y, ms } => {
                        a[1] = 4;
                        a[2] = xy(x, y);
                        a[3] = ms as u64;
                    }
                }
                func::INPUT_ACTION
            }
            Call::Usb { vm: v, op } => {
                vm(&mut a, v);
                a[1] = op as u64;
                func::USB
            }
            Call::ConsoleRead { vm: v, out } => {
                vm(&mut a, v);
                buf(&mut a, 1, out);
                func::CONSOLE_READ
            }
            Call::ConsoleWrite { vm: v, data } => {
                vm(&mut a, v);
                buf(&mut a, 1, data);
                func::CONSOLE_WRITE
            }
        };
        (crate::fid(n), a)
    }

    /// The VM the call acts on.
    pub fn vm(&self) -> Option<VmId> {
        match *self {
            Call::Version
            | Call::Open { .. }
            | Call::VmList { .. }
            | Call::Reply { .. }
            | Call::HostShutdown
            | Call::DisplayOverlay { .. }
            | Call::DisplayStatus
            | Call::ReserveKey(_) => None,
            Call::VmSnapshots(v) => Some(v),
            Call::InputAction { vm, .. }
            | Call::Usb { vm, .. }
            | Call::ConsoleRead { vm, .. }
            | Call::ConsoleWrite { vm, .. } => Some(vm),
            Call::VmStart(v)
            | Call::VmPause(v)
            | Call::VmResume(v)
            | Call::VmSuspend(v)
            | Call::Hide(v)
            | Call::Freeze(v)
            | Call::Unfreeze(v)
            | Call::PolicyGet(v) => Some(v),
            Call::VmSnapshot { vm, .. }
            | Call::VmRollback { vm, .. }
            | Call::VmDeleteSnapshot { vm, .. }
            | Call::Present { vm, .. }
            | Call::Throttle { vm, .. }
            | Call::SetMode { vm, .. }
            | Call::SetInput { vm, .. }
            | Call::InjectInput { vm, .. }
            | Call::RunInputScript { vm, .. }
            | Call::Capture { vm, .. }
            | Call::PolicySet { vm, .. } => Some(vm),
        }
    }

    /// The authority-memory buffer the call reads or writes.
    pub fn buffer(&self) -> Option<Buffer> {
        match *self {
            Call::Open { ring, .. } => Some(ring),
            Call::VmList { out } | Call::Capture { out, .. } => Some(out),
            Call::VmSnapshot { tag, .. }
            | Call::VmRollback { tag, .. }
            | Call::VmDeleteSnapshot { tag, .. } => Some(tag),
            Call::InjectInput { events, .. } => Some(events),
            Call::RunInputScript { script, .. } => Some(script),
            Call::Reply { out } | Call::ConsoleRead { out, .. } => Some(out),
            Call::ConsoleWrite { data, .. } => Some(data),
            Call::DisplayOverlay { text } => text,
            Call::InputAction {
                kind: InputKind::Type(t) | InputKind::Key(t),
                ..
            } => Some(t),
            _ => None,
        }
    }
}

/// What [`validate`] asks of the hypervisor about the calling session.
pub trait Session {
    /// A successful OPEN happened.
    fn is_open(&self) -> bool;
    /// A VM has this id.
    fn vm_exists(&self, vm: VmId) -> bool;
    /// `[ipa, ipa + len)` lies entirely in the authority partition's own RAM.
    fn is_authority_memory(&self, ipa: u64, len: u64) -> bool;
}

/// Checks a decoded call against the session, in this order: the session is open
/// (VERSION and OPEN excepted), OPEN's version is served, the VM exists, the
/// buffer is the authority's own memory.
pub fn validate(call: &Call, s: &impl Session) -> Result<(), Status> {
    match call {
        Call::Version => {}
        Call::Open { version, .. } if !VERSION.serves(*version) => {
            return Err(Status::VersionMismatch)
        }
        Call::Open { .. } => {}
        _ if !s.is_open() => return Err(Status::NotOpen),
        _ => {}
    }
    if let Some(vm) = call.vm() {
        if !s.vm_exists(vm) {
            return Err(Status::NoSuchVm);
        }
    }
    if let Some(b) = call.buffer() {
        if !s.is_authority_memory(b.ipa, b.len) {
            return Err(Status::BadBuffer);
        }
    }
    Ok(())
}

/// A snapshot tag read from authority memory: 1..=[`TAG_MAX`] bytes of
/// `A-Z a-z 0-9 . _ -` (the monitor's rule).
pub fn parse_tag(bytes: &[u8]) -> Result<&str, Status> {
    let good = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-');
    if bytes.is_empty() || bytes.len() as u64 > TAG_MAX || !bytes.iter().all(good) {
        return invalid();
    }
    core::str::from_utf8(bytes).or_else(|_| invalid())
}

/// A VM's state in a [`VmEntry`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum VmState {
    Off = 0,
    Running = 1,
    Paused = 2,
    /// Saved to the system disk, not running.
    Suspended = 3,
}

impl VmState {
    pub fn from_u32(v: u32) -> Option<VmState> {
        Some(match v {
            0 => VmState::Off,
            1 => VmState::Running,
            2 => VmState::Paused,
            3 => VmState::Suspended,
            _ => return None,
        })
    }
}

/// [`VmEntry::flags`]: presented on the physical display.
pub const VM_PRESENTED: u32 = 1 << 0;
/// [`VmEntry::flags`]: receives input.
pub const VM_INTERACTIVE: u32 = 1 << 1;
/// [`VmEntry::flags`]: its presentation is frozen.
pub const VM_FROZEN: u32 = 1 << 2;
const VM_FLAGS_KNOWN: u32 = VM_PRESENTED | VM_INTERACTIVE | VM_FROZEN;

/// One VM as VM_LIST writes it: id, state, vCPU count, flags (u32 each) and the
/// name, NUL-padded to [`VM_NAME_MAX`] bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmEntry {
    pub id: VmId,
    pub state: VmState,
    pub vcpus: u32,
    pub flags: u32,
    pub name: [u8; VM_NAME_MAX],
}

impl VmEntry {
    pub fn encode(&self) -> [u8; VM_ENTRY_SIZE] {
        let mut b = [0u8; VM_ENTRY_SIZE];
        for (i, v) in [self.id.0, self.state as u32, self.vcpus, self.flags]
            .into_iter()
            .enumerate()
        {
            b[i * 4..i * 4 + 4].copy_from_slice(&v.to_le_bytes());
        }
        b[16..].copy_from_slice(&self.name);
        b
    }

    /// The caller's side; anything not written by [`VmEntry::encode`] is refused.
    pub fn decode(b: &[u8; VM_ENTRY_SIZE]) -> Option<VmEntry> {
        let u = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let state = match u(4) {
            0 => VmState::Off,
            1 => VmState::Running,
            2 => VmState::Paused,
            3 => VmState::Suspended,
            _ => return None,
        };
        let mut name = [0u8; VM_NAME_MAX];
        name.copy_from_slice(&b[16..]);
        let len = name.iter().position(|&c| c == 0).unwrap_or(VM_NAME_MAX);
        if u(12) & !VM_FLAGS_KNOWN != 0 || name[len..].iter().any(|&c| c != 0) {
            return None;
        }
        Some(VmEntry {
            id: VmId(u(0)),
            state,
            vcpus: u(8),
            flags: u(12),
            name,
        })
    }

    /// The name up to its first NUL, if it is UTF-8.
    pub fn name(&self) -> Option<&str> {
        let len = self
            .name
            .iter()
            .position(|&c| c == 0)
            .unwrap_or(VM_NAME_MAX);
        core::str::from_utf8(&self.name[..len]).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A session with VMs 0 and 1 and authority RAM at [0x4000_0000, +16 MiB).
    struct Fake {
        open: bool,
    }

    const RAM: (u64, u64) = (0x4000_0000, 16 << 20);

    impl Session for Fake {
        fn is_open(&self) -> bool {
            self.open
        }
        fn vm_exists(&self, vm: VmId) -> bool {
            vm.0 < 2
        }
        fn is_authority_memory(&self, ipa: u64, len: u64) -> bool {
            ipa >= RAM.0 && ipa.checked_add(len).is_some_and(|e| e <= RAM.0 + RAM.1)
        }
    }

    fn buf(len: u64) -> Buffer {
        Buffer { ipa: RAM.0, len }
    }

    fn samples() -> [Call; 22] {
        let v = VmId(1);
        let r = Rect {
            x: -10,
            y: 20,
            w: 640,
            h: 480,
        };
        [
            Call::Version,
            Call::Open {
                version: VERSION,
                ring: buf(4096),
            },
            Call::VmList {
                out: buf(VM_ENTRY_SIZE as u64 * 4),
            },
            Call::VmStart(v),
            Call::VmPause(v),
            Call::VmResume(v),
            Call::VmSuspend(v),
            Call::VmSnapshot {
                vm: v,
                tag: buf(5),
                disk: true,
            },
            Call::VmRollback { vm: v, tag: buf(5) },
            Call::VmDeleteSnapshot { vm: v, tag: buf(5) },
            Call::Present {
                vm: v,
                placement: Placement::Quad([(0, 0), (100, 10), (90, 80), (-5, 70)]),
            },
            Call::Hide(v),
            Call::Freeze(v),
            Call::Unfreeze(v),
            Call::Throttle { vm: v, fps: 30 },
            Call::SetMode {
                vm: v,
                w: 1920,
                h: 1080,
            },
            Call::SetInput {
                vm: v,
                interactive: true,
            },
            Call::InjectInput {
                vm: v,
                events: buf(3 * EVENT_SIZE as u64),
            },
            Call::RunInputScript {
                vm: v,
                script: buf(100),
            },
            Call::Capture {
                vm: v,
                region: Some(r),
                out: buf(640 * 480 * 4),
            },
            Call::PolicyGet(v),
            Call::PolicySet { vm: v, bits: 0x13 },
        ]
    }

    #[test]
    fn every_call_round_trips_and_passes_validation_in_an_open_session() {
        let s = Fake { open: true };
        let mut seen = [false; 0x52];
        for call in samples() {
            let (fid, a) = call.encode();
            assert_eq!(decode(fid, &a), Ok(call));
            assert_eq!(validate(&call, &s), Ok(()), "{call:?}");
            seen[(fid & 0xffff) as usize] = true;
        }
        // The samples cover every function number.
        let all = [
            func::VERSION,
            func::OPEN,
            func::VM_LIST,
            func::VM_START,
            func::VM_PAUSE,
            func::VM_RESUME,
            func::VM_SUSPEND,
            func::VM_SNAPSHOT,
            func::VM_ROLLBACK,
            func::VM_DELETE_SNAPSHOT,
            func::PRESENT,
            func::HIDE,
            func::FREEZE,
            func::UNFREEZE,
            func::THROTTLE,
            func::SET_MODE,
            func::SET_INPUT,
            func::INJECT_INPUT,
            func::RUN_INPUT_SCRIPT,
            func::CAPTURE,
            func::POLICY_GET,
            func::POLICY_SET,
        ];
        assert!(all.iter().all(|&n| seen[n as usize]));
        // Panel and fullscreen placements and a whole-frame capture too.
        for placement in [
            Placement::Fullscreen,
            Placement::Panel(Rect {
                x: MAX_COORD,
                y: -MAX_COORD,
                w: MAX_DIM,
                h: 1,
            }),
        ] {
            let c = Call::Present {
                vm: VmId(0),
                placement,
            };
            assert_eq!(decode(c.encode().0, &c.encode().1), Ok(c));
        }
        let c = Call::Capture {
            vm: VmId(0),
            region: None,
            out: buf(4),
        };
        assert_eq!(decode(c.encode().0, &c.encode().1), Ok(c));
    }

    #[test]
    fn ids_outside_the_range_or_unknown_are_not_supported() {
        let a = [0; 7];
        for fid in [
            0x8400_0000,                 // PSCI
            0xC500_0000,                 // another owning entity
            0x8600_0000,                 // our VERSION in the SMC32 convention
            crate::fid(0x04),            // unassigned number
            crate::fid(0xFF01),          // call UID: not offered
            crate::fid(0) | 0x0001_0000, // bits [23:16] set
            0x4600_0000,                 // yielding call
        ] {
            assert_eq!(decode(fid, &a), Err(Status::NotSupported), "{fid:#x}");
        }
    }

    #[test]
    fn malformed_arguments_are_invalid_parameters() {
        let f = crate::fid;
        let bad: &[(u16, Args)] = &[
            // VM id with upper bits.
            (func::VM_PAUSE, [1 << 32, 0, 0, 0, 0, 0, 0]),
            // Version with bits above 32.
            (func::OPEN, [1 << 40, RAM.0, 4096, 0, 0, 0, 0]),
            // Ring too large, empty, wrapping.
            (
                func::OPEN,
                [0x1_0000, RAM.0, ring::MAX_BYTES + 1, 0, 0, 0, 0],
            ),
            (func::OPEN, [0x1_0000, RAM.0, 0, 0, 0, 0, 0]),
            (func::OPEN, [0x1_0000, u64::MAX - 10, 4096, 0, 0, 0, 0]),
            // VM list not a whole number of entries.
            (func::VM_LIST, [RAM.0, 81, 0, 0, 0, 0, 0]),
            // Tag too long, empty; unknown snapshot flag.
            (func::VM_SNAPSHOT, [0, RAM.0, TAG_MAX + 1, 0, 0, 0, 0]),
            (func::VM_ROLLBACK, [0, RAM.0, 0, 0, 0, 0, 0]),
            (func::VM_SNAPSHOT, [0, RAM.0, 4, 2, 0, 0, 0]),
            // Placement kind, zero and huge sizes, far coordinates, flat quad.
            (func::PRESENT, [0, 3, 0, 0, 0, 0, 0]),
            (func::PRESENT, [0, 0, 0, pair(0, 10), 0, 0, 0]),
            (func::PRESENT, [0, 0, 0, pair(MAX_DIM + 1, 10), 0, 0, 0]),
            (
                func::PRESENT,
                [0, 0, pair(MAX_COORD as u32 + 1, 0), pair(1, 1), 0, 0, 0],
            ),
            (
                func::PRESENT,
                [0, 0, pair(-MAX_COORD as u32 - 1, 0), pair(1, 1), 0, 0, 0],
            ),
            (
                func::PRESENT,
                [0, 2, pair(0, 0), pair(5, 5), pair(10, 10), pair(20, 20), 0],
            ),
            // Throttle 0 and too fast; mode 0x0.
            (func::THROTTLE, [0, 0, 0, 0, 0, 0, 0]),
            (func::THROTTLE, [0, MAX_FPS as u64 + 1, 0, 0, 0, 0, 0]),
            (func::SET_MODE, [0, 0, 0, 0, 0, 0, 0]),
            // Interactive other than 0/1.
            (func::SET_INPUT, [0, 2, 0, 0, 0, 0, 0]),
            // No events, too many, count whose size would wrap.
            (func::INJECT_INPUT, [0, RAM.0, 0, 0, 0, 0, 0]),
            (func::INJECT_INPUT, [0, RAM.0, MAX_EVENTS + 1, 0, 0, 0, 0]),
            (func::INJECT_INPUT, [0, RAM.0, u64::MAX / 8, 0, 0, 0, 0]),
            // Script too long.
            (
                func::RUN_INPUT_SCRIPT,
                [0, RAM.0, MAX_SCRIPT + 1, 0, 0, 0, 0],
            ),
            // Whole-frame capture with a position; capture buffer too big.
            (func::CAPTURE, [0, pair(3, 0), 0, RAM.0, 16, 0, 0]),
            (func::CAPTURE, [0, 0, 0, RAM.0, MAX_BUFFER + 1, 0, 0]),
            // Unknown policy bits.
            (func::POLICY_SET, [0, 1 << 5, 0, 0, 0, 0, 0]),
            (func::POLICY_SET, [0, 1 << 33, 0, 0, 0, 0, 0]),
        ];
        for (n, a) in bad {
            assert_eq!(
                decode(f(*n), a),
                Err(Status::InvalidParameters),
                "{n:#x} {a:x?}"
            );
        }
    }

    #[test]
    fn validation_needs_an_open_session_a_served_version_a_vm_and_own_memory() {
        let closed = Fake { open: false };
        let open = Fake { open: true };
        // Before OPEN only VERSION and OPEN pass.
        for call in samples() {
            let want = match call {
                Call::Version | Call::Open { .. } => Ok(()),
                _ => Err(Status::NotOpen),
            };
            assert_eq!(validate(&call, &closed), want, "{call:?}");
        }
        // OPEN with a newer minor or another major.
        for version in [
            Version {
                major: VERSION.major,
                minor: VERSION.minor + 1,
            },
            Version {
                major: VERSION.major + 1,
                minor: 0,
            },
            Version { major: 0, minor: 9 },
        ] {
            let call = Call::Open {
                version,
                ring: buf(4096),
            };
            assert_eq!(validate(&call, &open), Err(Status::VersionMismatch));
        }
        // A VM id nobody has.
        assert_eq!(
            validate(&Call::VmPause(VmId(2)), &open),
            Err(Status::NoSuchVm)
        );
        // Buffers outside authority memory: before, straddling the end, beyond.
        for ipa in [RAM.0 - 1, RAM.0 + RAM.1 - 2, RAM.0 + RAM.1, 0] {
            let call = Call::RunInputScript {
                vm: VmId(0),
                script: Buffer { ipa, len: 4 },
            };
            assert_eq!(validate(&call, &open), Err(Status::BadBuffer), "{ipa:#x}");
        }
    }

    fn minor1_samples() -> [Call; 14] {
        let v = VmId(1);
        [
            Call::Reply { out: buf(4096) },
            Call::HostShutdown,
            Call::VmSnapshots(v),
            Call::DisplayOverlay {
                text: Some(buf(11)),
            },
            Call::DisplayOverlay { text: None },
            Call::DisplayStatus,
            Call::InputAction {
                vm: v,
                kind: InputKind::Type(buf(TEXT_MAX)),
            },
            Call::InputAction {
                vm: v,
                kind: InputKind::Key(buf(10)),
            },
            Call::InputAction {
                vm: v,
                kind: InputKind::Pointer { x: -3, y: 40 },
            },
            Call::InputAction {
                vm: v,
                kind: InputKind::Click {
                    x: 3,
                    y: 4,
                    button: Button::Forward,
                },
            },
            Call::InputAction {
                vm: v,
                kind: InputKind::Gaze {
                    x: 100,
                    y: MAX_COORD,
                    ms: GAZE_MS_MAX as u32,
                },
            },
            Call::Usb {
                vm: v,
                op: UsbOp::Attach,
            },
            Call::ConsoleRead {
                vm: v,
                out: buf(CONSOLE_MAX),
            },
            Call::ConsoleWrite {
                vm: v,
                data: buf(1),
            },
        ]
    }

    #[test]
    fn minor_1_calls_round_trip_validate_and_refuse_malformed_arguments() {
        let open = Fake { open: true };
        let closed = Fake { open: false };
        for call in minor1_samples() {
            let (fid, a) = call.encode();
            assert_eq!(decode(fid, &a), Ok(call));
            assert_eq!(validate(&call, &open), Ok(()), "{call:?}");
            assert_eq!(validate(&call, &closed), Err(Status::NotOpen), "{call:?}");
            if call.vm().is_some() {
                let mut a2 = a;
                a2[0] = 9;
                let c2 = decode(fid, &a2).unwrap();
                assert_eq!(validate(&c2, &open), Err(Status::NoSuchVm), "{call:?}");
            }
            if let Some(b) = call.buffer() {
                // The same call with its buffer moved just past authority memory.
                let i = a.iter().position(|&r| r == b.ipa).unwrap();
                let mut a2 = a;
                a2[i] = RAM.0 + RAM.1 - b.len + 1;
                let c2 = decode(fid, &a2).unwrap();
                assert_eq!(validate(&c2, &open), Err(Status::BadBuffer), "{call:?}");
            }
        }
        let f = crate::fid;
        let bad: &[(u16, Args)] = &[
            (func::REPLY, [RAM.0, 0, 0, 0, 0, 0, 0]),
            (func::REPLY, [RAM.0, REPLY_MAX + 1, 0, 0, 0, 0, 0]),
            (func::VM_SNAPSHOTS, [1 << 32, 0, 0, 0, 0, 0, 0]),
            (func::DISPLAY_OVERLAY, [RAM.0, TEXT_MAX + 1, 0, 0, 0, 0, 0]),
            // Unknown input kind; text kinds with a position; empty text.
            (func::INPUT_ACTION, [0, 5, 0, 0, 0, 0, 0]),
            (func::INPUT_ACTION, [0, 0, pair(1, 1), 0, 0, RAM.0, 4]),
            (func::INPUT_ACTION, [0, 1, 0, 0, 0, RAM.0, 0]),
            (func::INPUT_ACTION, [0, 0, 0, 0, 0, RAM.0, TEXT_MAX + 1]),
            // Pointer with an argument or text; far position; bad button; long gaze.
            (func::INPUT_ACTION, [0, 2, 0, 1, 0, 0, 0]),
            (func::INPUT_ACTION, [0, 2, 0, 0, 0, RAM.0, 4]),
            (
                func::INPUT_ACTION,
                [0, 2, pair(MAX_COORD as u32 + 1, 0), 0, 0, 0, 0],
            ),
            (func::INPUT_ACTION, [0, 3, 0, 5, 0, 0, 0]),
            (func::INPUT_ACTION, [0, 4, 0, GAZE_MS_MAX + 1, 0, 0, 0]),
            (func::USB, [0, 2, 0, 0, 0, 0, 0]),
            (func::CONSOLE_READ, [0, RAM.0, 0, 0, 0, 0, 0]),
            (func::CONSOLE_WRITE, [0, RAM.0, CONSOLE_MAX + 1, 0, 0, 0, 0]),
        ];
        for (n, a) in bad {
            assert_eq!(
                decode(f(*n), a),
                Err(Status::InvalidParameters),
                "{n:#x} {a:x?}"
            );
        }
    }

    #[test]
    fn reserve_key_round_trips_and_refuses_what_is_not_a_chord() {
        use crate::input::modifier::{ALT, CTRL, GUI};
        let open = Fake { open: true };
        let home = Chord::new(CTRL | ALT, 0x4a).unwrap();
        for call in [
            Call::ReserveKey(Some(home)),
            Call::ReserveKey(Some(Chord::new(0, 0x04).unwrap())),
            Call::ReserveKey(Some(Chord::new(GUI, 0x73).unwrap())),
            Call::ReserveKey(None),
        ] {
            let (fid, a) = call.encode();
            assert_eq!(fid, crate::fid(func::RESERVE_KEY));
            assert_eq!(decode(fid, &a), Ok(call));
            assert_eq!(validate(&call, &open), Ok(()));
            assert_eq!(call.vm(), None);
            assert_eq!(call.buffer(), None);
        }
        let f = crate::fid(func::RESERVE_KEY);
        // A modifier as the key, no key, a usage past F24 (no physical key
        // maps there), past the byte, modifier bits beyond the four (a
        // right-hand bit), modifiers too wide.
        for (m, u) in [
            (0, 0xe0),
            (0, 0x74),
            (0, 0xdd),
            (CTRL as u64, 0),
            (0, 0x03),
            (0, 0x1_04),
            (0x10, 0x4a),
            (0x1_01, 0x4a),
        ] {
            assert_eq!(
                decode(f, &[m, u, 0, 0, 0, 0, 0]),
                Err(Status::InvalidParameters),
                "{m:#x} {u:#x}"
            );
        }
    }

    #[test]
    fn chords_are_held_by_either_sides_modifiers() {
        use crate::input::modifier::{ALT, CTRL};
        let c = Chord::new(CTRL | ALT, 0x4a).unwrap();
        // Left Ctrl + right Alt; right Ctrl + left Alt; both plus Shift.
        for held in [0x01 | 0x40, 0x10 | 0x04, 0x01 | 0x04 | 0x02] {
            assert!(c.held(held), "{held:#x}");
        }
        for held in [0, 0x01, 0x40, 0x02 | 0x20] {
            assert!(!c.held(held), "{held:#x}");
        }
        assert!(Chord::new(0, 0x4a).unwrap().held(0));
    }

    #[test]
    fn tags_follow_the_monitor_rule() {
        assert_eq!(parse_tag(b"before-update_1.2"), Ok("before-update_1.2"));
        for bad in [&b""[..], b"a b", b"caf\xc3\xa9", b"x/y", &[b'a'; 33]] {
            assert_eq!(parse_tag(bad), Err(Status::InvalidParameters), "{bad:?}");
        }
        assert!(parse_tag(&[b'a'; 32]).is_ok());
    }

    #[test]
    fn vm_entries_round_trip_and_foreign_bytes_are_refused() {
        let mut name = [0u8; VM_NAME_MAX];
        name[..5].copy_from_slice(b"linux");
        let e = VmEntry {
            id: VmId(7),
            state: VmState::Suspended,
            vcpus: 2,
            flags: VM_PRESENTED | VM_FROZEN,
            name,
        };
        let b = e.encode();
        assert_eq!(VmEntry::decode(&b), Some(e.clone()));
        assert_eq!(e.name(), Some("linux"));
        let mut bad = b;
        bad[4] = 9; // state
        assert_eq!(VmEntry::decode(&bad), None);
        let mut bad = b;
        bad[12] = 0x80; // flag
        assert_eq!(VmEntry::decode(&bad), None);
        let mut bad = b;
        bad[16 + 10] = b'x'; // bytes after the NUL
        assert_eq!(VmEntry::decode(&bad), None);
    }

    #[test]
    fn policy_bits_are_the_registrys() {
        use registry::defs::*;
        assert_eq!(POLICY_KNOWN, POLICY_V1_KNOWN);
    }

    proptest! {
        /// Whatever a caller puts in the registers, decoding answers (never
        /// panics), and what decodes re-encodes to a call that decodes the same.
        #[test]
        fn any_registers_decode_or_are_refused(n in 0u16..0x70, a in any::<Args>()) {
            if let Ok(call) = decode(crate::fid(n), &a) {
                let (fid, b) = call.encode();
                prop_assert_eq!(fid, crate::fid(n));
                prop_assert_eq!(decode(fid, &b), Ok(call));
                let _ = validate(&call, &Fake { open: true });
            }
        }
    }
}
