//! Scripts run against a simulated guest: a terminal that echoes what is typed on
//! its first text row and, on Enter, prints the command's output on the second (a
//! row is 8 pixels of a 64x32 screen, a character a 4x8 cell whose colour is the
//! character code).

extern crate std;

use super::*;
use crate::keymap::{hid_to_evdev, us_layout};
use authority_abi::input::Button;
use std::string::String;
use std::vec;

const W: u32 = 64;
const H: u32 = 32;
const CELL_W: u32 = 4;
const ROW_H: u32 = 8;

/// The simulated guest.
#[derive(Clone)]
struct Terminal {
    pixels: Vec<u8>,
    line: String,
    shift: bool,
    /// What `echo` prints: a misbehaving guest prints something else.
    echo_prefix: &'static str,
    clicks: Vec<(i32, i32, Button)>,
    pointer: (i32, i32),
    /// Whether a frame exists yet.
    showing: bool,
}

impl Terminal {
    fn new() -> Self {
        Terminal {
            pixels: vec![0; (W * H * 4) as usize],
            line: String::new(),
            shift: false,
            echo_prefix: "",
            clicks: Vec::new(),
            pointer: (0, 0),
            showing: true,
        }
    }

    fn draw_row(&mut self, row: u32, text: &str) {
        for y in row * ROW_H..(row + 1) * ROW_H {
            for x in 0..W {
                let c = text
                    .as_bytes()
                    .get((x / CELL_W) as usize)
                    .copied()
                    .unwrap_or(0);
                let at = ((y * W + x) * 4) as usize;
                self.pixels[at..at + 4].copy_from_slice(&[c, c / 2, 0xff - c, 0xee]);
            }
        }
    }

    /// The guest handles one input event.
    fn input(&mut self, e: &InputEvent) {
        match *e {
            InputEvent::Key { usage: u, pressed } => {
                assert!(hid_to_evdev(u).is_some());
                if u == usage::LEFT_SHIFT {
                    self.shift = pressed;
                    return;
                }
                if !pressed {
                    return;
                }
                // Keys that type nothing (Ctrl, Alt, Delete) do nothing here.
                let Some(c) = (' '..='~')
                    .chain(['\n'])
                    .find(|&c| us_layout(c) == Some((u, self.shift)))
                else {
                    return;
                };
                if c == '\n' {
                    let out = match self.line.strip_prefix("echo ") {
                        Some(rest) => std::format!("{}{rest}", self.echo_prefix),
                        None => String::from("?"),
                    };
                    self.line.clear();
                    self.draw_row(0, "");
                    self.draw_row(1, &out);
                } else {
                    self.line.push(c);
                    let l = self.line.clone();
                    self.draw_row(0, &l);
                }
            }
            InputEvent::PointerAbs { x, y, space } => {
                assert_eq!(space, Space::Guest);
                self.pointer = (x, y);
            }
            InputEvent::Button {
                button,
                pressed: true,
            } => self.clicks.push((self.pointer.0, self.pointer.1, button)),
            _ => {}
        }
    }
}

impl FrameSource for Terminal {
    fn frame(&mut self) -> Option<FrameView<'_>> {
        self.showing.then_some(FrameView {
            width: W,
            height: H,
            stride: (W * 4) as usize,
            data: &self.pixels,
        })
    }
}

/// The VM's input path: holds events until the guest runs, `room` at a time.
struct Queue {
    events: Vec<InputEvent>,
    room: usize,
    sent: Vec<InputEvent>,
}

impl InputSink for Queue {
    fn send(&mut self, e: &InputEvent) -> Result<(), Busy> {
        if self.events.len() == self.room {
            return Err(Busy);
        }
        self.events.push(*e);
        self.sent.push(*e);
        Ok(())
    }
}

/// Runs `runner` against `guest` with time going up by 10 per poll; the guest
/// handles queued input between polls.
fn run(runner: &mut Runner, guest: &mut Terminal, room: usize) -> (Status, u64, Vec<InputEvent>) {
    let mut q = Queue {
        events: Vec::new(),
        room,
        sent: Vec::new(),
    };
    let mut now = 0;
    loop {
        let status = runner.poll(now, guest, &mut q);
        for e in q.events.drain(..) {
            guest.input(&e);
        }
        if !matches!(status, Status::Running { .. }) {
            return (status, now, q.sent);
        }
        now += 10;
        assert!(now < 1_000_000, "runaway");
    }
}

/// The hash of row `row` of a terminal showing `text` there.
fn row_hash(text: &str, row: u32) -> u64 {
    let mut t = Terminal::new();
    t.draw_row(row, text);
    region_hash(
        &t.frame().unwrap(),
        Region {
            x: 0,
            y: row * ROW_H,
            w: W,
            h: ROW_H,
        },
    )
    .unwrap()
}

fn script(text: &str) -> Script {
    Script::parse(text.as_bytes()).unwrap()
}

#[test]
fn typing_a_command_produces_its_output() {
    let s = script(&std::format!(
        "type \"echo Hi!\\n\"\nwait-change 0 8 64 8 timeout 500\nwait-match 0 8 64 8 {:016x}\nclick 5 6 right\n",
        row_hash("Hi!", 1)
    ));
    let mut guest = Terminal::new();
    let mut r = Runner::new(&s);
    let (status, _, sent) = run(&mut r, &mut guest, usize::MAX);
    assert_eq!(status, Status::Finished);
    // Shift wraps the capitals and '!' only.
    let shifts = sent
        .iter()
        .filter(|e| {
            matches!(
                e,
                InputEvent::Key {
                    usage: usage::LEFT_SHIFT,
                    pressed: true
                }
            )
        })
        .count();
    assert_eq!(shifts, 2);
    assert_eq!(guest.clicks, [(5, 6, Button::Right)]);
    let rec = r.record();
    assert_eq!(rec.outcome, Some(Status::Finished));
    assert_eq!(
        rec.steps.iter().map(|s| s.line).collect::<Vec<_>>(),
        [1, 2, 3, 4]
    );
    assert_eq!(rec.steps[1].region, Some(row_hash("Hi!", 1)));
    assert_eq!(rec.steps[2].region, Some(row_hash("Hi!", 1)));
    assert_eq!(rec.steps[0].region, None);
    assert_eq!(rec.steps[3].frame, frame_hash(&guest.frame().unwrap()));
}

#[test]
fn a_full_input_queue_delays_but_never_reorders_or_loses_events() {
    let s = script("type \"echo The Quick Brown Fox\\n\"\nkey ctrl+alt+delete\nclick 3 4\n");
    let mut free = Terminal::new();
    let (_, _, all) = run(&mut Runner::new(&s), &mut free, usize::MAX);
    let mut tight = Terminal::new();
    let (status, _, trickled) = run(&mut Runner::new(&s), &mut tight, 3);
    assert_eq!(status, Status::Finished);
    assert_eq!(trickled, all);
    assert_eq!(tight.pixels, free.pixels);
}

#[test]
fn timeouts_and_regions_outside_the_frame_fail_at_their_line() {
    let s = script("wait 30\nwait-change 0 0 64 8 timeout 100\n");
    let (status, now, _) = run(&mut Runner::new(&s), &mut Terminal::new(), usize::MAX);
    assert_eq!(
        status,
        Status::Failed {
            step: 1,
            line: 2,
            why: Failure::Timeout
        }
    );
    assert_eq!(now, 130, "30 ms wait, then the 100 ms timeout");
    let s = script("wait-match 0 30 64 8 0000000000000000 timeout 100\n");
    let (status, now, _) = run(&mut Runner::new(&s), &mut Terminal::new(), usize::MAX);
    assert_eq!(
        status,
        Status::Failed {
            step: 0,
            line: 1,
            why: Failure::RegionOutside
        }
    );
    assert_eq!(now, 0);
    // No frame at all: waits time out, and a frame's first appearance is the
    // baseline of a wait-change, not a change.
    let s = script("wait-change 0 0 64 8 timeout 50\n");
    let mut dark = Terminal::new();
    dark.showing = false;
    let (status, _, _) = run(&mut Runner::new(&s), &mut dark, usize::MAX);
    assert!(matches!(
        status,
        Status::Failed {
            why: Failure::Timeout,
            ..
        }
    ));
}

#[test]
fn a_record_replays_on_the_same_guest_and_diverges_on_another() {
    let s = script("type \"echo ok\\n\"\nwait-change 0 8 64 8 timeout 500\nwait 20\n");
    let mut first = Runner::new(&s);
    assert_eq!(run(&mut first, &mut Terminal::new(), 4).0, Status::Finished);
    let record = first.into_record();
    // Stored as text and read back.
    let text = record.to_text();
    assert_eq!(RunRecord::parse(&text), Ok(record.clone()));
    // Replayed on the guest rolled back: the same screens.
    let mut again = Runner::replay(&s, &record).unwrap();
    assert_eq!(run(&mut again, &mut Terminal::new(), 4).0, Status::Finished);
    assert_eq!(first_difference(&record, again.record()), None);
    // A guest that prints something else: the wait-change is satisfied by a change,
    // but not the recorded one.
    let mut other = Terminal::new();
    other.echo_prefix = "not ";
    let mut diverging = Runner::replay(&s, &record).unwrap();
    assert_eq!(
        run(&mut diverging, &mut other, 4).0,
        Status::Failed {
            step: 1,
            line: 2,
            why: Failure::Diverged {
                expected: record.steps[1].region.unwrap()
            }
        }
    );
    assert_eq!(first_difference(&record, diverging.record()), Some(1));
    // A record of another script, or with steps that are not the script's.
    let other_script = script("wait 1\n");
    assert_eq!(
        Runner::replay(&other_script, &record).err(),
        Some(RecordError::OtherScript)
    );
    let mut shuffled = record.clone();
    shuffled.steps.swap(0, 1);
    assert_eq!(
        Runner::replay(&s, &shuffled).err(),
        Some(RecordError::Mismatch)
    );
}

#[test]
fn malformed_records_are_refused() {
    let s = script("wait 1\n");
    let mut r = Runner::new(&s);
    run(&mut r, &mut Terminal::new(), 1);
    let good = r.into_record().to_text();
    assert!(RunRecord::parse(&good).is_ok());
    let variants = [
        good.replace("rayos-input-record 1", "rayos-input-record 2"),
        good.replace("step 0", "step 1"),
        good.replace("line 1", "line x"),
        good.replace("end finished\n", ""),
        good.replace(
            "end finished",
            "end finished\nstep 1 line 1 time 0 0 region - frame -",
        ),
        good.replace("end finished", "end failed 0 1 boredom"),
        good.replace(" region -", " region 12"),
        good.replace("time 0 10", "time 11 10"),
        good.replace("frame ", "frame  "),
        String::new(),
    ];
    for v in variants {
        assert!(
            matches!(RunRecord::parse(&v), Err(RecordError::Malformed { .. })),
            "{v:?}"
        );
    }
    let failed = RunRecord {
        script: 7,
        steps: vec![],
        outcome: Some(Status::Failed {
            step: 3,
            line: 9,
            why: Failure::Diverged { expected: 0xabc },
        }),
    };
    assert_eq!(RunRecord::parse(&failed.to_text()), Ok(failed));
}

#[test]
fn an_owned_runner_runs_as_a_borrowing_one() {
    let text = "type \"echo Hi!\\n\"\nwait-change 0 8 64 8 timeout 500\nwait 20\n";
    let s = script(text);
    let mut borrowed = Runner::new(&s);
    let mut g1 = Terminal::new();
    let a = run(&mut borrowed, &mut g1, 5);
    let mut owned = Runner::owned(script(text));
    let mut g2 = Terminal::new();
    let b = run(&mut owned, &mut g2, 5);
    assert_eq!(a, b);
    assert_eq!(g1.pixels, g2.pixels);
    assert_eq!(borrowed.record(), owned.record());
    assert_eq!(owned.script(), &s);
    assert_eq!(owned.step(), 3);
}

#[test]
fn the_streamed_hash_is_the_region_hash() {
    let mut t = Terminal::new();
    t.draw_row(1, "streamed");
    let f = t.frame().unwrap();
    for r in [
        Region {
            x: 0,
            y: 0,
            w: W,
            h: H,
        },
        Region {
            x: 3,
            y: 5,
            w: 17,
            h: 9,
        },
        Region {
            x: W - 1,
            y: H - 1,
            w: 1,
            h: 1,
        },
    ] {
        let mut h = RegionHasher::new(r.w, r.h);
        // In strips of any size: the rows' bytes one after the other.
        let bytes: Vec<u8> = region_rows(&f, r).unwrap().flatten().copied().collect();
        assert_eq!(bytes.len(), (r.w * r.h * 4) as usize);
        for strip in bytes.chunks(12) {
            h.pixels(strip);
        }
        assert_eq!(Some(h.finish()), region_hash(&f, r), "{r:?}");
    }
    // Outside, empty, or past the frame's bytes: no rows.
    for r in [
        Region {
            x: 1,
            y: 0,
            w: W,
            h: 1,
        },
        Region {
            x: 0,
            y: H,
            w: 1,
            h: 1,
        },
        Region {
            x: 0,
            y: 0,
            w: 0,
            h: 1,
        },
    ] {
        assert!(region_rows(&f, r).is_none(), "{r:?}");
        assert!(!region_inside(r, W, H));
    }
    let short = FrameView {
        data: &f.data[..f.data.len() - 1],
        ..f
    };
    assert!(region_rows(
        &short,
        Region {
            x: 0,
            y: 0,
            w: W,
            h: H
        }
    )
    .is_none());
}

/// Polls `slot` against `guest` with time going up by 10 per poll until it
/// reports the end.
fn run_slot(slot: &mut ScriptSlot, guest: &mut Terminal, room: usize) -> Done {
    let mut q = Queue {
        events: Vec::new(),
        room,
        sent: Vec::new(),
    };
    let mut now = 0;
    loop {
        let done = slot.poll(now, guest, &mut q);
        for e in q.events.drain(..) {
            guest.input(&e);
        }
        if let Some(d) = done {
            return d;
        }
        now += 10;
        assert!(now < 1_000_000, "runaway");
    }
}

#[test]
fn a_slot_runs_one_script_at_a_time_and_reports_its_end_once() {
    let mut slot = ScriptSlot::new();
    let mut guest = Terminal::new();
    let mut q = Queue {
        events: Vec::new(),
        room: 0,
        sent: Vec::new(),
    };
    // Empty: nothing to report.
    assert_eq!(slot.poll(0, &mut guest, &mut q), None);
    assert_eq!(slot.running(), None);
    // A refused script leaves the slot empty.
    assert_eq!(
        slot.start(b"wait 1\ntype \"unterminated\n"),
        Err(StartError::Refused(crate::script::ParseError {
            line: 2,
            kind: crate::script::ErrorKind::BadString
        }))
    );
    assert_eq!(slot.running(), None);
    let text = "type \"echo slot\\n\"\nwait-change 0 8 64 8 timeout 500\n";
    assert_eq!(slot.start(text.as_bytes()), Ok(2));
    // The sink is full: it stays at step 0, and a second script is refused.
    assert_eq!(slot.poll(0, &mut guest, &mut q), None);
    assert_eq!(slot.running(), Some((0, 2)));
    assert_eq!(
        slot.start(b"wait 1\n"),
        Err(StartError::Busy { step: 0, steps: 2 })
    );
    let done = run_slot(&mut slot, &mut guest, 4);
    assert_eq!(done.status, Status::Finished);
    assert_eq!(done.steps, 2);
    assert_eq!(done.abi_status(), 0);
    assert_eq!(done.record.outcome, Some(Status::Finished));
    assert_eq!(done.record.script, script(text).text_hash);
    // Reported once; the slot is free for the next.
    assert_eq!(slot.poll(1000, &mut guest, &mut q), None);
    assert_eq!(slot.running(), None);
    assert_eq!(slot.start(b"wait-change 0 0 64 8 timeout 30\n"), Ok(1));
    let done = run_slot(&mut slot, &mut guest, 4);
    assert_eq!(done.steps, 0);
    assert_eq!(done.abi_status(), authority_abi::Status::Failed as i64);
    assert_eq!(
        slot.start(b"wait 5\nwait-match 0 30 64 8 0000000000000000\n"),
        Ok(2)
    );
    let done = run_slot(&mut slot, &mut guest, 4);
    assert_eq!(done.steps, 1);
    assert_eq!(
        done.abi_status(),
        authority_abi::Status::InvalidParameters as i64
    );
}

#[test]
fn input_the_guest_never_takes_fails_the_run_after_the_send_timeout() {
    let s = script("wait 5\ntype \"ab\"\n");
    let mut r = Runner::new(&s);
    let mut guest = Terminal::new();
    // Room for 3 events, then nothing more is taken: the step stalls.
    let mut q = Queue {
        events: Vec::new(),
        room: 3,
        sent: Vec::new(),
    };
    let mut now = 0;
    let status = loop {
        match r.poll(now, &mut guest, &mut q) {
            Status::Running { .. } => now += 100,
            done => break done,
        }
        assert!(now < 1_000_000, "runaway");
    };
    assert_eq!(
        status,
        Status::Failed {
            step: 1,
            line: 2,
            why: Failure::Timeout
        }
    );
    assert_eq!(q.sent.len(), 3);
    // Stalled from the poll at 100 (after the wait), failed at the first poll
    // SEND_TIMEOUT_MS later.
    assert_eq!(now, 100 + u64::from(SEND_TIMEOUT_MS));
    // A sink that takes events again resets the clock: a slow guest is fine.
    let mut r = Runner::new(&s);
    let mut q = Queue {
        events: Vec::new(),
        room: 1,
        sent: Vec::new(),
    };
    let mut now = 0;
    let status = loop {
        match r.poll(now, &mut guest, &mut q) {
            Status::Running { .. } => now += 6000,
            done => break done,
        }
        q.events.clear();
        assert!(now < 1_000_000, "runaway");
    };
    assert_eq!(status, Status::Finished);
}
