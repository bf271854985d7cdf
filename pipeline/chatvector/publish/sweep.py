"""`chatvector sweep --publish`: evaluate every variant of a sweep, publish the best one that passes the gate to
the target's main branch and every variant to a branch of its own (`lambda-0.7`, ...).

    results = publish_sweep(recipe, outcome, api=api)        # outcome: chatvector.sweep.run.sweep(...)
    outcome, results = run_sweep(recipe, out_dir, publish=True)   # both: what `chatvector sweep --publish` calls

The rule (RULE): a variant passes when it meets every threshold of `eval.require`; of the variants that pass,
the one with the largest factor is published to main: the most of the chat vector (chat behaviour, safety)
that still answers in the target language and in well-formed turns. When none passes nothing is pushed and
the run ends with one line per variant (exit 2). Each push is `publish --from` the variant's folder with the
recipe scaled by its factor, so every guarantee of `publish` holds (one commit, parent checked, no-op when
unchanged, the folder verified again); the evaluation each folder's chatvector.json records is reused.

`chatvector publish` of a recipe with `sweep:` (what a schedule runs) keeps that choice:

    result = publish_recipe_sweep(recipe)    # nothing pushed when main still holds the sweep's choice (result.kept)

The target's main records the choice (chatvector.json: `sweep` and `evaluation.sweep.chosen`) and the plan of the
chosen variant (its fingerprint): when the recipe (normalized), its factors, the inputs, the tool and `eval:` are
the same, nothing is merged or pushed; otherwise the sweep runs again and is published as `sweep --publish` does.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chatvector.build.provenance import write_provenance
from chatvector.card.chart import sweep_chart_svg
from chatvector.conventions import SWEEP_CHART_FILE
from chatvector.errors import PipelineError
from chatvector.publish.gate import GateError, evaluate_folder
from chatvector.recipe.recipe import Recipe
from chatvector.recipe.sweep_factors import folder_name
from chatvector.stages import timed
from chatvector.sweep.variants import lambda_range, scaled_recipe

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from chatvector.plan.plan import Plan
    from chatvector.publish.publish import PublishResult, TargetState
    from chatvector.sweep.run import SweepOutcome

log = logging.getLogger(__name__)
RULE = ("Of the variants that meet every threshold of eval.require, the one with the largest factor is published to "
        "main (the most of the chat vector that still answers in the target language, in well-formed turns); each "
        "variant is on its own branch.")


@dataclass
class SweepPublished:
    chosen: float
    main: "PublishResult"
    branches: dict[str, "PublishResult"]  # branch → its publish (empty when `kept`)
    kept: bool = False  # nothing was merged or pushed: main holds the sweep's choice for this recipe and these inputs

    def to_dict(self) -> dict:
        """The choice and every ref pushed (sweep.json's and `--format json`'s "published")."""
        return {"chosen": self.chosen, "kept": self.kept,
                "refs": {branch: {"commit": r.commit, "changed": r.changed, "url": r.url}
                         for branch, r in {**self.branches, "main": self.main}.items()}}


def check_sweep_publish(recipe: Recipe, option: str = "sweep --publish") -> list[str]:
    """Why `option` (`sweep --publish`, `sweep --eval`, `publish` of a recipe with `sweep:`) cannot run with this
    recipe (before anything is merged); `sweep --eval` needs no target."""
    problems = []
    if recipe.target is None and option != "sweep --eval":
        problems.append(f"{option}: the recipe has no target; add `target: {{repo_id: org/name}}`")
    if recipe.eval is None:
        problems.append(f"{option}: the recipe has no eval section to choose a variant by; add `eval: "
                        "{language: ko, require: {fidelity: 0.9, format: 1.0}}`")
    return problems


def evaluate_sweep(outcome: "SweepOutcome", *, api: "HfApi | None", device: str = "auto") -> float | None:
    """Evaluate every variant (its responses file and chatvector.json's "evaluation" written into its folder),
    write the sweep chart into each folder and DIR, add the scores to sweep.json and sweep.md, and return the
    chosen factor (None when no variant passes)."""
    from chatvector.sweep.report import write_report

    recipe = outcome.plan.require_recipe()
    summaries = {}
    for v in outcome.variants:
        with timed("eval"):
            summaries[v.factor] = evaluate_folder(v.plan, v.folder, api=api, device=device, spec=recipe.eval)
        log.info("%s: fidelity %.2f, format %.2f, %s", v.name, summaries[v.factor]["scores"]["fidelity"],
                 summaries[v.factor]["scores"]["format"], "passes" if summaries[v.factor]["passed"] else "fails")
    passing = [f for f in outcome.factors if summaries[f]["passed"]]
    chosen = max(passing) if passing else None
    table = {"chosen": chosen, "rule": RULE, "chart": SWEEP_CHART_FILE,
             "variants": [{"factor": v.factor, "lambda_range": list(lambda_range(v.plan)),
                           "scores": summaries[v.factor]["scores"], "passed": summaries[v.factor]["passed"],
                           "failures": summaries[v.factor]["failures"], "branch": folder_name(v.factor)}
                          for v in outcome.variants]}
    svg = sweep_chart_svg(outcome.factors, {"fidelity": [summaries[f]["scores"]["fidelity"] for f in outcome.factors],
                                            "format": [summaries[f]["scores"]["format"] for f in outcome.factors]},
                          chosen, f"{recipe.display_name}: evaluation against λ")
    for v in outcome.variants:
        v.provenance = {**v.provenance, "evaluation": {**summaries[v.factor], "sweep": {**table, "this": v.factor}}}
        write_provenance(v.folder, v.provenance)
        (v.folder / SWEEP_CHART_FILE).write_text(svg, encoding="utf-8")
    (outcome.out_dir / SWEEP_CHART_FILE).write_text(svg, encoding="utf-8")
    outcome.report = {**outcome.report, "evaluation": {"spec": summaries[outcome.factors[0]]["spec"],
                                                       "require": summaries[outcome.factors[0]]["require"], **table}}
    write_report(outcome.out_dir, outcome)
    return chosen


def no_variant_passes(outcome: "SweepOutcome") -> GateError:
    """The gate's error when no variant passes: one line per variant, naming its misses."""
    variants = outcome.report["evaluation"]["variants"]
    return GateError("\n".join(["no variant of the sweep passes the evaluation gate (nothing was pushed): "
                                + _misses(variants[0]), *(_misses(v) for v in variants[1:])]))


def _misses(variant: dict) -> str:
    return f"{variant['branch']}: " + "; ".join(variant["failures"])


def publish_sweep(recipe: Recipe, outcome: "SweepOutcome", *, api: "HfApi | None" = None, device: str | None = None,
                  progress: bool = True) -> SweepPublished:
    """Evaluate the variants, then publish each to its branch and the chosen one to main (see the module doc)."""
    from chatvector.hub.client import connect
    from chatvector.publish.publish import PublishOptions, publish

    problems = check_sweep_publish(recipe)
    if problems:
        raise PipelineError("\n".join(problems))
    api = api or connect()
    chosen = evaluate_sweep(outcome, api=api, device=device or recipe.merge.device)
    if chosen is None:
        raise no_variant_passes(outcome)
    branches = {}
    for v in outcome.variants:
        branch = folder_name(v.factor)
        options = PublishOptions(from_dir=v.folder, revision=branch, device=device, progress=progress, gate=False)
        branches[branch] = publish(scaled_recipe(recipe, v.factor), options, api=api)  # failing variants too, marked
    options = PublishOptions(from_dir=outcome.variant(chosen).folder, revision="main", device=device, progress=progress)
    main = publish(scaled_recipe(recipe, chosen), options, api=api)
    return SweepPublished(chosen, main, branches)


def run_sweep(recipe: Recipe, out_dir: Path, *, lambdas: Sequence[float] | None = None, fetch: str | None = None,
              device: str | None = None, progress: bool = True, publish: bool = False,
              evaluate: bool = False) -> tuple["SweepOutcome", SweepPublished | None]:
    """`chatvector sweep`: sweep the recipe into `out_dir` (chatvector.sweep.run.sweep), then `publish` it
    (`publish_sweep`: the SweepPublished is returned too) or `evaluate` every variant without publishing
    (`evaluate_sweep`). What publishing or evaluating needs of the recipe is checked before anything is merged."""
    from chatvector.sweep.run import sweep

    if publish or evaluate:
        problems = check_sweep_publish(recipe, "sweep --publish" if publish else "sweep --eval")
        if problems:  # before anything is merged
            raise PipelineError("\n".join(problems))
    outcome = sweep(recipe, out_dir, lambdas=lambdas, fetch=fetch, device=device, progress=progress)
    if publish:
        return outcome, publish_sweep(recipe, outcome, device=device, progress=progress)
    if evaluate:
        from chatvector.hub.client import connect

        evaluate_sweep(outcome, api=connect(), device=device or recipe.merge.device)
    return outcome, None


# -- `chatvector publish` of a recipe with `sweep:`: keep what the sweep chose ---------------------------------
def publishes_a_sweep(recipe: Recipe) -> bool:
    """Whether `chatvector publish` of this recipe publishes a sweep's choice: it has factors to sweep and an `eval:`
    to choose by (without `eval:`, `sweep:` is only `chatvector sweep`'s default and publish merges the recipe)."""
    return bool(recipe.sweep.lambdas) and recipe.eval is not None


def publish_recipe_sweep(recipe: Recipe, *, api: "HfApi | None" = None, out_dir: Path | None = None,
                         force: bool = False, fetch: str | None = None, device: str | None = None,
                         progress: bool = True) -> SweepPublished:
    """What `chatvector publish` does with a recipe that has `sweep:` (see the module doc): nothing when the target's
    main still holds the sweep's choice (`kept_choice`; `force` skips that check), else the sweep again over the
    recipe's factors, into `out_dir` (kept) or a folder under the HF cache (removed after), then `publish_sweep`."""
    from chatvector.build import preflight
    from chatvector.hub.client import connect
    from chatvector.sweep.run import sweep

    problems = check_sweep_publish(recipe, "publish")
    if problems:
        raise PipelineError("\n".join(problems))
    api = api or connect()
    kept = None if force else kept_choice(recipe, api)
    if kept is not None:
        return kept
    target = recipe.require_target()
    problems = [p.text for p in preflight.check_write_access(api, target.repo_id)]
    if problems:  # before K merges
        raise PipelineError("\n".join(problems))
    with sweep_folder(target.repo_id, out_dir) as folder:
        outcome = sweep(recipe, folder, api=api, fetch=fetch, device=device, progress=progress)
        return publish_sweep(recipe, outcome, api=api, device=device, progress=progress)


def kept_choice(recipe: Recipe, api: "HfApi") -> SweepPublished | None:
    """The unchanged result when the target's main holds what a sweep of this recipe published there (`recorded_choice`),
    else None: the sweep has to run again."""
    from chatvector.publish.publish import PublishResult, target_url

    plan, state = plan_and_main(recipe, api)
    chosen = recorded_choice(plan, state, api)
    if chosen is None:
        return None
    target = recipe.require_target()
    log.debug("nothing changed: %s@%s holds %s, the sweep's choice", target.repo_id, state.head, folder_name(chosen))
    main = PublishResult(target.repo_id, changed=False, commit=state.head, url=target_url(api.endpoint, target.repo_id,
                                                                                          "main"))
    return SweepPublished(chosen, main, {}, kept=True)


def plan_and_main(recipe: Recipe, api: "HfApi") -> tuple["Plan", "TargetState"]:
    """The recipe's (unscaled) plan and the state of its target's main, where the sweep's choice is published."""
    from chatvector.publish.publish import read_target
    from chatvector.runner import prepare

    plan = prepare(recipe, api)
    return plan, read_target(api, recipe.require_target().repo_id, "main")


def recorded_choice(plan: "Plan", state: "TargetState", api: "HfApi") -> float | None:
    """The factor a sweep of this plan's recipe chose and published to main, when that publish still stands
    (`sweep_changes` finds nothing); None otherwise."""
    return None if sweep_changes(plan, state, api) else chosen_on_main(state.provenance or {})


def sweep_changes(plan: "Plan", state: "TargetState", api: "HfApi") -> list[str]:
    """Why the sweep has to run again (empty: it need not): main's chatvector.json records no sweep of this recipe
    (normalized: comments, commit message, device, fetch do not count), other factors, or a chosen variant whose
    plan changed since (its fingerprint: the inputs' content and the tool; `eval:`; the files still held)."""
    from chatvector.publish.changes import changes
    from chatvector.publish.publish import unchanged
    from chatvector.sweep.variants import variant_plans

    recorded = state.provenance or {}
    swept, chosen = recorded.get("sweep") or {}, chosen_on_main(recorded)
    if chosen is None or swept.get("factor") != chosen:
        return ["main's chatvector.json records no sweep's choice" if state.exists else "the target does not exist yet"]
    if swept.get("recipe_normalized_sha256") != plan.recipe_sha256:
        return ["the recipe changed since the sweep"]
    factors = [float(f) for f in plan.require_recipe().sweep.lambdas]
    if swept.get("factors") != factors:
        return [f"sweep.lambdas changed since the sweep ({swept.get('factors')} → {factors})"]
    variant = variant_plans(plan, [chosen], api)[0]
    if unchanged(variant, state):
        return []
    return changes(variant, state) or [f"main no longer holds {folder_name(chosen)} as published"]


def chosen_on_main(provenance: dict) -> float | None:
    return ((provenance.get("evaluation") or {}).get("sweep") or {}).get("chosen")


@contextlib.contextmanager
def sweep_folder(repo_id: str, out_dir: Path | None) -> Iterator[Path]:
    """Where a scheduled publish sweeps: `out_dir` (kept), else HF_HOME/chatvector/sweep/OWNER--NAME, removed when
    the run ends (a sweep does not resume: the next run starts afresh)."""
    from chatvector.fetch.workspace import target_folder

    if out_dir is not None:
        yield Path(out_dir)
        return
    publish_folder = target_folder(repo_id)  # HF_HOME/chatvector/publish/OWNER--NAME: publish's own, swept by it
    folder = publish_folder.parent.parent / "sweep" / publish_folder.name
    shutil.rmtree(folder, ignore_errors=True)  # an interrupted run's
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
