//! A device model shared between the MMIO bus and the code that feeds it from
//! outside guest accesses (host input arriving for a UART, a backend completing).

use alloc::sync::Arc;

use spin::Mutex;

use crate::mmio::{AccessSize, InterruptSink, MmioContext, MmioDevice, MmioError};
use crate::work::WorkSignal;

/// An `Arc<Mutex<T>>` that forwards MMIO accesses to `T`. Clone it: one clone goes on
/// the bus, the other stays with whoever needs to reach the device directly.
pub struct Shared<T>(pub Arc<Mutex<T>>);

impl<T> Shared<T> {
    pub fn new(device: T) -> Self {
        Shared(Arc::new(Mutex::new(device)))
    }
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Shared(self.0.clone())
    }
}

impl<T: MmioDevice> MmioDevice for Shared<T> {
    fn read(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        self.0.lock().read(ctx, offset, size)
    }
    fn write(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        self.0.lock().write(ctx, offset, size, value)
    }
    fn reset(&mut self, irq: &mut dyn InterruptSink) {
        self.0.lock().reset(irq)
    }
    fn defers_work(&self) -> bool {
        self.0.lock().defers_work()
    }
    fn has_deferred_work(&self) -> bool {
        self.0.lock().has_deferred_work()
    }
    fn resume(&mut self, ctx: &mut MmioContext) {
        self.0.lock().resume(ctx)
    }
    fn connect_work_signal(&mut self, signal: &WorkSignal) {
        self.0.lock().connect_work_signal(signal)
    }
}
