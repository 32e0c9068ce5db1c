//! `uefi-devices` owns the device models only a firmware (UEFI) guest needs:
//! [`fw_cfg`], QEMU's firmware configuration device through which EDK2 reads its
//! ACPI tables, boot order and writes its ramfb framebuffer, and [`pflash`], the
//! CFI parallel flash banks holding the firmware code and its variable store.
//!
//! Pure device state machines behind [`vdev::MmioDevice`]: `no_std` + `alloc`, no
//! `unsafe`, every guest-controlled value validated, tested on the host.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod fw_cfg;
pub mod pflash;
