"""The systemd units: `systemd-analyze verify` in a throw-away root (with a negative check), the
privileges they grant, and the two runtime claims behind them, checked for real: the network apply
works with CAP_NET_ADMIN alone (in a fresh namespace), and the daemon's libraries run under
MemoryDenyWriteExecute (the kernel's PR_SET_MDWE, what systemd applies)."""

from __future__ import annotations

import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.appliance.conftest import time_limit
from tests.conftest import REPO_ROOT

UNIT_DIR = REPO_ROOT / "appliance" / "systemd"
UNITS = ("sluice-firstboot.service", "sluice-network.service", "sluice.service")
SLUICE = "/opt/sluice/venv/bin/sluice"
SYSTEMD_UNITS = Path("/usr/lib/systemd/system")


def _unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read(UNIT_DIR / name)
    return parser


def _fake_root(tmp: Path) -> Path:
    """A root holding systemd's own units, our units, and executables for every ExecStart*."""
    root = tmp / "root"
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copytree(SYSTEMD_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    for unit in UNITS:
        shutil.copy(UNIT_DIR / unit, root / "etc/systemd/system" / unit)
    for exe in (SLUICE, "/bin/kill", "/sbin/modprobe"):
        path = root / exe.lstrip("/")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("#!/bin/sh\n")
        path.chmod(0o755)
    return root


def _verify(root: Path, *units: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", *units],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=root,
    )


@pytest.fixture
def analyze_root(tmp_path: Path) -> Path:
    if shutil.which("systemd-analyze") is None or not SYSTEMD_UNITS.is_dir():
        reason = "systemd-analyze not installed (Debian package: systemd)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return _fake_root(tmp_path)


def test_units_pass_systemd_analyze_verify_without_a_warning(analyze_root: Path) -> None:
    done = _verify(analyze_root, *UNITS)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr


def test_verify_catches_a_broken_unit(analyze_root: Path) -> None:
    unit = analyze_root / "etc/systemd/system/sluice.service"
    text = unit.read_text()
    unit.write_text(text.replace("ProtectSystem=strict", "ProtectSystm=strict"))
    typo = _verify(analyze_root, "sluice.service")
    assert "Unknown key 'ProtectSystm'" in typo.stderr

    unit.write_text(text)
    (analyze_root / SLUICE.lstrip("/")).chmod(0o644)
    not_executable = _verify(analyze_root, "sluice.service")
    assert not_executable.returncode != 0
    assert f"Command {SLUICE} is not executable" in not_executable.stderr


def test_daemon_unit_is_unprivileged_and_checks_its_config() -> None:
    s = _unit("sluice.service")
    assert s["Service"]["User"] == "sluice"
    assert s["Service"]["CapabilityBoundingSet"] == ""
    assert s["Service"]["ExecStart"] == f"{SLUICE} run --config /etc/sluice/sluice.toml"
    assert s["Service"]["ExecStartPre"] == f"{SLUICE} config check /etc/sluice/sluice.toml"
    assert s["Service"]["ExecReload"] == "/bin/kill -HUP $MAINPID"
    for key, value in {
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "MemoryDenyWriteExecute": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "StateDirectory": "sluice",
    }.items():
        assert s["Service"][key] == value, key
    # A failed first boot keeps the daemon down.
    assert "sluice-firstboot.service" in s["Unit"]["Requires"].split()
    assert "sluice-firstboot.service" in s["Unit"]["After"].split()


def test_network_and_firstboot_units_grant_one_capability_each() -> None:
    net = _unit("sluice-network.service")
    assert net["Service"]["CapabilityBoundingSet"] == "CAP_NET_ADMIN"
    assert net["Service"]["Type"] == "oneshot"
    assert "sluice.service" in net["Unit"]["Before"].split()
    assert net["Service"]["ExecStart"].startswith(f"{SLUICE} appliance apply --config ")
    first = _unit("sluice-firstboot.service")
    assert first["Service"]["CapabilityBoundingSet"] == "CAP_CHOWN"
    assert first["Unit"]["ConditionPathExists"] == "!/etc/sluice/.firstboot-done"


NETWORK_TOML = """\
[appliance.weave]
interface = "wv0"
addresses = ["192.168.10.5/24"]
gateways = ["192.168.10.11", "192.168.10.12"]

[appliance.cilium]
interface = "cl0"
addresses = ["192.168.20.5/24"]
mtu = 1400
cluster_pool = "10.48.0.0/16"

[appliance.cilium.vxlan]
name = "vtep0"
mac = "02:53:4c:00:00:01"

[[appliance.cilium.nodes]]
name = "a"
underlay = "192.168.20.21"
pod_cidrs = ["10.48.1.0/24"]
"""


def _apply_with_caps(netns: str, caps: str, *args: str) -> subprocess.CompletedProcess[str]:
    """`sluice appliance ...` as root inside ``netns`` (no --netns: the host-namespace case of the
    unit) with the bounding set cut to ``caps``, as CapabilityBoundingSet= does."""
    sluice = str(Path(sys.executable).with_name("sluice"))
    return subprocess.run(
        [
            "ip",
            "netns",
            "exec",
            netns,
            "setpriv",
            f"--bounding-set=-all{caps}",
            "--inh-caps=-all",
            "--",
            sluice,
            "appliance",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.mark.netns
def test_network_apply_needs_cap_net_admin_and_nothing_else(
    netns_pair: tuple[str, str], tmp_path: Path
) -> None:
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv not installed (Debian package: util-linux)")
    gw, _ = netns_pair
    config = tmp_path / "network.toml"
    config.write_text(NETWORK_TOML)
    state = str(tmp_path / "state.json")
    with time_limit(60):
        refused = _apply_with_caps(gw, "", "apply", "--config", str(config), "--state", state)
        assert refused.returncode != 0, "apply without CAP_NET_ADMIN should fail"

        done = _apply_with_caps(
            gw, ",+net_admin", "apply", "--config", str(config), "--state", state
        )
        assert done.returncode == 0, done.stderr
        forward = subprocess.run(
            ["ip", "netns", "exec", gw, "cat", "/proc/sys/net/ipv4/ip_forward"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
        assert forward.stdout.strip() == "1"
        links = subprocess.run(
            ["ip", "-n", gw, "-br", "link", "show", "vtep0"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        assert links.returncode == 0, links.stderr

        again = _apply_with_caps(
            gw, ",+net_admin", "apply", "--config", str(config), "--state", state
        )
        assert again.returncode == 0 and again.stdout.strip() == "no changes", again.stdout
        gone = _apply_with_caps(gw, ",+net_admin", "teardown", "--state", state)
        assert gone.returncode == 0, gone.stderr


PR_SET_MDWE = 65
PR_MDWE_REFUSE_EXEC_GAIN = 1

# Runs in a child: switch on MDWE, prove it is on, then do what the daemon does with its native
# libraries (libsodium via PyNaCl, OpenSSL/Rust via cryptography, grpc, trio).
MDWE_CHILD = f"""
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) != 0:
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except PermissionError:
    pass
else:
    sys.exit("MDWE is not in force: a writable+executable mapping was allowed")
import nacl.signing, grpc, trio
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography import x509
key = nacl.signing.SigningKey.generate()
key.verify_key.verify(key.sign(b"envelope"))
other = ed25519.Ed25519PrivateKey.generate()
other.public_key().verify(other.sign(b"x"), b"x")
grpc.insecure_channel("unix:///nonexistent").close()
trio.run(trio.sleep, 0)
print("ok")
"""


def test_daemon_libraries_run_under_memory_deny_write_execute() -> None:
    done = subprocess.run(
        [sys.executable, "-c", MDWE_CHILD], capture_output=True, text=True, timeout=60, check=False
    )
    if done.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (Linux >= 6.3); systemd then uses seccomp")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
