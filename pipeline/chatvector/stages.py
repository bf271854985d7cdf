"""Wall time per stage of a run, for `-v` and `--format json`: import, plan, preflight, fetch, merge, assemble,
verify, provenance, card, push.

    with timed("plan"):
        plan = make_plan(recipe, api)
    timings()            # {"import": 1.9, "plan": 0.4, ...} in seconds, in the order the stages ran

One process runs one command, so the clock is the process's (`reset()` starts it over); library callers
that never read it pay nothing but a dictionary update per stage.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator

log = logging.getLogger(__name__)
_seconds: dict[str, float] = {}


@contextlib.contextmanager
def timed(stage: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        _seconds[stage] = _seconds.get(stage, 0.0) + elapsed
        log.debug("%s: %.2f s", stage, elapsed)


def record(stage: str, seconds: float) -> None:
    _seconds[stage] = _seconds.get(stage, 0.0) + seconds


def timings() -> dict[str, float]:
    return {stage: round(seconds, 3) for stage, seconds in _seconds.items()}


def reset() -> None:
    _seconds.clear()


def since_process_start() -> float | None:
    """Seconds since this process started (Linux /proc), or None elsewhere: Python's own start-up and
    the imports before the first line of the command."""
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None
