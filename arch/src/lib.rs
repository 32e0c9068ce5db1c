//! `arch` owns the Armv8-A facts the hypervisor reasons with, as pure code that runs
//! on the host as well as at EL2:
//!
//! - [`regs`]: register layouts `aarch64-cpu` lacks, as `tock-registers` bitfields;
//! - [`controls`]: the EL2 control registers (HCR_EL2, MDCR_EL2, CPTR_EL2,
//!   CNTHCTL_EL2) a guest runs under;
//! - [`el2map`]: the descriptors of the hypervisor's own EL2 identity map (W^X);
//! - [`iss`]: typed bitfields for the ISS encodings of ESR_EL2 we decode;
//! - [`exit`]: decoding a trap (ESR_EL2, FAR_EL2, HPFAR_EL2) into the one [`Exit`]
//!   enum that `el2` dispatches on;
//! - [`smccc`]: SMCCC 1.1 and PSCI 1.1 function identifiers, return codes and the
//!   pure part of handling them (argument validation, per-vCPU power state);
//! - [`sysreg`]: system-register encodings and the ID-register sanitising policy;
//! - [`inject`]: the exception-entry arithmetic for injecting aborts and undefined
//!   instructions into a guest's EL1;
//! - [`timer`]: the emulated EL1 physical timer, the virtual timer's interrupt level
//!   and the WFIT wake-up deadline;
//! - [`sgi`]: the ICC_SGI1R_EL1 value that sends an SGI to one physical CPU;
//! - [`entropy`]: which source of randomness the hypervisor may trust;
//! - [`features`]: the early-boot CPU diagnostic (virtualization features decoded
//!   from the ID registers, what the hypervisor requires, what Windows guests need).
//!
//! Nothing here touches a register: `el2` reads the hardware and passes the values in.
#![no_std]
#![forbid(unsafe_code)]

pub mod controls;
pub mod el2map;
pub mod entropy;
pub mod exit;
pub mod features;
pub mod inject;
pub mod irouter;
pub mod iss;
pub mod regs;
pub mod relax;
pub mod sgi;
pub mod smccc;
pub mod sysreg;
pub mod timer;

pub use exit::{decode, AbortKind, Exit, MmioAccess};
