//! Monitor commands: one line of words separated by blanks.
//!
//! ```text
//! vm list                       vm snapshot NAME TAG [--disk]
//! vm pause NAME                 vm rollback NAME TAG
//! vm resume NAME                vm snapshots NAME
//! vm suspend NAME               vm delete-snapshot NAME TAG
//! host shutdown                 help
//! display present NAME panel X Y W H
//! display present NAME fullscreen
//! display present NAME quad X0 Y0 X1 Y1 X2 Y2 X3 Y3
//! display hide NAME             display throttle NAME FPS
//! display freeze NAME           display mode NAME W H
//! display unfreeze NAME         display overlay [TEXT]
//! display status
//! input type NAME "TEXT"        input key NAME CHORD
//! input pointer NAME X Y        input click NAME X Y [BUTTON]
//! input gaze NAME X Y [MS]      input interactive NAME on|off
//! usb detach NAME               usb attach NAME
//! ```
//!
//! A VM name is 1..=[`NAME_MAX`] printable ASCII characters (the registry's
//! limit); a snapshot tag is 1..=[`TAG_MAX`] of `A-Z a-z 0-9 . _ -`. A word
//! starting with `--` is an option; only `vm snapshot` has one (`--disk`).

use core::fmt;

/// Longest VM name (the registry's `MAX_NAME_LEN`).
pub const NAME_MAX: usize = 64;
/// Longest snapshot tag.
pub const TAG_MAX: usize = 32;
/// Most words a command has (`display present NAME quad` and eight numbers).
const MAX_WORDS: usize = 12;

/// Where a snapshot is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotStore {
    /// In hypervisor memory: fast, gone at host power-off.
    Memory,
    /// On the system disk: survives host reboots (`--disk`).
    Disk,
}

/// Where `display present` puts a VM's screen (output pixels).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayPlacement {
    /// Top-left corner and size (scaled when the size is not the guest's mode).
    Panel { x: i32, y: i32, w: u32, h: u32 },
    /// As large as fits, centred, aspect ratio kept.
    Fullscreen,
    /// The screen's top-left, top-right, bottom-right, bottom-left corners.
    Quad([(i32, i32); 4]),
}

/// A change to one VM's presentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayChange {
    Present(DisplayPlacement),
    Hide,
    Freeze,
    Unfreeze,
    Throttle {
        fps: u32,
    },
    /// The guest's virtual monitor mode.
    Mode {
        width: u32,
        height: u32,
    },
}

/// A mouse button (`input click`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MouseButton {
    Left,
    Right,
    Middle,
    Back,
    Forward,
}

/// Synthetic input for one VM (`input …`); positions are physical-display pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputAction<'a> {
    /// Text in double quotes with the input scripts' escapes (`\n`, `\t`, `\"`,
    /// `\\`), as the rest of the line; the implementation validates it.
    Type(&'a str),
    /// Key names joined by `+` (`ctrl+alt+f2`), validated by the implementation.
    Key(&'a str),
    Pointer {
        x: i32,
        y: i32,
    },
    Click {
        x: i32,
        y: i32,
        button: MouseButton,
    },
    /// A gaze point held for `ms` milliseconds (0: one sample).
    Gaze {
        x: i32,
        y: i32,
        ms: u32,
    },
    Interactive(bool),
}

/// Longest `input gaze` hold, in milliseconds.
pub const GAZE_MS_MAX: u32 = 10_000;

/// One parsed command; names and tags borrow the line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    Help,
    VmList,
    VmPause(&'a str),
    VmResume(&'a str),
    VmSuspend(&'a str),
    VmSnapshot {
        vm: &'a str,
        tag: &'a str,
        store: SnapshotStore,
    },
    VmRollback {
        vm: &'a str,
        tag: &'a str,
    },
    VmSnapshots(&'a str),
    VmDeleteSnapshot {
        vm: &'a str,
        tag: &'a str,
    },
    HostShutdown,
    Display {
        vm: &'a str,
        change: DisplayChange,
    },
    /// The overlay line's text (empty: none); the rest of the line, blanks kept.
    DisplayOverlay(&'a str),
    DisplayStatus,
    Input {
        vm: &'a str,
        action: InputAction<'a>,
    },
    Usb {
        vm: &'a str,
        op: UsbOp,
    },
}

impl<'a> Command<'a> {
    /// The VM the command acts on (`None`: the host, or every VM).
    pub fn vm(&self) -> Option<&'a str> {
        match *self {
            Command::VmPause(vm)
            | Command::VmResume(vm)
            | Command::VmSuspend(vm)
            | Command::VmSnapshots(vm)
            | Command::VmSnapshot { vm, .. }
            | Command::VmRollback { vm, .. }
            | Command::VmDeleteSnapshot { vm, .. }
            | Command::Display { vm, .. }
            | Command::Input { vm, .. }
            | Command::Usb { vm, .. } => Some(vm),
            Command::Help
            | Command::VmList
            | Command::HostShutdown
            | Command::DisplayOverlay(_)
            | Command::DisplayStatus => None,
        }
    }
}

/// What a `usb` command does to a VM's USB devices (its xHCI controller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UsbOp {
    /// Unplug the mass-storage device (`usb detach`).
    DetachStorage,
    /// Plug it back in (`usb attach`).
    AttachStorage,
}

/// Why a line is not a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError<'a> {
    /// The first word is not `vm`, `host` or `help`.
    UnknownCommand(&'a str),
    /// `vm` without a subcommand, or with an unknown one.
    UnknownVmCommand(Option<&'a str>),
    /// `host` without a subcommand, or with an unknown one.
    UnknownHostCommand(Option<&'a str>),
    /// `command` needs `what` (`NAME`, `TAG`).
    Missing {
        command: &'static str,
        what: &'static str,
    },
    /// `command` takes nothing more, but got `word`.
    Extra {
        command: &'static str,
        word: &'a str,
    },
    /// An option `command` does not have.
    UnknownOption {
        command: &'static str,
        option: &'a str,
    },
    /// A VM name longer than [`NAME_MAX`].
    NameTooLong(&'a str),
    /// A tag longer than [`TAG_MAX`] or with a character outside `A-Za-z0-9._-`.
    BadTag(&'a str),
    /// `display` without a subcommand, or with an unknown one.
    UnknownDisplayCommand(Option<&'a str>),
    /// `display present NAME` with a placement other than panel, fullscreen, quad.
    UnknownPlacement(Option<&'a str>),
    /// `input` without a subcommand, or with an unknown one.
    UnknownInputCommand(Option<&'a str>),
    /// `what` of `command` is not one of the words it takes.
    BadWord {
        command: &'static str,
        what: &'static str,
        word: &'a str,
    },
    /// `usb` without a subcommand, or with an unknown one.
    UnknownUsbCommand(Option<&'a str>),
    /// `what` of `command` is not a number in its range.
    BadNumber {
        command: &'static str,
        what: &'static str,
        word: &'a str,
    },
}

impl fmt::Display for ParseError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::UnknownCommand(w) => {
                write!(f, "unknown command `{w}` (try `help`)")
            }
            ParseError::UnknownVmCommand(None) => write!(
                f,
                "`vm` needs a subcommand: list, pause, resume, suspend, snapshot, rollback, snapshots, delete-snapshot"
            ),
            ParseError::UnknownVmCommand(Some(w)) => write!(f, "unknown command `vm {w}` (try `help`)"),
            ParseError::UnknownHostCommand(None) => write!(f, "`host` needs a subcommand: shutdown"),
            ParseError::UnknownHostCommand(Some(w)) => {
                write!(f, "unknown command `host {w}` (try `help`)")
            }
            ParseError::Missing { command, what } => write!(f, "`{command}` needs {what}"),
            ParseError::Extra { command, word } => {
                write!(f, "`{command}` takes nothing more, not `{word}`")
            }
            ParseError::UnknownOption { command, option } => {
                write!(f, "`{command}` has no option `{option}`")
            }
            ParseError::NameTooLong(n) => write!(
                f,
                "VM name of {} characters is longer than {NAME_MAX}",
                n.len()
            ),
            ParseError::UnknownDisplayCommand(None) => write!(
                f,
                "`display` needs a subcommand: present, hide, freeze, unfreeze, throttle, mode, overlay, status"
            ),
            ParseError::UnknownDisplayCommand(Some(w)) => {
                write!(f, "unknown command `display {w}` (try `help`)")
            }
            ParseError::UnknownPlacement(None) => write!(
                f,
                "`display present` needs a placement: panel X Y W H, fullscreen, quad X0 Y0 .. X3 Y3"
            ),
            ParseError::UnknownPlacement(Some(w)) => write!(
                f,
                "unknown placement `{w}`: panel X Y W H, fullscreen, quad X0 Y0 .. X3 Y3"
            ),
            ParseError::UnknownUsbCommand(None) => {
                write!(f, "`usb` needs a subcommand: detach, attach, key")
            }
            ParseError::UnknownUsbCommand(Some(w)) => {
                write!(f, "unknown command `usb {w}` (try `help`)")
            }
            ParseError::BadNumber {
                command,
                what,
                word,
            } => write!(f, "`{command}`: {what} `{word}` is not a number in range"),
            ParseError::UnknownInputCommand(None) => write!(
                f,
                "`input` needs a subcommand: type, key, pointer, click, gaze, interactive"
            ),
            ParseError::UnknownInputCommand(Some(w)) => {
                write!(f, "unknown command `input {w}` (try `help`)")
            }
            ParseError::BadWord {
                command,
                what,
                word,
            } => write!(f, "`{command}`: {what} `{word}` is not one of its words"),
            ParseError::BadTag(t) => write!(
                f,
                "bad snapshot tag `{t}`: 1 to {TAG_MAX} characters of A-Z a-z 0-9 . _ -"
            ),
        }
    }
}

/// The words of a line after the command words: positional arguments and options.
struct Args<'w, 'a> {
    command: &'static str,
    words: &'w [&'a str],
}

impl<'a> Args<'_, 'a> {
    /// Positional argument `i` (`what` names it in the error).
    fn positional(&self, i: usize, what: &'static str) -> Result<&'a str, ParseError<'a>> {
        self.words
            .iter()
            .filter(|w| !w.starts_with("--"))
            .nth(i)
            .copied()
            .ok_or(ParseError::Missing {
                command: self.command,
                what,
            })
    }

    /// Refuses positionals past `count` and options not in `options`.
    fn only(&self, count: usize, options: &[&str]) -> Result<(), ParseError<'a>> {
        if let Some(o) = self
            .words
            .iter()
            .find(|w| w.starts_with("--") && !options.contains(w))
        {
            return Err(ParseError::UnknownOption {
                command: self.command,
                option: o,
            });
        }
        match self
            .words
            .iter()
            .filter(|w| !w.starts_with("--"))
            .nth(count)
        {
            Some(word) => Err(ParseError::Extra {
                command: self.command,
                word,
            }),
            None => Ok(()),
        }
    }

    fn has(&self, option: &str) -> bool {
        self.words.contains(&option)
    }

    fn name(&self, i: usize) -> Result<&'a str, ParseError<'a>> {
        let n = self.positional(i, "a VM NAME")?;
        if n.len() > NAME_MAX {
            return Err(ParseError::NameTooLong(n));
        }
        Ok(n)
    }

    /// Positional `i` as a number of type `T` (`what` names it).
    fn number<T: core::str::FromStr>(
        &self,
        i: usize,
        what: &'static str,
    ) -> Result<T, ParseError<'a>> {
        let w = self.positional(i, what)?;
        w.parse().map_err(|_| ParseError::BadNumber {
            command: self.command,
            what,
            word: w,
        })
    }

    fn tag(&self, i: usize) -> Result<&'a str, ParseError<'a>> {
        let t = self.positional(i, "a snapshot TAG")?;
        let good = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-');
        if t.len() > TAG_MAX || !t.bytes().all(good) {
            return Err(ParseError::BadTag(t));
        }
        Ok(t)
    }
}

/// Parses one non-empty line. Words are separated by runs of blanks.
pub fn parse(line: &str) -> Result<Command<'_>, ParseError<'_>> {
    let mut words = [""; MAX_WORDS + 1];
    let mut n = 0;
    for w in line.split_ascii_whitespace() {
        if n == words.len() {
            break;
        }
        words[n] = w;
        n += 1;
    }
    let words = &words[..n];
    let Some((&first, rest)) = words.split_first() else {
        return Err(ParseError::UnknownCommand(""));
    };
    match first {
        "help" => extra("help", rest).map(|()| Command::Help),
        "host" => match rest.split_first() {
            Some((&"shutdown", more)) => {
                extra("host shutdown", more).map(|()| Command::HostShutdown)
            }
            other => Err(ParseError::UnknownHostCommand(other.map(|(w, _)| *w))),
        },
        "vm" => {
            let Some((&sub, more)) = rest.split_first() else {
                return Err(ParseError::UnknownVmCommand(None));
            };
            vm(sub, more)
        }
        "display" => {
            let Some((&sub, more)) = rest.split_first() else {
                return Err(ParseError::UnknownDisplayCommand(None));
            };
            if sub == "overlay" {
                // The text is the rest of the line, however many words.
                let text = line
                    .trim_start()
                    .strip_prefix("display")
                    .map(str::trim_start)
                    .and_then(|l| l.strip_prefix("overlay"))
                    .unwrap_or("")
                    .trim();
                return Ok(Command::DisplayOverlay(text));
            }
            display(sub, more)
        }
        "input" => {
            let Some((&sub, more)) = rest.split_first() else {
                return Err(ParseError::UnknownInputCommand(None));
            };
            input(line, sub, more)
        }
        "usb" => {
            let Some((&sub, more)) = rest.split_first() else {
                return Err(ParseError::UnknownUsbCommand(None));
            };
            usb(sub, more)
        }
        other => Err(ParseError::UnknownCommand(other)),
    }
}

/// Refuses any word in `rest` after `command`.
fn extra<'a>(command: &'static str, rest: &[&'a str]) -> Result<(), ParseError<'a>> {
    match rest.first() {
        Some(word) => Err(ParseError::Extra { command, word }),
        None => Ok(()),
    }
}

fn vm<'a>(sub: &'a str, words: &[&'a str]) -> Result<Command<'a>, ParseError<'a>> {
    let command: &'static str = match sub {
        "list" => "vm list",
        "pause" => "vm pause",
        "resume" => "vm resume",
        "suspend" => "vm suspend",
        "snapshot" => "vm snapshot",
        "rollback" => "vm rollback",
        "snapshots" => "vm snapshots",
        "delete-snapshot" => "vm delete-snapshot",
        other => return Err(ParseError::UnknownVmCommand(Some(other))),
    };
    let a = Args { command, words };
    Ok(match sub {
        "list" => {
            a.only(0, &[])?;
            Command::VmList
        }
        "pause" | "resume" | "suspend" | "snapshots" => {
            a.only(1, &[])?;
            let name = a.name(0)?;
            match sub {
                "pause" => Command::VmPause(name),
                "resume" => Command::VmResume(name),
                "suspend" => Command::VmSuspend(name),
                _ => Command::VmSnapshots(name),
            }
        }
        "snapshot" => {
            a.only(2, &["--disk"])?;
            let (vm, tag) = (a.name(0)?, a.tag(1)?);
            let store = if a.has("--disk") {
                SnapshotStore::Disk
            } else {
                SnapshotStore::Memory
            };
            Command::VmSnapshot { vm, tag, store }
        }
        _ => {
            a.only(2, &[])?;
            let (vm, tag) = (a.name(0)?, a.tag(1)?);
            if sub == "rollback" {
                Command::VmRollback { vm, tag }
            } else {
                Command::VmDeleteSnapshot { vm, tag }
            }
        }
    })
}

fn usb<'a>(sub: &'a str, words: &[&'a str]) -> Result<Command<'a>, ParseError<'a>> {
    let (command, op): (&'static str, UsbOp) = match sub {
        "detach" => ("usb detach", UsbOp::DetachStorage),
        "attach" => ("usb attach", UsbOp::AttachStorage),
        other => return Err(ParseError::UnknownUsbCommand(Some(other))),
    };
    let a = Args { command, words };
    a.only(1, &[])?;
    Ok(Command::Usb { vm: a.name(0)?, op })
}

fn display<'a>(sub: &'a str, words: &[&'a str]) -> Result<Command<'a>, ParseError<'a>> {
    let command: &'static str = match sub {
        "present" => "display present",
        "hide" => "display hide",
        "freeze" => "display freeze",
        "unfreeze" => "display unfreeze",
        "throttle" => "display throttle",
        "mode" => "display mode",
        "status" => "display status",
        other => return Err(ParseError::UnknownDisplayCommand(Some(other))),
    };
    let a = Args { command, words };
    let change = match sub {
        "status" => {
            a.only(0, &[])?;
            return Ok(Command::DisplayStatus);
        }
        "hide" | "freeze" | "unfreeze" => {
            a.only(1, &[])?;
            match sub {
                "hide" => DisplayChange::Hide,
                "freeze" => DisplayChange::Freeze,
                _ => DisplayChange::Unfreeze,
            }
        }
        "throttle" => {
            a.only(2, &[])?;
            DisplayChange::Throttle {
                fps: a.number(1, "FPS")?,
            }
        }
        "mode" => {
            a.only(3, &[])?;
            DisplayChange::Mode {
                width: a.number(1, "W")?,
                height: a.number(2, "H")?,
            }
        }
        _ => {
            let how = words
                .iter()
                .filter(|w| !w.starts_with("--"))
                .nth(1)
                .copied();
            let placement = match how {
                Some("panel") => {
                    a.only(6, &[])?;
                    DisplayPlacement::Panel {
                        x: a.number(2, "X")?,
                        y: a.number(3, "Y")?,
                        w: a.number(4, "W")?,
                        h: a.number(5, "H")?,
                    }
                }
                Some("fullscreen") => {
                    a.only(2, &[])?;
                    DisplayPlacement::Fullscreen
                }
                Some("quad") => {
                    a.only(10, &[])?;
                    const XS: [&str; 4] = ["X0", "X1", "X2", "X3"];
                    const YS: [&str; 4] = ["Y0", "Y1", "Y2", "Y3"];
                    let mut q = [(0, 0); 4];
                    for (i, p) in q.iter_mut().enumerate() {
                        *p = (a.number(2 + 2 * i, XS[i])?, a.number(3 + 2 * i, YS[i])?);
                    }
                    DisplayPlacement::Quad(q)
                }
                other => {
                    a.name(0)?;
                    return Err(ParseError::UnknownPlacement(other));
                }
            };
            DisplayChange::Present(placement)
        }
    };
    Ok(Command::Display {
        vm: a.name(0)?,
        change,
    })
}

/// The rest of `line` after its first `n` words, blanks inside kept.
fn rest_after(line: &str, n: usize) -> &str {
    let mut rest = line.trim_start();
    for _ in 0..n {
        let end = rest
            .find(|c: char| c.is_ascii_whitespace())
            .unwrap_or(rest.len());
        rest = rest[end..].trim_start();
    }
    rest.trim_end()
}

fn input<'a>(
    line: &'a str,
    sub: &'a str,
    words: &[&'a str],
) -> Result<Command<'a>, ParseError<'a>> {
    let command: &'static str = match sub {
        "type" => "input type",
        "key" => "input key",
        "pointer" => "input pointer",
        "click" => "input click",
        "gaze" => "input gaze",
        "interactive" => "input interactive",
        other => return Err(ParseError::UnknownInputCommand(Some(other))),
    };
    let a = Args { command, words };
    let vm = a.name(0)?;
    let action = match sub {
        "type" => {
            a.positional(1, "\"TEXT\"")?;
            InputAction::Type(rest_after(line, 3))
        }
        "key" => {
            a.only(2, &[])?;
            InputAction::Key(a.positional(1, "a CHORD")?)
        }
        "pointer" => {
            a.only(3, &[])?;
            InputAction::Pointer {
                x: a.number(1, "X")?,
                y: a.number(2, "Y")?,
            }
        }
        "click" => {
            a.only(4, &[])?;
            let button = match a.positional(3, "BUTTON") {
                Err(_) | Ok("left") => MouseButton::Left,
                Ok("right") => MouseButton::Right,
                Ok("middle") => MouseButton::Middle,
                Ok("back") => MouseButton::Back,
                Ok("forward") => MouseButton::Forward,
                Ok(word) => {
                    return Err(ParseError::BadWord {
                        command,
                        what: "BUTTON (left, right, middle, back, forward)",
                        word,
                    })
                }
            };
            InputAction::Click {
                x: a.number(1, "X")?,
                y: a.number(2, "Y")?,
                button,
            }
        }
        "gaze" => {
            a.only(4, &[])?;
            let ms = match a.positional(3, "MS") {
                Err(_) => 0,
                Ok(_) => a.number(3, "MS")?,
            };
            if ms > GAZE_MS_MAX {
                return Err(ParseError::BadNumber {
                    command,
                    what: "MS",
                    word: a.positional(3, "MS")?,
                });
            }
            InputAction::Gaze {
                x: a.number(1, "X")?,
                y: a.number(2, "Y")?,
                ms,
            }
        }
        _ => {
            a.only(2, &[])?;
            InputAction::Interactive(match a.positional(1, "on or off")? {
                "on" => true,
                "off" => false,
                word => {
                    return Err(ParseError::BadWord {
                        command,
                        what: "on or off",
                        word,
                    })
                }
            })
        }
    };
    Ok(Command::Input { vm, action })
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    #[test]
    fn a_command_names_the_vm_it_acts_on() {
        for (line, vm) in [
            ("vm pause a", Some("a")),
            ("vm snapshot b t1 --disk", Some("b")),
            ("vm delete-snapshot c t", Some("c")),
            ("display hide d", Some("d")),
            ("display present e fullscreen", Some("e")),
            ("usb detach f", Some("f")),
            ("vm list", None),
            ("host shutdown", None),
            ("display status", None),
            ("display overlay x y", None),
            ("help", None),
        ] {
            assert_eq!(parse(line).unwrap().vm(), vm, "{line}");
        }
    }

    #[test]
    fn every_command_parses() {
        use Command::*;
        for (line, want) in [
            ("help", Help),
            ("vm list", VmList),
            ("  vm   list  ", VmList),
            ("vm pause linux", VmPause("linux")),
            ("vm resume linux", VmResume("linux")),
            ("vm suspend linux", VmSuspend("linux")),
            (
                "vm snapshot linux before-upgrade",
                VmSnapshot {
                    vm: "linux",
                    tag: "before-upgrade",
                    store: SnapshotStore::Memory,
                },
            ),
            (
                "vm snapshot linux t1 --disk",
                VmSnapshot {
                    vm: "linux",
                    tag: "t1",
                    store: SnapshotStore::Disk,
                },
            ),
            (
                "vm snapshot --disk linux t1",
                VmSnapshot {
                    vm: "linux",
                    tag: "t1",
                    store: SnapshotStore::Disk,
                },
            ),
            (
                "vm rollback linux t1",
                VmRollback {
                    vm: "linux",
                    tag: "t1",
                },
            ),
            ("vm snapshots linux", VmSnapshots("linux")),
            (
                "vm delete-snapshot linux v1.2_x",
                VmDeleteSnapshot {
                    vm: "linux",
                    tag: "v1.2_x",
                },
            ),
            ("host shutdown", HostShutdown),
            (
                "display present linux panel 10 -20 320 240",
                Display {
                    vm: "linux",
                    change: DisplayChange::Present(DisplayPlacement::Panel {
                        x: 10,
                        y: -20,
                        w: 320,
                        h: 240,
                    }),
                },
            ),
            (
                "display present linux fullscreen",
                Display {
                    vm: "linux",
                    change: DisplayChange::Present(DisplayPlacement::Fullscreen),
                },
            ),
            (
                "display present linux quad 0 0 10 1 11 12 -1 9",
                Display {
                    vm: "linux",
                    change: DisplayChange::Present(DisplayPlacement::Quad([
                        (0, 0),
                        (10, 1),
                        (11, 12),
                        (-1, 9),
                    ])),
                },
            ),
            (
                "display hide linux",
                Display {
                    vm: "linux",
                    change: DisplayChange::Hide,
                },
            ),
            (
                "display freeze linux",
                Display {
                    vm: "linux",
                    change: DisplayChange::Freeze,
                },
            ),
            (
                "display unfreeze linux",
                Display {
                    vm: "linux",
                    change: DisplayChange::Unfreeze,
                },
            ),
            (
                "display throttle linux 5",
                Display {
                    vm: "linux",
                    change: DisplayChange::Throttle { fps: 5 },
                },
            ),
            (
                "display mode linux 800 600",
                Display {
                    vm: "linux",
                    change: DisplayChange::Mode {
                        width: 800,
                        height: 600,
                    },
                },
            ),
            (
                "display overlay  RayOS   says hi ",
                DisplayOverlay("RayOS   says hi"),
            ),
            ("display overlay", DisplayOverlay("")),
            ("display status", DisplayStatus),
        ] {
            assert_eq!(parse(line), Ok(want), "{line}");
        }
    }

    #[test]
    fn display_errors_name_what_was_wrong() {
        for (line, want) in [
            ("display", "`display` needs a subcommand: present"),
            ("display show linux", "unknown command `display show`"),
            (
                "display present linux",
                "`display present` needs a placement",
            ),
            ("display present linux window", "unknown placement `window`"),
            (
                "display present linux panel 1 2 3",
                "`display present` needs H",
            ),
            (
                "display present linux panel 1 2 3 x",
                "`display present`: H `x` is not a number",
            ),
            (
                "display present linux panel 1 2 -3 4",
                "W `-3` is not a number",
            ),
            (
                "display present linux panel 1 2 3 4 5",
                "takes nothing more, not `5`",
            ),
            (
                "display present linux quad 0 0 1 1 2 2 3",
                "`display present` needs Y3",
            ),
            (
                "display present linux fullscreen now",
                "takes nothing more, not `now`",
            ),
            (
                "display throttle linux fast",
                "`display throttle`: FPS `fast` is not a number",
            ),
            (
                "display throttle linux 99999999999",
                "FPS `99999999999` is not a number in range",
            ),
            ("display mode linux 800", "`display mode` needs H"),
            ("display hide", "`display hide` needs a VM NAME"),
            ("display status x", "`display status` takes nothing more"),
        ] {
            let e = parse(line).expect_err(line).to_string();
            assert!(e.contains(want), "{line}: got `{e}`, want `{want}`");
        }
    }

    #[test]
    fn errors_name_what_was_wrong() {
        for (line, want) in [
            ("reboot", "unknown command `reboot` (try `help`)"),
            ("vm", "`vm` needs a subcommand: list, pause"),
            ("vm stop linux", "unknown command `vm stop`"),
            ("host", "`host` needs a subcommand: shutdown"),
            ("host reboot", "unknown command `host reboot`"),
            (
                "host shutdown now",
                "`host shutdown` takes nothing more, not `now`",
            ),
            ("help me", "`help` takes nothing more, not `me`"),
            ("vm list all", "`vm list` takes nothing more, not `all`"),
            ("vm pause", "`vm pause` needs a VM NAME"),
            ("vm pause a b", "`vm pause` takes nothing more, not `b`"),
            ("vm pause a --force", "`vm pause` has no option `--force`"),
            ("vm snapshot linux", "`vm snapshot` needs a snapshot TAG"),
            (
                "vm snapshot linux t --ram",
                "`vm snapshot` has no option `--ram`",
            ),
            (
                "vm snapshot linux t x",
                "`vm snapshot` takes nothing more, not `x`",
            ),
            (
                "vm rollback linux --disk",
                "`vm rollback` has no option `--disk`",
            ),
            ("vm rollback linux bad/tag", "bad snapshot tag `bad/tag`"),
            (
                "vm delete-snapshot linux",
                "`vm delete-snapshot` needs a snapshot TAG",
            ),
            ("vm snapshots", "`vm snapshots` needs a VM NAME"),
            (
                "vm snapshots a b c d e f g",
                "`vm snapshots` takes nothing more, not `b`",
            ),
        ] {
            let e = parse(line).expect_err(line).to_string();
            assert!(e.contains(want), "{line}: got `{e}`, want `{want}`");
        }
        let long = "n".repeat(NAME_MAX + 1);
        let line = std::format!("vm pause {long}");
        assert_eq!(parse(&line), Err(ParseError::NameTooLong(&long)));
        let tag = "t".repeat(TAG_MAX + 1);
        let line = std::format!("vm snapshot linux {tag}");
        assert_eq!(parse(&line), Err(ParseError::BadTag(&tag)));
        assert!(parse(&std::format!("vm pause {}", "n".repeat(NAME_MAX))).is_ok());
    }

    #[test]
    fn input_commands_parse_and_bad_ones_are_refused() {
        let ok = |line: &str, action| {
            assert_eq!(
                parse(line),
                Ok(Command::Input {
                    vm: "linux",
                    action
                }),
                "{line}"
            )
        };
        ok(
            "input type linux \"echo  hi\\n\" ",
            InputAction::Type("\"echo  hi\\n\""),
        );
        ok(
            "input key linux ctrl+alt+f2",
            InputAction::Key("ctrl+alt+f2"),
        );
        ok(
            "input pointer linux 10 -3",
            InputAction::Pointer { x: 10, y: -3 },
        );
        ok(
            "input click linux 5 6",
            InputAction::Click {
                x: 5,
                y: 6,
                button: MouseButton::Left,
            },
        );
        ok(
            "input click linux 5 6 right",
            InputAction::Click {
                x: 5,
                y: 6,
                button: MouseButton::Right,
            },
        );
        ok(
            "input gaze linux 1 2",
            InputAction::Gaze { x: 1, y: 2, ms: 0 },
        );
        ok(
            "input gaze linux 1 2 900",
            InputAction::Gaze {
                x: 1,
                y: 2,
                ms: 900,
            },
        );
        ok("input interactive linux on", InputAction::Interactive(true));
        ok(
            "input interactive linux off",
            InputAction::Interactive(false),
        );
        assert_eq!(parse("input"), Err(ParseError::UnknownInputCommand(None)));
        assert_eq!(
            parse("input warp linux"),
            Err(ParseError::UnknownInputCommand(Some("warp")))
        );
        for bad in [
            "input type linux",
            "input key linux",
            "input key linux a b",
            "input pointer linux 1",
            "input pointer linux x 1",
            "input click linux 1 2 thumb",
            "input gaze linux 1 2 10001",
            "input gaze linux 1 2 -1",
            "input interactive linux maybe",
            "input interactive linux",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn many_words_are_refused_not_truncated() {
        let line = "host shutdown ".repeat(100);
        assert!(matches!(
            parse(&line),
            Err(ParseError::Extra {
                command: "host shutdown",
                word: "host"
            })
        ));
        let line = "vm list x ".repeat(1000);
        assert!(parse(&line).is_err());
    }

    #[test]
    fn usb_commands_parse_and_refuse_bad_ones() {
        use Command::Usb;
        for (line, op) in [
            ("usb detach linux", UsbOp::DetachStorage),
            ("usb attach linux", UsbOp::AttachStorage),
        ] {
            assert_eq!(parse(line), Ok(Usb { vm: "linux", op }), "{line}");
        }
        for (line, want) in [
            ("usb", ParseError::UnknownUsbCommand(None)),
            (
                "usb eject linux",
                ParseError::UnknownUsbCommand(Some("eject")),
            ),
            (
                "usb detach",
                ParseError::Missing {
                    command: "usb detach",
                    what: "a VM NAME",
                },
            ),
            (
                "usb attach linux now",
                ParseError::Extra {
                    command: "usb attach",
                    word: "now",
                },
            ),
        ] {
            assert_eq!(parse(line), Err(want), "{line}");
        }
        // Keys go through `input key`, to every keyboard the VM has.
        assert_eq!(
            parse("usb key linux 0x04"),
            Err(ParseError::UnknownUsbCommand(Some("key")))
        );
    }
}
