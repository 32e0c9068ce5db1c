//! Kernel-module dependency resolution for the guest initramfs.
//!
//! Debian's kernel package ships no `modules.dep` (depmod writes it at install
//! time), so dependencies come from each module's `.modinfo` ELF section
//! (`depends=a,b`). A `modules.dep` file is used instead when one exists. The
//! result is a load order in which every module follows its dependencies.

use std::collections::{BTreeMap, BTreeSet};

/// Module file suffixes, longest first, as shipped uncompressed or compressed.
pub const MODULE_SUFFIXES: [&str; 4] = [".ko.xz", ".ko.zst", ".ko.gz", ".ko"];

/// The kernel's module name for a module file path: the file name without its
/// `.ko*` suffix, with `-` replaced by `_` (so `virtio-gpu.ko` is `virtio_gpu`).
pub fn module_name(path: &str) -> Option<String> {
    let file = path.rsplit('/').next()?;
    let stem = MODULE_SUFFIXES.iter().find_map(|s| file.strip_suffix(s))?;
    (!stem.is_empty()).then(|| stem.replace('-', "_"))
}

/// Normalises a name the user or a `depends=` list gives (`-` and `_` are the same).
pub fn normalise(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// Parses `modules.dep` (`kernel/a/x.ko: kernel/b/y.ko kernel/c/z.ko`) into
/// module name → (relative path, dependency names).
pub fn parse_modules_dep(text: &str) -> Result<BTreeMap<String, (String, Vec<String>)>, String> {
    let mut out = BTreeMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (path, deps) = line
            .split_once(':')
            .ok_or_else(|| format!("modules.dep line {}: no ':'", n + 1))?;
        let name = module_name(path.trim())
            .ok_or_else(|| format!("modules.dep line {}: {path} is not a module", n + 1))?;
        let deps = deps
            .split_whitespace()
            .map(|d| {
                module_name(d)
                    .ok_or_else(|| format!("modules.dep line {}: {d} is not a module", n + 1))
            })
            .collect::<Result<Vec<_>, _>>()?;
        out.insert(name, (path.trim().to_string(), deps));
    }
    Ok(out)
}

/// ELF64 little-endian header and section-header offsets (see elf(5)).
mod elf {
    pub const MAGIC: &[u8; 4] = b"\x7fELF";
    pub const EI_CLASS: usize = 4;
    pub const ELFCLASS64: u8 = 2;
    pub const EI_DATA: usize = 5;
    pub const ELFDATA2LSB: u8 = 1;
    pub const E_SHOFF: usize = 0x28;
    pub const E_SHENTSIZE: usize = 0x3A;
    pub const E_SHNUM: usize = 0x3C;
    pub const E_SHSTRNDX: usize = 0x3E;
    pub const SHDR_LEN: usize = 0x40;
    pub const SH_NAME: usize = 0x00;
    pub const SH_OFFSET: usize = 0x18;
    pub const SH_SIZE: usize = 0x20;
}

fn le(bytes: &[u8], at: usize, len: usize) -> Result<u64, String> {
    let b = bytes
        .get(at..at + len)
        .ok_or_else(|| format!("ELF field at {at:#x} out of range"))?;
    Ok(b.iter()
        .rev()
        .fold(0u64, |acc, &x| (acc << 8) | u64::from(x)))
}

fn section(elf_bytes: &[u8], shdr: usize) -> Result<&[u8], String> {
    let off = le(elf_bytes, shdr + elf::SH_OFFSET, 8)? as usize;
    let size = le(elf_bytes, shdr + elf::SH_SIZE, 8)? as usize;
    elf_bytes
        .get(off..off.checked_add(size).ok_or("ELF section overflows")?)
        .ok_or_else(|| "ELF section out of range".into())
}

/// Returns the bytes of the section called `wanted` in a 64-bit little-endian ELF file.
pub fn elf_section<'a>(elf_bytes: &'a [u8], wanted: &str) -> Result<Option<&'a [u8]>, String> {
    if elf_bytes.get(..4) != Some(elf::MAGIC)
        || elf_bytes.get(elf::EI_CLASS) != Some(&elf::ELFCLASS64)
        || elf_bytes.get(elf::EI_DATA) != Some(&elf::ELFDATA2LSB)
    {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let shoff = le(elf_bytes, elf::E_SHOFF, 8)? as usize;
    let shentsize = le(elf_bytes, elf::E_SHENTSIZE, 2)? as usize;
    let shnum = le(elf_bytes, elf::E_SHNUM, 2)? as usize;
    let shstrndx = le(elf_bytes, elf::E_SHSTRNDX, 2)? as usize;
    if shentsize < elf::SHDR_LEN || shstrndx >= shnum {
        return Err("malformed ELF section table".into());
    }
    let shdr = |i: usize| shoff + i * shentsize;
    let names = section(elf_bytes, shdr(shstrndx))?;
    for i in 0..shnum {
        let name_off = le(elf_bytes, shdr(i) + elf::SH_NAME, 4)? as usize;
        let name = names
            .get(name_off..)
            .ok_or("ELF section name out of range")?;
        let name = name.split(|&b| b == 0).next().unwrap_or_default();
        if name == wanted.as_bytes() {
            return section(elf_bytes, shdr(i)).map(Some);
        }
    }
    Ok(None)
}

/// What a module's `.modinfo` says about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModInfo {
    /// `name=`, when present.
    pub name: Option<String>,
    /// `depends=`, split on commas; empty when the module depends on nothing.
    pub depends: Vec<String>,
}

/// Parses the NUL-separated `key=value` strings of a `.modinfo` section.
pub fn parse_modinfo(section: &[u8]) -> ModInfo {
    let mut info = ModInfo {
        name: None,
        depends: Vec::new(),
    };
    for entry in section.split(|&b| b == 0) {
        let Ok(entry) = std::str::from_utf8(entry) else {
            continue;
        };
        if let Some(v) = entry.strip_prefix("name=") {
            info.name = Some(normalise(v));
        } else if let Some(v) = entry.strip_prefix("depends=") {
            info.depends = v
                .split(',')
                .filter(|d| !d.trim().is_empty())
                .map(normalise)
                .collect();
        }
    }
    info
}

/// Reads the `.modinfo` of an (uncompressed) module image.
pub fn modinfo_of_elf(elf_bytes: &[u8]) -> Result<ModInfo, String> {
    let section = elf_section(elf_bytes, ".modinfo")?.ok_or("module has no .modinfo section")?;
    Ok(parse_modinfo(section))
}

/// The outcome of resolving the wanted modules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolution {
    /// Modules to load, each after all of its dependencies.
    pub load_order: Vec<String>,
    /// Wanted modules that are built into the kernel (nothing to load).
    pub builtin: Vec<String>,
    /// Wanted modules or dependencies that exist neither as a module nor built in.
    pub missing: Vec<String>,
}

/// Resolves `wanted` into a load order. `deps_of(name)` returns the module's
/// dependencies, or `None` when no such module file exists; `builtin` lists the
/// modules compiled into the kernel. A dependency cycle is an error.
pub fn resolve<F>(
    wanted: &[&str],
    builtin: &BTreeSet<String>,
    mut deps_of: F,
) -> Result<Resolution, String>
where
    F: FnMut(&str) -> Result<Option<Vec<String>>, String>,
{
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: BTreeMap<String, Mark> = BTreeMap::new();
    let mut res = Resolution::default();
    // Iterative post-order DFS; each frame is a module and its remaining deps.
    for &root in wanted {
        let root = normalise(root);
        if marks.contains_key(&root) {
            continue;
        }
        if builtin.contains(&root) {
            res.builtin.push(root.clone());
            marks.insert(root, Mark::Done);
            continue;
        }
        let mut stack: Vec<(String, Vec<String>)> = Vec::new();
        match deps_of(&root)? {
            Some(deps) => {
                marks.insert(root.clone(), Mark::Visiting);
                stack.push((root, deps.into_iter().rev().collect()));
            }
            None => {
                res.missing.push(root.clone());
                marks.insert(root, Mark::Done);
            }
        }
        while let Some((name, pending)) = stack.last_mut() {
            let Some(dep) = pending.pop() else {
                let name = name.clone();
                stack.pop();
                marks.insert(name.clone(), Mark::Done);
                res.load_order.push(name);
                continue;
            };
            let dep = normalise(&dep);
            match marks.get(&dep) {
                Some(Mark::Done) => continue,
                Some(Mark::Visiting) => {
                    return Err(format!(
                        "module dependency cycle through {dep} (needed by {name})"
                    ))
                }
                None => {}
            }
            if builtin.contains(&dep) {
                marks.insert(dep, Mark::Done);
                continue;
            }
            match deps_of(&dep)? {
                Some(deps) => {
                    marks.insert(dep.clone(), Mark::Visiting);
                    stack.push((dep, deps.into_iter().rev().collect()));
                }
                None => {
                    res.missing.push(dep.clone());
                    marks.insert(dep, Mark::Done);
                }
            }
        }
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE_DEP: &str = "\
kernel/drivers/virtio/virtio_mmio.ko:
kernel/drivers/gpu/drm/virtio/virtio-gpu.ko: kernel/drivers/gpu/drm/drm_kms_helper.ko kernel/drivers/gpu/drm/drm_shmem_helper.ko kernel/drivers/virtio/virtio_dma_buf.ko kernel/drivers/gpu/drm/drm.ko
kernel/drivers/gpu/drm/drm_kms_helper.ko: kernel/drivers/gpu/drm/drm.ko kernel/drivers/i2c/algos/i2c-algo-bit.ko
kernel/drivers/gpu/drm/drm_shmem_helper.ko: kernel/drivers/gpu/drm/drm.ko
kernel/drivers/virtio/virtio_dma_buf.ko:
kernel/drivers/gpu/drm/drm.ko:
kernel/drivers/char/tpm/tpm_tis.ko.xz: kernel/drivers/char/tpm/tpm_tis_core.ko.xz
kernel/drivers/char/tpm/tpm_tis_core.ko.xz:
";

    fn resolve_sample(wanted: &[&str], builtin: &[&str]) -> Resolution {
        let dep = parse_modules_dep(SAMPLE_DEP).unwrap();
        let builtin = builtin.iter().map(|s| s.to_string()).collect();
        resolve(wanted, &builtin, |n| Ok(dep.get(n).map(|(_, d)| d.clone()))).unwrap()
    }

    fn position(order: &[String], name: &str) -> usize {
        order
            .iter()
            .position(|m| m == name)
            .unwrap_or_else(|| panic!("{name} not in {order:?}"))
    }

    #[test]
    fn names_follow_kernel_rules() {
        assert_eq!(
            module_name("kernel/drivers/gpu/drm/virtio/virtio-gpu.ko").as_deref(),
            Some("virtio_gpu")
        );
        assert_eq!(module_name("tpm_tis.ko.xz").as_deref(), Some("tpm_tis"));
        assert_eq!(module_name("a/b/x.ko.zst").as_deref(), Some("x"));
        assert_eq!(module_name("kernel/foo.o"), None);
        assert_eq!(module_name(".ko"), None);
    }

    #[test]
    fn modules_dep_parses_paths_and_deps() {
        let dep = parse_modules_dep(SAMPLE_DEP).unwrap();
        assert_eq!(dep.len(), 8);
        let (path, deps) = &dep["virtio_gpu"];
        assert_eq!(path, "kernel/drivers/gpu/drm/virtio/virtio-gpu.ko");
        assert_eq!(
            deps,
            &[
                "drm_kms_helper",
                "drm_shmem_helper",
                "virtio_dma_buf",
                "drm"
            ]
        );
        assert!(dep["virtio_mmio"].1.is_empty());
        assert!(parse_modules_dep("no colon here\n").is_err());
    }

    #[test]
    fn dependencies_load_first() {
        let r = resolve_sample(&["virtio_mmio", "virtio-gpu", "tpm_tis"], &["i2c_algo_bit"]);
        let o = &r.load_order;
        assert_eq!(o.len(), 8, "{o:?}");
        for (dep, user) in [
            ("drm", "drm_kms_helper"),
            ("drm", "drm_shmem_helper"),
            ("drm_kms_helper", "virtio_gpu"),
            ("drm_shmem_helper", "virtio_gpu"),
            ("virtio_dma_buf", "virtio_gpu"),
            ("tpm_tis_core", "tpm_tis"),
        ] {
            assert!(
                position(o, dep) < position(o, user),
                "{dep} must precede {user}: {o:?}"
            );
        }
        let unique: BTreeSet<_> = o.iter().collect();
        assert_eq!(unique.len(), o.len(), "no module twice: {o:?}");
        assert!(r.missing.is_empty() && r.builtin.is_empty());
    }

    #[test]
    fn builtin_and_missing_are_reported() {
        let r = resolve_sample(&["tpm", "evdev", "virtio_gpu"], &["tpm"]);
        assert_eq!(r.builtin, ["tpm"]);
        // evdev is absent; i2c_algo_bit (a dependency) is absent too.
        assert_eq!(r.missing, ["evdev", "i2c_algo_bit"]);
        assert!(r.load_order.contains(&"virtio_gpu".to_string()));
    }

    #[test]
    fn cycles_are_errors() {
        let dep = parse_modules_dep("a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n").unwrap();
        let err = resolve(&["a"], &BTreeSet::new(), |n| {
            Ok(dep.get(n).map(|(_, d)| d.clone()))
        })
        .unwrap_err();
        assert!(err.contains("cycle"), "{err}");
    }

    /// Builds a minimal ELF64 LE file with a section-name table and a `.modinfo`.
    fn tiny_elf(modinfo: &[u8]) -> Vec<u8> {
        let shstrtab = b"\0.shstrtab\0.modinfo\0";
        let mut f = vec![0u8; 0x40];
        f[..4].copy_from_slice(elf::MAGIC);
        f[elf::EI_CLASS] = elf::ELFCLASS64;
        f[elf::EI_DATA] = elf::ELFDATA2LSB;
        let strtab_off = f.len();
        f.extend_from_slice(shstrtab);
        let modinfo_off = f.len();
        f.extend_from_slice(modinfo);
        while !f.len().is_multiple_of(8) {
            f.push(0);
        }
        let shoff = f.len();
        // Section 0 (null), 1 (.shstrtab at name 1), 2 (.modinfo at name 11).
        for (name, off, size) in [
            (0u32, 0usize, 0usize),
            (1, strtab_off, shstrtab.len()),
            (11, modinfo_off, modinfo.len()),
        ] {
            let mut sh = [0u8; elf::SHDR_LEN];
            sh[elf::SH_NAME..elf::SH_NAME + 4].copy_from_slice(&name.to_le_bytes());
            sh[elf::SH_OFFSET..elf::SH_OFFSET + 8].copy_from_slice(&(off as u64).to_le_bytes());
            sh[elf::SH_SIZE..elf::SH_SIZE + 8].copy_from_slice(&(size as u64).to_le_bytes());
            f.extend_from_slice(&sh);
        }
        f[elf::E_SHOFF..elf::E_SHOFF + 8].copy_from_slice(&(shoff as u64).to_le_bytes());
        f[elf::E_SHENTSIZE..elf::E_SHENTSIZE + 2]
            .copy_from_slice(&(elf::SHDR_LEN as u16).to_le_bytes());
        f[elf::E_SHNUM..elf::E_SHNUM + 2].copy_from_slice(&3u16.to_le_bytes());
        f[elf::E_SHSTRNDX..elf::E_SHSTRNDX + 2].copy_from_slice(&1u16.to_le_bytes());
        f
    }

    #[test]
    fn modinfo_is_read_from_elf() {
        let elf_bytes = tiny_elf(b"license=GPL\0depends=drm_kms_helper,drm,virtio_dma_buf\0name=virtio_gpu\0vermagic=6.1\0");
        let info = modinfo_of_elf(&elf_bytes).unwrap();
        assert_eq!(info.name.as_deref(), Some("virtio_gpu"));
        assert_eq!(info.depends, ["drm_kms_helper", "drm", "virtio_dma_buf"]);
        let none = modinfo_of_elf(&tiny_elf(b"depends=\0name=virtio_mmio\0")).unwrap();
        assert!(none.depends.is_empty());
        assert!(modinfo_of_elf(b"MZ not elf").is_err());
        let mut truncated = elf_bytes.clone();
        truncated.truncate(0x50);
        assert!(modinfo_of_elf(&truncated).is_err());
    }
}
