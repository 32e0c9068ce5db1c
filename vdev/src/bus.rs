//! The MMIO bus: which device owns which guest physical address range.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use crate::mmio::MmioDevice;

/// Why a device could not be placed on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty or wraps around the address space.
    BadRange { base: u64, size: u64 },
    /// The range overlaps the named device's.
    Overlap { with: String },
}

struct Region {
    base: u64,
    size: u64,
    name: String,
    device: Box<dyn MmioDevice + Send>,
}

/// Routes guest physical addresses to device models. Regions never overlap; lookup is
/// a binary search over regions kept sorted by base.
#[derive(Default)]
pub struct MmioBus {
    regions: Vec<Region>,
}

impl MmioBus {
    /// An empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    /// Places `device` at `[base, base + size)`.
    pub fn insert(
        &mut self,
        name: &str,
        base: u64,
        size: u64,
        device: Box<dyn MmioDevice + Send>,
    ) -> Result<(), BusError> {
        let end = base.checked_add(size).filter(|_| size > 0);
        let Some(end) = end else {
            return Err(BusError::BadRange { base, size });
        };
        if let Some(r) = self
            .regions
            .iter()
            .find(|r| base < r.base + r.size && r.base < end)
        {
            return Err(BusError::Overlap {
                with: r.name.clone(),
            });
        }
        let at = self.regions.partition_point(|r| r.base < base);
        self.regions.insert(
            at,
            Region {
                base,
                size,
                name: String::from(name),
                device,
            },
        );
        Ok(())
    }

    /// The device owning `addr`, its name, and `addr`'s offset into its range.
    pub fn find(&mut self, addr: u64) -> Option<(&mut (dyn MmioDevice + Send), &str, u64)> {
        let idx = self
            .regions
            .partition_point(|r| r.base <= addr)
            .checked_sub(1)?;
        let r = &mut self.regions[idx];
        if addr - r.base >= r.size {
            return None;
        }
        Some((r.device.as_mut(), r.name.as_str(), addr - r.base))
    }

    /// `(name, base, size)` of every region, in address order.
    pub fn regions(&self) -> impl Iterator<Item = (&str, u64, u64)> {
        self.regions
            .iter()
            .map(|r| (r.name.as_str(), r.base, r.size))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mmio::{AccessSize, MmioContext, MmioError};

    struct Tag(u64);
    impl MmioDevice for Tag {
        fn read(&mut self, _: &mut MmioContext, off: u64, _: AccessSize) -> Result<u64, MmioError> {
            Ok(self.0 << 32 | off)
        }
        fn write(
            &mut self,
            _: &mut MmioContext,
            _: u64,
            _: AccessSize,
            v: u64,
        ) -> Result<(), MmioError> {
            self.0 = v;
            Ok(())
        }
    }

    fn ctx_read(bus: &mut MmioBus, addr: u64) -> Option<u64> {
        let mut mem = crate::VecMemory::new(0, 0);
        let mut irq = crate::NullInterrupts;
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut irq,
        };
        let (dev, _, off) = bus.find(addr)?;
        Some(dev.read(&mut ctx, off, AccessSize::Word).unwrap())
    }

    #[test]
    fn routes_by_address_with_offsets() {
        let mut bus = MmioBus::new();
        bus.insert("b", 0x2000, 0x100, Box::new(Tag(2))).unwrap();
        bus.insert("a", 0x1000, 0x100, Box::new(Tag(1))).unwrap();
        assert_eq!(ctx_read(&mut bus, 0x1000), Some(1 << 32));
        assert_eq!(ctx_read(&mut bus, 0x10ff), Some(1 << 32 | 0xff));
        assert_eq!(ctx_read(&mut bus, 0x2004), Some(2 << 32 | 4));
        assert_eq!(ctx_read(&mut bus, 0x1100), None);
        assert_eq!(ctx_read(&mut bus, 0xfff), None);
        assert_eq!(ctx_read(&mut bus, 0x2100), None);
    }

    #[test]
    fn refuses_overlaps_and_bad_ranges() {
        let mut bus = MmioBus::new();
        bus.insert("a", 0x1000, 0x100, Box::new(Tag(1))).unwrap();
        assert_eq!(
            bus.insert("c", 0x10f0, 0x100, Box::new(Tag(3))),
            Err(BusError::Overlap { with: "a".into() })
        );
        assert_eq!(
            bus.insert("d", 0xf00, 0x101, Box::new(Tag(3))),
            Err(BusError::Overlap { with: "a".into() })
        );
        assert!(bus.insert("e", 0xf00, 0x100, Box::new(Tag(3))).is_ok());
        assert!(matches!(
            bus.insert("z", u64::MAX, 2, Box::new(Tag(0))),
            Err(BusError::BadRange { .. })
        ));
        assert!(matches!(
            bus.insert("z", 5, 0, Box::new(Tag(0))),
            Err(BusError::BadRange { .. })
        ));
    }
}
