"""The first bytes of each Hub input file, as `plan` read them for its header checks, kept for the rest of the
run: stream mode then takes a file's head from here instead of fetching it again, so a run that plans and
streams reads every input byte from the Hub once.

Keyed by (repo id, commit sha, file name): at a pinned commit a file's bytes never change. Bounded: the heads of
the last `MAX_FILES` files (each at most the planner's probe, 100 kB)."""

from __future__ import annotations

import threading
from collections import OrderedDict

MAX_FILES = 512
Key = tuple[str, str, str]  # (repo id, commit sha, file name)

_heads: OrderedDict[Key, bytes] = OrderedDict()
_lock = threading.Lock()


def remember(key: Key, head: bytes) -> None:
    with _lock:
        _heads[key] = head
        _heads.move_to_end(key)
        while len(_heads) > MAX_FILES:
            _heads.popitem(last=False)


def recall(key: Key | None) -> bytes:
    """The file's head as read so far (b"" when none was)."""
    if key is None:
        return b""
    with _lock:
        return _heads.get(key, b"")
