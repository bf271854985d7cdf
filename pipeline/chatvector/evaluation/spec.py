"""What an evaluation measures and what it must reach: the recipe's `eval:` section and `chatvector eval`'s options.

    spec = EvalSpec(language="ko", require=Requirements(fidelity=0.9, format=1.0))
    parse_requirements("fidelity=0.9,format=1.0")        # --require; ValueError with a one-line reason

Light on purpose (no torch, no transformers): `chatvector.recipe.recipe` reads the `eval:` section into these.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass, field
from pathlib import Path

from chatvector.evaluation.prompts import SHIPPED, shipped_prompts, shipped_text

METRICS = ("fidelity", "format", "perplexity")
MAX_NEW_TOKENS = 4096  # a chat turn; the evaluation generates this many tokens per prompt at most
DEFAULT_MAX_NEW_TOKENS = 64


@dataclass(frozen=True)
class Requirements:
    """Thresholds a model must meet; None: not required.

    fidelity: the least share of responses in the target language (0..1).
    format: the least share of well-formed chat turns (0..1): ended with an end-of-turn token within the token
        limit, no special token or template marker in the text, not empty.
    perplexity: the most the model's perplexity on the target-language text may be, as a multiple of the
        reference model's (cp's) on the same text (1.5: at most 50% higher).
    """

    fidelity: float | None = None
    format: float | None = None
    perplexity: float | None = None

    def set(self) -> dict[str, float]:
        """{metric: threshold} for the thresholds given, in METRICS order."""
        return {name: getattr(self, name) for name in METRICS if getattr(self, name) is not None}


@dataclass(frozen=True)
class LmEvalSpec:
    """lm-evaluation-harness tasks to run as well (the optional extra `eval`: lm-eval)."""

    tasks: tuple[str, ...]
    limit: int | None = None  # examples per task; None: all of them


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation: prompts in `language` (the shipped set, or a file), greedy answers of at most
    `max_new_tokens`, perplexity on a target-language text, thresholds, optional lm-eval tasks."""

    language: str
    prompts: Path | None = None  # a file: one prompt per line, or a JSON list of strings; None: the shipped set
    text: Path | None = None  # the perplexity text; None: the shipped one for `language`
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    seed: int = 0
    perplexity: bool = True
    require: Requirements = field(default_factory=Requirements)
    lm_eval: LmEvalSpec | None = None


def check_threshold(metric: str, value: object) -> float:
    """A threshold for `metric`: fidelity and format in [0, 1], perplexity a ratio > 0 (ValueError otherwise)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"expected a number, got {value!r}")
    if metric in ("fidelity", "format") and not 0 <= value <= 1:
        raise ValueError(f"{metric} is a share of responses: give a number from 0 to 1, got {value:g}")
    if metric == "perplexity" and value <= 0:
        raise ValueError(f"perplexity is a ratio to the reference's (1.5: at most 50% higher): give a number "
                         f"above 0, got {value:g}")
    return float(value)


def check_max_new_tokens(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_NEW_TOKENS:
        raise ValueError(f"expected a whole number of tokens from 1 to {MAX_NEW_TOKENS}, got {value!r}")
    return value


def check_seed(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"expected a whole number >= 0, got {value!r}")
    return value


def parse_requirements(text: str) -> Requirements:
    """`fidelity=0.9,format=1.0,perplexity=1.5` (any of them, once each) -> Requirements; ValueError otherwise."""
    values: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, raw = (s.strip() for s in part.partition("="))
        if name not in METRICS:
            close = difflib.get_close_matches(name, METRICS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise ValueError(f"unknown metric '{name}' ({hint}expected {', '.join(m + '=' for m in METRICS)})")
        if not sep:
            raise ValueError(f"'{part}': give a threshold, as in {name}=0.9")
        if name in values:
            raise ValueError(f"{name} is given twice")
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(f"{name}: expected a number, got '{raw}'") from None
        try:
            values[name] = check_threshold(name, number)
        except ValueError as err:
            raise ValueError(f"{name}: {err}") from None
    if not values:
        raise ValueError(f"no threshold given: expected e.g. fidelity=0.9,format=1.0 (metrics: {', '.join(METRICS)})")
    return Requirements(**values)


def missing_data(language: str, prompts: Path | None, text: Path | None, perplexity: bool) -> list[tuple[str, str]]:
    """(key, message) for each thing `language` needs but neither ships nor is given: "prompts", "text"."""
    problems = []
    if prompts is None and shipped_prompts(language) is None:
        problems.append(("prompts", f"no prompt set ships for '{language}' (shipped: {', '.join(SHIPPED)});"
                                    " give a prompts file"))
    if perplexity and text is None and shipped_text(language) is None:
        problems.append(("text", f"no perplexity text ships for '{language}' (shipped: {', '.join(SHIPPED)});"
                                 " give a text file, or turn perplexity off"))
    return problems

