//! The physical display and the render loop.
//!
//! The display is the host's virtio-gpu (QEMU's `virtio-gpu-device`), driven with
//! `virtio-drivers`' virtio-mmio transport and split virtqueue. Its own GPU driver
//! needs the crate's `alloc` feature, which would also give the system disk
//! indirect descriptors and an allocation per request (see `sysdisk.rs`), so this
//! module issues the five 2D commands it needs itself: one host resource the size of
//! the display, backed by a heap buffer (identity-mapped, so its address is the one
//! the device uses), shown on scanout 0.
//!
//! Every guest VM is [`register`]ed (its virtio-gpu's scanout 0, its linear
//! framebuffer or its firmware's ramfb) and presented on one `vgpu::Desk`: each VM
//! with its own policy and placement (default: a panel cascaded from
//! `vgpu::present::DEFAULT_PANEL`), the VM presented last on top, one overlay line
//! above all.
//!
//! The render loop is [`tick`]: a physical CPU calls it on its way back to a guest
//! after an interrupt (at most once per frame period) and before it idles in a
//! guest's WFI (then at once: the guest is idle). Whoever gets the display lock
//! composes what the VMs changed into the framebuffer with the desk (each VM's
//! flushed rectangles, with whatever other VMs show over them; at most
//! [`BUDGET_FRAMES`] display frames of damage a tick, the VMs taking turns beyond)
//! and transfers and flushes only the recomposed rectangles, without waiting for
//! the host (`HostGpu::show`; their bounding rectangle when the control queue is
//! short of room). A guest's device is
//! locked only to take the frame (its damage, the scanout's pixels shared), not
//! while composing; a hidden VM's device is not touched; a CPU that finds the
//! display busy moves on.
//!
//! The monitor's `display` commands ([`change`], [`set_overlay`], [`status`]) set
//! a VM's policy and placement (`vgpu::present`) under the display lock;
//! `display mode` changes the guest device's virtual monitor and raises its
//! configuration-change interrupt, so a virtio-gpu guest re-reads the display info
//! and EDID and re-renders.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use arch::regs::CPTR_EL2 as CPTR;
use arch::relax::Mutex;
use compositor::{Frame, PixelFormat, Rect, Report, Scene};
use monitor::command::{DisplayChange, DisplayPlacement};
use tock_registers::interfaces::Readable;
use vdev::Shared;
use vgpu::defs::{cmd, format, hdr, layout};
use vgpu::present::desk::Sources;
use vgpu::{Desk, Gpu, ModeError, Placement, ScanoutSource};
use virtio_drivers::device::common::Feature;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};

use crate::el1::{read_sysreg, typed_sysreg, FpState};
use crate::simd;
use crate::sysdisk::IdentityHal;
use crate::vm::{VgicSink, Vm};

// The partition's throttle (the ABI's validation) and the monitor's (the
// compositor's) take the same rates.
const _: () = assert!(authority_abi::call::MAX_FPS == vgpu::present::MAX_FPS);

/// Commands the render loop keeps in flight on the control queue at most (each a
/// request and a response descriptor): [`HostGpu::show`] submits a transfer and
/// a flush and does not wait for them.
const IN_FLIGHT: usize = 8;
/// Descriptors of the control queue.
const QUEUE_SIZE: usize = 2 * IN_FLIGHT;
/// How long the render loop waits for the host device to finish a command when
/// all are in flight before it gives the frame up.
const STUCK_MS: u64 = 100;
/// Bytes of the longest request the render loop sends (`TRANSFER_TO_HOST_2D`).
const REQUEST_MAX: usize = hdr::SIZE + 8 * 4;
/// The control queue's index.
const CONTROLQ: u16 = 0;
/// The host resource holding the framebuffer.
const FB_RESOURCE: u32 = 1;
/// Frames per second the render loop aims at while guests run.
const FRAME_RATE: u64 = 60;
/// Largest display accepted (both sides), so a device's answer cannot ask for an
/// absurd framebuffer.
const MAX_SIDE: u32 = 8192;

typed_sysreg!(
    /// CPTR_EL2 with its FP/SIMD trap (TFP).
    CptrEl2, "CPTR_EL2", CPTR::Register, r
);

/// The guest device the render loop presents.
pub type GuestGpu = Shared<virtio::MmioTransport<Gpu>>;

/// Why the display could not be brought up.
#[derive(Debug)]
#[allow(dead_code)] // reported through Debug in the log line
pub enum DisplayError {
    NotFound,
    Driver(virtio_drivers::Error),
    /// A command answered with this response type.
    Refused {
        command: u32,
        response: u32,
    },
    BadMode(u32, u32),
    /// The framebuffer (this many bytes) does not fit in the heap.
    NoMemory(usize),
    /// Every command in flight went unanswered for [`STUCK_MS`].
    Stuck,
}

impl From<virtio_drivers::Error> for DisplayError {
    fn from(e: virtio_drivers::Error) -> Self {
        DisplayError::Driver(e)
    }
}

/// The host virtio-gpu with its framebuffer.
struct HostGpu {
    /// First: dropping it resets the device before the buffers it may use go.
    transport: MmioTransport<'static>,
    controlq: VirtQueue<IdentityHal, QUEUE_SIZE>,
    width: u32,
    height: u32,
    /// `width * height` XRGB pixels: the backing of [`FB_RESOURCE`].
    fb: Vec<u8>,
    /// The buffers of the commands [`HostGpu::show`] submits, each in a box of
    /// its own (it stays put, and a slot the device owns is never reached
    /// through a reference to another).
    slots: [Box<Slot>; IN_FLIGHT],
    /// The queue's token of each slot's command while the device has it.
    tokens: [Option<u16>; IN_FLIGHT],
}

/// One command's request and response.
struct Slot {
    request: [u8; REQUEST_MAX],
    len: usize,
    response: [u8; hdr::SIZE],
}

/// The type word (the first little-endian u32) of a request or response.
fn type_of(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// Writes a request into `out`: the header of `kind` then `fields`; answers its
/// length (`out` holds at least that: the callers' requests are fixed).
fn write_request(out: &mut [u8], kind: u32, fields: &[u32]) -> usize {
    out[..hdr::SIZE].fill(0);
    out[hdr::TYPE..hdr::TYPE + 4].copy_from_slice(&kind.to_le_bytes());
    for (i, f) in fields.iter().enumerate() {
        out[hdr::SIZE + 4 * i..hdr::SIZE + 4 * i + 4].copy_from_slice(&f.to_le_bytes());
    }
    hdr::SIZE + 4 * fields.len()
}

/// A request in a buffer of its own (bring-up's).
fn request(kind: u32, fields: &[u32]) -> Vec<u8> {
    let mut r = vec![0u8; hdr::SIZE + 4 * fields.len()];
    write_request(&mut r, kind, fields);
    r
}

impl HostGpu {
    /// Sends `req`, waits for the answer in `resp`; returns its type. Only while
    /// no [`HostGpu::show`] command is in flight (bring-up): the answer must be
    /// the next one the device gives back.
    fn command(&mut self, req: &[u8], resp: &mut [u8]) -> Result<u32, DisplayError> {
        self.controlq
            .add_notify_wait_pop(&[req], &mut [resp], &mut self.transport)?;
        Ok(type_of(resp))
    }

    /// A command whose answer carries no data.
    fn simple(&mut self, req: &[u8]) -> Result<(), DisplayError> {
        let mut resp = [0u8; hdr::SIZE];
        match self.command(req, &mut resp)? {
            cmd::RESP_OK_NODATA => Ok(()),
            response => Err(DisplayError::Refused {
                command: type_of(req),
                response,
            }),
        }
    }

    /// Brings up the device behind `transport`: scanout 0's size, the framebuffer
    /// resource and its backing, the scanout.
    fn new(mut transport: MmioTransport<'static>) -> Result<Self, DisplayError> {
        transport.begin_init(Feature::VERSION_1);
        let controlq = VirtQueue::new(&mut transport, CONTROLQ, false, false)?;
        transport.finish_init();
        let mut gpu = HostGpu {
            transport,
            controlq,
            width: 0,
            height: 0,
            fb: Vec::new(),
            slots: core::array::from_fn(|_| {
                Box::new(Slot {
                    request: [0; REQUEST_MAX],
                    len: 0,
                    response: [0; hdr::SIZE],
                })
            }),
            tokens: [None; IN_FLIGHT],
        };
        let mut info = vec![0u8; layout::RESP_DISPLAY_INFO];
        let response = gpu.command(&request(cmd::GET_DISPLAY_INFO, &[]), &mut info)?;
        if response != cmd::RESP_OK_DISPLAY_INFO {
            return Err(DisplayError::Refused {
                command: cmd::GET_DISPLAY_INFO,
                response,
            });
        }
        let word =
            |at: usize| u32::from_le_bytes([info[at], info[at + 1], info[at + 2], info[at + 3]]);
        // Scanout 0's rectangle: x, y, width, height.
        let (w, h) = (word(hdr::SIZE + 8), word(hdr::SIZE + 12));
        if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
            return Err(DisplayError::BadMode(w, h));
        }
        gpu.width = w;
        gpu.height = h;
        // From the heap, refused (headless) rather than aborting if it does not fit.
        let bytes = (w * h * format::BYTES_PER_PIXEL) as usize;
        gpu.fb
            .try_reserve_exact(bytes)
            .map_err(|_| DisplayError::NoMemory(bytes))?;
        gpu.fb.resize(bytes, 0);
        gpu.simple(&request(
            cmd::RESOURCE_CREATE_2D,
            &[FB_RESOURCE, format::B8G8R8X8_UNORM, w, h],
        ))?;
        // One backing entry: the identity-mapped heap buffer (le64 address, le32
        // length, padding).
        let addr = gpu.fb.as_ptr() as u64;
        let mut attach = request(cmd::RESOURCE_ATTACH_BACKING, &[FB_RESOURCE, 1]);
        attach.extend_from_slice(&addr.to_le_bytes());
        attach.extend_from_slice(&(gpu.fb.len() as u32).to_le_bytes());
        attach.extend_from_slice(&0u32.to_le_bytes());
        gpu.simple(&attach)?;
        gpu.simple(&request(cmd::SET_SCANOUT, &[0, 0, w, h, 0, FB_RESOURCE]))?;
        gpu.show(&[Rect::new(0, 0, w, h)])?;
        gpu.wait_idle()?;
        Ok(gpu)
    }

    /// Shows `rects` (inside the display) of the framebuffer: puts a transfer and
    /// a flush of each on the control queue (of their bounding rectangle when
    /// the queue has too little room, after waiting for the device to finish
    /// one pair when it has none) and does not wait for them; they are taken
    /// back by the next call. QEMU's device works through its queue in order
    /// and each transfer copies the framebuffer as it is then, so the host ends
    /// up showing the last composition. A refused or failed command is the
    /// error (the first one), after everything else was still submitted.
    fn show(&mut self, rects: &[Rect]) -> Result<(), DisplayError> {
        let mut result = self.reap();
        if rects.is_empty() {
            return result;
        }
        let mut free = self.tokens.iter().filter(|t| t.is_none()).count() / 2;
        let bounds;
        let rects = if rects.len() <= free {
            rects
        } else {
            bounds = rects.iter().skip(1).fold(rects[0], |b, r| b.union(r));
            // With every slot in flight, wait for the device to finish a pair
            // (it works through them on its own); one that does not within
            // `STUCK_MS` is broken, and this frame is not shown.
            let freq = read_sysreg!("CNTFRQ_EL0").max(1);
            let give_up = read_sysreg!("CNTPCT_EL0") + freq * STUCK_MS / 1000;
            while free == 0 {
                if read_sysreg!("CNTPCT_EL0") > give_up {
                    return result.and(Err(DisplayError::Stuck));
                }
                core::hint::spin_loop();
                match self.reap() {
                    Err(e @ DisplayError::Driver(_)) => return result.and(Err(e)),
                    Err(e) => result = result.and(Err(e)),
                    Ok(()) => {}
                }
                free = self.tokens.iter().filter(|t| t.is_none()).count() / 2;
            }
            core::slice::from_ref(&bounds)
        };
        for &r in rects {
            if let Err(e) = self.submit(r) {
                result = result.and(Err(e));
            }
        }
        if self.controlq.should_notify() {
            self.transport.notify(CONTROLQ);
        }
        result
    }

    /// Puts a transfer of `r` and a flush of it on the queue (two free slots).
    fn submit(&mut self, r: Rect) -> Result<(), DisplayError> {
        let (x, y) = (r.x.max(0) as u32, r.y.max(0) as u32);
        let offset = (u64::from(y) * u64::from(self.width) + u64::from(x))
            * u64::from(format::BYTES_PER_PIXEL);
        let transfer = [
            x,
            y,
            r.w,
            r.h,
            offset as u32,
            (offset >> 32) as u32,
            FB_RESOURCE,
            0,
        ];
        self.post(cmd::TRANSFER_TO_HOST_2D, &transfer)?;
        self.post(cmd::RESOURCE_FLUSH, &[x, y, r.w, r.h, FB_RESOURCE, 0])
    }

    /// Puts one command on the queue in a free slot, without notifying.
    fn post(&mut self, kind: u32, fields: &[u32]) -> Result<(), DisplayError> {
        let i = self
            .tokens
            .iter()
            .position(|t| t.is_none())
            .ok_or(DisplayError::Driver(virtio_drivers::Error::QueueFull))?;
        let slot = &mut *self.slots[i];
        slot.len = write_request(&mut slot.request, kind, fields);
        slot.response = [0; hdr::SIZE];
        // SAFETY: the slot's buffers are in a box of their own that is neither
        // moved nor reached again (its token marks it taken) until `reap` pops
        // this token. Should the `HostGpu` be dropped with commands in flight,
        // its first field, `transport`, drops first and resets the device,
        // which then no longer uses them.
        let token = unsafe {
            self.controlq
                .add(&[&slot.request[..slot.len]], &mut [&mut slot.response])?
        };
        self.tokens[i] = Some(token);
        Ok(())
    }

    /// Takes back every command the device finished; the first refused one is
    /// the error.
    fn reap(&mut self) -> Result<(), DisplayError> {
        let mut result = Ok(());
        while let Some(token) = self.controlq.peek_used() {
            let Some(i) = self.tokens.iter().position(|t| *t == Some(token)) else {
                // Not a token of ours: the device is broken; stop reaping.
                return Err(DisplayError::Driver(virtio_drivers::Error::WrongToken));
            };
            let slot = &mut *self.slots[i];
            // SAFETY: the buffers are the ones `post` added with this token, and
            // the device has given them back (it is the next used element).
            unsafe {
                self.controlq.pop_used(
                    token,
                    &[&slot.request[..slot.len]],
                    &mut [&mut slot.response],
                )?
            };
            self.tokens[i] = None;
            let response = type_of(&slot.response);
            if response != cmd::RESP_OK_NODATA && result.is_ok() {
                result = Err(DisplayError::Refused {
                    command: type_of(&slot.request),
                    response,
                });
            }
        }
        result
    }

    /// Waits until the device has finished every command in flight (bring-up).
    fn wait_idle(&mut self) -> Result<(), DisplayError> {
        let mut result = Ok(());
        while self.tokens.iter().any(|t| t.is_some()) {
            match self.reap() {
                Err(e @ DisplayError::Driver(_)) => return Err(e),
                Err(e) => result = result.and(Err(e)),
                Ok(()) => {}
            }
            core::hint::spin_loop();
        }
        result
    }
}

/// The display, what it shows, and when the next frame is due.
struct Display {
    host: HostGpu,
    /// Every registered VM's presentation, keyed by its index in [`VMS`].
    desk: Desk<usize>,
    /// Counter value after which the next frame may be composed.
    next_frame: u64,
    /// Counter ticks per frame.
    period: u64,
    /// Counter ticks a second (CNTFRQ_EL0).
    freq: u64,
    /// Set after a failed flush was logged (once).
    failed: bool,
}

/// Taken before [`VMS`] when both are.
static DISPLAY: Mutex<Option<Display>> = Mutex::new(None);

/// Output pixels of VM damage one frame recomposes at most, in display frames
/// (`vgpu::present::desk`): a VM flooding flushes costs at most one frame of its
/// own per tick, so another VM's frames keep their rate; past this, the VMs with
/// damage take turns.
const BUDGET_FRAMES: u64 = 2;

/// A VM's linear framebuffer (`vgpu::linear`), presented instead of its
/// virtio-gpu's scanout: each frame takes its dirty pages from stage 2
/// (`GuestRam::take_framebuffer_dirty`) and refreshes their rows.
struct FbSource {
    ram: crate::guestram::GuestRam,
    fb: vgpu::LinearFb,
    /// Compositions with damage since the last `display status`, and the output
    /// rectangle bounding what they recomposed.
    frames: u64,
    bounds: Option<Rect>,
}

/// A firmware VM's fw_cfg, whose `etc/ramfb` configuration (the last one seen
/// second) the render loop follows.
type RamfbWatch = (
    Shared<uefi_devices::fw_cfg::FwCfg>,
    Option<uefi_devices::fw_cfg::RamfbConfig>,
);

/// A VM on the display: its sources besides its virtio-gpu.
struct VmDisplay {
    vm: &'static Vm,
    /// Its linear framebuffer (a `simple-framebuffer`, or the ramfb its firmware
    /// configured), presented instead of its virtio-gpu. Taken after `ramfb`.
    fb: Mutex<Option<FbSource>>,
    /// Its firmware's fw_cfg, followed for `etc/ramfb`.
    ramfb: Mutex<Option<RamfbWatch>>,
}

/// Every registered VM, in registration order (its index is its desk key).
static VMS: Mutex<Vec<Arc<VmDisplay>>> = Mutex::new(Vec::new());

/// The VM `vm`'s entry and its desk key.
fn entry(vm: &Vm) -> Option<(usize, Arc<VmDisplay>)> {
    VMS.lock()
        .iter()
        .enumerate()
        .find(|(_, e)| core::ptr::eq(e.vm, vm))
        .map(|(i, e)| (i, e.clone()))
}

/// Puts `vm` on the display: its virtio-gpu's scanout 0, or its linear
/// framebuffer (`Vm::attach_framebuffer`), or, once its firmware configures one,
/// its ramfb (`Vm::attach_firmware`), live as a panel on top of the VMs already
/// there, each VM's default panel cascaded from `vgpu::present::DEFAULT_PANEL` so
/// that all show. Registered once (again: nothing happens); without a display the
/// VM's frames are still there for captures and scripts.
pub fn register(vm: &'static Vm) {
    let mut vms = VMS.lock();
    if vms.iter().any(|e| core::ptr::eq(e.vm, vm)) {
        return;
    }
    let fb = vm.framebuffer.as_ref().and_then(|spec| {
        let geometry = vgpu::FbGeometry {
            base: spec.base,
            width: spec.width,
            height: spec.height,
            stride: spec.stride,
            // DT `x8r8g8b8`: bytes B, G, R, X.
            format: vgpu::defs::format::B8G8R8X8_UNORM,
        };
        match vgpu::LinearFb::new(geometry, vm.ram.ipa(), vm.ram.size()) {
            Ok(fb) => Some(FbSource {
                ram: vm.ram,
                fb,
                frames: 0,
                bounds: None,
            }),
            Err(e) => {
                log::warn!("display: VM '{}': framebuffer refused: {e}", vm.name);
                None
            }
        }
    });
    let ramfb = vm.firmware.as_ref().map(|f| (f.fw_cfg.clone(), None));
    vms.push(Arc::new(VmDisplay {
        vm,
        fb: Mutex::new(fb),
        ramfb: Mutex::new(ramfb),
    }));
    let key = vms.len() - 1;
    drop(vms);
    if let Some(d) = DISPLAY.lock().as_mut() {
        place(d, key, vm);
    }
}

/// Adds the VM `key` to the desk at its cascaded default panel.
fn place(d: &mut Display, key: usize, vm: &Vm) {
    let (x, y) = vgpu::present::desk::cascade(key);
    if d.desk.add(key, 0, x, y) {
        log::info!(
            "display: VM '{}' scanout 0 as a panel at ({x}, {y})",
            vm.name
        );
    }
}

/// Applies a changed `etc/ramfb` configuration of `e`'s firmware: a valid one
/// inside guest RAM becomes the presented framebuffer; none (a VM reset) or a
/// refused one goes back to the virtio-gpu's scanout.
fn poll_ramfb(e: &VmDisplay) {
    let Some(mut guard) = e.ramfb.try_lock() else {
        return;
    };
    let Some((fw_cfg, seen)) = guard.as_mut() else {
        return;
    };
    let now = fw_cfg.0.lock().ramfb();
    if now == *seen {
        return;
    }
    *seen = now;
    let ram = e.vm.ram;
    // The old copy goes first: two at once could exhaust the heap.
    ram.set_framebuffer(0..0);
    *e.fb.lock() = None;
    let fb = now.map(|c| {
        let geometry = vgpu::FbGeometry {
            base: c.addr,
            width: c.width,
            height: c.height,
            stride: c.stride,
            // DRM_FORMAT_XRGB8888 (fw_cfg accepts no other): bytes B, G, R, X.
            format: vgpu::defs::format::B8G8R8X8_UNORM,
        };
        (
            geometry,
            vgpu::LinearFb::new(geometry, ram.ipa(), ram.size()),
        )
    });
    match fb {
        Some((g, Ok(fb))) => {
            log::info!(
                "display: ramfb {}x{} stride {} at {:#x} is the surface of VM '{}'",
                g.width,
                g.height,
                g.stride,
                g.base,
                e.vm.name
            );
            ram.set_framebuffer(g.pages(ram.ipa()));
            *e.fb.lock() = Some(FbSource {
                ram,
                fb,
                frames: 0,
                bounds: None,
            });
        }
        Some((g, Err(err))) => log::warn!(
            "display: ramfb at {:#x} of VM '{}' refused: {err}",
            g.base,
            e.vm.name
        ),
        None => {}
    }
}

impl FbSource {
    /// Refreshes the host copy's rows that the guest wrote since the last frame.
    fn refresh(&mut self) {
        let runs = self.ram.take_framebuffer_dirty();
        if runs.is_empty() {
            return;
        }
        let ram = self.ram;
        self.fb.absorb(&runs, |gpa, buf| {
            vdev::GuestMemory::read(&ram, gpa, buf).is_ok()
        });
    }

    /// Counts a composition of `rects` for `display status`.
    fn composed(&mut self, rects: &[Rect]) {
        for r in rects {
            self.frames += 1;
            self.bounds = Some(self.bounds.map_or(*r, |b| b.union(r)));
        }
    }
}

/// The registered VMs' devices, as the desk reaches them during a tick: each
/// locked only for the call.
struct Table<'a>(&'a [Arc<VmDisplay>]);

impl Sources<usize> for Table<'_> {
    fn with(&mut self, key: usize, take: bool, f: &mut dyn FnMut(&mut dyn ScanoutSource)) {
        let Some(e) = self.0.get(key) else {
            return;
        };
        if take {
            poll_ramfb(e);
        }
        let mut fb = e.fb.lock();
        match fb.as_mut() {
            Some(s) => {
                if take {
                    s.refresh();
                }
                f(&mut s.fb)
            }
            None => f(e.vm.gpu.0.lock().device_mut()),
        }
    }
}

/// Finds the host's virtio-gpu among `transports` and brings it up; the VMs
/// [`register`]ed (before or after) are presented on it. Without a display (or if
/// it fails) the VMs run headless.
pub fn start(transports: &[(boards::Range, Option<u32>)]) {
    match probe(transports) {
        Ok(host) => {
            log::info!("display: virtio-gpu {}x{}", host.width, host.height);
            let freq = read_sysreg!("CNTFRQ_EL0");
            let mut desk = Desk::new();
            desk.set_clock(freq);
            desk.set_budget(u64::from(host.width) * u64::from(host.height) * BUDGET_FRAMES);
            match with_neon(compositor::kernels::verify::<simd::Neon>) {
                Some(Ok(())) => {
                    NEON_VERIFIED.store(true, Ordering::Relaxed);
                    desk.set_composer(compose_simd);
                }
                Some(Err(m)) => {
                    log::warn!("display: NEON kernels wrong ({m:?}); composing without SIMD")
                }
                None => log::warn!("display: FP/SIMD traps at EL2; composing without SIMD"),
            }
            let mut guard = DISPLAY.lock();
            let d = guard.insert(Display {
                host,
                desk,
                next_frame: 0,
                period: (freq / FRAME_RATE).max(1),
                freq: freq.max(1),
                failed: false,
            });
            for (key, e) in VMS.lock().iter().enumerate() {
                place(d, key, e.vm);
            }
        }
        Err(DisplayError::NotFound) => log::info!("display: none (no virtio-gpu device); headless"),
        Err(e) => log::warn!("display: virtio-gpu unusable ({e:?}); headless"),
    }
}

/// Whether the NEON kernels passed `compositor::kernels::verify` at display start.
static NEON_VERIFIED: AtomicBool = AtomicBool::new(false);

/// Runs `f` with the NEON kernels: FP/SIMD usable at EL2 and its registers free. The
/// FP/SIMD registers hold the state of whichever vCPU last ran on this CPU (they stay
/// live across exits, see `el1.rs`), so they, FPCR and FPSR are saved before and
/// restored after: the guest never sees them change. `None` (nothing run) when
/// FP/SIMD traps at EL2 (CPTR_EL2.TFP, which this hypervisor never sets).
fn with_neon<R>(f: impl FnOnce(&simd::Neon) -> R) -> Option<R> {
    if CptrEl2.is_set(CPTR::TFP) {
        return None;
    }
    let mut live = FpState::ZERO;
    live.save_live();
    // SAFETY: CPTR_EL2.TFP is clear (checked above), so FP/SIMD does not trap at
    // EL2; the FP/SIMD registers, FPCR and FPSR were saved just above and are
    // restored just below, EL2 runs with interrupts masked (nothing else runs on
    // this CPU meanwhile), and the hypervisor's own code is soft-float, so it keeps
    // no values in them: `f` may clobber them.
    let r = f(&unsafe { simd::Neon::new() });
    live.restore_live();
    Some(r)
}

/// The render loop's composer: `compositor::compose_with` the NEON kernels
/// (`simd.rs`) once they passed verification, else the portable `compose`.
fn compose_simd(scene: &Scene, frame: &mut Frame, damage: &[Rect]) -> Report {
    if NEON_VERIFIED.load(Ordering::Relaxed) {
        if let Some(report) = with_neon(|k| compositor::compose_with(scene, frame, damage, k)) {
            return report;
        }
    }
    compositor::compose(scene, frame, damage)
}

fn probe(transports: &[(boards::Range, Option<u32>)]) -> Result<HostGpu, DisplayError> {
    for (range, _irq) in transports {
        let Ok(size) = usize::try_from(range.size) else {
            continue;
        };
        let Some(header) = NonNull::new(range.base as usize as *mut VirtIOHeader) else {
            continue;
        };
        // SAFETY: `range` is a virtio-mmio register window from the device tree,
        // identity-mapped as device memory for the hypervisor's whole life, so it is
        // valid for 'static. Building the transport only reads the identification
        // registers; it is kept for the GPU (a slot nobody else drives) and forgotten
        // for every other slot (see below), so no two drivers ever write one device.
        let Ok(transport) = (unsafe { MmioTransport::new(header, size) }) else {
            continue;
        };
        if transport.device_type() == DeviceType::GPU {
            return HostGpu::new(transport);
        }
        // Dropping a transport resets its device: the system disk's would die.
        core::mem::forget(transport);
    }
    Err(DisplayError::NotFound)
}

/// One step of the render loop: composes and shows what the VMs changed, if a
/// frame is due (`idle`: the calling CPU is about to idle, so it is due now).
pub fn tick(idle: bool) {
    // Physical input devices without an interrupt are polled on the same
    // occasions, and the authority's input scripts run (before the display's lock: their input is
    // routed, which reads the presentation).
    crate::input::poll_physical();
    crate::scripts::poll();
    crate::authority::post_kept();
    let Some(mut guard) = DISPLAY.try_lock() else {
        return;
    };
    let Some(d) = guard.as_mut() else {
        return;
    };
    let now = read_sysreg!("CNTPCT_EL0");
    if !idle && now < d.next_frame {
        return;
    }
    d.next_frame = now.wrapping_add(d.period);
    let vms: Vec<Arc<VmDisplay>> = VMS.lock().clone();
    let (w, h) = (d.host.width, d.host.height);
    let Ok(mut frame) = Frame::new(
        &mut d.host.fb,
        w,
        h,
        (w * format::BYTES_PER_PIXEL) as usize,
        PixelFormat::Xrgb8888,
    ) else {
        return;
    };
    // Each VM's device is locked only to take its frame's damage and its scanout
    // (pixels shared, not copied), or to look at what it shows under another's
    // damage; composing runs without it, so a vCPU using its virtio-gpu meanwhile
    // does not wait (a transfer into the shown resource copies it first,
    // `vgpu::Resource::unshare`). Hidden VMs are not looked at.
    let tick = d.desk.tick(&mut Table(&vms), &mut frame, now);
    for c in &tick.composed {
        let Some(e) = vms.get(c.key) else {
            continue;
        };
        if let Some(f) = e.fb.lock().as_mut() {
            f.composed(&c.rects);
        }
        if let Some(damage) = c.guest_damage {
            // The authority hears of it (rate-limited, `scripts::frame_composed`).
            crate::scripts::frame_composed(e.vm, c.frame, damage);
        }
    }
    if let Err(e) = d.host.show(&tick.rects) {
        if !d.failed {
            d.failed = true;
            log::warn!("display: flush failed: {e:?}");
        }
    }
}

/// `vm`'s linear framebuffer as it is now (its host copy refreshed from guest RAM
/// first), when it has one: `None` when it presents its virtio-gpu instead (or is
/// not registered); `Some(None)` cannot happen (a linear framebuffer always has
/// scanout 0).
pub fn linear_scanout(vm: &Vm) -> Option<Option<vgpu::SharedScanout>> {
    let (_, e) = entry(vm)?;
    poll_ramfb(&e);
    let mut fb = e.fb.lock();
    let f = fb.as_mut()?;
    f.refresh();
    Some(f.fb.scanout_shared(0))
}

/// The inverse of `vm`'s presentation, for its input routing (`input.rs`): `None`
/// when there is no display, the VM is not on it or hidden, or nothing of it is
/// drawn.
pub fn pointer_map(vm: &Vm) -> Option<input::PointerMap> {
    let (key, e) = entry(vm)?;
    let guard = DISPLAY.lock();
    let d = guard.as_ref()?;
    let p = d.desk.presenter(key)?;
    if p.policy() == vgpu::Policy::Hidden {
        return None;
    }
    let (gw, gh) = match e.fb.lock().as_ref() {
        Some(f) => (f.fb.geometry().width, f.fb.geometry().height),
        None => vm.gpu.0.lock().device().mode(0)?,
    };
    let display = Rect::new(0, 0, d.host.width, d.host.height);
    let abi = match p.placement() {
        Placement::Panel { x, y, size } => {
            let (w, h) = size.unwrap_or((gw, gh));
            authority_abi::call::Placement::Panel(authority_abi::call::Rect { x, y, w, h })
        }
        Placement::Fullscreen => authority_abi::call::Placement::Fullscreen,
        Placement::Quad(q) => authority_abi::call::Placement::Quad(q),
    };
    let placement = input::placement_for(&abi, gw, gh, display)?;
    input::PointerMap::new(&placement, gw, gh, display)
}

/// `vm`'s presentation policy on the display (`None`: no display, or the VM is
/// not on it).
pub fn policy_of(vm: &Vm) -> Option<vgpu::Policy> {
    let (key, _) = entry(vm)?;
    let guard = DISPLAY.lock();
    Some(guard.as_ref()?.desk.presenter(key)?.policy())
}

/// The VMs on the display, topmost first (as it draws them); empty without a
/// display.
pub fn stacking() -> Vec<&'static Vm> {
    let Some(order) = DISPLAY.lock().as_ref().map(|d| d.desk.order()) else {
        return Vec::new();
    };
    let vms = VMS.lock();
    order
        .into_iter()
        .rev()
        .filter_map(|key| vms.get(key).map(|e| e.vm))
        .collect()
}

/// The physical display's size, if there is one.
pub fn size() -> Option<(u32, u32)> {
    DISPLAY
        .lock()
        .as_ref()
        .map(|d| (d.host.width, d.host.height))
}

/// Why a display command did nothing, when the display is missing.
pub const HEADLESS: &str = "the host has no display (running headless)";

/// Applies the monitor's `change` to `vm`'s presentation (or, for a mode, to its
/// virtio-gpu); `Err` says why nothing changed. `here` is the commanding vCPU.
/// Presenting a VM also puts it on top.
pub fn change(vm: &Vm, here: usize, change: DisplayChange) -> Result<(), String> {
    // Physical input the devices hold from before the change is routed under the
    // presentation it was made on (a click, then `display hide` at once: the click
    // is the guest's), not left for their interrupt to route after it.
    crate::input::drain_physical();
    if let DisplayChange::Mode { width, height } = change {
        return set_mode(vm, here, width, height);
    }
    let Some((key, e)) = entry(vm) else {
        return Err(format!("VM '{}' is not on the display", vm.name));
    };
    let mut guard = DISPLAY.lock();
    let d = guard.as_mut().ok_or_else(|| String::from(HEADLESS))?;
    let Some(p) = d.desk.presenter_mut(key) else {
        return Err(format!("VM '{}' is not on the display", vm.name));
    };
    let mut raise = false;
    let result = match change {
        DisplayChange::Present(placement) => {
            let placement = match placement {
                DisplayPlacement::Panel { x, y, w, h } => Placement::Panel {
                    x,
                    y,
                    size: Some((w, h)),
                },
                DisplayPlacement::Fullscreen => Placement::Fullscreen,
                DisplayPlacement::Quad(q) => Placement::Quad(q),
            };
            p.set_placement(placement).map(|()| {
                // Presenting shows the VM again, unless frozen or throttled.
                if p.policy() == vgpu::Policy::Hidden {
                    p.show_live();
                }
                raise = true;
            })
        }
        DisplayChange::Hide => {
            p.hide();
            Ok(())
        }
        DisplayChange::Freeze => match e.fb.lock().as_ref() {
            Some(f) => p.freeze(&f.fb),
            None => p.freeze(vm.gpu.0.lock().device()),
        },
        DisplayChange::Unfreeze => p.unfreeze(),
        DisplayChange::Throttle { fps } => p.throttle(fps),
        DisplayChange::Mode { .. } => Ok(()),
    };
    if raise {
        // The VM presented last is on top.
        d.desk.raise(key);
    }
    drop(guard);
    // The VM's input follows its presentation (hiding releases what is held).
    crate::input::presentation_changed(here);
    result.map_err(|e| format!("{e}"))
}

/// `display mode`: the guest's virtual monitor becomes `width` × `height`, and the
/// guest is told through the configuration-change interrupt.
fn set_mode(vm: &Vm, here: usize, width: u32, height: u32) -> Result<(), String> {
    {
        let mut gpu = vm.gpu.0.lock();
        gpu.device_mut()
            .set_mode(0, width, height)
            .map_err(|e| match e {
                ModeError::BadSize => format!(
                    "mode {width}x{height} is not within 1x1..={m}x{m}",
                    m = vgpu::edid::MAX_ACTIVE
                ),
                ModeError::NoScanout => String::from("the guest's GPU has no scanout 0"),
            })?;
        let mut irq = VgicSink::new(&vm.vgic);
        gpu.signal_config_change(&mut irq);
    }
    vm.deliver_kicks(here);
    crate::input::presentation_changed(here);
    log::info!(
        "display: VM '{}' virtual monitor now {width}x{height}",
        vm.name
    );
    Ok(())
}

/// `display overlay`: the overlay line (empty: none), one for the whole display.
pub fn set_overlay(text: &str) -> Result<(), &'static str> {
    let mut guard = DISPLAY.lock();
    let d = guard.as_mut().ok_or(HEADLESS)?;
    d.desk.set_overlay(Some(text));
    Ok(())
}

/// `display status`: the physical display and `vm`'s presentation, one line, ending
/// with the frames composed for it so far and the time they were counted at (the
/// system counter the render loop schedules by, in microseconds), so that a rate
/// can be measured in the hypervisor's time.
pub fn status(vm: &Vm) -> String {
    let mode = vm
        .gpu
        .0
        .lock()
        .device()
        .mode(0)
        .map_or(String::from("none"), |(w, h)| format!("{w}x{h}"));
    let e = entry(vm);
    let guard = DISPLAY.lock();
    match guard.as_ref() {
        None => format!("headless; vm {} virtual monitor {mode}", vm.name),
        Some(d) => {
            let overlay = d
                .desk
                .overlay()
                .map_or(String::from("none"), |t| format!("'{t}'"));
            let now = read_sysreg!("CNTPCT_EL0");
            let us = u128::from(now) * 1_000_000 / u128::from(d.freq);
            let key = e.as_ref().map(|(k, _)| *k);
            let Some((p, frames)) =
                key.and_then(|k| Some((d.desk.presenter(k)?, d.desk.frames(k)?)))
            else {
                return format!(
                    "display {}x{}; vm {} not on the display (virtual monitor {mode}); overlay {overlay}",
                    d.host.width, d.host.height, vm.name
                );
            };
            let mut s = format!(
                "display {}x{}; vm {} {} (virtual monitor {mode}); overlay {overlay}; frames {frames} at {us} us",
                d.host.width,
                d.host.height,
                vm.name,
                p.status(),
            );
            if let Some(f) = e.as_ref().and_then(|(_, e)| {
                let mut fb = e.fb.lock();
                fb.as_mut().map(fb_status)
            }) {
                s += &f;
            }
            s
        }
    }
}

/// The framebuffer's part of `display status`: its mode and what was recomposed
/// from it since the last status (which starts the count again).
fn fb_status(f: &mut FbSource) -> String {
    let g = f.fb.geometry();
    let damage = match f.bounds.take() {
        Some(b) => format!("within {},{} {}x{}", b.x, b.y, b.w, b.h),
        None => String::from("none"),
    };
    let frames = core::mem::take(&mut f.frames);
    format!(
        "; framebuffer {}x{} at {:#x}: {frames} damage rects since last status, {damage}",
        g.width, g.height, g.base
    )
}
