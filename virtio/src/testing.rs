//! A driver-side test harness: lays out split virtqueues in a [`VecMemory`] and drives
//! an [`MmioTransport`] only through its MMIO registers, exactly as a guest driver
//! would (reset, ACKNOWLEDGE → DRIVER → FEATURES_OK → DRIVER_OK, queue setup,
//! notify, reading the used ring). Built for this crate's tests and, behind the
//! `testing` feature, for other virtio device crates. Test code: it panics on misuse.

use alloc::vec::Vec;

use vdev::{AccessSize, GuestMemory, InterruptSink, MmioContext, MmioDevice, MmioError, VecMemory};

use crate::defs::{features, mmio, ring, status};
use crate::device::VirtioDevice;
use crate::transport::MmioTransport;

/// Guest physical address of the test guest's RAM.
pub const RAM_BASE: u64 = 0x4000_0000;

/// An interrupt controller that remembers the level of each line it was told about.
#[derive(Debug, Default, Clone)]
pub struct LevelIrq {
    /// `(intid, level)` for every line driven so far.
    pub lines: Vec<(u32, bool)>,
}

impl LevelIrq {
    /// The last level driven on `intid` (low if never driven).
    pub fn level(&self, intid: u32) -> bool {
        self.lines
            .iter()
            .find(|(i, _)| *i == intid)
            .is_some_and(|(_, l)| *l)
    }
}

impl InterruptSink for LevelIrq {
    fn set_level(&mut self, intid: u32, level: bool) {
        match self.lines.iter_mut().find(|(i, _)| *i == intid) {
            Some(line) => line.1 = level,
            None => self.lines.push((intid, level)),
        }
    }
}

/// Where the driver put one queue, and its own ring bookkeeping.
#[derive(Debug, Clone, Copy)]
pub struct DriverQueue {
    pub size: u16,
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    next_desc: u16,
    avail_idx: u16,
    last_used: u16,
}

/// One buffer of a chain the driver builds: guest address, length, device-writable.
pub type Buf = (u64, u32, bool);

/// A guest driver for one virtio-mmio device, with its RAM and interrupt controller.
pub struct TestDriver<D: VirtioDevice> {
    pub transport: MmioTransport<D>,
    pub mem: VecMemory,
    pub irq: LevelIrq,
    pub queues: Vec<DriverQueue>,
    next_free: u64,
}

/// Interrupt number the harness gives its transport.
pub const TEST_INTID: u32 = 48;

impl<D: VirtioDevice> TestDriver<D> {
    /// A guest with `ram` bytes of RAM at [`RAM_BASE`] and `device` on virtio-mmio.
    pub fn new(device: D, ram: usize) -> Self {
        Self {
            transport: MmioTransport::new(device, TEST_INTID),
            mem: VecMemory::new(RAM_BASE, ram),
            irq: LevelIrq::default(),
            queues: Vec::new(),
            next_free: RAM_BASE,
        }
    }

    /// A raw register read.
    pub fn try_read(&mut self, offset: u64, size: AccessSize) -> Result<u64, MmioError> {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut self.irq,
        };
        self.transport.read(&mut ctx, offset, size)
    }

    /// A raw register write.
    pub fn try_write(
        &mut self,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut self.irq,
        };
        self.transport.write(&mut ctx, offset, size, value)
    }

    /// A 32-bit register read.
    pub fn read_reg(&mut self, offset: u64) -> u32 {
        self.try_read(offset, AccessSize::Word)
            .expect("register read") as u32
    }

    /// A 32-bit register write.
    pub fn write_reg(&mut self, offset: u64, value: u32) {
        self.try_write(offset, AccessSize::Word, u64::from(value))
            .expect("register write")
    }

    /// Whether the device's interrupt line is high.
    pub fn irq_level(&self) -> bool {
        self.irq.level(TEST_INTID)
    }

    /// Carves `len` bytes aligned to `align` out of guest RAM.
    pub fn alloc(&mut self, len: u64, align: u64) -> u64 {
        let at = self.next_free.next_multiple_of(align);
        self.next_free = at + len;
        assert!(
            self.next_free <= RAM_BASE + self.mem.as_bytes().len() as u64,
            "test RAM exhausted"
        );
        at
    }

    /// The 64 bits of DeviceFeatures.
    pub fn device_features(&mut self) -> u64 {
        self.write_reg(mmio::DEVICE_FEATURES_SEL, 0);
        let lo = self.read_reg(mmio::DEVICE_FEATURES);
        self.write_reg(mmio::DEVICE_FEATURES_SEL, 1);
        let hi = self.read_reg(mmio::DEVICE_FEATURES);
        u64::from(hi) << 32 | u64::from(lo)
    }

    /// Reset, ACKNOWLEDGE, DRIVER, write `wanted` as DriverFeatures, set FEATURES_OK;
    /// returns whether the device kept FEATURES_OK.
    pub fn negotiate(&mut self, wanted: u64) -> bool {
        assert_eq!(self.read_reg(mmio::MAGIC_VALUE), mmio::MAGIC);
        assert_eq!(self.read_reg(mmio::VERSION), mmio::VERSION_MODERN);
        self.write_reg(mmio::STATUS, 0);
        self.write_reg(mmio::STATUS, status::ACKNOWLEDGE);
        self.write_reg(mmio::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        self.write_reg(mmio::DRIVER_FEATURES_SEL, 0);
        self.write_reg(mmio::DRIVER_FEATURES, wanted as u32);
        self.write_reg(mmio::DRIVER_FEATURES_SEL, 1);
        self.write_reg(mmio::DRIVER_FEATURES, (wanted >> 32) as u32);
        self.write_reg(
            mmio::STATUS,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        self.read_reg(mmio::STATUS) & status::FEATURES_OK != 0
    }

    /// Lays out queue `q` with `size` entries and makes it ready through the
    /// registers. Returns whether QueueReady reads back as 1.
    pub fn setup_queue(&mut self, q: u16, size: u16) -> bool {
        let n = u64::from(size);
        let desc = self.alloc(ring::DESC_SIZE * n, 4096);
        let avail = self.alloc(
            ring::RING_HEADER + ring::AVAIL_ELEM * n + ring::EVENT_FIELD,
            4096,
        );
        let used = self.alloc(
            ring::RING_HEADER + ring::USED_ELEM * n + ring::EVENT_FIELD,
            4096,
        );
        self.setup_queue_at(q, size, desc, avail, used)
    }

    /// Like [`Self::setup_queue`] with the ring addresses given.
    pub fn setup_queue_at(&mut self, q: u16, size: u16, desc: u64, avail: u64, used: u64) -> bool {
        self.write_reg(mmio::QUEUE_SEL, u32::from(q));
        assert_eq!(self.read_reg(mmio::QUEUE_READY), 0);
        self.write_reg(mmio::QUEUE_NUM, u32::from(size));
        for (lo, addr) in [
            (mmio::QUEUE_DESC_LOW, desc),
            (mmio::QUEUE_DRIVER_LOW, avail),
            (mmio::QUEUE_DEVICE_LOW, used),
        ] {
            self.write_reg(lo, addr as u32);
            self.write_reg(lo + 4, (addr >> 32) as u32);
        }
        self.write_reg(mmio::QUEUE_READY, 1);
        let slot = usize::from(q);
        if self.queues.len() <= slot {
            self.queues.resize(
                slot + 1,
                DriverQueue {
                    size: 0,
                    desc: 0,
                    avail: 0,
                    used: 0,
                    next_desc: 0,
                    avail_idx: 0,
                    last_used: 0,
                },
            );
        }
        self.queues[slot] = DriverQueue {
            size,
            desc,
            avail,
            used,
            next_desc: 0,
            avail_idx: 0,
            last_used: 0,
        };
        self.read_reg(mmio::QUEUE_READY) == 1
    }

    /// Sets DRIVER_OK on top of the current status.
    pub fn driver_ok(&mut self) {
        let s = self.read_reg(mmio::STATUS);
        self.write_reg(mmio::STATUS, s | status::DRIVER_OK);
    }

    /// The whole standard bring-up: negotiate VERSION_1 plus `extra` features (must be
    /// accepted), set up every queue at its maximum size, DRIVER_OK.
    pub fn start(&mut self, extra: u64) {
        assert!(
            self.negotiate(features::VERSION_1 | extra),
            "FEATURES_OK refused"
        );
        let count = self.transport.device().queue_max_sizes().len() as u16;
        for q in 0..count {
            self.write_reg(mmio::QUEUE_SEL, u32::from(q));
            let max = self.read_reg(mmio::QUEUE_NUM_MAX) as u16;
            assert!(self.setup_queue(q, max), "queue {q} not ready");
        }
        self.driver_ok();
        assert_eq!(
            self.read_reg(mmio::STATUS) & status::DRIVER_OK,
            status::DRIVER_OK
        );
    }

    /// Writes descriptor `i` of a table at `table`.
    pub fn write_desc_at(
        &mut self,
        table: u64,
        i: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let at = table + ring::DESC_SIZE * u64::from(i);
        self.mem.write_u64(at, addr).unwrap();
        self.mem.write_u32(at + 8, len).unwrap();
        self.mem.write_u16(at + 12, flags).unwrap();
        self.mem.write_u16(at + 14, next).unwrap();
    }

    /// Writes descriptor `i` of queue `q`'s table.
    pub fn write_desc(&mut self, q: u16, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let table = self.queues[usize::from(q)].desc;
        self.write_desc_at(table, i, addr, len, flags, next);
    }

    /// Puts `head` in the next available-ring slot of `q` and publishes it.
    pub fn publish(&mut self, q: u16, head: u16) {
        let dq = self.queues[usize::from(q)];
        let slot = u64::from(dq.avail_idx % dq.size);
        self.mem
            .write_u16(dq.avail + ring::RING_HEADER + ring::AVAIL_ELEM * slot, head)
            .unwrap();
        let idx = dq.avail_idx.wrapping_add(1);
        self.mem
            .write_u16(dq.avail + ring::IDX_OFFSET, idx)
            .unwrap();
        self.queues[usize::from(q)].avail_idx = idx;
    }

    fn flags_for(writable: bool, has_next: bool) -> u16 {
        let mut f = 0;
        if writable {
            f |= ring::DESC_F_WRITE;
        }
        if has_next {
            f |= ring::DESC_F_NEXT;
        }
        f
    }

    /// Builds a direct chain of `bufs` from the queue's free descriptors, makes it
    /// available and returns its head.
    pub fn add_chain(&mut self, q: u16, bufs: &[Buf]) -> u16 {
        let dq = self.queues[usize::from(q)];
        let head = dq.next_desc % dq.size;
        for (k, &(addr, len, writable)) in bufs.iter().enumerate() {
            let i = (dq.next_desc + k as u16) % dq.size;
            let next = (i + 1) % dq.size;
            let flags = Self::flags_for(writable, k + 1 < bufs.len());
            self.write_desc(q, i, addr, len, flags, next);
        }
        self.queues[usize::from(q)].next_desc =
            dq.next_desc.wrapping_add(bufs.len() as u16) % dq.size;
        self.publish(q, head);
        head
    }

    /// Builds an indirect table for `bufs` in fresh RAM, points one queue descriptor
    /// at it, makes it available and returns the head.
    pub fn add_indirect(&mut self, q: u16, bufs: &[Buf]) -> u16 {
        let table = self.alloc(ring::DESC_SIZE * bufs.len() as u64, 16);
        for (k, &(addr, len, writable)) in bufs.iter().enumerate() {
            let flags = Self::flags_for(writable, k + 1 < bufs.len());
            self.write_desc_at(table, k as u16, addr, len, flags, k as u16 + 1);
        }
        let dq = self.queues[usize::from(q)];
        let head = dq.next_desc % dq.size;
        self.write_desc(
            q,
            head,
            table,
            ring::DESC_SIZE as u32 * bufs.len() as u32,
            ring::DESC_F_INDIRECT,
            0,
        );
        self.queues[usize::from(q)].next_desc = (head + 1) % dq.size;
        self.publish(q, head);
        head
    }

    /// Writes QueueNotify for `q`.
    pub fn notify(&mut self, q: u16) {
        self.write_reg(mmio::QUEUE_NOTIFY, u32::from(q));
    }

    /// The next used entry `(id, len)` of `q`, if the device published one.
    pub fn pop_used(&mut self, q: u16) -> Option<(u32, u32)> {
        let dq = self.queues[usize::from(q)];
        let used_idx = self.mem.read_u16(dq.used + ring::IDX_OFFSET).unwrap();
        if used_idx == dq.last_used {
            return None;
        }
        let slot = u64::from(dq.last_used % dq.size);
        let at = dq.used + ring::RING_HEADER + ring::USED_ELEM * slot;
        let id = self.mem.read_u32(at).unwrap();
        let len = self.mem.read_u32(at + 4).unwrap();
        self.queues[usize::from(q)].last_used = dq.last_used.wrapping_add(1);
        Some((id, len))
    }

    /// Reads InterruptStatus and acknowledges every bit set; returns them.
    pub fn ack_interrupts(&mut self) -> u32 {
        let isr = self.read_reg(mmio::INTERRUPT_STATUS);
        self.write_reg(mmio::INTERRUPT_ACK, isr);
        isr
    }

    /// Writes `data` into guest RAM.
    pub fn write_mem(&mut self, gpa: u64, data: &[u8]) {
        self.mem.write(gpa, data).unwrap();
    }

    /// Reads `len` bytes of guest RAM.
    pub fn read_mem(&self, gpa: u64, len: usize) -> Vec<u8> {
        let mut v = alloc::vec![0; len];
        self.mem.read(gpa, &mut v).unwrap();
        v
    }

    /// Delivers host-side work (console input) as the hypervisor's poll would.
    pub fn poll(&mut self) {
        self.transport.poll(&mut self.mem, &mut self.irq);
    }
}

/// A RAM disk for tests: a `Vec` behind [`vdev::BlockBackend`], counting flushes.
#[derive(Debug, Clone)]
pub struct MemDisk {
    pub data: Vec<u8>,
    pub read_only: bool,
    pub flushes: u32,
}

impl MemDisk {
    /// `sectors` zeroed sectors.
    pub fn new(sectors: usize, read_only: bool) -> Self {
        Self {
            data: alloc::vec![0; sectors * vdev::SECTOR_SIZE as usize],
            read_only,
            flushes: 0,
        }
    }

    fn span(&self, offset: u64, len: usize) -> Result<core::ops::Range<usize>, vdev::BlockError> {
        let start = usize::try_from(offset).map_err(|_| vdev::BlockError::OutOfRange)?;
        let end = start.checked_add(len).ok_or(vdev::BlockError::OutOfRange)?;
        if end > self.data.len() {
            return Err(vdev::BlockError::OutOfRange);
        }
        Ok(start..end)
    }
}

impl vdev::BlockBackend for MemDisk {
    fn capacity(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), vdev::BlockError> {
        let r = self.span(offset, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), vdev::BlockError> {
        if self.read_only {
            return Err(vdev::BlockError::ReadOnly);
        }
        let r = self.span(offset, data.len())?;
        self.data[r].copy_from_slice(data);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), vdev::BlockError> {
        self.flushes += 1;
        Ok(())
    }
}
