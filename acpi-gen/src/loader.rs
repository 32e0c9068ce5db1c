//! The QEMU table-loader ("linker/loader") script that hands the tables to the
//! firmware through fw_cfg: `etc/table-loader` is a sequence of 128-byte commands —
//! ALLOCATE a file's contents in guest memory, ADD_POINTER (add the guest address of
//! one allocated file to a pointer field in another), ADD_CHECKSUM (fix an 8-bit
//! checksum over a range) — that EDK2's `QemuFwCfgAcpiPlatformDxe` executes before
//! it installs the tables it finds through the pointers.
//!
//! The blobs carry every checksum byte that a command recomputes as zero: QEMU's
//! loader adds the negated sum of the range to the byte, EDK2's overwrites the byte
//! with the checksum of the range; both give a zero-sum table only if the byte
//! starts at zero.

use alloc::vec::Vec;

use crate::table::CHECKSUM_OFFSET;
use crate::tables::{rsdp, Blob, Tables};

/// fw_cfg file names.
pub const TABLES_FILE: &str = "etc/acpi/tables";
pub const RSDP_FILE: &str = "etc/acpi/rsdp";
pub const LOADER_FILE: &str = "etc/table-loader";

/// Size of one command.
pub const COMMAND_LEN: usize = 128;
/// Room for a file name (fw_cfg's FW_CFG_MAX_FILE_PATH), NUL included.
pub const FILE_NAME_LEN: usize = 56;

/// Command codes.
pub const ALLOCATE: u32 = 1;
pub const ADD_POINTER: u32 = 2;
pub const ADD_CHECKSUM: u32 = 3;

/// ALLOCATE zones: anywhere in 32-bit memory, or the x86 F-segment (RSDP).
pub const ZONE_HIGH: u8 = 1;
pub const ZONE_FSEG: u8 = 2;

/// Alignment of the allocations (the tables blob: a page, as QEMU asks).
pub const TABLES_ALIGN: u32 = 64;
pub const RSDP_ALIGN: u32 = 16;

/// One table-loader command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoaderCommand {
    Allocate {
        file: &'static str,
        align: u32,
        zone: u8,
    },
    AddPointer {
        dest: &'static str,
        src: &'static str,
        offset: u32,
        size: u8,
    },
    AddChecksum {
        file: &'static str,
        offset: u32,
        start: u32,
        len: u32,
    },
}

fn put_name(out: &mut Vec<u8>, name: &str) {
    let mut field = [0u8; FILE_NAME_LEN];
    field[..name.len()].copy_from_slice(name.as_bytes());
    out.extend_from_slice(&field);
}

impl LoaderCommand {
    /// The command's 128 bytes.
    pub fn encode(&self) -> [u8; COMMAND_LEN] {
        let mut v = Vec::with_capacity(COMMAND_LEN);
        match *self {
            LoaderCommand::Allocate { file, align, zone } => {
                v.extend_from_slice(&ALLOCATE.to_le_bytes());
                put_name(&mut v, file);
                v.extend_from_slice(&align.to_le_bytes());
                v.push(zone);
            }
            LoaderCommand::AddPointer {
                dest,
                src,
                offset,
                size,
            } => {
                v.extend_from_slice(&ADD_POINTER.to_le_bytes());
                put_name(&mut v, dest);
                put_name(&mut v, src);
                v.extend_from_slice(&offset.to_le_bytes());
                v.push(size);
            }
            LoaderCommand::AddChecksum {
                file,
                offset,
                start,
                len,
            } => {
                v.extend_from_slice(&ADD_CHECKSUM.to_le_bytes());
                put_name(&mut v, file);
                v.extend_from_slice(&offset.to_le_bytes());
                v.extend_from_slice(&start.to_le_bytes());
                v.extend_from_slice(&len.to_le_bytes());
            }
        }
        let mut out = [0u8; COMMAND_LEN];
        out[..v.len()].copy_from_slice(&v);
        out
    }
}

/// The three fw_cfg files that carry a VM's ACPI tables.
#[derive(Debug, Clone)]
pub struct AcpiBlobs {
    /// `etc/acpi/tables`.
    pub tables: Vec<u8>,
    /// `etc/acpi/rsdp`.
    pub rsdp: Vec<u8>,
    /// `etc/table-loader`.
    pub loader: Vec<u8>,
    pub commands: Vec<LoaderCommand>,
}

fn file_of(b: Blob) -> &'static str {
    match b {
        Blob::Rsdp => RSDP_FILE,
        Blob::Tables => TABLES_FILE,
    }
}

impl AcpiBlobs {
    /// The fw_cfg files for `tables`.
    pub fn new(t: &Tables) -> Self {
        let mut tables = t.blob.clone();
        let mut rsdp_bytes = t.rsdp.clone();
        let mut commands = Vec::from([
            LoaderCommand::Allocate {
                file: TABLES_FILE,
                align: TABLES_ALIGN,
                zone: ZONE_HIGH,
            },
            LoaderCommand::Allocate {
                file: RSDP_FILE,
                align: RSDP_ALIGN,
                zone: ZONE_FSEG,
            },
        ]);
        for p in &t.pointers {
            commands.push(LoaderCommand::AddPointer {
                dest: file_of(p.blob),
                src: TABLES_FILE,
                offset: p.offset as u32,
                size: p.size,
            });
        }
        for e in &t.entries {
            tables[e.offset + CHECKSUM_OFFSET] = 0;
            commands.push(LoaderCommand::AddChecksum {
                file: TABLES_FILE,
                offset: (e.offset + CHECKSUM_OFFSET) as u32,
                start: e.offset as u32,
                len: e.len as u32,
            });
        }
        rsdp_bytes[rsdp::CHECKSUM_OFFSET] = 0;
        rsdp_bytes[rsdp::EXTENDED_CHECKSUM_OFFSET] = 0;
        // The ACPI 1.0 checksum first: the extended one covers it.
        commands.push(LoaderCommand::AddChecksum {
            file: RSDP_FILE,
            offset: rsdp::CHECKSUM_OFFSET as u32,
            start: 0,
            len: rsdp::V1_LEN as u32,
        });
        commands.push(LoaderCommand::AddChecksum {
            file: RSDP_FILE,
            offset: rsdp::EXTENDED_CHECKSUM_OFFSET as u32,
            start: 0,
            len: rsdp::LEN as u32,
        });
        let loader = commands.iter().flat_map(|c| c.encode()).collect();
        AcpiBlobs {
            tables,
            rsdp: rsdp_bytes,
            loader,
            commands,
        }
    }
}
