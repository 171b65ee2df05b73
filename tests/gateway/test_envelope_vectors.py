"""Our own deterministic vectors: the files match regeneration, and each opens or fails as
recorded (tests/vectors/envelope, made by scripts/gen_envelope_vectors.py)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import nacl.public
import pytest

from gateway.envelope import open_envelope, unseal_payload
from gateway.errors import RemoteProtocolError
from gateway.reasons import Reason
from identity.anchor_contract import ResolvedAnchor
from identity.spiffe_id import parse_spiffe_id
from tests.conftest import OUR_VECTORS, REPO_ROOT
from tests.gateway.envelope_fixtures import TableResolver

VECTORS = OUR_VECTORS / "envelope"


def _load(name: str) -> dict[str, Any]:
    doc = json.loads((VECTORS / name).read_text())
    assert isinstance(doc, dict)
    return doc


def _resolver() -> TableResolver:
    # Built from the JSON alone, so the vectors stand without the test fixtures.
    resolver = TableResolver()
    for a in _load("anchors.json")["anchors"]:
        resolver.add(
            ResolvedAnchor(
                kid=bytes.fromhex(a["kid"]),
                public_key=bytes.fromhex(a["public_key"]),
                spiffe_id=parse_spiffe_id(a["spiffe_id"]),
                scopes=tuple(a["scopes"]),
                max_tier=a["max_tier"],
                not_before=a["not_before"],
                not_after=a["not_after"],
            )
        )
    return resolver


def test_files_match_regeneration() -> None:
    spec = importlib.util.spec_from_file_location(
        "gen_envelope_vectors", REPO_ROOT / "scripts" / "gen_envelope_vectors.py"
    )
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    docs = gen.build(_load("valid.json"))
    for name, doc in docs.items():
        assert (VECTORS / name).read_text() == gen._dump(doc), name


@pytest.mark.parametrize("case", _load("valid.json")["cases"], ids=lambda c: c["name"])
def test_valid_vectors_open(case: dict[str, Any]) -> None:
    env = open_envelope(bytes.fromhex(case["envelope"]), resolver=_resolver(), now=case["now"])
    assert str(env.claims.issuer) == case["issuer"]
    assert env.hops == case["hops"]
    assert env.claims.sealed is case["sealed"]
    if case["sealed"]:
        box = nacl.public.PrivateKey(
            bytes.fromhex(_load("anchors.json")["destination_box_private_key"])
        )
        assert unseal_payload(env, box) == bytes.fromhex(case["plaintext"])
    else:
        assert env.payload == bytes.fromhex(case["plaintext"])


@pytest.mark.parametrize("case", _load("invalid.json")["cases"], ids=lambda c: c["name"])
def test_invalid_vectors_fail_as_recorded(case: dict[str, Any]) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        open_envelope(bytes.fromhex(case["envelope"]), resolver=_resolver(), now=case["now"])
    assert info.value.reason is Reason(case["reason"])


def test_every_invalid_vector_has_a_distinct_name() -> None:
    names = [c["name"] for c in _load("invalid.json")["cases"]]
    assert len(names) == len(set(names)) >= 10
    assert Path(VECTORS / "anchors.json").is_file()
