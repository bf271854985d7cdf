"""`chatvector publish RECIPE`: plan, merge, verify, render the card and push in one commit
(chatvector.publish.publish.publish; a recipe with `sweep:` and `eval:`: chatvector.publish.sweep.publish_recipe_sweep)."""

from __future__ import annotations

import argparse
from pathlib import Path

from chatvector.cli.options import (
    command,
    device_option,
    fetch_option,
    format_option,
    plan_option,
    print_io,
    print_json,
    print_published,
    revision_option,
)
from chatvector.errors import PipelineError

# The libraries each command runs are imported inside its functions: start-up time (`chatvector --help` and
# `plan` load no torch, transformers or huggingface_hub; tests check it).


class PublishOptionError(PipelineError):
    """An option of `chatvector publish` is wrong for the recipe (one line, naming the option and the fix)."""


def add(sub: argparse._SubParsersAction) -> None:
    publish = command(
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
    revision_option(publish)
    publish.add_argument("--private", action="store_true",
                         help="create the target private when it does not exist (as target.private: true does)")
    publish.add_argument("--from", metavar="DIR", dest="from_dir",
                         help="push the folder `chatvector merge RECIPE --out DIR` wrote (after checking that it was "
                              "merged from this plan and verifying every file again) instead of merging (default: merge)")
    device_option(publish)
    fetch_option(publish)
    plan_option(publish)
    format_option(publish)
    publish.add_argument("--force", action="store_true",
                         help="merge and push even when nothing upstream changed (the target's chatvector.json "
                              "records this output already)")
    publish.add_argument("--overwrite", action="store_true",
                         help="replace files of the target that chatvector did not publish (refused otherwise)")
    publish.set_defaults(func=_cmd_publish)


def _cmd_publish(args: argparse.Namespace) -> int:
    from chatvector.publish.publish import PublishOptions, publish
    from chatvector.recipe.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    recipe.require_target()
    if args.commit_message is not None or args.commit_description is not None:  # (not in the plan's fingerprint)
        import dataclasses

        recipe = dataclasses.replace(recipe, commit_message=args.commit_message or recipe.commit_message,
                                     commit_description=args.commit_description)
    from chatvector.publish.sweep import publishes_a_sweep

    if publishes_a_sweep(recipe):  # `sweep:` and `eval:`: keep the sweep's choice (chatvector.publish.sweep)
        return publish_swept(args, recipe)
    result = publish(recipe, PublishOptions(
        private=args.private, dry_run=args.dry_run, create_pr=args.create_pr, tag=args.tag, plan_file=args.plan,
        out_dir=Path(args.out) if args.out else None, device=args.device, force=args.force, fetch=args.fetch,
        overwrite=args.overwrite, progress=not args.quiet, from_dir=Path(args.from_dir) if args.from_dir else None,
        revision=args.revision))
    if args.format == "json":
        print_json({"repo_id": result.repo_id, "branch": result.branch, "changed": result.changed,
                    "dry_run": args.dry_run, "branch_created": result.branch_created,
                    "commit": result.commit, "pull_request": result.pr_url, "tag": result.tag, "url": result.url,
                    "added": result.added, "deleted": result.deleted, "card_only": result.card_only,
                    "out_dir": str(result.out_dir) if result.out_dir else None,
                    "io": result.io.to_dict() if result.io else None})
        return 0
    print_io(result.io, args.quiet)
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


# -- `chatvector publish RECIPE` of a recipe with `sweep:` and `eval:` -----------------------------------------
SWEPT_PUBLISH_REFUSES = (("create_pr", "--create-pr"), ("tag", "--tag"),
                         ("from_dir", "--from"), ("plan", "--plan"), ("revision", "--revision"),
                         ("private", "--private"), ("overwrite", "--overwrite"))


def publish_swept(args: argparse.Namespace, recipe) -> int:
    """`chatvector publish` of a recipe with `sweep:` and `eval:`: keep the sweep's choice on main, or sweep and
    publish again (chatvector.publish.sweep.publish_recipe_sweep). Options that mean one commit are refused."""
    from chatvector.publish.sweep import publish_recipe_sweep

    given = [option for dest, option in SWEPT_PUBLISH_REFUSES if getattr(args, dest, None)]
    if given:
        raise PublishOptionError(f"publish {given[0]}: {recipe.path} has `sweep:` and `eval:`, so publish keeps "
                                 "the sweep's choice (every variant on its branch, the best on main), which takes no "
                                 f"{given[0]}; leave it out, or publish one factor from a copy of the recipe without "
                                 "`sweep:`")
    if args.dry_run:
        return _dry_run_swept(recipe)
    published = publish_recipe_sweep(recipe, out_dir=Path(args.out) if args.out else None, force=args.force,
                                     fetch=args.fetch, device=args.device, progress=not args.quiet)
    main = published.main
    if args.format == "json":
        print_json({"repo_id": main.repo_id, "branch": "main", "changed": any(
            r.changed for r in [main, *published.branches.values()]), "commit": main.commit, "url": main.url,
            "sweep": published.to_dict()})
        return 0
    if published.kept:
        from chatvector.recipe.sweep_factors import folder_name

        print(f"nothing changed: {main.url} at {main.commit} already holds {folder_name(published.chosen)}, the "
              "sweep's choice for this recipe and the same inputs; nothing was merged or pushed")
        return 0
    print_published(published)
    return 0


def _dry_run_swept(recipe) -> int:
    """`publish --dry-run` of a swept recipe: whether the sweep would run again, and why (nothing is merged)."""
    from chatvector.hub.client import connect
    from chatvector.publish.sweep import chosen_on_main, plan_and_main, sweep_changes
    from chatvector.recipe.sweep_factors import folder_name

    api = connect()
    plan, state = plan_and_main(recipe, api)
    why = sweep_changes(plan, state, api)
    if not why:
        print(f"nothing changed: {recipe.require_target().repo_id} at {state.head} already holds "
              f"{folder_name(chosen_on_main(state.provenance))}, the sweep's choice; nothing would be merged or pushed")
        return 0
    factors = ", ".join(f"{f:g}" for f in recipe.sweep.lambdas)
    print(f"dry run: would sweep λ factors {factors} again, evaluate each, publish it to its branch lambda-F and the "
          f"largest factor that passes eval.require to main — {'; '.join(why)} (nothing was merged; `chatvector sweep "
          f"{recipe.path} --out DIR --eval` shows the scores)")
    return 0
