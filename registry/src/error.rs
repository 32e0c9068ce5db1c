//! Every error the registry reports, as enums: why a superblock or a metadata slot
//! was refused, why `open` failed, and why an update or an extent access was refused.

use core::fmt;

use vdev::BlockError;

use crate::codec::DecodeError;
use crate::record::ExtentRole;
use crate::uuid::Uuid;

/// A rule the registry's contents break. Found on load (the slot is refused) or
/// before a commit (the update is refused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsistencyError {
    /// A VM has the nil UUID.
    NilUuid,
    /// Two VMs share a UUID.
    DuplicateUuid(Uuid),
    /// Two VMs share a name (the second VM is named).
    DuplicateName(Uuid),
    /// The name is empty, too long or holds control characters.
    BadName(Uuid),
    /// Too many disk snapshots, or a bad or repeated snapshot tag.
    BadSnapshot(Uuid),
    /// The vCPU count is 0 or above the limit.
    BadVcpus(Uuid),
    /// The memory size is 0 or not a multiple of 2 MiB.
    BadMemory(Uuid),
    /// The kernel command line is too long.
    CmdlineTooLong(Uuid),
    /// The VM has too many guest disks.
    TooManyDisks(Uuid),
    /// More VMs than a registry holds.
    TooManyVms,
    /// The device model does not fit the boot source.
    BootMismatch(Uuid),
    /// A required extent is empty.
    MissingExtent {
        /// The VM.
        vm: Uuid,
        /// Which extent.
        role: ExtentRole,
    },
    /// A blob's content size exceeds its extent.
    BlobOverflow {
        /// The VM.
        vm: Uuid,
        /// Which blob.
        role: ExtentRole,
    },
    /// An extent does not start and end on the allocation unit.
    Misaligned {
        /// The VM.
        vm: Uuid,
        /// Which extent.
        role: ExtentRole,
    },
    /// An extent reaches outside the data area.
    OutOfBounds {
        /// The VM.
        vm: Uuid,
        /// Which extent.
        role: ExtentRole,
    },
    /// Two extents overlap.
    Overlap {
        /// One VM.
        vm: Uuid,
        /// Its extent.
        role: ExtentRole,
        /// The other VM (may equal `vm`).
        other_vm: Uuid,
        /// The other extent.
        other_role: ExtentRole,
    },
}

impl fmt::Display for ConsistencyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use ConsistencyError::*;
        match self {
            NilUuid => f.write_str("a VM has the nil UUID"),
            DuplicateUuid(u) => write!(f, "VM UUID {u} appears twice"),
            DuplicateName(u) => write!(f, "VM {u} reuses another VM's name"),
            BadName(u) => write!(f, "VM {u}: name empty, too long or with control characters"),
            BadSnapshot(u) => write!(
                f,
                "VM {u}: too many disk snapshots, or a bad or repeated tag"
            ),
            BadVcpus(u) => write!(f, "VM {u}: vCPU count out of range"),
            BadMemory(u) => write!(f, "VM {u}: memory size 0 or not a multiple of 2 MiB"),
            CmdlineTooLong(u) => write!(f, "VM {u}: kernel command line too long"),
            TooManyDisks(u) => write!(f, "VM {u}: too many guest disks"),
            TooManyVms => f.write_str("too many VMs"),
            BootMismatch(u) => write!(f, "VM {u}: device model does not fit the boot source"),
            MissingExtent { vm, role } => write!(f, "VM {vm}: {role} extent missing"),
            BlobOverflow { vm, role } => {
                write!(f, "VM {vm}: {role} content larger than its extent")
            }
            Misaligned { vm, role } => write!(
                f,
                "VM {vm}: {role} extent not aligned to the allocation unit"
            ),
            OutOfBounds { vm, role } => write!(f, "VM {vm}: {role} extent outside the data area"),
            Overlap {
                vm,
                role,
                other_vm,
                other_role,
            } => {
                write!(f, "VM {vm} {role} overlaps VM {other_vm} {other_role}")
            }
        }
    }
}

/// Why a superblock copy was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuperblockError {
    /// The disk could not be read.
    Io(BlockError),
    /// No superblock magic: not a system disk (or never formatted).
    BadMagic,
    /// A format version this crate does not read.
    UnsupportedVersion(u32),
    /// The checksum does not match.
    Checksum,
    /// The recorded geometry is not the one format v1 defines, or does not fit the
    /// recorded disk size.
    BadGeometry,
}

impl fmt::Display for SuperblockError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuperblockError::Io(e) => write!(f, "read failed: {e:?}"),
            SuperblockError::BadMagic => f.write_str("no system-disk magic"),
            SuperblockError::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            SuperblockError::Checksum => f.write_str("checksum mismatch"),
            SuperblockError::BadGeometry => f.write_str("invalid geometry"),
        }
    }
}

/// Why a metadata slot was refused. A refused slot is never used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotError {
    /// The slot could not be read.
    Io(BlockError),
    /// The header is all zeros: never written, or wiped by `format`.
    Blank,
    /// The header holds no slot magic.
    BadMagic,
    /// A format version this crate does not read.
    UnsupportedVersion(u32),
    /// The header checksum does not match (corrupt or torn header).
    HeaderChecksum,
    /// The header names the other slot (a misplaced copy).
    WrongSlot,
    /// The header belongs to another disk (stale metadata from an earlier format).
    WrongDisk,
    /// The payload length exceeds the slot.
    PayloadTooLarge,
    /// The payload checksum does not match (corrupt or torn payload).
    PayloadChecksum,
    /// The payload does not decode.
    Decode(DecodeError),
    /// The payload decodes but breaks a consistency rule.
    Inconsistent(ConsistencyError),
}

impl fmt::Display for SlotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotError::Io(e) => write!(f, "read failed: {e:?}"),
            SlotError::Blank => f.write_str("blank (never written)"),
            SlotError::BadMagic => f.write_str("no slot magic"),
            SlotError::UnsupportedVersion(v) => write!(f, "unsupported format version {v}"),
            SlotError::HeaderChecksum => f.write_str("header checksum mismatch"),
            SlotError::WrongSlot => f.write_str("header names the other slot"),
            SlotError::WrongDisk => f.write_str("header belongs to another disk"),
            SlotError::PayloadTooLarge => f.write_str("payload length exceeds the slot"),
            SlotError::PayloadChecksum => {
                f.write_str("payload checksum mismatch (corrupt or torn write)")
            }
            SlotError::Decode(e) => write!(f, "payload does not decode: {e}"),
            SlotError::Inconsistent(e) => write!(f, "inconsistent contents: {e}"),
        }
    }
}

/// Which of the two metadata slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotId {
    /// Slot A (index 0).
    A,
    /// Slot B (index 1).
    B,
}

impl SlotId {
    /// The slot's index as stored in its header.
    pub fn index(self) -> u32 {
        match self {
            SlotId::A => 0,
            SlotId::B => 1,
        }
    }
    /// The other slot.
    pub fn other(self) -> SlotId {
        match self {
            SlotId::A => SlotId::B,
            SlotId::B => SlotId::A,
        }
    }
}

impl fmt::Display for SlotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SlotId::A => "A",
            SlotId::B => "B",
        })
    }
}

/// Why [`crate::Registry::open`] failed. It never reinitialises anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenError {
    /// The disk is smaller than the recorded disk size (or than any system disk).
    DiskTooSmall {
        /// The backend's capacity.
        capacity: u64,
        /// The size the superblock records (0 if none was read).
        recorded: u64,
    },
    /// Neither superblock copy is usable.
    Superblock {
        /// Why the primary copy was refused.
        primary: SuperblockError,
        /// Why the backup copy was refused.
        backup: SuperblockError,
    },
    /// Both metadata slots were refused.
    NoValidSlot {
        /// Why slot A was refused.
        a: SlotError,
        /// Why slot B was refused.
        b: SlotError,
    },
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::DiskTooSmall { capacity, recorded } => {
                write!(
                    f,
                    "disk too small: {capacity} bytes (superblock records {recorded})"
                )
            }
            OpenError::Superblock { primary, backup } => {
                write!(f, "not a usable system disk: primary superblock {primary}; backup superblock {backup}")
            }
            OpenError::NoValidSlot { a, b } => {
                write!(f, "both metadata slots refused: slot A {a}; slot B {b}")
            }
        }
    }
}

/// Why an extent read or write was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentIoError {
    /// `offset + len` reaches past the end of the extent.
    OutOfExtent,
    /// Blob content does not match its recorded CRC32C.
    Checksum,
    /// The backend failed.
    Io(BlockError),
}

impl fmt::Display for ExtentIoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtentIoError::OutOfExtent => f.write_str("access reaches past the end of the extent"),
            ExtentIoError::Checksum => f.write_str("content does not match its checksum"),
            ExtentIoError::Io(e) => write!(f, "I/O error: {e:?}"),
        }
    }
}

/// Why an update (format, add, update, remove, store) was refused. After any error
/// the registry still holds, in memory and on disk, the last committed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistryError {
    /// The disk failed; the update may not be durable and was not applied.
    Io(BlockError),
    /// The disk is read-only.
    ReadOnly,
    /// The disk is too small to format.
    DiskTooSmall,
    /// The disk UUID is nil.
    NilDiskUuid,
    /// No VM with this UUID.
    NotFound(Uuid),
    /// A VM with this UUID already exists.
    Exists(Uuid),
    /// The update would break a consistency rule.
    Invalid(ConsistencyError),
    /// No free run of the data area is large enough.
    NoSpace {
        /// Bytes requested (rounded to the allocation unit).
        needed: u64,
    },
    /// The update tried to change a VM's UUID.
    UuidChanged,
    /// The record has no blob with this role.
    NoSuchBlob(ExtentRole),
    /// The content is larger than the blob's extent.
    BlobTooLarge {
        /// Content length.
        size: u64,
        /// Extent length.
        capacity: u64,
    },
    /// Stored content does not match its recorded checksum.
    BlobChecksum(ExtentRole),
    /// An extent access was refused.
    Extent(ExtentIoError),
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegistryError::Io(e) => write!(f, "I/O error: {e:?}"),
            RegistryError::ReadOnly => f.write_str("system disk is read-only"),
            RegistryError::DiskTooSmall => f.write_str("disk too small for a system disk"),
            RegistryError::NilDiskUuid => f.write_str("disk UUID is nil"),
            RegistryError::NotFound(u) => write!(f, "no VM {u}"),
            RegistryError::Exists(u) => write!(f, "VM {u} already exists"),
            RegistryError::Invalid(e) => write!(f, "invalid: {e}"),
            RegistryError::NoSpace { needed } => write!(f, "no free extent of {needed} bytes"),
            RegistryError::UuidChanged => f.write_str("a VM's UUID cannot change"),
            RegistryError::NoSuchBlob(r) => write!(f, "VM has no {r}"),
            RegistryError::BlobTooLarge { size, capacity } => {
                write!(
                    f,
                    "content of {size} bytes exceeds extent of {capacity} bytes"
                )
            }
            RegistryError::BlobChecksum(r) => write!(f, "{r} content does not match its checksum"),
            RegistryError::Extent(e) => write!(f, "{e}"),
        }
    }
}

impl From<BlockError> for RegistryError {
    fn from(e: BlockError) -> RegistryError {
        RegistryError::Io(e)
    }
}

impl From<ConsistencyError> for RegistryError {
    fn from(e: ConsistencyError) -> RegistryError {
        RegistryError::Invalid(e)
    }
}

impl From<ExtentIoError> for RegistryError {
    fn from(e: ExtentIoError) -> RegistryError {
        match e {
            ExtentIoError::Io(b) => RegistryError::Io(b),
            other => RegistryError::Extent(other),
        }
    }
}
