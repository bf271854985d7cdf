"""sha256 of every input file, computed while torch loads and the merge reads the same bytes.

Each file is hashed front to back by a worker thread as the merge runs: its pages come through the page cache
the merge fills (and, on a cold cache, the hasher's reads bring them in for the merge), so the bytes leave the
disk once. hashlib releases the GIL on large buffers, so the hashing runs beside the arithmetic.
"""

from __future__ import annotations

import hashlib
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

BLOCK = 8 << 20
NICE = 10  # the hashers' CPU priority below the merge's


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    fd = os.open(path, os.O_RDONLY)
    try:
        offset = 0
        while True:
            block = os.pread(fd, BLOCK, offset)
            if not block:
                return digest.hexdigest()
            digest.update(block)
            offset += len(block)
    finally:
        os.close(fd)


def _yield_to_the_merge() -> None:
    """Hash at a lower CPU priority than the arithmetic and the writer: the hashing fills the cores' idle
    time (the merge mostly waits for the disk) instead of slowing the merge's critical path."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)
    except (AttributeError, OSError):
        pass


class InputHasher:
    """`InputHasher(paths)` starts hashing; `digests()` waits and returns {path: sha256 hex}."""

    def __init__(self, paths: list[str], workers: int = 2):
        self._executor = ThreadPoolExecutor(max(1, min(workers, len(paths) or 1)), thread_name_prefix="input-hash",
                                            initializer=_yield_to_the_merge)
        self._futures: dict[str, Future] = {p: self._executor.submit(sha256_file, p) for p in paths}

    def digests(self) -> dict[str, str]:
        try:
            return {path: future.result() for path, future in self._futures.items()}
        finally:
            self._executor.shutdown(wait=True)

    def cancel(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)
