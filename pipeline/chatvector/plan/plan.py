"""The plan: what a run will do, decided from the checkpoints' metadata before any weight byte moves.

A `Plan` holds every fact later stages need (see `chatvector.plan.planner.make_plan`, which makes one): the
pinned sources and the files the run reads from each, every output tensor's coefficients, rows and sources,
the shard layout, the chat template and where it is stored, the end-of-turn token and its ids, how each
support file is made, the card's metadata and the fingerprint. Later stages only execute it.
`Plan.to_dict()` / `Plan.from_dict()` make it a lock file (`chatvector plan --json > plan.json`, then
`merge|publish --plan plan.json`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from chatvector.conventions import DTYPE_BY_NAME, TENSOR_ROLES, role_tensor
from chatvector.recipe.recipe import Recipe

PLAN_FORMAT = 1  # the version of plan.json's layout


# --------------------------------------------------------------------------------------------------
# What the plan holds (everything JSON-able; see to_dict / from_dict)


@dataclass(frozen=True)
class InputFile:
    size: int
    id: str  # "sha256:..." (LFS), "git:<blob id>", or "local:<size>:<mtime_ns>" (a large local file)


@dataclass(frozen=True)
class SourcePlan:
    role: str
    repo_id: str | None
    path: str | None
    revision: str | None
    sha: str | None
    architecture: str
    model_type: str
    layers: int
    vocab_size: int
    embedding_rows: int | None
    dtype: str
    tied: bool
    license: str | None
    weight_files: tuple[str, ...]  # every weight file of the checkpoint
    weight_bytes: int
    files: dict[str, InputFile]  # every file the run reads from it: the weights it needs and the metadata

    @property
    def is_local(self) -> bool:
        return self.path is not None

    @property
    def label(self) -> str:
        return self.path if self.path is not None else f"{self.repo_id}@{self.sha}"

    @property
    def key(self) -> str:
        """Equal for two roles that name the same checkpoint (a base shared by two vectors)."""
        return self.label


@dataclass(frozen=True)
class VectorPlan:
    base: str  # roles: "base" or "vectors[1].base"
    chat: str
    weight: float


@dataclass(frozen=True)
class RowCopy:
    token: str
    cp_row: int
    chat_row: int


@dataclass(frozen=True)
class TensorPlan:
    name: str
    shape: tuple[int, ...]
    cp_dtype: str
    out_dtype: str
    lambdas: tuple[float, ...]  # one per vector: weight × coefficient(tensor)
    reason: str  # which rule chose the coefficient
    files: dict[str, str]  # role → the file holding this tensor, for every role it is read from
    kept: str = ""  # non-empty: cp's value is kept, and why
    delta_rows: int | None = None  # vocabulary tensors: rows [0, delta_rows) get the delta
    row_copies: tuple[RowCopy, ...] = ()

    @property
    def out_bytes(self) -> int:
        return DTYPE_BY_NAME[self.out_dtype].itemsize * math.prod(self.shape)


@dataclass(frozen=True)
class ModulePlan:
    match: str
    value: float
    decides: int  # tensors whose coefficient this rule decides


@dataclass(frozen=True)
class SupportFile:
    """One output file besides the weights: cp's file copied (`copy_from`), with JSON keys set or removed;
    or `text` written as is."""

    name: str
    copy_from: str | None = None
    set: dict = field(default_factory=dict)
    unset: tuple[str, ...] = ()
    text: str | None = None

    @property
    def is_json(self) -> bool:
        return self.text is None and (bool(self.set) or bool(self.unset) or self.copy_from is None)


@dataclass(frozen=True)
class OutputPlan:
    dtype: str
    shard_size: int
    shards: tuple[tuple[str, ...], ...]  # tensor names of each weight file, in order
    files: tuple[str, ...]  # the weight files' names (plus the index when sharded)
    total_bytes: int
    chat_template_source: str  # "chat", "cp" or a file name
    chat_template_stored_in: str  # chat_template.jinja or tokenizer_config.json
    eos_token: str | None
    eos_ids: tuple[int, ...]  # in cp's (the output's) ids
    support_files: tuple[SupportFile, ...]


@dataclass(frozen=True)
class CardPlan:
    license: str | None
    license_source: str | None  # "recipe", "cp" or None
    license_name: str | None
    license_link: str | None
    language: tuple[str, ...]
    tags: tuple[str, ...]
    base_models: tuple[str, ...]  # Hub sources, cp first


@dataclass
class Plan:
    tool_version: str
    recipe_path: str
    recipe_name: str
    recipe_sha256: str  # of the normalized recipe
    sources: dict[str, SourcePlan]  # by recipe field path: "base", "chat", "vectors[1].base", "cp"
    vectors: tuple[VectorPlan, ...]
    num_layers: int
    default: float
    layer_values: tuple[float, ...]
    modules: tuple[ModulePlan, ...]
    tensors: tuple[TensorPlan, ...]
    output: OutputPlan
    card: CardPlan
    fingerprint: dict
    shared_tokens: int = 0  # leading token ids every checkpoint has, with the same strings and a row
    ignored: tuple[tuple[str, str], ...] = ()  # tensors of base/chat that cp lacks, and where they are
    notes: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    recipe: Recipe | None = field(default=None, repr=False, compare=False)  # attached, never serialized

    @property
    def cp(self) -> SourcePlan:
        return self.sources["cp"]

    @property
    def output_bytes(self) -> int:
        return self.output.total_bytes

    @property
    def shard_bytes(self) -> list[int]:
        """Tensor bytes of each output weight file, in order (each file adds a header of a few KB)."""
        size = {t.name: t.out_bytes for t in self.tensors}
        return [sum(size[name] for name in shard) for shard in self.output.shards]

    @property
    def largest_file_bytes(self) -> int:
        """An upper bound on the largest output weight file's size, header included (a streaming publish's disk:
        the header is 8 bytes + about 100 bytes of JSON per tensor and the metadata; 4 KiB + 256 per tensor)."""
        if not self.output.shards:
            return 0
        return max(b + 4096 + 256 * len(shard) for b, shard in zip(self.shard_bytes, self.output.shards))

    @property
    def cp_extra_tokens(self) -> int:
        """Token ids (with a row) only cp has: its extended vocabulary."""
        cp = self.cp
        return max(0, min(cp.vocab_size, cp.embedding_rows or cp.vocab_size) - self.shared_tokens)

    @property
    def tensor_roles(self) -> dict[str, str | None]:
        """The output's tensor of each role, by its own name: {"embedding": "transformer.wte.weight",
        "output_head": None (tied: not stored), "final_norm": "transformer.ln_f.weight"}."""
        names = [t.name for t in self.tensors]
        return {role.key: role_tensor(names, role) for role in TENSOR_ROLES}

    @property
    def weights_sha256(self) -> str:
        """What decides every tensor byte (`weights_fingerprint`): the shards' headers record it."""
        return self.fingerprint["weights_sha256"]

    def decided(self) -> list[tuple[TensorPlan, float]]:
        """Each tensor whose coefficient applies, with that coefficient (before vector weights), read from the rule
        that decided it (`reason`); a tensor kept because a model lacks it takes none."""
        out = []
        for t in self.tensors:
            if t.kept.startswith("not in "):
                continue
            if t.reason.startswith("module rule "):
                value = self.modules[int(t.reason.split()[2])].value
            elif t.reason.startswith("layer "):
                value = self.layer_values[int(t.reason.split()[1])]
            else:
                value = self.default
            out.append((t, value))
        return out

    @property
    def default_decides(self) -> int:
        """Tensors whose coefficient the default decides (0: layer values and module rules cover every one)."""
        return sum(1 for t, _ in self.decided() if t.reason == "default")

    @property
    def layers_decide(self) -> int:
        """Tensors whose coefficient a layer value decides."""
        return sum(1 for t, _ in self.decided() if t.reason.startswith("layer "))

    @property
    def special_rows(self) -> tuple[RowCopy, ...]:
        return next((t.row_copies for t in self.tensors if t.row_copies), ())

    @property
    def download_files(self) -> dict[str, list[str]]:
        """Weight files each Hub checkpoint must download; a checkpoint named by two roles is listed once."""
        needed: dict[str, set[str]] = {}
        first_role: dict[str, str] = {}
        for role, source in self.sources.items():
            if not source.is_local:
                first_role.setdefault(source.key, role)
        for t in self.tensors:
            for role, file in t.files.items():
                source = self.sources[role]
                if not source.is_local:
                    needed.setdefault(first_role[source.key], set()).add(file)
        return {role: sorted(needed[role]) for role in self.sources if role in needed}

    @property
    def download_bytes(self) -> int:
        return sum(self.sources[role].files[f].size for role, files in self.download_files.items() for f in files)

    def require_recipe(self) -> Recipe:
        if self.recipe is None:
            raise ValueError("this plan has no recipe attached (attach_recipe)")
        return self.recipe

    # -- JSON -----------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The plan as one JSON document (`chatvector plan --json`, the provenance's plan, plan.json)."""
        return {
            "format": PLAN_FORMAT,
            "tool": {"name": "chatvector", "version": self.tool_version},
            "recipe": {"path": self.recipe_path, "name": self.recipe_name, "sha256": self.recipe_sha256},
            "sources": {role: _source_dict(s) for role, s in self.sources.items()},
            "vectors": [{"base": v.base, "chat": v.chat, "weight": v.weight} for v in self.vectors],
            "layers": {"count": self.num_layers, "coefficients": list(self.layer_values)},
            "default": self.default,
            "modules": [{"match": m.match, "value": m.value, "decides": m.decides} for m in self.modules],
            "special_tokens": [{"token": rc.token, "cp_row": rc.cp_row, "chat_row": rc.chat_row}
                               for rc in self.special_rows],
            "vocabulary": {"shared_tokens": self.shared_tokens, "cp_extra_tokens": self.cp_extra_tokens},
            "output": _output_dict(self.output),
            "card": {"license": self.card.license, "license_source": self.card.license_source,
                     "license_name": self.card.license_name, "license_link": self.card.license_link,
                     "language": list(self.card.language), "tags": list(self.card.tags),
                     "base_models": list(self.card.base_models)},
            "download_bytes": self.download_bytes,
            "download_files": self.download_files,
            "tensors": [_tensor_dict(t) for t in self.tensors],
            "ignored": [{"name": n, "why": why} for n, why in self.ignored],
            "notes": list(self.notes),
            "warnings": list(self.warnings),
            "fingerprint": self.fingerprint,
        }

    @classmethod
    def from_dict(cls, doc: dict) -> "Plan":
        """The inverse of to_dict. Raises ValueError (KeyError, TypeError) on a document of another shape."""
        if not isinstance(doc, dict) or doc.get("format") != PLAN_FORMAT:
            raise ValueError(f"not a chatvector plan of format {PLAN_FORMAT}")
        out = doc["output"]
        card = doc["card"]
        return cls(
            tool_version=doc["tool"]["version"],
            recipe_path=doc["recipe"]["path"],
            recipe_name=doc["recipe"]["name"],
            recipe_sha256=doc["recipe"]["sha256"],
            sources={role: _source_from(role, s) for role, s in doc["sources"].items()},
            vectors=tuple(VectorPlan(v["base"], v["chat"], float(v["weight"])) for v in doc["vectors"]),
            num_layers=int(doc["layers"]["count"]),
            default=float(doc["default"]),
            layer_values=tuple(float(v) for v in doc["layers"]["coefficients"]),
            modules=tuple(ModulePlan(m["match"], float(m["value"]), int(m["decides"])) for m in doc["modules"]),
            tensors=tuple(_tensor_from(t) for t in doc["tensors"]),
            output=OutputPlan(
                dtype=out["dtype"], shard_size=int(out["shard_size"]),
                shards=tuple(tuple(s) for s in out["shards"]), files=tuple(out["files"]),
                total_bytes=int(out["bytes"]), chat_template_source=out["chat_template"],
                chat_template_stored_in=out["chat_template_stored_in"], eos_token=out["eos_token"],
                eos_ids=tuple(int(i) for i in out["eos_ids"]),
                support_files=tuple(SupportFile(f["name"], f.get("copy_from"), dict(f.get("set") or {}),
                                                tuple(f.get("unset") or ()), f.get("text"))
                                    for f in out["support_files"]),
            ),
            card=CardPlan(card["license"], card["license_source"], card["license_name"], card["license_link"],
                          tuple(card["language"]), tuple(card["tags"]), tuple(card["base_models"])),
            fingerprint=_fingerprint_from(doc["fingerprint"]),
            shared_tokens=int(doc["vocabulary"]["shared_tokens"]),
            ignored=tuple((i["name"], i["why"]) for i in doc["ignored"]),
            notes=tuple(doc["notes"]),
            warnings=tuple(doc["warnings"]),
        )


def _fingerprint_from(doc: dict) -> dict:
    """The fingerprint of a plan.json; one without the weights' and the model's hashes (an older layout) is not
    this version's plan (KeyError: read_plan_file asks to make it again)."""
    missing = [key for key in ("sha256", "weights_sha256", "model_sha256") if key not in doc]
    if missing:
        raise KeyError(f"fingerprint.{missing[0]}")
    return dict(doc)


def _source_dict(s: SourcePlan) -> dict:
    return {
        "repo_id": s.repo_id, "path": s.path, "revision": s.revision, "sha": s.sha,
        "architecture": s.architecture, "model_type": s.model_type, "layers": s.layers, "vocab_size": s.vocab_size,
        "embedding_rows": s.embedding_rows, "dtype": s.dtype, "tied_embeddings": s.tied, "license": s.license,
        "weight_files": list(s.weight_files), "weight_bytes": s.weight_bytes,
        "files": {name: {"size": f.size, "id": f.id} for name, f in s.files.items()},
    }


def _source_from(role: str, s: dict) -> SourcePlan:
    return SourcePlan(
        role, s["repo_id"], s["path"], s["revision"], s["sha"], s["architecture"], s["model_type"], int(s["layers"]),
        int(s["vocab_size"]), s["embedding_rows"], s["dtype"], bool(s["tied_embeddings"]), s["license"],
        tuple(s["weight_files"]), int(s["weight_bytes"]),
        {name: InputFile(int(f["size"]), f["id"]) for name, f in s["files"].items()},
    )


def _tensor_dict(t: TensorPlan) -> dict:
    doc: dict[str, Any] = {"name": t.name, "shape": list(t.shape), "cp_dtype": t.cp_dtype, "dtype": t.out_dtype,
                           "lambdas": list(t.lambdas), "reason": t.reason, "files": dict(t.files)}
    if t.kept:
        doc["kept"] = t.kept
    if t.delta_rows is not None:
        doc["delta_rows"] = t.delta_rows
    if t.row_copies:
        doc["row_copies"] = [{"token": r.token, "cp_row": r.cp_row, "chat_row": r.chat_row} for r in t.row_copies]
    return doc


def _tensor_from(t: dict) -> TensorPlan:
    return TensorPlan(
        t["name"], tuple(int(d) for d in t["shape"]), t["cp_dtype"], t["dtype"],
        tuple(float(v) for v in t["lambdas"]), t["reason"], dict(t["files"]), t.get("kept", ""), t.get("delta_rows"),
        tuple(RowCopy(r["token"], int(r["cp_row"]), int(r["chat_row"])) for r in t.get("row_copies", ())),
    )


def _output_dict(o: OutputPlan) -> dict:
    return {
        "dtype": o.dtype, "shard_size": o.shard_size, "bytes": o.total_bytes, "files": list(o.files),
        "shards": [list(s) for s in o.shards], "chat_template": o.chat_template_source,
        "chat_template_stored_in": o.chat_template_stored_in, "eos_token": o.eos_token, "eos_ids": list(o.eos_ids),
        "support_files": [{k: v for k, v in (("name", f.name), ("copy_from", f.copy_from), ("set", f.set),
                                             ("unset", list(f.unset)), ("text", f.text)) if v not in (None, {}, [])}
                          for f in o.support_files],
    }


def fingerprint(plan: Plan) -> dict:
    """What decides the output: the normalized recipe, the content of every input file the run reads (by its
    listing's hash: no download), the sources' card licenses (the card may show cp's), and the tool version.
    Two plans with equal fingerprints write identical files, so a publish can skip the second one; a
    README-only commit upstream changes nothing here.

    Two narrower hashes sit inside it: `weights_sha256` (what decides a tensor byte: `weights_fingerprint`, which
    the shards' headers record) and `model_sha256` (what decides every file but the card's: the weights, the
    support files' plan and the input files they are made from). A plan whose `model_sha256` the target
    records already needs only its card files published again (chatvector.publish.publish.card_only)."""
    inputs = {role: {name: f.id for name, f in sorted(s.files.items())} for role, s in sorted(plan.sources.items())}
    weights = weights_fingerprint(plan)
    model = {"weights_sha256": weights, "output": _output_dict(plan.output), "inputs": inputs}
    parts = {
        "tool_version": plan.tool_version,
        "recipe_sha256": plan.recipe_sha256,
        "inputs": inputs,
        "licenses": {role: s.license for role, s in sorted(plan.sources.items())},
        "weights_sha256": weights,
        "model_sha256": _sha256_json(model),
    }
    return {"sha256": _sha256_json(parts), **parts}


def weights_fingerprint(plan: Plan) -> str:
    """The hash of what decides a tensor byte, and nothing else: the tool version (its engine), each tensor's plan
    (shape, dtypes, λ per vector, rows, the files it reads), the shard layout, and the content of the weight files
    read (their listing's hash). Not the recipe's text, name, card, target or eval, nor how a source's revision
    is written: a branch and the commit it points at give the same bytes, so a card's pinned recipe merges to
    byte-identical shards (their headers record this hash as `chatvector_weights_sha256`)."""
    read: dict[str, dict[str, str]] = {}
    for t in plan.tensors:
        for role, file in t.files.items():
            read.setdefault(role, {})[file] = plan.sources[role].files[file].id
    tensors = [{"name": t.name, "shape": list(t.shape), "cp_dtype": t.cp_dtype, "dtype": t.out_dtype,
                "lambdas": list(t.lambdas), "kept": bool(t.kept), "delta_rows": t.delta_rows,
                "row_copies": [[r.cp_row, r.chat_row] for r in t.row_copies], "files": dict(sorted(t.files.items()))}
               for t in plan.tensors]
    return _sha256_json({"tool_version": plan.tool_version, "dtype": plan.output.dtype,
                         "shard_size": plan.output.shard_size, "shards": [list(s) for s in plan.output.shards],
                         "tensors": tensors, "files": read})


def _sha256_json(doc: object) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")).hexdigest()
