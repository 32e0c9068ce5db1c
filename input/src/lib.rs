//! `input`: everything between RayOS's input sources and a guest's input devices that
//! does not touch hardware.
//!
//! - [`pointer`](mod@pointer): a display position to a guest pixel through the inverse of the
//!   compositor placement the VM is presented with (`None` outside it: the pointer
//!   stays with RayOS).
//! - [`gaze`]: gaze points to smoothed pointer motion and a dwell click.
//! - [`route`]: one VM's routing of authority-ABI input events to the evdev reports
//!   of its virtio-input keyboard and tablet, only while presented and interactive.
//! - [`script`]: the input-script text format and its validating parser; [`run`]: the
//!   script as a state machine over a [`FrameSource`] and an [`InputSink`], its
//!   [`RunRecord`] and replay.
//! - [`physical`]: the physical keyboard's and tablet's evdev reports to
//!   authority-ABI input events (display pixels).
//! - [`reserve`]: the physical keyboard's chord reserved for RayOS.
//! - [`keymap`]: HID keyboard usages (the authority ABI's keys) to evdev codes (the
//!   virtio-input keyboard's), the US layout, key names.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod gaze;
pub mod keymap;
pub mod physical;
pub mod pointer;
pub mod reserve;
pub mod route;
pub mod run;
pub mod script;
pub mod stack;

pub use pointer::{placement_for, PointerMap};
pub use route::{Device, Report, Routed, Router};
pub use run::{FrameSource, FrameView, InputSink, RunRecord, Runner, ScriptSlot, Status};
pub use script::Script;
