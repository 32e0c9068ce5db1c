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
//! Steps 2-6 are [`write_image`], which disk snapshots
//! ([`crate::snapshot_disk::take`]) use too, with their own extent and no base;
//! a rollback to one restores RAM with [`restore_ram`], as resume does.
//!
//! The registry commit is atomic (A/B slots), and until step 7 the registry says
//! "no saved state", so a power cut at any moment leaves either the previous
//! registry (no image: the VM cold boots) or the new one pointing at a complete,
//! flushed image. A resumed image is consumed ([`consume`]) by committing its size
//! back to 0 before the guest runs: the guest's disk diverges from then on.

use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use registry::{Blob, Extent, Registry, RegistryError, Uuid, VmRecord};
use vdev::{BlockBackend, BlockError, RestoreError, SaveRestore};

use crate::format::{
    self, DeviceState, Fingerprint, FormatError, Header, Section, ALIGN, FORMAT_VERSION,
    HEADER_BLOCK, SECTIONS, SEC_DEVICES, SEC_RAM_DATA, SEC_RAM_INDEX, SEC_VCPUS,
};
use crate::ram::{self, IndexEntry, ZeroMap, BLOCK_SIZE, PAGES_PER_BLOCK, PAGE_SIZE};
use crate::time::TimeState;
use crate::vcpu::{Power, VcpuState};
use crate::CrcAppend;

/// Blocks a suspend reserves room for beyond those populated now, so a later
/// incremental suspend can give blocks populated since their own slots without
/// moving the extent (which would make it write everything again).
pub const SLACK_BLOCKS: u64 = 16;
/// Blocks whose RAM a resume keeps in flight ahead of the one it checks.
pub const READ_AHEAD_BLOCKS: usize = 8;
/// Bytes of RAM data a suspend writes between flushes it starts without waiting
/// ([`RamIo::start_flush`]): the disk makes them durable while later RAM is
/// still being written, so the flush before the header (step 4) is left with
/// the last of it instead of the whole image.
/// (A megabyte in the host tests, whose RAM is small, so they start flushes too.)
pub const FLUSH_EVERY: u64 = if cfg!(test) { 1 << 20 } else { 64 << 20 };

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

/// Which pages of a block changed: bit `p` of word `p / 64` for page `p`.
pub type PageBits = [u64; PAGES_PER_BLOCK / 64];

/// Every page of a block.
pub const ALL_PAGES: PageBits = [u64::MAX; PAGES_PER_BLOCK / 64];

/// Guest RAM and the system disk as suspend and resume move RAM between them
/// straight, several transfers in flight (the hypervisor: DMA from and to guest
/// RAM; a host test: copies). A transfer moves `len` bytes at byte `off` of RAM
/// block `b` to or from absolute disk byte `at`; its ticket orders it.
pub trait RamIo: RamImage {
    /// The system disk, for everything but the RAM data.
    fn disk(&mut self) -> &mut dyn BlockBackend;
    /// Starts writing RAM to the disk.
    fn start_write(&mut self, b: u32, off: usize, len: usize, at: u64) -> Result<u64, BlockError>;
    /// Starts reading the disk into block `b`, which a resume is restoring (not
    /// guest RAM yet).
    fn start_read(&mut self, b: u32, off: usize, len: usize, at: u64) -> Result<u64, BlockError>;
    /// Starts a flush of the writes completed so far without waiting for it (its
    /// ticket orders it with the transfers). An I/O whose writes are durable when
    /// done needs none (the default).
    fn start_flush(&mut self) -> Result<(), BlockError> {
        Ok(())
    }
    /// Waits until the transfer `ticket` and every one started before it are done;
    /// `u64::MAX` waits for all. The first error of any of them is returned (once
    /// every one of them is done).
    fn wait(&mut self, ticket: u64) -> Result<(), BlockError>;
    /// Block `b` as a resume has read it so far.
    fn restored(&self, b: u32) -> &[u8];
    /// Block `b` is read and checked: zero its pages in `zero`, make it guest RAM.
    fn end_block(&mut self, b: u32, zero: &ZeroMap);
    /// Query and clear: the pages of populated block `b` written since the image
    /// in [`Base`] was restored (every page when nothing is known).
    fn changed(&mut self, _b: u32) -> PageBits {
        ALL_PAGES
    }
}

/// The image a resume restored guest RAM from, kept so a later suspend into the
/// same extent rewrites only what changed. Valid only while the extent's RAM data
/// still holds it (nothing but a suspend writes the extent) and every write to
/// guest RAM since the resume shows in [`RamIo::changed`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub extent: Extent,
    pub index: Vec<IndexEntry>,
}

/// [`RamIo`] without DMA: each transfer a plain copy between the disk and a
/// [`RamImage`] + [`RamSink`], done when started. A block being restored is read
/// into a staging buffer of [`BLOCK_SIZE`] bytes and handed to the sink page by
/// page at [`RamIo::end_block`]. For where nothing moves RAM by DMA (host tests,
/// tools); it knows no dirty log ([`RamIo::changed`]: every page).
pub struct CopyIo<'a, R: RamImage + RamSink> {
    disk: &'a mut dyn BlockBackend,
    ram: &'a mut R,
    /// Blocks being restored, and their bytes read so far.
    staged: Vec<(u32, Vec<u8>)>,
    /// What [`RamIo::restored`] shows of a block nothing was read into yet.
    blank: Vec<u8>,
    next: u64,
}

impl<'a, R: RamImage + RamSink> CopyIo<'a, R> {
    pub fn new(disk: &'a mut dyn BlockBackend, ram: &'a mut R) -> Self {
        CopyIo {
            disk,
            ram,
            staged: Vec::new(),
            blank: vec![0; BLOCK_SIZE],
            next: 0,
        }
    }

    fn ticket(&mut self) -> u64 {
        self.next += 1;
        self.next
    }
}

impl<R: RamImage + RamSink> RamImage for CopyIo<'_, R> {
    fn blocks(&self) -> u32 {
        self.ram.blocks()
    }
    fn block(&self, b: u32) -> Option<&[u8]> {
        self.ram.block(b)
    }
}

impl<R: RamImage + RamSink> RamIo for CopyIo<'_, R> {
    fn disk(&mut self) -> &mut dyn BlockBackend {
        &mut *self.disk
    }
    fn start_write(&mut self, b: u32, off: usize, len: usize, at: u64) -> Result<u64, BlockError> {
        let data = self
            .ram
            .block(b)
            .and_then(|blk| blk.get(off..off.checked_add(len)?))
            .ok_or(BlockError::OutOfRange)?;
        self.disk.write_at(at, data)?;
        Ok(self.ticket())
    }
    fn start_read(&mut self, b: u32, off: usize, len: usize, at: u64) -> Result<u64, BlockError> {
        if b >= self.ram.blocks() {
            return Err(BlockError::OutOfRange);
        }
        let i = match self.staged.iter().position(|s| s.0 == b) {
            Some(i) => i,
            None => {
                self.staged.push((b, vec![0; BLOCK_SIZE]));
                self.staged.len() - 1
            }
        };
        let dst = off
            .checked_add(len)
            .and_then(|end| self.staged[i].1.get_mut(off..end))
            .ok_or(BlockError::OutOfRange)?;
        self.disk.read_at(at, dst)?;
        Ok(self.ticket())
    }
    fn wait(&mut self, _ticket: u64) -> Result<(), BlockError> {
        Ok(())
    }
    fn restored(&self, b: u32) -> &[u8] {
        self.staged
            .iter()
            .find(|s| s.0 == b)
            .map_or(&self.blank[..], |s| &s.1[..])
    }
    fn end_block(&mut self, b: u32, zero: &ZeroMap) {
        if let Some(i) = self.staged.iter().position(|s| s.0 == b) {
            let (_, data) = self.staged.swap_remove(i);
            for (p, page) in data.chunks(PAGE_SIZE).enumerate() {
                if !zero.is_zero(p) {
                    self.ram.write_page(b, p as u32, page);
                }
            }
        }
        self.ram.end_block(b, zero);
    }
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
    /// Bytes written to the disk for it (less than the image when incremental).
    pub written: u64,
    /// Blocks whose pages were rewritten (all of them unless incremental).
    pub blocks_written: u32,
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

/// Writes `input` and guest RAM (through `io`) as the VM's saved image and
/// commits the registry to it, in the order the module documentation gives.
/// With `base` (the image this VM was resumed from) and the extent unmoved, only
/// the pages [`RamIo::changed`] names are written again: every other page with
/// data is already in its slot. `crc` computes CRC32C.
pub fn suspend(
    io: &mut dyn RamIo,
    reg: &mut Registry,
    input: &SuspendInput<'_>,
    base: Option<&Base>,
    crc: CrcAppend,
) -> Result<SuspendReport, SuspendError> {
    let uuid = input.uuid;
    let rec = reg.vm(uuid).ok_or(SuspendError::NoRecord)?;
    let current = rec.saved_state.extent;
    // 1. The extent is about to be overwritten: the registry must not point at it.
    if rec.saved_state.size != 0 {
        reg.update_vm(io.disk(), uuid, |r| {
            r.saved_state.size = 0;
            r.saved_state.crc32c = 0;
        })?;
    }
    let (report, header_crc) = write_image(io, input, base, crc, |disk, room| {
        // An extent that holds what is needed now is kept (a base in it stays
        // usable); a new one gets spare slots if the disk has room for them.
        let ask = if current.len >= room.need && !current.is_empty() {
            room.need
        } else {
            room.spare
        };
        Ok(match reg.reserve_saved_state(disk, uuid, ask) {
            Err(RegistryError::NoSpace { .. }) => reg.reserve_saved_state(disk, uuid, room.need)?,
            other => other?,
        })
    })?;
    // 7. The one commit that makes the image the VM's saved state.
    reg.update_vm(io.disk(), uuid, |r| {
        r.saved_state.size = report.bytes;
        r.saved_state.crc32c = header_crc;
    })?;
    Ok(report)
}

/// The capacities an image needs: `need` holds a slot per populated block, the
/// small sections and the largest index; `spare` also [`SLACK_BLOCKS`] more slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    pub need: u64,
    pub spare: u64,
}

/// Steps 2-6 of the commit protocol, shared by [`suspend`] and disk snapshots
/// ([`crate::snapshot_disk::take`]): asks `reserve` for an extent of at least
/// [`Room::need`] bytes (which it must have recorded in the registry, so no VM
/// data lands in free space), writes guest RAM into its slots through `io`, then
/// the small sections and the index, flushes, writes the header block, flushes.
/// With `base` (an image already in that same extent) only the pages
/// [`RamIo::changed`] names are written again; without one every page with data
/// is written and [`RamIo::changed`] is never asked (so a disk snapshot leaves
/// the dirty log of a suspend's base alone). Returns what was written and the
/// header's CRC32C, which the caller commits as the image's.
pub fn write_image(
    io: &mut dyn RamIo,
    input: &SuspendInput<'_>,
    base: Option<&Base>,
    crc: CrcAppend,
    reserve: impl FnOnce(&mut dyn BlockBackend, Room) -> Result<Extent, SuspendError>,
) -> Result<(SuspendReport, u32), SuspendError> {
    // Small sections first, in memory.
    let vblobs: Vec<Vec<u8>> = input.vcpus.iter().map(|v| v.save()).collect();
    let mut small = format::encode_vcpus(&vblobs);
    let vcpus_len = small.len() as u64;
    let devices = format::encode_devices(input.devices);
    small.extend_from_slice(&devices);
    pad_to(&mut small, ALIGN as usize);
    let populated: Vec<u32> = (0..io.blocks())
        .filter(|&b| io.block(b).is_some())
        .collect();
    // 2. Room for a slot per populated block and some to spare, the small
    // sections and the largest index.
    let max_index = (u64::from(io.blocks()) * ram::ENTRY_LEN as u64).next_multiple_of(ALIGN);
    let room = |slots: u64| {
        HEADER_BLOCK as u64 + slots * BLOCK_SIZE as u64 + small.len() as u64 + max_index
    };
    let extent = reserve(
        io.disk(),
        Room {
            need: room(populated.len() as u64),
            spare: room(populated.len() as u64 + SLACK_BLOCKS),
        },
    )?;
    // Slots: a block of the base image keeps its own, a new block takes the next
    // free one; the base is used only if every slot fits the extent.
    let cap_slots = (extent.len.saturating_sub(room(0)) / BLOCK_SIZE as u64) as usize;
    let base = base.filter(|b| {
        let in_base = |x: u32| b.index.binary_search_by_key(&x, |e| e.block).is_ok();
        let new = populated.iter().filter(|&&x| !in_base(x)).count();
        let top = b
            .index
            .iter()
            .map(|e| e.slot as usize + 1)
            .max()
            .unwrap_or(0);
        b.extent == extent && top + new <= cap_slots
    });
    let old = |b: u32| {
        base.and_then(|s| {
            s.index
                .binary_search_by_key(&b, |e| e.block)
                .ok()
                .map(|i| s.index[i])
        })
    };
    let mut next_slot = base.map_or(0, |s| s.index.iter().map(|e| e.slot + 1).max().unwrap_or(0));
    let slot_at =
        |slot: u32| extent.start + HEADER_BLOCK as u64 + u64::from(slot) * BLOCK_SIZE as u64;
    // 3. RAM data, straight from guest RAM, then the sections and the index.
    let mut index = Vec::with_capacity(populated.len());
    let (mut data_pages, mut zero_pages, mut written, mut blocks_written) =
        (0u64, 0u64, 0u64, 0u32);
    let mut unflushed = 0u64;
    for &b in &populated {
        let prev = old(b);
        // Asked only for a block of the base (query and clear); any other block
        // is written whole.
        let changed = match prev {
            Some(_) => io.changed(b),
            None => ALL_PAGES,
        };
        let is_changed = |p: usize| changed[p / 64] & (1 << (p % 64)) != 0;
        let slot = match prev {
            Some(e) => e.slot,
            None => {
                next_slot += 1;
                next_slot - 1
            }
        };
        let Some(block) = io.block(b) else { continue };
        let mut zero = prev.map_or(ZeroMap([u64::MAX; PAGES_PER_BLOCK / 64]), |e| e.zero);
        for (p, page) in block.chunks(PAGE_SIZE).enumerate().take(PAGES_PER_BLOCK) {
            if is_changed(p) {
                let bit = 1u64 << (p % 64);
                if ram::is_zero(page) {
                    zero.0[p / 64] |= bit;
                } else {
                    zero.0[p / 64] &= !bit;
                }
            }
        }
        let runs = ram::runs(|p| is_changed(p) && !zero.is_zero(p) && p * PAGE_SIZE < block.len());
        let block_sum = match prev {
            Some(e) if runs.is_empty() && e.zero == zero => e.sum,
            _ => ram::block_sum(block, &zero),
        };
        let pages = zero.data_pages() as u64;
        data_pages += pages;
        zero_pages += PAGES_PER_BLOCK as u64 - pages;
        if !runs.is_empty() {
            blocks_written += 1;
        }
        for (p, n) in runs {
            let (off, len) = (p * PAGE_SIZE, n * PAGE_SIZE);
            let at = slot_at(slot) + off as u64;
            if let Err(e) = io.start_write(b, off, len, at) {
                let _ = io.wait(u64::MAX);
                return Err(e.into());
            }
            written += len as u64;
            unflushed += len as u64;
            if unflushed >= FLUSH_EVERY {
                unflushed = 0;
                if let Err(e) = io.start_flush() {
                    let _ = io.wait(u64::MAX);
                    return Err(e.into());
                }
            }
        }
        index.push(IndexEntry {
            block: b,
            slot,
            sum: block_sum,
            zero,
        });
    }
    io.wait(u64::MAX)?;
    let data_len = u64::from(next_slot) * BLOCK_SIZE as u64;
    let small_at = HEADER_BLOCK as u64 + data_len;
    let mut sections = [Section::default(); SECTIONS];
    sections[SEC_RAM_DATA] = Section {
        offset: HEADER_BLOCK as u64,
        len: data_len,
        crc: 0,
    };
    sections[SEC_VCPUS] = Section {
        offset: small_at,
        len: vcpus_len,
        crc: crc(0, &small[..vcpus_len as usize]),
    };
    sections[SEC_DEVICES] = Section {
        offset: small_at + vcpus_len,
        len: devices.len() as u64,
        crc: crc(0, &devices),
    };
    let index_at = small_at + small.len() as u64;
    let mut idx = ram::encode_index(&index);
    sections[SEC_RAM_INDEX] = Section {
        offset: index_at,
        len: idx.len() as u64,
        crc: crc(0, &idx),
    };
    pad_to(&mut idx, registry::defs::BLOCK_SIZE as usize);
    let disk = io.disk();
    registry::write_extent(disk, extent, small_at, &small).map_err(extent_io)?;
    registry::write_extent(disk, extent, index_at, &idx).map_err(extent_io)?;
    written += (small.len() + idx.len() + HEADER_BLOCK) as u64;
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
            written,
            blocks_written,
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
    // The vCPU and device sections and the padding up to the RAM index, read as
    // one: the padding must be zero, so no byte of them goes unchecked.
    let (vs, ds) = (header.sections[SEC_VCPUS], header.sections[SEC_DEVICES]);
    let (rd, is) = (
        header.sections[SEC_RAM_DATA],
        header.sections[SEC_RAM_INDEX],
    );
    if rd.offset != HEADER_BLOCK as u64
        || !rd.len.is_multiple_of(BLOCK_SIZE as u64)
        || rd.crc != 0
        || vs.offset != rd.end()
        || ds.offset != vs.end()
        || is.offset != ds.end().next_multiple_of(ALIGN)
    {
        return Err(ColdReason::Format(FormatError::Malformed("section layout")));
    }
    let head = read(
        disk,
        &blob,
        &Section {
            offset: vs.offset,
            len: is.offset - vs.offset,
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
    let slots = (rd.len / BLOCK_SIZE as u64).min(u64::from(u32::MAX)) as u32;
    let (index, data_pages) =
        ram::decode_index(body[2], blocks, slots).map_err(ColdReason::Format)?;
    Ok(OpenedState {
        blob,
        header,
        vcpus,
        devices,
        index,
        data_pages,
    })
}

impl OpenedState {
    /// What a later suspend needs to write only what changes after this resume.
    pub fn base(&self) -> Base {
        Base {
            extent: self.blob.extent,
            index: self.index.clone(),
        }
    }
}

/// Reads the image's RAM data into guest RAM through `io` — each block's data
/// pages straight into their places, [`READ_AHEAD_BLOCKS`] blocks in flight — and
/// checks each block's checksum ([`ram::block_sum`]) before making it guest RAM. On an error RAM holds
/// part of the image (no transfer is left in flight): the caller must reset the
/// VM's RAM before a cold boot.
pub fn restore_ram(io: &mut dyn RamIo, st: &OpenedState) -> Result<(), ColdReason> {
    let r = restore_blocks(io, st);
    if r.is_err() {
        let _ = io.wait(u64::MAX);
    }
    r
}

fn restore_blocks(io: &mut dyn RamIo, st: &OpenedState) -> Result<(), ColdReason> {
    let data = st.header.sections[SEC_RAM_DATA];
    let base = st.blob.extent.start + data.offset;
    let mut queued: alloc::collections::VecDeque<(IndexEntry, u64)> = Default::default();
    let check = |io: &mut dyn RamIo, (e, ticket): (IndexEntry, u64)| {
        io.wait(ticket).map_err(|_| ColdReason::Unreadable)?;
        if ram::block_sum(io.restored(e.block), &e.zero) != e.sum {
            return Err(ColdReason::Format(FormatError::Checksum("RAM data")));
        }
        io.end_block(e.block, &e.zero);
        Ok(())
    };
    for e in &st.index {
        let mut ticket = 0;
        let len = io.restored(e.block).len();
        for (p, n) in e.data_runs() {
            let (off, bytes) = (
                p * PAGE_SIZE,
                (n * PAGE_SIZE).min(len.saturating_sub(p * PAGE_SIZE)),
            );
            if bytes == 0 {
                return Err(ColdReason::Format(FormatError::Malformed("RAM index")));
            }
            let at = base + u64::from(e.slot) * BLOCK_SIZE as u64 + off as u64;
            ticket = io
                .start_read(e.block, off, bytes, at)
                .map_err(|_| ColdReason::Unreadable)?;
        }
        queued.push_back((*e, ticket));
        if queued.len() > READ_AHEAD_BLOCKS {
            let q = queued.pop_front().expect("queued");
            check(io, q)?;
        }
    }
    while let Some(q) = queued.pop_front() {
        check(io, q)?;
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
