"""The Xet protocol's hashes (xet-core spec, "Hashing"): all are 32-byte blake3 keyed hashes.

A hash travels as text in the CAS form (`hex_of`): each of its four 8-byte words printed as a little-endian u64,
not the bytes in order; the Merkle tree's node text uses the same form.
"""

from __future__ import annotations

from blake3 import blake3

DATA_KEY = bytes([
    102, 151, 245, 119, 91, 149, 80, 222, 49, 53, 203, 172, 165, 151, 24, 28,
    157, 228, 33, 16, 155, 235, 43, 88, 180, 208, 176, 75, 147, 173, 242, 41,
])
INTERNAL_NODE_KEY = bytes([
    1, 126, 197, 199, 165, 71, 41, 150, 253, 148, 102, 102, 180, 138, 2, 230,
    93, 221, 83, 111, 55, 199, 109, 210, 248, 99, 82, 230, 74, 83, 113, 63,
])
VERIFICATION_KEY = bytes([
    127, 24, 87, 214, 206, 86, 237, 102, 18, 127, 249, 19, 231, 165, 195, 243,
    164, 205, 38, 213, 181, 219, 73, 230, 65, 36, 152, 127, 40, 251, 148, 195,
])
ZERO_KEY = bytes(32)
HASH_LEN = 32
_BRANCHING = 4  # the Merkle tree's mean branching factor: a node ends after a child whose hash % 4 == 0
_MAX_CHILDREN = 2 * _BRANCHING + 1

Entry = tuple[bytes, int]  # (hash, length in bytes of the data under it)


def hex_of(h: bytes) -> str:
    """The CAS text form: each 8-byte word reversed (a little-endian u64 in hex)."""
    return "".join(h[i:i + 8][::-1].hex() for i in range(0, HASH_LEN, 8))


def hash_of_hex(text: str) -> bytes:
    """The hash a CAS hex string names; ValueError unless it is 64 hex digits."""
    if len(text) != 2 * HASH_LEN or not all(c in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(f"not a 64-hex-digit hash: {text[:80]!r}")
    raw = bytes.fromhex(text)
    return b"".join(raw[i:i + 8][::-1] for i in range(0, HASH_LEN, 8))


def chunk_hash(data: bytes | memoryview) -> bytes:
    return blake3(data, key=DATA_KEY).digest()


def _merged(entries: list[Entry]) -> Entry:
    text = "".join(f"{hex_of(h)} : {n}\n" for h, n in entries)
    return blake3(text.encode(), key=INTERNAL_NODE_KEY).digest(), sum(n for _, n in entries)


def _next_cut(entries: list[Entry], start: int) -> int:
    """Where the node starting at `start` ends: 2 to 9 children, cut after one whose hash is 0 mod 4."""
    left = len(entries) - start
    if left <= 2:
        return len(entries)
    end = min(_MAX_CHILDREN, left)
    for i in range(2, end):
        if int.from_bytes(entries[start + i][0][24:32], "little") % _BRANCHING == 0:
            return start + i + 1
    return start + end


def merkle_root(entries: list[Entry]) -> bytes:
    """The root of xet-core's aggregated-hash tree over (chunk hash, chunk length) leaves."""
    if not entries:
        return bytes(HASH_LEN)
    level = list(entries)
    while len(level) > 1:
        parents, i = [], 0
        while i < len(level):
            cut = _next_cut(level, i)
            parents.append(_merged(level[i:cut]))
            i = cut
        level = parents
    return level[0][0]


def xorb_hash(entries: list[Entry]) -> bytes:
    return merkle_root(entries)


def file_hash(entries: list[Entry]) -> bytes:
    """A file's hash: the Merkle root of its chunks, hashed again with an all-zero key (no salt)."""
    if not entries:
        return bytes(HASH_LEN)
    return blake3(merkle_root(entries), key=ZERO_KEY).digest()


def verification_hash(chunk_hashes: list[bytes]) -> bytes:
    """A shard term's verification hash: the raw chunk hashes of its range, concatenated, hashed."""
    return blake3(b"".join(chunk_hashes), key=VERIFICATION_KEY).digest()
