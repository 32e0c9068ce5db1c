//! An NVM Express 1.4 controller model: the subset Linux's `nvme` driver and
//! Windows' `stornvme` use, independent of PCI (a PCI function maps BAR0 onto
//! [`Controller::read`]/[`Controller::write`] and adapts [`Interrupts`] to MSI-X).
//!
//! - BAR0 registers (CAP, VS, INTMS/INTMC, CC, CSTS, AQA, ASQ, ACQ, doorbells at the
//!   CAP.DSTRD stride) as `tock-registers` bitfields ([`defs`]);
//! - controller enable and reset (CC.EN → CSTS.RDY), shutdown (CC.SHN → CSTS.SHST,
//!   after outstanding commands and a backend flush);
//! - admin commands: Identify (controller, namespace, active namespace list,
//!   namespace identification descriptors), Create/Delete I/O SQ/CQ (one interrupt
//!   vector per CQ, as many queue pairs as configured), Get/Set Features (number of
//!   queues, volatile write cache, interrupt coalescing and others), Get Log Page
//!   (error information, SMART / health, firmware slot), Asynchronous Event Request
//!   (held, bounded), Abort, Keep Alive;
//! - I/O commands: Read, Write, Flush, Write Zeroes, Dataset Management (deallocate,
//!   a validated hint), with PRP1/PRP2/PRP lists ([`prp`]); data moves through bounce
//!   buffers to a [`vdev::AsyncBlock`] and commands complete when the backend does;
//! - every guest value validated with the architected status code, doorbell misuse
//!   reported as the Invalid Doorbell asynchronous events, never a panic;
//! - [`vdev::SaveRestore`].
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod controller;
pub mod defs;
pub mod prp;
mod save;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
#[cfg(test)]
mod tests;

pub use controller::{Config, Controller, Interrupts, BAR0_SIZE, LBA_BYTES, MAX_TRANSFER};
pub use defs::Status;
