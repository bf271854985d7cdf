"""`chatvector sweep RECIPE --lambdas 0.5,0.7,1.0 --out DIR`: one merged model per λ factor, in one pass over the
inputs (chatvector.sweep.run)."""

from __future__ import annotations

import argparse
from pathlib import Path

from chatvector.cli.options import (
    command,
    device_option,
    fetch_option,
    format_option,
    print_io,
    print_json,
    print_published,
)
from chatvector.errors import PipelineError
from chatvector.recipe.sweep_factors import EXAMPLE, MAX_FACTORS

# The libraries each command runs are imported inside its functions: start-up time (`chatvector --help` and
# `plan` load no torch, transformers or huggingface_hub; tests check it).

DESCRIPTION = f"""\
Merge RECIPE once per λ factor into DIR/lambda-F/, reading every input once for all of them.

A factor scales the recipe's whole λ schedule: every coefficient value it writes (coefficients.default,
each layers value or gradient anchor, each module rule's value) times the factor; vector weights stay.
So λ = weight × (factor × value) per tensor, and DIR/lambda-0.7/ is byte for byte what `chatvector merge`
writes for the recipe with each of those values multiplied by 0.7 (its chatvector.json aside, which also
records `sweep.factor`). 1.0 is the recipe as written. A λ that the scaling makes 0 keeps cp's tensor.

Each DIR/lambda-F/ is a complete, verified model folder, as `merge --out` writes it. DIR also gets
sweep.json (per variant: factor, folder, λ range, files and their sha256, fingerprint; what was read once)
and sweep.md (the same as a table). The inputs are downloaded (snapshot) or streamed (stream) once; each
input block is read once and every variant's output computed from it, exact fp32 as in `merge`.
Each variant has its own output buffer pool, of blocks 1/K of a merge's 64 MiB (at least 1 MiB), so peak
memory stays about one merge's; disk needs every variant's output (K × the model) plus the download.

Factors: positive, finite, none twice, at most {MAX_FACTORS}; folder names use the shortest text that reads
back as the factor (0.7 → lambda-0.7, 1 → lambda-1.0). Without --lambdas the recipe's
`sweep: {{lambdas: [...]}}` is used. Like `merge`, the run writes into a staging folder beside DIR that
replaces DIR only when every variant is verified; DIR may be new, empty, or an earlier sweep's.

--publish evaluates every variant by the recipe's `eval:` section, then publishes each to a branch of the
target named after its folder (lambda-0.7, ...) and the best variant that passes to main: of the variants
that meet every threshold of eval.require, the one with the largest factor (the most of the chat vector that
still answers in the target language, in well-formed turns). When none passes nothing is pushed (exit 2).
Each card shows the sweep's table and chart (sweep.svg); each push is `publish --from` that variant's folder.
Run again, it replaces DIR (its own reports and evaluations included) and publishes what changed.

--eval evaluates every variant the same way without publishing (no target needed): each folder gets its
eval_responses.jsonl, DIR/sweep.md and sweep.json the scores and the variant the rule would choose, and
DIR/sweep.svg the chart.

`chatvector publish RECIPE` of a recipe with `sweep:` and `eval:` (a scheduled run) keeps what the sweep chose:
nothing when the target's main still holds that choice for the same recipe and inputs, else this whole
`sweep --publish` again over the recipe's sweep.lambdas.

Examples:
  chatvector sweep recipes/llama3-korean.yaml --lambdas {EXAMPLE} --out ./sweep
  chatvector sweep recipes/llama3-korean.yaml --lambdas {EXAMPLE} --out ./sweep --publish
  chatvector sweep recipes/llama3-korean.yaml --lambdas {EXAMPLE} --out ./sweep --eval   # scores in sweep.md
  chatvector sweep recipes/x.yaml --out ./sweep --fetch stream --format json   # factors from the recipe
"""


class SweepOptionError(PipelineError):
    """An option of `chatvector sweep` is wrong (one line, naming the option and the fix)."""


def add(sub: argparse._SubParsersAction) -> None:
    """`chatvector sweep RECIPE --lambdas ... --out DIR`."""
    parser = command(sub, "sweep", help="merge a recipe at several λ scales in one pass over the inputs",
                      description=DESCRIPTION)
    parser.add_argument("recipe", help="the recipe YAML file")
    parser.add_argument("--lambdas", metavar="F,F,...", default=None,
                        help=f"factors that scale the recipe's λ schedule, comma-separated (e.g. {EXAMPLE}) "
                             "(default: the recipe's sweep.lambdas)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for DIR/lambda-F/ and the report (created or replaced)")
    parser.add_argument("--publish", action="store_true",
                        help="evaluate every variant (the recipe's eval:), publish each to its branch lambda-F of the "
                             "target and the best that passes to main (see above)")
    parser.add_argument("--eval", action="store_true",
                        help="evaluate every variant (the recipe's eval:) without publishing; the scores go into "
                             "sweep.md and sweep.json")
    device_option(parser)
    fetch_option(parser)
    format_option(parser)
    parser.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from chatvector.publish.sweep import run_sweep
    from chatvector.recipe.recipe import load_recipe
    from chatvector.recipe.sweep_factors import parse_factors
    from chatvector.units import human_bytes

    lambdas = None
    if args.lambdas is not None:
        try:
            lambdas = parse_factors(args.lambdas)
        except ValueError as err:
            raise SweepOptionError(str(err)) from None
    outcome, published = run_sweep(load_recipe(args.recipe), Path(args.out), lambdas=lambdas, fetch=args.fetch,
                                   device=args.device, progress=not args.quiet, publish=args.publish,
                                   evaluate=args.eval)
    report = outcome.report
    if published is not None:
        report = {**report, "published": published.to_dict()}
    if args.format == "json":
        print_json({"out_dir": str(outcome.out_dir), **report})
        return 0
    print_io(outcome.io, args.quiet)
    inputs = report["inputs"]
    print(f"wrote {outcome.out_dir}: {len(outcome.variants)} variants from one pass over the inputs "
          f"({human_bytes(inputs['bytes'])} in {inputs['files']} files, read once), merged on {outcome.device} in "
          f"{outcome.seconds:.1f} s")
    for v in report["variants"]:
        lo, hi = v["lambda_range"]
        print(f"  {v['folder']}/  λ {lo:.6g} … {hi:.6g}, {len(v['files'])} files, {human_bytes(v['bytes'])}, "
              f"{v['checks']['passed']}/{v['checks']['total']} checks passed")
    print(f"report: {outcome.report_path} and {outcome.summary_path}")
    if published is not None:
        print_published(published)
    elif "evaluation" in report:
        _print_scores(report["evaluation"])
    return 0


def _print_scores(evaluation: dict) -> None:
    """`sweep --eval`: each variant's scores, and the variant `--publish` would put on main."""
    from chatvector.recipe.sweep_factors import folder_name

    for v in evaluation["variants"]:
        gate = "passes" if v["passed"] else "fails: " + "; ".join(v["failures"])
        print(f"  {v['branch']}/  fidelity {v['scores']['fidelity']:.2f}, format {v['scores']['format']:.2f}: {gate}")
    chosen = evaluation["chosen"]
    print(f"--publish would put {folder_name(chosen)} on main: the largest factor that passes eval.require"
          if chosen is not None else "no variant passes eval.require: --publish would push nothing")
