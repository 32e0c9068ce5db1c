//! An xHCI 1.1 USB host controller model (eXtensible Host Controller Interface for
//! Universal Serial Bus, revision 1.1) with the USB devices a Windows 11 setup and
//! Linux need: a HID keyboard, a HID tablet (absolute pointer) and bulk-only mass
//! storage. Independent of PCI: a PCI function maps its BAR onto
//! [`Controller::read`]/[`Controller::write`] and adapts [`Interrupts`] to MSI-X
//! ([`function::XhciFunction`] is that function).
//!
//! - registers ([`defs`]): capability, operational, per-port, runtime (interrupter
//!   0) and doorbells, and two Supported Protocol extended capabilities (USB 2 and
//!   USB 3 root-hub ports);
//! - rings ([`trb`]): the command ring, interrupter 0's event ring through its Event
//!   Ring Segment Table, and one transfer ring per endpoint; walks are bounded
//!   ([`controller::TRB_BUDGET`] TRBs per doorbell, Link TRB loops detected), work
//!   left over continues from [`Controller::poll`];
//! - commands: Enable Slot, Disable Slot, Address Device (BSR too), Configure
//!   Endpoint (and deconfigure), Evaluate Context, Reset Endpoint, Stop Endpoint,
//!   Set TR Dequeue Pointer, Reset Device, No Op;
//! - transfers: control (Setup/Data/Status stages), bulk and interrupt TDs with
//!   chained Normal TRBs, immediate data, Event Data TRBs, short packets (ISP/IOC);
//! - devices ([`usb`], [`hid`], [`storage`]): standard requests and descriptors,
//!   HID boot/report protocol, LEDs, SET_IDLE; BOT with the SCSI commands of a
//!   removable disk, over a [`vdev::AsyncBlock`] whose requests complete later
//!   (the bulk endpoints NAK meanwhile, never holding a vCPU), hot-plugged with
//!   [`Controller::attach`]/[`Controller::detach`];
//! - hostile guests: bad slot and endpoint IDs, contexts and rings outside RAM,
//!   malformed requests (STALL), oversized TDs, a broken event ring segment table
//!   (Host Controller Error) — error completion codes, never a panic;
//! - [`vdev::SaveRestore`].
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod controller;
pub mod defs;
pub mod function;
pub mod hid;
pub mod host;
mod save;
pub mod storage;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_async;
#[cfg(test)]
mod tests_host;
pub mod trb;
pub mod usb;

pub use controller::{AttachError, Config, Controller, Interrupts};
pub use hid::{Keyboard, Tablet, TabletInput};
pub use host::{HostError, HostLink};
pub use storage::MassStorage;
pub use usb::Device;
