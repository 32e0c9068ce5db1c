#!/usr/bin/env bash
# Serial-console helper for board bring-up: attaches to DEVICE at BAUD
# (default 115200, 8N1) and logs everything to LOG (default
# target/serial-<time>.log) so the first boot's diagnostic lines are kept.
#
#   scripts/serial-console.sh /dev/ttyUSB0 [BAUD] [LOG]
#
# Uses picocom if installed (exit: C-a C-x), else screen (exit: C-a k),
# else a raw `stty` + `cat` reader (exit: C-c).
set -euo pipefail
cd "$(dirname "$0")/.."
dev=${1:?usage: scripts/serial-console.sh DEVICE [BAUD] [LOG]}
baud=${2:-115200}
log=${3:-target/serial-$(date +%Y%m%d-%H%M%S).log}
[ -e "$dev" ] || { echo "serial-console: no such device: $dev" >&2; exit 2; }
mkdir -p "$(dirname "$log")"
echo "serial-console: $dev at $baud 8N1, logging to $log" >&2
if command -v picocom >/dev/null; then
    exec picocom --baud "$baud" --databits 8 --parity n --stopbits 1 --flow n --logfile "$log" "$dev"
elif command -v screen >/dev/null; then
    exec screen -L -Logfile "$log" "$dev" "$baud,cs8,-parenb,-cstopb"
else
    stty -F "$dev" "$baud" cs8 -parenb -cstopb raw -echo
    exec tee -a "$log" < "$dev"
fi
