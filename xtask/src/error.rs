//! The one error type of xtask: every failure names the step that failed, so a
//! message like "build rayos-el2: cargo exited with status 101" says where to look.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::flat::FlatError;

/// Why an xtask command failed.
#[derive(Debug)]
pub enum Error {
    /// The command line is wrong; the message says how.
    Usage(String),
    /// A file or process operation failed.
    Io { what: String, source: io::Error },
    /// A named step failed for the reason given.
    Step { step: String, detail: String },
    /// An external command ran and failed.
    Command {
        step: String,
        command: String,
        /// Exit code, `None` when killed by a signal.
        code: Option<i32>,
        /// The last lines of its output when it was captured (may be empty).
        tail: String,
    },
    /// An ELF could not be turned into a flat image.
    Image { path: PathBuf, source: FlatError },
    /// A VM run ended unsuccessfully (the console tail was already shown).
    RunFailed {
        reason: String,
        /// The process exit code xtask should end with.
        exit_code: u8,
    },
}

impl Error {
    /// An I/O error while doing `what`.
    pub fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// A failed step.
    pub fn step(step: impl Into<String>, detail: impl Into<String>) -> Error {
        Error::Step {
            step: step.into(),
            detail: detail.into(),
        }
    }

    /// The exit code `cargo xtask` ends with for this error.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => 2,
            Error::RunFailed { exit_code, .. } => *exit_code,
            _ => 1,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(msg) => write!(f, "usage: {msg}"),
            Error::Io { what, source } => write!(f, "{what}: {source}"),
            Error::Step { step, detail } => write!(f, "{step}: {detail}"),
            Error::Command {
                step,
                command,
                code,
                tail,
            } => {
                match code {
                    Some(c) => write!(f, "{step}: `{command}` exited with status {c}")?,
                    None => write!(f, "{step}: `{command}` was killed by a signal")?,
                }
                if !tail.is_empty() {
                    write!(f, "\n--- last output ---\n{tail}")?;
                }
                Ok(())
            }
            Error::Image { path, source } => {
                write!(f, "flat image from {}: {source}", path.display())
            }
            Error::RunFailed { reason, .. } => write!(f, "{reason}"),
        }
    }
}

impl std::error::Error for Error {}

/// The last `n` lines of `text` (all of it when shorter).
pub fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().map(|l| l.trim_end_matches('\r')).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_last_lines_without_carriage_returns() {
        assert_eq!(tail_lines("a\r\nb\r\nc\r\n", 2), "b\nc");
        assert_eq!(tail_lines("only", 40), "only");
        assert_eq!(tail_lines("", 3), "");
    }

    #[test]
    fn messages_name_the_step() {
        let e = Error::Command {
            step: "build rayos-el2".into(),
            command: "cargo build".into(),
            code: Some(101),
            tail: String::new(),
        };
        assert_eq!(
            e.to_string(),
            "build rayos-el2: `cargo build` exited with status 101"
        );
        assert_eq!(e.exit_code(), 1);
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
    }
}
