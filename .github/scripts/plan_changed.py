#!/usr/bin/env python3
"""Run `chatvector plan` on the recipes a pull request changes, without a token, and annotate the result.

    .venv/bin/python .github/scripts/plan_changed.py CHANGED_PATHS_FILE

Run from the repository root with the project's Python (it runs `python -m chatvector plan`). The file holds the
changed paths, one a line (`git diff --name-only`); list_recipes.changed_recipes picks the recipes among them.
A pull request gets no secrets, so public sources are read anonymously. Per recipe, one outcome:

- the plan passes: its report, folded in the log;
- a source is gated: one ::notice:: (the plan needs a token with access; the scheduled run has one);
- a source cannot be found anonymously (private, or a typo in repo_id): one ::warning:: with the plan's line;
- any other problem: one ::error:: per line of the plan, on the recipe's line, and the job fails (exit 1).
"""

from __future__ import annotations

import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from list_recipes import changed_recipes  # noqa: E402  (the script's own folder, not a package)

# "error: recipes/x.yaml:12: base.repo_id: message" (the location is there when the plan knows it)
_LOCATED = re.compile(r"^error: (?P<file>[^:\s]+\.yaml):(?P<line>\d+): (?P<message>.*)$")
_GATED = re.compile(r" is gated: ")
_GATED_REPO = re.compile(r"(?P<repo>[^\s:]+/[^\s:]+) is gated: ")
_NOT_FOUND = re.compile(r" was not found on the Hub \(or it is private")


@dataclass(frozen=True)
class Outcome:
    kind: str  # "passed", "gated", "unreadable" (not found anonymously) or "failed"
    lines: tuple[str, ...]  # the plan's error lines (its report when it passed)


def classify(returncode: int, stdout: str, stderr: str) -> Outcome:
    """What a plan's exit and output mean for a pull request."""
    if returncode == 0:
        return Outcome("passed", tuple(stdout.splitlines()))
    errors = tuple(line for line in stderr.splitlines() if line.startswith("error: "))
    if not errors:  # it ended without saying why: show what it printed
        return Outcome("failed", tuple(stderr.splitlines()[-20:]) or (f"error: plan exited with {returncode}",))
    if all(_GATED.search(line) for line in errors):
        return Outcome("gated", errors)
    if all(_GATED.search(line) or _NOT_FOUND.search(line) for line in errors):
        return Outcome("unreadable", errors)
    return Outcome("failed", errors)


def _escape(text: str, *, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return text.replace(":", "%3A").replace(",", "%2C") if prop else text


def annotation(kind: str, recipe: str, line: str) -> str:
    """`::kind file=...,line=...,title=...::message` for one of the plan's lines."""
    found = _LOCATED.match(line)
    where = f"file={_escape(found['file'] if found else recipe, prop=True)}"
    if found:
        where += f",line={found['line']}"
    message = found["message"] if found else line.removeprefix("error: ")
    return f"::{kind} {where},title={_escape(f'plan {recipe}', prop=True)}::{_escape(message)}"


def _gated_notice(recipe: str, lines: list[str]) -> str:
    """One line for every gated source of a recipe, on the first one's line."""
    repos = ", ".join(dict.fromkeys(_GATED_REPO.search(line)["repo"] for line in lines))
    found = _LOCATED.match(lines[0])
    head = f"error: {found['file']}:{found['line']}: " if found else ""
    return annotation("notice", recipe, f"{head}not planned: gated source(s) {repos}; a pull request gets no "
                                        "token, the scheduled run plans it with HF_TOKEN (its account needs access)")


def report(recipe: str, outcome: Outcome) -> list[str]:
    """The lines to print for one recipe's outcome."""
    if outcome.kind == "passed":
        return [f"::group::plan {recipe}: passes", *outcome.lines, "::endgroup::"]
    if outcome.kind == "failed":
        return [annotation("error", recipe, line) for line in outcome.lines]
    gated = [line for line in outcome.lines if _GATED.search(line)]
    others = [annotation("warning", recipe, line) for line in outcome.lines if line not in gated]
    return ([_gated_notice(recipe, gated)] if gated else []) + others


def plan(recipe: str) -> Outcome:
    result = subprocess.run([sys.executable, "-m", "chatvector", "plan", recipe], capture_output=True, text=True,
                            check=False)
    return classify(result.returncode, result.stdout, result.stderr)


def main(argv: list[str]) -> int:
    try:
        recipes = changed_recipes(Path(argv[1]).read_text(encoding="utf-8").splitlines())
    except (IndexError, OSError, ValueError) as err:
        print(f"::error title=plan changed recipes::{_escape(str(err) or 'usage: plan_changed.py FILE')}")
        return 2
    if not recipes:
        print("no recipe changed: nothing to plan")
        return 0
    failed = 0
    for recipe in recipes:
        outcome = plan(recipe)
        print("\n".join(report(recipe, outcome)), flush=True)
        failed += outcome.kind == "failed"
    print(f"planned {len(recipes)} recipe(s): {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
