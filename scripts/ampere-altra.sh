#!/usr/bin/env bash
# Bring-up script for the Ampere Altra Developer Platform (AADP): builds what the
# board boots and prints its first-boot checklist (cargo xtask build --board
# ampere-altra; the files land in target/boards/ampere-altra/).
#
# Ampere's UEFI starts EFI applications and hands over ACPI tables; the
# hypervisor is not yet built as a UEFI application (rayos-el2.efi), so this
# script says what is missing and exits non-zero instead of writing boot media
# that cannot boot. Once rayos-el2.efi exists, the media are a FAT EFI system
# partition on a USB stick: \EFI\rayos\rayos-el2.efi and a startup.nsh that
# starts it.
#
#   scripts/ampere-altra.sh                 # build, stage, print the checklist
#   scripts/serial-console.sh /dev/ttyUSB0  # the board's console (115200 8N1)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo xtask build --board ampere-altra "$@"
