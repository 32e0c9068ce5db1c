//! The hypervisor's console: the physical PL011, the `log` backend that writes
//! hypervisor lines to it, and the sink that carries guest console output.
//!
//! Hypervisor log lines start with `[el2 LEVEL]` and always begin on a fresh line:
//! if a guest left a line unfinished, the log line is preceded by a newline, so the
//! two streams never mix within one line.

use core::fmt::{self, Write};
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use spin::Mutex;

/// PL011 register offsets and flag bits the driver uses.
mod reg {
    pub const DR: usize = 0x000;
    pub const FR: usize = 0x018;
    pub const FR_TXFF: u32 = 1 << 5;
    pub const FR_RXFE: u32 = 1 << 4;
    pub const IMSC: usize = 0x038;
    /// Receive and receive-timeout interrupt masks.
    pub const IMSC_RX: u32 = (1 << 4) | (1 << 6);
}

struct Uart {
    base: usize,
    /// Whether the last byte written was a newline.
    at_line_start: bool,
}

impl Uart {
    fn put(&mut self, b: u8) {
        if self.base == 0 {
            return;
        }
        // SAFETY: `base` is the PL011 named by the device tree, identity-mapped as
        // device memory (or accessed with the MMU off); FR and DR are 32-bit registers.
        unsafe {
            while core::ptr::read_volatile((self.base + reg::FR) as *const u32) & reg::FR_TXFF != 0
            {
            }
            core::ptr::write_volatile((self.base + reg::DR) as *mut u32, u32::from(b));
        }
        self.at_line_start = b == b'\n';
    }

    fn get(&mut self) -> Option<u8> {
        if self.base == 0 {
            return None;
        }
        // SAFETY: as in `put`.
        unsafe {
            if core::ptr::read_volatile((self.base + reg::FR) as *const u32) & reg::FR_RXFE != 0 {
                return None;
            }
            Some(core::ptr::read_volatile((self.base + reg::DR) as *const u32) as u8)
        }
    }
}

impl Write for Uart {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.put(b'\r');
            }
            self.put(b);
        }
        Ok(())
    }
}

static UART: Mutex<Uart> = Mutex::new(Uart {
    base: 0,
    at_line_start: true,
});

/// Points the console at the PL011 at physical address `base`.
pub fn init(base: usize) {
    UART.lock().base = base;
}

/// Makes the console UART interrupt when input arrives (`on`), or stop doing so
/// while the guest has no room for more.
pub fn set_rx_interrupt(on: bool) {
    let u = UART.lock();
    if u.base != 0 {
        // SAFETY: IMSC of the console PL011 (see `Uart::put`); the receive masks only
        // decide whether it raises its interrupt line on input.
        unsafe {
            core::ptr::write_volatile(
                (u.base + reg::IMSC) as *mut u32,
                if on { reg::IMSC_RX } else { 0 },
            )
        };
    }
}

/// Writes a hypervisor message, starting on a fresh line.
pub fn print_line(args: fmt::Arguments) {
    let mut u = UART.lock();
    if !u.at_line_start {
        u.put(b'\r');
        u.put(b'\n');
    }
    let _ = u.write_fmt(args);
    let _ = u.write_str("\n");
}

/// Writes on the fatal path, which may have interrupted a holder of the console lock
/// on this CPU.
pub fn emergency_write(args: fmt::Arguments) {
    if UART.is_locked() {
        // SAFETY: the fatal path never returns to the interrupted holder; interleaved
        // output is better than a deadlock that hides the cause of the fault.
        unsafe { UART.force_unlock() };
    }
    let _ = UART.lock().write_fmt(args);
}

/// One byte of guest console output, passed through untouched.
pub fn guest_put(b: u8) {
    UART.lock().put(b);
}

/// A byte typed on the host console, if any.
pub fn poll_input() -> Option<u8> {
    UART.lock().get()
}

/// Guest output sink for the emulated PL011.
pub struct GuestConsole;

impl devices::CharSink for GuestConsole {
    fn put(&mut self, byte: u8) {
        guest_put(byte);
    }
}

static LOGGER: Logger = Logger;
static VERBOSE: AtomicBool = AtomicBool::new(false);
/// Messages dropped because the console was not ready.
static DROPPED: AtomicUsize = AtomicUsize::new(0);

struct Logger;

impl log::Log for Logger {
    fn enabled(&self, m: &log::Metadata) -> bool {
        m.level() <= log::Level::Info || VERBOSE.load(Ordering::Relaxed)
    }
    fn log(&self, r: &log::Record) {
        if !self.enabled(r.metadata()) {
            return;
        }
        if UART.lock().base == 0 {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return;
        }
        print_line(format_args!("[el2 {:<5}] {}", r.level(), r.args()));
    }
    fn flush(&self) {}
}

/// Installs the logger; `verbose` enables debug and trace lines.
pub fn init_log(verbose: bool) {
    VERBOSE.store(verbose, Ordering::Relaxed);
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(log::LevelFilter::Trace);
}
