"""Fixtures for the appliance tests: configurations, throw-away network namespaces, time limits."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

# Absolute limit for every namespace test: setup, apply, checks and teardown together.
NETNS_TEST_SECONDS = 30

_counter = itertools.count()


def base_config() -> dict[str, Any]:
    """A valid [appliance] table (as tomllib would return it) for the test topology."""
    return {
        "weave": {
            "interface": "wv0",
            "addresses": ["192.168.10.5/24"],
            "gateways": ["192.168.10.11", "192.168.10.12"],
        },
        "cilium": {
            "interface": "cl0",
            "addresses": ["192.168.20.5/24"],
            "mtu": 1400,
            "cluster_pool": "10.48.0.0/16",
            "vxlan": {"name": "vtep0", "mac": "02:53:4c:00:00:01"},
            "nodes": [
                {"name": "a", "underlay": "192.168.20.21", "pod_cidrs": ["10.48.1.0/24"]},
                {
                    "name": "b",
                    "underlay": "192.168.20.22",
                    "pod_cidrs": ["10.48.2.0/24", "10.48.3.0/24"],
                    "vtep_mac": "02:aa:bb:cc:dd:02",
                },
            ],
        },
    }


class _TimeLimit(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Fail the test (SIGALRM in the main thread) when the block runs longer than ``seconds``."""

    def expire(signum: int, frame: FrameType | None) -> None:
        raise _TimeLimit(f"test exceeded its absolute limit of {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def ip(*args: str) -> str:
    """Run iproute2 (an independent check of what pyroute2 did) and return its stdout."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if done.returncode != 0:
        raise AssertionError(f"ip {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def ipj(*args: str) -> Any:
    return json.loads(ip("-j", *args) or "[]")


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], seconds: float, log: Path) -> None:
    """Wait until ``proc`` creates ``path`` (its readiness marker); fail with its log if it
    exits or takes longer than ``seconds``."""
    give_up = time.monotonic() + seconds
    while not path.exists():
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text(errors='replace')}"
        assert time.monotonic() < give_up, f"{path} not created: {log.read_text(errors='replace')}"
        time.sleep(0.05)


def stop_process(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s: test processes never outlive their test."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _can_use_netns() -> str | None:
    if os.geteuid() != 0:
        return "needs root"
    if shutil.which("ip") is None:
        return "needs iproute2"
    return None


@pytest.fixture
def netns_pair() -> Iterator[tuple[str, str]]:
    """Two fresh namespaces, the appliance ``gw`` and its neighbours ``peer``, joined by veths.

    gw has ``wv0`` (down, already holding 192.168.10.5/24, as a NIC configured before sluice)
    and ``cl0`` (up, MTU 1500); their peers live in ``peer``. Both namespaces are deleted after
    the test, also when it fails.
    """
    reason = _can_use_netns()
    if reason:
        pytest.skip(reason)
    tag = f"{os.getpid()}-{next(_counter)}"
    gw, peer = f"sluice-gw-{tag}", f"sluice-peer-{tag}"
    created: list[str] = []
    try:
        for name in (gw, peer):
            ip("netns", "add", name)
            created.append(name)
        ip("-n", gw, "link", "add", "wv0", "type", "veth", "peer", "name", "wv0p", "netns", peer)
        ip("-n", gw, "link", "add", "cl0", "type", "veth", "peer", "name", "cl0p", "netns", peer)
        ip("-n", gw, "addr", "add", "192.168.10.5/24", "dev", "wv0")
        ip("-n", gw, "link", "set", "cl0", "up")
        ip("-n", gw, "link", "set", "lo", "up")
        for dev in ("wv0p", "cl0p"):
            ip("-n", peer, "link", "set", dev, "up")
        yield gw, peer
    finally:
        for name in created:
            subprocess.run(
                ["ip", "netns", "del", name], capture_output=True, timeout=10, check=False
            )
