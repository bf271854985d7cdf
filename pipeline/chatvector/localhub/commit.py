"""Writes: `preupload` (regular or LFS per file) and the NDJSON `commit` endpoint."""

from __future__ import annotations

import base64
import binascii
import json

from chatvector.localhub.hub import PREFIX, Hub
from chatvector.localhub.protocol import HubHTTPError, Request, Response
from chatvector.localhub.storage import FileOp, StoreError


def preupload(hub: Hub, req: Request, repo_type: str, name: str, revision: str) -> Response:
    body = req.body.json()
    repo = hub.repo_for_write(req, repo_type, name)
    try:
        head = hub.store.resolve(repo, revision)
    except StoreError:
        head = None  # a PR about to be created or a new branch: nothing to compare with
    answers = []
    for f in body.get("files") or []:
        path, size = f.get("path"), f.get("size")
        if not isinstance(path, str) or not isinstance(size, int):
            raise HubHTTPError(400, "Each file needs a path and a size")
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
    summary = (header.get("summary") or "").strip() or "Upload files"
    parent = header.get("parentCommit")
    pr_url = None
    try:
        if req.flag("create_pr"):
            base_sha = hub.store.resolve(repo, revision)
            start = hub.store.resolve(repo, parent) if parent else base_sha
            num = hub.store.create_discussion(repo, summary, header.get("description") or "", True, user.name, start)
            revision, parent = f"refs/pr/{num}", None
            pr_url = f"{req.base_url}/{PREFIX[repo.type]}{repo.name}/discussions/{num}"
        sha = hub.store.commit(repo, revision, ops, summary, header.get("description") or "", user.name, parent)
    except StoreError as err:
        raise HubHTTPError(err.status, err.message, err.code) from None
    return Response(json={
        "commitUrl": f"{req.base_url}/{PREFIX[repo.type]}{repo.name}/commit/{sha}",
        "commitOid": sha,
        "pullRequestUrl": pr_url,
    })


def _parse(hub: Hub, req: Request) -> tuple[dict, list[FileOp]]:
    header: dict = {}
    ops: list[FileOp] = []
    for raw in req.body.iter_lines():
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
            key, value = line["key"], line["value"]
        except (ValueError, KeyError, TypeError):
            raise HubHTTPError(400, "Malformed commit payload: each line must be {\"key\": ..., \"value\": ...}") from None
        if key == "header":
            header = value
        elif key == "file":
            try:
                content = base64.b64decode(value["content"], validate=True)
            except (binascii.Error, KeyError, TypeError):
                raise HubHTTPError(400, f"File {value.get('path')}: content is not valid base64") from None
            ops.append(FileOp("add", _clean(value["path"]), hub.store.put_bytes(content)))
        elif key == "lfsFile":
            oid, size = value.get("oid"), value.get("size")
            if not hub.store.has_blob(str(oid), size):
                raise HubHTTPError(422, f"LFS file {value.get('path')}: object {oid} was not uploaded")
            ops.append(FileOp("add", _clean(value["path"]), oid, lfs=True))
        elif key == "deletedFile":
            ops.append(FileOp("delete_file", _clean(value["path"])))
        elif key == "deletedFolder":
            ops.append(FileOp("delete_folder", _clean(value["path"])))
        else:
            raise HubHTTPError(400, f"Unknown commit operation {key!r}")
    return header, ops


def _clean(path: str) -> str:
    parts = [p for p in path.strip("/").split("/") if p not in ("", ".")]
    if not parts or ".." in parts:
        raise HubHTTPError(400, f"Invalid path in repo: {path!r}")
    return "/".join(parts)
