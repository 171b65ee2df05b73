"""SVID sources: the Workload API one over a real gRPC unix socket, the file one on real files,
and the trio adapter. Every wait is bounded."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trio

from identity.bundle import TrustBundle, serialize_spiffe_bundle
from identity.ca import IssuedSVID, SvidAuthority
from identity.sources import (
    FileSource,
    IdentityUnavailable,
    SourceProblem,
    SourceStatus,
    SvidSource,
    WorkloadApiSource,
    watch,
)
from identity.spiffe_id import parse_spiffe_id, parse_trust_domain
from identity.workload_api_server import WorkloadApiServer

TIMEOUT = 10.0
WEAVE = parse_trust_domain("weave.example")
CILIUM = parse_trust_domain("cilium.example")
GATEWAY_ID = parse_spiffe_id("spiffe://weave.example/sluice/gateway")


def wait_until(
    source: SvidSource, predicate: Callable[[SourceStatus], bool], timeout: float = TIMEOUT
) -> SourceStatus:
    """Block until ``predicate(source.status())`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    status = source.status()
    while not predicate(status):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            pytest.fail(f"condition not met within {timeout}s; last status {status}")
        status = source.wait_for_change(status.generation, remaining)
    return status


@pytest.fixture
def sock_dir() -> Iterator[Path]:
    # A short directory: unix socket paths are limited to 107 bytes.
    d = Path(tempfile.mkdtemp(prefix="sluice-src-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="module")
def weave_ca() -> SvidAuthority:
    return SvidAuthority.create_root(WEAVE).intermediate()


@pytest.fixture(scope="module")
def cilium_ca() -> SvidAuthority:
    return SvidAuthority.create_root(CILIUM)


def serial(status: SourceStatus) -> int | None:
    return status.snapshot.svid.leaf.serial_number if status.snapshot else None


# -- Workload API -----------------------------------------------------------------------------


def test_workload_api_source_gets_identity_then_rotation_mid_stream(
    sock_dir: Path, weave_ca: SvidAuthority, cilium_ca: SvidAuthority
) -> None:
    sock = sock_dir / "agent.sock"
    with (
        WorkloadApiServer(sock, weave_ca, GATEWAY_ID, federated={CILIUM: cilium_ca.bundle}) as srv,
        WorkloadApiSource(sock) as source,
    ):
        first = source.wait_ready(TIMEOUT)
        assert first.version == 1
        assert first.svid.spiffe_id == GATEWAY_ID
        assert first.svid.leaf.serial_number == srv.identity.svid.leaf.serial_number
        assert set(first.bundles) == {WEAVE, CILIUM}
        assert first.bundles.for_trust_domain(CILIUM).x509_authorities == cilium_ca.bundle
        assert source.status().healthy

        rotated = srv.rotate()
        status = wait_until(source, lambda s: serial(s) == rotated.svid.leaf.serial_number)
        assert status.snapshot is not None
        assert status.snapshot.version == 2
        assert status.error is None
        assert status.snapshot.svid.private_key.public_key() != first.svid.private_key.public_key()
        # One stream carried both: no reconnection happened.
        assert srv.open_streams == 1


def test_workload_api_source_revalidates_and_keeps_the_good_identity(
    sock_dir: Path, weave_ca: SvidAuthority
) -> None:
    sock = sock_dir / "agent.sock"
    rogue_ca = SvidAuthority.create_root(WEAVE)
    with WorkloadApiServer(sock, weave_ca, GATEWAY_ID) as srv, WorkloadApiSource(sock) as source:
        good = source.wait_ready(TIMEOUT)
        # An SVID from a CA that is not in the bundle: py-spiffe accepts it (it only parses),
        # we must not.
        srv.rotate(svid=rogue_ca.issue(GATEWAY_ID))
        status = wait_until(source, lambda s: s.error is not None)
        assert status.error is not None
        assert status.error.problem is SourceProblem.INVALID_IDENTITY
        assert "does not validate" in status.error.message
        assert source.current() is good

        recovered = srv.rotate()
        status = wait_until(source, lambda s: serial(s) == recovered.svid.leaf.serial_number)
        assert status.healthy
        assert status.snapshot is not None and status.snapshot.version == 2


def test_workload_api_source_reports_disconnection_and_reconnects(
    sock_dir: Path, weave_ca: SvidAuthority
) -> None:
    sock = sock_dir / "agent.sock"
    srv = WorkloadApiServer(sock, weave_ca, GATEWAY_ID)
    srv.start()
    with WorkloadApiSource(sock) as source:
        try:
            before = source.wait_ready(TIMEOUT)
            srv.stop()
            status = wait_until(source, lambda s: s.error is not None)
            assert status.error is not None
            assert status.error.problem is SourceProblem.UNAVAILABLE
            assert str(sock) in status.error.message
            assert source.current() is before  # The gateway keeps its identity while down.

            # A new agent on the same socket (a restart) with a fresh SVID.
            srv = WorkloadApiServer(sock, weave_ca, GATEWAY_ID)
            restarted_at = time.monotonic()
            srv.start()
            status = wait_until(source, lambda s: serial(s) == srv.identity.svid.leaf.serial_number)
            reconnect_seconds = time.monotonic() - restarted_at
            assert status.healthy
            assert status.snapshot is not None and status.snapshot.version == 2
            # Our own backoff is capped at 2 s; gRPC's channel backoff (which starts at 1 s and
            # grows to 120 s) must not be in the way.
            assert reconnect_seconds < 5.0
        finally:
            srv.stop()


def test_workload_api_source_waits_for_a_missing_socket(
    sock_dir: Path, weave_ca: SvidAuthority
) -> None:
    sock = sock_dir / "later.sock"
    with WorkloadApiSource(sock) as source:
        with pytest.raises(IdentityUnavailable, match="socket does not exist") as info:
            source.wait_ready(0.5)
        assert info.value.error is not None
        assert info.value.error.problem is SourceProblem.UNAVAILABLE
        with WorkloadApiServer(sock, weave_ca, GATEWAY_ID) as srv:
            snapshot = source.wait_ready(TIMEOUT)
            assert snapshot.svid.leaf.serial_number == srv.identity.svid.leaf.serial_number
            assert source.status().error is None


def test_workload_api_source_closes_promptly_mid_stream(
    sock_dir: Path, weave_ca: SvidAuthority
) -> None:
    sock = sock_dir / "agent.sock"
    with WorkloadApiServer(sock, weave_ca, GATEWAY_ID) as srv:
        source = WorkloadApiSource(sock)
        source.start()
        source.wait_ready(TIMEOUT)
        started = time.monotonic()
        source.close()
        assert time.monotonic() - started < 2.0
        assert source.closed
        # The server sees the stream go away (py-spiffe cancels the call).
        deadline = time.monotonic() + TIMEOUT
        while srv.open_streams and time.monotonic() < deadline:
            time.sleep(0.02)
        assert srv.open_streams == 0


# -- files ------------------------------------------------------------------------------------


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


class Files:
    """A chain, a key and bundle files in a directory, written like an SVID helper would."""

    def __init__(self, root: Path, ca: SvidAuthority, cilium: SvidAuthority) -> None:
        self.ca = ca
        self.chain = root / "svid.pem"
        self.key = root / "svid.key"
        self.bundle = root / "weave.bundle.pem"
        self.cilium_bundle = root / "cilium.bundle.json"
        self.bundle.write_bytes(ca.bundle_pem())
        self.cilium_bundle.write_bytes(
            serialize_spiffe_bundle(TrustBundle(CILIUM, cilium.bundle, sequence=7))
        )
        self.svid = self.install()

    def install(self, svid: IssuedSVID | None = None) -> IssuedSVID:
        svid = svid or self.ca.issue(GATEWAY_ID)
        write_atomically(self.key, svid.key_pem())
        write_atomically(self.chain, svid.chain_pem())
        return svid

    def source(self, **kwargs: object) -> FileSource:
        return FileSource(
            self.chain,
            self.key,
            {WEAVE: self.bundle, CILIUM: self.cilium_bundle},
            **kwargs,  # type: ignore[arg-type]
        )


@pytest.fixture
def files(tmp_path: Path, weave_ca: SvidAuthority, cilium_ca: SvidAuthority) -> Files:
    return Files(tmp_path, weave_ca, cilium_ca)


def test_file_source_loads_and_picks_up_an_atomic_rename(files: Files) -> None:
    with files.source(poll_interval=0.02) as source:
        # The first load happens in start(), before any poll interval.
        first = source.current()
        assert first is not None
        assert first.version == 1
        assert first.svid.leaf.serial_number == files.svid.leaf.serial_number
        assert set(first.bundles) == {WEAVE, CILIUM}
        assert first.bundles.for_trust_domain(CILIUM).sequence == 7

        new = files.install()
        status = wait_until(source, lambda s: serial(s) == new.leaf.serial_number)
        assert status.snapshot is not None and status.snapshot.version == 2
        assert status.error is None


def test_file_source_combined_chain_and_key_file(files: Files, tmp_path: Path) -> None:
    combined = tmp_path / "combined.pem"
    svid = files.ca.issue(GATEWAY_ID)
    combined.write_bytes(svid.chain_pem() + svid.key_pem())
    source = FileSource(combined, combined, {WEAVE: files.bundle})
    with source:
        snapshot = source.wait_ready(0)
        assert snapshot.svid.leaf.serial_number == svid.leaf.serial_number
        rotated = files.ca.issue(GATEWAY_ID)
        write_atomically(combined, rotated.key_pem() + rotated.chain_pem())
        assert source.poll()
        assert serial(source.status()) == rotated.leaf.serial_number


def test_file_source_keeps_old_identity_on_corrupt_and_half_written_files(
    files: Files,
) -> None:
    # poll() is called directly so that each step is deterministic; the thread polls rarely.
    with files.source(poll_interval=3600) as source:
        good = source.current()
        assert good is not None

        files.chain.write_bytes(b"garbage, not PEM")
        assert source.poll()
        status = source.status()
        assert status.snapshot is good
        assert status.error is not None
        assert status.error.problem is SourceProblem.INVALID_IDENTITY
        assert str(files.chain) in status.error.message

        # A writer that is partway through: the leaf's END line is not written yet.
        new = files.ca.issue(GATEWAY_ID)
        files.key.write_bytes(new.key_pem())
        pem = new.chain_pem()
        files.chain.write_bytes(pem[:300])
        assert source.poll()
        status = source.status()
        assert status.snapshot is good
        assert status.error is not None and "no matching" in status.error.message

        # Only the leaf is complete: without its intermediate the chain cannot validate.
        leaf_end = pem.index(b"-----END CERTIFICATE-----\n") + 26
        files.chain.write_bytes(pem[:leaf_end])
        assert source.poll()
        status = source.status()
        assert status.snapshot is good
        assert status.error is not None and "does not validate" in status.error.message

        # The writer finishes: the next poll picks it up and clears the error.
        files.chain.write_bytes(pem)
        assert source.poll()
        status = source.status()
        assert status.healthy
        assert status.snapshot is not None and status.snapshot.version == 2
        assert serial(status) == new.leaf.serial_number

        # Nothing changed: no reload at all.
        assert not source.poll()


def test_file_source_key_chain_mismatch_during_non_atomic_update(files: Files) -> None:
    with files.source(poll_interval=3600) as source:
        good = source.current()
        new = files.ca.issue(GATEWAY_ID)
        write_atomically(files.key, new.key_pem())  # The chain has not been replaced yet.
        assert source.poll()
        status = source.status()
        assert status.snapshot is good
        assert status.error is not None
        assert "does not match the leaf" in status.error.message
        write_atomically(files.chain, new.chain_pem())
        assert source.poll()
        assert serial(source.status()) == new.leaf.serial_number


def test_file_source_missing_file_and_missing_own_bundle(
    files: Files, tmp_path: Path, cilium_ca: SvidAuthority
) -> None:
    with files.source(poll_interval=3600) as source:
        good = source.current()
        files.key.unlink()
        assert source.poll()
        status = source.status()
        assert status.snapshot is good
        assert status.error is not None
        assert status.error.problem is SourceProblem.FILE_ERROR
        assert str(files.key) in status.error.message

    # Only a foreign bundle: the SVID's own trust domain has none, so it cannot validate.
    files.install()
    lonely = FileSource(files.chain, files.key, {CILIUM: files.cilium_bundle})
    with lonely:
        status = lonely.status()
        assert status.snapshot is None
        assert status.error is not None
        assert "no trust bundle for trust domain 'weave.example'" in status.error.message
        with pytest.raises(IdentityUnavailable, match="no trust bundle"):
            lonely.wait_ready(0)


def test_file_source_rejects_an_expired_svid(files: Files) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    with files.source(clock=lambda: later) as source:
        status = source.status()
        assert status.snapshot is None
        assert status.error is not None
        assert status.error.problem is SourceProblem.INVALID_IDENTITY


def test_file_source_touch_without_change_keeps_the_version(files: Files) -> None:
    with files.source(poll_interval=3600) as source:
        before = source.status()
        write_atomically(files.chain, files.chain.read_bytes())
        assert source.poll()  # The file changed on disk...
        after = source.status()
        assert after is before  # ...but not its content: no new version, no notification.


def test_subscribers_see_each_change_and_can_unsubscribe(files: Files) -> None:
    seen: list[SourceStatus] = []
    with files.source(poll_interval=3600) as source:
        unsubscribe = source.subscribe(seen.append)
        files.chain.write_bytes(b"broken")
        source.poll()
        files.install()
        source.poll()
        unsubscribe()
        files.install()
        source.poll()
    assert [s.error is not None for s in seen] == [True, False]
    assert seen[1].snapshot is not None and seen[1].snapshot.version == 2


# -- trio -------------------------------------------------------------------------------------


async def test_watch_delivers_snapshots_into_a_trio_task(files: Files) -> None:
    with trio.fail_after(TIMEOUT), files.source(poll_interval=0.02) as source:
        send, receive = trio.open_memory_channel[SourceStatus](1)
        async with trio.open_nursery() as nursery:
            initial = await nursery.start(watch, source, send)
            assert initial.snapshot is not None and initial.snapshot.version == 1
            first = await receive.receive()
            assert first is initial

            # The file changes on disk; the source's own thread notices and the status arrives
            # in this trio task.
            new = await trio.to_thread.run_sync(files.install)
            while True:
                status = await receive.receive()
                if serial(status) == new.leaf.serial_number:
                    break
            assert status.snapshot is not None and status.snapshot.version == 2
            nursery.cancel_scope.cancel()


async def test_watch_coalesces_changes_for_a_slow_reader(files: Files) -> None:
    with trio.fail_after(TIMEOUT), files.source(poll_interval=3600) as source:
        send, receive = trio.open_memory_channel[SourceStatus](0)
        async with trio.open_nursery() as nursery:
            await nursery.start(watch, source, send)
            # Five changes while nobody reads (poll() runs in this thread, synchronously).
            for _ in range(5):
                files.install()
                source.poll()
            latest = source.status()
            assert latest.snapshot is not None and latest.snapshot.version == 6
            received = [await receive.receive(), await receive.receive()]
            assert received[0].snapshot is not None and received[0].snapshot.version == 1
            assert received[1] is latest  # Straight to the newest: nothing queued in between.
            with trio.move_on_after(0.2):
                extra = await receive.receive()
                pytest.fail(f"unexpected extra status {extra}")
            nursery.cancel_scope.cancel()
        # The watcher unsubscribed and closed its end of the channel.
        with pytest.raises(trio.EndOfChannel):
            await receive.receive()
