//! `boards` owns what the hypervisor knows about machines, as data:
//!
//! - [`board`]: the boards RayOS EL2 supports (`qemu-virt`, `ampere-altra`,
//!   `snapdragon-x-elite`), one `const` description each: memory map, UART, GIC,
//!   timer interrupts, PSCI conduit, reserved regions, quirks, with each figure's source;
//! - [`discover`]: the physical platform read from the device tree the firmware hands
//!   over (memory, UART, GIC, timer, CPUs, PSCI conduit, initrd), the board
//!   description filling what the tree leaves out;
//! - [`acpi`]: the same from ACPI tables (MADT, GTDT, SPCR, MCFG, FADT);
//! - [`crosscheck`]: the firmware's word against the description, mismatch by mismatch;
//! - [`redist`]: redistributors matched to CPUs by GICR_TYPER affinity;
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

pub mod acpi;
pub mod board;
pub mod boot_image;
pub mod crosscheck;
pub mod devices;
pub mod discover;
pub mod efi;
pub mod geni_uart;
pub mod guest;
pub mod guest_dt;
pub mod host_dt;
pub mod memmap;
pub mod redist;

pub use board::{Board, Quirk, Uart, UartKind, BOARDS};
pub use crosscheck::{crosscheck, Mismatch};
pub use discover::{discover, DiscoveryError, Platform, PsciConduit, Range};
