//! The trapped-MMIO interface between the hypervisor and device models.

use crate::memory::GuestMemory;
use crate::work::WorkSignal;

/// Width of one guest MMIO access, as decoded from the data-abort syndrome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessSize {
    Byte,
    Half,
    Word,
    Double,
}

impl AccessSize {
    /// Number of bytes accessed.
    pub const fn bytes(self) -> u64 {
        match self {
            AccessSize::Byte => 1,
            AccessSize::Half => 2,
            AccessSize::Word => 4,
            AccessSize::Double => 8,
        }
    }
    /// The size for `log2(bytes)`, as in ESR_EL2.ISS.SAS.
    pub const fn from_log2(sas: u8) -> Option<Self> {
        match sas {
            0 => Some(AccessSize::Byte),
            1 => Some(AccessSize::Half),
            2 => Some(AccessSize::Word),
            3 => Some(AccessSize::Double),
            _ => None,
        }
    }
    /// Mask of the bits an access of this size carries.
    pub const fn mask(self) -> u64 {
        match self {
            AccessSize::Double => u64::MAX,
            s => (1u64 << (s.bytes() * 8)) - 1,
        }
    }
}

/// Why a device refused an access. The hypervisor answers these with an external
/// abort injected into the guest and a log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioError {
    /// The device does not support an access of this width at this offset.
    UnsupportedSize { offset: u64, size: AccessSize },
    /// The access is not naturally aligned and the device requires it.
    Unaligned { offset: u64 },
    /// No register answers at this offset and the device's architecture calls for an
    /// abort rather than RAZ/WI.
    NoRegister { offset: u64 },
}

/// Where a device raises interrupts: the virtual interrupt controller of its VM.
pub trait InterruptSink {
    /// Drives the line of interrupt `intid` to `level` (level-sensitive semantics; an
    /// edge-triggered interrupt is a rising edge).
    fn set_level(&mut self, intid: u32, level: bool);

    /// Makes LPI `intid` pending on vCPU `vcpu`'s redistributor (a message an ITS
    /// translated). Sinks without LPIs drop it.
    fn set_lpi_pending(&mut self, intid: u32, vcpu: usize) {
        let _ = (intid, vcpu);
    }
}

/// An interrupt sink that drops everything, for devices without interrupts.
pub struct NullInterrupts;

impl InterruptSink for NullInterrupts {
    fn set_level(&mut self, _intid: u32, _level: bool) {}
}

/// What a device model may reach while it handles one access.
pub struct MmioContext<'a> {
    /// The index of the vCPU that made the access.
    pub vcpu: usize,
    /// The guest's RAM.
    pub mem: &'a mut dyn GuestMemory,
    /// The guest's interrupt controller.
    pub irq: &'a mut dyn InterruptSink,
}

/// A device model behind a range of guest physical addresses: a plain state machine
/// that the hypervisor calls for every trapped access. `offset` is relative to the
/// start of the device's range. Values are zero-extended to 64 bits on read and
/// truncated to `size` on write.
///
/// Every device implements [`MmioDevice::reset`] (there is no default: a device
/// that forgot it would carry its state across a VM reset). Devices that defer work
/// override [`MmioDevice::has_deferred_work`], [`MmioDevice::resume`] and
/// [`MmioDevice::connect_work_signal`].
pub trait MmioDevice {
    /// Handles a guest read.
    fn read(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError>;
    /// Handles a guest write.
    fn write(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError>;
    /// Platform (VM) reset: every register back to its reset value, in-flight work
    /// dropped, and every interrupt line the device drives lowered through `irq`.
    /// Host-side connections (where output goes, backends) are kept.
    fn reset(&mut self, irq: &mut dyn InterruptSink);
    /// Whether the device can ever defer work (answered once, when it joins a bus):
    /// only such devices are looked at, and locked, by
    /// [`crate::MmioBus::resume_deferred`], so a vCPU resuming a disk never takes
    /// the lock of a device another vCPU is using (its GIC redistributor). Devices
    /// that never defer work: `false`.
    fn defers_work(&self) -> bool {
        false
    }
    /// Whether the device holds work it deferred (a per-access budget ran out) that
    /// [`MmioDevice::resume`] would do. Devices that never defer work: `false`.
    fn has_deferred_work(&self) -> bool {
        false
    }
    /// Does deferred work without a guest access, bounded as one access is; what is
    /// still left is reported by [`MmioDevice::has_deferred_work`]. Devices that
    /// never defer work have nothing to do.
    fn resume(&mut self, _ctx: &mut MmioContext) {}
    /// Gives the device the signal to raise whenever it defers work. Devices that
    /// never defer work have no use for it.
    fn connect_work_signal(&mut self, _signal: &WorkSignal) {}
}
