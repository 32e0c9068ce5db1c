//! `xtask` owns the host-side workflow of RayOS EL2: building the hypervisor and
//! the test guests into flat images, packing a VM into a boot bundle, booting it
//! under QEMU (interactively, headless, or driven by a script), checking the
//! self-test guest's verdict, benchmarks, and the whole test suite
//! (`cargo xtask test`).
//!
//! The binary (`src/main.rs`) is a thin front end over [`cli::main`]; the
//! integration tests (`tests/`) drive boots through the same functions, mainly
//! [`run::run_captured`] and [`selftest::parse_selftest`].
#![forbid(unsafe_code)]

pub mod bench;
pub mod bench_boot;
pub mod bench_compose;
pub mod bench_contention;
pub mod bench_disk;
pub mod bench_input;
pub mod bench_nvme;
pub mod bench_sched;
pub mod bench_suspend;
pub mod bench_tpm;
pub mod bench_uefi;
pub mod board_media;
pub mod boot_chain;
pub mod build;
pub mod bundle;
pub mod ci;
pub mod cli;
pub mod efi;
pub mod efivars;
pub mod error;
pub mod esp;
pub mod exec;
pub mod firmware;
pub mod flat;
pub mod fresh;
pub mod fuzz;
pub mod hang;
pub mod kvm;
pub mod layout;
pub mod linux_guest;
pub mod pool;
pub mod qemu;
pub mod qmp;
pub mod run;
pub mod script;
pub mod selftest;
pub mod session;
pub mod setup;
pub mod soak;
pub mod sysdisk;
pub mod windows;
pub mod winready;

pub use error::Error;
pub use layout::Layout;
