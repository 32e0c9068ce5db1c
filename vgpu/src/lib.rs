//! `vgpu` owns the guest-facing virtual GPU:
//!
//! - [`gpu`]: the virtio-gpu 2D device ([`Gpu`], a `virtio::VirtioDevice`) with the
//!   control and cursor queues, fences, the display-change event, and the views the
//!   hypervisor's render loop reads (each scanout's pixels and damage, the cursor).
//! - [`resource`]: host resources, their guest backing and TRANSFER_TO_HOST_2D.
//! - [`edid`]: the virtual monitor's EDID.
//! - [`present`]: a scanout presented on the physical display through `compositor`
//!   under a per-VM [`Policy`] (live, throttled, frozen, hidden) and [`Placement`]
//!   (panel, scaled panel, fullscreen, quad), with an overlay text line (full
//!   recomposition when the source or presentation changed, damage otherwise);
//!   [`present::desk`]: several VMs' presentations composed into one output
//!   (z-order, damage, a per-tick budget served round-robin).
//! - [`linear`]: a plain linear framebuffer in guest RAM (`simple-framebuffer`,
//!   ramfb) whose dirty pages (stage-2 write faults) become row damage.
//! - [`defs`]: every architected virtio-gpu number, and this crate's limits.
//!
//! Usage in the hypervisor (the render loop keeps a clone of the `Shared`):
//!
//! ```text
//! let gpu = Shared::new(MmioTransport::new(Gpu::new(GpuConfig::single(1024, 768)), intid));
//! bus.insert("virtio-gpu", base, 0x200, Box::new(gpu.clone()));
//! ```
//!
//! Not done yet: 3D (VIRGL), blob resources.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod defs;
pub mod edid;
pub mod gpu;
pub mod linear;
pub mod present;
pub mod resource;
mod save;

pub use gpu::{CursorView, Gpu, GpuConfig, ModeError, OwnedCursor, ScanoutView, SharedScanout};
pub use linear::{FbGeometry, GeometryError, LinearFb};
pub use present::{Composer, Desk, Placement, Policy, PresentError, Presenter, ScanoutSource};
pub use resource::Rect;

#[cfg(test)]
mod tests;
