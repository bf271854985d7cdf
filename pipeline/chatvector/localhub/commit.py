"""Writes: `preupload` (regular or LFS per file) and the NDJSON `commit` endpoint.

Paths are checked as the Hub checks them (protocol.repo_path): no control characters, backslashes, absolute
paths, `..` or `.git` segments. A commit body is streamed line by line; a line holds one inline file (base64),
so it is held to `max_commit_line` (413 beyond): the client inlines only files under the LFS threshold.
"""

from __future__ import annotations

import base64
import binascii
import json

from chatvector.localhub.hub import PREFIX, Hub
from chatvector.localhub.protocol import HubHTTPError, Request, Response, body_field, repo_path
from chatvector.localhub.storage import FileOp, StoreError


def preupload(hub: Hub, req: Request, repo_type: str, name: str, revision: str) -> Response:
    body = req.body.json()
    repo = hub.repo_for_write(req, repo_type, name)
    try:
        head = hub.store.resolve(repo, revision)
    except StoreError:
        head = None  # a PR about to be created or a new branch: nothing to compare with
    answers = []
    for f in body_field(body, "files", list, []):
        path, size = (f.get("path"), f.get("size")) if isinstance(f, dict) else (None, None)
        if not isinstance(path, str) or not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise HubHTTPError(400, "Each file needs a path and a size")
        path = repo_path(path)
        mode = "lfs" if size >= hub.config.lfs_threshold else "regular"
        answer = {"path": path, "uploadMode": mode, "shouldIgnore": False}
        current = hub.store.file(head, path) if head else None
        if current is not None:
            # The client skips unchanged files by comparing this with its own sha1 (regular) or sha256 (lfs).
            answer["oid"] = current.sha256 if mode == "lfs" else current.sha1
        answers.append(answer)
    return Response(json={"files": answers, "commitOid": head})


def commit(hub: Hub, req: Request, repo_type: str, name: str, revision: str) -> Response:
    repo = hub.repo_for_write(req, repo_type, name)
    user = req.user
    assert user is not None
    header, ops = _parse(hub, req)
    summary = body_field(header, "summary", str, "").strip() or "Upload files"
    description = body_field(header, "description", str, "")
    parent = body_field(header, "parentCommit", str)
    pr_url = None
    try:
        if req.flag("create_pr"):
            base_sha = hub.store.resolve(repo, revision)
            start = hub.store.resolve(repo, parent) if parent else base_sha
            num = hub.store.create_discussion(repo, summary, description, True, user.name, start)
            revision, parent = f"refs/pr/{num}", None
            pr_url = f"{req.base_url}/{PREFIX[repo.type]}{repo.name}/discussions/{num}"
        sha = hub.store.commit(repo, revision, ops, summary, description, user.name, parent)
    except StoreError as err:
        raise HubHTTPError(err.status, err.message, err.code) from None
    return Response(json={
        "commitUrl": f"{req.base_url}/{PREFIX[repo.type]}{repo.name}/commit/{sha}",
        "commitOid": sha,
        "pullRequestUrl": pr_url,
    })


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
            ops.append(FileOp("add", path, hub.store.put_bytes(content)))
        elif key == "lfsFile":
            path = repo_path(value.get("path"))
            oid, size = value.get("oid"), value.get("size")
            if not isinstance(oid, str) or not isinstance(size, int) or not hub.store.has_blob(oid, size):
                raise HubHTTPError(422, f"LFS file {path}: object {str(oid)[:80]} was not uploaded")
            ops.append(FileOp("add", path, oid, lfs=True))
        elif key == "deletedFile":
            ops.append(FileOp("delete_file", repo_path(value.get("path"))))
        elif key == "deletedFolder":
            ops.append(FileOp("delete_folder", repo_path(value.get("path"), folder=True)))
        else:
            raise HubHTTPError(400, f"Unknown commit operation {str(key)[:40]!r}")
    return header, ops
