"""The local Hub's HTTP server: threaded, keep-alive, request log without secrets.

    with LocalHub(tmp_path, tokens=[Token("alice", "secret", "write")],
                  orgs=[Org("my-org", {"alice": "admin"})]) as hub:
        os.environ["HF_ENDPOINT"] = hub.url   # before huggingface_hub is imported
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

from chatvector.localhub.hub import Hub, HubConfig
from chatvector.localhub.protocol import BodyReader, HubHTTPError, Org, Request, Response, Token
from chatvector.localhub.routes import dispatch
from chatvector.localhub.storage import Store

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


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, addr, hub: Hub, tokens: dict[str, Token], log_sink):
        super().__init__(addr, _Handler)
        self.hub, self.tokens, self.log_sink = hub, tokens, log_sink


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

    def _handle(self) -> None:
        raw_path, _, query = self.path.partition("?")
        body = BodyReader(self.rfile, self.headers)
        user = None
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
            response = dispatch(self.server.hub, req)
        except HubHTTPError as err:
            response = Response.of_error(err)
        except Exception as err:  # a bug: answer 500, keep serving, never leak request headers
            log.exception("internal error on %s %s", self.command, raw_path)
            response = Response.of_error(HubHTTPError(500, f"Internal server error: {type(err).__name__}"))
        body.drain()  # keep-alive: the next request must start at a request line
        self._send(response)
        self.server.log_sink(LoggedRequest(self.command, raw_path, response.status,
                                           user.name if user else None, self.headers.get("Range")))

    def _user(self) -> Token | None:
        auth = self.headers.get("Authorization") or ""
        if not auth:
            return None
        scheme, _, secret = auth.partition(" ")
        token = self.server.tokens.get(secret.strip()) if scheme.lower() == "bearer" else None
        if token is None:
            raise HubHTTPError(401, "Invalid credentials in Authorization header")
        return token

    def _send(self, r: Response) -> None:
        payload = b""
        if r.file is None:
            payload = r.body if r.body is not None else (json.dumps(r.json).encode() if r.json is not None else b"")
            r.headers.setdefault("Content-Type", "application/json")
        length = r.length if r.file is not None else len(payload)
        try:
            self.send_response(r.status)
            for key, value in r.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(length))
            self.end_headers()
            if self.command == "HEAD":
                return
            if r.file is not None:
                with open(r.file, "rb") as fh:
                    self.connection.sendfile(fh, r.offset, r.length)
            else:
                self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


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
    ):
        tokens, orgs = list(tokens), list(orgs)
        users = {t.name for t in tokens}
        for org in orgs:
            if org.name in users:
                raise ValueError(f"organization {org.name} has the name of a user (a token's name); "
                                 "a namespace is a user's or an organization's, not both")
        self.root = Path(root)
        self.store = Store(self.root)
        self.hub = Hub(self.store, HubConfig(lfs_threshold, multipart_chunk_size, page_size), orgs)
        self.requests: deque[LoggedRequest] = deque(maxlen=100_000)
        self._log_file = open(log_file, "a", buffering=1) if log_file else None
        self._echo = echo  # also print each request line to stderr (`chatvector hub serve`)
        self._lock = threading.Lock()
        self._server = _Server((host, port), self.hub, {t.secret: t for t in tokens}, self._record)
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
                line = (f"{stamp} {entry.method} {entry.path} {entry.status} user={entry.user or '-'}"
                        f"{' range=' + entry.range if entry.range else ''}\n")
                if self._log_file:
                    self._log_file.write(line)
                if self._echo:
                    sys.stderr.write(line)

    def start(self) -> "LocalHub":
        """Serve on a background thread; `stop()` ends it."""
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
