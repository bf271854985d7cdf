"""A repo's LFS objects: `list_lfs_files` (`GET .../lfs-files`) and `permanently_delete_lfs_files`
(`POST .../lfs-files/batch`). Both need write access to the repo (the Hub keeps them in the repo's settings).

Each object is listed once: `fileOid` and `oid` its sha256 (what the client sends back to delete it), `size`,
`filename` the path and `pushedAt` the date of the first commit holding it, `ref` the first branch or PR
(`refs/heads/...`, `refs/pr/...`) whose head holds it, else null. Objects uploaded but never committed are not
listed (the blob store is shared between repos, so an uncommitted blob belongs to none).

Deleting an object the repo's revisions still hold does what the Hub does: the object goes, and
* with `rewriteHistory` (the client's default) the history is rewritten without the files holding it: those
  commits and their descendants get new ids, branches, tags and PR refs move to them, the old ids are gone
  (RevisionNotFound);
* without, the commits keep their ids, but their files holding it are gone from them too (this Hub cannot serve
  or list a file without its bytes): downloading one is 404 `EntryNotFound`.
The bytes themselves are deleted once no repo holds them (identical files of other repos keep working).
"""

from __future__ import annotations

import re

from chatvector.localhub.hub import Hub
from chatvector.localhub.paging import paginate
from chatvector.localhub.protocol import HubHTTPError, Request, Response, body_field
from chatvector.localhub.storage import delete_lfs_objects, lfs_objects

_SHA256 = re.compile(r"[0-9a-f]{64}")
MAX_DELETIONS = 1000  # objects in one batch (the client sends at most 1000)


def listing(hub: Hub, req: Request, repo_type: str, name: str) -> Response:
    repo = hub.repo_for_write(req, repo_type, name)
    holders = []  # (ref, LFS objects of its head), branches first
    for kind, prefix in (("branch", "refs/heads/"), ("pr", "refs/pr/")):
        for ref_name, sha in hub.store.refs(repo, kind).items():
            holders.append((prefix + ref_name, {f.sha256 for f in hub.store.files(sha) if f.lfs}))
    items = [{
        "fileOid": o.sha256, "oid": o.sha256, "size": o.size, "filename": o.path, "pushedAt": o.pushed_at,
        "ref": next((ref for ref, held in holders if o.sha256 in held), None),
    } for o in sorted(lfs_objects(hub.store, repo), key=lambda o: (o.pushed_at, o.sha256), reverse=True)]
    return paginate(hub, req, items)


def delete_batch(hub: Hub, req: Request, repo_type: str, name: str) -> Response:
    """Body `{"deletions": {"sha": [sha256...], "rewriteHistory": bool}}`; shas the repo does not hold are ignored."""
    body = req.body.json()
    repo = hub.repo_for_write(req, repo_type, name)
    deletions = body_field(body, "deletions", dict)
    if deletions is None:
        raise HubHTTPError(400, "Missing 'deletions' in the request body")
    shas = body_field(deletions, "sha", list, [])
    if len(shas) > MAX_DELETIONS:
        raise HubHTTPError(413, f"Payload too large: {len(shas)} objects in one batch, at most {MAX_DELETIONS}")
    if not all(isinstance(s, str) and _SHA256.fullmatch(s) for s in shas):
        raise HubHTTPError(400, "Invalid 'deletions.sha': expected an array of sha256 hex digests")
    rewrite = body_field(deletions, "rewriteHistory", bool, True)
    delete_lfs_objects(hub.store, repo, shas, rewrite)
    return Response(json={})
