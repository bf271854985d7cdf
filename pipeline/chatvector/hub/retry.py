"""One retry policy for every Hub request chatvector issues itself (huggingface_hub retries its own upload and
download bodies with the same kind of backoff).

    info = with_retries(lambda: api.model_info(repo_id), "model_info")

Transient failures: HTTP 429 (its `Retry-After` honoured, up to 30 s), 500/502/503/504, a dropped connection or
a truncated answer (httpx's transport errors, a JSON body cut short). Each is tried again after a backoff that
doubles from CHATVECTOR_HTTP_BACKOFF seconds (default 1; at most 8 times that), with jitter (each wait is drawn
between half and all of it, so that many clients do not retry in step), up to CHATVECTOR_HTTP_ATTEMPTS tries
(default 5) and CHATVECTOR_HTTP_MAX_SECONDS of waiting in all (default 120). The last error is raised as it
is, with `err.chatvector_tries` set: the one line the user sees says how often it was tried (hub.translate).
The waits are logged at DEBUG level only (`chatvector -v` shows them): the user sees one line, not the chatter.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 30.0


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_wait: float = 1.0  # seconds; doubles each time, up to 8 times this
    max_seconds: float = 120.0  # of waiting, across the tries of one call


def policy() -> RetryPolicy:
    """The policy, from the environment (bad values fall back to the defaults)."""
    default = RetryPolicy()

    def number(name: str, fallback, cast):
        try:
            return max(cast(0), cast(os.environ.get(name, fallback)))
        except ValueError:
            return fallback

    return RetryPolicy(max(1, number("CHATVECTOR_HTTP_ATTEMPTS", default.attempts, int)),
                       number("CHATVECTOR_HTTP_BACKOFF", default.first_wait, float),
                       number("CHATVECTOR_HTTP_MAX_SECONDS", default.max_seconds, float))


def network_errors() -> tuple[type[BaseException], ...]:
    """What the Hub client raises when the server cannot be reached (its HTTP library's transport errors)."""
    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        try:
            errors.append(__import__(module).TransportError)
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def transient_wait(err: BaseException, attempt: int, rules: RetryPolicy | None = None) -> float | None:
    """Seconds to wait before trying again after `err` (the `attempt`-th failure), or None: not transient, or a
    body upload (PUT) that huggingface_hub has retried already."""
    from huggingface_hub.errors import HfHubHTTPError

    rules = rules or policy()
    backoff = min(8 * rules.first_wait, rules.first_wait * 2.0 ** (attempt - 1)) * (0.5 + random.random() / 2)
    chain = [e for e in (err, err.__cause__) if e is not None]  # huggingface_hub wraps some errors once
    http = next((e for e in chain if isinstance(e, HfHubHTTPError)), None)
    if http is not None:
        response = http.response
        status = response.status_code if response is not None else None
        if status not in RETRY_STATUSES or _method(response) == "PUT":
            return None
        after = (response.headers.get("Retry-After") or "") if response is not None else ""
        return min(MAX_RETRY_AFTER, float(after)) if after.replace(".", "", 1).isdigit() else backoff
    if any(isinstance(e, json.JSONDecodeError) for e in chain):  # an answer cut short
        return backoff
    local = any(getattr(e, "errno", None) in (errno.ENOSPC, errno.ENOENT, errno.EACCES) for e in chain)  # the disk
    return backoff if not local and any(isinstance(e, network_errors()) for e in chain) else None


def with_retries(call: Callable[[], T], what: str, *, recover: Callable[[BaseException, int], T | None] | None = None,
                 retry_if: Callable[[BaseException], bool] | None = None) -> T:
    """`call()`, tried again while it fails transiently (see the module docstring). `recover(err, tries)`: a
    result to return instead of retrying (e.g. a commit whose first try landed), or None. `retry_if(err)`: an
    extra condition for retrying."""
    rules = policy()
    waited = 0.0
    for n in range(1, rules.attempts + 1):
        try:
            return call()
        except Exception as err:  # noqa: BLE001 - re-raised unless transient
            if recover is not None and n > 1:
                recovered = recover(err, n)
                if recovered is not None:
                    return recovered
            wait = transient_wait(err, n, rules)
            if wait is None or n == rules.attempts or waited + wait > rules.max_seconds or (
                    retry_if is not None and not retry_if(err)):
                if wait is not None:
                    err.chatvector_tries = n  # type: ignore[attr-defined]
                raise
            log.debug("%s failed (%s); trying again in %.1f s [%d/%d]", what, _first_line(err), wait, n,
                      rules.attempts - 1)
            time.sleep(wait)
            waited += wait
    raise AssertionError("unreachable")


def retried(call: Callable[..., T], what: str) -> Callable[..., T]:
    """`call` with `with_retries` around each use."""
    import functools

    @functools.wraps(call)
    def wrapper(*args, **kwargs):
        return with_retries(lambda: call(*args, **kwargs), what)

    return wrapper


def tries_note(err: BaseException) -> str:
    """" (after 5 tries)" for an error the policy gave up on, else ""."""
    n = getattr(err, "chatvector_tries", None) or getattr(err.__cause__, "chatvector_tries", None)
    return f" (after {n} tries)" if n and n > 1 else ""


def _method(response) -> str | None:
    try:
        return response.request.method if response is not None else None
    except (RuntimeError, AttributeError):  # a response built without its request
        return None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
