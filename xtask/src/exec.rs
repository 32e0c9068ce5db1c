//! Running external commands (cargo, rustup, apt-get) as named steps: the
//! command is echoed, its output either goes to the terminal or is captured
//! (`quiet`) and its tail attached to the error, and a failure names the step.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::error::{tail_lines, Error};

/// Lines of captured output kept in an error.
const ERROR_TAIL_LINES: usize = 40;

/// The cargo that runs us (`$CARGO`, set by `cargo run` and `cargo test`), else `cargo`.
pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// `cmd` as one printable line.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    if s.ends_with("/cargo") {
        s = "cargo".into();
    }
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` in `dir` as `step`. With `quiet` its output is captured and only
/// shown (its tail) in the error; otherwise it goes to the terminal.
pub fn run_step(step: &str, mut cmd: Command, dir: &Path, quiet: bool) -> Result<(), Error> {
    cmd.current_dir(dir);
    let command = describe(&cmd);
    if !quiet {
        eprintln!("xtask: {step}: {command}");
    }
    let spawn_err = |e| Error::step(step, format!("cannot run `{command}`: {e}"));
    let (status, tail) = if quiet {
        let out = cmd.stdin(Stdio::null()).output().map_err(spawn_err)?;
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status, tail_lines(&text, ERROR_TAIL_LINES))
    } else {
        (cmd.status().map_err(spawn_err)?, String::new())
    };
    if status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            step: step.into(),
            command,
            code: status.code(),
            tail,
        })
    }
}

/// Whether `program` can be started (it exists on `PATH`).
pub fn can_run(program: &str, probe_arg: &str) -> bool {
    Command::new(program)
        .arg(probe_arg)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_name_the_step_and_keep_the_output_tail() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo one; echo two >&2; exit 3"]);
        let err = run_step("probe", cmd, Path::new("."), true).unwrap_err();
        match err {
            Error::Command {
                step, code, tail, ..
            } => {
                assert_eq!(step, "probe");
                assert_eq!(code, Some(3));
                assert_eq!(tail, "one\ntwo");
            }
            other => panic!("unexpected {other:?}"),
        }
        let mut ok = Command::new("sh");
        ok.args(["-c", "true"]);
        run_step("ok", ok, Path::new("."), true).unwrap();
    }

    #[test]
    fn missing_programs_are_an_error_not_a_panic() {
        let err = run_step(
            "ghost",
            Command::new("/nonexistent/xtask-probe"),
            Path::new("."),
            true,
        )
        .unwrap_err();
        assert!(err.to_string().starts_with("ghost: cannot run"));
        assert!(!can_run("/nonexistent/xtask-probe", "--version"));
    }
}
