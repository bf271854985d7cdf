"""The route table: which endpoint answers which request.

Routes match the **raw** path segments (still percent-encoded, so a revision `refs%2Fpr%2F1` stays one
segment) in table order; the first route whose methods and pattern both match answers. A pattern is a tuple
of segments: a literal, or `{key}` / `{key:converter}` that turns segments into the handler's keyword
argument `key`:

    (none)     one segment, unquoted
    rest       every remaining segment (maybe none), each unquoted, joined with '/'
    rest1      the same, at least one segment
    int        one segment of ASCII digits
    plural     `models|datasets|spaces|kernels` → the repo type (`/api/...` routes)
    web_type   `datasets|spaces|kernels` → the repo type (web routes, where models have no prefix)
    repo       two raw segments `namespace/name`
    model_repo `repo` whose namespace is not a web_type, `api` or `lfs-upload` (so `/datasets/...` never
               reads as a model)
    git_repo   `repo` whose name ends in `.git`, stripped; model_git_repo: the same, as model_repo

A handler is called as `handler(hub, req, **params, **defaults)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping
from urllib.parse import unquote

from chatvector.localhub import (
    api,
    auth_check,
    commit,
    discussion_writes,
    discussions,
    files,
    lfs,
    lfs_files,
    listing,
    pages,
    pull_requests,
    repo_admin,
)
from chatvector.localhub.hub import PLURAL, WEB_TYPES, Hub
from chatvector.localhub.protocol import HubHTTPError, Request, Response
from chatvector.localhub.storage import StoreError
from chatvector.localhub.xet import routes as xet

Match = tuple[object, int] | None  # (value, index of the next segment), or no match
_NOT_A_MODEL_NAMESPACE = {*WEB_TYPES, "api", "lfs-upload", xet.CAS_PREFIX, files.STORAGE_PREFIX}  # first segments that never start a model's web path


def _one(s: list[str], i: int) -> Match:
    return (unquote(s[i]), i + 1) if i < len(s) else None


def _rest(s: list[str], i: int) -> Match:
    return "/".join(unquote(x) for x in s[i:]), len(s)


def _rest1(s: list[str], i: int) -> Match:
    return _rest(s, i) if i < len(s) else None


def _int(s: list[str], i: int) -> Match:
    return (s[i], i + 1) if i < len(s) and s[i].isascii() and s[i].isdigit() else None


def _plural(s: list[str], i: int) -> Match:
    return (PLURAL[s[i]], i + 1) if i < len(s) and s[i] in PLURAL else None


def _web_type(s: list[str], i: int) -> Match:
    return (WEB_TYPES[s[i]], i + 1) if i < len(s) and s[i] in WEB_TYPES else None


def _repo(s: list[str], i: int) -> Match:
    return (f"{s[i]}/{s[i + 1]}", i + 2) if i + 1 < len(s) else None


def _model_repo(s: list[str], i: int) -> Match:
    return _repo(s, i) if i < len(s) and s[i] not in _NOT_A_MODEL_NAMESPACE else None


def _git_repo(s: list[str], i: int) -> Match:
    if i + 1 < len(s) and s[i + 1].endswith(".git") and len(s[i + 1]) > 4:
        return f"{s[i]}/{s[i + 1][:-4]}", i + 2
    return None


def _model_git_repo(s: list[str], i: int) -> Match:
    return _git_repo(s, i) if i < len(s) and s[i] not in _NOT_A_MODEL_NAMESPACE else None


# A repo id without a namespace (`gpt2`, as the Hub's oldest repos): one segment. Only the namespace-less copies
# of the routes use them (see _with_namespace_less), so `namespace/name` is always read first.
def _bare_repo(s: list[str], i: int) -> Match:
    return (s[i], i + 1) if i < len(s) else None


def _model_bare_repo(s: list[str], i: int) -> Match:
    return _bare_repo(s, i) if i < len(s) and s[i] not in _NOT_A_MODEL_NAMESPACE else None


def _bare_git_repo(s: list[str], i: int) -> Match:
    return (s[i][:-4], i + 1) if i < len(s) and s[i].endswith(".git") and len(s[i]) > 4 else None


def _model_bare_git_repo(s: list[str], i: int) -> Match:
    return _bare_git_repo(s, i) if i < len(s) and s[i] not in _NOT_A_MODEL_NAMESPACE else None


CONVERTERS: dict[str, Callable[[list[str], int], Match]] = {
    "": _one, "rest": _rest, "rest1": _rest1, "int": _int, "plural": _plural, "web_type": _web_type,
    "repo": _repo, "model_repo": _model_repo, "git_repo": _git_repo, "model_git_repo": _model_git_repo,
    "bare_repo": _bare_repo, "model_bare_repo": _model_bare_repo, "bare_git_repo": _bare_git_repo,
    "model_bare_git_repo": _model_bare_git_repo,
}
_BARE = {"{name:repo}": "{name:bare_repo}", "{name:model_repo}": "{name:model_bare_repo}",
         "{name:git_repo}": "{name:bare_git_repo}", "{name:model_git_repo}": "{name:model_bare_git_repo}"}


@dataclass(frozen=True)
class Route:
    methods: frozenset[str] | None  # None: any method
    pattern: tuple[str, ...]
    handler: Callable[..., Response]
    defaults: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for part in self.pattern:  # a typo in the table fails at import, not at the first request
            if part.startswith("{") and part.partition(":")[2].rstrip("}") not in CONVERTERS:
                raise ValueError(f"route {'/'.join(self.pattern)}: unknown converter in {part}")

    def match(self, segments: list[str]) -> dict[str, object] | None:
        params: dict[str, object] = {}
        i = 0
        for part in self.pattern:
            if part.startswith("{"):
                key, _, conv = part[1:-1].partition(":")
                found = CONVERTERS[conv](segments, i)
                if found is None:
                    return None
                params[key], i = found
            elif i < len(segments) and segments[i] == part:
                i += 1
            else:
                return None
        return params if i == len(segments) else None


def _r(methods: str | None, path: str, handler: Callable[..., Response], **defaults: str) -> Route:
    return Route(frozenset(methods.split()) if methods else None, tuple(path.strip("/").split("/")), handler, defaults)


_API_REPO = "api/{repo_type:plural}/{name:repo}"
NAMESPACE_LESS = Route(frozenset(), ("namespace-less routes",), lambda *_, **__: Response())  # a marker, never matched
ROUTES: tuple[Route, ...] = (
    _r(None, "api/agent-harnesses", api.agent_harnesses),
    _r("GET", "api/whoami-v2", api.whoami),
    _r("POST", "api/repos/create", api.create_repo),
    _r("DELETE", "api/repos/delete", api.delete_repo),
    _r("POST", "api/repos/move", repo_admin.move),
    _r("GET", "api/{repo_type:plural}", listing.list_repos_of_type),
    _r("POST", "api/validate-yaml", api.validate_yaml),
    _r("GET", _API_REPO, api.repo_info, revision=None),
    _r("GET", f"{_API_REPO}/revision/{{revision:rest1}}", api.repo_info),
    _r("GET", f"{_API_REPO}/tree/{{revision}}/{{folder:rest}}", api.tree),
    _r("GET", f"{_API_REPO}/refs", api.refs),
    _r("GET", f"{_API_REPO}/commits/{{revision:rest1}}", api.commits),
    _r("POST", f"{_API_REPO}/paths-info/{{revision:rest1}}", api.paths_info),
    _r("POST DELETE", f"{_API_REPO}/branch/{{branch_name:rest1}}", api.branch),
    _r("POST DELETE", f"{_API_REPO}/tag/{{revision_or_tag:rest1}}", api.tag),
    _r("PUT", f"{_API_REPO}/settings", api.settings),
    _r("POST", f"{_API_REPO}/preupload/{{revision:rest1}}", commit.preupload),
    _r("POST", f"{_API_REPO}/commit/{{revision:rest1}}", commit.commit),
    _r("GET", f"{_API_REPO}/discussions", discussions.listing),
    _r("POST", f"{_API_REPO}/discussions", discussions.create),
    _r("GET", f"{_API_REPO}/discussions/{{num:int}}", discussions.details),
    _r("POST", f"{_API_REPO}/discussions/{{num:int}}/comment", discussion_writes.comment),
    _r("POST", f"{_API_REPO}/discussions/{{num:int}}/comment/{{comment_id}}/edit", discussion_writes.edit_comment),
    _r("POST", f"{_API_REPO}/discussions/{{num:int}}/comment/{{comment_id}}/hide", discussion_writes.hide_comment),
    _r("POST", f"{_API_REPO}/discussions/{{num:int}}/title", discussion_writes.title),
    _r("POST", f"{_API_REPO}/discussions/{{num:int}}/status", discussion_writes.status),
    _r("POST", f"{_API_REPO}/discussions/{{num:int}}/merge", pull_requests.merge),
    _r("POST", f"{_API_REPO}/super-squash/{{branch:rest1}}", repo_admin.super_squash),
    _r("GET", f"{_API_REPO}/lfs-files", lfs_files.listing),
    _r("POST", f"{_API_REPO}/lfs-files/batch", lfs_files.delete_batch),
    _r("GET", f"{_API_REPO}/auth-check", auth_check.auth_check),
    _r("GET", f"{_API_REPO}/auth-check/write", auth_check.auth_check_write),
    _r("GET", f"{_API_REPO}/xet-read-token/{{rest:rest}}", xet.token, scope="read"),
    _r("GET", f"{_API_REPO}/xet-write-token/{{rest:rest}}", xet.token, scope="write"),
    # The CAS (Xet storage), under its own base URL; its Xet tokens and signed URLs are its credentials.
    _r("GET", f"{xet.CAS_PREFIX}/v1/reconstructions/{{file_id}}", xet.reconstruct, version="v1"),
    _r("GET", f"{xet.CAS_PREFIX}/v2/reconstructions/{{file_id}}", xet.reconstruct, version="v2"),
    _r("GET", f"{xet.CAS_PREFIX}/v1/chunks/{{prefix}}/{{chunk}}", xet.chunk_dedupe),
    _r("POST", f"{xet.CAS_PREFIX}/v1/xorbs/{{prefix}}/{{xorb_id}}", xet.upload_xorb),
    _r("HEAD", f"{xet.CAS_PREFIX}/v1/xorbs/{{prefix}}/{{xorb_id}}", xet.head_xorb),
    _r("POST", f"{xet.CAS_PREFIX}/v1/xorb-grants/{{prefix}}/{{xorb_id}}", xet.xorb_grant),
    _r("POST", f"{xet.CAS_PREFIX}/v1/shards", xet.upload_shard),
    _r("POST", f"{xet.CAS_PREFIX}/v2/shards", xet.upload_shard_v2),
    _r("HEAD", f"{xet.CAS_PREFIX}/v1/files/{{file_id}}", xet.file_size),
    _r("POST", f"{xet.CAS_PREFIX}/v1/telemetry", xet.telemetry),
    _r("GET", f"{xet.CAS_PREFIX}/fetch/{{xorb_id}}", xet.fetch),
    # The storage host's presigned downloads, where `/resolve` redirects for LFS and Xet files.
    _r("GET HEAD", f"{files.STORAGE_PREFIX}/{{sha256}}", files.storage_download),
    # Web-style routes: models have no type prefix, other repo types do.
    _r("GET HEAD", "{repo_type:web_type}/{name:repo}/resolve/{revision}/{path:rest1}", files.resolve),
    _r("GET HEAD", "{name:model_repo}/resolve/{revision}/{path:rest1}", files.resolve, repo_type="model"),
    _r("POST", "{repo_type:web_type}/{name:git_repo}/info/lfs/objects/batch", lfs.batch),
    _r("POST", "{name:model_git_repo}/info/lfs/objects/batch", lfs.batch, repo_type="model"),
    _r("POST", "{repo_type:web_type}/{name:git_repo}/info/lfs/objects/verify", lfs.verify),
    _r("POST", "{name:model_git_repo}/info/lfs/objects/verify", lfs.verify, repo_type="model"),
    # Upload URLs handed out by the LFS batch endpoint; the token in the path is the credential.
    _r("PUT", "lfs-upload/{token}", lfs.upload_put),
    _r("PUT", "lfs-upload/{token}/part/{number}", lfs.upload_part),  # a bad number is 400, not 404
    _r("POST", "lfs-upload/{token}/complete", lfs.upload_complete),
    NAMESPACE_LESS,  # replaced by namespace-less copies of the routes above (_with_namespace_less)
    # Web pages for people (localhub/pages): last, so that every route above wins over them.
    Route(frozenset({"GET", "HEAD"}), (), pages.listing),
    _r("GET HEAD", "models", pages.listing, repo_type="model"),
    _r("GET HEAD", "{repo_type:web_type}", pages.listing),
    _r("GET HEAD", "{namespace}", pages.listing),
    _r("GET HEAD", "{repo_type:web_type}/{name:repo}", pages.repo_page),
    _r("GET HEAD", "{name:model_repo}", pages.repo_page, repo_type="model"),
    _r("GET HEAD", "{repo_type:web_type}/{name:repo}/tree/{revision}/{path:rest}", pages.tree_page),
    _r("GET HEAD", "{name:model_repo}/tree/{revision}/{path:rest}", pages.tree_page, repo_type="model"),
    _r("GET HEAD", "{repo_type:web_type}/{name:repo}/blob/{revision}/{path:rest1}", pages.blob_page),
    _r("GET HEAD", "{name:model_repo}/blob/{revision}/{path:rest1}", pages.blob_page, repo_type="model"),
    _r("GET HEAD", "{repo_type:web_type}/{name:repo}/commit/{revision}", pages.commit_page),
    _r("GET HEAD", "{name:model_repo}/commit/{revision}", pages.commit_page, repo_type="model"),
    _r("GET HEAD", "{repo_type:web_type}/{name:repo}/commits/{revision}", pages.commits_page),
    _r("GET HEAD", "{name:model_repo}/commits/{revision}", pages.commits_page, repo_type="model"),
    _r("GET HEAD", "{path:rest}", pages.not_found),  # a 404 page (JSON under /api)
)


def _with_namespace_less(routes: tuple[Route, ...]) -> tuple[Route, ...]:
    """ROUTES with the NAMESPACE_LESS marker replaced by a copy of each route above it that takes a repo id, the id
    being one segment (`/api/models/gpt2`, `/gpt2/resolve/main/x`): the handlers answer RepoNotFound for it, as the
    Hub does for a missing repo, where no route would match at all (a generic 404 that `repo_exists` raises on)."""
    at = routes.index(NAMESPACE_LESS)
    copies = tuple(Route(r.methods, tuple(_BARE.get(p, p) for p in r.pattern), r.handler, r.defaults)
                   for r in routes[:at] if any(p in _BARE for p in r.pattern))
    return routes[:at] + copies + routes[at + 1:]


ROUTES = _with_namespace_less(ROUTES)

# The endpoints a download or an upload touches: the ones `LocalHub(faults=...)` injects faults into.
FAULT_PRONE = frozenset({
    files.resolve, api.repo_info, api.tree, commit.preupload, commit.commit,
    lfs.batch, lfs.verify, lfs.upload_put, lfs.upload_part, lfs.upload_complete, files.storage_download,
    xet.token, xet.reconstruct, xet.fetch, xet.upload_xorb, xet.upload_shard, xet.upload_shard_v2,
})
UNAUTHENTICATED_PREFIXES = frozenset({xet.CAS_PREFIX, files.STORAGE_PREFIX})  # their own credentials, not Hub tokens


def find(req: Request, routes: tuple[Route, ...] = ROUTES) -> tuple[Route, dict[str, object]]:
    """The first route matching the request and its parameters; 404 when none does."""
    for route in routes:
        if route.methods is not None and req.method not in route.methods:
            continue
        params = route.match(req.segments)
        if params is not None:
            return route, params
    raise HubHTTPError(404, f"Not found: {req.method} /{'/'.join(req.segments)}")


def call(hub: Hub, req: Request, route: Route, params: dict[str, object]) -> Response:
    """The route's answer to the request."""
    try:
        return route.handler(hub, req, **params, **route.defaults)
    except StoreError as err:
        raise HubHTTPError(err.status, err.message, err.code) from None


def dispatch(hub: Hub, req: Request, routes: tuple[Route, ...] = ROUTES) -> Response:
    """The response of the first route matching the request; 404 when none does."""
    return call(hub, req, *find(req, routes))
