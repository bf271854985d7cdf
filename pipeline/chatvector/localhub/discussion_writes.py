"""Writes to a discussion or pull request (`POST /api/{type}s/{repo}/discussions/{num}/...`), who may do them,
and the discussion-wide checks `pull_requests.merge` shares:

    comment                    {"comment"}          -> {"newMessage": event}      anyone who can see the repo
    comment/{id}/edit          {"content"}          -> {"updatedComment": event}  the comment's author
    comment/{id}/hide          (no body)            -> {"updatedComment": event}  the comment's author, a writer
    title                      {"title"}            -> {"newTitle": event}        the discussion's author, a writer
    status                     {"status", "comment"?} -> {"newStatus": event}     the discussion's author, a writer

"Anyone" means any user with a token of write scope (a read-scope token reads only, as on the Hub), or a
fine-grained token with `discussion.write` (or `repo.write`) on the repo or `discussion.write` globally. A repo
the token cannot see is 404 `RepoNotFound`; not being allowed is 403. A hidden comment's text is gone (as on the
Hub: hiding cannot be undone) and it can no longer be edited. A merged pull request's status stays merged. Setting
the status a discussion already has is accepted and recorded, as on the Hub (its client's tests reopen an open PR).
"""

from __future__ import annotations

import sqlite3

from chatvector.localhub import discussion_events as ev
from chatvector.localhub.hub import Hub
from chatvector.localhub.protocol import HubHTTPError, Request, Response, Token, body_field
from chatvector.localhub.storage import Event, Repo, now_iso, record_discussion_events


def discussion_of(hub: Hub, repo: Repo, num: str) -> sqlite3.Row:
    row = hub.store.discussion(repo, int(num))
    if row is None:
        raise HubHTTPError(404, f"Discussion {num} not found in {repo.name}")
    return row


def poster(hub: Hub, req: Request, repo: Repo) -> Token:
    """The token, when it may post in the repo's discussions (the repo is known to be visible to it)."""
    hub.repo_for_contribution(req, repo.type, repo.name)
    assert req.user is not None
    return req.user


def is_writer(hub: Hub, req: Request, repo: Repo) -> bool:
    try:
        hub.repo_for_write(req, repo.type, repo.name)
    except HubHTTPError:
        return False
    return True


def _author_or_writer(hub: Hub, req: Request, repo: Repo, row: sqlite3.Row, what: str) -> Token:
    token = poster(hub, req, repo)
    if token.name != row["author"] and not is_writer(hub, req, repo):
        raise HubHTTPError(403, f"Only the author of discussion {row['num']} or a writer of {repo.name} may {what}")
    return token


def comment(hub: Hub, req: Request, repo_type: str, name: str, num: str) -> Response:
    body = req.body.json()
    repo = hub.repo_for_read(req, repo_type, name)
    row = discussion_of(hub, repo, num)
    token = poster(hub, req, repo)
    text = body_field(body, "comment", str, "")
    if not text.strip():
        raise HubHTTPError(400, "A comment cannot be empty")
    event = ev.comment(token.name, text)
    record_discussion_events(hub.store, repo, row["num"], [ev.opening(repo, row), event])
    return Response(json={"newMessage": ev.to_json(event)})


def _comment_event(hub: Hub, repo: Repo, row: sqlite3.Row, comment_id: str) -> Event:
    found = next((e for e in ev.stored_events(hub, repo, row) if e.id == comment_id.lower()), None)
    if found is None or found.type != "comment":
        raise HubHTTPError(404, f"Comment {comment_id} not found in discussion {row['num']}")
    return found


def _update_comment(hub: Hub, repo: Repo, row: sqlite3.Row, event: Event, data: dict) -> Response:
    updated = Event(event.id, event.type, event.author, event.created_at, data, event.oid)
    record_discussion_events(hub.store, repo, row["num"], [ev.opening(repo, row)], [updated])
    return Response(json={"updatedComment": ev.to_json(updated)})


def edit_comment(hub: Hub, req: Request, repo_type: str, name: str, num: str, comment_id: str) -> Response:
    body = req.body.json()
    repo = hub.repo_for_read(req, repo_type, name)
    row = discussion_of(hub, repo, num)
    token = poster(hub, req, repo)
    event = _comment_event(hub, repo, row, comment_id)
    if token.name != event.author:
        raise HubHTTPError(403, f"Only {event.author}, who wrote comment {event.id}, may edit it")
    if event.data["hidden"]:
        raise HubHTTPError(403, f"Comment {event.id} is hidden; it can no longer be edited")
    text = body_field(body, "content", str, "")
    if not text.strip():
        raise HubHTTPError(400, "A comment cannot be empty")
    previous = event.data["latest"]
    data = ev.comment_data(text, token.name, now_iso(), edited=True, history=[previous, *event.data["history"]])
    return _update_comment(hub, repo, row, event, data)


def hide_comment(hub: Hub, req: Request, repo_type: str, name: str, num: str, comment_id: str) -> Response:
    repo = hub.repo_for_read(req, repo_type, name)
    row = discussion_of(hub, repo, num)
    token = poster(hub, req, repo)
    event = _comment_event(hub, repo, row, comment_id)
    if token.name != event.author and not is_writer(hub, req, repo):
        raise HubHTTPError(403, f"Only {event.author}, who wrote comment {event.id}, or a writer of {repo.name} "
                                "may hide it")
    if event.data["hidden"]:
        return Response(json={"updatedComment": ev.to_json(event)})
    data = ev.comment_data("", token.name, now_iso(), edited=event.data["edited"], hidden=True)
    return _update_comment(hub, repo, row, event, data)


def title(hub: Hub, req: Request, repo_type: str, name: str, num: str) -> Response:
    body = req.body.json()
    repo = hub.repo_for_read(req, repo_type, name)
    row = discussion_of(hub, repo, num)
    token = _author_or_writer(hub, req, repo, row, "rename it")
    new_title = body_field(body, "title", str, "").strip()
    if not new_title:
        raise HubHTTPError(400, "A discussion needs a title")
    event = ev.title_change(token.name, row["title"], new_title)
    record_discussion_events(hub.store, repo, row["num"], [ev.opening(repo, row), event], title=new_title)
    return Response(json={"newTitle": ev.to_json(event)})


def status(hub: Hub, req: Request, repo_type: str, name: str, num: str) -> Response:
    body = req.body.json()
    repo = hub.repo_for_read(req, repo_type, name)
    row = discussion_of(hub, repo, num)
    token = _author_or_writer(hub, req, repo, row, "change its status")
    new_status = body_field(body, "status", str)
    if new_status not in ("open", "closed"):
        raise HubHTTPError(400, f"Invalid status {new_status!r}: expected 'open' or 'closed'")
    if row["status"] == "merged":
        raise HubHTTPError(400, f"Pull request {row['num']} is merged; its status cannot change")
    text = body_field(body, "comment", str, "").strip()
    said = [ev.comment(token.name, text)] if text else []  # (made first: it comes before the change)
    event = ev.status_change(token.name, new_status)
    events = [ev.opening(repo, row), *said, event]
    record_discussion_events(hub.store, repo, row["num"], events, status=new_status, from_statuses=[row["status"]])
    return Response(json={"newStatus": ev.to_json(event)})
