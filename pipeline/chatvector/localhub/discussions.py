"""Discussions and pull requests: listing, details (with their events: discussion_events.py) and creation.

The writes to an existing one are in discussion_writes.py (comments, title, status) and pull_requests.py (merge).
"""

from __future__ import annotations

from chatvector.localhub import discussion_events, pull_requests
from chatvector.localhub.hub import PREFIX, Hub
from chatvector.localhub.protocol import HubHTTPError, Request, Response, body_field

_LISTED = {"all": None, "open": ("open", "draft"), "closed": ("closed", "merged")}  # `status=` → the statuses
LISTING_PAGE = 50  # discussions a page of the listing holds (`p=` numbers the pages from 0), as on the Hub


def listing(hub: Hub, req: Request, repo_type: str, name: str) -> Response:
    """`GET .../discussions[?type=all|discussion|pull_request&status=all|open|closed&author=NAME&p=N]`: newest
    first, filtered as the Hub filters them (`count` is how many match: the client pages on it)."""
    repo = hub.repo_for_read(req, repo_type, name)
    kind, status, author = req.param("type") or "all", req.param("status") or "all", req.param("author")
    if kind not in ("all", "discussion", "pull_request") or status not in _LISTED:
        raise HubHTTPError(400, f"Invalid discussion filter type={kind!r} status={status!r}: type is all, discussion "
                                "or pull_request; status is all, open or closed")
    rows = [row for row in hub.store.discussions(repo)
            if (kind == "all" or bool(row["is_pr"]) == (kind == "pull_request"))
            and (_LISTED[status] is None or row["status"] in _LISTED[status])
            and (not author or row["author"].casefold() == author.casefold())]
    start = req.int_param("p", 0) * LISTING_PAGE
    items = [_summary(req, repo, row) for row in rows[start:start + LISTING_PAGE]]
    return Response(json={"discussions": items, "count": len(rows), "start": start, "numTotalItems": len(rows)})


def details(hub: Hub, req: Request, repo_type: str, name: str, num: str) -> Response:
    repo = hub.repo_for_read(req, repo_type, name)
    row = hub.store.discussion(repo, int(num))
    if row is None:
        raise HubHTTPError(404, f"Discussion {num} not found")
    out = _summary(req, repo, row)
    events = discussion_events.timeline(hub, repo, row)
    out.update(events=events, numComments=sum(e["type"] == "comment" for e in events), filesWithConflicts=[],
               diff="")
    if row["is_pr"]:
        out["changes"] = pull_requests.changes(hub, repo, row)
        out["filesWithConflicts"] = pull_requests.conflicting_files(hub, repo, row)
    return Response(json=out)


def create(hub: Hub, req: Request, repo_type: str, name: str) -> Response:
    body = req.body.json()
    repo = hub.repo_for_contribution(req, repo_type, name)  # anyone who can see a repo may open one, as on the Hub
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
