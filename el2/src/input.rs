//! Input routing: one [`input::Router`] per guest, fed by the monitor's `input …`
//! commands, the authority partition's injections and the physical keyboard and
//! tablet, delivering to the VM's input devices through [`Sink`]s.
//!
//! Every source produces authority-ABI [`InputEvent`]s. Those for a named VM go
//! through [`route`]; physical ones through `route_physical`, which picks the VM
//! the way the display shows them (`input::stack`: the pointer's VM is the
//! topmost one under it, the keyboard's the one last clicked) and hands what no
//! VM takes to the authority partition. Either way a router gates the events on
//! its VM's presentation (the display's placement of it, read at every call and
//! on every `display …` change through [`presentation_changed`]) and on its
//! interactive switch, maps display positions into guest pixels, and hands the
//! resulting reports to every sink. Physical input never reaches a guest any
//! other way.
//!
//! A sink is one kind of guest input device pair: [`VirtioInputSink`] (the Linux
//! VM's virtio-input keyboard and tablet) and [`UsbHidSink`] (the USB HID keyboard
//! and tablet behind the VM's xHCI, `usb.rs`); [`start`] gives the VM one of each
//! it has, and every routed report goes to all of them.
//!
//! The physical devices are QEMU's `virtio-keyboard-device` and
//! `virtio-tablet-device`, driven with `virtio-drivers`' virtio-mmio transport and
//! split virtqueue (its input driver needs the crate's `alloc` feature, see
//! `display.rs`): the event queue holds [`EVENT_BUFFERS`] eight-byte buffers. A
//! device with an interrupt is taken when it fires, on whichever CPU that is
//! ([`service_interrupt`], from `wait.rs`'s dispatch), one without is polled by the
//! render loop's callers ([`poll_physical`]); `input::physical` turns the evdev
//! reports into authority-ABI events in display pixels.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, AtomicU32, Ordering};

use aarch64_cpu::registers::{Readable, MPIDR_EL1};
use arch::relax::Mutex;
use authority_abi::input::{Button, Chord, InputEvent, Space};
use authority_abi::ring::Event;
use input::physical::{Axis, Physical};
use input::reserve::{Claim, Reserve};
use input::{Device, Report, Routed, Router};
use monitor::command::{InputAction, MouseButton};
use vdev::Shared;
use virtio::defs::input as ev;
use virtio_drivers::device::common::Feature;
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};

use crate::el1::read_sysreg;
use crate::sysdisk::IdentityHal;
use crate::vm::{VgicSink, Vm};

/// One of a VM's virtio-input devices.
pub type GuestInputDevice = Shared<virtio::MmioTransport<virtio::input::Input>>;

/// A VM's virtio-input keyboard and tablet (a firmware VM has neither).
#[derive(Default, Clone)]
pub struct GuestInput {
    pub keyboard: Option<GuestInputDevice>,
    pub tablet: Option<GuestInputDevice>,
}

/// Where a VM's routed input goes: one kind of guest input device pair.
pub trait Sink: Send {
    /// Queues `report` (evdev events for `report.device`; tablet positions in
    /// guest pixels of a `guest.0 × guest.1` screen); `false` when the device
    /// dropped it (absent, or its queue full).
    fn push(&mut self, report: &Report, guest: (u32, u32)) -> bool;
    /// Lets the guest see what was queued (completes its buffers, raises the
    /// interrupts; `here` is the calling vCPU, `usize::MAX` for none).
    fn flush(&mut self, vm: &Vm, here: usize);
    /// Whether a report of any size would be queued now (paced sources wait
    /// while not).
    fn has_room(&self) -> bool;
}

/// The Linux VM's virtio-input keyboard and tablet.
pub struct VirtioInputSink(pub GuestInput);

impl Sink for VirtioInputSink {
    fn push(&mut self, report: &Report, guest: (u32, u32)) -> bool {
        let device = match report.device {
            Device::Keyboard => &self.0.keyboard,
            Device::Tablet => &self.0.tablet,
        };
        let Some(device) = device else {
            return false;
        };
        let mut t = device.0.lock();
        let d = t.device_mut();
        // The tablet's axes span its own size; a guest mode of another size is
        // scaled onto them, in a copy on the stack (no allocation per event). A
        // report too long for it is handed over as it is, and refused whole.
        let mut scaled = [virtio::input::Event::SYN; virtio::input::MAX_REPORT_EVENTS];
        let events: &[virtio::input::Event] = match d.personality() {
            virtio::input::Personality::Tablet { width, height }
                if report.events.len() <= scaled.len() =>
            {
                let scale = |v: i32, to: u32, from: u32| {
                    (i64::from(v) * i64::from(to) / i64::from(from.max(1))) as i32
                };
                for (s, e) in scaled.iter_mut().zip(&report.events) {
                    *s = *e;
                    match (e.ty, e.code) {
                        (ev::EV_ABS, ev::ABS_X) => s.value = scale(e.value, width, guest.0),
                        (ev::EV_ABS, ev::ABS_Y) => s.value = scale(e.value, height, guest.1),
                        _ => {}
                    }
                }
                &scaled[..report.events.len()]
            }
            _ => &report.events,
        };
        d.push_report(events).is_ok()
    }

    fn has_room(&self) -> bool {
        // A report is at most MAX_REPORT_EVENTS events and its SYN_REPORT.
        let need = virtio::input::MAX_REPORT_EVENTS + 1;
        [&self.0.keyboard, &self.0.tablet]
            .into_iter()
            .flatten()
            .all(|d| d.0.lock().device().pending_events() + need <= virtio::input::EVENT_CAPACITY)
    }

    fn flush(&mut self, vm: &Vm, here: usize) {
        let mut irq = VgicSink::new(&vm.vgic);
        for device in [&self.0.keyboard, &self.0.tablet].into_iter().flatten() {
            let mut mem = vm.ram;
            device.0.lock().poll(&mut mem, &mut irq);
        }
        if irq.touched {
            vm.deliver_kicks(here);
        }
    }
}

/// The USB HID keyboard and tablet behind the VM's xHCI: evdev key codes back to
/// HID usages, guest pixels to the tablet's 0..=0x7fff axes. The controller
/// applies the requests at its next deferred-work round (the link raises the VM's
/// work signal), so [`Sink::flush`] has nothing to do.
pub struct UsbHidSink {
    usb: crate::usb::UsbInput,
    /// The tablet's last position (its axes), for a report that moves one axis.
    at: (u16, u16),
}

impl UsbHidSink {
    pub fn new(usb: crate::usb::UsbInput) -> Self {
        Self { usb, at: (0, 0) }
    }
}

/// The tablet's axis value for guest pixel `v` of `size` pixels.
fn usb_axis(v: i32, size: u32) -> u16 {
    const MAX: i64 = 0x7fff;
    let last = i64::from(size.max(2) - 1);
    (i64::from(v).clamp(0, last) * MAX / last) as u16
}

impl Sink for UsbHidSink {
    fn push(&mut self, report: &Report, guest: (u32, u32)) -> bool {
        let mut queued = true;
        let mut moved = false;
        for e in &report.events {
            let r = match (report.device, e.ty, e.code) {
                (Device::Keyboard, ev::EV_KEY, code) => match input::keymap::evdev_to_hid(code) {
                    Some(usage) => self.usb.key(usage, e.value != 0),
                    None => continue,
                },
                (Device::Tablet, ev::EV_KEY, code) => {
                    let button = match code {
                        ev::BTN_LEFT => 0,
                        ev::BTN_RIGHT => 1,
                        ev::BTN_MIDDLE => 2,
                        // The HID tablet has three buttons.
                        _ => continue,
                    };
                    self.usb.button(button, e.value != 0).map(|_| ())
                }
                (Device::Tablet, ev::EV_ABS, ev::ABS_X) => {
                    self.at.0 = usb_axis(e.value, guest.0);
                    moved = true;
                    continue;
                }
                (Device::Tablet, ev::EV_ABS, ev::ABS_Y) => {
                    self.at.1 = usb_axis(e.value, guest.1);
                    moved = true;
                    continue;
                }
                (Device::Tablet, ev::EV_REL, ev::REL_WHEEL) => {
                    self.usb.wheel(e.value.clamp(-127, 127) as i8)
                }
                _ => continue,
            };
            queued &= r.is_ok();
        }
        if moved {
            queued &= self.usb.pointer_abs(self.at.0, self.at.1).is_ok();
        }
        queued
    }

    fn flush(&mut self, _vm: &Vm, _here: usize) {}

    fn has_room(&self) -> bool {
        // One event is at most three requests (a move is one, a key or button one).
        self.usb.queued() + 3 <= xhci::host::MAX_QUEUED
    }
}

/// The VM's routing.
struct Routing {
    vm: &'static Vm,
    router: Router,
    sinks: Vec<Box<dyn Sink>>,
    /// The presentation the router was last given.
    map: Option<input::PointerMap>,
    /// The router's clock (milliseconds; gaze dwell counts in it): the system
    /// counter's, never going back, moved on by held gaze samples.
    clock_ms: u64,
}

/// Every guest's routing. Taken after the display's locks, never while holding
/// them.
static ROUTING: Mutex<Vec<Routing>> = Mutex::new(Vec::new());
/// The VM the physical keyboard types into (the last one clicked), as its
/// index in [`ROUTING`] (`input::stack::route_stack`).
static FOCUS: Mutex<Option<usize>> = Mutex::new(None);
/// The physical keyboard's chord reserved for RayOS (the authority's
/// RESERVE_KEY). Taken after [`ROUTING`] and [`FOCUS`].
static RESERVE: Mutex<Reserve> = Mutex::new(Reserve::new());

/// Reserves `chord` of the physical keyboard for RayOS (`None`: none): from the
/// next physical event on, its press goes to the authority partition
/// (`Event::ReservedKey`) and its release nowhere, whichever VM has the keyboard.
pub fn reserve_key(chord: Option<Chord>) {
    RESERVE.lock().set(chord);
    match chord {
        Some(c) => log::info!(
            "input: the physical keyboard's {} is RayOS's (reserved by the authority partition)",
            input::keymap::chord_name(c)
        ),
        None => log::info!("input: no key of the physical keyboard is reserved for RayOS"),
    }
}

/// What became of a batch of events.
#[derive(Debug, Default, Clone, Copy)]
pub struct Tally {
    pub delivered: u32,
    pub not_interactive: u32,
    pub outside: u32,
    pub ignored: u32,
    /// Reports the devices dropped (their queues full: the guest is not reading).
    pub dropped: u32,
}

impl core::fmt::Display for Tally {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "{} delivered, {} not interactive, {} outside, {} ignored, {} dropped",
            self.delivered, self.not_interactive, self.outside, self.ignored, self.dropped
        )
    }
}

fn now_ms() -> u64 {
    let freq = read_sysreg!("CNTFRQ_EL0").max(1);
    (u128::from(read_sysreg!("CNTPCT_EL0")) * 1000 / u128::from(freq)) as u64
}

/// Sets up every guest's routing (interactive, presented as the display shows
/// it) and the physical input devices among `transports`.
pub fn start(vms: &[&'static Vm], transports: &[(boards::Range, Option<u32>)]) {
    let routings = vms.iter().map(|&vm| {
        let mut sinks: Vec<Box<dyn Sink>> = Vec::new();
        if vm.input.keyboard.is_some() || vm.input.tablet.is_some() {
            sinks.push(Box::new(VirtioInputSink(vm.input.clone())));
        }
        if let Some(usb) = &vm.usb {
            sinks.push(Box::new(UsbHidSink::new(usb.clone())));
        }
        let mut router = Router::new(input::gaze::GazeConfig::default());
        router.set_interactive(true, &mut Vec::new());
        Routing {
            vm,
            router,
            sinks,
            map: None,
            clock_ms: 0,
        }
    });
    ROUTING.lock().extend(routings);
    presentation_changed(usize::MAX);
    start_physical(transports);
}

/// Runs `f` on `vm`'s routing; `None` if it has none.
fn with_routing<T>(vm: &Vm, f: impl FnOnce(&mut Routing) -> T) -> Option<T> {
    ROUTING
        .lock()
        .iter_mut()
        .find(|r| core::ptr::eq(r.vm, vm))
        .map(f)
}

impl Routing {
    /// Gives the router the display's current presentation of the VM, if it
    /// changed.
    fn follow(&mut self, map: Option<input::PointerMap>, here: usize) {
        if map == self.map {
            return;
        }
        self.map = map;
        let mut out = Vec::new();
        self.router.set_presentation(map, &mut out);
        self.deliver(&out, here);
    }

    fn guest_size(&self) -> (u32, u32) {
        self.map.map_or((1, 1), |m| m.guest_size())
    }

    /// Hands `reports` to every sink; returns how many some sink dropped.
    fn deliver(&mut self, reports: &[Report], here: usize) -> u32 {
        self.deliver_each(reports.iter(), here)
    }

    /// [`Self::deliver`] of the reports `reports` gives (each sink goes through
    /// them in turn, then lets the guest see them).
    fn deliver_each<'a>(
        &mut self,
        reports: impl Iterator<Item = &'a Report> + Clone,
        here: usize,
    ) -> u32 {
        if reports.clone().next().is_none() {
            return 0;
        }
        if self.sinks.is_empty() {
            // A VM without input devices (a firmware VM): nothing can take them.
            return reports.count() as u32;
        }
        let guest = self.guest_size();
        let mut dropped = 0;
        for s in &mut self.sinks {
            for r in reports.clone() {
                if !s.push(r, guest) {
                    dropped += 1;
                }
            }
            s.flush(self.vm, here);
        }
        dropped
    }

    fn route_at(&mut self, now: u64, events: &[InputEvent], here: usize, t: &mut Tally) {
        let mut out = Vec::new();
        for e in events {
            match self.router.route(now, e, &mut out) {
                Routed::Delivered => t.delivered += 1,
                Routed::NotInteractive => t.not_interactive += 1,
                Routed::Outside => t.outside += 1,
                Routed::Ignored => t.ignored += 1,
            }
        }
        t.dropped += self.deliver(&out, here);
    }
}

/// Whether `vm`'s interactive switch is on (presented or not; `false` for a VM
/// without routing).
pub fn interactive(vm: &Vm) -> bool {
    with_routing(vm, |r| r.router.interactive()).unwrap_or(false)
}

/// The display's presentation of the VMs changed (or may have): each router
/// follows it; hiding releases every key and button the guest holds.
pub fn presentation_changed(here: usize) {
    let vms: Vec<&'static Vm> = ROUTING.lock().iter().map(|r| r.vm).collect();
    for vm in vms {
        let map = crate::display::pointer_map(vm);
        with_routing(vm, |r| r.follow(map, here));
    }
}

/// The entry point of input for one VM (the monitor's `input …`, the authority
/// partition's injections): routes `events` through `vm`'s router to its
/// sinks. `here` is the calling vCPU (`usize::MAX`: none).
pub fn route(vm: &Vm, events: &[InputEvent], here: usize) -> Tally {
    let mut t = Tally::default();
    let map = crate::display::pointer_map(vm);
    let routed = with_routing(vm, |r| {
        r.follow(map, here);
        r.clock_ms = r.clock_ms.max(now_ms());
        let now = r.clock_ms;
        r.route_at(now, events, here, &mut t);
    });
    if routed.is_none() {
        t.not_interactive = events.len() as u32;
    }
    t
}

/// Physical input, over every VM on the display (`input::stack`): each event
/// goes to the VM under the pointer, or the one with the keyboard focus; what
/// no guest takes is RayOS's and goes to the authority partition
/// (`authority::keep_input`), and so does the chord it reserved ([`RESERVE`])
/// before any VM sees it.
fn route_physical(events: &[InputEvent]) {
    // Topmost first, as the display draws them; VMs not on it after.
    let stacking = crate::display::stacking();
    // The maps are read before the routing's lock is taken (the display's
    // locks are never taken under it).
    let vms: Vec<&'static Vm> = ROUTING.lock().iter().map(|r| r.vm).collect();
    let maps: Vec<(&'static Vm, Option<input::PointerMap>)> = vms
        .into_iter()
        .map(|vm| (vm, crate::display::pointer_map(vm)))
        .collect();
    let mut kept = Vec::new();
    {
        let mut routings = ROUTING.lock();
        let now = now_ms();
        let mut order: Vec<(usize, &mut Routing)> = routings.iter_mut().enumerate().collect();
        order.sort_by_key(|(_, r)| {
            stacking
                .iter()
                .position(|v| core::ptr::eq(*v, r.vm))
                .unwrap_or(usize::MAX)
        });
        for (_, r) in order.iter_mut() {
            let map = maps
                .iter()
                .find(|(vm, _)| core::ptr::eq(*vm, r.vm))
                .and_then(|(_, m)| *m);
            r.follow(map, usize::MAX);
            r.clock_ms = r.clock_ms.max(now);
        }
        let mut focus = FOCUS.lock();
        // The whole batch is routed, then each VM's reports go to its devices
        // in one go (in order; routing never depends on delivery): one flush,
        // one interrupt and one wake-up per VM and batch. A batch is at most a
        // queue's worth of events from each device, far under what a guest
        // device holds for its driver (`virtio::input::EVENT_CAPACITY`).
        let mut out = Vec::new();
        {
            let mut stack: Vec<(usize, &mut Router)> =
                order.iter_mut().map(|(i, r)| (*i, &mut r.router)).collect();
            let mut reserve = RESERVE.lock();
            for e in events {
                match reserve.claim(e) {
                    Claim::Pressed(chord) => kept.push(Event::ReservedKey { chord }),
                    Claim::Swallowed => {}
                    Claim::Pass => {
                        if !input::stack::route_stack(&mut stack, &mut focus, now, e, &mut out) {
                            kept.push(Event::Input { event: *e });
                        }
                    }
                }
            }
        }
        for (i, r) in order.iter_mut() {
            let i = *i;
            let reports = out.iter().filter(move |(k, _)| *k == i).map(|(_, rep)| rep);
            r.deliver_each(reports, usize::MAX);
        }
    }
    crate::authority::keep_input(&kept);
}

/// [`route`] for a paced source (an input script): `None`, and nothing routed,
/// while one of the VM's devices has no room for a report; the source sends the
/// event again later, so none is lost or reordered.
pub fn route_paced(vm: &Vm, e: &InputEvent, here: usize) -> Option<Tally> {
    let mut t = Tally::default();
    let map = crate::display::pointer_map(vm);
    let routed = with_routing(vm, |r| {
        if !r.sinks.iter().all(|s| s.has_room()) {
            return false;
        }
        r.follow(map, here);
        r.clock_ms = r.clock_ms.max(now_ms());
        let now = r.clock_ms;
        r.route_at(now, core::slice::from_ref(e), here, &mut t);
        true
    });
    match routed {
        None => {
            t.not_interactive = 1;
            Some(t)
        }
        Some(true) => Some(t),
        Some(false) => None,
    }
}

/// Gaze samples of a held gaze: one every this many milliseconds.
const GAZE_SAMPLE_MS: u64 = 16;

fn button_of(b: MouseButton) -> Button {
    match b {
        MouseButton::Left => Button::Left,
        MouseButton::Right => Button::Right,
        MouseButton::Middle => Button::Middle,
        MouseButton::Back => Button::Back,
        MouseButton::Forward => Button::Forward,
    }
}

/// The events of a one-step input script (`type "…"`, `key CHORD`), validated
/// by the script parser.
fn script_step(text: &str) -> Result<Vec<InputEvent>, String> {
    let script = input::Script::parse(text.as_bytes())
        .map_err(|e| format!("`{text}` refused: {:?}", e.kind))?;
    Ok(script
        .steps
        .iter()
        .flat_map(input::run::events_of)
        .collect())
}

/// The monitor's `input …` for the VM: what became of the events, or why nothing
/// was done.
pub fn command(vm: &Vm, action: InputAction, here: usize) -> Result<String, String> {
    let point = |x, y| InputEvent::PointerAbs {
        x,
        y,
        space: Space::Display,
    };
    let events = match action {
        InputAction::Type(text) => script_step(&format!("type {text}"))?,
        InputAction::Key(chord) => script_step(&format!("key {chord}"))?,
        InputAction::Pointer { x, y } => alloc::vec![point(x, y)],
        InputAction::Click { x, y, button } => {
            let button = button_of(button);
            alloc::vec![
                point(x, y),
                InputEvent::Button {
                    button,
                    pressed: true
                },
                InputEvent::Button {
                    button,
                    pressed: false
                },
            ]
        }
        InputAction::Gaze { x, y, ms } => return Ok(gaze(vm, x, y, ms, here)),
        InputAction::Interactive(on) => {
            with_routing(vm, |r| {
                let mut out = Vec::new();
                r.router.set_interactive(on, &mut out);
                r.deliver(&out, here);
            })
            .ok_or_else(|| String::from("the VM has no input routing"))?;
            return Ok(String::from(if on {
                "input interactive"
            } else {
                "input not interactive (held keys released)"
            }));
        }
    };
    Ok(format!(
        "{} events: {}",
        events.len(),
        route(vm, &events, here)
    ))
}

/// A gaze held at display `(x, y)` for `ms` milliseconds of the router's clock:
/// samples every [`GAZE_SAMPLE_MS`], so smoothing converges and a dwell clicks.
fn gaze(vm: &Vm, x: i32, y: i32, ms: u32, here: usize) -> String {
    let mut t = Tally::default();
    let map = crate::display::pointer_map(vm);
    let samples = with_routing(vm, |r| {
        r.follow(map, here);
        let start = r.clock_ms.max(now_ms());
        let mut at = 0;
        let mut samples = 0;
        loop {
            r.route_at(start + at, &[InputEvent::Gaze { x, y }], here, &mut t);
            samples += 1;
            if at >= u64::from(ms) {
                break;
            }
            at = (at + GAZE_SAMPLE_MS).min(u64::from(ms));
        }
        r.clock_ms = start + at;
        samples
    });
    match samples {
        Some(n) => format!("{n} gaze samples: {t}"),
        None => String::from("no input routing"),
    }
}

/// Descriptors of a physical device's event queue, one event buffer each.
const EVENT_BUFFERS: usize = 32;
/// The event queue's index.
const EVENTQ: u16 = 0;
/// Physical input devices taken by interrupt at most (more are polled).
const MAX_IRQ_DEVICES: usize = 4;

/// One physical virtio-input device.
struct HostInput {
    transport: MmioTransport<'static>,
    eventq: VirtQueue<IdentityHal, EVENT_BUFFERS>,
    /// The buffers, one per descriptor (token `i` is buffer `i`): heap memory the
    /// device writes, leaked with the device (it lives as long as the hypervisor).
    buffers: &'static mut [[u8; ev::EVENT_SIZE]; EVENT_BUFFERS],
    /// Its evdev reports being gathered and their translation (one per device, so
    /// a report cut by a bounded round never mixes with another device's).
    physical: Physical,
    /// Its interrupt (an SPI) when it has one; else it is polled.
    irq: Option<u32>,
}

/// The physical devices.
struct PhysicalInput {
    devices: Vec<HostInput>,
}

/// Taken before the routing's and the display's locks (events are routed under
/// it, so two CPUs cannot reorder them), never while holding those; waited for
/// only by the interrupt handler, which holds no lock.
static PHYSICAL: Mutex<Option<PhysicalInput>> = Mutex::new(None);

/// The interrupts of the physical devices that have one (`u32::MAX`: free slot),
/// for the interrupt dispatch (`wait::service_irqs`, `wait::idle`).
static PHYSICAL_INTIDS: [AtomicU32; MAX_IRQ_DEVICES] =
    [const { AtomicU32::new(u32::MAX) }; MAX_IRQ_DEVICES];
/// Whether some physical device has no interrupt (the render loop polls it).
static POLLED: AtomicBool = AtomicBool::new(false);

/// Reads config field `select`/`subsel` of a virtio-input device: its size and the
/// first bytes of its union.
fn query(t: &mut MmioTransport<'static>, select: u8, subsel: u8) -> Option<(u8, [u8; 8])> {
    t.write_config_space(ev::CFG_SELECT, select).ok()?;
    t.write_config_space(ev::CFG_SUBSEL, subsel).ok()?;
    let size: u8 = t.read_config_space(ev::CFG_SIZE_FIELD).ok()?;
    let mut data = [0u8; 8];
    for (i, b) in data.iter_mut().enumerate() {
        *b = t.read_config_space(ev::CFG_UNION + i).ok()?;
    }
    Some((size, data))
}

/// An absolute axis's range (`struct virtio_input_absinfo`: min, max, …).
fn axis(t: &mut MmioTransport<'static>, code: u16) -> Option<Axis> {
    let (size, d) = query(t, ev::CFG_ABS_INFO, code as u8)?;
    (size >= 8).then(|| Axis {
        min: i32::from_le_bytes([d[0], d[1], d[2], d[3]]),
        max: i32::from_le_bytes([d[4], d[5], d[6], d[7]]),
    })
}

impl HostInput {
    fn new(
        mut transport: MmioTransport<'static>,
        physical: Physical,
    ) -> Result<Self, virtio_drivers::Error> {
        transport.begin_init(Feature::VERSION_1);
        let mut eventq = VirtQueue::new(&mut transport, EVENTQ, false, false)?;
        let buffers = Box::leak(Box::new([[0u8; ev::EVENT_SIZE]; EVENT_BUFFERS]));
        for b in buffers.iter_mut() {
            // SAFETY: the buffer is leaked heap memory (identity-mapped, so its
            // address is the one the device writes), referenced by nothing else
            // but this queue from now on: it stays valid until `pop_used` gives it
            // back, and is only read after that.
            unsafe { eventq.add(&[], &mut [b.as_mut_slice()]) }?;
        }
        transport.finish_init();
        transport.notify(EVENTQ);
        Ok(HostInput {
            transport,
            eventq,
            buffers,
            physical,
            irq: None,
        })
    }

    /// Takes the events the device completed, at most [`EVENT_BUFFERS`] (a
    /// queue's worth: bounded work, however fast the device refills), and gives
    /// the buffers back.
    fn take(&mut self, out: &mut Vec<InputEvent>) {
        let mut taken = 0;
        while taken < EVENT_BUFFERS {
            let Some(token) = self.eventq.peek_used() else {
                break;
            };
            let Some(b) = self.buffers.get_mut(usize::from(token)) else {
                log::warn!("physical input: device used an unknown buffer {token}");
                break;
            };
            // SAFETY: `token` is the descriptor `b` was added with (token i is
            // buffer i, as `add` hands descriptors out in order from a fresh
            // queue and each re-add reuses the freed one).
            if unsafe { self.eventq.pop_used(token, &[], &mut [b.as_mut_slice()]) }.is_err() {
                break;
            }
            let e = virtio::input::Event::decode(b);
            self.physical.event(e.ty, e.code, e.value, out);
            // SAFETY: as in `new`: the same leaked buffer, handed to the device
            // again and not read until it comes back.
            if unsafe { self.eventq.add(&[], &mut [b.as_mut_slice()]) }.is_err() {
                break;
            }
            taken += 1;
        }
        if taken > 0 && self.eventq.should_notify() {
            self.transport.notify(EVENTQ);
        }
    }
}

/// Finds QEMU's virtio keyboard and tablet among `transports` (each with its
/// interrupt, if the device tree gives one), brings them up and enables their
/// interrupts.
fn start_physical(transports: &[(boards::Range, Option<u32>)]) {
    let Some(display) = crate::display::size() else {
        log::info!("physical input: no display, so no pointer to map; not driven");
        return;
    };
    let mut devices = Vec::new();
    // A keyboard's translation has no axes (nothing reads them).
    let none = Axis { min: 0, max: 0 };
    let mut slots = 0;
    for (range, irq) in transports {
        let Ok(size) = usize::try_from(range.size) else {
            continue;
        };
        let Some(header) = NonNull::new(range.base as usize as *mut VirtIOHeader) else {
            continue;
        };
        // SAFETY: `range` is a virtio-mmio register window from the device tree,
        // identity-mapped as device memory for the hypervisor's whole life.
        // Building the transport only reads identification registers; it is kept
        // only for an input device (which nothing else drives) and forgotten
        // otherwise, since dropping one resets its device (see `display::probe`).
        let Ok(mut transport) = (unsafe { MmioTransport::new(header, size) }) else {
            continue;
        };
        if transport.device_type() != DeviceType::Input {
            core::mem::forget(transport);
            continue;
        }
        let tablet =
            query(&mut transport, ev::CFG_EV_BITS, ev::EV_ABS as u8).is_some_and(|(n, _)| n > 0);
        let mut axes = (none, none);
        if tablet {
            match (
                axis(&mut transport, ev::ABS_X),
                axis(&mut transport, ev::ABS_Y),
            ) {
                (Some(x), Some(y)) if x.max > x.min && y.max > y.min => axes = (x, y),
                _ => {
                    log::warn!("physical input: tablet without usable axes; ignored");
                    core::mem::forget(transport);
                    continue;
                }
            }
        }
        let mut d = match HostInput::new(transport, Physical::new(display, axes)) {
            Ok(d) => d,
            Err(e) => {
                log::warn!("physical input at {:#x} unusable: {e:?}", range.base);
                continue;
            }
        };
        // Only an SPI can be the hypervisor's (and one slot each, for dispatch).
        d.irq = irq.filter(|id| (32..1020).contains(id) && slots < MAX_IRQ_DEVICES);
        if let Some(id) = d.irq {
            PHYSICAL_INTIDS[slots].store(id, Ordering::Relaxed);
            slots += 1;
        } else {
            POLLED.store(true, Ordering::Relaxed);
        }
        log::info!(
            "physical input: virtio {} at {:#x}, {}",
            if tablet { "tablet" } else { "keyboard" },
            range.base,
            match (d.irq, irq) {
                (Some(id), _) => format!("taken by interrupt {id}"),
                (None, Some(id)) => format!("polled (interrupt {id} not usable)"),
                (None, None) => String::from("polled (no interrupt)"),
            }
        );
        devices.push(d);
    }
    if devices.is_empty() {
        return;
    }
    let irqs: Vec<u32> = devices.iter().filter_map(|d| d.irq).collect();
    *PHYSICAL.lock() = Some(PhysicalInput { devices });
    // Enabled once the devices are in place for the handler. Routed to the boot
    // CPU (as the console UART's): whichever CPU is there — in a guest, in WFI
    // or idle in `wait::idle` — takes it at once.
    let boot = MPIDR_EL1.get() & arch::smccc::MPIDR_AFFINITY_MASK;
    for id in irqs {
        crate::gic::enable_spi(id);
        crate::gic::route_spi(id, boot);
    }
}

/// Whether `intid` is a physical input device's interrupt.
#[inline]
pub fn is_physical_intid(intid: u32) -> bool {
    PHYSICAL_INTIDS
        .iter()
        .any(|i| i.load(Ordering::Relaxed) == intid)
}

/// A physical input device's interrupt (acknowledged at the GIC, ended by the
/// caller): acknowledges it at the device, then takes its events — at most a
/// queue's worth — and routes them to the presented VM at once. An event the
/// device completes after the acknowledgement raises the interrupt again, so what
/// the bound leaves is taken when it fires next (the ring held at most a queue's
/// worth before the acknowledgement). Called on whichever CPU takes the
/// interrupt, holding no lock.
pub fn service_interrupt(intid: u32) {
    crate::latstat::mark(crate::latstat::Mark::InputIrq);
    let mut guard = PHYSICAL.lock();
    let Some(p) = guard.as_mut() else {
        return;
    };
    let mut events = Vec::new();
    for d in p.devices.iter_mut().filter(|d| d.irq == Some(intid)) {
        d.transport.ack_interrupt();
        d.take(&mut events);
    }
    // Routed under the lock, so two CPUs cannot reorder events.
    if !events.is_empty() {
        route_physical(&events);
    }
}

/// Takes the events of the physical devices without an interrupt and routes them
/// to the presented VM. Called on the render loop's occasions (after interrupt
/// exits, before idling); a CPU that finds another taking events moves on.
pub fn poll_physical() {
    if !POLLED.load(Ordering::Relaxed) {
        return;
    }
    if let Some(mut guard) = PHYSICAL.try_lock() {
        drain(guard.as_mut(), |d| d.irq.is_none());
    }
}

/// Takes every device's completed events now (interrupt or not) and routes them:
/// before a presentation change, so input made before it is routed under the
/// presentation it was made on. A CPU taking events meanwhile routes them itself
/// (this one does not wait: its caller may hold locks that routing takes).
pub fn drain_physical() {
    if let Some(mut guard) = PHYSICAL.try_lock() {
        drain(guard.as_mut(), |_| true);
    }
}

/// Takes the events of the devices `which` selects and routes them, holding
/// `PHYSICAL` (`p`).
fn drain(p: Option<&mut PhysicalInput>, which: impl Fn(&HostInput) -> bool) {
    let Some(p) = p else {
        return;
    };
    let mut events = Vec::new();
    for d in p.devices.iter_mut().filter(|d| which(d)) {
        d.take(&mut events);
    }
    // Routed under the lock, so two CPUs polling cannot reorder events (the
    // routing's and the display's locks are never held when this one is taken).
    if !events.is_empty() {
        route_physical(&events);
    }
}
