"""Decoding a revision from its canonical CBOR content (the payload of a signed policy document).

The input is untrusted until the caller has verified the document's signature, and even then it is
checked strictly: exactly the documented keys, the documented types, bounded lengths, and the
bytes must be the canonical encoding of what they decode to (re-encoding must give the same
bytes), so a revision has one representation and one hash.
"""

from __future__ import annotations

from typing import Any

import cbor2

from config.policy import (
    MAX_LIST_ITEMS,
    MAX_RULES,
    IdPattern,
    LineageMode,
    LineageWindow,
    Rule,
    parse_id_pattern,
)
from gateway.errors import RemoteProtocolError
from gateway.policy.model import CONTENT_VERSION, InvalidPolicy, PolicyRevision
from gateway.reasons import Reason
from identity.spiffe_id import InvalidSpiffeID, TrustDomain, parse_trust_domain

MAX_CONTENT_BYTES = 1024 * 1024

_REVISION_KEYS = frozenset(
    {"v", "scope", "number", "previous", "issued_at", "workloads", "lineage", "rules", "revokes"}
)
_WINDOW_KEYS = frozenset({"origins", "grace_revisions", "grace_seconds"})
_RULE_KEYS = frozenset(
    {"id", "from_scopes", "from_ids", "from_domains", "min_tier", "transit_gateways",
     "transit_domains", "max_hops", "lineage"}
)  # fmt: skip


def decode_revision(content: bytes) -> PolicyRevision:
    """Rebuild a :class:`PolicyRevision` from its canonical CBOR content.

    Args:
        content: the bytes that were hashed (``PolicyRevision.content``).

    Returns:
        The revision; its ``digest`` is recomputed from ``content``.

    Raises:
        RemoteProtocolError: TOO_LARGE, MALFORMED (not CBOR, wrong keys or types, a value the
            model rejects), UNSUPPORTED_VERSION, or NON_CANONICAL.
    """
    if len(content) > MAX_CONTENT_BYTES:
        raise RemoteProtocolError(
            Reason.TOO_LARGE, f"policy revision exceeds {MAX_CONTENT_BYTES} bytes"
        )
    try:
        value = cbor2.loads(content)
    except Exception as exc:  # cbor2 raises several kinds for garbage; all mean "not CBOR"
        raise RemoteProtocolError(
            Reason.MALFORMED, f"policy revision is not CBOR ({exc})"
        ) from None
    top = _map(value, _REVISION_KEYS, "revision")
    if top["v"] != CONTENT_VERSION or type(top["v"]) is not int:
        raise RemoteProtocolError(
            Reason.UNSUPPORTED_VERSION,
            f"policy content version {top['v']!r} is not {CONTENT_VERSION}",
        )
    try:
        revision = PolicyRevision(
            scope=_text(top["scope"], "scope"),
            number=_uint(top["number"], "number"),
            previous=_bytes(top["previous"], "previous"),
            issued_at=_uint(top["issued_at"], "issued_at"),
            workloads=tuple(_id(t, "workloads") for t in _array(top["workloads"], "workloads")),
            lineage=tuple(_window(w) for w in _array(top["lineage"], "lineage")),
            rules=tuple(_rule(r) for r in _array(top["rules"], "rules", MAX_RULES)),
            revokes=tuple(_bytes(h, "revokes") for h in _array(top["revokes"], "revokes")),
        )
    except InvalidPolicy as exc:
        raise RemoteProtocolError(Reason.MALFORMED, f"policy revision: {exc}") from None
    if revision.content != content:
        raise RemoteProtocolError(Reason.NON_CANONICAL, "policy revision is not canonical CBOR")
    return revision


def _map(value: object, keys: frozenset[str], what: str) -> dict[str, Any]:
    if not isinstance(value, dict) or set(value) != keys:
        found = sorted(map(str, value)) if isinstance(value, dict) else type(value).__name__
        raise RemoteProtocolError(
            Reason.MALFORMED, f"{what} must be a map with keys {sorted(keys)}, found {found}"
        )
    return value


def _array(value: object, what: str, limit: int = MAX_LIST_ITEMS) -> list[Any]:
    if not isinstance(value, list) or len(value) > limit:
        raise RemoteProtocolError(Reason.MALFORMED, f"{what} must be an array of at most {limit}")
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise RemoteProtocolError(Reason.MALFORMED, f"{what} must be a text string")
    return value


def _uint(value: object, what: str) -> int:
    if type(value) is not int or value < 0:
        raise RemoteProtocolError(Reason.MALFORMED, f"{what} must be an unsigned integer")
    return value


def _optional_uint(value: object, what: str) -> int | None:
    return None if value is None else _uint(value, what)


def _bytes(value: object, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise RemoteProtocolError(Reason.MALFORMED, f"{what} must be a byte string")
    return value


def _id(value: object, what: str) -> IdPattern:
    try:
        return parse_id_pattern(_text(value, what))
    except InvalidSpiffeID as exc:
        raise RemoteProtocolError(Reason.MALFORMED, f"{what}: {exc}") from None


def _domain(value: object, what: str) -> TrustDomain:
    try:
        return parse_trust_domain(_text(value, what))
    except InvalidSpiffeID as exc:
        raise RemoteProtocolError(Reason.MALFORMED, f"{what}: {exc}") from None


def _window(value: object) -> LineageWindow:
    window = _map(value, _WINDOW_KEYS, "lineage window")
    return LineageWindow(
        origins=tuple(_text(o, "lineage origins") for o in _array(window["origins"], "origins")),
        grace_revisions=_optional_uint(window["grace_revisions"], "grace_revisions"),
        grace_seconds=_optional_uint(window["grace_seconds"], "grace_seconds"),
    )


def _rule(value: object) -> Rule:
    rule = _map(value, _RULE_KEYS, "rule")
    lineage = _text(rule["lineage"], "rule lineage")
    if lineage not in {m.value for m in LineageMode}:
        raise RemoteProtocolError(Reason.MALFORMED, f"rule lineage {lineage!r} is unknown")
    return Rule(
        id=_text(rule["id"], "rule id"),
        from_scopes=tuple(
            _text(s, "from_scopes") for s in _array(rule["from_scopes"], "from_scopes")
        ),
        from_ids=tuple(_id(t, "from_ids") for t in _array(rule["from_ids"], "from_ids")),
        from_domains=tuple(
            _domain(t, "from_domains") for t in _array(rule["from_domains"], "from_domains")
        ),
        min_tier=_uint(rule["min_tier"], "min_tier"),
        transit_gateways=tuple(
            _id(t, "transit_gateways") for t in _array(rule["transit_gateways"], "transit_gateways")
        ),
        transit_domains=tuple(
            _domain(t, "transit_domains")
            for t in _array(rule["transit_domains"], "transit_domains")
        ),
        max_hops=_optional_uint(rule["max_hops"], "max_hops"),
        lineage=LineageMode(lineage),
    )
