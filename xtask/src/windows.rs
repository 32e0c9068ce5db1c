//! `cargo xtask disk add-vm --device-model windows --name NAME
//! [--install-media PATH.iso] [--disk-size 64G] [--mem 4G] [--vcpus 2]
//! [--tpm-nv 256K] [--disk PATH] [--force]`: defines a VM of the `windows`
//! device model on a system disk (created, sparse, when `--disk` names no
//! file; default [`DEFAULT_FILE_NAME`] under `target/`).
//!
//! The VM gets:
//! - Debian's AAVMF (`qemu-efi-aarch64`) as its firmware code, and as its
//!   variable store `AAVMF_VARS.ms.fd`: Secure Boot on, Debian's PK, and
//!   Microsoft's KEK CA 2011, Windows Production PCA 2011 (which signs Windows'
//!   boot manager) and UEFI CA 2011 in `db` — checked before it is used;
//! - disk 0: an empty system disk of `--disk-size` (the NVMe namespace; never
//!   written here, so it takes no host space until the guest writes it);
//! - disk 1, with `--install-media`: the ISO copied byte for byte, read-only
//!   (USB storage: the install media; [`set_install_media`], which `cargo xtask
//!   run --profile windows --install-media` uses too);
//! - a TPM NV extent (the CRB TPM 2.0);
//! - [`DEFAULT_VCPUS`] vCPUs and [`DEFAULT_MEMORY`] of RAM.
//!
//! Below Windows 11's minimums (4 GiB RAM, 64 GiB disk, 2 cores, a TPM) it
//! refuses unless `--force`; `check-windows-ready` then reports what is short.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use registry::cli::{format_size, parse_size, FileDisk};
use registry::defs::BLOCK_SIZE;
use registry::{BootSource, BootSpec, DeviceModel, ExtentRole, Policy, Registry, VmSpec};

use crate::error::Error;
use crate::winready::{self, MediaKind};
use crate::Layout;

/// File name of the default system disk of `windows` VMs, under `target/`.
pub const DEFAULT_FILE_NAME: &str = "system-disk-windows.img";
/// Default vCPUs: Windows 11's minimum of 2 cores, which is also what the
/// project's CI hosts have (one physical CPU per vCPU under QEMU).
pub const DEFAULT_VCPUS: u32 = 2;
/// Default RAM: Windows 11's minimum.
pub const DEFAULT_MEMORY: u64 = winready::MIN_MEMORY;
/// Default system disk: Windows 11's minimum.
pub const DEFAULT_DISK_SIZE: u64 = winready::MIN_SYSTEM_DISK;
/// Default TPM NV extent.
pub const DEFAULT_TPM_NV: u64 = registry::cli::DEFAULT_TPM_NV_SIZE;
/// Room a new system disk gets beyond what the VM needs (registry metadata,
/// later boot-image updates, snapshots' images).
pub const NEW_DISK_HEADROOM: u64 = 1 << 30;
/// Copy chunk for the install media.
const COPY_CHUNK: usize = 4 << 20;

/// Usage of the `windows` form of `disk add-vm`.
pub const USAGE: &str = "cargo xtask disk add-vm --device-model windows --name NAME [--install-media PATH.iso] \
[--disk-size SIZE (64G)] [--mem SIZE (4G)] [--vcpus N (2)] [--tpm-nv SIZE (256K)] [--msi v2m|its (v2m)] [--disk-bus nvme|virtio-pci (nvme)] \
[--disk PATH (target/system-disk-windows.img)] [--force]";

/// The default system disk of `windows` VMs.
pub fn default_path(layout: &Layout) -> PathBuf {
    layout.out.join(DEFAULT_FILE_NAME)
}

/// Whether `disk` arguments (after `disk`) are the `windows` form of `add-vm`.
pub fn is_windows_add_vm(args: &[String]) -> bool {
    args.first().is_some_and(|a| a == "add-vm")
        && args
            .windows(2)
            .any(|w| w[0] == "--device-model" && w[1] == "windows")
}

/// The `windows` VM to define.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowsVm {
    pub name: String,
    pub install_media: Option<PathBuf>,
    pub disk_size: u64,
    pub memory: u64,
    pub vcpus: u32,
    pub tpm_nv: u64,
    pub system_disk: PathBuf,
    pub force: bool,
    /// Where the root complex's MSIs go (the record's MSI controller).
    pub msi: registry::MsiController,
    /// The system disk's bus (the record's disk bus).
    pub disk_bus: registry::DiskBus,
}

fn usage(msg: impl std::fmt::Display) -> Error {
    Error::Usage(format!("{msg}\n{USAGE}"))
}

/// Parses the words after `add-vm`.
pub fn parse(layout: &Layout, args: &[String]) -> Result<WindowsVm, Error> {
    let mut vm = WindowsVm {
        name: String::new(),
        install_media: None,
        disk_size: DEFAULT_DISK_SIZE,
        memory: DEFAULT_MEMORY,
        vcpus: DEFAULT_VCPUS,
        tpm_nv: DEFAULT_TPM_NV,
        system_disk: default_path(layout),
        force: false,
        msi: registry::MsiController::default(),
        disk_bus: registry::DiskBus::default(),
    };
    let mut name = None;
    let mut it = args.iter();
    let mut positional = Vec::new();
    while let Some(a) = it.next() {
        let Some(opt) = a.strip_prefix("--") else {
            positional.push(a);
            continue;
        };
        if opt == "help" {
            return Err(Error::Usage(USAGE.into()));
        }
        if opt == "force" {
            vm.force = true;
            continue;
        }
        let v = it
            .next()
            .ok_or_else(|| usage(format!("--{opt} needs a value")))?;
        let size = |v: &str| parse_size(v).map_err(|e| usage(format!("--{opt}: {e}")));
        match opt {
            "device-model" if v == "windows" => {}
            "name" => name = Some(v.clone()),
            "install-media" => vm.install_media = Some(PathBuf::from(v)),
            "disk-size" => vm.disk_size = size(v)?,
            "mem" => vm.memory = size(v)?,
            "tpm-nv" => vm.tpm_nv = size(v)?,
            "vcpus" => {
                vm.vcpus = v
                    .parse()
                    .map_err(|_| usage(format!("--vcpus: `{v}` is not a number")))?
            }
            "disk" => vm.system_disk = PathBuf::from(v),
            "msi" => {
                vm.msi = registry::MsiController::parse(v)
                    .ok_or_else(|| usage(format!("--msi takes v2m or its, not `{v}`")))?
            }
            "disk-bus" => {
                vm.disk_bus = registry::DiskBus::parse(v).ok_or_else(|| {
                    usage(format!("--disk-bus takes nvme or virtio-pci, not `{v}`"))
                })?
            }
            _ => return Err(usage(format!("unknown option --{opt}"))),
        }
    }
    match positional.as_slice() {
        [] => {}
        [p] => vm.system_disk = PathBuf::from(p),
        more => return Err(usage(format!("unexpected arguments {more:?}"))),
    }
    vm.name = name.ok_or_else(|| usage("--name is required"))?;
    Ok(vm)
}

/// What falls short of Windows 11's minimums, one phrase each.
pub fn below_minimums(vm: &WindowsVm) -> Vec<String> {
    let mut out = Vec::new();
    if vm.memory < winready::MIN_MEMORY {
        out.push(format!("--mem {} is below 4 GiB", format_size(vm.memory)));
    }
    if vm.disk_size < winready::MIN_SYSTEM_DISK {
        out.push(format!(
            "--disk-size {} is below 64 GiB",
            format_size(vm.disk_size)
        ));
    }
    if vm.vcpus < winready::MIN_CORES {
        out.push(format!("--vcpus {} is below 2", vm.vcpus));
    }
    if vm.tpm_nv == 0 {
        out.push("--tpm-nv 0 leaves the VM without a TPM".into());
    }
    out
}

/// Checks the install media: readable, and an ISO 9660 or UDF image.
/// Returns its length and kind.
pub fn check_media(path: &Path) -> Result<(u64, MediaKind), String> {
    let mut f = File::open(path).map_err(|e| format!("install media {}: {e}", path.display()))?;
    let len = f
        .metadata()
        .map_err(|e| format!("install media {}: {e}", path.display()))?
        .len();
    let mut head = Vec::with_capacity(winready::MEDIA_HEAD);
    (&mut f)
        .take(winready::MEDIA_HEAD as u64)
        .read_to_end(&mut head)
        .map_err(|e| format!("install media {}: {e}", path.display()))?;
    let kind = winready::media_kind(&head).ok_or_else(|| {
        format!(
            "install media {} is not an ISO 9660 or UDF image (no CD001 or BEA01+NSR02/NSR03 volume descriptor at 32 KiB)",
            path.display()
        )
    })?;
    Ok((len, kind))
}

/// The firmware a `windows` VM boots: code and the Microsoft-keys variable
/// bank (trimmed as the VM's record keeps it), checked to carry Secure Boot
/// with the Windows Production PCA 2011 in `db`.
pub struct WindowsFirmware {
    pub code: Vec<u8>,
    pub vars: Vec<u8>,
    pub package: String,
}

/// Loads Debian's AAVMF (fetched into `target/firmware-cache` when missing).
pub fn firmware(layout: &Layout) -> Result<WindowsFirmware, Error> {
    let step = |e: String| Error::step("add-vm", e);
    let fw =
        crate::firmware::ensure_aavmf(&layout.firmware_cache(), &layout.guest_cache().join("apt"))
            .map_err(|e| Error::step("firmware", e))?;
    let read = |p: &Path| std::fs::read(p).map_err(|e| step(format!("{}: {e}", p.display())));
    let code = crate::bundle::trim_zeros(&read(&fw.code)?).to_vec();
    let vars = crate::sysdisk::vars_head(&read(&fw.vars_ms)?).to_vec();
    let checks = winready::secure_boot_checks(
        Some(&vars),
        true,
        winready::WINDOWS_PCA_2011_CN,
        &winready::WINDOWS_PCA_2011_SHA1,
    );
    if let Some(c) = checks.iter().find(|c| !c.met) {
        return Err(step(format!(
            "{}: {}: {} {}",
            fw.vars_ms.display(),
            c.name,
            c.status,
            c.found
        )));
    }
    Ok(WindowsFirmware {
        code,
        vars,
        package: fw.package,
    })
}

/// `n` bytes in GiB with one decimal (`2.0 GiB`).
fn gib(n: u64) -> String {
    format!("{:.1} GiB", n as f64 / f64::from(1u32 << 30))
}

fn round_up(n: u64, to: u64) -> u64 {
    n.div_ceil(to).saturating_mul(to)
}

/// Defines the VM; returns what the command prints.
pub fn add_vm(layout: &Layout, vm: &WindowsVm) -> Result<String, Error> {
    let step = |e: String| Error::step("add-vm", e);
    let short = below_minimums(vm);
    if !short.is_empty() && !vm.force {
        return Err(step(format!(
            "{}: below Windows 11's minimums (--force defines it anyway; check-windows-ready then reports it)",
            short.join("; ")
        )));
    }
    let media = vm
        .install_media
        .as_deref()
        .map(|p| check_media(p).map(|(len, kind)| (p, len, kind)))
        .transpose()
        .map_err(step)?;
    let fw = firmware(layout)?;
    let vars_capacity = crate::sysdisk::UEFI_VARS_EXTENT;
    let code_capacity = fw.code.len() as u64 + crate::sysdisk::IMAGE_HEADROOM;
    let media_size = media
        .map(|(_, len, _)| round_up(len.max(1), BLOCK_SIZE))
        .unwrap_or(0);
    let needed: u64 = [
        vm.disk_size,
        media_size,
        code_capacity,
        vars_capacity,
        vm.tpm_nv,
    ]
    .iter()
    .map(|&n| round_up(n, registry::defs::ALLOC_UNIT))
    .sum();

    let mut out = String::new();
    if !vm.system_disk.exists() {
        let size = round_up(needed + NEW_DISK_HEADROOM, 1 << 30);
        crate::sysdisk::create_image_of(&vm.system_disk, size)?;
        out.push_str(&format!(
            "created system disk {} ({}, a sparse file)\n",
            vm.system_disk.display(),
            format_size(size)
        ));
    }
    let path = &vm.system_disk;
    let mut disk =
        FileDisk::open(path, false).map_err(|e| step(format!("{}: {e}", path.display())))?;
    let mut reg =
        Registry::open(&mut disk).map_err(|e| step(format!("{}: {e}", path.display())))?;
    if reg.vm_by_name(&vm.name).is_some() {
        return Err(step(format!(
            "{} already has a VM named '{}' (remove it with `cargo xtask disk remove-vm {} {}`)",
            path.display(),
            vm.name,
            path.display(),
            vm.name
        )));
    }
    let free = reg.free_bytes();
    let largest = reg.free_extents().iter().map(|e| e.len).max().unwrap_or(0);
    if free < needed || largest < round_up(vm.disk_size, registry::defs::ALLOC_UNIT) {
        let size = round_up(needed + NEW_DISK_HEADROOM, 1 << 30);
        return Err(step(format!(
            "system disk {} has {} free (largest run {}), the VM needs {}: a system disk cannot grow; create a larger one with `cargo xtask disk create NEW.img --size {}` (sparse) and pass --disk NEW.img",
            path.display(),
            gib(free),
            gib(largest),
            gib(needed),
            format_size(size)
        )));
    }
    let uuid = crate::sysdisk::random_uuid()?;
    // The VM is committed first without its large system disk, so a failure
    // while its images are written rolls back without zeroing that extent.
    let spec = VmSpec {
        name: vm.name.clone(),
        vcpus: vm.vcpus,
        memory_bytes: vm.memory,
        device_model: DeviceModel::Windows,
        boot: BootSpec::Firmware {
            code_capacity,
            vars_capacity,
        },
        disks: Vec::new(),
        tpm_nv_size: vm.tpm_nv,
        policy: Policy::default(),
    };
    reg.add_vm(&mut disk, uuid, &spec)
        .map_err(|e| step(format!("{}: {e}", path.display())))?;
    if let Err(e) = fill(
        &mut reg,
        &mut disk,
        uuid,
        &fw,
        media.map(|m| m.0),
        vm.disk_size,
    )
    .and_then(|()| registry::cli::set_pci_options(&mut disk, &mut reg, uuid, vm.msi, vm.disk_bus))
    {
        let undo = reg
            .remove_vm(&mut disk, uuid)
            .err()
            .map(|u| format!(" (and removing the half-made VM failed: {u})"))
            .unwrap_or_default();
        return Err(step(format!("{}: {e}{undo}", path.display())));
    }
    let rec = reg.vm(uuid).ok_or_else(|| step("the VM vanished".into()))?;
    out.push_str(&format!(
        "added VM '{}' ({uuid}) to {}: device model windows, {} vCPUs, {} RAM\n",
        vm.name,
        path.display(),
        vm.vcpus,
        format_size(vm.memory)
    ));
    for (i, d) in rec.disks.iter().enumerate() {
        let what = match (i, media) {
            (0, _) => format!(
                "system disk ({}), empty; MSIs through the {}",
                match vm.disk_bus {
                    registry::DiskBus::Nvme => "NVMe",
                    registry::DiskBus::VirtioPci => "virtio-blk over virtio-PCI",
                },
                match vm.msi {
                    registry::MsiController::V2m => "GICv2m frame",
                    registry::MsiController::Its => "GICv3 ITS",
                }
            ),
            (_, Some((p, len, kind))) => format!(
                "install media (USB storage), read-only: {} ({len} bytes, {})",
                p.display(),
                kind.describe()
            ),
            _ => String::new(),
        };
        out.push_str(&format!(
            "  disk{i}     {:>6}  {what}\n",
            format_size(d.extent.len)
        ));
    }
    out.push_str(&format!(
        "  firmware  {} code; variable store AAVMF_VARS.ms.fd: Secure Boot on, db with Microsoft Windows Production PCA 2011\n",
        fw.package
    ));
    if rec.tpm_nv.is_empty() {
        out.push_str("  tpm       none\n");
    } else {
        out.push_str(&format!(
            "  tpm       CRB TPM 2.0, NV {}\n",
            format_size(rec.tpm_nv.len)
        ));
    }
    out.push_str(&format!(
        "check it: cargo xtask check-windows-ready --vm {} --disk {}\n",
        vm.name,
        path.display()
    ));
    Ok(out)
}

/// Stores the firmware images and the install media, then gives the VM its
/// system disk as disk 0.
fn fill(
    reg: &mut Registry,
    disk: &mut FileDisk,
    uuid: registry::Uuid,
    fw: &WindowsFirmware,
    media: Option<&Path>,
    disk_size: u64,
) -> Result<(), String> {
    reg.store_blob(disk, uuid, ExtentRole::FirmwareCode, &fw.code)
        .map_err(|e| format!("storing the firmware code: {e}"))?;
    let rec = reg.vm(uuid).ok_or("the VM vanished")?.clone();
    let BootSource::Firmware { vars, .. } = rec.boot else {
        return Err("the VM has no firmware".into());
    };
    registry::AbStore::new(vars)
        .ok_or("the variable-store extent is too small")?
        .store(disk, &fw.vars)
        .map_err(|e| format!("writing the variable store: {e}"))?;
    let extent = reg
        .allocate(disk_size, &[])
        .ok_or_else(|| format!("no room for a {} system disk", format_size(disk_size)))?;
    reg.update_vm(disk, uuid, |r| {
        r.disks.insert(
            0,
            registry::GuestDisk {
                extent,
                read_only: false,
            },
        )
    })
    .map_err(|e| format!("adding the system disk: {e}"))?;
    if let Some(path) = media {
        set_install_media(reg, disk, uuid, path)?;
    }
    vdev::BlockBackend::flush(disk).map_err(|e| format!("flush: {e:?}"))
}

/// Makes the file at `path` (checked: an ISO 9660 or UDF image) the install
/// media of VM `uuid`: copied byte for byte (zero-padded to whole blocks) into a
/// new extent that the record then gets, in one commit, as its read-only disk
/// in place of any read-only disk it had (the hypervisor serves a `windows`
/// VM's read-only disk as USB mass storage). Returns what it did, one line.
pub fn set_install_media(
    reg: &mut Registry,
    disk: &mut FileDisk,
    uuid: registry::Uuid,
    path: &Path,
) -> Result<String, String> {
    let (len, kind) = check_media(path)?;
    let size = round_up(len.max(1), BLOCK_SIZE);
    // Allocated beside the old media: the record points at the new copy only
    // once it is complete.
    let extent = reg.allocate(size, &[]).ok_or_else(|| {
        format!(
            "no room for the {} install media {} ({} free)",
            format_size(size),
            path.display(),
            gib(reg.free_bytes())
        )
    })?;
    copy_into(disk, extent, path)?;
    vdev::BlockBackend::flush(disk).map_err(|e| format!("flush: {e:?}"))?;
    reg.update_vm(disk, uuid, |r| {
        r.disks.retain(|d| !d.read_only);
        r.disks.push(registry::GuestDisk {
            extent,
            read_only: true,
        });
    })
    .map_err(|e| format!("adding the install media: {e}"))?;
    Ok(format!(
        "install media (USB storage), read-only: {} ({len} bytes, {})",
        path.display(),
        kind.describe()
    ))
}

/// [`set_install_media`] on the VM `name` of the system disk at `disk_path`
/// (`cargo xtask run --profile windows --install-media PATH`).
pub fn set_install_media_of(disk_path: &Path, name: &str, media: &Path) -> Result<String, Error> {
    let step = |e: String| Error::step("install media", format!("{}: {e}", disk_path.display()));
    let mut disk = FileDisk::open(disk_path, false).map_err(|e| step(e.to_string()))?;
    let mut reg = Registry::open(&mut disk).map_err(|e| step(e.to_string()))?;
    let vm = reg
        .vm_by_name(name)
        .ok_or_else(|| step(format!("no VM named '{name}'")))?;
    if vm.device_model != DeviceModel::Windows {
        return Err(step(format!(
            "VM '{name}' is a {} VM: install media is for windows VMs",
            vm.device_model.as_str()
        )));
    }
    let uuid = vm.uuid;
    set_install_media(&mut reg, &mut disk, uuid, media).map_err(step)
}

/// Copies the file at `path` into `extent` (zero-padded to whole blocks).
fn copy_into(disk: &mut FileDisk, extent: registry::Extent, path: &Path) -> Result<(), String> {
    let mut f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut done = 0u64;
    loop {
        let mut n = 0;
        while n < buf.len() {
            match f.read(&mut buf[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) => return Err(format!("{}: {e}", path.display())),
            }
        }
        if n == 0 {
            return Ok(());
        }
        let whole = n.next_multiple_of(BLOCK_SIZE as usize);
        buf[n..whole].fill(0);
        registry::write_extent(disk, extent, done, &buf[..whole])
            .map_err(|e| format!("copying {} into the system disk: {e}", path.display()))?;
        done += n as u64;
    }
}

/// `cargo xtask disk add-vm --device-model windows …`: prints what was defined.
pub fn add_vm_cli(layout: &Layout, args: &[String]) -> Result<(), Error> {
    let vm = parse(layout, args)?;
    print!("{}", add_vm(layout, &vm)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    fn layout() -> Layout {
        Layout::detect()
    }

    #[test]
    fn the_windows_form_is_recognised_and_its_defaults_are_windows_11_minimums() {
        assert!(is_windows_add_vm(&words(
            "add-vm --name w --device-model windows"
        )));
        assert!(!is_windows_add_vm(&words(
            "add-vm x.img --name w --device-model uefi-acpi"
        )));
        assert!(!is_windows_add_vm(&words("list --device-model windows")));
        let vm = parse(
            &layout(),
            &words("--device-model windows --name w --install-media a.iso"),
        )
        .unwrap();
        assert_eq!(
            (vm.memory, vm.disk_size, vm.vcpus, vm.tpm_nv),
            (4 << 30, 64 << 30, 2, 256 << 10)
        );
        assert_eq!(vm.install_media, Some(PathBuf::from("a.iso")));
        assert!(vm.system_disk.ends_with(DEFAULT_FILE_NAME));
        assert!(below_minimums(&vm).is_empty());
        let vm = parse(
            &layout(),
            &words("--name w --mem 2G --disk-size 32G --vcpus 1 --tpm-nv 0 --disk /x.img --force"),
        )
        .unwrap();
        assert!(vm.force);
        assert_eq!(vm.system_disk, PathBuf::from("/x.img"));
        assert_eq!(below_minimums(&vm).len(), 4);
        assert_eq!(
            (vm.msi, vm.disk_bus),
            (registry::MsiController::V2m, registry::DiskBus::Nvme)
        );
        let vm = parse(
            &layout(),
            &words("--name w --msi its --disk-bus virtio-pci"),
        )
        .unwrap();
        assert_eq!(
            (vm.msi, vm.disk_bus),
            (registry::MsiController::Its, registry::DiskBus::VirtioPci)
        );
    }

    #[test]
    fn bad_command_lines_are_usage_errors() {
        for bad in [
            "--install-media a.iso",
            "--name w --mem",
            "--name w --mem lots",
            "--name w --vcpus two",
            "--name w --device-model uefi-acpi",
            "--name w --colour blue",
            "--name w --msi lpi",
            "--name w --disk-bus scsi",
            "--name w a.img b.img",
        ] {
            assert!(
                matches!(parse(&layout(), &words(bad)), Err(Error::Usage(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn below_the_minimums_is_refused_without_force_before_anything_is_written() {
        let dir = std::env::temp_dir().join(format!("win-min-{}", std::process::id()));
        let mut vm = parse(&layout(), &words("--name w --mem 2G")).unwrap();
        vm.system_disk = dir.join("never.img");
        let e = add_vm(&layout(), &vm).unwrap_err().to_string();
        assert!(e.contains("--mem 2G is below 4 GiB"), "{e}");
        assert!(e.contains("--force"), "{e}");
        assert_eq!(e.lines().count(), 1);
        assert!(!vm.system_disk.exists());
    }

    #[test]
    fn install_media_is_copied_into_the_record_and_replaced_by_a_later_one() {
        let dir = std::env::temp_dir().join(format!("win-set-media-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let sys = dir.join("sys.img");
        crate::sysdisk::create_image_of(&sys, 64 << 20).unwrap();
        let iso = |name: &str, fill: u8, len: usize| {
            let mut b = vec![fill; len];
            b[(32 << 10) + 1..(32 << 10) + 6].copy_from_slice(b"CD001");
            let p = dir.join(name);
            std::fs::write(&p, &b).unwrap();
            (p, b)
        };
        let (a, a_bytes) = iso("a.iso", 0x11, 40_000);
        let (b, b_bytes) = iso("b.iso", 0x22, 70 << 10);
        {
            let mut disk = FileDisk::open(&sys, false).unwrap();
            let mut reg = Registry::open(&mut disk).unwrap();
            let spec = VmSpec {
                name: "w".into(),
                vcpus: 1,
                memory_bytes: 256 << 20,
                device_model: DeviceModel::Windows,
                boot: BootSpec::Firmware {
                    code_capacity: 1 << 20,
                    vars_capacity: crate::sysdisk::UEFI_VARS_EXTENT,
                },
                disks: vec![registry::DiskSpec {
                    size: 1 << 20,
                    read_only: false,
                }],
                tpm_nv_size: 0,
                policy: Policy::default(),
            };
            reg.add_vm(&mut disk, registry::Uuid::from_random_bytes([7; 16]), &spec)
                .unwrap();
        }
        let media = |sys: &Path| {
            let mut disk = FileDisk::open(sys, false).unwrap();
            let reg = Registry::open(&mut disk).unwrap();
            let rec = reg.vm_by_name("w").unwrap().clone();
            assert!(!rec.disks[0].read_only, "the system disk stays disk 0");
            let ro: Vec<_> = rec.disks.iter().filter(|d| d.read_only).collect();
            assert_eq!(ro.len(), 1, "{:?}", rec.disks);
            let mut buf = vec![0u8; ro[0].extent.len as usize];
            registry::read_extent(&mut disk, ro[0].extent, 0, &mut buf).unwrap();
            (rec.disks.len(), buf)
        };
        let line = set_install_media_of(&sys, "w", &a).unwrap();
        assert!(line.contains("a.iso (40000 bytes, ISO 9660"), "{line}");
        let (n, got) = media(&sys);
        assert_eq!(n, 2);
        assert!(got.len() >= 40_000 && (got.len() as u64).is_multiple_of(BLOCK_SIZE));
        assert_eq!(&got[..40_000], &a_bytes[..]);
        assert!(got[40_000..].iter().all(|&x| x == 0), "padding is zeros");
        // A second medium replaces the first; no third disk.
        set_install_media_of(&sys, "w", &b).unwrap();
        let (n, got) = media(&sys);
        assert_eq!(n, 2);
        assert_eq!(&got[..b_bytes.len()], &b_bytes[..]);
        // Not an ISO, no such VM: refused, the record unchanged.
        let junk = dir.join("junk.iso");
        std::fs::write(&junk, vec![0u8; 40_000]).unwrap();
        assert!(set_install_media_of(&sys, "w", &junk).is_err());
        assert!(set_install_media_of(&sys, "nobody", &a).is_err());
        assert_eq!(&media(&sys).1[..b_bytes.len()], &b_bytes[..]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn media_that_is_missing_or_not_optical_is_refused() {
        let dir = std::env::temp_dir().join(format!("win-media-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = check_media(&dir.join("absent.iso")).unwrap_err();
        assert!(
            e.starts_with("install media ") && e.contains("No such file"),
            "{e}"
        );
        let junk = dir.join("junk.iso");
        std::fs::write(&junk, vec![0x41u8; 70_000]).unwrap();
        let e = check_media(&junk).unwrap_err();
        assert!(e.contains("is not an ISO 9660 or UDF image"), "{e}");
        let mut iso = vec![0u8; 36 << 10];
        iso[(32 << 10) + 1..(32 << 10) + 6].copy_from_slice(b"CD001");
        let good = dir.join("good.iso");
        std::fs::write(&good, &iso).unwrap();
        assert_eq!(check_media(&good), Ok((36 << 10, MediaKind::Iso9660)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
