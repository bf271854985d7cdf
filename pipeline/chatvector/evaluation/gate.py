"""The gate: does an evaluation meet its thresholds? One line per threshold it misses, saying by how much and why.

    check_gate(result, Requirements(fidelity=0.9))
    -> ["fidelity 0.72 < 0.9 required (eval.require.fidelity): 14 of 50 responses were not in ko"]
"""

from __future__ import annotations

from collections.abc import Mapping

from chatvector.evaluation.languages import in_language
from chatvector.evaluation.result import EvalResult
from chatvector.evaluation.spec import METRICS, Requirements, check_threshold


def _shown(value: float, bound: float) -> str:
    """`value` with two decimals, or as many more as it takes not to print it equal to `bound`."""
    for digits in range(2, 7):
        text = f"{value:.{digits}f}"
        if float(text) != bound:
            return text
    return repr(value)


def _requirements(require: Requirements | Mapping[str, float]) -> Requirements:
    if isinstance(require, Requirements):
        return require
    unknown = sorted(set(require) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; expected {', '.join(METRICS)}")
    return Requirements(**{k: check_threshold(k, v) for k, v in require.items()})


def check_gate(result: EvalResult, require: Requirements | Mapping[str, float], source: str = "eval.require") -> list[str]:
    """The reasons `result` misses `require`, one line each (empty when it passes). `source` names where the
    thresholds came from in the lines: "eval.require" gives "(eval.require.fidelity)", "--require" gives
    "(--require fidelity)"."""
    require = _requirements(require)
    where = (lambda key: f"{source} {key}") if source.startswith("-") else (lambda key: f"{source}.{key}")
    responses, n = result.responses, len(result.responses)
    lines = []
    if require.fidelity is not None and result.fidelity < require.fidelity:
        off = [r for r in responses if not in_language(r.language, result.language)]
        seen = sorted({r.language for r in off})
        lines.append(f"fidelity {_shown(result.fidelity, require.fidelity)} < {require.fidelity:g} required "
                     f"({where('fidelity')}): {len(off)} of {n} responses were not in {result.language}"
                     + (f" (detected: {', '.join(seen)})" if seen else ""))
    if require.format is not None and result.format < require.format:
        bad = [r for r in responses if not r.well_formed]
        why = [f"{count} {text}" for count, text in (
            (sum(not r.ended_with_eot for r in bad), f"did not end with an end-of-turn token within "
                                                     f"{result.max_new_tokens} tokens"),
            (sum(bool(r.leaked) for r in bad), "leaked special tokens or template markers"),
            (sum(r.empty for r in bad), "were empty"),
        ) if count]
        lines.append(f"format {_shown(result.format, require.format)} < {require.format:g} required "
                     f"({where('format')}): {len(bad)} of {n} responses were not well-formed turns "
                     f"({'; '.join(why)})")
    if require.perplexity is not None:
        ppl = result.perplexity
        if ppl is None or ppl.ratio is None:
            missing = "perplexity was not measured" if ppl is None else "no reference model was evaluated"
            lines.append(f"perplexity ratio unknown, at most {require.perplexity:g} required "
                         f"({where('perplexity')}): {missing}; it needs the perplexity text and a reference "
                         "model (--reference DIR|REPO, cp in a recipe)")
        elif ppl.ratio > require.perplexity:
            lines.append(f"perplexity ratio {_shown(ppl.ratio, require.perplexity)} > {require.perplexity:g} allowed "
                         f"({where('perplexity')}): perplexity {ppl.value:.2f} against {ppl.reference_value:.2f} for "
                         f"the reference {ppl.reference} on {ppl.text_source}")
    return lines
