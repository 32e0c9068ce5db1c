//! `gic_its`: the GICv3 ITS (`vgic::its`) of a 2-vCPU vGIC with LPIs over a 1 MiB
//! guest RAM: raw 32-byte commands and well-formed commands with fuzzed fields
//! queued at GITS_CWRITER, register accesses of any offset, width and value in both
//! frames (CBASER, BASERs, CWRITER with Retry, CTLR), guest RAM writes (the queue,
//! the tables, the LPI configuration table), redistributor LPI registers
//! (GICR_CTLR, PROPBASER, PENDBASER), messages from any DeviceID/EventID, flushes
//! into fake list registers with the guest acknowledging, resets, and save/restore
//! cycles (the ITS's `VITS` and the vGIC's blob with its LPI section, restored
//! into fresh models that save the same bytes, which then carry on).
//!
//! Invariants: reads carry no bits outside the access; GITS_CREADR stays inside
//! the queue; the error count never goes down (but at a reset); list registers hold no vINTID twice
//! and only implemented ones (SGI/PPI/SPI or an LPI); a flush loads at most the
//! list registers there are.

use arbitrary::{Arbitrary, Unstructured};
use vdev::{AccessSize, GuestMemory, SaveRestore, VecMemory};
use vgic::its::{opcode, reg, Its};
use vgic::lr::{IchLr, ListRegisters, LrState};
use vgic::regs::{gicd, gicr, intid};
use vgic::{Vgic, VgicConfig};

use crate::Encoder;

const RAM: u64 = 0x4000_0000;
const RAM_SIZE: usize = 1 << 20;
const VCPUS: usize = 2;
const LRS: usize = 4;
/// Where the seeds put the queue and tables.
const QUEUE: u64 = RAM;
const PROP: u64 = RAM + 0x1_0000;
const DT: u64 = RAM + 0x2_0000;
const CT: u64 = RAM + 0x4_0000;
const ITT: u64 = RAM + 0x5_0000;
const KINDS: [u8; 12] = [
    opcode::MAPD,
    opcode::MAPC,
    opcode::MAPTI,
    opcode::MAPI,
    opcode::INT,
    opcode::CLEAR,
    opcode::DISCARD,
    opcode::INV,
    opcode::INVALL,
    opcode::SYNC,
    opcode::MOVI,
    opcode::MOVALL,
];
const GICR_REGS: [u64; 3] = [gicr::CTLR, gicr::PROPBASER, gicr::PENDBASER];

#[derive(Arbitrary, Debug)]
enum Op {
    /// Any 32 bytes queued as a command.
    Raw([u64; 4]),
    /// A command of kind `KINDS[kind % 12]` with fields near what drivers use.
    Cmd {
        kind: u8,
        dev: u8,
        event: u8,
        lpi: u16,
        icid: u8,
        rd: u8,
        valid: bool,
        bits: u8,
        itt_page: u8,
    },
    Write {
        off: u32,
        size: u8,
        value: u64,
    },
    Read {
        off: u32,
        size: u8,
    },
    Message {
        dev: u16,
        event: u32,
    },
    Ram {
        at: u32,
        value: u64,
    },
    Gicr {
        vcpu: u8,
        reg: u8,
        value: u64,
    },
    Flush {
        vcpu: u8,
        ack: bool,
    },
    Reset,
    SaveRestore,
}

/// `Op` variants, in declaration order.
mod op {
    pub const COUNT: u32 = 10;
    pub const CMD: u32 = 1;
    pub const WRITE: u32 = 2;
    pub const MESSAGE: u32 = 4;
    pub const RAM: u32 = 5;
    pub const GICR: u32 = 6;
    pub const FLUSH: u32 = 7;
    pub const SAVE_RESTORE: u32 = 9;
}

struct FakeLrs([u64; LRS]);

impl ListRegisters for FakeLrs {
    fn count(&self) -> usize {
        LRS
    }
    fn read(&self, i: usize) -> u64 {
        self.0[i]
    }
    fn write(&mut self, i: usize, v: u64) {
        self.0[i] = v;
    }
}

struct Harness {
    its: Its,
    vgic: Vgic,
    mem: VecMemory,
    errors: u64,
    /// LPIs loaded into list registers so far.
    lpis_loaded: usize,
}

fn size_of(b: u8) -> AccessSize {
    [
        AccessSize::Byte,
        AccessSize::Half,
        AccessSize::Word,
        AccessSize::Double,
    ][usize::from(b % 4)]
}

impl Harness {
    fn new() -> Self {
        let mut vgic = Vgic::new(VgicConfig::simple(VCPUS, 64)).unwrap();
        vgic.enable_lpi_support();
        // Both groups on: the distributor itself is `vgic_mmio`'s to fuzz.
        vgic.gicd_write(gicd::CTLR, AccessSize::Word, 0b11).unwrap();
        Harness {
            its: Its::new(VCPUS, &[(RAM, RAM_SIZE as u64)]),
            vgic,
            mem: VecMemory::new(RAM, RAM_SIZE),
            errors: 0,
            lpis_loaded: 0,
        }
    }

    fn queue(&self) -> (u64, u64) {
        let cb = self.its.read(reg::CBASER, AccessSize::Double).unwrap();
        let base = cb & 0x000F_FFFF_FFFF_F000;
        (base, ((cb & 0xFF) + 1) * 0x1000)
    }

    fn queue_command(&mut self, c: [u64; 4]) {
        let (base, size) = self.queue();
        let w = self.its.read(reg::CWRITER, AccessSize::Double).unwrap() % size;
        for (i, d) in c.iter().enumerate() {
            // A queue outside RAM takes nothing; the ITS must stall on it.
            let _ = self
                .mem
                .write(base.wrapping_add(w + 8 * i as u64), &d.to_le_bytes());
        }
        let next = (w + 32) % size;
        let _ = self.its.write(
            reg::CWRITER,
            AccessSize::Double,
            next,
            &mut self.vgic,
            &self.mem,
        );
    }

    fn op(&mut self, op: Op) {
        match op {
            Op::Raw(c) => self.queue_command(c),
            Op::Cmd {
                kind,
                dev,
                event,
                lpi,
                icid,
                rd,
                valid,
                bits,
                itt_page,
            } => {
                let kind = KINDS[usize::from(kind) % KINDS.len()];
                let lpi = intid::LPI_FIRST + u32::from(lpi) % 8400;
                let rd = u64::from(rd % 3);
                let c = [
                    u64::from(kind) | u64::from(dev) << 32,
                    if kind == opcode::MAPD {
                        u64::from(bits % 18)
                    } else {
                        u64::from(event) | u64::from(lpi) << 32
                    },
                    u64::from(valid) << 63
                        | if kind == opcode::MAPD {
                            ITT + 0x1000 * u64::from(itt_page)
                        } else {
                            rd << 16 | u64::from(icid)
                        },
                    rd << 16,
                ];
                self.queue_command(c);
            }
            Op::Write { off, size, value } => {
                let off = u64::from(off) % vgic::its::FRAME_SIZE;
                let _ = self
                    .its
                    .write(off, size_of(size), value, &mut self.vgic, &self.mem);
            }
            Op::Read { off, size } => {
                let size = size_of(size);
                let off = u64::from(off) % vgic::its::FRAME_SIZE;
                if off & !7 == reg::CREADR {
                    // A driver polling CREADR: more commands run.
                    self.its.resume(&mut self.vgic, &self.mem);
                }
                if let Ok(v) = self.its.read(off, size) {
                    assert_eq!(v & !size.mask(), 0, "read of {off:#x} wider than access");
                }
            }
            Op::Message { dev, event } => {
                let _ = self.its.translate(u32::from(dev), event, &mut self.vgic);
            }
            Op::Ram { at, value } => {
                let at = RAM + u64::from(at) % (RAM_SIZE as u64 - 8);
                self.mem.write(at, &value.to_le_bytes()).unwrap();
            }
            Op::Gicr { vcpu, reg, value } => {
                let at = u64::from(vcpu % 3) * gicr::STRIDE
                    + GICR_REGS[usize::from(reg) % GICR_REGS.len()];
                let size = if at % gicr::STRIDE == gicr::CTLR {
                    AccessSize::Word
                } else {
                    AccessSize::Double
                };
                let _ = self.vgic.gicr_write(at, size, value & size.mask());
            }
            Op::Flush { vcpu, ack } => self.flush(usize::from(vcpu) % VCPUS, ack),
            Op::Reset => {
                self.its.reset();
                self.vgic.reset();
                // The count starts afresh with the ITS.
                self.errors = 0;
            }
            Op::SaveRestore => {
                let its_blob = self.its.save();
                let vgic_blob = self.vgic.save();
                let mut its = Its::new(VCPUS, &[(RAM, RAM_SIZE as u64)]);
                its.restore(&its_blob).expect("a saved ITS restores");
                assert!(its.save() == its_blob, "ITS save after restore differs");
                let mut vgic = Vgic::new(VgicConfig::simple(VCPUS, 64)).unwrap();
                vgic.enable_lpi_support();
                vgic.restore(&vgic_blob).expect("a saved vGIC restores");
                assert!(vgic.save() == vgic_blob, "vGIC save after restore differs");
                // Carry on with the restored state (the ITS restored over itself,
                // which keeps its error count).
                self.its.restore(&its_blob).expect("a saved ITS restores");
                self.vgic = vgic;
            }
        }
        self.check();
    }

    fn flush(&mut self, vcpu: usize, ack: bool) {
        let mut lrs = FakeLrs([0; LRS]);
        let out = self.vgic.flush(vcpu, &mut lrs).unwrap();
        assert!(out.loaded <= LRS);
        let mut seen = Vec::new();
        for v in lrs.0 {
            let lr = IchLr(v);
            if lr.state() == LrState::Invalid {
                continue;
            }
            let id = lr.vintid();
            assert!(
                id < intid::SPECIAL_FIRST || vgic::is_lpi(id),
                "vINTID {id} is not implemented"
            );
            assert!(!seen.contains(&id), "vINTID {id} twice");
            seen.push(id);
            self.lpis_loaded += usize::from(vgic::is_lpi(id));
        }
        if ack {
            // The guest acknowledges and ends everything (LPIs have no active state).
            for v in lrs.0.iter_mut() {
                *v &= !(3 << 62);
            }
        }
        self.vgic.sync(vcpu, &mut lrs, 0).unwrap();
    }

    fn check(&mut self) {
        let (_, size) = self.queue();
        let creadr = self.its.read(reg::CREADR, AccessSize::Double).unwrap();
        let cb = self.its.read(reg::CBASER, AccessSize::Double).unwrap();
        if cb >> 63 != 0 {
            assert!(
                creadr & !1 < size,
                "CREADR {creadr:#x} outside a {size:#x} queue"
            );
        }
        assert!(self.its.errors() >= self.errors);
        self.errors = self.its.errors();
    }
}

pub fn run(data: &[u8]) {
    run_ops(data);
}

fn run_ops(data: &[u8]) -> Harness {
    let mut u = Unstructured::new(data);
    let mut h = Harness::new();
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        h.op(op);
    }
    h
}

/// A Linux-style bring-up (LPIs enabled on both redistributors, tables, queue, two
/// collections, a device with three events), then messages and flushes.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut e = Encoder::default();
    for v in 0..VCPUS as u8 {
        e.variant(op::GICR, op::COUNT).u8(v).u8(1).u64(PROP | 13);
        e.variant(op::GICR, op::COUNT)
            .u8(v)
            .u8(2)
            .u64(RAM + 0x8_0000);
        e.variant(op::GICR, op::COUNT).u8(v).u8(0).u64(1);
    }
    for i in 0..3u32 {
        e.variant(op::RAM, op::COUNT)
            .u32((PROP - RAM) as u32 + i)
            .u64(0xA1);
    }
    let write = |e: &mut Encoder, off: u64, size: u8, value: u64| {
        e.variant(op::WRITE, op::COUNT)
            .u32(off as u32)
            .u8(size)
            .u64(value);
    };
    write(&mut e, reg::BASER, 3, 1 << 63 | 2 << 8 | DT);
    write(&mut e, reg::BASER + 8, 3, 1 << 63 | CT);
    write(&mut e, reg::CBASER, 3, 1 << 63 | QUEUE);
    write(&mut e, reg::CTLR, 2, 1);
    let cmd = |e: &mut Encoder, kind: usize, event: u8, lpi: u16, icid: u8, rd: u8| {
        e.variant(op::CMD, op::COUNT)
            .u8(kind as u8)
            .u8(8)
            .u8(event)
            .u16(lpi)
            .u8(icid)
            .u8(rd)
            .bool(true)
            .u8(3)
            .u8(0);
    };
    cmd(&mut e, 0, 0, 0, 0, 0); // MAPD
    cmd(&mut e, 1, 0, 0, 0, 0); // MAPC 0 -> 0
    cmd(&mut e, 1, 0, 0, 1, 1); // MAPC 1 -> 1
    for ev in 0..3u8 {
        cmd(&mut e, 2, ev, u16::from(ev), ev % 2, 0); // MAPTI
        cmd(&mut e, 7, ev, 0, 0, 0); // INV
    }
    cmd(&mut e, 9, 0, 0, 0, 1); // SYNC
    for ev in 0..4u32 {
        e.variant(op::MESSAGE, op::COUNT).u16(8).u32(ev);
    }
    for v in 0..VCPUS as u8 {
        e.variant(op::FLUSH, op::COUNT).u8(v).bool(true);
    }
    cmd(&mut e, 10, 1, 0, 0, 0); // MOVI
    cmd(&mut e, 11, 0, 0, 0, 1); // MOVALL
    cmd(&mut e, 4, 2, 0, 0, 0); // INT
    e.variant(op::SAVE_RESTORE, op::COUNT);
    e.variant(op::FLUSH, op::COUNT).u8(0).bool(false);
    vec![("linux-bring-up", e.0)]
}

#[cfg(test)]
mod tests {
    /// The seed is a working bring-up: no command error, LPIs delivered.
    #[test]
    fn the_seed_maps_events_and_delivers_lpis() {
        let (_, seed) = &super::seeds()[0];
        let h = super::run_ops(seed);
        assert_eq!(
            h.its.errors(),
            1,
            "only the message for the unmapped event 3"
        );
        assert!(!h.its.stalled());
        assert!(h.lpis_loaded >= 3, "{}", h.lpis_loaded);
    }
}
