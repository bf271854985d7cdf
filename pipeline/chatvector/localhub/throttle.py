"""Bandwidth limits for the local Hub (a test knob that emulates a network).

A `Bucket` is a token bucket of RATE bytes per second, shared by every thread that paces through it: a
caller reserves the next N bytes' slot on the bucket's timeline and sleeps until that slot ends, so
concurrent users share the rate in turn (each gets about RATE / users). `pace(buckets, n)` reserves on
several buckets at once (a connection's own and the direction's total) and waits for the latest.

The server sends and reads bodies in slices of `slice_size(buckets)` bytes (64 KiB, smaller for slow
rates: about 50 ms of the slowest bucket), so a transfer is smooth and nothing is read whole.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Sequence

MB = 1_000_000  # the knobs are in megabytes (10^6 bytes) per second
_MAX_SLICE, _MIN_SLICE, _SLICE_S = 64 * 1024, 1024, 0.05
_SLACK_S = 0.01  # credit for a late sleeper (sleep overshoot, the send itself); an idle bucket bursts this much


class Bucket:
    """RATE bytes per second for whoever paces through it; thread-safe."""

    def __init__(self, rate: float):
        if not rate > 0:
            raise ValueError(f"a bucket's rate must be more than 0 bytes per second, not {rate}")
        self.rate = rate
        self._lock = threading.Lock()
        self._next = time.monotonic()  # when the bytes reserved so far have gone through

    def reserve(self, n: int) -> float:
        """Book N bytes; the monotonic time at which they may have gone through."""
        with self._lock:
            self._next = max(self._next, time.monotonic() - _SLACK_S) + n / self.rate
            return self._next


def pace(buckets: Sequence[Bucket], n: int) -> None:
    """Wait until N bytes may go through every one of BUCKETS."""
    if buckets and n > 0:
        delay = max(b.reserve(n) for b in buckets) - time.monotonic()
        if delay > 0:
            time.sleep(delay)


def slice_size(buckets: Sequence[Bucket]) -> int:
    """Bytes per send or read: about 50 ms of the slowest bucket, between 1 KiB and 64 KiB."""
    slowest = min(b.rate for b in buckets)
    return int(max(_MIN_SLICE, min(_MAX_SLICE, slowest * _SLICE_S)))


def bucket_of(mb_per_s: float | None) -> Bucket | None:
    """The bucket of a knob in MB/s; None for 0/None (unlimited)."""
    return Bucket(mb_per_s * MB) if mb_per_s else None


RATE_FORM = "megabytes per second, a number of 0 or more (e.g. 10 or 2.5; 0: unlimited)"


def check_rate(value: float | None, name: str) -> float | None:
    """VALUE as a rate in MB/s (None when unlimited); ValueError naming NAME when it is not one."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} {value!r}: must be {RATE_FORM}")
    return float(value) or None


def parse_rate(text: str, name: str) -> float | None:
    """A command-line rate (`10`, `2.5`, `0`: unlimited); ValueError naming NAME when it is not one."""
    try:
        return check_rate(float(text), name)
    except ValueError:
        raise ValueError(f"{name} {text}: must be {RATE_FORM}") from None


class PacedReader:
    """A request body's stream, read in slices paced by BUCKETS (uploads)."""

    def __init__(self, raw, buckets: Sequence[Bucket]):
        self._raw, self._buckets, self._slice = raw, list(buckets), slice_size(buckets)

    def read(self, n: int = -1) -> bytes:
        out = bytearray()
        while n < 0 or len(out) < n:
            data = self._raw.read(self._slice if n < 0 else min(self._slice, n - len(out)))
            if not data:
                break
            pace(self._buckets, len(data))
            out += data
        return bytes(out)

    def readline(self, limit: int = -1) -> bytes:
        line = self._raw.readline(limit)
        pace(self._buckets, len(line))
        return line
