//! The virtio-mmio transport, version 2 only (virtio 1.2 §4.2): the register file a
//! guest driver programs, feature negotiation, the device status state machine
//! (including DEVICE_NEEDS_RESET on any protocol violation), queue setup, queue
//! notifications, the InterruptStatus register and the level-triggered interrupt line
//! (high while InterruptStatus is non-zero), and the device configuration window at
//! 0x100. [`MmioTransport`] implements [`vdev::MmioDevice`] so the hypervisor puts it
//! straight on its MMIO bus.

use vdev::{
    AccessSize, GuestMemory, InterruptSink, MmioContext, MmioDevice, MmioError, WorkSignal,
};

use crate::defs::mmio;
use crate::device::{RunBudget, VirtioDevice};
use crate::queue::Queue;
use crate::shared::{set_half, Events, Half, TransportCore};

/// A virtio device behind a virtio-mmio register window, raising interrupt `intid`.
pub struct MmioTransport<D: VirtioDevice> {
    core: TransportCore<D>,
    intid: u32,
    interrupt_status: u32,
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// Wraps `device`; its interrupt is `intid`.
    pub fn new(device: D, intid: u32) -> Self {
        Self {
            core: TransportCore::new(device, "virtio-mmio"),
            intid,
            interrupt_status: 0,
        }
    }

    /// Raises `signal` whenever this transport leaves work for later (a call spent
    /// its [`RunBudget`]), so the hypervisor knows to call [`MmioDevice::resume`]
    /// (or [`Self::poll`]) without waiting for a guest notification, which with
    /// VIRTIO_F_EVENT_IDX may never come.
    pub fn with_work_signal(mut self, signal: WorkSignal) -> Self {
        self.core.connect_work_signal(&signal);
        self
    }

    /// Replaces the per-call work budget (tests, tuning).
    pub fn set_budget(&mut self, budget: RunBudget) {
        self.core.set_budget(budget);
    }

    /// Whether [`Self::poll`] has work to do: queues deferred by the budget, or
    /// host-side input the device holds. The hypervisor polls such devices.
    pub fn needs_poll(&self) -> bool {
        self.core.needs_poll()
    }

    /// The device.
    pub fn device(&self) -> &D {
        self.core.device()
    }

    /// The device, e.g. to push console input (follow with [`Self::poll`]).
    pub fn device_mut(&mut self) -> &mut D {
        self.core.device_mut()
    }

    /// The interrupt this transport drives.
    pub fn intid(&self) -> u32 {
        self.intid
    }

    /// The Status register.
    pub fn status(&self) -> u32 {
        self.core.status()
    }

    /// The InterruptStatus register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status
    }

    /// Whether the device is stopped in DEVICE_NEEDS_RESET.
    pub fn needs_reset(&self) -> bool {
        self.core.needs_reset()
    }

    /// Queue `q` as the driver configured it (None past the device's queues): lets a
    /// harness (the fuzz targets) see where the rings are.
    pub fn queue(&self, q: usize) -> Option<&Queue> {
        self.core.queue(q)
    }

    /// Everything the device offers: its own features and the transport's.
    pub fn offered_features(&self) -> u64 {
        self.core.offered_features()
    }

    /// The features the driver accepted (0 before FEATURES_OK).
    pub fn negotiated_features(&self) -> u64 {
        self.core.negotiated_features()
    }

    /// Lets the device complete host-side work (e.g. console input) outside a guest
    /// access. Call after feeding the device through [`Self::device_mut`].
    pub fn poll(&mut self, mem: &mut dyn GuestMemory, irq: &mut dyn InterruptSink) {
        let ev = self.core.poll(mem);
        self.raise(ev);
        self.drive_line(irq);
    }

    /// The host changed the device configuration: bump ConfigGeneration and raise a
    /// configuration change interrupt.
    pub fn signal_config_change(&mut self, irq: &mut dyn InterruptSink) {
        let ev = self.core.signal_config_change();
        self.raise(ev);
        self.drive_line(irq);
    }

    /// Turns core events into InterruptStatus bits.
    fn raise(&mut self, ev: Events) {
        if ev.used_queues != 0 {
            self.interrupt_status |= mmio::INT_USED_BUFFER;
        }
        if ev.config {
            self.interrupt_status |= mmio::INT_CONFIG_CHANGE;
        }
    }

    fn drive_line(&mut self, irq: &mut dyn InterruptSink) {
        irq.set_level(self.intid, self.interrupt_status != 0);
    }

    /// Device reset (a write of 0 to Status).
    pub fn reset_device(&mut self) {
        self.core.reset_device();
        self.interrupt_status = 0;
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        let q = self.core.selected_queue();
        match offset {
            mmio::MAGIC_VALUE => mmio::MAGIC,
            mmio::VERSION => mmio::VERSION_MODERN,
            mmio::DEVICE_ID => self.core.device().device_id(),
            mmio::VENDOR_ID => mmio::VENDOR,
            mmio::DEVICE_FEATURES => self.core.device_features_word(),
            mmio::QUEUE_NUM_MAX => q.map_or(0, |q| u32::from(q.max_size)),
            mmio::QUEUE_READY => q.map_or(0, |q| u32::from(q.ready)),
            mmio::INTERRUPT_STATUS => self.interrupt_status,
            mmio::STATUS => self.core.status(),
            mmio::SHM_LEN_LOW | mmio::SHM_LEN_HIGH | mmio::SHM_BASE_LOW | mmio::SHM_BASE_HIGH => {
                mmio::SHM_NONE
            }
            mmio::CONFIG_GENERATION => self.core.config_generation(),
            // Write-only registers, QueueReset (VIRTIO_F_RING_RESET not offered) and
            // reserved offsets read as zero.
            _ => {
                log::debug!("virtio-mmio: read of {offset:#x} reads as zero");
                0
            }
        }
    }

    fn write_register(&mut self, ctx: &mut MmioContext, offset: u64, v: u32) {
        let queue_reg = |core: &mut TransportCore<D>, f: &dyn Fn(&mut Queue)| {
            core.write_selected_queue("queue register write", f);
        };
        match offset {
            mmio::DEVICE_FEATURES_SEL => self.core.set_device_features_sel(v),
            mmio::DRIVER_FEATURES_SEL => self.core.set_driver_features_sel(v),
            mmio::DRIVER_FEATURES => self.core.write_driver_features(v),
            mmio::QUEUE_SEL => self.core.set_queue_sel(v),
            mmio::QUEUE_NUM => {
                queue_reg(&mut self.core, &|q| q.size = u16::try_from(v).unwrap_or(0))
            }
            mmio::QUEUE_READY => {
                let ev = self.core.write_queue_ready(ctx.mem, v != 0);
                self.raise(ev);
                self.drive_line(ctx.irq);
            }
            mmio::QUEUE_DESC_LOW => queue_reg(&mut self.core, &|q| {
                set_half(&mut q.desc_addr, Half::Low, v)
            }),
            mmio::QUEUE_DESC_HIGH => queue_reg(&mut self.core, &|q| {
                set_half(&mut q.desc_addr, Half::High, v)
            }),
            mmio::QUEUE_DRIVER_LOW => queue_reg(&mut self.core, &|q| {
                set_half(&mut q.avail_addr, Half::Low, v)
            }),
            mmio::QUEUE_DRIVER_HIGH => queue_reg(&mut self.core, &|q| {
                set_half(&mut q.avail_addr, Half::High, v)
            }),
            mmio::QUEUE_DEVICE_LOW => queue_reg(&mut self.core, &|q| {
                set_half(&mut q.used_addr, Half::Low, v)
            }),
            mmio::QUEUE_DEVICE_HIGH => queue_reg(&mut self.core, &|q| {
                set_half(&mut q.used_addr, Half::High, v)
            }),
            mmio::QUEUE_NOTIFY => {
                let ev = self.core.notify(ctx.mem, v);
                self.raise(ev);
                self.drive_line(ctx.irq);
            }
            mmio::INTERRUPT_ACK => {
                self.interrupt_status &= !v;
                self.drive_line(ctx.irq);
            }
            mmio::STATUS => {
                if v == 0 {
                    self.reset_device();
                } else {
                    let ev = self.core.write_status(ctx.mem, v);
                    self.raise(ev);
                }
                self.drive_line(ctx.irq);
            }
            mmio::SHM_SEL => {}
            _ => {
                log::warn!("virtio-mmio: write of {v:#x} to read-only/reserved {offset:#x} ignored")
            }
        }
    }

    fn config_access(&mut self, offset: u64, size: AccessSize) -> Result<usize, MmioError> {
        if !offset.is_multiple_of(size.bytes()) {
            log::warn!("virtio-mmio: unaligned config access at {offset:#x}");
            return Err(MmioError::Unaligned { offset });
        }
        Ok((offset - mmio::CONFIG) as usize)
    }

    fn register_access(offset: u64, size: AccessSize) -> Result<(), MmioError> {
        if size != AccessSize::Word {
            log::warn!("virtio-mmio: {size:?} access to register {offset:#x}");
            return Err(MmioError::UnsupportedSize { offset, size });
        }
        if !offset.is_multiple_of(4) {
            log::warn!("virtio-mmio: unaligned register access at {offset:#x}");
            return Err(MmioError::Unaligned { offset });
        }
        Ok(())
    }
}

impl<D: VirtioDevice> MmioDevice for MmioTransport<D> {
    fn read(
        &mut self,
        _ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        if offset >= mmio::CONFIG {
            let at = self.config_access(offset, size)?;
            let mut b = [0u8; 8];
            let n = size.bytes() as usize;
            self.core.device().read_config(at, &mut b[..n]);
            return Ok(u64::from_le_bytes(b));
        }
        Self::register_access(offset, size)?;
        Ok(u64::from(self.read_register(offset)))
    }

    fn write(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        if offset >= mmio::CONFIG {
            let at = self.config_access(offset, size)?;
            let n = size.bytes() as usize;
            self.core
                .device_mut()
                .write_config(at, &value.to_le_bytes()[..n]);
            return Ok(());
        }
        Self::register_access(offset, size)?;
        self.write_register(ctx, offset, value as u32);
        Ok(())
    }

    /// VM reset: the device reset a driver asks for (queues forgotten, deferred
    /// work dropped), and then what only power-on resets: ConfigGeneration back to
    /// 0 and the device's host-side buffers dropped. The interrupt line is lowered.
    fn reset(&mut self, irq: &mut dyn InterruptSink) {
        self.core.power_on_reset();
        self.interrupt_status = 0;
        self.drive_line(irq);
    }

    fn defers_work(&self) -> bool {
        true
    }

    /// Only queue work the budget deferred: it always makes progress when resumed.
    /// (Host-side input waiting for the driver's buffers is not "deferred": it may
    /// wait forever, and the hypervisor must not spin on it.)
    fn has_deferred_work(&self) -> bool {
        self.core.has_deferred_work()
    }

    fn resume(&mut self, ctx: &mut MmioContext) {
        self.poll(ctx.mem, ctx.irq);
    }

    fn connect_work_signal(&mut self, signal: &WorkSignal) {
        self.core.connect_work_signal(signal);
    }
}

#[path = "transport_save.rs"]
mod save;

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
