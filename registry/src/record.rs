//! A VM record: the persistent identity and configuration of one VM — name,
//! resources, boot source, guest disks, TPM NV area, device model, policy and saved
//! state — with its binary encoding and the checks one record must pass on its own.
//! Checks that span records or need the disk geometry live in [`crate::space`].

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::codec::{DecodeError, Reader, Writer};
use crate::defs::{
    BOOT_FIRMWARE, BOOT_LINUX, DEVICE_MODEL_LINUX_DT, DEVICE_MODEL_LINUX_DT_NVME,
    DEVICE_MODEL_UEFI_ACPI, DEVICE_MODEL_WINDOWS, DISK_BUS_NVME, DISK_BUS_VIRTIO_PCI,
    DISK_FLAGS_KNOWN, DISK_FLAG_READ_ONLY, MAX_CMDLINE_LEN, MAX_DISKS, MAX_NAME_LEN, MAX_SNAPSHOTS,
    MAX_SNAPSHOT_TAG, MAX_VCPUS, MEMORY_GRANULE, MSI_ITS, MSI_V2M, SLOT_VERSION, SLOT_VERSION_V1,
    SLOT_VERSION_V2, SLOT_VERSION_V3, SLOT_VERSION_V4, SLOT_VERSION_V5,
};
use crate::error::ConsistencyError;
use crate::policy::Policy;
use crate::uuid::Uuid;

/// A byte range of the system disk. An empty extent (`len == 0`, `start == 0`) means
/// "none".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, PartialOrd, Ord)]
pub struct Extent {
    /// Byte offset on the system disk.
    pub start: u64,
    /// Length in bytes.
    pub len: u64,
}

impl Extent {
    /// The empty extent.
    pub const EMPTY: Extent = Extent { start: 0, len: 0 };

    /// Whether this extent covers no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// One past the last byte, or `None` on overflow.
    pub fn end(&self) -> Option<u64> {
        self.start.checked_add(self.len)
    }

    fn encode(&self, w: &mut Writer) {
        w.u64(self.start);
        w.u64(self.len);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Extent, DecodeError> {
        let e = Extent {
            start: r.u64()?,
            len: r.u64()?,
        };
        if e.len == 0 && e.start != 0 {
            return Err(DecodeError::BadValue("empty extent start"));
        }
        Ok(e)
    }
}

impl fmt::Display for Extent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            f.write_str("none")
        } else {
            write!(f, "{:#x}+{:#x}", self.start, self.len)
        }
    }
}

/// Content stored in an extent: the extent, how many of its bytes hold content, and
/// the CRC32C of those bytes so a reader can refuse corrupt content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Blob {
    /// Where the content lives (its capacity).
    pub extent: Extent,
    /// Content length in bytes (`<= extent.len`); 0 when nothing was stored yet.
    pub size: u64,
    /// CRC32C of the first `size` bytes of the extent.
    pub crc32c: u32,
}

impl Blob {
    /// A blob with room for content but none stored yet.
    pub fn empty_in(extent: Extent) -> Blob {
        Blob {
            extent,
            size: 0,
            crc32c: 0,
        }
    }

    fn encode(&self, w: &mut Writer) {
        self.extent.encode(w);
        w.u64(self.size);
        w.u32(self.crc32c);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Blob, DecodeError> {
        Ok(Blob {
            extent: Extent::decode(r)?,
            size: r.u64()?,
            crc32c: r.u32()?,
        })
    }
}

/// The platform profile the hypervisor builds for the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceModel {
    /// Direct Linux boot, generated device tree, virtio-mmio devices.
    LinuxDt,
    /// UEFI firmware in emulated flash, ACPI tables, CRB TPM (the Windows path).
    UefiAcpi,
    /// [`DeviceModel::LinuxDt`] with the first guest disk as the namespace of an
    /// NVMe controller behind a PCI Express root complex instead of virtio-blk.
    LinuxDtNvme,
    /// [`DeviceModel::UefiAcpi`] plus a PCI Express root complex with the first
    /// guest disk as NVMe; read-only guest disks are install media (USB storage).
    Windows,
}

impl DeviceModel {
    /// The profile's name: `linux-dt`, `uefi-acpi`, `linux-dt-nvme` or `windows`.
    pub fn as_str(&self) -> &'static str {
        match self {
            DeviceModel::LinuxDt => "linux-dt",
            DeviceModel::UefiAcpi => "uefi-acpi",
            DeviceModel::LinuxDtNvme => "linux-dt-nvme",
            DeviceModel::Windows => "windows",
        }
    }

    /// Whether the model boots Linux directly (with a device tree).
    pub fn boots_linux(&self) -> bool {
        matches!(self, DeviceModel::LinuxDt | DeviceModel::LinuxDtNvme)
    }

    /// Whether the VM's first disk is an NVMe namespace (the rest stay virtio-blk).
    pub fn first_disk_on_nvme(&self) -> bool {
        matches!(self, DeviceModel::LinuxDtNvme | DeviceModel::Windows)
    }

    /// Parses a profile name.
    pub fn parse(s: &str) -> Option<DeviceModel> {
        match s {
            "linux-dt" => Some(DeviceModel::LinuxDt),
            "uefi-acpi" => Some(DeviceModel::UefiAcpi),
            "linux-dt-nvme" => Some(DeviceModel::LinuxDtNvme),
            "windows" => Some(DeviceModel::Windows),
            _ => None,
        }
    }

    fn tag(&self) -> u8 {
        match self {
            DeviceModel::LinuxDt => DEVICE_MODEL_LINUX_DT,
            DeviceModel::UefiAcpi => DEVICE_MODEL_UEFI_ACPI,
            DeviceModel::LinuxDtNvme => DEVICE_MODEL_LINUX_DT_NVME,
            DeviceModel::Windows => DEVICE_MODEL_WINDOWS,
        }
    }

    fn from_tag(tag: u8) -> Result<DeviceModel, DecodeError> {
        match tag {
            DEVICE_MODEL_LINUX_DT => Ok(DeviceModel::LinuxDt),
            DEVICE_MODEL_UEFI_ACPI => Ok(DeviceModel::UefiAcpi),
            DEVICE_MODEL_LINUX_DT_NVME => Ok(DeviceModel::LinuxDtNvme),
            DEVICE_MODEL_WINDOWS => Ok(DeviceModel::Windows),
            _ => Err(DecodeError::BadValue("device model")),
        }
    }
}

/// Where the PCI functions of a VM with a PCI Express root complex send their
/// MSIs (a VM without one ignores it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MsiController {
    /// The GICv2m MSI frame (SPIs).
    #[default]
    V2m,
    /// The GICv3 ITS (LPIs).
    Its,
}

impl MsiController {
    /// Its name: `v2m` or `its`.
    pub fn as_str(&self) -> &'static str {
        match self {
            MsiController::V2m => "v2m",
            MsiController::Its => "its",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<MsiController> {
        match s {
            "v2m" => Some(MsiController::V2m),
            "its" => Some(MsiController::Its),
            _ => None,
        }
    }

    fn tag(&self) -> u8 {
        match self {
            MsiController::V2m => MSI_V2M,
            MsiController::Its => MSI_ITS,
        }
    }

    fn from_tag(tag: u8) -> Result<MsiController, DecodeError> {
        match tag {
            MSI_V2M => Ok(MsiController::V2m),
            MSI_ITS => Ok(MsiController::Its),
            _ => Err(DecodeError::BadValue("MSI controller")),
        }
    }
}

/// The bus of the first disk of a VM whose device model puts it behind PCI
/// Express.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskBus {
    /// An NVMe namespace.
    #[default]
    Nvme,
    /// virtio-blk over the virtio PCI transport (`windows` VMs only).
    VirtioPci,
}

impl DiskBus {
    /// Its name: `nvme` or `virtio-pci`.
    pub fn as_str(&self) -> &'static str {
        match self {
            DiskBus::Nvme => "nvme",
            DiskBus::VirtioPci => "virtio-pci",
        }
    }

    /// Parses a name.
    pub fn parse(s: &str) -> Option<DiskBus> {
        match s {
            "nvme" => Some(DiskBus::Nvme),
            "virtio-pci" => Some(DiskBus::VirtioPci),
            _ => None,
        }
    }

    fn tag(&self) -> u8 {
        match self {
            DiskBus::Nvme => DISK_BUS_NVME,
            DiskBus::VirtioPci => DISK_BUS_VIRTIO_PCI,
        }
    }

    fn from_tag(tag: u8) -> Result<DiskBus, DecodeError> {
        match tag {
            DISK_BUS_NVME => Ok(DiskBus::Nvme),
            DISK_BUS_VIRTIO_PCI => Ok(DiskBus::VirtioPci),
            _ => Err(DecodeError::BadValue("disk bus")),
        }
    }
}

/// What the VM boots from; all images live in extents of the system disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootSource {
    /// Linux direct boot.
    Linux {
        /// The kernel `Image`.
        kernel: Blob,
        /// The initial ramdisk, if any.
        initrd: Option<Blob>,
        /// The kernel command line (stored inline in the record).
        cmdline: String,
    },
    /// UEFI firmware boot.
    Firmware {
        /// The firmware code image (flash bank 0, read-only to the guest).
        code: Blob,
        /// The firmware variable store (flash bank 1): a two-copy atomic store
        /// (`AbStore`) of the bank's image, which the hypervisor replaces at each
        /// commit point of the firmware; the record keeps no checksum of it.
        vars: Extent,
    },
}

/// One guest disk: an extent of the system disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestDisk {
    /// The disk's bytes on the system disk; the guest sees `extent.len` bytes.
    pub extent: Extent,
    /// Whether the guest sees the disk read-only.
    pub read_only: bool,
}

/// A snapshot of the VM kept on the system disk (`vm snapshot NAME TAG --disk`):
/// its saved image (the suspend format) and a copy of its guest disks. An entry
/// whose image has `size == 0` was being taken when the host stopped: it is
/// incomplete and is never rolled back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSnapshot {
    /// The tag (1..=[`MAX_SNAPSHOT_TAG`] of `A-Z a-z 0-9 . _ -`), unique in the VM.
    pub tag: String,
    /// The saved image (RAM, vCPUs, devices); the CRC is the image header's.
    pub image: Blob,
    /// The copy of the guest disks; the CRC is the copy's header's.
    pub disk: Blob,
}

impl DiskSnapshot {
    /// Whether `tag` is a valid snapshot tag.
    pub fn valid_tag(tag: &str) -> bool {
        (1..=MAX_SNAPSHOT_TAG).contains(&tag.len())
            && tag
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    }
}

/// Names which extent of a VM record a message or an iterator refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtentRole {
    /// The Linux kernel image.
    Kernel,
    /// The Linux initrd.
    Initrd,
    /// The firmware code image.
    FirmwareCode,
    /// The firmware variable store.
    FirmwareVars,
    /// Guest disk number `n`.
    Disk(u8),
    /// The TPM's NV area.
    TpmNv,
    /// The saved execution state.
    SavedState,
    /// Disk snapshot number `n`'s image or disk copy.
    Snapshot(u8),
}

impl fmt::Display for ExtentRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtentRole::Kernel => f.write_str("kernel"),
            ExtentRole::Initrd => f.write_str("initrd"),
            ExtentRole::FirmwareCode => f.write_str("firmware"),
            ExtentRole::FirmwareVars => f.write_str("firmware-vars"),
            ExtentRole::Disk(n) => write!(f, "disk{n}"),
            ExtentRole::TpmNv => f.write_str("tpm-nv"),
            ExtentRole::SavedState => f.write_str("saved-state"),
            ExtentRole::Snapshot(n) => write!(f, "snapshot{n}"),
        }
    }
}

/// The persistent record of one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRecord {
    /// Identity for the VM's whole life; never changes.
    pub uuid: Uuid,
    /// Human-readable name, unique within the registry.
    pub name: String,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest RAM in bytes (a multiple of 2 MiB).
    pub memory_bytes: u64,
    /// Platform profile.
    pub device_model: DeviceModel,
    /// What the VM boots from.
    pub boot: BootSource,
    /// Guest disks, in the order the guest sees them.
    pub disks: Vec<GuestDisk>,
    /// Reserved space for the TPM's NV image; empty means the VM has no TPM.
    pub tpm_nv: Extent,
    /// Lifecycle policy.
    pub policy: Policy,
    /// Saved execution state (RAM + devices); `size == 0` means none is stored.
    pub saved_state: Blob,
    /// How many times the hypervisor has started the VM (cold boot or resume);
    /// incremented with a registry commit before each start. 0 for a VM never
    /// started, and for records read from a version-1 slot.
    pub starts: u64,
    /// Disk snapshots, oldest first (none in records read from slots before
    /// version 4).
    pub snapshots: Vec<DiskSnapshot>,
    /// Seconds the VM's real-time clock runs ahead of the host's (negative:
    /// behind), as the guest last set it; 0 (the host's time) for a new VM and
    /// for records read from slots before version 5.
    pub rtc_offset: i64,
    /// Where its PCI functions' MSIs go (a VM with a root complex); the v2m frame
    /// for records read from slots before version 6.
    pub msi: MsiController,
    /// The bus of its first disk (`windows` VMs); NVMe for records read from
    /// slots before version 6.
    pub disk_bus: DiskBus,
}

impl VmRecord {
    /// Every non-empty extent the record owns, with its role.
    pub fn extents(&self) -> Vec<(ExtentRole, Extent)> {
        let mut out = Vec::new();
        match &self.boot {
            BootSource::Linux { kernel, initrd, .. } => {
                out.push((ExtentRole::Kernel, kernel.extent));
                if let Some(i) = initrd {
                    out.push((ExtentRole::Initrd, i.extent));
                }
            }
            BootSource::Firmware { code, vars } => {
                out.push((ExtentRole::FirmwareCode, code.extent));
                out.push((ExtentRole::FirmwareVars, *vars));
            }
        }
        for (i, d) in self.disks.iter().enumerate() {
            out.push((ExtentRole::Disk(i as u8), d.extent));
        }
        out.push((ExtentRole::TpmNv, self.tpm_nv));
        out.push((ExtentRole::SavedState, self.saved_state.extent));
        for (i, snap) in self.snapshots.iter().enumerate() {
            let role = ExtentRole::Snapshot(i as u8);
            out.push((role, snap.image.extent));
            out.push((role, snap.disk.extent));
        }
        out.retain(|(_, e)| !e.is_empty());
        out
    }

    /// The blob with the given role, if the record has one.
    pub fn blob(&self, role: ExtentRole) -> Option<&Blob> {
        match (role, &self.boot) {
            (ExtentRole::Kernel, BootSource::Linux { kernel, .. }) => Some(kernel),
            (ExtentRole::Initrd, BootSource::Linux { initrd, .. }) => initrd.as_ref(),
            (ExtentRole::FirmwareCode, BootSource::Firmware { code, .. }) => Some(code),
            (ExtentRole::SavedState, _) => Some(&self.saved_state),
            _ => None,
        }
    }

    /// Mutable access to the blob with the given role.
    pub fn blob_mut(&mut self, role: ExtentRole) -> Option<&mut Blob> {
        match (role, &mut self.boot) {
            (ExtentRole::Kernel, BootSource::Linux { kernel, .. }) => Some(kernel),
            (ExtentRole::Initrd, BootSource::Linux { initrd, .. }) => initrd.as_mut(),
            (ExtentRole::FirmwareCode, BootSource::Firmware { code, .. }) => Some(code),
            (ExtentRole::SavedState, _) => Some(&mut self.saved_state),
            _ => None,
        }
    }

    /// Checks everything about the record that does not depend on other records or
    /// on the disk geometry.
    pub fn check(&self) -> Result<(), ConsistencyError> {
        let vm = self.uuid;
        if vm.is_nil() {
            return Err(ConsistencyError::NilUuid);
        }
        if self.name.is_empty()
            || self.name.len() > MAX_NAME_LEN
            || self.name.chars().any(char::is_control)
        {
            return Err(ConsistencyError::BadName(vm));
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(ConsistencyError::BadVcpus(vm));
        }
        if self.memory_bytes == 0 || !self.memory_bytes.is_multiple_of(MEMORY_GRANULE) {
            return Err(ConsistencyError::BadMemory(vm));
        }
        if self.disks.len() > MAX_DISKS {
            return Err(ConsistencyError::TooManyDisks(vm));
        }
        let (required, boot_ok) = match &self.boot {
            BootSource::Linux {
                kernel, cmdline, ..
            } => {
                if cmdline.len() > MAX_CMDLINE_LEN {
                    return Err(ConsistencyError::CmdlineTooLong(vm));
                }
                (
                    (ExtentRole::Kernel, kernel.extent),
                    self.device_model.boots_linux(),
                )
            }
            BootSource::Firmware { code, .. } => (
                (ExtentRole::FirmwareCode, code.extent),
                !self.device_model.boots_linux(),
            ),
        };
        if !boot_ok {
            return Err(ConsistencyError::BootMismatch(vm));
        }
        if required.1.is_empty() {
            return Err(ConsistencyError::MissingExtent {
                vm,
                role: required.0,
            });
        }
        if let BootSource::Firmware { vars, .. } = &self.boot {
            if vars.is_empty() {
                return Err(ConsistencyError::MissingExtent {
                    vm,
                    role: ExtentRole::FirmwareVars,
                });
            }
        }
        if let BootSource::Linux {
            initrd: Some(i), ..
        } = &self.boot
        {
            if i.extent.is_empty() {
                return Err(ConsistencyError::MissingExtent {
                    vm,
                    role: ExtentRole::Initrd,
                });
            }
        }
        for (i, d) in self.disks.iter().enumerate() {
            if d.extent.is_empty() {
                return Err(ConsistencyError::MissingExtent {
                    vm,
                    role: ExtentRole::Disk(i as u8),
                });
            }
        }
        if self.snapshots.len() > MAX_SNAPSHOTS {
            return Err(ConsistencyError::BadSnapshot(vm));
        }
        for (i, snap) in self.snapshots.iter().enumerate() {
            if !DiskSnapshot::valid_tag(&snap.tag)
                || self.snapshots[..i].iter().any(|s| s.tag == snap.tag)
            {
                return Err(ConsistencyError::BadSnapshot(vm));
            }
            for b in [snap.image, snap.disk] {
                if b.size > b.extent.len {
                    return Err(ConsistencyError::BlobOverflow {
                        vm,
                        role: ExtentRole::Snapshot(i as u8),
                    });
                }
            }
        }
        for role in [
            ExtentRole::Kernel,
            ExtentRole::Initrd,
            ExtentRole::FirmwareCode,
            ExtentRole::SavedState,
        ] {
            if let Some(b) = self.blob(role) {
                if b.size > b.extent.len {
                    return Err(ConsistencyError::BlobOverflow { vm, role });
                }
            }
        }
        Ok(())
    }

    /// Appends the record's encoding (slot version [`SLOT_VERSION`]; see
    /// `docs/system-disk.md`).
    pub fn encode(&self, w: &mut Writer) {
        w.bytes(&self.uuid.0);
        w.str16(&self.name);
        w.u32(self.vcpus);
        w.u64(self.memory_bytes);
        w.u8(self.device_model.tag());
        match &self.boot {
            BootSource::Linux {
                kernel,
                initrd,
                cmdline,
            } => {
                w.u8(BOOT_LINUX);
                kernel.encode(w);
                match initrd {
                    Some(i) => {
                        w.u8(1);
                        i.encode(w);
                    }
                    None => w.u8(0),
                }
                w.str16(cmdline);
            }
            BootSource::Firmware { code, vars } => {
                w.u8(BOOT_FIRMWARE);
                code.encode(w);
                vars.encode(w);
            }
        }
        w.u8(self.disks.len() as u8);
        for d in &self.disks {
            d.extent.encode(w);
            w.u8(if d.read_only { DISK_FLAG_READ_ONLY } else { 0 });
        }
        self.tpm_nv.encode(w);
        self.policy.encode(w);
        self.saved_state.encode(w);
        w.u64(self.starts);
        w.u8(self.snapshots.len() as u8);
        for snap in &self.snapshots {
            w.str16(&snap.tag);
            snap.image.encode(w);
            snap.disk.encode(w);
        }
        w.u64(self.rtc_offset as u64);
        w.u8(self.msi.tag());
        w.u8(self.disk_bus.tag());
    }

    /// Decodes one record of the current slot version ([`SLOT_VERSION`]) occupying
    /// all of `bytes`. Semantic checks are separate ([`VmRecord::check`],
    /// [`crate::space::check_layout`]).
    pub fn decode(bytes: &[u8]) -> Result<VmRecord, DecodeError> {
        VmRecord::decode_version(bytes, SLOT_VERSION)
    }

    /// Decodes one record written under slot version `version`
    /// ([`SLOT_VERSION_V1`]: no start counter, read as 0; [`SLOT_VERSION_V2`] and
    /// [`SLOT_VERSION_V3`] encode records alike, without disk snapshots;
    /// [`SLOT_VERSION_V4`] adds them; [`SLOT_VERSION_V5`] adds the RTC offset, the
    /// snapshots' disk blobs being copy-on-write logs; [`SLOT_VERSION`] the MSI
    /// controller and the disk bus, read as their defaults before).
    pub fn decode_version(bytes: &[u8], version: u32) -> Result<VmRecord, DecodeError> {
        if ![
            SLOT_VERSION,
            SLOT_VERSION_V5,
            SLOT_VERSION_V4,
            SLOT_VERSION_V3,
            SLOT_VERSION_V2,
            SLOT_VERSION_V1,
        ]
        .contains(&version)
        {
            return Err(DecodeError::BadValue("slot version"));
        }
        let mut r = Reader::new(bytes);
        let uuid = Uuid(r.array()?);
        let name = r.str16(MAX_NAME_LEN, "name")?.to_string();
        let vcpus = r.u32()?;
        let memory_bytes = r.u64()?;
        let device_model = DeviceModel::from_tag(r.u8()?)?;
        let boot = match r.u8()? {
            BOOT_LINUX => {
                let kernel = Blob::decode(&mut r)?;
                let initrd = match r.u8()? {
                    0 => None,
                    1 => Some(Blob::decode(&mut r)?),
                    _ => return Err(DecodeError::BadValue("initrd presence")),
                };
                let cmdline = r.str16(MAX_CMDLINE_LEN, "cmdline")?.to_string();
                BootSource::Linux {
                    kernel,
                    initrd,
                    cmdline,
                }
            }
            BOOT_FIRMWARE => BootSource::Firmware {
                code: Blob::decode(&mut r)?,
                vars: Extent::decode(&mut r)?,
            },
            _ => return Err(DecodeError::BadValue("boot source")),
        };
        let disk_count = usize::from(r.u8()?);
        if disk_count > MAX_DISKS {
            return Err(DecodeError::TooLong("disk list"));
        }
        let mut disks = Vec::with_capacity(disk_count);
        for _ in 0..disk_count {
            let extent = Extent::decode(&mut r)?;
            let flags = r.u8()?;
            if flags & !DISK_FLAGS_KNOWN != 0 {
                return Err(DecodeError::BadValue("disk flags"));
            }
            disks.push(GuestDisk {
                extent,
                read_only: flags & DISK_FLAG_READ_ONLY != 0,
            });
        }
        let tpm_nv = Extent::decode(&mut r)?;
        let policy = Policy::decode(&mut r)?;
        let saved_state = Blob::decode(&mut r)?;
        let starts = if version == SLOT_VERSION_V1 {
            0
        } else {
            r.u64()?
        };
        let mut snapshots = Vec::new();
        if [SLOT_VERSION, SLOT_VERSION_V5, SLOT_VERSION_V4].contains(&version) {
            let n = usize::from(r.u8()?);
            if n > MAX_SNAPSHOTS {
                return Err(DecodeError::TooLong("snapshot list"));
            }
            for _ in 0..n {
                snapshots.push(DiskSnapshot {
                    tag: r.str16(MAX_SNAPSHOT_TAG, "snapshot tag")?.to_string(),
                    image: Blob::decode(&mut r)?,
                    disk: Blob::decode(&mut r)?,
                });
            }
        }
        let rtc_offset = if [SLOT_VERSION, SLOT_VERSION_V5].contains(&version) {
            r.u64()? as i64
        } else {
            0
        };
        let (msi, disk_bus) = if version == SLOT_VERSION {
            (
                MsiController::from_tag(r.u8()?)?,
                DiskBus::from_tag(r.u8()?)?,
            )
        } else {
            (MsiController::default(), DiskBus::default())
        };
        r.finish()?;
        Ok(VmRecord {
            uuid,
            name,
            vcpus,
            memory_bytes,
            device_model,
            boot,
            disks,
            tpm_nv,
            policy,
            saved_state,
            starts,
            snapshots,
            rtc_offset,
            msi,
            disk_bus,
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::defs::MAX_RECORD_ENCODED;
    use alloc::string::String;
    use alloc::vec;

    pub(crate) fn sample(seed: u8) -> VmRecord {
        let base = 0x10_0000 + u64::from(seed) * 0x100_0000;
        VmRecord {
            uuid: Uuid::from_random_bytes([seed; 16]),
            name: alloc::format!("vm{seed}"),
            vcpus: 2,
            memory_bytes: 512 << 20,
            device_model: DeviceModel::LinuxDt,
            boot: BootSource::Linux {
                kernel: Blob {
                    extent: Extent {
                        start: base,
                        len: 0x10000,
                    },
                    size: 1234,
                    crc32c: 0xabcd,
                },
                initrd: Some(Blob::empty_in(Extent {
                    start: base + 0x10000,
                    len: 0x1000,
                })),
                cmdline: String::from("console=ttyAMA0 root=/dev/vda"),
            },
            disks: vec![GuestDisk {
                extent: Extent {
                    start: base + 0x20000,
                    len: 0x8000,
                },
                read_only: true,
            }],
            tpm_nv: Extent {
                start: base + 0x30000,
                len: 0x1000,
            },
            policy: Policy::default(),
            saved_state: Blob::default(),
            starts: u64::from(seed) * 3,
            snapshots: Vec::new(),
            rtc_offset: 0,
            msi: MsiController::V2m,
            disk_bus: DiskBus::Nvme,
        }
    }

    fn encode(r: &VmRecord) -> Vec<u8> {
        let mut w = Writer::new();
        r.encode(&mut w);
        w.into_bytes()
    }

    #[test]
    fn linux_record_round_trips() {
        let r = sample(1);
        r.check().unwrap();
        assert_eq!(VmRecord::decode(&encode(&r)), Ok(r));
    }

    #[test]
    fn nvme_linux_record_round_trips_and_names_its_model() {
        let mut r = sample(3);
        r.device_model = DeviceModel::LinuxDtNvme;
        r.check().unwrap();
        assert_eq!(VmRecord::decode(&encode(&r)), Ok(r.clone()));
        assert_eq!(DeviceModel::parse("linux-dt-nvme"), Some(r.device_model));
        assert!(r.device_model.first_disk_on_nvme());
        assert!(!DeviceModel::LinuxDt.first_disk_on_nvme());
        // The model boots Linux only: a firmware boot source does not fit it.
        r.boot = BootSource::Firmware {
            code: Blob::empty_in(Extent {
                start: 0x20_0000,
                len: 0x4000,
            }),
            vars: Extent {
                start: 0x30_0000,
                len: 0x4000,
            },
        };
        assert!(matches!(r.check(), Err(ConsistencyError::BootMismatch(_))));
    }

    #[test]
    fn firmware_record_round_trips() {
        let mut r = sample(2);
        r.device_model = DeviceModel::UefiAcpi;
        r.boot = BootSource::Firmware {
            code: Blob {
                extent: Extent {
                    start: 0x20_0000,
                    len: 0x4000,
                },
                size: 0x4000,
                crc32c: 7,
            },
            vars: Extent {
                start: 0x30_0000,
                len: 0x4000,
            },
        };
        r.disks.clear();
        r.tpm_nv = Extent::EMPTY;
        r.check().unwrap();
        assert_eq!(VmRecord::decode(&encode(&r)), Ok(r.clone()));
        // The windows model boots the same firmware, its first disk on NVMe.
        r.device_model = DeviceModel::Windows;
        r.check().unwrap();
        let bytes = encode(&r);
        assert_eq!(VmRecord::decode(&bytes), Ok(r.clone()));
        assert_eq!(DeviceModel::Windows.tag(), 4);
        assert_eq!(DeviceModel::parse("windows"), Some(DeviceModel::Windows));
        assert_eq!(DeviceModel::Windows.as_str(), "windows");
        assert!(DeviceModel::Windows.first_disk_on_nvme());
        assert!(!DeviceModel::Windows.boots_linux());
        assert!(!DeviceModel::UefiAcpi.first_disk_on_nvme());
        // A Linux boot source does not fit it.
        r.boot = sample(1).boot;
        assert!(matches!(r.check(), Err(ConsistencyError::BootMismatch(_))));
    }

    #[test]
    fn largest_record_fits_the_bound() {
        let mut r = sample(3);
        r.name = "n".repeat(MAX_NAME_LEN);
        if let BootSource::Linux { cmdline, .. } = &mut r.boot {
            *cmdline = "c".repeat(MAX_CMDLINE_LEN);
        }
        r.disks = vec![r.disks[0]; MAX_DISKS];
        r.snapshots = (0..MAX_SNAPSHOTS)
            .map(|i| DiskSnapshot {
                tag: alloc::format!("{i}").repeat(MAX_SNAPSHOT_TAG),
                image: Blob::default(),
                disk: Blob::default(),
            })
            .collect();
        assert_eq!(encode(&r).len(), MAX_RECORD_ENCODED);
    }

    fn snap(tag: &str, at: u64) -> DiskSnapshot {
        DiskSnapshot {
            tag: tag.into(),
            image: Blob {
                extent: Extent {
                    start: at,
                    len: 0x2000,
                },
                size: 0x1800,
                crc32c: 9,
            },
            disk: Blob {
                extent: Extent {
                    start: at + 0x2000,
                    len: 0x1000,
                },
                size: 0x1000,
                crc32c: 3,
            },
        }
    }

    #[test]
    fn disk_snapshots_round_trip_and_are_checked() {
        let mut r = sample(8);
        let base = 0x10_0000 + 8 * 0x100_0000;
        r.snapshots = vec![
            snap("before-upgrade", base + 0x40000),
            snap("t.2_x", base + 0x50000),
        ];
        r.check().unwrap();
        let bytes = encode(&r);
        assert_eq!(VmRecord::decode(&bytes), Ok(r.clone()));
        // Their extents are the record's (space checks and scrubbing see them).
        let ext = r.extents();
        assert_eq!(
            ext.iter()
                .filter(|(role, _)| matches!(role, ExtentRole::Snapshot(_)))
                .count(),
            4
        );
        // Version 4 encodes records alike but without the RTC offset, MSI
        // controller and disk bus, the last 10 bytes (and its disk blobs are full
        // copies).
        assert_eq!(r.rtc_offset, 0);
        assert_eq!(
            VmRecord::decode_version(&bytes[..bytes.len() - 10], SLOT_VERSION_V4),
            Ok(r.clone())
        );
        // Version 3 has no snapshot list: the bytes are refused as one.
        assert_eq!(
            VmRecord::decode_version(&bytes, SLOT_VERSION_V3),
            Err(DecodeError::TrailingBytes)
        );
        for bad in ["", "a/b", "a b", &"x".repeat(MAX_SNAPSHOT_TAG + 1)] {
            let mut b = r.clone();
            b.snapshots[1].tag = bad.into();
            assert_eq!(
                b.check(),
                Err(ConsistencyError::BadSnapshot(b.uuid)),
                "{bad:?}"
            );
        }
        let mut dup = r.clone();
        dup.snapshots[1].tag = dup.snapshots[0].tag.clone();
        assert_eq!(dup.check(), Err(ConsistencyError::BadSnapshot(dup.uuid)));
        let mut over = r.clone();
        over.snapshots[0].disk.size = 0x1001;
        assert!(matches!(
            over.check(),
            Err(ConsistencyError::BlobOverflow {
                role: ExtentRole::Snapshot(0),
                ..
            })
        ));
        let mut many = r.clone();
        many.snapshots = (0..=MAX_SNAPSHOTS)
            .map(|i| snap(&alloc::format!("s{i}"), 0))
            .collect();
        assert_eq!(many.check(), Err(ConsistencyError::BadSnapshot(many.uuid)));
        // A count over the limit is refused by the decoder.
        let mut w = Writer::new();
        many.encode(&mut w);
        assert_eq!(
            VmRecord::decode(&w.into_bytes()),
            Err(DecodeError::TooLong("snapshot list"))
        );
    }

    #[test]
    fn rtc_offset_round_trips_and_version_4_reads_it_as_zero() {
        let mut r = sample(9);
        r.rtc_offset = -86_400 * 365;
        let v6 = encode(&r);
        assert_eq!(VmRecord::decode(&v6), Ok(r.clone()));
        let v5 = &v6[..v6.len() - 2];
        // Version 4: the same bytes without the trailing offset.
        let v4 = &v5[..v5.len() - 8];
        let old = VmRecord::decode_version(v4, SLOT_VERSION_V4).unwrap();
        assert_eq!(old.rtc_offset, 0);
        assert_eq!(
            VmRecord {
                rtc_offset: r.rtc_offset,
                ..old
            },
            r
        );
        assert_eq!(
            VmRecord::decode_version(v5, SLOT_VERSION_V4),
            Err(DecodeError::TrailingBytes)
        );
        assert!(VmRecord::decode(v4).is_err());
    }

    #[test]
    fn msi_and_disk_bus_round_trip_and_version_5_reads_the_defaults() {
        let mut r = sample(11);
        r.device_model = DeviceModel::Windows;
        r.msi = MsiController::Its;
        r.disk_bus = DiskBus::VirtioPci;
        let v6 = encode(&r);
        assert_eq!(VmRecord::decode(&v6), Ok(r.clone()));
        assert_eq!(v6[v6.len() - 2..], [MSI_ITS, DISK_BUS_VIRTIO_PCI]);
        // Version 5: the same bytes without them; the v2m frame and NVMe.
        let v5 = &v6[..v6.len() - 2];
        let old = VmRecord::decode_version(v5, SLOT_VERSION_V5).unwrap();
        assert_eq!((old.msi, old.disk_bus), (MsiController::V2m, DiskBus::Nvme));
        assert_eq!(
            VmRecord::decode_version(&v6, SLOT_VERSION_V5),
            Err(DecodeError::TrailingBytes)
        );
        assert!(
            VmRecord::decode(v5).is_err(),
            "a version 6 record needs both"
        );
        // Unknown tags are refused.
        for (at, why) in [(2, "MSI controller"), (1, "disk bus")] {
            let mut bad = v6.clone();
            let i = bad.len() - at;
            bad[i] = 7;
            assert_eq!(VmRecord::decode(&bad), Err(DecodeError::BadValue(why)));
        }
        for m in [MsiController::V2m, MsiController::Its] {
            assert_eq!(MsiController::parse(m.as_str()), Some(m));
        }
        for b in [DiskBus::Nvme, DiskBus::VirtioPci] {
            assert_eq!(DiskBus::parse(b.as_str()), Some(b));
        }
        assert_eq!(MsiController::parse("lpi"), None);
        assert_eq!(DiskBus::parse("virtio"), None);
    }

    #[test]
    fn start_counter_round_trips_and_version_1_reads_it_as_zero() {
        let mut r = sample(7);
        r.starts = u64::MAX - 1;
        let v6 = encode(&r);
        assert_eq!(VmRecord::decode(&v6), Ok(r.clone()));
        // Version 4: without the (zero) RTC offset and the (default) MSI
        // controller and disk bus.
        let v4 = v6[..v6.len() - 10].to_vec();
        // Versions 2 and 3: the same bytes without the (empty) snapshot list.
        let v2 = v4[..v4.len() - 1].to_vec();
        // A version-1 record is the same bytes without the trailing counter.
        let v1 = &v2[..v2.len() - 8];
        let old = VmRecord::decode_version(v1, SLOT_VERSION_V1).unwrap();
        assert_eq!(old.starts, 0);
        assert_eq!(
            VmRecord {
                starts: r.starts,
                ..old
            },
            r
        );
        // Each version refuses the other's length.
        assert_eq!(
            VmRecord::decode_version(&v2, SLOT_VERSION_V1),
            Err(DecodeError::TrailingBytes)
        );
        assert!(VmRecord::decode(v1).is_err());
        assert_eq!(
            VmRecord::decode_version(&v2, SLOT_VERSION_V2),
            Ok(r.clone())
        );
        assert_eq!(
            VmRecord::decode_version(&v2, SLOT_VERSION_V3),
            Ok(r.clone())
        );
        assert_eq!(
            VmRecord::decode_version(&v2, SLOT_VERSION + 1),
            Err(DecodeError::BadValue("slot version"))
        );
    }

    #[test]
    fn every_truncation_refused() {
        let bytes = encode(&sample(4));
        for cut in 0..bytes.len() {
            assert!(VmRecord::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(VmRecord::decode(&long), Err(DecodeError::TrailingBytes));
    }

    #[test]
    fn check_catches_bad_fields() {
        let good = sample(5);
        let mut r = good.clone();
        r.vcpus = 0;
        assert_eq!(r.check(), Err(ConsistencyError::BadVcpus(r.uuid)));
        let mut r = good.clone();
        r.memory_bytes = 4096;
        assert_eq!(r.check(), Err(ConsistencyError::BadMemory(r.uuid)));
        let mut r = good.clone();
        r.name.clear();
        assert_eq!(r.check(), Err(ConsistencyError::BadName(r.uuid)));
        let mut r = good.clone();
        r.uuid = Uuid::NIL;
        assert_eq!(r.check(), Err(ConsistencyError::NilUuid));
        let mut r = good.clone();
        r.device_model = DeviceModel::UefiAcpi;
        assert_eq!(r.check(), Err(ConsistencyError::BootMismatch(r.uuid)));
        let mut r = good.clone();
        if let BootSource::Linux { kernel, .. } = &mut r.boot {
            kernel.size = kernel.extent.len + 1;
        }
        assert_eq!(
            r.check(),
            Err(ConsistencyError::BlobOverflow {
                vm: r.uuid,
                role: ExtentRole::Kernel
            })
        );
        let mut r = good;
        r.disks[0].extent = Extent::EMPTY;
        assert_eq!(
            r.check(),
            Err(ConsistencyError::MissingExtent {
                vm: r.uuid,
                role: ExtentRole::Disk(0)
            })
        );
    }

    #[test]
    fn extents_lists_every_non_empty_extent() {
        let r = sample(6);
        let roles: Vec<_> = r.extents().into_iter().map(|(role, _)| role).collect();
        assert_eq!(
            roles,
            vec![
                ExtentRole::Kernel,
                ExtentRole::Initrd,
                ExtentRole::Disk(0),
                ExtentRole::TpmNv
            ]
        );
    }
}
