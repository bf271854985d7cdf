"""The merge loop: validate, lay out the files, then stream every tensor through the arithmetic in
chunks and hand the bytes to the writer thread.

Memory: inputs are read through read-only mmaps (page cache, not anonymous memory) and their pages
are dropped from RSS once used; outputs go through a small pool of chunk buffers that the writer
returns. So peak memory depends on `chunk_bytes`, not on the model.

Arithmetic (see jobs.py): fp32, terms in order, one round-to-nearest-even at the end, each step a
separate elementwise op (no fused multiply-add), so the CPU and CUDA results agree bit for bit.
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import shutil
import threading
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from huggingface_hub.utils import tqdm

from pipeline.errors import MergeError
from pipeline.merge.jobs import OUTPUT_DTYPES, MergeResult, RowCopy, TensorJob
from pipeline.merge.safetensors_io import ST_DTYPES, Header, InputFile, TensorInfo, build_header, fsync_dir
from pipeline.merge.sharding import (
    INDEX_FILE,
    file_layout,
    index_json,
    is_owned_output,
    plan_shards,
    shard_filenames,
)
from pipeline.merge.validate import check_jobs, load_headers, source_key
from pipeline.merge.writer import FileWriter

log = logging.getLogger(__name__)

TILE_ELEMS = 1 << 20  # CPU: fp32 working tiles of 4 MiB stay in cache across the four passes
POOL_DEPTH = 3  # output chunk buffers in flight between the compute and writer threads


def run_merge(
    jobs: Sequence[TensorJob],
    out_dir: Path,
    *,
    shard_size: int,
    device: str = "auto",
    chunk_bytes: int = 64 << 20,
    progress: bool = True,
    metadata: dict[str, str] | None = None,
) -> MergeResult:
    """Merge `jobs` into safetensors files in `out_dir` and return what was written.

    One file `model.safetensors` if everything fits `shard_size` bytes, else
    `model-0000i-of-0000N.safetensors` plus `model.safetensors.index.json`. Files appear under their
    final names only when all of them are complete and fsynced; older `model*.safetensors*` files in
    `out_dir` that this run did not write are removed then, so loaders never mix two merges.
    """
    t0 = time.perf_counter()
    dev = resolve_device(device)
    if chunk_bytes <= 0:
        raise MergeError(f"chunk_bytes must be positive, got {chunk_bytes}")
    meta = _file_metadata(metadata)
    headers = load_headers(jobs)
    check_jobs(jobs, headers)
    shards = plan_shards(jobs, shard_size)
    names = shard_filenames(len(shards))
    out_dir = Path(out_dir)
    total = sum(j.nbytes for j in jobs)
    _prepare_out_dir(out_dir, names, headers, total)

    inputs: dict[str, InputFile] = {}
    writer: FileWriter | None = None
    compute: _Compute | None = None
    bar = tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc="merge", disable=not progress)
    try:
        for key, header in headers.items():
            inputs[key] = InputFile(header)
        writer = FileWriter(out_dir, on_bytes=bar.update)
        compute = (_StagedCompute if dev.type == "cuda" else _CpuCompute)(dev, inputs, writer, chunk_bytes)
        order = [job for shard in shards for job in file_layout(shard)]
        i = 0
        for shard, name in zip(shards, names):
            layout = file_layout(shard)
            entries = [(j.name, OUTPUT_DTYPES[j.dtype][0], tuple(j.shape), j.nbytes) for j in layout]
            head, starts = build_header(entries, meta)
            writer.open_file(name, len(head) + sum(e[3] for e in entries), head)
            for job, start in zip(layout, starts):
                if i + 1 < len(order):
                    compute.prefetch(order[i + 1])
                compute.run_job(job, start)
                i += 1
            compute.flush()
            writer.close_file()
        compute.flush()
        writer.publish()
    except BaseException:
        if compute is not None:
            compute.shutdown()
            compute = None
        if writer is not None:
            writer.abort()
        raise
    finally:
        if compute is not None:
            compute.shutdown()
        bar.close()
        for f in inputs.values():
            f.close()

    files = dict(writer.digests)
    if len(names) > 1:
        files[INDEX_FILE] = _write_small_file(out_dir, INDEX_FILE, index_json(shards, names))
    _remove_stale_outputs(out_dir, set(files))
    seconds = time.perf_counter() - t0
    log.info("merged %d tensors (%d bytes) into %d file(s) in %s on %s in %.1f s", len(jobs), total, len(names), out_dir, dev, seconds)
    return MergeResult(files=files, total_bytes=total, device=_device_name(dev), seconds=seconds)


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; "cuda" without CUDA is an error, not a fallback."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        dev = None
    if dev is None or dev.type not in ("cpu", "cuda"):
        raise MergeError(f"device {device!r} is not one of auto, cpu, cuda, cuda:N")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise MergeError(f"--device {device} was asked for but CUDA is not available")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise MergeError(f"--device {device} was asked for but only {torch.cuda.device_count()} CUDA device(s) exist")
    return dev


def _device_name(dev: torch.device) -> str:
    return str(dev)


def _file_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    meta = dict(metadata or {})
    bad = [k for k, v in meta.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise MergeError(f"safetensors metadata must map strings to strings; bad entries: {bad[:10]}")
    meta["format"] = "pt"
    return meta


def _prepare_out_dir(out_dir: Path, names: list[str], headers: dict[str, Header], total: int) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MergeError(f"cannot create output folder {out_dir}: {e.strerror or e}") from None
    inputs = {os.path.realpath(k) for k in headers}
    clash = sorted(p for p in (os.path.realpath(out_dir / n) for n in [*names, INDEX_FILE]) if p in inputs)
    clash += sorted(k for k in inputs if os.path.dirname(k) == os.path.realpath(out_dir) and is_owned_output(os.path.basename(k)))
    if clash:
        raise MergeError(f"the output folder {out_dir} holds input file {clash[0]}; write the merge to another folder")
    free = shutil.disk_usage(out_dir).free
    if free < total:
        raise MergeError(f"the merge needs {total / 1e9:.2f} GB in {out_dir} but only {free / 1e9:.2f} GB is free")


def _write_small_file(out_dir: Path, name: str, data: bytes) -> str:
    import hashlib

    temp = out_dir / f".{name}.partial-{os.getpid()}"
    try:
        with open(temp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, out_dir / name)
    except OSError as e:
        temp.unlink(missing_ok=True)
        raise MergeError(f"writing {out_dir / name} failed: {e.strerror or e}") from None
    fsync_dir(out_dir)
    return hashlib.sha256(data).hexdigest()


def _remove_stale_outputs(out_dir: Path, keep: set[str]) -> None:
    for entry in os.scandir(out_dir):
        if entry.is_file() and is_owned_output(entry.name) and entry.name not in keep:
            log.info("removing %s left by an earlier merge", entry.path)
            try:
                os.unlink(entry.path)
            except OSError:
                pass


# ------------------------------------------------------------------------------------------------
# Chunk planning: pure, testable without I/O.


@dataclass(frozen=True)
class RowPatch:
    """Inside one chunk: output elements [at, at + count) (chunk-relative) := chat elements
    [src_first, src_first + count) of `source`."""

    at: int
    count: int
    source: RowCopy
    src_first: int


@dataclass(frozen=True)
class Chunk:
    """A flat element range [first, first + count) of one output tensor."""

    first: int
    count: int
    delta: bool  # apply the job's terms
    raw: bool  # a byte copy of cp is the exact answer
    patches: tuple[RowPatch, ...] = ()


def plan_chunks(job: TensorJob, cp_dtype: str, chunk_elems: int) -> Iterator[Chunk]:
    """Split a job into chunks of at most `chunk_elems` elements: the delta rows first, then the rows
    that keep cp's values; a chunk that keeps cp's values in cp's dtype and has no row copy is raw."""
    numel = job.numel
    row = numel // job.shape[0] if job.shape and job.shape[0] else 1
    terms = bool(job.active_terms)
    d_end = (numel if job.delta_rows is None else job.delta_rows * row) if terms else 0
    same = OUTPUT_DTYPES[job.dtype][0] == cp_dtype
    copies = sorted(job.row_copies, key=lambda rc: rc.out_row)
    for seg_start, seg_end, delta in ((0, d_end, True), (d_end, numel, False)):
        for first in range(seg_start, seg_end, chunk_elems):
            count = min(chunk_elems, seg_end - first)
            patches = []
            for rc in copies:
                a = max(first, rc.out_row * row)
                b = min(first + count, (rc.out_row + 1) * row)
                if a < b:
                    patches.append(RowPatch(a - first, b - a, rc, rc.chat_row * row + (a - rc.out_row * row)))
            yield Chunk(first, count, delta, same and not delta and not patches, tuple(patches))


# ------------------------------------------------------------------------------------------------
# Compute backends.


def _as_f32(t: torch.Tensor) -> torch.Tensor:
    """bf16/fp16/fp32 take part in fp32 ops exactly as they are (promotion is exact); fp64 must be
    rounded to fp32 first, or the op would compute in fp64."""
    return t.to(torch.float32) if t.dtype == torch.float64 else t


def combine_into(out: torch.Tensor, cp: torch.Tensor, terms: list[tuple[float, torch.Tensor, torch.Tensor]], acc: torch.Tensor, tmp: torch.Tensor) -> None:
    """out := round(cp + Σ λ·(chat − base)), fp32, in order; acc/tmp are fp32 scratch of out's length.
    Separate sub / mul / add ops, never addcmul, lerp or add(alpha=): those may fuse into an FMA and
    round differently on different devices. acc starts as λ₁·d₁ and then adds cp, which is the same
    fp32 sum as cp + λ₁·d₁ (addition is commutative)."""
    lam, base, chat = terms[0]
    acc.copy_(chat)
    acc.sub_(_as_f32(base))
    if lam != 1:
        acc.mul_(lam)
    acc.add_(_as_f32(cp))
    for lam, base, chat in terms[1:]:
        tmp.copy_(chat)
        tmp.sub_(_as_f32(base))
        if lam != 1:
            tmp.mul_(lam)
        acc.add_(tmp)
    out.copy_(acc)


def cast_into(out: torch.Tensor, src: torch.Tensor) -> None:
    """out := round(float32(src)): a direct cast is the same for bf16/fp16/fp32 sources."""
    out.copy_(_as_f32(src))


class _Compute:
    """Turns jobs into chunks of output bytes for the writer. Subclasses differ in where the
    arithmetic runs."""

    def __init__(self, dev: torch.device, inputs: dict[str, InputFile], writer: FileWriter, chunk_bytes: int):
        self.dev = dev
        self.inputs = inputs
        self.writer = writer
        self.chunk_bytes = chunk_bytes

    def _info(self, src) -> tuple[InputFile, TensorInfo]:
        f = self.inputs[source_key(src)]
        return f, f.header.tensors[src.name]

    def prefetch(self, job: TensorJob) -> None:
        """Start reading the next job's inputs from disk while this one computes (cold cache)."""
        f, info = self._info(job.cp)
        f.willneed(info.start, info.end)
        for t in job.active_terms:
            for src in (t.base, t.chat):
                f, info = self._info(src)
                f.willneed(info.start, info.end)

    def run_job(self, job: TensorJob, file_offset: int) -> None:
        out_code = OUTPUT_DTYPES[job.dtype][0]
        isz = OUTPUT_DTYPES[job.dtype][1]
        out_dtype = ST_DTYPES[out_code][0]
        cp_file, cp_info = self._info(job.cp)
        terms = [(t.coefficient, *self._info(t.base), *self._info(t.chat)) for t in job.active_terms]
        chunk_elems = max(1, self.chunk_bytes // isz)
        for ch in plan_chunks(job, cp_info.dtype, chunk_elems):
            offset = file_offset + ch.first * isz
            if ch.raw:
                a, b = cp_info.start + ch.first * isz, cp_info.start + (ch.first + ch.count) * isz
                self.emit_raw(offset, cp_file.raw(a, b), lambda f=cp_file, a=a, b=b: f.release(a, b))
                continue
            cp = cp_file.tensor(cp_info, ch.first, ch.count)
            used = [(cp_file, cp_info)]
            sources = []
            if ch.delta:
                for lam, bf, bi, cf, ci in terms:
                    sources.append((lam, bf.tensor(bi, ch.first, ch.count), cf.tensor(ci, ch.first, ch.count)))
                    used += [(bf, bi), (cf, ci)]
            patches = []
            for p in ch.patches:
                f, info = self._info(p.source.chat)
                patches.append((p.at, p.count, f.tensor(info, p.src_first, p.count)))
            self.compute(offset, ch.count, out_dtype, isz, cp, sources, patches, _releaser(used, ch.first, ch.count))

    def emit_raw(self, offset: int, data: memoryview, release) -> None:
        self.writer.write(offset, data, release)

    def compute(self, offset, count, out_dtype, isz, cp, sources, patches, release) -> None:
        """Compute one chunk and hand it to the writer (possibly later, but in order); call
        `release()` once the input views are no longer read."""
        raise NotImplementedError

    def flush(self) -> None:
        """Hand every computed chunk to the writer (end of a file)."""

    def shutdown(self) -> None:
        """Stop any worker and release what the backend holds; never raises."""


def _releaser(used: list[tuple[InputFile, TensorInfo]], first: int, count: int):
    def release() -> None:
        for f, info in used:
            s = info.itemsize
            f.release(info.start + first * s, info.start + (first + count) * s)

    return release


class _BufferPool:
    """A fixed set of byte buffers; `get` blocks (checking the writer for errors) until one is back."""

    def __init__(self, nbytes: int, depth: int, writer: FileWriter, pin: bool = False):
        self.writer = writer
        self._free: queue.Queue = queue.Queue()
        for _ in range(depth):
            self._free.put(torch.empty(nbytes, dtype=torch.uint8, pin_memory=pin))

    def get(self) -> torch.Tensor:
        while True:
            self.writer.check()
            try:
                return self._free.get(timeout=0.1)
            except queue.Empty:
                continue

    def put(self, buf: torch.Tensor) -> None:
        self._free.put(buf)


class _CpuCompute(_Compute):
    """Arithmetic on the CPU. Chunks are computed by a few worker threads (one per core torch would
    use), each running torch single-threaded over cache-sized tiles, and handed to the writer in
    order. (torch's own intra-op threads are not used: OpenMP's idle workers spin and would starve the
    writer thread on a small machine.)"""

    def __init__(self, dev, inputs, writer, chunk_bytes):
        super().__init__(dev, inputs, writer, chunk_bytes)
        self.workers = max(1, torch.get_num_threads())
        self.tile = max(1, min(TILE_ELEMS, chunk_bytes // 2))
        self.pool = _BufferPool(max(4, chunk_bytes), self.workers + 2, writer)
        self.local = threading.local()
        self.executor = ThreadPoolExecutor(self.workers, thread_name_prefix="merge-compute", initializer=_single_threaded)
        self.pending: deque = deque()  # (future or None, offset, data or buf, nbytes, release)

    def emit_raw(self, offset, data, release) -> None:
        self.pending.append((None, offset, data, len(data), release))
        self._drain(self.workers)

    def compute(self, offset, count, out_dtype, isz, cp, sources, patches, release) -> None:
        buf = self.pool.get()
        fut = self.executor.submit(self._work, buf, count, out_dtype, isz, cp, sources, patches, release)
        self.pending.append((fut, offset, buf, count * isz, None))
        self._drain(self.workers)

    def _work(self, buf, count, out_dtype, isz, cp, sources, patches, release) -> None:
        try:
            scratch = getattr(self.local, "scratch", None)
            if scratch is None:
                scratch = self.local.scratch = (torch.empty(self.tile), torch.empty(self.tile))
            acc, tmp = scratch
            out = buf[: count * isz].view(out_dtype)
            for s in range(0, count, self.tile):
                e = min(count, s + self.tile)
                if sources:
                    terms = [(lam, b[s:e], c[s:e]) for lam, b, c in sources]
                    combine_into(out[s:e], cp[s:e], terms, acc[: e - s], tmp[: e - s])
                else:
                    cast_into(out[s:e], cp[s:e])
            for at, n, src in patches:
                cast_into(out[at : at + n], src)
        finally:
            release()

    def _drain(self, keep: int) -> None:
        """Hand finished chunks to the writer, in order; wait only while more than `keep` are queued."""
        while self.pending:
            fut = self.pending[0][0]
            if fut is not None and len(self.pending) <= keep and not fut.done():
                return
            fut, offset, data, nbytes, release = self.pending.popleft()
            if fut is not None:
                try:
                    fut.result()
                except BaseException:
                    self.pool.put(data)
                    raise
                buf = data
                data, release = memoryview(buf.numpy())[:nbytes], (lambda b=buf: self.pool.put(b))
            self.writer.write(offset, data, release)

    def flush(self) -> None:
        self._drain(0)

    def shutdown(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.pending.clear()
        torch.set_num_threads(self.workers)  # the workers set torch's process-wide count to 1


def _single_threaded() -> None:
    torch.set_num_threads(1)


class _StagedCompute(_Compute):
    """Arithmetic on an accelerator. Each chunk's inputs are copied from the page cache into pinned
    host buffers, sent to the device on a side stream, combined there, and copied back into a pinned
    output buffer; two slots alternate so that staging chunk k+1 overlaps the device work on chunk k,
    and results go to the writer in order once their copy back has finished.

    Written for CUDA; on a CPU device it runs the same steps synchronously (used by the tests)."""

    SLOTS = 2

    def __init__(self, dev, inputs, writer, chunk_bytes):
        super().__init__(dev, inputs, writer, chunk_bytes)
        self.cuda = dev.type == "cuda"
        self.chunk_elems = max(1, chunk_bytes // 2)
        self.pool = _BufferPool(max(4, chunk_bytes), POOL_DEPTH, writer, pin=self.cuda)
        self.copy_stream = torch.cuda.Stream(dev) if self.cuda else None
        self.slots = [_Slot(dev, self.chunk_elems, self.cuda) for _ in range(self.SLOTS)]
        self.k = 0
        self.pending: deque = deque()  # (event or None, offset, data, release)

    def emit_raw(self, offset, data, release) -> None:
        self.pending.append((None, offset, data, release))
        self._drain(self.SLOTS)

    def compute(self, offset, count, out_dtype, isz, cp, sources, patches, release) -> None:
        with torch.cuda.device(self.dev) if self.cuda else contextlib.nullcontext():
            self._compute(offset, count, out_dtype, isz, cp, sources, patches, release)

    def _compute(self, offset, count, out_dtype, isz, cp, sources, patches, release) -> None:
        slot = self.slots[self.k % self.SLOTS]
        self.k += 1
        slot.wait_staging_free()
        # 1. page cache -> pinned host buffers (CPU copies; the device may still work on the other slot)
        host = [slot.stage(0, cp)]
        for i, (_, b, c) in enumerate(sources):
            host += [slot.stage(1 + 2 * i, b), slot.stage(2 + 2 * i, c)]
        # 2. host -> device on the copy stream, once the device is done with this slot's buffers
        dev_in = slot.upload(host, self.copy_stream)
        patches = [(at, n, src.to(self.dev)) for at, n, src in patches]
        release()
        # 3. compute on the default stream after the upload; 4. copy back into a pinned buffer
        buf = self.pool.get()
        out_host = buf[: count * isz].view(out_dtype)
        if self.cuda:
            torch.cuda.current_stream(self.dev).wait_event(slot.uploaded)
        out = slot.out(out_dtype, count)
        if sources:
            terms = [(lam, dev_in[1 + 2 * i], dev_in[2 + 2 * i]) for i, (lam, _, _) in enumerate(sources)]
            combine_into(out, dev_in[0], terms, slot.acc[:count], slot.tmp[:count])
        else:
            cast_into(out, dev_in[0])
        for at, n, src in patches:
            cast_into(out[at : at + n], src)
        out_host.copy_(out, non_blocking=self.cuda)
        event = slot.finish(self.cuda)
        self.pending.append((event, offset, memoryview(buf.numpy())[: count * isz], lambda: self.pool.put(buf)))
        self._drain(self.SLOTS)

    def _drain(self, keep: int) -> None:
        """Hand finished chunks to the writer, in order; block only when more than `keep` wait."""
        while self.pending:
            event = self.pending[0][0]
            if event is not None and len(self.pending) <= keep and not event.query():
                return
            if event is not None:
                event.synchronize()
            _, offset, data, release = self.pending.popleft()
            self.writer.write(offset, data, release)

    def flush(self) -> None:
        self._drain(0)

    def shutdown(self) -> None:
        self.pending.clear()
        if self.cuda:
            try:
                torch.cuda.synchronize(self.dev)
            except RuntimeError:
                pass


class _Slot:
    """One set of staging buffers (pinned host + device), grown on demand, reused across chunks."""

    def __init__(self, dev: torch.device, elems: int, cuda: bool):
        self.dev, self.elems, self.cuda = dev, elems, cuda
        self.host: list[torch.Tensor] = []
        self.device_in: list[torch.Tensor] = []
        self.acc = torch.empty(elems, dtype=torch.float32, device=dev)
        self.tmp = torch.empty(elems, dtype=torch.float32, device=dev)
        self._out = torch.empty(elems * 4, dtype=torch.uint8, device=dev)
        self.uploaded = None  # event: this slot's host buffers are free again
        self.done = None  # event: the device is done with this slot's buffers

    def wait_staging_free(self) -> None:
        if self.uploaded is not None:
            self.uploaded.synchronize()

    def stage(self, i: int, src: torch.Tensor) -> torch.Tensor:
        nbytes = self.elems * src.element_size()
        while len(self.host) <= i:
            self.host.append(torch.empty(0, dtype=torch.uint8))
            self.device_in.append(torch.empty(0, dtype=torch.uint8, device=self.dev))
        if self.host[i].numel() < nbytes:
            self.host[i] = torch.empty(nbytes, dtype=torch.uint8, pin_memory=self.cuda)
            if self.cuda:
                torch.cuda.synchronize(self.dev)  # the old device buffer may still be in use
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

    def finish(self, cuda: bool):
        if not cuda:
            return None
        self.done = torch.cuda.Event()
        self.done.record(torch.cuda.current_stream(self.dev))
        return self.done
