"""The image built from Debian's mirror only (scripts/build-image.sh: debootstrap, sluice's wheels,
its units, ext4 -> qcow2) boots under qemu's software emulation; first boot reads the user data
(through qemu's fw_cfg), `sluice config check` passes inside the guest and sluice.service starts.
A second boot with invalid user data shows the clear journal line and no daemon.

Slow (debootstrap ~1.5 min the first time, each TCG boot ~1-2 min): `pytest -m slow`.
Needs root, debootstrap, e2fsprogs, qemu-utils, qemu-system-x86 and the Debian mirror.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow

IMAGE_DIR = Path(os.environ.get("SLUICE_IMAGE_DIR", "/var/tmp/sluice-image"))
BUILD_SECONDS = 900
BOOT_SECONDS = 600
TOOLS = ("debootstrap", "mkfs.ext4", "qemu-img", "qemu-system-x86_64")

GATEWAY_TOML = """\
[gateway]
name = "gw-image"
spiffe_id = "spiffe://cilium.demo.example/sluice/gateway/gw-image"

[identity]
trust_domain = "cilium.demo.example"
source = "workload_api"
socket = "unix:///run/spire/sockets/agent.sock"

[anchor]
private_key = "keys/anchor.pem"
endorsement = "anchors/gw-cilium.endorsement"

[trust]
anchors_dir = "anchors"

[[networks]]
name = "cilium"
kind = "cilium"
listen = "127.0.0.1:7400"

[[scopes]]
name = "payments/ledger"
policy = "policies/payments-ledger.toml"

[[routes]]
scope = "payments/*"
network = "cilium"
address = "127.0.0.1:7500"

[audit]
path = "/var/lib/sluice/audit.log"

[spool]
dir = "/var/lib/sluice/spool"
"""


def _need_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("the image build needs root (debootstrap, chroot)")
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        reason = (
            f"missing {', '.join(missing)} (apt-get install debootstrap qemu-utils qemu-system-x86)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)


def _demo_files(tmp: Path) -> dict[str, bytes]:
    """A real anchor key, its endorsement and a policy, made by `sluice demo`."""
    demo = tmp / "demo"
    subprocess.run(
        [str(Path(sys.executable).with_name("sluice")), "demo", "--dir", str(demo)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return {
        "keys/anchor.pem": (demo / "keys/gw-cilium-anchor.pem").read_bytes(),
        "anchors/gw-cilium.endorsement": (demo / "anchors/gw-cilium.endorsement").read_bytes(),
        "policies/payments-ledger.toml": (demo / "policies/payments-ledger.toml").read_bytes(),
    }


def cloud_config(gateway_toml: str, files: dict[str, bytes]) -> str:
    """A #cloud-config with the gateway TOML under `sluice:` and the other files as write_files."""
    lines = ["#cloud-config", "write_files:"]
    for name, content in files.items():
        lines += [
            f"  - path: /etc/sluice/{name}",
            "    encoding: b64",
            "    permissions: '0640'",
            f"    content: {base64.b64encode(content).decode()}",
        ]
    lines.append("sluice:")
    lines.append("  config: |")
    lines += [f"    {line}" if line else "" for line in gateway_toml.splitlines()]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def image() -> Path:
    _need_tools()
    subprocess.run(
        [str(REPO_ROOT / "scripts/build-image.sh"), "image"],
        check=True,
        timeout=BUILD_SECONDS,
        env={**os.environ, "SLUICE_IMAGE_DIR": str(IMAGE_DIR)},
    )
    return IMAGE_DIR / "sluice.qcow2"


def _boot(user_data: Path, log: Path) -> str:
    result = subprocess.run(
        [str(REPO_ROOT / "scripts/boot-image-test.sh"), str(user_data), str(log)],
        timeout=BOOT_SECONDS + 60,
        env={**os.environ, "SLUICE_IMAGE_DIR": str(IMAGE_DIR), "TIMEOUT": str(BOOT_SECONDS)},
        check=False,
    )
    text = log.read_text(errors="replace")
    assert result.returncode == 0, f"guest did not finish booting; serial log tail:\n{text[-4000:]}"
    return text


def test_image_first_boot_configures_and_starts_sluice(image: Path, tmp_path: Path) -> None:
    user_data = tmp_path / "user-data"
    user_data.write_text(cloud_config(GATEWAY_TOML, _demo_files(tmp_path)))
    log = _boot(user_data, tmp_path / "serial.log")

    assert re.search(
        r"sluice-firstboot\[\d+\]: sluice-firstboot: /etc/sluice/sluice.toml written from "
        r"/sys/firmware/qemu_fw_cfg/by_name/opt/sluice/user-data/raw and checked: ok:",
        log,
    ), log[-4000:]
    # ExecStartPre=sluice config check, run as user sluice inside the daemon's sandbox.
    assert re.search(r"sluice\[\d+\]: ok: ", log), log[-4000:]
    assert "Started sluice.service" in log, log[-4000:]
    assert "Failed to start sluice.service" not in log
    assert "Dependency failed for sluice.service" not in log
    # The sandbox (seccomp filter, MemoryDenyWriteExecute) must not kill the daemon. Without a SPIRE
    # agent in the guest it may later exit for want of an SVID; that is not the sandbox's doing.
    assert "status=31/SYS" not in log


def test_image_invalid_user_data_keeps_the_daemon_down(image: Path, tmp_path: Path) -> None:
    files = _demo_files(tmp_path)
    broken = GATEWAY_TOML.replace('listen = "127.0.0.1:7400"', 'listen = "127.0.0.1:99999"')
    user_data = tmp_path / "user-data"
    user_data.write_text(cloud_config(broken, files))
    log = _boot(user_data, tmp_path / "serial.log")

    assert re.search(r"/etc/sluice/sluice.toml:\d+: networks\[0\]\.listen: ", log), log[-4000:]
    assert re.search(
        r"sluice-firstboot: /etc/sluice/sluice.toml: invalid configuration from "
        r"\S+ \(1 problem\(s\) above\); sluice.service will not start",
        log,
    ), log[-4000:]
    assert "Dependency failed for sluice.service" in log, log[-4000:]
    assert "Started sluice.service" not in log
