//! `cargo xtask test`: the whole suite, as CI runs it (`.ci/run`). Set-up (QEMU,
//! rustup targets, cargo-deny), `cargo xtask build`, the lint and audit gates
//! (`cargo fmt --check`, clippy `-D warnings` on every crate, `cargo deny`), then
//! the host tests of the default members (the integration tests among them boot
//! QEMU; several test executables at a time, [`crate::pool`]) in the fresh-host namespace ([`crate::fresh`]: QEMU's firmware files from
//! optional packages hidden). Every step runs even after a failure, so one run
//! shows everything that is broken; the last line sums up.

use std::process::Command;
use std::time::Instant;

use crate::build::build_all;
use crate::error::Error;
use crate::exec::{cargo, run_step};
use crate::fresh;
use crate::layout::{AUTHORITY_PACKAGE, GUEST_PACKAGE, GUEST_TARGET, HYP_PACKAGE, HYP_TARGET};
use crate::setup::{ensure_cargo_deny, ensure_qemu, ensure_rust_targets, ensure_tools, TEST_TOOLS};
use crate::Layout;

/// One step of the suite.
struct Check {
    name: String,
    result: Result<(), Error>,
}

/// The step that runs in the fresh-host namespace: the host tests, with the
/// QEMU integration tests, several test executables at a time
/// ([`crate::pool`], xtask's hidden `test-pool` command).
pub const FRESH_STEP: &str = "tests";

/// Scratch folder of the fresh-host namespace (mounted over inside it only).
pub fn fresh_stage(layout: &Layout) -> std::path::PathBuf {
    layout.out.join("fresh-namespace")
}

/// `cargo test ARGS` in the fresh-host namespace (`cargo xtask fresh-test`).
pub fn fresh_test_cli(layout: &Layout, args: &[String]) -> Result<(), Error> {
    ensure_qemu(false)?;
    let mut cmd = cargo();
    cmd.arg("test").args(args);
    let wrapped = fresh::wrap(&cmd, &fresh_stage(layout))?;
    run_step(fresh::STEP, wrapped, &layout.root, false)
}

/// The cargo steps after the build, as `(name, cargo arguments)`: the house
/// rules first (formatting; clippy with `-D warnings` on every crate, the host
/// crates with all their targets, the bare-metal ones for their targets; the
/// lints every crate takes from `[workspace.lints]`; cargo-deny's offline checks),
/// then the tests. Plain `cargo test`/`cargo clippy` at the root cover the
/// workspace's default members: every host crate, without the bare-metal ones
/// (which `--workspace` would include).
pub fn cargo_steps() -> Vec<(String, Vec<String>)> {
    let step = |name: &str, args: &[&str]| {
        (
            name.to_string(),
            args.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        )
    };
    let clippy = |package: &str, target: &str| {
        step(
            &format!("clippy {package}"),
            &[
                "clippy", "-p", package, "--target", target, "--", "-D", "warnings",
            ],
        )
    };
    vec![
        step("fmt", &["fmt", "--all", "--check"]),
        step(
            "clippy host crates",
            &[
                "clippy",
                "--all-targets",
                "--features",
                HOST_FEATURES,
                "--",
                "-D",
                "warnings",
            ],
        ),
        clippy(HYP_PACKAGE, HYP_TARGET),
        clippy(GUEST_PACKAGE, GUEST_TARGET),
        clippy(AUTHORITY_PACKAGE, GUEST_TARGET),
        step(DENY_STEP, &["deny", "check", "licenses", "bans", "sources"]),
        step(FRESH_STEP, &["test-pool", "--features", HOST_FEATURES]),
    ]
}

/// Features the host steps turn on: the vTPM's `std` side (its MS-simulator server,
/// and the differential tests against swtpm, which `required-features` would
/// otherwise skip without a word).
pub const HOST_FEATURES: &str = "vtpm/std";

/// The cargo-deny step: licences, banned and duplicate crates, sources. Its
/// advisories check needs the RustSec database from GitHub, which the suite does
/// not assume it can reach (see deny.toml).
pub const DENY_STEP: &str = "cargo deny";

/// Whether a step of [`cargo_steps`] is a gate (`cargo xtask lint` runs those).
pub fn is_gate(name: &str) -> bool {
    name != FRESH_STEP
}

/// Runs the suite; `Err` names the failed steps.
pub fn test_cli(layout: &Layout) -> Result<(), Error> {
    let setup = ensure_qemu(false)
        .and_then(|()| ensure_tools(TEST_TOOLS, false))
        .and_then(|()| ensure_rust_targets(layout, false))
        .and_then(|()| ensure_cargo_deny(false));
    run_steps(layout, "xtask test", setup, true, |_| true)
}

/// `cargo xtask lint`: the suite's gates alone (no build, no tests).
pub fn lint_cli(layout: &Layout) -> Result<(), Error> {
    let setup = ensure_rust_targets(layout, false).and_then(|()| ensure_cargo_deny(false));
    run_steps(layout, "xtask lint", setup, false, is_gate)
}

/// Runs the build (when `build`) and the cargo steps `pick` keeps, every one even
/// after a failure; the last line names each step with its time and sums up.
fn run_steps(
    layout: &Layout,
    title: &str,
    setup: Result<(), Error>,
    build: bool,
    pick: impl Fn(&str) -> bool,
) -> Result<(), Error> {
    let start = Instant::now();
    if let Err(e) = setup {
        println!("{title}: FAILED at set-up: {e}");
        return Err(Error::step(title, "set-up failed"));
    }
    let mut checks = Vec::new();
    let mut check = |name: &str, step_start: Instant, result: Result<(), Error>| {
        if let Err(e) = &result {
            eprintln!("xtask: {name} FAILED: {e}");
        }
        checks.push(Check {
            name: format!("{name} ({} s)", step_start.elapsed().as_secs()),
            result,
        });
    };
    if build {
        let t = Instant::now();
        check("build", t, build_all(layout, false).map(|_| ()));
    }
    for (name, args) in cargo_steps().into_iter().filter(|(n, _)| pick(n)) {
        let t = Instant::now();
        // The tests step is this program's own `test-pool`; the rest are cargo's.
        let mut cmd = if name == FRESH_STEP {
            match std::env::current_exe() {
                Ok(exe) => Command::new(exe),
                Err(e) => {
                    check(&name, t, Err(Error::io("find xtask's own executable", e)));
                    continue;
                }
            }
        } else {
            cargo()
        };
        cmd.args(&args);
        if name == FRESH_STEP {
            let step = format!("{name} ({})", fresh::STEP);
            let result = fresh::wrap(&cmd, &fresh_stage(layout))
                .and_then(|w| run_step(&step, w, &layout.root, false));
            check(&step, t, result);
        } else {
            check(&name, t, run_step(&name, cmd, &layout.root, false));
        }
    }

    let secs = start.elapsed().as_secs();
    let failed: Vec<&str> = checks
        .iter()
        .filter(|c| c.result.is_err())
        .map(|c| c.name.as_str())
        .collect();
    let names: Vec<&str> = checks.iter().map(|c| c.name.as_str()).collect();
    if failed.is_empty() {
        println!("{title}: OK — {} in {secs} s", names.join(", "));
        Ok(())
    } else {
        println!(
            "{title}: FAILED — {} (of {}) in {secs} s",
            failed.join(", "),
            names.join(", ")
        );
        Err(Error::step(title, format!("failed: {}", failed.join(", "))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_runs_the_gates_then_the_host_tests() {
        let steps = cargo_steps();
        let lines: Vec<String> = steps.iter().map(|(_, a)| a.join(" ")).collect();
        assert_eq!(
            lines,
            [
                "fmt --all --check",
                "clippy --all-targets --features vtpm/std -- -D warnings",
                "clippy -p rayos-el2 --target aarch64-unknown-none-softfloat -- -D warnings",
                "clippy -p selftest-guest --target aarch64-unknown-none -- -D warnings",
                "clippy -p authority-guest --target aarch64-unknown-none -- -D warnings",
                "deny check licenses bans sources",
                "test-pool --features vtpm/std",
            ]
        );
        assert_eq!(steps[5].0, DENY_STEP);
        assert_eq!(steps[6].0, FRESH_STEP);
        let gates: Vec<&str> = steps
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| is_gate(n))
            .collect();
        assert_eq!(gates.len(), 6, "{gates:?}");
    }

    /// Every crate of the workspace takes the house lints.
    #[test]
    fn every_member_opts_into_the_workspace_lints() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("undocumented_unsafe_blocks = \"deny\""));
        let members = manifest
            .split("members = [")
            .nth(1)
            .and_then(|m| m.split(']').next())
            .unwrap();
        let mut n = 0;
        for m in members.split(',').map(|m| m.trim().trim_matches('"')) {
            if m.is_empty() {
                continue;
            }
            let text = std::fs::read_to_string(root.join(m).join("Cargo.toml")).unwrap();
            assert!(text.contains("[lints]\nworkspace = true"), "{m}");
            n += 1;
        }
        assert!(n >= 16, "{n} members");
    }
}
