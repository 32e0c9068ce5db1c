//! `xhci`: a hostile host against the xHCI controller model and its USB devices:
//! register accesses of any offset, width and value, doorbells of any slot and
//! target, command TRBs with fuzzed types, slot and endpoint IDs, parameters
//! (input contexts, dequeue pointers) and flags on the command ring, transfer TRBs
//! with fuzzed types, buffers (inside, across the edge of, or outside guest RAM),
//! lengths and flags on endpoint rings, Link TRBs anywhere, raw guest RAM writes
//! (contexts, ERST, rings), a driver-style bring-up and enumeration, control
//! requests with any SETUP packet, SCSI commands through bulk-only transport, key
//! and tablet input, hot-plug, polls, resets and save/restore cycles.
//!
//! Invariants, checked after every operation:
//! - no panic, and every read carries no bits outside its access;
//! - only interrupter 0's vector is signalled;
//! - USBSTS.HCH is set exactly when USBCMD.R/S is clear or USBSTS.HCE is set;
//! - PORTSC.CCS is set exactly on the ports with a device attached;
//! - a saved state restores into a fresh controller (same devices) that saves the
//!   same bytes.

use arbitrary::{Arbitrary, Unstructured};
use vdev::{AccessSize, GuestMemory, SaveRestore};
use xhci::defs::{layout, op as opreg, portsc, trb, usbcmd, usbsts};
use xhci::testing::{Driver, RamDisk, DATA, RAM_BASE, RAM_SIZE};
use xhci::trb::Trb;
use xhci::usb::Setup;
use xhci::{Config, Controller, Device, Keyboard, MassStorage, Tablet, TabletInput};

use crate::{Bytes, Encoder};

/// Sectors of the storage device's disk.
const DISK_SECTORS: usize = 64;
const STORAGE_PORT: u8 = 5;

fn machine() -> Controller<RamDisk> {
    let mut c = Controller::new(Config::default());
    let _ = c.attach(1, Device::Keyboard(Keyboard::new(0)));
    let _ = c.attach(2, Device::Tablet(Tablet::new(0)));
    let _ = c.attach(
        STORAGE_PORT,
        Device::Storage(MassStorage::new(RamDisk::patterned(DISK_SECTORS, false), 0)),
    );
    c
}

/// A guest address: an offset into the data area, or anywhere.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum Addr {
    Data(u32),
    Raw(u64),
}

impl Addr {
    fn gpa(self) -> u64 {
        match self {
            Addr::Data(off) => DATA + u64::from(off) % (RAM_BASE + RAM_SIZE as u64 - DATA),
            Addr::Raw(a) => a,
        }
    }
}

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
    Doorbell {
        slot: u8,
        target: u8,
    },
    /// Raw bytes anywhere in guest RAM.
    Memory {
        offset: u32,
        bytes: Bytes,
    },
    /// A TRB on the command ring (its doorbell rung).
    Command {
        kind: u8,
        param: Addr,
        status: u32,
        flags: u16,
        slot: u8,
        dci: u8,
    },
    /// A TRB on the transfer ring of (`slot`, `dci`) if the driver made one.
    Transfer {
        slot: u8,
        dci: u8,
        kind: u8,
        param: Addr,
        status: u32,
        flags: u16,
        ring: bool,
    },
    /// A control transfer with any SETUP packet.
    Control {
        slot: u8,
        setup: u64,
        out: Bytes,
    },
    /// A SCSI command through bulk-only transport.
    Scsi {
        slot: u8,
        cdb: Bytes,
        data_in: u16,
        out: Bytes,
    },
    BringUp,
    Enumerate {
        port: u8,
    },
    Key {
        usage: u8,
        down: bool,
    },
    Pointer {
        x: u16,
        y: u16,
        buttons: u8,
        wheel: i8,
    },
    Detach {
        port: u8,
    },
    AttachStorage {
        port: u8,
        read_only: bool,
    },
    Drain,
    Poll,
    SaveRestore,
    Reset,
}

/// Op variants, in declaration order (for the seeds).
mod op {
    pub const COUNT: u32 = 18;
    pub const WRITE: u32 = 1;
    pub const DOORBELL: u32 = 2;
    pub const MEMORY: u32 = 3;
    pub const COMMAND: u32 = 4;
    pub const TRANSFER: u32 = 5;
    pub const CONTROL: u32 = 6;
    pub const SCSI: u32 = 7;
    pub const BRING_UP: u32 = 8;
    pub const ENUMERATE: u32 = 9;
    pub const KEY: u32 = 10;
    pub const POINTER: u32 = 11;
    pub const DETACH: u32 = 12;
    pub const ATTACH_STORAGE: u32 = 13;
    pub const POLL: u32 = 15;
    pub const SAVE_RESTORE: u32 = 16;
}

fn check(c: &mut Controller<RamDisk>, d: &mut Driver) {
    assert!(
        d.irq.signals.iter().all(|&v| v == 0),
        "vector other than 0: {:?}",
        d.irq.signals
    );
    d.irq.signals.clear();
    let cmd = c
        .read(layout::OPER + opreg::USBCMD, AccessSize::Word)
        .unwrap() as u32;
    let sts = c
        .read(layout::OPER + opreg::USBSTS, AccessSize::Word)
        .unwrap() as u32;
    let halted = cmd & usbcmd::RS == 0 || sts & usbsts::HCE != 0;
    assert_eq!(
        sts & usbsts::HCH != 0,
        halted,
        "USBCMD {cmd:#x} USBSTS {sts:#x}"
    );
    for p in 1..=c.port_count() {
        let sc = c
            .read(
                layout::PORTS + layout::PORT_STRIDE * u64::from(p - 1),
                AccessSize::Word,
            )
            .unwrap() as u32;
        assert_eq!(sc & portsc::CCS != 0, c.device(p).is_some(), "port {p} CCS");
    }
}

/// Moves `c`'s devices into a fresh controller and restores `blob` there.
fn save_restore(c: &mut Controller<RamDisk>) {
    let blob = c.save();
    let mut fresh = Controller::new(*c.config());
    for p in 1..=c.port_count() {
        if let Some(dev) = c.detach(p) {
            fresh.attach(p, dev).expect("port free");
        }
    }
    fresh.restore(&blob).expect("a saved state restores");
    assert!(fresh.save() == blob, "save after restore differs");
    *c = fresh;
}

/// Runs one input.
pub fn run(data: &[u8]) {
    run_ops(data);
}

fn run_ops(data: &[u8]) -> (Controller<RamDisk>, Driver) {
    let mut u = Unstructured::new(data);
    let mut c = machine();
    let mut d = Driver::new();
    while !u.is_empty() {
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        match op {
            Op::Read { offset, size } => {
                let size = crate::access_size(size);
                if let Ok(v) = c.read(u64::from(offset), size) {
                    assert_eq!(v & !size.mask(), 0, "read wider than the access");
                }
            }
            Op::Write {
                offset,
                size,
                value,
            } => {
                let size = crate::access_size(size);
                let _ = c.write(&mut d.mem, &mut d.irq, u64::from(offset), size, value);
            }
            Op::Doorbell { slot, target } => {
                let off = layout::DOORBELLS + 4 * u64::from(slot);
                let _ = c.write(
                    &mut d.mem,
                    &mut d.irq,
                    off,
                    AccessSize::Word,
                    u64::from(target),
                );
            }
            Op::Memory { offset, bytes } => {
                let at = RAM_BASE + u64::from(offset) % RAM_SIZE as u64;
                let n = bytes
                    .0
                    .len()
                    .min((RAM_BASE + RAM_SIZE as u64 - at) as usize);
                let _ = d.mem.write(at, &bytes.0[..n]);
            }
            Op::Command {
                kind,
                param,
                status,
                flags,
                slot,
                dci,
            } => {
                let control = u32::from(flags) & !trb::TYPE_MASK & 0xffff
                    | u32::from(dci & 0x1f) << trb::EP_SHIFT
                    | u32::from(slot) << trb::SLOT_SHIFT;
                d.command(&mut c, Trb::new(kind & 0x3f, param.gpa(), status, control));
            }
            Op::Transfer {
                slot,
                dci,
                kind,
                param,
                status,
                flags,
                ring,
            } => {
                let key = (slot % 4, dci % 32);
                if d.rings.contains_key(&key) {
                    let control = u32::from(flags) & !trb::TYPE_MASK & 0xffff;
                    d.push(
                        key.0,
                        key.1,
                        Trb::new(kind & 0x3f, param.gpa(), status, control),
                    );
                    if ring {
                        let off = layout::DOORBELLS + 4 * u64::from(key.0);
                        let _ = c.write(
                            &mut d.mem,
                            &mut d.irq,
                            off,
                            AccessSize::Word,
                            u64::from(key.1),
                        );
                    }
                }
            }
            Op::Control { slot, setup, out } => {
                let slot = slot % 4;
                if d.rings.contains_key(&(slot, 1)) {
                    let mut s = Setup::from_u64(setup);
                    if !s.is_in() {
                        s.length = out.0.len().min(4096) as u16;
                    }
                    s.length = s.length.min(4096);
                    let _ = d.control(
                        &mut c,
                        slot,
                        s,
                        &out.0[..usize::from(s.length).min(out.0.len())],
                    );
                }
            }
            Op::Scsi {
                slot,
                cdb,
                data_in,
                out,
            } => {
                let slot = slot % 4;
                if d.rings.contains_key(&(slot, 3))
                    && d.rings.contains_key(&(slot, 4))
                    && !cdb.0.is_empty()
                {
                    let cdb = &cdb.0[..cdb.0.len().min(16)];
                    let out = &out.0[..out.0.len().min(0x1_0000)];
                    let _ = d.bot(&mut c, slot, cdb, u32::from(data_in), out);
                }
            }
            Op::BringUp => {
                d.rings.clear();
                d.start(&mut c);
            }
            Op::Enumerate { port } => {
                let port = 1 + port % c.port_count();
                let _ = d.enumerate(&mut c, port);
            }
            Op::Key { usage, down } => {
                c.keyboard_key(usage, down);
            }
            Op::Pointer {
                x,
                y,
                buttons,
                wheel,
            } => {
                c.tablet_inject(TabletInput {
                    x,
                    y,
                    buttons,
                    wheel,
                });
            }
            Op::Detach { port } => {
                c.detach(port % (c.port_count() + 1));
            }
            Op::AttachStorage { port, read_only } => {
                let disk = RamDisk::patterned(DISK_SECTORS, read_only);
                let _ = c.attach(
                    port % (c.port_count() + 1),
                    Device::Storage(MassStorage::new(disk, 0)),
                );
            }
            Op::Drain => d.drain(&mut c),
            Op::Poll => c.poll(&mut d.mem, &mut d.irq),
            Op::SaveRestore => save_restore(&mut c),
            Op::Reset => {
                c.reset();
                d.rings.clear();
            }
        }
        check(&mut c, &mut d);
    }
    (c, d)
}

/// The seeds: a driver's bring-up and enumeration of each device followed by its
/// traffic, and hostile rings.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut out = Vec::new();
    let enumerate = |e: &mut Encoder, port: u8| {
        e.variant(op::ENUMERATE, op::COUNT).u8(port - 1);
    };
    let scsi = |e: &mut Encoder, slot: u8, cdb: &[u8], data_in: u16, data_out: &[u8]| {
        e.variant(op::SCSI, op::COUNT)
            .u8(slot)
            .bytes(cdb)
            .u16(data_in)
            .bytes(data_out);
    };

    // Keyboard and tablet: enumerate, SET_IDLE, boot protocol, LEDs, input, reports.
    let mut e = Encoder::default();
    e.variant(op::BRING_UP, op::COUNT);
    enumerate(&mut e, 1);
    enumerate(&mut e, 2);
    let setup = |e: &mut Encoder, slot: u8, s: Setup, data: &[u8]| {
        e.variant(op::CONTROL, op::COUNT)
            .u8(slot)
            .u64(s.to_u64())
            .bytes(data);
    };
    setup(
        &mut e,
        1,
        Setup {
            request_type: 0x21,
            request: 0x0a,
            value: 0,
            index: 0,
            length: 0,
        },
        &[],
    );
    setup(
        &mut e,
        1,
        Setup {
            request_type: 0x21,
            request: 0x0b,
            value: 0,
            index: 0,
            length: 0,
        },
        &[],
    );
    setup(
        &mut e,
        1,
        Setup {
            request_type: 0x21,
            request: 0x09,
            value: 0x200,
            index: 0,
            length: 1,
        },
        &[2],
    );
    e.variant(op::KEY, op::COUNT).u8(4).u8(1);
    e.variant(op::POINTER, op::COUNT)
        .u16(100)
        .u16(200)
        .u8(1)
        .u8(0xff);
    // Interrupt IN TRBs (Normal, IOC|ISP) on both, doorbells rung.
    for slot in [1u8, 2] {
        e.variant(op::TRANSFER, op::COUNT).u8(slot).u8(3).u8(1);
        e.variant(0, 2).u32(0x1000 * u32::from(slot));
        e.u32(8).u16((trb::IOC | trb::ISP) as u16).u8(1);
    }
    e.variant(op::POLL, op::COUNT);
    out.push(("hid", e.0));

    // Storage: enumerate, INQUIRY, READ CAPACITY, READ(10), WRITE(10), MODE SENSE.
    let mut e = Encoder::default();
    e.variant(op::BRING_UP, op::COUNT);
    enumerate(&mut e, STORAGE_PORT);
    scsi(&mut e, 1, &[0x12, 0, 0, 0, 36, 0], 36, &[]);
    scsi(&mut e, 1, &[0x25, 0, 0, 0, 0, 0, 0, 0, 0, 0], 8, &[]);
    scsi(&mut e, 1, &[0x28, 0, 0, 0, 0, 2, 0, 0, 2, 0], 1024, &[]);
    scsi(
        &mut e,
        1,
        &[0x2a, 0, 0, 0, 0, 4, 0, 0, 1, 0],
        0,
        &[0x5a; 512],
    );
    scsi(&mut e, 1, &[0x1a, 0, 0x3f, 0, 192, 0], 192, &[]);
    e.variant(op::SAVE_RESTORE, op::COUNT);
    scsi(&mut e, 1, &[0x28, 0, 0, 0, 0, 4, 0, 0, 1, 0], 512, &[]);
    out.push(("storage", e.0));

    // Hostile: a Link TRB loop on the command ring, garbage ERST, hot-plug.
    let mut e = Encoder::default();
    e.variant(op::BRING_UP, op::COUNT);
    enumerate(&mut e, STORAGE_PORT);
    e.variant(op::DETACH, op::COUNT).u8(STORAGE_PORT);
    e.variant(op::ATTACH_STORAGE, op::COUNT)
        .u8(STORAGE_PORT)
        .u8(1);
    e.variant(op::POLL, op::COUNT);
    // Link TRB (type 6) pointing at itself on the command ring.
    e.variant(op::COMMAND, op::COUNT).u8(6);
    e.variant(1, 2).u64(xhci::testing::CMD_RING);
    e.u32(0).u16(0).u8(0).u8(0);
    e.variant(op::DOORBELL, op::COUNT).u8(0).u8(0);
    e.variant(op::MEMORY, op::COUNT)
        .u32((xhci::testing::ERST - RAM_BASE) as u32)
        .bytes(&[0xff; 16]);
    e.variant(op::WRITE, op::COUNT)
        .u16((layout::INTERRUPTERS + 0x14) as u16)
        .u8(2)
        .u64(0);
    out.push(("hostile", e.0));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seed(name: &str) -> Vec<u8> {
        seeds().into_iter().find(|(n, _)| *n == name).unwrap().1
    }

    #[test]
    fn seeds_reach_the_devices() {
        let (c, d) = run_ops(&seed("hid"));
        assert_eq!(
            c.keyboard().unwrap().leds,
            2,
            "SET_REPORT reached the keyboard"
        );
        assert_eq!(c.keyboard().unwrap().protocol, 0, "boot protocol");
        let mut r = [0u8; 8];
        d.mem.read(DATA + 0x1000, &mut r).unwrap();
        assert_eq!(r[2], 4, "the key report reached guest RAM");

        let (c, _) = run_ops(&seed("storage"));
        let disk = &c.storage().unwrap().backend().data;
        assert_eq!(
            disk[4 * 512..5 * 512],
            [0x5a; 512],
            "WRITE(10) reached the disk"
        );

        let (c, _) = run_ops(&seed("hostile"));
        assert!(
            c.halted_with_error(),
            "the Link TRB loop was a Host Controller Error"
        );
        assert!(c.storage().unwrap().backend().read_only);
    }
}
