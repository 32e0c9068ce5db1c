//! `virtio` owns the device side of virtio for every virtio device of the hypervisor,
//! written once (virtio 1.2):
//!
//! - [`queue`]: split virtqueues with strict validation of everything the driver
//!   controls (queue size, ring addresses and alignment, descriptor indices, chain
//!   length and loops, indirect tables, buffer lengths and address wrap, readable
//!   before writable), used-ring updates, VIRTIO_F_EVENT_IDX.
//! - [`chain`]: validated descriptor chains and the cursors that move data through
//!   them in bounded chunks (a guest `len` of 4 GiB never becomes an allocation).
//! - [`transport`]: the virtio-mmio transport, version 2 only, as a
//!   [`vdev::MmioDevice`]: feature negotiation, the status state machine, queue setup,
//!   notifications, the level-triggered interrupt, config space at 0x100.
//! - [`shared`]: [`TransportCore`], the transport-independent half every transport
//!   owns (device, queues, feature negotiation, the status state machine, queue
//!   activation, notify, run budget, deferred work); it returns [`Events`] that a
//!   transport turns into its interrupts. The virtio-PCI transport
//!   (`pci::virtio::VirtioFunction` in the `pci` crate) drives the same core, so
//!   both transports carry the same device models.
//! - [`device`]: the [`VirtioDevice`] trait each device type implements.
//! - [`empty`]: [`EmptySlot`], a virtio-mmio slot with no device (DeviceID 0), for
//!   the unused slots of a machine's virtio-mmio window.
//! - Devices: [`blk`] (virtio-blk over a [`vdev::BlockBackend`]), [`console`]
//!   (virtio-console, one port), [`rng`] (virtio-rng over an [`rng::EntropySource`]),
//!   [`input`] (virtio-input keyboard or tablet fed with host-injected reports).
//! - [`defs`]: every architected constant, named once.
//! - [`save`]: saved-state plumbing; [`MmioTransport`] implements
//!   [`vdev::SaveRestore`] (registers, queues, and the device's own state).
//!
//! A malformed queue or chain puts the device into DEVICE_NEEDS_RESET (with a
//! configuration-change interrupt once DRIVER_OK is set and a `log::warn!` line); it
//! then processes nothing until the driver resets it. Guest memory is only reached
//! through [`vdev::GuestMemory`], whose errors count as malformed.
//!
//! Usage in the hypervisor, with `backend` any `vdev::AsyncBlock + Send` (a
//! `DynBackend` box, or a synchronous disk as `vdev::SyncBlock(disk)`):
//!
//! ```text
//! bus.insert("virtio-blk0", base, 0x200, Box::new(MmioTransport::new(Blk::new(backend), intid)))
//! ```
//!
//! Host-side work: [`MmioTransport::poll`] delivers console input queued with
//! `device_mut().push_input(..)` and finishes queue work deferred because one call
//! spent its [`RunBudget`] (a guest refilling a ring from another vCPU cannot hold an
//! exit forever); [`MmioTransport::needs_poll`] says when polling is due. After a
//! restore, `poll` also re-drives the interrupt line. Through the bus, deferred work
//! is `vdev::MmioDevice::has_deferred_work` / `resume`, and a transport built
//! [`MmioTransport::with_work_signal`] raises a `vdev::WorkSignal` whenever it
//! defers work, so the hypervisor resumes it without waiting for a notification
//! (with VIRTIO_F_EVENT_IDX the driver may never send another).
//!
//! VM reset is `vdev::MmioDevice::reset`: the transport's device reset plus
//! ConfigGeneration 0, the device's host-side buffers dropped, the line lowered.
//!
//! The `testing` feature exposes `virtio::testing`: driver-side helpers (a guest driver
//! over MMIO registers and a RAM disk) to other virtio device crates' tests.
//!
//! Not done yet: packed virtqueues (VIRTIO_F_RING_PACKED is not offered),
//! VIRTIO_F_RING_RESET / NOTIFICATION_DATA / IN_ORDER, virtio-blk DISCARD,
//! multi-queue and CONFIG_WCE, console multiport.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod blk;
pub mod chain;
pub mod console;
pub mod defs;
pub mod device;
pub mod empty;
pub mod input;
pub mod queue;
pub mod rng;
pub mod save;
pub mod shared;
pub mod transport;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

#[cfg(test)]
mod proptests;

pub use blk::{Blk, DynBackend};
pub use chain::{ChainReader, ChainWriter, DescChain, Segment};
pub use console::{Console, ConsoleOutput};
pub use device::{DeviceError, QueueContext, RequestError, RunBudget, VirtioDevice};
pub use empty::EmptySlot;
pub use input::Input;
pub use queue::{Queue, QueueError};
pub use rng::{EntropyError, EntropySource, Rng};
pub use shared::{Events, TransportCore};
pub use transport::MmioTransport;
