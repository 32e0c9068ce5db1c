//! Host set-up the other commands need: QEMU (installed with apt-get when we are
//! root on a Debian-like host, otherwise a one-line instruction) and the rustup
//! targets of the bare-metal crates.

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use crate::error::Error;
use crate::exec::{can_run, run_step};
use crate::layout::{Layout, GUEST_TARGET, HYP_TARGET};

/// The QEMU system emulator for 64-bit Arm.
pub const QEMU_BIN: &str = "qemu-system-aarch64";
/// The Debian package that ships [`QEMU_BIN`].
pub const QEMU_APT_PACKAGE: &str = "qemu-system-arm";

/// Whether `apt-get update` already ran in this process (it runs at most once).
static APT_UPDATED: Mutex<bool> = Mutex::new(false);

/// Host tools the test suite drives, as `(binary, Debian package)`: swtpm and
/// tpm2-tools for the TPM differential tests (`vtpm/tests/differential.rs`,
/// `bench tpm`), OpenSSL to verify TPM signatures, ACPICA's `iasl` to disassemble
/// the generated ACPI tables (`acpi-gen/tests/tables.rs`).
pub const TEST_TOOLS: &[(&str, &str)] = &[
    ("swtpm", "swtpm"),
    ("tpm2_getcap", "tpm2-tools"),
    ("openssl", "openssl"),
    ("iasl", "acpica-tools"),
];

/// The decompressors the Linux guest's kernel and modules may need, as
/// `(binary, Debian package)`; each is installed when first needed.
pub const DECOMPRESSORS: &[(&str, &str)] =
    &[("gzip", "gzip"), ("xz", "xz-utils"), ("zstd", "zstd")];

/// What the fresh-host namespace of `cargo xtask test` runs ([`crate::fresh`]),
/// as `(binary, Debian package)`; `sh` and `dpkg-query` come from essential
/// packages.
pub const NAMESPACE_TOOLS: &[(&str, &str)] = &[("unshare", "util-linux"), ("mount", "mount")];

/// Makes sure [`QEMU_BIN`] runs, installing it when we can.
pub fn ensure_qemu(quiet: bool) -> Result<(), Error> {
    ensure_tools(&[(QEMU_BIN, QEMU_APT_PACKAGE)], quiet)
}

/// Makes sure each `(binary, package)` runs, installing the missing packages with
/// apt-get when we are root on a Debian-like host; otherwise one line says what to run.
pub fn ensure_tools(tools: &[(&str, &str)], quiet: bool) -> Result<(), Error> {
    let present = |bin: &str| can_run(bin, "--version");
    let missing: Vec<&(&str, &str)> = tools.iter().filter(|(bin, _)| !present(bin)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let packages: Vec<&str> = missing.iter().map(|(_, p)| *p).collect();
    let step = format!("install {}", packages.join(" "));
    if !is_root() || !can_run("apt-get", "--version") {
        return Err(Error::step(
            &step,
            format!(
                "{} not found; install them (Debian/Ubuntu: `sudo apt-get install -y {}`) and retry",
                missing.iter().map(|(b, _)| *b).collect::<Vec<_>>().join(", "),
                packages.join(" ")
            ),
        ));
    }
    // Held across update + install so two threads never run apt at once.
    let mut updated = APT_UPDATED.lock().unwrap_or_else(|p| p.into_inner());
    if !*updated {
        let mut update = Command::new("apt-get");
        update
            .arg("update")
            .env("DEBIAN_FRONTEND", "noninteractive");
        run_step("apt-get update", update, Path::new("/"), quiet)?;
        *updated = true;
    }
    let mut install = Command::new("apt-get");
    install
        .args(["install", "-y", "--no-install-recommends"])
        .args(&packages)
        .env("DEBIAN_FRONTEND", "noninteractive");
    run_step(&step, install, Path::new("/"), quiet)?;
    match missing.iter().find(|(bin, _)| !present(bin)) {
        None => Ok(()),
        Some((bin, pkg)) => Err(Error::step(
            &step,
            format!("{pkg} installed but {bin} still does not run"),
        )),
    }
}

/// Makes sure the rustup targets of the bare-metal crates are installed for the
/// workspace's toolchain (rust-toolchain.toml).
pub fn ensure_rust_targets(layout: &Layout, quiet: bool) -> Result<(), Error> {
    let step = "rustup targets";
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .current_dir(&layout.root)
        .output()
        .map_err(|e| Error::step(step, format!("cannot run rustc: {e}")))?;
    if !out.status.success() {
        return Err(Error::step(
            step,
            format!(
                "`rustc --print sysroot` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    let sysroot = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let missing: Vec<&str> = [HYP_TARGET, GUEST_TARGET]
        .into_iter()
        .filter(|t| !Path::new(&sysroot).join("lib/rustlib").join(t).is_dir())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let mut add = Command::new("rustup");
    add.args(["target", "add"]).args(&missing);
    run_step(step, add, &layout.root, quiet)
}

/// The cargo-deny release the suite installs when `cargo deny` is missing.
pub const CARGO_DENY_VERSION: &str = "0.20.2";

/// Makes sure `cargo deny` runs: installed once with `cargo install --locked`
/// into cargo's own bin folder (`~/.cargo/bin`), where later runs find it, so
/// only the first run on a machine pays for the build (a few minutes).
pub fn ensure_cargo_deny(quiet: bool) -> Result<(), Error> {
    let runs = || {
        Command::new("cargo")
            .args(["deny", "--version"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if runs() {
        return Ok(());
    }
    let step = "install cargo-deny";
    eprintln!("xtask: cargo-deny not found; `cargo install --locked cargo-deny@{CARGO_DENY_VERSION}` (once per machine)");
    let mut install = Command::new("cargo");
    install
        .args(["install", "--locked"])
        .arg(format!("cargo-deny@{CARGO_DENY_VERSION}"));
    run_step(step, install, Path::new("/"), quiet).map_err(|e| {
        Error::step(
            step,
            format!("{e}; install it yourself (`cargo install --locked cargo-deny`) and retry"),
        )
    })?;
    if runs() {
        Ok(())
    } else {
        Err(Error::step(
            step,
            "installed, but `cargo deny --version` still fails (is ~/.cargo/bin on PATH?)",
        ))
    }
}

/// Whether this process runs as root (uid 0).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("Uid:")
                    .map(|r| r.split_whitespace().next() == Some("0"))
            })
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(dir: &Path, out: &mut String) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                sources(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") && !p.ends_with("setup.rs") {
                out.push_str(&std::fs::read_to_string(&p).unwrap());
            }
        }
    }

    #[test]
    fn every_tool_installed_is_one_something_runs() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut text = String::new();
        for d in ["xtask/src", "tests", "vtpm/tests", "acpi-gen/tests"] {
            sources(&root.join(d), &mut text);
        }
        for (bin, _) in TEST_TOOLS
            .iter()
            .chain(DECOMPRESSORS)
            .chain(NAMESPACE_TOOLS)
        {
            assert!(
                text.contains(&format!("\"{bin}")),
                "{bin} is installed but nothing outside setup.rs names it"
            );
        }
    }

    #[test]
    fn root_check_reads_the_real_uid() {
        let id = Command::new("id").arg("-u").output().unwrap();
        let uid = String::from_utf8_lossy(&id.stdout).trim().to_string();
        assert_eq!(is_root(), uid == "0");
    }
}
