//! Input scripts and frame captures for the authority partition (issue 16): the
//! ABI's RUN_INPUT_SCRIPT and CAPTURE, served by `control::El2Control`.
//!
//! - **Scripts.** [`start`] parses the script (`input::run::ScriptSlot`: refused
//!   whole with its line, or refused while another runs on the VM — one script per
//!   VM at a time) and returns; the run goes on in [`poll`], which the render loop's
//!   callers reach (`display::tick`, after interrupt exits and before a CPU idles)
//!   at most every [`POLL_MS`]. A poll runs what can run and returns: a wait for
//!   the guest's frame looks at the frame once and comes back at the next poll, an
//!   input step sends events into the VM's routing while its devices have room
//!   ([`crate::input::route_paced`]) and goes on at the next poll when they fill —
//!   no vCPU ever waits for a script. The end is logged and posted as a
//!   `ScriptDone` event on the partition's ring (`authority::notify`; retried at
//!   the next poll while the ABI session is busy with a call).
//! - **FrameReady.** When the render loop composes a new frame of the guest's
//!   ([`frame_composed`]), the partition is told with a `FrameReady` event (the
//!   frame's number, the bounding box of what changed in guest pixels) — at most
//!   one per [`FRAME_EVENT_MS`]: frames in between are merged into the next
//!   event (latest number, damage unioned), so a guest flushing without pause
//!   cannot flood the ring. A hidden or frozen VM composes no frames of its own,
//!   so it reports none.
//! - **Frames.** What a script waits on and what CAPTURE copies is the VM's
//!   surface as the render loop presents it: its linear framebuffer when it has one
//!   (`display::linear_scanout`), else its virtio-gpu's scanout 0 — the pixels the
//!   guest last transferred, shared, not copied (a transfer meanwhile copies the
//!   resource first, `vgpu::Resource::unshare`), taken under the device's lock
//!   and read after letting it go. XRGB8888 scanouts (bytes B, G, R, X/A) are
//!   read as they are; an X8R8G8B8 one (bytes X, R, G, B) is converted; other
//!   formats show no frame.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use arch::relax::Mutex;
use authority_abi::call::Rect;
use authority_abi::input::InputEvent;
use authority_abi::ring::Event;
use input::run::{region_rows, Busy, FrameSource, FrameView, InputSink, ScriptSlot, StartError};
use input::script::Region;
use monitor::abi::Captured;
use monitor::ControlError;
use vgpu::defs::format;

use crate::el1::read_sysreg;
use crate::vm::Vm;

/// How often a running script is polled at most, in milliseconds.
pub const POLL_MS: u64 = 10;

/// At most one `FrameReady` event per this many milliseconds.
pub const FRAME_EVENT_MS: u64 = 100;

/// A VM's frame not yet reported and when its next report may go.
struct FrameNotice {
    vm: &'static Vm,
    /// The latest frame number and the union of the damage since the last event.
    pending: Option<(u64, vgpu::Rect)>,
    /// The counter value before which no event goes.
    next: u64,
}

/// One notice per VM that composed a frame.
static FRAMES: Mutex<Vec<FrameNotice>> = Mutex::new(Vec::new());

/// The render loop composed frame `frame` of `vm`, `damage` (scanout coordinates)
/// being what changed: reported by the next [`poll`] allowed to.
pub fn frame_composed(vm: &'static Vm, frame: u64, damage: vgpu::Rect) {
    if crate::authority::get().is_none() {
        return;
    }
    let mut frames = FRAMES.lock();
    let i = match frames.iter().position(|f| core::ptr::eq(f.vm, vm)) {
        Some(i) => i,
        None => {
            frames.push(FrameNotice {
                vm,
                pending: None,
                next: 0,
            });
            frames.len() - 1
        }
    };
    let f = &mut frames[i];
    f.pending = Some(match f.pending {
        Some((_, d)) => (frame, d.union(&damage)),
        None => (frame, damage),
    });
    drop(frames);
    ACTIVE.store(true, Ordering::Release);
}

/// Posts the pending `FrameReady`s that are due; whether one still waits.
fn post_frame(now: u64, freq: u64) -> bool {
    let mut waiting = false;
    for f in FRAMES.lock().iter_mut() {
        let Some((frame, d)) = f.pending else {
            continue;
        };
        if now < f.next {
            waiting = true;
            continue;
        }
        let damage = Rect {
            x: d.x as i32,
            y: d.y as i32,
            w: d.width,
            h: d.height,
        };
        if !crate::authority::notify(f.vm, |vm| Event::FrameReady { vm, frame, damage }) {
            waiting = true;
            continue;
        }
        f.pending = None;
        f.next = now + freq * FRAME_EVENT_MS / 1000;
    }
    waiting
}

/// One VM's script slot and the ends not yet posted.
struct Job {
    vm: &'static Vm,
    slot: ScriptSlot,
    unposted: VecDeque<(u64, i64)>,
}

static JOBS: Mutex<Vec<Job>> = Mutex::new(Vec::new());
/// Some job runs or has an end to post: [`poll`] has work.
static ACTIVE: AtomicBool = AtomicBool::new(false);
/// The counter value before which [`poll`] does nothing.
static NEXT_POLL: AtomicU64 = AtomicU64::new(0);

fn now_ms() -> u64 {
    let freq = read_sysreg!("CNTFRQ_EL0").max(1);
    (u128::from(read_sysreg!("CNTPCT_EL0")) * 1000 / u128::from(freq)) as u64
}

/// Starts `text` as an input script on `vm` (it runs from the next [`poll`]);
/// refused — nothing changes — when it is not a valid script or one already runs.
pub fn start(vm: &'static Vm, text: &[u8]) -> Result<u32, ControlError> {
    let mut jobs = JOBS.lock();
    let at = match jobs.iter().position(|j| core::ptr::eq(j.vm, vm)) {
        Some(i) => i,
        None => {
            jobs.push(Job {
                vm,
                slot: ScriptSlot::new(),
                unposted: VecDeque::new(),
            });
            jobs.len() - 1
        }
    };
    match jobs[at].slot.start(text) {
        Ok(steps) => {
            log::info!(
                "VM '{}': input script started ({steps} steps, {} bytes)",
                vm.name,
                text.len()
            );
            ACTIVE.store(true, Ordering::Release);
            NEXT_POLL.store(0, Ordering::Release);
            Ok(steps)
        }
        Err(StartError::Refused(e)) => {
            log::warn!(
                "VM '{}': input script refused: line {}: {:?}",
                vm.name,
                e.line,
                e.kind
            );
            Err(ControlError::Invalid {
                vm: vm.name.clone(),
                why: format!("input script refused: line {}: {:?}", e.line, e.kind),
            })
        }
        Err(StartError::Busy { step, steps }) => {
            log::info!("VM '{}': input script refused: one is running", vm.name);
            Err(ControlError::Failed {
                vm: vm.name.clone(),
                why: format!(
                    "busy: an input script is running on it (step {} of {steps}); one at a time, this one was not started",
                    step + 1
                ),
            })
        }
    }
}

/// Runs what the VMs' scripts can run now, and posts the ends of those that
/// finished. Called on the render loop's occasions; returns at once when no
/// script runs, when polled less than [`POLL_MS`] ago, or when another CPU polls.
#[inline(always)]
pub fn poll() {
    if ACTIVE.load(Ordering::Acquire) {
        poll_slow();
    }
}

#[cold]
#[inline(never)]
fn poll_slow() {
    let now = read_sysreg!("CNTPCT_EL0");
    if now < NEXT_POLL.load(Ordering::Acquire) {
        return;
    }
    let Some(mut jobs) = JOBS.try_lock() else {
        return;
    };
    let freq = read_sysreg!("CNTFRQ_EL0").max(1);
    NEXT_POLL.store(now + freq * POLL_MS / 1000, Ordering::Release);
    let ms = now_ms();
    let mut active = post_frame(now, freq);
    for job in jobs.iter_mut() {
        let mut frames = GuestFrames {
            vm: job.vm,
            grab: None,
        };
        if let Some(done) = job.slot.poll(ms, &mut frames, &mut RoutedInput(job.vm)) {
            match done.status {
                input::Status::Failed { step, line, why } => log::info!(
                    "VM '{}': input script failed at step {} (line {line}): {why:?}",
                    job.vm.name,
                    step + 1
                ),
                _ => log::info!(
                    "VM '{}': input script finished ({} steps)",
                    job.vm.name,
                    done.steps
                ),
            }
            job.unposted.push_back((done.steps, done.abi_status()));
        }
        while let Some(&(steps, status)) = job.unposted.front() {
            let posted =
                crate::authority::notify(job.vm, |vm| Event::ScriptDone { vm, steps, status });
            if !posted {
                break;
            }
            job.unposted.pop_front();
        }
        active |= job.slot.running().is_some() || !job.unposted.is_empty();
    }
    ACTIVE.store(active, Ordering::Release);
}

/// A script's input: its VM's routing, one event at a time, refused while its
/// devices have no room (the runner sends it again at the next poll).
struct RoutedInput(&'static Vm);

impl InputSink for RoutedInput {
    fn send(&mut self, e: &InputEvent) -> Result<(), Busy> {
        crate::input::route_paced(self.0, e, usize::MAX)
            .map(|_| ())
            .ok_or(Busy)
    }
}

/// The pixels of a grabbed frame.
enum Pixels {
    Shared(Arc<Vec<u8>>),
    Converted(Vec<u8>),
}

/// The VM's frame as it was when grabbed.
struct Grab {
    pixels: Pixels,
    /// Where the frame's first pixel is in `pixels`.
    offset: usize,
    stride: usize,
    width: u32,
    height: u32,
}

impl Grab {
    fn view(&self) -> Option<FrameView<'_>> {
        let data = match &self.pixels {
            Pixels::Shared(p) => p.as_slice(),
            Pixels::Converted(p) => p.as_slice(),
        };
        Some(FrameView {
            width: self.width,
            height: self.height,
            stride: self.stride,
            data: data.get(self.offset..)?,
        })
    }
}

/// Takes `vm`'s current frame, or says why there is none.
fn grab(vm: &Vm) -> Result<Grab, &'static str> {
    let shared = match crate::display::linear_scanout(vm) {
        Some(s) => s,
        None => vm.gpu.0.lock().device().scanout_shared(0),
    };
    let s = shared.ok_or("it shows no frame (its GPU has no scanout set)")?;
    let bpp = format::BYTES_PER_PIXEL as usize;
    let r = s.rect;
    let inside = u64::from(r.x) + u64::from(r.width) <= u64::from(s.width)
        && u64::from(r.y) + u64::from(r.height) <= u64::from(s.height)
        && r.width > 0
        && r.height > 0;
    let stride = s.stride as usize;
    // Guest-set values: checked before any arithmetic that could wrap.
    let span = |y: u32, x: u32| {
        (y as usize)
            .checked_mul(stride)?
            .checked_add(x as usize * bpp)
    };
    let offset = span(r.y, r.x);
    let end = inside
        .then(|| span(r.y + r.height - 1, r.x + r.width))
        .flatten();
    let (Some(offset), Some(end)) = (offset, end) else {
        return Err("its scanout rectangle is not inside its resource");
    };
    if end > s.pixels.len() || (r.width as usize * bpp) > stride {
        return Err("its scanout rectangle is not inside its resource");
    }
    match s.format {
        format::B8G8R8X8_UNORM | format::B8G8R8A8_UNORM => Ok(Grab {
            pixels: Pixels::Shared(s.pixels),
            offset,
            stride,
            width: r.width,
            height: r.height,
        }),
        format::X8R8G8B8_UNORM => {
            let row = r.width as usize * bpp;
            let mut out = Vec::new();
            out.try_reserve_exact(row * r.height as usize)
                .map_err(|_| "its frame does not fit in the hypervisor's memory")?;
            for y in 0..r.height as usize {
                let at = offset + y * stride;
                for px in s.pixels[at..at + row].chunks_exact(bpp) {
                    out.extend_from_slice(&[px[3], px[2], px[1], px[0]]);
                }
            }
            Ok(Grab {
                pixels: Pixels::Converted(out),
                offset: 0,
                stride: row,
                width: r.width,
                height: r.height,
            })
        }
        _ => Err("its scanout's pixel format is not one RayOS reads"),
    }
}

/// The VM's frame for a script's waits: grabbed afresh at every look.
struct GuestFrames {
    vm: &'static Vm,
    grab: Option<Grab>,
}

impl FrameSource for GuestFrames {
    fn frame(&mut self) -> Option<FrameView<'_>> {
        self.grab = grab(self.vm).ok();
        self.grab.as_ref()?.view()
    }
}

/// CAPTURE: `vm`'s frame, or `region` of it (which must lie inside the frame), as
/// XRGB8888 rows handed to `write`, as many whole rows as fit in `max` bytes.
pub fn capture(
    vm: &Vm,
    region: Option<Rect>,
    max: u64,
    write: &mut dyn FnMut(u64, &[u8]),
) -> Result<Captured, ControlError> {
    let g = grab(vm).map_err(|why| ControlError::Failed {
        vm: vm.name.clone(),
        why: format!("nothing to capture: {why}"),
    })?;
    let frame = g.view().ok_or_else(|| ControlError::Failed {
        vm: vm.name.clone(),
        why: String::from("nothing to capture: its frame is empty"),
    })?;
    let r = match region {
        None => Region {
            x: 0,
            y: 0,
            w: frame.width,
            h: frame.height,
        },
        Some(r) => {
            let region = (r.x >= 0 && r.y >= 0).then_some(Region {
                x: r.x as u32,
                y: r.y as u32,
                w: r.w,
                h: r.h,
            });
            match region.filter(|g| input::run::region_inside(*g, frame.width, frame.height)) {
                Some(g) => g,
                None => {
                    log::info!(
                        "VM '{}': capture of {},{} {}x{} refused: outside its {}x{} frame",
                        vm.name,
                        r.x,
                        r.y,
                        r.w,
                        r.h,
                        frame.width,
                        frame.height
                    );
                    return Err(ControlError::Invalid {
                        vm: vm.name.clone(),
                        why: format!(
                            "the region {},{} {}x{} is not inside its {}x{} frame",
                            r.x, r.y, r.w, r.h, frame.width, frame.height
                        ),
                    });
                }
            }
        }
    };
    let rows = region_rows(&frame, r).ok_or_else(|| ControlError::Failed {
        vm: vm.name.clone(),
        why: String::from("nothing to capture: its frame's pixels are short"),
    })?;
    let row_bytes = u64::from(r.w) * 4;
    let fit = (max / row_bytes).min(u64::from(r.h));
    let mut off = 0;
    for row in rows.take(fit as usize) {
        write(off, row);
        off += row_bytes;
    }
    Ok(Captured {
        bytes: off,
        width: r.w,
        height: r.h,
    })
}
