"""The Hub's endpoints, as huggingface_hub 2.4.0 calls them (see shared/hub-api.md).

Each endpoint is a function `(hub, request, ...) -> Response`; `route` maps a request to one of them.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, urlencode

from chatvector.localhub import cardmeta
from chatvector.localhub.protocol import HubHTTPError, Request, Response, repo_not_found, require_write
from chatvector.localhub.storage import FileEntry, Repo, Store, StoreError, lfs_pointer

PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
PREFIX = {"dataset": "datasets/", "space": "spaces/", "kernel": "kernels/", "model": ""}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


@dataclass
class Upload:
    """A pending LFS upload; its URL token is the only credential the client sends with the bytes."""

    repo_id: int
    oid: str
    size: int
    chunk_size: int | None
    parts: dict[int, Path] = field(default_factory=dict)


@dataclass
class HubConfig:
    lfs_threshold: int = 10 * 1024 * 1024
    multipart_chunk_size: int = 64 * 1024 * 1024
    page_size: int = 1000


class Hub:
    """Everything an endpoint needs: the store, the settings and the pending LFS uploads."""

    def __init__(self, store: Store, config: HubConfig):
        self.store, self.config = store, config
        self.uploads: dict[str, Upload] = {}

    def repo_for_read(self, req: Request, repo_type: str, name: str) -> Repo:
        repo = self.store.get_repo(repo_type, name)
        if repo is None or (repo.private and req.user is None):
            raise repo_not_found(name)
        return repo

    def repo_for_write(self, req: Request, repo_type: str, name: str) -> Repo:
        repo = self.repo_for_read(req, repo_type, name)
        require_write(req)
        return repo

    def resolve(self, repo: Repo, revision: str) -> str:
        try:
            return self.store.resolve(repo, revision)
        except StoreError as err:
            raise HubHTTPError(err.status, err.message, err.code) from None

    def repo_url(self, req: Request, repo: Repo) -> str:
        return f"{req.base_url}/{PREFIX[repo.type]}{repo.name}"


def route(hub: Hub, req: Request) -> Response:
    s, m = req.segments, req.method
    try:
        if s[:1] == ["api"]:
            return _route_api(hub, req, s[1:], m)
        if s[:1] == ["lfs-upload"] and len(s) >= 2:
            from chatvector.localhub import lfs

            return lfs.route_upload(hub, req, s[1:], m)
        repo_type, base = "model", 0
        if s and s[0] in ("datasets", "spaces", "kernels"):
            repo_type, base = PLURAL[s[0]], 1
        s = s[base:]
        if len(s) >= 5 and s[2] == "resolve" and m in ("GET", "HEAD"):
            from chatvector.localhub import files

            name, revision, path = f"{s[0]}/{s[1]}", req.seg(base + 3), req.rest(base + 4)
            return files.resolve(hub, req, repo_type, name, revision, path)
        if len(s) == 6 and s[1].endswith(".git") and s[2:5] == ["info", "lfs", "objects"] and m == "POST":
            from chatvector.localhub import lfs

            name = f"{s[0]}/{s[1][:-4]}"
            if s[5] == "batch":
                return lfs.batch(hub, req, repo_type, name)
            if s[5] == "verify":
                return lfs.verify(hub, req, repo_type, name)
    except StoreError as err:
        raise HubHTTPError(err.status, err.message, err.code) from None
    raise HubHTTPError(404, f"Not found: {m} /{'/'.join(req.segments)}")


def _route_api(hub: Hub, req: Request, s: list[str], m: str) -> Response:
    if s == ["agent-harnesses"]:
        return Response(json={"standardEnvVars": [], "harnesses": {}})
    if s == ["whoami-v2"] and m == "GET":
        return whoami(req)
    if s == ["repos", "create"] and m == "POST":
        return create_repo(hub, req)
    if s == ["repos", "delete"] and m == "DELETE":
        return delete_repo(hub, req)
    if s == ["validate-yaml"] and m == "POST":
        return validate_yaml(req)
    if len(s) < 3 or s[0] not in PLURAL:
        raise HubHTTPError(404, f"Not found: {m} /api/{'/'.join(s)}")
    repo_type, name, rest = PLURAL[s[0]], f"{s[1]}/{s[2]}", s[3:]
    offset = len(req.segments) - len(rest)  # index of rest[0] in req.segments
    action = rest[0] if rest else None
    if action is None and m == "GET":
        return repo_info(hub, req, repo_type, name, None)
    if action == "revision" and m == "GET" and len(rest) >= 2:
        return repo_info(hub, req, repo_type, name, req.rest(offset + 1))
    if action == "tree" and m == "GET" and len(rest) >= 2:
        return tree(hub, req, repo_type, name, req.seg(offset + 1), req.rest(offset + 2))
    if action == "refs" and m == "GET":
        return refs(hub, req, repo_type, name)
    if action == "commits" and m == "GET" and len(rest) >= 2:
        return commits(hub, req, repo_type, name, req.rest(offset + 1))
    if action == "paths-info" and m == "POST" and len(rest) >= 2:
        return paths_info(hub, req, repo_type, name, req.rest(offset + 1))
    if action == "branch" and len(rest) >= 2 and m in ("POST", "DELETE"):
        return branch(hub, req, repo_type, name, req.rest(offset + 1))
    if action == "tag" and len(rest) >= 2 and m in ("POST", "DELETE"):
        return tag(hub, req, repo_type, name, req.rest(offset + 1))
    if action == "settings" and m == "PUT":
        return settings(hub, req, repo_type, name)
    if action in ("preupload", "commit") and m == "POST" and len(rest) >= 2:
        from chatvector.localhub import commit

        fn = commit.preupload if action == "preupload" else commit.commit
        return fn(hub, req, repo_type, name, req.rest(offset + 1))
    if action == "discussions":
        from chatvector.localhub import discussions

        return discussions.route(hub, req, repo_type, name, rest[1:], m)
    if action in ("xet-read-token", "xet-write-token"):
        raise HubHTTPError(404, "This local Hub does not speak Xet; set HF_HUB_DISABLE_XET=1 in the client")
    raise HubHTTPError(404, f"Not found: {m} /api/{'/'.join(s)}")


# -- identity and repos -----------------------------------------------------------------------------------
def whoami(req: Request) -> Response:
    if req.user is None:
        raise HubHTTPError(401, "Invalid credentials in Authorization header")
    return Response(json={
        "type": "user", "name": req.user.name, "fullname": req.user.name, "orgs": [],
        "auth": {"type": "access_token", "accessToken": {"displayName": req.user.name, "role": req.user.scope}},
    })


def create_repo(hub: Hub, req: Request) -> Response:
    body = req.body.json()
    user = req.user
    if user is None:
        raise HubHTTPError(401, "You must be authenticated with a write token to create a repo.")
    name, org = body.get("name"), body.get("organization") or user.name
    repo_type = body.get("type") or "model"
    if repo_type not in PREFIX or not isinstance(name, str) or not _valid_name(name) or not _valid_name(org):
        raise HubHTTPError(400, f"Invalid repo name or type: {org}/{name} ({repo_type})")
    full = f"{org}/{name}"
    url = f"{req.base_url}/{PREFIX[repo_type]}{full}"
    if hub.store.get_repo(repo_type, full) is not None:
        return Response(409, json={"error": f"You already created this {repo_type} repo", "url": url},
                        headers={"X-Error-Message": f"You already created this {repo_type} repo"})
    require_write(req)
    private = body.get("visibility", "private" if body.get("private") else "public") != "public"
    try:
        hub.store.create_repo(repo_type, full, private, user.name)
    except StoreError as err:  # lost a race with another create
        return Response(409, json={"error": err.message, "url": url}, headers={"X-Error-Message": err.message})
    return Response(json={"url": url, "name": full, "id": full})


def delete_repo(hub: Hub, req: Request) -> Response:
    body = req.body.json()
    user = require_write(req)
    full = f"{body.get('organization') or user.name}/{body.get('name')}"
    repo = hub.repo_for_write(req, body.get("type") or "model", full)
    hub.store.delete_repo(repo)
    return Response(json={})


def settings(hub: Hub, req: Request, repo_type: str, name: str) -> Response:
    body = req.body.json()
    repo = hub.repo_for_write(req, repo_type, name)
    gated = body.get("gated")
    hub.store.update_repo(
        repo,
        private=body.get("private") if isinstance(body.get("private"), bool) else None,
        gated=None if gated is None else gated not in (False, "false"),
    )
    return Response(json={})


def validate_yaml(req: Request) -> Response:
    body = req.body.json()
    errors = cardmeta.validate_card(body.get("content") or "")
    if errors:
        return Response(400, json={"errors": [{"message": e} for e in errors], "warnings": []},
                        headers={"X-Error-Message": errors[0]})
    return Response(json={"errors": [], "warnings": []})


def repo_info(hub: Hub, req: Request, repo_type: str, name: str, revision: str | None) -> Response:
    repo = hub.repo_for_read(req, repo_type, name)
    sha = hub.resolve(repo, revision or "main")
    commit = hub.store.get_commit(sha)
    files = hub.store.files(sha)
    with_blobs = req.flag("blobs")
    siblings = []
    for f in files:
        entry: dict = {"rfilename": f.path}
        if with_blobs:
            entry.update(size=f.size, blobId=f.git_oid)
            if f.lfs:
                entry["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": len(lfs_pointer(f.sha256, f.size))}
        siblings.append(entry)
    card = _card_data(hub, files)
    info = {
        "_id": hashlib.sha1(f"{repo.type}/{repo.name}".encode()).hexdigest()[:24],
        "id": repo.name, "author": repo.namespace, "sha": sha, "lastModified": commit.date,
        "createdAt": repo.created_at, "private": repo.private, "gated": "auto" if repo.gated else False,
        "disabled": False, "downloads": 0, "likes": 0, "tags": list((card or {}).get("tags") or []),
        "siblings": siblings, "usedStorage": sum(f.size for f in files),
    }
    if repo.type == "model":
        info["modelId"] = repo.name
    if card is not None:
        info["cardData"] = card
        for key in ("library_name", "pipeline_tag"):
            if isinstance(card.get(key), str):
                info[key] = card[key]
    return Response(json=info)


def _card_data(hub: Hub, files: list[FileEntry]) -> dict | None:
    readme = next((f for f in files if f.path == "README.md" and f.size < 1 << 20), None)
    if readme is None:
        return None
    with hub.store.open_blob(readme.sha256) as fh:
        return cardmeta.parse_card_data(fh.read().decode("utf-8", "replace"))


# -- listing ---------------------------------------------------------------------------------------------
def tree_entry(f: FileEntry) -> dict:
    entry: dict = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.path}
    if f.lfs:
        entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(lfs_pointer(f.sha256, f.size))}
    return entry


def _folder_entry(path: str) -> dict:
    return {"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0, "path": path}


def tree(hub: Hub, req: Request, repo_type: str, name: str, revision: str, folder: str) -> Response:
    repo = hub.repo_for_read(req, repo_type, name)
    sha = hub.resolve(repo, revision)
    folder = folder.strip("/")
    prefix = folder + "/" if folder else ""
    files = [f for f in hub.store.files(sha) if f.path.startswith(prefix)]
    if folder and not files:
        raise HubHTTPError(404, f"Path {folder} does not exist at revision {revision}", "EntryNotFound")
    recursive = req.flag("recursive")
    entries: dict[str, dict] = {}
    for f in files:
        parts = f.path[len(prefix):].split("/")
        depth = len(parts) if recursive else 1
        for i in range(1, min(depth, len(parts) - 1) + 1):
            folder_path = prefix + "/".join(parts[:i])
            entries.setdefault(folder_path, _folder_entry(folder_path))
        if recursive or len(parts) == 1:
            entries[f.path] = tree_entry(f)
    ordered = sorted(entries.values(), key=lambda e: (e["type"] != "directory", e["path"]))
    return _paginate(hub, req, ordered)


def _paginate(hub: Hub, req: Request, items: list) -> Response:
    """One page and, when more remain, an absolute `Link: <...>; rel="next"` (the client follows it verbatim)."""
    start = int(req.param("cursor") or 0)
    size = hub.config.page_size
    page = items[start:start + size]
    headers = {}
    if start + size < len(items):
        query = {k: v[-1] for k, v in req.query.items() if k != "cursor"}
        query["cursor"] = str(start + size)
        path = "/" + "/".join(req.segments)
        headers["Link"] = f'<{req.base_url}{path}?{urlencode(query)}>; rel="next"'
    return Response(json=page, headers=headers)


def paths_info(hub: Hub, req: Request, repo_type: str, name: str, revision: str) -> Response:
    raw = req.body.read().decode()
    content_type = req.headers.get("Content-Type") or ""
    wanted = json.loads(raw).get("paths", []) if "json" in content_type else parse_qs(raw).get("paths", [])
    repo = hub.repo_for_read(req, repo_type, name)
    sha = hub.resolve(repo, revision)
    files = hub.store.files(sha)
    out = []
    for path in wanted:
        path = path.strip("/")
        match = next((f for f in files if f.path == path), None)
        if match:
            out.append(tree_entry(match))
        elif any(f.path.startswith(path + "/") for f in files):
            out.append(_folder_entry(path))
    return Response(json=out)


def refs(hub: Hub, req: Request, repo_type: str, name: str) -> Response:
    repo = hub.repo_for_read(req, repo_type, name)

    def listing(kind: str, ref_prefix: str) -> list[dict]:
        return [{"name": n, "ref": ref_prefix + n, "targetCommit": sha} for n, sha in hub.store.refs(repo, kind).items()]

    body = {"branches": listing("branch", "refs/heads/"), "converts": [], "tags": listing("tag", "refs/tags/")}
    if req.flag("include_prs"):
        body["pullRequests"] = listing("pr", "refs/pr/")
    return Response(json=body)


def commits(hub: Hub, req: Request, repo_type: str, name: str, revision: str) -> Response:
    repo = hub.repo_for_read(req, repo_type, name)
    sha = hub.resolve(repo, revision)
    items = []
    for c in hub.store.history(sha):
        item = {"id": c.sha, "authors": [{"user": c.author}], "date": c.date, "title": c.title, "message": c.message}
        item["formatted"] = {"title": c.title, "message": c.message}
        items.append(item)
    return _paginate(hub, req, items)


# -- branches and tags -----------------------------------------------------------------------------------
def branch(hub: Hub, req: Request, repo_type: str, name: str, branch_name: str) -> Response:
    body = req.body.json() if req.method == "POST" else {}
    repo = hub.repo_for_write(req, repo_type, name)
    if req.method == "DELETE":
        if branch_name == "main":
            raise HubHTTPError(403, "The main branch cannot be deleted")
        hub.store.delete_ref(repo, "branch", branch_name)
        return Response(json={})
    start = hub.resolve(repo, body.get("startingPoint") or "main")
    hub.store.set_ref(repo, "branch", branch_name, start, must_not_exist=True)
    return Response(json={})


def tag(hub: Hub, req: Request, repo_type: str, name: str, revision_or_tag: str) -> Response:
    body = req.body.json() if req.method == "POST" else {}
    repo = hub.repo_for_write(req, repo_type, name)
    if req.method == "DELETE":
        hub.store.delete_ref(repo, "tag", revision_or_tag)
        return Response(json={})
    tag_name = body.get("tag")
    if not isinstance(tag_name, str) or not tag_name:
        raise HubHTTPError(400, "Missing 'tag' in the request body")
    sha = hub.resolve(repo, revision_or_tag)
    hub.store.set_ref(repo, "tag", tag_name, sha, must_not_exist=True)
    return Response(json={})


def _valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name or "")) and ".." not in name and not name.endswith(".git")


def new_upload_token() -> str:
    return secrets.token_urlsafe(24)
