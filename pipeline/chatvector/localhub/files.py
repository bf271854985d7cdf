"""`HEAD|GET /{repo}/resolve/{rev}/{path}`: file downloads, with HTTP Range support.

Bytes are streamed from the blob file with sendfile (the server never reads a whole blob into memory).
HEAD always reports the real size (`X-Linked-Size`): a HEAD saying 0 makes the client write an empty file.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from chatvector.localhub.hub import Hub
from chatvector.localhub.protocol import HubHTTPError, Request, Response

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def resolve(hub: Hub, req: Request, repo_type: str, name: str, revision: str, path: str) -> Response:
    repo = hub.repo_for_read(req, repo_type, name)
    sha = hub.resolve(repo, revision)
    entry = hub.store.file(sha, path)
    if entry is None:
        # X-Repo-Commit lets the client cache the absence (transformers probes many optional files).
        raise HubHTTPError(404, f"Entry not found: {path} at {revision}", "EntryNotFound", {"X-Repo-Commit": sha})
    hub.check_download(req, repo, path)
    headers = {
        "X-Repo-Commit": sha,
        "ETag": f'"{entry.etag}"',
        "X-Linked-Size": str(entry.size),
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Content-Disposition": content_disposition(path.rsplit("/", 1)[-1]),
    }
    if entry.lfs:
        headers["X-Linked-Etag"] = f'"{entry.sha256}"'
    blob = hub.store.blob_path(entry.sha256)
    spec = req.headers.get("Range")
    if not spec or req.method == "HEAD":
        return Response(200, headers=headers, file=blob, offset=0, length=entry.size)
    start, end = _parse_range(spec, entry.size)
    headers["Content-Range"] = f"bytes {start}-{end}/{entry.size}"
    return Response(206, headers=headers, file=blob, offset=start, length=end - start + 1)


def content_disposition(name: str) -> str:
    """The Hub's `inline; filename*=UTF-8''...; filename="...";`: the name percent-encoded, and an ASCII fallback
    (no quote, backslash or control character: '_' for each) that huggingface_hub reads."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in name)
    return f"inline; filename*=UTF-8''{quote(name, safe='')}; filename=\"{fallback}\";"


def _parse_range(spec: str, size: int) -> tuple[int, int]:
    """One `bytes=a-b`, `bytes=a-` or `bytes=-n` range → inclusive (start, end); 416 when unsatisfiable."""
    match = _RANGE.match(spec.strip())
    unsatisfiable = HubHTTPError(416, f"Range {spec} is not satisfiable", headers={"Content-Range": f"bytes */{size}"})
    if not match or match.group(1) == match.group(2) == "":
        raise unsatisfiable
    first, last = match.group(1), match.group(2)
    if first == "":
        start, end = max(0, size - int(last)), size - 1
    else:
        start = int(first)
        end = min(int(last), size - 1) if last else size - 1
    if start >= size or start > end:
        raise unsatisfiable
    return start, end
