//! Command handlers, one module per command group of Part 3.

pub mod capability;
pub mod context;
pub mod hierarchy;
pub mod pcr;
pub mod random;
pub mod startup;
