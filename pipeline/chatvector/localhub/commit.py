"""Writes: `preupload` (regular or LFS per file, and which files `.gitignore` drops) and the NDJSON `commit`.

As on the Hub, a non-empty file is LFS when it is large (HubConfig.lfs_threshold) or when the revision's
`.gitattributes` sets `filter=lfs` for its path (gitrules.GitAttributes); a file the revision's `.gitignore` (or the one the
client sends, or the one the commit adds) matches is ignored: `shouldIgnore` in preupload, dropped from the
commit. A file committed inline that must be LFS is stored as LFS (git's clean filter would do the same): see
docs/local-hub.md for why it is not refused.

Paths are checked as the Hub checks them (protocol.repo_path, 422): no control characters, absolute paths or
paths starting with `..` (`/` or `\\` as separator), empty, `.`, `..` or `.git` segments. A commit body is
streamed line by line; a line holds one inline file (base64), so it is held to `max_commit_line` (413 beyond):
the client inlines only files under the LFS threshold.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import replace

from chatvector.localhub.gitrules import GitAttributes, GitIgnore
from chatvector.localhub.hub import PREFIX, Hub
from chatvector.localhub.protocol import HubHTTPError, Request, Response, body_field, repo_path
from chatvector.localhub.storage import FileOp, StoreError

GITATTRIBUTES, GITIGNORE = ".gitattributes", ".gitignore"
EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"  # an empty file: never LFS
_RULES_FILE_CAP = 1 << 20  # a .gitattributes or .gitignore larger than this is read no further


def preupload(hub: Hub, req: Request, repo_type: str, name: str, revision: str) -> Response:
    body = req.body.json()
    repo = _repo_for(hub, req, repo_type, name)
    try:
        head = hub.store.resolve(repo, revision)
    except StoreError:
        head = None  # a PR about to be created or a new branch: nothing to compare with
    attributes = GitAttributes.parse(_text_at(hub, head, GITATTRIBUTES))
    sent = body_field(body, "gitIgnore", str)  # the .gitignore the client uploads, if it does; else the revision's
    ignore = GitIgnore.parse(sent if sent is not None else _text_at(hub, head, GITIGNORE))
    answers = []
    for f in body_field(body, "files", list, []):
        path, size = (f.get("path"), f.get("size")) if isinstance(f, dict) else (None, None)
        if not isinstance(path, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise HubHTTPError(400, "Each file needs a path and a size")
        path = repo_path(path)
        mode = "lfs" if size and (size >= hub.config.lfs_threshold or attributes.is_lfs(path)) else "regular"
        answer = {"path": path, "uploadMode": mode, "shouldIgnore": _ignored(ignore, path)}
        current = hub.store.file(head, path) if head else None
        if current is not None:
            # The client skips unchanged files by comparing this with its own sha1 (regular) or sha256 (lfs).
            answer["oid"] = current.sha256 if mode == "lfs" else current.sha1
        answers.append(answer)
    return Response(json={"files": answers, "commitOid": head})


def commit(hub: Hub, req: Request, repo_type: str, name: str, revision: str) -> Response:
    repo = _repo_for(hub, req, repo_type, name)
    user = req.user
    assert user is not None
    header, ops = _parse(hub, req)
    summary = body_field(header, "summary", str, "").strip() or "Upload files"
    description = body_field(header, "description", str, "")
    parent = body_field(header, "parentCommit", str)
    pr_url = None
    try:
        if req.flag("create_pr"):
            # A PR opens against a branch: a commit id, a tag or a PR ref is no base (RevisionNotFound, as the Hub).
            if hub.store.writable_ref(repo, revision)[0] != "branch":
                raise StoreError(404, f"Invalid rev id: {revision} is not a branch", "RevisionNotFound")
            base_sha = hub.store.resolve(repo, revision)
            start = hub.store.resolve(repo, parent) if parent else base_sha
            ops = _apply_rules(hub, start, ops)
            num = hub.store.create_discussion(repo, summary, description, True, user.name, start)
            revision, parent = f"refs/pr/{num}", None
            pr_url = f"{req.base_url}/{PREFIX[repo.type]}{repo.name}/discussions/{num}"
        else:
            ops = _apply_rules(hub, _head_or_none(hub, repo, revision), ops)
        sha = hub.store.commit(repo, revision, ops, summary, description, user.name, parent)
    except StoreError as err:
        raise HubHTTPError(err.status, err.message, err.code) from None
    return Response(json={
        "commitUrl": f"{req.base_url}/{PREFIX[repo.type]}{repo.name}/commit/{sha}",
        "commitOid": sha,
        "pullRequestUrl": pr_url,
    })


def _repo_for(hub: Hub, req: Request, repo_type: str, name: str):
    """The repo a preupload or commit writes to: `create_pr=1` only proposes a change, which anyone who can see
    the repo may do on the Hub (a pull request on a repo one cannot write to); anything else needs write access."""
    if req.flag("create_pr"):
        return hub.repo_for_contribution(req, repo_type, name)
    return hub.repo_for_write(req, repo_type, name)


def _head_or_none(hub: Hub, repo, revision: str) -> str | None:
    try:
        return hub.store.resolve(repo, revision)
    except StoreError:
        return None  # a new repo's first commit; store.commit refuses a revision that is no branch


def _apply_rules(hub: Hub, base: str | None, ops: list[FileOp]) -> list[FileOp]:
    """OPS as the Hub applies them on top of BASE: added files the resulting `.gitignore` matches are dropped,
    and those the resulting `.gitattributes` makes LFS are stored as LFS (both files as the commit leaves them:
    one it adds applies to its own commit, as `git add` of both would)."""
    attributes = GitAttributes.parse(_resulting_text(hub, base, ops, GITATTRIBUTES))
    ignore = GitIgnore.parse(_resulting_text(hub, base, ops, GITIGNORE))
    kept = []
    for op in ops:
        if op.kind == "add" and _ignored(ignore, op.path):
            continue
        if op.kind == "add" and not op.lfs and op.sha256 != EMPTY_SHA256 and attributes.is_lfs(op.path):
            op = replace(op, lfs=True)
        kept.append(op)
    return kept


def _ignored(ignore: GitIgnore, path: str) -> bool:
    # The rules files themselves are never dropped: a `.gitignore` of `.*` would otherwise lose itself.
    return path not in (GITATTRIBUTES, GITIGNORE) and ignore.ignores(path)


def _resulting_text(hub: Hub, base: str | None, ops: list[FileOp], path: str) -> str:
    """The text of the file PATH once OPS are applied on top of BASE ('' when it is absent)."""
    for op in reversed(ops):
        if op.path == path and op.kind == "add":
            return _blob_text(hub, op.sha256 or "")
        if op.path == path and op.kind == "delete_file":
            return ""
    return _text_at(hub, base, path)


def _text_at(hub: Hub, sha: str | None, path: str) -> str:
    """The text of the file PATH at commit SHA ('' when there is none)."""
    entry = hub.store.file(sha, path) if sha else None
    return _blob_text(hub, entry.sha256) if entry is not None else ""


def _blob_text(hub: Hub, sha256: str) -> str:
    with hub.store.open_blob(sha256) as fh:
        return fh.read(_RULES_FILE_CAP).decode("utf-8", "replace")


def max_commit_line(hub: Hub) -> int:
    """The longest commit-payload line accepted: one inline file under the LFS threshold (at least 10 MiB), as
    base64, plus its JSON wrapping."""
    return 4 * -(-max(hub.config.lfs_threshold, 10 << 20) // 3) + (64 << 10)


def _parse(hub: Hub, req: Request) -> tuple[dict, list[FileOp]]:
    header: dict = {}
    ops: list[FileOp] = []
    for raw in req.body.iter_lines(max_commit_line(hub), "commit payload line"):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
            key, value = line["key"], line["value"]
        except (ValueError, KeyError, TypeError, RecursionError):
            raise HubHTTPError(
                400, "Malformed commit payload: each line must be {\"key\": ..., \"value\": ...}") from None
        if not isinstance(value, dict):
            raise HubHTTPError(
                400, f"Malformed commit payload: the value of a {str(key)[:40]!r} line must be an object")
        if key == "header":
            header = value
        elif key == "file":
            path = repo_path(value.get("path"))
            try:
                content = base64.b64decode(value["content"], validate=True)
            except (binascii.Error, KeyError, TypeError, ValueError):
                raise HubHTTPError(400, f"File {path}: content is not valid base64") from None
            # A large file sent inline is LFS all the same, as preupload would have said.
            ops.append(FileOp("add", path, hub.store.put_bytes(content), lfs=len(content) >= hub.config.lfs_threshold))
        elif key == "lfsFile":
            path = repo_path(value.get("path"))
            oid, size = value.get("oid"), value.get("size")  # (a copy of an LFS file comes without its size)
            if not isinstance(oid, str) or not (size is None or isinstance(size, int)) or not hub.store.has_blob(oid, size):
                raise HubHTTPError(422, f"LFS file {path}: object {str(oid)[:80]} was not uploaded")
            ops.append(FileOp("add", path, oid, lfs=True))
        elif key == "deletedFile":
            ops.append(FileOp("delete_file", repo_path(value.get("path"))))
        elif key == "deletedFolder":
            ops.append(FileOp("delete_folder", repo_path(value.get("path"), folder=True)))
        else:
            raise HubHTTPError(400, f"Unknown commit operation {str(key)[:40]!r}")
    return header, ops
