"""`chatvector merge RECIPE --out DIR`: a ready-to-load model folder (chatvector.runner.merge)."""

from __future__ import annotations

import argparse

from chatvector.cli.options import (
    command,
    device_option,
    fetch_option,
    format_option,
    plan_option,
    print_io,
    print_json,
)

# The libraries each command runs are imported inside its functions: start-up time (`chatvector --help` and
# `plan` load no torch, transformers or huggingface_hub; tests check it).


def add(sub: argparse._SubParsersAction) -> None:
    merge = command(
        sub,
        "merge",
        help="merge a recipe into a ready-to-load model folder",
        description="Plan RECIPE, download only the weight files it needs (into the Hugging Face cache, or\n"
        "--fetch stream: range reads, nothing on disk; `path:` sources are read in place), merge with\n"
        "exact fp32 arithmetic and write DIR:\n"
        "sharded safetensors, config, generation config, cp's tokenizer with the chat model's chat\n"
        "template and end-of-turn token, and chatvector.json (provenance). The folder is verified\n"
        "before it appears under its final name.\n\n"
        "Examples:\n  chatvector merge recipes/demo.yaml --out ./merged --device cpu\n"
        "  chatvector plan recipes/demo.yaml --json > plan.json   # pin everything, review it\n"
        "  chatvector merge recipes/demo.yaml --plan plan.json --out ./merged",
    )
    merge.add_argument("recipe", help="the recipe YAML file")
    merge.add_argument("--out", required=True, metavar="DIR", help="output folder (created or replaced)")
    device_option(merge)
    fetch_option(merge)
    plan_option(merge)
    format_option(merge)
    merge.set_defaults(func=_cmd_merge)


def _cmd_merge(args: argparse.Namespace) -> int:
    from pathlib import Path

    from chatvector.recipe.recipe import load_recipe
    from chatvector.runner import merge

    outcome = merge(load_recipe(args.recipe), Path(args.out), device=args.device, plan_file=args.plan,
                    fetch=args.fetch, progress=not args.quiet)
    checks = outcome.provenance["verification"]["checks"]
    files = sorted(p.name for p in outcome.out_dir.iterdir() if p.is_file())
    if args.format == "json":
        print_json({"out_dir": str(outcome.out_dir), "files": files, "device": outcome.device,
                    "checks": checks, "fingerprint": outcome.provenance["fingerprint"]["sha256"],
                    "io": outcome.io.to_dict() if outcome.io else None})
    else:
        print_io(outcome.io, args.quiet)
        print(f"wrote {outcome.out_dir} ({len(files)} files, merged on {outcome.device} in {outcome.seconds:.1f} s; "
              f"{sum(c['ok'] for c in checks)}/{len(checks)} checks passed)")
    return 0
