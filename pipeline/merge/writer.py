"""The output side: a thread that writes each file's bytes in order, hashes them on the way, starts
the disk's writeback early, and publishes the files under their final names only once every one of
them is complete and fsynced.

The compute thread hands over (offset, buffer, release) items; `release` runs once the bytes are in
the page cache, which returns the buffer to its pool (or drops input pages from RSS), so memory stays
bounded by the pool, never by the model.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import threading
from collections.abc import Callable
from pathlib import Path

from pipeline.errors import MergeError
from pipeline.merge.safetensors_io import fsync_dir, start_writeback

WRITEBACK_STEP = 64 << 20  # start writeback of every 64 MiB written


class FileWriter:
    """Writes files sequentially from a background thread. Use: open_file, write*, close_file, ...,
    then publish() (renames every file into place) or abort() (removes the temporary files)."""

    def __init__(self, out_dir: Path, on_bytes: Callable[[int], None] | None = None, depth: int = 16):
        self.out_dir = Path(out_dir)
        self.on_bytes = on_bytes or (lambda n: None)
        self.digests: dict[str, str] = {}
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._error: BaseException | None = None
        self._temps: list[tuple[Path, Path]] = []  # (temporary, final) of every file opened
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="merge-writer", daemon=True)
        self._thread.start()

    # -- called from the compute thread -------------------------------------------------------
    def open_file(self, name: str, size: int, header: bytes) -> None:
        final = self.out_dir / name
        temp = self.out_dir / f".{name}.partial-{os.getpid()}"
        self._temps.append((temp, final))
        self._put(("open", temp, name, size, header))

    def write(self, offset: int, data, release: Callable[[], None] | None = None) -> None:
        self._put(("data", offset, data, release))

    def close_file(self) -> None:
        self._put(("close",))

    def check(self) -> None:
        """Raise the writer thread's error, if it had one."""
        if self._error is not None:
            err = self._error
            if isinstance(err, MergeError):
                raise MergeError(str(err)) from err
            raise MergeError(f"writing the merged files in {self.out_dir} failed: {err}") from err

    def publish(self) -> None:
        """Wait for every write and fsync, then rename all files to their final names."""
        self._put(("stop",))
        self._thread.join()
        self.check()
        for temp, final in self._temps:
            os.replace(temp, final)
        fsync_dir(self.out_dir)

    def abort(self) -> None:
        """Stop the thread and remove every temporary file; never raises."""
        self._abort.set()
        while self._thread.is_alive():
            try:
                self._queue.put(("stop",), timeout=0.05)
                break
            except queue.Full:
                try:  # make room: the thread skips data once aborted
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
        self._thread.join()
        for temp, _ in self._temps:
            try:
                temp.unlink()
            except FileNotFoundError:
                pass
            except OSError:
                pass

    def _put(self, item) -> None:
        while True:
            self.check()
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    # -- the thread ---------------------------------------------------------------------------
    def _loop(self) -> None:
        fd = -1
        name = ""
        size = pos = kicked = 0
        digest = None
        try:
            while True:
                item = self._queue.get()
                kind = item[0]
                if kind == "stop":
                    break
                if self._abort.is_set() or self._error is not None:
                    if kind == "data" and item[3] is not None:
                        item[3]()
                    continue
                if kind == "open":
                    _, temp, name, size, header = item
                    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o644)
                    _reserve(fd, size, temp)
                    _pwrite_all(fd, header, 0)
                    digest = hashlib.sha256(header)
                    pos = kicked = len(header)
                elif kind == "data":
                    _, offset, data, release = item
                    try:
                        if offset != pos:
                            raise RuntimeError(f"internal error: write at {offset}, file position {pos}")
                        n = _pwrite_all(fd, data, offset)
                        digest.update(data)
                    finally:
                        if release is not None:
                            release()
                    pos += n
                    self.on_bytes(n)
                    if pos - kicked >= WRITEBACK_STEP:
                        start_writeback(fd, kicked, pos - kicked)
                        kicked = pos
                elif kind == "close":
                    if pos != size:
                        raise RuntimeError(f"internal error: {name} ends at {pos}, its header says {size}")
                    os.fsync(fd)
                    os.close(fd)
                    fd = -1
                    self.digests[name] = digest.hexdigest()
        except OSError as e:
            self._error = MergeError(
                f"writing {name} in {self.out_dir} failed: {e.strerror or e}"
                + (" (the disk is full)" if e.errno == errno.ENOSPC else "")
            )
        except BaseException as e:  # noqa: BLE001 - handed to the compute thread
            self._error = e
        finally:
            if fd >= 0:
                os.close(fd)
            if self._error is not None:  # drain so that the compute thread never blocks on put
                self._drain()

    def _drain(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._abort.is_set():
                    return
                continue
            if item[0] == "data" and item[3] is not None:
                item[3]()
            if item[0] == "stop":
                return


def _reserve(fd: int, size: int, path: Path) -> None:
    """Allocate the whole file up front: a full disk fails now, not after minutes of work."""
    if size <= 0 or not hasattr(os, "posix_fallocate"):
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise MergeError(f"{path.parent}: not enough disk space for {path.name[1:].split('.partial')[0]} ({size} bytes)") from None
        # EOPNOTSUPP, EINVAL...: the filesystem cannot preallocate; writing still works


def _pwrite_all(fd: int, data, offset: int) -> int:
    view = memoryview(data).cast("B")
    total = len(view)
    done = 0
    while done < total:
        done += os.pwrite(fd, view[done:], offset + done)
    return total
