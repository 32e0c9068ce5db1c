//! An Arm PrimeCell PL011 UART (r1p5) as guests program it: data, flags, line and
//! control registers, interrupt mask/status/clear, and the PrimeCell identification
//! registers. Transmission is instant (the TX FIFO is always empty); received bytes
//! wait in a 32-entry FIFO. Baud-rate and line settings are stored and ignored.

use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

use tock_registers::fields::Field;
use tock_registers::{register_bitfields, RegisterLongName};
use vdev::save::{Reader, Writer};
use vdev::{
    AccessSize, InterruptSink, MmioContext, MmioDevice, MmioError, RestoreError, SaveRestore,
};

/// Register offsets (PL011 TRM, table 3-1).
pub mod reg {
    pub const DR: u64 = 0x000;
    pub const RSR_ECR: u64 = 0x004;
    pub const FR: u64 = 0x018;
    pub const ILPR: u64 = 0x020;
    pub const IBRD: u64 = 0x024;
    pub const FBRD: u64 = 0x028;
    pub const LCR_H: u64 = 0x02c;
    pub const CR: u64 = 0x030;
    pub const IFLS: u64 = 0x034;
    pub const IMSC: u64 = 0x038;
    pub const RIS: u64 = 0x03c;
    pub const MIS: u64 = 0x040;
    pub const ICR: u64 = 0x044;
    pub const DMACR: u64 = 0x048;
    /// PeriphID0..3 then CellID0..3, one byte per word.
    pub const ID_BASE: u64 = 0xfe0;
    pub const ID_END: u64 = 0x1000;
}

register_bitfields! [u32,
    /// UARTDR: the data byte and its receive error flags.
    pub DR [
        DATA OFFSET(0) NUMBITS(8) [],
        FE OFFSET(8) NUMBITS(1) [],
        PE OFFSET(9) NUMBITS(1) [],
        BE OFFSET(10) NUMBITS(1) [],
        OE OFFSET(11) NUMBITS(1) []
    ],
    /// UARTRSR/UARTECR: receive status (sticky errors).
    pub RSR [
        FE OFFSET(0) NUMBITS(1) [],
        PE OFFSET(1) NUMBITS(1) [],
        BE OFFSET(2) NUMBITS(1) [],
        OE OFFSET(3) NUMBITS(1) []
    ],
    /// UARTFR: flags.
    pub FR [
        CTS OFFSET(0) NUMBITS(1) [],
        DSR OFFSET(1) NUMBITS(1) [],
        DCD OFFSET(2) NUMBITS(1) [],
        BUSY OFFSET(3) NUMBITS(1) [],
        RXFE OFFSET(4) NUMBITS(1) [],
        TXFF OFFSET(5) NUMBITS(1) [],
        RXFF OFFSET(6) NUMBITS(1) [],
        TXFE OFFSET(7) NUMBITS(1) [],
        RI OFFSET(8) NUMBITS(1) []
    ],
    /// UARTILPR: IrDA low-power divisor.
    pub ILPR [
        ILPDVSR OFFSET(0) NUMBITS(8) []
    ],
    /// UARTIBRD: integer baud-rate divisor.
    pub IBRD [
        BAUD_DIVINT OFFSET(0) NUMBITS(16) []
    ],
    /// UARTFBRD: fractional baud-rate divisor.
    pub FBRD [
        BAUD_DIVFRAC OFFSET(0) NUMBITS(6) []
    ],
    /// UARTLCR_H: line control.
    pub LCR_H [
        BRK OFFSET(0) NUMBITS(1) [],
        PEN OFFSET(1) NUMBITS(1) [],
        EPS OFFSET(2) NUMBITS(1) [],
        STP2 OFFSET(3) NUMBITS(1) [],
        FEN OFFSET(4) NUMBITS(1) [],
        WLEN OFFSET(5) NUMBITS(2) [],
        SPS OFFSET(7) NUMBITS(1) []
    ],
    /// UARTCR: control.
    pub CR [
        UARTEN OFFSET(0) NUMBITS(1) [],
        SIREN OFFSET(1) NUMBITS(1) [],
        SIRLP OFFSET(2) NUMBITS(1) [],
        LBE OFFSET(7) NUMBITS(1) [],
        TXE OFFSET(8) NUMBITS(1) [],
        RXE OFFSET(9) NUMBITS(1) [],
        DTR OFFSET(10) NUMBITS(1) [],
        RTS OFFSET(11) NUMBITS(1) [],
        OUT1 OFFSET(12) NUMBITS(1) [],
        OUT2 OFFSET(13) NUMBITS(1) [],
        RTSEN OFFSET(14) NUMBITS(1) [],
        CTSEN OFFSET(15) NUMBITS(1) []
    ],
    /// UARTIFLS: FIFO interrupt levels.
    pub IFLS [
        TXIFLSEL OFFSET(0) NUMBITS(3) [],
        RXIFLSEL OFFSET(3) NUMBITS(3) []
    ],
    /// The interrupt bits shared by UARTIMSC, UARTRIS, UARTMIS and UARTICR.
    pub INT [
        RIM OFFSET(0) NUMBITS(1) [],
        CTSM OFFSET(1) NUMBITS(1) [],
        DCDM OFFSET(2) NUMBITS(1) [],
        DSRM OFFSET(3) NUMBITS(1) [],
        RX OFFSET(4) NUMBITS(1) [],
        TX OFFSET(5) NUMBITS(1) [],
        RT OFFSET(6) NUMBITS(1) [],
        FE OFFSET(7) NUMBITS(1) [],
        PE OFFSET(8) NUMBITS(1) [],
        BE OFFSET(9) NUMBITS(1) [],
        OE OFFSET(10) NUMBITS(1) []
    ],
    /// UARTDMACR: DMA control.
    pub DMACR [
        RXDMAE OFFSET(0) NUMBITS(1) [],
        TXDMAE OFFSET(1) NUMBITS(1) [],
        DMAONERR OFFSET(2) NUMBITS(1) []
    ]
];

/// The bits of a register a guest can set: the union of its fields.
const fn field_bits<R: RegisterLongName>(fields: &[Field<u32, R>]) -> u32 {
    let mut bits = 0;
    let mut i = 0;
    while i < fields.len() {
        bits |= fields[i].mask << fields[i].shift;
        i += 1;
    }
    bits
}

/// Writable bits of each read/write register.
pub mod writable {
    use super::*;
    pub const ILPR: u32 = field_bits(&[ILPR::ILPDVSR]);
    pub const IBRD: u32 = field_bits(&[IBRD::BAUD_DIVINT]);
    pub const FBRD: u32 = field_bits(&[FBRD::BAUD_DIVFRAC]);
    pub const LCR_H: u32 = field_bits(&[
        LCR_H::BRK,
        LCR_H::PEN,
        LCR_H::EPS,
        LCR_H::STP2,
        LCR_H::FEN,
        LCR_H::WLEN,
        LCR_H::SPS,
    ]);
    pub const CR: u32 = field_bits(&[
        CR::UARTEN,
        CR::SIREN,
        CR::SIRLP,
        CR::LBE,
        CR::TXE,
        CR::RXE,
        CR::DTR,
        CR::RTS,
        CR::OUT1,
        CR::OUT2,
        CR::RTSEN,
        CR::CTSEN,
    ]);
    pub const IFLS: u32 = field_bits(&[IFLS::TXIFLSEL, IFLS::RXIFLSEL]);
    /// Every interrupt (IMSC, and the bits RIS can hold).
    pub const INT: u32 = field_bits(&[
        INT::RIM,
        INT::CTSM,
        INT::DCDM,
        INT::DSRM,
        INT::RX,
        INT::TX,
        INT::RT,
        INT::FE,
        INT::PE,
        INT::BE,
        INT::OE,
    ]);
    pub const DMACR: u32 = field_bits(&[DMACR::RXDMAE, DMACR::TXDMAE, DMACR::DMAONERR]);
}

/// PeriphID0..3, CellID0..3 of an Arm PL011 r1p5.
pub const ID_BYTES: [u32; 8] = [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1];
/// Receive FIFO depth.
pub const RX_FIFO_DEPTH: usize = 32;
/// Reset value of CR: TXE and RXE set, UART disabled.
const CR_RESET: u32 = CR::TXE::SET.value | CR::RXE::SET.value;
/// The IFLS level "FIFO half full".
const IFLS_HALF: u32 = 0b010;
/// Reset value of IFLS: both FIFOs at half.
const IFLS_RESET: u32 = IFLS::TXIFLSEL.val(IFLS_HALF).value | IFLS::RXIFLSEL.val(IFLS_HALF).value;
/// The interrupts receiving data raises (and draining the FIFO clears).
const INT_RX: u32 = INT::RX::SET.value | INT::RT::SET.value;

/// Where the guest's transmitted bytes go.
pub trait CharSink: Send {
    fn put(&mut self, byte: u8);
}

/// Output of a UART that is only a template for reset values.
struct Discard;

impl CharSink for Discard {
    fn put(&mut self, _: u8) {}
}

/// One emulated PL011.
pub struct Pl011 {
    intid: u32,
    out: Box<dyn CharSink>,
    rx: VecDeque<u8>,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    ris: u32,
    dmacr: u32,
    ilpr: u32,
    /// Received bytes dropped because the FIFO was full (reported in RSR as overrun).
    overrun: bool,
    /// The interrupt level last driven, so unchanged levels are not re-sent.
    line: Option<bool>,
}

impl Pl011 {
    /// A PL011 at reset whose interrupt is `intid` and whose output goes to `out`.
    pub fn new(intid: u32, out: Box<dyn CharSink>) -> Self {
        Self {
            intid,
            out,
            rx: VecDeque::with_capacity(RX_FIFO_DEPTH),
            ..Self::reset_state()
        }
    }

    /// The registers at reset (the interrupt number and output are the caller's).
    fn reset_state() -> Self {
        Self {
            intid: 0,
            out: Box::new(Discard),
            rx: VecDeque::new(),
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            cr: CR_RESET,
            ifls: IFLS_RESET,
            imsc: 0,
            ris: 0,
            dmacr: 0,
            ilpr: 0,
            overrun: false,
            line: None,
        }
    }

    /// Queues bytes typed on the host for the guest; bytes beyond the FIFO depth are
    /// dropped and flagged as an overrun, as the hardware would.
    pub fn push_rx(&mut self, bytes: &[u8], irq: &mut dyn InterruptSink) {
        for &b in bytes {
            if self.rx.len() < RX_FIFO_DEPTH {
                self.rx.push_back(b);
            } else {
                self.overrun = true;
            }
        }
        if !self.rx.is_empty() {
            self.ris |= INT_RX;
        }
        self.update_irq(irq);
    }

    /// Whether the receive FIFO has room (the host may stop reading its UART if not).
    pub fn rx_room(&self) -> usize {
        RX_FIFO_DEPTH - self.rx.len()
    }

    fn flags(&self) -> u32 {
        // Transmission is instant: the TX FIFO is always empty.
        (FR::TXFE::SET
            + FR::RXFE.val(u32::from(self.rx.is_empty()))
            + FR::RXFF.val(u32::from(self.rx.len() == RX_FIFO_DEPTH)))
        .value
    }

    #[inline(always)]
    fn update_irq(&mut self, irq: &mut dyn InterruptSink) {
        let level = self.ris & self.imsc != 0;
        if self.line != Some(level) {
            self.drive_line(irq, level);
        }
    }

    /// Drives the interrupt line to a new `level` (out of line: most accesses leave
    /// it as it is).
    #[inline(never)]
    fn drive_line(&mut self, irq: &mut dyn InterruptSink, level: bool) {
        self.line = Some(level);
        irq.set_level(self.intid, level);
    }

    #[inline(always)]
    fn read_reg(&mut self, offset: u64) -> Result<u32, MmioError> {
        Ok(match offset {
            reg::DR => {
                let b = self.rx.pop_front().unwrap_or(0);
                if self.rx.is_empty() {
                    self.ris &= !INT_RX;
                }
                u32::from(b)
            }
            reg::RSR_ECR => RSR::OE.val(u32::from(self.overrun)).value,
            reg::FR => self.flags(),
            reg::ILPR => self.ilpr,
            reg::IBRD => self.ibrd,
            reg::FBRD => self.fbrd,
            reg::LCR_H => self.lcr_h,
            reg::CR => self.cr,
            reg::IFLS => self.ifls,
            reg::IMSC => self.imsc,
            reg::RIS => self.ris,
            reg::MIS => self.ris & self.imsc,
            reg::ICR => 0,
            reg::DMACR => self.dmacr,
            o if (reg::ID_BASE..reg::ID_END).contains(&o) => {
                ID_BYTES[((o - reg::ID_BASE) / 4) as usize]
            }
            o => reserved_read(o),
        })
    }

    #[inline(always)]
    fn write_reg(&mut self, offset: u64, v: u32) {
        match offset {
            reg::DR => {
                self.out.put(DR::DATA.read(v) as u8);
                self.ris |= INT::TX::SET.value;
            }
            reg::RSR_ECR => self.overrun = false,
            reg::ILPR => self.ilpr = v & writable::ILPR,
            reg::IBRD => self.ibrd = v & writable::IBRD,
            reg::FBRD => self.fbrd = v & writable::FBRD,
            reg::LCR_H => self.lcr_h = v & writable::LCR_H,
            reg::CR => self.cr = v & writable::CR,
            reg::IFLS => self.ifls = v & writable::IFLS,
            reg::IMSC => self.imsc = v & writable::INT,
            reg::ICR => self.ris &= !v,
            reg::DMACR => self.dmacr = v & writable::DMACR,
            o => {
                log::warn!("pl011: write of {v:#x} to read-only or reserved offset {o:#x} ignored")
            }
        }
    }
}

impl MmioDevice for Pl011 {
    // Inlinable: the hypervisor's PL011 exit path calls the concrete device.
    #[inline]
    fn read(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
    ) -> Result<u64, MmioError> {
        // The PL011 is a 32-bit peripheral; Linux and EDK2 use word (and DR byte) accesses.
        if size == AccessSize::Double {
            return Err(MmioError::UnsupportedSize { offset, size });
        }
        let word = offset & !3;
        let v = self.read_reg(word)?;
        self.update_irq(ctx.irq);
        Ok(u64::from(v >> ((offset & 3) * 8)) & size.mask())
    }

    #[inline]
    fn write(
        &mut self,
        ctx: &mut MmioContext,
        offset: u64,
        size: AccessSize,
        value: u64,
    ) -> Result<(), MmioError> {
        if size == AccessSize::Double {
            return Err(MmioError::UnsupportedSize { offset, size });
        }
        if offset & 3 != 0 {
            log::warn!("pl011: sub-word write at unaligned offset {offset:#x} ignored");
            return Ok(());
        }
        self.write_reg(offset, value as u32);
        self.update_irq(ctx.irq);
        Ok(())
    }

    /// Every register back to its reset value, the receive FIFO emptied, the
    /// interrupt line lowered. The output sink and interrupt number stay.
    fn reset(&mut self, irq: &mut dyn InterruptSink) {
        // Everything but the connections comes from the reset template, so a field
        // added later cannot be missed.
        let out = core::mem::replace(&mut self.out, Box::new(Discard));
        let mut rx = core::mem::take(&mut self.rx);
        rx.clear();
        *self = Self {
            intid: self.intid,
            out,
            rx,
            ..Self::reset_state()
        };
        self.line = Some(false);
        irq.set_level(self.intid, false);
    }
}

/// Saved state, version 1, little-endian after the header: the receive FIFO
/// (length u32 ≤ [`RX_FIFO_DEPTH`], then the bytes oldest first), IBRD, FBRD, LCR_H,
/// CR, IFLS, IMSC, RIS, DMACR, ILPR (u32 each, no bits outside their fields), the
/// overrun flag (u8). The interrupt number and output sink belong to the VM's
/// definition, not to the saved state; the interrupt line is driven again on the
/// next access.
impl SaveRestore for Pl011 {
    const SAVE_ID: [u8; 4] = *b"P011";
    const SAVE_VERSION: u32 = 1;

    fn save(&self) -> Vec<u8> {
        let Self {
            // Wiring from the VM definition, not state.
            intid: _,
            out: _,
            rx,
            ibrd,
            fbrd,
            lcr_h,
            cr,
            ifls,
            imsc,
            ris,
            dmacr,
            ilpr,
            overrun,
            // Re-driven on the first access after restore.
            line: _,
        } = self;
        let mut w = Writer::new(Self::SAVE_ID, Self::SAVE_VERSION);
        w.bytes(&rx.iter().copied().collect::<Vec<u8>>());
        for v in [ibrd, fbrd, lcr_h, cr, ifls, imsc, ris, dmacr, ilpr] {
            w.u32(*v);
        }
        w.flag(*overrun);
        w.finish()
    }

    fn restore(&mut self, blob: &[u8]) -> Result<(), RestoreError> {
        let (_version, mut r) = Reader::open(blob, Self::SAVE_ID, Self::SAVE_VERSION)?;
        let rx = r.bytes(RX_FIFO_DEPTH)?;
        let ibrd = r.masked_u32(writable::IBRD)?;
        let fbrd = r.masked_u32(writable::FBRD)?;
        let lcr_h = r.masked_u32(writable::LCR_H)?;
        let cr = r.masked_u32(writable::CR)?;
        let ifls = r.masked_u32(writable::IFLS)?;
        let imsc = r.masked_u32(writable::INT)?;
        let ris = r.masked_u32(writable::INT)?;
        let dmacr = r.masked_u32(writable::DMACR)?;
        let ilpr = r.masked_u32(writable::ILPR)?;
        let overrun = r.flag()?;
        r.end()?;
        let Self {
            intid: _,
            out: _,
            rx: s_rx,
            ibrd: s_ibrd,
            fbrd: s_fbrd,
            lcr_h: s_lcr_h,
            cr: s_cr,
            ifls: s_ifls,
            imsc: s_imsc,
            ris: s_ris,
            dmacr: s_dmacr,
            ilpr: s_ilpr,
            overrun: s_overrun,
            line,
        } = self;
        s_rx.clear();
        s_rx.extend(rx);
        *s_ibrd = ibrd;
        *s_fbrd = fbrd;
        *s_lcr_h = lcr_h;
        *s_cr = cr;
        *s_ifls = ifls;
        *s_imsc = imsc;
        *s_ris = ris;
        *s_dmacr = dmacr;
        *s_ilpr = ilpr;
        *s_overrun = overrun;
        *line = None;
        Ok(())
    }
}

/// A read of a reserved offset: logged, reads as zero.
#[cold]
#[inline(never)]
fn reserved_read(offset: u64) -> u32 {
    log::warn!("pl011: read of reserved offset {offset:#x}, reads as zero");
    0
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::sync::{Arc, Mutex};
    use std::vec::Vec;
    use vdev::VecMemory;

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);
    impl CharSink for Capture {
        fn put(&mut self, b: u8) {
            self.0.lock().unwrap().push(b);
        }
    }
    #[derive(Default)]
    struct Line(Option<bool>);
    impl InterruptSink for Line {
        fn set_level(&mut self, intid: u32, level: bool) {
            assert_eq!(intid, 33);
            self.0 = Some(level);
        }
    }

    struct Rig {
        uart: Pl011,
        out: Capture,
        line: Line,
        mem: VecMemory,
    }
    impl Rig {
        fn new() -> Self {
            let out = Capture::default();
            Rig {
                uart: Pl011::new(33, Box::new(out.clone())),
                out,
                line: Line::default(),
                mem: VecMemory::new(0, 0),
            }
        }
        fn rd(&mut self, off: u64) -> u64 {
            let mut ctx = MmioContext {
                vcpu: 0,
                mem: &mut self.mem,
                irq: &mut self.line,
            };
            self.uart.read(&mut ctx, off, AccessSize::Word).unwrap()
        }
        fn wr(&mut self, off: u64, v: u64) {
            let mut ctx = MmioContext {
                vcpu: 0,
                mem: &mut self.mem,
                irq: &mut self.line,
            };
            self.uart.write(&mut ctx, off, AccessSize::Word, v).unwrap()
        }
    }

    #[test]
    fn id_registers_identify_a_pl011() {
        let mut r = Rig::new();
        let ids: Vec<u64> = (0..8).map(|i| r.rd(reg::ID_BASE + 4 * i)).collect();
        assert_eq!(ids, [0x11, 0x10, 0x14, 0x00, 0x0d, 0xf0, 0x05, 0xb1]);
    }

    #[test]
    fn transmit_goes_to_the_sink_and_raises_tx_when_unmasked() {
        let mut r = Rig::new();
        r.wr(reg::DR, b'h' as u64);
        r.wr(reg::DR, b'i' as u64);
        assert_eq!(&*r.out.0.lock().unwrap(), b"hi");
        assert_eq!(r.line.0, Some(false), "TX masked");
        r.wr(reg::IMSC, u64::from(INT::TX::SET.value));
        assert_eq!(r.line.0, Some(true));
        assert_eq!(r.rd(reg::MIS), u64::from(INT::TX::SET.value));
        r.wr(reg::ICR, u64::from(INT::TX::SET.value));
        assert_eq!(r.line.0, Some(false));
    }

    #[test]
    fn receive_fifo_flags_and_overrun() {
        let mut r = Rig::new();
        assert_eq!(
            r.rd(reg::FR) as u32 & FR::RXFE::SET.value,
            FR::RXFE::SET.value
        );
        r.wr(reg::IMSC, u64::from(INT::RX::SET.value));
        r.uart.push_rx(&[7u8; 40], &mut r.line);
        assert_eq!(r.line.0, Some(true));
        assert_eq!(
            r.rd(reg::FR) as u32 & (FR::RXFF::SET.value | FR::RXFE::SET.value),
            FR::RXFF::SET.value
        );
        assert_eq!(r.rd(reg::RSR_ECR), 1 << 3);
        for _ in 0..32 {
            assert_eq!(r.rd(reg::DR), 7);
        }
        assert_eq!(
            r.rd(reg::FR) as u32 & FR::RXFE::SET.value,
            FR::RXFE::SET.value
        );
        assert_eq!(r.line.0, Some(false));
        assert_eq!(r.rd(reg::DR), 0, "empty FIFO reads zero");
    }

    #[test]
    fn registers_hold_their_writable_bits_and_reserved_space_is_raz_wi() {
        let mut r = Rig::new();
        r.wr(reg::IMSC, 0xffff_ffff);
        assert_eq!(r.rd(reg::IMSC), 0x7ff);
        r.wr(reg::LCR_H, 0x70);
        assert_eq!(r.rd(reg::LCR_H), 0x70);
        assert_eq!(r.rd(reg::CR), 0x300);
        r.wr(0x800, 5);
        assert_eq!(r.rd(0x800), 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut r.mem,
            irq: &mut r.line,
        };
        assert!(r.uart.read(&mut ctx, reg::FR, AccessSize::Double).is_err());
        assert_eq!(
            r.uart
                .read(&mut ctx, reg::ID_BASE + 4, AccessSize::Byte)
                .unwrap(),
            0x10
        );
    }

    /// Every register of the window (the ID block included), read by word.
    fn register_file(r: &mut Rig) -> Vec<u64> {
        (0..reg::ID_END).step_by(4).map(|off| r.rd(off)).collect()
    }

    #[test]
    fn reset_returns_every_register_and_lowers_the_line() {
        let mut fresh = Rig::new();
        let want = register_file(&mut fresh);
        let mut r = Rig::new();
        for (off, v) in [
            (reg::IBRD, 0x1234),
            (reg::FBRD, 0x15),
            (reg::LCR_H, 0x70),
            (reg::CR, 0x301),
            (reg::IFLS, 0x2d),
            (reg::ILPR, 0x42),
            (reg::DMACR, 0x3),
            (
                reg::IMSC,
                u64::from(INT::RX::SET.value | INT::TX::SET.value),
            ),
        ] {
            r.wr(off, v);
        }
        r.wr(reg::DR, u64::from(b'x'));
        r.uart.push_rx(&[5u8; 40], &mut r.line);
        assert_eq!(r.line.0, Some(true), "interrupt raised before reset");
        assert_ne!(register_file(&mut r), want);
        // Reading the register file popped one byte; the FIFO still holds 31.
        assert_eq!(r.uart.rx_room(), 1);

        r.uart.reset(&mut r.line);
        assert_eq!(r.line.0, Some(false), "reset lowers the line");
        assert_eq!(r.uart.rx_room(), RX_FIFO_DEPTH, "FIFO emptied");
        assert_eq!(register_file(&mut r), want);
        assert_eq!(r.rd(reg::RSR_ECR), 0, "overrun cleared");

        // The line is driven again after reset, and output still reaches the sink.
        r.wr(reg::IMSC, u64::from(INT::RX::SET.value));
        r.uart.push_rx(b"a", &mut r.line);
        assert_eq!(r.line.0, Some(true));
        r.wr(reg::DR, u64::from(b'y'));
        assert_eq!(&*r.out.0.lock().unwrap(), b"xy");
    }

    fn wr_uart(u: &mut Pl011, off: u64, v: u64) {
        let mut mem = VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut vdev::NullInterrupts,
        };
        u.write(&mut ctx, off, AccessSize::Word, v).unwrap()
    }

    /// What a guest sees: every register of the window by word (a DR read pops a
    /// byte, so the FIFO's order shows), and what is left of the FIFO.
    fn probe_uart(u: &mut Pl011) -> (Vec<u64>, usize) {
        let mut mem = VecMemory::new(0, 0);
        let mut ctx = MmioContext {
            vcpu: 0,
            mem: &mut mem,
            irq: &mut vdev::NullInterrupts,
        };
        let regs = (0..reg::ID_END)
            .step_by(4)
            .map(|off| u.read(&mut ctx, off, AccessSize::Word).unwrap())
            .collect();
        (regs, u.rx_room())
    }

    vdev::save_restore_tests!(
        saved_state,
        make: || Pl011::new(33, Box::new(Capture::default())),
        drive: |u: &mut Pl011| {
            for (off, v) in [
                (reg::IBRD, 0x1234),
                (reg::FBRD, 0x15),
                (reg::LCR_H, 0x70),
                (reg::CR, 0x301),
                (reg::IFLS, 0x2d),
                (reg::ILPR, 0x42),
                (reg::DMACR, 0x3),
                (reg::IMSC, u64::from(INT::RX::SET.value | INT::TX::SET.value)),
            ] {
                wr_uart(u, off, v);
            }
            wr_uart(u, reg::DR, u64::from(b'x'));
            u.push_rx(&[1, 2, 3, 4, 5], &mut vdev::NullInterrupts);
            u.push_rx(&[7; 40], &mut vdev::NullInterrupts);
        },
        probe: probe_uart,
    );
}
