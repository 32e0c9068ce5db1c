//! virtio-blk (virtio 1.2 §5.2): one request queue over a [`vdev::AsyncBlock`].
//! Requests: IN, OUT, FLUSH, GET_ID and WRITE_ZEROES; anything else is answered
//! VIRTIO_BLK_S_UNSUPP. Read-only backends advertise VIRTIO_BLK_F_RO and fail writes
//! with VIRTIO_BLK_S_IOERR, as do out-of-range sectors and backend failures.
//!
//! Requests are asynchronous: a notify validates each chain, starts its backend
//! operations and returns; the request completes (data copied in, status byte, used
//! ring, interrupt as EVENT_IDX allows) when the backend reports its last piece,
//! from [`VirtioDevice::poll`]. Data moves through bounce buffers the device owns
//! and lends to the backend (at most [`MAX_BUFFERS`] of the chunk size at a time),
//! never guest memory handed to the host's device, so a request the backend still
//! holds after a reset can never write guest RAM: its completion finds no request
//! and only returns the buffer. At most [`MAX_IN_FLIGHT`] requests are held; while
//! the table is full the rest wait in the ring. A FLUSH is started only once every
//! earlier request has completed, and later requests wait until it has.

use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use vdev::{
    AsyncBlock, BlockOp, Completion, DmaLimits, DmaSegment, GuestMemory, MemError, Submit,
    SECTOR_SIZE,
};

use crate::chain::{tail_segments, DescChain, Segment};
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
/// Most guest requests held between their notify and their completion.
pub const MAX_IN_FLIGHT: usize = 64;
/// Most bounce buffers (each of the chunk size) lent to the backend at once.
pub const MAX_BUFFERS: usize = 4;

/// A boxed [`AsyncBlock`], for disks whose backend type is chosen at run time.
pub type DynBackend = alloc::boxed::Box<dyn AsyncBlock + Send>;

/// What a held request does with its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    WriteZeroes,
    Flush,
}

/// A guest request between its notify and its completion.
struct Request {
    chain: DescChain,
    kind: Kind,
    /// Byte offset on the disk.
    offset: u64,
    /// Data bytes.
    len: u64,
    /// Bytes handed to the backend so far (a flush counts as done once submitted).
    submitted: u64,
    started: bool,
    /// Backend operations of this request not completed yet.
    outstanding: u32,
    status: u8,
    /// Data bytes written into the chain (reads).
    copied: u64,
    status_at: Segment,
    /// The data's guest RAM, when the backend moves it directly (no bounce buffer);
    /// empty otherwise.
    dma: Vec<DmaSegment>,
}

impl Request {
    fn unsubmitted(&self) -> bool {
        !self.started || self.submitted < self.len
    }
}

/// One backend operation: `len` bytes at byte `at` of request `head`'s data.
struct Piece {
    tag: u64,
    head: u16,
    at: u64,
    len: usize,
    /// Moved by the backend straight to or from guest RAM.
    dma: bool,
}

/// A virtio block device over backend `B`.
pub struct Blk<B: AsyncBlock + Send> {
    backend: B,
    serial: [u8; blk::ID_BYTES],
    queue_sizes: [u16; 1],
    chunk: usize,
    max_in_flight: usize,
    max_buffers: usize,
    /// Idle bounce buffers.
    pool: Vec<Vec<u8>>,
    /// Buffers the backend holds.
    lent: usize,
    /// Backend operations not completed yet (including ones a reset orphaned).
    ops: usize,
    /// Held requests, in arrival order.
    requests: VecDeque<Request>,
    /// Operations of held requests, by tag.
    pieces: Vec<Piece>,
    /// Completions a synchronous backend returned from `submit`, not applied yet.
    done: VecDeque<Completion>,
    next_tag: u64,
    /// Backend operations on guest RAM not completed yet (a reset waits for them).
    dma_ops: usize,
    /// Segment lists of finished requests, for reuse.
    dma_pool: Vec<Vec<DmaSegment>>,
    /// The segments of the operation being submitted.
    scratch: Vec<DmaSegment>,
}

/// How a chain was taken on.
enum Start {
    /// Answered at once: status and used length.
    Now(u8, u32),
    Held(Request),
}

impl<B: AsyncBlock + Send> Blk<B> {
    /// A disk over `backend` with an empty serial number.
    pub fn new(backend: B) -> Self {
        Self {
            backend,
            serial: [0; blk::ID_BYTES],
            queue_sizes: [limits::DEFAULT_QUEUE_SIZE],
            chunk: limits::BLK_CHUNK_BYTES,
            max_in_flight: MAX_IN_FLIGHT,
            max_buffers: MAX_BUFFERS,
            pool: Vec::new(),
            lent: 0,
            ops: 0,
            requests: VecDeque::new(),
            pieces: Vec::new(),
            done: VecDeque::new(),
            next_tag: 0,
            dma_ops: 0,
            dma_pool: Vec::new(),
            scratch: Vec::new(),
        }
    }

    /// Sets the size of the bounce buffers (the largest single backend operation).
    pub fn with_chunk_size(mut self, bytes: usize) -> Self {
        let sector = SECTOR_SIZE as usize;
        self.chunk = (bytes / sector).max(1) * sector;
        self.pool.clear();
        self
    }

    /// Sets how many requests are held at once and how many buffers may be lent to
    /// the backend at once (both at least 1).
    pub fn with_limits(mut self, in_flight: usize, buffers: usize) -> Self {
        self.max_in_flight = in_flight.max(1);
        self.max_buffers = buffers.max(1);
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

    /// Guest requests held (started, not completed).
    pub fn in_flight(&self) -> usize {
        self.requests.len()
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

    /// Takes chains, starts and completes requests until nothing moves.
    fn pump(&mut self, queue: u16, qc: &mut QueueContext) -> Result<(), DeviceError> {
        loop {
            let mut progress = self.drain(queue, qc)?;
            progress |= self.submit_ready(qc.mem())?;
            if self.requests.len() < self.max_in_flight {
                if let Some(chain) = qc.pop(queue)? {
                    if self.requests.iter().any(|r| r.chain.head == chain.head) {
                        log::warn!(
                            "virtio-blk: driver made descriptor {} available again while its request is in flight",
                            chain.head
                        );
                        return Err(RequestError::HeadInFlight.into());
                    }
                    match self.start(qc.mem(), chain.clone())? {
                        Start::Now(status, len) => {
                            let at = tail_segments(&chain.writable, 1)
                                .ok_or(RequestError::MissingStatus)?;
                            qc.mem().write(at[0].addr, &[status])?;
                            qc.push_used(queue, chain.head, len)?;
                        }
                        Start::Held(r) => self.requests.push_back(r),
                    }
                    progress = true;
                }
            }
            if !progress {
                return Ok(());
            }
        }
    }

    /// Validates one chain and either answers it or holds it as a request.
    fn start(&mut self, mem: &mut dyn GuestMemory, chain: DescChain) -> Result<Start, DeviceError> {
        let mut reader = chain.reader();
        let mut hdr = [0u8; blk::REQ_HEADER_SIZE];
        if !reader.read_exact(mem, &mut hdr)? {
            return Err(RequestError::MissingHeader.into());
        }
        let status_at = tail_segments(&chain.writable, 1).ok_or(RequestError::MissingStatus)?[0];
        let kind = u32::from_le_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]);
        let sector = u64::from_le_bytes([
            hdr[8], hdr[9], hdr[10], hdr[11], hdr[12], hdr[13], hdr[14], hdr[15],
        ]);
        let data_in = chain.writable_len() - 1;
        let data_out = reader.remaining();
        let (kind, offset, len) = match kind {
            blk::T_IN => match self.check("read", sector, data_in) {
                Ok(off) => (Kind::Read, off, data_in),
                Err(s) => return Ok(Start::Now(s, 1)),
            },
            blk::T_OUT => {
                if self.read_only() {
                    log::warn!("virtio-blk: write to read-only disk refused");
                    return Ok(Start::Now(blk::S_IOERR, 1));
                }
                match self.check("write", sector, data_out) {
                    Ok(off) => (Kind::Write, off, data_out),
                    Err(s) => return Ok(Start::Now(s, 1)),
                }
            }
            blk::T_FLUSH => (Kind::Flush, 0, 0),
            blk::T_GET_ID => {
                let mut writer = chain.writer();
                writer.reserve_tail(1);
                let serial = self.serial;
                writer.write(mem, &serial)?;
                // At most ID_BYTES were written.
                return Ok(Start::Now(blk::S_OK, writer.written() as u32 + 1));
            }
            blk::T_WRITE_ZEROES => match self.write_zeroes_range(mem, &mut reader)? {
                Ok((off, len)) => (Kind::WriteZeroes, off, len),
                Err(s) => return Ok(Start::Now(s, 1)),
            },
            other => {
                log::debug!("virtio-blk: unsupported request type {other}");
                return Ok(Start::Now(blk::S_UNSUPP, 1));
            }
        };
        if len == 0 && kind != Kind::Flush {
            return Ok(Start::Now(blk::S_OK, 1));
        }
        let dma = match kind {
            Kind::Read => self.dma_segments(mem, &chain.writable, 0, len)?,
            Kind::Write => {
                self.dma_segments(mem, &chain.readable, blk::REQ_HEADER_SIZE as u64, len)?
            }
            Kind::WriteZeroes | Kind::Flush => Vec::new(),
        };
        Ok(Start::Held(Request {
            chain,
            kind,
            offset,
            len,
            submitted: 0,
            started: false,
            outstanding: 0,
            status: blk::S_OK,
            copied: 0,
            status_at,
            dma,
        }))
    }

    /// The `len` data bytes `skip` bytes into `segs` as guest RAM the backend can
    /// reach directly, or an empty list when the backend or the memory cannot (the
    /// data then goes through bounce buffers). Every byte is checked to be guest RAM.
    fn dma_segments(
        &mut self,
        mem: &mut dyn GuestMemory,
        segs: &[Segment],
        mut skip: u64,
        mut left: u64,
    ) -> Result<Vec<DmaSegment>, MemError> {
        let mut out = self.dma_pool.pop().unwrap_or_default();
        out.clear();
        if self.backend.dma_limits().is_none() {
            return Ok(out);
        }
        for s in segs {
            if left == 0 {
                break;
            }
            let seg_len = u64::from(s.len);
            if skip >= seg_len {
                skip -= seg_len;
                continue;
            }
            let n = (seg_len - skip).min(left);
            // `n` is at most a descriptor's u32 length.
            match mem.dma_address(s.addr + skip, n as usize) {
                Ok(Some(addr)) => out.push(DmaSegment {
                    addr,
                    len: n as u32,
                }),
                Ok(None) => {
                    out.clear();
                    return Ok(out);
                }
                Err(e) => {
                    self.recycle(out);
                    return Err(e);
                }
            }
            left -= n;
            skip = 0;
        }
        Ok(out)
    }

    /// Keeps a finished request's segment list for the next one.
    fn recycle(&mut self, mut segs: Vec<DmaSegment>) {
        if segs.capacity() > 0 && self.dma_pool.len() < self.max_in_flight {
            segs.clear();
            self.dma_pool.push(segs);
        }
    }

    /// The byte offset of a `len`-byte transfer at `sector`, or the status refusing it.
    fn check(&self, op: &str, sector: u64, len: u64) -> Result<u64, u8> {
        if !len.is_multiple_of(SECTOR_SIZE) {
            log::warn!("virtio-blk: {op} of {len} bytes is not whole sectors");
            return Err(blk::S_IOERR);
        }
        self.range(sector, len).ok_or_else(|| {
            log::warn!("virtio-blk: {op} of {len} bytes at sector {sector} beyond the disk");
            blk::S_IOERR
        })
    }

    /// Validates a WRITE_ZEROES request's segment: `(offset, bytes)` or a status.
    fn write_zeroes_range(
        &self,
        mem: &mut dyn GuestMemory,
        r: &mut crate::chain::ChainReader,
    ) -> Result<Result<(u64, u64), u8>, MemError> {
        if self.read_only() {
            log::warn!("virtio-blk: write-zeroes to read-only disk refused");
            return Ok(Err(blk::S_IOERR));
        }
        let len = r.remaining();
        if len != blk::WZ_SEGMENT_SIZE as u64 * u64::from(MAX_WRITE_ZEROES_SEG) {
            log::warn!("virtio-blk: write-zeroes with {len} bytes of segments");
            return Ok(Err(blk::S_IOERR));
        }
        let mut seg = [0u8; blk::WZ_SEGMENT_SIZE];
        r.read_exact(mem, &mut seg)?;
        let sector = u64::from_le_bytes([
            seg[0], seg[1], seg[2], seg[3], seg[4], seg[5], seg[6], seg[7],
        ]);
        let count = u32::from_le_bytes([seg[8], seg[9], seg[10], seg[11]]);
        let flags = u32::from_le_bytes([seg[12], seg[13], seg[14], seg[15]]);
        if flags & !blk::WZ_F_UNMAP != 0 {
            return Ok(Err(blk::S_UNSUPP));
        }
        let bytes = u64::from(count) * SECTOR_SIZE;
        match self.range(sector, bytes) {
            Some(off) if count <= MAX_WRITE_ZEROES_SECTORS => Ok(Ok((off, bytes))),
            _ => {
                log::warn!("virtio-blk: write-zeroes of {count} sectors at {sector} refused");
                Ok(Err(blk::S_IOERR))
            }
        }
    }

    /// Hands the backend what held requests may start now, in order: a FLUSH only
    /// once it is the oldest request, and nothing after a FLUSH until it completes.
    /// Returns whether anything was submitted.
    fn submit_ready(&mut self, mem: &mut dyn GuestMemory) -> Result<bool, MemError> {
        let sector = SECTOR_SIZE as usize;
        let piece_max = (self.chunk.min(self.backend.max_transfer()) / sector).max(1) * sector;
        let mut progress = false;
        let mut i = 0;
        while i < self.requests.len() {
            let r = &self.requests[i];
            if r.kind == Kind::Flush {
                if i != 0 {
                    return Ok(progress);
                }
                if !r.started {
                    let tag = self.tag(r.chain.head, 0, 0, false);
                    self.requests[i].started = true;
                    self.requests[i].outstanding += 1;
                    self.ops += 1;
                    match self.backend.submit(tag, BlockOp::Flush, Vec::new()) {
                        Submit::Queued => {}
                        Submit::Done(c) => self.done.push_back(c),
                        Submit::Busy(_) => {
                            self.requests[i].started = false;
                            self.requests[i].outstanding -= 1;
                            self.ops -= 1;
                            self.pieces.pop();
                            return Ok(progress);
                        }
                    }
                    progress = true;
                }
                return Ok(progress); // later requests wait for the flush
            }
            while self.requests[i].unsubmitted() && !self.requests[i].dma.is_empty() {
                let Some(lim) = self.backend.dma_limits() else {
                    let dma = core::mem::take(&mut self.requests[i].dma);
                    self.recycle(dma);
                    break;
                };
                let r = &self.requests[i];
                let n = dma_piece(&r.dma, r.submitted, &lim, &mut self.scratch);
                if n == 0 {
                    // Limits no split of these segments satisfies: bounce instead.
                    let dma = core::mem::take(&mut self.requests[i].dma);
                    self.recycle(dma);
                    break;
                }
                let (head, at, kind, offset) = (r.chain.head, r.submitted, r.kind, r.offset);
                let op = if kind == Kind::Read {
                    BlockOp::Read {
                        offset: offset + at,
                    }
                } else {
                    BlockOp::Write {
                        offset: offset + at,
                    }
                };
                let tag = self.tag(head, at, n, true);
                self.ops += 1;
                self.dma_ops += 1;
                match self.backend.submit_dma(tag, op, &self.scratch) {
                    Submit::Queued => {}
                    Submit::Done(c) => self.done.push_back(c),
                    Submit::Busy(_) => {
                        self.pieces.pop();
                        self.ops -= 1;
                        self.dma_ops -= 1;
                        return Ok(progress);
                    }
                }
                let r = &mut self.requests[i];
                r.started = true;
                r.submitted += n as u64;
                r.outstanding += 1;
                progress = true;
            }
            while self.requests[i].unsubmitted() {
                let Some(mut buf) = self.take_buffer() else {
                    return Ok(progress);
                };
                let r = &mut self.requests[i];
                let n = (r.len - r.submitted).min(piece_max as u64) as usize;
                let at = r.submitted;
                buf.resize(n, 0);
                let op = match r.kind {
                    Kind::Read => BlockOp::Read {
                        offset: r.offset + at,
                    },
                    _ => BlockOp::Write {
                        offset: r.offset + at,
                    },
                };
                match r.kind {
                    Kind::WriteZeroes => buf.fill(0),
                    Kind::Write => {
                        let skip = blk::REQ_HEADER_SIZE as u64 + at;
                        if let Err(e) = copy_from_chain(mem, &r.chain.readable, skip, &mut buf) {
                            self.give_back(buf);
                            return Err(e);
                        }
                    }
                    _ => {}
                }
                let head = r.chain.head;
                let tag = self.tag(head, at, n, false);
                self.lent += 1;
                self.ops += 1;
                match self.backend.submit(tag, op, buf) {
                    Submit::Queued => {}
                    Submit::Done(c) => self.done.push_back(c),
                    Submit::Busy(buf) => {
                        self.pieces.pop();
                        self.lent -= 1;
                        self.ops -= 1;
                        self.give_back(buf);
                        return Ok(progress);
                    }
                }
                let r = &mut self.requests[i];
                r.started = true;
                r.submitted += n as u64;
                r.outstanding += 1;
                progress = true;
            }
            i += 1;
        }
        Ok(progress)
    }

    /// Records a new backend operation and returns its tag.
    fn tag(&mut self, head: u16, at: u64, len: usize, dma: bool) -> u64 {
        let tag = self.next_tag;
        self.next_tag = self.next_tag.wrapping_add(1);
        self.pieces.push(Piece {
            tag,
            head,
            at,
            len,
            dma,
        });
        tag
    }

    /// An idle buffer, if one may be lent now.
    fn take_buffer(&mut self) -> Option<Vec<u8>> {
        if self.lent >= self.max_buffers {
            return None;
        }
        Some(self.pool.pop().unwrap_or_else(|| vec![0; self.chunk]))
    }

    fn give_back(&mut self, buf: Vec<u8>) {
        if buf.capacity() >= self.chunk && self.pool.len() < self.max_buffers {
            self.pool.push(buf);
        }
    }

    /// Applies every completion the backend has; returns whether there was one.
    fn drain(&mut self, queue: u16, qc: &mut QueueContext) -> Result<bool, DeviceError> {
        let mut progress = false;
        loop {
            let c = match self.done.pop_front() {
                Some(c) => c,
                None => match self.backend.poll() {
                    Some(c) => c,
                    None => return Ok(progress),
                },
            };
            progress = true;
            self.complete(queue, qc, c)?;
        }
    }

    /// One backend operation finished.
    fn complete(
        &mut self,
        queue: u16,
        qc: &mut QueueContext,
        c: Completion,
    ) -> Result<(), DeviceError> {
        self.ops = self.ops.saturating_sub(1);
        let Some(p) = self.pieces.iter().position(|p| p.tag == c.tag) else {
            // Started before a reset: its request is gone, only the buffer returns.
            if c.buf.capacity() > 0 {
                self.lent = self.lent.saturating_sub(1);
                self.give_back(c.buf);
            }
            log::debug!("virtio-blk: completion of a request dropped by reset");
            return Ok(());
        };
        let piece = self.pieces.swap_remove(p);
        let Some(ri) = self
            .requests
            .iter()
            .position(|r| r.chain.head == piece.head)
        else {
            return Ok(()); // unreachable: pieces go with their requests
        };
        let kind = self.requests[ri].kind;
        let mut result = c.result;
        let buffered = kind != Kind::Flush && !piece.dma;
        if buffered {
            self.lent = self.lent.saturating_sub(1);
        }
        if piece.dma {
            self.dma_ops = self.dma_ops.saturating_sub(1);
            if kind == Kind::Read && result.is_ok() {
                // The backend's device wrote the data into the chain itself.
                self.requests[ri].copied += piece.len as u64;
            }
        } else if kind == Kind::Read && result.is_ok() {
            if c.buf.len() < piece.len {
                result = Err(vdev::BlockError::Io);
            } else {
                let r = &self.requests[ri];
                copy_to_chain(qc.mem(), &r.chain.writable, piece.at, &c.buf[..piece.len])?;
                self.requests[ri].copied += piece.len as u64;
            }
        }
        if buffered {
            self.give_back(c.buf);
        }
        let r = &mut self.requests[ri];
        if let Err(e) = result {
            log::warn!(
                "virtio-blk: backend {kind:?} at byte {:#x} failed: {e:?}",
                r.offset + piece.at
            );
            r.status = blk::S_IOERR;
        }
        r.outstanding -= 1;
        if r.outstanding == 0 && !r.unsubmitted() {
            let mut r = self
                .requests
                .remove(ri)
                .ok_or(RequestError::MissingStatus)?;
            let dma = core::mem::take(&mut r.dma);
            self.recycle(dma);
            qc.mem().write(r.status_at.addr, &[r.status])?;
            let used = if kind == Kind::Read && r.status == blk::S_OK {
                r.copied + 1
            } else {
                1
            };
            // `copied` is bounded by MAX_CHAIN_BYTES, far below u32::MAX.
            qc.push_used(queue, r.chain.head, used as u32)?;
        }
        Ok(())
    }

    /// Forgets every held request: completions still to come only return buffers.
    /// Operations on guest RAM are waited for first, so that nothing writes or reads
    /// the guest's memory after the reset.
    fn forget_requests(&mut self) {
        if self.dma_ops > 0 {
            self.backend.quiesce();
            self.dma_ops = 0;
        }
        self.requests.clear();
        self.pieces.clear();
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

impl<B: AsyncBlock + Send> VirtioDevice for Blk<B> {
    fn device_id(&self) -> u32 {
        device_id::BLOCK
    }

    fn requests_in_flight(&self) -> usize {
        self.in_flight()
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
        self.pump(queue, qc)
    }

    fn poll(&mut self, qc: &mut QueueContext) -> Result<(), DeviceError> {
        self.pump(0, qc)
    }

    fn wants_poll(&self) -> bool {
        self.has_ready_work()
    }

    /// Backend completions to apply, or requests waiting to be submitted while none
    /// of this disk's operations is outstanding (no completion will come to retry).
    fn has_ready_work(&self) -> bool {
        !self.done.is_empty()
            || self.backend.has_completions()
            || (self.ops == 0 && self.requests.iter().any(Request::unsubmitted))
    }

    fn connect_work_signal(&mut self, signal: &vdev::WorkSignal) {
        self.backend.set_waker(signal.clone());
    }

    fn reset(&mut self) {
        self.forget_requests();
    }

    /// A disk has no device state of its own: its contents are the backend's, kept
    /// by the backend's owner.
    fn save_state(&self) -> Vec<u8> {
        let Self {
            // Storage and configuration, not device state.
            backend: _,
            serial: _,
            queue_sizes: _,
            chunk: _,
            max_in_flight: _,
            max_buffers: _,
            // Host-side buffers: idle ones hold nothing; lent ones belong to
            // operations below.
            pool: _,
            lent: _,
            // In-flight work is not saved: it is bound to operations of this host's
            // backend, which a restored device cannot complete. State is only
            // consistent when saved with no request held (the transport's queues
            // then say everything); a save taken mid-request loses those requests.
            ops: _,
            requests: _,
            pieces: _,
            done: _,
            next_tag: _,
            dma_ops: _,
            // Scratch space, no state.
            dma_pool: _,
            scratch: _,
        } = self;
        Vec::new()
    }

    fn restore_state(&mut self, blob: &[u8]) -> Result<(), vdev::RestoreError> {
        crate::device::restore_no_state(blob)
    }
}

/// Fills `out` with the next backend operation of a request whose data is `segs`,
/// starting `start` bytes in (a multiple of [`SECTOR_SIZE`]), within `lim`; returns its
/// length in bytes, a multiple of [`SECTOR_SIZE`] (0 when `lim` allows no such piece).
fn dma_piece(segs: &[DmaSegment], start: u64, lim: &DmaLimits, out: &mut Vec<DmaSegment>) -> usize {
    let sector = SECTOR_SIZE as usize;
    let max_bytes = lim.max_bytes / sector * sector;
    let max_seg = u64::from(lim.max_segment_bytes.max(1));
    out.clear();
    let mut skip = start;
    let mut total = 0usize;
    'segs: for s in segs {
        let len = u64::from(s.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let (mut addr, mut left) = (s.addr + skip, len - skip);
        skip = 0;
        while left > 0 {
            if out.len() >= lim.max_segments || total >= max_bytes {
                break 'segs;
            }
            // Bounded by max_seg (a u32) and by what is left of max_bytes.
            let n = left.min(max_seg).min((max_bytes - total) as u64);
            out.push(DmaSegment {
                addr,
                len: n as u32,
            });
            total += n as usize;
            addr += n;
            left -= n;
        }
    }
    // End on a sector boundary: trim the tail (the rest goes in the next piece).
    let mut excess = total % sector;
    total -= excess;
    while excess > 0 {
        let Some(last) = out.last_mut() else { break };
        let cut = (last.len as usize).min(excess);
        last.len -= cut as u32;
        excess -= cut;
        if last.len == 0 {
            out.pop();
        }
    }
    total
}

/// Writes `data` into the writable segments `segs` starting `skip` bytes in.
fn copy_to_chain(
    mem: &mut dyn GuestMemory,
    segs: &[Segment],
    mut skip: u64,
    mut data: &[u8],
) -> Result<(), MemError> {
    for s in segs {
        if data.is_empty() {
            break;
        }
        let len = u64::from(s.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = ((len - skip) as usize).min(data.len());
        mem.write(s.addr + skip, &data[..n])?;
        data = &data[n..];
        skip = 0;
    }
    Ok(())
}

/// Fills `buf` from the readable segments `segs` starting `skip` bytes in.
fn copy_from_chain(
    mem: &dyn GuestMemory,
    segs: &[Segment],
    mut skip: u64,
    buf: &mut [u8],
) -> Result<(), MemError> {
    let mut done = 0;
    for s in segs {
        if done == buf.len() {
            break;
        }
        let len = u64::from(s.len);
        if skip >= len {
            skip -= len;
            continue;
        }
        let n = ((len - skip) as usize).min(buf.len() - done);
        mem.read(s.addr + skip, &mut buf[done..done + n])?;
        done += n;
        skip = 0;
    }
    Ok(())
}

#[cfg(test)]
#[path = "blk_tests.rs"]
mod tests;
