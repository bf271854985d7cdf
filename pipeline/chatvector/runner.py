"""The run, one call per stage: plan → preflight → fetch → merge → assemble → verify → provenance
(→ card → push, in publish.py).

    from chatvector.runner import merge
    outcome = merge(load_recipe("recipes/x.yaml"), Path("out"))          # the whole `chatvector merge`

    plan = prepare(recipe, api, checks=...)                             # plan + pre-flight, every problem at once
    build = build_model(plan, folder, api=api)                          # fetch → merge → assemble → verify
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chatvector.assemble import write_support_files
from chatvector.errors import MergeError, PlanError, Problem
from chatvector.hashing import InputHasher
from chatvector.hub import connect, hub_call, tuned_downloads
from chatvector.plan import Plan
from chatvector.planner import make_plan
from chatvector.provenance import build_provenance, write_provenance
from chatvector.recipe import Recipe
from chatvector.stages import timed

if TYPE_CHECKING:
    from huggingface_hub import HfApi

log = logging.getLogger(__name__)
Checks = Callable[[Plan | None], list[Problem]]


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


@dataclass
class MergeOutcome:
    plan: Plan
    out_dir: Path
    provenance: dict
    device: str
    seconds: float


# -- plan → preflight ---------------------------------------------------------------------------------------
def prepare(recipe: Recipe, api: "HfApi", *, plan: Plan | None = None, plan_file: str | Path | None = None,
            early: list[Problem] | None = None, checks: Checks | None = None) -> Plan:
    """The plan (made now, read from `plan_file`, or given) after every pre-flight check.

    `early` are problems found before any Hub request (a bad --out, a token that cannot push): they stop the
    run before the plan downloads any metadata. `checks(plan)` runs after planning, also when the plan failed
    (with None), so that one PlanError lists the plan's problems and the checks' together.
    """
    if early:
        raise PlanError(early)
    problems: list[Problem] = []
    if plan is None:
        try:
            with timed("plan"):
                if plan_file is not None:
                    from chatvector.lock import locked_plan

                    plan = locked_plan(plan_file, recipe, api)
                else:
                    plan = make_plan(recipe, api)
        except PlanError as err:
            problems += err.problems
    elif plan.recipe is None:
        plan.recipe = recipe
    with timed("preflight"):
        problems += checks(plan) if checks else []
    if problems:
        raise PlanError(problems)
    return plan


def merge(recipe: Recipe, out_dir: Path, *, api: "HfApi | None" = None, plan: Plan | None = None,
          plan_file: str | Path | None = None, device: str | None = None, progress: bool = True) -> MergeOutcome:
    """`chatvector merge`: a ready-to-load, verified model folder at out_dir.

    Everything is written into a staging folder beside out_dir and moved into place at the end, so an
    interrupted or failed run never leaves a half-written model under the final name.
    """
    from chatvector import preflight

    out_dir = Path(out_dir)
    with timed("import"):
        api = api or connect()
    with timed("preflight"):
        early = preflight.check_out_dir(out_dir) + preflight.check_device(recipe, device)
    if not early:
        preload_engine()  # torch loads while the plan is made
    plan = prepare(recipe, api, plan=plan, plan_file=plan_file, early=early,
                   checks=lambda p: [] if p is None else (preflight.check_disk(p, out_dir.parent)
                                                          + preflight.check_gpu_memory(recipe, p, device)))
    with staged_folder(out_dir) as folder:
        build = build_model(plan, folder, api=api, device=device, progress=progress)
    return MergeOutcome(plan, out_dir, build.provenance, build.device, build.seconds)


# -- fetch → merge → assemble → verify → provenance ----------------------------------------------------------
def build_model(plan: Plan, folder: Path, *, api: "HfApi", device: str | None = None, progress: bool = True) -> Build:
    """Write the planned model into `folder` (new or empty) and verify it; raises VerificationError when a
    check fails (the folder then holds the report in chatvector.json, for a look)."""
    t0 = time.perf_counter()
    recipe = plan.require_recipe()
    with timed("fetch"):
        folders = fetch(plan, api)
    hasher = InputHasher(weight_paths(plan, folders))  # while torch loads and the merge reads the same bytes
    try:
        with timed("import"):  # what is left of loading torch (preload_engine)
            _engine()
        with timed("merge"):
            result = merge_weights(plan, folders, folder, device=device or recipe.merge.device, progress=progress)
            input_sha256 = hasher.digests()
            check_input_hashes(plan, folders, input_sha256)
    finally:
        hasher.cancel()
    with timed("assemble"):
        write_support_files(plan, folders["cp"], folder)
    with timed("verify"):
        report = verify(plan, folder, folders, result)
    with timed("provenance"):
        endpoint = None if all(s.is_local for s in plan.sources.values()) else api.endpoint
        provenance = build_provenance(plan, endpoint=endpoint, folders=folders, out_dir=folder,
                                      weight_hashes=result.files, input_sha256=input_sha256,
                                      verification=report.to_dict())
        write_provenance(folder, provenance)
    report.raise_for_failures()
    return Build(folder, provenance, result.device, time.perf_counter() - t0)


def fetch(plan: Plan, api: "HfApi") -> dict[str, Path]:
    """Every file the plan reads, at the plan's commits: {role: local folder}. Hub sources are downloaded into
    the HF cache (only the weight files the merge reads, and the metadata files); local ones are read in place."""
    folders: dict[str, Path] = {}
    by_key: dict[str, Path] = {}
    wanted: dict[str, set[str]] = {}
    for role, source in plan.sources.items():
        wanted.setdefault(source.key, set()).update(source.files)
    for role, source in plan.sources.items():
        if source.is_local:
            folders[role] = Path(source.path).resolve()
            continue
        if source.key not in by_key:
            names = sorted(wanted[source.key])
            weights = [n for n in names if n.endswith(".safetensors")]
            if weights:
                log.info("fetching %d weight file(s) of %s", len(weights), source.label)
            with hub_call(api, source.repo_id, field=role, revision=source.sha), tuned_downloads():
                by_key[source.key] = Path(api.snapshot_download(source.repo_id, revision=source.sha,
                                                                allow_patterns=names))
        folders[role] = by_key[source.key]
    return folders


def merge_weights(plan: Plan, folders: dict[str, Path], out_dir: Path, *, device: str, progress: bool):
    """The engine, on the plan's jobs, in the plan's shard layout."""
    from chatvector.merge import RowCopy, TensorJob, TensorSource, VectorTerm, run_merge

    def source(role: str, t) -> TensorSource:
        return TensorSource(folders[role] / t.files[role], t.name)

    jobs = []
    chat_role = plan.vectors[0].chat
    for t in plan.tensors:
        terms = () if t.kept else tuple(VectorTerm(source(v.base, t), source(v.chat, t), lam)
                                        for v, lam in zip(plan.vectors, t.lambdas) if lam != 0)
        copies = tuple(RowCopy(rc.cp_row, source(chat_role, t), rc.chat_row) for rc in t.row_copies)
        jobs.append(TensorJob(t.name, t.shape, t.out_dtype, source("cp", t), terms,
                              t.delta_rows if terms else None, copies))
    return run_merge(jobs, out_dir, shard_size=plan.output.shard_size, shards=plan.output.shards, device=device,
                     progress=progress, metadata={"chatvector_recipe_sha256": plan.recipe_sha256})


def weight_paths(plan: Plan, folders: dict[str, Path]) -> list[str]:
    """Every weight file the merge reads, once each (absolute paths)."""
    return sorted({os.path.abspath(folders[role] / file) for t in plan.tensors for role, file in t.files.items()})


def check_input_hashes(plan: Plan, folders: dict[str, Path], computed: dict[str, str]) -> None:
    """Every input file a Hub source lists must have the listed bytes: an LFS file its sha256 (computed in
    the merge's pass), any other its git blob id (a small file: hashed here). A corrupt download, a
    damaged cache or a server serving other bytes stops the run before anything is written."""
    from chatvector.sources import git_blob_id

    bad = []
    for role, source in plan.sources.items():
        if source.is_local:
            continue
        for name, file in source.files.items():
            path = folders[role] / name
            kind, _, want = file.id.partition(":")
            if kind == "sha256":
                got = computed.get(os.path.abspath(path))
            elif kind == "git" and path.is_file():
                got = git_blob_id(path)
            else:
                continue
            if got and got != want:
                bad.append(f"{role} {source.label}: {name} is {kind} {got[:12]}…, the Hub lists {want[:12]}…")
    if bad:
        raise MergeError("input files do not match the Hub's hashes (a corrupt download or cache): "
                         + "; ".join(bad) + "; remove them from the Hugging Face cache (`hf cache delete`) "
                         "and run again")


def verify(plan: Plan, folder: Path, folders: dict[str, Path] | None = None, result=None):
    """The written folder, checked against the plan with the safetensors library (not the engine's code),
    with the engine's scan of every value it computed, and a spot check against a plain-torch reference."""
    from chatvector.spotcheck import spot_check
    from chatvector.verify import EngineScan, verify_model_folder

    scanned = None if result is None else EngineScan(result.nonfinite, result.scanned_tensors, result.scanned_values)
    extra = (spot_check(plan, folders, folder),) if folders is not None else ()
    return verify_model_folder(folder, {t.name: (t.shape, t.out_dtype) for t in plan.tensors}, scanned=scanned,
                               extra=extra)


# -- staging -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def staged_folder(out_dir: Path) -> Iterator[Path]:
    """A new folder beside out_dir that replaces out_dir when the block succeeds, and is removed if it fails."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for leftover in out_dir.parent.glob(f".{out_dir.name}.partial-*"):  # from a run that was killed
        log.info("removing %s, left by an interrupted run", leftover)
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

