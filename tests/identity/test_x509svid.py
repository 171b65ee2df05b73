"""X.509-SVID loading (shared go-spiffe vectors), PEM errors, and chain validation."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from identity.bundle import BundleSet, TrustBundle
from identity.ca import SvidAuthority, _hash_for, new_private_key
from identity.pem import PemError, private_key_pem, read_certificates, read_private_key
from identity.pem import certificates_pem as certs_pem
from identity.spiffe_id import TrustDomain, parse_spiffe_id
from identity.x509svid import (
    ChainVerificationError,
    InvalidSVID,
    load_x509svid,
    load_x509svid_files,
    verify_chain,
)

NOW = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
A = TrustDomain("a.test")
B = TrustDomain("b.test")
KEY_TYPES = ["ec", "rsa", "ed25519"]


def _cases(shared_vectors: Path) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = json.loads((shared_vectors / "spiffe-x509svid.json").read_text())[
        "cases"
    ]
    return cases


def test_every_shared_x509svid_case(shared_vectors: Path) -> None:
    folder = shared_vectors / "spiffe-x509svid"
    cases = _cases(shared_vectors)
    assert len(cases) == 18
    for case in cases:
        if case["valid"]:
            svid = load_x509svid_files(folder / case["certs"], folder / case["key"])
            assert str(svid.spiffe_id) == "spiffe://example.org/workload-1", case["name"]
            assert svid.leaf is svid.chain[0]
            reloaded = load_x509svid(svid.chain_pem(), svid.key_pem())
            assert (reloaded.spiffe_id, reloaded.chain) == (svid.spiffe_id, svid.chain)
            assert reloaded.key_pem() == svid.key_pem()
        else:
            with pytest.raises(InvalidSVID):
                load_x509svid_files(folder / case["certs"], folder / case["key"])


@pytest.mark.parametrize(
    ("certs", "expected"),
    [
        ("wrong-leaf-empty-id.pem", "no URI SAN"),
        ("wrong-leaf-ca-true.pem", "is a CA"),
        ("wrong-leaf-no-digital-signature.pem", "digitalSignature"),
        ("wrong-leaf-cert-sign.pem", "keyCertSign"),
        ("wrong-leaf-crl-sign.pem", "cRLSign"),
        ("wrong-intermediate-no-ca.pem", "signing certificate 1 is not a CA"),
        ("wrong-intermediate-no-key-cert-sign.pem", "signing certificate 1 lacks keyUsage"),
    ],
)
def test_rule_violations_say_which_rule(shared_vectors: Path, certs: str, expected: str) -> None:
    folder = shared_vectors / "spiffe-x509svid"
    with pytest.raises(InvalidSVID, match=expected) as info:
        load_x509svid_files(folder / certs, folder / "key-pkcs8-rsa.pem")
    assert certs in str(info.value)


def test_key_mismatch_is_named(shared_vectors: Path) -> None:
    folder = shared_vectors / "spiffe-x509svid"
    with pytest.raises(InvalidSVID, match="private key does not match"):
        load_x509svid_files(folder / "good-leaf-and-intermediate.pem", folder / "key-pkcs8-rsa.pem")


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidSVID, match="cannot read"):
        load_x509svid_files(tmp_path / "nope.pem", tmp_path / "nope.pem")


# --- PEM errors -------------------------------------------------------------------------------


def test_pem_error_names_source_line_and_label() -> None:
    data = b"junk\n-----BEGIN CERTIFICATE-----\nQUJD*\n-----END CERTIFICATE-----\n"
    with pytest.raises(PemError, match=r"^chain\.pem: line 2: 'CERTIFICATE' block has non-base64"):
        read_certificates(data, source="chain.pem")


def test_pem_unterminated_block() -> None:
    with pytest.raises(PemError, match=r"x: line 1: 'CERTIFICATE' block has no matching"):
        read_certificates(b"-----BEGIN CERTIFICATE-----\nAAAA\n", source="x")


def test_pem_mismatched_end_label() -> None:
    data = b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END PRIVATE KEY-----\n"
    with pytest.raises(PemError, match="no matching"):
        read_certificates(data, source="x")


def test_pem_legacy_key_format_is_explained() -> None:
    data = b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"
    with pytest.raises(PemError, match=r"line 1: 'EC PRIVATE KEY' is a SEC 1 key.*PKCS#8"):
        read_private_key(data, source="k")


def test_pem_two_keys_rejected() -> None:
    pem = private_key_pem(new_private_key("ec"))
    with pytest.raises(
        PemError, match=r"line 6: a second 'PRIVATE KEY' block \(the first is at line 1\)"
    ):
        read_private_key(pem + pem, source="k")


def test_pem_size_bound() -> None:
    with pytest.raises(PemError, match="limit"):
        read_certificates(b" " * (300 * 1024), source="big")


def test_combined_file_in_both_orders() -> None:
    root = SvidAuthority.create_root(A)
    issued = root.issue(parse_spiffe_id("spiffe://a.test/w"))
    for data in (issued.chain_pem() + issued.key_pem(), issued.key_pem() + issued.chain_pem()):
        svid = load_x509svid(data, data, source="both.pem")
        assert svid.spiffe_id == issued.spiffe_id
        assert svid.chain == issued.chain


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_only_raise_pem_error(data: bytes) -> None:
    for reader in (read_certificates, read_private_key):
        with contextlib.suppress(PemError):
            reader(data, source="fuzz")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_arbitrary_block_bodies_only_raise_pem_error(body: bytes) -> None:
    for label in (b"CERTIFICATE", b"PRIVATE KEY"):
        for payload in (body, base64.b64encode(body)):
            data = (
                b"-----BEGIN " + label + b"-----\n" + payload + b"\n-----END " + label + b"-----\n"
            )
            for reader in (read_certificates, read_private_key):
                with contextlib.suppress(PemError):
                    reader(data, source="fuzz")


# --- chain validation -------------------------------------------------------------------------


def _bundles(*authorities: SvidAuthority) -> BundleSet:
    return BundleSet(TrustBundle(a.trust_domain, a.bundle) for a in authorities)


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_chain_with_intermediates_validates(key_type: Any) -> None:
    root = SvidAuthority.create_root(A, key_type=key_type, now=NOW)
    inter = root.intermediate(key_type=key_type, now=NOW).intermediate(key_type=key_type, now=NOW)
    issued = inter.issue(parse_spiffe_id("spiffe://a.test/gw"), key_type=key_type, now=NOW)
    assert len(issued.chain) == 3
    assert verify_chain(issued.chain, _bundles(root), now=NOW) == issued.spiffe_id
    # The root appended to the chain is tolerated.
    assert verify_chain((*issued.chain, root.certificate), _bundles(root), now=NOW)


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_other_domains_ca_cannot_vouch_for_an_id(key_type: Any) -> None:
    """A's CA issues an ID in B: with both bundles known it must still fail (B's bundle only)."""
    root_a = SvidAuthority.create_root(A, key_type=key_type, now=NOW)
    root_b = SvidAuthority.create_root(B, key_type=key_type, now=NOW)
    forged = root_a.issue(parse_spiffe_id("spiffe://b.test/gw"), key_type=key_type, now=NOW)
    with pytest.raises(ChainVerificationError, match=r"trust domain 'b.test'"):
        verify_chain(forged.chain, _bundles(root_a, root_b), now=NOW)
    # And with only A's bundle known, there is no bundle for the ID's domain at all.
    with pytest.raises(ChainVerificationError, match=r"no trust bundle for trust domain 'b.test'"):
        verify_chain(forged.chain, _bundles(root_a), now=NOW)


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_time_window(key_type: Any) -> None:
    root = SvidAuthority.create_root(A, key_type=key_type, now=NOW)
    issued = root.issue(
        parse_spiffe_id("spiffe://a.test/w"),
        key_type=key_type,
        now=NOW,
        lifetime=dt.timedelta(hours=1),
    )
    bundles = _bundles(root)
    assert verify_chain(issued.chain, bundles, now=NOW + dt.timedelta(minutes=59))
    with pytest.raises(ChainVerificationError):
        verify_chain(issued.chain, bundles, now=NOW + dt.timedelta(hours=2))
    with pytest.raises(ChainVerificationError):
        verify_chain(issued.chain, bundles, now=NOW - dt.timedelta(hours=1))


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_untrusted_root_and_missing_intermediate(key_type: Any) -> None:
    root = SvidAuthority.create_root(A, key_type=key_type, now=NOW)
    impostor = SvidAuthority.create_root(A, key_type=key_type, now=NOW)  # same name, other key
    issued = impostor.issue(parse_spiffe_id("spiffe://a.test/w"), key_type=key_type, now=NOW)
    with pytest.raises(ChainVerificationError):
        verify_chain(issued.chain, _bundles(root), now=NOW)
    inter = root.intermediate(key_type=key_type, now=NOW)
    via_inter = inter.issue(parse_spiffe_id("spiffe://a.test/w"), key_type=key_type, now=NOW)
    with pytest.raises(ChainVerificationError):
        verify_chain(via_inter.chain[:1], _bundles(root), now=NOW)


def _raw_leaf(root: SvidAuthority, *, ca: bool, uris: list[str]) -> x509.Certificate:
    key = new_private_key("ec")
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "leaf")]))
        .issuer_name(root.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=1))
        .not_valid_after(NOW + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, ca, False, False, False), critical=True
        )
    )
    if uris:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(u) for u in uris]),
            critical=False,
        )
    return builder.sign(root.private_key, _hash_for(root.private_key))


@pytest.mark.parametrize(
    ("ca", "uris", "message"),
    [
        (True, ["spiffe://a.test/w"], "is a CA"),
        (False, [], "no URI SAN"),
        (False, ["spiffe://a.test/w", "spiffe://a.test/x"], "2 URI SANs"),
        (False, ["spiffe://a.test"], "has no path"),
        (False, ["spiffe://A.test/w"], "not a SPIFFE ID"),
        (False, ["spiffe://a.test/w/"], "not a SPIFFE ID"),
    ],
)
def test_leaf_rules_apply_during_validation(ca: bool, uris: list[str], message: str) -> None:
    root = SvidAuthority.create_root(A, now=NOW)
    leaf = _raw_leaf(root, ca=ca, uris=uris)
    with pytest.raises(InvalidSVID, match=message):
        verify_chain([leaf], _bundles(root), now=NOW)


def test_path_length_constraint_is_enforced_for_ed25519_walk() -> None:
    root = SvidAuthority.create_root(A, key_type="ed25519", now=NOW)
    # Re-sign an intermediate that allows no further CA below it, then put one below it.
    inter = root.intermediate(key_type="ed25519", now=NOW)
    constrained = (
        x509.CertificateBuilder()
        .subject_name(inter.certificate.subject)
        .issuer_name(root.certificate.subject)
        .public_key(inter.private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(minutes=5))
        .not_valid_after(NOW + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(inter.private_key.public_key()),
            critical=False,
        )
        .sign(root.private_key, _hash_for(root.private_key))
    )
    assert constrained.subject == inter.certificate.subject
    constrained_ca = SvidAuthority(A, constrained, inter.private_key, (root.certificate,))
    lower = constrained_ca.intermediate(key_type="ed25519", now=NOW)
    issued = lower.issue(parse_spiffe_id("spiffe://a.test/w"), key_type="ed25519", now=NOW)
    with pytest.raises(ChainVerificationError, match="path length"):
        verify_chain(issued.chain, _bundles(root), now=NOW)
    ok = constrained_ca.issue(parse_spiffe_id("spiffe://a.test/w"), key_type="ed25519", now=NOW)
    assert verify_chain(ok.chain, _bundles(root), now=NOW)


def test_naive_time_rejected() -> None:
    root = SvidAuthority.create_root(A, now=NOW)
    issued = root.issue(parse_spiffe_id("spiffe://a.test/w"), now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_chain(issued.chain, _bundles(root), now=NOW.replace(tzinfo=None))


def test_pem_helpers_round_trip() -> None:
    root = SvidAuthority.create_root(A, now=NOW)
    issued = root.issue(parse_spiffe_id("spiffe://a.test/w"), now=NOW)
    assert read_certificates(certs_pem(issued.chain)) == issued.chain
