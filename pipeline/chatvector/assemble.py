"""Everything in the output folder besides the weights: config, generation config, tokenizer, chat template.

The output is cp's model (its config and its tokenizer, extended vocabulary included) that talks like the
chat model: it gets the chat model's chat template and end-of-turn token, in the tokenizer and in
`generation_config.json`, so generation stops at the end of a turn.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from chatvector.checkpoint import TEMPLATE_FILE, ChatTemplate, Checkpoint
from chatvector.errors import CompatibilityError
from chatvector.plan import Plan

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
)


def write_support_files(plan: Plan, out_dir: Path) -> list[str]:
    """Write config, generation config, tokenizer and chat template into out_dir; returns the file names."""
    out_dir = Path(out_dir)
    cp = plan.cp
    eos_token, eos_ids = end_of_turn(plan)
    written = [_write_json(out_dir / "config.json", _config(plan, eos_ids))]
    for name in TOKENIZER_FILES + tuple(f for f in cp.resolved.files if f.endswith(".tiktoken")):
        src = cp.resolved.file_path(name)
        if src.is_file():
            shutil.copyfile(src, out_dir / name)
            written.append(name)
    template = chat_template(plan)
    written += _patch_tokenizer(out_dir, template, eos_token)
    written.append(_write_json(out_dir / "generation_config.json", _generation_config(cp, eos_ids)))
    if not any((out_dir / n).is_file() for n in ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt")):
        raise CompatibilityError(f"cp ({cp.resolved.label}) has no tokenizer files to copy")
    return sorted(set(written))


def _config(plan: Plan, eos_ids: list[int]) -> dict:
    config = dict(plan.cp.config)
    dtype = plan.recipe.output.dtype or plan.cp.dtype
    config["dtype"] = dtype
    if eos_ids and "eos_token_id" in config:  # agree with generation_config.json and the tokenizer
        config["eos_token_id"] = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    if "torch_dtype" in config:  # transformers 4.x name for the same setting
        config["torch_dtype"] = dtype
    return config


def chat_template(plan: Plan) -> ChatTemplate:
    """The template the output gets: the chat model's (default), cp's own, or a file the recipe names,
    stored the way its source stores it. (make_plan already checked that the named model has one.)"""
    choice = plan.recipe.output.chat_template
    if isinstance(choice, Path):
        return ChatTemplate(choice.read_text(encoding="utf-8"), in_config=False)
    template = (plan.first_chat if choice == "chat" else plan.cp).chat_template
    assert template is not None
    return template


def end_of_turn(plan: Plan) -> tuple[str | None, list[int]]:
    """The chat model's end-of-turn token and its generation eos ids, mapped to cp's ids by token string."""
    chat, cp = plan.first_chat, plan.cp
    ids = (chat.generation_config or {}).get("eos_token_id")
    chat_ids = [ids] if isinstance(ids, int) else list(ids or [])
    tok_config_path = chat.resolved.file_path("tokenizer_config.json")
    tok_config = json.loads(tok_config_path.read_text(encoding="utf-8")) if tok_config_path.is_file() else {}
    eos_token = tok_config.get("eos_token")
    if isinstance(eos_token, dict):  # older files store AddedToken dicts
        eos_token = eos_token.get("content")
    if not chat_ids and eos_token is not None and chat.token_id(eos_token) is not None:
        chat_ids = [chat.token_id(eos_token)]
    cp_ids = []
    for i in chat_ids:
        token = chat.tokens[i] if 0 <= i < len(chat.tokens) else None
        cp_id = cp.token_id(token) if token is not None else None
        if cp_id is None:
            raise CompatibilityError(f"the chat model's eos token id {i} ({token!r}) is not in cp's tokenizer")
        cp_ids.append(cp_id)
    if eos_token is not None and cp.token_id(eos_token) is None:
        raise CompatibilityError(f"the chat model's eos token {eos_token!r} is not in cp's tokenizer")
    return eos_token, cp_ids


def _patch_tokenizer(out_dir: Path, template: ChatTemplate, eos_token: str | None) -> list[str]:
    """Store the template where its source had it (chat_template.jinja or tokenizer_config.json) and set eos."""
    written = []
    config_path = out_dir / "tokenizer_config.json"
    config = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    config.pop("chat_template", None)  # one template only: a stale copy here would shadow the new one
    if template.in_config or not isinstance(template.value, str):
        config["chat_template"] = template.value
    else:
        (out_dir / TEMPLATE_FILE).write_text(template.value, encoding="utf-8")
        written.append(TEMPLATE_FILE)
    if eos_token is not None:
        config["eos_token"] = eos_token
    written.append(_write_json(config_path, config))
    special_map = out_dir / "special_tokens_map.json"
    if eos_token is not None and special_map.is_file():
        tokens = json.loads(special_map.read_text(encoding="utf-8"))
        tokens["eos_token"] = eos_token
        _write_json(special_map, tokens)
    return written


def _generation_config(cp: Checkpoint, eos_ids: list[int]) -> dict:
    config = dict(cp.generation_config or {"_from_model_config": True})
    if "bos_token_id" not in config and isinstance(cp.config.get("bos_token_id"), int):
        config["bos_token_id"] = cp.config["bos_token_id"]
    if eos_ids:
        config["eos_token_id"] = eos_ids[0] if len(eos_ids) == 1 else eos_ids
    return config


def _write_json(path: Path, data: dict) -> str:
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    return path.name
