"""`chatvector demo`: the full publish, offline, on tiny models (chatvector.demo.run_demo)."""

from __future__ import annotations

import argparse

from chatvector.cli.options import command

# The libraries each command runs are imported inside its functions: start-up time (`chatvector --help` and
# `plan` load no torch, transformers or huggingface_hub; tests check it).


def add(sub: argparse._SubParsersAction) -> None:
    demo = command(
        sub,
        "demo",
        help="the full publish, offline: local Hub, tiny models, publish, load back, chat",
        description="Start the embedded local Hub, seed it with a tiny generated base/chat/cp triplet, publish\n"
        "recipes/demo.yaml, load the published model back with transformers and chat one turn, then\n"
        "publish again to show that an unchanged upstream pushes nothing. Needs no token and no internet.",
    )
    demo.add_argument("--root", default=None, metavar="DIR", help="where the demo keeps its state (default .demo)")
    demo.set_defaults(func=_cmd_demo)


def _cmd_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from chatvector.demo import ROOT, run_demo

    return run_demo(Path(args.root) if args.root else ROOT / ".demo")
