"""Names and tables every stage agrees on: file names, dtypes, tensor roles, and how long lists are shown.

Pure data and tiny helpers, no I/O and no heavy imports (the plan and the CLI import this before torch).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]  # the checkout: recipes/, templates/ (editable installs)


def shipped(relative: str) -> Path:
    """A file or folder whose source is the checkout's top level (`templates`, `recipes/demo.yaml`): the copy a
    wheel carries inside the package (setup.py puts it there), else the checkout's own (editable installs)."""
    packaged = Path(__file__).resolve().parent / relative
    return packaged if packaged.exists() else PROJECT_ROOT / relative

# -- files of a model folder ------------------------------------------------------------------------------
CONFIG_FILE = "config.json"
GENERATION_CONFIG_FILE = "generation_config.json"
TOKENIZER_CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_MAP_FILE = "special_tokens_map.json"
TOKENIZER_JSON_FILE = "tokenizer.json"
CHAT_TEMPLATE_FILE = "chat_template.jinja"  # what transformers writes today; overrides the config field
CHAT_TEMPLATE_JSON_FILE = "chat_template.json"  # an older layout: {"chat_template": ...}
SINGLE_WEIGHTS_FILE = "model.safetensors"
WEIGHTS_INDEX_FILE = "model.safetensors.index.json"
CARD_FILE = "README.md"
PROVENANCE_FILE = "chatvector.json"
CHART_FILE = "coefficients.svg"
RESPONSES_FILE = "eval_responses.jsonl"  # the evaluation's responses, published beside the weights
JOURNAL_FILE = "journal.jsonl"  # a streaming publish's record of the shards it uploaded (kept for a rerun)
SWEEP_REPORT_FILE = "sweep.json"  # a λ sweep's report, in its --out folder
SWEEP_SUMMARY_FILE = "sweep.md"  # the same, as text
SWEEP_CHART_FILE = "sweep.svg"  # the scores against the factor (`--eval`, `--publish`), also in each variant's folder
GITATTRIBUTES_FILE = ".gitattributes"

# Tokenizer files copied from cp into the output (plus any *.tiktoken), in this order.
TOKENIZER_FILES = (
    TOKENIZER_JSON_FILE,
    TOKENIZER_CONFIG_FILE,
    SPECIAL_TOKENS_MAP_FILE,
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
)
# At least one of these makes a folder's tokenizer loadable.
TOKENIZER_VOCAB_FILES = (TOKENIZER_JSON_FILE, "tokenizer.model", "vocab.json", "vocab.txt")
TIKTOKEN_PATTERN = "*.tiktoken"
# Everything planning reads besides weights: small files, fetched before any weight byte.
METADATA_PATTERNS = (
    CONFIG_FILE,
    GENERATION_CONFIG_FILE,
    *TOKENIZER_FILES,
    TIKTOKEN_PATTERN,
    CHAT_TEMPLATE_FILE,
    CHAT_TEMPLATE_JSON_FILE,
    WEIGHTS_INDEX_FILE,
    CARD_FILE,
)
SMALL_FILE_BYTES = 10 * 1024 * 1024  # the Hub's LFS threshold: larger files are always LFS there, and are
# identified by size and mtime (not content) when they are local
# Weight files an output replaces: an earlier version's files that the new one lacks are deleted.
OWNED_WEIGHT_FILE = re.compile(r"^model(-\d{5}-of-\d{5})?\.safetensors(\.index\.json)?$")


def shard_filenames(count: int) -> list[str]:
    """The names transformers' save_pretrained gives `count` weight files."""
    if count == 1:
        return [SINGLE_WEIGHTS_FILE]
    return [f"model-{i:05d}-of-{count:05d}.safetensors" for i in range(1, count + 1)]


# -- dtypes ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DType:
    name: str  # torch's name: "bfloat16"
    code: str  # safetensors' code: "BF16"
    itemsize: int  # bytes per element
    floating: bool = True


_ALL_DTYPES = (
    DType("bfloat16", "BF16", 2),
    DType("float16", "F16", 2),
    DType("float32", "F32", 4),
    DType("float64", "F64", 8),
    DType("float8_e4m3fn", "F8_E4M3", 1, floating=False),  # no arithmetic on fp8 here
    DType("float8_e5m2", "F8_E5M2", 1, floating=False),
    DType("int8", "I8", 1, floating=False),
    DType("uint8", "U8", 1, floating=False),
    DType("bool", "BOOL", 1, floating=False),
    DType("int16", "I16", 2, floating=False),
    DType("uint16", "U16", 2, floating=False),
    DType("int32", "I32", 4, floating=False),
    DType("uint32", "U32", 4, floating=False),
    DType("int64", "I64", 8, floating=False),
    DType("uint64", "U64", 8, floating=False),
)
DTYPE_BY_CODE: dict[str, DType] = {d.code: d for d in _ALL_DTYPES}
DTYPE_BY_NAME: dict[str, DType] = {d.name: d for d in _ALL_DTYPES}
MERGEABLE_CODES = ("BF16", "F16", "F32", "F64")  # inputs the arithmetic reads
OUTPUT_DTYPE_NAMES = ("bfloat16", "float16", "float32")  # what an output may be stored as


# -- tensor roles -----------------------------------------------------------------------------------------
# The tensors outside the layer stack, by what they are: the one table the planner, the checkpoint reader,
# verification, the provenance and the card read (layer membership and norms follow it). Weights and biases
# alike: transformers' resize_token_embeddings resizes `lm_head.bias` (phi, GPT-J) with the weight, so both
# have the vocabulary as their first axis.
@dataclass(frozen=True)
class TensorRole:
    key: str  # "embedding", "output_head", "final_norm"
    pattern: re.Pattern[str]  # searched in the full tensor name
    vocab_axis: bool  # its first axis is the vocabulary: rows only cp has keep cp's values
    llama_name: str  # Llama's name for it: what a provenance that records no names describes

    def matches(self, name: str) -> bool:
        # outside the layers only: a layer's own `norm` is not the final norm
        return bool(self.pattern.search(name)) and layer_index(name) is None


_PARAM = r"\.(?:weight|bias)$"
EMBEDDING = TensorRole(  # Llama, Mistral, Qwen2, phi / GPT-2, GPT-J / Falcon, BLOOM / GPT-NeoX / InternLM2
    "embedding", re.compile(r"(?:^|\.)(?:embed_tokens|wte|word_embeddings|embed_in|tok_embeddings)" + _PARAM),
    vocab_axis=True, llama_name="model.embed_tokens.weight")
OUTPUT_HEAD = TensorRole(  # most / GPT-NeoX / InternLM2 (top level only: `attention.output` is no head)
    "output_head", re.compile(r"(?:(?:^|\.)(?:lm_head|embed_out)|^output)" + _PARAM),
    vocab_axis=True, llama_name="lm_head.weight")
FINAL_NORM = TensorRole(  # Llama / GPT-2, GPT-J, Falcon, BLOOM / GPT-NeoX / phi
    "final_norm", re.compile(r"(?:^|\.)(?:norm|ln_f|final_layer_norm|final_layernorm)" + _PARAM),
    vocab_axis=False, llama_name="model.norm.weight")
TENSOR_ROLES = (EMBEDDING, OUTPUT_HEAD, FINAL_NORM)
# Any norm, in a layer or not (RMSNorm/LayerNorm names: `input_layernorm`, `ln_1`, `norm`, `q_norm`, ...).
NORM_TENSOR = re.compile(r"(?:norm|(?:^|\.)ln_\w+)\.weight$")
# A tensor of layer i has a `layers.<i>.` component (or an architecture's equivalent); the leftmost counts.
_LAYER_COMPONENT = re.compile(r"(?:^|\.)(?:layers|layer|blocks|h)\.(\d+)\.")
LAYER_CONFIG_KEYS = ("num_hidden_layers", "n_layer", "num_layers", "n_layers")


def layer_index(tensor_name: str) -> int | None:
    """The layer a tensor belongs to: `model.layers.3.mlp.up_proj.weight` -> 3; `lm_head.weight` -> None."""
    match = _LAYER_COMPONENT.search(tensor_name)
    return int(match.group(1)) if match else None


def tensor_role(name: str) -> TensorRole | None:
    """The role a tensor plays outside the layers; None for a layer's tensor or one no role names (`wpe`)."""
    return next((role for role in TENSOR_ROLES if role.matches(name)), None)


def is_vocab_axis(name: str, shape: tuple[int, ...]) -> bool:
    """Whether the tensor's first axis is the vocabulary (an embedding or output head, weight or bias)."""
    role = tensor_role(name)
    return role is not None and role.vocab_axis and len(shape) >= 1


def role_tensor(names: Iterable[str], role: TensorRole) -> str | None:
    """The weight that plays `role` among `names`: the shortest such name (the text model's, not a vision
    tower's); None when there is none (a tied output head is not stored)."""
    hits = [n for n in names if n.endswith(".weight") and role.matches(n)]
    return min(hits, key=lambda n: (len(n), n)) if hits else None


def module_name(tensor_name: str) -> str:
    """`transformer.wte.weight` -> `wte`: the short name a reader knows the module by."""
    return tensor_name.rsplit(".", 2)[-2] if tensor_name.count(".") else tensor_name


# -- long lists in one line -------------------------------------------------------------------------------
SHOWN = 10  # items spelled out in a one-line summary; the rest are counted


def summarize(items: Iterable[str], shown: int = SHOWN, sep: str = "; ") -> str:
    """"a; b; c" or, past `shown` items, "a; b; ... and 12 more"."""
    items = list(items)
    text = sep.join(items[:shown])
    if len(items) > shown:
        text += f"{sep}... and {len(items) - shown} more"
    return text
