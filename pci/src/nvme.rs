//! The `nvme` crate's controller as a PCI function: BAR0 (64-bit) holds the
//! controller registers and doorbells, then the MSI-X table and PBA; one MSI-X
//! vector per completion queue; DMA through the function's Bus Master Enable (with
//! it clear the controller sees no memory: enabling it fails with CSTS.CFS, and
//! queues it already had become unreachable). No INTx pin: PCI Express functions
//! that interrupt use MSI or MSI-X; every NVMe driver we know enables MSI-X, and
//! the function has MSI too (a vector per completion queue, at most 32) for a
//! host that uses only MSI.

use nvme::{Config, Controller, Interrupts, BAR0_SIZE};
use vdev::{AccessSize, AsyncBlock, MmioError, SaveRestore, WorkSignal};

use crate::defs::{class, msi_cap, msix_cap, BAR_COUNT};
use crate::function::{
    BarSpec, FunctionContext, FunctionIrq, FunctionSpec, Identity, MsiSpec, MsixSpec, PciFunction,
};

/// Where the MSI-X table starts in BAR0 (after the registers and doorbells).
pub const MSIX_TABLE_OFFSET: u64 = BAR0_SIZE;
/// Room for the table: 512 vectors.
const MSIX_TABLE_ROOM: u64 = 512 * msix_cap::ENTRY_SIZE;
/// Where the PBA starts in BAR0.
pub const MSIX_PBA_OFFSET: u64 = MSIX_TABLE_OFFSET + MSIX_TABLE_ROOM;
/// BAR0's size: registers, table, PBA, rounded to a power of two.
pub const NVME_BAR0_SIZE: u64 = 2 * BAR0_SIZE;
/// Most vectors the layout has room for.
pub const MAX_VECTORS: u16 = (MSIX_TABLE_ROOM / msix_cap::ENTRY_SIZE) as u16;

/// The NVMe controller behind a PCI function.
pub struct NvmeFunction<B: AsyncBlock> {
    ctrl: Controller<B>,
    ids: Identity,
}

/// Routes the controller's vector signals to MSI-X.
struct Msix<'a>(&'a mut dyn FunctionIrq);

impl Interrupts for Msix<'_> {
    fn signal(&mut self, vector: u16) {
        self.0.msix(vector);
    }
}

impl<B: AsyncBlock> NvmeFunction<B> {
    /// A function with the PCI identity `vendor_id`/`device_id` (drivers bind by
    /// class code: mass storage, NVM, NVM Express) around a controller over
    /// `backend`. `cfg.vectors` is capped at [`MAX_VECTORS`].
    pub fn new(backend: B, mut cfg: Config, vendor_id: u16, device_id: u16) -> Self {
        cfg.vectors = cfg.vectors.clamp(1, MAX_VECTORS);
        let ids = Identity {
            vendor_id,
            device_id,
            revision_id: 0,
            class: class::NVME,
            subsystem_vendor_id: cfg.subsystem_vendor_id,
            subsystem_id: 0,
        };
        NvmeFunction {
            ctrl: Controller::new(backend, cfg),
            ids,
        }
    }

    pub fn controller(&self) -> &Controller<B> {
        &self.ctrl
    }

    pub fn controller_mut(&mut self) -> &mut Controller<B> {
        &mut self.ctrl
    }
}

impl<B: AsyncBlock> PciFunction for NvmeFunction<B> {
    fn spec(&self) -> FunctionSpec {
        let mut bars = [None; BAR_COUNT];
        bars[0] = Some(BarSpec {
            size: NVME_BAR0_SIZE,
            is_64bit: true,
            prefetchable: false,
        });
        FunctionSpec {
            identity: self.ids,
            bars,
            msix: Some(MsixSpec {
                vectors: self.ctrl.config().vectors,
                table_bar: 0,
                table_offset: MSIX_TABLE_OFFSET,
                pba_bar: 0,
                pba_offset: MSIX_PBA_OFFSET,
            }),
            intx: None,
            pcie: true,
        }
    }

    /// MSI besides MSI-X, asking for a vector per completion queue (at most 32):
    /// with fewer granted, queues share vectors (the function sets only the
    /// granted low bits of the message data).
    fn msi(&self) -> Option<MsiSpec> {
        let vectors = u32::from(self.ctrl.config().vectors);
        let log2 = vectors.next_power_of_two().trailing_zeros() as u8;
        Some(MsiSpec {
            vectors_log2: log2.min(msi_cap::MAX_LOG2_VECTORS),
        })
    }

    fn bar_read(
        &mut self,
        _ctx: &mut FunctionContext,
        _bar: u8,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        if offset < BAR0_SIZE {
            return self.ctrl.read(offset, size);
        }
        // Between the table and the PBA, and after it: nothing.
        Ok(0)
    }

    fn bar_write(
        &mut self,
        ctx: &mut FunctionContext,
        _bar: u8,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        if offset < BAR0_SIZE {
            return self
                .ctrl
                .write(ctx.mem, &mut Msix(ctx.irq), offset, size, value);
        }
        Ok(())
    }

    fn reset(&mut self) {
        self.ctrl.reset();
    }
    fn save(&self) -> alloc::vec::Vec<u8> {
        let NvmeFunction {
            ctrl,
            // From the VM definition.
            ids: _,
        } = self;
        ctrl.save()
    }
    fn restore(&mut self, blob: &[u8]) -> Result<(), vdev::RestoreError> {
        self.ctrl.restore(blob)
    }
    /// Commands not completed, plus backend operations (DMA into guest RAM)
    /// still outstanding, including ones a reset orphaned: a state is saved
    /// only when both are zero.
    fn in_flight(&self) -> usize {
        self.ctrl.in_flight() + self.ctrl.backend_ops()
    }

    fn has_work(&self) -> bool {
        self.ctrl.has_work()
    }

    fn poll(&mut self, ctx: &mut FunctionContext) {
        self.ctrl.poll(ctx.mem, &mut Msix(ctx.irq));
    }

    fn defers_work(&self) -> bool {
        true
    }

    fn connect_work_signal(&mut self, signal: &WorkSignal) {
        self.ctrl.backend_mut().set_waker(signal.clone());
    }
}
