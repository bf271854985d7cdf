"""A streaming publish's output side: each output shard leaves the disk as soon as it is written.

    uploader = ShardUploader(api, repo_id, plan, work / "model", create_pr=False)
    uploader.prepare()                    # the journal: what an interrupted run uploaded already
    uploader.start(SpotCheck(...), inputs.verified)
    with uploader.names_its_failure():    # a merge the upload stopped raises the upload's error
        run_merge(..., on_file=uploader.on_file, disk_budget=uploader.budget, skip_files=uploader.skip_files)
    uploader.finish()                     # every shard checked and pre-uploaded, or the upload's error
    push(..., prebuilt=uploader.operations)   # the one commit that makes them visible

For each shard, on a thread of its own while the merge computes the next one: the spot check of its sampled
tensors, `preupload_lfs_files` (huggingface_hub's upload: LFS or Xet, whichever the repo uses; nothing is
visible until the commit), then the file is "hollowed": its header stays, the rest becomes a hole (a sparse
file of the same size, taking no disk), so the folder still lists every tensor for the final verification;
its bytes go back to the disk budget and the writer goes on. A shard the Hub stores without LFS (a small
file, by the Hub's rules) stays on disk for the commit.

The journal (`journal.jsonl` in the work folder, one JSON line per shard uploaded and per input checked)
makes a rerun of the same plan after a crash or Ctrl-C resume: shards whose objects the Hub still holds
(asked with the LFS batch API) are neither computed nor uploaded again, and their hollow files are
recreated from the journal. The work folder (chatvector.fetch.workspace) is named after the plan's fingerprint: a
changed plan starts afresh, and the next run sweeps the older folders of that target.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import os
import queue
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from chatvector.conventions import JOURNAL_FILE, SMALL_FILE_BYTES
from chatvector.errors import MergeError, PipelineError
from chatvector.plan.plan import Plan
from chatvector.units import human_bytes

if TYPE_CHECKING:
    from huggingface_hub import CommitOperationAdd, HfApi

    from chatvector.build.spotcheck import SpotCheck

log = logging.getLogger(__name__)
SAMPLE = 512  # what huggingface_hub's UploadInfo keeps of a file's start


@dataclass(frozen=True)
class ShardRecord:
    """One uploaded shard, as the journal keeps it."""

    name: str
    sha256: str
    size: int
    header: bytes  # the safetensors header (length prefix included): the hollow file's only bytes
    sample: bytes
    git: str | None  # the git blob id of a file under SMALL_FILE_BYTES (provenance records it)
    tensors: int = 0  # tensors and values the merge scanned for NaN and ±inf (none found: else no upload)
    values: int = 0
    spot: tuple[str, ...] = ()  # tensors the spot check compared with the reference here (all equal: else no upload)

    def to_json(self, fingerprint: str) -> dict:
        return {"fingerprint": fingerprint, "shard": self.name, "sha256": self.sha256, "size": self.size,
                "header": base64.b64encode(self.header).decode(), "sample": base64.b64encode(self.sample).decode(),
                "git": self.git, "scanned": [self.tensors, self.values], "spot": list(self.spot)}

    @classmethod
    def from_json(cls, doc: dict) -> ShardRecord:
        tensors, values = doc["scanned"]
        return cls(doc["shard"], doc["sha256"], int(doc["size"]), base64.b64decode(doc["header"]),
                   base64.b64decode(doc["sample"]), doc.get("git"), int(tensors), int(values),
                   tuple(doc.get("spot") or ()))


class Journal:
    """The work folder's journal: appended a line at a time, fsynced, read back by a rerun."""

    def __init__(self, work: Path, fingerprint: str):
        self.path, self.fingerprint = work / JOURNAL_FILE, fingerprint
        self._lock = threading.Lock()

    def read(self) -> tuple[dict[str, ShardRecord], dict[str, str]]:
        """(shards uploaded, inputs checked {key: sha256}) by earlier runs of this plan; a torn last line (a
        crash mid-write) and lines of another fingerprint are ignored."""
        shards: dict[str, ShardRecord] = {}
        inputs: dict[str, str] = {}
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except OSError:
            return shards, inputs
        for line in lines:
            try:
                doc = json.loads(line)
                if doc.get("fingerprint") != self.fingerprint:
                    continue
                if "shard" in doc:
                    record = ShardRecord.from_json(doc)
                    shards[record.name] = record
                elif "input" in doc:
                    inputs[doc["input"]] = doc["sha256"]
            except (ValueError, KeyError, TypeError):
                continue
        return shards, inputs

    def add(self, docs: list[dict]) -> None:
        if not docs:
            return
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            for doc in docs:
                f.write(json.dumps({"fingerprint": self.fingerprint, **doc}) + "\n")
            f.flush()
            os.fsync(f.fileno())


class ShardUploader:
    """See the module docstring. Not reusable: one publish."""

    def __init__(self, api: "HfApi", repo_id: str, plan: Plan, folder: Path, *, create_pr: bool):
        self.api, self.repo_id, self.plan, self.create_pr = api, repo_id, plan, create_pr
        self.folder = Path(folder)  # empty: the model is written here; the journal lies beside it
        self.journal = Journal(self.folder.parent, plan.fingerprint["sha256"])
        self.spot: SpotCheck | None = None  # given by `start`
        self.verified_inputs: Callable[[], dict[str, str]] = lambda: {}  # {key: sha256} checked so far
        from chatvector.merge.writer import DiskBudget  # (the engine's package loads torch: only now)

        self.budget = DiskBudget(max(plan.largest_file_bytes, 1))
        self.operations: dict[str, CommitOperationAdd] = {}  # shard → its commit operation (uploaded or held)
        self.records: dict[str, ShardRecord] = {}
        self.skip_files: frozenset[str] = frozenset()
        self.resumed_inputs: dict[str, str] = {}
        self.bytes_uploaded = 0
        self.upload_seconds = 0.0  # first upload's start to the last one's end
        self._first: float | None = None
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._journaled_inputs: set[str] = set()
        self._thread: threading.Thread | None = None

    # -- before the merge ------------------------------------------------------------------------------
    def prepare(self) -> None:
        """From the journal, the shards the Hub still holds (skipped, their hollow files recreated) and the
        inputs already checked (`resumed_inputs`: the run skips reading them again)."""
        shards, inputs = self.journal.read()
        held = self._held_by_hub(list(shards.values())) if shards else set()
        for name in sorted(held):
            record = shards[name]
            _hollow(self.folder / name, record.header, record.size, create=True)
            self.records[name] = record
            self.operations[name] = _uploaded_operation(record, self.folder / name)
        self.skip_files = frozenset(held)
        self.resumed_inputs = inputs
        self._journaled_inputs = set(inputs)
        if held:
            log.info("resuming: %d shard(s) already uploaded by an interrupted run are not computed again: %s",
                     len(held), ", ".join(sorted(held)))

    def start(self, spot: "SpotCheck | None", verified_inputs: Callable[[], dict[str, str]]) -> None:
        """The upload thread, once the run's inputs are open: each shard is spot-checked with `spot` (the tensors
        an interrupted run compared in the shards this one skips count as checked) and the inputs checked so far
        (`verified_inputs()`) are journaled with it."""
        self.spot, self.verified_inputs = spot, verified_inputs
        if spot is not None:
            spot.checked += self.resumed_spot  # compared by the run that uploaded them
        self._thread = threading.Thread(target=self._loop, name="shard-upload", daemon=True)
        self._thread.start()

    @contextlib.contextmanager
    def names_its_failure(self) -> Iterator[None]:
        """Around the merge: when this upload's failure stopped it (through the disk budget), its error is what is
        raised, not the merge's."""
        try:
            yield
        except BaseException:
            if self.error is not None:
                raise self.error from None
            raise

    def _held_by_hub(self, records: list[ShardRecord]) -> set[str]:
        """The journal's shards whose objects the Hub still holds: the LFS batch API answers them without an
        upload action."""
        from huggingface_hub.lfs import UploadInfo, post_lfs_batch_info

        from chatvector.hub.client import hub_call

        infos = [UploadInfo(r.size, r.sample, sha256=bytes.fromhex(r.sha256)) for r in records]
        with hub_call(self.api, self.repo_id, action="push"):
            answers, errors, _ = post_lfs_batch_info(infos, token=None, repo_type="model", repo_id=self.repo_id,
                                                     endpoint=self.api.endpoint,
                                                     headers=self.api._build_hf_headers())
        held_oids = {a["oid"] for a in answers if not a.get("actions")}
        return {r.name for r in records if r.sha256 in held_oids}

    # -- during the merge (the writer's thread calls on_file) ------------------------------------------
    def on_file(self, name: str, path: Path, sha256: str, scan) -> None:
        self._queue.put((name, Path(path), sha256, scan))

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self._error is not None:
                continue
            try:
                self._upload(*item)
            except BaseException as err:  # noqa: BLE001 - stops the merge through the budget, raised by finish()
                self._error = err if isinstance(err, PipelineError) else MergeError(_upload_error(item[0], err))
                self.budget.cancel(self._error)

    def _upload(self, name: str, path: Path, sha256: str, scan) -> None:
        from chatvector.hub.client import hub_call

        if scan.nonfinite:  # verification would refuse the model: nothing of it leaves the machine
            first = min(scan.nonfinite)
            raise MergeError(f"verification failed: all tensors finite: {first}: {scan.nonfinite[first].count} "
                             f"non-finite values (in {name}); nothing was committed")
        size = path.stat().st_size
        spot: tuple[str, ...] = ()
        if self.spot is not None:
            checked, problems = len(self.spot.checked), len(self.spot.problems)
            self.spot.check_file(path)
            if len(self.spot.problems) > problems:
                raise MergeError(f"verification failed: {self.spot.result().name}: "
                                 f"{'; '.join(self.spot.problems[problems:])}; nothing was committed")
            spot = tuple(self.spot.checked[checked:])
        header, sample = _head(path)
        git = None
        if size < SMALL_FILE_BYTES:
            from chatvector.plan.sources import git_blob_id

            git = git_blob_id(path, size)
        record = ShardRecord(name, sha256, size, header, sample, git, scan.tensors, scan.values, spot)
        op = _operation(record, path)
        start = time.perf_counter()
        self._first = self._first or start
        try:
            with hub_call(self.api, self.repo_id, action="push"):
                self.api.preupload_lfs_files(self.repo_id, additions=[op], create_pr=self.create_pr,
                                             free_memory=False)
        except PipelineError as err:
            raise MergeError(f"uploading {name} failed: {str(err).removesuffix('; run again later')}; nothing "
                             "was committed: run the same command again to resume") from None
        self.records[name] = record
        if op._upload_mode == "lfs":
            self.bytes_uploaded += size
            _hollow(path, header, size)
            op.path_or_fileobj = b""  # uploaded: the commit sends only its sha256 and size
            self.journal.add([record.to_json(self.journal.fingerprint)])
        self.operations[name] = op
        self._journal_inputs()
        self.upload_seconds = time.perf_counter() - self._first
        self.budget.give(size)  # a small file the Hub keeps in git stays for the commit (small by definition)
        if op._upload_mode == "lfs":
            log.info("uploaded %s (%s)", name, human_bytes(size))
        else:
            log.info("kept %s (%s) for the commit: the Hub stores a file this small in git", name, human_bytes(size))

    def _journal_inputs(self) -> None:
        checked = {k: v for k, v in self.verified_inputs().items() if k not in self._journaled_inputs}
        self.journal.add([{"input": k, "sha256": v} for k, v in sorted(checked.items())])
        self._journaled_inputs |= set(checked)

    # -- after the merge --------------------------------------------------------------------------------
    def finish(self) -> None:
        """Wait for the last upload; raise its error, if any."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join()
            self._thread = None
        if self._error is not None:
            raise self._error
        self._journal_inputs()

    def close(self) -> None:
        """Stop the thread (a failed run); the journal and the uploaded objects stay for a rerun."""
        if self._thread is not None:
            self._error = self._error or MergeError("cancelled")
            self._queue.put(None)
            self._thread.join()
            self._thread = None

    @property
    def error(self) -> BaseException | None:
        """The upload's failure, if one stopped the merge (not a cancellation)."""
        err = self._error
        return None if err is None or str(err) == "cancelled" else err

    @property
    def sha256(self) -> dict[str, str]:
        return {name: r.sha256 for name, r in self.records.items()}

    @property
    def resumed_spot(self) -> list[str]:
        """Tensors an earlier run's spot check compared in the shards this one skips."""
        return [t for n in sorted(self.skip_files) for t in self.records[n].spot]

    @property
    def resumed_scan(self) -> tuple[int, int]:
        """Tensors and values an earlier run scanned in the shards this one skips."""
        records = [self.records[n] for n in self.skip_files]
        return sum(r.tensors for r in records), sum(r.values for r in records)

    @property
    def git_blob_ids(self) -> dict[str, str]:
        return {name: r.git for name, r in self.records.items() if r.git}


def _head(path: Path) -> tuple[bytes, bytes]:
    with open(path, "rb") as f:
        start = f.read(8)
        n = int.from_bytes(start, "little") if len(start) == 8 else 0
        header = start + f.read(n)
        f.seek(0)
        return header, f.read(SAMPLE)


def _hollow(path: Path, header: bytes, size: int, *, create: bool = False) -> None:
    """Keep only the header: the rest becomes a hole of the same length (no disk blocks)."""
    with open(path, "wb" if create else "r+b") as f:
        if create:
            f.write(header)
        f.truncate(len(header))
        f.truncate(size)


def _operation(record: ShardRecord, path: Path) -> "CommitOperationAdd":
    """The commit operation of a written shard, with the sha256 the writer computed (no second read)."""
    from huggingface_hub import CommitOperationAdd
    from huggingface_hub.lfs import UploadInfo

    op = CommitOperationAdd(path_in_repo=record.name, path_or_fileobj=b"")
    op.upload_info = UploadInfo(record.size, record.sample, sha256=bytes.fromhex(record.sha256))
    op.path_or_fileobj = str(path)
    return op


def _uploaded_operation(record: ShardRecord, path: Path) -> "CommitOperationAdd":
    """The commit operation of a shard the Hub holds already (a resumed run): nothing left to upload."""
    op = _operation(record, path)
    op.path_or_fileobj = b""
    op._upload_mode = "lfs"
    op._is_uploaded = True
    return op


def _upload_error(name: str, err: BaseException) -> str:
    """One line: huggingface_hub wraps the HTTP error of an upload ("Error while uploading X") with the cause."""
    from chatvector.hub.client import first_line

    cause = err.__cause__ or err
    return f"uploading {name} failed: {first_line(cause)}; nothing was committed: run again to resume"
