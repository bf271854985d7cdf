"""The local Hub's network test knobs (throttle, throttle_total, faults), through the real huggingface_hub client.

huggingface_hub waits between its retries (1 s doubling to 8 s; Retry-After + 1 s after a 429): `fast_retries`
keeps the retries and shortens the waits to 10 ms, recording what the client asked for.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from huggingface_hub import CommitOperationAdd, HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

from chatvector.cli import main
from chatvector.localhub import LocalHub, Token
from chatvector.localhub.faults import Faults, parse_faults, parse_only
from tests.conftest import use_transfer

ROOT = Path(__file__).resolve().parents[2]
ALICE = Token("alice", "hf_alice_net_secret_0123", "write")
MB = 1_000_000
FIVES = ("500", "502", "503")


def open_hub(root: Path, **knobs) -> LocalHub:
    """A hub on ROOT with KNOBS, to use as `with open_hub(...) as hub:` (which starts and stops it)."""
    return LocalHub(root, tokens=[ALICE], lfs_threshold=256 * 1024, multipart_chunk_size=256 * 1024, **knobs)


def seed(root: Path, files: dict[str, bytes], repo_id: str = "alice/net") -> None:
    """REPO_ID with FILES on a hub at ROOT, written by a hub without knobs (so the seeding is neither paced nor faulted)."""
    with open_hub(root) as hub:
        api = HfApi(endpoint=hub.url, token=ALICE.secret)
        api.create_repo(repo_id)
        api.create_commit(repo_id, [CommitOperationAdd(name, data) for name, data in files.items()],
                          commit_message="seed")


def settled(hub: LocalHub) -> list:
    """hub.requests once it has stopped growing (the server logs each request just after answering it)."""
    seen = -1
    deadline = time.monotonic() + 5
    while len(hub.requests) != seen and time.monotonic() < deadline:
        seen = len(hub.requests)
        time.sleep(0.05)
    return list(hub.requests)


def faults_of(hub: LocalHub) -> list[str]:
    return [r.fault for r in settled(hub) if r.fault]


def raw(hub: LocalHub, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    """One request on a fresh connection: status, headers and every body byte that came before the connection closed."""
    host, port = hub.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close",
                 *(f"{k}: {v}" for k, v in (headers or {}).items())]
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while chunk := sock.recv(1 << 16):
            data += chunk
    if not data:
        return 0, {}, b""
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode().split("\r\n")
    return int(status_line.split()[1]), dict(line.split(": ", 1) for line in header_lines), body


def storage_url(hub: LocalHub, path: str) -> str:
    """Where `/resolve` sends a GET of an LFS or Xet file: the presigned storage path (with its query), which this
    same server answers under its other loopback name."""
    status, headers, _ = raw(hub, "HEAD", path)
    assert status == 302, status
    return "/" + headers["Location"].split("/", 3)[3]


def timed(fn) -> float:
    start = time.monotonic()
    fn()
    return time.monotonic() - start


def concurrently(*fns) -> list[float]:
    """Run FNS at once; each one's seconds."""
    times: list[float] = [0.0] * len(fns)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            times[i] = timed(fns[i])
        except BaseException as err:  # noqa: BLE001  (re-raised below, on the test's thread)
            errors.append(err)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(fns))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    if errors:
        raise errors[0]
    return times


# -- throttle ---------------------------------------------------------------------------------------------
def test_throttle_paces_downloads_full_and_ranged(tmp_path):
    data = os.urandom(2 * MB)
    seed(tmp_path / "hub", {"w.bin": data})
    with open_hub(tmp_path / "hub", throttle=4) as hub:
        path: list[str] = []
        took = timed(lambda: path.append(hf_hub_download("alice/net", "w.bin", endpoint=hub.url, token=ALICE.secret,
                                                         cache_dir=tmp_path / "cache")))
        assert Path(path[0]).read_bytes() == data
        assert 0.35 <= took < 3  # 2 MB at 4 MB/s: 0.5 s
        got: list = []
        url = storage_url(hub, "/alice/net/resolve/main/w.bin")
        took = timed(lambda: got.append(raw(hub, "GET", url, {"Range": "bytes=0-999999"})))
        assert got[0][0] == 206 and got[0][2] == data[:MB]
        assert 0.18 <= took < 2  # 1 MB: 0.25 s


def test_throttle_is_per_connection_and_throttle_total_is_shared(tmp_path):
    a, b = os.urandom(MB), os.urandom(MB)
    seed(tmp_path / "hub", {"a.bin": a, "b.bin": b})

    def download(hub: LocalHub, name: str, data: bytes):
        def run() -> None:
            path = hf_hub_download("alice/net", name, endpoint=hub.url, token=ALICE.secret,
                                   cache_dir=tmp_path / f"cache-{hub.url.rsplit(':', 1)[1]}-{name}")
            assert Path(path).read_bytes() == data
        return run

    with open_hub(tmp_path / "hub", throttle=4) as hub:  # each connection 4 MB/s: 1 MB each in 0.25 s
        assert all(0.15 <= t < 0.45 for t in concurrently(download(hub, "a.bin", a), download(hub, "b.bin", b)))
    with open_hub(tmp_path / "hub", throttle_total=4) as hub:  # 4 MB/s for both: 2 MB in 0.5 s, half each
        assert all(0.38 <= t < 1.5 for t in concurrently(download(hub, "a.bin", a), download(hub, "b.bin", b)))


def test_throttle_paces_uploads_and_throttle_total_shares_them(tmp_path):
    seed(tmp_path / "hub", {"x.txt": b"x"})

    def upload(hub: LocalHub, name: str, data: bytes):  # LFS, in parts of 256 KiB
        return lambda: HfApi(endpoint=hub.url, token=ALICE.secret).upload_file(
            path_or_fileobj=data, path_in_repo=name, repo_id="alice/net")

    with open_hub(tmp_path / "hub", throttle=2) as hub:
        assert 0.35 <= timed(upload(hub, "big.bin", os.urandom(MB))) < 3  # 1 MB at 2 MB/s: 0.5 s
    one, two = os.urandom(MB // 2), os.urandom(MB // 2)
    with open_hub(tmp_path / "hub", throttle_total=2) as hub:  # two uploads at once share 2 MB/s: 0.5 s each
        assert all(0.38 <= t < 2 for t in concurrently(upload(hub, "one.bin", one), upload(hub, "two.bin", two)))
        for name, data in (("one.bin", one), ("two.bin", two)):
            path = hf_hub_download("alice/net", name, endpoint=hub.url, token=ALICE.secret, cache_dir=tmp_path / "c")
            assert Path(path).read_bytes() == data


def test_bad_throttle_values_are_refused(tmp_path):
    for kwargs, message in (({"throttle": -1}, "throttle -1: must be megabytes per second"),
                            ({"throttle_total": "5"}, "throttle_total '5': must be megabytes per second"),
                            ({"throttle": float("inf")}, "throttle inf: must be")):
        with pytest.raises(ValueError, match=message):
            LocalHub(tmp_path / "never", **kwargs)


# -- faults: the client copes ----------------------------------------------------------------------------
FILES = {"config.json": b'{"a": 1}', "notes.txt": b"n" * 1000, "big.bin": os.urandom(300_000),
         "multi.bin": os.urandom(700_000)}


def test_downloads_survive_a_few_percent_of_faults(tmp_path, fast_retries):
    """Faults on every endpoint a download uses. Seed 2 injects a 503, a 429 and a dropped GET into a snapshot and
    a file download (requests one at a time, so the same faults every run); huggingface_hub retries, resumes the
    cut GET with a Range, and gets every byte. (Not every seed passes: huggingface_hub retries neither the
    snapshot's repo-info GET nor a 5xx on a file's GET.)"""
    seed(tmp_path / "hub", FILES)
    with open_hub(tmp_path / "hub", faults="5xx=0.08,429=0.04,drop=0.08", faults_seed=2) as hub:
        snapshot = Path(snapshot_download("alice/net", endpoint=hub.url, token=ALICE.secret, max_workers=1,
                                          cache_dir=tmp_path / "cache"))
        for name, data in FILES.items():
            assert (snapshot / name).read_bytes() == data
        path = hf_hub_download("alice/net", "big.bin", endpoint=hub.url, token=ALICE.secret,
                               local_dir=tmp_path / "local")
        assert Path(path).read_bytes() == FILES["big.bin"]
        log = settled(hub)
    assert faults_of(hub) == ["503", "429", "drop"]
    faulted = {r.fault: r for r in log if r.fault}
    assert faulted["503"].status == 503 and faulted["429"].status == 429
    assert faulted["drop"].method == "GET" and faulted["drop"].status in (200, 206)
    assert max(fast_retries) >= 1  # the 429's Retry-After: 1 was honoured (the client asks for 1 s + 1)


def test_uploads_survive_a_few_percent_of_faults(tmp_path, fast_retries, lfs_transfer):
    """upload_folder (one multipart LFS file) and create_commit (one thread) through faults on the endpoints of an
    upload that huggingface_hub retries: preupload and LFS (not the commit POST, which it never retries, nor the
    downloads that check the bytes). Seed 4 injects 429s, 503s and dropped PUTs; the same ones every run."""
    seed(tmp_path / "hub", {"x.txt": b"x"})
    folder = tmp_path / "up"
    folder.mkdir()
    uploaded = {"config.json": b'{"b": 2}', "multi.bin": os.urandom(700_000)}
    for name, data in uploaded.items():
        (folder / name).write_bytes(data)
    extra = {"one.bin": os.urandom(300_000), "two.bin": os.urandom(400_000)}
    with open_hub(tmp_path / "hub", faults="5xx=0.08,429=0.04,drop=0.08", faults_seed=4,
                  faults_only=["PUT /", "/info/lfs/", "/preupload/", "POST /lfs-upload/"]) as hub:
        api = HfApi(endpoint=hub.url, token=ALICE.secret)
        api.upload_folder(repo_id="alice/net", folder_path=folder)
        api.create_commit("alice/net", [CommitOperationAdd(n, d) for n, d in extra.items()], commit_message="more",
                          num_threads=1)
        for name, data in {**uploaded, **extra}.items():
            path = hf_hub_download("alice/net", name, endpoint=hub.url, token=ALICE.secret, cache_dir=tmp_path / "c")
            assert Path(path).read_bytes() == data
        assert [c.title for c in api.list_repo_commits("alice/net")][:2] == ["more", "Upload folder using huggingface_hub"]
        faulted = [(r.method, r.fault, r.status) for r in settled(hub) if r.fault]
    assert [fault for _, fault, _ in faulted] == ["429", "drop", "503", "drop", "429", "drop"]
    assert all(status == (0 if fault == "drop" else int(fault)) for _, fault, status in faulted)
    assert {method for method, _, _ in faulted} <= {"POST", "PUT"}


def test_xet_uploads_and_downloads_survive_a_few_percent_of_faults(tmp_path, fast_retries):
    """The same through Xet: faults on the token route and every CAS endpoint (xorbs, shards, reconstructions,
    ranged fetches) are retried by the client, and every file comes back whole."""
    seed(tmp_path / "hub", {"x.txt": b"x"})
    files = {f"w{i}.bin": os.urandom(300_000 + i * 50_000) for i in range(4)}
    with open_hub(tmp_path / "hub", faults="5xx=0.1,429=0.05,drop=0.1", faults_seed=3,
                  faults_only=["/xet-cas/", "/xet-write-token/", "/xet-read-token/"]) as hub:
        api = HfApi(endpoint=hub.url, token=ALICE.secret)
        api.create_commit("alice/net", [CommitOperationAdd(n, d) for n, d in files.items()], commit_message="more")
        for name, data in files.items():
            path = hf_hub_download("alice/net", name, endpoint=hub.url, token=ALICE.secret, cache_dir=tmp_path / "c")
            assert Path(path).read_bytes() == data
        faulted = [r for r in settled(hub) if r.fault]
    assert faulted and all("/xet-" in r.path for r in faulted)
    assert any(r.path.startswith("/xet-cas/v1/xorbs/") for r in settled(hub) if not r.fault)  # the Xet path ran


def test_persistent_5xx_fails_after_bounded_retries(tmp_path, fast_retries):
    """5xx on every request: huggingface_hub gives up after its retries with the server's error, not a hang."""
    seed(tmp_path / "hub", {"f.txt": b"f"})
    with open_hub(tmp_path / "hub", faults="5xx=1") as hub:
        start = time.monotonic()
        with pytest.raises(LocalEntryNotFoundError) as exc:  # the HEAD failed: "cannot find ... in the local cache"
            hf_hub_download("alice/net", "f.txt", endpoint=hub.url, token=ALICE.secret, cache_dir=tmp_path / "c")
        with pytest.raises(HfHubHTTPError) as listing:
            HfApi(endpoint=hub.url, token=ALICE.secret).list_repo_files("alice/net")
        assert time.monotonic() - start < 5
    cause = exc.value.__cause__
    assert isinstance(cause, HfHubHTTPError) and cause.response.status_code in (500, 502, 503)
    assert "fault injected by the local Hub" in str(cause) and "fault injected by the local Hub" in str(listing.value)
    assert listing.value.response.status_code in (500, 502, 503)
    log = settled(hub)
    heads, listing = [r for r in log if r.method == "HEAD"], [r for r in log if "/tree/" in r.path]
    assert 2 <= len(heads) <= 7 and len(listing) == 6 and len(log) == len(heads) + 6  # listing: 1 try, 5 retries
    assert all(r.fault == str(r.status) for r in log)


# -- faults on the wire ----------------------------------------------------------------------------------
def test_5xx_faults_are_500_502_503_logged_with_their_status(tmp_path):
    seed(tmp_path / "hub", {"f.txt": b"f"})
    log_file = tmp_path / "access.log"
    with open_hub(tmp_path / "hub", faults="5xx=1", log_file=log_file) as hub:
        conn = http.client.HTTPConnection(hub.url.removeprefix("http://"), timeout=10)
        statuses = []
        for _ in range(30):  # one keep-alive connection: a fault answer leaves it usable
            conn.request("GET", "/alice/net/resolve/main/f.txt")
            resp = conn.getresponse()
            body = resp.read()
            statuses.append(resp.status)
            assert b"fault injected by the local Hub" in body and "fault injected" in resp.headers["X-Error-Message"]
        conn.close()
        assert raw(hub, "GET", "/api/whoami-v2")[0] == 401  # not an endpoint downloads or uploads use: no fault
    assert set(statuses) == {500, 502, 503}
    assert [r.fault for r in hub.requests] == [str(s) for s in statuses] + [None]
    lines = log_file.read_text().splitlines()
    assert [line.split()[3] for line in lines[:30]] == [str(s) for s in statuses]
    assert all(line.endswith(f" fault={s}") for line, s in zip(lines, statuses))
    assert "fault=" not in lines[30]


def test_429_fault_carries_retry_after_and_rate_limit_headers(tmp_path):
    seed(tmp_path / "hub", {"f.txt": b"f"})
    with open_hub(tmp_path / "hub", faults="429=1") as hub:
        status, headers, body = raw(hub, "HEAD", "/alice/net/resolve/main/f.txt")
        assert status == 429 and headers["Retry-After"] == "1" and body == b""
        assert headers["RateLimit"] == '"api";r=0;t=1' and "q=500;w=300" in headers["RateLimit-Policy"]
        status, headers, body = raw(hub, "GET", "/api/models/alice/net")
        assert status == 429 and headers["Retry-After"] == "1" and b"rate limit" in body
    assert [(r.method, r.status, r.fault) for r in hub.requests] == [("HEAD", 429, "429"), ("GET", 429, "429")]


def test_dropped_get_delivers_a_truncated_body(tmp_path):
    """A dropped GET of a file's bytes (on the storage host, where `/resolve` redirects) is cut short mid-body."""
    data = os.urandom(100_000)
    seed(tmp_path / "hub", {"w.bin": data})
    log_file = tmp_path / "access.log"
    with open_hub(tmp_path / "hub", faults="drop=1", faults_only=["GET /cdn-lfs/"], log_file=log_file) as hub:
        url = storage_url(hub, "/alice/net/resolve/main/w.bin")  # (a HEAD: not faulted)
        status, headers, body = raw(hub, "GET", url)
        assert status == 200 and int(headers["Content-Length"]) == len(data) > len(body) > 0
        assert body == data[:len(body)]
        status, headers, body = raw(hub, "GET", url, {"Range": "bytes=1000-1999"})
        assert status == 206 and headers["Content-Length"] == "1000" and body == data[1000:1500]
        assert raw(hub, "HEAD", url)[0] == 200  # only GETs of files are faulted
        conn = http.client.HTTPConnection(hub.url.removeprefix("http://"), timeout=10)
        conn.request("GET", url)
        with pytest.raises(http.client.IncompleteRead):
            conn.getresponse().read()
        conn.close()
    assert [(r.status, r.fault) for r in hub.requests] == [(302, None), (200, "drop"), (206, "drop"), (200, None),
                                                           (200, "drop")]
    sha256 = hashlib.sha256(data).hexdigest()
    assert log_file.read_text().splitlines()[1].endswith(f" GET /cdn-lfs/{sha256} 200 user=- fault=drop")


def test_dropped_head_gets_no_answer(tmp_path):
    seed(tmp_path / "hub", {"f.txt": b"f"})
    with open_hub(tmp_path / "hub", faults="drop=1", faults_only=["HEAD /"]) as hub:
        assert raw(hub, "HEAD", "/alice/net/resolve/main/f.txt") == (0, {}, b"")
        assert raw(hub, "GET", "/alice/net/resolve/main/f.txt")[2] == b"f"
    assert [(r.method, r.status, r.fault) for r in hub.requests][0] == ("HEAD", 0, "drop")


@pytest.mark.parametrize("faults, only, transfer", [
    ("drop=1", "POST /commit/", "xet"), ("5xx=1", "POST /commit/", "xet"), ("429=1", "POST /commit/", "xet"),
    ("drop=1", "PUT /lfs-upload/", "lfs"), ("drop=1", "POST /preupload/", "xet"),
    ("drop=1", "POST /xet-cas/v1/xorbs/", "xet"), ("5xx=1", "POST /xet-cas/v2/shards", "xet")])
def test_a_faulted_write_leaves_the_repo_unchanged(tmp_path, fast_retries, monkeypatch, faults, only, transfer):
    use_transfer(monkeypatch, transfer)
    seed(tmp_path / "hub", {"a.txt": b"old"})
    blob = os.urandom(300_000)  # LFS
    with open_hub(tmp_path / "hub", faults=faults, faults_only=[only], log_file=tmp_path / "access.log") as hub:
        api = HfApi(endpoint=hub.url, token=ALICE.secret)
        before = api.model_info("alice/net").sha
        with pytest.raises(Exception):  # noqa: B017  (HfHubHTTPError, or the client's network error for a drop)
            api.create_commit("alice/net", [CommitOperationAdd("a.txt", b"new"), CommitOperationAdd("b.bin", blob)],
                              commit_message="never")
        assert api.model_info("alice/net").sha == before
        assert api.list_repo_files("alice/net") == [".gitattributes", "a.txt"]
        path = hf_hub_download("alice/net", "a.txt", endpoint=hub.url, token=ALICE.secret, cache_dir=tmp_path / "c")
        assert Path(path).read_bytes() == b"old"
        if "lfs-upload" in only or "xet-cas" in only:  # the bytes of a failed upload are not kept
            assert not hub.store.has_blob(__import__("hashlib").sha256(blob).hexdigest(), len(blob))
        faulted = [r for r in settled(hub) if r.fault]
    method, part = only.split()
    assert faulted and all(r.method == method and part in r.path for r in faulted)
    assert all(r.status == (0 if r.fault == "drop" else int(r.fault)) for r in faulted)
    log_text = (tmp_path / "access.log").read_text()
    status = "-" if faults == "drop=1" else faulted[0].status  # a dropped write got no answer
    assert f"{method} {faulted[0].path} {status} user=" in log_text and f" fault={faulted[0].fault}\n" in log_text


def test_faults_are_the_same_for_the_same_seed_and_parse_strictly():
    def draws(seed: int) -> list:
        f = Faults("5xx=0.2,429=0.1,drop=0.2", seed)
        return [f.draw("GET", "/x/resolve/main/f") for _ in range(200)]

    assert draws(7) == draws(7) != draws(8)
    counts = {kind: sum(d == kind for d in draws(7)) for kind in ("500", "502", "503", "429", "drop", None)}
    assert all(counts.values()) and 60 <= counts["500"] + counts["502"] + counts["503"] + counts["429"] < 140
    only = Faults("5xx=1", only="GET /resolve/")  # a single entry, not its characters
    assert only.draw("HEAD", "/a/b/resolve/main/f") is None and only.draw("GET", "/a/b/resolve/main/f") in FIVES
    assert parse_faults(" 429=0.5 , drop=0.25") == {"429": 0.5, "drop": 0.25}
    assert parse_only("/lfs-upload/") == (None, "/lfs-upload/")
    for spec in ("", "5xx", "5xx=a", "6xx=0.1", "5xx=0.1,5xx=0.2", "5xx=-0.1", "5xx=nan", "5xx=0.6,drop=0.6"):
        with pytest.raises(ValueError, match="must be|more than 1"):
            parse_faults(spec)
    for entry in ("get /resolve/", "GET", "PATCH /x", "GET /a /b"):
        if entry == "GET":  # a bare word is a path substring
            assert parse_only(entry) == (None, "GET")
            continue
        with pytest.raises(ValueError, match=r"must be \[METHOD \]PATH-SUBSTRING"):
            parse_only(entry)
    with pytest.raises(ValueError, match="faults_seed '1': must be an integer"):
        Faults("5xx=0.1", seed="1")


# -- the command line -------------------------------------------------------------------------------------
def serve_error(capsys, tmp_path, *args: str) -> str:
    """The one stderr line of `chatvector hub serve ARGS` that fails before serving (exit code 2)."""
    assert main(["hub", "serve", "--root", str(tmp_path / "never"), *args]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0]
    assert not (tmp_path / "never").exists()
    return lines[0]


RATE = "must be megabytes per second, a number of 0 or more (e.g. 10 or 2.5; 0: unlimited)"
FORM = "must be KIND=P[,KIND=P...] with KIND one of 5xx, 429, drop and P between 0 and 1 (together at most 1)"


@pytest.mark.parametrize("args, expected", [
    (["--throttle", "x"], f"error: --throttle x: {RATE}"),
    (["--throttle", "-2"], f"error: --throttle -2: {RATE}"),
    (["--throttle-total", "nan"], f"error: --throttle-total nan: {RATE}"),
    (["--faults", "5xx=2"], f"error: --faults 5xx=2: the probability of 5xx is 2, not between 0 and 1; {FORM}, "
                            "e.g. 5xx=0.05,429=0.02,drop=0.02"),
    (["--faults", "500=0.1"], f"error: --faults 500=0.1: {FORM}, e.g. 5xx=0.05,429=0.02,drop=0.02"),
    (["--faults", "5xx=0.1", "--faults-seed", "one"], "error: --faults-seed one: must be an integer, e.g. 0"),
    (["--faults", "5xx=0.1", "--faults-only", "get /resolve/"],
     "error: --faults-only 'get /resolve/': must be [METHOD ]PATH-SUBSTRING with METHOD one of GET, HEAD, POST, "
     "PUT, DELETE, e.g. 'GET /resolve/' or /lfs-upload/"),
    (["--faults-only", "/resolve/"], "error: --faults-only needs --faults, e.g. --faults 5xx=0.05,429=0.02,drop=0.02"),
    (["--faults-seed", "3"], "error: --faults-seed needs --faults, e.g. --faults 5xx=0.05,429=0.02,drop=0.02"),
])
def test_cli_rejects_bad_network_knobs(capsys, tmp_path, args, expected):
    assert serve_error(capsys, tmp_path, *args) == expected


def test_cli_help_lists_the_network_knobs(capsys):
    with pytest.raises(SystemExit):
        main(["hub", "serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--throttle MB_PER_S", "--throttle-total MB_PER_S", "--faults SPEC", "--faults-seed N",
                 "--faults-only '[METHOD ]PATH-SUBSTRING'", "--faults 5xx=0.05,429=0.02,drop=0.02", "fault="):
        assert flag in out, flag


def test_cli_serve_with_faults_logs_them(tmp_path):
    root = tmp_path / "cli-hub"
    proc = subprocess.Popen(
        [sys.executable, "-m", "chatvector", "hub", "serve", "--root", str(root), "--token", "dave=hf_dave_net:write",
         "--throttle", "50", "--throttle-total", "100", "--faults", "5xx=1", "--faults-seed", "3",
         "--faults-only", "/resolve/"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        line = proc.stdout.readline().strip()
        url = line.split()[2]
        assert line == (f"Serving on {url} (throttle 50 MB/s a connection; throttle-total 100 MB/s; faults 5xx=1 "
                        "seed 3 only '/resolve/')")
        client = HfApi(endpoint=url, token="hf_dave_net")
        client.create_repo("dave/cli")
        client.upload_file(path_or_fileobj=b"hello", path_in_repo="h.txt", repo_id="dave/cli")  # not faulted
        conn = http.client.HTTPConnection(url.removeprefix("http://"), timeout=10)
        conn.request("GET", "/dave/cli/resolve/main/h.txt")
        assert conn.getresponse().status in (500, 502, 503)
        conn.close()
        deadline = time.monotonic() + 10  # the server logs a request just after answering it
        while " fault=" not in (root / "access.log").read_text() and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    faulted = [x for x in (root / "access.log").read_text().splitlines() if " fault=" in x]
    assert len(faulted) == 1 and " GET /dave/cli/resolve/main/h.txt 50" in faulted[0]
    assert faulted[0].rsplit(" ", 1)[1] in ("fault=500", "fault=502", "fault=503")
    assert "hf_dave_net" not in stderr
