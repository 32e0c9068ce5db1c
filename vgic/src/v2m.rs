//! A GICv2m MSI frame: the SPI-based way to turn a PCI message into an interrupt
//! (Arm Server Base System Architecture, GICv2m appendix). The frame's
//! MSI_TYPER names a range of SPIs; a DWORD write of an SPI's INTID to
//! MSI_SETSPI_NS is a rising edge on that SPI. Linux uses a frame under a GICv3
//! whose distributor has no LPIs (`arm,gic-v2m-frame` child of the GIC node with
//! `msi-controller`); Windows finds it in the MADT (GIC MSI Frame).
//!
//! The frame holds no state: what it raises is an edge on the vGIC's SPI input
//! (a pulse: the line goes high and low again), so the guest must configure those
//! SPIs edge-triggered, as its v2m driver does.

use alloc::vec::Vec;
use tock_registers::{register_bitfields, LocalRegisterCopy};

use vdev::save::{Reader, Writer};
use vdev::{
    AccessSize, InterruptSink, MmioContext, MmioDevice, MmioError, RestoreError, SaveRestore,
};

use crate::regs::intid::{SPECIAL_FIRST, SPI_FIRST};

/// Register offsets within the 4 KiB frame.
pub mod reg {
    pub const MSI_TYPER: u64 = 0x008;
    pub const MSI_SETSPI_NS: u64 = 0x040;
    pub const MSI_IIDR: u64 = 0xfcc;
}

/// Size of the frame.
pub const FRAME_SIZE: u64 = 0x1000;

register_bitfields! {u32,
    /// MSI_TYPER: the SPIs the frame raises.
    pub MSI_TYPER [
        /// INTID of the first SPI.
        BASE OFFSET(16) NUMBITS(10) [],
        /// Number of SPIs.
        NUMBER OFFSET(0) NUMBITS(10) []
    ],
    /// MSI_SETSPI_NS: the INTID to raise.
    pub MSI_SETSPI [
        INTID OFFSET(0) NUMBITS(10) []
    ]
}

/// Why a frame cannot have this SPI range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum V2mError {
    /// No SPIs, a range starting below INTID 32, or reaching the special INTIDs or
    /// past the vGIC's SPIs.
    Range,
}

/// One GICv2m frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V2mFrame {
    base: u32,
    count: u32,
}

impl V2mFrame {
    /// A frame raising `count` SPIs from INTID `base`; `intid_limit` is one past
    /// the vGIC's last SPI.
    pub fn new(base: u32, count: u32, intid_limit: u32) -> Result<Self, V2mError> {
        let end = base.checked_add(count).ok_or(V2mError::Range)?;
        if count == 0 || base < SPI_FIRST || end > SPECIAL_FIRST || end > intid_limit {
            return Err(V2mError::Range);
        }
        Ok(V2mFrame { base, count })
    }

    /// INTID of the first SPI.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// Number of SPIs.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// The MSI_TYPER value.
    pub fn typer(&self) -> u32 {
        (MSI_TYPER::BASE.val(self.base) + MSI_TYPER::NUMBER.val(self.count)).value
    }

    /// A write of `value` to MSI_SETSPI_NS (from the guest or from a PCI message):
    /// an edge on the SPI it names, when that is one of the frame's. Returns
    /// whether it was.
    pub fn set_spi(&self, value: u32, irq: &mut dyn InterruptSink) -> bool {
        let intid =
            LocalRegisterCopy::<u32, MSI_SETSPI::Register>::new(value).read(MSI_SETSPI::INTID);
        if value != intid || !(self.base..self.base + self.count).contains(&intid) {
            log::warn!(
                "v2m: MSI_SETSPI_NS write {value:#x} names no SPI of the frame ({}..{}); ignored",
                self.base,
                self.base + self.count
            );
            return false;
        }
        irq.set_level(intid, true);
        irq.set_level(intid, false);
        true
    }

    /// A message (a DWORD write of `data` to `address`) from a device: raised when
    /// `address` is this frame's MSI_SETSPI_NS, with the frame at `frame_base`.
    pub fn message(
        &self,
        frame_base: u64,
        address: u64,
        data: u32,
        irq: &mut dyn InterruptSink,
    ) -> bool {
        address == frame_base + reg::MSI_SETSPI_NS && self.set_spi(data, irq)
    }
}

impl MmioDevice for V2mFrame {
    fn read(
        &mut self,
        _ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        if size != AccessSize::Word {
            return Err(MmioError::UnsupportedSize { offset, size });
        }
        if !offset.is_multiple_of(4) {
            return Err(MmioError::Unaligned { offset });
        }
        Ok(match offset {
            reg::MSI_TYPER => u64::from(self.typer()),
            // MSI_SETSPI_NS is write-only; MSI_IIDR: no implementer quirks.
            _ => 0,
        })
    }

    fn write(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        if size != AccessSize::Word {
            return Err(MmioError::UnsupportedSize { offset, size });
        }
        if !offset.is_multiple_of(4) {
            return Err(MmioError::Unaligned { offset });
        }
        if offset == reg::MSI_SETSPI_NS {
            self.set_spi(value as u32, ctx.irq);
        }
        Ok(())
    }

    fn reset(&mut self, _irq: &mut dyn InterruptSink) {
        // No state: every SPI it raised was a pulse.
    }
}

/// The frame's saved state (`V2MF`): only the SPI range it raises, which comes
/// from the VM definition — a frame holds nothing else (every message is an
/// edge the vGIC latched, and the vGIC saves that). Restore refuses a range
/// other than its own, so an image from a VM whose frame raised other SPIs is
/// not resumed into this one.
impl SaveRestore for V2mFrame {
    const SAVE_ID: [u8; 4] = *b"V2MF";
    const SAVE_VERSION: u32 = 1;

    fn save(&self) -> Vec<u8> {
        let V2mFrame { base, count } = self;
        let mut w = Writer::new(Self::SAVE_ID, Self::SAVE_VERSION);
        w.u32(*base).u32(*count);
        w.finish()
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let (_version, mut r) = Reader::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
        let (base, count) = (r.u32()?, r.u32()?);
        r.end()?;
        if (base, count) != (self.base, self.count) {
            return Err(RestoreError::Malformed);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Vgic, VgicConfig};
    use vdev::VecMemory;

    fn frame() -> V2mFrame {
        V2mFrame::new(80, 32, 128).unwrap()
    }

    #[test]
    fn typer_names_the_range() {
        let f = frame();
        let mut mem = VecMemory::new(0, 0);
        let mut irq = vdev::NullInterrupts;
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut irq,
        };
        let mut f2 = f;
        let typer = f2.read(&mut ctx, reg::MSI_TYPER, AccessSize::Word).unwrap();
        assert_eq!(typer, (80 << 16) | 32);
        assert_eq!(
            f2.read(&mut ctx, reg::MSI_IIDR, AccessSize::Word).unwrap(),
            0
        );
        assert!(f2.read(&mut ctx, reg::MSI_TYPER, AccessSize::Byte).is_err());
        assert!(f2.read(&mut ctx, 0x9, AccessSize::Word).is_err());
    }

    #[test]
    fn bad_ranges_are_refused() {
        assert_eq!(V2mFrame::new(16, 8, 128), Err(V2mError::Range), "PPIs");
        assert_eq!(V2mFrame::new(80, 0, 128), Err(V2mError::Range));
        assert_eq!(
            V2mFrame::new(120, 16, 128),
            Err(V2mError::Range),
            "past the vGIC"
        );
        assert_eq!(
            V2mFrame::new(1000, 30, 2000),
            Err(V2mError::Range),
            "special"
        );
        assert_eq!(V2mFrame::new(u32::MAX, 2, u32::MAX), Err(V2mError::Range));
    }

    fn pending(vgic: &Vgic, intid: u32) -> bool {
        let at = crate::regs::gicd::ISPENDR + 4 * u64::from(intid / 32);
        let word = vgic.gicd_read(at, AccessSize::Word).unwrap();
        word & (1 << (intid % 32)) != 0
    }

    /// A guest write to MSI_SETSPI_NS makes the SPI pending in the vGIC (an edge
    /// each time), and only for the frame's SPIs.
    #[test]
    fn setspi_raises_an_edge_on_the_spi() {
        let mut vgic = Vgic::new(VgicConfig::simple(1, 96)).unwrap();
        let mut mem = VecMemory::new(0, 0);
        // The guest's v2m driver configures its SPIs edge-triggered.
        for intid in [85u32, 86, 87] {
            let icfgr = crate::regs::gicd::ICFGR + 4 * u64::from(intid / 16);
            let old = vgic.gicd_read(icfgr, AccessSize::Word).unwrap();
            let edge = 0b10 << (2 * (intid % 16));
            vgic.gicd_write(icfgr, AccessSize::Word, old | edge)
                .unwrap();
        }
        let mut f = frame();
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut vgic,
        };
        f.write(&mut ctx, reg::MSI_SETSPI_NS, AccessSize::Word, 85)
            .unwrap();
        // Outside the frame's range, or garbage in the upper bits: nothing.
        for v in [79, 112, 0x1_0056, u64::from(u32::MAX)] {
            f.write(&mut ctx, reg::MSI_SETSPI_NS, AccessSize::Word, v)
                .unwrap();
        }
        assert!(pending(&vgic, 85), "an edge, latched");
        for i in [79, 86, 112] {
            assert!(!pending(&vgic, i), "{i}");
        }
        // A message to the frame's doorbell is the same write.
        assert!(f.message(0x0802_0000, 0x0802_0040, 86, &mut vgic));
        assert!(!f.message(0x0802_0000, 0x0802_0044, 87, &mut vgic));
        assert!(pending(&vgic, 86));
        assert!(!pending(&vgic, 87));
    }

    /// The generic hostile-blob tests (`vdev::save_testing`): truncations,
    /// extensions, other versions and kinds, every flipped bit and random bytes.
    /// Not the round trip from a driven state: a frame has no state to drive
    /// into, so its blob is always its range.
    #[test]
    fn saved_state_is_its_range_and_hostile_blobs_are_refused() {
        use vdev::save_testing as st;
        let probe = |f: &mut V2mFrame| f.typer();
        st::truncated_and_extended(frame, |_| {});
        st::wrong_version_and_kind(frame, |_| {});
        st::bit_flips(frame, |_| {}, probe);
        let blob = frame().save();
        let mut same = frame();
        same.restore(&blob).unwrap();
        assert_eq!(same, frame());
        let mut other = V2mFrame::new(64, 16, 128).unwrap();
        assert_eq!(other.restore(&blob), Err(RestoreError::Malformed));
        assert_eq!(other.typer(), (64 << 16) | 16, "unchanged");
    }
}
