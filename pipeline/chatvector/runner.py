"""The pipeline's stages, one call each: recipe → plan → fetch → merge → verify (→ card → push, in publish).

    from chatvector.runner import merge
    outcome = merge(load_recipe("recipes/x.yaml"), Path("out"))
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from chatvector.assemble import write_support_files
from chatvector.errors import PipelineError
from chatvector.merge import RowCopy, TensorJob, TensorSource, VectorTerm, run_merge
from chatvector.plan import Plan, make_plan
from chatvector.provenance import PROVENANCE_FILE, build_provenance, write_provenance
from chatvector.recipe import Recipe
from chatvector.sources import fetch_weights

log = logging.getLogger(__name__)


@dataclass
class MergeOutcome:
    plan: Plan
    out_dir: Path
    provenance: dict
    device: str
    seconds: float


def fetch(plan: Plan, api=None) -> None:
    """Download the weight files the plan needs (only those) into the HF cache."""
    for role, files in plan.download_files.items():
        c = plan.checkpoints[role]
        log.info("fetching %d weight file(s) of %s", len(files), c.resolved.label)
        fetch_weights(plan.recipe, c.resolved, files, api=api)


def build_jobs(plan: Plan) -> list[TensorJob]:
    """One engine job per output tensor, pointing at the local files of each checkpoint."""

    def source(role: str, name: str) -> TensorSource:
        c = plan.checkpoints[role]
        return TensorSource(c.resolved.file_path(c.tensors[name].file), name)

    jobs = []
    chat_role = plan.recipe.vectors[0].path_of("chat")
    for t in plan.tensors:
        terms = () if t.kept else tuple(
            VectorTerm(source(v.path_of("base"), t.name), source(v.path_of("chat"), t.name), lam)
            for v, lam in zip(plan.recipe.vectors, t.lambdas) if lam != 0
        )
        copies = tuple(RowCopy(rc.cp_row, source(chat_role, t.name), rc.chat_row) for rc in t.row_copies)
        jobs.append(TensorJob(t.name, t.shape, t.out_dtype, source("cp", t.name), terms,
                              t.delta_rows if terms else None, copies))
    return jobs


def merge(recipe: Recipe, out_dir: Path, *, device: str | None = None, api=None, plan: Plan | None = None,
          progress: bool = True, finish: Callable[[Path, dict], None] | None = None) -> MergeOutcome:
    """Plan (unless given), fetch, merge and assemble a ready-to-load model folder at out_dir.

    Everything is written into a staging folder beside out_dir and moved into place at the end, so an
    interrupted run never leaves a half-written model under the final name. `finish(staging, provenance)`
    adds files (publish's card) before that move; if it fails, nothing appears at out_dir either.
    """
    out_dir = Path(out_dir)
    check_out_dir(out_dir)
    check_device(recipe, device)
    plan = plan or make_plan(recipe, api=api)
    fetch(plan, api=api)
    for leftover in out_dir.parent.glob(f".{out_dir.name}.partial-*"):  # from a run that was killed
        log.info("removing %s, left by an interrupted run", leftover)
        shutil.rmtree(leftover, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        result = run_merge(build_jobs(plan), staging, shard_size=recipe.output.shard_size,
                           device=device or recipe.merge.device, progress=progress,
                           metadata={"chatvector_recipe_sha256": recipe.content_sha256})
        write_support_files(plan, staging)
        from chatvector.verify import verify_model_folder

        expected = {t.name: (t.shape, t.out_dtype) for t in plan.tensors}
        report = verify_model_folder(staging, expected)
        endpoint = None if all(c.resolved.is_local for c in plan.checkpoints.values()) else _endpoint()
        provenance = build_provenance(plan, staging, result.files, endpoint, report.to_dict())
        write_provenance(staging, provenance)
        report.raise_for_failures()
        if finish is not None:
            finish(staging, provenance)
        _replace_dir(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return MergeOutcome(plan, out_dir, provenance, result.device, result.seconds)


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def check_out_dir(out_dir: Path) -> None:
    """--out must be creatable, and either new, empty, or an earlier output holding only what chatvector wrote."""
    try:
        out_dir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise PipelineError(f"--out {out_dir}: cannot create its folder: {err.strerror or err}") from None
    if out_dir.is_file() or (out_dir.is_dir() and any(out_dir.iterdir())
                             and not (out_dir / PROVENANCE_FILE).is_file()):
        raise PipelineError(f"--out {out_dir}: exists and is not an earlier chatvector output; "
                            "choose a new or empty folder")
    if out_dir.is_dir() and (out_dir / PROVENANCE_FILE).is_file():
        foreign = sorted(str(p.relative_to(out_dir)) for p in out_dir.rglob("*")
                         if p.is_file() and p.name not in _written_before(out_dir))
        if foreign:
            raise PipelineError(f"--out {out_dir}: holds files chatvector did not write ({', '.join(foreign[:3])}"
                                f"{', ...' if len(foreign) > 3 else ''}); replacing the folder would delete them: "
                                "move them or choose another folder")


def _written_before(out_dir: Path) -> set[str]:
    """The files an earlier run wrote there, as its provenance lists them."""
    try:
        provenance = json.loads((out_dir / PROVENANCE_FILE).read_text(encoding="utf-8"))
        files = set((provenance.get("output") or {}).get("files") or {})
    except (OSError, ValueError):
        files = set()
    return files | {PROVENANCE_FILE, "README.md", "coefficients.svg"}


def check_device(recipe: Recipe, device: str | None) -> None:
    """Fail before any download when the merge device cannot be had."""
    from chatvector.merge import resolve_device

    try:
        resolve_device(device or recipe.merge.device)
    except PipelineError as err:
        if device is None and recipe.merge.device != "auto":  # the recipe asked for it, not a flag
            reason = str(err).split(" but ", 1)[-1]
            raise recipe.error_at("merge.device", f"{recipe.merge.device} was asked for but {reason}") from None
        raise


def _replace_dir(staging: Path, out_dir: Path) -> None:
    """Move staging to out_dir; an existing out_dir is replaced only once the new one is complete."""
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
        os.replace(staging, out_dir)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(staging, out_dir)
