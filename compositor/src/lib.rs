//! `compositor`: turns surfaces — guest scanouts, the cursor, RayOS overlays such as
//! the status bar — into the frame RayOS presents.
//!
//! A [`Scene`] holds [`Layer`]s, each a borrowed [`Surface`] (pixels, stride, format)
//! with a crop, a [`Placement`] (unscaled, scaled to a rectangle, or any affine or
//! projective [`Transform`] — a panel placed in 3D and reprojected), a [`Filter`]
//! (nearest or bilinear), an opacity and a z-order. [`compose`] writes it into a
//! [`Frame`] (the physical framebuffer) inside the damaged rectangles only; [`Damage`]
//! collects them. Formats are XRGB8888, ARGB8888 and BGRX8888 on both sides.
//!
//! [`compose_with`] runs the byte loops with a caller's [`Kernels`] (the hypervisor's
//! NEON ones) instead of [`Portable`].
//!
//! Everything is integer arithmetic (the hypervisor is built soft-float), and no
//! geometry a guest can produce makes it panic: an unusable layer is skipped and named
//! with a [`LayerError`] in the [`Report`].
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

mod compose;
mod damage;
mod format;
mod general;
mod geom;
pub mod kernels;
mod pixel;
mod surface;
pub mod text;
mod transform;

pub use compose::{compose, compose_full, compose_with, Filter, Layer, Report, Scene};
pub use damage::Damage;
pub use format::{PixelFormat, BYTES_PER_PIXEL, OPAQUE};
pub use geom::Rect;
pub use kernels::{Kernels, Portable};
pub use surface::{Frame, LayerError, Surface, MAX_DIM};
pub use transform::{Placement, Transform, MAX_COORD, MAX_ENTRY, Q16_ONE};

#[cfg(test)]
mod tests;
