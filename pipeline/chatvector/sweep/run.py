"""`chatvector sweep`: several merges of one recipe, its λ schedule scaled by each factor, in one pass over the
inputs.

    from chatvector.sweep.run import sweep
    outcome = sweep(load_recipe("recipes/x.yaml"), Path("sweep"), lambdas=[0.5, 0.7, 1.0])
    for v in outcome.variants:
        v.factor, v.folder, v.provenance["fingerprint"]["sha256"]      # sweep/lambda-0.5/, ...

Each variant is the merge of the recipe with every coefficient value times its factor (chatvector.sweep.variants),
byte for byte what `chatvector merge` writes for that scaled recipe; its folder is a complete, verified model
folder like `merge --out` writes, whose chatvector.json also records `sweep: {factor, ...}`. The inputs are
fetched once and every input block is read once for all variants (runner.build_models → merge.run_merges).
DIR also gets sweep.json and sweep.md (chatvector.sweep.report). Like `merge`, everything is written into a
staging folder beside DIR that replaces DIR only once every variant is verified.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chatvector.conventions import SWEEP_CHART_FILE, SWEEP_REPORT_FILE, SWEEP_SUMMARY_FILE
from chatvector.errors import Problem
from chatvector.plan.plan import Plan
from chatvector.recipe.recipe import Recipe
from chatvector.recipe.sweep_factors import factor_problems, folder_name
from chatvector.stages import timed

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from chatvector.runner import IOStats



@dataclass
class SweepVariant:
    """One merged variant: `folder` (DIR/lambda-F) holds a verified model folder made from `plan` (the recipe
    scaled by `factor`), with `provenance` as its chatvector.json."""

    factor: float
    folder: Path
    plan: Plan
    provenance: dict

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def files(self) -> dict[str, str]:
        """Every file of the folder but chatvector.json, with its sha256."""
        return dict(self.provenance["output"]["files"])


@dataclass
class SweepOutcome:
    """What `sweep` wrote: `out_dir` (DIR) with one folder per variant, in the order of the factors, and the
    report (`report_path`: DIR/sweep.json, also `summary_path`: DIR/sweep.md). `plan` is the recipe's own
    (unscaled) plan; `read_plan` what the one pass read (every variant's input files); `io` what it moved."""

    plan: Plan
    out_dir: Path
    variants: list[SweepVariant]
    device: str
    seconds: float
    read_plan: Plan
    io: "IOStats | None" = None
    report: dict = field(default_factory=dict)

    @property
    def factors(self) -> list[float]:
        return [v.factor for v in self.variants]

    @property
    def report_path(self) -> Path:
        return self.out_dir / SWEEP_REPORT_FILE

    @property
    def summary_path(self) -> Path:
        return self.out_dir / SWEEP_SUMMARY_FILE

    def variant(self, factor: float) -> SweepVariant:
        return next(v for v in self.variants if v.factor == factor)


def sweep(recipe: Recipe, out_dir: Path, *, lambdas: Sequence[float] | None = None, api: "HfApi | None" = None,
          fetch: str | None = None, device: str | None = None, progress: bool = True) -> SweepOutcome:
    """Merge the recipe once per factor (`lambdas`, else the recipe's `sweep.lambdas`) into out_dir/lambda-F/, from
    one read of the inputs; write out_dir/sweep.json and sweep.md. Raises PlanError listing every problem found
    before any weight byte moves (the factors, the folder, the plan, the disk for every variant)."""
    from chatvector.build import preflight
    from chatvector.hub.client import connect
    from chatvector.runner import RunOptions, build_models, output_checks, preload_engine, prepare_run, staged_folder
    from chatvector.sweep.report import build_report, write_report
    from chatvector.sweep.variants import reading_plan, variant_plans

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    factors = [float(f) for f in (recipe.sweep.lambdas if lambdas is None else lambdas)]
    with timed("import"):
        api = api or connect()
    with timed("preflight"):
        early = _factor_problems(recipe, factors, lambdas is None) + check_sweep_dir(out_dir) \
            + preflight.check_out_is_not_in_a_source(recipe, out_dir) + preflight.check_device(recipe, device)
    if not early:
        preload_engine()  # torch loads while the plan is made
    # every variant is written whole (a one-factor sweep as a merge: its output once)
    plan, choice = prepare_run(recipe, api, output_checks(recipe, out_dir, device, fetch, len(factors)), early=early)
    with timed("plan"):
        plans = variant_plans(plan, factors, api)
        read_plan = reading_plan(plans)
    with staged_folder(out_dir) as staging:
        folders = [staging / folder_name(f) for f in factors]
        for folder in folders:
            folder.mkdir()
        extras = [{"sweep": {"factor": f, "factors": factors, "folder": folder_name(f),
                             "recipe_normalized_sha256": plan.recipe_sha256}} for f in factors]
        builds = build_models(plans, folders, api=api, options=RunOptions(device, progress, choice),
                              read_plan=read_plan, extras=extras)
        variants = [SweepVariant(f, out_dir / b.folder.name, p, b.provenance) for f, p, b in zip(factors, plans, builds)]
        outcome = SweepOutcome(plan, out_dir, variants, builds[0].device, time.perf_counter() - t0, read_plan,
                               builds[0].io)
        outcome.report = build_report(outcome, staging)
        write_report(staging, outcome)
    return outcome


def _factor_problems(recipe: Recipe, factors: list[float], from_recipe: bool) -> list[Problem]:
    if not factors:
        return [Problem(f"{recipe.path}: no λ factors to sweep: give --lambdas 0.5,0.7,1.0, or add "
                        "`sweep: {lambdas: [0.5, 0.7, 1.0]}` to the recipe")]
    where = f"{recipe.location('sweep.lambdas')}: sweep.lambdas" if from_recipe else "--lambdas"
    return [Problem(f"{where}: {message}") for _, message in factor_problems(factors)]


def check_sweep_dir(out_dir: Path) -> list[Problem]:
    """DIR must be creatable, and new, empty, or an earlier sweep's folder holding only what chatvector wrote
    (its variants' folders, each an earlier chatvector output with its evaluation, and the reports): the sweep
    replaces it whole."""
    from chatvector.build import preflight

    out_dir = Path(out_dir)
    if not out_dir.is_dir() or not any(out_dir.iterdir()):
        return preflight.check_out_dir(out_dir)
    if not (out_dir / SWEEP_REPORT_FILE).is_file():
        return [Problem(f"--out {out_dir}: exists and is not an earlier sweep's folder (it has no {SWEEP_REPORT_FILE}); "
                        "choose a new or empty folder")]
    problems = []
    for entry in sorted(out_dir.iterdir()):
        if entry.name in (SWEEP_REPORT_FILE, SWEEP_SUMMARY_FILE, SWEEP_CHART_FILE):  # the reports of `sweep` and `--eval`
            continue
        if not entry.is_dir() or not entry.name.startswith("lambda-"):
            problems.append(Problem(f"--out {out_dir}: holds {entry.name}, which chatvector did not write; replacing "
                                    "the folder would delete it: move it or choose another folder"))
            continue
        problems += preflight.check_out_dir(entry)
    return problems
