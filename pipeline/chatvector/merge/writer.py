"""The output side: whole file blocks, written in order by one thread and hashed by another, with
the files published under their final names only once every one of them is complete and fsynced.

Blocks are 4 KiB-aligned pieces of the file image in 4 KiB-aligned buffers, so they can be written
with O_DIRECT: the disk DMAs straight from the buffer, and the kernel spends no CPU copying 2 GB into
the page cache (on a 2-core machine that copy cost as much as the arithmetic). Where the filesystem
refuses O_DIRECT (tmpfs, some network filesystems) the same blocks go through ordinary writes, with
writeback started early so the final fsync has little left to do.

A block's buffer goes back to its pool (its `release` runs) once it is both written and hashed, so
memory stays bounded by the pool, never by the model.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from chatvector.errors import MergeError
from chatvector.merge.safetensors_io import fsync_dir, start_writeback

log = logging.getLogger(__name__)
ALIGN = 4096  # O_DIRECT alignment of buffers, offsets and lengths (the largest logical block size)
WRITEBACK_STEP = 64 << 20  # buffered fallback: start writeback of every 64 MiB written


class FileWriter:
    """Use: open_file, write_block*, close_file, ... then publish() (renames every file into place)
    or abort() (removes the temporary files).

    on_bytes: called from the writer thread with the byte count of every block written.
    depth: blocks queued per thread before `write_block` waits.
    direct_io: write with O_DIRECT where the platform and filesystem take it; False always uses
    ordinary (buffered) writes. The bytes written are the same either way.
    on_file: `on_file(name, path, sha256)` as soon as a file is written, fsynced and hashed: the file is
    then under its final name already (publish renames only the others). It runs on a writer thread:
    hand the work on, do not do it there.
    budget: a DiskBudget: each block waits for room before it is written (files are then not reserved
    whole up front), and whoever deletes a file gives its bytes back.
    """

    def __init__(self, out_dir: Path, on_bytes: Callable[[int], None] | None = None, depth: int = 8,
                 *, direct_io: bool = True, on_file: Callable[[str, Path, str], None] | None = None,
                 budget: "DiskBudget | None" = None):
        self.out_dir = Path(out_dir)
        self.on_bytes = on_bytes or (lambda n: None)
        self.on_file = on_file
        self.budget = budget
        self._done: dict[str, int] = {}  # file → how many of the two threads are through with it
        self._done_lock = threading.Lock()
        self.direct_io = direct_io and hasattr(os, "O_DIRECT")
        self.digests: dict[str, str] = {}
        self.direct_files: list[str] = []  # files written with O_DIRECT to the end (for the record)
        self._error: BaseException | None = None
        self._temps: list[tuple[Path, Path]] = []  # (temporary, final) of every file opened
        self._abort = threading.Event()
        self._queues = {"write": queue.Queue(maxsize=depth), "hash": queue.Queue(maxsize=depth)}
        self._threads = [
            threading.Thread(target=self._guard, args=(self._write_loop, "write"), name="merge-writer", daemon=True),
            threading.Thread(target=self._guard, args=(self._hash_loop, "hash"), name="merge-hasher", daemon=True),
        ]
        for t in self._threads:
            t.start()

    # -- called from the compute side -----------------------------------------------------------
    def open_file(self, name: str, size: int) -> None:
        final = self.out_dir / name
        temp = self.out_dir / f".{name}.partial-{os.getpid()}"
        self._temps.append((temp, final))
        self._put(("open", temp, name, size))

    def write_block(self, offset: int, buf, nbytes: int, release: Callable[[], None] | None = None) -> None:
        """Bytes [offset, offset + nbytes) of the current file are buf[:nbytes]. `buf` is a uint8
        torch tensor (aligned to ALIGN and at least nbytes rounded up to ALIGN long, for O_DIRECT);
        it must not change until `release` is called."""
        self._put(("data", offset, buf, nbytes, _Countdown(2, release)))

    def close_file(self) -> None:
        self._put(("close",))

    def check(self) -> None:
        """Raise the writer threads' error, if they had one."""
        if self._error is not None:
            err = self._error
            if isinstance(err, MergeError):
                raise MergeError(str(err)) from err
            raise MergeError(f"writing the merged files in {self.out_dir} failed: {err}") from err

    def publish(self) -> None:
        """Wait for every write, hash and fsync, then rename all files to their final names."""
        self._put(("stop",))
        for t in self._threads:
            t.join()
        self.check()
        for temp, final in self._temps:
            os.replace(temp, final)
        fsync_dir(self.out_dir)

    def abort(self) -> None:
        """Stop the threads and remove every temporary file; never raises."""
        self._abort.set()
        for kind, t in zip(self._queues, self._threads):
            q = self._queues[kind]
            while t.is_alive():
                try:
                    q.put(("stop",), timeout=0.05)
                    break
                except queue.Full:
                    try:  # make room: the thread skips data once aborted
                        _drop(q.get_nowait())
                    except queue.Empty:
                        pass
            t.join()
        for q in self._queues.values():
            while True:
                try:
                    _drop(q.get_nowait())
                except queue.Empty:
                    break
        for temp, _ in self._temps:
            try:
                temp.unlink()
            except OSError:
                pass

    def _put(self, item) -> None:
        for q in self._queues.values():
            while True:
                self.check()
                try:
                    q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue

    # -- the threads ----------------------------------------------------------------------------
    def _guard(self, loop, kind: str) -> None:
        q = self._queues[kind]
        try:
            loop(q)
        except OSError as e:
            self._error = self._error or MergeError(
                f"writing the merged files in {self.out_dir} failed: {e.strerror or e}"
                + (" (the disk is full)" if e.errno == errno.ENOSPC else "")
            )
        except BaseException as e:  # noqa: BLE001 - handed to the compute side
            self._error = self._error or e
        if self._error is not None:  # keep taking items so that the compute side never blocks
            while True:
                try:
                    item = q.get(timeout=0.2)
                except queue.Empty:
                    if self._abort.is_set():
                        return
                    continue
                _drop(item)
                if item[0] == "stop":
                    return

    def _items(self, q: queue.Queue):
        """Items to act on, until "stop"; after an abort or an error, items are dropped (buffers released)."""
        while True:
            item = q.get()
            if item[0] == "stop":
                return
            if self._abort.is_set() or self._error is not None:
                _drop(item)
                continue
            yield item

    def _write_loop(self, q: queue.Queue) -> None:
        f: _OutFile | None = None
        try:
            for item in self._items(q):
                kind = item[0]
                if kind == "open":
                    _, temp, name, size = item
                    f = _OutFile(temp, name, size, self.direct_io, reserve=self.budget is None)
                elif kind == "data":
                    _, offset, buf, nbytes, done = item
                    try:
                        if self.budget is not None:
                            self.budget.take(nbytes, self._abort)
                        f.write(offset, buf, nbytes)
                    finally:
                        done()
                    if f.direct_failed is not None and self.direct_io:
                        self._give_up_direct_io(f)
                    self.on_bytes(nbytes)
                elif kind == "close":
                    f.finish()
                    if f.direct:  # still: a filesystem may refuse O_DIRECT I/O midway (EINVAL)
                        self.direct_files.append(f.name)
                    self._through(f.name)
                    f = None
        finally:
            if f is not None:
                f.close()

    def _give_up_direct_io(self, f: "_OutFile") -> None:
        """The direct-I/O write path failed once: this file went on with buffered writes, and so do the next."""
        err = f.direct_failed
        log.warning("direct I/O to %s failed (%s): writing with ordinary buffered writes from here on", f.name,
                    err.strerror or err)
        self.direct_io = False

    def _hash_loop(self, q: queue.Queue) -> None:
        digest = None
        name = ""
        for item in self._items(q):
            kind = item[0]
            if kind == "open":
                name, digest = item[2], hashlib.sha256()
            elif kind == "data":
                _, offset, buf, nbytes, done = item
                try:
                    digest.update(memoryview(buf.numpy())[:nbytes])
                finally:
                    done()
            elif kind == "close":
                self.digests[name] = digest.hexdigest()
                self._through(name)

    def _through(self, name: str) -> None:
        """One of the two threads is done with `name`; the second hands it to `on_file`."""
        with self._done_lock:
            self._done[name] = self._done.get(name, 0) + 1
            last = self._done[name] == 2
        if last and self.on_file is not None:
            temp, final = next(pair for pair in self._temps if pair[1].name == name)
            os.replace(temp, final)
            fsync_dir(self.out_dir)
            self._temps.remove((temp, final))
            self.on_file(name, final, self.digests[name])


class DiskBudget:
    """Bytes that output files may hold on disk at once: `take` waits for room, `give` returns bytes
    (a deleted file's). One file larger than the whole budget still proceeds, alone."""

    def __init__(self, nbytes: int):
        self.limit = nbytes
        self.used = 0
        self.high_water = 0
        self.failed: BaseException | None = None
        self._cond = threading.Condition()

    def take(self, nbytes: int, abort: threading.Event | None = None) -> None:
        with self._cond:
            while self.used and self.used + nbytes > self.limit:
                if self.failed is not None:
                    raise self.failed
                if abort is not None and abort.is_set():
                    return
                self._cond.wait(0.1)
            self.used += nbytes
            self.high_water = max(self.high_water, self.used)

    def cancel(self, err: BaseException) -> None:
        """Whoever gives bytes back failed: a writer waiting for room raises `err` instead of waiting forever."""
        with self._cond:
            self.failed = err
            self._cond.notify_all()

    def give(self, nbytes: int) -> None:
        with self._cond:
            self.used = max(0, self.used - nbytes)
            self._cond.notify_all()


class _OutFile:
    """One temporary output file: O_DIRECT when the filesystem takes it, ordinary writes otherwise."""

    def __init__(self, temp: Path, name: str, size: int, direct_io: bool, reserve: bool = True):
        self.name, self.size = name, size
        self.pos = 0
        self.kicked = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)
        self.fd = os.open(temp, flags, 0o644)
        self.direct = False
        self.direct_fd = -1
        self.direct_failed: OSError | None = None  # what made a direct write fail (the file then went buffered)
        if direct_io:
            try:
                self.direct_fd = os.open(temp, (flags & ~os.O_TRUNC) | os.O_DIRECT)
                self.direct = True
            except OSError:
                pass  # tmpfs and some network filesystems refuse the flag: ordinary writes
        if reserve:
            _reserve(self.fd, size, temp, name)

    def write(self, offset: int, buf, nbytes: int) -> None:
        if offset != self.pos:
            raise RuntimeError(f"internal error: {self.name}: block at {offset}, file position {self.pos}")
        padded = -(-nbytes // ALIGN) * ALIGN
        view = memoryview(buf.numpy())
        if self.direct and offset % ALIGN == 0 and buf.data_ptr() % ALIGN == 0 and len(view) >= padded:
            try:
                _pwrite_all(self.direct_fd, view[:padded], offset)
                self.pos += nbytes
                return
            except OSError as e:  # any error of this path (EINVAL, EIO on pinned pages, ...): buffered from here on;
                self.direct = False  # a real disk problem (ENOSPC) fails the buffered write below as well
                self.direct_failed = e
        _pwrite_all(self.fd, view[:nbytes], offset)
        self.pos += nbytes
        if self.pos - self.kicked >= WRITEBACK_STEP:
            start_writeback(self.fd, self.kicked, self.pos - self.kicked)
            self.kicked = self.pos

    def finish(self) -> None:
        if self.pos != self.size:
            raise RuntimeError(f"internal error: {self.name} ends at {self.pos}, its header says {self.size}")
        os.ftruncate(self.fd, self.size)  # O_DIRECT wrote the last block padded to ALIGN
        os.fsync(self.fd)
        self.close()

    def close(self) -> None:
        for fd in (self.fd, self.direct_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.direct_fd = -1


class _Countdown:
    """Calls `release` once `n` threads are done with a buffer."""

    def __init__(self, n: int, release: Callable[[], None] | None):
        self.n, self.release, self.lock = n, release, threading.Lock()

    def __call__(self) -> None:
        with self.lock:
            self.n -= 1
            last = self.n == 0
        if last and self.release is not None:
            self.release()


def _drop(item) -> None:
    if item[0] == "data":
        item[4]()


def _reserve(fd: int, size: int, path: Path, name: str) -> None:
    """Allocate the whole file up front: a full disk fails now, not after minutes of work."""
    if size <= 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise MergeError(f"{path.parent}: not enough disk space for {name} ({size} bytes); the disk is full") from None
        # EOPNOTSUPP, EINVAL...: the filesystem cannot preallocate; writing still works


def _pwrite_all(fd: int, view: memoryview, offset: int) -> int:
    total = len(view)
    done = 0
    while done < total:
        done += os.pwrite(fd, view[done:], offset + done)
    return total
