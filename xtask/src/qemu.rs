//! The QEMU command line for booting the hypervisor on `virt` at EL2, with the
//! VM's boot bundle as the hypervisor's `-initrd` and semihosting enabled so
//! the hypervisor's exit status becomes QEMU's exit status.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use crate::error::Error;
use crate::exec::can_run;
use crate::setup::QEMU_BIN;

/// Machine: `virt` entering the image at EL2 with a GICv3.
pub const MACHINE: &str = "virt,virtualization=on,gic-version=3";
/// CPU under TCG: everything, with QEMU's fast (non-architected) PAuth.
pub const TCG_CPU: &str = "max,pauth-impdef=on";
/// Semihosting, so the hypervisor can report its exit status.
pub const SEMIHOSTING: &str = "enable=on,target=native";
/// Host RAM given beyond the guest's, for the hypervisor and its page tables.
pub const HOST_MEM_EXTRA: u64 = 512 << 20;
/// Smallest host RAM.
pub const HOST_MEM_MIN: u64 = 1 << 30;
/// The hypervisor's exit status for a fatal error.
pub const EXIT_HYPERVISOR_FATAL: i32 = 70;

/// How QEMU executes guest code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Accel {
    /// Emulation (works everywhere).
    #[default]
    Tcg,
    /// KVM: needs an Arm64 host whose KVM offers nested virtualization.
    Kvm,
}

impl FromStr for Accel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "tcg" => Ok(Accel::Tcg),
            "kvm" => Ok(Accel::Kvm),
            other => Err(format!("--accel takes tcg or kvm, not `{other}`")),
        }
    }
}

/// One QEMU invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuConfig {
    /// Physical CPUs (the VM's vCPU count).
    pub smp: u32,
    /// The VM's RAM; the host gets [`host_mem_mib`] of it.
    pub guest_mem: u64,
    /// The hypervisor's flat image.
    pub kernel: PathBuf,
    /// The boot bundle.
    pub initrd: PathBuf,
    pub accel: Accel,
    /// `-icount shift=0`: one instruction per ns, deterministic instruction counts.
    pub icount: bool,
    /// Extra arguments appended verbatim (`--qemu-arg`).
    pub extra_args: Vec<String>,
}

/// Host RAM in MiB for a guest of `guest_mem` bytes: guest + 512 MiB, at least 1 GiB.
pub fn host_mem_mib(guest_mem: u64) -> u64 {
    guest_mem
        .saturating_add(HOST_MEM_EXTRA)
        .max(HOST_MEM_MIN)
        .div_ceil(1 << 20)
}

impl QemuConfig {
    /// Refuses combinations that cannot work, with a reason.
    pub fn check(&self) -> Result<(), Error> {
        if self.accel == Accel::Kvm {
            if self.icount {
                return Err(Error::Usage(
                    "--icount needs --accel tcg (KVM cannot count instructions)".into(),
                ));
            }
            if std::env::consts::ARCH != "aarch64" || !Path::new("/dev/kvm").exists() {
                return Err(Error::step(
                    "--accel kvm",
                    "needs /dev/kvm on an Arm64 host whose KVM offers nested virtualization (FEAT_NV2); this host has none — use --accel tcg",
                ));
            }
        }
        Ok(())
    }

    /// The arguments after the program name.
    pub fn args(&self) -> Vec<String> {
        let smp = self.smp.to_string();
        let mem = format!("{}M", host_mem_mib(self.guest_mem));
        let kernel = self.kernel.to_string_lossy();
        let initrd = self.initrd.to_string_lossy();
        let mut a: Vec<&str> = vec!["-M", MACHINE];
        match self.accel {
            Accel::Tcg => a.extend(["-cpu", TCG_CPU]),
            Accel::Kvm => a.extend(["-accel", "kvm", "-cpu", "host"]),
        }
        a.extend([
            "-smp",
            &smp,
            "-m",
            &mem,
            "-nographic",
            "-kernel",
            &kernel,
            "-initrd",
            &initrd,
        ]);
        a.extend(["-semihosting-config", SEMIHOSTING]);
        if self.icount {
            a.extend(["-icount", "shift=0"]);
        }
        a.extend(self.extra_args.iter().map(String::as_str));
        a.into_iter().map(String::from).collect()
    }

    /// The command to spawn. When util-linux `setpriv` is present QEMU runs under
    /// `setpriv --pdeathsig KILL`, so it dies with xtask even if xtask is killed.
    pub fn command(&self) -> Command {
        qemu_command(self.args())
    }

    /// The command as the user would type it (without the `setpriv` wrapper).
    pub fn display(&self) -> String {
        display_command(&self.args())
    }
}

/// QEMU with `args`, under `setpriv --pdeathsig KILL` when util-linux
/// `setpriv` is present (QEMU then dies with xtask even if xtask is killed).
pub fn qemu_command(args: Vec<String>) -> Command {
    let mut cmd = if can_run("setpriv", "--version") {
        let mut c = Command::new("setpriv");
        c.args(["--pdeathsig", "KILL", "--", QEMU_BIN]);
        c
    } else {
        Command::new(QEMU_BIN)
    };
    cmd.args(args);
    cmd
}

/// QEMU with `args` as the user would type it, quoted for a shell.
pub fn display_command(args: &[String]) -> String {
    let mut s = QEMU_BIN.to_string();
    for a in args {
        s.push(' ');
        if a.contains([' ', '\'', '"']) {
            s.push_str(&format!("'{}'", a.replace('\'', "'\\''")));
        } else {
            s.push_str(a);
        }
    }
    s
}

/// Machine for a guest started directly by QEMU, without the hypervisor: `virt`
/// entering the kernel at EL1 with a GICv3 (the baseline of `bench boot`).
pub const BARE_MACHINE: &str = "virt,gic-version=3";

/// A Linux kernel booted directly by QEMU (TCG, [`TCG_CPU`], no hypervisor,
/// QEMU's own device tree and devices): the baseline a hypervisor run of the
/// same kernel is measured against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BareLinuxConfig {
    /// vCPUs (QEMU's `-smp`).
    pub smp: u32,
    /// Guest RAM in bytes (all of QEMU's `-m`).
    pub mem: u64,
    /// The kernel `Image`.
    pub kernel: PathBuf,
    /// The initramfs.
    pub initrd: PathBuf,
    /// The kernel command line.
    pub append: String,
}

impl BareLinuxConfig {
    /// The arguments after the program name.
    pub fn args(&self) -> Vec<String> {
        let smp = self.smp.to_string();
        let mem = format!("{}M", self.mem.div_ceil(1 << 20));
        let kernel = self.kernel.to_string_lossy();
        let initrd = self.initrd.to_string_lossy();
        [
            "-M",
            BARE_MACHINE,
            "-cpu",
            TCG_CPU,
            "-smp",
            &smp,
            "-m",
            &mem,
            "-nographic",
            "-kernel",
            &kernel,
            "-initrd",
            &initrd,
            "-append",
            &self.append,
        ]
        .into_iter()
        .map(String::from)
        .collect()
    }

    /// The command to spawn (see [`qemu_command`]).
    pub fn command(&self) -> Command {
        qemu_command(self.args())
    }

    /// The command as the user would type it.
    pub fn display(&self) -> String {
        display_command(&self.args())
    }
}

/// What QEMU's exit code means for a hypervisor run.
pub fn describe_exit(code: Option<i32>) -> String {
    match code {
        Some(0) => "the VM powered off normally (status 0)".into(),
        Some(EXIT_HYPERVISOR_FATAL) => {
            format!("hypervisor fatal error (exit status {EXIT_HYPERVISOR_FATAL})")
        }
        Some(c) => format!("QEMU exited with status {c}"),
        None => "QEMU was killed by a signal".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> QemuConfig {
        QemuConfig {
            smp: 2,
            guest_mem: 512 << 20,
            kernel: "/t/rayos-el2.bin".into(),
            initrd: "/t/bundles/linux.cpio".into(),
            accel: Accel::Tcg,
            icount: false,
            extra_args: vec![],
        }
    }

    #[test]
    fn host_memory_is_guest_plus_512m_and_at_least_1g() {
        assert_eq!(host_mem_mib(64 << 20), 1024);
        assert_eq!(host_mem_mib(512 << 20), 1024);
        assert_eq!(host_mem_mib(1 << 30), 1536);
        assert_eq!(host_mem_mib((1 << 30) + 1), 1537);
    }

    #[test]
    fn command_line_matches_the_contract() {
        let line = cfg().display();
        assert_eq!(
            line,
            "qemu-system-aarch64 -M virt,virtualization=on,gic-version=3 -cpu max,pauth-impdef=on -smp 2 -m 1024M \
-nographic -kernel /t/rayos-el2.bin -initrd /t/bundles/linux.cpio -semihosting-config enable=on,target=native"
        );
        let mut c = cfg();
        c.icount = true;
        c.extra_args = vec!["-d".into(), "guest_errors".into()];
        assert!(c.display().ends_with("-icount shift=0 -d guest_errors"));
        c.accel = Accel::Kvm;
        c.icount = false;
        let a = c.args();
        assert!(
            a.windows(2).any(|w| w == ["-accel", "kvm"])
                && a.windows(2).any(|w| w == ["-cpu", "host"])
        );
        assert!(a.windows(2).any(|w| w == ["-M", MACHINE]));
    }

    #[test]
    fn bare_command_line_has_no_hypervisor_and_the_same_cpu() {
        let bare = BareLinuxConfig {
            smp: 2,
            mem: 512 << 20,
            kernel: "/c/Image".into(),
            initrd: "/c/initramfs.cpio".into(),
            append: "console=ttyAMA0 earlycon=pl011,0x09000000".into(),
        };
        assert_eq!(
            bare.display(),
            "qemu-system-aarch64 -M virt,gic-version=3 -cpu max,pauth-impdef=on -smp 2 -m 512M -nographic \
-kernel /c/Image -initrd /c/initramfs.cpio -append 'console=ttyAMA0 earlycon=pl011,0x09000000'"
        );
        assert!(!bare.args().iter().any(|a| a.contains("virtualization")));
    }

    #[test]
    fn kvm_combinations_are_checked() {
        let mut c = cfg();
        c.accel = Accel::Kvm;
        c.icount = true;
        assert!(matches!(c.check(), Err(Error::Usage(_))));
        assert!(cfg().check().is_ok());
        assert_eq!("kvm".parse(), Ok(Accel::Kvm));
        assert!("hvf".parse::<Accel>().is_err());
    }

    #[test]
    fn exit_codes_are_explained() {
        assert!(describe_exit(Some(70)).contains("fatal"));
        assert!(describe_exit(Some(3)).contains("status 3"));
        assert!(describe_exit(None).contains("signal"));
    }
}
