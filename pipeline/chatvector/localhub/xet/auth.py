"""Who may call the CAS: the short-lived Xet tokens the Hub hands out (`xet-read-token`, `xet-write-token`) and
the presigned URLs the CAS hands out for xorb fetches and the Hub for file downloads (an HMAC of the path and its
expiry with the server's own key: the URL is the credential, as a storage host's signed URL is)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from chatvector.localhub.protocol import HubHTTPError, Request

TOKEN_TTL = 3600  # seconds a Xet token is valid, as on the Hub (the client refreshes it before expiry)
URL_TTL = 3600  # seconds a presigned URL is valid
MAX_TOKENS = 10_000  # tokens kept at most (the oldest go first)
READ, WRITE = "read", "write"


@dataclass(frozen=True)
class XetToken:
    user: str | None
    repo_id: int
    scope: str  # read | write
    expires: int  # unix seconds


class XetAuth:
    def __init__(self, clock=time.time):
        self._tokens: dict[str, XetToken] = {}
        self._key = secrets.token_bytes(32)
        self._clock = clock
        self._lock = threading.Lock()

    def issue(self, user: str | None, repo_id: int, scope: str) -> tuple[str, XetToken]:
        secret = "xet_" + secrets.token_urlsafe(32)
        token = XetToken(user, repo_id, scope, int(self._clock()) + TOKEN_TTL)
        with self._lock:
            self._tokens[secret] = token
            for old in list(self._tokens)[:max(0, len(self._tokens) - MAX_TOKENS)]:
                del self._tokens[old]
        return secret, token

    def check(self, req: Request, scope: str) -> XetToken:
        """The request's Xet token, valid and of SCOPE (a write token reads too); 401 or 403 otherwise."""
        scheme, _, secret = (req.headers.get("Authorization") or "").partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise HubHTTPError(401, "Unauthorized: a Xet access token is required (Authorization: Bearer ...)")
        with self._lock:
            token = self._tokens.get(secret.strip())
        if token is None:
            raise HubHTTPError(401, "Unauthorized: invalid Xet access token")
        if token.expires <= self._clock():
            raise HubHTTPError(401, "Unauthorized: the Xet access token has expired; refresh it")
        if scope == WRITE and token.scope != WRITE:
            raise HubHTTPError(403, "Forbidden: this Xet token has read scope; uploads need a write token")
        return token

    def expire_all(self) -> None:
        """Make every issued token expired (tests: a client must refresh)."""
        with self._lock:
            self._tokens = {s: XetToken(t.user, t.repo_id, t.scope, 0) for s, t in self._tokens.items()}

    # -- presigned URLs --------------------------------------------------------------------------------------
    def _signature(self, path: str, expires: int) -> str:
        return hmac.new(self._key, f"{path}\n{expires}".encode(), hashlib.sha256).hexdigest()

    def sign(self, base_url: str, path: str, **extra: str) -> str:
        expires = int(self._clock()) + URL_TTL
        query = urlencode({**extra, "X-Expires": expires, "X-Signature": self._signature(path, expires)})
        return f"{base_url}{path}?{query}"

    def check_signed(self, req: Request) -> None:
        path = "/" + "/".join(req.segments)
        expires, signature = req.param("X-Expires") or "", req.param("X-Signature") or ""
        if not expires.isdigit() or not hmac.compare_digest(signature, self._signature(path, int(expires))):
            raise HubHTTPError(403, "Forbidden: the URL's signature is missing or wrong")
        if int(expires) <= self._clock():
            raise HubHTTPError(403, "Forbidden: the presigned URL has expired")
