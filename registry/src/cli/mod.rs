//! Host CLI for system-disk images (feature `std`), reached as
//! `cargo xtask disk <command> …`: create an image, add VMs with their boot images,
//! list and inspect VMs and slot health, import raw guest-disk images, set policy
//! and remove VMs. Entry point: [`cli_main`]; [`run`] returns the output instead of
//! printing it.

mod args;
mod file_disk;

pub use args::{format_size, parse_size};
pub use file_disk::FileDisk;

use std::fmt::Write as _;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::string::{String, ToString};
use std::vec::Vec;
use std::{format, println, vec};

use crate::defs::BLOCK_SIZE;
use crate::policy::POLICY_FIELDS;
use crate::{
    write_extent, BootSource, BootSpec, DeviceModel, DiskBus, DiskSpec, ExtentRole, MsiController,
    Policy, Registry, SlotId, SlotStatus, Uuid, VmRecord, VmSpec,
};
use args::Args;

/// Default size of a new system-disk image.
pub const DEFAULT_DISK_SIZE: u64 = 8 << 30;
/// Default TPM NV area per VM.
pub const DEFAULT_TPM_NV_SIZE: u64 = 256 << 10;
/// Default firmware variable store when no `--vars` file is given (the size of an
/// AAVMF/QEMU flash bank).
pub const DEFAULT_VARS_SIZE: u64 = 64 << 20;
/// Chunk size for image copies.
const COPY_CHUNK: usize = 1 << 20;

/// Usage text.
pub const USAGE: &str = "\
usage: disk <command> ...
  create PATH [--size SIZE] [--uuid UUID]
  add-vm PATH --name NAME --vcpus N --mem SIZE
         (--kernel FILE [--initrd FILE] [--cmdline STR] | --firmware FILE [--vars FILE | --vars-size SIZE])
         [--disk-size SIZE[:ro]]... [--tpm-nv SIZE] [--device-model linux-dt|linux-dt-nvme|uefi-acpi|windows] [--uuid UUID]
         [--msi v2m|its (linux-dt-nvme, windows)] [--disk-bus nvme|virtio-pci (windows)]
         [--[no-]autostart] [--[no-]resume-on-boot] [--[no-]visible-on-start]
         [--[no-]pause-on-hide] [--[no-]suspend-on-host-shutdown]
  list PATH
  inspect PATH [VM]
  import PATH VM --disk N --image FILE
  set-policy PATH VM [policy flags as for add-vm]
  remove-vm PATH VM
SIZE takes K, M, G or T (powers of 1024). VM is a UUID or a name.";

/// Runs the CLI and prints its output. `args` are the words after `disk`.
pub fn cli_main(args: &[String]) -> Result<(), String> {
    let out = run(args)?;
    println!("{}", out.trim_end());
    Ok(())
}

/// Runs the CLI and returns what it would print.
pub fn run(args: &[String]) -> Result<String, String> {
    let (cmd, rest) = args.split_first().ok_or_else(|| USAGE.to_string())?;
    match cmd.as_str() {
        "create" => create(rest),
        "add-vm" => add_vm(rest),
        "list" => list(rest),
        "inspect" => inspect(rest),
        "import" => import(rest),
        "set-policy" => set_policy(rest),
        "remove-vm" => remove_vm(rest),
        "help" | "--help" | "-h" => Ok(USAGE.to_string()),
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}

/// Policy flag names: `autostart` → `--autostart` / `--no-autostart`.
fn policy_flags() -> Vec<String> {
    POLICY_FIELDS
        .iter()
        .flat_map(|f| {
            let dashed = f.replace('_', "-");
            [format!("no-{dashed}"), dashed]
        })
        .collect()
}

fn apply_policy_flags(a: &Args, policy: &mut Policy) {
    for (name, _) in &a.options {
        let (on, field) = match name.strip_prefix("no-") {
            Some(f) => (false, f),
            None => (true, name.as_str()),
        };
        policy.set(&field.replace('-', "_"), on);
    }
}

fn random_uuid() -> Result<Uuid, String> {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(Uuid::from_random_bytes(b))
}

fn uuid_option(a: &Args) -> Result<Uuid, String> {
    match a.value("uuid") {
        Some(s) => Uuid::parse(s).map_err(|e| format!("--uuid: {e}")),
        None => random_uuid(),
    }
}

fn one_path(a: &Args, extra: usize) -> Result<&str, String> {
    if a.positional.len() != 1 + extra {
        return Err(format!(
            "expected {} argument(s), got {:?}\n{USAGE}",
            1 + extra,
            a.positional
        ));
    }
    Ok(&a.positional[0])
}

fn open_image(path: &str, writable: bool) -> Result<(FileDisk, Registry), String> {
    let mut disk =
        FileDisk::open(Path::new(path), !writable).map_err(|e| format!("{path}: {e}"))?;
    let reg = Registry::open(&mut disk).map_err(|e| format!("{path}: {e}"))?;
    Ok((disk, reg))
}

fn find_vm<'r>(reg: &'r Registry, key: &str) -> Result<&'r VmRecord, String> {
    Uuid::parse(key)
        .ok()
        .and_then(|u| reg.vm(u))
        .or_else(|| reg.vm_by_name(key))
        .ok_or_else(|| format!("no VM {key:?}"))
}

fn read_file(path: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{path}: {e}"))
}

fn create(args: &[String]) -> Result<String, String> {
    let a = Args::parse(args, &[])?;
    a.only(&["size", "uuid"])?;
    let path = one_path(&a, 0)?;
    let size = a
        .value("size")
        .map(parse_size)
        .transpose()?
        .unwrap_or(DEFAULT_DISK_SIZE);
    let uuid = uuid_option(&a)?;
    let mut disk = FileDisk::create(Path::new(path), size).map_err(|e| format!("{path}: {e}"))?;
    let reg = match Registry::format(&mut disk, uuid) {
        Ok(r) => r,
        Err(e) => {
            drop(disk);
            let _ = std::fs::remove_file(path);
            return Err(format!("{path}: {e}"));
        }
    };
    Ok(format!(
        "created {path}: system disk {}, {} ({} data area)\n",
        reg.disk_uuid(),
        format_size(size),
        format_size(reg.superblock().data_size)
    ))
}

fn add_vm(args: &[String]) -> Result<String, String> {
    let flags = policy_flags();
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let a = Args::parse(args, &flag_refs)?;
    let mut known = vec![
        "name",
        "vcpus",
        "mem",
        "kernel",
        "initrd",
        "cmdline",
        "firmware",
        "vars",
        "vars-size",
        "disk-size",
        "tpm-nv",
        "device-model",
        "uuid",
        "msi",
        "disk-bus",
    ];
    known.extend(flag_refs.iter());
    a.only(&known)?;
    let path = one_path(&a, 0)?;
    let name = a.value("name").ok_or("--name is required")?.to_string();
    let vcpus: u32 = a
        .value("vcpus")
        .ok_or("--vcpus is required")?
        .parse()
        .map_err(|_| "--vcpus: not a number")?;
    let memory_bytes = parse_size(a.value("mem").ok_or("--mem is required")?)?;

    // Boot images: (role, content) to store once the VM exists.
    let mut blobs: Vec<(ExtentRole, Vec<u8>)> = Vec::new();
    let mut vars_template: Option<Vec<u8>> = None;
    let boot = match (a.value("kernel"), a.value("firmware")) {
        (Some(k), None) => {
            if a.value("vars").is_some() || a.value("vars-size").is_some() {
                return Err("--vars/--vars-size need --firmware".into());
            }
            let kernel = read_file(k)?;
            let initrd = a.value("initrd").map(read_file).transpose()?;
            let spec = BootSpec::Linux {
                kernel_capacity: kernel.len() as u64,
                initrd_capacity: initrd.as_ref().map(|i| i.len() as u64),
                cmdline: a.value("cmdline").unwrap_or("").to_string(),
            };
            blobs.push((ExtentRole::Kernel, kernel));
            if let Some(i) = initrd {
                blobs.push((ExtentRole::Initrd, i));
            }
            spec
        }
        (None, Some(f)) => {
            if a.value("initrd").is_some() || a.value("cmdline").is_some() {
                return Err("--initrd/--cmdline need --kernel".into());
            }
            let code = read_file(f)?;
            let vars = a.value("vars").map(read_file).transpose()?;
            let vars_capacity = match (&vars, a.value("vars-size")) {
                (Some(_), Some(_)) => return Err("give --vars or --vars-size, not both".into()),
                // Two copies of the template, each behind its A/B header.
                (Some(v), None) => {
                    2 * (v.len() as u64 + crate::defs::AB_HEADER_SIZE as u64)
                        .next_multiple_of(BLOCK_SIZE)
                }
                (None, Some(s)) => parse_size(s)?,
                (None, None) => DEFAULT_VARS_SIZE,
            };
            let spec = BootSpec::Firmware {
                code_capacity: code.len() as u64,
                vars_capacity,
            };
            blobs.push((ExtentRole::FirmwareCode, code));
            vars_template = vars;
            spec
        }
        _ => return Err("give exactly one of --kernel and --firmware".into()),
    };
    let device_model = match a.value("device-model") {
        Some(m) => DeviceModel::parse(m).ok_or_else(|| format!("unknown device model {m:?}"))?,
        None if matches!(boot, BootSpec::Firmware { .. }) => DeviceModel::UefiAcpi,
        None => DeviceModel::LinuxDt,
    };
    let (msi, disk_bus) = pci_options(&a, device_model)?;
    let mut disks = Vec::new();
    for d in a.values("disk-size") {
        let (size, read_only) = match d.strip_suffix(":ro") {
            Some(s) => (s, true),
            None => (d, false),
        };
        disks.push(DiskSpec {
            size: parse_size(size)?,
            read_only,
        });
    }
    let tpm_nv_size = a
        .value("tpm-nv")
        .map(parse_size)
        .transpose()?
        .unwrap_or(DEFAULT_TPM_NV_SIZE);
    let mut policy = Policy::default();
    apply_policy_flags(&a, &mut policy);
    let spec = VmSpec {
        name,
        vcpus,
        memory_bytes,
        device_model,
        boot,
        disks,
        tpm_nv_size,
        policy,
    };

    let uuid = uuid_option(&a)?;
    let (mut disk, mut reg) = open_image(path, true)?;
    reg.add_vm(&mut disk, uuid, &spec)
        .map_err(|e| format!("add-vm: {e}"))?;
    let filled = fill_images(&mut disk, &mut reg, uuid, &blobs, vars_template.as_deref())
        .and_then(|()| set_pci_options(&mut disk, &mut reg, uuid, msi, disk_bus));
    if let Err(e) = filled {
        let undo = reg.remove_vm(&mut disk, uuid).err();
        let undo = undo
            .map(|u| format!(" (and rollback failed: {u})"))
            .unwrap_or_default();
        return Err(format!("{e}{undo}"));
    }
    Ok(format!("added VM {} ({uuid})\n", spec.name))
}

/// `--msi` and `--disk-bus` of `add-vm`, checked against the device model: the
/// ITS needs a root complex (`linux-dt-nvme`, `windows`), virtio-PCI a `windows`
/// VM.
pub fn pci_options(a: &Args, model: DeviceModel) -> Result<(MsiController, DiskBus), String> {
    let msi = match a.value("msi") {
        Some(m) => {
            MsiController::parse(m).ok_or_else(|| format!("--msi takes v2m or its, not {m:?}"))?
        }
        None => MsiController::default(),
    };
    let bus = match a.value("disk-bus") {
        Some(b) => DiskBus::parse(b)
            .ok_or_else(|| format!("--disk-bus takes nvme or virtio-pci, not {b:?}"))?,
        None => DiskBus::default(),
    };
    if msi != MsiController::default() && !model.first_disk_on_nvme() {
        return Err(format!(
            "--msi {} needs a device model with PCI Express (linux-dt-nvme or windows), not {}",
            msi.as_str(),
            model.as_str()
        ));
    }
    if bus != DiskBus::default() && model != DeviceModel::Windows {
        return Err(format!(
            "--disk-bus {} applies to the windows device model, not {}",
            bus.as_str(),
            model.as_str()
        ));
    }
    Ok((msi, bus))
}

/// Records a new VM's MSI controller and disk bus (one more commit, only when
/// they are not the defaults).
pub fn set_pci_options(
    disk: &mut FileDisk,
    reg: &mut Registry,
    uuid: Uuid,
    msi: MsiController,
    disk_bus: DiskBus,
) -> Result<(), String> {
    if (msi, disk_bus) == (MsiController::default(), DiskBus::default()) {
        return Ok(());
    }
    reg.update_vm(disk, uuid, |r| {
        r.msi = msi;
        r.disk_bus = disk_bus;
    })
    .map_err(|e| format!("add-vm: {e}"))
}

/// Stores a new VM's boot images, and the firmware variable-store template as the
/// first copy of the two-copy atomic store (`AbStore`) in its extent, where the
/// hypervisor reads it and commits the firmware's changes.
fn fill_images(
    disk: &mut FileDisk,
    reg: &mut Registry,
    uuid: Uuid,
    blobs: &[(ExtentRole, Vec<u8>)],
    vars_template: Option<&[u8]>,
) -> Result<(), String> {
    for (role, data) in blobs {
        reg.store_blob(disk, uuid, *role, data)
            .map_err(|e| format!("storing {role}: {e}"))?;
    }
    if let Some(t) = vars_template {
        let vm = reg.vm(uuid).ok_or("VM vanished")?;
        let BootSource::Firmware { vars, .. } = vm.boot else {
            return Err("vars template for a VM without firmware".into());
        };
        let store = crate::AbStore::new(vars).ok_or("the vars extent is too small")?;
        store
            .store(disk, t)
            .map_err(|e| format!("writing vars: {e}"))?;
    }
    Ok(())
}

fn list(args: &[String]) -> Result<String, String> {
    let a = Args::parse(args, &[])?;
    a.only(&[])?;
    let (_, reg) = open_image(one_path(&a, 0)?, false)?;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36}  {:<20} {:<9} {:>5} {:>7} {:>5}  {:<3}  {:<10}  POLICY",
        "UUID", "NAME", "MODEL", "VCPUS", "MEMORY", "DISKS", "MSI", "DISK-BUS"
    );
    for vm in reg.vms() {
        let _ = writeln!(
            out,
            "{:<36}  {:<20} {:<9} {:>5} {:>7} {:>5}  {:<3}  {:<10}  {}",
            vm.uuid,
            vm.name,
            vm.device_model.as_str(),
            vm.vcpus,
            format_size(vm.memory_bytes),
            vm.disks.len(),
            vm.msi.as_str(),
            vm.disk_bus.as_str(),
            policy_summary(&vm.policy)
        );
    }
    Ok(out)
}

fn policy_summary(p: &Policy) -> String {
    let on: Vec<&str> = POLICY_FIELDS
        .iter()
        .copied()
        .filter(|f| p.get(f) == Some(true))
        .collect();
    if on.is_empty() {
        "-".to_string()
    } else {
        on.join(",")
    }
}

fn slot_line(reg: &Registry, id: SlotId) -> String {
    let active = if reg.active_slot() == id {
        " (active)"
    } else {
        ""
    };
    match reg.slot_status(id) {
        SlotStatus::Valid { generation } => {
            format!("slot {id}: valid, generation {generation}{active}")
        }
        SlotStatus::Refused(e) => format!("slot {id}: REFUSED: {e}"),
    }
}

fn inspect(args: &[String]) -> Result<String, String> {
    let a = Args::parse(args, &[])?;
    a.only(&[])?;
    if a.positional.is_empty() || a.positional.len() > 2 {
        return Err(format!("expected PATH [VM]\n{USAGE}"));
    }
    let (mut disk, reg) = open_image(&a.positional[0], false)?;
    let mut out = String::new();
    match a.positional.get(1) {
        None => {
            let sb = reg.superblock();
            let _ = writeln!(out, "system disk {}", reg.disk_uuid());
            let _ = writeln!(out, "format version {}", crate::defs::FORMAT_VERSION);
            let _ = writeln!(
                out,
                "disk size {} ({} bytes)",
                format_size(sb.disk_size),
                sb.disk_size
            );
            let _ = writeln!(
                out,
                "data area {:#x}+{:#x}, allocation unit {}",
                sb.data_offset, sb.data_size, sb.alloc_unit
            );
            let _ = writeln!(
                out,
                "free {} in {} run(s)",
                reg.free_bytes(),
                reg.free_extents().len()
            );
            let _ = writeln!(out, "generation {}", reg.generation());
            let _ = writeln!(out, "{}", slot_line(&reg, SlotId::A));
            let _ = writeln!(out, "{}", slot_line(&reg, SlotId::B));
            let _ = writeln!(out, "{} VM(s)", reg.vms().len());
            for vm in reg.vms() {
                let _ = writeln!(out, "  {} {}", vm.uuid, vm.name);
            }
        }
        Some(key) => {
            let vm = find_vm(&reg, key)?.clone();
            describe_vm(&mut out, &reg, &mut disk, &vm);
        }
    }
    Ok(out)
}

fn describe_vm(out: &mut String, reg: &Registry, disk: &mut FileDisk, vm: &VmRecord) {
    let _ = writeln!(out, "uuid          {}", vm.uuid);
    let _ = writeln!(out, "name          {}", vm.name);
    let _ = writeln!(out, "device model  {}", vm.device_model.as_str());
    let _ = writeln!(out, "msi           {}", vm.msi.as_str());
    let _ = writeln!(out, "disk bus      {}", vm.disk_bus.as_str());
    let _ = writeln!(out, "vcpus         {}", vm.vcpus);
    let _ = writeln!(out, "starts        {}", vm.starts);
    let _ = writeln!(out, "rtc offset    {:+} s", vm.rtc_offset);
    let _ = writeln!(
        out,
        "memory        {} ({} bytes)",
        format_size(vm.memory_bytes),
        vm.memory_bytes
    );
    let mut blob_line = |out: &mut String, role: ExtentRole| {
        if let Some(b) = vm.blob(role) {
            let health = if b.size == 0 {
                "empty".to_string()
            } else {
                match reg.read_blob(disk, vm.uuid, role) {
                    Ok(_) => "checksum ok".to_string(),
                    Err(e) => format!("BAD: {e}"),
                }
            };
            let _ = writeln!(
                out,
                "{:<13} extent {}, {} bytes, crc32c {:08x}, {health}",
                role.to_string(),
                b.extent,
                b.size,
                b.crc32c
            );
        }
    };
    match &vm.boot {
        BootSource::Linux {
            initrd, cmdline, ..
        } => {
            let _ = writeln!(out, "boot          linux");
            blob_line(out, ExtentRole::Kernel);
            if initrd.is_some() {
                blob_line(out, ExtentRole::Initrd);
            }
            let _ = writeln!(out, "cmdline       {cmdline}");
        }
        BootSource::Firmware { vars, .. } => {
            let _ = writeln!(out, "boot          firmware");
            blob_line(out, ExtentRole::FirmwareCode);
            let _ = writeln!(
                out,
                "firmware-vars extent {vars} (two-copy atomic store of the flash image)"
            );
        }
    }
    for (i, d) in vm.disks.iter().enumerate() {
        let ro = if d.read_only { ", read-only" } else { "" };
        let _ = writeln!(
            out,
            "disk{i:<9} extent {}, {}{ro}",
            d.extent,
            format_size(d.extent.len)
        );
    }
    let _ = writeln!(out, "tpm-nv        extent {}", vm.tpm_nv);
    if vm.saved_state.extent.is_empty() {
        let _ = writeln!(out, "saved-state   none");
    } else {
        blob_line(out, ExtentRole::SavedState);
    }
    for snap in &vm.snapshots {
        let incomplete = if snap.image.size == 0 || snap.disk.size == 0 {
            ", incomplete"
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "snapshot      '{}': image extent {}, {} bytes; disk copy extent {}, {} bytes{incomplete}",
            snap.tag, snap.image.extent, snap.image.size, snap.disk.extent, snap.disk.size
        );
    }
    let _ = writeln!(out, "policy        schema v{}", Policy::SCHEMA);
    for f in POLICY_FIELDS {
        let _ = writeln!(out, "  {f:<26} {}", vm.policy.get(f).unwrap_or(false));
    }
    let _ = writeln!(
        out,
        "registry      generation {}; {}; {}",
        reg.generation(),
        slot_line(reg, SlotId::A),
        slot_line(reg, SlotId::B)
    );
}

fn import(args: &[String]) -> Result<String, String> {
    let a = Args::parse(args, &[])?;
    a.only(&["disk", "image"])?;
    let path = one_path(&a, 1)?;
    let n: usize = a
        .value("disk")
        .ok_or("--disk is required")?
        .parse()
        .map_err(|_| "--disk: not a number")?;
    let image = a.value("image").ok_or("--image is required")?;
    let (mut disk, reg) = open_image(path, true)?;
    let vm = find_vm(&reg, &a.positional[1])?;
    let target = vm
        .disks
        .get(n)
        .ok_or_else(|| format!("VM {} has no disk {n}", vm.name))?
        .extent;
    let mut file = File::open(image).map_err(|e| format!("{image}: {e}"))?;
    let len = file.metadata().map_err(|e| format!("{image}: {e}"))?.len();
    if len > target.len {
        return Err(format!(
            "{image} is {len} bytes; disk {n} of {} holds {}",
            vm.name, target.len
        ));
    }
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut done = 0u64;
    while done < len {
        let n_read = (len - done).min(COPY_CHUNK as u64) as usize;
        file.read_exact(&mut buf[..n_read])
            .map_err(|e| format!("{image}: {e}"))?;
        // Whole blocks only: pad the last chunk with zeros (the extent has room).
        let n_write = n_read.next_multiple_of(BLOCK_SIZE as usize);
        buf[n_read..n_write].fill(0);
        write_extent(&mut disk, target, done, &buf[..n_write])
            .map_err(|e| format!("writing disk {n}: {e}"))?;
        done += n_read as u64;
    }
    vdev::BlockBackend::flush(&mut disk).map_err(|e| format!("flush: {e:?}"))?;
    Ok(format!(
        "imported {len} bytes from {image} into disk {n} of VM {} ({})\n",
        vm.name, vm.uuid
    ))
}

fn set_policy(args: &[String]) -> Result<String, String> {
    let flags = policy_flags();
    let flag_refs: Vec<&str> = flags.iter().map(String::as_str).collect();
    let a = Args::parse(args, &flag_refs)?;
    a.only(&flag_refs)?;
    let path = one_path(&a, 1)?;
    let (mut disk, mut reg) = open_image(path, true)?;
    let vm = find_vm(&reg, &a.positional[1])?;
    let (uuid, mut policy) = (vm.uuid, vm.policy);
    apply_policy_flags(&a, &mut policy);
    reg.set_policy(&mut disk, uuid, policy)
        .map_err(|e| format!("set-policy: {e}"))?;
    Ok(format!("policy of {uuid}: {}\n", policy_summary(&policy)))
}

fn remove_vm(args: &[String]) -> Result<String, String> {
    let a = Args::parse(args, &[])?;
    a.only(&[])?;
    let path = one_path(&a, 1)?;
    let (mut disk, mut reg) = open_image(path, true)?;
    let uuid = find_vm(&reg, &a.positional[1])?.uuid;
    let removed = reg
        .remove_vm(&mut disk, uuid)
        .map_err(|e| format!("remove-vm: {e}"))?;
    Ok(format!(
        "removed VM {} ({uuid}); its extents were zeroed and freed\n",
        removed.name
    ))
}
