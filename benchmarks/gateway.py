"""Throughput and added latency through ONE gateway, against a plain trio TCP relay baseline.

    .venv/bin/python benchmarks/gateway.py [--count 5000] [--runs 3]

Path measured: shim ``Sender`` -> gateway -> sink. The gateway is a real ``sluice run``
subprocess (its own process, so its own core) built from the demo's files (``build_topology``):
gw-weave with its route to ``payments/*`` rewritten to a plain network route to the sink, so every
envelope is fully verified (origin signature, anchor chain), decided against the ledger policy,
audited (fsync ``always`` and ``interval`` variants), stamped (Ed25519 sign) and forwarded.

The sink is a tiny in-process trio receiver that ACKs every ENVELOPE frame at once and verifies
nothing (so only the gateway's work is measured). The baseline is a plain trio TCP relay, also a
subprocess, that copies the same framed bytes between the same Sender and the same sink.

Figures: envelopes/s with many envelopes in flight (64 concurrent sends) and the gateway
process's CPU time per envelope in that phase (less sensitive to a busy machine than the rate);
p50/p99 latency at a fixed 1,000 envelopes/s, and the added latency (gateway minus relay);
libsodium's raw verify+sign rate (nacl.bindings) in this run, and the gateway's rate as a fraction
of it.
Each figure is the median of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nacl.bindings
import nacl.signing
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.daemon.channel import FramedChannel, HandshakeError  # noqa: E402
from gateway.demo.harness import envelope, workload_apis  # noqa: E402
from gateway.demo.topology import Topology, build_topology, free_port  # noqa: E402
from gateway.framing import ConnectionClosed, EnvelopeFrame, Hello, Ping, Pong, Receipt, Role  # noqa: E402
from gateway.shim import Sender  # noqa: E402

CONCURRENCY = 64
RATE = 1000.0
SLUICE = Path(sys.executable).parent / "sluice"


# -- the sink: ACK everything ---------------------------------------------------------------------


async def _sink_conn(stream: trio.SocketStream) -> None:
    channel = FramedChannel(stream)
    try:
        await channel.handshake(
            Hello(Role.SHIM, "spiffe://cilium.demo.example/ns/sink/sa/sink"), timeout=10
        )
        while True:
            event = await channel.receive()
            if isinstance(event, EnvelopeFrame):
                await channel.send(Receipt.ack(event.correlation_id))
            elif isinstance(event, Ping):
                await channel.send(Pong(event.nonce))
            elif isinstance(event, ConnectionClosed):
                return
    except (trio.BrokenResourceError, trio.ClosedResourceError, HandshakeError):
        pass  # e.g. the readiness probe through the relay
    finally:
        await channel.aclose()


async def _serve_sink(port: int, *, task_status: trio.TaskStatus[None]) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    task_status.started()
    await trio.serve_listeners(_sink_conn, listeners)


# -- the baseline relay (run as a subprocess: `gateway.py --relay LISTEN SINK`) -----------------


async def _relay(listen: int, sink: int) -> None:
    async def pipe(src: trio.abc.Stream, dst: trio.abc.Stream) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        finally:
            await trio.aclose_forcefully(dst)

    async def handle(client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream("127.0.0.1", sink)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(pipe, client, upstream)
            nursery.start_soon(pipe, upstream, client)

    await trio.serve_tcp(handle, listen, host="127.0.0.1")


# -- measuring ------------------------------------------------------------------------------------


async def _throughput(port: int, batch: list[bytes], name: str) -> float:
    sender = Sender("127.0.0.1", port, name=name, receipt_timeout=30)
    async with trio.open_nursery() as nursery:
        await nursery.start(sender.run)
        await sender.send(batch[0], deadline=30)  # warm up: connected, first envelope through
        work = iter(batch[1:])
        failures = 0

        async def worker() -> None:
            nonlocal failures
            for data in work:
                if not (await sender.send(data, deadline=60)).delivered:
                    failures += 1

        started = time.perf_counter()
        async with trio.open_nursery() as workers:
            for _ in range(CONCURRENCY):
                workers.start_soon(worker)
        elapsed = time.perf_counter() - started
        nursery.cancel_scope.cancel()
    if failures:
        raise SystemExit(f"{failures} envelopes were not ACKed: the measurement is invalid")
    return (len(batch) - 1) / elapsed


async def _latency(port: int, batch: list[bytes], name: str) -> list[float]:
    sender = Sender("127.0.0.1", port, name=name, receipt_timeout=30)
    samples: list[float] = []

    async def one(data: bytes) -> None:
        started = time.perf_counter()
        result = await sender.send(data, deadline=30)
        if result.delivered:
            samples.append(time.perf_counter() - started)

    async with trio.open_nursery() as nursery:
        await nursery.start(sender.run)
        await sender.send(batch[0], deadline=30)
        async with trio.open_nursery() as sends:
            start = trio.current_time()
            for n, data in enumerate(batch[1:]):
                await trio.sleep_until(start + n / RATE)
                sends.start_soon(one, data)
        nursery.cancel_scope.cancel()
    return samples


def _pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _sodium_rate(seconds: float = 1.0) -> float:
    """Raw libsodium Ed25519 verify+sign pairs per second on one core."""
    key = nacl.signing.SigningKey.generate()
    sk = key._signing_key
    pk = bytes(key.verify_key)
    message = os.urandom(200)
    signed = nacl.bindings.crypto_sign(message, sk)
    count = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        for _ in range(100):
            nacl.bindings.crypto_sign_open(signed, pk)
            nacl.bindings.crypto_sign(message, sk)
        count += 100
    return count / seconds


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _single_gateway(topo: Topology, sink: int, fsync: str) -> tuple[Path, int]:
    text = topo.weave_config.read_text()
    text = text.replace('peer = "gw-cilium"', f'network = "weave"\naddress = "127.0.0.1:{sink}"')
    http = free_port()
    text = text.replace(
        '[metrics]\nlisten = "127.0.0.1:0"', f'[metrics]\nlisten = "127.0.0.1:{http}"'
    )
    if fsync == "interval":
        text = text.replace("[audit]\n", '[audit]\nfsync = "interval"\nfsync_interval_ms = 10\n')
    # Measure the default audit record (the demo keeps raw envelopes in it for offline replay).
    text = text.replace("keep_envelopes = true\n", "")
    path = topo.root / f"bench-{fsync}.toml"
    path.write_text(text)
    return path, http


# "On one core": the gateway (and the relay baseline) run pinned to one CPU, this process (the
# senders and the sink) to another, so the two never compete for the measured core.
SERVER_CPU = 0
CLIENT_CPU = 1


_CAN_PIN = (
    hasattr(os, "sched_setaffinity")
    and (os.cpu_count() or 1) >= 2
    and bool(shutil.which("taskset"))
)
_PIN_SERVER = ["taskset", "-c", str(SERVER_CPU)] if _CAN_PIN else []


async def _wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    with trio.fail_after(30):
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"process exited: {proc.args!r}")
            try:
                stream = await trio.open_tcp_stream("127.0.0.1", port)
            except OSError:
                await trio.sleep(0.05)
                continue
            await stream.aclose()
            await trio.sleep(0.3)
            return


async def _one_run(topo: Topology, count: int, fsync: str, sink: int) -> dict[str, float]:
    name = str(topo.orders.spiffe_id)
    fresh = [envelope(topo, payload=os.urandom(256)) for _ in range(count + 1 + 1000 + 1)]
    tput_batch, lat_batch = fresh[: count + 1], fresh[count + 1 :]
    out: dict[str, float] = {}
    # Baseline: the relay.
    relay_port = free_port()
    relay = subprocess.Popen(
        [*_PIN_SERVER, sys.executable, __file__, "--relay", str(relay_port), str(sink)]
    )
    try:
        await _wait_port(relay_port, relay)
        out["relay_tput"] = await _throughput(relay_port, tput_batch, name)
        relay_lat = await _latency(relay_port, lat_batch, name)
    finally:
        relay.terminate()
        relay.wait(10)
    # The gateway (fresh state dirs each run: its replay window would refuse the same ids).
    config, _http = _single_gateway(topo, sink, fsync)
    state = topo.root / "state" / "gw-weave"
    for sub in state.glob("*"):
        if sub.is_file():
            sub.unlink()
        else:
            subprocess.run(["rm", "-rf", str(sub)], check=True)
    gw = subprocess.Popen(
        [*_PIN_SERVER, str(SLUICE), "run", "--config", str(config)],
        cwd=topo.root,
        stderr=subprocess.DEVNULL,
    )
    try:
        await _wait_port(topo.weave_listen, gw)
        cpu_before = _cpu_seconds(gw.pid)
        out["gw_tput"] = await _throughput(topo.weave_listen, tput_batch, name)
        out["gw_cpu_us"] = (_cpu_seconds(gw.pid) - cpu_before) / (len(tput_batch) - 1) * 1e6
        gw_lat = await _latency(topo.weave_listen, lat_batch, name)
    finally:
        gw.terminate()
        gw.wait(20)
    for q, label in ((0.5, "p50"), (0.99, "p99")):
        out[f"relay_{label}"] = _pct(relay_lat, q) * 1e3
        out[f"gw_{label}"] = _pct(gw_lat, q) * 1e3
        out[f"added_{label}"] = out[f"gw_{label}"] - out[f"relay_{label}"]
    return out


async def _main(count: int, runs: int) -> None:
    sodium = statistics.median(_sodium_rate() for _ in range(3))
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        topo = build_topology(Path(tmp))
        sink = free_port()
        with workload_apis(topo):
            async with trio.open_nursery() as nursery:
                await nursery.start(_serve_sink, sink)
                for fsync in ("always", "interval"):
                    results = [await _one_run(topo, count, fsync, sink) for _ in range(runs)]
                    med = {k: statistics.median(r[k] for r in results) for k in results[0]}
                    print(f"\naudit fsync = {fsync!r}: medians of {runs} runs, {count} envelopes")
                    print(f"  relay baseline : {med['relay_tput']:9.0f} envelopes/s")
                    print(
                        f"  through gateway: {med['gw_tput']:9.0f} envelopes/s "
                        f"(target >= 5000; {med['gw_tput'] / med['relay_tput']:.2f}x relay)"
                    )
                    print(
                        f"  gateway CPU    : {med['gw_cpu_us']:9.0f} us per envelope (all threads;"
                        f" {1e6 / med['gw_cpu_us']:.0f} envelopes/s if one core were all its own)"
                    )
                    print(
                        f"  latency @ {RATE:.0f}/s  relay p50 {med['relay_p50']:.2f} ms "
                        f"p99 {med['relay_p99']:.2f} ms; gateway p50 {med['gw_p50']:.2f} ms "
                        f"p99 {med['gw_p99']:.2f} ms"
                    )
                    print(
                        f"  added latency  : p50 {med['added_p50']:.2f} ms, "
                        f"p99 {med['added_p99']:.2f} ms (target p99 <= 2 ms)"
                    )
                    print(
                        f"  libsodium raw verify+sign: {sodium:.0f} pairs/s; gateway reaches "
                        f"{med['gw_tput'] / sodium:.1%} of it"
                    )
                nursery.cancel_scope.cancel()


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--relay":
        trio.run(_relay, int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    if _CAN_PIN:
        os.sched_setaffinity(0, {CLIENT_CPU})
        print(f"gateway/relay pinned to CPU {SERVER_CPU}, senders and sink to CPU {CLIENT_CPU}")
    trio.run(_main, args.count, args.runs)


if __name__ == "__main__":
    main()
