//! Building the guest from the downloaded packages: the kernel `Image`, the
//! module set and the initramfs layout.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use super::cache::{Debs, Stamp};
use super::{apt, cpio, init, kernel, modules, LinuxGuest, GUEST_MODULES};

/// Extracts the packages and writes `Image`, `initramfs.cpio` and the stamp.
pub(super) fn build(cache: &Path, want: &Stamp, debs: &Debs) -> Result<LinuxGuest, String> {
    let root = cache.join(format!("extract.{}.tmp", std::process::id()));
    let _ = fs::remove_dir_all(&root);
    fs::create_dir_all(&root).map_err(|e| format!("create {}: {e}", root.display()))?;
    let result = build_from(cache, want, debs, &root);
    let _ = fs::remove_dir_all(&root);
    result
}

fn build_from(cache: &Path, want: &Stamp, debs: &Debs, root: &Path) -> Result<LinuxGuest, String> {
    apt::extract(&debs.kernel, root)?;
    apt::extract(&debs.busybox, root)?;

    // The kernel: boot/vmlinuz-<release>.
    let vmlinuz = only_match(&root.join("boot"), "vmlinuz-")?;
    let release = vmlinuz
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or_default()
        .to_string();
    let raw = fs::read(&vmlinuz).map_err(|e| format!("read {}: {e}", vmlinuz.display()))?;
    let (image, format) = kernel::to_image(raw)?;

    // The modules: lib/modules/<release>, or usr/lib/... on merged-/usr packages.
    let mod_root = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| root.join(d).join(&release))
        .find(|p| p.is_dir())
        .ok_or_else(|| format!("kernel package has no lib/modules/{release}"))?;
    let modset = ModuleTree::scan(&mod_root)?;
    let resolution = modules::resolve(GUEST_MODULES, &modset.builtin, |n| modset.deps_of(n))?;

    // The initramfs.
    let busybox = ["bin/busybox", "usr/bin/busybox"]
        .iter()
        .map(|p| root.join(p))
        .find(|p| p.is_file())
        .ok_or("busybox-static package has no bin/busybox")?;
    let busybox = fs::read(&busybox).map_err(|e| format!("read {}: {e}", busybox.display()))?;
    let mut carried = Vec::new();
    for name in &resolution.load_order {
        let rel = modset
            .paths
            .get(name)
            .ok_or_else(|| format!("module {name} vanished"))?;
        let bytes = modset.read(rel)?;
        let dest = format!("/lib/modules/{release}/{}", strip_compression(rel));
        carried.push((name.clone(), dest, bytes));
    }
    let cpio = initramfs(&busybox, &carried)?;

    let kernel_path = cache.join("Image");
    let initramfs_path = cache.join("initramfs.cpio");
    let stamp_path = cache.join("stamp");
    let _ = fs::remove_file(&stamp_path);
    apt::write(&kernel_path, &image)?;
    apt::write(&initramfs_path, &cpio)?;

    let guest = LinuxGuest {
        kernel: kernel_path,
        initramfs: initramfs_path,
        modules_loaded: resolution.load_order,
        modules_builtin: resolution.builtin,
        modules_missing: resolution.missing,
        kernel_release: release,
        kernel_format: format.to_string(),
        packages: debs.packages.clone(),
    };
    let mut s = want.clone();
    s.set("modules_loaded", guest.modules_loaded.join(","));
    s.set("modules_builtin", guest.modules_builtin.join(","));
    s.set("modules_missing", guest.modules_missing.join(","));
    s.set("kernel_release", guest.kernel_release.clone());
    s.set("kernel_format", guest.kernel_format.clone());
    s.set("packages", guest.packages.join(","));
    s.set("kernel_size", image.len().to_string());
    s.set("initramfs_size", cpio.len().to_string());
    apt::write(&stamp_path, s.render().as_bytes())?;
    Ok(guest)
}

/// The single entry of `dir` whose name starts with `prefix`.
fn only_match(dir: &Path, prefix: &str) -> Result<PathBuf, String> {
    let found: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("read {}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => Err(format!(
            "expected one {prefix}* in {}, found {}",
            dir.display(),
            found.len()
        )),
    }
}

/// `x.ko.xz` → `x.ko`.
fn strip_compression(rel: &str) -> &str {
    [".xz", ".zst", ".gz"]
        .iter()
        .find_map(|s| rel.strip_suffix(s))
        .unwrap_or(rel)
}

/// The modules of one kernel release on disk.
struct ModuleTree {
    root: PathBuf,
    /// Module name → path relative to `root` (e.g. `kernel/drivers/...ko`).
    paths: BTreeMap<String, String>,
    /// From `modules.dep`, when the package ships one.
    dep: Option<BTreeMap<String, (String, Vec<String>)>>,
    /// From `modules.builtin`.
    builtin: BTreeSet<String>,
}

impl ModuleTree {
    fn scan(root: &Path) -> Result<Self, String> {
        let mut paths = BTreeMap::new();
        let mut stack = vec![root.join("kernel")];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).map_err(|e| format!("read {}: {e}", dir.display()))? {
                let p = e.map_err(|e| e.to_string())?.path();
                if p.is_dir() {
                    stack.push(p);
                } else if let (Some(name), Ok(rel)) = (
                    p.to_str().and_then(modules::module_name),
                    p.strip_prefix(root),
                ) {
                    paths.insert(name, rel.to_string_lossy().into_owned());
                }
            }
        }
        let dep = match fs::read_to_string(root.join("modules.dep")) {
            Ok(t) => Some(modules::parse_modules_dep(&t)?),
            Err(_) => None,
        };
        let builtin = fs::read_to_string(root.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(modules::module_name)
            .collect();
        Ok(Self {
            root: root.to_path_buf(),
            paths,
            dep,
            builtin,
        })
    }

    fn read(&self, rel: &str) -> Result<Vec<u8>, String> {
        let path = self.root.join(rel);
        let raw = fs::read(&path).map_err(|e| format!("read {}: {e}", path.display()))?;
        match rel.rsplit('.').next() {
            Some("xz") => kernel::decompress("xz", &raw),
            Some("zst") => kernel::decompress("zstd", &raw),
            Some("gz") => kernel::decompress("gzip", &raw),
            _ => Ok(raw),
        }
    }

    fn deps_of(&self, name: &str) -> Result<Option<Vec<String>>, String> {
        if let Some(dep) = &self.dep {
            return Ok(dep.get(name).map(|(_, d)| d.clone()));
        }
        let Some(rel) = self.paths.get(name) else {
            return Ok(None);
        };
        let info = modules::modinfo_of_elf(&self.read(rel)?).map_err(|e| format!("{rel}: {e}"))?;
        if info.name.as_deref().is_some_and(|n| n != name) {
            return Err(format!(
                "{rel} calls itself {:?}, expected {name}",
                info.name
            ));
        }
        Ok(Some(info.depends))
    }
}

/// Lays out the initramfs: busybox, `/init`, `/dev/console` and the modules.
fn initramfs(busybox: &[u8], modules: &[(String, String, Vec<u8>)]) -> Result<Vec<u8>, String> {
    /// `/dev/console` is character device 5:1 (Documentation/admin-guide/devices.txt).
    const CONSOLE_DEV: (u32, u32) = (5, 1);
    let io = |e: std::io::Error| format!("initramfs: {e}");
    let mut dirs: BTreeSet<String> = [
        "bin", "sbin", "usr", "usr/bin", "usr/sbin", "dev", "proc", "sys", "tmp", "run", "lib",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (_, path, _) in modules {
        let mut p = Path::new(path.trim_start_matches('/'));
        while let Some(parent) = p.parent().filter(|p| !p.as_os_str().is_empty()) {
            dirs.insert(parent.to_string_lossy().into_owned());
            p = parent;
        }
    }
    let script = init::init_script(
        &modules
            .iter()
            .map(|(name, path, _)| init::InitModule { name, path })
            .collect::<Vec<_>>(),
    )?;

    let mut w = cpio::CpioWriter::new(Vec::new());
    // Sorted, so every parent precedes its children.
    for d in &dirs {
        w.dir(d, if d == "tmp" { 0o1777 } else { 0o755 })
            .map_err(io)?;
    }
    w.char_dev("dev/console", 0o600, CONSOLE_DEV.0, CONSOLE_DEV.1)
        .map_err(io)?;
    w.file("bin/busybox", 0o755, busybox).map_err(io)?;
    w.symlink("bin/sh", "busybox").map_err(io)?;
    w.file("init", 0o755, script.as_bytes()).map_err(io)?;
    for (_, path, bytes) in modules {
        w.file(path, 0o644, bytes).map_err(io)?;
    }
    w.finish().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn initramfs_has_init_console_busybox_and_modules() {
        let mods = vec![
            (
                "drm".to_string(),
                "/lib/modules/6.1.0-x/kernel/drivers/gpu/drm/drm.ko".to_string(),
                b"drm".to_vec(),
            ),
            (
                "virtio_gpu".to_string(),
                "/lib/modules/6.1.0-x/kernel/drivers/gpu/drm/virtio/virtio-gpu.ko".to_string(),
                b"gpu".to_vec(),
            ),
        ];
        let bytes = initramfs(b"BUSYBOX", &mods).unwrap();
        let entries = cpio::parse::parse(&bytes).unwrap();
        let by_name: BTreeMap<_, _> = entries.iter().map(|e| (e.name.as_str(), e)).collect();
        assert_eq!(by_name["bin/busybox"].data, b"BUSYBOX");
        assert_eq!(by_name["bin/sh"].data, b"busybox");
        assert_eq!(by_name["dev/console"].rdev, (5, 1));
        assert_eq!(
            by_name["dev/console"].mode & cpio::mode::S_IFMT,
            cpio::mode::S_IFCHR
        );
        let init = String::from_utf8(by_name["init"].data.clone()).unwrap();
        assert!(init.contains("load_module virtio_gpu /lib/modules/6.1.0-x/kernel/drivers/gpu/drm/virtio/virtio-gpu.ko"));
        assert_eq!(
            by_name["lib/modules/6.1.0-x/kernel/drivers/gpu/drm/drm.ko"].data,
            b"drm"
        );
        // Every entry's parent directory comes before it.
        for (i, e) in entries.iter().enumerate() {
            if let Some((parent, _)) = e.name.rsplit_once('/') {
                let at = entries
                    .iter()
                    .position(|d| d.name == parent)
                    .unwrap_or_else(|| panic!("no dir {parent}"));
                assert!(at < i && entries[at].mode & cpio::mode::S_IFMT == cpio::mode::S_IFDIR);
            }
        }
    }

    #[test]
    fn compression_suffixes_are_stripped() {
        assert_eq!(strip_compression("kernel/a/x.ko.xz"), "kernel/a/x.ko");
        assert_eq!(strip_compression("kernel/a/x.ko"), "kernel/a/x.ko");
    }
}
