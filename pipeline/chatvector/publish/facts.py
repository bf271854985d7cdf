"""What `chatvector merge` and `chatvector publish` would do with a plan, for `chatvector plan`: the target, the
commit (or why nothing would change), the fetch mode and the disk; read from the target's metadata, no weights.
The text of these facts is `chatvector.plan.report` (`render_publish`, `render_fetch_and_disk`)."""

from __future__ import annotations

from pathlib import Path

from chatvector.plan.plan import Plan
from chatvector.publish.changes import changes


def publish_facts(plan: Plan, api) -> dict:
    """What `chatvector publish` would do with this plan, read from the target's metadata (no weights): the
    target (created? private?), the commit (or why nothing would change), the fetch mode and the disk."""
    from chatvector.fetch.workspace import work_folder
    from chatvector.publish.publish import (
        SMALL_FILES_ROOM,
        card_only,
        card_only_files,
        commit_message,
        read_target,
        unchanged,
    )
    from chatvector.publish.sweep import publishes_a_sweep

    recipe = plan.require_recipe()
    target = recipe.require_target()
    facts: dict = {"target": {"repo_id": target.repo_id, "private": bool(target.private), "exists": None,
                              "branch": target.revision, "branch_exists": None, "head": None, "error": None},
                   "would": "commit", "commit_message": commit_message(recipe, plan), "why": [],
                   "eval": _eval_facts(recipe, plan)}
    try:
        state = read_target(api, target.repo_id, "main" if publishes_a_sweep(recipe) else target.revision)
    except Exception as err:  # noqa: BLE001 - the plan still stands; publish would report it
        facts["target"]["error"] = str(err).splitlines()[0] if str(err) else type(err).__name__
        facts["why"] = ["the target could not be read"]
        state = None
    if state is not None:
        facts["target"].update(exists=state.exists, head=state.head, branch_exists=state.branch_exists)
        if publishes_a_sweep(recipe):  # publish keeps the sweep's choice on main, or sweeps again
            return {**facts, **_sweep_facts(plan, state, api)}
        if state.exists and unchanged(plan, state):
            facts.update(would="nothing", why=["the target's chatvector.json records this plan's fingerprint"])
            facts["fetch"], facts["disk"] = None, None
            return facts
        facts["why"] = changes(plan, state)
        if card_only(plan, state):  # the target holds this model: only the card's files would be committed
            endpoint = None if all(s.is_local for s in plan.sources.values()) else api.endpoint
            facts.update(would="card only", files=sorted(card_only_files(plan, state, endpoint)), fetch=None, disk=None)
            return facts
    write_dir = work_folder(plan, target.repo_id)
    facts.update(_fetch_and_disk(plan, recipe.merge.fetch, write_dir,
                                 stream_writes=plan.largest_file_bytes + SMALL_FILES_ROOM))
    return facts


def _sweep_facts(plan: Plan, state, api) -> dict:
    """What publish does with a recipe that has `sweep:` and `eval:` (chatvector.publish.sweep): nothing while main
    holds the sweep's choice, else the sweep again (it checks its own disk: every variant is written whole)."""
    from chatvector.publish.sweep import chosen_on_main, sweep_changes
    from chatvector.recipe.sweep_factors import folder_name

    why = sweep_changes(plan, state, api)
    factors = [float(f) for f in plan.require_recipe().sweep.lambdas]
    if not why:
        return {"would": "nothing", "why": [f"main holds {folder_name(chosen_on_main(state.provenance))}, the sweep's choice "
                                            "for this recipe and the same inputs"], "fetch": None, "disk": None}
    return {"would": "sweep", "why": why, "sweep": {"factors": factors}, "fetch": None, "disk": None}


def _eval_facts(recipe, plan: Plan) -> dict | None:
    """What the publish gate would evaluate and require (the recipe's `eval:`), and the memory it takes."""
    from chatvector.build.preflight import available_memory, eval_memory_need

    spec = recipe.eval
    if spec is None:
        return None
    return {"language": spec.language, "prompts": str(spec.prompts) if spec.prompts else f"shipped:{spec.language}",
            "max_new_tokens": spec.max_new_tokens, "require": spec.require.set(),
            "memory_bytes": eval_memory_need(plan), "memory_available": available_memory()[0]}


def merge_facts(plan: Plan, write_dir: Path) -> dict:
    """The fetch mode and disk of `chatvector merge` writing beside `write_dir` (the --out folder's parent)."""
    return _fetch_and_disk(plan, plan.require_recipe().merge.fetch, write_dir, stream_writes=None)


def _fetch_and_disk(plan: Plan, asked: str, write_dir: Path, stream_writes: int | None) -> dict:
    from chatvector.build import preflight
    from chatvector.fetch.mode import choose_fetch

    choice = choose_fetch(plan, asked, write_dir)
    stream = choice.mode == "stream"
    groups = preflight.disk_needs(plan, write_dir, downloads=0 if stream else None,
                                  writes=stream_writes if stream else None)
    needs = [{"what": n.what, "folder": str(n.folder), "bytes": n.nbytes, "free": free,
              "enough": free >= sum(m.nbytes for m in group)} for group, free in groups for n in group]
    return {"fetch": {"mode": choice.mode, "why": choice.why},
            "disk": {"write_dir": str(write_dir), "needs": needs, "reads_bytes": plan.download_bytes}}
