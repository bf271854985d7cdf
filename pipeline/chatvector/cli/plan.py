"""`chatvector plan RECIPE`: validate a recipe against the checkpoints' metadata and show what will happen
(chatvector.runner.prepare, then what publishing or merging would do: chatvector.publish.facts)."""

from __future__ import annotations

import argparse

from chatvector.cli.options import command, format_option, revision_option

# The libraries each command runs are imported inside its functions: start-up time (`chatvector --help` and
# `plan` load no torch, transformers or huggingface_hub; tests check it).


def add(sub: argparse._SubParsersAction) -> None:
    plan = command(
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
    revision_option(plan)
    plan.add_argument("--json", action="store_true",
                      help="print the plan as one JSON document: a lock for `merge|publish --plan` "
                           "(the same as --format json)")
    format_option(plan)
    plan.set_defaults(func=_cmd_plan)


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
