//! `cargo xtask build --board NAME`: the artifacts and first-boot checklist for
//! one board of `boards::BOARDS`, staged in `target/boards/NAME/`.
//!
//! Every board gets the arm64 Image (`rayos-el2.bin`), the UEFI application
//! (`rayos-el2.efi`) and an EFI system partition image holding it with a
//! `startup.nsh` (`esp.img`, written to a USB stick with `dd`; `efi.rs`). What
//! a board needs that does not exist yet is said, not faked: the media are
//! reported incomplete and the command fails after staging what exists.

use std::fs;
use std::path::PathBuf;

use boards::board::{Board, Quirk, UartKind};

use crate::build::build_hypervisor;
use crate::error::Error;
use crate::Layout;

/// Board names, for usage messages.
pub fn board_names() -> Vec<&'static str> {
    boards::BOARDS.iter().map(|b| b.name).collect()
}

/// The board called `name`, or a usage error listing the known ones.
pub fn board(name: &str) -> Result<&'static Board, Error> {
    Board::by_name(name).ok_or_else(|| {
        Error::Usage(format!(
            "unknown board `{name}`; known boards: {}",
            board_names().join(", ")
        ))
    })
}

/// What the board's boot media still lack, each with why (nothing, for every
/// board today: the Snapdragon's GENI console driver exists, see `checklist`).
pub fn missing(_b: &Board) -> Vec<&'static str> {
    Vec::new()
}

/// The serial console's settings, from the board description.
fn console_line(b: &Board) -> String {
    let kind = match b.uart.kind {
        UartKind::Pl011 => "PL011",
        UartKind::QcomGeni => "Qualcomm GENI UART",
    };
    let irq = b
        .uart
        .intid
        .map_or(String::new(), |i| format!(", INTID {i}"));
    format!(
        "serial console: {kind} at {:#x}{irq}, 115200 8N1 (scripts/serial-console.sh DEVICE)",
        b.uart.regs.base
    )
}

/// The first-boot checklist for `b`, one item a line.
pub fn checklist(b: &Board) -> Vec<String> {
    let mut c = Vec::new();
    match b.name {
        "qemu-virt" => {
            c.push(
                "boot: scripts/qemu-virt.sh (cargo xtask run; --cpu MODEL picks QEMU's CPU)".into(),
            );
        }
        "ampere-altra" => {
            c.push("firmware: Ampere's UEFI (TF-A at EL3, EDK2 at EL2) hands over ACPI, no device tree".into());
            c.push("boot media: a USB stick with a FAT EFI system partition holding \\EFI\\rayos\\rayos-el2.efi and startup.nsh".into());
            c.push("boot: UEFI Shell (boot manager) -> fs0:\\EFI\\rayos\\rayos-el2.efi".into());
            c.push("the VM: copy a boot bundle (target/bundles/NAME.cpio) onto the stick as \\EFI\\rayos\\bundle.cpio (ACPI describes no virtio system disk)".into());
            c.push("expect `RayOS EL2 UEFI application: the firmware hands over ACPI tables and no device tree; ...` then `... at EL2: loaded at ...` from the firmware's console; `not started: ...` names what the firmware lacks".into());
        }
        "snapdragon-x-elite" => {
            c.push("firmware: Qualcomm UEFI; EL2 is held by Qualcomm's hypervisor until a Secure-Launch hand-over".into());
            c.push("hand-over files on the EFI system partition: tcblaunch.exe copied from an installed Windows (C:\\Windows\\System32\\tcblaunch.exe), sltest.efi and slbounce.efi built from the slbounce project".into());
            c.push("check the hand-over first: UEFI Shell -> sltest.efi <absolute path to tcblaunch.exe> must report EL2".into());
            c.push("device tree: x1e001de-devkit.dtb (Linux >= 6.14) or x1e80100-crd.dtb for the CRD, installed in the EFI configuration table (a DTB-loading EFI driver) before rayos-el2.efi starts: the application takes the device tree from there".into());
            c.push("Secure Boot off (slbounce and the hypervisor are not Microsoft-signed)".into());
        }
        _ => {}
    }
    c.push(console_line(b));
    if b.has_quirk(Quirk::ConsoleNotPl011) {
        c.push("console: el2 drives the Qualcomm GENI debug UART as the firmware left it (clocks, pins, baud rate, FIFO packing); no output there after the hand-over means the firmware did not leave it configured (untested on the board)".into());
    }
    c.push(
        "expect first: `RayOS EL2 ... starting at EL2`, then the `diagnostic: CPU ...` line".into(),
    );
    c.push(format!(
        "expect `platform: ... ({})`: the board was recognised; `unknown board` means the firmware's identity differs",
        b.name
    ));
    c.push(format!(
        "no `board {}: ... the firmware says ...` line may appear: each one is a figure of the description that the firmware contradicts",
        b.name
    ));
    c.push("`diagnostic: CPU` must show GIC-sysregs=v3 or v4.1; `this CPU cannot run RayOS EL2` names what is missing".into());
    c.push(format!(
        "`diagnostic: GIC` must show GICD {:#x}; `diagnostic: memory` lines must add up to the installed RAM",
        b.gic.gicd.base
    ));
    c.push(
        "`diagnostic: Windows guests` tells whether the CPU has the LSE atomics Windows needs"
            .into(),
    );
    c
}

/// What [`stage`] produced.
#[derive(Debug)]
pub struct Staged {
    pub dir: PathBuf,
    pub files: Vec<PathBuf>,
    pub missing: Vec<&'static str>,
    pub checklist: Vec<String>,
}

/// Builds the hypervisor and stages the board's files and checklist in
/// `target/boards/NAME/`.
pub fn stage(layout: &Layout, b: &Board) -> Result<Staged, Error> {
    let image = build_hypervisor(layout, false)?;
    let dir = layout.out.join("boards").join(b.name);
    fs::create_dir_all(&dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let staged_image = dir.join("rayos-el2.bin");
    fs::copy(&image, &staged_image)
        .map_err(|e| Error::io(format!("copy to {}", staged_image.display()), e))?;
    let esp = crate::efi::build_esp(layout, false, None)?;
    let mut files = vec![staged_image];
    for (from, name) in [
        (crate::efi::efi_path(layout), "rayos-el2.efi"),
        (esp, "esp.img"),
    ] {
        let to = dir.join(name);
        fs::copy(&from, &to).map_err(|e| Error::io(format!("copy to {}", to.display()), e))?;
        files.push(to);
    }
    let checklist = checklist(b);
    let missing = missing(b);
    let mut text = format!("First-boot checklist for {}\n\n", b.name);
    for (i, item) in checklist.iter().enumerate() {
        text.push_str(&format!("{:2}. {item}\n", i + 1));
    }
    if !missing.is_empty() {
        text.push_str("\nNot bootable yet; missing:\n");
        for m in &missing {
            text.push_str(&format!("  - {m}\n"));
        }
    }
    let list = dir.join("CHECKLIST.txt");
    fs::write(&list, text).map_err(|e| Error::io(format!("write {}", list.display()), e))?;
    files.push(list);
    Ok(Staged {
        dir,
        files,
        missing,
        checklist,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_board_is_known_and_unknown_names_list_them() {
        for name in ["qemu-virt", "ampere-altra", "snapdragon-x-elite"] {
            assert_eq!(board(name).unwrap().name, name);
        }
        let Err(Error::Usage(msg)) = board("rpi4") else {
            panic!("an unknown board must be a usage error")
        };
        assert!(
            msg.contains("qemu-virt, ampere-altra, snapdragon-x-elite"),
            "{msg}"
        );
    }

    #[test]
    fn every_board_has_its_media_complete() {
        assert!(missing(board("qemu-virt").unwrap()).is_empty());
        // rayos-el2.efi discovers an ACPI-only platform (tests/tests/boards.rs).
        assert!(missing(board("ampere-altra").unwrap()).is_empty());
        assert!(missing(board("snapdragon-x-elite").unwrap()).is_empty());
    }

    #[test]
    fn checklists_carry_the_description_figures() {
        let c = checklist(board("ampere-altra").unwrap()).join("\n");
        assert!(c.contains("PL011 at 0x100002600000, INTID 98"), "{c}");
        assert!(c.contains("GICD 0x100100000000"), "{c}");
        let c = checklist(board("snapdragon-x-elite").unwrap()).join("\n");
        assert!(
            c.contains("Qualcomm GENI UART at 0x894000, INTID 845"),
            "{c}"
        );
        assert!(c.contains("tcblaunch.exe"), "{c}");
        assert!(
            c.contains("el2 drives the Qualcomm GENI debug UART as the firmware left it"),
            "{c}"
        );
        let c = checklist(board("qemu-virt").unwrap()).join("\n");
        assert!(c.contains("scripts/qemu-virt.sh"), "{c}");
        assert!(c.contains("platform: ... (qemu-virt)"), "{c}");
    }
}
