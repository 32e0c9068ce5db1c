//! `input_script`: the input-script parser (scripts arrive through the authority
//! ABI's RUN_INPUT_SCRIPT) and the run-record reader, from fuzzed bytes.
//!
//! The bytes are parsed as a script; one that parses is run to its end against a
//! 32x16 guest whose frame changes with every event it receives, through an input
//! path that takes two events per poll, with time going up by a minute per poll (so
//! every wait ends within a few polls). The bytes are also read as a run record.
//!
//! Invariants: a parsed script is within the limits (steps, text, chord, coordinate,
//! timeout) and its lines ascend; a run ends (finished or failed) within a bound set
//! by the script; its record names the script's steps in order and reads back from
//! its text unchanged, and a replay of a finished run on the same guest finishes; a
//! record that reads from the bytes writes back to text that reads to the same.

use authority_abi::input::InputEvent;
use input::run::{Busy, FrameSource, FrameView, InputSink, RunRecord, Runner, Status};
use input::script::{self, Script, Step};

const W: u32 = 32;
const H: u32 = 16;
/// Time per poll: a minute, so a ten-minute wait ends in eleven polls.
const POLL_MS: u64 = 60_000;

/// A guest whose pixels change with every event it receives.
struct Guest {
    pixels: Vec<u8>,
    seen: u64,
}

impl Guest {
    fn new() -> Self {
        Guest {
            pixels: vec![0; (W * H * 4) as usize],
            seen: 0,
        }
    }
    fn take(&mut self, e: &InputEvent) {
        self.seen += 1;
        let at = (self.seen as usize * 4) % self.pixels.len();
        self.pixels[at] ^= e.encode()[0] ^ self.seen as u8;
    }
}

impl FrameSource for Guest {
    fn frame(&mut self) -> Option<FrameView<'_>> {
        Some(FrameView {
            width: W,
            height: H,
            stride: (W * 4) as usize,
            data: &self.pixels,
        })
    }
}

struct TwoPerPoll {
    queued: Vec<InputEvent>,
}

impl InputSink for TwoPerPoll {
    fn send(&mut self, e: &InputEvent) -> Result<(), Busy> {
        if self.queued.len() == 2 {
            return Err(Busy);
        }
        self.queued.push(*e);
        Ok(())
    }
}

fn check_limits(s: &Script) {
    assert!(s.steps.len() <= script::MAX_STEPS);
    assert_eq!(s.steps.len(), s.lines.len());
    assert!(s.lines.windows(2).all(|w| w[0] < w[1]));
    for step in &s.steps {
        match step {
            Step::Type(t) => assert!(!t.is_empty() && t.len() <= script::MAX_TEXT),
            Step::Chord(k) => assert!(!k.is_empty() && k.len() <= script::MAX_CHORD),
            Step::Move { x, y } | Step::Click { x, y, .. } => {
                assert!(*x < script::MAX_COORD && *y < script::MAX_COORD)
            }
            Step::Wait { ms } => assert!(*ms <= script::MAX_WAIT_MS),
            Step::WaitChange { region, timeout_ms }
            | Step::WaitMatch {
                region, timeout_ms, ..
            } => {
                assert!(*timeout_ms >= 1 && *timeout_ms <= script::MAX_WAIT_MS);
                assert!(region.w >= 1 && region.h >= 1);
                assert!(region.x + region.w <= script::MAX_COORD);
                assert!(region.y + region.h <= script::MAX_COORD);
            }
        }
    }
}

/// Runs `runner` to its end; returns the outcome.
fn run_to_end(runner: &mut Runner, guest: &mut Guest, s: &Script) -> Status {
    // Each event needs at most half a poll, each wait at most eleven.
    let events: usize = s
        .steps
        .iter()
        .map(|st| match st {
            Step::Type(t) => 4 * t.len(),
            Step::Chord(k) => 2 * k.len(),
            _ => 3,
        })
        .sum();
    let bound = events + 12 * s.steps.len() + 2;
    let mut sink = TwoPerPoll { queued: Vec::new() };
    for poll in 0..=bound {
        let status = runner.poll(poll as u64 * POLL_MS, guest, &mut sink);
        for e in sink.queued.drain(..) {
            guest.take(&e);
        }
        if !matches!(status, Status::Running { .. }) {
            return status;
        }
    }
    panic!("the run did not end within {bound} polls");
}

/// Runs one input.
pub fn run(data: &[u8]) {
    if let Ok(s) = Script::parse(data) {
        check_limits(&s);
        let mut runner = Runner::new(&s);
        let status = run_to_end(&mut runner, &mut Guest::new(), &s);
        let record = runner.into_record();
        assert_eq!(record.outcome, Some(status));
        for (i, st) in record.steps.iter().enumerate() {
            assert_eq!(st.step as usize, i);
            assert_eq!(st.line, s.lines[i]);
        }
        assert_eq!(RunRecord::parse(&record.to_text()), Ok(record.clone()));
        if status == Status::Finished {
            let mut replay = Runner::replay(&s, &record).expect("own record refused");
            assert_eq!(
                run_to_end(&mut replay, &mut Guest::new(), &s),
                Status::Finished
            );
        }
    }
    if let Ok(text) = core::str::from_utf8(data) {
        if let Ok(r) = RunRecord::parse(text) {
            assert_eq!(RunRecord::parse(&r.to_text()), Ok(r));
        }
    }
}

/// Seeds: the documented example, a run record, scripts at the limits.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let example = b"# log in on the second console\n\
key ctrl+alt+f2\n\
type \"root\\n\"\n\
wait-change 0 0 32 8 timeout 3000\n\
move 10 5\n\
click 10 5 right\n\
wait 500\n\
wait-match 0 0 32 16 0123456789abcdef timeout 1000\n"
        .to_vec();
    let s = Script::parse(&example).expect("the example parses");
    let mut runner = Runner::new(&s);
    run_to_end(&mut runner, &mut Guest::new(), &s);
    let record = runner.into_record().to_text().into_bytes();
    let long_text = format!("type \"{}\"\n", "Aa1!".repeat(script::MAX_TEXT / 4)).into_bytes();
    let chord = b"key ctrl+alt+shift+meta+rctrl+f24\nkey esc\n".to_vec();
    vec![
        ("example", example),
        ("record", record),
        ("long-text", long_text),
        ("chord", chord),
    ]
}
