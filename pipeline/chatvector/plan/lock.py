"""plan.json as a lock: `chatvector plan RECIPE --json > plan.json`, then `merge|publish RECIPE --plan plan.json`.

A locked run uses exactly the plan's commits and decisions. It refuses, with one line each, when the recipe no
longer says what the plan was made from, when another chatvector version made it, or when an input file the
plan reads is gone or changed (a rewritten repository history, an edited local folder).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from chatvector import __version__
from chatvector.errors import FieldError, HubError, PipelineError, PlanError, Problem
from chatvector.hub.client import hub_call
from chatvector.plan.plan import Plan
from chatvector.plan.sources import hub_listing, list_local_files
from chatvector.recipe.recipe import Recipe

if TYPE_CHECKING:
    from huggingface_hub import HfApi

REMAKE = "make it again: chatvector plan RECIPE --json > plan.json"


def read_plan_file(path: str | Path) -> Plan:
    """Load plan.json; any problem with the file is one line naming it."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"--plan {path}: no such file (write one with: chatvector plan RECIPE --json > "
                            f"{path.name})") from None
    except (OSError, UnicodeDecodeError) as err:
        raise PipelineError(f"--plan {path}: cannot read it: {getattr(err, 'strerror', None) or err}") from None
    except ValueError as err:
        raise PipelineError(f"--plan {path}: not JSON ({err}); {REMAKE}") from None
    try:
        return Plan.from_dict(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise PipelineError(f"--plan {path}: not a chatvector plan ({type(err).__name__}: {err}); {REMAKE}") from None


def locked_plan(path: str | Path, recipe: Recipe, api: "HfApi") -> Plan:
    """The plan in `path`, checked against `recipe` and the inputs as they are now; raises PlanError."""
    plan = read_plan_file(path)
    problems = check_lock(plan, recipe, api, Path(path).name)
    if problems:
        raise PlanError(problems)
    plan.recipe = recipe
    return plan


def check_lock(plan: Plan, recipe: Recipe, api: "HfApi", name: str = "plan.json") -> list[Problem]:
    if plan.tool_version != __version__:
        return [Problem(f"{name} was made by chatvector {plan.tool_version}, this is {__version__}; {REMAKE}")]
    if plan.recipe_sha256 != recipe.normalized_sha256:
        return [Problem(f"{name} was made from another recipe, or {recipe.path} changed since "
                        f"({plan.recipe_path} then); {REMAKE}")]
    problems = []
    for role, source in plan.sources.items():
        try:
            listing = _listing(api, role, source)
        except (FieldError, HubError) as err:
            problems.append(Problem(f"{name}: {role} ({source.label}) cannot be read any more: {err}"))
            continue
        changed = [f for f, planned in source.files.items() if listing.get(f) != planned.id]
        if changed:
            what = ", ".join(f"{f} ({'gone' if f not in listing else 'changed'})" for f in changed[:5])
            more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
            problems.append(Problem(f"{name}: {role} ({source.label}) is not what the plan read: {what}{more}; "
                                    f"{REMAKE}"))
    return problems


def _listing(api: "HfApi", role: str, source) -> dict[str, str]:
    """{file: identity} of a source as it is now."""
    if source.is_local:
        folder = Path(source.path)
        if not folder.is_dir():
            raise FieldError(f"{role}.path", f"folder {folder} does not exist")
        return {name: f.identity for name, f in list_local_files(folder).items()}
    with hub_call(api, source.repo_id, field=role, revision=source.sha):
        info = api.model_info(source.repo_id, revision=source.sha, files_metadata=True)
    return {name: f.identity for name, f in hub_listing(info).items()}
