//! The virtio-mmio transport, version 2 only (virtio 1.2 §4.2): the register file a
//! guest driver programs, feature negotiation, the device status state machine
//! (including DEVICE_NEEDS_RESET on any protocol violation), queue setup, queue
//! notifications, the InterruptStatus register and the level-triggered interrupt line
//! (high while InterruptStatus is non-zero), and the device configuration window at
//! 0x100. [`MmioTransport`] implements [`vdev::MmioDevice`] so the hypervisor puts it
//! straight on its MMIO bus.

use alloc::vec::Vec;

use vdev::{
    AccessSize, GuestMemory, InterruptSink, MmioContext, MmioDevice, MmioError, WorkSignal,
};

use crate::defs::{features, mmio, status};
use crate::device::{DeviceError, QueueContext, RunBudget, VirtioDevice, MAX_QUEUES};
use crate::queue::Queue;

/// A virtio device behind a virtio-mmio register window, raising interrupt `intid`.
pub struct MmioTransport<D: VirtioDevice> {
    device: D,
    intid: u32,
    queues: Vec<Queue>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    /// The accepted feature set (valid once FEATURES_OK is set).
    negotiated: u64,
    status: u32,
    interrupt_status: u32,
    config_generation: u32,
    /// Queues with work left over from a call whose budget ran out.
    deferred: u64,
    budget: RunBudget,
    /// Raised whenever work is left over, so the hypervisor resumes it.
    work: Option<WorkSignal>,
}

/// Which half of a 64-bit queue address register pair.
#[derive(Clone, Copy)]
enum Half {
    Low,
    High,
}

fn set_half(reg: &mut u64, half: Half, v: u32) {
    *reg = match half {
        Half::Low => (*reg & !0xffff_ffff) | u64::from(v),
        Half::High => (*reg & 0xffff_ffff) | (u64::from(v) << 32),
    };
}

impl<D: VirtioDevice> MmioTransport<D> {
    /// Wraps `device`; its interrupt is `intid`.
    pub fn new(device: D, intid: u32) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .take(MAX_QUEUES)
            .map(|&max| Queue::new(max))
            .collect();
        Self {
            device,
            intid,
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            negotiated: 0,
            status: 0,
            interrupt_status: 0,
            config_generation: 0,
            deferred: 0,
            budget: RunBudget::default(),
            work: None,
        }
    }

    /// Raises `signal` whenever this transport leaves work for later (a call spent
    /// its [`RunBudget`]), so the hypervisor knows to call [`MmioDevice::resume`]
    /// (or [`Self::poll`]) without waiting for a guest notification, which with
    /// VIRTIO_F_EVENT_IDX may never come.
    pub fn with_work_signal(mut self, signal: WorkSignal) -> Self {
        self.device.connect_work_signal(&signal);
        self.work = Some(signal);
        self
    }

    /// Replaces the per-call work budget (tests, tuning).
    pub fn set_budget(&mut self, budget: RunBudget) {
        self.budget = budget;
    }

    /// Whether [`Self::poll`] has work to do: queues deferred by the budget, or
    /// host-side input the device holds. The hypervisor polls such devices.
    pub fn needs_poll(&self) -> bool {
        self.live() && (self.deferred != 0 || self.device.wants_poll())
    }

    /// The device.
    pub fn device(&self) -> &D {
        &self.device
    }

    /// The device, e.g. to push console input (follow with [`Self::poll`]).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The interrupt this transport drives.
    pub fn intid(&self) -> u32 {
        self.intid
    }

    /// The Status register.
    pub fn status(&self) -> u32 {
        self.status
    }

    /// The InterruptStatus register.
    pub fn interrupt_status(&self) -> u32 {
        self.interrupt_status
    }

    /// Whether the device is stopped in DEVICE_NEEDS_RESET.
    pub fn needs_reset(&self) -> bool {
        self.status & status::DEVICE_NEEDS_RESET != 0
    }

    /// Queue `q` as the driver configured it (None past the device's queues): lets a
    /// harness (the fuzz targets) see where the rings are.
    pub fn queue(&self, q: usize) -> Option<&Queue> {
        self.queues.get(q)
    }

    /// Everything the device offers: its own features and the transport's.
    pub fn offered_features(&self) -> u64 {
        self.device.features() | features::TRANSPORT
    }

    /// The features the driver accepted (0 before FEATURES_OK).
    pub fn negotiated_features(&self) -> u64 {
        if self.status & status::FEATURES_OK != 0 {
            self.negotiated
        } else {
            0
        }
    }

    fn live(&self) -> bool {
        self.status & status::DRIVER_OK != 0 && !self.needs_reset()
    }

    /// Lets the device complete host-side work (e.g. console input) outside a guest
    /// access. Call after feeding the device through [`Self::device_mut`].
    pub fn poll(&mut self, mem: &mut dyn GuestMemory, irq: &mut dyn InterruptSink) {
        let deferred = core::mem::take(&mut self.deferred);
        for q in 0..self.queues.len() as u16 {
            if deferred & (1u64 << q) != 0 && self.live() {
                self.run(mem, |dev, qc| dev.process(q, qc));
            }
        }
        if self.live() {
            self.run(mem, |dev, qc| dev.poll(qc));
        }
        self.drive_line(irq);
    }

    /// The host changed the device configuration: bump ConfigGeneration and raise a
    /// configuration change interrupt.
    pub fn signal_config_change(&mut self, irq: &mut dyn InterruptSink) {
        self.config_generation = self.config_generation.wrapping_add(1);
        if self.status & status::DRIVER_OK != 0 {
            self.interrupt_status |= mmio::INT_CONFIG_CHANGE;
        }
        self.drive_line(irq);
    }

    fn drive_line(&mut self, irq: &mut dyn InterruptSink) {
        irq.set_level(self.intid, self.interrupt_status != 0);
    }

    fn enter_needs_reset(&mut self, why: DeviceError) {
        log::warn!(
            "virtio-mmio (device {}): {:?}; DEVICE_NEEDS_RESET",
            self.device.device_id(),
            why
        );
        self.status |= status::DEVICE_NEEDS_RESET;
        // §2.1.2: with DRIVER_OK set the device must also notify a config change.
        if self.status & status::DRIVER_OK != 0 {
            self.interrupt_status |= mmio::INT_CONFIG_CHANGE;
        }
    }

    /// Runs `work` on the device with a queue context, then turns its outcome into
    /// interrupt status or DEVICE_NEEDS_RESET.
    fn run(
        &mut self,
        mem: &mut dyn GuestMemory,
        work: impl FnOnce(&mut D, &mut QueueContext) -> Result<(), DeviceError>,
    ) {
        let negotiated = self.negotiated;
        let mut qc = QueueContext::new(mem, &mut self.queues, negotiated, self.budget);
        let result = work(&mut self.device, &mut qc);
        let (used_mask, deferred, config_changed) = qc.outcome();
        self.deferred |= deferred;
        if deferred != 0 {
            if let Some(w) = &self.work {
                w.raise();
            }
        }
        if let Err(e) = result {
            self.enter_needs_reset(e);
        }
        if config_changed {
            self.config_generation = self.config_generation.wrapping_add(1);
            self.interrupt_status |= mmio::INT_CONFIG_CHANGE;
        }
        for (i, q) in self.queues.iter_mut().enumerate() {
            if used_mask & (1u64 << i) == 0 {
                continue;
            }
            match q.should_interrupt(mem, negotiated) {
                Ok(true) => self.interrupt_status |= mmio::INT_USED_BUFFER,
                Ok(false) => {}
                Err(e) => {
                    self.enter_needs_reset(DeviceError::Queue(e));
                    break;
                }
            }
        }
    }

    /// Device reset (a write of 0 to Status).
    pub fn reset_device(&mut self) {
        self.device.reset();
        for q in &mut self.queues {
            q.reset();
        }
        self.queue_sel = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.negotiated = 0;
        self.status = 0;
        self.interrupt_status = 0;
        self.deferred = 0;
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read_register(&mut self, offset: u64) -> u32 {
        let q = self.queues.get(self.queue_sel as usize);
        match offset {
            mmio::MAGIC_VALUE => mmio::MAGIC,
            mmio::VERSION => mmio::VERSION_MODERN,
            mmio::DEVICE_ID => self.device.device_id(),
            mmio::VENDOR_ID => mmio::VENDOR,
            mmio::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            mmio::QUEUE_NUM_MAX => q.map_or(0, |q| u32::from(q.max_size)),
            mmio::QUEUE_READY => q.map_or(0, |q| u32::from(q.ready)),
            mmio::INTERRUPT_STATUS => self.interrupt_status,
            mmio::STATUS => self.status,
            mmio::SHM_LEN_LOW | mmio::SHM_LEN_HIGH | mmio::SHM_BASE_LOW | mmio::SHM_BASE_HIGH => {
                mmio::SHM_NONE
            }
            mmio::CONFIG_GENERATION => self.config_generation,
            // Write-only registers, QueueReset (VIRTIO_F_RING_RESET not offered) and
            // reserved offsets read as zero.
            _ => {
                log::debug!("virtio-mmio: read of {offset:#x} reads as zero");
                0
            }
        }
    }

    fn write_register(&mut self, ctx: &mut MmioContext, offset: u64, v: u32) {
        match offset {
            mmio::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            mmio::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            mmio::DRIVER_FEATURES => self.write_driver_features(v),
            mmio::QUEUE_SEL => self.queue_sel = v,
            mmio::QUEUE_NUM => {
                self.write_queue_reg(offset, v, |q| q.size = u16::try_from(v).unwrap_or(0))
            }
            mmio::QUEUE_READY => self.write_queue_ready(ctx, v),
            mmio::QUEUE_DESC_LOW => {
                self.write_queue_reg(offset, v, |q| set_half(&mut q.desc_addr, Half::Low, v))
            }
            mmio::QUEUE_DESC_HIGH => {
                self.write_queue_reg(offset, v, |q| set_half(&mut q.desc_addr, Half::High, v))
            }
            mmio::QUEUE_DRIVER_LOW => {
                self.write_queue_reg(offset, v, |q| set_half(&mut q.avail_addr, Half::Low, v))
            }
            mmio::QUEUE_DRIVER_HIGH => {
                self.write_queue_reg(offset, v, |q| set_half(&mut q.avail_addr, Half::High, v))
            }
            mmio::QUEUE_DEVICE_LOW => {
                self.write_queue_reg(offset, v, |q| set_half(&mut q.used_addr, Half::Low, v))
            }
            mmio::QUEUE_DEVICE_HIGH => {
                self.write_queue_reg(offset, v, |q| set_half(&mut q.used_addr, Half::High, v))
            }
            mmio::QUEUE_NOTIFY => self.notify(ctx, v),
            mmio::INTERRUPT_ACK => {
                self.interrupt_status &= !v;
                self.drive_line(ctx.irq);
            }
            mmio::STATUS => self.write_status(ctx, v),
            mmio::SHM_SEL => {}
            _ => {
                log::warn!("virtio-mmio: write of {v:#x} to read-only/reserved {offset:#x} ignored")
            }
        }
    }

    fn write_driver_features(&mut self, v: u32) {
        if self.status & status::FEATURES_OK != 0 {
            log::warn!("virtio-mmio: DriverFeatures write after FEATURES_OK ignored");
            return;
        }
        match self.driver_features_sel {
            0 => set_half(&mut self.driver_features, Half::Low, v),
            1 => set_half(&mut self.driver_features, Half::High, v),
            sel if v != 0 => log::warn!("virtio-mmio: DriverFeatures word {sel} = {v:#x} ignored"),
            _ => {}
        }
    }

    fn write_queue_reg(&mut self, offset: u64, v: u32, f: impl FnOnce(&mut Queue)) {
        let sel = self.queue_sel;
        match self.selected_queue() {
            None => log::warn!(
                "virtio-mmio: write {v:#x} to {offset:#x} for absent queue {sel} ignored"
            ),
            Some(q) if q.ready => {
                log::warn!(
                    "virtio-mmio: write {v:#x} to {offset:#x} while queue {sel} is ready ignored"
                )
            }
            Some(q) => f(q),
        }
    }

    fn write_queue_ready(&mut self, ctx: &mut MmioContext, v: u32) {
        let sel = self.queue_sel;
        if self.needs_reset() {
            log::warn!("virtio-mmio: QueueReady write while DEVICE_NEEDS_RESET ignored");
            return;
        }
        let Some(q) = self.queues.get_mut(sel as usize) else {
            log::warn!("virtio-mmio: QueueReady for absent queue {sel} ignored");
            return;
        };
        match (v, q.ready) {
            (0, _) => q.ready = false,
            (_, true) => {}
            (_, false) => {
                if let Err(e) = q.activate(ctx.mem) {
                    self.enter_needs_reset(DeviceError::Queue(e));
                    self.drive_line(ctx.irq);
                }
            }
        }
    }

    fn notify(&mut self, ctx: &mut MmioContext, v: u32) {
        if !self.live() {
            log::debug!("virtio-mmio: notify of queue {v} while not live ignored");
            return;
        }
        let Ok(q) = u16::try_from(v) else {
            log::warn!("virtio-mmio: notify of absent queue {v} ignored");
            return;
        };
        if !self.queues.get(usize::from(q)).is_some_and(|q| q.ready) {
            log::warn!("virtio-mmio: notify of absent or not-ready queue {q} ignored");
            return;
        }
        self.run(ctx.mem, |dev, qc| dev.process(q, qc));
        self.drive_line(ctx.irq);
    }

    fn write_status(&mut self, ctx: &mut MmioContext, v: u32) {
        if v == 0 {
            self.reset_device();
            self.drive_line(ctx.irq);
            return;
        }
        if v & !status::DRIVER_BITS & !status::DEVICE_NEEDS_RESET != 0 {
            log::warn!("virtio-mmio: reserved status bits in {v:#x} ignored");
        }
        let old = self.status & status::DRIVER_BITS;
        let mut new = v & status::DRIVER_BITS;
        if new & old != old {
            log::warn!(
                "virtio-mmio: driver tried to clear status bits ({old:#x} -> {new:#x}); ignored"
            );
            return;
        }
        let added = new & !old;
        if added & status::FEATURES_OK != 0 {
            let offered = self.offered_features();
            let unoffered = self.driver_features & !offered;
            if unoffered != 0 || self.driver_features & features::VERSION_1 == 0 {
                log::warn!(
                    "virtio-mmio: FEATURES_OK refused: driver features {:#x}, offered {offered:#x}",
                    self.driver_features
                );
                new &= !status::FEATURES_OK;
            } else {
                self.negotiated = self.driver_features;
            }
        }
        if added & status::DRIVER_OK != 0 && new & status::FEATURES_OK == 0 {
            log::warn!("virtio-mmio: DRIVER_OK without FEATURES_OK ignored");
            new &= !status::DRIVER_OK;
        }
        self.status = (self.status & status::DEVICE_NEEDS_RESET) | new;
        if new & !old & status::DRIVER_OK != 0 {
            self.device.activate(self.negotiated);
            // Buffers made available (and notified) before DRIVER_OK are served now.
            for q in 0..self.queues.len() as u16 {
                if self.live() && self.queues[usize::from(q)].ready {
                    self.run(ctx.mem, |dev, qc| dev.process(q, qc));
                }
            }
            if self.live() {
                self.run(ctx.mem, |dev, qc| dev.poll(qc));
            }
        }
        self.drive_line(ctx.irq);
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
            self.device.read_config(at, &mut b[..n]);
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
            self.device.write_config(at, &value.to_le_bytes()[..n]);
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
        self.reset_device();
        self.device.power_on_reset();
        self.config_generation = 0;
        self.drive_line(irq);
    }

    fn defers_work(&self) -> bool {
        true
    }

    /// Only queue work the budget deferred: it always makes progress when resumed.
    /// (Host-side input waiting for the driver's buffers is not "deferred": it may
    /// wait forever, and the hypervisor must not spin on it.)
    fn has_deferred_work(&self) -> bool {
        self.live() && (self.deferred != 0 || self.device.has_ready_work())
    }

    fn resume(&mut self, ctx: &mut MmioContext) {
        self.poll(ctx.mem, ctx.irq);
    }

    fn connect_work_signal(&mut self, signal: &WorkSignal) {
        self.device.connect_work_signal(signal);
        self.work = Some(signal.clone());
        if self.has_deferred_work() {
            signal.raise();
        }
    }
}

#[path = "transport_save.rs"]
mod save;

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
