#!/usr/bin/env python3
"""Which recipes the workflows run: the scheduled publish's matrix, and the recipes a pull request changes.

    python3 .github/scripts/list_recipes.py                    # the schedule: every recipes/NAME.yaml it publishes
    python3 .github/scripts/list_recipes.py recipes/ko.yaml    # just that one (a manual run's input)
    python3 .github/scripts/list_recipes.py --changed FILE     # of the paths in FILE (one a line, as `git diff
                                                               # --name-only` prints them), the recipes to plan

Run from the repository root; prints one JSON list. The schedule publishes what a repository adds, never what
this project ships: recipes/demo.yaml (the offline demo, for the embedded local Hub) and the examples in
EXAMPLES (their targets, my-org/..., are placeholders: a fork's token cannot write there). To publish one,
copy it to a new recipes/NAME.yaml and set its target.repo_id. Files in sub-folders of recipes/ and files not
ending in .yaml are not recipes here. NAME is letters, digits, '.', '_' and '-'. An empty or blank argument
means "every recipe". Anything else exits with status 2 and a GitHub error annotation, and no job starts.
Standard library only (the runner's python3, before the project is installed).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

RECIPES = Path("recipes")
DEMO = "recipes/demo.yaml"
# The examples this project ships. A test keeps this list equal to the shipped recipes but the demo.
EXAMPLES = ("recipes/llama2-traditional-chinese.yaml", "recipes/llama3-korean.yaml", "recipes/mistral-japanese.yaml")
NAME = re.compile(r"recipes/[A-Za-z0-9][A-Za-z0-9._-]*\.yaml")
COPY_HINT = "copy it to a new recipes/NAME.yaml and set target.repo_id to a namespace your token can write to"


def _is_recipe_path(path: str) -> bool:
    """recipes/SOMETHING.yaml directly in recipes/ (whatever its name's characters)."""
    parent, _, name = path.rpartition("/")
    return parent == RECIPES.as_posix() and name.endswith(".yaml")


def _refuse_odd_names(paths: list[str]) -> None:
    odd = [name for name in paths if not NAME.fullmatch(name)]
    if odd:  # such names would need quoting in make and shell; refuse them rather than mangle them
        raise ValueError(f"rename {', '.join(map(repr, odd))}: use letters, digits, '.', '_' and '-' only")


def shipped_examples() -> list[str]:
    """The project's example recipes present in this checkout (the schedule skips them)."""
    return [name for name in EXAMPLES if Path(name).is_file()]


def scheduled_recipes() -> list[str]:
    """Every recipe the schedule publishes: recipes/*.yaml but the demo and the examples."""
    found = sorted(p.as_posix() for p in RECIPES.glob("*.yaml") if p.is_file())
    found = [name for name in found if name != DEMO and name not in EXAMPLES]
    _refuse_odd_names(found)
    return found


def requested_recipe(requested: str) -> list[str]:
    """The one recipe a manual run names, checked."""
    requested = requested.strip().removeprefix("./")
    if not NAME.fullmatch(requested) or ".." in requested:
        raise ValueError(f"recipe {requested!r} is not a file name of the form recipes/NAME.yaml")
    if requested == DEMO:
        raise ValueError(f"{DEMO} is the offline demo; run `make demo` locally instead of publishing it")
    if requested in EXAMPLES:
        raise ValueError(f"{requested} is one of the project's examples (its target is a placeholder): {COPY_HINT}")
    if not Path(requested).is_file():
        raise ValueError(f"recipe {requested!r} does not exist in this commit")
    return [requested]


def list_recipes(requested: str = "") -> list[str]:
    """The publish matrix: the requested recipe, or every scheduled one."""
    return requested_recipe(requested) if requested.strip() else scheduled_recipes()


def changed_recipes(paths: list[str]) -> list[str]:
    """Of a pull request's changed paths, the recipes to plan: those still in the tree, examples included (a
    change to one is checked too), the demo not (its sources live on the local Hub only)."""
    found = sorted({p.strip().removeprefix("./") for p in paths if _is_recipe_path(p.strip().removeprefix("./"))})
    found = [name for name in found if name != DEMO and Path(name).is_file()]
    _refuse_odd_names(found)  # the schedule would refuse them: say so on the pull request
    return found


def _annotation(kind: str, message: str) -> str:
    message = message.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return f"::{kind} title=list recipes::{message}"


def _select(argv: list[str]) -> list[str]:
    if len(argv) > 2 and argv[1] == "--changed":
        return changed_recipes(Path(argv[2]).read_text(encoding="utf-8").splitlines())
    recipes = list_recipes(argv[1] if len(argv) > 1 else "")
    if not (argv[1:] and argv[1].strip()) and shipped_examples():
        print(_annotation("notice", f"not published: the project's examples ({', '.join(shipped_examples())}); "
                                    f"to publish one, {COPY_HINT}"), file=sys.stderr)
    return recipes


def main(argv: list[str]) -> int:
    try:
        recipes = _select(argv)
    except (ValueError, OSError) as err:
        print(_annotation("error", str(err)), file=sys.stderr)
        return 2
    print(json.dumps(recipes, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
