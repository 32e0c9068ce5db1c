//! `vmspec` owns the **boot bundle**: how a VM definition reaches the hypervisor
//! when it is booted directly (the way `-kernel` boots Linux), before any system
//! disk exists. The bundle travels as the hypervisor's initrd and is a plain
//! `newc` cpio archive (so `cpio -t` lists it) holding:
//!
//! - `vm.cfg` — `key = value` lines: `name`, `vcpus`, `mem` (bytes, or with a `K`,
//!   `M` or `G` suffix), `cmdline`, `guest` (a free-form label), `disk` (size of a
//!   zero-filled RAM disk given to the guest as its first virtio-blk device), `nvme`
//!   (size of a zero-filled RAM disk given to the guest as an NVMe namespace behind
//!   a PCI Express root complex),
//!   `hypervisor_fault` (`panic` or `data-abort`: the hypervisor deliberately dies
//!   right after reading the bundle, so tests can check its fatal path — a host
//!   decision, never reachable by a guest);
//!   `device_model` (`linux-dt`, the default: a kernel booted with a device tree;
//!   or `uefi-acpi`: UEFI firmware in flash, ACPI tables through fw_cfg);
//! - `kernel` — the guest kernel (arm64 `Image` or a raw binary; `linux-dt` only);
//! - `initrd` — optional (`linux-dt` only);
//! - `firmware` — the firmware's code-bank image (`uefi-acpi` only; trailing
//!   zero bytes of the bank may be left out, the hypervisor fills them);
//! - `vars` — optional initial variable store (`uefi-acpi` only; an erased
//!   store when absent).
//!
//! [`parse_bundle`] checks everything: a malformed archive or configuration is an
//! error naming what is wrong, never a panic. [`write_bundle`] is the writer `xtask`
//! uses, so both sides share one definition of the format.
#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod cpio;

use alloc::string::{String, ToString};
use alloc::vec::Vec;

/// A VM as the bundle defines it; file contents are borrowed from the bundle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec<'a> {
    pub name: String,
    pub vcpus: u32,
    pub mem: u64,
    pub cmdline: String,
    pub guest: String,
    /// Size of a zero-filled RAM disk for the guest, if any.
    pub disk: Option<u64>,
    /// Size of a zero-filled RAM disk the guest gets as an NVMe namespace behind a
    /// PCI Express root complex (`linux-dt` only), if any.
    pub nvme: Option<u64>,
    /// Size of a zero-filled RAM disk the guest gets as a virtio-blk device over
    /// the virtio PCI transport (behind the same root complex; `linux-dt` only).
    pub virtio_pci: Option<u64>,
    /// An xHCI controller with a USB HID keyboard and tablet behind the same root
    /// complex (`linux-dt` only; `usb = yes`).
    pub usb: bool,
    /// A read-only image the guest gets as USB mass storage on that controller
    /// (the bundle's `usb_storage` file; needs `usb`).
    pub usb_storage: Option<&'a [u8]>,
    /// A deliberate hypervisor fault to test the fatal path.
    pub fault: Option<HypervisorFault>,
    /// The guest's PMU may count events at EL2 (the exits benchmark only).
    pub pmu_el2_counting: bool,
    /// The kernel (`linux-dt`); empty for a firmware guest.
    pub kernel: &'a [u8],
    pub initrd: Option<&'a [u8]>,
    /// The firmware images of a `uefi-acpi` VM; `None` for `linux-dt`.
    pub firmware: Option<Firmware<'a>>,
}

/// What boots a `uefi-acpi` VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Firmware<'a> {
    /// The code bank's image (at most [`FLASH_BANK_SIZE`] bytes).
    pub code: &'a [u8],
    /// The variable store's initial image, if any.
    pub vars: Option<&'a [u8]>,
}

/// The device models a bundle can name (`device_model = ...`).
pub const DEVICE_MODEL_LINUX_DT: &str = "linux-dt";
pub const DEVICE_MODEL_UEFI_ACPI: &str = "uefi-acpi";

/// Largest firmware image a flash bank holds (QEMU `virt`'s 64 MiB banks).
pub const FLASH_BANK_SIZE: usize = 64 << 20;

/// Why a bundle was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SpecError {
    Cpio(cpio::CpioError),
    /// A required member is absent.
    Missing(&'static str),
    /// A `vm.cfg` line is malformed or a value out of range.
    BadConfig(String),
}

impl From<cpio::CpioError> for SpecError {
    fn from(e: cpio::CpioError) -> Self {
        SpecError::Cpio(e)
    }
}

/// Largest vCPU count a bundle may ask for.
pub const MAX_VCPUS: u32 = 64;

/// Parses a size such as `512M`, `1G` or `65536`.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1u64 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<u64>().ok()?.checked_mul(mult)
}

/// Parses a boot bundle.
pub fn parse_bundle(bytes: &[u8]) -> Result<VmSpec<'_>, SpecError> {
    let mut cfg = None;
    let mut kernel = None;
    let mut initrd = None;
    let mut code = None;
    let mut vars = None;
    let mut usb_storage = None;
    for entry in cpio::entries(bytes) {
        let e = entry?;
        match e.name {
            "vm.cfg" => cfg = Some(e.data),
            "kernel" => kernel = Some(e.data),
            "initrd" => initrd = Some(e.data),
            "firmware" => code = Some(e.data),
            "vars" => vars = Some(e.data),
            "usb_storage" => usb_storage = Some(e.data),
            _ => {}
        }
    }
    let mut uefi = false;
    let cfg = core::str::from_utf8(cfg.ok_or(SpecError::Missing("vm.cfg"))?)
        .map_err(|_| SpecError::BadConfig("vm.cfg is not UTF-8".to_string()))?;
    let mut spec = VmSpec {
        name: "vm0".to_string(),
        vcpus: 1,
        mem: 256 << 20,
        cmdline: String::new(),
        guest: String::new(),
        disk: None,
        nvme: None,
        virtio_pci: None,
        usb: false,
        usb_storage: None,
        fault: None,
        pmu_el2_counting: false,
        kernel: kernel.unwrap_or(&[]),
        initrd,
        firmware: None,
    };
    for (n, line) in cfg.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad =
            |what: &str| SpecError::BadConfig(alloc::format!("vm.cfg line {}: {what}", n + 1));
        let (k, v) = line
            .split_once('=')
            .ok_or_else(|| bad("expected key = value"))?;
        let v = v.trim();
        match k.trim() {
            "name" => spec.name = v.to_string(),
            "vcpus" => {
                spec.vcpus = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_VCPUS).contains(n))
                    .ok_or_else(|| bad("vcpus must be 1..=64"))?
            }
            "mem" => {
                spec.mem = parse_size(v)
                    .filter(|m| *m >= 1 << 20)
                    .ok_or_else(|| bad("mem must be a size of at least 1M"))?
            }
            "cmdline" => spec.cmdline = v.to_string(),
            "guest" => spec.guest = v.to_string(),
            "hypervisor_fault" => {
                spec.fault = Some(HypervisorFault::from_name(v).ok_or_else(|| {
                    bad("hypervisor_fault must be panic, data-abort, stack-overflow, write-text or execute-data")
                })?)
            }
            "pmu_el2_counting" => {
                spec.pmu_el2_counting = match v {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(bad("pmu_el2_counting must be yes or no")),
                }
            }
            "disk" => {
                spec.disk = Some(
                    parse_size(v)
                        .filter(|d| *d > 0 && d % 512 == 0)
                        .ok_or_else(|| bad("disk must be a non-zero multiple of 512 bytes"))?,
                )
            }
            "nvme" => {
                spec.nvme = Some(
                    parse_size(v)
                        .filter(|d| *d > 0 && d % 512 == 0)
                        .ok_or_else(|| bad("nvme must be a non-zero multiple of 512 bytes"))?,
                )
            }
            "virtio_pci" => {
                spec.virtio_pci = Some(
                    parse_size(v)
                        .filter(|d| *d > 0 && d % 512 == 0)
                        .ok_or_else(|| bad("virtio_pci must be a non-zero multiple of 512 bytes"))?,
                )
            }
            "usb" => {
                spec.usb = match v {
                    "yes" => true,
                    "no" => false,
                    _ => return Err(bad("usb must be yes or no")),
                }
            }
            "device_model" => {
                uefi = match v {
                    DEVICE_MODEL_LINUX_DT => false,
                    DEVICE_MODEL_UEFI_ACPI => true,
                    _ => return Err(bad("device_model must be linux-dt or uefi-acpi")),
                }
            }
            other => return Err(bad(&alloc::format!("unknown key '{other}'"))),
        }
    }
    if let Some(image) = usb_storage {
        if !spec.usb {
            return Err(SpecError::BadConfig(
                "usb_storage needs usb = yes".to_string(),
            ));
        }
        if image.is_empty() || image.len() % 512 != 0 {
            return Err(SpecError::BadConfig(
                "usb_storage must be a non-empty multiple of 512 bytes".to_string(),
            ));
        }
        spec.usb_storage = Some(image);
    }
    if uefi {
        if spec.nvme.is_some() || spec.virtio_pci.is_some() || spec.usb {
            return Err(SpecError::BadConfig(
                "nvme, virtio_pci and usb are for linux-dt VMs (a uefi-acpi VM has no PCI Express yet)"
                    .to_string(),
            ));
        }
        if kernel.is_some() || spec.initrd.is_some() {
            return Err(SpecError::BadConfig(
                "a uefi-acpi VM boots its firmware: no kernel or initrd".to_string(),
            ));
        }
        let code = code.ok_or(SpecError::Missing("firmware"))?;
        if code.is_empty() || code.len() > FLASH_BANK_SIZE {
            return Err(SpecError::BadConfig(
                "firmware must be 1 byte to 64 MiB".to_string(),
            ));
        }
        if vars.is_some_and(|v| v.len() > FLASH_BANK_SIZE) {
            return Err(SpecError::BadConfig(
                "vars must be at most 64 MiB".to_string(),
            ));
        }
        spec.firmware = Some(Firmware { code, vars });
        return Ok(spec);
    }
    if code.is_some() || vars.is_some() {
        return Err(SpecError::BadConfig(
            "firmware and vars need device_model = uefi-acpi".to_string(),
        ));
    }
    if kernel.is_none() {
        return Err(SpecError::Missing("kernel"));
    }
    if spec.kernel.is_empty() {
        return Err(SpecError::Missing("kernel (empty)"));
    }
    Ok(spec)
}

/// A fault the hypervisor inflicts on itself when the bundle asks (tests of its
/// fatal path).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypervisorFault {
    /// A Rust panic.
    Panic,
    /// A data abort at EL2 (a load from an unmapped address).
    DataAbort,
    /// Unbounded recursion on the hypervisor's stack (its guard page must catch it).
    StackOverflow,
    /// A store to the hypervisor's own code (W^X: its pages are read-only).
    WriteText,
    /// A branch into the hypervisor's writable data (W^X: execute-never).
    ExecuteData,
}

impl HypervisorFault {
    pub fn name(self) -> &'static str {
        match self {
            HypervisorFault::Panic => "panic",
            HypervisorFault::DataAbort => "data-abort",
            HypervisorFault::StackOverflow => "stack-overflow",
            HypervisorFault::WriteText => "write-text",
            HypervisorFault::ExecuteData => "execute-data",
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        [
            HypervisorFault::Panic,
            HypervisorFault::DataAbort,
            HypervisorFault::StackOverflow,
            HypervisorFault::WriteText,
            HypervisorFault::ExecuteData,
        ]
        .into_iter()
        .find(|f| f.name() == s)
    }
}

/// Writes `spec` as a boot bundle (used by `xtask`; `parse_bundle` reads it back).
pub fn write_bundle(spec: &VmSpec) -> Vec<u8> {
    let mut cfg = alloc::format!(
        "name = {}\nvcpus = {}\nmem = {}\ncmdline = {}\nguest = {}\n",
        spec.name,
        spec.vcpus,
        spec.mem,
        spec.cmdline,
        spec.guest
    );
    if let Some(d) = spec.disk {
        cfg.push_str(&alloc::format!("disk = {d}\n"));
    }
    if let Some(d) = spec.nvme {
        cfg.push_str(&alloc::format!("nvme = {d}\n"));
    }
    if let Some(d) = spec.virtio_pci {
        cfg.push_str(&alloc::format!("virtio_pci = {d}\n"));
    }
    if spec.usb {
        cfg.push_str("usb = yes\n");
    }
    if let Some(f) = spec.fault {
        cfg.push_str(&alloc::format!("hypervisor_fault = {}\n", f.name()));
    }
    if spec.pmu_el2_counting {
        cfg.push_str("pmu_el2_counting = yes\n");
    }
    if spec.firmware.is_some() {
        cfg.push_str(&alloc::format!("device_model = {DEVICE_MODEL_UEFI_ACPI}\n"));
    }
    let mut w = cpio::Writer::new();
    w.add("vm.cfg", cfg.as_bytes());
    match spec.firmware {
        Some(f) => {
            w.add("firmware", f.code);
            if let Some(v) = f.vars {
                w.add("vars", v);
            }
        }
        None => {
            w.add("kernel", spec.kernel);
            if let Some(i) = spec.initrd {
                w.add("initrd", i);
            }
            if let Some(image) = spec.usb_storage {
                w.add("usb_storage", image);
            }
        }
    }
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> VmSpec<'static> {
        VmSpec {
            name: "vm0".to_string(),
            vcpus: 2,
            mem: 512 << 20,
            cmdline: "console=ttyAMA0 quiet".to_string(),
            guest: "linux".to_string(),
            disk: None,
            nvme: None,
            virtio_pci: None,
            usb: false,
            usb_storage: None,
            fault: None,
            pmu_el2_counting: false,
            kernel: b"KERNEL",
            initrd: Some(b"INITRD"),
            firmware: None,
        }
    }

    #[test]
    fn firmware_round_trip_and_refusals() {
        let s = VmSpec {
            kernel: b"",
            initrd: None,
            firmware: Some(Firmware {
                code: b"CODE",
                vars: Some(b"VARS"),
            }),
            ..spec()
        };
        let bytes = write_bundle(&s);
        assert_eq!(parse_bundle(&bytes).unwrap(), s);
        let names: Vec<_> = cpio::entries(&bytes).map(|e| e.unwrap().name).collect();
        assert_eq!(names, ["vm.cfg", "firmware", "vars"]);
        let mk = |cfg: &str, members: &[(&str, &[u8])]| {
            let mut w = cpio::Writer::new();
            w.add("vm.cfg", cfg.as_bytes());
            for (n, d) in members {
                w.add(n, d);
            }
            w.finish()
        };
        let uefi = "device_model = uefi-acpi\n";
        assert_eq!(
            parse_bundle(&mk(uefi, &[])),
            Err(SpecError::Missing("firmware"))
        );
        assert!(matches!(
            parse_bundle(&mk(uefi, &[("firmware", b"C"), ("kernel", b"K")])),
            Err(SpecError::BadConfig(m)) if m.contains("no kernel")
        ));
        assert!(matches!(
            parse_bundle(&mk("", &[("firmware", b"C"), ("kernel", b"K")])),
            Err(SpecError::BadConfig(m)) if m.contains("uefi-acpi")
        ));
        assert!(matches!(
            parse_bundle(&mk("device_model = windows\n", &[("firmware", b"C")])),
            Err(SpecError::BadConfig(m)) if m.contains("device_model")
        ));
        let big = alloc::vec![0u8; FLASH_BANK_SIZE + 1];
        assert!(matches!(
            parse_bundle(&mk(uefi, &[("firmware", &big)])),
            Err(SpecError::BadConfig(m)) if m.contains("64 MiB")
        ));
        let only_code = mk(uefi, &[("firmware", b"C")]);
        let only_code = parse_bundle(&only_code).unwrap();
        assert_eq!(only_code.firmware.unwrap().vars, None);
    }

    #[test]
    fn round_trip() {
        const IMAGE: &[u8] = &[0x5a; 1024];
        let s = spec();
        assert_eq!(parse_bundle(&write_bundle(&s)).unwrap(), s);
        let s = VmSpec {
            disk: Some(1 << 20),
            nvme: Some(16 << 20),
            virtio_pci: Some(8 << 20),
            usb: true,
            usb_storage: Some(IMAGE),
            fault: Some(HypervisorFault::DataAbort),
            pmu_el2_counting: true,
            initrd: None,
            ..spec()
        };
        assert_eq!(parse_bundle(&write_bundle(&s)).unwrap(), s);
    }

    #[test]
    fn usb_storage_needs_usb_and_whole_sectors() {
        let mk = |cfg: &str, image: &[u8]| {
            let mut w = cpio::Writer::new();
            w.add("vm.cfg", cfg.as_bytes());
            w.add("kernel", b"k");
            w.add("usb_storage", image);
            w.finish()
        };
        for (cfg, image) in [
            ("", &[0u8; 512][..]),
            ("usb = no\n", &[0u8; 512][..]),
            ("usb = yes\n", &[0u8; 0][..]),
            ("usb = yes\n", &[0u8; 700][..]),
        ] {
            assert!(
                matches!(parse_bundle(&mk(cfg, image)), Err(SpecError::BadConfig(m)) if m.contains("usb_storage")),
                "{cfg:?} {}",
                image.len()
            );
        }
        let bundle = mk("usb = yes\n", &[7u8; 512]);
        let s = parse_bundle(&bundle).unwrap();
        assert!(s.usb);
        assert_eq!(s.usb_storage, Some(&[7u8; 512][..]));
        let mut w = cpio::Writer::new();
        w.add("vm.cfg", b"usb = maybe\n");
        w.add("kernel", b"k");
        assert!(
            matches!(parse_bundle(&w.finish()), Err(SpecError::BadConfig(m)) if m.contains("usb"))
        );
        let mut w = cpio::Writer::new();
        w.add("vm.cfg", b"usb = yes\ndevice_model = uefi-acpi\n");
        w.add("firmware", b"CODE");
        assert!(
            matches!(parse_bundle(&w.finish()), Err(SpecError::BadConfig(m)) if m.contains("usb"))
        );
    }

    #[test]
    fn bad_configs_are_named() {
        let mk = |cfg: &str| {
            let mut w = cpio::Writer::new();
            w.add("vm.cfg", cfg.as_bytes());
            w.add("kernel", b"k");
            w.finish()
        };
        assert!(
            matches!(parse_bundle(&mk("vcpus = 0\n")), Err(SpecError::BadConfig(m)) if m.contains("line 1"))
        );
        for bad in [
            "nvme = 0\n",
            "nvme = 1000\n",
            "nvme = big\n",
            "nvme = 1M\ndevice_model = uefi-acpi\n",
            "virtio_pci = 0\n",
            "virtio_pci = 1M\ndevice_model = uefi-acpi\n",
        ] {
            assert!(
                matches!(parse_bundle(&mk(bad)), Err(SpecError::BadConfig(m)) if m.contains("nvme") || m.contains("virtio_pci")),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_bundle(&mk("mem = lots\n")),
            Err(SpecError::BadConfig(_))
        ));
        assert!(
            matches!(parse_bundle(&mk("colour = red\n")), Err(SpecError::BadConfig(m)) if m.contains("colour"))
        );
        assert!(matches!(
            parse_bundle(&mk("just words\n")),
            Err(SpecError::BadConfig(_))
        ));
        assert!(
            matches!(parse_bundle(&mk("disk = 100\n")), Err(SpecError::BadConfig(m)) if m.contains("512"))
        );
        assert!(matches!(
            parse_bundle(&mk("hypervisor_fault = maybe\n")),
            Err(SpecError::BadConfig(_))
        ));
        assert!(
            matches!(parse_bundle(&mk("pmu_el2_counting = 1\n")), Err(SpecError::BadConfig(m)) if m.contains("yes or no"))
        );
        assert!(!parse_bundle(&mk("")).unwrap().pmu_el2_counting);
        assert!(
            parse_bundle(&mk("pmu_el2_counting = yes\n"))
                .unwrap()
                .pmu_el2_counting
        );
        assert_eq!(
            parse_bundle(&mk("mem = 64M\n# c\n\n")).unwrap().mem,
            64 << 20
        );
        let mut w = cpio::Writer::new();
        w.add("vm.cfg", b"");
        assert_eq!(parse_bundle(&w.finish()), Err(SpecError::Missing("kernel")));
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("256m"), Some(256 << 20));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("99999999999999G"), None);
        assert_eq!(parse_size(""), None);
    }
}
