//! The guest console: polled output to the PL011 at 0x0900_0000, and the
//! [`outln!`](crate::outln) / [`out!`](crate::out) macros that print to it.

use core::fmt;

use crate::defs::{map::PL011_BASE, pl011};

/// The PL011 transmitter. Stateless: any number of writers may exist.
pub struct Console;

impl Console {
    /// Writes one byte, waiting (boundedly) while the transmit FIFO is full.
    pub fn put(byte: u8) {
        let fr = (PL011_BASE + pl011::FR) as *const u32;
        let dr = (PL011_BASE + pl011::DR) as *mut u32;
        for _ in 0..pl011::TX_POLL_LIMIT {
            // SAFETY: FR is a 32-bit device register of the guest's PL011; MMIO
            // reads have no effect on Rust-visible memory.
            if unsafe { core::ptr::read_volatile(fr) } & pl011::FR_TXFF == 0 {
                break;
            }
        }
        // SAFETY: DR is the PL011 data register; the write sends one character.
        unsafe { core::ptr::write_volatile(dr, u32::from(byte)) };
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                Self::put(b'\r');
            }
            Self::put(b);
        }
        Ok(())
    }
}

/// Prints formatted text to the console.
pub fn print(args: fmt::Arguments<'_>) {
    let _ = fmt::Write::write_fmt(&mut Console, args);
}

/// Prints to the guest console.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::console::print(format_args!($($arg)*)) };
}

/// Prints a line to the guest console.
#[macro_export]
macro_rules! outln {
    () => { $crate::console::print(format_args!("\n")) };
    ($($arg:tt)*) => {{
        $crate::console::print(format_args!($($arg)*));
        $crate::console::print(format_args!("\n"));
    }};
}
