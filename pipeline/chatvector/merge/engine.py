"""The merge loop: validate everything, lay out the files, then stream every file block through
the arithmetic (compute.py) and hand the blocks, in order, to the writer (writer.py).

Memory: inputs are read through read-only mmaps (page cache, not anonymous memory) and their pages
are dropped from RSS once used; output blocks live in a small pool of buffers that the writer gives
back once a block is written and hashed. So peak memory depends on `chunk_bytes`, not on the model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from huggingface_hub.utils import tqdm

from chatvector.conventions import WEIGHTS_INDEX_FILE, shard_filenames
from chatvector.errors import MergeError
from chatvector.merge.blocks import plan_blocks
from chatvector.merge.compute import Backend, BufferPool, backend_class
from chatvector.merge.finite import FileScan, FiniteWatch
from chatvector.merge.jobs import MergeResult, TensorJob
from chatvector.merge.safetensors_io import Header, InputFile, InputReader, LocalInputs, build_header, fsync_dir
from chatvector.merge.sharding import file_layout, index_json, is_owned_output, plan_shards
from chatvector.merge.validate import check_jobs, load_headers, source_key, used_tensors
from chatvector.merge.writer import ALIGN, DiskBudget, FileWriter
from chatvector.units import human_bytes

log = logging.getLogger(__name__)


def run_merge(
    jobs: Sequence[TensorJob],
    out_dir: Path,
    *,
    shard_size: int,
    device: str = "auto",
    chunk_bytes: int = 64 << 20,
    progress: bool = True,
    metadata: dict[str, str] | None = None,
    backend: str = "auto",
    direct_io: bool = True,
    shards: Sequence[Sequence[str]] | None = None,
    inputs: InputReader | None = None,
    on_file: Callable[[str, Path, str, FileScan], None] | None = None,
    disk_budget: DiskBudget | None = None,
    skip_files: frozenset[str] = frozenset(),
) -> MergeResult:
    """Merge `jobs` into safetensors files in `out_dir` and return what was written.

    One file `model.safetensors` if everything fits `shard_size` bytes, else
    `model-0000i-of-0000N.safetensors` plus `model.safetensors.index.json`, as transformers writes
    them. Work goes in blocks of `chunk_bytes` of output (rounded down to a multiple of 4 KiB, at
    least 4 KiB); peak memory is a few blocks. Files appear under their final names only when all of
    them are complete and fsynced; older `model*.safetensors*` files in `out_dir` that this run did
    not write are removed then, so that loaders never mix two merges.

    device: "auto" (CUDA when available), "cpu", "cuda" or "cuda:N"; see `resolve_device`.
    metadata: string pairs for each file's `__metadata__` (`format: pt` is always set).
    backend: how the arithmetic runs. "auto": the staged accelerator pipeline on CUDA, CPU worker
    threads on the CPU. "cpu": worker threads (the CPU device only). "staged": the accelerator
    pipeline on any device; on the CPU it runs the same steps synchronously (the tests use that).
    On one device both backends write the same bytes.
    direct_io: write with O_DIRECT where the filesystem takes it (the result's `direct_io_files`
    says where it did); False: ordinary buffered writes. The bytes are the same either way.
    shards: the tensor names of each file, when a planner already decided the layout (every job in
    exactly one file); None: split greedily by `shard_size` (`plan_shards`).
    inputs: how input files are read: local files through mmap (None), or another `InputReader` (the
    streaming reader of chatvector.streaming, which reads remote files with HTTP range requests).
    on_file: called as `on_file(name, path, sha256, scan)` as soon as each output file is complete and under its
    final name (a streaming publish uploads it and may delete it), with `scan`, what the NaN/inf scan found in
    its tensors; the index comes last, as usual.
    disk_budget: bytes the output may hold on disk at once (a `DiskBudget`, which `on_file`'s consumer
    refunds when it deletes a file): writing waits for room.
    skip_files: output files not to write (a resumed run whose earlier run already published them); their
    tensors are not computed.

    Every output value is scanned for NaN and ±inf as it is computed (`MergeResult.nonfinite`).
    """
    t0 = time.perf_counter()
    dev = resolve_device(device)
    backend_cls = backend_class(backend, dev)
    if chunk_bytes <= 0:
        raise MergeError(f"chunk_bytes must be positive, got {chunk_bytes}")
    block_bytes = max(ALIGN, chunk_bytes // ALIGN * ALIGN)
    meta = _file_metadata(metadata)
    reader = inputs or LocalInputs()
    headers = load_headers(jobs, reader.header)
    check_jobs(jobs, headers)
    shards = plan_shards(jobs, shard_size) if shards is None else _given_shards(jobs, shards)
    names = shard_filenames(len(shards))
    out_dir = Path(out_dir)
    total = sum(j.nbytes for j in jobs)
    _prepare_out_dir(out_dir, names, headers, total if disk_budget is None else min(total, disk_budget.limit))

    opened: dict[str, InputFile] = {}
    writer: FileWriter | None = None
    engine: Backend | None = None
    watch = FiniteWatch()
    to_write = sum(j.nbytes for shard, name in zip(shards, names) if name not in skip_files for j in shard)
    # bytes in the units the plan prints them in (kB = 1000 B); each file's header is added as it opens
    bar = tqdm(total=to_write, unit="B", unit_scale=True, unit_divisor=1000, desc="merge", disable=not progress)
    try:
        order = [j for shard, name in zip(shards, names) if name not in skip_files for j in file_layout(shard)]
        needed = used_tensors(order)
        for key, header in headers.items():
            opened[key] = reader.open(header, needed.get(key, {}))
        contents = {name: [j.name for j in shard] for shard, name in zip(shards, names)}

        def file_done(name: str, path: Path, sha256: str) -> None:  # its tensors are all computed and scanned
            on_file(name, path, sha256, watch.part(contents[name]))

        writer = FileWriter(out_dir, on_bytes=bar.update, direct_io=direct_io,
                            on_file=file_done if on_file is not None else None,
                            budget=disk_budget)
        engine = backend_cls(dev, opened, block_bytes, chunk_bytes, watch)
        pool = BufferPool(block_bytes, engine.depth + 2, writer, pin=dev.type == "cuda")
        pending: deque = deque()  # (handle, block, buffer), oldest first

        def drain(keep: int) -> None:
            """Hand finished blocks to the writer, in order; wait only while more than `keep` are out."""
            while pending and (len(pending) > keep or engine.ready(pending[0][0])):
                handle, block, buf = pending.popleft()
                try:
                    engine.wait(handle)
                except BaseException:
                    pool.put(buf)
                    raise
                writer.write_block(block.offset, buf, block.nbytes, lambda b=buf: pool.put(b))

        def cp_dtype(job: TensorJob) -> str:
            return headers[source_key(job.cp)].tensors[job.cp.name].dtype

        for shard, name in zip(shards, names):
            if name in skip_files:  # an earlier run published it: nothing to compute
                continue
            layout = file_layout(shard)
            entries = [(j.name, j.out_dtype.code, tuple(j.shape), j.nbytes) for j in layout]
            head, starts = build_header(entries, meta)
            bar.total += len(head)  # the writer counts the header's bytes too: the bar ends at its total
            writer.open_file(name, len(head) + sum(e[3] for e in entries))
            blocks = plan_blocks(layout, starts, head, block_bytes, cp_dtype)
            block = next(blocks)
            while block is not None:
                following = next(blocks, None)
                if following is not None:
                    engine.prefetch(following)
                buf = pool.get()
                try:
                    handle = engine.submit(block, buf)
                except BaseException:
                    pool.put(buf)
                    raise
                pending.append((handle, block, buf))
                drain(engine.depth)
                block = following
            drain(0)
            writer.close_file()
        writer.publish()
    except BaseException:
        if engine is not None:
            engine.shutdown()
            engine = None
        if writer is not None:
            writer.abort()
        raise
    finally:
        if engine is not None:
            engine.shutdown()
        bar.close()
        for f in opened.values():
            f.close()

    files = dict(writer.digests)
    if len(names) > 1:
        files[WEIGHTS_INDEX_FILE] = _write_small_file(out_dir, WEIGHTS_INDEX_FILE, index_json(shards, names))
    _remove_stale_outputs(out_dir, set(files) | set(skip_files))
    seconds = time.perf_counter() - t0
    direct = tuple(n for n in names if n in writer.direct_files)
    log.info("merged %d tensors (%s) into %d file(s) in %s on %s (%s backend) in %.1f s%s", len(jobs),
             human_bytes(total), len(names), out_dir, dev, backend_cls.name, seconds,
             _write_note(direct, names, direct_io))
    return MergeResult(files=files, total_bytes=total, device=str(dev), seconds=seconds, backend=backend_cls.name,
                       direct_io_files=direct, nonfinite=watch.report(), scanned_values=watch.values,
                       scanned_tensors=len(watch.names))


def _write_note(direct: tuple[str, ...], names: list[str], asked: bool) -> str:
    if len(direct) == len(names):
        return ""
    if not asked:
        return " (buffered writes: direct_io=False)"
    if not direct:
        return " (buffered writes: no O_DIRECT here)"
    return f" ({len(names) - len(direct)} of {len(names)} files with buffered writes: O_DIRECT was refused)"


def _given_shards(jobs: Sequence[TensorJob], shards: Sequence[Sequence[str]]) -> list[list[TensorJob]]:
    by_name = {j.name: j for j in jobs}
    listed = [name for shard in shards for name in shard]
    if sorted(listed) != sorted(by_name) or not all(shards):
        raise MergeError("the shard layout must name every job exactly once, in non-empty files")
    return [[by_name[name] for name in shard] for shard in shards]


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


def _file_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    meta = dict(metadata or {})
    bad = [k for k, v in meta.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise MergeError(f"safetensors metadata must map strings to strings; bad entries: {bad[:10]}")
    meta["format"] = "pt"
    return meta


def _prepare_out_dir(out_dir: Path, names: list[str], headers: dict[str, Header], room: int) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MergeError(f"cannot create output folder {out_dir}: {e.strerror or e}") from None
    inputs = {os.path.realpath(k) for k in headers if "://" not in k}
    clash = sorted(p for p in (os.path.realpath(out_dir / n) for n in [*names, WEIGHTS_INDEX_FILE]) if p in inputs)
    clash += sorted(k for k in inputs if os.path.dirname(k) == os.path.realpath(out_dir) and is_owned_output(os.path.basename(k)))
    if clash:
        raise MergeError(f"the output folder {out_dir} holds input file {clash[0]}; write the merge to another folder")
    free = shutil.disk_usage(out_dir).free
    if free < room:
        raise MergeError(f"the merge needs {room / 1e9:.2f} GB in {out_dir} but only {free / 1e9:.2f} GB is free")


def _write_small_file(out_dir: Path, name: str, data: bytes) -> str:
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
