"""The provenance file: what went into a merged model, and what came out, machine-readable.

Later stages read it back: the model card is rendered from it, and `publish` compares the target repo's copy
with a fresh plan's fingerprint to skip runs where nothing upstream changed.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from chatvector.conventions import CARD_FILE, PROVENANCE_FILE, SMALL_FILE_BYTES
from chatvector.plan.plan import Plan, SourcePlan

PLACEHOLDER_SHA256 = "0" * 64  # a planned output file's hash before it is written (the pre-flight card)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_hashes(source: SourcePlan, folder: Path | None, computed: dict[str, str] | None = None) -> dict[str, str]:
    """sha256 of every input file the run read: as the merge computed it while reading (`computed`, by
    absolute path), else from the Hub's LFS listing, else hashed from the local copy (a small file);
    before the fetch (`folder` None) the files not known from the listing are left out."""
    out = {}
    for name, file in sorted(source.files.items()):
        path = os.path.abspath(folder / name) if folder is not None else None
        if path is not None and computed and path in computed:
            out[name] = computed[path]
        elif file.id.startswith("sha256:"):
            out[name] = file.id.removeprefix("sha256:")
        elif folder is not None and (folder / name).is_file():
            out[name] = sha256_file(folder / name)
    return out


def build_provenance(plan: Plan, *, endpoint: str | None, folders: dict[str, Path] | None = None,
                     out_dir: Path | None = None, weight_hashes: dict[str, str] | None = None,
                     input_sha256: dict[str, str] | None = None, verification: dict | None = None,
                     blob_ids: dict[str, str] | None = None) -> dict:
    """The provenance of a built model folder (`out_dir`, with the merge's `weight_hashes`); without them, the
    provenance the plan promises (planned files with placeholder hashes), for checking a card before the merge.
    blob_ids: git blob ids of small weight files no longer on disk whole (a streaming publish's shards)."""
    recipe = plan.require_recipe()
    inputs = {}
    for role, source in plan.sources.items():
        inputs[role] = {
            "repo_id": source.repo_id, "revision": source.revision, "sha": source.sha, "path": source.path,
            "license": source.license, "files": input_hashes(source, (folders or {}).get(role), input_sha256),
        }
    outputs, blob_ids = _output_hashes(plan, out_dir, weight_hashes, blob_ids or {})
    card = plan.card
    return {
        "tool": {"name": "chatvector", "version": plan.tool_version},
        "hub": {"endpoint": endpoint},
        "recipe": {"path": plan.recipe_path, "sha256": recipe.sha256, "normalized_sha256": plan.recipe_sha256,
                   "name": plan.recipe_name, "text": recipe.text},
        "target": {"repo_id": recipe.target.repo_id, "private": recipe.target.private} if recipe.target else None,
        "card": {"license": card.license, "license_source": card.license_source, "license_name": card.license_name,
                 "license_link": card.license_link, "language": list(card.language), "tags": list(card.tags),
                 "base_models": list(card.base_models), "extra": dict(recipe.card.extra),
                 "warnings": list(plan.warnings)},
        "fingerprint": plan.fingerprint,
        "inputs": inputs,
        "vectors": [{"base": v.base, "chat": v.chat, "weight": v.weight} for v in plan.vectors],
        "coefficients": _coefficients(plan),
        "special_tokens": [{"token": r.token, "cp_row": r.cp_row, "chat_row": r.chat_row} for r in plan.special_rows],
        "vocabulary": {"cp_extra_tokens": plan.cp_extra_tokens, "shared_tokens": plan.shared_tokens},
        # the output's head reads its input embedding's rows (cp's config and tensors, which the output keeps)
        "tied_embeddings": bool(plan.sources["cp"].tied),
        "tensor_roles": plan.tensor_roles,  # the card names these tensors as the model does
        "kept_tensors": [{"name": t.name, "why": t.kept} for t in plan.tensors if t.kept],
        "output": {"dtype": plan.output.dtype, "files": outputs,
                   # small files may be stored without LFS, where the Hub lists only their git blob id
                   "git_blob_ids": blob_ids,
                   "total_bytes": plan.output_bytes, "chat_template": plan.output.chat_template_source},
        "verification": verification or {"checks": [], "sample": None},
    }


def _coefficients(plan: Plan) -> dict:
    """The schedule, with what it decided: how many tensors each module rule, the layer values and the default
    decide, and the least and greatest coefficient a tensor takes (the card says only what applies)."""
    values = [value for _, value in plan.decided()]
    outside = set(filter(None, plan.tensor_roles.values()))  # embedding, head, final norm: the card names them
    return {"default": plan.default, "layers": list(plan.layer_values),
            "modules": [{"match": m.match, "value": m.value, "decides": m.decides} for m in plan.modules],
            "default_decides": plan.default_decides, "layers_decide": plan.layers_decide,
            "range": [min(values), max(values)] if values else None,
            # the plan's λ (one per vector) and deciding rule of the tensors outside the layers, as the card says them
            "tensors": {t.name: {"lambdas": list(t.lambdas), "reason": t.reason} for t in plan.tensors
                        if t.name in outside}}


def _output_hashes(plan: Plan, out_dir: Path | None, weight_hashes: dict[str, str] | None,
                   known_blob_ids: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    from chatvector.plan.sources import git_blob_id

    if out_dir is None:
        names = list(plan.output.files) + [f.name for f in plan.output.support_files]
        return {name: PLACEHOLDER_SHA256 for name in names}, {}
    outputs = dict(weight_hashes or {})
    for path in sorted(Path(out_dir).iterdir()):
        if path.is_file() and path.name not in outputs and path.name not in (PROVENANCE_FILE, CARD_FILE):
            outputs[path.name] = sha256_file(path)
    blob_ids = {name: known_blob_ids.get(name) or git_blob_id(Path(out_dir) / name) for name in outputs
                if (Path(out_dir) / name).stat().st_size < SMALL_FILE_BYTES}
    return outputs, blob_ids


def write_provenance(out_dir: Path, provenance: dict) -> str:
    path = Path(out_dir) / PROVENANCE_FILE
    path.write_text(provenance_text(provenance), encoding="utf-8")
    return PROVENANCE_FILE


def provenance_text(provenance: dict) -> str:
    """chatvector.json's text."""
    return json.dumps(provenance, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def read_provenance(path: Path) -> dict | None:
    """A chatvector.json's content, or None when it is missing or not a JSON object."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
