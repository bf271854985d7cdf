"""The `chatvector` command line: one subcommand per stage, each a thin shell over a library function.

Errors the user can fix (PipelineError) become one line on stderr and exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys

from chatvector import __version__
from chatvector.errors import PipelineError
from chatvector.eval_cli import add_eval_command
from chatvector.localhub.cli import add_hub_command
from chatvector.sweep_cli import add_sweep_command

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


def _common_options() -> argparse.ArgumentParser:
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


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions keep their line breaks (they hold examples); every option's help ends with its default,
    as `hf ... --help` shows them, unless the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        shown = action.default not in (None, False, [], argparse.SUPPRESS)
        if action.option_strings and shown and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _command(sub: argparse._SubParsersAction, name: str, **kwargs) -> argparse.ArgumentParser:
    """A subcommand with the shared help layout and the options every command takes."""
    return sub.add_parser(name, formatter_class=_HelpFormatter, parents=[_common_options()], **kwargs)


def _device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default=None,
                        help="where the merge arithmetic runs (default: the recipe's merge.device, else auto)")


def _add_plan(sub: argparse._SubParsersAction) -> None:
    plan = _command(
        sub,
        "plan",
        help="validate a recipe against the checkpoints' metadata and show what will happen",
        description="Validate RECIPE, pin every source to a commit and check, from metadata alone (configs,\n"
        "tokenizers, chat templates, safetensors headers read with range requests), that the merge can be\n"
        "done: architectures, layers, shapes, vocabularies, special and end-of-turn tokens, the template,\n"
        "module rules, and the card's license, languages and tags by the Hub's rules. Every problem is\n"
        "listed at once (exit 2). Prints each source's repo@sha, the coefficient of every layer and module\n"
        "rule, the bytes to download, the output size and license warnings. Downloads no weights.\n\n"
        "--json prints the plan as a lock: `merge|publish RECIPE --plan plan.json` then runs exactly it\n"
        "(its commits and decisions) and refuses if the recipe or an input changed since.\n\n"
        "Example:\n  chatvector plan recipes/demo.yaml\n  chatvector plan recipes/demo.yaml --json > plan.json",
    )
    plan.add_argument("recipe", help="the recipe YAML file")
    _revision_option(plan)
    plan.add_argument("--json", action="store_true",
                      help="print the plan as one JSON document: a lock for `merge|publish --plan` "
                           "(the same as --format json)")
    _format_option(plan)
    plan.set_defaults(func=_cmd_plan)


def _revision_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--revision", metavar="BRANCH", default=None,
                        help="the target's branch to commit to; created from the default branch's head when "
                             "missing (default: the recipe's target.revision, else main)")


def _format_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=("text", "json"), default="text",
                        help="text (default), or one JSON document on stdout, with the time of each stage "
                             "(logs stay on stderr)")


def _print_json(doc: dict) -> None:
    import json

    from chatvector.stages import timings

    print(json.dumps({**doc, "stages": timings()}, indent=2, ensure_ascii=False, default=str))


def _cmd_plan(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from chatvector.build import preflight
    from chatvector.hub.client import connect
    from chatvector.plan.report import render, render_fetch_and_disk, render_publish
    from chatvector.publish.facts import merge_facts, publish_facts
    from chatvector.recipe.recipe import load_recipe
    from chatvector.runner import prepare

    recipe = load_recipe(args.recipe)
    if args.revision is not None:
        from chatvector.errors import RecipeError
        from chatvector.publish.publish import on_branch

        recipe.require_target()
        recipe, problems = on_branch(recipe, args.revision)
        if problems:
            raise RecipeError(problems[0].text)
    api = connect()
    # A recipe with a target is also checked for what publishing it needs and a token cannot change.
    early = preflight.check_target_is_not_a_source(recipe) + preflight.check_card_template(recipe) \
        if recipe.target else []
    plan = prepare(recipe, api, early=early,
                   checks=lambda p: preflight.check_card(p, api.endpoint) + preflight.check_eval_memory(
                       recipe, p, None, gpu=False) if p is not None and recipe.target else [])
    # What publishing (or merging, without a target: beside ./) would do, from metadata only.
    facts = publish_facts(plan, api) if recipe.target else None
    if args.json or args.format == "json":
        doc = plan.to_dict()
        if facts is not None:  # ignored when the file is read back as a lock (--plan)
            doc["publish"] = facts
        print(json.dumps(doc, indent=2, ensure_ascii=False))
    else:
        extra = render_publish(facts) if facts is not None else render_fetch_and_disk(merge_facts(plan, Path.cwd()))
        print(render(plan) + "\n\n" + "\n".join(extra))
    return 0


def _plan_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", metavar="PLAN_JSON", default=None,
                        help="use this lock (from `chatvector plan RECIPE --json > plan.json`): exactly its commits "
                             "and decisions; refused when the recipe or an input changed since (default: plan the recipe afresh)")


def _fetch_option(parser: argparse.ArgumentParser) -> None:
    from chatvector.recipe.recipe import FETCH_MODES

    parser.add_argument("--fetch", choices=FETCH_MODES, default=None,
                        help="how Hub inputs are read (default: the recipe's merge.fetch, else auto): snapshot "
                             "downloads the weight files into the HF cache first; stream reads each tensor with "
                             "range requests, nothing on disk (publish then uploads each shard as it is written, "
                             "so the disk holds one shard); auto streams when the download and the output do not "
                             "fit on the free disk, and says why")


def _print_io(io, quiet: bool = False) -> None:
    if io is not None and not quiet:
        print(io.summary(), file=sys.stderr)


def _add_merge(sub: argparse._SubParsersAction) -> None:
    merge = _command(
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
    _device_option(merge)
    _fetch_option(merge)
    _plan_option(merge)
    _format_option(merge)
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
        _print_json({"out_dir": str(outcome.out_dir), "files": files, "device": outcome.device,
                     "checks": checks, "fingerprint": outcome.provenance["fingerprint"]["sha256"],
                     "io": outcome.io.to_dict() if outcome.io else None})
    else:
        _print_io(outcome.io, args.quiet)
        print(f"wrote {outcome.out_dir} ({len(files)} files, merged on {outcome.device} in {outcome.seconds:.1f} s; "
              f"{sum(c['ok'] for c in checks)}/{len(checks)} checks passed)")
    return 0


def _add_publish(sub: argparse._SubParsersAction) -> None:
    publish = _command(
        sub,
        "publish",
        help="plan, merge, verify, render the card and push to the Hub in one commit",
        description="Publish RECIPE to its target repository: plan → fetch → merge → verify → card → push.\n\n"
        "The push is one commit holding every file (weights, config, tokenizer, chat template, README.md\n"
        "card, coefficients.svg, chatvector.json), whose parent is the target's head as read before the\n"
        "run; shards of an earlier version that the new output lacks are deleted in the same commit.\n"
        "When the target's chatvector.json already records this plan's fingerprint (what the recipe says,\n"
        "the content of every input file the merge reads, the tool version) and the target still holds\n"
        "those output files, nothing is downloaded and nothing is pushed (exit 0): scheduled runs are cheap.\n"
        "A recipe with `sweep:` and `eval:` keeps what its sweep chose: nothing while main holds that variant\n"
        "for the same recipe and inputs, else `sweep --publish` again (see `chatvector sweep --help`).\n\n"
        "Before any weight byte moves it checks the plan, that the token can write to the target's\n"
        "namespace, the card, --tag, --out and the free disk, and reports every problem at once.\n\n"
        "--fetch stream (chosen by auto when the inputs are not cached and would not fit on the disk\n"
        "with the output) reads each tensor with range requests and uploads each shard as soon as it is\n"
        "written, so the disk holds one shard; the commit at the end is the same single commit. Killed\n"
        "or failed, the same command again resumes: shards the Hub already holds are not redone.\n\n"
        "The Hub is huggingface_hub's setting: HF_ENDPOINT (default https://huggingface.co) and HF_TOKEN\n"
        "(or `hf auth login`); the token is never printed.\n\n"
        "Examples:\n  chatvector publish recipes/x.yaml --dry-run --out ./preview\n"
        "  chatvector publish recipes/x.yaml --fetch stream   # a 70B merge on a 14 GB-disk runner\n"
        "  chatvector merge recipes/x.yaml --out ./m && chatvector publish recipes/x.yaml --from ./m  # those bytes\n"
        "  chatvector publish recipes/x.yaml --create-pr\n  chatvector publish recipes/x.yaml --tag v1\n"
        "  chatvector publish recipes/x.yaml --plan plan.json   # exactly the commits a reviewed plan pinned",
    )
    publish.add_argument("recipe", help="the recipe YAML file (needs `target.repo_id`)")
    publish.add_argument("--dry-run", action="store_true",
                         help="do everything but the push; show the files and the card it would commit")
    publish.add_argument("--create-pr", action="store_true",
                         help="open a pull request against the branch (--revision, default main) instead of "
                              "committing to it")
    publish.add_argument("--tag", metavar="TAG",
                         help="tag the new commit; when nothing changed, tag the head that holds this output "
                              "(no merge) (default: no tag)")
    publish.add_argument("--out", metavar="DIR",
                         help="keep the assembled model folder here (default: assembled in the HF cache's chatvector "
                              "workspace and removed after the push)")
    publish.add_argument("--commit-message", metavar="TEXT", default=None,
                         help="the commit's title (default: the recipe's commit_message, else \"chatvector: NAME "
                              "(base@sha, chat@sha, cp@sha)\")")
    publish.add_argument("--commit-description", metavar="TEXT", default=None,
                         help="the commit's description, before the lines chatvector writes there (default: only "
                              "those: the recipe file and the sources' commits)")
    _revision_option(publish)
    publish.add_argument("--private", action="store_true",
                         help="create the target private when it does not exist (as target.private: true does)")
    publish.add_argument("--from", metavar="DIR", dest="from_dir",
                         help="push the folder `chatvector merge RECIPE --out DIR` wrote (after checking that it was "
                              "merged from this plan and verifying every file again) instead of merging (default: merge)")
    _device_option(publish)
    _fetch_option(publish)
    _plan_option(publish)
    _format_option(publish)
    publish.add_argument("--force", action="store_true",
                         help="merge and push even when nothing upstream changed (the target's chatvector.json "
                              "records this output already)")
    publish.add_argument("--overwrite", action="store_true",
                         help="replace files of the target that chatvector did not publish (refused otherwise)")
    publish.set_defaults(func=_cmd_publish)


def _cmd_publish(args: argparse.Namespace) -> int:
    from pathlib import Path

    from chatvector.publish.publish import publish
    from chatvector.recipe.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    recipe.require_target()
    if args.commit_message is not None or args.commit_description is not None:  # (not in the plan's fingerprint)
        import dataclasses

        recipe = dataclasses.replace(recipe, commit_message=args.commit_message or recipe.commit_message,
                                     commit_description=args.commit_description)
    from chatvector.publish.sweep import publishes_a_sweep

    if publishes_a_sweep(recipe):  # `sweep:` and `eval:`: keep the sweep's choice (chatvector.publish.sweep)
        from chatvector.sweep_cli import publish_swept

        return publish_swept(args, recipe)
    result = publish(recipe, private=args.private, dry_run=args.dry_run, create_pr=args.create_pr, tag=args.tag, plan_file=args.plan,
                     out_dir=Path(args.out) if args.out else None, device=args.device, force=args.force,
                     fetch=args.fetch, overwrite=args.overwrite, progress=not args.quiet,
                     from_dir=Path(args.from_dir) if args.from_dir else None, revision=args.revision)
    if args.format == "json":
        _print_json({"repo_id": result.repo_id, "branch": result.branch, "changed": result.changed,
                     "dry_run": args.dry_run, "branch_created": result.branch_created,
                     "commit": result.commit, "pull_request": result.pr_url, "tag": result.tag, "url": result.url,
                     "added": result.added, "deleted": result.deleted, "card_only": result.card_only,
                     "out_dir": str(result.out_dir) if result.out_dir else None,
                     "io": result.io.to_dict() if result.io else None})
        return 0
    _print_io(result.io, args.quiet)
    if not result.changed and result.pr_url:
        print(f"nothing changed: the open pull request {result.pr_url} already proposes this output "
              f"(at {result.commit}); nothing was pushed")
    elif not result.changed:
        did = [f"created branch {result.branch_created} there"] if result.branch_created else []
        did += [f"tagged it {result.tag}"] if result.tag else []
        skipped = [what for what, asked in (("tag", args.tag and not result.tag), ("pull request", args.create_pr))
                   if asked]
        print(f"nothing changed: {result.url} at {result.commit} already holds this recipe's output "
              "for the same inputs; nothing was pushed" + "".join(f"; {d}" for d in did)
              + (f" (no {' or '.join(skipped)} was created: there is nothing new to propose; --force merges and "
                 "pushes anyway)" if skipped else ""))
    elif args.dry_run:
        print(f"dry run: would {_dry_run_action(result, args.create_pr)}")
        for name, size in result.added.items():
            print(f"  = {name}  ({size} bytes, unchanged)" if name in result.unchanged else f"  + {name}  ({size} bytes)")
        for name in result.deleted:
            print(f"  - {name}")
        kept = f"card: {result.out_dir / 'README.md'}" if result.out_dir else "card (use --out DIR to keep the files):"
        print(f"{kept}\n{'-' * 80}\n{result.card.rstrip()}\n{'-' * 80}")
    else:
        where = f"pull request {result.pr_url}" if result.pr_url else result.url
        on = f" branch {result.branch}" if result.branch != "main" else ""
        print(f"published {result.repo_id}{on} at {result.commit} ({len(result.added)} files, "
              f"{len(result.deleted)} deleted{', card only' if result.card_only else ''}): {where}"
              + (f", tagged {result.tag}" if result.tag else ""))
    return 0


def _dry_run_action(result, create_pr: bool) -> str:
    """What the push of a dry run would have done: a commit to the branch, or a pull request against it."""
    if create_pr:
        return f"open a pull request against {result.branch} of {result.repo_id} ({result.url})"
    return f"commit to {result.url}"


def _add_demo(sub: argparse._SubParsersAction) -> None:
    demo = _command(
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chatvector", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"chatvector {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages (also after COMMAND)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="only warnings, errors and the result (also after COMMAND)")
    parser.add_argument("--token", metavar="TOKEN", dest="hub_token", default=None,
                        help="the Hub token to use instead of HF_TOKEN; never printed (also after COMMAND)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_plan(sub)  # in the order of a maintainer's work
    _add_merge(sub)
    add_sweep_command(sub)
    add_eval_command(sub)
    _add_publish(sub)
    _add_demo(sub)
    add_hub_command(sub)
    _add_verbosity_to_hub_serve(sub)
    return parser


def _add_verbosity_to_hub_serve(sub: argparse._SubParsersAction) -> None:
    """`hub serve -v/-q` as every command takes them (its `--token` is the server's own: NAME=SECRET:SCOPE)."""
    hub = sub.choices["hub"]
    serve = next(a for a in hub._actions if isinstance(a, argparse._SubParsersAction)).choices["serve"]
    serve.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="log debug messages and show tracebacks")
    serve.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="no line per request on stderr (ROOT/access.log still has them); warnings and errors only")


def prepare_environment() -> None:
    """Settings read at import time, so this runs before anything imports them. Xet is left as the user has it:
    the local Hub speaks Xet and Git LFS alike, as the Hub does."""
    import os

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
        code = _reader_went_away()
    sys.stderr.flush()
    os._exit(code)


def _reader_went_away() -> int:
    """stdout's reader closed the pipe (`chatvector plan R --json | head -1`): stop quietly, as other commands
    do when SIGPIPE ends them, with the shell's code for that (128 + 13). What is left unwritten goes nowhere."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())  # the interpreter's own flush at exit must not fail again
    return 141


class _PlainFormatter(logging.Formatter):
    """`message` for progress lines, `warning: message` for warnings and errors (no logger names)."""

    def format(self, record: logging.LogRecord) -> str:
        text = record.getMessage()
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def _refuse_unknown(parser: argparse.ArgumentParser, args: argparse.Namespace, unknown: list[str]) -> None:
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


def configure_logging(verbose: bool, quiet: bool = False) -> None:
    """chatvector's own INFO lines (what it chose, progress); libraries only from WARNING on, and their retry
    chatter (huggingface_hub's "HTTP Error 429 thrown...", "Retrying in 1s") only with -v: a failure that
    survives the retries is our one line, which says how often it was tried."""
    handler = logging.StreamHandler()  # (stderr) plain words by default; -v: levels and logger names
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s") if verbose else _PlainFormatter())
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


DEVICE_FIX = "run with --device cpu, or with a smaller --batch-size (eval)"


def _unexpected(err: Exception, verbose: bool) -> int:
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


def main(argv: list[str] | None = None) -> int:
    prepare_environment()
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        _refuse_unknown(parser, args, unknown)
    if args.command not in ("hub", "demo"):  # (the demo and the server set or ignore it)
        try:
            check_endpoint()
        except PipelineError as err:
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code
    from chatvector.hub.client import set_token_origin

    set_token_origin(bool(getattr(args, "hub_token", None)))
    if getattr(args, "hub_token", None):  # one place: every client the command builds reads it from here
        import os

        os.environ["HF_TOKEN"] = args.hub_token
    if args.quiet:
        import os

        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # read when huggingface_hub loads, after this line
    configure_logging(args.verbose, args.quiet)
    from chatvector import stages

    stages.reset()
    startup = stages.since_process_start()  # Python and the imports before this line
    if startup is not None and argv is None:
        stages.record("startup", startup)
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
        return _reader_went_away()
    except OSError as err:  # a path or the disk, named by the OS; one line, no traceback
        where = f" ({err.filename})" if getattr(err, "filename", None) else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"interrupted: {what_is_left(args)}", file=sys.stderr)
        return 130
    except Exception as err:  # noqa: BLE001 - whatever a library raises reaches the user as one line
        return _unexpected(err, args.verbose)
    finally:
        if "chatvector.runner" in sys.modules:
            sys.modules["chatvector.runner"].settle_preload()
