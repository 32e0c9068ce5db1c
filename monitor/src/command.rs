//! Monitor commands: one line of words separated by blanks.
//!
//! ```text
//! vm list                       vm snapshot NAME TAG [--disk]
//! vm pause NAME                 vm rollback NAME TAG
//! vm resume NAME                vm snapshots NAME
//! vm suspend NAME               vm delete-snapshot NAME TAG
//! host shutdown                 help
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
/// Most words a command has (`vm snapshot NAME TAG --disk`).
const MAX_WORDS: usize = 5;

/// Where a snapshot is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotStore {
    /// In hypervisor memory: fast, gone at host power-off.
    Memory,
    /// On the system disk: survives host reboots (`--disk`).
    Disk,
}

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

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

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
        ] {
            assert_eq!(parse(line), Ok(want), "{line}");
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
}
