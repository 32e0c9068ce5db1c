//! Where things are: the workspace root, cargo's target directory, and the fixed
//! output paths the rest of the project scripts against (`target/rayos-el2.bin`,
//! `target/guests/*.bin`, `target/bundles/*.cpio`, `target/guest-cache`).
//!
//! Outputs always live under `<workspace>/target`, whatever `CARGO_TARGET_DIR`
//! says; cargo's own build products follow `CARGO_TARGET_DIR` as usual.

use std::path::{Path, PathBuf};

/// Target triple of the hypervisor (no FP/SIMD in EL2 code).
pub const HYP_TARGET: &str = "aarch64-unknown-none-softfloat";
/// Target triple of the bare-metal test guests.
pub const GUEST_TARGET: &str = "aarch64-unknown-none";
/// Cargo package (and binary) of the hypervisor.
pub const HYP_PACKAGE: &str = "rayos-el2";
/// Cargo package of the bare-metal test guests.
pub const GUEST_PACKAGE: &str = "selftest-guest";
/// Cargo package of the reference authority partition (`guests/authority`).
pub const AUTHORITY_PACKAGE: &str = "authority-guest";
/// Its binary, flattened to `target/guests/authority.bin`.
pub const AUTHORITY_BIN: &str = "authority";
/// Binaries of [`GUEST_PACKAGE`] converted to flat images.
pub const GUEST_BINS: &[&str] = &[
    "selftest",
    "bench-exits",
    "bench-compose",
    "virtio-hostile",
    "reset-loop",
    "bench-contention",
];

/// Paths of one workspace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The workspace root (holds the root `Cargo.toml`).
    pub root: PathBuf,
    /// Cargo's target directory (`CARGO_TARGET_DIR` or `<root>/target`).
    pub cargo_target: PathBuf,
    /// Where xtask writes its outputs: `<root>/target`.
    pub out: PathBuf,
}

impl Layout {
    /// The workspace this xtask was compiled from, with cargo's target directory
    /// taken from `CARGO_TARGET_DIR` (relative values are relative to the
    /// current directory, as cargo reads them).
    pub fn detect() -> Layout {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("xtask lives one level below the workspace root")
            .to_path_buf();
        let cargo_target = match std::env::var_os("CARGO_TARGET_DIR") {
            Some(dir) if !dir.is_empty() => {
                let dir = PathBuf::from(dir);
                if dir.is_absolute() {
                    dir
                } else {
                    std::env::current_dir()
                        .map(|cwd| cwd.join(&dir))
                        .unwrap_or(dir)
                }
            }
            _ => root.join("target"),
        };
        Layout::with_dirs(root, cargo_target)
    }

    /// A layout with explicit directories (tests).
    pub fn with_dirs(root: PathBuf, cargo_target: PathBuf) -> Layout {
        let out = root.join("target");
        Layout {
            root,
            cargo_target,
            out,
        }
    }

    /// The ELF cargo produces for `bin` built `--release --target triple`.
    pub fn release_elf(&self, triple: &str, bin: &str) -> PathBuf {
        self.cargo_target.join(triple).join("release").join(bin)
    }

    /// The hypervisor's flat image: `target/rayos-el2.bin`.
    pub fn hypervisor_image(&self) -> PathBuf {
        self.out.join("rayos-el2.bin")
    }

    /// A test guest's flat image: `target/guests/<name>.bin`.
    pub fn guest_image(&self, name: &str) -> PathBuf {
        self.out.join("guests").join(format!("{name}.bin"))
    }

    /// A VM's boot bundle: `target/bundles/<name>.cpio`.
    pub fn bundle(&self, name: &str) -> PathBuf {
        self.out.join("bundles").join(format!("{name}.cpio"))
    }

    /// The Linux guest's download and build cache: `target/guest-cache`.
    pub fn guest_cache(&self) -> PathBuf {
        self.out.join("guest-cache")
    }

    /// Debian's AAVMF firmware, fetched and unpacked: `target/firmware-cache`.
    pub fn firmware_cache(&self) -> PathBuf {
        self.out.join("firmware-cache")
    }

    /// The lock file that serialises builds across processes and threads.
    pub fn build_lock(&self) -> PathBuf {
        self.out.join(".xtask-build.lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_paths_are_under_the_workspace_target() {
        let l = Layout::with_dirs(PathBuf::from("/ws"), PathBuf::from("/elsewhere"));
        assert_eq!(l.hypervisor_image(), Path::new("/ws/target/rayos-el2.bin"));
        assert_eq!(
            l.guest_image("selftest"),
            Path::new("/ws/target/guests/selftest.bin")
        );
        assert_eq!(
            l.bundle("linux"),
            Path::new("/ws/target/bundles/linux.cpio")
        );
        assert_eq!(l.guest_cache(), Path::new("/ws/target/guest-cache"));
        assert_eq!(
            l.release_elf(HYP_TARGET, HYP_PACKAGE),
            Path::new("/elsewhere/aarch64-unknown-none-softfloat/release/rayos-el2")
        );
    }

    #[test]
    fn detected_root_holds_the_workspace() {
        let l = Layout::detect();
        assert!(l.root.join("Cargo.toml").is_file());
        assert!(l.root.join("xtask").is_dir());
    }
}
