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
from hashlib import blake2b
from json.encoder import encode_basestring_ascii as _encode_str
from typing import Any

FORMAT_VERSION = 1
HASH_BYTES = 32
ENVELOPE_ID_BYTES = 16
MAX_LINE_BYTES = 2 * 1024 * 1024  # a record that keeps the raw envelope (<= 1.1 MiB) as base64
MAX_TEXT_BYTES = 2048  # any one text field (SPIFFE IDs are bounded at 2048 too)
_GENESIS_DOMAIN = b"sluice audit log v1\x00"
_U32_LIMIT = 2**32
_TEXT_FIELDS = ("gateway", "issuer", "origin_scope", "destination_scope", "from_", "to", "reason",
                "rule", "capture")


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
        # Hot path (one record per envelope): one pass over the common case, plain bytes of the
        # right sizes and short ASCII text. Anything else takes the full checks below, which
        # raise exactly as they always did (same order, same messages).
        eid, lin, dig = self.envelope_id, self.lineage, self.envelope_digest
        rev = self.policy_revision
        try:
            # Joined text is ASCII and short => every field is, and its UTF-8 length is its length.
            text = "".join((self.gateway, self.issuer, self.origin_scope, self.destination_scope,
                            self.from_, self.to, self.reason, self.rule, self.capture))
        except TypeError:  # a field is not a str: the full checks name it
            text = None
        tier, stamps = self.tier, self.stamps
        if not (
            type(eid) is bytes and (len(eid) == ENVELOPE_ID_BYTES or not eid)
            and type(lin) is bytes and (len(lin) == HASH_BYTES or not lin)
            and type(rev) is bytes and (len(rev) == HASH_BYTES or not rev)
            and type(dig) is bytes and (len(dig) == HASH_BYTES or not dig)
            and text is not None and len(text) <= MAX_TEXT_BYTES and text.isascii()
            and type(tier) is int and 0 <= tier < _U32_LIMIT
            and type(stamps) is int and 0 <= stamps < _U32_LIMIT
            and type(self.decision) is Decision
        ):
            self._check_fully()

    def _check_fully(self) -> None:
        """The reference checks; raise :class:`AuditFormatError` naming the first bad field."""
        _check_bytes("envelope_id", self.envelope_id, ENVELOPE_ID_BYTES)
        for name in ("lineage", "policy_revision", "envelope_digest"):
            _check_bytes(name, getattr(self, name), HASH_BYTES)
        for name in _TEXT_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, str) or len(value.encode()) > MAX_TEXT_BYTES:
                key = name.rstrip("_")
                raise AuditFormatError(f"{key}: text of at most {MAX_TEXT_BYTES} bytes")
        for name in ("tier", "stamps"):
            value = getattr(self, name)
            if type(value) is not int or not 0 <= value < _U32_LIMIT:
                raise AuditFormatError(f"{name}: integer in 0..2**32-1 expected, got {value!r}")
        if not isinstance(self.decision, Decision):
            raise AuditFormatError(f"decision: allow or deny expected, got {self.decision!r}")


def _check_bytes(name: str, value: object, size: int) -> None:
    if not isinstance(value, bytes) or len(value) not in (0, size):
        raise AuditFormatError(f"{name}: {size} bytes (or empty) expected")


_FIELD_KEYS = tuple((f.name, f.name.rstrip("_")) for f in fields(AuditRecord))
_DECISION_JSON = {d: _encode_str(d.value) for d in Decision}


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
        if type(self.seq) is not int or type(self.ts_ms) is not int:
            return canonical(self.to_json()) + b"\n"
        head, tail = _line_halves(self.seq, self.ts_ms, self.record, self.prev)
        return f'{head},"hash":"{self.hash.hex()}",{tail}\n'.encode()


def canonical(obj: dict[str, Any]) -> bytes:
    """Canonical JSON: sorted keys, no whitespace, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def genesis(gateway: str) -> bytes:
    """The ``prev`` of a log's first line: BLAKE2b-256 of a format tag and the gateway's ID."""
    return hashlib.blake2b(_GENESIS_DOMAIN + gateway.encode(), digest_size=HASH_BYTES).digest()


def body_object(seq: int, ts_ms: int, record: AuditRecord, prev: bytes) -> dict[str, Any]:
    """The JSON object a line's hash covers (everything but ``hash``)."""
    obj: dict[str, Any] = {"v": FORMAT_VERSION, "seq": seq, "ts_ms": ts_ms, "prev": prev.hex()}
    for name, key in _FIELD_KEYS:
        value = getattr(record, name)
        if name == "envelope":
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
    """:func:`seal` and the entry's canonical line (newline included), for the writer's hot path.

    The canonical text is built once, straight from the record's fields in sorted-key order
    (:func:`_line_halves`), hashed without ``hash``, and the hash spliced into its sorted place;
    the bytes equal :func:`_seal_with_line_reference`'s (asserted at import, tested in
    tests/gateway/test_audit_fast.py).
    """
    if type(seq) is not int or type(ts_ms) is not int:  # bool, float...: json's own spelling
        return _seal_with_line_reference(seq, ts_ms, record, prev)
    head, tail = _line_halves(seq, ts_ms, record, prev)
    digest = blake2b(f"{head},{tail}".encode(), digest_size=HASH_BYTES).digest()
    line = f'{head},"hash":"{digest.hex()}",{tail}\n'.encode()
    return AuditEntry(seq, ts_ms, record, prev, digest), line


def _seal_with_line_reference(
    seq: int, ts_ms: int, record: AuditRecord, prev: bytes
) -> tuple[AuditEntry, bytes]:
    """The definition of the line and its hash: :func:`canonical` of :func:`body_object`."""
    obj = body_object(seq, ts_ms, record, prev)
    digest = hashlib.blake2b(canonical(obj), digest_size=HASH_BYTES).digest()
    obj["hash"] = digest.hex()
    return AuditEntry(seq, ts_ms, record, prev, digest), canonical(obj) + b"\n"


def _line_halves(seq: int, ts_ms: int, r: AuditRecord, prev: bytes) -> tuple[str, str]:
    """The canonical object's text split where ``"hash"`` sorts: ``{...,"gateway":..`` (keys in
    :data:`_HEAD_KEYS`) and ``"issuer":...}`` (:data:`_TAIL_KEYS`), without the joining comma.

    Text goes through json's own ASCII string encoder; hex, base64 and decimal integers need no
    escaping. ``seq`` and ``ts_ms`` must be exact ``int`` (the record's integers are checked).
    """
    enc = _encode_str
    envelope = r.envelope
    env = "null" if envelope is None else f'"{base64.b64encode(envelope).decode()}"'
    head = (
        f'{{"capture":{enc(r.capture)},"decision":{_DECISION_JSON[r.decision]},'
        f'"destination_scope":{enc(r.destination_scope)},"envelope":{env},'
        f'"envelope_digest":"{r.envelope_digest.hex()}","envelope_id":"{r.envelope_id.hex()}",'
        f'"from":{enc(r.from_)},"gateway":{enc(r.gateway)}'
    )
    tail = (
        f'"issuer":{enc(r.issuer)},"lineage":"{r.lineage.hex()}",'
        f'"origin_scope":{enc(r.origin_scope)},"policy_revision":"{r.policy_revision.hex()}",'
        f'"prev":"{prev.hex()}","reason":{enc(r.reason)},"rule":{enc(r.rule)},"seq":{seq},'
        f'"stamps":{r.stamps},"tier":{r.tier},"to":{enc(r.to)},"ts_ms":{ts_ms},'
        f'"v":{FORMAT_VERSION}}}'
    )
    return head, tail


_KEYS = frozenset({"v", "seq", "ts_ms", "prev", "hash"} | {key for _, key in _FIELD_KEYS})


_HEAD_KEYS = ("capture", "decision", "destination_scope", "envelope", "envelope_digest",
              "envelope_id", "from", "gateway")
_TAIL_KEYS = ("issuer", "lineage", "origin_scope", "policy_revision", "prev", "reason", "rule",
              "seq", "stamps", "tier", "to", "ts_ms", "v")


def _self_check() -> None:
    """Refuse to import if the fast line encoder's key layout or bytes differ from the reference
    (a field added to AuditRecord must be added to :func:`_line_halves` too)."""
    if (*_HEAD_KEYS, "hash", *_TAIL_KEYS) != tuple(sorted(_KEYS)):
        raise AssertionError("_line_halves key order is not the canonical (sorted) one")
    for record in (
        AuditRecord("spiffe://g.example/gw", b"\x01" * 16, "spiffe://w.example/a", "o\u00e9",
                    'd"\\\n', 1, b"\x02" * 32, "net:a", "peer:b", Decision.ALLOW, "allowed",
                    "r\U0001f600", b"\x03" * 32, 2, b"\x04" * 32, b"\xff\x00", "c.bin:4"),
        AuditRecord("", b"", "", "", "", 0, b"", "", "", Decision.DENY, "", "", b"", 0),
    ):
        if seal_with_line(7, 123, record, b"\x05" * 32) != _seal_with_line_reference(
            7, 123, record, b"\x05" * 32
        ):
            raise AssertionError("fast audit line differs from the canonical reference")


_self_check()


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
