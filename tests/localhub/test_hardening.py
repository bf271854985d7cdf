"""The local Hub against malformed and hostile requests, on raw sockets: each gets a 4xx in the Hub's error shape
(X-Error-Message and a JSON `{"error": ...}` body), no header is injected, the server keeps serving, and nothing
is logged as a server error (no ERROR record, no traceback on stderr)."""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download

from chatvector.localhub import LocalHub, Token
from chatvector.localhub.hub import Upload, Uploads

ALICE = Token("alice", "hf_alice_hardening_secret", "write")
AUTH = f"Authorization: Bearer {ALICE.secret}\r\n".encode()
REPO = "alice/hard"
ODD_NAME = 'dir/naïve "q" 日本.txt'  # non-ASCII, a quote: Content-Disposition and X-Error-Message must cope
CHUNK = 1024  # the test hubs' LFS multipart chunk size


# -- the wire -----------------------------------------------------------------------------------------------
@dataclass
class Reply:
    status: int
    head: bytes  # the raw status line and header lines
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def error(self) -> str:
        """The Hub's error shape: a JSON {"error": message} body and the same message in X-Error-Message."""
        assert self.headers.get("content-type") == "application/json", self.head
        message = json.loads(self.body)["error"]
        assert isinstance(message, str) and message
        assert "x-error-message" in self.headers
        return message


class Conn:
    """One raw connection to HUB."""

    def __init__(self, hub: LocalHub, timeout: float = 5):
        host, port = hub.url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""

    def __enter__(self) -> "Conn":
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()

    def send(self, data: bytes) -> "Conn":
        self.sock.sendall(data)
        return self

    def _fill(self) -> bool:
        chunk = self.sock.recv(1 << 16)
        self.buf += chunk
        return bool(chunk)

    def reply(self, head_only: bool = False) -> Reply:
        while b"\r\n\r\n" not in self.buf:
            assert self._fill(), f"the connection closed without an answer: {self.buf!r}"
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = {}
        for line in lines:
            name, sep, value = line.partition(":")
            assert sep and name and name == name.strip(), f"not a header line: {line!r}"
            headers[name.lower()] = value.strip()
        length = 0 if head_only else int(headers.get("content-length", 0))
        while len(self.buf) < length:
            assert self._fill(), "the connection closed mid-body"
        body, self.buf = self.buf[:length], self.buf[length:]
        return Reply(int(status_line.split()[1]), head, headers, body)

    def closed(self, wait: float = 3) -> bool:
        """Whether the server closes the connection (within WAIT seconds) without sending anything more."""
        self.sock.settimeout(wait)
        try:
            return not self._fill() and not self.buf
        except TimeoutError:
            return False


def request(method: str, path: str, body: bytes = b"", headers: bytes = b"", auth: bool = True,
            length: bool = True) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\n".encode()
    if auth:
        head += AUTH
    if length and (body or method in ("POST", "PUT")):
        head += b"Content-Length: %d\r\n" % len(body)
    return head + headers + b"\r\n" + body


def post_json(path: str, value: object, raw: bytes | None = None) -> bytes:
    return request("POST", path, raw if raw is not None else json.dumps(value).encode(),
                   b"Content-Type: application/json\r\n")


def commit(*lines: object, raw: bytes | None = None) -> bytes:
    header = {"key": "header", "value": {"summary": "x"}}
    body = raw if raw is not None else b"\n".join(json.dumps(x).encode() for x in (header, *lines))
    return request("POST", f"/api/models/{REPO}/commit/main", body, b"Content-Type: application/x-ndjson\r\n")


def add(path: str) -> dict:
    return {"key": "file", "value": {"path": path, "content": base64.b64encode(b"x").decode(), "encoding": "base64"}}


VALID = request("GET", f"/api/models/{REPO}", auth=False)


def assert_serving(hub: LocalHub) -> None:
    with Conn(hub) as conn:
        reply = conn.send(VALID).reply()
    assert reply.status == 200 and json.loads(reply.body)["id"] == REPO


def refused(hub: LocalHub, data: bytes, status: int, closes: bool) -> str:
    """Send DATA on a fresh connection: it gets STATUS in the Hub's error shape, and then the connection closes
    (CLOSES) or serves a valid request; a fresh connection is served too. The error message."""
    with Conn(hub) as conn:
        head = data.startswith(b"HEAD ")
        reply = conn.send(data).reply(head_only=head)
        assert reply.status == status, (reply.status, reply.body)
        message = reply.headers["x-error-message"] if head else reply.error()
        assert "x-evil" not in reply.headers and b"\nX-Evil" not in reply.head
        if closes:
            assert reply.headers.get("connection") == "close"
            assert conn.closed()
        else:
            assert conn.send(VALID).reply().status == 200  # the same keep-alive connection goes on
    assert_serving(hub)
    return message


# -- fixtures ---------------------------------------------------------------------------------------------
class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def server_errors(capsys):
    """The ERROR records the local Hub logs during the test (it logs a bug with log.exception); none allowed, nor a
    traceback on stderr, unless the test empties the list itself."""
    handler = _Collect()
    logger = logging.getLogger("chatvector.localhub")
    logger.addHandler(handler)
    try:
        yield handler.records
    finally:
        logger.removeHandler(handler)
    assert not handler.records, [r.getMessage() for r in handler.records]
    assert "Traceback" not in capsys.readouterr().err


def _new_hub(root: Path, **knobs) -> LocalHub:
    return LocalHub(root, tokens=[ALICE], lfs_threshold=CHUNK, multipart_chunk_size=CHUNK, **knobs)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    with _new_hub(tmp_path_factory.mktemp("hardening") / "hub", timeout=5) as hub:
        api = HfApi(endpoint=hub.url, token=ALICE.secret)
        api.create_repo(REPO)
        api.create_commit(REPO, [CommitOperationAdd("f.txt", b"hello"), CommitOperationAdd(ODD_NAME, b"odd")],
                          commit_message="seed")
        yield hub


def lfs_batch(hub: LocalHub, data: bytes) -> dict:
    """The upload action for DATA from the LFS batch endpoint (multipart when it is over CHUNK bytes)."""
    oid = hashlib.sha256(data).hexdigest()
    with Conn(hub) as conn:
        reply = conn.send(post_json(f"/{REPO}.git/info/lfs/objects/batch",
                                    {"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]})).reply()
    assert reply.status == 200, reply.body
    return json.loads(reply.body)["objects"][0]["actions"]["upload"]


def local(href: str) -> str:
    return "/" + href.split("/", 3)[3]


# -- malformed requests: each a 4xx, never a traceback ---------------------------------------------------
CRLF_NAME = "x\r\nX-Evil: 1"
PADDING = b"".join(b"X-Pad-%02d: %s\r\n" % (i, b"a" * 990) for i in range(65))
BAD = [
    # paths: control characters and backslashes, raw or percent-encoded
    pytest.param(request("GET", "/alice/hard/resolve/main/a%0D%0AX-Evil:%201"), 400, False, id="url-crlf"),
    pytest.param(request("HEAD", "/alice/hard/resolve/main/a%0D%0AX-Evil:%201"), 400, False, id="url-crlf-head"),
    pytest.param(request("GET", "/alice/hard/resolve/main/a%00b"), 400, False, id="url-nul"),
    pytest.param(request("GET", "/alice/hard/resolve/main/a\x00b"), 400, False, id="url-raw-nul"),
    pytest.param(request("GET", "/alice/hard/resolve/main/a%5Cb"), 400, False, id="url-backslash"),
    pytest.param(request("GET", "/alice/hard/resolve/main/a\\b"), 400, False, id="url-raw-backslash"),
    pytest.param(request("GET", "/alice/hard/resolve/main/a%7Fb"), 400, False, id="url-del"),
    pytest.param(request("GET", "/alice/hard/resolve/main/a%C2%85b"), 400, False, id="url-c1-nel"),
    pytest.param(request("GET", "/alice/hard/resolve/main/a%E2%80%A8b"), 400, False, id="url-line-separator"),
    pytest.param(request("GET", "/api/models/alice%0Ahard"), 400, False, id="url-lf-in-repo"),
    pytest.param(b"GET /alice/hard/resolve/main/a\rb HTTP/1.1\r\n\r\n", 400, True, id="request-line-raw-cr"),
    pytest.param(b"GARBAGE\r\n\r\n", 400, True, id="request-line-garbage"),
    pytest.param(request("PATCH", f"/api/models/{REPO}"), 501, True, id="unknown-method"),
    # body framing
    pytest.param(request("POST", "/api/repos/create", headers=b"Content-Length: abc\r\n", length=False), 400, True,
                 id="content-length-abc"),
    pytest.param(request("POST", "/api/repos/create", headers=b"Content-Length: -5\r\n", length=False), 400, True,
                 id="content-length-negative"),
    pytest.param(request("POST", "/api/repos/create", headers=b"Content-Length: 1e3\r\n", length=False), 400, True,
                 id="content-length-float"),
    pytest.param(request("POST", "/api/repos/create", b"{}", b"Content-Length: 3\r\n"), 400, True,
                 id="content-length-twice"),
    pytest.param(request("POST", "/api/repos/create", b"2\r\n{}\r\n0\r\n\r\n", b"Transfer-Encoding: chunked\r\n"),
                 400, True, id="chunked-and-content-length"),
    pytest.param(request("POST", "/api/repos/create", headers=b"Transfer-Encoding: gzip\r\n", length=False), 501,
                 True, id="transfer-encoding-gzip"),
    pytest.param(request("POST", "/api/repos/create", b"zz\r\n{}\r\n0\r\n\r\n", b"Transfer-Encoding: chunked\r\n",
                         length=False), 400, True, id="chunk-size-not-hex"),
    pytest.param(request("POST", "/api/repos/create", b"-2\r\n{}\r\n0\r\n\r\n", b"Transfer-Encoding: chunked\r\n",
                         length=False), 400, True, id="chunk-size-negative"),
    pytest.param(request("POST", "/api/repos/create", b"2\r\n{}XX0\r\n\r\n", b"Transfer-Encoding: chunked\r\n",
                         length=False), 400, True, id="chunk-without-crlf"),
    pytest.param(request("POST", "/api/repos/create", b"\r\n{}\r\n0\r\n\r\n", b"Transfer-Encoding: chunked\r\n",
                         length=False), 400, True, id="chunk-size-empty"),
    # JSON bodies
    pytest.param(post_json("/api/repos/create", None, b'{"name": '), 400, False, id="json-truncated"),
    pytest.param(post_json("/api/repos/create", ["x"]), 400, False, id="json-not-an-object"),
    pytest.param(post_json("/api/repos/create", None, b"[" * 100_000), 400, False, id="json-deeply-nested"),
    pytest.param(post_json("/api/repos/create", None, b'{"name": "\xff"}'), 400, False, id="json-not-utf8"),
    pytest.param(post_json("/api/repos/create", {"name": 5}), 400, False, id="json-name-not-a-string"),
    pytest.param(post_json("/api/repos/create", {"name": "ok", "organization": ["x"]}), 400, False,
                 id="json-organization-a-list"),
    pytest.param(post_json("/api/repos/create", {"name": CRLF_NAME}), 400, False, id="json-repo-name-crlf"),
    pytest.param(post_json(f"/api/models/{REPO}/paths-info/main", None, b"{paths"), 400, False,
                 id="paths-info-bad-json"),
    pytest.param(post_json(f"/api/models/{REPO}/paths-info/main", {"paths": [1, {}]}), 400, False,
                 id="paths-info-paths-not-strings"),
    pytest.param(request("POST", f"/api/models/{REPO}/paths-info/main", b"paths=\xff",
                         b"Content-Type: application/x-www-form-urlencoded\r\n"), 400, False,
                 id="paths-info-form-not-utf8"),
    pytest.param(post_json("/api/validate-yaml", {"repoType": ["model"], "content": "x"}), 400, False,
                 id="validate-yaml-repo-type-a-list"),
    pytest.param(post_json(f"/api/models/{REPO}/preupload/main", {"files": "f.txt"}), 400, False,
                 id="preupload-files-not-a-list"),
    pytest.param(post_json(f"/api/models/{REPO}/preupload/main", {"files": ["f.txt"]}), 400, False,
                 id="preupload-file-not-an-object"),
    pytest.param(post_json(f"/api/models/{REPO}/preupload/main", {"files": [{"path": "a\nb", "size": 1}]}), 422,
                 False, id="preupload-path-newline"),
    pytest.param(post_json(f"/{REPO}.git/info/lfs/objects/batch", {"operation": "upload", "objects": ["x"]}), 400,
                 False, id="lfs-batch-object-not-an-object"),
    pytest.param(post_json(f"/api/models/{REPO}/branch/dev2", {"startingPoint": 5}), 400, False,
                 id="branch-starting-point-not-a-string"),
    pytest.param(post_json(f"/api/models/{REPO}/branch/dev3", {"startingPoint": CRLF_NAME}), 404, False,
                 id="branch-starting-point-crlf-echoed-safely"),
    pytest.param(post_json(f"/api/models/{REPO}/tag/main", {"tag": CRLF_NAME}), 400, False, id="tag-name-crlf"),
    pytest.param(post_json(f"/api/models/{REPO}/discussions", {"title": {"a": 1}}), 400, False,
                 id="discussion-title-not-a-string"),
    # query parameters
    pytest.param(request("GET", f"/api/models/{REPO}/tree/main?cursor=abc", auth=False), 400, False, id="cursor-abc"),
    pytest.param(request("GET", f"/api/models/{REPO}/tree/main?cursor=-1", auth=False), 400, False,
                 id="cursor-negative"),
    pytest.param(request("GET", f"/api/models/{REPO}/commits/main?cursor=%00", auth=False), 400, False,
                 id="commits-cursor-nul"),
    pytest.param(request("GET", f"/api/models/{REPO}/tree/main?limit=0", auth=False), 400, False, id="limit-zero"),
    pytest.param(request("GET", f"/api/models/{REPO}/tree/main?limit=ten", auth=False), 400, False, id="limit-ten"),
    # commit payloads (a path the Hub refuses is 422, as on the Hub; other malformed payloads 400)
    pytest.param(commit(raw=b"not json\n"), 400, False, id="commit-line-not-json"),
    pytest.param(commit(raw=b'{"key": "file", "value": ["a"]}'), 400, False, id="commit-value-not-an-object"),
    pytest.param(commit(raw=b'{"key": "header", "value": {"summary": 5}}'), 400, False, id="commit-summary-an-int"),
    pytest.param(commit({"key": "file", "value": {"path": "a.txt", "content": "é"}}), 400, False,
                 id="commit-content-not-base64"),
    pytest.param(commit(add("a\r\nX-Evil: 1.txt")), 422, False, id="commit-name-crlf"),
    pytest.param(commit(add("a\x00b.txt")), 422, False, id="commit-name-nul"),
    pytest.param(commit(add("a\tb.txt")), 422, False, id="commit-name-tab"),
    pytest.param(commit(add("..\\evil.txt")), 422, False, id="commit-name-backslash"),
    pytest.param(commit(add("/etc/passwd")), 422, False, id="commit-name-absolute"),
    pytest.param(commit(add("../escape.txt")), 422, False, id="commit-name-dotdot"),
    pytest.param(commit(add("a/../../escape.txt")), 422, False, id="commit-name-inner-dotdot"),
    pytest.param(commit(add(".git/config")), 422, False, id="commit-name-dot-git"),
    pytest.param(commit(add("")), 422, False, id="commit-name-empty"),
    pytest.param(commit({"key": "deletedFolder", "value": {"path": "../"}}), 422, False,
                 id="commit-delete-folder-dotdot"),
    # sizes
    pytest.param(request("POST", "/api/repos/create", headers=b"Content-Length: 17000000\r\n", length=False), 413,
                 True, id="json-body-too-large"),
    pytest.param(request("POST", f"/api/models/{REPO}/commit/main",
                         headers=b"Content-Length: 99999999999999999999\r\n", length=False), 400, True,
                 id="content-length-absurd"),
    pytest.param(b"GET /" + b"a" * 65532, 414, True, id="request-line-too-long"),  # 65537 bytes: one too many
    pytest.param(b"GET / HTTP/1.1\r\n" + PADDING + b"X-Last: " + b"a" * (65537 - len(PADDING) - 8), 431, True,
                 id="header-section-too-large"),  # 65537 bytes of headers: one too many
    pytest.param(b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: 1\r\n" % i for i in range(101)), 431, True,
                 id="too-many-headers"),
]


@pytest.mark.parametrize("data, status, closes", BAD)
def test_malformed_request_is_refused_cleanly(hub, data, status, closes):
    refused(hub, data, status, closes)


def test_the_header_section_limit_leaves_room_for_real_requests(hub):
    # 60 KiB of headers: under the 64 KiB limit
    big = b"".join(b"X-Pad-%02d: %s\r\n" % (i, b"a" * 1000) for i in range(60))
    with Conn(hub) as conn:
        assert conn.send(request("GET", f"/api/models/{REPO}", headers=big, auth=False)).reply().status == 200


def test_a_control_character_in_a_path_is_logged_escaped(hub):
    refused(hub, request("GET", "/alice/hard/resolve/main/a\x00b"), 400, False)
    assert any(r.path == "/alice/hard/resolve/main/a%00b" and r.status == 400 for r in hub.requests)


def test_error_messages_never_inject_headers(hub):
    """A message echoing a client's CR/LF goes out percent-encoded: one header line, no X-Evil header."""
    with Conn(hub) as conn:
        reply = conn.send(post_json(f"/api/models/{REPO}/branch/dev4", {"startingPoint": CRLF_NAME})).reply()
    assert reply.status == 404 and "x-evil" not in reply.headers
    assert "x%0D%0AX-Evil: 1" in reply.headers["x-error-message"]
    assert CRLF_NAME in reply.error()  # the JSON body carries it as it was (JSON escapes it)


def test_non_ascii_names_in_headers(hub, tmp_path):
    """A file's Content-Disposition is the Hub's (filename* in UTF-8, an ASCII fallback the client reads), and a
    404 message naming a non-ASCII file goes out as UTF-8 bytes (it used to crash the answer)."""
    with Conn(hub) as conn:
        reply = conn.send(request("GET", f"/alice/hard/resolve/main/{quote(ODD_NAME)}", auth=False)).reply()
        assert reply.status == 200 and reply.body == b"odd"
        assert reply.headers["content-disposition"] == (
            "inline; filename*=UTF-8''na%C3%AFve%20%22q%22%20%E6%97%A5%E6%9C%AC.txt; filename=\"na_ve _q_ __.txt\";")
        reply = conn.send(request("HEAD", "/alice/hard/resolve/main/%E6%97%A5.txt", auth=False)).reply(head_only=True)
        assert reply.status == 404
        assert reply.headers["x-error-message"].encode("latin-1").decode() == "Entry not found: 日.txt at main"
    local_file = hf_hub_download(REPO, ODD_NAME, endpoint=hub.url, token=ALICE.secret, cache_dir=tmp_path)
    assert Path(local_file).read_bytes() == b"odd"


def test_a_commit_payload_line_is_held_to_one_inline_file(hub):
    limit = 4 * -(-(10 << 20) // 3) + (64 << 10)  # commit.max_commit_line with the LFS threshold under 10 MiB
    line = json.dumps({"key": "file", "value": {"path": "big.txt", "content": "A" * limit}}).encode()
    message = refused(hub, commit(raw=line), 413, False)  # the whole body was read: the connection goes on
    assert "commit payload line" in message


# -- LFS ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("number, status", [("abc", 400), ("0", 400), ("3", 400), ("%C2%B2", 400), ("-1", 400),
                                            ("99999999999999999999", 400)])
def test_bad_part_numbers_are_400(hub, number, status):
    upload = lfs_batch(hub, b"p" * (CHUNK + 1))  # two parts
    part = local(upload["header"]["1"]).rsplit("/", 1)[0] + "/" + number
    message = refused(hub, request("PUT", part, b"x", auth=False), status, False)
    assert "part number" in message


@pytest.mark.parametrize("parts", [[{"partNumber": "x", "etag": "e"}], [{"etag": "e"}], ["1"], {"1": "e"},
                                   [{"partNumber": True}]])
def test_bad_multipart_completions_are_400(hub, parts):
    upload = lfs_batch(hub, b"q" * (CHUNK + 1))
    refused(hub, post_json(local(upload["href"]), {"oid": "x", "parts": parts}), 400, False)


def test_lfs_bodies_are_held_to_the_declared_size(hub):
    data = b"s" * 100
    basic = local(lfs_batch(hub, data)["href"])
    refused(hub, request("PUT", basic, headers=b"Content-Length: 101\r\n", auth=False, length=False), 413, True)
    multi = lfs_batch(hub, b"m" * (CHUNK + 1))
    part = local(multi["header"]["1"])
    refused(hub, request("PUT", part, headers=b"Content-Length: %d\r\n" % (CHUNK + 1), auth=False, length=False),
            413, True)
    with Conn(hub) as conn:  # the declared size itself goes through
        assert conn.send(request("PUT", basic, data, auth=False)).reply().status == 200


def test_upload_urls_expire_and_are_capped(tmp_path):
    with _new_hub(tmp_path / "hub", upload_ttl=0.5, max_uploads=3) as hub:
        HfApi(endpoint=hub.url, token=ALICE.secret).create_repo(REPO)
        blobs = [bytes([65 + i]) * 10 for i in range(5)]
        old = local(lfs_batch(hub, blobs[0])["href"])
        time.sleep(0.6)
        assert refused(hub, request("PUT", old, blobs[0], auth=False), 404, False) == "Unknown or expired upload URL"
        hrefs = [local(lfs_batch(hub, b)["href"]) for b in blobs[1:]]  # four uploads, three kept: the first goes
        assert len(hub.hub.uploads) == 3
        refused(hub, request("PUT", hrefs[0], blobs[1], auth=False), 404, False)
        with Conn(hub) as conn:
            assert conn.send(request("PUT", hrefs[3], blobs[4], auth=False)).reply().status == 200
        # an evicted multipart upload's parts are deleted with it
        multi = lfs_batch(hub, b"m" * (CHUNK + 1))
        with Conn(hub) as conn:
            part = request("PUT", local(multi["header"]["1"]), b"m" * CHUNK, auth=False)
            assert conn.send(part).reply().status == 200
        assert list(hub.store.tmp_dir.glob("part-*"))
        for b in blobs[:3]:
            lfs_batch(hub, b + b"!")
        assert not list(hub.store.tmp_dir.glob("part-*"))


def test_twenty_thousand_abandoned_uploads_stay_capped_and_expire(tmp_path):
    now = [0.0]
    uploads = Uploads(ttl=3600, limit=10_000, clock=lambda: now[0])
    part = tmp_path / "part-1"
    part.write_bytes(b"x")
    uploads["first"] = Upload(1, "0" * 64, 10, 5, {1: part})
    for i in range(20_000):
        uploads[f"t{i}"] = Upload(1, "0" * 64, 10, None)
    assert len(uploads) == 10_000 and uploads.get("first") is None and uploads.get("t0") is None
    assert not part.exists() and uploads.get("t19999") is not None
    now[0] = 3599.0
    assert uploads.get("t10000") is not None  # used: its hour starts again
    now[0] = 3601.0
    uploads["new"] = Upload(1, "0" * 64, 10, None)
    assert len(uploads) == 2 and uploads.get("t10000") and uploads.get("new") and uploads.get("t19999") is None
    with pytest.raises(ValueError):
        Uploads(ttl=0)


# -- timeouts -----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def slow_hub(tmp_path_factory):
    with _new_hub(tmp_path_factory.mktemp("slow") / "hub", timeout=0.5) as hub:
        HfApi(endpoint=hub.url, token=ALICE.secret).create_repo(REPO)
        yield hub


def test_an_idle_connection_is_closed(slow_hub):
    with Conn(slow_hub) as conn:
        assert conn.send(VALID).reply().status == 200
        start = time.monotonic()
        assert conn.closed(wait=3) and 0.4 < time.monotonic() - start < 2


def test_a_client_dribbling_its_headers_is_cut_off(slow_hub):
    with Conn(slow_hub) as conn:
        conn.send(b"GET /api/models/alice/hard HTTP/1.1\r\n")
        start = time.monotonic()
        with pytest.raises(OSError):  # each byte well within the idle timeout, all of them not
            while time.monotonic() - start < 3:
                conn.send(b"X")
                time.sleep(0.05)
        assert time.monotonic() - start < 2
    assert_serving(slow_hub)


def test_a_stalled_body_is_408(slow_hub):
    with Conn(slow_hub) as conn:
        conn.send(request("POST", "/api/repos/create", headers=b"Content-Length: 100\r\n", length=False) + b'{"na')
        reply = conn.reply()
        assert reply.status == 408 and "stalled" in reply.error() and conn.closed()
    assert_serving(slow_hub)


def test_a_body_cut_short_is_400(slow_hub):
    with Conn(slow_hub) as conn:
        conn.send(request("POST", "/api/repos/create", headers=b"Content-Length: 100\r\n", length=False) + b'{"na')
        conn.sock.shutdown(socket.SHUT_WR)
        reply = conn.reply()
        assert reply.status == 400 and "ended after 4 of 100 bytes" in reply.error() and conn.closed()
    assert_serving(slow_hub)


def test_bad_timeouts_are_refused(tmp_path):
    for bad in (0, -1, "5", float("inf"), True):
        with pytest.raises(ValueError, match="timeout"):
            LocalHub(tmp_path / "never", timeout=bad)


# -- the harness sees a real server error ---------------------------------------------------------------------
def test_a_server_bug_is_500_and_logged(hub, server_errors, monkeypatch):
    def boom(user):
        raise RuntimeError("bug")

    monkeypatch.setattr(hub.hub, "orgs_of", boom)
    with Conn(hub) as conn:
        reply = conn.send(request("GET", "/api/whoami-v2")).reply()
    assert reply.status == 500 and reply.error() == "Internal server error: RuntimeError"
    assert [r.levelno for r in server_errors] == [logging.ERROR] and server_errors[0].exc_info
    server_errors.clear()
