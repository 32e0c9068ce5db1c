//! The root complex: bus 0 behind an ECAM window, the host bridge at 00:00.0,
//! functions in the other device numbers, the memory windows their BARs are
//! decoded in, INTx swizzled onto four SPIs, MSI-X messages handed to the MSI
//! controller, and DMA only with Bus Master Enable.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;

use vdev::{AccessSize, InterruptSink, MmioContext, MmioDevice, MmioError, WorkSignal};

use crate::config::{ConfigSpace, MsiMessage, SpecError};
use crate::defs::{ecam, virt, IntxPin, BAR_COUNT, COMMAND, INTX_PINS};
use crate::function::{BusMaster, FunctionContext, FunctionIrq, PciFunction};
use crate::host_bridge::HostBridge;
use crate::msix::{Message, Msix};

mod save;

/// A guest-physical window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub base: u64,
    pub size: u64,
}

impl Window {
    /// One past the last byte (saturating: a guest-programmed BAR may reach the
    /// top of the address space).
    pub const fn end(&self) -> u64 {
        self.base.saturating_add(self.size)
    }
    fn contains(&self, base: u64, size: u64) -> bool {
        base >= self.base && size <= self.size && base - self.base <= self.size - size
    }
    fn overlaps(&self, other: &Window) -> bool {
        self.base < other.end() && other.base < self.end()
    }
}

/// Where the root complex sits in the guest's address space.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// ECAM; its size (a multiple of 1 MiB) gives the number of buses.
    pub ecam: Window,
    /// The 32-bit memory window (below 4 GiB).
    pub mmio32: Window,
    /// The 64-bit memory window, if any.
    pub mmio64: Option<Window>,
    /// The I/O window: reads as all-ones (no I/O BARs here).
    pub pio: Option<Window>,
    /// GIC INTID of INTA at slot 0 (INTB..INTD follow).
    pub intx_first_intid: u32,
}

/// The SPI numbering base: INTID of SPI 0.
const SPI_INTID_BASE: u32 = 32;

impl Layout {
    /// QEMU `virt`'s layout, with the ECAM window low (16 buses) or high (256).
    pub const fn virt(high_ecam: bool) -> Layout {
        Layout {
            ecam: if high_ecam {
                Window {
                    base: virt::HIGH_ECAM_BASE,
                    size: virt::HIGH_ECAM_SIZE,
                }
            } else {
                Window {
                    base: virt::ECAM_BASE,
                    size: virt::ECAM_SIZE,
                }
            },
            mmio32: Window {
                base: virt::MMIO_BASE,
                size: virt::MMIO_SIZE,
            },
            mmio64: Some(Window {
                base: virt::HIGH_MMIO_BASE,
                size: virt::HIGH_MMIO_SIZE,
            }),
            pio: Some(Window {
                base: virt::PIO_BASE,
                size: virt::PIO_SIZE,
            }),
            intx_first_intid: SPI_INTID_BASE + virt::INTX_FIRST_SPI,
        }
    }

    /// Every window the root complex answers in (ECAM first).
    pub fn windows(&self) -> impl Iterator<Item = Window> {
        [Some(self.ecam), Some(self.mmio32), self.mmio64, self.pio]
            .into_iter()
            .flatten()
    }

    /// Number of buses the ECAM window covers.
    pub fn buses(&self) -> u64 {
        self.ecam.size / ecam::BUS_SIZE
    }
}

/// The INTID that pin `pin` of a function in device number `device` on bus 0
/// raises: the standard swizzle, `(device + pin - 1) mod 4` onto four SPIs.
pub fn intx_intid(layout: &Layout, device: u8, pin: IntxPin) -> u32 {
    layout.intx_first_intid + (u32::from(device) + pin as u32 - 1) % INTX_PINS
}

/// Where MSI-X messages go: the MSI controller (a GICv2m frame, an ITS).
pub trait MsiController {
    /// Delivers a message (a DWORD write of `data` to `address`). `false`: no MSI
    /// controller answers at `address`, or it refused `data`.
    fn deliver(&mut self, address: u64, data: u32, irq: &mut dyn InterruptSink) -> bool;

    /// [`Self::deliver`] of a message from the function with requester ID
    /// `requester` (bus, device, function): an ITS takes it as the DeviceID.
    fn deliver_from(
        &mut self,
        requester: u16,
        address: u64,
        data: u32,
        irq: &mut dyn InterruptSink,
    ) -> bool {
        let _ = requester;
        self.deliver(address, data, irq)
    }
}

/// Why the root complex was not built or a function not attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootError {
    /// Windows overlap each other or RAM, ECAM is not whole buses, or the 32-bit
    /// window is not below 4 GiB.
    Layout,
    /// The device number is out of range or taken.
    Slot,
    Spec(SpecError),
}

/// A function in a device number of bus 0.
struct Slot {
    device: u8,
    config: ConfigSpace,
    msix: Option<(Msix, crate::function::MsixSpec)>,
    function: Box<dyn PciFunction + Send>,
    intx_pin: Option<IntxPin>,
    intx_level: bool,
    /// Per BAR: refused last time decoding was computed (logged once per refusal).
    refused: [bool; BAR_COUNT],
}

/// A BAR that decodes.
#[derive(Debug, Clone, Copy)]
struct Decoded {
    window: Window,
    slot: usize,
    bar: u8,
}

/// The root complex and everything behind it.
pub struct RootComplex {
    layout: Layout,
    slots: Vec<Slot>,
    decoded: Vec<Decoded>,
    /// The level driven on each of the four INTx SPIs.
    spi_levels: [bool; INTX_PINS as usize],
    msi: Option<Box<dyn MsiController + Send>>,
    /// Messages dropped because no MSI controller took them.
    dropped_messages: u64,
}

/// The interrupts of one function during one call into it.
struct Irq<'a> {
    device: u8,
    msix: Option<&'a mut Msix>,
    deliverable: bool,
    enabled: bool,
    /// The MSI message while MSI (and not MSI-X) is enabled.
    msi_message: Option<MsiMessage>,
    bus_master: bool,
    intx_level: &'a mut bool,
    msi: &'a mut Option<Box<dyn MsiController + Send>>,
    sink: &'a mut dyn InterruptSink,
    dropped: &'a mut u64,
}

/// The requester ID of function 0 of `device` on bus 0.
fn requester_id(device: u8) -> u16 {
    u16::from(device) << 3
}

fn send(
    device: u8,
    kind: &str,
    m: Message,
    msi: &mut Option<Box<dyn MsiController + Send>>,
    sink: &mut dyn InterruptSink,
    dropped: &mut u64,
) {
    let ok = msi
        .as_mut()
        .is_some_and(|c| c.deliver_from(requester_id(device), m.address, m.data, sink));
    if !ok {
        *dropped += 1;
        log::warn!(
            "pci 00:{device:02x}.0: {kind} vector {} message {:#x} to {:#x} reaches no MSI controller; dropped",
            m.vector,
            m.data,
            m.address
        );
    }
}

impl FunctionIrq for Irq<'_> {
    fn msix_enabled(&self) -> bool {
        self.enabled
    }
    fn msix(&mut self, vector: u16) {
        if !self.enabled {
            if let Some(msi) = self.msi_message {
                self.send_msi(msi, vector);
            }
            return;
        }
        let Some(msix) = self.msix.as_deref_mut() else {
            return;
        };
        if vector >= msix.vectors() {
            return;
        }
        if let Some(m) = msix.signal(vector, self.deliverable) {
            send(self.device, "MSI-X", m, self.msi, self.sink, self.dropped);
        }
    }
    fn set_intx(&mut self, level: bool) {
        *self.intx_level = level;
    }
}

impl Irq<'_> {
    /// Sends MSI vector `vector`. Without per-vector masking there is nothing to
    /// hold it in: with Bus Master Enable clear the function cannot write the
    /// message, so it is lost (and counted).
    fn send_msi(&mut self, msi: MsiMessage, vector: u16) {
        if !self.bus_master {
            *self.dropped += 1;
            log::warn!(
                "pci 00:{:02x}.0: MSI vector {vector} with bus mastering off; dropped",
                self.device
            );
            return;
        }
        let m = Message {
            vector,
            address: msi.address,
            data: msi.data_of(vector),
        };
        send(self.device, "MSI", m, self.msi, self.sink, self.dropped);
    }
}

impl RootComplex {
    /// A root complex at `layout` with the host bridge at 00:00.0. `ram`: the
    /// guest's RAM, which no window may overlap.
    pub fn new(layout: Layout, ram: &[Window]) -> Result<Self, RootError> {
        let windows: Vec<Window> = layout.windows().collect();
        let whole_buses = layout.ecam.size >= ecam::BUS_SIZE
            && layout.ecam.size.is_multiple_of(ecam::BUS_SIZE)
            && layout.ecam.base.is_multiple_of(ecam::BUS_SIZE);
        let below_4g = layout.mmio32.end() <= 1 << 32;
        let disjoint = windows.iter().enumerate().all(|(i, a)| {
            a.size > 0
                && a.base.checked_add(a.size).is_some()
                && windows[i + 1..].iter().all(|b| !a.overlaps(b))
                && ram.iter().all(|r| !a.overlaps(r))
        });
        if !whole_buses || !below_4g || !disjoint {
            return Err(RootError::Layout);
        }
        let mut rc = RootComplex {
            layout,
            slots: Vec::new(),
            decoded: Vec::new(),
            spi_levels: [false; INTX_PINS as usize],
            msi: None,
            dropped_messages: 0,
        };
        rc.attach(0, Box::new(HostBridge))?;
        Ok(rc)
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Connects the MSI controller messages go to.
    pub fn set_msi_controller(&mut self, msi: Box<dyn MsiController + Send>) {
        self.msi = Some(msi);
    }

    /// Messages dropped so far because no MSI controller took them.
    pub fn dropped_messages(&self) -> u64 {
        self.dropped_messages
    }

    /// Puts `function` at device number `device` of bus 0 (function 0).
    pub fn attach(
        &mut self,
        device: u8,
        function: Box<dyn PciFunction + Send>,
    ) -> Result<(), RootError> {
        if u64::from(device) >= ecam::DEVICES_PER_BUS
            || self.slots.iter().any(|s| s.device == device)
        {
            return Err(RootError::Slot);
        }
        let spec = function.spec();
        let config = ConfigSpace::build(
            &spec,
            function.msi(),
            &function.vendor_capabilities(),
            function.bar_window(),
        )
        .map_err(RootError::Spec)?;
        let slot = Slot {
            device,
            config,
            msix: spec.msix.map(|m| (Msix::new(m.vectors), m)),
            function,
            intx_pin: spec.intx,
            intx_level: false,
            refused: [false; BAR_COUNT],
        };
        let at = self.slots.partition_point(|s| s.device < device);
        self.slots.insert(at, slot);
        self.recompute_decode();
        Ok(())
    }

    fn slot_index(&self, device: u8) -> Option<usize> {
        self.slots.iter().position(|s| s.device == device)
    }

    /// Which BARs decode: Memory Space Enable set, the whole BAR inside a memory
    /// window its type may use (a 32-bit BAR only in the 32-bit window), and no
    /// overlap with a BAR that decodes before it (in device and BAR order). A BAR
    /// refused for any of these is not decoded, and logged when it becomes refused.
    fn recompute_decode(&mut self) {
        let mut decoded: Vec<Decoded> = Vec::new();
        let mmio32 = self.layout.mmio32;
        let mmio64 = self.layout.mmio64;
        for (si, s) in self.slots.iter_mut().enumerate() {
            let mse = s.config.command().is_set(COMMAND::MEMORY_SPACE_ENABLE);
            for i in 0..BAR_COUNT {
                let Some((base, spec)) = s.config.bar(i) else {
                    continue;
                };
                if !mse {
                    s.refused[i] = false;
                    continue;
                }
                let w = Window {
                    base,
                    size: spec.size,
                };
                let in_window = mmio32.contains(base, spec.size)
                    || (spec.is_64bit && mmio64.is_some_and(|m| m.contains(base, spec.size)));
                let clash = in_window
                    .then(|| decoded.iter().find(|d| d.window.overlaps(&w)).copied())
                    .flatten();
                let ok = in_window && clash.is_none();
                if !ok && !s.refused[i] {
                    if !in_window {
                        log::warn!(
                            "pci 00:{:02x}.0: BAR{i} at {base:#x} (size {:#x}) is outside the PCI memory windows (over RAM or another device); not decoded",
                            s.device,
                            spec.size
                        );
                    } else if let Some(c) = clash {
                        log::warn!(
                            "pci 00:{:02x}.0: BAR{i} at {base:#x} (size {:#x}) overlaps BAR{} of slot {}; not decoded",
                            s.device,
                            spec.size,
                            c.bar,
                            c.slot
                        );
                    }
                }
                s.refused[i] = !ok;
                if ok {
                    decoded.push(Decoded {
                        window: w,
                        slot: si,
                        bar: i as u8,
                    });
                }
            }
        }
        self.decoded = decoded;
    }

    /// Drives the four INTx SPIs from the functions' levels (a wired OR of the
    /// functions that share one), masked by Interrupt Disable and by MSI-X Enable.
    fn update_intx(&mut self, sink: &mut dyn InterruptSink) {
        for s in &mut self.slots {
            s.config.set_interrupt_status(s.intx_level);
        }
        let levels = self.intx_levels();
        for (i, (&new, old)) in levels.iter().zip(self.spi_levels.iter_mut()).enumerate() {
            if new != *old {
                sink.set_level(self.layout.intx_first_intid + i as u32, new);
                *old = new;
            }
        }
    }

    /// The level each of the four INTx SPIs has from the functions' levels.
    fn intx_levels(&self) -> [bool; INTX_PINS as usize] {
        let mut levels = [false; INTX_PINS as usize];
        for s in &self.slots {
            let Some(pin) = s.intx_pin else { continue };
            let disabled = s.config.command().is_set(COMMAND::INTERRUPT_DISABLE)
                || s.config.msix_enabled()
                || s.config.msi_enabled();
            if s.intx_level && !disabled {
                let spi = intx_intid(&self.layout, s.device, pin) - self.layout.intx_first_intid;
                levels[spi as usize] = true;
            }
        }
        levels
    }

    /// Sends the pending MSI-X vectors of slot `si` that may now go.
    fn flush_pending(&mut self, si: usize, sink: &mut dyn InterruptSink) {
        let s = &mut self.slots[si];
        let deliverable =
            s.config.msix_unmasked() && s.config.command().is_set(COMMAND::BUS_MASTER_ENABLE);
        if !deliverable {
            return;
        }
        let Some((msix, _)) = s.msix.as_mut() else {
            return;
        };
        let device = s.device;
        for m in msix.take_unmasked_pending() {
            send(
                device,
                "MSI-X",
                m,
                &mut self.msi,
                sink,
                &mut self.dropped_messages,
            );
        }
    }

    /// Calls `f` on the function of slot `si` with its context, then applies its
    /// interrupt changes.
    fn with_function<R>(
        &mut self,
        ctx: &mut MmioContext,
        si: usize,
        f: impl FnOnce(&mut (dyn PciFunction + Send), &mut FunctionContext) -> R,
    ) -> R {
        let s = &mut self.slots[si];
        let cmd = s.config.command();
        let bus_master = cmd.is_set(COMMAND::BUS_MASTER_ENABLE);
        let mut irq = Irq {
            device: s.device,
            deliverable: s.config.msix_unmasked() && bus_master,
            enabled: s.config.msix_enabled(),
            msi_message: s.config.msi_message(),
            bus_master,
            msix: s.msix.as_mut().map(|(m, _)| m),
            intx_level: &mut s.intx_level,
            msi: &mut self.msi,
            sink: &mut *ctx.irq,
            dropped: &mut self.dropped_messages,
        };
        let mut mem = BusMaster {
            mem: &mut *ctx.mem,
            enabled: bus_master,
        };
        let mut fctx = FunctionContext {
            vcpu: ctx.vcpu,
            mem: &mut mem,
            irq: &mut irq,
        };
        let r = f(&mut *s.function, &mut fctx);
        self.update_intx(ctx.irq);
        r
    }

    /// Decodes an ECAM offset: the slot index, or `None` for a function that does
    /// not exist (reads all-ones, writes dropped).
    fn ecam_target(&self, offset: u64) -> Option<usize> {
        let bus = offset >> ecam::BUS_SHIFT;
        let device = (offset >> ecam::DEVICE_SHIFT) & (ecam::DEVICES_PER_BUS - 1);
        let function = (offset >> ecam::FUNCTION_SHIFT) & (ecam::FUNCTIONS_PER_DEVICE - 1);
        if bus != 0 || function != 0 {
            return None;
        }
        self.slot_index(device as u8)
    }

    fn config_read(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        let reg = offset & (crate::defs::CONFIG_SPACE_SIZE - 1);
        match self.ecam_target(offset) {
            Some(si) => {
                ConfigSpace::check_access(reg, size)?;
                if self.in_window_data(si, reg) {
                    self.window_access(ctx, si, None);
                }
                self.slots[si].config.read(reg, size).map(u64::from)
            }
            None => {
                // Check the access as a present function would, then all-ones.
                crate::config::ConfigSpace::check_access(reg, size)?;
                Ok(size.mask())
            }
        }
    }

    fn config_write(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        let reg = offset & (crate::defs::CONFIG_SPACE_SIZE - 1);
        let Some(si) = self.ecam_target(offset) else {
            return crate::config::ConfigSpace::check_access(reg, size);
        };
        let changes = self.slots[si].config.write(reg, size, value as u32)?;
        if self.in_window_data(si, reg) {
            let data = self.slots[si].config.window_value().unwrap_or(0);
            self.window_access(ctx, si, Some(data));
        }
        if changes.decode {
            self.recompute_decode();
        }
        if changes.intx || changes.msix || changes.msi {
            self.update_intx(ctx.irq);
        }
        if changes.bus_master_on || changes.msix {
            self.flush_pending(si, ctx.irq);
        }
        Ok(())
    }

    /// Whether configuration register `reg` of slot `si` is in its BAR window's
    /// data field (an access is within one DWORD, so touching any byte of it).
    fn in_window_data(&self, si: usize, reg: u64) -> bool {
        self.slots[si]
            .config
            .window_data()
            .is_some_and(|r| r.contains(&reg))
    }

    /// A BAR window access of slot `si` (`write`: the data field's value): the
    /// window's BAR, offset and length checked, then the function's BAR read
    /// (its result put in the data field) or write. A refused access changes
    /// nothing and is logged. The window works whether or not the BAR decodes
    /// (it is how software reaches a BAR it has not placed).
    fn window_access(&mut self, ctx: &mut MmioContext, si: usize, write: Option<u32>) {
        let Some(t) = self.slots[si].config.window_target() else {
            return;
        };
        let device = self.slots[si].device;
        let size = match t.length {
            1 => AccessSize::Byte,
            2 => AccessSize::Half,
            4 => AccessSize::Word,
            _ => {
                log::warn!(
                    "pci 00:{device:02x}.0: BAR window length {} refused",
                    t.length
                );
                return;
            }
        };
        let (bar, offset, len) = (t.bar, u64::from(t.offset), u64::from(t.length));
        let s = &self.slots[si];
        let in_bar = s
            .config
            .bar(usize::from(bar))
            .is_some_and(|(_, spec)| offset.is_multiple_of(len) && offset + len <= spec.size);
        let in_msix = s.msix.as_ref().is_some_and(|(msix, m)| {
            let hits = |b: u8, at: u64, n: u64| b == bar && offset < at + n && at < offset + len;
            hits(m.table_bar, m.table_offset, msix.table_size())
                || hits(m.pba_bar, m.pba_offset, msix.pba_size())
        });
        if !in_bar || in_msix || !s.function.bar_window_allows(bar, offset, len) {
            log::warn!(
                "pci 00:{device:02x}.0: BAR window access of {len} bytes at {offset:#x} of BAR {bar} refused"
            );
            return;
        }
        match write {
            Some(v) => {
                let value = u64::from(v) & size.mask();
                if let Err(e) =
                    self.with_function(ctx, si, |f, fc| f.bar_write(fc, bar, offset, size, value))
                {
                    log::warn!("pci 00:{device:02x}.0: BAR window write refused: {e:?}");
                }
            }
            None => match self.with_function(ctx, si, |f, fc| f.bar_read(fc, bar, offset, size)) {
                Ok(v) => self.slots[si].config.set_window_value(v as u32, t.length),
                Err(e) => log::warn!("pci 00:{device:02x}.0: BAR window read refused: {e:?}"),
            },
        }
    }

    fn bar_access(
        &mut self,
        ctx: &mut MmioContext,
        gpa: u64,
        size: AccessSize,
        write: Option<u64>,
    ) -> Result<u64, MmioError> {
        let Some(d) = self
            .decoded
            .iter()
            .find(|d| d.window.contains(gpa, size.bytes()))
            .copied()
        else {
            log::warn!(
                "pci: {} of {gpa:#x} decodes to no BAR; master abort (reads all-ones)",
                if write.is_some() { "write" } else { "read" }
            );
            return Ok(size.mask());
        };
        let offset = gpa - d.window.base;
        if let Some((msix, m)) = self.slots[d.slot].msix.as_mut() {
            if d.bar == m.table_bar
                && offset >= m.table_offset
                && offset - m.table_offset < msix.table_size()
            {
                let off = offset - m.table_offset;
                return match write {
                    None => msix.read_table(off, size),
                    Some(v) => {
                        let unmasked = msix.write_table(off, size, v)?;
                        if !unmasked.is_empty() {
                            self.flush_pending(d.slot, ctx.irq);
                        }
                        Ok(0)
                    }
                };
            }
            if d.bar == m.pba_bar
                && offset >= m.pba_offset
                && offset - m.pba_offset < msix.pba_size()
            {
                let off = offset - m.pba_offset;
                let r = msix.read_pba(off, size)?;
                if write.is_some() {
                    log::warn!(
                        "pci 00:{:02x}.0: write to the MSI-X PBA ignored",
                        self.slots[d.slot].device
                    );
                    return Ok(0);
                }
                return Ok(r);
            }
        }
        self.with_function(ctx, d.slot, |f, fctx| match write {
            None => f.bar_read(fctx, d.bar, offset, size),
            Some(v) => f.bar_write(fctx, d.bar, offset, size, v).map(|()| 0),
        })
    }

    /// A guest access at `gpa` in one of the root complex's windows.
    pub fn access(
        &mut self,
        ctx: &mut MmioContext,
        gpa: u64,
        size: AccessSize,
        write: Option<u64>,
    ) -> Result<u64, MmioError> {
        let l = self.layout;
        if l.ecam.contains(gpa, 1) {
            let off = gpa - l.ecam.base;
            return match write {
                None => self.config_read(ctx, off, size),
                Some(v) => self.config_write(ctx, off, size, v).map(|()| 0),
            };
        }
        if l.pio.is_some_and(|p| p.contains(gpa, 1)) {
            return Ok(size.mask());
        }
        self.bar_access(ctx, gpa, size, write)
    }

    /// Conventional reset of everything behind the root complex.
    pub fn reset(&mut self, sink: &mut dyn InterruptSink) {
        for s in &mut self.slots {
            s.config.reset();
            if let Some((m, _)) = s.msix.as_mut() {
                m.reset();
            }
            s.function.reset();
            s.intx_level = false;
            s.refused = [false; BAR_COUNT];
        }
        self.recompute_decode();
        self.update_intx(sink);
    }

    /// Guest requests the functions hold, started and not completed.
    pub fn in_flight(&self) -> usize {
        self.slots.iter().map(|s| s.function.in_flight()).sum()
    }

    /// Whether any function holds deferred work.
    pub fn has_work(&self) -> bool {
        self.slots.iter().any(|s| s.function.has_work())
    }

    /// Runs every function's deferred work.
    pub fn poll(&mut self, ctx: &mut MmioContext) {
        for si in 0..self.slots.len() {
            if self.slots[si].function.has_work() {
                self.with_function(ctx, si, |f, fctx| f.poll(fctx));
            }
        }
    }

    fn defers_work(&self) -> bool {
        self.slots.iter().any(|s| s.function.defers_work())
    }

    fn connect_work_signal(&mut self, signal: &WorkSignal) {
        for s in &mut self.slots {
            s.function.connect_work_signal(signal);
        }
    }

    /// The configuration space of device `device` (tests, the monitor).
    pub fn config(&self, device: u8) -> Option<&ConfigSpace> {
        Some(&self.slots[self.slot_index(device)?].config)
    }

    /// The decoded BARs as (device, BAR, window).
    pub fn decoded_bars(&self) -> impl Iterator<Item = (u8, u8, Window)> + '_ {
        self.decoded
            .iter()
            .map(|d| (self.slots[d.slot].device, d.bar, d.window))
    }
}

/// One of the root complex's windows on the MMIO bus: the root complex is shared
/// by its windows (ECAM, memory windows, I/O window), each inserted at its base.
/// The ECAM window (`primary`) is the one that reports and runs deferred work and
/// resets the root complex.
pub struct RootWindow {
    pub rc: Arc<spin::Mutex<RootComplex>>,
    pub window: Window,
    pub primary: bool,
}

impl RootWindow {
    /// One bus device per window of the root complex, the ECAM window first.
    pub fn all(rc: &Arc<spin::Mutex<RootComplex>>) -> Vec<RootWindow> {
        let layout = *rc.lock().layout();
        layout
            .windows()
            .enumerate()
            .map(|(i, window)| RootWindow {
                rc: rc.clone(),
                window,
                primary: i == 0,
            })
            .collect()
    }
}

impl MmioDevice for RootWindow {
    fn read(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        self.rc
            .lock()
            .access(ctx, self.window.base + offset, size, None)
    }
    fn write(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        self.rc
            .lock()
            .access(
                ctx,
                self.window.base + offset,
                size,
                Some(value & size.mask()),
            )
            .map(|_| ())
    }
    fn reset(&mut self, irq: &mut dyn InterruptSink) {
        if self.primary {
            self.rc.lock().reset(irq);
        }
    }
    fn defers_work(&self) -> bool {
        self.primary && self.rc.lock().defers_work()
    }
    fn has_deferred_work(&self) -> bool {
        self.primary && self.rc.lock().has_work()
    }
    fn resume(&mut self, ctx: &mut MmioContext) {
        if self.primary {
            self.rc.lock().poll(ctx);
        }
    }
    fn connect_work_signal(&mut self, signal: &WorkSignal) {
        if self.primary {
            self.rc.lock().connect_work_signal(signal);
        }
    }
}
