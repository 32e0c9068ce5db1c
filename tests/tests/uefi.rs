//! The `uefi-acpi` profile (issue 14): Debian's AAVMF, unmodified, boots under
//! the hypervisor from its emulated flash to the UEFI shell on the serial console,
//! with its ACPI tables from fw_cfg; a variable the shell writes goes through the
//! CFI model of the variable-store bank, is read back after a VM reset (boot
//! bundle, store in memory) and after a host restart (system disk: the store is
//! in the VM's registry record).

use std::path::{Path, PathBuf};
use std::time::Duration;

use integration_tests::{boot, boot_lock, console_tail, console_value, script};
use regex::Regex;
use xtask::boot_chain::marker::{GRUB_WELCOME, REFUSED, SECURE_BOOT_ENABLED};
use xtask::linux_guest::parse_console;
use xtask::run::{Ending, Profile, RunOptions};
use xtask::Layout;

/// Generous for TCG: the firmware reaches its shell in well under a minute.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Budget of a boot through the signed chain under the hypervisor: firmware,
/// shim, GRUB reading a 30 MiB kernel through the virtio-blk model, and Linux
/// to the end of the guest command, under TCG on a shared host.
const CHAIN_TIMEOUT: Duration = Duration::from_secs(900);

/// What the Linux at the end of the chain reports: whether it unflattened a
/// device tree, whether its ACPI tables carry an SPCR and its consoles.
const CHAIN_CMD: &str = r#"if [ -d /sys/firmware/devicetree/base ]; then echo devicetree=yes; else echo devicetree=no; fi
if [ -e /sys/firmware/acpi/tables/SPCR ]; then echo spcr=yes; else echo spcr=no; fi
echo "consoles=$(cut -d' ' -f1 /proc/consoles | tr '\n' ' ')"
"#;

/// A vendor GUID of this test's own.
const GUID: &str = "6a1c0f2e-5b3d-4c7a-9e81-2f4d6b8a0c13";

/// Debian's AAVMF code image (fetched into the cache if needed).
fn aavmf_code() -> PathBuf {
    let layout = Layout::detect();
    xtask::firmware::ensure_aavmf(&layout.firmware_cache(), &layout.guest_cache().join("apt"))
        .expect("fetch Debian's AAVMF")
        .code
}

/// A shell run from a boot bundle (`--firmware`).
fn uefi(script_name: &str, text: &str) -> RunOptions {
    RunOptions {
        profile: Profile::UefiAcpi,
        firmware_shell: true,
        firmware: Some(aavmf_code()),
        script: Some(script(script_name, text)),
        ..RunOptions::headless(Default::default(), TIMEOUT)
    }
}

/// A shell run of the VM on the system disk `disk`.
fn uefi_on(disk: &Path, fresh: bool, script_name: &str, text: &str) -> RunOptions {
    RunOptions {
        profile: Profile::UefiAcpi,
        firmware_shell: true,
        system_disk: Some(disk.to_path_buf()),
        fresh,
        script: Some(script(script_name, text)),
        ..RunOptions::headless(Default::default(), TIMEOUT)
    }
}

/// AAVMF reaches `Shell>`, writes a non-volatile variable (flash program and
/// erase commands trapped into the CFI model), keeps it across a VM reset (the
/// firmware reads the store back from the bank, mapped again in read-array mode),
/// and powers the VM off through PSCI, which ends the run with status 0.
#[test]
fn aavmf_reaches_its_shell_and_keeps_a_variable_across_a_reset() {
    let _g = boot_lock();
    let o = uefi(
        "uefi-shell.script",
        &format!(
            "expect Shell> \n\
             send setvar RayosProbe -guid {GUID} -nv -bs =\"kept-in-flash\"\\r\n\
             expect Shell> \n\
             send reset\\r\n\
             expect UEFI firmware\n\
             expect Shell> \n\
             send dmpstore RayosProbe -guid {GUID}\\r\n\
             expect kept-in-flash\n\
             expect Shell> \n\
             send reset -s\\r\n"
        ),
    );
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let c = &outcome.console;
    assert!(c.contains("UEFI firmware from flash at 0x0"), "\n{tail}");
    assert_eq!(
        c.matches("UEFI Interactive Shell").count(),
        2,
        "one shell per boot\n{tail}"
    );
    assert!(c.contains("VM 'uefi' powered off"), "\n{tail}");
    // Nothing the firmware did was refused by the hypervisor.
    assert!(!c.contains("data abort injected"), "\n{tail}");
}

/// The variable store belongs to the VM: a variable set in the shell is committed
/// to the VM's record on the system disk and read back by the next boot of the
/// hypervisor (a new QEMU process on the same disk image).
#[test]
fn a_variable_set_in_the_shell_survives_a_host_restart() {
    let _g = boot_lock();
    let disk = Layout::detect().out.join("test-uefi-vars.img");
    let first = uefi_on(
        &disk,
        true,
        "uefi-vars-set.script",
        &format!(
            "expect Shell> \n\
             send setvar RayosKeep -guid {GUID} -nv -bs =\"survives-restart\"\\r\n\
             expect Shell> \n\
             send reset -s\\r\n"
        ),
    );
    let outcome = boot(&first);
    let tail = console_tail(&outcome);
    assert_eq!(
        outcome.ending,
        Ending::Exited(Some(0)),
        "first boot\n{tail}"
    );
    assert!(
        outcome.console.contains("VM 'uefi' powered off"),
        "\n{tail}"
    );

    let second = uefi_on(
        &disk,
        false,
        "uefi-vars-get.script",
        &format!(
            "expect Shell> \n\
             send dmpstore RayosKeep -guid {GUID}\\r\n\
             expect survives-restart\n\
             expect Shell> \n\
             send reset -s\\r\n"
        ),
    );
    let outcome = boot(&second);
    let tail = console_tail(&outcome);
    assert_eq!(
        outcome.ending,
        Ending::Exited(Some(0)),
        "second boot\n{tail}"
    );
    assert!(!outcome.console.contains("data abort injected"), "\n{tail}");
    let _ = std::fs::remove_file(&disk);
}

/// Hostile writes from the shell's `mm`: a store to the code bank (ignored with a
/// log line), and a flash command out of sequence to the variable store (a
/// confirm with no setup: the model reports a sequence error and changes
/// nothing), then read-array again. (The firmware's own page tables do not map
/// the code bank past its image, so the shell cannot reach that part.)
/// The firmware and the hypervisor carry on: a variable is written and read back
/// and the VM powers off cleanly.
#[test]
fn hostile_flash_writes_from_the_shell_change_nothing() {
    let _g = boot_lock();
    let o = uefi(
        "uefi-hostile.script",
        &format!(
            "expect Shell> \n\
             send mm 0x1000 0x5a5a5a5a -w 4 -MEM -n\\r\n\
             expect Shell> \n\
             send mm 0x1000 -w 4 -MEM -n\\r\n\
             expect Shell> \n\
             send mm 0x4000000 0x00d000d0 -w 4 -MEM -n\\r\n\
             expect Shell> \n\
             send mm 0x4000000 0x00ff00ff -w 4 -MEM -n\\r\n\
             expect Shell> \n\
             send setvar RayosAfter -guid {GUID} -bs =\"still-works\"\\r\n\
             expect Shell> \n\
             send dmpstore RayosAfter -guid {GUID}\\r\n\
             expect still-works\n\
             expect Shell> \n\
             send reset -s\\r\n"
        ),
    );
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let c = &outcome.console;
    assert!(
        c.contains("write to the firmware code bank at IPA 0x1000"),
        "\n{tail}"
    );
    assert!(c.contains("VM 'uefi' powered off"), "\n{tail}");
}

/// Secure Boot on (the VM's new variable store seeded with Microsoft's keys):
/// the firmware under the hypervisor boots Debian's Microsoft-signed shim from
/// the VM's virtio-blk boot disk, shim starts Debian's signed GRUB, GRUB the
/// signed kernel with the initramfs; Linux comes up on ACPI only (no device
/// tree, its console from SPCR), logs that Secure Boot is enabled, runs the
/// guest command GRUB's configuration carries and powers off with its status.
#[test]
fn secure_boot_runs_the_signed_chain_to_linux_on_acpi_under_the_hypervisor() {
    let _g = boot_lock();
    let disk = Layout::detect().out.join("test-uefi-chain.img");
    let o = RunOptions {
        profile: Profile::UefiAcpi,
        secure_boot: true,
        system_disk: Some(disk.clone()),
        fresh: true,
        guest_cmd: Some(CHAIN_CMD.into()),
        ..RunOptions::headless(Default::default(), CHAIN_TIMEOUT)
    };
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    let c = outcome.console.replace('\r', "");
    assert!(c.contains("UEFI firmware from flash at 0x0"), "\n{tail}");
    assert!(c.contains(GRUB_WELCOME), "shim did not start GRUB\n{tail}");
    assert!(
        c.contains(SECURE_BOOT_ENABLED),
        "the kernel did not log `{SECURE_BOOT_ENABLED}`\n{tail}"
    );
    assert_eq!(parse_console(&c).cmd_exit, Some(0), "\n{tail}");
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    assert_eq!(console_value(&c, "devicetree"), Some("no"), "\n{tail}");
    assert_eq!(console_value(&c, "spcr"), Some("yes"), "\n{tail}");
    let consoles = console_value(&c, "consoles").unwrap_or_default();
    assert!(
        consoles.split_whitespace().any(|d| d == "ttyAMA0"),
        "consoles: {consoles}\n{tail}"
    );
    assert!(!c.contains("data abort injected"), "\n{tail}");
    let _ = std::fs::remove_file(&disk);
}

/// A firmware run of the VM on a fresh system disk `disk` whose boot disk is
/// `boot_disk`, driven by `text`; the store seeded with Microsoft's keys when
/// `secure_boot`.
fn uefi_boot_disk(
    disk: &Path,
    boot_disk: &Path,
    secure_boot: bool,
    script_name: &str,
    text: &str,
) -> RunOptions {
    RunOptions {
        profile: Profile::UefiAcpi,
        secure_boot,
        boot_disk: Some(boot_disk.to_path_buf()),
        system_disk: Some(disk.to_path_buf()),
        fresh: true,
        script: Some(script(script_name, text)),
        ..RunOptions::headless(Default::default(), TIMEOUT)
    }
}

/// An unsigned EFI binary on the ESP (Debian's shim with its Authenticode
/// certificate table cut off, as the removable-media loader `BOOTAA64.EFI`,
/// GRUB beside it): with Secure Boot on, the firmware under the hypervisor
/// refuses to load it (`Access Denied`) and it never runs (GRUB, which it would
/// start, never prints its banner); the firmware then finds nothing else to
/// boot. With Secure Boot off, the same disk runs it and GRUB comes up, so the
/// refusal is the signature check.
#[test]
fn an_unsigned_efi_binary_on_the_esp_is_refused_with_secure_boot_and_runs_without() {
    let _g = boot_lock();
    let layout = Layout::detect();
    let disks = xtask::boot_chain::build_disks(&layout, None)
        .unwrap_or_else(|e| panic!("build the boot-chain disks: {e}"));
    let disk = layout.out.join("test-uefi-unsigned.img");
    let grub = regex::escape(GRUB_WELCOME);

    // Secure Boot on: refused, and the firmware gives up without running it.
    let o = uefi_boot_disk(
        &disk,
        &disks.unsigned,
        true,
        "uefi-unsigned-sb.script",
        &format!(
            "expect {REFUSED}|{grub}\n\
             expect No bootable option or device was found|{grub}\n"
        ),
    );
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    let c = outcome.console.replace('\r', "");
    assert!(c.contains("UEFI firmware from flash at 0x0"), "\n{tail}");
    assert!(
        Regex::new(REFUSED).unwrap().is_match(&c),
        "the firmware did not refuse the unsigned loader\n{tail}"
    );
    assert!(!c.contains(GRUB_WELCOME), "the unsigned loader ran\n{tail}");
    assert!(
        c.contains("No bootable option or device was found"),
        "\n{tail}"
    );
    assert!(!c.contains("data abort injected"), "\n{tail}");

    // Secure Boot off (an empty store), same disk: it runs and starts GRUB.
    let o = uefi_boot_disk(
        &disk,
        &disks.unsigned,
        false,
        "uefi-unsigned.script",
        &format!("expect {grub}\n"),
    );
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    let c = outcome.console.replace('\r', "");
    assert_eq!(outcome.ending, Ending::ScriptDone, "\n{tail}");
    assert!(
        !Regex::new(REFUSED).unwrap().is_match(&c),
        "refused without Secure Boot\n{tail}"
    );
    let _ = std::fs::remove_file(&disk);
}

/// What the Linux at the end of the chain reports about its platform: its CPUs,
/// the ACPI tables that describe them and the timer, its clock source, its
/// command line, and the time (the system clock, set at boot from the RTC, and
/// the RTC itself) just before it powers off.
const PLATFORM_CMD: &str = r#"echo "nproc=$(nproc)"
echo "cpuinfo=$(grep -c ^processor /proc/cpuinfo)"
for t in APIC PPTT GTDT SPCR; do if [ -e /sys/firmware/acpi/tables/$t ]; then echo "table$t=yes"; else echo "table$t=no"; fi; done
echo "clocksource=$(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
echo "cmdline=$(cat /proc/cmdline)"
echo "consoles=$(cut -d' ' -f1 /proc/consoles | tr '\n' ' ')"
echo "rtcname=$(cat /sys/class/rtc/rtc0/name)"
echo "rtc=$(cat /sys/class/rtc/rtc0/since_epoch)"
echo "date=$(date +%s)"
"#;

/// Budget of a boot of the chain with up to four vCPUs: four TCG vCPU threads
/// on a shared host, and the boot log replayed through the trapped PL011 when
/// Linux registers its console (SPCR: no early console).
const PLATFORM_TIMEOUT: Duration = Duration::from_secs(1800);

/// How far the guest's clock may be from the host's. The guest reads its clock
/// during its last command, before it powers off and QEMU exits; under TCG on a
/// shared host that tail can take a while, and the clock has one-second
/// resolution. A guest without a working RTC reads 1970 (or an offset of hours
/// if the time were taken wrongly), far outside this.
const CLOCK_TOLERANCE_S: u64 = 60;

/// Boots the signed chain with `vcpus` vCPUs and checks what Linux sees: that
/// many CPUs (the MADT, signature `APIC`; the topology in PPTT), the architected timer as its clock
/// source (GTDT), its console from SPCR with no `console=` on the command line,
/// and the time of the host (the guest's PL031 counts from the host's clock).
fn linux_on_acpi_platform(vcpus: u32) {
    let _g = boot_lock();
    let disk = Layout::detect()
        .out
        .join(format!("test-uefi-platform-{vcpus}.img"));
    let o = RunOptions {
        profile: Profile::UefiAcpi,
        secure_boot: true,
        system_disk: Some(disk.clone()),
        fresh: true,
        smp: Some(vcpus),
        guest_cmd: Some(PLATFORM_CMD.into()),
        ..RunOptions::headless(Default::default(), PLATFORM_TIMEOUT)
    };
    let outcome = boot(&o);
    let host_end = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let tail = console_tail(&outcome);
    let c = outcome.console.replace('\r', "");
    assert_eq!(parse_console(&c).cmd_exit, Some(0), "\n{tail}");
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let want = vcpus.to_string();
    assert_eq!(console_value(&c, "nproc"), Some(want.as_str()), "\n{tail}");
    assert_eq!(
        console_value(&c, "cpuinfo"),
        Some(want.as_str()),
        "\n{tail}"
    );
    for t in ["APIC", "PPTT", "GTDT", "SPCR"] {
        assert_eq!(
            console_value(&c, &format!("table{t}")),
            Some("yes"),
            "{t}\n{tail}"
        );
    }
    assert_eq!(
        console_value(&c, "clocksource"),
        Some("arch_sys_counter"),
        "\n{tail}"
    );
    let cmdline = console_value(&c, "cmdline").unwrap_or_default();
    assert!(!cmdline.contains("console="), "cmdline: {cmdline}\n{tail}");
    let consoles = console_value(&c, "consoles").unwrap_or_default();
    assert!(
        consoles.split_whitespace().any(|d| d == "ttyAMA0"),
        "consoles: {consoles}\n{tail}"
    );
    for key in ["rtc", "date"] {
        let guest: u64 = console_value(&c, key)
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no {key}= line\n{tail}"));
        assert!(
            guest <= host_end + 1 && guest + CLOCK_TOLERANCE_S >= host_end,
            "{key}: guest {guest}, host {host_end} at the end of the run\n{tail}"
        );
    }
    assert!(!c.contains("data abort injected"), "\n{tail}");
    let _ = std::fs::remove_file(&disk);
}

/// `--smp 2`: two CPUs, the timer, the console and the host's time (see
/// [`linux_on_acpi_platform`]).
#[test]
fn linux_on_acpi_has_two_cpus_the_gtdt_timer_the_spcr_console_and_the_host_time() {
    linux_on_acpi_platform(2);
}

/// `--smp 4`: as with two (Windows needs PPTT beyond two vCPUs).
#[test]
fn linux_on_acpi_has_four_cpus_the_gtdt_timer_the_spcr_console_and_the_host_time() {
    linux_on_acpi_platform(4);
}

/// How far ahead of the host the guest sets its clock in
/// [`a_clock_the_guest_sets_is_kept_in_the_vm_record_across_a_host_restart`]:
/// ten days, far beyond [`CLOCK_TOLERANCE_S`].
const SET_AHEAD_S: u64 = 10 * 86_400;

/// The guest's RTC belongs to the VM: Linux sets its clock ten days ahead and
/// writes it to the RTC (`hwclock -w`: `rtc-efi` → the firmware's `SetTime` →
/// a load of the PL031's RTCLR), the hypervisor keeps the new offset in the VM's
/// registry record, and the next start of the VM (a new QEMU process on the same
/// system disk) reads the host's time plus ten days from its RTC.
#[test]
fn a_clock_the_guest_sets_is_kept_in_the_vm_record_across_a_host_restart() {
    let _g = boot_lock();
    let disk = Layout::detect().out.join("test-uefi-rtc.img");
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    };
    let run = |fresh: bool, cmd: String| {
        let o = RunOptions {
            profile: Profile::UefiAcpi,
            secure_boot: true,
            system_disk: Some(disk.clone()),
            fresh,
            guest_cmd: Some(cmd),
            ..RunOptions::headless(Default::default(), CHAIN_TIMEOUT)
        };
        let outcome = boot(&o);
        let end = now();
        let tail = console_tail(&outcome);
        let c = outcome.console.replace('\r', "");
        assert_eq!(parse_console(&c).cmd_exit, Some(0), "\n{tail}");
        assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
        let rtc: u64 = console_value(&c, "rtc")
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no rtc= line\n{tail}"));
        (c, tail, rtc, end)
    };

    // Ten days ahead of the guest's own clock, which is the host's (see
    // `linux_on_acpi_platform`).
    let (c, tail, rtc, end) = run(
        true,
        format!(
            "busybox date -u -s @$(( $(date +%s) + {SET_AHEAD_S} )) >/dev/null && busybox hwclock -w -u\n\
             echo \"rtc=$(cat /sys/class/rtc/rtc0/since_epoch)\"\n"
        ),
    );
    assert!(
        c.contains("(kept in its record)"),
        "the hypervisor did not keep the offset\n{tail}"
    );
    assert!(
        rtc <= end + SET_AHEAD_S + 1 && rtc + CLOCK_TOLERANCE_S >= end + SET_AHEAD_S,
        "first boot: rtc {rtc}, host {end}\n{tail}"
    );

    let (c, tail, rtc, end) = run(
        false,
        "echo \"rtc=$(cat /sys/class/rtc/rtc0/since_epoch)\"\n".into(),
    );
    assert!(
        rtc <= end + SET_AHEAD_S + 1 && rtc + CLOCK_TOLERANCE_S >= end + SET_AHEAD_S,
        "after the restart: rtc {rtc}, host {end} (+{SET_AHEAD_S} s expected)\n{tail}"
    );
    assert!(!c.contains("data abort injected"), "\n{tail}");
    let _ = std::fs::remove_file(&disk);
}

/// `cargo xtask disk add-vm --device-model uefi-acpi` defines a firmware VM on
/// a system disk (Debian's AAVMF as its code, the Microsoft-key store trimmed to
/// the bank as its variables, one guest disk that `disk import` fills with the
/// signed chain), and `cargo xtask run --vm NAME` starts exactly that VM through
/// the firmware: the hypervisor takes the name from its command line, the VM
/// has the record's two vCPUs, Secure Boot is on and Linux runs the command the
/// chain's GRUB configuration carries.
#[test]
fn a_uefi_acpi_vm_made_with_disk_add_vm_runs_with_run_vm() {
    let _g = boot_lock();
    let layout = Layout::detect();
    let fw =
        xtask::firmware::ensure_aavmf(&layout.firmware_cache(), &layout.guest_cache().join("apt"))
            .expect("fetch Debian's AAVMF");
    let disks = xtask::boot_chain::build_disks(&layout, Some(r#"echo "nproc=$(nproc)""#))
        .unwrap_or_else(|e| panic!("build the boot-chain disks: {e}"));
    let dir = layout.out.join("test-uefi-add-vm");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let vars = dir.join("vars.fd");
    let ms = std::fs::read(fw.vars_for(true)).unwrap();
    std::fs::write(&vars, xtask::sysdisk::vars_head(&ms)).unwrap();
    let esp_len = std::fs::metadata(&disks.signed).unwrap().len();
    let sys = dir.join("system.img");
    let disk = |words: Vec<String>| {
        registry::cli::run(&words).unwrap_or_else(|e| panic!("disk {words:?}: {e}"))
    };
    let p = |p: &Path| p.to_string_lossy().into_owned();
    disk(vec!["create".into(), p(&sys), "--size".into(), "1G".into()]);
    // An autostart VM first: the hypervisor would start it if not told the name
    // (its "kernel" is any file; it never runs).
    disk(
        [
            "add-vm",
            &p(&sys),
            "--name",
            "decoy",
            "--vcpus",
            "1",
            "--mem",
            "64M",
            "--kernel",
            &p(&vars),
            "--autostart",
        ]
        .map(String::from)
        .to_vec(),
    );
    disk(
        [
            "add-vm",
            &p(&sys),
            "--name",
            "win",
            "--vcpus",
            "2",
            "--mem",
            "512M",
            "--device-model",
            "uefi-acpi",
            "--firmware",
            &p(&fw.code),
            "--vars",
            &p(&vars),
            "--disk-size",
            &format!("{}K", esp_len.div_ceil(1024)),
        ]
        .map(String::from)
        .to_vec(),
    );
    disk(
        [
            "import",
            &p(&sys),
            "win",
            "--disk",
            "0",
            "--image",
            &p(&disks.signed),
        ]
        .map(String::from)
        .to_vec(),
    );
    let inspect = disk(vec!["inspect".into(), p(&sys), "win".into()]);
    assert!(inspect.contains("uefi-acpi"), "{inspect}");

    let o = RunOptions {
        profile: Profile::UefiAcpi,
        vm: Some("win".into()),
        system_disk: Some(sys.clone()),
        ..RunOptions::headless(Default::default(), CHAIN_TIMEOUT)
    };
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    let c = outcome.console.replace('\r', "");
    assert!(
        c.contains("VM 'win' chosen on the command line"),
        "\n{tail}"
    );
    assert!(c.contains("UEFI firmware from flash at 0x0"), "\n{tail}");
    assert!(c.contains(SECURE_BOOT_ENABLED), "\n{tail}");
    assert_eq!(console_value(&c, "nproc"), Some("2"), "\n{tail}");
    assert_eq!(parse_console(&c).cmd_exit, Some(0), "\n{tail}");
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let _ = std::fs::remove_dir_all(&dir);
}
