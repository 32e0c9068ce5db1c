//! `--accel kvm`: whether this host can run the hypervisor under KVM, which
//! needs KVM to give the VM its own EL2 (nested virtualization), and if not,
//! everything that is missing in one line.
//!
//! What is read, all from files:
//! - the host's architecture: an Arm64 KVM runs Arm64 VMs only;
//! - `/dev/kvm`: present and openable read-write (the `kvm` group);
//! - nested virtualization in the host kernel: Arm64 Linux enables it with the
//!   kernel parameter `kvm-arm.mode=nested` (`/proc/cmdline`; Linux
//!   `Documentation/admin-guide/kernel-parameters.txt`), other KVMs with the
//!   module parameter `/sys/module/kvm*/parameters/nested`;
//! - the CPU's FEAT_NV2: Linux does not show it to user space (neither
//!   `/proc/cpuinfo` nor the ID registers it emulates for EL0 carry
//!   ID_AA64MMFR2_EL1.NV; sysfs has MIDR_EL1 and REVIDR_EL1 only), so it is
//!   not read here: KVM itself refuses a VM with EL2 on a CPU without it, and
//!   QEMU reports that refusal when it starts. The check names the CPU (MIDR)
//!   so the user can look it up.

use std::path::Path;

/// The kernel parameter that turns on Arm64 KVM's nested virtualization.
pub const ARM64_NESTED_PARAM: &str = "kvm-arm.mode=nested";
/// Module parameters that say whether a KVM allows nested virtualization.
const NESTED_PARAM_FILES: [&str; 3] = [
    "/sys/module/kvm/parameters/nested",
    "/sys/module/kvm_intel/parameters/nested",
    "/sys/module/kvm_amd/parameters/nested",
];
/// The boot CPU's MIDR_EL1 as Linux shows it.
const MIDR_FILE: &str = "/sys/devices/system/cpu/cpu0/regs/identification/midr_el1";

/// What the check looks at, gathered from the host ([`HostFacts::probe`]) or
/// made up by tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// `std::env::consts::ARCH`.
    pub arch: String,
    /// `/dev/kvm` exists.
    pub dev_kvm: bool,
    /// `/dev/kvm` opens read-write.
    pub dev_kvm_access: bool,
    /// The kernel command line.
    pub cmdline: String,
    /// A `nested` module parameter that is on.
    pub nested_param: bool,
    /// MIDR_EL1 of CPU 0, when Linux shows it.
    pub midr: Option<String>,
}

impl HostFacts {
    /// Reads the facts of this host.
    pub fn probe() -> HostFacts {
        let dev = Path::new("/dev/kvm");
        let on =
            |p: &str| std::fs::read_to_string(p).is_ok_and(|v| matches!(v.trim(), "Y" | "y" | "1"));
        HostFacts {
            arch: std::env::consts::ARCH.into(),
            dev_kvm: dev.exists(),
            dev_kvm_access: std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(dev)
                .is_ok(),
            cmdline: std::fs::read_to_string("/proc/cmdline").unwrap_or_default(),
            nested_param: NESTED_PARAM_FILES.iter().any(|p| on(p)),
            midr: std::fs::read_to_string(MIDR_FILE)
                .ok()
                .map(|s| s.trim().to_string()),
        }
    }

    /// What the host lacks for `--accel kvm`, each item a short phrase; empty
    /// when everything that can be read is there.
    pub fn missing(&self) -> Vec<String> {
        let mut m = Vec::new();
        if self.arch != "aarch64" {
            m.push(format!(
                "an Arm64 host (this one is {}: its KVM cannot run Arm64 VMs)",
                self.arch
            ));
        }
        if !self.dev_kvm {
            m.push("/dev/kvm (KVM is not enabled in the host kernel)".into());
        } else if !self.dev_kvm_access {
            m.push("read-write access to /dev/kvm (join the kvm group)".into());
        }
        if self.arch == "aarch64" {
            let nested = self.nested_param
                || self
                    .cmdline
                    .split_whitespace()
                    .any(|p| p == ARM64_NESTED_PARAM);
            if !nested {
                m.push(format!(
                    "nested virtualization in the host kernel (boot it with {ARM64_NESTED_PARAM})"
                ));
            }
        }
        m
    }

    /// `Ok` with a note on what could not be checked, or the one-line refusal.
    pub fn verdict(&self) -> Result<String, String> {
        let m = self.missing();
        if m.is_empty() {
            Ok(format!(
                "--accel kvm: /dev/kvm and nested KVM present; FEAT_NV2 is checked by KVM when QEMU starts (CPU MIDR_EL1 {})",
                self.midr.as_deref().unwrap_or("unknown")
            ))
        } else {
            Err(format!(
                "--accel kvm needs a host with KVM nested virtualization (FEAT_NV2); this host lacks: {} — use --accel tcg",
                m.join("; ")
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm64_ready() -> HostFacts {
        HostFacts {
            arch: "aarch64".into(),
            dev_kvm: true,
            dev_kvm_access: true,
            cmdline: "root=/dev/nvme0n1p2 kvm-arm.mode=nested quiet".into(),
            nested_param: false,
            midr: Some("0x00000000410fd4f1".into()),
        }
    }

    #[test]
    fn an_arm64_host_with_nested_kvm_passes_and_names_its_cpu() {
        let v = arm64_ready().verdict().unwrap();
        assert!(v.contains("FEAT_NV2 is checked by KVM"), "{v}");
        assert!(v.contains("0x00000000410fd4f1"), "{v}");
    }

    #[test]
    fn each_missing_piece_is_named_in_one_line() {
        let mut h = arm64_ready();
        h.cmdline = "root=/dev/sda kvm-arm.mode=nvhe".into();
        let e = h.verdict().unwrap_err();
        assert!(e.contains("boot it with kvm-arm.mode=nested"), "{e}");
        assert!(!e.contains('\n'));
        h.dev_kvm_access = false;
        let e = h.verdict().unwrap_err();
        assert!(
            e.contains("kvm group") && e.contains("kvm-arm.mode=nested"),
            "{e}"
        );
        h.dev_kvm = false;
        let e = h.verdict().unwrap_err();
        assert!(
            e.contains("/dev/kvm (KVM is not enabled") && !e.contains("kvm group"),
            "{e}"
        );
        let mut h = arm64_ready();
        h.cmdline.clear();
        h.nested_param = true;
        assert!(h.verdict().is_ok());
    }

    #[test]
    fn an_x86_host_is_refused_for_its_architecture_even_with_dev_kvm() {
        let h = HostFacts {
            arch: "x86_64".into(),
            dev_kvm: true,
            dev_kvm_access: true,
            cmdline: String::new(),
            nested_param: true,
            midr: None,
        };
        let e = h.verdict().unwrap_err();
        assert_eq!(h.missing().len(), 1, "{e}");
        assert!(e.contains("an Arm64 host (this one is x86_64"), "{e}");
        assert!(e.ends_with("use --accel tcg"), "{e}");
    }
}
