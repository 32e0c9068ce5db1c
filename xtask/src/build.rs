//! `cargo xtask build`: builds the hypervisor and the bare-metal test guests with
//! their targets and converts their ELFs to flat images at the fixed output
//! paths ([`Layout::hypervisor_image`], [`Layout::guest_image`]).
//!
//! Builds hold a file lock (`target/.xtask-build.lock`), so parallel test threads
//! and concurrent `cargo xtask` processes never build or write the same outputs
//! at once.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::exec::{cargo, run_step};
use crate::flat::{check_arm64_image_header, elf_to_flat};
use crate::layout::{
    Layout, AUTHORITY_BIN, AUTHORITY_PACKAGE, GUEST_BINS, GUEST_PACKAGE, GUEST_TARGET, HYP_PACKAGE,
    HYP_TARGET,
};

/// What `build_all` produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOutputs {
    /// `target/rayos-el2.bin`.
    pub hypervisor: PathBuf,
    /// `target/guests/<bin>.bin` for each of [`GUEST_BINS`], then
    /// `target/guests/authority.bin` (the authority partition).
    pub guests: Vec<PathBuf>,
}

/// Builds the hypervisor and the test guests.
pub fn build_all(layout: &Layout, quiet: bool) -> Result<BuildOutputs, Error> {
    let _lock = BuildLock::acquire(layout)?;
    let hypervisor = build_hypervisor_locked(layout, quiet)?;
    let guests = build_guests_locked(layout, quiet)?;
    Ok(BuildOutputs { hypervisor, guests })
}

/// Builds the hypervisor; returns the flat image's path.
pub fn build_hypervisor(layout: &Layout, quiet: bool) -> Result<PathBuf, Error> {
    let _lock = BuildLock::acquire(layout)?;
    build_hypervisor_locked(layout, quiet)
}

/// Builds the test guests and the authority partition; returns the flat images'
/// paths in [`GUEST_BINS`] order, then the authority's.
pub fn build_guests(layout: &Layout, quiet: bool) -> Result<Vec<PathBuf>, Error> {
    let _lock = BuildLock::acquire(layout)?;
    build_guests_locked(layout, quiet)
}

fn build_hypervisor_locked(layout: &Layout, quiet: bool) -> Result<PathBuf, Error> {
    cargo_build(layout, HYP_PACKAGE, HYP_TARGET, quiet)?;
    let out = layout.hypervisor_image();
    flatten(&layout.release_elf(HYP_TARGET, HYP_PACKAGE), &out, true)?;
    Ok(out)
}

fn build_guests_locked(layout: &Layout, quiet: bool) -> Result<Vec<PathBuf>, Error> {
    cargo_build(layout, GUEST_PACKAGE, GUEST_TARGET, quiet)?;
    cargo_build(layout, AUTHORITY_PACKAGE, GUEST_TARGET, quiet)?;
    GUEST_BINS
        .iter()
        .chain([&AUTHORITY_BIN])
        .map(|bin| {
            let out = layout.guest_image(bin);
            flatten(&layout.release_elf(GUEST_TARGET, bin), &out, false)?;
            Ok(out)
        })
        .collect()
}

fn cargo_build(layout: &Layout, package: &str, target: &str, quiet: bool) -> Result<(), Error> {
    let mut cmd = cargo();
    cmd.args(["build", "-p", package, "--release", "--target", target]);
    run_step(&format!("build {package}"), cmd, &layout.root, quiet)
}

/// Converts the ELF at `elf` to a flat image at `out`; `require_header` demands
/// an arm64 `Image` header at its start.
pub fn flatten(elf: &Path, out: &Path, require_header: bool) -> Result<(), Error> {
    let step = format!("flatten {}", elf.display());
    let data =
        fs::read(elf).map_err(|e| Error::step(&step, format!("cannot read the ELF: {e}")))?;
    let image = elf_to_flat(&data).map_err(|source| Error::Image {
        path: elf.to_path_buf(),
        source,
    })?;
    if require_header {
        check_arm64_image_header(&image.bytes).map_err(|source| Error::Image {
            path: elf.to_path_buf(),
            source,
        })?;
    }
    write_atomic(out, &image.bytes)
}

/// A name beside `path` that no other process or thread writes: where a file
/// is made before it is renamed over `path`.
pub fn beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(
        format!(
            ".{name}.tmp.{}.{:?}",
            std::process::id(),
            std::thread::current().id()
        )
        .replace(['(', ')'], ""),
    )
}

/// Writes `bytes` to `path` through a temporary file and a rename, so readers
/// never see a half-written file; creates the parent directory.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let tmp = beside(path);
    fs::write(&tmp, bytes).map_err(|e| Error::io(format!("write {}", tmp.display()), e))?;
    fs::rename(&tmp, path).map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::io(format!("rename {} to {}", tmp.display(), path.display()), e)
    })
}

/// An exclusive lock on `target/.xtask-build.lock`, released on drop.
struct BuildLock(File);

impl BuildLock {
    fn acquire(layout: &Layout) -> Result<BuildLock, Error> {
        let path = layout.build_lock();
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)
                .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
        }
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
        file.lock()
            .map_err(|e| Error::io(format!("lock {}", path.display()), e))?;
        Ok(BuildLock(file))
    }
}

impl Drop for BuildLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("xtask-build-test-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn atomic_write_replaces_and_creates_dirs() {
        let dir = scratch("atomic");
        let p = dir.join("a/b/out.bin");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(
            fs::read_dir(p.parent().unwrap()).unwrap().count(),
            1,
            "no temporary file left behind"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn build_lock_excludes_other_holders() {
        let dir = scratch("lock");
        let layout = Layout::with_dirs(dir.clone(), dir.join("target"));
        let inside = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..3)
            .map(|_| {
                let (layout, inside) = (layout.clone(), inside.clone());
                std::thread::spawn(move || {
                    let _l = BuildLock::acquire(&layout).unwrap();
                    assert_eq!(
                        inside.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two holders at once"
                    );
                    std::thread::sleep(std::time::Duration::from_millis(30));
                    inside.fetch_sub(1, Ordering::SeqCst);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn flatten_names_a_missing_elf() {
        let dir = scratch("missing");
        let err = flatten(&dir.join("nope"), &dir.join("out.bin"), true)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("flatten ") && err.contains("cannot read the ELF"),
            "{err}"
        );
        fs::remove_dir_all(dir).unwrap();
    }
}
