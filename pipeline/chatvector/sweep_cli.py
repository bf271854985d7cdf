"""`chatvector sweep RECIPE --lambdas 0.5,0.7,1.0 --out DIR`: one merged model per λ factor, in one pass over the
inputs (chatvector.sweep)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chatvector.errors import PipelineError
from chatvector.sweep_factors import EXAMPLE, MAX_FACTORS

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

Examples:
  chatvector sweep recipes/llama3-korean.yaml --lambdas {EXAMPLE} --out ./sweep
  chatvector sweep recipes/llama3-korean.yaml --lambdas {EXAMPLE} --out ./sweep --publish
  chatvector sweep recipes/x.yaml --out ./sweep --fetch stream --format json   # factors from the recipe
"""


class SweepOptionError(PipelineError):
    """An option of `chatvector sweep` is wrong (one line, naming the option and the fix)."""


def add_sweep_command(sub: argparse._SubParsersAction) -> None:
    """`chatvector sweep RECIPE --lambdas ... --out DIR`."""
    from chatvector.cli import _command, _device_option, _fetch_option, _format_option

    parser = _command(sub, "sweep", help="merge a recipe at several λ scales in one pass over the inputs",
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
    _device_option(parser)
    _fetch_option(parser)
    _format_option(parser)
    parser.set_defaults(func=_cmd_sweep)


def _cmd_sweep(args: argparse.Namespace) -> int:
    from chatvector.recipe import load_recipe
    from chatvector.sweep import sweep
    from chatvector.sweep_factors import parse_factors

    lambdas = None
    if args.lambdas is not None:
        try:
            lambdas = parse_factors(args.lambdas)
        except ValueError as err:
            raise SweepOptionError(str(err)) from None
    recipe = load_recipe(args.recipe)
    if args.publish:
        from chatvector.sweep_publish import check_sweep_publish

        problems = check_sweep_publish(recipe)
        if problems:  # before anything is merged
            raise SweepOptionError("\n".join(problems))
    outcome = sweep(recipe, Path(args.out), lambdas=lambdas, fetch=args.fetch, device=args.device,
                    progress=not args.quiet)
    published = None
    if args.publish:
        from chatvector.sweep_publish import publish_sweep

        published = publish_sweep(recipe, outcome, device=args.device, progress=not args.quiet)
    report = outcome.report
    if published is not None:
        report = {**report, "published": _published(published)}
    if args.format == "json":
        from chatvector.cli import _print_json

        _print_json({"out_dir": str(outcome.out_dir), **report})
        return 0
    if outcome.io is not None and not args.quiet:
        print(outcome.io.summary(), file=sys.stderr)
    from chatvector.units import human_bytes

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
        for branch, result in {**published.branches, "main": published.main}.items():
            what = "published" if result.changed else "unchanged"
            print(f"  {what} {branch}: {result.url} at {result.commit}")
        from chatvector.sweep_factors import folder_name

        print(f"main holds {folder_name(published.chosen)}: the largest factor that passes eval.require")
    return 0


def _published(published) -> dict:
    return {"chosen": published.chosen,
            "refs": {branch: {"commit": r.commit, "changed": r.changed, "url": r.url}
                     for branch, r in {**published.branches, "main": published.main}.items()}}
