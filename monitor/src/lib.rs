//! The hypervisor monitor: a command line for the host operator on the serial
//! console, reached with `Ctrl-]` (0x1d, as in `virsh console`) and left the same
//! way. QEMU's own `Ctrl-A` escapes are QEMU's: they never reach this code as
//! escapes (a literal 0x01 that QEMU passes on is an ordinary byte).
//!
//! - [`input`] owns the console input path: the escape state machine (every host
//!   byte goes through it; in guest mode bytes are queued for the guest, in
//!   monitor mode none reaches the guest) and the monitor's line editor
//!   (backspace, Ctrl-U, terminal escape sequences skipped, overlong lines
//!   refused).
//! - [`command`] parses a monitor line into a [`command::Command`]; every error
//!   names what was wrong.
//! - [`control`] holds the [`control::VmControl`] trait — the internal API the
//!   monitor's commands call and the authority partition will call later — and
//!   [`control::execute`], which runs one line against it and answers with exactly
//!   one status line (`ok: …` or `error: …`, see `docs/monitor.md`).
//!
//! Pure code: el2 feeds it bytes from the physical UART and implements
//! `VmControl` over its VMs.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod command;
pub mod control;
pub mod input;

pub use command::{parse, Command, ParseError};
pub use control::{execute, After, ControlError, Reply, Status, VmControl, VmInfo, VmState};
pub use input::{Input, Step, ESCAPE, LINE_MAX};

/// How every line the monitor prints starts (a hypervisor line: a guest line
/// starting with `[el2` is shown escaped, so a guest cannot forge one). A status
/// line is this, a blank, and the [`Status`].
pub const LINE_PREFIX: &str = "[el2 monitor]";
/// The prompt shown while in the monitor.
pub const PROMPT: &str = "monitor> ";
