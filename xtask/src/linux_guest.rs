//! The default Linux guest: Debian's arm64 kernel and busybox, fetched with apt,
//! cached under `target/guest-cache`, turned into an uncompressed `Image` and a
//! newc initramfs whose `/init` loads the virtio/input/TPM modules and runs a
//! command passed on the kernel command line.
//!
//! Cache layout (`<cache>` is `<workspace>/target/guest-cache`):
//! - `apt/`                  private apt state (lists, sources, status)
//! - `debs/*.deb, debs/stamp` the downloaded packages and their versions
//! - `Image, initramfs.cpio, stamp` the outputs and what they were built from
//!
//! Every file is written to a temporary name and renamed into place, and each
//! stamp is written last, so an interrupted run is never mistaken for a complete
//! one. A second call with a valid stamp runs no external tool at all. Delete
//! the cache directory to fetch the newest packages again.

pub(crate) mod apt;
mod build;
pub(crate) mod cache;
pub mod cpio;
mod init;
mod kernel;
mod modules;

use std::fs;
use std::path::{Path, PathBuf};

// Console markers init prints, for callers that match guest output.
#[allow(unused_imports)]
pub use init::{CMD_EXIT_PREFIX, INIT_MARKER, MODULE_PREFIX, READY_MARKER};

/// Modules the guest needs, by kernel module name; dependencies are added.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_mmio",
    "virtio_blk",
    "virtio_gpu",
    "virtio_input",
    "evdev",
    // The TPM: Debian's arm64 kernel has no MMIO `tpm_tis`; the guest's TPM sits on
    // a bit-banged SPI bus over the PL061 GPIO controller (the PL061 driver is
    // built in).
    "spi_bitbang",
    "spi_gpio",
    "tpm_tis_core",
    "tpm_tis_spi",
    "virtio_console",
    "virtio_rng",
    // The NVMe disk of `--nvme` runs (PCI Express; the generic ECAM host and
    // the GICv2m driver are built in).
    "nvme",
    // The virtio-blk of `--virtio-pci` runs (the virtio 1.2 PCI transport).
    "virtio_pci",
    // The xHCI controller of `--usb` runs: its USB HID keyboard and tablet
    // (usbhid binds the interfaces, hid_generic makes them input devices) and
    // USB mass storage (a SCSI disk).
    "xhci_pci",
    "usbhid",
    "hid_generic",
    "usb_storage",
    "sd_mod",
];

/// Characters of kernel command line the guest keeps: arm64 Linux's
/// `COMMAND_LINE_SIZE` is 2048 with the terminating NUL, so a longer line is cut
/// (a cut `rayos.cmd` no longer decodes). Below the registry's own limit.
pub const CMDLINE_MAX: usize = 2047;
const _: () = assert!(CMDLINE_MAX <= registry::defs::MAX_CMDLINE_LEN);

/// Bump when the initramfs layout or init script changes, to force a rebuild
/// (the downloaded packages are reused).
const BUILD_FORMAT: u32 = 1;

/// The guest as built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinuxGuest {
    /// Uncompressed arm64 `Image`.
    pub kernel: PathBuf,
    /// Uncompressed newc cpio initramfs.
    pub initramfs: PathBuf,
    /// Modules carried in the initramfs, in the order init loads them.
    pub modules_loaded: Vec<String>,
    /// Wanted modules that are built into the kernel.
    pub modules_builtin: Vec<String>,
    /// Wanted modules (or their dependencies) this kernel does not have.
    pub modules_missing: Vec<String>,
    /// `uname -r` of the kernel, e.g. `6.1.0-56-arm64`.
    pub kernel_release: String,
    /// How the package shipped the kernel (e.g. "uncompressed arm64 Image with EFI stub").
    pub kernel_format: String,
    /// `package=version` of each package used.
    pub packages: Vec<String>,
}

/// Fetches (or reuses the cache) and builds the initramfs. `cache` is
/// `<workspace>/target/guest-cache`.
pub fn ensure_linux_guest(cache: &Path) -> Result<LinuxGuest, String> {
    fs::create_dir_all(cache).map_err(|e| format!("create {}: {e}", cache.display()))?;
    let source = apt::Source::from_env();
    let want = cache::Stamp::wanted(&source);
    if let Some(guest) = cache::cached_guest(cache, &want) {
        return Ok(guest);
    }
    let debs = cache::ensure_debs(cache, &source)?;
    build::build(cache, &want, &debs)
}

/// The kernel command-line fragment that makes the initramfs init run `cmd`
/// after boot, print its output on the console, and power off with `poweroff -f`.
/// Init prints [`INIT_MARKER`] first and [`CMD_EXIT_PREFIX`]`<status>` last.
/// The command is base64-encoded (4 bytes per 3) and the kernel keeps
/// [`CMDLINE_MAX`] characters of command line: `cargo xtask run` refuses a
/// `--guest-cmd` that would be cut (about 1490 bytes with the default console
/// arguments).
pub fn guest_cmd_arg(cmd: &str) -> String {
    init::cmd_arg(cmd)
}

/// What a guest's console output says about one [`guest_cmd_arg`] run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestConsole {
    /// Init started ([`INIT_MARKER`] seen).
    pub init_seen: bool,
    /// Init finished loading modules ([`READY_MARKER`] seen).
    pub ready_seen: bool,
    /// Modules whose `insmod` failed.
    pub modules_failed: Vec<String>,
    /// The command's exit status, once init printed it.
    pub cmd_exit: Option<i32>,
}

/// Reads init's marker lines out of a console log (kernel messages, `\r\n`
/// line ends and other output may be interleaved).
#[allow(dead_code)] // Called by the xtask test runners that boot the guest.
pub fn parse_console(log: &str) -> GuestConsole {
    let mut c = GuestConsole::default();
    for line in log.lines().map(|l| l.trim_end_matches('\r')) {
        c.init_seen |= line.ends_with(INIT_MARKER);
        c.ready_seen |= line.ends_with(READY_MARKER);
        if let Some(rest) = line.split_once(MODULE_PREFIX).map(|(_, r)| r) {
            if let Some((name, _)) = rest.split_once(" FAILED") {
                c.modules_failed.push(name.to_string());
            }
        }
        if let Some((_, status)) = line.split_once(CMD_EXIT_PREFIX) {
            c.cmd_exit = status.trim().parse().ok().or(c.cmd_exit);
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_markers_are_found() {
        let log = "[    1.5] Run /init as init process\r\nrayos-guest: init\r\n\
rayos-guest: module virtio_mmio loaded\r\nrayos-guest: module drm FAILED (insmod status 1)\r\n\
rayos-guest: ready\r\nhi\r\nrayos-guest: cmd exit 3\r\n[    2.2] reboot: Power down\r\n";
        let c = parse_console(log);
        assert!(c.init_seen && c.ready_seen);
        assert_eq!(c.modules_failed, ["drm"]);
        assert_eq!(c.cmd_exit, Some(3));
        let none = parse_console("[ 0.0] Booting Linux\nKernel panic - not syncing\n");
        assert_eq!(none, GuestConsole::default());
    }
}
