//! Saved-state plumbing shared by the transport and the queues: the bounds-checked
//! little-endian reader every device uses ([`vdev::save::Reader`]). The layout itself
//! is documented on [`crate::MmioTransport`]'s `SaveRestore` implementation.

pub use vdev::save::Reader;
