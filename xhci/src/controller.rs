//! The xHCI controller: registers, root-hub ports, the command ring, the event ring
//! of interrupter 0, device slots with their endpoint transfer rings.

use alloc::vec;
use alloc::vec::Vec;

use vdev::{AccessSize, AsyncBlock, GuestMemory, MmioError};

use crate::defs::{
    cap, cc, crcr, ctx, intr, layout, op, portsc, speed, trb, trb_type, usbcmd, usbsts,
};
use crate::hid::{Keyboard, Tablet, TabletInput};
use crate::storage::MassStorage;
use crate::trb::{Command, Fetch, Ring, RingError, Trb};
use crate::usb::{Control, Device, Setup, Transfer};

/// How the controller raises interrupts: the MSI-X vector of an interrupter (only
/// interrupter 0, vector 0, exists). The same seam as `nvme`'s; a PCI function
/// adapts it to its MSI-X table.
pub use nvme::Interrupts;

/// TRBs one doorbell (or one [`Controller::poll`]) looks at, per ring; what is left
/// waits for the next poll.
pub const TRB_BUDGET: u32 = 4096;
/// Most TRBs in one TD (a 1 MiB scatter list of unaligned 4 KiB pages is 257).
pub const MAX_TD_TRBS: usize = 1024;
/// Most TDs one endpoint completes per doorbell or poll.
pub const MAX_TDS_PER_RUN: usize = 256;
/// Most bytes one TD moves (the largest transfers Linux and Windows queue on a
/// bulk endpoint are 1 MiB).
pub const MAX_TD_BYTES: usize = 1 << 20;
/// Device slots (HCSPARAMS1.MaxSlots) at most.
pub const MAX_SLOTS: u8 = 64;
/// Root-hub ports at most.
pub const MAX_PORTS: u8 = 16;
/// Event Ring Segment Table entries at most (2^ERST Max).
pub const ERST_MAX_LOG2: u32 = 4;
/// Event ring segment sizes in TRBs (xHCI §6.5).
pub const MIN_SEGMENT_TRBS: u32 = 16;
pub const MAX_SEGMENT_TRBS: u32 = 4096;

/// Controller shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// USB 2 root-hub ports (numbered first, from 1).
    pub usb2_ports: u8,
    /// USB 3 root-hub ports (numbered after the USB 2 ones).
    pub usb3_ports: u8,
    /// Device slots.
    pub max_slots: u8,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            usb2_ports: 4,
            usb3_ports: 4,
            max_slots: 32,
        }
    }
}

/// Why [`Controller::attach`] refused a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachError {
    NoSuchPort,
    PortBusy,
}

/// A root-hub port.
pub struct Port<B: AsyncBlock> {
    /// PORTSC bits this port holds: PED, PLS, PIC, wake enables, change bits.
    pub sc: u32,
    pub device: Option<Device<B>>,
    pub usb3: bool,
    /// A change bit was set while the controller was not running: its Port
    /// Status Change Event is posted when it starts.
    pub event_pending: bool,
}

/// One endpoint of a slot: its context as last written and its transfer ring.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Endpoint {
    pub ctx: [u32; 8],
    pub ring: Ring,
    /// An IN transfer waits for the device (it answered NAK).
    pub waiting: bool,
    /// The ring's budget ran out with work left.
    pub deferred: bool,
}

impl Endpoint {
    pub fn state(&self) -> u32 {
        self.ctx[0] & 0x7
    }
    pub fn set_state(&mut self, s: u32) {
        self.ctx[0] = (self.ctx[0] & !0x7) | s;
    }
    pub fn ep_type(&self) -> u32 {
        (self.ctx[1] >> 3) & 0x7
    }
}

/// A device slot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Slot {
    pub enabled: bool,
    /// The slot context as last written (state in dword 3).
    pub ctx: [u32; 8],
    /// The output device context (from the DCBAA at Address Device).
    pub output: u64,
    pub eps: [Endpoint; 32],
}

impl Slot {
    pub fn state(&self) -> u32 {
        self.ctx[3] >> 27
    }
    fn set_state(&mut self, s: u32) {
        self.ctx[3] = (self.ctx[3] & 0x07ff_ffff) | s << 27;
    }
    pub fn port(&self) -> u8 {
        (self.ctx[1] >> 16) as u8
    }
    fn set_context_entries(&mut self, n: u32) {
        self.ctx[0] = (self.ctx[0] & 0x07ff_ffff) | n << 27;
    }
}

/// The producer side of interrupter 0's event ring.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventRing {
    /// Segments read from the ERST: base and size in TRBs.
    pub segments: Vec<(u64, u32)>,
    pub seg: usize,
    pub index: u32,
    pub cycle: bool,
    /// The ERST was read since ERSTBA was last written.
    pub loaded: bool,
    /// An Event Ring Full Error was posted; events are dropped until ERDP moves.
    pub full: bool,
    /// Events dropped while full.
    pub dropped: u64,
}

impl EventRing {
    fn enqueue_addr(&self) -> u64 {
        let (base, _) = self.segments[self.seg];
        base + u64::from(self.index) * trb::SIZE
    }
    fn advance(&mut self) {
        self.index += 1;
        if self.index == self.segments[self.seg].1 {
            self.index = 0;
            self.seg += 1;
            if self.seg == self.segments.len() {
                self.seg = 0;
                self.cycle = !self.cycle;
            }
        }
    }
    fn next_addr(&self) -> u64 {
        let mut n = self.clone();
        n.advance();
        n.enqueue_addr()
    }
}

/// The xHCI controller model.
pub struct Controller<B: AsyncBlock> {
    pub(crate) cfg: Config,
    pub(crate) usbcmd: u32,
    pub(crate) usbsts: u32,
    pub(crate) dnctrl: u32,
    pub(crate) cmd_ring: Ring,
    /// Command Ring Running.
    pub(crate) crr: bool,
    pub(crate) cmd_deferred: bool,
    pub(crate) dcbaap: u64,
    pub(crate) max_slots_en: u8,
    pub(crate) iman: u32,
    pub(crate) imod: u32,
    pub(crate) erstsz: u32,
    pub(crate) erstba: u64,
    pub(crate) erdp: u64,
    /// Event Handler Busy.
    pub(crate) ehb: bool,
    pub(crate) er: EventRing,
    pub(crate) ports: Vec<Port<B>>,
    /// Slots 1..=max_slots (index 0 unused).
    pub(crate) slots: Vec<Slot>,
    /// Work is waiting for [`Controller::poll`].
    pub(crate) kick: bool,
}

/// Completion code and the command completion's slot ID.
type Completion = (u8, u8);

impl<B: AsyncBlock> Controller<B> {
    pub fn new(mut cfg: Config) -> Self {
        cfg.usb2_ports = cfg.usb2_ports.min(MAX_PORTS);
        cfg.usb3_ports = cfg.usb3_ports.min(MAX_PORTS - cfg.usb2_ports);
        cfg.max_slots = cfg.max_slots.clamp(1, MAX_SLOTS);
        let n = cfg.usb2_ports + cfg.usb3_ports;
        let ports = (0..n)
            .map(|i| Port {
                sc: 0,
                device: None,
                usb3: i >= cfg.usb2_ports,
                event_pending: false,
            })
            .collect();
        let mut c = Controller {
            cfg,
            usbcmd: 0,
            usbsts: 0,
            dnctrl: 0,
            cmd_ring: Ring::default(),
            crr: false,
            cmd_deferred: false,
            dcbaap: 0,
            max_slots_en: 0,
            iman: 0,
            imod: 0,
            erstsz: 0,
            erstba: 0,
            erdp: 0,
            ehb: false,
            er: EventRing::default(),
            ports,
            slots: vec![Slot::default(); usize::from(cfg.max_slots) + 1],
            kick: false,
        };
        c.reset();
        c
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Number of root-hub ports.
    pub fn port_count(&self) -> u8 {
        self.ports.len() as u8
    }

    /// Whether port `port` (1-based) is a USB 3 port.
    pub fn is_usb3(&self, port: u8) -> Option<bool> {
        self.ports
            .get(usize::from(port).checked_sub(1)?)
            .map(|p| p.usb3)
    }

    /// The device on `port` (1-based).
    pub fn device(&self, port: u8) -> Option<&Device<B>> {
        self.ports
            .get(usize::from(port).checked_sub(1)?)?
            .device
            .as_ref()
    }
    pub fn device_mut(&mut self, port: u8) -> Option<&mut Device<B>> {
        self.ports
            .get_mut(usize::from(port).checked_sub(1)?)?
            .device
            .as_mut()
    }

    pub fn slot(&self, id: u8) -> Option<&Slot> {
        self.slots.get(usize::from(id)).filter(|_| id != 0)
    }

    /// Host Controller Error (USBSTS.HCE): software broke the controller (a
    /// command ring or event ring it cannot use); only HCRST recovers.
    pub fn halted_with_error(&self) -> bool {
        self.usbsts & usbsts::HCE != 0
    }

    /// Whether [`Self::poll`] has something to do (a device got data for a waiting
    /// transfer, a port changed, a budget ran out).
    pub fn has_work(&self) -> bool {
        self.kick
            || self.ports.iter().any(|p| match &p.device {
                Some(Device::Storage(s)) => s.has_work(),
                _ => false,
            })
    }

    /// Backend requests of the storage devices started and not completed.
    pub fn in_flight(&self) -> usize {
        self.ports
            .iter()
            .map(|p| match &p.device {
                Some(Device::Storage(s)) => s.in_flight(),
                _ => 0,
            })
            .sum()
    }

    /// The storage devices' backends raise `signal` when a request completes.
    pub fn set_waker(&mut self, signal: &vdev::WorkSignal) {
        for p in self.ports.iter_mut() {
            if let Some(Device::Storage(s)) = &mut p.device {
                s.backend_mut().set_waker(signal.clone());
            }
        }
    }

    fn running(&self) -> bool {
        self.usbcmd & usbcmd::RS != 0 && self.usbsts & usbsts::HCE == 0
    }

    /// Controller reset (HCRST, and VM reset): every register to its reset value,
    /// slots disabled, devices given a bus reset; attached devices stay attached.
    pub fn reset(&mut self) {
        self.usbcmd = 0;
        self.usbsts = 0;
        self.dnctrl = 0;
        self.cmd_ring = Ring::default();
        self.crr = false;
        self.cmd_deferred = false;
        self.dcbaap = 0;
        self.max_slots_en = 0;
        self.iman = 0;
        self.imod = 0x0fa0;
        self.erstsz = 0;
        self.erstba = 0;
        self.erdp = 0;
        self.ehb = false;
        self.er = EventRing::default();
        for s in self.slots.iter_mut() {
            *s = Slot::default();
        }
        for p in self.ports.iter_mut() {
            p.event_pending = false;
            p.sc = 0;
            if let Some(d) = p.device.as_mut() {
                d.bus_reset();
                p.sc |= portsc::CSC;
                p.event_pending = true;
            }
            Self::link_up(p);
        }
        self.kick = false;
    }

    /// A port's link state after a connect, disconnect or reset: a USB 3 port trains
    /// its link at once (enabled, U0); a USB 2 port waits for a port reset.
    fn link_up(p: &mut Port<B>) {
        p.sc &= !(portsc::PED | portsc::PLS_MASK);
        let pls = match (&p.device, p.usb3) {
            (None, _) => portsc::PLS_RX_DETECT,
            (Some(_), true) => {
                p.sc |= portsc::PED;
                portsc::PLS_U0
            }
            (Some(_), false) => portsc::PLS_POLLING,
        };
        p.sc |= pls << portsc::PLS_SHIFT;
    }

    /// Attaches `device` to `port` (1-based): the device takes the port's speed
    /// and the guest sees a connect (hot-plug).
    pub fn attach(&mut self, port: u8, mut device: Device<B>) -> Result<(), AttachError> {
        let i = usize::from(port)
            .checked_sub(1)
            .filter(|&i| i < self.ports.len())
            .ok_or(AttachError::NoSuchPort)?;
        let p = &mut self.ports[i];
        if p.device.is_some() {
            return Err(AttachError::PortBusy);
        }
        device.core_mut().speed = if p.usb3 { speed::SUPER } else { speed::HIGH };
        device.bus_reset();
        p.device = Some(device);
        Self::link_up(p);
        self.port_change(i, portsc::CSC);
        Ok(())
    }

    /// Detaches the device on `port` (the guest sees a disconnect), giving it back.
    pub fn detach(&mut self, port: u8) -> Option<Device<B>> {
        let i = usize::from(port).checked_sub(1)?;
        let d = self.ports.get_mut(i)?.device.take()?;
        Self::link_up(&mut self.ports[i]);
        self.port_change(i, portsc::CSC);
        Some(d)
    }

    /// Sets change bits on port index `i` and schedules its event.
    fn port_change(&mut self, i: usize, bits: u32) {
        let p = &mut self.ports[i];
        p.sc |= bits;
        p.event_pending = true;
        self.usbsts |= usbsts::PCD;
        self.kick = true;
    }

    /// The host presses or releases a key (HID usage) on the first keyboard;
    /// `false` when there is none or nothing changed.
    pub fn keyboard_key(&mut self, usage: u8, down: bool) -> bool {
        let hit = self.ports.iter_mut().find_map(|p| match p.device.as_mut() {
            Some(Device::Keyboard(k)) => Some(k.key(usage, down)),
            _ => None,
        });
        self.kick |= hit == Some(true);
        hit == Some(true)
    }

    /// The host moves the first tablet; `false` when there is none.
    pub fn tablet_inject(&mut self, input: TabletInput) -> bool {
        let hit = self.ports.iter_mut().any(|p| match p.device.as_mut() {
            Some(Device::Tablet(t)) => {
                t.inject(input);
                true
            }
            _ => false,
        });
        self.kick |= hit;
        hit
    }

    /// The first keyboard's state (LEDs as the guest set them).
    pub fn keyboard(&self) -> Option<&Keyboard> {
        self.ports.iter().find_map(|p| match p.device.as_ref() {
            Some(Device::Keyboard(k)) => Some(k),
            _ => None,
        })
    }
    pub fn tablet(&self) -> Option<&Tablet> {
        self.ports.iter().find_map(|p| match p.device.as_ref() {
            Some(Device::Tablet(t)) => Some(t),
            _ => None,
        })
    }
    pub fn storage(&self) -> Option<&MassStorage<B>> {
        self.ports.iter().find_map(|p| match p.device.as_ref() {
            Some(Device::Storage(s)) => Some(s),
            _ => None,
        })
    }
    pub fn storage_mut(&mut self) -> Option<&mut MassStorage<B>> {
        self.ports.iter_mut().find_map(|p| match p.device.as_mut() {
            Some(Device::Storage(s)) => Some(s),
            _ => None,
        })
    }

    // ---- registers ------------------------------------------------------------

    fn xecp(&self, off: u64) -> u32 {
        let u2 = u32::from(self.cfg.usb2_ports);
        let u3 = u32::from(self.cfg.usb3_ports);
        // Supported Protocol capabilities (ID 2): USB 2.0 then USB 3.0, 16 bytes each.
        const NAME_USB: u32 = u32::from_le_bytes(*b"USB ");
        match off {
            0x0 => 2 | 4 << 8 | 0x02 << 24,
            0x4 => NAME_USB,
            0x8 => 1 | u2 << 8,
            0x10 => 2 | 0x03 << 24,
            0x14 => NAME_USB,
            0x18 => (u2 + 1) | u3 << 8,
            _ => 0,
        }
    }

    fn portsc(&self, i: usize) -> u32 {
        let p = &self.ports[i];
        let mut v = p.sc | portsc::PP;
        if let Some(d) = &p.device {
            v |= portsc::CCS | d.core().speed << portsc::SPEED_SHIFT;
        }
        v
    }

    fn read32(&self, off: u64) -> u32 {
        let oper = layout::OPER;
        let ports_end = layout::PORTS + layout::PORT_STRIDE * self.ports.len() as u64;
        match off {
            cap::CAPLENGTH => layout::CAP_LENGTH as u32 | cap::VERSION << 16,
            cap::HCSPARAMS1 => {
                u32::from(self.cfg.max_slots) | 1 << 8 | (self.ports.len() as u32) << 24
            }
            cap::HCSPARAMS2 => ERST_MAX_LOG2 << cap::ERST_MAX_SHIFT,
            cap::HCSPARAMS3 => 0,
            cap::HCCPARAMS1 => cap::AC64 | ((layout::XECP / 4) as u32) << cap::XECP_SHIFT,
            cap::DBOFF => layout::DOORBELLS as u32,
            cap::RTSOFF => layout::RUNTIME as u32,
            cap::HCCPARAMS2 => 0,
            o if o == oper + op::USBCMD => self.usbcmd,
            o if o == oper + op::USBSTS => {
                let hch = if self.usbcmd & usbcmd::RS == 0 || self.halted_with_error() {
                    usbsts::HCH
                } else {
                    0
                };
                self.usbsts | hch
            }
            o if o == oper + op::PAGESIZE => 1,
            o if o == oper + op::DNCTRL => self.dnctrl,
            o if o == oper + op::CRCR && self.crr => crcr::CRR as u32,
            o if o == oper + op::CRCR + 4 => 0,
            o if o == oper + op::DCBAAP => self.dcbaap as u32,
            o if o == oper + op::DCBAAP + 4 => (self.dcbaap >> 32) as u32,
            o if o == oper + op::CONFIG => u32::from(self.max_slots_en),
            o if (layout::PORTS..ports_end).contains(&o) => {
                let i = ((o - layout::PORTS) / layout::PORT_STRIDE) as usize;
                if (o - layout::PORTS).is_multiple_of(layout::PORT_STRIDE) {
                    self.portsc(i)
                } else {
                    0
                }
            }
            o if (layout::XECP..layout::XECP + 0x20).contains(&o) => self.xecp(o - layout::XECP),
            o if o == layout::INTERRUPTERS + intr::IMAN => self.iman,
            o if o == layout::INTERRUPTERS + intr::IMOD => self.imod,
            o if o == layout::INTERRUPTERS + intr::ERSTSZ => self.erstsz,
            o if o == layout::INTERRUPTERS + intr::ERSTBA => self.erstba as u32,
            o if o == layout::INTERRUPTERS + intr::ERSTBA + 4 => (self.erstba >> 32) as u32,
            o if o == layout::INTERRUPTERS + intr::ERDP => {
                self.erdp as u32 | if self.ehb { intr::ERDP_EHB as u32 } else { 0 }
            }
            o if o == layout::INTERRUPTERS + intr::ERDP + 4 => (self.erdp >> 32) as u32,
            // MFINDEX (no microframe clock is modelled), reserved registers, other
            // interrupters and doorbells read as zero.
            _ => 0,
        }
    }

    /// A guest read of the register file.
    pub fn read(&mut self, offset: u64, size: AccessSize) -> Result<u64, MmioError> {
        if !offset.is_multiple_of(size.bytes()) {
            return Err(MmioError::Unaligned { offset });
        }
        if offset >= layout::SIZE {
            return Ok(0);
        }
        Ok(match size {
            AccessSize::Double => {
                u64::from(self.read32(offset)) | u64::from(self.read32(offset + 4)) << 32
            }
            _ => {
                let dw = self.read32(offset & !3);
                (u64::from(dw) >> ((offset & 3) * 8)) & size.mask()
            }
        })
    }

    /// A guest write of the register file. Registers are written as 32 or 64 bits.
    pub fn write(
        &mut self,
        mem: &mut dyn GuestMemory,
        irq: &mut dyn Interrupts,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        if !offset.is_multiple_of(size.bytes()) {
            return Err(MmioError::Unaligned { offset });
        }
        match size {
            AccessSize::Word => self.write32(mem, irq, offset, value as u32),
            AccessSize::Double => {
                self.write32(mem, irq, offset, value as u32);
                self.write32(mem, irq, offset + 4, (value >> 32) as u32);
            }
            _ => return Err(MmioError::UnsupportedSize { offset, size }),
        }
        Ok(())
    }

    fn write32(&mut self, mem: &mut dyn GuestMemory, irq: &mut dyn Interrupts, off: u64, v: u32) {
        let oper = layout::OPER;
        let ports_end = layout::PORTS + layout::PORT_STRIDE * self.ports.len() as u64;
        let ir = layout::INTERRUPTERS;
        match off {
            o if o == oper + op::USBCMD => self.write_usbcmd(mem, irq, v),
            o if o == oper + op::USBSTS => self.usbsts &= !(v & usbsts::RW1C),
            o if o == oper + op::DNCTRL => self.dnctrl = v & 0xffff,
            o if o == oper + op::CRCR => {
                if self.crr {
                    if u64::from(v) & (crcr::CS | crcr::CA) != 0 {
                        self.stop_command_ring(mem, irq);
                    }
                } else {
                    let lo = u64::from(v) & crcr::PTR_MASK & 0xffff_ffff;
                    self.cmd_ring.dequeue = (self.cmd_ring.dequeue & !0xffff_ffff) | lo;
                    self.cmd_ring.cycle = u64::from(v) & crcr::RCS != 0;
                }
            }
            o if o == oper + op::CRCR + 4 && !self.crr => {
                self.cmd_ring.dequeue = (self.cmd_ring.dequeue & 0xffff_ffff) | u64::from(v) << 32;
            }
            o if o == oper + op::DCBAAP => {
                self.dcbaap = (self.dcbaap & !0xffff_ffff) | u64::from(v & !0x3f)
            }
            o if o == oper + op::DCBAAP + 4 => {
                self.dcbaap = (self.dcbaap & 0xffff_ffff) | u64::from(v) << 32
            }
            o if o == oper + op::CONFIG => self.max_slots_en = (v as u8).min(self.cfg.max_slots),
            o if (layout::PORTS..ports_end).contains(&o)
                && (o - layout::PORTS).is_multiple_of(layout::PORT_STRIDE) =>
            {
                let i = ((o - layout::PORTS) / layout::PORT_STRIDE) as usize;
                self.write_portsc(mem, irq, i, v);
            }
            o if o == ir + intr::IMAN => {
                if v & intr::IMAN_IP != 0 {
                    self.iman &= !intr::IMAN_IP;
                }
                let was = self.iman & intr::IMAN_IE != 0;
                self.iman = (self.iman & !intr::IMAN_IE) | (v & intr::IMAN_IE);
                if !was && self.iman & intr::IMAN_IE != 0 && self.iman & intr::IMAN_IP != 0 {
                    self.signal(irq);
                }
            }
            o if o == ir + intr::IMOD => self.imod = v,
            o if o == ir + intr::ERSTSZ => self.erstsz = v & 0xffff,
            o if o == ir + intr::ERSTBA => {
                self.erstba = (self.erstba & !0xffff_ffff) | u64::from(v) & intr::ERSTBA_PTR_MASK;
                self.er.loaded = false;
            }
            o if o == ir + intr::ERSTBA + 4 => {
                self.erstba = (self.erstba & 0xffff_ffff) | u64::from(v) << 32;
                self.load_erst(mem);
            }
            o if o == ir + intr::ERDP => {
                self.erdp = (self.erdp & !0xffff_ffff) | u64::from(v) & intr::ERDP_PTR_MASK;
                self.erdp_written(irq, u64::from(v) & intr::ERDP_EHB != 0);
            }
            o if o == ir + intr::ERDP + 4 => {
                self.erdp = (self.erdp & 0xffff_ffff) | u64::from(v) << 32;
            }
            o if (layout::DOORBELLS..layout::SIZE).contains(&o) => {
                let slot = ((o - layout::DOORBELLS) / 4) as usize;
                self.doorbell(mem, irq, slot, v);
            }
            // Read-only and reserved registers, other interrupters: ignored.
            _ => {}
        }
    }

    fn write_usbcmd(&mut self, mem: &mut dyn GuestMemory, irq: &mut dyn Interrupts, v: u32) {
        if v & usbcmd::HCRST != 0 {
            self.reset();
            return;
        }
        let was_running = self.usbcmd & usbcmd::RS != 0;
        let inte_was = self.usbcmd & usbcmd::INTE != 0;
        self.usbcmd = v & usbcmd::WRITABLE;
        let now = self.usbcmd & usbcmd::RS != 0;
        if was_running && !now {
            // Halting stops the command ring.
            self.crr = false;
        }
        if !inte_was
            && self.usbcmd & usbcmd::INTE != 0
            && self.iman & (intr::IMAN_IP | intr::IMAN_IE) == intr::IMAN_IP | intr::IMAN_IE
        {
            irq.signal(0);
        }
        if !was_running && now {
            self.poll(mem, irq);
        }
    }

    fn write_portsc(
        &mut self,
        mem: &mut dyn GuestMemory,
        irq: &mut dyn Interrupts,
        i: usize,
        v: u32,
    ) {
        let p = &mut self.ports[i];
        p.sc &= !(v & portsc::CHANGE);
        p.sc = (p.sc & !(portsc::WAKE_MASK | portsc::PIC_MASK))
            | (v & (portsc::WAKE_MASK | portsc::PIC_MASK));
        let mut change = 0;
        let present = p.device.is_some();
        if present && (v & portsc::PR != 0 || (p.usb3 && v & portsc::WPR != 0)) {
            if let Some(d) = p.device.as_mut() {
                d.bus_reset();
            }
            p.sc &= !portsc::PLS_MASK;
            p.sc |= portsc::PED | portsc::PLS_U0 << portsc::PLS_SHIFT;
            change |= portsc::PRC;
            if p.usb3 && v & portsc::WPR != 0 {
                change |= portsc::WRC;
            }
        } else if v & portsc::PED != 0 && !p.usb3 {
            // Writing 1 to PED disables a USB 2 port.
            p.sc &= !portsc::PED;
        }
        if v & portsc::LWS != 0 && present && p.sc & portsc::PED != 0 {
            let cur = (p.sc & portsc::PLS_MASK) >> portsc::PLS_SHIFT;
            let new = (v & portsc::PLS_MASK) >> portsc::PLS_SHIFT;
            let next = match (cur, new) {
                (portsc::PLS_U0, portsc::PLS_U3) => Some(portsc::PLS_U3),
                (portsc::PLS_U3 | portsc::PLS_RESUME, portsc::PLS_U0) => {
                    change |= portsc::PLC;
                    Some(portsc::PLS_U0)
                }
                (portsc::PLS_U3, portsc::PLS_RESUME) => Some(portsc::PLS_RESUME),
                _ => None,
            };
            if let Some(n) = next {
                p.sc = (p.sc & !portsc::PLS_MASK) | n << portsc::PLS_SHIFT;
            }
        }
        if change != 0 {
            self.port_change(i, change);
            self.poll(mem, irq);
        }
    }

    // ---- interrupter and event ring -------------------------------------------

    fn host_controller_error(&mut self, why: &str) {
        if !self.halted_with_error() {
            log::warn!("xhci: host controller error: {why}");
        }
        self.usbsts |= usbsts::HCE;
        self.crr = false;
    }

    /// Reads the Event Ring Segment Table (xHCI §6.5): 1..=2^ERST Max entries, each
    /// segment 64-byte aligned, 16..=4096 TRBs, inside guest RAM. Anything else is
    /// a Host Controller Error.
    fn load_erst(&mut self, mem: &mut dyn GuestMemory) {
        self.er.loaded = true;
        self.er.segments.clear();
        self.er.seg = 0;
        self.er.index = 0;
        self.er.cycle = true;
        self.er.full = false;
        let n = self.erstsz;
        if n == 0 || n > 1 << ERST_MAX_LOG2 {
            self.host_controller_error("ERSTSZ out of range");
            return;
        }
        for i in 0..u64::from(n) {
            let mut e = [0u8; 16];
            if mem.read(self.erstba.wrapping_add(i * 16), &mut e).is_err() {
                self.host_controller_error("ERST outside guest RAM");
                return;
            }
            let t = Trb::from_bytes(&e);
            let base = t.param;
            let size = t.status & 0xffff;
            // The size first: the segment's last byte is only computed for a
            // size in range.
            let sized = (MIN_SEGMENT_TRBS..=MAX_SEGMENT_TRBS).contains(&size);
            let last = base.wrapping_add(u64::from(size.max(1)) * trb::SIZE - 1);
            let mut probe = [0u8; 1];
            if !sized
                || base & 0x3f != 0
                || last < base
                || mem.read(base, &mut probe).is_err()
                || mem.read(last, &mut probe).is_err()
            {
                self.host_controller_error("ERST entry invalid");
                self.er.segments.clear();
                return;
            }
            self.er.segments.push((base, size));
        }
        self.er.seg = 0;
        self.er.index = 0;
        self.er.cycle = true;
        self.er.full = false;
    }

    fn signal(&mut self, irq: &mut dyn Interrupts) {
        if self.iman & intr::IMAN_IE != 0 && self.usbcmd & usbcmd::INTE != 0 {
            irq.signal(0);
        }
    }

    /// An event was posted: interrupt unless the handler is still busy.
    fn raise(&mut self, irq: &mut dyn Interrupts) {
        self.usbsts |= usbsts::EINT;
        if !self.ehb {
            self.ehb = true;
            self.iman |= intr::IMAN_IP;
            self.signal(irq);
        }
    }

    fn erdp_written(&mut self, irq: &mut dyn Interrupts, clear_ehb: bool) {
        if !self.er.loaded || self.er.segments.is_empty() {
            return;
        }
        if self.er.full && self.erdp & intr::ERDP_PTR_MASK != self.er.enqueue_addr() {
            // Software made room.
        }
        self.er.full = false;
        if clear_ehb {
            self.ehb = false;
            // Events software has not consumed yet interrupt again.
            if self.erdp & intr::ERDP_PTR_MASK != self.er.enqueue_addr() {
                self.raise(irq);
            }
        }
    }

    /// Posts `ev` (its cycle bit set here) on the event ring.
    fn post(&mut self, mem: &mut dyn GuestMemory, irq: &mut dyn Interrupts, ev: Trb) {
        if self.halted_with_error() {
            return;
        }
        if !self.er.loaded {
            self.load_erst(mem);
        }
        if self.er.segments.is_empty() {
            self.host_controller_error("event with no event ring");
            return;
        }
        if self.er.full {
            self.er.dropped += 1;
            return;
        }
        let at = self.er.enqueue_addr();
        let mut ev = ev;
        if self.er.next_addr() == self.erdp & intr::ERDP_PTR_MASK {
            // One slot left: it takes the Event Ring Full Error (xHCI §4.9.4).
            ev = Trb::new(
                trb_type::HOST_CONTROLLER,
                0,
                u32::from(cc::EVENT_RING_FULL) << trb::CC_SHIFT,
                0,
            );
            self.er.full = true;
            self.er.dropped += 1;
        }
        ev.control = (ev.control & !trb::CYCLE) | u32::from(self.er.cycle);
        if mem.write(at, &ev.to_bytes()).is_err() {
            self.host_controller_error("event ring segment left guest RAM");
            return;
        }
        self.er.advance();
        self.raise(irq);
    }

    fn command_completion(
        &mut self,
        mem: &mut dyn GuestMemory,
        irq: &mut dyn Interrupts,
        at: u64,
        (code, slot): Completion,
    ) {
        let ev = Trb::new(
            trb_type::COMMAND_COMPLETION,
            at,
            u32::from(code) << trb::CC_SHIFT,
            u32::from(slot) << trb::SLOT_SHIFT,
        );
        self.post(mem, irq, ev);
    }

    // ---- command ring -----------------------------------------------------------

    fn stop_command_ring(&mut self, mem: &mut dyn GuestMemory, irq: &mut dyn Interrupts) {
        self.crr = false;
        self.cmd_deferred = false;
        let at = self.cmd_ring.dequeue;
        self.command_completion(mem, irq, at, (cc::COMMAND_RING_STOPPED, 0));
    }

    fn doorbell(
        &mut self,
        mem: &mut dyn GuestMemory,
        irq: &mut dyn Interrupts,
        slot: usize,
        v: u32,
    ) {
        if !self.running() {
            return;
        }
        let target = (v & 0xff) as usize;
        if slot == 0 {
            if target == 0 {
                self.crr = true;
                self.run_commands(mem, irq);
            }
            return;
        }
        let ok = slot <= usize::from(self.cfg.max_slots)
            && self.slots[slot].enabled
            && (ctx::DCI_EP0..=ctx::DCI_MAX).contains(&target);
        if !ok {
            log::warn!("xhci: doorbell {slot} target {target} rung for no enabled endpoint");
            return;
        }
        let ep = &mut self.slots[slot].eps[target];
        if ep.state() == ctx::EP_STOPPED {
            ep.set_state(ctx::EP_RUNNING);
            self.write_output(mem, slot, &[target]);
        }
        self.run_endpoint(mem, irq, slot, target);
    }

    fn run_commands(&mut self, mem: &mut dyn GuestMemory, irq: &mut dyn Interrupts) {
        self.cmd_deferred = false;
        let mut budget = TRB_BUDGET;
        while self.crr && self.running() {
            match self.cmd_ring.fetch(mem, &mut budget) {
                Ok(Fetch::Empty) => break,
                Ok(Fetch::Trb(at, t)) => {
                    let done = match Command::parse(&t) {
                        Ok(c) => self.command(mem, c),
                        Err(code) => (code, 0),
                    };
                    self.command_completion(mem, irq, at, done);
                }
                Err(RingError::Budget) => {
                    self.cmd_deferred = true;
                    self.kick = true;
                    break;
                }
                Err(RingError::Memory(_)) => {
                    self.host_controller_error("command ring TRB outside guest RAM");
                }
                Err(RingError::LinkLoop(_)) => {
                    self.host_controller_error("command ring of Link TRBs only");
                }
            }
        }
    }

    fn slot_ok(&self, slot: u8) -> bool {
        slot != 0 && slot <= self.cfg.max_slots && self.slots[usize::from(slot)].enabled
    }

    fn read_ctx(mem: &dyn GuestMemory, at: u64) -> Option<[u32; 8]> {
        let mut b = [0u8; 32];
        mem.read(at, &mut b).ok()?;
        let mut c = [0u32; 8];
        for (i, w) in c.iter_mut().enumerate() {
            *w = u32::from_le_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]);
        }
        Some(c)
    }

    fn write_ctx(mem: &mut dyn GuestMemory, at: u64, c: &[u32; 8]) -> bool {
        let mut b = [0u8; 32];
        for (i, w) in c.iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        mem.write(at, &b).is_ok()
    }

    /// The endpoint context as the guest sees it: the stored one with the current
    /// dequeue pointer and cycle state.
    fn ep_ctx_out(ep: &Endpoint) -> [u32; 8] {
        let mut c = ep.ctx;
        let deq = ep.ring.dequeue | u64::from(ep.ring.cycle);
        c[2] = deq as u32;
        c[3] = (deq >> 32) as u32;
        c
    }

    /// Writes slot `id`'s slot context and the endpoint contexts `dcis` to its
    /// output device context.
    fn write_output(&mut self, mem: &mut dyn GuestMemory, id: usize, dcis: &[usize]) -> bool {
        let s = &self.slots[id];
        if s.output == 0 {
            return true;
        }
        let mut ok = Self::write_ctx(mem, s.output, &s.ctx);
        for &d in dcis {
            ok &= Self::write_ctx(
                mem,
                s.output.wrapping_add(ctx::SIZE * d as u64),
                &Self::ep_ctx_out(&s.eps[d]),
            );
        }
        ok
    }

    fn command(&mut self, mem: &mut dyn GuestMemory, c: Command) -> Completion {
        match c {
            Command::NoOp => (cc::SUCCESS, 0),
            Command::EnableSlot => {
                let n = usize::from(self.max_slots_en.min(self.cfg.max_slots));
                match (1..=n).find(|&i| !self.slots[i].enabled) {
                    Some(i) => {
                        self.slots[i] = Slot {
                            enabled: true,
                            ..Slot::default()
                        };
                        (cc::SUCCESS, i as u8)
                    }
                    None => (cc::NO_SLOTS, 0),
                }
            }
            Command::DisableSlot { slot } => {
                if !self.slot_ok(slot) {
                    return (cc::SLOT_NOT_ENABLED, slot);
                }
                let i = usize::from(slot);
                self.slots[i].set_state(ctx::SLOT_DISABLED);
                self.write_output(mem, i, &[]);
                self.slots[i] = Slot::default();
                (cc::SUCCESS, slot)
            }
            Command::AddressDevice { slot, input, bsr } => {
                (self.address_device(mem, slot, input, bsr), slot)
            }
            Command::ConfigureEndpoint {
                slot,
                input,
                deconfigure,
            } => (self.configure_endpoint(mem, slot, input, deconfigure), slot),
            Command::EvaluateContext { slot, input } => {
                (self.evaluate_context(mem, slot, input), slot)
            }
            Command::ResetEndpoint { slot, dci } => (
                self.endpoint_command(mem, slot, dci, |ep| {
                    if ep.state() != ctx::EP_HALTED {
                        return Err(cc::CONTEXT_STATE);
                    }
                    ep.set_state(ctx::EP_STOPPED);
                    Ok(())
                }),
                slot,
            ),
            Command::StopEndpoint { slot, dci } => (
                self.endpoint_command(mem, slot, dci, |ep| {
                    if ep.state() != ctx::EP_RUNNING {
                        return Err(cc::CONTEXT_STATE);
                    }
                    ep.set_state(ctx::EP_STOPPED);
                    ep.waiting = false;
                    ep.deferred = false;
                    Ok(())
                }),
                slot,
            ),
            Command::SetTrDequeue {
                slot,
                dci,
                dequeue,
                dcs,
            } => (
                self.endpoint_command(mem, slot, dci, |ep| {
                    if !matches!(ep.state(), ctx::EP_STOPPED | ctx::EP_ERROR) {
                        return Err(cc::CONTEXT_STATE);
                    }
                    ep.ring = Ring::new(dequeue, dcs);
                    Ok(())
                }),
                slot,
            ),
            Command::ResetDevice { slot } => {
                if !self.slot_ok(slot) {
                    return (cc::SLOT_NOT_ENABLED, slot);
                }
                let i = usize::from(slot);
                let s = &mut self.slots[i];
                if !matches!(s.state(), ctx::SLOT_ADDRESSED | ctx::SLOT_CONFIGURED) {
                    return (cc::CONTEXT_STATE, slot);
                }
                for ep in s.eps.iter_mut().skip(2) {
                    *ep = Endpoint::default();
                }
                s.set_state(ctx::SLOT_DEFAULT);
                s.ctx[3] &= !0xff;
                s.set_context_entries(1);
                self.write_output(mem, i, &[]);
                (cc::SUCCESS, slot)
            }
        }
    }

    /// A command on one endpoint of an enabled slot: `f` changes it or refuses.
    fn endpoint_command(
        &mut self,
        mem: &mut dyn GuestMemory,
        slot: u8,
        dci: u8,
        f: impl FnOnce(&mut Endpoint) -> Result<(), u8>,
    ) -> u8 {
        if !self.slot_ok(slot) {
            return cc::SLOT_NOT_ENABLED;
        }
        let (i, d) = (usize::from(slot), usize::from(dci));
        if !(ctx::DCI_EP0..=ctx::DCI_MAX).contains(&d) {
            return cc::TRB;
        }
        let ep = &mut self.slots[i].eps[d];
        if ep.state() == ctx::EP_DISABLED {
            return cc::ENDPOINT_NOT_ENABLED;
        }
        if let Err(code) = f(ep) {
            return code;
        }
        self.write_output(mem, i, &[d]);
        cc::SUCCESS
    }

    /// The Input Control Context's drop and add flags.
    fn input_control(mem: &dyn GuestMemory, input: u64) -> Option<(u32, u32)> {
        let c = Self::read_ctx(mem, input)?;
        Some((c[0], c[1]))
    }

    fn address_device(&mut self, mem: &mut dyn GuestMemory, slot: u8, input: u64, bsr: bool) -> u8 {
        if !self.slot_ok(slot) {
            return cc::SLOT_NOT_ENABLED;
        }
        let i = usize::from(slot);
        let state = self.slots[i].state();
        let allowed = match bsr {
            true => state == ctx::SLOT_DISABLED,
            false => matches!(state, ctx::SLOT_DISABLED | ctx::SLOT_DEFAULT),
        };
        if !allowed {
            return cc::CONTEXT_STATE;
        }
        let Some((_, add)) = Self::input_control(mem, input) else {
            return cc::PARAMETER;
        };
        if add & 0b11 != 0b11 {
            return cc::PARAMETER;
        }
        let (Some(sctx), Some(ep0)) = (
            Self::read_ctx(mem, input.wrapping_add(ctx::SIZE)),
            Self::read_ctx(mem, input.wrapping_add(2 * ctx::SIZE)),
        ) else {
            return cc::PARAMETER;
        };
        let mut dcbaa = [0u8; 8];
        if mem
            .read(self.dcbaap.wrapping_add(8 * u64::from(slot)), &mut dcbaa)
            .is_err()
        {
            return cc::PARAMETER;
        }
        let output = u64::from_le_bytes(dcbaa);
        let deq = u64::from(ep0[2]) | u64::from(ep0[3]) << 32;
        let ep0_type = (ep0[1] >> 3) & 0x7;
        if output == 0
            || output & 0x3f != 0
            || ep0_type != ctx::EP_CONTROL
            || deq & !0xf == 0
            || ep0[1] >> 16 == 0
        {
            return cc::PARAMETER;
        }
        let port = (sctx[1] >> 16) as u8;
        let present = usize::from(port)
            .checked_sub(1)
            .and_then(|p| self.ports.get(p))
            .is_some_and(|p| p.device.is_some() && p.sc & portsc::PED != 0);
        if !present {
            return cc::USB_TRANSACTION;
        }
        let mut s = Slot {
            enabled: true,
            ctx: [sctx[0], sctx[1], sctx[2], 0, 0, 0, 0, 0],
            output,
            eps: [Endpoint::default(); 32],
        };
        s.set_context_entries(1);
        let mut e = Endpoint {
            ctx: ep0,
            ring: Ring::new(deq, deq & 1 != 0),
            ..Endpoint::default()
        };
        e.ctx[2] = 0;
        e.ctx[3] = 0;
        e.set_state(ctx::EP_RUNNING);
        s.eps[ctx::DCI_EP0] = e;
        if bsr {
            s.set_state(ctx::SLOT_DEFAULT);
        } else {
            s.set_state(ctx::SLOT_ADDRESSED);
            s.ctx[3] |= u32::from(slot);
            if let Some(d) = self.device_mut(port) {
                d.core_mut().address = slot;
            }
        }
        let before = core::mem::replace(&mut self.slots[i], s);
        if !self.write_output(mem, i, &[ctx::DCI_EP0]) {
            self.slots[i] = before;
            return cc::PARAMETER;
        }
        cc::SUCCESS
    }

    /// Whether an endpoint context's type suits Device Context Index `dci`.
    fn ep_type_ok(dci: usize, t: u32) -> bool {
        let is_in = dci % 2 == 1;
        match t {
            ctx::EP_CONTROL => is_in,
            1..=3 => !is_in,
            5..=7 => is_in,
            _ => false,
        }
    }

    fn configure_endpoint(
        &mut self,
        mem: &mut dyn GuestMemory,
        slot: u8,
        input: u64,
        deconfigure: bool,
    ) -> u8 {
        if !self.slot_ok(slot) {
            return cc::SLOT_NOT_ENABLED;
        }
        let i = usize::from(slot);
        if !matches!(
            self.slots[i].state(),
            ctx::SLOT_ADDRESSED | ctx::SLOT_CONFIGURED
        ) {
            return cc::CONTEXT_STATE;
        }
        let mut s = self.slots[i].clone();
        let mut touched = Vec::new();
        if deconfigure {
            for d in 2..=ctx::DCI_MAX {
                if s.eps[d].state() != ctx::EP_DISABLED {
                    touched.push(d);
                }
                s.eps[d] = Endpoint::default();
            }
        } else {
            let Some((drop, add)) = Self::input_control(mem, input) else {
                return cc::PARAMETER;
            };
            for d in 2..=ctx::DCI_MAX {
                if drop & (1 << d) != 0 {
                    s.eps[d] = Endpoint::default();
                    touched.push(d);
                }
            }
            for d in 2..=ctx::DCI_MAX {
                if add & (1 << d) == 0 {
                    continue;
                }
                let Some(c) = Self::read_ctx(mem, input.wrapping_add(ctx::SIZE * (d as u64 + 1)))
                else {
                    return cc::PARAMETER;
                };
                let deq = u64::from(c[2]) | u64::from(c[3]) << 32;
                let max_pstreams = (c[0] >> 10) & 0x1f;
                if !Self::ep_type_ok(d, (c[1] >> 3) & 0x7)
                    || deq & !0xf == 0
                    || c[1] >> 16 == 0
                    || max_pstreams != 0
                {
                    return cc::PARAMETER;
                }
                let mut e = Endpoint {
                    ctx: c,
                    ring: Ring::new(deq, deq & 1 != 0),
                    ..Endpoint::default()
                };
                e.ctx[2] = 0;
                e.ctx[3] = 0;
                e.set_state(ctx::EP_RUNNING);
                s.eps[d] = e;
                if !touched.contains(&d) {
                    touched.push(d);
                }
            }
        }
        let last = (2..=ctx::DCI_MAX)
            .rev()
            .find(|&d| s.eps[d].state() != ctx::EP_DISABLED);
        s.set_context_entries(last.unwrap_or(1) as u32);
        s.set_state(if last.is_some() {
            ctx::SLOT_CONFIGURED
        } else {
            ctx::SLOT_ADDRESSED
        });
        let before = core::mem::replace(&mut self.slots[i], s);
        if !self.write_output(mem, i, &touched) {
            self.slots[i] = before;
            return cc::PARAMETER;
        }
        cc::SUCCESS
    }

    fn evaluate_context(&mut self, mem: &mut dyn GuestMemory, slot: u8, input: u64) -> u8 {
        if !self.slot_ok(slot) {
            return cc::SLOT_NOT_ENABLED;
        }
        let i = usize::from(slot);
        if self.slots[i].state() == ctx::SLOT_DISABLED {
            return cc::CONTEXT_STATE;
        }
        let Some((_, add)) = Self::input_control(mem, input) else {
            return cc::PARAMETER;
        };
        let mut s = self.slots[i].clone();
        if add & 1 != 0 {
            let Some(c) = Self::read_ctx(mem, input.wrapping_add(ctx::SIZE)) else {
                return cc::PARAMETER;
            };
            // Max Exit Latency and Interrupter Target.
            s.ctx[1] = (s.ctx[1] & !0xffff) | (c[1] & 0xffff);
            s.ctx[2] = (s.ctx[2] & 0x003f_ffff) | (c[2] & !0x003f_ffff);
        }
        if add & 2 != 0 {
            let Some(c) = Self::read_ctx(mem, input.wrapping_add(2 * ctx::SIZE)) else {
                return cc::PARAMETER;
            };
            if c[1] >> 16 == 0 {
                return cc::PARAMETER;
            }
            let ep0 = &mut s.eps[ctx::DCI_EP0];
            ep0.ctx[1] = (ep0.ctx[1] & 0xffff) | (c[1] & 0xffff_0000);
        }
        let before = core::mem::replace(&mut self.slots[i], s);
        if !self.write_output(mem, i, &[ctx::DCI_EP0]) {
            self.slots[i] = before;
            return cc::PARAMETER;
        }
        cc::SUCCESS
    }

    // ---- transfers -----------------------------------------------------------------

    /// Does the work a doorbell was rung for, or that waits (an IN transfer the
    /// device NAKed and can now answer, a port change, a ring whose budget ran out).
    pub fn poll(&mut self, mem: &mut dyn GuestMemory, irq: &mut dyn Interrupts) {
        self.kick = false;
        // Completed backend requests first: the transfers that waited for them
        // (endpoints marked `waiting`) go through below.
        for p in self.ports.iter_mut() {
            if let Some(Device::Storage(s)) = &mut p.device {
                s.poll_backend();
            }
        }
        if !self.running() {
            return;
        }
        for i in 0..self.ports.len() {
            if self.ports[i].event_pending {
                self.ports[i].event_pending = false;
                let ev = Trb::new(
                    trb_type::PORT_STATUS_CHANGE,
                    (i as u64 + 1) << 24,
                    u32::from(cc::SUCCESS) << trb::CC_SHIFT,
                    0,
                );
                self.post(mem, irq, ev);
            }
        }
        if self.cmd_deferred && self.crr {
            self.run_commands(mem, irq);
        }
        for s in 1..self.slots.len() {
            if !self.slots[s].enabled {
                continue;
            }
            for d in ctx::DCI_EP0..=ctx::DCI_MAX {
                let ep = &self.slots[s].eps[d];
                if ep.deferred || ep.waiting {
                    self.run_endpoint(mem, irq, s, d);
                }
            }
        }
    }

    /// Gathers the next TD of `ring`: its TRBs up to the last of the chain (for the
    /// default control endpoint: Setup, Data and Status stages). `Ok(None)`: the
    /// TD is not all there yet.
    fn gather_td(
        mem: &dyn GuestMemory,
        ring: &mut Ring,
        control: bool,
        budget: &mut u32,
    ) -> Result<Option<Vec<(u64, Trb)>>, RingError> {
        let mut td: Vec<(u64, Trb)> = Vec::new();
        let mut seen_status = false;
        loop {
            match ring.fetch(mem, budget)? {
                Fetch::Empty => return Ok(None),
                Fetch::Trb(at, t) => {
                    let k = t.kind();
                    seen_status |= k == trb_type::STATUS_STAGE;
                    td.push((at, t));
                    if td.len() > MAX_TD_TRBS {
                        return Err(RingError::LinkLoop(at));
                    }
                    let chained = t.has(trb::CH);
                    let end = if control && td[0].1.kind() == trb_type::SETUP_STAGE {
                        seen_status && !chained
                    } else {
                        !chained
                    };
                    if end {
                        return Ok(Some(td));
                    }
                }
            }
        }
    }

    fn transfer_event(
        &mut self,
        mem: &mut dyn GuestMemory,
        irq: &mut dyn Interrupts,
        slot: usize,
        dci: usize,
        ev: TdEvent,
    ) {
        let mut control = (slot as u32) << trb::SLOT_SHIFT | (dci as u32) << trb::EP_SHIFT;
        if ev.event_data {
            control |= trb::ED;
        }
        let t = Trb::new(
            trb_type::TRANSFER_EVENT,
            ev.param,
            u32::from(ev.code) << trb::CC_SHIFT | ev.length.min(0xff_ffff),
            control,
        );
        self.post(mem, irq, t);
    }

    /// Halts endpoint `dci` of `slot` after an error on the TRB at `at`.
    fn halt(
        &mut self,
        mem: &mut dyn GuestMemory,
        irq: &mut dyn Interrupts,
        slot: usize,
        dci: usize,
        at: u64,
        code: u8,
    ) {
        let ep = &mut self.slots[slot].eps[dci];
        ep.set_state(ctx::EP_HALTED);
        ep.waiting = false;
        ep.deferred = false;
        self.write_output(mem, slot, &[dci]);
        self.transfer_event(
            mem,
            irq,
            slot,
            dci,
            TdEvent {
                param: at,
                code,
                length: 0,
                event_data: false,
            },
        );
    }

    fn run_endpoint(
        &mut self,
        mem: &mut dyn GuestMemory,
        irq: &mut dyn Interrupts,
        slot: usize,
        dci: usize,
    ) {
        let mut budget = TRB_BUDGET;
        let mut tds = 0;
        loop {
            let running = self.running();
            let ep = &mut self.slots[slot].eps[dci];
            ep.deferred = false;
            ep.waiting = false;
            if ep.state() != ctx::EP_RUNNING || !running {
                return;
            }
            let mut ring = ep.ring;
            let control = ep.ep_type() == ctx::EP_CONTROL;
            let td = match Self::gather_td(mem, &mut ring, control, &mut budget) {
                Ok(Some(td)) => td,
                Ok(None) => return,
                Err(RingError::Budget) => {
                    self.slots[slot].eps[dci].deferred = true;
                    self.kick = true;
                    return;
                }
                Err(RingError::Memory(at) | RingError::LinkLoop(at)) => {
                    log::warn!(
                        "xhci: slot {slot} endpoint {dci}: transfer ring unusable at {at:#x}"
                    );
                    self.halt(mem, irq, slot, dci, at, cc::TRB);
                    return;
                }
            };
            tds += 1;
            let port = self.slots[slot].port();
            let outcome = self.execute_td(mem, port, dci, control, &td);
            match outcome {
                TdOutcome::Nak => {
                    self.slots[slot].eps[dci].waiting = true;
                    return;
                }
                TdOutcome::Error(at, code) => {
                    self.halt(mem, irq, slot, dci, at, code);
                    return;
                }
                TdOutcome::Done(events) => {
                    self.slots[slot].eps[dci].ring = ring;
                    for e in events {
                        self.transfer_event(mem, irq, slot, dci, e);
                    }
                    // The device moved on: a transfer it NAKed on another endpoint
                    // (a CBW while a CSW was due) may go through now.
                    let dev = usize::from(port)
                        .checked_sub(1)
                        .and_then(|p| self.ports.get(p))
                        .and_then(|p| p.device.as_ref());
                    let retry = self.slots[slot].eps.iter().enumerate().any(|(d, e)| {
                        e.waiting && (d % 2 == 0 || dev.is_some_and(|v| v.in_ready((d / 2) as u8)))
                    });
                    self.kick |= retry;
                }
            }
            if tds >= MAX_TDS_PER_RUN {
                self.slots[slot].eps[dci].deferred = true;
                self.kick = true;
                return;
            }
        }
    }

    /// Runs one TD against the device on `port`.
    fn execute_td(
        &mut self,
        mem: &mut dyn GuestMemory,
        port: u8,
        dci: usize,
        control: bool,
        td: &[(u64, Trb)],
    ) -> TdOutcome {
        let first = td[0];
        // Data TRBs: Normal and Data Stage, with their buffers and lengths.
        let mut total: usize = 0;
        let mut dir_in: Option<bool> = None;
        for &(at, t) in td {
            match t.kind() {
                trb_type::NORMAL | trb_type::DATA_STAGE => {
                    if t.kind() == trb_type::DATA_STAGE {
                        if !control || dir_in.is_some() {
                            return TdOutcome::Error(at, cc::TRB);
                        }
                        dir_in = Some(t.has(trb::DIR_IN));
                    }
                    if t.has(trb::IDT) && (t.length() > 8 || dir_in == Some(true)) {
                        return TdOutcome::Error(at, cc::TRB);
                    }
                    total += t.length() as usize;
                }
                trb_type::EVENT_DATA | trb_type::NO_OP => {}
                trb_type::SETUP_STAGE | trb_type::STATUS_STAGE if control => {}
                _ => return TdOutcome::Error(at, cc::TRB),
            }
        }
        if total > MAX_TD_BYTES {
            log::warn!("xhci: TD of {total} bytes refused");
            return TdOutcome::Error(first.0, cc::TRB);
        }
        let is_in = if control {
            dir_in.unwrap_or(false)
        } else {
            dci % 2 == 1
        };
        let Some(device) = usize::from(port)
            .checked_sub(1)
            .and_then(|p| self.ports.get_mut(p))
            .and_then(|p| p.device.as_mut())
        else {
            return TdOutcome::Error(first.0, cc::USB_TRANSACTION);
        };
        let out_data = if is_in {
            Vec::new()
        } else {
            match gather(mem, td, total) {
                Ok(d) => d,
                Err(at) => return TdOutcome::Error(at, cc::DATA_BUFFER),
            }
        };
        let answer = if control && first.1.kind() == trb_type::SETUP_STAGE {
            let (at, s) = first;
            if !s.has(trb::IDT) || s.length() != 8 {
                return TdOutcome::Error(at, cc::TRB);
            }
            let setup = Setup::from_u64(s.param);
            let stalled_at = td
                .iter()
                .find(|(_, t)| t.kind() == trb_type::DATA_STAGE)
                .or_else(|| td.iter().find(|(_, t)| t.kind() == trb_type::STATUS_STAGE))
                .map_or(at, |&(a, _)| a);
            // The Data Stage must agree with the request's direction and length.
            let malformed = (dir_in.is_some() && dir_in != Some(setup.is_in()))
                || total > usize::from(setup.length)
                || (!setup.is_in() && total != usize::from(setup.length))
                || (dir_in.is_none() && setup.length != 0);
            if malformed {
                log::warn!("xhci: malformed control transfer {setup:?}, stalling");
                return TdOutcome::Error(stalled_at, cc::STALL);
            }
            match device.control(&setup, &out_data) {
                Control::Stall => return TdOutcome::Error(stalled_at, cc::STALL),
                Control::Data(d) if setup.is_in() => Transfer::Data(d),
                Control::Data(_) => Transfer::Data(Vec::new()),
            }
        } else if control {
            // A control TD that does not start with a Setup Stage: only No Op.
            if td
                .iter()
                .any(|(_, t)| t.kind() != trb_type::NO_OP && t.kind() != trb_type::EVENT_DATA)
            {
                return TdOutcome::Error(first.0, cc::TRB);
            }
            Transfer::Data(Vec::new())
        } else {
            let ep = (dci / 2) as u8;
            if total == 0 && (is_in || td.iter().all(|(_, t)| t.kind() != trb_type::NORMAL)) {
                // Nothing to move (an IN of zero bytes takes no report away).
                Transfer::Data(Vec::new())
            } else if is_in {
                device.transfer_in(ep, total)
            } else {
                device.transfer_out(ep, &out_data)
            }
        };
        let data = match answer {
            Transfer::Nak => return TdOutcome::Nak,
            Transfer::Stall => return TdOutcome::Error(first.0, cc::STALL),
            Transfer::Data(d) => d,
        };
        let transferred = if is_in {
            if data.len() > total {
                return TdOutcome::Error(first.0, cc::BABBLE);
            }
            if let Err(at) = scatter(mem, td, &data) {
                return TdOutcome::Error(at, cc::DATA_BUFFER);
            }
            data.len()
        } else {
            total
        };
        TdOutcome::Done(td_events(td, transferred, transferred < total))
    }
}

/// One Transfer Event to post.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TdEvent {
    param: u64,
    code: u8,
    length: u32,
    event_data: bool,
}

enum TdOutcome {
    Done(Vec<TdEvent>),
    Nak,
    Error(u64, u8),
}

/// The OUT data of a TD's data TRBs (immediate data included). `Err`: the address
/// of the TRB whose buffer is not guest RAM.
fn gather(mem: &dyn GuestMemory, td: &[(u64, Trb)], total: usize) -> Result<Vec<u8>, u64> {
    let mut out = Vec::with_capacity(total);
    for &(at, t) in td {
        if !matches!(t.kind(), trb_type::NORMAL | trb_type::DATA_STAGE) {
            continue;
        }
        let n = t.length() as usize;
        if t.has(trb::IDT) {
            out.extend_from_slice(&t.param.to_le_bytes()[..n]);
        } else {
            let start = out.len();
            out.resize(start + n, 0);
            mem.read(t.param, &mut out[start..]).map_err(|_| at)?;
        }
    }
    Ok(out)
}

/// Writes IN `data` into the TD's buffers in order.
fn scatter(mem: &mut dyn GuestMemory, td: &[(u64, Trb)], mut data: &[u8]) -> Result<(), u64> {
    for &(at, t) in td {
        if data.is_empty() {
            break;
        }
        if !matches!(t.kind(), trb_type::NORMAL | trb_type::DATA_STAGE) {
            continue;
        }
        let n = (t.length() as usize).min(data.len());
        mem.write(t.param, &data[..n]).map_err(|_| at)?;
        data = &data[n..];
    }
    Ok(())
}

/// The Transfer Events of a completed TD that moved `transferred` bytes (`short`:
/// fewer than its data TRBs asked for): xHCI §4.10.1.1 (IOC, ISP, Event Data TRBs
/// with their Event Data Transfer Length Accumulator).
fn td_events(td: &[(u64, Trb)], transferred: usize, short: bool) -> Vec<TdEvent> {
    let mut events = Vec::new();
    let mut left = transferred;
    let mut edtla: u32 = 0;
    let mut short_seen = false;
    let mut short_reported = false;
    let ev = |param, code, length, event_data| TdEvent {
        param,
        code,
        length,
        event_data,
    };
    for &(at, t) in td {
        match t.kind() {
            trb_type::NORMAL | trb_type::DATA_STAGE => {
                if short_seen {
                    continue;
                }
                let len = t.length() as usize;
                let n = len.min(left);
                left -= n;
                edtla += n as u32;
                if short && n < len {
                    short_seen = true;
                    if t.has(trb::ISP) || t.has(trb::IOC) {
                        short_reported = true;
                        events.push(ev(at, cc::SHORT_PACKET, (len - n) as u32, false));
                    }
                } else if t.has(trb::IOC) {
                    events.push(ev(at, cc::SUCCESS, 0, false));
                }
            }
            trb_type::EVENT_DATA => {
                if t.has(trb::IOC) {
                    let code = if short_seen {
                        cc::SHORT_PACKET
                    } else {
                        cc::SUCCESS
                    };
                    short_reported |= short_seen;
                    events.push(ev(t.param, code, edtla, true));
                }
                edtla = 0;
            }
            _ => {
                // Setup, Status, No Op.
                if t.has(trb::IOC) {
                    events.push(ev(at, cc::SUCCESS, 0, false));
                }
            }
        }
    }
    if short_seen && !short_reported {
        // No TRB asked for the short packet: the TD's last data TRB with IOC says it.
        if let Some(&(at, t)) = td
            .iter()
            .rev()
            .find(|(_, t)| matches!(t.kind(), trb_type::NORMAL) && t.has(trb::IOC))
        {
            events.retain(|e| e.param != at);
            events.push(ev(at, cc::SHORT_PACKET, t.length(), false));
        }
    }
    events
}
