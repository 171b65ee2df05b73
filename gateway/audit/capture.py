"""Envelope captures for offline replay: a file of raw envelope frames.

Format: a sequence of ``length u32 BE || envelope bytes``, nothing else (no header, so
``cat`` joins captures). Each length is bounded by the envelope codec's maximum before anything is
read. An audit record finds its envelope by the BLAKE2b-256 of the bytes (its
``envelope_digest``), or by a ``capture`` pointer ``"<file>:<offset>"`` (the offset of the
length prefix, the file relative to the log's directory).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from gateway.envelope.limits import MAX_ENVELOPE_BYTES

_LENGTH = struct.Struct(">I")


class CaptureError(ValueError):
    """A capture file is unreadable or torn; the message names the file and byte offset."""


def iter_capture(path: Path | str) -> Iterator[tuple[int, bytes]]:
    """The ``(offset, envelope bytes)`` of each frame in a capture file, in order.

    Raises:
        CaptureError: unreadable, a length above the envelope maximum, or a torn last frame.
    """
    try:
        with Path(path).open("rb") as f:
            offset = 0
            while True:
                head = f.read(_LENGTH.size)
                if not head:
                    return
                data = _frame(path, f, head, offset)
                yield offset, data
                offset += _LENGTH.size + len(data)
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read: {exc.strerror or exc}") from None


def read_at(path: Path | str, offset: int) -> bytes:
    """The envelope whose frame starts at ``offset``.

    Raises:
        CaptureError: unreadable, or no complete frame there.
    """
    try:
        with Path(path).open("rb") as f:
            f.seek(offset)
            return _frame(path, f, f.read(_LENGTH.size), offset)
    except OSError as exc:
        raise CaptureError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _frame(path: Path | str, f: BinaryIO, head: bytes, offset: int) -> bytes:
    if len(head) != _LENGTH.size:
        raise CaptureError(f"{path}: byte {offset}: torn frame length")
    (length,) = _LENGTH.unpack(head)
    if length > MAX_ENVELOPE_BYTES:
        raise CaptureError(
            f"{path}: byte {offset}: frame of {length} bytes exceeds {MAX_ENVELOPE_BYTES}"
        )
    data = f.read(length)
    if len(data) != length:
        raise CaptureError(f"{path}: byte {offset}: torn frame ({length} bytes announced)")
    return data


def write_capture(path: Path | str, envelopes: Iterable[bytes]) -> list[int]:
    """Append envelopes to a capture file; returns each frame's offset."""
    offsets = []
    with Path(path).open("ab") as f:
        for data in envelopes:
            if len(data) > MAX_ENVELOPE_BYTES:
                raise ValueError(f"envelope of {len(data)} bytes exceeds {MAX_ENVELOPE_BYTES}")
            offsets.append(f.tell())
            f.write(_LENGTH.pack(len(data)) + data)
    return offsets
