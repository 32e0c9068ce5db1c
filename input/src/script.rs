//! Input scripts: the text format (documented in `docs/console.md`, "input scripts")
//! and its validating parser. A script is hostile input (it arrives through the
//! authority ABI): every limit is checked here, so running it only ever meets what
//! cannot be known before (the frame's size).
//!
//! ```text
//! # one step per line; a line starting with # is a comment
//! type "ls -l\n"                      # text on a US keyboard
//! key ctrl+alt+f2                     # a chord
//! move 320 200                        # pointer to a guest pixel
//! click 320 200 right                 # click there (left when not named)
//! wait 500                            # milliseconds
//! wait-change 0 0 640 16 timeout 3000 # until the region's pixels change
//! wait-match 0 0 64 64 0123456789abcdef timeout 3000  # until they hash to this
//! ```

use alloc::vec::Vec;

use authority_abi::input::Button;

use crate::keymap::{key_by_name, us_layout};

/// Longest script in bytes (the authority ABI's RUN_INPUT_SCRIPT limit).
pub const MAX_SCRIPT_BYTES: usize = authority_abi::call::MAX_SCRIPT as usize;
/// Most steps in one script.
pub const MAX_STEPS: usize = 1024;
/// Most characters one `type` step types.
pub const MAX_TEXT: usize = 1024;
/// Most keys in one chord.
pub const MAX_CHORD: usize = 6;
/// Longest wait or timeout: ten minutes.
pub const MAX_WAIT_MS: u32 = 600_000;
/// Timeout of a `wait-change` / `wait-match` that names none.
pub const DEFAULT_TIMEOUT_MS: u32 = 10_000;
/// Largest guest coordinate or region size a script may name.
pub const MAX_COORD: u32 = 16384;

/// A rectangle of the guest's screen, in guest pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

/// One validated step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Key strokes: HID usage and whether Shift is held for it.
    Type(Vec<(u8, bool)>),
    /// HID usages pressed in order, released in reverse.
    Chord(Vec<u8>),
    Move {
        x: u32,
        y: u32,
    },
    Click {
        x: u32,
        y: u32,
        button: Button,
    },
    Wait {
        ms: u32,
    },
    WaitChange {
        region: Region,
        timeout_ms: u32,
    },
    WaitMatch {
        region: Region,
        hash: u64,
        timeout_ms: u32,
    },
}

/// A parsed script: its steps, the line each came from, and the hash of its text
/// (which a run record names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    pub steps: Vec<Step>,
    pub lines: Vec<u32>,
    pub text_hash: u64,
}

/// Why a script was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Longer than [`MAX_SCRIPT_BYTES`].
    TooLong,
    /// Not UTF-8.
    NotUtf8,
    /// More than [`MAX_STEPS`] steps.
    TooManySteps,
    UnknownCommand,
    MissingArgument,
    ExtraArgument,
    /// Not a decimal number (or hexadecimal hash).
    BadNumber,
    /// A number beyond its limit, or an empty region.
    OutOfRange,
    /// `type` text not in double quotes, a bad escape, or empty.
    BadString,
    /// `type` text longer than [`MAX_TEXT`].
    TextTooLong,
    /// A character the US layout cannot type.
    Untypeable(char),
    UnknownKey,
    /// A key named twice in a chord, or more than [`MAX_CHORD`] keys.
    BadChord,
    UnknownButton,
}

/// A refused script: the first problem and its line (1-based; 0 for the whole script).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError {
    pub line: u32,
    pub kind: ErrorKind,
}

/// FNV-1a, 64-bit: the hash of script texts and of frame regions.
pub fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes
        .iter()
        .fold(hash, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME))
}

/// FNV-1a's starting value.
pub const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;

fn number(tok: Option<&str>, max: u32) -> Result<u32, ErrorKind> {
    let tok = tok.ok_or(ErrorKind::MissingArgument)?;
    if tok.is_empty() || tok.len() > 10 || !tok.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ErrorKind::BadNumber);
    }
    let v: u64 = tok.parse().map_err(|_| ErrorKind::BadNumber)?;
    u32::try_from(v)
        .ok()
        .filter(|&v| v <= max)
        .ok_or(ErrorKind::OutOfRange)
}

fn region<'a>(toks: &mut impl Iterator<Item = &'a str>) -> Result<Region, ErrorKind> {
    let x = number(toks.next(), MAX_COORD - 1)?;
    let y = number(toks.next(), MAX_COORD - 1)?;
    let w = number(toks.next(), MAX_COORD)?;
    let h = number(toks.next(), MAX_COORD)?;
    if w == 0 || h == 0 || x + w > MAX_COORD || y + h > MAX_COORD {
        return Err(ErrorKind::OutOfRange);
    }
    Ok(Region { x, y, w, h })
}

/// `timeout MS` or nothing.
fn timeout<'a>(toks: &mut impl Iterator<Item = &'a str>) -> Result<u32, ErrorKind> {
    match toks.next() {
        None => Ok(DEFAULT_TIMEOUT_MS),
        Some("timeout") => {
            let ms = number(toks.next(), MAX_WAIT_MS)?;
            if ms == 0 {
                return Err(ErrorKind::OutOfRange);
            }
            Ok(ms)
        }
        Some(_) => Err(ErrorKind::ExtraArgument),
    }
}

/// The key strokes of a quoted string (`\n`, `\t`, `\"`, `\\` escapes).
fn text(rest: &str) -> Result<Vec<(u8, bool)>, ErrorKind> {
    let inner = rest
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .filter(|_| rest.len() >= 2)
        .ok_or(ErrorKind::BadString)?;
    let mut out = Vec::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        let c = match c {
            '\\' => match chars.next() {
                Some('n') => '\n',
                Some('t') => '\t',
                Some('"') => '"',
                Some('\\') => '\\',
                _ => return Err(ErrorKind::BadString),
            },
            '"' => return Err(ErrorKind::BadString),
            c => c,
        };
        if out.len() == MAX_TEXT {
            return Err(ErrorKind::TextTooLong);
        }
        out.push(us_layout(c).ok_or(ErrorKind::Untypeable(c))?);
    }
    if out.is_empty() {
        return Err(ErrorKind::BadString);
    }
    Ok(out)
}

fn chord(spec: Option<&str>) -> Result<Vec<u8>, ErrorKind> {
    let spec = spec.ok_or(ErrorKind::MissingArgument)?;
    let mut keys = Vec::new();
    for name in spec.split('+') {
        let u = key_by_name(name).ok_or(ErrorKind::UnknownKey)?;
        if keys.contains(&u) || keys.len() == MAX_CHORD {
            return Err(ErrorKind::BadChord);
        }
        keys.push(u);
    }
    Ok(keys)
}

fn button(tok: Option<&str>) -> Result<Button, ErrorKind> {
    Ok(match tok {
        None | Some("left") => Button::Left,
        Some("right") => Button::Right,
        Some("middle") => Button::Middle,
        Some("back") => Button::Back,
        Some("forward") => Button::Forward,
        Some(_) => return Err(ErrorKind::UnknownButton),
    })
}

fn hash(tok: Option<&str>) -> Result<u64, ErrorKind> {
    let tok = tok.ok_or(ErrorKind::MissingArgument)?;
    if tok.len() != 16 || !tok.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(ErrorKind::BadNumber);
    }
    u64::from_str_radix(tok, 16).map_err(|_| ErrorKind::BadNumber)
}

fn step(line: &str) -> Result<Option<Step>, ErrorKind> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (cmd, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    if cmd == "type" {
        return Ok(Some(Step::Type(text(rest)?)));
    }
    let mut toks = rest.split_whitespace();
    let s = match cmd {
        "key" => Step::Chord(chord(toks.next())?),
        "move" => Step::Move {
            x: number(toks.next(), MAX_COORD - 1)?,
            y: number(toks.next(), MAX_COORD - 1)?,
        },
        "click" => Step::Click {
            x: number(toks.next(), MAX_COORD - 1)?,
            y: number(toks.next(), MAX_COORD - 1)?,
            button: button(toks.next())?,
        },
        "wait" => Step::Wait {
            ms: number(toks.next(), MAX_WAIT_MS)?,
        },
        "wait-change" => Step::WaitChange {
            region: region(&mut toks)?,
            timeout_ms: timeout(&mut toks)?,
        },
        "wait-match" => Step::WaitMatch {
            region: region(&mut toks)?,
            hash: hash(toks.next())?,
            timeout_ms: timeout(&mut toks)?,
        },
        _ => return Err(ErrorKind::UnknownCommand),
    };
    if toks.next().is_some() {
        return Err(ErrorKind::ExtraArgument);
    }
    Ok(Some(s))
}

impl Script {
    /// Parses and validates `bytes`; the first problem refuses the whole script.
    pub fn parse(bytes: &[u8]) -> Result<Script, ParseError> {
        let whole = |kind| ParseError { line: 0, kind };
        if bytes.len() > MAX_SCRIPT_BYTES {
            return Err(whole(ErrorKind::TooLong));
        }
        let text = core::str::from_utf8(bytes).map_err(|_| whole(ErrorKind::NotUtf8))?;
        let mut steps = Vec::new();
        let mut lines = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let n = i as u32 + 1;
            let Some(s) = step(line).map_err(|kind| ParseError { line: n, kind })? else {
                continue;
            };
            if steps.len() == MAX_STEPS {
                return Err(ParseError {
                    line: n,
                    kind: ErrorKind::TooManySteps,
                });
            }
            steps.push(s);
            lines.push(n);
        }
        Ok(Script {
            steps,
            lines,
            text_hash: fnv1a(FNV_OFFSET, bytes),
        })
    }
}

#[cfg(test)]
#[path = "script_tests.rs"]
mod tests;
