"""Evaluating a merged model: does it answer in the target language, in well-formed chat turns, and has it kept
its language modelling?

    from chatvector.evaluation import EvalSpec, Requirements, evaluate, check_gate, write_responses
    result = evaluate("./merged", EvalSpec(language="ko"), reference="beomi/Llama-3-Open-Ko-8B")
    result.fidelity, result.format, result.perplexity.ratio       # the scores; result.responses: every answer
    check_gate(result, Requirements(fidelity=0.9, format=1.0))     # [] when it passes, else one line per miss
    write_responses(result, "eval_responses.jsonl")

Importing this package is cheap (no torch, transformers or language model): `evaluate` loads them when it runs.
"""

from chatvector.evaluation.gate import check_gate
from chatvector.evaluation.languages import LANGUAGES, canonical_language, detect_language, in_language
from chatvector.evaluation.prompts import SHIPPED, EvalInputError, load_prompts, load_text
from chatvector.evaluation.result import RESPONSES_FILE, EvalResult, Perplexity, Response, write_responses
from chatvector.evaluation.run import evaluate
from chatvector.evaluation.spec import EvalSpec, LmEvalSpec, Requirements, parse_requirements

__all__ = [
    "LANGUAGES", "RESPONSES_FILE", "SHIPPED", "EvalInputError", "EvalResult", "EvalSpec", "LmEvalSpec",
    "Perplexity", "Requirements", "Response", "canonical_language", "check_gate", "detect_language", "evaluate",
    "in_language", "load_prompts", "load_text", "parse_requirements", "write_responses",
]

