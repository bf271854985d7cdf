"""The provenance file: what went into a merged model, and what came out, machine-readable.

Later stages read it back: the model card is rendered from it, and `publish` compares the target repo's copy
with a fresh plan to skip runs where nothing upstream changed.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from chatvector import __version__
from chatvector.checkpoint import Checkpoint
from chatvector.plan import Plan

PROVENANCE_FILE = "chatvector.json"
SMALL_FILE_BYTES = 10 * 1024 * 1024  # the Hub's LFS threshold: larger files are always LFS there


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def git_blob_sha1_file(path: Path) -> str:
    """The id git (and the Hub's file listing) gives a file stored without LFS."""
    size = Path(path).stat().st_size
    h = hashlib.sha1(b"blob %d\0" % size)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            h.update(block)
    return h.hexdigest()


def input_fingerprint(plan: Plan) -> dict:
    """What decides the output bytes: the recipe's content, every input's commit, the tool version.

    Two runs with equal fingerprints write identical files, so a publish can skip the second one.
    """
    return {
        "tool_version": __version__,
        "recipe_content_sha256": plan.recipe.content_sha256,
        "inputs": {role: c.resolved.sha or _local_listing(c) for role, c in plan.checkpoints.items()},
    }


def _local_listing(c: Checkpoint) -> str:
    """A local folder has no commit: its file names and sizes stand in (cheap, and catches rewrites)."""
    listing = sorted((f.path, f.size) for f in c.resolved.files.values())
    return "local:" + hashlib.sha256(json.dumps(listing).encode()).hexdigest()


def input_files(c: Checkpoint, names: list[str]) -> dict[str, str]:
    """sha256 of the input files used: free from the Hub's LFS metadata, else hashed from the local copy."""
    out = {}
    for name in sorted(names):
        known = c.resolved.files.get(name)
        if known is not None and known.sha256:
            out[name] = known.sha256
        elif c.resolved.file_path(name).is_file():
            out[name] = sha256_file(c.resolved.file_path(name))
    return out


def build_provenance(plan: Plan, out_dir: Path, weight_files: dict[str, str], endpoint: str | None,
                     verification: dict | None = None) -> dict:
    recipe = plan.recipe
    plan_doc = plan.to_dict()
    inputs = {}
    for role, c in plan.checkpoints.items():
        used = set(c.weight_files) | {n for n in c.resolved.files if (c.resolved.folder / n).is_file()
                                      and not n.endswith(".safetensors")}
        inputs[role] = {
            "repo_id": c.resolved.source.repo_id,
            "revision": c.resolved.source.revision if c.resolved.source.repo_id else None,
            "sha": c.resolved.sha,
            "path": str(c.resolved.source.path) if c.resolved.source.path else None,
            "license": _card_license(c),
            "files": input_files(c, sorted(used)),
        }
    outputs = dict(weight_files)
    for p in sorted(Path(out_dir).iterdir()):
        if p.is_file() and p.name not in outputs and p.name not in (PROVENANCE_FILE, "README.md"):
            outputs[p.name] = sha256_file(p)
    cp = plan.cp
    shared = min(c.vocab_size for c in plan.checkpoints.values())
    return {
        "tool": {"name": "chatvector", "version": __version__},
        "hub": {"endpoint": endpoint},
        "recipe": {"path": str(recipe.path), "sha256": recipe.sha256, "name": recipe.display_name, "text": recipe.text},
        "target": {"repo_id": recipe.target.repo_id, "private": recipe.target.private} if recipe.target else None,
        "card": {"license": recipe.card.license, "language": list(recipe.card.language),
                 "tags": list(recipe.card.tags), "extra": dict(recipe.card.extra)},
        "fingerprint": input_fingerprint(plan),
        "inputs": inputs,
        "vectors": plan_doc["vectors"],
        "coefficients": {"default": plan_doc["default"], "layers": plan_doc["layers"]["coefficients"],
                         "modules": plan_doc["modules"]},
        "special_tokens": plan_doc["special_tokens"],
        "vocabulary": {"cp_extra_tokens": max(0, cp.vocab_size - shared), "shared_tokens": shared},
        "kept_tensors": [{"name": t.name, "why": t.kept} for t in plan.tensors if t.kept],
        "output": {"dtype": plan_doc["output"]["dtype"], "files": outputs,
                   # small files may be stored without LFS, where the Hub lists only their git blob id
                   "git_blob_ids": {n: git_blob_sha1_file(Path(out_dir) / n) for n in outputs
                                    if (Path(out_dir) / n).stat().st_size < SMALL_FILE_BYTES},
                   "total_bytes": plan.output_bytes, "chat_template": plan_doc["output"]["chat_template"]},
        "verification": verification or {"checks": [], "sample": None},
    }


def _card_license(c: Checkpoint) -> str | None:
    """The license in a checkpoint's model card metadata, when it has a card."""
    readme = c.resolved.file_path("README.md")
    if not readme.is_file():
        return None
    from chatvector.localhub.cardmeta import parse_card_data

    data = parse_card_data(readme.read_text(encoding="utf-8", errors="replace")) or {}
    value = data.get("license")
    return value if isinstance(value, str) else None


def write_provenance(out_dir: Path, provenance: dict) -> str:
    path = Path(out_dir) / PROVENANCE_FILE
    path.write_text(json.dumps(provenance, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return PROVENANCE_FILE
