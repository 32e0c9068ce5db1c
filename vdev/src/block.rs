//! Storage as block devices see it.

/// Why a block backend refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockError {
    /// The range lies (partly) beyond the end of the backend.
    OutOfRange,
    /// A write or discard to a read-only backend.
    ReadOnly,
    /// The underlying storage failed.
    Io,
}

/// The sector size block device models address storage in.
pub const SECTOR_SIZE: u64 = 512;

/// Byte-addressed storage behind a virtual disk. Offsets and lengths are multiples of
/// [`SECTOR_SIZE`] when they come from a block device model.
pub trait BlockBackend {
    /// Size of the backend in bytes.
    fn capacity(&self) -> u64;
    /// Whether writes are refused.
    fn read_only(&self) -> bool;
    /// Reads `buf.len()` bytes at byte `offset`.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError>;
    /// Writes `data` at byte `offset`.
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), BlockError>;
    /// Makes `len` bytes at byte `offset` read as zeros (not flushed). The default
    /// writes zeros ([`write_zeroes_by_writing`]); a backend that can deallocate
    /// instead (a sparse host file) overrides it, so zeroing a large extent costs
    /// neither the writes nor the host space.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        write_zeroes_by_writing(self, offset, len)
    }
}

/// Chunk [`write_zeroes_by_writing`] writes at a time.
const ZERO_CHUNK: usize = 64 * 1024;

/// [`BlockBackend::write_zeroes`] by writing zero-filled chunks.
pub fn write_zeroes_by_writing<B: BlockBackend + ?Sized>(
    disk: &mut B,
    offset: u64,
    len: u64,
) -> Result<(), BlockError> {
    let end = offset.checked_add(len).ok_or(BlockError::OutOfRange)?;
    if end > disk.capacity() {
        return Err(BlockError::OutOfRange);
    }
    let zeros = alloc::vec![0u8; (len.min(ZERO_CHUNK as u64)) as usize];
    let mut at = offset;
    while at < end {
        let n = (end - at).min(zeros.len() as u64) as usize;
        disk.write_at(at, &zeros[..n])?;
        at += n as u64;
    }
    Ok(())
}

impl<T: BlockBackend + ?Sized> BlockBackend for alloc::boxed::Box<T> {
    fn capacity(&self) -> u64 {
        (**self).capacity()
    }
    fn read_only(&self) -> bool {
        (**self).read_only()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        (**self).write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        (**self).flush()
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        (**self).write_zeroes(offset, len)
    }
}

impl<T: BlockBackend + ?Sized> BlockBackend for &mut T {
    fn capacity(&self) -> u64 {
        (**self).capacity()
    }
    fn read_only(&self) -> bool {
        (**self).read_only()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        (**self).read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        (**self).write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        (**self).flush()
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        (**self).write_zeroes(offset, len)
    }
}

/// A block backend shared by several users (the registry and the guest disks that
/// are extents of the same system disk); each call takes the lock.
pub struct SharedBlock<B: ?Sized>(pub alloc::sync::Arc<spin::Mutex<B>>);

impl<B: ?Sized> Clone for SharedBlock<B> {
    fn clone(&self) -> Self {
        SharedBlock(self.0.clone())
    }
}

impl<B: BlockBackend + ?Sized> BlockBackend for SharedBlock<B> {
    fn capacity(&self) -> u64 {
        self.0.lock().capacity()
    }
    fn read_only(&self) -> bool {
        self.0.lock().read_only()
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
        self.0.lock().read_at(offset, buf)
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
        self.0.lock().write_at(offset, data)
    }
    fn flush(&mut self) -> Result<(), BlockError> {
        self.0.lock().flush()
    }
    fn write_zeroes(&mut self, offset: u64, len: u64) -> Result<(), BlockError> {
        self.0.lock().write_zeroes(offset, len)
    }
}

/// What an asynchronous block request does. The data buffer travels with the
/// request: its length is the transfer length (empty for a flush).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockOp {
    /// Fill the buffer from byte `offset`.
    Read { offset: u64 },
    /// Store the buffer at byte `offset`.
    Write { offset: u64 },
    /// Make every write completed before this request durable.
    Flush,
}

/// A finished asynchronous request: its tag, its outcome, and the buffer it took
/// (for a read, holding the data).
#[derive(Debug)]
pub struct Completion {
    pub tag: u64,
    pub result: Result<(), BlockError>,
    pub buf: alloc::vec::Vec<u8>,
}

/// What [`AsyncBlock::submit`] did with a request.
#[derive(Debug)]
pub enum Submit {
    /// Done already (a synchronous backend, or a request refused up front).
    Done(Completion),
    /// Started: its [`Completion`] comes from [`AsyncBlock::poll`] later.
    Queued,
    /// The backend cannot take more requests now; the buffer is handed back and the
    /// request should be submitted again after one of the caller's requests completes.
    Busy(alloc::vec::Vec<u8>),
}

/// One contiguous run of guest RAM a host device reads or writes directly: its
/// [`crate::GuestMemory::dma_address`] and length in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaSegment {
    pub addr: u64,
    pub len: u32,
}

/// What one [`AsyncBlock::submit_dma`] operation may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaLimits {
    /// Most segments.
    pub max_segments: usize,
    /// Most bytes in one segment (longer runs are split into several).
    pub max_segment_bytes: u32,
    /// Most bytes in all (a multiple of [`SECTOR_SIZE`]).
    pub max_bytes: usize,
}

/// Storage behind a virtual disk that completes requests asynchronously: the device
/// model submits a request with a buffer it owns and gets both back later, so a slow
/// disk never holds the guest's vCPU. Offsets and lengths are multiples of
/// [`SECTOR_SIZE`].
pub trait AsyncBlock {
    /// Size of the backend in bytes.
    fn capacity(&self) -> u64;
    /// Whether writes are refused.
    fn read_only(&self) -> bool;
    /// The longest transfer one request may carry.
    fn max_transfer(&self) -> usize {
        usize::MAX
    }
    /// Starts `op` with `buf` (moved to the backend until the request completes),
    /// identified by `tag` in its completion.
    fn submit(&mut self, tag: u64, op: BlockOp, buf: alloc::vec::Vec<u8>) -> Submit;
    /// The next finished request, if any.
    fn poll(&mut self) -> Option<Completion>;
    /// Whether [`Self::poll`] has a completion to return.
    fn has_completions(&self) -> bool;
    /// Raise `signal` whenever a completion becomes ready (the backend completes
    /// requests outside any call into it, e.g. on an interrupt).
    fn set_waker(&mut self, _signal: crate::WorkSignal) {}
    /// Whether (and with what limits) [`Self::submit_dma`] moves data straight
    /// between the disk and guest RAM; `None`: only buffered [`Self::submit`].
    fn dma_limits(&self) -> Option<DmaLimits> {
        None
    }
    /// Starts a read or write whose data is the guest RAM `segs` (in order, their
    /// lengths summing to a multiple of [`SECTOR_SIZE`]), which the backend's device
    /// reads or writes directly until the request completes. The completion's buffer
    /// is empty; `Busy` hands back an empty buffer. A backend without DMA refuses it.
    fn submit_dma(&mut self, tag: u64, op: BlockOp, segs: &[DmaSegment]) -> Submit {
        let _ = (op, segs);
        Submit::Done(Completion {
            tag,
            result: Err(BlockError::Io),
            buf: alloc::vec::Vec::new(),
        })
    }
    /// Returns once no operation started with [`Self::submit_dma`] can still touch
    /// guest RAM (their completions may still be waiting for [`Self::poll`]): a device
    /// reset calls it before the guest, or the hypervisor, reuses that memory.
    fn quiesce(&mut self) {}
}

impl<T: AsyncBlock + ?Sized> AsyncBlock for alloc::boxed::Box<T> {
    fn capacity(&self) -> u64 {
        (**self).capacity()
    }
    fn read_only(&self) -> bool {
        (**self).read_only()
    }
    fn max_transfer(&self) -> usize {
        (**self).max_transfer()
    }
    fn submit(&mut self, tag: u64, op: BlockOp, buf: alloc::vec::Vec<u8>) -> Submit {
        (**self).submit(tag, op, buf)
    }
    fn poll(&mut self) -> Option<Completion> {
        (**self).poll()
    }
    fn has_completions(&self) -> bool {
        (**self).has_completions()
    }
    fn set_waker(&mut self, signal: crate::WorkSignal) {
        (**self).set_waker(signal)
    }
    fn dma_limits(&self) -> Option<DmaLimits> {
        (**self).dma_limits()
    }
    fn submit_dma(&mut self, tag: u64, op: BlockOp, segs: &[DmaSegment]) -> Submit {
        (**self).submit_dma(tag, op, segs)
    }
    fn quiesce(&mut self) {
        (**self).quiesce()
    }
}

/// A synchronous [`BlockBackend`] seen as an [`AsyncBlock`]: every request completes
/// inside [`AsyncBlock::submit`] (RAM disks, tests).
pub struct SyncBlock<B>(pub B);

impl<B: BlockBackend> AsyncBlock for SyncBlock<B> {
    fn capacity(&self) -> u64 {
        self.0.capacity()
    }
    fn read_only(&self) -> bool {
        self.0.read_only()
    }
    fn submit(&mut self, tag: u64, op: BlockOp, mut buf: alloc::vec::Vec<u8>) -> Submit {
        let result = match op {
            BlockOp::Read { offset } => self.0.read_at(offset, &mut buf),
            BlockOp::Write { offset } => self.0.write_at(offset, &buf),
            BlockOp::Flush => self.0.flush(),
        };
        Submit::Done(Completion { tag, result, buf })
    }
    fn poll(&mut self) -> Option<Completion> {
        None
    }
    fn has_completions(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ram(alloc::vec::Vec<u8>, u32);
    impl BlockBackend for Ram {
        fn capacity(&self) -> u64 {
            self.0.len() as u64
        }
        fn read_only(&self) -> bool {
            false
        }
        fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), BlockError> {
            let o = offset as usize;
            let src = self.0.get(o..o + buf.len()).ok_or(BlockError::OutOfRange)?;
            buf.copy_from_slice(src);
            Ok(())
        }
        fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), BlockError> {
            let o = offset as usize;
            let dst = self
                .0
                .get_mut(o..o + data.len())
                .ok_or(BlockError::OutOfRange)?;
            dst.copy_from_slice(data);
            Ok(())
        }
        fn flush(&mut self) -> Result<(), BlockError> {
            self.1 += 1;
            Ok(())
        }
    }

    #[test]
    fn write_zeroes_by_default_writes_zeros_in_chunks_and_refuses_past_the_end() {
        let mut d = Ram(alloc::vec![0xffu8; 3 * ZERO_CHUNK], 0);
        d.write_zeroes(10, 2 * ZERO_CHUNK as u64 + 5).unwrap();
        assert!(d.0[..10].iter().all(|&b| b == 0xff));
        assert!(d.0[10..2 * ZERO_CHUNK + 15].iter().all(|&b| b == 0));
        assert!(d.0[2 * ZERO_CHUNK + 15..].iter().all(|&b| b == 0xff));
        assert_eq!(
            d.write_zeroes(1, 3 * ZERO_CHUNK as u64),
            Err(BlockError::OutOfRange)
        );
        assert_eq!(d.write_zeroes(u64::MAX, 2), Err(BlockError::OutOfRange));
        assert!(d.0[2 * ZERO_CHUNK + 15..].iter().all(|&b| b == 0xff));
    }

    fn done(s: Submit) -> Completion {
        match s {
            Submit::Done(c) => c,
            other => panic!("a synchronous backend answered {other:?}"),
        }
    }

    #[test]
    fn sync_block_completes_inside_submit_and_returns_the_buffer() {
        let mut d = SyncBlock(Ram(alloc::vec![0; 2048], 0));
        let c = done(d.submit(7, BlockOp::Write { offset: 512 }, alloc::vec![5; 512]));
        assert_eq!((c.tag, c.result, c.buf.len()), (7, Ok(()), 512));
        let c = done(d.submit(8, BlockOp::Read { offset: 512 }, alloc::vec![0; 1024]));
        assert_eq!((c.tag, c.result), (8, Ok(())));
        assert_eq!(&c.buf[..512], &[5; 512][..]);
        assert_eq!(&c.buf[512..], &[0; 512][..]);
        let c = done(d.submit(9, BlockOp::Read { offset: 2048 }, alloc::vec![0; 512]));
        assert_eq!(c.result, Err(BlockError::OutOfRange));
        let c = done(d.submit(10, BlockOp::Flush, alloc::vec::Vec::new()));
        assert_eq!((c.result, d.0 .1), (Ok(()), 1));
        assert!(!d.has_completions() && d.poll().is_none());
    }
}
