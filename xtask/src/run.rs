//! `cargo xtask run`: choose the guest, build what it needs, pack the boot
//! bundle, and boot the hypervisor under QEMU — interactively on the terminal,
//! or captured (headless, scripted, tests) with a timeout and a verdict.
//!
//! Captured runs end in an [`Ending`]; [`RunOutcome::verdict`] turns it (plus
//! the guest's own report — the self-test summary, the Linux guest command's
//! exit status) into pass or a one-line reason.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::build::{build_guests, build_hypervisor};
use crate::bundle::{write_bundle, VmDef};
use crate::error::{tail_lines, Error};
use crate::layout::{HYP_PACKAGE, HYP_TARGET};
use crate::linux_guest;
use crate::qemu::{describe_exit, Accel, QemuConfig, QemuLine};
use crate::script::{self, Action, Step};
use crate::selftest::{parse_selftest, SelftestReport};
use crate::session::{run_interactive, Session, WaitError};
use crate::setup::ensure_qemu;
use crate::sysdisk::{self, DesiredVm, SystemDiskRun};
use crate::Layout;

/// Timeout of captured runs when `--timeout` is not given.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);
/// How long QEMU may take to exit by itself after a script's last step.
pub const SCRIPT_EXIT_GRACE: Duration = Duration::from_secs(5);
/// Console lines shown when a run fails.
pub const CONSOLE_TAIL_LINES: usize = 40;
/// Kernel command line of the Linux guest unless `--append` replaces it.
pub const LINUX_CMDLINE: &str = "console=ttyAMA0 earlycon=pl011,0x09000000";

/// Summary-line prefix of the hostile virtio guest.
pub const VIRTIO_HOSTILE_SUMMARY: &str = "virtio-hostile: ";
/// RAM disk the hostile virtio guest drives.
pub const VIRTIO_HOSTILE_DISK: u64 = 1 << 20;

/// The guests `--guest` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Guest {
    /// Debian's arm64 kernel and a busybox initramfs.
    #[default]
    Linux,
    /// The bare-metal self-test guest (`target/guests/selftest.bin`).
    Selftest,
    /// The bare-metal exit benchmark (`target/guests/bench-exits.bin`).
    BenchExits,
    /// The bare-metal compositor benchmark (`target/guests/bench-compose.bin`).
    BenchCompose,
    /// The bare-metal hostile virtio driver (`target/guests/virtio-hostile.bin`),
    /// given a 1 MiB RAM disk.
    VirtioHostile,
    /// The bare-metal guest that resets the VM on every boot
    /// (`target/guests/reset-loop.bin`).
    ResetLoop,
}

impl Guest {
    /// Every guest, for messages.
    pub const ALL: [Guest; 6] = [
        Guest::Linux,
        Guest::Selftest,
        Guest::BenchExits,
        Guest::BenchCompose,
        Guest::VirtioHostile,
        Guest::ResetLoop,
    ];

    /// The name `--guest` takes (also the bundle's name).
    pub fn name(self) -> &'static str {
        match self {
            Guest::Linux => "linux",
            Guest::Selftest => "selftest",
            Guest::BenchExits => "bench-exits",
            Guest::BenchCompose => "bench-compose",
            Guest::VirtioHostile => "virtio-hostile",
            Guest::ResetLoop => "reset-loop",
        }
    }

    /// vCPUs unless `--smp` says otherwise.
    pub fn default_vcpus(self) -> u32 {
        match self {
            Guest::Linux => 2,
            Guest::Selftest
            | Guest::BenchExits
            | Guest::BenchCompose
            | Guest::VirtioHostile
            | Guest::ResetLoop => 1,
        }
    }

    /// Guest RAM unless `--mem` says otherwise.
    pub fn default_mem(self) -> u64 {
        match self {
            Guest::Linux => 512 << 20,
            Guest::Selftest
            | Guest::BenchExits
            | Guest::BenchCompose
            | Guest::VirtioHostile
            | Guest::ResetLoop => 64 << 20,
        }
    }

    /// Parses a `--guest` value.
    pub fn from_name(s: &str) -> Result<Guest, Error> {
        Guest::ALL
            .into_iter()
            .find(|g| g.name() == s)
            .ok_or_else(|| {
                let known: Vec<&str> = Guest::ALL.iter().map(|g| g.name()).collect();
                Error::Usage(format!("unknown guest `{s}` (known: {})", known.join(", ")))
            })
    }
}

/// The guest platform a run gives the VM (`--profile`), named as the registry's
/// device models.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Profile {
    /// A kernel booted directly with a device tree.
    #[default]
    LinuxDt,
    /// UEFI firmware (Debian's AAVMF) in flash, ACPI tables through fw_cfg.
    UefiAcpi,
    /// The Windows-shaped VM (registry device model `windows`): `uefi-acpi`
    /// with Secure Boot always on and the boot disk as the NVMe namespace behind
    /// the PCI Express root complex; always a system-disk run.
    Windows,
}

impl Profile {
    pub fn name(self) -> &'static str {
        match self {
            Profile::LinuxDt => vmspec::DEVICE_MODEL_LINUX_DT,
            Profile::UefiAcpi => vmspec::DEVICE_MODEL_UEFI_ACPI,
            Profile::Windows => registry::DeviceModel::Windows.as_str(),
        }
    }

    /// Whether the VM boots UEFI firmware (`uefi-acpi` and `windows`).
    pub fn boots_firmware(self) -> bool {
        matches!(self, Profile::UefiAcpi | Profile::Windows)
    }

    /// The profile a VM record's device model runs as.
    pub fn of_model(m: registry::DeviceModel) -> Profile {
        match m {
            registry::DeviceModel::UefiAcpi => Profile::UefiAcpi,
            registry::DeviceModel::Windows => Profile::Windows,
            registry::DeviceModel::LinuxDt | registry::DeviceModel::LinuxDtNvme => Profile::LinuxDt,
        }
    }
}

/// vCPUs of a `windows` run unless `--smp` says otherwise: two, so that the
/// NVMe controller has more than one I/O queue.
pub const WINDOWS_DEFAULT_VCPUS: u32 = 2;

/// File name (under `target/boot-chain/`) of a `uefi-acpi` run's boot disk.
pub const UEFI_BOOT_DISK: &str = "uefi-run.img";

/// vCPUs and RAM of a `uefi-acpi` run unless `--smp`/`--mem` say otherwise.
pub const UEFI_DEFAULT_VCPUS: u32 = 1;
pub const UEFI_DEFAULT_MEM: u64 = 256 << 20;
/// RAM of a `uefi-acpi` run that boots Linux from its boot disk (GRUB loads
/// the 30 MiB kernel and the initramfs through the firmware's allocator).
pub const UEFI_LINUX_DEFAULT_MEM: u64 = 512 << 20;

/// Everything `cargo xtask run` takes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOptions {
    pub guest: Guest,
    /// The VM's platform (`--profile linux-dt|uefi-acpi`).
    pub profile: Profile,
    /// Stop in the firmware's UEFI shell (`--firmware-shell`, `uefi-acpi` only):
    /// the VM gets no boot disk, so the boot manager falls through to the shell.
    pub firmware_shell: bool,
    /// Start the `uefi-acpi` VM's variable store from Debian's store with
    /// Microsoft's keys enrolled (`--secure-boot`), when the store has never
    /// been written (a new VM, or `--fresh`).
    pub secure_boot: bool,
    /// The `uefi-acpi` VM's boot disk image (`--boot-disk PATH`, e.g.
    /// `target/boot-chain/unsigned.img`) instead of the signed chain written
    /// for the run (`--guest-cmd` then does not reach the guest).
    pub boot_disk: Option<PathBuf>,
    /// Start this VM of the system disk as its record defines it (`--vm NAME`:
    /// its vCPUs, memory, device model, firmware and disks; `cargo xtask disk
    /// add-vm` makes one); the hypervisor is told its name (`rayos.vm=NAME`).
    /// `A,B` starts several side by side (A the primary guest): the emulated
    /// host gets the sum of their vCPUs and memory.
    pub vm: Option<String>,
    /// Boot this firmware code image from a boot bundle instead of the
    /// `uefi-acpi` system disk's VM (`--firmware PATH`; its variables then live
    /// in memory only).
    pub firmware: Option<PathBuf>,
    /// Replaces the guest's kernel (QEMU's `-kernel`, but for the VM).
    pub kernel: Option<PathBuf>,
    /// Replaces the guest's initrd.
    pub initrd: Option<PathBuf>,
    /// Replaces the default kernel command line.
    pub append: Option<String>,
    pub smp: Option<u32>,
    /// Physical CPUs of the emulated host (QEMU's `-smp`, `--host-cpus N`);
    /// default: one per vCPU. Fewer than the vCPUs makes them time-share.
    pub host_cpus: Option<u32>,
    /// Guest RAM in bytes.
    pub mem: Option<u64>,
    /// Command the Linux guest's init runs before powering off.
    pub guest_cmd: Option<String>,
    /// Give the Linux guest an NVMe namespace behind a PCI Express root complex
    /// (`--nvme SIZE|system`).
    pub nvme: Option<NvmeDisk>,
    /// The `windows` VM's disk: the NVMe namespace, or virtio-blk over virtio-PCI
    /// (`--disk-bus virtio-pci`; set in the VM's record).
    pub disk_bus: DiskBus,
    /// The `windows` VM's install media (`--install-media PATH.iso`): copied
    /// into its record as its read-only disk, which the VM gets as USB mass
    /// storage (`crate::windows::set_install_media`, as `disk add-vm` does).
    pub install_media: Option<PathBuf>,
    /// Give the Linux guest a zero-filled RAM disk of this size as virtio-blk over
    /// the virtio PCI transport, behind the same root complex (`--virtio-pci
    /// SIZE`; boots from a bundle).
    pub virtio_pci: Option<u64>,
    /// The PCI Express root complex's MSI controller (`--msi its|v2m`; default
    /// the GICv2m frame): a system-disk VM's record field, or for a bundle `its`
    /// adds `boards::devices::MSI_ITS_OPTION` to the kernel command line.
    pub msi: Option<boards::devices::Msi>,
    /// Give the Linux guest an xHCI controller with a USB HID keyboard and tablet,
    /// behind the same root complex (`--usb`; boots from a bundle).
    pub usb: bool,
    /// A read-only image the Linux guest gets as USB mass storage on that
    /// controller (`--usb-storage PATH`, implies `--usb`).
    pub usb_storage: Option<PathBuf>,
    /// The system disk a Linux run boots from (`--system-disk`; default
    /// `target/system-disk.img`). Runs of the other guests, `--kernel` and
    /// `--hypervisor-fault` runs use a boot bundle instead.
    pub system_disk: Option<PathBuf>,
    /// Recreate the system disk (a new VM identity) before booting (`--fresh`).
    pub fresh: bool,
    /// Boot the VM cold, discarding a saved state it would resume (`--cold`).
    pub cold: bool,
    pub headless: bool,
    pub timeout: Option<Duration>,
    pub script: Option<PathBuf>,
    pub accel: Accel,
    pub icount: bool,
    /// Run the reference authority partition beside the guest (`--authority`):
    /// its image goes into host memory by QEMU's loader device and is named to
    /// the hypervisor (`rayos.authority=BASE,SIZE`).
    pub authority: bool,
    /// Print the QEMU command line and bundle details.
    pub verbose: bool,
    /// Extra QEMU arguments, verbatim.
    pub qemu_args: Vec<String>,
    /// Make the hypervisor fault on purpose after reading the bundle (tests of its
    /// fatal path; `--hypervisor-fault panic|data-abort|stack-overflow|write-text|execute-data`).
    pub hypervisor_fault: Option<vmspec::HypervisorFault>,
    /// Show neither build output nor the console as it arrives (tests); the
    /// console is still in the outcome.
    pub quiet: bool,
    /// Open a QEMU window on the physical display (`--gui`; headless otherwise).
    pub gui: bool,
    /// QEMU's QMP socket (`--qmp PATH`).
    pub qmp: Option<PathBuf>,
    /// The physical display's resolution (`--display WxH`; default 1280x800).
    pub display: Option<(u32, u32)>,
    /// How QEMU starts the hypervisor (`--boot kernel|efi`; efi.rs).
    pub boot: crate::efi::Boot,
}

impl RunOptions {
    /// Options for a headless run of `guest` with `timeout`, quiet.
    pub fn headless(guest: Guest, timeout: Duration) -> RunOptions {
        RunOptions {
            guest,
            headless: true,
            timeout: Some(timeout),
            quiet: true,
            ..RunOptions::default()
        }
    }
}

/// Where the Linux guest's NVMe namespace keeps its bytes (`--nvme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NvmeDisk {
    /// A zero-filled RAM disk of this many bytes; the guest boots from a bundle.
    Ram(u64),
    /// The VM's guest disk on the system disk, completing asynchronously: the
    /// VM's device model becomes `linux-dt-nvme` (`--nvme system`).
    System,
}

/// What a `windows` VM's first disk sits behind (`--disk-bus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskBus {
    /// Namespace 1 of the NVMe controller at 00:01.0.
    #[default]
    Nvme,
    /// virtio-blk over the virtio PCI transport at 00:02.0.
    VirtioPci,
}

/// `run`'s synopsis (the usage line of `cargo xtask run --help`).
pub const USAGE: &str = "cargo xtask run [--guest linux|selftest|bench-exits|virtio-hostile|reset-loop] [--profile linux-dt|uefi-acpi|windows] [--firmware-shell] [--secure-boot] [--boot-disk PATH] [--vm NAME] [--kernel PATH] [--initrd PATH] \
[--append ARGS] [--smp N] [--host-cpus N] [--mem SIZE] [--guest-cmd 'CMD'] [--nvme SIZE|system] [--virtio-pci SIZE] [--usb] [--usb-storage PATH] [--msi its|v2m] [--disk-bus nvme|virtio-pci] [--install-media PATH.iso] [--system-disk PATH] [--fresh] [--cold] [--headless] [--timeout SECONDS] [--script FILE] \
[--boot kernel|efi] [--accel tcg|kvm] [--cpu MODEL] [--icount] [--authority|--no-authority] [--gui] [--qmp PATH] [--display WxH] [--verbose] [--qemu-arg ARG]... [--hypervisor-fault panic|data-abort|stack-overflow|write-text|execute-data]";

/// What `cargo xtask run --help` says after the options.
pub const NOTES: &str = "\
  On a terminal QEMU gets the terminal (quit with Ctrl-A X). With --headless, --script or --timeout, or
  without a terminal, the console is captured and shown, the run is killed after the timeout (default
  120 s), and the exit status says whether it passed: QEMU exited 0 (70 = hypervisor fatal error), plus
  for --guest selftest a clean `selftest: N passed, 0 failed`, and for --guest-cmd the command's status.
  The Linux guest boots from a system disk (default target/system-disk.img, created on first use with
  the VM `linux` and a 256 MiB /dev/vda, kept across runs; --fresh recreates it): before the boot its
  record is set to this run's vCPUs, memory and command line (--smp/--mem/--append/--guest-cmd or the
  defaults) and its kernel/initrd to the current images; the changes are printed. --kernel and the
  other guests boot from a bundle instead, as does --nvme SIZE (the guest's disk is then an NVMe RAM
  disk behind PCI Express, 00:01.0, MSI-X through a GICv2m frame; docs/architecture.md), and
  --virtio-pci (a virtio-blk RAM disk over the virtio 1.2 PCI transport at 00:02.0, /dev/vda, MSI-X
  likewise), and --usb (an xHCI controller at 00:03.0 with a USB keyboard and tablet; --usb-storage PATH
  adds PATH as read-only USB mass storage). --nvme system moves the system-disk VM's /dev/vda to NVMe instead (device model
  linux-dt-nvme; data persists).
  Script lines: `expect REGEX`, `send TEXT` (\\n \\r \\t \\xHH escapes), `sleep SECONDS`, `monitor COMMAND`
  (Ctrl-] into the hypervisor monitor, COMMAND, its status line printed, Ctrl-] back; docs/monitor.md;
  beside the partition COMMAND goes to its shell), `attach NAME` (beside the partition: the console to VM
  NAME until a `monitor` line, which attaches it again after its status line), `screendump FILE` (a PPM of the physical display, through QMP), `qmp COMMAND {JSON}` (any
  QMP command, e.g. `input-send-event`), `# comment`.
  The Linux guest runs beside the authority partition (--no-authority: without it): the console is the
  partition's `rayos>` shell (docs/console.md): `attach NAME` gives the console to a guest, Ctrl-] takes it
  back; a --guest-cmd run without --script ends by typing `host shutdown` into it once the guest powered off. Without the
  partition the guest has the console and Ctrl-] enters and leaves the hypervisor's monitor. The physical display is QEMU's
  virtio-gpu-device (--display WxH, default 1280x800): headless unless --gui.";

/// `run`'s flags as clap reads them ([`parse_args`] and `cargo xtask run`).
#[derive(Debug, Clone, clap::Args)]
#[command(override_usage = USAGE, after_help = NOTES)]
pub struct RunArgs {
    /// the guest (default linux)
    #[arg(long, value_name = "linux|selftest|bench-exits|virtio-hostile|reset-loop", value_parser = parse_guest)]
    guest: Option<Guest>,
    /// the VM's platform: linux-dt (default) or uefi-acpi (Debian's AAVMF in flash, ACPI)
    #[arg(long, value_name = "linux-dt|uefi-acpi|windows", value_parser = parse_profile)]
    profile: Option<Profile>,
    /// uefi-acpi: stop in the firmware's UEFI shell (no boot disk)
    #[arg(long = "firmware-shell")]
    firmware_shell: bool,
    /// uefi-acpi: a new variable store starts with Microsoft's keys enrolled (Secure Boot on)
    #[arg(long = "secure-boot")]
    secure_boot: bool,
    /// uefi-acpi: boot this disk image instead of the signed chain (shim → GRUB → Linux)
    #[arg(long = "boot-disk", value_name = "PATH")]
    boot_disk: Option<PathBuf>,
    /// start the system disk's VM NAME as its record defines it (made with `cargo xtask disk add-vm`); NAME,NAME… runs several side by side, the first primary
    #[arg(long = "vm", value_name = "NAME[,NAME…]")]
    vm: Option<String>,
    /// uefi-acpi: boot this code image from a boot bundle (variables in memory only)
    #[arg(long, value_name = "PATH")]
    firmware: Option<PathBuf>,
    /// replaces the guest's kernel
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// replaces the guest's initrd
    #[arg(long, value_name = "PATH")]
    initrd: Option<PathBuf>,
    /// replaces the kernel command line
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    append: Option<String>,
    /// vCPUs
    #[arg(long, value_name = "N", value_parser = parse_smp)]
    smp: Option<u32>,
    /// physical CPUs of the emulated host (default: one per vCPU); fewer than the vCPUs makes them time-share
    #[arg(long = "host-cpus", value_name = "N", value_parser = parse_host_cpus)]
    host_cpus: Option<u32>,
    /// guest RAM (e.g. 512M, 1G)
    #[arg(long, value_name = "SIZE", value_parser = parse_mem)]
    mem: Option<u64>,
    /// command the Linux guest's init runs, then powers off
    #[arg(long = "guest-cmd", value_name = "'CMD'", allow_hyphen_values = true)]
    guest_cmd: Option<String>,
    /// linux-dt: an NVMe disk behind PCI Express with MSI-X through a GICv2m frame: a zero-filled RAM disk of SIZE (boots from a bundle), or `system`: the system-disk VM's guest disk
    #[arg(long, value_name = "SIZE|system", value_parser = parse_nvme)]
    nvme: Option<NvmeDisk>,
    /// linux-dt: a virtio-blk disk (a zero-filled RAM disk of SIZE) over the virtio 1.2 PCI transport, behind the same root complex; boots from a bundle
    #[arg(long = "virtio-pci", value_name = "SIZE", value_parser = parse_virtio_pci)]
    virtio_pci: Option<u64>,
    /// windows: the VM's disk as the NVMe namespace (default) or as virtio-blk over virtio-PCI
    #[arg(long = "disk-bus", value_name = "nvme|virtio-pci", value_parser = parse_disk_bus)]
    disk_bus: Option<DiskBus>,
    /// windows: this ISO as the VM's install media (read-only USB mass storage), copied into its record
    #[arg(long = "install-media", value_name = "PATH.iso")]
    install_media: Option<PathBuf>,
    /// linux-dt with --nvme SIZE or --virtio-pci: MSI-X through the GICv3 ITS (LPIs) or the GICv2m frame (SPIs; the default)
    #[arg(long, value_name = "its|v2m", value_parser = parse_msi)]
    msi: Option<boards::devices::Msi>,
    /// linux-dt: an xHCI controller (00:03.0) with a USB HID keyboard and tablet, behind the same root complex; boots from a bundle
    #[arg(long)]
    usb: bool,
    /// linux-dt: a read-only image (a whole number of 512-byte sectors) as USB mass storage on that controller; implies --usb
    #[arg(long = "usb-storage", value_name = "PATH")]
    usb_storage: Option<PathBuf>,
    /// system disk of a Linux run (default target/system-disk.img)
    #[arg(long = "system-disk", value_name = "PATH")]
    system_disk: Option<PathBuf>,
    /// recreate the system disk (a new VM identity) first
    #[arg(long)]
    fresh: bool,
    /// boot the VM cold: discard its saved state instead of resuming it
    #[arg(long)]
    cold: bool,
    /// capture the console instead of giving QEMU the terminal
    #[arg(long)]
    headless: bool,
    /// kill a captured run after this long (default 120)
    #[arg(long, value_name = "SECONDS", value_parser = parse_timeout)]
    timeout: Option<Duration>,
    /// drive the console with a script (lines below)
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// kernel: QEMU loads the hypervisor (default); efi: AAVMF at EL2 starts rayos-el2.efi from an ESP
    #[arg(long, value_name = "kernel|efi", value_parser = |v: &str| v.parse::<crate::efi::Boot>())]
    boot: Option<crate::efi::Boot>,
    /// QEMU accelerator (default tcg)
    #[arg(long, value_name = "tcg|kvm", value_parser = parse_accel)]
    accel: Option<Accel>,
    /// QEMU's CPU model instead of `max` (e.g. cortex-a72: Armv8.0, no RNDR).
    #[arg(long, value_name = "MODEL", action = clap::ArgAction::Append)]
    cpu: Vec<String>,
    /// -icount shift=0 (exact instruction counts)
    #[arg(long)]
    icount: bool,
    /// run the reference authority partition (guests/authority) beside the guest
    /// (the default for the Linux guest): the serial console is its `rayos>` shell
    #[arg(long, conflicts_with = "no_authority")]
    authority: bool,
    /// run without the authority partition: the guest owns the serial console and
    /// Ctrl-] reaches the hypervisor's monitor
    #[arg(long)]
    no_authority: bool,
    /// print the QEMU command line and bundle details, and turn on the
    /// hypervisor's debug log lines (`rayos.log=debug`)
    #[arg(long, short = 'v')]
    verbose: bool,
    /// extra QEMU argument, verbatim
    #[arg(long = "qemu-arg", value_name = "ARG", allow_hyphen_values = true, action = clap::ArgAction::Append)]
    qemu_arg: Vec<String>,
    /// show the physical display in a QEMU window (headless otherwise)
    #[arg(long)]
    gui: bool,
    /// serve QEMU's QMP on this Unix socket
    #[arg(long, value_name = "PATH")]
    qmp: Option<PathBuf>,
    /// the physical display's resolution (default 1280x800)
    #[arg(long, value_name = "WxH", value_parser = parse_display)]
    display: Option<(u32, u32)>,
    /// make the hypervisor fault on purpose (tests of its fatal path)
    #[arg(long = "hypervisor-fault", value_name = "panic|data-abort|stack-overflow|write-text|execute-data", value_parser = parse_fault)]
    hypervisor_fault: Option<vmspec::HypervisorFault>,
}

fn parse_guest(v: &str) -> Result<Guest, String> {
    Guest::from_name(v).map_err(|e| e.to_string())
}

fn parse_profile(v: &str) -> Result<Profile, String> {
    [Profile::LinuxDt, Profile::UefiAcpi, Profile::Windows]
        .into_iter()
        .find(|p| p.name() == v)
        .ok_or_else(|| format!("--profile takes linux-dt, uefi-acpi or windows, not `{v}`"))
}

/// Physical CPUs the hypervisor schedules on at most (el2 `stacks::MAX_CPUS`).
pub const MAX_HOST_CPUS: u32 = 8;

fn parse_host_cpus(v: &str) -> Result<u32, String> {
    v.parse::<u32>()
        .ok()
        .filter(|n| (1..=MAX_HOST_CPUS).contains(n))
        .ok_or_else(|| format!("--host-cpus takes 1..={MAX_HOST_CPUS}, not `{v}`"))
}

fn parse_smp(v: &str) -> Result<u32, String> {
    v.parse()
        .ok()
        .filter(|n| (1..=vmspec::MAX_VCPUS).contains(n))
        .ok_or_else(|| format!("--smp takes 1..={}, not `{v}`", vmspec::MAX_VCPUS))
}

fn parse_mem(v: &str) -> Result<u64, String> {
    vmspec::parse_size(v)
        .filter(|m| *m >= 1 << 20)
        .ok_or_else(|| format!("--mem takes a size of at least 1M (e.g. 512M, 1G), not `{v}`"))
}

fn parse_msi(v: &str) -> Result<boards::devices::Msi, String> {
    match v {
        "its" => Ok(boards::devices::Msi::Its),
        "v2m" => Ok(boards::devices::Msi::V2m),
        _ => Err(format!("--msi takes `its` or `v2m`, not `{v}`")),
    }
}

fn parse_nvme(v: &str) -> Result<NvmeDisk, String> {
    if v == "system" {
        return Ok(NvmeDisk::System);
    }
    vmspec::parse_size(v)
        .filter(|d| *d > 0 && d % 512 == 0)
        .map(NvmeDisk::Ram)
        .ok_or_else(|| {
            format!(
                "--nvme takes a size, a multiple of 512 bytes (e.g. 64M), or `system`, not `{v}`"
            )
        })
}

fn parse_disk_bus(v: &str) -> Result<DiskBus, String> {
    match v {
        "nvme" => Ok(DiskBus::Nvme),
        "virtio-pci" => Ok(DiskBus::VirtioPci),
        _ => Err(format!("--disk-bus takes nvme or virtio-pci, not `{v}`")),
    }
}

fn parse_virtio_pci(v: &str) -> Result<u64, String> {
    vmspec::parse_size(v)
        .filter(|d| *d > 0 && d % 512 == 0)
        .ok_or_else(|| {
            format!("--virtio-pci takes a size, a multiple of 512 bytes (e.g. 64M), not `{v}`")
        })
}

fn parse_timeout(v: &str) -> Result<Duration, String> {
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("--timeout takes seconds (0 < s <= 86400), not `{v}`"))
}

fn parse_display(v: &str) -> Result<(u32, u32), String> {
    v.split_once('x')
        .and_then(|(w, h)| Some((w.parse::<u32>().ok()?, h.parse::<u32>().ok()?)))
        .filter(|&(w, h)| (1..=8192).contains(&w) && (1..=8192).contains(&h))
        .ok_or_else(|| {
            format!("--display takes WIDTHxHEIGHT (1..8192 each, e.g. 1280x800), not `{v}`")
        })
}

fn parse_accel(v: &str) -> Result<Accel, String> {
    v.parse()
}

fn parse_fault(v: &str) -> Result<vmspec::HypervisorFault, String> {
    vmspec::HypervisorFault::from_name(v).ok_or_else(|| {
        format!("--hypervisor-fault takes panic, data-abort, stack-overflow, write-text or execute-data, not `{v}`")
    })
}

impl RunArgs {
    /// The options, checked. `matches` are the ones these flags came from: they
    /// give the order of `--qemu-arg` and `--cpu` (extra QEMU arguments keep the
    /// command line's order; QEMU takes the last `-cpu`).
    pub fn options(self, matches: &clap::ArgMatches) -> Result<RunOptions, Error> {
        let mut extra: Vec<(usize, Vec<String>)> = Vec::new();
        let indices = |id: &str| -> Vec<usize> {
            matches
                .indices_of(id)
                .map(|i| i.collect())
                .unwrap_or_default()
        };
        for (i, a) in indices("qemu_arg").into_iter().zip(self.qemu_arg) {
            extra.push((i, vec![a]));
        }
        for (i, model) in indices("cpu").into_iter().zip(self.cpu) {
            extra.push((i, vec!["-cpu".into(), model]));
        }
        extra.sort_by_key(|(i, _)| *i);
        let uefi_conflict = self.guest.is_some()
            || self.kernel.is_some()
            || self.initrd.is_some()
            || self.append.is_some()
            || self.hypervisor_fault.is_some();
        let profile = self.profile.unwrap_or_default();
        if profile.boots_firmware() && uefi_conflict {
            return Err(Error::Usage(format!(
                "--profile {} boots firmware: no --guest, --kernel, --initrd, --append or --hypervisor-fault",
                profile.name()
            )));
        }
        if self.install_media.is_some() && profile != Profile::Windows {
            return Err(Error::Usage(
                "--install-media applies to --profile windows".into(),
            ));
        }
        if self.disk_bus.is_some() && profile != Profile::Windows {
            return Err(Error::Usage(
                "--disk-bus applies to --profile windows".into(),
            ));
        }
        if profile == Profile::Windows && self.firmware.is_some() {
            return Err(Error::Usage(
                "--profile windows runs its VM from a system disk: no --firmware".into(),
            ));
        }
        if profile.boots_firmware() && self.firmware_shell && self.guest_cmd.is_some() {
            return Err(Error::Usage(
                "--guest-cmd runs in Linux: not with --firmware-shell".into(),
            ));
        }
        if profile == Profile::UefiAcpi && !self.firmware_shell && self.firmware.is_some() {
            return Err(Error::Usage(
                "--firmware boots a boot bundle, which carries no boot disk: add --firmware-shell"
                    .into(),
            ));
        }
        if self.boot_disk.is_some()
            && (!profile.boots_firmware() || self.firmware_shell || self.guest_cmd.is_some())
        {
            return Err(Error::Usage(
                "--boot-disk applies to --profile uefi-acpi without --firmware-shell or --guest-cmd".into(),
            ));
        }
        if self.vm.is_some()
            && (self.guest.is_some()
                || self.kernel.is_some()
                || self.initrd.is_some()
                || self.append.is_some()
                || self.smp.is_some()
                || self.mem.is_some()
                || self.guest_cmd.is_some()
                || self.firmware.is_some()
                || self.firmware_shell
                || self.secure_boot
                || self.boot_disk.is_some()
                || self.fresh
                || self.nvme.is_some()
                || self.disk_bus.is_some()
                || self.msi.is_some()
                || self.usb
                || self.usb_storage.is_some()
                || self.hypervisor_fault.is_some()
                || self.boot == Some(crate::efi::Boot::Efi))
        {
            return Err(Error::Usage(
                "--vm NAME runs the VM as its record defines it: only with --profile, --system-disk, --cold and the run options (--headless, --timeout, --script, ...)".into(),
            ));
        }
        if self.secure_boot && (!profile.boots_firmware() || self.firmware.is_some()) {
            return Err(Error::Usage(
                "--secure-boot applies to --profile uefi-acpi without --firmware".into(),
            ));
        }
        if (self.nvme.is_some()
            || self.virtio_pci.is_some()
            || self.usb
            || self.usb_storage.is_some())
            && (profile != Profile::LinuxDt || self.guest.unwrap_or_default() != Guest::Linux)
        {
            return Err(Error::Usage(
                "--nvme, --virtio-pci, --usb and --usb-storage apply to the Linux guest with --profile linux-dt".into(),
            ));
        }
        if self.nvme == Some(NvmeDisk::System)
            && (self.kernel.is_some()
                || self.hypervisor_fault.is_some()
                || self.usb
                || self.usb_storage.is_some())
        {
            return Err(Error::Usage(
                "--nvme system needs a system-disk run (not --kernel, --hypervisor-fault or --usb, which boot a bundle): use --nvme SIZE".into(),
            ));
        }
        if self.msi.is_some()
            && self.vm.is_none()
            && !(self.nvme.is_some()
                || self.virtio_pci.is_some()
                || self.usb
                || self.usb_storage.is_some()
                || profile == Profile::Windows)
        {
            return Err(Error::Usage(
                "--msi applies to --profile windows and to a Linux guest with --nvme SIZE|system, --virtio-pci SIZE or --usb".into(),
            ));
        }
        if (self.firmware_shell || self.firmware.is_some()) && !profile.boots_firmware() {
            return Err(Error::Usage(
                "--firmware-shell and --firmware apply to --profile uefi-acpi".into(),
            ));
        }
        // The default for the Linux guest (the registry's VMs); a `--guest-cmd`
        // run then ends with `host shutdown` to the partition's shell once its
        // guest powered off ([`GUEST_CMD_END`]). The test guests are programs
        // that drive the hypervisor themselves.
        let authority = self.authority
            || (!self.no_authority && self.guest.unwrap_or_default() == Guest::Linux);
        let o = RunOptions {
            guest: self.guest.unwrap_or_default(),
            profile,
            firmware_shell: self.firmware_shell,
            secure_boot: self.secure_boot,
            boot_disk: self.boot_disk,
            vm: self.vm,
            firmware: self.firmware,
            kernel: self.kernel,
            initrd: self.initrd,
            append: self.append,
            smp: self.smp,
            host_cpus: self.host_cpus,
            mem: self.mem,
            guest_cmd: self.guest_cmd,
            nvme: self.nvme,
            virtio_pci: self.virtio_pci,
            disk_bus: self.disk_bus.unwrap_or_default(),
            install_media: self.install_media,
            msi: self.msi,
            usb: self.usb || self.usb_storage.is_some(),
            usb_storage: self.usb_storage,
            system_disk: self.system_disk,
            fresh: self.fresh,
            cold: self.cold,
            headless: self.headless,
            timeout: self.timeout,
            script: self.script,
            accel: self.accel.unwrap_or_default(),
            icount: self.icount,
            authority,
            verbose: self.verbose,
            qemu_args: extra.into_iter().flat_map(|(_, a)| a).collect(),
            hypervisor_fault: self.hypervisor_fault,
            quiet: false,
            gui: self.gui,
            qmp: self.qmp,
            display: self.display,
            boot: self.boot.unwrap_or_default(),
        };

        if o.guest_cmd.is_some() && o.guest != Guest::Linux {
            return Err(Error::Usage(
                "--guest-cmd only applies to --guest linux".into(),
            ));
        }
        if (o.system_disk.is_some() || o.fresh || o.cold) && !uses_system_disk(&o) {
            return Err(Error::Usage(
                "--system-disk/--fresh/--cold apply to --guest linux without --kernel, and to --profile uefi-acpi without --firmware".into(),
            ));
        }
        Ok(o)
    }
}

/// Parses `run`'s arguments (`--flag value` or `--flag=value`), as `cargo xtask
/// run ARGS` does.
pub fn parse_args(args: &[String]) -> Result<RunOptions, Error> {
    match crate::cli::parse(std::iter::once("run".to_string()).chain(args.iter().cloned()))? {
        crate::cli::Parsed::Command(crate::cli::Command::Run(a), matches) => a.options(
            matches
                .subcommand_matches("run")
                .expect("the run subcommand matched"),
        ),
        _ => Err(Error::Usage(format!("`run` takes options only\n  {USAGE}"))),
    }
}

/// Whether the run boots from a system disk (the Linux guest with its own kernel;
/// a deliberate hypervisor fault and an NVMe RAM disk travel in a bundle, so they
/// keep one).
pub fn uses_system_disk(o: &RunOptions) -> bool {
    if o.profile.boots_firmware() {
        return o.firmware.is_none();
    }
    o.guest == Guest::Linux
        && o.kernel.is_none()
        && o.hypervisor_fault.is_none()
        && !matches!(o.nvme, Some(NvmeDisk::Ram(_)))
        && o.virtio_pci.is_none()
        && !o.usb
        && o.usb_storage.is_none()
}

/// A run's `--msi` as a VM record's MSI controller (default: the v2m frame).
fn record_msi(msi: Option<boards::devices::Msi>) -> registry::MsiController {
    match msi {
        Some(boards::devices::Msi::Its) => registry::MsiController::Its,
        _ => registry::MsiController::V2m,
    }
}

/// The words a run adds to the hypervisor's command line (QEMU's `-append`),
/// each after a space: where the authority partition's image is, the debug log.
fn hypervisor_options(o: &RunOptions, authority: Option<(u64, u64)>) -> String {
    let mut s = String::new();
    if let Some((base, size)) = authority {
        s.push_str(&format!(
            " {}{base:#x},{size}",
            boards::devices::AUTHORITY_OPTION
        ));
    }
    if o.verbose {
        s.push(' ');
        s.push_str(boards::devices::DEBUG_LOG_OPTION);
    }
    s
}

/// With `--authority`: builds the partition, has QEMU's loader device put its
/// image near the top of the host's RAM (`qemu.guest_mem` must be set), and
/// answers where, for the hypervisor option.
fn add_authority(
    layout: &Layout,
    o: &RunOptions,
    qemu: &mut QemuConfig,
) -> Result<Option<(u64, u64)>, Error> {
    if !o.authority {
        return Ok(None);
    }
    let image = build_guests(layout, o.quiet)?
        .pop()
        .ok_or_else(|| Error::step("--authority", "the guest build made no authority image"))?;
    let size = std::fs::metadata(&image)
        .map_err(|e| Error::io(format!("read {}", image.display()), e))?
        .len();
    let base = crate::qemu::authority_image_base(qemu.guest_mem);
    qemu.extra_args.extend([
        "-device".to_string(),
        format!(
            "loader,file={},addr={base:#x},force-raw=on",
            image.display()
        ),
    ]);
    Ok(Some((base, size)))
}

/// `steps` for the console they will drive: beside the authority partition
/// (`shell`) a `monitor` line goes to its shell (the shell runs every monitor
/// command); without it the guest owns the console, so `attach` is refused.
fn for_console(steps: Vec<Step>, shell: bool) -> Result<Vec<Step>, String> {
    steps
        .into_iter()
        .map(|mut s| match s.action {
            Action::Monitor(c) if shell => {
                s.action = Action::Shell(c);
                Ok(s)
            }
            Action::Attach(_) if !shell => Err(format!(
                "{s}: `attach` gives the console to a VM from the authority partition's shell; without the partition (--no-authority, a test guest) the guest owns the console already"
            )),
            _ => Ok(s),
        })
        .collect()
}

/// How a `--guest-cmd` run beside the authority partition ends: the guest
/// powers off after its command, el2 keeps the host up for the partition, and
/// the run asks the partition's shell to power the host off.
pub const GUEST_CMD_END: &str =
    "expect no VM left to run; the host stays up for the authority partition\n\
send host shutdown\n\
expect host shutdown \\(authority partition\\): powering off\n";

/// [`GUEST_CMD_END`]'s steps for a `--guest-cmd` run beside the partition
/// without a script (marked as added in messages). A run with a script ends
/// as the script has it (`monitor host shutdown`, or QEMU stopped
/// [`SCRIPT_EXIT_GRACE`] after its last step); other runs are unchanged.
fn with_guest_cmd_end(script: Vec<Step>, o: &RunOptions) -> Result<Vec<Step>, Error> {
    if !(o.authority && o.guest_cmd.is_some() && script.is_empty()) {
        return Ok(script);
    }
    let end = script::parse(GUEST_CMD_END)
        .map_err(|e| Error::step("--guest-cmd", format!("its ending steps: {e}")))?;
    Ok(end
        .into_iter()
        .map(|mut s| {
            s.text = format!("{} (added: the end of a --guest-cmd run)", s.text);
            s
        })
        .collect())
}

/// Whether a run is captured (piped) rather than on the terminal.
pub fn is_captured(o: &RunOptions) -> bool {
    o.headless
        || o.script.is_some()
        || o.timeout.is_some()
        || o.quiet
        || !std::io::stdin().is_terminal()
}

/// A run made ready to boot: QEMU's configuration, the VM and the script.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub qemu: QemuConfig,
    pub vm: VmDef,
    /// The boot bundle, or the system disk's image for a system-disk run.
    pub bundle: PathBuf,
    pub script: Vec<Step>,
    /// Set for a system-disk run (then `qemu.initrd` is not passed to QEMU).
    pub system_disk: Option<SystemDiskRun>,
}

impl Prepared {
    /// The QEMU command line: the system disk attached, or the boot bundle.
    pub fn line(&self) -> QemuLine {
        match &self.system_disk {
            Some(d) => sysdisk::qemu_line(&self.qemu, &d.path),
            None => self.qemu.line(),
        }
    }

    /// The QEMU command to spawn.
    pub fn command(&self) -> std::process::Command {
        self.line().command()
    }

    /// The QEMU command line as the user would type it.
    pub fn display(&self) -> String {
        self.line().display()
    }
}

/// Installs QEMU if needed, builds what the guest needs and writes the bundle.
pub fn prepare(layout: &Layout, o: &RunOptions) -> Result<Prepared, Error> {
    let script = match &o.script {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Error::io(format!("read script {}", path.display()), e))?;
            let steps = script::parse(&text)
                .map_err(|e| Error::step(format!("script {}", path.display()), e.to_string()))?;
            for_console(steps, o.authority)
                .map_err(|e| Error::step(format!("script {}", path.display()), e))?
        }
        None => Vec::new(),
    };
    let script = with_guest_cmd_end(script, o)?;
    let mut qemu = QemuConfig {
        smp: 0,
        guest_mem: 0,
        kernel: PathBuf::new(),
        initrd: PathBuf::new(),
        accel: o.accel,
        icount: o.icount,
        extra_args: o.qemu_args.clone(),
        display: o.display.unwrap_or(crate::qemu::DEFAULT_DISPLAY),
        gui: o.gui,
        // A script that takes screendumps needs QMP even without --qmp.
        qmp: o.qmp.clone().or_else(|| {
            script
                .iter()
                .any(|s| matches!(s.action, Action::Screendump(_) | Action::Qmp { .. }))
                .then(|| crate::qmp::default_socket(&layout.out))
        }),
        efi: None,
    };
    qemu.check()?;
    ensure_qemu(o.quiet)?;
    let hypervisor = build_hypervisor(layout, o.quiet)?;

    if let Some(name) = &o.vm {
        let path = o.system_disk.clone().unwrap_or_else(|| match o.profile {
            Profile::UefiAcpi => sysdisk::uefi_default_path(layout),
            Profile::Windows => sysdisk::windows_default_path(layout),
            Profile::LinuxDt => sysdisk::default_path(layout),
        });
        if let Some(iso) = &o.install_media {
            eprintln!(
                "xtask: VM '{name}': {}",
                crate::windows::set_install_media_of(&path, name, iso)?
            );
        }
        // `--vm a,b`: several VMs side by side, the first the primary guest.
        let mut chosen = Vec::new();
        for name in registry::choice::names(name) {
            if chosen
                .iter()
                .any(|(_, r): &(sysdisk::SystemDiskRun, registry::VmRecord)| r.name == name)
            {
                return Err(Error::Usage(format!("--vm names '{name}' twice")));
            }
            let (run, rec) = sysdisk::named_vm(&path, name, o.cold)?;
            let model = Profile::of_model(rec.device_model);
            if model != o.profile {
                return Err(Error::Usage(format!(
                    "VM '{name}' on {} is a {} VM: add --profile {}",
                    path.display(),
                    rec.device_model.as_str(),
                    model.name()
                )));
            }
            eprintln!("xtask: {}", run.describe(name));
            chosen.push((run, rec));
        }
        if chosen.is_empty() {
            return Err(Error::Usage("--vm needs a VM name".into()));
        }
        qemu.smp = o
            .host_cpus
            .unwrap_or_else(|| chosen.iter().map(|(_, r)| r.vcpus).sum());
        qemu.guest_mem = chosen.iter().map(|(_, r)| r.memory_bytes).sum();
        let (run, rec) = chosen.remove(0);
        qemu.kernel = hypervisor;
        qemu.initrd = path.clone();
        let authority = add_authority(layout, o, &mut qemu)?;
        qemu.extra_args.extend([
            "-append".to_string(),
            format!(
                "{}{name}{}",
                registry::choice::VM_ARG,
                hypervisor_options(o, authority)
            ),
        ]);
        let vm = VmDef {
            name: name.clone(),
            vcpus: rec.vcpus,
            mem: rec.memory_bytes,
            cmdline: String::new(),
            guest: rec.device_model.as_str().into(),
            kernel: PathBuf::new(),
            initrd: None,
            disk: None,
            fault: None,
            pmu_el2_counting: false,
            firmware: None,
            nvme: None,
            virtio_pci: None,
            usb: false,
            usb_storage: None,
        };
        return Ok(Prepared {
            qemu,
            vm,
            bundle: path,
            script,
            system_disk: Some(run),
        });
    }

    if o.profile.boots_firmware() {
        let windows = o.profile == Profile::Windows;
        let (code, ms_vars) = match &o.firmware {
            Some(p) => (p.clone(), None),
            None => {
                let aavmf = crate::firmware::ensure_aavmf(
                    &layout.firmware_cache(),
                    &layout.guest_cache().join("apt"),
                )
                .map_err(|e| Error::step("firmware", e))?;
                if o.verbose {
                    eprintln!(
                        "xtask: firmware {} ({})",
                        aavmf.code.display(),
                        aavmf.package
                    );
                }
                let ms = aavmf.vars_for(true).to_path_buf();
                (aavmf.code, Some(ms))
            }
        };
        // The boot disk: the signed chain with GRUB's configuration carrying
        // this run's guest command, written for each run.
        let boot_disk = if o.firmware_shell {
            None
        } else if let Some(p) = &o.boot_disk {
            Some(p.clone())
        } else {
            // One per system disk, so runs on different system disks (parallel
            // test files) do not write each other's guest command.
            let path = crate::boot_chain::image_dir(layout).join(match &o.system_disk {
                Some(d) => format!(
                    "{}-{UEFI_BOOT_DISK}",
                    d.file_stem().unwrap_or_default().to_string_lossy()
                ),
                None => UEFI_BOOT_DISK.to_string(),
            });
            std::fs::create_dir_all(crate::boot_chain::image_dir(layout))
                .map_err(|e| Error::io("create the boot-chain directory", e))?;
            let chain = crate::boot_chain::write_signed_disk(layout, o.guest_cmd.as_deref(), &path)
                .map_err(|e| Error::step("boot disk", e))?;
            if o.verbose {
                eprintln!(
                    "xtask: boot disk {} ({})",
                    path.display(),
                    chain.packages.join(" ")
                );
            }
            Some(path)
        };
        let name = if windows {
            sysdisk::WINDOWS_VM_NAME
        } else {
            sysdisk::UEFI_VM_NAME
        };
        let vm = VmDef {
            name: name.into(),
            vcpus: o.smp.unwrap_or(if windows {
                WINDOWS_DEFAULT_VCPUS
            } else {
                UEFI_DEFAULT_VCPUS
            }),
            mem: o.mem.unwrap_or(if o.firmware_shell {
                UEFI_DEFAULT_MEM
            } else {
                UEFI_LINUX_DEFAULT_MEM
            }),
            cmdline: String::new(),
            guest: name.into(),
            kernel: PathBuf::new(),
            initrd: None,
            disk: None,
            nvme: None,
            virtio_pci: None,
            usb: false,
            usb_storage: None,
            fault: None,
            pmu_el2_counting: false,
            firmware: Some(crate::bundle::FirmwareDef {
                code: code.clone(),
                vars: None,
            }),
        };
        let system_disk = if uses_system_disk(o) {
            let path = o.system_disk.clone().unwrap_or_else(|| {
                if windows {
                    sysdisk::windows_default_path(layout)
                } else {
                    sysdisk::uefi_default_path(layout)
                }
            });
            let want = sysdisk::DesiredFirmwareVm {
                name: vm.name.clone(),
                device_model: if windows {
                    registry::DeviceModel::Windows
                } else {
                    registry::DeviceModel::UefiAcpi
                },
                vcpus: vm.vcpus,
                mem: vm.mem,
                code,
                boot_disk,
                // Secure Boot is part of the windows device set.
                initial_vars: if o.secure_boot || windows {
                    ms_vars
                } else {
                    None
                },
                msi: record_msi(o.msi),
                disk_bus: match o.disk_bus {
                    DiskBus::Nvme => registry::DiskBus::Nvme,
                    DiskBus::VirtioPci => registry::DiskBus::VirtioPci,
                },
            };
            let run = sysdisk::ensure_firmware(&path, o.fresh, &want)?;
            eprintln!("xtask: {}", run.describe(&want.name));
            if let Some(iso) = &o.install_media {
                eprintln!(
                    "xtask: VM '{}': {}",
                    want.name,
                    crate::windows::set_install_media_of(&path, &want.name, iso)?
                );
            }
            Some(run)
        } else {
            None
        };
        qemu.smp = o.host_cpus.unwrap_or(vm.vcpus);
        qemu.guest_mem = vm.mem;
        qemu.kernel = hypervisor;
        // The partition is built before the bundle is written ([`prepare`]).
        let authority = add_authority(layout, o, &mut qemu)?;
        let bundle = match &system_disk {
            Some(d) => d.path.clone(),
            None => write_bundle(layout, &vm)?,
        };
        qemu.initrd = bundle.clone();
        let options = hypervisor_options(o, authority);
        if !options.is_empty() {
            qemu.extra_args
                .extend(["-append".to_string(), options.trim_start().to_string()]);
        }
        return Ok(Prepared {
            qemu,
            vm,
            bundle,
            script,
            system_disk,
        });
    }
    let (kernel, initrd, mut cmdline) = match o.guest {
        Guest::Linux => {
            let (kernel, initrd) = match (&o.kernel, &o.initrd) {
                (Some(k), Some(i)) => (k.clone(), i.clone()),
                _ => {
                    let g = linux_guest::ensure_linux_guest(&layout.guest_cache())
                        .map_err(|e| Error::step("linux guest", e))?;
                    if o.verbose {
                        eprintln!(
                            "xtask: linux guest {} ({}), modules: {}",
                            g.kernel_release,
                            g.kernel_format,
                            g.modules_loaded.join(" ")
                        );
                    }
                    (
                        o.kernel.clone().unwrap_or(g.kernel),
                        o.initrd.clone().unwrap_or(g.initramfs),
                    )
                }
            };
            (
                kernel,
                Some(initrd),
                o.append
                    .clone()
                    .unwrap_or_else(|| LINUX_CMDLINE.to_string()),
            )
        }
        Guest::Selftest
        | Guest::BenchExits
        | Guest::BenchCompose
        | Guest::VirtioHostile
        | Guest::ResetLoop => {
            let kernel = match &o.kernel {
                Some(k) => k.clone(),
                None => {
                    build_guests(layout, o.quiet)?;
                    layout.guest_image(o.guest.name())
                }
            };
            (
                kernel,
                o.initrd.clone(),
                o.append.clone().unwrap_or_default(),
            )
        }
    };
    if o.msi == Some(boards::devices::Msi::Its) && !uses_system_disk(o) {
        cmdline.push(' ');
        cmdline.push_str(boards::devices::MSI_ITS_OPTION);
    }
    if let Some(cmd) = &o.guest_cmd {
        append_guest_cmd(&mut cmdline, cmd)?;
    }
    let custom = o.kernel.is_some();
    let vm = VmDef {
        name: if custom {
            "custom".into()
        } else {
            o.guest.name().into()
        },
        vcpus: o.smp.unwrap_or(o.guest.default_vcpus()),
        mem: o.mem.unwrap_or(o.guest.default_mem()),
        cmdline,
        guest: if custom {
            "custom".into()
        } else {
            o.guest.name().into()
        },
        kernel,
        initrd,
        disk: (o.guest == Guest::VirtioHostile).then_some(VIRTIO_HOSTILE_DISK),
        nvme: match o.nvme {
            Some(NvmeDisk::Ram(size)) => Some(size),
            _ => None,
        },
        virtio_pci: o.virtio_pci,
        usb: o.usb || o.usb_storage.is_some(),
        usb_storage: o.usb_storage.clone(),
        fault: o.hypervisor_fault,
        // The exits benchmark counts the hypervisor's instructions; no other guest
        // may watch EL2 through its PMU.
        pmu_el2_counting: o.guest == Guest::BenchExits,
        firmware: None,
    };
    let system_disk = if uses_system_disk(o) {
        let path = o
            .system_disk
            .clone()
            .unwrap_or_else(|| sysdisk::default_path(layout));
        let want = DesiredVm {
            name: sysdisk::VM_NAME.into(),
            vcpus: vm.vcpus,
            mem: vm.mem,
            cmdline: vm.cmdline.clone(),
            kernel: vm.kernel.clone(),
            initrd: vm.initrd.clone().unwrap_or_default(),
            disk_size: sysdisk::GUEST_DISK_SIZE,
            device_model: if o.nvme == Some(NvmeDisk::System) {
                registry::DeviceModel::LinuxDtNvme
            } else {
                registry::DeviceModel::LinuxDt
            },
            msi: record_msi(o.msi),
        };
        let run = sysdisk::ensure_with(&path, o.fresh, o.cold, &want)?;
        eprintln!("xtask: {}", run.describe(&want.name));
        Some(run)
    } else {
        None
    };
    qemu.smp = o.host_cpus.unwrap_or(vm.vcpus);
    qemu.guest_mem = vm.mem;
    qemu.kernel = hypervisor;
    // The partition is built (which may wait for another process's build)
    // before the bundle is written: runs side by side share
    // `target/bundles/NAME.cpio`, and with the build between writing it and
    // QEMU reading it another run's bundle replaced it (seen: the ITS test
    // booted the virtio-PCI test's command).
    let authority = add_authority(layout, o, &mut qemu)?;
    let bundle = match &system_disk {
        Some(d) => d.path.clone(),
        None => write_bundle(layout, &vm)?,
    };
    if o.boot == crate::efi::Boot::Efi {
        // The application reads a boot bundle from the ESP; a system-disk run has none.
        let bundle_on_esp = system_disk.is_none().then_some(bundle.as_path());
        qemu.efi = Some(crate::efi::prepare(layout, o.quiet, bundle_on_esp)?);
    }
    qemu.initrd = bundle.clone();
    let options = hypervisor_options(o, authority);
    if !options.is_empty() && o.boot != crate::efi::Boot::Efi {
        qemu.extra_args
            .extend(["-append".to_string(), options.trim_start().to_string()]);
    }
    Ok(Prepared {
        qemu,
        vm,
        bundle,
        script,
        system_disk,
    })
}

/// How a captured run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// QEMU exited by itself (after the script, if any, completed).
    Exited(Option<i32>),
    /// The script completed and QEMU, still running after the grace, was stopped.
    ScriptDone,
    /// The timeout passed; `waiting_for` names the script step being waited on.
    TimedOut { waiting_for: Option<String> },
    /// QEMU exited before this `expect` step matched.
    StepUnmet { step: String, code: Option<i32> },
    /// Writing a `send` step to QEMU failed.
    SendFailed { step: String, error: String },
}

/// A captured run's result.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub guest: Guest,
    /// Whether a Linux guest command was given (its exit status then counts).
    pub guest_cmd: bool,
    /// Whether the guest is the built-in one (not `--kernel`).
    pub builtin_kernel: bool,
    pub ending: Ending,
    /// Everything QEMU printed (hypervisor lines start with `[el2 `).
    pub console: String,
    pub elapsed: Duration,
    pub timeout: Duration,
    /// When the run timed out: where each emulated CPU was (hang.rs), asked of
    /// QEMU before it was killed.
    pub cpus_at_timeout: Option<String>,
}

impl RunOutcome {
    /// QEMU's exit code when it exited by itself.
    pub fn exit_code(&self) -> Option<i32> {
        match &self.ending {
            Ending::Exited(code) | Ending::StepUnmet { code, .. } => *code,
            _ => None,
        }
    }

    /// The self-test lines of the console.
    pub fn selftest(&self) -> SelftestReport {
        parse_selftest(&self.console)
    }

    /// The last `n` console lines.
    pub fn console_tail(&self, n: usize) -> String {
        tail_lines(&self.console, n)
    }

    /// `Ok` when the run passed, else a one-line reason.
    pub fn verdict(&self) -> Result<(), String> {
        match &self.ending {
            Ending::Exited(Some(0)) => {}
            Ending::Exited(code) => return Err(describe_exit(*code)),
            Ending::ScriptDone => return Ok(()),
            Ending::TimedOut { waiting_for } => {
                let secs = self.timeout.as_secs_f64();
                return Err(match waiting_for {
                    Some(step) => format!("timed out after {secs:.0} s waiting for script {step}"),
                    None => format!("timed out after {secs:.0} s (QEMU killed)"),
                });
            }
            Ending::StepUnmet { step, code } => {
                return Err(format!(
                    "{} before script {step} matched",
                    describe_exit(*code)
                ))
            }
            Ending::SendFailed { step, error } => {
                return Err(format!("script {step}: cannot write to QEMU: {error}"))
            }
        }
        match self.guest {
            Guest::Selftest if self.builtin_kernel => self.selftest().verdict().map(|_| ()),
            Guest::VirtioHostile if self.builtin_kernel => {
                crate::selftest::parse_checks(&self.console, VIRTIO_HOSTILE_SUMMARY)
                    .verdict()
                    .map(|_| ())
            }
            Guest::Linux if self.guest_cmd => match linux_guest::parse_console(&self.console)
                .cmd_exit
            {
                Some(0) => Ok(()),
                Some(n) => Err(format!("the guest command exited with status {n}")),
                None => Err("the guest command reported no exit status (did init run it?)".into()),
            },
            _ => Ok(()),
        }
    }
}

/// Boots captured: QEMU's output is collected (and echoed unless `quiet`), the
/// script runs, the timeout is enforced, QEMU is killed at the end. Set-up
/// failures (build, QEMU missing) are errors; how the run went is the outcome.
pub fn run_captured(layout: &Layout, o: &RunOptions) -> Result<RunOutcome, Error> {
    let mut prepared = prepare(layout, o)?;
    // Every captured run serves QMP, so that a timeout can ask where the CPUs
    // were: `--qmp`, else a socket of the run's own (also for a script's
    // `screendump`), removed after the run.
    let own_socket = o.qmp.is_none();
    let qmp = o
        .qmp
        .clone()
        .unwrap_or_else(|| crate::qmp::run_socket(&layout.out));
    prepared.qemu.qmp = Some(qmp.clone());
    if o.verbose {
        eprintln!("xtask: {}", prepared.display());
    }
    let timeout = o.timeout.unwrap_or(DEFAULT_TIMEOUT);
    let start = Instant::now();
    let mut session = Session::spawn(prepared.command(), !o.quiet, timeout)
        .map_err(|e| Error::step("start QEMU", e.to_string()))?;
    let ending = drive(&mut session, &prepared.script, Some(&qmp));
    let cpus_at_timeout = matches!(ending, Ending::TimedOut { .. }).then(|| {
        crate::hang::cpu_report_at(
            &qmp,
            &layout.release_elf(HYP_TARGET, HYP_PACKAGE),
            crate::hang::image_base(session.output()),
        )
    });
    session.kill();
    if own_socket {
        let _ = std::fs::remove_file(&qmp);
    }
    crate::pool::log_boot(start.elapsed(), &ending);
    Ok(RunOutcome {
        guest: o.guest,
        guest_cmd: o.guest_cmd.is_some(),
        builtin_kernel: o.kernel.is_none(),
        ending,
        console: session.output().to_string(),
        elapsed: start.elapsed(),
        timeout,
        cpus_at_timeout,
    })
}

/// Runs the script's steps, then waits for QEMU to exit. `qmp` is QEMU's QMP socket
/// (connected to at the first `screendump`).
pub fn drive(session: &mut Session, steps: &[Step], qmp: Option<&std::path::Path>) -> Ending {
    let mut conn: Option<crate::qmp::Qmp> = None;
    // The VM the partition's shell gave the console to (`attach`).
    let mut attached: Option<&str> = None;
    for step in steps {
        match &step.action {
            Action::Expect(re) => match session.expect(re) {
                Ok(()) => {}
                Err(WaitError::TimedOut) => {
                    return Ending::TimedOut {
                        waiting_for: Some(step.to_string()),
                    }
                }
                Err(WaitError::Exited(code)) => {
                    return Ending::StepUnmet {
                        step: step.to_string(),
                        code,
                    }
                }
            },
            Action::Send(text) => {
                if let Err(e) = session.send(text) {
                    return Ending::SendFailed {
                        step: step.to_string(),
                        error: e.to_string(),
                    };
                }
            }
            Action::Sleep(d) => {
                if session.sleep(*d).is_err() {
                    return Ending::TimedOut {
                        waiting_for: Some(step.to_string()),
                    };
                }
            }
            Action::Monitor(command) => {
                if let Err(e) = monitor_step(session, step, command) {
                    return e;
                }
            }
            Action::Shell(command) => {
                if let Err(e) = shell_step(session, step, command, attached) {
                    return e;
                }
            }
            Action::Attach(name) => {
                if let Err(e) = attach_step(session, step, name) {
                    return e;
                }
                attached = Some(name);
            }
            Action::Screendump(_) | Action::Qmp { .. } => {
                if conn.is_none() {
                    if let Some(socket) = qmp {
                        match crate::qmp::Qmp::connect(socket) {
                            Ok(q) => conn = Some(q),
                            Err(error) => {
                                return Ending::SendFailed {
                                    step: step.to_string(),
                                    error,
                                }
                            }
                        }
                    }
                }
                let done = match (&mut conn, &step.action) {
                    (Some(q), Action::Screendump(file)) => q.screendump(file),
                    (Some(q), Action::Qmp { command, arguments }) => {
                        q.execute(command, arguments).map(|_| ())
                    }
                    _ => Err("no QMP socket".into()),
                };
                if let Err(error) = done {
                    return Ending::SendFailed {
                        step: step.to_string(),
                        error,
                    };
                }
            }
        }
    }
    if steps.is_empty() {
        match session.wait_exit(session.deadline()) {
            Some(code) => Ending::Exited(code),
            None => Ending::TimedOut { waiting_for: None },
        }
    } else {
        match session.wait_exit(Instant::now() + SCRIPT_EXIT_GRACE) {
            Some(code) => Ending::Exited(code),
            None => Ending::ScriptDone,
        }
    }
}

/// A monitor status line on the console: the status (`ok: …` / `error: …`) in
/// group 1, the whole line matched.
pub fn monitor_status_regex() -> regex::Regex {
    let prefix = regex::escape(monitor::LINE_PREFIX);
    regex::Regex::new(&format!(r"(?m)^{prefix} ((?:ok|error): [^\r\n]*)\r?\n"))
        .expect("the monitor status pattern is valid")
}

/// One `monitor COMMAND` step: `Ctrl-]`, the command and a newline; waits for the
/// command's status line and prints it; `Ctrl-]` back to the guest. The way back
/// is not an error when QEMU is gone (after `host shutdown`).
fn monitor_step(session: &mut Session, step: &Step, command: &str) -> Result<(), Ending> {
    let escape = char::from(monitor::ESCAPE);
    if let Err(e) = session.send(&format!("{escape}{command}\n")) {
        return Err(Ending::SendFailed {
            step: step.to_string(),
            error: e.to_string(),
        });
    }
    match session.expect_capture(&monitor_status_regex()) {
        Ok(status) => println!("xtask: monitor `{command}`: {status}"),
        Err(WaitError::TimedOut) => {
            return Err(Ending::TimedOut {
                waiting_for: Some(step.to_string()),
            })
        }
        Err(WaitError::Exited(code)) => {
            return Err(Ending::StepUnmet {
                step: step.to_string(),
                code,
            })
        }
    }
    let _ = session.send(&escape.to_string());
    Ok(())
}

/// A status line of the authority partition's shell (`ok: …` / `error: …`,
/// after its prompt when the line is typed ahead of it), the status in group 1.
pub fn shell_status_regex() -> regex::Regex {
    regex::Regex::new(r"(?m)^(?:rayos> )*((?:ok|error): [^\r\n]*)\r?\n")
        .expect("the shell status pattern is valid")
}

/// Types `line` and waits for `want`; the captured status is printed as
/// `xtask: shell `LINE`: STATUS`. `gone_ok`: QEMU exiting 0 instead is the
/// answer (`host shutdown` powers the host off without a status line).
fn shell_line(
    session: &mut Session,
    step: &Step,
    line: &str,
    want: &regex::Regex,
    gone_ok: bool,
) -> Result<(), Ending> {
    if let Err(e) = session.send(&format!("{line}\n")) {
        return Err(Ending::SendFailed {
            step: step.to_string(),
            error: e.to_string(),
        });
    }
    match session.expect_capture(want) {
        Ok(status) => {
            println!("xtask: shell `{line}`: {status}");
            Ok(())
        }
        Err(WaitError::Exited(Some(0))) if gone_ok => Ok(()),
        Err(WaitError::TimedOut) => Err(Ending::TimedOut {
            waiting_for: Some(step.to_string()),
        }),
        Err(WaitError::Exited(code)) => Err(Ending::StepUnmet {
            step: step.to_string(),
            code,
        }),
    }
}

/// One `attach NAME` step beside the partition: the shell's `attach`, waiting
/// for its `ok: attached …` line.
fn attach_step(session: &mut Session, step: &Step, name: &str) -> Result<(), Ending> {
    let ok = regex::Regex::new(&format!(
        r"(?m)^(?:rayos> )*(ok: attached to vm {}'s console[^\r\n]*)\r?\n",
        regex::escape(name)
    ))
    .expect("the attach pattern is valid");
    shell_line(session, step, &format!("attach {name}"), &ok, false)
}

/// One `monitor COMMAND` step beside the partition: leaves an attached console
/// (`Ctrl-]`, its `[detached …]` line), types COMMAND at the prompt, waits for
/// its status line, and attaches the console again.
fn shell_step(
    session: &mut Session,
    step: &Step,
    command: &str,
    attached: Option<&str>,
) -> Result<(), Ending> {
    if let Some(name) = attached {
        let detached = regex::Regex::new(&format!(r"\[detached from vm {}\]", regex::escape(name)))
            .expect("the detach pattern is valid");
        let escape = char::from(monitor::ESCAPE).to_string();
        if let Err(e) = session.send(&escape) {
            return Err(Ending::SendFailed {
                step: step.to_string(),
                error: e.to_string(),
            });
        }
        match session.expect(&detached) {
            Ok(()) => {}
            Err(WaitError::TimedOut) => {
                return Err(Ending::TimedOut {
                    waiting_for: Some(step.to_string()),
                })
            }
            Err(WaitError::Exited(code)) => {
                return Err(Ending::StepUnmet {
                    step: step.to_string(),
                    code,
                })
            }
        }
    }
    let host_off = command.split_whitespace().eq(["host", "shutdown"]);
    shell_line(session, step, command, &shell_status_regex(), host_off)?;
    match attached {
        Some(name) if !host_off => attach_step(session, step, name),
        _ => Ok(()),
    }
}

/// `cargo xtask run`: interactive on a terminal, captured otherwise.
pub fn run_cli(layout: &Layout, o: &RunOptions) -> Result<(), Error> {
    if !is_captured(o) {
        let prepared = prepare(layout, o)?;
        if o.verbose {
            eprintln!("xtask: {}", prepared.display());
        }
        eprintln!(
            "xtask: booting {} ({} vCPU, {} MiB, {} {}); quit with Ctrl-A X, hypervisor monitor with Ctrl-]",
            prepared.vm.guest,
            prepared.vm.vcpus,
            prepared.vm.mem >> 20,
            if prepared.system_disk.is_some() {
                "system disk"
            } else {
                "bundle"
            },
            prepared.bundle.display()
        );
        let code = run_interactive(prepared.command())
            .map_err(|e| Error::step("start QEMU", e.to_string()))?;
        return match code {
            Some(0) => Ok(()),
            other => Err(Error::RunFailed {
                reason: describe_exit(other),
                exit_code: failure_code(other),
            }),
        };
    }
    let outcome = run_captured(layout, o)?;
    match outcome.verdict() {
        Ok(()) => {
            eprintln!(
                "xtask: {} run passed in {:.1} s",
                outcome.guest.name(),
                outcome.elapsed.as_secs_f64()
            );
            Ok(())
        }
        Err(reason) => {
            eprintln!(
                "\n--- last {CONSOLE_TAIL_LINES} console lines ---\n{}\n---",
                outcome.console_tail(CONSOLE_TAIL_LINES)
            );
            if let Some(cpus) = &outcome.cpus_at_timeout {
                eprintln!("{cpus}\n---");
            }
            Err(Error::RunFailed {
                reason: format!("run failed: {reason}"),
                exit_code: failure_code(outcome.exit_code()),
            })
        }
    }
}

/// xtask's exit code for a failed run: QEMU's own non-zero code, else 1.
fn failure_code(code: Option<i32>) -> u8 {
    code.and_then(|c| u8::try_from(c).ok())
        .filter(|c| *c != 0)
        .unwrap_or(1)
}

/// Appends `--guest-cmd`'s `rayos.cmd=<base64>` to `cmdline`, or refuses (with
/// the longest command that would fit) when the kernel would cut the line.
fn append_guest_cmd(cmdline: &mut String, cmd: &str) -> Result<(), Error> {
    if !cmdline.is_empty() {
        cmdline.push(' ');
    }
    let arg = linux_guest::guest_cmd_arg(cmd);
    let room = linux_guest::CMDLINE_MAX.saturating_sub(cmdline.len());
    if arg.len() > room {
        // `rayos.cmd=` then base64: 4 bytes for every 3 of the command.
        let most = room.saturating_sub(linux_guest::guest_cmd_arg("").len()) / 4 * 3;
        return Err(Error::Usage(format!(
            "--guest-cmd is {} bytes; with the rest of the kernel command line it may be at most {most} \
             (the command line holds {} bytes and the command travels base64-encoded): \
             put a longer script on a disk",
            cmd.len(),
            linux_guest::CMDLINE_MAX
        )));
    }
    cmdline.push_str(&arg);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beside_the_partition_monitor_lines_go_to_its_shell_and_attach_is_refused_without_it() {
        let steps = script::parse("expect x\nattach linux\nmonitor vm list\nsend y\n").unwrap();
        let shell = for_console(steps.clone(), true).unwrap();
        assert!(matches!(&shell[1].action, Action::Attach(n) if n == "linux"));
        assert!(matches!(&shell[2].action, Action::Shell(c) if c == "vm list"));
        assert!(matches!(&shell[3].action, Action::Send(t) if t == "y\n"));
        let e = for_console(steps, false).expect_err("refused");
        assert!(e.contains("line 2") && e.contains("--no-authority"), "{e}");
        let plain = for_console(script::parse("monitor vm list\n").unwrap(), false).unwrap();
        assert!(matches!(&plain[0].action, Action::Monitor(c) if c == "vm list"));
        // Before anything runs: `prepare` refuses the script itself.
        let dir = std::env::temp_dir().join(format!("xtask-attach-script-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.script");
        std::fs::write(&path, "expect $ \nattach linux\n").unwrap();
        let o = parse_args(&[
            "--no-authority".into(),
            "--script".into(),
            path.to_string_lossy().into_owned(),
        ])
        .unwrap();
        let layout = Layout::with_dirs(dir.clone(), dir.join("target"));
        let e = prepare(&layout, &o).expect_err("refused").to_string();
        assert!(e.contains("line 2") && e.contains("attach"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_shell_status_pattern_takes_the_status_after_a_prompt() {
        let re = shell_status_regex();
        let c = re
            .captures("rayos> vm list\r\nok: 1 vm: linux\r\n")
            .unwrap();
        assert_eq!(&c[1], "ok: 1 vm: linux");
        let c = re.captures("rayos> error: vm nope: unknown\n").unwrap();
        assert_eq!(&c[1], "error: vm nope: unknown");
        assert!(re.captures("echo ok: inside a line\n").is_none());
    }

    #[test]
    fn a_guest_cmd_run_beside_the_partition_ends_by_asking_its_shell_for_host_shutdown() {
        let mut o = parse_args(&["--guest-cmd".into(), "true".into()]).unwrap();
        let text = |v: &[Step]| v.iter().map(Step::to_string).collect::<Vec<_>>();
        let steps = with_guest_cmd_end(Vec::new(), &o).unwrap();
        let added = text(&steps);
        assert_eq!(added.len(), 3, "{added:?}");
        assert!(added[1].contains("`send host shutdown (added: the end of a --guest-cmd run)`"));
        let Action::Expect(first) = &steps[0].action else {
            panic!("{:?}", steps[0])
        };
        assert!(first.is_match("[el2 INFO ] no VM left to run; the host stays up for the authority partition (its `host shutdown` powers it off)"));
        let Action::Expect(last) = &steps[2].action else {
            panic!("{:?}", steps[2])
        };
        assert!(last.is_match("[el2 INFO ] host shutdown (authority partition): powering off"));
        // A script decides its run's end itself.
        let user = script::parse("# wait\nexpect ready\n\nsend x\n").unwrap();
        assert_eq!(
            text(&with_guest_cmd_end(user.clone(), &o).unwrap()),
            text(&user)
        );
        o.authority = false;
        assert_eq!(
            text(&with_guest_cmd_end(user.clone(), &o).unwrap()),
            text(&user)
        );
        o.authority = true;
        o.guest_cmd = None;
        assert_eq!(
            text(&with_guest_cmd_end(user.clone(), &o).unwrap()),
            text(&user)
        );
    }

    #[test]
    fn a_guest_cmd_the_kernel_would_cut_is_refused_with_the_longest_that_fits() {
        let base = "console=ttyAMA0 earlycon=pl011,0x09000000";
        let fits = |n: usize| {
            let mut line = base.to_string();
            super::append_guest_cmd(&mut line, &"x".repeat(n)).map(|()| line)
        };
        let Err(Error::Usage(msg)) = fits(4000) else {
            panic!("a 4000-byte command was accepted")
        };
        let most: usize = msg
            .split("at most ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no limit in {msg:?}"));
        let line = fits(most).expect("the longest command named fits");
        assert!(line.len() <= linux_guest::CMDLINE_MAX, "{}", line.len());
        assert!(fits(most + 1).is_err());
    }

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    /// Every QEMU command line xtask builds: each guest (from a boot bundle, or
    /// from the system disk when it uses one) under each accelerator, and the
    /// bare-QEMU baselines of `bench boot` and `bench disk`.
    fn every_qemu_line() -> Vec<(String, QemuLine)> {
        let mut lines = Vec::new();
        for guest in Guest::ALL {
            for (accel, icount) in [(Accel::Tcg, false), (Accel::Tcg, true), (Accel::Kvm, false)] {
                let o = RunOptions {
                    accel,
                    icount,
                    ..RunOptions::headless(guest, DEFAULT_TIMEOUT)
                };
                let vm = VmDef {
                    name: guest.name().into(),
                    vcpus: guest.default_vcpus(),
                    mem: guest.default_mem(),
                    cmdline: String::new(),
                    guest: guest.name().into(),
                    kernel: "/t/kernel".into(),
                    initrd: None,
                    disk: None,
                    nvme: None,
                    virtio_pci: None,
                    usb: false,
                    usb_storage: None,
                    fault: None,
                    pmu_el2_counting: guest == Guest::BenchExits,
                    firmware: None,
                };
                let system_disk = uses_system_disk(&o).then(|| SystemDiskRun {
                    path: "/t/system-disk.img".into(),
                    disk_uuid: Default::default(),
                    vm_uuid: Default::default(),
                    created: false,
                    changes: Vec::new(),
                    generation: 1,
                    starts: 0,
                    saved_state: None,
                    discarded_saved_state: false,
                });
                let prepared = Prepared {
                    qemu: QemuConfig {
                        smp: vm.vcpus,
                        guest_mem: vm.mem,
                        kernel: "/t/rayos-el2.bin".into(),
                        initrd: "/t/bundle.cpio".into(),
                        accel,
                        icount,
                        extra_args: Vec::new(),
                        display: crate::qemu::DEFAULT_DISPLAY,
                        gui: false,
                        qmp: None,
                        efi: None,
                    },
                    vm,
                    bundle: "/t/bundle.cpio".into(),
                    script: Vec::new(),
                    system_disk,
                };
                lines.push((
                    format!("{} {accel:?} icount={icount}", guest.name()),
                    prepared.line(),
                ));
            }
        }
        let bare = crate::qemu::BareLinuxConfig {
            smp: 2,
            mem: 512 << 20,
            kernel: "/c/Image".into(),
            initrd: "/c/initramfs".into(),
            append: LINUX_CMDLINE.into(),
        };
        lines.push(("bench boot bare".into(), bare.line()));
        lines.push((
            "bench disk bare".into(),
            crate::bench_disk::bare_line(&bare, std::path::Path::new("/t/bare.img")),
        ));
        lines
    }

    #[test]
    fn every_qemu_line_starts_from_nodefaults_without_a_network() {
        let lines = every_qemu_line();
        assert_eq!(lines.len(), Guest::ALL.len() * 3 + 2);
        for (what, line) in &lines {
            assert_eq!(
                crate::qemu::default_devices(line),
                None,
                "{what}: {}",
                line.display()
            );
        }
        // Linux boots from the system disk; the check refuses a line with no
        // explicit UART or with a network.
        assert!(lines.iter().any(
            |(w, l)| w.starts_with("linux") && l.args().iter().any(|a| a.starts_with("file="))
        ));
        let (_, line) = &lines[0];
        let no_serial = line
            .clone()
            .map_args(|a| if a == "-serial" { "-S".into() } else { a });
        assert!(crate::qemu::default_devices(&no_serial).is_some());
        let mut net = line.clone();
        net.push(["-nic", "user"]);
        assert!(crate::qemu::default_devices(&net).unwrap().contains("-nic"));
    }

    #[test]
    fn run_arguments_parse() {
        let o = parse_args(&args("--guest selftest --smp 2 --mem=128M --headless --timeout 20 --icount --qemu-arg -d --qemu-arg=int")).unwrap();
        assert_eq!(o.guest, Guest::Selftest);
        assert_eq!(o.smp, Some(2));
        assert_eq!(o.host_cpus, None);
        let shared = parse_args(&args("--smp 4 --host-cpus 2")).unwrap();
        assert_eq!((shared.smp, shared.host_cpus), (Some(4), Some(2)));
        assert!(parse_args(&args("--host-cpus 0")).is_err());
        assert!(parse_args(&args("--host-cpus 9")).is_err());
        assert_eq!(o.mem, Some(128 << 20));
        assert!(o.headless && o.icount && !o.verbose);
        assert_eq!(o.timeout, Some(Duration::from_secs(20)));
        assert_eq!(o.qemu_args, ["-d", "int"]);
        let c = parse_args(&args("--cpu cortex-a72")).unwrap();
        assert_eq!(c.qemu_args, ["-cpu", "cortex-a72"]);
        let d = parse_args(&[]).unwrap();
        assert_eq!(d.guest, Guest::Linux);
        // The authority partition is the Linux guest's default configuration.
        assert!(d.authority);
        assert!(!parse_args(&args("--no-authority")).unwrap().authority);
        assert!(!parse_args(&args("--guest selftest")).unwrap().authority);
        assert!(
            parse_args(&args("--guest selftest --authority"))
                .unwrap()
                .authority
        );
        assert!(parse_args(&args("--authority --no-authority")).is_err());
        let cmd = parse_args(&["--guest-cmd".into(), "true".into()]).unwrap();
        assert!(
            cmd.authority,
            "a one-shot command run has the partition too"
        );
        assert_eq!(d.accel, Accel::Tcg);
        let cmd = parse_args(&[
            "--guest-cmd".into(),
            "cat /proc/cpuinfo".into(),
            "--accel".into(),
            "kvm".into(),
        ])
        .unwrap();
        assert_eq!(cmd.guest_cmd.as_deref(), Some("cat /proc/cpuinfo"));
        assert_eq!(cmd.accel, Accel::Kvm);
    }

    #[test]
    fn profile_arguments_parse() {
        let o = parse_args(&args(
            "--profile uefi-acpi --firmware-shell --smp 2 --timeout 60",
        ))
        .unwrap();
        assert_eq!(
            (o.profile, o.firmware_shell, o.smp),
            (Profile::UefiAcpi, true, Some(2))
        );
        assert!(uses_system_disk(&o));
        let b = parse_args(&args("--profile uefi-acpi --firmware-shell --firmware /f")).unwrap();
        assert_eq!(b.firmware, Some(PathBuf::from("/f")));
        assert!(!uses_system_disk(&b));
        assert!(
            parse_args(&args("--profile uefi-acpi --firmware-shell --fresh"))
                .unwrap()
                .fresh
        );
        assert_eq!(parse_args(&[]).unwrap().profile, Profile::LinuxDt);
        // Without --firmware-shell the VM boots Linux from its boot disk.
        let sb = parse_args(&[
            "--profile".into(),
            "uefi-acpi".into(),
            "--secure-boot".into(),
            "--guest-cmd".into(),
            "uname -a".into(),
        ])
        .unwrap();
        assert!(sb.secure_boot && !sb.firmware_shell && uses_system_disk(&sb));
        assert_eq!(sb.guest_cmd.as_deref(), Some("uname -a"));
        // The Windows-shaped VM: a firmware VM, always from a system disk.
        let w = parse_args(&args("--profile windows --guest-cmd true --headless")).unwrap();
        assert_eq!(w.profile, Profile::Windows);
        assert!(w.profile.boots_firmware() && uses_system_disk(&w));
        assert_eq!(
            Profile::of_model(registry::DeviceModel::Windows),
            Profile::Windows
        );
        assert_eq!(Profile::Windows.name(), "windows");
        assert_eq!(w.disk_bus, DiskBus::Nvme);
        assert_eq!(hypervisor_options(&w, None), "");
        let v = parse_args(&args("--profile windows --disk-bus virtio-pci")).unwrap();
        assert_eq!(v.disk_bus, DiskBus::VirtioPci);
        assert_eq!(hypervisor_options(&v, None), "");
        let m = parse_args(&args("--profile windows --install-media w.iso")).unwrap();
        assert_eq!(m.install_media, Some(PathBuf::from("w.iso")));
        let m = parse_args(&args("--profile windows --vm w --install-media w.iso")).unwrap();
        assert_eq!(m.install_media, Some(PathBuf::from("w.iso")));
        assert!(parse_args(&args("--install-media w.iso")).is_err());
        assert!(parse_args(&args("--profile uefi-acpi --install-media w.iso")).is_err());
        let v = parse_args(&args("--profile windows --disk-bus virtio-pci --msi its")).unwrap();
        assert_eq!(v.disk_bus, DiskBus::VirtioPci);
        assert_eq!(record_msi(v.msi), registry::MsiController::Its);
        for bad in [
            // A named VM runs as its record says (`disk add-vm --disk-bus/--msi`).
            "--profile windows --vm w --disk-bus virtio-pci",
            "--profile windows --vm w --msi its",
            "--profile uefi-acpi --firmware /f",
            "--profile uefi-acpi --firmware-shell --guest-cmd true",
            "--profile uefi-acpi --firmware-shell --firmware /f --secure-boot",
            "--secure-boot",
            "--boot-disk /d",
            "--profile uefi-acpi --firmware-shell --boot-disk /d",
            "--profile uefi-acpi --boot-disk /d --guest-cmd true",
            "--profile uefi-acpi --firmware-shell --guest selftest",
            "--profile uefi-acpi --firmware-shell --kernel /k",
            "--profile uefi-acpi --firmware-shell --firmware /f --fresh",
            "--firmware-shell",
            "--profile windowsx",
            "--profile windows --firmware-shell --firmware /f",
            "--profile windows --kernel /k",
            "--profile windows --nvme 64M",
            "--profile windows --firmware-shell --guest-cmd true",
            "--disk-bus virtio-pci",
            "--profile uefi-acpi --disk-bus virtio-pci",
            "--profile windows --disk-bus scsi",
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn msi_its_puts_the_option_on_a_bundle_runs_command_line() {
        let o = parse_args(&args("--nvme 64M --msi its --guest-cmd true")).unwrap();
        assert_eq!(o.msi, Some(boards::devices::Msi::Its));
        let v = parse_args(&args("--virtio-pci 8M --msi v2m")).unwrap();
        assert_eq!(v.msi, Some(boards::devices::Msi::V2m));
        let sys = parse_args(&args("--nvme system --msi its")).unwrap();
        assert_eq!(sys.msi, Some(boards::devices::Msi::Its));
        for bad in [
            "--msi its",
            "--nvme 64M --msi lpi",
            "--msi v2m --guest selftest",
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn nvme_runs_boot_a_bundle_of_the_linux_guest() {
        let o = parse_args(&args("--nvme 64M --guest-cmd true")).unwrap();
        assert_eq!(o.nvme, Some(NvmeDisk::Ram(64 << 20)));
        assert!(!uses_system_disk(&o), "the RAM disk travels in the bundle");
        let sys = parse_args(&args("--nvme system --guest-cmd true")).unwrap();
        assert_eq!(sys.nvme, Some(NvmeDisk::System));
        assert!(
            uses_system_disk(&sys),
            "the system disk's extent is the namespace"
        );
        for bad in [
            "--nvme 0",
            "--nvme 1000",
            "--nvme 64M --guest selftest",
            "--nvme 64M --profile uefi-acpi",
            "--nvme system --kernel /t/Image",
            "--nvme system --vm linux",
            "--nvme sys",
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn virtio_pci_runs_boot_a_bundle_of_the_linux_guest() {
        let o = parse_args(&args("--virtio-pci 16M --guest-cmd true")).unwrap();
        assert_eq!(o.virtio_pci, Some(16 << 20));
        assert!(!uses_system_disk(&o), "the RAM disk travels in the bundle");
        for bad in [
            "--virtio-pci 0",
            "--virtio-pci 1000",
            "--virtio-pci 16M --guest selftest",
            "--virtio-pci 16M --profile uefi-acpi",
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn usb_runs_boot_a_bundle_of_the_linux_guest() {
        let o = parse_args(&args("--usb --guest-cmd true")).unwrap();
        assert!(o.usb && o.usb_storage.is_none());
        assert!(!uses_system_disk(&o), "the controller is a bundle's");
        let o = parse_args(&args("--usb-storage /t/x.iso --nvme 8M")).unwrap();
        assert!(o.usb, "--usb-storage implies --usb");
        assert_eq!(
            o.usb_storage.as_deref(),
            Some(std::path::Path::new("/t/x.iso"))
        );
        for bad in [
            "--usb --guest selftest",
            "--usb --profile uefi-acpi",
            "--usb-storage /t/x.iso --nvme system",
            "--usb --vm linux",
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn vm_names_a_system_disk_vm_run_as_its_record_defines_it() {
        let o = parse_args(&args(
            "--vm win --profile uefi-acpi --system-disk /s.img --cold",
        ))
        .unwrap();
        assert_eq!(o.vm.as_deref(), Some("win"));
        assert!(o.cold && uses_system_disk(&o));
        assert_eq!(
            parse_args(&args("--vm l")).unwrap().vm.as_deref(),
            Some("l")
        );
        for bad in [
            "--vm w --smp 2",
            "--vm w --mem 1G",
            "--vm w --fresh",
            "--vm w --guest-cmd true",
            "--vm w --kernel /k",
            "--vm w --profile uefi-acpi --secure-boot",
            "--vm w --profile uefi-acpi --firmware-shell",
            "--vm w --profile uefi-acpi --boot-disk /d",
            "--vm w --boot efi",
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn system_disk_arguments_parse_and_apply_to_linux_only() {
        let o = parse_args(&args("--system-disk /tmp/s.img --fresh --smp 4")).unwrap();
        assert_eq!(o.system_disk, Some(PathBuf::from("/tmp/s.img")));
        assert!(o.fresh && !o.cold && uses_system_disk(&o));
        assert!(parse_args(&args("--cold")).unwrap().cold);
        assert!(uses_system_disk(&parse_args(&[]).unwrap()));
        assert!(!uses_system_disk(
            &parse_args(&args("--kernel /k")).unwrap()
        ));
        assert!(!uses_system_disk(
            &parse_args(&args("--guest selftest")).unwrap()
        ));
        for bad in [
            "--guest selftest --fresh",
            "--guest selftest --cold",
            "--kernel /k --cold",
            "--guest bench-exits --system-disk /tmp/s.img",
            "--kernel /k --fresh",
            "--fresh=yes",
            "--system-disk",
        ] {
            assert!(
                matches!(parse_args(&args(bad)), Err(Error::Usage(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn bad_run_arguments_are_usage_errors() {
        for bad in [
            "--guest windows",
            "--smp 0",
            "--smp 65",
            "--mem 12",
            "--mem lots",
            "--timeout -1",
            "--timeout",
            "--frobnicate",
            "--accel hvf",
            "--guest selftest --guest-cmd ls",
            "--headless=yes",
        ] {
            assert!(
                matches!(parse_args(&args(bad)), Err(Error::Usage(_))),
                "{bad}"
            );
        }
        let e = parse_args(&args("--guest windows"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("linux, selftest, bench-exits"), "{e}");
    }

    #[test]
    fn guest_defaults_match_the_contract() {
        assert_eq!(
            (Guest::Linux.default_vcpus(), Guest::Linux.default_mem()),
            (2, 512 << 20)
        );
        assert_eq!(
            (
                Guest::Selftest.default_vcpus(),
                Guest::Selftest.default_mem()
            ),
            (1, 64 << 20)
        );
        assert_eq!(
            (
                Guest::BenchExits.default_vcpus(),
                Guest::BenchExits.default_mem()
            ),
            (1, 64 << 20)
        );
    }

    fn outcome(guest: Guest, ending: Ending, console: &str) -> RunOutcome {
        RunOutcome {
            guest,
            guest_cmd: false,
            builtin_kernel: true,
            ending,
            console: console.into(),
            elapsed: Duration::from_secs(1),
            timeout: Duration::from_secs(120),
            cpus_at_timeout: None,
        }
    }

    #[test]
    fn selftest_verdict_needs_exit_zero_and_a_clean_summary() {
        let good = "PASS hvc-roundtrip\nselftest: 1 passed, 0 failed\n";
        assert_eq!(
            outcome(Guest::Selftest, Ending::Exited(Some(0)), good).verdict(),
            Ok(())
        );
        assert!(outcome(Guest::Selftest, Ending::Exited(Some(70)), good)
            .verdict()
            .unwrap_err()
            .contains("fatal"));
        assert!(
            outcome(Guest::Selftest, Ending::Exited(Some(0)), "PASS a\n")
                .verdict()
                .is_err()
        );
        let failed = "PASS a\nFAIL b: no\nselftest: 1 passed, 0 failed\n";
        assert!(outcome(Guest::Selftest, Ending::Exited(Some(0)), failed)
            .verdict()
            .unwrap_err()
            .contains("FAIL b"));
        let timed = outcome(
            Guest::Selftest,
            Ending::TimedOut { waiting_for: None },
            good,
        )
        .verdict()
        .unwrap_err();
        assert!(timed.contains("timed out after 120 s"), "{timed}");
        // Another guest only needs exit 0.
        assert_eq!(
            outcome(Guest::BenchExits, Ending::Exited(Some(0)), "").verdict(),
            Ok(())
        );
    }

    #[test]
    fn linux_guest_command_status_counts() {
        let mut o = outcome(
            Guest::Linux,
            Ending::Exited(Some(0)),
            "rayos-guest: init\nrayos-guest: cmd exit 0\n",
        );
        o.guest_cmd = true;
        assert_eq!(o.verdict(), Ok(()));
        o.console = "rayos-guest: cmd exit 2\n".into();
        assert!(o.verdict().unwrap_err().contains("status 2"));
        o.console = "Kernel panic\n".into();
        assert!(o.verdict().unwrap_err().contains("no exit status"));
    }

    #[test]
    fn script_endings_name_the_step() {
        let step = "line 3: `expect login:`".to_string();
        let o = outcome(
            Guest::Linux,
            Ending::TimedOut {
                waiting_for: Some(step.clone()),
            },
            "",
        );
        assert!(o.verdict().unwrap_err().contains("line 3: `expect login:`"));
        let o = outcome(
            Guest::Linux,
            Ending::StepUnmet {
                step,
                code: Some(70),
            },
            "",
        );
        let why = o.verdict().unwrap_err();
        assert!(why.contains("fatal") && why.contains("line 3"), "{why}");
        assert_eq!(o.exit_code(), Some(70));
        assert_eq!(
            outcome(Guest::Linux, Ending::ScriptDone, "").verdict(),
            Ok(())
        );
    }

    #[test]
    fn failure_codes_pass_qemus_status_through() {
        assert_eq!(failure_code(Some(70)), 70);
        assert_eq!(failure_code(Some(0)), 1);
        assert_eq!(failure_code(None), 1);
        assert_eq!(failure_code(Some(300)), 1);
    }

    #[test]
    fn drive_runs_a_script_against_a_console_program() {
        let steps = script::parse("expect name\\?\nsend ray\nexpect hi ray\n").unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "echo 'name?'; read n; echo \"hi $n\"; exit 0"]);
        let mut s = Session::spawn(cmd, false, Duration::from_secs(10)).unwrap();
        assert_eq!(drive(&mut s, &steps, None), Ending::Exited(Some(0)));

        let steps = script::parse("expect never\n").unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "echo something; exit 4"]);
        let mut s = Session::spawn(cmd, false, Duration::from_secs(10)).unwrap();
        assert_eq!(
            drive(&mut s, &steps, None),
            Ending::StepUnmet {
                step: "line 1: `expect never`".into(),
                code: Some(4)
            }
        );
    }

    /// A stand-in for the hypervisor's monitor: reads the escape and a command
    /// line, answers with a status line (after a line that only looks like one),
    /// then shows the next byte it gets (the escape back) in hex.
    const FAKE_MONITOR: &str = r#"IFS= read -r l
printf '%s' "$l" | od -An -tx1 | head -c 4
printf '\n[el2 WARN ] ok: not a status\r\n[el2 monitor] ok: ran %s\r\n' "$(printf '%s' "$l" | tr -d '\035')"
dd bs=1 count=1 2>/dev/null | od -An -tx1
exit 0"#;

    #[test]
    fn a_monitor_step_escapes_waits_for_the_status_and_escapes_back() {
        let steps = script::parse("monitor vm list\nexpect 1d\n").unwrap();
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", FAKE_MONITOR]);
        let mut s = Session::spawn(cmd, false, Duration::from_secs(10)).unwrap();
        assert_eq!(drive(&mut s, &steps, None), Ending::Exited(Some(0)));
        let out = s.output();
        assert!(
            out.starts_with(" 1d"),
            "the command came after Ctrl-]: {out:?}"
        );
        assert!(out.contains("[el2 monitor] ok: ran vm list\r\n"), "{out:?}");

        // No status line: the step is named when the program exits.
        let mut cmd = std::process::Command::new("sh");
        cmd.args(["-c", "read l; echo '[el2 monitor] ok: cut short'; exit 3"]);
        let steps = script::parse("monitor help\n").unwrap();
        let mut s = Session::spawn(cmd, false, Duration::from_secs(10)).unwrap();
        let ending = drive(&mut s, &steps, None);
        assert!(
            matches!(
                &ending,
                Ending::Exited(Some(3)) | Ending::StepUnmet { code: Some(3), .. }
            ),
            "{ending:?}"
        );
    }

    #[test]
    fn the_status_pattern_takes_whole_status_lines_only() {
        let re = monitor_status_regex();
        let cap = |t: &str| re.captures(t).map(|c| c[1].to_string());
        assert_eq!(
            cap("x\r\n[el2 monitor] error: no VM named 'a'\r\n").as_deref(),
            Some("error: no VM named 'a'")
        );
        assert_eq!(
            cap("[el2 monitor] ok: half a li"),
            None,
            "not until the line ends"
        );
        assert_eq!(cap("|[el2 monitor] ok: forged by a guest\r\n"), None);
        assert_eq!(cap("[el2 monitor] entered; type help\r\n"), None);
    }
}
