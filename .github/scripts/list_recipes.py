#!/usr/bin/env python3
"""Print the recipes the publish workflow runs, as one JSON list (the job matrix).

    python3 .github/scripts/list_recipes.py                    # every recipes/*.yaml but recipes/demo.yaml
    python3 .github/scripts/list_recipes.py recipes/ko.yaml    # just that one (a manual run's input)

Run from the repository root. An empty or blank argument means "every recipe". A named recipe must be
an existing recipes/NAME.yaml other than the demo (which publishes to the embedded local Hub only);
NAME is letters, digits, '.', '_' and '-'. Anything else exits with status 2 and a GitHub error
annotation, and no publish job starts. Standard library only.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

RECIPES = Path("recipes")
DEMO = "recipes/demo.yaml"
NAME = re.compile(r"recipes/[A-Za-z0-9][A-Za-z0-9._-]*\.yaml")


def list_recipes(requested: str = "") -> list[str]:
    requested = requested.strip()
    if not requested:
        found = sorted(p.as_posix() for p in RECIPES.glob("*.yaml") if p.is_file() and p.as_posix() != DEMO)
        odd = [name for name in found if not NAME.fullmatch(name)]
        if odd:  # such names would need quoting in make and shell; refuse them rather than mangle them
            raise ValueError(f"rename {', '.join(map(repr, odd))}: use letters, digits, '.', '_' and '-' only")
        return found
    if requested.startswith("./"):
        requested = requested[2:]
    if not NAME.fullmatch(requested) or ".." in requested:
        raise ValueError(f"recipe {requested!r} is not a file name of the form recipes/NAME.yaml")
    if requested == DEMO:
        raise ValueError(f"{DEMO} is the offline demo; run `make demo` locally instead of publishing it")
    if not Path(requested).is_file():
        raise ValueError(f"recipe {requested!r} does not exist in this commit")
    return [requested]


def main(argv: list[str]) -> int:
    try:
        recipes = list_recipes(argv[1] if len(argv) > 1 else "")
    except ValueError as err:
        message = str(err).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
        print(f"::error title=list recipes::{message}", file=sys.stderr)
        return 2
    print(json.dumps(recipes, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
