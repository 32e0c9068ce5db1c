//! The `cargo xtask` command line (clap): dispatches to the commands and turns
//! their errors into one message and an exit code.
//!
//! A new command is one variant of [`Command`] (its doc comment is its line in
//! `cargo xtask help`) and one arm in [`dispatch`].

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

use crate::bench::bench_cli;
use crate::build::build_all;
use crate::ci::test_cli;
use crate::error::Error;
use crate::run::{run_cli, RunArgs};
use crate::setup::ensure_rust_targets;
use crate::soak::SoakArgs;
use crate::Layout;

/// Build, run, fetch, test and bench RayOS EL2.
#[derive(Debug, Parser)]
#[command(
    name = "xtask",
    bin_name = "cargo xtask",
    override_usage = "cargo xtask <command>",
    disable_version_flag = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// build the hypervisor (target/rayos-el2.bin) and the test guests (target/guests/*.bin);
    /// with --board NAME, a board's artifacts and first-boot checklist in target/boards/NAME
    Build {
        /// qemu-virt, ampere-altra or snapdragon-x-elite
        #[arg(long, value_name = "NAME")]
        board: Option<String>,
    },
    /// boot a VM under QEMU; `cargo xtask run --help` lists the options
    Run(Box<RunArgs>),
    /// run a benchmark (known: exits, boot, disk, tpm)
    Bench {
        /// the benchmark; without it the list
        name: Option<String>,
    },
    /// fetch and build the Linux guest (Debian kernel + busybox initramfs) into target/guest-cache, Debian's AAVMF firmware into target/firmware-cache, or the signed boot chain's disks into target/boot-chain
    Fetch {
        #[arg(value_enum)]
        what: Fetchable,
    },
    /// the whole suite: set-up, build, fmt, clippy of every crate, cargo deny, the tests, several test executables at a time (in the fresh-host namespace)
    Test,
    /// the suite's gates alone: fmt --check, clippy -D warnings of every crate, cargo deny
    Lint,
    /// `cargo test ARGS` in the fresh-host namespace (QEMU firmware of optional packages hidden; root)
    #[command(disable_help_flag = true)]
    FreshTest {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// the suite's tests, several test executables at a time (`cargo xtask test` runs it in the fresh-host namespace)
    #[command(hide = true)]
    TestPool {
        #[arg(long, default_value = crate::ci::HOST_FEATURES)]
        features: String,
    },
    /// system-disk tool (registry crate); `cargo xtask disk help`
    #[command(disable_help_flag = true)]
    Disk {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// each Windows 11 requirement (TPM 2.0, Secure Boot and Microsoft's CA in db, CPU atomics, cores, RAM, disk, device model, install media) and whether a VM meets it; fails when one is not met
    CheckWindowsReady {
        /// the VM's name
        #[arg(long, value_name = "NAME")]
        vm: String,
        /// its system disk (default target/system-disk-windows.img)
        #[arg(long, value_name = "PATH")]
        disk: Option<PathBuf>,
        /// the accelerator the VM will run under (its CPU: QEMU's TCG model or the host's)
        #[arg(long, default_value = "tcg", value_parser = |s: &str| s.parse::<crate::qemu::Accel>())]
        accel: crate::qemu::Accel,
        /// the QEMU CPU model the VM will run with (as `run --cpu MODEL`)
        #[arg(long, value_name = "MODEL")]
        cpu: Option<String>,
    },
    /// TPM 2.0 simulator server (mssim protocol) for real TPM clients
    #[command(override_usage = "cargo xtask vtpm-sim --port N --state DIR")]
    VtpmSim {
        #[arg(long, value_name = "N")]
        port: u16,
        #[arg(long, value_name = "DIR")]
        state: PathBuf,
    },
    /// long run of the Linux guest (2 vCPUs: disk, TPM, rng, consoles, reboots); not in the suite
    Soak(SoakArgs),
    /// coverage-guided fuzzing with cargo-fuzz (nightly, installed if missing): `fuzz list | NAME [--time S] [--runs N] [--sanitizer address|none] [-- libFuzzer args]`
    #[command(disable_help_flag = true)]
    Fuzz {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

/// What `cargo xtask fetch` fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Fetchable {
    Linux,
    /// Debian's AAVMF (EDK2 ArmVirtQemu) flash images
    Aavmf,
    /// Debian's signed shim, GRUB and kernel on GPT disk images with an ESP (target/boot-chain)
    BootChain,
}

/// A parsed command line: the command and clap's matches (some commands read
/// the order of their flags from them).
#[derive(Debug)]
pub enum Parsed {
    Command(Command, Box<ArgMatches>),
    /// `--help`/`help`: the text to print.
    Help(String),
}

/// Parses `cargo xtask` arguments (without the program name). A wrong command
/// line is an [`Error::Usage`] whose first line says what is wrong.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Parsed, Error> {
    let argv = std::iter::once("xtask".to_string()).chain(args);
    let matches = match Cli::command().try_get_matches_from(argv) {
        Ok(m) => m,
        Err(e) => return usage_error(e),
    };
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => Ok(Parsed::Command(cli.command, Box::new(matches))),
        Err(e) => usage_error(e),
    }
}

/// clap's error as xtask's: help is printed, the rest is a usage error with the
/// problem on its first line and the usage after it.
fn usage_error(e: clap::Error) -> Result<Parsed, Error> {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            Ok(Parsed::Help(e.render().to_string()))
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => Err(Error::Usage(format!(
            "a command is needed\n{}",
            e.render().to_string().trim_end()
        ))),
        _ => {
            let text = e.render().to_string();
            let mut lines = text.lines().filter(|l| !l.trim().is_empty());
            let first = lines
                .next()
                .unwrap_or("bad command line")
                .trim_start_matches("error: ");
            let usage = lines
                .find(|l| l.starts_with("Usage:"))
                .unwrap_or("Usage: cargo xtask help");
            Err(Error::Usage(format!("{first}\n{usage}")))
        }
    }
}

/// The text of `cargo xtask help`.
pub fn usage() -> String {
    Cli::command().render_help().to_string()
}

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
    let (command, matches) = match parse(args.iter().cloned())? {
        Parsed::Help(text) => {
            print!("{text}");
            return Ok(());
        }
        Parsed::Command(c, m) => (c, m),
    };
    let layout = Layout::detect();
    match command {
        Command::Build { board: Some(name) } => {
            let board = crate::board_media::board(&name)?;
            ensure_rust_targets(&layout, false)?;
            let staged = crate::board_media::stage(&layout, board)?;
            for f in &staged.files {
                println!("{}", f.display());
            }
            println!("First-boot checklist for {}:", board.name);
            for (i, item) in staged.checklist.iter().enumerate() {
                println!("{:2}. {item}", i + 1);
            }
            if staged.missing.is_empty() {
                return Ok(());
            }
            Err(Error::step(
                format!("boot media for {}", board.name),
                format!(
                    "incomplete (what exists is in {}):\n  - {}",
                    staged.dir.display(),
                    staged.missing.join("\n  - ")
                ),
            ))
        }
        Command::Build { board: None } => {
            ensure_rust_targets(&layout, false)?;
            let out = build_all(&layout, false)?;
            println!("{}", out.hypervisor.display());
            for g in &out.guests {
                println!("{}", g.display());
            }
            Ok(())
        }
        Command::Run(run) => {
            let sub = matches
                .subcommand_matches("run")
                .expect("the run subcommand matched");
            let opts = run.options(sub)?;
            ensure_rust_targets(&layout, false)?;
            run_cli(&layout, &opts)
        }
        Command::Bench { name } => {
            let name = crate::bench::find_or_list(name.as_deref())?;
            ensure_rust_targets(&layout, false)?;
            bench_cli(&layout, name)
        }
        Command::Test => test_cli(&layout),
        Command::Fuzz { args } => crate::fuzz::fuzz_cli(&layout, &args),
        Command::Lint => crate::ci::lint_cli(&layout),
        Command::FreshTest { args } => crate::ci::fresh_test_cli(&layout, &args),
        Command::TestPool { features } => crate::pool::test_pool_cli(&layout, &features),
        Command::Fetch {
            what: Fetchable::Linux,
        } => {
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
        Command::Fetch {
            what: Fetchable::Aavmf,
        } => {
            let f = crate::firmware::ensure_aavmf(
                &layout.firmware_cache(),
                &layout.guest_cache().join("apt"),
            )
            .map_err(|e| Error::step("firmware", e))?;
            println!("code      {}", f.code.display());
            println!("vars      {} (Secure Boot off)", f.vars.display());
            println!("vars      {} (Microsoft keys)", f.vars_ms.display());
            println!("package   {}", f.package);
            Ok(())
        }
        Command::Fetch {
            what: Fetchable::BootChain,
        } => crate::boot_chain::fetch_cli(&layout),
        Command::Disk { args } => match args.split_first() {
            Some((sub, rest)) if sub == "tpm-ca" => crate::sysdisk::tpm_ca_cli(rest),
            Some((_, rest)) if crate::windows::is_windows_add_vm(&args) => {
                crate::windows::add_vm_cli(&layout, rest)
            }
            _ => registry::cli::cli_main(&args).map_err(|e| Error::step("disk", e)),
        },
        Command::VtpmSim { port, state } => vtpm_sim(port, &state),
        Command::CheckWindowsReady {
            vm,
            disk,
            accel,
            cpu,
        } => crate::winready::check_cli(&crate::winready::CheckOptions {
            vm,
            disk: disk.unwrap_or_else(|| crate::windows::default_path(&layout)),
            accel,
            cpu,
        }),
        Command::Soak(soak) => {
            let opts = soak.options()?;
            ensure_rust_targets(&layout, false)?;
            crate::soak::soak_cli(&layout, &opts)
        }
    }
}

/// `vtpm-sim --port N --state DIR`.
fn vtpm_sim(port: u16, state: &std::path::Path) -> Result<(), Error> {
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
        .arg(state)
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

    fn parsed(s: &str) -> Result<Parsed, Error> {
        parse(args(s))
    }

    #[test]
    fn unknown_commands_and_arguments_are_usage_errors() {
        assert!(matches!(dispatch(&[]), Err(Error::Usage(_))));
        for bad in [
            "frobnicate",
            "build extra",
            "vtpm-sim --port",
            "vtpm-sim --port 99999 --state /tmp",
            "vtpm-sim --state /tmp",
            "run --nope",
            "fetch windows",
            "bench exits extra",
            "soak --minutes 0",
            "soak --frob",
        ] {
            assert!(
                matches!(dispatch(&args(bad)), Err(Error::Usage(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn an_unknown_argument_is_one_line_naming_it_then_the_usage() {
        let Err(Error::Usage(msg)) = parsed("run --nope") else {
            panic!("not a usage error")
        };
        let lines: Vec<&str> = msg.lines().collect();
        assert_eq!(lines.len(), 2, "{msg}");
        assert!(lines[0].contains("--nope"), "{msg}");
        assert!(
            lines[1].starts_with("Usage: cargo xtask run [--guest"),
            "{msg}"
        );
        let Err(Error::Usage(msg)) = parsed("frobnicate") else {
            panic!("not a usage error")
        };
        assert!(msg.lines().next().unwrap().contains("frobnicate"), "{msg}");
    }

    #[test]
    fn help_lists_every_command_with_its_line() {
        let text = usage();
        for (cmd, words) in [
            ("build", "build the hypervisor"),
            ("run", "boot a VM under QEMU"),
            ("bench", "known: exits, boot, disk, tpm"),
            ("fetch", "fetch and build the Linux guest"),
            ("test", "the whole suite"),
            ("lint", "the suite's gates alone"),
            ("fresh-test", "fresh-host namespace"),
            ("disk", "system-disk tool"),
            ("vtpm-sim", "TPM 2.0 simulator"),
            ("soak", "long run of the Linux guest"),
            ("check-windows-ready", "each Windows 11 requirement"),
        ] {
            assert!(
                text.lines()
                    .any(|l| l.trim_start().starts_with(cmd) && l.contains(words)),
                "{cmd}: {text}"
            );
        }
        for h in ["help", "--help", "-h", "run --help", "run -h"] {
            assert!(matches!(parsed(h), Ok(Parsed::Help(_))), "{h}");
        }
        let Ok(Parsed::Help(run_help)) = parsed("run --help") else {
            unreachable!()
        };
        assert!(run_help.contains(crate::run::USAGE), "{run_help}");
        assert!(
            run_help.contains("Script lines: `expect REGEX`"),
            "{run_help}"
        );
    }

    #[test]
    fn check_windows_ready_takes_a_vm_a_disk_and_an_accelerator() {
        let Ok(Parsed::Command(
            Command::CheckWindowsReady {
                vm,
                disk,
                accel,
                cpu,
            },
            _,
        )) = parsed("check-windows-ready --vm w --disk /d.img --accel kvm --cpu max")
        else {
            panic!("check-windows-ready did not parse")
        };
        assert_eq!((vm.as_str(), disk), ("w", Some(PathBuf::from("/d.img"))));
        assert_eq!(accel, crate::qemu::Accel::Kvm);
        assert_eq!(cpu.as_deref(), Some("max"));
        for bad in [
            "check-windows-ready",
            "check-windows-ready --vm w --accel hvf",
        ] {
            assert!(matches!(parsed(bad), Err(Error::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn pass_through_commands_keep_their_arguments_verbatim() {
        let Ok(Parsed::Command(Command::Disk { args }, _)) = parsed("disk show --vm x -v") else {
            panic!("disk did not parse")
        };
        assert_eq!(args, ["show", "--vm", "x", "-v"]);
        // Their own --help goes to them (the disk tool, cargo test).
        let Ok(Parsed::Command(Command::Disk { args }, _)) = parsed("disk --help") else {
            panic!("disk --help did not reach the disk tool")
        };
        assert_eq!(args, ["--help"]);
        let Ok(Parsed::Command(Command::FreshTest { args }, _)) =
            parsed("fresh-test -p xtask -- --nocapture")
        else {
            panic!("fresh-test did not parse")
        };
        assert_eq!(args, ["-p", "xtask", "--", "--nocapture"]);
        let Ok(Parsed::Command(Command::VtpmSim { port, state }, _)) =
            parsed("vtpm-sim --state=/tmp/s --port 2321")
        else {
            panic!("vtpm-sim did not parse")
        };
        assert_eq!((port, state), (2321, PathBuf::from("/tmp/s")));
    }
}
