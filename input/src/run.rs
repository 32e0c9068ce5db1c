//! Running an input script: a state machine the caller polls with the time, a
//! [`FrameSource`] (the guest's current frame) and an [`InputSink`] (the VM's input
//! routing), so it runs the same in the hypervisor and in host tests.
//!
//! [`Runner::poll`] runs steps until one has to wait: for the sink (full: retried at
//! the next poll, from the same event), for time (`wait`), or for the frame
//! (`wait-change`, `wait-match`: checked at every poll until the timeout). The
//! caller polls again when a frame arrives, when the sink has room, or at the time
//! [`Status::Running`] names. A `wait-change` compares against the region as it was
//! when the step began, which is right after the previous step's input was sent.
//!
//! Every finished step goes into a [`RunRecord`]: its line, start and end time, the
//! region hash that satisfied a wait, and the whole frame's hash when the step ended.
//! [`Runner::replay`] runs the script again against a record (after rolling the VM
//! back to the snapshot the record started from): every wait then waits for the
//! region hash the record saw, so a replay reproduces the same screens or fails at
//! the first step that differs. [`RunRecord::to_text`] / [`RunRecord::parse`] store a
//! record with the snapshot.
//!
//! A runner borrows its script ([`Runner::new`]) or owns it ([`Runner::owned`]: the
//! hypervisor keeps a run going past the call that handed the script over, and
//! dropping the runner frees it). [`ScriptSlot`] is one VM's place for a run: it
//! parses the text, refuses a second script while one runs, and reports the end
//! once ([`Done`], with the authority ABI's status code).

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use authority_abi::input::{InputEvent, Space};

use crate::keymap::usage;
use crate::script::{fnv1a, Region, Script, Step, FNV_OFFSET};

/// A guest frame: `height` rows of `width` 32-bit pixels `stride` bytes apart.
/// Byte 3 of each pixel (X or alpha) is ignored by hashes.
#[derive(Debug, Clone, Copy)]
pub struct FrameView<'a> {
    pub width: u32,
    pub height: u32,
    pub stride: usize,
    pub data: &'a [u8],
}

/// How long an input step waits for a sink that takes none of its events (a
/// guest that does not read its input) before the run fails as a timeout.
pub const SEND_TIMEOUT_MS: u32 = crate::script::DEFAULT_TIMEOUT_MS;

/// Bytes per pixel of a [`FrameView`].
const PIXEL: usize = 4;

/// Whether `r` is a non-empty region wholly inside a `width` × `height` frame.
pub fn region_inside(r: Region, width: u32, height: u32) -> bool {
    r.w != 0
        && r.h != 0
        && u64::from(r.x) + u64::from(r.w) <= u64::from(width)
        && u64::from(r.y) + u64::from(r.h) <= u64::from(height)
}

/// The rows of `r` in `frame`, each `r.w * 4` bytes; `None` when the region is not
/// wholly inside the frame (or the frame's bytes are too short).
pub fn region_rows<'a>(
    frame: &FrameView<'a>,
    r: Region,
) -> Option<impl Iterator<Item = &'a [u8]> + 'a> {
    if !region_inside(r, frame.width, frame.height) {
        return None;
    }
    let (data, stride) = (frame.data, frame.stride);
    let row_bytes = r.w as usize * PIXEL;
    // The last row's end must be in the frame's bytes: then every row's is.
    let last = ((r.y + r.h - 1) as usize)
        .checked_mul(stride)?
        .checked_add(r.x as usize * PIXEL)?
        .checked_add(row_bytes)?;
    if last > data.len() {
        return None;
    }
    Some((r.y..r.y + r.h).map(move |y| {
        let start = y as usize * stride + r.x as usize * PIXEL;
        &data[start..start + row_bytes]
    }))
}

/// [`region_hash`] fed row by row (a capture that arrives in strips): `new(w, h)`,
/// then every row's XRGB8888 bytes in order, then [`RegionHasher::finish`].
#[derive(Debug, Clone, Copy)]
pub struct RegionHasher(u64);

impl RegionHasher {
    pub fn new(w: u32, h: u32) -> Self {
        RegionHasher(fnv1a(fnv1a(FNV_OFFSET, &w.to_le_bytes()), &h.to_le_bytes()))
    }

    /// Pixels (4 bytes each; a trailing partial pixel is ignored).
    pub fn pixels(&mut self, bytes: &[u8]) {
        for px in bytes.chunks_exact(PIXEL) {
            self.0 = fnv1a(self.0, &px[..3]);
        }
    }

    pub fn finish(&self) -> u64 {
        self.0
    }
}

/// The hash of `r` in `frame`: FNV-1a over the region's width and height (u32,
/// little-endian) and then, row by row, bytes 0..3 of each pixel. `None` when the
/// region is not wholly inside the frame (or the frame's bytes are too short). A
/// reference image's hash is this function over the reference.
pub fn region_hash(frame: &FrameView, r: Region) -> Option<u64> {
    let mut h = RegionHasher::new(r.w, r.h);
    for row in region_rows(frame, r)? {
        h.pixels(row);
    }
    Some(h.finish())
}

/// The hash of a whole frame.
pub fn frame_hash(frame: &FrameView) -> Option<u64> {
    region_hash(
        frame,
        Region {
            x: 0,
            y: 0,
            w: frame.width,
            h: frame.height,
        },
    )
}

/// The guest's current frame.
pub trait FrameSource {
    /// The frame now, `None` while the guest shows none.
    fn frame(&mut self) -> Option<FrameView<'_>>;
}

/// The sink has no room now; the event is sent again at the next poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// Where a script's input goes (guest coordinates; the VM's routing).
pub trait InputSink {
    fn send(&mut self, e: &InputEvent) -> Result<(), Busy>;
}

/// Why a run stopped early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// A wait's condition was not met in time, or an input step's events were
    /// not taken for [`SEND_TIMEOUT_MS`].
    Timeout,
    /// A wait's region is not inside the guest's frame.
    RegionOutside,
    /// A replay saw a different region than the record at a wait (its timeout ran
    /// out waiting for the recorded hash).
    Diverged { expected: u64 },
}

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Poll again on a new frame, when the sink has room, or at `wake_at`.
    Running {
        wake_at: Option<u64>,
    },
    Finished,
    /// Step `step` (script line `line`) failed.
    Failed {
        step: u32,
        line: u32,
        why: Failure,
    },
}

/// One finished step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepRecord {
    pub step: u32,
    pub line: u32,
    pub started: u64,
    pub ended: u64,
    /// The region hash that satisfied a wait.
    pub region: Option<u64>,
    /// The whole frame's hash when the step ended.
    pub frame: Option<u64>,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunRecord {
    /// [`Script::text_hash`] of the script run.
    pub script: u64,
    pub steps: Vec<StepRecord>,
    /// `None` while running.
    pub outcome: Option<Status>,
}

/// Why a record cannot be replayed or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordError {
    /// The record is of another script.
    OtherScript,
    /// Its steps are not this script's, in order.
    Mismatch,
    /// The text is not a record.
    Malformed { line: u32 },
}

#[derive(Debug, Clone)]
enum Phase {
    Start,
    Sending {
        events: Vec<InputEvent>,
        next: usize,
        /// When the sink last refused an event and has taken none since.
        stalled: Option<u64>,
    },
    Sleeping {
        until: u64,
    },
    Waiting {
        region: Region,
        /// The hash a `wait-match` waits for.
        target: Option<u64>,
        deadline: u64,
        baseline: Option<u64>,
    },
}

/// A script being run.
#[derive(Debug, Clone)]
pub struct Runner<'s> {
    script: Cow<'s, Script>,
    pc: usize,
    phase: Phase,
    started: u64,
    record: RunRecord,
    /// In a replay: the region hash each wait must see, by step.
    expect: Option<Vec<Option<u64>>>,
}

fn key(usage: u8, pressed: bool) -> InputEvent {
    InputEvent::Key { usage, pressed }
}

fn pointer(x: u32, y: u32) -> InputEvent {
    InputEvent::PointerAbs {
        x: x as i32,
        y: y as i32,
        space: Space::Guest,
    }
}

/// The events of an input step.
pub fn events_of(step: &Step) -> Vec<InputEvent> {
    let mut v = Vec::new();
    match step {
        Step::Type(strokes) => {
            for &(u, shift) in strokes {
                if shift {
                    v.push(key(usage::LEFT_SHIFT, true));
                }
                v.push(key(u, true));
                v.push(key(u, false));
                if shift {
                    v.push(key(usage::LEFT_SHIFT, false));
                }
            }
        }
        Step::Chord(keys) => {
            v.extend(keys.iter().map(|&u| key(u, true)));
            v.extend(keys.iter().rev().map(|&u| key(u, false)));
        }
        Step::Move { x, y } => v.push(pointer(*x, *y)),
        Step::Click { x, y, button } => {
            let b = *button;
            v.push(pointer(*x, *y));
            v.push(InputEvent::Button {
                button: b,
                pressed: true,
            });
            v.push(InputEvent::Button {
                button: b,
                pressed: false,
            });
        }
        Step::Wait { .. } | Step::WaitChange { .. } | Step::WaitMatch { .. } => {}
    }
    v
}

impl Runner<'static> {
    /// A run of `script` that owns it (freed with the runner).
    pub fn owned(script: Script) -> Self {
        Self::with(Cow::Owned(script))
    }
}

impl<'s> Runner<'s> {
    /// A run of `script` from its first step.
    pub fn new(script: &'s Script) -> Self {
        Self::with(Cow::Borrowed(script))
    }

    fn with(script: Cow<'s, Script>) -> Self {
        let hash = script.text_hash;
        Runner {
            script,
            pc: 0,
            phase: Phase::Start,
            started: 0,
            record: RunRecord {
                script: hash,
                steps: Vec::new(),
                outcome: None,
            },
            expect: None,
        }
    }

    /// The script being run.
    pub fn script(&self) -> &Script {
        &self.script
    }

    /// The step running now (the number of steps finished).
    pub fn step(&self) -> usize {
        self.pc
    }

    /// A replay of `record` (a finished run of `script`): waits wait for the region
    /// hashes the record saw.
    pub fn replay(script: &'s Script, record: &RunRecord) -> Result<Self, RecordError> {
        if record.script != script.text_hash {
            return Err(RecordError::OtherScript);
        }
        let mut expect = alloc::vec![None; script.steps.len()];
        for (i, s) in record.steps.iter().enumerate() {
            let at = s.step as usize;
            if at != i || at >= script.steps.len() || s.line != script.lines[at] {
                return Err(RecordError::Mismatch);
            }
            let is_wait = matches!(
                script.steps[at],
                Step::WaitChange { .. } | Step::WaitMatch { .. }
            );
            if is_wait != s.region.is_some() {
                return Err(RecordError::Mismatch);
            }
            expect[at] = s.region;
        }
        let mut r = Runner::new(script);
        r.expect = Some(expect);
        Ok(r)
    }

    /// What the run did so far.
    pub fn record(&self) -> &RunRecord {
        &self.record
    }

    /// Takes the record (at the end of the run).
    pub fn into_record(self) -> RunRecord {
        self.record
    }

    fn finish_step(&mut self, now: u64, region: Option<u64>, frames: &mut dyn FrameSource) {
        let frame = frames.frame().and_then(|f| frame_hash(&f));
        self.record.steps.push(StepRecord {
            step: self.pc as u32,
            line: self.script.lines[self.pc],
            started: self.started,
            ended: now,
            region,
            frame,
        });
        self.pc += 1;
        self.phase = Phase::Start;
    }

    fn fail(&mut self, why: Failure) -> Status {
        let s = Status::Failed {
            step: self.pc as u32,
            line: self.script.lines[self.pc],
            why,
        };
        self.record.outcome = Some(s);
        s
    }

    /// Runs what can run at time `now`.
    pub fn poll(
        &mut self,
        now: u64,
        frames: &mut dyn FrameSource,
        sink: &mut dyn InputSink,
    ) -> Status {
        if let Some(done) = self.record.outcome {
            return done;
        }
        loop {
            let Some(step) = self.script.steps.get(self.pc) else {
                self.record.outcome = Some(Status::Finished);
                return Status::Finished;
            };
            match &mut self.phase {
                Phase::Start => {
                    self.started = now;
                    let deadline = |ms: u32| now.saturating_add(u64::from(ms));
                    self.phase = match *step {
                        Step::Wait { ms } => Phase::Sleeping {
                            until: deadline(ms),
                        },
                        Step::WaitChange { region, timeout_ms } => Phase::Waiting {
                            region,
                            target: None,
                            deadline: deadline(timeout_ms),
                            baseline: frames.frame().and_then(|f| region_hash(&f, region)),
                        },
                        Step::WaitMatch {
                            region,
                            hash,
                            timeout_ms,
                        } => Phase::Waiting {
                            region,
                            target: Some(hash),
                            deadline: deadline(timeout_ms),
                            baseline: None,
                        },
                        _ => Phase::Sending {
                            events: events_of(step),
                            next: 0,
                            stalled: None,
                        },
                    };
                }
                Phase::Sending {
                    events,
                    next,
                    stalled,
                } => {
                    while let Some(e) = events.get(*next) {
                        if sink.send(e).is_err() {
                            let since = *stalled.get_or_insert(now);
                            let limit = since.saturating_add(u64::from(SEND_TIMEOUT_MS));
                            if now >= limit {
                                return self.fail(Failure::Timeout);
                            }
                            return Status::Running {
                                wake_at: Some(limit),
                            };
                        }
                        *stalled = None;
                        *next += 1;
                    }
                    self.finish_step(now, None, frames);
                }
                Phase::Sleeping { until } => {
                    if now < *until {
                        return Status::Running {
                            wake_at: Some(*until),
                        };
                    }
                    self.finish_step(now, None, frames);
                }
                Phase::Waiting {
                    region,
                    target,
                    deadline,
                    baseline,
                } => {
                    let (region, target, deadline, baseline) =
                        (*region, *target, *deadline, *baseline);
                    let expected = self.expect.as_ref().and_then(|e| e[self.pc]).or(target);
                    let seen = match frames.frame() {
                        Some(f) if region_hash(&f, region).is_none() => {
                            return self.fail(Failure::RegionOutside);
                        }
                        Some(f) => region_hash(&f, region),
                        None => None,
                    };
                    let met = match (expected, seen) {
                        (Some(want), Some(h)) => h == want,
                        (None, Some(h)) => baseline.is_some_and(|b| b != h),
                        (_, None) => false,
                    };
                    if met {
                        self.finish_step(now, seen, frames);
                        continue;
                    }
                    if now >= deadline {
                        let why = match (&self.expect, expected) {
                            (Some(_), Some(expected)) => Failure::Diverged { expected },
                            _ => Failure::Timeout,
                        };
                        return self.fail(why);
                    }
                    // A wait-change that began with no frame takes the first one as
                    // its baseline.
                    if let (Phase::Waiting { baseline: b, .. }, None) = (&mut self.phase, baseline)
                    {
                        *b = seen;
                    }
                    return Status::Running {
                        wake_at: Some(deadline),
                    };
                }
            }
        }
    }
}

/// How a run in a [`ScriptSlot`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Done {
    /// Steps that finished.
    pub steps: u64,
    /// [`Status::Finished`] or [`Status::Failed`].
    pub status: Status,
    /// What the run did.
    pub record: RunRecord,
}

impl Done {
    /// The status of the authority ABI's `ScriptDone` event: 0 when the script
    /// finished; `FAILED` for a wait that timed out or a replay that diverged;
    /// `INVALID_PARAMETERS` for a wait on a region outside the guest's frame.
    pub fn abi_status(&self) -> i64 {
        let s = match self.status {
            Status::Failed {
                why: Failure::RegionOutside,
                ..
            } => authority_abi::Status::InvalidParameters,
            Status::Failed { .. } => authority_abi::Status::Failed,
            Status::Finished | Status::Running { .. } => return 0,
        };
        s as i64
    }
}

/// Why [`ScriptSlot::start`] started nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartError {
    /// The text is not a valid script.
    Refused(crate::script::ParseError),
    /// A script runs already, at step `step` (0-based) of `steps`.
    Busy { step: u32, steps: u32 },
}

/// One VM's input-script slot: at most one run at a time, owning its script; its
/// end is reported once by [`ScriptSlot::poll`], and the slot is free again.
#[derive(Debug, Default)]
pub struct ScriptSlot {
    run: Option<Runner<'static>>,
}

impl ScriptSlot {
    pub const fn new() -> Self {
        ScriptSlot { run: None }
    }

    /// Parses `text` and starts it from its first step (it runs at the next
    /// [`ScriptSlot::poll`]); answers its number of steps. Nothing changes when the
    /// slot is busy or the script is refused.
    pub fn start(&mut self, text: &[u8]) -> Result<u32, StartError> {
        if let Some((step, steps)) = self.running() {
            return Err(StartError::Busy { step, steps });
        }
        let script = Script::parse(text).map_err(StartError::Refused)?;
        let steps = script.steps.len() as u32;
        self.run = Some(Runner::owned(script));
        Ok(steps)
    }

    /// The running script's current step (0-based) and its number of steps.
    pub fn running(&self) -> Option<(u32, u32)> {
        self.run
            .as_ref()
            .map(|r| (r.step() as u32, r.script().steps.len() as u32))
    }

    /// Runs what can run at `now` (milliseconds): `Some` once, when the run ends
    /// (the slot is free again); `None` while it runs or when the slot is empty.
    pub fn poll(
        &mut self,
        now: u64,
        frames: &mut dyn FrameSource,
        sink: &mut dyn InputSink,
    ) -> Option<Done> {
        let status = self.run.as_mut()?.poll(now, frames, sink);
        if let Status::Running { .. } = status {
            return None;
        }
        let record = self.run.take()?.into_record();
        Some(Done {
            steps: record.steps.len() as u64,
            status,
            record,
        })
    }
}

const RECORD_MAGIC: &str = "rayos-input-record 1";

fn opt_hex(v: Option<u64>) -> String {
    match v {
        Some(h) => alloc::format!("{h:016x}"),
        None => String::from("-"),
    }
}

impl RunRecord {
    /// The record as text: a header line, one `step` line per step, an `end` line.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "{RECORD_MAGIC} script {:016x}", self.script);
        for st in &self.steps {
            let _ = writeln!(
                s,
                "step {} line {} time {} {} region {} frame {}",
                st.step,
                st.line,
                st.started,
                st.ended,
                opt_hex(st.region),
                opt_hex(st.frame)
            );
        }
        let _ = match self.outcome {
            None => writeln!(s, "end running"),
            Some(Status::Finished) => writeln!(s, "end finished"),
            Some(Status::Running { .. }) => writeln!(s, "end running"),
            Some(Status::Failed { step, line, why }) => {
                let why = match why {
                    Failure::Timeout => String::from("timeout"),
                    Failure::RegionOutside => String::from("region-outside"),
                    Failure::Diverged { expected } => alloc::format!("diverged {expected:016x}"),
                };
                writeln!(s, "end failed {step} {line} {why}")
            }
        };
        s
    }

    /// Reads what [`RunRecord::to_text`] wrote (validated; at most
    /// [`crate::script::MAX_STEPS`] steps).
    pub fn parse(text: &str) -> Result<RunRecord, RecordError> {
        let mut lines = text.lines().enumerate();
        let bad = |i: usize| RecordError::Malformed { line: i as u32 + 1 };
        let hex = |t: Option<&str>| -> Option<u64> {
            let t = t?;
            (t.len() == 16).then_some(())?;
            u64::from_str_radix(t, 16).ok()
        };
        let opt = |t: Option<&str>| -> Option<Option<u64>> {
            match t? {
                "-" => Some(None),
                h => hex(Some(h)).map(Some),
            }
        };
        let num = |t: Option<&str>| -> Option<u64> {
            let t = t?;
            (!t.is_empty() && t.len() <= 20 && t.bytes().all(|b| b.is_ascii_digit()))
                .then_some(())?;
            t.parse().ok()
        };
        let (_, head) = lines.next().ok_or(bad(0))?;
        let script = head
            .strip_prefix(RECORD_MAGIC)
            .and_then(|r| r.strip_prefix(" script "))
            .and_then(|h| hex(Some(h)))
            .ok_or(bad(0))?;
        let mut steps = Vec::new();
        for (i, line) in lines.by_ref() {
            let mut t = line.split(' ');
            match t.next() {
                Some("step") => {
                    let parsed = (|| {
                        let step = u32::try_from(num(t.next())?).ok()?;
                        (t.next()? == "line").then_some(())?;
                        let line = u32::try_from(num(t.next())?).ok()?;
                        (t.next()? == "time").then_some(())?;
                        let started = num(t.next())?;
                        let ended = num(t.next())?;
                        (t.next()? == "region").then_some(())?;
                        let region = opt(t.next())?;
                        (t.next()? == "frame").then_some(())?;
                        let frame = opt(t.next())?;
                        t.next().is_none().then_some(())?;
                        (started <= ended).then_some(())?;
                        Some(StepRecord {
                            step,
                            line,
                            started,
                            ended,
                            region,
                            frame,
                        })
                    })();
                    let s = parsed.ok_or(bad(i))?;
                    if steps.len() == crate::script::MAX_STEPS || s.step as usize != steps.len() {
                        return Err(bad(i));
                    }
                    steps.push(s);
                }
                Some("end") => {
                    let outcome = (|| {
                        let o = match t.next()? {
                            "running" => None,
                            "finished" => Some(Status::Finished),
                            "failed" => {
                                let step = u32::try_from(num(t.next())?).ok()?;
                                let line = u32::try_from(num(t.next())?).ok()?;
                                let why = match t.next()? {
                                    "timeout" => Failure::Timeout,
                                    "region-outside" => Failure::RegionOutside,
                                    "diverged" => Failure::Diverged {
                                        expected: hex(t.next())?,
                                    },
                                    _ => return None,
                                };
                                Some(Status::Failed { step, line, why })
                            }
                            _ => return None,
                        };
                        t.next().is_none().then_some(o)
                    })()
                    .ok_or(bad(i))?;
                    if let Some((j, _)) = lines.next() {
                        return Err(bad(j));
                    }
                    return Ok(RunRecord {
                        script,
                        steps,
                        outcome,
                    });
                }
                _ => return Err(bad(i)),
            }
        }
        Err(bad(text.lines().count()))
    }
}

/// The first step at which two records saw different frames or regions, `None`
/// when they agree (times are not compared).
pub fn first_difference(a: &RunRecord, b: &RunRecord) -> Option<u32> {
    let n = a.steps.len().max(b.steps.len());
    (0..n)
        .find(|&i| match (a.steps.get(i), b.steps.get(i)) {
            (Some(x), Some(y)) => (x.line, x.region, x.frame) != (y.line, y.region, y.frame),
            _ => true,
        })
        .map(|i| i as u32)
}

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
