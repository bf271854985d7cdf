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
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable
from urllib.parse import parse_qs

from chatvector.localhub.faults import Faults, cut, error_response
from chatvector.localhub.hub import Hub, HubConfig
from chatvector.localhub.protocol import BodyReader, HubHTTPError, Org, Request, Response, Token
from chatvector.localhub.routes import FAULT_PRONE, call, find
from chatvector.localhub.storage import Store
from chatvector.localhub.throttle import Bucket, PacedReader, bucket_of, check_rate, pace, slice_size

log = logging.getLogger(__name__)
__all__ = ["LocalHub", "LoggedRequest"]
_POLL_S = 0.05  # how often serve_forever looks for a shutdown request: stop() returns within this


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

    def __init__(self, addr, hub: Hub, tokens: dict[str, Token], log_sink, net: _Network):
        super().__init__(addr, _Handler)
        self.hub, self.tokens, self.log_sink, self.net = hub, tokens, log_sink, net


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

    def _handle(self) -> None:
        raw_path, _, query = self.path.partition("?")
        body = BodyReader(PacedReader(self.rfile, self._up) if self._up else self.rfile, self.headers)
        user = fault = None
        response: Response | None = None
        try:
            user = self._user()
            req = Request(
                method=self.command,
                segments=[s for s in raw_path.split("/") if s],
                query=parse_qs(query, keep_blank_values=True),
                headers=self.headers,
                body=body,
                user=user,
                base_url=f"http://{self.headers.get('Host') or '%s:%d' % self.server.server_address[:2]}",
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
        except Exception as err:  # a bug: answer 500, keep serving, never leak request headers
            log.exception("internal error on %s %s", self.command, raw_path)
            response = Response.of_error(HubHTTPError(500, f"Internal server error: {type(err).__name__}"))
        if response is None:  # a dropped HEAD, POST or PUT: the network fails mid-body, the endpoint never ran
            body.read(cut(int(self.headers.get("Content-Length") or 0)))  # half the body came through
        else:
            body.drain()  # keep-alive: the next request must start at a request line
        payload = b""
        if response is not None:
            payload = self._payload(response)
            if fault == "drop" and (response.length if response.file is not None else len(payload)) == 0:
                response = None  # nothing to cut short: a dropped empty answer is no answer
        # Logged before the answer goes out: a client that has its answer finds the request in the log.
        self.server.log_sink(LoggedRequest(self.command, raw_path, response.status if response else 0,
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
        try:
            self.send_response(r.status)
            for key, value in r.headers.items():
                self.send_header(key, value)
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
        except (BrokenPipeError, ConnectionResetError):
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
    ):
        """THROTTLE: MB/s for each connection, either direction; THROTTLE_TOTAL: MB/s for all downloads together
        and, apart, for all uploads together (0/None: unlimited). FAULTS: "5xx=P,429=P,drop=P", drawn from a
        RNG seeded with FAULTS_SEED, only for requests matching one of FAULTS_ONLY (`[METHOD ]PATH-SUBSTRING`)
        when given; see faults.py."""
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
        self.hub = Hub(self.store, HubConfig(lfs_threshold, multipart_chunk_size, page_size), orgs)
        self.requests: deque[LoggedRequest] = deque(maxlen=100_000)
        self._log_file = open(log_file, "a", buffering=1) if log_file else None
        self._echo = echo  # also print each request line to stderr (`chatvector hub serve`)
        self._lock = threading.Lock()
        self._server = _Server((host, port), self.hub, {t.secret: t for t in tokens}, self._record, net)
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
                        f"{' range=' + entry.range if entry.range else ''}"
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
