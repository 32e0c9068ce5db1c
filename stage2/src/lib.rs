//! Armv8-A stage-2 translation tables for one VM: the IPA → PA map the
//! hypervisor (`el2`) installs in VTTBR_EL2/VTCR_EL2.
//!
//! This crate owns the table format and every edit of it; it touches no
//! hardware. Table frames come from a [`TableAllocator`] (identity-mapped
//! physical memory in `el2`, [`SimAllocator`] in host tests), and TLB
//! maintenance is reported back as a [`Flush`] for the caller to perform.
//!
//! # Layout choice
//!
//! Only the 4 KiB granule is used (Windows and Linux guests both expect it,
//! and 2 MiB / 1 GiB blocks fall out of it). The IPA size is
//! `min(PA size from ID_AA64MMFR0_EL1.PARange, cap, 48)`: without FEAT_LPA2
//! neither addresses nor descriptors go beyond 48 bits, and the output size
//! (VTCR_EL2.PS) is capped at 48 bits for the same reason.
//!
//! The Arm ARM lets a stage-2 walk start at a later level by concatenating up
//! to 16 tables at the initial lookup. [`Layout`] always picks the latest
//! legal start level, so every walk (and every TLB miss of the guest) does
//! the fewest memory accesses, at the cost of at most 64 KiB of root tables:
//! 25–34 bit IPAs start at level 2 (1–16 root tables), 35–43 bits at level 1
//! (1–16 root tables; 40 bits = 2 tables), 44–48 bits at level 0 (one
//! table). This is the same rule Linux KVM uses, and it satisfies the
//! architectural consistency check between T0SZ and SL0
//! (`AArch64.S2InconsistentSL`). Level-0 and level-3 starts beyond that are
//! not used (level 3 needs FEAT_TTST).
//!
//! # Mappings
//!
//! [`Stage2::map`] uses 1 GiB and 2 MiB blocks wherever the IPA, the PA and
//! the range allow, pages otherwise, and never replaces an existing mapping.
//! [`Stage2::unmap`] and [`Stage2::protect`] split blocks at the range edges
//! (reserving the tables first, so they either fully succeed or change
//! nothing), and `unmap` frees tables that become empty. Leaf descriptors are
//! Normal Inner/Outer Write-Back Inner Shareable or Device-nGnRE, always with
//! the Access Flag set, with S2AP and stage-2 XN from [`Perms`].
//!
//! # TLB maintenance contract
//!
//! Break-before-make and TLB invalidation are the caller's job; the crate
//! tells it what is needed:
//! - `map` only turns invalid entries valid: no invalidation, just a
//!   `DSB ISHST` before the guest relies on the new mapping.
//! - `unmap`/`protect` return a [`Flush`] covering every previously valid
//!   entry that changed (removed leaves, re-attributed leaves, split blocks,
//!   freed tables). Perform it before the VM runs again on any PE and before
//!   any freed table frame is reused.
//! - Where the architecture requires break-before-make (splitting a block,
//!   changing the memory type) the crate writes the entry invalid, calls
//!   [`TableAllocator::break_before_make`], then writes the new entry; a
//!   caller that edits the tables while vCPUs run implements that hook as a
//!   per-IPA TLBI. New tables are linked only after
//!   [`TableAllocator::publish_barrier`].
//!
//! # Example
//!
//! ```
//! use stage2::{Attrs, Layout, Perms, SimAllocator, Stage2};
//!
//! let mut frames = SimAllocator::new();
//! // ID_AA64MMFR0_EL1.PARange = 0b0010 (40 bits): level-1 start, 2 root tables.
//! let layout = Layout::from_parange(0b0010, 48)?;
//! let mut s2 = Stage2::new(&mut frames, layout, 1)?;
//! s2.map(&mut frames, 0x4000_0000, 0x8000_0000, 0x20_0000, Attrs::normal(Perms::RWX))?;
//! let t = s2.translate(&mut frames, 0x4000_1234).unwrap();
//! assert_eq!((t.pa, t.level), (0x8000_1234, 2)); // one 2 MiB block
//! let flush = s2.unmap(&mut frames, 0x4000_0000, 0x1000)?; // splits the block
//! assert_eq!(flush.range(), Some(0x4000_0000..0x4020_0000));
//! // VTTBR_EL2 / VTCR_EL2 to program on entry to this VM:
//! let (_vttbr, _vtcr) = (s2.vttbr(), s2.vtcr());
//! s2.destroy(&mut frames);
//! assert_eq!(frames.live_tables(), 0);
//! # Ok::<(), stage2::Error>(())
//! ```
//!
//! [`Stage2::translate`] (one IPA) and [`Stage2::translate_range`] (a guest
//! buffer: mapped, Normal, permitted, PA-contiguous) are allocation-free walks
//! of at most four reads per leaf, meant for hot paths.
//!
//! # Cache coherency
//!
//! Guest RAM is mapped with [`Stage2::map_ram`], which takes the proof
//! ([`coherency::Cleaned`]) that EL2's writes to it reached the point of
//! coherency; [`coherency`] owns that rule.
//!
//! # Dirty logging
//!
//! [`dirty::DirtyBitmap`] records which pages were written since they were last
//! taken (query and clear per range). The hypervisor write-protects RAM with
//! [`Stage2::protect`], marks a page on the write's permission fault and gives
//! the page its write permission back (splitting the block).

#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

mod alloc_api;
mod attrs;
pub mod coherency;
pub mod defs;
pub mod dirty;
mod error;
mod flush;
mod layout;
mod tables;
mod walk;

#[cfg(test)]
mod tests;

pub use alloc_api::{SimAllocator, TableAllocator};
pub use attrs::{Attrs, MemType, Perms};
pub use error::Error;
pub use flush::Flush;
pub use layout::Layout;
pub use tables::{Stage2, Translation};
