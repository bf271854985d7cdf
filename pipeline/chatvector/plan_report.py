"""Human-readable rendering of a plan (`chatvector plan`)."""

from __future__ import annotations

from pathlib import Path

from chatvector.coefficients import layer_runs
from chatvector.plan import Plan
from chatvector.units import human_bytes

MAX_KEPT_LISTED = 12


def render(plan: Plan) -> str:
    lines = [f"Plan for {plan.recipe_path} ({plan.recipe_name})", "", "Sources"]
    rows = [("role", "source", "architecture", "layers", "vocab", "dtype", "license")]
    for role, s in plan.sources.items():
        rows.append((role, s.label, s.architecture, str(s.layers), str(s.vocab_size), s.dtype, s.license or "-"))
    lines += _table(rows)
    terms = " + ".join(f"{v.weight:g}·λ(t)·({v.chat} − {v.base})" for v in plan.vectors)
    unused = "; it decides no tensor: the rules below cover every one" if plan.tensors and not plan.default_decides \
        else ""
    lines += ["", f"Formula: out = cp + {terms}", "", f"Coefficients λ(t) (default {plan.default:g}{unused})"]
    runs = layer_runs(list(plan.layer_values))
    lines.append("  layers   " + " | ".join(f"{a}: {v:g}" if a == b else f"{a}-{b}: {v:g}" for a, b, v in runs))
    for i, rule in enumerate(plan.modules):  # numbered from 0, as coefficients.modules[i] and the card number them
        lines.append(f"  modules  [{i}] {rule.match!r} → {rule.value:g}  (decides {rule.decides} tensors)")
    if plan.special_rows:
        lines += ["", "Special tokens (rows copied from the chat model)"]
        lines += [f"  {r.token!r}: cp row {r.cp_row} ← chat row {r.chat_row}" for r in plan.special_rows]
    out = plan.output
    shards = len(out.shards)
    eos = f"; end of turn {out.eos_token!r} (ids {', '.join(map(str, out.eos_ids))})" if out.eos_token else ""
    lines += ["", f"Output: {out.dtype}, {len(plan.tensors)} tensors, {human_bytes(plan.output_bytes)} in "
              f"{shards} shard{'s' if shards != 1 else ''} (≤ {human_bytes(out.shard_size)} each); "
              f"chat template from {out.chat_template_source} (in {out.chat_template_stored_in}){eos}"]
    downloads = plan.download_files
    n_files = sum(len(f) for f in downloads.values())
    lines.append(f"Download: {human_bytes(plan.download_bytes)} in {n_files} weight files"
                 + (" (" + ", ".join(f"{role} {len(f)}" for role, f in downloads.items()) + ")" if downloads else ""))
    card = plan.card
    lines.append(f"Card: license {card.license or 'none'}"
                 + (f" (from {card.license_source})" if card.license_source == "cp" else "")
                 + (f", languages {', '.join(card.language)}" if card.language else "")
                 + f", tags {', '.join(card.tags)}")
    kept = [t for t in plan.tensors if t.kept]
    if kept:
        lines += ["", f"Tensors that keep cp's values ({len(kept)})"]
        lines += [f"  {t.name}: {t.kept}" for t in kept[:MAX_KEPT_LISTED]]
        if len(kept) > MAX_KEPT_LISTED:
            lines.append(f"  ... and {len(kept) - MAX_KEPT_LISTED} more (see --json)")
    partial = [t for t in plan.tensors if t.delta_rows is not None and not t.kept]
    if partial:
        lines += ["", "Vocabulary rows that keep cp's values (tokens only cp has)"]
        lines += [f"  {t.name}: rows {t.delta_rows}..{t.shape[0] - 1}" for t in partial]
    if plan.ignored:
        lines += ["", f"Ignored (not in cp): {len(plan.ignored)} tensors, e.g. {plan.ignored[0][0]} ({plan.ignored[0][1]})"]
    if plan.notes:
        lines += ["", "Notes"] + [f"  {n}" for n in plan.notes]
    if plan.warnings:
        lines += ["", "Warnings"] + [f"  {w}" for w in plan.warnings]
    return "\n".join(lines)


def _table(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]


# -- what `publish` / `merge` would do with this plan (`chatvector plan`) ---------------------------------------
def short(sha: str | None) -> str:
    return (sha or "local")[:7]


def publish_facts(plan: Plan, api) -> dict:
    """What `chatvector publish` would do with this plan, read from the target's metadata (no weights): the
    target (created? private?), the commit (or why nothing would change), the fetch mode and the disk."""
    from chatvector.publish import SMALL_FILES_ROOM, card_only, card_only_files, commit_message, read_target, unchanged
    from chatvector.sweep_publish import publishes_a_sweep
    from chatvector.workspace import work_folder

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
    """What publish does with a recipe that has `sweep:` and `eval:` (chatvector.sweep_publish): nothing while main
    holds the sweep's choice, else the sweep again (it checks its own disk: every variant is written whole)."""
    from chatvector.sweep_factors import folder_name
    from chatvector.sweep_publish import chosen_on_main, sweep_changes

    why = sweep_changes(plan, state, api)
    factors = [float(f) for f in plan.require_recipe().sweep.lambdas]
    if not why:
        return {"would": "nothing", "why": [f"main holds {folder_name(chosen_on_main(state.provenance))}, the sweep's choice "
                                            "for this recipe and the same inputs"], "fetch": None, "disk": None}
    return {"would": "sweep", "why": why, "sweep": {"factors": factors}, "fetch": None, "disk": None}


def _eval_facts(recipe, plan: Plan) -> dict | None:
    """What the publish gate would evaluate and require (the recipe's `eval:`), and the memory it takes."""
    from chatvector.preflight import available_memory, eval_memory_need

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
    from chatvector import preflight
    from chatvector.fetchmode import choose_fetch

    choice = choose_fetch(plan, asked, write_dir)
    stream = choice.mode == "stream"
    groups = preflight.disk_needs(plan, write_dir, downloads=0 if stream else None,
                                  writes=stream_writes if stream else None)
    needs = [{"what": n.what, "folder": str(n.folder), "bytes": n.nbytes, "free": free,
              "enough": free >= sum(m.nbytes for m in group)} for group, free in groups for n in group]
    return {"fetch": {"mode": choice.mode, "why": choice.why},
            "disk": {"write_dir": str(write_dir), "needs": needs, "reads_bytes": plan.download_bytes}}


def changes(plan: Plan, state) -> list[str]:
    """Why publishing this plan would make a commit: what differs between the target's provenance and the plan."""
    if not state.exists:
        return ["the target does not exist yet"]
    if state.provenance is None:
        why = ["the target has no chatvector.json (chatvector did not publish it)"]
        if state.foreign_files:
            why.append(f"publish refuses without --overwrite: it holds files chatvector did not publish (e.g. "
                       f"{state.foreign_files[0]})")
        return why
    recorded = state.provenance.get("fingerprint") or {}
    now = plan.fingerprint
    if recorded.get("sha256") == now["sha256"]:
        from chatvector.publish import evaluation_changed

        if evaluation_changed(plan, state.provenance):
            return ["the recipe's eval section changed (the weights would be the same; the evaluation, its "
                    "responses and the card would not)"]
        missing = _missing_output(state)
        return [f"the target no longer holds the output its chatvector.json records ({missing})"]
    why = []
    if recorded.get("tool_version") != now["tool_version"]:
        why.append(f"chatvector {recorded.get('tool_version') or '?'} → {now['tool_version']}")
    if recorded.get("recipe_sha256") != now["recipe_sha256"]:
        why.append(f"the recipe changed (normalized sha256 {short(recorded.get('recipe_sha256'))} → "
                   f"{short(now['recipe_sha256'])})")
    old_inputs, new_inputs = recorded.get("inputs") or {}, now["inputs"]
    old_sources = state.provenance.get("inputs") or {}
    for role in sorted(set(old_inputs) | set(new_inputs)):
        if role not in old_inputs:
            why.append(f"{role} is new")
            continue
        if role not in new_inputs:
            why.append(f"{role} is gone")
            continue
        old, new = old_inputs[role] or {}, new_inputs[role]
        if old == new:
            continue
        files = sorted(n for n in set(old) | set(new) if old.get(n) != new.get(n))
        shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        source = plan.sources.get(role)
        old_sha, new_sha = (old_sources.get(role) or {}).get("sha"), source.sha if source else None
        commits = f" {short(old_sha)} → {short(new_sha)}" if old_sha != new_sha else ""
        why.append(f"{role} changed:{commits} ({shown})")
    old_licenses, new_licenses = recorded.get("licenses") or {}, now.get("licenses") or {}
    for role in sorted(set(new_licenses)):
        if role in old_licenses and old_licenses[role] != new_licenses[role]:
            why.append(f"{role}'s license {old_licenses[role] or 'none'} → {new_licenses[role] or 'none'}")
    return why or [f"the plan's fingerprint changed ({short(recorded.get('sha256'))} → {short(now['sha256'])})"]


def _missing_output(state) -> str:
    output = (state.provenance or {}).get("output") or {}
    blob_ids = output.get("git_blob_ids") or {}
    for name, sha256 in sorted((output.get("files") or {}).items()):
        remote = state.files.get(name)
        if remote is None:
            return f"{name} is gone"
        if (remote.lfs.sha256 != sha256) if remote.lfs is not None else (blob_ids.get(name) != remote.blob_id):
            return f"{name} changed"
    return "an output file differs"


def render_publish(facts: dict) -> list[str]:
    t = facts["target"]
    private = ", private" if t["private"] else ""
    branch = t.get("branch") or "main"
    on = f" branch {branch}" if branch != "main" else ""
    new_branch = f"; branch {branch} will be created" if branch != "main" else ""
    if t["error"]:
        lines = [f"Target: {t['repo_id']}{on}: could not read it ({t['error']}); publish would tell"]
    elif not t["exists"]:
        lines = [f"Target: {t['repo_id']} (will be created{private}{new_branch})"]
    elif not t.get("branch_exists", True):
        lines = [f"Target: {t['repo_id']} (exists; branch {branch} will be created at {short(t['head'])})"]
    else:
        lines = [f"Target: {t['repo_id']}{on} at {short(t['head'])} (exists)"]
    if facts["would"] == "nothing":
        lines.append(f"Publish would: do nothing — {facts['why'][0]}")
        return lines
    if facts["would"] == "sweep":
        factors = ", ".join(f"{f:g}" for f in facts["sweep"]["factors"])
        lines.append(f"Publish would: sweep λ factors {factors} again (`sweep --publish`: evaluate each, publish it to "
                     "its branch lambda-F and the largest factor that passes eval.require to main) — "
                     + "; ".join(facts["why"]))
        return lines
    if facts["would"] == "card only":
        lines.append(f"Publish would: commit \"{facts['commit_message']}\" — card only: {', '.join(facts['files'])} "
                     "(the target holds these weights and the files beside them: no download, no merge, no shard "
                     "upload)" + (" — " + "; ".join(facts["why"]) if facts["why"] else ""))
        return lines
    lines.append(f"Publish would: commit \"{facts['commit_message']}\""
                 + (" — " + "; ".join(facts["why"]) if facts["why"] else ""))
    if facts.get("eval"):
        e = facts["eval"]
        need = ", ".join(f"{k} {'≤' if k == 'perplexity' else '≥'} {v:g}" for k, v in e["require"].items())
        lines.append(f"Evaluate first: {e['language']} prompts ({e['prompts']}), at most {e['max_new_tokens']} new "
                     f"tokens each; " + (f"the push needs {need}" if need else "no threshold: the scores go on the card")
                     + f" (the whole output is written to disk for it, and loaded: about "
                       f"{human_bytes(e['memory_bytes'])} of memory, {human_bytes(e['memory_available'])} available)")
    return lines + render_fetch_and_disk(facts)


def render_fetch_and_disk(facts: dict) -> list[str]:
    fetch, disk = facts["fetch"], facts["disk"]
    lines = [f"Fetch: {fetch['mode']} ({fetch['why']})"]
    writes = [n for n in disk["needs"] if n["what"] == "writes"]
    downloads = [n for n in disk["needs"] if n["what"] == "downloads"]
    written = sum(n["bytes"] for n in writes)
    text = f"Disk: needs {human_bytes(written)} in {disk['write_dir']}"
    if downloads:
        text += f" (downloads {human_bytes(downloads[0]['bytes'])} into the HF cache {downloads[0]['folder']})"
    elif fetch["mode"] == "stream":
        text += f" (streams {human_bytes(disk['reads_bytes'])}: nothing into the HF cache)"
    elif disk["reads_bytes"]:
        text += " (downloads nothing: the inputs are in the HF cache)"
    short_of = [n for n in disk["needs"] if not n["enough"]]
    if short_of:
        text += f"; not enough free: {human_bytes(short_of[0]['free'])} free on {short_of[0]['folder']}'s disk"
    elif disk["needs"]:
        text += f"; {human_bytes(min(n['free'] for n in disk['needs']))} free"
    return lines + [text]
