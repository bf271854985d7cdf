"""Discussions and pull requests: enough for `create_pull_request` and `upload_folder(create_pr=True)`."""

from __future__ import annotations

from chatvector.localhub.api import PREFIX, Hub
from chatvector.localhub.protocol import HubHTTPError, Request, Response, require_write


def route(hub: Hub, req: Request, repo_type: str, name: str, rest: list[str], method: str) -> Response:
    if not rest and method == "POST":
        return create(hub, req, repo_type, name)
    if not rest and method == "GET":
        repo = hub.repo_for_read(req, repo_type, name)
        items = [_summary(hub, req, repo, row) for row in hub.store.discussions(repo)]
        return Response(json={"discussions": items, "count": len(items), "start": 0, "numTotalItems": len(items)})
    if len(rest) == 1 and rest[0].isdigit() and method == "GET":
        repo = hub.repo_for_read(req, repo_type, name)
        row = hub.store.discussion(repo, int(rest[0]))
        if row is None:
            raise HubHTTPError(404, f"Discussion {rest[0]} not found")
        details = _summary(hub, req, repo, row)
        details.update(events=[], filesWithConflicts=[], diff="")
        if row["is_pr"]:
            details["changes"] = {"base": row["base"]}
        return Response(json=details)
    raise HubHTTPError(404, "Unknown discussions endpoint")


def create(hub: Hub, req: Request, repo_type: str, name: str) -> Response:
    body = req.body.json()
    repo = hub.repo_for_read(req, repo_type, name)
    user = require_write(req)
    title = (body.get("title") or "").strip()
    if not title:
        raise HubHTTPError(400, "A discussion needs a title")
    num = hub.store.create_discussion(repo, title, body.get("description") or "", bool(body.get("pullRequest")), user.name)
    return Response(json={"num": num, "url": f"{req.base_url}/{PREFIX[repo.type]}{repo.name}/discussions/{num}"})


def _summary(hub: Hub, req: Request, repo, row) -> dict:
    return {
        "num": row["num"], "title": row["title"], "status": row["status"], "createdAt": row["created_at"],
        "isPullRequest": bool(row["is_pr"]), "author": {"name": row["author"]}, "numComments": 0,
        "pinned": False, "repo": {"name": repo.name, "type": repo.type},
        "url": f"{req.base_url}/{PREFIX[repo.type]}{repo.name}/discussions/{row['num']}",
    }
