//! The host's side of the **system disk** for `cargo xtask run`: the image file the
//! hypervisor boots its VMs from (QEMU's first virtio-blk device). It is created on
//! first use with the default Linux VM, reused afterwards, and reconciled with each
//! run's settings before the boot — the host acting as the authority reconfigures
//! the *same* VM (vCPUs, memory, command line, boot images); its UUID never
//! changes. Everything goes through the `registry` crate (atomic commits only).
//!
//! Also: the QEMU arguments that attach the image, and a read-only summary of an
//! image's registry (tests and benches print it after a power cut).

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use registry::cli::FileDisk;
use registry::codec::crc32c;
use registry::{
    Blob, BootSource, BootSpec, DeviceModel, DiskBus, DiskSpec, ExtentRole, MsiController, Policy,
    Registry, Uuid, VmRecord, VmSpec,
};

use crate::error::Error;
use crate::qemu::{QemuConfig, QemuLine};
use crate::Layout;

/// File name of the default system disk, under the workspace's `target/`.
pub const DEFAULT_FILE_NAME: &str = "system-disk.img";
/// Size of a new system-disk image (a sparse file: only written blocks use space).
pub const DISK_SIZE: u64 = 1 << 30;
/// Name of the default VM.
pub const VM_NAME: &str = "linux";
/// Size of the default VM's guest disk (`/dev/vda`).
pub const GUEST_DISK_SIZE: u64 = 256 << 20;
/// TPM NV area reserved for the default VM.
pub const TPM_NV_SIZE: u64 = registry::cli::DEFAULT_TPM_NV_SIZE;
/// Boot-image extents get this much room beyond the first image, so a newer
/// kernel usually replaces the old one in place.
pub const IMAGE_HEADROOM: u64 = 16 << 20;
/// QEMU drive id of the system disk.
pub const DRIVE_ID: &str = "sys";

/// The default system disk: `target/system-disk.img`.
pub fn default_path(layout: &Layout) -> PathBuf {
    layout.out.join(DEFAULT_FILE_NAME)
}

/// What the run wants the VM to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredVm {
    pub name: String,
    pub vcpus: u32,
    /// Guest RAM in bytes (a multiple of 2 MiB).
    pub mem: u64,
    pub cmdline: String,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    /// Guest disk size when the VM is created (an existing disk is never resized).
    pub disk_size: u64,
    /// `linux-dt`, or `linux-dt-nvme` for the guest disk behind NVMe.
    pub device_model: DeviceModel,
    /// Where the root complex's MSIs go (`linux-dt-nvme`).
    pub msi: MsiController,
}

/// The system disk as prepared for a boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemDiskRun {
    pub path: PathBuf,
    pub disk_uuid: Uuid,
    pub vm_uuid: Uuid,
    /// The image (or the VM) was created by this run.
    pub created: bool,
    /// What this run changed in the VM's record, one phrase each (`vcpus 2 -> 4`).
    pub changes: Vec<String>,
    /// Registry generation after the changes.
    pub generation: u64,
    /// The VM's start counter before this boot (the hypervisor adds one).
    pub starts: u64,
    /// Size of the saved state the hypervisor will resume the VM from (it still
    /// checks it and cold boots if it is refused), or `None`.
    pub saved_state: Option<u64>,
    /// `--cold` discarded a saved state.
    pub discarded_saved_state: bool,
}

impl SystemDiskRun {
    /// One line for the run's output.
    pub fn describe(&self, name: &str) -> String {
        let what = if self.created {
            "created".to_string()
        } else if self.changes.is_empty() {
            "unchanged".to_string()
        } else {
            format!("updated: {}", self.changes.join(", "))
        };
        let resume = match (self.saved_state, self.discarded_saved_state) {
            (Some(size), _) => format!(
                "; resuming it from its saved state ({} KiB; --cold boots it cold instead)",
                size.div_ceil(1024)
            ),
            (None, true) => "; its saved state was discarded (--cold): cold boot".to_string(),
            (None, false) => String::new(),
        };
        format!(
            "system disk {} (disk {}): VM '{name}' {} {what}; registry generation {}, started {} time(s) before{resume}",
            self.path.display(),
            self.disk_uuid,
            self.vm_uuid,
            self.generation,
            self.starts
        )
    }
}

fn step(detail: impl Into<String>) -> Error {
    Error::step("system disk", detail)
}

pub(crate) fn random_uuid() -> Result<Uuid, Error> {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| Error::io("read /dev/urandom", e))?;
    Ok(Uuid::from_random_bytes(b))
}

/// A fresh vTPM manufacturer CA key: random bytes that make a valid P-256 scalar.
fn random_tpm_ca_key() -> Result<[u8; registry::defs::TPM_CA_KEY_SIZE], Error> {
    loop {
        let mut b = [0u8; registry::defs::TPM_CA_KEY_SIZE];
        File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut b))
            .map_err(|e| Error::io("read /dev/urandom", e))?;
        if vtpm::ek::ManufacturerCa::new(&b, &[0; 16]).is_ok() {
            return Ok(b);
        }
    }
}

/// `cargo xtask disk tpm-ca --system-disk PATH`: the system disk's vTPM
/// manufacturer CA certificate (PEM), the trust anchor of its VMs' EK
/// certificates. A disk without a CA key yet (made before slot version 3)
/// gains one here, committed to its registry.
pub fn tpm_ca_pem(path: &Path) -> Result<String, Error> {
    let mut disk = FileDisk::open(path, false)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut reg = Registry::open(&mut disk).map_err(|e| {
        step(format!(
            "{}: the registry does not open ({e})",
            path.display()
        ))
    })?;
    let key = match reg.tpm_ca_key() {
        Some(k) => *k,
        None => reg
            .ensure_tpm_ca_key(&mut disk, random_tpm_ca_key()?)
            .map_err(|e| step(format!("{}: {e}", path.display())))?,
    };
    let ca = vtpm::ek::ManufacturerCa::new(&key, &reg.disk_uuid().0).map_err(|e| {
        step(format!(
            "{}: the TPM CA key is unusable ({e:?})",
            path.display()
        ))
    })?;
    Ok(ca.certificate_pem())
}

/// `disk tpm-ca` arguments: `--system-disk PATH`.
pub fn tpm_ca_cli(args: &[String]) -> Result<(), Error> {
    match args {
        [flag, path] if flag == "--system-disk" => {
            print!("{}", tpm_ca_pem(Path::new(path))?);
            Ok(())
        }
        _ => Err(Error::Usage(
            "cargo xtask disk tpm-ca --system-disk PATH".into(),
        )),
    }
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(format!("read {what} {}", path.display()), e))
}

/// Room for a boot image of `len` bytes.
fn image_capacity(len: usize) -> u64 {
    (len as u64).saturating_add(IMAGE_HEADROOM)
}

/// Creates the image (formatted, empty) at `path` atomically: written under a
/// temporary name, then renamed, so an interrupted creation is never reused.
fn create_image(path: &Path) -> Result<(), Error> {
    create_image_of(path, DISK_SIZE)
}

/// [`create_image`] of `size` bytes (a sparse file).
pub fn create_image_of(path: &Path, size: u64) -> Result<(), Error> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    }
    let tmp = path.with_extension("img.tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut disk = FileDisk::create(&tmp, size)
        .map_err(|e| Error::io(format!("create {}", tmp.display()), e))?;
    let mut reg = Registry::format(&mut disk, random_uuid()?)
        .map_err(|e| step(format!("format {}: {e}", tmp.display())))?;
    reg.ensure_tpm_ca_key(&mut disk, random_tpm_ca_key()?)
        .map_err(|e| step(format!("format {}: {e}", tmp.display())))?;
    drop(disk);
    std::fs::rename(&tmp, path).map_err(|e| Error::io(format!("rename to {}", path.display()), e))
}

/// Opens (creating it if missing, or recreating it with `fresh`) the system disk at
/// `path`, makes sure it holds the VM `want.name` (created with autostart on), and
/// reconciles its record and boot images with `want`. A registry that does not
/// open is an error (never reformatted without `fresh`).
pub fn ensure(path: &Path, fresh: bool, want: &DesiredVm) -> Result<SystemDiskRun, Error> {
    ensure_with(path, fresh, false, want)
}

/// [`ensure`], and with `cold` the VM's saved state (if any) is discarded with a
/// registry commit, so the hypervisor boots it cold (`--cold`).
pub fn ensure_with(
    path: &Path,
    fresh: bool,
    cold: bool,
    want: &DesiredVm,
) -> Result<SystemDiskRun, Error> {
    if !want.mem.is_multiple_of(registry::defs::MEMORY_GRANULE) {
        return Err(Error::Usage(format!(
            "a system-disk VM's memory must be a multiple of 2M, not {} bytes",
            want.mem
        )));
    }
    let mut created = false;
    if fresh && path.exists() {
        std::fs::remove_file(path)
            .map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
    }
    if !path.exists() {
        create_image(path)?;
        created = true;
    }
    let mut disk = FileDisk::open(path, false)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut reg = Registry::open(&mut disk).map_err(|e| {
        step(format!(
            "{}: the registry does not open ({e}); it is left untouched — inspect it with `cargo xtask disk inspect {0}`, or recreate it with --fresh",
            path.display()
        ))
    })?;
    let kernel = read(&want.kernel, "kernel")?;
    let initrd = read(&want.initrd, "initrd")?;
    let commit = |e: registry::RegistryError| step(format!("{}: {e}", path.display()));

    let uuid = match reg.vm_by_name(&want.name) {
        Some(vm) => vm.uuid,
        None => {
            let spec = VmSpec {
                name: want.name.clone(),
                vcpus: want.vcpus,
                memory_bytes: want.mem,
                device_model: want.device_model,
                boot: BootSpec::Linux {
                    kernel_capacity: image_capacity(kernel.len()),
                    initrd_capacity: Some(image_capacity(initrd.len())),
                    cmdline: want.cmdline.clone(),
                },
                disks: vec![DiskSpec {
                    size: want.disk_size,
                    read_only: false,
                }],
                tpm_nv_size: TPM_NV_SIZE,
                policy: Policy {
                    autostart: true,
                    ..Policy::default()
                },
            };
            created = true;
            reg.add_vm(&mut disk, random_uuid()?, &spec)
                .map_err(commit)?
        }
    };
    let mut changes = Vec::new();
    let current = reg
        .vm(uuid)
        .cloned()
        .ok_or_else(|| step("the VM vanished"))?;
    let cfg = config_changes(&current, want);
    if !cfg.is_empty() {
        let (vcpus, mem, cmdline, autostart) = (want.vcpus, want.mem, want.cmdline.clone(), true);
        let (model, msi) = (want.device_model, want.msi);
        reg.update_vm(&mut disk, uuid, |r| {
            r.device_model = model;
            r.msi = msi;
            r.vcpus = vcpus;
            r.memory_bytes = mem;
            r.policy.autostart = autostart;
            if let BootSource::Linux { cmdline: c, .. } = &mut r.boot {
                *c = cmdline;
            }
        })
        .map_err(commit)?;
        changes.extend(cfg);
    }
    for (role, data) in [(ExtentRole::Kernel, &kernel), (ExtentRole::Initrd, &initrd)] {
        if let Some(change) = store_image(&mut reg, &mut disk, uuid, role, data).map_err(commit)? {
            changes.push(change);
        }
    }
    let mut discarded_saved_state = false;
    if cold && reg.vm(uuid).is_some_and(|v| v.saved_state.size != 0) {
        reg.update_vm(&mut disk, uuid, |r| {
            r.saved_state.size = 0;
            r.saved_state.crc32c = 0;
        })
        .map_err(commit)?;
        discarded_saved_state = true;
    }
    let vm = reg.vm(uuid).ok_or_else(|| step("the VM vanished"))?;
    let saved_state =
        (vm.saved_state.size != 0 && vm.policy.resume_on_boot).then_some(vm.saved_state.size);
    if let Some(first) = reg.vms().iter().find(|v| v.policy.autostart) {
        if first.uuid != uuid {
            eprintln!(
                "xtask: warning: {}: VM '{}' {} is autostart and comes first; the hypervisor boots it, not '{}'",
                path.display(),
                first.name,
                first.uuid,
                want.name
            );
        }
    }
    Ok(SystemDiskRun {
        path: path.to_path_buf(),
        disk_uuid: reg.disk_uuid(),
        vm_uuid: uuid,
        created,
        changes: if created { Vec::new() } else { changes },
        generation: reg.generation(),
        starts: vm.starts,
        saved_state,
        discarded_saved_state,
    })
}

/// File name of the `uefi-acpi` profile's system disk under `target/`.
pub const UEFI_FILE_NAME: &str = "system-disk-uefi.img";
/// Name of the `uefi-acpi` profile's VM.
pub const UEFI_VM_NAME: &str = "uefi";
/// The variable-store extent of a firmware VM: two copies (A/B) of a bank of
/// up to 2 MiB, with their headers.
pub const UEFI_VARS_EXTENT: u64 = 4 << 20;

/// The `uefi-acpi` profile's system disk.
pub fn uefi_default_path(layout: &Layout) -> PathBuf {
    layout.out.join(UEFI_FILE_NAME)
}

/// File name of the `windows` profile's system disk under `target/`.
pub const WINDOWS_FILE_NAME: &str = "system-disk-windows.img";
/// Name of the `windows` profile's VM.
pub const WINDOWS_VM_NAME: &str = "windows";

/// The `windows` profile's system disk.
pub fn windows_default_path(layout: &Layout) -> PathBuf {
    layout.out.join(WINDOWS_FILE_NAME)
}

/// What a firmware run wants its VM to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DesiredFirmwareVm {
    pub name: String,
    /// `uefi-acpi`, or `windows` (the same firmware; the boot disk is then the
    /// NVMe namespace behind PCI Express).
    pub device_model: DeviceModel,
    pub vcpus: u32,
    pub mem: u64,
    /// The code bank's image (its trailing zero bytes are not stored).
    pub code: PathBuf,
    /// The VM's boot disk (its virtio-blk 0), written with this image on each
    /// run; `None` leaves the VM without a disk, so the boot manager falls
    /// through to the UEFI shell.
    pub boot_disk: Option<PathBuf>,
    /// A variable-store image the VM's store starts from when it has never been
    /// written (`--secure-boot`: Debian's store with Microsoft's keys enrolled).
    pub initial_vars: Option<PathBuf>,
    /// Where the root complex's MSIs go (`windows`).
    pub msi: MsiController,
    /// The bus of the first disk (`windows`).
    pub disk_bus: DiskBus,
}

/// Granule of a variable-store image as the VM's record keeps it: the flash
/// bank's erase block (ArmVirtQemu's 256 KiB).
const VARS_BLOCK: usize = 256 << 10;

/// `image` (a firmware variable-store file such as Debian's 64 MiB
/// `AAVMF_VARS.ms.fd`) cut after its last block that holds data: the
/// hypervisor pads a stored image to its bank with erased bytes.
pub fn vars_head(image: &[u8]) -> &[u8] {
    let used = image
        .iter()
        .rposition(|&b| b != 0 && b != 0xff)
        .map_or(0, |i| i + 1);
    &image[..used.next_multiple_of(VARS_BLOCK).min(image.len())]
}

/// Makes the system disk at `path` hold the firmware VM `want` (created with an
/// empty variable store, autostart), with its code image replaced when it
/// changed and its vCPUs and memory set; the variable store is never touched
/// (it is the VM's, written by the hypervisor). `fresh` recreates the image.
pub fn ensure_firmware(
    path: &Path,
    fresh: bool,
    want: &DesiredFirmwareVm,
) -> Result<SystemDiskRun, Error> {
    if !want.mem.is_multiple_of(registry::defs::MEMORY_GRANULE) {
        return Err(Error::Usage(format!(
            "a system-disk VM's memory must be a multiple of 2M, not {} bytes",
            want.mem
        )));
    }
    let mut created = false;
    if fresh && path.exists() {
        std::fs::remove_file(path)
            .map_err(|e| Error::io(format!("remove {}", path.display()), e))?;
    }
    if !path.exists() {
        create_image(path)?;
        created = true;
    }
    let mut disk = FileDisk::open(path, false)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut reg = Registry::open(&mut disk).map_err(|e| {
        step(format!(
            "{}: the registry does not open ({e}); it is left untouched — recreate it with --fresh",
            path.display()
        ))
    })?;
    let image = read(&want.code, "firmware code")?;
    let code = crate::bundle::trim_zeros(&image);
    if code.is_empty() || image.len() > vmspec::FLASH_BANK_SIZE {
        return Err(step(format!(
            "the firmware {} must be 1 byte to 64 MiB, not all zero",
            want.code.display()
        )));
    }
    let commit = |e: registry::RegistryError| step(format!("{}: {e}", path.display()));
    let uuid = match reg.vm_by_name(&want.name) {
        Some(vm) => vm.uuid,
        None => {
            let spec = VmSpec {
                name: want.name.clone(),
                vcpus: want.vcpus,
                memory_bytes: want.mem,
                device_model: want.device_model,
                boot: BootSpec::Firmware {
                    code_capacity: image_capacity(code.len()),
                    vars_capacity: UEFI_VARS_EXTENT,
                },
                disks: Vec::new(),
                tpm_nv_size: TPM_NV_SIZE,
                policy: Policy {
                    autostart: true,
                    ..Policy::default()
                },
            };
            created = true;
            reg.add_vm(&mut disk, random_uuid()?, &spec)
                .map_err(commit)?
        }
    };
    let current = reg
        .vm(uuid)
        .cloned()
        .ok_or_else(|| step("the VM vanished"))?;
    if current.device_model != want.device_model {
        return Err(step(format!(
            "{}: VM '{}' is not a {} VM",
            path.display(),
            want.name,
            want.device_model.as_str()
        )));
    }
    let mut changes = Vec::new();
    let (vcpus, mem) = (want.vcpus, want.mem);
    let (msi, disk_bus) = (want.msi, want.disk_bus);
    if current.msi != msi || current.disk_bus != disk_bus {
        if current.msi != msi {
            changes.push(format!("msi {} -> {}", current.msi.as_str(), msi.as_str()));
        }
        if current.disk_bus != disk_bus {
            changes.push(format!(
                "disk bus {} -> {}",
                current.disk_bus.as_str(),
                disk_bus.as_str()
            ));
        }
        reg.update_vm(&mut disk, uuid, |r| {
            r.msi = msi;
            r.disk_bus = disk_bus;
        })
        .map_err(commit)?;
    }
    if current.vcpus != vcpus || current.memory_bytes != mem || !current.policy.autostart {
        if current.vcpus != vcpus {
            changes.push(format!("vcpus {} -> {vcpus}", current.vcpus));
        }
        if current.memory_bytes != mem {
            changes.push(format!(
                "memory {} MiB -> {} MiB",
                current.memory_bytes >> 20,
                mem >> 20
            ));
        }
        reg.update_vm(&mut disk, uuid, |r| {
            r.vcpus = vcpus;
            r.memory_bytes = mem;
            r.policy.autostart = true;
        })
        .map_err(commit)?;
    }
    if let Some(change) =
        store_image(&mut reg, &mut disk, uuid, ExtentRole::FirmwareCode, code).map_err(commit)?
    {
        changes.push(change);
    }
    if let Some(vars) = &want.initial_vars {
        let image = read(vars, "variable store")?;
        if let Some(change) = seed_vars(&mut reg, &mut disk, uuid, vars_head(&image))
            .map_err(|e| step(format!("{}: {e}", path.display())))?
        {
            changes.push(change);
        }
    }
    let image = match &want.boot_disk {
        Some(p) => Some(read(p, "boot disk")?),
        None => None,
    };
    let (change, boot_extent) = set_boot_disk(&mut reg, &mut disk, uuid, image.as_deref())
        .map_err(|e| step(format!("{}: {e}", path.display())))?;
    changes.extend(change);
    if let (Some(extent), Some(image)) = (boot_extent, &image) {
        write_at(path, extent.start, image)?;
    }
    let vm = reg.vm(uuid).ok_or_else(|| step("the VM vanished"))?;
    Ok(SystemDiskRun {
        path: path.to_path_buf(),
        disk_uuid: reg.disk_uuid(),
        vm_uuid: uuid,
        created,
        changes: if created { Vec::new() } else { changes },
        generation: reg.generation(),
        starts: vm.starts,
        saved_state: None,
        discarded_saved_state: false,
    })
}

/// The VM `name` of the system disk at `path` as it is (`cargo xtask run --vm
/// NAME`): nothing in its record is changed, except that `cold` discards its
/// saved state. An error names the VMs the disk has.
pub fn named_vm(path: &Path, name: &str, cold: bool) -> Result<(SystemDiskRun, VmRecord), Error> {
    let mut disk = FileDisk::open(path, false)
        .map_err(|e| Error::io(format!("open {}", path.display()), e))?;
    let mut reg = Registry::open(&mut disk).map_err(|e| {
        step(format!(
            "{}: the registry does not open ({e}); it is left untouched",
            path.display()
        ))
    })?;
    let Some(rec) = reg.vm_by_name(name).cloned() else {
        let names: Vec<&str> = reg.vms().iter().map(|v| v.name.as_str()).collect();
        return Err(step(format!(
            "{}: no VM named '{name}' (it has: {})",
            path.display(),
            names.join(", ")
        )));
    };
    let mut discarded = false;
    if cold && rec.saved_state.size != 0 {
        reg.update_vm(&mut disk, rec.uuid, |r| {
            r.saved_state.size = 0;
            r.saved_state.crc32c = 0;
        })
        .map_err(|e| step(format!("{}: {e}", path.display())))?;
        discarded = true;
    }
    let saved = reg
        .vm(rec.uuid)
        .filter(|v| v.policy.resume_on_boot)
        .map(|v| v.saved_state.size)
        .unwrap_or(0);
    Ok((
        SystemDiskRun {
            path: path.to_path_buf(),
            disk_uuid: reg.disk_uuid(),
            vm_uuid: rec.uuid,
            created: false,
            changes: Vec::new(),
            generation: reg.generation(),
            starts: rec.starts,
            saved_state: (saved != 0).then_some(saved),
            discarded_saved_state: discarded,
        },
        rec,
    ))
}

/// Writes `image` into the firmware VM's variable store when the store has
/// never been written (both copies blank); a store the firmware already
/// committed to is the VM's and is left alone.
fn seed_vars(
    reg: &mut Registry,
    disk: &mut FileDisk,
    uuid: Uuid,
    image: &[u8],
) -> Result<Option<String>, String> {
    let vm = reg.vm(uuid).ok_or("the VM vanished")?;
    let BootSource::Firmware { vars, .. } = vm.boot else {
        return Err("the VM has no firmware".into());
    };
    let store = registry::AbStore::new(vars).ok_or("the variable-store extent is too small")?;
    if store.load(disk).map_err(|e| e.to_string())?.is_some() {
        return Ok(None);
    }
    store.store(disk, image).map_err(|e| e.to_string())?;
    Ok(Some(format!(
        "variable store seeded ({} KiB)",
        image.len() >> 10
    )))
}

/// Gives the firmware VM exactly one disk holding `image` (virtio-blk 0), or
/// no disk when `None`. A disk of another size is replaced (its extent is
/// scrubbed when freed). Returns the change and the disk's extent, which the
/// caller writes the image to.
fn set_boot_disk(
    reg: &mut Registry,
    disk: &mut FileDisk,
    uuid: Uuid,
    image: Option<&[u8]>,
) -> Result<(Option<String>, Option<registry::Extent>), String> {
    let vm = reg.vm(uuid).ok_or("the VM vanished")?;
    let had = vm.disks.len();
    let Some(image) = image else {
        if had == 0 {
            return Ok((None, None));
        }
        reg.update_vm(disk, uuid, |r| r.disks.clear())
            .map_err(|e| e.to_string())?;
        return Ok((Some("boot disk removed".into()), None));
    };
    let size = image.len() as u64;
    if size == 0 || !size.is_multiple_of(512) {
        return Err(format!(
            "a boot disk must be a non-zero multiple of 512 bytes, not {size}"
        ));
    }
    let fits = vm.disks.len() == 1 && vm.disks[0].extent.len == size;
    let mut change = None;
    if !fits {
        if had != 0 {
            reg.update_vm(disk, uuid, |r| r.disks.clear())
                .map_err(|e| e.to_string())?;
        }
        let extent = reg
            .allocate(size, &[])
            .ok_or_else(|| format!("no room for a {} MiB boot disk", size >> 20))?;
        reg.update_vm(disk, uuid, |r| {
            r.disks = vec![registry::GuestDisk {
                extent,
                read_only: false,
            }]
        })
        .map_err(|e| e.to_string())?;
        change = Some(format!("boot disk of {} MiB attached", size >> 20));
    }
    let extent = reg.vm(uuid).ok_or("the VM vanished")?.disks[0].extent;
    Ok((change, Some(extent)))
}

/// Writes `data` at byte `offset` of the image file `path` and syncs it.
fn write_at(path: &Path, offset: u64, data: &[u8]) -> Result<(), Error> {
    use std::io::{Seek, SeekFrom, Write};
    let io =
        |e: std::io::Error| Error::io(format!("write the boot disk into {}", path.display()), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io)?;
    f.seek(SeekFrom::Start(offset)).map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_data().map_err(io)
}

/// What differs between the record and the wanted configuration, as phrases.
pub fn config_changes(r: &VmRecord, want: &DesiredVm) -> Vec<String> {
    let mut out = Vec::new();
    if r.vcpus != want.vcpus {
        out.push(format!("vcpus {} -> {}", r.vcpus, want.vcpus));
    }
    if r.memory_bytes != want.mem {
        out.push(format!(
            "memory {} MiB -> {} MiB",
            r.memory_bytes >> 20,
            want.mem >> 20
        ));
    }
    if let BootSource::Linux { cmdline, .. } = &r.boot {
        if *cmdline != want.cmdline {
            out.push(format!(
                "cmdline `{}` -> `{}`",
                abbreviate(cmdline),
                abbreviate(&want.cmdline)
            ));
        }
    }
    if !r.policy.autostart {
        out.push("autostart off -> on".into());
    }
    if r.device_model != want.device_model {
        out.push(format!(
            "device model {} -> {}",
            r.device_model.as_str(),
            want.device_model.as_str()
        ));
    }
    if r.msi != want.msi {
        out.push(format!("msi {} -> {}", r.msi.as_str(), want.msi.as_str()));
    }
    out
}

/// Longest command line shown whole in a change phrase.
const SHOWN_CMDLINE: usize = 96;

/// `s`, cut to [`SHOWN_CMDLINE`] characters with `…` when longer.
fn abbreviate(s: &str) -> String {
    match s.char_indices().nth(SHOWN_CMDLINE) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

/// Stores `data` as the VM's blob `role` unless the stored one has the same size
/// and CRC32C; a blob too small for it is moved to a new, larger extent first.
/// Returns what changed.
fn store_image(
    reg: &mut Registry,
    disk: &mut FileDisk,
    uuid: Uuid,
    role: ExtentRole,
    data: &[u8],
) -> Result<Option<String>, registry::RegistryError> {
    let vm = reg
        .vm(uuid)
        .ok_or(registry::RegistryError::NotFound(uuid))?;
    let Some(blob) = vm.blob(role).copied() else {
        return Err(registry::RegistryError::NoSuchBlob(role));
    };
    let (size, crc) = (data.len() as u64, crc32c(data));
    if blob.size == size && blob.crc32c == crc {
        return Ok(None);
    }
    if blob.extent.len < size {
        let extent =
            registry::space::allocate(reg.superblock(), reg.vms(), &[], image_capacity(data.len()))
                .ok_or(registry::RegistryError::NoSpace { needed: size })?;
        reg.update_vm(disk, uuid, |r| {
            if let Some(b) = r.blob_mut(role) {
                *b = Blob::empty_in(extent);
            }
        })?;
    }
    reg.store_blob(disk, uuid, role, data)?;
    Ok(Some(format!(
        "{role} replaced ({} bytes crc32c {:08x} -> {size} bytes crc32c {crc:08x})",
        blob.size, blob.crc32c
    )))
}

/// One VM as a summary line reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSummary {
    pub name: String,
    pub uuid: Uuid,
    pub starts: u64,
}

/// A registry as read (read-only) from an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrySummary {
    pub disk_uuid: Uuid,
    pub generation: u64,
    pub vms: Vec<VmSummary>,
}

/// Opens the image read-only and summarises its registry; the error is the
/// registry's reason (a corrupt registry refuses to open).
pub fn inspect(path: &Path) -> Result<RegistrySummary, String> {
    let mut disk = FileDisk::open(path, true).map_err(|e| format!("{}: {e}", path.display()))?;
    let reg = Registry::open(&mut disk).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(RegistrySummary {
        disk_uuid: reg.disk_uuid(),
        generation: reg.generation(),
        vms: reg
            .vms()
            .iter()
            .map(|v| VmSummary {
                name: v.name.clone(),
                uuid: v.uuid,
                starts: v.starts,
            })
            .collect(),
    })
}

/// QEMU arguments attaching `path` as the host's first virtio-blk device.
pub fn drive_args(path: &Path) -> Vec<String> {
    vec![
        "-drive".into(),
        format!(
            "file={},format=raw,if=none,id={DRIVE_ID}",
            path.display().to_string().replace(',', ",,")
        ),
        "-device".into(),
        format!("virtio-blk-device,drive={DRIVE_ID}"),
    ]
}

/// `qemu`'s command line for a system-disk boot: no boot bundle (`-initrd` would
/// take precedence over the system disk), the image attached instead.
pub fn qemu_line(qemu: &QemuConfig, path: &Path) -> QemuLine {
    let mut line = qemu.line_without_bundle();
    line.push(drive_args(path));
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn want(dir: &Path) -> DesiredVm {
        let kernel = dir.join("Image");
        let initrd = dir.join("initrd");
        std::fs::write(&kernel, vec![0x5a; 70_000]).unwrap();
        std::fs::write(&initrd, vec![0xa5; 5_000]).unwrap();
        DesiredVm {
            name: VM_NAME.into(),
            vcpus: 2,
            mem: 512 << 20,
            cmdline: "console=ttyAMA0".into(),
            kernel,
            initrd,
            disk_size: 1 << 20,
            device_model: DeviceModel::LinuxDt,
            msi: MsiController::V2m,
        }
    }

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xtask-sysdisk-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A firmware VM gets its boot disk with the image in its extent, a new
    /// store seeded from the initial image (and a written store left alone), and
    /// loses the disk on a run without one.
    #[test]
    fn a_firmware_vm_gets_its_boot_disk_and_a_seeded_store() {
        let dir = tmpdir("fw-boot-disk");
        let img = dir.join("sys.img");
        let code = dir.join("code.fd");
        std::fs::write(&code, [0x14u8; 4096]).unwrap();
        let boot = dir.join("boot.img");
        let boot_bytes: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&boot, &boot_bytes).unwrap();
        // A 64 MiB-style store file: data in its first block, zeros after.
        let vars = dir.join("vars.fd");
        let mut vars_bytes = vec![0u8; 2 << 20];
        vars_bytes[..300].fill(0x5a);
        std::fs::write(&vars, &vars_bytes).unwrap();
        let mut want = DesiredFirmwareVm {
            name: UEFI_VM_NAME.into(),
            device_model: DeviceModel::UefiAcpi,
            vcpus: 1,
            mem: 256 << 20,
            code,
            boot_disk: Some(boot.clone()),
            initial_vars: Some(vars.clone()),
            msi: MsiController::V2m,
            disk_bus: DiskBus::Nvme,
        };
        let check = |want_disk: Option<&[u8]>, want_vars: &[u8]| {
            let mut disk = FileDisk::open(&img, true).unwrap();
            let reg = Registry::open(&mut disk).unwrap();
            let vm = reg.vm_by_name(UEFI_VM_NAME).unwrap().clone();
            match want_disk {
                Some(bytes) => {
                    assert_eq!(vm.disks.len(), 1);
                    let e = vm.disks[0].extent;
                    assert_eq!(e.len, bytes.len() as u64);
                    let mut got = vec![0u8; bytes.len()];
                    std::fs::File::open(&img)
                        .and_then(|mut f| {
                            use std::io::Seek;
                            f.seek(std::io::SeekFrom::Start(e.start))?;
                            f.read_exact(&mut got)
                        })
                        .unwrap();
                    assert!(got == bytes, "the boot disk holds the image");
                }
                None => assert!(vm.disks.is_empty()),
            }
            let BootSource::Firmware { vars, .. } = vm.boot else {
                panic!("not a firmware VM")
            };
            let stored = registry::AbStore::new(vars)
                .unwrap()
                .load(&mut disk)
                .unwrap();
            assert_eq!(stored.as_deref(), Some(want_vars));
        };
        ensure_firmware(&img, true, &want).unwrap();
        check(Some(&boot_bytes), &vars_bytes[..VARS_BLOCK]);

        // The firmware wrote its store: a later seed leaves it alone. A boot
        // disk of another size replaces the first.
        {
            let mut disk = FileDisk::open(&img, false).unwrap();
            let reg = Registry::open(&mut disk).unwrap();
            let vm = reg.vm_by_name(UEFI_VM_NAME).unwrap();
            let BootSource::Firmware { vars, .. } = vm.boot else {
                panic!()
            };
            registry::AbStore::new(vars)
                .unwrap()
                .store(&mut disk, b"written by the firmware")
                .unwrap();
        }
        let smaller = &boot_bytes[..512 << 10];
        std::fs::write(&boot, smaller).unwrap();
        let run = ensure_firmware(&img, false, &want).unwrap();
        assert!(
            run.changes.iter().any(|c| c.contains("boot disk")),
            "{:?}",
            run.changes
        );
        check(Some(smaller), b"written by the firmware");

        // A shell run: no disk.
        want.boot_disk = None;
        ensure_firmware(&img, false, &want).unwrap();
        check(None, b"written by the firmware");

        // The same VM asked for as a windows VM is refused, not converted.
        want.device_model = DeviceModel::Windows;
        let e = ensure_firmware(&img, false, &want).unwrap_err().to_string();
        assert!(e.contains("is not a windows VM"), "{e}");
        // A new disk gets a windows VM whose boot disk is its first disk
        // (the NVMe namespace), writable.
        want.boot_disk = Some(boot.clone());
        ensure_firmware(&img, true, &want).unwrap();
        let mut disk = FileDisk::open(&img, true).unwrap();
        let reg = Registry::open(&mut disk).unwrap();
        let vm = reg.vm_by_name(UEFI_VM_NAME).unwrap();
        assert_eq!(vm.device_model, DeviceModel::Windows);
        assert_eq!(vm.disks.len(), 1);
        assert!(!vm.disks[0].read_only);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn vars_head_keeps_the_blocks_with_data() {
        let mut image = vec![0u8; 64 << 20];
        image[VARS_BLOCK * 2 + 7] = 0x42;
        assert_eq!(vars_head(&image).len(), VARS_BLOCK * 3);
        assert!(vars_head(&vec![0xffu8; 1 << 20]).is_empty());
        assert_eq!(vars_head(&[1u8; 100]).len(), 100);
    }

    #[test]
    fn created_once_then_reused_and_reconfigured_in_place() {
        let dir = tmpdir("reuse");
        let img = dir.join("sys.img");
        let mut w = want(&dir);
        let first = ensure(&img, false, &w).unwrap();
        assert!(first.created && first.changes.is_empty());
        let again = ensure(&img, false, &w).unwrap();
        assert!(!again.created && again.changes.is_empty(), "{again:?}");
        assert_eq!(
            (again.vm_uuid, again.disk_uuid, again.generation),
            (first.vm_uuid, first.disk_uuid, first.generation)
        );

        // New settings and a bigger kernel: same VM, record updated, blob moved.
        w.vcpus = 4;
        w.mem = 256 << 20;
        w.cmdline = "console=ttyAMA0 quiet".into();
        std::fs::write(&w.kernel, vec![0x11; 70_000 + IMAGE_HEADROOM as usize + 1]).unwrap();
        let changed = ensure(&img, false, &w).unwrap();
        assert_eq!(changed.vm_uuid, first.vm_uuid);
        assert!(changed.generation > first.generation);
        let joined = changed.changes.join("; ");
        for part in [
            "vcpus 2 -> 4",
            "memory 512 MiB -> 256 MiB",
            "quiet",
            "kernel replaced",
        ] {
            assert!(joined.contains(part), "{joined}");
        }
        assert!(!joined.contains("initrd"), "{joined}");
        assert_eq!(abbreviate("abc"), "abc");
        assert_eq!(
            abbreviate(&"x".repeat(200)).chars().count(),
            SHOWN_CMDLINE + 1
        );
        let mut disk = FileDisk::open(&img, true).unwrap();
        let reg = Registry::open(&mut disk).unwrap();
        let vm = reg.vm(first.vm_uuid).unwrap();
        assert_eq!((vm.vcpus, vm.memory_bytes), (4, 256 << 20));
        assert_eq!(
            reg.read_blob(&mut disk, vm.uuid, ExtentRole::Kernel)
                .unwrap(),
            std::fs::read(&w.kernel).unwrap()
        );
        assert_eq!(inspect(&img).unwrap().vms[0].uuid, first.vm_uuid);
        drop(disk);

        // --nvme system: the same VM (and disk extent) behind NVMe, and back.
        let disk0 = vm.disks[0].extent;
        w.device_model = DeviceModel::LinuxDtNvme;
        let nvme = ensure(&img, false, &w).unwrap();
        assert_eq!(nvme.vm_uuid, first.vm_uuid);
        assert_eq!(nvme.changes, ["device model linux-dt -> linux-dt-nvme"]);
        let mut disk = FileDisk::open(&img, true).unwrap();
        let reg = Registry::open(&mut disk).unwrap();
        let vm = reg.vm(first.vm_uuid).unwrap();
        assert_eq!(vm.device_model, DeviceModel::LinuxDtNvme);
        assert_eq!(vm.disks[0].extent, disk0);
        assert_eq!(vm.msi, MsiController::V2m);
        drop(disk);
        // --msi its: the record's MSI controller.
        w.msi = MsiController::Its;
        let its = ensure(&img, false, &w).unwrap();
        assert_eq!(its.changes, ["msi v2m -> its"]);
        let mut disk = FileDisk::open(&img, true).unwrap();
        let reg = Registry::open(&mut disk).unwrap();
        assert_eq!(reg.vm(first.vm_uuid).unwrap().msi, MsiController::Its);
        w.msi = MsiController::V2m;
        w.device_model = DeviceModel::LinuxDt;
        let back = ensure(&img, false, &w).unwrap();
        assert_eq!(
            back.changes,
            ["device model linux-dt-nvme -> linux-dt", "msi its -> v2m"]
        );

        // --fresh: a new disk and a new VM.
        let fresh = ensure(&img, true, &w).unwrap();
        assert!(fresh.created);
        assert_ne!(fresh.vm_uuid, first.vm_uuid);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_saved_state_is_announced_and_cold_discards_it() {
        let dir = tmpdir("cold");
        let img = dir.join("sys.img");
        let w = want(&dir);
        let first = ensure(&img, false, &w).unwrap();
        assert_eq!(first.saved_state, None);
        // What a suspend leaves: a saved-state extent with content committed.
        {
            let mut disk = FileDisk::open(&img, false).unwrap();
            let mut reg = Registry::open(&mut disk).unwrap();
            reg.reserve_saved_state(&mut disk, first.vm_uuid, 64 << 10)
                .unwrap();
            reg.store_blob(&mut disk, first.vm_uuid, ExtentRole::SavedState, &[7; 5000])
                .unwrap();
        }
        let again = ensure(&img, false, &w).unwrap();
        assert_eq!(again.saved_state, Some(5000));
        assert!(again
            .describe("linux")
            .contains("resuming it from its saved state"));
        let cold = ensure_with(&img, false, true, &w).unwrap();
        assert_eq!(cold.saved_state, None);
        assert!(cold.discarded_saved_state);
        assert!(cold.describe("linux").contains("discarded (--cold)"));
        let mut disk = FileDisk::open(&img, true).unwrap();
        let reg = Registry::open(&mut disk).unwrap();
        assert_eq!(reg.vm(first.vm_uuid).unwrap().saved_state.size, 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_corrupt_registry_is_an_error_not_reformatted() {
        let dir = tmpdir("corrupt");
        let img = dir.join("sys.img");
        let w = want(&dir);
        ensure(&img, false, &w).unwrap();
        let mut bytes = std::fs::read(&img).unwrap();
        bytes[..1024].fill(0xff);
        std::fs::write(&img, &bytes).unwrap();
        let e = ensure(&img, false, &w).unwrap_err().to_string();
        assert!(e.contains("--fresh"), "{e}");
        assert_eq!(std::fs::read(&img).unwrap()[..1024], bytes[..1024]);
        assert!(inspect(&img).is_err());
        let mut odd = w.clone();
        odd.mem = 3 << 20;
        assert!(matches!(ensure(&img, true, &odd), Err(Error::Usage(_))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn qemu_gets_the_drive_and_no_bundle() {
        let q = QemuConfig {
            smp: 2,
            guest_mem: 512 << 20,
            kernel: "/t/rayos-el2.bin".into(),
            initrd: "/t/bundles/linux.cpio".into(),
            accel: crate::qemu::Accel::Tcg,
            icount: false,
            extra_args: vec!["-d".into(), "guest_errors".into()],
            display: crate::qemu::DEFAULT_DISPLAY,
            gui: false,
            qmp: None,
            efi: None,
        };
        let a = qemu_line(&q, Path::new("/t/sys,1.img")).args().join(" ");
        assert!(!a.contains("-initrd") && !a.contains("linux.cpio"), "{a}");
        assert!(a.contains("-kernel /t/rayos-el2.bin"), "{a}");
        assert!(a.ends_with(
            "-d guest_errors -drive file=/t/sys,,1.img,format=raw,if=none,id=sys -device virtio-blk-device,drive=sys"
        ), "{a}");
    }
}

#[cfg(test)]
mod tpm_ca_tests {
    use super::*;
    use vtpm::ek::{pem, EkKind, ManufacturerCa};

    struct Counter(u8);
    impl vtpm::Entropy for Counter {
        fn fill(&mut self, buf: &mut [u8]) {
            for b in buf {
                self.0 = self.0.wrapping_add(1);
                *b = self.0;
            }
        }
    }
    struct Zero;
    impl vtpm::TimeSource for Zero {
        fn now_ms(&self) -> u64 {
            0
        }
    }

    /// The exported CA is stable, and it verifies (`openssl verify`) the EK
    /// certificates a TPM certified with the registry's CA key carries.
    #[test]
    fn tpm_ca_exports_the_trust_anchor_of_the_ek_certificates() {
        let dir = std::env::temp_dir().join(format!("xtask-tpm-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("system.img");
        create_image(&path).unwrap();
        let pem_a = tpm_ca_pem(&path).unwrap();
        assert_eq!(
            tpm_ca_pem(&path).unwrap(),
            pem_a,
            "the CA is per disk, stable"
        );
        // What the hypervisor does at manufacture, with the registry's key.
        let mut disk = FileDisk::open(&path, true).unwrap();
        let reg = Registry::open(&mut disk).unwrap();
        let ca = ManufacturerCa::new(reg.tpm_ca_key().unwrap(), &reg.disk_uuid().0).unwrap();
        assert_eq!(ca.certificate_pem(), pem_a);
        let mut tpm = vtpm::Tpm::new(
            Box::new(Counter(0)),
            Box::new(Zero),
            Box::new(vtpm::MemNvStore::default()),
        )
        .unwrap();
        assert_eq!(
            tpm.provision_ek_certificates(&ca).unwrap(),
            EkKind::ALL.len()
        );
        // Another disk has another CA.
        let other = dir.join("other.img");
        create_image(&other).unwrap();
        assert_ne!(tpm_ca_pem(&other).unwrap(), pem_a);
        let ca_pem = dir.join("ca.pem");
        std::fs::write(&ca_pem, &pem_a).unwrap();
        let other_pem = dir.join("other.pem");
        std::fs::write(&other_pem, tpm_ca_pem(&other).unwrap()).unwrap();
        if std::process::Command::new("openssl")
            .arg("version")
            .output()
            .is_err()
        {
            eprintln!("openssl not installed: the chain is checked in vtpm's tests only");
            return;
        }
        for kind in EkKind::ALL {
            let ek = dir.join(format!("{kind:?}.pem"));
            std::fs::write(&ek, pem("CERTIFICATE", tpm.ek_certificate(kind).unwrap())).unwrap();
            let verify = |ca: &Path| {
                std::process::Command::new("openssl")
                    .arg("verify")
                    .arg("-CAfile")
                    .arg(ca)
                    .arg(&ek)
                    .output()
                    .unwrap()
                    .status
                    .success()
            };
            assert!(verify(&ca_pem), "{kind:?}");
            assert!(
                !verify(&other_pem),
                "{kind:?} verified by another disk's CA"
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
