"""A serialized xorb (xet-core spec, "Xorb Formation & Serialization Format"): chunks, each an 8-byte header
(version 0, compressed size u24, compression scheme, uncompressed size u24, little-endian) and its compressed
bytes, then optionally the client's footer (`XETBLOB` ... info length u32), which the hash does not cover.

Parsing decompresses every chunk and recomputes the xorb hash from the chunk hashes, so a xorb is stored only
when its bytes are exactly what its name says.
"""

from __future__ import annotations

from dataclasses import dataclass

import lz4.frame
import numpy as np

from chatvector.localhub.xet import hashes

HEADER_LEN = 8
MAX_XORB_BYTES = 64 * 1024 * 1024  # the CAS refuses larger serialized xorbs (spec)
MAX_CHUNK_BYTES = 128 * 1024  # a chunk is at most 128 KiB uncompressed
_FOOTER_IDENT = b"XETBLOB"
NONE, LZ4, BG4_LZ4 = 0, 1, 2


class XetFormatError(ValueError):
    """The bytes are not a valid xorb or shard; the message says what is wrong, for a 400."""


@dataclass(frozen=True)
class Chunk:
    hash: bytes
    start: int  # byte offset of the chunk's header in the xorb
    end: int  # byte offset just past its compressed bytes
    size: int  # uncompressed length


@dataclass(frozen=True)
class XorbIndex:
    chunks: tuple[Chunk, ...]

    @property
    def data_end(self) -> int:
        return self.chunks[-1].end if self.chunks else 0

    @property
    def unpacked_bytes(self) -> int:
        return sum(c.size for c in self.chunks)


def _bg4_regroup(grouped: bytes) -> bytes:
    """Undo byte grouping: the four groups (byte 0, 1, 2, 3 of every 4-byte word) interleaved back."""
    n = len(grouped)
    split, rem = divmod(n, 4)
    sizes = [split + (rem > 0), split + (rem > 1), split + (rem > 2), split]
    src = np.frombuffer(grouped, dtype=np.uint8)
    out = np.empty(n, dtype=np.uint8)
    at = 0
    for lane, size in enumerate(sizes):
        out[lane::4] = src[at:at + size]
        at += size
    return out.tobytes()


def decompress(scheme: int, body: bytes | memoryview, size: int) -> bytes:
    """A chunk's bytes; XetFormatError when the scheme is unknown or the result is not `size` bytes long."""
    try:
        if scheme == NONE:
            data = bytes(body)
        elif scheme == LZ4:
            data = lz4.frame.decompress(bytes(body))
        elif scheme == BG4_LZ4:
            data = _bg4_regroup(lz4.frame.decompress(bytes(body)))
        else:
            raise XetFormatError(f"unknown chunk compression scheme {scheme}")
    except RuntimeError as err:  # lz4's error for corrupt frames
        raise XetFormatError(f"chunk does not decompress: {err}") from None
    if len(data) != size:
        raise XetFormatError(f"chunk decompresses to {len(data)} bytes, its header says {size}")
    return data


def read_header(buf: bytes | memoryview, at: int) -> tuple[int, int, int]:
    """(compressed size, scheme, uncompressed size) of the chunk header at `at`."""
    if len(buf) - at < HEADER_LEN:
        raise XetFormatError(f"truncated chunk header at byte {at}")
    head = bytes(buf[at:at + HEADER_LEN])
    if head[0] != 0:
        raise XetFormatError(f"chunk header at byte {at} has version {head[0]}, expected 0")
    return int.from_bytes(head[1:4], "little"), head[4], int.from_bytes(head[5:8], "little")


def _chunk_area_end(buf: bytes | memoryview) -> int:
    """Where the chunks end: before the footer when the xorb carries one, else at the end."""
    if len(buf) >= 4 + len(_FOOTER_IDENT):
        info_len = int.from_bytes(buf[-4:], "little")
        start = len(buf) - 4 - info_len
        if 0 <= start <= len(buf) - 4 - len(_FOOTER_IDENT) and bytes(buf[start:start + len(_FOOTER_IDENT)]) == _FOOTER_IDENT:
            return start
    return len(buf)


def iter_chunks(buf: bytes | memoryview, end: int | None = None):
    """(header offset, scheme, compressed body, uncompressed size) of each chunk up to `end`."""
    end = len(buf) if end is None else end
    at = 0
    while at < end:
        csize, scheme, usize = read_header(buf, at)
        body_end = at + HEADER_LEN + csize
        if body_end > end:
            raise XetFormatError(f"chunk at byte {at} claims {csize} bytes, only {end - at - HEADER_LEN} follow")
        yield at, scheme, buf[at + HEADER_LEN:body_end], usize
        at = body_end


def parse(buf: bytes | memoryview, expected: bytes) -> XorbIndex:
    """The chunk index of a serialized xorb whose hash must be `expected`; XetFormatError otherwise."""
    if len(buf) > MAX_XORB_BYTES:
        raise XetFormatError(f"xorb is {len(buf)} bytes, the limit is {MAX_XORB_BYTES}")
    chunks = []
    for at, scheme, body, usize in iter_chunks(buf, _chunk_area_end(buf)):
        if usize > MAX_CHUNK_BYTES:
            raise XetFormatError(f"chunk at byte {at} is {usize} bytes uncompressed, the limit is {MAX_CHUNK_BYTES}")
        data = decompress(scheme, body, usize)
        chunks.append(Chunk(hashes.chunk_hash(data), at, at + HEADER_LEN + len(body), usize))
    if not chunks:
        raise XetFormatError("xorb holds no chunk")
    actual = hashes.xorb_hash([(c.hash, c.size) for c in chunks])
    if actual != expected:
        raise XetFormatError(f"xorb hash mismatch: the body hashes to {hashes.hex_of(actual)}, "
                             f"the request names {hashes.hex_of(expected)}")
    return XorbIndex(tuple(chunks))


def unpack(buf: bytes | memoryview) -> bytes:
    """The uncompressed bytes of a run of whole chunks (a ranged fetch of a stored xorb)."""
    return b"".join(decompress(scheme, body, usize) for _, scheme, body, usize in iter_chunks(buf))
