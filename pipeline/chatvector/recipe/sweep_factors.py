"""The factors of a λ sweep (`chatvector sweep --lambdas`, or a recipe's `sweep: {lambdas: [...]}`): the rules
both read them by, and each variant's folder name. Light: the recipe reader imports it.

    folder_name(0.7)  -> "lambda-0.7"      folder_name(1) -> "lambda-1.0"      (the shortest round-trip text)
    factor_problems([0.5, 0.5])  -> [(1, "0.5 is given twice (both would be lambda-0.5); give each factor once")]
"""

from __future__ import annotations

import math
from collections.abc import Sequence

MAX_FACTORS = 16  # outputs of one sweep: each holds a buffer pool in memory and a whole model on disk
EXAMPLE = "0.5,0.7,0.85,1.0"


def folder_name(factor: float) -> str:
    """The variant's folder: `lambda-` and the factor's shortest text that reads back as the same float."""
    return f"lambda-{float(factor)!r}"


def factor_problems(factors: Sequence[float]) -> list[tuple[int | None, str]]:
    """(index or None for the whole list, message) for every rule the factors break: each one > 0 and finite,
    none twice (the same folder name), at most MAX_FACTORS of them."""
    problems: list[tuple[int | None, str]] = []
    if not factors:
        problems.append((None, f"no factors given; give at least one, e.g. {EXAMPLE}"))
    if len(factors) > MAX_FACTORS:
        problems.append((None, f"{len(factors)} factors; a sweep writes at most {MAX_FACTORS} variants"))
    seen: set[str] = set()
    for i, f in enumerate(factors):
        if not math.isfinite(f) or f <= 0:
            problems.append((i, f"{f!r} is not a positive finite number; a factor scales the recipe's λ schedule, "
                                "so it must be > 0 (1.0 is the recipe as written)"))
            continue
        name = folder_name(f)
        if name in seen:
            problems.append((i, f"{f!r} is given twice (both would be {name}); give each factor once"))
        seen.add(name)
    return problems


def parse_factors(text: str, option: str = "--lambdas") -> list[float]:
    """`"0.5,0.7,1"` -> [0.5, 0.7, 1.0]; ValueError with one line naming `option` and the fix."""
    parts = [p.strip() for p in text.split(",")]
    factors = []
    for part in parts:
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"{option}: {part!r} is not a number; give factors separated by commas, e.g. "
                             f"{option} {EXAMPLE}") from None
        factors.append(value)
    problems = factor_problems(factors)
    if problems:
        raise ValueError(f"{option}: {problems[0][1]}")
    return factors
