//! The device side: what a PCI function model implements ([`PciFunction`]) and
//! what it may reach while it runs ([`FunctionContext`]): guest memory only
//! through its Bus Master Enable ([`BusMaster`]), interrupts only through its
//! MSI-X table or its INTx pin ([`FunctionIrq`]).

use alloc::vec::Vec;

use vdev::{AccessSize, GuestMemory, MemError, MmioError, RestoreError};

use crate::defs::{IntxPin, BAR_COUNT};

/// Identity registers of a function's configuration header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identity {
    pub vendor_id: u16,
    pub device_id: u16,
    pub revision_id: u8,
    /// Base class, sub-class, programming interface ([`crate::defs::class`]).
    pub class: [u8; 3],
    pub subsystem_vendor_id: u16,
    pub subsystem_id: u16,
}

/// A memory BAR a function implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarSpec {
    /// Size in bytes: a power of two, at least 4 KiB (so a BAR never shares a page
    /// of the stage-2 map with another).
    pub size: u64,
    /// A 64-bit BAR (it takes this BAR's slot and the next).
    pub is_64bit: bool,
    pub prefetchable: bool,
}

/// Smallest BAR the root complex accepts.
pub const MIN_BAR_SIZE: u64 = 0x1000;

/// Where a function's MSI-X table and Pending Bit Array live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsixSpec {
    /// Number of vectors, 1..=2048.
    pub vectors: u16,
    /// BAR and byte offset (8-byte aligned) of the table.
    pub table_bar: u8,
    pub table_offset: u64,
    /// BAR and byte offset (8-byte aligned) of the PBA.
    pub pba_bar: u8,
    pub pba_offset: u64,
}

/// A function's MSI capability (PCI 3.0 §6.8.1), which it has besides MSI-X for
/// hosts that use only MSI: a 64-bit Message Address, no per-vector masking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsiSpec {
    /// Multiple Message Capable: log2 of the vectors asked for, 0..=5.
    pub vectors_log2: u8,
}

/// A window in configuration space onto the function's BARs (virtio 1.2
/// §4.1.4.9, VIRTIO_PCI_CAP_PCI_CFG): byte offsets, inside vendor-specific
/// capability number `cap` of [`PciFunction::vendor_capabilities`], of its BAR
/// (1 byte), offset and length (4 bytes each) and data (4 bytes) fields, which
/// software may write. Reading the data field reads `length` bytes at `offset`
/// of BAR `bar` into it; writing it writes its first `length` bytes there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarWindow {
    pub cap: usize,
    pub bar: usize,
    pub offset: usize,
    pub length: usize,
    pub data: usize,
}

/// Everything the root complex asks a function once, when it is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionSpec {
    pub identity: Identity,
    /// Memory BARs by index; the slot after a 64-bit BAR must be `None`.
    pub bars: [Option<BarSpec>; BAR_COUNT],
    pub msix: Option<MsixSpec>,
    /// The legacy interrupt pin, if the function uses one.
    pub intx: Option<IntxPin>,
    /// Whether the function has the PCI Express Capability (a PCIe function does;
    /// the host bridge does not).
    pub pcie: bool,
}

/// Interrupts a function raises.
pub trait FunctionIrq {
    /// Whether MSI-X is enabled (the function then uses [`Self::msix`], not INTx).
    fn msix_enabled(&self) -> bool;
    /// Signals MSI-X vector `vector`: sent at once, or left pending while the
    /// vector or the function is masked (or bus mastering is off), or dropped when
    /// MSI-X is disabled or the vector does not exist. With MSI enabled instead
    /// (a function with an MSI capability, [`PciFunction::msi`]), vector `vector`
    /// is MSI message `vector` modulo the vectors software allocated (the function
    /// sets only the low Multiple Message Enable bits of the data), sent at once
    /// when bus mastering is on and dropped (logged) when it is off.
    fn msix(&mut self, vector: u16);
    /// Drives the function's INTx pin (level-sensitive; ignored without a pin).
    fn set_intx(&mut self, level: bool);
}

/// What a function may reach while it handles an access or does deferred work.
pub struct FunctionContext<'a> {
    /// The index of the vCPU that made the access (0 for deferred work).
    pub vcpu: usize,
    /// Guest memory as the function's DMA sees it: refused entirely while Bus
    /// Master Enable is clear.
    pub mem: &'a mut dyn GuestMemory,
    pub irq: &'a mut dyn FunctionIrq,
}

/// A PCI function model. The root complex owns its configuration space (and its
/// MSI-X table and PBA); the model sees only accesses to its BARs' other bytes.
pub trait PciFunction {
    /// The function's identity, BARs, MSI-X layout and pin (asked once).
    fn spec(&self) -> FunctionSpec;
    /// A guest read of `size` bytes at `offset` in BAR `bar`.
    fn bar_read(
        &mut self,
        ctx: &mut FunctionContext,
        bar: u8,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError>;
    /// A guest write.
    fn bar_write(
        &mut self,
        ctx: &mut FunctionContext,
        bar: u8,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError>;
    /// Conventional reset (VM reset): device state back to its reset values, work
    /// in flight dropped. The root complex resets the configuration space.
    fn reset(&mut self);
    /// The function's own state (what the root complex does not hold: not its
    /// configuration space or MSI-X table), as a `vdev::SaveRestore` blob of its
    /// own or empty for a function with none. Taken with nothing in flight.
    fn save(&self) -> Vec<u8>;
    /// Puts back what [`Self::save`] gave, validating it as guest input; on
    /// `Err` the function is unchanged.
    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError>;
    /// Guest requests started and not yet completed (a suspend or snapshot waits
    /// until there are none).
    fn in_flight(&self) -> usize {
        0
    }
    /// Whether the function holds work to do outside a guest access (a backend
    /// completed); the root complex then calls [`Self::poll`].
    fn has_work(&self) -> bool {
        false
    }
    /// Does the work [`Self::has_work`] announced.
    fn poll(&mut self, _ctx: &mut FunctionContext) {}
    /// Whether the function ever defers work (answered once).
    fn defers_work(&self) -> bool {
        false
    }
    /// Gives the function the signal to raise when work arrives.
    fn connect_work_signal(&mut self, _signal: &vdev::WorkSignal) {}
    /// The function's MSI capability, if it has one besides MSI-X (asked once,
    /// at attach).
    fn msi(&self) -> Option<MsiSpec> {
        None
    }
    /// The configuration-space window onto its BARs, if it has one (asked once,
    /// at attach).
    fn bar_window(&self) -> Option<BarWindow> {
        None
    }
    /// Whether a window access of `len` bytes at `offset` of BAR `bar` may go to
    /// [`Self::bar_read`]/[`Self::bar_write`] (the root complex has already
    /// checked the BAR exists, `len` is 1, 2 or 4, `offset` is aligned to it, the
    /// bytes lie inside the BAR and not in the MSI-X table or PBA).
    fn bar_window_allows(&self, bar: u8, offset: u64, len: u64) -> bool {
        let _ = (bar, offset, len);
        false
    }
    /// Read-only vendor-specific capabilities for the configuration space (asked
    /// once, at attach; see [`crate::ConfigSpace::with_vendor_caps`]).
    fn vendor_capabilities(&self) -> alloc::vec::Vec<alloc::vec::Vec<u8>> {
        alloc::vec::Vec::new()
    }
}

/// Guest memory behind a function's Bus Master Enable: with the bit clear every
/// access is refused as if no memory answered (the function sees no RAM at all),
/// so a device model cannot DMA without the guest's permission.
pub struct BusMaster<'a> {
    pub mem: &'a mut dyn GuestMemory,
    pub enabled: bool,
}

impl GuestMemory for BusMaster<'_> {
    fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if !self.enabled {
            return Err(MemError::OutOfRange { gpa });
        }
        self.mem.read(gpa, buf)
    }
    fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        if !self.enabled {
            return Err(MemError::OutOfRange { gpa });
        }
        self.mem.write(gpa, data)
    }
    fn dma_address(&mut self, gpa: u64, len: usize) -> Result<Option<u64>, MemError> {
        if !self.enabled {
            return Err(MemError::OutOfRange { gpa });
        }
        self.mem.dma_address(gpa, len)
    }
}
