"""The plan: a recipe resolved against the checkpoints' metadata, before any weight is downloaded.

`make_plan` pins every source to a commit, reads configs, tokenizers and safetensors headers, checks that the
checkpoints can be merged as asked, and decides every output tensor's coefficients. The plan is the lock of
later stages: the same plan gives the same output bytes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from chatvector import __version__
from chatvector.checkpoint import DTYPE_BYTES, VOCAB_TENSOR, Checkpoint, load_checkpoint
from chatvector.errors import CompatibilityError
from chatvector.recipe import Recipe
from chatvector.sources import resolve_source

log = logging.getLogger(__name__)
MAX_LISTED = 10


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
    kept: str = ""  # non-empty: cp's value is kept, and why
    delta_rows: int | None = None  # vocabulary tensors: rows that get the delta
    row_copies: tuple[RowCopy, ...] = ()

    @property
    def out_bytes(self) -> int:
        return DTYPE_BYTES[self.out_dtype] * math.prod(self.shape)

    @property
    def merged(self) -> bool:
        return not self.kept and any(lam != 0 for lam in self.lambdas)


@dataclass
class Plan:
    recipe: Recipe
    checkpoints: dict[str, Checkpoint]  # by recipe field path: "base", "chat", "vectors[1].base", "cp"
    tensors: list[TensorPlan]
    ignored: list[tuple[str, str]] = field(default_factory=list)  # tensors of base/chat that cp lacks
    notes: list[str] = field(default_factory=list)

    @property
    def cp(self) -> Checkpoint:
        return self.checkpoints["cp"]

    @property
    def first_chat(self) -> Checkpoint:
        return self.checkpoints[self.recipe.vectors[0].path_of("chat")]

    @property
    def num_layers(self) -> int:
        return self.cp.num_layers

    @property
    def output_bytes(self) -> int:
        return sum(t.out_bytes for t in self.tensors)

    @property
    def download_files(self) -> dict[str, list[str]]:
        """Weight files each Hub checkpoint must download (local ones are read in place)."""
        needed: dict[str, set[str]] = {role: set() for role in self.checkpoints}
        for t in self.tensors:
            needed["cp"].add(self.cp.tensors[t.name].file)
            if t.merged or t.row_copies:
                for i, vector in enumerate(self.recipe.vectors):
                    if t.lambdas[i] != 0:
                        for key in ("base", "chat"):
                            role = vector.path_of(key)
                            needed[role].add(self.checkpoints[role].tensors[t.name].file)
                if t.row_copies:
                    needed[self.recipe.vectors[0].path_of("chat")].add(self.first_chat.tensors[t.name].file)
        return {role: sorted(files) for role, files in needed.items() if not self.checkpoints[role].resolved.is_local}

    @property
    def download_bytes(self) -> int:
        total = 0
        for role, files in self.download_files.items():
            listing = self.checkpoints[role].resolved.files
            total += sum(listing[f].size for f in files if f in listing)
        return total

    def to_dict(self) -> dict:
        """The plan as one JSON document (`chatvector plan --json`, and the provenance's `plan`)."""
        recipe = self.recipe
        return {
            "tool": {"name": "chatvector", "version": __version__},
            "recipe": {"path": str(recipe.path), "sha256": recipe.sha256, "name": recipe.display_name},
            "sources": {role: _source_dict(c) for role, c in self.checkpoints.items()},
            "vectors": [{"base": v.path_of("base"), "chat": v.path_of("chat"), "weight": v.weight}
                        for v in recipe.vectors],
            "layers": {"count": self.num_layers, "coefficients": recipe.coefficients.layer_values(self.num_layers)},
            "modules": [{"match": m.match, "value": m.value} for m in recipe.coefficients.modules],
            "default": recipe.coefficients.default,
            "special_tokens": [{"token": rc.token, "cp_row": rc.cp_row, "chat_row": rc.chat_row}
                               for rc in self._special_rows()],
            "output": {"dtype": recipe.output.dtype or self.cp.dtype, "shard_size": recipe.output.shard_size,
                       "bytes": self.output_bytes, "chat_template": str(recipe.output.chat_template)},
            "download_bytes": self.download_bytes,
            "download_files": self.download_files,
            "tensors": [
                {"name": t.name, "shape": list(t.shape), "dtype": t.out_dtype, "lambdas": list(t.lambdas),
                 "reason": t.reason, **({"kept": t.kept} if t.kept else {}),
                 **({"delta_rows": t.delta_rows} if t.delta_rows is not None else {})}
                for t in self.tensors
            ],
            "ignored": [{"name": n, "why": why} for n, why in self.ignored],
            "notes": self.notes,
        }

    def _special_rows(self) -> tuple[RowCopy, ...]:
        return next((t.row_copies for t in self.tensors if t.row_copies), ())


def _source_dict(c: Checkpoint) -> dict:
    r = c.resolved
    return {
        "repo_id": r.source.repo_id, "path": str(r.source.path) if r.source.path else None,
        "revision": r.source.revision if r.source.repo_id else None, "sha": r.sha,
        "architecture": c.architecture, "model_type": c.model_type, "layers": c.num_layers,
        "vocab_size": c.vocab_size, "dtype": c.dtype, "tied_embeddings": c.tied,
        "weight_files": c.weight_files, "weight_bytes": c.weight_bytes,
    }


def make_plan(recipe: Recipe, api=None) -> Plan:
    """Resolve and check everything the merge needs, from metadata alone."""
    checkpoints: dict[str, Checkpoint] = {}
    for role, source in recipe.sources():
        resolved = resolve_source(recipe, role, source, api=api)
        checkpoints[role] = load_checkpoint(recipe, resolved, api=api)
    cp = checkpoints["cp"]
    _check_family(recipe, checkpoints)
    _check_chat_template(recipe, checkpoints)
    recipe.check_layers(cp.num_layers)
    shared_rows = _check_vocabulary(recipe, checkpoints)
    special = _special_rows(recipe, checkpoints)
    tensors, ignored, problems = [], [], []
    for name, meta in cp.tensors.items():
        tensors.append(_plan_tensor(recipe, checkpoints, name, shared_rows, special, problems))
    for role, c in checkpoints.items():
        for name in c.tensors.keys() - cp.tensors.keys():
            ignored.append((name, f"only in {role}"))
    if problems:
        raise CompatibilityError(_summarise("tensors do not match", problems))
    plan = Plan(recipe, checkpoints, tensors, sorted(set(ignored)))
    if cp.vocab_size > shared_rows:
        plan.notes.append(f"cp adds {cp.vocab_size - shared_rows} tokens (ids {shared_rows}..{cp.vocab_size - 1}); "
                          "their embedding and lm_head rows keep cp's values")
    if cp.tied:
        plan.notes.append("cp ties lm_head to embed_tokens; the output stays tied")
    return plan


def _check_family(recipe: Recipe, checkpoints: dict[str, Checkpoint]) -> None:
    cp = checkpoints["cp"]
    for role, c in checkpoints.items():
        where = recipe.location(role)
        if c.model_type != cp.model_type:
            raise CompatibilityError(f"{where}: {role}: {c.resolved.label} is a {c.model_type} model but cp "
                                     f"({cp.resolved.label}) is a {cp.model_type} model; a chat vector only "
                                     "transfers within one architecture family")
        if c.num_layers != cp.num_layers:
            raise CompatibilityError(f"{where}: {role}: {c.resolved.label} has {c.num_layers} layers but cp "
                                     f"({cp.resolved.label}) has {cp.num_layers}; base, chat and cp must be the "
                                     "same model size")


def _check_chat_template(recipe: Recipe, checkpoints: dict[str, Checkpoint]) -> None:
    choice = recipe.output.chat_template
    if choice in ("chat", "cp"):
        source = checkpoints[recipe.vectors[0].path_of("chat") if choice == "chat" else "cp"]
        if source.chat_template is None:
            raise recipe.error_at("output.chat_template", f"the {choice} model ({source.resolved.label}) has no "
                                  "chat template; name a template file instead")
        templates = source.chat_template.value
    else:
        templates = choice.read_text(encoding="utf-8")
    env = ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"])  # as transformers compiles them
    for template in [templates] if isinstance(templates, str) else [t.get("template", "") for t in templates]:
        try:
            env.parse(template)
        except jinja2.TemplateSyntaxError as err:
            raise recipe.error_at("output.chat_template", f"the chat template does not parse (line {err.lineno}): "
                                  f"{err.message}") from None


def _check_vocabulary(recipe: Recipe, checkpoints: dict[str, Checkpoint]) -> int:
    """The number of leading token ids that cp, every base and every chat share (same strings)."""
    cp = checkpoints["cp"]
    shared = min(c.vocab_size for c in checkpoints.values())
    for role, c in checkpoints.items():
        if role == "cp":
            continue
        for i in range(shared):
            if c.tokens[i] != cp.tokens[i]:
                raise CompatibilityError(
                    f"vocabularies do not line up: token {i} is {c.tokens[i]!r} in {role} ({c.resolved.label}) but "
                    f"{cp.tokens[i]!r} in cp ({cp.resolved.label}); cp's vocabulary must start with base's tokens "
                    "in the same order"
                )
    return shared


def _special_rows(recipe: Recipe, checkpoints: dict[str, Checkpoint]) -> tuple[RowCopy, ...]:
    """Rows copied from the (first) chat model for `special_tokens`, looked up by token string."""
    cp = checkpoints["cp"]
    chat_role = recipe.vectors[0].path_of("chat")
    chat = checkpoints[chat_role]
    rows = []
    for i, token in enumerate(recipe.special_tokens):
        cp_id, chat_id = cp.token_id(token), chat.token_id(token)
        if cp_id is None:
            raise recipe.error_at(f"special_tokens[{i}]", f"token {token!r} is not in cp's tokenizer "
                                  f"({cp.resolved.label})")
        if chat_id is None:
            raise recipe.error_at(f"special_tokens[{i}]", f"token {token!r} is not in the chat model's tokenizer "
                                  f"({chat.resolved.label})")
        rows.append(RowCopy(token, cp_id, chat_id))
    return tuple(rows)


def _plan_tensor(recipe: Recipe, checkpoints: dict[str, Checkpoint], name: str, shared_rows: int,
                 special: tuple[RowCopy, ...], problems: list[str]) -> TensorPlan:
    cp = checkpoints["cp"]
    meta = cp.tensors[name]
    out_dtype = recipe.output.dtype or meta.dtype
    value, reason = recipe.coefficients.explain(name, cp.num_layers)
    lambdas = tuple(v.weight * value for v in recipe.vectors)
    is_vocab = bool(VOCAB_TENSOR.search(name)) and len(meta.shape) >= 1
    missing, mismatched = [], {}
    rows = [meta.shape[0]] if is_vocab else []
    for vector in recipe.vectors:
        for key in ("base", "chat"):
            role = vector.path_of(key)
            other = checkpoints[role].tensors.get(name)
            if other is None:
                missing.append(role)
            elif is_vocab and other.shape[1:] == meta.shape[1:]:
                rows.append(other.shape[0])
            elif other.shape != meta.shape:
                mismatched.setdefault(str(list(other.shape)), []).append(role)
    if mismatched:
        problems.append(f"{name}: shape {list(meta.shape)} in cp but "
                        + ", ".join(f"{shape} in {' and '.join(roles)}" for shape, roles in mismatched.items()))
    base = TensorPlan(name, meta.shape, meta.dtype, out_dtype, lambdas, reason)
    if missing:
        return _replace(base, lambdas=tuple(0.0 for _ in lambdas), kept=f"not in {', '.join(missing)}")
    delta_rows = None
    if is_vocab and len(rows) > 1:
        same_vocab = len({c.vocab_size for c in checkpoints.values()}) == 1
        # Padding rows past the tokenizer (same in every model) merge like any row; otherwise only the
        # token ids every model shares get the delta.
        delta_rows = min(rows) if same_vocab else min(min(rows), shared_rows)
        if all(r == meta.shape[0] for r in rows):  # every model has cp's rows: merge the whole tensor
            delta_rows = None
    copies = special if is_vocab else ()
    for rc in copies:
        chat_rows = checkpoints[recipe.vectors[0].path_of("chat")].tensors[name].shape[0]
        if rc.cp_row >= meta.shape[0] or rc.chat_row >= chat_rows:
            problems.append(f"{name}: special token {rc.token!r} has no row ({rc.cp_row} in cp, {rc.chat_row} in chat)")
    if not any(lambdas) and not copies:
        return _replace(base, kept=f"coefficient 0 ({reason})")
    return _replace(base, delta_rows=delta_rows, row_copies=copies)


def _replace(t: TensorPlan, **changes) -> TensorPlan:
    from dataclasses import replace

    return replace(t, **changes)


def _summarise(title: str, problems: list[str]) -> str:
    shown = problems[:MAX_LISTED]
    more = f"; ... and {len(problems) - MAX_LISTED} more" if len(problems) > MAX_LISTED else ""
    return f"{title}: " + "; ".join(shown) + more
