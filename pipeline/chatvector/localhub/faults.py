"""Fault injection for the local Hub (a test knob that emulates a flaky server and network).

`Faults("5xx=0.05,429=0.02,drop=0.02", seed=N)` draws one number from its own seeded RNG per eligible
request (the same faults for the same seed and request order) and answers, with those probabilities:

    5xx   500, 502 or 503 with a JSON error body and X-Error-Message; the endpoint does not run
    429   429 with Retry-After: 1 and the Hub's rate-limit headers; the endpoint does not run
    drop  the connection fails mid-body. GET: the endpoint runs (GETs change nothing), the headers and
          half the body go out, then the connection closes (Content-Length more than the bytes sent; an
          empty answer is not sent at all). HEAD, POST, PUT: half the request body is read, then the
          connection closes without an answer and the endpoint does not run

So a fault never leaves the server's state half-changed: writes (POST/PUT: LFS, preupload, commit) only
ever fail before they run. The server applies faults only to the endpoints a download or an upload
touches (`routes.FAULT_PRONE`); `only` narrows them further to requests matching one of its entries,
`[METHOD ]PATH-SUBSTRING` (e.g. "GET /resolve/").
"""

from __future__ import annotations

import random
import re
import threading
from typing import Iterable

from chatvector.localhub.protocol import HubHTTPError, Response

KINDS = ("5xx", "429", "drop")
FAULTS_FORM = "KIND=P[,KIND=P...] with KIND one of 5xx, 429, drop and P between 0 and 1 (together at most 1)"
FAULTS_EXAMPLE = "5xx=0.05,429=0.02,drop=0.02"
_5XX = ((500, "Internal Server Error"), (502, "Bad Gateway"), (503, "Service Unavailable"))
_ONLY = re.compile(r"^(?:(\S+) +)?(\S+)$")
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE")


def parse_faults(spec: str, name: str = "faults") -> dict[str, float]:
    """`5xx=P,429=P,drop=P` (any subset, any order) → {kind: probability}; ValueError naming NAME."""
    bad = f"{name} {spec}: must be {FAULTS_FORM}, e.g. {FAULTS_EXAMPLE}"
    if not isinstance(spec, str):
        raise ValueError(bad)
    rates: dict[str, float] = {}
    for item in spec.split(","):
        kind, sep, text = item.strip().partition("=")
        if not sep or kind not in KINDS or kind in rates:
            raise ValueError(bad)
        try:
            rates[kind] = p = float(text)
        except ValueError:
            raise ValueError(bad) from None
        if not 0 <= p <= 1:
            raise ValueError(f"{name} {spec}: the probability of {kind} is {text}, not between 0 and 1; "
                             f"must be {FAULTS_FORM}, e.g. {FAULTS_EXAMPLE}")
    if sum(rates.values()) > 1 + 1e-9:
        raise ValueError(f"{name} {spec}: the probabilities add up to more than 1; must be {FAULTS_FORM}")
    return rates


def parse_only(entry: str, name: str = "faults_only") -> tuple[str | None, str]:
    """`[METHOD ]PATH-SUBSTRING` → (METHOD or None, substring); METHOD one of GET, HEAD, POST, PUT, DELETE."""
    match = _ONLY.match(entry.strip()) if isinstance(entry, str) else None
    if not match or (match.group(1) is not None and match.group(1) not in _METHODS):
        raise ValueError(f"{name} {entry!r}: must be [METHOD ]PATH-SUBSTRING with METHOD one of "
                         f"{', '.join(_METHODS)}, e.g. 'GET /resolve/' or /lfs-upload/")
    return match.group(1), match.group(2)


class Faults:
    """Which fault (if any) each eligible request gets: "500", "502", "503", "429", "drop" or None."""

    def __init__(self, spec: str, seed: int = 0, only: Iterable[str] = ()):
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"faults_seed {seed!r}: must be an integer")
        if isinstance(only, str):  # one entry, not its characters
            only = [only]
        self.spec, self.seed = spec, seed
        self.rates = parse_faults(spec)
        self.only = [parse_only(entry) for entry in only]
        self._rng = random.Random(seed)
        self._lock = threading.Lock()

    def draw(self, method: str, path: str) -> str | None:
        if self.only and not any((m is None or m == method) and part in path for m, part in self.only):
            return None
        with self._lock:
            r = self._rng.random()
        for kind in KINDS:
            p = self.rates.get(kind, 0.0)
            if r < p:
                return str(_5XX[min(2, int(r / p * 3))][0]) if kind == "5xx" else kind
            r -= p
        return None


def error_response(fault: str) -> Response:
    """The answer to a "5xx" or "429" fault (the endpoint did not run)."""
    if fault == "429":
        message = ("We had to rate limit you, you hit the quota of 500 api requests per 5 minutes period. "
                   "Retry after 1 second. (Fault injected by the local Hub.)")
        return Response.of_error(HubHTTPError(429, message, headers={
            "Retry-After": "1", "RateLimit": '"api";r=0;t=1', "RateLimit-Policy": '"fixed window";"api";q=500;w=300'}))
    status = int(fault)
    reason = dict(_5XX)[status]
    return Response.of_error(HubHTTPError(status, f"{reason} (fault injected by the local Hub)"))


def cut(length: int) -> int:
    """Body bytes a dropped response sends before the connection closes: half, at least 1, at most LENGTH - 1."""
    return min(max(1, length // 2), length - 1) if length > 1 else 0
