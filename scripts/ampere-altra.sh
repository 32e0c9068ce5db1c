#!/usr/bin/env bash
# Bring-up script for the Ampere Altra Developer Platform (AADP): builds what the
# board boots and prints its first-boot checklist (cargo xtask build --board
# ampere-altra; the files land in target/boards/ampere-altra/).
#
# Ampere's UEFI starts EFI applications at EL2 and hands over ACPI tables. The
# script stages rayos-el2.efi and esp.img (a FAT EFI system partition holding
# \EFI\rayos\rayos-el2.efi and a startup.nsh that starts it; write it to a USB
# stick with `dd if=target/boards/ampere-altra/esp.img of=/dev/sdX bs=4M`). The
# application discovers the platform from Ampere's ACPI tables; the VM is a boot
# bundle copied onto the stick as \EFI\rayos\bundle.cpio.
#
#   scripts/ampere-altra.sh                 # build, stage, print the checklist
#   scripts/serial-console.sh /dev/ttyUSB0  # the board's console (115200 8N1)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo xtask build --board ampere-altra "$@"
