//! The `uefi-acpi` profile (issue 14): Debian's AAVMF, unmodified, boots under
//! the hypervisor from its emulated flash to the UEFI shell on the serial console,
//! with its ACPI tables from fw_cfg; a variable the shell writes goes through the
//! CFI model of the variable-store bank and is read back after a VM reset.

use std::time::Duration;

use integration_tests::{boot, boot_lock, console_tail, script};
use xtask::run::{Ending, Profile, RunOptions};

/// Generous for TCG: the firmware reaches its shell in well under a minute.
const TIMEOUT: Duration = Duration::from_secs(300);

/// A vendor GUID of this test's own.
const GUID: &str = "6a1c0f2e-5b3d-4c7a-9e81-2f4d6b8a0c13";

fn uefi(script_name: &str, text: &str) -> RunOptions {
    RunOptions {
        profile: Profile::UefiAcpi,
        firmware_shell: true,
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
