//! `virtio_mmio`: a hostile driver against the virtio-mmio transport of virtio-blk,
//! virtio-rng or virtio-console (the first byte picks the device). The rest of the
//! input is a sequence of operations: raw register reads and writes, writes of named
//! registers, descriptor-table and available-ring writes into guest RAM (which the
//! fuzzer also fills with raw bytes), notifications, a full driver bring-up, console
//! input, polls and VM resets.
//!
//! Invariants, checked on every access and after every operation:
//! - the device writes guest RAM only inside a used ring or a device-writable buffer
//!   (a `VIRTQ_DESC_F_WRITE` descriptor of a descriptor table or an indirect table)
//!   that the guest's memory described at some point of the run;
//! - the interrupt line is high exactly when InterruptStatus is non-zero;
//! - no panic.

use arbitrary::{Arbitrary, Unstructured};
use ranges::RangeSet;
use vdev::{AccessSize, GuestMemory, InterruptSink, MemError, MmioContext, MmioDevice, VecMemory};
use virtio::defs::{mmio, ring, status};
use virtio::testing::MemDisk;
use virtio::{Blk, Console, EntropyError, EntropySource, MmioTransport, Rng, VirtioDevice};

/// Guest physical address of the fake guest RAM.
pub const RAM_BASE: u64 = 0x4000_0000;
/// Size of the fake guest RAM: one page per queue for its rings plus room for buffers.
pub const RAM_SIZE: usize = 0x8000;
/// Where the bring-up operation puts queue `q`'s rings: one page each.
const QUEUE_PAGE: u64 = 0x1000;
const AVAIL_OFFSET: u64 = 0x400;
const USED_OFFSET: u64 = 0x800;
/// Largest queue the bring-up operation configures (its rings fit in a queue page).
const SETUP_MAX_QUEUE: u16 = 32;
const INTID: u32 = 48;
/// Sectors of the RAM disk behind virtio-blk.
const DISK_SECTORS: usize = 16;

mod ranges {
    /// A set of half-open address ranges `[start, end)`.
    #[derive(Default)]
    pub struct RangeSet(Vec<(u64, u64)>);

    impl RangeSet {
        pub fn insert(&mut self, start: u64, end: u64) {
            if start < end && !self.0.contains(&(start, end)) {
                self.0.push((start, end));
            }
        }
        /// Whether one range holds all of `[start, end)`.
        pub fn covers(&self, start: u64, end: u64) -> bool {
            self.0.iter().any(|&(s, e)| s <= start && end <= e)
        }
    }
}

/// Where the rings of one queue are, as the transport holds them.
#[derive(Clone, Copy)]
struct QueueLayout {
    desc: u64,
    used: u64,
    size: u16,
}

/// Guest RAM that checks every device write against what the guest handed over.
struct CheckedMemory {
    ram: VecMemory,
    queues: Vec<QueueLayout>,
    allowed: RangeSet,
}

impl CheckedMemory {
    fn read_u64(&self, gpa: u64) -> Option<u64> {
        self.ram.read_u64(gpa).ok()
    }

    /// Adds every range the guest's RAM now hands to the device for writing.
    fn snapshot(&mut self) {
        for i in 0..self.queues.len() {
            let q = self.queues[i];
            let used_len = ring::IDX_OFFSET + 2 + u64::from(q.size) * 8 + ring::EVENT_FIELD;
            self.allowed.insert(q.used, q.used.saturating_add(used_len));
            self.walk_table(q.desc, u64::from(q.size), true);
        }
    }

    /// Adds the device-writable buffers of a descriptor table of `n` entries
    /// (following indirect tables one level down when `follow` is set). Only the
    /// entries inside RAM are read: the device cannot read the others either.
    fn walk_table(&mut self, table: u64, n: u64, follow: bool) {
        for i in entries_in_ram(table, n) {
            let at = table + i * ring::DESC_SIZE;
            let (Some(addr), Ok(len), Ok(flags)) = (
                self.read_u64(at),
                self.ram.read_u32(at + 8),
                self.ram.read_u16(at + 12),
            ) else {
                continue;
            };
            if flags & ring::DESC_F_INDIRECT != 0 {
                if follow {
                    self.walk_table(addr, u64::from(len) / ring::DESC_SIZE, false);
                }
            } else if flags & ring::DESC_F_WRITE != 0 {
                self.allowed
                    .insert(addr, addr.saturating_add(u64::from(len)));
            }
        }
    }
}

/// The indices `i < n` whose entry `table + 16 * i` lies wholly inside RAM.
fn entries_in_ram(table: u64, n: u64) -> core::ops::Range<u64> {
    let end = RAM_BASE + RAM_SIZE as u64;
    let first = RAM_BASE.saturating_sub(table).div_ceil(ring::DESC_SIZE);
    let last = end.saturating_sub(table) / ring::DESC_SIZE;
    first.min(n)..last.min(n)
}

impl GuestMemory for CheckedMemory {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.ram.read(gpa, buf)
    }

    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let end = gpa.saturating_add(data.len() as u64);
        if !self.allowed.covers(gpa, end) {
            // The device may have written a table itself earlier in this access.
            self.snapshot();
            assert!(
                self.allowed.covers(gpa, end),
                "device wrote {:#x}..{end:#x}, outside every used ring and writable buffer",
                gpa
            );
        }
        self.ram.write(gpa, data)
    }
}

/// An interrupt controller that remembers the level of the transport's line.
#[derive(Default)]
struct Line {
    level: bool,
    other: bool,
}

impl InterruptSink for Line {
    fn set_level(&mut self, intid: u32, level: bool) {
        if intid == INTID {
            self.level = level;
        } else {
            self.other = true;
        }
    }
}

/// Deterministic entropy for virtio-rng that fails every seventh request.
struct Entropy(u32);

impl EntropySource for Entropy {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        self.0 = self.0.wrapping_add(1);
        if self.0.is_multiple_of(7) {
            return Err(EntropyError);
        }
        buf.fill(self.0 as u8);
        Ok(())
    }
}

#[derive(Arbitrary, Debug)]
enum Kind {
    Blk,
    Rng,
    Console,
}

/// Transport registers a write operation may name.
const REGISTERS: &[u64] = &[
    mmio::DEVICE_FEATURES_SEL,
    mmio::DRIVER_FEATURES,
    mmio::DRIVER_FEATURES_SEL,
    mmio::QUEUE_SEL,
    mmio::QUEUE_NUM,
    mmio::QUEUE_READY,
    mmio::QUEUE_NOTIFY,
    mmio::INTERRUPT_ACK,
    mmio::STATUS,
    mmio::QUEUE_DESC_LOW,
    mmio::QUEUE_DESC_HIGH,
    mmio::QUEUE_DRIVER_LOW,
    mmio::QUEUE_DRIVER_HIGH,
    mmio::QUEUE_DEVICE_LOW,
    mmio::QUEUE_DEVICE_HIGH,
    mmio::SHM_SEL,
    mmio::QUEUE_RESET,
    mmio::CONFIG,
];

#[derive(Arbitrary, Debug)]
enum Op {
    Read {
        offset: u16,
        size: u8,
    },
    Write {
        offset: u16,
        size: u8,
        value: u64,
    },
    Register {
        reg: u8,
        value: u32,
    },
    Notify(u16),
    /// Raw bytes into RAM at `offset` (from RAM_BASE, wrapping inside RAM).
    Memory {
        offset: u16,
        bytes: crate::Bytes,
    },
    /// Descriptor `index` of queue `queue`'s table, pointing `offset` into RAM.
    Descriptor {
        queue: u8,
        index: u16,
        offset: u16,
        len: u32,
        flags: u16,
        next: u16,
    },
    /// Descriptor `index` of queue `queue` at a raw guest address.
    RawDescriptor {
        queue: u8,
        index: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    },
    /// Makes `head` available on queue `queue` (ring entry and idx).
    Avail {
        queue: u8,
        head: u16,
    },
    /// Sets the available ring's flags or used_event.
    AvailField {
        queue: u8,
        event: bool,
        value: u16,
    },
    /// A well-behaved bring-up: reset, features `features & offered`, every queue of
    /// size `size` in its own page, DRIVER_OK.
    Setup {
        features: u64,
        size: u8,
    },
    Input(crate::Bytes),
    Poll,
    Resume,
    Reset,
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(kind) = Kind::arbitrary(&mut u) else {
        return;
    };
    match kind {
        Kind::Blk => drive(
            Blk::new(vdev::SyncBlock(MemDisk::new(DISK_SECTORS, false))).with_serial(b"fuzz"),
            u,
            |_, _| {},
        ),
        Kind::Rng => drive(Rng::new(Box::new(Entropy(0))), u, |_, _| {}),
        Kind::Console => drive(
            Console::new(Box::new(|_: &[u8]| {})),
            u,
            |c: &mut Console, b| {
                c.push_input(b);
            },
        ),
    }
}

fn layouts<D: VirtioDevice>(t: &MmioTransport<D>) -> Vec<QueueLayout> {
    (0..)
        .map_while(|q| t.queue(q))
        .map(|q| QueueLayout {
            desc: q.desc_addr,
            used: q.used_addr,
            size: q.size,
        })
        .collect()
}

struct Harness<D: VirtioDevice> {
    t: MmioTransport<D>,
    mem: CheckedMemory,
    line: Line,
}

impl<D: VirtioDevice> Harness<D> {
    fn read(&mut self, offset: u64, size: AccessSize) -> Option<u64> {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut self.line,
        };
        self.t.read(&mut ctx, offset, size).ok()
    }

    fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut self.line,
        };
        let _ = self.t.write(&mut ctx, offset, size, value);
    }

    fn reg(&mut self, offset: u64, value: u32) {
        self.write(offset, AccessSize::Word, u64::from(value));
    }

    /// A guest write to RAM: whatever the old contents handed over stays handed over
    /// (the device may still hold a chain it read from them).
    fn guest_write(&mut self, gpa: u64, bytes: &[u8]) {
        self.mem.snapshot();
        let _ = self.mem.ram.write(gpa, bytes);
    }

    fn descriptor(&mut self, queue: u8, index: u16, d: (u64, u32, u16, u16)) {
        let Some(q) = self.t.queue(usize::from(queue)) else {
            return;
        };
        let i = u64::from(index % q.size.max(1));
        let at = q.desc_addr.wrapping_add(i * ring::DESC_SIZE);
        let mut b = [0u8; ring::DESC_SIZE as usize];
        b[..8].copy_from_slice(&d.0.to_le_bytes());
        b[8..12].copy_from_slice(&d.1.to_le_bytes());
        b[12..14].copy_from_slice(&d.2.to_le_bytes());
        b[14..].copy_from_slice(&d.3.to_le_bytes());
        self.guest_write(at, &b);
    }

    fn avail(&mut self, queue: u8, head: u16) {
        let Some(q) = self.t.queue(usize::from(queue)) else {
            return;
        };
        let (avail, size) = (q.avail_addr, q.size.max(1));
        let idx_at = avail.wrapping_add(ring::IDX_OFFSET);
        let idx = self.mem.ram.read_u16(idx_at).unwrap_or(0);
        let slot = avail.wrapping_add(4 + u64::from(idx % size) * 2);
        self.guest_write(slot, &head.to_le_bytes());
        self.guest_write(idx_at, &idx.wrapping_add(1).to_le_bytes());
    }

    fn avail_field(&mut self, queue: u8, event: bool, value: u16) {
        let Some(q) = self.t.queue(usize::from(queue)) else {
            return;
        };
        let at = if event {
            q.avail_addr + 4 + u64::from(q.size) * 2
        } else {
            q.avail_addr
        };
        self.guest_write(at, &value.to_le_bytes());
    }

    fn setup(&mut self, wanted: u64, size: u8) {
        self.reg(mmio::STATUS, 0);
        self.reg(mmio::STATUS, status::ACKNOWLEDGE);
        self.reg(mmio::STATUS, status::ACKNOWLEDGE | status::DRIVER);
        let offered = self.t.offered_features();
        let accept = offered & wanted;
        for (sel, word) in [(0, accept as u32), (1, (accept >> 32) as u32)] {
            self.reg(mmio::DRIVER_FEATURES_SEL, sel);
            self.reg(mmio::DRIVER_FEATURES, word);
        }
        let drv = status::ACKNOWLEDGE | status::DRIVER;
        self.reg(mmio::STATUS, drv | status::FEATURES_OK);
        let n = layouts(&self.t).len();
        for q in 0..n {
            let max = self.t.queue(q).map_or(1, |q| q.max_size);
            let size = (1u16 << (size % 6)).min(max).min(SETUP_MAX_QUEUE);
            let page = RAM_BASE + q as u64 * QUEUE_PAGE;
            self.guest_write(page, &[0; QUEUE_PAGE as usize]);
            self.reg(mmio::QUEUE_SEL, q as u32);
            self.reg(mmio::QUEUE_NUM, u32::from(size));
            for (lo, hi, addr) in [
                (mmio::QUEUE_DESC_LOW, mmio::QUEUE_DESC_HIGH, page),
                (
                    mmio::QUEUE_DRIVER_LOW,
                    mmio::QUEUE_DRIVER_HIGH,
                    page + AVAIL_OFFSET,
                ),
                (
                    mmio::QUEUE_DEVICE_LOW,
                    mmio::QUEUE_DEVICE_HIGH,
                    page + USED_OFFSET,
                ),
            ] {
                self.reg(lo, addr as u32);
                self.reg(hi, (addr >> 32) as u32);
            }
            self.reg(mmio::QUEUE_READY, 1);
        }
        self.reg(mmio::STATUS, drv | status::FEATURES_OK | status::DRIVER_OK);
    }

    fn check(&self) {
        assert_eq!(
            self.line.level,
            self.t.interrupt_status() != 0,
            "interrupt line disagrees with InterruptStatus {:#x}",
            self.t.interrupt_status()
        );
        assert!(!self.line.other, "the transport drove another INTID");
    }
}

fn ram_addr(offset: u16) -> u64 {
    RAM_BASE + u64::from(offset) % RAM_SIZE as u64
}

/// Runs the operations of `u` against `device`; `input` feeds host-side input.
fn drive<D: VirtioDevice>(device: D, mut u: Unstructured, input: fn(&mut D, &[u8])) {
    let mut h = Harness {
        t: MmioTransport::new(device, INTID),
        mem: CheckedMemory {
            ram: VecMemory::new(RAM_BASE, RAM_SIZE),
            queues: Vec::new(),
            allowed: RangeSet::default(),
        },
        line: Line::default(),
    };
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        h.mem.queues = layouts(&h.t);
        h.mem.snapshot();
        match op {
            Op::Read { offset, size } => {
                let size = crate::access_size(size);
                if let Some(v) = h.read(u64::from(offset), size) {
                    assert_eq!(v & !size.mask(), 0, "read wider than the access");
                }
            }
            Op::Write {
                offset,
                size,
                value,
            } => h.write(u64::from(offset), crate::access_size(size), value),
            Op::Register { reg, value } => {
                let off = REGISTERS[usize::from(reg) % REGISTERS.len()];
                h.reg(off, value);
            }
            Op::Notify(q) => h.reg(mmio::QUEUE_NOTIFY, u32::from(q)),
            Op::Memory { offset, bytes } => {
                let at = ram_addr(offset);
                let room = (RAM_BASE + RAM_SIZE as u64 - at) as usize;
                h.guest_write(at, &bytes.0[..bytes.0.len().min(room)]);
            }
            Op::Descriptor {
                queue,
                index,
                offset,
                len,
                flags,
                next,
            } => h.descriptor(queue, index, (ram_addr(offset), len, flags, next)),
            Op::RawDescriptor {
                queue,
                index,
                addr,
                len,
                flags,
                next,
            } => h.descriptor(queue, index, (addr, len, flags, next)),
            Op::Avail { queue, head } => h.avail(queue, head),
            Op::AvailField {
                queue,
                event,
                value,
            } => h.avail_field(queue, event, value),
            Op::Setup { features, size } => h.setup(features, size),
            Op::Input(bytes) => {
                input(h.t.device_mut(), &bytes.0);
                h.t.poll(&mut h.mem, &mut h.line);
            }
            Op::Poll => h.t.poll(&mut h.mem, &mut h.line),
            Op::Resume => {
                let mut ctx = MmioContext {
                    vcpu: 0,
                    mem: &mut h.mem,
                    irq: &mut h.line,
                };
                h.t.resume(&mut ctx);
            }
            Op::Reset => MmioDevice::reset(&mut h.t, &mut h.line),
        }
        h.check();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn memory(queues: Vec<QueueLayout>) -> CheckedMemory {
        CheckedMemory {
            ram: VecMemory::new(RAM_BASE, RAM_SIZE),
            queues,
            allowed: RangeSet::default(),
        }
    }

    #[test]
    fn table_entries_clipped_to_ram() {
        let end = RAM_BASE + RAM_SIZE as u64;
        assert_eq!(entries_in_ram(RAM_BASE, 8), 0..8);
        assert_eq!(entries_in_ram(RAM_BASE - 32, 8), 2..8);
        assert_eq!(entries_in_ram(end - 48, 8), 0..3);
        assert_eq!(entries_in_ram(end, 8), 0..0);
        assert_eq!(entries_in_ram(0, u64::MAX).end, end / ring::DESC_SIZE);
    }

    #[test]
    fn writes_only_where_the_guest_allowed() {
        let q = QueueLayout {
            desc: RAM_BASE,
            used: RAM_BASE + 0x800,
            size: 4,
        };
        let mut m = memory(vec![q]);
        // Descriptor 1: a 64-byte device-writable buffer at RAM_BASE + 0x4000.
        let mut d = Vec::new();
        d.extend((RAM_BASE + 0x4000).to_le_bytes());
        d.extend(64u32.to_le_bytes());
        d.extend(ring::DESC_F_WRITE.to_le_bytes());
        d.extend(0u16.to_le_bytes());
        m.ram.write(RAM_BASE + 16, &d).unwrap();
        m.snapshot();
        m.write(RAM_BASE + 0x4000, &[1; 64]).unwrap();
        m.write(RAM_BASE + 0x800 + 4, &[1; 8]).unwrap();
        let outside = std::panic::catch_unwind(move || {
            let mut m = m;
            let _ = m.write(RAM_BASE + 0x4000 + 60, &[1; 8]);
        });
        assert!(outside.is_err(), "a write past the buffer went unnoticed");
    }
}
