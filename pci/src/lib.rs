//! A PCI Express root complex for a VM, at QEMU `virt`'s addresses
//! ([`defs::virt`]): bus 0 behind an ECAM window with the host bridge at 00:00.0
//! and device models in the other device numbers ([`RootComplex::attach`]).
//!
//! - Type-0 configuration space per function ([`config`]): identity and class,
//!   Command (Memory Space Enable, Bus Master Enable, Interrupt Disable), Status,
//!   memory BARs (32- and 64-bit) with sizing, the capability list with the PCI
//!   Express Capability (a Root Complex Integrated Endpoint), MSI-X and, for
//!   functions that ask for it, MSI.
//! - BAR placement: a BAR decodes only with Memory Space Enable set, entirely
//!   inside a memory window (32-bit BARs in the 32-bit window, 64-bit BARs in
//!   either), and not over a BAR that decodes already; a BAR placed over RAM or
//!   another device is not decoded, with a log line. The windows themselves are
//!   checked against RAM when the root complex is built.
//! - MSI-X ([`msix`]): the table and PBA in a BAR, per-vector and function masks,
//!   pending bits, messages handed to an [`MsiController`] (the GICv2m frame).
//! - MSI: the 64-bit capability without per-vector masking; a function's vector
//!   becomes message data with its low Multiple Message Enable bits replaced,
//!   through the same [`MsiController`]; used only while MSI-X is disabled.
//! - INTx: each function's pin swizzled onto four SPIs ([`intx_intid`]), wired-OR,
//!   masked by Interrupt Disable, MSI-X Enable and MSI Enable, reflected in Status.
//! - DMA: a function reaches guest memory only through [`function::BusMaster`],
//!   which refuses every access while Bus Master Enable is clear; MSI-X messages
//!   wait (pending) for it too.
//!
//! [`nvme::NvmeFunction`] puts the `nvme` crate's controller behind a function;
//! [`virtio::VirtioFunction`] any virtio device model (the virtio 1.2 PCI
//! transport, sharing `virtio::TransportCore` with virtio-mmio).
//!
//! Every guest access is checked: configuration accesses of 1/2/4 bytes, naturally
//! aligned (others are refused); functions that do not exist read all-ones; BAR
//! window accesses that decode to nothing read all-ones and are logged.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod config;
pub mod defs;
pub mod function;
pub mod host_bridge;
pub mod msix;
pub mod nvme;
pub mod root;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_msi;
#[cfg(test)]
mod tests_nvme;
#[cfg(test)]
mod tests_save;
#[cfg(test)]
mod tests_virtio;
pub mod virtio;

pub use config::{ConfigSpace, SpecError};
pub use function::{
    BarSpec, BarWindow, BusMaster, FunctionContext, FunctionIrq, FunctionSpec, Identity, MsiSpec,
    MsixSpec, PciFunction,
};
pub use root::{intx_intid, Layout, MsiController, RootComplex, RootError, RootWindow, Window};
