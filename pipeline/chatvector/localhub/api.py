"""The Hub's API endpoints for identity, repos, listings, refs and settings (see shared/hub-api.md).

Each endpoint is a function `(hub, request, ...) -> Response`; `routes.py` maps requests to them.
"""

from __future__ import annotations

import hashlib
import html
from urllib.parse import parse_qs, urlencode

from chatvector.hub import cardrules
from chatvector.localhub.gitrules import ref_name_problem
from chatvector.localhub.hub import PREFIX, Hub, valid_name
from chatvector.localhub.protocol import (
    FINE_GRAINED,
    MAX_JSON_BODY,
    HubHTTPError,
    Request,
    Response,
    Token,
    body_field,
    require_write,
)
from chatvector.localhub.storage import FileEntry, StoreError, lfs_pointer


def agent_harnesses(hub: Hub, req: Request) -> Response:
    return Response(json={"standardEnvVars": [], "harnesses": {}})


# -- identity and repos -----------------------------------------------------------------------------------
def whoami(hub: Hub, req: Request) -> Response:
    user = req.user
    if user is None:
        raise HubHTTPError(401, "Invalid credentials in Authorization header")
    orgs = [{"type": "org", "name": org.name, "fullname": org.fullname or org.name, "roleInOrg": role}
            for org, role in hub.orgs_of(user.name)]
    return Response(json={
        "type": "user", "name": user.name, "fullname": user.name, "orgs": orgs,
        "auth": {"type": "access_token", "accessToken": _access_token(user)},
    })


def _access_token(token: Token) -> dict:
    info: dict = {"displayName": token.name, "role": token.scope}
    if token.scope == FINE_GRAINED and token.fine_grained is not None:
        info["fineGrained"] = token.fine_grained.to_json()
    return info


def create_repo(hub: Hub, req: Request) -> Response:
    body = req.body.json()
    user = req.user
    if user is None:
        raise HubHTTPError(401, "You must be authenticated with a write token to create a repo.")
    name, org = body_field(body, "name", str), body_field(body, "organization", str) or user.name
    repo_type = body_field(body, "type", str) or "model"
    if (repo_type not in PREFIX or not isinstance(name, str) or not valid_name(name)
            or not hub.valid_namespace(org, user.name)):
        raise HubHTTPError(400, f"Invalid repo name or type: {org}/{name} ({repo_type})")
    org = hub.canonical_namespace(org, user.name)
    hub.check_create(req, repo_type, org)  # before the existence check: no 409 leaks a private repo
    full = f"{org}/{name}"
    existing = hub.store.get_repo(repo_type, full)  # ignoring case: `Alice/Repo` is taken by `alice/repo`
    url = f"{req.base_url}/{PREFIX[repo_type]}{existing.name if existing else full}"
    if existing is not None:
        return Response(409, json={"error": f"You already created this {repo_type} repo", "url": url},
                        headers={"X-Error-Message": f"You already created this {repo_type} repo"})
    private = bool(_visibility(body, repo_type))
    try:
        hub.store.create_repo(repo_type, full, private, user.name)
    except StoreError as err:  # lost a race with another create
        return Response(409, json={"error": err.message, "url": url}, headers={"X-Error-Message": err.message})
    return Response(json={"url": url, "name": full, "id": full})


def delete_repo(hub: Hub, req: Request) -> Response:
    body = req.body.json()
    user = require_write(req)
    full = f"{body_field(body, 'organization', str) or user.name}/{body_field(body, 'name', str)}"
    repo = hub.repo_for_write(req, body_field(body, "type", str) or "model", full)
    hub.store.delete_repo(repo)
    return Response(json={})


def _visibility(body: dict, repo_type: str) -> bool | None:
    """Whether the body makes the repo private: `visibility` ("public" or "private", what huggingface_hub 2.4
    sends) or the legacy boolean `private`; None when it says neither; 400 for anything else."""
    visibility, private = body.get("visibility"), body.get("private")
    if visibility is not None and private is not None:
        raise HubHTTPError(400, "Give either 'visibility' or 'private', not both")
    if visibility is not None:
        if visibility == "protected" and repo_type == "space":
            raise HubHTTPError(400, "Invalid 'visibility' 'protected': this local Hub has no protected Spaces")
        if visibility not in ("public", "private"):
            raise HubHTTPError(400, f"Invalid 'visibility' {visibility!r}: must be 'public' or 'private'")
        return visibility == "private"
    if private is not None and not isinstance(private, bool):
        raise HubHTTPError(400, f"Invalid 'private' {private!r}: must be true or false")
    return private


def settings(hub: Hub, req: Request, repo_type: str, name: str) -> Response:
    """`PUT .../settings`: `visibility` (or `private`) and `gated` (false, "auto" or "manual")."""
    body = req.body.json()
    repo = hub.repo_for_write(req, repo_type, name)
    private = _visibility(body, repo.type)
    gated = body.get("gated")
    if gated is not None and gated is not False and gated not in ("auto", "manual"):
        raise HubHTTPError(400, f"Invalid 'gated' {gated!r}: must be false, 'auto' or 'manual'")
    hub.store.update_repo(repo, private=private, gated=gated)
    return Response(json={})


def validate_yaml(hub: Hub, req: Request) -> Response:
    body = req.body.json()
    repo_type = body_field(body, "repoType", str)
    repo_type = repo_type if repo_type in PREFIX else "model"
    errors, warnings = cardrules.validate_card(body_field(body, "content", str, ""), repo_type=repo_type)
    errors = [cardrules.hub_error_text(e) for e in errors]
    status, headers = (400, {"X-Error-Message": errors[0]}) if errors else (200, {})
    if "text/plain" in (req.headers.get("Accept") or ""):  # RepoCard.validate asks for the Hub's text answer
        text = "\n".join(f"- {m}" for m in errors or warnings)
        return Response(status, body=text.encode(), headers={**headers, "Content-Type": "text/plain; charset=utf-8"})
    payload = {"errors": [{"message": e} for e in errors], "warnings": [{"message": w} for w in warnings]}
    return Response(status, json=payload, headers=headers)


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
        "createdAt": repo.created_at, "private": repo.private, "gated": repo.gated,
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
        return cardrules.parse_card_data(fh.read().decode("utf-8", "replace"))


# -- listing ---------------------------------------------------------------------------------------------
def tree_entry(hub: Hub, f: FileEntry) -> dict:
    """A file's listing entry; `xetHash` only for a file stored with Xet (the client then downloads it through
    the CAS without asking `/resolve` first)."""
    entry: dict = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.path}
    if f.lfs:
        entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": len(lfs_pointer(f.sha256, f.size))}
        xet_file = hub.xet.cas.file_by_sha256(f.sha256)
        if xet_file is not None:
            entry["xetHash"] = xet_file.file_hash
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
            entries[f.path] = tree_entry(hub, f)
    ordered = sorted(entries.values(), key=lambda e: (e["type"] != "directory", e["path"]))
    if not req.flag("expand"):
        return _paginate(hub, req, ordered)
    # Expanded, as on the Hub: 50 entries a page, each with its last commit (found for the page's entries only).
    response = _paginate(hub, req, ordered, EXPANDED_PAGE_SIZE)
    _add_last_commits(hub, sha, response.json)
    return response


EXPANDED_PAGE_SIZE = 50  # the Hub's page size for a tree listing with expand=true


def _paginate(hub: Hub, req: Request, items: list, page_size: int | None = None) -> Response:
    """One page and, when more remain, an absolute `Link: <...>; rel="next"` (the client follows it verbatim)."""
    start = req.int_param("cursor", 0)
    cap = min(hub.config.page_size, page_size or hub.config.page_size)
    size = min(req.int_param("limit", cap, minimum=1), cap)
    page = items[start:start + size]
    headers = {}
    if start + size < len(items):
        query = {k: v[-1] for k, v in req.query.items() if k != "cursor"}
        query["cursor"] = str(start + size)
        path = "/" + "/".join(req.segments)
        headers["Link"] = f'<{req.base_url}{path}?{urlencode(query)}>; rel="next"'
    return Response(json=page, headers=headers)


def _add_last_commits(hub: Hub, sha: str, entries: list[dict]) -> None:
    """Give each tree entry its `lastCommit` {id, title, date}: the newest commit, from SHA back, that changed
    the file (or, for a folder, a file under it)."""
    todo = {e["path"]: e for e in entries}
    history = hub.store.history(sha)
    current = next(history, None)
    current_files = _file_states(hub, current.sha) if current else {}
    while todo and current is not None:
        parent = next(history, None)
        parent_files = _file_states(hub, parent.sha) if parent else {}
        changed = {p for p in current_files.keys() | parent_files.keys() if current_files.get(p) != parent_files.get(p)}
        for path, entry in list(todo.items()):
            folder = path + "/"
            if path in changed if entry["type"] == "file" else any(c.startswith(folder) for c in changed):
                entry["lastCommit"] = {"id": current.sha, "title": current.title, "date": current.date}
                del todo[path]
        current, current_files = parent, parent_files


def _file_states(hub: Hub, sha: str) -> dict[str, tuple[str, bool]]:
    return {f.path: (f.sha256, f.lfs) for f in hub.store.files(sha)}


def paths_info(hub: Hub, req: Request, repo_type: str, name: str, revision: str) -> Response:
    """`POST .../paths-info/{rev}`: the entries of the paths that exist (a form body, as the client sends, or
    JSON); `expand` adds each one's last commit."""
    content_type = req.headers.get("Content-Type") or ""
    if "json" in content_type:
        body = req.body.json()
        wanted = body_field(body, "paths", list, [])
        expand = body.get("expand") in (True, "true", "True", "1")
    else:
        try:
            form = parse_qs(req.body.read_all(MAX_JSON_BODY, "form body").decode())
        except UnicodeDecodeError:
            raise HubHTTPError(400, "Invalid form body: not UTF-8") from None
        wanted = form.get("paths", [])
        expand = (form.get("expand") or [""])[-1].lower() in ("true", "1")
    if not all(isinstance(p, str) for p in wanted):
        raise HubHTTPError(400, "Invalid 'paths' in the request body: expected an array of strings")
    repo = hub.repo_for_read(req, repo_type, name)
    sha = hub.resolve(repo, revision)
    files = hub.store.files(sha)
    out = []
    for path in wanted:
        path = path.strip("/")
        match = next((f for f in files if f.path == path), None)
        if match:
            out.append(tree_entry(hub, match))
        elif any(f.path.startswith(path + "/") for f in files):
            out.append(_folder_entry(path))
    if expand:
        _add_last_commits(hub, sha, out)
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
    formatted = "formatted" in req.query.get("expand[]", []) + req.query.get("expand", [])
    items = []
    for c in hub.store.history(sha):
        item = {"id": c.sha, "authors": [{"user": c.author}], "date": c.date, "title": c.title, "message": c.message}
        if formatted:  # only when asked, as on the Hub (the client asks with formatted=True)
            item["formatted"] = {"title": html.escape(c.title), "message": html.escape(c.message)}
        items.append(item)
    return _paginate(hub, req, items)


# -- branches and tags -----------------------------------------------------------------------------------
def branch(hub: Hub, req: Request, repo_type: str, name: str, branch_name: str) -> Response:
    body = req.body.json() if req.method == "POST" else {}
    repo = hub.repo_for_write(req, repo_type, name)
    if req.method == "DELETE":
        if branch_name == "main":  # the Hub's message starts so (its default branch is protected)
            raise HubHTTPError(403, "Cannot delete refs/heads/main: it is the repository's default branch")
        hub.store.delete_ref(repo, "branch", branch_name)
        return Response(json={})
    start = hub.resolve(repo, body_field(body, "startingPoint", str) or "main")
    _check_ref_name(branch_name, "branch")
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
    sha = hub.resolve(repo, revision_or_tag)  # first, as on the Hub: a missing revision is RevisionNotFound
    _check_ref_name(tag_name, "tag")
    hub.store.set_ref(repo, "tag", tag_name, sha, must_not_exist=True)
    return Response(json={})


def _check_ref_name(name: str, kind: str) -> None:
    """400 for a branch or tag name git refuses (gitrules.ref_name_problem: git check-ref-format's rules)."""
    problem = ref_name_problem(name)
    if problem:
        raise HubHTTPError(400, f"Invalid {kind} name {name!r}: {problem}")
