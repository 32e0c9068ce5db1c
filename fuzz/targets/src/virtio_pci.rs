//! `virtio_pci`: the virtio 1.2 PCI transport (`pci::virtio::VirtioFunction`) of
//! virtio-blk, -rng or -console behind the PCIe root complex: common-configuration
//! accesses of any offset, width and value (including the 64-bit queue address
//! fields as halves and past the structure), notifications at any offset of the
//! notification area, ISR reads, device-configuration accesses, Bus Master Enable
//! and MSI-X Enable toggled, MSI-X table entries with garbage or the doorbell,
//! fuzzed guest RAM under a queue a well-behaved bring-up set up, available-ring
//! entries published and notified, polls, VM resets, and accesses through the
//! VIRTIO_PCI_CAP_PCI_CFG window aimed anywhere.
//!
//! Invariants: reads carry no bits outside the access; guest RAM changes only
//! while Bus Master Enable is set; messages reach the MSI controller only while
//! MSI-X is enabled, unmasked and bus mastering is on; the device status holds only
//! driver bits and DEVICE_NEEDS_RESET; a vector register reads back NO_VECTOR or a
//! vector the table has; `num_queues` and `queue_notify_off` are what the device
//! has; reading ISR lowers INTx; the identity never changes; no INTID but the
//! function's INTx SPI is driven.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arbitrary::{Arbitrary, Unstructured};
use pci::defs::{cap_id::VENDOR_SPECIFIC, msix_cap, reg, virt, IntxPin, COMMAND};
use pci::virtio::{
    class_of, VirtioFunction, COMMON_OFFSET, DEVICE_OFFSET, ISR_OFFSET, MSIX_TABLE_OFFSET,
    NOTIFY_OFFSET,
};
use pci::{intx_intid, Layout, MsiController, RootComplex, Window};
use vdev::{AccessSize, GuestMemory, InterruptSink, MmioContext, VecMemory};
use virtio::defs::pci::{common, NO_VECTOR};
use virtio::defs::{device_id, features, status};
use virtio::testing::MemDisk;
use virtio::{Blk, Console, EntropyError, EntropySource, Rng};

use crate::{Bytes, Encoder};

const RAM: Window = Window {
    base: 0x4000_0000,
    size: 0x1_0000,
};
const DOORBELL: u64 = 0x0802_0040;
const DEVICE: u8 = 1;
const BAR0: u64 = virt::MMIO_BASE + 0x10_0000;
/// Where the bring-up puts queue 0's rings.
const DESC: u64 = RAM.base + 0x1000;
const AVAIL: u64 = RAM.base + 0x2000;
const USED: u64 = RAM.base + 0x3000;

struct Counter(u8);

impl EntropySource for Counter {
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError> {
        for b in buf {
            self.0 = self.0.wrapping_add(1);
            *b = self.0;
        }
        Ok(())
    }
}

#[derive(Clone, Default)]
struct Doorbell(Arc<Mutex<Vec<u32>>>);

impl MsiController for Doorbell {
    fn deliver(&mut self, address: u64, data: u32, _irq: &mut dyn InterruptSink) -> bool {
        if address != DOORBELL {
            return false;
        }
        self.0.lock().unwrap().push(data);
        true
    }
}

#[derive(Default)]
struct Lines(BTreeMap<u32, bool>);

impl InterruptSink for Lines {
    fn set_level(&mut self, intid: u32, level: bool) {
        let inta = intx_intid(&Layout::virt(false), DEVICE, IntxPin::IntA);
        assert_eq!(intid, inta, "INTID {intid} is not the function's INTx");
        self.0.insert(intid, level);
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// An access in the common-configuration page (offsets past the structure too).
    Common {
        offset: u8,
        size: u8,
        value: u64,
        write: bool,
    },
    /// A notification at any offset of the notification page.
    Notify {
        offset: u16,
    },
    Isr,
    DeviceConfig {
        offset: u16,
        size: u8,
        value: u64,
        write: bool,
    },
    BusMaster(bool),
    MsixControl {
        enable: bool,
        mask: bool,
    },
    Vector {
        vector: u8,
        doorbell: bool,
        address: u64,
        data: u32,
        masked: bool,
    },
    /// Guest RAM written by the "CPU" (rings, descriptors, requests).
    Ram {
        offset: u16,
        bytes: Bytes,
    },
    /// A well-behaved bring-up: queue 0 of `size` at DESC/AVAIL/USED on vector 1,
    /// config on vector 0, DRIVER_OK.
    BringUp {
        size: u16,
    },
    /// Head `head` published in queue 0's available ring, then a notification.
    Publish {
        head: u16,
    },
    Poll,
    Reset,
    /// The VIRTIO_PCI_CAP_PCI_CFG window aimed at any BAR, offset and length,
    /// then its data field read or written.
    Window {
        bar: u8,
        offset: u32,
        length: u8,
        value: u32,
        write: bool,
    },
}

struct Harness {
    rc: RootComplex,
    mem: VecMemory,
    lines: Lines,
    msis: Doorbell,
    device_id: u16,
    queues: u64,
    vectors: u64,
}

fn cfg_addr(reg: u64) -> u64 {
    virt::ECAM_BASE + (u64::from(DEVICE) << 15) + reg
}

impl Harness {
    /// The VIRTIO_PCI_CAP_PCI_CFG capability's offset in configuration space.
    fn window_cap(&mut self) -> u64 {
        let b = AccessSize::Byte;
        let rd = |h: &mut Harness, r: u64| h.access(cfg_addr(r), b, None).expect("ECAM read");
        let mut at = rd(self, reg::CAPABILITIES_POINTER as u64);
        while at != 0 {
            if rd(self, at) == u64::from(VENDOR_SPECIFIC)
                && rd(self, at + 3) == u64::from(pci::virtio::CAP_PCI_CFG)
            {
                return at;
            }
            at = rd(self, at + 1);
        }
        panic!("virtio-pci function without the VIRTIO_PCI_CAP_PCI_CFG capability");
    }

    fn new(model: u8) -> Harness {
        let mut rc = RootComplex::new(Layout::virt(false), &[RAM]).expect("virt layout");
        let (f, id, queues): (Box<dyn pci::PciFunction + Send>, u32, u64) = match model % 3 {
            0 => (
                Box::new(VirtioFunction::new(
                    Blk::new(vdev::SyncBlock(MemDisk::new(16, false))),
                    class_of(device_id::BLOCK),
                )),
                device_id::BLOCK,
                1,
            ),
            1 => (
                Box::new(VirtioFunction::new(
                    Rng::new(Box::new(Counter(0))),
                    class_of(device_id::ENTROPY),
                )),
                device_id::ENTROPY,
                1,
            ),
            _ => (
                Box::new(VirtioFunction::new(
                    Console::new(Box::new(|_: &[u8]| {})),
                    class_of(device_id::CONSOLE),
                )),
                device_id::CONSOLE,
                2,
            ),
        };
        rc.attach(DEVICE, f).expect("virtio function attaches");
        let msis = Doorbell::default();
        rc.set_msi_controller(Box::new(msis.clone()));
        let mut h = Harness {
            rc,
            mem: VecMemory::new(RAM.base, RAM.size as usize),
            lines: Lines::default(),
            msis,
            device_id: 0x1040 + id as u16,
            queues,
            vectors: queues + 1,
        };
        h.place();
        h
    }

    /// BAR0 placed, memory and bus mastering on, MSI-X enabled.
    fn place(&mut self) {
        self.access(cfg_addr(reg::BAR0 as u64), AccessSize::Word, Some(BAR0));
        self.access(cfg_addr(reg::BAR0 as u64 + 4), AccessSize::Word, Some(0));
        self.access(cfg_addr(reg::COMMAND as u64), AccessSize::Half, Some(0x6));
        self.msix_control(true, false);
    }

    fn access(&mut self, gpa: u64, size: AccessSize, write: Option<u64>) -> Option<u64> {
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut self.lines,
        };
        let v = self.rc.access(&mut ctx, gpa, size, write).ok()?;
        if write.is_none() {
            assert_eq!(v & !size.mask(), 0, "read of {gpa:#x} too wide");
        }
        Some(v)
    }

    fn common(&mut self, field: u64, size: AccessSize, write: Option<u64>) -> Option<u64> {
        self.access(BAR0 + COMMON_OFFSET + field, size, write)
    }

    fn msix_control(&mut self, enable: bool, mask: bool) {
        let mut at = self
            .access(
                cfg_addr(reg::CAPABILITIES_POINTER as u64),
                AccessSize::Byte,
                None,
            )
            .expect("capability pointer");
        while self.access(cfg_addr(at), AccessSize::Byte, None) != Some(0x11) {
            at = self
                .access(cfg_addr(at + 1), AccessSize::Byte, None)
                .expect("next capability");
            assert_ne!(at, 0, "no MSI-X capability");
        }
        let v = u64::from(enable) << 15 | u64::from(mask) << 14;
        let at = cfg_addr(at + msix_cap::MESSAGE_CONTROL as u64);
        self.access(at, AccessSize::Half, Some(v));
    }

    fn bring_up(&mut self, size: u16) {
        let st = |h: &mut Self, v: u32| {
            h.common(common::DEVICE_STATUS, AccessSize::Byte, Some(u64::from(v)));
        };
        st(self, 0);
        st(self, status::ACKNOWLEDGE | status::DRIVER);
        self.common(common::DRIVER_FEATURE_SELECT, AccessSize::Word, Some(1));
        let v1 = features::VERSION_1 >> 32;
        self.common(common::DRIVER_FEATURE, AccessSize::Word, Some(v1));
        st(
            self,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK,
        );
        self.common(common::QUEUE_SELECT, AccessSize::Half, Some(0));
        self.common(common::QUEUE_SIZE, AccessSize::Half, Some(u64::from(size)));
        self.common(common::QUEUE_MSIX_VECTOR, AccessSize::Half, Some(1));
        self.common(common::QUEUE_DESC, AccessSize::Double, Some(DESC));
        self.common(common::QUEUE_DRIVER, AccessSize::Double, Some(AVAIL));
        self.common(common::QUEUE_DEVICE, AccessSize::Double, Some(USED));
        self.common(common::QUEUE_ENABLE, AccessSize::Half, Some(1));
        self.common(common::CONFIG_MSIX_VECTOR, AccessSize::Half, Some(0));
        st(
            self,
            status::ACKNOWLEDGE | status::DRIVER | status::FEATURES_OK | status::DRIVER_OK,
        );
    }

    fn check(&mut self, ram_before: &[u8], msis_before: usize, bm_before: bool) {
        let c = self.rc.config(DEVICE).expect("device");
        let bm = c.command().is_set(COMMAND::BUS_MASTER_ENABLE);
        let can_send = c.msix_unmasked() && bm;
        if !bm && !bm_before {
            assert!(
                self.mem.as_bytes() == ram_before,
                "guest RAM changed without bus mastering"
            );
        }
        if self.msis.0.lock().unwrap().len() > msis_before {
            assert!(can_send, "a message from a function that may not send");
        }
        // Registers that only the device sets.
        let id = self.access(cfg_addr(0), AccessSize::Word, None);
        assert_eq!(id, Some(u64::from(self.device_id) << 16 | 0x1af4));
        if let Some(s) = self.common(common::DEVICE_STATUS, AccessSize::Byte, None) {
            let allowed = status::DRIVER_BITS | status::DEVICE_NEEDS_RESET;
            assert_eq!(s as u32 & !allowed, 0, "status {s:#x}");
        }
        if let Some(n) = self.common(common::NUM_QUEUES, AccessSize::Half, None) {
            assert_eq!(n, self.queues);
        }
        for field in [common::CONFIG_MSIX_VECTOR, common::QUEUE_MSIX_VECTOR] {
            if let Some(v) = self.common(field, AccessSize::Half, None) {
                assert!(
                    v == u64::from(NO_VECTOR) || v < self.vectors,
                    "vector {v} at {field:#x}"
                );
            }
        }
        let sel = self.common(common::QUEUE_SELECT, AccessSize::Half, None);
        let off = self.common(common::QUEUE_NOTIFY_OFF, AccessSize::Half, None);
        if let (Some(sel), Some(off)) = (sel, off) {
            assert_eq!(off, if sel < self.queues { sel } else { 0 });
        }
    }

    fn op(&mut self, op: Op) {
        let ram_before = self.mem.as_bytes().to_vec();
        let msis_before = self.msis.0.lock().unwrap().len();
        let bm_before = self
            .rc
            .config(DEVICE)
            .expect("device")
            .command()
            .is_set(COMMAND::BUS_MASTER_ENABLE);
        let mut ram_written = false;
        match op {
            Op::Common {
                offset,
                size,
                value,
                write,
            } => {
                let size = crate::access_size(size);
                self.common(u64::from(offset), size, write.then_some(value));
            }
            Op::Notify { offset } => {
                let at = BAR0 + NOTIFY_OFFSET + u64::from(offset % 0x1000);
                self.access(at, AccessSize::Half, Some(0));
            }
            Op::Isr => {
                self.access(BAR0 + ISR_OFFSET, AccessSize::Byte, None);
                let low = self.lines.0.values().all(|l| !l);
                assert!(low, "INTx still high after reading ISR");
            }
            Op::DeviceConfig {
                offset,
                size,
                value,
                write,
            } => {
                let at = BAR0 + DEVICE_OFFSET + u64::from(offset % 0x1000);
                self.access(at, crate::access_size(size), write.then_some(value));
            }
            Op::BusMaster(on) => {
                let v = if on { 0x6 } else { 0x2 };
                self.access(cfg_addr(reg::COMMAND as u64), AccessSize::Half, Some(v));
            }
            Op::MsixControl { enable, mask } => self.msix_control(enable, mask),
            Op::Vector {
                vector,
                doorbell,
                address,
                data,
                masked,
            } => {
                let e = BAR0 + MSIX_TABLE_OFFSET + u64::from(vector) % self.vectors * 16;
                let address = if doorbell { DOORBELL } else { address };
                self.access(e, AccessSize::Double, Some(address));
                self.access(e + 8, AccessSize::Word, Some(u64::from(data)));
                self.access(e + 12, AccessSize::Word, Some(u64::from(masked)));
            }
            Op::Ram { offset, bytes } => {
                let at = u64::from(offset) % RAM.size;
                let n = bytes.0.len().min((RAM.size - at) as usize);
                let _ = self.mem.write(RAM.base + at, &bytes.0[..n]);
                ram_written = true;
            }
            Op::BringUp { size } => self.bring_up(size),
            Op::Publish { head } => {
                // The CPU writes the ring; the device only sees it on the notify.
                if let Ok(idx) = self.mem.read_u16(AVAIL + 2) {
                    let _ = self.mem.write_u16(AVAIL + 4 + 2 * u64::from(idx % 8), head);
                    let _ = self.mem.write_u16(AVAIL + 2, idx.wrapping_add(1));
                }
                ram_written = true;
                let before = self.mem.as_bytes().to_vec();
                self.access(BAR0 + NOTIFY_OFFSET, AccessSize::Half, Some(0));
                let bm = self
                    .rc
                    .config(DEVICE)
                    .expect("device")
                    .command()
                    .is_set(COMMAND::BUS_MASTER_ENABLE);
                if !bm {
                    assert!(
                        self.mem.as_bytes() == before,
                        "the device wrote RAM without bus mastering"
                    );
                }
            }
            Op::Poll => {
                let mut ctx = MmioContext {
                    vcpu: 0,
                    mem: &mut self.mem,
                    irq: &mut self.lines,
                };
                self.rc.poll(&mut ctx);
            }
            Op::Reset => {
                self.rc.reset(&mut self.lines);
                self.place();
            }
            Op::Window {
                bar,
                offset,
                length,
                value,
                write,
            } => {
                let at = self.window_cap();
                let w = AccessSize::Word;
                self.access(cfg_addr(at + 4), AccessSize::Byte, Some(u64::from(bar)));
                self.access(cfg_addr(at + 8), w, Some(u64::from(offset)));
                self.access(cfg_addr(at + 12), w, Some(u64::from(length)));
                self.access(cfg_addr(at + 16), w, write.then_some(u64::from(value)));
            }
        }
        // The CPU's own writes are not the device's.
        let before = if ram_written {
            self.mem.as_bytes().to_vec()
        } else {
            ram_before
        };
        self.check(&before, msis_before, bm_before);
    }
}

pub fn run(data: &[u8]) {
    let Some((&model, rest)) = data.split_first() else {
        return;
    };
    let mut u = Unstructured::new(rest);
    let mut h = Harness::new(model);
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        h.op(op);
    }
}

/// `Op` variants, in declaration order.
mod op {
    pub const COUNT: u32 = 13;
    pub const COMMON: u32 = 0;
    pub const NOTIFY: u32 = 1;
    pub const ISR: u32 = 2;
    pub const BUS_MASTER: u32 = 4;
    pub const VECTOR: u32 = 6;
    pub const RAM: u32 = 7;
    pub const BRING_UP: u32 = 8;
    pub const PUBLISH: u32 = 9;
    pub const RESET: u32 = 11;
}

/// A virtio-blk read of sector 1 (descriptors 0..3) written into RAM at DESC.
fn blk_read_chain(e: &mut Encoder) {
    let mut ram = vec![0u8; 0x40];
    let buf = RAM.base + 0x4000;
    let descs = [
        (buf, 16u32, 1u16, 1u16),
        (buf + 0x100, 512, 3, 2),
        (buf + 0x80, 1, 2, 0),
    ];
    for (i, (addr, len, flags, next)) in descs.iter().enumerate() {
        let d = &mut ram[i * 16..i * 16 + 16];
        d[..8].copy_from_slice(&addr.to_le_bytes());
        d[8..12].copy_from_slice(&len.to_le_bytes());
        d[12..14].copy_from_slice(&flags.to_le_bytes());
        d[14..16].copy_from_slice(&next.to_le_bytes());
    }
    e.variant(op::RAM, op::COUNT).u16(0x1000).bytes(&ram);
    let mut req = vec![0u8; 16];
    req[8..16].copy_from_slice(&1u64.to_le_bytes());
    e.variant(op::RAM, op::COUNT).u16(0x4000).bytes(&req);
}

/// Seeds: a blk bring-up with a read request served and the vector aimed at the
/// doorbell; the same with garbage in the table, bad queue sizes, stray
/// notifications and bus mastering switched off.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut up = Encoder::default();
    up.u8(0);
    up.variant(op::VECTOR, op::COUNT)
        .u8(1)
        .bool(true)
        .u64(0)
        .u32(7)
        .bool(false);
    up.variant(op::BRING_UP, op::COUNT).u16(8);
    blk_read_chain(&mut up);
    up.variant(op::PUBLISH, op::COUNT).u16(0);
    up.variant(op::ISR, op::COUNT);

    let mut hostile = Encoder::default();
    hostile.u8(0);
    hostile
        .variant(op::VECTOR, op::COUNT)
        .u8(1)
        .bool(false)
        .u64(0xdead_beef_0000_0001)
        .u32(0xffff_ffff)
        .bool(false);
    hostile.variant(op::BRING_UP, op::COUNT).u16(3);
    hostile.variant(op::RESET, op::COUNT);
    hostile.variant(op::BRING_UP, op::COUNT).u16(8);
    for off in [4u16, 2, 0xffe] {
        hostile.variant(op::NOTIFY, op::COUNT).u16(off);
    }
    hostile
        .variant(op::COMMON, op::COUNT)
        .u8(common::QUEUE_MSIX_VECTOR as u8)
        .u8(1)
        .u64(0x7ff)
        .bool(true);
    blk_read_chain(&mut hostile);
    hostile.variant(op::BUS_MASTER, op::COUNT).bool(false);
    hostile.variant(op::PUBLISH, op::COUNT).u16(0);
    hostile.variant(op::BUS_MASTER, op::COUNT).bool(true);

    let mut console = Encoder::default();
    console.u8(2);
    console.variant(op::BRING_UP, op::COUNT).u16(4);
    console
        .variant(op::COMMON, op::COUNT)
        .u8(common::QUEUE_SELECT as u8)
        .u8(1)
        .u64(1)
        .bool(true);
    console
        .variant(op::COMMON, op::COUNT)
        .u8(common::QUEUE_NOTIFY_OFF as u8)
        .u8(1)
        .u64(0)
        .bool(false);
    vec![
        ("blk-bring-up", up.0),
        ("hostile", hostile.0),
        ("console", console.0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bring-up seed really serves the request: the used ring moves, the
    /// status byte is OK and the queue's vector reaches the doorbell.
    #[test]
    fn the_bring_up_seed_serves_a_read() {
        let data = &seeds()[0].1;
        let mut u = Unstructured::new(&data[1..]);
        let mut h = Harness::new(data[0]);
        while !u.is_empty() {
            h.op(Op::arbitrary(&mut u).unwrap());
        }
        assert_eq!(h.mem.read_u16(USED + 2).unwrap(), 1);
        let mut s = [0xffu8];
        h.mem.read(RAM.base + 0x4080, &mut s).unwrap();
        assert_eq!(s[0], 0);
        assert_eq!(*h.msis.0.lock().unwrap(), [7]);
    }
}
