"""The merge loop: validate everything, lay out the files, then stream every file block through
the arithmetic (compute.py) and hand the blocks, in order, to the writer (writer.py).

Memory: inputs are read through read-only mmaps (page cache, not anonymous memory) and their pages
are dropped from RSS once used; output blocks live in a small pool of buffers that the writer gives
back once a block is written and hashed. So peak memory depends on `chunk_bytes`, not on the model.

Several outputs from one read (`run_merges`, a λ sweep): the outputs share the file layout, so the K blocks at
each file offset are filled together from one read of their inputs, and each output has its own writer (and
hasher) thread pair and its own buffer pool of (compute depth + 2) blocks (the CPU's depth is its worker count).
Each output's blocks are chunk_bytes / K (at least 1 MiB, or chunk_bytes when less), so the K pools together hold about what one merge's
pool holds, (depth + 2) × chunk_bytes, for K up to chunk_bytes / 1 MiB; the rest grows with K by a few fp32
tiles per term and worker and each output's writer queue, never with the model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from huggingface_hub.utils import tqdm

from chatvector.conventions import WEIGHTS_INDEX_FILE, shard_filenames
from chatvector.device_errors import DeviceError, device_error, is_device_error
from chatvector.errors import MergeError
from chatvector.merge.blocks import plan_blocks
from chatvector.merge.compute import Backend, BufferPool, backend_class
from chatvector.merge.finite import FileScan, FiniteWatch
from chatvector.merge.jobs import MergeOutput, MergeResult, TensorJob
from chatvector.merge.pinned import PinnedLedger, pinned_block_bytes, wants_pinned
from chatvector.merge.safetensors_io import Header, InputFile, InputReader, LocalInputs, build_header, fsync_dir
from chatvector.merge.sharding import file_layout, index_json, is_owned_output, plan_shards
from chatvector.merge.validate import check_jobs, load_headers, source_key, used_tensors
from chatvector.merge.writer import ALIGN, DiskBudget, FileWriter
from chatvector.units import human_bytes

log = logging.getLogger(__name__)
MIN_SHARED_BLOCK = 1 << 20  # the smallest block of one output when several are written at once


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
    streaming reader of chatvector.fetch.streaming, which reads remote files with HTTP range requests).
    on_file: called as `on_file(name, path, sha256, scan)` as soon as each output file is complete and under its
    final name (a streaming publish uploads it and may delete it), with `scan`, what the NaN/inf scan found in
    its tensors; the index comes last, as usual.
    disk_budget: bytes the output may hold on disk at once (a `DiskBudget`, which `on_file`'s consumer
    refunds when it deletes a file): writing waits for room.
    skip_files: output files not to write (a resumed run whose earlier run already published them); their
    tensors are not computed.

    Every output value is scanned for NaN and ±inf as it is computed (`MergeResult.nonfinite`).
    """
    output = MergeOutput(jobs, out_dir, metadata, on_file, disk_budget)
    return run_merges([output], shard_size=shard_size, device=device, chunk_bytes=chunk_bytes, progress=progress,
                      backend=backend, direct_io=direct_io, shards=shards, inputs=inputs, skip_files=skip_files)[0]


def run_merges(
    outputs: Sequence[MergeOutput],
    *,
    shard_size: int,
    device: str = "auto",
    chunk_bytes: int = 64 << 20,
    progress: bool = True,
    backend: str = "auto",
    direct_io: bool = True,
    shards: Sequence[Sequence[str]] | None = None,
    inputs: InputReader | None = None,
    skip_files: frozenset[str] = frozenset(),
) -> list[MergeResult]:
    """`run_merge` for several outputs at once, reading every input block once: each output's files are exactly
    the ones `run_merge` would write for its jobs alone (the same arithmetic, operation for operation).

    The outputs must merge the same tensors from the same cp (see `MergeOutput`): they then have one file layout
    (`shards`, or `plan_shards` of the first output's jobs), and the blocks at each offset of every output are
    computed together. One progress bar counts the bytes of every output; `skip_files` applies to each.
    Returns one MergeResult per output, in order.
    """
    t0 = time.perf_counter()
    if not outputs:
        raise MergeError("nothing to write: no outputs were given")
    dev = resolve_device(device)
    backend_cls = backend_class(backend, dev)
    if chunk_bytes <= 0:
        raise MergeError(f"chunk_bytes must be positive, got {chunk_bytes}")
    block_bytes = _block_bytes(chunk_bytes, len(outputs), dev)
    label = device_label(dev)
    ledger = PinnedLedger()
    metas = [_file_metadata(o.metadata) for o in outputs]
    reader = inputs or LocalInputs()
    headers = load_headers([j for o in outputs for j in o.jobs], reader.header)
    per_output = _checked_layouts(outputs, headers, shard_size, shards)
    layout, names = per_output[0], shard_filenames(len(per_output[0]))
    out_dirs = [Path(o.out_dir) for o in outputs]
    total = sum(j.nbytes for j in outputs[0].jobs)
    _prepare_out_dirs(outputs, out_dirs, names, headers, total)

    opened: dict[str, InputFile] = {}
    writers: list[FileWriter] = []
    engine: Backend | None = None
    watches = [FiniteWatch() for _ in outputs]
    bar = _progress_bar(layout, names, skip_files, len(outputs), progress)
    on_bytes = bar.update if len(outputs) == 1 else _locked(bar.update)  # K writer threads count into one bar
    try:
        opened.update(_open_inputs(reader, headers, per_output, names, skip_files))
        contents = {name: [j.name for j in shard] for shard, name in zip(layout, names)}
        for k, o in enumerate(outputs):
            writers.append(FileWriter(out_dirs[k], on_bytes=on_bytes, direct_io=direct_io,
                                      on_file=_file_done(o.on_file, watches[k], contents), budget=o.disk_budget))
        engine = backend_cls(dev, opened, block_bytes, chunk_bytes, watches, ledger)
        pools = [BufferPool(block_bytes, engine.depth + 2, w, pin=wants_pinned(dev), ledger=ledger) for w in writers]
        _write_shards(_BlockPipeline(engine, writers, pools), per_output, names, skip_files, metas, bar, block_bytes,
                      headers)
    except BaseException as err:
        if engine is not None:
            engine.shutdown()
            engine = None
        for writer in writers:
            writer.abort()
        if is_device_error(err) and not isinstance(err, DeviceError):
            raise _merge_device_error(err, label, block_bytes, len(outputs), ledger) from err
        raise
    finally:
        if engine is not None:
            engine.shutdown()
        bar.close()
        for f in opened.values():
            f.close()

    written = _finish_outputs(out_dirs, writers, per_output, names, skip_files)
    seconds = time.perf_counter() - t0
    results = [MergeResult(files, total, str(dev), seconds, backend_cls.name, direct_io_files=direct,
                           **_scan_figures(watch), device_name=label, pinned_bytes=ledger.total)
               for (files, direct), watch in zip(written, watches)]
    _log_merged(results[0], len(outputs[0].jobs), names, out_dirs, dev, direct_io)
    return results


def _progress_bar(layout: list, names: list[str], skip_files: frozenset[str], outputs: int, progress: bool):
    """The merge's bar: the tensor bytes every output still writes, in the units the plan prints them in (kB = 1000
    B); each file's header is added as it opens."""
    to_write = sum(j.nbytes for shard, name in zip(layout, names) if name not in skip_files for j in shard)
    return tqdm(total=to_write * outputs, unit="B", unit_scale=True, unit_divisor=1000, desc="merge",
                disable=not progress)


def _scan_figures(watch: FiniteWatch) -> dict:
    """A MergeResult's record of the scan for NaN and ±inf."""
    return {"nonfinite": watch.report(), "scanned_values": watch.values, "scanned_tensors": len(watch.names)}


def _prepare_out_dirs(outputs: Sequence[MergeOutput], out_dirs: list[Path], names: list[str], headers: dict,
                      total: int) -> None:
    """Each output folder ready for the shards (`_prepare_out_dir`), with the disk room they need."""
    for out_dir in out_dirs:
        _prepare_out_dir(out_dir, names, headers)
    _check_room([(d, total if o.disk_budget is None else min(total, o.disk_budget.limit))
                 for d, o in zip(out_dirs, outputs)])


def _write_shards(pipeline: "_BlockPipeline", per_output: list, names: list[str], skip_files: frozenset[str],
                  metas: list, bar, block_bytes: int, headers: dict) -> None:
    """Every shard not in `skip_files` computed and written in each output, then every output's files published."""
    def cp_dtype(job: TensorJob) -> str:
        return headers[source_key(job.cp)].tensors[job.cp.name].dtype

    for i, name in enumerate(names):
        if name in skip_files:  # an earlier run published it: nothing to compute
            continue
        files_jobs = [file_layout(sh[i]) for sh in per_output]
        pipeline.run(_open_shard(name, files_jobs, pipeline.writers, metas, bar, block_bytes, cp_dtype))
        for writer in pipeline.writers:
            writer.close_file()
    for writer in pipeline.writers:
        writer.publish()


def _block_bytes(chunk_bytes: int, outputs: int, dev) -> int:
    """The bytes of one output block. K outputs' blocks are filled together: each is 1/K of chunk_bytes (at least
    MIN_SHARED_BLOCK), so the blocks in flight hold about what one merge's do."""
    share = chunk_bytes if outputs == 1 else max(min(MIN_SHARED_BLOCK, chunk_bytes), chunk_bytes // outputs)
    block_bytes = max(ALIGN, share // ALIGN * ALIGN)
    if wants_pinned(dev):  # the pinned allocator rounds to a power of two: ask for one, or it page-locks double
        block_bytes = pinned_block_bytes(block_bytes)
    return block_bytes


def _checked_layouts(outputs: Sequence[MergeOutput], headers: dict, shard_size: int,
                     shards: Sequence[Sequence[str]] | None) -> list[list[list[TensorJob]]]:
    """Each output's jobs checked against the inputs' headers and alike, then each output's shard layout: the
    first output's (`shards`, or `plan_shards`), the same tensor names for the others."""
    for o in outputs:
        check_jobs(o.jobs, headers)
    _check_alike(outputs)
    first = outputs[0].jobs
    layout = plan_shards(first, shard_size) if shards is None else _given_shards(first, shards)
    return [layout] + [_given_shards(o.jobs, [[j.name for j in shard] for shard in layout]) for o in outputs[1:]]


def _open_inputs(reader: InputReader, headers: dict, per_output: list, names: list[str],
                 skip_files: frozenset[str]) -> dict[str, InputFile]:
    """Every input file opened for the tensors (and their byte ranges) the shards still to write read."""
    orders = [[j for shard, name in zip(sh, names) if name not in skip_files for j in file_layout(shard)]
              for sh in per_output]
    needed = _union_needed([used_tensors(order) for order in orders])
    return {key: reader.open(header, needed.get(key, {})) for key, header in headers.items()}


def _open_shard(name: str, files_jobs: list[list[TensorJob]], writers: list[FileWriter], metas: list,
                bar, block_bytes: int, cp_dtype: Callable[[TensorJob], str]) -> list[Iterator]:
    """Shard `name` opened in each output (its header written; `files_jobs[k]`: output k's tensors in file order),
    and each output's block iterator over it."""
    iters, head_bytes = [], 0
    for k, (writer, file_jobs) in enumerate(zip(writers, files_jobs)):
        entries = [(j.name, j.out_dtype.code, tuple(j.shape), j.nbytes) for j in file_jobs]
        head, starts = build_header(entries, metas[k])
        if k and len(head) != head_bytes:
            raise MergeError(f"{name}: the outputs' headers differ in length ({head_bytes} and {len(head)} "
                             "bytes): give every output metadata values of the same length")
        head_bytes = len(head)
        bar.total += len(head)  # the writer counts the header's bytes too: the bar ends at its total
        writer.open_file(name, len(head) + sum(e[3] for e in entries))
        iters.append(plan_blocks(file_jobs, starts, head, block_bytes, cp_dtype))
    return iters


class _BlockPipeline:
    """The engine computes the blocks at one offset of every output together; the writers write them in order. At
    most `engine.depth` submissions are in flight; a failure returns their buffers to the pools."""

    def __init__(self, engine: Backend, writers: list[FileWriter], pools: list[BufferPool]):
        self.engine, self.writers, self.pools = engine, writers, pools
        self.pending: deque = deque()  # (handle, blocks, buffers), oldest first

    def run(self, iters: list[Iterator]) -> None:
        """Every block of one shard (`iters`: one iterator per output), computed and handed to the writers."""
        blocks = [next(it) for it in iters]
        while blocks is not None:
            following = [next(it, None) for it in iters]
            if following[0] is None:
                following = None
            else:
                for block in following:
                    self.engine.prefetch(block)
            self.submit(blocks)
            blocks = following
        self.drain(0)

    def submit(self, blocks: list) -> None:
        bufs = []
        try:
            for pool in self.pools:
                bufs.append(pool.get())
            handle = self.engine.submit(blocks, bufs)
        except BaseException:
            for pool, buf in zip(self.pools, bufs):
                pool.put(buf)
            raise
        self.pending.append((handle, blocks, bufs))
        self.drain(self.engine.depth)

    def drain(self, keep: int) -> None:
        """Hand finished blocks to the writers, in order; wait only while more than `keep` are out."""
        pending, engine = self.pending, self.engine
        while pending and (len(pending) > keep or engine.ready(pending[0][0])):
            handle, blocks, bufs = pending.popleft()
            try:
                engine.wait(handle)
            except BaseException:
                for pool, buf in zip(self.pools, bufs):
                    pool.put(buf)
                raise
            for writer, pool, block, buf in zip(self.writers, self.pools, blocks, bufs):
                writer.write_block(block.offset, buf, block.nbytes, lambda b=buf, p=pool: p.put(b))


def _finish_outputs(out_dirs: list[Path], writers: list[FileWriter], per_output: list, names: list[str],
                    skip_files: frozenset[str]) -> list[tuple[dict[str, str], tuple[str, ...]]]:
    """Each output's index (when sharded), its stale files removed: ({file: sha256}, files written with direct
    I/O) per output."""
    written = []
    for out_dir, writer, sh in zip(out_dirs, writers, per_output):
        files = dict(writer.digests)
        if len(names) > 1:
            files[WEIGHTS_INDEX_FILE] = _write_small_file(out_dir, WEIGHTS_INDEX_FILE, index_json(sh, names))
        _remove_stale_outputs(out_dir, set(files) | set(skip_files))
        written.append((files, tuple(n for n in names if n in writer.direct_files)))
    return written


def _log_merged(first: MergeResult, tensors: int, names: list[str], out_dirs: list[Path], dev,
                direct_io: bool) -> None:
    direct, total, backend, seconds = first.direct_io_files, first.total_bytes, first.backend, first.seconds
    if len(out_dirs) == 1:
        log.info("merged %d tensors (%s) into %d file(s) in %s on %s (%s backend) in %.1f s%s", tensors,
                 human_bytes(total), len(names), out_dirs[0], dev, backend, seconds,
                 _write_note(direct, names, direct_io))
    else:
        log.info("merged %d tensors (%s each) into %d outputs of %d file(s) from one read of the inputs, on %s "
                 "(%s backend) in %.1f s%s", tensors, human_bytes(total), len(out_dirs), len(names), dev,
                 backend, seconds, _write_note(direct, names, direct_io))


def _locked(update: Callable[[int], object]) -> Callable[[int], None]:
    lock = threading.Lock()

    def locked(n: int) -> None:
        with lock:
            update(n)

    return locked


def _file_done(on_file, watch: FiniteWatch, contents: dict[str, list[str]]):
    """The writer's on_file for one output: with what the scan found in the file's tensors."""
    if on_file is None:
        return None

    def done(name: str, path: Path, sha256: str) -> None:  # its tensors are all computed and scanned
        on_file(name, path, sha256, watch.part(contents[name]))

    return done


def _union_needed(per_output: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    """`used_tensors` of every output together: a tensor any output reads, at the first job that reads it."""
    needed: dict[str, dict[str, int]] = {}
    for used in per_output:
        for key, names in used.items():
            into = needed.setdefault(key, {})
            for name, index in names.items():
                into[name] = min(index, into.get(name, index))
    return needed


def _check_alike(outputs: Sequence[MergeOutput]) -> None:
    """Every output merges the same tensors from the same cp, in distinct folders (one file layout for all)."""
    first = outputs[0]
    shape = [(j.name, tuple(j.shape), j.dtype, source_key(j.cp), j.cp.name) for j in first.jobs]
    for o in outputs[1:]:
        if [(j.name, tuple(j.shape), j.dtype, source_key(j.cp), j.cp.name) for j in o.jobs] != shape:
            raise MergeError(f"the outputs in {first.out_dir} and {o.out_dir} do not merge the same tensors (names, "
                             "shapes, dtypes and cp tensors, in one order): merge them separately")
    folders = [os.path.realpath(o.out_dir) for o in outputs]
    if len(set(folders)) < len(folders):
        raise MergeError("two outputs would be written to the same folder; give each its own")


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


def _merge_device_error(err: BaseException, label: str, block_bytes: int, outputs: int, ledger: PinnedLedger):
    """A CUDA out-of-memory or accelerator failure of the merge, as one line with the fix."""
    holds = (f"its buffers for {outputs} output(s) of {human_bytes(block_bytes)} blocks (plus "
             f"{human_bytes(ledger.total)} of pinned host memory)")
    return device_error(err, device=label, doing="merging", holds=holds,
                        fix="free the GPU (other processes may hold its memory) or run with --device cpu")


def device_label(dev: torch.device) -> str:
    """The device as the provenance records it: "cpu", or "cuda:0 (NVIDIA H100 80GB HBM3)"."""
    if dev.type != "cuda":
        return str(dev)
    try:
        return f"{dev} ({torch.cuda.get_device_name(dev)})"
    except (RuntimeError, AssertionError):  # the name is for the record: never fail a merge for it
        return str(dev)


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available, else cpu; "cuda" without CUDA is an error, not a fallback. A CUDA device
    always has its index ("cuda" -> "cuda:0", the current device), so that the record names the GPU."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
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
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def _file_metadata(metadata: dict[str, str] | None) -> dict[str, str]:
    meta = dict(metadata or {})
    bad = [k for k, v in meta.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise MergeError(f"safetensors metadata must map strings to strings; bad entries: {bad[:10]}")
    meta["format"] = "pt"
    return meta


def _prepare_out_dir(out_dir: Path, names: list[str], headers: dict[str, Header]) -> None:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MergeError(f"cannot create output folder {out_dir}: {e.strerror or e}") from None
    inputs = {os.path.realpath(k) for k in headers if "://" not in k}
    clash = sorted(p for p in (os.path.realpath(out_dir / n) for n in [*names, WEIGHTS_INDEX_FILE]) if p in inputs)
    clash += sorted(k for k in inputs if os.path.dirname(k) == os.path.realpath(out_dir) and is_owned_output(os.path.basename(k)))
    if clash:
        raise MergeError(f"the output folder {out_dir} holds input file {clash[0]}; write the merge to another folder")


def _check_room(rooms: list[tuple[Path, int]]) -> None:
    """Each filesystem has room for every output written to it."""
    by_device: dict[int, list[tuple[Path, int]]] = {}
    for out_dir, room in rooms:
        by_device.setdefault(os.stat(out_dir).st_dev, []).append((out_dir, room))
    for group in by_device.values():
        room = sum(r for _, r in group)
        free = shutil.disk_usage(group[0][0]).free
        if free < room:
            where = str(group[0][0]) if len(group) == 1 else f"{group[0][0]} and {len(group) - 1} more output folder(s)"
            raise MergeError(f"the merge needs {room / 1e9:.2f} GB in {where} but only {free / 1e9:.2f} GB is free")


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
