//! The QEMU command line for booting the hypervisor on `virt` at EL2, with the
//! VM's boot bundle as the hypervisor's `-initrd` and semihosting enabled so
//! the hypervisor's exit status becomes QEMU's exit status.
//!
//! Every QEMU command line xtask builds is a [`QemuLine`], and a `QemuLine` can
//! only start from [`QemuLine::new`]: `-nodefaults` first, then each device
//! named. Without `-nodefaults`, `virt` adds a network card whose option ROM
//! (`efi-virtio.rom`) comes from the optional `ipxe-qemu` package, and QEMU
//! refuses to start on a host installed with `--no-install-recommends`.

use std::path::PathBuf;
use std::process::Command;
use std::str::FromStr;

use crate::error::Error;
use crate::exec::can_run;
use crate::setup::QEMU_BIN;

/// Machine: `virt` entering the image at EL2 with a GICv3.
pub const MACHINE: &str = "virt,virtualization=on,gic-version=3";
/// CPU under TCG: everything, with QEMU's fast (non-architected) PAuth.
pub const TCG_CPU: &str = "max,pauth-impdef=on";
/// Environment variable choosing TCG's threading for every QEMU xtask starts:
/// `single` runs all of a machine's vCPUs on one host thread, in turns (a vCPU
/// gives way when it waits: WFI, WFE, YIELD); anything else, or unset, one host
/// thread per vCPU (QEMU's default). The test pool sets `single` for its jobs:
/// it runs one machine per host core, and a machine with more vCPU threads than
/// its share of cores loses its time to lock holders the host has descheduled
/// (a guest spinning on a lock, an IPI waiting for a vCPU that is not running),
/// which grows far faster than the load does.
pub const TCG_THREAD_ENV: &str = "RAYOS_TCG_THREAD";

/// The `-accel` argument under TCG: one thread when [`TCG_THREAD_ENV`] says so.
fn tcg_accel() -> Option<&'static str> {
    tcg_accel_for(std::env::var(TCG_THREAD_ENV).ok().as_deref())
}

/// The `-accel` argument under TCG for [`TCG_THREAD_ENV`]'s value `v`.
fn tcg_accel_for(v: Option<&str>) -> Option<&'static str> {
    (v == Some("single")).then_some("tcg,thread=single")
}

/// Semihosting, so the hypervisor can report its exit status.
pub const SEMIHOSTING: &str = "enable=on,target=native";
/// Host RAM given beyond the guest's, for the hypervisor and its page tables.
pub const HOST_MEM_EXTRA: u64 = 512 << 20;
/// Smallest host RAM.
pub const HOST_MEM_MIN: u64 = 1 << 30;
/// The hypervisor's exit status for a fatal error.
pub const EXIT_HYPERVISOR_FATAL: i32 = 70;
/// QEMU's option that drops every device the machine would add by itself.
pub const NODEFAULTS: &str = "-nodefaults";
/// The physical display's resolution unless `--display` says otherwise.
pub const DEFAULT_DISPLAY: (u32, u32) = (1280, 800);
/// QEMU's display back end for `--gui` (a window).
pub const GUI_DISPLAY: &str = "gtk";

/// The console chardev: stdio, multiplexed between the first UART and QEMU's
/// monitor (Ctrl-A C switches, Ctrl-A X quits), Ctrl-C passed to the guest —
/// what `-nographic` gives without `-nodefaults`.
pub const CONSOLE_CHARDEV: &str = "stdio,id=console,mux=on,signal=off";

/// A QEMU command line (the arguments after the program name) that starts with
/// [`NODEFAULTS`] and names each device it wants: the console on stdio, and
/// whatever its builder adds. The only way to spawn QEMU from xtask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuLine(Vec<String>);

impl QemuLine {
    /// `-nodefaults`, `machine`, no display, and the console: the first UART
    /// and the monitor on stdio ([`CONSOLE_CHARDEV`]).
    pub fn new(machine: &str) -> Self {
        let mut line = QemuLine(vec![NODEFAULTS.into()]);
        line.push(["-M", machine, "-display", "none"]);
        line.push(["-chardev", CONSOLE_CHARDEV]);
        line.push(["-serial", "chardev:console"]);
        line.push(["-mon", "chardev=console,mode=readline"]);
        line
    }

    /// Appends `args` verbatim.
    pub fn push<S: Into<String>>(&mut self, args: impl IntoIterator<Item = S>) -> &mut Self {
        self.0.extend(args.into_iter().map(Into::into));
        self
    }

    /// The line with each argument after [`NODEFAULTS`] passed through `f`
    /// (e.g. to add an option to a drive).
    pub fn map_args(self, mut f: impl FnMut(String) -> String) -> Self {
        let mut it = self.0.into_iter();
        let first = it.next();
        QemuLine(first.into_iter().chain(it.map(&mut f)).collect())
    }

    /// The arguments after the program name.
    pub fn args(&self) -> &[String] {
        &self.0
    }

    /// The command to spawn. When util-linux `setpriv` is present QEMU runs under
    /// `setpriv --pdeathsig KILL`, so it dies with xtask even if xtask is killed.
    pub fn command(&self) -> Command {
        let mut cmd = if can_run("setpriv", "--version") {
            let mut c = Command::new("setpriv");
            c.args(["--pdeathsig", "KILL", "--", QEMU_BIN]);
            c
        } else {
            Command::new(QEMU_BIN)
        };
        cmd.args(&self.0);
        cmd
    }

    /// The command as the user would type it, quoted for a shell.
    pub fn display(&self) -> String {
        let mut s = QEMU_BIN.to_string();
        for a in &self.0 {
            s.push(' ');
            if a.contains([' ', '\'', '"']) {
                s.push_str(&format!("'{}'", a.replace('\'', "'\\''")));
            } else {
                s.push_str(a);
            }
        }
        s
    }
}

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

/// Whether QEMU lists the [`GUI_DISPLAY`] back end (Debian ships it in
/// `qemu-system-gui`; without it QEMU names the missing module instead).
pub fn gui_available() -> bool {
    Command::new(QEMU_BIN)
        .args(["-display", "help"])
        .output()
        .is_ok_and(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == GUI_DISPLAY)
        })
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
    /// The physical display: a `virtio-gpu-device` of this resolution.
    pub display: (u32, u32),
    /// Show the display in a window (`--gui`) instead of no window at all.
    pub gui: bool,
    /// Serve QMP on this Unix socket (`--qmp`, or a script's `screendump`).
    pub qmp: Option<PathBuf>,
    /// Boot through AAVMF and `rayos-el2.efi` instead of `-kernel` (`--boot efi`).
    pub efi: Option<crate::efi::EfiMedia>,
}

/// Where `--authority` has QEMU's loader put the authority partition's image: 16
/// MiB below the top of the host's RAM ([`host_mem_mib`] of a guest of
/// `guest_mem` bytes, from the `virt` board's RAM base), clear of the hypervisor
/// image, the device tree and the boot bundle QEMU places near the bottom.
pub fn authority_image_base(guest_mem: u64) -> u64 {
    VIRT_RAM_BASE + (host_mem_mib(guest_mem) << 20) - (16 << 20)
}

/// The `virt` board's RAM base.
const VIRT_RAM_BASE: u64 = 0x4000_0000;

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
        if self.gui && !gui_available() {
            return Err(Error::step(
                "--gui",
                format!("this QEMU has no `{GUI_DISPLAY}` display back end (Debian: apt-get install qemu-system-gui)"),
            ));
        }
        if self.accel == Accel::Kvm {
            if self.icount {
                return Err(Error::Usage(
                    "--icount needs --accel tcg (KVM cannot count instructions)".into(),
                ));
            }
            // What this host lacks, in one line (kvm.rs).
            let note = crate::kvm::HostFacts::probe()
                .verdict()
                .map_err(|why| Error::step("host check", why))?;
            eprintln!("xtask: {note}");
        }
        Ok(())
    }

    /// The command line booting the bundle: [`QemuConfig::line_without_bundle`]
    /// with the bundle as the hypervisor's `-initrd`.
    pub fn line(&self) -> QemuLine {
        let mut line = self.line_without_bundle();
        // A `--boot efi` run carries the bundle on its ESP (efi.rs).
        if self.efi.is_none() {
            line.push(["-initrd".into(), self.initrd.to_string_lossy().into_owned()]);
        }
        line
    }

    /// The command line without a boot bundle: machine, CPU, memory, the
    /// hypervisor as `-kernel`, semihosting, then `--qemu-arg`s.
    pub fn line_without_bundle(&self) -> QemuLine {
        let mut line = match &self.efi {
            Some(_) => QemuLine::new(&crate::efi::machine()),
            None => QemuLine::new(MACHINE),
        };
        match self.accel {
            Accel::Tcg => {
                line.push(["-cpu", TCG_CPU]);
                if let Some(accel) = tcg_accel() {
                    line.push(["-accel", accel]);
                }
            }
            Accel::Kvm => {
                line.push(["-accel", "kvm", "-cpu", "host"]);
            }
        }
        line.push(["-smp".into(), self.smp.to_string()]);
        line.push(["-m".into(), format!("{}M", host_mem_mib(self.guest_mem))]);
        match &self.efi {
            Some(media) => line.push(crate::efi::qemu_args(media)),
            None => line.push(["-kernel".into(), self.kernel.to_string_lossy().into_owned()]),
        };
        line.push(["-semihosting-config", SEMIHOSTING]);
        let (w, h) = self.display;
        line.push([
            "-device".into(),
            format!("virtio-gpu-device,xres={w},yres={h}"),
        ]);
        // The physical keyboard and tablet (QMP `input-send-event`, a GUI window):
        // the hypervisor routes their events to the presented VM.
        line.push(["-device", "virtio-keyboard-device"]);
        line.push(["-device", "virtio-tablet-device"]);
        if self.gui {
            // The last `-display` wins over `QemuLine::new`'s `none`.
            line.push(["-display", GUI_DISPLAY]);
        }
        if let Some(socket) = &self.qmp {
            line.push(["-qmp".into(), crate::qmp::qemu_arg(socket)]);
        }
        if self.icount {
            line.push(["-icount", "shift=0"]);
        }
        line.push(self.extra_args.iter().cloned());
        line
    }

    /// The command to spawn (see [`QemuLine::command`]).
    pub fn command(&self) -> Command {
        self.line().command()
    }

    /// The command as the user would type it.
    pub fn display(&self) -> String {
        self.line().display()
    }
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
    /// The command line: [`BARE_MACHINE`], [`TCG_CPU`], the kernel, its
    /// initramfs and command line; the console is the first UART.
    pub fn line(&self) -> QemuLine {
        let mut line = QemuLine::new(BARE_MACHINE);
        line.push(["-cpu", TCG_CPU]);
        line.push(["-smp".into(), self.smp.to_string()]);
        line.push(["-m".into(), format!("{}M", self.mem.div_ceil(1 << 20))]);
        line.push(["-kernel".into(), self.kernel.to_string_lossy().into_owned()]);
        line.push(["-initrd".into(), self.initrd.to_string_lossy().into_owned()]);
        line.push(["-append".into(), self.append.clone()]);
        line
    }

    /// The command to spawn (see [`QemuLine::command`]).
    pub fn command(&self) -> Command {
        self.line().command()
    }

    /// The command as the user would type it.
    pub fn display(&self) -> String {
        self.line().display()
    }
}

/// Why QEMU could add a device of its own to `line` (a reason), or `None`:
/// the line must start with [`NODEFAULTS`], give the console a UART
/// explicitly, and ask for no network.
pub fn default_devices(line: &QemuLine) -> Option<String> {
    let a = line.args();
    if a.first().map(String::as_str) != Some(NODEFAULTS) {
        return Some(format!("does not start with {NODEFAULTS}"));
    }
    if !a
        .windows(2)
        .any(|w| w[0] == "-serial" && w[1].starts_with("chardev:"))
    {
        return Some("has no explicit -serial".into());
    }
    if let Some(net) = a
        .iter()
        .find(|x| ["-net", "-nic", "-netdev"].contains(&x.as_str()))
    {
        return Some(format!("asks for a network ({net})"));
    }
    None
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
    use std::path::Path;

    fn cfg() -> QemuConfig {
        QemuConfig {
            smp: 2,
            guest_mem: 512 << 20,
            kernel: "/t/rayos-el2.bin".into(),
            initrd: "/t/bundles/linux.cpio".into(),
            accel: Accel::Tcg,
            icount: false,
            extra_args: vec![],
            display: DEFAULT_DISPLAY,
            gui: false,
            qmp: None,
            efi: None,
        }
    }

    #[test]
    fn the_display_is_a_virtio_gpu_headless_unless_gui_and_qmp_on_request() {
        let a = cfg().line().args().join(" ");
        assert!(a.contains("-display none"), "{a}");
        assert!(
            a.contains("-device virtio-gpu-device,xres=1280,yres=800"),
            "{a}"
        );
        assert!(!a.contains("-qmp") && !a.contains(GUI_DISPLAY), "{a}");
        let mut c = cfg();
        c.display = (800, 600);
        c.gui = true;
        c.qmp = Some("/t/q.sock".into());
        let args = c.line().args().to_vec();
        let a = args.join(" ");
        assert!(
            a.contains("-device virtio-gpu-device,xres=800,yres=600"),
            "{a}"
        );
        assert!(a.contains("-qmp unix:/t/q.sock,server=on,wait=off"), "{a}");
        let last_display = args.iter().rposition(|x| x == "-display").unwrap();
        assert_eq!(args[last_display + 1], GUI_DISPLAY);
    }

    #[test]
    fn host_memory_is_guest_plus_512m_and_at_least_1g() {
        assert_eq!(host_mem_mib(64 << 20), 1024);
        assert_eq!(host_mem_mib(512 << 20), 1024);
        assert_eq!(host_mem_mib(1 << 30), 1536);
        assert_eq!(host_mem_mib((1 << 30) + 1), 1537);
    }

    /// The console part every line has after the machine.
    const CONSOLE: &str =
        "-display none -chardev stdio,id=console,mux=on,signal=off -serial chardev:console \
-mon chardev=console,mode=readline";

    #[test]
    fn tcg_runs_on_one_thread_only_when_asked() {
        assert_eq!(tcg_accel_for(Some("single")), Some("tcg,thread=single"));
        for v in [None, Some(""), Some("multi"), Some("SINGLE")] {
            assert_eq!(tcg_accel_for(v), None, "{v:?}");
        }
    }

    #[test]
    fn command_line_matches_the_contract() {
        let line = cfg().display();
        // The test pool runs its jobs with one TCG thread per machine.
        let accel = tcg_accel().map_or(String::new(), |a| format!(" -accel {a}"));
        assert_eq!(
            line,
            format!(
                "qemu-system-aarch64 -nodefaults -M virt,virtualization=on,gic-version=3 {CONSOLE} \
-cpu max,pauth-impdef=on{accel} -smp 2 -m 1024M -kernel /t/rayos-el2.bin -semihosting-config enable=on,target=native \
-device virtio-gpu-device,xres=1280,yres=800 -device virtio-keyboard-device -device virtio-tablet-device \
-initrd /t/bundles/linux.cpio"
            )
        );
        let mut c = cfg();
        c.icount = true;
        c.extra_args = vec!["-d".into(), "guest_errors".into()];
        assert!(c
            .line_without_bundle()
            .display()
            .ends_with("-icount shift=0 -d guest_errors"));
        c.accel = Accel::Kvm;
        c.icount = false;
        let line = c.line();
        let a = line.args();
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
            format!(
                "qemu-system-aarch64 -nodefaults -M virt,gic-version=3 {CONSOLE} -cpu max,pauth-impdef=on -smp 2 -m 512M \
-kernel /c/Image -initrd /c/initramfs.cpio -append 'console=ttyAMA0 earlycon=pl011,0x09000000'"
            )
        );
        assert!(!bare
            .line()
            .args()
            .iter()
            .any(|a| a.contains("virtualization")));
    }

    #[test]
    fn a_line_keeps_nodefaults_first_whatever_is_mapped() {
        let line = QemuLine::new(MACHINE).map_args(|_| "-x".into());
        assert_eq!(line.args()[0], NODEFAULTS);
        assert!(line.args()[1..].iter().all(|a| a == "-x"));
    }

    /// Files of xtask and the integration tests that may name the QEMU binary:
    /// the builder (this file), the installer (`setup.rs`), and the fresh-host
    /// check, which only asks `-L help` (no machine).
    const SPAWNERS: [&str; 3] = ["qemu.rs", "setup.rs", "fresh.rs"];

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    #[test]
    fn qemu_is_spawned_only_through_a_qemu_line() {
        let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        rust_files(&xtask.join("src"), &mut files);
        rust_files(&xtask.join("../tests"), &mut files);
        assert!(files.len() > 10, "{files:?}");
        let offenders: Vec<&PathBuf> = files
            .iter()
            .filter(|p| !SPAWNERS.iter().any(|s| p.ends_with(s)))
            .filter(|p| {
                let text = std::fs::read_to_string(p).unwrap();
                text.contains("QEMU_BIN") || text.contains("Command::new(\"qemu")
            })
            .collect();
        assert!(
            offenders.is_empty(),
            "QEMU spawned outside QemuLine: {offenders:?}"
        );
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
