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
use xtask::run::{prepare, Ending, Profile, RunOptions};
use xtask::session::Session;
use xtask::Layout;

/// Generous for TCG: the firmware reaches its shell in well under a minute.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Budget of a boot through the signed chain under the hypervisor: firmware,
/// shim, GRUB reading a 30 MiB kernel through the virtio-blk model, and Linux
/// to the end of the guest command, under TCG on a shared host.
const CHAIN_TIMEOUT: Duration = Duration::from_secs(900);

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

/// Power cuts while the firmware writes variables: a variable committed first
/// must survive every cut in later, unrelated variable writes. Each boot the
/// shell (re)writes two churn variables a few times and QEMU is killed at a
/// seeded moment during one of those writes (`UEFI_CUT_SEED=<seed>` repeats a
/// run); the next boot must reach the shell from the VM's record with the first
/// variable intact — never a lost or reinitialised store.
#[test]
fn power_cuts_during_variable_writes_keep_the_committed_store() {
    const CUTS: u64 = 4;
    let _g = boot_lock();
    let seed = std::env::var("UEFI_CUT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    println!("seed {seed} (repeat with UEFI_CUT_SEED={seed})");
    // splitmix64
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    let disk = Layout::detect().out.join("test-uefi-vars-cut.img");
    let mut o = uefi_on(&disk, true, "uefi-vars-cut.script", "");
    o.script = None;
    let prepared = prepare(&Layout::detect(), &o).unwrap_or_else(|e| panic!("set-up: {e}"));
    let prompt = regex::Regex::new("Shell> ").unwrap();
    let kept = regex::Regex::new("survives-cuts").unwrap();
    for boot_no in 0..=CUTS {
        let mut q = Session::spawn(prepared.command(), false, TIMEOUT)
            .unwrap_or_else(|e| panic!("start QEMU: {e}"));
        let step = |q: &mut Session, cmd: &str, want: &regex::Regex| {
            q.send(&format!("{cmd}\r")).unwrap();
            q.expect(want)
                .unwrap_or_else(|e| panic!("boot {boot_no}: `{cmd}`: {e:?}\n{}", q.output()));
        };
        q.expect(&prompt)
            .unwrap_or_else(|e| panic!("boot {boot_no}: no shell ({e:?})\n{}", q.output()));
        if boot_no == 0 {
            step(
                &mut q,
                &format!("setvar RayosKeep -guid {GUID} -nv -bs =\"survives-cuts\""),
                &prompt,
            );
        } else {
            step(&mut q, &format!("dmpstore RayosKeep -guid {GUID}"), &kept);
            q.expect(&prompt).unwrap();
        }
        if boot_no == CUTS {
            q.kill();
            break;
        }
        // Unrelated writes; the cut lands during write `k`, `at` ms after it
        // was typed.
        let writes = 4;
        let k = next() % writes;
        let at = next() % 600;
        for i in 0..writes {
            let cmd = format!(
                "setvar RayosChurn{} -guid {GUID} -nv -bs =\"churn-{boot_no}-{i}-{}\"",
                i % 2,
                "x".repeat(40 + (next() % 200) as usize)
            );
            if i == k {
                q.send(&format!("{cmd}\r")).unwrap();
                let _ = q.sleep(Duration::from_millis(at));
                break;
            }
            step(&mut q, &cmd, &prompt);
        }
        q.kill();
        println!("boot {boot_no}: cut {at} ms into churn write {k}");
    }
    let _ = std::fs::remove_file(&disk);
}

/// Hostile fw_cfg use from the shell's `mm`. Device registers are big-endian,
/// so each value below is the byte-swapped form the little-endian store writes;
/// the shell's `-MEM` stores go through `CopyMem`, which stores 4 and 8 bytes
/// as full-width accesses (twice, overlapping) but 2 bytes as two byte stores —
/// which the selector register refuses (an abort, as on QEMU) — so the selector
/// is set through a DMA descriptor's SELECT instead. Steps: a DMA descriptor in
/// RAM selecting an item that does not exist (reads of the data register then
/// give zero); a descriptor whose transfer targets the fw_cfg device itself
/// (MMIO, not RAM: refused with the error bit); and a descriptor address at the
/// GIC distributor (refused without touching the GIC). The firmware and the
/// hypervisor carry on: a variable is written and read back and the VM powers
/// off cleanly.
#[test]
fn hostile_fw_cfg_use_from_the_shell_is_refused_and_changes_nothing() {
    let _g = boot_lock();
    let mm = |addr: &str, value: &str, width: u8| {
        format!("send mm {addr} {value} -w {width} -MEM -n\\r\nexpect Shell> \n")
    };
    let descriptor = |control: &str, length: &str, address_hi: &str| {
        [
            mm("0x48000000", control, 4),
            mm("0x48000004", length, 4),
            mm("0x48000008", "0", 4),
            mm("0x4800000C", address_hi, 4),
        ]
        .concat()
    };
    let trigger = |desc: &str| mm("0x9020010", desc, 8);
    let text = [
        "expect Shell> \n".to_string(),
        // SELECT 0x1234 (no such item), nothing transferred.
        descriptor("0x08003412", "0", "0"),
        trigger("0x0000004800000000"),
        "send mm 0x9020000 -w 1 -MEM -n\\r\nexpect Shell> \n".to_string(),
        // SELECT the file directory, READ 0x1000 bytes to 0x0902_0000.
        descriptor("0x0A001900", "0x00100000", "0x00000209"),
        trigger("0x0000004800000000"),
        // The descriptor itself at 0x0800_0000.
        trigger("0x0000000800000000"),
        format!(
            "send setvar RayosFwCfg -guid {GUID} -bs =\"still-works\"\\r\n\
             expect Shell> \n\
             send dmpstore RayosFwCfg -guid {GUID}\\r\n\
             expect still-works\n\
             expect Shell> \n\
             send reset -s\\r\n"
        ),
    ]
    .concat();
    let outcome = boot(&uefi("uefi-fwcfg-hostile.script", &text));
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let c = &outcome.console;
    for line in [
        "fw_cfg: selector 0x1234 names no item",
        "fw_cfg: DMA control 0x19000a length 0x1000 address 0x9020000 failed",
        "fw_cfg: DMA descriptor at 0x8000000 is not guest RAM",
    ] {
        assert!(c.contains(line), "no `{line}`\n{tail}");
    }
    // The data register after the selector named no item (the shell colours
    // its output: compare without escape sequences).
    let plain = regex::Regex::new("\x1b\\[[0-9;]*[A-Za-z]")
        .unwrap()
        .replace_all(c, "");
    assert!(plain.contains("MEM  0x0000000009020000 : 0x00"), "\n{tail}");
    assert!(!c.contains("data abort injected"), "\n{tail}");
    assert!(c.contains("VM 'uefi' powered off"), "\n{tail}");
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
const PLATFORM_CMD: &str = r#"if [ -d /sys/firmware/devicetree/base ]; then echo devicetree=yes; else echo devicetree=no; fi
echo "nproc=$(nproc)"
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

/// How far ahead of the host the guest sets its clock in
/// [`linux_on_acpi_two_then_four_cpus_measured_boot_and_the_clock_across_a_host_restart`]:
/// ten days, far beyond the span of a run.
const SET_AHEAD_S: u64 = 10 * 86_400;

/// Sets the guest's clock [`SET_AHEAD_S`] ahead and writes it to the RTC
/// (`hwclock -w`: `rtc-efi` → the firmware's `SetTime` → a load of the PL031's
/// RTCLR), then reads the RTC back.
fn set_clock_cmd() -> String {
    format!(
        "busybox date -u -s @$(( $(date +%s) + {SET_AHEAD_S} )) >/dev/null && busybox hwclock -w -u\n\
         echo \"rtcset=$(cat /sys/class/rtc/rtc0/since_epoch)\"\n"
    )
}

/// Seconds since the epoch on the host.
fn host_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The host's time (seconds since the epoch) when a run started and when it
/// ended.
type Span = (u64, u64);

/// Asserts that the guest's `key=` value is the host's time plus `ahead` seconds
/// at some moment of the run `span` (one second of slack at each end: the clocks
/// have one-second resolution). The guest read its clock during the run, and a
/// slow host only lengthens the span; a guest without a working RTC reads 1970,
/// one whose offset was lost or taken wrongly is days or hours off, and one whose
/// clock stood still across a host restart reads a time of the previous run.
fn assert_clock(c: &str, key: &str, span: Span, ahead: u64, tail: &str) {
    let guest: u64 = console_value(c, key)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key}= line\n{tail}"));
    let (start, end) = span;
    assert!(
        guest + 1 >= start + ahead && guest <= end + ahead + 1,
        "{key}: guest {guest}, host {start}..={end} + {ahead} s during the run\n{tail}"
    );
}

/// Secure Boot on (the VM's variable store seeded with Microsoft's keys): the
/// firmware under the hypervisor boots Debian's Microsoft-signed shim from the
/// VM's virtio-blk boot disk on system disk `disk` (made afresh when `fresh`),
/// shim starts Debian's signed GRUB, GRUB the signed kernel with the
/// initramfs, which logs that Secure Boot is enabled, runs [`PLATFORM_CMD`] then
/// `more` and powers off with its status. Linux comes up on ACPI only (no device
/// tree) with `vcpus` vCPUs; checks what it sees: that many CPUs (the MADT,
/// signature `APIC`; the topology in PPTT), the architected timer as its clock
/// source (GTDT), its console from SPCR with no `console=` on the command line,
/// and the time of the host plus `ahead` seconds (the guest's PL031 counts from
/// the host's clock, with the VM's own offset). Returns the console and its
/// tail, and the host's times when the run started and ended.
fn linux_on_acpi_platform(
    disk: &Path,
    vcpus: u32,
    fresh: bool,
    more: &str,
    ahead: u64,
) -> (String, String, Span) {
    let o = RunOptions {
        profile: Profile::UefiAcpi,
        secure_boot: true,
        system_disk: Some(disk.to_path_buf()),
        fresh,
        smp: Some(vcpus),
        guest_cmd: Some(format!("{PLATFORM_CMD}{more}")),
        ..RunOptions::headless(Default::default(), PLATFORM_TIMEOUT)
    };
    let host_start = host_now();
    let outcome = boot(&o);
    let span = (host_start, host_now());
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
        assert_clock(&c, key, span, ahead, &tail);
    }
    assert!(!c.contains("data abort injected"), "\n{tail}");
    (c, tail, span)
}

/// One firmware VM, two host starts; each chain boot costs about a minute of
/// TCG, so the checks of issue 14's platform, measured boot and guest clock
/// share them.
///
/// Start 1, `--smp 2` on a fresh system disk: the platform (see
/// [`linux_on_acpi_platform`]) with the host's time; measured boot (see
/// [`check_measured_boot`]); then Linux sets its clock ten days ahead and writes
/// it to the RTC, and the hypervisor keeps the new offset in the VM's registry
/// record.
///
/// Start 2, a new QEMU process on the same system disk with `--smp 4`
/// (Windows needs PPTT beyond two vCPUs): the platform with four CPUs, and the
/// guest's RTC and clock read the host's time plus ten days.
#[test]
fn linux_on_acpi_two_then_four_cpus_measured_boot_and_the_clock_across_a_host_restart() {
    let _g = boot_lock();
    let disk = Layout::detect().out.join("test-uefi-platform.img");
    let more = format!("{MEASURED_CMD}{}", set_clock_cmd());
    let (c, tail, span) = linux_on_acpi_platform(&disk, 2, true, &more, 0);
    check_measured_boot(&c, &tail);
    assert!(
        c.contains("(kept in its record)"),
        "the hypervisor did not keep the RTC offset\n{tail}"
    );
    assert_clock(&c, "rtcset", span, SET_AHEAD_S, &tail);

    linux_on_acpi_platform(&disk, 4, false, "", SET_AHEAD_S);
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

/// What the Linux at the end of the measured chain reports about its TPM: the
/// driver bound to `tpm0`, the SHA-256 PCRs 0–15 as the TPM gives them, and the
/// firmware's event log (base64 between two marker lines).
const MEASURED_CMD: &str = r#"mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
echo "tpm-driver=$(basename "$(readlink /sys/class/tpm/tpm0/device/driver)")"
for i in 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15; do echo "pcr$i=$(cat /sys/class/tpm/tpm0/pcr-sha256/$i)"; done
echo eventlog-begin
base64 /sys/kernel/security/tpm0/binary_bios_measurements
echo eventlog-end
"#;

/// The bytes printed as base64 between the `eventlog-begin` and `eventlog-end`
/// lines of `console`.
fn event_log_from_console(console: &str) -> Vec<u8> {
    let start = console
        .find("\neventlog-begin\n")
        .expect("no eventlog-begin line");
    let rest = &console[start + "\neventlog-begin\n".len()..];
    let end = rest.find("\neventlog-end\n").expect("no eventlog-end line");
    let text: String = rest[..end].split_whitespace().collect();
    decode_base64(&text).expect("the event log's base64 is damaged")
}

/// RFC 4648 base64 with padding (what busybox `base64` prints).
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let value = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    };
    let bytes = text.as_bytes();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    for quad in bytes.chunks(4) {
        let pad = quad.iter().rev().take_while(|&&c| c == b'=').count();
        if pad > 2 {
            return None;
        }
        let mut v = 0u32;
        for &c in &quad[..4 - pad] {
            v = v << 6 | value(c)?;
        }
        v <<= 6 * pad as u32;
        out.extend_from_slice(&v.to_be_bytes()[1..4 - pad]);
    }
    Some(out)
}

/// The SHA-256 PCR values `tpm2_eventlog` (tpm2-tools, the host side) computes by
/// replaying `log`, with its YAML dump of the events.
fn replay_with_tpm2_eventlog(log: &[u8]) -> (std::collections::BTreeMap<u32, String>, String) {
    let path = Layout::detect().out.join("test-uefi-eventlog.bin");
    std::fs::write(&path, log).expect("write the event log");
    let out = std::process::Command::new("tpm2_eventlog")
        .arg(&path)
        .output()
        .expect("run tpm2_eventlog (tpm2-tools; `cargo xtask setup` installs it)");
    let yaml = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "tpm2_eventlog refused the log: {}\n{yaml}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_file(&path);
    // The closing `pcrs:` section: per bank `  sha256:` then `    N : 0xHEX`.
    let mut pcrs = std::collections::BTreeMap::new();
    let pcrs_at = yaml
        .rfind("\npcrs:")
        .expect("tpm2_eventlog printed no pcrs");
    let mut in_sha256 = false;
    for line in yaml[pcrs_at..].lines().skip(2) {
        let t = line.trim();
        if let Some(bank) = t.strip_suffix(':') {
            in_sha256 = bank == "sha256";
            continue;
        }
        if !in_sha256 {
            continue;
        }
        if let Some((n, v)) = t.split_once(':') {
            let n: u32 = n.trim().parse().expect("a PCR index");
            let v = v.trim().trim_start_matches("0x").to_ascii_uppercase();
            pcrs.insert(n, v);
        }
    }
    (pcrs, yaml)
}

/// Measured boot through the CRB TPM (issue 14 item 4): with Secure Boot on, the
/// firmware finds the vTPM's CRB on the platform bus from its device tree and
/// measures the boot into it, shim and GRUB add theirs, and Linux on ACPI drives
/// the TPM with `tpm_crb` (the DSDT's `MSFT0101` and the TPM2 table). The event
/// log the firmware hands Linux, replayed on the host by `tpm2_eventlog`, gives
/// exactly the SHA-256 PCRs the TPM reports for every PCR the log extends, and
/// the others are zero — except PCR 10, which the kernel's IMA extends (its
/// measurements are in IMA's own log, not the firmware's). PCR 7 holds the Secure
/// Boot policy (the `SecureBoot` variable among the logged events). An empty or
/// truncated log cannot pass: PCRs 0–7 are checked to be extended.
fn check_measured_boot(c: &str, tail: &str) {
    assert_eq!(
        console_value(c, "tpm-driver"),
        Some("tpm_crb"),
        "tpm0 is not driven by tpm_crb\n{tail}"
    );
    // The TPM is the VM's: its NV image is in the record on the system disk, whose
    // vTPM CA certifies its EKs at manufacture (the first boot of a fresh VM).
    assert!(
        c.contains("EK certificate(s) issued by the system disk's vTPM manufacturer CA"),
        "\n{tail}"
    );
    let zero = "0".repeat(64);
    let guest: std::collections::BTreeMap<u32, String> = (0..16)
        .map(|i| {
            let v = console_value(c, &format!("pcr{i}"))
                .unwrap_or_else(|| panic!("no PCR {i} from the guest\n{tail}"));
            assert_eq!(v.len(), 64, "PCR {i}: {v}\n{tail}");
            (i, v.to_ascii_uppercase())
        })
        .collect();
    for i in 0..8 {
        assert_ne!(guest[&i], zero, "PCR {i} was never extended\n{tail}");
    }

    let log = event_log_from_console(c);
    let (replayed, yaml) = replay_with_tpm2_eventlog(&log);
    eprintln!(
        "event log: {} bytes, {} events; replayed SHA-256 PCRs: {replayed:?}",
        log.len(),
        yaml.matches("EventNum:").count()
    );
    for (i, value) in &guest {
        if *i == 10 {
            continue;
        }
        let want = replayed.get(i).map_or(zero.as_str(), |v| v.as_str());
        assert_eq!(
            value, want,
            "PCR {i}: the TPM's value is not the event log's replay\n{yaml}"
        );
    }
    // The Secure Boot policy in PCR 7: the firmware measured the SecureBoot
    // variable (with PK, KEK, db, dbx).
    assert!(
        yaml.contains("UnicodeName: SecureBoot"),
        "no SecureBoot variable event in the log\n{yaml}"
    );
}

#[test]
fn base64_decoding_matches_rfc_4648() {
    assert_eq!(decode_base64("").unwrap(), b"");
    assert_eq!(decode_base64("Zg==").unwrap(), b"f");
    assert_eq!(decode_base64("Zm8=").unwrap(), b"fo");
    assert_eq!(decode_base64("Zm9vYmFy").unwrap(), b"foobar");
    assert!(decode_base64("Zm9").is_none());
    assert!(decode_base64("Zm9*").is_none());
}

/// Hostile CRB accesses from the shell's `mm` (the firmware VM's TPM at the
/// platform bus's base, 0x0c00_0000): a START from a locality that is not active
/// (ignored with a log line), a command whose header declares 4 GiB started from
/// locality 0 (the engine answers with an error; nothing overruns the 3968-byte
/// buffer), a 64-bit read of the response address, a byte write into the middle
/// of TPM_CRB_CTRL_REQ, and a locality-4 request while 0 holds the TPM. (`mm
/// -MMIO`, one access each: with `-MEM` the shell's `CopyMem` stores a 4-byte
/// value twice and a byte three times, which would START a command again on its
/// own response.) The VM then resets: the bus reset gives the TPM _TPM_Init and
/// the firmware starts it again (TPM2_Startup) while measuring its boot. In the
/// new shell a TPM2_GetRandom of 8 bytes written into the buffer by hand
/// succeeds (response size 20, TPM_RC_SUCCESS, 8 bytes) — which it could not if
/// the firmware had not started the TPM after the reset (TPM_RC_INITIALIZE, 10
/// bytes) — and the VM powers off: nothing the guest wrote stopped the TPM, the
/// firmware or the hypervisor.
#[test]
fn hostile_crb_accesses_from_the_shell_leave_the_tpm_working() {
    let _g = boot_lock();
    // TPM2_GetRandom(8): tag 0x8001, size 12, code 0x17B, bytesRequested 8, as
    // little-endian words of the buffer.
    let o = uefi(
        "uefi-crb-hostile.script",
        "expect Shell> \n\
         send mm 0xc00104c 1 -w 1 -MMIO -n\\r\n\
         expect Shell> \n\
         send mm 0xc000008 1 -w 4 -MMIO -n\\r\n\
         expect Shell> \n\
         send mm 0xc000080 0xffffffff -w 4 -MMIO -n\\r\n\
         expect Shell> \n\
         send mm 0xc000084 0xffffffff -w 4 -MMIO -n\\r\n\
         expect Shell> \n\
         send mm 0xc00004c 1 -w 1 -MMIO -n\\r\n\
         expect Shell> \n\
         send mm 0xc000068 -w 8 -MMIO -n\\r\n\
         expect Shell> \n\
         send mm 0xc000041 0xff -w 1 -MMIO -n\\r\n\
         expect Shell> \n\
         send mm 0xc004008 1 -w 4 -MMIO -n\\r\n\
         expect Shell> \n\
         send reset\\r\n\
         expect UEFI firmware\n\
         expect Shell> \n\
         send mm 0xc000008 1 -w 4 -MMIO -n\\r\n\
         expect Shell> \n\
         send mm 0xc000080 0x00000180 -w 4 -MMIO -n\\r\n\
         expect Shell> \n\
         send mm 0xc000084 0x00000c00 -w 4 -MMIO -n\\r\n\
         expect Shell> \n\
         send mm 0xc000088 0x08007b01 -w 4 -MMIO -n\\r\n\
         expect Shell> \n\
         send mm 0xc00004c 1 -w 1 -MMIO -n\\r\n\
         expect Shell> \n\
         send mm 0xc000084 -w 4 -MMIO -n\\r\n\
         expect 0x00001400\n\
         expect Shell> \n\
         send mm 0xc000088 -w 4 -MMIO -n\\r\n\
         expect 0x08000000\n\
         expect Shell> \n\
         send reset -s\\r\n",
    );
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let c = &outcome.console;
    assert!(
        c.contains("vtpm-crb: write 0x1 to register 0x4c of locality 1 ignored"),
        "the START from locality 1 did not reach the CRB model\n{tail}"
    );
    assert!(
        c.contains("vtpm: bad command tag 0xffff"),
        "the garbage command did not reach the engine\n{tail}"
    );
    assert!(
        c.contains("0x000000000C000084 : 0x00001400")
            && c.contains("0x000000000C000088 : 0x08000000"),
        "TPM2_GetRandom after the reset did not succeed\n{tail}"
    );
    assert_eq!(
        c.matches("UEFI Interactive Shell").count(),
        2,
        "one shell per boot\n{tail}"
    );
    assert!(c.contains("VM 'uefi' powered off"), "\n{tail}");
    assert!(!c.contains("data abort injected"), "\n{tail}");
}

/// The firmware's GOP framebuffer is the VM's surface: the hypervisor offers
/// `etc/ramfb` in fw_cfg, EDK2's QemuRamfbDxe configures it (a big-endian
/// `RAMFBCfg` written by fw_cfg DMA) and draws its consoles into it with plain
/// stores; the render loop, finding the configuration, write-protects the
/// framebuffer's pages at stage 2 and composes what the firmware wrote. A
/// screendump at the shell shows text (pixels other than the background and
/// black inside the panel); after `ver` prints more lines a second screendump
/// differs inside the panel and nowhere else, and `display status` names the
/// framebuffer and reports damage since the first.
#[test]
fn the_firmware_screen_is_its_ramfb_tracked_by_stage_2() {
    use xtask::qmp::parse_ppm;
    let _g = boot_lock();
    let layout = Layout::detect();
    let shell = layout.out.join("test-scripts/ramfb-shell.ppm");
    let after = layout.out.join("test-scripts/ramfb-ver.ppm");
    for f in [&shell, &after] {
        let _ = std::fs::remove_file(f);
    }
    let o = uefi(
        "uefi-ramfb.script",
        &format!(
            "expect Shell> \n\
             sleep 3\n\
             screendump {}\n\
             monitor display status\n\
             send ver\\r\n\
             expect Shell> \n\
             sleep 3\n\
             screendump {}\n\
             monitor display status\n\
             send reset -s\\r\n",
            shell.display(),
            after.display()
        ),
    );
    let outcome = boot(&o);
    let tail = console_tail(&outcome);
    assert_eq!(outcome.ending, Ending::Exited(Some(0)), "\n{tail}");
    let c = &outcome.console;
    assert!(
        c.contains("display: ramfb "),
        "the firmware configured ramfb\n{tail}"
    );
    let statuses: Vec<&str> = c
        .lines()
        .filter(|l| l.contains("ok: display ") && l.contains("; framebuffer "))
        .collect();
    assert_eq!(
        statuses.len(),
        2,
        "two statuses naming the framebuffer\n{tail}"
    );
    assert!(
        !statuses[1].ends_with("0 damage rects since last status, none"),
        "the shell's new lines were recomposed: {}",
        statuses[1]
    );
    let (a, b) = [&shell, &after]
        .map(|f| parse_ppm(&std::fs::read(f).expect("screendump written")).expect("a PPM"))
        .into();
    let (px, py) = vgpu::present::DEFAULT_PANEL;
    let (px, py) = (px as u32, py as u32);
    // The firmware's text: neither the background around the panel nor black.
    let text = |img: &xtask::qmp::Image| {
        (py..img.height)
            .flat_map(|y| (px..img.width).map(move |x| (x, y)))
            .filter(|&(x, y)| {
                let p = img.at(x, y);
                p != 0 && p != vgpu::present::BACKGROUND
            })
            .count()
    };
    assert!(text(&a) > 0, "the shell screen shows text");
    assert_eq!(a.at(0, 0), vgpu::present::BACKGROUND, "outside the panel");
    let mut changed = 0;
    for y in 0..a.height {
        for x in 0..a.width {
            if a.at(x, y) != b.at(x, y) {
                assert!(x >= px && y >= py, "({x}, {y}) changed outside the panel");
                changed += 1;
            }
        }
    }
    assert!(changed > 0, "`ver`'s output changed the screen");
}
