//! `boards` owns what the hypervisor knows about machines, as data:
//!
//! - [`board`]: the boards RayOS EL2 supports, one `const` description each (how to
//!   recognise it, how it powers off, what it lacks);
//! - [`discover`]: the physical platform read from the device tree the firmware hands
//!   over (memory, UART, GIC, timer, CPUs, PSCI conduit, initrd);
//! - [`boot_image`]: placing a kernel, initrd and device tree in guest RAM the way
//!   the arm64 boot protocol and QEMU's `-kernel` do;
//! - [`memmap`]: the free physical memory the hypervisor allocates from;
//! - [`guest`]: the guest-physical address map every VM sees (it mirrors QEMU `virt`
//!   so firmware and OS expectations hold);
//! - [`guest_dt`]: the device tree generated for a Linux guest on that map.
//!
//! Pure `no_std` + `alloc` code, tested on the host against device trees dumped from
//! the real machines.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod board;
pub mod boot_image;
pub mod discover;
pub mod guest;
pub mod guest_dt;
pub mod memmap;

pub use board::{Board, BOARDS};
pub use discover::{discover, DiscoveryError, Platform, PsciConduit, Range};
