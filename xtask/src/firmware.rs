//! Debian's AAVMF: the EDK2 ArmVirtQemu firmware for arm64 VMs (package
//! `qemu-efi-aarch64`), fetched with the same private apt state as the Linux
//! guest and unpacked under `target/firmware-cache`.
//!
//! Cache layout (`<cache>` is `<workspace>/target/firmware-cache`):
//! - `AAVMF_CODE.fd`     the firmware volume (64 MiB, Secure Boot capable)
//! - `AAVMF_VARS.fd`     an empty variable store (Secure Boot off)
//! - `AAVMF_VARS.ms.fd`  a variable store with Microsoft's keys enrolled (Secure Boot on)
//! - `stamp`             what the files are (package version, apt source); written last
//!
//! A run with a valid stamp runs no external tool. Delete the directory to fetch
//! the newest package again.

use std::fs;
use std::path::{Path, PathBuf};

use crate::linux_guest::apt;
use crate::linux_guest::cache::Stamp;

/// The Debian package that carries AAVMF.
pub const AAVMF_PACKAGE: &str = "qemu-efi-aarch64";
/// Size of each flash image (one CFI bank of QEMU `virt`).
pub const FLASH_BANK_SIZE: u64 = 64 << 20;
/// The files taken from the package: (path in the package, name in the cache).
const FILES: [(&str, &str); 3] = [
    ("usr/share/AAVMF/AAVMF_CODE.fd", "AAVMF_CODE.fd"),
    ("usr/share/AAVMF/AAVMF_VARS.fd", "AAVMF_VARS.fd"),
    ("usr/share/AAVMF/AAVMF_VARS.ms.fd", "AAVMF_VARS.ms.fd"),
];

/// The unpacked firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aavmf {
    /// The code bank (flash 0).
    pub code: PathBuf,
    /// An empty variable store (flash 1, Secure Boot off).
    pub vars: PathBuf,
    /// A variable store with Microsoft's keys enrolled (flash 1, Secure Boot on).
    pub vars_ms: PathBuf,
    /// `qemu-efi-aarch64=<version>`.
    pub package: String,
}

impl Aavmf {
    fn at(cache: &Path, package: String) -> Self {
        Aavmf {
            code: cache.join(FILES[0].1),
            vars: cache.join(FILES[1].1),
            vars_ms: cache.join(FILES[2].1),
            package,
        }
    }

    /// The variable store for Secure Boot on (`true`) or off.
    pub fn vars_for(&self, secure_boot: bool) -> &Path {
        if secure_boot {
            &self.vars_ms
        } else {
            &self.vars
        }
    }
}

/// Returns the cached firmware, fetching `qemu-efi-aarch64` when the cache lacks
/// it. `cache` is `<workspace>/target/firmware-cache`; the apt state is shared
/// with the Linux guest's (`apt_root`, normally `target/guest-cache/apt`).
pub fn ensure_aavmf(cache: &Path, apt_root: &Path) -> Result<Aavmf, String> {
    let source = apt::Source::from_env();
    let stamp_path = cache.join("stamp");
    if let Some(s) = Stamp::read(&stamp_path) {
        if s.get("source") == Some(source.describe().as_str()) && complete(cache) {
            return Ok(Aavmf::at(
                cache,
                s.get("package").unwrap_or_default().into(),
            ));
        }
    }
    fs::create_dir_all(cache).map_err(|e| format!("create {}: {e}", cache.display()))?;
    let _ = fs::remove_file(&stamp_path);
    eprintln!(
        "firmware: fetching Debian {} {AAVMF_PACKAGE} (AAVMF) with apt",
        source.suite
    );
    let apt = apt::Apt::new(apt_root, &source)?;
    apt.update()?;
    let (version, _) = apt.candidate(AAVMF_PACKAGE)?;
    let package = format!("{AAVMF_PACKAGE}={version}");

    let tmp = cache.join(format!("download.{}.tmp", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
    apt.download(std::slice::from_ref(&package), &tmp)?;
    let deb = fs::read_dir(&tmp)
        .map_err(|e| format!("read {}: {e}", tmp.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| format!("apt-get download left no .deb in {}", tmp.display()))?;
    let root = tmp.join("root");
    apt::extract(&deb, &root)?;
    for (from, to) in FILES {
        let src = root.join(from);
        let len = fs::metadata(&src)
            .map_err(|e| format!("{AAVMF_PACKAGE} has no {from}: {e}"))?
            .len();
        if len != FLASH_BANK_SIZE {
            return Err(format!(
                "{AAVMF_PACKAGE}: {from} is {len} bytes, not one {FLASH_BANK_SIZE}-byte flash bank"
            ));
        }
        fs::rename(&src, cache.join(to))
            .map_err(|e| format!("move {} into {}: {e}", src.display(), cache.display()))?;
    }
    let _ = fs::remove_dir_all(&tmp);
    let mut stamp = Stamp::default();
    stamp.set("source", source.describe());
    stamp.set("package", package.clone());
    apt::write(&stamp_path, stamp.render().as_bytes())?;
    Ok(Aavmf::at(cache, package))
}

/// Every file is present with a flash bank's size.
fn complete(cache: &Path) -> bool {
    FILES
        .iter()
        .all(|(_, name)| fs::metadata(cache.join(name)).is_ok_and(|m| m.len() == FLASH_BANK_SIZE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cache_with_a_stamp_but_a_short_file_is_incomplete() {
        let dir = std::env::temp_dir().join(format!("aavmf-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        for (_, name) in FILES {
            let f = fs::File::create(dir.join(name)).unwrap();
            f.set_len(FLASH_BANK_SIZE).unwrap();
        }
        assert!(complete(&dir));
        fs::File::create(dir.join(FILES[1].1))
            .unwrap()
            .set_len(4096)
            .unwrap();
        assert!(!complete(&dir));
        let _ = fs::remove_dir_all(&dir);
    }
}
