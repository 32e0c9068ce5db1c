//! `vdev` owns the seams every device model shares, so that no device crate defines
//! its own: how a device reaches guest memory ([`GuestMemory`]), how it raises
//! interrupts ([`InterruptSink`]), how the hypervisor calls it on a trapped MMIO
//! access ([`MmioDevice`]), how block devices reach storage ([`BlockBackend`]), how
//! device state is saved and restored ([`SaveRestore`]), the [`MmioBus`] that
//! routes a guest physical address to the device that owns it, and [`Shared`] for a
//! device that is reached from both the bus and the hypervisor. The host side of
//! guest console output lives here too, as pure code: the [`console`] line
//! discipline that keeps guest lines and hypervisor log lines apart, and the
//! [`ratelimit`] token bucket for log lines a guest can cause.
//!
//! Everything here is `no_std` + `alloc`, free of `unsafe`, and runs unchanged in the
//! hypervisor and in host tests and fuzzers.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod block;
pub mod bus;
pub mod console;
pub mod memory;
pub mod mmio;
pub mod ratelimit;
pub mod save;
#[cfg(feature = "testing")]
pub mod save_testing;
pub mod shared;
pub mod work;

pub use block::{
    AsyncBlock, BlockBackend, BlockError, BlockOp, Completion, DmaLimits, DmaSegment, SharedBlock,
    Submit, SyncBlock, SECTOR_SIZE,
};
pub use bus::{BusError, MmioBus};
pub use memory::{GuestMemory, MemError, VecMemory};
pub use mmio::{AccessSize, InterruptSink, MmioContext, MmioDevice, MmioError, NullInterrupts};
pub use save::{RestoreError, SaveRestore};
pub use shared::Shared;
pub use work::WorkSignal;
