//! virtio-rng (virtio 1.2 §5.4): one request queue whose device-writable buffers are
//! filled from an [`EntropySource`] the hypervisor supplies. A request gets at most
//! [`MAX_BYTES_PER_REQUEST`] bytes (the device may return fewer than asked); if the
//! source fails, the request completes with what was written so far.

use alloc::boxed::Box;
use alloc::vec;
use alloc::vec::Vec;

use crate::chain::WriteWithError;
use crate::defs::{device_id, limits};
use crate::device::{DeviceError, QueueContext, VirtioDevice};

/// The entropy source could not deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntropyError;

/// Where random bytes come from.
pub trait EntropySource: Send {
    /// Fills `buf` with random bytes.
    fn fill(&mut self, buf: &mut [u8]) -> Result<(), EntropyError>;
}

/// Most bytes one request is given.
pub const MAX_BYTES_PER_REQUEST: u64 = 64 << 10;

/// A virtio entropy device.
pub struct Rng {
    source: Box<dyn EntropySource>,
    queue_sizes: [u16; 1],
    chunk: Vec<u8>,
}

impl Rng {
    /// An entropy device fed by `source`.
    pub fn new(source: Box<dyn EntropySource>) -> Self {
        Self {
            source,
            queue_sizes: [limits::DEFAULT_QUEUE_SIZE],
            chunk: vec![0; limits::CHUNK_BYTES],
        }
    }
}

impl VirtioDevice for Rng {
    fn device_id(&self) -> u32 {
        device_id::ENTROPY
    }

    fn features(&self) -> u64 {
        0
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, _offset: usize, data: &mut [u8]) {
        data.fill(0);
    }

    fn process(&mut self, queue: u16, qc: &mut QueueContext) -> Result<(), DeviceError> {
        while let Some(chain) = qc.pop(queue)? {
            let mut w = chain.writer();
            let source = &mut self.source;
            match w.write_with(qc.mem(), MAX_BYTES_PER_REQUEST, &mut self.chunk, |b| {
                source.fill(b)
            }) {
                Ok(_) => {}
                Err(WriteWithError::Fill(EntropyError)) => {
                    log::warn!("virtio-rng: entropy source failed");
                }
                Err(WriteWithError::Mem(e)) => return Err(e.into()),
            }
            qc.push_used(queue, chain.head, w.written() as u32)?;
        }
        Ok(())
    }

    fn reset(&mut self) {}

    /// An entropy device has no state of its own.
    fn save_state(&self) -> Vec<u8> {
        let Self {
            // The host's entropy source and configuration, not device state.
            source: _,
            queue_sizes: _,
            // Scratch buffer, empty between requests.
            chunk: _,
        } = self;
        Vec::new()
    }

    fn restore_state(&mut self, blob: &[u8]) -> Result<(), vdev::RestoreError> {
        crate::device::restore_no_state(blob)
    }
}

#[cfg(test)]
#[path = "rng_tests.rs"]
mod tests;
