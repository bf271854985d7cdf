"""The plans of a λ sweep: one per factor, each exactly the plan of the recipe with its schedule scaled.

A factor f scales every coefficient value the recipe writes: `coefficients.default`, each `layers` value,
each `gradient` anchor and each module rule's `value` become f × value (vector weights do not change). The
variant for f is then *defined* as the merge of that scaled recipe, so a tensor's λ for vector v is

    λ = weight_v × (f × value(tensor))            (a gradient layer: interpolated from the scaled anchors)

the float the planner computes for the scaled recipe, not f × (weight_v × value), which can differ in the last
bit. A λ that the scaling turns into 0 (f × value underflows, or a gradient crossing 0) keeps the tensor as cp,
as planning the scaled recipe would.

    variants = variant_plans(plan, [0.5, 1.0], api)   # plan: the recipe's own (make_plan)
    read = reading_plan(variants)                     # what the one pass fetches and reads: every variant's files

The variants are derived from the recipe's plan without reading any metadata again: each tensor's coefficients,
whether it is kept, which files it reads, the sources' files, the coefficients tables, the recipe's hash and the
fingerprint. One case needs facts the recipe's plan does not hold: a tensor the recipe keeps at coefficient 0
that a scaled gradient gives a λ ≠ 0 (rounding: 0 × f is 0, but an interpolation that lands on 0 exactly need
not land there once its anchors are scaled). That variant is planned on its own (its metadata read again).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from chatvector.errors import PlanError, Problem
from chatvector.plan.plan import ModulePlan, Plan, TensorPlan, fingerprint
from chatvector.recipe.coefficients import Coefficients, scaled_coefficients
from chatvector.recipe.recipe import Recipe

if TYPE_CHECKING:
    from huggingface_hub import HfApi

log = logging.getLogger(__name__)
KEPT_AT_ZERO = "coefficient 0 ("  # the planner's reason for a tensor kept because its λ are all 0


def scaled_recipe(recipe: Recipe, factor: float) -> Recipe:
    """The recipe with its schedule scaled (see the module docstring); its file text stays the one written."""
    return dataclasses.replace(recipe, coefficients=scaled_coefficients(recipe.coefficients, factor))


def variant_plans(plan: Plan, factors: Sequence[float], api: "HfApi") -> list[Plan]:
    """One plan per factor, in order: derived from `plan` (see `derive_plan`), or planned afresh where a scaled
    gradient wakes a tensor the recipe keeps at 0."""
    from chatvector.plan.planner import make_plan

    recipe = plan.require_recipe()
    plans = []
    for factor in factors:
        scaled = scaled_recipe(recipe, factor)
        derived = derive_plan(plan, scaled)
        if derived is None:
            log.info("factor %r: the scaled schedule gives a λ ≠ 0 to a tensor the recipe keeps at 0; planning this "
                     "variant on its own (its metadata is read again)", factor)
            derived = make_plan(scaled, api)
            moved = [role for role, s in derived.sources.items() if s.sha != plan.sources[role].sha]
            if moved:
                raise PlanError([Problem(f"{moved[0]}: its revision moved to another commit while the sweep was "
                                         "planned; run the sweep again (or pin the revision to a commit)")])
        plans.append(derived)
    return plans


def derive_plan(plan: Plan, scaled: Recipe) -> Plan | None:
    """The plan `make_plan(scaled)` would make, from the unscaled recipe's `plan` (same sources, tensors, layout),
    or None when a tensor the plan keeps at coefficient 0 gets a λ ≠ 0 (its files and rows are not in the plan)."""
    coefficients = scaled.coefficients
    tensors = []
    for t in plan.tensors:
        derived = _derive_tensor(plan, t, coefficients)
        if derived is None:
            return None
        tensors.append(derived)
    sources = {}
    for role, s in plan.sources.items():  # the weight files the variant still reads, and every metadata file
        used = {t.files[role] for t in tensors if role in t.files}
        sources[role] = dataclasses.replace(s, files={n: f for n, f in s.files.items()
                                                     if not n.endswith(".safetensors") or n in used})
    modules = tuple(ModulePlan(m.match, rule.value, m.decides) for m, rule in zip(plan.modules, coefficients.modules))
    out = dataclasses.replace(
        plan, recipe_sha256=scaled.normalized_sha256, sources=sources, default=coefficients.default,
        layer_values=tuple(coefficients.layer_values(plan.num_layers)), modules=modules, tensors=tuple(tensors),
        fingerprint={}, recipe=scaled)
    out.fingerprint = fingerprint(out)
    return out


def _derive_tensor(plan: Plan, t: TensorPlan, coefficients: Coefficients) -> TensorPlan | None:
    """One tensor as the planner decides it for the scaled schedule (chatvector.plan.planner._plan_tensor)."""
    if t.kept and not t.kept.startswith(KEPT_AT_ZERO):
        return t  # kept whatever λ is (a tensor base or chat lacks): its λ are 0 in every variant
    value, reason = coefficients.explain(t.name, plan.num_layers)
    lambdas = tuple(v.weight * value for v in plan.vectors)
    if not any(lambdas) and not t.row_copies:
        return TensorPlan(t.name, t.shape, t.cp_dtype, t.out_dtype, lambdas, reason, {"cp": t.files["cp"]},
                          kept=f"{KEPT_AT_ZERO}{reason})")
    was_merged = not t.kept and any(t.lambdas)  # t.delta_rows and base/chat files are known for its vectors
    files = {"cp": t.files["cp"]}
    for vector, lam in zip(plan.vectors, lambdas):
        if lam != 0:
            if not was_merged or vector.base not in t.files or vector.chat not in t.files:
                return None
            files[vector.base], files[vector.chat] = t.files[vector.base], t.files[vector.chat]
    chat_role = plan.vectors[0].chat
    if t.row_copies:
        files[chat_role] = t.files[chat_role]
    return dataclasses.replace(t, lambdas=lambdas, reason=reason, files=files, kept="",
                               delta_rows=t.delta_rows if any(lambdas) else None)


def reading_plan(plans: Sequence[Plan]) -> Plan:
    """The first plan with every plan's input files (per tensor and per source): what the one pass fetches,
    hashes and checks against the Hub's listing."""
    first = plans[0]
    tensors = []
    for group in zip(*(p.tensors for p in plans)):
        files: dict[str, str] = {}
        for t in group:
            files.update(t.files)
        tensors.append(dataclasses.replace(group[0], files=files))
    sources = {}
    for role, s in first.sources.items():
        files = {}
        for p in plans:
            files.update(p.sources[role].files)
        sources[role] = dataclasses.replace(s, files=dict(sorted(files.items())))
    return dataclasses.replace(first, tensors=tuple(tensors), sources=sources)


def lambda_range(plan: Plan) -> tuple[float, float]:
    """The smallest and largest λ the plan gives any tensor and vector (0 where cp is kept)."""
    values = [lam for t in plan.tensors for lam in t.lambdas] or [0.0]
    return min(values), max(values)
