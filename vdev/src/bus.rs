//! The MMIO bus: which device owns which guest physical address range.
//!
//! Built once with [`MmioBus::insert`] (which needs `&mut`), then shared by every
//! vCPU through `&MmioBus`: the region table never changes again, so looking an
//! address up takes no lock at all. Each device sits behind its own fair
//! [`TicketMutex`], taken only for the one device call (the layout crosvm's bus
//! uses): a vCPU blocked in a slow device (a virtio-blk notify doing disk I/O)
//! holds that device alone, and the other vCPUs' accesses to other devices go on.
//! Ticket order means a vCPU polling a device cannot starve another one waiting
//! for it.
//!
//! Lock order: a device lock may be held while the device takes locks of its own
//! (the vGIC's, through its [`InterruptSink`]); nothing takes a device lock while
//! holding one of those, and no device call reaches the bus again.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use core::sync::atomic::{AtomicUsize, Ordering};

use spin::mutex::{TicketMutex, TicketMutexGuard};

use crate::mmio::{AccessSize, InterruptSink, MmioContext, MmioDevice, MmioError};
use crate::work::WorkSignal;

/// Why a device could not be placed on the bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusError {
    /// The range is empty or wraps around the address space.
    BadRange { base: u64, size: u64 },
    /// The range overlaps the named device's.
    Overlap { with: String },
}

/// A device on the bus, behind its own lock.
pub type DeviceLock = TicketMutex<Box<dyn MmioDevice + Send>>;

struct Region {
    base: u64,
    size: u64,
    name: String,
    device: DeviceLock,
    /// The device can defer work ([`MmioDevice::defers_work`]).
    defers: bool,
}

/// The device owning an address, found by [`MmioBus::find`]: lock it for the access.
pub struct Slot<'a> {
    /// The device's name.
    pub name: &'a str,
    /// The address's offset into the device's range.
    pub offset: u64,
    device: &'a DeviceLock,
}

impl<'a> Slot<'a> {
    /// The device if no one else is using it.
    #[inline]
    pub fn try_lock(&self) -> Option<TicketMutexGuard<'a, Box<dyn MmioDevice + Send>>> {
        self.device.try_lock()
    }

    /// Exclusive access to the device (waits, in turn, for other vCPUs using it).
    #[inline]
    pub fn lock(&self) -> TicketMutexGuard<'a, Box<dyn MmioDevice + Send>> {
        self.device.lock()
    }
}

/// Routes guest physical addresses to device models. Regions never overlap; lookup is
/// a binary search over the bases, kept sorted (and apart from the devices, so the
/// search touches one small array).
#[derive(Default)]
pub struct MmioBus {
    /// `bases[i]` and `ends[i]` bound `regions[i]`.
    bases: Vec<u64>,
    ends: Vec<u64>,
    regions: Vec<Region>,
    /// The index of the last region found: tried first (guests tend to poll one
    /// device), checked against the immutable bounds like any other, so a stale
    /// or racing value only costs the search.
    hint: AtomicUsize,
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
        let at = self.bases.partition_point(|&b| b < base);
        self.bases.insert(at, base);
        self.ends.insert(at, end);
        let defers = device.defers_work();
        self.regions.insert(
            at,
            Region {
                base,
                size,
                name: String::from(name),
                device: TicketMutex::new(device),
                defers,
            },
        );
        Ok(())
    }

    /// The device owning `addr` and `addr`'s offset into its range. Takes no lock.
    #[inline]
    pub fn find(&self, addr: u64) -> Option<Slot<'_>> {
        let hint = self.hint.load(Ordering::Relaxed);
        let idx = match (self.bases.get(hint), self.ends.get(hint)) {
            (Some(&b), Some(&e)) if b <= addr && addr < e => hint,
            _ => {
                let idx = self.bases.partition_point(|&b| b <= addr).checked_sub(1)?;
                if addr >= self.ends[idx] {
                    return None;
                }
                self.hint.store(idx, Ordering::Relaxed);
                idx
            }
        };
        let r = &self.regions[idx];
        Some(Slot {
            name: r.name.as_str(),
            offset: addr - r.base,
            device: &r.device,
        })
    }

    /// One guest access at `addr`: a read (`write == None`) or a write of the value,
    /// holding only the owning device's lock. `None` when no device owns `addr`;
    /// a write's `Ok` carries 0.
    #[inline]
    pub fn access(
        &self,
        ctx: &mut MmioContext,
        addr: u64,
        size: AccessSize,
        write: Option<u64>,
    ) -> Option<Result<u64, MmioError>> {
        let slot = self.find(addr)?;
        let mut dev = slot.lock();
        Some(match write {
            Some(v) => dev.write(ctx, slot.offset, size, v).map(|()| 0),
            None => dev.read(ctx, slot.offset, size),
        })
    }

    /// VM reset: resets every device on the bus ([`MmioDevice::reset`]), in address
    /// order, lowering their interrupt lines through `irq`. Each device is locked
    /// for its own reset only.
    pub fn reset_all(&self, irq: &mut dyn InterruptSink) {
        for r in &self.regions {
            r.device.lock().reset(irq);
        }
    }

    /// Connects every device on the bus to `signal` ([`MmioDevice::connect_work_signal`]):
    /// it is raised whenever one of them defers work. Call after the last insert.
    pub fn connect_work_signal(&mut self, signal: &WorkSignal) {
        for r in &mut self.regions {
            r.device.get_mut().connect_work_signal(signal);
        }
    }

    /// Whether any device holds deferred work.
    pub fn has_deferred_work(&self) -> bool {
        self.regions
            .iter()
            .filter(|r| r.defers)
            .any(|r| r.device.lock().has_deferred_work())
    }

    /// Resumes the deferred work of every device that has some, each bounded as one
    /// guest access is; returns whether work is still left (call again later).
    /// Devices are locked one at a time, and only those that can defer work: a
    /// device that never does (the vGIC's, the UART) is never locked here.
    pub fn resume_deferred(&self, ctx: &mut MmioContext) -> bool {
        let mut left = false;
        for r in self.regions.iter().filter(|r| r.defers) {
            let mut dev = r.device.lock();
            if dev.has_deferred_work() {
                dev.resume(ctx);
                left |= dev.has_deferred_work();
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

    fn ctx_read(bus: &MmioBus, addr: u64) -> Option<u64> {
        let mut mem = crate::VecMemory::new(0, 0);
        let mut irq = crate::NullInterrupts;
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut irq,
        };
        Some(bus.access(&mut ctx, addr, AccessSize::Word, None)?.unwrap())
    }

    #[test]
    fn routes_by_address_with_offsets() {
        let mut bus = MmioBus::new();
        bus.insert("b", 0x2000, 0x100, Box::new(Tag(2))).unwrap();
        bus.insert("a", 0x1000, 0x100, Box::new(Tag(1))).unwrap();
        assert_eq!(ctx_read(&bus, 0x1000), Some(1 << 32));
        assert_eq!(ctx_read(&bus, 0x10ff), Some(1 << 32 | 0xff));
        assert_eq!(ctx_read(&bus, 0x2004), Some(2 << 32 | 4));
        assert_eq!(ctx_read(&bus, 0x1100), None);
        assert_eq!(ctx_read(&bus, 0xfff), None);
        assert_eq!(ctx_read(&bus, 0x2100), None);
    }

    #[test]
    fn routing_does_not_depend_on_the_previous_lookup() {
        let mut bus = MmioBus::new();
        for i in 1..=5u64 {
            bus.insert("t", 0x1000 * i, 0x100, Box::new(Tag(i)))
                .unwrap();
        }
        for addr in [
            0x3000, 0x3004, 0x1000, 0x30ff, 0x3100, 0x5008, 0x50ff, 0x5100, 0x2000,
        ] {
            let want = (addr % 0x1000 < 0x100).then_some(((addr / 0x1000) << 32) | (addr % 0x1000));
            assert_eq!(ctx_read(&bus, addr), want, "{addr:#x}");
        }
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
        fn defers_work(&self) -> bool {
            true
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

    fn write_all(bus: &MmioBus, irq: &mut Lines, v: impl Fn(u64) -> u64) {
        let mut mem = crate::VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq,
        };
        for i in 0..4u64 {
            bus.access(&mut ctx, 0x1000 * (i + 1), AccessSize::Word, Some(v(i)))
                .unwrap()
                .unwrap();
        }
    }

    #[test]
    fn reset_all_reaches_every_device_and_lowers_their_lines() {
        let bus = busy_bus();
        let mut irq = Lines::default();
        write_all(&bus, &mut irq, |i| i + 7);
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
            assert_eq!(ctx_read(&bus, 0x1000 * (i + 1)), Some(0), "device {i}");
        }
        assert!(!bus.has_deferred_work(), "deferred work dropped by reset");
    }

    /// A device that never defers work and counts how often it is asked.
    struct Never(alloc::sync::Arc<core::sync::atomic::AtomicUsize>);
    impl MmioDevice for Never {
        fn read(&mut self, _: &mut MmioContext, _: u64, _: AccessSize) -> Result<u64, MmioError> {
            Ok(0)
        }
        fn write(
            &mut self,
            _: &mut MmioContext,
            _: u64,
            _: AccessSize,
            _: u64,
        ) -> Result<(), MmioError> {
            Ok(())
        }
        fn reset(&mut self, _: &mut dyn InterruptSink) {}
        fn has_deferred_work(&self) -> bool {
            self.0.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    #[test]
    fn resuming_deferred_work_leaves_devices_that_never_defer_alone() {
        let mut bus = busy_bus();
        let asked = alloc::sync::Arc::new(core::sync::atomic::AtomicUsize::new(0));
        bus.insert("gicr", 0x8000, 0x100, Box::new(Never(asked.clone())))
            .unwrap();
        let signal = WorkSignal::new();
        bus.connect_work_signal(&signal);
        let mut irq = Lines::default();
        write_all(&bus, &mut irq, |i| i);
        let mut mem = crate::VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut irq,
        };
        while bus.resume_deferred(&mut ctx) {}
        assert!(!bus.has_deferred_work());
        assert_eq!(
            asked.load(Ordering::Relaxed),
            0,
            "neither locked nor asked while the others' work was resumed"
        );
    }

    #[test]
    fn resume_deferred_does_one_bounded_round_per_call_until_done() {
        let mut bus = busy_bus();
        let signal = WorkSignal::new();
        bus.connect_work_signal(&signal);
        let mut irq = Lines::default();
        write_all(&bus, &mut irq, |_| 0);
        assert!(!signal.take(), "no work, no signal");
        // Devices 1..=3 defer 1, 2 and 3 units; device 0 none.
        write_all(&bus, &mut irq, |i| i);
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

    /// A device that counts the callers inside it at once and, on a read, waits
    /// (bounded) until `release` is set: it stands for a device in slow I/O.
    struct Gate {
        inside: Arc<AtomicU32>,
        most: Arc<AtomicU32>,
        release: Option<Arc<AtomicBool>>,
    }
    impl MmioDevice for Gate {
        fn read(&mut self, _: &mut MmioContext, _: u64, _: AccessSize) -> Result<u64, MmioError> {
            let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(now, Ordering::SeqCst);
            let mut released = true;
            if let Some(r) = &self.release {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
                while !r.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                    std::thread::yield_now();
                }
                released = r.load(Ordering::SeqCst);
            }
            for _ in 0..1000 {
                core::hint::spin_loop();
            }
            self.inside.fetch_sub(1, Ordering::SeqCst);
            Ok(u64::from(released))
        }
        fn write(
            &mut self,
            _: &mut MmioContext,
            _: u64,
            _: AccessSize,
            _: u64,
        ) -> Result<(), MmioError> {
            Ok(())
        }
        fn reset(&mut self, _: &mut dyn InterruptSink) {}
    }

    extern crate std;
    use alloc::sync::Arc;
    use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    fn gate(release: Option<Arc<AtomicBool>>) -> (Gate, Arc<AtomicU32>) {
        let most = Arc::new(AtomicU32::new(0));
        let g = Gate {
            inside: Arc::new(AtomicU32::new(0)),
            most: most.clone(),
            release,
        };
        (g, most)
    }

    fn read_on(bus: &MmioBus, addr: u64) -> Option<Result<u64, MmioError>> {
        let mut mem = crate::VecMemory::new(0, 0);
        let mut irq = crate::NullInterrupts;
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut irq,
        };
        bus.access(&mut ctx, addr, AccessSize::Word, None)
    }

    #[test]
    fn a_device_busy_in_one_thread_does_not_block_another_device() {
        // Device "slow" stays inside its read until the other thread's access to
        // device "gicr" has completed: with one lock over the whole bus the second
        // access could not start, the first would time out and read 0.
        let release = Arc::new(AtomicBool::new(false));
        let (slow, _) = gate(Some(release.clone()));
        let (fast, _) = gate(None);
        let mut bus = MmioBus::new();
        bus.insert("slow", 0x1000, 0x100, Box::new(slow)).unwrap();
        bus.insert("gicr", 0x2000, 0x100, Box::new(fast)).unwrap();
        std::thread::scope(|s| {
            let blocked = s.spawn(|| read_on(&bus, 0x1000));
            // Wait until the slow device is in use, then use the other one.
            while bus.find(0x1000).unwrap().try_lock().is_some() {
                std::thread::yield_now();
            }
            assert_eq!(read_on(&bus, 0x2004), Some(Ok(1)));
            release.store(true, Ordering::SeqCst);
            assert_eq!(
                blocked.join().unwrap(),
                Some(Ok(1)),
                "the slow access ended released, not timed out"
            );
        });
    }

    #[test]
    fn one_device_is_used_by_one_thread_at_a_time() {
        let (dev, most) = gate(None);
        let mut bus = MmioBus::new();
        bus.insert("shared", 0x1000, 0x100, Box::new(dev)).unwrap();
        std::thread::scope(|s| {
            for _ in 0..2 {
                s.spawn(|| {
                    for _ in 0..50 {
                        assert!(read_on(&bus, 0x1010).is_some());
                    }
                });
            }
        });
        assert_eq!(
            most.load(Ordering::SeqCst),
            1,
            "two callers inside one device"
        );
        // And the lock is per device: a held device can be reported busy.
        let slot = bus.find(0x1010).unwrap();
        let held = slot.lock();
        assert!(bus.find(0x1000).unwrap().try_lock().is_none());
        drop(held);
        assert!(bus.find(0x1000).unwrap().try_lock().is_some());
        assert_eq!(slot.name, "shared");
        assert_eq!(slot.offset, 0x10);
    }
}
