"""Perplexity of a model on a text: exp(mean negative log-likelihood per predicted token)."""

from __future__ import annotations

import math

from chatvector.evaluation.models import Loaded

MAX_TOKENS = 1024  # the shipped texts are a few hundred tokens; a longer text is cut here


def perplexity(loaded: Loaded, text: str) -> tuple[float, int]:
    """(perplexity, tokens predicted) on `text`, tokenized as the model's tokenizer does (bos included)."""
    import torch

    tok, model = loaded.tokenizer, loaded.model
    limit = min(MAX_TOKENS, getattr(model.config, "max_position_embeddings", MAX_TOKENS) or MAX_TOKENS)
    ids = tok(text, return_tensors="pt", truncation=True, max_length=limit)["input_ids"].to(loaded.device)
    if ids.shape[1] < 2:
        return math.nan, 0
    with torch.no_grad():
        logits = model(input_ids=ids).logits.float()
    loss = torch.nn.functional.cross_entropy(logits[0, :-1], ids[0, 1:])
    return math.exp(loss.item()) if math.isfinite(loss.item()) else math.inf, ids.shape[1] - 1
