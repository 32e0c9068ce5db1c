//! The saved state on the system disk: the suspend commit protocol, the reader
//! resume uses, and the decision between resuming and a cold boot.
//!
//! **Commit protocol** ([`suspend`]), in this order:
//! 1. if the registry still points at a saved image, commit it away (size 0): the
//!    extent is about to be overwritten;
//! 2. make sure the VM's saved-state extent can hold the image (may move it: a
//!    registry commit);
//! 3. write the vCPU and device sections, the RAM data and the RAM index;
//! 4. flush; 5. write the header block; 6. flush;
//! 7. commit the registry with the image's size and the header's CRC32C.
//!
//! The registry commit is atomic (A/B slots), and until step 7 the registry says
//! "no saved state", so a power cut at any moment leaves either the previous
//! registry (no image: the VM cold boots) or the new one pointing at a complete,
//! flushed image. A resumed image is consumed ([`consume`]) by committing its size
//! back to 0 before the guest runs: the guest's disk diverges from then on.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use registry::{Blob, Registry, RegistryError, Uuid, VmRecord};
use vdev::{BlockBackend, BlockError, RestoreError, SaveRestore};

use crate::format::{
    self, DeviceState, Fingerprint, FormatError, Header, Section, ALIGN, FORMAT_VERSION,
    HEADER_BLOCK, SECTIONS, SEC_DEVICES, SEC_RAM_DATA, SEC_RAM_INDEX, SEC_VCPUS,
};
use crate::ram::{self, IndexEntry, ZeroMap, BLOCK_SIZE, PAGES_PER_BLOCK, PAGE_SIZE};
use crate::time::TimeState;
use crate::vcpu::{Power, VcpuState};
use crate::CrcAppend;

/// Bytes moved to or from the disk per request.
pub const CHUNK: usize = 1 << 20;

/// Guest RAM as suspend reads it.
pub trait RamImage {
    /// Blocks of RAM ([`BLOCK_SIZE`] each).
    fn blocks(&self) -> u32;
    /// Block `b`'s bytes if the guest (or a device for it) ever touched it; `None`
    /// for a block never populated (it reads as zero and is not saved).
    fn block(&self, b: u32) -> Option<&[u8]>;
}

/// Guest RAM as resume fills it, a block at a time: `write_page` for each page of
/// the block with data, in order, then `end_block` with the block's zero map (the
/// sink zeroes those pages and makes the block guest RAM).
pub trait RamSink {
    /// Writes page `page` of block `b`.
    fn write_page(&mut self, b: u32, page: u32, data: &[u8]);
    /// Block `b` is complete but for its zero pages.
    fn end_block(&mut self, b: u32, zero: &ZeroMap);
}

/// What suspend saves besides RAM.
pub struct SuspendInput<'a> {
    pub uuid: Uuid,
    pub fingerprint: Fingerprint,
    pub time: TimeState,
    pub vcpus: &'a [VcpuState],
    pub devices: &'a [DeviceState],
}

/// What a suspend wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SuspendReport {
    /// Image size in bytes.
    pub bytes: u64,
    /// Blocks saved, and pages with data / all-zero pages among them.
    pub blocks: u32,
    pub data_pages: u64,
    pub zero_pages: u64,
}

/// Why a suspend did not complete. The registry then points at no image (or, if the
/// first commit failed, still at the previous one, untouched).
#[derive(Debug, Clone, PartialEq)]
pub enum SuspendError {
    Registry(RegistryError),
    Io(BlockError),
    /// The VM has no record.
    NoRecord,
}

impl fmt::Display for SuspendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SuspendError::Registry(e) => write!(f, "registry: {e}"),
            SuspendError::Io(e) => write!(f, "system disk I/O: {e:?}"),
            SuspendError::NoRecord => f.write_str("the VM has no registry record"),
        }
    }
}

impl From<RegistryError> for SuspendError {
    fn from(e: RegistryError) -> Self {
        SuspendError::Registry(e)
    }
}

impl From<BlockError> for SuspendError {
    fn from(e: BlockError) -> Self {
        SuspendError::Io(e)
    }
}

fn pad_to(v: &mut Vec<u8>, align: usize) {
    v.resize(v.len().next_multiple_of(align), 0);
}

/// Writes `input` and `ram` as the VM's saved image and commits the registry to it,
/// in the order the module documentation gives. `crc` computes CRC32C.
pub fn suspend(
    disk: &mut dyn BlockBackend,
    reg: &mut Registry,
    input: &SuspendInput<'_>,
    ram: &dyn RamImage,
    crc: CrcAppend,
) -> Result<SuspendReport, SuspendError> {
    let uuid = input.uuid;
    let rec = reg.vm(uuid).ok_or(SuspendError::NoRecord)?;
    // 1. The extent is about to be overwritten: the registry must not point at it.
    if rec.saved_state.size != 0 {
        reg.update_vm(disk, uuid, |r| {
            r.saved_state.size = 0;
            r.saved_state.crc32c = 0;
        })?;
    }
    let (report, header_crc) = write_image(disk, input, ram, crc, |disk, capacity| {
        Ok(reg.reserve_saved_state(disk, uuid, capacity)?)
    })?;
    // 7. The one commit that makes the image the VM's saved state.
    reg.update_vm(disk, uuid, |r| {
        r.saved_state.size = report.bytes;
        r.saved_state.crc32c = header_crc;
    })?;
    Ok(report)
}

/// Steps 2-6 of the commit protocol, shared by suspend and disk snapshots: asks
/// `reserve` for an extent of at least the worst-case capacity (which it must
/// have recorded in the registry, so no VM data lands in free space), writes the
/// image into it, flushes, writes the header block, flushes. Returns what was
/// written and the header's CRC32C, which the caller commits as the image's.
pub fn write_image(
    disk: &mut dyn BlockBackend,
    input: &SuspendInput<'_>,
    ram: &dyn RamImage,
    crc: CrcAppend,
    reserve: impl FnOnce(&mut dyn BlockBackend, u64) -> Result<registry::Extent, SuspendError>,
) -> Result<(SuspendReport, u32), SuspendError> {
    // Small sections first, in memory.
    let vblobs: Vec<Vec<u8>> = input.vcpus.iter().map(|v| v.save()).collect();
    let mut small = format::encode_vcpus(&vblobs);
    let vcpus_len = small.len() as u64;
    let devices = format::encode_devices(input.devices);
    small.extend_from_slice(&devices);
    let mut sections = [Section::default(); SECTIONS];
    sections[SEC_VCPUS] = Section {
        offset: HEADER_BLOCK as u64,
        len: vcpus_len,
        crc: crc(0, &small[..vcpus_len as usize]),
    };
    sections[SEC_DEVICES] = Section {
        offset: HEADER_BLOCK as u64 + vcpus_len,
        len: devices.len() as u64,
        crc: crc(0, &devices),
    };
    pad_to(&mut small, ALIGN as usize);
    let data_start = HEADER_BLOCK as u64 + small.len() as u64;
    // 2. Room for the worst case: every populated block with every page.
    let populated = (0..ram.blocks())
        .filter(|&b| ram.block(b).is_some())
        .count() as u64;
    let capacity = data_start
        + populated * BLOCK_SIZE as u64
        + (populated * ram::ENTRY_LEN as u64).next_multiple_of(ALIGN);
    let extent = reserve(disk, capacity)?;
    // 3. Sections, then RAM data through a staging buffer of whole pages.
    registry::write_extent(disk, extent, HEADER_BLOCK as u64, &small).map_err(extent_io)?;
    let mut index = Vec::new();
    let mut buf = Vec::with_capacity(CHUNK);
    let mut at = data_start;
    let mut data_crc = 0;
    let (mut data_pages, mut zero_pages) = (0u64, 0u64);
    for b in 0..ram.blocks() {
        let Some(block) = ram.block(b) else { continue };
        let zero = ZeroMap::of(block);
        for (p, page) in block.chunks(PAGE_SIZE).enumerate().take(PAGES_PER_BLOCK) {
            if zero.is_zero(p) {
                zero_pages += 1;
                continue;
            }
            data_pages += 1;
            buf.extend_from_slice(page);
            buf.resize(buf.len().next_multiple_of(PAGE_SIZE), 0);
            if buf.len() >= CHUNK {
                data_crc = crc(data_crc, &buf);
                registry::write_extent(disk, extent, at, &buf).map_err(extent_io)?;
                at += buf.len() as u64;
                buf.clear();
            }
        }
        index.push(IndexEntry { block: b, zero });
    }
    if !buf.is_empty() {
        data_crc = crc(data_crc, &buf);
        registry::write_extent(disk, extent, at, &buf).map_err(extent_io)?;
        at += buf.len() as u64;
    }
    sections[SEC_RAM_DATA] = Section {
        offset: data_start,
        len: at - data_start,
        crc: data_crc,
    };
    let mut idx = ram::encode_index(&index);
    sections[SEC_RAM_INDEX] = Section {
        offset: at,
        len: idx.len() as u64,
        crc: crc(0, &idx),
    };
    pad_to(&mut idx, registry::defs::BLOCK_SIZE as usize);
    registry::write_extent(disk, extent, at, &idx).map_err(extent_io)?;
    let total = sections[SEC_RAM_INDEX].end();
    // 4-6. Flush the body, then the header, then flush again.
    disk.flush()?;
    let header = Header {
        version: FORMAT_VERSION,
        fingerprint: input.fingerprint,
        time: input.time,
        sections,
    };
    let mut hb = header.encode();
    let header_crc = header.crc();
    hb.resize(HEADER_BLOCK, 0);
    registry::write_extent(disk, extent, 0, &hb).map_err(extent_io)?;
    disk.flush()?;
    Ok((
        SuspendReport {
            bytes: total,
            blocks: index.len() as u32,
            data_pages,
            zero_pages,
        },
        header_crc,
    ))
}

fn extent_io(e: registry::ExtentIoError) -> SuspendError {
    SuspendError::Registry(RegistryError::from(e))
}

/// Why a VM cold boots instead of resuming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColdReason {
    /// No image is recorded (never suspended, consumed by a resume, discarded).
    NoSavedState,
    /// The VM's policy says `resume_on_boot = no`.
    PolicyDisallows,
    /// The image could not be read from the system disk.
    Unreadable,
    /// The image is corrupt, or of a format version this build does not read.
    Format(FormatError),
    /// The image was taken from a VM configured differently (which field).
    ConfigMismatch(&'static str),
    /// The host's counter runs at another frequency than when suspended.
    CounterFrequency { saved: u64, now: u64 },
    /// A vCPU's or device's state was refused (which).
    StateRefused(&'static str, RestoreError),
    /// The image could not be marked consumed (read-only or failing disk): resuming
    /// it would let a later boot resume it again over a diverged disk.
    NotConsumable,
}

impl fmt::Display for ColdReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColdReason::NoSavedState => f.write_str("no saved state"),
            ColdReason::PolicyDisallows => f.write_str("its policy has resume_on_boot = no"),
            ColdReason::Unreadable => f.write_str("the saved state is unreadable"),
            ColdReason::Format(e) => write!(f, "the saved state is refused: {e}"),
            ColdReason::ConfigMismatch(w) => {
                write!(f, "the saved state is from a different VM configuration ({w})")
            }
            ColdReason::CounterFrequency { saved, now } => write!(
                f,
                "the saved state's counter ran at {saved} Hz, this host's at {now} Hz"
            ),
            ColdReason::StateRefused(w, e) => write!(f, "the saved {w} state is refused ({e:?})"),
            ColdReason::NotConsumable => f.write_str(
                "the saved state cannot be marked consumed (the system disk is read-only or failing)",
            ),
        }
    }
}

/// The first decision, from the registry alone: whether there is an image to look
/// at. `Ok(blob)` means read and check it ([`open_saved`]).
pub fn decide(rec: &VmRecord) -> Result<Blob, ColdReason> {
    let blob = rec.saved_state;
    if blob.size == 0 || blob.extent.is_empty() {
        return Err(ColdReason::NoSavedState);
    }
    if !rec.policy.resume_on_boot {
        return Err(ColdReason::PolicyDisallows);
    }
    if blob.size > blob.extent.len || (blob.size as usize) < HEADER_BLOCK {
        return Err(ColdReason::Format(FormatError::Malformed("image size")));
    }
    Ok(blob)
}

/// An image read and checked up to its RAM: the header, every vCPU's state decoded
/// and validated, the device blobs (validated by each device at restore), the RAM
/// index.
#[derive(Debug)]
pub struct OpenedState {
    pub blob: Blob,
    pub header: Header,
    pub vcpus: Vec<VcpuState>,
    pub devices: Vec<DeviceState>,
    pub index: Vec<IndexEntry>,
    pub data_pages: u64,
}

fn read(disk: &mut dyn BlockBackend, blob: &Blob, s: &Section) -> Result<Vec<u8>, ColdReason> {
    // Whole blocks around the section.
    let bs = registry::defs::BLOCK_SIZE;
    let start = s.offset / bs * bs;
    let end = s.end().next_multiple_of(bs).min(blob.extent.len);
    let mut v = vec![0u8; (end - start) as usize];
    registry::read_extent(disk, blob.extent, start, &mut v).map_err(|_| ColdReason::Unreadable)?;
    let off = (s.offset - start) as usize;
    Ok(v[off..off + s.len as usize].to_vec())
}

/// Reads and checks everything but the RAM data of the image `blob` against the VM
/// as it is now (`expected`, and the host counter frequency `cntfrq`).
pub fn open_saved(
    disk: &mut dyn BlockBackend,
    blob: Blob,
    expected: &Fingerprint,
    cntfrq: u64,
    crc: CrcAppend,
) -> Result<OpenedState, ColdReason> {
    let mut hb = vec![0u8; HEADER_BLOCK];
    registry::read_extent(disk, blob.extent, 0, &mut hb).map_err(|_| ColdReason::Unreadable)?;
    let header = Header::decode(&hb, blob.size).map_err(ColdReason::Format)?;
    if !ram::is_zero(&hb[header.encode().len()..]) {
        return Err(ColdReason::Format(FormatError::Malformed("header padding")));
    }
    if header.crc() != blob.crc32c {
        return Err(ColdReason::Format(FormatError::Checksum("registry")));
    }
    if header.sections[SEC_RAM_INDEX].end() != blob.size {
        return Err(ColdReason::Format(FormatError::Malformed("image size")));
    }
    if let Some(what) = header.fingerprint.mismatch(expected) {
        return Err(ColdReason::ConfigMismatch(what));
    }
    if header.time.cntfrq != cntfrq {
        return Err(ColdReason::CounterFrequency {
            saved: header.time.cntfrq,
            now: cntfrq,
        });
    }
    // The vCPU and device sections and the padding up to the RAM data, read as one:
    // the padding must be zero, so no byte of the image goes unchecked.
    let (vs, ds) = (header.sections[SEC_VCPUS], header.sections[SEC_DEVICES]);
    if vs.offset != HEADER_BLOCK as u64
        || ds.offset != vs.end()
        || header.sections[SEC_RAM_DATA].offset != ds.end().next_multiple_of(ALIGN)
    {
        return Err(ColdReason::Format(FormatError::Malformed("section layout")));
    }
    let head = read(
        disk,
        &blob,
        &Section {
            offset: vs.offset,
            len: header.sections[SEC_RAM_DATA].offset - vs.offset,
            crc: 0,
        },
    )?;
    let split = vs.len as usize;
    let dend = (ds.end() - vs.offset) as usize;
    if crc(0, &head[..split]) != vs.crc {
        return Err(ColdReason::Format(FormatError::Checksum("vCPU section")));
    }
    if crc(0, &head[split..dend]) != ds.crc {
        return Err(ColdReason::Format(FormatError::Checksum("device section")));
    }
    if !ram::is_zero(&head[dend..]) {
        return Err(ColdReason::Format(FormatError::Malformed(
            "section padding",
        )));
    }
    let is = header.sections[SEC_RAM_INDEX];
    let index_bytes = read(disk, &blob, &is)?;
    if crc(0, &index_bytes) != is.crc {
        return Err(ColdReason::Format(FormatError::Checksum("RAM index")));
    }
    let body = [&head[..split], &head[split..dend], &index_bytes[..]];
    let blocks = (header.fingerprint.memory_bytes / BLOCK_SIZE as u64) as u32;
    let mut vcpus = Vec::new();
    for b in format::decode_vcpus(body[0], header.fingerprint.vcpus).map_err(ColdReason::Format)? {
        let mut v = VcpuState::default();
        v.restore(b)
            .map_err(|e| ColdReason::StateRefused("vCPU", e))?;
        vcpus.push(v);
    }
    if vcpus.iter().all(|v| v.power == Power::Off) {
        return Err(ColdReason::Format(FormatError::Malformed("no vCPU is on")));
    }
    let devices = format::decode_devices(body[1]).map_err(ColdReason::Format)?;
    let (index, data_pages) = ram::decode_index(body[2], blocks).map_err(ColdReason::Format)?;
    if data_pages * PAGE_SIZE as u64 != header.sections[SEC_RAM_DATA].len {
        return Err(ColdReason::Format(FormatError::Malformed(
            "RAM data length",
        )));
    }
    Ok(OpenedState {
        blob,
        header,
        vcpus,
        devices,
        index,
        data_pages,
    })
}

/// Streams the image's RAM data into `sink`, checking the data's CRC32C. On an
/// error `sink` holds part of the image: the caller must reset the VM's RAM before
/// a cold boot.
pub fn restore_ram(
    disk: &mut dyn BlockBackend,
    st: &OpenedState,
    sink: &mut dyn RamSink,
    crc: CrcAppend,
) -> Result<(), ColdReason> {
    let sec = st.header.sections[SEC_RAM_DATA];
    let mut buf = vec![0u8; (CHUNK as u64).min(sec.len) as usize];
    let (mut have, mut used) = (0usize, 0usize);
    let mut at = sec.offset;
    let mut left = sec.len;
    let mut sum = 0;
    for e in &st.index {
        for p in 0..PAGES_PER_BLOCK {
            if e.zero.is_zero(p) {
                continue;
            }
            if used == have {
                let n = (CHUNK as u64).min(left) as usize;
                registry::read_extent(disk, st.blob.extent, at, &mut buf[..n])
                    .map_err(|_| ColdReason::Unreadable)?;
                sum = crc(sum, &buf[..n]);
                at += n as u64;
                left -= n as u64;
                have = n;
                used = 0;
            }
            sink.write_page(e.block, p as u32, &buf[used..used + PAGE_SIZE]);
            used += PAGE_SIZE;
        }
        sink.end_block(e.block, &e.zero);
    }
    if sum != sec.crc || left != 0 || used != have {
        return Err(ColdReason::Format(FormatError::Checksum("RAM data")));
    }
    Ok(())
}

/// Marks the VM's saved image consumed (size 0) with one registry commit; called
/// once the image is restored and before the guest runs.
pub fn consume(
    disk: &mut dyn BlockBackend,
    reg: &mut Registry,
    uuid: Uuid,
) -> Result<(), RegistryError> {
    reg.update_vm(disk, uuid, |r| {
        r.saved_state.size = 0;
        r.saved_state.crc32c = 0;
    })
}

#[cfg(test)]
mod tests;
