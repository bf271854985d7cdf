"""The `chatvector` command line: one subcommand per stage, each a thin shell over a library function.

The command table (COMMANDS) lists one module per command (`plan`, `merge`, `sweep`, `eval`, `publish`, `demo`,
`hub`), each with `add(sub)` registering its parser and the function it runs; what they share (the options every
command takes, the help layout, logging, printing, errors and exit codes) is the leaf `options`, which imports no
command. Errors the user can fix (PipelineError) become one line on stderr and exit code 2; no traceback.

Start-up time: no command module imports torch, transformers or huggingface_hub at its top (`chatvector --help` and
`plan` must not load them; tests check it): each imports its library where it runs.
"""

from __future__ import annotations

import argparse
import logging
import sys

from chatvector import __version__
from chatvector.cli import demo, hub, merge, plan, publish, sweep
from chatvector.cli import eval as evaluate
from chatvector.cli.options import (
    DEVICE_FIX,
    add_global_options,
    apply_global_options,
    call,
    check_endpoint,
    configure_logging,
    prepare_environment,
    reader_went_away,
    refuse_unknown,
)
from chatvector.cli.options import unexpected as _unexpected
from chatvector.errors import PipelineError

__all__ = ["COMMANDS", "DESCRIPTION", "DEVICE_FIX", "build_parser", "check_endpoint", "configure_logging", "main",
           "prepare_environment", "run", "what_is_left", "_unexpected"]

DESCRIPTION = """\
Make, verify and publish chat-vector merges:  out = cp + λ·(chat − base).

Typical use:
  chatvector plan recipes/demo.yaml          # validate the recipe and show what will happen
  chatvector merge recipes/demo.yaml --out ./merged
  chatvector sweep recipes/demo.yaml --lambdas 0.5,0.7,1.0 --out ./sweep   # several λ, one pass
  chatvector eval ./merged --language ko     # target-language fidelity, chat format, perplexity
  chatvector publish recipes/demo.yaml       # plan → fetch → merge → verify → (eval gate) → card → push
  chatvector hub serve --root ./hub          # run the local Hub-compatible server
  chatvector demo                            # everything above, offline, on tiny models

The Hub is huggingface_hub's own setting: HF_ENDPOINT (default https://huggingface.co) and
HF_TOKEN (or `hf auth login`). Point HF_ENDPOINT at a local Hub to work offline.
"""

COMMANDS = (plan, merge, sweep, evaluate, publish, demo, hub)  # in the order of a maintainer's work


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatvector", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"chatvector {__version__}")
    add_global_options(parser)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.add(sub)
    return parser


def run() -> None:
    """The `chatvector` command: `main()`, then an exit that skips the interpreter's teardown.

    With torch loaded, tearing the interpreter down takes about a second and does nothing a finished
    command needs: every file is written, fsynced and closed, and no thread is left working."""
    import os

    code = main()
    logging.shutdown()
    try:
        sys.stdout.flush()  # (a command's output is buffered when piped: a closed pipe shows here)
    except BrokenPipeError:
        code = reader_went_away()
    sys.stderr.flush()
    os._exit(code)


def what_is_left(args: argparse.Namespace) -> str:
    """After Ctrl-C: what the interrupted command leaves behind, and how to go on."""
    from chatvector import stages

    if args.command == "publish" and "push" in stages.timings():
        return ("the commit was being made: it may have landed; run the same command again: it finds what the "
                "target holds and pushes only what is missing")
    if args.command == "publish":
        return ("nothing was pushed; run the same command again to resume (shards already uploaded and files "
                "already downloaded are not redone)")
    if args.command == "sweep" and args.publish:
        return ("what was pushed before stays as it is (each variant is one commit); run the same command again "
                "to finish")
    if args.command in ("merge", "sweep"):
        return (f"{args.out} is as it was (the output is written beside it and takes its name only once verified); "
                "run the same command again: files already downloaded are not downloaded again")
    return "nothing was changed"


def main(argv: list[str] | None = None) -> int:
    prepare_environment()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        refuse_unknown(parser, args, unknown)
    if args.command not in ("hub", "demo"):  # (the demo and the server set or ignore it)
        try:
            check_endpoint()
        except PipelineError as err:
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code
    apply_global_options(args)
    from chatvector import stages

    stages.reset()
    startup = stages.since_process_start()  # Python and the imports before this line
    if startup is not None and argv is None:
        stages.record("startup", startup)
    return call(args, what_is_left)
