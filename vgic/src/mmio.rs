//! The vGIC on the MMIO bus: [`SharedVgic`] (an `Arc<TicketMutex<Vgic>>` handle: a fair
//! lock, since every vCPU takes it on every interrupt change) and
//! its two bus adapters, [`GicdMmio`] for the distributor frame and [`GicrMmio`] for
//! the redistributor region, plus `vdev::InterruptSink` so device models can drive
//! SPI lines.

use alloc::sync::Arc;

use arch::relax::TicketMutex as Mutex;
use spin::mutex::TicketMutexGuard;
use vdev::{AccessSize, InterruptSink, MmioContext, MmioDevice, MmioError};

use crate::config::{ConfigError, VgicConfig};
use crate::vgic::Vgic;

/// A handle on one VM's vGIC, cheap to clone, `Send + Sync`. `el2` keeps one to call
/// `flush`/`sync`/`send_sgi`/`set_ppi_level` through [`SharedVgic::lock`], and puts
/// [`SharedVgic::gicd`] and [`SharedVgic::gicr`] on the VM's `vdev::MmioBus`.
#[derive(Clone)]
pub struct SharedVgic(Arc<Mutex<Vgic>>);

impl SharedVgic {
    /// Builds a vGIC from `cfg`.
    pub fn new(cfg: VgicConfig) -> Result<Self, ConfigError> {
        Ok(Self::from_vgic(Vgic::new(cfg)?))
    }
    /// Wraps an existing model.
    pub fn from_vgic(v: Vgic) -> Self {
        Self(Arc::new(Mutex::new(v)))
    }
    /// Locks the model. Never hold this across a guest entry.
    pub fn lock(&self) -> TicketMutexGuard<'_, Vgic> {
        self.0.lock()
    }
    /// The distributor adapter (a 64 KiB frame, `regs::gicd::FRAME_SIZE`).
    pub fn gicd(&self) -> GicdMmio {
        GicdMmio(self.clone())
    }
    /// The redistributor adapter (`Vgic::gicr_region_size` bytes).
    pub fn gicr(&self) -> GicrMmio {
        GicrMmio(self.clone())
    }
}

/// The distributor frame on the MMIO bus.
pub struct GicdMmio(SharedVgic);

/// The redistributor region (every vCPU's RD_base + SGI_base) on the MMIO bus.
pub struct GicrMmio(SharedVgic);

impl MmioDevice for GicdMmio {
    fn read(
        &mut self,
        _: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        self.0.lock().gicd_read(offset, size)
    }
    fn write(
        &mut self,
        _: &mut MmioContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        self.0.lock().gicd_write(offset, size, value)
    }
    /// VM reset: the whole vGIC model returns to reset (the distributor and every
    /// redistributor reset together; [`Vgic::reset`] is idempotent). The vGIC drives
    /// no line of its own.
    fn reset(&mut self, _irq: &mut dyn InterruptSink) {
        self.0.lock().reset();
    }
}

impl MmioDevice for GicrMmio {
    fn read(
        &mut self,
        _: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        self.0.lock().gicr_read(offset, size)
    }
    fn write(
        &mut self,
        _: &mut MmioContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        self.0.lock().gicr_write(offset, size, value)
    }
    /// VM reset: the whole vGIC model returns to reset (the distributor and every
    /// redistributor reset together; [`Vgic::reset`] is idempotent). The vGIC drives
    /// no line of its own.
    fn reset(&mut self, _irq: &mut dyn InterruptSink) {
        self.0.lock().reset();
    }
}

/// Device models drive SPIs; anything else is refused with a log line.
impl InterruptSink for Vgic {
    fn set_level(&mut self, intid: u32, level: bool) {
        if let Err(e) = Vgic::set_level(self, intid, level) {
            log::warn!("vgic: device line {intid} <- {level} refused: {e:?}");
        }
    }
    fn set_lpi_pending(&mut self, intid: u32, vcpu: usize) {
        if let Err(e) = Vgic::set_lpi_pending(self, intid, vcpu) {
            log::warn!("vgic: LPI {intid} for vCPU {vcpu} dropped: {e:?}");
        }
    }
}

impl InterruptSink for SharedVgic {
    fn set_level(&mut self, intid: u32, level: bool) {
        InterruptSink::set_level(&mut *self.lock(), intid, level);
    }
    fn set_lpi_pending(&mut self, intid: u32, vcpu: usize) {
        InterruptSink::set_lpi_pending(&mut *self.lock(), intid, vcpu);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::boxed::Box;
    use vdev::{MmioBus, NullInterrupts, VecMemory};

    fn assert_send<T: Send + 'static>() {}

    #[test]
    fn adapters_sit_on_a_bus_and_share_state() {
        assert_send::<GicdMmio>();
        assert_send::<GicrMmio>();
        let vgic = SharedVgic::new(VgicConfig::simple(2, 64)).unwrap();
        let mut bus = MmioBus::new();
        bus.insert(
            "gicd",
            0x0800_0000,
            crate::regs::gicd::FRAME_SIZE,
            Box::new(vgic.gicd()),
        )
        .unwrap();
        let size = vgic.lock().gicr_region_size();
        assert_eq!(size, 0x4_0000);
        bus.insert("gicr", 0x080A_0000, size, Box::new(vgic.gicr()))
            .unwrap();

        let mut mem = VecMemory::new(0, 0);
        let mut irq = NullInterrupts;
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut irq,
        };
        // GICD_ISENABLER1 through the bus, seen by the shared model.
        let slot = bus.find(0x0800_0104).unwrap();
        slot.lock()
            .write(&mut ctx, slot.offset, AccessSize::Word, 1 << 8)
            .unwrap();
        assert_eq!(vgic.lock().gicd_read(0x104, AccessSize::Word), Ok(1 << 8));
        // GICR1_TYPER through the bus: Processor_Number 1 and Last.
        let slot = bus.find(0x080C_0008).unwrap();
        let typer = slot
            .lock()
            .read(&mut ctx, slot.offset, AccessSize::Double)
            .unwrap();
        assert_eq!(typer >> 8 & 0xFFFF, 1);
        assert_ne!(typer & crate::regs::gicr_typer::LAST, 0);
    }

    #[test]
    fn interrupt_sink_drives_spis_only() {
        let mut vgic = SharedVgic::new(VgicConfig::simple(1, 32)).unwrap();
        InterruptSink::set_level(&mut vgic, 33, true);
        InterruptSink::set_level(&mut vgic, 27, true); // a PPI: refused
        let g = vgic.lock();
        assert_eq!(g.gicd_read(0x204, AccessSize::Word), Ok(1 << 1));
        assert!(!g.irq(0, 27).unwrap().pending());
    }
}
