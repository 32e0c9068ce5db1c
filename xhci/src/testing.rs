//! A small xHCI driver for tests and the fuzz target: it brings the controller up
//! the way Linux's and Windows' drivers do (reset, DCBAA, command ring, one event
//! ring segment, run), enables and addresses slots, enumerates devices through
//! their descriptors, configures their endpoints and moves data — all through the
//! registers and rings in a [`VecMemory`], never through the controller's insides.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec;
use alloc::vec::Vec;

use vdev::{
    AccessSize, AsyncBlock, BlockError, BlockOp, Completion, GuestMemory, Submit, VecMemory,
};

use crate::controller::{Controller, Interrupts};
use crate::defs::{cc, ctx, intr, layout, op, portsc, trb, trb_type, usb, usbcmd};
use crate::trb::Trb;
use crate::usb::Setup;

pub const RAM_BASE: u64 = 0x4000_0000;
pub const RAM_SIZE: usize = 4 << 20;
pub const DCBAA: u64 = RAM_BASE;
pub const CMD_RING: u64 = RAM_BASE + 0x1000;
pub const ERST: u64 = RAM_BASE + 0x2000;
pub const EVENT_RING: u64 = RAM_BASE + 0x3000;
/// TRBs of the event ring segment.
pub const EVENT_TRBS: u32 = 64;
pub const INPUT_CTX: u64 = RAM_BASE + 0x8000;
/// Output device contexts, 0x800 bytes each by slot.
pub const DEVICE_CTX: u64 = RAM_BASE + 0x1_0000;
/// Transfer rings, 0x400 bytes (64 TRBs) each by (slot, DCI).
pub const TRANSFER_RINGS: u64 = RAM_BASE + 0x4_0000;
/// Data buffers.
pub const DATA: u64 = RAM_BASE + 0x20_0000;
/// TRBs of command and transfer rings (the last one is the Link TRB).
pub const RING_TRBS: u64 = 64;

/// The interrupt vectors signalled.
#[derive(Debug, Default)]
pub struct Irqs {
    pub signals: Vec<u16>,
}

impl Interrupts for Irqs {
    fn signal(&mut self, vector: u16) {
        self.signals.push(vector);
    }
}

/// A RAM disk as an asynchronous backend; `fail` makes every access fail as an
/// I/O error. By default requests complete inside `submit`; with `hold` they wait
/// until the test completes them ([`Self::complete`], in any order), and `busy`
/// refuses that many submissions as busy first.
#[derive(Default)]
pub struct RamDisk {
    pub data: Vec<u8>,
    pub read_only: bool,
    pub fail: bool,
    pub hold: bool,
    pub busy: u32,
    /// [`AsyncBlock::max_transfer`].
    pub max_transfer: Option<usize>,
    /// Requests held: tag, operation, buffer.
    pub held: Vec<(u64, BlockOp, Vec<u8>)>,
    /// Requests performed, in completion order: operation and length.
    pub log: Vec<(BlockOp, usize)>,
    /// Raised when a held request completes ([`AsyncBlock::set_waker`]).
    pub waker: Option<vdev::WorkSignal>,
    done: VecDeque<Completion>,
}

impl RamDisk {
    /// `sectors` sectors, each filled with a pattern of its number.
    pub fn patterned(sectors: usize, read_only: bool) -> Self {
        let mut data = vec![0u8; sectors * 512];
        for (i, b) in data.iter_mut().enumerate() {
            *b = ((i / 512) as u8).wrapping_mul(7) ^ (i as u8);
        }
        RamDisk {
            data,
            read_only,
            ..RamDisk::default()
        }
    }

    fn perform(&mut self, tag: u64, op: BlockOp, mut buf: Vec<u8>) -> Completion {
        self.log.push((op, buf.len()));
        let range = |offset: u64, len: usize, size: usize| {
            let o = usize::try_from(offset).ok()?;
            let end = o.checked_add(len)?;
            (end <= size).then_some(o..end)
        };
        let result = match op {
            _ if self.fail => Err(BlockError::Io),
            BlockOp::Read { offset } => match range(offset, buf.len(), self.data.len()) {
                Some(r) => {
                    buf.copy_from_slice(&self.data[r]);
                    Ok(())
                }
                None => Err(BlockError::OutOfRange),
            },
            BlockOp::Write { .. } if self.read_only => Err(BlockError::ReadOnly),
            BlockOp::Write { offset } => match range(offset, buf.len(), self.data.len()) {
                Some(r) => {
                    self.data[r].copy_from_slice(&buf);
                    Ok(())
                }
                None => Err(BlockError::OutOfRange),
            },
            BlockOp::Flush => Ok(()),
        };
        Completion { tag, result, buf }
    }

    /// Completes the held request at `index` (0: the oldest held); `false` when
    /// there is none.
    pub fn complete(&mut self, index: usize) -> bool {
        if index >= self.held.len() {
            return false;
        }
        let (tag, op, buf) = self.held.remove(index);
        let c = self.perform(tag, op, buf);
        self.done.push_back(c);
        if let Some(w) = &self.waker {
            w.raise();
        }
        true
    }

    /// Completes a request nobody submitted (a confused backend).
    pub fn complete_unknown(&mut self, tag: u64) {
        self.done.push_back(Completion {
            tag,
            result: Ok(()),
            buf: vec![0xee; 512],
        });
    }
}

impl AsyncBlock for RamDisk {
    fn capacity(&self) -> u64 {
        self.data.len() as u64
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn max_transfer(&self) -> usize {
        self.max_transfer.unwrap_or(usize::MAX)
    }
    fn submit(&mut self, tag: u64, op: BlockOp, buf: Vec<u8>) -> Submit {
        if self.busy > 0 {
            self.busy -= 1;
            return Submit::Busy(buf);
        }
        assert!(
            buf.len() <= self.max_transfer(),
            "a request of {} bytes over the backend's limit",
            buf.len()
        );
        if self.hold {
            self.held.push((tag, op, buf));
            return Submit::Queued;
        }
        Submit::Done(self.perform(tag, op, buf))
    }
    fn poll(&mut self) -> Option<Completion> {
        self.done.pop_front()
    }
    fn has_completions(&self) -> bool {
        !self.done.is_empty()
    }
    fn set_waker(&mut self, signal: vdev::WorkSignal) {
        self.waker = Some(signal);
    }
}

/// The producer side of a command or transfer ring, with a Link TRB (Toggle
/// Cycle) in its last slot.
#[derive(Debug, Clone, Copy)]
pub struct ProducerRing {
    pub base: u64,
    pub enqueue: u64,
    pub cycle: bool,
}

impl ProducerRing {
    pub fn new(base: u64) -> Self {
        ProducerRing {
            base,
            enqueue: base,
            cycle: true,
        }
    }
    /// Writes `t` (with the producer's cycle bit) and returns its address.
    pub fn push(&mut self, mem: &mut dyn GuestMemory, mut t: Trb) -> u64 {
        t.control = (t.control & !trb::CYCLE) | u32::from(self.cycle);
        let at = self.enqueue;
        mem.write(at, &t.to_bytes()).expect("ring in RAM");
        self.enqueue += trb::SIZE;
        if self.enqueue == self.base + (RING_TRBS - 1) * trb::SIZE {
            let link = Trb::new(
                trb_type::LINK,
                self.base,
                0,
                trb::TC | u32::from(self.cycle),
            );
            mem.write(self.enqueue, &link.to_bytes())
                .expect("ring in RAM");
            self.enqueue = self.base;
            self.cycle = !self.cycle;
        }
        at
    }
}

/// Why a driver operation failed: the completion code it got (0: no event).
pub type Code = u8;
/// [`Driver::bot`]'s error for a CSW that is not one (signature or tag wrong).
pub const BAD_CSW: Code = 0xff;

/// The test driver.
pub struct Driver {
    pub mem: VecMemory,
    pub irq: Irqs,
    pub cmd: ProducerRing,
    pub ev_dequeue: u64,
    pub ev_cycle: bool,
    pub ev_index: u32,
    /// Events read but not yet claimed.
    pub events: Vec<Trb>,
    pub rings: BTreeMap<(u8, u8), ProducerRing>,
}

impl Default for Driver {
    fn default() -> Self {
        Self::new()
    }
}

impl Driver {
    pub fn new() -> Self {
        Driver {
            mem: VecMemory::new(RAM_BASE, RAM_SIZE),
            irq: Irqs::default(),
            cmd: ProducerRing::new(CMD_RING),
            ev_dequeue: EVENT_RING,
            ev_cycle: true,
            ev_index: 0,
            events: Vec::new(),
            rings: BTreeMap::new(),
        }
    }

    pub fn r32<B: AsyncBlock>(&mut self, c: &mut Controller<B>, off: u64) -> u32 {
        c.read(off, AccessSize::Word).expect("read") as u32
    }
    pub fn w32<B: AsyncBlock>(&mut self, c: &mut Controller<B>, off: u64, v: u32) {
        c.write(
            &mut self.mem,
            &mut self.irq,
            off,
            AccessSize::Word,
            u64::from(v),
        )
        .expect("write");
    }
    pub fn w64<B: AsyncBlock>(&mut self, c: &mut Controller<B>, off: u64, v: u64) {
        self.w32(c, off, v as u32);
        self.w32(c, off + 4, (v >> 32) as u32);
    }

    pub fn portsc<B: AsyncBlock>(&mut self, c: &mut Controller<B>, port: u8) -> u32 {
        self.r32(c, layout::PORTS + layout::PORT_STRIDE * u64::from(port - 1))
    }

    /// Reset, DCBAA, command ring, ERST with one segment, interrupts on, run.
    pub fn start<B: AsyncBlock>(&mut self, c: &mut Controller<B>) {
        self.w32(c, layout::OPER + op::USBCMD, usbcmd::HCRST);
        let slots = self.r32(c, 0x04) & 0xff;
        self.w32(c, layout::OPER + op::CONFIG, slots);
        self.w64(c, layout::OPER + op::DCBAAP, DCBAA);
        self.cmd = ProducerRing::new(CMD_RING);
        self.w64(c, layout::OPER + op::CRCR, CMD_RING | 1);
        let mut e = [0u8; 16];
        e[0..8].copy_from_slice(&EVENT_RING.to_le_bytes());
        e[8..12].copy_from_slice(&EVENT_TRBS.to_le_bytes());
        self.mem.write(ERST, &e).unwrap();
        self.mem
            .write(EVENT_RING, &vec![0u8; EVENT_TRBS as usize * 16])
            .unwrap();
        self.ev_dequeue = EVENT_RING;
        self.ev_cycle = true;
        self.ev_index = 0;
        self.events.clear();
        let ir = layout::INTERRUPTERS;
        self.w32(c, ir + intr::ERSTSZ, 1);
        self.w64(c, ir + intr::ERDP, EVENT_RING);
        self.w64(c, ir + intr::ERSTBA, ERST);
        self.w32(c, ir + intr::IMAN, intr::IMAN_IE);
        self.w32(c, layout::OPER + op::USBCMD, usbcmd::RS | usbcmd::INTE);
    }

    /// Reads new events off the event ring and acknowledges them (ERDP with EHB).
    pub fn drain<B: AsyncBlock>(&mut self, c: &mut Controller<B>) {
        let mut any = false;
        loop {
            let t = Trb::read(&self.mem, self.ev_dequeue).unwrap();
            if t.cycle() != self.ev_cycle {
                break;
            }
            self.events.push(t);
            any = true;
            self.ev_index += 1;
            if self.ev_index == EVENT_TRBS {
                self.ev_index = 0;
                self.ev_cycle = !self.ev_cycle;
            }
            self.ev_dequeue = EVENT_RING + u64::from(self.ev_index) * 16;
        }
        if any {
            let ir = layout::INTERRUPTERS;
            self.w64(c, ir + intr::ERDP, self.ev_dequeue | intr::ERDP_EHB);
            self.w32(c, ir + intr::IMAN, intr::IMAN_IP | intr::IMAN_IE);
        }
    }

    /// Takes the first event matching `f`.
    pub fn take<B: AsyncBlock>(
        &mut self,
        c: &mut Controller<B>,
        f: impl Fn(&Trb) -> bool,
    ) -> Option<Trb> {
        self.drain(c);
        let i = self.events.iter().position(f)?;
        Some(self.events.remove(i))
    }

    /// Queues a command, rings doorbell 0, returns its completion event.
    pub fn command<B: AsyncBlock>(&mut self, c: &mut Controller<B>, t: Trb) -> Option<Trb> {
        let at = self.cmd.push(&mut self.mem, t);
        self.w32(c, layout::DOORBELLS, 0);
        self.take(c, |e| {
            e.kind() == trb_type::COMMAND_COMPLETION && e.param == at
        })
    }

    /// Completion code and slot of a command.
    pub fn cmd<B: AsyncBlock>(&mut self, c: &mut Controller<B>, t: Trb) -> (Code, u8) {
        match self.command(c, t) {
            Some(e) => ((e.status >> 24) as u8, e.slot()),
            None => (0, 0),
        }
    }

    /// Resets a USB 2 port (a USB 3 port is enabled already) and waits for it.
    pub fn reset_port<B: AsyncBlock>(&mut self, c: &mut Controller<B>, port: u8) -> bool {
        let off = layout::PORTS + layout::PORT_STRIDE * u64::from(port - 1);
        let sc = self.r32(c, off);
        self.w32(c, off, (sc & portsc::PP) | portsc::PR | portsc::CHANGE);
        let ok = self.portsc(c, port) & portsc::PED != 0;
        let sc = self.r32(c, off);
        self.w32(c, off, (sc & portsc::PP) | portsc::CHANGE);
        self.drain(c);
        self.events
            .retain(|e| e.kind() != trb_type::PORT_STATUS_CHANGE);
        ok
    }

    pub fn enable_slot<B: AsyncBlock>(&mut self, c: &mut Controller<B>) -> Result<u8, Code> {
        match self.cmd(c, Trb::new(trb_type::ENABLE_SLOT, 0, 0, 0)) {
            (cc::SUCCESS, s) => Ok(s),
            (code, _) => Err(code),
        }
    }

    fn clear_input(&mut self) {
        self.mem.write(INPUT_CTX, &[0u8; 33 * 32]).unwrap();
    }

    fn ring_for(&mut self, slot: u8, dci: u8) -> ProducerRing {
        let base = TRANSFER_RINGS + (u64::from(slot) * 32 + u64::from(dci)) * RING_TRBS * 16;
        self.mem
            .write(base, &vec![0u8; (RING_TRBS * 16) as usize])
            .unwrap();
        let r = ProducerRing::new(base);
        self.rings.insert((slot, dci), r);
        r
    }

    /// Address Device for `slot` on `port` with EP0's max packet `mps0`.
    pub fn address<B: AsyncBlock>(
        &mut self,
        c: &mut Controller<B>,
        slot: u8,
        port: u8,
        speed: u32,
        mps0: u16,
    ) -> Code {
        let out = DEVICE_CTX + u64::from(slot) * 0x800;
        self.mem.write(out, &[0u8; 0x800]).unwrap();
        self.mem
            .write_u64(DCBAA + 8 * u64::from(slot), out)
            .unwrap();
        self.clear_input();
        self.mem.write_u32(INPUT_CTX + 4, 0b11).unwrap();
        let sctx = INPUT_CTX + 32;
        self.mem.write_u32(sctx, 1 << 27 | speed << 20).unwrap();
        self.mem.write_u32(sctx + 4, u32::from(port) << 16).unwrap();
        let ring = self.ring_for(slot, 1);
        let ep0 = INPUT_CTX + 64;
        self.mem
            .write_u32(
                ep0 + 4,
                u32::from(mps0) << 16 | ctx::EP_CONTROL << 3 | 3 << 1,
            )
            .unwrap();
        self.mem.write_u64(ep0 + 8, ring.base | 1).unwrap();
        self.cmd(
            c,
            Trb::new(
                trb_type::ADDRESS_DEVICE,
                INPUT_CTX,
                0,
                u32::from(slot) << trb::SLOT_SHIFT,
            ),
        )
        .0
    }

    /// The output slot context's dword `i` for `slot`.
    pub fn out_slot(&self, slot: u8, i: u64) -> u32 {
        self.mem
            .read_u32(DEVICE_CTX + u64::from(slot) * 0x800 + 4 * i)
            .unwrap()
    }
    /// The output endpoint context's dword `i`.
    pub fn out_ep(&self, slot: u8, dci: u8, i: u64) -> u32 {
        self.mem
            .read_u32(DEVICE_CTX + u64::from(slot) * 0x800 + 32 * u64::from(dci) + 4 * i)
            .unwrap()
    }

    fn ring_doorbell<B: AsyncBlock>(&mut self, c: &mut Controller<B>, slot: u8, dci: u8) {
        self.w32(c, layout::DOORBELLS + 4 * u64::from(slot), u32::from(dci));
    }

    /// Pushes a TRB on the transfer ring of (`slot`, `dci`).
    pub fn push(&mut self, slot: u8, dci: u8, t: Trb) -> u64 {
        let mut r = self.rings[&(slot, dci)];
        let at = r.push(&mut self.mem, t);
        self.rings.insert((slot, dci), r);
        at
    }

    /// A control transfer on EP0: the data for IN, or the completion code of the
    /// first failing event.
    pub fn control<B: AsyncBlock>(
        &mut self,
        c: &mut Controller<B>,
        slot: u8,
        setup: Setup,
        out: &[u8],
    ) -> Result<Vec<u8>, Code> {
        let len = if setup.is_in() {
            usize::from(setup.length)
        } else {
            out.len()
        };
        let trt = if len == 0 {
            0
        } else if setup.is_in() {
            3
        } else {
            2
        };
        self.push(
            slot,
            1,
            Trb::new(
                trb_type::SETUP_STAGE,
                setup.to_u64(),
                8,
                trb::IDT | trt << 16,
            ),
        );
        let buf = DATA;
        if len > 0 {
            if !setup.is_in() {
                self.mem.write(buf, out).unwrap();
            }
            let dir = if setup.is_in() {
                trb::DIR_IN | trb::ISP
            } else {
                0
            };
            self.push(
                slot,
                1,
                Trb::new(trb_type::DATA_STAGE, buf, len as u32, dir),
            );
        }
        let status_dir = if setup.is_in() && len > 0 {
            0
        } else {
            trb::DIR_IN
        };
        let status = self.push(
            slot,
            1,
            Trb::new(trb_type::STATUS_STAGE, 0, 0, trb::IOC | status_dir),
        );
        self.ring_doorbell(c, slot, 1);
        self.drain(c);
        let mine: Vec<Trb> = self
            .events
            .iter()
            .filter(|e| {
                e.kind() == trb_type::TRANSFER_EVENT && e.slot() == slot && e.endpoint() == 1
            })
            .copied()
            .collect();
        self.events.retain(|e| {
            !(e.kind() == trb_type::TRANSFER_EVENT && e.slot() == slot && e.endpoint() == 1)
        });
        let mut got = len;
        for e in &mine {
            let code = (e.status >> 24) as u8;
            match code {
                cc::SUCCESS if e.param == status => {
                    let mut d = vec![0u8; got];
                    if setup.is_in() {
                        self.mem.read(buf, &mut d).unwrap();
                        return Ok(d);
                    }
                    return Ok(Vec::new());
                }
                cc::SHORT_PACKET => got = len - (e.status & 0xff_ffff) as usize,
                cc::SUCCESS => {}
                _ => return Err(code),
            }
        }
        Err(0)
    }

    pub fn get_descriptor<B: AsyncBlock>(
        &mut self,
        c: &mut Controller<B>,
        slot: u8,
        request_type: u8,
        kind: u8,
        index: u8,
        length: u16,
    ) -> Result<Vec<u8>, Code> {
        let setup = Setup {
            request_type,
            request: usb::GET_DESCRIPTOR,
            value: u16::from(kind) << 8 | u16::from(index),
            index: 0,
            length,
        };
        self.control(c, slot, setup, &[])
    }

    /// Configure Endpoint with the endpoint descriptors of `config` (a
    /// configuration descriptor), then SET_CONFIGURATION 1. Returns the DCIs.
    pub fn configure<B: AsyncBlock>(
        &mut self,
        c: &mut Controller<B>,
        slot: u8,
        config: &[u8],
    ) -> Result<Vec<u8>, Code> {
        self.clear_input();
        let mut add = 1u32;
        let mut dcis = Vec::new();
        let mut i = 0;
        while i + 1 < config.len() {
            let len = usize::from(config[i]);
            if len == 0 {
                break;
            }
            if config[i + 1] == usb::DT_ENDPOINT && i + 7 <= config.len() {
                let addr = config[i + 2];
                let attr = config[i + 3] & 3;
                let mps = u16::from_le_bytes([config[i + 4], config[i + 5]]);
                let dci = (addr & 0xf) * 2 + u8::from(addr & 0x80 != 0);
                let ty = match (attr, addr & 0x80 != 0) {
                    (2, false) => ctx::EP_BULK_OUT,
                    (2, true) => ctx::EP_BULK_IN,
                    (3, false) => ctx::EP_INT_OUT,
                    _ => ctx::EP_INT_IN,
                };
                let ring = self.ring_for(slot, dci);
                let e = INPUT_CTX + 32 * (u64::from(dci) + 1);
                self.mem
                    .write_u32(e + 4, u32::from(mps) << 16 | ty << 3 | 3 << 1)
                    .unwrap();
                self.mem.write_u64(e + 8, ring.base | 1).unwrap();
                add |= 1 << dci;
                dcis.push(dci);
            }
            i += len;
        }
        let last = dcis.iter().copied().max().unwrap_or(1);
        self.mem.write_u32(INPUT_CTX + 4, add).unwrap();
        self.mem
            .write_u32(INPUT_CTX + 32, u32::from(last) << 27)
            .unwrap();
        let (code, _) = self.cmd(
            c,
            Trb::new(
                trb_type::CONFIGURE_ENDPOINT,
                INPUT_CTX,
                0,
                u32::from(slot) << trb::SLOT_SHIFT,
            ),
        );
        if code != cc::SUCCESS {
            return Err(code);
        }
        let setup = Setup {
            request_type: 0,
            request: usb::SET_CONFIGURATION,
            value: 1,
            index: 0,
            length: 0,
        };
        self.control(c, slot, setup, &[])?;
        Ok(dcis)
    }

    /// Port reset, Enable Slot, Address Device, device and configuration
    /// descriptors, Configure Endpoint, SET_CONFIGURATION: the slot and the
    /// device descriptor.
    pub fn enumerate<B: AsyncBlock>(
        &mut self,
        c: &mut Controller<B>,
        port: u8,
    ) -> Result<(u8, Vec<u8>), Code> {
        if !self.reset_port(c, port) {
            return Err(0);
        }
        let speed = (self.portsc(c, port) >> portsc::SPEED_SHIFT) & 0xf;
        let slot = self.enable_slot(c)?;
        let mps0 = if speed == crate::defs::speed::SUPER {
            512
        } else {
            64
        };
        let code = self.address(c, slot, port, speed, mps0);
        if code != cc::SUCCESS {
            return Err(code);
        }
        let dev = self.get_descriptor(c, slot, 0x80, usb::DT_DEVICE, 0, 18)?;
        let head = self.get_descriptor(c, slot, 0x80, usb::DT_CONFIG, 0, 9)?;
        let total = u16::from_le_bytes([head[2], head[3]]);
        let config = self.get_descriptor(c, slot, 0x80, usb::DT_CONFIG, 0, total)?;
        self.configure(c, slot, &config)?;
        Ok((slot, dev))
    }

    /// One bulk or interrupt TD of a single Normal TRB (IOC, and ISP for IN) with
    /// its buffer at `buf`; returns the completion code and bytes moved (or `None`
    /// while it waits).
    pub fn transfer<B: AsyncBlock>(
        &mut self,
        c: &mut Controller<B>,
        slot: u8,
        dci: u8,
        buf: u64,
        len: u32,
    ) -> Option<(Code, u32)> {
        let flags = trb::IOC | if dci % 2 == 1 { trb::ISP } else { 0 };
        let at = self.push(slot, dci, Trb::new(trb_type::NORMAL, buf, len, flags));
        self.ring_doorbell(c, slot, dci);
        self.wait_transfer(c, at, len)
    }

    /// The Transfer Event for the TRB at `at` of `len` bytes, if posted.
    pub fn wait_transfer<B: AsyncBlock>(
        &mut self,
        c: &mut Controller<B>,
        at: u64,
        len: u32,
    ) -> Option<(Code, u32)> {
        let e = self.take(c, |e| e.kind() == trb_type::TRANSFER_EVENT && e.param == at)?;
        Some(((e.status >> 24) as u8, len - (e.status & 0xff_ffff)))
    }

    /// A BOT command: CBW out, optional data (IN into `DATA`, or OUT from `out`),
    /// CSW in. Returns the data read and the CSW's status and residue.
    pub fn bot<B: AsyncBlock>(
        &mut self,
        c: &mut Controller<B>,
        slot: u8,
        cdb: &[u8],
        data_in: u32,
        out: &[u8],
    ) -> Result<(Vec<u8>, u8, u32), Code> {
        let (dci_in, dci_out) = (3, 4);
        let mut cbw = vec![0u8; 31];
        cbw[0..4].copy_from_slice(&crate::storage::CBW_SIGNATURE.to_le_bytes());
        cbw[4..8].copy_from_slice(&0x1234_5678u32.to_le_bytes());
        let host_len = if out.is_empty() {
            data_in
        } else {
            out.len() as u32
        };
        cbw[8..12].copy_from_slice(&host_len.to_le_bytes());
        cbw[12] = if out.is_empty() { 0x80 } else { 0 };
        cbw[14] = cdb.len() as u8;
        cbw[15..15 + cdb.len()].copy_from_slice(cdb);
        let cbw_at = DATA + 0x10_0000;
        self.mem.write(cbw_at, &cbw).unwrap();
        match self.transfer(c, slot, dci_out, cbw_at, 31) {
            Some((cc::SUCCESS, _)) => {}
            Some((code, _)) => return Err(code),
            None => return Err(0),
        }
        let mut data = Vec::new();
        if !out.is_empty() {
            self.mem.write(DATA, out).unwrap();
            match self.transfer(c, slot, dci_out, DATA, out.len() as u32) {
                Some((cc::SUCCESS, _)) => {}
                Some((code, _)) => return Err(code),
                None => return Err(0),
            }
        } else if data_in > 0 {
            match self.transfer(c, slot, dci_in, DATA, data_in) {
                Some((cc::SUCCESS | cc::SHORT_PACKET, n)) => {
                    data = vec![0u8; n as usize];
                    self.mem.read(DATA, &mut data).unwrap();
                }
                Some((code, _)) => return Err(code),
                None => return Err(0),
            }
        }
        let csw_at = DATA + 0x10_1000;
        match self.transfer(c, slot, dci_in, csw_at, 13) {
            Some((cc::SUCCESS, 13)) => {}
            Some((code, _)) => return Err(code),
            None => return Err(0),
        }
        let mut csw = [0u8; 13];
        self.mem.read(csw_at, &mut csw).unwrap();
        if csw[0..4] != crate::storage::CSW_SIGNATURE.to_le_bytes()
            || csw[4..8] != 0x1234_5678u32.to_le_bytes()
        {
            return Err(BAD_CSW);
        }
        let residue = u32::from_le_bytes([csw[8], csw[9], csw[10], csw[11]]);
        Ok((data, csw[12], residue))
    }
}
