"""A discussion's timeline, in the Hub's event shapes (huggingface_hub.community.deserialize_event):

    {"id": <24 hex>, "type": "comment" | "status-change" | "title-change" | "commit", "createdAt": ...,
     "author": {"name": ...}, "data": {...}}

* the opening post is the first comment: the discussion's description, by its author, at its creation. It is
  stored only once edited or hidden (or when another event is recorded); until then it is derived, with the
  same id;
* comments, status and title changes are stored events (storage.Event);
* a pull request's commits are read from `refs/pr/N`: each commit there made since the PR was opened is a
  "commit" event (so pushes by any means show, as on the Hub).

Events are in time order (ties: stored order, commits after).
"""

from __future__ import annotations

import hashlib
import html
import secrets
import sqlite3

from chatvector.localhub.hub import Hub
from chatvector.localhub.storage import Commit, Event, Repo, discussion_events, now_iso

MAX_COMMIT_EVENTS = 1000  # a PR's commits listed at most (newest)


def new_id() -> str:
    """A fresh event id: 24 lowercase hex digits, like the Hub's (the client lowercases the ids it sends)."""
    return secrets.token_hex(12)


def comment_data(raw: str, author: str, updated_at: str, *, edited: bool = False, hidden: bool = False,
                 history: list | None = None) -> dict:
    """A comment's `data`. The HTML is the escaped text in a paragraph (the Hub renders markdown)."""
    return {"edited": edited, "hidden": hidden, "history": history or [], "latest": {
        "raw": raw, "html": f"<p>{html.escape(raw)}</p>" if raw else "", "updatedAt": updated_at,
        "author": {"name": author}}}


def comment(author: str, raw: str) -> Event:
    date = now_iso()
    return Event(new_id(), "comment", author, date, comment_data(raw, author, date))


def status_change(author: str, status: str, oid: str | None = None) -> Event:
    return Event(new_id(), "status-change", author, now_iso(), {"status": status}, oid)


def title_change(author: str, old: str, new: str) -> Event:
    return Event(new_id(), "title-change", author, now_iso(), {"from": old, "to": new})


def opening(repo: Repo, row: sqlite3.Row) -> Event:
    """The opening post, as derived from the discussion (its stored version, once edited, has the same id)."""
    seed = f"opening/{repo.id}/{row['num']}/{row['created_at']}"
    return Event(hashlib.sha1(seed.encode()).hexdigest()[:24], "comment", row["author"], row["created_at"],
                 comment_data(row["description"], row["author"], row["created_at"]))


def stored_events(hub: Hub, repo: Repo, row: sqlite3.Row) -> list[Event]:
    """The stored events, the opening post first (derived when it is not stored)."""
    events = discussion_events(hub.store, repo, row["num"])
    first = opening(repo, row)
    return events if any(e.id == first.id for e in events) else [first, *events]


def pr_commits(hub: Hub, repo: Repo, row: sqlite3.Row) -> list[Commit]:
    """The commits on `refs/pr/N` made since the PR was opened, oldest first."""
    head = hub.store.refs(repo, "pr").get(str(row["num"])) if row["is_pr"] else None
    found: list[Commit] = []
    for c in hub.store.history(head) if head else ():
        # Older than the PR: its starting point. (Not "as old": `create_pr=1` opens the PR and commits to it in
        # one request, within the same millisecond at times; a PR's base is never that recent.)
        if c.date < row["created_at"] or len(found) == MAX_COMMIT_EVENTS:
            break
        found.append(c)
    return found[::-1]


def to_json(e: Event) -> dict:
    return {"id": e.id, "type": e.type, "createdAt": e.created_at, "author": {"name": e.author}, "data": e.data}


def _commit_json(c: Commit) -> dict:
    return {"id": c.sha[:24], "type": "commit", "createdAt": c.date, "author": {"name": c.author},
            "data": {"subject": c.title, "oid": c.sha}}


def timeline(hub: Hub, repo: Repo, row: sqlite3.Row) -> list[dict]:
    """Every event of the discussion, in time order."""
    dated = [(e.created_at, 0, i, to_json(e)) for i, e in enumerate(stored_events(hub, repo, row))]
    dated += [(c.date, 1, i, _commit_json(c)) for i, c in enumerate(pr_commits(hub, repo, row))]
    return [event for *_, event in sorted(dated, key=lambda d: d[:3])]
