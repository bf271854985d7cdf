"""The recipe a model card shows under "How to reproduce": the recipe as written, pinned.

Every Hub source's `revision` becomes the commit that was merged, so running it gives the same weights whatever
the branches did since; comments go (YAML is re-written), and local paths are cut to their last part (a folder or
file of the maintainer's machine says nothing to a reader and may say too much). A sweep's variant shows its
coefficients scaled by its factor, exactly as the sweep computed them (factor × value), so the recipe reproduces
that variant's bytes with `chatvector merge`.
"""

from __future__ import annotations

from pathlib import PurePath

import yaml

LOCAL_FILE_KEYS = (("output", "chat_template"), ("card", "template"), ("eval", "prompts"), ("eval", "text"))


def pinned_recipe(p: dict, recipe_text: str) -> str | None:
    """The pinned recipe's YAML text, or None when the recipe text is not a YAML mapping (then the card shows it
    as written)."""
    try:
        doc = yaml.safe_load(recipe_text)
    except yaml.YAMLError:
        return None
    if not isinstance(doc, dict):
        return None
    inputs = p.get("inputs") or {}
    vectors = p.get("vectors") or []

    def pin(role: str, written: object) -> object:
        src = inputs.get(role) or {}
        if src.get("repo_id") and src.get("sha"):
            return {"repo_id": src["repo_id"], "revision": src["sha"]}
        if isinstance(written, dict) and written.get("path"):
            return {"path": _last_part(written["path"])}
        return written

    if isinstance(doc.get("vectors"), list):
        for item, roles in zip(doc["vectors"], vectors):
            if isinstance(item, dict):
                item["base"], item["chat"] = pin(roles["base"], item.get("base")), pin(roles["chat"], item.get("chat"))
    elif vectors:
        doc["base"], doc["chat"] = pin(vectors[0]["base"], doc.get("base")), pin(vectors[0]["chat"], doc.get("chat"))
    doc["cp"] = pin("cp", doc.get("cp"))
    factor = (p.get("sweep") or {}).get("factor")
    if factor is not None:
        doc.pop("sweep", None)  # this is one variant: `chatvector merge` of it gives its bytes
        if float(factor) != 1.0 and isinstance(doc.get("coefficients"), dict):
            doc["coefficients"] = _scaled(doc["coefficients"], float(factor))
    for section, key in LOCAL_FILE_KEYS:
        value = (doc.get(section) or {}).get(key) if isinstance(doc.get(section), dict) else None
        if isinstance(value, str) and not (section == "output" and value in ("chat", "cp")):
            doc[section][key] = _last_part(value)
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)


def _last_part(path: object) -> str:
    return PurePath(str(path)).name or str(path)


def _scaled(coefficients: dict, factor: float) -> dict:
    """Every coefficient value times `factor` (the order chatvector.sweep.variants multiplies in)."""
    def times(value: object) -> object:
        return factor * value if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    out = dict(coefficients)
    if "default" in out:
        out["default"] = times(out["default"])
    layers = out.get("layers")
    if isinstance(layers, dict):
        out["layers"] = {k: times(v) for k, v in layers.items()}
    elif isinstance(layers, list):
        out["layers"] = [times(v) for v in layers]
    if isinstance(out.get("gradient"), list):
        out["gradient"] = [times(v) for v in out["gradient"]]
    if isinstance(out.get("modules"), list):
        out["modules"] = [{**m, "value": times(m.get("value"))} if isinstance(m, dict) else m for m in out["modules"]]
    return out
