"""Merging a pull request (`POST /api/{type}s/{repo}/discussions/{num}/merge`, body `{"comment"?}`): a writer's
act, for an open (or draft) PR only (400 otherwise).

`refs/pr/N` goes into its base branch (`refs/heads/main`):
* fast-forward when the base has not moved since the PR started (its head is in the PR's history): the branch
  then points at the PR's head;
* otherwise a merge commit on the base, from the merge base (the newest commit of the PR's history the base
  also holds): each file the PR changed takes the PR's version, each file only the base changed keeps the
  base's. A file both changed, differently, is a conflict: 409, the files named (the details' `filesWithConflicts`
  lists them while the PR is open); files are compared whole (no line merge). A base whose history no longer
  holds any commit of the PR's (super-squashed) cannot be merged: 409. The merge commit records one parent
  (the base's head; this store has no second parent): the PR's commits stay reachable from `refs/pr/N`;
* nothing at all when the PR's head is already in the base's history.
Then the PR is "merged", with a "status-change" event (and the comment first, when given), and the details'
`changes.mergeCommitId` is the base's new head. A base that moves while the merge is written is 412.
"""

from __future__ import annotations

import sqlite3
import threading

from chatvector.localhub import discussion_events as ev
from chatvector.localhub.discussion_writes import discussion_of
from chatvector.localhub.hub import Hub
from chatvector.localhub.protocol import HubHTTPError, Request, Response, body_field
from chatvector.localhub.storage import FileOp, Repo, move_ref, record_discussion_events

_merging = threading.Lock()  # one merge at a time: the status check and the merge's writes stay together

Tree = dict[str, tuple[str, bool]]  # path -> (sha256, lfs)


def _tree(hub: Hub, sha: str) -> Tree:
    return {f.path: (f.sha256, f.lfs) for f in hub.store.files(sha)}


def three_way(base: Tree, ours: Tree, theirs: Tree) -> tuple[Tree, list[str]]:
    """OURS with THEIRS' changes since BASE, and the paths both changed differently (the conflicts)."""
    merged, conflicts = {}, []
    for path in sorted(base.keys() | ours.keys() | theirs.keys()):
        b, o, t = base.get(path), ours.get(path), theirs.get(path)
        if t == b or t == o:
            result = o
        elif o == b:
            result = t
        else:
            conflicts.append(path)
            result = o
        if result is not None:
            merged[path] = result
    return merged, conflicts


class _Plan:
    """What merging a PR into its base takes: nothing, a fast-forward, or a merge commit of MERGED."""

    def __init__(self, hub: Hub, repo: Repo, row: sqlite3.Row):
        self.base_ref = row["base"]
        self.branch = self.base_ref.removeprefix("refs/heads/")
        self.base_head = hub.resolve(repo, self.base_ref)
        self.pr_head = hub.resolve(repo, f"refs/pr/{row['num']}")
        in_base = {c.sha for c in hub.store.history(self.base_head)}
        pr_history = [c.sha for c in hub.store.history(self.pr_head)]
        self.up_to_date = self.pr_head in in_base
        self.fast_forward = not self.up_to_date and self.base_head in pr_history
        self.merge_base = next((sha for sha in pr_history if sha in in_base), None)
        self.merged: Tree = {}
        self.conflicts: list[str] = []
        if not (self.up_to_date or self.fast_forward) and self.merge_base is not None:
            self.merged, self.conflicts = three_way(
                _tree(hub, self.merge_base), _tree(hub, self.base_head), _tree(hub, self.pr_head))


def changes(hub: Hub, repo: Repo, row: sqlite3.Row) -> dict:
    """The details' `changes`: the base ref, and the merge commit once merged."""
    out: dict = {"base": row["base"]}
    merged = next((e for e in ev.stored_events(hub, repo, row)
                   if e.type == "status-change" and e.data.get("status") == "merged"), None)
    if merged is not None and merged.oid:
        out["mergeCommitId"] = merged.oid
    return out


def conflicting_files(hub: Hub, repo: Repo, row: sqlite3.Row) -> list[str]:
    if row["status"] not in ("open", "draft"):
        return []
    return _Plan(hub, repo, row).conflicts


def _merge(hub: Hub, repo: Repo, row: sqlite3.Row, author: str) -> str:
    """Merge the PR into its base; the base's new head."""
    plan = _Plan(hub, repo, row)
    if plan.up_to_date:
        return plan.base_head
    if plan.fast_forward:
        move_ref(hub.store, repo, "branch", plan.branch, plan.base_head, plan.pr_head)
        return plan.pr_head
    if plan.merge_base is None:
        raise HubHTTPError(409, f"Cannot merge pull request {row['num']}: {plan.branch} no longer shares any "
                                "history with it (was its history squashed?)")
    if plan.conflicts:
        raise HubHTTPError(409, f"Cannot merge pull request {row['num']}: merge conflicts in "
                                f"{', '.join(plan.conflicts)}")
    base_tree = _tree(hub, plan.base_head)
    ops = [FileOp("add", path, sha256, lfs) for path, (sha256, lfs) in plan.merged.items()
           if base_tree.get(path) != (sha256, lfs)]
    ops += [FileOp("delete_file", path) for path in base_tree if path not in plan.merged]
    return hub.store.commit(repo, plan.base_ref, ops, f"Merge pull request #{row['num']}: {row['title']}",
                            f"Merges refs/pr/{row['num']} into {plan.branch}.", author, parent_commit=plan.base_head)


def merge(hub: Hub, req: Request, repo_type: str, name: str, num: str) -> Response:
    body = req.body.json()
    repo = hub.repo_for_write(req, repo_type, name)
    assert req.user is not None
    text = body_field(body, "comment", str, "").strip()
    with _merging:
        row = discussion_of(hub, repo, num)
        if not row["is_pr"]:
            raise HubHTTPError(400, f"Discussion {row['num']} is not a pull request")
        if row["status"] not in ("open", "draft"):
            raise HubHTTPError(400, f"Pull request {row['num']} is {row['status']}: only an open one can be merged")
        said = [ev.comment(req.user.name, text)] if text else []
        head = _merge(hub, repo, row, req.user.name)
        event = ev.status_change(req.user.name, "merged", head)
        record_discussion_events(hub.store, repo, row["num"], [ev.opening(repo, row), *said, event], status="merged")
    return Response(json={"newStatus": ev.to_json(event)})
