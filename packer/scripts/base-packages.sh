#!/usr/bin/env bash
# Debian packages the appliance needs on top of the cloud image: python3-venv for sluice's own
# virtual environment, iproute2 for operators (sluice itself talks rtnetlink through pyroute2).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
[[ $EUID -eq 0 ]] || { echo "base-packages: error: must run as root" >&2; exit 1; }
# cloud-init may still be running apt on the first boot of the base image.
if command -v cloud-init >/dev/null; then cloud-init status --wait >/dev/null || true; fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends python3 python3-venv iproute2 ca-certificates >/dev/null
echo "== base-packages: $(python3 --version), $(ip -V)" >&2
