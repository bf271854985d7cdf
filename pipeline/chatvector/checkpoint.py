"""What planning knows about one checkpoint, read from metadata only: config, tokenizer, tensor headers."""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field

from chatvector.errors import CompatibilityError
from chatvector.recipe import Recipe
from chatvector.sources import ResolvedSource, read_safetensors_headers

log = logging.getLogger(__name__)

ST_TO_TORCH = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "float64": 8}
_LAYER_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")
# Tensors whose first axis is the vocabulary, by architecture naming convention.
VOCAB_TENSOR = re.compile(r"(^|\.)(embed_tokens|lm_head|wte|embed_in|embed_out|word_embeddings|tok_embeddings)\.weight$")


TEMPLATE_FILE = "chat_template.jinja"


@dataclass(frozen=True)
class ChatTemplate:
    value: str | list  # a template, or a list of named templates
    in_config: bool  # stored in tokenizer_config.json's "chat_template" field, not chat_template.jinja


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: str  # torch name: "bfloat16", "float16", "float32"
    shape: tuple[int, ...]
    file: str  # file within the checkpoint

    @property
    def nbytes(self) -> int:
        return DTYPE_BYTES.get(self.dtype, 4) * math.prod(self.shape)


@dataclass
class Checkpoint:
    resolved: ResolvedSource
    config: dict
    tensors: dict[str, TensorMeta]
    tokens: list[str] = field(repr=False)  # token string of each id
    generation_config: dict | None = None

    @property
    def role(self) -> str:
        return self.resolved.role

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type") or "?")

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or [self.model_type]
        return str(archs[0])

    @property
    def num_layers(self) -> int:
        for key in _LAYER_KEYS:
            if isinstance(self.config.get(key), int):
                return self.config[key]
        from chatvector.coefficients import layer_index

        indices = [i for i in (layer_index(n) for n in self.tensors) if i is not None]
        return max(indices) + 1 if indices else 0

    @property
    def vocab_size(self) -> int:
        return len(self.tokens)

    @property
    def dtype(self) -> str:
        """The most common tensor dtype (the checkpoint's dtype)."""
        counts: dict[str, int] = {}
        for t in self.tensors.values():
            counts[t.dtype] = counts.get(t.dtype, 0) + t.nbytes
        return max(counts, key=counts.get) if counts else "float32"

    @property
    def weight_files(self) -> list[str]:
        return sorted({t.file for t in self.tensors.values()})

    @property
    def weight_bytes(self) -> int:
        return sum(self.resolved.files[f].size for f in self.weight_files if f in self.resolved.files)

    @property
    def tied(self) -> bool:
        return not any(n.endswith("lm_head.weight") for n in self.tensors)

    @property
    def chat_template(self) -> ChatTemplate | None:
        """The template from chat_template.jinja, chat_template.json or tokenizer_config.json."""
        jinja = self.resolved.file_path(TEMPLATE_FILE)
        if jinja.is_file():
            return ChatTemplate(jinja.read_text(encoding="utf-8"), in_config=False)
        for name in ("chat_template.json", "tokenizer_config.json"):
            path = self.resolved.file_path(name)
            if path.is_file():
                value = json.loads(path.read_text(encoding="utf-8")).get("chat_template")
                if value:
                    return ChatTemplate(value, in_config=True)
        return None

    def token_id(self, token: str) -> int | None:
        try:
            return self.tokens.index(token)
        except ValueError:
            return None


def load_checkpoint(recipe: Recipe, resolved: ResolvedSource, api=None) -> Checkpoint:
    config = _read_json(recipe, resolved, "config.json", required=True)
    if config.get("auto_map") and not recipe.trust_remote_code:
        raise recipe.error_at("trust_remote_code", f"{resolved.label} needs custom code (config.json has auto_map); "
                              "set `trust_remote_code: true` only if you trust that repository")
    weight_files = _weight_files(recipe, resolved)
    headers = read_safetensors_headers(recipe, resolved, weight_files, api=api)
    tensors: dict[str, TensorMeta] = {}
    for file, entries in headers.items():
        for name, (st_dtype, shape) in entries.items():
            if st_dtype not in ST_TO_TORCH:
                raise CompatibilityError(f"{resolved.label}: tensor {name} has dtype {st_dtype}; only float "
                                         "checkpoints can be merged")
            tensors[name] = TensorMeta(name, ST_TO_TORCH[st_dtype], tuple(shape), file)
    tokens = _read_tokens(recipe, resolved)
    generation = _read_json(recipe, resolved, "generation_config.json", required=False)
    log.debug("%s: %d tensors in %d files, %d tokens", resolved.label, len(tensors), len(weight_files), len(tokens))
    return Checkpoint(resolved, config, tensors, tokens, generation)


def _read_json(recipe: Recipe, resolved: ResolvedSource, name: str, required: bool) -> dict | None:
    path = resolved.file_path(name)
    if not path.is_file():
        if required:
            raise recipe.error_at(_field(resolved), f"{resolved.label} has no {name}; is it a transformers model?")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise CompatibilityError(f"{resolved.label}: {name} is not valid JSON: {err}") from None


def _field(resolved: ResolvedSource) -> str:
    return f"{resolved.role}.{'path' if resolved.is_local else 'repo_id'}"


def _weight_files(recipe: Recipe, resolved: ResolvedSource) -> list[str]:
    index = _read_json(recipe, resolved, "model.safetensors.index.json", required=False)
    if index is not None:
        files = sorted(set((index.get("weight_map") or {}).values()))
        missing = [f for f in files if f not in resolved.files]
        if missing:
            raise CompatibilityError(f"{resolved.label}: model.safetensors.index.json names {missing[0]}, "
                                     "which the repository does not have")
        return files
    if "model.safetensors" in resolved.files:
        return ["model.safetensors"]
    if any(n.endswith(".bin") for n in resolved.files):
        raise recipe.error_at(_field(resolved), f"{resolved.label} has only pickle (.bin) weights; chatvector reads "
                              "safetensors only (convert it first, e.g. with the Hub's convert space)")
    raise recipe.error_at(_field(resolved), f"{resolved.label} has no safetensors weights")


def _read_tokens(recipe: Recipe, resolved: ResolvedSource) -> list[str]:
    """Token string of every id, from the tokenizer files alone."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(resolved.folder, trust_remote_code=recipe.trust_remote_code)
    except Exception as err:  # transformers raises many types here; the message is what matters
        raise CompatibilityError(f"{resolved.label}: its tokenizer does not load: {str(err).splitlines()[0]}") from None
    size = len(tokenizer)
    return [str(t) for t in tokenizer.convert_ids_to_tokens(list(range(size)))]
