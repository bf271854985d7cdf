"""lm-evaluation-harness tasks, when the optional extra is installed (`pip install -e '.[eval]'` in a checkout, or
`pip install 'lm-eval>=0.4'` beside chatvector: the package is not on an index, so `chatvector[eval]` is not)."""

from __future__ import annotations

import importlib.util
import shlex
import sys
from pathlib import Path

from chatvector.errors import PipelineError
from chatvector.evaluation.spec import LmEvalSpec

# The extra's one requirement (pyproject.toml's `eval`), installed into the interpreter that runs chatvector.
INSTALL_HINT = f"{shlex.quote(sys.executable)} -m pip install 'lm-eval>=0.4'"


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
