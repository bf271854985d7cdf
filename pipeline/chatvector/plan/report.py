"""Human-readable rendering of a plan (`chatvector plan`)."""

from __future__ import annotations

from chatvector.plan.plan import Plan
from chatvector.recipe.coefficients import layer_runs
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


# -- the text of what `publish` / `merge` would do with this plan (chatvector.publish.facts) --------------------------
def short(sha: str | None) -> str:
    return (sha or "local")[:7]


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
