//! Command handlers, one module per command group of Part 3.

pub mod attest;
pub mod audit;
pub mod capability;
pub mod clear;
pub mod context;
pub mod create;
pub mod credential;
pub mod duplication;
pub mod ecc2phase;
pub mod evict;
pub mod hierarchy;
pub mod nv;
pub mod object;
pub mod object_context;
pub mod pcr;
pub mod platform;
pub mod policy;
pub mod random;
pub mod rsa;
pub mod sequence;
pub mod session;
pub mod signing;
pub mod startup;
pub mod symmetric;
