//! [`EmptySlot`]: a virtio-mmio slot with no device behind it (virtio 1.2 §4.2.2:
//! "DeviceID 0x0 ... the device is not present"). A guest that probes every slot
//! of the machine's virtio-mmio window, as on QEMU `virt`, reads MagicValue,
//! Version 2, DeviceID 0 and VendorID there, everything else as zero, and its
//! writes are ignored; no abort.

use vdev::{AccessSize, InterruptSink, MmioContext, MmioDevice, MmioError};

use crate::defs::mmio;

/// A virtio-mmio transport whose DeviceID is 0: no device. It holds no state.
#[derive(Debug, Default, Clone, Copy)]
pub struct EmptySlot;

/// DeviceID of an absent device.
pub const NO_DEVICE: u32 = 0;

impl EmptySlot {
    /// The access rules of a real transport: registers are 32-bit and aligned,
    /// configuration space accesses naturally aligned.
    fn check(offset: u64, size: AccessSize) -> Result<(), MmioError> {
        if !offset.is_multiple_of(size.bytes()) {
            log::warn!("virtio-mmio (empty slot): unaligned access at {offset:#x}");
            return Err(MmioError::Unaligned { offset });
        }
        if offset < mmio::CONFIG && size != AccessSize::Word {
            log::warn!("virtio-mmio (empty slot): {size:?} access to register {offset:#x}");
            return Err(MmioError::UnsupportedSize { offset, size });
        }
        Ok(())
    }
}

impl MmioDevice for EmptySlot {
    fn read(
        &mut self,
        _ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        Self::check(offset, size)?;
        Ok(u64::from(match offset {
            mmio::MAGIC_VALUE => mmio::MAGIC,
            mmio::VERSION => mmio::VERSION_MODERN,
            mmio::DEVICE_ID => NO_DEVICE,
            mmio::VENDOR_ID => mmio::VENDOR,
            _ => 0,
        }))
    }

    fn write(
        &mut self,
        _ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        Self::check(offset, size)?;
        log::debug!("virtio-mmio (empty slot): write of {value:#x} to {offset:#x} ignored");
        Ok(())
    }

    /// Nothing to reset: the slot has no state and drives no interrupt.
    fn reset(&mut self, _irq: &mut dyn InterruptSink) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::LevelIrq;
    use vdev::VecMemory;

    fn access(
        slot: &mut EmptySlot,
        offset: u64,
        size: AccessSize,
        write: Option<u64>,
    ) -> Result<u64, MmioError> {
        let mut mem = VecMemory::new(0, 0);
        let mut irq = LevelIrq::default();
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut irq,
        };
        let r = match write {
            Some(v) => slot.write(&mut ctx, offset, size, v).map(|_| 0),
            None => slot.read(&mut ctx, offset, size),
        };
        assert!(irq.lines.is_empty(), "an empty slot drives no interrupt");
        r
    }

    fn register_file(slot: &mut EmptySlot) -> alloc::vec::Vec<u64> {
        (0..mmio::WINDOW_SIZE)
            .step_by(4)
            .map(|off| access(slot, off, AccessSize::Word, None).unwrap())
            .collect()
    }

    #[test]
    fn identifies_as_virtio_mmio_v2_with_no_device_and_reads_zero_elsewhere() {
        let mut slot = EmptySlot;
        let regs = register_file(&mut slot);
        assert_eq!(regs[0], 0x7472_6976, "MagicValue \"virt\"");
        assert_eq!(regs[1], 2, "Version 2");
        assert_eq!(regs[2], 0, "DeviceID 0: no device");
        assert_eq!(regs[3], u64::from(mmio::VENDOR));
        assert!(regs[4..].iter().all(|&v| v == 0), "{regs:x?}");
        assert_eq!(
            access(&mut slot, mmio::CONFIG + 3, AccessSize::Byte, None),
            Ok(0)
        );
    }

    #[test]
    fn writes_are_ignored_and_bad_accesses_refused_as_on_a_real_transport() {
        let mut slot = EmptySlot;
        let before = register_file(&mut slot);
        for off in (0..mmio::WINDOW_SIZE).step_by(4) {
            assert_eq!(
                access(&mut slot, off, AccessSize::Word, Some(u64::from(u32::MAX))),
                Ok(0)
            );
        }
        assert_eq!(register_file(&mut slot), before);
        assert_eq!(
            access(&mut slot, mmio::MAGIC_VALUE, AccessSize::Double, None),
            Err(MmioError::UnsupportedSize {
                offset: mmio::MAGIC_VALUE,
                size: AccessSize::Double
            })
        );
        assert_eq!(
            access(&mut slot, mmio::VERSION + 1, AccessSize::Word, Some(1)),
            Err(MmioError::Unaligned {
                offset: mmio::VERSION + 1
            })
        );
    }
}
