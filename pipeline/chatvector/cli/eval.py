"""`chatvector eval`: evaluate a merged model folder or a Hub repository (chatvector.evaluation), and gate on it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from chatvector.cli.options import command, format_option, print_json
from chatvector.conventions import PROVENANCE_FILE
from chatvector.errors import PipelineError

# The libraries each command runs are imported inside its functions: start-up time (`chatvector --help` and
# `plan` load no torch, transformers or huggingface_hub; tests check it).

DESCRIPTION = """\
Evaluate a chat model (a merge) in its target language, on the GPU when there is one:

  fidelity    the share of its answers that are in the target language: one greedy, seeded answer per
              prompt, generated through the model's own chat template; the language of each answer is
              detected with py3langid (Chinese: zh-Hant or zh-Hans by the characters it uses)
  format      the share of answers that are well-formed chat turns: they end with an end-of-turn token
              (generation_config's eos ids, the tokenizer's eos) within --max-new-tokens, no special token
              or chat-template marker leaks into the text, and they are not empty
  perplexity  on a short target-language text (shipped, or --text); with --reference (the cp model the
              merge started from) also its perplexity and the ratio of the two

Prompt sets and texts ship for ko, ja and zh-Hant (30 prompts each: everyday, chat and safety requests).
Any other language the identifier knows works with --prompts FILE (one prompt per line, or a JSON list)
and --text FILE (or --no-perplexity).

--require fidelity=0.9,format=1.0,perplexity=1.5 is the gate: each metric at least that (perplexity: the
ratio to the reference at most that); when one is missed, each miss is one line on stderr and the exit
code is 2 (after the results are printed).

Examples:
  chatvector eval ./merged --language ko
  chatvector eval my-org/Llama-3-Open-Ko-8B-Chat --reference beomi/Llama-3-Open-Ko-8B \\
      --require fidelity=0.9,format=1.0,perplexity=1.5 --responses eval_responses.jsonl
  chatvector eval ./merged --language fr --prompts prompts.txt --no-perplexity --format json
"""


class EvalOptionError(PipelineError):
    """An option of `chatvector eval` is wrong (one line, naming the option and the fix)."""


def add(sub: argparse._SubParsersAction) -> None:
    """`chatvector eval DIR|REPO ...`."""
    from chatvector.evaluation.spec import DEFAULT_MAX_NEW_TOKENS

    parser = command(sub, "eval", help="evaluate a merged model: target-language fidelity, chat format, perplexity",
                     description=DESCRIPTION)
    parser.add_argument("model", metavar="DIR|REPO", help="a model folder, or a Hub repository id (namespace/name)")
    parser.add_argument("--revision", metavar="REV", default=None,
                        help="the Hub repository's branch, tag or commit (default: main); not for a folder")
    parser.add_argument("--language", default=None, metavar="LANG",
                        help="the target language: ko, ja, zh-Hant, or any ISO 639-1 code with --prompts (default: "
                             "the first non-English language in the model's chatvector.json card)")
    parser.add_argument("--prompts", metavar="FILE", default=None,
                        help="prompts to answer, one per line or a JSON list of strings (default: the shipped set "
                             "for --language)")
    parser.add_argument("--text", metavar="FILE", default=None,
                        help="the target-language text for perplexity (default: the shipped one for --language)")
    parser.add_argument("--no-perplexity", action="store_true", help="do not measure perplexity")
    parser.add_argument("--reference", metavar="DIR|REPO", default=None,
                        help="a model to compare perplexity with, usually the cp the merge started from "
                             "(default: none, no ratio)")
    parser.add_argument("--reference-revision", metavar="REV", default=None,
                        help="the reference repository's branch, tag or commit (default: main)")
    parser.add_argument("--max-new-tokens", type=int, default=DEFAULT_MAX_NEW_TOKENS, metavar="N",
                        help="the most tokens an answer may have; one that has not ended by then is not a "
                             "well-formed turn")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="torch's seed before generating (default: 0)")
    parser.add_argument("--batch-size", type=int, default=8, metavar="N", help="prompts generated together")
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto",
                        help="where the model runs; auto: CUDA when present")
    parser.add_argument("--require", metavar="METRIC=VALUE,...", default=None,
                        help="the gate: fidelity=0.9,format=1.0,perplexity=1.5; exit 2 with one line per threshold "
                             "missed (default: no gate)")
    parser.add_argument("--lm-eval", metavar="TASK[,TASK]", default=None,
                        help="also run these lm-evaluation-harness tasks (needs lm-eval: pip install 'lm-eval>=0.4' in "
                             "chatvector's environment; default: none)")
    parser.add_argument("--lm-eval-limit", type=int, metavar="N", default=None,
                        help="examples per lm-eval task (default: all)")
    parser.add_argument("--responses", metavar="FILE", default=None,
                        help="write every answer there: JSON Lines when FILE ends in .jsonl, else one JSON document "
                             "with the settings and scores (default: not written)")
    format_option(parser)
    parser.set_defaults(func=_cmd_eval)


def _options(args: argparse.Namespace) -> dict:
    """The EvalSpec fields the options give, but the language; every bad option is one EvalOptionError line."""
    from chatvector.evaluation.spec import LmEvalSpec, check_max_new_tokens, check_seed, parse_requirements

    def checked(option: str, check, value):
        try:
            return check(value)
        except ValueError as err:
            raise EvalOptionError(f"{option}: {err}") from None

    fields: dict = {"max_new_tokens": checked("--max-new-tokens", check_max_new_tokens, args.max_new_tokens),
                    "seed": checked("--seed", check_seed, args.seed), "perplexity": not args.no_perplexity}
    if args.require is not None:
        fields["require"] = checked("--require", parse_requirements, args.require)
        _check_perplexity_can_be_gated(fields["require"], args)
    if args.batch_size < 1:
        raise EvalOptionError(f"--batch-size: expected a whole number >= 1, got {args.batch_size}")
    for option, key in (("--prompts", "prompts"), ("--text", "text")):
        value = getattr(args, key)
        if value is not None and not Path(value).is_file():
            raise EvalOptionError(f"{option} {value}: " + ("is not a file" if Path(value).exists() else "file not found"))
        fields[key] = Path(value) if value is not None else None
    if args.lm_eval is not None:
        tasks = tuple(t.strip() for t in args.lm_eval.split(",") if t.strip())
        if not tasks:
            raise EvalOptionError("--lm-eval: give at least one task, e.g. --lm-eval kobest_boolq,kobest_copa")
        if args.lm_eval_limit is not None and args.lm_eval_limit < 1:
            raise EvalOptionError(f"--lm-eval-limit: expected a whole number >= 1, got {args.lm_eval_limit}")
        fields["lm_eval"] = LmEvalSpec(tasks, args.lm_eval_limit)
    return fields


def _check_perplexity_can_be_gated(require, args: argparse.Namespace) -> None:
    """A perplexity threshold is on the ratio to --reference: refused before any answer is generated without one."""
    if require.perplexity is None:
        return
    if args.no_perplexity:
        raise EvalOptionError(f"--require perplexity={require.perplexity:g} with --no-perplexity: the gate needs "
                              "perplexity measured; leave out one of them")
    if args.reference is None:
        raise EvalOptionError(f"--require perplexity={require.perplexity:g}: the threshold is on the ratio to a "
                              "reference model; give --reference DIR|REPO (the cp the merge started from), or leave "
                              "perplexity out of --require")


def _check_model_argument(option: str, value: str) -> None:
    """A path that names nothing is a typo, not a Hub repository id: say so before anything is downloaded."""
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise EvalOptionError(f"{option} {value}: is a file; give a model folder or a Hub repository id "
                              "(namespace/name)")
    if not path.exists() and (value.startswith((".", "/", "~")) or value.count("/") != 1):
        raise EvalOptionError(f"{option} {value}: the folder does not exist (nor is it a Hub repository id, "
                              "namespace/name)")


def _spec(language: str, fields: dict):
    """The EvalSpec for `language`, once it is known to have prompts (and a text, for perplexity)."""
    from chatvector.evaluation.spec import EvalSpec, missing_data

    for key, message in missing_data(language, fields["prompts"], fields["text"], fields["perplexity"]):
        fix = "--prompts FILE" if key == "prompts" else "--text FILE, or --no-perplexity"
        raise EvalOptionError(f"--language {language}: {message} ({fix})")
    return EvalSpec(language=language, **fields)


def _declared_language(model: str, revision: str | None, api) -> str:
    """The language a chatvector-made model declares: the first non-English code of its chatvector.json card."""
    from chatvector.evaluation.languages import canonical_language

    folder = Path(model).expanduser()
    doc = None
    if folder.is_dir():
        path = folder / PROVENANCE_FILE
        doc = json.loads(path.read_text("utf-8")) if path.is_file() else None
    elif "/" in model:
        from chatvector.hub.client import hub_call

        try:
            with hub_call(api, model, revision=revision):
                if api.file_exists(model, PROVENANCE_FILE, revision=revision):
                    doc = json.loads(Path(api.hf_hub_download(model, PROVENANCE_FILE, revision=revision))
                                     .read_text("utf-8"))
        except ValueError:  # not JSON: as if there were none
            doc = None
    declared = [c for c in ((doc or {}).get("card") or {}).get("language") or [] if isinstance(c, str) and c != "en"]
    if not declared:
        raise EvalOptionError(f"--language is needed: {model} declares no target language (no chatvector.json card "
                              "language other than en); e.g. --language ko")
    try:
        language = canonical_language(declared[0])
    except ValueError:
        language = None
    if language in (None, "zh"):
        raise EvalOptionError(f"--language is needed: {model} declares '{declared[0]}', which does not say which "
                              "prompt set to use; e.g. --language " + ("zh-Hant or zh-Hans" if language else "ko"))
    return language


def _cmd_eval(args: argparse.Namespace) -> int:
    from chatvector.evaluation import check_gate, evaluate, write_responses
    from chatvector.evaluation.harness import require_lm_eval
    from chatvector.evaluation.languages import canonical_language
    from chatvector.hub.client import connect

    _check_model_argument("model", args.model)
    if args.reference is not None:
        _check_model_argument("--reference", args.reference)
    fields = _options(args)
    if args.language is not None:
        try:
            language = canonical_language(args.language)
        except ValueError as err:
            raise EvalOptionError(f"--language: {err}") from None
    if "lm_eval" in fields:
        require_lm_eval()  # before anything is downloaded
    api = connect()
    spec = _spec(language if args.language is not None else _declared_language(args.model, args.revision, api), fields)
    result = evaluate(args.model, spec, revision=args.revision, reference=args.reference,
                      reference_revision=args.reference_revision, device=args.device, api=api,
                      batch_size=args.batch_size, progress=not args.quiet)
    if args.responses:
        write_responses(result, args.responses)
    failures = check_gate(result, spec.require, source="--require")
    if args.format == "json":
        print_json({**result.to_dict(), "gate": {"require": spec.require.set(), "failures": failures,
                                                 "passed": not failures}})
    else:
        print(render(result))
    if failures:
        raise EvalOptionError("\n".join(failures))  # one line each, exit 2 (after the results)
    return 0


def _short(text: str, width: int = 72) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def render(result) -> str:
    """The result in plain words: the scores, then one line per answer."""
    from chatvector.evaluation.languages import in_language

    n = len(result.responses)
    in_lang = sum(in_language(r.language, result.language) for r in result.responses)
    ended = sum(r.ended_with_eot for r in result.responses)
    leaked = sum(bool(r.leaked) for r in result.responses)
    empty = sum(r.empty for r in result.responses)
    lines = [f"evaluated {result.model}" + (f"@{result.revision[:10]}" if result.revision else "")
             + f" on {result.device}: {n} prompts ({result.prompts_source}), greedy, at most "
             f"{result.max_new_tokens} new tokens, in {result.seconds:.1f} s",
             f"  fidelity    {result.fidelity:.2f}  {in_lang} of {n} answers in {result.language}",
             f"  format      {result.format:.2f}  {ended} of {n} ended with an end-of-turn token; {leaked} leaked "
             f"special tokens or template markers; {empty} empty"]
    ppl = result.perplexity
    if ppl is not None:
        line = f"  perplexity  {ppl.value:.2f}  on {ppl.text_source} ({ppl.n_tokens} tokens)"
        if ppl.ratio is not None:
            line += f"; the reference {ppl.reference}: {ppl.reference_value:.2f}, ratio {ppl.ratio:.3f}"
        lines.append(line)
    for task, metrics in (result.lm_eval or {}).items():
        shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
        lines.append(f"  lm-eval     {task}: {shown}")
    lines.append("answers:")
    for r in result.responses:
        flags = [r.language, "eot" if r.ended_with_eot else "no eot"] + (["leaked " + " ".join(r.leaked)] if r.leaked else [])
        lines.append(f"  [{', '.join(flags)}] {_short(r.prompt, 36)} → {_short(r.response)}")
    return "\n".join(lines)

