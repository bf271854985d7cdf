"""HTTP plumbing shared by the local Hub's endpoints: requests, responses, errors, auth.

The Hub's wire conventions live here once: errors carry `X-Error-Code` and `X-Error-Message` headers plus a
JSON body `{"error": ...}` (HEAD responses have no body, so the headers are all a client sees).
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Iterable, Iterator, Mapping

from chatvector.localhub.gitrules import UNSAFE_CHARS, repo_path_problem

READ, WRITE, FINE_GRAINED = "read", "write", "fineGrained"
ROLES = ("admin", "write", "contributor", "read")  # an organization member's role, most rights first
ENTITY_TYPES = ("user", "org", "model", "dataset", "space", "kernel")
CONTENT_READ, REPO_WRITE = "repo.content.read", "repo.write"
ENFORCED_PERMISSIONS = (CONTENT_READ, REPO_WRITE)  # the fine-grained permissions this server checks
_PERMISSION = re.compile(r"^[a-z][a-z-]*(\.[a-z-]+)+$")


class HubHTTPError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.code = status, message, code
        self.headers = headers or {}


def unsafe_char(text: str) -> str | None:
    """The first control character (or backslash) in TEXT, None when there is none."""
    found = UNSAFE_CHARS.search(text)
    if found:
        return found.group()
    return "\\" if "\\" in text else None


def repo_path(path: object, *, folder: bool = False) -> str:
    """PATH as a file (or, FOLDER, a folder: a trailing '/' is dropped) path in a repo; 422 for what the Hub
    refuses (gitrules.repo_path_problem): no path, control characters, an absolute path or one starting with
    '..' (either separator), an empty, '.', '..' or '.git' segment."""
    reason = repo_path_problem(path, folder=folder) if isinstance(path, str) else "a path is needed"
    if reason:
        raise HubHTTPError(422, f"Invalid path in repo {path!r}: {reason}")
    assert isinstance(path, str)
    return path[:-1] if folder and path.endswith("/") else path


def body_field(body: dict, key: str, kind: type | tuple[type, ...], default: Any = None) -> Any:
    """BODY[KEY] when it is of KIND (DEFAULT when absent or null); 400 when it is something else."""
    value = body.get(key)
    if value is None:
        return default
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        expected = " or ".join(_JSON_TYPE.get(k, k.__name__) for k in kinds)
        raise HubHTTPError(400, f"Invalid {key!r} in the request body: expected {expected}, got "
                                f"{_JSON_TYPE.get(type(value), type(value).__name__)}")
    return value


_JSON_TYPE = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array",
              dict: "an object"}


def repo_not_found(name: str) -> HubHTTPError:
    """The Hub's text, without NAME: the client writes "Repository Not Found for url: URL." itself and adds the
    server's text only when it is not already in that."""
    return HubHTTPError(404, "Repository not found", "RepoNotFound")


# -- identities: tokens, fine-grained permissions, organizations ------------------------------------------
@dataclass(frozen=True)
class Scoped:
    """Fine-grained permissions on one entity: a user or org namespace (every repo in it), or one repo."""

    type: str  # "user" | "org" | "model" | "dataset" | "space" | "kernel"
    name: str  # the namespace, or the repo id for a repo
    permissions: tuple[str, ...]

    def __post_init__(self) -> None:
        if self.type not in ENTITY_TYPES:
            raise ValueError(f"fine-grained entity type {self.type!r} is not one of {', '.join(ENTITY_TYPES)}")
        object.__setattr__(self, "permissions", tuple(self.permissions))

    def covers(self, repo_type: str | None, name: str) -> bool:
        """Whether this entity is the repo NAME of REPO_TYPE or its namespace (REPO_TYPE None: NAME is a
        namespace, for creating a repo in it)."""
        if self.type in ("user", "org"):
            return self.name == name.split("/", 1)[0]
        return repo_type is not None and self.type == repo_type and self.name == name


@dataclass(frozen=True)
class FineGrained:
    """A fine-grained token's permission set, as the Hub's whoami reports it."""

    scoped: tuple[Scoped, ...] = ()
    global_permissions: tuple[str, ...] = ()  # not tied to a repo (e.g. "discussion.write"); never repo rights
    can_read_gated_repos: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "scoped", tuple(self.scoped))
        object.__setattr__(self, "global_permissions", tuple(self.global_permissions))

    def allows(self, permissions: Iterable[str], repo_type: str | None, name: str) -> bool:
        """Whether one of PERMISSIONS is granted on the repo (or namespace, REPO_TYPE None) NAME."""
        wanted = set(permissions)
        return any(wanted & set(s.permissions) and s.covers(repo_type, name) for s in self.scoped)

    def to_json(self) -> dict:
        return {
            "canReadGatedRepos": self.can_read_gated_repos,
            "global": list(self.global_permissions),
            "scoped": [{"entity": {"type": s.type, "name": s.name}, "permissions": list(s.permissions)}
                       for s in self.scoped],
        }


@dataclass(frozen=True)
class Token:
    """A token the server accepts: SECRET authenticates user NAME.

    `scope` is "read", "write" or "fineGrained"; a fine-grained token carries its permissions in
    `fine_grained` (`Token("erin", "s3cret", fine_grained=FineGrained(...))`).
    """

    name: str
    secret: str
    scope: str = FINE_GRAINED
    fine_grained: FineGrained | None = None

    def __post_init__(self) -> None:
        if self.scope not in (READ, WRITE, FINE_GRAINED):
            raise ValueError(f"token scope {self.scope!r} is not one of read, write, fineGrained")
        if (self.scope == FINE_GRAINED) != (self.fine_grained is not None):
            raise ValueError("a token has fine_grained permissions exactly when its scope is fineGrained")

    def __repr__(self) -> str:  # never show the secret, even in a debugger or a traceback
        return f"Token(name={self.name!r}, scope={self.scope!r}, fine_grained={self.fine_grained!r})"

    # What the token itself allows on a repo (or, REPO_TYPE None, a namespace); the user's rights are apart.
    def grants_read(self, repo_type: str | None, name: str) -> bool:
        return self.fine_grained is None or self.fine_grained.allows((CONTENT_READ, REPO_WRITE), repo_type, name)

    def grants_write(self, repo_type: str | None, name: str) -> bool:
        if self.fine_grained is not None:
            return self.fine_grained.allows((REPO_WRITE,), repo_type, name)
        return self.scope == WRITE


@dataclass(frozen=True)
class Org:
    """An organization: its members and their roles (admin, write, contributor, read)."""

    name: str
    members: Mapping[str, str]
    fullname: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "members", MappingProxyType(dict(self.members)))
        for user, role in self.members.items():
            if role not in ROLES:
                raise ValueError(f"organization {self.name}: {user}'s role {role!r} is not one of {', '.join(ROLES)}")

    def __hash__(self) -> int:
        return hash(self.name)


def parse_token_spec(spec: str) -> Token:
    """`NAME=SECRET:read|write` → Token. The message never repeats the secret."""
    name, sep, rest = spec.partition("=")
    secret, sep2, scope = rest.rpartition(":")
    if not sep or not sep2 or not name or not secret or scope not in (READ, WRITE):
        raise ValueError("--token must look like NAME=SECRET:read or NAME=SECRET:write")
    return Token(name, secret, scope)


FINE_GRAINED_SPEC = "NAME=SECRET:TYPE:ENTITY=PERM[+PERM...][,TYPE:ENTITY=PERM...][,gated]"


def parse_fine_grained_token_spec(spec: str) -> Token:
    """`NAME=SECRET:TYPE:ENTITY=PERM[+PERM...][,...][,gated][,global=PERM[+PERM...]]` → a fine-grained Token.

    TYPE is user, org, model, dataset, space or kernel; `gated` sets canReadGatedRepos. SECRET may not contain
    ':'. The messages never repeat the secret.
    """
    flag = "--fine-grained-token"
    name, sep, rest = spec.partition("=")
    secret, sep2, items = rest.partition(":")
    if not sep or not sep2 or not name or not secret or not items:
        raise ValueError(f"{flag} must look like {FINE_GRAINED_SPEC}, e.g. erin=hf_secret:org:my-org=repo.write")
    scoped, global_permissions, gated = [], [], False
    for item in items.split(","):
        entity, sep3, perms = item.partition("=")
        if item == "gated":
            gated = True
            continue
        where = f"{flag} {name}: {item!r}"
        permissions = [p for p in perms.split("+") if p]
        if not sep3 or not permissions:
            raise ValueError(f"{where} needs =PERM[+PERM...] after the entity, e.g. org:my-org=repo.write")
        for p in permissions:
            close = difflib.get_close_matches(p, ENFORCED_PERMISSIONS, n=1, cutoff=0.8)
            if not _PERMISSION.match(p) or (close and p not in ENFORCED_PERMISSIONS):
                hint = f"did you mean {close[0]!r}?" if close else "use repo.content.read or repo.write"
                raise ValueError(f"{where}: {p!r} is not a Hub permission ({hint})")
        if entity == "global":
            global_permissions += permissions
            continue
        kind, sep4, entity_name = entity.partition(":")
        if not sep4 or kind not in ENTITY_TYPES or not entity_name:
            raise ValueError(f"{where}: the entity must be TYPE:NAME with TYPE one of {', '.join(ENTITY_TYPES)}, "
                             "e.g. org:my-org or model:alice/x")
        scoped.append(Scoped(kind, entity_name, tuple(permissions)))
    return Token(name, secret, FINE_GRAINED, FineGrained(tuple(scoped), tuple(global_permissions), gated))


ORG_SPEC = "NAME=USER:ROLE[,USER:ROLE...]"


def parse_org_spec(spec: str) -> Org:
    """`NAME=USER:ROLE[,USER:ROLE...]` → Org, with ROLE one of admin, write, contributor, read."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise ValueError(f"--org must look like {ORG_SPEC} (ROLE: {', '.join(ROLES)}), e.g. my-org=alice:admin")
    members: dict[str, str] = {}
    for item in rest.split(","):
        user, sep2, role = item.partition(":")
        if not sep2 or not user:
            raise ValueError(f"--org {name}: {item!r} must be USER:ROLE (ROLE: {', '.join(ROLES)}), e.g. alice:write")
        if role not in ROLES:
            raise ValueError(f"--org {name}: {user}'s role {role!r} is not one of {', '.join(ROLES)}")
        if user in members:
            raise ValueError(f"--org {name}: {user} is listed twice; give each member one role")
        members[user] = role
    return Org(name, members)


MAX_JSON_BODY = 16 * 1024 * 1024  # a JSON request body (preupload, LFS batch, paths-info...): the client sends KBs
_MAX_CHUNK_LINE = 4096  # a chunk-size line, extensions included
_MAX_TRAILERS = 64 * 1024  # all trailer lines of a chunked body together
_HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
_DIGITS = re.compile(r"[0-9]{1,19}")


def too_large(what: str, size: int | str, limit: int) -> HubHTTPError:
    return HubHTTPError(413, f"Payload too large: the {what} is {size} bytes, more than the {limit} this endpoint "
                             "accepts")


class BodyReader:
    """Reads exactly the request body (Content-Length or chunked), so keep-alive connections stay in sync.

    The framing is checked when the reader is made (HubHTTPError 400 for a bad Content-Length, 501 for a transfer
    coding other than chunked) and while reading (400 for a malformed chunk or a body that ends early, 413 past
    `limit()`). After any of those the stream is out of step: `must_close` is set and the connection must close.
    """

    def __init__(self, rfile, headers):
        self._rfile = rfile
        self.must_close = False
        self.length: int | None = None  # the declared Content-Length (None: chunked)
        self._cap: int | None = None
        self._cap_what = "request body"
        self._consumed = 0
        self._chunk_left = 0
        encodings = [e.strip().lower() for v in headers.get_all("Transfer-Encoding") or [] for e in v.split(",")]
        lengths = {v.strip() for v in headers.get_all("Content-Length") or []}
        try:
            if encodings:
                if encodings != ["chunked"]:
                    raise HubHTTPError(501, f"Transfer-Encoding {', '.join(encodings)!r} is not supported (only "
                                            "chunked)")
                if lengths:
                    raise HubHTTPError(400, "Bad request: both Transfer-Encoding and Content-Length are set")
                self._chunked = True
            else:
                if len(lengths) > 1:
                    raise HubHTTPError(400, "Bad request: conflicting Content-Length headers")
                value = lengths.pop() if lengths else "0"
                if not _DIGITS.fullmatch(value):
                    raise HubHTTPError(400, f"Bad request: Content-Length {value!r} is not a valid number of bytes")
                self._chunked = False
                self.length = int(value)
        except HubHTTPError:
            self.must_close = True
            raise
        self._remaining = self.length or 0
        self._done = not self._chunked and self._remaining == 0

    def limit(self, cap: int, what: str = "request body") -> None:
        """Refuse (413) a body of more than CAP bytes: at once when the declared length says so, else as soon as
        reading passes CAP (the rest is never read)."""
        self._cap, self._cap_what = cap, what
        if self.length is not None and self.length > cap:
            self.must_close = True
            raise too_large(what, self.length, cap)

    def _broken(self, message: str) -> HubHTTPError:
        self.must_close = True
        self._done = True
        return HubHTTPError(400, f"Bad request: {message}")

    def _count(self, n: int) -> None:
        self._consumed += n
        if self._cap is not None and self._consumed > self._cap:
            self.must_close = True
            self._done = True
            raise too_large(self._cap_what, f"more than {self._cap}", self._cap)

    def read(self, n: int = -1) -> bytes:
        if self._done or n == 0:
            return b""
        if self._chunked:
            return self._read_chunked(n)
        want = self._remaining if n < 0 else min(n, self._remaining)
        if self._cap is not None:
            want = min(want, self._cap - self._consumed + 1)  # one byte past the cap is enough to refuse
        data = self._rfile.read(want)  # (a buffered read: short only at the end of the stream)
        self._remaining -= len(data)
        self._count(len(data))
        if len(data) < want:
            raise self._broken(f"the body ended after {self.length - self._remaining} of {self.length} bytes")
        if self._remaining == 0:
            self._done = True
        return data

    def _read_chunked(self, n: int) -> bytes:
        out = bytearray()
        while not self._done and (n < 0 or len(out) < n):
            if self._chunk_left == 0:
                line = self._rfile.readline(_MAX_CHUNK_LINE + 1)
                if not line.endswith(b"\n"):
                    raise self._broken("the chunked body ended or has a chunk-size line that is too long")
                size = line.split(b";", 1)[0].strip()
                if not _HEX.fullmatch(size):
                    raise self._broken(f"malformed chunk size {size[:40]!r} in the chunked body")
                self._chunk_left = int(size, 16)
                if self._chunk_left == 0:
                    self._read_trailers()
                    break
            take = self._chunk_left if n < 0 else min(self._chunk_left, n - len(out))
            if self._cap is not None:
                take = min(take, self._cap - self._consumed + 1)
            data = self._rfile.read(take)
            self._count(len(data))
            if len(data) < take:
                raise self._broken("the chunked body ended in the middle of a chunk")
            out += data
            self._chunk_left -= len(data)
            if self._chunk_left == 0 and self._rfile.readline(3) not in (b"\r\n", b"\n"):
                raise self._broken("a chunk of the chunked body is not followed by CRLF")
        return bytes(out)

    def _read_trailers(self) -> None:
        seen = 0
        while True:
            line = self._rfile.readline(_MAX_TRAILERS + 1)
            seen += len(line)
            if not line.endswith(b"\n") or seen > _MAX_TRAILERS:
                raise self._broken("the chunked body's trailer section is unterminated or too long")
            if line in (b"\r\n", b"\n"):
                self._done = True
                return

    def iter_chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        while chunk := self.read(size):
            yield chunk

    def iter_lines(self, max_line: int | None = None, what: str = "line") -> Iterator[bytes]:
        """Lines of the body; a line may be large (inline base64 content) but never exceeds the body, nor MAX_LINE
        bytes when given (413, and the rest of the body is not read)."""
        buf = b""
        for chunk in self.iter_chunks(4 << 20):
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                if max_line is not None and len(line) > max_line:
                    self.must_close = not self._done
                    raise too_large(what, len(line), max_line)
                yield line
            if max_line is not None and len(buf) > max_line:
                self.must_close = not self._done
                raise too_large(what, f"more than {max_line}", max_line)
        if buf:
            yield buf

    def read_all(self, cap: int = MAX_JSON_BODY, what: str = "request body") -> bytes:
        """The whole body, at most CAP bytes (413 beyond)."""
        self.limit(cap, what)
        return self.read()

    def json(self, cap: int = MAX_JSON_BODY) -> dict:
        """The body as a JSON object ({} when empty); 400 when it is not one, 413 past CAP bytes."""
        raw = self.read_all(cap, "JSON body")
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError) as err:
            raise HubHTTPError(400, f"Invalid JSON body: {err}") from None
        if not isinstance(value, dict):
            raise HubHTTPError(400, f"Invalid JSON body: expected an object, got {type(value).__name__}")
        return value

    def drain(self) -> None:
        for _ in self.iter_chunks():
            pass


@dataclass
class Request:
    method: str
    segments: list[str]  # raw path segments, still percent-encoded (routes.py unquotes what it matches)
    query: dict[str, list[str]]
    headers: Any
    body: BodyReader
    user: Token | None
    base_url: str  # http://host:port as the client addressed us, for absolute links

    def flag(self, name: str) -> bool:
        return (self.query.get(name, [""])[-1] or "").lower() in ("1", "true")

    def param(self, name: str, default: str | None = None) -> str | None:
        return self.query.get(name, [default])[-1]

    def int_param(self, name: str, default: int, minimum: int = 0) -> int:
        """Query parameter NAME as an integer of at least MINIMUM (DEFAULT when absent or empty); 400 otherwise."""
        raw = self.param(name)
        if raw is None or raw == "":
            return default
        if not _DIGITS.fullmatch(raw) or int(raw) < minimum:
            raise HubHTTPError(400, f"Invalid query parameter {name}={raw!r}: must be an integer of at least {minimum}")
        return int(raw)


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
    if req.user.scope == READ:
        raise HubHTTPError(403, "You don't have the rights to do this: the token has read scope only")
    return req.user


_BYTE_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_byte_range(spec: str, size: int) -> tuple[int, int]:
    """One `bytes=a-b`, `bytes=a-` or `bytes=-n` range of a SIZE-byte body → inclusive (start, end); 416 (with
    `Content-Range: bytes */SIZE`) when it is malformed or starts at or past the end. Downloads through `/resolve`,
    the storage host and the CAS all answer ranges this way."""
    match = _BYTE_RANGE.match(spec.strip())
    unsatisfiable = HubHTTPError(416, f"Range Not Satisfiable: {spec} starts at or past the end of the file "
                                      f"({size} bytes)", headers={"Content-Range": f"bytes */{size}"})
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
