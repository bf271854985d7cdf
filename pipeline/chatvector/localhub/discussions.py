"""Discussions and pull requests: enough for `create_pull_request` and `upload_folder(create_pr=True)`."""

from __future__ import annotations

from chatvector.localhub.hub import PREFIX, Hub
from chatvector.localhub.protocol import HubHTTPError, Request, Response, body_field


def listing(hub: Hub, req: Request, repo_type: str, name: str) -> Response:
    repo = hub.repo_for_read(req, repo_type, name)
    items = [_summary(req, repo, row) for row in hub.store.discussions(repo)]
    return Response(json={"discussions": items, "count": len(items), "start": 0, "numTotalItems": len(items)})


def details(hub: Hub, req: Request, repo_type: str, name: str, num: str) -> Response:
    repo = hub.repo_for_read(req, repo_type, name)
    row = hub.store.discussion(repo, int(num))
    if row is None:
        raise HubHTTPError(404, f"Discussion {num} not found")
    out = _summary(req, repo, row)
    out.update(events=[], filesWithConflicts=[], diff="")
    if row["is_pr"]:
        out["changes"] = {"base": row["base"]}
    return Response(json=out)


def create(hub: Hub, req: Request, repo_type: str, name: str) -> Response:
    body = req.body.json()
    repo = hub.repo_for_write(req, repo_type, name)
    assert req.user is not None
    title = body_field(body, "title", str, "").strip()
    if not title:
        raise HubHTTPError(400, "A discussion needs a title")
    description = body_field(body, "description", str, "")
    num = hub.store.create_discussion(repo, title, description, bool(body.get("pullRequest")),
                                      req.user.name)
    return Response(json={"num": num, "url": f"{req.base_url}/{PREFIX[repo.type]}{repo.name}/discussions/{num}"})


def _summary(req: Request, repo, row) -> dict:
    return {
        "num": row["num"], "title": row["title"], "status": row["status"], "createdAt": row["created_at"],
        "isPullRequest": bool(row["is_pr"]), "author": {"name": row["author"]}, "numComments": 0,
        "pinned": False, "repo": {"name": repo.name, "type": repo.type},
        "url": f"{req.base_url}/{PREFIX[repo.type]}{repo.name}/discussions/{row['num']}",
    }
