//! A bit-banged SPI bus in mode 0 (CPOL = 0, CPHA = 0, MSB first) on four GPIO
//! pins, decoded on the slave side into bytes for one [`SpiSlave`]. It is the
//! [`GpioPins`] peripheral of a GPIO controller such as the [`crate::pl061::Pl061`].
//!
//! Edge order, as Linux's `spi-gpio` master drives it (`bitbang_txrx_be_cpha0`):
//! with SCK low the master sets MOSI, raises SCK, reads MISO while SCK is high,
//! then lowers SCK. So the slave samples MOSI on the rising edge and shifts its
//! next MISO bit out on the falling edge; the first MISO bit of a byte is on the
//! line before the byte's first rising edge (from chip select, or from the falling
//! edge that ended the previous byte). Chip select is active low; while it is
//! inactive SCK and MOSI are ignored.

use alloc::vec::Vec;

use vdev::save::{Reader, Writer};
use vdev::{RestoreError, SaveRestore};

use crate::pl061::GpioPins;

/// A byte-level SPI slave (full duplex).
pub trait SpiSlave {
    /// Chip select became active (`true`) or inactive (`false`). A deselect ends
    /// the current transaction; a partial byte is discarded.
    fn select(&mut self, active: bool);
    /// The byte the slave shifts out on MISO during the next byte; asked before
    /// that byte's first clock edge, i.e. before its MOSI byte is known.
    fn miso_byte(&mut self) -> u8;
    /// A complete byte arrived on MOSI.
    fn mosi_byte(&mut self, byte: u8);
}

/// Which GPIO pin (0..=7) carries each signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpiPins {
    pub sck: u8,
    pub mosi: u8,
    pub miso: u8,
    /// Chip select, active low.
    pub cs: u8,
}

impl SpiPins {
    /// Whether all four pins exist on an 8-pin controller and are distinct.
    pub fn valid(&self) -> bool {
        let p = [self.sck, self.mosi, self.miso, self.cs];
        p.iter().all(|&x| x < 8) && (0..4).all(|i| (i + 1..4).all(|j| p[i] != p[j]))
    }
}

/// The slave side of a bit-banged SPI bus.
pub struct SpiBitBang<S> {
    pins: SpiPins,
    slave: S,
    selected: bool,
    sck: bool,
    /// MOSI bits of the byte in progress, and how many.
    shift_in: u8,
    bits: u8,
    /// MISO shift register: bit 7 is on the line.
    shift_out: u8,
    /// The next MISO byte, loaded on the falling edge after a byte completes.
    next_out: Option<u8>,
}

/// Level MISO reads while the slave is not selected (the line floats; a pull-up).
const MISO_IDLE: bool = true;

impl<S: SpiSlave> SpiBitBang<S> {
    /// A bus on `pins` to `slave`. Invalid pin assignments are refused.
    pub fn new(pins: SpiPins, slave: S) -> Option<Self> {
        pins.valid().then_some(Self {
            pins,
            slave,
            selected: false,
            sck: false,
            shift_in: 0,
            bits: 0,
            shift_out: 0,
            next_out: None,
        })
    }

    /// The slave on the bus.
    pub fn slave_mut(&mut self) -> &mut S {
        &mut self.slave
    }

    /// Deselects the slave (if selected) and forgets any partial byte.
    fn end_transaction(&mut self) {
        if self.selected {
            self.slave.select(false);
        }
        self.selected = false;
        self.sck = false;
        self.shift_in = 0;
        self.bits = 0;
        self.next_out = None;
    }

    fn miso(&self) -> bool {
        if self.selected {
            self.shift_out & 0x80 != 0
        } else {
            MISO_IDLE
        }
    }

    fn rising(&mut self, mosi: bool) {
        self.shift_in = (self.shift_in << 1) | u8::from(mosi);
        self.bits += 1;
        if self.bits == 8 {
            let b = self.shift_in;
            self.shift_in = 0;
            self.bits = 0;
            self.slave.mosi_byte(b);
            self.next_out = Some(self.slave.miso_byte());
        }
    }

    fn falling(&mut self) {
        match self.next_out.take() {
            Some(b) => self.shift_out = b,
            None => self.shift_out <<= 1,
        }
    }
}

impl<S: SpiSlave> GpioPins for SpiBitBang<S> {
    fn outputs_changed(&mut self, levels: u8, dir: u8) {
        let bit = |pin: u8| levels & (1 << pin) != 0;
        let driven = |pin: u8| dir & (1 << pin) != 0;
        // An undriven chip select floats high (deselected); SCK and MOSI float low.
        let cs_active = driven(self.pins.cs) && !bit(self.pins.cs);
        let sck = driven(self.pins.sck) && bit(self.pins.sck);
        let mosi = driven(self.pins.mosi) && bit(self.pins.mosi);
        if cs_active != self.selected {
            if cs_active {
                self.selected = true;
                self.shift_in = 0;
                self.bits = 0;
                self.next_out = None;
                self.slave.select(true);
                self.shift_out = self.slave.miso_byte();
            } else {
                if self.bits != 0 {
                    log::warn!(
                        "spi-bitbang: chip select released after {} bits of a byte",
                        self.bits
                    );
                }
                self.end_transaction();
            }
            self.sck = sck;
            return;
        }
        if self.selected && sck != self.sck {
            if sck {
                self.rising(mosi);
            } else {
                self.falling();
            }
        }
        self.sck = sck;
    }

    fn input_levels(&mut self) -> u8 {
        u8::from(self.miso()) << self.pins.miso
    }

    /// The bus returns to idle: the slave deselected (ending any transaction),
    /// partial bytes and both shift registers cleared. The slave's own state (a
    /// TPM's) is its owner's to reset.
    fn reset(&mut self) {
        self.end_transaction();
        self.shift_out = 0;
    }
}

/// Saved state, version 1, after the header: selected, SCK (flags), the MOSI shift
/// register and its bit count (u8 each, count < 8), the MISO shift register (u8),
/// the next MISO byte (flag, u8), then the slave's own blob (length u32, bytes). The
/// pin assignment belongs to the VM's definition.
impl<S: SpiSlave + SaveRestore> SaveRestore for SpiBitBang<S> {
    const SAVE_ID: [u8; 4] = *b"SPIB";
    const SAVE_VERSION: u32 = 1;

    fn save(&self) -> Vec<u8> {
        let Self {
            // Wiring from the VM definition, not state.
            pins: _,
            slave,
            selected,
            sck,
            shift_in,
            bits,
            shift_out,
            next_out,
        } = self;
        let mut w = Writer::new(Self::SAVE_ID, Self::SAVE_VERSION);
        w.flag(*selected)
            .flag(*sck)
            .u8(*shift_in)
            .u8(*bits)
            .u8(*shift_out)
            .flag(next_out.is_some())
            .u8(next_out.unwrap_or(0))
            .bytes(&slave.save());
        w.finish()
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let (_version, mut r) = Reader::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
        let selected = r.flag()?;
        let sck = r.flag()?;
        let shift_in = r.u8()?;
        let bits = r.u8()?;
        let shift_out = r.u8()?;
        let has_next = r.flag()?;
        let next = r.u8()?;
        let inner = r.bytes(usize::MAX)?;
        r.end()?;
        // What the decoder can reach: fewer than 8 bits in, only the bits clocked in
        // so far set, nothing in flight while deselected.
        let reachable = bits < 8
            && u16::from(shift_in) < 1 << bits
            && (has_next || next == 0)
            && (selected || (bits == 0 && !has_next));
        if !reachable {
            return Err(RestoreError::Malformed);
        }
        let Self {
            pins: _,
            slave,
            selected: s_selected,
            sck: s_sck,
            shift_in: s_shift_in,
            bits: s_bits,
            shift_out: s_shift_out,
            next_out,
        } = self;
        slave.restore(inner)?;
        *s_selected = selected;
        *s_sck = sck;
        *s_shift_in = shift_in;
        *s_bits = bits;
        *s_shift_out = shift_out;
        *next_out = has_next.then_some(next);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Echoes each MOSI byte back (XORed) in the next byte; logs everything.
    #[derive(Default)]
    struct Echo {
        last: u8,
        log: Vec<&'static str>,
        got: Vec<u8>,
    }
    impl SpiSlave for Echo {
        fn select(&mut self, active: bool) {
            self.log.push(if active { "sel" } else { "desel" });
            self.last = 0xa5;
        }
        fn miso_byte(&mut self) -> u8 {
            self.last ^ 0xff
        }
        fn mosi_byte(&mut self, byte: u8) {
            self.got.push(byte);
            self.last = byte;
        }
    }

    const PINS: SpiPins = SpiPins {
        sck: 0,
        mosi: 1,
        miso: 2,
        cs: 3,
    };
    const OUT: u8 = 0b1011;

    /// A master bit-banging like Linux spi-gpio (mode 0): only pin writes that
    /// change a level reach the bus, as with a PL061.
    struct Master {
        bus: SpiBitBang<Echo>,
        levels: u8,
    }
    impl Master {
        fn new() -> Self {
            let mut bus = SpiBitBang::new(PINS, Echo::default()).unwrap();
            let levels = 1 << PINS.cs;
            bus.outputs_changed(levels, OUT);
            Master { bus, levels }
        }
        fn set(&mut self, pin: u8, on: bool) {
            let l = if on {
                self.levels | (1 << pin)
            } else {
                self.levels & !(1 << pin)
            };
            if l != self.levels {
                self.levels = l;
                self.bus.outputs_changed(l, OUT);
            }
        }
        fn miso(&mut self) -> bool {
            self.bus.input_levels() & (1 << PINS.miso) != 0
        }
        fn cs(&mut self, active: bool) {
            self.set(PINS.sck, false);
            self.set(PINS.cs, !active);
        }
        fn byte(&mut self, out: u8) -> u8 {
            let mut inb = 0;
            for i in (0..8).rev() {
                self.set(PINS.mosi, out & (1 << i) != 0);
                self.set(PINS.sck, true);
                inb = (inb << 1) | u8::from(self.miso());
                self.set(PINS.sck, false);
            }
            inb
        }
    }

    #[test]
    fn mode0_bytes_are_decoded_and_miso_is_full_duplex() {
        let mut m = Master::new();
        assert!(m.miso(), "MISO idles high");
        m.cs(true);
        let a = m.byte(0x3c);
        let b = m.byte(0x81);
        let c = m.byte(0x00);
        m.cs(false);
        assert_eq!(m.bus.slave_mut().got, [0x3c, 0x81, 0x00]);
        // First byte is what the slave had ready at select, then echoes of the
        // previous MOSI byte.
        assert_eq!([a, b, c], [0xa5 ^ 0xff, 0x3c ^ 0xff, 0x81 ^ 0xff]);
        assert_eq!(m.bus.slave_mut().log, ["sel", "desel"]);
    }

    #[test]
    fn clocks_without_chip_select_are_ignored() {
        let mut m = Master::new();
        m.byte(0xff);
        assert!(m.bus.slave_mut().got.is_empty());
        assert!(m.bus.slave_mut().log.is_empty());
    }

    #[test]
    fn partial_byte_is_dropped_at_deselect() {
        let mut m = Master::new();
        m.cs(true);
        for _ in 0..5 {
            m.set(PINS.sck, true);
            m.set(PINS.sck, false);
        }
        m.cs(false);
        m.cs(true);
        m.byte(0x42);
        assert_eq!(m.bus.slave_mut().got, [0x42]);
        assert_eq!(m.bus.slave_mut().log, ["sel", "desel", "sel"]);
    }

    #[test]
    fn undriven_chip_select_deselects() {
        let mut m = Master::new();
        m.cs(true);
        m.bus.outputs_changed(0, 0); // all pins become inputs
        assert_eq!(m.bus.slave_mut().log, ["sel", "desel"]);
        GpioPins::reset(&mut m.bus);
        assert_eq!(m.bus.slave_mut().log.len(), 2);
    }

    #[test]
    fn invalid_pin_assignments_are_refused() {
        let dup = SpiPins { miso: 0, ..PINS };
        let big = SpiPins { cs: 8, ..PINS };
        assert!(SpiBitBang::new(dup, Echo::default()).is_none());
        assert!(SpiBitBang::new(big, Echo::default()).is_none());
    }

    #[test]
    fn reset_mid_byte_deselects_and_the_next_transaction_starts_clean() {
        let mut m = Master::new();
        m.cs(true);
        for _ in 0..3 {
            m.set(PINS.sck, false);
            m.set(PINS.mosi, true);
            m.set(PINS.sck, true);
        }
        // Reset with chip select active, SCK high and three bits of a byte in.
        GpioPins::reset(&mut m.bus);
        assert_eq!(m.bus.slave_mut().log, ["sel", "desel"]);
        assert!(m.miso(), "MISO idles while deselected");
        // The controller's reset made every pin an input; the master drives again.
        m.levels = 1 << PINS.cs;
        m.bus.outputs_changed(m.levels, OUT);
        m.cs(true);
        m.byte(0x42);
        assert_eq!(
            m.bus.slave_mut().got,
            [0x42],
            "no bits left from before reset"
        );
    }

    /// The echo's pending byte is its state; its logs are the test's.
    impl SaveRestore for Echo {
        const SAVE_ID: [u8; 4] = *b"TECH";
        const SAVE_VERSION: u32 = 1;
        fn save(&self) -> Vec<u8> {
            let Self {
                last,
                // Test logs, not state.
                log: _,
                got: _,
            } = self;
            Writer::new(Self::SAVE_ID, Self::SAVE_VERSION)
                .u8(*last)
                .finish()
        }
        fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
            let (_, mut r) = Reader::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
            let last = r.u8()?;
            r.end()?;
            self.last = last;
            Ok(())
        }
    }

    /// What a master sees: MISO now, then MISO through a byte clocked from where the
    /// bus is (chip select held active, MOSI = 0x5a), then MISO after deselect.
    fn probe_bus(bus: &mut SpiBitBang<Echo>) -> Vec<u8> {
        let miso = |b: &mut SpiBitBang<Echo>| b.input_levels();
        let mut seen = alloc::vec![miso(bus)];
        for i in (0..8).rev() {
            let mosi = u8::from(0x5a & (1 << i) != 0) << PINS.mosi;
            bus.outputs_changed(mosi, OUT);
            bus.outputs_changed(mosi | 1 << PINS.sck, OUT);
            seen.push(miso(bus));
        }
        bus.outputs_changed(1 << PINS.cs, OUT);
        seen.push(miso(bus));
        seen
    }

    vdev::save_restore_tests!(
        saved_state,
        make: || SpiBitBang::new(PINS, Echo::default()).unwrap(),
        drive: |bus: &mut SpiBitBang<Echo>| {
            let mut m = Master {
                bus: core::mem::replace(bus, SpiBitBang::new(PINS, Echo::default()).unwrap()),
                levels: 1 << PINS.cs,
            };
            m.bus.outputs_changed(m.levels, OUT);
            m.cs(true);
            m.byte(0x3c);
            // Three bits of the next byte in, SCK left high.
            for _ in 0..3 {
                m.set(PINS.sck, false);
                m.set(PINS.mosi, true);
                m.set(PINS.sck, true);
            }
            *bus = m.bus;
        },
        probe: probe_bus,
    );
}
