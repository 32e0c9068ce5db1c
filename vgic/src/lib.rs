//! `vgic` owns the virtual GICv3 of one VM as a pure library: the distributor (GICD)
//! and redistributor (GICR) register model, the state of every interrupt, and the
//! list-register policy that moves interrupts into and out of the virtual CPU
//! interface. `el2` drives it with the real ICH_* registers through the
//! [`ListRegisters`] trait; everything here runs unchanged in host tests.
//!
//! # What is modelled
//! - A GICv3 with **affinity routing always on** (GICD_CTLR.ARE RAO/WI, no legacy
//!   mode) and **one Security state** (GICD_CTLR.DS RAO/WI), like KVM's vGIC: Group 0
//!   and Group 1 are enabled by GICD_CTLR bits 0 and 1 (the bits the Non-secure view
//!   of a two-state GIC calls EnableGrp1NS and EnableGrp1A, so Linux, EDK2 and Windows
//!   writing those enable both groups). IGRPMODR and NSACR are RAZ/WI as the
//!   architecture requires with DS = 1.
//! - 1..=[`config::MAX_VCPUS`] vCPUs with any distinct MPIDR affinities, and 32..=988
//!   SPIs ([`VgicConfig`]).
//! - GICD: CTLR, TYPER (ITLinesNumber, CPUNumber, IDbits = 10, A3V; no LPIs, no MBIs),
//!   IIDR, TYPER2 (RAZ), IGROUPR, IS/ICENABLER, IS/ICPENDR, IS/ICACTIVER, IPRIORITYR
//!   (byte access, upper [`VgicConfig::priority_bits`] kept), ICFGR, IROUTER (64-bit or
//!   32-bit halves; IRM = 1 is 1-of-N: any vCPU may take the SPI; a target naming no
//!   vCPU is stored, logged, and the SPI is delivered nowhere), PIDR2 (ArchRev 3),
//!   CIDR0..3. SGI/PPI fields of GICD registers and the legacy GICv2 registers
//!   (ITARGETSR, SGIR, C/SPENDSGIR) are RAZ/WI.
//! - GICR per vCPU at a 0x20000 stride: RD_base CTLR (no LPIs), IIDR, TYPER
//!   (Processor_Number, affinity, Last on the final one), WAKER (ProcessorSleep with
//!   ChildrenAsleep following at once), PIDR2; SGI_base IGROUPR0, IS/ICENABLER0,
//!   IS/ICPENDR0, IS/ICACTIVER0, IPRIORITYR0..7, ICFGR0 (SGIs read-only edge), ICFGR1
//!   (PPIs configurable), IGRPMODR0 (RAZ/WI).
//! - Reserved offsets are RES0: RAZ/WI with a log line. Unaligned accesses and widths
//!   a register does not accept return [`vdev::MmioError`].
//! - Inputs: SPI lines ([`Vgic::set_level`], also as [`vdev::InterruptSink`]), PPI
//!   lines ([`Vgic::set_ppi_level`]), SGIs from trapped ICC_SGI1R_EL1 writes
//!   ([`Vgic::send_sgi`]), hardware-linked interrupts ([`Vgic::set_hw_mapping`]).
//!   Edge-triggered interrupts latch rising edges; level-sensitive ones are pending
//!   while their line is high and pend again after deactivation if it still is.
//! - Delivery: [`Vgic::flush`] / [`Vgic::sync`] / [`Vgic::has_pending`] (policy in
//!   `deliver`), the ICH_HCR_EL2 maintenance-interrupt policy ([`IchHcr`]), and
//!   [`Vgic::take_kicks`] naming the vCPUs with new work.
//! - Save/restore of the whole model through [`vdev::SaveRestore`].
//!
//! # What is not (yet)
//! - Extended SPI/PPI ranges, message-based SPIs (GICD_SETSPI_*), direct LPI
//!   injection (GICR_SETLPIR), virtual LPIs. MSIs arrive through the GICv2m frame
//!   ([`v2m`], a separate device that pulses [`Vgic::set_level`]) or, in a VM with
//!   an ITS ([`its`]), as LPIs: [`Vgic::enable_lpi_support`] then gives the
//!   distributor LPIs 8192..=16383 and the redistributors EnableLPIs, PROPBASER and
//!   PENDBASER (see `lpi` for where LPI state lives). LPI state is not saved.
//! - GICR_WAKER.ProcessorSleep does not gate delivery; GICR_CTLR.DPG* is not modelled.
//! - ICC_SGI0R_EL1 / ICC_ASGI1R_EL1 (Group 0 / alternate SGIs): `el2` may route them
//!   to [`Vgic::send_sgi`] too, which does not check the SGI's group.
//! - The priority mask, running priority and binary point of the virtual CPU
//!   interface live in ICH_VMCR_EL2 / ICH_AP*R_EL2, which `el2` owns.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod access;
mod banks;
pub mod config;
mod deliver;
mod gicd;
mod gicr;
pub mod hcr;
mod irq;
pub mod its;
mod lpi;
pub mod lr;
mod mmio;
pub mod regs;
mod save;
mod sgi;
pub mod v2m;
mod vgic;

pub use config::{ConfigError, VgicConfig};
pub use hcr::IchHcr;
pub use lpi::{is_lpi, LpiError};
pub use lr::{FlushOutcome, IchLr, ListRegisters, LrState};
pub use mmio::{GicdMmio, GicrMmio, SharedVgic};
pub use vgic::{InputError, Vgic};
