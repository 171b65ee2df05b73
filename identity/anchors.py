"""Governance anchor keys: Ed25519 key pairs, their files, and the public-key admission check.

Theory of operation: an anchor is an Ed25519 key that signs envelopes and transit stamps. Signing
and verifying use PyNaCl (libsodium); ``cryptography`` is used only to read and write the standard
containers (PKCS#8 PEM for the private key, SubjectPublicKeyInfo PEM for the public key), so the
files interoperate with ``openssl pkey`` and every other tool.

A public key is admitted only when :func:`check_anchor_public_key` accepts it: the encoding is
canonical (y < p), it is not one of the eight small-order points (whose "signatures" verify for
many messages), and libsodium agrees it is a valid point of the prime-order subgroup (which also
rejects mixed-order keys, which honest key generation never produces and for which cofactored and
cofactorless verifiers disagree). See ../shared/vectors/ed25519-speccheck.json.

File writes are atomic (a temporary file in the same directory, fsync, then link or rename) and
the file is created with mode 0600 from the start, so a key is never readable by others, not even
for an instant, and a crash never leaves half a key behind.
"""

from __future__ import annotations

import contextlib
import enum
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from nacl.bindings import crypto_core_ed25519_is_valid_point
from nacl.signing import SigningKey

from identity.anchor_contract import key_id

PUBLIC_KEY_BYTES = 32
MAX_KEY_FILE_BYTES = 16 * 1024  # a PEM Ed25519 key is about 120 bytes; anything bigger is wrong

_P = 2**255 - 19
_Y_MASK = (1 << 255) - 1
# The y coordinates of the eight points of order 1, 2, 4 and 8 (canonical, y < p): the identity
# (y=1), (0,-1) (y=p-1), the two order-4 points (y=0) and the four order-8 points (y=±Y8). With
# either sign bit that is every encoding of a small-order point that passes the canonical check;
# the test suite re-derives the set with independent curve arithmetic.
_Y8 = int.from_bytes(
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), "little"
)
_SMALL_ORDER_Y = frozenset({0, 1, _P - 1, _Y8, _P - _Y8})


class AnchorKeyProblem(enum.StrEnum):
    """Why a public key cannot be an anchor. Stable strings: they appear in error messages."""

    WRONG_LENGTH = "wrong_length"
    NON_CANONICAL = "non_canonical"
    SMALL_ORDER = "small_order"
    NOT_PRIME_ORDER = "not_prime_order"  # off the curve, or with a torsion component


class AnchorKeyError(ValueError):
    """An anchor key file or value could not be used; the message names the source and why."""


class InvalidAnchorKey(AnchorKeyError):
    """The public key fails :func:`check_anchor_public_key`."""

    def __init__(self, problem: AnchorKeyProblem, detail: str) -> None:
        super().__init__(f"{problem.value}: {detail}")
        self.problem = problem
        self.detail = detail


def check_anchor_public_key(raw: bytes) -> None:
    """Admit ``raw`` as an anchor public key, or say precisely why not.

    Args:
        raw: the 32-byte Ed25519 public key encoding (RFC 8032 section 5.1.2).

    Raises:
        InvalidAnchorKey: WRONG_LENGTH, NON_CANONICAL (y >= p, or x = 0 with the sign bit
            set), SMALL_ORDER (one of the eight
            torsion points, either sign bit) or NOT_PRIME_ORDER (libsodium's
            ``crypto_core_ed25519_is_valid_point`` refuses it: not on the curve or not in the
            prime-order subgroup).
    """
    if len(raw) != PUBLIC_KEY_BYTES:
        raise InvalidAnchorKey(
            AnchorKeyProblem.WRONG_LENGTH, f"an Ed25519 public key is 32 bytes, got {len(raw)}"
        )
    y = int.from_bytes(raw, "little") & _Y_MASK
    if y >= _P:
        raise InvalidAnchorKey(
            AnchorKeyProblem.NON_CANONICAL,
            "the encoded y coordinate is not reduced (y >= 2^255-19)",
        )
    if raw[31] & 0x80 and y in (1, _P - 1):
        # y = +-1 means x = 0, whose only encoding has the sign bit clear ("negative zero").
        raise InvalidAnchorKey(
            AnchorKeyProblem.NON_CANONICAL, "the sign bit is set for x = 0 (negative zero)"
        )
    if y in _SMALL_ORDER_Y:
        raise InvalidAnchorKey(AnchorKeyProblem.SMALL_ORDER, "the key is a small-order point")
    if not crypto_core_ed25519_is_valid_point(raw):
        raise InvalidAnchorKey(
            AnchorKeyProblem.NOT_PRIME_ORDER,
            "the key is not a point of the prime-order subgroup",
        )


@dataclass(frozen=True, slots=True)
class AnchorKeyPair:
    """An anchor's signing key (PyNaCl) with its raw public key and key id."""

    signing_key: SigningKey

    @classmethod
    def generate(cls) -> AnchorKeyPair:
        """A fresh key pair from the operating system's CSPRNG (via libsodium)."""
        return cls(SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> AnchorKeyPair:
        """The key pair for a 32-byte RFC 8032 seed (deterministic: test vectors only)."""
        if len(seed) != 32:
            raise AnchorKeyError("an Ed25519 seed is 32 bytes")
        return cls(SigningKey(seed))

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return bytes(self.signing_key.verify_key)

    @property
    def kid(self) -> bytes:
        """The key id, :func:`identity.anchor_contract.key_id` of the public key."""
        return key_id(self.public_key)

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self.signing_key.sign(message).signature

    def private_pem(self) -> bytes:
        """The private key as unencrypted PKCS#8 PEM (``-----BEGIN PRIVATE KEY-----``)."""
        seed = bytes(self.signing_key)
        return ed25519.Ed25519PrivateKey.from_private_bytes(seed).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def public_pem(self) -> bytes:
        """The public key as SubjectPublicKeyInfo PEM."""
        return public_key_pem(self.public_key)

    def __repr__(self) -> str:  # never print key material
        return f"AnchorKeyPair(kid={self.kid.hex()})"


def public_key_pem(raw: bytes) -> bytes:
    """``raw`` (32 bytes) as SubjectPublicKeyInfo PEM (``-----BEGIN PUBLIC KEY-----``)."""
    return ed25519.Ed25519PublicKey.from_public_bytes(raw).public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def parse_private_pem(data: bytes, *, source: str = "<bytes>") -> AnchorKeyPair:
    """Read an unencrypted PKCS#8 PEM Ed25519 private key.

    Args:
        data: the file's bytes.
        source: a name for messages (usually the path).

    Returns:
        The key pair.

    Raises:
        AnchorKeyError: not PEM, encrypted, not Ed25519, or its public key fails
            :func:`check_anchor_public_key` (impossible for a real seed; checked all the same).
    """
    _check_size(data, source)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise AnchorKeyError(f"{source}: encrypted private keys are not supported") from None
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise AnchorKeyError(f"{source}: not a PEM private key ({_first_line(exc)})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise AnchorKeyError(f"{source}: an anchor key must be Ed25519, found {type(key).__name__}")
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    pair = AnchorKeyPair(SigningKey(seed))
    try:
        check_anchor_public_key(pair.public_key)
    except InvalidAnchorKey as exc:
        raise AnchorKeyError(f"{source}: {exc}") from None
    return pair


def parse_public_pem(data: bytes, *, source: str = "<bytes>") -> bytes:
    """Read a SubjectPublicKeyInfo PEM Ed25519 public key and admit it.

    Returns:
        The raw 32-byte public key.

    Raises:
        AnchorKeyError: not a PEM public key or not Ed25519.
        InvalidAnchorKey: the key fails :func:`check_anchor_public_key` (message names source).
    """
    _check_size(data, source)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise AnchorKeyError(f"{source}: not a PEM public key ({_first_line(exc)})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise AnchorKeyError(f"{source}: an anchor key must be Ed25519, found {type(key).__name__}")
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    try:
        check_anchor_public_key(raw)
    except InvalidAnchorKey as exc:
        raise InvalidAnchorKey(exc.problem, f"{source}: {exc.detail}") from None
    return raw


def load_private_key(path: Path | str) -> AnchorKeyPair:
    """Read the PKCS#8 PEM private key at ``path``; see :func:`parse_private_pem`.

    Raises:
        AnchorKeyError: unreadable or invalid (the message starts with the path).
    """
    return parse_private_pem(_read(Path(path)), source=str(path))


def load_public_key(path: Path | str) -> bytes:
    """Read the SPKI PEM public key at ``path``; see :func:`parse_public_pem`.

    Raises:
        AnchorKeyError: unreadable or invalid (the message starts with the path).
    """
    return parse_public_pem(_read(Path(path)), source=str(path))


def save_private_key(pair: AnchorKeyPair, path: Path | str, *, overwrite: bool = False) -> None:
    """Write ``pair`` as PKCS#8 PEM to ``path``, atomically, mode 0600.

    Args:
        pair: the key.
        path: destination; its directory must exist.
        overwrite: replace an existing file. By default an existing file is an error, so that a
            key is never lost by a mistyped command.

    Raises:
        AnchorKeyError: the file exists (and not ``overwrite``) or cannot be written.
    """
    write_file_atomic(Path(path), pair.private_pem(), overwrite=overwrite)


def save_public_key(raw: bytes, path: Path | str, *, overwrite: bool = False) -> None:
    """Write the raw public key ``raw`` as SPKI PEM to ``path``, atomically, mode 0600.

    Raises:
        AnchorKeyError: the file exists (and not ``overwrite``) or cannot be written.
    """
    write_file_atomic(Path(path), public_key_pem(raw), overwrite=overwrite)


def write_file_atomic(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write ``data`` to ``path`` so that readers see either nothing/the old file or all of it.

    The temporary file is created 0600 in the destination directory, written and fsynced, then
    linked into place (which fails if ``path`` exists) or renamed over it when ``overwrite``;
    finally the directory is fsynced so the new name survives a crash.

    Raises:
        AnchorKeyError: ``path`` exists and not ``overwrite``, or an OS error (message has path).
    """
    directory = path.parent
    tmp = directory / f".{path.name}.{secrets.token_hex(8)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)  # the umask could only narrow it; make it exact
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise AnchorKeyError(f"{path}: already exists (refusing to overwrite it)") from None
        _fsync_directory(directory)
    except OSError as exc:
        raise AnchorKeyError(f"{path}: cannot write ({exc.strerror or exc})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise AnchorKeyError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return data


def _check_size(data: bytes, source: str) -> None:
    if len(data) > MAX_KEY_FILE_BYTES:
        raise AnchorKeyError(f"{source}: larger than {MAX_KEY_FILE_BYTES} bytes, not a key file")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
