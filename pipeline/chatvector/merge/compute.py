"""The arithmetic, and the two places it runs: CPU worker threads, or an accelerator (CUDA).

Each backend fills file blocks (see blocks.py) into buffers from a pool; the engine hands finished
blocks to the writer in order. With several outputs (run_merges: a λ sweep) a backend fills the K blocks at
one file offset together: each input chunk is read (and, on an accelerator, staged and uploaded) once, and
every output's values are computed from it, with the same operations, in the same order, as alone.

Exactness: fp32 throughout, terms in order, one round-to-nearest-even at the end, each step a
separate elementwise op. Never addcmul, lerp or add(alpha=): those may fuse into an FMA and round
differently on different devices; with separate ops CPU and CUDA agree bit for bit.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from chatvector.conventions import MERGEABLE_CODES
from chatvector.errors import MergeError
from chatvector.merge.blocks import Block, Piece, SharedChunk, shared_work
from chatvector.merge.finite import FiniteWatch
from chatvector.merge.pinned import PinnedLedger, host_buffer, wants_pinned
from chatvector.merge.safetensors_io import InputFile, TensorInfo
from chatvector.merge.validate import source_key
from chatvector.merge.writer import FileWriter

TILE_ELEMS = 1 << 20  # CPU: fp32 working tiles of 4 MiB keep the op sequence in cache


def _as_f32(t: torch.Tensor) -> torch.Tensor:
    """bf16/fp16/fp32 convert to fp32 exactly; fp64 must be rounded to fp32 before any arithmetic."""
    return t.to(torch.float32) if t.dtype == torch.float64 else t


def _f32(t: torch.Tensor, scratch: torch.Tensor) -> torch.Tensor:
    """`t` as fp32: itself if it is fp32, else converted (exactly, or rounded from fp64) into
    `scratch`. Converting into scratch rather than letting a mixed-dtype op promote keeps torch from
    allocating a temporary per op, which glibc then holds on to."""
    if t.dtype == torch.float32:
        return t
    scratch.copy_(t)
    return scratch


def combine_into(out: torch.Tensor, cp: torch.Tensor, terms: list[tuple[float, torch.Tensor, torch.Tensor]],
                 scratch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> None:
    """out := round(float32(cp) + Σ λ·(float32(chat) − float32(base))), terms in order.

    `scratch` is three fp32 tensors of out's length. acc starts as λ₁·d₁ and then adds cp: the same
    fp32 sum as cp + λ₁·d₁, since addition is commutative. λ == 1 skips the (exact) multiply."""
    acc, tmp, tmp2 = scratch
    for i, (lam, base, chat) in enumerate(terms):
        d, spare = (acc, tmp) if i == 0 else (tmp, tmp2)
        d.copy_(chat)
        d.sub_(_f32(base, spare))
        if lam != 1:
            d.mul_(lam)
        acc.add_(_f32(cp, tmp) if i == 0 else tmp)
    out.copy_(acc)


def combine_diffs_into(out: torch.Tensor, cp32: torch.Tensor, terms: list[tuple[float, torch.Tensor]],
                       acc: torch.Tensor, tmp: torch.Tensor) -> None:
    """`combine_into` for one output of several, from differences computed once for all of them:
    out := round(cp32 + Σ λ·d), terms (λ, d = float32(chat) − float32(base)) in order, cp32 = float32(cp).

    The same fp32 operations in the same order as combine_into, so the same bits: d is the same float
    whichever output uses it, copying it is exact, and acc starts as λ₁·d₁ before cp is added."""
    for i, (lam, d) in enumerate(terms):
        target = acc if i == 0 else tmp
        target.copy_(d)
        if lam != 1:
            target.mul_(lam)
        acc.add_(cp32 if i == 0 else tmp)
    out.copy_(acc)


def term_key(term) -> tuple[str, str, str, str]:
    """What a term reads: two terms (of two outputs, or two vectors of one) with the same key have the same
    difference chat − base."""
    return source_key(term.base), term.base.name, source_key(term.chat), term.chat.name


def cast_into(out: torch.Tensor, src: torch.Tensor) -> None:
    """out := round(float32(src)); for bf16/fp16/fp32 sources a direct cast is the same thing."""
    out.copy_(_as_f32(src))


class BufferPool:
    """A fixed set of ALIGN-aligned byte buffers; `get` blocks (checking the writer for errors)
    until one comes back."""

    def __init__(self, nbytes: int, depth: int, writer: FileWriter, pin: bool = False,
                 ledger: PinnedLedger | None = None):
        self.writer = writer
        self._free: queue.Queue = queue.Queue()
        for _ in range(depth):
            self._free.put(host_buffer(nbytes, pin=pin, ledger=ledger))

    def get(self) -> torch.Tensor:
        while True:
            self.writer.check()
            try:
                return self._free.get(timeout=0.1)
            except queue.Empty:
                continue

    def put(self, buf: torch.Tensor) -> None:
        self._free.put(buf)


class Backend:
    """Fills blocks. `submit(blocks, bufs)` starts the blocks at one file offset of every output (one each, into
    its buffer) and returns a handle; `wait(handle)` returns once their bytes are in their buffers;
    `ready(handle)` tells without waiting. With one output the blocks are filled exactly as they always were."""

    name = ""  # what run_merge(backend=...) calls it
    depth = 1  # blocks in flight before the engine waits for the oldest

    def __init__(self, dev: torch.device, inputs: dict[str, InputFile], block_bytes: int, chunk_bytes: int,
                 watches: list[FiniteWatch] | None = None, ledger: PinnedLedger | None = None):
        self.dev = dev
        self.ledger = ledger or PinnedLedger()  # what this backend's own host buffers page-lock
        self.watches = watches or [FiniteWatch()]  # one per output: every value is scanned as it is computed
        self.watch = self.watches[0]
        self.inputs = inputs
        self.block_bytes = block_bytes
        self.tile = max(1, min(TILE_ELEMS, chunk_bytes // 4))

    def info(self, src) -> tuple[InputFile, TensorInfo]:
        f = self.inputs[source_key(src)]
        return f, f.header.tensors[src.name]

    def prefetch(self, block: Block) -> None:
        """Ask the kernel to read a coming block's inputs (matters when the page cache is cold)."""
        for p in block.pieces:
            for f, info in self._used(p):
                s = info.itemsize
                f.willneed(info.start + p.chunk.first * s, info.start + (p.chunk.first + p.chunk.count) * s)

    def _used(self, p: Piece) -> list[tuple[InputFile, TensorInfo]]:
        used = [self.info(p.job.cp)]
        if p.chunk.delta:
            for t in p.job.active_terms:
                used += [self.info(t.base), self.info(t.chat)]
        return used

    def _release(self, p: Piece, lo: int = 0, hi: int | None = None) -> None:
        """Drop the input pages of the piece's elements [lo, hi) from this process's RSS (the page
        cache keeps them)."""
        hi = p.chunk.count if hi is None else hi
        for f, info in self._used(p):
            s = info.itemsize
            f.release(info.start + (p.chunk.first + lo) * s, info.start + (p.chunk.first + hi) * s)

    def _views(self, p: Piece):
        """The piece's inputs as 1-D views of the mapped files: cp, [(λ, base, chat)], patches."""
        ch = p.chunk
        cp_file, cp_info = self.info(p.job.cp)
        cp = cp_file.tensor(cp_info, ch.first, ch.count)
        sources = []
        if ch.delta:
            for t in p.job.active_terms:
                (bf, bi), (cf, ci) = self.info(t.base), self.info(t.chat)
                sources.append((t.coefficient, bf.tensor(bi, ch.first, ch.count), cf.tensor(ci, ch.first, ch.count)))
        patches = []
        for rp in ch.patches:
            f, info = self.info(rp.source.chat)
            patches.append((rp.at, rp.count, f.tensor(info, rp.src_first, rp.count)))
        return cp, sources, patches

    def _shared_views(self, unit: SharedChunk):
        """A shared chunk's inputs, each read once: cp, {term key: (index, base, chat)}, and per member
        (output, piece, [(λ, term index)], patches) in the member's own term order."""
        ch = unit.chunk
        cp_file, cp_info = self.info(unit.members[0][1].job.cp)
        cp = cp_file.tensor(cp_info, ch.first, ch.count)
        diffs: dict[tuple, tuple[int, torch.Tensor, torch.Tensor]] = {}
        members = []
        for k, p in unit.members:
            terms = []
            if ch.delta:
                for t in p.job.active_terms:
                    key = term_key(t)
                    if key not in diffs:
                        (bf, bi), (cf, ci) = self.info(t.base), self.info(t.chat)
                        diffs[key] = (len(diffs), bf.tensor(bi, ch.first, ch.count), cf.tensor(ci, ch.first, ch.count))
                    terms.append((t.coefficient, diffs[key][0]))
            patches = []
            for rp in p.chunk.patches:
                f, info = self.info(rp.source.chat)
                patches.append((rp.at, rp.count, f.tensor(info, rp.src_first, rp.count)))
            members.append((k, p, terms, patches))
        return cp, [(b, c) for _, b, c in diffs.values()], members

    def _write_headers(self, blocks: list[Block], bufs: list[torch.Tensor]) -> None:
        for block, buf in zip(blocks, bufs):
            if block.header:
                memoryview(buf.numpy())[: len(block.header)] = block.header

    def _each_shared_unit(self, blocks: list[Block], bufs: list[torch.Tensor],
                          fill: Callable[[SharedChunk, bool], object]) -> None:
        """Every unit of K outputs' blocks at one offset, in order (chatvector.merge.blocks.shared_work): a raw
        chunk is copied into each output and scanned here, any other goes to `fill(unit, release_now)` (release_now:
        its inputs may be released tile by tile); each work item's inputs are released when it ends."""
        for work in shared_work(blocks):
            try:
                for unit in work.units:
                    if unit.chunk.raw:
                        for k, p in unit.members:
                            self._raw(p, bufs[k])
                            self.watches[k].scan(p.job.name, _out_view(bufs[k], p), p.chunk.first)
                    else:
                        fill(unit, not work.defer_release)
            finally:
                for unit in work.units:
                    for _, p in unit.members:
                        self._release(p)

    def _raw(self, p: Piece, buf: torch.Tensor) -> None:
        cp_file, cp_info = self.info(p.job.cp)
        isz = cp_info.itemsize
        n = p.chunk.count * isz
        buf[p.at : p.at + n].copy_(cp_file.bytes(cp_info.start + p.chunk.first * isz, n))

    def submit(self, blocks: list[Block], bufs: list[torch.Tensor]):
        raise NotImplementedError

    def wait(self, handle) -> None:
        raise NotImplementedError

    def ready(self, handle) -> bool:
        raise NotImplementedError

    def shutdown(self) -> None:
        """Stop workers and release what the backend holds; never raises."""


def _out_view(buf: torch.Tensor, p: Piece) -> torch.Tensor:
    isz = p.job.out_dtype.itemsize
    return buf[p.at : p.at + p.chunk.count * isz].view(getattr(torch, p.job.dtype))


class CpuBackend(Backend):
    """Blocks are filled by worker threads, one per core torch would use, each running torch
    single-threaded over cache-sized tiles. torch's own intra-op threads are not used: OpenMP's idle
    workers spin, and on a small machine they starve the writer and hasher threads."""

    name = "cpu"

    def __init__(self, dev, inputs, block_bytes, chunk_bytes, watches=None, ledger=None):
        super().__init__(dev, inputs, block_bytes, chunk_bytes, watches, ledger)
        self.threads = max(1, torch.get_num_threads())
        self.depth = self.threads
        self.local = threading.local()
        self.executor = ThreadPoolExecutor(self.threads, thread_name_prefix="merge-compute", initializer=_single_threaded)

    def submit(self, blocks: list[Block], bufs: list[torch.Tensor]) -> Future:
        if len(blocks) == 1:
            return self.executor.submit(self._fill, blocks[0], bufs[0])
        return self.executor.submit(self._fill_shared, blocks, bufs)

    def wait(self, handle: Future) -> None:
        handle.result()

    def ready(self, handle: Future) -> bool:
        return handle.done()

    def _fill(self, block: Block, buf: torch.Tensor) -> None:
        if block.header:
            memoryview(buf.numpy())[: len(block.header)] = block.header
        scratch = getattr(self.local, "scratch", None)
        if scratch is None:
            scratch = self.local.scratch = tuple(torch.empty(self.tile) for _ in range(3))
        for p in block.pieces:
            try:
                out = _out_view(buf, p)
                if p.chunk.raw:
                    self._raw(p, buf)
                    self.watch.scan(p.job.name, out, p.chunk.first)
                    continue
                cp, sources, patches = self._views(p)
                for s in range(0, p.chunk.count, self.tile):
                    e = min(p.chunk.count, s + self.tile)
                    if sources:
                        terms = [(lam, b[s:e], c[s:e]) for lam, b, c in sources]
                        combine_into(out[s:e], cp[s:e], terms, tuple(t[: e - s] for t in scratch))
                    else:
                        cast_into(out[s:e], cp[s:e])
                    if not patches:  # while the tile is in cache; patched pieces are scanned once patched
                        self.watch.scan(p.job.name, out[s:e], p.chunk.first + s)
                    self._release(p, s, e)  # keeps RSS to a few tiles of input
                for at, n, src in patches:
                    cast_into(out[at : at + n], src)
                if patches:
                    self.watch.scan(p.job.name, out, p.chunk.first)
                del cp, sources, patches
            finally:
                self._release(p)

    def _fill_shared(self, blocks: list[Block], bufs: list[torch.Tensor]) -> None:
        """The blocks of K outputs at one offset: per tile, each term's difference chat − base is computed once
        and every output's values from it (combine_diffs_into)."""
        self._write_headers(blocks, bufs)
        scratch = getattr(self.local, "shared", None)
        if scratch is None:
            scratch = self.local.shared = _SharedScratch(self.tile)
        self._each_shared_unit(blocks, bufs, lambda unit, release_now: self._fill_unit(
            unit, bufs, scratch, tile_release=release_now))

    def _fill_unit(self, unit: SharedChunk, bufs: list[torch.Tensor], scratch: "_SharedScratch",
                   tile_release: bool) -> None:
        cp, pairs, members = self._shared_views(unit)
        outs = [_out_view(bufs[k], p) for k, p, _, _ in members]
        diffs = scratch.diffs(len(pairs))
        for s in range(0, unit.chunk.count, self.tile):
            e = min(unit.chunk.count, s + self.tile)
            n = e - s
            if pairs:
                cp32 = _f32(cp[s:e], scratch.cp[:n])
                for d, (base, chat) in zip(diffs, pairs):
                    d[:n].copy_(chat[s:e])
                    d[:n].sub_(_f32(base[s:e], scratch.spare[:n]))
            for (k, p, terms, patches), out in zip(members, outs):
                if terms:
                    combine_diffs_into(out[s:e], cp32, [(lam, diffs[i][:n]) for lam, i in terms], scratch.acc[:n],
                                       scratch.tmp[:n])
                else:
                    cast_into(out[s:e], cp[s:e])
                if not patches:  # while the tile is in cache; patched pieces are scanned once patched
                    self.watches[k].scan(p.job.name, out[s:e], p.chunk.first + s)
            if tile_release:
                for _, p, _, _ in members:
                    self._release(p, s, e)
        for (k, p, _, patches), out in zip(members, outs):
            for at, n, src in patches:
                cast_into(out[at : at + n], src)
            if patches:
                self.watches[k].scan(p.job.name, out, p.chunk.first)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        torch.set_num_threads(self.threads)  # the workers set torch's process-wide count to 1


class _SharedScratch:
    """One worker's fp32 tiles for several outputs: cp as fp32, a conversion spare, the accumulator and a
    temporary, and one difference per distinct term (grown on demand)."""

    def __init__(self, tile: int):
        self.tile = tile
        self.cp, self.spare, self.acc, self.tmp = (torch.empty(tile) for _ in range(4))
        self._diffs: list[torch.Tensor] = []

    def diffs(self, n: int) -> list[torch.Tensor]:
        while len(self._diffs) < n:
            self._diffs.append(torch.empty(self.tile))
        return self._diffs[:n]


def _single_threaded() -> None:
    torch.set_num_threads(1)


class StagedBackend(Backend):
    """Arithmetic on an accelerator. Each piece's inputs are copied from the page cache into pinned
    host buffers, sent to the device on a side stream, combined there, and copied back (async) into
    the block's pinned buffer; two staging slots alternate so that staging the next piece overlaps
    the device work on this one. A block is done when the event recorded after its last copy back
    has fired.

    Written for CUDA; on a CPU device it runs the same steps synchronously (the tests use that)."""

    name = "staged"
    SLOTS = 2
    depth = 2

    def __init__(self, dev, inputs, block_bytes, chunk_bytes, watches=None, ledger=None):
        super().__init__(dev, inputs, block_bytes, chunk_bytes, watches, ledger)
        self.cuda = dev.type == "cuda"
        elems = max(1, block_bytes // 2)  # the most elements a piece can have
        # staging buffers sized once for the widest input: never regrown (a regrown pinned buffer stays cached)
        itemsize = input_itemsize(inputs)
        with self._on_device():
            self.copy_stream = torch.cuda.Stream(dev) if self.cuda else None
            self.slots = [_Slot(dev, elems, self.cuda, itemsize, wants_pinned(dev), self.ledger)
                          for _ in range(self.SLOTS)]
        self.k = 0

    def _on_device(self):
        return torch.cuda.device(self.dev) if self.cuda else contextlib.nullcontext()

    def submit(self, blocks: list[Block], bufs: list[torch.Tensor]):
        """Returns (event or None, the blocks' pending finiteness checks)."""
        checks: list[tuple[torch.Tensor, int, str, int, torch.Tensor]] = []
        with self._on_device():
            self._write_headers(blocks, bufs)
            if len(blocks) == 1:
                block, buf = blocks[0], bufs[0]
                for p in block.pieces:
                    if p.chunk.raw:
                        try:
                            self._raw(p, buf)
                            self.watch.scan(p.job.name, _out_view(buf, p), p.chunk.first)
                        finally:
                            self._release(p)
                    else:
                        checks.append(self._piece(p, buf))
            else:
                self._each_shared_unit(blocks, bufs, lambda unit, release_now: checks.extend(
                    self._unit(unit, bufs, release_now=release_now)))
            if not self.cuda:
                return None, checks
            event = torch.cuda.Event()
            event.record(torch.cuda.current_stream(self.dev))
            return event, checks

    def _piece(self, p: Piece, buf: torch.Tensor) -> tuple[torch.Tensor, int, str, int, torch.Tensor]:
        slot = self.slots[self.k % self.SLOTS]
        self.k += 1
        slot.wait_staging_free()
        try:
            cp, sources, patches = self._views(p)
            # 1. page cache -> pinned host buffers (CPU; the device may still work on the other slot)
            host = [slot.stage(0, cp)]
            for i, (_, b, c) in enumerate(sources):
                host += [slot.stage(1 + 2 * i, b), slot.stage(2 + 2 * i, c)]
            # 2. host -> device on the copy stream, once the device is done with this slot
            dev_in = slot.upload(host, self.copy_stream)
            patches = [(at, n, src.to(self.dev)) for at, n, src in patches]
            del cp, sources
        finally:
            self._release(p)
        # 3. compute on the current stream after the upload; 4. copy back into the pinned block
        if self.cuda:
            torch.cuda.current_stream(self.dev).wait_event(slot.uploaded)
        out_host = _out_view(buf, p)
        out = slot.out(out_host.dtype, p.chunk.count)
        n_terms = (len(dev_in) - 1) // 2
        if n_terms:
            lams = [t.coefficient for t in p.job.active_terms]
            terms = [(lams[i], dev_in[1 + 2 * i], dev_in[2 + 2 * i]) for i in range(n_terms)]
            combine_into(out, dev_in[0], terms, tuple(t[: p.chunk.count] for t in slot.scratch))
        else:
            cast_into(out, dev_in[0])
        for at, n, src in patches:
            cast_into(out[at : at + n], src)
        finite = torch.isfinite(out).all()  # on the device, read once the block is done: no sync here
        out_host.copy_(out, non_blocking=self.cuda)
        slot.finish(self.cuda)
        return finite, 0, p.job.name, p.chunk.first, out_host

    def _unit(self, unit: SharedChunk, bufs: list[torch.Tensor], release_now: bool
              ) -> list[tuple[torch.Tensor, int, str, int, torch.Tensor]]:
        """A chunk several outputs share: its inputs staged and uploaded once, then each output combined on the
        device from them and copied back into its own block. chat − base is recomputed per output on the
        device (cheaper than holding one device buffer per term and output; the same bits either way)."""
        slot = self.slots[self.k % self.SLOTS]
        self.k += 1
        slot.wait_staging_free()
        count = unit.chunk.count
        try:
            cp, pairs, members = self._shared_views(unit)
            host = [slot.stage(0, cp)]
            for i, (b, c) in enumerate(pairs):
                host += [slot.stage(1 + 2 * i, b), slot.stage(2 + 2 * i, c)]
            dev_in = slot.upload(host, self.copy_stream)
            members = [(k, p, terms, [(at, n, src.to(self.dev)) for at, n, src in patches])
                       for k, p, terms, patches in members]
            del cp, pairs
        finally:
            if release_now:
                for _, p in unit.members:
                    self._release(p)
        if self.cuda:
            torch.cuda.current_stream(self.dev).wait_event(slot.uploaded)
        checks = []
        for k, p, terms, patches in members:  # one stream: each output's kernels follow the last one's copy back
            out_host = _out_view(bufs[k], p)
            out = slot.out(out_host.dtype, count)
            if terms:
                combine_into(out, dev_in[0], [(lam, dev_in[1 + 2 * i], dev_in[2 + 2 * i]) for lam, i in terms],
                             tuple(t[:count] for t in slot.scratch))
            else:
                cast_into(out, dev_in[0])
            for at, n, src in patches:
                cast_into(out[at : at + n], src)
            finite = torch.isfinite(out).all()
            out_host.copy_(out, non_blocking=self.cuda)
            checks.append((finite, k, p.job.name, p.chunk.first, out_host))
        slot.finish(self.cuda)
        return checks

    def wait(self, handle) -> None:
        event, checks = handle
        if event is not None:
            event.synchronize()
        if checks:
            flags = torch.stack([flag for flag, *_ in checks]).cpu()
            for ok, (_, k, name, first, values) in zip(flags.tolist(), checks):
                if not ok:  # the copy back is done: count on the host
                    self.watches[k].record(name, values, first)
                self.watches[k].add(name, values.numel())

    def ready(self, handle) -> bool:
        event = handle[0]
        return event is None or event.query()

    def shutdown(self) -> None:
        if self.cuda:
            try:
                torch.cuda.synchronize(self.dev)
            except RuntimeError:
                pass


class _Slot:
    """One set of staging buffers (pinned host + device), grown on demand, reused across pieces."""

    def __init__(self, dev: torch.device, elems: int, cuda: bool, itemsize: int = 4, pin: bool | None = None,
                 ledger: PinnedLedger | None = None):
        self.dev, self.elems, self.cuda = dev, elems, cuda
        self.itemsize = itemsize  # of the widest input: every staging buffer holds a piece of any input
        self.pin = cuda if pin is None else pin
        self.ledger = ledger
        self.host: list[torch.Tensor] = []
        self.device_in: list[torch.Tensor] = []
        self.scratch = tuple(torch.empty(elems, dtype=torch.float32, device=dev) for _ in range(3))
        self._out = torch.empty(elems * 4, dtype=torch.uint8, device=dev)
        self.uploaded = None  # event: this slot's host buffers are free again
        self.done = None  # event: the device is done with this slot's buffers

    def wait_staging_free(self) -> None:
        if self.uploaded is not None:
            self.uploaded.synchronize()

    def stage(self, i: int, src: torch.Tensor) -> torch.Tensor:
        nbytes = self.elems * max(self.itemsize, src.element_size())
        while len(self.host) <= i:
            self.host.append(torch.empty(0, dtype=torch.uint8))
            self.device_in.append(torch.empty(0, dtype=torch.uint8, device=self.dev))
        if self.host[i].numel() < nbytes:
            if self.cuda:
                torch.cuda.synchronize(self.dev)  # the old buffers may still be in use
            self.host[i] = host_buffer(nbytes, pin=self.pin, ledger=self.ledger)
            self.device_in[i] = torch.empty(nbytes, dtype=torch.uint8, device=self.dev)
        view = self.host[i][: src.numel() * src.element_size()].view(src.dtype)
        view.copy_(src)
        return view

    def upload(self, host: list[torch.Tensor], stream) -> list[torch.Tensor]:
        dev_views = [self.device_in[i][: h.numel() * h.element_size()].view(h.dtype) for i, h in enumerate(host)]
        if not self.cuda:
            for d, h in zip(dev_views, host):
                d.copy_(h)
            return dev_views
        with torch.cuda.stream(stream):
            if self.done is not None:
                stream.wait_event(self.done)
            for d, h in zip(dev_views, host):
                d.copy_(h, non_blocking=True)
            self.uploaded = torch.cuda.Event()
            self.uploaded.record(stream)
        return dev_views

    def out(self, dtype: torch.dtype, count: int) -> torch.Tensor:
        return self._out[: count * torch.empty(0, dtype=dtype).element_size()].view(dtype)

    def finish(self, cuda: bool) -> None:
        if cuda:
            self.done = torch.cuda.Event()
            self.done.record(torch.cuda.current_stream(self.dev))


def input_itemsize(inputs: dict[str, InputFile]) -> int:
    """The widest item size among the inputs' mergeable tensors (fp64: 8), 2 when there are none."""
    sizes = [t.itemsize for f in inputs.values() for t in f.header.tensors.values() if t.dtype in MERGEABLE_CODES]
    return max(sizes, default=2)


BACKENDS = ("auto", "cpu", "staged")


def backend_class(kind: str, dev: torch.device) -> type[Backend]:
    """The backend `run_merge(backend=kind)` gets on `dev`: "auto" is "staged" on CUDA and "cpu" on
    the CPU; "cpu" (worker threads) runs on the CPU device only; "staged" runs on any device."""
    if kind not in BACKENDS:
        raise MergeError(f"backend {kind!r} is not one of {', '.join(BACKENDS)}")
    if kind == "auto":
        kind = "staged" if dev.type == "cuda" else "cpu"
    if kind == "cpu" and dev.type != "cpu":
        raise MergeError(f"backend 'cpu' computes on the CPU; it cannot run on device {dev}")
    return CpuBackend if kind == "cpu" else StagedBackend
