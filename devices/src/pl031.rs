//! An Arm PrimeCell PL031 real-time clock (r1p3) as EDK2's `PL031RealTimeClockLib`
//! and Linux's `rtc-pl031` drive it: a 32-bit seconds counter (RTCDR), the match
//! register (RTCMR) raising the interrupt when the counter reaches it, the load
//! register (RTCLR) that sets the counter, the control register's start bit, the
//! interrupt mask / raw / masked / clear registers and the PrimeCell
//! identification registers.
//!
//! The counter is the host's wall clock ([`RtcHost::now`]) plus an offset: a
//! guest that loads RTCLR moves its own clock only, by changing the offset, which
//! is handed to [`RtcHost::offset_changed`] so the hypervisor can keep it with the
//! VM (a battery-backed clock: a VM reset keeps it). The counter always runs, as
//! on QEMU's model; RTCCR only reports the start bit, which stays set from the
//! first write of 1 until reset.
//!
//! The match interrupt is found by looking at the clock: on every register access,
//! and, while a match is armed (unmasked and not yet raised), whenever the
//! hypervisor resumes deferred device work (on the vCPUs' interrupt exits), so it
//! is raised at the first such point after the counter reaches RTCMR.

use alloc::vec::Vec;

use vdev::save::{Reader, Writer};
use vdev::{
    AccessSize, InterruptSink, MmioContext, MmioDevice, MmioError, RestoreError, SaveRestore,
    WorkSignal,
};

/// Register offsets (PL031 TRM, DDI 0224, table 3-1).
pub mod reg {
    /// RTCDR: the counter (read-only).
    pub const DR: u64 = 0x000;
    /// RTCMR: the match value.
    pub const MR: u64 = 0x004;
    /// RTCLR: loads the counter.
    pub const LR: u64 = 0x008;
    /// RTCCR: control (bit 0, RTCStart).
    pub const CR: u64 = 0x00c;
    /// RTCIMSC: interrupt mask set and clear (1 = enabled).
    pub const IMSC: u64 = 0x010;
    /// RTCRIS: raw interrupt status (read-only).
    pub const RIS: u64 = 0x014;
    /// RTCMIS: masked interrupt status (read-only).
    pub const MIS: u64 = 0x018;
    /// RTCICR: interrupt clear (write-only).
    pub const ICR: u64 = 0x01c;
    /// PeriphID0..3 then CellID0..3, one byte per word.
    pub const ID_BASE: u64 = 0xfe0;
    pub const ID_END: u64 = 0x1000;
    /// Size of the register window.
    pub const WINDOW: u64 = 0x1000;
}

/// RTCCR.RTCStart.
pub const CR_START: u32 = 1 << 0;
/// The RTCINTR bit of RTCIMSC, RTCRIS, RTCMIS and RTCICR.
pub const INTR: u32 = 1 << 0;
/// PeriphID0..3, CellID0..3 of an Arm PL031 (part 0x031, designer 0x41, rev 0).
pub const ID_BYTES: [u8; 8] = [0x31, 0x10, 0x04, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// The host side of the clock.
pub trait RtcHost {
    /// The host's wall clock: seconds since 1970-01-01 00:00:00 UTC (the PL031's
    /// counter is 32 bits wide; it wraps in 2106).
    fn now(&mut self) -> u32;
    /// The guest loaded its clock: its counter is now the host's clock plus
    /// `offset` (wrapping). Called only when the offset changes.
    fn offset_changed(&mut self, offset: u32);
}

/// One emulated PL031 whose time comes from `H`.
pub struct Pl031<H> {
    host: H,
    intid: Option<u32>,
    /// Guest time minus host time, wrapping.
    offset: u32,
    mr: u32,
    /// The last value written to RTCLR (what RTCLR reads).
    lr: u32,
    cr: u32,
    imsc: u32,
    ris: u32,
    /// The counter value up to which a match has been looked for.
    checked: u32,
    /// The interrupt level last driven.
    line: Option<bool>,
    work: Option<WorkSignal>,
}

impl<H: RtcHost> Pl031<H> {
    /// A PL031 at reset whose guest time is the host's plus `offset` (what the
    /// VM last loaded, kept by the hypervisor; 0 for the host's own time), raising
    /// `intid` (level-high) on a match when unmasked.
    pub fn new(mut host: H, intid: Option<u32>, offset: u32) -> Self {
        let checked = host.now().wrapping_add(offset);
        Self {
            host,
            intid,
            offset,
            mr: 0,
            lr: 0,
            cr: 0,
            imsc: 0,
            ris: 0,
            checked,
            line: None,
            work: None,
        }
    }

    /// The guest's time minus the host's (wrapping).
    pub fn offset(&self) -> u32 {
        self.offset
    }

    /// The host side, for tests and the hypervisor.
    pub fn host_mut(&mut self) -> &mut H {
        &mut self.host
    }

    /// The counter now.
    fn count(&mut self) -> u32 {
        self.host.now().wrapping_add(self.offset)
    }

    /// Latches the match interrupt if the counter reached RTCMR since it was last
    /// looked at (a load restarts the look; a host clock that went back, or a
    /// state restored on a host whose clock is behind, passes no match).
    fn check_match(&mut self) {
        let now = self.count();
        let passed = now.wrapping_sub(self.checked);
        let to_match = self.mr.wrapping_sub(self.checked);
        if passed <= i32::MAX as u32 && (1..=passed).contains(&to_match) {
            self.ris |= INTR;
        }
        self.checked = now;
    }

    /// Restarts the look for a match so that a match value equal to the counter
    /// now matches at once (as a write of RTCMR or RTCLR does on the PL031).
    fn rearm(&mut self) {
        self.checked = self.count().wrapping_sub(1);
        self.check_match();
    }

    /// Whether an unmasked match is still to come.
    fn armed(&self) -> bool {
        self.imsc & INTR != 0 && self.ris & INTR == 0
    }

    fn update(&mut self, irq: &mut dyn InterruptSink) {
        if let Some(w) = &self.work {
            if self.armed() {
                w.raise();
            }
        }
        let Some(intid) = self.intid else { return };
        let level = self.ris & self.imsc & INTR != 0;
        if self.line != Some(level) {
            self.line = Some(level);
            irq.set_level(intid, level);
        }
    }

    fn read_reg(&mut self, offset: u64) -> u32 {
        match offset {
            reg::DR => self.count(),
            reg::MR => self.mr,
            reg::LR => self.lr,
            reg::CR => self.cr,
            reg::IMSC => self.imsc,
            reg::RIS => self.ris,
            reg::MIS => self.ris & self.imsc,
            o if (reg::ID_BASE..reg::ID_END).contains(&o) => {
                u32::from(ID_BYTES[((o - reg::ID_BASE) / 4) as usize])
            }
            // RTCICR is write-only; reserved offsets read as zero.
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, value: u32) {
        match offset {
            reg::MR => {
                self.mr = value;
                self.rearm();
            }
            reg::LR => {
                self.lr = value;
                let offset = value.wrapping_sub(self.host.now());
                if offset != self.offset {
                    self.offset = offset;
                    self.host.offset_changed(offset);
                }
                self.rearm();
            }
            // Once started the clock cannot be stopped until reset.
            reg::CR => self.cr |= value & CR_START,
            reg::IMSC => self.imsc = value & INTR,
            reg::ICR => self.ris &= !(value & INTR),
            reg::DR | reg::RIS | reg::MIS => {
                log::warn!("pl031: write to read-only register {offset:#x} ignored")
            }
            o if (reg::ID_BASE..reg::ID_END).contains(&o) => {
                log::warn!("pl031: write to identification register {o:#x} ignored")
            }
            // Reserved offsets: writes ignored.
            _ => {}
        }
    }

    /// Reads may be 8, 16 or 32 bits wide, naturally aligned (EDK2 reads the
    /// identification registers a byte at a time); writes are 32-bit, as both
    /// drivers make them.
    fn check(offset: u64, size: AccessSize, write: bool) -> Result<(), MmioError> {
        if offset >= reg::WINDOW {
            return Err(MmioError::NoRegister { offset });
        }
        if size == AccessSize::Double || (write && size != AccessSize::Word) {
            log::warn!("pl031: {size:?} access at {offset:#x} refused");
            return Err(MmioError::UnsupportedSize { offset, size });
        }
        if !offset.is_multiple_of(size.bytes()) {
            log::warn!("pl031: unaligned access at {offset:#x} refused");
            return Err(MmioError::Unaligned { offset });
        }
        Ok(())
    }
}

impl<H: RtcHost> MmioDevice for Pl031<H> {
    fn read(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        Self::check(offset, size, false)?;
        self.check_match();
        let v = self.read_reg(offset & !3) >> ((offset & 3) * 8);
        self.update(ctx.irq);
        Ok(u64::from(v) & (u64::MAX >> (64 - 8 * size.bytes())))
    }

    fn write(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        Self::check(offset, size, true)?;
        self.check_match();
        self.write_reg(offset, value as u32);
        self.update(ctx.irq);
        Ok(())
    }

    /// Registers back to their reset values (match and load 0, stopped, masked,
    /// no interrupt), the line lowered; the time (the offset) is kept, as a
    /// battery-backed clock keeps it.
    fn reset(&mut self, irq: &mut dyn InterruptSink) {
        let Self {
            host: _,
            intid,
            offset: _,
            mr,
            lr,
            cr,
            imsc,
            ris,
            checked: _,
            line,
            work: _,
        } = self;
        (*mr, *lr, *cr, *imsc, *ris) = (0, 0, 0, 0, 0);
        *line = Some(false);
        if let Some(intid) = intid {
            irq.set_level(*intid, false);
        }
        self.checked = self.count();
    }

    fn defers_work(&self) -> bool {
        true
    }

    fn has_deferred_work(&self) -> bool {
        self.armed()
    }

    fn resume(&mut self, ctx: &mut MmioContext) {
        self.check_match();
        self.update(ctx.irq);
    }

    fn connect_work_signal(&mut self, signal: &WorkSignal) {
        self.work = Some(signal.clone());
    }
}

impl<H: RtcHost> SaveRestore for Pl031<H> {
    const SAVE_ID: [u8; 4] = *b"P031";
    const SAVE_VERSION: u32 = 1;

    fn save(&self) -> Vec<u8> {
        let Self {
            // The host's clock and where the offset is kept: not guest state.
            host: _,
            // Wiring from the VM definition.
            intid: _,
            offset,
            mr,
            lr,
            cr,
            imsc,
            ris,
            checked,
            // Re-driven on the first access after restore.
            line: _,
            work: _,
        } = self;
        let mut w = Writer::new(Self::SAVE_ID, Self::SAVE_VERSION);
        for v in [offset, mr, lr, cr, imsc, ris, checked] {
            w.u32(*v);
        }
        w.finish()
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let (_version, mut r) = Reader::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
        let mut v = [0u32; 7];
        for x in &mut v {
            *x = r.u32()?;
        }
        r.end()?;
        let [offset, mr, lr, cr, imsc, ris, checked] = v;
        if cr & !CR_START != 0 || imsc & !INTR != 0 || ris & !INTR != 0 {
            return Err(RestoreError::Malformed);
        }
        let old = self.offset;
        let Self {
            host,
            intid: _,
            offset: o,
            mr: m,
            lr: l,
            cr: c,
            imsc: i,
            ris: r2,
            checked: ch,
            line,
            work: _,
        } = self;
        (*o, *m, *l, *c, *i, *r2, *ch) = (offset, mr, lr, cr, imsc, ris, checked);
        *line = None;
        if offset != old {
            host.offset_changed(offset);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdev::VecMemory;

    /// A host clock the test sets, recording the offsets it is told.
    #[derive(Default)]
    struct Clock {
        now: u32,
        offsets: Vec<u32>,
    }
    impl RtcHost for Clock {
        fn now(&mut self) -> u32 {
            self.now
        }
        fn offset_changed(&mut self, offset: u32) {
            self.offsets.push(offset);
        }
    }

    #[derive(Default)]
    struct Line(Vec<(u32, bool)>);
    impl InterruptSink for Line {
        fn set_level(&mut self, intid: u32, level: bool) {
            self.0.push((intid, level));
        }
    }

    const INTID: u32 = 34;
    /// 2026-12-05 00:00:00 UTC.
    const T0: u32 = 1_796_428_800;

    fn rtc(now: u32) -> Pl031<Clock> {
        Pl031::new(
            Clock {
                now,
                offsets: Vec::new(),
            },
            Some(INTID),
            0,
        )
    }

    fn rd(g: &mut Pl031<Clock>, irq: &mut Line, off: u64) -> u32 {
        let mut mem = VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq,
        };
        g.read(&mut ctx, off, AccessSize::Word).unwrap() as u32
    }

    fn wr(g: &mut Pl031<Clock>, irq: &mut Line, off: u64, v: u32) {
        let mut mem = VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq,
        };
        g.write(&mut ctx, off, AccessSize::Word, u64::from(v))
            .unwrap()
    }

    fn resume(g: &mut Pl031<Clock>, irq: &mut Line) {
        let mut mem = VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq,
        };
        g.resume(&mut ctx);
    }

    #[test]
    fn the_counter_is_the_host_clock_and_a_load_moves_only_the_guest() {
        let mut g = rtc(T0);
        let mut l = Line::default();
        assert_eq!(rd(&mut g, &mut l, reg::DR), T0);
        g.host_mut().now = T0 + 5;
        assert_eq!(rd(&mut g, &mut l, reg::DR), T0 + 5, "runs with the host");
        // The guest sets its clock back an hour.
        wr(&mut g, &mut l, reg::LR, T0 + 5 - 3600);
        assert_eq!(rd(&mut g, &mut l, reg::LR), T0 + 5 - 3600);
        assert_eq!(g.offset(), 3600u32.wrapping_neg());
        assert_eq!(g.host_mut().offsets, [3600u32.wrapping_neg()]);
        g.host_mut().now = T0 + 65;
        assert_eq!(rd(&mut g, &mut l, reg::DR), T0 + 65 - 3600);
        // Loading the same time again changes no offset.
        wr(&mut g, &mut l, reg::LR, T0 + 65 - 3600);
        assert_eq!(g.host_mut().offsets.len(), 1);
        // Writes to the counter itself are ignored.
        wr(&mut g, &mut l, reg::DR, 7);
        assert_eq!(rd(&mut g, &mut l, reg::DR), T0 + 65 - 3600);
    }

    #[test]
    fn a_kept_offset_and_a_reset_keep_the_guest_time() {
        let mut g = Pl031::new(
            Clock {
                now: T0,
                offsets: Vec::new(),
            },
            Some(INTID),
            100,
        );
        let mut l = Line::default();
        assert_eq!(rd(&mut g, &mut l, reg::DR), T0 + 100);
        wr(&mut g, &mut l, reg::CR, CR_START);
        wr(&mut g, &mut l, reg::MR, 5);
        wr(&mut g, &mut l, reg::LR, T0 + 200);
        wr(&mut g, &mut l, reg::IMSC, INTR);
        MmioDevice::reset(&mut g, &mut l);
        assert_eq!(l.0.last(), Some(&(INTID, false)));
        assert_eq!(rd(&mut g, &mut l, reg::DR), T0 + 200, "time survives reset");
        for r in [reg::MR, reg::LR, reg::CR, reg::IMSC, reg::RIS, reg::MIS] {
            assert_eq!(rd(&mut g, &mut l, r), 0, "register {r:#x} after reset");
        }
    }

    #[test]
    fn control_start_bit_sticks_until_reset() {
        let mut g = rtc(T0);
        let mut l = Line::default();
        assert_eq!(rd(&mut g, &mut l, reg::CR), 0);
        wr(&mut g, &mut l, reg::CR, 0xffff_ffff);
        assert_eq!(
            rd(&mut g, &mut l, reg::CR),
            CR_START,
            "only RTCStart exists"
        );
        wr(&mut g, &mut l, reg::CR, 0);
        assert_eq!(rd(&mut g, &mut l, reg::CR), CR_START, "cannot be stopped");
    }

    #[test]
    fn a_match_raises_the_interrupt_when_unmasked_and_clear_lowers_it() {
        let mut g = rtc(T0);
        let mut l = Line::default();
        wr(&mut g, &mut l, reg::MR, T0 + 10);
        g.host_mut().now = T0 + 9;
        assert_eq!(rd(&mut g, &mut l, reg::RIS), 0, "not yet");
        g.host_mut().now = T0 + 12;
        // Passed between two looks: still a match.
        assert_eq!(rd(&mut g, &mut l, reg::RIS), INTR);
        assert_eq!(rd(&mut g, &mut l, reg::MIS), 0, "masked");
        assert!(!l.0.contains(&(INTID, true)));
        wr(&mut g, &mut l, reg::IMSC, INTR);
        assert_eq!(rd(&mut g, &mut l, reg::MIS), INTR);
        assert_eq!(l.0.last(), Some(&(INTID, true)));
        wr(&mut g, &mut l, reg::ICR, INTR);
        assert_eq!(rd(&mut g, &mut l, reg::RIS), 0);
        assert_eq!(l.0.last(), Some(&(INTID, false)));
        // The counter goes on past the match: no second interrupt.
        g.host_mut().now = T0 + 100;
        assert_eq!(rd(&mut g, &mut l, reg::RIS), 0);
        // A match value equal to the counter matches at once.
        wr(&mut g, &mut l, reg::MR, T0 + 100);
        assert_eq!(rd(&mut g, &mut l, reg::MIS), INTR);
        assert_eq!(l.0.last(), Some(&(INTID, true)));
        // Masking lowers the line, the raw status stays.
        wr(&mut g, &mut l, reg::IMSC, 0);
        assert_eq!(l.0.last(), Some(&(INTID, false)));
        assert_eq!(rd(&mut g, &mut l, reg::RIS), INTR);
    }

    #[test]
    fn an_armed_match_is_deferred_work_raised_without_a_guest_access() {
        let mut g = rtc(T0);
        let mut l = Line::default();
        let signal = WorkSignal::new();
        g.connect_work_signal(&signal);
        assert!(g.defers_work());
        assert!(!g.has_deferred_work());
        wr(&mut g, &mut l, reg::MR, T0 + 30);
        assert!(!signal.take(), "masked: nothing to wait for");
        wr(&mut g, &mut l, reg::IMSC, INTR);
        assert!(signal.take());
        assert!(g.has_deferred_work());
        g.host_mut().now = T0 + 29;
        resume(&mut g, &mut l);
        assert!(g.has_deferred_work());
        assert!(!l.0.contains(&(INTID, true)));
        g.host_mut().now = T0 + 30;
        resume(&mut g, &mut l);
        assert_eq!(l.0.last(), Some(&(INTID, true)));
        assert!(!g.has_deferred_work(), "raised: nothing more to wait for");
    }

    #[test]
    fn a_load_moves_the_match_with_the_counter() {
        let mut g = rtc(T0);
        let mut l = Line::default();
        wr(&mut g, &mut l, reg::IMSC, INTR);
        wr(&mut g, &mut l, reg::MR, T0 + 1000);
        // Jumping the counter over the match by a load is not a match…
        wr(&mut g, &mut l, reg::LR, T0 + 2000);
        assert_eq!(rd(&mut g, &mut l, reg::RIS), 0);
        // …loading exactly the match value is.
        wr(&mut g, &mut l, reg::LR, T0 + 1000);
        assert_eq!(rd(&mut g, &mut l, reg::RIS), INTR);
    }

    #[test]
    fn identification_registers_read_as_a_pl031() {
        let mut g = rtc(T0);
        let mut l = Line::default();
        let ids: Vec<u8> = (reg::ID_BASE..reg::ID_END)
            .step_by(4)
            .map(|o| rd(&mut g, &mut l, o) as u8)
            .collect();
        assert_eq!(ids, ID_BYTES);
        wr(&mut g, &mut l, reg::ID_BASE, 0);
        assert_eq!(rd(&mut g, &mut l, reg::ID_BASE), 0x31);
        // Reserved offsets read as zero, writes ignored; RTCICR reads as zero.
        wr(&mut g, &mut l, 0x100, 0xffff_ffff);
        assert_eq!(rd(&mut g, &mut l, 0x100), 0);
        assert_eq!(rd(&mut g, &mut l, reg::ICR), 0);
    }

    #[test]
    fn narrow_reads_see_bytes_of_the_register_and_bad_accesses_are_refused() {
        let mut g = rtc(0x1234_5678);
        let mut l = Line::default();
        let mut mem = VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut l,
        };
        // EDK2 reads the identification registers a byte at a time.
        assert_eq!(g.read(&mut ctx, 0xff0, AccessSize::Byte), Ok(0x0d));
        assert_eq!(g.read(&mut ctx, reg::DR + 1, AccessSize::Byte), Ok(0x56));
        assert_eq!(g.read(&mut ctx, reg::DR + 2, AccessSize::Half), Ok(0x1234));
        assert_eq!(
            g.read(&mut ctx, reg::DR + 1, AccessSize::Half),
            Err(MmioError::Unaligned { offset: 1 })
        );
        assert_eq!(
            g.write(&mut ctx, reg::LR, AccessSize::Byte, 1),
            Err(MmioError::UnsupportedSize {
                offset: reg::LR,
                size: AccessSize::Byte
            })
        );
        assert_eq!(
            g.write(&mut ctx, reg::LR, AccessSize::Double, 1),
            Err(MmioError::UnsupportedSize {
                offset: reg::LR,
                size: AccessSize::Double
            })
        );
        assert_eq!(
            g.read(&mut ctx, reg::DR, AccessSize::Double),
            Err(MmioError::UnsupportedSize {
                offset: reg::DR,
                size: AccessSize::Double
            })
        );
        assert_eq!(
            g.read(&mut ctx, 0x2, AccessSize::Word),
            Err(MmioError::Unaligned { offset: 0x2 })
        );
        assert_eq!(
            g.read(&mut ctx, reg::WINDOW, AccessSize::Word),
            Err(MmioError::NoRegister {
                offset: reg::WINDOW
            })
        );
        assert_eq!(g.offset(), 0, "nothing changed");
    }

    /// What a guest sees: every register but the counter, which follows the
    /// host's clock, and the offset that gives the counter from it.
    fn probe_rtc(g: &mut Pl031<Clock>) -> Vec<u64> {
        let mut l = Line::default();
        let mut v: Vec<u64> = [reg::MR, reg::LR, reg::CR, reg::IMSC, reg::RIS]
            .iter()
            .map(|&o| u64::from(rd(g, &mut l, o)))
            .collect();
        v.push(u64::from(g.offset()));
        v
    }

    vdev::save_restore_tests!(
        saved_state,
        make: || rtc(T0),
        drive: |g: &mut Pl031<Clock>| {
            let mut l = Line::default();
            wr(g, &mut l, reg::CR, CR_START);
            wr(g, &mut l, reg::LR, T0 - 77);
            wr(g, &mut l, reg::MR, T0 - 77);
            wr(g, &mut l, reg::IMSC, INTR);
        },
        probe: probe_rtc,
    );
}
