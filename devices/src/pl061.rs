//! An Arm PrimeCell PL061 GPIO controller (r1p1) as Linux's `gpio-pl061` drives it:
//! eight pins, the address-masked data register (bits [9:2] of the offset select
//! the pins an access reads or writes), direction, the interrupt sense / both-edges
//! / event / mask / raw / masked / clear registers, the alternate-function select
//! (stored, no alternate function exists), and the PrimeCell identification
//! registers. The pins connect to a [`GpioPins`] peripheral: it sees every change of
//! the driven outputs and supplies the levels of the pins it drives.

use alloc::vec::Vec;

use vdev::save::{Reader, Writer};
use vdev::{
    AccessSize, InterruptSink, MmioContext, MmioDevice, MmioError, RestoreError, SaveRestore,
};

/// Register offsets (PL061 TRM, table 3-1).
pub mod reg {
    /// GPIODATA occupies 0x000..=0x3FC; offset bits [9:2] are the pin mask.
    pub const DATA_END: u64 = 0x400;
    pub const DIR: u64 = 0x400;
    pub const IS: u64 = 0x404;
    pub const IBE: u64 = 0x408;
    pub const IEV: u64 = 0x40c;
    pub const IE: u64 = 0x410;
    pub const RIS: u64 = 0x414;
    pub const MIS: u64 = 0x418;
    pub const IC: u64 = 0x41c;
    pub const AFSEL: u64 = 0x420;
    /// PeriphID0..3 then CellID0..3, one byte per word.
    pub const ID_BASE: u64 = 0xfe0;
    pub const ID_END: u64 = 0x1000;
    /// Size of the register window.
    pub const WINDOW: u64 = 0x1000;
    /// Shift of the pin mask inside a GPIODATA offset.
    pub const DATA_MASK_SHIFT: u64 = 2;
}

/// PeriphID0..3, CellID0..3 of an Arm PL061 (part 0x061, designer 0x41, rev 1).
pub const ID_BYTES: [u8; 8] = [0x61, 0x10, 0x04, 0x00, 0x0d, 0xf0, 0x05, 0xb1];
/// Number of pins.
pub const PINS: u32 = 8;

/// What is wired to the controller's pins.
pub trait GpioPins {
    /// The controller's outputs changed: `levels` holds the level driven on each
    /// output pin (bit n = pin n; zero where `dir` says input), `dir` the pins that
    /// are outputs.
    fn outputs_changed(&mut self, levels: u8, dir: u8);
    /// The levels the peripheral drives on the pins (only the input pins' bits are
    /// used).
    fn input_levels(&mut self) -> u8;
    /// The controller is being reset (after it told the peripheral that every pin
    /// became an input): the peripheral returns to its own reset state.
    fn reset(&mut self);
}

/// One emulated PL061 with its pins connected to `P`.
pub struct Pl061<P> {
    pins: P,
    intid: Option<u32>,
    /// Output latch (only the output pins' bits are ever set by GPIODATA writes).
    data: u8,
    dir: u8,
    is: u8,
    ibe: u8,
    iev: u8,
    ie: u8,
    /// Latched edge interrupts (level interrupts are computed from the pins).
    edge_ris: u8,
    afsel: u8,
    /// Pin levels at the last sample, for edge detection.
    last: u8,
    /// The interrupt level last driven.
    line: Option<bool>,
}

impl<P: GpioPins> Pl061<P> {
    /// A PL061 at reset (all pins inputs, interrupts masked) raising `intid`
    /// (level-high) when an unmasked interrupt is pending.
    pub fn new(pins: P, intid: Option<u32>) -> Self {
        let mut g = Self {
            pins,
            intid,
            data: 0,
            dir: 0,
            is: 0,
            ibe: 0,
            iev: 0,
            ie: 0,
            edge_ris: 0,
            afsel: 0,
            last: 0,
            line: None,
        };
        g.last = g.levels();
        g
    }

    /// The peripheral on the pins.
    pub fn pins_mut(&mut self) -> &mut P {
        &mut self.pins
    }

    /// Current level of every pin: the latch for outputs, the peripheral for inputs.
    fn levels(&mut self) -> u8 {
        (self.data & self.dir) | (self.pins.input_levels() & !self.dir)
    }

    /// Samples the pins and latches edge interrupts.
    fn sample(&mut self) -> u8 {
        let now = self.levels();
        let changed = now ^ self.last;
        let rising = changed & now;
        let falling = changed & !now;
        let edge = !self.is;
        let hit = (changed & self.ibe)
            | (rising & self.iev & !self.ibe)
            | (falling & !self.iev & !self.ibe);
        self.edge_ris |= hit & edge;
        self.last = now;
        now
    }

    fn ris(&self) -> u8 {
        // Level-sensitive pins: pending while the pin is at the IEV level.
        let level = self.is & !(self.last ^ self.iev);
        (self.edge_ris & !self.is) | level
    }

    fn update_irq(&mut self, irq: &mut dyn InterruptSink) {
        let Some(intid) = self.intid else { return };
        let level = self.ris() & self.ie != 0;
        if self.line != Some(level) {
            self.line = Some(level);
            irq.set_level(intid, level);
        }
    }

    fn outputs_changed(&mut self) {
        self.pins.outputs_changed(self.data & self.dir, self.dir);
    }

    fn read_reg(&mut self, offset: u64) -> u8 {
        match offset {
            o if o < reg::DATA_END => {
                let mask = (o >> reg::DATA_MASK_SHIFT) as u8;
                self.sample() & mask
            }
            reg::DIR => self.dir,
            reg::IS => self.is,
            reg::IBE => self.ibe,
            reg::IEV => self.iev,
            reg::IE => self.ie,
            reg::RIS => {
                self.sample();
                self.ris()
            }
            reg::MIS => {
                self.sample();
                self.ris() & self.ie
            }
            reg::AFSEL => self.afsel,
            o if (reg::ID_BASE..reg::ID_END).contains(&o) => {
                ID_BYTES[((o - reg::ID_BASE) / 4) as usize]
            }
            // IC is write-only; the rest of the window is reserved: RAZ.
            _ => 0,
        }
    }

    fn write_reg(&mut self, offset: u64, v: u8) {
        match offset {
            o if o < reg::DATA_END => {
                // Only output pins take the written value.
                let mask = (o >> reg::DATA_MASK_SHIFT) as u8 & self.dir;
                let data = (self.data & !mask) | (v & mask);
                if data != self.data {
                    self.data = data;
                    self.outputs_changed();
                }
            }
            reg::DIR => {
                if v != self.dir {
                    self.dir = v;
                    self.outputs_changed();
                }
            }
            reg::IS => self.is = v,
            reg::IBE => self.ibe = v,
            reg::IEV => self.iev = v,
            reg::IE => self.ie = v,
            reg::IC => self.edge_ris &= !v,
            reg::AFSEL => self.afsel = v,
            _ => log::warn!("pl061: write to read-only or reserved register {offset:#x} ignored"),
        }
        self.sample();
    }

    fn check(offset: u64, size: AccessSize) -> Result<(), MmioError> {
        if offset >= reg::WINDOW {
            return Err(MmioError::NoRegister { offset });
        }
        if size == AccessSize::Double {
            log::warn!("pl061: 64-bit access at {offset:#x} refused");
            return Err(MmioError::UnsupportedSize { offset, size });
        }
        if offset & 3 != 0 {
            log::warn!("pl061: unaligned access at {offset:#x} refused");
            return Err(MmioError::Unaligned { offset });
        }
        Ok(())
    }
}

impl<P: GpioPins> MmioDevice for Pl061<P> {
    fn read(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        Self::check(offset, size)?;
        // Registers are 8 bits wide in 32-bit slots; the upper bits read as zero.
        let v = self.read_reg(offset);
        self.update_irq(ctx.irq);
        Ok(u64::from(v))
    }

    fn write(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        Self::check(offset, size)?;
        self.write_reg(offset, value as u8);
        self.update_irq(ctx.irq);
        Ok(())
    }

    /// Every register back to its reset value (all pins inputs, interrupts masked
    /// and cleared), the peripheral told that every pin is an input and then reset
    /// ([`GpioPins::reset`]), the interrupt line lowered.
    fn reset(&mut self, irq: &mut dyn InterruptSink) {
        let Self {
            pins: _,
            intid,
            data,
            dir,
            is,
            ibe,
            iev,
            ie,
            edge_ris,
            afsel,
            last: _,
            line,
        } = self;
        for r in [data, dir, is, ibe, iev, ie, edge_ris, afsel] {
            *r = 0;
        }
        if let Some(intid) = *intid {
            irq.set_level(intid, false);
            *line = Some(false);
        }
        self.pins.outputs_changed(0, 0);
        self.pins.reset();
        self.last = self.levels();
    }
}

/// Saved state, version 1, after the header: GPIODATA latch, GPIODIR, GPIOIS,
/// GPIOIBE, GPIOIEV, GPIOIE, the latched edge interrupts, GPIOAFSEL and the pin
/// levels at the last sample (u8 each), then the peripheral's own blob (length u32,
/// bytes). The interrupt number belongs to the VM's definition; the line is driven
/// again on the next access.
impl<P: GpioPins + SaveRestore> SaveRestore for Pl061<P> {
    const SAVE_ID: [u8; 4] = *b"P061";
    const SAVE_VERSION: u32 = 1;

    fn save(&self) -> Vec<u8> {
        let Self {
            pins,
            // Wiring from the VM definition, not state.
            intid: _,
            data,
            dir,
            is,
            ibe,
            iev,
            ie,
            edge_ris,
            afsel,
            last,
            // Re-driven on the first access after restore.
            line: _,
        } = self;
        let mut w = Writer::new(Self::SAVE_ID, Self::SAVE_VERSION);
        for v in [data, dir, is, ibe, iev, ie, edge_ris, afsel, last] {
            w.u8(*v);
        }
        w.bytes(&pins.save());
        w.finish()
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let (_version, mut r) = Reader::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
        let mut regs = [0u8; 9];
        for v in &mut regs {
            *v = r.u8()?;
        }
        let inner = r.bytes(usize::MAX)?;
        r.end()?;
        let Self {
            pins,
            intid: _,
            data,
            dir,
            is,
            ibe,
            iev,
            ie,
            edge_ris,
            afsel,
            last,
            line,
        } = self;
        // The peripheral last of the checks: if it refuses, nothing has changed.
        pins.restore(inner)?;
        let [d, di, i_s, i_be, i_ev, i_e, e_ris, af, la] = regs;
        (*data, *dir, *is, *ibe, *iev, *ie, *edge_ris, *afsel, *last) =
            (d, di, i_s, i_be, i_ev, i_e, e_ris, af, la);
        *line = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdev::VecMemory;

    /// Records output changes; inputs are whatever the test sets.
    #[derive(Default)]
    struct Probe {
        inputs: u8,
        changes: Vec<(u8, u8)>,
        resets: u32,
    }
    impl GpioPins for Probe {
        fn outputs_changed(&mut self, levels: u8, dir: u8) {
            self.changes.push((levels, dir));
        }
        fn input_levels(&mut self) -> u8 {
            self.inputs
        }
        fn reset(&mut self) {
            self.resets += 1;
        }
    }

    #[derive(Default)]
    struct Line(Vec<(u32, bool)>);
    impl InterruptSink for Line {
        fn set_level(&mut self, intid: u32, level: bool) {
            self.0.push((intid, level));
        }
    }

    fn rd(g: &mut Pl061<Probe>, irq: &mut Line, off: u64) -> u64 {
        let mut mem = VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq,
        };
        g.read(&mut ctx, off, AccessSize::Byte).unwrap()
    }

    fn wr(g: &mut Pl061<Probe>, irq: &mut Line, off: u64, v: u64) {
        let mut mem = VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq,
        };
        g.write(&mut ctx, off, AccessSize::Byte, v).unwrap()
    }

    /// The GPIODATA offset whose address mask selects `pins`.
    fn data(pins: u8) -> u64 {
        u64::from(pins) << 2
    }

    #[test]
    fn id_registers_identify_a_pl061_primecell() {
        let mut g = Pl061::new(Probe::default(), None);
        let mut l = Line::default();
        let ids: Vec<u8> = (0..8)
            .map(|i| rd(&mut g, &mut l, reg::ID_BASE + 4 * i) as u8)
            .collect();
        // Linux's AMBA bus: periphid 0x00041061 (pl061 matches id & 0xfffff), cellid 0xb105f00d.
        let periph = u32::from_le_bytes([ids[0], ids[1], ids[2], ids[3]]);
        let cell = u32::from_le_bytes([ids[4], ids[5], ids[6], ids[7]]);
        assert_eq!(periph & 0x000f_ffff, 0x0004_1061);
        assert_eq!(cell, 0xb105_f00d);
    }

    #[test]
    fn data_address_mask_selects_the_pins_written_and_read() {
        let mut g = Pl061::new(Probe::default(), None);
        let mut l = Line::default();
        wr(&mut g, &mut l, reg::DIR, 0x0f);
        // Write all ones through the mask of pins 0 and 2 only.
        wr(&mut g, &mut l, data(0b0101), 0xff);
        assert_eq!(rd(&mut g, &mut l, data(0xff)), 0b0101);
        // A write whose mask excludes pin 0 leaves it alone.
        wr(&mut g, &mut l, data(0b0110), 0x00);
        assert_eq!(rd(&mut g, &mut l, data(0xff)), 0b0001);
        // Reads return only the masked pins.
        assert_eq!(rd(&mut g, &mut l, data(0b0010)), 0);
        assert_eq!(rd(&mut g, &mut l, data(0b0001)), 1);
        // Input pins read the peripheral, output pins the latch; writes to inputs
        // do not reach the latch.
        g.pins_mut().inputs = 0xf0 | 0x0e;
        assert_eq!(rd(&mut g, &mut l, data(0xff)), 0xf1);
        wr(&mut g, &mut l, data(0xf0), 0x00);
        assert_eq!(rd(&mut g, &mut l, data(0xf0)), 0xf0);
        assert_eq!(g.pins_mut().changes.last(), Some(&(0b0001, 0x0f)));
    }

    #[test]
    fn peripheral_sees_only_real_output_changes() {
        let mut g = Pl061::new(Probe::default(), None);
        let mut l = Line::default();
        wr(&mut g, &mut l, data(0x01), 1); // pin 0 is an input: no change
        assert!(g.pins_mut().changes.is_empty());
        wr(&mut g, &mut l, reg::DIR, 0x01);
        wr(&mut g, &mut l, data(0x01), 1);
        wr(&mut g, &mut l, data(0x01), 1); // same level again
        assert_eq!(g.pins_mut().changes, [(0, 1), (1, 1)]);
    }

    #[test]
    fn edge_interrupts_latch_and_clear() {
        let mut g = Pl061::new(Probe::default(), Some(39));
        let mut l = Line::default();
        wr(&mut g, &mut l, reg::IEV, 0x04); // pin 2 rising; pin 3 falling
        wr(&mut g, &mut l, reg::IE, 0x0c);
        assert_eq!(l.0.last(), Some(&(39, false)));
        g.pins_mut().inputs = 0x0c; // pin 2 rises, pin 3 rises (wrong edge)
        assert_eq!(rd(&mut g, &mut l, reg::RIS), 0x04);
        assert_eq!(l.0.last(), Some(&(39, true)));
        g.pins_mut().inputs = 0x00; // pin 3 falls
        assert_eq!(rd(&mut g, &mut l, reg::MIS), 0x0c);
        wr(&mut g, &mut l, reg::IC, 0x0c);
        assert_eq!(rd(&mut g, &mut l, reg::RIS), 0);
        assert_eq!(l.0.last(), Some(&(39, false)));
        // Both edges on pin 5.
        wr(&mut g, &mut l, reg::IBE, 0x20);
        g.pins_mut().inputs = 0x20;
        assert_eq!(rd(&mut g, &mut l, reg::RIS), 0x20);
        wr(&mut g, &mut l, reg::IC, 0x20);
        g.pins_mut().inputs = 0x00;
        assert_eq!(rd(&mut g, &mut l, reg::RIS), 0x20);
        // Masked interrupts do not raise the line.
        assert_eq!(rd(&mut g, &mut l, reg::MIS), 0);
    }

    #[test]
    fn level_interrupts_follow_the_pin_and_ignore_clear() {
        let mut g = Pl061::new(Probe::default(), Some(39));
        let mut l = Line::default();
        wr(&mut g, &mut l, reg::IS, 0x02);
        wr(&mut g, &mut l, reg::IEV, 0x02); // high level
        wr(&mut g, &mut l, reg::IE, 0x02);
        g.pins_mut().inputs = 0x02;
        assert_eq!(rd(&mut g, &mut l, reg::MIS), 0x02);
        wr(&mut g, &mut l, reg::IC, 0x02);
        assert_eq!(rd(&mut g, &mut l, reg::RIS), 0x02, "level persists");
        g.pins_mut().inputs = 0;
        assert_eq!(rd(&mut g, &mut l, reg::RIS), 0);
        assert_eq!(l.0.last(), Some(&(39, false)));
    }

    #[test]
    fn registers_read_back_and_reset() {
        let mut g = Pl061::new(Probe::default(), None);
        let mut l = Line::default();
        for (r, v) in [
            (reg::DIR, 0x81),
            (reg::IS, 0x42),
            (reg::IBE, 0x24),
            (reg::IEV, 0x18),
            (reg::IE, 0x99),
            (reg::AFSEL, 0x3c),
        ] {
            wr(&mut g, &mut l, r, v);
            assert_eq!(rd(&mut g, &mut l, r), v, "{r:#x}");
        }
        wr(&mut g, &mut l, data(0xff), 0xff);
        MmioDevice::reset(&mut g, &mut l);
        assert_eq!(g.pins_mut().changes.last(), Some(&(0, 0)));
        assert_eq!(g.pins_mut().resets, 1, "the peripheral is reset too");
        for r in [
            reg::DIR,
            reg::IS,
            reg::IBE,
            reg::IEV,
            reg::IE,
            reg::AFSEL,
            reg::RIS,
        ] {
            assert_eq!(rd(&mut g, &mut l, r), 0, "{r:#x}");
        }
        assert_eq!(rd(&mut g, &mut l, data(0xff)), 0);
    }

    #[test]
    fn bad_accesses_are_refused_without_panic() {
        let mut g = Pl061::new(Probe::default(), None);
        let mut l = Line::default();
        let mut mem = VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut l,
        };
        assert_eq!(
            g.read(&mut ctx, 0x1000, AccessSize::Word),
            Err(MmioError::NoRegister { offset: 0x1000 })
        );
        assert_eq!(
            g.read(&mut ctx, 0x401, AccessSize::Byte),
            Err(MmioError::Unaligned { offset: 0x401 })
        );
        assert!(g.write(&mut ctx, 0x400, AccessSize::Double, 1).is_err());
        // Word accesses work; reserved registers read as zero and ignore writes.
        g.write(&mut ctx, 0x800, AccessSize::Word, 0xffff_ffff)
            .unwrap();
        assert_eq!(g.read(&mut ctx, 0x800, AccessSize::Word), Ok(0));
        assert_eq!(g.read(&mut ctx, reg::IC, AccessSize::Word), Ok(0));
        g.write(&mut ctx, reg::DIR, AccessSize::Word, 0x1ff)
            .unwrap();
        assert_eq!(g.read(&mut ctx, reg::DIR, AccessSize::Word), Ok(0xff));
    }

    /// Every register of the window (GPIODATA through every mask, the ID block),
    /// read by word.
    fn register_file(g: &mut Pl061<Probe>, l: &mut Line) -> Vec<u64> {
        (0..reg::WINDOW)
            .step_by(4)
            .map(|off| rd(g, l, off))
            .collect()
    }

    #[test]
    fn reset_returns_every_register_and_lowers_a_raised_line() {
        let mut fresh = Pl061::new(Probe::default(), Some(39));
        let want = register_file(&mut fresh, &mut Line::default());
        let mut g = Pl061::new(Probe::default(), Some(39));
        let mut l = Line::default();
        // Edge interrupt latched on pin 2, outputs driven on pins 0..=1.
        wr(&mut g, &mut l, reg::IEV, 0x04);
        wr(&mut g, &mut l, reg::IE, 0x04);
        wr(&mut g, &mut l, reg::AFSEL, 0x80);
        wr(&mut g, &mut l, reg::DIR, 0x03);
        wr(&mut g, &mut l, data(0x03), 0x03);
        g.pins_mut().inputs = 0x04;
        assert_eq!(rd(&mut g, &mut l, reg::MIS), 0x04);
        g.pins_mut().inputs = 0;
        assert_eq!(l.0.last(), Some(&(39, true)), "interrupt raised");

        MmioDevice::reset(&mut g, &mut l);
        assert_eq!(l.0.last(), Some(&(39, false)), "reset lowers the line");
        assert_eq!(g.pins_mut().changes.last(), Some(&(0, 0)));
        assert_eq!(register_file(&mut g, &mut l), want);
        assert_eq!(l.0.last(), Some(&(39, false)));
        // After reset the line is driven again when an interrupt comes.
        wr(&mut g, &mut l, reg::IEV, 0x01);
        wr(&mut g, &mut l, reg::IE, 0x01);
        g.pins_mut().inputs = 0x01;
        assert_eq!(rd(&mut g, &mut l, reg::RIS), 0x01);
        assert_eq!(l.0.last(), Some(&(39, true)));
    }

    /// The probe's input levels are its state; its logs are the test's.
    impl SaveRestore for Probe {
        const SAVE_ID: [u8; 4] = *b"TPIN";
        const SAVE_VERSION: u32 = 1;
        fn save(&self) -> Vec<u8> {
            let Self {
                inputs,
                // Test logs, not state.
                changes: _,
                resets: _,
            } = self;
            Writer::new(Self::SAVE_ID, Self::SAVE_VERSION)
                .u8(*inputs)
                .finish()
        }
        fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
            let (_, mut r) = Reader::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
            let inputs = r.u8()?;
            r.end()?;
            self.inputs = inputs;
            Ok(())
        }
    }

    /// What a guest sees: every register of the window, GPIODATA through all pins.
    fn probe_gpio(g: &mut Pl061<Probe>) -> Vec<u64> {
        let mut l = Line::default();
        (0..reg::WINDOW)
            .step_by(4)
            .filter(|&off| off >= reg::DATA_END || off == data(0xff))
            .map(|off| rd(g, &mut l, off))
            .collect()
    }

    vdev::save_restore_tests!(
        saved_state,
        make: || Pl061::new(Probe::default(), Some(40)),
        drive: |g: &mut Pl061<Probe>| {
            let mut l = Line::default();
            for (off, v) in [
                (reg::DIR, 0x0f),
                (data(0xff), 0x05),
                (reg::IS, 0x40),
                (reg::IBE, 0x20),
                (reg::IEV, 0x90),
                (reg::IE, 0xf0),
                (reg::AFSEL, 0x01),
            ] {
                wr(g, &mut l, off, v);
            }
            // Rising edges on pins 4, 5 and 7 latch; pin 6 is level-sensitive.
            g.pins_mut().inputs = 0xb0;
            rd(g, &mut l, reg::RIS);
        },
        probe: probe_gpio,
    );
}
