//! Presentation of a virtio-gpu's scanout on the physical display, composed by
//! `compositor` over a background with the guest's cursor and RayOS's overlay line —
//! the whole output when the source or the presentation changed (a new scanout
//! resource, a mode, the cursor, a command), otherwise only where the guest flushed.
//!
//! Each VM's presentation has a [`Policy`] — live, throttled (at most N frames a
//! second), frozen (a copy of the last frame stays while the guest keeps running),
//! hidden (the guest's output is not composed and its device not even looked at) —
//! and a [`Placement`] — a panel at a rectangle (unscaled when the rectangle is the
//! scanout's size, bilinear otherwise), fullscreen (fitted, letterboxed) or a quad
//! (four output points, projective, bilinear).
//!
//! Pure: the hypervisor's render loop hands it the device, the output frame and the
//! time.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use compositor::text::{status_bar, Canvas};
use compositor::{
    compose, Filter, Frame, Layer, PixelFormat, Placement as Place, Rect, Scene, Surface, Transform,
};

use crate::defs::{cursor, format};
use crate::gpu::{Gpu, OwnedCursor, ScanoutView, SharedScanout};

pub mod desk;
pub use desk::Desk;

/// What a [`Presenter`] presents: a virtio-gpu ([`Gpu`]) or a linear framebuffer
/// (`crate::linear::LinearFb`).
pub trait ScanoutSource {
    /// The areas of `scanout` changed since the last call (scanout coordinates).
    fn take_damage(&mut self, scanout: usize) -> Vec<crate::resource::Rect>;
    /// Changes whenever what is shown changes other than by damage.
    fn generation(&self) -> u64;
    /// What `scanout` shows; `None` if it is disabled.
    fn scanout(&self, scanout: usize) -> Option<ScanoutView<'_>>;
    /// [`ScanoutSource::scanout`] with its pixels shared.
    fn scanout_shared(&self, scanout: usize) -> Option<SharedScanout>;
    /// The cursor, if any.
    fn cursor_owned(&self) -> Option<OwnedCursor>;
}

impl ScanoutSource for Gpu {
    fn take_damage(&mut self, scanout: usize) -> Vec<crate::resource::Rect> {
        Gpu::take_damage(self, scanout)
    }
    fn generation(&self) -> u64 {
        Gpu::generation(self)
    }
    fn scanout(&self, scanout: usize) -> Option<ScanoutView<'_>> {
        Gpu::scanout(self, scanout)
    }
    fn scanout_shared(&self, scanout: usize) -> Option<SharedScanout> {
        Gpu::scanout_shared(self, scanout)
    }
    fn cursor_owned(&self) -> Option<OwnedCursor> {
        Gpu::cursor_owned(self)
    }
}

/// The guest's virtual monitor mode unless the VM says otherwise.
pub const DEFAULT_MODE: (u32, u32) = (640, 480);
/// Where the guest's panel goes on the physical display unless told otherwise.
pub const DEFAULT_PANEL: (i32, i32) = (96, 64);
/// The colour around the panel (XRGB).
pub const BACKGROUND: u32 = 0x0020_3040;
/// The overlay line's colours (ARGB) and font scale.
pub const OVERLAY_FG: u32 = 0xFFFF_FFFF;
pub const OVERLAY_BG: u32 = 0xFF00_0000;
pub const OVERLAY_SCALE: u32 = 2;
/// Longest overlay line kept (characters).
pub const OVERLAY_MAX: usize = 160;
/// Highest frame rate a throttle accepts.
pub const MAX_FPS: u32 = 1000;
/// The largest magnitude of a panel or quad coordinate or size.
pub const MAX_COORD: i32 = 1 << 15;
/// The crop size a quad is checked against when it is set (any size works: a
/// degenerate quad is degenerate for all).
const QUAD_CHECK: (u32, u32) = (640, 480);

/// The compositor's layout for a virtio-gpu format; `None` for the formats it cannot
/// sample (those with alpha first or RGBA order).
pub fn pixel_format(virtio_format: u32) -> Option<PixelFormat> {
    match virtio_format {
        // Bytes B, G, R, X / A.
        format::B8G8R8X8_UNORM => Some(PixelFormat::Xrgb8888),
        format::B8G8R8A8_UNORM => Some(PixelFormat::Argb8888),
        // Bytes X, R, G, B.
        format::X8R8G8B8_UNORM => Some(PixelFormat::Bgrx8888),
        _ => None,
    }
}

/// When the guest's output reaches the display.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Policy {
    /// Every change, at the render loop's rate.
    Live,
    /// At most `fps` frames a second.
    Throttled { fps: u32 },
    /// The frame at the time of freezing stays while the guest keeps running.
    Frozen,
    /// Not composed at all.
    Hidden,
}

/// Where the guest's scanout goes on the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Top-left corner at (`x`, `y`); `size` `None` is the scanout's own size.
    Panel {
        x: i32,
        y: i32,
        size: Option<(u32, u32)>,
    },
    /// As large as fits the output, centred, aspect ratio kept.
    Fullscreen,
    /// The scanout's corners (top-left, top-right, bottom-right, bottom-left) at
    /// these output points.
    Quad([(i32, i32); 4]),
}

/// Why a presentation change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresentError {
    /// A coordinate or size beyond ±[`MAX_COORD`], or a zero size.
    BadRect,
    /// Three of the quad's corners on a line.
    DegenerateQuad,
    /// A frame rate of 0 or above [`MAX_FPS`].
    BadFps(u32),
    /// Freezing needs a scanout to copy.
    NothingShown,
    /// Unfreezing a presentation that is not frozen.
    NotFrozen,
}

impl fmt::Display for PresentError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PresentError::BadRect => write!(
                f,
                "coordinates must be within +-{MAX_COORD} and sizes at least 1"
            ),
            PresentError::DegenerateQuad => write!(f, "three corners of the quad are on a line"),
            PresentError::BadFps(n) => write!(f, "frame rate {n} is not within 1..={MAX_FPS}"),
            PresentError::NothingShown => write!(f, "the guest shows no scanout to freeze"),
            PresentError::NotFrozen => write!(f, "the display is not frozen"),
        }
    }
}

/// What [`Presenter::take_frame`] took from the guest's device for one frame.
#[derive(Debug)]
pub struct FrameSource {
    /// The live scanout (`None`: disabled) and cursor; `None` for a hidden or
    /// frozen presentation.
    live: Option<(Option<SharedScanout>, Option<OwnedCursor>)>,
    /// The areas the guest flushed (scanout coordinates); `None`: everything.
    damage: Option<Vec<crate::resource::Rect>>,
}

impl FrameSource {
    /// What of the guest's frame this frame shows anew, in scanout coordinates:
    /// the bounding box of the areas the guest flushed, or the whole scanout when
    /// everything is recomposed; `None` when it carries no guest frame (hidden,
    /// frozen, or the scanout disabled).
    pub fn guest_damage(&self) -> Option<crate::resource::Rect> {
        let (Some(scanout), _) = self.live.as_ref()? else {
            return None;
        };
        let whole = crate::resource::Rect::new(0, 0, scanout.rect.width, scanout.rect.height);
        match &self.damage {
            None => Some(whole),
            Some(d) => d
                .iter()
                .fold(None, |acc: Option<crate::resource::Rect>, r| {
                    Some(acc.map_or(*r, |a| a.union(r)))
                }),
        }
    }
}

/// A copy of the scanout taken when freezing.
#[derive(Debug, Clone)]
struct Snapshot {
    pixels: Vec<u8>,
    width: u32,
    height: u32,
    format: PixelFormat,
}

/// What composes a presentation's scene: [`compositor::compose`] or one that gives
/// the same pixels (the hypervisor's runs `compositor::compose_with` NEON kernels).
pub type Composer = fn(&Scene, &mut Frame, &[Rect]) -> compositor::Report;

/// One guest scanout presented on the output.
#[derive(Debug, Clone)]
pub struct Presenter {
    /// Scanout of the device shown.
    pub scanout: usize,
    pub background: u32,
    policy: Policy,
    placement: Placement,
    overlay: Option<String>,
    /// The rendered overlay line, for `overlay` at the output width it was made for.
    overlay_bar: Option<Canvas>,
    frozen: Option<Snapshot>,
    /// Counter ticks a second of the `now` passed to [`Presenter::present`].
    clock_hz: u64,
    /// The throttled presentation's next due time.
    next_due: u64,
    /// The device's generation at the last presentation (`None`: never presented,
    /// or the presentation changed since).
    shown: Option<u64>,
    /// Set when an unsupported format or unusable placement was logged (once per
    /// source).
    warned: bool,
    composer: Composer,
}

impl Presenter {
    /// Scanout `scanout` live, unscaled at (`x`, `y`) over [`BACKGROUND`].
    pub fn new(scanout: usize, x: i32, y: i32) -> Self {
        Self {
            scanout,
            background: BACKGROUND,
            policy: Policy::Live,
            placement: Placement::Panel { x, y, size: None },
            overlay: None,
            overlay_bar: None,
            frozen: None,
            clock_hz: 1000,
            next_due: 0,
            shown: None,
            warned: false,
            composer: compose,
        }
    }

    /// Composes with `composer` from now on (default [`compositor::compose`]).
    pub fn set_composer(&mut self, composer: Composer) {
        self.composer = composer;
    }

    /// The rate of the clock [`Presenter::present`]'s `now` counts (≥ 1).
    pub fn set_clock(&mut self, hz: u64) {
        self.clock_hz = hz.max(1);
    }

    pub fn policy(&self) -> Policy {
        self.policy
    }

    pub fn placement(&self) -> Placement {
        self.placement
    }

    pub fn overlay(&self) -> Option<&str> {
        self.overlay.as_deref()
    }

    /// Nothing to compose until the presentation changes: hidden or frozen and
    /// already drawn. The render loop then does not even lock the guest's device.
    pub fn idle(&self) -> bool {
        matches!(self.policy, Policy::Hidden | Policy::Frozen) && self.shown.is_some()
    }

    /// Whether [`Presenter::take_frame`] at `now` may return a frame: false while
    /// hidden or frozen and drawn, or throttled and not yet due.
    pub fn due(&self, now: u64) -> bool {
        match self.policy {
            Policy::Hidden | Policy::Frozen => self.shown.is_none(),
            Policy::Throttled { .. } => self.shown.is_none() || now >= self.next_due,
            Policy::Live => true,
        }
    }

    /// Whether taking a frame reads the guest's device (live or throttled).
    pub fn reads_device(&self) -> bool {
        matches!(self.policy, Policy::Live | Policy::Throttled { .. })
    }

    /// Recompose everything at the next presentation.
    fn changed(&mut self) {
        self.shown = None;
        self.warned = false;
    }

    /// Moves the scanout to `placement` (validated; the policy stays).
    pub fn set_placement(&mut self, placement: Placement) -> Result<(), PresentError> {
        let ok = |v: i64| v.abs() <= i64::from(MAX_COORD);
        match placement {
            Placement::Panel { x, y, size } => {
                let (w, h) = size.unwrap_or((1, 1));
                if !ok(x.into()) || !ok(y.into()) || w == 0 || h == 0 {
                    return Err(PresentError::BadRect);
                }
                if !ok(w.into()) || !ok(h.into()) {
                    return Err(PresentError::BadRect);
                }
            }
            Placement::Fullscreen => {}
            Placement::Quad(q) => {
                if q.iter().any(|&(x, y)| !ok(x.into()) || !ok(y.into())) {
                    return Err(PresentError::BadRect);
                }
                Transform::from_quad(QUAD_CHECK.0, QUAD_CHECK.1, q)
                    .ok_or(PresentError::DegenerateQuad)?;
            }
        }
        self.placement = placement;
        self.changed();
        Ok(())
    }

    /// Shows the guest's output live again (from any policy).
    pub fn show_live(&mut self) {
        self.policy = Policy::Live;
        self.frozen = None;
        self.changed();
    }

    /// Stops composing the guest's output.
    pub fn hide(&mut self) {
        self.policy = Policy::Hidden;
        self.frozen = None;
        self.changed();
    }

    /// At most `fps` frames a second.
    pub fn throttle(&mut self, fps: u32) -> Result<(), PresentError> {
        if fps == 0 || fps > MAX_FPS {
            return Err(PresentError::BadFps(fps));
        }
        self.policy = Policy::Throttled { fps };
        self.frozen = None;
        self.next_due = 0;
        self.changed();
        Ok(())
    }

    /// Keeps a copy of what scanout shows now on the display while the guest runs on.
    pub fn freeze(&mut self, gpu: &(impl ScanoutSource + ?Sized)) -> Result<(), PresentError> {
        let v = gpu
            .scanout(self.scanout)
            .ok_or(PresentError::NothingShown)?;
        let format = pixel_format(v.format).ok_or(PresentError::NothingShown)?;
        // Only the shown rectangle, tightly packed.
        let r = v.rect;
        let bpp = format::BYTES_PER_PIXEL as usize;
        let mut pixels = Vec::new();
        if pixels
            .try_reserve_exact(r.width as usize * r.height as usize * bpp)
            .is_err()
        {
            return Err(PresentError::NothingShown);
        }
        for row in r.y..r.y + r.height {
            let at = row as usize * v.stride as usize + r.x as usize * bpp;
            let line = v
                .pixels
                .get(at..at + r.width as usize * bpp)
                .ok_or(PresentError::NothingShown)?;
            pixels.extend_from_slice(line);
        }
        self.frozen = Some(Snapshot {
            pixels,
            width: r.width,
            height: r.height,
            format,
        });
        self.policy = Policy::Frozen;
        self.changed();
        Ok(())
    }

    /// Back to live from frozen.
    pub fn unfreeze(&mut self) -> Result<(), PresentError> {
        if self.policy != Policy::Frozen {
            return Err(PresentError::NotFrozen);
        }
        self.show_live();
        Ok(())
    }

    /// The overlay line (`None` or empty: none), cut to [`OVERLAY_MAX`] characters.
    pub fn set_overlay(&mut self, text: Option<&str>) {
        self.overlay = text
            .filter(|t| !t.is_empty())
            .map(|t| t.chars().take(OVERLAY_MAX).collect());
        self.overlay_bar = None;
        self.changed();
    }

    /// One line describing the presentation, e.g. `live panel 96 64 640x480`.
    pub fn status(&self) -> String {
        let mut s = match self.policy {
            Policy::Live => String::from("live"),
            Policy::Throttled { fps } => alloc::format!("throttled {fps} fps"),
            Policy::Frozen => String::from("frozen"),
            Policy::Hidden => String::from("hidden"),
        };
        match self.placement {
            Placement::Panel { x, y, size: None } => {
                s += &alloc::format!(" panel {x} {y} unscaled");
            }
            Placement::Panel {
                x,
                y,
                size: Some((w, h)),
            } => s += &alloc::format!(" panel {x} {y} {w}x{h}"),
            Placement::Fullscreen => s += " fullscreen",
            Placement::Quad(q) => {
                s += " quad";
                for (x, y) in q {
                    s += &alloc::format!(" {x},{y}");
                }
            }
        }
        s
    }

    /// Where a `cw × ch` crop goes on `output`, and how it is sampled.
    fn place(&self, cw: u32, ch: u32, output: Rect) -> Option<(Place, Filter)> {
        let scaled = |d: Rect| {
            if (d.w, d.h) == (cw, ch) {
                (Place::At { x: d.x, y: d.y }, Filter::Nearest)
            } else {
                (Place::Scaled(d), Filter::Bilinear)
            }
        };
        match self.placement {
            Placement::Panel { x, y, size } => {
                let (w, h) = size.unwrap_or((cw, ch));
                Some(scaled(Rect::new(x, y, w, h)))
            }
            Placement::Fullscreen => Rect::fit(cw, ch, output).map(scaled),
            Placement::Quad(q) => {
                Transform::from_quad(cw, ch, q).map(|t| (Place::Transform(t), Filter::Bilinear))
            }
        }
    }

    /// Composes what changed since the last call into `frame`; returns the output
    /// rectangles recomposed (empty: the frame is unchanged). `now` counts at the
    /// rate given to [`Presenter::set_clock`]; only a throttled presentation reads it.
    /// [`Presenter::take_frame`] then [`Presenter::compose_frame`].
    pub fn present(
        &mut self,
        gpu: &mut (impl ScanoutSource + ?Sized),
        frame: &mut Frame,
        now: u64,
    ) -> Vec<Rect> {
        match self.take_frame(gpu, now) {
            Some(source) => self.compose_frame(source, frame),
            None => Vec::new(),
        }
    }

    /// The part of [`Presenter::present`] that needs the guest's device, short so
    /// that its lock is held briefly: whether a frame is due, the scanout's damage,
    /// and the scanout (its pixels shared, not copied) and cursor to compose.
    /// `None`: nothing to draw.
    pub fn take_frame(
        &mut self,
        gpu: &mut (impl ScanoutSource + ?Sized),
        now: u64,
    ) -> Option<FrameSource> {
        match self.policy {
            // Neither the device nor its damage is touched.
            Policy::Hidden | Policy::Frozen if self.shown.is_some() => return None,
            Policy::Throttled { fps } => {
                if now < self.next_due && self.shown.is_some() {
                    return None;
                }
                self.next_due = now.saturating_add(self.clock_hz / u64::from(fps));
            }
            _ => {}
        }
        match self.policy {
            Policy::Hidden | Policy::Frozen => {
                self.shown = Some(0);
                Some(FrameSource {
                    live: None,
                    damage: None,
                })
            }
            Policy::Live | Policy::Throttled { .. } => {
                let damage = gpu.take_damage(self.scanout);
                let generation = gpu.generation();
                let full = self.shown != Some(generation);
                if !full && damage.is_empty() {
                    return None;
                }
                if full {
                    self.warned = false;
                }
                self.shown = Some(generation);
                let cursor = gpu
                    .cursor_owned()
                    .filter(|c| c.scanout as usize == self.scanout);
                Some(FrameSource {
                    live: Some((gpu.scanout_shared(self.scanout), cursor)),
                    damage: (!full).then_some(damage),
                })
            }
        }
    }

    /// The part of [`Presenter::present`] that composes, without the guest's
    /// device: `source` from [`Presenter::take_frame`] into `frame`; returns the
    /// output rectangles recomposed.
    pub fn compose_frame(&mut self, source: FrameSource, frame: &mut Frame) -> Vec<Rect> {
        let output = frame.rect();
        let overlay_height = self.overlay_bar(output.w);
        let mut scene = Scene {
            background: self.background,
            layers: Vec::new(),
        };
        let frozen = self.frozen.take();
        let mut rects: Vec<Rect> = Vec::new();
        let mut unpresentable = None;
        match &source.live {
            None => {
                if self.policy == Policy::Frozen {
                    if let Some(layer) = frozen
                        .as_ref()
                        .and_then(|s| self.snapshot_layer(s, output, 0))
                    {
                        scene.layers.push(layer);
                    }
                }
            }
            Some((scanout, cursor)) => {
                if !self.guest_layers(scanout.as_ref(), cursor.as_ref(), output, &mut scene, 0) {
                    unpresentable = scanout.as_ref();
                }
                if let Some(damage) = &source.damage {
                    if let Some(layer) = scene.layers.first().filter(|l| l.z == 0) {
                        rects = output_damage(layer, damage, output);
                    }
                    if rects.is_empty() {
                        drop(scene);
                        self.frozen = frozen;
                        return rects;
                    }
                }
            }
        }
        if let Some(bar) = &self.overlay_bar {
            if let Ok(s) = bar.surface() {
                let y = output.h.saturating_sub(overlay_height) as i32;
                let mut layer = Layer::new(s, 0, y);
                layer.z = 2;
                scene.layers.push(layer);
            }
        }
        if rects.is_empty() {
            rects.push(output);
        }
        (self.composer)(&scene, frame, &rects);
        drop(scene);
        self.frozen = frozen;
        if let Some(v) = unpresentable {
            self.warn_unpresentable(v);
        }
        rects
    }

    /// Logs (once until the source or presentation changes) that `v` cannot be
    /// presented as asked.
    fn warn_unpresentable(&mut self, v: &SharedScanout) {
        if !self.warned {
            self.warned = true;
            log::warn!(
                "vgpu: scanout (format {}, {}x{}) cannot be presented {}",
                v.format,
                v.rect.width,
                v.rect.height,
                self.status()
            );
        }
    }

    /// The frozen copy `s` as placed, at `z`.
    fn snapshot_layer<'s>(&self, s: &'s Snapshot, output: Rect, z: i32) -> Option<Layer<'s>> {
        let stride = (s.width * format::BYTES_PER_PIXEL) as usize;
        let surface = Surface::new(&s.pixels, s.width, s.height, stride, s.format).ok()?;
        let (placement, filter) = self.place(s.width, s.height, output)?;
        let mut layer = Layer::new(surface, 0, 0);
        layer.placement = placement;
        layer.filter = filter;
        layer.z = z;
        Some(layer)
    }

    /// Renders the overlay line for an output `width` wide if needed; its height
    /// (0: none).
    fn overlay_bar(&mut self, width: u32) -> u32 {
        let Some(text) = &self.overlay else {
            self.overlay_bar = None;
            return 0;
        };
        if self.overlay_bar.as_ref().map(|b| b.width) != Some(width) {
            self.overlay_bar = Some(status_bar(
                width,
                text,
                OVERLAY_SCALE,
                OVERLAY_FG,
                OVERLAY_BG,
            ));
            self.shown = None;
        }
        self.overlay_bar.as_ref().map_or(0, |b| b.height)
    }

    /// The guest's scanout (at `z`) and cursor (`z + 1`) as placed, added to
    /// `scene`; false when the scanout cannot be presented (its format or
    /// placement is unusable).
    fn guest_layers<'g>(
        &self,
        scanout: Option<&'g SharedScanout>,
        cursor: Option<&'g OwnedCursor>,
        output: Rect,
        scene: &mut Scene<'g>,
        z: i32,
    ) -> bool {
        let mut scale = None;
        let mut ok = true;
        if let Some(v) = scanout {
            let surface = pixel_format(v.format).and_then(|f| {
                Surface::new(&v.pixels, v.width, v.height, v.stride as usize, f).ok()
            });
            let placed = self.place(v.rect.width, v.rect.height, output);
            match (surface, placed) {
                (Some(s), Some((placement, filter))) => {
                    let mut layer = Layer::new(s, 0, 0);
                    layer.placement = placement;
                    layer.filter = filter;
                    layer.z = z;
                    layer.crop = Some(Rect::new(
                        v.rect.x as i32,
                        v.rect.y as i32,
                        v.rect.width,
                        v.rect.height,
                    ));
                    scale = match placement {
                        Place::At { x, y } => Some(Rect::new(x, y, v.rect.width, v.rect.height)),
                        Place::Scaled(d) => Some(d),
                        Place::Transform(_) => None,
                    }
                    .map(|d| (d, v.rect.width, v.rect.height));
                    scene.layers.push(layer);
                }
                _ => ok = false,
            }
        }
        // The cursor follows unscaled and scaled panels; a quad shows none.
        let Some((dst, cw, ch)) = scale else {
            return ok;
        };
        if let Some(c) = cursor {
            let size = cursor::SIZE;
            let s = pixel_format(c.format).and_then(|f| {
                Surface::new(
                    &c.image,
                    size,
                    size,
                    (size * format::BYTES_PER_PIXEL) as usize,
                    f,
                )
                .ok()
            });
            if let Some(s) = s {
                let map = |o: i32, p: i32, len: u32, c: u32| -> i64 {
                    i64::from(o) + i64::from(p) * i64::from(len) / i64::from(c.max(1))
                };
                let x = map(dst.x, c.x, dst.w, cw);
                let y = map(dst.y, c.y, dst.h, ch);
                let w = (u64::from(size) * u64::from(dst.w) / u64::from(cw.max(1))).max(1);
                let h = (u64::from(size) * u64::from(dst.h) / u64::from(ch.max(1))).max(1);
                let (Ok(x), Ok(y), Ok(w), Ok(h)) = (
                    i32::try_from(x),
                    i32::try_from(y),
                    u32::try_from(w),
                    u32::try_from(h),
                ) else {
                    return ok;
                };
                let mut layer = Layer::new(s, x, y);
                if (w, h) != (size, size) {
                    layer.placement = Place::Scaled(Rect::new(x, y, w, h));
                    layer.filter = Filter::Bilinear;
                }
                layer.z = z.saturating_add(1);
                scene.layers.push(layer);
            }
        }
        ok
    }
}

/// The output rectangles a change of the guest's scanout inside `damage`
/// (scanout coordinates) alters, `layer` being the scanout as placed.
fn output_damage(layer: &Layer, damage: &[crate::resource::Rect], output: Rect) -> Vec<Rect> {
    let crop = layer.crop.unwrap_or_default();
    damage
        .iter()
        .filter_map(|d| {
            let changed = Rect::new(
                crop.x.saturating_add(d.x as i32),
                crop.y.saturating_add(d.y as i32),
                d.width,
                d.height,
            );
            match layer.placement {
                // Unscaled: exactly the flushed pixels.
                Place::At { x, y } => Rect::new(
                    x.saturating_add(d.x as i32),
                    y.saturating_add(d.y as i32),
                    d.width,
                    d.height,
                )
                .intersect(&output),
                _ => layer.damage_of(changed, output),
            }
        })
        .collect()
}
