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
//! - [`abi`] dispatches the authority partition's ABI calls onto `VmControl`
//!   (the hypervisor's side); [`abi_client`] implements `VmControl` over those
//!   calls (the authority's side), so the authority's shell runs these commands
//!   with these status lines.
//!
//! Pure code: el2 feeds it bytes from the physical UART and implements
//! `VmControl` over its VMs.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod abi;
pub mod abi_client;
#[cfg(test)]
mod abi_tests;
pub mod answer;
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

#[cfg(test)]
mod proptests {
    //! Random console input, as an operator (or line noise) could type it.
    extern crate std;
    use super::*;
    use alloc::string::ToString;
    use alloc::vec::Vec;
    use proptest::prelude::*;

    /// A `VmControl` with one VM that refuses everything but `list`.
    struct One;
    impl VmControl for One {
        fn list(&self) -> Vec<VmInfo> {
            alloc::vec![VmInfo {
                name: "linux".into(),
                vcpus: 1,
                state: VmState::Running,
            }]
        }
        fn pause(&mut self, vm: &str) -> Result<(), ControlError> {
            Err(ControlError::NoSuchVm(vm.into()))
        }
        fn resume(&mut self, vm: &str) -> Result<(), ControlError> {
            Err(ControlError::NoSuchVm(vm.into()))
        }
        fn suspend(&mut self, vm: &str) -> Result<control::SuspendReport, ControlError> {
            Err(ControlError::NoSuchVm(vm.into()))
        }
        fn snapshot(
            &mut self,
            vm: &str,
            _: &str,
            _: command::SnapshotStore,
        ) -> Result<control::SnapshotInfo, ControlError> {
            Err(ControlError::NoSuchVm(vm.into()))
        }
        fn rollback(&mut self, vm: &str, _: &str) -> Result<(), ControlError> {
            Err(ControlError::NoSuchVm(vm.into()))
        }
        fn snapshots(&self, vm: &str) -> Result<Vec<control::SnapshotInfo>, ControlError> {
            Err(ControlError::NoSuchVm(vm.into()))
        }
        fn delete_snapshot(&mut self, vm: &str, _: &str) -> Result<(), ControlError> {
            Err(ControlError::NoSuchVm(vm.into()))
        }
        fn host_shutdown(&mut self) -> Result<control::ShutdownReport, ControlError> {
            Err(ControlError::Unsupported {
                what: "host shutdown".into(),
                why: "not in this test",
            })
        }
        fn display(&mut self, vm: &str, _: command::DisplayChange) -> Result<(), ControlError> {
            Err(ControlError::NoSuchVm(vm.into()))
        }
        fn display_overlay(&mut self, _: &str) -> Result<(), ControlError> {
            Err(ControlError::Unsupported {
                what: "display overlay".into(),
                why: "not in this test",
            })
        }
        fn display_status(&self) -> Result<alloc::string::String, ControlError> {
            Ok("headless".into())
        }
    }

    /// Bytes biased towards what matters: escapes, line ends, editing keys, words.
    fn byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            Just(ESCAPE),
            Just(b'\r'),
            Just(b'\n'),
            Just(0x7f),
            Just(0x15),
            Just(0x1b),
            Just(b' '),
            prop::sample::select(b"vmlistpausehelphost-".to_vec()),
            any::<u8>(),
        ]
    }

    proptest! {
        #[test]
        fn any_input_keeps_guest_and_monitor_apart(bytes in prop::collection::vec(byte(), 0..300)) {
            let mut input = Input::new();
            let mut to_guest = Vec::new();
            let mut in_monitor = false;
            for b in bytes {
                match input.feed(b) {
                    Step::Guest => {
                        prop_assert!(!in_monitor && b != ESCAPE);
                        to_guest.push(b);
                    }
                    Step::GuestDropped => prop_assert!(false, "the queue cannot fill here"),
                    Step::Entered => {
                        prop_assert!(!in_monitor);
                        in_monitor = true;
                    }
                    Step::Left => {
                        prop_assert!(in_monitor);
                        in_monitor = false;
                    }
                    Step::Line(line) => {
                        prop_assert!(in_monitor);
                        let text = line.as_str();
                        prop_assert!(!text.is_empty() && text.len() <= LINE_MAX);
                        prop_assert!(text.bytes().all(|c| (0x20..=0x7e).contains(&c)));
                        let status = execute(text, &mut One).status.to_string();
                        prop_assert!(status.starts_with("ok: ") || status.starts_with("error: "));
                        prop_assert!(status.bytes().all(|c| (0x20..=0x7e).contains(&c)));
                    }
                    Step::Echo(c) => prop_assert!(in_monitor && (0x20..=0x7e).contains(&c)),
                    _ => prop_assert!(in_monitor),
                }
                prop_assert_eq!(input.mode() == input::Mode::Monitor, in_monitor);
            }
            let mut out = alloc::vec![0; input::GUEST_QUEUE];
            let n = input.take_guest(&mut out);
            prop_assert_eq!(&out[..n], &to_guest[..]);
        }

        #[test]
        fn any_line_gets_one_status_line(line in "[ -~]{0,200}") {
            let status = execute(&line, &mut One).status.to_string();
            prop_assert!(status.starts_with("ok: ") || status.starts_with("error: "));
            prop_assert!(!status.contains('\n') && !status.contains('\r'));
        }
    }
}
