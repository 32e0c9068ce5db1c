//! `vgpu` will own the guest-facing virtual GPU: the virtio-gpu device model, its
//! framebuffer scanouts and the render scheduler that the hypervisor's render loop
//! drives.
//!
//! Nothing is implemented yet; this crate holds its place in the workspace so that the
//! layout in `docs/architecture.md` is real. See the GPU issue for what it must own.
#![no_std]
#![forbid(unsafe_code)]
