//! `vtpm` owns RayOS EL2's TPM 2.0: the command engine ([`Tpm`]: marshalling,
//! dispatch, PCRs, hierarchies, the DRBG), authorization — password, HMAC and
//! policy sessions with AES-CFB/XOR parameter encryption, unsalted or salted
//! with ECC P-256 or RSA, the USER, ADMIN and DUP roles ([`session`],
//! [`authorize`]) — objects (ECC P-256/P-384 and RSA-1024/2048/3072 keys: deterministic
//! primaries, signing, RSA encryption, external keys, contexts, persistence,
//! change of authValue, duplication, import and rewrap; hash sequences —
//! [`object`], [`public`], [`rsa_key`], [`rsa_pad`]), attestation (Quote,
//! Certify, CertifyCreation, GetTime, NV_Certify) and credentials
//! (MakeCredential, ActivateCredential), NV indices ([`nvindex`]),
//! dictionary-attack protection, its non-volatile image ([`nv`]), the
//! snapshot of its volatile state ([`snapshot`]), the two MMIO front ends guests
//! talk to — TIS ([`tis::Tis`]) and CRB ([`crb::Crb`]), both [`vdev::MmioDevice`]s
//! and [`vdev::SaveRestore`]s over the same engine — and, behind the `std`
//! feature, a host simulator speaking the Microsoft TPM simulator TCP protocol so
//! real TPM clients (tpm2-tools) can drive the engine.
//!
//! Commands not in [`dispatch::COMMANDS`] do not exist: they answer
//! TPM_RC_COMMAND_CODE and are absent from GetCapability(TPM_CAP_COMMANDS).
#![cfg_attr(not(feature = "std"), no_std)]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod auth;
pub mod authorize;
pub mod bn;
pub mod commands;
pub mod crb;
pub mod defs;
pub mod dispatch;
pub mod drbg;
pub mod ek;
pub mod engine;
pub mod hash;
pub mod marshal;
pub mod nv;
pub mod nvindex;
pub mod nvrate;
pub mod object;
pub mod pcr;
pub mod public;
pub mod rsa_key;
pub mod rsa_pad;
pub mod session;
#[cfg(feature = "std")]
pub mod sim;
pub mod snapshot;
pub mod tis;
pub mod tis_regs;
pub mod tis_spi;

pub use drbg::Entropy;
pub use engine::{TimeSource, Tpm};
pub use nv::{MemNvStore, NvError, NvStore};
#[cfg(feature = "std")]
pub use sim::run_simulator;

#[cfg(test)]
mod fuzz_tests;
#[cfg(test)]
mod object_tests;
#[cfg(test)]
mod platform_tests;
#[cfg(test)]
mod rsa_tests;
#[cfg(test)]
mod session_tests;
#[cfg(test)]
mod sm2_tests;
#[cfg(test)]
mod tests;
