//! The guest cache: stamps that say what a directory holds, reuse of finished
//! outputs, and the downloaded packages.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use super::{apt, LinuxGuest, BUILD_FORMAT, GUEST_MODULES};

/// A `key=value` stamp file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Stamp(BTreeMap<String, String>);

impl Stamp {
    /// The keys a build stamp must match to be reused.
    pub(super) fn wanted(source: &apt::Source) -> Self {
        let mut s = Stamp::default();
        s.set("format", BUILD_FORMAT.to_string());
        s.set("source", source.describe());
        s.set("wanted_modules", GUEST_MODULES.join(","));
        s
    }

    pub(crate) fn set(&mut self, k: &str, v: impl Into<String>) {
        self.0.insert(k.to_string(), v.into());
    }

    pub(crate) fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    pub(super) fn list(&self, k: &str) -> Vec<String> {
        self.get(k)
            .unwrap_or_default()
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    }

    pub(super) fn matches(&self, want: &Stamp) -> bool {
        want.0.iter().all(|(k, v)| self.get(k) == Some(v.as_str()))
    }

    pub(crate) fn parse(text: &str) -> Self {
        Stamp(
            text.lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    pub(crate) fn render(&self) -> String {
        self.0.iter().map(|(k, v)| format!("{k}={v}\n")).collect()
    }

    pub(crate) fn read(path: &Path) -> Option<Self> {
        fs::read_to_string(path).ok().map(|t| Self::parse(&t))
    }
}

pub(super) fn cached_guest(cache: &Path, want: &Stamp) -> Option<LinuxGuest> {
    let stamp = Stamp::read(&cache.join("stamp"))?;
    let kernel = cache.join("Image");
    let initramfs = cache.join("initramfs.cpio");
    let sizes_ok = [("kernel_size", &kernel), ("initramfs_size", &initramfs)]
        .iter()
        .all(|(k, p)| fs::metadata(p).ok().map(|m| m.len().to_string()).as_deref() == stamp.get(k));
    (stamp.matches(want) && sizes_ok).then(|| LinuxGuest {
        kernel,
        initramfs,
        modules_loaded: stamp.list("modules_loaded"),
        modules_builtin: stamp.list("modules_builtin"),
        modules_missing: stamp.list("modules_missing"),
        kernel_release: stamp.get("kernel_release").unwrap_or_default().to_string(),
        kernel_format: stamp.get("kernel_format").unwrap_or_default().to_string(),
        packages: stamp.list("packages"),
    })
}

/// The downloaded packages.
pub(super) struct Debs {
    pub(super) kernel: PathBuf,
    pub(super) busybox: PathBuf,
    /// `package=version` of each.
    pub(super) packages: Vec<String>,
}

/// Returns the cached packages, downloading them when the cache lacks them.
pub(super) fn ensure_debs(cache: &Path, source: &apt::Source) -> Result<Debs, String> {
    let dir = cache.join("debs");
    let stamp_path = dir.join("stamp");
    let (kernel, busybox) = (dir.join("kernel.deb"), dir.join("busybox.deb"));
    if let Some(s) = Stamp::read(&stamp_path) {
        let present = [("kernel_size", &kernel), ("busybox_size", &busybox)]
            .iter()
            .all(|(k, p)| fs::metadata(p).ok().map(|m| m.len().to_string()).as_deref() == s.get(k));
        if present && s.get("source") == Some(source.describe().as_str()) {
            return Ok(Debs {
                kernel,
                busybox,
                packages: s.list("packages"),
            });
        }
    }

    eprintln!(
        "linux-guest: fetching Debian {} arm64 kernel and busybox with apt",
        source.suite
    );
    let apt = apt::Apt::new(&cache.join("apt"), source)?;
    apt.update()?;
    let (kpkg, kver) = apt.kernel_package()?;
    let (bver, _) = apt.candidate(apt::BUSYBOX_PACKAGE)?;
    let packages = vec![
        format!("{kpkg}={kver}"),
        format!("{}={bver}", apt::BUSYBOX_PACKAGE),
    ];

    let tmp = cache.join(format!("download.{}.tmp", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;
    apt.download(&packages, &tmp)?;
    let find = |pkg: &str| -> Result<PathBuf, String> {
        let prefix = format!("{pkg}_");
        fs::read_dir(&tmp)
            .map_err(|e| e.to_string())?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
            .ok_or_else(|| format!("apt-get download left no {pkg} .deb in {}", tmp.display()))
    };
    let (kdeb, bdeb) = (find(&kpkg)?, find(apt::BUSYBOX_PACKAGE)?);
    fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    let _ = fs::remove_file(&stamp_path);
    for (from, to) in [(&kdeb, &kernel), (&bdeb, &busybox)] {
        fs::rename(from, to)
            .map_err(|e| format!("rename {} -> {}: {e}", from.display(), to.display()))?;
    }
    let _ = fs::remove_dir_all(&tmp);

    let mut s = Stamp::default();
    s.set("source", source.describe());
    s.set("packages", packages.join(","));
    for (k, p) in [("kernel_size", &kernel), ("busybox_size", &busybox)] {
        s.set(
            k,
            fs::metadata(p)
                .map_err(|e| e.to_string())?
                .len()
                .to_string(),
        );
    }
    apt::write(&stamp_path, s.render().as_bytes())?;
    Ok(Debs {
        kernel,
        busybox,
        packages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_round_trip_and_match_only_wanted_keys() {
        let src = apt::Source {
            suite: "bookworm".into(),
            mirror: "m".into(),
            security_mirror: "s".into(),
        };
        let want = Stamp::wanted(&src);
        let mut s = want.clone();
        s.set("modules_loaded", "a,b");
        let back = Stamp::parse(&s.render());
        assert_eq!(back, s);
        assert!(back.matches(&want));
        assert_eq!(back.list("modules_loaded"), ["a", "b"]);
        let other = Stamp::wanted(&apt::Source {
            suite: "trixie".into(),
            ..src
        });
        assert!(!back.matches(&other));
    }

    #[test]
    fn cache_without_a_complete_stamp_is_not_reused() {
        let dir = std::env::temp_dir().join(format!("lg-cache-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let src = apt::Source {
            suite: "bookworm".into(),
            mirror: "m".into(),
            security_mirror: "s".into(),
        };
        let want = Stamp::wanted(&src);
        fs::write(dir.join("Image"), b"kernel").unwrap();
        fs::write(dir.join("initramfs.cpio"), b"cpio").unwrap();
        assert!(cached_guest(&dir, &want).is_none(), "no stamp");
        let mut s = want.clone();
        s.set("kernel_size", "6");
        s.set("initramfs_size", "4");
        s.set("modules_loaded", "virtio_mmio");
        apt::write(&dir.join("stamp"), s.render().as_bytes()).unwrap();
        let g = cached_guest(&dir, &want).unwrap();
        assert_eq!(g.modules_loaded, ["virtio_mmio"]);
        // A truncated output (size differs from the stamp) is rebuilt.
        fs::write(dir.join("Image"), b"kern").unwrap();
        assert!(cached_guest(&dir, &want).is_none());
        fs::remove_dir_all(&dir).unwrap();
    }
}
