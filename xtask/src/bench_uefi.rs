//! `cargo xtask bench uefi`: wall time from spawning QEMU to Debian's AAVMF
//! printing its UEFI shell prompt under the hypervisor (the `uefi-acpi` profile
//! from a boot bundle, variables in memory), against the same firmware on QEMU's
//! own `virt` (`-drive if=pflash`, no virtualization), measured in the same run.
//!
//! Both sides: [`TCG_CPU`], [`UEFI_VCPUS`] vCPU, [`UEFI_MEM`] of RAM, a fresh
//! (erased or template) variable store that the firmware formats, the PL011
//! console, and the virtio devices the firmware is shown (virtio-rng and a
//! virtio console; the hypervisor's virtio-gpu is not in the firmware's device
//! tree). [`UEFI_PAIRS`] alternating pairs; the medians are compared.

use std::process::Command;
use std::time::{Duration, Instant};

use regex::Regex;

use crate::bench_boot::median;
use crate::error::{tail_lines, Error};
use crate::qemu::{describe_exit, QemuLine, BARE_MACHINE, TCG_CPU};
use crate::run::{prepare, Profile, RunOptions, CONSOLE_TAIL_LINES};
use crate::session::{Session, WaitError};
use crate::Layout;

/// Alternating (hypervisor, bare) pairs measured.
pub const UEFI_PAIRS: usize = 3;
/// vCPUs and RAM of both sides.
pub const UEFI_VCPUS: u32 = 1;
pub const UEFI_MEM: u64 = 256 << 20;
/// Longest one boot to the shell may take.
pub const UEFI_TIMEOUT: Duration = Duration::from_secs(180);
/// The ratio the issue aims for (hypervisor median / bare median).
pub const UEFI_RATIO_TARGET: f64 = 1.1;
/// The shell's prompt.
pub const SHELL_PROMPT: &str = "Shell> ";

/// The bare side's command line: AAVMF's code read-only in pflash 0, a copy of
/// its variable-store template in pflash 1.
pub fn bare_line(code: &std::path::Path, vars: &std::path::Path) -> QemuLine {
    let mut line = QemuLine::new(BARE_MACHINE);
    line.push(["-cpu", TCG_CPU]);
    line.push(["-smp".into(), UEFI_VCPUS.to_string()]);
    line.push(["-m".into(), format!("{}M", UEFI_MEM >> 20)]);
    line.push([
        "-drive".into(),
        format!(
            "if=pflash,format=raw,unit=0,readonly=on,file={}",
            code.display()
        ),
    ]);
    line.push([
        "-drive".into(),
        format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
    ]);
    line.push(["-device", "virtio-rng-device"]);
    line.push(["-device", "virtio-serial-device"]);
    line
}

/// Spawns `cmd` and times the first shell prompt; QEMU is killed then.
fn time_to_shell(cmd: Command, prompt: &Regex) -> Result<f64, String> {
    let start = Instant::now();
    let mut session =
        Session::spawn(cmd, false, UEFI_TIMEOUT).map_err(|e| format!("cannot start QEMU: {e}"))?;
    let waited = session.expect(prompt).map(|()| start.elapsed());
    session.kill();
    let why = match waited {
        Ok(t) => return Ok(t.as_secs_f64()),
        Err(WaitError::TimedOut) => format!("no `{SHELL_PROMPT}` within {UEFI_TIMEOUT:?}"),
        Err(WaitError::Exited(code)) => format!("{} before `{SHELL_PROMPT}`", describe_exit(code)),
    };
    Err(format!(
        "{why}\n--- last {CONSOLE_TAIL_LINES} console lines ---\n{}\n---",
        tail_lines(session.output(), CONSOLE_TAIL_LINES)
    ))
}

/// `cargo xtask bench uefi`.
pub fn run_uefi(layout: &Layout) -> Result<String, Error> {
    let aavmf =
        crate::firmware::ensure_aavmf(&layout.firmware_cache(), &layout.guest_cache().join("apt"))
            .map_err(|e| Error::step("firmware", e))?;
    let o = RunOptions {
        profile: Profile::UefiAcpi,
        firmware_shell: true,
        firmware: Some(aavmf.code.clone()),
        smp: Some(UEFI_VCPUS),
        mem: Some(UEFI_MEM),
        ..RunOptions::headless(Default::default(), UEFI_TIMEOUT)
    };
    let prepared = prepare(layout, &o)?;
    let vars = layout.out.join("bench-uefi-vars.fd");
    let bare = bare_line(&aavmf.code, &vars);
    eprintln!("xtask: bench uefi: hypervisor: {}", prepared.display());
    eprintln!("xtask: bench uefi: bare:       {}", bare.display());
    let prompt = Regex::new(&regex::escape(SHELL_PROMPT)).expect("a valid regex");
    let mut hyp = Vec::new();
    let mut bare_s = Vec::new();
    for i in 1..=UEFI_PAIRS {
        let h = time_to_shell(prepared.command(), &prompt)
            .map_err(|e| Error::step("bench uefi (hypervisor)", e))?;
        std::fs::copy(&aavmf.vars, &vars)
            .map_err(|e| Error::io(format!("copy {}", aavmf.vars.display()), e))?;
        let b = time_to_shell(bare.command(), &prompt)
            .map_err(|e| Error::step("bench uefi (bare)", e))?;
        eprintln!("xtask: bench uefi: pair {i}/{UEFI_PAIRS}: hyp {h:.3} s, bare {b:.3} s");
        hyp.push(h);
        bare_s.push(b);
    }
    let _ = std::fs::remove_file(&vars);
    let (Some(h), Some(b)) = (median(&hyp), median(&bare_s)) else {
        return Err(Error::step("bench uefi", "no pairs measured"));
    };
    let ratio = h / b;
    let verdict = if ratio <= UEFI_RATIO_TARGET {
        "within"
    } else {
        "above"
    };
    println!(
        "spawn to `{SHELL_PROMPT}` (medians of {UEFI_PAIRS} pairs): hypervisor {h:.3} s, bare QEMU {b:.3} s, ratio {ratio:.3} ({verdict} the target {UEFI_RATIO_TARGET})"
    );
    Ok(format!("uefi hyp_s={h:.3} bare_s={b:.3} ratio={ratio:.3}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_line_has_both_flash_banks_and_no_virtualization() {
        let l = bare_line("/t/CODE.fd".as_ref(), "/t/VARS.fd".as_ref());
        let a = l.args().join(" ");
        assert!(a.contains("if=pflash,format=raw,unit=0,readonly=on,file=/t/CODE.fd"));
        assert!(a.contains("if=pflash,format=raw,unit=1,file=/t/VARS.fd"));
        assert!(!a.contains("virtualization=on"), "{a}");
        assert_eq!(crate::qemu::default_devices(&l), None, "{a}");
    }
}
