"""Deterministic tiny base/chat/cp checkpoint triplets for tests, the demo and benchmarks.

`write_triplet` writes three real, loadable Hugging Face folders (llama, qwen2 or mistral; or, for the
tensor-naming tests, one of OTHER_ARCHS: phi, GPT-J, GPT-NeoX, GPT-2, Falcon with transformers' own configs):

* base: random weights, no chat template;
* chat: base + a small delta on every tensor, the arch's chat template, eos = the end-of-turn token;
* cp:   base + another small delta, optionally with new (Korean) tokens appended to the vocabulary.

All three share the base vocabulary, token for token, as Llama-3 and Llama-3-Instruct do.
The same `TripletSpec` always gives byte-identical files.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import random
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chatvector.conventions import NORM_TENSOR, is_vocab_axis

if TYPE_CHECKING:  # importing huggingface_hub at runtime is not needed to write folders
    import huggingface_hub

ARCHS = ("llama", "qwen2", "mistral")  # the families the whole suite runs on
OTHER_ARCHS = ("phi", "gptj", "gpt_neox", "gpt2", "falcon")  # other tensor names: lm_head.bias, wte, embed_in, ...
ALL_ARCHS = ARCHS + OTHER_ARCHS
ROLES = ("base", "chat", "cp")

_DTYPES = ("bfloat16", "float16", "float32")
_MAX_POSITIONS = 2048
_BPE_VOCAB_SIZE = 400  # byte alphabet (256) + ~140 merges (+ specials for mistral): small but real
_BASE_STD = 0.02
_DELTA_STD = 0.004  # ~10% of the weights: survives bf16 rounding (an ulp at 0.02 is ~1.5e-4)
_NORM_DELTA_STD = 0.02  # norms sit at 1.0 where a bf16 ulp is ~0.008; smaller deltas would round away


@dataclass(frozen=True)
class TripletSpec:
    """What to generate; the defaults give a ~200 KB bf16 llama split into several shards."""

    arch: str = "llama"
    num_layers: int = 4
    hidden_size: int = 64
    intermediate_size: int = 128
    num_heads: int = 4
    num_kv_heads: int = 2
    extra_cp_tokens: int = 0  # new tokens appended to cp's tokenizer, embeddings and lm_head
    tied_embeddings: bool | None = None  # None = the arch default: qwen2, gpt2, falcon tied; the others untied
    dtype: str = "bfloat16"  # "bfloat16" | "float16" | "float32"
    max_shard_size: str | int = "100KB"  # small so the default model is split into several shards
    chat_template_in_config: bool = False  # chat template in tokenizer_config.json, not chat_template.jinja
    seed: int = 0

    def __post_init__(self) -> None:
        if self.arch not in ALL_ARCHS:
            raise ValueError(f"arch must be one of {ALL_ARCHS}, got {self.arch!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {self.dtype!r}")
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("hidden_size must divide by num_heads, and num_heads by num_kv_heads")
        if self.extra_cp_tokens < 0 or self.num_layers < 1:
            raise ValueError("extra_cp_tokens must be >= 0 and num_layers >= 1")

    @property
    def tied(self) -> bool:
        """Whether lm_head shares embed_tokens (and so is absent from the checkpoint)."""
        return _ARCH_INFO[self.arch].tied if self.tied_embeddings is None else self.tied_embeddings


# --------------------------------------------------------------------------------------------------
# Per-arch tokens and chat templates (the templates are the real ones, lightly trimmed).

_LLAMA3_TEMPLATE = (
    "{% set loop_messages = messages %}{% for message in loop_messages %}"
    "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' %}"
    "{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

_CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# Mistral-Instruct style: an optional system message is folded into the first user turn; the
# generation prompt is implicit (the model answers after [/INST]), as in the real template.
_MISTRAL_TEMPLATE = (
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] %}{%- set loop_messages = messages[1:] %}"
    "{%- else %}{%- set loop_messages = messages %}{%- endif %}"
    "{{- bos_token }}"
    "{%- for message in loop_messages %}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
    "{{- raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif %}"
    "{%- if message['role'] == 'user' %}"
    "{%- if loop.first and system_message is defined %}"
    "{{- '[INST] ' + system_message + '\n\n' + message['content'] + ' [/INST]' }}"
    "{%- else %}{{- '[INST] ' + message['content'] + ' [/INST]' }}{%- endif %}"
    "{%- elif message['role'] == 'assistant' %}{{- ' ' + message['content'] + eos_token }}"
    "{%- else %}{{- raise_exception('Only system, user and assistant roles are supported') }}"
    "{%- endif %}{%- endfor %}"
)


@dataclass(frozen=True)
class _ArchInfo:
    model_type: str
    architecture: str
    specials: tuple[str, ...]  # every special token, in id order
    specials_first: bool  # True: ids 0.. (sentencepiece style); False: after the BPE vocab (Llama-3/Qwen2)
    bos: str | None
    eos: str
    end_of_turn: str
    pad: str | None
    unk: str | None
    template: str
    tied: bool = False  # the family's usual tie_word_embeddings


_ARCH_INFO = {
    "llama": _ArchInfo(
        "llama", "LlamaForCausalLM",
        ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"),
        specials_first=False, bos="<|begin_of_text|>", eos="<|end_of_text|>", end_of_turn="<|eot_id|>",
        pad=None, unk=None, template=_LLAMA3_TEMPLATE,
    ),
    "qwen2": _ArchInfo(
        "qwen2", "Qwen2ForCausalLM",
        ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
        specials_first=False, bos=None, eos="<|endoftext|>", end_of_turn="<|im_end|>",
        pad="<|endoftext|>", unk=None, template=_CHATML_TEMPLATE, tied=True,
    ),
    "mistral": _ArchInfo(
        "mistral", "MistralForCausalLM",
        ("<unk>", "<s>", "</s>", "[INST]", "[/INST]"),
        specials_first=True, bos="<s>", eos="</s>", end_of_turn="</s>",
        pad=None, unk="<unk>", template=_MISTRAL_TEMPLATE,
    ),
}


def _chatml_family(model_type: str, architecture: str, tied: bool = False) -> _ArchInfo:
    """An OTHER_ARCHS family: its own model class, a GPT-2-style byte-level vocabulary with ChatML turns."""
    return _ArchInfo(model_type, architecture, ("<|endoftext|>", "<|im_start|>", "<|im_end|>"),
                     specials_first=False, bos=None, eos="<|endoftext|>", end_of_turn="<|im_end|>",
                     pad=None, unk=None, template=_CHATML_TEMPLATE, tied=tied)


_ARCH_INFO.update({
    "phi": _chatml_family("phi", "PhiForCausalLM"),  # lm_head has a bias
    "gptj": _chatml_family("gptj", "GPTJForCausalLM"),  # transformer.wte, lm_head with a bias
    "gpt_neox": _chatml_family("gpt_neox", "GPTNeoXForCausalLM"),  # gpt_neox.embed_in, embed_out
    "gpt2": _chatml_family("gpt2", "GPT2LMHeadModel", tied=True),  # transformer.wte, wpe
    "falcon": _chatml_family("falcon", "FalconForCausalLM", tied=True),  # transformer.word_embeddings
})


# --------------------------------------------------------------------------------------------------
# Corpus and tokenizers

_SUBJECTS = (
    "The model", "A small robot", "My neighbour", "The teacher", "Every student", "The old library",
    "Our team", "The weather", "This recipe", "The computer", "A curious cat", "The river", "She", "He",
    "The merge", "The tokenizer", "Your assistant", "The city council", "A young engineer", "The market",
)
_VERBS = (
    "reads", "writes", "answers", "explains", "builds", "finds", "opens", "measures", "learns", "follows",
    "changes", "remembers", "translates", "checks", "shares", "improves", "describes", "counts",
)
_OBJECTS = (
    "the question", "a long letter", "every instruction", "the new language", "a simple story",
    "the weights", "three apples", "the morning news", "a careful plan", "the chat template",
    "two hundred pages", "the final answer", "a quiet song", "the source code", "an old map",
)
_ENDINGS = (
    "before breakfast.", "after the meeting.", "with great care.", "in the evening.", "every day.",
    "without any help.", "for the first time.", "on Monday.", "at 9:30 am.", "in 2024.", "quickly!",
    "and then it rains.", "because it is useful.", "while the sun shines.", "?",
)
_FIXED_LINES = (
    "Hello! How are you today?",
    "I am fine, thank you. What can I do for you?",
    "Please summarize the following text in one sentence.",
    "The quick brown fox jumps over the lazy dog.",
    "def add(a, b):\n    return a + b",
    "for i in range(10): print(i * i)",
    "Q: What is 12 + 30? A: 42.",
    "User: tell me a joke. Assistant: Why did the chicken cross the road?",
    "Chat vectors add instruction following to a continually pre-trained model.",
    "Weights, biases and norms all change a little during fine-tuning.",
)
_KOREAN_LINES = (
    "안녕하세요. 오늘 날씨가 정말 좋네요.",
    "저는 한국어를 배우고 있습니다.",
    "이 모델은 새로운 언어를 공부했습니다.",
    "질문에 친절하게 대답해 주세요.",
    "서울은 한국의 수도입니다.",
    "감사합니다. 좋은 하루 보내세요.",
    "우리는 함께 맛있는 김치찌개를 먹었습니다.",
    "도서관에서 책을 읽는 것을 좋아합니다.",
    "인공지능은 사람의 말을 이해하려고 노력합니다.",
    "내일은 비가 올 것 같아요.",
    "한국어 문장을 영어로 번역해 주세요.",
    "학생들은 아침마다 운동장에서 뛰어요.",
)


def _english_corpus() -> list[str]:
    # random.Random(seed) with choice() is stable across Python 3 versions, so the corpus never changes.
    rng = random.Random(1234)
    lines = list(_FIXED_LINES)
    for _ in range(300):
        words = (rng.choice(_SUBJECTS), rng.choice(_VERBS), rng.choice(_OBJECTS), rng.choice(_ENDINGS))
        lines.append(" ".join(words))
    return lines


# The real split regexes: transformers' Qwen2Tokenizer rebuilds its pre-tokenizer with exactly this one
# when loading, so a different one would tokenize differently through AutoTokenizer.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def _train_bpe(lines: list[str], vocab_size: int, special_tokens: list[str], arch: str = "mistral"):
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    if arch == "mistral":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    else:  # Llama-3 and Qwen2 both split with a regex, then map bytes without ByteLevel's own regex
        split = _LLAMA3_SPLIT if arch == "llama" else _QWEN2_SPLIT
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(split), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ])
        if arch == "qwen2":
            tok.normalizer = normalizers.NFC()
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(lines, trainer=trainer)
    return tok


@functools.lru_cache(maxsize=None)
def _tokenizer_json(arch: str, extra_tokens: int, vocab_size: int | None = None) -> str:
    """tokenizer.json text for `arch`: the shared base vocabulary (trained on a small corpus, or, with
    `vocab_size`, a synthetic one of exactly that many tokens), plus `extra_tokens` appended for cp."""
    from tokenizers import AddedToken, processors

    info = _ARCH_INFO[arch]
    specials_first = list(info.specials) if info.specials_first else []
    if vocab_size is None:
        tok = _train_bpe(_english_corpus(), _BPE_VOCAB_SIZE, specials_first, arch)
    else:
        tok = _synthetic_bpe(vocab_size - (0 if info.specials_first else len(info.specials)), specials_first)
    if not info.specials_first:  # Llama-3 / Qwen2 put their special tokens after the BPE vocabulary
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in info.specials])
    if info.bos is not None:  # Llama-3 and Mistral prepend bos when encoding; Qwen2 has no bos
        bos_id = tok.token_to_id(info.bos)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{info.bos}:0 $A:0", pair=f"{info.bos}:0 $A:0 {info.bos}:1 $B:1",
            special_tokens=[(info.bos, bos_id)],
        )
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    if extra_tokens:
        tok = _extend_vocab(tok, extra_tokens, arch)
    return tok.to_str()


def _synthetic_bpe(size: int, specials: list[str]):
    """A byte-level BPE of exactly `size` tokens (specials first, then the 256 bytes, then two-byte merges in a
    fixed order): as large as a real vocabulary, instant to build, deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate(specials)}
    vocab.update({ch: len(specials) + i for i, ch in enumerate(alphabet)})
    merges = []
    for a in alphabet:
        for b in alphabet:
            if len(vocab) >= size:
                break
            vocab[a + b] = len(vocab)
            merges.append((a, b))
    if len(vocab) < size:
        raise ValueError(f"a synthetic vocabulary has at most {len(vocab)} tokens, {size} were asked for")
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    return tok


def _extend_vocab(tok, n: int, arch: str):
    """Append `n` tokens after every existing id, as a continual-pre-training vocabulary extension does.

    New tokens come from BPE merges learnt on Korean text, appended to the vocab and merge list, so
    they are real byte-level strings that the tokenizer actually produces for Korean input. The
    corpus yields ~280 of them; any further ones are plain added tokens "<|cp_extra_{i}|>".
    """
    from tokenizers import AddedToken, Tokenizer

    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    merges: list = data["model"]["merges"]
    # The BPE vocab must stay gap-free once ids follow the specials (tokenizers would otherwise reassign
    # the added tokens' ids on load), so the specials join the model vocab at their own ids.
    for added_token in data["added_tokens"]:
        vocab.setdefault(added_token["content"], added_token["id"])
    next_id = tok.get_vocab_size(with_added_tokens=True)
    ko = json.loads(_train_bpe(list(_KOREAN_LINES), 256 + 4 * n + 64, [], arch).to_str())
    added = 0
    for merge in ko["model"]["merges"]:
        if added == n:
            break
        left, right = merge if isinstance(merge, list) else merge.split(" ", 1)
        if left + right in vocab:
            continue
        vocab[left + right] = next_id
        merges.append([left, right] if isinstance(merge, list) else merge)
        next_id += 1
        added += 1
    out = Tokenizer.from_str(json.dumps(data, ensure_ascii=False))
    if added < n:  # the Korean corpus ran out of merges: pad with plain added tokens
        out.add_tokens([AddedToken(f"<|cp_extra_{i}|>", normalized=False) for i in range(n - added)])
    return out


def _hf_tokenizer(arch: str, role: str, extra_tokens: int, vocab_size: int | None = None):
    """The transformers tokenizer for one role: chat gets the template and the end-of-turn eos."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    info = _ARCH_INFO[arch]
    chat = role == "chat"
    kwargs = dict(
        bos_token=info.bos,
        eos_token=info.end_of_turn if chat else info.eos,
        pad_token=info.pad,
        unk_token=info.unk,
    )
    if chat:  # base and cp get no "chat_template" key at all (not even a null)
        kwargs["chat_template"] = info.template
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer.from_str(_tokenizer_json(arch, extra_tokens, vocab_size)),
        model_max_length=_MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
        **kwargs,
    )


# --------------------------------------------------------------------------------------------------
# Configs and weights


def _model_config(spec: TripletSpec, role: str, vocab_size: int, tok):
    from transformers import AutoConfig

    info = _ARCH_INFO[spec.arch]
    eos_id = tok.convert_tokens_to_ids(info.end_of_turn if role == "chat" else info.eos)
    kwargs = dict(
        vocab_size=vocab_size,
        **_SIZES[spec.arch](spec),
        tie_word_embeddings=spec.tied,
        bos_token_id=tok.convert_tokens_to_ids(info.bos) if info.bos else None,
        eos_token_id=eos_id,
        pad_token_id=tok.convert_tokens_to_ids(info.pad) if info.pad else None,
        architectures=[info.architecture],
        dtype=spec.dtype,
    )
    return AutoConfig.for_model(info.model_type, **kwargs)


def _llama_sizes(spec: TripletSpec) -> dict:
    sizes = dict(hidden_size=spec.hidden_size, intermediate_size=spec.intermediate_size,
                 num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
                 num_key_value_heads=spec.num_kv_heads, max_position_embeddings=_MAX_POSITIONS, rms_norm_eps=1e-5,
                 rope_theta=10000.0)
    if spec.arch == "mistral":
        sizes["sliding_window"] = None  # the tiny context never reaches a window; None keeps configs simple
    return sizes


def _neox_sizes(spec: TripletSpec) -> dict:  # GPT-NeoX, Falcon and phi name their sizes as Llama does
    sizes = dict(hidden_size=spec.hidden_size, num_hidden_layers=spec.num_layers,
                 num_attention_heads=spec.num_heads, max_position_embeddings=_MAX_POSITIONS)
    if spec.arch != "falcon":  # Falcon's MLP is 4 × hidden
        sizes["intermediate_size"] = spec.intermediate_size
    return sizes


def _gpt2_sizes(spec: TripletSpec) -> dict:  # GPT-2 and GPT-J keep GPT-2's names
    sizes = dict(n_embd=spec.hidden_size, n_layer=spec.num_layers, n_head=spec.num_heads,
                 n_inner=spec.intermediate_size, n_positions=_MAX_POSITIONS)
    if spec.arch == "gptj":
        sizes["rotary_dim"] = spec.hidden_size // spec.num_heads // 2
    return sizes


_SIZES = {"llama": _llama_sizes, "qwen2": _llama_sizes, "mistral": _llama_sizes, "phi": _neox_sizes,
          "gpt_neox": _neox_sizes, "falcon": _neox_sizes, "gpt2": _gpt2_sizes, "gptj": _gpt2_sizes}


def _generation_config(spec: TripletSpec, role: str, tok):
    from transformers import GenerationConfig

    info = _ARCH_INFO[spec.arch]
    eos = tok.convert_tokens_to_ids(info.eos)
    if role == "chat" and info.end_of_turn != info.eos:
        # As Llama-3-Instruct / Qwen2-Instruct: stop at the end of a turn or at the plain eos.
        eos = [tok.convert_tokens_to_ids(info.end_of_turn), eos]
    return GenerationConfig(
        bos_token_id=tok.convert_tokens_to_ids(info.bos) if info.bos else None,
        eos_token_id=eos,
        pad_token_id=tok.convert_tokens_to_ids(info.pad) if info.pad else None,
    )


def _randn(shape, std: float, *key: object):
    """float32 normal noise from a generator seeded by `key`: a tensor never depends on the others."""
    import torch

    digest = hashlib.sha256("/".join(map(str, key)).encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:7], "little"))
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float32) * std


def _is_norm(name: str) -> bool:
    return bool(NORM_TENSOR.search(name))


def _weights(spec: TripletSpec, role: str, shapes: dict[str, tuple[int, ...]], base_vocab: int):
    """float32 tensors for `role`: base, or base + a role-specific delta on every tensor."""
    import torch

    out = {}
    for name, shape in shapes.items():
        # Embedding rows past base's vocabulary exist only in an extended cp; they are fresh random rows.
        extended = is_vocab_axis(name, shape) and shape[0] > base_vocab
        base_shape = (base_vocab, *shape[1:]) if extended else shape
        if _is_norm(name):
            base = torch.ones(base_shape)
        else:
            base = _randn(base_shape, _BASE_STD, spec.seed, "base", name)
        if role != "base":
            std = _NORM_DELTA_STD if _is_norm(name) else _DELTA_STD
            base = base + _randn(base_shape, std, spec.seed, role, "delta", name)
        if extended:
            new_shape = (shape[0] - base_vocab, *shape[1:])
            new_rows = _randn(new_shape, _BASE_STD, spec.seed, role, "new-rows", name)
            base = torch.cat([base, new_rows])
        out[name] = base
    return out


def _write_model(folder: Path, spec: TripletSpec, role: str, tok, base_vocab: int) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    config = _model_config(spec, role, len(tok), tok)
    # Skip transformers' random init: every tensor is overwritten below with seeded values.
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}  # tied lm_head appears once
    state = _weights(spec, role, shapes, base_vocab)
    model.to_empty(device="cpu")
    if spec.tied:  # to_empty allocates lm_head separately; re-tie so it shares embed_tokens again
        model.tie_weights()
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_(state[name])
    model.to(getattr(torch, spec.dtype))
    model.generation_config = _generation_config(spec, role, tok)
    with _no_progress_bars():
        model.save_pretrained(folder, max_shard_size=spec.max_shard_size)


@contextlib.contextmanager
def _no_progress_bars():
    """Hide save_pretrained's per-call "Writing model shards" bar (noise: a triplet takes ~0.1 s)."""
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if was_enabled:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


# --------------------------------------------------------------------------------------------------
# Public API


def write_triplet(out_dir: str | Path, spec: TripletSpec = TripletSpec()) -> dict[str, Path]:
    """Writes out_dir/base, out_dir/chat, out_dir/cp; returns {"base": Path, "chat": Path, "cp": Path}.

    Existing out_dir/{base,chat,cp} folders are replaced, not merged into.
    """
    out_dir = Path(out_dir)
    folders = {}
    base_vocab = None
    for role in ROLES:
        folder = out_dir / role
        if folder.exists():  # stale shards from an earlier, bigger spec would break the index
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        tok = _hf_tokenizer(spec.arch, role, spec.extra_cp_tokens if role == "cp" else 0)
        if base_vocab is None:
            base_vocab = len(tok)
        _write_model(folder, spec, role, tok, base_vocab)
        # save_jinja_files=False is transformers' own switch for the pre-4.43 layout (template in
        # tokenizer_config.json), which many Hub repos still use.
        tok.save_pretrained(folder, save_jinja_files=not spec.chat_template_in_config)
        folders[role] = folder
    return folders


def save_tokenizer(folder: str | Path, role: str, arch: str = "llama", vocab_size: int | None = None) -> int:
    """Write one role's tokenizer files and generation config into `folder` (the chat role gets the arch's chat
    template and end-of-turn eos), for checkpoints made elsewhere (benchmarks); `vocab_size`: a synthetic
    vocabulary of exactly that many tokens. Returns the number of tokens."""
    tok = _hf_tokenizer(arch, role, 0, vocab_size)
    tok.save_pretrained(folder)
    _generation_config(TripletSpec(arch=arch), role, tok).save_pretrained(folder)
    return len(tok)


def upload_model(api: "huggingface_hub.HfApi", folder: Path, repo_id: str, private: bool = False) -> str:
    """create_repo(exist_ok=True) + upload_folder, mirroring the folder; returns the new commit sha."""
    api.create_repo(repo_id, repo_type="model", exist_ok=True, private=private)
    info = api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="model",
        commit_message=f"Upload {Path(folder).name} model",
        # Mirror the folder: a stale index or shard from an earlier seed would shadow the new files.
        delete_patterns="*",
    )
    return info.oid


def seed_hub(
    api: "huggingface_hub.HfApi",
    folders: dict[str, Path],
    namespace: str,
    prefix: str,
    private: bool = False,
) -> dict[str, str]:
    """Upload each role's folder to f"{namespace}/{prefix}-{role}"; returns {role: repo_id}."""
    repo_ids = {}
    for role, folder in folders.items():
        repo_ids[role] = f"{namespace}/{prefix}-{role}"
        upload_model(api, folder, repo_ids[role], private=private)
    return repo_ids


# --------------------------------------------------------------------------------------------------
# A triplet whose answer language flips at a known λ, by construction (for the evaluation's tests)
#
# Every attention and MLP weight is zero, so the residual stream at a position is the embedding of that
# position's token, and the model is a bigram table: after the final RMSNorm (weights 1) a one-hot
# embedding e_k becomes ~√hidden·e_k, so the logit of token v after token t is √hidden·lm_head[v, dim(t)].
# Tokens that matter get their own basis direction dim(t); every other token shares direction 0.
#
# * After the chat template's generation prompt (its last token, "\n"), cp's column favours the first Korean
#   word (weight SWITCH_KO) over the first English word (SWITCH_EN); chat − base adds SWITCH_SHIFT to the English
#   word's row there, so a merge with λ answers in English exactly when SWITCH_EN + λ·SWITCH_SHIFT > SWITCH_KO,
#   i.e. above λ* = (SWITCH_KO − SWITCH_EN) / SWITCH_SHIFT = 0.6 (all three exact binary fractions).
# * Each word is a single token that strongly predicts the next word of its sentence, and the last word
#   predicts the end-of-turn token: the answer is KO_ANSWER or EN_ANSWER, then <|eot_id|>.
# * chat − base also adds SWITCH_DRIFT to the English word's row in direction 0: the more of the vector a merge
#   takes, the less probable everything else is, so its perplexity on Korean text grows with λ.
# * The Korean words are cp's vocabulary extension (appended tokens); the English words are shared by all three.

KO_WORDS = ("안녕하세요!", " 저는", " 한국어로", " 친절하게", " 대답하는", " 도우미입니다.")
EN_WORDS = ("Certainly!", " Here", " is", " my", " answer,", " written", " entirely", " in", " English.")
KO_ANSWER, EN_ANSWER = "".join(KO_WORDS), "".join(EN_WORDS)
SWITCH_KO, SWITCH_EN, SWITCH_SHIFT, SWITCH_DRIFT = 0.625, 0.25, 0.625, 1.0
SWITCH_LAMBDA = (SWITCH_KO - SWITCH_EN) / SWITCH_SHIFT  # 0.6
SWITCH_ENDINGS = ("eot", "leak", "loop")
_CHAIN_WEIGHT = 4.0  # a word's weight for the next word of its sentence: far above any other logit
_LEAK_TOKEN = "<|start_header_id|>"  # "leak": each answer ends "...<|start_header_id|>" before the end of turn


@dataclass(frozen=True)
class SwitchSpec:
    """What `write_switch_triplet` writes. `ending`: "eot" (each answer ends with the end-of-turn token),
    "leak" (a template marker, <|start_header_id|>, comes before it) or "loop" (the last word leads back to the
    first: no end of turn, ever)."""

    ending: str = "eot"
    hidden_size: int = 64

    def __post_init__(self) -> None:
        if self.ending not in SWITCH_ENDINGS:
            raise ValueError(f"ending must be one of {SWITCH_ENDINGS}, got {self.ending!r}")


def _switch_tokenizer(role: str):
    """The llama tokenizer with each English word added as a token (all roles) and, for cp, each Korean word."""
    from tokenizers import AddedToken, Tokenizer
    from transformers import PreTrainedTokenizerFast

    info = _ARCH_INFO["llama"]
    backend = Tokenizer.from_str(_tokenizer_json("llama", 0))
    words = EN_WORDS + (KO_WORDS if role == "cp" else ())
    backend.add_tokens([AddedToken(word, normalized=False) for word in words])
    kwargs = {"chat_template": info.template} if role == "chat" else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, model_max_length=_MAX_POSITIONS, clean_up_tokenization_spaces=False,
        bos_token=info.bos, eos_token=info.end_of_turn if role == "chat" else info.eos, **kwargs,
    )


def _switch_weights(spec: SwitchSpec, role: str, shapes: dict[str, tuple[int, ...]], tok, ids: dict[str, int]):
    """float32 tensors for `role` (see the section comment): zeros but the embeddings, the norms and lm_head."""
    import torch

    state = {name: torch.ones(shape) if _is_norm(name) else torch.zeros(shape) for name, shape in shapes.items()}
    vocab = shapes["model.embed_tokens.weight"][0]
    words = [w for w in (*EN_WORDS, *KO_WORDS) if w in ids]
    chained = ["\n", *words] + ([_LEAK_TOKEN] if spec.ending == "leak" else [])
    dim = {ids[token]: k for k, token in enumerate(chained, start=1)}  # token id -> its basis direction
    if len(dim) + 1 > spec.hidden_size:
        raise ValueError(f"hidden_size must be at least {len(dim) + 1}")
    embed = state["model.embed_tokens.weight"]
    for token_id in range(vocab):
        embed[token_id, dim.get(token_id, 0)] = 1.0
    head = state["lm_head.weight"]
    eot = ids[_ARCH_INFO["llama"].end_of_turn]
    for sentence in (EN_WORDS, KO_WORDS):
        if sentence[0] not in ids:
            continue  # base and chat have no Korean words
        after = {"eot": eot, "leak": ids.get(_LEAK_TOKEN), "loop": ids[sentence[0]]}[spec.ending]
        steps = [ids[w] for w in sentence] + [after]
        for here, following in zip(steps, steps[1:]):
            head[following, dim[here]] = _CHAIN_WEIGHT
    if spec.ending == "leak":
        head[eot, dim[ids[_LEAK_TOKEN]]] = _CHAIN_WEIGHT
    prompt_end, english = dim[ids["\n"]], ids[EN_WORDS[0]]
    head[english, prompt_end] = SWITCH_EN
    if KO_WORDS[0] in ids:
        head[ids[KO_WORDS[0]], prompt_end] = SWITCH_KO
    if role == "chat":  # the chat vector: "answer in English", most of all right after the generation prompt
        head[english, prompt_end] += SWITCH_SHIFT
        head[english, 0] += SWITCH_DRIFT
    return state


def write_switch_triplet(out_dir: str | Path, spec: SwitchSpec = SwitchSpec()) -> dict[str, Path]:
    """Writes out_dir/{base,chat,cp} (float32 llama, one layer); see the section comment for how a merge of them
    answers: KO_ANSWER for λ < SWITCH_LAMBDA, EN_ANSWER above it (chat alone: EN_ANSWER). Returns {role: Path}."""
    import torch
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    model_spec = TripletSpec(num_layers=1, hidden_size=spec.hidden_size, intermediate_size=32, dtype="float32",
                             max_shard_size="10MB")
    folders = {}
    for role in ROLES:
        folder = out_dir / role
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        tok = _switch_tokenizer(role)
        ids = dict(tok.get_vocab())
        ids["\n"] = tok.convert_tokens_to_ids("Ċ")  # the generation prompt's last token (byte-level "\n")
        config = _model_config(model_spec, role, len(tok), tok)
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
        state = _switch_weights(spec, role, shapes, tok, ids)
        model.to_empty(device="cpu")
        with torch.no_grad():
            for name, param in model.named_parameters():
                param.copy_(state[name])
        model.generation_config = _generation_config(model_spec, role, tok)
        with _no_progress_bars():
            model.save_pretrained(folder, max_shard_size=model_spec.max_shard_size)
        tok.save_pretrained(folder)
        folders[role] = folder
    return folders
