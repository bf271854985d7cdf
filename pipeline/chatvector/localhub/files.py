"""`HEAD|GET /{repo}/resolve/{rev}/{path}`: file downloads, as the Hub answers them.

A file kept in git (small, not matched by an LFS rule) is answered directly, with HTTP Range support. An LFS or
Xet file is answered with a 302 to a presigned URL on the storage host (`/cdn-lfs/<sha256>?...` under the other
loopback name, see xet.routes.storage_base_url), carrying the file's metadata as the Hub's redirect does: the
client reads it from the 302 on HEAD and follows it on GET, without its token. A Xet file's answer also names its
Xet hash and where to get a read token (`X-Xet-Hash`, `Link: <...>; rel="xet-auth"`), which makes a client with
hf_xet download it through the CAS instead.

Bytes are streamed from the blob file with sendfile (the server never reads a whole blob into memory).
HEAD always reports the real size (`X-Linked-Size`): a HEAD saying 0 makes the client write an empty file.
"""

from __future__ import annotations

import re
from urllib.parse import quote

from chatvector.localhub.hub import Hub
from chatvector.localhub.protocol import HubHTTPError, Request, Response, parse_byte_range
from chatvector.localhub.xet.routes import storage_base_url

STORAGE_PREFIX = "cdn-lfs"
_SHA256 = re.compile(r"[0-9a-f]{64}")


def resolve(hub: Hub, req: Request, repo_type: str, name: str, revision: str, path: str) -> Response:
    repo = hub.repo_for_read(req, repo_type, name)
    sha = hub.resolve(repo, revision)
    entry = hub.store.file(sha, path)
    if entry is None:
        # X-Repo-Commit lets the client cache the absence (transformers probes many optional files).
        raise HubHTTPError(404, f"Entry not found: {path} at {revision}", "EntryNotFound", {"X-Repo-Commit": sha})
    hub.check_download(req, repo, path)
    filename = path.rsplit("/", 1)[-1]
    headers = {
        "X-Repo-Commit": sha,
        "ETag": f'"{entry.etag}"',
        "X-Linked-Size": str(entry.size),
        "Accept-Ranges": "bytes",
        "Content-Type": "application/octet-stream",
        "Content-Disposition": content_disposition(filename),
    }
    if not entry.lfs:
        return _serve(req, hub.store.blob_path(entry.sha256), entry.size, headers)
    headers["X-Linked-Etag"] = f'"{entry.sha256}"'
    xet_file = hub.xet.cas.file_by_sha256(entry.sha256)
    if xet_file is not None:
        token_route = f"{req.base_url}/api/{repo.type}s/{repo.name}/xet-read-token/{sha}"
        headers.update({"X-Xet-Hash": xet_file.file_hash, "X-Xet-Refresh-Route": token_route,
                        "Link": f'<{token_route}>; rel="xet-auth"'})
    headers["Location"] = hub.xet.auth.sign(storage_base_url(req), f"/{STORAGE_PREFIX}/{entry.sha256}",
                                            filename=filename)
    return Response(302, headers=headers, body=b"")


def storage_download(hub: Hub, req: Request, sha256: str) -> Response:
    """`GET|HEAD /cdn-lfs/<sha256>?...`: the storage host's answer to a presigned URL, with HTTP Range support."""
    hub.xet.auth.check_signed(req)
    if not _SHA256.fullmatch(sha256) or not hub.store.has_blob(sha256):
        raise HubHTTPError(404, "Not found: no such object")
    size = hub.store.blob_path(sha256).stat().st_size
    headers = {"ETag": f'"{sha256}"', "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream",
               "Content-Disposition": content_disposition(req.param("filename") or sha256)}
    return _serve(req, hub.store.blob_path(sha256), size, headers)


def _serve(req: Request, blob, size: int, headers: dict[str, str]) -> Response:
    spec = req.headers.get("Range")
    if not spec or req.method == "HEAD":
        return Response(200, headers=headers, file=blob, offset=0, length=size)
    start, end = parse_byte_range(spec, size)
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    return Response(206, headers=headers, file=blob, offset=start, length=end - start + 1)


def content_disposition(name: str) -> str:
    """The Hub's `inline; filename*=UTF-8''...; filename="...";`: the name percent-encoded, and an ASCII fallback
    (no quote, backslash or control character: '_' for each) that huggingface_hub reads."""
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\' else "_" for c in name)
    return f"inline; filename*=UTF-8''{quote(name, safe='')}; filename=\"{fallback}\";"
