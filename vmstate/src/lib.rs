//! `vmstate` owns a VM's **saved state**: what suspend writes into the VM's
//! saved-state extent of the system disk and what resume reads back.
//!
//! - [`format`]: the image layout — a header block (magic, format version, the VM
//!   configuration it was taken from, guest time, a table of checksummed sections),
//!   guest RAM as a 2 MiB slot per populated block with all-zero 4 KiB pages left
//!   out (a bitmap and an XXH64 per block), the vCPU section, the device section,
//!   and the RAM index — with the version rule for older images.
//! - [`vcpu`]: one vCPU's architectural state ([`VcpuState`]), saved through
//!   [`vdev::SaveRestore`] like every device.
//! - [`ram`]: the zero-page bitmaps and the index entries.
//! - [`time`]: CNTVOFF and timer arithmetic so guest time continues without a jump.
//! - [`snapshot`]: in-memory snapshots (a RAM copy, the guest disk's
//!   copy-on-write log); [`snapshot_disk`]: snapshots on the system disk (an
//!   image in the suspend format, written and restored by the same code, plus a
//!   sparse copy of the guest disks, the same commit rules).
//! - [`store`]: the suspend commit protocol over a [`vdev::BlockBackend`] and the
//!   [`registry::Registry`] (write, flush, header, flush, then one atomic registry
//!   commit), the reader resume uses, and the resume-or-cold-boot decision.
//!
//! Nothing here touches hardware; `el2` gathers and applies register state and
//! hands this crate the bytes.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;
#[cfg(test)]
extern crate std;

pub mod cowlog;
pub mod format;
pub mod ram;
pub mod snapshot;
pub mod snapshot_disk;
pub mod store;
pub mod time;
pub mod vcpu;

pub use cowlog::{CowLog, LogError};
pub use format::{
    DeviceState, Fingerprint, FormatError, Header, Section, FORMAT_VERSION, MIN_FORMAT_VERSION,
};
pub use ram::{IndexEntry, ZeroMap, BLOCK_SIZE, PAGES_PER_BLOCK, PAGE_SIZE};
pub use snapshot::{DiskCow, RamSnapshot, SnapshotError, COW_GRANULE};
pub use snapshot_disk::{DiskSnapshotError, OpenedSnapshot};
pub use store::{
    consume, decide, open_saved, restore_ram, suspend, write_image, Base, ColdReason, CopyIo,
    OpenedState, PageBits, RamImage, RamIo, RamSink, Room, SuspendError, SuspendInput,
    SuspendReport, ALL_PAGES,
};
pub use time::{cntvoff_for, rebase_physical, TimeState};
pub use vcpu::{El1Regs, Power, VcpuState};

/// Continues a CRC32C over more bytes: `append(append(0, a), b) == crc32c(a ++ b)`
/// and `append(0, a) == crc32c(a)`. The hypervisor passes one using the CPU's CRC
/// instructions; [`crc32c_append`] is the software one.
pub type CrcAppend = fn(u32, &[u8]) -> u32;

/// Software [`CrcAppend`] (CRC-32C, the Castagnoli polynomial, as everywhere on the
/// system disk).
pub fn crc32c_append(crc: u32, data: &[u8]) -> u32 {
    const CASTAGNOLI: crc::Crc<u32, crc::Table<16>> =
        crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);
    // The running register is the complement of the finished value (init and
    // xorout are both all-ones for CRC-32C); the crate takes the initial value
    // unreflected and reflects it itself.
    let mut d = CASTAGNOLI.digest_with_initial((!crc).reverse_bits());
    d.update(data);
    d.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_append_equals_crc_of_the_concatenation() {
        let a = b"the quick brown fox ";
        let b = b"jumps over the lazy dog";
        let mut ab = std::vec::Vec::from(&a[..]);
        ab.extend_from_slice(b);
        assert_eq!(crc32c_append(0, a), registry::crc32c(a));
        assert_eq!(crc32c_append(crc32c_append(0, a), b), registry::crc32c(&ab));
        assert_eq!(crc32c_append(0, b""), registry::crc32c(b""));
    }
}
