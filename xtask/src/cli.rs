//! The `cargo xtask` command line: dispatches to the commands and turns their
//! errors into one message and an exit code.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::bench::bench_cli;
use crate::build::build_all;
use crate::ci::test_cli;
use crate::error::Error;
use crate::run::{parse_args, run_cli};
use crate::setup::ensure_rust_targets;
use crate::Layout;

/// The commands, for `cargo xtask help`.
pub const USAGE: &str = "\
cargo xtask <command>

  build                 build the hypervisor (target/rayos-el2.bin) and the test guests (target/guests/*.bin)
  run [options]         boot a VM under QEMU; `cargo xtask run --help` lists the options
  bench NAME            run a benchmark (known: exits, boot, disk, tpm)
  fetch linux           fetch and build the Linux guest (Debian kernel + busybox initramfs) into target/guest-cache
  test                  the whole suite: set-up, build, cargo test (in the fresh-host namespace), clippy of the bare-metal crates
  fresh-test [ARGS]     `cargo test ARGS` in the fresh-host namespace (QEMU firmware of optional packages hidden; root)
  disk <args>           system-disk tool (registry crate); `cargo xtask disk help`
  fuzz list | NAME [--time S] [--runs N]
                        fuzz a target with cargo-fuzz (nightly, installed if missing)
  vtpm-sim --port N --state DIR
                        TPM 2.0 simulator server (mssim protocol) for real TPM clients";

/// Runs `cargo xtask` with `args` (without the program name).
pub fn main(args: &[String]) -> ExitCode {
    match dispatch(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn dispatch(args: &[String]) -> Result<(), Error> {
    let layout = Layout::detect();
    let (command, rest) = match args.split_first() {
        Some((c, rest)) => (c.as_str(), rest),
        None => return Err(Error::Usage(format!("a command is needed\n{USAGE}"))),
    };
    match command {
        "build" => {
            if !rest.is_empty() {
                return Err(Error::Usage("build takes no arguments".into()));
            }
            ensure_rust_targets(&layout, false)?;
            let out = build_all(&layout, false)?;
            println!("{}", out.hypervisor.display());
            for g in &out.guests {
                println!("{}", g.display());
            }
            Ok(())
        }
        "run" => {
            if rest.iter().any(|a| a == "--help" || a == "-h") {
                println!("{}", crate::run::USAGE);
                return Ok(());
            }
            let opts = parse_args(rest)?;
            ensure_rust_targets(&layout, false)?;
            run_cli(&layout, &opts)
        }
        "bench" => {
            ensure_rust_targets(&layout, false)?;
            bench_cli(&layout, rest)
        }
        "test" => test_cli(&layout),
        "fresh-test" => crate::ci::fresh_test_cli(&layout, rest),
        "fetch" => match rest {
            [what] if what == "linux" => {
                let g = crate::linux_guest::ensure_linux_guest(&layout.guest_cache())
                    .map_err(|e| Error::step("linux guest", e))?;
                println!(
                    "kernel    {} ({}, {})",
                    g.kernel.display(),
                    g.kernel_release,
                    g.kernel_format
                );
                println!("initramfs {}", g.initramfs.display());
                println!(
                    "modules   loaded: {}; built in: {}; missing: {}",
                    g.modules_loaded.join(" "),
                    g.modules_builtin.join(" "),
                    g.modules_missing.join(" ")
                );
                println!("packages  {}", g.packages.join(" "));
                Ok(())
            }
            _ => Err(Error::Usage("cargo xtask fetch linux".into())),
        },
        "disk" => registry::cli::cli_main(rest).map_err(|e| Error::step("disk", e)),
        "fuzz" => crate::fuzz::fuzz_cli(&layout, rest),
        "vtpm-sim" => vtpm_sim(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(Error::Usage(format!("unknown command `{other}`\n{USAGE}"))),
    }
}

/// `vtpm-sim --port N --state DIR`.
fn vtpm_sim(args: &[String]) -> Result<(), Error> {
    let usage = || Error::Usage("cargo xtask vtpm-sim --port N --state DIR".into());
    let mut port = None;
    let mut state = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--port" => {
                port = Some(
                    it.next()
                        .and_then(|p| p.parse::<u16>().ok())
                        .ok_or_else(usage)?,
                )
            }
            "--state" => state = Some(PathBuf::from(it.next().ok_or_else(usage)?)),
            _ => return Err(usage()),
        }
    }
    let (port, state) = (port.ok_or_else(usage)?, state.ok_or_else(usage)?);
    // The simulator is the `vtpm` crate's own binary: run it in the foreground
    // rather than linking the TPM engine into xtask.
    let status = crate::exec::cargo()
        .args([
            "run",
            "--quiet",
            "--release",
            "-p",
            "vtpm",
            "--features",
            "std",
            "--bin",
            "vtpm-sim",
            "--",
        ])
        .arg("--port")
        .arg(port.to_string())
        .arg("--state")
        .arg(&state)
        .status()
        .map_err(|e| Error::io(format!("vtpm simulator on port {port}"), e))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::step(
            "vtpm-sim",
            format!("the simulator exited with {status}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn unknown_commands_and_arguments_are_usage_errors() {
        assert!(matches!(dispatch(&[]), Err(Error::Usage(_))));
        assert!(matches!(
            dispatch(&args("frobnicate")),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            dispatch(&args("build extra")),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            dispatch(&args("vtpm-sim --port")),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            dispatch(&args("vtpm-sim --port 99999 --state /tmp")),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            dispatch(&args("vtpm-sim --state /tmp")),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            dispatch(&args("run --nope")),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            dispatch(&args("fetch windows")),
            Err(Error::Usage(_))
        ));
    }
}
