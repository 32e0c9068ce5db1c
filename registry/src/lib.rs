//! `registry` owns the on-disk format of the hypervisor's **system disk**: the
//! persistent VM registry that lets every host boot reattach to the same VMs.
//!
//! A system disk holds a superblock (identity and geometry, two copies), two
//! metadata slots A/B (every VM record, generation-numbered and CRC32C-protected;
//! updates go to the inactive slot, then flush) and a data area carved into extents
//! (boot images, guest disks, TPM NV areas, saved state) by first-fit allocation.
//! `docs/system-disk.md` is the byte-level specification; `docs/policy.md` documents
//! the VM policy schema.
//!
//! Storage is any [`vdev::BlockBackend`]: the hypervisor's virtio-blk driver,
//! [`MemDisk`] in tests, or a file with the `std` feature's [`cli`] module.
//!
//! ```
//! use registry::{BootSpec, DiskSpec, DeviceModel, MemDisk, Policy, Registry, Uuid, VmSpec};
//! let mut disk = MemDisk::new(64 << 20);
//! let mut reg = Registry::format(&mut disk, Uuid::from_random_bytes([1; 16])).unwrap();
//! let spec = VmSpec {
//!     name: "linux".into(),
//!     vcpus: 2,
//!     memory_bytes: 512 << 20,
//!     device_model: DeviceModel::LinuxDt,
//!     boot: BootSpec::Linux { kernel_capacity: 1 << 20, initrd_capacity: None, cmdline: "console=ttyAMA0".into() },
//!     disks: vec![DiskSpec { size: 8 << 20, read_only: false }],
//!     tpm_nv_size: 64 << 10,
//!     policy: Policy::default(),
//! };
//! let id = reg.add_vm(&mut disk, Uuid::from_random_bytes([2; 16]), &spec).unwrap();
//! let reopened = Registry::open(&mut disk).unwrap();
//! assert_eq!(reopened.vm(id).unwrap().name, "linux");
//! ```
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;
#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod abstore;
pub mod choice;
#[cfg(feature = "std")]
pub mod cli;
pub mod codec;
pub mod defs;
pub mod error;
pub mod extent_io;
pub mod memdisk;
pub mod policy;
pub mod record;
pub mod registry;
pub mod slot;
pub mod space;
pub mod superblock;
pub mod uuid;

pub use abstore::{AbError, AbStore};
pub use codec::crc32c;
pub use error::{
    ConsistencyError, ExtentIoError, OpenError, RegistryError, SlotError, SlotId, SuperblockError,
};
pub use extent_io::{
    read_blob, read_blob_into, read_blob_into_with, read_extent, write_extent, zero_extent,
    ExtentDisk,
};
pub use memdisk::MemDisk;
pub use policy::Policy;
pub use record::{
    Blob, BootSource, DeviceModel, DiskBus, DiskSnapshot, Extent, ExtentRole, GuestDisk,
    MsiController, VmRecord,
};
pub use registry::{BootSpec, DiskSpec, Registry, SlotStatus, VmSpec};
pub use superblock::Superblock;
pub use uuid::Uuid;
