//! The system disk and the VM registry on it: opening them at boot, logging every
//! VM's identity, and turning the autostart VM's record into something to boot —
//! its kernel and initrd read (checksum-verified) from their extents, its disks as
//! extents of the system disk, and its start counter incremented with an atomic
//! registry commit before the guest runs.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;

use arch::relax::Mutex;
use registry::{BootSource, Registry, RegistryError, VmRecord};
use vdev::{AsyncBlock, SharedBlock};

use crate::sysdisk::SystemDisk;
use boards::memmap::PhysMem;

/// The opened system disk and its registry.
pub struct Storage {
    pub disk: SharedBlock<SystemDisk>,
    pub registry: Registry,
}

/// A VM ready to be built: where its pieces are and what it is.
pub struct VmDefinition {
    pub name: String,
    pub identity: Option<registry::Uuid>,
    pub vcpus: u32,
    pub mem: u64,
    pub kernel: &'static [u8],
    pub initrd: Option<&'static [u8]>,
    pub cmdline: String,
    /// The VM's disks: extents of the system disk completing asynchronously, or
    /// RAM disks (direct boots) completing at once.
    pub disks: Vec<Box<dyn AsyncBlock + Send>>,
    /// The disk of the VM's NVMe controller behind PCI Express, if it has one.
    pub nvme: Option<Box<dyn AsyncBlock + Send>>,
    /// The disk of the VM's virtio-blk over virtio-PCI, if it has one.
    pub virtio_pci: Option<Box<dyn AsyncBlock + Send>>,
    /// The VM's xHCI controller and what it carries besides keyboard and tablet.
    pub usb: Option<crate::usb::Usb>,
    /// Where the VM's TPM keeps its NV image: its record's extent of the system disk,
    /// or `None` for a TPM whose state lives only in memory (direct boots).
    /// With it, the system disk's vTPM manufacturer CA that certifies the TPM's EKs
    /// at manufacture (`None`: no key could be made, and the TPM has no EK
    /// certificates).
    pub tpm_nv: Option<crate::tpm::TpmNvPlace>,
    /// The VM's lifecycle policy from its registry record (`None`: a direct boot).
    pub policy: Option<registry::Policy>,
    /// The saved image to resume from, when the registry records one the policy
    /// lets the VM resume (still to be read and checked: `suspend::resume_vm`).
    pub resume: Option<registry::Blob>,
    /// The firmware of a `uefi-acpi` VM.
    pub firmware: Option<vmspec::Firmware<'static>>,
    /// Where that VM's variable store persists (`None`: in memory, direct boots).
    pub vars_place: Option<crate::firmware::VarsPlace>,
    /// Seconds the VM's real-time clock runs ahead of the host's, as the guest
    /// last set it (the record's; 0 for a direct boot).
    pub rtc_offset: i64,
    /// Where its root complex's MSIs go: the record's MSI controller, or a
    /// direct boot's `rayos.msi=` word.
    pub msi: boards::devices::Msi,
}

/// The system disk and its registry once the VM is chosen: suspend writes through
/// it, resume reads through it.
static STORAGE: Mutex<Option<Storage>> = Mutex::new(None);

/// Keeps `storage` for the rest of the hypervisor's life.
pub fn keep(storage: Storage) {
    *STORAGE.lock() = Some(storage);
}

/// Runs `f` on the kept system disk and registry; `None` when there is none.
pub fn with<R>(f: impl FnOnce(&mut Storage) -> R) -> Option<R> {
    STORAGE.lock().as_mut().map(f)
}

/// Drops a saved image the VM will not resume from (a cold boot makes its disk
/// diverge from it), with one registry commit.
fn discard_saved_state(storage: &mut Storage, rec: &VmRecord) {
    if rec.saved_state.size == 0 {
        return;
    }
    match vmstate::consume(&mut storage.disk, &mut storage.registry, rec.uuid) {
        Ok(()) => log::info!("VM '{}': its saved state is discarded", rec.name),
        Err(e) => log::warn!(
            "VM '{}': its saved state could not be discarded ({e})",
            rec.name
        ),
    }
}

/// Finds the system disk and opens its registry. `None` (with a log line saying
/// why) when there is no disk; a disk whose registry does not open is reported and
/// left untouched — it is never reformatted.
pub fn open(transports: &[(boards::Range, Option<u32>)]) -> Option<Storage> {
    let disk = match SystemDisk::probe(transports) {
        Ok(d) => d,
        Err(crate::sysdisk::SysDiskError::NotFound) => {
            log::info!("no system disk attached");
            return None;
        }
        Err(e) => {
            log::error!("system disk unusable: {e:?}");
            return None;
        }
    };
    let (capacity, legacy) = (disk.capacity(), disk.is_legacy());
    let mut disk = SharedBlock(alloc::sync::Arc::new(spin::Mutex::new(disk)));
    match Registry::open(&mut disk) {
        Ok(registry) => {
            log::info!(
                "system disk {} ({} MiB, {} virtio-mmio): registry generation {}, slot {:?}, {} VM(s), {} MiB free",
                registry.disk_uuid(),
                capacity >> 20,
                if legacy { "legacy" } else { "modern" },
                registry.generation(),
                registry.active_slot(),
                registry.vms().len(),
                registry.free_bytes() >> 20
            );
            for vm in registry.vms() {
                log::info!(
                    "  VM '{}' {}: {} vCPU(s), {} MiB, {} disk(s), autostart {}, resume-on-boot {}, visible-on-start {}",
                    vm.name,
                    vm.uuid,
                    vm.vcpus,
                    vm.memory_bytes >> 20,
                    vm.disks.len(),
                    vm.policy.autostart,
                    vm.policy.resume_on_boot,
                    vm.policy.visible_on_start
                );
            }
            Some(Storage { disk, registry })
        }
        Err(e) => {
            log::error!("system disk registry does not open ({e:?}); it is left untouched and no VM is started from it");
            None
        }
    }
}

/// Reads `blob` into physical memory taken from `pmem`.
fn stage_blob(
    storage: &mut Storage,
    pmem: &mut PhysMem,
    blob: &registry::Blob,
    what: &str,
) -> Result<&'static [u8], String> {
    let padded = blob.size.next_multiple_of(vdev::SECTOR_SIZE);
    let pa = pmem
        .alloc(padded.max(vdev::SECTOR_SIZE), 4096)
        .ok_or_else(|| alloc::format!("no memory to stage the {what} ({} KiB)", padded >> 10))?;
    // SAFETY: [pa, pa + padded) was just taken from free physical memory for this
    // buffer alone and is identity-mapped; it is never freed, hence 'static.
    let buf = unsafe { core::slice::from_raw_parts_mut(pa as *mut u8, padded as usize) };
    let n = registry::read_blob_into_with(&mut storage.disk, blob, buf, crate::accel::crc32c)
        .map_err(|e| alloc::format!("the {what} on the system disk is unreadable: {e:?}"))?;
    Ok(&buf[..n])
}

/// The VMs the host's command line names (`rayos.vm=NAME[,NAME…]`, `chosen`),
/// else every autostart VM, each prepared to boot as its record says
/// ([`prepare`]).
pub fn autostart(
    storage: &mut Storage,
    pmem: &mut PhysMem,
    chosen: Option<&str>,
) -> Result<Vec<VmDefinition>, String> {
    let recs: Vec<VmRecord> = registry::choice::choose_all(storage.registry.vms(), chosen)
        .map_err(|e| alloc::format!("{e}"))?
        .into_iter()
        .cloned()
        .collect();
    if chosen.is_some() {
        for rec in &recs {
            log::info!("VM '{}' chosen on the command line (rayos.vm=)", rec.name);
        }
    }
    recs.iter()
        .map(|rec| prepare(storage, pmem, rec, true))
        .collect()
}

/// The registry's other VMs (not in `started`), prepared as [`autostart`]'s
/// but not started: el2 builds each and leaves it off until `vm start` (the
/// partition's VM_START), which decides then whether it resumes or cold boots
/// and counts the start ([`restart_decision`]). A VM that cannot be prepared
/// (its boot files do not fit in memory, a model this host cannot run) is
/// left out, with a line saying why.
pub fn held(pmem: &mut PhysMem, started: &[registry::Uuid]) -> Vec<VmDefinition> {
    with(|st| {
        let recs: Vec<VmRecord> = st
            .registry
            .vms()
            .iter()
            .filter(|r| !started.contains(&r.uuid))
            .cloned()
            .collect();
        recs.iter()
            .filter_map(|rec| match prepare(st, pmem, rec, false) {
                Ok(def) => Some(def),
                Err(e) => {
                    log::warn!(
                        "VM '{}' is not built at this host boot, so `vm start` cannot start it until the next: {e}",
                        rec.name
                    );
                    None
                }
            })
            .collect()
    })
    .unwrap_or_default()
}

/// `rec` prepared to boot as it says (a `windows` VM's first disk behind
/// virtio-blk over virtio-PCI rather than NVMe when its disk bus says so; its
/// MSIs to the ITS when its MSI controller says so). `starts`: it starts now
/// (its saved state decided, its start counted), else it is held off.
fn prepare(
    storage: &mut Storage,
    pmem: &mut PhysMem,
    rec: &VmRecord,
    starts: bool,
) -> Result<VmDefinition, String> {
    if rec.device_model == registry::DeviceModel::Windows {
        windows_can_start(rec)?;
    }
    let (kernel, initrd, cmdline, firmware, vars_place) = match &rec.boot {
        BootSource::Linux {
            kernel,
            initrd,
            cmdline,
        } => {
            let kernel = stage_blob(storage, pmem, kernel, "kernel")?;
            let initrd = match initrd {
                Some(b) if b.size > 0 => Some(stage_blob(storage, pmem, b, "initrd")?),
                _ => None,
            };
            (kernel, initrd, cmdline.clone(), None, None)
        }
        BootSource::Firmware { code, vars } => {
            let code = stage_blob(storage, pmem, code, "firmware code")?;
            let store = registry::AbStore::new(*vars).ok_or_else(|| {
                alloc::format!("VM '{}': its variable-store extent is too small", rec.name)
            })?;
            // A store never written is an erased bank; one whose copies are both
            // damaged is refused rather than silently erased.
            let image = store.load(&mut storage.disk).map_err(|e| {
                alloc::format!("VM '{}': its variable store is unreadable: {e}", rec.name)
            })?;
            let vars: Option<&'static [u8]> = image.map(|v| &*Vec::leak(v));
            let fw = vmspec::Firmware { code, vars };
            (
                &[][..],
                None,
                String::new(),
                Some(fw),
                Some((storage.disk.clone(), store)),
            )
        }
    };
    let mut disks: Vec<Box<dyn AsyncBlock + Send>> = rec
        .disks
        .iter()
        .map(|d| {
            Box::new(
                storage
                    .disk
                    .0
                    .lock()
                    .extent(d.extent.start, d.extent.len, d.read_only),
            ) as Box<dyn AsyncBlock + Send>
        })
        .collect();
    // A `windows` VM's read-only disk is its install media: USB mass storage on
    // its xHCI (write-protected), not a disk of its own.
    let install_media = if rec.device_model == registry::DeviceModel::Windows {
        rec.disks.iter().position(|d| d.read_only).map(|i| {
            log::info!(
                "VM '{}': disk {i} ({} KiB extent of the system disk, read-only) as USB mass storage (install media; xHCI at PCIe 00:{:02x}.0, port {})",
                rec.name,
                rec.disks[i].extent.len >> 10,
                boards::devices::XHCI_PCI_DEVICE,
                crate::usb::STORAGE_PORT
            );
            disks.remove(i)
        })
    } else {
        None
    };
    // The `linux-dt-nvme` model puts the first disk behind the NVMe controller;
    // the others stay virtio-blk.
    let virtio_pci = (rec.device_model == registry::DeviceModel::Windows
        && rec.disk_bus == registry::DiskBus::VirtioPci
        && !disks.is_empty())
    .then(|| {
        log::info!(
            "VM '{}': disk 0 ({} KiB extent of the system disk) as virtio-blk over virtio-PCI (PCIe 00:{:02x}.0), not NVMe",
            rec.name,
            disks[0].capacity() >> 10,
            boards::devices::VIRTIO_PCI_BLK_DEVICE
        );
        disks.remove(0)
    });
    let nvme = (rec.device_model.first_disk_on_nvme() && virtio_pci.is_none() && !disks.is_empty()).then(|| {
        log::info!(
            "VM '{}': disk 0 ({} KiB extent of the system disk) as NVMe namespace 1 (PCIe 00:{:02x}.0)",
            rec.name,
            disks[0].capacity() >> 10,
            boards::devices::NVME_PCI_DEVICE
        );
        disks.remove(0)
    });
    if rec.device_model.first_disk_on_nvme() && nvme.is_none() && virtio_pci.is_none() {
        log::warn!(
            "VM '{}': device model {} but no disk: no NVMe controller",
            rec.name,
            rec.device_model.as_str()
        );
    }
    let resume = if starts {
        let resume = resume_decision(storage, rec);
        record_start(storage, rec);
        resume
    } else {
        None
    };
    Ok(VmDefinition {
        name: rec.name.clone(),
        identity: Some(rec.uuid),
        vcpus: rec.vcpus,
        mem: rec.memory_bytes,
        kernel,
        initrd,
        cmdline,
        disks,
        nvme,
        virtio_pci,
        // A `windows` VM's keyboard and tablet are USB HID devices behind an xHCI,
        // with its install media as USB storage.
        usb: (rec.device_model == registry::DeviceModel::Windows).then(|| crate::usb::Usb {
            storage: install_media.map(|d| d as crate::usb::Medium),
        }),
        tpm_nv: (rec.tpm_nv.len > 0).then(|| (storage.disk.clone(), rec.tpm_nv, tpm_ca(storage))),
        resume,
        policy: Some(rec.policy),
        firmware,
        vars_place,
        rtc_offset: rec.rtc_offset,
        msi: match rec.msi {
            registry::MsiController::V2m => boards::devices::Msi::V2m,
            registry::MsiController::Its => boards::devices::Msi::Its,
        },
    })
}

/// Whether `rec` starts from its saved state (the image to resume) or cold; an
/// image it cannot use is discarded, so no later start tries it.
fn resume_decision(storage: &mut Storage, rec: &VmRecord) -> Option<registry::Blob> {
    match vmstate::decide(rec) {
        Ok(blob) => {
            log::info!(
                "VM '{}' {}: a saved state ({} KiB) is recorded; resuming from it",
                rec.name,
                rec.uuid,
                blob.size >> 10
            );
            Some(blob)
        }
        Err(vmstate::ColdReason::NoSavedState) => {
            log::info!(
                "VM '{}' {}: cold boot (no saved state) from the system disk",
                rec.name,
                rec.uuid
            );
            None
        }
        Err(why) => {
            log::warn!(
                "VM '{}' {}: cold boot from the system disk: {why}",
                rec.name,
                rec.uuid
            );
            discard_saved_state(storage, rec);
            None
        }
    }
}

/// The saved state guest `uuid` starts from now (its record decides, as at host
/// boot: [`resume_decision`]), its start counted in the registry: for a guest
/// started again while the host runs (the partition's VM_START).
pub fn restart_decision(uuid: registry::Uuid) -> Result<Option<registry::Blob>, String> {
    with(|st| {
        let rec = st
            .registry
            .vm(uuid)
            .cloned()
            .ok_or_else(|| String::from("its registry record is gone"))?;
        let blob = resume_decision(st, &rec);
        record_start(st, &rec);
        Ok(blob)
    })
    .unwrap_or_else(|| Err(String::from("the system disk is not open")))
}

/// Refuses a `windows` VM this build cannot give what the model promises: a
/// CPU without LSE atomics (Windows 11 on Arm needs them), or more than one
/// read-only disk (the install media is USB mass storage on the xHCI's one
/// storage port; a second is refused, not dropped).
fn windows_can_start(rec: &VmRecord) -> Result<(), String> {
    arch::features::windows_guests(&crate::diag::cpu_features())
        .map_err(|why| alloc::format!("VM '{}' (device model windows): {why}", rec.name))?;
    let mut read_only = rec.disks.iter().enumerate().filter(|(_, d)| d.read_only);
    if let (Some((first, _)), Some((i, _))) = (read_only.next(), read_only.next()) {
        return Err(alloc::format!(
            "VM '{}' (device model windows): refused: its disk {i} is a second read-only disk (install media); disk {first} is already the one USB mass-storage device, and more is not built yet",
            rec.name
        ));
    }
    Ok(())
}

/// The system disk's vTPM manufacturer CA, its key made (from the entropy source)
/// and committed to the registry if the disk has none yet. The key stays in the
/// hypervisor's memory; guests only see the certificates it signs.
fn tpm_ca(storage: &mut Storage) -> Option<vtpm::ek::ManufacturerCa> {
    let disk_id = storage.registry.disk_uuid().0;
    let key = match storage.registry.tpm_ca_key() {
        Some(k) => *k,
        None => {
            let mut entropy = crate::entropy::source(b"RayOS vTPM manufacturer CA")?;
            let fresh = loop {
                let mut k = [0u8; registry::defs::TPM_CA_KEY_SIZE];
                entropy.fill(&mut k);
                if vtpm::ek::ManufacturerCa::new(&k, &disk_id).is_ok() {
                    break k;
                }
            };
            match storage.registry.ensure_tpm_ca_key(&mut storage.disk, fresh) {
                Ok(k) => {
                    log::info!("system disk: vTPM manufacturer CA key made and recorded");
                    k
                }
                Err(e) => {
                    log::warn!("system disk: no vTPM manufacturer CA key can be recorded ({e}); TPMs get no EK certificates");
                    return None;
                }
            }
        }
    };
    match vtpm::ek::ManufacturerCa::new(&key, &disk_id) {
        Ok(ca) => Some(ca),
        Err(e) => {
            log::warn!("system disk: the vTPM manufacturer CA key is unusable ({e:?}); TPMs get no EK certificates");
            None
        }
    }
}

/// Increments the VM's start counter with an atomic registry commit, before the
/// guest runs, and logs `VM '<name>' <uuid>: start #N`. A failed commit is logged
/// and does not stop the boot (the counter then undercounts, never overcounts).
fn record_start(storage: &mut Storage, rec: &VmRecord) {
    let n = rec.starts.saturating_add(1);
    match storage
        .registry
        .update_vm(&mut storage.disk, rec.uuid, |r| r.starts = n)
    {
        Ok(()) => log::info!(
            "VM '{}' {}: start #{n} (registry generation {})",
            rec.name,
            rec.uuid,
            storage.registry.generation()
        ),
        Err(RegistryError::ReadOnly) => log::warn!(
            "VM '{}' {}: start #{n} not recorded: the system disk is read-only; booting anyway",
            rec.name,
            rec.uuid
        ),
        Err(e) => log::warn!(
            "VM '{}' {}: start #{n} not recorded: registry commit failed ({e}); the disk may be read-only or failing; booting anyway",
            rec.name,
            rec.uuid
        ),
    }
}

/// After a resume failed: the VM cold boots, and the image it could not use is
/// discarded so no later boot tries it over the diverged disk.
pub fn discard_after_failed_resume(uuid: registry::Uuid) {
    with(|st| {
        if let Some(rec) = st.registry.vm(uuid).cloned() {
            discard_saved_state(st, &rec);
        }
    });
}
