//! QEMU's firmware configuration device (fw_cfg), MMIO flavour as on `virt`
//! (QEMU `docs/specs/fw_cfg.rst`): a 16-bit big-endian selector register picks an
//! item, the string-preserving data register streams its bytes, and the 64-bit
//! big-endian DMA address register takes the guest address of an `FWCfgDmaAccess`
//! descriptor (control, length, address; big-endian) that selects, reads, skips or
//! writes in one go. Items at and above [`key::FILE_FIRST`] are files listed in the
//! directory at [`key::FILE_DIR`].
//!
//! What a firmware guest gets here: the signature and feature bitmap, the vCPU
//! count, the ACPI tables with their table-loader script (`etc/acpi/tables`,
//! `etc/acpi/rsdp`, `etc/table-loader`), `bootorder`, and `etc/ramfb`, the one
//! writable file, whose contents configure the firmware's framebuffer
//! ([`RamfbConfig`]).
//!
//! Guest values are checked before use: a selector naming no item selects nothing
//! (reads return zeros); a descriptor or buffer outside guest RAM, a write to a
//! read-only item or past an item's end ends the transfer with the error bit; a
//! malformed ramfb configuration is refused. Each of those logs one warning line
//! (the hypervisor's logger rate-limits them).

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use vdev::save::{Reader, Writer};
use vdev::{
    AccessSize, GuestMemory, InterruptSink, MemError, MmioContext, MmioDevice, MmioError,
    RestoreError, SaveRestore,
};

/// Register offsets in the device's window.
pub mod reg {
    /// Data register: 8 bytes wide, 1/2/4/8-byte reads at its start.
    pub const DATA: u64 = 0x0;
    pub const DATA_LEN: u64 = 8;
    /// Selector register: one 16-bit big-endian write.
    pub const SELECTOR: u64 = 0x8;
    /// DMA address register, big-endian: high half at +0, low half (the trigger) at +4.
    pub const DMA: u64 = 0x10;
    pub const DMA_LOW: u64 = 0x14;
    /// Size of the window.
    pub const WINDOW: u64 = 0x18;
}

/// Selector keys.
pub mod key {
    pub const SIGNATURE: u16 = 0x00;
    pub const ID: u16 = 0x01;
    pub const NB_CPUS: u16 = 0x05;
    pub const MAX_CPUS: u16 = 0x0f;
    pub const FILE_DIR: u16 = 0x19;
    pub const FILE_FIRST: u16 = 0x20;
    /// Bit 14: the obsolete write channel (ignored: writes go through DMA).
    pub const WRITE_CHANNEL: u16 = 0x4000;
    /// Bit 15: architecture-specific items (this device has none).
    pub const ARCH_LOCAL: u16 = 0x8000;
    /// The item index bits.
    pub const ENTRY_MASK: u16 = 0x3fff;
}

/// `FWCfgDmaAccess` control bits and layout.
pub mod dma {
    pub const ERROR: u32 = 1 << 0;
    pub const READ: u32 = 1 << 1;
    pub const SKIP: u32 = 1 << 2;
    pub const SELECT: u32 = 1 << 3;
    pub const WRITE: u32 = 1 << 4;
    /// The selector of a SELECT is the control word's upper half.
    pub const SELECTOR_SHIFT: u32 = 16;
    /// Size of the descriptor: control (4), length (4), address (8).
    pub const DESCRIPTOR_LEN: usize = 16;
    /// What the DMA address register reads as, in address order.
    pub const SIGNATURE: &[u8; 8] = b"QEMU CFG";
    /// Zeros written per chunk when a read runs past an item's end.
    pub const ZERO_CHUNK: usize = 4096;
}

/// Contents of [`key::SIGNATURE`].
pub const SIGNATURE: &[u8; 4] = b"QEMU";
/// [`key::ID`] feature bits (little-endian u32).
pub const FEATURE_TRADITIONAL: u32 = 1 << 0;
pub const FEATURE_DMA: u32 = 1 << 1;
/// Longest file name, NUL included.
pub const FILE_NAME_LEN: usize = 56;
/// One directory entry: size (4), select (2), reserved (2), name (56).
pub const DIR_ENTRY_LEN: usize = 64;
/// Most files (keys 0x20..0x4000).
pub const MAX_FILES: usize = (key::ENTRY_MASK - key::FILE_FIRST) as usize + 1;
/// The boot order file: OpenFirmware device paths, one per line.
pub const BOOTORDER_FILE: &str = "bootorder";

/// `etc/ramfb`: the framebuffer the firmware asks for (QEMU's `RAMFBCfg`, all
/// fields big-endian).
pub mod ramfb {
    pub const FILE: &str = "etc/ramfb";
    /// addr (8), fourcc (4), flags (4), width (4), height (4), stride (4).
    pub const LEN: usize = 28;
    /// DRM_FORMAT_XRGB8888 ('XR24').
    pub const FOURCC_XRGB8888: u32 = u32::from_le_bytes(*b"XR24");
    pub const BYTES_PER_PIXEL: u32 = 4;
    /// Largest width or height accepted.
    pub const MAX_DIMENSION: u32 = 16384;
}

/// A framebuffer configuration the guest wrote to `etc/ramfb`, validated: the
/// format is XRGB8888, the dimensions are within [`ramfb::MAX_DIMENSION`], the
/// stride holds a row, and `addr + stride * height` does not overflow. Whether
/// the range is guest RAM is for its user to check when mapping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RamfbConfig {
    pub addr: u64,
    pub fourcc: u32,
    pub width: u32,
    pub height: u32,
    pub stride: u32,
}

impl RamfbConfig {
    /// Parses and validates the file's bytes.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() != ramfb::LEN {
            return None;
        }
        let be32 = |o: usize| u32::from_be_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let mut a = [0u8; 8];
        a.copy_from_slice(&b[..8]);
        let addr = u64::from_be_bytes(a);
        let (fourcc, width, height) = (be32(8), be32(16), be32(20));
        let row = width.checked_mul(ramfb::BYTES_PER_PIXEL)?;
        // A stride of zero means tightly packed rows.
        let stride = match be32(24) {
            0 => row,
            s => s,
        };
        let valid = fourcc == ramfb::FOURCC_XRGB8888
            && (1..=ramfb::MAX_DIMENSION).contains(&width)
            && (1..=ramfb::MAX_DIMENSION).contains(&height)
            && stride >= row
            && addr != 0
            && u64::from(stride)
                .checked_mul(u64::from(height))
                .and_then(|len| addr.checked_add(len))
                .is_some();
        valid.then_some(RamfbConfig {
            addr,
            fourcc,
            width,
            height,
            stride,
        })
    }

    /// Bytes of guest memory the framebuffer covers.
    pub fn len(&self) -> u64 {
        u64::from(self.stride) * u64::from(self.height)
    }

    /// Never true for a validated configuration.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Why an item could not be added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FwCfgError {
    /// Empty, longer than [`FILE_NAME_LEN`] - 1 bytes, or with a NUL.
    BadName,
    DuplicateName,
    TooManyFiles,
    /// Larger than a u32 length can describe.
    TooLarge,
}

/// What happens after the guest writes a writable item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteHook {
    Ramfb,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Item {
    data: Vec<u8>,
    hook: Option<WriteHook>,
}

/// Collects the items of an [`FwCfg`].
#[derive(Debug, Default)]
pub struct FwCfgBuilder {
    fixed: BTreeMap<u16, Vec<u8>>,
    files: BTreeMap<String, Item>,
}

impl FwCfgBuilder {
    /// The signature and feature bitmap (traditional + DMA interfaces).
    pub fn new() -> Self {
        let mut b = FwCfgBuilder::default();
        b.fixed.insert(key::SIGNATURE, SIGNATURE.to_vec());
        let features = FEATURE_TRADITIONAL | FEATURE_DMA;
        b.fixed.insert(key::ID, features.to_le_bytes().to_vec());
        b
    }

    /// [`key::NB_CPUS`] and [`key::MAX_CPUS`] (little-endian u16).
    pub fn cpus(mut self, n: u16) -> Self {
        self.fixed.insert(key::NB_CPUS, n.to_le_bytes().to_vec());
        self.fixed.insert(key::MAX_CPUS, n.to_le_bytes().to_vec());
        self
    }

    fn file(&mut self, name: &str, item: Item) -> Result<(), FwCfgError> {
        if name.is_empty() || name.len() >= FILE_NAME_LEN || name.contains('\0') {
            return Err(FwCfgError::BadName);
        }
        if u32::try_from(item.data.len()).is_err() {
            return Err(FwCfgError::TooLarge);
        }
        if self.files.contains_key(name) {
            return Err(FwCfgError::DuplicateName);
        }
        if self.files.len() == MAX_FILES {
            return Err(FwCfgError::TooManyFiles);
        }
        self.files.insert(name.into(), item);
        Ok(())
    }

    /// A read-only file.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) -> Result<(), FwCfgError> {
        self.file(name, Item { data, hook: None })
    }

    /// The three files of the ACPI tables.
    pub fn acpi(&mut self, blobs: &acpi_gen::AcpiBlobs) -> Result<(), FwCfgError> {
        use acpi_gen::loader::{LOADER_FILE, RSDP_FILE, TABLES_FILE};
        self.add_file(TABLES_FILE, blobs.tables.clone())?;
        self.add_file(RSDP_FILE, blobs.rsdp.clone())?;
        self.add_file(LOADER_FILE, blobs.loader.clone())
    }

    /// `bootorder`: the OpenFirmware device paths, one per line, NUL-terminated.
    pub fn bootorder(&mut self, paths: &[&str]) -> Result<(), FwCfgError> {
        let mut text = paths.join("\n").into_bytes();
        text.push(0);
        self.add_file(BOOTORDER_FILE, text)
    }

    /// The writable `etc/ramfb` (zeros until the firmware configures it).
    pub fn ramfb(&mut self) -> Result<(), FwCfgError> {
        let item = Item {
            data: vec![0; ramfb::LEN],
            hook: Some(WriteHook::Ramfb),
        };
        self.file(ramfb::FILE, item)
    }

    /// The device, with files at keys 0x20 onwards in name order.
    pub fn build(self) -> FwCfg {
        let nfiles = self.files.len();
        let mut items = vec![
            Item {
                data: Vec::new(),
                hook: None
            };
            usize::from(key::FILE_FIRST) + nfiles
        ];
        for (k, data) in self.fixed {
            items[usize::from(k)].data = data;
        }
        let mut dir = Vec::with_capacity(4 + nfiles * DIR_ENTRY_LEN);
        dir.extend_from_slice(&(nfiles as u32).to_be_bytes());
        for (i, (name, item)) in self.files.into_iter().enumerate() {
            let select = key::FILE_FIRST + i as u16;
            dir.extend_from_slice(&(item.data.len() as u32).to_be_bytes());
            dir.extend_from_slice(&select.to_be_bytes());
            dir.extend_from_slice(&[0, 0]);
            let mut field = [0u8; FILE_NAME_LEN];
            field[..name.len()].copy_from_slice(name.as_bytes());
            dir.extend_from_slice(&field);
            items[usize::from(select)] = item;
        }
        items[usize::from(key::FILE_DIR)].data = dir;
        let initial = items
            .iter()
            .filter(|i| i.hook.is_some())
            .map(|i| i.data.clone())
            .collect();
        FwCfg {
            items,
            initial,
            selected: Some(key::SIGNATURE),
            offset: 0,
            dma_address: 0,
            ramfb: None,
        }
    }
}

/// Why a DMA transfer ended with the error bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DmaError {
    Memory(MemError),
    ReadOnly,
    PastEnd,
}

impl From<MemError> for DmaError {
    fn from(e: MemError) -> Self {
        DmaError::Memory(e)
    }
}

/// The fw_cfg device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FwCfg {
    items: Vec<Item>,
    /// Reset contents of the writable items, in key order.
    initial: Vec<Vec<u8>>,
    /// The selected item (`None`: the selector named no item).
    selected: Option<u16>,
    /// The data offset in the selected item (never past its end).
    offset: u32,
    /// The DMA address register (0 after each operation).
    dma_address: u64,
    /// The framebuffer `etc/ramfb` configures, once valid.
    ramfb: Option<RamfbConfig>,
}

impl FwCfg {
    /// The framebuffer the guest configured through `etc/ramfb`.
    pub fn ramfb(&self) -> Option<RamfbConfig> {
        self.ramfb
    }

    /// The contents of the file `name`.
    pub fn file(&self, name: &str) -> Option<&[u8]> {
        let dir = &self.items[usize::from(key::FILE_DIR)].data;
        dir.get(4..)?.chunks(DIR_ENTRY_LEN).find_map(|e| {
            let n = &e[8..];
            let end = n.iter().position(|&c| c == 0).unwrap_or(n.len());
            (&n[..end] == name.as_bytes()).then(|| {
                let k = u16::from_be_bytes([e[4], e[5]]);
                &self.items[usize::from(k)].data[..]
            })
        })
    }

    fn select(&mut self, selector: u16) {
        self.offset = 0;
        let index = selector & key::ENTRY_MASK;
        let exists = selector & key::ARCH_LOCAL == 0 && usize::from(index) < self.items.len();
        self.selected = exists.then_some(index);
        if !exists {
            log::warn!("fw_cfg: selector {selector:#06x} names no item; reads return zeros");
        }
    }

    /// The selected item's bytes from the data offset on (empty when none).
    fn remaining(&self) -> &[u8] {
        match self.selected {
            Some(k) => &self.items[usize::from(k)].data[self.offset as usize..],
            None => &[],
        }
    }

    fn read_data(&mut self, size: usize) -> u64 {
        let mut b = [0u8; 8];
        let rest = self.remaining();
        let n = rest.len().min(size);
        b[..n].copy_from_slice(&rest[..n]);
        self.offset += n as u32;
        u64::from_le_bytes(b)
    }

    /// Runs the DMA operation whose descriptor is at `desc`, then writes its status
    /// (0, or [`dma::ERROR`]) back into the descriptor's control field.
    fn dma(&mut self, mem: &mut dyn GuestMemory, desc: u64) {
        self.dma_address = 0;
        let mut d = [0u8; dma::DESCRIPTOR_LEN];
        if let Err(e) = mem.read(desc, &mut d) {
            log::warn!("fw_cfg: DMA descriptor at {desc:#x} is not guest RAM ({e:?})");
            let _ = mem.write(desc, &dma::ERROR.to_be_bytes());
            return;
        }
        let control = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
        let length = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
        let mut a = [0u8; 8];
        a.copy_from_slice(&d[8..]);
        let address = u64::from_be_bytes(a);
        let status = match self.transfer(mem, control, length, address) {
            Ok(()) => 0,
            Err(e) => {
                log::warn!(
                    "fw_cfg: DMA control {control:#x} length {length:#x} address {address:#x} \
                     failed: {e:?}"
                );
                dma::ERROR
            }
        };
        if mem.write(desc, &status.to_be_bytes()).is_err() {
            log::warn!("fw_cfg: DMA status for descriptor {desc:#x} could not be written");
        }
    }

    fn transfer(
        &mut self,
        mem: &mut dyn GuestMemory,
        control: u32,
        length: u32,
        address: u64,
    ) -> Result<(), DmaError> {
        if control & dma::SELECT != 0 {
            self.select((control >> dma::SELECTOR_SHIFT) as u16);
        }
        if control & dma::READ != 0 {
            let n = self.remaining().len().min(length as usize);
            mem.write(address, &self.remaining()[..n])?;
            self.offset += n as u32;
            // Past the end the guest gets zeros, as from the data register.
            let zeros = [0u8; dma::ZERO_CHUNK];
            let mut done = n as u64;
            while done < u64::from(length) {
                let chunk = (u64::from(length) - done).min(dma::ZERO_CHUNK as u64) as usize;
                let at = address.checked_add(done).ok_or(MemError::Overflow)?;
                mem.write(at, &zeros[..chunk])?;
                done += chunk as u64;
            }
            Ok(())
        } else if control & dma::WRITE != 0 {
            self.dma_write(mem, length, address)
        } else if control & dma::SKIP != 0 {
            let n = self.remaining().len().min(length as usize);
            self.offset += n as u32;
            Ok(())
        } else {
            Ok(())
        }
    }

    fn dma_write(
        &mut self,
        mem: &mut dyn GuestMemory,
        length: u32,
        address: u64,
    ) -> Result<(), DmaError> {
        let Some(k) = self.selected else {
            return Err(DmaError::ReadOnly);
        };
        let item = &mut self.items[usize::from(k)];
        let Some(hook) = item.hook else {
            return Err(DmaError::ReadOnly);
        };
        let start = self.offset as usize;
        let end = start
            .checked_add(length as usize)
            .filter(|&e| e <= item.data.len())
            .ok_or(DmaError::PastEnd)?;
        let mut buf = vec![0u8; end - start];
        mem.read(address, &mut buf)?;
        item.data[start..end].copy_from_slice(&buf);
        self.offset = end as u32;
        match hook {
            WriteHook::Ramfb => self.update_ramfb(),
        }
        Ok(())
    }

    fn ramfb_bytes(&self) -> Option<&[u8]> {
        self.items
            .iter()
            .find(|i| i.hook == Some(WriteHook::Ramfb))
            .map(|i| &i.data[..])
    }

    fn update_ramfb(&mut self) {
        let bytes = self.ramfb_bytes().unwrap_or(&[]);
        let parsed = RamfbConfig::parse(bytes);
        let written = bytes.iter().any(|&b| b != 0);
        self.ramfb = parsed;
        if parsed.is_none() && written {
            log::warn!("fw_cfg: etc/ramfb configuration refused (format, size or stride)");
        }
    }
}

fn unsupported(offset: u64, size: AccessSize) -> MmioError {
    MmioError::UnsupportedSize { offset, size }
}

impl MmioDevice for FwCfg {
    fn read(
        &mut self,
        _ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        let n = size.bytes();
        match offset {
            // The data register answers at its start only, in any width.
            reg::DATA => Ok(self.read_data(n as usize)),
            o if o < reg::DATA_LEN => Err(MmioError::Unaligned { offset }),
            // The selector is write-only: a 16-bit read gives zero.
            reg::SELECTOR if size == AccessSize::Half => Ok(0),
            reg::SELECTOR => Err(unsupported(offset, size)),
            // The DMA register reads as the bytes of "QEMU CFG", naturally aligned.
            o if (reg::DMA..reg::WINDOW).contains(&o) => {
                let at = (o - reg::DMA) as usize;
                if !o.is_multiple_of(n) || at + n as usize > dma::SIGNATURE.len() {
                    return Err(MmioError::Unaligned { offset });
                }
                let mut b = [0u8; 8];
                b[..n as usize].copy_from_slice(&dma::SIGNATURE[at..at + n as usize]);
                Ok(u64::from_le_bytes(b))
            }
            _ => Err(MmioError::NoRegister { offset }),
        }
    }

    fn write(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        match (offset, size) {
            (reg::DATA, _) => {
                log::warn!("fw_cfg: write to the data register ignored (writes go through DMA)");
                Ok(())
            }
            (reg::SELECTOR, AccessSize::Half) => {
                self.select((value as u16).swap_bytes());
                Ok(())
            }
            (reg::DMA, AccessSize::Double) => {
                self.dma(ctx.mem, value.swap_bytes());
                Ok(())
            }
            (reg::DMA, AccessSize::Word) => {
                let high = u64::from((value as u32).swap_bytes());
                self.dma_address = (high << 32) | (self.dma_address & u64::from(u32::MAX));
                Ok(())
            }
            (reg::DMA_LOW, AccessSize::Word) => {
                let low = u64::from((value as u32).swap_bytes());
                let desc = (self.dma_address & !u64::from(u32::MAX)) | low;
                self.dma(ctx.mem, desc);
                Ok(())
            }
            (o, _) if o < reg::DATA_LEN => Err(MmioError::Unaligned { offset }),
            (reg::SELECTOR | reg::DMA | reg::DMA_LOW, _) => Err(unsupported(offset, size)),
            _ => Err(MmioError::NoRegister { offset }),
        }
    }

    fn reset(&mut self, _irq: &mut dyn InterruptSink) {
        let mut initial = self.initial.iter();
        for item in self.items.iter_mut().filter(|i| i.hook.is_some()) {
            if let Some(data) = initial.next() {
                item.data.clone_from(data);
            }
        }
        self.selected = Some(key::SIGNATURE);
        self.offset = 0;
        self.dma_address = 0;
        self.ramfb = None;
    }
}

impl SaveRestore for FwCfg {
    const SAVE_ID: [u8; 4] = *b"FWCF";
    const SAVE_VERSION: u32 = 1;

    fn save(&self) -> Vec<u8> {
        let FwCfg {
            items,
            // Configuration, rebuilt by whoever builds the device.
            initial: _,
            selected,
            offset,
            dma_address,
            // Derived from the etc/ramfb bytes.
            ramfb: _,
        } = self;
        let mut w = Writer::new(Self::SAVE_ID, Self::SAVE_VERSION);
        w.flag(selected.is_some())
            .u16(selected.unwrap_or(0))
            .u32(*offset)
            .u64(*dma_address);
        for item in items.iter().filter(|i| i.hook.is_some()) {
            w.bytes(&item.data);
        }
        w.finish()
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let (_, mut r) = Reader::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
        let has_selection = r.flag()?;
        let selector = r.u16()?;
        let offset = r.u32()?;
        let dma_address = r.u64()?;
        let selected = has_selection.then_some(selector);
        let len = match selected {
            Some(k) => self
                .items
                .get(usize::from(k))
                .ok_or(RestoreError::Malformed)?
                .data
                .len(),
            None => 0,
        };
        if offset as usize > len {
            return Err(RestoreError::Malformed);
        }
        let mut writable = Vec::new();
        for item in self.items.iter().filter(|i| i.hook.is_some()) {
            let data = r.bytes(item.data.len())?;
            if data.len() != item.data.len() {
                return Err(RestoreError::Malformed);
            }
            writable.push(data.to_vec());
        }
        r.end()?;
        let mut writable = writable.into_iter();
        for item in self.items.iter_mut().filter(|i| i.hook.is_some()) {
            if let Some(data) = writable.next() {
                item.data = data;
            }
        }
        self.selected = selected;
        self.offset = offset;
        self.dma_address = dma_address;
        self.ramfb = RamfbConfig::parse(self.ramfb_bytes().unwrap_or(&[]));
        Ok(())
    }
}

#[cfg(test)]
mod tests;
