#!/usr/bin/env bash
# Build the sluice appliance image from Debian's package mirror only (no cloud base image needed):
#
#   1. debootstrap a minimal Debian root (systemd, kernel + initramfs, python3-venv, iproute2);
#   2. build sluice and its dependencies as wheels on the host (`pip wheel`), then install them
#      offline into /opt/sluice/venv inside the root with packer/scripts/install-sluice.sh, the
#      same script the Packer build runs, which also installs the systemd units and /etc/sluice;
#   3. make an ext4 filesystem from the root (`mkfs.ext4 -d`) and convert it to qcow2.
#
# The qcow2 holds one bare ext4 filesystem (no partition table, no bootloader): it is booted by
# qemu's direct kernel boot with the kernel and initrd copied next to it (see docs/appliance.md).
#
# Usage: scripts/build-image.sh [rootfs|image]   (default: image = everything)
# Environment: SLUICE_IMAGE_DIR (default /var/tmp/sluice-image), DEBIAN_SUITE (bookworm),
#              DEBIAN_MIRROR (http://deb.debian.org/debian), IMAGE_SIZE (2G),
#              SLUICE_PYTHON (python used to build the wheels; default: the repo's .venv or python3).
# Idempotent: the debootstrap step is skipped when its root is complete; the install and image
# steps are redone every run (they take seconds). Needs root, debootstrap, e2fsprogs, qemu-utils.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WORK="${SLUICE_IMAGE_DIR:-/var/tmp/sluice-image}"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SIZE="${IMAGE_SIZE:-2G}"
TARGET="${1:-image}"
ROOT="$WORK/rootfs"
PACKAGES="systemd-sysv,udev,kmod,dbus,linux-image-amd64,initramfs-tools,python3,python3-venv,iproute2,ca-certificates"

log() { printf '== build-image: %s\n' "$*" >&2; }
die() { printf 'build-image: error: %s\n' "$*" >&2; exit 1; }
elapsed() { printf '%ss' "$((SECONDS - $1))"; }

case "$TARGET" in rootfs | image) ;; *) die "unknown target '$TARGET' (expected rootfs or image)" ;; esac
[[ $EUID -eq 0 ]] || die "must run as root (debootstrap, chroot, mkfs)"
for tool in debootstrap mkfs.ext4 qemu-img chroot; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install debootstrap e2fsprogs qemu-utils)"
done

mkdir -p "$WORK/debcache"

MOUNTS=()
cleanup() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTS[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
chroot_mounts() {
    local fs
    for fs in proc sys dev; do
        mountpoint -q "$ROOT/$fs" || { mount --rbind "/$fs" "$ROOT/$fs" && mount --make-rslave "$ROOT/$fs"; }
        MOUNTS+=("$ROOT/$fs")
    done
}

# -- 1. Debian root ------------------------------------------------------------------------------
step_rootfs() {
    if [[ -f "$ROOT/.sluice-debootstrap-done" ]]; then
        log "debootstrap: $ROOT already complete, skipped"
        return
    fi
    local t0=$SECONDS
    rm -rf "$ROOT"
    log "debootstrap $SUITE from $MIRROR into $ROOT (packages: $PACKAGES)"
    debootstrap --variant=minbase --include="$PACKAGES" --cache-dir="$WORK/debcache" \
        "$SUITE" "$ROOT" "$MIRROR"
    # A machine-id is generated on first boot; an empty file marks the image as "not booted yet".
    : >"$ROOT/etc/machine-id"
    echo sluice >"$ROOT/etc/hostname"
    printf '/dev/vda / ext4 defaults,errors=remount-ro 0 1\n' >"$ROOT/etc/fstab"
    # DHCP on the first NIC (qemu user networking): systemd-networkd is part of systemd.
    mkdir -p "$ROOT/etc/systemd/network"
    printf '[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n' >"$ROOT/etc/systemd/network/80-dhcp.network"
    chroot "$ROOT" systemctl enable systemd-networkd.service >/dev/null
    # The console is the serial port: no getty on tty1 to wait for, a root login on ttyS0 is locked.
    chroot "$ROOT" passwd -l root >/dev/null
    touch "$ROOT/.sluice-debootstrap-done"
    log "debootstrap done in $(elapsed "$t0")"
}

# -- 2. sluice -----------------------------------------------------------------------------------
step_install() {
    local t0=$SECONDS py wheels="$WORK/wheels"
    py="${SLUICE_PYTHON:-}"
    if [[ -z "$py" ]]; then
        if [[ -x "$REPO/.venv/bin/python" ]]; then py="$REPO/.venv/bin/python"; else py=python3; fi
    fi
    log "building wheels for sluice and its dependencies into $wheels"
    rm -rf "$wheels" "$WORK/build"
    mkdir -p "$wheels"
    # Build from a copy so the source tree gets no build/ or egg-info debris.
    mkdir -p "$WORK/build"
    tar -C "$REPO" --exclude=.venv --exclude=.git --exclude='*.egg-info' --exclude=build \
        --exclude=__pycache__ --exclude=.mypy_cache --exclude=.ruff_cache --exclude=.pytest_cache \
        -cf - . | tar -C "$WORK/build" -xf -
    "$py" -m pip wheel --quiet --wheel-dir "$wheels" "$WORK/build"
    rm -rf "$WORK/build"
    log "installing sluice into the root (offline, from $(find "$wheels" -name '*.whl' | wc -l) wheels)"
    rm -rf "$ROOT/tmp/sluice-wheels" "$ROOT/tmp/install-sluice.sh"
    cp -r "$wheels" "$ROOT/tmp/sluice-wheels"
    install -m 0755 "$REPO/packer/scripts/install-sluice.sh" "$ROOT/tmp/install-sluice.sh"
    chroot_mounts
    # A clean environment: the host's PIP_* settings (find-links, index) mean nothing in the root.
    chroot "$ROOT" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        SLUICE_WHEELS=/tmp/sluice-wheels /tmp/install-sluice.sh
    rm -rf "$ROOT/tmp/sluice-wheels" "$ROOT/tmp/install-sluice.sh" "$wheels"
    cleanup
    MOUNTS=()
    log "sluice installed in $(elapsed "$t0")"
}

# -- 3. image ------------------------------------------------------------------------------------
step_image() {
    local t0=$SECONDS raw="$WORK/sluice.raw" kernel initrd
    kernel="$(find "$ROOT/boot" -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n1)"
    initrd="$(find "$ROOT/boot" -maxdepth 1 -name 'initrd.img-*' | sort -V | tail -n1)"
    [[ -n "$kernel" && -n "$initrd" ]] || die "no kernel or initrd in $ROOT/boot"
    cp "$kernel" "$WORK/vmlinuz"
    cp "$initrd" "$WORK/initrd.img"
    log "making a $SIZE ext4 filesystem from $ROOT"
    rm -f "$raw"
    mkfs.ext4 -q -F -L sluice-root -d "$ROOT" "$raw" "$SIZE"
    qemu-img convert -f raw -O qcow2 -c "$raw" "$WORK/sluice.qcow2.tmp"
    mv "$WORK/sluice.qcow2.tmp" "$WORK/sluice.qcow2"
    rm -f "$raw"
    log "image ready in $(elapsed "$t0"): $WORK/sluice.qcow2 (+ vmlinuz, initrd.img)"
}

step_rootfs
if [[ "$TARGET" == image ]]; then
    step_install
    step_image
fi
