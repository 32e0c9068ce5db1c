//! virtio-console (virtio 1.2 §5.3) with a single port and no multiport: bytes the
//! guest sends on the transmitq go to a [`ConsoleOutput`] the hypervisor supplies;
//! bytes the host queues with [`Console::push_input`] fill the guest's receiveq
//! buffers (as soon as the guest provides them, or on [`crate::MmioTransport::poll`]).
//! VIRTIO_CONSOLE_F_EMERG_WRITE is offered: a config write to `emerg_wr` outputs one
//! byte.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec;
use alloc::vec::Vec;

use vdev::RestoreError;

use crate::defs::{console, device_id, limits};
use crate::device::{put_u32, read_config_bytes, DeviceError, QueueContext, VirtioDevice};

/// Where guest console output goes.
pub trait ConsoleOutput: Send {
    /// Takes bytes the guest wrote.
    fn write(&mut self, bytes: &[u8]);
}

impl<F: FnMut(&[u8]) + Send> ConsoleOutput for F {
    fn write(&mut self, bytes: &[u8]) {
        self(bytes)
    }
}

/// Most input bytes held for the guest before [`Console::push_input`] drops more.
pub const INPUT_CAPACITY: usize = 64 << 10;

/// A virtio console with one port.
pub struct Console {
    out: Box<dyn ConsoleOutput>,
    input: VecDeque<u8>,
    queue_sizes: [u16; 2],
    chunk: Vec<u8>,
}

impl Console {
    /// A console whose output goes to `out`.
    pub fn new(out: Box<dyn ConsoleOutput>) -> Self {
        Self {
            out,
            input: VecDeque::new(),
            queue_sizes: [limits::DEFAULT_QUEUE_SIZE; 2],
            chunk: vec![0; limits::CHUNK_BYTES],
        }
    }

    /// Queues `bytes` for the guest; returns how many were accepted (the rest would
    /// exceed [`INPUT_CAPACITY`]). Call [`crate::MmioTransport::poll`] afterwards to
    /// deliver them.
    pub fn push_input(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(INPUT_CAPACITY - self.input.len());
        if n < bytes.len() {
            log::warn!(
                "virtio-console: input buffer full, {} bytes dropped",
                bytes.len() - n
            );
        }
        self.input.extend(&bytes[..n]);
        n
    }

    /// Input bytes not yet delivered to the guest.
    pub fn pending_input(&self) -> usize {
        self.input.len()
    }

    fn fill_receiveq(&mut self, qc: &mut QueueContext) -> Result<(), DeviceError> {
        while !self.input.is_empty() {
            let Some(chain) = qc.pop(console::RECEIVEQ)? else {
                break;
            };
            let mut w = chain.writer();
            while !self.input.is_empty() && w.remaining() > 0 {
                let n = self
                    .input
                    .len()
                    .min(self.chunk.len())
                    .min(w.remaining() as usize);
                for (dst, src) in self.chunk[..n].iter_mut().zip(self.input.drain(..n)) {
                    *dst = src;
                }
                w.write(qc.mem(), &self.chunk[..n])?;
            }
            qc.push_used(console::RECEIVEQ, chain.head, w.written() as u32)?;
        }
        Ok(())
    }

    fn drain_transmitq(&mut self, qc: &mut QueueContext) -> Result<(), DeviceError> {
        while let Some(chain) = qc.pop(console::TRANSMITQ)? {
            let mut r = chain.reader();
            loop {
                let n = r.read(qc.mem(), &mut self.chunk)?;
                if n == 0 {
                    break;
                }
                self.out.write(&self.chunk[..n]);
            }
            qc.push_used(console::TRANSMITQ, chain.head, 0)?;
        }
        Ok(())
    }
}

impl VirtioDevice for Console {
    fn device_id(&self) -> u32 {
        device_id::CONSOLE
    }

    fn features(&self) -> u64 {
        console::F_EMERG_WRITE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.queue_sizes
    }

    fn read_config(&self, offset: usize, data: &mut [u8]) {
        let mut c = [0u8; console::CFG_SIZE];
        put_u32(&mut c, console::CFG_MAX_NR_PORTS, 1);
        read_config_bytes(&c, offset, data);
    }

    fn write_config(&mut self, offset: usize, data: &[u8]) {
        if offset == console::CFG_EMERG_WR && !data.is_empty() {
            self.out.write(&data[..1]);
        } else {
            log::warn!("virtio-console: config write at {offset:#x} ignored");
        }
    }

    fn process(&mut self, queue: u16, qc: &mut QueueContext) -> Result<(), DeviceError> {
        match queue {
            console::RECEIVEQ => self.fill_receiveq(qc),
            console::TRANSMITQ => self.drain_transmitq(qc),
            _ => Ok(()),
        }
    }

    fn poll(&mut self, qc: &mut QueueContext) -> Result<(), DeviceError> {
        self.fill_receiveq(qc)
    }

    fn wants_poll(&self) -> bool {
        !self.input.is_empty()
    }

    /// Saves the input not yet delivered.
    fn save_state(&self) -> Vec<u8> {
        let Self {
            // The host side of the output and configuration, not device state.
            out: _,
            input,
            queue_sizes: _,
            // Scratch buffer, empty between requests.
            chunk: _,
        } = self;
        input.iter().copied().collect()
    }

    fn restore_state(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        if blob.len() > INPUT_CAPACITY {
            return Err(RestoreError::Malformed);
        }
        self.input = blob.iter().copied().collect();
        Ok(())
    }

    fn reset(&mut self) {}

    /// Input queued for the previous guest is not delivered to the next one.
    fn power_on_reset(&mut self) {
        self.input.clear();
    }
}

#[cfg(test)]
#[path = "console_tests.rs"]
mod tests;
