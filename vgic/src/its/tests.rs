use super::*;
use crate::lr::{IchLr, ListRegisters, LrState};
use crate::regs::{ctlr, gicd, gicr, lpi_tables};
use crate::VgicConfig;
use vdev::AccessSize::{Byte, Double, Half, Word};
use vdev::{RestoreError, SaveRestore, VecMemory};

const RAM: u64 = 0x4000_0000;
const RAM_SIZE: usize = 1 << 20;
/// Command queue: one 4 KiB page, 128 commands.
const QUEUE: u64 = RAM;
const QUEUE_BYTES: u64 = 0x1000;
/// LPI configuration table (8 KiB).
const PROP: u64 = RAM + 0x1_0000;
/// Device table: one 64 KiB page, 8192 entries.
const DT: u64 = RAM + 0x2_0000;
/// Collection table: one 4 KiB page, 512 entries.
const CT: u64 = RAM + 0x4_0000;
const ITT: u64 = RAM + 0x5_0000;
const LPI0: u32 = 8192;
/// The NVMe function's requester ID (00:01.0).
const NVME: u32 = 0x08;

struct FakeLrs(Vec<u64>);

impl ListRegisters for FakeLrs {
    fn count(&self) -> usize {
        self.0.len()
    }
    fn read(&self, i: usize) -> u64 {
        self.0[i]
    }
    fn write(&mut self, i: usize, v: u64) {
        self.0[i] = v;
    }
}

struct Rig {
    its: Its,
    vgic: Vgic,
    mem: VecMemory,
    cwriter: u64,
}

fn baser(valid: bool, page: u64, pa: u64, size: u64) -> u64 {
    u64::from(valid) << 63 | page << 8 | pa | size
}

fn cmd(op: u8, dev: u32, d1: u64, d2: u64, d3: u64) -> [u64; 4] {
    [u64::from(op) | u64::from(dev) << 32, d1, d2, d3]
}
fn mapd(dev: u32, bits: u64, itt: u64, v: bool) -> [u64; 4] {
    cmd(opcode::MAPD, dev, bits - 1, u64::from(v) << 63 | itt, 0)
}
fn mapc(icid: u64, rd: u64, v: bool) -> [u64; 4] {
    cmd(opcode::MAPC, 0, 0, u64::from(v) << 63 | rd << 16 | icid, 0)
}
fn mapti(dev: u32, ev: u32, lpi: u32, icid: u64) -> [u64; 4] {
    cmd(
        opcode::MAPTI,
        dev,
        u64::from(ev) | u64::from(lpi) << 32,
        icid,
        0,
    )
}
fn ev_cmd(op: u8, dev: u32, ev: u32) -> [u64; 4] {
    cmd(op, dev, u64::from(ev), 0, 0)
}

impl Rig {
    fn new(vcpus: usize) -> Self {
        let mut vgic = Vgic::new(VgicConfig::simple(vcpus, 64)).unwrap();
        vgic.enable_lpi_support();
        Rig {
            its: Its::new(vcpus, &[(RAM, RAM_SIZE as u64)]),
            vgic,
            mem: VecMemory::new(RAM, RAM_SIZE),
            cwriter: 0,
        }
    }

    fn w(&mut self, off: u64, size: AccessSize, v: u64) -> Result<(), MmioError> {
        self.its.write(off, size, v, &mut self.vgic, &self.mem)
    }
    fn r(&self, off: u64, size: AccessSize) -> u64 {
        self.its.read(off, size).unwrap()
    }

    /// What Linux's GICv3 and ITS drivers do before mapping anything.
    fn bring_up(vcpus: usize) -> Self {
        let mut g = Rig::new(vcpus);
        g.vgic
            .gicd_write(gicd::CTLR, Word, u64::from(ctlr::ENABLE_GRP1))
            .unwrap();
        for v in 0..vcpus as u64 {
            let rd = v * gicr::STRIDE;
            g.vgic
                .gicr_write(rd + gicr::PROPBASER, Double, PROP | 13)
                .unwrap();
            g.vgic
                .gicr_write(rd + gicr::PENDBASER, Double, RAM + 0x8_0000)
                .unwrap();
            g.vgic.gicr_write(rd + gicr::CTLR, Word, 1).unwrap();
        }
        g.w(reg::BASER, Double, baser(true, 2, DT, 0)).unwrap();
        g.w(reg::BASER + 8, Double, baser(true, 0, CT, 0)).unwrap();
        g.w(reg::CBASER, Double, 1 << 63 | QUEUE).unwrap();
        g.w(reg::CWRITER, Double, 0).unwrap();
        g.w(reg::CTLR, Word, 1).unwrap();
        g
    }

    /// Queues `c` and writes GITS_CWRITER.
    fn send(&mut self, c: [u64; 4]) {
        for (i, d) in c.iter().enumerate() {
            self.mem
                .write(QUEUE + self.cwriter + 8 * i as u64, &d.to_le_bytes())
                .unwrap();
        }
        self.cwriter = (self.cwriter + 32) % QUEUE_BYTES;
        self.w(reg::CWRITER, Double, self.cwriter).unwrap();
    }

    /// GITS_CREADR as a driver polling it sees it (each read runs more commands).
    fn creadr(&mut self) -> u64 {
        self.its.resume(&mut self.vgic, &self.mem);
        self.r(reg::CREADR, Double)
    }

    fn set_cfg(&mut self, lpi: u32, byte: u8) {
        self.mem
            .write(PROP + u64::from(lpi - LPI0), &[byte])
            .unwrap();
    }

    /// The NVMe function with `n` events, event i -> LPI0 + i on collection i % vCPUs.
    fn map_nvme(&mut self, n: u32, vcpus: u64) {
        self.send(mapd(NVME, 4, ITT, true));
        for v in 0..vcpus {
            self.send(mapc(v, v, true));
        }
        for i in 0..n {
            self.set_cfg(LPI0 + i, 0xA0 | lpi_tables::CFG_ENABLE);
            self.send(mapti(NVME, i, LPI0 + i, u64::from(i) % vcpus));
        }
        self.send(cmd(opcode::SYNC, 0, 0, 0, 0));
        assert!(!self.its.stalled(), "{:?}", self.its.last_error());
    }

    fn message(&mut self, dev: u32, ev: u32) -> Result<(), ItsError> {
        self.its.translate(dev, ev, &mut self.vgic)
    }

    /// The vINTIDs `vcpu`'s list registers get on entry.
    fn delivered(&mut self, vcpu: usize) -> Vec<(u32, u8)> {
        let mut lrs = FakeLrs(alloc::vec![0; 4]);
        self.vgic.flush(vcpu, &mut lrs).unwrap();
        let out = lrs
            .0
            .iter()
            .map(|v| IchLr(*v))
            .filter(|l| l.state() != LrState::Invalid)
            .map(|l| (l.vintid(), l.priority()))
            .collect();
        self.vgic.sync(vcpu, &mut lrs, 0).unwrap();
        out
    }

    /// Expects the last command to have stalled the queue with `e`.
    fn expect_stall(&mut self, e: ItsError) {
        assert!(self.its.stalled(), "expected {e:?}");
        assert_eq!(self.its.last_error(), Some(e));
        let at = (self.cwriter + QUEUE_BYTES - 32) % QUEUE_BYTES;
        assert_eq!(self.creadr(), at | 1, "CREADR at the command, Stalled set");
    }

    /// Gets out of a stall the way a driver would: disable, rewrite CBASER, enable.
    fn restart_queue(&mut self) {
        self.w(reg::CTLR, Word, 0).unwrap();
        self.w(reg::CBASER, Double, 1 << 63 | QUEUE).unwrap();
        self.cwriter = 0;
        self.w(reg::CWRITER, Double, 0).unwrap();
        self.w(reg::CTLR, Word, 1).unwrap();
        assert!(!self.its.stalled());
    }
}

#[test]
fn registers_identify_an_its_and_the_gic_gets_lpis() {
    let mut g = Rig::new(2);
    let t = g.r(reg::TYPER, Double);
    assert_eq!(t & 1, 1, "Physical");
    assert_eq!((t >> 4) & 0xF, 7, "8-byte ITT entries");
    assert_eq!((t >> 8) & 0x1F, 15, "16 EventID bits");
    assert_eq!((t >> 13) & 0x1F, 15, "16 DeviceID bits");
    assert_eq!((t >> 19) & 1, 0, "PTA = 0");
    assert_eq!((t >> 24) & 0xFF, 0, "HCC = 0");
    assert_eq!((t >> 32) & 0x1F, 0x10 | 7, "CIL with 8 ICID bits");
    assert_eq!(g.r(reg::TYPER + 4, Word), t >> 32);
    assert_eq!(g.r(reg::CTLR, Word), 1 << 31, "disabled and quiescent");
    assert_eq!(g.r(reg::IIDR, Word), u64::from(iidr::VALUE));
    assert_eq!(g.r(id::PIDR2, Word) >> 4 & 0xF, 3);
    // BASER types and entry sizes are read-only; Indirect is RAZ/WI.
    g.w(reg::BASER, Double, u64::MAX).unwrap();
    let b0 = g.r(reg::BASER, Double);
    assert_eq!(b0 >> 56 & 7, 1, "device table");
    assert_eq!(b0 >> 48 & 0x1F, 7);
    assert_eq!(b0 >> 62 & 1, 0, "flat only");
    assert_eq!(b0 >> 8 & 3, 2, "reserved page size reads back as 64 KiB");
    assert_eq!(g.r(reg::BASER + 8, Double) >> 56 & 7, 4, "collection table");
    g.w(reg::BASER + 16, Double, u64::MAX).unwrap();
    assert_eq!(g.r(reg::BASER + 16, Double), 0, "BASER2..7 are RAZ/WI");
    // The distributor and redistributors show LPIs.
    let typer = g.vgic.gicd_read(gicd::TYPER, Word).unwrap();
    assert_ne!(typer & u64::from(crate::regs::typer::LPIS), 0);
    assert_eq!(typer >> 19 & 0x1F, 13, "14 INTID bits");
    assert_eq!(
        g.vgic.gicr_read(gicr::TYPER, Double).unwrap() & 1,
        1,
        "PLPIS"
    );
    assert_eq!(g.vgic.gicr_read(gicr::CTLR, Word).unwrap(), 0b10, "CES");
    // Widths: TRANSLATER takes 16/32-bit writes, 64-bit registers 32/64, bytes nothing.
    assert!(g.its.read(reg::CTLR, Double).is_err());
    assert!(g.its.read(reg::TYPER, Byte).is_err());
    assert!(g.its.read(reg::TYPER + 2, Half).is_err());
    assert!(g.w(reg::TRANSLATER, Half, 1).is_ok());
    assert!(g.w(reg::CBASER + 4, Double, 1).is_err(), "unaligned");
    // A vGIC without an ITS has none of it.
    let plain = Vgic::new(VgicConfig::simple(1, 64)).unwrap();
    assert_eq!(
        plain.gicd_read(gicd::TYPER, Word).unwrap() & u64::from(crate::regs::typer::LPIS),
        0
    );
    assert_eq!(plain.gicr_read(gicr::TYPER, Double).unwrap() & 1, 0);
    assert_eq!(plain.gicr_read(gicr::PROPBASER, Double).unwrap(), 0);
}

#[test]
fn a_message_becomes_an_lpi_on_its_collections_vcpu() {
    let mut g = Rig::bring_up(2);
    g.map_nvme(3, 2);
    assert_eq!(g.creadr(), g.cwriter, "every command consumed");
    assert_eq!(g.its.errors(), 0);
    g.message(NVME, 1).unwrap();
    assert_eq!(g.delivered(0), []);
    assert_eq!(g.delivered(1), [(LPI0 + 1, 0xA0)]);
    g.message(NVME, 2).unwrap();
    g.message(NVME, 0).unwrap();
    assert_eq!(g.delivered(0), [(LPI0, 0xA0), (LPI0 + 2, 0xA0)]);
    // Through the shared handle, as the root complex sends it.
    let vgic = SharedVgic::from_vgic(g.vgic.clone());
    let its = SharedIts::new(g.its.clone(), vgic.clone(), 0x0808_0000);
    let mut sink = vgic.clone();
    assert!(its.message(NVME as u16, 0x0808_0000 + reg::TRANSLATER, 1, &mut sink));
    assert!(!its.message(NVME as u16, 0x0808_0044, 1, &mut sink));
    assert_ne!(vgic.lock().take_kicks() & 0b10, 0, "vCPU 1 kicked");
}

#[test]
fn lpis_follow_the_configuration_table_on_inv_and_invall() {
    let mut g = Rig::bring_up(1);
    g.map_nvme(2, 1);
    g.set_cfg(LPI0, 0x40); // disabled
    g.set_cfg(LPI0 + 1, 0x40);
    g.send(ev_cmd(opcode::INV, NVME, 0));
    g.send(cmd(opcode::INVALL, 0, 0, 0, 0));
    g.message(NVME, 0).unwrap();
    g.message(NVME, 1).unwrap();
    assert_eq!(g.delivered(0), [], "pending but disabled");
    g.set_cfg(LPI0 + 1, 0x60 | lpi_tables::CFG_ENABLE);
    assert_eq!(g.delivered(0), [], "not until INV");
    g.send(ev_cmd(opcode::INV, NVME, 1));
    assert_eq!(g.delivered(0), [(LPI0 + 1, 0x60)]);
    g.set_cfg(LPI0, 0x20 | lpi_tables::CFG_ENABLE);
    g.send(cmd(opcode::INVALL, 0, 0, 0, 0));
    assert_eq!(g.delivered(0), [(LPI0, 0x20), (LPI0 + 1, 0x60)]);
    // A configuration table outside guest RAM reads as disabled.
    g.vgic.gicr_write(gicr::CTLR, Word, 0).unwrap();
    g.vgic
        .gicr_write(gicr::PROPBASER, Double, 0x10_0000_0000 | 13)
        .unwrap();
    g.vgic.gicr_write(gicr::CTLR, Word, 1).unwrap();
    g.send(cmd(opcode::INVALL, 0, 0, 0, 0));
    g.message(NVME, 0).unwrap();
    assert_eq!(g.delivered(0), []);
}

#[test]
fn clear_discard_movi_and_movall() {
    let mut g = Rig::bring_up(2);
    g.map_nvme(2, 2);
    g.send(ev_cmd(opcode::INT, NVME, 0));
    g.send(ev_cmd(opcode::CLEAR, NVME, 0));
    assert_eq!(g.delivered(0), [], "INT then CLEAR");
    g.send(ev_cmd(opcode::INT, NVME, 0));
    // MOVI event 0 to collection 1: its pending state follows.
    g.send(cmd(opcode::MOVI, NVME, 0, 1, 0));
    assert_eq!(g.delivered(0), []);
    assert_eq!(g.delivered(1), [(LPI0, 0xA0)]);
    g.message(NVME, 0).unwrap();
    assert_eq!(
        g.delivered(1),
        [(LPI0, 0xA0)],
        "later messages go there too"
    );
    // MOVALL 1 -> 0 moves what is pending on 1.
    g.send(cmd(opcode::MOVALL, 0, 0, 1 << 16, 0));
    assert_eq!(g.delivered(1), []);
    assert_eq!(g.delivered(0), [(LPI0, 0xA0)]);
    // DISCARD: no longer pending, no longer mapped.
    g.send(ev_cmd(opcode::DISCARD, NVME, 0));
    assert_eq!(g.delivered(0), []);
    assert_eq!(g.message(NVME, 0), Err(ItsError::EventUnmapped(NVME, 0)));
    g.send(ev_cmd(opcode::INT, NVME, 0));
    g.expect_stall(ItsError::EventUnmapped(NVME, 0));
    // MAPD V=0 unmaps the device and its events.
    g.restart_queue();
    g.send(mapd(NVME, 4, 0, false));
    assert_eq!(g.message(NVME, 1), Err(ItsError::DeviceUnmapped(NVME)));
}

#[test]
fn messages_that_do_not_translate_are_dropped_and_counted() {
    let mut g = Rig::bring_up(2);
    g.map_nvme(2, 2);
    assert_eq!(g.message(0x10, 0), Err(ItsError::DeviceUnmapped(0x10)));
    assert_eq!(g.message(NVME, 7), Err(ItsError::EventUnmapped(NVME, 7)));
    assert_eq!(
        g.message(NVME, 16),
        Err(ItsError::EventOutOfRange(NVME, 16))
    );
    assert_eq!(g.its.errors(), 3);
    // A collection unmapped after the event was: dropped.
    g.send(mapc(1, 0, false));
    assert_eq!(g.message(NVME, 1), Err(ItsError::CollectionUnmapped(1)));
    // A redistributor with EnableLPIs clear drops the LPI.
    g.send(mapc(1, 1, true));
    g.vgic
        .gicr_write(gicr::STRIDE + gicr::CTLR, Word, 0)
        .unwrap();
    g.message(NVME, 1).unwrap();
    assert_eq!(g.delivered(1), []);
    // A disabled ITS translates nothing.
    g.w(reg::CTLR, Word, 0).unwrap();
    assert_eq!(g.message(NVME, 0), Err(ItsError::Disabled));
    assert_eq!(g.delivered(0), []);
    // A PE's write to GITS_TRANSLATER carries no DeviceID: ignored.
    g.w(reg::CTLR, Word, 1).unwrap();
    g.w(reg::TRANSLATER, Word, 0).unwrap();
    assert_eq!(g.delivered(0), []);
}

/// Each bad command stalls the queue at itself with its error; Retry stalls
/// again; a fresh queue recovers. Nothing is half-applied.
#[test]
fn command_errors_stall_the_queue() {
    let cases: &[([u64; 4], ItsError)] = &[
        (cmd(0x2A, 0, 0, 0, 0), ItsError::UnknownCommand(0x2A)),
        (cmd(0x00, 0, 0, 0, 0), ItsError::UnknownCommand(0)),
        (mapd(8192, 4, ITT, true), ItsError::DeviceOutOfRange(8192)),
        (
            mapd(0x1_0000, 4, ITT, true),
            ItsError::DeviceOutOfRange(0x1_0000),
        ),
        (mapd(NVME, 17, ITT, true), ItsError::IttSize(16)),
        (mapd(NVME, 4, 0x1000, true), ItsError::IttOutsideRam(0x1000)),
        (
            mapd(NVME, 16, RAM + 0xF_0000, true),
            ItsError::IttOutsideRam(RAM + 0xF_0000),
        ),
        (mapc(256, 0, true), ItsError::IcidOutOfRange(256)),
        (mapc(0, 2, true), ItsError::RdbaseOutOfRange(2)),
        (mapti(0x10, 0, LPI0, 0), ItsError::DeviceUnmapped(0x10)),
        (
            mapti(NVME, 16, LPI0, 0),
            ItsError::EventOutOfRange(NVME, 16),
        ),
        (mapti(NVME, 0, 100, 0), ItsError::LpiOutOfRange(100)),
        (mapti(NVME, 0, 16384, 0), ItsError::LpiOutOfRange(16384)),
        (mapti(NVME, 0, LPI0, 300), ItsError::IcidOutOfRange(300)),
        (cmd(opcode::MAPI, NVME, 5, 0, 0), ItsError::LpiOutOfRange(5)),
        (
            ev_cmd(opcode::INT, NVME, 9),
            ItsError::EventUnmapped(NVME, 9),
        ),
        (ev_cmd(opcode::INV, 0x20, 0), ItsError::DeviceUnmapped(0x20)),
        (
            cmd(opcode::MOVI, NVME, 0, 7, 0),
            ItsError::CollectionUnmapped(7),
        ),
        (
            cmd(opcode::INVALL, 0, 0, 5, 0),
            ItsError::CollectionUnmapped(5),
        ),
        (
            cmd(opcode::SYNC, 0, 0, 9 << 16, 0),
            ItsError::RdbaseOutOfRange(9),
        ),
        (
            cmd(opcode::MOVALL, 0, 0, 0, 3 << 16),
            ItsError::RdbaseOutOfRange(3),
        ),
    ];
    for (c, e) in cases {
        let mut g = Rig::bring_up(2);
        g.map_nvme(2, 2);
        g.send(*c);
        g.expect_stall(*e);
        // Later commands wait behind the stall.
        g.send(ev_cmd(opcode::INT, NVME, 0));
        assert_eq!(g.delivered(0), [], "{e:?}: queue stalled");
        // Retry runs the same bad command again.
        g.w(reg::CWRITER, Double, g.cwriter | 1).unwrap();
        assert!(g.its.stalled());
        assert_eq!(g.its.errors(), 2);
        g.restart_queue();
        g.send(ev_cmd(opcode::INT, NVME, 0));
        assert_eq!(g.delivered(0), [(LPI0, 0xA0)], "{e:?}: recovered");
    }
}

#[test]
fn tables_that_are_not_valid_or_not_in_ram_are_command_errors() {
    for (n, bad) in [
        (0, baser(false, 2, DT, 0)),
        (0, baser(true, 2, 0x8000_0000, 0)),
        (0, baser(true, 0, RAM + 0xF_F000, 1)),
        (1, baser(false, 0, CT, 0)),
        (1, baser(true, 1, 0x1_0000_0000, 0)),
    ] {
        let mut g = Rig::bring_up(1);
        g.w(reg::CTLR, Word, 0).unwrap();
        g.w(reg::BASER + 8 * n, Double, bad).unwrap();
        g.w(reg::CTLR, Word, 1).unwrap();
        g.send(if n == 0 {
            mapd(NVME, 4, ITT, true)
        } else {
            mapc(0, 0, true)
        });
        g.expect_stall(ItsError::Table(n as u8));
    }
    // 64 KiB pages put PA[51:48] in bits [15:12]: far outside RAM.
    let mut g = Rig::bring_up(1);
    g.w(reg::CTLR, Word, 0).unwrap();
    g.w(reg::BASER, Double, baser(true, 2, DT | 0x1000, 0))
        .unwrap();
    g.w(reg::CTLR, Word, 1).unwrap();
    g.send(mapd(NVME, 4, ITT, true));
    g.expect_stall(ItsError::Table(0));
    // BASER and CBASER are frozen while the ITS is enabled.
    let mut g = Rig::bring_up(1);
    g.w(reg::BASER, Double, 0).unwrap();
    g.w(reg::CBASER, Double, 0).unwrap();
    g.map_nvme(1, 1);
}

#[test]
fn queues_outside_ram_and_writers_past_the_queue_stall() {
    let mut g = Rig::bring_up(1);
    g.w(reg::CWRITER, Double, 0x1000).unwrap();
    assert!(g.its.stalled());
    assert_eq!(g.its.last_error(), Some(ItsError::QueueOffset(0x1000)));
    // A queue whose last page is past RAM: the commands there cannot be read.
    let mut g = Rig::bring_up(1);
    g.w(reg::CTLR, Word, 0).unwrap();
    let top = RAM + RAM_SIZE as u64 - 0x1000;
    g.w(reg::CBASER, Double, 1 << 63 | top | 1).unwrap();
    let sync = cmd(opcode::SYNC, 0, 0, 0, 0);
    for at in (0..0x1000).step_by(32) {
        g.mem.write(top + at, &sync[0].to_le_bytes()).unwrap();
    }
    g.w(reg::CTLR, Word, 1).unwrap();
    g.w(reg::CWRITER, Double, 0x1020).unwrap();
    for _ in 0..3 {
        g.creadr(); // the driver polls: 128 SYNCs take more than one access
    }
    assert!(g.its.stalled());
    assert_eq!(g.its.last_error(), Some(ItsError::QueueRead(top + 0x1000)));
    assert_eq!(g.creadr(), 0x1000 | 1);
    // A queue nowhere near RAM.
    let mut g = Rig::bring_up(1);
    g.w(reg::CTLR, Word, 0).unwrap();
    g.w(reg::CBASER, Double, 1 << 63 | 0xF_FFFF_F000 | 0xFF)
        .unwrap();
    g.w(reg::CTLR, Word, 1).unwrap();
    g.w(reg::CWRITER, Double, 0xF_FFE0).unwrap();
    assert!(g.its.stalled());
}

/// A writer just behind the reader is a full queue: 127 commands run once each
/// (the ITS does not go round again), a bounded number per access (the driver's
/// CREADR polls run the rest), and the queue wraps.
#[test]
fn a_full_queue_runs_once_per_write_and_wraps() {
    let mut g = Rig::bring_up(1);
    g.map_nvme(1, 1);
    let start = g.creadr();
    for i in 0..127u64 {
        let at = (start + 32 * i) % QUEUE_BYTES;
        let c = ev_cmd(opcode::INT, NVME, 0);
        for (k, d) in c.iter().enumerate() {
            g.mem
                .write(QUEUE + at + 8 * k as u64, &d.to_le_bytes())
                .unwrap();
        }
    }
    let end = (start + QUEUE_BYTES - 32) % QUEUE_BYTES;
    g.w(reg::CWRITER, Double, end).unwrap();
    let after_write = g.r(reg::CREADR, Double);
    assert_eq!(
        after_write,
        (start + 32 * limits::COMMANDS_PER_ACCESS) % QUEUE_BYTES,
        "one access runs a bounded number"
    );
    let mut polls = 0;
    while g.creadr() != end {
        polls += 1;
        assert!(polls < 3, "CREADR polls finish the queue");
    }
    assert!(!g.its.stalled());
    assert_eq!(g.delivered(0), [(LPI0, 0xA0)]);
    // Writing the same CWRITER again runs nothing.
    g.w(reg::CWRITER, Double, end).unwrap();
    assert_eq!(g.creadr(), end);
}

#[test]
fn limits_bound_what_the_its_keeps() {
    let mut g = Rig::bring_up(1);
    for dev in 0..limits::MAX_DEVICES as u32 {
        g.send(mapd(dev, 1, ITT, true));
    }
    assert!(!g.its.stalled());
    g.send(mapd(limits::MAX_DEVICES as u32, 1, ITT, true));
    g.expect_stall(ItsError::Limit);
    // Remapping a mapped device is no new device.
    g.restart_queue();
    g.send(mapd(3, 16, ITT, true));
    g.send(mapc(0, 0, true));
    for ev in 0..limits::MAX_EVENTS as u32 {
        g.send(mapti(3, ev, LPI0 + (ev % 8192), 0));
        assert!(!g.its.stalled(), "{ev}");
    }
    g.send(mapti(3, limits::MAX_EVENTS as u32, LPI0, 0));
    g.expect_stall(ItsError::Limit);
    // Remapping an event is no new event; DISCARD frees one.
    g.restart_queue();
    g.send(mapti(3, 0, LPI0 + 5, 0));
    g.send(ev_cmd(opcode::DISCARD, 3, 1));
    g.send(mapti(3, 9999, LPI0, 0));
    assert!(!g.its.stalled());
}

/// The device table, collection table and ITTs are the guest's memory, but the
/// ITS keeps its translations: a guest scribbling over them changes nothing.
#[test]
fn scribbling_over_the_its_tables_changes_nothing() {
    let mut g = Rig::bring_up(1);
    g.map_nvme(2, 1);
    let junk = alloc::vec![0xA5u8; 0x3_0000];
    g.mem.write(DT, &junk).unwrap();
    g.message(NVME, 1).unwrap();
    assert_eq!(g.delivered(0), [(LPI0 + 1, 0xA0)]);
}

/// Random commands, writers and retries: never a panic, CREADR always inside the
/// queue, and the ITS still works afterwards from a fresh queue.
#[test]
fn garbage_commands_never_break_the_its() {
    let mut g = Rig::bring_up(2);
    g.map_nvme(4, 2);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for round in 0..3000 {
        let op = [
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
        ][(next() % 12) as usize];
        let r = next();
        let mut c = [
            u64::from(op) | (r & 0xF_0000_0000),
            next() & 0x0000_3FFF_0000_001F,
            next() & 0x8000_0000_0001_FFFF | (RAM + (next() % RAM_SIZE as u64)) & !0xFF,
            next(),
        ];
        if round % 7 == 0 {
            c[0] = next();
        }
        g.send(c);
        if g.its.stalled() {
            if round % 3 == 0 {
                g.w(reg::CWRITER, Double, g.cwriter | 1).unwrap();
            } else {
                g.restart_queue();
            }
        }
        assert!(g.creadr() & !1 < QUEUE_BYTES);
        let _ = g.message(NVME, (next() % 20) as u32);
        let _ = g.delivered((round % 2) as usize);
    }
    g.restart_queue();
    g.map_nvme(2, 2);
    g.send(ev_cmd(opcode::CLEAR, NVME, 1));
    let _ = g.delivered(0);
    g.message(NVME, 1).unwrap();
    assert!(g.delivered(1).contains(&(LPI0 + 1, 0xA0)));
}

#[test]
fn reset_forgets_everything() {
    let mut g = Rig::bring_up(1);
    g.map_nvme(1, 1);
    g.its.reset();
    assert_eq!(g.r(reg::CBASER, Double), 0);
    assert_eq!(g.r(reg::CTLR, Word), 1 << 31);
    g.w(reg::CTLR, Word, 1).unwrap();
    assert_eq!(g.message(NVME, 0), Err(ItsError::DeviceUnmapped(NVME)));
}

/// Records the LPIs a translation makes pending.
#[derive(Default)]
struct Recorder(Vec<(u32, usize)>);

impl InterruptSink for Recorder {
    fn set_level(&mut self, _intid: u32, _level: bool) {}
    fn set_lpi_pending(&mut self, intid: u32, vcpu: usize) {
        self.0.push((intid, vcpu));
    }
}

/// What a guest and the root complex see of an ITS: its registers, and where each
/// of a few messages goes.
fn probe_its(its: &mut Its) -> (Vec<u64>, Vec<(u32, usize)>, Vec<bool>) {
    let regs = [
        reg::CTLR,
        reg::TYPER,
        reg::CBASER,
        reg::CWRITER,
        reg::CREADR,
        reg::BASER,
        reg::BASER + 8,
    ]
    .iter()
    .map(|&o| {
        let size = if o == reg::CTLR { Word } else { Double };
        its.read(o, size).unwrap()
    })
    .collect();
    let mut sink = Recorder::default();
    let mut ok = Vec::new();
    for dev in [0, NVME, 0x10] {
        for ev in 0..5 {
            ok.push(its.translate(dev, ev, &mut sink).is_ok());
        }
    }
    (regs, sink.0, ok)
}

/// An ITS with the NVMe function's events 0..=2 mapped over two vCPUs (event 3
/// mapped, then discarded).
fn busy_its() -> Rig {
    let mut g = Rig::bring_up(2);
    g.map_nvme(4, 2);
    g.send(ev_cmd(opcode::DISCARD, NVME, 3));
    g
}

vdev::save_restore_tests!(
    saved_state,
    make: || Its::new(2, &[(RAM, RAM_SIZE as u64)]),
    drive: |its: &mut Its| *its = busy_its().its,
    probe: probe_its,
);

#[test]
fn a_restored_its_and_vgic_deliver_what_the_saved_ones_would() {
    let mut g = busy_its();
    // LPI0 + 1 pending on vCPU 1 when the VM is saved.
    g.message(NVME, 1).unwrap();
    let its_blob = g.its.save();
    let vgic_blob = g.vgic.save();
    let mut h = Rig::new(2);
    h.mem = g.mem.clone();
    h.its.restore(&its_blob).unwrap();
    h.vgic.restore(&vgic_blob).unwrap();
    assert_eq!(h.its.save(), its_blob);
    assert_eq!(h.vgic.save(), vgic_blob);
    // The pending LPI arrives, with the priority the configuration table gave it.
    assert_eq!(h.delivered(1), [(LPI0 + 1, 0xA0)]);
    assert_eq!(h.delivered(0), []);
    // Translations keep working: event 2 goes to vCPU 0, event 3 was discarded.
    h.message(NVME, 2).unwrap();
    assert_eq!(h.delivered(0), [(LPI0 + 2, 0xA0)]);
    assert_eq!(h.message(NVME, 3), Err(ItsError::EventUnmapped(NVME, 3)));
    // The command queue goes on where it was.
    h.cwriter = g.cwriter;
    h.send(mapti(NVME, 3, LPI0 + 3, 1));
    assert_eq!(h.creadr(), h.cwriter);
    h.message(NVME, 3).unwrap();
    // (LPI0 + 1 stays pending: the guest never took it from the list register.)
    assert_eq!(h.delivered(1), [(LPI0 + 1, 0xA0), (LPI0 + 3, 0xA0)]);
    // A vGIC without LPIs refuses the blob of one with them, and the other way.
    let mut plain = Vgic::new(VgicConfig::simple(2, 64)).unwrap();
    assert_eq!(plain.restore(&vgic_blob), Err(RestoreError::Malformed));
    assert_eq!(h.vgic.restore(&plain.save()), Err(RestoreError::Malformed));
}

/// Byte offsets of fields in a [`busy_its`] blob (after the 8-byte header).
mod at {
    pub const VCPUS: usize = 8;
    pub const ENABLED: usize = 12;
    pub const CBASER: usize = 14;
    pub const CREADR: usize = 30;
    pub const BASER0: usize = 38;
    /// Collection count, then (ICID, vCPU) pairs.
    pub const COLLECTIONS: usize = 54;
    /// The first collection's vCPU.
    pub const VCPU0: usize = COLLECTIONS + 8;
    /// Device count after two collections, then the first device.
    pub const DEVICES: usize = COLLECTIONS + 4 + 2 * 8;
    pub const DEV_ID: usize = DEVICES + 4;
    pub const EVENT_BITS: usize = DEV_ID + 4;
    pub const EVENTS: usize = EVENT_BITS + 1;
    /// The first event: EventID, pINTID, ICID.
    pub const EV0: usize = EVENTS + 4;
}

#[test]
fn hostile_blobs_are_refused_and_change_nothing() {
    let blob = busy_its().its.save();
    let u32_at = |b: &[u8], o: usize| u32::from_le_bytes(b[o..o + 4].try_into().unwrap());
    assert_eq!(u32_at(&blob, at::VCPUS), 2);
    assert_eq!(u32_at(&blob, at::COLLECTIONS), 2);
    assert_eq!(u32_at(&blob, at::DEVICES), 1);
    assert_eq!(u32_at(&blob, at::DEV_ID), NVME);
    assert_eq!(u32_at(&blob, at::EV0 + 4), LPI0);
    let put = |o: usize, v: &[u8]| {
        let mut b = blob.clone();
        b[o..o + v.len()].copy_from_slice(v);
        b
    };
    let cases: Vec<(&str, Vec<u8>)> = alloc::vec![
        ("another vCPU count", put(at::VCPUS, &3u32.to_le_bytes())),
        ("enabled flag not 0/1", put(at::ENABLED, &[2])),
        ("CBASER reserved bit", put(at::CBASER + 1, &[0x02])),
        (
            "CREADR past the queue",
            put(at::CREADR, &0x2000u64.to_le_bytes())
        ),
        ("CREADR unaligned", put(at::CREADR, &4u64.to_le_bytes())),
        ("BASER Type bits", put(at::BASER0 + 7, &[0x81])),
        ("collection on vCPU 2", put(at::VCPU0, &2u32.to_le_bytes())),
        ("ICID 256", put(at::COLLECTIONS + 4, &256u32.to_le_bytes())),
        (
            "collection count huge",
            put(at::COLLECTIONS, &u32::MAX.to_le_bytes())
        ),
        (
            "device count huge",
            put(at::DEVICES, &u32::MAX.to_le_bytes())
        ),
        (
            "DeviceID past 16 bits",
            put(at::DEV_ID, &0x1_0000u32.to_le_bytes())
        ),
        ("17 EventID bits", put(at::EVENT_BITS, &[17])),
        ("0 EventID bits", put(at::EVENT_BITS, &[0])),
        ("event count huge", put(at::EVENTS, &u32::MAX.to_le_bytes())),
        ("EventID past the ITT", put(at::EV0, &16u32.to_le_bytes())),
        ("pINTID not an LPI", put(at::EV0 + 4, &40u32.to_le_bytes())),
        (
            "ICID of an event 256",
            put(at::EV0 + 8, &256u32.to_le_bytes())
        ),
        (
            "events out of order",
            put(at::EV0 + 12, &0u32.to_le_bytes())
        ),
    ];
    let mut g = busy_its();
    let before = g.its.save();
    for (why, bad) in cases {
        assert_eq!(g.its.restore(&bad), Err(RestoreError::Malformed), "{why}");
        assert_eq!(
            g.its.save(),
            before,
            "{why}: a refused blob changes nothing"
        );
    }
    // Too many events over all devices.
    let mut big = Its::new(1, &[(RAM, RAM_SIZE as u64)]);
    let mut w = vdev::save::Writer::new(*b"VITS", 1);
    w.u32(1).flag(false).flag(false);
    for _ in 0..5 {
        w.u64(0);
    }
    w.u32(0).u32(2);
    for dev in 0..2u32 {
        w.u32(dev).u8(16).u32(limits::MAX_EVENTS as u32 / 2 + 1);
        for ev in 0..limits::MAX_EVENTS as u32 / 2 + 1 {
            w.u32(ev).u32(LPI0).u32(0);
        }
    }
    assert_eq!(big.restore(&w.finish()), Err(RestoreError::Malformed));
}
