"""Where the gateway's own X.509-SVID and trust bundles come from, kept fresh without a restart.

Theory of operation: a source owns one background thread that obtains identities (from the SPIFFE
Workload API through py-spiffe, or from files on disk), validates each one *itself* (the SVID's
chain must verify against the bundle of its own trust domain at the current time; py-spiffe only
parses), and publishes it as an immutable :class:`IdentitySnapshot`. A failed update never replaces
a good snapshot: the source keeps serving the last good identity and reports the problem in its
:class:`SourceStatus` instead. Nothing is queued: the status is one value that each change
replaces, so a slow reader sees the latest state, never a backlog.

Readers either poll :meth:`SvidSource.current`, block in :meth:`SvidSource.wait_for_change`
(threads), register a callback with :meth:`SvidSource.subscribe`, or, in the trio daemon, run
:func:`watch`, which forwards status changes into a trio memory channel.
"""

from __future__ import annotations

import abc
import contextlib
import datetime as dt
import enum
import hashlib
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from identity.bundle import BundleSet, InvalidBundle, TrustBundle, load_bundle_file
from identity.pem import certificates_pem, private_key_pem
from identity.spiffe_id import TrustDomain, parse_trust_domain
from identity.x509svid import (
    X509SVID,
    ChainVerificationError,
    InvalidSVID,
    load_x509svid,
    verify_chain,
)

_log = logging.getLogger(__name__)

Clock = Callable[[], dt.datetime]

DEFAULT_POLL_INTERVAL = 1.0
RECONNECT_MIN_SECONDS = 0.05
RECONNECT_MAX_SECONDS = 2.0
MAX_TRUST_DOMAINS = 256
MAX_IDENTITY_FILE_BYTES = 256 * 1024
_JOIN_SECONDS = 5.0


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- values ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IdentitySnapshot:
    """A validated identity: the SVID, the bundles to trust, and a version that grows by one
    each time the identity's content changes."""

    svid: X509SVID
    bundles: BundleSet
    version: int


class SourceProblem(enum.StrEnum):
    """Why a source could not deliver a (new) identity. Values are stable: logs and metrics."""

    UNAVAILABLE = "unavailable"  # Workload API unreachable, or its stream ended.
    INVALID_IDENTITY = "invalid_identity"  # An update failed parsing or chain validation.
    FILE_ERROR = "file_error"  # A file is missing, unreadable or too large.


@dataclass(frozen=True, slots=True)
class SourceError:
    """A problem and a message saying which file / socket and what was wrong."""

    problem: SourceProblem
    message: str

    def __str__(self) -> str:
        return f"{self.problem.value}: {self.message}"


@dataclass(frozen=True, slots=True)
class SourceStatus:
    """Everything a reader needs in one value.

    Attributes:
        snapshot: the last good identity, ``None`` until the first one.
        error: the last problem, ``None`` once a later attempt succeeded.
        generation: grows by one on every change of this status (snapshot or error).
    """

    snapshot: IdentitySnapshot | None
    error: SourceError | None
    generation: int

    @property
    def healthy(self) -> bool:
        """True when there is an identity and the last attempt to refresh it succeeded."""
        return self.snapshot is not None and self.error is None


class IdentityUnavailable(Exception):
    """No identity arrived in time; ``error`` is the last problem the source saw, if any."""

    def __init__(self, source: str, error: SourceError | None) -> None:
        detail = str(error) if error is not None else "no identity received yet"
        super().__init__(f"{source}: {detail}")
        self.error = error


Subscriber = Callable[[SourceStatus], None]


# -- the common machinery ---------------------------------------------------------------------


class SvidSource(abc.ABC):
    """A source of the gateway's identity, refreshed by a background thread.

    Resource handling: :meth:`start` starts the thread, :meth:`close` stops and joins it; the
    source is also a context manager. Subscribers are called from the source's thread, one at a
    time, outside any lock; an exception in a subscriber is logged and does not stop the source.

    Error handling: a failed update is reported in :meth:`status` (and to subscribers) and the
    previous good snapshot stays current; the source never raises from its thread.
    """

    def __init__(self, *, name: str, clock: Clock = _utc_now) -> None:
        self.name = name
        self._clock = clock
        self._cond = threading.Condition()
        self._status = SourceStatus(snapshot=None, error=None, generation=0)
        self._content_key: bytes | None = None
        self._subscribers: dict[int, Subscriber] = {}
        self._next_subscriber = 0
        # Serialises notifications so that subscribers see generations in order.
        self._notify_lock = threading.Lock()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle

    def start(self) -> None:
        """Start the background thread (idempotent until closed).

        Raises:
            RuntimeError: the source was closed.
        """
        if self._closed.is_set():
            raise RuntimeError(f"{self.name}: source is closed")
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run_guarded, name=self.name, daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the background thread and wait for it (bounded). Idempotent."""
        self._closed.set()
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_SECONDS)
        with self._cond:
            self._cond.notify_all()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # -- readers

    def current(self) -> IdentitySnapshot | None:
        """The latest good identity, or ``None`` before the first one."""
        with self._cond:
            return self._status.snapshot

    def status(self) -> SourceStatus:
        """The latest status: snapshot, last error and generation."""
        with self._cond:
            return self._status

    def wait_for_change(self, after_generation: int, timeout: float) -> SourceStatus:
        """Block until the status generation exceeds ``after_generation``, or ``timeout`` passes.

        Returns:
            The status at that moment (its generation may still equal ``after_generation`` on
            timeout or when the source is closed).
        """
        with self._cond:
            self._cond.wait_for(
                lambda: self._status.generation > after_generation or self._closed.is_set(),
                timeout,
            )
            return self._status

    def wait_ready(self, timeout: float) -> IdentitySnapshot:
        """Block until there is an identity.

        Raises:
            IdentityUnavailable: none arrived within ``timeout`` seconds (carries the last error).
        """
        with self._cond:
            self._cond.wait_for(
                lambda: self._status.snapshot is not None or self._closed.is_set(), timeout
            )
            status = self._status
        if status.snapshot is None:
            raise IdentityUnavailable(self.name, status.error)
        return status.snapshot

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(status)`` on every later status change.

        Returns:
            A function that unsubscribes (idempotent).
        """
        with self._cond:
            token = self._next_subscriber
            self._next_subscriber += 1
            self._subscribers[token] = callback

        def unsubscribe() -> None:
            with self._cond:
                self._subscribers.pop(token, None)

        return unsubscribe

    # -- for subclasses

    @abc.abstractmethod
    def _run(self) -> None:
        """The thread body: obtain identities until :attr:`_closed` is set."""

    def _wake(self) -> None:  # noqa: B027 (an optional hook, empty by default)
        """Interrupt whatever the thread is waiting on, so that :meth:`close` is prompt."""

    def _offer(self, svid: X509SVID, bundles: BundleSet, *, content_key: bytes) -> bool:
        """Validate an identity and publish it if it is good.

        ``content_key`` identifies the content; offering the same content again clears any
        error without creating a new version. Returns True when the identity was accepted.
        """
        try:
            verify_chain(svid.chain, bundles, now=self._clock())
        except (InvalidSVID, ChainVerificationError) as exc:
            self._report(SourceError(SourceProblem.INVALID_IDENTITY, f"{self.name}: {exc}"))
            return False
        with self._cond:
            old = self._status
            if content_key == self._content_key and old.snapshot is not None:
                if old.error is None:
                    return True
                new = SourceStatus(old.snapshot, None, old.generation + 1)
            else:
                version = old.snapshot.version + 1 if old.snapshot is not None else 1
                snapshot = IdentitySnapshot(svid, bundles, version)
                new = SourceStatus(snapshot, None, old.generation + 1)
                self._content_key = content_key
            self._status = new
            self._cond.notify_all()
        if new.snapshot is not old.snapshot:
            _log.info(
                "%s: identity %s version %d (serial %x)",
                self.name,
                svid.spiffe_id,
                new.snapshot.version if new.snapshot else 0,
                svid.leaf.serial_number,
            )
        self._notify()
        return True

    def _report(self, error: SourceError) -> None:
        """Record a problem; the current snapshot stays. A repeat of the same error is ignored."""
        with self._cond:
            old = self._status
            if old.error == error:
                return
            self._status = SourceStatus(old.snapshot, error, old.generation + 1)
            self._cond.notify_all()
        _log.warning("%s (keeping %s)", error, _describe(old.snapshot))
        self._notify()

    def _notify(self) -> None:
        with self._notify_lock:
            with self._cond:
                status = self._status
                callbacks = list(self._subscribers.values())
            for callback in callbacks:
                try:
                    callback(status)
                except Exception:
                    _log.exception("%s: a subscriber failed", self.name)

    def _run_guarded(self) -> None:
        try:
            self._run()
        except Exception as exc:
            # A bug, not an input problem: say so loudly, but keep the last identity available.
            _log.exception("%s: source thread failed", self.name)
            message = f"{self.name}: internal error {exc!r}"
            self._report(SourceError(SourceProblem.UNAVAILABLE, message))


def _describe(snapshot: IdentitySnapshot | None) -> str:
    if snapshot is None:
        return "no identity"
    return f"identity version {snapshot.version}"


def _content_key(svid: X509SVID, bundles: BundleSet) -> bytes:
    digest = hashlib.sha256()
    for cert in svid.chain:
        digest.update(b"c" + cert.fingerprint(hashes.SHA256()))
    digest.update(b"k" + hashlib.sha256(private_key_pem(svid.private_key)).digest())
    for td in sorted(bundles):
        digest.update(b"t" + td.name.encode() + b"\0")
        for cert in bundles[td].x509_authorities:
            digest.update(b"a" + cert.fingerprint(hashes.SHA256()))
    return digest.digest()


# -- the Workload API ---------------------------------------------------------------------------


class WorkloadApiSource(SvidSource):
    """The identity from a SPIFFE Workload API (a SPIRE agent, or our own test server).

    py-spiffe's ``WorkloadApiClient.stream_x509_contexts`` runs the gRPC stream in its own thread
    and calls us back with each update. We run it with ``retry_connect=False`` and reconnect
    ourselves, because py-spiffe's built-in retry is silent: with it, a dead agent would look
    exactly like a quiet one. Each attempt uses a fresh client (a fresh gRPC channel), so gRPC's
    own channel backoff (up to two minutes) never delays reconnection to a restarted agent; our
    backoff grows from ``reconnect_min`` to ``reconnect_max`` seconds and resets on each update.

    Args:
        socket_path: the agent's unix socket (path, or ``unix:///path``).
        reconnect_min: first delay after a failure, in seconds.
        reconnect_max: the longest delay between attempts, in seconds.
        clock: the time used for chain validation.
    """

    def __init__(
        self,
        socket_path: str | os.PathLike[str],
        *,
        reconnect_min: float = RECONNECT_MIN_SECONDS,
        reconnect_max: float = RECONNECT_MAX_SECONDS,
        clock: Clock = _utc_now,
    ) -> None:
        text = os.fspath(socket_path)
        path = text[len("unix://") :] if text.startswith("unix://") else text
        self.socket_path = Path(path).absolute()
        super().__init__(name=f"workload API {self.socket_path}", clock=clock)
        self._reconnect_min = reconnect_min
        self._reconnect_max = reconnect_max
        self._stream_over = threading.Event()

    def _wake(self) -> None:
        self._stream_over.set()

    def _run(self) -> None:
        # Imported here so that merely importing identity.sources does not load gRPC.
        from spiffe import WorkloadApiClient  # noqa: PLC0415
        from spiffe.errors import ArgumentError  # noqa: PLC0415

        delay = self._reconnect_min
        while not self._closed.is_set():
            self._stream_over.clear()
            if not self.socket_path.exists():
                self._report(
                    SourceError(SourceProblem.UNAVAILABLE, f"{self.name}: socket does not exist")
                )
            else:
                try:
                    client = WorkloadApiClient("unix://" + str(self.socket_path))
                except ArgumentError as exc:
                    self._report(SourceError(SourceProblem.UNAVAILABLE, f"{self.name}: {exc}"))
                else:
                    got_update = self._stream_once(client)
                    if got_update:
                        delay = self._reconnect_min
            if self._closed.wait(delay):
                break
            delay = min(delay * 2, self._reconnect_max)

    def _stream_once(self, client: Any) -> bool:
        """Run one stream until it ends or the source closes; True if any update arrived."""
        received = threading.Event()
        errors: list[Exception] = []

        def on_success(context: Any) -> None:
            received.set()
            self._accept_context(context)

        def on_error(error: Exception) -> None:
            errors.append(error)
            self._stream_over.set()

        handle = client.stream_x509_contexts(on_success, on_error, retry_connect=False)
        try:
            self._stream_over.wait()
        finally:
            handle.cancel()
            client.close()
        if not self._closed.is_set():
            why = str(errors[0]) if errors else "stream ended"
            self._report(SourceError(SourceProblem.UNAVAILABLE, f"{self.name}: {why}"))
        return received.is_set()

    def _accept_context(self, context: Any) -> None:
        try:
            svid, bundles = _from_py_spiffe(context, source=self.name)
        except Exception as exc:
            # Anything raised here would make py-spiffe end the stream; a bad update must only
            # be reported, with the previous identity kept.
            self._report(SourceError(SourceProblem.INVALID_IDENTITY, f"{self.name}: {exc}"))
            return
        self._offer(svid, bundles, content_key=_content_key(svid, bundles))


def _from_py_spiffe(context: Any, *, source: str) -> tuple[X509SVID, BundleSet]:
    """Convert py-spiffe's ``X509Context`` into our types, re-parsing everything strictly."""
    py_svid = context.default_svid
    chain: list[x509.Certificate] = list(py_svid.cert_chain)
    key = py_svid.private_key
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    svid = load_x509svid(certificates_pem(chain), key_pem, source=source)
    py_bundles = list(context.x509_bundle_set.bundles)
    if len(py_bundles) > MAX_TRUST_DOMAINS:
        raise ValueError(f"{source}: more than {MAX_TRUST_DOMAINS} trust bundles")
    bundles = []
    for py_bundle in py_bundles:
        trust_domain = parse_trust_domain(py_bundle.trust_domain.name)
        # py-spiffe keeps authorities in a set; order them so that equal content compares equal.
        authorities = sorted(
            py_bundle.x509_authorities, key=lambda c: c.public_bytes(serialization.Encoding.DER)
        )
        bundles.append(TrustBundle(trust_domain, tuple(authorities)))
    return svid, BundleSet(bundles)


# -- files -----------------------------------------------------------------------------------------

_FileKey = tuple[int, int, int, int, int] | None


class FileSource(SvidSource):
    """The identity from files, reloaded when they change.

    Every ``poll_interval`` seconds the source compares each file's inode, device, size, mtime and
    ctime with the previous look; any difference (an in-place write, an atomic ``rename`` over the
    file, a ``chmod``) triggers a reload of all files. A file that is missing, half-written or
    invalid leaves the previous good identity in place and is reported; the next change retries.

    Args:
        chain_path: PEM certificate chain, leaf first (may also hold the key).
        key_path: PEM PKCS#8 private key (may be the same file as ``chain_path``).
        bundle_paths: for each trust domain to trust, a SPIFFE bundle (JSON) or PEM file. The
            SVID's own trust domain must be among them.
        poll_interval: seconds between checks.
        clock: the time used for chain validation.

    Error handling: :meth:`start` performs the first load synchronously, so a caller can check
    :meth:`status` right after it to refuse to start on a bad configuration.
    """

    def __init__(
        self,
        chain_path: str | os.PathLike[str],
        key_path: str | os.PathLike[str],
        bundle_paths: Mapping[TrustDomain, str | os.PathLike[str]],
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        clock: Clock = _utc_now,
    ) -> None:
        self.chain_path = Path(chain_path)
        self.key_path = Path(key_path)
        self.bundle_paths: Mapping[TrustDomain, Path] = {
            td: Path(p) for td, p in bundle_paths.items()
        }
        if len(self.bundle_paths) > MAX_TRUST_DOMAINS:
            raise ValueError(f"more than {MAX_TRUST_DOMAINS} bundle files")
        super().__init__(name=f"SVID files {self.chain_path}", clock=clock)
        self.poll_interval = poll_interval
        self._seen: tuple[_FileKey, ...] | None = None
        self._poll_lock = threading.Lock()

    def start(self) -> None:
        if self._thread is None and not self._closed.is_set():
            self.poll()
        super().start()

    def _run(self) -> None:
        while not self._closed.wait(self.poll_interval):
            self.poll()

    def _paths(self) -> Iterable[Path]:
        yield self.chain_path
        yield self.key_path
        yield from self.bundle_paths.values()

    def poll(self) -> bool:
        """Check the files now and reload them if they changed (the thread calls this too).

        Returns:
            True when a reload was attempted.
        """
        with self._poll_lock:
            seen = tuple(_file_key(p) for p in self._paths())
            if seen == self._seen:
                return False
            # Remember what we looked at *before* reading: a write that lands during the read
            # changes the key again, so the next poll reloads.
            self._seen = seen
            self._load()
            return True

    def _load(self) -> None:
        try:
            chain_pem = _read_bounded(self.chain_path)
            key_pem = (
                chain_pem if self.key_path == self.chain_path else _read_bounded(self.key_path)
            )
        except OSError as exc:
            self._report(SourceError(SourceProblem.FILE_ERROR, str(exc)))
            return
        except ValueError as exc:
            self._report(SourceError(SourceProblem.FILE_ERROR, str(exc)))
            return
        try:
            svid = load_x509svid(
                chain_pem, key_pem, source=str(self.chain_path), key_source=str(self.key_path)
            )
            bundles = BundleSet(load_bundle_file(p, td) for td, p in self.bundle_paths.items())
        except (InvalidSVID, InvalidBundle) as exc:
            self._report(SourceError(SourceProblem.INVALID_IDENTITY, str(exc)))
            return
        self._offer(svid, bundles, content_key=_content_key(svid, bundles))


def _file_key(path: Path) -> _FileKey:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _read_bounded(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ValueError(f"{path}: not a regular file")
            data = handle.read(MAX_IDENTITY_FILE_BYTES + 1)
    except OSError as exc:
        raise OSError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > MAX_IDENTITY_FILE_BYTES:
        raise ValueError(f"{path}: larger than {MAX_IDENTITY_FILE_BYTES} bytes")
    return data


# -- trio -----------------------------------------------------------------------------------------


async def watch(
    source: SvidSource,
    send_channel: trio.MemorySendChannel[SourceStatus],
    *,
    task_status: trio.TaskStatus[SourceStatus] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Forward a source's status changes into a trio channel until cancelled.

    The current status is sent first, then every newer one. Changes that happen while the
    receiver is slow are coalesced: the next value sent is the latest status, so memory stays
    bounded whatever the channel's buffer size. The source's thread only schedules a wake-up
    (``TrioToken.run_sync_soon``, which never blocks it).

    Args:
        source: a started source.
        send_channel: where statuses go; closed when this task ends.
        task_status: ``started`` with the status current when the watch began.

    Resource handling: the subscription is removed and the channel closed on exit.
    """
    token = trio.lowlevel.current_trio_token()
    changed = [trio.Event()]  # Replaced after each wake-up; only touched in the trio thread.
    pending = threading.Event()

    def wake() -> None:
        changed[0].set()

    def on_change(_status: SourceStatus) -> None:
        # Runs in the source's thread.
        if pending.is_set():
            return  # A wake-up is already scheduled; it will read the latest status.
        pending.set()
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(wake)

    async with send_channel:
        unsubscribe = source.subscribe(on_change)
        try:
            status = source.status()
            task_status.started(status)
            await send_channel.send(status)
            sent = status.generation
            while True:
                await changed[0].wait()
                changed[0] = trio.Event()
                pending.clear()
                status = source.status()
                if status.generation > sent:
                    await send_channel.send(status)
                    sent = status.generation
        finally:
            unsubscribe()
