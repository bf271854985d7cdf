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

from chatvector.recipe import coefficients as c

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
        if float(factor) != 1.0 and isinstance(doc.get("coefficients", {}), dict):
            doc["coefficients"] = _scaled(doc.get("coefficients", {}), float(factor))
    for section, key in LOCAL_FILE_KEYS:
        value = (doc.get(section) or {}).get(key) if isinstance(doc.get(section), dict) else None
        if isinstance(value, str) and not (section == "output" and value in ("chat", "cp")):
            doc[section][key] = _last_part(value)
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, default_flow_style=None, width=100)


def _last_part(path: object) -> str:
    return PurePath(str(path)).name or str(path)


def _scaled(written: dict, factor: float) -> dict:
    """The coefficients as written, each value replaced by the scaled schedule's (`c.scaled_coefficients`: the
    sweep's own arithmetic, so the pinned recipe plans to the variant's bytes)."""
    schedule = c.scaled_coefficients(_schedule(written), factor)
    out = dict(written, default=schedule.default)
    layers = schedule.layers
    if isinstance(layers, c.LayerRanges):
        out["layers"] = {key: r.value for key, r in zip(written["layers"], layers.ranges)}  # keys as written
    elif isinstance(layers, c.LayerList):
        out["layers"] = list(layers.values)
    elif isinstance(layers, c.Gradient):
        out["gradient"] = list(layers.anchors)
    if schedule.modules:
        out["modules"] = [{**m, "value": rule.value} for m, rule in zip(written["modules"], schedule.modules)]
    return out


def _schedule(written: dict) -> c.Coefficients:
    """The schedule of a recipe's `coefficients:` mapping (a recipe that planned: its values are numbers)."""
    layers, gradient = written.get("layers"), written.get("gradient")
    spec: c.LayerSpec | None = None
    if isinstance(layers, dict):
        spec = c.LayerRanges(tuple(c.LayerRange(*c.parse_layer_key(str(k)), v, str(k)) for k, v in layers.items()))
    elif isinstance(layers, list):
        spec = c.LayerList(tuple(layers))
    elif isinstance(gradient, list):
        spec = c.Gradient(tuple(gradient))
    rules = tuple(c.ModuleRule(str(m["match"]), m["value"]) for m in written.get("modules") or [])
    return c.Coefficients(written.get("default", 1.0), spec, rules)
