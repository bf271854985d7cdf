"""The local Hub's HTTP server: threaded, keep-alive, request log without secrets.

    with LocalHub(tmp_path, tokens=[Token("alice", "secret", "write")],
                  orgs=[Org("my-org", {"alice": "admin"})]) as hub:
        os.environ["HF_ENDPOINT"] = hub.url   # before huggingface_hub is imported

Test knobs that emulate a network (both off by default, and then the server sends files with sendfile):

    LocalHub(root, throttle=5, throttle_total=10)        # MB/s: per connection; all downloads, all uploads
    LocalHub(root, faults="5xx=0.05,429=0.02,drop=0.02", faults_seed=1)   # see faults.py

`throttle` paces each connection's body bytes, both directions (one bucket per connection: HTTP/1.1 sends
one way at a time); `throttle_total` paces all response bodies together and, with a bucket of its own, all
request bodies together. Headers are not paced.

Hardening: a malformed request, however hostile, gets a 4xx in the Hub's error shape (`X-Error-Message` and
`{"error": ...}`) and the server goes on serving; only a bug in the server logs an ERROR (log.exception) and
answers 500; no traceback is printed on stderr. A URL path holding a control character (C0, C1, DEL, U+2028/9:
CR, LF, NUL...) or a backslash, raw or percent-encoded, is 400; a committed or preuploaded file name with one,
or absolute, or with an empty, `.`, `..` or `.git` segment is 422 (protocol.repo_path: what the Hub refuses).
Every response carries an `X-Request-Id` (the Hub's, which the client shows in its errors). No header goes
out with a raw CR/LF: `_header_value` percent-encodes control characters in every value sent (non-ASCII text
goes as UTF-8 bytes, which httpx decodes). Bad framing (a Content-Length that is not digits, two that differ,
one with Transfer-Encoding, a malformed or truncated chunked body) is 400, a transfer coding other than chunked
501; both close the connection, as does a body refused by its size (413 before reading the rest), after a
bounded lingering read so the client gets the answer rather than a reset. Invalid JSON, JSON that is not an
object or has fields of the wrong type, bad query parameters (`cursor`, `limit`) and part numbers that are not
one of the upload's parts are 400. Limits: request line 64 KiB (414); header section 64 KiB and 100 lines
(431); JSON and form bodies 16 MiB (protocol.MAX_JSON_BODY); a commit-payload line one inline file (under the
LFS threshold, at least 10 MiB) as base64; an LFS basic PUT its object's declared size, a part the chunk size
(413 beyond), LFS bodies otherwise unlimited. Timeouts, `LocalHub(timeout=60)` seconds (None: none): the next
request's line and headers must all arrive within it (so idle keep-alive connections close, and a client
dribbling header bytes is cut off), and a body read or answer write stalled that long ends the connection
(408 when it still can be sent). LFS upload URLs expire `upload_ttl` (3600 s) after their last use, and at most
`max_uploads` (10 000) are pending: the least recently used go first, their parts deleted (hub.Uploads).
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import re
import secrets
import socket
import string
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable
from urllib.parse import parse_qs, quote, unquote

from chatvector.localhub.faults import Faults, cut, error_response
from chatvector.localhub.hub import Hub, HubConfig
from chatvector.localhub.protocol import (
    UNSAFE_CHARS,
    BodyReader,
    HubHTTPError,
    Org,
    Request,
    Response,
    Token,
    unsafe_char,
)
from chatvector.localhub.routes import FAULT_PRONE, UNAUTHENTICATED_PREFIXES, call, find
from chatvector.localhub.storage import Store
from chatvector.localhub.throttle import Bucket, PacedReader, bucket_of, check_rate, pace, slice_size

log = logging.getLogger(__name__)
__all__ = ["LocalHub", "LoggedRequest"]
_POLL_S = 0.05  # how often serve_forever looks for a shutdown request: stop() returns within this
MAX_HEADER_BYTES = 64 * 1024  # the header section of a request, all lines together (431 beyond)
DEFAULT_TIMEOUT_S = 60.0  # idle keep-alive, slow headers, a stalled body or answer
_LINGER_S, _LINGER_BYTES = 1.0, 1 << 20  # closing on unread input: discard this much first (see finish())
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_HOST = re.compile(r"(?:[A-Za-z0-9._-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_URL_SAFE = string.punctuation  # raw non-ASCII bytes in a request line are percent-encoded, nothing else


def request_id() -> str:
    """A new id for a response's `X-Request-Id`, shaped as the Hub's (an AWS trace id: the client shows it in its
    errors as "Request ID: ...")."""
    return f"Root=1-{int(time.time()):08x}-{secrets.token_hex(12)}"


def _escape_controls(text: str) -> str:
    """TEXT with each control character (CR, LF, NUL...) percent-encoded: safe in a header or a log line."""
    return UNSAFE_CHARS.sub(lambda m: quote(m.group(), safe=""), text)


def _header_value(value: object) -> str:
    """A header value as it may go on the wire: no raw CR/LF or other control character, and text beyond
    Latin-1 as its UTF-8 bytes (http.server encodes header lines as Latin-1)."""
    return _escape_controls(str(value)).encode("utf-8").decode("latin-1")


@dataclass(frozen=True)
class LoggedRequest:
    method: str
    path: str  # without the query string
    status: int
    user: str | None
    range: str | None
    fault: str | None = None  # the injected fault: "500", "502", "503", "429", "drop"


@dataclass(frozen=True)
class _Network:
    """The emulated network: bandwidth limits (MB/s, None: unlimited) and faults."""

    throttle: float | None = None  # each connection, both directions
    download_total: Bucket | None = None  # all response bodies
    upload_total: Bucket | None = None  # all request bodies
    faults: Faults | None = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, hub: Hub, tokens: dict[str, Token], log_sink, net: _Network, timeout: float | None):
        super().__init__(addr, _Handler)
        self.hub, self.tokens, self.log_sink, self.net = hub, tokens, log_sink, net
        self.conn_timeout = timeout

    def handle_error(self, request, client_address) -> None:
        """A connection's failure that escaped its handler: a client gone or too slow is no error; anything else
        is a bug, logged (with its traceback) through logging, not printed on stderr."""
        err = sys.exc_info()[1]
        if isinstance(err, (ConnectionError, TimeoutError)):
            return
        log.exception("internal error on the connection from %s", client_address[0] if client_address else "?")


class _SocketReader(io.RawIOBase):
    """A connection's raw input: each receive waits at most TIMEOUT seconds (None: forever), and never past
    `deadline` (time.monotonic()) while one is set, the request line and headers' deadline."""

    def __init__(self, sock, timeout: float | None):
        self._sock, self.timeout, self.deadline = sock, timeout, None
        self._current = timeout
        sock.settimeout(timeout)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        wait = self.timeout
        if self.deadline is not None:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the request line and headers took too long")
            wait = left if wait is None else min(wait, left)
        if wait != self._current:
            self._sock.settimeout(wait)
            self._current = wait
        return self._sock.recv_into(buffer)

    def idle(self) -> None:
        """Back to the idle timeout alone (for the body, and for the answer: the socket's timeout is shared)."""
        self.deadline = None
        if self._current != self.timeout:
            self._sock.settimeout(self.timeout)
            self._current = self.timeout


class _HeaderBudget:
    """The input while http.server reads a request's headers: at most BUDGET bytes of lines in all."""

    def __init__(self, rfile, budget: int):
        self._rfile, self._left = rfile, budget

    def readline(self, limit: int = -1) -> bytes:
        want = self._left + 1 if limit < 0 else min(limit, self._left + 1)
        line = self._rfile.readline(want)
        self._left -= len(line)
        if self._left < 0:  # http.server answers 431 to this
            raise http.client.HTTPException(f"the header section is over {MAX_HEADER_BYTES} bytes")
        return line


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in separate writes: with Nagle's algorithm on, the body waits for the client's
    # delayed ACK of the headers (about 40 ms a response on Linux).
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args) -> None:  # the request log below replaces stderr noise
        pass

    def setup(self) -> None:
        super().setup()  # one handler a connection: its bucket is the connection's
        net = self.server.net
        own = bucket_of(net.throttle)
        self._down = [b for b in (own, net.download_total) if b]
        self._up = [b for b in (own, net.upload_total) if b]
        self._reader = _SocketReader(self.connection, self.server.conn_timeout)
        self.rfile = io.BufferedReader(self._reader, 1 << 16)
        self._linger = False  # set when the connection closes with input maybe unread

    def finish(self) -> None:
        super().finish()
        if self._linger:
            # Closing a socket with unread input sends a reset, and the client may lose the answer it was sent: so
            # end our side, then discard what still comes (bounded) until the client closes too.
            try:
                self.connection.shutdown(socket.SHUT_WR)
                deadline, seen = time.monotonic() + _LINGER_S, 0
                while seen < _LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                    self.connection.settimeout(left)
                    chunk = self.connection.recv(1 << 16)
                    if not chunk:
                        break
                    seen += len(chunk)
            except OSError:
                pass

    def handle_one_request(self) -> None:
        # The request line and headers must all arrive within the timeout (a slow drip is cut off), and an idle
        # keep-alive connection closes after it; http.server closes the connection on the TimeoutError.
        if self._reader.timeout is not None:
            self._reader.deadline = time.monotonic() + self._reader.timeout
        try:
            super().handle_one_request()
        except ConnectionError:  # the client went away mid-request: nothing to answer
            self.close_connection = True

    def parse_request(self) -> bool:
        real = self.rfile
        self.rfile = _HeaderBudget(real, MAX_HEADER_BYTES)  # http.server reads the headers from self.rfile
        try:
            return super().parse_request()
        finally:
            self.rfile = real

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (a bad request line, headers too large, an unknown method) in the Hub's
        error shape; the connection closes."""
        title = self.responses.get(code, ("Error",))[0]
        detail = explain or message
        text = f"{title}: {detail}" if detail and detail != title else title
        if self.request_version == "HTTP/0.9":  # a request line too broken to tell: answer in HTTP/1.1
            self.request_version = "HTTP/1.1"
        self.close_connection = self._linger = True
        response = Response.of_error(HubHTTPError(code, text))
        response.headers["Connection"] = "close"
        path = _escape_controls((getattr(self, "path", None) or "-").partition("?")[0])[:1000]
        self.server.log_sink(LoggedRequest(self.command or "-", path, code, None, None))
        self._send(response, self._payload(response))

    def _segments(self, raw_path: str) -> list[str]:
        """The raw (percent-encoded) path segments; 400 for a control character or a backslash in the path,
        raw or percent-encoded."""
        raw_path = quote(raw_path.encode("latin-1", "replace"), safe=_URL_SAFE)  # raw UTF-8 bytes: as %XX
        segments = [s for s in raw_path.split("/") if s]
        for segment in segments:
            bad = unsafe_char(unquote(segment))
            if bad:
                raise HubHTTPError(400, f"Invalid request path: the character {bad!r} is not allowed in a URL path")
        return segments

    def _base_url(self) -> str:
        host = self.headers.get("Host") or ""
        if not _HOST.fullmatch(host):  # absent, or not a host[:port]: links point at the address we listen on
            host = "%s:%d" % self.server.server_address[:2]
        return f"http://{host}"

    def _handle(self) -> None:
        self._reader.idle()
        raw_path, _, query = self.path.partition("?")
        body: BodyReader | None = None
        user = fault = None
        response: Response | None = None
        stalled = False
        try:
            body = BodyReader(PacedReader(self.rfile, self._up) if self._up else self.rfile, self.headers)
            segments = self._segments(raw_path)
            user = None if segments[:1] and segments[0] in UNAUTHENTICATED_PREFIXES else self._user()
            req = Request(
                method=self.command,
                segments=segments,
                query=parse_qs(query, keep_blank_values=True),
                headers=self.headers,
                body=body,
                user=user,
                base_url=self._base_url(),
            )
            route, params = find(req)
            faults = self.server.net.faults
            if faults is not None and route.handler in FAULT_PRONE:
                fault = faults.draw(req.method, raw_path)
            # Faults strike before the endpoint runs, except a dropped GET: it runs (a GET changes nothing)
            # and its answer is cut short. A dropped HEAD, POST or PUT gets no answer at all.
            if fault is None or (fault == "drop" and req.method == "GET"):
                response = call(self.server.hub, req, route, params)
            elif fault != "drop":
                response = error_response(fault)
        except HubHTTPError as err:
            response = Response.of_error(err)
        except TimeoutError:  # the body stalled: answer if the client still listens, then close
            self.close_connection = stalled = True
            response = Response.of_error(HubHTTPError(
                408, f"Request timeout: the request body stalled for {self._reader.timeout} s"))
        except ConnectionError:  # the client went away mid-body: nobody to answer
            self.close_connection = True
            self.server.log_sink(LoggedRequest(self.command, _escape_controls(raw_path), 0,
                                               user.name if user else None, self.headers.get("Range"), fault))
            return
        except Exception as err:  # a bug: answer 500, keep serving, never leak request headers
            log.exception("internal error on %s %s", self.command, _escape_controls(raw_path))
            response = Response.of_error(HubHTTPError(500, f"Internal server error: {type(err).__name__}"))
        if body is None or body.must_close:  # the body's framing is broken or its rest unread: the stream is lost
            self.close_connection = self._linger = True
        elif not stalled:
            try:
                if response is None:  # a dropped HEAD, POST or PUT: the network fails mid-body, the endpoint never ran
                    body.read(cut(body.length or 0))  # half the body came through
                else:
                    body.drain()  # keep-alive: the next request must start at a request line
            except (HubHTTPError, OSError):  # a bad chunk or a stall in the unread rest
                self.close_connection = self._linger = True
        if self.close_connection and response is not None:
            response.headers["Connection"] = "close"
        payload = b""
        if response is not None:
            payload = self._payload(response)
            if fault == "drop" and (response.length if response.file is not None else len(payload)) == 0:
                response = None  # nothing to cut short: a dropped empty answer is no answer
        # Logged before the answer goes out: a client that has its answer finds the request in the log.
        self.server.log_sink(LoggedRequest(self.command, _escape_controls(raw_path), response.status if response else 0,
                                           user.name if user else None, self.headers.get("Range"), fault))
        if response is None:
            self.close_connection = True  # a dropped request: the connection closes without an answer
        else:
            self._send(response, payload, drop=fault == "drop")

    def _user(self) -> Token | None:
        auth = self.headers.get("Authorization") or ""
        if not auth:
            return None
        scheme, _, secret = auth.partition(" ")
        token = self.server.tokens.get(secret.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        return token

    @staticmethod
    def _payload(r: Response) -> bytes:
        """The body of an answer that is not a file (b"" for a file)."""
        if r.file is not None:
            return b""
        r.headers.setdefault("Content-Type", "application/json")
        return r.body if r.body is not None else (json.dumps(r.json).encode() if r.json is not None else b"")

    def _send(self, r: Response, payload: bytes, drop: bool = False) -> None:
        """Headers and body; DROP: only part of the body, then the connection closes (a truncated answer)."""
        length = r.length if r.file is not None else len(payload)
        send = cut(length) if drop else length
        if drop:
            self.close_connection = True
        r.headers.setdefault("X-Request-Id", request_id())
        try:
            self.send_response(r.status)
            for key, value in r.headers.items():
                if _HEADER_NAME.fullmatch(key):  # (names are the server's own; a bad one is dropped, never sent)
                    self.send_header(key, _header_value(value))
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if self.command == "HEAD":
                return
            if send and r.file is not None:  # (count 0 would mean "to the end of the file" to sendfile)
                with open(r.file, "rb") as fh:
                    if self._down:
                        self._send_paced(lambda off, n: self.connection.sendfile(fh, r.offset + off, n), send)
                    else:
                        self.connection.sendfile(fh, r.offset, send)
            elif send:
                view = memoryview(payload)
                if self._down:
                    self._send_paced(lambda off, n: self.wfile.write(view[off:off + n]), send)
                else:
                    self.wfile.write(view[:send])
        except (ConnectionError, TimeoutError):  # the client is gone, or stopped reading
            self.close_connection = True

    def _send_paced(self, write, length: int) -> None:
        """WRITE(offset, n) the body's LENGTH bytes in slices, each when the buckets allow it."""
        step = slice_size(self._down)
        for offset in range(0, length, step):
            n = min(step, length - offset)
            pace(self._down, n)
            write(offset, n)


class LocalHub:
    """An in-process local Hub on a background thread; `url` is what HF_ENDPOINT should be."""

    def __init__(
        self,
        root: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Iterable[Token] = (),
        orgs: Iterable[Org] = (),
        lfs_threshold: int = 10 * 1024 * 1024,
        multipart_chunk_size: int = 64 * 1024 * 1024,
        page_size: int = 1000,
        log_file: str | Path | None = None,
        echo: bool = False,
        throttle: float | None = None,
        throttle_total: float | None = None,
        faults: str | None = None,
        faults_seed: int = 0,
        faults_only: Iterable[str] = (),
        timeout: float | None = DEFAULT_TIMEOUT_S,
        upload_ttl: float = 3600.0,
        max_uploads: int = 10_000,
    ):
        """THROTTLE: MB/s for each connection, either direction; THROTTLE_TOTAL: MB/s for all downloads together
        and, apart, for all uploads together (0/None: unlimited). FAULTS: "5xx=P,429=P,drop=P", drawn from a
        RNG seeded with FAULTS_SEED, only for requests matching one of FAULTS_ONLY (`[METHOD ]PATH-SUBSTRING`)
        when given; see faults.py. TIMEOUT: seconds a connection may take to send a request's line and headers
        (and may stay idle between requests), and a body read or an answer's write may stall (None: no limit).
        UPLOAD_TTL: seconds an LFS upload URL stays valid after its last use; MAX_UPLOADS: pending LFS uploads kept
        at most (the least recently used are dropped first)."""
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not 0 < timeout < float("inf")):
            raise ValueError(f"timeout {timeout!r}: must be a number of seconds above 0, or None")
        tokens, orgs = list(tokens), list(orgs)
        users = {t.name for t in tokens}
        for org in orgs:
            if org.name in users:
                raise ValueError(f"organization {org.name} has the name of a user (a token's name); "
                                 "a namespace is a user's or an organization's, not both")
        throttle, throttle_total = check_rate(throttle, "throttle"), check_rate(throttle_total, "throttle_total")
        self.faults = Faults(faults, faults_seed, faults_only) if faults else None
        net = _Network(throttle, bucket_of(throttle_total), bucket_of(throttle_total), self.faults)
        self.root = Path(root)
        self.store = Store(self.root)
        self.hub = Hub(self.store, HubConfig(lfs_threshold, multipart_chunk_size, page_size, upload_ttl, max_uploads),
                       orgs)
        self.requests: deque[LoggedRequest] = deque(maxlen=100_000)
        self._log_file = open(log_file, "a", buffering=1) if log_file else None
        self._echo = echo  # also print each request line to stderr (`chatvector hub serve`)
        self._lock = threading.Lock()
        self._server = _Server((host, port), self.hub, {t.secret: t for t in tokens}, self._record, net,
                               float(timeout) if timeout is not None else None)
        self._thread: threading.Thread | None = None
        self._serving = False
        self._closed = False

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _record(self, entry: LoggedRequest) -> None:
        with self._lock:
            self.requests.append(entry)
            if self._log_file or self._echo:
                stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
                line = (f"{stamp} {entry.method} {entry.path} {entry.status or '-'} user={entry.user or '-'}"
                        f"{' range=' + _escape_controls(entry.range) if entry.range else ''}"
                        f"{' fault=' + entry.fault if entry.fault else ''}\n")
                if self._log_file:
                    self._log_file.write(line)
                if self._echo:
                    sys.stderr.write(line)

    def start(self) -> "LocalHub":
        """Serve on a background thread; `stop()` ends it. Idempotent: `with hub.start():` serves once (a second
        serving loop would outlive `stop()`, spinning on the closed socket)."""
        if self._serving:
            return self
        if self._closed:
            raise RuntimeError("this LocalHub is closed; make a new one (on the same root) to serve again")
        self._serving = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(_POLL_S,), name="localhub",
                                        daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve on the calling thread until interrupted (Ctrl-C) or `stop()` from another thread; then close."""
        self._serving = True
        try:
            self._server.serve_forever(_POLL_S)
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def stop(self) -> None:
        """Stop serving (waits for the serving loop to end) and close."""
        if self._serving:
            self._server.shutdown()
            self._serving = False
        self.close()

    def close(self) -> None:
        """Release the socket and the log file; idempotent."""
        if self._closed:
            return
        self._closed = True
        self._server.server_close()
        if self._log_file:
            self._log_file.close()

    def __enter__(self) -> "LocalHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
