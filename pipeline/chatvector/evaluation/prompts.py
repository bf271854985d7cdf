"""Prompt sets and perplexity texts: the ones shipped with chatvector (package data under data/), or a user's file.

Shipped, for each of SHIPPED: `data/prompts/LANG.txt` (30 prompts written for this project: everyday requests,
chat, and a few a chat model should decline or handle with care) and `data/texts/LANG.txt` (a short paragraph
of plain prose, for perplexity). A user's prompts file holds one prompt per line (blank lines are skipped), or,
when it ends in .json, a JSON list of strings.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from chatvector.errors import PipelineError

SHIPPED = ("ko", "ja", "zh-Hant")
MAX_PROMPTS = 1_000
MAX_PROMPT_CHARS = 10_000
MAX_TEXT_CHARS = 100_000


class EvalInputError(PipelineError):
    """A prompts or text file cannot be used (missing, unreadable, empty, not the expected format)."""


def _data(kind: str, language: str) -> str | None:
    if language not in SHIPPED:
        return None
    return resources.files("chatvector.evaluation").joinpath("data", kind, f"{language}.txt").read_text("utf-8")


def shipped_prompts(language: str) -> list[str] | None:
    """The shipped prompt set for `language`, or None when there is none."""
    text = _data("prompts", language)
    return None if text is None else [line.strip() for line in text.splitlines() if line.strip()]


def shipped_text(language: str) -> str | None:
    """The shipped perplexity text for `language`, or None when there is none."""
    text = _data("texts", language)
    return None if text is None else text.strip()


def _read(path: Path, what: str, limit: int) -> str:
    try:
        with path.open("rb") as file:
            data = file.read(limit * 4 + 1)  # bounded, as the recipe's read: a huge file or /dev/zero is not read whole
    except FileNotFoundError:
        raise EvalInputError(f"{what} {path}: file not found") from None
    except IsADirectoryError:
        raise EvalInputError(f"{what} {path}: is a folder, not a file") from None
    except OSError as err:
        raise EvalInputError(f"{what} {path}: cannot read it: {err.strerror}") from None
    if len(data) > limit * 4:
        size = path.stat().st_size if path.is_file() else "more than " + str(limit * 4)
        raise EvalInputError(f"{what} {path}: the file is {size} bytes; at most {limit * 4} are read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise EvalInputError(f"{what} {path}: not UTF-8 text") from None


def read_prompts(path: Path) -> list[str]:
    """A user's prompts: one per line, or a JSON list of strings (a .json file)."""
    text = _read(path, "prompts file", MAX_PROMPTS * MAX_PROMPT_CHARS)
    if path.suffix.lower() == ".json":
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as err:
            raise EvalInputError(f"prompts file {path}:{err.lineno}: not valid JSON ({err.msg}); "
                                 "expected a list of strings") from None
        if not isinstance(doc, list) or not all(isinstance(p, str) for p in doc):
            raise EvalInputError(f"prompts file {path}: expected a JSON list of strings, got {type(doc).__name__}"
                                 + (" with other items" if isinstance(doc, list) else ""))
        prompts = [p.strip() for p in doc if p.strip()]
    else:
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise EvalInputError(f"prompts file {path}: holds no prompt (one per line, or a JSON list of strings)")
    if len(prompts) > MAX_PROMPTS:
        raise EvalInputError(f"prompts file {path}: {len(prompts)} prompts; at most {MAX_PROMPTS}")
    long = next((i for i, p in enumerate(prompts) if len(p) > MAX_PROMPT_CHARS), None)
    if long is not None:
        raise EvalInputError(f"prompts file {path}: prompt {long + 1} has {len(prompts[long])} characters; "
                             f"at most {MAX_PROMPT_CHARS}")
    return prompts


def load_prompts(language: str, path: Path | None = None) -> tuple[list[str], str]:
    """(prompts, where they came from: the file, or "shipped:LANG")."""
    if path is not None:
        return read_prompts(Path(path)), str(path)
    prompts = shipped_prompts(language)
    if prompts is None:
        raise EvalInputError(f"no prompt set ships for '{language}' (shipped: {', '.join(SHIPPED)}); "
                             "give one with --prompts FILE (or eval.prompts)")
    return prompts, f"shipped:{language}"


def load_text(language: str, path: Path | None = None) -> tuple[str, str]:
    """(the perplexity text, where it came from)."""
    if path is not None:
        text = _read(Path(path), "text file", MAX_TEXT_CHARS).strip()
        if not text:
            raise EvalInputError(f"text file {path}: is empty")
        return text, str(path)
    text = shipped_text(language)
    if text is None:
        raise EvalInputError(f"no perplexity text ships for '{language}' (shipped: {', '.join(SHIPPED)}); give one "
                             "with --text FILE (or eval.text), or turn perplexity off (--no-perplexity)")
    return text, f"shipped:{language}"
