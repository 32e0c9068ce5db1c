//! `acpi-gen` owns the ACPI description of a `uefi-acpi` guest: the tables
//! (RSDP, XSDT, FADT, MADT, GTDT, DSDT, SPCR, DBG2, PPTT, TPM2) generated from one
//! [`PlatformConfig`], and the QEMU table-loader script ([`loader`]) with which the
//! firmware (EDK2's `QemuFwCfgAcpiPlatformDxe`) allocates, links and checksums them
//! when they arrive through fw_cfg as `etc/acpi/tables`, `etc/acpi/rsdp` and
//! `etc/table-loader`.
//!
//! Fixed-layout tables are written field by field ([`table::TableWriter`], offsets
//! and values named after the ACPI 6.3 specification); the DSDT's AML comes from the
//! maintained `acpi_tables` encoder. Pure code: `no_std` + `alloc`, no `unsafe`,
//! tested on the host (parsed back and disassembled by ACPICA's `iasl`).
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod config;
pub mod dsdt;
pub mod loader;
pub mod profile;
pub mod table;
pub mod tables;

pub use config::{
    ConfigError, IrqDevice, MmioRegion, MsiFrame, PcieConfig, PlatformConfig, Redistributors,
    Timers, Topology, Trigger,
};
pub use loader::{AcpiBlobs, LoaderCommand};
pub use tables::{build, Tables};
