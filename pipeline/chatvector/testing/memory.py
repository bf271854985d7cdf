"""Peak memory of a block of code, for tests that bound it (run them in a fresh process).

    with PeakMemory() as peak:
        run_merge(...)
    peak.anon, peak.rss        # bytes above what the process held when the block began
"""

from __future__ import annotations

import threading
import time


def _status() -> dict[str, int]:
    """This process's anonymous and resident memory now, in bytes (Linux /proc)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, value = line.split(":", 1)
            if key in ("RssAnon", "VmRSS"):
                out[key] = int(value.split()[0]) * 1024
    return out


class PeakMemory:
    """Samples /proc every 2 ms on a daemon thread (a failing block must not hang the process)."""

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.anon = self.rss = 0

    def __enter__(self) -> "PeakMemory":
        self._base = _status()
        self._peak = dict(self._base)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            for key, value in _status().items():
                self._peak[key] = max(self._peak[key], value)
            time.sleep(self.interval)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.anon = self._peak["RssAnon"] - self._base["RssAnon"]
        self.rss = self._peak["VmRSS"] - self._base["VmRSS"]
