//! `vmspec` owns the **boot bundle**: how a VM definition reaches the hypervisor
//! when it is booted directly (the way `-kernel` boots Linux), before any system
//! disk exists. The bundle travels as the hypervisor's initrd and is a plain
//! `newc` cpio archive (so `cpio -t` lists it) holding:
//!
//! - `vm.cfg` — `key = value` lines: `name`, `vcpus`, `mem` (bytes, or with a `K`,
//!   `M` or `G` suffix), `cmdline`, `guest` (a free-form label), `disk` (size of a
//!   zero-filled RAM disk given to the guest as its first virtio-blk device),
//!   `hypervisor_fault` (`panic` or `data-abort`: the hypervisor deliberately dies
//!   right after reading the bundle, so tests can check its fatal path — a host
//!   decision, never reachable by a guest);
//! - `kernel` — the guest kernel (arm64 `Image` or a raw binary);
//! - `initrd` — optional.
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
    /// A deliberate hypervisor fault to test the fatal path.
    pub fault: Option<HypervisorFault>,
    /// The guest's PMU may count events at EL2 (the exits benchmark only).
    pub pmu_el2_counting: bool,
    pub kernel: &'a [u8],
    pub initrd: Option<&'a [u8]>,
}

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
    for entry in cpio::entries(bytes) {
        let e = entry?;
        match e.name {
            "vm.cfg" => cfg = Some(e.data),
            "kernel" => kernel = Some(e.data),
            "initrd" => initrd = Some(e.data),
            _ => {}
        }
    }
    let cfg = core::str::from_utf8(cfg.ok_or(SpecError::Missing("vm.cfg"))?)
        .map_err(|_| SpecError::BadConfig("vm.cfg is not UTF-8".to_string()))?;
    let mut spec = VmSpec {
        name: "vm0".to_string(),
        vcpus: 1,
        mem: 256 << 20,
        cmdline: String::new(),
        guest: String::new(),
        disk: None,
        fault: None,
        pmu_el2_counting: false,
        kernel: kernel.ok_or(SpecError::Missing("kernel"))?,
        initrd,
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
            other => return Err(bad(&alloc::format!("unknown key '{other}'"))),
        }
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
    if let Some(f) = spec.fault {
        cfg.push_str(&alloc::format!("hypervisor_fault = {}\n", f.name()));
    }
    if spec.pmu_el2_counting {
        cfg.push_str("pmu_el2_counting = yes\n");
    }
    let mut w = cpio::Writer::new();
    w.add("vm.cfg", cfg.as_bytes());
    w.add("kernel", spec.kernel);
    if let Some(i) = spec.initrd {
        w.add("initrd", i);
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
            fault: None,
            pmu_el2_counting: false,
            kernel: b"KERNEL",
            initrd: Some(b"INITRD"),
        }
    }

    #[test]
    fn round_trip() {
        let s = spec();
        assert_eq!(parse_bundle(&write_bundle(&s)).unwrap(), s);
        let s = VmSpec {
            disk: Some(1 << 20),
            fault: Some(HypervisorFault::DataAbort),
            pmu_el2_counting: true,
            initrd: None,
            ..spec()
        };
        assert_eq!(parse_bundle(&write_bundle(&s)).unwrap(), s);
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
