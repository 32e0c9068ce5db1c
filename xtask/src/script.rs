//! Run scripts (`cargo xtask run --script FILE`): one step per line —
//! `expect REGEX` (wait until the console output since the previous match
//! matches), `send TEXT` (type TEXT and a newline; `\n`, `\r`, `\t`, `\\` and
//! `\xHH` escapes), `sleep SECONDS`, `monitor COMMAND` (enter the hypervisor
//! monitor with `Ctrl-]`, run COMMAND, wait for its status line and print it,
//! return to the guest console; see docs/monitor.md — beside the authority
//! partition COMMAND goes to its shell instead, docs/console.md), `attach NAME`
//! (beside the partition: give the console to VM NAME, as the shell's `attach`;
//! a later `monitor` line leaves it with `Ctrl-]` and attaches again after its
//! status line), `screendump FILE` (QEMU
//! writes the physical display to FILE as a PPM, through QMP). Blank lines and lines
//! starting with `#` are ignored. Everything is checked when the script is parsed,
//! before QEMU starts (a monitor command against the monitor's own parser).

use std::fmt;
use std::time::Duration;

use regex::Regex;

/// Longest `sleep` a script may ask for.
pub const MAX_SLEEP_SECS: f64 = 3600.0;

/// One action.
#[derive(Debug, Clone)]
pub enum Action {
    /// Wait until the output since the previous match matches.
    Expect(Regex),
    /// Write these bytes (the newline is already appended).
    Send(String),
    /// Pause (console output is still collected).
    Sleep(Duration),
    /// Run this hypervisor monitor command (without a newline). Beside the
    /// authority partition [`crate::run::prepare`] makes it a [`Action::Shell`].
    Monitor(String),
    /// Type this command at the authority partition's `rayos>` prompt and wait
    /// for its status line (leaving and re-attaching a console attached with
    /// [`Action::Attach`] around it).
    Shell(String),
    /// Give the serial line to this VM's console (the partition's `attach NAME`);
    /// only beside the authority partition.
    Attach(String),
    /// Write the physical display to this file (PPM).
    Screendump(std::path::PathBuf),
    /// Run a QMP command with these JSON arguments (e.g. `input-send-event`).
    Qmp { command: String, arguments: String },
}

/// One step and where it came from.
#[derive(Debug, Clone)]
pub struct Step {
    /// 1-based line number in the script.
    pub line: usize,
    /// The line as written (trimmed), for messages.
    pub text: String,
    pub action: Action,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: `{}`", self.line, self.text)
    }
}

/// Why a script was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptError {
    UnknownCommand { line: usize, command: String },
    MissingArgument { line: usize, command: &'static str },
    BadRegex { line: usize, error: String },
    BadSleep { line: usize, value: String },
    BadEscape { line: usize, escape: String },
    BadMonitorCommand { line: usize, error: String },
}

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScriptError::UnknownCommand { line, command } => {
                write!(f, "script line {line}: unknown command `{command}` (expected expect, send, sleep, monitor, attach, screendump or qmp)")
            }
            ScriptError::MissingArgument { line, command } => {
                write!(f, "script line {line}: `{command}` needs an argument")
            }
            ScriptError::BadRegex { line, error } => {
                write!(f, "script line {line}: bad regex: {error}")
            }
            ScriptError::BadSleep { line, value } => {
                write!(f, "script line {line}: sleep takes seconds between 0 and {MAX_SLEEP_SECS}, not `{value}`")
            }
            ScriptError::BadMonitorCommand { line, error } => {
                write!(f, "script line {line}: bad monitor command: {error}")
            }
            ScriptError::BadEscape { line, escape } => {
                write!(
                    f,
                    "script line {line}: unknown escape `{escape}` (use \\n \\r \\t \\\\ or \\xHH)"
                )
            }
        }
    }
}

/// Parses a script.
pub fn parse(text: &str) -> Result<Vec<Step>, ScriptError> {
    let mut steps = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        // The argument is everything after the command and one separating
        // blank, so `send   x` sends the spaces too; a trailing '\r' is dropped.
        let body = raw.trim_start().trim_end_matches('\r');
        let (command, arg) = match body.find(char::is_whitespace) {
            Some(at) => (&body[..at], Some(&body[at + 1..])),
            None => (body, None),
        };
        let action = match command {
            "expect" => {
                let pattern =
                    arg.filter(|a| !a.is_empty())
                        .ok_or(ScriptError::MissingArgument {
                            line,
                            command: "expect",
                        })?;
                Action::Expect(Regex::new(pattern).map_err(|e| ScriptError::BadRegex {
                    line,
                    error: e.to_string(),
                })?)
            }
            "send" => {
                let mut s = unescape(arg.unwrap_or(""), line)?;
                s.push('\n');
                Action::Send(s)
            }
            "sleep" => {
                let value = arg.map(str::trim).filter(|a| !a.is_empty()).ok_or(
                    ScriptError::MissingArgument {
                        line,
                        command: "sleep",
                    },
                )?;
                let secs: f64 = value
                    .parse()
                    .ok()
                    .filter(|s: &f64| s.is_finite() && (0.0..=MAX_SLEEP_SECS).contains(s))
                    .ok_or_else(|| ScriptError::BadSleep {
                        line,
                        value: value.to_string(),
                    })?;
                Action::Sleep(Duration::from_secs_f64(secs))
            }
            "monitor" => {
                let command = arg.map(str::trim).filter(|a| !a.is_empty()).ok_or(
                    ScriptError::MissingArgument {
                        line,
                        command: "monitor",
                    },
                )?;
                monitor_command(command, line)?;
                Action::Monitor(command.to_string())
            }
            "attach" => {
                let name = arg
                    .map(str::trim)
                    .filter(|a| !a.is_empty() && !a.contains(char::is_whitespace))
                    .ok_or(ScriptError::MissingArgument {
                        line,
                        command: "attach (one VM name)",
                    })?;
                Action::Attach(name.to_string())
            }
            "screendump" => {
                let file = arg.map(str::trim).filter(|a| !a.is_empty()).ok_or(
                    ScriptError::MissingArgument {
                        line,
                        command: "screendump",
                    },
                )?;
                Action::Screendump(file.into())
            }
            "qmp" => {
                let arg = arg.map(str::trim).filter(|a| !a.is_empty()).ok_or(
                    ScriptError::MissingArgument {
                        line,
                        command: "qmp",
                    },
                )?;
                let (command, arguments) =
                    arg.split_once(char::is_whitespace).unwrap_or((arg, "{}"));
                let arguments = arguments.trim();
                if !(arguments.starts_with('{') && arguments.ends_with('}')) {
                    return Err(ScriptError::MissingArgument {
                        line,
                        command: "qmp (COMMAND {JSON ARGUMENTS})",
                    });
                }
                Action::Qmp {
                    command: command.to_string(),
                    arguments: arguments.to_string(),
                }
            }
            other => {
                return Err(ScriptError::UnknownCommand {
                    line,
                    command: other.to_string(),
                })
            }
        };
        steps.push(Step {
            line,
            text: trimmed.to_string(),
            action,
        });
    }
    Ok(steps)
}

/// Checks a monitor command as the monitor will: printable ASCII of at most
/// `monitor::LINE_MAX` bytes that the monitor's parser accepts.
fn monitor_command(command: &str, line: usize) -> Result<(), ScriptError> {
    let bad = |error: String| ScriptError::BadMonitorCommand { line, error };
    if !command.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(bad(
            "only printable ASCII can be typed in the monitor".into()
        ));
    }
    if command.len() > monitor::LINE_MAX {
        return Err(bad(format!(
            "longer than the monitor's {} characters",
            monitor::LINE_MAX
        )));
    }
    monitor::parse(command)
        .map(|_| ())
        .map_err(|e| bad(e.to_string()))
}

/// Resolves `\n`, `\r`, `\t`, `\\` and `\xHH` (ASCII, HH < 0x80).
fn unescape(s: &str, line: usize) -> Result<String, ScriptError> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('t') => out.push('\t'),
            Some('\\') => out.push('\\'),
            Some('x') => {
                let hex: String = chars.by_ref().take(2).collect();
                let byte = u8::from_str_radix(&hex, 16)
                    .ok()
                    .filter(|b| hex.len() == 2 && b.is_ascii())
                    .ok_or_else(|| ScriptError::BadEscape {
                        line,
                        escape: format!("\\x{hex}"),
                    })?;
                out.push(char::from(byte));
            }
            other => {
                return Err(ScriptError::BadEscape {
                    line,
                    escape: format!("\\{}", other.map(String::from).unwrap_or_default()),
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_with_line_numbers() {
        let script = "# boot and log in\n\nexpect login:\r\nsend root\nsleep 0.5\n  expect (?m)^# $\nsend echo a\\tb\\r\nsend\n";
        let steps = parse(script).unwrap();
        assert_eq!(steps.len(), 6);
        assert!(matches!(&steps[0].action, Action::Expect(r) if r.as_str() == "login:"));
        assert_eq!(steps[0].line, 3);
        assert!(matches!(&steps[1].action, Action::Send(s) if s == "root\n"));
        assert!(matches!(&steps[2].action, Action::Sleep(d) if *d == Duration::from_millis(500)));
        assert!(matches!(&steps[3].action, Action::Expect(r) if r.as_str() == "(?m)^# $"));
        assert!(matches!(&steps[4].action, Action::Send(s) if s == "echo a\tb\r\n"));
        assert!(matches!(&steps[5].action, Action::Send(s) if s == "\n"));
        assert_eq!(steps[3].to_string(), "line 6: `expect (?m)^# $`");
    }

    #[test]
    fn qmp_takes_a_command_and_json_arguments() {
        let steps = parse("qmp input-send-event {\"events\": []}\nqmp query-status\n").unwrap();
        assert!(matches!(&steps[0].action,
            Action::Qmp { command, arguments } if command == "input-send-event" && arguments == "{\"events\": []}"));
        assert!(matches!(&steps[1].action,
            Action::Qmp { command, arguments } if command == "query-status" && arguments == "{}"));
        assert!(parse("qmp\n").is_err());
        assert!(parse("qmp x [1]\n").is_err());
    }

    #[test]
    fn screendump_takes_a_file() {
        let steps = parse("screendump out/frame 1.ppm\n").unwrap();
        assert!(
            matches!(&steps[0].action, Action::Screendump(p) if p == std::path::Path::new("out/frame 1.ppm"))
        );
        assert_eq!(
            parse("screendump\n").unwrap_err(),
            ScriptError::MissingArgument {
                line: 1,
                command: "screendump"
            }
        );
    }

    #[test]
    fn send_keeps_inner_spaces_and_hex_escapes() {
        let steps = parse("send  two spaces\nsend \\x01x\n").unwrap();
        assert!(matches!(&steps[0].action, Action::Send(s) if s == " two spaces\n"));
        assert!(matches!(&steps[1].action, Action::Send(s) if s == "\u{1}x\n"));
    }

    #[test]
    fn monitor_steps_are_checked_against_the_monitor_parser() {
        let steps = parse("monitor vm list\nmonitor   vm pause linux  \n").unwrap();
        assert!(matches!(&steps[0].action, Action::Monitor(c) if c == "vm list"));
        assert!(matches!(&steps[1].action, Action::Monitor(c) if c == "vm pause linux"));
        for (script, want) in [
            ("monitor\n", "`monitor` needs an argument"),
            ("monitor vm stop x\n", "unknown command `vm stop`"),
            ("monitor vm pause\n", "`vm pause` needs a VM NAME"),
            ("monitor vm pause caf\u{e9}\n", "printable ASCII"),
        ] {
            let e = parse(script).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains("line 1"), "{script:?}: {e}");
        }
        let long = format!("monitor vm pause {}\n", "n".repeat(monitor::LINE_MAX));
        assert!(parse(&long)
            .unwrap_err()
            .to_string()
            .contains("longer than"));
    }

    #[test]
    fn errors_name_the_line() {
        assert_eq!(
            parse("expect ok\nwait 3\n").unwrap_err(),
            ScriptError::UnknownCommand {
                line: 2,
                command: "wait".into()
            }
        );
        assert_eq!(
            parse("expect\n").unwrap_err(),
            ScriptError::MissingArgument {
                line: 1,
                command: "expect"
            }
        );
        assert!(matches!(
            parse("\nexpect (unclosed\n").unwrap_err(),
            ScriptError::BadRegex { line: 2, .. }
        ));
        assert!(matches!(
            parse("sleep -1\n").unwrap_err(),
            ScriptError::BadSleep { line: 1, .. }
        ));
        assert!(matches!(
            parse("sleep NaN\n").unwrap_err(),
            ScriptError::BadSleep { line: 1, .. }
        ));
        assert!(matches!(
            parse("sleep\n").unwrap_err(),
            ScriptError::MissingArgument {
                line: 1,
                command: "sleep"
            }
        ));
        assert_eq!(
            parse("send a\\q\n").unwrap_err(),
            ScriptError::BadEscape {
                line: 1,
                escape: "\\q".into()
            }
        );
        assert!(matches!(
            parse("send \\xZZ\n").unwrap_err(),
            ScriptError::BadEscape { .. }
        ));
        assert!(matches!(
            parse("send \\xff\n").unwrap_err(),
            ScriptError::BadEscape { .. }
        ));
        assert!(parse("send trailing\\").is_err());
        assert!(parse("# only comments\n\n   # indented\n")
            .unwrap()
            .is_empty());
    }
}
