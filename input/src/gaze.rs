//! Gaze points to pointer motion: an exponential moving average smooths the jitter of
//! an eye tracker, and resting the gaze within a radius for a dwell time clicks once;
//! the next click needs the pointer to have left twice the radius around the last.
//! Deterministic: the caller passes each sample's time (any monotonic unit), and the
//! arithmetic is integer (Q16 positions).

/// Fraction bits of the smoothed position.
const FRAC: u32 = 16;
/// Denominator of [`GazeConfig::smoothing`].
pub const SMOOTHING_ONE: u32 = 256;

/// How gaze becomes pointer motion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GazeConfig {
    /// How far each sample moves the pointer towards the gaze point, in
    /// 1/[`SMOOTHING_ONE`] (256: no smoothing; 32: an eighth of the way).
    pub smoothing: u32,
    /// The pointer may wander this far (pixels, Chebyshev distance) from where a
    /// dwell started and still dwell.
    pub dwell_radius: u32,
    /// How long the pointer must dwell before it clicks.
    pub dwell_time: u64,
    /// A gap between samples longer than this means the gaze was lost: smoothing and
    /// the dwell start over at the next sample.
    pub max_gap: u64,
}

impl Default for GazeConfig {
    /// For samples in milliseconds: a quarter of the way per sample, 24 pixels,
    /// 800 ms dwell, 250 ms gap.
    fn default() -> Self {
        GazeConfig {
            smoothing: SMOOTHING_ONE / 4,
            dwell_radius: 24,
            dwell_time: 800,
            max_gap: 250,
        }
    }
}

/// What one sample does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GazeOutput {
    /// Where the pointer goes (display pixels).
    pub pointer: (i32, i32),
    /// A dwell completed: click at `pointer`.
    pub click: bool,
}

/// The smoothing and dwell state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gaze {
    cfg: GazeConfig,
    /// Smoothed position in Q16, and the last sample's time.
    pos: Option<(i64, i64, u64)>,
    /// Where and when the current dwell started.
    dwell: Option<((i32, i32), u64)>,
    /// Where the last click was, until the pointer has left it.
    last_click: Option<(i32, i32)>,
}

impl Gaze {
    /// A filter with `cfg` (smoothing clamped to 1..=[`SMOOTHING_ONE`]).
    pub fn new(mut cfg: GazeConfig) -> Self {
        cfg.smoothing = cfg.smoothing.clamp(1, SMOOTHING_ONE);
        Gaze {
            cfg,
            pos: None,
            dwell: None,
            last_click: None,
        }
    }

    /// Forgets the position and the dwell (the gaze left the VM, or was lost).
    pub fn reset(&mut self) {
        self.pos = None;
        self.dwell = None;
        self.last_click = None;
    }

    /// One gaze sample at display point `(x, y)` and time `now`. A time earlier than
    /// the previous sample's counts as a lost gaze.
    pub fn sample(&mut self, now: u64, x: i32, y: i32) -> GazeOutput {
        let target = (i64::from(x) << FRAC, i64::from(y) << FRAC);
        let (sx, sy) = match self.pos {
            Some((px, py, t)) if now >= t && now - t <= self.cfg.max_gap => {
                let a = i64::from(self.cfg.smoothing);
                let one = i64::from(SMOOTHING_ONE);
                (
                    px + (target.0 - px) * a / one,
                    py + (target.1 - py) * a / one,
                )
            }
            _ => {
                self.dwell = None;
                target
            }
        };
        self.pos = Some((sx, sy, now));
        // Round to the nearest pixel.
        let half = 1i64 << (FRAC - 1);
        let pointer = (((sx + half) >> FRAC) as i32, ((sy + half) >> FRAC) as i32);
        let r = i64::from(self.cfg.dwell_radius);
        let near = |a: (i32, i32), b: (i32, i32), r: i64| {
            (i64::from(a.0) - i64::from(b.0)).abs() <= r
                && (i64::from(a.1) - i64::from(b.1)).abs() <= r
        };
        // After a click the pointer must leave twice the radius before the next.
        let armed = self.last_click.is_none_or(|c| !near(pointer, c, 2 * r));
        if armed {
            self.last_click = None;
        }
        let click = match self.dwell {
            Some((anchor, since)) if near(pointer, anchor, r) => {
                let due = armed && now - since >= self.cfg.dwell_time;
                if due {
                    self.last_click = Some(pointer);
                }
                due
            }
            _ => {
                self.dwell = Some((pointer, now));
                false
            }
        };
        GazeOutput { pointer, click }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    fn cfg() -> GazeConfig {
        GazeConfig {
            smoothing: 64,
            dwell_radius: 5,
            dwell_time: 100,
            max_gap: 50,
        }
    }

    #[test]
    fn smoothing_moves_a_fraction_of_the_way_and_converges() {
        let mut g = Gaze::new(cfg());
        assert_eq!(g.sample(0, 0, 0).pointer, (0, 0));
        // A quarter of the way each sample: 100 → 25, 43.75, 57.8, …
        assert_eq!(g.sample(10, 100, 0).pointer, (25, 0));
        assert_eq!(g.sample(20, 100, 0).pointer, (44, 0));
        let mut last = (0, 0);
        for t in 3..60 {
            last = g.sample(t * 10, 100, -40).pointer;
        }
        assert_eq!(last, (100, -40));
        // Without smoothing the pointer is the gaze.
        let mut raw = Gaze::new(GazeConfig {
            smoothing: SMOOTHING_ONE,
            ..cfg()
        });
        raw.sample(0, 0, 0);
        assert_eq!(raw.sample(1, 300, 7).pointer, (300, 7));
    }

    #[test]
    fn a_jittery_dwell_clicks_once_at_the_dwelled_point() {
        let mut g = Gaze::new(cfg());
        // Travel from (0, 0) to around (200, 120), then rest with ±3 pixel jitter.
        let mut clicks = std::vec::Vec::new();
        let mut t = 0;
        for i in 0..=20 {
            let out = g.sample(t, i * 10, i * 6);
            assert!(!out.click, "no click while travelling");
            t += 10;
        }
        let jitter = [(3, -2), (-3, 1), (2, 3), (-1, -3), (0, 2)];
        for i in 0..60 {
            let (jx, jy) = jitter[i % jitter.len()];
            let out = g.sample(t, 200 + jx, 120 + jy);
            if out.click {
                clicks.push((t, out.pointer));
            }
            t += 10;
        }
        assert_eq!(clicks.len(), 1, "{clicks:?}");
        let (when, (x, y)) = clicks[0];
        assert!(
            (195..=205).contains(&x) && (115..=125).contains(&y),
            "{x},{y}"
        );
        // The dwell starts once the smoothed pointer has settled, and lasts 100.
        assert!((310..=500).contains(&when), "{when}");
        // Moving away and dwelling elsewhere clicks again.
        let mut again = 0;
        for _ in 0..40 {
            again += usize::from(g.sample(t, 40, 40).click);
            t += 10;
        }
        assert_eq!(again, 1);
    }

    #[test]
    fn a_lost_gaze_restarts_smoothing_and_the_dwell() {
        let mut g = Gaze::new(cfg());
        for t in 0..9 {
            assert!(!g.sample(t * 10, 50, 50).click);
        }
        // A gap longer than max_gap: the pointer jumps, the dwell restarts.
        assert_eq!(g.sample(200, 50, 50).pointer, (50, 50));
        for t in (210..300).step_by(10) {
            assert!(!g.sample(t, 50, 50).click, "{t}");
        }
        assert!(g.sample(300, 50, 50).click);
        // Time going back counts as lost too.
        assert_eq!(g.sample(100, 10, 10).pointer, (10, 10));
        // Determinism: the same samples give the same outputs.
        let run = || {
            let mut g = Gaze::new(cfg());
            (0..100u64)
                .map(|t| g.sample(t * 7, (t * 13 % 97) as i32, (t * 5 % 31) as i32))
                .collect::<std::vec::Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
