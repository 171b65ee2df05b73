"""Strict CBOR decoding for untrusted bytes, and the few CBOR heads the hot path writes itself.

Theory of operation: the reference check is :func:`loads_canonical`: cbor2 decodes; we then
re-encode the value with cbor2's canonical encoder and require the result to be byte-identical to
the input. That single comparison rejects indefinite lengths, non-shortest integers and lengths,
unsorted or duplicate map keys, trailing bytes, tags that decode to other values, and floats that
are not in their shortest form. Every label set we use sorts identically under RFC 7049
length-first canonical order (what cbor2 writes) and RFC 8949 section 4.2.1 bytewise order, so a
second implementation may use either (see docs/envelope.md).

Fixed-shape frames (the envelope array, the COSE_Sign1 array) are walked instead with
:func:`read_head` / :func:`read_bstr`, which accept only definite, shortest-form heads and so
accept exactly the canonical encodings of those shapes, at a fraction of the cost and with the
exact byte offset of the first problem. Callers keep :func:`loads_canonical` as the reference for
anything the walker refuses, so the reason code of a refusal never depends on which path ran
(see :func:`reconcile`).
"""

from __future__ import annotations

import cbor2

from gateway.errors import RemoteProtocolError
from gateway.reasons import Reason


def loads_canonical(data: bytes, what: str) -> object:
    """Decode ``data`` as exactly one canonical CBOR item.

    Args:
        data: untrusted bytes, already bounded in size by the caller.
        what: a name for error messages ("envelope", "claims", ...).

    Returns:
        The decoded value (cbor2's Python types; the caller checks them).

    Raises:
        RemoteProtocolError: MALFORMED if cbor2 cannot decode it, NON_CANONICAL if the bytes are
            not the canonical encoding of what they decode to (offset = first differing byte).
    """
    try:
        value = cbor2.loads(data)
    # cbor2 raises CBORDecodeError for most garbage but ValueError, TypeError, OverflowError or
    # RecursionError for some; all of them mean "not a well-formed item" here.
    except Exception as exc:
        raise RemoteProtocolError(
            Reason.MALFORMED, f"{what} is not well-formed CBOR ({exc})"
        ) from None
    try:
        again = cbor2.dumps(value, canonical=True)
    except Exception as exc:  # e.g. a value-sharing cycle: decodable but never canonical
        raise RemoteProtocolError(
            Reason.NON_CANONICAL, f"{what} cannot be re-encoded ({exc})"
        ) from None
    if again != data:
        raise RemoteProtocolError(
            Reason.NON_CANONICAL,
            f"{what} is not in canonical CBOR encoding",
            offset=_first_difference(again, data),
        )
    return value


def read_head(data: bytes, pos: int, major: int, what: str) -> tuple[int, int]:
    """Read one definite-length, shortest-form CBOR head of ``major`` type at ``pos``.

    Args:
        data: the input.
        pos: offset of the head's initial byte.
        major: the expected major type (0 uint, 2 bstr, 4 array, ...).
        what: a name for error messages.

    Returns:
        ``(argument, offset just after the head)``.

    Raises:
        RemoteProtocolError: MALFORMED (input ends, another major type, reserved additional
            information) or NON_CANONICAL (indefinite length, or an argument written longer than
            needed), with ``offset=pos``.
    """
    # The heads the hot path meets (immediate, one-byte and four-byte arguments), already in
    # shortest form, are returned straight away; everything else, including every error, takes
    # the full check below, which alone decides what is accepted.
    if pos < len(data):
        info = data[pos] - (major << 5)
        if 0 <= info < 24:
            return info, pos + 1
        if info == 24 and pos + 1 < len(data) and data[pos + 1] >= 24:
            return data[pos + 1], pos + 2
        if info == 26 and pos + 4 < len(data):
            argument = int.from_bytes(data[pos + 1 : pos + 5], "big")
            if argument >= 0x10000:
                return argument, pos + 5
    return _read_head_checked(data, pos, major, what)


def _read_head_checked(data: bytes, pos: int, major: int, what: str) -> tuple[int, int]:
    if pos >= len(data):
        raise RemoteProtocolError(Reason.MALFORMED, f"{what}: input ends before it", offset=pos)
    initial = data[pos]
    if initial >> 5 != major:
        raise RemoteProtocolError(
            Reason.MALFORMED, f"{what}: expected CBOR major type {major}, found {initial >> 5}",
            offset=pos,
        )  # fmt: skip
    info = initial & 0x1F
    if info < 24:
        return info, pos + 1
    if info == 31:
        raise RemoteProtocolError(
            Reason.NON_CANONICAL, f"{what}: indefinite length is not allowed", offset=pos
        )
    if info > 27:
        raise RemoteProtocolError(
            Reason.MALFORMED, f"{what}: reserved additional information {info}", offset=pos
        )
    size = 1 << (info - 24)  # 1, 2, 4 or 8 argument bytes
    end = pos + 1 + size
    if end > len(data):
        raise RemoteProtocolError(Reason.MALFORMED, f"{what}: head is truncated", offset=pos)
    argument = int.from_bytes(data[pos + 1 : end], "big")
    if argument < (24 if size == 1 else 1 << (4 * size)):
        raise RemoteProtocolError(
            Reason.NON_CANONICAL, f"{what}: length/value not in its shortest form", offset=pos
        )
    return argument, end


def read_bstr(data: bytes, pos: int, what: str) -> tuple[bytes, int]:
    """Read one definite-length, shortest-head byte string at ``pos``.

    Returns:
        ``(value, offset just after it)``.

    Raises:
        RemoteProtocolError: as :func:`read_head`, or MALFORMED if the string runs past the end.
    """
    length, start = read_head(data, pos, 2, what)
    end = start + length
    if end > len(data):
        raise RemoteProtocolError(
            Reason.MALFORMED, f"{what}: {length}-byte string runs past the end", offset=pos
        )
    return data[start:end], end


def reconcile(fast: RemoteProtocolError, reference: RemoteProtocolError) -> RemoteProtocolError:
    """Pick the error to raise when both the strict walker and the reference decoder refused.

    The reference decides the reason code (so codes never depend on the path taken); the walker's
    error is preferred when it has the same reason, because it names the exact byte offset.
    """
    return fast if fast.reason is reference.reason and fast.offset is not None else reference


def _first_difference(a: bytes, b: bytes) -> int:
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


def _short_head(major: int, length: int) -> bytes:
    top = major << 5
    return bytes((top | length,)) if length < 24 else bytes((top | 24, length))


# Every head with an argument below 256, made once: seal, open and stamp write several per call.
_SHORT_HEADS = tuple(tuple(_short_head(major, n) for n in range(0x100)) for major in range(8))


def head(major: int, length: int) -> bytes:
    """The shortest CBOR head for ``major`` type (0..7) with argument ``length``."""
    if 0 <= length < 0x100:
        return _SHORT_HEADS[major][length]
    top = major << 5
    if length < 0x10000:
        return bytes((top | 25,)) + length.to_bytes(2, "big")
    if length < 0x100000000:
        return bytes((top | 26,)) + length.to_bytes(4, "big")
    return bytes((top | 27,)) + length.to_bytes(8, "big")


def bstr(value: bytes) -> bytes:
    """``value`` encoded as a definite-length CBOR byte string."""
    return head(2, len(value)) + value
