"""Where a publish assembles its model: one folder per target under the Hugging Face cache, swept by every run.

    with target_workspace(plan, "my-org/x") as work:     # locked against a second publish to the same target
        folder = work / "model"                          # (empty) the model is assembled here
    # HF_HOME/chatvector/publish/my-org--x/<fingerprint[:16]>/{model/, journal.jsonl}

A run that is killed leaves its folder behind; the next publish to that target removes whatever it does not
use: the folders of other plans (another fingerprint) and the half-written model of this one (a streaming
publish keeps this plan's journal, to resume), and says how much disk that freed. One publish per target at
a time on a machine: a second one is refused with one line while the first holds the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from chatvector.conventions import JOURNAL_FILE
from chatvector.errors import PipelineError
from chatvector.units import human_bytes

if TYPE_CHECKING:
    from chatvector.plan.plan import Plan

log = logging.getLogger(__name__)
LOCK = ".lock"
KEEP = (JOURNAL_FILE,)  # what a rerun of the same plan may use


class WorkspaceBusy(PipelineError):
    """Another publish to the same target runs on this machine."""


def target_folder(repo_id: str) -> Path:
    from huggingface_hub import constants

    owner, _, name = repo_id.partition("/")
    return Path(constants.HF_HOME) / "chatvector" / "publish" / f"{owner}--{name}"


def work_folder(plan: "Plan", repo_id: str) -> Path:
    """This plan's folder for `repo_id` (the fingerprint names it: a changed plan starts afresh)."""
    return target_folder(repo_id) / plan.fingerprint["sha256"][:16]


@contextlib.contextmanager
def target_workspace(plan: "Plan", repo_id: str) -> Iterator[Path]:
    """This plan's work folder, swept and locked for the block (see the module docstring)."""
    work = work_folder(plan, repo_id)
    work.parent.mkdir(parents=True, exist_ok=True)
    with open(work.parent / LOCK, "a+") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            lock.seek(0)
            holder = lock.read().strip() or "?"
            raise WorkspaceBusy(f"another chatvector publish to {repo_id} is running on this machine (pid "
                                f"{holder}, lock {work.parent / LOCK}); wait for it to finish") from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        freed = sweep(work.parent, keep=work)
        if freed:
            log.info("removed %s left by an interrupted run in %s", human_bytes(freed), work.parent)
        work.mkdir(exist_ok=True)
        yield work


def sweep(folder: Path, keep: Path) -> int:
    """Remove everything under `folder` but the lock, and in `keep` all but its KEEP files; the bytes freed."""
    freed = 0
    for entry in list(folder.iterdir()):
        if entry.name == LOCK:
            continue
        if entry == keep and entry.is_dir():
            for inner in list(entry.iterdir()):
                if inner.name not in KEEP:
                    freed += _remove(inner)
            continue
        freed += _remove(entry)
    return freed


def sweep_incomplete_downloads(repo_ids) -> int:
    """Remove the `.incomplete` files killed downloads left in the Hugging Face cache for these model repos
    (huggingface_hub names each after its process and never reuses it); a download in progress holds its
    blob's lock, so its file is left alone. The bytes freed (logged)."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    cache = Path(constants.HF_HUB_CACHE)
    freed = 0
    for repo_id in sorted(set(repo_ids)):
        folder = repo_folder_name(repo_id=repo_id, repo_type="model")
        for part in (cache / folder / "blobs").glob("*.incomplete"):
            lock_path = cache / ".locks" / folder / f"{part.name.split('.')[0]}.lock"
            try:
                lock_path.parent.mkdir(parents=True, exist_ok=True)
                with open(lock_path, "a") as lock:
                    fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # as huggingface_hub's filelock
                    freed += _remove(part)
            except OSError:
                continue  # being downloaded right now (or not ours to remove)
    if freed:
        log.info("removed %s of downloads an interrupted run left in %s", human_bytes(freed), cache)
    return freed


def finished(work: Path) -> None:
    """The publish committed: nothing in its folder is needed any more."""
    shutil.rmtree(work, ignore_errors=True)


def _remove(path: Path) -> int:
    size = disk_usage(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
    return size


def disk_usage(path: Path) -> int:
    """Bytes `path` takes on disk (allocated blocks: a sparse file counts what it holds)."""
    try:
        if path.is_file() or path.is_symlink():
            return path.lstat().st_blocks * 512
        return sum(p.lstat().st_blocks * 512 for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    except OSError:
        return 0
