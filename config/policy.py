"""The policy file schema: one TOML file per destination scope, listing its revisions in order.

A platform engineer writes revisions by number; hashes are never written by hand. The loader
(:func:`load_policy_file`) returns a :class:`PolicyFile` of plain, validated values; the policy
engine (``gateway.policy``) chains the revisions by hash and builds its store from them. The value
types a rule is made of (:class:`Rule`, :class:`IdPattern`, :class:`LineageWindow`,
:class:`TierNames`) live here because ``config`` may not depend on ``gateway``; ``gateway.policy``
re-exports them. The format is documented in ``docs/policy.md``::

    scope = "payments/ledger"

    [[revision]]
    number = 1
    issued_at = 2026-01-10T09:00:00Z
    workloads = ["spiffe://cilium.prod.example/ns/payments/sa/ledger"]

    [[revision.lineage]]
    origins = ["payments/*"]
    grace_revisions = 1

    [[revision.rule]]
    id = "allow-ledger-from-payments"
    from_scopes = ["payments/*"]
    min_tier = "internal"
"""

from __future__ import annotations

import datetime
import enum
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from config.fields import Fields, root_fields
from config.source import TomlDocument, load_toml
from identity.spiffe_id import (
    InvalidSpiffeID,
    SpiffeID,
    TrustDomain,
    parse_spiffe_id,
    parse_trust_domain,
)

MAX_SCOPE_BYTES = 255
MAX_RULE_ID_BYTES = 128  # a rule id is carried in transit stamps, which bound it to 128 bytes
MAX_RULES = 256
MAX_REVISIONS = 4096
MAX_LIST_ITEMS = 256  # per from_/transit_/workloads/origins list
MAX_TIER = 255
MAX_HOPS = 255
MAX_TIMESTAMP = 2**40
HASH_BYTES = 32

# Same grammar as envelope scopes: '/'-separated segments of letters, digits, '.', '_', '-'.
_SCOPE = re.compile(r"[A-Za-z0-9_\-][A-Za-z0-9._\-]*(?:/[A-Za-z0-9_\-][A-Za-z0-9._\-]*)*")
_RULE_ID = re.compile(r"[a-z0-9][a-z0-9._\-]*")
_TIER_NAME = re.compile(r"[a-z][a-z0-9_\-]*")


# -- value types -----------------------------------------------------------------------------


def scope_problem(scope: str) -> str | None:
    """Why ``scope`` is not a scope name, or None when it is one."""
    if not scope.isascii() or not 0 < len(scope) <= MAX_SCOPE_BYTES:
        return f"a scope is 1..{MAX_SCOPE_BYTES} ASCII characters"
    if _SCOPE.fullmatch(scope) is None or any(s.startswith(".") for s in scope.split("/")):
        return (
            "a scope is '/'-separated segments of letters, digits, '.', '_' and '-' "
            f"(not starting with '.'), found {scope!r}"
        )
    return None


def scope_pattern_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a scope pattern (``a/b``, ``a/*`` or ``*``), or None."""
    if pattern == "*":
        return None
    base = pattern[:-2] if pattern.endswith("/*") else pattern
    why = scope_problem(base)
    return None if why is None else f"{why} (patterns may end in '/*', or be '*')"


@dataclass(frozen=True, slots=True)
class IdPattern:
    """A SPIFFE ID, or with ``subtree`` every ID below its path (written ``spiffe://td/ns/a/*``).

    ``spiffe://td/*`` is every workload of trust domain ``td`` (but not the domain's own ID).
    """

    spiffe_id: SpiffeID
    subtree: bool = False

    def __str__(self) -> str:
        return f"{self.spiffe_id}/*" if self.subtree else str(self.spiffe_id)

    def matches(self, candidate: SpiffeID) -> bool:
        if not self.subtree:
            return candidate == self.spiffe_id
        return candidate.trust_domain == self.spiffe_id.trust_domain and candidate.path.startswith(
            self.spiffe_id.path + "/"
        )


def parse_id_pattern(text: str) -> IdPattern:
    """Parse ``spiffe://td/path`` or ``spiffe://td/path/*``.

    Raises:
        InvalidSpiffeID: the text (without its ``/*``) is not a strict SPIFFE ID.
    """
    if text.endswith("/*"):
        return IdPattern(parse_spiffe_id(text[:-2]), subtree=True)
    return IdPattern(parse_spiffe_id(text))


class LineageMode(enum.StrEnum):
    """How a rule treats the envelope's lineage hash.

    ``managed``: the origin scope's revision chain must be known to the store, and the lineage
    must be in the accepted window and not revoked. ``any``: the lineage is not checked, for
    origins whose policy is not held locally (foreign scopes of federation peers that publish no
    revisions to us); the rule should then narrow the origin by trust domain or SPIFFE ID.
    """

    MANAGED = "managed"
    ANY = "any"


@dataclass(frozen=True, slots=True)
class LineageWindow:
    """Which older revisions of matching origin scopes stay acceptable.

    The origin scope's current revision is always accepted (unless revoked). An older revision is
    accepted when every limit that is set holds: it is at most ``grace_revisions`` behind the
    current one, and it was superseded at most ``grace_seconds`` ago (superseded = the
    ``issued_at`` of the revision that followed it). With neither set, only the current revision
    is accepted. Revoked revisions are never accepted.
    """

    origins: tuple[str, ...]  # origin scope patterns this window applies to
    grace_revisions: int | None = None
    grace_seconds: int | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One allow rule of a destination scope's revision.

    Origin fields (``from_scopes``, ``from_ids``, ``from_domains``): any-of within a field; every
    field that is set must match; at least one is set (``from_scopes = ["*"]`` for everyone).
    Transit fields: when either is set, every stamp's gateway must match one entry of either;
    when both are empty, any gateway may have carried the envelope (the envelope's own routing
    constraint, checked by the codec, still applies). ``max_hops`` counts the stamps present when
    the decision is made; None leaves only the envelope's own limit.
    """

    id: str
    from_scopes: tuple[str, ...] = ()
    from_ids: tuple[IdPattern, ...] = ()
    from_domains: tuple[TrustDomain, ...] = ()
    min_tier: int = 0
    transit_gateways: tuple[IdPattern, ...] = ()
    transit_domains: tuple[TrustDomain, ...] = ()
    max_hops: int | None = None
    lineage: LineageMode = LineageMode.MANAGED


@dataclass(frozen=True, slots=True)
class TierNames:
    """Names for trust tiers (0..255). Several names may not share a value."""

    names: tuple[tuple[str, int], ...]

    def value_of(self, name: str) -> int | None:
        for known, value in self.names:
            if known == name:
                return value
        return None

    def name_of(self, value: int) -> str | None:
        for known, number in self.names:
            if number == value:
                return known
        return None

    def label(self, value: int) -> str:
        """``2 (restricted)``, or just ``7`` for an unnamed tier."""
        name = self.name_of(value)
        return f"{value} ({name})" if name else str(value)


DEFAULT_TIERS = TierNames((("public", 0), ("internal", 1), ("restricted", 2)))


# -- the file --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RevisionSpec:
    """One revision as written; ``revokes`` names earlier revisions of this file by number."""

    number: int
    issued_at: int  # unix seconds
    previous: bytes | None  # only on the first listed revision when its number is above 1
    revokes: tuple[int, ...]
    workloads: tuple[IdPattern, ...]
    lineage: tuple[LineageWindow, ...]
    rules: tuple[Rule, ...]


@dataclass(frozen=True, slots=True)
class PolicyFile:
    """A destination scope's policy file: its revisions, in order."""

    path: Path
    scope: str
    revisions: tuple[RevisionSpec, ...]


def tiers_from_fields(fields: Fields) -> TierNames:
    """Read a ``[tiers]`` table (``name = number``) for configs that rename trust tiers."""
    names: list[tuple[str, int]] = []
    seen: dict[int, str] = {}
    for name in fields.key_names():
        value = fields.integer(name, low=0, high=MAX_TIER)
        if _TIER_NAME.fullmatch(name) is None:
            fields.problem(name, "a tier name is lowercase letters, digits, '_' and '-'")
        elif value in seen:
            fields.problem(name, f"tier {value} is already named {seen[value]!r}")
        else:
            seen[value] = name
            names.append((name, value))
    fields.finish()
    return TierNames(tuple(names))


def policy_file_from_mapping(doc: TomlDocument, *, tiers: TierNames = DEFAULT_TIERS) -> PolicyFile:
    """Build a :class:`PolicyFile` from a parsed TOML document.

    Args:
        doc: the document (its path and line index name the problems).
        tiers: the trust tier names ``min_tier`` may use.

    Returns:
        The validated policy file.

    Raises:
        ConfigError: every problem found, each with file, key path, line and what was expected.
    """
    root = root_fields(doc)
    scope = root.string("scope", max_length=MAX_SCOPE_BYTES, check=scope_problem)
    revision_tables = root.tables("revision", max_items=MAX_REVISIONS)
    if not revision_tables and not root.has("revision"):
        root.problem("revision", "a policy file needs at least one [[revision]]")
    revisions: list[RevisionSpec] = []
    for position, table in enumerate(revision_tables):
        revisions.append(_revision(table, position, revisions, tiers))
    root.finish()
    root.context.raise_if_problems()
    return PolicyFile(doc.path, scope, tuple(revisions))


def load_policy_file(path: Path | str, *, tiers: TierNames = DEFAULT_TIERS) -> PolicyFile:
    """Read and validate one policy file.

    Raises:
        ConfigError: unreadable file, invalid TOML, or any schema problem (file, key path, line).
    """
    return policy_file_from_mapping(load_toml(path), tiers=tiers)


def _revision(
    fields: Fields, position: int, earlier: list[RevisionSpec], tiers: TierNames
) -> RevisionSpec:
    number = fields.integer("number", low=1, high=2**31)
    if earlier and fields.has("number") and number != earlier[-1].number + 1:
        fields.problem(
            "number", f"expected {earlier[-1].number + 1} (revisions are listed in order, by one)"
        )
    issued_at = _timestamp(fields, "issued_at")
    if earlier and issued_at < earlier[-1].issued_at:
        fields.problem("issued_at", "must not be earlier than the previous revision's issued_at")
    previous = _previous(fields, position, number)
    revokes = _revokes(fields, number, earlier)
    workloads = _id_patterns(fields, "workloads")
    lineage = tuple(_lineage_window(t) for t in fields.tables("lineage", max_items=MAX_RULES))
    rule_tables = fields.tables("rule", max_items=MAX_RULES)
    rules: list[Rule] = []
    seen_ids: set[str] = set()
    for table in rule_tables:
        rule = _rule(table, tiers)
        if rule.id in seen_ids:
            table.problem("id", f"duplicate rule id {rule.id!r} in this revision")
        seen_ids.add(rule.id)
        rules.append(rule)
    fields.finish()
    return RevisionSpec(number, issued_at, previous, revokes, workloads, lineage, tuple(rules))


def _previous(fields: Fields, position: int, number: int) -> bytes | None:
    if not fields.has("previous"):
        if position == 0 and number > 1:
            fields.problem(
                "previous",
                "missing: the first listed revision has number above 1, so give the hash of "
                "the revision before it (64 hex digits)",
            )
        return None
    text = fields.string("previous", max_length=64)
    if position != 0 or number == 1:
        fields.problem(
            "previous", "only the first listed revision, when its number is above 1, may set it"
        )
        return None
    try:
        value = bytes.fromhex(text)
    except ValueError:
        value = b""
    if len(value) != HASH_BYTES:
        fields.problem("previous", f"expected {HASH_BYTES * 2} hex digits, found {text!r}")
        return None
    return value


def _revokes(fields: Fields, number: int, earlier: list[RevisionSpec]) -> tuple[int, ...]:
    if not fields.has("revokes"):
        return ()
    value = _take(fields, "revokes")
    if not isinstance(value, list) or any(type(v) is not int for v in value):
        fields.problem("revokes", "expected an array of revision numbers such as [1, 2]")
        return ()
    known = {spec.number for spec in earlier}
    for item in value:
        if item >= number:
            fields.problem("revokes", f"revision {item} is not earlier than this one ({number})")
        elif item not in known:
            fields.problem("revokes", f"revision {item} is not listed earlier in this file")
    return tuple(value)


def _timestamp(fields: Fields, key: str) -> int:
    if not fields.has(key):
        fields.problem(
            key, "missing required key (expected a date-time such as 2026-01-10T09:00:00Z)"
        )
        return 0
    value = _take(fields, key)
    if type(value) is int:
        if not 0 <= value <= MAX_TIMESTAMP:
            fields.problem(key, f"expected unix seconds from 0 to {MAX_TIMESTAMP}, found {value}")
            return 0
        return int(value)
    if isinstance(value, datetime.datetime) and value.tzinfo is not None:
        return int(value.timestamp())
    if isinstance(value, datetime.datetime):
        fields.problem(key, "a date-time needs a UTC offset, such as 2026-01-10T09:00:00Z")
        return 0
    fields.problem(
        key, f"expected a date-time such as 2026-01-10T09:00:00Z or unix seconds, found {value!r}"
    )
    return 0


def _rule(fields: Fields, tiers: TierNames) -> Rule:
    rule_id = fields.string("id", max_length=MAX_RULE_ID_BYTES, check=_rule_id_problem)
    from_scopes = _scope_patterns(fields, "from_scopes")
    from_ids = _id_patterns(fields, "from_ids")
    from_domains = _trust_domains(fields, "from_domains")
    if not (fields.has("from_scopes") or fields.has("from_ids") or fields.has("from_domains")):
        fields.problem(
            "",
            'a rule needs from_scopes, from_ids or from_domains (use from_scopes = ["*"] '
            "to allow every origin)",
        )
    for key, value in (
        ("from_scopes", from_scopes),
        ("from_ids", from_ids),
        ("from_domains", from_domains),
    ):
        if fields.has(key) and not value and not _has_item_problem(fields, key):
            fields.problem(key, "must not be empty (leave it out instead)")
    min_tier = _tier(fields, "min_tier", tiers)
    transit_gateways = _id_patterns(fields, "transit_gateways")
    transit_domains = _trust_domains(fields, "transit_domains")
    max_hops = fields.integer("max_hops", low=0, high=MAX_HOPS) if fields.has("max_hops") else None
    lineage_text = fields.string(
        "lineage", LineageMode.MANAGED.value, choices=[m.value for m in LineageMode]
    )
    lineage = (
        LineageMode(lineage_text)
        if lineage_text in {m.value for m in LineageMode}
        else LineageMode.MANAGED
    )
    fields.finish()
    return Rule(
        rule_id,
        from_scopes,
        from_ids,
        from_domains,
        min_tier,
        transit_gateways,
        transit_domains,
        max_hops,
        lineage,
    )


# Fields has typed accessors only; these two read a value whose type the schema decides itself
# (an integer or a tier name, a date-time or unix seconds, an array of integers).
def _peek(fields: Fields, key: str) -> Any:
    return fields._table.get(key)


def _take(fields: Fields, key: str) -> Any:
    fields._read.add(key)
    return fields._table.get(key)


def _has_item_problem(fields: Fields, key: str) -> bool:
    prefix = fields.key_path(key)
    return any(p.key_path.startswith(prefix) for p in fields.context.problems)


def _rule_id_problem(text: str) -> str | None:
    if _RULE_ID.fullmatch(text) is None:
        return (
            "a rule id is lowercase letters, digits, '.', '_' and '-', starting with a letter or "
            f"digit, found {text!r}"
        )
    return None


def _tier(fields: Fields, key: str, tiers: TierNames) -> int:
    if not fields.has(key):
        return 0
    if isinstance(value := _peek(fields, key), str):
        _take(fields, key)
        number = tiers.value_of(value)
        if number is None:
            known = ", ".join(f"{name!r}" for name, _ in tiers.names)
            fields.problem(
                key, f"unknown trust tier {value!r} (known: {known}, or a number 0..255)"
            )
            return 0
        return number
    return fields.integer(key, low=0, high=MAX_TIER)


def _list_items(fields: Fields, key: str) -> list[tuple[int, str]]:
    return list(enumerate(fields.strings(key, (), max_items=MAX_LIST_ITEMS)))


def _item_problem(fields: Fields, key: str, index: int, message: str) -> None:
    fields.context.problem(f"{fields.key_path(key)}[{index}]", message)


def _scope_patterns(fields: Fields, key: str) -> tuple[str, ...]:
    out: list[str] = []
    for index, text in _list_items(fields, key):
        why = scope_pattern_problem(text)
        if why is not None:
            _item_problem(fields, key, index, why)
        else:
            out.append(text)
    return tuple(out)


def _id_patterns(fields: Fields, key: str) -> tuple[IdPattern, ...]:
    out: list[IdPattern] = []
    for index, text in _list_items(fields, key):
        try:
            out.append(parse_id_pattern(text))
        except InvalidSpiffeID as exc:
            _item_problem(
                fields, key, index, f"not a SPIFFE ID (or ID/* pattern): {exc}, found {text!r}"
            )
    return tuple(out)


def _trust_domains(fields: Fields, key: str) -> tuple[TrustDomain, ...]:
    out: list[TrustDomain] = []
    for index, text in _list_items(fields, key):
        try:
            out.append(parse_trust_domain(text))
        except InvalidSpiffeID as exc:
            _item_problem(fields, key, index, f"not a trust domain: {exc}, found {text!r}")
    return tuple(out)


def _lineage_window(fields: Fields) -> LineageWindow:
    origins = _scope_patterns(fields, "origins")
    if not fields.has("origins"):
        fields.problem(
            "origins", 'missing required key (expected origin scope patterns, e.g. ["*"])'
        )
    grace_revisions = (
        fields.integer("grace_revisions", low=0, high=MAX_REVISIONS)
        if fields.has("grace_revisions")
        else None
    )
    grace_seconds = (
        fields.integer("grace_seconds", low=0, high=MAX_TIMESTAMP)
        if fields.has("grace_seconds")
        else None
    )
    fields.finish()
    return LineageWindow(origins, grace_revisions, grace_seconds)
