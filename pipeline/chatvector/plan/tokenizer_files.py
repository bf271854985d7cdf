"""What a tokenizer folder says, read from its files (the `tokenizers` library and JSON), as transformers
would load it but without importing transformers (which costs seconds): the token string of every id, its
special and added tokens, and the special tokens a chat template sees (`bos_token`, `eos_token`, ...).

A folder without `tokenizer.json` (a SentencePiece `tokenizer.model` only, a `vocab.txt`) is read with
transformers' AutoTokenizer, the slow path. A test compares both paths on every tiny model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from chatvector.conventions import SPECIAL_TOKENS_MAP_FILE, TOKENIZER_CONFIG_FILE, TOKENIZER_JSON_FILE

NAMED_SPECIALS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# The special tokens some tokenizer classes set when tokenizer_config.json does not name them: transformers
# then adds them to the vocabulary on load (Qwen2's `<|endoftext|>`).
CLASS_DEFAULTS = {
    "Qwen2Tokenizer": {"unk_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>"},
    "GPT2Tokenizer": {"unk_token": "<|endoftext|>", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>"},
}


@dataclass(frozen=True)
class TokenizerFacts:
    tokens: list[str | None]  # the token string of each id (None for a gap)
    special_tokens: tuple[str, ...]  # special and added tokens, by id
    named: dict[str, str]  # bos_token, eos_token, ...: the ones set

    @property
    def eos_token(self) -> str | None:
        return self.named.get("eos_token")


class TokenizerUnreadable(Exception):
    """The tokenizer files are there but do not load; the message says why."""


def read_tokenizer(folder: Path, trust_remote_code: bool = False) -> TokenizerFacts:
    folder = Path(folder)
    if (folder / TOKENIZER_JSON_FILE).is_file():
        return _from_files(folder)
    return _from_transformers(folder, trust_remote_code)


def _string(value) -> str | None:
    if isinstance(value, dict):  # an AddedToken written out
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise TokenizerUnreadable(f"{path.name} is not valid JSON: {err}") from None
    return data if isinstance(data, dict) else {}


def _from_files(folder: Path) -> TokenizerFacts:
    from tokenizers import Tokenizer

    try:
        backend = Tokenizer.from_file(str(folder / TOKENIZER_JSON_FILE))
    except Exception as err:  # noqa: BLE001 - the library's message says what is wrong
        raise TokenizerUnreadable(f"{TOKENIZER_JSON_FILE} does not load: {_whole_message(err)}") from None
    config = _read_json(folder / TOKENIZER_CONFIG_FILE)
    special_map = _read_json(folder / SPECIAL_TOKENS_MAP_FILE)
    vocab = backend.get_vocab(with_added_tokens=True)
    added = {i: t.content for i, t in backend.get_added_tokens_decoder().items()}
    # As transformers' fast tokenizer on load: added tokens of the config, then its named special tokens
    # (or the class's defaults), then its extra special tokens, each appended when the vocabulary lacks it.
    declared = sorted(((int(i), _string(t)) for i, t in (config.get("added_tokens_decoder") or {}).items()
                       if str(i).isdigit()), key=lambda item: item[0])
    defaults = CLASS_DEFAULTS.get(str(config.get("tokenizer_class") or "").removesuffix("Fast"), {})
    named = {}
    for key in NAMED_SPECIALS:
        value = config[key] if key in config else special_map.get(key, defaults.get(key))
        if _string(value):
            named[key] = _string(value)
    extra = config.get("extra_special_tokens") or config.get("additional_special_tokens") or []
    extra = [_string(t) for t in (extra.values() if isinstance(extra, dict) else extra)]
    for token in [t for _, t in declared] + list(named.values()) + extra:
        if token and token not in vocab:
            vocab[token] = len(vocab) if not vocab else max(vocab.values()) + 1
            added[vocab[token]] = token
    size = max(vocab.values(), default=-1) + 1
    tokens: list[str | None] = [None] * size
    for token, index in vocab.items():
        tokens[index] = token
    specials = [added[i] for i in sorted(added)] + [t for t in named.values() if t not in added.values()]
    return TokenizerFacts(tokens, tuple(dict.fromkeys(specials)), named)


def _whole_message(err: Exception) -> str:
    """The library's message on one line, all of it: transformers breaks sentences across lines ("Couldn't
    instantiate the backend tokenizer from one of: (1) ...")."""
    return " ".join(str(err).split()) or type(err).__name__


def _from_transformers(folder: Path, trust_remote_code: bool) -> TokenizerFacts:
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    except Exception as err:  # noqa: BLE001 - transformers raises many types here; the message is what matters
        raise TokenizerUnreadable(_whole_message(err)) from None
    vocab = tok.get_vocab()
    size = max(len(tok), max(vocab.values(), default=-1) + 1)
    tokens: list[str | None] = [None] * size
    for token, index in vocab.items():
        if 0 <= index < size:
            tokens[index] = token
    added = [t.content for _, t in sorted((getattr(tok, "added_tokens_decoder", None) or {}).items())]
    named = {key: str(getattr(tok, key)) for key in NAMED_SPECIALS if getattr(tok, key, None)}
    specials = list(getattr(tok, "all_special_tokens", []) or []) + added
    return TokenizerFacts(tokens, tuple(dict.fromkeys(t for t in specials if t)), named)
