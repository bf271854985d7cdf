"""The Xet endpoints: the Hub's token routes, and the CAS under `/xet-cas` (its own base URL, handed out as
`casUrl`, on the storage host: see `storage_base_url`).

Errors are the CAS's: 400 for a malformed or mismatching xorb or shard (nothing stored), 401 for a missing,
unknown or expired Xet token, 403 for a read token on an upload, 404 for an unknown file or xorb, 416 for a range
that starts past a file's end.
"""

from __future__ import annotations

import json
from urllib.parse import urlsplit

from chatvector.localhub.protocol import HubHTTPError, Request, Response, parse_byte_range
from chatvector.localhub.xet import hashes, reconstruction, shard, xorb
from chatvector.localhub.xet.auth import READ, WRITE
from chatvector.localhub.xet.xorb import XetFormatError

CAS_PREFIX = "xet-cas"
_SWAPPED_HOSTS = {"127.0.0.1": "localhost", "localhost": "127.0.0.1"}


def storage_base_url(req: Request) -> str:
    """The base URL of this server's storage host: the same server under another loopback name (127.0.0.1 ↔
    localhost), so that, as with the Hub's storage hosts, it is another origin: the client follows a redirect
    there without its Hub token and does not follow one on HEAD. Other names are kept as they are."""
    parts = urlsplit(req.base_url)
    host = _SWAPPED_HOSTS.get(parts.hostname or "", parts.hostname or "")
    return f"{parts.scheme}://{host}:{parts.port}" if parts.port else f"{parts.scheme}://{host}"


def _hash_param(text: str, what: str) -> str:
    try:
        return hashes.hex_of(hashes.hash_of_hex(text))  # normalized to lowercase
    except ValueError:
        raise HubHTTPError(400, f"Bad request: invalid {what} {text[:80]!r}: expected 64 hex digits") from None


def _prefix(prefix: str, *allowed: str) -> None:
    if prefix not in allowed:
        raise HubHTTPError(400, f"Bad request: invalid prefix {prefix!r} (expected {' or '.join(map(repr, allowed))})")


# -- the Hub's token routes -------------------------------------------------------------------------------
def token(hub, req: Request, repo_type: str, name: str, rest: str, scope: str) -> Response:
    """`GET /api/{type}s/{repo}/xet-{read|write}-token/{revision}`: a token for the CAS, scoped to the repo."""
    if scope == READ:
        repo = hub.repo_for_read(req, repo_type, name)
    elif req.flag("create_pr"):  # a pull request may be opened by anyone who can see the repo, as on the Hub
        repo = hub.repo_for_contribution(req, repo_type, name)
    else:
        repo = hub.repo_for_write(req, repo_type, name)
    if scope == READ and rest:
        hub.resolve(repo, rest)  # a missing revision is RevisionNotFound, as on the Hub
    secret, issued = hub.xet.auth.issue(req.user.name if req.user else None, repo.id, scope)
    cas_url = f"{storage_base_url(req)}/{CAS_PREFIX}"
    return Response(json={"accessToken": secret, "exp": issued.expires, "casUrl": cas_url}, headers={
        "X-Xet-Cas-Url": cas_url, "X-Xet-Access-Token": secret, "X-Xet-Token-Expiration": str(issued.expires)})


# -- downloads -------------------------------------------------------------------------------------------
def _byte_range(req: Request, size: int) -> tuple[int, int]:
    """[start, end) of the request's Range (the whole file without one); 416 past the end."""
    spec = (req.headers.get("Range") or "").strip()
    if not spec:
        if size == 0:
            raise HubHTTPError(416, "Range Not Satisfiable: the file is empty")
        return 0, size
    start, last = parse_byte_range(spec, size)
    return start, last + 1


def reconstruct(hub, req: Request, file_id: str, version: str) -> Response:
    """`GET /v1|v2/reconstructions/{file}`: the terms and the presigned fetch URLs for a byte range of a file."""
    hub.xet.auth.check(req, READ)
    name = _hash_param(file_id, "file hash")
    f = hub.xet.cas.file(name)
    if f is None:
        raise HubHTTPError(404, f"Not found: no file {name} in the CAS")
    start, end = _byte_range(req, f.size)
    offset, found = reconstruction.pieces(hub.xet.cas, f, start, end)

    def url_for(xorb_name: str) -> str:  # (the CAS is on the storage host already: its fetches stay there)
        return hub.xet.auth.sign(req.base_url, f"/{CAS_PREFIX}/fetch/{xorb_name}")

    build = reconstruction.v2 if version == "v2" else reconstruction.v1
    return Response(json=build(offset, found, url_for))


def fetch(hub, req: Request, xorb_id: str) -> Response:
    """`GET /xet-cas/fetch/{xorb}` with a presigned query: a byte range of a stored xorb, as a storage host
    serves it (Range required: the reconstruction names the range)."""
    hub.xet.auth.check_signed(req)
    name = _hash_param(xorb_id, "xorb hash")
    path = hub.xet.cas.xorb_path(name)
    index = hub.xet.cas.xorb_index(name)
    if index is None or not path.exists():
        raise HubHTTPError(404, f"Not found: no xorb {name}")
    start, end = _byte_range(req, index.data_end)
    headers = {"Content-Type": "application/octet-stream", "Accept-Ranges": "bytes"}
    if not req.headers.get("Range"):
        return Response(200, headers=headers, file=path, offset=0, length=index.data_end)
    headers["Content-Range"] = f"bytes {start}-{end - 1}/{index.data_end}"
    return Response(206, headers=headers, file=path, offset=start, length=end - start)


def chunk_dedupe(hub, req: Request, prefix: str, chunk: str) -> Response:
    """`GET /v1/chunks/{prefix}/{hash}`: global deduplication. This CAS keeps no global chunk index, so every
    chunk is unknown: the documented 404 (the client then dedupes against its own uploads only)."""
    hub.xet.auth.check(req, READ)
    _prefix(prefix, "default", "default-merkledb")  # (the spec says the latter, hf_xet sends the former)
    _hash_param(chunk, "chunk hash")
    raise HubHTTPError(404, "Not found: chunk not tracked by global deduplication")


def file_size(hub, req: Request, file_id: str) -> Response:
    """`HEAD /v1/files/{file}`: the file's size, or 404."""
    hub.xet.auth.check(req, READ)
    f = hub.xet.cas.file(_hash_param(file_id, "file hash"))
    if f is None:
        raise HubHTTPError(404, "Not found: no such file in the CAS")
    return Response(200, headers={"X-Xet-File-Size": str(f.size)}, body=b"")


# -- uploads ---------------------------------------------------------------------------------------------
def _body(req: Request, cap: int, what: str) -> bytes:
    return req.body.read_all(cap, what)


def upload_xorb(hub, req: Request, prefix: str, xorb_id: str) -> Response:
    """`POST /v1/xorbs/default/{hash}`: a serialized xorb, stored when its chunks hash to its name."""
    hub.xet.auth.check(req, WRITE)
    _prefix(prefix, "default")
    name = _hash_param(xorb_id, "xorb hash")
    data = _body(req, xorb.MAX_XORB_BYTES + (1 << 20), "xorb")  # (+ the client's footer)
    try:
        inserted = hub.xet.cas.put_xorb(name, data)
    except XetFormatError as err:
        raise HubHTTPError(400, f"Bad request: xorb {name} refused: {err}") from None
    return Response(json={"was_inserted": inserted})


def head_xorb(hub, req: Request, prefix: str, xorb_id: str) -> Response:
    hub.xet.auth.check(req, READ)
    _prefix(prefix, "default")
    if not hub.xet.cas.has_xorb(_hash_param(xorb_id, "xorb hash")):
        raise HubHTTPError(404, "Not found: no such xorb")
    return Response(200, body=b"")


def xorb_grant(hub, req: Request, prefix: str, xorb_id: str) -> Response:
    """`POST /v1/xorb-grants/...`: upload grants (direct-to-storage uploads) are not offered by this CAS: 404
    sends the client to the direct xorb upload, `POST /v1/xorbs/...`."""
    hub.xet.auth.check(req, WRITE)
    _body(req, 1 << 16, "grant request")
    raise HubHTTPError(404, "Not found: upload grants are not available; upload through /v1/xorbs")


def _register(hub, data: bytes) -> int:
    try:
        return hub.xet.cas.register_shard(data)
    except XetFormatError as err:
        raise HubHTTPError(400, f"Bad request: shard refused: {err}") from None


def upload_shard(hub, req: Request) -> Response:
    """`POST /v1/shards`: file reconstructions, checked against the stored xorbs; `result` 1 when registered."""
    hub.xet.auth.check(req, WRITE)
    new = _register(hub, _body(req, shard.MAX_SHARD_BYTES, "shard"))
    return Response(json={"result": 1 if new else 0})


def upload_shard_v2(hub, req: Request) -> Response:
    """`POST /v2/shards`: the same, answered as the CAS's progress stream (NDJSON frames ending in `result`, or in
    an `error` frame when the shard is refused: the status is 200 once the stream starts, as in production)."""
    hub.xet.auth.check(req, WRITE)
    data = _body(req, shard.MAX_SHARD_BYTES, "shard")
    frames: list[dict] = [{"type": "validating", "verified": 0, "total": 1}]
    try:
        hub.xet.cas.register_shard(data)
    except XetFormatError as err:
        frames.append({"type": "error", "message": f"shard refused: {err}", "retryable": False})
    else:
        frames += [{"type": "validating", "verified": 1, "total": 1},
                   {"type": "committing", "stage": "uploading"}, {"type": "committing", "stage": "syncing"},
                   {"type": "result"}]
    body = b"".join(json.dumps(f).encode() + b"\n" for f in frames)
    return Response(200, body=body, headers={"Content-Type": "application/x-ndjson"})


def telemetry(hub, req: Request) -> Response:
    _body(req, 1 << 20, "telemetry")
    return Response(json={})
