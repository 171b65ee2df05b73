#!/usr/bin/env bash
# Install sluice on a Debian machine (run as root inside the target: the Packer VM, or the
# debootstrap chroot of scripts/build-image.sh):
#   - system user and group `sluice` (the daemon's; no login, no home);
#   - /opt/sluice/venv from the wheels in $SLUICE_WHEELS, offline (sluice + all dependencies);
#   - the systemd units shipped in the wheel (appliance/systemd/*.service), enabled;
#   - /etc/sluice (root:sluice 0750) and /usr/local/bin/sluice.
# Idempotent: re-running upgrades sluice in place and leaves /etc/sluice's contents alone.
set -euo pipefail

WHEELS="${SLUICE_WHEELS:-/tmp/sluice-wheels}"
VENV="${SLUICE_VENV:-/opt/sluice/venv}"
UNIT_DIR=/etc/systemd/system
UNITS=(sluice-firstboot.service sluice-network.service sluice.service)

log() { printf '== install-sluice: %s\n' "$*" >&2; }
die() { printf 'install-sluice: error: %s\n' "$*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "must run as root"
compgen -G "$WHEELS/sluice-*.whl" >/dev/null || die "no sluice wheel in $WHEELS (build: pip wheel . -w DIR)"
python3 -c 'import ensurepip, venv' 2>/dev/null || die "python3-venv is not installed (apt-get install python3-venv)"

if ! getent group sluice >/dev/null; then
    log "creating group sluice"
    groupadd --system sluice
fi
if ! getent passwd sluice >/dev/null; then
    log "creating system user sluice"
    useradd --system --gid sluice --home-dir /var/lib/sluice --no-create-home \
        --shell /usr/sbin/nologin --comment "sluice gateway" sluice
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV"
    mkdir -p "$(dirname "$VENV")"
    python3 -m venv "$VENV"
fi
log "installing sluice from $WHEELS (offline)"
"$VENV/bin/pip" install --quiet --no-index --find-links "$WHEELS" --upgrade --force-reinstall \
    --disable-pip-version-check sluice
"$VENV/bin/sluice" --version >/dev/null || die "$VENV/bin/sluice does not run"

units_src="$("$VENV/bin/python" -c 'import os, appliance.systemd as m; print(os.path.dirname(m.__file__))')"
for unit in "${UNITS[@]}"; do
    [[ -f "$units_src/$unit" ]] || die "$unit missing from the wheel ($units_src)"
    install -m 0644 "$units_src/$unit" "$UNIT_DIR/$unit"
done
log "installed units: ${UNITS[*]}"

install -d -m 0750 -o root -g sluice /etc/sluice
ln -sfn "$VENV/bin/sluice" /usr/local/bin/sluice

if [[ -d /run/systemd/system ]]; then
    systemctl daemon-reload
fi
# `systemctl enable` works offline too (in a chroot it only creates the symlinks).
systemctl enable "${UNITS[@]}" 2>&1 | sed 's/^/   /' >&2
log "done: $("$VENV/bin/sluice" --version)"
