"""The evaluation gate of a publish: the recipe's `eval:` run on the assembled model before anything is pushed.

    evaluation = evaluate_for_publish(plan, folder, api=api, device="auto")   # None without `eval:`
    evaluation["passed"], evaluation["failures"]      # the gate's one-line reasons when it blocks

The model is evaluated as it will be published (the folder holds every file), with cp as the perplexity
reference. The responses go into the folder as `eval_responses.jsonl` (published beside the weights), the
summary into the provenance (`chatvector.json` → "evaluation"), where the card reads it. A folder whose
provenance already holds an evaluation by the same spec (`publish --from` a sweep's variant) is not evaluated
again: its bytes were just verified to be the ones evaluated.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from chatvector.build.provenance import read_provenance, write_provenance
from chatvector.conventions import PROVENANCE_FILE
from chatvector.errors import PipelineError
from chatvector.plan.plan import Plan

if TYPE_CHECKING:
    from huggingface_hub import HfApi

    from chatvector.evaluation import EvalResult, EvalSpec

log = logging.getLogger(__name__)


class GateError(PipelineError):
    """The output misses a threshold of `eval.require`: nothing is published."""


def spec_dict(spec: "EvalSpec") -> dict:
    """The spec as JSON reads it back (paths as text, tuples as lists): what an evaluation was measured with."""
    import json

    return json.loads(json.dumps(dataclasses.asdict(spec), default=str))


def summary(result: "EvalResult", spec: "EvalSpec", failures: list[str]) -> dict:
    """What the provenance and the card keep of an evaluation (the responses go to their own file)."""
    from chatvector.evaluation import RESPONSES_FILE

    ppl = result.perplexity
    return {"spec": spec_dict(spec), "language": result.language, "prompts": len(result.responses),
            "prompts_source": result.prompts_source, "max_new_tokens": result.max_new_tokens, "seed": result.seed,
            "device": result.device, "scores": result.scores(),
            "perplexity": None if ppl is None else {"value": ppl.value, "reference": ppl.reference,
                                                    "reference_value": ppl.reference_value,
                                                    "text": ppl.text_source},
            "require": spec.require.set(), "passed": not failures, "failures": failures,
            "responses_file": RESPONSES_FILE, "lm_eval": result.lm_eval}


def evaluate_folder(plan: Plan, folder: Path, *, api: "HfApi | None", device: str = "auto",
                    spec: "EvalSpec | None" = None) -> dict:
    """Evaluate the model in `folder` by `spec` (default: the recipe's), cp as the reference; write the responses
    file into it and return the summary (see `summary`)."""
    from chatvector.evaluation import RESPONSES_FILE, check_gate, evaluate, write_responses

    spec = spec or plan.require_recipe().eval
    cp = plan.sources["cp"]
    reference, reference_revision = (str(cp.path), None) if cp.is_local else (cp.repo_id, cp.sha)
    result = evaluate(folder, spec, reference=reference, reference_revision=reference_revision, device=device,
                      api=api)
    _replace(folder / RESPONSES_FILE)
    write_responses(result, folder / RESPONSES_FILE)
    failures = check_gate(result, spec.require)
    log.info("eval: fidelity %.2f, format %.2f%s", result.fidelity, result.format,
             "" if not failures else f"; {len(failures)} threshold(s) missed")
    return summary(result, spec, failures)


def evaluate_for_publish(plan: Plan, folder: Path, *, api: "HfApi | None", device: str = "auto",
                         enforce: bool = True) -> dict | None:
    """The provenance of the assembled `folder` with the recipe's evaluation recorded in it (None without
    `eval:`); raises GateError with one line per missed threshold (enforce=False: only records them)."""
    spec = plan.require_recipe().eval
    if spec is None:
        return None
    from chatvector.evaluation import RESPONSES_FILE

    provenance = read_provenance(folder / PROVENANCE_FILE) or {}
    recorded = provenance.get("evaluation")
    if not (recorded and recorded.get("spec") == spec_dict(spec) and (folder / RESPONSES_FILE).is_file()):
        recorded = provenance["evaluation"] = evaluate_folder(plan, folder, api=api, device=device, spec=spec)
        _replace(folder / PROVENANCE_FILE)
        write_provenance(folder, provenance)
    if enforce and not recorded["passed"]:
        raise GateError("\n".join(["the evaluation gate blocks this publish (nothing was pushed): "
                                   + recorded["failures"][0], *recorded["failures"][1:]]))
    return provenance


def _replace(path: Path) -> None:
    """Make room for a new file at `path`: a link (`publish --from` links the merged folder's files) is removed,
    so that writing never changes the file it points to."""
    if path.is_symlink():
        path.unlink()
