"""Git LFS uploads: the batch endpoint, basic and multipart transfers, and verify.

The client sends the bytes without its token (huggingface_hub drops auth on LFS PUTs), so each upload URL
carries an unguessable one-time token issued by the batch call to a write-token holder who may write to
the repo or open a pull request on it (hub.repo_for_contribution). Tokens expire an hour
(HubConfig.upload_ttl) after their last use and at most HubConfig.max_uploads are pending (hub.Uploads).

Bodies are held to what the batch call declared: a basic PUT to the object's size, a part to the chunk size (413
beyond, without reading the rest); JSON bodies to protocol.MAX_JSON_BODY.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import re

from chatvector.localhub.hub import PREFIX, Hub, Upload, new_upload_token
from chatvector.localhub.protocol import HubHTTPError, Request, Response, body_field
from chatvector.localhub.storage import StoreError

_OID = re.compile(r"^[0-9a-f]{64}$")
_PART = re.compile(r"[0-9]{1,9}")
MAX_BATCH_OBJECTS = 1000  # objects in one batch call (huggingface_hub sends at most 256)


def batch(hub: Hub, req: Request, repo_type: str, name: str) -> Response:
    body = req.body.json()
    repo = hub.repo_for_contribution(req, repo_type, name)  # a pull request's objects too (see commit.py)
    if body.get("operation") != "upload":
        raise HubHTTPError(400, "Only the upload operation is supported")
    wanted = body_field(body, "objects", list, [])
    if len(wanted) > MAX_BATCH_OBJECTS:
        raise HubHTTPError(413, f"Payload too large: {len(wanted)} objects in one batch, at most {MAX_BATCH_OBJECTS}")
    if not all(isinstance(obj, dict) for obj in wanted):
        raise HubHTTPError(400, "Invalid 'objects' in the request body: each must be {\"oid\": ..., \"size\": ...}")
    objects = []
    for obj in wanted:
        oid, size = obj.get("oid"), obj.get("size")
        if (not isinstance(oid, str) or not _OID.fullmatch(oid) or not isinstance(size, int) or isinstance(size, bool)
                or size < 0):
            objects.append({"oid": str(oid)[:100], "size": size if isinstance(size, int) else 0,
                            "error": {"code": 422, "message": "Invalid oid or size"}})
            continue
        if hub.store.has_blob(oid, size):
            objects.append({"oid": oid, "size": size})  # no actions: already stored
            continue
        token = new_upload_token()
        chunk = hub.config.multipart_chunk_size
        multipart = size > chunk
        hub.uploads[token] = Upload(repo.id, oid, size, chunk if multipart else None)
        href = f"{req.base_url}/lfs-upload/{token}"
        upload: dict = {"href": href}
        if multipart:
            upload = {"href": f"{href}/complete", "header": {"chunk_size": str(chunk)}}
            for n in range(1, math.ceil(size / chunk) + 1):
                upload["header"][str(n)] = f"{href}/part/{n}"
        verify = {"href": f"{req.base_url}/{PREFIX[repo.type]}{repo.name}.git/info/lfs/objects/verify"}
        objects.append({"oid": oid, "size": size, "authenticated": True, "actions": {"upload": upload, "verify": verify}})
    return Response(json={"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
                    headers={"Content-Type": "application/vnd.git-lfs+json"})


def verify(hub: Hub, req: Request, repo_type: str, name: str) -> Response:
    body = req.body.json()
    hub.repo_for_contribution(req, repo_type, name)
    if not hub.store.has_blob(str(body.get("oid")), body.get("size")):
        raise HubHTTPError(404, f"LFS object {body.get('oid')} of size {body.get('size')} was not uploaded")
    return Response(json={"message": "Object verified"})


def _pending(hub: Hub, token: str) -> Upload:
    upload = hub.uploads.get(token)
    if upload is None:
        raise HubHTTPError(404, "Unknown or expired upload URL")
    return upload


def upload_put(hub: Hub, req: Request, token: str) -> Response:
    """`PUT /lfs-upload/{token}`: the whole object in one request (basic transfer)."""
    upload = _pending(hub, token)
    if upload.chunk_size is not None:
        raise HubHTTPError(404, "Unknown upload action: this upload is multipart")
    req.body.limit(upload.size, f"LFS object {upload.oid}")
    return _store(hub, token, upload, req.body.iter_chunks())


def upload_part(hub: Hub, req: Request, token: str, number: str) -> Response:
    """`PUT /lfs-upload/{token}/part/{n}`: one part of a multipart upload."""
    upload = _pending(hub, token)
    if not upload.chunk_size:
        raise HubHTTPError(404, "Unknown upload action: this upload is not multipart")
    parts = math.ceil(upload.size / upload.chunk_size)
    if not _PART.fullmatch(number) or not 1 <= int(number) <= parts:
        raise HubHTTPError(400, f"Invalid part number {number!r}: must be an integer from 1 to {parts}")
    req.body.limit(upload.chunk_size, f"part {number} of LFS object {upload.oid}")
    return _put_part(hub, token, upload, int(number), req)


def upload_complete(hub: Hub, req: Request, token: str) -> Response:
    """`POST /lfs-upload/{token}/complete`: assemble the parts into the blob."""
    return _complete(hub, token, _pending(hub, token), req.body.json())


def _store(hub: Hub, token: str, upload: Upload, chunks) -> Response:
    try:
        hub.store.put_stream(chunks, expected_size=upload.size, expected_sha256=upload.oid)
    except StoreError as err:
        raise HubHTTPError(err.status, f"LFS upload of {upload.oid} refused: {err.message}") from None
    hub.uploads.pop(token, None)
    return Response(json={})


def _put_part(hub: Hub, token: str, upload: Upload, number: int, req: Request) -> Response:
    part = hub.store.tmp_dir / f"part-{upload.oid}-{number}-{os.getpid()}-{id(upload)}"
    md5 = hashlib.md5()
    try:
        with open(part, "wb") as fh:
            for chunk in req.body.iter_chunks():
                md5.update(chunk)
                fh.write(chunk)
    except BaseException:  # a part cut short is no part (a retry of it writes the same file)
        upload.parts.pop(number, None)
        with contextlib.suppress(FileNotFoundError):
            part.unlink()
        raise
    upload.parts[number] = part
    if hub.uploads.get(token) is not upload:  # expired or evicted while the part came in
        upload.discard()
        raise HubHTTPError(404, "Unknown or expired upload URL")
    return Response(json={}, headers={"ETag": f'"{md5.hexdigest()}"'})


def _complete(hub: Hub, token: str, upload: Upload, body: dict) -> Response:
    listed = body_field(body, "parts", list, [])
    if not all(isinstance(p, dict) and isinstance(p.get("partNumber"), (int, str)) and not isinstance(
            p.get("partNumber"), bool) and _PART.fullmatch(str(p["partNumber"])) for p in listed):
        raise HubHTTPError(400, "Invalid 'parts' in the request body: each part needs a positive integer partNumber")
    numbers = sorted(int(p["partNumber"]) for p in listed)
    expected = math.ceil(upload.size / (upload.chunk_size or 1))
    if numbers != list(range(1, expected + 1)) or any(n not in upload.parts for n in numbers):
        raise HubHTTPError(400, f"Multipart upload of {upload.oid} is missing parts")

    def chunks():
        for n in numbers:
            with open(upload.parts[n], "rb") as fh:
                yield from iter(lambda: fh.read(1 << 20), b"")

    try:
        return _store(hub, token, upload, chunks())
    finally:
        for path in upload.parts.values():
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
