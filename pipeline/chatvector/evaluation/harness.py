"""lm-evaluation-harness tasks, when the optional extra is installed (`pip install chatvector[eval]`)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from chatvector.errors import PipelineError
from chatvector.evaluation.spec import LmEvalSpec

INSTALL_HINT = "pip install chatvector[eval]"


class LmEvalError(PipelineError):
    """lm-evaluation-harness is missing, or failed on the tasks asked for."""


def require_lm_eval() -> None:
    """Fail early, before any generation, when lm-evaluation-harness is not installed."""
    if importlib.util.find_spec("lm_eval") is None:
        raise LmEvalError("lm-eval tasks need lm-evaluation-harness, which is not installed: "
                          f"{INSTALL_HINT} (or leave out --lm-eval / eval.lm_eval)")


def run_lm_eval(folder: Path, spec: LmEvalSpec, device: str) -> dict:
    """lm_eval.simple_evaluate on the model folder: its "results" (metrics per task)."""
    require_lm_eval()
    import lm_eval

    try:
        out = lm_eval.simple_evaluate(model="hf", model_args={"pretrained": str(folder), "dtype": "auto"},
                                      tasks=list(spec.tasks), limit=spec.limit, device=device, batch_size="auto")
    except Exception as err:  # noqa: BLE001 - the harness's own errors (unknown task, dataset unreachable)
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise LmEvalError(f"lm-evaluation-harness failed on {', '.join(spec.tasks)}: {text}") from None
    return dict(out.get("results", {})) if isinstance(out, dict) else {}
