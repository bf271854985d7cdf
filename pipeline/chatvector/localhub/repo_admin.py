"""Repo-wide rewrites: `move_repo` (`POST /api/repos/move`) and `super_squash_history`
(`POST /api/{type}s/{repo}/super-squash/{branch}`).

A move renames the repo in place: its refs, commits, files and discussions go with it. The old id is then
unknown (404 `RepoNotFound`): the Hub would redirect it to the new one, this Hub does not.
"""

from __future__ import annotations

from chatvector.localhub.hub import PREFIX, Hub, valid_name
from chatvector.localhub.protocol import HubHTTPError, Request, Response, body_field, require_write
from chatvector.localhub.storage import rename_repo, squash_branch


def move(hub: Hub, req: Request) -> Response:
    """Body `{"fromRepo", "toRepo", "type"}`. Needs write access to the repo and the right to create repos in the
    destination namespace (403 otherwise); 409 when the destination exists."""
    body = req.body.json()
    user = require_write(req)
    source, target = body_field(body, "fromRepo", str), body_field(body, "toRepo", str)
    repo_type = body_field(body, "type", str) or "model"
    if repo_type not in PREFIX:
        raise HubHTTPError(400, f"Invalid repo type {repo_type!r}")
    if not source or not target:
        raise HubHTTPError(400, "Both 'fromRepo' and 'toRepo' are needed, as namespace/name")
    namespace, _, new_name = target.partition("/")
    if not hub.valid_namespace(namespace, user.name) or not valid_name(new_name):
        raise HubHTTPError(400, f"Invalid repo id {target!r}: expected namespace/name")
    repo = hub.repo_for_write(req, repo_type, source)
    namespace = hub.canonical_namespace(namespace, user.name)
    target = f"{namespace}/{new_name}"
    hub.check_create(req, repo_type, namespace)  # before the existence check: no 409 leaks a private repo
    moved = rename_repo(hub.store, repo, target)
    return Response(json={"url": f"{req.base_url}/{PREFIX[moved.type]}{moved.name}"})


def super_squash(hub: Hub, req: Request, repo_type: str, name: str, branch: str) -> Response:
    """Body `{"message"}`: the branch (or special ref: `refs/pr/N`, as the Hub's dataset viewer squashes
    `refs/convert/parquet`) becomes one commit (no parent) with its head's files; other refs stay. A tag is 400
    (the client's BadRequestError), an unknown ref 404 `RevisionNotFound`."""
    body = req.body.json()
    repo = hub.repo_for_write(req, repo_type, name)
    assert req.user is not None
    if branch.startswith("refs/tags/"):
        raise HubHTTPError(400, f"Invalid reference for a branch: {branch} (only a branch's history can be squashed)")
    kind, ref = ("pr", branch.removeprefix("refs/pr/")) if branch.startswith("refs/pr/") else ("branch", branch)
    ref = ref.removeprefix("refs/heads/")
    if ref not in hub.store.refs(repo, kind):
        if ref in hub.store.refs(repo, "tag"):
            raise HubHTTPError(400, f"Invalid reference for a branch: {branch} is a tag")
        raise HubHTTPError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
    message = body_field(body, "message", str, "").strip() or f"Super-squash branch '{ref}'"
    title, _, rest = message.partition("\n")
    sha = squash_branch(hub.store, repo, ref, title.strip(), rest.strip(), req.user.name, kind)
    return Response(json={"commitOid": sha})
