"""`evaluate`: one model (and optionally a reference for perplexity) through the whole evaluation."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from chatvector.evaluation.prompts import EvalInputError, load_prompts, load_text
from chatvector.evaluation.result import EvalResult, Perplexity
from chatvector.evaluation.spec import EvalSpec

if TYPE_CHECKING:
    from huggingface_hub import HfApi

log = logging.getLogger(__name__)


def evaluate(model: str | Path, spec: EvalSpec, *, revision: str | None = None, reference: str | Path | None = None,
             reference_revision: str | None = None, device: str = "auto", api: "HfApi | None" = None,
             batch_size: int = 8, progress: bool = False) -> EvalResult:
    """Evaluate `model` (a folder or a Hub repo id at `revision`) as `spec` says: greedy answers to the prompts,
    their language and chat-format health, perplexity on the target-language text (and the `reference`'s, for
    the ratio), lm-eval tasks. Raises PipelineError subclasses for what the user can fix; the thresholds in
    `spec.require` are not checked here (`check_gate` does that)."""
    from chatvector.evaluation.harness import require_lm_eval, run_lm_eval
    from chatvector.evaluation.models import cpu_threads_for, resolve_model
    from chatvector.hub.client import connect
    from chatvector.merge import resolve_device

    start = time.monotonic()
    # Every input is checked before a model is downloaded or loaded.
    prompts, prompts_source = load_prompts(spec.language, spec.prompts)
    text, text_source = load_text(spec.language, spec.text) if spec.perplexity else (None, None)
    if spec.lm_eval is not None:
        require_lm_eval()
    if batch_size < 1:
        raise EvalInputError(f"batch_size must be at least 1, got {batch_size}")
    dev = resolve_device(device)
    api = api or connect()
    target = resolve_model(model, revision, api)
    ref = resolve_model(reference, reference_revision, api, "reference") if reference and text else None

    log.info("eval: %s on %s: %d prompts in %s, at most %d new tokens each", target.label, dev, len(prompts),
             spec.language, spec.max_new_tokens)
    with cpu_threads_for(dev, [target] + ([ref] if ref else [])):
        responses, ppl = _measure(target, ref, spec, prompts, text, text_source, dev, batch_size, progress)
    lm = run_lm_eval(target.folder, spec.lm_eval, str(dev)) if spec.lm_eval is not None else None
    return EvalResult(model=target.label, revision=target.revision, language=spec.language,
                      prompts_source=prompts_source, max_new_tokens=spec.max_new_tokens, seed=spec.seed,
                      device=str(dev), responses=tuple(responses), perplexity=ppl, lm_eval=lm,
                      seconds=round(time.monotonic() - start, 3))


def _measure(target, ref, spec: EvalSpec, prompts: list[str], text: str | None, text_source: str | None, dev,
             batch_size: int, progress: bool):
    """(responses, perplexity) of the target, the reference's perplexity beside it; one model in memory at a time."""
    from chatvector.evaluation.chat import generate_responses
    from chatvector.evaluation.models import load, release
    from chatvector.evaluation.perplexity import perplexity

    loaded = load(target, dev, progress)
    responses = generate_responses(loaded, prompts, label=target.label, max_new_tokens=spec.max_new_tokens,
                                   seed=spec.seed, batch_size=batch_size)
    ppl = None
    if text is not None:
        value, n_tokens = perplexity(loaded, text)
        ppl = Perplexity(value, n_tokens, text_source)
    release(loaded)
    if ref is not None:
        log.info("eval: perplexity of the reference %s", ref.label)
        ref_loaded = load(ref, dev, progress)
        value, n_tokens = perplexity(ref_loaded, text)
        release(ref_loaded)
        if n_tokens != ppl.n_tokens:
            log.warning("eval: the reference tokenizes the text into %d tokens, the model into %d: the perplexity "
                        "ratio compares per-token figures of different tokenizations", n_tokens, ppl.n_tokens)
        ppl = Perplexity(ppl.value, ppl.n_tokens, ppl.text_source, ref.label, value, n_tokens)
    return responses, ppl
