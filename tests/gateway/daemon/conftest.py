"""Fixtures and helpers for the daemon's end-to-end tests: real gateways on 127.0.0.1.

The deployment is the demo's (``build_topology``): real CAs, SVIDs served by real SPIFFE Workload
API servers over gRPC unix sockets, real TOML configs, audit logs and spools on disk. Gateways run
either in this process (``run_gateway``, exactly as ``sluice run`` calls it) or as a real
``sluice run`` subprocess when a test needs signals (SIGHUP, SIGKILL).
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from gateway.daemon.core import Gateway
from gateway.daemon.main import run_gateway
from gateway.demo.harness import resolver, workload_apis
from gateway.demo.topology import Topology, build_topology, free_port
from gateway.envelope.model import VerifiedEnvelope
from gateway.shim import DirectorySink, serve_receiver
from identity.workload_api_server import WorkloadApiServer

SLUICE = Path(sys.executable).parent / "sluice"


@pytest.fixture
def topo(tmp_path: Path) -> Topology:
    return build_topology(tmp_path)


@pytest.fixture
def apis(topo: Topology) -> Iterator[dict[str, WorkloadApiServer]]:
    """Both gateways' Workload API servers, running for the test."""
    with workload_apis(topo) as servers:
        yield servers


class CountingSink:
    """A DirectorySink that also counts, per envelope id, the accept() calls that delivered.

    DirectorySink cannot deliver twice by construction (atomic rename); the counter checks that the
    receiver never even *tried* a second successful delivery, and records every arrival.
    """

    def __init__(self, directory: Path) -> None:
        self.inner = DirectorySink(directory)
        self.delivered: Counter[bytes] = Counter()
        self.offered: Counter[bytes] = Counter()
        self.arrived = trio.Event()

    async def accept(self, envelope: VerifiedEnvelope) -> bool:
        envelope_id = envelope.claims.envelope_id
        self.offered[envelope_id] += 1
        ok = await self.inner.accept(envelope)
        if ok:
            self.delivered[envelope_id] += 1
            self.arrived.set()
        return ok

    def files(self) -> set[bytes]:
        return {bytes.fromhex(p.name) for p in self.inner.directory.iterdir() if "." not in p.name}


@dataclass
class InProcess:
    """A gateway run by ``run_gateway`` in this process, stoppable on its own."""

    gateway: Gateway
    scope: trio.CancelScope
    stopped: trio.Event = field(default_factory=trio.Event)

    async def stop(self) -> None:
        self.scope.cancel()
        with trio.fail_after(10):
            await self.stopped.wait()


async def start_gateway(nursery: trio.Nursery, config: Path) -> InProcess:
    scope = trio.CancelScope()
    stopped = trio.Event()

    async def runner(*, task_status: trio.TaskStatus[Gateway]) -> None:
        try:
            with scope:
                await run_gateway(config, task_status=task_status)
        finally:
            stopped.set()

    gateway: Gateway = await nursery.start(runner)
    return InProcess(gateway, scope, stopped)


async def start_receiver(nursery: trio.Nursery, topo: Topology, sink: CountingSink) -> None:
    async def runner(*, task_status: trio.TaskStatus[int]) -> None:
        await serve_receiver(
            "127.0.0.1",
            topo.receiver_port,
            name=str(topo.ledger_id),
            resolver=resolver(topo),
            sink=sink,
            task_status=task_status,
        )

    await nursery.start(runner)


async def http_get(port: int, path: str) -> tuple[int, str]:
    """One HTTP/1.1 GET on 127.0.0.1; returns (status, body)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        chunks = []
        while data := await stream.receive_some(65536):
            chunks.append(data)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def sample(text: str, name: str, **labels: str) -> float:
    """The value of sample ``name`` with exactly ``labels`` in a Prometheus text page (0 if
    absent)."""
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    return 0.0


async def metric(port: int, name: str, **labels: str) -> float:
    status, body = await http_get(port, "/metrics")
    assert status == 200
    return sample(body, name, **labels)


def edit(path: Path, old: str, new: str) -> None:
    """Replace ``old`` (which must occur) with ``new`` in a text file."""
    text = path.read_text()
    assert old in text, f"{old!r} not in {path}"
    path.write_text(text.replace(old, new))


def fixed_metrics_port(config: Path) -> int:
    """Give the config's HTTP port a fixed number (a subprocess cannot report port 0)."""
    port = free_port()
    edit(config, '[metrics]\nlisten = "127.0.0.1:0"', f'[metrics]\nlisten = "127.0.0.1:{port}"')
    return port


class GatewayProcess:
    """``sluice run --config FILE`` as a real subprocess; stderr goes to ``log``."""

    def __init__(self, config: Path, http_port: int, log: Path) -> None:
        self.config = config
        self.http_port = http_port
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as err:
            self.proc = subprocess.Popen(
                [str(SLUICE), "run", "--config", str(self.config)],
                stdout=subprocess.DEVNULL,
                stderr=err,
                cwd=self.config.parent,
            )

    async def wait_ready(self, timeout: float = 20.0) -> None:
        with trio.fail_after(timeout):
            while True:
                assert self.proc is not None and self.proc.poll() is None, self.log_text()
                try:
                    status, _ = await http_get(self.http_port, "/readyz")
                except OSError:
                    status = 0
                if status == 200:
                    break
                await trio.sleep(0.05)
        # readyz answers as soon as the listeners are up; the signal handler is installed by a
        # task started right after. Give it a moment so an early SIGHUP is not fatal.
        await trio.sleep(0.3)

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@pytest.fixture
def processes() -> Iterator[list[GatewayProcess]]:
    """Subprocess gateways a test started; all stopped at teardown."""
    started: list[GatewayProcess] = []
    yield started
    for proc in started:
        proc.stop()


def short_limits(config: Path, **limits: float) -> None:
    """Set ``[limits]`` keys in a gateway TOML (replacing the demo's two timeouts)."""
    lines = "".join(f"{k} = {v}\n" for k, v in limits.items())
    text = config.read_text()
    text = re.sub(r"\[limits\]\n(?:[a-z_]+ = [0-9.]+\n)*", "[limits]\n" + lines, text)
    config.write_text(text)


__all__ = [
    "CountingSink",
    "GatewayProcess",
    "InProcess",
    "edit",
    "fixed_metrics_port",
    "http_get",
    "metric",
    "sample",
    "short_limits",
    "start_gateway",
    "start_receiver",
]
