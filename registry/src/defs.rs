//! Every constant of the on-disk format in one place: magics, versions, offsets,
//! field sizes, limits and flag bits. `docs/system-disk.md` documents the same
//! numbers; change both together.

/// Size of the unit the format writes metadata in (one 512-byte sector). Torn writes
/// are assumed to happen at this granularity.
pub const BLOCK_SIZE: u64 = vdev::SECTOR_SIZE;

/// The superblock's magic, at byte 0 of the disk.
pub const SUPERBLOCK_MAGIC: [u8; 8] = *b"RAYOSSYS";
/// The on-disk format version of the superblock (and the disk geometry) and of the
/// A/B store halves this crate reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// The metadata slot version this crate writes: version 6 records end with the
/// VM's MSI controller (`u8`, [`MSI_V2M`] or [`MSI_ITS`]) and disk bus (`u8`,
/// [`DISK_BUS_NVME`] or [`DISK_BUS_VIRTIO_PCI`]) after the RTC offset of version
/// 5; a build that does not know them would run the VM on another device set than
/// it was installed on, so it refuses the slot. Every commit writes this version.
pub const SLOT_VERSION: u32 = 6;
/// Metadata slot version 5 (still read): records end with the VM's real-time
/// clock offset (`u64`, two's complement seconds) after the disk snapshots of
/// version 4, and a disk snapshot's second blob is a copy-on-write log of the
/// guest disks (`vmstate::cowlog`) that every guest write must extend; a build
/// that does not know this would write the guest disks without logging and leave
/// the log silently incomplete, so it must refuse the slot. The payload ends with
/// the CA key as in version 3. Its records read with the v2m frame and NVMe.
pub const SLOT_VERSION_V5: u32 = 5;
/// Metadata slot version 4 (still read): records end with the VM's disk
/// snapshots (`u8` count, then per snapshot its tag and two blobs, the second a
/// full sparse copy of the guest disks, which this build refuses to roll back
/// to); no RTC offset (it reads as 0); the payload ends with the CA key as in
/// version 3.
pub const SLOT_VERSION_V4: u32 = 4;
/// Metadata slot version 3 (still read): payloads end with the system disk's vTPM
/// manufacturer CA key (after the records, which are encoded as in version 2).
pub const SLOT_VERSION_V3: u32 = 3;
/// Metadata slot version 2 (still read): records end with the VM's start counter
/// (`u64 starts`); the payload has no CA key.
pub const SLOT_VERSION_V2: u32 = 2;
/// Bytes of the vTPM manufacturer CA's secret key (an ECDSA P-256 scalar).
pub const TPM_CA_KEY_SIZE: usize = 32;
/// The oldest metadata slot version this crate still reads: version 1 records have
/// no start counter (it reads as 0). Written by the first release of the format.
pub const SLOT_VERSION_V1: u32 = 1;
/// Size of one superblock copy.
pub const SUPERBLOCK_SIZE: usize = 512;
/// Byte offset of the primary superblock.
pub const SUPERBLOCK_PRIMARY_OFFSET: u64 = 0;
/// Byte offset of the backup superblock (sector 1).
pub const SUPERBLOCK_BACKUP_OFFSET: u64 = 512;

/// Superblock field offsets (bytes from the start of a superblock copy).
pub mod sb {
    /// `[u8; 8]` magic.
    pub const MAGIC: usize = 0;
    /// `u32` format version.
    pub const VERSION: usize = 8;
    /// `u32` size of the superblock structure (512).
    pub const SIZE: usize = 12;
    /// `[u8; 16]` disk UUID.
    pub const DISK_UUID: usize = 16;
    /// `u64` disk size in bytes at format time.
    pub const DISK_SIZE: usize = 32;
    /// `u64` size of each metadata slot.
    pub const SLOT_SIZE: usize = 40;
    /// `u64` byte offset of slot A.
    pub const SLOT_A_OFFSET: usize = 48;
    /// `u64` byte offset of slot B.
    pub const SLOT_B_OFFSET: usize = 56;
    /// `u64` byte offset of the data area.
    pub const DATA_OFFSET: usize = 64;
    /// `u64` size of the data area.
    pub const DATA_SIZE: usize = 72;
    /// `u64` allocation unit of the data area.
    pub const ALLOC_UNIT: usize = 80;
    /// First reserved byte (zero up to [`CRC`]).
    pub const RESERVED: usize = 88;
    /// `u32` CRC32C of bytes `0..CRC`.
    pub const CRC: usize = 508;
}

/// Byte offset of metadata slot A.
pub const SLOT_A_OFFSET: u64 = 64 * 1024;
/// Size of each metadata slot.
pub const SLOT_SIZE: u64 = 256 * 1024;
/// Byte offset of metadata slot B.
pub const SLOT_B_OFFSET: u64 = SLOT_A_OFFSET + SLOT_SIZE;
/// Byte offset of the data area (1 MiB, after both slots).
pub const DATA_OFFSET: u64 = 1024 * 1024;
/// Allocation unit of the data area: every extent starts and ends on it.
pub const ALLOC_UNIT: u64 = 4096;
/// Smallest disk `format` accepts: the metadata plus 1 MiB of data area.
pub const MIN_DISK_SIZE: u64 = DATA_OFFSET + 1024 * 1024;

/// The slot header's magic.
pub const SLOT_MAGIC: [u8; 8] = *b"RAYOSMDS";
/// Size of the slot header; the payload follows it.
pub const SLOT_HEADER_SIZE: usize = 64;
/// Largest payload a slot can hold.
pub const MAX_PAYLOAD: usize = SLOT_SIZE as usize - SLOT_HEADER_SIZE;

/// Slot header field offsets (bytes from the start of the slot).
pub mod slot {
    /// `[u8; 8]` magic.
    pub const MAGIC: usize = 0;
    /// `u32` slot version ([`super::SLOT_VERSION`]).
    pub const VERSION: usize = 8;
    /// `u32` slot index: 0 for A, 1 for B.
    pub const INDEX: usize = 12;
    /// `[u8; 16]` disk UUID (must match the superblock's).
    pub const DISK_UUID: usize = 16;
    /// `u64` generation, strictly increasing across commits.
    pub const GENERATION: usize = 32;
    /// `u32` payload length in bytes.
    pub const PAYLOAD_LEN: usize = 40;
    /// `u32` CRC32C of the payload.
    pub const PAYLOAD_CRC: usize = 44;
    /// First reserved byte (zero up to [`HEADER_CRC`]).
    pub const RESERVED: usize = 48;
    /// `u32` CRC32C of header bytes `0..HEADER_CRC`.
    pub const HEADER_CRC: usize = 60;
}

/// Most VMs one registry holds.
pub const MAX_VMS: usize = 64;
/// Longest VM name in bytes (UTF-8).
pub const MAX_NAME_LEN: usize = 64;
/// Longest kernel command line in bytes (Linux arm64 `COMMAND_LINE_SIZE`).
pub const MAX_CMDLINE_LEN: usize = 2048;
/// Most guest disks per VM.
pub const MAX_DISKS: usize = 8;
/// Most vCPUs per VM.
pub const MAX_VCPUS: u32 = 64;
/// Most disk snapshots one VM keeps.
pub const MAX_SNAPSHOTS: usize = 8;
/// Longest disk-snapshot tag (the monitor's tag rule: `A-Z a-z 0-9 . _ -`).
pub const MAX_SNAPSHOT_TAG: usize = 32;
/// Guest memory granularity: memory sizes are multiples of this (2 MiB).
pub const MEMORY_GRANULE: u64 = 2 * 1024 * 1024;

/// Encoded size of an extent (start + length).
pub const EXTENT_ENCODED: usize = 16;
/// Encoded size of a blob (extent + size + crc).
pub const BLOB_ENCODED: usize = EXTENT_ENCODED + 8 + 4;
/// Largest encoded VM record (all variable fields at their limits).
pub const MAX_RECORD_ENCODED: usize = 16 // uuid
    + 2 + MAX_NAME_LEN
    + 4 + 8 // vcpus, memory
    + 1 + 1 // device model, boot kind
    + BLOB_ENCODED + 1 + BLOB_ENCODED + 2 + MAX_CMDLINE_LEN // linux boot (largest)
    + 1 + MAX_DISKS * (EXTENT_ENCODED + 1)
    + EXTENT_ENCODED // tpm nv
    + 2 + 4 // policy
    + BLOB_ENCODED // saved state
    + 8 // starts (slot version 2)
    + 1 + MAX_SNAPSHOTS * (2 + MAX_SNAPSHOT_TAG + 2 * BLOB_ENCODED) // snapshots (version 4)
    + 8 // RTC offset (version 5)
    + 1 + 1; // MSI controller, disk bus (version 6)
/// Largest encoded payload: record count plus length-prefixed records.
pub const MAX_PAYLOAD_ENCODED: usize = 4 + MAX_VMS * (4 + MAX_RECORD_ENCODED);
const _: () = assert!(
    MAX_PAYLOAD_ENCODED <= MAX_PAYLOAD,
    "a full registry must fit a slot"
);
const _: () = assert!(SLOT_B_OFFSET + SLOT_SIZE <= DATA_OFFSET);
const _: () = assert!(SUPERBLOCK_BACKUP_OFFSET + SUPERBLOCK_SIZE as u64 <= SLOT_A_OFFSET);

/// Device model tag: Linux direct boot with a device tree and virtio-mmio.
pub const DEVICE_MODEL_LINUX_DT: u8 = 1;
/// Device model tag: UEFI firmware with ACPI tables (the Windows path).
pub const DEVICE_MODEL_UEFI_ACPI: u8 = 2;
/// Device model tag: Linux direct boot whose first disk is an NVMe namespace
/// behind PCI Express.
pub const DEVICE_MODEL_LINUX_DT_NVME: u8 = 3;
/// Device model tag: the Windows 11 platform — `uefi-acpi` with a PCI Express root
/// complex, the first guest disk as NVMe and read-only guest disks as install
/// media (USB storage).
pub const DEVICE_MODEL_WINDOWS: u8 = 4;

/// MSI controller tag: the GICv2m frame (the default; records before slot
/// version 6 read as this).
pub const MSI_V2M: u8 = 0;
/// MSI controller tag: the GICv3 ITS.
pub const MSI_ITS: u8 = 1;
/// Disk bus tag: the first disk of a model with PCI Express is an NVMe namespace
/// (the default; records before slot version 6 read as this).
pub const DISK_BUS_NVME: u8 = 0;
/// Disk bus tag: the first disk of a `windows` VM is virtio-blk over virtio-PCI.
pub const DISK_BUS_VIRTIO_PCI: u8 = 1;

/// Boot source tag: Linux kernel (+ initrd + command line) stored on the disk.
pub const BOOT_LINUX: u8 = 1;
/// Boot source tag: firmware code image + variable store stored on the disk.
pub const BOOT_FIRMWARE: u8 = 2;

/// Guest disk flag bit: the guest sees the disk read-only.
pub const DISK_FLAG_READ_ONLY: u8 = 1 << 0;
/// Every guest disk flag bit format v1 defines.
pub const DISK_FLAGS_KNOWN: u8 = DISK_FLAG_READ_ONLY;

/// The policy schema version this crate reads and writes.
pub const POLICY_SCHEMA_V1: u16 = 1;
/// Policy v1 flag: start the VM when the host boots.
pub const POLICY_AUTOSTART: u32 = 1 << 0;
/// Policy v1 flag: resume from saved state on boot when one is valid.
pub const POLICY_RESUME_ON_BOOT: u32 = 1 << 1;
/// Policy v1 flag: present the VM as soon as it starts.
pub const POLICY_VISIBLE_ON_START: u32 = 1 << 2;
/// Policy v1 flag: pause the VM's vCPUs while it is hidden.
pub const POLICY_PAUSE_ON_HIDE: u32 = 1 << 3;
/// Policy v1 flag: save the VM's state when the host shuts down.
pub const POLICY_SUSPEND_ON_HOST_SHUTDOWN: u32 = 1 << 4;
/// Every policy flag bit schema v1 defines.
pub const POLICY_V1_KNOWN: u32 = POLICY_AUTOSTART
    | POLICY_RESUME_ON_BOOT
    | POLICY_VISIBLE_ON_START
    | POLICY_PAUSE_ON_HIDE
    | POLICY_SUSPEND_ON_HOST_SHUTDOWN;

/// Magic of one half of an A/B store ([`crate::abstore`]).
pub const AB_MAGIC: [u8; 8] = *b"RAYOSABS";
/// Size of an A/B store half's header; the content follows it.
pub const AB_HEADER_SIZE: usize = 40;

/// A/B store half header field offsets.
pub mod ab {
    /// `[u8; 8]` magic.
    pub const MAGIC: usize = 0;
    /// `u32` format version.
    pub const VERSION: usize = 8;
    /// `u32` half index: 0 for the first half, 1 for the second.
    pub const INDEX: usize = 12;
    /// `u64` generation.
    pub const GENERATION: usize = 16;
    /// `u64` content length.
    pub const LEN: usize = 24;
    /// `u32` CRC32C of the content.
    pub const DATA_CRC: usize = 32;
    /// `u32` CRC32C of header bytes `0..HEADER_CRC`.
    pub const HEADER_CRC: usize = 36;
}
