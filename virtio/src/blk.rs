//! virtio-blk (virtio 1.2 §5.2): one request queue over a [`vdev::BlockBackend`].
//! Requests: IN, OUT, FLUSH, GET_ID and WRITE_ZEROES; anything else is answered
//! VIRTIO_BLK_S_UNSUPP. Read-only backends advertise VIRTIO_BLK_F_RO and fail writes
//! with VIRTIO_BLK_S_IOERR, as do out-of-range sectors and backend failures. Data
//! moves through a fixed bounce buffer, never one sized by the guest.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use vdev::{BlockBackend, BlockError, GuestMemory, MemError, SECTOR_SIZE};

use crate::chain::{tail_segments, ChainReader, ChainWriter, DescChain};
use crate::defs::{blk, device_id, limits};
use crate::device::{
    put_u16, put_u32, put_u64, read_config_bytes, DeviceError, QueueContext, RequestError,
    VirtioDevice,
};

/// Largest segment the driver may use (`size_max`).
pub const SIZE_MAX: u32 = 512 << 10;
/// Most data segments in one request (`seg_max`). With [`SIZE_MAX`] this keeps every
/// conforming request below [`limits::MAX_CHAIN_BYTES`].
pub const SEG_MAX: u32 = 126;
/// Most sectors one WRITE_ZEROES segment may cover (`max_write_zeroes_sectors`).
pub const MAX_WRITE_ZEROES_SECTORS: u32 = 1 << 16;
/// Most segments in one WRITE_ZEROES request (`max_write_zeroes_seg`).
pub const MAX_WRITE_ZEROES_SEG: u32 = 1;

/// A [`BlockBackend`] behind a box, for disks whose backend type is chosen at run
/// time: `Blk::new(DynBackend(Box::new(disk)))`.
pub struct DynBackend(pub Box<dyn BlockBackend + Send>);

impl BlockBackend for DynBackend {
    fn capacity(&self) -> u64 {
        self.0.capacity()
    }
    fn read_only(&self) -> bool {
        self.0.read_only()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.0.read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        self.0.write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        self.0.flush()
    }
}

/// A virtio block device over backend `B`.
pub struct Blk<B: BlockBackend + Send> {
    backend: B,
    serial: [u8; blk::ID_BYTES],
    queue_sizes: [u16; 1],
    chunk: Vec<u8>,
}

impl<B: BlockBackend + Send> Blk<B> {
    /// A disk over `backend` with an empty serial number.
    pub fn new(backend: B) -> Self {
        Self {
            backend,
            serial: [0; blk::ID_BYTES],
            queue_sizes: [limits::DEFAULT_QUEUE_SIZE],
            chunk: vec![0; limits::BLK_CHUNK_BYTES],
        }
    }

    /// Sets the size of the buffer data moves through between guest memory and the
    /// backend (the largest single backend operation).
    pub fn with_chunk_size(mut self, bytes: usize) -> Self {
        self.chunk = vec![0; bytes.max(vdev::SECTOR_SIZE as usize)];
        self
    }

    /// Sets the serial number GET_ID returns (truncated to 20 bytes).
    pub fn with_serial(mut self, serial: &[u8]) -> Self {
        self.serial = [0; blk::ID_BYTES];
        let n = serial.len().min(blk::ID_BYTES);
        self.serial[..n].copy_from_slice(&serial[..n]);
        self
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, mutably.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    fn read_only(&self) -> bool {
        self.backend.read_only()
    }

    /// Byte offset of `sector`, if `[sector, sector + len)` lies inside the disk.
    fn range(&self, sector: u64, len: u64) -> Option<u64> {
        let off = sector.checked_mul(SECTOR_SIZE)?;
        let end = off.checked_add(len)?;
        (end <= self.backend.capacity()).then_some(off)
    }

    /// Handles one request chain; returns the used length.
    fn handle(&mut self, mem: &mut dyn GuestMemory, chain: &DescChain) -> Result<u32, DeviceError> {
        let mut reader = chain.reader();
        let mut hdr = [0u8; blk::REQ_HEADER_SIZE];
        if !reader.read_exact(mem, &mut hdr)? {
            return Err(RequestError::MissingHeader.into());
        }
        let mut writer = chain.writer();
        let status_at = tail_segments(&chain.writable, 1).ok_or(RequestError::MissingStatus)?;
        writer.reserve_tail(1);
        let kind = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let sector = u64::from_le_bytes([
            hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
        ]);
        let status = match kind {
            blk::T_IN => self.read(mem, sector, &mut writer)?,
            blk::T_OUT => self.write(mem, sector, &mut reader)?,
            blk::T_FLUSH => match self.backend.flush() {
                Ok(()) => blk::S_OK,
                Err(e) => {
                    log::warn!("virtio-blk: flush failed: {e:?}");
                    blk::S_IOERR
                }
            },
            blk::T_GET_ID => {
                let serial = self.serial;
                writer.write(mem, &serial)?;
                blk::S_OK
            }
            blk::T_WRITE_ZEROES => self.write_zeroes(mem, &mut reader)?,
            other => {
                log::debug!("virtio-blk: unsupported request type {other}");
                blk::S_UNSUPP
            }
        };
        mem.write(status_at[0].addr, &[status])?;
        // `written` is bounded by MAX_CHAIN_BYTES, far below u32::MAX.
        Ok(writer.written() as u32 + 1)
    }

    fn read(
        &mut self,
        mem: &mut dyn GuestMemory,
        sector: u64,
        w: &mut ChainWriter,
    ) -> Result<u8, MemError> {
        let len = w.remaining();
        if !len.is_multiple_of(SECTOR_SIZE) {
            log::warn!("virtio-blk: read of {len} bytes is not whole sectors");
            return Ok(blk::S_IOERR);
        }
        let Some(mut off) = self.range(sector, len) else {
            log::warn!("virtio-blk: read of {len} bytes at sector {sector} beyond the disk");
            return Ok(blk::S_IOERR);
        };
        let mut left = len;
        while left > 0 {
            let n = left.min(self.chunk.len() as u64) as usize;
            if let Err(e) = self.backend.read_at(off, &mut self.chunk[..n]) {
                log::warn!("virtio-blk: backend read at {off:#x} failed: {e:?}");
                return Ok(blk::S_IOERR);
            }
            w.write(mem, &self.chunk[..n])?;
            off += n as u64;
            left -= n as u64;
        }
        Ok(blk::S_OK)
    }

    fn write(
        &mut self,
        mem: &mut dyn GuestMemory,
        sector: u64,
        r: &mut ChainReader,
    ) -> Result<u8, MemError> {
        if self.read_only() {
            log::warn!("virtio-blk: write to read-only disk refused");
            return Ok(blk::S_IOERR);
        }
        let len = r.remaining();
        if !len.is_multiple_of(SECTOR_SIZE) {
            log::warn!("virtio-blk: write of {len} bytes is not whole sectors");
            return Ok(blk::S_IOERR);
        }
        let Some(mut off) = self.range(sector, len) else {
            log::warn!("virtio-blk: write of {len} bytes at sector {sector} beyond the disk");
            return Ok(blk::S_IOERR);
        };
        loop {
            let n = r.read(mem, &mut self.chunk)?;
            if n == 0 {
                return Ok(blk::S_OK);
            }
            if let Err(e) = self.backend.write_at(off, &self.chunk[..n]) {
                log::warn!("virtio-blk: backend write at {off:#x} failed: {e:?}");
                return Ok(blk::S_IOERR);
            }
            off += n as u64;
        }
    }

    fn write_zeroes(
        &mut self,
        mem: &mut dyn GuestMemory,
        r: &mut ChainReader,
    ) -> Result<u8, MemError> {
        if self.read_only() {
            log::warn!("virtio-blk: write-zeroes to read-only disk refused");
            return Ok(blk::S_IOERR);
        }
        let len = r.remaining();
        let segs = len / blk::WZ_SEGMENT_SIZE as u64;
        if !len.is_multiple_of(blk::WZ_SEGMENT_SIZE as u64)
            || segs == 0
            || segs > u64::from(MAX_WRITE_ZEROES_SEG)
        {
            log::warn!("virtio-blk: write-zeroes with {len} bytes of segments");
            return Ok(blk::S_IOERR);
        }
        let mut seg = [0u8; blk::WZ_SEGMENT_SIZE];
        // Validate every segment before touching the disk.
        let mut ranges = [(0u64, 0u64); MAX_WRITE_ZEROES_SEG as usize];
        for slot in ranges.iter_mut().take(segs as usize) {
            r.read_exact(mem, &mut seg)?;
            let sector = u64::from_le_bytes([
                seg[0], seg[1], seg[2], seg[3], seg[4], seg[5], seg[6], seg[7],
            ]);
            let count = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
            let flags = u32::from_le_bytes([seg[12], seg[13], seg[14], seg[15]]);
            if flags & !blk::WZ_F_UNMAP != 0 {
                return Ok(blk::S_UNSUPP);
            }
            let bytes = u64::from(count) * SECTOR_SIZE;
            let off = match self.range(sector, bytes) {
                Some(off) if count <= MAX_WRITE_ZEROES_SECTORS => off,
                _ => {
                    log::warn!("virtio-blk: write-zeroes of {count} sectors at {sector} refused");
                    return Ok(blk::S_IOERR);
                }
            };
            *slot = (off, bytes);
        }
        self.chunk.fill(0);
        for &(mut off, mut left) in ranges.iter().take(segs as usize) {
            while left > 0 {
                let n = left.min(self.chunk.len() as u64) as usize;
                if let Err(e) = self.backend.write_at(off, &self.chunk[..n]) {
                    log::warn!("virtio-blk: backend write-zeroes at {off:#x} failed: {e:?}");
                    return Ok(blk::S_IOERR);
                }
                off += n as u64;
                left -= n as u64;
            }
        }
        Ok(blk::S_OK)
    }

    fn config(&self) -> [u8; blk::CFG_SIZE] {
        let mut c = [0u8; blk::CFG_SIZE];
        put_u64(
            &mut c,
            blk::CFG_CAPACITY,
            self.backend.capacity() / SECTOR_SIZE,
        );
        put_u32(&mut c, blk::CFG_SIZE_MAX, SIZE_MAX);
        let seg_max = SEG_MAX
            .min(u32::from(self.queue_sizes[0]).saturating_sub(2))
            .max(1);
        put_u32(&mut c, blk::CFG_SEG_MAX, seg_max);
        put_u32(&mut c, blk::CFG_BLK_SIZE, SECTOR_SIZE as u32);
        put_u16(&mut c, blk::CFG_NUM_QUEUES, 1);
        put_u32(
            &mut c,
            blk::CFG_MAX_WRITE_ZEROES_SECTORS,
            MAX_WRITE_ZEROES_SECTORS,
        );
        put_u32(&mut c, blk::CFG_MAX_WRITE_ZEROES_SEG, MAX_WRITE_ZEROES_SEG);
        c[blk::CFG_WRITE_ZEROES_MAY_UNMAP] = 0;
        c
    }
}

impl<B: BlockBackend + Send> VirtioDevice for Blk<B> {
    fn device_id(&self) -> u32 {
        device_id::BLOCK
    }

    fn features(&self) -> u64 {
        let common = blk::F_SIZE_MAX | blk::F_SEG_MAX | blk::F_BLK_SIZE | blk::F_FLUSH;
        if self.read_only() {
            common | blk::F_RO
        } else {
            common | blk::F_WRITE_ZEROES
        }
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        read_config_bytes(&self.config(), offset, data);
    }

    fn process(&mut self, queue: u16, qc: &mut QueueContext) -> Result<(), DeviceError> {
        while let Some(chain) = qc.pop(queue)? {
            let len = self.handle(qc.mem(), &chain)?;
            qc.push_used(queue, chain.head, len)?;
        }
        Ok(())
    }

    fn reset(&mut self) {}

    /// A disk has no device state of its own: its contents are the backend's, kept
    /// by the backend's owner.
    fn save_state(&self) -> Vec<u8> {
        let Self {
            // Storage and configuration, not device state.
            backend: _,
            serial: _,
            queue_sizes: _,
            // Scratch buffer, empty between requests.
            chunk: _,
        } = self;
        Vec::new()
    }

    fn restore_state(&mut self, blob: &[u8]) -> Result<(), vdev::RestoreError> {
        crate::device::restore_no_state(blob)
    }
}

#[cfg(test)]
#[path = "blk_tests.rs"]
mod tests;
