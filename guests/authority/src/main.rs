//! The reference RayOS authority partition: a bare-metal EL1 program that opens
//! the authority ABI, runs the policy-driven boot sequence
//! ([`authority::boot`]) and then the `rayos> ` shell ([`authority::shell`]) on
//! its PL011. Everything but moving bytes and issuing `HVC #0` is in the
//! host-tested `authority` and `monitor` crates.
//!
//! Platform (what the hypervisor must give the partition): RAM at IPA
//! `0x4000_0000`, 32 MiB, the flat image loaded at `0x4008_0000` and entered at
//! its first byte at EL1h, MMU off, x0 = 0; the guest platform's PL011 at
//! [`boards::guest::PL011_BASE`] (polled, no interrupt needed); `HVC #0` for the
//! authority ABI. No other device.
//!
//! On the host this binary only says it must be built for `aarch64-unknown-none`
//! (so the workspace's host builds and clippy pass).
#![cfg_attr(target_os = "none", no_std, no_main)]

#[cfg(target_os = "none")]
extern crate alloc;

#[cfg(target_os = "none")]
mod partition;

#[cfg(not(target_os = "none"))]
fn main() {
    println!("the authority partition runs bare metal: build it for aarch64-unknown-none (cargo xtask build)");
}
