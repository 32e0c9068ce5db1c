//! The RayOS authority partition's logic, host-testable: the `rayos> ` shell
//! ([`shell`]) and the policy-driven boot sequence ([`boot`]), both over
//! [`Authority`] — the monitor's [`VmControl`] plus what the authority ABI adds —
//! which [`monitor::abi_client::AbiControl`] implements over hypercalls.
//!
//! The partition binary (`guests/authority`) only moves bytes between the PL011
//! and [`shell::Shell`] and does the `HVC`s.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod boot;
pub mod shell;

use alloc::vec::Vec;

use authority_abi::call::{Rect, VmEntry};
use authority_abi::input::Chord;
use authority_abi::ring::Event;
use monitor::abi_client::{AbiControl, CaptureRows, Hypercall};
use monitor::{ControlError, VmControl};

/// What the authority drives: the monitor's operations plus the ABI's own.
pub trait Authority: VmControl {
    /// Every VM with its id, ABI state (incl. suspended) and flags.
    fn entries(&self) -> Vec<VmEntry>;
    /// Starts a VM that is off (resume from saved state or cold boot: the
    /// hypervisor decides by the VM's `resume_on_boot`).
    fn start(&mut self, vm: &str) -> Result<(), ControlError>;
    /// The VM's policy bits (the registry's `POLICY_*`).
    fn policy(&mut self, vm: &str) -> Result<u32, ControlError>;
    /// Hands an (already validated) input script to the hypervisor.
    fn run_script(&mut self, vm: &str, script: &[u8]) -> Result<(), ControlError>;
    /// What the VM printed on its serial line since the last read.
    fn console_read(&mut self, vm: &str) -> Result<Vec<u8>, ControlError>;
    /// Types on the VM's serial line; answers the bytes it took.
    fn console_write(&mut self, vm: &str, data: &[u8]) -> Result<usize, ControlError>;
    /// The VM's frame (`None`) or a region of it, as XRGB8888 rows handed to
    /// `rows` in order with the capture's width and height; answers those.
    fn capture(
        &mut self,
        vm: &str,
        region: Option<Rect>,
        rows: &mut CaptureRows<'_>,
    ) -> Result<(u32, u32), ControlError>;
    /// What the hypervisor reported since the last call (the event ring).
    fn events(&mut self) -> Vec<Event>;
    /// Reserves `chord` of the physical keyboard for RayOS (`None`: none): its
    /// presses come back as `Event::ReservedKey`, never reaching a guest.
    fn reserve_key(&mut self, chord: Option<Chord>) -> Result<(), ControlError>;
}

impl<H: Hypercall> Authority for AbiControl<H> {
    fn entries(&self) -> Vec<VmEntry> {
        AbiControl::entries(self)
    }
    fn start(&mut self, vm: &str) -> Result<(), ControlError> {
        AbiControl::start(self, vm)
    }
    fn policy(&mut self, vm: &str) -> Result<u32, ControlError> {
        AbiControl::policy(self, vm)
    }
    fn run_script(&mut self, vm: &str, script: &[u8]) -> Result<(), ControlError> {
        AbiControl::run_script(self, vm, script)
    }
    fn console_read(&mut self, vm: &str) -> Result<Vec<u8>, ControlError> {
        AbiControl::console_read(self, vm)
    }
    fn console_write(&mut self, vm: &str, data: &[u8]) -> Result<usize, ControlError> {
        AbiControl::console_write(self, vm, data)
    }
    fn capture(
        &mut self,
        vm: &str,
        region: Option<Rect>,
        rows: &mut CaptureRows<'_>,
    ) -> Result<(u32, u32), ControlError> {
        AbiControl::capture(self, vm, region, rows)
    }
    fn events(&mut self) -> Vec<Event> {
        AbiControl::events(self)
    }
    fn reserve_key(&mut self, chord: Option<Chord>) -> Result<(), ControlError> {
        AbiControl::reserve_key(self, chord)
    }
}

/// Where the shell's output goes (the PL011; a `Vec` in tests).
pub trait Terminal {
    fn write(&mut self, bytes: &[u8]);
}

impl Terminal for Vec<u8> {
    fn write(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// The policy bits, named as the registry names them (`authority_abi`'s
/// `POLICY_KNOWN` is checked against the registry's in its tests).
pub mod policy {
    pub const AUTOSTART: u32 = 1 << 0;
    pub const RESUME_ON_BOOT: u32 = 1 << 1;
    pub const VISIBLE_ON_START: u32 = 1 << 2;
    pub const PAUSE_ON_HIDE: u32 = 1 << 3;
    pub const SUSPEND_ON_HOST_SHUTDOWN: u32 = 1 << 4;
}

#[cfg(test)]
mod fake;
