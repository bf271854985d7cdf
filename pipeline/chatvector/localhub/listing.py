"""`GET /api/models|datasets|spaces|kernels`: the repos a token may see (list_models, list_datasets, list_spaces).

Query parameters, as huggingface_hub sends them:

* `author` (the namespace), `search` (repeatable: each a case-insensitive substring of the repo id), `filter`
  (repeatable: each one of the repo's tags, its `library_name` or its `pipeline_tag`), `pipeline_tag`,
  `gated=true|false`; parameters for what this Hub does not track (apps, inference providers, parameter counts)
  are ignored;
* `sort` = lastModified, createdAt, id, downloads, likes or trendingScore (the snake_case spellings too) and
  `direction` (-1, the default as on the Hub, for descending; 1 ascending); ties, and no `sort`, go by id.
  Downloads, likes and trending scores are all 0 here;
* `limit` (the page size, at most the Hub's page size) and `cursor`, through `Link` headers (paging.py);
* what each entry holds: by default the Hub's short listing; `full=true` adds sha, lastModified, siblings,
  cardData...; `cardData=true` and `config=true` add those; `expand=...` (repeatable; `expand[]=` too) gives
  exactly the properties named (and `id`), 400 for a name the client's Expand*Property_T does not list.
  Properties this Hub has nothing for (gguf, safetensors, spaces...) are left out.

Private repos are listed only to those who may see them (hub.Hub.can_see); gated repos are listed to all.
"""

from __future__ import annotations

import hashlib
import json
from functools import cached_property

from chatvector.hub import cardrules
from chatvector.localhub.hub import Hub
from chatvector.localhub.paging import paginate
from chatvector.localhub.protocol import HubHTTPError, Request, Response
from chatvector.localhub.storage import Repo, list_repos

_SMALL = 1 << 20  # README.md and config.json are parsed below this size
_SORTS = {"lastModified": "lastModified", "last_modified": "lastModified", "createdAt": "createdAt",
          "created_at": "createdAt", "id": "id", "downloads": "downloads", "likes": "likes",
          "trendingScore": "trendingScore", "trending_score": "trendingScore"}
_COUNTERS = ("downloads", "downloadsAllTime", "likes", "trendingScore")  # all 0 here

# What each type's short listing holds, and what `full=true` adds (as the Hub's listings).
_SHORT = {
    "model": ("private", "downloads", "likes", "trendingScore", "tags", "pipeline_tag", "library_name", "createdAt"),
    "dataset": ("author", "sha", "lastModified", "private", "gated", "disabled", "downloads", "likes",
                "trendingScore", "tags", "createdAt"),
    "space": ("author", "sha", "lastModified", "private", "likes", "trendingScore", "tags", "createdAt"),
    "kernel": ("author", "private", "downloads", "likes", "trendingScore", "tags", "createdAt"),
}
_FULL = ("author", "sha", "lastModified", "gated", "disabled", "siblings", "cardData")

# The properties `expand` may name (huggingface_hub's ExpandModelProperty_T and its siblings).
_EXPANDABLE = {
    "model": {"author", "baseModels", "cardData", "childrenModelCount", "config", "createdAt", "disabled",
              "downloads", "downloadsAllTime", "evalResults", "gated", "gguf", "inference",
              "inferenceProviderMapping", "lastModified", "library_name", "likes", "mask_token", "model-index",
              "pipeline_tag", "private", "resourceGroup", "safetensors", "sha", "siblings", "spaces", "tags",
              "transformersInfo", "trendingScore", "usedStorage", "widgetData"},
    "dataset": {"author", "cardData", "citation", "createdAt", "description", "disabled", "downloads",
                "downloadsAllTime", "gated", "lastModified", "likes", "mainSize", "paperswithcode_id", "private",
                "resourceGroup", "sha", "siblings", "tags", "trendingScore", "usedStorage"},
    "space": {"author", "cardData", "createdAt", "datasets", "disabled", "lastModified", "likes", "models",
              "private", "region", "resourceGroup", "runtime", "sdk", "sha", "siblings", "subdomain", "tags",
              "trendingScore", "usedStorage"},
}
_EXPANDABLE["kernel"] = _EXPANDABLE["model"]


class _Listed:
    """One repo of a listing; what needs the store (head, files, card) is read only when asked for."""

    def __init__(self, hub: Hub, repo: Repo):
        self.hub, self.repo = hub, repo

    @cached_property
    def sha(self) -> str:
        return self.hub.resolve(self.repo, "main")

    @cached_property
    def last_modified(self) -> str:
        return self.hub.store.get_commit(self.sha).date

    @cached_property
    def files(self):
        return self.hub.store.files(self.sha)

    def _small_file(self, path: str) -> str | None:
        entry = next((f for f in self.files if f.path == path and f.size < _SMALL), None)
        if entry is None or not self.hub.store.has_blob(entry.sha256):
            return None
        with self.hub.store.open_blob(entry.sha256) as fh:
            return fh.read().decode("utf-8", "replace")

    @cached_property
    def card(self) -> dict | None:
        text = self._small_file("README.md")
        return cardrules.parse_card_data(text) if text is not None else None

    @cached_property
    def tags(self) -> list:
        tags = (self.card or {}).get("tags") or []
        return [str(t) for t in tags] if isinstance(tags, list) else [str(tags)]

    def card_str(self, key: str) -> str | None:
        value = (self.card or {}).get(key)
        return value if isinstance(value, str) else None

    def config(self) -> dict | None:
        text = self._small_file("config.json")
        try:
            value = json.loads(text) if text is not None else None
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def matches(self, req: Request) -> bool:
        repo = self.repo
        author = req.param("author")
        if author and repo.namespace.casefold() != author.casefold():  # (namespaces ignore case)
            return False
        if any(s.lower() not in repo.name.lower() for s in req.query.get("search", []) if s):
            return False
        gated = req.param("gated")
        if gated in ("true", "false") and bool(repo.gated) != (gated == "true"):
            return False
        pipeline_tag = req.param("pipeline_tag")
        if pipeline_tag and self.card_str("pipeline_tag") != pipeline_tag:
            return False
        wanted = [f for f in req.query.get("filter", []) if f]
        if wanted:
            known = {*self.tags, self.card_str("library_name"), self.card_str("pipeline_tag")}
            return all(f in known for f in wanted)
        return True

    def value(self, key: str) -> object:
        """The property KEY, or None when this Hub has none for it."""
        repo = self.repo
        if key in _COUNTERS:
            return 0
        simple = {"author": repo.namespace, "createdAt": repo.created_at, "private": repo.private,
                  "gated": repo.gated if isinstance(repo.gated, str) else "auto" if repo.gated else False,
                  "disabled": False}
        if key in simple:
            return simple[key]
        if key == "sha":
            return self.sha
        if key == "lastModified":
            return self.last_modified
        if key == "tags":
            return self.tags
        if key == "cardData":
            return self.card
        if key in ("library_name", "pipeline_tag"):
            return self.card_str(key)
        if key == "siblings":
            return [{"rfilename": f.path} for f in self.files]
        if key in ("usedStorage", "mainSize"):
            return sum(f.size for f in self.files)
        if key == "config":
            return self.config()
        return None

    def entry(self, keys: list[str]) -> dict:
        repo = self.repo
        out: dict = {"_id": hashlib.sha1(f"{repo.type}/{repo.name}".encode()).hexdigest()[:24], "id": repo.name}
        if repo.type == "model":
            out["modelId"] = repo.name
        for key in keys:
            value = self.value(key)
            if value is not None:
                out[key] = value
        return out


def _keys(req: Request, repo_type: str) -> list[str]:
    """The properties each entry holds."""
    expand = [v for k in ("expand", "expand[]") for v in req.query.get(k, []) if v]
    if expand:
        unknown = sorted(set(expand) - _EXPANDABLE[repo_type])
        if unknown:
            raise HubHTTPError(400, f"Invalid expand value(s) {', '.join(map(repr, unknown))} for {repo_type}s: "
                                    f"expected any of {', '.join(sorted(_EXPANDABLE[repo_type]))}")
        return list(dict.fromkeys(expand))
    keys = list(_SHORT[repo_type])
    if req.flag("full"):
        keys += _FULL
    if req.flag("cardData"):
        keys.append("cardData")
    if req.flag("config") and repo_type == "model":
        keys.append("config")
    return list(dict.fromkeys(keys))


def _order(req: Request, listed: list[_Listed]) -> list[_Listed]:
    sort = req.param("sort") or "trendingScore"
    if sort not in _SORTS:
        raise HubHTTPError(400, f"Invalid sort {sort!r}: expected one of {', '.join(sorted(set(_SORTS.values())))}")
    direction = req.param("direction") or "-1"
    if direction not in ("-1", "1"):
        raise HubHTTPError(400, f"Invalid direction {direction!r}: expected -1 (descending) or 1 (ascending)")
    key = _SORTS[sort]
    by_id = sorted(listed, key=lambda x: x.repo.name)
    if key == "id":
        return by_id if direction == "1" else by_id[::-1]
    # Python's sort is stable: within equal keys the id order stays.
    return sorted(by_id, key=lambda x: x.value(key), reverse=direction == "-1")


def list_repos_of_type(hub: Hub, req: Request, repo_type: str) -> Response:
    keys = _keys(req, repo_type)
    visible = [_Listed(hub, r) for r in list_repos(hub.store, repo_type) if hub.can_see(req.user, r)]
    listed = _order(req, [x for x in visible if x.matches(req)])
    start = req.int_param("cursor", 0)
    size = min(req.int_param("limit", hub.config.page_size, minimum=1), hub.config.page_size)
    # Only the page's entries are built; the others stay names (and sort keys) until their page is asked for.
    entries = [x.entry(keys) if start <= i < start + size else None for i, x in enumerate(listed)]
    return paginate(hub, req, entries)
