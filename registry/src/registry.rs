//! [`Registry`]: the in-memory view of a system disk's last committed metadata and
//! every operation on it. Each update builds the new state, checks it, writes it to
//! the inactive slot with the next generation and flushes; only then does the
//! in-memory view change. `open` never reinitialises anything.

use alloc::string::String;
use alloc::vec::Vec;

use vdev::BlockBackend;

use crate::codec::crc32c;
use crate::defs::{
    BLOCK_SIZE, MAX_DISKS, MIN_DISK_SIZE, SUPERBLOCK_BACKUP_OFFSET, SUPERBLOCK_PRIMARY_OFFSET,
    SUPERBLOCK_SIZE, TPM_CA_KEY_SIZE,
};
use crate::error::{
    ConsistencyError, ExtentIoError, OpenError, RegistryError, SlotError, SlotId, SuperblockError,
};
use crate::extent_io::{read_blob, write_extent, zero_extent};
use crate::policy::Policy;
use crate::record::{
    Blob, BootSource, DeviceModel, DiskBus, Extent, ExtentRole, GuestDisk, MsiController, VmRecord,
};
use crate::slot::{build_slot, encode_payload_with, read_slot};
use crate::space::{allocate, check_layout, free_runs, subtract};
use crate::superblock::Superblock;
use crate::uuid::Uuid;

/// What a new VM boots from: capacities to reserve; content is stored afterwards
/// with [`Registry::store_blob`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootSpec {
    /// Linux direct boot.
    Linux {
        /// Bytes to reserve for the kernel image.
        kernel_capacity: u64,
        /// Bytes to reserve for the initrd, if any.
        initrd_capacity: Option<u64>,
        /// The kernel command line.
        cmdline: String,
    },
    /// UEFI firmware boot.
    Firmware {
        /// Bytes to reserve for the firmware code image.
        code_capacity: u64,
        /// Bytes to reserve for the variable store, a two-copy [`crate::AbStore`]
        /// (store a template into it if wanted).
        vars_capacity: u64,
    },
}

/// A guest disk to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpec {
    /// Size in bytes (rounded up to the allocation unit).
    pub size: u64,
    /// Whether the guest sees it read-only.
    pub read_only: bool,
}

/// Everything needed to create a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Unique name.
    pub name: String,
    /// vCPU count.
    pub vcpus: u32,
    /// Guest RAM in bytes (a multiple of 2 MiB).
    pub memory_bytes: u64,
    /// Platform profile.
    pub device_model: DeviceModel,
    /// Boot source.
    pub boot: BootSpec,
    /// Guest disks.
    pub disks: Vec<DiskSpec>,
    /// Bytes to reserve for the TPM NV image; 0 for no TPM.
    pub tpm_nv_size: u64,
    /// Lifecycle policy.
    pub policy: Policy,
}

/// Health of one metadata slot as last seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotStatus {
    /// The slot passed every check and holds this generation.
    Valid {
        /// The slot's generation.
        generation: u64,
    },
    /// The slot was refused (on open), or its last write failed.
    Refused(SlotError),
}

/// The system disk's registry as of the last commit. Its `Debug` output never
/// shows the CA key.
#[derive(Clone, PartialEq, Eq)]
pub struct Registry {
    sb: Superblock,
    vms: Vec<VmRecord>,
    /// The vTPM manufacturer CA's secret key (slot version 3 on).
    tpm_ca_key: Option<[u8; TPM_CA_KEY_SIZE]>,
    generation: u64,
    active: SlotId,
    status: [SlotStatus; 2],
}

impl core::fmt::Debug for Registry {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let Registry {
            sb,
            vms,
            tpm_ca_key,
            generation,
            active,
            status,
        } = self;
        f.debug_struct("Registry")
            .field("sb", sb)
            .field("vms", vms)
            .field("tpm_ca_key", &tpm_ca_key.map(|_| "<secret>"))
            .field("generation", generation)
            .field("active", active)
            .field("status", status)
            .finish()
    }
}

fn slot_ix(s: SlotId) -> usize {
    s.index() as usize
}

impl Registry {
    /// Formats `disk` as an empty system disk: both superblock copies, slot A with
    /// generation 1 and no VMs, slot B blanked. Everything the disk held is lost;
    /// the data area is not zeroed (a fresh file or disk reads as zeros already).
    pub fn format(disk: &mut dyn BlockBackend, disk_uuid: Uuid) -> Result<Registry, RegistryError> {
        if disk_uuid.is_nil() {
            return Err(RegistryError::NilDiskUuid);
        }
        if disk.read_only() {
            return Err(RegistryError::ReadOnly);
        }
        let sb = Superblock::for_capacity(disk_uuid, disk.capacity())
            .ok_or(RegistryError::DiskTooSmall)?;
        disk.write_at(sb.slot_b_offset, &[0u8; BLOCK_SIZE as usize])?;
        let slot_a = build_slot(&sb, SlotId::A, 1, &encode_payload_with(&[], None));
        disk.write_at(sb.slot_a_offset, &slot_a)?;
        let sb_bytes = sb.encode();
        disk.write_at(SUPERBLOCK_BACKUP_OFFSET, &sb_bytes)?;
        disk.write_at(SUPERBLOCK_PRIMARY_OFFSET, &sb_bytes)?;
        disk.flush()?;
        Ok(Registry {
            sb,
            vms: Vec::new(),
            tpm_ca_key: None,
            generation: 1,
            active: SlotId::A,
            status: [
                SlotStatus::Valid { generation: 1 },
                SlotStatus::Refused(SlotError::Blank),
            ],
        })
    }

    /// Opens a formatted system disk: the first valid superblock copy, then the valid
    /// slot with the highest generation. A refused slot is reported in
    /// [`Registry::slot_status`] and logged; if both are refused, open fails.
    pub fn open(disk: &mut dyn BlockBackend) -> Result<Registry, OpenError> {
        if disk.capacity() < MIN_DISK_SIZE {
            return Err(OpenError::DiskTooSmall {
                capacity: disk.capacity(),
                recorded: 0,
            });
        }
        let primary = read_superblock(disk, SUPERBLOCK_PRIMARY_OFFSET);
        let backup = read_superblock(disk, SUPERBLOCK_BACKUP_OFFSET);
        let sb = match (primary, backup) {
            (Ok(p), Ok(b)) => {
                if p != b {
                    log::warn!("registry: superblock copies differ; using the primary");
                }
                p
            }
            (Ok(p), Err(e)) => {
                log::warn!("registry: backup superblock refused ({e}); using the primary");
                p
            }
            (Err(e), Ok(b)) => {
                log::warn!("registry: primary superblock refused ({e}); using the backup");
                b
            }
            (Err(primary), Err(backup)) => return Err(OpenError::Superblock { primary, backup }),
        };
        if disk.capacity() < sb.disk_size {
            return Err(OpenError::DiskTooSmall {
                capacity: disk.capacity(),
                recorded: sb.disk_size,
            });
        }
        let a = read_slot(disk, &sb, SlotId::A);
        let b = read_slot(disk, &sb, SlotId::B);
        for (id, r) in [(SlotId::A, &a), (SlotId::B, &b)] {
            match r {
                Err(SlotError::Blank) => log::info!("registry: slot {id} is blank"),
                Err(e) => log::warn!("registry: slot {id} refused: {e}"),
                Ok(_) => {}
            }
        }
        let status = [&a, &b].map(|r| match r {
            Ok(s) => SlotStatus::Valid {
                generation: s.generation,
            },
            Err(e) => SlotStatus::Refused(*e),
        });
        let (active, loaded) = match (a, b) {
            (Ok(a), Ok(b)) if b.generation > a.generation => (SlotId::B, b),
            (Ok(a), _) => (SlotId::A, a),
            (Err(_), Ok(b)) => (SlotId::B, b),
            (Err(a), Err(b)) => return Err(OpenError::NoValidSlot { a, b }),
        };
        Ok(Registry {
            sb,
            vms: loaded.vms,
            tpm_ca_key: loaded.tpm_ca_key,
            generation: loaded.generation,
            active,
            status,
        })
    }

    /// The disk's UUID.
    pub fn disk_uuid(&self) -> Uuid {
        self.sb.disk_uuid
    }
    /// The disk's geometry.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }
    /// The generation of the committed state.
    pub fn generation(&self) -> u64 {
        self.generation
    }
    /// The slot holding the committed state.
    pub fn active_slot(&self) -> SlotId {
        self.active
    }
    /// The health of a slot as last seen (on open, or by the last commit).
    pub fn slot_status(&self, slot: SlotId) -> SlotStatus {
        self.status[slot_ix(slot)]
    }
    /// Every VM, in creation order.
    pub fn vms(&self) -> &[VmRecord] {
        &self.vms
    }
    /// The VM with this UUID.
    pub fn vm(&self, uuid: Uuid) -> Option<&VmRecord> {
        self.vms.iter().find(|v| v.uuid == uuid)
    }
    /// The VM with this name.
    pub fn vm_by_name(&self, name: &str) -> Option<&VmRecord> {
        self.vms.iter().find(|v| v.name == name)
    }
    /// The free runs of the data area, in address order.
    pub fn free_extents(&self) -> Vec<Extent> {
        free_runs(&self.sb, &self.vms, &[])
    }
    /// Total free bytes of the data area.
    pub fn free_bytes(&self) -> u64 {
        self.free_extents().iter().map(|e| e.len).sum()
    }
    /// A free extent of at least `len` bytes (first fit, rounded up to the
    /// allocation unit) that overlaps none of `taken`; nothing is committed: the
    /// caller records it with [`Registry::update_vm`] before writing into it.
    pub fn allocate(&self, len: u64, taken: &[Extent]) -> Option<Extent> {
        allocate(&self.sb, &self.vms, taken, len)
    }

    /// The system disk's vTPM manufacturer CA key, if one was made.
    pub fn tpm_ca_key(&self) -> Option<&[u8; TPM_CA_KEY_SIZE]> {
        self.tpm_ca_key.as_ref()
    }

    /// The system disk's vTPM manufacturer CA key: the recorded one, or else
    /// `fresh` (the caller's random bytes), committed first. A disk written by an
    /// older version gains its key here, upgrading to slot version 3.
    pub fn ensure_tpm_ca_key(
        &mut self,
        disk: &mut dyn BlockBackend,
        fresh: [u8; TPM_CA_KEY_SIZE],
    ) -> Result<[u8; TPM_CA_KEY_SIZE], RegistryError> {
        if let Some(k) = self.tpm_ca_key {
            return Ok(k);
        }
        self.tpm_ca_key = Some(fresh);
        if let Err(e) = self.commit(disk, self.vms.clone()) {
            self.tpm_ca_key = None;
            return Err(e);
        }
        Ok(fresh)
    }

    /// Commits `vms` as the new state: check, write the inactive slot, flush.
    fn commit(
        &mut self,
        disk: &mut dyn BlockBackend,
        vms: Vec<VmRecord>,
    ) -> Result<(), RegistryError> {
        check_layout(&self.sb, &vms)?;
        if disk.read_only() {
            return Err(RegistryError::ReadOnly);
        }
        let target = self.active.other();
        let generation = self.generation + 1;
        let payload = encode_payload_with(&vms, self.tpm_ca_key.as_ref());
        let bytes = build_slot(&self.sb, target, generation, &payload);
        let written = disk
            .write_at(self.sb.slot_offset(target), &bytes)
            .and_then(|()| disk.flush());
        if let Err(e) = written {
            log::warn!(
                "registry: commit of generation {generation} to slot {target} failed: {e:?}"
            );
            self.status[slot_ix(target)] = SlotStatus::Refused(SlotError::Io(e));
            return Err(RegistryError::Io(e));
        }
        self.vms = vms;
        self.generation = generation;
        self.active = target;
        self.status[slot_ix(target)] = SlotStatus::Valid { generation };
        Ok(())
    }

    fn index_of(&self, uuid: Uuid) -> Result<usize, RegistryError> {
        self.vms
            .iter()
            .position(|v| v.uuid == uuid)
            .ok_or(RegistryError::NotFound(uuid))
    }

    /// Creates a VM with identity `uuid` (from [`Uuid::from_random_bytes`]),
    /// allocating its extents first-fit, and commits it. Blob contents are stored
    /// afterwards with [`Registry::store_blob`].
    pub fn add_vm(
        &mut self,
        disk: &mut dyn BlockBackend,
        uuid: Uuid,
        spec: &VmSpec,
    ) -> Result<Uuid, RegistryError> {
        if uuid.is_nil() {
            return Err(ConsistencyError::NilUuid.into());
        }
        if self.vm(uuid).is_some() {
            return Err(RegistryError::Exists(uuid));
        }
        if spec.disks.len() > MAX_DISKS {
            return Err(ConsistencyError::TooManyDisks(uuid).into());
        }
        let mut taken: Vec<Extent> = Vec::new();
        let alloc = |role: ExtentRole,
                     len: u64,
                     taken: &mut Vec<Extent>|
         -> Result<Extent, RegistryError> {
            if len == 0 {
                return Err(ConsistencyError::MissingExtent { vm: uuid, role }.into());
            }
            let e = allocate(&self.sb, &self.vms, taken, len)
                .ok_or(RegistryError::NoSpace { needed: len })?;
            taken.push(e);
            Ok(e)
        };
        let boot = match &spec.boot {
            BootSpec::Linux {
                kernel_capacity,
                initrd_capacity,
                cmdline,
            } => BootSource::Linux {
                kernel: Blob::empty_in(alloc(ExtentRole::Kernel, *kernel_capacity, &mut taken)?),
                initrd: match initrd_capacity {
                    Some(c) => Some(Blob::empty_in(alloc(ExtentRole::Initrd, *c, &mut taken)?)),
                    None => None,
                },
                cmdline: cmdline.clone(),
            },
            BootSpec::Firmware {
                code_capacity,
                vars_capacity,
            } => BootSource::Firmware {
                code: Blob::empty_in(alloc(ExtentRole::FirmwareCode, *code_capacity, &mut taken)?),
                vars: alloc(ExtentRole::FirmwareVars, *vars_capacity, &mut taken)?,
            },
        };
        let mut disks = Vec::with_capacity(spec.disks.len());
        for (i, d) in spec.disks.iter().enumerate() {
            let role = ExtentRole::Disk(u8::try_from(i).unwrap_or(u8::MAX));
            disks.push(GuestDisk {
                extent: alloc(role, d.size, &mut taken)?,
                read_only: d.read_only,
            });
        }
        let tpm_nv = match spec.tpm_nv_size {
            0 => Extent::EMPTY,
            n => alloc(ExtentRole::TpmNv, n, &mut taken)?,
        };
        let record = VmRecord {
            uuid,
            name: spec.name.clone(),
            vcpus: spec.vcpus,
            memory_bytes: spec.memory_bytes,
            device_model: spec.device_model,
            boot,
            disks,
            tpm_nv,
            policy: spec.policy,
            saved_state: Blob::default(),
            starts: 0,
            snapshots: Vec::new(),
            rtc_offset: 0,
            // Set after creation (`update_vm`) by the tools that choose them.
            msi: MsiController::default(),
            disk_bus: DiskBus::default(),
        };
        let mut vms = self.vms.clone();
        vms.push(record);
        self.commit(disk, vms)?;
        Ok(uuid)
    }

    /// Applies `f` to a copy of the VM's record and commits the result if it is
    /// consistent. The UUID cannot change. Extents the update drops are zeroed after
    /// the commit.
    pub fn update_vm(
        &mut self,
        disk: &mut dyn BlockBackend,
        uuid: Uuid,
        f: impl FnOnce(&mut VmRecord),
    ) -> Result<(), RegistryError> {
        let i = self.index_of(uuid)?;
        let mut vms = self.vms.clone();
        f(&mut vms[i]);
        if vms[i].uuid != uuid {
            return Err(RegistryError::UuidChanged);
        }
        let before = self.vms[i].extents();
        let after: Vec<Extent> = vms[i].extents().into_iter().map(|(_, e)| e).collect();
        self.commit(disk, vms)?;
        // Only this VM's extents changed, so what it no longer covers is now free.
        for (_, e) in before {
            for freed in subtract(e, &after) {
                scrub(disk, freed)?;
            }
        }
        Ok(())
    }

    /// Replaces the VM's policy.
    pub fn set_policy(
        &mut self,
        disk: &mut dyn BlockBackend,
        uuid: Uuid,
        policy: Policy,
    ) -> Result<(), RegistryError> {
        self.update_vm(disk, uuid, |r| r.policy = policy)
    }

    /// Deletes a VM: zeroes every extent it owns (so free space never carries one
    /// VM's data to another), then commits the registry without it. Returns the
    /// removed record.
    pub fn remove_vm(
        &mut self,
        disk: &mut dyn BlockBackend,
        uuid: Uuid,
    ) -> Result<VmRecord, RegistryError> {
        let i = self.index_of(uuid)?;
        if disk.read_only() {
            return Err(RegistryError::ReadOnly);
        }
        for (_, e) in self.vms[i].extents() {
            scrub(disk, e)?;
        }
        let mut vms = self.vms.clone();
        let removed = vms.remove(i);
        self.commit(disk, vms)?;
        Ok(removed)
    }

    /// Writes `data` as the content of the VM's blob `role` (kernel, initrd,
    /// firmware code, saved state), flushes it, then commits its size and
    /// CRC32C. A crash in between leaves the old checksum, so the content is refused
    /// on read rather than used.
    pub fn store_blob(
        &mut self,
        disk: &mut dyn BlockBackend,
        uuid: Uuid,
        role: ExtentRole,
        data: &[u8],
    ) -> Result<(), RegistryError> {
        let i = self.index_of(uuid)?;
        let blob = *self.vms[i]
            .blob(role)
            .ok_or(RegistryError::NoSuchBlob(role))?;
        if blob.extent.is_empty() {
            return Err(RegistryError::NoSuchBlob(role));
        }
        let size = data.len() as u64;
        if size > blob.extent.len {
            return Err(RegistryError::BlobTooLarge {
                size,
                capacity: blob.extent.len,
            });
        }
        // Whole blocks only (the extent is a multiple of the allocation unit, so the
        // zero padding fits): block drivers need not support partial sectors.
        let mut padded = data.to_vec();
        padded.resize(data.len().next_multiple_of(BLOCK_SIZE as usize), 0);
        write_extent(disk, blob.extent, 0, &padded)?;
        disk.flush()?;
        let crc = crc32c(data);
        self.update_vm(disk, uuid, |r| {
            if let Some(b) = r.blob_mut(role) {
                b.size = size;
                b.crc32c = crc;
            }
        })
    }

    /// Reads the VM's blob `role`, verifying its checksum.
    pub fn read_blob(
        &self,
        disk: &mut dyn BlockBackend,
        uuid: Uuid,
        role: ExtentRole,
    ) -> Result<Vec<u8>, RegistryError> {
        let vm = self.vm(uuid).ok_or(RegistryError::NotFound(uuid))?;
        let blob = vm.blob(role).ok_or(RegistryError::NoSuchBlob(role))?;
        read_blob(disk, blob).map_err(|e| match e {
            ExtentIoError::Checksum => RegistryError::BlobChecksum(role),
            other => other.into(),
        })
    }

    /// Makes sure the VM has a saved-state extent of at least `capacity` bytes. A
    /// larger extent is allocated if needed (the old one is freed and zeroed, and any
    /// saved state in it dropped).
    pub fn reserve_saved_state(
        &mut self,
        disk: &mut dyn BlockBackend,
        uuid: Uuid,
        capacity: u64,
    ) -> Result<Extent, RegistryError> {
        let i = self.index_of(uuid)?;
        let current = self.vms[i].saved_state.extent;
        if current.len >= capacity && !current.is_empty() {
            return Ok(current);
        }
        let others: Vec<VmRecord> = self
            .vms
            .iter()
            .map(|v| {
                let mut v = v.clone();
                if v.uuid == uuid {
                    v.saved_state = Blob::default();
                }
                v
            })
            .collect();
        let e = allocate(&self.sb, &others, &[], capacity)
            .ok_or(RegistryError::NoSpace { needed: capacity })?;
        // `others` frees the current extent, so first-fit may pick an overlapping
        // range; that is fine because the new blob starts empty.
        self.update_vm(disk, uuid, |r| r.saved_state = Blob::empty_in(e))?;
        Ok(e)
    }
}

fn scrub(disk: &mut dyn BlockBackend, e: Extent) -> Result<(), RegistryError> {
    zero_extent(disk, e).map_err(RegistryError::from)
}

fn read_superblock(
    disk: &mut dyn BlockBackend,
    offset: u64,
) -> Result<Superblock, SuperblockError> {
    let mut b = [0u8; SUPERBLOCK_SIZE];
    disk.read_at(offset, &mut b).map_err(SuperblockError::Io)?;
    Superblock::decode(&b)
}

#[cfg(test)]
mod tests;
