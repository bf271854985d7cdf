"""`GET /api/{type}s/{repo}/auth-check[/write]` (huggingface_hub's `auth_check`): may this token read (or write)
the repo's files?

200 `{}` when it may. A repo it cannot see is 404 `RepoNotFound` (RepositoryNotFoundError), a gated repo whose
files it may not download 403 `GatedRepo` (GatedRepoError), a write it may not do 401/403 (HfHubHTTPError).
"""

from __future__ import annotations

from chatvector.localhub.hub import Hub
from chatvector.localhub.protocol import Request, Response

_ANY_FILE = "\0"  # a path no repo holds: never one of the files a gated repo shows to all


def auth_check(hub: Hub, req: Request, repo_type: str, name: str) -> Response:
    hub.check_download(req, hub.repo_for_read(req, repo_type, name), _ANY_FILE)
    return Response(json={})


def auth_check_write(hub: Hub, req: Request, repo_type: str, name: str) -> Response:
    hub.repo_for_write(req, repo_type, name)
    return Response(json={})
