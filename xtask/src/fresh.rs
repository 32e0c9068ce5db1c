//! The fresh-host check of `cargo xtask test`: the cargo tests (the QEMU
//! integration tests among them) run in a private mount namespace where QEMU's
//! firmware folders hold only files of packages QEMU hard-depends on. A file
//! from an optional package (`ipxe-qemu`'s `efi-virtio.rom`, `seabios`,
//! `qemu-efi-aarch64`, …: Recommends and Suggests, which xtask does not
//! install) is hidden, so a command line that would need one fails here as it
//! fails on a host installed with `--no-install-recommends`.
//!
//! QEMU's firmware folders are what `qemu-system-aarch64 -L help` lists. Which
//! package owns each file comes from `dpkg-query -S`; the packages QEMU needs are
//! the closure of [`QEMU_APT_PACKAGE`]'s Pre-Depends and Depends over the
//! installed packages (`dpkg-query -W`). A folder with nothing to keep is covered
//! by an empty tmpfs; a folder with some files to keep is replaced by a tree of
//! links to just those files.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::Error;
use crate::setup::{ensure_tools, is_root, NAMESPACE_TOOLS, QEMU_APT_PACKAGE, QEMU_BIN};

/// The step's name in messages.
pub const STEP: &str = "fresh-host namespace";

/// Installed packages: each one's hard dependencies (every alternative of a
/// Pre-Depends or Depends, without versions or architecture qualifiers) and the
/// virtual packages it provides.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Installed {
    pub depends: BTreeMap<String, Vec<String>>,
    pub provides: BTreeMap<String, Vec<String>>,
}

/// A package name without its `:arch` qualifier.
fn bare_name(p: &str) -> &str {
    p.split(':').next().unwrap_or(p).trim()
}

/// Names in a dependency field (`a (>= 1), b | c:any`): every alternative.
fn dependency_names(field: &str) -> impl Iterator<Item = String> + '_ {
    field
        .split([',', '|'])
        .map(|d| bare_name(d.split('(').next().unwrap_or("")).to_string())
        .filter(|d| !d.is_empty())
}

/// Parses `dpkg-query -W -f '${Package}\t${Pre-Depends}\t${Depends}\t${Provides}\n'`.
pub fn parse_installed(text: &str) -> Installed {
    let mut out = Installed::default();
    for line in text.lines() {
        let mut f = line.split('\t');
        let Some(pkg) = f.next().map(bare_name).filter(|p| !p.is_empty()) else {
            continue;
        };
        let (pre, dep, prov) = (
            f.next().unwrap_or(""),
            f.next().unwrap_or(""),
            f.next().unwrap_or(""),
        );
        let deps = out.depends.entry(pkg.to_string()).or_default();
        deps.extend(dependency_names(pre).chain(dependency_names(dep)));
        for v in dependency_names(prov) {
            out.provides.entry(v).or_default().push(pkg.to_string());
        }
    }
    out
}

/// `root` and every installed package it needs through Pre-Depends and Depends
/// (a virtual package stands for its installed providers).
pub fn hard_closure(installed: &Installed, root: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut todo = vec![root.to_string()];
    while let Some(p) = todo.pop() {
        let real: Vec<String> = if installed.depends.contains_key(&p) {
            vec![p]
        } else {
            installed.provides.get(&p).cloned().unwrap_or_default()
        };
        for r in real {
            if seen.insert(r.clone()) {
                todo.extend(installed.depends[&r].iter().cloned());
            }
        }
    }
    seen
}

/// Parses `dpkg-query -S PATH…` (`pkg1, pkg2:arch: /path`): each path's owners.
/// Diversion lines and paths no package owns are absent.
pub fn parse_owners(text: &str) -> BTreeMap<PathBuf, Vec<String>> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with("diversion by") || line.starts_with("local diversion") {
            continue;
        }
        let Some((pkgs, path)) = line.split_once(": /") else {
            continue;
        };
        let owners = pkgs.split(',').map(|p| bare_name(p).to_string()).collect();
        out.insert(PathBuf::from(format!("/{path}")), owners);
    }
    out
}

/// What to do with one of QEMU's firmware folders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hide {
    /// Cover the folder with an empty tmpfs: none of its files is kept.
    Empty(PathBuf),
    /// Replace the folder by links to `keep` (paths relative to it; a kept
    /// folder is linked whole). `hidden` counts the files left out.
    Filter {
        dir: PathBuf,
        keep: Vec<PathBuf>,
        hidden: usize,
    },
}

/// One file (or link) under a firmware folder, relative to it, and whether it
/// is kept.
type Entry = (PathBuf, bool);

/// The hiding of folder `dir` whose files are `entries` (`None` when nothing
/// is hidden). Kept links are made as high up the tree as possible: a
/// sub-folder whose files are all kept is one link.
pub fn plan_dir(dir: &Path, entries: &[Entry]) -> Option<Hide> {
    let hidden = entries.iter().filter(|(_, k)| !k).count();
    if hidden == 0 {
        return None;
    }
    if entries.iter().all(|(_, k)| !k) {
        return Some(Hide::Empty(dir.to_path_buf()));
    }
    // A path is linked whole when everything under it is kept and its parent
    // is not (the top folder itself never is: something is hidden).
    let all_kept_under = |p: &Path| {
        entries
            .iter()
            .filter(|(e, _)| e.starts_with(p))
            .all(|(_, k)| *k)
    };
    let mut keep = BTreeSet::new();
    for (e, k) in entries {
        if !k {
            continue;
        }
        let mut top = e.clone();
        for a in e.ancestors().skip(1) {
            if a.as_os_str().is_empty() || !all_kept_under(a) {
                break;
            }
            top = a.to_path_buf();
        }
        keep.insert(top);
    }
    Some(Hide::Filter {
        dir: dir.to_path_buf(),
        keep: keep.into_iter().collect(),
        hidden,
    })
}

/// `s` quoted for `sh`.
fn sh_quote(s: &Path) -> String {
    format!("'{}'", s.to_string_lossy().replace('\'', "'\\''"))
}

/// The `sh` script that applies `plan` using the scratch folder `stage`, then
/// runs its arguments (`exec "$@"`). Run it in a private mount namespace.
pub fn script(plan: &[Hide], stage: &Path) -> String {
    let q = |p: &Path| sh_quote(p);
    let mut s = String::from("set -e\n");
    s += &format!("mount -t tmpfs -o mode=0755 xtask-fresh {}\n", q(stage));
    for (i, h) in plan.iter().enumerate() {
        match h {
            Hide::Empty(dir) => {
                s += &format!("mount -t tmpfs -o mode=0755,ro xtask-fresh {}\n", q(dir));
            }
            Hide::Filter { dir, keep, .. } => {
                let orig = stage.join(format!("orig{i}"));
                let clean = stage.join(format!("clean{i}"));
                s += &format!("mkdir -p {} {}\n", q(&orig), q(&clean));
                s += &format!("mount --bind {} {}\n", q(dir), q(&orig));
                for k in keep {
                    if let Some(parent) = k.parent().filter(|p| !p.as_os_str().is_empty()) {
                        s += &format!("mkdir -p {}\n", q(&clean.join(parent)));
                    }
                    s += &format!("ln -s {} {}\n", q(&orig.join(k)), q(&clean.join(k)));
                }
                s += &format!("mount --bind {} {}\n", q(&clean), q(dir));
            }
        }
    }
    s += "exec \"$@\"\n";
    s
}

/// Files and links under `dir`, relative to it (folders are walked, not listed).
fn walk(dir: &Path, rel: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir.join(rel))? {
        let e = e?;
        let r = rel.join(e.file_name());
        if e.file_type()?.is_dir() {
            walk(dir, &r, out)?;
        } else {
            out.push(r);
        }
    }
    Ok(())
}

/// Runs `cmd`, returning its standard output (even when it exits non-zero, as
/// `dpkg-query -S` does when a path has no owner).
fn output(step: &str, cmd: &mut Command) -> Result<String, Error> {
    let out = cmd
        .output()
        .map_err(|e| Error::step(STEP, format!("cannot run {step}: {e}")))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// QEMU's firmware folders that exist, canonical.
fn firmware_dirs() -> Result<Vec<PathBuf>, Error> {
    let text = output(
        &format!("{QEMU_BIN} -L help"),
        Command::new(QEMU_BIN).args(["-L", "help"]),
    )?;
    let dirs: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| std::fs::canonicalize(l.trim()).ok())
        .filter(|p| p.is_dir())
        .collect();
    if text.trim().is_empty() {
        return Err(Error::step(
            STEP,
            format!("`{QEMU_BIN} -L help` listed no folder"),
        ));
    }
    Ok(dirs)
}

/// What this host's namespace hides: QEMU's firmware folders, each file kept
/// only when a package in the closure of [`QEMU_APT_PACKAGE`]'s hard
/// dependencies owns it.
pub fn host_plan() -> Result<Vec<Hide>, Error> {
    let installed = parse_installed(&output(
        "dpkg-query -W",
        Command::new("dpkg-query").args([
            "-W",
            "-f",
            "${Package}\t${Pre-Depends}\t${Depends}\t${Provides}\n",
        ]),
    )?);
    let needed = hard_closure(&installed, QEMU_APT_PACKAGE);
    if !needed.contains(QEMU_APT_PACKAGE) {
        return Err(Error::step(
            STEP,
            format!("{QEMU_APT_PACKAGE} is not installed (dpkg-query knows no such package)"),
        ));
    }
    let mut plan = Vec::new();
    for dir in firmware_dirs()? {
        let mut files = Vec::new();
        walk(&dir, Path::new(""), &mut files)
            .map_err(|e| Error::io(format!("list {}", dir.display()), e))?;
        if files.is_empty() {
            continue;
        }
        let owners = parse_owners(&output(
            "dpkg-query -S",
            Command::new("dpkg-query")
                .arg("-S")
                .args(files.iter().map(|f| dir.join(f))),
        )?);
        let entries: Vec<Entry> = files
            .into_iter()
            .map(|f| {
                let kept = owners
                    .get(&dir.join(&f))
                    .is_some_and(|o| o.iter().any(|p| needed.contains(p)));
                (f, kept)
            })
            .collect();
        plan.extend(plan_dir(&dir, &entries));
    }
    Ok(plan)
}

/// One line per hidden folder, for the log.
pub fn describe(plan: &[Hide]) -> String {
    if plan.is_empty() {
        return "nothing to hide: every file in QEMU's firmware folders comes from a package QEMU depends on".into();
    }
    plan.iter()
        .map(|h| match h {
            Hide::Empty(d) => format!("{} emptied", d.display()),
            Hide::Filter { dir, keep, hidden } => format!(
                "{}: {hidden} file(s) of optional packages hidden, {} entr(y/ies) kept",
                dir.display(),
                keep.len()
            ),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `cmd` wrapped to run in a fresh-host namespace (see the module doc): needs root.
/// `stage` is an empty scratch folder (mounted over inside the namespace only).
pub fn wrap(cmd: &Command, stage: &Path) -> Result<Command, Error> {
    if !is_root() {
        return Err(Error::step(
            STEP,
            "needs root for a private mount namespace: run `sudo -E cargo xtask test` (CI runs as root)",
        ));
    }
    ensure_tools(NAMESPACE_TOOLS, true)?;
    let plan = host_plan()?;
    eprintln!("xtask: {STEP}: {}", describe(&plan));
    std::fs::create_dir_all(stage)
        .map_err(|e| Error::io(format!("create {}", stage.display()), e))?;
    let mut w = Command::new("unshare");
    w.args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(script(&plan, stage))
        .arg("xtask-fresh")
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => w.env(k, v),
            None => w.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        w.current_dir(d);
    }
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSTALLED: &str = "qemu-system-arm\t\tlibc6 (>= 2.34), qemu-system-common (= 1:7.2), qemu-system-data (>= 1:7.2)\t\n\
qemu-system-common\t\tlibc6\tqemu-common-virtual\n\
qemu-system-data\t\t\t\n\
libc6\tlibgcc-s1\t\t\n\
libgcc-s1\t\tlibc6\t\n\
ipxe-qemu\t\t\tipxe-rom\n\
seabios\t\t\t\n\
tool\t\tfoo | qemu-common-virtual:any\t\n";

    #[test]
    fn the_closure_follows_hard_dependencies_only() {
        let i = parse_installed(INSTALLED);
        let c = hard_closure(&i, "qemu-system-arm");
        let want = [
            "libc6",
            "libgcc-s1",
            "qemu-system-arm",
            "qemu-system-common",
            "qemu-system-data",
        ];
        assert_eq!(c, want.iter().map(|s| s.to_string()).collect());
        // Alternatives and virtual packages are followed.
        let t = hard_closure(&i, "tool");
        assert!(
            t.contains("qemu-system-common") && !t.contains("foo"),
            "{t:?}"
        );
        assert!(hard_closure(&i, "absent").is_empty());
    }

    #[test]
    fn owners_are_read_per_path() {
        let o = parse_owners(
            "qemu-system-data: /usr/share/qemu/qboot.rom\n\
qemu-system-data, qemu-system-common:amd64: /usr/share/qemu\n\
diversion by foo from: /usr/share/qemu/x\n\
dpkg-query: no path found matching pattern /usr/share/qemu/mine.rom\n",
        );
        assert_eq!(
            o[Path::new("/usr/share/qemu/qboot.rom")],
            ["qemu-system-data"]
        );
        assert_eq!(
            o[Path::new("/usr/share/qemu")],
            ["qemu-system-data", "qemu-system-common"]
        );
        assert_eq!(o.len(), 2);
    }

    fn e(p: &str, keep: bool) -> Entry {
        (PathBuf::from(p), keep)
    }

    #[test]
    fn a_folder_is_left_emptied_or_filtered() {
        let dir = Path::new("/usr/share/qemu");
        assert_eq!(plan_dir(dir, &[e("a", true), e("k/b", true)]), None);
        assert_eq!(
            plan_dir(
                Path::new("/usr/lib/ipxe/qemu"),
                &[e("efi-virtio.rom", false)]
            ),
            Some(Hide::Empty("/usr/lib/ipxe/qemu".into()))
        );
        let plan = plan_dir(
            dir,
            &[
                e("qboot.rom", true),
                e("efi-virtio.rom", false),
                e("keymaps/ar", true),
                e("keymaps/de", true),
                e("firmware/60-edk2.json", false),
                e("firmware/50-x.json", true),
            ],
        );
        assert_eq!(
            plan,
            Some(Hide::Filter {
                dir: dir.into(),
                keep: ["firmware/50-x.json", "keymaps", "qboot.rom"]
                    .map(PathBuf::from)
                    .to_vec(),
                hidden: 2,
            })
        );
    }

    #[test]
    fn the_script_mounts_each_hiding_then_runs_the_command() {
        let plan = [
            Hide::Empty("/usr/lib/ipxe/qemu".into()),
            Hide::Filter {
                dir: "/usr/share/qemu".into(),
                keep: ["keymaps", "x/it's.rom"].map(PathBuf::from).to_vec(),
                hidden: 1,
            },
        ];
        let s = script(&plan, Path::new("/t/stage"));
        assert_eq!(
            s,
            "set -e\n\
mount -t tmpfs -o mode=0755 xtask-fresh '/t/stage'\n\
mount -t tmpfs -o mode=0755,ro xtask-fresh '/usr/lib/ipxe/qemu'\n\
mkdir -p '/t/stage/orig1' '/t/stage/clean1'\n\
mount --bind '/usr/share/qemu' '/t/stage/orig1'\n\
ln -s '/t/stage/orig1/keymaps' '/t/stage/clean1/keymaps'\n\
mkdir -p '/t/stage/clean1/x'\n\
ln -s '/t/stage/orig1/x/it'\\''s.rom' '/t/stage/clean1/x/it'\\''s.rom'\n\
mount --bind '/t/stage/clean1' '/usr/share/qemu'\n\
exec \"$@\"\n"
        );
    }
}
