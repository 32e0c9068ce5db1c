//! `--accel kvm`: whether this host can run the hypervisor under KVM, which
//! needs KVM to give the VM its own EL2 (nested virtualization), and if not,
//! everything that is missing in one line.
//!
//! What is read:
//! - the host's architecture: an Arm64 KVM runs Arm64 VMs only;
//! - `/dev/kvm`: present and openable read-write (the `kvm` group);
//! - KVM's own answer: `KVM_CHECK_EXTENSION(KVM_CAP_ARM_EL2)` on `/dev/kvm`.
//!   Arm64 Linux (6.16 and later) answers non-zero only when nested
//!   virtualization is on *and* every CPU has FEAT_NV2 (its
//!   `ARM64_HAS_NESTED_VIRT` capability requires NV2); older kernels, x86 KVMs
//!   and CPUs without NV2 answer 0. This is the FEAT_NV2 check: Linux does not
//!   show ID_AA64MMFR2_EL1.NV / ID_AA64MMFR4_EL1.NV_frac to user space, but KVM
//!   reads them;
//! - to say *why* KVM answers 0: the kernel command line's
//!   `kvm-arm.mode=nested` (Linux `Documentation/admin-guide/kernel-parameters.txt`)
//!   or a `nested` module parameter, and the CPU's MIDR_EL1 (sysfs) to name the
//!   core.

use std::path::Path;

/// The kernel parameter that turns on Arm64 KVM's nested virtualization.
pub const ARM64_NESTED_PARAM: &str = "kvm-arm.mode=nested";
/// Module parameters that say whether a KVM allows nested virtualization.
const NESTED_PARAM_FILES: [&str; 3] = [
    "/sys/module/kvm/parameters/nested",
    "/sys/module/kvm_intel/parameters/nested",
    "/sys/module/kvm_amd/parameters/nested",
];
/// `KVM_CAP_ARM_EL2` in Linux's `include/uapi/linux/kvm.h`: KVM can give a VM
/// its own EL2 (nested virtualization on FEAT_NV2 hardware).
pub const KVM_CAP_ARM_EL2: u64 = 240;
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
    /// KVM's answer to `KVM_CAP_ARM_EL2`; `None` when `/dev/kvm` did not open.
    pub kvm_el2: Option<bool>,
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
            kvm_el2: kvm_ioctls::Kvm::new()
                .ok()
                .map(|kvm| kvm.check_extension_raw(KVM_CAP_ARM_EL2 as _) > 0),
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
        if self.arch == "aarch64" && self.kvm_el2 != Some(true) {
            let nested = self.nested_param
                || self
                    .cmdline
                    .split_whitespace()
                    .any(|p| p == ARM64_NESTED_PARAM);
            if !nested {
                m.push(format!(
                    "nested virtualization in the host kernel (boot it with {ARM64_NESTED_PARAM})"
                ));
            } else if self.kvm_el2 == Some(false) {
                m.push(format!(
                    "FEAT_NV2: nested mode is on but KVM offers no EL2 to VMs (KVM_CAP_ARM_EL2 is 0: the CPU, MIDR_EL1 {}, lacks FEAT_NV2, or the kernel is older than Linux 6.16)",
                    self.midr.as_deref().unwrap_or("unknown")
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
                "--accel kvm: KVM offers VMs their own EL2 (KVM_CAP_ARM_EL2: nested virtualization on FEAT_NV2; CPU MIDR_EL1 {})",
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
            kvm_el2: Some(true),
        }
    }

    #[test]
    fn an_arm64_host_with_nested_kvm_passes_and_names_its_cpu() {
        let v = arm64_ready().verdict().unwrap();
        assert!(v.contains("KVM offers VMs their own EL2"), "{v}");
        assert!(v.contains("0x00000000410fd4f1"), "{v}");
    }

    #[test]
    fn nested_mode_on_a_cpu_without_nv2_is_refused_naming_the_cpu() {
        let mut h = arm64_ready();
        h.kvm_el2 = Some(false);
        let e = h.verdict().unwrap_err();
        assert!(
            e.contains("lacks FEAT_NV2") && e.contains("MIDR_EL1 0x00000000410fd4f1"),
            "{e}"
        );
        assert!(!e.contains("boot it with"), "{e}");
        // Nested mode off: the boot parameter is what to fix first.
        h.cmdline = "root=/dev/sda".into();
        let e = h.verdict().unwrap_err();
        assert!(
            e.contains("boot it with kvm-arm.mode=nested") && !e.contains("FEAT_NV2:"),
            "{e}"
        );
        // KVM's own yes wins over what the command line seems to say
        // (a distribution may set the mode another way).
        h.kvm_el2 = Some(true);
        assert!(h.verdict().is_ok());
    }

    #[test]
    fn each_missing_piece_is_named_in_one_line() {
        let mut h = arm64_ready();
        h.kvm_el2 = Some(false);
        h.cmdline = "root=/dev/sda kvm-arm.mode=nvhe".into();
        let e = h.verdict().unwrap_err();
        assert!(e.contains("boot it with kvm-arm.mode=nested"), "{e}");
        assert!(!e.contains('\n'));
        h.dev_kvm_access = false;
        h.kvm_el2 = None;
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
        // A `nested` module parameter counts as nested mode too.
        let mut h = arm64_ready();
        h.cmdline.clear();
        h.nested_param = true;
        h.kvm_el2 = Some(false);
        let e = h.verdict().unwrap_err();
        assert!(
            e.contains("FEAT_NV2:") && !e.contains("boot it with"),
            "{e}"
        );
    }

    #[test]
    fn this_hosts_kvm_answers_the_el2_question_when_dev_kvm_opens() {
        // The probe asks the real /dev/kvm: an x86 KVM (or an Arm64 one
        // without nested NV2) answers no, and no answer means no access.
        let h = HostFacts::probe();
        assert_eq!(h.kvm_el2.is_some(), h.dev_kvm_access, "{h:?}");
        if h.arch != "aarch64" {
            assert_ne!(h.kvm_el2, Some(true), "{h:?}");
        }
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
            kvm_el2: Some(false),
        };
        let e = h.verdict().unwrap_err();
        assert_eq!(h.missing().len(), 1, "{e}");
        assert!(e.contains("an Arm64 host (this one is x86_64"), "{e}");
        assert!(e.ends_with("use --accel tcg"), "{e}");
    }
}
