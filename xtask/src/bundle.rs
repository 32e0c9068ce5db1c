//! The boot bundle: the VM definition handed to the hypervisor as its QEMU
//! `-initrd`, written with `vmspec::write_bundle` (so xtask and the hypervisor
//! share one format) to `target/bundles/<name>.cpio`.

use std::fs;
use std::path::{Path, PathBuf};

use crate::build::write_atomic;
use crate::error::Error;
use crate::layout::Layout;

/// One VM to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDef {
    /// VM name; also the bundle's file name, so `[A-Za-z0-9._-]` only.
    pub name: String,
    /// Virtual CPUs, 1..=[`vmspec::MAX_VCPUS`].
    pub vcpus: u32,
    /// Guest RAM in bytes (at least 1 MiB).
    pub mem: u64,
    /// Guest kernel command line.
    pub cmdline: String,
    /// Free-form label of the guest (`linux`, `selftest`, …).
    pub guest: String,
    /// The guest kernel (arm64 `Image` or a raw binary).
    pub kernel: PathBuf,
    /// Optional initrd.
    pub initrd: Option<PathBuf>,
    /// Size of a zero-filled RAM disk for the guest (virtio-blk 0), if any.
    pub disk: Option<u64>,
    /// Size of a zero-filled RAM disk the guest gets as an NVMe namespace (behind
    /// PCI Express), if any.
    pub nvme: Option<u64>,
    /// Size of a zero-filled RAM disk the guest gets as virtio-blk over virtio-PCI.
    pub virtio_pci: Option<u64>,
    /// An xHCI controller with a USB keyboard and tablet.
    pub usb: bool,
    /// A read-only image as USB mass storage on that controller (needs `usb`).
    pub usb_storage: Option<PathBuf>,
    /// A deliberate hypervisor fault (tests of the fatal path).
    pub fault: Option<vmspec::HypervisorFault>,
    /// Let the guest's PMU count at EL2 (only the exits benchmark, which measures
    /// the hypervisor's exit path).
    pub pmu_el2_counting: bool,
    /// A `uefi-acpi` VM's firmware (then `kernel` and `initrd` are unused).
    pub firmware: Option<FirmwareDef>,
}

/// The flash images of a `uefi-acpi` VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareDef {
    /// The code bank's image (e.g. AAVMF_CODE.fd).
    pub code: PathBuf,
    /// The variable store's initial image; an erased store when `None`.
    pub vars: Option<PathBuf>,
}

/// `image` without its trailing zero bytes: the hypervisor fills a bank past
/// the image with zeros, so a 64 MiB firmware file whose code is 2 MiB travels
/// as 2 MiB.
pub fn trim_zeros(image: &[u8]) -> &[u8] {
    let end = image.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    &image[..end]
}

/// Checks `def` and writes its bundle; returns the bundle's path.
pub fn write_bundle(layout: &Layout, def: &VmDef) -> Result<PathBuf, Error> {
    let step = format!("bundle {}", def.name);
    let name_ok = !def.name.is_empty()
        && !def.name.starts_with('.')
        && def
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !name_ok {
        return Err(Error::step(
            step,
            "VM names use only letters, digits, '.', '_' and '-'",
        ));
    }
    if !(1..=vmspec::MAX_VCPUS).contains(&def.vcpus) {
        return Err(Error::step(
            step,
            format!("vcpus must be 1..={}, not {}", vmspec::MAX_VCPUS, def.vcpus),
        ));
    }
    if def.mem < 1 << 20 {
        return Err(Error::step(
            step,
            format!("mem must be at least 1M, not {} bytes", def.mem),
        ));
    }
    if def.cmdline.contains('\n') {
        return Err(Error::step(step, "the command line must be one line"));
    }
    let read = |p: &PathBuf, what: &str| {
        fs::read(p).map_err(|e| {
            Error::step(
                &step,
                format!("cannot read the {what} {}: {e}", p.display()),
            )
        })
    };
    let (kernel, initrd, code, vars) = match &def.firmware {
        Some(f) => {
            let code = read(&f.code, "firmware code")?;
            if code.len() > vmspec::FLASH_BANK_SIZE || trim_zeros(&code).is_empty() {
                return Err(Error::step(
                    step,
                    format!(
                        "the firmware {} must be 1 byte to 64 MiB, not all zero",
                        f.code.display()
                    ),
                ));
            }
            let vars = f
                .vars
                .as_ref()
                .map(|p| read(p, "variable store"))
                .transpose()?;
            (Vec::new(), None, code, vars)
        }
        None => (
            read(&def.kernel, "kernel")?,
            def.initrd.as_ref().map(|p| read(p, "initrd")).transpose()?,
            Vec::new(),
            None,
        ),
    };
    let usb_storage = def
        .usb_storage
        .as_ref()
        .map(|p| read(p, "USB storage image"))
        .transpose()?;
    if let Some(image) = &usb_storage {
        if image.is_empty() || image.len() % 512 != 0 {
            return Err(Error::step(
                step,
                format!(
                    "the USB storage image {} must be a non-empty whole number of 512-byte sectors",
                    def.usb_storage
                        .as_deref()
                        .unwrap_or(Path::new(""))
                        .display()
                ),
            ));
        }
    }
    let bytes = vmspec::write_bundle(&vmspec::VmSpec {
        name: def.name.clone(),
        vcpus: def.vcpus,
        mem: def.mem,
        cmdline: def.cmdline.clone(),
        guest: def.guest.clone(),
        disk: def.disk,
        nvme: def.nvme,
        virtio_pci: def.virtio_pci,
        usb: def.usb,
        usb_storage: usb_storage.as_deref(),
        fault: def.fault,
        pmu_el2_counting: def.pmu_el2_counting,
        kernel: &kernel,
        initrd: initrd.as_deref(),
        firmware: def.firmware.as_ref().map(|_| vmspec::Firmware {
            code: trim_zeros(&code),
            vars: vars.as_deref(),
        }),
    });
    let path = layout.bundle(&def.name);
    write_atomic(&path, &bytes)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn firmware_bundle_carries_the_code_without_its_zero_tail() {
        let (layout, dir) = scratch();
        let code = dir.join("CODE.fd");
        let mut image = vec![0u8; 8 << 20];
        image[..4].copy_from_slice(b"\x1f\x20\x03\xd5");
        image[(1 << 20) + 7] = 0xff;
        fs::write(&code, &image).unwrap();
        let def = VmDef {
            name: "uefi".into(),
            vcpus: 1,
            mem: 256 << 20,
            cmdline: String::new(),
            guest: "uefi".into(),
            kernel: PathBuf::new(),
            initrd: None,
            disk: None,
            nvme: None,
            virtio_pci: None,
            usb: false,
            usb_storage: None,
            fault: None,
            pmu_el2_counting: false,
            firmware: Some(FirmwareDef { code, vars: None }),
        };
        let bytes = fs::read(write_bundle(&layout, &def).unwrap()).unwrap();
        let spec = vmspec::parse_bundle(&bytes).unwrap();
        let fw = spec.firmware.expect("a firmware bundle");
        assert_eq!(fw.code, &image[..(1 << 20) + 8]);
        assert_eq!(fw.vars, None);
        assert!(spec.kernel.is_empty());
        fs::write(dir.join("CODE.fd"), vec![0u8; 4096]).unwrap();
        assert!(write_bundle(&layout, &def).is_err());
    }

    fn scratch() -> (Layout, PathBuf) {
        let dir = std::env::temp_dir().join(format!("xtask-bundle-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        (Layout::with_dirs(dir.clone(), dir.join("target")), dir)
    }

    #[test]
    fn bundle_is_written_at_its_path_and_parses_back() {
        let (layout, dir) = scratch();
        let kernel = dir.join("k.bin");
        let initrd = dir.join("i.cpio");
        fs::write(&kernel, b"KERNEL-BYTES").unwrap();
        fs::write(&initrd, b"INITRD-BYTES").unwrap();
        let mut def = VmDef {
            name: "selftest".into(),
            vcpus: 2,
            mem: 64 << 20,
            cmdline: "console=ttyAMA0".into(),
            guest: "selftest".into(),
            kernel: kernel.clone(),
            initrd: Some(initrd),
            disk: Some(1 << 20),
            nvme: None,
            virtio_pci: None,
            usb: false,
            usb_storage: None,
            fault: None,
            pmu_el2_counting: false,
            firmware: None,
        };
        let path = write_bundle(&layout, &def).unwrap();
        assert_eq!(path, dir.join("target/bundles/selftest.cpio"));
        let bytes = fs::read(&path).unwrap();
        let spec = vmspec::parse_bundle(&bytes).unwrap();
        assert_eq!(
            (spec.name.as_str(), spec.vcpus, spec.mem),
            ("selftest", 2, 64 << 20)
        );
        assert_eq!(spec.cmdline, "console=ttyAMA0");
        assert_eq!(spec.kernel, b"KERNEL-BYTES");
        assert_eq!(spec.initrd, Some(&b"INITRD-BYTES"[..]));
        assert_eq!(spec.disk, Some(1 << 20));

        def.name = "../escape".into();
        assert!(write_bundle(&layout, &def)
            .unwrap_err()
            .to_string()
            .contains("VM names"));
        def.name = "ok".into();
        def.vcpus = 0;
        assert!(write_bundle(&layout, &def)
            .unwrap_err()
            .to_string()
            .contains("vcpus"));
        def.vcpus = 1;
        def.kernel = dir.join("missing");
        assert!(write_bundle(&layout, &def)
            .unwrap_err()
            .to_string()
            .contains("cannot read the kernel"));
        fs::remove_dir_all(dir).unwrap();
    }
}
