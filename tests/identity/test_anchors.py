"""Anchor keys: generation, PEM files, and the public-key admission check.

The speccheck classification is derived here with independent affine Edwards arithmetic (plain
Python integers), not with the code under test or libsodium.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from nacl.exceptions import BadSignatureError
from nacl.signing import VerifyKey

from identity.anchor_contract import key_id
from identity.anchors import (
    MAX_KEY_FILE_BYTES,
    AnchorKeyError,
    AnchorKeyPair,
    AnchorKeyProblem,
    InvalidAnchorKey,
    check_anchor_public_key,
    load_private_key,
    load_public_key,
    parse_private_pem,
    parse_public_pem,
    public_key_pem,
    save_private_key,
    save_public_key,
)

# -- independent Ed25519 curve arithmetic (RFC 8032 section 5.1) --------------------------------

P = 2**255 - 19
D = (-121665 * pow(121666, -1, P)) % P
L = 2**252 + 27742317777372353535851937790883648493
SQRT_M1 = pow(2, (P - 1) // 4, P)
IDENTITY = (0, 1)
Point = tuple[int, int]


def add(a: Point, b: Point) -> Point:
    (x1, y1), (x2, y2) = a, b
    t = D * x1 * x2 * y1 * y2 % P
    x3 = (x1 * y2 + y1 * x2) * pow(1 + t, -1, P) % P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, -1, P) % P
    return x3, y3


def mul(k: int, point: Point) -> Point:
    result = IDENTITY
    while k:
        if k & 1:
            result = add(result, point)
        point = add(point, point)
        k >>= 1
    return result


def decode_lenient(raw: bytes) -> tuple[Point | None, bool]:
    """(point or None if not on the curve, canonical?) — y is reduced mod p like lax decoders."""
    sign = raw[31] >> 7
    y_raw = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    canonical = y_raw < P
    y = y_raw % P
    u = (y * y - 1) * pow(D * y * y + 1, -1, P) % P
    x = pow(u, (P + 3) // 8, P)
    if x * x % P != u:
        x = x * SQRT_M1 % P
    if x * x % P != u:
        return None, canonical
    if x == 0 and sign:
        canonical = False
    if x & 1 != sign:
        x = P - x
    return (x, y), canonical


def expected_problem(raw: bytes) -> AnchorKeyProblem | None:
    point, canonical = decode_lenient(raw)
    if not canonical:
        return AnchorKeyProblem.NON_CANONICAL
    if point is None:
        return AnchorKeyProblem.NOT_PRIME_ORDER  # not on the curve
    if mul(8, point) == IDENTITY:
        return AnchorKeyProblem.SMALL_ORDER
    if mul(L, point) != IDENTITY:
        return AnchorKeyProblem.NOT_PRIME_ORDER  # mixed order: a torsion component
    return None


def verdict(raw: bytes) -> AnchorKeyProblem | None:
    try:
        check_anchor_public_key(raw)
    except InvalidAnchorKey as exc:
        return exc.problem
    return None


# -- speccheck vectors -------------------------------------------------------------------------


def _speccheck(shared_vectors: Path) -> dict[str, object]:
    data: dict[str, object] = json.loads((shared_vectors / "ed25519-speccheck.json").read_text())
    return data


def test_speccheck_keys_classified_like_independent_arithmetic(shared_vectors: Path) -> None:
    cases = _speccheck(shared_vectors)["cases"]
    assert isinstance(cases, list) and len(cases) == 12
    keys = sorted({bytes.fromhex(c["pub_key"]) for c in cases})
    derived = {k.hex(): expected_problem(k) for k in keys}
    ours = {k.hex(): verdict(k) for k in keys}
    assert ours == derived
    # The file covers the interesting classes; make sure the derivation found them.
    assert AnchorKeyProblem.SMALL_ORDER in derived.values()
    assert AnchorKeyProblem.NON_CANONICAL in derived.values()  # ecff..ff: x = 0, sign bit set
    assert AnchorKeyProblem.NOT_PRIME_ORDER in derived.values()  # mixed-order keys
    assert None in derived.values()


def test_libsodium_verification_agrees_with_the_file(shared_vectors: Path) -> None:
    data = _speccheck(shared_vectors)
    cases = data["cases"]
    assert isinstance(cases, list)
    verdicts = str(data["libsodium_verdicts"]).split()
    assert len(verdicts) == len(cases)
    for index, (case, expected) in enumerate(zip(cases, verdicts, strict=True)):
        key = VerifyKey(bytes.fromhex(case["pub_key"]))
        try:
            key.verify(bytes.fromhex(case["message"]), bytes.fromhex(case["signature"]))
            got = "V"
        except BadSignatureError:
            got = "X"
        assert got == expected, f"case {index}"


def test_every_small_order_point_is_rejected() -> None:
    # Build the whole 8-torsion group from the order-8 point found in speccheck case 0
    # (c7176a70...fa): multiples 0..7 are all eight small-order points.
    base, _ = decode_lenient(
        bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa")
    )
    assert base is not None and mul(8, base) == IDENTITY and mul(4, base) != IDENTITY
    points = {mul(k, base) for k in range(8)}
    assert len(points) == 8
    for x, y in points:
        canonical = y.to_bytes(32, "little")
        encoding = bytes([*canonical[:31], canonical[31] | ((x & 1) << 7)])
        assert verdict(encoding) is AnchorKeyProblem.SMALL_ORDER
        flipped = bytes([*encoding[:31], encoding[31] ^ 0x80])
        assert verdict(flipped) in {AnchorKeyProblem.SMALL_ORDER, AnchorKeyProblem.NON_CANONICAL}


def test_every_unreduced_y_is_non_canonical() -> None:
    for y in range(P, 2**255):  # the 19 encodings with y >= p, with both sign bits
        raw = y.to_bytes(32, "little")
        assert verdict(raw) is AnchorKeyProblem.NON_CANONICAL
        assert verdict(bytes([*raw[:31], raw[31] | 0x80])) is AnchorKeyProblem.NON_CANONICAL


def test_generated_keys_are_admitted() -> None:
    for _ in range(50):
        pair = AnchorKeyPair.generate()
        check_anchor_public_key(pair.public_key)
        assert expected_problem(pair.public_key) is None


def test_off_curve_and_wrong_length() -> None:
    # y = 2 is not the y of any curve point (u is not a square); derived, not assumed.
    raw = (2).to_bytes(32, "little")
    assert decode_lenient(raw)[0] is None
    assert verdict(raw) is AnchorKeyProblem.NOT_PRIME_ORDER
    assert verdict(b"\x01" * 31) is AnchorKeyProblem.WRONG_LENGTH
    assert verdict(b"\x01" * 33) is AnchorKeyProblem.WRONG_LENGTH


# -- key pairs and files -----------------------------------------------------------------------


def test_kid_and_signature() -> None:
    pair = AnchorKeyPair.generate()
    assert pair.kid == key_id(pair.public_key) and len(pair.kid) == 16
    signature = pair.sign(b"message")
    VerifyKey(pair.public_key).verify(b"message", signature)
    with pytest.raises(BadSignatureError):
        VerifyKey(pair.public_key).verify(b"messagf", signature)
    assert pair.kid.hex() in repr(pair) and bytes(pair.signing_key).hex() not in repr(pair)


def test_rfc8032_seed_gives_the_rfc_public_key() -> None:
    # RFC 8032 section 7.1, TEST 1.
    pair = AnchorKeyPair.from_seed(
        bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    )
    assert pair.public_key.hex() == (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )


def test_pem_round_trip_and_interop_with_cryptography() -> None:
    pair = AnchorKeyPair.generate()
    private_pem = pair.private_pem()
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    again = parse_private_pem(private_pem)
    assert again.public_key == pair.public_key
    # The same bytes are a standard PKCS#8 / SPKI Ed25519 key for other tools.
    theirs = serialization.load_pem_private_key(private_pem, password=None)
    assert isinstance(theirs, ed25519.Ed25519PrivateKey)
    raw = theirs.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert raw == pair.public_key
    assert parse_public_pem(pair.public_pem()) == pair.public_key


def test_files_are_0600_atomic_and_never_overwritten(tmp_path: Path) -> None:
    pair = AnchorKeyPair.generate()
    key_path, pub_path = tmp_path / "anchor.pem", tmp_path / "anchor.pub"
    save_private_key(pair, key_path)
    save_public_key(pair.public_key, pub_path)
    for path in (key_path, pub_path):
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_private_key(key_path).public_key == pair.public_key
    assert load_public_key(pub_path) == pair.public_key
    other = AnchorKeyPair.generate()
    with pytest.raises(AnchorKeyError, match="already exists"):
        save_private_key(other, key_path)
    assert load_private_key(key_path).public_key == pair.public_key  # untouched
    save_private_key(other, key_path, overwrite=True)
    assert load_private_key(key_path).public_key == other.public_key
    assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["anchor.pem", "anchor.pub"]  # no temps


def test_file_mode_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        save_private_key(AnchorKeyPair.generate(), tmp_path / "k.pem")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "k.pem").st_mode) == 0o600


def test_small_order_public_key_file_is_refused() -> None:
    small = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa")
    pem = public_key_pem(small)  # OpenSSL writes it without complaint
    with pytest.raises(InvalidAnchorKey, match=r"pub\.pem: ") as info:
        parse_public_pem(pem, source="pub.pem")
    assert info.value.problem is AnchorKeyProblem.SMALL_ORDER


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a PEM private key"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a PEM private"),
        (b"x" * (MAX_KEY_FILE_BYTES + 1), "larger than"),
    ],
)
def test_bad_private_key_files(data: bytes, message: str) -> None:
    with pytest.raises(AnchorKeyError, match=message) as info:
        parse_private_pem(data, source="key.pem")
    assert str(info.value).startswith("key.pem: ")


def test_wrong_key_types_are_named() -> None:
    ec_key = ec.generate_private_key(ec.SECP256R1())
    pem = ec_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(AnchorKeyError, match="must be Ed25519, found"):
        parse_private_pem(pem, source="k")
    pub = ec_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    with pytest.raises(AnchorKeyError, match="must be Ed25519, found"):
        parse_public_pem(pub, source="k")
    encrypted = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(AnchorKeyError, match="encrypted private keys are not supported"):
        parse_private_pem(encrypted, source="k")


def test_unreadable_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(AnchorKeyError, match=r"missing\.pem: cannot read"):
        load_private_key(tmp_path / "missing.pem")
    with pytest.raises(AnchorKeyError, match="cannot write"):
        save_private_key(AnchorKeyPair.generate(), tmp_path / "no-such-dir" / "k.pem")
