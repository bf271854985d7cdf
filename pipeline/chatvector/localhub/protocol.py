"""HTTP plumbing shared by the local Hub's endpoints: requests, responses, errors, auth.

The Hub's wire conventions live here once: errors carry `X-Error-Code` and `X-Error-Message` headers plus a
JSON body `{"error": ...}` (HEAD responses have no body, so the headers are all a client sees).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote

READ, WRITE = "read", "write"


class HubHTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}


def repo_not_found(name: str) -> HubHTTPError:
    return HubHTTPError(404, f"Repository Not Found for url: {name}.", "RepoNotFound")


@dataclass(frozen=True)
class Token:
    """A token the server accepts: SECRET authenticates user NAME with read or write scope."""

    name: str
    secret: str
    scope: str

    def __repr__(self) -> str:  # never show the secret, even in a debugger or a traceback
        return f"Token(name={self.name!r}, scope={self.scope!r})"


def parse_token_spec(spec: str) -> Token:
    """`NAME=SECRET:read|write` → Token. The message never repeats the secret."""
    name, sep, rest = spec.partition("=")
    secret, sep2, scope = rest.rpartition(":")
    if not sep or not sep2 or not name or not secret or scope not in (READ, WRITE):
        raise ValueError("--token must look like NAME=SECRET:read or NAME=SECRET:write")
    return Token(name, secret, scope)


class BodyReader:
    """Reads exactly the request body (Content-Length or chunked), so keep-alive connections stay in sync."""

    def __init__(self, rfile, headers):
        self._rfile = rfile
        self._chunked = "chunked" in (headers.get("Transfer-Encoding") or "").lower()
        self._remaining = int(headers.get("Content-Length") or 0)
        self._chunk_left = 0
        self._done = not self._chunked and self._remaining == 0

    def read(self, n: int = -1) -> bytes:
        if self._done:
            return b""
        if self._chunked:
            return self._read_chunked(n)
        want = self._remaining if n < 0 else min(n, self._remaining)
        data = self._rfile.read(want)
        self._remaining -= len(data)
        if not data or self._remaining == 0:
            self._done = True
        return data

    def _read_chunked(self, n: int) -> bytes:
        out = bytearray()
        while not self._done and (n < 0 or len(out) < n):
            if self._chunk_left == 0:
                size_line = self._rfile.readline(65537).split(b";", 1)[0].strip()
                self._chunk_left = int(size_line or b"0", 16)
                if self._chunk_left == 0:
                    while self._rfile.readline(65537) not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    self._done = True
                    break
            take = self._chunk_left if n < 0 else min(self._chunk_left, n - len(out))
            data = self._rfile.read(take)
            out += data
            self._chunk_left -= len(data)
            if self._chunk_left == 0:
                self._rfile.readline(3)  # CRLF after the chunk
        return bytes(out)

    def iter_chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        while chunk := self.read(size):
            yield chunk

    def iter_lines(self) -> Iterator[bytes]:
        """Lines of the body; a line may be large (inline base64 content) but never exceeds the body."""
        buf = b""
        for chunk in self.iter_chunks(4 << 20):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            yield from lines
        if buf:
            yield buf

    def json(self) -> Any:
        raw = self.read()
        if not raw:
            return {}
        try:
            return json.loads(raw)
        except ValueError as err:
            raise HubHTTPError(400, f"Invalid JSON body: {err}") from None

    def drain(self) -> None:
        for _ in self.iter_chunks():
            pass


@dataclass
class Request:
    method: str
    segments: list[str]  # raw path segments, still percent-encoded
    query: dict[str, list[str]]
    headers: Any
    body: BodyReader
    user: Token | None
    base_url: str  # http://host:port as the client addressed us, for absolute links

    def seg(self, i: int) -> str:
        return unquote(self.segments[i])

    def rest(self, i: int) -> str:
        """Segments i.. joined by '/', each unquoted (a revision or folder may carry %2F)."""
        return "/".join(unquote(s) for s in self.segments[i:])

    def flag(self, name: str) -> bool:
        return (self.query.get(name, [""])[-1] or "").lower() in ("1", "true")

    def param(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, [default])[-1]


@dataclass
class Response:
    status: int = 200
    json: Any = None
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    file: Path | None = None  # streamed with sendfile
    offset: int = 0
    length: int = 0

    @classmethod
    def of_error(cls, err: HubHTTPError) -> "Response":
        headers = {"X-Error-Message": err.message, **err.headers}
        if err.code:
            headers["X-Error-Code"] = err.code
        return cls(err.status, json={"error": err.message}, headers=headers)


def require_write(req: Request) -> Token:
    if req.user is None:
        raise HubHTTPError(401, "You must be authenticated with a write token to do this.")
    if req.user.scope != WRITE:
        raise HubHTTPError(403, "You don't have the rights to do this: the token has read scope only")
    return req.user
