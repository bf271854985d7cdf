"""What every command shares: the options (-v/-q/--token, --device, --revision, --fetch, --plan, --format), the help
layout, logging, the JSON and text output several commands print, and how an error becomes one line and an exit code.

A leaf of the CLI: it imports no command module (chatvector.cli.*), so every command can import it. Imports inside
functions are for start-up time (`chatvector --help` and `plan` must not load torch, transformers or
huggingface_hub).
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable

from chatvector.errors import PipelineError


# -- options -----------------------------------------------------------------------------------------------------
def add_global_options(parser: argparse.ArgumentParser) -> None:
    """-v, -q and --token before COMMAND (`chatvector -v plan x.yaml`)."""
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages (also after COMMAND)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="only warnings, errors and the result (also after COMMAND)")
    parser.add_argument("--token", metavar="TOKEN", dest="hub_token", default=None,
                        help="the Hub token to use instead of HF_TOKEN; never printed (also after COMMAND)")


def common_options() -> argparse.ArgumentParser:
    """Options every command takes after its name too (`chatvector plan -v x.yaml`), as `hf` does."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="log debug messages (libraries' too, with logger names) and show tracebacks")
    common.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                        help="only warnings, errors and the result: no progress lines or bars")
    common.add_argument("--token", metavar="TOKEN", dest="hub_token", default=argparse.SUPPRESS,
                        help="the Hub token to use (default: HF_TOKEN, else the one `hf auth login` saved); "
                             "never printed")
    return common


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks (they hold examples); every option's help ends with its default,
    as `hf ... --help` shows them, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, [], argparse.SUPPRESS)
        if action.option_strings and shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


def command(sub: argparse._SubParsersAction, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand with the shared help layout and the options every command takes."""
    return sub.add_parser(name, formatter_class=HelpFormatter, parents=[common_options()], **kwargs)


def device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default=None,
                        help="where the merge arithmetic runs (default: the recipe's merge.device, else auto)")


def revision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--revision", metavar="BRANCH", default=None,
                        help="the target's branch to commit to; created from the default branch's head when "
                             "missing (default: the recipe's target.revision, else main)")


def format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="text (default), or one JSON document on stdout, with the time of each stage "
                             "(logs stay on stderr)")


def plan_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", metavar="PLAN_JSON", default=None,
                        help="use this lock (from `chatvector plan RECIPE --json > plan.json`): exactly its commits "
                             "and decisions; refused when the recipe or an input changed since (default: plan the recipe afresh)")


def fetch_option(parser: argparse.ArgumentParser) -> None:
    from chatvector.recipe.recipe import FETCH_MODES

    parser.add_argument("--fetch", choices=FETCH_MODES, default=None,
                        help="how Hub inputs are read (default: the recipe's merge.fetch, else auto): snapshot "
                             "downloads the weight files into the HF cache first; stream reads each tensor with "
                             "range requests, nothing on disk (publish then uploads each shard as it is written, "
                             "so the disk holds one shard); auto streams when the download and the output do not "
                             "fit on the free disk, and says why")


def refuse_unknown(parser: argparse.ArgumentParser, args: argparse.Namespace, unknown: list[str]) -> None:
    """argparse's "unrecognized arguments", from the command's own parser, with the closest option of that
    command and where its options are listed (exit 2)."""
    import difflib

    command = getattr(args, "command", None)
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    target = sub.choices.get(command, parser) if sub is not None and command else parser
    options = [o for a in target._actions for o in a.option_strings if o.startswith("--")]
    hints = []
    for arg in unknown:
        close = difflib.get_close_matches(arg.split("=", 1)[0], options, n=1, cutoff=0.6)
        if close:
            hints.append(f"{arg}: did you mean {close[0]}?")
    where = f"chatvector {command} --help" if command else "chatvector --help"
    target.error(f"unrecognized arguments: {' '.join(unknown)}" + (f" ({'; '.join(hints)})" if hints else "")
                 + f"; {where} lists the options")


# -- output shared by commands -------------------------------------------------------------------------------------
def print_json(doc: dict) -> None:
    import json

    from chatvector.stages import timings

    print(json.dumps({**doc, "stages": timings()}, indent=2, ensure_ascii=False, default=str))


def print_io(io, quiet: bool = False) -> None:
    if io is not None and not quiet:
        print(io.summary(), file=sys.stderr)


def print_published(published) -> None:
    """A published sweep (`sweep --publish`, `publish` of a swept recipe): each branch, and what main holds."""
    from chatvector.recipe.sweep_factors import folder_name

    for branch, result in {**published.branches, "main": published.main}.items():
        what = "published" if result.changed else "unchanged"
        print(f"  {what} {branch}: {result.url} at {result.commit}")
    print(f"main holds {folder_name(published.chosen)}: the largest factor that passes eval.require")


# -- the environment, the token and logging --------------------------------------------------------------------------
def prepare_environment() -> None:
    """Settings read at import time, so this runs before anything imports them. Xet is left as the user has it:
    the local Hub speaks Xet and Git LFS alike, as the Hub does."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def check_endpoint() -> None:
    """HF_ENDPOINT must be a URL: without a scheme (`localhost:8080`) every request would fail and be retried."""
    import os
    from urllib.parse import urlsplit

    endpoint = os.environ.get("HF_ENDPOINT", "").strip()
    parts = urlsplit(endpoint)
    if endpoint and (parts.scheme not in ("http", "https") or not parts.netloc):
        example = "http://" + endpoint.split("://", 1)[-1]
        raise PipelineError(f"HF_ENDPOINT={endpoint!r} is not a URL: give it with its scheme, e.g. "
                            f"HF_ENDPOINT={example} (or https://... for a server with TLS)")


def apply_global_options(args: argparse.Namespace) -> None:
    """--token (one place: every client the command builds reads it from here), -q's bars, -v/-q's logging."""
    from chatvector.hub.client import set_token_origin

    set_token_origin(bool(getattr(args, "hub_token", None)))
    if getattr(args, "hub_token", None):  # one place: every client the command builds reads it from here
        import os

        os.environ["HF_TOKEN"] = args.hub_token
    if args.quiet:
        import os

        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when huggingface_hub loads, after this line
    configure_logging(args.verbose, args.quiet)


class PlainFormatter(logging.Formatter):
    """`message` for progress lines, `warning: message` for warnings and errors (no logger names)."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def configure_logging(verbose: bool, quiet: bool = False) -> None:
    """chatvector's own INFO lines (what it chose, progress); libraries only from WARNING on, and their retry
    chatter (huggingface_hub's "HTTP Error 429 thrown...", "Retrying in 1s") only with -v: a failure that
    survives the retries is our one line, which says how often it was tried."""
    handler = logging.StreamHandler()  # (stderr) plain words by default; -v: levels and logger names
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s") if verbose else PlainFormatter())
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING, handlers=[handler])
    logging.getLogger("chatvector").setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    for noisy in ("httpx", "httpx2", "httpcore", "httpcore2", "filelock", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose else logging.WARNING)
    _own_huggingface_hub_logging(logging.DEBUG if verbose else logging.ERROR)


def _own_huggingface_hub_logging(level: int) -> None:
    """Set huggingface_hub's log level so that it sticks. Its logging module, when first imported (in a run that
    is later, as the client loads lazily), sets the level from HF_HUB_VERBOSITY (default WARNING: the retry chatter
    would show) and adds a handler of its own. It is not imported here: the demo sets HF_ENDPOINT first."""
    import os

    os.environ["HF_HUB_VERBOSITY"] = logging.getLevelName(level).lower()
    hub_logger = logging.getLogger("huggingface_hub")
    hub_logger.setLevel(level)  # already imported (in-process callers): set it now
    for own in [h for h in hub_logger.handlers if type(h) is logging.StreamHandler]:  # ours prints its records
        hub_logger.removeHandler(own)


# -- errors and exit codes ---------------------------------------------------------------------------------------
DEVICE_FIX = "run with --device cpu, or with a smaller --batch-size (eval)"


def call(args: argparse.Namespace, what_is_left: Callable[[argparse.Namespace], str]) -> int:
    """Run the command (`args.func`) and return its exit code: a PipelineError is one line per problem on stderr
    (exit 2, no traceback), an OS error one line (2), Ctrl-C what the command leaves behind (130), anything else
    one line naming it (`unexpected`)."""
    from chatvector import stages

    try:
        code = args.func(args)
        if args.verbose:
            print("stages: " + ", ".join(f"{k} {v:.2f} s" for k, v in stages.timings().items()), file=sys.stderr)
        return code
    except PipelineError as err:
        for line in str(err).splitlines() or [type(err).__name__]:  # one line each, every problem at once
            print(f"error: {line}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:
        return reader_went_away()
    except OSError as err:  # a path or the disk, named by the OS; one line, no traceback
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {what_is_left(args)}", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - whatever a library raises reaches the user as one line
        return unexpected(err, args.verbose)
    finally:
        if "chatvector.runner" in sys.modules:
            sys.modules["chatvector.runner"].settle_preload()


def unexpected(err: Exception, verbose: bool) -> int:
    """A library error no stage translated: one line naming it (-v: the traceback too); exit 2 when it is the
    Hub's or the network's, 1 when it is ours (a bug: please report it)."""
    import traceback

    from chatvector.hub.retry import network_errors

    if verbose:
        traceback.print_exc()
    from chatvector.device_errors import device_error, is_device_error

    if is_device_error(err):  # a stage that did not translate it (generation, perplexity): the GPU's, not ours
        print(f"error: {device_error(err, device='cuda', doing='computing', fix=DEVICE_FIX)}", file=sys.stderr)
        return 2
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    cause = err.__cause__
    outside = isinstance(err, network_errors()) or type(err).__module__.startswith(("huggingface_hub", "httpx")) \
        or (cause is not None and type(cause).__module__.startswith(("huggingface_hub", "httpx")))
    if outside:
        print(f"error: {type(err).__name__}: {text or 'no message'}; run again (-v shows the details)",
              file=sys.stderr)
        return 2
    print(f"error: internal error {type(err).__name__}: {text or 'no message'} (a bug in chatvector: please "
          "report it with the output of -v)", file=sys.stderr)
    return 1


def reader_went_away() -> int:
    """stdout's reader closed the pipe (`chatvector plan R --json | head -1`): stop quietly, as other commands
    do when SIGPIPE ends them, with the shell's code for that (128 + 13). What is left unwritten goes nowhere."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's own flush at exit must not fail again
    return 141
