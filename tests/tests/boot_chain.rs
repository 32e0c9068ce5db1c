//! The UEFI Secure Boot chain on QEMU's own `virt` (no hypervisor): Debian's
//! AAVMF with Microsoft's keys enrolled boots Debian's Microsoft-signed shim,
//! which starts Debian's signed GRUB, which boots Debian's signed kernel with
//! the project's busybox initramfs, from a GPT disk with an EFI system
//! partition built by xtask (`cargo xtask fetch boot-chain`); an unsigned
//! loader on the ESP is refused. This is the baseline the hypervisor's
//! `uefi-acpi` profile runs the same disks against.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use integration_tests::boot_lock;
use regex::Regex;
use xtask::boot_chain::marker::{GRUB_PROMPT, GRUB_WELCOME, REFUSED, SECURE_BOOT_ENABLED};
use xtask::boot_chain::{bare_qemu_line, build_disks, fresh_vars, ChainDisks};
use xtask::error::tail_lines;
use xtask::firmware::{ensure_aavmf, Aavmf};
use xtask::linux_guest::{parse_console, CMD_EXIT_PREFIX, INIT_MARKER};
use xtask::run::CONSOLE_TAIL_LINES;
use xtask::session::{Session, WaitError};
use xtask::Layout;

/// Budget of one boot: firmware, shim, GRUB reading a 32 MiB kernel from the
/// ESP, and Linux to the end of the guest command, under TCG on a shared host.
const TIMEOUT: Duration = Duration::from_secs(400);
/// Budget of a boot that stops in the firmware or at GRUB's prompt.
const FIRMWARE_TIMEOUT: Duration = Duration::from_secs(240);

/// What the guest reports: its command line, its consoles, whether the ACPI
/// tables carry an SPCR and whether Linux unflattened a device tree.
const GUEST_CMD: &str = r#"echo "cmdline=$(cat /proc/cmdline)"
echo "consoles=$(cut -d' ' -f1 /proc/consoles | tr '\n' ' ')"
if [ -e /sys/firmware/acpi/tables/SPCR ]; then echo spcr=yes; else echo spcr=no; fi
if [ -d /sys/firmware/devicetree/base ]; then echo devicetree=yes; else echo devicetree=no; fi
"#;

fn firmware(layout: &Layout) -> Aavmf {
    ensure_aavmf(&layout.firmware_cache(), &layout.guest_cache().join("apt"))
        .unwrap_or_else(|e| panic!("fetch AAVMF: {e}"))
}

fn disks(layout: &Layout, cmd: Option<&str>) -> ChainDisks {
    build_disks(layout, cmd).unwrap_or_else(|e| panic!("build the boot-chain disks: {e}"))
}

/// Boots `disk` with a fresh variable store (Microsoft keys when
/// `secure_boot`) named `vars`.
fn spawn(
    layout: &Layout,
    fw: &Aavmf,
    secure_boot: bool,
    vars: &str,
    disk: &Path,
    timeout: Duration,
) -> Session {
    let vars = fresh_vars(layout, fw, secure_boot, vars).unwrap_or_else(|e| panic!("{e}"));
    let line = bare_qemu_line(&fw.code, &vars, disk);
    Session::spawn(line.command(), false, timeout)
        .unwrap_or_else(|e| panic!("start {}: {e}", line.display()))
}

fn tail(s: &Session) -> String {
    format!(
        "--- last {CONSOLE_TAIL_LINES} console lines ---\n{}\n---",
        tail_lines(s.output(), CONSOLE_TAIL_LINES)
    )
}

/// The value after `key=` on the first console line that starts with it.
fn value<'a>(console: &'a str, key: &str) -> Option<&'a str> {
    integration_tests::console_value(console, key)
}

#[test]
fn secure_boot_runs_signed_shim_grub_and_kernel_to_the_initramfs() {
    let _lock = boot_lock();
    let layout = Layout::detect();
    let fw = firmware(&layout);
    let d = disks(&layout, Some(GUEST_CMD));
    let mut s = spawn(&layout, &fw, true, "vars-signed.fd", &d.signed, TIMEOUT);
    // The command's end, or where a broken chain stops: the firmware refusing
    // a binary, GRUB without its configuration, a kernel panic.
    let end = Regex::new(&format!(
        "{}-?[0-9]+|Access Denied|Security Violation|{}|Kernel panic",
        regex::escape(CMD_EXIT_PREFIX),
        regex::escape(GRUB_PROMPT)
    ))
    .unwrap();
    match s.expect_capture(&end) {
        Ok(m) if m.starts_with(CMD_EXIT_PREFIX) => {}
        other => {
            s.kill();
            panic!(
                "the chain did not reach the guest command (stopped at {other:?})\n{}",
                tail(&s)
            );
        }
    }
    // Init powers off (PSCI SYSTEM_OFF): QEMU exits by itself.
    let code = s.wait_exit(Instant::now() + Duration::from_secs(60));
    s.kill();
    let out = s.output().replace('\r', "");
    let t = tail(&s);
    assert_eq!(
        code,
        Some(Some(0)),
        "QEMU did not power off after the command\n{t}"
    );
    assert!(out.contains(GRUB_WELCOME), "shim did not start GRUB\n{t}");
    assert!(
        out.contains(SECURE_BOOT_ENABLED),
        "the kernel did not log `{SECURE_BOOT_ENABLED}`\n{t}"
    );
    let c = parse_console(&out);
    assert!(c.init_seen, "no `{INIT_MARKER}`\n{t}");
    assert_eq!(c.cmd_exit, Some(0), "{t}");
    // The console came from SPCR: none on the command line GRUB passed, yet
    // the PL011 is Linux's console and the ACPI tables have an SPCR.
    let cmdline = value(&out, "cmdline").unwrap_or_else(|| panic!("no cmdline= line\n{t}"));
    assert!(!cmdline.contains("console="), "{cmdline}");
    assert!(
        cmdline.contains("BOOT_IMAGE=/vmlinuz"),
        "GRUB did not boot /vmlinuz: {cmdline}"
    );
    let consoles = value(&out, "consoles").unwrap_or_else(|| panic!("no consoles= line\n{t}"));
    assert!(
        consoles.split_whitespace().any(|c| c == "ttyAMA0"),
        "consoles: {consoles}\n{t}"
    );
    assert_eq!(value(&out, "spcr"), Some("yes"), "{t}");
    // Linux took ACPI, not a device tree (arm64 unflattens none on ACPI).
    assert_eq!(value(&out, "devicetree"), Some("no"), "{t}");
    let _ = fs::remove_file(xtask::boot_chain::image_dir(&layout).join("vars-signed.fd"));
}

#[test]
fn an_unsigned_loader_is_refused_with_secure_boot_and_runs_without() {
    let _lock = boot_lock();
    let layout = Layout::detect();
    let fw = firmware(&layout);
    let d = disks(&layout, None);
    let refused = Regex::new(REFUSED).unwrap();

    // Secure Boot on: the firmware refuses the removable-media loader.
    let mut s = spawn(
        &layout,
        &fw,
        true,
        "vars-unsigned-sb.fd",
        &d.unsigned,
        FIRMWARE_TIMEOUT,
    );
    let refused_or_ran = Regex::new(&format!(
        "{}|{}",
        refused.as_str(),
        regex::escape(GRUB_WELCOME)
    ))
    .unwrap();
    let got = s.expect_capture(&refused_or_ran);
    s.kill();
    let t = tail(&s);
    assert!(
        got.as_deref().is_ok_and(|m| refused.is_match(m)),
        "the firmware did not refuse the unsigned loader (got {got:?})\n{t}"
    );
    assert!(
        !s.output().contains(GRUB_WELCOME),
        "GRUB ran after an unsigned shim\n{t}"
    );

    // Secure Boot off (empty store), same disk: the loader runs and starts GRUB,
    // so the refusal above was the signature check.
    let mut s = spawn(
        &layout,
        &fw,
        false,
        "vars-unsigned.fd",
        &d.unsigned,
        FIRMWARE_TIMEOUT,
    );
    let got: Result<(), WaitError> = s.expect(&Regex::new(&regex::escape(GRUB_WELCOME)).unwrap());
    s.kill();
    let t = tail(&s);
    assert_eq!(
        got,
        Ok(()),
        "the unsigned loader did not run with Secure Boot off\n{t}"
    );
    assert!(!refused.is_match(s.output()), "{t}");
    for v in ["vars-unsigned-sb.fd", "vars-unsigned.fd"] {
        let _ = fs::remove_file(xtask::boot_chain::image_dir(&layout).join(v));
    }
}
