"""The anchor registry: rotation, re-endorsement, revocation, expiry, loading from files.

Time is always a parameter: certificates are issued at fixed instants and ``resolve`` is asked
about chosen seconds, including the exact window edges.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from identity.anchor_contract import AnchorLookupError, AnchorProblem, AnchorResolver
from identity.anchors import AnchorKeyPair
from identity.bundle import BundleSet, TrustBundle
from identity.ca import SvidAuthority
from identity.endorsement import EndorsementProblem, InvalidEndorsement, endorse
from identity.registry import (
    MAX_ENDORSEMENTS_PER_KID,
    AnchorRegistry,
    RegistryBuilder,
    RegistryLoadError,
    Revocations,
    load_registry,
    load_revocations,
)
from identity.spiffe_id import SpiffeID, parse_spiffe_id, parse_trust_domain
from identity.x509svid import X509SVID

T0 = 1_700_000_000
HOUR = 3600
LEDGER = parse_spiffe_id("spiffe://example.org/ledger")
REPORTS = parse_spiffe_id("spiffe://example.org/reports")


def at(unix: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(unix, dt.UTC)


@pytest.fixture(scope="module")
def ca() -> SvidAuthority:
    return SvidAuthority.create_root(parse_trust_domain("example.org"), now=at(T0 - HOUR))


@pytest.fixture(scope="module")
def bundles(ca: SvidAuthority) -> BundleSet:
    return BundleSet([TrustBundle(ca.trust_domain, ca.bundle)])


def svid(ca: SvidAuthority, spiffe_id: SpiffeID = LEDGER, issued: int = T0) -> X509SVID:
    # Valid [issued - 60, issued + 1h) (SvidAuthority backdates one minute).
    got = ca.issue(spiffe_id, now=at(issued), lifetime=dt.timedelta(hours=1))
    return X509SVID(got.spiffe_id, got.chain, got.private_key)


def endorsement(
    ca: SvidAuthority,
    anchor: bytes,
    start: int,
    end: int,
    *,
    spiffe_id: SpiffeID = LEDGER,
    issued: int = T0,
    tier: int = 1,
) -> bytes:
    return endorse(anchor, svid(ca, spiffe_id, issued), ["payments/*"], tier, start, end)


def problem(registry: AnchorResolver, kid: bytes, now: int) -> AnchorProblem:
    with pytest.raises(AnchorLookupError) as info:
        registry.resolve(kid, now)
    return info.value.problem


def test_resolve_within_the_window_and_at_its_edges(ca: SvidAuthority, bundles: BundleSet) -> None:
    pair = AnchorKeyPair.generate()
    registry = AnchorRegistry().add(
        endorsement(ca, pair.public_key, T0 + 60, T0 + 600), bundles, now=T0
    )
    resolver: AnchorResolver = registry  # the contract the envelope verifier uses
    assert problem(resolver, pair.kid, T0 + 59) is AnchorProblem.NOT_YET_VALID
    anchor = resolver.resolve(pair.kid, T0 + 60)
    assert (anchor.public_key, anchor.spiffe_id, anchor.max_tier) == (pair.public_key, LEDGER, 1)
    assert resolver.resolve(pair.kid, T0 + 599) == anchor
    assert problem(resolver, pair.kid, T0 + 600) is AnchorProblem.EXPIRED  # not_after exclusive
    assert problem(resolver, AnchorKeyPair.generate().kid, T0) is AnchorProblem.UNKNOWN
    assert len(registry) == 1


def test_anchor_does_not_outlive_its_svid(ca: SvidAuthority, bundles: BundleSet) -> None:
    pair = AnchorKeyPair.generate()
    registry = AnchorRegistry().add(
        endorsement(ca, pair.public_key, T0, T0 + 24 * HOUR), bundles, now=T0
    )
    assert registry.resolve(pair.kid, T0 + HOUR - 1).not_after == T0 + HOUR
    assert problem(registry, pair.kid, T0 + HOUR) is AnchorProblem.EXPIRED


def test_rotation_with_overlapping_windows(ca: SvidAuthority, bundles: BundleSet) -> None:
    old, new = AnchorKeyPair.generate(), AnchorKeyPair.generate()
    builder = RegistryBuilder()
    builder.add(endorsement(ca, old.public_key, T0, T0 + 1800), bundles, now=T0)
    builder.add(endorsement(ca, new.public_key, T0 + 1200, T0 + 3000), bundles, now=T0)
    registry = builder.build()
    assert registry.resolve(old.kid, T0 + 100).kid == old.kid
    assert problem(registry, new.kid, T0 + 100) is AnchorProblem.NOT_YET_VALID
    # Overlap: both anchors of the same SPIFFE ID are usable.
    assert registry.resolve(old.kid, T0 + 1500).spiffe_id == LEDGER
    assert registry.resolve(new.kid, T0 + 1500).spiffe_id == LEDGER
    # After the old one ends, only the new one resolves.
    assert problem(registry, old.kid, T0 + 1800) is AnchorProblem.EXPIRED
    assert registry.resolve(new.kid, T0 + 2000).kid == new.kid
    assert {a.kid for a in registry.anchors_of(LEDGER)} == {old.kid, new.kid}


def test_re_endorsement_across_svid_rotation(ca: SvidAuthority, bundles: BundleSet) -> None:
    # The same anchor key, endorsed again by the next SVID (issued 50 minutes later).
    pair = AnchorKeyPair.generate()
    first = endorsement(ca, pair.public_key, T0, T0 + 86400, issued=T0, tier=1)
    second = endorsement(ca, pair.public_key, T0 + 3000, T0 + 86400, issued=T0 + 3000, tier=2)
    registry = AnchorRegistry().add(first, bundles, now=T0 + 3100)
    registry = registry.add(second, bundles, now=T0 + 3100)
    assert len(registry) == 1 and len(registry.endorsements(pair.kid)) == 2
    assert registry.resolve(pair.kid, T0 + 100).max_tier == 1  # only the first covers it
    assert registry.resolve(pair.kid, T0 + 3200).max_tier == 2  # the latest start wins
    assert registry.resolve(pair.kid, T0 + 6500).not_after == T0 + 3000 + HOUR
    assert problem(registry, pair.kid, T0 + 3000 + HOUR) is AnchorProblem.EXPIRED
    # Adding the same endorsement again changes nothing.
    assert registry.add(second, bundles, now=T0 + 3100).endorsements(pair.kid) == (
        registry.endorsements(pair.kid)
    )


def test_one_key_cannot_speak_for_two_ids(ca: SvidAuthority, bundles: BundleSet) -> None:
    pair = AnchorKeyPair.generate()
    registry = AnchorRegistry().add(endorsement(ca, pair.public_key, T0, T0 + 600), bundles, now=T0)
    with pytest.raises(InvalidEndorsement) as info:
        registry.add(
            endorsement(ca, pair.public_key, T0, T0 + 600, spiffe_id=REPORTS), bundles, now=T0
        )
    assert info.value.code is EndorsementProblem.KID_CONFLICT


def test_expired_endorsements_are_not_added(ca: SvidAuthority, bundles: BundleSet) -> None:
    pair = AnchorKeyPair.generate()
    with pytest.raises(InvalidEndorsement) as info:
        AnchorRegistry().add(
            endorsement(ca, pair.public_key, T0 - 30, T0 + 100), bundles, now=T0 + 100
        )
    assert info.value.code is EndorsementProblem.EXPIRED


def test_live_endorsements_per_kid_are_bounded(ca: SvidAuthority, bundles: BundleSet) -> None:
    pair = AnchorKeyPair.generate()
    leaf = svid(ca)
    builder = RegistryBuilder()
    for i in range(MAX_ENDORSEMENTS_PER_KID):
        builder.add(endorse(pair.public_key, leaf, ["a"], 0, T0 + i, T0 + 600), bundles, now=T0)
    with pytest.raises(InvalidEndorsement) as info:
        builder.add(endorse(pair.public_key, leaf, ["a"], 0, T0 + 99, T0 + 600), bundles, now=T0)
    assert info.value.code is EndorsementProblem.TOO_MANY
    # Expired ones are dropped when a new one arrives, so steady re-endorsement never hits it.
    builder.add(endorse(pair.public_key, leaf, ["a"], 0, T0 + 700, T0 + 900), bundles, now=T0 + 650)
    assert len(builder.build().endorsements(pair.kid)) == 1


def test_revocation_by_kid_and_by_spiffe_id(ca: SvidAuthority, bundles: BundleSet) -> None:
    a, b, c = (AnchorKeyPair.generate() for _ in range(3))
    builder = RegistryBuilder()
    builder.add(endorsement(ca, a.public_key, T0, T0 + 600), bundles, now=T0)
    builder.add(endorsement(ca, b.public_key, T0, T0 + 600), bundles, now=T0)
    builder.add(endorsement(ca, c.public_key, T0, T0 + 600, spiffe_id=REPORTS), bundles, now=T0)
    registry = builder.build()

    by_kid = registry.revoke(kids=[a.kid])
    assert problem(by_kid, a.kid, T0 + 1) is AnchorProblem.REVOKED
    assert by_kid.resolve(b.kid, T0 + 1).kid == b.kid

    by_id = registry.revoke(spiffe_ids=[LEDGER])
    assert problem(by_id, a.kid, T0 + 1) is AnchorProblem.REVOKED
    assert problem(by_id, b.kid, T0 + 1) is AnchorProblem.REVOKED
    assert by_id.resolve(c.kid, T0 + 1).spiffe_id == REPORTS
    # Revocation wins over the window: an expired, revoked anchor reports REVOKED.
    assert problem(by_id, a.kid, T0 + 9999) is AnchorProblem.REVOKED

    # Snapshots are immutable: the original still resolves everything.
    assert registry.resolve(a.kid, T0 + 1).kid == a.kid
    assert registry.with_revocations(Revocations()).resolve(a.kid, T0 + 1).kid == a.kid


def _write(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def test_load_from_directory(ca: SvidAuthority, bundles: BundleSet, tmp_path: Path) -> None:
    good, revoked, stale = (AnchorKeyPair.generate() for _ in range(3))
    _write(tmp_path, "good.endorsement", endorsement(ca, good.public_key, T0, T0 + 600))
    _write(tmp_path, "revoked.endorsement", endorsement(ca, revoked.public_key, T0, T0 + 600))
    _write(tmp_path, "stale.endorsement", endorsement(ca, stale.public_key, T0 - 50, T0 + 10))
    tampered = bytearray(endorsement(ca, AnchorKeyPair.generate().public_key, T0, T0 + 600))
    tampered[-1] ^= 1
    _write(tmp_path, "tampered.endorsement", bytes(tampered))
    _write(tmp_path, "garbage.endorsement", b"not cbor at all")
    _write(tmp_path, ".hidden.endorsement", b"ignored")
    _write(tmp_path, "notes.txt", b"ignored")
    (tmp_path / "sub.endorsement").mkdir()
    revocations = _write(
        tmp_path,
        "revoked.toml",
        f'# revoked after the incident\nkids = ["{revoked.kid.hex()}"]\nspiffe_ids = []\n'.encode(),
    )

    report = load_registry(tmp_path, bundles, now=T0 + 20, revocation_file=revocations)

    assert report.registry.resolve(good.kid, T0 + 20).kid == good.kid
    assert problem(report.registry, revoked.kid, T0 + 20) is AnchorProblem.REVOKED
    assert problem(report.registry, stale.kid, T0 + 20) is AnchorProblem.UNKNOWN
    rejected = {r.path.name: r.error for r in report.rejected}
    assert sorted(rejected) == ["garbage.endorsement", "stale.endorsement", "tampered.endorsement"]
    assert isinstance(rejected["stale.endorsement"], InvalidEndorsement)
    assert rejected["stale.endorsement"].code is EndorsementProblem.EXPIRED
    assert isinstance(rejected["tampered.endorsement"], InvalidEndorsement)
    assert rejected["tampered.endorsement"].code is EndorsementProblem.BAD_SIGNATURE
    assert isinstance(rejected["garbage.endorsement"], InvalidEndorsement)
    assert rejected["garbage.endorsement"].code is EndorsementProblem.MALFORMED


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('kids = ["00"]\n', r"kids\[0\]: expected 32 lowercase hex digits"),
        (f'kids = ["{"ab" * 16}", "{"AB" * 16}"]\n', r"kids\[1\]: expected 32"),
        ('spiffe_ids = ["spiffe://ok.org/a", "https://x"]\n', r"spiffe_ids\[1\]: "),
        ("kid = []\n", "unknown key 'kid'"),
        ("kids = 3\n", "kids: expected an array of strings"),
        ("kids = [1]\n", r"kids\[0\]: expected a string"),
        ("kids = [\n", "not valid TOML"),
    ],
)
def test_revocation_list_errors_name_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = _write(tmp_path, "revocations.toml", text.encode())
    with pytest.raises(RegistryLoadError, match=message) as info:
        load_revocations(path)
    assert str(info.value).startswith(str(path))


def test_revocation_list_parses(tmp_path: Path) -> None:
    kid = AnchorKeyPair.generate().kid
    path = _write(
        tmp_path,
        "r.toml",
        f'kids = ["{kid.hex()}"]\nspiffe_ids = ["spiffe://example.org/ledger"]\n'.encode(),
    )
    assert load_revocations(path) == Revocations(frozenset({kid}), frozenset({LEDGER}))
    assert load_revocations(_write(tmp_path, "empty.toml", b"")) == Revocations()


def test_unreadable_inputs(bundles: BundleSet, tmp_path: Path) -> None:
    with pytest.raises(RegistryLoadError, match="cannot list"):
        load_registry(tmp_path / "missing", bundles, now=T0)
    with pytest.raises(RegistryLoadError, match="cannot read"):
        load_registry(tmp_path, bundles, now=T0, revocation_file=tmp_path / "missing.toml")
