//! Fetching Debian arm64 packages with the host's apt, isolated from the host.
//!
//! apt runs with its own sources list, package lists, status file and cache under
//! `<cache>/apt`, and with `APT::Architecture=arm64`, so the host's architecture
//! list, installed-package database and configured third-party sources are never
//! read or changed. Only Debian's signed archive is used, verified with the host's
//! `debian-archive-keyring`.

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The metapackage whose dependency names the current arm64 kernel.
pub const KERNEL_METAPACKAGE: &str = "linux-image-arm64";
/// The statically linked busybox package.
pub const BUSYBOX_PACKAGE: &str = "busybox-static";
/// Keyring that signs Debian's archive.
pub const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";
/// Environment variable overriding the Debian suite (default [`DEFAULT_SUITE`]).
pub const ENV_SUITE: &str = "RAYOS_DEBIAN_SUITE";
/// Environment variable overriding the Debian mirror (default [`DEFAULT_MIRROR`]).
pub const ENV_MIRROR: &str = "RAYOS_DEBIAN_MIRROR";
/// Environment variable overriding the security mirror (default [`DEFAULT_SECURITY_MIRROR`]).
pub const ENV_SECURITY_MIRROR: &str = "RAYOS_DEBIAN_SECURITY_MIRROR";
/// The suite the baseline guest comes from.
pub const DEFAULT_SUITE: &str = "bookworm";
pub const DEFAULT_MIRROR: &str = "http://deb.debian.org/debian";
pub const DEFAULT_SECURITY_MIRROR: &str = "http://deb.debian.org/debian-security";

/// The one line printed when apt is missing.
const NO_APT: &str =
    "apt-get/apt-cache/dpkg-deb not found: the Linux guest is fetched with Debian's apt; \
run xtask on a Debian or Ubuntu host (`sudo apt-get install apt dpkg debian-archive-keyring`)";

/// Where packages come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub suite: String,
    pub mirror: String,
    pub security_mirror: String,
}

impl Source {
    /// The source chosen by the environment, defaulting to Debian bookworm.
    pub fn from_env() -> Self {
        let var = |k: &str, d: &str| {
            std::env::var(k)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| d.to_string())
        };
        Self {
            suite: var(ENV_SUITE, DEFAULT_SUITE),
            mirror: var(ENV_MIRROR, DEFAULT_MIRROR),
            security_mirror: var(ENV_SECURITY_MIRROR, DEFAULT_SECURITY_MIRROR),
        }
    }

    /// One-line description, stored in cache stamps.
    pub fn describe(&self) -> String {
        format!("{} {} {}", self.suite, self.mirror, self.security_mirror)
    }

    fn sources_list(&self) -> String {
        let signed = format!("[arch=arm64 signed-by={DEBIAN_KEYRING}]");
        format!(
            "deb {signed} {m} {s} main\ndeb {signed} {m} {s}-updates main\ndeb {signed} {sm} {s}-security main\n",
            m = self.mirror,
            sm = self.security_mirror,
            s = self.suite,
        )
    }
}

/// An apt instance rooted in one private directory.
pub struct Apt {
    root: PathBuf,
}

impl Apt {
    /// Prepares `root` (sources list, empty status file, list and cache dirs).
    pub fn new(root: &Path, source: &Source) -> Result<Self, String> {
        if !Path::new(DEBIAN_KEYRING).exists() {
            return Err(format!(
                "{DEBIAN_KEYRING} is missing: run `sudo apt-get install debian-archive-keyring`"
            ));
        }
        for d in [
            "lists/partial",
            "cache/archives/partial",
            "etc/sources.list.d",
            "etc/preferences.d",
        ] {
            fs::create_dir_all(root.join(d))
                .map_err(|e| format!("create {}: {e}", root.join(d).display()))?;
        }
        write(
            &root.join("etc/sources.list"),
            source.sources_list().as_bytes(),
        )?;
        write(&root.join("status"), b"")?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    /// The `-o` options that isolate apt from the host.
    pub fn options(&self) -> Vec<String> {
        let r = self.root.display();
        [
            "APT::Architecture=arm64".to_string(),
            "APT::Architectures=arm64".to_string(),
            format!("Dir::State::Lists={r}/lists"),
            format!("Dir::State::Status={r}/status"),
            format!("Dir::Cache={r}/cache"),
            format!("Dir::Cache::Archives={r}/cache/archives"),
            format!("Dir::Etc::SourceList={r}/etc/sources.list"),
            format!("Dir::Etc::SourceParts={r}/etc/sources.list.d"),
            format!("Dir::Etc::Preferences={r}/etc/preferences"),
            format!("Dir::Etc::PreferencesParts={r}/etc/preferences.d"),
            // Root's downloads would otherwise be handed to the `_apt` user, who
            // cannot write into the workspace.
            "APT::Sandbox::User=root".to_string(),
            "Acquire::Languages=none".to_string(),
            "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false".to_string(),
        ]
        .into_iter()
        .flat_map(|o| ["-o".to_string(), o])
        .collect()
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.args(self.options())
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive");
        c
    }

    /// `apt-get update` into the private lists.
    pub fn update(&self) -> Result<(), String> {
        let mut c = self.command("apt-get");
        c.args(["-q", "update"]);
        run(&mut c).map(drop)
    }

    /// The candidate version of `pkg` and its `Depends:` field.
    pub fn candidate(&self, pkg: &str) -> Result<(String, String), String> {
        let mut c = self.command("apt-cache");
        c.args(["show", "--no-all-versions", pkg]);
        let out = run(&mut c)?;
        parse_show(&out).ok_or_else(|| format!("apt-cache show {pkg}: no Version field"))
    }

    /// The concrete kernel package (`linux-image-<abi>-arm64`) and its version.
    pub fn kernel_package(&self) -> Result<(String, String), String> {
        let (_, depends) = self.candidate(KERNEL_METAPACKAGE)?;
        let pkg = kernel_from_depends(&depends).ok_or_else(|| {
            format!("{KERNEL_METAPACKAGE} depends on no linux-image package: {depends:?}")
        })?;
        let (version, _) = self.candidate(&pkg)?;
        Ok((pkg, version))
    }

    /// Downloads `pkgs` (`name=version`) into the empty directory `dir`.
    pub fn download(&self, pkgs: &[String], dir: &Path) -> Result<(), String> {
        let mut c = self.command("apt-get");
        c.args(["-q", "download"]).args(pkgs).current_dir(dir);
        run(&mut c).map(drop)
    }
}

/// Extracts the files of `deb` under `dir`.
pub fn extract(deb: &Path, dir: &Path) -> Result<(), String> {
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(dir)).map(drop)
}

/// Parses `Version:` and `Depends:` from `apt-cache show` output (first stanza).
pub fn parse_show(text: &str) -> Option<(String, String)> {
    let stanza = text.split("\n\n").next()?;
    let field = |name: &str| {
        stanza.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.strip_prefix(':'))
                .map(|v| v.trim().to_string())
        })
    };
    Some((field("Version")?, field("Depends").unwrap_or_default()))
}

/// Picks the `linux-image-*` package out of a `Depends:` field.
pub fn kernel_from_depends(depends: &str) -> Option<String> {
    depends
        .split([',', '|'])
        .map(|d| d.split_whitespace().next().unwrap_or_default())
        .find(|p| p.starts_with("linux-image-") && *p != KERNEL_METAPACKAGE)
        .map(str::to_string)
}

/// Runs a command, returning stdout; failures carry stderr, a missing tool the
/// one-line hint.
pub fn run(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| {
        if e.kind() == ErrorKind::NotFound {
            NO_APT.to_string()
        } else {
            format!("{shown}: {e}")
        }
    })?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Writes `data` to `path` through a temporary file and a rename, so readers
/// never see a partial file.
pub fn write(path: &Path, data: &[u8]) -> Result<(), String> {
    let tmp = tmp_path(path);
    fs::write(&tmp, data).map_err(|e| format!("write {}: {e}", tmp.display()))?;
    fs::rename(&tmp, path)
        .map_err(|e| format!("rename {} -> {}: {e}", tmp.display(), path.display()))
}

/// A sibling of `path` private to this process.
pub fn tmp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_output_gives_version_and_depends() {
        let text = "Package: linux-image-arm64\nSource: linux-signed-arm64 (6.1.192+2)\nVersion: 6.1.192-2\n\
Depends: linux-image-6.1.0-56-arm64 (= 6.1.192-2)\nDescription: x\n\nPackage: linux-image-arm64\nVersion: 6.1.176-1\n";
        let (v, d) = parse_show(text).unwrap();
        assert_eq!(v, "6.1.192-2");
        assert_eq!(
            kernel_from_depends(&d).as_deref(),
            Some("linux-image-6.1.0-56-arm64")
        );
        assert_eq!(parse_show("Package: x\n"), None);
    }

    #[test]
    fn kernel_is_found_among_alternatives() {
        assert_eq!(
            kernel_from_depends("initramfs-tools | linux-initramfs-tool, linux-image-6.12.9-arm64-unsigned (= 6.12.9-1) | linux-image-6.12.9-arm64").as_deref(),
            Some("linux-image-6.12.9-arm64-unsigned")
        );
        assert_eq!(kernel_from_depends("kmod, linux-base (>= 4.3~)"), None);
    }

    #[test]
    fn options_isolate_apt_from_the_host() {
        let apt = Apt {
            root: PathBuf::from("/c/apt"),
        };
        let o = apt.options();
        assert_eq!(o.len() % 2, 0);
        assert!(o.chunks(2).all(|p| p[0] == "-o"));
        for want in [
            "APT::Architecture=arm64",
            "APT::Architectures=arm64",
            "Dir::State::Status=/c/apt/status",
            "Dir::Etc::SourceParts=/c/apt/etc/sources.list.d",
        ] {
            assert!(o.iter().any(|x| x == want), "missing {want}");
        }
        let list = Source::from_env().sources_list();
        assert!(list
            .lines()
            .all(|l| l.starts_with("deb [arch=arm64 signed-by=")));
    }

    #[test]
    fn writes_are_atomic_renames() {
        let dir = std::env::temp_dir().join(format!("lg-write-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let p = dir.join("f");
        write(&p, b"one").unwrap();
        write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert!(!tmp_path(&p).exists());
        fs::remove_dir_all(&dir).unwrap();
    }
}
