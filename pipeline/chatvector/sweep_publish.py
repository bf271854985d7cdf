"""`chatvector sweep --publish`: evaluate every variant of a sweep, publish the best one that passes the gate to
the target's main branch and every variant to a branch of its own (`lambda-0.7`, ...).

    results = publish_sweep(recipe, outcome, api=api)        # outcome: chatvector.sweep.sweep(...)

The rule (RULE): a variant passes when it meets every threshold of `eval.require`; of the variants that pass,
the one with the largest factor is published to main: the most of the chat vector (chat behaviour, safety)
that still answers in the target language and in well-formed turns. When none passes nothing is pushed and
the run ends with one line per variant (exit 2). Each push is `publish --from` the variant's folder with the
recipe scaled by its factor, so every guarantee of `publish` holds (one commit, parent checked, no-op when
unchanged, the folder verified again); the evaluation each folder's chatvector.json records is reused.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from chatvector.chart import sweep_chart_svg
from chatvector.errors import PipelineError
from chatvector.gate import GateError, evaluate_folder
from chatvector.provenance import write_provenance
from chatvector.recipe import Recipe
from chatvector.stages import timed
from chatvector.sweep_factors import folder_name
from chatvector.sweep_plan import lambda_range, scaled_recipe

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from chatvector.publish import PublishResult
    from chatvector.sweep import SweepOutcome

log = logging.getLogger(__name__)
SWEEP_CHART_FILE = "sweep.svg"
RULE = ("Of the variants that meet every threshold of eval.require, the one with the largest factor is published to "
        "main (the most of the chat vector that still answers in the target language, in well-formed turns); each "
        "variant is on its own branch.")


@dataclass
class SweepPublished:
    chosen: float
    main: "PublishResult"
    branches: dict[str, "PublishResult"]  # branch → its publish


def check_sweep_publish(recipe: Recipe) -> list[str]:
    """Why `sweep --publish` cannot run with this recipe (before anything is merged)."""
    problems = []
    if recipe.target is None:
        problems.append("sweep --publish: the recipe has no target; add `target: {repo_id: org/name}`")
    if recipe.eval is None:
        problems.append("sweep --publish: the recipe has no eval section to choose a variant by; add `eval: "
                        "{language: ko, require: {fidelity: 0.9, format: 1.0}}`")
    return problems


def evaluate_sweep(outcome: "SweepOutcome", *, api: "HfApi | None", device: str = "auto") -> float:
    """Evaluate every variant (its responses file and chatvector.json's "evaluation" written into its folder),
    write each folder's sweep chart, and return the chosen factor; GateError when no variant passes."""
    recipe = outcome.plan.require_recipe()
    summaries = {}
    for v in outcome.variants:
        with timed("eval"):
            summaries[v.factor] = evaluate_folder(v.plan, v.folder, api=api, device=device, spec=recipe.eval)
        log.info("%s: fidelity %.2f, format %.2f, %s", v.name, summaries[v.factor]["scores"]["fidelity"],
                 summaries[v.factor]["scores"]["format"], "passes" if summaries[v.factor]["passed"] else "fails")
    passing = [f for f in outcome.factors if summaries[f]["passed"]]
    if not passing:
        raise GateError("\n".join(["no variant of the sweep passes the evaluation gate (nothing was pushed): "
                                   + _misses(outcome.factors[0], summaries),
                                   *(_misses(f, summaries) for f in outcome.factors[1:])]))
    chosen = max(passing)
    table = {"chosen": chosen, "rule": RULE, "chart": SWEEP_CHART_FILE,
             "variants": [{"factor": v.factor, "lambda_range": list(lambda_range(v.plan)),
                           "scores": summaries[v.factor]["scores"], "passed": summaries[v.factor]["passed"],
                           "branch": folder_name(v.factor)} for v in outcome.variants]}
    svg = sweep_chart_svg(outcome.factors, {"fidelity": [summaries[f]["scores"]["fidelity"] for f in outcome.factors],
                                            "format": [summaries[f]["scores"]["format"] for f in outcome.factors]},
                          chosen, f"{recipe.display_name}: evaluation against λ")
    for v in outcome.variants:
        v.provenance = {**v.provenance, "evaluation": {**summaries[v.factor], "sweep": {**table, "this": v.factor}}}
        write_provenance(v.folder, v.provenance)
        (v.folder / SWEEP_CHART_FILE).write_text(svg, encoding="utf-8")
    return chosen


def _misses(factor: float, summaries: dict) -> str:
    return f"{folder_name(factor)}: " + "; ".join(summaries[factor]["failures"])


def publish_sweep(recipe: Recipe, outcome: "SweepOutcome", *, api: "HfApi | None" = None, device: str | None = None,
                  progress: bool = True) -> SweepPublished:
    """Evaluate the variants, then publish each to its branch and the chosen one to main (see the module doc)."""
    from chatvector.hub import connect
    from chatvector.publish import publish

    problems = check_sweep_publish(recipe)
    if problems:
        raise PipelineError("\n".join(problems))
    api = api or connect()
    chosen = evaluate_sweep(outcome, api=api, device=device or recipe.merge.device)
    branches = {}
    for v in outcome.variants:
        branch = folder_name(v.factor)
        branches[branch] = publish(scaled_recipe(recipe, v.factor), api=api, from_dir=v.folder, revision=branch,
                                   device=device, progress=progress, gate=False)  # failing variants too, marked
    main = publish(scaled_recipe(recipe, chosen), api=api, from_dir=outcome.variant(chosen).folder, revision="main",
                   device=device, progress=progress)
    return SweepPublished(chosen, main, branches)
