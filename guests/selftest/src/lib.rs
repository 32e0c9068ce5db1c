//! Shared code of the RayOS EL2 test guests: the small bare-metal AArch64 EL1
//! programs (`selftest`, `bench-exits`, `virtio-hostile`) the hypervisor boots
//! to prove its exit handling works, to measure what an exit costs, and to prove
//! a malicious virtio driver cannot hurt it.
//!
//! This crate owns the guest side of the boot contract (entry at IPA 0x4008_0000,
//! MMU off, own stack and BSS), the guest's PL011 console, its EL1 exception
//! vectors (which record injected faults and resume), the SMCCC call helpers,
//! the single-instruction memory probes the checks use and the check harness
//! that prints `PASS`/`FAIL` lines.
//!
//! Unlike the hypervisor's library crates this crate may use `unsafe` and inline
//! assembly: it is a *test guest*, not part of the hypervisor. It must execute
//! exact instructions (`hvc`, `smc`, `ldp` from MMIO, `blr` to an unmapped
//! address, `mrs` of trapped registers) and run without an OS underneath. Every
//! `unsafe` block carries a `// SAFETY:` comment.
//!
//! `selftest` and `bench-exits` also run directly on QEMU without the hypervisor
//! (`qemu-system-aarch64 -M virt -cpu max -m 64M -nographic -kernel <elf>`, which
//! loads the ELF at its link address and enters it at EL1). There SMCCC_VERSION
//! and unknown IDs get QEMU's own PSCI answers, SMC is undefined, the virtio-mmio
//! and PCIe windows answer loads, 64-bit PL011 loads are split instead of refused
//! and the ID registers are not sanitised, so those checks fail; `wfi-wakeup` is
//! not attempted when no hypervisor answers SMCCC_VERSION, because nothing routes
//! the timer interrupt to a bare WFI.
//!
//! The modules that touch hardware only exist on the bare-metal target
//! (`target_os = "none"`); the pure helpers ([`defs`], [`esr`], [`idregs`],
//! [`fixed`], [`detail`](mod@detail), [`tally`], [`global`], [`vring`]) also
//! build on the host, where their unit tests run.
#![cfg_attr(not(test), no_std)]

pub mod defs;
pub mod detail;
pub mod esr;
pub mod fixed;
pub mod global;
pub mod idregs;
pub mod tally;
pub mod vring;

#[cfg(target_os = "none")]
pub mod boot;
#[cfg(target_os = "none")]
pub mod console;
#[cfg(target_os = "none")]
pub mod harness;
#[cfg(target_os = "none")]
pub mod power;
#[cfg(target_os = "none")]
pub mod probe;
#[cfg(target_os = "none")]
pub mod smccc;
#[cfg(target_os = "none")]
pub mod sysreg;
#[cfg(target_os = "none")]
pub mod vectors;
