"""Theory of operation: one file of length-prefixed, checksummed records.

Every record on disk is::

    magic "SR" (2) | kind (1) | flags = 0 (1) | body length (4, big-endian)   -- 8-byte prefix
    CRC32 of the prefix (4)                                                   -- header check
    body (length bytes)
    BLAKE2b-128 of prefix + body (16)                                         -- record check

The header has its own CRC so that a damaged length field is recognised as damage, instead of
sending the scanner past the end of the file where it would look like a torn tail.

Recovery rule, applied by :func:`scan` from the first byte:

* the file ends inside a record (partial header, or a valid header whose body runs past the end
  of file), or the rest of the file is zero bytes, or the *last* record's digest fails: a torn
  tail. A crash (``SIGKILL`` in the middle of ``write``, power loss before ``fsync``) leaves
  exactly this; the scan stops there and the caller truncates the file at that offset;
* any other failed check (a bad header or digest with more bytes after it): corruption in the
  middle, reported as :class:`SpoolCorrupt` with the byte offset. Nothing is skipped.

A record that ``put``/``add`` returned for was fsynced, so it is never in a torn tail: truncating
the tail only drops writes whose caller never got an answer.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from gateway.spool.errors import SpoolCorrupt

MAGIC = b"SR"
_PREFIX = struct.Struct(">2sBBI")
_CRC = struct.Struct(">I")
HEADER_BYTES = _PREFIX.size + _CRC.size  # 12
DIGEST_BYTES = 16
OVERHEAD = HEADER_BYTES + DIGEST_BYTES  # 28
MAX_BODY_BYTES = 4 * 1024 * 1024  # above MAX_ENVELOPE_BYTES plus destination and metadata

FORMAT_VERSION = 1
KIND_FILE_HEADER = 1
_FILE_HEADER = struct.Struct(">4sBBQ")  # tag, version, flags, number
FILE_HEADER_RECORD_BYTES = OVERHEAD + _FILE_HEADER.size


@dataclass(frozen=True, slots=True)
class RawRecord:
    """One record found by :func:`scan`; ``offset`` is where its header starts."""

    offset: int
    kind: int
    body: bytes

    @property
    def body_offset(self) -> int:
        return self.offset + HEADER_BYTES

    @property
    def size(self) -> int:
        return OVERHEAD + len(self.body)


@dataclass(frozen=True, slots=True)
class TornTail:
    """What recovery cut off the end of a file: ``dropped`` bytes from ``offset``."""

    path: Path
    offset: int
    dropped: int


def encode(kind: int, body: bytes) -> bytes:
    """Frame ``body`` as one record of ``kind``.

    Raises:
        ValueError: the body exceeds :data:`MAX_BODY_BYTES` or ``kind`` is not a byte.
    """
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"record body of {len(body)} bytes exceeds {MAX_BODY_BYTES}")
    prefix = _PREFIX.pack(MAGIC, kind, 0, len(body))
    digest = hashlib.blake2b(prefix, digest_size=DIGEST_BYTES)
    digest.update(body)
    return b"".join((prefix, _CRC.pack(zlib.crc32(prefix)), body, digest.digest()))


def scan(path: Path, data: bytes, known_kinds: frozenset[int]) -> tuple[list[RawRecord], int]:
    """Parse every record in ``data`` (the whole content of ``path``).

    Returns:
        The records in file order, and the offset where valid data ends (``len(data)`` when the
        file has no torn tail; the caller truncates the file there otherwise).

    Raises:
        SpoolCorrupt: a record before the tail failed its checks; ``offset`` names it.
    """
    records: list[RawRecord] = []
    offset = 0
    end = len(data)
    while offset < end:
        if end - offset < HEADER_BYTES:
            return records, offset
        prefix = data[offset : offset + _PREFIX.size]
        magic, kind, flags, length = _PREFIX.unpack(prefix)
        (crc,) = _CRC.unpack_from(data, offset + _PREFIX.size)
        if magic != MAGIC or crc != zlib.crc32(prefix) or flags != 0:
            if not any(data[offset:]):
                return records, offset  # zero-filled tail: space allocated, data never written
            raise SpoolCorrupt(path, offset, "bad record header (magic or header CRC)")
        if kind not in known_kinds or length > MAX_BODY_BYTES:
            raise SpoolCorrupt(path, offset, f"record kind {kind} length {length} not acceptable")
        body_end = offset + HEADER_BYTES + length
        record_end = body_end + DIGEST_BYTES
        if record_end > end:
            return records, offset
        body = data[offset + HEADER_BYTES : body_end]
        digest = hashlib.blake2b(prefix, digest_size=DIGEST_BYTES)
        digest.update(body)
        if digest.digest() != data[body_end:record_end]:
            if record_end == end:
                return records, offset
            raise SpoolCorrupt(path, offset, "record checksum mismatch")
        records.append(RawRecord(offset, kind, body))
        offset = record_end
    return records, offset


def encode_file_header(tag: bytes, number: int, flags: int = 0) -> bytes:
    """The first record of every file: what the file is (``tag``), its format version, flags,
    and its sequence number among its siblings."""
    return encode(KIND_FILE_HEADER, _FILE_HEADER.pack(tag, FORMAT_VERSION, flags, number))


def decode_file_header(path: Path, found: list[RawRecord], tag: bytes) -> tuple[int, int]:
    """Check the first record of a file is its header with ``tag``.

    Returns:
        ``(flags, number)`` from the header.

    Raises:
        SpoolCorrupt: no header, another file type, or an unknown format version.
    """
    if not found or found[0].kind != KIND_FILE_HEADER or len(found[0].body) != _FILE_HEADER.size:
        raise SpoolCorrupt(path, 0, "missing file header record")
    got_tag, version, flags, number = _FILE_HEADER.unpack(found[0].body)
    if got_tag != tag or version != FORMAT_VERSION:
        raise SpoolCorrupt(path, 0, f"file is {got_tag!r} v{version}, expected {tag!r} v1")
    return flags, number
