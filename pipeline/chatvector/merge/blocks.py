"""Where each output byte comes from: the pure planning half of the engine (no I/O).

An output file is cut into blocks of `block_bytes` (a multiple of 4 KiB, so that blocks can be written
with O_DIRECT). A block holds part of the header and/or pieces of tensors; each piece is one `Chunk`
of a tensor's flattened elements: either the delta rows (cp + Σ λ·(chat − base)), or rows that keep
cp's values (a raw byte copy when cp already has the output dtype), plus any row copies inside it.
Every tensor starts at a multiple of its element size (the header is padded to 8 bytes, wider dtypes
come first), so block boundaries always fall between elements.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from chatvector.merge.jobs import RowCopy, TensorJob


@dataclass(frozen=True)
class RowPatch:
    """Inside a chunk: elements [at, at + count) (chunk-relative) := chat elements
    [src_first, src_first + count) of `source`'s tensor."""

    at: int
    count: int
    source: RowCopy
    src_first: int


@dataclass(frozen=True)
class Chunk:
    """Elements [first, first + count) of one flattened output tensor."""

    first: int
    count: int
    delta: bool  # apply the job's terms
    raw: bool  # a byte copy of cp is the exact answer
    patches: tuple[RowPatch, ...] = ()


@dataclass(frozen=True)
class Piece:
    job: TensorJob
    chunk: Chunk
    at: int  # byte offset inside the block


@dataclass(frozen=True)
class Block:
    offset: int  # file offset, a multiple of block_bytes
    nbytes: int  # bytes of the file in this block (the last one may be short)
    header: bytes  # the header bytes that fall in this block, at block offset 0
    pieces: tuple[Piece, ...]


def plan_chunks(job: TensorJob, cp_dtype: str, lo: int = 0, hi: int | None = None) -> Iterator[Chunk]:
    """Elements [lo, hi) of `job`, split where the delta rows end. A chunk that keeps cp's values
    in cp's dtype with no row copy inside is raw."""
    numel = job.numel
    hi = numel if hi is None else hi
    row = numel // job.shape[0] if job.shape and job.shape[0] else 1
    d_end = (numel if job.delta_rows is None else job.delta_rows * row) if job.active_terms else 0
    same = job.out_dtype.code == cp_dtype
    copies = sorted(job.row_copies, key=lambda rc: rc.out_row)
    for a, b, delta in ((lo, min(hi, d_end), True), (max(lo, d_end), hi, False)):
        if a >= b:
            continue
        patches = []
        for rc in copies:
            x, y = max(a, rc.out_row * row), min(b, (rc.out_row + 1) * row)
            if x < y:
                patches.append(RowPatch(x - a, y - x, rc, rc.chat_row * row + (x - rc.out_row * row)))
        yield Chunk(a, b - a, delta, same and not delta and not patches, tuple(patches))


def plan_blocks(
    layout: Sequence[TensorJob],
    starts: Sequence[int],
    header: bytes,
    block_bytes: int,
    cp_dtype: Callable[[TensorJob], str],
) -> Iterator[Block]:
    """The blocks of one file whose header is `header` and whose tensors `layout` start at `starts`."""
    size = len(header) + sum(j.nbytes for j in layout)
    j = 0
    for b in range(0, max(size, 1), block_bytes):
        e = min(b + block_bytes, size)
        pieces = []
        while j < len(layout) and starts[j] + layout[j].nbytes <= b:
            j += 1
        k = j
        while k < len(layout) and starts[k] < e:
            job, start = layout[k], starts[k]
            isz = job.out_dtype.itemsize
            lo, hi = (max(b, start) - start) // isz, (min(e, start + job.nbytes) - start) // isz
            if lo < hi:
                for ch in plan_chunks(job, cp_dtype(job), lo, hi):
                    pieces.append(Piece(job, ch, start + ch.first * isz - b))
            k += 1
        yield Block(b, e - b, header[b:e] if b < len(header) else b"", tuple(pieces))


# -- several outputs from one read (run_merges) ----------------------------------------------------------------
@dataclass(frozen=True)
class SharedChunk:
    """The pieces of several outputs' blocks at one offset that cover the same elements of one tensor the same way
    (delta or not, raw or not): their inputs are read once for all of them; only the terms' coefficients (and
    which terms there are) differ. `members`: (output index, that output's piece)."""

    chunk: Chunk  # the first member's (first, count, delta, raw are every member's)
    members: tuple[tuple[int, Piece], ...]


@dataclass(frozen=True)
class TensorWork:
    """Everything the outputs write of one tensor in one block. `defer_release`: two of its chunks may read the
    same input bytes, so its inputs are released only once every chunk is done, never tile by tile (a streaming
    input would be fetched again): the outputs cut its elements differently (one merges rows another keeps), or
    it has row copies (they read chat rows anywhere in the tensor, also rows another chunk merges)."""

    units: tuple[SharedChunk, ...]
    defer_release: bool


def shared_work(blocks: Sequence[Block]) -> list[TensorWork]:
    """The pieces of K blocks at one file offset (one per output, laid out alike), grouped per tensor, in block
    order, then into chunks the outputs share."""
    if len({(b.offset, b.nbytes) for b in blocks}) > 1:
        raise ValueError("internal error: the outputs' blocks do not line up")
    by_tensor: dict[str, dict[tuple, list[tuple[int, Piece]]]] = {}
    for k, block in enumerate(blocks):
        for p in block.pieces:
            key = (p.chunk.first, p.chunk.count, p.chunk.delta, p.chunk.raw, p.at)
            by_tensor.setdefault(p.job.name, {}).setdefault(key, []).append((k, p))
    work = []
    for groups in by_tensor.values():
        units = tuple(SharedChunk(members[0][1].chunk, tuple(members)) for members in groups.values())
        spans = sorted((u.chunk.first, u.chunk.first + u.chunk.count) for u in units)
        overlapping = any(b[0] < a[1] for a, b in zip(spans, spans[1:]))
        copies = any(p.chunk.patches for u in units for _, p in u.members)
        work.append(TensorWork(units, overlapping or (copies and len(units) > 1)))
    return work
