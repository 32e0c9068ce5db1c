//! `compositor` will own turning guest surfaces into the frame RayOS presents:
//! placement transforms (crop, scale, re-projection), overlays, damage tracking and
//! frame freezing.
//!
//! Nothing is implemented yet; this crate holds its place in the workspace so that the
//! layout in `docs/architecture.md` is real.
#![no_std]
#![forbid(unsafe_code)]
