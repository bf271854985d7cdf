"""Why publishing a plan would make a commit: what differs between the target's provenance (chatvector.json) and
the plan (`chatvector plan`, and a sweep's publish)."""

from __future__ import annotations

from chatvector.plan.plan import Plan
from chatvector.plan.report import short


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
        from chatvector.publish.publish import evaluation_changed

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
