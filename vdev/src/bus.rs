//! The MMIO bus: which device owns which guest physical address range.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use crate::mmio::{InterruptSink, MmioContext, MmioDevice};
use crate::work::WorkSignal;

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

    /// VM reset: resets every device on the bus ([`MmioDevice::reset`]), in address
    /// order, lowering their interrupt lines through `irq`.
    pub fn reset_all(&mut self, irq: &mut dyn InterruptSink) {
        for r in &mut self.regions {
            r.device.reset(irq);
        }
    }

    /// Connects every device on the bus to `signal` ([`MmioDevice::connect_work_signal`]):
    /// it is raised whenever one of them defers work. Call after the last insert.
    pub fn connect_work_signal(&mut self, signal: &WorkSignal) {
        for r in &mut self.regions {
            r.device.connect_work_signal(signal);
        }
    }

    /// Whether any device holds deferred work.
    pub fn has_deferred_work(&self) -> bool {
        self.regions.iter().any(|r| r.device.has_deferred_work())
    }

    /// Resumes the deferred work of every device that has some, each bounded as one
    /// guest access is; returns whether work is still left (call again later).
    pub fn resume_deferred(&mut self, ctx: &mut MmioContext) -> bool {
        let mut left = false;
        for r in &mut self.regions {
            if r.device.has_deferred_work() {
                r.device.resume(ctx);
                left |= r.device.has_deferred_work();
            }
        }
        left
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
        fn reset(&mut self, _: &mut dyn InterruptSink) {
            self.0 = 0;
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

    /// A device with a register (reset value 0), an interrupt line that is high
    /// while the register is non-zero, and `backlog` units of deferred work of
    /// which each resume does one.
    struct Busy {
        intid: u32,
        reg: u64,
        backlog: u32,
        signal: Option<WorkSignal>,
    }
    impl MmioDevice for Busy {
        fn read(&mut self, _: &mut MmioContext, _: u64, _: AccessSize) -> Result<u64, MmioError> {
            Ok(self.reg)
        }
        fn write(
            &mut self,
            ctx: &mut MmioContext,
            _: u64,
            _: AccessSize,
            v: u64,
        ) -> Result<(), MmioError> {
            self.reg = v;
            self.backlog = v as u32;
            ctx.irq.set_level(self.intid, v != 0);
            if let Some(s) = self.signal.as_ref().filter(|_| v != 0) {
                s.raise();
            }
            Ok(())
        }
        fn reset(&mut self, irq: &mut dyn InterruptSink) {
            self.reg = 0;
            self.backlog = 0;
            irq.set_level(self.intid, false);
        }
        fn has_deferred_work(&self) -> bool {
            self.backlog > 0
        }
        fn resume(&mut self, _: &mut MmioContext) {
            self.backlog -= 1;
        }
        fn connect_work_signal(&mut self, signal: &WorkSignal) {
            self.signal = Some(signal.clone());
        }
    }

    #[derive(Default)]
    struct Lines(alloc::collections::BTreeMap<u32, bool>);
    impl InterruptSink for Lines {
        fn set_level(&mut self, intid: u32, level: bool) {
            self.0.insert(intid, level);
        }
    }

    fn busy_bus() -> MmioBus {
        let mut bus = MmioBus::new();
        for i in 0..4u64 {
            let dev = Busy {
                intid: 40 + i as u32,
                reg: 0,
                backlog: 0,
                signal: None,
            };
            bus.insert("busy", 0x1000 * (i + 1), 0x100, Box::new(dev))
                .unwrap();
        }
        bus
    }

    fn write_all(bus: &mut MmioBus, irq: &mut Lines, v: impl Fn(u64) -> u64) {
        let mut mem = crate::VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq,
        };
        for i in 0..4u64 {
            let (dev, _, off) = bus.find(0x1000 * (i + 1)).unwrap();
            dev.write(&mut ctx, off, AccessSize::Word, v(i)).unwrap();
        }
    }

    #[test]
    fn reset_all_reaches_every_device_and_lowers_their_lines() {
        let mut bus = busy_bus();
        let mut irq = Lines::default();
        write_all(&mut bus, &mut irq, |i| i + 7);
        assert!(irq.0.values().all(|&l| l), "every line raised");
        assert!(bus.has_deferred_work());
        bus.reset_all(&mut irq);
        assert_eq!(irq.0.len(), 4);
        assert!(
            irq.0.values().all(|&l| !l),
            "every line lowered: {:?}",
            irq.0
        );
        for i in 0..4u64 {
            assert_eq!(ctx_read(&mut bus, 0x1000 * (i + 1)), Some(0), "device {i}");
        }
        assert!(!bus.has_deferred_work(), "deferred work dropped by reset");
    }

    #[test]
    fn resume_deferred_does_one_bounded_round_per_call_until_done() {
        let mut bus = busy_bus();
        let signal = WorkSignal::new();
        bus.connect_work_signal(&signal);
        let mut irq = Lines::default();
        write_all(&mut bus, &mut irq, |_| 0);
        assert!(!signal.take(), "no work, no signal");
        // Devices 1..=3 defer 1, 2 and 3 units; device 0 none.
        write_all(&mut bus, &mut irq, |i| i);
        assert!(signal.take(), "the devices reached the connected signal");
        let mut mem = crate::VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut irq,
        };
        assert!(bus.resume_deferred(&mut ctx));
        assert!(bus.resume_deferred(&mut ctx));
        assert!(
            !bus.resume_deferred(&mut ctx),
            "three rounds finish 3 units"
        );
        assert!(!bus.has_deferred_work());
        assert!(
            !bus.resume_deferred(&mut ctx),
            "nothing left: nothing to do"
        );
    }
}
