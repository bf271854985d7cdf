"""The one Hub client of a command, and the one place its errors become messages.

    api = connect()                                   # HfApi(endpoint, token), built once per command
    with hub_call(api, "demo/tiny-cp", field="cp.repo_id", revision="main"):
        info = api.model_info("demo/tiny-cp", revision="main", files_metadata=True)

Every stage takes this `api` and calls its methods (`api.snapshot_download`, `api.hf_hub_download`, ...),
so the endpoint and the token are the same for every request. huggingface_hub's typed errors are turned
into `HubError`s here only; a `HubError` raised for a recipe source carries the field it concerns, so the
plan can list it with the recipe's other problems.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import itertools
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from chatvector.errors import FieldError, HubError
from chatvector.hub.retry import network_errors  # stdlib only: cheap at start-up

if TYPE_CHECKING:
    from huggingface_hub import HfApi


class SourceHubError(FieldError, HubError):
    """A Hub error about one recipe source: `field` is the recipe field to blame ("cp.revision")."""


_token_origin = "HF_TOKEN"  # where the token came from, for the messages that blame it


def set_token_origin(from_option: bool) -> None:
    """Whether the CLI's --token supplied the token (a refused token is then that one, not HF_TOKEN's)."""
    global _token_origin
    _token_origin = "--token" if from_option else "HF_TOKEN"


def token_origin() -> str:
    """How messages name the token in use: "HF_TOKEN" or "the token given with --token"."""
    return "the token given with --token" if _token_origin == "--token" else "HF_TOKEN"


def connect(token: str | None = None, endpoint: str | None = None) -> "HfApi":
    """The Hub client for one command: HF_ENDPOINT (or `endpoint`) and HF_TOKEN / `hf auth login` (or `token`).

    It is built on first use: a run whose sources are all local folders never loads huggingface_hub's
    client (most of a second of imports)."""
    return LazyApi(token, endpoint)  # type: ignore[return-value]


# Client calls that may be repeated safely and that huggingface_hub does not retry itself: a transient 429/5xx
# or a dropped connection is retried with backoff (chatvector.hub.retry). (It retries the upload calls itself: the preupload
# and LFS batch POSTs and the PUTs; not the metadata GETs, a download's first request, or the commit.)
RETRIED = frozenset({"model_info", "repo_info", "list_repo_refs", "list_repo_commits", "whoami", "get_paths_info",
                     "get_discussion_details", "get_safetensors_metadata",
                     "hf_hub_download", "snapshot_download", "create_repo"})
class LazyApi:
    """An `HfApi(endpoint, token)` created when one of its attributes is first used; the calls in RETRIED are
    retried on transient failures."""

    def __init__(self, token: str | None, endpoint: str | None):
        self._args = (token, endpoint)
        self._api = None

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)
        if self._api is None:
            from huggingface_hub import HfApi, constants

            token, endpoint = self._args
            self._api = HfApi(endpoint=endpoint or constants.ENDPOINT, token=token)
        value = getattr(self._api, name)
        if name in RETRIED:
            from chatvector.hub.retry import retried

            return retried(value, name)
        return value


def token_of(api: "HfApi") -> str | None:
    """The token requests of `api` send: its own, else the environment's or the login's."""
    from huggingface_hub import get_token

    return api.token if isinstance(api.token, str) else (None if api.token is False else get_token())


@contextlib.contextmanager
def hub_call(api: "HfApi", repo_id: str, *, action: str = "read", field: str | None = None,
             revision: str | None = None) -> Iterator[None]:
    """Translate huggingface_hub's errors inside the block into one clear line about `repo_id`.

    action: "read" (a source or the target's state), "push" (the publish commit) or "write" (other writes).
    field: the recipe field of a source ("cp" → "cp.repo_id" / "cp.revision"); the error is then a
    SourceHubError naming it.
    """
    try:
        yield
    except Exception as err:  # noqa: BLE001 - only the types below are translated; others re-raise
        translated = translate(api, err, repo_id, action=action, field=field, revision=revision)
        if translated is None:
            raise
        raise translated from None


def _closest_repo(api: "HfApi", repo_id: str) -> str:
    """" (did you mean 'ns/name'?)" for the namespace's model repo closest to a missing `repo_id`; "" when
    there is none or the listing fails (the hint is a courtesy: the message stands without it)."""
    namespace, _, name = repo_id.partition("/")
    if not name:
        return ""
    try:
        names = [m.id for m in itertools.islice(api.list_models(author=namespace, limit=1000), 1000)]
    except Exception:  # noqa: BLE001 - no hint then
        return ""
    close = difflib.get_close_matches(repo_id, names, n=1, cutoff=0.75)
    return f" (did you mean '{close[0]}'?)" if close else ""


def translate(api: "HfApi", err: BaseException, repo_id: str, *, action: str = "read", field: str | None = None,
              revision: str | None = None) -> HubError | None:
    """The HubError for one of huggingface_hub's errors, or None for an error that is not the Hub's."""
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from chatvector.hub.retry import tries_note

    def located(key: str, message: str) -> HubError:
        return SourceHubError(f"{field}.{key}", message) if field else HubError(message)

    endpoint = api.endpoint
    if isinstance(err, GatedRepoError):
        return located("repo_id", f"{repo_id} is gated: accept its terms on the Hub and use a token (HF_TOKEN) of "
                                  "an account that has access")
    if isinstance(err, RepositoryNotFoundError):
        if action == "push":
            return HubError(f"{repo_id} was not found on the Hub while pushing to it (deleted during the run?)")
        return located("repo_id", f"repository {repo_id} was not found on the Hub (or it is private and the "
                                  f"token, if any, has no access){_closest_repo(api, repo_id)}")
    if isinstance(err, RevisionNotFoundError):
        hint = _closest_ref(api, repo_id, revision) if revision else ""
        return located("revision", f"revision '{revision}' does not exist in {repo_id}{hint}")
    if isinstance(err, EntryNotFoundError):
        return located("repo_id", f"{repo_id}@{revision or 'main'}: a file is missing: {first_line(err)}")
    if isinstance(err, OfflineModeIsEnabled):
        return located("repo_id", f"cannot read {repo_id}: HF_HUB_OFFLINE is set; unset it to reach the Hub")
    if isinstance(err, HfHubHTTPError):
        return _http_error(err, repo_id, action, located)
    if isinstance(err, LocalEntryNotFoundError):  # the HEAD failed: the cause says why
        cause = err.__cause__
        if isinstance(cause, HfHubHTTPError):
            return _http_error(cause, repo_id, action, located)
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            return HubError(f"the disk is full while downloading {repo_id} into the Hugging Face cache: "
                            "free space there or set HF_HOME to a larger disk")
        return HubError(f"cannot reach the Hub at {endpoint} for {repo_id}: {first_line(cause or err)}")
    if isinstance(err, OSError) and err.errno == errno.ENOSPC:
        return HubError(f"the disk is full while downloading {repo_id} into the Hugging Face cache: "
                        "free space there or set HF_HOME to a larger disk")
    if isinstance(err, network_errors()):  # connection refused, DNS, timeouts: nothing else will work either
        return HubError(f"cannot reach the Hub at {endpoint} for {repo_id}{tries_note(err)}: {first_line(err)}; "
                        "check the network (and HF_ENDPOINT) and run again")
    if isinstance(err, ValueError) and "JSON" in type(err).__name__ + str(err):  # an answer cut short or garbled
        return HubError(f"the Hub's answer about {repo_id} was not valid JSON{tries_note(err)} ({first_line(err)}); "
                        "run again later")
    if isinstance(err, RuntimeError) and isinstance(err.__cause__, (HfHubHTTPError, *network_errors())):
        return translate(api, err.__cause__, repo_id, action=action, field=field, revision=revision)
    if is_xet_error(err):
        return HubError(xet_error_text(err, repo_id, action))
    return None


_XET_STATUS = re.compile(r"HTTP status (?:client|server) error \((\d{3}) ([^)]*)\)")


def is_xet_error(err: BaseException) -> bool:
    """An error hf_xet raised (its transfers to and from the Hub's Xet storage failed, after its own retries)."""
    text = str(err).lower()
    return type(err).__module__.startswith("hf_xet") or (
        isinstance(err, RuntimeError) and any(mark in text for mark in ("cas client error", "file reconstruction",
                                                                        "xet", "xorb", "shard")))


def xet_error_text(err: BaseException, repo_id: str, action: str) -> str:
    """One line for a failed Xet transfer: the repository, what was being done, the storage's status if any."""
    doing = {"read": "downloading from", "write": "uploading to", "push": "uploading to"}.get(action, "transferring")
    status = _XET_STATUS.search(str(err))
    answered = f"answered {status.group(1)} {status.group(2)}" if status else f"failed ({first_line(err)[:200]})"
    return (f"the Hub's Xet storage {answered} while {doing} {repo_id}, after hf_xet's retries; run again later "
            "(a rerun resumes)")


def _http_error(err, repo_id: str, action: str, located) -> HubError:
    """Token and rate-limit problems concern the whole run; the others, the repository (and its field)."""
    from chatvector.hub.retry import tries_note

    status = err.response.status_code if getattr(err, "response", None) is not None else None
    message = _http_message(err, repo_id, action)
    if status in (429, 500, 502, 503, 504):
        message += tries_note(err) + ("" if status == 429 else "; run again later")
    return HubError(message) if status in (401, 429) else located("repo_id", message)


def _http_message(err, repo_id: str, action: str) -> str:
    status = err.response.status_code if getattr(err, "response", None) is not None else None
    server = _server_message(err)
    if status == 401:
        if action == "read":
            return f"the Hub refused the token while reading {repo_id} (401): check {token_origin()}"
        if _token_origin == "--token":
            return (f"publishing to {repo_id} needs a valid write token: the Hub refused the token given with "
                    "--token (401); check it")
        return f"publishing to {repo_id} needs a valid write token: set HF_TOKEN (the Hub answered 401)"
    if status == 403:
        if action == "read":
            return f"the token may not read {repo_id} (403{': ' + server if server else ''})"
        return f"the token cannot write to {repo_id} (403{': ' + server if server else ''}): use a token with " \
               "write access to it"
    if status == 412:
        return f"{repo_id} changed while this run was going on (412): nothing was pushed; run again"
    if status == 429:
        return f"the Hub is rate-limiting requests for {repo_id} (429): wait a few minutes and run again"
    if status == 409:
        return f"{repo_id}: {server or first_line(err)}"
    verb = "reading" if action == "read" else "the push to"
    return f"the Hub answered {status} to {verb} {repo_id}: {server or first_line(err)}"


def _server_message(err) -> str:
    text = (getattr(err, "server_message", None) or "").strip()
    return text.splitlines()[0].rstrip(".") if text else ""


def _closest_ref(api: "HfApi", repo_id: str, revision: str) -> str:
    """" (did you mean 'v1.0'?)" from the repo's branches and tags, or ""."""
    try:
        refs = api.list_repo_refs(repo_id)
    except Exception:  # noqa: BLE001 - a hint only
        return ""
    names = [r.name for r in (*refs.branches, *refs.tags)]
    close = difflib.get_close_matches(revision, names, n=2, cutoff=0.5)
    if close:
        return " (did you mean " + " or ".join(f"'{c}'" for c in close) + "?)"
    return f" (it has {', '.join(names[:8])})" if names else ""


def first_line(err: BaseException | None) -> str:
    text = str(err).strip() if err is not None else ""
    return text.splitlines()[0] if text else type(err).__name__


# -- downloads ---------------------------------------------------------------------------------------------
READ_BYTES = 1 << 20  # the HTTP client's socket reads while we download


@contextlib.contextmanager
def tuned_downloads() -> Iterator[None]:
    """Fewer, larger pieces through huggingface_hub's download loop, for our downloads only.

    Its default re-chunks every download into 10 MiB pieces through a BytesIO, and its HTTP client reads the
    socket 64 KiB at a time, each read a trip through h11's parser: for a 1 GiB file that Python overhead
    costs more than the transfer. Pieces are written as received, read 1 MiB at a time: about 3x faster
    (bench/hub_download.py). Both are process-wide settings, set while the block runs.
    """
    from huggingface_hub import constants

    try:
        from httpcore2._sync.http11 import HTTP11Connection
    except ImportError:  # another HTTP stack: only the chunking is tuned
        HTTP11Connection = None
    before = constants.DOWNLOAD_CHUNK_SIZE, getattr(HTTP11Connection, "READ_NUM_BYTES", None)
    constants.DOWNLOAD_CHUNK_SIZE = None
    if HTTP11Connection is not None:
        HTTP11Connection.READ_NUM_BYTES = READ_BYTES
    try:
        yield
    finally:
        constants.DOWNLOAD_CHUNK_SIZE = before[0]
        if HTTP11Connection is not None:
            HTTP11Connection.READ_NUM_BYTES = before[1]


@contextlib.contextmanager
def quiet_progress() -> Iterator[None]:
    """No bars for tiny metadata files (a bar per file is noise; weights get theirs)."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            enable_progress_bars()
