//! The transport-independent half of every virtio transport: the device, its
//! queues, feature negotiation, the device status state machine (including
//! DEVICE_NEEDS_RESET on any protocol violation), queue activation, notifications,
//! the run budget and deferred work. A transport ([`crate::MmioTransport`], the PCI
//! transport of the `pci` crate) owns a [`TransportCore`], maps its registers onto
//! the core's operations and turns the [`Events`] they return into its own
//! interrupts (InterruptStatus and a line for MMIO; MSI-X vectors or ISR and INTx
//! for PCI). Queue and device logic exist once, here and in the device.

use alloc::vec::Vec;

use vdev::{GuestMemory, WorkSignal};

use crate::defs::{features, status};
use crate::device::{DeviceError, QueueContext, RunBudget, VirtioDevice, MAX_QUEUES};
use crate::queue::Queue;

/// Interrupts a core operation asks its transport to raise.
#[must_use]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Events {
    /// Queues (a bit each) whose used ring got entries the driver wants to hear
    /// about (VIRTIO_F_EVENT_IDX and NO_INTERRUPT already applied).
    pub used_queues: u64,
    /// A configuration change notification (also sent on DEVICE_NEEDS_RESET).
    pub config: bool,
}

impl Events {
    /// Nothing to raise.
    pub const NONE: Events = Events {
        used_queues: 0,
        config: false,
    };

    /// Both sets of events.
    pub fn merge(self, other: Events) -> Events {
        Events {
            used_queues: self.used_queues | other.used_queues,
            config: self.config || other.config,
        }
    }
}

/// A device with its queues and the transport-independent registers.
pub struct TransportCore<D: VirtioDevice> {
    pub(crate) device: D,
    pub(crate) queues: Vec<Queue>,
    pub(crate) queue_sel: u32,
    pub(crate) device_features_sel: u32,
    pub(crate) driver_features_sel: u32,
    pub(crate) driver_features: u64,
    /// The accepted feature set (valid once FEATURES_OK is set).
    pub(crate) negotiated: u64,
    pub(crate) status: u32,
    pub(crate) config_generation: u32,
    /// Queues with work left over from a call whose budget ran out.
    pub(crate) deferred: u64,
    pub(crate) budget: RunBudget,
    /// Raised whenever work is left over, so the hypervisor resumes it.
    pub(crate) work: Option<WorkSignal>,
    /// The transport's name in log lines ("virtio-mmio", "virtio-pci").
    pub(crate) name: &'static str,
}

/// Which half of a 64-bit register pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Half {
    Low,
    High,
}

/// Sets one 32-bit half of `reg`.
pub fn set_half(reg: &mut u64, half: Half, v: u32) {
    *reg = match half {
        Half::Low => (*reg & !0xffff_ffff) | u64::from(v),
        Half::High => (*reg & 0xffff_ffff) | (u64::from(v) << 32),
    };
}

impl<D: VirtioDevice> TransportCore<D> {
    /// Wraps `device` (its queues reset); `name` prefixes log lines.
    pub fn new(device: D, name: &'static str) -> Self {
        let queues = device
            .queue_max_sizes()
            .iter()
            .take(MAX_QUEUES)
            .map(|&max| Queue::new(max))
            .collect();
        Self {
            device,
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            negotiated: 0,
            status: 0,
            config_generation: 0,
            deferred: 0,
            budget: RunBudget::default(),
            work: None,
            name,
        }
    }

    /// Raises `signal` whenever work is left for later, and lets the device raise it.
    pub fn connect_work_signal(&mut self, signal: &WorkSignal) {
        self.device.connect_work_signal(signal);
        self.work = Some(signal.clone());
        if self.has_deferred_work() {
            signal.raise();
        }
    }

    pub fn set_budget(&mut self, budget: RunBudget) {
        self.budget = budget;
    }

    pub fn device(&self) -> &D {
        &self.device
    }

    pub fn device_mut(&mut self) -> &mut D {
        &mut self.device
    }

    /// The device status.
    pub fn status(&self) -> u32 {
        self.status
    }

    pub fn config_generation(&self) -> u32 {
        self.config_generation
    }

    pub fn needs_reset(&self) -> bool {
        self.status & status::DEVICE_NEEDS_RESET != 0
    }

    /// DRIVER_OK and not stopped: queues are processed.
    pub fn live(&self) -> bool {
        self.status & status::DRIVER_OK != 0 && !self.needs_reset()
    }

    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    pub fn queue(&self, q: usize) -> Option<&Queue> {
        self.queues.get(q)
    }

    pub fn queue_sel(&self) -> u32 {
        self.queue_sel
    }

    pub fn set_queue_sel(&mut self, sel: u32) {
        self.queue_sel = sel;
    }

    /// The selected queue, if it exists.
    pub fn selected_queue(&self) -> Option<&Queue> {
        self.queues.get(self.queue_sel as usize)
    }

    pub fn device_features_sel(&self) -> u32 {
        self.device_features_sel
    }

    pub fn driver_features_sel(&self) -> u32 {
        self.driver_features_sel
    }

    /// Every queue's size back to its maximum: the reset value of the PCI
    /// transport's `queue_size` (virtio 1.2 §4.1.4.3), which a driver may lower.
    pub fn set_queue_sizes_to_max(&mut self) {
        for q in self.queues.iter_mut().filter(|q| !q.ready) {
            q.size = q.max_size;
        }
    }

    pub fn set_device_features_sel(&mut self, sel: u32) {
        self.device_features_sel = sel;
    }

    pub fn set_driver_features_sel(&mut self, sel: u32) {
        self.driver_features_sel = sel;
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

    /// The offered-features word the driver selected.
    pub fn device_features_word(&self) -> u32 {
        match self.device_features_sel {
            0 => self.offered_features() as u32,
            1 => (self.offered_features() >> 32) as u32,
            _ => 0,
        }
    }

    /// The driver-features word the driver selected.
    pub fn driver_features_word(&self) -> u32 {
        match self.driver_features_sel {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        }
    }

    /// Whether work is waiting that [`Self::poll`] completes for sure.
    pub fn has_deferred_work(&self) -> bool {
        self.live() && (self.deferred != 0 || self.device.has_ready_work())
    }

    /// Whether [`Self::poll`] has anything to do (deferred queues or host input).
    pub fn needs_poll(&self) -> bool {
        self.live() && (self.deferred != 0 || self.device.wants_poll())
    }

    /// A write of the selected driver-features word.
    pub fn write_driver_features(&mut self, v: u32) {
        if self.status & status::FEATURES_OK != 0 {
            log::warn!(
                "{}: DriverFeatures write after FEATURES_OK ignored",
                self.name
            );
            return;
        }
        match self.driver_features_sel {
            0 => set_half(&mut self.driver_features, Half::Low, v),
            1 => set_half(&mut self.driver_features, Half::High, v),
            sel if v != 0 => {
                log::warn!("{}: DriverFeatures word {sel} = {v:#x} ignored", self.name)
            }
            _ => {}
        }
    }

    /// Applies `f` to the selected queue's configuration, unless the queue is
    /// absent or already enabled (then the write named `what` is logged and
    /// ignored). Returns whether `f` ran.
    pub fn write_selected_queue(&mut self, what: &str, f: impl FnOnce(&mut Queue)) -> bool {
        let sel = self.queue_sel;
        let name = self.name;
        match self.queues.get_mut(sel as usize) {
            None => {
                log::warn!("{name}: {what} for absent queue {sel} ignored");
                false
            }
            Some(q) if q.ready => {
                log::warn!("{name}: {what} while queue {sel} is enabled ignored");
                false
            }
            Some(q) => {
                f(q);
                true
            }
        }
    }

    /// The driver enables (`enable`) or disables the selected queue. Enabling
    /// validates the queue's configuration: a bad one means DEVICE_NEEDS_RESET.
    pub fn write_queue_ready(&mut self, mem: &dyn GuestMemory, enable: bool) -> Events {
        let sel = self.queue_sel;
        if self.needs_reset() {
            log::warn!(
                "{}: QueueReady write while DEVICE_NEEDS_RESET ignored",
                self.name
            );
            return Events::NONE;
        }
        let Some(q) = self.queues.get_mut(sel as usize) else {
            log::warn!("{}: QueueReady for absent queue {sel} ignored", self.name);
            return Events::NONE;
        };
        match (enable, q.ready) {
            (false, _) => q.ready = false,
            (true, true) => {}
            (true, false) => {
                if let Err(e) = q.activate(mem) {
                    return self.enter_needs_reset(DeviceError::Queue(e));
                }
            }
        }
        Events::NONE
    }

    /// The driver notified queue `v`.
    pub fn notify(&mut self, mem: &mut dyn GuestMemory, v: u32) -> Events {
        if !self.live() {
            log::debug!("{}: notify of queue {v} while not live ignored", self.name);
            return Events::NONE;
        }
        let Ok(q) = u16::try_from(v) else {
            log::warn!("{}: notify of absent queue {v} ignored", self.name);
            return Events::NONE;
        };
        if !self.queues.get(usize::from(q)).is_some_and(|q| q.ready) {
            log::warn!(
                "{}: notify of absent or not-ready queue {q} ignored",
                self.name
            );
            return Events::NONE;
        }
        self.run(mem, |dev, qc| dev.process(q, qc))
    }

    /// Completes deferred queue work and the device's host-side work.
    pub fn poll(&mut self, mem: &mut dyn GuestMemory) -> Events {
        let deferred = core::mem::take(&mut self.deferred);
        let mut ev = Events::NONE;
        for q in 0..self.queues.len() as u16 {
            if deferred & (1u64 << q) != 0 && self.live() {
                ev = ev.merge(self.run(mem, |dev, qc| dev.process(q, qc)));
            }
        }
        if self.live() {
            ev = ev.merge(self.run(mem, |dev, qc| dev.poll(qc)));
        }
        ev
    }

    /// The host changed the device configuration: ConfigGeneration moves on, and
    /// the driver hears of it once DRIVER_OK is set.
    pub fn signal_config_change(&mut self) -> Events {
        self.config_generation = self.config_generation.wrapping_add(1);
        Events {
            used_queues: 0,
            config: self.status & status::DRIVER_OK != 0,
        }
    }

    fn enter_needs_reset(&mut self, why: DeviceError) -> Events {
        log::warn!(
            "{} (device {}): {:?}; DEVICE_NEEDS_RESET",
            self.name,
            self.device.device_id(),
            why
        );
        self.status |= status::DEVICE_NEEDS_RESET;
        // §2.1.2: with DRIVER_OK set the device must also notify a config change.
        Events {
            used_queues: 0,
            config: self.status & status::DRIVER_OK != 0,
        }
    }

    /// Runs `work` on the device with a queue context, then turns its outcome into
    /// events or DEVICE_NEEDS_RESET.
    fn run(
        &mut self,
        mem: &mut dyn GuestMemory,
        work: impl FnOnce(&mut D, &mut QueueContext) -> Result<(), DeviceError>,
    ) -> Events {
        let negotiated = self.negotiated;
        let mut qc = QueueContext::new(mem, &mut self.queues, negotiated, self.budget);
        let result = work(&mut self.device, &mut qc);
        let (used_mask, deferred, config_changed) = qc.outcome();
        let mut ev = Events::NONE;
        self.deferred |= deferred;
        if deferred != 0 {
            if let Some(w) = &self.work {
                w.raise();
            }
        }
        if let Err(e) = result {
            ev = ev.merge(self.enter_needs_reset(e));
        }
        if config_changed {
            self.config_generation = self.config_generation.wrapping_add(1);
            ev.config = true;
        }
        for i in 0..self.queues.len() {
            if used_mask & (1u64 << i) == 0 {
                continue;
            }
            match self.queues[i].should_interrupt(mem, negotiated) {
                Ok(true) => ev.used_queues |= 1u64 << i,
                Ok(false) => {}
                Err(e) => {
                    ev = ev.merge(self.enter_needs_reset(DeviceError::Queue(e)));
                    break;
                }
            }
        }
        ev
    }

    /// Device reset (the driver writes 0 to the status).
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
        self.deferred = 0;
    }

    /// VM reset: device reset, then ConfigGeneration 0 and the device's host-side
    /// buffers dropped.
    pub fn power_on_reset(&mut self) {
        self.reset_device();
        self.device.power_on_reset();
        self.config_generation = 0;
    }

    /// A driver write of the device status (not 0: the transport resets on 0
    /// through [`Self::reset_device`]).
    pub fn write_status(&mut self, mem: &mut dyn GuestMemory, v: u32) -> Events {
        if v & !status::DRIVER_BITS & !status::DEVICE_NEEDS_RESET != 0 {
            log::warn!("{}: reserved status bits in {v:#x} ignored", self.name);
        }
        let old = self.status & status::DRIVER_BITS;
        let mut new = v & status::DRIVER_BITS;
        if new & old != old {
            log::warn!(
                "{}: driver tried to clear status bits ({old:#x} -> {new:#x}); ignored",
                self.name
            );
            return Events::NONE;
        }
        let added = new & !old;
        if added & status::FEATURES_OK != 0 {
            let offered = self.offered_features();
            let unoffered = self.driver_features & !offered;
            if unoffered != 0 || self.driver_features & features::VERSION_1 == 0 {
                log::warn!(
                    "{}: FEATURES_OK refused: driver features {:#x}, offered {offered:#x}",
                    self.name,
                    self.driver_features
                );
                new &= !status::FEATURES_OK;
            } else {
                self.negotiated = self.driver_features;
            }
        }
        if added & status::DRIVER_OK != 0 && new & status::FEATURES_OK == 0 {
            log::warn!("{}: DRIVER_OK without FEATURES_OK ignored", self.name);
            new &= !status::DRIVER_OK;
        }
        self.status = (self.status & status::DEVICE_NEEDS_RESET) | new;
        let mut ev = Events::NONE;
        if new & !old & status::DRIVER_OK != 0 {
            self.device.activate(self.negotiated);
            // Buffers made available (and notified) before DRIVER_OK are served now.
            for q in 0..self.queues.len() as u16 {
                if self.live() && self.queues[usize::from(q)].ready {
                    ev = ev.merge(self.run(mem, |dev, qc| dev.process(q, qc)));
                }
            }
            if self.live() {
                ev = ev.merge(self.run(mem, |dev, qc| dev.poll(qc)));
            }
        }
        ev
    }
}

/// Saved state of a [`TransportCore`], for transports other than virtio-mmio
/// (whose `VMMI` blob keeps its own, older layout; both validate through
/// [`TransportCore::restorable`]).
///
/// Layout, little-endian: device id u32, queue count u32, queue_sel u32,
/// device_features_sel u32, driver_features_sel u32, driver_features u64,
/// negotiated u64, status u32, config_generation u32, deferred u64, the queues
/// (each as the queue saves itself), the device state (length u32, bytes), and
/// nothing after it.
impl<D: VirtioDevice> TransportCore<D> {
    /// Whether a restored status, feature set and deferred-queue mask are ones a
    /// driver could have produced against this device.
    pub(crate) fn restorable(&self, status_reg: u32, negotiated: u64, deferred: u64) -> bool {
        let offered = self.offered_features();
        let features_ok = status_reg & status::FEATURES_OK != 0;
        status_reg & !(status::DRIVER_BITS | status::DEVICE_NEEDS_RESET) == 0
            && (!features_ok
                || (negotiated & !offered == 0 && negotiated & features::VERSION_1 != 0))
            && (status_reg & status::DRIVER_OK == 0 || features_ok)
            && deferred.checked_shr(self.queues.len() as u32).unwrap_or(0) == 0
    }

    /// Appends the core's state to `out`.
    pub fn save_state(&self, out: &mut Vec<u8>) {
        let Self {
            device,
            queues,
            queue_sel,
            device_features_sel,
            driver_features_sel,
            driver_features,
            negotiated,
            status,
            config_generation,
            deferred,
            // Host scheduling policy, the hypervisor's signal and a log name.
            budget: _,
            work: _,
            name: _,
        } = self;
        for v in [
            device.device_id(),
            queues.len() as u32,
            *queue_sel,
            *device_features_sel,
            *driver_features_sel,
        ] {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.extend_from_slice(&driver_features.to_le_bytes());
        out.extend_from_slice(&negotiated.to_le_bytes());
        out.extend_from_slice(&status.to_le_bytes());
        out.extend_from_slice(&config_generation.to_le_bytes());
        out.extend_from_slice(&deferred.to_le_bytes());
        for q in queues {
            q.save(out);
        }
        let state = device.save_state();
        let len = u32::try_from(state.len()).expect("device state over 4 GiB");
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&state);
    }

    /// Brings back what [`Self::save_state`] wrote (the whole of `blob`),
    /// validating it as if the driver had written it; a refused blob changes
    /// nothing. Guest memory is not touched.
    pub fn restore_state(&mut self, blob: &[u8]) -> Result<(), vdev::RestoreError> {
        use vdev::RestoreError;
        let mut r = crate::save::Reader::new(blob);
        if r.u32()? != self.device.device_id() {
            return Err(RestoreError::WrongDevice);
        }
        if r.u32()? as usize != self.queues.len() {
            return Err(RestoreError::Malformed);
        }
        let queue_sel = r.u32()?;
        let device_features_sel = r.u32()?;
        let driver_features_sel = r.u32()?;
        let driver_features = r.u64()?;
        let negotiated = r.u64()?;
        let status_reg = r.u32()?;
        let config_generation = r.u32()?;
        let deferred = r.u64()?;
        if !self.restorable(status_reg, negotiated, deferred) {
            return Err(RestoreError::Malformed);
        }
        let mut queues = self.queues.clone();
        for q in &mut queues {
            q.restore(&mut r)?;
        }
        let len = r.u32()? as usize;
        let state = r.take(len)?;
        if !r.rest().is_empty() {
            return Err(RestoreError::Malformed);
        }
        // The device last, so a refused blob leaves the core as it was.
        self.device.restore_state(state)?;
        self.queues = queues;
        self.queue_sel = queue_sel;
        self.device_features_sel = device_features_sel;
        self.driver_features_sel = driver_features_sel;
        self.driver_features = driver_features;
        self.negotiated = negotiated;
        self.status = status_reg;
        self.config_generation = config_generation;
        self.deferred = deferred;
        if deferred != 0 {
            if let Some(w) = &self.work {
                w.raise();
            }
        }
        Ok(())
    }
}
