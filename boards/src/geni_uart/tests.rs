//! [`GeniUart`] against a simulated serial engine that models the command,
//! FIFO and interrupt-status behaviour and panics on a protocol violation.

extern crate std;

use super::*;
use alloc::collections::VecDeque;
use alloc::vec::Vec;

/// The receive watermark the simulated engine was left with, in words.
const RX_WATERMARK_WORDS: usize = 2;

/// A simulated GENI serial engine in UART mode.
struct FakeGeni {
    /// `M_GENI_CMD_ACTIVE`.
    m_active: bool,
    /// The last `SE_UART_TX_TRANS_LEN`.
    trans_len: u32,
    /// Bytes of the running command queued into the FIFO / sent on the wire.
    queued: u32,
    sent: u32,
    /// Transmit FIFO words with the number of bytes each carries.
    tx_fifo: VecDeque<(u32, u32)>,
    /// Bytes that left on the wire.
    wire: Vec<u8>,
    /// `SE_GENI_M_IRQ_STATUS`, `SE_GENI_M_IRQ_EN`.
    m_irq: u32,
    m_en: u32,
    /// A transmit event raised the interrupt.
    tx_interrupted: bool,
    /// `SE_GENI_S_IRQ_STATUS`, `SE_GENI_S_IRQ_EN`.
    s_irq: u32,
    s_en: u32,
    /// The transmitter moves one FIFO word per this many register reads (0: never).
    drain_every: u32,
    reads: u64,
    /// An abort ends the main command.
    abortable: bool,
    /// `S_GENI_CMD_ACTIVE` and the number of `UART_START_READ`s.
    s_active: bool,
    reads_started: u32,
    /// Receive FIFO words with their valid byte count (4: full).
    rx_fifo: VecDeque<(u32, u32)>,
    /// Bytes that arrived with no read command running.
    rx_lost: usize,
    /// Register accesses of any kind.
    accesses: u64,
}

impl FakeGeni {
    fn new() -> Self {
        FakeGeni {
            m_active: false,
            trans_len: 0,
            queued: 0,
            sent: 0,
            tx_fifo: VecDeque::new(),
            wire: Vec::new(),
            m_irq: 0,
            // As a firmware driving the UART by interrupts might leave it.
            m_en: M_CMD_DONE_EN,
            tx_interrupted: false,
            s_irq: 0,
            s_en: 0,
            drain_every: 1,
            reads: 0,
            abortable: true,
            s_active: false,
            reads_started: 0,
            rx_fifo: VecDeque::new(),
            rx_lost: 0,
            accesses: 0,
        }
    }

    /// The transmitter: one FIFO word onto the wire; the command completes once
    /// all its bytes left.
    fn step(&mut self) {
        self.tx_interrupted |= self.m_irq & self.m_en != 0;
        self.reads += 1;
        if self.drain_every == 0 || !self.reads.is_multiple_of(u64::from(self.drain_every)) {
            return;
        }
        if let Some((word, n)) = self.tx_fifo.pop_front() {
            self.wire
                .extend_from_slice(&word.to_le_bytes()[..n as usize]);
            self.sent += n;
        }
        if self.m_active && self.sent == self.trans_len {
            self.m_active = false;
            self.m_irq |= M_CMD_DONE_EN;
        }
        self.tx_interrupted |= self.m_irq & self.m_en != 0;
    }

    /// Bytes arriving on the receive line, then the line going idle (the stale
    /// timeout closes a partial last word).
    fn receive(&mut self, bytes: &[u8]) {
        if !self.s_active {
            self.rx_lost += bytes.len();
            return;
        }
        for w in bytes.chunks(BYTES_PER_FIFO_WORD) {
            let mut packed = [0u8; BYTES_PER_FIFO_WORD];
            packed[..w.len()].copy_from_slice(w);
            self.rx_fifo
                .push_back((u32::from_le_bytes(packed), w.len() as u32));
        }
        if !bytes.is_empty() {
            self.s_irq |= S_RX_FIFO_LAST_EN;
        }
        if self.rx_fifo.len() > RX_WATERMARK_WORDS {
            self.s_irq |= S_RX_FIFO_WATERMARK_EN;
        }
    }

    /// The engine's interrupt output.
    fn irq_line(&self) -> bool {
        self.m_irq & self.m_en != 0 || self.s_irq & self.s_en != 0
    }
}

impl GeniRegs for FakeGeni {
    fn read(&mut self, reg: Reg) -> u32 {
        self.accesses += 1;
        self.step();
        match reg {
            Reg::GeniStatus => {
                (u32::from(self.m_active) * M_GENI_CMD_ACTIVE)
                    | (u32::from(self.s_active) * S_GENI_CMD_ACTIVE)
            }
            Reg::MIrqStatus => self.m_irq,
            Reg::SIrqStatus => self.s_irq,
            Reg::TxFifoStatus => self.tx_fifo.len() as u32,
            Reg::RxFifoStatus => {
                let words = self.rx_fifo.len() as u32;
                match self.rx_fifo.back() {
                    Some(&(_, n)) if n < BYTES_PER_FIFO_WORD as u32 => {
                        words | RX_LAST | n << RX_LAST_BYTE_VALID_SHIFT
                    }
                    _ => words,
                }
            }
            Reg::RxFifo => {
                let (word, _) = self
                    .rx_fifo
                    .pop_front()
                    .expect("protocol violation: RX FIFO read while it is empty");
                word
            }
            other => panic!("protocol violation: read of write-only {other:?}"),
        }
    }

    fn write(&mut self, reg: Reg, value: u32) {
        self.accesses += 1;
        match reg {
            Reg::UartTxTransLen => {
                assert!(
                    !self.m_active,
                    "protocol violation: TX_TRANS_LEN changed under an active command"
                );
                self.trans_len = value;
            }
            Reg::MCmd0 => {
                assert!(
                    !self.m_active,
                    "protocol violation: a new command while one is active"
                );
                assert_eq!(
                    value,
                    UART_START_TX << OPCODE_SHIFT,
                    "protocol violation: unknown main command"
                );
                assert_eq!(
                    self.m_irq & M_CMD_DONE_EN,
                    0,
                    "protocol violation: command started with a stale M_CMD_DONE latched"
                );
                assert_ne!(self.trans_len, 0, "protocol violation: empty transmit");
                self.m_active = true;
                self.queued = 0;
                self.sent = 0;
            }
            Reg::MCmdCtrl => {
                assert_eq!(value, M_GENI_CMD_ABORT, "unexpected M_CMD_CTRL value");
                if self.abortable && self.m_active {
                    self.m_active = false;
                    self.tx_fifo.clear();
                    self.m_irq |= M_CMD_ABORT_EN;
                }
            }
            Reg::MIrqClear => self.m_irq &= !value,
            Reg::SIrqClear => self.s_irq &= !value,
            Reg::MIrqEn => self.m_en = value,
            Reg::SIrqEn => self.s_en = value,
            Reg::SCmd0 => {
                assert!(
                    !self.s_active,
                    "protocol violation: a new read while one is active"
                );
                assert_eq!(value, UART_START_READ << OPCODE_SHIFT);
                self.s_active = true;
                self.reads_started += 1;
            }
            Reg::TxFifo => {
                assert!(
                    self.m_active,
                    "protocol violation: TX FIFO write without a started command"
                );
                assert!(
                    (self.tx_fifo.len() as u32) < TX_FIFO_DEPTH_WORDS,
                    "protocol violation: TX FIFO overflow"
                );
                let left = self.trans_len - self.queued;
                assert!(left > 0, "protocol violation: more bytes than TX_TRANS_LEN");
                let n = left.min(BYTES_PER_FIFO_WORD as u32);
                self.queued += n;
                self.tx_fifo.push_back((value, n));
            }
            other => panic!("protocol violation: write of read-only {other:?}"),
        }
    }
}

#[test]
fn a_line_reaches_the_wire_and_the_engine_ends_idle() {
    let mut fake = FakeGeni::new();
    let mut uart = GeniUart::new();
    uart.write(&mut fake, b"[el2 INFO] RayOS EL2\r\n").unwrap();
    assert_eq!(fake.wire, b"[el2 INFO] RayOS EL2\r\n");
    assert!(!fake.m_active);
    assert_eq!(fake.m_irq, 0, "M_CMD_DONE left latched");
    uart.write(&mut fake, b"second").unwrap();
    assert_eq!(&fake.wire[22..], b"second");
}

#[test]
fn every_length_packs_its_last_partial_word() {
    let text = b"0123456789abcdef";
    for len in 1..=text.len() {
        let mut fake = FakeGeni::new();
        GeniUart::new().write(&mut fake, &text[..len]).unwrap();
        assert_eq!(fake.wire, &text[..len], "{len} bytes");
    }
}

#[test]
fn a_long_write_waits_for_room_in_a_slow_fifo() {
    let text: Vec<u8> = (0..300u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut fake = FakeGeni::new();
    // The transmitter moves a word every 7 reads: the FIFO fills up.
    fake.drain_every = 7;
    GeniUart::new().write(&mut fake, &text).unwrap();
    assert_eq!(fake.wire, text);
}

#[test]
fn a_command_the_firmware_left_running_finishes_first() {
    let mut fake = FakeGeni::new();
    fake.drain_every = 3;
    // The firmware's last line, 6 bytes, still in the FIFO: the driver must not
    // start its own command before it is done.
    fake.trans_len = 6;
    fake.m_active = true;
    fake.queued = 6;
    fake.tx_fifo.push_back((u32::from_le_bytes(*b"UEFI"), 4));
    fake.tx_fifo.push_back((u32::from_le_bytes(*b"!\n\0\0"), 2));
    let mut uart = GeniUart::new();
    uart.write(&mut fake, b"el2").unwrap();
    assert_eq!(fake.wire, b"UEFI!\nel2");
}

#[test]
fn a_hung_firmware_command_is_aborted() {
    let mut fake = FakeGeni::new();
    // A command whose data never came: it can only end by an abort.
    fake.trans_len = 8;
    fake.m_active = true;
    let mut uart = GeniUart::new();
    uart.write(&mut fake, b"ok").unwrap();
    assert_eq!(fake.wire, b"ok");
    assert_eq!(uart.failed(), None);
    assert_eq!(fake.m_irq, 0);
}

#[test]
fn a_stuck_engine_fails_once_and_then_drops_output() {
    let mut fake = FakeGeni::new();
    fake.drain_every = 0;
    fake.abortable = false;
    let mut uart = GeniUart::new();
    assert_eq!(uart.write(&mut fake, b"lost"), Err(Stuck::CommandDone));
    assert_eq!(uart.failed(), Some(Stuck::CommandDone));
    let before = fake.accesses;
    assert_eq!(uart.write(&mut fake, b"more"), Err(Stuck::CommandDone));
    assert_eq!(fake.accesses, before, "a failed engine is not polled again");
}

#[test]
fn a_full_fifo_that_never_drains_gives_up() {
    let mut fake = FakeGeni::new();
    fake.drain_every = 0;
    let mut uart = GeniUart::new();
    let text = [b'x'; 100];
    assert_eq!(uart.write(&mut fake, &text), Err(Stuck::TxFifoFull));
    assert!(!fake.m_active, "the stuck command is aborted");
}

#[test]
fn input_is_read_byte_by_byte_with_partial_last_words() {
    let mut fake = FakeGeni::new();
    let mut uart = GeniUart::new();
    assert_eq!(uart.read(&mut fake), None);
    assert_eq!(fake.reads_started, 1);
    fake.receive(b"hi");
    let got: Vec<u8> = core::iter::from_fn(|| uart.read(&mut fake)).collect();
    assert_eq!(got, b"hi");
    fake.receive(b"Ctrl-] help\r");
    let got: Vec<u8> = core::iter::from_fn(|| uart.read(&mut fake)).collect();
    assert_eq!(got, b"Ctrl-] help\r");
    fake.receive(b"four");
    let got: Vec<u8> = core::iter::from_fn(|| uart.read(&mut fake)).collect();
    assert_eq!(got, b"four");
    assert_eq!(fake.reads_started, 1, "the read command runs on");
    assert_eq!(fake.rx_lost, 0);
}

#[test]
fn a_read_the_firmware_left_running_is_kept() {
    let mut fake = FakeGeni::new();
    fake.s_active = true;
    fake.receive(b"abcde");
    let mut uart = GeniUart::new();
    let got: Vec<u8> = core::iter::from_fn(|| uart.read(&mut fake)).collect();
    assert_eq!(got, b"abcde");
    assert_eq!(fake.reads_started, 0);
}

#[test]
fn every_register_lies_in_the_engine_windows_first_page() {
    const PAGE_BYTES: usize = 4096;
    use Reg::*;
    for r in [
        GeniStatus,
        UartTxTransLen,
        MCmd0,
        MCmdCtrl,
        MIrqStatus,
        MIrqEn,
        MIrqClear,
        SCmd0,
        SIrqStatus,
        SIrqEn,
        SIrqClear,
        TxFifo,
        RxFifo,
        TxFifoStatus,
        RxFifoStatus,
    ] {
        // In the window's first 4 KiB page, which any mapping of the engine covers.
        assert!(r.offset() + 4 <= PAGE_BYTES && PAGE_BYTES <= WINDOW_BYTES);
        assert!(r.offset().is_multiple_of(4));
    }
}

#[test]
fn the_interrupt_is_raised_exactly_while_input_waits() {
    let mut fake = FakeGeni::new();
    let mut uart = GeniUart::new();
    uart.set_rx_interrupt(&mut fake, true);
    assert_eq!(uart.read(&mut fake), None);
    assert!(!fake.irq_line());
    fake.receive(b"typed: 15 bytes");
    assert!(fake.irq_line());
    // The interrupt handler drains the console.
    let got: Vec<u8> = core::iter::from_fn(|| uart.read(&mut fake)).collect();
    assert_eq!(got, b"typed: 15 bytes");
    assert!(!fake.irq_line(), "input drained, interrupt still raised");
    // Output does not interrupt (its events are polled).
    uart.write(&mut fake, b"echo\r\n").unwrap();
    assert!(!fake.tx_interrupted && !fake.irq_line());
    // Masked: input waits, polled, without raising it.
    uart.set_rx_interrupt(&mut fake, false);
    fake.receive(b"q");
    assert!(!fake.irq_line());
    assert_eq!(uart.read(&mut fake), Some(b'q'));
}
