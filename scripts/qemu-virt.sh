#!/usr/bin/env bash
# Bring-up script for the QEMU `virt` board: boots RayOS EL2 under
# qemu-system-aarch64 at EL2 (virtualization=on, GICv3) with a VM packed into a
# boot bundle. It is a thin wrapper over `cargo xtask run`; every option is
# passed through, for example:
#
#   scripts/qemu-virt.sh                                  # Debian Linux guest on the terminal
#   scripts/qemu-virt.sh --guest selftest --headless      # self-test guest, verdict as exit code
#   scripts/qemu-virt.sh --guest-cmd 'cat /proc/interrupts' --headless
#   scripts/qemu-virt.sh --accel kvm                      # Arm64 host with nested virtualization
#
# Bring-up scripts for other boards follow the same shape: one file per board,
# `scripts/<board>.sh`, each a wrapper over an xtask command that knows how to
# put the image on that board (e.g. writing `target/rayos-el2.bin` and a boot
# bundle to an EFI system partition or a TFTP root for an Ampere Altra or a
# Snapdragon dev kit), so that the logic lives in xtask and is tested there.
# Only boards with a working xtask path get a script.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo xtask run "$@"
