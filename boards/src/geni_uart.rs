//! The host console on a Qualcomm GENI serial engine (QUP) running its UART
//! firmware, the Snapdragon X Elite's debug UART: the register model and the
//! polled transmit and receive sequences, written against [`GeniRegs`] so that
//! `el2` supplies the MMIO accesses and the host tests a simulated engine.
//!
//! The engine is used as the platform firmware leaves its debug UART: serial
//! engine clocks, pins, baud rate, word length and FIFO packing (4 bytes to a
//! 32-bit FIFO word, the first byte in bits 7:0) are the firmware's; nothing
//! here programs them. What this module does, with the facts from Linux's
//! `qcom_geni_serial.c` / `geni-se.h` (register offsets and bit positions only):
//!
//! * **Transmit** ([`GeniUart::write`]): a previous main-sequencer command is
//!   waited for (or aborted when it never completes); `M_CMD_DONE` is cleared;
//!   the byte count goes to `SE_UART_TX_TRANS_LEN` and `UART_START_TX` to
//!   `SE_GENI_M_CMD0`; the bytes go to `SE_GENI_TX_FIFOn` a packed word at a
//!   time, each only while `SE_GENI_TX_FIFO_STATUS` shows room in a
//!   [`TX_FIFO_DEPTH_WORDS`]-word FIFO; then `M_CMD_DONE` is polled in
//!   `SE_GENI_M_IRQ_STATUS` and cleared through `SE_GENI_M_IRQ_CLEAR`.
//! * **Receive** ([`GeniUart::read`]): a secondary-sequencer `UART_START_READ`
//!   is started once unless `SE_GENI_STATUS` shows one active; a byte is taken
//!   from `SE_GENI_RX_FIFOn` words as `SE_GENI_RX_FIFO_STATUS` reports them, the
//!   last, partial word (`RX_LAST`) counting only its valid bytes. The
//!   receive events' latch (`SE_GENI_S_IRQ_STATUS`) is cleared before the FIFO
//!   is read, so that with [`GeniUart::set_rx_interrupt`] the engine's
//!   interrupt stays raised exactly while input waits unread; transmit events
//!   never raise it (`SE_GENI_M_IRQ_EN` is cleared: transmit is polled).
//!
//! Every poll is bounded by [`POLL_LIMIT`] register reads: a stuck engine costs
//! the console its output (the driver then stays [`GeniUart::failed`] and drops
//! what it is given), never a hang of the hypervisor.

/// A GENI register the console uses, its offset in the serial engine's window
/// (Linux `geni-se.h` and `qcom_geni_serial.c`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Reg {
    /// `SE_GENI_STATUS`: which sequencers have a command active.
    GeniStatus = 0x040,
    /// `SE_UART_TX_TRANS_LEN`: bytes in the next transmit command.
    UartTxTransLen = 0x270,
    /// `SE_GENI_M_CMD0`: starts a main-sequencer command.
    MCmd0 = 0x600,
    /// `SE_GENI_M_CMD_CTRL_REG`: cancels or aborts the main command.
    MCmdCtrl = 0x604,
    /// `SE_GENI_M_IRQ_STATUS`: main-sequencer events (latched).
    MIrqStatus = 0x610,
    /// `SE_GENI_M_IRQ_EN`: which main-sequencer events raise the interrupt.
    MIrqEn = 0x614,
    /// `SE_GENI_M_IRQ_CLEAR`: write-one-to-clear for `SE_GENI_M_IRQ_STATUS`.
    MIrqClear = 0x618,
    /// `SE_GENI_S_CMD0`: starts a secondary-sequencer command.
    SCmd0 = 0x630,
    /// `SE_GENI_S_IRQ_STATUS`: secondary-sequencer events (latched).
    SIrqStatus = 0x640,
    /// `SE_GENI_S_IRQ_EN`: which secondary-sequencer events raise the interrupt.
    SIrqEn = 0x644,
    /// `SE_GENI_S_IRQ_CLEAR`: write-one-to-clear for `SE_GENI_S_IRQ_STATUS`.
    SIrqClear = 0x648,
    /// `SE_GENI_TX_FIFOn`: the transmit FIFO's write port.
    TxFifo = 0x700,
    /// `SE_GENI_RX_FIFOn`: the receive FIFO's read port.
    RxFifo = 0x780,
    /// `SE_GENI_TX_FIFO_STATUS`: words in the transmit FIFO.
    TxFifoStatus = 0x800,
    /// `SE_GENI_RX_FIFO_STATUS`: words in the receive FIFO, last-word state.
    RxFifoStatus = 0x804,
}

impl Reg {
    /// The register's byte offset from the serial engine's base.
    pub const fn offset(self) -> usize {
        self as usize
    }
}

/// The size of a serial engine's register window (every [`Reg`] lies in it).
pub const WINDOW_BYTES: usize = 0x4000;

/// `SE_GENI_STATUS.M_GENI_CMD_ACTIVE`: the main sequencer (transmit) is busy.
pub const M_GENI_CMD_ACTIVE: u32 = 1 << 0;
/// `SE_GENI_STATUS.S_GENI_CMD_ACTIVE`: the secondary sequencer (receive) is busy.
pub const S_GENI_CMD_ACTIVE: u32 = 1 << 12;
/// `SE_GENI_M_CMD_CTRL_REG.M_GENI_CMD_ABORT`: abort the main command.
pub const M_GENI_CMD_ABORT: u32 = 1 << 1;
/// `SE_GENI_M_IRQ_STATUS.M_CMD_DONE_EN`: the main command completed.
pub const M_CMD_DONE_EN: u32 = 1 << 0;
/// `SE_GENI_M_IRQ_STATUS.M_CMD_ABORT_EN`: the main command was aborted.
pub const M_CMD_ABORT_EN: u32 = 1 << 5;
/// `SE_GENI_S_IRQ_STATUS.S_RX_FIFO_WATERMARK_EN`: the receive FIFO passed its
/// watermark.
pub const S_RX_FIFO_WATERMARK_EN: u32 = 1 << 26;
/// `SE_GENI_S_IRQ_STATUS.S_RX_FIFO_LAST_EN`: the line went idle after a last
/// (possibly partial) word.
pub const S_RX_FIFO_LAST_EN: u32 = 1 << 27;
/// The command opcode's position in `SE_GENI_M_CMD0` / `SE_GENI_S_CMD0`.
pub const OPCODE_SHIFT: u32 = 27;
/// The UART firmware's main-sequencer opcode `UART_START_TX`.
pub const UART_START_TX: u32 = 0x1;
/// The UART firmware's secondary-sequencer opcode `UART_START_READ`.
pub const UART_START_READ: u32 = 0x1;
/// `SE_GENI_TX_FIFO_STATUS.TX_FIFO_WC`: words in the transmit FIFO.
pub const TX_FIFO_WC_MASK: u32 = (1 << 28) - 1;
/// `SE_GENI_RX_FIFO_STATUS.RX_FIFO_WC`: words in the receive FIFO.
pub const RX_FIFO_WC_MASK: u32 = (1 << 25) - 1;
/// `SE_GENI_RX_FIFO_STATUS.RX_LAST`: the last word in the FIFO may be partial.
pub const RX_LAST: u32 = 1 << 31;
/// `SE_GENI_RX_FIFO_STATUS.RX_LAST_BYTE_VALID`: valid bytes in that last word
/// (0 meaning all four).
pub const RX_LAST_BYTE_VALID_SHIFT: u32 = 28;
/// The width of `RX_LAST_BYTE_VALID`.
pub const RX_LAST_BYTE_VALID_MASK: u32 = 0x7 << RX_LAST_BYTE_VALID_SHIFT;

/// Bytes packed into one 32-bit FIFO word (the packing Linux's console and the
/// firmware's debug UART use: the first byte in bits 7:0).
pub const BYTES_PER_FIFO_WORD: usize = 4;
/// The transmit FIFO depth assumed, in words: Linux's default
/// (`DEF_FIFO_DEPTH_WORDS`), no larger than any serial engine's FIFO, so that
/// the FIFO status is never read as having room it lacks.
pub const TX_FIFO_DEPTH_WORDS: u32 = 16;
/// Register reads one poll may spend before the engine is declared stuck.
pub const POLL_LIMIT: u32 = 1 << 20;

/// MMIO access to one serial engine's registers.
pub trait GeniRegs {
    /// Reads the 32-bit register `reg`.
    fn read(&mut self, reg: Reg) -> u32;
    /// Writes `value` to the 32-bit register `reg`.
    fn write(&mut self, reg: Reg, value: u32);
}

/// Where a transmit gave up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stuck {
    /// A command started before (by the firmware or a failed write) never
    /// completed, and aborting it did not either.
    PreviousCommand,
    /// The transmit FIFO never drained below its depth.
    TxFifoFull,
    /// The transmit command never reported `M_CMD_DONE`.
    CommandDone,
}

/// The console's state: the receive word being unpacked, whether the receive
/// command was started, and whether the engine was found stuck.
#[derive(Debug, Default)]
pub struct GeniUart {
    rx_word: u32,
    rx_left: u8,
    rx_started: bool,
    failed: Option<Stuck>,
}

impl GeniUart {
    /// A console on an engine the firmware left configured as a UART.
    pub const fn new() -> Self {
        GeniUart {
            rx_word: 0,
            rx_left: 0,
            rx_started: false,
            failed: None,
        }
    }

    /// Why transmitting stopped, when the engine was found stuck: output is
    /// then dropped rather than polled for again.
    pub fn failed(&self) -> Option<Stuck> {
        self.failed
    }

    /// Makes the engine interrupt when input arrives (`on`: receive watermark
    /// and last-word events), or not; transmit events never interrupt.
    pub fn set_rx_interrupt(&mut self, r: &mut impl GeniRegs, on: bool) {
        r.write(Reg::MIrqEn, 0);
        let rx = S_RX_FIFO_WATERMARK_EN | S_RX_FIFO_LAST_EN;
        r.write(Reg::SIrqEn, if on { rx } else { 0 });
    }

    /// Transmits `bytes` (as one command per [`u32::MAX`] bytes), returning
    /// when the engine reports them sent.
    pub fn write(&mut self, r: &mut impl GeniRegs, bytes: &[u8]) -> Result<(), Stuck> {
        if let Some(why) = self.failed {
            return Err(why);
        }
        for chunk in bytes.chunks(u32::MAX as usize) {
            if let Err(why) = transmit(r, chunk) {
                self.failed = Some(why);
                return Err(why);
            }
        }
        Ok(())
    }

    /// The next received byte, if one is waiting.
    pub fn read(&mut self, r: &mut impl GeniRegs) -> Option<u8> {
        if !self.rx_started {
            if r.read(Reg::GeniStatus) & S_GENI_CMD_ACTIVE == 0 {
                r.write(Reg::SCmd0, UART_START_READ << OPCODE_SHIFT);
            }
            self.rx_started = true;
        }
        if self.rx_left == 0 {
            let events = r.read(Reg::SIrqStatus);
            if events != 0 {
                r.write(Reg::SIrqClear, events);
            }
            let status = r.read(Reg::RxFifoStatus);
            let words = status & RX_FIFO_WC_MASK;
            if words == 0 {
                return None;
            }
            let valid = (status & RX_LAST_BYTE_VALID_MASK) >> RX_LAST_BYTE_VALID_SHIFT;
            self.rx_left = if words == 1 && status & RX_LAST != 0 && valid != 0 {
                valid.min(BYTES_PER_FIFO_WORD as u32) as u8
            } else {
                BYTES_PER_FIFO_WORD as u8
            };
            self.rx_word = r.read(Reg::RxFifo);
        }
        let [b, ..] = self.rx_word.to_le_bytes();
        self.rx_word >>= 8;
        self.rx_left -= 1;
        Some(b)
    }
}

/// Polls `reg` until `done(value)`, at most [`POLL_LIMIT`] reads.
fn poll(r: &mut impl GeniRegs, reg: Reg, done: impl Fn(u32) -> bool) -> bool {
    (0..POLL_LIMIT).any(|_| done(r.read(reg)))
}

/// Waits for `M_CMD_DONE` of the running main command and clears it.
fn wait_done(r: &mut impl GeniRegs) -> bool {
    let done = poll(r, Reg::MIrqStatus, |s| s & M_CMD_DONE_EN != 0);
    if done {
        r.write(Reg::MIrqClear, M_CMD_DONE_EN);
    }
    done
}

/// Aborts the running main command; true once the engine confirms it.
fn abort(r: &mut impl GeniRegs) -> bool {
    r.write(Reg::MCmdCtrl, M_GENI_CMD_ABORT);
    let aborted = poll(r, Reg::MIrqStatus, |s| s & M_CMD_ABORT_EN != 0);
    r.write(Reg::MIrqClear, M_CMD_ABORT_EN | M_CMD_DONE_EN);
    aborted && r.read(Reg::GeniStatus) & M_GENI_CMD_ACTIVE == 0
}

/// One `UART_START_TX` command carrying `bytes` (at most `u32::MAX`).
fn transmit(r: &mut impl GeniRegs, bytes: &[u8]) -> Result<(), Stuck> {
    if bytes.is_empty() {
        return Ok(());
    }
    if r.read(Reg::GeniStatus) & M_GENI_CMD_ACTIVE != 0 && !wait_done(r) && !abort(r) {
        return Err(Stuck::PreviousCommand);
    }
    r.write(Reg::MIrqClear, M_CMD_DONE_EN);
    r.write(Reg::UartTxTransLen, bytes.len() as u32);
    r.write(Reg::MCmd0, UART_START_TX << OPCODE_SHIFT);
    for word in bytes.chunks(BYTES_PER_FIFO_WORD) {
        let room = poll(r, Reg::TxFifoStatus, |s| {
            s & TX_FIFO_WC_MASK < TX_FIFO_DEPTH_WORDS
        });
        if !room {
            abort(r);
            return Err(Stuck::TxFifoFull);
        }
        let mut packed = [0u8; BYTES_PER_FIFO_WORD];
        packed[..word.len()].copy_from_slice(word);
        r.write(Reg::TxFifo, u32::from_le_bytes(packed));
    }
    if !wait_done(r) {
        abort(r);
        return Err(Stuck::CommandDone);
    }
    Ok(())
}

#[cfg(test)]
mod tests;
