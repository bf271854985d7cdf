"""A shard upload (xet-core spec, "MDB Shard File Format"): a 48-byte header, the file-info section (each file's
reconstruction terms, their verification hashes and its sha256), the CAS-info section (the xorbs the client
made, chunk by chunk), each section closed by a bookend; an uploaded shard carries no footer, a stored one may.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from chatvector.localhub.xet.xorb import XetFormatError

HEADER_TAG = bytes([72, 70, 82, 101, 112, 111, 77, 101, 116, 97, 68, 97, 116, 97, 0, 85, 105, 103, 69, 106, 123,
                    129, 87, 131, 165, 189, 217, 92, 205, 209, 74, 169])  # b"HFRepoMetaData\0" + 17 fixed bytes
HEADER_VERSION = 2
ENTRY = 48  # every record in both sections is 48 bytes
BOOKEND = b"\xff" * 32
WITH_VERIFICATION = 1 << 31
WITH_METADATA_EXT = 1 << 30
MAX_SHARD_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Term:
    xorb: bytes
    size: int  # unpacked bytes of the term
    chunk_start: int
    chunk_end: int  # exclusive


@dataclass(frozen=True)
class FileInfo:
    hash: bytes
    terms: tuple[Term, ...]
    verification: tuple[bytes, ...] | None
    sha256: bytes | None

    @property
    def size(self) -> int:
        return sum(t.size for t in self.terms)


@dataclass(frozen=True)
class XorbInfo:
    hash: bytes
    chunk_hashes: tuple[bytes, ...]
    chunk_starts: tuple[int, ...]
    chunk_sizes: tuple[int, ...]
    unpacked_bytes: int
    serialized_bytes: int


@dataclass(frozen=True)
class Shard:
    files: tuple[FileInfo, ...]
    xorbs: tuple[XorbInfo, ...]


class _Reader:
    def __init__(self, buf: bytes):
        self.buf, self.at = buf, 0

    def record(self, what: str) -> bytes:
        if self.at + ENTRY > len(self.buf):
            raise XetFormatError(f"shard is truncated: {what} at byte {self.at} runs past its end ({len(self.buf)})")
        rec = self.buf[self.at:self.at + ENTRY]
        self.at += ENTRY
        return rec


def _header(r: _Reader) -> None:
    rec = r.record("the header")
    if rec[:32] != HEADER_TAG:
        raise XetFormatError("not a shard: the header tag is wrong")
    version, _footer_size = struct.unpack_from("<QQ", rec, 32)
    if version != HEADER_VERSION:
        raise XetFormatError(f"shard header version {version} is not supported (expected {HEADER_VERSION})")


def _file(r: _Reader, head: bytes) -> FileInfo:
    flags, count = struct.unpack_from("<II", head, 32)
    terms = []
    for _ in range(count):
        rec = r.record("a file's term")
        _flags, size, start, end = struct.unpack_from("<IIII", rec, 32)
        if end <= start:
            raise XetFormatError(f"a term has the empty chunk range [{start}, {end})")
        terms.append(Term(rec[:32], size, start, end))
    verification = tuple(r.record("a verification entry")[:32] for _ in range(count)) \
        if flags & WITH_VERIFICATION else None
    sha256 = r.record("a file's metadata")[:32] if flags & WITH_METADATA_EXT else None
    return FileInfo(head[:32], tuple(terms), verification, sha256)


def _xorb(r: _Reader, head: bytes) -> XorbInfo:
    _flags, count, unpacked, on_disk = struct.unpack_from("<IIII", head, 32)
    records = [r.record("a xorb's chunk") for _ in range(count)]
    starts_sizes = [struct.unpack_from("<II", rec, 32) for rec in records]
    return XorbInfo(head[:32], tuple(rec[:32] for rec in records), tuple(s for s, _ in starts_sizes),
                    tuple(n for _, n in starts_sizes), unpacked, on_disk)


def parse(buf: bytes) -> Shard:
    """The files and xorbs a shard describes; XetFormatError when its structure is broken."""
    if len(buf) > MAX_SHARD_BYTES:
        raise XetFormatError(f"shard is {len(buf)} bytes, the limit is {MAX_SHARD_BYTES}")
    r = _Reader(buf)
    _header(r)
    files, xorbs = [], []
    while (head := r.record("the file-info section"))[:32] != BOOKEND:
        files.append(_file(r, head))
    while (head := r.record("the CAS-info section"))[:32] != BOOKEND:
        xorbs.append(_xorb(r, head))
    return Shard(tuple(files), tuple(xorbs))
