//! The virtio 1.2 PCI transport (modern, non-transitional; virtio 1.2 §4.1) for
//! any [`virtio::VirtioDevice`]: the same device models as virtio-mmio, driven
//! through the same [`virtio::TransportCore`] (feature negotiation, status state
//! machine, queues); this module only maps the PCI registers onto it.
//!
//! - Identity: vendor 0x1af4, device 0x1040 + the virtio device ID, revision 1.
//! - BAR0 (64-bit, [`BAR0_SIZE`]) holds, each in its own 4 KiB page: the common
//!   configuration ([`COMMON_OFFSET`]), the ISR status ([`ISR_OFFSET`]), the device
//!   configuration ([`DEVICE_OFFSET`]), the notification area ([`NOTIFY_OFFSET`],
//!   queue `q` notified at `q * NOTIFY_OFF_MULTIPLIER`), then the MSI-X table and
//!   PBA (owned by the root complex). Four vendor-specific capabilities describe it.
//! - Interrupts: with MSI-X enabled, a queue's used-buffer notification is its
//!   `queue_msix_vector` and a configuration change `config_msix_vector` (a vector
//!   the table does not have reads back as NO_VECTOR); with MSI-X disabled, the
//!   ISR bits and the INTA pin, lowered when the driver reads ISR.
//! - DMA goes through the function's Bus Master Enable: with it clear the device
//!   sees no memory, so enabling a queue or processing one ends in
//!   DEVICE_NEEDS_RESET.
//!
//! Every access is checked: common-configuration fields only at their own offset
//! and width (64-bit fields also as two 32-bit halves), anything else refused;
//! notifications past the last queue or between slots are logged and ignored.
//!
//! Saved state: [`VirtioFunction`] implements [`SaveRestore`] (`VPCI`), the core's
//! part shared with virtio-mmio's code.
//!
//! - The VIRTIO_PCI_CAP_PCI_CFG capability (§4.1.4.9): a window in configuration
//!   space onto BAR0 ([`crate::BarWindow`]); the root complex checks the BAR,
//!   length (1, 2, 4) and alignment, and this function that the bytes lie inside
//!   one of the four structures the other capabilities describe.
//!
//! Not done: VIRTIO_F_NOTIFICATION_DATA and VIRTIO_F_RING_RESET (neither offered).

use alloc::vec;
use alloc::vec::Vec;

use vdev::save::Reader;
use vdev::{AccessSize, MmioError, RestoreError, SaveRestore, WorkSignal};
use virtio::defs::pci::{self as vp, common};
use virtio::shared::{set_half, Half};
use virtio::{Events, TransportCore, VirtioDevice};

use crate::defs::{msix_cap, IntxPin, BAR_COUNT};
use crate::function::{
    BarSpec, BarWindow, FunctionContext, FunctionIrq, FunctionSpec, Identity, MsixSpec, PciFunction,
};

/// Where each structure lives in BAR0.
pub const COMMON_OFFSET: u64 = 0x0000;
pub const ISR_OFFSET: u64 = 0x1000;
pub const DEVICE_OFFSET: u64 = 0x2000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const MSIX_TABLE_OFFSET: u64 = 0x4000;
pub const MSIX_PBA_OFFSET: u64 = 0x5000;
/// Bytes of each region.
const REGION: u64 = 0x1000;
/// Device configuration bytes advertised (bytes past the device's own read 0).
pub const DEVICE_CFG_LEN: u64 = 0x100;
/// Bytes between two queues' notification addresses.
pub const NOTIFY_OFF_MULTIPLIER: u32 = 4;
pub const BAR0_SIZE: u64 = 0x8000;
/// The VIRTIO_PCI_CAP_PCI_CFG capability (virtio 1.2 §4.1.4.9): its
/// `cfg_type`, the offset of `pci_cfg_data` in it and its size.
pub const CAP_PCI_CFG: u8 = 5;
pub const PCI_CFG_DATA: usize = 16;
pub const PCI_CFG_CAP_SIZE: usize = 20;
/// Where the window capability is among [`VirtioFunction`]'s vendor-specific
/// capabilities (after common, notify, ISR, device).
const PCI_CFG_CAP_INDEX: usize = 4;
/// Most queues the layout has room for (one vector each, plus the config vector).
pub const MAX_QUEUES: usize = virtio::device::MAX_QUEUES;

/// A virtio device behind a PCI function.
pub struct VirtioFunction<D: VirtioDevice> {
    core: TransportCore<D>,
    class: [u8; 3],
    config_vector: u16,
    queue_vectors: Vec<u16>,
    isr: u8,
    /// Set by a restore: the next poll drives INTx from the restored ISR.
    redrive_intx: bool,
}

impl<D: VirtioDevice> VirtioFunction<D> {
    /// `device` behind a function of class `class` (drivers bind by vendor and
    /// device ID; the class only names the function for the OS).
    pub fn new(device: D, class: [u8; 3]) -> Self {
        let mut core = TransportCore::new(device, "virtio-pci");
        core.set_queue_sizes_to_max();
        let n = core.num_queues();
        VirtioFunction {
            core,
            class,
            config_vector: vp::NO_VECTOR,
            queue_vectors: vec![vp::NO_VECTOR; n],
            isr: 0,
            redrive_intx: false,
        }
    }

    pub fn core(&self) -> &TransportCore<D> {
        &self.core
    }

    pub fn core_mut(&mut self) -> &mut TransportCore<D> {
        &mut self.core
    }

    /// MSI-X vectors: one per queue and the configuration vector.
    pub fn vectors(&self) -> u16 {
        self.core.num_queues() as u16 + 1
    }

    /// The configuration changed on the host side.
    pub fn signal_config_change(&mut self, irq: &mut dyn FunctionIrq) {
        let ev = self.core.signal_config_change();
        self.raise(irq, ev);
    }

    fn raise(&mut self, irq: &mut dyn FunctionIrq, ev: Events) {
        if ev.config {
            self.isr |= vp::ISR_CONFIG;
        }
        if irq.msix_enabled() {
            for (i, &v) in self.queue_vectors.iter().enumerate() {
                if ev.used_queues & (1u64 << i) != 0 && v != vp::NO_VECTOR {
                    irq.msix(v);
                }
            }
            if ev.config && self.config_vector != vp::NO_VECTOR {
                irq.msix(self.config_vector);
            }
            return;
        }
        if ev.used_queues != 0 {
            self.isr |= vp::ISR_QUEUE;
        }
        irq.set_intx(self.isr != 0);
    }

    /// Device reset (status 0) and conventional reset share this: queues and
    /// vectors back to their reset values.
    fn reset_transport(&mut self) {
        self.core.set_queue_sizes_to_max();
        self.config_vector = vp::NO_VECTOR;
        self.queue_vectors.fill(vp::NO_VECTOR);
        self.isr = 0;
    }

    /// A vector the driver may map: one the table has, or NO_VECTOR.
    fn checked_vector(&self, what: &str, v: u16) -> u16 {
        if v == vp::NO_VECTOR || v < self.vectors() {
            v
        } else {
            log::warn!("virtio-pci: {what} vector {v} past the MSI-X table; NO_VECTOR");
            vp::NO_VECTOR
        }
    }

    fn selected_vector(&self) -> u16 {
        self.queue_vectors
            .get(self.core.queue_sel() as usize)
            .copied()
            .unwrap_or(vp::NO_VECTOR)
    }

    /// The common-configuration field at `offset` if `size` is its width (or a
    /// 32-bit half of a 64-bit field): the field's offset and which half.
    fn field(offset: u64, size: AccessSize) -> Option<(u64, Option<Half>)> {
        use AccessSize::{Byte, Half as H, Word};
        let wide = [
            common::QUEUE_DESC,
            common::QUEUE_DRIVER,
            common::QUEUE_DEVICE,
        ];
        for f in wide {
            match (offset.checked_sub(f), size) {
                (Some(0), AccessSize::Double) => return Some((f, None)),
                (Some(0), Word) => return Some((f, Some(Half::Low))),
                (Some(4), Word) => return Some((f, Some(Half::High))),
                _ => {}
            }
        }
        let width = match offset {
            common::DEVICE_FEATURE_SELECT
            | common::DEVICE_FEATURE
            | common::DRIVER_FEATURE_SELECT
            | common::DRIVER_FEATURE => Word,
            common::DEVICE_STATUS | common::CONFIG_GENERATION => Byte,
            common::CONFIG_MSIX_VECTOR
            | common::NUM_QUEUES
            | common::QUEUE_SELECT
            | common::QUEUE_SIZE
            | common::QUEUE_MSIX_VECTOR
            | common::QUEUE_ENABLE
            | common::QUEUE_NOTIFY_OFF
            | common::QUEUE_NOTIFY_DATA
            | common::QUEUE_RESET => H,
            _ => return None,
        };
        (width == size).then_some((offset, None))
    }

    fn read_common(&self, offset: u64, size: AccessSize) -> Result<u64, MmioError> {
        let Some((field, half)) = Self::field(offset, size) else {
            log::warn!("virtio-pci: {size:?} read of common config at {offset:#x} refused");
            return Err(MmioError::UnsupportedSize { offset, size });
        };
        let q = self.core.selected_queue();
        let v = match field {
            common::DEVICE_FEATURE_SELECT => u64::from(self.core.device_features_sel()),
            common::DEVICE_FEATURE => u64::from(self.core.device_features_word()),
            common::DRIVER_FEATURE_SELECT => u64::from(self.core.driver_features_sel()),
            common::DRIVER_FEATURE => u64::from(self.core.driver_features_word()),
            common::CONFIG_MSIX_VECTOR => u64::from(self.config_vector),
            common::NUM_QUEUES => self.core.num_queues() as u64,
            common::DEVICE_STATUS => u64::from(self.core.status() as u8),
            common::CONFIG_GENERATION => u64::from(self.core.config_generation() as u8),
            common::QUEUE_SELECT => u64::from(self.core.queue_sel() as u16),
            common::QUEUE_SIZE => q.map_or(0, |q| u64::from(q.size)),
            common::QUEUE_MSIX_VECTOR => u64::from(self.selected_vector()),
            common::QUEUE_ENABLE => q.map_or(0, |q| u64::from(q.ready)),
            common::QUEUE_NOTIFY_OFF => q.map_or(0, |_| u64::from(self.core.queue_sel() as u16)),
            common::QUEUE_DESC => q.map_or(0, |q| q.desc_addr),
            common::QUEUE_DRIVER => q.map_or(0, |q| q.avail_addr),
            common::QUEUE_DEVICE => q.map_or(0, |q| q.used_addr),
            // NOTIFICATION_DATA and RING_RESET are not offered.
            _ => 0,
        };
        Ok(match half {
            None => v,
            Some(Half::Low) => v & 0xffff_ffff,
            Some(Half::High) => v >> 32,
        })
    }

    fn write_common(
        &mut self,
        ctx: &mut FunctionContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        let Some((field, half)) = Self::field(offset, size) else {
            log::warn!("virtio-pci: {size:?} write of common config at {offset:#x} refused");
            return Err(MmioError::UnsupportedSize { offset, size });
        };
        let v32 = value as u32;
        let set64 = |reg: &mut u64| match half {
            None => *reg = value,
            Some(h) => set_half(reg, h, v32),
        };
        match field {
            common::DEVICE_FEATURE_SELECT => self.core.set_device_features_sel(v32),
            common::DRIVER_FEATURE_SELECT => self.core.set_driver_features_sel(v32),
            common::DRIVER_FEATURE => self.core.write_driver_features(v32),
            common::CONFIG_MSIX_VECTOR => {
                self.config_vector = self.checked_vector("config", value as u16)
            }
            common::DEVICE_STATUS => {
                if value as u8 == 0 {
                    self.core.reset_device();
                    self.reset_transport();
                    ctx.irq.set_intx(false);
                } else {
                    let ev = self.core.write_status(ctx.mem, u32::from(value as u8));
                    self.raise(ctx.irq, ev);
                }
            }
            common::QUEUE_SELECT => self.core.set_queue_sel(u32::from(value as u16)),
            common::QUEUE_SIZE => {
                self.core
                    .write_selected_queue("queue_size", |q| q.size = value as u16);
            }
            common::QUEUE_MSIX_VECTOR => {
                let v = self.checked_vector("queue", value as u16);
                let sel = self.core.queue_sel() as usize;
                match self.queue_vectors.get_mut(sel) {
                    Some(slot) => *slot = v,
                    None => log::warn!("virtio-pci: vector for absent queue {sel} ignored"),
                }
            }
            common::QUEUE_ENABLE => {
                if value as u16 == 1 {
                    let ev = self.core.write_queue_ready(ctx.mem, true);
                    self.raise(ctx.irq, ev);
                } else {
                    // §4.1.4.3.2: the driver must not write anything but 1.
                    log::warn!("virtio-pci: queue_enable write of {value:#x} ignored");
                }
            }
            common::QUEUE_DESC => {
                self.core
                    .write_selected_queue("queue_desc", |q| set64(&mut q.desc_addr));
            }
            common::QUEUE_DRIVER => {
                self.core
                    .write_selected_queue("queue_driver", |q| set64(&mut q.avail_addr));
            }
            common::QUEUE_DEVICE => {
                self.core
                    .write_selected_queue("queue_device", |q| set64(&mut q.used_addr));
            }
            _ => log::warn!("virtio-pci: write of {value:#x} to read-only {offset:#x} ignored"),
        }
        Ok(())
    }

    fn notify(&mut self, ctx: &mut FunctionContext, offset: u64) {
        let m = u64::from(NOTIFY_OFF_MULTIPLIER);
        let q = offset / m;
        if !offset.is_multiple_of(m) || q >= self.core.num_queues() as u64 {
            log::warn!("virtio-pci: notification at {offset:#x} matches no queue; ignored");
            return;
        }
        let ev = self.core.notify(ctx.mem, q as u32);
        self.raise(ctx.irq, ev);
    }

    fn cap(cfg_type: u8, offset: u64, length: u64, size: usize) -> Vec<u8> {
        let mut c = vec![0u8; size];
        c[vp::CAP_LEN] = size as u8;
        c[vp::CAP_CFG_TYPE] = cfg_type;
        c[vp::CAP_BAR] = 0;
        c[vp::CAP_ID] = 0;
        c[vp::CAP_OFFSET..vp::CAP_OFFSET + 4].copy_from_slice(&(offset as u32).to_le_bytes());
        c[vp::CAP_LENGTH..vp::CAP_LENGTH + 4].copy_from_slice(&(length as u32).to_le_bytes());
        c
    }
}

impl<D: VirtioDevice> PciFunction for VirtioFunction<D> {
    fn spec(&self) -> FunctionSpec {
        let mut bars = [None; BAR_COUNT];
        bars[0] = Some(BarSpec {
            size: BAR0_SIZE,
            is_64bit: true,
            prefetchable: false,
        });
        FunctionSpec {
            identity: Identity {
                vendor_id: vp::VENDOR_ID,
                device_id: vp::DEVICE_ID_BASE + self.core.device().device_id() as u16,
                revision_id: vp::REVISION,
                class: self.class,
                subsystem_vendor_id: vp::VENDOR_ID,
                subsystem_id: vp::SUBSYSTEM_ID,
            },
            bars,
            msix: Some(MsixSpec {
                vectors: self.vectors(),
                table_bar: 0,
                table_offset: MSIX_TABLE_OFFSET,
                pba_bar: 0,
                pba_offset: MSIX_PBA_OFFSET,
            }),
            intx: Some(IntxPin::IntA),
            pcie: true,
        }
    }

    fn vendor_capabilities(&self) -> Vec<Vec<u8>> {
        let mut notify = Self::cap(
            vp::CAP_NOTIFY_CFG,
            NOTIFY_OFFSET,
            self.core.num_queues() as u64 * u64::from(NOTIFY_OFF_MULTIPLIER),
            vp::NOTIFY_CAP_SIZE,
        );
        notify[vp::CAP_NOTIFY_OFF_MULTIPLIER..vp::CAP_NOTIFY_OFF_MULTIPLIER + 4]
            .copy_from_slice(&NOTIFY_OFF_MULTIPLIER.to_le_bytes());
        vec![
            Self::cap(
                vp::CAP_COMMON_CFG,
                COMMON_OFFSET,
                common::SIZE,
                vp::CAP_SIZE,
            ),
            notify,
            Self::cap(vp::CAP_ISR_CFG, ISR_OFFSET, 1, vp::CAP_SIZE),
            Self::cap(
                vp::CAP_DEVICE_CFG,
                DEVICE_OFFSET,
                DEVICE_CFG_LEN,
                vp::CAP_SIZE,
            ),
            // BAR, offset and length start at zero; the driver sets them.
            Self::cap(CAP_PCI_CFG, 0, 0, PCI_CFG_CAP_SIZE),
        ]
    }

    fn bar_window(&self) -> Option<BarWindow> {
        Some(BarWindow {
            cap: PCI_CFG_CAP_INDEX,
            bar: vp::CAP_BAR,
            offset: vp::CAP_OFFSET,
            length: vp::CAP_LENGTH,
            data: PCI_CFG_DATA,
        })
    }

    /// Inside one of the structures the other capabilities describe (the
    /// driver may not point the window anywhere else, §4.1.4.9.1).
    fn bar_window_allows(&self, bar: u8, offset: u64, len: u64) -> bool {
        let notify_len = self.core.num_queues() as u64 * u64::from(NOTIFY_OFF_MULTIPLIER);
        let structures = [
            (COMMON_OFFSET, common::SIZE),
            (NOTIFY_OFFSET, notify_len),
            (ISR_OFFSET, 1),
            (DEVICE_OFFSET, DEVICE_CFG_LEN),
        ];
        bar == 0
            && structures
                .iter()
                .any(|&(at, n)| offset >= at && offset + len <= at + n)
    }

    fn bar_read(
        &mut self,
        ctx: &mut FunctionContext,
        _bar: u8,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        let (region, at) = (offset / REGION * REGION, offset % REGION);
        match region {
            COMMON_OFFSET if at < common::SIZE => self.read_common(at, size),
            ISR_OFFSET if at == 0 => {
                // Reading ISR clears it and lowers INTx (§4.1.4.5).
                let v = core::mem::take(&mut self.isr);
                ctx.irq.set_intx(false);
                Ok(u64::from(v))
            }
            DEVICE_OFFSET if at < DEVICE_CFG_LEN => {
                if !at.is_multiple_of(size.bytes()) {
                    return Err(MmioError::Unaligned { offset });
                }
                let mut b = [0u8; 8];
                let n = size.bytes() as usize;
                self.core.device().read_config(at as usize, &mut b[..n]);
                Ok(u64::from_le_bytes(b))
            }
            _ => {
                log::debug!("virtio-pci: read of BAR0 {offset:#x} reads as zero");
                Ok(0)
            }
        }
    }

    fn bar_write(
        &mut self,
        ctx: &mut FunctionContext,
        _bar: u8,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        let (region, at) = (offset / REGION * REGION, offset % REGION);
        match region {
            COMMON_OFFSET if at < common::SIZE => self.write_common(ctx, at, size, value),
            NOTIFY_OFFSET => {
                self.notify(ctx, at);
                Ok(())
            }
            DEVICE_OFFSET if at < DEVICE_CFG_LEN => {
                if !at.is_multiple_of(size.bytes()) {
                    return Err(MmioError::Unaligned { offset });
                }
                let n = size.bytes() as usize;
                self.core
                    .device_mut()
                    .write_config(at as usize, &value.to_le_bytes()[..n]);
                Ok(())
            }
            _ => {
                log::warn!("virtio-pci: write of {value:#x} to BAR0 {offset:#x} ignored");
                Ok(())
            }
        }
    }

    fn reset(&mut self) {
        self.core.power_on_reset();
        self.reset_transport();
    }

    fn save(&self) -> Vec<u8> {
        SaveRestore::save(self)
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        SaveRestore::restore(self, blob)
    }

    fn in_flight(&self) -> usize {
        self.core.device().requests_in_flight()
    }

    fn has_work(&self) -> bool {
        self.redrive_intx || self.core.has_deferred_work()
    }

    fn poll(&mut self, ctx: &mut FunctionContext) {
        if core::mem::take(&mut self.redrive_intx) && !ctx.irq.msix_enabled() {
            ctx.irq.set_intx(self.isr != 0);
        }
        let ev = self.core.poll(ctx.mem);
        self.raise(ctx.irq, ev);
    }

    fn defers_work(&self) -> bool {
        true
    }

    fn connect_work_signal(&mut self, signal: &WorkSignal) {
        self.core.connect_work_signal(signal);
    }
}

/// Saved state, version 1, little-endian: `"VPCI"`, version u32, config_msix_vector
/// u16, queue count u32, each queue's vector u16, ISR u8, then the transport core
/// ([`TransportCore::save_state`]: registers, queues, device state) to the end.
/// MSI-X table, PBA and configuration space are the root complex's. Restore
/// validates everything as if the driver had written it and changes nothing when
/// it refuses; the next [`PciFunction::poll`] re-drives INTx from ISR.
impl<D: VirtioDevice> SaveRestore for VirtioFunction<D> {
    const SAVE_ID: [u8; 4] = *b"VPCI";
    const SAVE_VERSION: u32 = 1;

    fn save(&self) -> Vec<u8> {
        let Self {
            core,
            // Wiring from the VM definition, not state.
            class: _,
            config_vector,
            queue_vectors,
            isr,
            // Host-side bookkeeping of a restore.
            redrive_intx: _,
        } = self;
        let mut out = Vec::new();
        out.extend_from_slice(&vdev::save::header(Self::SAVE_ID, Self::SAVE_VERSION));
        out.extend_from_slice(&config_vector.to_le_bytes());
        out.extend_from_slice(&(queue_vectors.len() as u32).to_le_bytes());
        for v in queue_vectors {
            out.extend_from_slice(&v.to_le_bytes());
        }
        out.push(*isr);
        core.save_state(&mut out);
        out
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let (_, payload) = vdev::save::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
        let mut r = Reader::new(payload);
        let config_vector = r.u16()?;
        if r.u32()? as usize != self.queue_vectors.len() {
            return Err(RestoreError::Malformed);
        }
        let mut queue_vectors = Vec::with_capacity(self.queue_vectors.len());
        for _ in 0..self.queue_vectors.len() {
            queue_vectors.push(r.u16()?);
        }
        let isr = r.u8()?;
        let vectors = self.vectors();
        let mappable = |v: u16| v == vp::NO_VECTOR || v < vectors;
        if !mappable(config_vector)
            || !queue_vectors.iter().all(|&v| mappable(v))
            || isr & !(vp::ISR_QUEUE | vp::ISR_CONFIG) != 0
        {
            return Err(RestoreError::Malformed);
        }
        // The core last: it changes nothing when it refuses.
        self.core.restore_state(r.rest())?;
        self.config_vector = config_vector;
        self.queue_vectors = queue_vectors;
        self.isr = isr;
        self.redrive_intx = true;
        Ok(())
    }
}

/// Class codes for the virtio device types this hypervisor has.
pub fn class_of(device_id: u32) -> [u8; 3] {
    use crate::defs::class;
    match device_id {
        virtio::defs::device_id::BLOCK => class::MASS_STORAGE_OTHER,
        virtio::defs::device_id::CONSOLE => class::COMMUNICATION_OTHER,
        _ => class::UNCLASSIFIED,
    }
}

const _: () =
    assert!(MSIX_TABLE_OFFSET + (MAX_QUEUES as u64 + 1) * msix_cap::ENTRY_SIZE <= MSIX_PBA_OFFSET);
const _: () = assert!(MSIX_PBA_OFFSET + REGION <= BAR0_SIZE);
