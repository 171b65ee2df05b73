"""Theory of operation: one audit record per gateway decision, as one canonical JSON line.

A line is the JSON object of :meth:`AuditEntry.to_json` serialised canonically: keys sorted, no
whitespace, ASCII only, integers only (no floats), binary values as lowercase hex (the raw
envelope, when kept, as base64). Operators can ``grep`` it; auditors can recompute it.

Each line carries ``prev``, the ``hash`` of the line before it, and its own ``hash``: BLAKE2b-256
over the canonical bytes of the object *without* the ``hash`` key. The first line's ``prev`` is
the per-log genesis value :func:`genesis` (a hash naming the format and the gateway), so a log
cannot be spliced onto another gateway's. Editing, deleting, inserting or reordering lines breaks
a link that :func:`gateway.audit.verify.verify` names.
"""

from __future__ import annotations

import base64
import binascii
import enum
import hashlib
import json
from dataclasses import dataclass, fields
from typing import Any

FORMAT_VERSION = 1
HASH_BYTES = 32
ENVELOPE_ID_BYTES = 16
MAX_LINE_BYTES = 2 * 1024 * 1024  # a record that keeps the raw envelope (<= 1.1 MiB) as base64
MAX_TEXT_BYTES = 2048  # any one text field (SPIFFE IDs are bounded at 2048 too)
_GENESIS_DOMAIN = b"sluice audit log v1\x00"


class AuditFormatError(ValueError):
    """A line or a record is not a well-formed audit record; the message says which field."""


class Decision(enum.StrEnum):
    ALLOW = "allow"
    DENY = "deny"


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """What the daemon knows about one decision; the log adds sequence, time and chaining.

    Fields the gateway could not learn (an envelope too malformed to read its claims) are empty:
    ``""`` for text, ``b""`` for hashes and ids, ``0`` for numbers.
    """

    gateway: str  # this gateway's SPIFFE ID
    envelope_id: bytes  # 16 bytes
    issuer: str  # origin workload's SPIFFE ID
    origin_scope: str
    destination_scope: str
    tier: int
    lineage: bytes  # 32-byte policy-lineage hash from the envelope
    from_: str  # network or peer it came from ("net:weave", "peer:cilium-gw")
    to: str  # network or peer it went to; "" when refused
    decision: Decision
    reason: str  # a gateway.reasons.Reason value
    rule: str  # id of the policy rule that decided, "" when none matched
    policy_revision: bytes  # 32-byte hash of the destination policy revision applied
    stamps: int  # transit stamps on the envelope as received
    envelope_digest: bytes = b""  # BLAKE2b-256 of the envelope bytes as received
    envelope: bytes | None = None  # raw envelope bytes, when the log is configured to keep them
    capture: str = ""  # where the raw bytes are kept instead ("<file>:<offset>"), if anywhere

    def __post_init__(self) -> None:
        _check_bytes("envelope_id", self.envelope_id, ENVELOPE_ID_BYTES)
        for name in ("lineage", "policy_revision", "envelope_digest"):
            _check_bytes(name, getattr(self, name), HASH_BYTES)
        for name in ("gateway", "issuer", "origin_scope", "destination_scope", "from_", "to",
                     "reason", "rule", "capture"):
            value = getattr(self, name)
            if not isinstance(value, str) or len(value.encode()) > MAX_TEXT_BYTES:
                key = name.rstrip("_")
                raise AuditFormatError(f"{key}: text of at most {MAX_TEXT_BYTES} bytes")
        for name in ("tier", "stamps"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value < 2**32:
                raise AuditFormatError(f"{name}: integer in 0..2**32-1 expected, got {value!r}")
        if not isinstance(self.decision, Decision):
            raise AuditFormatError(f"decision: allow or deny expected, got {self.decision!r}")


def _check_bytes(name: str, value: object, size: int) -> None:
    if not isinstance(value, bytes) or len(value) not in (0, size):
        raise AuditFormatError(f"{name}: {size} bytes (or empty) expected")


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One line of the log: a record plus its place in the chain."""

    seq: int  # 1 for the first line
    ts_ms: int  # unix time in milliseconds when the gateway appended it
    record: AuditRecord
    prev: bytes  # hash of the previous line, or the genesis value
    hash: bytes  # BLAKE2b-256 of this line's canonical bytes without "hash"

    @property
    def time(self) -> float:
        return self.ts_ms / 1000

    def to_json(self) -> dict[str, Any]:
        """The line's JSON object (with ``hash``)."""
        obj = body_object(self.seq, self.ts_ms, self.record, self.prev)
        obj["hash"] = self.hash.hex()
        return obj

    def line(self) -> bytes:
        """The canonical line, newline included."""
        return canonical(self.to_json()) + b"\n"


def canonical(obj: dict[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def genesis(gateway: str) -> bytes:
    """The ``prev`` of a log's first line: BLAKE2b-256 of a format tag and the gateway's ID."""
    return hashlib.blake2b(_GENESIS_DOMAIN + gateway.encode(), digest_size=HASH_BYTES).digest()


def body_object(seq: int, ts_ms: int, record: AuditRecord, prev: bytes) -> dict[str, Any]:
    """The JSON object a line's hash covers (everything but ``hash``)."""
    obj: dict[str, Any] = {"v": FORMAT_VERSION, "seq": seq, "ts_ms": ts_ms, "prev": prev.hex()}
    for f in fields(AuditRecord):
        value = getattr(record, f.name)
        key = f.name.rstrip("_")
        if f.name == "envelope":
            obj[key] = None if value is None else base64.b64encode(value).decode()
        elif isinstance(value, bytes):
            obj[key] = value.hex()
        else:
            obj[key] = str(value) if isinstance(value, Decision) else value
    return obj


def seal(seq: int, ts_ms: int, record: AuditRecord, prev: bytes) -> AuditEntry:
    """Build the entry for ``record`` at ``seq`` chained to ``prev``, computing its hash."""
    return seal_with_line(seq, ts_ms, record, prev)[0]


def seal_with_line(
    seq: int, ts_ms: int, record: AuditRecord, prev: bytes
) -> tuple[AuditEntry, bytes]:
    """:func:`seal` and the entry's canonical line, building the JSON object once (hot path)."""
    obj = body_object(seq, ts_ms, record, prev)
    digest = hashlib.blake2b(canonical(obj), digest_size=32).digest()
    obj["hash"] = digest.hex()
    return AuditEntry(seq, ts_ms, record, prev, digest), canonical(obj) + b"\n"


_KEYS = frozenset(
    {"v", "seq", "ts_ms", "prev", "hash"} | {f.name.rstrip("_") for f in fields(AuditRecord)}
)


def parse_line(line: bytes) -> tuple[AuditEntry, bytes]:
    """Parse one line (without its newline) strictly.

    Returns:
        The entry as written (its recorded ``hash``), and the hash recomputed from its content;
        the caller compares them.

    Raises:
        AuditFormatError: not JSON, not canonical, missing/unknown keys or wrong types.
    """
    if len(line) > MAX_LINE_BYTES:
        raise AuditFormatError(f"line longer than {MAX_LINE_BYTES} bytes")
    try:
        obj = json.loads(line)
    except (ValueError, RecursionError) as exc:
        raise AuditFormatError(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise AuditFormatError("not a JSON object")
    if set(obj) != _KEYS:
        missing, extra = sorted(_KEYS - set(obj)), sorted(set(obj) - _KEYS)
        raise AuditFormatError(f"keys: missing {missing}, unexpected {extra}")
    if obj["v"] != FORMAT_VERSION:
        raise AuditFormatError(f"v: format version {FORMAT_VERSION} expected, got {obj['v']!r}")
    if canonical(obj) != line:
        raise AuditFormatError("not in canonical form (sorted keys, no spaces, ASCII)")
    for key in ("seq", "ts_ms"):
        if type(obj[key]) is not int or obj[key] < 0:
            raise AuditFormatError(f"{key}: non-negative integer expected")
    try:
        record = AuditRecord(
            **{
                f.name: _field_from_json(f.name, obj[f.name.rstrip("_")])
                for f in fields(AuditRecord)
            }
        )
        prev = _hex("prev", obj["prev"], HASH_BYTES)
        recorded = _hex("hash", obj["hash"], HASH_BYTES)
    except TypeError as exc:
        raise AuditFormatError(str(exc)) from None
    entry = AuditEntry(obj["seq"], obj["ts_ms"], record, prev, recorded)
    computed = seal(entry.seq, entry.ts_ms, record, prev).hash
    return entry, computed


def _hex(name: str, value: object, size: int | None = None) -> bytes:
    if not isinstance(value, str) or value != value.lower():
        raise AuditFormatError(f"{name}: lowercase hex expected")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise AuditFormatError(f"{name}: lowercase hex expected") from None
    if size is not None and len(raw) != size:
        raise AuditFormatError(f"{name}: {size} bytes expected, got {len(raw)}")
    return raw


def _field_from_json(name: str, value: object) -> Any:  # AuditRecord checks the types
    key = name.rstrip("_")
    if name == "envelope":
        if value is None:
            return None
        if not isinstance(value, str):
            raise AuditFormatError("envelope: base64 text or null expected")
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error:
            raise AuditFormatError("envelope: base64 text or null expected") from None
    if name in ("envelope_id", "lineage", "policy_revision", "envelope_digest"):
        return _hex(key, value)
    if name == "decision":
        try:
            return Decision(value if isinstance(value, str) else "")
        except ValueError:
            raise AuditFormatError(f"decision: allow or deny expected, got {value!r}") from None
    return value
