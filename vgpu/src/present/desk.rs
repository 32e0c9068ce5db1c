//! Several VMs on one output: a [`Desk`] of presentations, each with its own
//! [`Presenter`] (policy, placement, frozen copy, throttle clock, cursor), composed
//! by `compositor` into one frame over one background, with one overlay line on
//! top of all.
//!
//! - **Z-order:** the VM most recently added or raised ([`Desk::raise`], which the
//!   hypervisor calls when a VM is presented) is on top; each VM's cursor is just
//!   above its own scanout.
//! - **Damage:** a VM's flush recomposes only its rectangles on the output — with
//!   whatever other VMs show there (the layers of every VM whose drawn area meets
//!   them) — and a VM whose source or presentation changed (a new scanout
//!   resource, a mode, its cursor, a placement, a policy, a raise) recomposes
//!   what it covered before and what it covers now; the overlay line or an output
//!   size change recomposes everything.
//! - **Cost:** a hidden VM, or a frozen one already drawn, is skipped without its
//!   device being looked at ([`Sources::with`] is not called for it); a VM is
//!   looked at without taking its frame (a "peek", its damage left with it) only
//!   when another VM's damage lies over what it shows. A peeked VM shows its
//!   current pixels in the recomposed rectangles (newer than elsewhere until its own
//!   frame comes: a throttled VM can show a newer pixel there early).
//! - **Budget and fairness:** a tick recomposes at most [`Desk::set_budget`]
//!   output pixels of VM damage (the first VM served in a tick always is, so a
//!   frame larger than the budget still goes out). VMs are served round-robin from
//!   the first one deferred at the previous tick; a deferred VM's frame is kept
//!   (its damage merged with what it flushes meanwhile) and composed first at the
//!   next tick. A VM flooding flushes costs at most one frame of its own area per
//!   tick (its device merges the flushes), so with a budget of two output frames
//!   another VM's frames keep their rate ([`Desk::frames`] counts them per VM).

use alloc::string::String;
use alloc::vec::Vec;

use compositor::text::{status_bar, Canvas};
use compositor::{Damage, Frame, Layer, Rect, Scene};

use super::{
    compose, output_damage, Composer, FrameSource, Policy, Presenter, ScanoutSource, BACKGROUND,
    OVERLAY_BG, OVERLAY_FG, OVERLAY_MAX, OVERLAY_SCALE,
};
use crate::gpu::{OwnedCursor, ScanoutView, SharedScanout};

/// Rectangles a tick's damage keeps apart before merging them into their bounding
/// box (several VMs' damage: more than one VM's 16).
const DAMAGE_LIMIT: usize = 64;

/// Where the `n`th VM's panel goes by default (0: [`super::DEFAULT_PANEL`]): each
/// next one [`CASCADE_STEP`] further right and down, so that every one's top-left
/// corner shows; after [`CASCADE_WRAP`] VMs the cascade starts again.
pub fn cascade(n: usize) -> (i32, i32) {
    let k = (n % CASCADE_WRAP) as i32;
    (
        super::DEFAULT_PANEL.0 + k * CASCADE_STEP.0,
        super::DEFAULT_PANEL.1 + k * CASCADE_STEP.1,
    )
}

/// The offset between two cascaded panels.
pub const CASCADE_STEP: (i32, i32) = (48, 36);
/// Panels cascaded before the cascade starts over.
pub const CASCADE_WRAP: usize = 8;

/// The VMs' devices, as the hypervisor holds them.
pub trait Sources<K> {
    /// Runs `f` on the device of the VM `key` (locked for the call). `take`: its
    /// frame is being taken (its damage consumed) — a linear framebuffer refreshes
    /// its host copy first; otherwise the desk only looks at what it shows.
    fn with(&mut self, key: K, take: bool, f: &mut dyn FnMut(&mut dyn ScanoutSource));
}

/// What a desk's tick composed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tick<K> {
    /// Every output rectangle recomposed (empty: the frame is unchanged).
    pub rects: Vec<Rect>,
    /// The VMs whose own frame was composed.
    pub composed: Vec<Composed<K>>,
}

/// One VM's frame composed in a tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Composed<K> {
    pub key: K,
    /// Its frames composed so far, this one included.
    pub frame: u64,
    /// What of its guest frame this frame shows anew ([`FrameSource::guest_damage`]).
    pub guest_damage: Option<crate::resource::Rect>,
    /// Its own output rectangles (its damage, or what it covered and covers).
    pub rects: Vec<Rect>,
}

/// A device that is never read: the one a hidden or frozen presentation takes its
/// frame from.
struct Absent;

impl ScanoutSource for Absent {
    fn take_damage(&mut self, _: usize) -> Vec<crate::resource::Rect> {
        Vec::new()
    }
    fn generation(&self) -> u64 {
        0
    }
    fn scanout(&self, _: usize) -> Option<ScanoutView<'_>> {
        None
    }
    fn scanout_shared(&self, _: usize) -> Option<SharedScanout> {
        None
    }
    fn cursor_owned(&self) -> Option<OwnedCursor> {
        None
    }
}

/// One VM on the desk.
#[derive(Debug)]
struct View<K> {
    key: K,
    presenter: Presenter,
    /// Stacking order: higher is nearer the viewer.
    z: u64,
    /// Frames of its own composed.
    frames: u64,
    /// The output rectangles its layers covered when it was last composed.
    drawn: Vec<Rect>,
    /// A frame taken but deferred by the budget.
    pending: Option<FrameSource>,
}

/// What one VM contributes to a tick's scene.
enum Content {
    /// Its scanout and cursor (its own frame, a deferred one, or peeked).
    Live(Option<SharedScanout>, Option<OwnedCursor>),
    /// Its frozen copy.
    Frozen,
    /// Nothing (hidden, or its scanout disabled).
    Nothing,
}

/// Several VMs' presentations composed into one output.
#[derive(Debug)]
pub struct Desk<K> {
    views: Vec<View<K>>,
    pub background: u32,
    overlay: Option<String>,
    overlay_bar: Option<Canvas>,
    composer: Composer,
    clock_hz: u64,
    /// Output pixels of VM damage a tick recomposes at most.
    budget: u64,
    /// Where the next tick's round starts.
    next: usize,
    /// The highest `z` given.
    raised: u64,
    /// Recompose the whole output at the next tick.
    full: bool,
    /// Output rectangles to recompose at the next tick (a VM removed).
    uncovered: Vec<Rect>,
    /// The output the last tick composed.
    output: Option<Rect>,
}

impl<K: Copy + PartialEq> Default for Desk<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K: Copy + PartialEq> Desk<K> {
    /// No VMs over [`BACKGROUND`], no budget limit.
    pub fn new() -> Self {
        Self {
            views: Vec::new(),
            background: BACKGROUND,
            overlay: None,
            overlay_bar: None,
            composer: compose,
            clock_hz: 1000,
            budget: u64::MAX,
            next: 0,
            raised: 0,
            full: true,
            uncovered: Vec::new(),
            output: None,
        }
    }

    /// Composes with `composer` from now on (default [`compositor::compose`]).
    pub fn set_composer(&mut self, composer: Composer) {
        self.composer = composer;
    }

    /// The rate of the clock [`Desk::tick`]'s `now` counts (≥ 1), for every VM.
    pub fn set_clock(&mut self, hz: u64) {
        self.clock_hz = hz.max(1);
        for v in &mut self.views {
            v.presenter.set_clock(self.clock_hz);
        }
    }

    /// At most `pixels` output pixels of VM damage per tick (at least 1).
    pub fn set_budget(&mut self, pixels: u64) {
        self.budget = pixels.max(1);
    }

    /// Adds the VM `key` (scanout `scanout` of its device) live, unscaled at
    /// (`x`, `y`), on top; false (nothing changes) if it is already there.
    pub fn add(&mut self, key: K, scanout: usize, x: i32, y: i32) -> bool {
        if self.index(key).is_some() {
            return false;
        }
        let mut presenter = Presenter::new(scanout, x, y);
        presenter.set_clock(self.clock_hz);
        self.raised += 1;
        self.views.push(View {
            key,
            presenter,
            z: self.raised,
            frames: 0,
            drawn: Vec::new(),
            pending: None,
        });
        true
    }

    /// Takes the VM `key` off the desk (what it covered is recomposed at the next
    /// tick); false if it was not there.
    pub fn remove(&mut self, key: K) -> bool {
        let Some(i) = self.index(key) else {
            return false;
        };
        let v = self.views.remove(i);
        self.uncovered.extend(v.drawn);
        if self.next > i {
            self.next -= 1;
        }
        true
    }

    fn index(&self, key: K) -> Option<usize> {
        self.views.iter().position(|v| v.key == key)
    }

    /// The VMs on the desk, bottom to top.
    pub fn order(&self) -> Vec<K> {
        let mut v: Vec<(u64, K)> = self.views.iter().map(|v| (v.z, v.key)).collect();
        v.sort_by_key(|(z, _)| *z);
        v.into_iter().map(|(_, k)| k).collect()
    }

    /// Puts the VM `key` on top (recomposing where it is); false if it is not on
    /// the desk.
    pub fn raise(&mut self, key: K) -> bool {
        let Some(i) = self.index(key) else {
            return false;
        };
        if self.views.iter().any(|v| v.z > self.views[i].z) {
            self.raised += 1;
            self.views[i].z = self.raised;
            self.views[i].presenter.changed();
        }
        true
    }

    /// The VM `key`'s presentation.
    pub fn presenter(&self, key: K) -> Option<&Presenter> {
        self.index(key).map(|i| &self.views[i].presenter)
    }

    /// The VM `key`'s presentation, to change its policy or placement (its own
    /// overlay, background and composer are not used: the desk's are).
    pub fn presenter_mut(&mut self, key: K) -> Option<&mut Presenter> {
        let i = self.index(key)?;
        Some(&mut self.views[i].presenter)
    }

    /// Frames of the VM `key`'s own composed so far.
    pub fn frames(&self, key: K) -> Option<u64> {
        self.index(key).map(|i| self.views[i].frames)
    }

    pub fn overlay(&self) -> Option<&str> {
        self.overlay.as_deref()
    }

    /// The overlay line (`None` or empty: none), cut to [`OVERLAY_MAX`] characters.
    pub fn set_overlay(&mut self, text: Option<&str>) {
        self.overlay = text
            .filter(|t| !t.is_empty())
            .map(|t| t.chars().take(OVERLAY_MAX).collect());
        self.overlay_bar = None;
        self.full = true;
    }

    /// Renders the overlay line for an output `width` wide if needed.
    fn render_overlay(&mut self, width: u32) {
        let Some(text) = &self.overlay else {
            self.overlay_bar = None;
            return;
        };
        if self.overlay_bar.as_ref().map(|b| b.width) != Some(width) {
            self.overlay_bar = Some(status_bar(
                width,
                text,
                OVERLAY_SCALE,
                OVERLAY_FG,
                OVERLAY_BG,
            ));
            self.full = true;
        }
    }

    /// Composes what changed since the last tick into `frame`: the VMs' frames that
    /// are due, within the budget, round-robin. `now` counts at the rate given to
    /// [`Desk::set_clock`] (only throttled VMs read it).
    pub fn tick(&mut self, sources: &mut impl Sources<K>, frame: &mut Frame, now: u64) -> Tick<K> {
        let output = frame.rect();
        if self.output != Some(output) {
            // Fullscreen placements and the overlay depend on the output's size.
            self.output = Some(output);
            self.full = true;
            for v in &mut self.views {
                v.presenter.changed();
            }
        }
        self.render_overlay(output.w);
        let mut damage = Damage::new(DAMAGE_LIMIT);
        if self.full {
            damage.add(output);
        }
        for r in self.uncovered.drain(..) {
            if let Some(r) = r.intersect(&output) {
                damage.add(r);
            }
        }

        // Take the frames that are due, round-robin, within the budget.
        let n = self.views.len();
        let mut spent: u64 = 0;
        let mut deferred: Option<usize> = None;
        // (view, its frame, its own rects, what it covers now)
        let mut served: Vec<(usize, FrameSource, Vec<Rect>, Vec<Rect>)> = Vec::new();
        for k in 0..n {
            let i = (self.next + k) % n;
            let v = &mut self.views[i];
            let fresh = if !v.presenter.due(now) {
                None
            } else if v.presenter.reads_device() {
                let mut taken = None;
                let p = &mut v.presenter;
                sources.with(v.key, true, &mut |dev| taken = p.take_frame(dev, now));
                taken
            } else {
                v.presenter.take_frame(&mut Absent, now)
            };
            let Some(source) = merge(v.pending.take(), fresh) else {
                continue;
            };
            let (rects, covers) = v.rects_of(&source, output);
            let cost = rects.iter().map(|r| u64::from(r.w) * u64::from(r.h)).sum();
            if !self.full && spent > 0 && spent.saturating_add(cost) > self.budget {
                v.pending = Some(source);
                deferred.get_or_insert(i);
                continue;
            }
            spent = spent.saturating_add(cost);
            for r in &rects {
                damage.add(*r);
            }
            served.push((i, source, rects, covers));
        }
        self.next = match deferred {
            Some(i) => i,
            None => (self.next + 1) % n.max(1),
        };
        self.full = false;
        if damage.is_empty() {
            // Frames that changed nothing on the output still count as taken.
            for (i, _, _, covers) in served {
                self.views[i].drawn = covers;
            }
            return Tick {
                rects: Vec::new(),
                composed: Vec::new(),
            };
        }
        let rects = damage.rects().to_vec();

        // What every VM in the recomposed rectangles shows: its own frame, its
        // frozen copy, or (under another's damage) what its device shows now.
        let mut contents: Vec<(usize, Content)> = Vec::new();
        let mut guest_damage = Vec::new();
        for (i, source, _, _) in &mut served {
            guest_damage.push(source.guest_damage());
            let content = match source.live.take() {
                Some((scanout, cursor)) => Content::Live(scanout, cursor),
                None if self.views[*i].presenter.policy == Policy::Frozen => Content::Frozen,
                None => Content::Nothing,
            };
            contents.push((*i, content));
        }
        for (i, v) in self.views.iter().enumerate() {
            if served.iter().any(|s| s.0 == i)
                || v.presenter.policy == Policy::Hidden
                || !v
                    .drawn
                    .iter()
                    .any(|d| rects.iter().any(|r| r.intersect(d).is_some()))
            {
                continue;
            }
            let content = if v.presenter.policy == Policy::Frozen {
                Content::Frozen
            } else if let Some((scanout, cursor)) = v.pending.as_ref().and_then(|p| p.live.as_ref())
            {
                Content::Live(scanout.clone(), cursor.clone())
            } else {
                let mut seen = None;
                let scanout = v.presenter.scanout;
                sources.with(v.key, false, &mut |dev| {
                    seen = Some((dev.scanout_shared(scanout), dev.cursor_owned()));
                });
                match seen {
                    Some((s, c)) => Content::Live(s, c.filter(|c| c.scanout as usize == scanout)),
                    None => Content::Nothing,
                }
            };
            contents.push((i, content));
        }

        // The scene: VMs bottom to top, the overlay above all.
        contents.sort_by_key(|(i, _)| self.views[*i].z);
        let mut scene = Scene {
            background: self.background,
            layers: Vec::new(),
        };
        let mut unpresentable: Vec<(usize, &SharedScanout)> = Vec::new();
        for (rank, (i, content)) in contents.iter().enumerate() {
            let p = &self.views[*i].presenter;
            let z = i32::try_from(rank * 2).unwrap_or(i32::MAX - 3);
            match content {
                Content::Live(scanout, cursor) => {
                    if !p.guest_layers(scanout.as_ref(), cursor.as_ref(), output, &mut scene, z) {
                        if let Some(s) = scanout {
                            unpresentable.push((*i, s));
                        }
                    }
                }
                Content::Frozen => {
                    if let Some(layer) = p
                        .frozen
                        .as_ref()
                        .and_then(|s| p.snapshot_layer(s, output, z))
                    {
                        scene.layers.push(layer);
                    }
                }
                Content::Nothing => {}
            }
        }
        if let Some(bar) = &self.overlay_bar {
            if let Ok(s) = bar.surface() {
                let y = output.h.saturating_sub(bar.height) as i32;
                let mut layer = Layer::new(s, 0, y);
                layer.z = i32::MAX;
                scene.layers.push(layer);
            }
        }
        (self.composer)(&scene, frame, &rects);
        drop(scene);
        for (i, s) in unpresentable {
            self.views[i].presenter.warn_unpresentable(s);
        }

        let mut composed = Vec::new();
        for ((i, _, own, covers), guest_damage) in served.into_iter().zip(guest_damage) {
            let v = &mut self.views[i];
            v.drawn = covers;
            if own.is_empty() {
                continue;
            }
            v.frames = v.frames.wrapping_add(1);
            composed.push(Composed {
                key: v.key,
                frame: v.frames,
                guest_damage,
                rects: own,
            });
        }
        Tick { rects, composed }
    }
}

impl<K> View<K> {
    /// For `source`, a frame of this VM's: its own output rectangles (its damage,
    /// or everything it covered and covers when it changed otherwise), and what it
    /// covers now.
    fn rects_of(&self, source: &FrameSource, output: Rect) -> (Vec<Rect>, Vec<Rect>) {
        let p = &self.presenter;
        let mut scene = Scene::default();
        match &source.live {
            Some((scanout, cursor)) => {
                p.guest_layers(scanout.as_ref(), cursor.as_ref(), output, &mut scene, 0);
            }
            None if p.policy == Policy::Frozen => {
                if let Some(layer) = p
                    .frozen
                    .as_ref()
                    .and_then(|s| p.snapshot_layer(s, output, 0))
                {
                    scene.layers.push(layer);
                }
            }
            None => {}
        }
        let covers: Vec<Rect> = scene
            .layers
            .iter()
            .filter_map(|l| l.bounds(output).ok())
            .filter_map(|b| b.intersect(&output))
            .collect();
        if let (Some(_), Some(damage)) = (&source.live, &source.damage) {
            let own = match scene.layers.first().filter(|l| l.z == 0) {
                Some(layer) => output_damage(layer, damage, output),
                None => Vec::new(),
            };
            return (own, covers);
        }
        let mut own = Damage::new(DAMAGE_LIMIT);
        for r in self.drawn.iter().chain(&covers) {
            own.add(*r);
        }
        (own.rects().to_vec(), covers)
    }
}

/// A frame deferred (`old`) and one taken since (`new`): the newer pixels with the
/// damage of both (everything if either says so).
fn merge(old: Option<FrameSource>, new: Option<FrameSource>) -> Option<FrameSource> {
    match (old, new) {
        (None, n) => n,
        (o, None) => o,
        (Some(o), Some(n)) => {
            let damage = match (o.damage, n.damage) {
                (Some(mut a), Some(b)) => {
                    a.extend(b);
                    if a.len() > crate::defs::limits::MAX_DAMAGE_RECTS {
                        let all = a[1..].iter().fold(a[0], |acc, r| acc.union(r));
                        a.clear();
                        a.push(all);
                    }
                    Some(a)
                }
                _ => None,
            };
            Some(FrameSource {
                live: n.live,
                damage,
            })
        }
    }
}
