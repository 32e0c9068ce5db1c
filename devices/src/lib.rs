//! `devices` owns the small platform device models of the guest's `virt`-like
//! machine that are not virtio: for now the PL011 UART that carries the guest's
//! console. Each model is a plain state machine behind [`vdev::MmioDevice`].
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod pl011;

pub use pl011::{CharSink, Pl011};
