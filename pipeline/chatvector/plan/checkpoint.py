"""What planning knows about one checkpoint, read once from its metadata files: config, tokenizer, chat
template, end-of-turn token, card license and tensor headers. Nothing here re-reads a file later: the plan
keeps what it decides, and later stages never open a source's metadata again."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from chatvector.conventions import (
    CARD_FILE,
    CHAT_TEMPLATE_FILE,
    CHAT_TEMPLATE_JSON_FILE,
    CONFIG_FILE,
    DTYPE_BY_CODE,
    DTYPE_BY_NAME,
    EMBEDDING,
    GENERATION_CONFIG_FILE,
    LAYER_CONFIG_KEYS,
    MERGEABLE_CODES,
    OUTPUT_HEAD,
    SINGLE_WEIGHTS_FILE,
    TOKENIZER_CONFIG_FILE,
    TOKENIZER_VOCAB_FILES,
    WEIGHTS_INDEX_FILE,
    is_vocab_axis,
    layer_index,
    role_tensor,
)
from chatvector.errors import FieldError
from chatvector.plan.sources import ResolvedSource, read_safetensors_headers
from chatvector.plan.tokenizer_files import TokenizerUnreadable, read_tokenizer

if TYPE_CHECKING:
    from huggingface_hub import HfApi

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChatTemplate:
    value: str | list  # a template, or a list of named templates [{name, template}]
    in_config: bool  # stored in tokenizer_config.json's "chat_template" field, not chat_template.jinja

    @property
    def stored_in(self) -> str:
        return TOKENIZER_CONFIG_FILE if self.in_config or not isinstance(self.value, str) else CHAT_TEMPLATE_FILE

    def default_text(self) -> str:
        """The template transformers uses when none is named: the only one, or the one named "default"."""
        if isinstance(self.value, str):
            return self.value
        named = {t.get("name"): t.get("template", "") for t in self.value if isinstance(t, dict)}
        return named.get("default") or next(iter(named.values()), "")


@dataclass(frozen=True)
class TensorMeta:
    name: str
    dtype: str  # torch name: "bfloat16", "float16", "float32", "float64"
    shape: tuple[int, ...]
    file: str  # file within the checkpoint

    @property
    def nbytes(self) -> int:
        return DTYPE_BY_NAME[self.dtype].itemsize * math.prod(self.shape)


@dataclass
class Checkpoint:
    resolved: ResolvedSource
    config: dict
    tensors: dict[str, TensorMeta]
    weight_files: list[str]
    tokens: list[str | None] = field(repr=False)  # token string of each id (None for a gap in the ids)
    special_tokens: tuple[str, ...] = ()  # the tokenizer's special and added tokens
    named_tokens: dict[str, str] = field(default_factory=dict)  # bos_token, eos_token, ... (what templates see)
    generation_config: dict | None = None
    chat_template: ChatTemplate | None = None
    license: str | None = None  # from its model card's metadata
    metadata_files: tuple[str, ...] = ()  # the metadata files read (all but the card)

    def __post_init__(self) -> None:
        self._ids = {t: i for i, t in enumerate(self.tokens) if t is not None}

    @property
    def eos_token(self) -> str | None:
        """The tokenizer's eos token (its end of turn, for a chat model)."""
        return self.named_tokens.get("eos_token")

    @property
    def role(self) -> str:
        return self.resolved.role

    @property
    def label(self) -> str:
        return self.resolved.label

    @property
    def model_type(self) -> str:
        return str(self.config.get("model_type") or "?")

    @property
    def architecture(self) -> str:
        archs = self.config.get("architectures") or [self.model_type]
        return str(archs[0])

    @property
    def num_layers(self) -> int:
        for key in LAYER_CONFIG_KEYS:
            if isinstance(self.config.get(key), int):
                return self.config[key]
        indices = [i for i in (layer_index(n) for n in self.tensors) if i is not None]
        return max(indices) + 1 if indices else 0

    @property
    def vocab_size(self) -> int:
        """Token ids the tokenizer knows (its highest id + 1)."""
        return len(self.tokens)

    @property
    def embedding_rows(self) -> int | None:
        """Rows of the vocabulary tensors (the fewest, when embed_tokens and lm_head differ); None without any."""
        rows = [t.shape[0] for t in self.tensors.values() if is_vocab_axis(t.name, t.shape)]
        return min(rows) if rows else None

    @property
    def aligned_ids(self) -> int:
        """Token ids that have an embedding row: ids past the rows (tokens a tokenizer adds on load) index
        nothing, so only these need to line up with another checkpoint's."""
        rows = self.embedding_rows
        return self.vocab_size if rows is None else min(self.vocab_size, rows)

    @property
    def dtype(self) -> str:
        """The most common tensor dtype, by bytes (the checkpoint's dtype)."""
        counts: dict[str, int] = {}
        for t in self.tensors.values():
            counts[t.dtype] = counts.get(t.dtype, 0) + t.nbytes
        return max(counts, key=counts.get) if counts else "float32"

    @property
    def weight_bytes(self) -> int:
        return sum(self.resolved.files[f].size for f in self.weight_files if f in self.resolved.files)

    @property
    def embedding_tensor(self) -> str | None:
        """The input embedding's weight, by its own name (`transformer.wte.weight`)."""
        return role_tensor(self.tensors, EMBEDDING)

    @property
    def head_tensor(self) -> str | None:
        """The output head's weight (`lm_head.weight`, `embed_out.weight`); None when it is not stored."""
        return role_tensor(self.tensors, OUTPUT_HEAD)

    @property
    def tied(self) -> bool:
        """Whether the output head reads the input embedding's rows. config's `tie_word_embeddings` decides when
        it is set (true: transformers ignores a stored head); a config that leaves it out takes its class's
        default, which only the weights tell: save_pretrained stores no tied head."""
        text = self.config.get("text_config") if isinstance(self.config.get("text_config"), dict) else self.config
        setting = text.get("tie_word_embeddings", self.config.get("tie_word_embeddings"))
        if isinstance(setting, bool):
            return setting and self.embedding_tensor is not None
        return self.embedding_tensor is not None and self.head_tensor is None

    def token_id(self, token: str) -> int | None:
        return self._ids.get(token)


def load_checkpoint(api: "HfApi", resolved: ResolvedSource, *, trust_remote_code: bool = False) -> Checkpoint:
    """Read one checkpoint's metadata. Raises FieldError naming the recipe field of what is wrong."""
    config = _read_json(resolved, CONFIG_FILE, required=True)
    if config.get("auto_map") and not trust_remote_code:
        raise FieldError("trust_remote_code", f"{resolved.label} needs custom code (config.json has auto_map); "
                         "set `trust_remote_code: true` only if you trust that repository")
    weight_files = _weight_files(resolved)
    tensors: dict[str, TensorMeta] = {}
    for file, entries in read_safetensors_headers(api, resolved, weight_files).items():
        for name, (code, shape) in entries.items():
            if code not in MERGEABLE_CODES:
                raise FieldError(resolved.field, f"{resolved.label}: tensor {name} has dtype {code}; only float "
                                 "checkpoints (BF16, F16, F32, F64) can be merged")
            tensors[name] = TensorMeta(name, DTYPE_BY_CODE[code].name, tuple(shape), file)
    tokenizer = _read_tokenizer(resolved, trust_remote_code)
    checkpoint = Checkpoint(
        resolved, config, tensors, weight_files, tokenizer.tokens,
        special_tokens=tokenizer.special_tokens, named_tokens=tokenizer.named,
        generation_config=_read_json(resolved, GENERATION_CONFIG_FILE, required=False),
        chat_template=_chat_template(resolved), license=_card_license(resolved),
        metadata_files=tuple(sorted(n for n in resolved.files if resolved.file_path(n).is_file()
                                    and not n.endswith(".safetensors") and n != CARD_FILE)),
    )
    log.debug("%s: %d tensors in %d files, %d tokens", resolved.label, len(tensors), len(weight_files),
              len(tokenizer.tokens))
    return checkpoint


def _read_json(resolved: ResolvedSource, name: str, required: bool) -> dict | None:
    path = resolved.file_path(name)
    if not path.is_file():
        if required:
            raise FieldError(resolved.field, f"{resolved.label} has no {name}; is it a transformers model?")
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise FieldError(resolved.field, f"{resolved.label}: {name} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise FieldError(resolved.field, f"{resolved.label}: {name} is not a JSON object")
    return data


def _weight_files(resolved: ResolvedSource) -> list[str]:
    index = _read_json(resolved, WEIGHTS_INDEX_FILE, required=False)
    if index is not None:
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise FieldError(resolved.field, f"{resolved.label}: {WEIGHTS_INDEX_FILE} has no weight_map of file names")
        files = sorted(set(weight_map.values()))
        missing = [f for f in files if f not in resolved.files]
        if missing:
            raise FieldError(resolved.field, f"{resolved.label}: {WEIGHTS_INDEX_FILE} names {missing[0]}, which "
                             "the repository does not have")
        return files
    if SINGLE_WEIGHTS_FILE in resolved.files:
        return [SINGLE_WEIGHTS_FILE]
    if any(n.endswith(".bin") for n in resolved.files):
        raise FieldError(resolved.field, f"{resolved.label} has only pickle (.bin) weights; chatvector reads "
                         "safetensors only (convert it first, e.g. with the Hub's convert space)")
    raise FieldError(resolved.field, f"{resolved.label} has no safetensors weights")


def _read_tokenizer(resolved: ResolvedSource, trust_remote_code: bool):
    if not any(name in resolved.files for name in TOKENIZER_VOCAB_FILES):
        raise FieldError(resolved.field, f"{resolved.label} has no tokenizer files (one of "
                         f"{', '.join(TOKENIZER_VOCAB_FILES)})")
    try:
        return read_tokenizer(resolved.folder, trust_remote_code)
    except TokenizerUnreadable as err:
        raise FieldError(resolved.field, f"{resolved.label}: its tokenizer does not load: {err}") from None


def _chat_template(resolved: ResolvedSource) -> ChatTemplate | None:
    """The template from chat_template.jinja, chat_template.json or tokenizer_config.json, in that order."""
    jinja = resolved.file_path(CHAT_TEMPLATE_FILE)
    if jinja.is_file():
        return ChatTemplate(jinja.read_text(encoding="utf-8"), in_config=False)
    for name in (CHAT_TEMPLATE_JSON_FILE, TOKENIZER_CONFIG_FILE):
        data = _read_json(resolved, name, required=False)
        if data and data.get("chat_template"):
            return ChatTemplate(data["chat_template"], in_config=True)
    return None


def _card_license(resolved: ResolvedSource) -> str | None:
    """The license in the checkpoint's model card metadata, when it has a card."""
    readme = resolved.file_path(CARD_FILE)
    if not readme.is_file():
        return None
    from chatvector.hub.cardrules import parse_card_data

    data = parse_card_data(readme.read_text(encoding="utf-8", errors="replace")) or {}
    value = data.get("license")
    return value if isinstance(value, str) else None
