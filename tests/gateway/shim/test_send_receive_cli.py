"""`sluice send | receive | shim` arguments and errors (CliRunner), and real `sluice send` and
`sluice receive` subprocesses through the demo's two running gateways."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio
from click.testing import CliRunner

from gateway.cli import main
from gateway.demo.harness import links_up, workload_apis
from gateway.demo.topology import CILIUM, WEAVE, Topology, build_topology, free_port
from identity.anchors import save_private_key
from tests.gateway.daemon.conftest import start_gateway

SLUICE = Path(sys.executable).parent / "sluice"


@pytest.fixture
def topo(tmp_path: Path) -> Topology:
    return build_topology(tmp_path)


def _key(topo: Topology) -> Path:
    path = topo.root / "keys" / "orders-anchor.pem"
    if not path.exists():
        save_private_key(topo.orders.anchor, path)
    return path


def _send_args(topo: Topology, gateway: str, *extra: str) -> list[str]:
    return [
        "send", "--gateway", gateway, "--key", str(_key(topo)),
        "--issuer", str(topo.orders.spiffe_id), "--scope", "orders/intake",
        "--to-scope", "payments/ledger", "--to-id", str(topo.ledger_id), "--tier", "internal",
        "--lineage", topo.lineage("orders/intake").hex(),
        "--transit", WEAVE.name, "--transit", CILIUM.name, "--max-hops", "2", *extra,
    ]  # fmt: skip


def _receive_args(topo: Topology, listen: str, out: Path) -> list[str]:
    return [
        "receive", "--listen", listen, "--name", str(topo.ledger_id),
        "--bundle", f"{WEAVE.name}={topo.root / 'bundles' / (WEAVE.name + '.pem')}",
        "--bundle", f"{CILIUM.name}={topo.root / 'bundles' / (CILIUM.name + '.pem')}",
        "--anchors", str(topo.anchors_dir), "--out", str(out),
    ]  # fmt: skip


def _one_line_error(result: object, needle: str) -> None:
    output = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 3, output  # type: ignore[attr-defined]
    assert output.startswith("error:") and output.count("\n") == 1, output
    assert needle in output, output
    assert "Traceback" not in output


def test_send_argument_errors(topo: Topology, tmp_path: Path) -> None:
    runner = CliRunner()
    payload = tmp_path / "p"
    payload.write_bytes(b"x")
    good = f"127.0.0.1:{free_port()}"
    cases = [
        (_send_args(topo, "no-port", str(payload)), "expected HOST:PORT"),
        (_send_args(topo, "127.0.0.1:99999", str(payload)), "expected HOST:PORT"),
        ([*_send_args(topo, good, str(payload)), "--tier", "cosmic"], "expected 0..255"),
        ([*_send_args(topo, good, str(payload)), "--lineage", "abc"], "--lineage"),
        ([*_send_args(topo, good, str(payload)), "--key", str(tmp_path / "nokey")], "nokey"),
        ([*_send_args(topo, good, str(payload)), "--issuer", "spiffe://BAD/x"], "error"),
        ([*_send_args(topo, good, str(payload)), "--transit", "Bad Domain"], "error"),
        (_send_args(topo, good, str(tmp_path / "absent")), "cannot read"),
    ]
    for args, needle in cases:
        _one_line_error(runner.invoke(main, args), needle)


def test_send_to_an_unreachable_gateway_reports_each_envelope(topo: Topology) -> None:
    gateway = f"127.0.0.1:{free_port()}"  # nothing listens there
    args = _send_args(topo, gateway, "--count", "2", "--deadline", "0.3", "-")
    result = CliRunner().invoke(main, args, input=b"payload")
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert len(lines) == 2
    for line in lines:
        envelope_id, verdict, reason, *_ = line.split()
        assert len(bytes.fromhex(envelope_id)) == 16
        assert (verdict, reason) == ("NACK", "unavailable")


def test_receive_and_shim_argument_errors(topo: Topology, tmp_path: Path) -> None:
    runner = CliRunner()
    listen = f"127.0.0.1:{free_port()}"
    out = tmp_path / "out"
    base = _receive_args(topo, listen, out)
    _one_line_error(runner.invoke(main, [*base, "--anchors", str(tmp_path / "none")]), "--anchors")
    _one_line_error(
        runner.invoke(main, [*base, "--bundle", "x.example=/nonexistent.pem"]), "cannot read"
    )
    _one_line_error(runner.invoke(main, [*base, "--listen", "nowhere"]), "--listen")
    with socket.socket() as busy:  # a port in use is one line too
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = runner.invoke(main, [*base, "--listen", f"127.0.0.1:{port}"])
        _one_line_error(result, f"--listen 127.0.0.1:{port}")
    shim = ["shim", "receive", *base[1:-2], "--deliver-to", "app"]
    _one_line_error(runner.invoke(main, shim), "--deliver-to")
    shim_send = ["shim", "send", "--listen", "127.0.0.1:0", *_send_args(topo, "gw")[1:]]
    _one_line_error(runner.invoke(main, shim_send), "--gateway")


async def test_send_and_receive_as_subprocesses_through_the_gateways(
    topo: Topology, tmp_path: Path
) -> None:
    out = tmp_path / "delivered"
    payload = tmp_path / "order.txt"
    payload.write_bytes(b"order 1042: 3 units of SKU-77")
    receiver = subprocess.Popen(
        [str(SLUICE), *_receive_args(topo, f"127.0.0.1:{topo.receiver_port}", out)],
        stderr=subprocess.PIPE,
    )
    try:
        with workload_apis(topo), trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                weave = await start_gateway(nursery, topo.weave_config)
                cilium = await start_gateway(nursery, topo.cilium_config)
                await links_up([weave.gateway, cilium.gateway])
                args = _send_args(topo, f"127.0.0.1:{topo.weave_listen}", "--count", "3")
                done = await trio.run_process(
                    [str(SLUICE), *args, str(payload)], capture_stdout=True, check=False
                )
                lines = done.stdout.decode().splitlines()
                assert done.returncode == 0, lines
                assert len(lines) == 3 and all(line.endswith(" ACK") for line in lines)
                ids = {line.split()[0] for line in lines}
                assert {p.name for p in out.iterdir()} == ids
                assert all((out / i).read_bytes() == payload.read_bytes() for i in ids)
                # Refused by policy: tier public is below the ledger's "internal".
                low = [*args, "--tier", "public", "--count", "1", str(payload)]
                done = await trio.run_process([str(SLUICE), *low], capture_stdout=True, check=False)
                assert done.returncode == 1
                assert done.stdout.decode().split()[1:3] == ["NACK", "tier_too_low"]
                nursery.cancel_scope.cancel()
    finally:
        receiver.send_signal(signal.SIGTERM)
        _, err = receiver.communicate(timeout=15)
    assert receiver.returncode == 0, err.decode()
    assert b"stopping on SIGTERM" in err
