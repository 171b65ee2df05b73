"""Revisions, their canonical hash, the lineage chain and the immutable store."""

from __future__ import annotations

import hashlib
from dataclasses import replace

import cbor2
import pytest

from config.policy import LineageWindow, Rule
from gateway.errors import RemoteProtocolError
from gateway.policy import (
    ZERO_HASH,
    InvalidPolicy,
    LineageError,
    PolicyRevision,
    PolicyStore,
    verify_chain,
)
from gateway.policy.codec import decode_revision
from gateway.policy.model import revision_content
from gateway.reasons import Reason
from identity import parse_trust_domain
from tests.gateway.test_policy_helpers import NOW, Spec, chain, ids, origin_chain

RULE = Rule(
    "allow-ledger-from-payments",
    from_scopes=("payments/*",),
    from_ids=ids("spiffe://weave.prod.example/ns/payments/*"),
    from_domains=(parse_trust_domain("weave.prod.example"),),
    min_tier=1,
    transit_gateways=ids("spiffe://weave.prod.example/gateway/a"),
    transit_domains=(parse_trust_domain("cilium.prod.example"),),
    max_hops=3,
)


def _revision(**changes: object) -> PolicyRevision:
    base = PolicyRevision(
        scope="payments/ledger",
        number=1,
        previous=ZERO_HASH,
        issued_at=NOW,
        rules=(RULE,),
        lineage=(LineageWindow(("payments/*",), grace_revisions=1, grace_seconds=None),),
        workloads=ids("spiffe://cilium.prod.example/ns/payments/sa/ledger"),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


# -- hashing ---------------------------------------------------------------------------------


def test_hash_is_blake2b_over_canonical_cbor_of_the_content() -> None:
    revision = _revision()
    expected_bytes = cbor2.dumps(revision_content(revision), canonical=True)
    assert revision.content == expected_bytes
    assert (
        revision.digest
        == hashlib.blake2b(expected_bytes, digest_size=32, person=b"sluice-policy-v1").digest()
    )


def test_canonical_encoding_sorts_keys_bytewise() -> None:
    # RFC 8949 section 4.2.1: map keys in bytewise order of their encodings, checked here
    # independently of cbor2's canonical mode by walking the top-level map by hand.
    content = _revision().content
    decoded = cbor2.loads(content)
    encoded_keys = [cbor2.dumps(k) for k in decoded]
    assert encoded_keys == sorted(encoded_keys)
    assert content[0] == 0xA0 + len(decoded)  # a definite-length map of 9 entries


def test_hash_is_deterministic_and_covers_every_field() -> None:
    base = _revision()
    assert _revision().digest == base.digest
    variants = [
        _revision(issued_at=NOW + 1),
        _revision(rules=(replace(RULE, min_tier=2),)),
        _revision(rules=(replace(RULE, max_hops=None),)),
        _revision(rules=(replace(RULE, id="other"),)),
        _revision(lineage=()),
        _revision(workloads=()),
        _revision(scope="payments/ledger2"),
        _revision(number=2, previous=b"\x01" * 32),
    ]
    digests = {v.digest for v in variants}
    assert base.digest not in digests and len(digests) == len(variants)


def test_content_round_trips_through_the_strict_decoder() -> None:
    revision = _revision(revokes=(b"\x05" * 32,), number=3, previous=b"\x04" * 32)
    again = decode_revision(revision.content)
    assert again == revision and again.digest == revision.digest


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda m: m.update(extra=1), Reason.MALFORMED),
        (lambda m: m.pop("rules"), Reason.MALFORMED),
        (lambda m: m.update(v=2), Reason.UNSUPPORTED_VERSION),
        (lambda m: m.update(number=-1), Reason.MALFORMED),
        (lambda m: m.update(previous=b"short"), Reason.MALFORMED),
        (lambda m: m.update(scope="bad scope"), Reason.MALFORMED),
        (lambda m: m["rules"][0].update(min_tier="high"), Reason.MALFORMED),
        (lambda m: m["rules"][0].update(lineage="sometimes"), Reason.MALFORMED),
        (lambda m: m["rules"][0].update(from_ids=["spiffe://Bad/x"]), Reason.MALFORMED),
    ],
)
def test_decoder_rejects_bad_content(mutate: object, reason: Reason) -> None:
    content = revision_content(_revision())
    mutate(content)  # type: ignore[operator]
    with pytest.raises(RemoteProtocolError) as caught:
        decode_revision(cbor2.dumps(content, canonical=True))
    assert caught.value.reason is reason


def test_decoder_rejects_non_canonical_bytes() -> None:
    content = revision_content(_revision())
    with pytest.raises(RemoteProtocolError) as caught:
        decode_revision(cbor2.dumps(content))  # insertion order, not canonical order
    assert caught.value.reason is Reason.NON_CANONICAL
    with pytest.raises(RemoteProtocolError) as caught:
        decode_revision(b"\xff\x00")
    assert caught.value.reason is Reason.MALFORMED


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"previous": b"\x01" * 32}, "revision 1 must have previous"),
        ({"previous": b"x"}, "32-byte"),
        ({"number": 0}, "outside"),
        ({"scope": "payments//x"}, "scope"),
        ({"rules": (RULE, RULE)}, "duplicate rule id"),
        ({"rules": (Rule("nobody"),)}, "names no origin"),
        ({"rules": (Rule("tier", from_scopes=("*",), min_tier=300),)}, "min_tier"),
        ({"rules": (Rule("pat", from_scopes=("pay*",)),)}, "scope"),
        ({"revokes": (b"short",)}, "32-byte"),
    ],
)
def test_model_rejects_invalid_revisions(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidPolicy, match=message):
        _revision(**changes)


# -- lineage chain ---------------------------------------------------------------------------


def test_chain_verifies_and_store_answers_lookups() -> None:
    origin = origin_chain(3, revokes=(1,))
    verify_chain(origin)
    store = PolicyStore.build(reversed(origin))  # any order in, chain order out
    assert store.chain("payments/api") == origin
    assert store.current("payments/api") is origin[-1]
    assert store.revision(origin[1].digest) is origin[1]
    assert store.is_revoked(origin[0].digest) and not store.is_revoked(origin[1].digest)
    assert store.current("nope") is None and store.chain("nope") == ()
    assert store.scopes == ("payments/api",)


def test_tampered_revision_breaks_the_chain() -> None:
    origin = list(origin_chain(3))
    # Someone rewrites revision 2's rules but keeps its number and previous link.
    origin[1] = replace(origin[1], rules=(Rule("everyone", from_scopes=("*",)),))
    with pytest.raises(LineageError, match=r"revision 3: previous is .* revision 2 hashes to"):
        PolicyStore.build(origin)


def test_numbers_must_be_consecutive() -> None:
    origin = origin_chain(3)
    with pytest.raises(LineageError, match="numbers must be consecutive"):
        verify_chain([origin[0], origin[2]])
    with pytest.raises(LineageError, match="numbers must be consecutive"):
        PolicyStore.build([origin[0], origin[2]])


def test_two_different_revisions_with_one_number_are_a_fork() -> None:
    origin = origin_chain(2)
    fork = replace(origin[1], issued_at=origin[1].issued_at + 5)
    with pytest.raises(LineageError, match="two different revisions"):
        PolicyStore.build([*origin, fork])
    # The very same revision twice is merged, not a fork.
    assert PolicyStore.build([*origin, origin[1]]).chain("payments/api") == origin


def test_revision_may_not_revoke_itself_or_an_unknown_hash() -> None:
    origin = origin_chain(2)
    stray = replace(origin[1], revokes=(b"\x09" * 32,))
    with pytest.raises(LineageError, match="not an earlier revision"):
        verify_chain([origin[0], stray])


def test_time_may_not_run_backwards_along_the_chain() -> None:
    backwards = chain("s/a", [Spec(issued_at=NOW), Spec(issued_at=NOW - 1)])
    with pytest.raises(LineageError, match="issued before revision 1"):
        verify_chain(backwards)


def test_pruned_history_may_start_above_one() -> None:
    origin = origin_chain(4)
    store = PolicyStore.build(origin[2:])
    assert store.chain("payments/api") == origin[2:]
    assert store.lineage_fact(origin[0].digest) is None


def test_store_is_rebuilt_not_mutated() -> None:
    origin = origin_chain(2)
    store = PolicyStore.build(origin[:1])
    grown = store.with_revisions(origin[1:])
    assert store.current("payments/api") is origin[0]
    assert grown.current("payments/api") is origin[1]
    revoked = grown.with_revoked([origin[0].digest])
    assert revoked.is_revoked(origin[0].digest) and not grown.is_revoked(origin[0].digest)
    with pytest.raises(LineageError, match="32 bytes"):
        grown.with_revoked([b"short"])
    with pytest.raises(AttributeError):
        store.extra = 1  # type: ignore[attr-defined]
