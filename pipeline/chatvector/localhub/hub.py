"""What every endpoint shares: the store, the settings, the pending LFS uploads, and who may do what.

Access follows the Hub's rules:

* a user's own namespace is theirs; an organization's members have a role there: `admin` and `write` may
  create and write to every repo, `contributor` may create repos and write to the ones it created, `read`
  may only read;
* a private repo is visible only to its namespace's user and its organization's members (any role); to
  everyone else it does not exist (404 `RepoNotFound`, as on the Hub);
* a gated repo's files are downloadable by the same people; others get `GatedRepo` for all but its README.md;
* repo ids and namespaces are found ignoring case (`Alice/Repo` is `alice/repo`), answered as stored;
* a fine-grained token also needs `repo.write` (writes) or `repo.content.read`/`repo.write` (reads of private
  and gated repos) scoped to the repo, its user namespace or its organization.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from urllib.parse import quote, unquote, urlencode

from chatvector.localhub.protocol import (
    CONTENT_READ,
    REPO_WRITE,
    HubHTTPError,
    Org,
    Request,
    Token,
    repo_not_found,
    require_write,
)
from chatvector.localhub.storage import Repo, Store, StoreError, renamed_repo
from chatvector.localhub.xet.auth import XetAuth
from chatvector.localhub.xet.cas import Cas

PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
PREFIX = {"dataset": "datasets/", "space": "spaces/", "kernel": "kernels/", "model": ""}
WEB_TYPES = {"datasets": "dataset", "spaces": "space", "kernels": "kernel"}  # URL prefixes of non-model repos
DISCUSSION_WRITE = "discussion.write"  # a fine-grained permission: open and write discussions and PRs
ALWAYS_DOWNLOADABLE = ("README.md",)  # a gated repo still shows its card, and nothing else (as the Hub)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}")


@dataclass
class Upload:
    """A pending LFS upload; its URL token is the only credential the client sends with the bytes."""

    repo_id: int
    oid: str
    size: int
    chunk_size: int | None
    parts: dict[int, Path] = field(default_factory=dict)

    def discard(self) -> None:
        """Delete the parts received so far."""
        for path in list(self.parts.values()):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
        self.parts.clear()


class Uploads:
    """The pending LFS uploads by URL token. An upload expires TTL seconds after its last use (the batch call
    that issued it, or a part received), and at most LIMIT are pending: issuing one more evicts the least
    recently used. An expired or evicted upload's parts are deleted and its URL answers 404."""

    def __init__(self, ttl: float = 3600.0, limit: int = 10_000, clock=time.monotonic):
        if not ttl > 0 or not isinstance(limit, int) or limit < 1:
            raise ValueError(f"LFS uploads need a ttl > 0 seconds and a limit >= 1, not ttl={ttl!r} limit={limit!r}")
        self.ttl, self.limit, self._clock = ttl, limit, clock
        self._items: OrderedDict[str, tuple[Upload, float]] = OrderedDict()  # least recently used first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __setitem__(self, token: str, upload: Upload) -> None:
        with self._lock:
            gone = self._expire()
            self._items[token] = (upload, self._clock())
            self._items.move_to_end(token)
            while len(self._items) > self.limit:
                gone.append(self._items.popitem(last=False)[1][0])
        for old in gone:
            old.discard()

    def get(self, token: str) -> Upload | None:
        """The pending upload of TOKEN (its clock restarts), None when unknown, expired or evicted."""
        with self._lock:
            gone = self._expire()
            item = self._items.get(token)
            if item is not None:
                self._items[token] = (item[0], self._clock())
                self._items.move_to_end(token)
        for old in gone:
            old.discard()
        return item[0] if item is not None else None

    def pop(self, token: str, default: Upload | None = None) -> Upload | None:
        with self._lock:
            item = self._items.pop(token, None)
        return item[0] if item is not None else default

    def _expire(self) -> list[Upload]:
        """Drop the uploads unused for TTL seconds (the lock is held); the caller discards them."""
        deadline = self._clock() - self.ttl
        gone = []
        while self._items:
            token, (upload, used) = next(iter(self._items.items()))
            if used > deadline:
                break
            del self._items[token]
            gone.append(upload)
        return gone


@dataclass(frozen=True)
class XetState:
    """The CAS beside the Hub: its issued tokens and presigned URLs, and what it stores."""

    auth: XetAuth
    cas: Cas


@dataclass
class HubConfig:
    lfs_threshold: int = 10 * 1024 * 1024
    multipart_chunk_size: int = 64 * 1024 * 1024
    page_size: int = 1000
    upload_ttl: float = 3600.0  # seconds an LFS upload URL stays valid after its last use
    max_uploads: int = 10_000  # pending LFS uploads kept at most (the least recently used go first)


class Hub:
    """Everything an endpoint needs: the store, the settings, the organizations and the pending LFS uploads."""

    def __init__(self, store: Store, config: HubConfig, orgs: Iterable[Org] = ()):
        self.store, self.config = store, config
        self.orgs: dict[str, Org] = {}
        for org in orgs:
            if org.name in self.orgs:
                raise ValueError(f"organization {org.name} is given twice")
            self.orgs[org.name] = org
        self.uploads = Uploads(config.upload_ttl, config.max_uploads)
        self.xet = XetState(XetAuth(), Cas(store))

    # -- who is who ----------------------------------------------------------------------------------------
    def role(self, user: str, namespace: str) -> str | None:
        """"owner" in the user's own namespace, the member's role in an organization, else None."""
        org = self.orgs.get(namespace)
        if org is not None:
            return org.members.get(user)
        return "owner" if user == namespace else None

    def valid_namespace(self, namespace: str, user: str) -> bool:
        """A well-formed namespace, or one the operator named (the user's own, an organization) even if it is not:
        the Hub's CI user `__DUMMY_HUB_USER__` starts with '_', which new names may not."""
        known = namespace.casefold() == user.casefold() or namespace.casefold() in (o.casefold() for o in self.orgs)
        return known or valid_name(namespace)

    def canonical_namespace(self, namespace: str, user: str) -> str:
        """NAMESPACE as the Hub spells it: namespaces are found ignoring case, like repo ids (the user's own, or an
        organization's name); an unknown one as given."""
        if namespace.casefold() == user.casefold():
            return user
        return next((org for org in self.orgs if org.casefold() == namespace.casefold()), namespace)

    def orgs_of(self, user: str) -> list[tuple[Org, str]]:
        return [(org, org.members[user]) for org in self.orgs.values() if user in org.members]

    # -- reads ---------------------------------------------------------------------------------------------
    def can_see(self, token: Token | None, repo: Repo) -> bool:
        if not repo.private:
            return True
        return (token is not None and self.role(token.name, repo.namespace) is not None
                and token.grants_read(repo.type, repo.name))

    def repo_for_read(self, req: Request, repo_type: str, name: str) -> Repo:
        repo = self.store.get_repo(repo_type, name)
        if repo is None and req.method in ("GET", "HEAD"):
            moved = renamed_repo(self.store, repo_type, name)
            if moved is not None and self.can_see(req.user, moved):
                raise _moved(req, name, moved.name)
        if repo is None or not self.can_see(req.user, repo):
            raise repo_not_found(name)
        return repo

    def check_download(self, req: Request, repo: Repo, path: str) -> None:
        """A gated repo's files go to its namespace's user and organization members only."""
        if not repo.gated or path in ALWAYS_DOWNLOADABLE:
            return
        token = req.user
        if token is not None and self.role(token.name, repo.namespace) is not None and (
            token.fine_grained is None or token.fine_grained.can_read_gated_repos
            or token.fine_grained.allows((CONTENT_READ, REPO_WRITE), repo.type, repo.name)
        ):
            return
        raise HubHTTPError(
            403, f"Access to {repo.type} {repo.name} is restricted and you are not in the authorized list.", "GatedRepo"
        )

    # -- writes --------------------------------------------------------------------------------------------
    def repo_for_write(self, req: Request, repo_type: str, name: str) -> Repo:
        """The repo, when the request's token may write to it: 404 if it cannot see it, 401/403 otherwise."""
        repo = self.repo_for_read(req, repo_type, name)
        token = require_write(req)
        reason = self._refusal(token, repo.type, repo.namespace, repo)
        if reason:
            raise HubHTTPError(403, f"You don't have the rights to write to {repo.name}: {reason}")
        return repo

    def repo_for_contribution(self, req: Request, repo_type: str, name: str) -> Repo:
        """The repo, when the request's token may write to it or propose a change (open a discussion or pull
        request, upload the LFS objects of one): on the Hub anyone with a write token who can see a repo may. A
        fine-grained token needs `discussion.write` (on the repo or globally) or `repo.write` on the repo."""
        repo = self.repo_for_read(req, repo_type, name)
        token = require_write(req)
        fine = token.fine_grained
        if fine is not None and not (fine.allows((DISCUSSION_WRITE, REPO_WRITE), repo.type, repo.name)
                                     or DISCUSSION_WRITE in fine.global_permissions):
            raise HubHTTPError(403, f"The fine-grained token has no {DISCUSSION_WRITE} permission on {repo.name}")
        return repo

    def check_create(self, req: Request, repo_type: str, namespace: str) -> Token:
        token = require_write(req)
        reason = self._refusal(token, repo_type, namespace, None)
        if reason:
            raise HubHTTPError(
                403, f'You don\'t have the rights to create a {repo_type} under the namespace "{namespace}": {reason}'
            )
        return token

    def _refusal(self, token: Token, repo_type: str, namespace: str, repo: Repo | None) -> str | None:
        """Why TOKEN may not create a repo in NAMESPACE (REPO None) or write to REPO; None when it may."""
        user, role = token.name, self.role(token.name, namespace)
        if role is None:
            if namespace in self.orgs:
                return f"{user} is not a member of the organization {namespace}"
            return f"{namespace} is neither {user}'s namespace nor an organization {user} belongs to"
        if role == "read":
            return f"{user} has the read role in {namespace}, which cannot create or write to repos"
        if role == "contributor" and repo is not None and repo.creator != user:
            return f"{user} is a contributor in {namespace} and may write only to the repos {user} created"
        target = namespace if repo is None else repo.name
        if not token.grants_write(None if repo is None else repo.type, target):
            return f"the fine-grained token has no {REPO_WRITE} permission on {target}"
        return None

    # -- helpers -------------------------------------------------------------------------------------------
    def resolve(self, repo: Repo, revision: str) -> str:
        try:
            return self.store.resolve(repo, revision)
        except StoreError as err:
            raise HubHTTPError(err.status, err.message, err.code) from None


def _moved(req: Request, old: str, new: str) -> HubHTTPError:
    """307 to the same URL with the repo's new id in place of OLD: the Hub redirects a moved repo's old id (reads
    only here: a write to the old id stays RepoNotFound)."""
    segments, old_parts = list(req.segments), old.casefold().split("/")
    for i in range(len(segments) - len(old_parts) + 1):
        if [unquote(x).casefold() for x in segments[i:i + len(old_parts)]] == old_parts:
            segments[i:i + len(old_parts)] = [quote(x, safe="") for x in new.split("/")]
            break
    query = urlencode(req.query, doseq=True)
    location = f"{req.base_url}/{'/'.join(segments)}" + (f"?{query}" if query else "")
    return HubHTTPError(307, f"Repository moved to {new}", headers={"Location": location})


def valid_name(name: str) -> bool:
    return bool(_NAME.fullmatch(name or "")) and ".." not in name and not name.endswith(".git")


def new_upload_token() -> str:
    return secrets.token_urlsafe(24)
