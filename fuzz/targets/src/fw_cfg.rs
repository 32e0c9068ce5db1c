//! `fw_cfg`: the firmware configuration device of the `uefi-acpi` profile (with its
//! ACPI files, `bootorder` and the writable `etc/ramfb`) driven by register
//! accesses of any offset and width, selector writes, DMA operations whose
//! descriptor and buffer lie in, across the edge of, or outside a small guest RAM,
//! guest RAM writes, resets and save/restore cycles.
//!
//! Invariants: reads carry no bits outside the access; a DMA operation changes guest
//! RAM only in its descriptor's control field (left 0 or the error bit) and in its
//! own buffer; a ramfb configuration the device accepts is one `RamfbConfig::parse`
//! accepts and fits the address space; a saved state restores into a fresh device
//! that saves the same bytes.

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use uefi_devices::fw_cfg::{dma, key, reg, FwCfg, FwCfgBuilder, RamfbConfig};
use vdev::{
    AccessSize, GuestMemory, MmioContext, MmioDevice, NullInterrupts, SaveRestore, VecMemory,
};

use crate::{Bytes, Encoder};

/// Guest RAM: 64 KiB at the start of `virt`'s RAM.
const RAM: u64 = 0x4000_0000;
const RAM_SIZE: usize = 0x1_0000;

/// The device every input starts from (building the ACPI tables once).
fn device() -> FwCfg {
    static DEVICE: OnceLock<FwCfg> = OnceLock::new();
    DEVICE
        .get_or_init(|| {
            let cfg = acpi_gen::profile::uefi_acpi(2, None, &[0, 30, 31]);
            let tables = acpi_gen::build(&cfg).expect("the profile builds");
            let mut b = FwCfgBuilder::new().cpus(2);
            b.acpi(&acpi_gen::AcpiBlobs::new(&tables))
                .expect("acpi files");
            b.bootorder(&["/virtio-mmio@000000000a000000"])
                .expect("bootorder");
            b.ramfb().expect("ramfb");
            b.build()
        })
        .clone()
}

/// A guest address: inside RAM (at an offset), or anywhere.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Addr {
    Ram(u16),
    Raw(u64),
}

impl Addr {
    fn gpa(self) -> u64 {
        match self {
            Addr::Ram(off) => RAM + u64::from(off) % RAM_SIZE as u64,
            Addr::Raw(a) => a,
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Op {
    Read {
        offset: u8,
        size: u8,
    },
    Write {
        offset: u8,
        size: u8,
        value: u64,
    },
    /// A selector write as EDK2 makes it (big-endian).
    Select {
        key: u16,
    },
    /// A DMA operation: the descriptor written at `desc` (when that is RAM), then
    /// triggered with one 64-bit write or the two 32-bit halves.
    Dma {
        desc: Addr,
        control: u32,
        length: u32,
        address: Addr,
        halves: bool,
    },
    Memory {
        offset: u16,
        bytes: Bytes,
    },
    Reset,
    SaveRestore,
}

struct Harness {
    dev: FwCfg,
    mem: VecMemory,
}

impl Harness {
    fn read(&mut self, offset: u64, size: AccessSize) {
        let mut irq = NullInterrupts;
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut irq,
        };
        if let Ok(v) = self.dev.read(&mut ctx, offset, size) {
            assert_eq!(v & !size.mask(), 0, "fw_cfg {offset:#x} read too wide");
        }
    }

    fn write(&mut self, offset: u64, size: AccessSize, value: u64) {
        let mut irq = NullInterrupts;
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut self.mem,
            irq: &mut irq,
        };
        let _ = self.dev.write(&mut ctx, offset, size, value);
    }

    fn dma(&mut self, desc: u64, control: u32, length: u32, address: u64, halves: bool) {
        let mut d = Vec::with_capacity(dma::DESCRIPTOR_LEN);
        d.extend_from_slice(&control.to_be_bytes());
        d.extend_from_slice(&length.to_be_bytes());
        d.extend_from_slice(&address.to_be_bytes());
        let _ = self.mem.write(desc, &d);
        let before = self.mem.as_bytes().to_vec();
        if halves {
            let high = (desc >> 32) as u32;
            self.write(reg::DMA, AccessSize::Word, u64::from(high.swap_bytes()));
            let low = desc as u32;
            self.write(reg::DMA_LOW, AccessSize::Word, u64::from(low.swap_bytes()));
        } else {
            self.write(reg::DMA, AccessSize::Double, desc.swap_bytes());
        }
        let after = self.mem.as_bytes();
        let in_range = |gpa: u64, start: u64, len: u64| gpa >= start && gpa - start < len;
        // Whole chunks compare with one memcmp (uninstrumented: comparing 64 KiB
        // byte by byte under coverage tracing cost ~1 ms an operation); only a
        // chunk that differs is walked byte by byte.
        const CHUNK: usize = 256;
        for (c, (ca, cb)) in before.chunks(CHUNK).zip(after.chunks(CHUNK)).enumerate() {
            if ca == cb {
                continue;
            }
            for (j, (a, b)) in ca.iter().zip(cb).enumerate() {
                if a == b {
                    continue;
                }
                let gpa = RAM + (c * CHUNK + j) as u64;
                assert!(
                    in_range(gpa, desc, 4) || in_range(gpa, address, u64::from(length)),
                    "DMA (desc {desc:#x}, {length:#x} bytes at {address:#x}) changed RAM at {gpa:#x}"
                );
            }
        }
        if let Ok(status) = self.mem.read_u32(desc) {
            let status = u32::from_be(status.to_le());
            // The control field is the status only if the descriptor itself was
            // read; a descriptor straddling RAM's end gets the error bit.
            let whole = self.mem.read(desc, &mut [0u8; dma::DESCRIPTOR_LEN]).is_ok();
            let overwritten_by_data = in_range(desc, address, u64::from(length));
            if !overwritten_by_data {
                if whole {
                    assert!(
                        status == 0 || status == dma::ERROR,
                        "DMA status {status:#x}"
                    );
                } else {
                    assert_eq!(status, dma::ERROR, "a cut descriptor did not fail");
                }
            }
        }
        self.check_ramfb();
    }

    fn check_ramfb(&self) {
        if let Some(fb) = self.dev.ramfb() {
            let bytes = self.dev.file("etc/ramfb").expect("etc/ramfb");
            assert_eq!(RamfbConfig::parse(bytes), Some(fb));
            assert!(fb.addr.checked_add(fb.len()).is_some());
            assert!(u64::from(fb.stride) >= u64::from(fb.width) * 4);
        }
    }
}

/// Runs one input.
pub fn run(data: &[u8]) {
    run_ops(data);
}

fn run_ops(data: &[u8]) -> Harness {
    let mut u = Unstructured::new(data);
    let mut h = Harness {
        dev: device(),
        mem: VecMemory::new(RAM, RAM_SIZE),
    };
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        match op {
            // A little past the window too: those must be refused, not panic.
            Op::Read { offset, size } => {
                let offset = u64::from(offset) % (reg::WINDOW + 0x10);
                h.read(offset, crate::access_size(size));
            }
            Op::Write {
                offset,
                size,
                value,
            } => {
                let offset = u64::from(offset) % (reg::WINDOW + 0x10);
                h.write(offset, crate::access_size(size), value);
                h.check_ramfb();
            }
            Op::Select { key } => {
                h.write(reg::SELECTOR, AccessSize::Half, u64::from(key.swap_bytes()));
            }
            Op::Dma {
                desc,
                control,
                length,
                address,
                halves,
            } => h.dma(desc.gpa(), control, length, address.gpa(), halves),
            Op::Memory { offset, bytes } => {
                let at = RAM + u64::from(offset) % RAM_SIZE as u64;
                let n = bytes.0.len().min(RAM_SIZE - (at - RAM) as usize);
                let _ = h.mem.write(at, &bytes.0[..n]);
            }
            Op::Reset => {
                h.dev.reset(&mut NullInterrupts);
                assert_eq!(h.dev.ramfb(), None);
            }
            Op::SaveRestore => {
                let blob = h.dev.save();
                let mut fresh = device();
                fresh
                    .restore(&blob)
                    .expect("a saved state restores into a fresh device");
                assert!(fresh.save() == blob, "restored state saves differently");
                assert_eq!(fresh.ramfb(), h.dev.ramfb());
                h.dev = fresh;
            }
        }
    }
    h
}

/// `Op` variants, in declaration order.
mod op {
    pub const COUNT: u32 = 7;
    pub const READ: u32 = 0;
    pub const SELECT: u32 = 2;
    pub const DMA: u32 = 3;
    pub const MEMORY: u32 = 4;
    pub const RESET: u32 = 5;
    pub const SAVE_RESTORE: u32 = 6;
}

/// `Addr` variants.
fn ram(e: &mut Encoder, off: u16) {
    e.variant(0, 2).u16(off);
}
fn raw(e: &mut Encoder, a: u64) {
    e.variant(1, 2).u64(a);
}

const DESC: u16 = 0x100;
const BUF: u16 = 0x1000;
const DOUBLE: u8 = 3;

fn dma_op(
    e: &mut Encoder,
    desc: impl Fn(&mut Encoder),
    control: u32,
    len: u32,
    buf: impl Fn(&mut Encoder),
    halves: bool,
) {
    e.variant(op::DMA, op::COUNT);
    desc(e);
    e.u32(control).u32(len);
    buf(e);
    e.bool(halves);
}

fn select_read(k: u16) -> u32 {
    dma::SELECT | dma::READ | (u32::from(k) << dma::SELECTOR_SHIFT)
}

/// Seeds: EDK2's QemuFwCfgLib probing and fetching the ACPI files and configuring
/// ramfb, and a hostile guest.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    // Probe: signature through the data register, DMA signature, directory by DMA.
    let mut e = Encoder::default();
    e.variant(op::SELECT, op::COUNT).u16(key::SIGNATURE);
    e.variant(op::READ, op::COUNT).u8(reg::DATA as u8).u8(2);
    e.variant(op::READ, op::COUNT).u8(reg::DMA as u8).u8(DOUBLE);
    dma_op(
        &mut e,
        |e| ram(e, DESC),
        select_read(key::FILE_DIR),
        4 + 5 * 64,
        |e| ram(e, BUF),
        false,
    );
    // Every file in turn (keys 0x20.. in name order), then ramfb configured.
    for k in 0..5u16 {
        dma_op(
            &mut e,
            |e| ram(e, DESC),
            select_read(key::FILE_FIRST + k),
            0x800,
            |e| ram(e, BUF),
            k % 2 == 1,
        );
    }
    let mut fb = Vec::new();
    fb.extend_from_slice(&(RAM + 0x8000).to_be_bytes());
    fb.extend_from_slice(&u32::from_le_bytes(*b"XR24").to_be_bytes());
    fb.extend_from_slice(&0u32.to_be_bytes());
    fb.extend_from_slice(&64u32.to_be_bytes());
    fb.extend_from_slice(&32u32.to_be_bytes());
    fb.extend_from_slice(&256u32.to_be_bytes());
    e.variant(op::MEMORY, op::COUNT).u16(0x2000).bytes(&fb);
    // etc/ramfb is the fourth file (bootorder, etc/acpi/rsdp, etc/acpi/tables, etc/ramfb).
    let ramfb = key::FILE_FIRST + 3;
    let write = dma::SELECT | dma::WRITE | (u32::from(ramfb) << dma::SELECTOR_SHIFT);
    dma_op(
        &mut e,
        |e| ram(e, DESC),
        write,
        28,
        |e| ram(e, 0x2000),
        false,
    );
    e.variant(op::SAVE_RESTORE, op::COUNT);
    let edk2 = e.0;

    // Hostile: descriptors and buffers outside RAM, oversized selectors, writes to
    // read-only items, a descriptor across RAM's end.
    let mut e = Encoder::default();
    dma_op(
        &mut e,
        |e| raw(e, 0x0902_0000),
        select_read(0),
        4,
        |e| ram(e, BUF),
        false,
    );
    dma_op(
        &mut e,
        |e| ram(e, DESC),
        select_read(0x20),
        0x100,
        |e| raw(e, 0x4008_0000),
        false,
    );
    dma_op(
        &mut e,
        |e| ram(e, DESC),
        select_read(0x20),
        u32::MAX,
        |e| ram(e, BUF),
        false,
    );
    dma_op(
        &mut e,
        |e| raw(e, RAM + RAM_SIZE as u64 - 8),
        select_read(0x20),
        4,
        |e| ram(e, BUF),
        false,
    );
    dma_op(
        &mut e,
        |e| ram(e, DESC),
        dma::SELECT | dma::WRITE | (0x20 << dma::SELECTOR_SHIFT),
        4,
        |e| ram(e, BUF),
        true,
    );
    for k in [0x3fffu16, 0x8000, 0xffff, 0x4019] {
        e.variant(op::SELECT, op::COUNT).u16(k);
        e.variant(op::READ, op::COUNT).u8(0).u8(DOUBLE);
    }
    e.variant(op::SAVE_RESTORE, op::COUNT);
    e.variant(op::RESET, op::COUNT);
    vec![("edk2", edk2), ("hostile", e.0)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_edk2_seed_reads_the_directory_and_configures_ramfb() {
        let seeds = seeds();
        let h = run_ops(&seeds[0].1);
        let fb = h.dev.ramfb().expect("the seed configures ramfb");
        assert_eq!((fb.width, fb.height, fb.stride), (64, 32, 256));
        // The last file read by DMA into BUF is etc/table-loader: ALLOCATE first.
        let mut b = [0u8; 4];
        h.mem.read(RAM + u64::from(BUF), &mut b).unwrap();
        assert_eq!(u32::from_le_bytes(b), acpi_gen::loader::ALLOCATE);
    }

    #[test]
    fn the_hostile_seed_decodes_to_its_operations() {
        let seeds = seeds();
        let mut u = Unstructured::new(&seeds[1].1);
        let mut ops = Vec::new();
        while !u.is_empty() {
            ops.push(Op::arbitrary(&mut u).unwrap());
        }
        let dmas = ops.iter().filter(|o| matches!(o, Op::Dma { .. })).count();
        let selects = ops
            .iter()
            .filter(|o| matches!(o, Op::Select { .. }))
            .count();
        assert_eq!((dmas, selects, ops.len()), (5, 4, 15));
        assert!(matches!(ops.last(), Some(Op::Reset)));
    }
}
