//! The seam between a transport and a virtio device type: the [`VirtioDevice`] trait
//! each device implements, the [`QueueContext`] through which a device reaches its
//! queues and guest memory while it works, and [`DeviceError`], whose every variant
//! puts the device into DEVICE_NEEDS_RESET.

use alloc::vec::Vec;
use vdev::{GuestMemory, MemError, RestoreError};

use crate::chain::DescChain;
use crate::defs::limits;
use crate::queue::{Queue, QueueError};

/// Most queues one device may have (the context tracks them in a 64-bit mask).
pub const MAX_QUEUES: usize = 64;

/// A request the device cannot even answer: the chain lacks the parts the device
/// type requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestError {
    /// The device-readable part is shorter than the request header.
    MissingHeader,
    /// There is no device-writable byte for the status.
    MissingStatus,
    /// The driver made a chain available again while the device still held it.
    HeadInFlight,
}

/// Why a device stopped: the driver broke the protocol. The transport answers with
/// DEVICE_NEEDS_RESET and processes nothing more until reset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceError {
    /// A malformed queue or descriptor chain.
    Queue(QueueError),
    /// A well-formed chain that does not hold a request of this device type.
    Request(RequestError),
}

impl From<QueueError> for DeviceError {
    fn from(e: QueueError) -> Self {
        DeviceError::Queue(e)
    }
}

impl From<MemError> for DeviceError {
    fn from(e: MemError) -> Self {
        DeviceError::Queue(QueueError::Memory(e))
    }
}

impl From<RequestError> for DeviceError {
    fn from(e: RequestError) -> Self {
        DeviceError::Request(e)
    }
}

/// How much work one transport call may do before it defers the rest to
/// [`crate::MmioTransport::poll`], so a guest that keeps refilling a ring from another
/// vCPU cannot hold the hypervisor in one exit forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunBudget {
    /// Most chains popped in one call.
    pub chains: u32,
    /// Most chain bytes (readable + writable) popped in one call; at least one chain
    /// is always popped.
    pub bytes: u64,
}

impl Default for RunBudget {
    fn default() -> Self {
        Self {
            chains: limits::MAX_CHAINS_PER_RUN,
            bytes: limits::MAX_BYTES_PER_RUN,
        }
    }
}

/// What a device reaches while it processes its queues.
pub struct QueueContext<'a> {
    mem: &'a mut dyn GuestMemory,
    queues: &'a mut [Queue],
    negotiated: u64,
    used_mask: u64,
    deferred_mask: u64,
    config_changed: bool,
    budget: RunBudget,
    chains_popped: u32,
    bytes_popped: u64,
}

impl<'a> QueueContext<'a> {
    /// A context over `queues` in `mem` with the `negotiated` feature set, allowed
    /// `budget` of work.
    pub fn new(
        mem: &'a mut dyn GuestMemory,
        queues: &'a mut [Queue],
        negotiated: u64,
        budget: RunBudget,
    ) -> Self {
        Self {
            mem,
            queues,
            negotiated,
            used_mask: 0,
            deferred_mask: 0,
            config_changed: false,
            budget,
            chains_popped: 0,
            bytes_popped: 0,
        }
    }

    fn bit(q: u16) -> u64 {
        1u64 << (usize::from(q) % MAX_QUEUES)
    }

    /// Guest memory.
    pub fn mem(&mut self) -> &mut dyn GuestMemory {
        self.mem
    }

    /// The features the driver accepted.
    pub fn negotiated(&self) -> u64 {
        self.negotiated
    }

    /// Whether queue `q` exists and the driver made it ready.
    pub fn is_ready(&self, q: u16) -> bool {
        self.queues.get(usize::from(q)).is_some_and(|q| q.ready)
    }

    /// Chains waiting in queue `q` (0 if the queue is not ready).
    pub fn pending(&self, q: u16) -> Result<u16, DeviceError> {
        match self.queues.get(usize::from(q)) {
            Some(queue) if queue.ready => Ok(queue.pending(self.mem)?),
            _ => Ok(0),
        }
    }

    /// Takes the next validated chain from queue `q`; `None` if empty, not ready, or
    /// this call's [`RunBudget`] is spent (the queue is then deferred to the next
    /// [`crate::MmioTransport::poll`]).
    pub fn pop(&mut self, q: u16) -> Result<Option<DescChain>, DeviceError> {
        let mut chain = DescChain::default();
        Ok(self.pop_into(q, &mut chain)?.then_some(chain))
    }

    /// [`Self::pop`] into `chain`, reusing its segment lists' memory (a device
    /// that keeps one chain for its pops allocates nothing per chain); `false`
    /// where [`Self::pop`] gives `None`.
    pub fn pop_into(&mut self, q: u16, chain: &mut DescChain) -> Result<bool, DeviceError> {
        let Some(queue) = self.queues.get_mut(usize::from(q)).filter(|q| q.ready) else {
            return Ok(false);
        };
        let spent = self.chains_popped >= self.budget.chains
            || (self.chains_popped > 0 && self.bytes_popped >= self.budget.bytes);
        if spent {
            if queue.pending(self.mem)? > 0 {
                self.deferred_mask |= Self::bit(q);
            }
            return Ok(false);
        }
        let popped = queue.pop_into(self.mem, self.negotiated, chain)?;
        if popped {
            self.chains_popped += 1;
            self.bytes_popped += chain.readable_len() + chain.writable_len();
        }
        Ok(popped)
    }

    /// Returns chain `head` on queue `q` with `len` bytes written into it.
    pub fn push_used(&mut self, q: u16, head: u16, len: u32) -> Result<(), DeviceError> {
        let Some(queue) = self.queues.get_mut(usize::from(q)).filter(|q| q.ready) else {
            return Ok(());
        };
        queue.push_used(self.mem, head, len)?;
        self.used_mask |= Self::bit(q);
        Ok(())
    }

    /// Tells the transport that the device configuration changed.
    pub fn signal_config_change(&mut self) {
        self.config_changed = true;
    }

    /// What the call left behind: queues that got used entries, queues whose work was
    /// deferred (a bit per queue each), and whether the config changed.
    pub(crate) fn outcome(&self) -> (u64, u64, bool) {
        (self.used_mask, self.deferred_mask, self.config_changed)
    }
}

/// One virtio device type, independent of the transport that carries it.
pub trait VirtioDevice: Send {
    /// The virtio device ID (virtio 1.2 §5).
    fn device_id(&self) -> u32;
    /// Device-type feature bits offered; the transport adds its own
    /// ([`crate::defs::features::TRANSPORT`]).
    fn features(&self) -> u64;
    /// QueueNumMax of each queue; the slice's length is the number of queues
    /// (at most [`MAX_QUEUES`]).
    fn queue_max_sizes(&self) -> &[u16];
    /// Reads `data.len()` bytes of device configuration at `offset`. Bytes past the
    /// end of the configuration read as zero.
    fn read_config(&self, offset: usize, data: &mut [u8]);
    /// A driver write to the device configuration. Ignored (with a log line) unless the
    /// device has writable fields.
    fn write_config(&mut self, offset: usize, data: &[u8]) {
        log::warn!(
            "virtio: write of {} bytes to read-only config at {:#x} ignored",
            data.len(),
            offset
        );
    }
    /// The driver set DRIVER_OK with `negotiated` features.
    fn activate(&mut self, _negotiated: u64) {}
    /// The driver notified queue `queue`: consume what it made available.
    fn process(&mut self, queue: u16, qc: &mut QueueContext) -> Result<(), DeviceError>;
    /// Host-side work is pending (e.g. console input): complete what can be completed.
    fn poll(&mut self, _qc: &mut QueueContext) -> Result<(), DeviceError> {
        Ok(())
    }
    /// Whether the device holds host-side work that [`Self::poll`] would deliver.
    fn wants_poll(&self) -> bool {
        false
    }
    /// Whether the device holds work that [`Self::poll`] completes for sure, without
    /// waiting for the driver (e.g. backend completions): the hypervisor resumes such
    /// devices outside guest accesses. Host input that needs driver buffers is not.
    fn has_ready_work(&self) -> bool {
        false
    }
    /// The signal to raise when work for [`Self::poll`] arrives from outside any
    /// call into the device (a backend completing a request on an interrupt).
    fn connect_work_signal(&mut self, _signal: &vdev::WorkSignal) {}
    /// Back to the state after device reset (host-side buffers may be kept).
    fn reset(&mut self);
    /// Back to the power-on state (VM reset), after [`Self::reset`]: host-side
    /// buffers are dropped too. Devices without such buffers have nothing more to do.
    fn power_on_reset(&mut self) {}
    /// Guest requests started and not completed (a suspend or snapshot waits
    /// until there are none); devices that complete every request within
    /// [`Self::process`] have none.
    fn requests_in_flight(&self) -> usize {
        0
    }
    /// Device-type state to keep across save/restore (the transport saves queues and
    /// registers itself). Every device writes it out by destructuring itself whole,
    /// so a field added later is a compile error until it is saved or said not to be
    /// state; a device with no state returns an empty blob.
    fn save_state(&self) -> Vec<u8>;
    /// Brings back what [`Self::save_state`] produced, validating it; a refused blob
    /// changes nothing.
    fn restore_state(&mut self, blob: &[u8]) -> Result<(), RestoreError>;
}

/// The [`VirtioDevice::restore_state`] of a device with no state: only an empty
/// blob is accepted.
pub fn restore_no_state(blob: &[u8]) -> Result<(), RestoreError> {
    if blob.is_empty() {
        Ok(())
    } else {
        Err(RestoreError::Malformed)
    }
}

/// Copies `data.len()` bytes of `config` at `offset` into `data`, zero past its end:
/// the usual body of [`VirtioDevice::read_config`].
pub fn read_config_bytes(config: &[u8], offset: usize, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = offset
            .checked_add(i)
            .and_then(|at| config.get(at))
            .copied()
            .unwrap_or(0);
    }
}

/// Puts a little-endian `u16` into `buf` at `at`.
pub(crate) fn put_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

/// Puts a little-endian `u32` into `buf` at `at`.
pub(crate) fn put_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Puts a little-endian `u64` into `buf` at `at`.
pub(crate) fn put_u64(buf: &mut [u8], at: usize, v: u64) {
    buf[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
