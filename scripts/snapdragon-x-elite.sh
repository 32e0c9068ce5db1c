#!/usr/bin/env bash
# Bring-up script for Snapdragon X Elite boards (Snapdragon Dev Kit for
# Windows, X1E001DE; the X1E80100 CRD): builds what the board boots and prints
# its first-boot checklist with the EL2 hand-over steps (cargo xtask build
# --board snapdragon-x-elite; files in target/boards/snapdragon-x-elite/).
#
# EL2 belongs to Qualcomm's hypervisor until a Secure-Launch hand-over frees it
# (the slbounce project: tcblaunch.exe from an installed Windows, sltest.efi to
# check, slbounce.efi to hand over). The hypervisor then starts as a UEFI
# application (rayos-el2.efi, staged with esp.img) and takes the device tree
# from the EFI configuration table; its console is the board's Qualcomm GENI
# debug UART, driven as the firmware left it configured (untested on the board:
# see docs/boards.md).
#
#   scripts/snapdragon-x-elite.sh
#   scripts/serial-console.sh /dev/ttyUSB0   # the debug UART (115200 8N1)
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo xtask build --board snapdragon-x-elite "$@"
