//! The device side of one split virtqueue (virtio 1.2 §2.7): its configuration as the
//! driver wrote it, its validation, popping descriptor chains off the available ring
//! with every descriptor checked, pushing used entries, and the interrupt-suppression
//! decision (VIRTQ_AVAIL_F_NO_INTERRUPT, or `used_event` with VIRTIO_F_EVENT_IDX).
//!
//! All guest memory goes through [`GuestMemory`]; nothing is allocated by a
//! guest-supplied length (indirect tables are read one descriptor at a time).

use core::sync::atomic::{fence, Ordering};

use alloc::vec::Vec;
use vdev::{GuestMemory, MemError, RestoreError};

use crate::chain::{DescChain, Segment};
use crate::defs::{features, limits, ring};

/// Why a queue's configuration or one of its chains was refused. Every variant puts
/// the device into DEVICE_NEEDS_RESET.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueError {
    /// QueueNum is zero, not a power of two, or above QueueNumMax.
    BadSize(u16),
    /// A ring address is misaligned for its ring.
    Misaligned { ring: RingKind, addr: u64 },
    /// A ring runs past the end of the address space.
    RingOverflow(RingKind),
    /// The available index moved further ahead than the queue has entries.
    AvailIdxJump { avail_idx: u16, next_avail: u16 },
    /// A head index taken from the available ring is not below the queue size.
    HeadOutOfRange(u16),
    /// A descriptor's `next` is outside its table.
    NextOutOfRange(u16),
    /// The chain has more descriptors than its table; every loop ends here.
    ChainTooLong,
    /// An indirect descriptor without VIRTIO_F_INDIRECT_DESC negotiated.
    IndirectNotNegotiated,
    /// An indirect descriptor that also has VIRTQ_DESC_F_NEXT.
    IndirectWithNext,
    /// An indirect descriptor inside an indirect table.
    NestedIndirect,
    /// An indirect table whose length is zero or not a multiple of 16.
    IndirectBadLength(u32),
    /// An indirect table with more entries than [`limits::MAX_INDIRECT_DESCRIPTORS`].
    IndirectTooLarge(u32),
    /// A device-readable descriptor after a device-writable one.
    ReadableAfterWritable,
    /// The chain describes more than [`limits::MAX_CHAIN_BYTES`].
    ChainTooManyBytes,
    /// A buffer's `addr + len` wraps around the address space.
    AddressOverflow,
    /// Guest memory refused an access (outside guest RAM).
    Memory(MemError),
}

impl From<MemError> for QueueError {
    fn from(e: MemError) -> Self {
        QueueError::Memory(e)
    }
}

/// Which of a queue's three areas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RingKind {
    Descriptors,
    Available,
    Used,
}

/// One descriptor as it sits in guest memory.
#[derive(Debug, Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

fn read_desc(mem: &dyn GuestMemory, gpa: u64) -> Result<Desc, QueueError> {
    let mut b = [0u8; ring::DESC_SIZE as usize];
    mem.read(gpa, &mut b)?;
    Ok(Desc {
        addr: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
        len: u32::from_le_bytes([b[8], b[9], b[10], b[11]]),
        flags: u16::from_le_bytes([b[12], b[13]]),
        next: u16::from_le_bytes([b[14], b[15]]),
    })
}

/// `vring_need_event`: whether moving the used index from `old` to `new` crossed
/// the driver's `event` index.
fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

/// One split virtqueue, device side.
#[derive(Debug, Clone)]
pub struct Queue {
    /// QueueNumMax: the largest size the device accepts.
    pub max_size: u16,
    /// QueueNum as written by the driver.
    pub size: u16,
    /// QueueReady.
    pub ready: bool,
    /// QueueDesc: guest physical address of the descriptor table.
    pub desc_addr: u64,
    /// QueueDriver: guest physical address of the available ring.
    pub avail_addr: u64,
    /// QueueDevice: guest physical address of the used ring.
    pub used_addr: u64,
    next_avail: u16,
    next_used: u16,
    /// Used index when the driver was last interrupted (EVENT_IDX bookkeeping).
    signalled_used: Option<u16>,
}

impl Queue {
    /// A reset queue whose QueueNumMax is `max_size` (a power of two ≤ 32768).
    pub fn new(max_size: u16) -> Self {
        let max_size = max_size.clamp(1, ring::MAX_QUEUE_SIZE);
        Self {
            max_size,
            size: max_size,
            ready: false,
            desc_addr: 0,
            avail_addr: 0,
            used_addr: 0,
            next_avail: 0,
            next_used: 0,
            signalled_used: None,
        }
    }

    /// Back to the state after device reset.
    pub fn reset(&mut self) {
        *self = Self::new(self.max_size);
    }

    /// Index of the next available-ring entry the device will consume.
    pub fn next_avail(&self) -> u16 {
        self.next_avail
    }

    /// The device's used index.
    pub fn next_used(&self) -> u16 {
        self.next_used
    }

    fn avail_len(&self) -> u64 {
        ring::RING_HEADER + ring::AVAIL_ELEM * u64::from(self.size) + ring::EVENT_FIELD
    }
    fn used_len(&self) -> u64 {
        ring::RING_HEADER + ring::USED_ELEM * u64::from(self.size) + ring::EVENT_FIELD
    }
    fn desc_len(&self) -> u64 {
        ring::DESC_SIZE * u64::from(self.size)
    }

    /// The three ring areas: kind, address, length, required alignment.
    fn areas(&self) -> [(RingKind, u64, u64, u64); 3] {
        [
            (
                RingKind::Descriptors,
                self.desc_addr,
                self.desc_len(),
                ring::DESC_ALIGN,
            ),
            (
                RingKind::Available,
                self.avail_addr,
                self.avail_len(),
                ring::AVAIL_ALIGN,
            ),
            (
                RingKind::Used,
                self.used_addr,
                self.used_len(),
                ring::USED_ALIGN,
            ),
        ]
    }

    /// Checks the driver's configuration without touching memory: size, ring
    /// alignment, no ring wrapping the address space.
    pub fn check_config(&self) -> Result<(), QueueError> {
        if self.size == 0 || !self.size.is_power_of_two() || self.size > self.max_size {
            return Err(QueueError::BadSize(self.size));
        }
        for (kind, addr, len, align) in self.areas() {
            if addr % align != 0 {
                return Err(QueueError::Misaligned { ring: kind, addr });
            }
            addr.checked_add(len - 1)
                .ok_or(QueueError::RingOverflow(kind))?;
        }
        Ok(())
    }

    /// Checks the driver's configuration and that every ring's first and last byte is
    /// guest RAM, then makes the queue ready with fresh indices.
    pub fn activate(&mut self, mem: &dyn GuestMemory) -> Result<(), QueueError> {
        self.check_config()?;
        for (_, addr, len, _) in self.areas() {
            let mut b = [0u8; 1];
            mem.read(addr, &mut b)?;
            mem.read(addr + len - 1, &mut b)?;
        }
        self.next_avail = 0;
        self.next_used = 0;
        self.signalled_used = None;
        self.ready = true;
        Ok(())
    }

    /// Appends the queue's state to `out` (see [`crate::save`]).
    pub(crate) fn save(&self, out: &mut Vec<u8>) {
        let Self {
            max_size,
            size,
            ready,
            desc_addr,
            avail_addr,
            used_addr,
            next_avail,
            next_used,
            signalled_used,
        } = self;
        out.extend_from_slice(&max_size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.push(u8::from(*ready));
        for a in [desc_addr, avail_addr, used_addr] {
            out.extend_from_slice(&a.to_le_bytes());
        }
        out.extend_from_slice(&next_avail.to_le_bytes());
        out.extend_from_slice(&next_used.to_le_bytes());
        out.push(u8::from(signalled_used.is_some()));
        out.extend_from_slice(&signalled_used.unwrap_or(0).to_le_bytes());
    }

    /// Reads a queue saved by [`Self::save`] over this one, validating it as if the
    /// guest had written it. `self.max_size` must match.
    pub(crate) fn restore(&mut self, r: &mut crate::save::Reader) -> Result<(), RestoreError> {
        let max_size = r.u16()?;
        if max_size != self.max_size {
            return Err(RestoreError::Malformed);
        }
        let mut q = Queue::new(max_size);
        q.size = r.u16()?;
        q.ready = r.flag()?;
        q.desc_addr = r.u64()?;
        q.avail_addr = r.u64()?;
        q.used_addr = r.u64()?;
        q.next_avail = r.u16()?;
        q.next_used = r.u16()?;
        let signalled = r.flag()?;
        let value = r.u16()?;
        q.signalled_used = signalled.then_some(value);
        if q.ready && q.check_config().is_err() {
            return Err(RestoreError::Malformed);
        }
        *self = q;
        Ok(())
    }

    fn avail_idx(&self, mem: &dyn GuestMemory) -> Result<u16, QueueError> {
        let idx = mem.read_u16(self.avail_addr + ring::IDX_OFFSET)?;
        // Entries up to `idx` are visible only after the index is.
        fence(Ordering::Acquire);
        Ok(idx)
    }

    /// Number of chains the driver has made available and the device not consumed.
    pub fn pending(&self, mem: &dyn GuestMemory) -> Result<u16, QueueError> {
        let avail_idx = self.avail_idx(mem)?;
        let pending = avail_idx.wrapping_sub(self.next_avail);
        if pending > self.size {
            return Err(QueueError::AvailIdxJump {
                avail_idx,
                next_avail: self.next_avail,
            });
        }
        Ok(pending)
    }

    /// Takes the next available chain, fully validated, or `None` if there is none.
    /// `negotiated` is the feature set the driver accepted.
    pub fn pop(
        &mut self,
        mem: &mut dyn GuestMemory,
        negotiated: u64,
    ) -> Result<Option<DescChain>, QueueError> {
        let mut chain = DescChain::default();
        Ok(self.pop_into(mem, negotiated, &mut chain)?.then_some(chain))
    }

    /// [`Self::pop`] into `chain` (its segment lists cleared first, their
    /// capacity kept: a caller that reuses one chain pops without allocating);
    /// `false` if there is none. After an error `chain` holds no valid chain.
    pub fn pop_into(
        &mut self,
        mem: &mut dyn GuestMemory,
        negotiated: u64,
        chain: &mut DescChain,
    ) -> Result<bool, QueueError> {
        if self.pending(mem)? == 0 {
            return Ok(false);
        }
        let slot = u64::from(self.next_avail & (self.size - 1));
        let head = mem.read_u16(self.avail_addr + ring::RING_HEADER + ring::AVAIL_ELEM * slot)?;
        self.walk(mem, head, negotiated, chain)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        if negotiated & features::EVENT_IDX != 0 {
            // avail_event: ask to be notified once the driver passes this entry.
            let at = self.used_addr + ring::RING_HEADER + ring::USED_ELEM * u64::from(self.size);
            mem.write_u16(at, self.next_avail)?;
        }
        Ok(true)
    }

    fn walk(
        &self,
        mem: &dyn GuestMemory,
        head: u16,
        negotiated: u64,
        chain: &mut DescChain,
    ) -> Result<(), QueueError> {
        chain.head = head;
        chain.readable.clear();
        chain.writable.clear();
        if head >= self.size {
            return Err(QueueError::HeadOutOfRange(head));
        }
        let mut total = 0u64;
        let mut idx = head;
        let mut count = 0u32;
        loop {
            count += 1;
            if count > u32::from(self.size) {
                return Err(QueueError::ChainTooLong);
            }
            let d = read_desc(mem, self.desc_addr + ring::DESC_SIZE * u64::from(idx))?;
            if d.flags & ring::DESC_F_INDIRECT != 0 {
                if negotiated & features::INDIRECT_DESC == 0 {
                    return Err(QueueError::IndirectNotNegotiated);
                }
                if d.flags & ring::DESC_F_NEXT != 0 {
                    return Err(QueueError::IndirectWithNext);
                }
                walk_indirect(mem, &d, chain, &mut total)?;
                return Ok(());
            }
            add_segment(&d, chain, &mut total)?;
            if d.flags & ring::DESC_F_NEXT == 0 {
                return Ok(());
            }
            if d.next >= self.size {
                return Err(QueueError::NextOutOfRange(d.next));
            }
            idx = d.next;
        }
    }

    /// Returns chain `head` to the driver with `len` bytes written.
    pub fn push_used(
        &mut self,
        mem: &mut dyn GuestMemory,
        head: u16,
        len: u32,
    ) -> Result<(), QueueError> {
        let slot = u64::from(self.next_used & (self.size - 1));
        let mut elem = [0u8; ring::USED_ELEM as usize];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        mem.write(
            self.used_addr + ring::RING_HEADER + ring::USED_ELEM * slot,
            &elem,
        )?;
        // The element must be visible before the index that publishes it.
        fence(Ordering::Release);
        self.next_used = self.next_used.wrapping_add(1);
        mem.write_u16(self.used_addr + ring::IDX_OFFSET, self.next_used)?;
        Ok(())
    }

    /// Whether the driver wants an interrupt for the used entries pushed since the last
    /// time this returned `true` (call after pushing a batch).
    pub fn should_interrupt(
        &mut self,
        mem: &dyn GuestMemory,
        negotiated: u64,
    ) -> Result<bool, QueueError> {
        // The used index store must be ordered before reading the driver's wishes.
        fence(Ordering::SeqCst);
        if negotiated & features::EVENT_IDX != 0 {
            let at = self.avail_addr + ring::RING_HEADER + ring::AVAIL_ELEM * u64::from(self.size);
            let used_event = mem.read_u16(at)?;
            let new = self.next_used;
            let old = self.signalled_used.replace(new);
            Ok(match old {
                None => true,
                Some(old) => need_event(used_event, new, old),
            })
        } else {
            let flags = mem.read_u16(self.avail_addr)?;
            Ok(flags & ring::AVAIL_F_NO_INTERRUPT == 0)
        }
    }
}

fn add_segment(d: &Desc, chain: &mut DescChain, total: &mut u64) -> Result<(), QueueError> {
    d.addr
        .checked_add(u64::from(d.len))
        .ok_or(QueueError::AddressOverflow)?;
    *total += u64::from(d.len);
    if *total > limits::MAX_CHAIN_BYTES {
        return Err(QueueError::ChainTooManyBytes);
    }
    let seg = Segment {
        addr: d.addr,
        len: d.len,
    };
    if d.flags & ring::DESC_F_WRITE != 0 {
        if d.len > 0 {
            chain.writable.push(seg);
        }
    } else if !chain.writable.is_empty() {
        return Err(QueueError::ReadableAfterWritable);
    } else if d.len > 0 {
        chain.readable.push(seg);
    }
    Ok(())
}

fn walk_indirect(
    mem: &dyn GuestMemory,
    table: &Desc,
    chain: &mut DescChain,
    total: &mut u64,
) -> Result<(), QueueError> {
    if table.len == 0 || u64::from(table.len) % ring::DESC_SIZE != 0 {
        return Err(QueueError::IndirectBadLength(table.len));
    }
    let entries = table.len / ring::DESC_SIZE as u32;
    if entries > limits::MAX_INDIRECT_DESCRIPTORS {
        return Err(QueueError::IndirectTooLarge(entries));
    }
    table
        .addr
        .checked_add(u64::from(table.len))
        .ok_or(QueueError::AddressOverflow)?;
    let mut idx = 0u32;
    let mut count = 0u32;
    loop {
        count += 1;
        if count > entries {
            return Err(QueueError::ChainTooLong);
        }
        let d = read_desc(mem, table.addr + ring::DESC_SIZE * u64::from(idx))?;
        if d.flags & ring::DESC_F_INDIRECT != 0 {
            return Err(QueueError::NestedIndirect);
        }
        add_segment(&d, chain, total)?;
        if d.flags & ring::DESC_F_NEXT == 0 {
            return Ok(());
        }
        if u32::from(d.next) >= entries {
            return Err(QueueError::NextOutOfRange(d.next));
        }
        idx = u32::from(d.next);
    }
}

#[cfg(test)]
#[path = "queue_tests.rs"]
mod tests;
