//! The script parser: the documented format, and every refusal with its line.

extern crate std;

use super::*;
use crate::keymap::usage;
use proptest::prelude::*;
use std::vec;

const EXAMPLE: &str = "\
# log in on the second console
key ctrl+alt+f2\r
type \"Hi!\\n\"

move 320 200
click 320 200
click 1 2 right
wait 500
wait-change 0 0 640 16
wait-match 0 16 64 64 0123456789ABCDEF timeout 3000
";

#[test]
fn the_documented_example_parses() {
    let s = Script::parse(EXAMPLE.as_bytes()).unwrap();
    assert_eq!(s.lines, [2, 3, 5, 6, 7, 8, 9, 10]);
    assert_eq!(
        s.steps,
        vec![
            Step::Chord(vec![usage::LEFT_CTRL, usage::LEFT_ALT, usage::F1 + 1]),
            Step::Type(vec![
                (0x0b, true),
                (0x0c, false),
                (0x1e, true),
                (usage::ENTER, false)
            ]),
            Step::Move { x: 320, y: 200 },
            Step::Click {
                x: 320,
                y: 200,
                button: Button::Left
            },
            Step::Click {
                x: 1,
                y: 2,
                button: Button::Right
            },
            Step::Wait { ms: 500 },
            Step::WaitChange {
                region: Region {
                    x: 0,
                    y: 0,
                    w: 640,
                    h: 16
                },
                timeout_ms: DEFAULT_TIMEOUT_MS
            },
            Step::WaitMatch {
                region: Region {
                    x: 0,
                    y: 16,
                    w: 64,
                    h: 64
                },
                hash: 0x0123_4567_89ab_cdef,
                timeout_ms: 3000
            },
        ]
    );
    assert_eq!(s.text_hash, fnv1a(FNV_OFFSET, EXAMPLE.as_bytes()));
    // Escapes, and a quote inside the text.
    let s = Script::parse(br#"type "a\t\"\\b""#).unwrap();
    assert_eq!(
        s.steps,
        vec![Step::Type(vec![
            (0x04, false),
            (usage::TAB, false),
            (0x34, true),
            (0x31, false),
            (0x05, false)
        ])]
    );
    assert_eq!(Script::parse(b"").unwrap().steps, vec![]);
}

#[test]
fn every_refusal_names_its_line() {
    use ErrorKind::*;
    let cases: &[(&str, ErrorKind)] = &[
        ("jump 1 2", UnknownCommand),
        ("move 1", MissingArgument),
        ("move 1 2 3", ExtraArgument),
        ("move -1 2", BadNumber),
        ("move +1 2", BadNumber),
        ("move 1x 2", BadNumber),
        ("move 16384 0", OutOfRange),
        ("move 99999999999 0", BadNumber),
        ("click 1 2 left extra", ExtraArgument),
        ("click 1 2 nose", UnknownButton),
        ("wait", MissingArgument),
        ("wait 600001", OutOfRange),
        ("wait-change 0 0 0 10", OutOfRange),
        ("wait-change 16000 0 400 10", OutOfRange),
        ("wait-change 0 0 10 10 timeout", MissingArgument),
        ("wait-change 0 0 10 10 timeout 0", OutOfRange),
        ("wait-change 0 0 10 10 later 5", ExtraArgument),
        ("wait-match 0 0 10 10", MissingArgument),
        ("wait-match 0 0 10 10 0123", BadNumber),
        ("wait-match 0 0 10 10 0123456789abcdeg", BadNumber),
        ("type hello", BadString),
        ("type \"\"", BadString),
        ("type \"", BadString),
        ("type \"a\"b\"", BadString),
        ("type \"a\\q\"", BadString),
        ("type \"caf\u{e9}\"", Untypeable('\u{e9}')),
        ("type \"a\rb\"", Untypeable('\r')),
        ("key", MissingArgument),
        ("key ctrl+", UnknownKey),
        ("key hyper", UnknownKey),
        ("key a+a", BadChord),
        ("key ctrl+alt+shift+meta+rctrl+ralt+a", BadChord),
        ("key ctrl alt", ExtraArgument),
    ];
    for &(line, kind) in cases {
        let text = std::format!("# comment\nwait 1\n{line}\nwait 2\n");
        assert_eq!(
            Script::parse(text.as_bytes()),
            Err(ParseError { line: 3, kind }),
            "{line:?}"
        );
    }
}

#[test]
fn limits() {
    let whole = |kind| Err(ParseError { line: 0, kind });
    assert_eq!(
        Script::parse(&vec![b'#'; MAX_SCRIPT_BYTES + 1]),
        whole(ErrorKind::TooLong)
    );
    assert_eq!(Script::parse(b"wait 1\n\xff\n"), whole(ErrorKind::NotUtf8));
    let many = "wait 1\n".repeat(MAX_STEPS + 1);
    assert_eq!(
        Script::parse(many.as_bytes()),
        Err(ParseError {
            line: MAX_STEPS as u32 + 1,
            kind: ErrorKind::TooManySteps
        })
    );
    assert_eq!(
        Script::parse("wait 1\n".repeat(MAX_STEPS).as_bytes())
            .unwrap()
            .steps
            .len(),
        MAX_STEPS
    );
    let long = std::format!("type \"{}\"", "x".repeat(MAX_TEXT + 1));
    assert_eq!(
        Script::parse(long.as_bytes()),
        Err(ParseError {
            line: 1,
            kind: ErrorKind::TextTooLong
        })
    );
    let fits = std::format!("type \"{}\"", "x".repeat(MAX_TEXT));
    assert!(Script::parse(fits.as_bytes()).is_ok());
}

proptest! {
    /// Any bytes: a script within the limits, or a refusal; never a panic.
    #[test]
    fn any_bytes_parse_or_are_refused(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(s) = Script::parse(&bytes) {
            prop_assert!(s.steps.len() <= MAX_STEPS);
            prop_assert_eq!(s.steps.len(), s.lines.len());
        }
    }

    /// Lines built from the format's own words, shuffled: same property, deeper in.
    #[test]
    fn word_salad(words in proptest::collection::vec(
        prop::sample::select(vec![
            "type", "key", "move", "click", "wait", "wait-change", "wait-match", "timeout",
            "\"a\"", "ctrl+a", "0", "1", "16384", "ffffffffffffffff", "left", "\n", "#",
        ]),
        0..40,
    )) {
        let text = words.join(" ");
        if let Ok(s) = Script::parse(text.as_bytes()) {
            prop_assert_eq!(s.steps.len(), s.lines.len());
        }
    }
}

/// The `text` blocks of docs/console.md's "Input scripts" section: the example
/// script parses, and the example record reads.
#[test]
fn the_examples_in_the_docs_are_valid() {
    let doc = include_str!("../../docs/console.md");
    let section = doc.split("## Input scripts").nth(1).unwrap();
    let blocks: Vec<&str> = section
        .split("```text\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    assert_eq!(blocks.len(), 2);
    let s = Script::parse(blocks[0].as_bytes()).unwrap();
    assert_eq!(s.steps.len(), 5);
    let r = crate::run::RunRecord::parse(blocks[1]).unwrap();
    assert_eq!(r.steps.len(), 2);
}
