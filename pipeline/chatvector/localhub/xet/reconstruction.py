"""A file's reconstruction, as `GET /v1|v2/reconstructions/{file}` answers it: the terms covering a byte range,
trimmed to the chunks that hold it, and for each xorb the presigned URL and byte ranges to fetch them from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from chatvector.localhub.xet.cas import Cas, XetFile


@dataclass(frozen=True)
class Piece:
    xorb: str
    chunk_start: int
    chunk_end: int  # exclusive
    size: int  # unpacked bytes
    byte_start: int  # in the stored xorb
    byte_end: int  # inclusive, as an HTTP range


def pieces(cas: Cas, f: XetFile, start: int, end: int) -> tuple[int, list[Piece]]:
    """(offset of `start` into the first piece, the pieces covering bytes [start, end))."""
    out: list[Piece] = []
    offset = 0
    at = 0
    for term in f.terms:
        if at >= end:
            break
        if at + term.size <= start:
            at += term.size
            continue
        chunks = cas.xorb_index(term.xorb).chunks
        first = last = None
        for i in range(term.chunk_start, term.chunk_end):
            c = chunks[i]
            if at + c.size > start and at < end:
                if first is None:
                    first = i
                    if not out:
                        offset = max(0, start - at)
                last = i
            at += c.size
        if first is not None:
            kept = chunks[first:last + 1]
            out.append(Piece(term.xorb, first, last + 1, sum(c.size for c in kept), kept[0].start, kept[-1].end - 1))
    return offset, out


def _terms(found: list[Piece]) -> list[dict]:
    return [{"hash": p.xorb, "unpacked_length": p.size, "range": {"start": p.chunk_start, "end": p.chunk_end}}
            for p in found]


def fetch_ranges(found: list[Piece]) -> dict[str, list[tuple[int, int, int, int]]]:
    """Per xorb, the disjoint chunk ranges to fetch, (chunk start, chunk end, first byte, last byte): the terms'
    ranges merged where they overlap or touch, so that each term lies inside exactly one of them (the client
    looks a term up by the range that holds it)."""
    spans: dict[str, list[tuple[int, int, int, int]]] = {}
    for p in sorted(found, key=lambda p: (p.xorb, p.chunk_start)):
        merged = spans.setdefault(p.xorb, [])
        if merged and p.chunk_start <= merged[-1][1]:
            c0, c1, b0, b1 = merged[-1]
            merged[-1] = (c0, max(c1, p.chunk_end), b0, max(b1, p.byte_end))
        else:
            merged.append((p.chunk_start, p.chunk_end, p.byte_start, p.byte_end))
    return spans


def v1(offset: int, found: list[Piece], url_for: Callable[[str], str]) -> dict:
    fetch = {name: [{"range": {"start": c0, "end": c1}, "url": url_for(name), "url_range": {"start": b0, "end": b1}}
                    for c0, c1, b0, b1 in spans] for name, spans in fetch_ranges(found).items()}
    return {"offset_into_first_range": offset, "terms": _terms(found), "fetch_info": fetch}


def v2(offset: int, found: list[Piece], url_for: Callable[[str], str]) -> dict:
    """One URL per range: a multi-range request would need a multipart answer, which this CAS does not give."""
    xorbs = {name: [{"url": url_for(name), "ranges": [{"chunks": {"start": c0, "end": c1},
                                                       "bytes": {"start": b0, "end": b1}}]}
                    for c0, c1, b0, b1 in spans] for name, spans in fetch_ranges(found).items()}
    return {"offset_into_first_range": offset, "terms": _terms(found), "xorbs": xorbs}
