"""What an evaluation found: every response, and the scores over them. JSON-able both ways.

    result.to_dict() / EvalResult.from_dict(doc)
    write_responses(result, "eval_responses.jsonl")    # one response a line (.jsonl), or one JSON document
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from chatvector.conventions import RESPONSES_FILE  # noqa: F401 - re-exported: the name a published model's responses go under
from chatvector.evaluation.languages import in_language


@dataclass(frozen=True)
class Response:
    """One prompt's answer: greedy, through the model's chat template."""

    prompt: str
    response: str  # decoded up to (not including) the end-of-turn token, special tokens kept as text
    language: str  # detected language of the text without special tokens ("und": no letters; "ko+en": mixed)
    ended_with_eot: bool  # an end-of-turn token came within the token limit
    leaked: tuple[str, ...] = ()  # special tokens / template markers found in the text
    n_tokens: int = 0  # tokens generated, the end-of-turn token included

    @property
    def empty(self) -> bool:
        return not self.text_only.strip()

    @property
    def text_only(self) -> str:
        """The response without the leaked markers (what language detection reads)."""
        text = self.response
        for marker in self.leaked:
            text = text.replace(marker, " ")
        return text

    @property
    def well_formed(self) -> bool:
        """A healthy chat turn: it ended with an end-of-turn token, leaked nothing and said something."""
        return self.ended_with_eot and not self.leaked and not self.empty


@dataclass(frozen=True)
class Perplexity:
    """Perplexity (per token) on one text; `ratio` to the reference's when one was measured."""

    value: float
    n_tokens: int
    text_source: str  # "shipped:ko" or the file
    reference: str | None = None  # the reference model (cp)
    reference_value: float | None = None
    reference_n_tokens: int | None = None

    @property
    def ratio(self) -> float | None:
        return None if self.reference_value is None else self.value / self.reference_value


@dataclass(frozen=True)
class EvalResult:
    model: str  # the folder or repo id evaluated
    revision: str | None  # the commit of a Hub repo; None for a folder
    language: str
    prompts_source: str  # "shipped:ko" or the prompts file
    max_new_tokens: int
    seed: int
    device: str
    responses: tuple[Response, ...]
    perplexity: Perplexity | None = None
    lm_eval: dict | None = field(default=None, hash=False)  # lm-evaluation-harness's "results" per task
    seconds: float = 0.0

    @property
    def fidelity(self) -> float:
        """The share of responses in the target language."""
        return sum(in_language(r.language, self.language) for r in self.responses) / max(len(self.responses), 1)

    @property
    def format(self) -> float:
        """The share of responses that are well-formed chat turns (see Response.well_formed)."""
        return sum(r.well_formed for r in self.responses) / max(len(self.responses), 1)

    def scores(self) -> dict[str, float | None]:
        ppl = self.perplexity
        return {"fidelity": self.fidelity, "format": self.format,
                "perplexity": ppl.value if ppl else None,
                "perplexity_ratio": ppl.ratio if ppl else None}

    def to_dict(self) -> dict:
        doc = asdict(self)
        doc["responses"] = [{**asdict(r), "leaked": list(r.leaked)} for r in self.responses]
        if self.perplexity is not None:
            doc["perplexity"]["ratio"] = self.perplexity.ratio
        doc["scores"] = self.scores()
        return doc

    @classmethod
    def from_dict(cls, doc: dict) -> EvalResult:
        """The inverse of to_dict (its derived "scores" and "ratio" are recomputed, not read)."""
        fields = {k: v for k, v in doc.items() if k in cls.__dataclass_fields__}
        fields["responses"] = tuple(Response(**{**r, "leaked": tuple(r.get("leaked", ()))})
                                    for r in doc["responses"])
        if doc.get("perplexity") is not None:
            ppl = {k: v for k, v in doc["perplexity"].items() if k in Perplexity.__dataclass_fields__}
            fields["perplexity"] = Perplexity(**ppl)
        return cls(**fields)


def write_responses(result: EvalResult, path: str | Path) -> Path:
    """Write every response to `path`: JSON Lines, one response a line, when it ends in .jsonl; else one JSON
    document with the run's settings and scores before the responses. Returns the path."""
    path = Path(path)
    rows = [{**asdict(r), "leaked": list(r.leaked), "in_language": in_language(r.language, result.language),
             "well_formed": r.well_formed} for r in result.responses]
    if path.suffix.lower() == ".jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    else:
        header = {"model": result.model, "revision": result.revision, "language": result.language,
                  "prompts": result.prompts_source, "max_new_tokens": result.max_new_tokens, "seed": result.seed,
                  "device": result.device, "scores": result.scores()}
        text = json.dumps({**header, "responses": rows}, ensure_ascii=False, indent=2) + "\n"
    path.write_text(text, encoding="utf-8")
    return path
