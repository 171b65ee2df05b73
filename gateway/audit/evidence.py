"""Theory of operation: the evidence bundle, everything an offline auditor needs besides the logs.

An evidence bundle is one JSON document, self-describing and versioned::

    {"format": "sluice-evidence", "version": 1,
     "created_at": <unix seconds>, "gateway": "<the gateway's SPIFFE ID>",
     "trust_bundles": {"<trust domain>": <SPIFFE bundle document (JWKS)>, ...},
     "endorsements": ["<base64 anchor endorsement>", ...],
     "gateway_endorsement": "<base64 endorsement of the gateway's own anchor>",
     "policy_revisions": {"<scope>": ["<base64 signed revision (COSE_Sign1)>", ...], ...},
     "tiers": [["<tier name>", <level>], ...],
     "revocations": {"kids": ["<hex>", ...], "spiffe_ids": ["spiffe://...", ...]},
     "peers": [{"name", "spiffe_id", "trust_domain", "export_scopes", "import_scopes"}, ...],
     "routes": [{"scope" | "workload": ..., "network" | "peer": ...}, ...]}

The trust bundles are the auditor's roots of trust (check their fingerprints out of band); every
other signed item chains to them: endorsements through their SVID chains, policy revisions through
the gateway's anchor key, which the gateway's own endorsement binds to its SPIFFE ID. Nothing in
the bundle is trusted because it is in the bundle: :func:`load_evidence` checks the structure only
(strictly, with the key path of the first problem), and :mod:`gateway.audit.replay` verifies every
signature and reports the ones that fail as findings. Peers and routes are the configuration the
gateway decided with (federation scope filters and next hops), without addresses.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes

from config.policy import TierNames
from identity.bundle import (
    BundleSet,
    InvalidBundle,
    TrustBundle,
    parse_spiffe_bundle,
    serialize_spiffe_bundle,
)
from identity.registry import Revocations
from identity.spiffe_id import (
    InvalidSpiffeID,
    SpiffeID,
    TrustDomain,
    parse_spiffe_id,
    parse_trust_domain,
)

FORMAT = "sluice-evidence"
VERSION = 1
MAX_EVIDENCE_BYTES = 64 * 1024 * 1024
MAX_ITEMS = 100_000  # endorsements, revisions per scope, scopes, peers, routes, revocations
MAX_TEXT = 2048
MAX_BLOB_BYTES = 1024 * 1024  # one endorsement or signed revision (both are far smaller)

_KEYS = frozenset(
    {
        "format", "version", "created_at", "gateway", "trust_bundles", "endorsements",
        "gateway_endorsement", "policy_revisions", "tiers", "revocations", "peers", "routes",
    }
)  # fmt: skip
_PEER_KEYS = frozenset({"name", "spiffe_id", "trust_domain", "export_scopes", "import_scopes"})
_KID_HEX = re.compile(r"[0-9a-f]{32}")


class EvidenceError(ValueError):
    """An evidence file is unreadable or malformed; the message names the file and key path."""


@dataclass(frozen=True, slots=True)
class EvidencePeer:
    name: str
    spiffe_id: SpiffeID
    trust_domain: TrustDomain
    export_scopes: tuple[str, ...]
    import_scopes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EvidenceRoute:
    """A route without its address: one of ``scope``/``workload``, one of ``network``/``peer``."""

    scope: str | None
    workload: SpiffeID | None
    network: str | None
    peer: str | None


@dataclass(frozen=True, slots=True)
class Evidence:
    """A structurally valid evidence bundle; its signatures are NOT verified yet."""

    created_at: int
    gateway: SpiffeID
    bundles: BundleSet
    endorsements: tuple[bytes, ...]
    gateway_endorsement: bytes
    policy_revisions: tuple[tuple[str, tuple[bytes, ...]], ...]  # (scope, signed documents)
    tiers: TierNames
    revocations: Revocations
    peers: tuple[EvidencePeer, ...]
    routes: tuple[EvidenceRoute, ...]
    source: str = ""  # where it was loaded from, for messages


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def evidence_to_json(evidence: Evidence) -> dict[str, Any]:
    """The JSON object of ``evidence`` (see the module docstring).

    Raises:
        InvalidBundle: a trust bundle has an authority with no JWK form.
    """
    return {
        "format": FORMAT,
        "version": VERSION,
        "created_at": evidence.created_at,
        "gateway": str(evidence.gateway),
        "trust_bundles": {
            td.name: json.loads(serialize_spiffe_bundle(evidence.bundles[td]))
            for td in sorted(evidence.bundles, key=lambda d: d.name)
        },
        "endorsements": [_b64(e) for e in evidence.endorsements],
        "gateway_endorsement": _b64(evidence.gateway_endorsement),
        "policy_revisions": {
            scope: [_b64(doc) for doc in docs] for scope, docs in evidence.policy_revisions
        },
        "tiers": [[name, level] for name, level in evidence.tiers.names],
        "revocations": {
            "kids": sorted(kid.hex() for kid in evidence.revocations.kids),
            "spiffe_ids": sorted(str(i) for i in evidence.revocations.spiffe_ids),
        },
        "peers": [
            {
                "name": p.name,
                "spiffe_id": str(p.spiffe_id),
                "trust_domain": p.trust_domain.name,
                "export_scopes": list(p.export_scopes),
                "import_scopes": list(p.import_scopes),
            }
            for p in evidence.peers
        ],
        "routes": [_route_json(r) for r in evidence.routes],
    }


def _route_json(route: EvidenceRoute) -> dict[str, str]:
    out: dict[str, str] = {}
    if route.scope is not None:
        out["scope"] = route.scope
    if route.workload is not None:
        out["workload"] = str(route.workload)
    if route.network is not None:
        out["network"] = route.network
    if route.peer is not None:
        out["peer"] = route.peer
    return out


def dump_evidence(evidence: Evidence) -> bytes:
    """The evidence file's bytes: indented JSON with sorted keys, so diffs between exports read
    well."""
    return json.dumps(evidence_to_json(evidence), indent=1, sort_keys=True).encode() + b"\n"


def load_evidence(path: Path | str) -> Evidence:
    """Read and strictly check an evidence file.

    Returns:
        The evidence, structurally valid (signatures are checked by the replay).

    Raises:
        EvidenceError: one line naming the file, the key path and what was expected.
    """
    source = str(path)
    try:
        with Path(path).open("rb") as f:
            data = f.read(MAX_EVIDENCE_BYTES + 1)
    except OSError as exc:
        raise EvidenceError(f"{source}: cannot read: {exc.strerror or exc}") from None
    if len(data) > MAX_EVIDENCE_BYTES:
        raise EvidenceError(f"{source}: larger than {MAX_EVIDENCE_BYTES} bytes")
    return parse_evidence(data, source=source)


def parse_evidence(data: bytes, *, source: str = "<evidence>") -> Evidence:
    """Check an evidence document's bytes; see :func:`load_evidence`."""
    try:
        doc = json.loads(data, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as exc:
        raise EvidenceError(f"{source}: not a JSON document: {_first_line(exc)}") from None
    try:
        return _evidence(doc, source)
    except _Bad as bad:
        raise EvidenceError(f"{source}: {bad.path}: {bad.message}") from None


class _Bad(Exception):
    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
        self.message = message


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"duplicate key {key!r}")
        out[key] = value
    return out


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _evidence(doc: object, source: str) -> Evidence:
    if not isinstance(doc, dict):
        raise _Bad("(document)", "a JSON object expected")
    if doc.get("format") != FORMAT:
        raise _Bad("format", f"{FORMAT!r} expected (this is not a sluice evidence bundle)")
    if doc.get("version") != VERSION:
        raise _Bad("version", f"version {VERSION} expected, got {doc.get('version')!r}")
    keys = set(doc)
    if keys != _KEYS:
        missing, extra = sorted(_KEYS - keys), sorted(keys - _KEYS)
        what = "missing " + ", ".join(missing) if missing else "unknown " + ", ".join(extra)
        raise _Bad("(document)", f"keys: {what}")
    created_at = doc["created_at"]
    if type(created_at) is not int or not 0 <= created_at < 2**40:
        raise _Bad("created_at", "unix seconds (a non-negative integer) expected")
    return Evidence(
        created_at=created_at,
        gateway=_spiffe_id(doc["gateway"], "gateway"),
        bundles=_bundles(doc["trust_bundles"]),
        endorsements=tuple(
            _blob(v, f"endorsements[{i}]")
            for i, v in enumerate(_list(doc["endorsements"], "endorsements"))
        ),
        gateway_endorsement=_blob(doc["gateway_endorsement"], "gateway_endorsement"),
        policy_revisions=_revisions(doc["policy_revisions"]),
        tiers=_tiers(doc["tiers"]),
        revocations=_revocations(doc["revocations"]),
        peers=tuple(
            _peer(v, f"peers[{i}]") for i, v in enumerate(_list(doc["peers"], "peers"))
        ),
        routes=tuple(
            _route(v, f"routes[{i}]") for i, v in enumerate(_list(doc["routes"], "routes"))
        ),
        source=source,
    )


def _list(value: object, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _Bad(path, "a JSON array expected")
    if len(value) > MAX_ITEMS:
        raise _Bad(path, f"more than {MAX_ITEMS} entries")
    return value


def _object(value: object, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _Bad(path, "a JSON object expected")
    if len(value) > MAX_ITEMS:
        raise _Bad(path, f"more than {MAX_ITEMS} entries")
    return value


def _text(value: object, path: str) -> str:
    if not isinstance(value, str) or not value or len(value.encode()) > MAX_TEXT:
        raise _Bad(path, f"a non-empty string of at most {MAX_TEXT} bytes expected")
    return value


def _texts(value: object, path: str) -> tuple[str, ...]:
    return tuple(_text(v, f"{path}[{i}]") for i, v in enumerate(_list(value, path)))


def _blob(value: object, path: str) -> bytes:
    if not isinstance(value, str) or len(value) > MAX_BLOB_BYTES * 4 // 3 + 4:
        raise _Bad(path, f"base64 text of at most {MAX_BLOB_BYTES} bytes expected")
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error:
        raise _Bad(path, "base64 text expected") from None
    if not raw:
        raise _Bad(path, "empty")
    return raw


def _spiffe_id(value: object, path: str) -> SpiffeID:
    try:
        return parse_spiffe_id(_text(value, path))
    except InvalidSpiffeID as exc:
        raise _Bad(path, str(exc)) from None


def _trust_domain(value: object, path: str) -> TrustDomain:
    try:
        return parse_trust_domain(_text(value, path))
    except InvalidSpiffeID as exc:
        raise _Bad(path, str(exc)) from None


def _bundles(value: object) -> BundleSet:
    bundles = []
    for name, document in _object(value, "trust_bundles").items():
        path = f"trust_bundles.{name}"
        td = _trust_domain(name, path)
        if not isinstance(document, dict):
            raise _Bad(path, "a SPIFFE bundle document (a JSON object) expected")
        try:
            bundles.append(parse_spiffe_bundle(json.dumps(document).encode(), td))
        except InvalidBundle as exc:
            raise _Bad(path, str(exc)) from None
    return BundleSet(bundles)


def _revisions(value: object) -> tuple[tuple[str, tuple[bytes, ...]], ...]:
    out = []
    for scope, docs in _object(value, "policy_revisions").items():
        path = f"policy_revisions.{scope}"
        _text(scope, path)
        blobs = tuple(_blob(v, f"{path}[{i}]") for i, v in enumerate(_list(docs, path)))
        out.append((scope, blobs))
    return tuple(out)


def _tiers(value: object) -> TierNames:
    names = []
    for i, item in enumerate(_list(value, "tiers")):
        path = f"tiers[{i}]"
        if not isinstance(item, list) or len(item) != 2:
            raise _Bad(path, "a [name, level] pair expected")
        level = item[1]
        if type(level) is not int or not 0 <= level <= 255:
            raise _Bad(path, "level: an integer 0..255 expected")
        names.append((_text(item[0], path), level))
    return TierNames(tuple(names))


def _revocations(value: object) -> Revocations:
    doc = _object(value, "revocations")
    if set(doc) != {"kids", "spiffe_ids"}:
        raise _Bad("revocations", "exactly the keys kids and spiffe_ids expected")
    kids = set()
    for i, text in enumerate(_texts(doc["kids"], "revocations.kids")):
        if _KID_HEX.fullmatch(text) is None:
            raise _Bad(f"revocations.kids[{i}]", "32 lowercase hex digits expected")
        kids.add(bytes.fromhex(text))
    ids = {
        _spiffe_id(v, f"revocations.spiffe_ids[{i}]")
        for i, v in enumerate(_list(doc["spiffe_ids"], "revocations.spiffe_ids"))
    }
    return Revocations(frozenset(kids), frozenset(ids))


def _peer(value: object, path: str) -> EvidencePeer:
    doc = _object(value, path)
    if set(doc) != _PEER_KEYS:
        raise _Bad(path, "keys: " + ", ".join(sorted(_PEER_KEYS)) + " expected")
    return EvidencePeer(
        name=_text(doc["name"], f"{path}.name"),
        spiffe_id=_spiffe_id(doc["spiffe_id"], f"{path}.spiffe_id"),
        trust_domain=_trust_domain(doc["trust_domain"], f"{path}.trust_domain"),
        export_scopes=_texts(doc["export_scopes"], f"{path}.export_scopes"),
        import_scopes=_texts(doc["import_scopes"], f"{path}.import_scopes"),
    )


def _route(value: object, path: str) -> EvidenceRoute:
    doc = _object(value, path)
    if set(doc) - {"scope", "workload", "network", "peer"}:
        raise _Bad(path, "only the keys scope, workload, network and peer are allowed")
    if ("scope" in doc) == ("workload" in doc) or ("network" in doc) == ("peer" in doc):
        raise _Bad(path, "exactly one of scope/workload and one of network/peer expected")
    return EvidenceRoute(
        scope=_text(doc["scope"], f"{path}.scope") if "scope" in doc else None,
        workload=_spiffe_id(doc["workload"], f"{path}.workload") if "workload" in doc else None,
        network=_text(doc["network"], f"{path}.network") if "network" in doc else None,
        peer=_text(doc["peer"], f"{path}.peer") if "peer" in doc else None,
    )


def merge_evidence(bundles: Sequence[Evidence]) -> Evidence:
    """Combine evidence bundles of one gateway exported at different times (the archive of a
    period): endorsements, revisions, revocations and bundle authorities are united; peers, routes
    and tiers come from the newest bundle.

    Raises:
        EvidenceError: the bundles are of different gateways, or none was given.
    """
    if not bundles:
        raise EvidenceError("no evidence bundle")
    newest = max(bundles, key=lambda e: e.created_at)
    if any(e.gateway != newest.gateway for e in bundles):
        raise EvidenceError("cannot merge evidence bundles of different gateways")
    if len(bundles) == 1:
        return newest
    authorities: dict[TrustDomain, dict[bytes, Any]] = {}
    for e in bundles:
        for td, bundle in e.bundles.items():
            slot = authorities.setdefault(td, {})
            for cert in bundle.x509_authorities:
                slot.setdefault(cert.fingerprint(hashes.SHA256()), cert)
    merged_bundles = BundleSet(TrustBundle(td, tuple(c.values())) for td, c in authorities.items())
    scopes: dict[str, dict[bytes, None]] = {}
    for e in bundles:
        for scope, docs in e.policy_revisions:
            scopes.setdefault(scope, {}).update(dict.fromkeys(docs))
    return Evidence(
        created_at=newest.created_at,
        gateway=newest.gateway,
        bundles=merged_bundles,
        endorsements=tuple(dict.fromkeys(x for e in bundles for x in e.endorsements)),
        gateway_endorsement=newest.gateway_endorsement,
        policy_revisions=tuple((s, tuple(d)) for s, d in scopes.items()),
        tiers=newest.tiers,
        revocations=Revocations(
            frozenset(k for e in bundles for k in e.revocations.kids),
            frozenset(i for e in bundles for i in e.revocations.spiffe_ids),
        ),
        peers=newest.peers,
        routes=newest.routes,
        source=" + ".join(e.source for e in bundles),
    )


def group_by_gateway(bundles: Sequence[Evidence]) -> Mapping[SpiffeID, Evidence]:
    """Merge the given bundles per gateway (see :func:`merge_evidence`)."""
    groups: dict[SpiffeID, list[Evidence]] = {}
    for e in bundles:
        groups.setdefault(e.gateway, []).append(e)
    return {gw: merge_evidence(group) for gw, group in groups.items()}
