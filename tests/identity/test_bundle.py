"""SPIFFE bundle (JWKS) and PEM bundle parsing, serialisation and the BundleSet."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from identity.bundle import (
    BundleSet,
    InvalidBundle,
    TrustBundle,
    UnknownTrustDomain,
    load_bundle_file,
    parse_pem_bundle,
    parse_spiffe_bundle,
    serialize_spiffe_bundle,
)
from identity.ca import SvidAuthority
from identity.pem import PublicKey
from identity.spiffe_id import TrustDomain

TD = TrustDomain("example.org")


def test_every_shared_bundle_case(shared_vectors: Path) -> None:
    cases: list[dict[str, Any]] = json.loads((shared_vectors / "spiffe-bundle.json").read_text())[
        "cases"
    ]
    assert len(cases) == 9
    for case in cases:
        data = (shared_vectors / "spiffe-bundle" / case["file"]).read_bytes()
        if case["valid"]:
            bundle = parse_spiffe_bundle(data, TD, source=case["file"])
            assert parse_spiffe_bundle(serialize_spiffe_bundle(bundle), TD) == bundle
        else:
            with pytest.raises(InvalidBundle, match=case["file"]):
                parse_spiffe_bundle(data, TD, source=case["file"])


def test_shared_bundle_contents(shared_vectors: Path) -> None:
    folder = shared_vectors / "spiffe-bundle"
    b2 = parse_spiffe_bundle((folder / "spiffebundle_valid_2.json").read_bytes(), TD)
    assert (len(b2.x509_authorities), len(b2.jwt_authorities)) == (1, 6)
    assert (b2.sequence, b2.refresh_hint) == (1, 60)
    wit = parse_spiffe_bundle((folder / "spiffebundle_valid_with_wit.json").read_bytes(), TD)
    assert len(wit.x509_authorities) == 1  # the unknown-use key is ignored
    jwks = parse_spiffe_bundle((folder / "jwks_valid_2.json").read_bytes(), TD)
    assert set(jwks.jwt_authorities) == {
        "C6vs25welZOx6WksNYfbMfiw9l96pMnD",
        "gHTCunJbefYtnZnTctd84xeRWyMrEsWD",
    }
    assert all(isinstance(k, ec.EllipticCurvePublicKey) for k in jwks.jwt_authorities.values())


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (b"[]", "must be a JSON object"),
        (b'{"keys": {}}', "'keys' is missing or not an array"),
        (b'{"keys": [], "keys": []}', "duplicate JSON member 'keys'"),
        (b'{"keys": [], "spiffe_sequence": -1}', "'spiffe_sequence' must be an integer"),
        (b'{"keys": [], "spiffe_refresh_hint": true}', "'spiffe_refresh_hint' must be an integer"),
        (b'{"keys": [], "spiffe_sequence": NaN}', "NaN is not allowed"),
        (b'{"keys": [1]}', r"keys\[0\]: a key entry must be a JSON object"),
        (b'{"keys": [{"use": "x509-svid", "x5c": []}]}', r"keys\[0\]: .*non-empty 'x5c'"),
        (b'{"keys": [{"use": "x509-svid", "x5c": ["!!"]}]}', "not standard base64"),
        (b'{"keys": [{"kid": "a", "kty": "EC", "crv": "P-192"}]}', "unsupported EC curve"),
        (b'{"keys": [{"kid": "a", "kty": "oct"}]}', "unsupported key type"),
        (b'{"keys": [{"kid": "a", "kty": "OKP", "crv": "Ed25519", "x": "AA=="}]}', "base64url"),
        (b"\xff", "not UTF-8 at byte offset 0"),
        (b'{"keys": [', "not valid JSON"),
        (b"[" * 100000, "nesting is too deep|not valid JSON"),
    ],
)
def test_bad_documents_are_named(document: bytes, message: str) -> None:
    with pytest.raises(InvalidBundle, match=message):
        parse_spiffe_bundle(document, TD, source="doc.json")


def test_jwk_must_match_the_x5c_certificate() -> None:
    root = SvidAuthority.create_root(TD)
    other = SvidAuthority.create_root(TD)
    good = json.loads(serialize_spiffe_bundle(TrustBundle(TD, root.bundle)))
    bad = json.loads(serialize_spiffe_bundle(TrustBundle(TD, other.bundle)))
    good["keys"][0]["x"], good["keys"][0]["y"] = bad["keys"][0]["x"], bad["keys"][0]["y"]
    with pytest.raises(InvalidBundle, match="do not match"):
        parse_spiffe_bundle(json.dumps(good).encode(), TD)


def test_round_trip_every_key_type() -> None:
    roots = tuple(
        SvidAuthority.create_root(TD, key_type=k).certificate for k in ("ec", "rsa", "ed25519")
    )
    jwt: dict[str, PublicKey] = {
        "ec384": ec.generate_private_key(ec.SECP384R1()).public_key(),
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key(),
        "ed": ed25519.Ed25519PrivateKey.generate().public_key(),
    }
    bundle = TrustBundle(TD, roots, jwt, sequence=7, refresh_hint=300)
    data = serialize_spiffe_bundle(bundle)
    again = parse_spiffe_bundle(data, TD)
    assert again == bundle
    assert serialize_spiffe_bundle(again) == data
    with pytest.raises(TypeError):
        again.jwt_authorities["x"] = jwt["ed"]  # type: ignore[index]


def test_pem_bundle_and_file_detection(tmp_path: Path) -> None:
    root = SvidAuthority.create_root(TD)
    pem = root.bundle_pem()
    assert parse_pem_bundle(pem, TD).x509_authorities == root.bundle
    (tmp_path / "b.pem").write_bytes(pem)
    (tmp_path / "b.json").write_bytes(
        b"\n  " + serialize_spiffe_bundle(TrustBundle(TD, root.bundle))
    )
    assert load_bundle_file(tmp_path / "b.pem", TD).x509_authorities == root.bundle
    assert load_bundle_file(tmp_path / "b.json", TD).x509_authorities == root.bundle
    with pytest.raises(InvalidBundle, match=r"b\.txt: cannot read"):
        load_bundle_file(tmp_path / "b.txt", TD)
    (tmp_path / "empty.pem").write_bytes(b"hello\n")
    with pytest.raises(InvalidBundle, match=r"empty\.pem: no '-----BEGIN CERTIFICATE-----'"):
        load_bundle_file(tmp_path / "empty.pem", TD)


def test_bundle_set() -> None:
    a, b = TrustDomain("a.test"), TrustDomain("b.test")
    ba = TrustBundle(a, SvidAuthority.create_root(a).bundle)
    bb = TrustBundle(b, SvidAuthority.create_root(b).bundle)
    one = BundleSet([ba])
    two = one.with_bundle(bb)
    assert (len(one), len(two)) == (1, 2)
    assert two.for_trust_domain(b) is bb
    assert two[a] is ba
    with pytest.raises(UnknownTrustDomain, match=r"no trust bundle for trust domain 'b.test'"):
        one.for_trust_domain(b)
    with pytest.raises(KeyError):
        _ = one[b]
    with pytest.raises(ValueError, match="two bundles"):
        BundleSet([ba, ba])
    replaced = two.with_bundle(TrustBundle(a, bb.x509_authorities))
    assert replaced[a].x509_authorities == bb.x509_authorities
    assert two[a] is ba  # the original set is unchanged


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_only_raise_invalid_bundle(data: bytes) -> None:
    with contextlib.suppress(InvalidBundle):
        parse_spiffe_bundle(data, TD)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)
key_entries = st.dictionaries(
    st.sampled_from(["use", "kid", "kty", "crv", "x", "y", "n", "e", "x5c"]),
    st.sampled_from(["x509-svid", "jwt-svid", "EC", "RSA", "OKP", "P-256", "Ed25519", "AQAB", ""])
    | json_values,
)


@settings(max_examples=300, deadline=None)
@given(st.lists(key_entries, max_size=4), json_values)
def test_structured_garbage_only_raises_invalid_bundle(keys: list[Any], extra: Any) -> None:
    document = json.dumps({"keys": keys, "spiffe_sequence": extra}).encode()
    with contextlib.suppress(InvalidBundle):
        parse_spiffe_bundle(document, TD)
