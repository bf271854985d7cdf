"""What the local Hub's CAS holds: verified xorbs on disk (`xet/xorbs/<aa>/<hash>`) with their chunk index, and
each uploaded file's reconstruction (its terms) under its Xet file hash, beside the Hub's own tables.

A shard is accepted whole or not at all: every term must name a stored xorb and a chunk range inside it, every
verification hash and the file hash must match the chunks the CAS holds, and the file's bytes, reassembled from
the xorbs, must hash to the sha256 the shard states. The reassembled file is then kept as an ordinary blob, so
that every other endpoint (LFS batch, commits of pointers, plain downloads through `/resolve`) sees it as the
Hub does: a file the Hub knows by its sha256.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator

from chatvector.localhub.storage import Store, StoreError
from chatvector.localhub.xet import hashes, shard, xorb
from chatvector.localhub.xet.xorb import Chunk, XetFormatError, XorbIndex

_SCHEMA = """
CREATE TABLE IF NOT EXISTS xet_xorbs (hash TEXT PRIMARY KEY, bytes INTEGER NOT NULL, chunks BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS xet_files (
    file_hash TEXT PRIMARY KEY, sha256 TEXT NOT NULL, size INTEGER NOT NULL, terms TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS xet_files_by_sha256 ON xet_files (sha256);
"""
_CHUNK_RECORD = struct.Struct("<32sQQI")  # hash, header offset, end offset, uncompressed size
_INDEX_CACHE = 256  # xorb indexes kept in memory (each ~1000 chunks)


@dataclass(frozen=True)
class FileTerm:
    xorb: str  # CAS hex
    chunk_start: int
    chunk_end: int
    size: int


@dataclass(frozen=True)
class XetFile:
    file_hash: str  # CAS hex
    sha256: str
    size: int
    terms: tuple[FileTerm, ...]


class Cas:
    def __init__(self, store: Store):
        self.store = store
        self.xorb_dir = store.root / "xet" / "xorbs"
        self.xorb_dir.mkdir(parents=True, exist_ok=True)
        store._conn().executescript(_SCHEMA)
        self._indexes: OrderedDict[str, XorbIndex] = OrderedDict()
        self._lock = threading.Lock()

    # -- xorbs ---------------------------------------------------------------------------------------------
    def xorb_path(self, name: str):
        return self.xorb_dir / name[:2] / name

    def has_xorb(self, name: str) -> bool:
        row = self.store._read().execute("SELECT 1 FROM xet_xorbs WHERE hash=?", (name,)).fetchone()
        return row is not None and self.xorb_path(name).exists()

    def put_xorb(self, name: str, data: bytes) -> bool:
        """Store a serialized xorb after checking it hashes to NAME; False when it was stored already."""
        index = xorb.parse(data, hashes.hash_of_hex(name))
        if self.has_xorb(name):
            return False
        path = self.xorb_path(name)
        path.parent.mkdir(exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.store.tmp_dir, prefix="xorb-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data[:index.data_end])  # the client's footer is its own: fetches never reach it
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
            tmp = None
        finally:
            if tmp is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(tmp)
        packed = b"".join(_CHUNK_RECORD.pack(c.hash, c.start, c.end, c.size) for c in index.chunks)
        with self.store._tx() as db:
            db.execute("INSERT OR IGNORE INTO xet_xorbs VALUES (?,?,?)", (name, index.data_end, packed))
        return True

    def xorb_index(self, name: str) -> XorbIndex | None:
        with self._lock:
            if name in self._indexes:
                self._indexes.move_to_end(name)
                return self._indexes[name]
        row = self.store._read().execute("SELECT chunks FROM xet_xorbs WHERE hash=?", (name,)).fetchone()
        if row is None:
            return None
        index = XorbIndex(tuple(Chunk(*rec) for rec in _CHUNK_RECORD.iter_unpack(row["chunks"])))
        with self._lock:
            self._indexes[name] = index
            while len(self._indexes) > _INDEX_CACHE:
                self._indexes.popitem(last=False)
        return index

    def delete_xorb(self, name: str) -> None:
        """Forget a xorb (tests and operators: the Hub's garbage collection, by hand)."""
        with self.store._tx() as db:
            db.execute("DELETE FROM xet_xorbs WHERE hash=?", (name,))
        with self._lock:
            self._indexes.pop(name, None)
        with contextlib.suppress(FileNotFoundError):
            self.xorb_path(name).unlink()

    # -- files ---------------------------------------------------------------------------------------------
    def file(self, file_hash: str) -> XetFile | None:
        row = self.store._read().execute("SELECT * FROM xet_files WHERE file_hash=?", (file_hash,)).fetchone()
        return None if row is None else _xet_file(row)

    def file_by_sha256(self, sha256: str) -> XetFile | None:
        """The Xet file with this content, when its bytes are still held (the Hub's LFS object)."""
        row = self.store._read().execute("SELECT * FROM xet_files WHERE sha256=? LIMIT 1", (sha256,)).fetchone()
        return None if row is None or not self.store.has_blob(sha256) else _xet_file(row)

    def forget_sha256(self, sha256: str) -> None:
        """The content's bytes were deleted: it is no Xet file any more (its xorbs stay, as chunks to dedupe)."""
        with self.store._tx() as db:
            db.execute("DELETE FROM xet_files WHERE sha256=?", (sha256,))

    def register_shard(self, data: bytes) -> int:
        """Check a shard upload against the stored xorbs and record its files; returns how many were new.
        Raises XetFormatError (a 400) for anything the Hub would refuse, having recorded nothing."""
        parsed = shard.parse(data)
        for info in parsed.xorbs:
            self._check_listed_xorb(info)
        files = [self._checked_file(info) for info in parsed.files]
        new = [f for f in files if self.file(f.file_hash) is None or not self.store.has_blob(f.sha256)]
        for f in new:
            self._materialize(f)
        with self.store._tx() as db:
            for f in new:
                terms = json.dumps([[t.xorb, t.chunk_start, t.chunk_end, t.size] for t in f.terms])
                db.execute("INSERT OR REPLACE INTO xet_files VALUES (?,?,?,?)", (f.file_hash, f.sha256, f.size, terms))
        return len(new)

    def _check_listed_xorb(self, info: shard.XorbInfo) -> None:
        name = hashes.hex_of(info.hash)
        index = self.xorb_index(name)
        if index is None:
            raise XetFormatError(f"the shard lists xorb {name}, which was not uploaded")
        if tuple(c.hash for c in index.chunks) != info.chunk_hashes:
            raise XetFormatError(f"the shard's chunk list of xorb {name} does not match the uploaded xorb")

    def _checked_file(self, info: shard.FileInfo) -> XetFile:
        name = hashes.hex_of(info.hash)
        if info.sha256 is None:
            raise XetFormatError(f"file {name} has no metadata extension: its sha256 is required")
        if info.verification is None:
            raise XetFormatError(f"file {name} has no verification entries: they are required on upload")
        leaves: list[hashes.Entry] = []
        terms = []
        for n, (term, check) in enumerate(zip(info.terms, info.verification)):
            xorb_name = hashes.hex_of(term.xorb)
            index = self.xorb_index(xorb_name)
            if index is None:
                raise XetFormatError(f"file {name}, term {n}: xorb {xorb_name} was not uploaded")
            if term.chunk_end > len(index.chunks):
                raise XetFormatError(f"file {name}, term {n}: chunks [{term.chunk_start}, {term.chunk_end}) are "
                                     f"past the end of xorb {xorb_name} ({len(index.chunks)} chunks)")
            chunks = index.chunks[term.chunk_start:term.chunk_end]
            if sum(c.size for c in chunks) != term.size:
                raise XetFormatError(f"file {name}, term {n}: {term.size} bytes stated, the chunks hold "
                                     f"{sum(c.size for c in chunks)}")
            if hashes.verification_hash([c.hash for c in chunks]) != check:
                raise XetFormatError(f"file {name}, term {n}: the verification hash does not match xorb {xorb_name}")
            leaves.extend((c.hash, c.size) for c in chunks)
            terms.append(FileTerm(xorb_name, term.chunk_start, term.chunk_end, term.size))
        if hashes.file_hash(leaves) != info.hash:
            raise XetFormatError(f"file hash mismatch: the terms of file {name} hash to "
                                 f"{hashes.hex_of(hashes.file_hash(leaves))}")
        # The sha256 is stored as a hash is (four little-endian words): its text form is the CAS hex form.
        return XetFile(name, hashes.hex_of(info.sha256), info.size, tuple(terms))

    def _materialize(self, f: XetFile) -> None:
        try:
            self.store.put_stream(self.read(f, 0, f.size), expected_size=f.size, expected_sha256=f.sha256)
        except StoreError as err:
            raise XetFormatError(f"file {f.file_hash}: {err.message} (its sha256 as the shard states it)") from None

    # -- reading -------------------------------------------------------------------------------------------
    def read(self, f: XetFile, start: int, end: int) -> Iterator[bytes]:
        """The file's bytes [start, end), reassembled from its xorbs chunk by chunk."""
        at = 0
        for term in f.terms:
            index = self.xorb_index(term.xorb)
            chunks = index.chunks[term.chunk_start:term.chunk_end]
            if at + term.size <= start:
                at += term.size
                continue
            with open(self.xorb_path(term.xorb), "rb") as fh:
                for c in chunks:
                    if at >= end:
                        return
                    if at + c.size > start:
                        fh.seek(c.start)
                        raw = fh.read(c.end - c.start)
                        data = xorb.unpack(raw)
                        yield data[max(0, start - at):min(c.size, end - at)]
                    at += c.size


def _xet_file(row) -> XetFile:
    terms = tuple(FileTerm(x, s, e, n) for x, s, e, n in json.loads(row["terms"]))
    return XetFile(row["file_hash"], row["sha256"], row["size"], terms)
