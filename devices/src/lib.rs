//! `devices` owns the small platform device models of the guest's `virt`-like
//! machine that are not virtio: for now the PL011 UART that carries the guest's
//! console, the PL031 real-time clock, and the PL061 GPIO controller whose pins can carry a bit-banged SPI bus
//! ([`spi_bitbang`]) to an [`spi_bitbang::SpiSlave`] (the TPM's SPI interface). Each
//! model is a plain state machine behind [`vdev::MmioDevice`].
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod pl011;
pub mod pl031;
pub mod pl061;
pub mod spi_bitbang;

pub use pl011::{CharSink, Pl011};
pub use pl031::{Pl031, RtcHost};
pub use pl061::{GpioPins, Pl061};
pub use spi_bitbang::{SpiBitBang, SpiPins, SpiSlave};
