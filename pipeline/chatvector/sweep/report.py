"""A sweep's report: DIR/sweep.json (machine-readable; also what `chatvector sweep --format json` prints) and
DIR/sweep.md (a short table for people).

sweep.json holds the recipe (path, name, hashes), the factors, what the one pass read (`inputs`: every weight
file once, its bytes, the fetch mode) and per variant, in the order of the factors: the factor, its folder, the
λ range and default λ of its schedule, its files with their sha256 and sizes, its fingerprint and the scaled
recipe's normalized sha256, and its checks (its safetensors headers record its weights' fingerprint,
`chatvector_weights_sha256`, as its own merge's would).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from chatvector import __version__
from chatvector.conventions import SWEEP_REPORT_FILE, SWEEP_SUMMARY_FILE
from chatvector.plan.plan import Plan
from chatvector.sweep.variants import lambda_range
from chatvector.units import human_bytes

if TYPE_CHECKING:
    from chatvector.sweep.run import SweepOutcome

REPORT_FORMAT = 1


def input_files(plan: Plan) -> dict[str, int]:
    """Every weight file the plan reads, once each (two roles naming one checkpoint share its files):
    {"source label: file": size}."""
    files: dict[str, int] = {}
    for t in plan.tensors:
        for role, name in t.files.items():
            source = plan.sources[role]
            files[f"{source.key}: {name}"] = source.files[name].size
    return dict(sorted(files.items()))


def build_report(outcome: "SweepOutcome", root: Path | None = None) -> dict:
    """sweep.json's content; `root`: where the variants' folders are now (the staging folder; default out_dir)."""
    root = Path(root or outcome.out_dir)
    plan, io = outcome.plan, outcome.io
    read = input_files(outcome.read_plan)
    variants = []
    for v in outcome.variants:
        lo, hi = lambda_range(v.plan)
        folder = root / v.name
        checks = v.provenance["verification"]["checks"]
        variants.append({
            "factor": v.factor,
            "folder": v.name,
            "lambda_range": [lo, hi],
            "default_lambda": v.plan.default,
            "files": {name: {"sha256": sha, "bytes": (folder / name).stat().st_size}
                      for name, sha in sorted(v.files.items())},
            "bytes": sum((folder / name).stat().st_size for name in v.files),
            "fingerprint": v.provenance["fingerprint"]["sha256"],
            "recipe_normalized_sha256": v.plan.recipe_sha256,
            "checks": {"passed": sum(bool(c["ok"]) for c in checks), "total": len(checks)},
        })
    recipe = plan.require_recipe()
    return {
        "format": REPORT_FORMAT,
        "tool": {"name": "chatvector", "version": __version__},
        "recipe": {"path": str(recipe.path), "name": plan.recipe_name, "sha256": recipe.sha256,
                   "normalized_sha256": plan.recipe_sha256},
        "factors": outcome.factors,
        "device": outcome.device,
        "seconds": round(outcome.seconds, 3),
        # the one pass: each weight file below was read once, for every variant together
        "inputs": {"read_once": True, "files": len(read), "bytes": sum(read.values()), "by_file": read,
                   "fetch": io.fetch if io else None, "bytes_downloaded": io.bytes_downloaded if io else None},
        "variants": variants,
        "io": io.to_dict() if io else None,
    }


def write_report(folder: Path, outcome: "SweepOutcome") -> None:
    """sweep.json and sweep.md into `folder` (DIR, or the staging folder that becomes it)."""
    folder = Path(folder)
    report = outcome.report
    (folder / SWEEP_REPORT_FILE).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (folder / SWEEP_SUMMARY_FILE).write_text(render_summary(report), encoding="utf-8")


def render_summary(report: dict) -> str:
    """sweep.md: what was read once, and one table row per variant."""
    inputs = report["inputs"]
    lines = [
        f"# λ sweep: {_md(report['recipe']['name'])}",
        "",
        f"Recipe `{report['recipe']['path']}`, {len(report['variants'])} variants merged on {report['device']} in "
        f"{report['seconds']:.1f} s from one pass over the inputs: {human_bytes(inputs['bytes'])} of weights "
        f"({inputs['files']} files) read once (fetch: {inputs['fetch']}).",
        "",
        "Each folder is the merge of the recipe with every coefficient value (default, layers or gradient anchors, "
        "module rules) times its factor: λ = weight × (factor × value). Load one with "
        "`AutoModelForCausalLM.from_pretrained(\"DIR/lambda-F\")`; its `chatvector.json` records the factor.",
        "",
        "| factor | folder | λ range | default λ | files | size | checks | fingerprint |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for v in report["variants"]:
        lo, hi = v["lambda_range"]
        lines.append(f"| ×{v['factor']!r} | [{v['folder']}/]({v['folder']}/) | {_num(lo)} … {_num(hi)} | "
                     f"{_num(v['default_lambda'])} | {len(v['files'])} | {human_bytes(v['bytes'])} | "
                     f"{v['checks']['passed']}/{v['checks']['total']} | `{v['fingerprint'][:12]}` |")
    if report.get("evaluation"):
        lines += ["", *render_evaluation(report["evaluation"])]
    return "\n".join(lines) + "\n"


def render_evaluation(evaluation: dict) -> list[str]:
    """sweep.md's scores (`sweep --eval`, `--publish`): per variant its scores against eval.require, and the choice."""
    from chatvector.recipe.sweep_factors import folder_name

    spec, require, chosen = evaluation["spec"], evaluation["require"], evaluation["chosen"]
    wanted = ", ".join(f"{name} {'≤' if name == 'perplexity' else '≥'} {_num(value)}" for name, value in require.items())
    lines = ["## Evaluation", "",
             f"{_md(str(spec['language']))} prompts, greedy, at most {spec['max_new_tokens']} new tokens each; "
             f"eval.require: {_md(wanted) if wanted else 'nothing'}. {evaluation['rule']}", "",
             "| factor | fidelity | format | perplexity (ratio to cp) | gate |", "|---|---|---|---|---|"]
    for v in evaluation["variants"]:
        gate = ("✅ passes" if v["passed"] else "❌ " + _md("; ".join(v["failures"])))
        mark = " (chosen)" if v["factor"] == chosen else ""
        lines.append(f"| ×{v['factor']!r}{mark} | {v['scores']['fidelity']:.2f} | {v['scores']['format']:.2f} | "
                     f"{_perplexity(v['scores'])} | {gate} |")
    lines.append("")
    lines.append(f"Chosen: [{folder_name(chosen)}/]({folder_name(chosen)}/), the largest factor that passes "
                 "(what `--publish` puts on main)." if chosen is not None
                 else "No variant passes eval.require: `--publish` would push nothing.")
    return [*lines, "", f"![fidelity and format against the λ factor]({evaluation['chart']})"]


def _perplexity(scores: dict) -> str:
    if scores.get("perplexity") is None:
        return "—"
    ratio = scores.get("perplexity_ratio")
    return f"{scores['perplexity']:.2f}" + (f" ({ratio:.3f})" if ratio is not None else "")


def _num(x: float) -> str:
    return f"{x:.6g}"


_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>#|~&])")  # what is active inside a line of Markdown (not at its start)


def _md(text: str) -> str:
    """Recipe text in a Markdown line, showing as written (the name is one line: the recipe checks it)."""
    return _MD_SPECIAL.sub(r"\\\1", text)
