"""The project's error hierarchy.

Library code raises these; only the CLI turns them into lines on stderr and exit code 2.
Messages name the file or field at fault and the fix, and never contain a token.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


class PipelineError(Exception):
    """Base class: a problem the user can fix (bad input, unreachable repo, failed check)."""

    exit_code = 2


class RecipeError(PipelineError):
    """The recipe file is malformed or names something that does not exist."""


class FieldError(PipelineError):
    """A problem with one recipe field ("cp.revision"): the plan lists it, located, with the others."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field
        self.message = message


class FieldErrors(FieldError):
    """Several problems found together (one source's bad files): `items` holds each (field, message), one line each."""

    def __init__(self, items: Iterable[tuple[str, str]]):
        self.items = list(items)
        super().__init__(self.items[0][0], "\n".join(message for _, message in self.items))


class HubError(PipelineError):
    """A Hub repository, revision or file could not be reached, or the Hub refused a write."""


class MergeError(PipelineError):
    """The merge itself failed (I/O, device, arithmetic)."""


class VerificationError(PipelineError):
    """The merged model failed a check that must pass before anything is published."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong, found before any weight byte moved. `line` orders problems in file order
    (None: not tied to a recipe line, listed after those that are)."""

    text: str
    line: int | None = None


class PlanError(PipelineError):
    """Every problem the plan and the pre-flight checks found, one line each, in recipe-file order."""

    def __init__(self, problems: Iterable[Problem]):
        ordered = sorted(dict.fromkeys(problems), key=lambda p: (p.line is None, p.line or 0))
        self.problems = ordered
        super().__init__("\n".join(p.text for p in ordered))
