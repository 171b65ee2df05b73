#!/usr/bin/env bash
# Boot the image built by scripts/build-image.sh under qemu (software emulation by default) with
# USER_DATA handed to first boot through qemu's fw_cfg, and copy the serial console to LOG.
# The guest writes nothing back: the journal is forwarded to the serial console
# (systemd.journald.forward_to_console=1), so LOG shows sluice-firstboot's and sluice's lines.
#
# Usage: scripts/boot-image-test.sh USER_DATA LOG
# Stops when the guest has booted (systemd prints "Startup finished": every boot job, sluice's
# units included, has succeeded or failed) and SETTLE more seconds have passed (so a daemon that
# dies right after starting shows in LOG), or after TIMEOUT seconds.
# Exit status: 0 booted, 1 timed out (LOG holds what was printed).
# Environment: SLUICE_IMAGE_DIR (/var/tmp/sluice-image), SLUICE_QEMU_ACCEL (tcg; kvm if you
#              want speed and have /dev/kvm), TIMEOUT (900), SETTLE (20), MEMORY (1024).
# The base image stays untouched: every boot runs on a fresh copy-on-write overlay.
set -euo pipefail

WORK="${SLUICE_IMAGE_DIR:-/var/tmp/sluice-image}"
ACCEL="${SLUICE_QEMU_ACCEL:-tcg}"
TIMEOUT="${TIMEOUT:-900}"
SETTLE="${SETTLE:-20}"
MEMORY="${MEMORY:-1024}"

die() { printf 'boot-image-test: error: %s\n' "$*" >&2; exit 2; }
[[ $# -eq 2 ]] || die "usage: $0 USER_DATA LOG"
USER_DATA="$(realpath "$1")"
LOG="$2"
[[ -f "$USER_DATA" ]] || die "user data $USER_DATA not found"
for f in sluice.qcow2 vmlinuz initrd.img; do
    [[ -f "$WORK/$f" ]] || die "$WORK/$f missing: run scripts/build-image.sh first"
done
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found (apt-get install qemu-system-x86)"

overlay="$(mktemp "$WORK/boot-XXXXXX.qcow2")"
qemu_pid=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
    if [[ -n "$qemu_pid" ]] && kill -0 "$qemu_pid" 2>/dev/null; then
        kill "$qemu_pid" 2>/dev/null || true
        wait "$qemu_pid" 2>/dev/null || true
    fi
    rm -f "$overlay"
}
trap cleanup EXIT
qemu-img create -q -f qcow2 -b "$WORK/sluice.qcow2" -F qcow2 "$overlay"
: >"$LOG"

start=$SECONDS
qemu-system-x86_64 -accel "$ACCEL" -m "$MEMORY" -smp 2 -display none -monitor none -no-reboot \
    -kernel "$WORK/vmlinuz" -initrd "$WORK/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 panic=-1 systemd.journald.forward_to_console=1" \
    -drive "file=$overlay,if=virtio,format=qcow2" \
    -nic user,model=virtio-net-pci \
    -fw_cfg "name=opt/sluice/user-data,file=$USER_DATA" \
    -serial "file:$LOG" &
qemu_pid=$!
printf '== boot-image-test: qemu (%s) pid %s, serial console -> %s\n' "$ACCEL" "$qemu_pid" "$LOG" >&2

booted=""
while ((SECONDS - start < TIMEOUT)); do
    kill -0 "$qemu_pid" 2>/dev/null || break
    if [[ -z "$booted" ]] && grep -q 'systemd\[1\]: Startup finished in' "$LOG"; then
        booted=$SECONDS
        printf '== boot-image-test: booted in %ss; settling %ss\n' "$((booted - start))" "$SETTLE" >&2
    fi
    if [[ -n "$booted" ]] && ((SECONDS - booted >= SETTLE)); then
        exit 0
    fi
    sleep 2
done
printf '== boot-image-test: boot did not finish after %ss\n' "$((SECONDS - start))" >&2
exit 1
