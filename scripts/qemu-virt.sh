#!/usr/bin/env bash
# Bring-up script for the QEMU `virt` board: prints the board's first-boot
# checklist (cargo xtask build --board qemu-virt), then boots RayOS EL2 under
# qemu-system-aarch64 at EL2 (virtualization=on, GICv3) with a VM packed into a
# boot bundle. A thin wrapper over `cargo xtask run`; every option is passed
# through, for example:
#
#   scripts/qemu-virt.sh                                  # Debian Linux guest on the terminal
#   scripts/qemu-virt.sh --guest selftest --headless      # self-test guest, verdict as exit code
#   scripts/qemu-virt.sh --cpu cortex-a57 --guest selftest --headless   # another CPU model
#   scripts/qemu-virt.sh --guest-cmd 'cat /proc/interrupts' --headless
#   scripts/qemu-virt.sh --boot efi                       # through AAVMF at EL2 and rayos-el2.efi
#
# One script per board (scripts/<board>.sh), each a wrapper over xtask, where
# the logic lives and is tested; docs/boards.md describes them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo xtask build --board qemu-virt >&2
exec cargo xtask run "$@"
