"""Stream mode's input side: the merge reads each input file straight from the Hub with HTTP range
requests, and no input byte touches the disk.

    reader = StreamReader(remote_files, headers=api._build_hf_headers())
    run_merge(jobs, out_dir, inputs=reader, ...)     # jobs' sources name the files' keys ("hub://...")
    digests = reader.finish()                        # every file hashed whole and checked, or MergeError

How the bytes come in
  Each file is cut into fixed `chunk_bytes` ranges (adjacent tensors share a request; a large tensor
  spans several). One fetch order is fixed up front: by when the merge first needs a chunk, but front to
  back within each file, so that every file is hashed in one pass as it streams (sha256 for an LFS
  listing, the git blob id for a small file) and compared with the Hub's listing as soon as it is
  complete. `connections` fetchers work down that order, so a high-latency link stays full.

Memory
  Chunks stay in memory from their arrival until the merge has released every byte it needs of them
  (`release`, called by the engine as it consumes its inputs), but never more than `window_bytes` of them
  (in flight included): the fetchers wait for room. Should the merge wait for a chunk while the window is
  full of chunks it needs only later (files whose order differs from the output's), the chunk needed last
  is dropped and fetched again when it is needed, checked then against the sha256 it had the first time.
  Bytes fetched twice are counted (`stats.refetched`); with the plan's order (cp's own) and base and chat
  laid out like cp they do not happen.

Requests go through huggingface_hub's HTTP session and `http_backoff` (auth, endpoint, user agent,
retries with backoff on 429/5xx and dropped connections); a range that still fails stops the run with
one line naming the source and the file.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from chatvector.errors import MergeError
from chatvector.merge.safetensors_io import Header, TensorInfo, parse_header

log = logging.getLogger(__name__)

CHUNK_BYTES = 16 << 20  # one range request
CONNECTIONS = 8  # range requests in flight
WINDOW_BYTES = 1 << 30  # chunks held in memory at once, in flight included
HEADER_PROBE = 64 << 10  # first request for a header (most fit); a larger header takes a second one
READ_ATTEMPTS = 3  # a short or malformed 206 is retried this often (http_backoff retries the rest)


@dataclass(frozen=True)
class RemoteFile:
    """One input file on the Hub, as the plan lists it."""

    key: str  # the merge's name for it: "hub://{repo}@{sha}/{file}"
    url: str  # its resolve URL at the pinned commit
    size: int
    label: str  # for messages: "cp acme/x@1a2b3c4: model-00001-of-00004.safetensors"
    sha256: str | None = None  # the LFS oid, when the listing has one
    git_id: str | None = None  # the git blob id, for a file stored without LFS
    head_key: tuple[str, str, str] | None = None  # (repo, sha, file): its head as planning read it (probes.py)


@dataclass
class StreamStats:
    files: int = 0
    bytes_total: int = 0  # of the files streamed
    fetched: int = 0  # bytes received (first reads)
    refetched: int = 0  # bytes received again (chunks dropped from a full window)
    requests: int = 0
    peak_window: int = 0  # most bytes of chunks held at once
    window: int = 0
    digests: dict[str, str] = field(default_factory=dict)  # key → sha256 hex of the whole file
    started: float | None = None  # monotonic time of the first request, and of the last chunk's arrival
    ended: float | None = None

    @property
    def seconds(self) -> float:
        return (self.ended - self.started) if self.started is not None and self.ended is not None else 0.0


class RangeClient:
    """Range GETs on resolve URLs through huggingface_hub's session, with its retries."""

    def __init__(self, headers: Mapping[str, str] | None = None, *, max_retries: int | None = None,
                 base_wait: float | None = None, max_wait: float | None = None):
        from chatvector.hub.retry import policy

        rules = policy()  # CHATVECTOR_HTTP_ATTEMPTS / _BACKOFF, as for the other calls
        attempts, base_wait = rules.attempts, rules.first_wait if base_wait is None else base_wait
        self.headers = dict(headers or {})
        self.retry = {"max_retries": attempts - 1 if max_retries is None else max_retries,
                      "base_wait_time": base_wait, "max_wait_time": 8 * base_wait if max_wait is None else max_wait}

    def get(self, f: RemoteFile, start: int, end: int) -> bytes:
        """Bytes [start, end) of `f`, those the plan read already from memory; MergeError naming the file when
        they cannot be had."""
        from chatvector.hub import probes

        head = probes.recall(f.head_key)
        if start < len(head):
            known = head[start:min(end, len(head))]
            return known if start + len(known) == end else known + self._fetch(f, start + len(known), end)
        return self._fetch(f, start, end)

    def _fetch(self, f: RemoteFile, start: int, end: int) -> bytes:
        from huggingface_hub.errors import HfHubHTTPError
        from huggingface_hub.utils import hf_raise_for_status, http_backoff

        want = end - start
        headers = {**self.headers, "Range": f"bytes={start}-{end - 1}"}
        problem = ""
        for _ in range(READ_ATTEMPTS):
            try:
                response = http_backoff("GET", f.url, headers=headers, follow_redirects=True, **self.retry)
                hf_raise_for_status(response)
            except HfHubHTTPError as err:
                status = err.response.status_code if err.response is not None else "?"
                raise MergeError(f"{f.label}: the Hub answered HTTP {status} to a read of bytes {start}-{end - 1} "
                                 f"after retries ({_first_line(err)}); run again later") from None
            except Exception as err:  # noqa: BLE001 - httpx's network errors, after http_backoff's retries
                raise MergeError(f"{f.label}: reading bytes {start}-{end - 1} failed after retries: "
                                 f"{type(err).__name__}: {_first_line(err)}") from None
            data = response.content
            total = _content_range_total(response.headers.get("Content-Range"))
            if response.status_code == 200 and start == 0 and want == f.size:
                total = len(data)
            elif response.status_code != 206:
                raise MergeError(f"{f.label}: the server ignored the Range header (HTTP {response.status_code}); "
                                 "stream mode needs range requests: use --fetch snapshot")
            if total is not None and total != f.size:
                raise MergeError(f"{f.label}: the Hub serves a {total}-byte file but the listing says {f.size} bytes"
                                 " (the file changed under the pinned commit?)")
            if len(data) == want:
                return data
            problem = f"got {len(data)} of {want} bytes"
        raise MergeError(f"{f.label}: reading bytes {start}-{end - 1} kept failing ({problem})")


class _Chunk:
    __slots__ = ("file", "index", "start", "end", "rank", "needs", "state", "data", "digest")

    def __init__(self, file: RemoteInput, index: int, start: int, end: int):
        self.file, self.index, self.start, self.end = file, index, start, end
        self.rank = -1.0  # when the merge first needs it: job index + how far into the tensor it lies
        self.needs: list[list] = []  # [lo, hi, rank] byte ranges the merge has still to read
        self.state = _PENDING
        self.data: bytes | None = None
        self.digest: bytes | None = None  # sha256 of its bytes, once hashed

    @property
    def size(self) -> int:
        return self.end - self.start


_PENDING, _FLIGHT, _HERE, _GONE = "pending", "flight", "here", "gone"  # GONE: hashed, then freed or dropped


class RemoteInput:
    """One remote input file, with InputFile's methods (what the engine calls)."""

    def __init__(self, reader: StreamReader, remote: RemoteFile, header: Header, needed: Mapping[str, int],
                 chunk_bytes: int):
        self.reader, self.remote, self.header, self.path = reader, remote, header, header.path
        size = remote.size
        self.chunks = [_Chunk(self, i, a, min(size, a + chunk_bytes)) for i, a in enumerate(range(0, size, chunk_bytes))]
        self.chunk_bytes = chunk_bytes
        for name, job in needed.items():
            info = header.tensors[name]
            a, b = info.start, info.start + info.numel * info.itemsize
            for c in self.chunks[a // chunk_bytes: (b - 1) // chunk_bytes + 1] if b > a else ():
                # the engine walks a tensor front to back, and cp, base and chat side by side
                rank = job + (max(a, c.start) - a) / (b - a)
                c.needs.append([max(a, c.start), min(b, c.end), rank])
                c.rank = rank if c.rank < 0 else min(c.rank, rank)
        self.hashed = 0  # chunks hashed, in order
        self._sha256 = hashlib.sha256()
        self._git = hashlib.sha1(b"blob %d\0" % size) if remote.git_id else None
        self._hash_lock = threading.Lock()

    # -- InputFile's interface --------------------------------------------------------------------------
    def tensor(self, info: TensorInfo, first: int, count: int) -> torch.Tensor:
        dt = info.torch_dtype
        assert dt is not None and 0 <= first and first + count <= info.numel
        if count == 0:
            return torch.empty(0, dtype=dt)
        start = info.start + first * info.itemsize
        return _frombuffer(self.reader.read(self, start, start + count * info.itemsize), dt)

    def bytes(self, start: int, nbytes: int) -> torch.Tensor:
        if nbytes == 0:
            return torch.empty(0, dtype=torch.uint8)
        return _frombuffer(self.reader.read(self, start, start + nbytes), torch.uint8)

    def willneed(self, start: int, end: int) -> None:
        """The fetchers already work ahead in the merge's order."""

    def release(self, start: int, end: int) -> None:
        self.reader.release(self, start, end)

    def close(self) -> None:
        """The reader owns the connections (`StreamReader.close`)."""

    # -- hashing, front to back -------------------------------------------------------------------------
    def hash_arrived(self) -> None:
        """Hash the chunks that have arrived in order; when the file is complete, check it."""
        with self._hash_lock:
            while self.hashed < len(self.chunks):
                c = self.chunks[self.hashed]
                data = c.data if c.state == _HERE else None
                if data is None:
                    return
                self._sha256.update(data)
                if self._git is not None:
                    self._git.update(data)
                c.digest = hashlib.sha256(data).digest()
                self.hashed += 1
                self.reader.hashed(c)
            if self.hashed == len(self.chunks) and self.remote.key not in self.reader.stats.digests:
                self._check_whole()

    def _check_whole(self) -> None:
        got = self._sha256.hexdigest()
        self.reader.stats.digests[self.remote.key] = got
        if self.remote.sha256 and got != self.remote.sha256:
            raise MergeError(f"{self.remote.label}: the bytes read have sha256 {got[:12]}…, the Hub lists "
                             f"{self.remote.sha256[:12]}…; nothing was published: run again (a corrupt "
                             "transfer), or report it to the repository's owner")
        if self._git is not None and self.remote.git_id and self._git.hexdigest() != self.remote.git_id:
            raise MergeError(f"{self.remote.label}: the bytes read have git blob id {self._git.hexdigest()[:12]}…, "
                             f"the Hub lists {self.remote.git_id[:12]}…; nothing was published: run again")


class StreamReader:
    """The engine's InputReader for remote files (see the module docstring). Not reusable: one merge."""

    def __init__(self, files: Mapping[str, RemoteFile], *, headers: Mapping[str, str] | None = None,
                 client: RangeClient | None = None, chunk_bytes: int = CHUNK_BYTES,
                 connections: int = CONNECTIONS, window_bytes: int = WINDOW_BYTES,
                 on_bytes: Callable[[int], None] | None = None, skip: frozenset[str] = frozenset()):
        self.files = dict(files)
        self.client = client or RangeClient(headers)
        self.chunk_bytes = max(4096, chunk_bytes)
        self.connections = max(1, connections)
        self.window = max(window_bytes, self.chunk_bytes)
        self.on_bytes = on_bytes or (lambda n: None)
        self.skip = skip  # keys of files not to stream when no tensor of theirs is needed (a resumed run)
        self.stats = StreamStats(window=self.window)
        self.opened: dict[str, RemoteInput] = {}
        self._headers: dict[str, Header] = {}
        self._cond = threading.Condition()
        self._order: list[_Chunk] = []
        self._next = 0  # position in _order of the next chunk to fetch
        self._held = 0  # bytes of chunks in flight or in memory
        self._resident: set[_Chunk] = set()
        self._waiting = 0  # readers waiting for a chunk not yet here
        self._error: BaseException | None = None
        self._closed = False
        self._threads: list[threading.Thread] = []

    # -- InputReader -------------------------------------------------------------------------------------
    def header(self, key: str) -> Header:
        """The file's parsed header, read once (the merge and the spot check ask for it)."""
        if key in self._headers:
            return self._headers[key]
        remote = self._remote(key)
        probe = self.client.get(remote, 0, min(remote.size, HEADER_PROBE)) if remote.size else b""

        def read(start: int, n: int) -> bytes:
            if start + n <= len(probe):
                return probe[start:start + n]
            return self.client.get(remote, start, min(remote.size, start + n))

        self._headers[key] = parse_header(key, remote.size, read)
        return self._headers[key]

    def open(self, header: Header, needed: Mapping[str, int]) -> RemoteInput:
        remote = self._remote(str(header.path))
        f = RemoteInput(self, remote, header, needed, self.chunk_bytes)
        self.opened[remote.key] = f
        return f

    # -- the fetchers ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Fix the fetch order and start the fetchers (the first read does it, once every file is open)."""
        with self._cond:
            if self._threads or self._closed:
                return
            order: list[tuple[float, int, int, _Chunk]] = []
            for n, f in enumerate(self.opened.values()):
                needed = any(c.needs for c in f.chunks)
                if not needed and f.remote.key in self.skip:
                    continue  # a resumed run: checked by the run that used it
                running = -1.0 if needed else float(1 << 62)  # a file nothing reads: streamed last, for its hash
                for c in f.chunks:  # front to back within a file: a chunk waits for the ones before it
                    if c.needs:
                        running = max(running, c.rank)
                    order.append((running, n, c.index, c))
                self.stats.files += 1
                self.stats.bytes_total += f.remote.size
            self._order = [c for *_, c in sorted(order, key=lambda o: o[:3])]
            self.stats.started = time.monotonic()
            for i in range(min(self.connections, len(self._order)) or 0):
                t = threading.Thread(target=self._fetch_loop, name=f"stream-{i}", daemon=True)
                t.start()
                self._threads.append(t)

    def _fetch_loop(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._error is not None or self._closed or self._next >= len(self._order):
                        return
                    c = self._order[self._next]
                    if self._held == 0 or self._held + c.size <= self.window:
                        break
                    if not (self._waiting and self._drop_one()):
                        self._cond.wait(0.25)
                self._next += 1
                c.state = _FLIGHT
                self._held += c.size
                self.stats.peak_window = max(self.stats.peak_window, self._held)
            try:
                data = self.client.get(c.file.remote, c.start, c.end)
            except BaseException as err:  # noqa: BLE001 - handed to every reader, raised there
                self._fail(err)
                return
            with self._cond:
                c.data, c.state = data, _HERE
                self._resident.add(c)
                self.stats.fetched += len(data)
                self.stats.requests += 1
                self.stats.ended = time.monotonic()
                self._cond.notify_all()
            self.on_bytes(len(data))
            try:
                c.file.hash_arrived()
            except BaseException as err:  # noqa: BLE001 - a file whose hash does not match
                self._fail(err)
                return

    def hashed(self, c: _Chunk) -> None:
        """`c` is hashed: free it if the merge needs nothing more of it."""
        with self._cond:
            if not c.needs:
                self._free(c)

    def _free(self, c: _Chunk) -> None:
        if c.state == _HERE:
            self._resident.discard(c)
            c.data, c.state = None, _GONE
            self._held -= c.size
            self._cond.notify_all()

    def _drop_one(self) -> bool:
        """The merge waits and the window is full: drop the hashed chunk needed last (read again later)."""
        hashed = [c for c in self._resident if c.digest is not None]
        if not hashed:
            return False
        self._free(max(hashed, key=lambda c: min((n[2] for n in c.needs), default=1 << 62)))
        return True

    def _fail(self, err: BaseException) -> None:
        with self._cond:
            if self._error is None:
                self._error = err
            self._cond.notify_all()

    def _raise(self) -> None:
        err = self._error
        if isinstance(err, MergeError):
            raise MergeError(str(err)) from None
        raise MergeError(f"streaming the inputs failed: {type(err).__name__}: {err}") from err

    # -- what the engine's reads come to ------------------------------------------------------------------
    def read(self, f: RemoteInput, start: int, end: int) -> memoryview | bytes:
        """File bytes [start, end): a view of one chunk, or a copy joining several."""
        if not self._threads:
            self.start()
        size = self.chunk_bytes
        parts = []
        for c in f.chunks[start // size: (end - 1) // size + 1]:
            data = self._chunk_data(c)
            parts.append(memoryview(data)[max(start, c.start) - c.start: min(end, c.end) - c.start])
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _chunk_data(self, c: _Chunk) -> bytes:
        with self._cond:
            while c.state != _HERE:
                if self._error is not None:
                    self._raise()
                if c.state == _GONE:
                    break
                starving = c.state == _PENDING  # (in flight: only latency, nothing to drop for)
                self._waiting += starving
                self._cond.notify_all()
                self._cond.wait(0.25)
                self._waiting -= starving
            else:
                return c.data  # type: ignore[return-value]
            digest = c.digest
        data = self.client.get(c.file.remote, c.start, c.end)  # dropped or freed earlier: again, checked
        with self._cond:
            self.stats.refetched += len(data)
            self.stats.requests += 1
        if hashlib.sha256(data).digest() != digest:
            raise MergeError(f"{c.file.remote.label}: bytes {c.start}-{c.end - 1} differ from the first time "
                             "they were read; nothing was published: run again")
        return data

    def release(self, f: RemoteInput, start: int, end: int) -> None:
        if end <= start:
            return
        size = self.chunk_bytes
        with self._cond:
            for c in f.chunks[start // size: (end - 1) // size + 1]:
                if not c.needs:
                    continue
                c.needs = _subtract(c.needs, start, end)
                if not c.needs and c.digest is not None:
                    self._free(c)

    # -- the end -----------------------------------------------------------------------------------------
    def finish(self) -> dict[str, str]:
        """Wait until every file has streamed and been checked; {key: sha256 hex}. Raises MergeError."""
        if not self._threads:
            self.start()
        for t in self._threads:
            t.join()
        if self._error is not None:
            self._raise()
        missing = [f.remote.label for f in self.opened.values()
                   if f.remote.key not in self.stats.digests and f.remote.key not in self.skip]
        if missing:
            raise MergeError(f"{missing[0]}: not read to the end; nothing was published")
        return dict(self.stats.digests)

    def close(self) -> None:
        """Stop the fetchers (a failed or cancelled merge); never raises."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()
        for f in self.opened.values():
            for c in f.chunks:
                c.data = None

    def _remote(self, key: str) -> RemoteFile:
        try:
            return self.files[key]
        except KeyError:
            raise MergeError(f"{key}: not a file this stream reads") from None


def _subtract(needs: list[list[int]], start: int, end: int) -> list[list[int]]:
    out = []
    for lo, hi, rank in needs:
        if hi <= start or lo >= end:
            out.append([lo, hi, rank])
            continue
        if lo < start:
            out.append([lo, start, rank])
        if hi > end:
            out.append([end, hi, rank])
    return out


def _frombuffer(data, dtype: torch.dtype) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # read-only bytes: the engine never writes to them
        return torch.frombuffer(data, dtype=dtype)


def _content_range_total(value: str | None) -> int | None:
    if not value or "/" not in value:
        return None
    total = value.rsplit("/", 1)[1].strip()
    return int(total) if total.isdigit() else None


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
