"""Greedy answers through the model's own chat template, and what makes an answer a well-formed chat turn."""

from __future__ import annotations

import re
from dataclasses import dataclass

from chatvector.evaluation.languages import detect_language
from chatvector.evaluation.models import Loaded
from chatvector.evaluation.prompts import EvalInputError
from chatvector.evaluation.result import Response

# Literal markers a chat template writes around turns: <|im_start|>, <|eot_id|>, [INST], <start_of_turn>, ...
_TEMPLATE_MARKERS = re.compile(r"<\|[^|<>\s]{1,60}\|>|\[/?[A-Z][A-Z_]{1,30}\]|<(?:start|end)_of_turn>")


def chat_template_of(tokenizer) -> str:
    template = tokenizer.chat_template
    if isinstance(template, dict):  # named templates: the default one is what apply_chat_template uses
        template = template.get("default") or next(iter(template.values()), None)
    return template or ""


def markers(tokenizer) -> tuple[str, ...]:
    """The strings that must not appear in a decoded answer: the tokenizer's special tokens (declared and added
    as special) and the literal markers its chat template writes."""
    found = set(tokenizer.all_special_tokens)
    found |= {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}
    found |= set(_TEMPLATE_MARKERS.findall(chat_template_of(tokenizer)))
    return tuple(sorted(m for m in found if m and m.strip()))


def end_of_turn_ids(model, tokenizer) -> list[int]:
    """generation_config.eos_token_id (one id or a list: the chat's end-of-turn, maybe the plain eos), plus the
    tokenizer's eos token, which chatvector sets to the chat model's end-of-turn token."""
    ids = model.generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


@dataclass(frozen=True)
class _Turn:
    tokens: list[int]  # the answer's tokens before the end of turn
    ended: bool


def _split(new_tokens: list[int], stops: set[int]) -> _Turn:
    for i, token in enumerate(new_tokens):
        if token in stops:
            return _Turn(new_tokens[:i], True)
    return _Turn(new_tokens, False)


def generate_responses(loaded: Loaded, prompts: list[str], *, label: str, max_new_tokens: int, seed: int,
                       batch_size: int = 8) -> list[Response]:
    """One greedy answer per prompt (a single user turn, add_generation_prompt=True), in batches."""
    import torch
    from transformers import GenerationConfig

    model, tok = loaded.model, loaded.tokenizer
    if not chat_template_of(tok):
        raise EvalInputError(f"{label} has no chat template (chat_template.jinja, or chat_template in "
                             "tokenizer_config.json): answers are generated through the model's own template; "
                             "evaluate a merged or a chat model")
    stops = end_of_turn_ids(model, tok)
    if not stops:
        raise EvalInputError(f"{label} has no end-of-turn token: neither generation_config.json's eos_token_id "
                             "nor the tokenizer's eos_token is set")
    if tok.pad_token_id is None:  # (many chat tokenizers have none) padding takes the end-of-turn token
        tok.pad_token = tok.convert_ids_to_tokens(stops[0])
    pad = tok.pad_token_id
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, eos_token_id=stops,
                              pad_token_id=pad, bos_token_id=model.generation_config.bos_token_id)
    found = markers(tok)
    texts = [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
             for p in prompts]
    torch.manual_seed(seed)  # greedy decoding draws nothing; seeded all the same, for any sampling default
    responses = []
    for start in range(0, len(texts), batch_size):
        # the template writes bos itself where the model wants one: the tokenizer must not add another
        batch = tok(texts[start:start + batch_size], add_special_tokens=False, padding=True, return_tensors="pt")
        batch = {k: v.to(loaded.device) for k, v in batch.items()}
        with torch.no_grad():
            out = model.generate(**batch, generation_config=config)
        width = batch["input_ids"].shape[1]
        for prompt, row in zip(prompts[start:start + batch_size], out[:, width:].tolist()):
            turn = _split(row, set(stops))
            text = tok.decode(turn.tokens, skip_special_tokens=False)
            leaked = tuple(m for m in found if m in text)
            plain = text
            for marker in leaked:
                plain = plain.replace(marker, " ")
            responses.append(Response(prompt=prompt, response=text, language=detect_language(plain),
                                      ended_with_eot=turn.ended, leaked=leaked,
                                      n_tokens=len(turn.tokens) + turn.ended))
    return responses
