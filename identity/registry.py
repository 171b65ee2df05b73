"""The anchor registry: verified endorsements by key id, with rotation and revocation.

Theory of operation. A registry is an immutable snapshot. It is built (with
:class:`RegistryBuilder`, or :func:`load_registry` from files) only from endorsements that
verified against the trust bundles, and it answers :meth:`AnchorRegistry.resolve` with one dict
lookup, two set lookups and a scan of the few endorsements of that one key: it sits on the envelope
hot path. A daemon reloads by building a new snapshot and swapping one reference, so readers never
see a half-built registry and need no lock.

Decisions (documented in docs/identity.md "Governance anchors"):

- Rotation: a SPIFFE ID may have any number of anchors with overlapping windows; each resolves on
  its own. The same anchor key may also be re-endorsed (typically each time the short-lived SVID
  rotates); the endorsements of one kid must all name the same SPIFFE ID, and ``resolve`` returns
  the one valid at ``now`` that started last.
- The anchor cannot outlive its SVID: the window used is the endorsed window clamped to the chain
  certificates' validity (:class:`identity.endorsement.VerifiedEndorsement`), not a rejection, so
  an endorsement may ask for a day and be honoured for as long as the SVID lives.
- Revocation by kid (one compromised anchor key) and by SPIFFE ID (a compromised workload: all its
  anchors at once). Revocation wins over everything and is checked before validity.
- Bundles: the chain is checked when an endorsement is added; when bundles change, the daemon
  rebuilds the registry from its files.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from identity.anchor_contract import (
    KEY_ID_BYTES,
    AnchorLookupError,
    AnchorProblem,
    ResolvedAnchor,
)
from identity.bundle import BundleSet
from identity.endorsement import (
    MAX_ENDORSEMENT_BYTES,
    EndorsementProblem,
    InvalidEndorsement,
    VerifiedEndorsement,
    verify_endorsement,
)
from identity.spiffe_id import InvalidSpiffeID, SpiffeID, parse_spiffe_id

ENDORSEMENT_SUFFIX = ".endorsement"
MAX_ENDORSEMENTS_PER_KID = 16  # live (not yet expired) endorsements of one anchor key
MAX_ENDORSEMENT_FILES = 100_000
MAX_REVOCATIONS = 100_000
MAX_REVOCATION_FILE_BYTES = 8 * 1024 * 1024

_KID_HEX = re.compile(f"[0-9a-f]{{{2 * KEY_ID_BYTES}}}")


class RegistryLoadError(ValueError):
    """A registry directory or revocation list could not be read; the message names the file."""


@dataclass(frozen=True, slots=True)
class Revocations:
    """Revoked anchor key ids and revoked SPIFFE IDs (all anchors of that workload)."""

    kids: frozenset[bytes] = frozenset()
    spiffe_ids: frozenset[SpiffeID] = frozenset()

    def __len__(self) -> int:
        return len(self.kids) + len(self.spiffe_ids)


@dataclass(frozen=True, slots=True)
class AnchorRegistry:
    """An immutable snapshot of verified anchors; implements ``AnchorResolver``.

    Build one with :class:`RegistryBuilder` or :func:`load_registry`; ``AnchorRegistry()`` is the
    empty registry.
    """

    # kid -> endorsements of that key, the latest not_before first.
    _by_kid: Mapping[bytes, tuple[ResolvedAnchor, ...]] = field(
        default_factory=lambda: MappingProxyType({})
    )
    revocations: Revocations = Revocations()

    def resolve(self, kid: bytes, now: int) -> ResolvedAnchor:
        """The anchor for ``kid`` valid at ``now`` (unix seconds).

        Raises:
            AnchorLookupError: UNKNOWN (no endorsement of this kid), REVOKED (the kid or its
                SPIFFE ID is revoked), NOT_YET_VALID (every endorsement starts after ``now``) or
                EXPIRED (none covers ``now`` and at least one has started).
        """
        entries = self._by_kid.get(kid)
        if entries is None:
            raise AnchorLookupError(AnchorProblem.UNKNOWN, f"no anchor with kid {kid.hex()}")
        first = entries[0]
        if kid in self.revocations.kids:
            raise AnchorLookupError(AnchorProblem.REVOKED, f"anchor {kid.hex()} is revoked")
        if first.spiffe_id in self.revocations.spiffe_ids:
            raise AnchorLookupError(
                AnchorProblem.REVOKED, f"the anchors of {first.spiffe_id} are revoked"
            )
        for entry in entries:
            if entry.not_before <= now < entry.not_after:
                return entry
        if all(now < e.not_before for e in entries):
            start = min(e.not_before for e in entries)
            raise AnchorLookupError(
                AnchorProblem.NOT_YET_VALID, f"anchor {kid.hex()} is valid from {start}"
            )
        end = max((e.not_after for e in entries if e.not_after <= now), default=now)
        raise AnchorLookupError(AnchorProblem.EXPIRED, f"anchor {kid.hex()} expired at {end}")

    def anchors_of(self, spiffe_id: SpiffeID) -> tuple[ResolvedAnchor, ...]:
        """Every endorsement held for ``spiffe_id`` (any time, revoked or not); for tools."""
        return tuple(e for es in self._by_kid.values() for e in es if e.spiffe_id == spiffe_id)

    def endorsements(self, kid: bytes) -> tuple[ResolvedAnchor, ...]:
        """Every endorsement held for ``kid``, the latest start first; empty if unknown."""
        return self._by_kid.get(kid, ())

    def __len__(self) -> int:
        """The number of distinct anchor keys."""
        return len(self._by_kid)

    def with_revocations(self, revocations: Revocations) -> AnchorRegistry:
        """The same anchors under another revocation list (cheap: the anchor table is shared)."""
        return AnchorRegistry(self._by_kid, revocations)

    def revoke(
        self, *, kids: Iterable[bytes] = (), spiffe_ids: Iterable[SpiffeID] = ()
    ) -> AnchorRegistry:
        """A snapshot with these kids and SPIFFE IDs revoked in addition."""
        return self.with_revocations(
            Revocations(
                self.revocations.kids | frozenset(kids),
                self.revocations.spiffe_ids | frozenset(spiffe_ids),
            )
        )

    def add(self, data: bytes, bundles: BundleSet, *, now: int) -> AnchorRegistry:
        """A snapshot with one more endorsement; see :meth:`RegistryBuilder.add`."""
        builder = RegistryBuilder(self)
        builder.add(data, bundles, now=now)
        return builder.build()


class RegistryBuilder:
    """Collects verified endorsements, then freezes them into an :class:`AnchorRegistry`."""

    def __init__(self, base: AnchorRegistry | None = None) -> None:
        base = base or AnchorRegistry()
        self._by_kid: dict[bytes, list[ResolvedAnchor]] = {
            kid: list(entries) for kid, entries in base._by_kid.items()
        }
        self._revocations = base.revocations

    def add(self, data: bytes, bundles: BundleSet, *, now: int) -> ResolvedAnchor:
        """Verify ``data`` (:func:`identity.endorsement.verify_endorsement`) and add it.

        Returns:
            The anchor as it will resolve (effective window).

        Raises:
            InvalidEndorsement: it does not verify; or EXPIRED (its effective window is over at
                ``now``); KID_CONFLICT (this anchor key is already endorsed for another SPIFFE
                ID); TOO_MANY (more than MAX_ENDORSEMENTS_PER_KID live endorsements of the key).
        """
        return self.add_verified(verify_endorsement(data, bundles, now=now), now=now)

    def add_verified(self, verified: VerifiedEndorsement, *, now: int) -> ResolvedAnchor:
        """Add an endorsement the caller has just verified; same rules as :meth:`add`."""
        anchor = verified.resolved()
        if anchor.not_after <= now:
            raise InvalidEndorsement(
                EndorsementProblem.EXPIRED,
                f"anchor {anchor.kid.hex()} effective window ended at {anchor.not_after}",
            )
        # Expired entries are dropped here so that re-endorsing a key every SVID rotation does not
        # grow its list without bound.
        entries = [e for e in self._by_kid.get(anchor.kid, []) if e.not_after > now]
        if entries and entries[0].spiffe_id != anchor.spiffe_id:
            raise InvalidEndorsement(
                EndorsementProblem.KID_CONFLICT,
                f"anchor {anchor.kid.hex()} is already endorsed for {entries[0].spiffe_id}, "
                f"not {anchor.spiffe_id}",
            )
        if anchor in entries:
            return anchor
        if len(entries) >= MAX_ENDORSEMENTS_PER_KID:
            raise InvalidEndorsement(
                EndorsementProblem.TOO_MANY,
                f"anchor {anchor.kid.hex()} has {len(entries)} live endorsements already",
            )
        entries.append(anchor)
        entries.sort(key=lambda e: (e.not_before, e.not_after), reverse=True)
        self._by_kid[anchor.kid] = entries
        return anchor

    def set_revocations(self, revocations: Revocations) -> None:
        self._revocations = revocations

    def build(self) -> AnchorRegistry:
        """The frozen snapshot (later changes to the builder do not affect it)."""
        table = {kid: tuple(entries) for kid, entries in self._by_kid.items() if entries}
        return AnchorRegistry(MappingProxyType(table), self._revocations)


@dataclass(frozen=True, slots=True)
class RejectedFile:
    """An endorsement file the loader skipped, and why."""

    path: Path
    error: InvalidEndorsement | RegistryLoadError


@dataclass(frozen=True, slots=True)
class LoadReport:
    """The registry built from a directory, and the files that were refused."""

    registry: AnchorRegistry
    rejected: tuple[RejectedFile, ...]


def load_registry(
    directory: Path | str,
    bundles: BundleSet,
    *,
    now: int,
    revocation_file: Path | str | None = None,
) -> LoadReport:
    """Build a registry from every ``*.endorsement`` file in ``directory`` (not recursive).

    Hidden files (a leading ``.``, e.g. temporary files of an atomic write) are ignored. A file
    that fails to verify, or has expired, is reported in :attr:`LoadReport.rejected` and skipped,
    so one stale file does not take every anchor down; the revocation list, in contrast, must
    parse, since ignoring a broken one would silently un-revoke.

    Args:
        directory: the endorsement directory.
        bundles: trust bundles to verify the SVID chains against.
        now: unix seconds.
        revocation_file: an optional TOML revocation list (see :func:`parse_revocations`).

    Returns:
        The registry snapshot and the rejected files, in file name order.

    Raises:
        RegistryLoadError: the directory or the revocation list cannot be read or parsed.
    """
    root = Path(directory)
    try:
        paths = sorted(
            p
            for p in root.iterdir()
            if p.suffix == ENDORSEMENT_SUFFIX and not p.name.startswith(".") and p.is_file()
        )
    except OSError as exc:
        raise RegistryLoadError(f"{root}: cannot list ({exc.strerror or exc})") from None
    if len(paths) > MAX_ENDORSEMENT_FILES:
        raise RegistryLoadError(f"{root}: more than {MAX_ENDORSEMENT_FILES} endorsement files")
    builder = RegistryBuilder()
    if revocation_file is not None:
        builder.set_revocations(load_revocations(revocation_file))
    rejected: list[RejectedFile] = []
    for path in paths:
        try:
            builder.add(_read_bounded(path, MAX_ENDORSEMENT_BYTES), bundles, now=now)
        except (InvalidEndorsement, RegistryLoadError) as exc:
            rejected.append(RejectedFile(path, exc))
    return LoadReport(builder.build(), tuple(rejected))


def load_revocations(path: Path | str) -> Revocations:
    """Read a TOML revocation list; see :func:`parse_revocations`.

    Raises:
        RegistryLoadError: unreadable, not TOML, or a bad entry (the message names file and key).
    """
    source = str(path)
    data = _read_bounded(Path(path), MAX_REVOCATION_FILE_BYTES)
    try:
        doc = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise RegistryLoadError(f"{source}: not valid TOML ({exc})") from None
    return parse_revocations(doc, source=source)


def parse_revocations(doc: Mapping[str, object], *, source: str = "<revocations>") -> Revocations:
    """Build :class:`Revocations` from a TOML document::

        kids = ["<32 lowercase hex digits>", ...]        # anchor key ids (sluice anchor show)
        spiffe_ids = ["spiffe://example.org/w", ...]     # every anchor of these workloads

    Both keys are optional; any other key is an error.

    Raises:
        RegistryLoadError: naming ``source`` and the key path, e.g. ``kids[2]``.
    """
    unknown = sorted(set(doc) - {"kids", "spiffe_ids"})
    if unknown:
        raise RegistryLoadError(
            f"{source}: unknown key {unknown[0]!r} (expected 'kids' and/or 'spiffe_ids')"
        )
    kids = set()
    for i, text in enumerate(_strings(doc, "kids", source)):
        if _KID_HEX.fullmatch(text) is None:
            raise RegistryLoadError(
                f"{source}: kids[{i}]: expected {2 * KEY_ID_BYTES} lowercase hex digits, "
                f"found {text!r}"
            )
        kids.add(bytes.fromhex(text))
    ids = set()
    for i, text in enumerate(_strings(doc, "spiffe_ids", source)):
        try:
            ids.add(parse_spiffe_id(text))
        except InvalidSpiffeID as exc:
            raise RegistryLoadError(f"{source}: spiffe_ids[{i}]: {exc}") from None
    return Revocations(frozenset(kids), frozenset(ids))


def _strings(doc: Mapping[str, object], key: str, source: str) -> list[str]:
    value = doc.get(key, [])
    if not isinstance(value, list):
        raise RegistryLoadError(f"{source}: {key}: expected an array of strings")
    if len(value) > MAX_REVOCATIONS:
        raise RegistryLoadError(f"{source}: {key}: more than {MAX_REVOCATIONS} entries")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise RegistryLoadError(f"{source}: {key}[{i}]: expected a string")
    return value


def _read_bounded(path: Path, limit: int) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise RegistryLoadError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if len(data) > limit:
        raise RegistryLoadError(f"{path}: larger than {limit} bytes")
    return data
