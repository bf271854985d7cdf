"""The run, one call per stage: plan → preflight → fetch → merge → assemble → verify → provenance
(→ card → push, in publish.py).

    from chatvector.runner import merge
    outcome = merge(load_recipe("recipes/x.yaml"), Path("out"))          # the whole `chatvector merge`

    plan = prepare(recipe, api, checks=...)                             # plan + pre-flight, every problem at once
    plan, fetch = prepare_run(recipe, api, output_checks(...))          # the same, with what the checks decided
    build = build_model(plan, folder, api=api, options=RunOptions(fetch=fetch))   # fetch → merge → assemble → verify
    builds = build_models(plans, folders, api=api)                      # the same for plans that differ only in
                                                                        # their coefficients (a λ sweep): one read

Decisions travel as values: the pre-flight checks return `Decided` (their problems and what they decided, such as
the fetch mode), which `prepare_run` hands back beside the plan.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Generic, TypeVar

from chatvector import stages
from chatvector.build.assemble import write_support_files
from chatvector.build.provenance import build_provenance, write_provenance
from chatvector.errors import PlanError, Problem
from chatvector.fetch.inputs import RunInputs, open_inputs
from chatvector.fetch.mode import FetchChoice, choose_fetch
from chatvector.hub.client import connect
from chatvector.plan.plan import Plan
from chatvector.plan.planner import make_plan
from chatvector.recipe.recipe import Recipe
from chatvector.stages import timed

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from chatvector.build.shardupload import ShardUploader

log = logging.getLogger(__name__)
Checks = Callable[[Plan | None], list[Problem]]
D = TypeVar("D")


@dataclass(frozen=True)
class Decided(Generic[D]):
    """What a run's pre-flight checks found: the problems (none: the run goes on) and what they decided on the way
    (the fetch mode; a publish's target state), kept by the caller."""

    problems: list[Problem]
    value: D | None = None


@dataclass(frozen=True)
class RunOptions:
    """How one run computes (`build_model`, `build_models`), built by its caller (merge, sweep, publish)."""

    device: str | None = None  # None: the recipe's merge.device
    progress: bool = True
    fetch: FetchChoice | None = None  # how the inputs are read (snapshot when None)


_preload: threading.Thread | None = None


def preload_engine() -> None:
    """Import the merge engine (torch: seconds) on a background thread while the plan runs."""
    global _preload
    if _preload is None and "chatvector.merge" not in sys.modules:
        _preload = threading.Thread(target=importlib.import_module, args=("chatvector.merge",), name="preload",
                                    daemon=True)
        _preload.start()


def _engine() -> None:
    """The engine, imported: waits for `preload_engine`'s thread (or imports it here)."""
    settle_preload()
    importlib.import_module("chatvector.merge")


def settle_preload() -> None:
    """Wait for a preload still running: an interpreter must not exit while a thread is mid-import."""
    if _preload is not None:
        _preload.join()


@dataclass
class Build:
    """A verified model folder: what `build_model` wrote and how."""

    folder: Path
    provenance: dict
    device: str
    seconds: float
    io: "IOStats | None" = None


@dataclass
class MergeOutcome:
    plan: Plan
    out_dir: Path
    provenance: dict
    device: str
    seconds: float
    io: "IOStats | None" = None


# -- plan → preflight ---------------------------------------------------------------------------------------
def prepare(recipe: Recipe, api: "HfApi", *, plan: Plan | None = None, plan_file: str | Path | None = None,
            early: list[Problem] | None = None, checks: Checks | None = None) -> Plan:
    """The plan (made now, read from `plan_file`, or given) after every pre-flight check.

    `early` are problems found before any Hub request (a bad --out, a token that cannot push): they stop the
    run before the plan downloads any metadata. `checks(plan)` runs after planning, also when the plan failed
    (with None), so that one PlanError lists the plan's problems and the checks' together.
    """
    decide = (lambda p: Decided(checks(p))) if checks is not None else None
    return prepare_run(recipe, api, decide, plan=plan, plan_file=plan_file, early=early)[0]


def prepare_run(recipe: Recipe, api: "HfApi", decide: Callable[[Plan | None], Decided[D]] | None, *,
                plan: Plan | None = None, plan_file: str | Path | None = None,
                early: list[Problem] | None = None) -> tuple[Plan, D | None]:
    """`prepare`, with checks that also decide (`decide(plan)`: a `Decided`): the plan and what they decided."""
    if early:
        raise PlanError(early)
    problems: list[Problem] = []
    if plan is None:
        try:
            with timed("plan"):
                plan = _planned(recipe, api, plan_file)
        except PlanError as err:
            problems += err.problems
    elif plan.recipe is None:
        plan.recipe = recipe
    with timed("preflight"):
        decided = decide(plan) if decide else Decided([])
    problems += decided.problems
    if problems:
        raise PlanError(problems)
    assert plan is not None  # a plan that failed raised above
    return plan, decided.value


def _planned(recipe: Recipe, api: "HfApi", plan_file: str | Path | None) -> Plan:
    """The plan made now, or read from `plan_file` (a lock: checked against the recipe and the Hub)."""
    if plan_file is None:
        return make_plan(recipe, api)
    from chatvector.plan.lock import locked_plan

    return locked_plan(plan_file, recipe, api)


def merge(recipe: Recipe, out_dir: Path, *, api: "HfApi | None" = None, plan: Plan | None = None,
          plan_file: str | Path | None = None, device: str | None = None, progress: bool = True,
          fetch: str | None = None) -> MergeOutcome:
    """`chatvector merge`: a ready-to-load, verified model folder at out_dir.

    Everything is written into a staging folder beside out_dir and moved into place at the end, so an
    interrupted or failed run never leaves a half-written model under the final name.
    """
    from chatvector.build import preflight

    out_dir = Path(out_dir)
    with timed("import"):
        api = api or connect()
    with timed("preflight"):
        early = (preflight.check_out_dir(out_dir) + preflight.check_out_is_not_in_a_source(recipe, out_dir)
                 + preflight.check_device(recipe, device))
    if not early:
        preload_engine()  # torch loads while the plan is made
    plan, choice = prepare_run(recipe, api, output_checks(recipe, out_dir, device, fetch), plan=plan,
                               plan_file=plan_file, early=early)
    with staged_folder(out_dir) as folder:
        build = build_model(plan, folder, api=api, options=RunOptions(device, progress, choice))
    return MergeOutcome(plan, out_dir, build.provenance, build.device, build.seconds, build.io)


def output_checks(recipe: Recipe, out_dir: Path, device: str | None, fetch: str | None,
                  variants: int = 1) -> Callable[[Plan | None], Decided[FetchChoice]]:
    """The checks of a run that writes `variants` whole outputs beside `out_dir` (merge: 1, sweep: K), once the
    plan is made: the disk, the GPU's memory; they decide the fetch mode (`Decided.value`)."""
    from chatvector.build import preflight

    def checks(p: Plan | None) -> Decided[FetchChoice]:
        if p is None:
            return Decided([])
        writes = variants * p.output_bytes if variants > 1 else None  # None: one output, as check_disk counts it
        choice = choose_fetch(p, fetch or recipe.merge.fetch, out_dir.parent, writes=writes)
        stream = choice.mode == "stream"
        how = (f" of {variants} variants" if variants > 1 else "") + (" in stream mode" if stream else "")
        return Decided(preflight.check_disk(p, out_dir.parent, downloads=0 if stream else None, writes=writes,
                                            how=how) + preflight.check_gpu_memory(recipe, p, device), choice)

    return checks


# -- fetch → merge → assemble → verify → provenance ----------------------------------------------------------
@dataclass
class IOStats:
    """What a run moved and held, printed at its end (`chatvector merge|publish`, `--format json`)."""

    fetch: str  # "snapshot" or "stream"
    why: str
    bytes_downloaded: int = 0  # weight bytes read from the Hub (stream mode: the range reads, re-reads included)
    bytes_uploaded: int = 0  # what a publish sent: shards pre-uploaded during the merge, then the commit's files
    disk_high_water: int | None = None  # most output bytes on disk at once (a streaming publish)
    window_bytes: int | None = None  # the stream's prefetch window
    peak_window_bytes: int | None = None
    peak_memory: int = 0  # the process's peak resident memory
    pinned_memory: int = 0  # host memory page-locked for the GPU's staging and output buffers (0 on the CPU)
    resumed_shards: int = 0

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    def summary(self) -> str:
        from chatvector.units import human_bytes

        parts = [f"fetch: {self.fetch} ({self.why})", f"{human_bytes(self.bytes_downloaded)} down"]
        if self.bytes_uploaded:
            parts.append(f"{human_bytes(self.bytes_uploaded)} up")
        if self.disk_high_water is not None:
            parts.append(f"disk high-water {human_bytes(self.disk_high_water)} of output")
        if self.peak_window_bytes is not None:
            parts.append(f"stream window peak {human_bytes(self.peak_window_bytes)} of {human_bytes(self.window_bytes)}")
        parts.append(f"peak memory {human_bytes(self.peak_memory)}")
        if self.pinned_memory:
            parts.append(f"{human_bytes(self.pinned_memory)} of it pinned for the GPU")
        if self.resumed_shards:
            parts.append(f"{self.resumed_shards} shard(s) resumed")
        return ", ".join(parts)


def build_model(plan: Plan, folder: Path, *, api: "HfApi", options: RunOptions = RunOptions(),
                uploader: "ShardUploader | None" = None) -> Build:
    """Write the planned model into `folder` (new or empty) and verify it; raises VerificationError when a
    check fails (the folder then holds the report in chatvector.json, for a look).

    uploader: a streaming publish's ShardUploader, which takes each shard as it is written (its folder is
    `folder`)."""
    from chatvector.build.spotcheck import SpotCheck

    t0 = time.perf_counter()
    recipe = plan.require_recipe()
    inputs, stats = _open_inputs(plan, api, options.fetch, skip=uploader.resumed_inputs if uploader else None)
    try:
        with timed("import"):  # what is left of loading torch (preload_engine)
            _engine()
        spot = SpotCheck(plan, inputs.input_rows(), sample_bytes=inputs.sample_bytes)
        if uploader is not None:
            uploader.start(spot, inputs.verified)
        merge_start = time.perf_counter()
        with timed("merge"), uploader.names_its_failure() if uploader else contextlib.nullcontext():
            result = merge_weights(plan, inputs, folder, device=options.device or recipe.merge.device,
                                   progress=options.progress, uploader=uploader)
            input_sha256 = inputs.finish()
        _record_reads(stats, inputs, plan)
        if uploader is not None:
            _finish_upload(uploader, stats)
        log.debug("merge and its overlapped stages took %.1f s", time.perf_counter() - merge_start)
    finally:
        inputs.close()
    provenance = finish_folder(plan, folder, inputs, result, spot, input_sha256, api, uploader=uploader)
    stats.peak_memory, stats.pinned_memory = peak_memory(), result.pinned_bytes
    log.debug("%s", stats.summary())
    return Build(folder, provenance, result.device, time.perf_counter() - t0, stats)


def _finish_upload(uploader: "ShardUploader", stats: IOStats) -> None:
    """The streaming publish's last uploads (the rest overlapped the merge), and what they moved, in `stats`."""
    with timed("upload"):
        uploader.finish()
    stats.bytes_uploaded, stats.disk_high_water = uploader.bytes_uploaded, uploader.budget.high_water
    stats.resumed_shards = len(uploader.skip_files)
    stages.record("upload-overlapped", uploader.upload_seconds)


def build_models(plans: Sequence[Plan], folders: Sequence[Path], *, api: "HfApi", options: RunOptions = RunOptions(),
                 read_plan: Plan | None = None, extras: Sequence[dict] | None = None) -> list[Build]:
    """`build_model` for plans that differ only in their coefficients (a λ sweep's variants: the same sources,
    tensors and layout), each into its folder, from one fetch and one read of the inputs: every input block is
    read once and each plan's output block computed from it (`run_merges`). Then each folder is spot-checked,
    assembled, verified and given its provenance (with `extras[i]` added to plan i's chatvector.json), as one
    build would. read_plan: the plan whose files are fetched and read (every plan's files; default the first's).
    Every Build shares one IOStats: the inputs were read once for all. Raises VerificationError naming the
    first folder that fails a check (its chatvector.json holds the report)."""
    from chatvector.build.spotcheck import SpotCheck

    t0 = time.perf_counter()
    read_plan = read_plan or plans[0]
    recipe = plans[0].require_recipe()
    inputs, stats = _open_inputs(read_plan, api, options.fetch)
    try:
        with timed("import"):
            _engine()
        rows = inputs.input_rows()  # one reader for every spot check: a row streamed for one plan serves all
        spots = [SpotCheck(plan, rows, sample_bytes=inputs.sample_bytes) for plan in plans]
        with timed("merge"):
            results = merge_variants(plans, inputs, folders, device=options.device or recipe.merge.device,
                                     progress=options.progress)
            input_sha256 = inputs.finish()
        _record_reads(stats, inputs, read_plan)
    finally:
        inputs.close()
    provenances = [finish_folder(plan, folder, inputs, result, spot, input_sha256, api, extra=extra)
                   for plan, folder, result, spot, extra in zip(plans, folders, results, spots,
                                                                extras or [None] * len(plans))]
    stats.peak_memory, stats.pinned_memory = peak_memory(), sum(r.pinned_bytes for r in results[:1])
    log.debug("%s", stats.summary())
    seconds = time.perf_counter() - t0
    return [Build(folder, provenance, result.device, seconds, stats)
            for folder, provenance, result in zip(folders, provenances, results)]


def _open_inputs(plan: Plan, api: "HfApi", fetch: FetchChoice | None, skip=None) -> tuple[RunInputs, IOStats]:
    """The fetch stage: the inputs opened the way `fetch` says, and the run's I/O record."""
    fetch = fetch or FetchChoice("snapshot", "the default")
    log.info("%s", fetch)
    stats = IOStats(fetch.mode, fetch.why)
    with timed("fetch"):
        inputs = open_inputs(plan, api, fetch.mode, skip=skip)
    return inputs, stats


def _record_reads(stats: IOStats, inputs: RunInputs, plan: Plan) -> None:
    if inputs.stream is not None:
        s = inputs.stream.stats
        stats.bytes_downloaded = s.fetched + s.refetched
        stats.window_bytes, stats.peak_window_bytes = s.window, s.peak_window
        stages.record("download", s.seconds)
    else:
        stats.bytes_downloaded = plan.download_bytes


def finish_folder(plan: Plan, folder: Path, inputs: RunInputs, result, spot, input_sha256: dict[str, str],
                  api: "HfApi", *, uploader: "ShardUploader | None" = None, extra: dict | None = None) -> dict:
    """After the merge wrote `folder`'s weights: spot check, support files, verification, provenance (with
    `extra`'s keys added). Returns the provenance; raises VerificationError when a check failed."""
    if uploader is None:  # a streaming publish checked each shard before it left the disk
        for path in sorted(folder.glob("*.safetensors")):
            spot.check_file(path)
    with timed("assemble"):
        write_support_files(plan, inputs.folders["cp"], folder)
    with timed("verify"):
        report = verify(plan, folder, result, spot.result(), resumed=uploader.resumed_scan if uploader else (0, 0))
    with timed("provenance"):
        endpoint = None if all(s.is_local for s in plan.sources.values()) else api.endpoint
        hashes = {**(uploader.sha256 if uploader else {}), **result.files}
        provenance = build_provenance(plan, endpoint=endpoint, folders=inputs.folders, out_dir=folder,
                                      weight_hashes=hashes, input_sha256=input_sha256,
                                      verification=report.to_dict(),
                                      blob_ids=uploader.git_blob_ids if uploader else None)
        provenance["merge"] = {"device": result.device_name or result.device, "backend": result.backend}
        provenance.update(extra or {})
        write_provenance(folder, provenance)
    report.raise_for_failures()
    return provenance


def peak_memory() -> int:
    """The process's peak resident memory in bytes (Linux: kilobytes in ru_maxrss)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def plan_jobs(plan: Plan, inputs: RunInputs) -> list:
    """The engine's TensorJobs for the plan's tensors, reading what `inputs` fetched."""
    from chatvector.merge import RowCopy, TensorJob, TensorSource, VectorTerm

    def source(role: str, t) -> TensorSource:
        return TensorSource(inputs.source(role, t.files[role]), t.name)

    jobs = []
    chat_role = plan.vectors[0].chat
    for t in plan.tensors:
        terms = () if t.kept else tuple(VectorTerm(source(v.base, t), source(v.chat, t), lam)
                                        for v, lam in zip(plan.vectors, t.lambdas) if lam != 0)
        copies = tuple(RowCopy(rc.cp_row, source(chat_role, t), rc.chat_row) for rc in t.row_copies)
        jobs.append(TensorJob(t.name, t.shape, t.out_dtype, source("cp", t), terms,
                              t.delta_rows if terms else None, copies))
    return jobs


def merge_weights(plan: Plan, inputs: RunInputs, out_dir: Path, *, device: str, progress: bool,
                  uploader: "ShardUploader | None" = None):
    """The engine, on the plan's jobs, in the plan's shard layout."""
    from chatvector.merge import run_merge

    jobs = plan_jobs(plan, inputs)
    extra = {}
    if inputs.stream is not None:
        extra["chunk_bytes"] = inputs.stream.chunk_bytes
    if uploader is not None:
        extra.update(on_file=uploader.on_file, disk_budget=uploader.budget, skip_files=uploader.skip_files)
    return run_merge(jobs, out_dir, shard_size=plan.output.shard_size, shards=plan.output.shards, device=device,
                     progress=progress, metadata=shard_metadata(plan),
                     inputs=inputs.reader, **extra)


def shard_metadata(plan: Plan) -> dict[str, str]:
    """The shards' header metadata: only what decides their tensors (the weights' fingerprint), so that a card,
    a name or a revision written as a branch rather than its commit leaves the shard files byte-identical."""
    return {"chatvector_weights_sha256": plan.weights_sha256}


def merge_variants(plans: Sequence[Plan], inputs: RunInputs, folders: Sequence[Path], *, device: str,
                   progress: bool) -> list:
    """The engine on several plans' jobs at once (`run_merges`): one read of the inputs, one output per plan."""
    from chatvector.merge import MergeOutput, run_merges

    outputs = [MergeOutput(plan_jobs(plan, inputs), folder, shard_metadata(plan))
               for plan, folder in zip(plans, folders)]
    extra = {"chunk_bytes": inputs.stream.chunk_bytes} if inputs.stream is not None else {}
    return run_merges(outputs, shard_size=plans[0].output.shard_size, shards=plans[0].output.shards, device=device,
                      progress=progress, inputs=inputs.reader, **extra)


def verify(plan: Plan, folder: Path, result=None, spot=None, resumed: tuple[int, int] = (0, 0)):
    """The written folder, checked against the plan with the safetensors library (not the engine's code),
    with the engine's scan of every value it computed (and, `resumed`, the tensors and values an interrupted
    run scanned in the shards it uploaded), and the spot check against a plain-torch reference."""
    from chatvector.build.verify import EngineScan, verify_model_folder

    scanned = None if result is None else EngineScan(result.nonfinite, result.scanned_tensors + resumed[0],
                                                     result.scanned_values + resumed[1])
    return verify_model_folder(folder, {t.name: (t.shape, t.out_dtype) for t in plan.tensors}, scanned=scanned,
                               extra=(spot,) if spot is not None else ())


# -- staging -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """A new folder beside out_dir that replaces out_dir when the block succeeds, and is removed if it fails."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for leftover in out_dir.parent.glob(f".{out_dir.name}.partial-*"):  # from a run that was killed
        from chatvector.fetch.workspace import disk_usage
        from chatvector.units import human_bytes

        log.info("removing %s (%s), left by an interrupted run", leftover, human_bytes(disk_usage(leftover)))
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        yield staging
        replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_dir(staging: Path, out_dir: Path) -> None:
    """Move staging to out_dir; an existing out_dir is replaced only once the new one is complete."""
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(staging, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out_dir)

