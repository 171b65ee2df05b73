"""The state file: what ``sluice appliance apply`` created or changed, so teardown can undo it.

A small JSON document, rewritten after every change (written to a temporary file in the same
directory, fsync'ed, renamed over the old one, then the directory fsync'ed), so that an apply
interrupted halfway still leaves an accurate record and can simply be run again.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path

from appliance.diff import Record

STATE_VERSION = 1
STATE_DIR = Path("/var/lib/sluice")
MAX_STATE_BYTES = 1 << 20


class StateFileError(ValueError):
    """The state file cannot be used (unreadable, malformed, or written for another namespace)."""


def default_state_path(netns: str | None) -> Path:
    """Where the record lives by default: one file per network namespace.

    Args:
        netns: the named network namespace, or None for the host's.
    Returns:
        ``/var/lib/sluice/appliance-net.json`` or ``.../appliance-net.<netns>.json``.
    """
    return STATE_DIR / (f"appliance-net.{netns}.json" if netns else "appliance-net.json")


def record_to_json(record: Record, netns: str | None) -> dict[str, object]:
    """The JSON document for ``record`` (pure)."""
    return {
        "version": STATE_VERSION,
        "netns": netns,
        "created": [list(k) for k in record.created],
        "sysctls": dict(record.sysctls),
        "mtus": dict(record.mtus),
        "upped": list(record.upped),
    }


def record_from_json(doc: object, netns: str | None, where: Path | str) -> Record:
    """Parse a state document (pure).

    Raises:
        StateFileError: wrong version, wrong namespace, or a malformed field (named).
    """
    if not isinstance(doc, dict) or doc.get("version") != STATE_VERSION:
        raise StateFileError(f"{where}: not a version-{STATE_VERSION} sluice appliance state file")
    if doc.get("netns") != netns:
        raise StateFileError(
            f"{where}: records namespace {doc.get('netns')!r}, not {netns!r}; pass --state"
        )
    created, sysctls, mtus, upped = (doc.get(k) for k in ("created", "sysctls", "mtus", "upped"))
    if not isinstance(created, list) or not all(
        isinstance(k, list) and k and all(isinstance(p, str) for p in k) for k in created
    ):
        raise StateFileError(f"{where}: created: expected a list of string lists")
    if not isinstance(sysctls, dict) or not all(isinstance(v, str) for v in sysctls.values()):
        raise StateFileError(f"{where}: sysctls: expected a table of strings")
    if not isinstance(mtus, dict) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in mtus.values()
    ):
        raise StateFileError(f"{where}: mtus: expected a table of integers")
    if not isinstance(upped, list) or not all(isinstance(v, str) for v in upped):
        raise StateFileError(f"{where}: upped: expected a list of interface names")
    return Record(tuple(tuple(k) for k in created), dict(sysctls), dict(mtus), tuple(upped))


def load(path: Path, netns: str | None) -> Record:
    """Read the record; a missing file is an empty record.

    Raises:
        StateFileError: the file exists but cannot be used.
    """
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_STATE_BYTES + 1)
    except FileNotFoundError:
        return Record()
    except OSError as exc:
        raise StateFileError(f"{path}: cannot read: {exc.strerror}") from exc
    if len(raw) > MAX_STATE_BYTES:
        raise StateFileError(f"{path}: larger than {MAX_STATE_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except ValueError as exc:
        raise StateFileError(f"{path}: not valid JSON: {exc}") from exc
    return record_from_json(doc, netns, path)


def save(path: Path, record: Record, netns: str | None) -> None:
    """Atomically replace the state file with ``record`` (fsync'ed file and directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(record_to_json(record, netns), indent=1, sort_keys=True).encode() + b"\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def remove(path: Path) -> None:
    """Delete the state file (after a complete teardown)."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
        _fsync_dir(path.parent)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside the state file so two applies cannot interleave."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(f".{path.name}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise StateFileError(f"{path}: another sluice appliance command is running") from exc
        yield
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
