//! A CFI parallel NOR flash bank as on QEMU `virt`: a 32-bit bus of two interleaved
//! x16 Intel-command-set devices (CFI primary command set 0x0001, manufacturer 0x89,
//! device 0x18), erased in 256 KiB blocks — the flash EDK2's `VirtNorFlashDxe`
//! drives. Commands go to both devices at once (EDK2 writes `cmd << 16 | cmd`; the
//! model takes the low byte, as QEMU's `pflash_cfi01` does), and every non-array
//! read answers with the same 16-bit value in both lanes.
//!
//! Commands: read array (0xFF), read status (0x70), clear status (0x50), read
//! identifier (0x90), CFI query (0x98), word program (0x40/0x10 + data), buffered
//! program (0xE8 + count + data + 0xD0), block erase (0x20 + 0xD0), block
//! lock/unlock (0x60 + 0x01/0xD0). Programming clears bits (new = old AND data), as
//! NOR does. A command out of sequence sets the status register's command-sequence
//! error (SR.4 | SR.5); programming or erasing a locked block, or any block of a
//! read-only bank (the firmware code), sets SR.1 and the operation's error bit and
//! changes nothing.
//!
//! Backing: a bank's window may be larger than its image (QEMU `virt`'s 64 MiB
//! variable-store bank backed by only the head the firmware uses). Beyond the
//! image the window reads as erased flash (0xFF in read-array mode; status, CFI
//! and identifier reads as the mode says), and a program or block erase there is
//! refused with the operation's failure bit (SR.4 program, SR.5 erase) and a log
//! line, changing nothing; lock commands there are accepted and have no effect
//! (those blocks cannot change anyway) and their lock status reads unlocked. The
//! CFI query describes the whole window.
//!
//! Persistence: a writable bank (the variable store) reports its image to a
//! [`FlashStore`] at the firmware's commit points — when the bank returns to
//! read-array mode after a program or erase changed it (EDK2 does so at the end of
//! every write and erase, and must, to read the store back) — and on
//! [`CfiFlash::flush`]. The store replaces the persisted image atomically; an
//! operation the guest started but did not finish before a power cut never reaches
//! it. While the bank is in read-array mode its reads are plain memory
//! ([`CfiFlash::read_array_mode`] tells the hypervisor when it may map the bank
//! read-only at stage 2 instead of trapping reads).

use alloc::vec;
use alloc::vec::Vec;
use core::ops::Range;

use vdev::save::{Reader, Writer};
use vdev::{
    AccessSize, InterruptSink, MmioContext, MmioDevice, MmioError, RestoreError, SaveRestore,
};

/// Bus width of the bank (two x16 devices).
pub const BANK_WIDTH: u64 = 4;
/// Width of one device.
pub const DEVICE_WIDTH: u64 = 2;
/// Devices side by side on the bus.
pub const DEVICES: u64 = BANK_WIDTH / DEVICE_WIDTH;

/// QEMU `virt`'s banks: 64 MiB each, 256 KiB erase blocks.
pub const VIRT_BANK_SIZE: u64 = 0x0400_0000;
pub const VIRT_BLOCK_SIZE: u64 = 0x4_0000;

/// Write-buffer size of one device (bytes), and of the bank.
pub const DEVICE_BUFFER: u64 = 2048;
pub const BANK_BUFFER: u64 = DEVICE_BUFFER * DEVICES;

/// Identifier codes (read identifier mode, device addresses 0 and 1).
pub const MANUFACTURER_INTEL: u16 = 0x89;
pub const DEVICE_ID: u16 = 0x18;
/// Device address of a block's lock status in read identifier mode.
pub const ID_BLOCK_LOCK: u64 = 2;

/// Command codes (Intel/Sharp extended command set).
pub mod cmd {
    pub const READ_ARRAY: u8 = 0xff;
    pub const READ_ARRAY_ALT: u8 = 0x00;
    pub const READ_STATUS: u8 = 0x70;
    pub const CLEAR_STATUS: u8 = 0x50;
    pub const READ_ID: u8 = 0x90;
    pub const CFI_QUERY: u8 = 0x98;
    pub const WORD_PROGRAM: u8 = 0x40;
    pub const WORD_PROGRAM_ALT: u8 = 0x10;
    pub const BUFFERED_PROGRAM: u8 = 0xe8;
    pub const BLOCK_ERASE: u8 = 0x20;
    pub const CONFIRM: u8 = 0xd0;
    pub const LOCK_SETUP: u8 = 0x60;
    pub const LOCK_BLOCK: u8 = 0x01;
}

/// Status register bits.
pub mod sr {
    /// Write state machine ready (operations complete synchronously: always set).
    pub const READY: u16 = 1 << 7;
    pub const ERASE_ERROR: u16 = 1 << 5;
    pub const PROGRAM_ERROR: u16 = 1 << 4;
    pub const BLOCK_LOCKED: u16 = 1 << 1;
    /// SR.4 and SR.5 together: an improper command sequence.
    pub const SEQUENCE_ERROR: u16 = ERASE_ERROR | PROGRAM_ERROR;
    pub const ERRORS: u16 = ERASE_ERROR | PROGRAM_ERROR | BLOCK_LOCKED;
}

/// Granule of the dirty ranges handed to [`FlashStore::commit`]: EDK2 commits
/// after every programmed word, so a store writing whole 256 KiB blocks would write
/// 64 times what changed.
pub const DIRTY_GRANULE: usize = 4096;

/// Where a writable bank's image persists (the VM's record implements it).
pub trait FlashStore {
    /// Replaces the persisted image with `image`, atomically: after a power cut at
    /// any point, the image read back is either the previous one or `image`.
    /// `dirty` lists the byte ranges ([`DIRTY_GRANULE`]-aligned, ascending,
    /// coalesced) that changed since the last commit: a hint for stores that write
    /// pages rather than whole images.
    fn commit(&mut self, image: &[u8], dirty: &[Range<usize>]) -> Result<(), StoreError>;
}

/// Why a store refused a commit (the bank keeps its blocks dirty and retries at
/// the next commit point).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreError {
    Io,
    ReadOnly,
}

/// Why a bank could not be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeometryError {
    /// The block size is not a power of two of at least the write buffer, or the
    /// image or the window is not a whole number of blocks, or the image is
    /// larger than the window.
    Invalid,
}

/// The command state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Mode {
    ReadArray,
    Status,
    Id,
    Cfi,
    /// 0x40 seen: the next write is the data.
    WordProgram,
    /// 0x20 seen at `block`: the next write must be 0xD0.
    EraseSetup {
        block: usize,
    },
    /// 0x60 seen at `block`: the next write is 0x01 (lock) or 0xD0 (unlock).
    LockSetup {
        block: usize,
    },
    /// 0xE8 seen at `block`: the next write is the word count − 1.
    BufferCount {
        block: usize,
    },
    /// Collecting `remaining` more data writes of the buffer.
    BufferData {
        block: usize,
        remaining: u32,
        data: Vec<(u64, u32)>,
    },
    /// All data in: the next write must be 0xD0.
    BufferConfirm {
        block: usize,
        data: Vec<(u64, u32)>,
    },
}

/// One flash bank.
pub struct CfiFlash<S: FlashStore> {
    /// The backed head of the window (the store's image).
    image: Vec<u8>,
    /// The window the guest sees, at least the image.
    window: u64,
    block_size: u64,
    read_only: bool,
    mode: Mode,
    status: u16,
    locked: Vec<bool>,
    dirty: Vec<bool>,
    store: S,
}

impl<S: FlashStore> CfiFlash<S> {
    /// A bank holding `image`, erased in `block_size` blocks; `read_only` for the
    /// firmware code bank.
    pub fn new(
        image: Vec<u8>,
        block_size: u64,
        read_only: bool,
        store: S,
    ) -> Result<Self, GeometryError> {
        let window = image.len() as u64;
        Self::with_window(image, window, block_size, read_only, store)
    }

    /// A bank of `window` bytes whose first `image.len()` bytes are backed by
    /// `image` (and `store`); the rest reads as erased and refuses program and
    /// erase.
    pub fn with_window(
        image: Vec<u8>,
        window: u64,
        block_size: u64,
        read_only: bool,
        store: S,
    ) -> Result<Self, GeometryError> {
        let size = image.len() as u64;
        let valid = block_size.is_power_of_two()
            && block_size >= BANK_BUFFER
            && size >= block_size
            && size.is_multiple_of(block_size)
            && window >= size
            && window.is_multiple_of(block_size);
        if !valid {
            return Err(GeometryError::Invalid);
        }
        let blocks = (size / block_size) as usize;
        let granules = image.len().div_ceil(DIRTY_GRANULE);
        Ok(CfiFlash {
            image,
            window,
            block_size,
            read_only,
            mode: Mode::ReadArray,
            status: sr::READY,
            locked: vec![false; blocks],
            dirty: vec![false; granules],
            store,
        })
    }

    /// The bank's backed contents (the head of its window).
    pub fn image(&self) -> &[u8] {
        &self.image
    }

    /// Size of the window the guest sees.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, to change its state (tests, fault injection).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Whether reads are plain memory (the bank may be mapped read-only).
    pub fn read_array_mode(&self) -> bool {
        self.mode == Mode::ReadArray
    }

    /// Commits changed blocks now (VM shutdown, reset, before saving state).
    pub fn flush(&mut self) -> Result<(), StoreError> {
        let mut dirty: Vec<Range<usize>> = Vec::new();
        for g in (0..self.dirty.len()).filter(|&g| self.dirty[g]) {
            let range = g * DIRTY_GRANULE..((g + 1) * DIRTY_GRANULE).min(self.image.len());
            match dirty.last_mut() {
                Some(last) if last.end == range.start => last.end = range.end,
                _ => dirty.push(range),
            }
        }
        if dirty.is_empty() {
            return Ok(());
        }
        self.store.commit(&self.image, &dirty)?;
        self.dirty.fill(false);
        Ok(())
    }

    fn block_of(&self, offset: u64) -> usize {
        (offset / self.block_size) as usize
    }

    fn enter_read_array(&mut self) {
        self.mode = Mode::ReadArray;
        if let Err(e) = self.flush() {
            log::warn!("pflash: committing the variable store failed ({e:?}); will retry");
        }
    }

    fn sequence_error(&mut self, what: &str) {
        log::warn!("pflash: {what}: command sequence error");
        self.status |= sr::SEQUENCE_ERROR;
        self.mode = Mode::Status;
    }

    /// Whether `block` is in the backed head of the window.
    fn backed(&self, block: usize) -> bool {
        block < self.locked.len()
    }

    /// Whether `block` may change; sets the error bits if not.
    fn writable(&mut self, block: usize, error: u16) -> bool {
        if !self.backed(block) {
            log::warn!(
                "pflash: program/erase of block {block}, beyond the {} KiB backed by the store, refused",
                self.image.len() >> 10
            );
            self.status |= error;
            return false;
        }
        if self.read_only || self.locked[block] {
            log::warn!("pflash: program/erase of locked or read-only block {block} refused");
            self.status |= sr::BLOCK_LOCKED | error;
            return false;
        }
        true
    }

    fn mark_dirty(&mut self, range: Range<usize>) {
        if range.is_empty() {
            return;
        }
        for g in range.start / DIRTY_GRANULE..=(range.end - 1) / DIRTY_GRANULE {
            self.dirty[g] = true;
        }
    }

    /// Programs `bytes` at `offset` (NOR: only clears bits).
    fn program(&mut self, offset: u64, bytes: &[u8]) {
        let at = offset as usize;
        for (dst, src) in self.image[at..at + bytes.len()].iter_mut().zip(bytes) {
            *dst &= src;
        }
        self.mark_dirty(at..at + bytes.len());
    }

    fn command(&mut self, offset: u64, command: u8) {
        let block = self.block_of(offset);
        self.mode = match command {
            cmd::READ_ARRAY | cmd::READ_ARRAY_ALT => {
                self.enter_read_array();
                return;
            }
            cmd::READ_STATUS => Mode::Status,
            cmd::CLEAR_STATUS => {
                self.status &= !sr::ERRORS;
                self.enter_read_array();
                return;
            }
            cmd::READ_ID => Mode::Id,
            cmd::CFI_QUERY => Mode::Cfi,
            cmd::WORD_PROGRAM | cmd::WORD_PROGRAM_ALT => Mode::WordProgram,
            cmd::BLOCK_ERASE => Mode::EraseSetup { block },
            cmd::LOCK_SETUP => Mode::LockSetup { block },
            cmd::BUFFERED_PROGRAM => Mode::BufferCount { block },
            other => {
                self.sequence_error(&alloc::format!("unknown command {other:#04x}"));
                return;
            }
        };
    }

    fn write_bank(&mut self, offset: u64, size: AccessSize, value: u64) {
        let low = value as u8;
        match core::mem::replace(&mut self.mode, Mode::Status) {
            Mode::ReadArray | Mode::Status | Mode::Id | Mode::Cfi => self.command(offset, low),
            Mode::WordProgram => {
                if self.writable(self.block_of(offset), sr::PROGRAM_ERROR) {
                    let bytes = value.to_le_bytes();
                    self.program(offset, &bytes[..size.bytes() as usize]);
                }
            }
            Mode::EraseSetup { block } => {
                if low != cmd::CONFIRM {
                    return self.sequence_error("erase setup not confirmed");
                }
                if self.writable(block, sr::ERASE_ERROR) {
                    let start = block as u64 * self.block_size;
                    let range = start as usize..(start + self.block_size) as usize;
                    self.image[range.clone()].fill(0xff);
                    self.mark_dirty(range);
                }
            }
            Mode::LockSetup { block } => match low {
                // Unbacked blocks cannot change whatever their lock: no effect.
                cmd::LOCK_BLOCK | cmd::CONFIRM if !self.backed(block) => {}
                cmd::LOCK_BLOCK => self.locked[block] = true,
                cmd::CONFIRM => self.locked[block] = false,
                _ => self.sequence_error("lock setup neither lock nor unlock"),
            },
            Mode::BufferCount { block } => {
                // Per-device word count − 1; each bus write carries one word per device.
                let count = u64::from(value as u16) + 1;
                if count * BANK_WIDTH > BANK_BUFFER {
                    return self.sequence_error("buffered program count over the buffer");
                }
                self.mode = Mode::BufferData {
                    block,
                    remaining: count as u32,
                    data: Vec::new(),
                };
            }
            Mode::BufferData {
                block,
                remaining,
                mut data,
            } => {
                let aligned = size == AccessSize::Word && offset.is_multiple_of(BANK_WIDTH);
                let same_buffer = data
                    .first()
                    .is_none_or(|&(first, _)| first / BANK_BUFFER == offset / BANK_BUFFER);
                if !aligned || !same_buffer || self.block_of(offset) != block {
                    return self.sequence_error("buffered program data outside its buffer");
                }
                data.push((offset, value as u32));
                self.mode = if remaining == 1 {
                    Mode::BufferConfirm { block, data }
                } else {
                    Mode::BufferData {
                        block,
                        remaining: remaining - 1,
                        data,
                    }
                };
            }
            Mode::BufferConfirm { block, data } => {
                if low != cmd::CONFIRM {
                    return self.sequence_error("buffered program not confirmed");
                }
                if self.writable(block, sr::PROGRAM_ERROR) {
                    for (offset, word) in data {
                        self.program(offset, &word.to_le_bytes());
                    }
                }
            }
        }
    }

    /// The 16-bit value a device answers at device address `index` outside
    /// read-array mode.
    fn device_value(&self, index: u64) -> u16 {
        match self.mode {
            Mode::Id => match index % (self.block_size / BANK_WIDTH) {
                0 => MANUFACTURER_INTEL,
                1 => DEVICE_ID,
                ID_BLOCK_LOCK => {
                    let block = self.block_of(index * BANK_WIDTH);
                    let locked = self.locked.get(block).copied().unwrap_or(false);
                    u16::from(locked || self.read_only)
                }
                _ => 0,
            },
            Mode::Cfi => u16::from(self.cfi(index)),
            // Status (and the modes that wait for more writes) read the status.
            _ => self.status | sr::READY,
        }
    }

    /// The CFI query table of one device (of the whole window).
    fn cfi(&self, index: u64) -> u8 {
        let per_device_size = self.window / DEVICES;
        let blocks = self.window / self.block_size - 1;
        let per_device_block = self.block_size / DEVICES / 256;
        match index {
            0x10 => b'Q',
            0x11 => b'R',
            0x12 => b'Y',
            0x13 => 0x01, // primary command set: Intel/Sharp extended
            0x15 => 0x31, // primary extended table address
            0x1b => 0x45, // Vcc min 4.5 V
            0x1c => 0x55, // Vcc max 5.5 V
            0x1f => 0x07, // typical word program 2^7 us
            0x20 => 0x07, // typical buffer program 2^7 us
            0x21 => 0x0a, // typical block erase 2^10 ms
            0x23..=0x25 => 0x04,
            0x27 => per_device_size.trailing_zeros() as u8,
            0x28 => 0x01, // x16 interface
            0x2a => DEVICE_BUFFER.trailing_zeros() as u8,
            0x2c => 1, // one erase block region
            0x2d => blocks as u8,
            0x2e => (blocks >> 8) as u8,
            0x2f => per_device_block as u8,
            0x30 => (per_device_block >> 8) as u8,
            0x31 => b'P',
            0x32 => b'R',
            0x33 => b'I',
            0x34 => b'1',
            0x35 => b'0',
            _ => 0,
        }
    }
}

impl<S: FlashStore> MmioDevice for CfiFlash<S> {
    fn read(
        &mut self,
        _ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        let n = size.bytes();
        let end = offset.checked_add(n).filter(|&e| e <= self.window);
        if end.is_none() || !offset.is_multiple_of(n) {
            return Err(MmioError::NoRegister { offset });
        }
        let mut b = [0u8; 8];
        if self.mode == Mode::ReadArray {
            // Beyond the image the window is erased flash.
            for (i, byte) in b[..n as usize].iter_mut().enumerate() {
                let a = offset as usize + i;
                *byte = self.image.get(a).copied().unwrap_or(0xff);
            }
        } else {
            for (i, byte) in b[..n as usize].iter_mut().enumerate() {
                let a = offset + i as u64;
                let v = self.device_value(a / BANK_WIDTH);
                *byte = v.to_le_bytes()[(a % DEVICE_WIDTH) as usize];
            }
        }
        Ok(u64::from_le_bytes(b))
    }

    fn write(
        &mut self,
        _ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        let n = size.bytes();
        if size == AccessSize::Double {
            return Err(MmioError::UnsupportedSize { offset, size });
        }
        let end = offset.checked_add(n).filter(|&e| e <= self.window);
        if end.is_none() || !offset.is_multiple_of(n) {
            return Err(MmioError::NoRegister { offset });
        }
        self.write_bank(offset, size, value);
        Ok(())
    }

    fn reset(&mut self, _irq: &mut dyn InterruptSink) {
        // A reset is a commit point: what the firmware wrote survives it.
        self.enter_read_array();
        self.status = sr::READY;
        self.locked.fill(false);
    }
}

/// Saved mode tags.
mod tag {
    pub const READ_ARRAY: u8 = 0;
    pub const STATUS: u8 = 1;
    pub const ID: u8 = 2;
    pub const CFI: u8 = 3;
    pub const WORD_PROGRAM: u8 = 4;
    pub const ERASE_SETUP: u8 = 5;
    pub const LOCK_SETUP: u8 = 6;
    pub const BUFFER_COUNT: u8 = 7;
    pub const BUFFER_DATA: u8 = 8;
    pub const BUFFER_CONFIRM: u8 = 9;
}

/// The command state of a bank and (version 2, a writable bank) its image, so
/// a rollback to a snapshot puts back the variable store the guest's RAM
/// remembers. A restored image marks the granules it changed dirty: they reach
/// the [`FlashStore`] at the next commit point or [`CfiFlash::flush`]. Version 1
/// blobs (command state only) still restore and keep the image as it is (then
/// call [`CfiFlash::flush`] before saving, so the store holds it).
impl<S: FlashStore> SaveRestore for CfiFlash<S> {
    const SAVE_ID: [u8; 4] = *b"PFL1";
    const SAVE_VERSION: u32 = 2;

    fn save(&self) -> Vec<u8> {
        let CfiFlash {
            image,
            // From the bank's definition.
            window: _,
            block_size: _,
            read_only,
            mode,
            status,
            locked,
            dirty: _,
            store: _,
        } = self;
        let mut w = Writer::new(Self::SAVE_ID, Self::SAVE_VERSION);
        w.u16(*status);
        let locks: Vec<u8> = locked.iter().map(|&l| u8::from(l)).collect();
        w.bytes(&locks);
        let (t, block, remaining, data): (u8, usize, u32, &[(u64, u32)]) = match mode {
            Mode::ReadArray => (tag::READ_ARRAY, 0, 0, &[]),
            Mode::Status => (tag::STATUS, 0, 0, &[]),
            Mode::Id => (tag::ID, 0, 0, &[]),
            Mode::Cfi => (tag::CFI, 0, 0, &[]),
            Mode::WordProgram => (tag::WORD_PROGRAM, 0, 0, &[]),
            Mode::EraseSetup { block } => (tag::ERASE_SETUP, *block, 0, &[]),
            Mode::LockSetup { block } => (tag::LOCK_SETUP, *block, 0, &[]),
            Mode::BufferCount { block } => (tag::BUFFER_COUNT, *block, 0, &[]),
            Mode::BufferData {
                block,
                remaining,
                data,
            } => (tag::BUFFER_DATA, *block, *remaining, data),
            Mode::BufferConfirm { block, data } => (tag::BUFFER_CONFIRM, *block, 0, data),
        };
        w.u8(t)
            .u32(block as u32)
            .u32(remaining)
            .u32(data.len() as u32);
        for &(o, v) in data {
            w.u64(o).u32(v);
        }
        // The code bank's image is the firmware, which no guest can change.
        if !*read_only {
            w.bytes(image);
        }
        w.finish()
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let (version, mut r) = Reader::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
        let status = r.u16()?;
        let locks = r.bytes(self.locked.len())?;
        if locks.len() != self.locked.len() || locks.iter().any(|&l| l > 1) {
            return Err(RestoreError::Malformed);
        }
        let t = r.u8()?;
        let block = r.u32()? as usize;
        let remaining = r.u32()?;
        let n = r.u32()? as u64;
        let max_words = BANK_BUFFER / BANK_WIDTH;
        let window_blocks = (self.window / self.block_size) as usize;
        if block >= window_blocks || n > max_words || u64::from(remaining) + n > max_words {
            return Err(RestoreError::Malformed);
        }
        let mut data = Vec::new();
        for _ in 0..n {
            let (o, v) = (r.u64()?, r.u32()?);
            let in_block = self.block_of(o) == block && o.is_multiple_of(BANK_WIDTH);
            let same = data
                .first()
                .is_none_or(|&(f, _): &(u64, u32)| f / BANK_BUFFER == o / BANK_BUFFER);
            if o >= self.window || !in_block || !same {
                return Err(RestoreError::Malformed);
            }
            data.push((o, v));
        }
        let image = if version >= 2 && !self.read_only {
            let image = r.bytes(self.image.len())?;
            if image.len() != self.image.len() {
                return Err(RestoreError::Malformed);
            }
            Some(image)
        } else {
            None
        };
        r.end()?;
        let no_data = n == 0 && remaining == 0 && block == 0;
        let mode = match t {
            tag::READ_ARRAY if no_data => Mode::ReadArray,
            tag::STATUS if no_data => Mode::Status,
            tag::ID if no_data => Mode::Id,
            tag::CFI if no_data => Mode::Cfi,
            tag::WORD_PROGRAM if no_data => Mode::WordProgram,
            tag::ERASE_SETUP if n == 0 && remaining == 0 => Mode::EraseSetup { block },
            tag::LOCK_SETUP if n == 0 && remaining == 0 => Mode::LockSetup { block },
            tag::BUFFER_COUNT if n == 0 && remaining == 0 => Mode::BufferCount { block },
            tag::BUFFER_DATA if remaining > 0 => Mode::BufferData {
                block,
                remaining,
                data,
            },
            tag::BUFFER_CONFIRM if remaining == 0 && n > 0 => Mode::BufferConfirm { block, data },
            _ => return Err(RestoreError::Malformed),
        };
        if status & !(sr::READY | sr::ERRORS) != 0 {
            return Err(RestoreError::Malformed);
        }
        self.status = status;
        for (l, &v) in self.locked.iter_mut().zip(locks) {
            *l = v == 1;
        }
        self.mode = mode;
        if let Some(image) = image {
            for (g, (new, old)) in image
                .chunks(DIRTY_GRANULE)
                .zip(self.image.chunks(DIRTY_GRANULE))
                .enumerate()
            {
                if new != old {
                    self.dirty[g] = true;
                }
            }
            self.image.copy_from_slice(image);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
